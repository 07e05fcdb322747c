//! An install on disk (the "apps dir", SPEC §1): where it is, which interpreter runs
//! its workers, and the `[runtime]` and `[isolation]` settings of its app.toml.

use std::path::{Path, PathBuf};
use std::time::Duration;

use snakepit::{Pool, PoolBuilder};

use crate::error::CliError;

/// The settings of app.toml that the pool uses. Tables this version does not use yet
/// (`[auth]`, `[hooks]`, `[plugins.*]`, `[pools.*]`) are accepted and ignored.
#[derive(Debug, Default)]
pub struct Runtime {
    pub workers: Option<usize>,
    pub call_timeout: Option<Duration>,
    pub max_calls_per_worker: Option<u64>,
    pub max_worker_rss: Option<u64>,
    pub env: Option<Vec<String>>,
}

#[derive(Debug)]
pub struct Apps {
    pub dir: PathBuf,
    pub python: PathBuf,
    /// Where `python` came from, for error messages.
    pub python_from: String,
    pub runtime: Runtime,
}

impl Apps {
    /// Finds the apps dir and reads its app.toml (if any).
    pub fn load(apps: Option<&Path>, python: Option<&Path>) -> Result<Apps, CliError> {
        let dir = match apps {
            Some(d) => d.to_owned(),
            None => std::env::current_dir()
                .map_err(|e| CliError::Usage(format!("cannot read the working directory: {e}")))?,
        };
        if !dir.is_dir() {
            let what = if dir.exists() {
                "is not a directory"
            } else {
                "does not exist"
            };
            return Err(CliError::Usage(format!(
                "the apps dir {} {what}; pass --apps DIR or set LIBERTY_APPS_DIR",
                dir.display()
            )));
        }
        let file = dir.join("app.toml");
        let (runtime, toml_python) = if file.exists() {
            parse_app_toml(&file)?
        } else {
            (Runtime::default(), None)
        };
        let env_python = std::env::var_os("SNAKEPIT_PYTHON").map(PathBuf::from);
        let venv = dir.join(".venv/bin/python");
        let (python, python_from) = if let Some(p) = python {
            (p.to_owned(), "--python".to_owned())
        } else if let Some(p) = toml_python {
            (
                dir.join(p),
                format!("[runtime] python in {}", file.display()),
            )
        } else if let Some(p) = env_python {
            (p, "$SNAKEPIT_PYTHON".to_owned())
        } else if venv.exists() {
            (venv, "the apps dir's .venv".to_owned())
        } else if Path::new(".venv/bin/python").exists() {
            (PathBuf::from(".venv/bin/python"), "./.venv".to_owned())
        } else {
            (
                PathBuf::from("python3"),
                "python3 on PATH (the default)".to_owned(),
            )
        };
        Ok(Apps {
            dir,
            python,
            python_from,
            runtime,
        })
    }

    /// The sentence for a pool that could not be built: bad settings and an unusable
    /// interpreter are the user's to fix (exit 2), anything else is a failure to run (3).
    pub fn build_error(&self, e: snakepit::BuildError) -> CliError {
        use snakepit::{BuildError, SpawnError};
        match e {
            BuildError::Config(m) => CliError::Usage(m),
            BuildError::Spawn(
                e @ (SpawnError::Interpreter { .. } | SpawnError::PythonTooOld { .. }),
            ) => CliError::Usage(format!(
                "{e}\n  the interpreter comes from {}; point it at a CPython >= 3.9",
                self.python_from
            )),
            BuildError::Spawn(e) => CliError::Pool(format!(
                "{e} (interpreter {}, from {})",
                self.python.display(),
                self.python_from
            )),
        }
    }

    /// A pool builder for this install: its interpreter, `plugins/` first on sys.path, and
    /// the `[runtime]` settings.
    pub fn pool_builder(&self) -> PoolBuilder {
        let mut b = Pool::builder()
            .python(&self.python)
            .sys_path(self.dir.join("plugins"));
        let r = &self.runtime;
        if let Some(n) = r.workers {
            b = b.workers(n);
        }
        if let Some(t) = r.call_timeout {
            b = b.call_timeout(t);
        }
        if let Some(n) = r.max_calls_per_worker {
            b = b.max_calls_per_worker(n);
        }
        if let Some(n) = r.max_worker_rss {
            b = b.max_worker_rss(n);
        }
        if let Some(env) = &r.env {
            b = b.env_allowlist(env.clone());
        }
        b
    }
}

