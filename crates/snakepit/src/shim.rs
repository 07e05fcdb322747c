//! The embedded Python shim, written once per content hash to a cache directory, and
//! the resolution of the worker interpreter.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use crate::error::SpawnError;

include!(concat!(env!("OUT_DIR"), "/shim_files.rs"));

/// The Python that starts a worker: `-c BOOTSTRAP <shimdir> <mode> <options>`.
pub(crate) const BOOTSTRAP: &str = "import sys; sys.path.append(sys.argv[1]); \
from snakepit_shim.main import main; main(sys.argv[2:])";

fn content_hash() -> u64 {
    // FNV-1a names the cache directory; what is in it is checked byte for byte.
    SHIM_FILES.iter().fold(FNV_OFFSET, |h, (name, text)| {
        let h = fnv1a(h, name.as_bytes());
        let h = fnv1a(h, &[0]);
        let h = fnv1a(h, text.as_bytes());
        fnv1a(h, &[0])
    })
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a of `bytes`, continuing from `h`.
fn fnv1a(h: u64, bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(h, |h, b| (h ^ *b as u64).wrapping_mul(0x0100_0000_01b3))
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

/// Writes the shim to `<cache>/shim2-<hash>/snakepit_shim/` and returns
/// `<cache>/shim2-<hash>` (the directory to put on `sys.path`). (`shim-<hash>`, the
/// layout before, trusted a `.complete` marker: a supervisor of that version must not
/// take a verified copy for one of its own, or the other way round.)
///
/// The code the supervisor runs is the code it wrote: a copy already there is used only
/// if this user owns it, nobody else can write it, and each of its files equals the
/// embedded shim byte for byte with nothing else beside them (but CPython's own
/// `__pycache__`); anything else is replaced by a fresh copy. Directories are made
/// 0700 and files 0600, so a worker running under another uid can neither read nor
/// change them. (A process of the supervisor's own uid can change any file the
/// supervisor uses, its bytecode caches included: keeping workers out of that uid is
/// the isolation's part.)
pub(crate) fn materialize() -> Result<PathBuf, SpawnError> {
    materialize_in(&cache_root())
}

/// The directory holding the embedded shim's `snakepit_shim` package, written there if
/// it is not (see `materialize`): what `snakepit shim --path` prints, for
/// `PYTHONPATH`, editors and type checkers.
pub fn shim_dir() -> Result<PathBuf, SpawnError> {
    materialize()
}

/// The Python that runs `snakepit test`'s pytest: `-c TEST_BOOTSTRAP <shimdir>
/// <plugins dir> <pytest args>` (see `snakepit_shim/testing.py`).
pub const TEST_BOOTSTRAP: &str = "import sys; sys.path.append(sys.argv[1]); \
from snakepit_shim.testing import main; sys.exit(main(sys.argv[2:]))";

fn materialize_in(root: &Path) -> Result<PathBuf, SpawnError> {
    let dir = root.join(format!("shim2-{:016x}", content_hash()));
    let err = |e: std::io::Error| SpawnError::Shim {
        dir: dir.clone(),
        reason: e.to_string(),
    };
    private_dir(root).map_err(err)?;
    if intact(&dir) {
        return Ok(dir);
    }
    let tmp = tempdir_in(root).map_err(err)?;
    let pkg = tmp.join("snakepit_shim");
    let written = fs::DirBuilder::new()
        .mode(0o700)
        .create(&pkg)
        .and_then(|()| {
            SHIM_FILES.iter().try_for_each(|(name, text)| {
                fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(pkg.join(name))?
                    .write_all(text.as_bytes())
            })
        });
    if let Err(e) = written {
        let _ = fs::remove_dir_all(&tmp);
        return Err(err(e));
    }
    // A copy that failed the check is moved aside first (a rename cannot replace a
    // directory that has files in it).
    if fs::symlink_metadata(&dir).is_ok() {
        let stale = root.join(format!(".stale-{:016x}", fastrand::u64(..)));
        if fs::rename(&dir, &stale).is_ok() {
            let _ = fs::remove_dir_all(&stale);
        }
    }
    // Another supervisor may have won the race: use its copy if it is intact.
    if fs::rename(&tmp, &dir).is_err() {
        let _ = fs::remove_dir_all(&tmp);
        if !intact(&dir) {
            return Err(err(std::io::Error::other(
                "could not move a verified copy of the shim in place",
            )));
        }
    }
    Ok(dir)
}

/// Makes `dir` (mode 0700) if it is missing; fails if it is not a directory of this
/// user that only this user can write.
fn private_dir(dir: &Path) -> std::io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let meta = fs::symlink_metadata(dir)?;
    if !owned_by_us(&meta, 0o022) || !meta.is_dir() {
        return Err(std::io::Error::other(format!(
            "{} is not a directory that only this user (uid {}) can write (mode {:o}); make it private (chmod 700) or set SNAKEPIT_CACHE_DIR",
            dir.display(),
            nix::unistd::getuid(),
            meta.mode() & 0o7777
        )));
    }
    Ok(())
}

/// Owned by this user, and none of the permission bits of `forbidden` set.
fn owned_by_us(meta: &fs::Metadata, forbidden: u32) -> bool {
    meta.uid() == nix::unistd::getuid().as_raw() && meta.mode() & forbidden == 0
}

/// Whether `dir` holds exactly the embedded shim, as this process would write it.
fn intact(dir: &Path) -> bool {
    let private_dir =
        |p: &Path| fs::symlink_metadata(p).is_ok_and(|m| m.is_dir() && owned_by_us(&m, 0o077));
    let pkg = dir.join("snakepit_shim");
    if !private_dir(dir) || !private_dir(&pkg) {
        return false;
    }
    let Ok(entries) = fs::read_dir(&pkg) else {
        return false;
    };
    let mut seen = 0;
    for entry in entries {
        let Ok(entry) = entry else { return false };
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            return false;
        };
        if name == "__pycache__" {
            // CPython's bytecode, written by the templates: nobody else may write it.
            let ok = fs::symlink_metadata(entry.path())
                .is_ok_and(|m| m.is_dir() && owned_by_us(&m, 0o022));
            if !ok {
                return false;
            }
            continue;
        }
        let Some((_, text)) = SHIM_FILES.iter().find(|(n, _)| *n == name) else {
            return false;
        };
        let same = fs::symlink_metadata(entry.path())
            .is_ok_and(|m| m.is_file() && owned_by_us(&m, 0o077) && m.len() == text.len() as u64)
            && fs::read(entry.path()).is_ok_and(|b| b == text.as_bytes());
        if !same {
            return false;
        }
        seen += 1;
    }
    seen == SHIM_FILES.len()
}

