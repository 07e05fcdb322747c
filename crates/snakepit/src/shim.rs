//! The embedded Python shim, written once per content hash to a cache directory, and
//! the resolution of the worker interpreter.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use crate::error::SpawnError;

include!(concat!(env!("OUT_DIR"), "/shim_files.rs"));

/// The Python that starts a worker: `-c BOOTSTRAP <shimdir> <mode> <options>`.
pub(crate) const BOOTSTRAP: &str = "import sys; sys.path.append(sys.argv[1]); \
from snakepit_shim.main import main; main(sys.argv[2:])";

fn content_hash() -> u64 {
    // FNV-1a: a cache key, not a security boundary (the directory is the user's own).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (name, text) in SHIM_FILES {
        for b in name.bytes().chain([0]).chain(text.bytes()).chain([0]) {
            h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

fn cache_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("SNAKEPIT_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("snakepit");
    }
    if let Some(home) = std::env::var_os("HOME") {
        return PathBuf::from(home).join(".cache/snakepit");
    }
    std::env::temp_dir().join(format!("snakepit-{}", nix::unistd::getuid()))
}

/// Writes the shim to `<cache>/shim-<hash>/snakepit_shim/` unless it is there already,
/// and returns `<cache>/shim-<hash>` (the directory to put on `sys.path`).
pub(crate) fn materialize() -> Result<PathBuf, SpawnError> {
    let root = cache_root();
    let dir = root.join(format!("shim-{:016x}", content_hash()));
    if dir.join("snakepit_shim/.complete").exists() {
        return Ok(dir);
    }
    let err = |e: std::io::Error| SpawnError::Shim {
        dir: dir.clone(),
        reason: e.to_string(),
    };
    fs::create_dir_all(&root).map_err(err)?;
    let tmp = tempdir_in(&root).map_err(err)?;
    let pkg = tmp.join("snakepit_shim");
    fs::create_dir(&pkg).map_err(err)?;
    for (name, text) in SHIM_FILES {
        fs::File::create(pkg.join(name))
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .map_err(err)?;
    }
    fs::write(pkg.join(".complete"), b"").map_err(err)?;
    // Another process may have won the race: its copy is identical, keep it.
    if fs::rename(&tmp, &dir).is_err() {
        let _ = fs::remove_dir_all(&tmp);
        if !dir.join("snakepit_shim/.complete").exists() {
            return Err(err(std::io::Error::other(
                "could not move the shim in place",
            )));
        }
    }
    Ok(dir)
}

fn tempdir_in(root: &Path) -> std::io::Result<PathBuf> {
    for _ in 0..16 {
        let p = root.join(format!(".tmp-{:016x}", fastrand::u64(..)));
        match fs::create_dir(&p) {
            Ok(()) => return Ok(p),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other("no free temporary name"))
}

/// Runs `python` once to find the real interpreter behind it (`python3` may be a pyenv
/// shell shim costing tens of milliseconds per start) and to check its version. The
/// probe runs site-packages' `.pth` files: it is confined like a fork-server, with the
/// workers' default environment.
pub fn resolve_interpreter(python: &Path) -> Result<PathBuf, SpawnError> {
    let (mut cmd, _ruleset) = crate::isolation::helper_command(python, crate::pool::DEFAULT_ENV);
    let out = cmd
        .args([
            "-c",
            "import sys; print(sys.executable); print('%d.%d.%d' % sys.version_info[:3])",
        ])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| SpawnError::Interpreter {
            path: python.to_owned(),
            reason: e.to_string(),
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let (Some(exe), Some(version), true) = (lines.next(), lines.next(), out.status.success())
    else {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(SpawnError::Interpreter {
            path: python.to_owned(),
            reason: format!("it answered {}: {}", out.status, stderr.trim()),
        });
    };
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    if (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) < (3, 9) {
        return Err(SpawnError::PythonTooOld {
            path: python.to_owned(),
            version: version.to_owned(),
        });
    }
    // An empty sys.executable happens in embedded interpreters: keep what we were given.
    Ok(if exe.is_empty() {
        python.to_owned()
    } else {
        PathBuf::from(exe)
    })
}
