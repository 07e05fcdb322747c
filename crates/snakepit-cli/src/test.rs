//! `snakepit test [PKG|PATH]... [-- PYTEST_ARGS]`: the plugins' pytest suites, run with
//! the install's interpreter and `sys.path` (plugins/ first), with the fixtures of the
//! shim's pytest plugin reaching the install's real connectors through a host that this
//! command runs (`snakepit_host::testing`). The exit status is pytest's.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use snakepit_host::testing::TestServer;
use snakepit_host::Host;

use crate::apps::Apps;
use crate::error::CliError;

/// The variable that gives the test process the socket of the host.
const SOCKET_ENV: &str = "SNAKEPIT_TEST_SOCKET";

pub async fn run(
    mut apps: Apps,
    targets: &[String],
    pytest_args: &[String],
) -> Result<ExitCode, CliError> {
    let plugins = apps.dir.join("plugins");
    let paths = resolve(&plugins, targets)?;
    let shim = snakepit::shim_dir().map_err(|e| CliError::Pool(e.to_string()))?;
    // Tests run one at a time: a worker per pool is enough, and starts sooner.
    apps.config.runtime.workers = Some(1);
    for pool in apps.config.pools.values_mut() {
        pool.workers = Some(1);
    }
    let python = apps.python.clone();
    let dir = private_dir()?;
    let socket = dir.join("test.sock");
    let server = TestServer::start(&socket, Host::start(apps))
        .map_err(|e| CliError::Pool(format!("cannot listen on {}: {e}", socket.display())))?;
    let spawned = tokio::process::Command::new(&python)
        .arg("-c")
        .arg(snakepit::TEST_BOOTSTRAP)
        .arg(&shim)
        .arg(&plugins)
        .args(&paths)
        .args(pytest_args)
        .env(SOCKET_ENV, server.socket())
        .kill_on_drop(true)
        .spawn();
    let status = match spawned {
        Ok(mut child) => {
            if let Some(pid) = child.id() {
                server.allow(pid);
            }
            // Ctrl-C reaches pytest too (the same process group): it stops and reports;
            // this process waits for it rather than die first.
            loop {
                tokio::select! {
                    status = child.wait() => break status,
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
        }
        Err(e) => Err(e),
    };
    server.stop(Duration::from_secs(2)).await;
    let _ = std::fs::remove_dir_all(&dir);
    let status = status.map_err(|e| {
        CliError::Usage(format!(
            "cannot run the install's interpreter {}: {e}",
            python.display()
        ))
    })?;
    Ok(match status.code() {
        Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        None => ExitCode::from(1),
    })
}

/// What pytest is given: each target that is a path as it is, a package (or module)
/// name of plugins/ as its path there; none: plugins/ itself.
fn resolve(plugins: &Path, targets: &[String]) -> Result<Vec<PathBuf>, CliError> {
    if targets.is_empty() {
        if !plugins.is_dir() {
            return Err(CliError::Usage(format!(
                "{} does not exist: there are no plugin tests to run (name a path, or make an install with `snakepit init DIR`)",
                plugins.display()
            )));
        }
        return Ok(vec![plugins.to_owned()]);
    }
    targets
        .iter()
        .map(|t| {
            let given = PathBuf::from(t);
            // pytest's own node ids (`path::test`) name a path too.
            let file = t.split("::").next().unwrap_or(t);
            if Path::new(file).exists() {
                return Ok(given);
            }
            for candidate in [plugins.join(t), plugins.join(format!("{t}.py"))] {
                if candidate.exists() {
                    return Ok(candidate);
                }
            }
            Err(CliError::Usage(format!(
                "{t:?} is neither a path nor a package of {} (packages: {})",
                plugins.display(),
                packages(plugins)
            )))
        })
        .collect()
}

fn packages(plugins: &Path) -> String {
    let mut names: Vec<String> = std::fs::read_dir(plugins)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let path = e.path();
            if path.join("__init__.py").is_file() {
                Some(name)
            } else {
                name.strip_suffix(".py").map(str::to_owned)
            }
        })
        .collect();
    names.sort();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

/// A new directory only this user can enter, for the socket (a short path: a Unix
/// socket's path has at most 107 bytes).
fn private_dir() -> Result<PathBuf, CliError> {
    let base = std::env::temp_dir();
    for _ in 0..16 {
        let dir = base.join(format!(
            "snakepit-test-{}-{:08x}",
            std::process::id(),
            fastrand::u32(..)
        ));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(CliError::Pool(format!(
                    "cannot make a directory in {}: {e}",
                    base.display()
                )))
            }
        }
    }
    Err(CliError::Pool(format!(
        "no free directory name in {}",
        base.display()
    )))
}