fn tempdir_in(root: &Path) -> std::io::Result<PathBuf> {
    for _ in 0..16 {
        let p = root.join(format!(".tmp-{:016x}", fastrand::u64(..)));
        match fs::DirBuilder::new().mode(0o700).create(&p) {
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
///
/// The answer for an interpreter binary (an ELF file, the usual `/usr/bin/python3` or a
/// venv's `bin/python`) is kept in the cache directory, keyed by the path given and the
/// identity of the file it leads to (device, inode, size, modification time), so that
/// the next start pays no probe (≈ 30 ms); a script (a pyenv shim, whose answer depends
/// on the environment and the working directory) is probed every time.
pub fn resolve_interpreter(python: &Path) -> Result<PathBuf, SpawnError> {
    resolve_in(&cache_root(), python)
}

fn resolve_in(root: &Path, python: &Path) -> Result<PathBuf, SpawnError> {
    let cached = binary_key(python).map(|key| {
        let file = root.join(format!("python-{:016x}", fnv1a(FNV_OFFSET, key.as_bytes())));
        (key, file)
    });
    if let Some((key, file)) = &cached {
        if let Some(exe) = fs::read_to_string(file)
            .ok()
            .and_then(|t| Some(t.strip_prefix(key.as_str())?.strip_prefix('\n')?.to_owned()))
        {
            return Ok(PathBuf::from(exe));
        }
    }
    let exe = probe_interpreter(python)?;
    if let (Some((key, file)), Some(exe_text)) = (&cached, exe.to_str()) {
        // Best effort: a cache that cannot be written costs the probe next time.
        let _ = private_dir(root).and_then(|()| write_private(file, &format!("{key}\n{exe_text}")));
    }
    Ok(exe)
}

/// What identifies the interpreter binary `python` leads to (through PATH for a bare
/// name, through symlinks), or `None` if it is not one.
fn binary_key(python: &Path) -> Option<String> {
    let path = if python.components().count() == 1 {
        std::env::split_paths(&std::env::var_os("PATH")?)
            .map(|d| d.join(python))
            .find(|p| p.is_file())?
    } else {
        std::path::absolute(python).ok()?
    };
    let mut magic = [0u8; 4];
    std::io::Read::read_exact(&mut fs::File::open(&path).ok()?, &mut magic).ok()?;
    if magic != *b"\x7fELF" {
        return None;
    }
    let m = fs::metadata(&path).ok()?;
    let text = path.to_str()?;
    Some(format!(
        "{text}\0{}:{}:{}:{}.{}",
        m.dev(),
        m.ino(),
        m.size(),
        m.mtime(),
        m.mtime_nsec()
    ))
}

/// Writes `text` to `file` (mode 0600) by renaming a finished temporary file over it.
fn write_private(file: &Path, text: &str) -> std::io::Result<()> {
    let tmp = file.with_extension(format!("tmp-{:016x}", fastrand::u64(..)));
    let written = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .and_then(|()| fs::rename(&tmp, file));
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

fn probe_interpreter(python: &Path) -> Result<PathBuf, SpawnError> {
    let (mut cmd, _ruleset) = crate::isolation::helper_command(python, crate::config::DEFAULT_ENV);
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_binary_interpreter_is_probed_once_and_a_script_every_time() {
        let root = tempfile::tempdir().unwrap();
        let real = probe_interpreter(Path::new("python3")).expect("python3 on PATH");
        let entries = || -> Vec<PathBuf> {
            fs::read_dir(root.path())
                .unwrap()
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .unwrap()
                        .to_string_lossy()
                        .starts_with("python-")
                })
                .collect()
        };
        assert_eq!(resolve_in(root.path(), &real).unwrap(), real);
        let [entry] = &entries()[..] else {
            panic!("one cache entry: {:?}", entries())
        };
        // The second start takes the answer from the cache: a doctored one shows it.
        let text = fs::read_to_string(entry).unwrap();
        let (key, _) = text.rsplit_once('\n').unwrap();
        fs::write(entry, format!("{key}\n/from/the/cache")).unwrap();
        assert_eq!(
            resolve_in(root.path(), &real).unwrap(),
            Path::new("/from/the/cache")
        );
        // An entry written for another file (its key differs) is not taken.
        fs::write(entry, "/usr/bin/other\0 1:2:3:4.5\n/from/the/cache").unwrap();
        assert_eq!(resolve_in(root.path(), &real).unwrap(), real);
        // A script (a pyenv-style shim) is probed, and nothing is cached for it.
        let script = root.path().join("shim.sh");
        fs::write(
            &script,
            format!("#!/bin/sh\nexec {} \"$@\"\n", real.display()),
        )
        .unwrap();
        fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(resolve_in(root.path(), &script).unwrap(), real);
        assert_eq!(entries().len(), 1, "nothing cached for a script");
    }

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().mode() & 0o777
    }

    fn assert_written(dir: &Path) {
        let pkg = dir.join("snakepit_shim");
        assert_eq!((mode(dir), mode(&pkg)), (0o700, 0o700));
        for (name, text) in SHIM_FILES {
            assert_eq!(fs::read_to_string(pkg.join(name)).unwrap(), *text, "{name}");
            assert_eq!(mode(&pkg.join(name)), 0o600, "{name}");
        }
        assert_eq!(fs::read_dir(&pkg).unwrap().count(), SHIM_FILES.len());
    }

    #[test]
    fn the_shim_is_written_private_and_reused_when_intact() {
        let root = tempfile::tempdir().unwrap();
        let dir = materialize_in(root.path()).unwrap();
        assert_written(&dir);
        // CPython's bytecode beside it is fine.
        fs::create_dir(dir.join("snakepit_shim/__pycache__")).unwrap();
        let marker = dir.join("snakepit_shim/__pycache__/kept");
        fs::write(&marker, b"").unwrap();
        assert_eq!(materialize_in(root.path()).unwrap(), dir);
        assert!(marker.exists(), "an intact copy is reused");
    }

    #[test]
    fn a_changed_added_or_opened_up_file_makes_a_fresh_copy() {
        let root = tempfile::tempdir().unwrap();
        let dir = materialize_in(root.path()).unwrap();
        let pkg = dir.join("snakepit_shim");
        let (victim, _) = SHIM_FILES[0];
        let tamper: [&dyn Fn(); 4] = [
            &|| {
                let mut f = fs::OpenOptions::new()
                    .append(true)
                    .open(pkg.join(victim))
                    .unwrap();
                f.write_all(b"\nimport os; os.system('evil')\n").unwrap();
            },
            &|| fs::write(pkg.join("sitecustomize.py"), b"evil").unwrap(),
            &|| fs::set_permissions(pkg.join(victim), fs::Permissions::from_mode(0o666)).unwrap(),
            &|| fs::remove_file(pkg.join(victim)).unwrap(),
        ];
        for (i, t) in tamper.iter().enumerate() {
            t();
            assert_eq!(materialize_in(root.path()).unwrap(), dir, "{i}");
            assert_written(&dir);
        }
    }

    #[test]
    fn a_cache_root_others_can_write_is_refused() {
        let root = tempfile::tempdir().unwrap();
        fs::set_permissions(root.path(), fs::Permissions::from_mode(0o777)).unwrap();
        let e = materialize_in(root.path()).unwrap_err().to_string();
        assert!(e.contains("only this user"), "{e}");
    }
}
