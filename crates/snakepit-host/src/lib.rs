//! The plugin host: an install (the "apps dir" of SPEC §1) opened by one call. It reads
//! app.toml against the full schema of SPEC §4, starts the pools ("default" plus each
//! `[pools.NAME]`), routes each call to the pool of its package, checks every reference
//! that app.toml names, and serves the extension points of SPEC §2: the password
//! validator and the dispatch hooks.
//!
//! `check` also reads every jobs.toml (`<apps>/jobs.toml`, `<apps>/plugins/<pkg>/jobs.toml`)
//! against the schema of SPEC §5 and validates each python step's callable and kwargs in
//! a worker; running jobs belongs to the jobs feature. connectors.toml is loaded with
//! app.toml (see `snakepit-connectors`): every pool serves its connectors, and `check`
//! prepares every named query on its database.
//!
//! # Example
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use snakepit::{Map, Value};
//! use snakepit_host::{Dispatch, Host, PasswordError};
//!
//! let host = Host::open("liberty-apps").await?;
//!
//! // Every reference app.toml names, checked in a worker; all problems at once.
//! for p in host.check().await {
//!     eprintln!("{}: {}: {}", p.file.display(), p.entry, p.reason);
//! }
//!
//! // A call goes to the pool of its package ([plugins.PKG] pool, else [plugins."*"]).
//! let kwargs: Map = vec![("amount".into(), Value::from("100"))];
//! let value = host.call("billing.pricing:quote", kwargs, Map::new()).await?;
//! println!("{}", value.decode()?);
//!
//! match host.validate_password("ada", "hunter2", None).await {
//!     Ok(()) => println!("accepted"),
//!     Err(PasswordError::Rejected(reason)) => println!("rejected: {reason}"),
//!     Err(e) => eprintln!("{e}"),
//! }
//!
//! let payload: Map = vec![("screen".into(), Value::from("invoices"))];
//! let outcome: Dispatch = host.dispatch("screen.before_save", payload).await;
//! if let Some(veto) = &outcome.veto {
//!     println!("vetoed by {}: {}", veto.reference, veto.message);
//! }
//! host.shutdown(Duration::from_secs(10)).await;
//! # Ok(()) }
//! ```

mod config;
mod jobs;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::future::join_all;
use snakepit::{Call, CallError, Map, Pool, RawValue, Value};

pub use config::{
    parse_app_toml, parse_duration, parse_size, AppToml, Auth, Install, Isolation, PluginGrants,
    PoolSettings, RuntimeTable,
};
pub use jobs::{
    check_cron, jobs_files, load_jobs, parse_cron, parse_timezone, timezone_problem, to_value,
    Backoff, Job, JobsFile, JobsToml, Step, StepCheck, JOB_STEP_CONTEXT, TEMPLATES,
};
/// The connectors every pool serves (`Install::connectors`): audit sink, problems, config.
pub use snakepit_connectors as connectors;

/// The context keys the password validator receives (SPEC §2).
pub const PASSWORD_CONTEXT: [&str; 3] = ["username", "password", "existing_user"];

/// Why an install could not be opened.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HostError {
    /// A file of the install is unreadable, not valid TOML or not the schema.
    #[error("{}: {reason}", file.display())]
    Config { file: PathBuf, reason: String },
    /// Bad input the user fixes: a missing apps dir, an unusable interpreter.
    #[error("{0}")]
    Usage(String),
    /// The workers could not run.
    #[error("{0}")]
    Pool(String),
    /// References in the install's TOML files do not load (every problem, as `check`
    /// reports them): a load-time error, before any call.
    #[error("{}", invalid(.0))]
    Invalid(Vec<Problem>),
}

fn invalid(problems: &[Problem]) -> String {
    let mut text = format!(
        "the install has {} problem{} (fix them, then run `snakepit check`):",
        problems.len(),
        if problems.len() == 1 { "" } else { "s" }
    );
    for p in problems {
        text.push_str(&format!(
            "\n  {}: {}: {}",
            p.file.display(),
            p.entry,
            p.reason
        ));
    }
    text
}

