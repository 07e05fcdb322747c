//! A generation: one loaded install and the pools started for it. A reload starts the
//! next generation beside the current one, checks it, and only then routes new calls to
//! it (see [`crate::Host::reload`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::future::join_all;
use snakepit::{CallError, Map, Pool};

use crate::{
    explain_templates, load_jobs, timezone_problem, HostError, Install, Problem, JOB_STEP_CONTEXT,
    PASSWORD_CONTEXT,
};

/// One generation of an install's pools.
pub(crate) struct Generation {
    /// 1 for the pools a host starts with; each reload attempt takes the next number.
    pub number: u64,
    pub install: Arc<Install>,
    pub pools: BTreeMap<String, Pool>,
    /// When its pools were ready.
    pub started: SystemTime,
}

impl Generation {
    /// Starts the pools of an already loaded install: "default" with the `[runtime]`
    /// settings, and one per `[pools.NAME]`, each with its own fork-server template.
    /// Does not validate references: `check` does.
    pub(crate) async fn start(install: Install, number: u64) -> Result<Generation, HostError> {
        let mut wanted = vec![("default".to_owned(), install.runtime())];
        for (name, s) in &install.config.pools {
            wanted.push((name.clone(), s.clone()));
        }
        let mut pools = BTreeMap::new();
        for (name, settings) in wanted {
            let pool = install
                .pool_builder_with(&settings)
                .name(name.clone())
                .generation(number)
                .build()
                .await;
            match pool {
                Ok(p) => {
                    pools.insert(name, p);
                }
                Err(e) => {
                    for p in pools.values() {
                        p.shutdown(Duration::from_secs(2)).await;
                    }
                    return Err(install.build_error(e));
                }
            }
        }
        Ok(Generation {
            number,
            install: Arc::new(install),
            pools,
            started: SystemTime::now(),
        })
    }

    /// Sends its pools' worker events to `to` (see [`crate::Host::events`]), until the
    /// pools are gone.
    pub(crate) fn forward_events(
        &self,
        to: &tokio::sync::broadcast::Sender<snakepit::WorkerEvent>,
    ) {
        use tokio::sync::broadcast::error::RecvError;
        for pool in self.pools.values() {
            let (mut rx, to) = (pool.events(), to.clone());
            tokio::spawn(async move {
                loop {
                    match rx.recv().await {
                        Ok(event) => {
                            let _ = to.send(event);
                        }
                        Err(RecvError::Lagged(n)) => {
                            tracing::debug!(missed = n, "worker events: a forwarder fell behind")
                        }
                        Err(RecvError::Closed) => return,
                    }
                }
            });
        }
    }

    /// The pool that runs `reference`'s package.
    pub(crate) fn pool_for(&self, reference: &str) -> &Pool {
        &self.pools[self.install.pool_name(reference)]
    }

