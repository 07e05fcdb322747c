//! An install on disk (the "apps dir", README "Plugin host"): its loading, interpreter
//! resolution and app.toml schema live in the `snakepit-host` crate; this module adapts its
//! errors.

pub use snakepit_host::Install as Apps;

use crate::error::CliError;

impl From<snakepit_host::HostError> for CliError {
    fn from(e: snakepit_host::HostError) -> Self {
        use snakepit_host::HostError;
        match e {
            HostError::Config { file, reason } => CliError::Config { file, reason },
            HostError::Usage(m) => CliError::Usage(m),
            HostError::Pool(m) => CliError::Pool(m),
            HostError::Invalid(problems) => {
                let file = problems.first().map(|p| p.file.clone()).unwrap_or_default();
                CliError::Invalid {
                    message: HostError::Invalid(problems).to_string(),
                    file,
                }
            }
        }
    }
}