/// One problem `check` found: the file, the entry that names the reference, the reason.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    pub file: PathBuf,
    /// e.g. `[auth] password_validator`, `[hooks] "screen.before_save"[0]`,
    /// `[[jobs]] "reissue-monthly-drafts" step "reissue-drafts"`.
    pub entry: String,
    pub reason: String,
}

/// How the password validator answered when it did not accept.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PasswordError {
    /// It raised `ValueError`; the message is the reason.
    #[error("{0}")]
    Rejected(String),
    /// app.toml names no `[auth] password_validator`.
    #[error("app.toml has no [auth] password_validator")]
    NotConfigured,
    /// It could not be called, or raised something other than `ValueError`.
    #[error("the password validator {reference} failed: {error}")]
    Failed { reference: String, error: CallError },
}

/// A `before_*` hook that raised: the action is vetoed.
#[derive(Debug, Clone)]
pub struct Veto {
    pub reference: String,
    pub message: String,
}

/// What `dispatch` did.
#[derive(Debug, Clone, Default)]
pub struct Dispatch {
    /// The hooks that were called and returned, in order.
    pub passed: Vec<String>,
    /// Set when a `before_*` hook failed; the hooks after it were not called.
    pub veto: Option<Veto>,
    /// Hooks of other events that failed (logged; the others still ran).
    pub failed: Vec<(String, CallError)>,
}

