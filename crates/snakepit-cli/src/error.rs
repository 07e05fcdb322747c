//! What the command line reports, and with which exit code.

use std::path::PathBuf;

/// An error a person reads: it names the file, the entry and the fix.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{file}: {reason}")]
    Config { file: PathBuf, reason: String },
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Pool(String),
}

impl CliError {
    /// Exit code: 2 for bad input (files, flags, references), 3 when workers could not run.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Config { .. } | CliError::Usage(_) => 2,
            CliError::Pool(_) => 3,
        }
    }
}
