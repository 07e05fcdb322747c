//! The watcher: reloads a [`Host`] when the code it runs changes on disk.
//!
//! It watches, with inotify (through `notify` and `notify-debouncer-full`):
//! - the worker interpreter's site-packages directories (asked of the interpreter once,
//!   at start), for a `*.dist-info` entry appearing, disappearing or being replaced: what
//!   `pip install`, `pip install -U` and `pip uninstall` do;
//! - every `.py` and `jobs.toml` under `plugins/`, recursively (`__pycache__` aside);
//! - `app.toml`, `connectors.toml` and `jobs.toml` in the apps dir.
//!
//! Reading a file (a worker importing a module) is not a change. A burst of changes (a
//! pip run touches hundreds of files) makes one reload: the watcher waits until no
//! relevant change has come for a quiet period, then reloads once; changes that come
//! during a reload make one more reload after it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind};
use notify::RecursiveMode;
use notify_debouncer_full::{new_debouncer, DebounceEventResult, Debouncer, RecommendedCache};
use tokio::sync::mpsc;

use crate::{Host, HostError};

/// How long the watcher waits after the last relevant change before it reloads.
pub const DEFAULT_QUIET: Duration = Duration::from_millis(500);

/// The files in the apps dir itself that a reload reads.
const APPS_FILES: [&str; 3] = ["app.toml", "connectors.toml", "jobs.toml"];

/// Watches an install's code and reloads its host on a change. Stops when dropped.
pub struct Watcher {
    roots: Vec<PathBuf>,
    task: tokio::task::JoinHandle<()>,
    _debouncer: Debouncer<notify::RecommendedWatcher, RecommendedCache>,
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher")
            .field("roots", &self.roots)
            .finish()
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Where a watched path sits, which decides what in it is a change.
#[derive(Debug, Clone)]
struct Roots {
    apps: PathBuf,
    plugins: PathBuf,
    site_packages: Vec<PathBuf>,
}

impl Roots {
    /// Whether a change to `path` calls for a reload.
    fn relevant(&self, path: &Path) -> bool {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let parent = path.parent();
        if parent.is_some_and(|p| self.site_packages.iter().any(|s| s == p)) {
            return name.ends_with(".dist-info");
        }
        if let Ok(rel) = path.strip_prefix(&self.plugins) {
            return (name.ends_with(".py") || name == "jobs.toml")
                && !rel.components().any(|c| c.as_os_str() == "__pycache__");
        }
        parent == Some(self.apps.as_path()) && APPS_FILES.contains(&name)
    }

    /// `path` as a person reads it: relative to the apps dir when it is inside.
    fn show(&self, path: &Path) -> String {
        path.strip_prefix(&self.apps)
            .unwrap_or(path)
            .display()
            .to_string()
    }
}

/// Whether an event kind changes what a reload would read (opening or reading does not;
/// nor does a change of permissions or times).
fn changes(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) | EventKind::Modify(ModifyKind::Metadata(_)) => false,
        _ => true,
    }
}

/// The site-packages directories of `python` (its `site.getsitepackages()` and the user
/// site), those that exist.
pub async fn site_packages(python: &Path) -> Result<Vec<PathBuf>, String> {
    const ASK: &str =
        "import site\nfor p in [*site.getsitepackages(), site.getusersitepackages()]: print(p)";
    // The probe runs site-packages' `.pth` files: confined like a fork-server.
    let (cmd, _ruleset) = snakepit::helper_command(python, snakepit::DEFAULT_ENV);
    let out = tokio::process::Command::from(cmd)
        .args(["-c", ASK])
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| format!("cannot run {}: {e}", python.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} could not list its site-packages ({}): {}",
            python.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let mut dirs: Vec<PathBuf> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(PathBuf::from)
        .filter(|p| p.is_dir())
        .collect();
    dirs.dedup();
    Ok(dirs)
}