fn parse_app_toml(file: &Path) -> Result<(Runtime, Option<String>), CliError> {
    let err = |reason: String| CliError::Config {
        file: file.to_owned(),
        reason,
    };
    let text = std::fs::read_to_string(file).map_err(|e| err(format!("cannot read it: {e}")))?;
    let doc: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| err(format!("not valid TOML: {}", e.to_string().trim())))?;
    // Tables of features this version does not have yet are accepted; anything else is a
    // typo worth a sentence.
    const TABLES: [&str; 6] = ["runtime", "isolation", "auth", "hooks", "plugins", "pools"];
    if let Some(key) = doc.keys().find(|k| !TABLES.contains(&k.as_str())) {
        return Err(err(format!(
            "[{key}] is not a table of app.toml; the tables are {}",
            TABLES.map(|t| format!("[{t}]")).join(", ")
        )));
    }
    let mut rt = Runtime::default();
    let mut python = None;
    let table = |name: &str| -> Result<Option<&toml::Table>, CliError> {
        match doc.get(name) {
            None => Ok(None),
            Some(toml::Value::Table(t)) => Ok(Some(t)),
            Some(_) => Err(err(format!("[{name}] must be a table"))),
        }
    };
    if let Some(t) = table("runtime")? {
        for (key, v) in t {
            let entry = format!("[runtime] {key}");
            let bad = |want: &str| err(format!("{entry} must be {want}, got {v}"));
            match key.as_str() {
                "python" => {
                    python = Some(v.as_str().ok_or_else(|| bad("a path string"))?.to_owned())
                }
                "workers" => {
                    let n = v
                        .as_integer()
                        .filter(|n| *n >= 1)
                        .ok_or_else(|| bad("an integer >= 1"))?;
                    rt.workers = Some(n as usize);
                }
                "call_timeout" => {
                    let s = v
                        .as_str()
                        .ok_or_else(|| bad("a duration string like \"30s\""))?;
                    rt.call_timeout = Some(
                        crate::cli::parse_duration(s).map_err(|e| err(format!("{entry}: {e}")))?,
                    );
                }
                "max_calls_per_worker" => {
                    let n = v
                        .as_integer()
                        .filter(|n| *n >= 1)
                        .ok_or_else(|| bad("an integer >= 1"))?;
                    rt.max_calls_per_worker = Some(n as u64);
                }
                "max_worker_rss" => {
                    rt.max_worker_rss = Some(match v {
                        toml::Value::Integer(n) if *n > 0 => *n as u64,
                        toml::Value::String(s) => {
                            parse_size(s).ok_or_else(|| bad("a size like \"512MiB\""))?
                        }
                        _ => return Err(bad("a size like \"512MiB\"")),
                    })
                }
                // Used by features this version does not have yet; accepted so that a
                // complete app.toml loads.
                "watch" | "state" | "timezone" => {}
                _ => {
                    return Err(err(format!(
                        "{entry} is not a setting; see the [runtime] table in the docs"
                    )))
                }
            }
        }
    }
    if let Some(t) = table("isolation")? {
        if let Some(v) = t.get("env") {
            let names = v
                .as_array()
                .and_then(|a| {
                    a.iter()
                        .map(|x| x.as_str().map(str::to_owned))
                        .collect::<Option<Vec<_>>>()
                })
                .ok_or_else(|| {
                    err(format!(
                        "[isolation] env must be a list of variable names, got {v}"
                    ))
                })?;
            rt.env = Some(names);
        }
    }
    Ok((rt, python))
}

/// Parses `512MiB`, `1GiB`, `100MB`, `4096` into bytes.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return None,
    };
    n.checked_mul(mult)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512MiB"), Some(512 << 20));
        assert_eq!(parse_size("1GiB"), Some(1 << 30));
        assert_eq!(parse_size("100MB"), Some(100_000_000));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("12 parsecs"), None);
    }

    #[test]
    fn app_toml_errors_name_the_file_and_entry() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("app.toml");
        std::fs::write(&f, "[runtime]\nworkers = \"four\"\n").unwrap();
        let e = parse_app_toml(&f).unwrap_err().to_string();
        assert!(
            e.contains("app.toml") && e.contains("[runtime] workers must be an integer >= 1"),
            "{e}"
        );
        std::fs::write(&f, "[runtime\n").unwrap();
        assert!(parse_app_toml(&f)
            .unwrap_err()
            .to_string()
            .contains("not valid TOML"));
        std::fs::write(&f, "[runtime]\npython = \"venv/bin/python\"\ncall_timeout = \"5s\"\nmax_worker_rss = \"64MiB\"\n").unwrap();
        let (rt, py) = parse_app_toml(&f).unwrap();
        assert_eq!(
            (rt.call_timeout, rt.max_worker_rss, py.as_deref()),
            (
                Some(Duration::from_secs(5)),
                Some(64 << 20),
                Some("venv/bin/python")
            )
        );
    }
}
