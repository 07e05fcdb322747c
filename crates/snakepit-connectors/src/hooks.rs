//! The `connector.before_query` hooks: every named query is offered to them first.

use std::sync::Mutex;

use snakepit::sync::Recover;
use snakepit::{Call, CallError, HostFailure, Pool, PoolBuilder, Value};

use crate::payload::{connector_error, permission_error};
use crate::Connectors;

/// The event whose hooks see every named query before it runs.
pub const BEFORE_QUERY: &str = "connector.before_query";

/// The `connector.before_query` hooks and the pool they run in.
///
/// The hooks run in a pool of their own, started at the first named query, so that a
/// query made by the only worker of a busy pool never waits for a worker of that same
/// pool (which would deadlock). Build it without a host handler: a hook cannot use
/// connectors (its own queries would need the hook again).
pub struct BeforeQuery {
    /// The hooks' references, called in order; the first that raises vetoes the query.
    pub hooks: Vec<String>,
    /// The builder of their pool.
    pub pool: PoolBuilder,
}

pub(crate) struct Hooks {
    refs: Vec<String>,
    builder: Mutex<Option<PoolBuilder>>,
    pool: tokio::sync::OnceCell<Result<Pool, String>>,
}

impl Hooks {
    /// The hooks of `b`; their pool starts at the first named query.
    pub(crate) fn new(b: BeforeQuery) -> Hooks {
        Hooks {
            refs: b.hooks,
            builder: Mutex::new(Some(b.pool)),
            pool: tokio::sync::OnceCell::new(),
        }
    }
}

impl Connectors {
    /// Calls the `connector.before_query` hooks in their pool; the first that fails
    /// vetoes the query.
    pub(crate) async fn before_query(
        &self,
        connector: &str,
        query: &str,
        package: &str,
    ) -> Result<(), HostFailure> {
        let Some(hooks) = &self.inner.hooks else {
            return Ok(());
        };
        let pool = hooks
            .pool
            .get_or_init(|| async {
                let builder = hooks.builder.lock().recover().take();
                match builder {
                    Some(b) => b
                        .name("connector-hooks")
                        .build()
                        .await
                        .map_err(|e| e.to_string()),
                    None => Err("the hooks' pool was not given".to_owned()),
                }
            })
            .await
            .as_ref()
            .map_err(|e| connector_error(format!("the {BEFORE_QUERY} hooks cannot run: {e}")))?;
        let payload: Vec<(String, Value)> = vec![
            ("connector".into(), connector.into()),
            ("query".into(), query.into()),
            ("package".into(), package.into()),
        ];
        for r in &hooks.refs {
            if let Err(e) = pool
                .submit(Call::new(r.as_str()).context(payload.clone()))
                .await
            {
                let message = match e {
                    CallError::Raised(x) => x.message,
                    other => other.to_string(),
                };
                return Err(permission_error(format!(
                    "{BEFORE_QUERY} hook {r} vetoed query {query:?} of connector {connector:?}: {message}"
                )));
            }
        }
        Ok(())
    }
}
