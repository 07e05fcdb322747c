//! SQL and API connectors served to plugins by the supervisor (README, "Connectors";
//! `python-shim/README.md`, "Inside a plugin").
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async {
//! use snakepit_connectors::{Connectors, ConnectorsConfig, Grants};
//!
//! let apps = tempfile::tempdir()?;
//! std::fs::write(apps.path().join("connectors.toml"), r#"
//!     [sql.billing]
//!     url = "sqlite://billing.db?mode=rwc"
//!     [sql.billing.queries]
//!     drafts = "SELECT id, amount FROM invoices WHERE status = 'draft'"
//! "#)?;
//! let connectors = Connectors::new(ConnectorsConfig::load(apps.path())?, Grants::default(), None)?;
//! // Every named query, prepared on its database: here the table is missing.
//! let problems = connectors.check().await;
//! assert_eq!(problems[0].entry, "[sql.billing.queries] drafts");
//! assert!(problems[0].reason.contains("invoices"), "{}", problems[0].reason);
//! # Ok(())
//! # })
//! # }
//! ```
//!
//! The workers reach the connectors through a pool's host handler (the example at the
//! end of this page).
//!
//! [`Connectors`] is a [`HostHandler`]: give it to every pool
//! ([`PoolBuilder::shared_host_handler`]) and the workers' `ctx["connectors"]` and
//! `ctx["pools"]` objects reach it with the host methods of `PROTOCOL.md` (`sql.run`,
//! `sql.run_many`, `api.call`, `tx.begin`, `tx.execute`, `tx.commit`, `tx.rollback`).
//! Connection URLs, passwords and tokens stay here: a worker only ever sends names and
//! parameters.
//!
//! [`PoolBuilder::shared_host_handler`]: snakepit::PoolBuilder::shared_host_handler
//!
//! `sql.run_many` runs a named query once per parameter set, all in one transaction:
//! checked against the grants like `sql.run`, offered to the hooks once, audited as one
//! call with the total row count; a failing set rolls the whole batch back and its
//! index is in the error.
//!
//! Every call is checked against the calling package's [`Grants`] (the package is the
//! first dotted part of the call's reference), audited ([`AuditRecord`] to `tracing`
//! target `snakepit::audit` and to the [`AuditSink`] the embedder sets), and, for named
//! queries, offered to the `connector.before_query` hooks ([`BeforeQuery`]), which may
//! veto it.
//!
//! # Runtime
//!
//! Database connections belong to the tokio runtime they were opened on. The connectors
//! adopt the runtime of their first use (a host request or [`Connectors::check`]) as
//! their home: requests that arrive on it run inline; requests from another runtime
//! (a caller on a runtime of its own) run on the home runtime. Keep that runtime alive
//! as long as the connectors.
//!
//! PostgreSQL and MySQL/MariaDB are served with sqlx. SQLite is served with `rusqlite`
//! (sharing sqlx's `libsqlite3-sys`), and a SQLite statement runs right inside the
//! handler's future, on the runtime thread that polls it: for a worker's request, the
//! thread that read the request, with no hop to another thread (the future is ready on
//! its first poll). A long SQLite statement holds that thread for as long as it runs;
//! a statement that finds the database locked waits for it on tokio's blocking pool
//! instead (see `sqlite.rs`).
//!
//! # Example
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::path::Path;
//! use snakepit::Pool;
//! use snakepit_connectors::{Connectors, ConnectorsConfig, Grants};
//!
//! let config = ConnectorsConfig::load(Path::new("liberty-apps"))?;
//! let connectors = Connectors::new(config, Grants::default(), None)?;
//! for p in connectors.check().await {
//!     eprintln!("connectors.toml: {}: {}", p.entry, p.reason);
//! }
//! connectors.set_audit_sink(|r: &snakepit_connectors::AuditRecord| println!("{r:?}"));
//! let pool = Pool::builder()
//!     .sys_path("liberty-apps/plugins")
//!     .shared_host_handler(connectors.handler())
//!     .build()
//!     .await?;
//! # let _ = pool; Ok(()) }
//! ```

mod api;
mod api_call;
mod audit;
mod check;
mod config;
mod convert;
mod grants;
mod home;
mod hooks;
mod params;
mod payload;
mod sandbox;
mod sql;
mod sql_run;
mod sqlite;
#[cfg(test)]
mod testing;
mod toml_diag;
mod tx;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use snakepit::{HostFailure, HostFuture, HostHandler, HostRequest, Value};
use tokio::runtime::Handle;

pub use audit::{AuditRecord, AuditSink, Outcome};
pub use check::ConnectorProblem;
pub use config::{
    expand_vars, mask_url, ApiConfig, Backend, ConnectorsConfig, Endpoint, LoadError, PathPart,
    Secret, SqlConfig, Url, DEFAULT_API_TIMEOUT, DEFAULT_MAX_CONNECTIONS,
};
pub use grants::{Grant, Grants};
pub use hooks::{BeforeQuery, BEFORE_QUERY};
pub use params::{Dialect, NamedSql};
pub use toml_diag::{line_col, parse_duration, toml_error};

use api::ApiClient;
use hooks::Hooks;
use payload::{connector_error, failure};
use sql::SqlPool;
use tx::Tx;

/// The connectors of an install, serving its workers. Cheap to clone.
#[derive(Clone)]
pub struct Connectors {
    inner: Arc<Inner>,
}

struct Inner {
    config: ConnectorsConfig,
    sql: BTreeMap<String, Arc<SqlPool>>,
    api: BTreeMap<String, ApiClient>,
    grants: Grants,
    hooks: Option<Hooks>,
    sink: RwLock<Option<Arc<dyn AuditSink>>>,
    txs: Mutex<HashMap<u64, Tx>>,
    next_tx: AtomicU64,
    home: OnceLock<Handle>,
    /// Test mode: the open sandbox, if any (see [`Connectors::open_sandbox`]).
    sandbox: RwLock<Option<Arc<sandbox::Sandbox>>>,
}

impl std::fmt::Debug for Connectors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connectors")
            .field("sql", &self.inner.config.sql)
            .field("api", &self.inner.config.api)
            .field("grants", &self.inner.grants)
            .finish()
    }
}

