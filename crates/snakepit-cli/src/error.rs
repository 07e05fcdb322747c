//! What the command line reports, and with which exit code.

use std::path::PathBuf;

/// An error a person reads: it names the file, the entry and the fix.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{file}: {reason}")]
    Config { file: PathBuf, reason: String },
    /// An install whose files hold problems: `message` lists each with its file (the
    /// first one's is `file`).
    #[error("{message}")]
    Invalid { file: PathBuf, message: String },
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Pool(String),
}

impl CliError {
    /// Exit code: 2 for bad input (files, flags, references), 3 when workers could not run.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Config { .. } | CliError::Invalid { .. } | CliError::Usage(_) => 2,
            CliError::Pool(_) => 3,
        }
    }

    /// The error as `--json` prints it on stdout: `{"error": {"kind", "message"}}`, plus
    /// `file` for a file that does not load. The kind is `config` or `usage` (exit 2) or
    /// `unavailable` (exit 3).
    pub fn to_json(&self) -> serde_json::Value {
        let error = match self {
            CliError::Config {
                file,
                reason: message,
            }
            | CliError::Invalid { file, message } => serde_json::json!({
                "kind": "config", "message": message, "file": file.display().to_string(),
            }),
            CliError::Usage(m) => serde_json::json!({"kind": "usage", "message": m}),
            CliError::Pool(m) => serde_json::json!({"kind": "unavailable", "message": m}),
        };
        serde_json::json!({ "error": error })
    }
}

#[cfg(test)]
mod tests {
    use super::CliError;

    #[test]
    fn json_errors_name_their_kind_and_file() {
        let e = CliError::Config {
            file: "apps/app.toml".into(),
            reason: "line 2: [pools.x] workerz is not a setting".into(),
        };
        assert_eq!(
            e.to_json().to_string(),
            r#"{"error":{"kind":"config","message":"line 2: [pools.x] workerz is not a setting","file":"apps/app.toml"}}"#
        );
        assert_eq!(
            CliError::Pool("no serve runs".into()).to_json()["error"]["kind"],
            "unavailable"
        );
    }
}