/// An open install: its settings and its running pools.
pub struct Host {
    install: Install,
    pools: BTreeMap<String, Pool>,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host")
            .field("dir", &self.install.dir)
            .field("pools", &self.pools.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Host {
    /// Opens the install in `apps_dir`: reads app.toml, resolves the interpreter (SPEC
    /// §1), starts the pools and validates every reference its TOML files name (see
    /// [`Host::check`]); any problem fails the open with all of them.
    pub async fn open(apps_dir: impl AsRef<Path>) -> Result<Host, HostError> {
        Host::start_checked(Install::load(Some(apps_dir.as_ref()), None)?).await
    }

    /// [`Host::start`], then [`Host::check`]: an install with problems does not open.
    pub async fn start_checked(install: Install) -> Result<Host, HostError> {
        let host = Host::start(install).await?;
        let problems = host.check().await;
        if problems.is_empty() {
            return Ok(host);
        }
        host.shutdown(Duration::from_secs(2)).await;
        Err(HostError::Invalid(problems))
    }

    /// Starts the pools of an already loaded install: "default" with the `[runtime]`
    /// settings, and one per `[pools.NAME]`. Does not validate references: `check` does.
    pub async fn start(install: Install) -> Result<Host, HostError> {
        let mut wanted = vec![("default".to_owned(), install.runtime())];
        for (name, s) in &install.config.pools {
            wanted.push((name.clone(), s.clone()));
        }
        let mut pools = BTreeMap::new();
        for (name, settings) in wanted {
            let pool = install
                .pool_builder_with(&settings)
                .name(name.clone())
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
        Ok(Host { install, pools })
    }

    /// The install this host runs.
    pub fn install(&self) -> &Install {
        &self.install
    }

    /// The name of the pool that runs `reference`'s package: `[plugins.PKG] pool`, else
    /// `[plugins."*"] pool`, else "default".
    pub fn pool_name(&self, reference: &str) -> &str {
        self.install.pool_for(reference).0
    }

    /// The pool that runs `reference`.
    pub fn pool_for(&self, reference: &str) -> &Pool {
        &self.pools[self.pool_name(reference)]
    }

    /// A pool by name.
    pub fn pool(&self, name: &str) -> Option<&Pool> {
        self.pools.get(name)
    }

    /// Calls `reference` in the pool of its package, with `kwargs` and `context`.
    pub async fn call(
        &self,
        reference: &str,
        kwargs: Map,
        context: Map,
    ) -> Result<RawValue, CallError> {
        self.submit(reference, |c| c.kwargs(kwargs).context(context))
            .await
    }

    /// Makes a call of `reference` in the pool of its package; `options` sets the rest
    /// of the [`Call`] (timeout, logs). (`Call` does not tell its reference, hence the
    /// reference apart.)
    pub async fn submit(
        &self,
        reference: &str,
        options: impl FnOnce(Call) -> Call,
    ) -> Result<RawValue, CallError> {
        let call = options(Call::new(reference));
        self.pool_for(reference).submit(call).await
    }

    /// Validates, in a worker, every reference app.toml and the jobs.toml files name,
    /// prepares every named query of connectors.toml on its database, and returns every
    /// problem.
    ///
    /// The password validator is checked against its context keys (username, password,
    /// existing_user). A hook's payload keys are not known before dispatch, so a hook is
    /// checked with no context: it must import, exist and be callable; a required
    /// parameter it declares is accepted (the payload is expected to carry it). Each job
    /// python step is checked against the job step context keys ([`JOB_STEP_CONTEXT`])
    /// and its kwargs, after the jobs.toml files are read against their schema (see
    /// [`load_jobs`]).
    pub async fn check(&self) -> Vec<Problem> {
        struct Todo {
            file: PathBuf,
            entry: String,
            reference: String,
            kwargs: Map,
            keys: Vec<String>,
            hook: bool,
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
                reason,
            })
        });
        let mut found: Vec<Problem> = join_all(checks).await.into_iter().flatten().collect();
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

    /// Calls `[auth] password_validator` with username, password and existing_user:
    /// returning accepts, `ValueError` rejects with its message. The password is never
    /// logged.
    pub async fn validate_password(
        &self,
        username: &str,
        password: &str,
        existing_user: Option<Value>,
    ) -> Result<(), PasswordError> {
        let reference = self
            .install
            .config
            .auth
            .password_validator
            .clone()
            .ok_or(PasswordError::NotConfigured)?;
        let ctx: Map = vec![
            ("username".into(), Value::from(username)),
            ("password".into(), Value::from(password)),
            ("existing_user".into(), existing_user.unwrap_or(Value::Nil)),
        ];
        match self.call(&reference, Map::new(), ctx).await {
            Ok(_) => Ok(()),
            Err(CallError::Raised(e)) if e.type_name == "ValueError" => {
                Err(PasswordError::Rejected(e.message))
            }
            Err(error) => Err(PasswordError::Failed { reference, error }),
        }
    }

    /// Calls the hooks of `event` in order, with the payload's keys as their context. In
    /// a `before_*` event the first hook that fails vetoes (the rest are not called);
    /// in any other event a failing hook is logged and reported and the rest still run.
    pub async fn dispatch(&self, event: &str, payload: Map) -> Dispatch {
        let mut out = Dispatch::default();
        let Some(hooks) = self.install.config.hooks.get(event) else {
            return out;
        };
        let before = event
            .rsplit('.')
            .next()
            .unwrap_or(event)
            .starts_with("before_");
        for reference in hooks {
            match self.call(reference, Map::new(), payload.clone()).await {
                Ok(_) => out.passed.push(reference.clone()),
                Err(e) if before => {
                    let message = match &e {
                        CallError::Raised(x) => x.message.clone(),
                        other => other.to_string(),
                    };
                    out.veto = Some(Veto {
                        reference: reference.clone(),
                        message,
                    });
                    break;
                }
                Err(e) => {
                    tracing::warn!(event, reference = %reference, error = %e, "hook failed");
                    out.failed.push((reference.clone(), e));
                }
            }
        }
        out
    }

    /// Stops every pool, giving calls in flight up to `deadline`.
    pub async fn shutdown(&self, deadline: Duration) {
        join_all(self.pools.values().map(|p| p.shutdown(deadline))).await;
    }
}
