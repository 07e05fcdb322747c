//! Plugins' transactions (`tx.begin`, `tx.execute`, `tx.commit`, `tx.rollback`): each
//! belongs to the call that opened it and rolls back when that call ends open.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use snakepit::sync::Recover;
use snakepit::{HostFailure, Value};
use tokio::sync::{mpsc, oneshot};

use crate::audit::Outcome;
use crate::params::{self, Dialect};
use crate::payload::{connector_error, map_field, permission_error, str_field};
use crate::sql::{self, TxCmd};
use crate::{config, Caller, Connectors};

/// An open transaction: the call that owns it and the channel to its task.
pub(crate) struct Tx {
    pool: Arc<str>,
    call_id: u64,
    cmds: mpsc::UnboundedSender<TxCmd>,
    /// How its SQL's `:name` parameters are rewritten.
    dialect: Dialect,
}

impl Connectors {
    /// The number of transactions open now (held by calls that have not ended).
    pub fn open_transactions(&self) -> usize {
        self.inner.txs.lock().recover().len()
    }

    pub(crate) async fn tx_begin(
        &self,
        who: &Caller,
        payload: &Value,
    ) -> Result<Value, HostFailure> {
        let connector = str_field(payload, "tx.begin", "pool")?.to_owned();
        let start = (SystemTime::now(), Instant::now());
        let Some(pool) = self.inner.sql.get(&connector).cloned() else {
            return Err(connector_error(self.unknown("SQL", &connector)));
        };
        if !self.inner.grants.raw_pool(&who.package, &connector) {
            self.audit(who, &connector, "transaction", None, start, Outcome::Denied);
            return Err(permission_error(format!(
                "package {:?} may not open transactions on {connector:?}: add {connector:?} to [plugins.{}] raw_pools in app.toml",
                who.package,
                config::key(&who.package)
            )));
        }
        let (cmds, rx) = mpsc::unbounded_channel();
        let (began_tx, began) = oneshot::channel();
        let this = self.clone();
        let (owner, name) = (who.clone(), connector.clone());
        let dialect = self.inner.config.sql[&connector].backend.dialect();
        let sandbox = self.sandbox();
        self.on_home(async move {
            tokio::spawn(async move {
                let (rows, outcome) = match sandbox {
                    Some(s) => s.transaction(&name, &pool, rx, began_tx).await,
                    None => sql::transaction(&pool, rx, began_tx).await,
                };
                this.audit(&owner, &name, "transaction", rows, start, outcome);
            });
        })
        .await?;
        match began.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                return Err(connector_error(self.inner.config.scrub(&format!(
                    "connector {connector:?}: cannot begin a transaction: {e}"
                ))))
            }
            Err(_) => return Err(connector_error("the transaction task ended")),
        }
        // Registered only now: if this request is dropped before (its call ended), the
        // channel closes with it and the transaction task rolls back by itself.
        let id = self.inner.next_tx.fetch_add(1, Ordering::Relaxed);
        self.inner.txs.lock().recover().insert(
            id,
            Tx {
                pool: who.pool.clone(),
                call_id: who.call_id,
                cmds,
                dialect,
            },
        );
        Ok(Value::map([("tx", Value::Int(id as i64))]))
    }

    /// The channel of transaction `tx` of the caller's call.
    fn tx_channel(
        &self,
        who: &Caller,
        payload: &Value,
        method: &str,
    ) -> Result<(u64, mpsc::UnboundedSender<TxCmd>, Dialect), HostFailure> {
        let id =
            payload.get("tx").and_then(Value::as_i64).ok_or_else(|| {
                connector_error(format!("{method}: the payload has no int \"tx\""))
            })? as u64;
        let txs = self.inner.txs.lock().recover();
        match txs.get(&id) {
            Some(t) if t.pool == who.pool && t.call_id == who.call_id => {
                Ok((id, t.cmds.clone(), t.dialect))
            }
            _ => Err(connector_error(format!(
                "transaction {id} is not open in this call (it was committed, rolled back, or belongs to another call)"
            ))),
        }
    }

    pub(crate) async fn tx_execute(
        &self,
        who: &Caller,
        payload: &Value,
    ) -> Result<Value, HostFailure> {
        let (id, cmds, dialect) = self.tx_channel(who, payload, "tx.execute")?;
        let text = str_field(payload, "tx.execute", "sql")?;
        let params = map_field(payload, "tx.execute", "params")?;
        let sql = params::parse(text, dialect)
            .map_err(|why| connector_error(format!("tx.execute: the SQL {why}")))?;
        let (reply, answer) = oneshot::channel();
        cmds.send(TxCmd::Execute { sql, params, reply })
            .map_err(|_| connector_error(format!("transaction {id} has ended")))?;
        match answer.await {
            Ok(Ok(out)) => Ok(Value::map([
                ("rowcount", Value::Int(out.affected as i64)),
                ("rows", Value::List(out.rows)),
            ])),
            Ok(Err(e)) => Err(connector_error(
                self.inner.config.scrub(&format!("transaction {id}: {e}")),
            )),
            Err(_) => Err(connector_error(format!("transaction {id} has ended"))),
        }
    }

    pub(crate) async fn tx_end(
        &self,
        who: &Caller,
        payload: &Value,
        commit: bool,
    ) -> Result<Value, HostFailure> {
        let method = if commit { "tx.commit" } else { "tx.rollback" };
        let (id, cmds, _) = self.tx_channel(who, payload, method)?;
        self.inner.txs.lock().recover().remove(&id);
        let (reply, answer) = oneshot::channel();
        let cmd = if commit {
            TxCmd::Commit(reply)
        } else {
            TxCmd::Rollback(reply)
        };
        cmds.send(cmd)
            .map_err(|_| connector_error(format!("transaction {id} has ended")))?;
        match answer.await {
            Ok(Ok(())) => Ok(Value::Nil),
            Ok(Err(e)) => Err(connector_error(
                self.inner
                    .config
                    .scrub(&format!("transaction {id}: {method}: {e}")),
            )),
            Err(_) => Err(connector_error(format!("transaction {id} has ended"))),
        }
    }

    /// Rolls back the transactions that call `call_id` of pool `pool` left open.
    pub(crate) fn call_ended_txs(&self, pool: &str, call_id: u64) {
        // Dropping a transaction's channel makes its task roll back.
        self.inner
            .txs
            .lock()
            .recover()
            .retain(|_, t| !(t.call_id == call_id && &*t.pool == pool));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{count, request, sqlite_connectors};
    use snakepit::HostHandler;

    #[tokio::test]
    async fn a_transaction_belongs_to_its_call_and_rolls_back_when_the_call_ends() {
        let dir = tempfile::tempdir().unwrap();
        let c = sqlite_connectors(dir.path()).await;
        let begin = |call| {
            c.handle(request(
                call,
                "tx.begin",
                Value::map([("pool", Value::from("billing"))]),
            ))
        };
        let tx = begin(7).await.unwrap();
        let id = tx.get("tx").cloned().unwrap();
        let insert = |call| {
            let p = Value::map([
                ("tx", id.clone()),
                ("sql", Value::from("INSERT INTO t (x) VALUES (:x)")),
                ("params", Value::map([("x", Value::Int(1))])),
            ]);
            c.handle(request(call, "tx.execute", p))
        };
        let done = insert(7).await.unwrap();
        assert_eq!(done.get("rowcount"), Some(&Value::Int(1)));
        // Another call cannot use it.
        let e = insert(8).await.unwrap_err();
        assert!(e.message.contains("is not open in this call"), "{e:?}");
        assert_eq!(c.open_transactions(), 1);
        // The call ends without a commit: rolled back.
        c.call_ended("default", 7);
        assert_eq!(c.open_transactions(), 0);
        // Its write lock is gone (the next writer gets through) and its row with it.
        let tx = begin(9).await.unwrap();
        let p = Value::map([
            ("tx", tx.get("tx").cloned().unwrap()),
            ("sql", Value::from("INSERT INTO t (x) VALUES (2)")),
        ]);
        c.handle(request(9, "tx.execute", p)).await.unwrap();
        let p = Value::map([("tx", tx.get("tx").cloned().unwrap())]);
        c.handle(request(9, "tx.commit", p)).await.unwrap();
        let want = Value::List(vec![Value::map([("n", Value::Int(1))])]);
        assert_eq!(count(&c).await, want);
    }
}