/// Who is asking: the package and call of the request, as the supervisor knows them
/// (the call its worker has in hand; never the worker's word).
#[derive(Clone)]
struct Caller {
    package: String,
    pool: Arc<str>,
    call_id: u64,
    run_id: Option<Arc<str>>,
}

impl Connectors {
    /// Connectors for `config`, checked against `grants`; `before_query` runs the
    /// `connector.before_query` hooks. Makes no connection (pools open at first use).
    pub fn new(
        config: ConnectorsConfig,
        grants: Grants,
        before_query: Option<BeforeQuery>,
    ) -> Result<Connectors, LoadError> {
        let err = |entry: String, why: String| LoadError {
            file: config.file.clone(),
            reason: format!("{entry} {}", config.scrub(&why)),
        };
        let mut sql = BTreeMap::new();
        for (name, c) in &config.sql {
            let pool = SqlPool::new(c).map_err(|why| err(format!("[sql.{name}] url"), why))?;
            sql.insert(name.clone(), Arc::new(pool));
        }
        let mut api = BTreeMap::new();
        for (name, c) in &config.api {
            let client =
                ApiClient::new(c.clone()).map_err(|why| err(format!("[api.{name}]"), why))?;
            api.insert(name.clone(), client);
        }
        let hooks = before_query.filter(|b| !b.hooks.is_empty()).map(Hooks::new);
        Ok(Connectors {
            inner: Arc::new(Inner {
                config,
                sql,
                api,
                grants,
                hooks,
                sink: RwLock::new(None),
                txs: Mutex::default(),
                next_tx: AtomicU64::new(1),
                home: OnceLock::new(),
                sandbox: RwLock::new(None),
            }),
        })
    }

    /// The configuration these connectors serve.
    pub fn config(&self) -> &ConnectorsConfig {
        &self.inner.config
    }

    /// These connectors as a pool's host handler.
    pub fn handler(&self) -> Arc<dyn HostHandler> {
        Arc::new(self.clone())
    }

    async fn serve(self, req: HostRequest) -> Result<Value, HostFailure> {
        let payload = req
            .payload
            .decode()
            .map_err(|e| connector_error(format!("{}: undecodable payload: {e}", req.method)))?;
        let reference = &*req.reference;
        let module = reference.split(':').next().unwrap_or(reference);
        let who = Caller {
            package: module.split('.').next().unwrap_or(module).to_owned(),
            pool: req.pool.clone(),
            call_id: req.call_id,
            run_id: req.run_id.clone(),
        };
        match req.method.as_str() {
            "sql.run" => self.sql_run(&who, &payload, false).await,
            "sql.run_many" => self.sql_run(&who, &payload, true).await,
            "api.call" => self.api_call(&who, &payload).await,
            "tx.begin" => self.tx_begin(&who, &payload).await,
            "tx.execute" => self.tx_execute(&who, &payload).await,
            "tx.commit" => self.tx_end(&who, &payload, true).await,
            "tx.rollback" => self.tx_end(&who, &payload, false).await,
            other => Err(failure(
                "UnknownMethod",
                format!("the supervisor has no host method {other:?}"),
            )),
        }
    }

    fn unknown(&self, kind: &str, name: &str) -> String {
        let names: Vec<&str> = self.inner.config.names().collect();
        format!(
            "there is no {kind} connector {name:?} in {} (connectors: {})",
            self.inner.config.file.display(),
            if names.is_empty() {
                "none".to_owned()
            } else {
                names.join(", ")
            }
        )
    }
}

impl HostHandler for Connectors {
    fn handle(&self, req: HostRequest) -> HostFuture {
        Box::pin(self.clone().serve(req))
    }

    fn call_ended(&self, pool: &str, call_id: u64) {
        self.call_ended_txs(pool, call_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{request, sqlite_connectors};

    #[tokio::test]
    async fn unknown_names_and_payloads_are_sentences() {
        let dir = tempfile::tempdir().unwrap();
        let c = sqlite_connectors(dir.path()).await;
        let e = c
            .handle(request(
                1,
                "sql.run",
                Value::map([
                    ("connector", Value::from("crm")),
                    ("query", Value::from("q")),
                ]),
            ))
            .await
            .unwrap_err();
        assert_eq!(e.type_name, "ConnectorError");
        assert!(
            e.message
                .starts_with("there is no SQL connector \"crm\" in ")
                && e.message.ends_with("(connectors: billing)"),
            "{e:?}"
        );
        let e = c
            .handle(request(1, "sql.run", Value::Nil))
            .await
            .unwrap_err();
        assert_eq!(e.message, "sql.run: the payload has no str \"connector\"");
        let e = c
            .handle(request(1, "sql.drop", Value::Nil))
            .await
            .unwrap_err();
        assert_eq!(e.type_name, "UnknownMethod");
    }
}