    /// Validates, in a worker, every reference app.toml and the jobs.toml files name, and
    /// returns every problem.
    ///
    /// The password validator is checked against its context keys (username, password,
    /// existing_user). A hook's payload keys are not known before dispatch, so a hook is
    /// checked with no context: it must import, exist and be callable; a required
    /// parameter it declares is accepted (the payload is expected to carry it). Each job
    /// python step is checked against the job step context keys ([`JOB_STEP_CONTEXT`])
    /// and its kwargs, after the jobs.toml files are read against their schema (see
    /// [`load_jobs`]).
    pub(crate) async fn check(&self) -> Vec<Problem> {
        struct Todo {
            file: PathBuf,
            entry: String,
            reference: String,
            kwargs: Map,
            keys: Vec<String>,
            hook: bool,
            /// A step's whole date and month templates (see `explain_templates`).
            templates: Vec<(String, String)>,
        }
        let mut todo: Vec<Todo> = Vec::new();
        let cfg = &self.install.config;
        let app = &self.install.app_toml;
        if let Some(r) = &cfg.auth.password_validator {
            todo.push(Todo {
                file: app.clone(),
                entry: "[auth] password_validator".into(),
                reference: r.clone(),
                kwargs: Map::new(),
                keys: PASSWORD_CONTEXT.iter().map(|k| k.to_string()).collect(),
                hook: false,
                templates: vec![],
            });
        }
        for (event, refs) in &cfg.hooks {
            for (i, r) in refs.iter().enumerate() {
                todo.push(Todo {
                    file: app.clone(),
                    entry: format!("[hooks] {event:?}[{i}]"),
                    reference: r.clone(),
                    kwargs: Map::new(),
                    keys: vec![],
                    hook: true,
                    templates: vec![],
                });
            }
        }
        let (files, steps, mut problems) = load_jobs(&self.install.dir);
        problems.extend(timezone_problem(&self.install));
        for step in steps {
            todo.push(Todo {
                file: step.file,
                entry: step.entry,
                reference: step.callable,
                kwargs: step.kwargs,
                keys: JOB_STEP_CONTEXT.iter().map(|k| k.to_string()).collect(),
                hook: false,
                templates: step.templates,
            });
        }
        let checks = todo.into_iter().map(|t| async move {
            let reference = t.reference;
            let res = self
                .pool_for(&reference)
                .validate(&reference, t.kwargs, t.keys)
                .await;
            let reason = match res {
                Ok(()) => return None,
                Err(CallError::BadReference { message, .. })
                    if t.hook && message.contains("missing the required parameter") =>
                {
                    return None
                }
                Err(CallError::BadReference { message, .. }) if message.contains(&reference) => {
                    message
                }
                Err(CallError::BadReference { message, .. }) => {
                    format!("{reference:?}: {message}")
                }
                Err(e) => format!("{reference}: {e}"),
            };
            Some(Problem {
                file: t.file,
                entry: t.entry,
                reason: explain_templates(reason, &t.templates),
            })
        });
        let mut found: Vec<Problem> = join_all(checks).await.into_iter().flatten().collect();
        found.extend(self.unknown_packages().await);
        // app.toml's problems first (in entry order), then the jobs files' problems, file
        // by file (schema and template problems before the worker's).
        let jobs_start = found
            .iter()
            .position(|p| &p.file != app)
            .unwrap_or(found.len());
        problems.extend(found.split_off(jobs_start));
        problems.sort_by_key(|p| files.iter().position(|f| f.file == p.file));
        found.extend(problems);
        let connectors = &self.install.connectors;
        found.extend(connectors.check().await.into_iter().map(|p| Problem {
            file: connectors.config().file.clone(),
            entry: p.entry,
            reason: p.reason,
        }));
        found
    }

    /// `[plugins.PKG]` tables whose package cannot be imported: a misspelt name would
    /// leave the real package unconfined, in the default pool, with the default grants.
    async fn unknown_packages(&self) -> Vec<Problem> {
        let app = &self.install.app_toml;
        let checks = self
            .install
            .config
            .plugins
            .keys()
            .filter(|pkg| pkg.as_str() != "*")
            .map(|pkg| async move {
                // A module's `__name__` is not callable: any answer but "no module" means
                // the package imports.
                let probe = format!("{pkg}:__name__");
                match self.pool_for(&probe).validate(&probe, Map::new(), vec![]).await {
                    Err(CallError::BadReference { message, .. })
                        if message.contains("no module named") =>
                    {
                        Some(Problem {
                            file: app.clone(),
                            entry: format!("[plugins.{pkg}]"),
                            reason: format!("no package or module {pkg:?} can be imported (from plugins/, then the interpreter's site-packages); check the spelling: these settings apply to nothing, and the package they mean runs with the defaults"),
                        })
                    }
                    _ => None,
                }
            });
        join_all(checks).await.into_iter().flatten().collect()
    }

    /// Removes the cached bytecode (`__pycache__/*.pyc`) under `plugins`, before a new
    /// generation starts. CPython trusts a `.pyc` whose recorded source mtime (in whole
    /// seconds) and size match the source: an edit that keeps the size within the second
    /// of the last compile (`VERSION = 1` → `VERSION = 2`) would run the old code.
    /// Removing it costs one compile of each plugin module per generation.
    pub(crate) fn forget_bytecode(plugins: &Path) {
        let Ok(entries) = std::fs::read_dir(plugins) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            // Not through symlinks: a link may point anywhere, even back up.
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if !kind.is_dir() {
                continue;
            }
            if entry.file_name() == "__pycache__" {
                for pyc in std::fs::read_dir(&path).into_iter().flatten().flatten() {
                    if pyc.path().extension().is_some_and(|e| e == "pyc") {
                        let _ = std::fs::remove_file(pyc.path());
                    }
                }
            } else {
                Generation::forget_bytecode(&path);
            }
        }
    }

    /// Stops every pool, giving calls in flight up to `deadline`.
    pub(crate) async fn shutdown(&self, deadline: Duration) {
        join_all(self.pools.values().map(|p| p.shutdown(deadline))).await;
    }
}
