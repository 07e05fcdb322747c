//! Named queries (`sql.run`, `sql.run_many`).

use std::time::{Instant, SystemTime};

use snakepit::{HostFailure, Value};

use crate::audit::Outcome;
use crate::payload::{
    connector_error, grant_hint, list_of_maps, map_field, permission_error, str_field,
};
use crate::sql::{self, BatchError, Mode, SqlError};
use crate::{config, Caller, Connectors};

impl Connectors {
    /// A named query, `sql.run` (one parameter set, autocommit) or `sql.run_many` (a
    /// list of them, in one transaction): grants, parameters, hooks, then the database.
    /// Either is one audited call.
    pub(crate) async fn sql_run(
        &self,
        who: &Caller,
        payload: &Value,
        many: bool,
    ) -> Result<Value, HostFailure> {
        let method = if many { "sql.run_many" } else { "sql.run" };
        let connector = str_field(payload, method, "connector")?;
        let query = str_field(payload, method, "query")?;
        let sets = if many {
            list_of_maps(payload, method, "params")?
        } else {
            vec![map_field(payload, method, "params")?]
        };
        let start = (SystemTime::now(), Instant::now());
        let Some(cfg) = self.inner.config.sql.get(connector) else {
            return Err(connector_error(self.unknown("SQL", connector)));
        };
        let denied = |why: String| {
            self.audit(who, connector, query, None, start, Outcome::Denied);
            Err(permission_error(why))
        };
        if !self.inner.grants.connector(&who.package, connector) {
            return denied(grant_hint(&who.package, connector, "connectors"));
        }
        let Some(named) = cfg.queries.get(query) else {
            self.audit(who, connector, query, None, start, Outcome::Failed);
            let known: Vec<&str> = cfg.queries.keys().map(String::as_str).collect();
            return Err(connector_error(format!(
                "connector {connector:?} has no query {query:?} (it has: {}); add it to [sql.{}.queries] in connectors.toml",
                if known.is_empty() { "none".to_owned() } else { known.join(", ") },
                config::key(connector)
            )));
        };
        let write = query.ends_with(":write");
        if write && !self.inner.grants.write(&who.package) {
            return denied(format!(
                "package {:?} may not run write query {query:?} of connector {connector:?}: set write = true in [plugins.{}] in app.toml",
                who.package,
                config::key(&who.package)
            ));
        }
        // Where a message names the parameter set at fault (run_many).
        let at = |set: Option<usize>| match set {
            Some(i) if many => format!(", parameter set {i}"),
            _ => String::new(),
        };
        let mut values = Vec::with_capacity(sets.len());
        for (i, set) in sets.iter().enumerate() {
            match named.bind_values(set) {
                Ok(v) => values.push(v.into_iter().cloned().collect::<Vec<Value>>()),
                Err(why) => {
                    self.audit(who, connector, query, None, start, Outcome::Failed);
                    return Err(connector_error(format!(
                        "connector {connector:?}, query {query:?}{}: {why}",
                        at(Some(i))
                    )));
                }
            }
        }
        if let Err(veto) = self.before_query(connector, query, &who.package).await {
            self.audit(who, connector, query, None, start, Outcome::Vetoed);
            return Err(veto);
        }
        let mode = if write { Mode::Write } else { Mode::Read };
        let res = if values.is_empty() {
            Ok(Vec::new())
        } else {
            let (this, name, q) = (self.clone(), connector.to_owned(), query.to_owned());
            let sandbox = self.sandbox();
            self.on_home(async move {
                let pool = &this.inner.sql[&name];
                let named = &this.inner.config.sql[&name].queries[&q];
                match sandbox {
                    Some(s) => s.run(&name, pool, named.clone(), values).await,
                    None => sql::run_named(pool, named, values, mode, many).await,
                }
            })
            .await?
        };
        match res {
            Ok(outs) => {
                let rows = outs.iter().map(|o| o.affected).sum::<u64>();
                self.audit(who, connector, query, Some(rows), start, Outcome::Ok);
                Ok(if write {
                    Value::map([("rows_affected", Value::Int(rows as i64))])
                } else if many {
                    Value::List(outs.into_iter().map(|o| Value::List(o.rows)).collect())
                } else {
                    Value::List(outs.into_iter().flat_map(|o| o.rows).collect())
                })
            }
            Err(BatchError { set, error }) => {
                self.audit(who, connector, query, None, start, Outcome::Failed);
                let why = match error {
                    SqlError::PoolTimedOut => format!(
                        "no connection to {} within {:?} (is the server up? `snakepit check` tells why)",
                        cfg.url.masked(),
                        sql::ACQUIRE_TIMEOUT
                    ),
                    e => e.to_string(),
                };
                let rolled_back = if many && set.is_some() {
                    " (the whole batch was rolled back)"
                } else {
                    ""
                };
                Err(connector_error(self.inner.config.scrub(&format!(
                    "connector {connector:?}, query {query:?}{}: {why}{rolled_back}",
                    at(set)
                ))))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{count, request, sqlite_connectors};
    use snakepit::{HostHandler, HostRequest};

    fn add(x: i64) -> HostRequest {
        let p = Value::map([
            ("connector", Value::from("billing")),
            ("query", Value::from("add:write")),
            ("params", Value::map([("x", Value::Int(x))])),
        ]);
        request(5, "sql.run", p)
    }

    /// A SQLite query runs inside the handler's future: ready on its first poll, on the
    /// thread that polls it (this test's runtime has only that one).
    #[tokio::test]
    async fn a_sqlite_query_is_done_on_the_first_poll() {
        use futures_util::FutureExt;
        let dir = tempfile::tempdir().unwrap();
        let c = sqlite_connectors(dir.path()).await;
        let done = c.handle(add(1)).now_or_never();
        let want = Value::map([("rows_affected", Value::Int(1))]);
        assert_eq!(done.map(Result::unwrap), Some(want));
        let rows = c
            .handle(request(
                5,
                "sql.run",
                Value::map([
                    ("connector", Value::from("billing")),
                    ("query", Value::from("count")),
                ]),
            ))
            .now_or_never();
        let want = Value::List(vec![Value::map([("n", Value::Int(1))])]);
        assert_eq!(rows.map(Result::unwrap), Some(want));
    }

    /// A statement that finds the database locked waits for the lock (the busy timeout)
    /// off the runtime thread: the thread stays free, and the statement runs once the
    /// lock is released. Run inline, it would either fail at once (no busy timeout) or
    /// hold this test's only runtime thread until the timeout and fail.
    #[tokio::test]
    async fn a_locked_sqlite_database_is_waited_for_off_the_runtime_thread() {
        use futures_util::FutureExt;
        let dir = tempfile::tempdir().unwrap();
        let c = sqlite_connectors(dir.path()).await;
        let other = rusqlite::Connection::open(dir.path().join("b.db")).unwrap();
        other
            .execute_batch("BEGIN IMMEDIATE; INSERT INTO t (x) VALUES (7)")
            .unwrap();
        let mut write = c.handle(add(1));
        assert!(
            (&mut write).now_or_never().is_none(),
            "the write did not wait for the lock"
        );
        other.execute_batch("COMMIT").unwrap();
        let want = Value::map([("rows_affected", Value::Int(1))]);
        assert_eq!(write.await.unwrap(), want);
        let want = Value::List(vec![Value::map([("n", Value::Int(2))])]);
        assert_eq!(count(&c).await, want);
    }
}