impl Watcher {
    /// Starts watching the install `host` serves (its apps dir, `plugins/`, and its
    /// interpreter's site-packages) and reloads `host` once no relevant change has come
    /// for `quiet` ([`DEFAULT_QUIET`] in `snakepit serve`).
    pub async fn start(host: Arc<Host>, quiet: Duration) -> Result<Watcher, HostError> {
        let install = host.install();
        let site = site_packages(&install.python).await.map_err(|e| {
            HostError::Usage(format!(
                "{e} (the interpreter comes from {})",
                install.python_from
            ))
        })?;
        let roots = Roots {
            apps: install.dir.clone(),
            plugins: install.dir.join("plugins"),
            site_packages: site,
        };
        let (tx, rx) = mpsc::unbounded_channel::<PathBuf>();
        let filter = roots.clone();
        let mut debouncer = new_debouncer(
            Duration::from_millis(100),
            None,
            move |result: DebounceEventResult| match result {
                Ok(events) => {
                    for ev in events.iter().filter(|e| changes(&e.kind)) {
                        for p in ev.paths.iter().filter(|p| filter.relevant(p)) {
                            let _ = tx.send(p.clone());
                        }
                    }
                }
                Err(errors) => {
                    for e in errors {
                        tracing::warn!(error = %e, "watching for changes");
                    }
                }
            },
        )
        .map_err(|e| HostError::Usage(format!("cannot watch for changes: {e}")))?;
        let mut watched = vec![(roots.apps.clone(), RecursiveMode::NonRecursive)];
        if roots.plugins.is_dir() {
            watched.push((roots.plugins.clone(), RecursiveMode::Recursive));
        }
        for s in &roots.site_packages {
            watched.push((s.clone(), RecursiveMode::NonRecursive));
        }
        for (dir, mode) in &watched {
            debouncer.watch(dir, *mode).map_err(|e| {
                HostError::Usage(format!(
                    "cannot watch {} for changes: {e}; set [runtime] watch = false to serve without watching",
                    dir.display()
                ))
            })?;
        }
        tracing::info!(roots = ?watched.iter().map(|w| &w.0).collect::<Vec<_>>(), "watching for changes");
        let task = tokio::spawn(reload_on_change(host, roots, rx, quiet));
        Ok(Watcher {
            roots: watched.into_iter().map(|w| w.0).collect(),
            task,
            _debouncer: debouncer,
        })
    }

    /// The directories watched.
    pub fn roots(&self) -> &[PathBuf] {
        &self.roots
    }
}

/// Reloads once per burst of changes: after the first change, until `quiet` passes
/// without another.
async fn reload_on_change(
    host: Arc<Host>,
    roots: Roots,
    mut rx: mpsc::UnboundedReceiver<PathBuf>,
    quiet: Duration,
) {
    while let Some(first) = rx.recv().await {
        let mut changed = vec![first];
        loop {
            match tokio::time::timeout(quiet, rx.recv()).await {
                Ok(Some(p)) => {
                    if !changed.contains(&p) {
                        changed.push(p);
                    }
                }
                Ok(None) => return,
                Err(_) => break,
            }
        }
        let mut trigger = format!("{} changed", roots.show(&changed[0]));
        if changed.len() > 1 {
            trigger = format!(
                "{} and {} other file{} changed",
                roots.show(&changed[0]),
                changed.len() - 1,
                if changed.len() == 2 { "" } else { "s" }
            );
        }
        // The outcome is logged and kept for `status` by the host.
        let _ = host.reload(&trigger).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_code_and_install_files_are_changes() {
        let roots = Roots {
            apps: "/apps".into(),
            plugins: "/apps/plugins".into(),
            site_packages: vec!["/venv/lib/python3.11/site-packages".into()],
        };
        let yes = [
            "/venv/lib/python3.11/site-packages/acme-2.0.dist-info",
            "/apps/plugins/billing/invoicing.py",
            "/apps/plugins/billing/jobs.toml",
            "/apps/app.toml",
            "/apps/connectors.toml",
            "/apps/jobs.toml",
        ];
        let no = [
            "/venv/lib/python3.11/site-packages/acme/__init__.py",
            "/venv/lib/python3.11/site-packages/acme",
            "/apps/plugins/billing/__pycache__/invoicing.cpython-311.pyc",
            "/apps/plugins/billing/__pycache__/x.py",
            "/apps/plugins/billing/notes.txt",
            "/apps/.snakepit/control.sock",
            "/apps/other.toml",
        ];
        for p in yes {
            assert!(roots.relevant(Path::new(p)), "{p}");
        }
        for p in no {
            assert!(!roots.relevant(Path::new(p)), "{p}");
        }
        assert!(!changes(&EventKind::Access(AccessKind::Open(
            AccessMode::Any
        ))));
        assert!(changes(&EventKind::Access(AccessKind::Close(
            AccessMode::Write
        ))));
        assert!(changes(&EventKind::Create(notify::event::CreateKind::File)));
    }
}
