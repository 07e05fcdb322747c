//! Test mode (`snakepit test`): while a sandbox is open, every SQL statement of every
//! call runs in one transaction per SQL connector, opened at the connector's first use
//! and rolled back when the sandbox ends, so that a test leaves its databases as it found
//! them.
//!
//! - A named query (`sql.run`) and a batch (`sql.run_many`) run in a savepoint of their
//!   own inside that transaction: a statement that fails is undone alone, as it would be
//!   in autocommit, and the transaction goes on (PostgreSQL would otherwise refuse every
//!   later statement of the test).
//! - A plugin's transaction (`tx.begin`) is a savepoint: its commit releases it (the
//!   writes stay visible to the rest of the test, and are rolled back with it), its
//!   rollback, or the end of its call with it open, rolls back to it.
//! - All of a connector's statements share the one connection of its transaction,
//!   in the order they come: a read sees the test's own writes. Savepoints nest in the
//!   order they were opened.
//! - API connectors can be pointed at another base URL (a test server) for the sandbox's
//!   lifetime.
//!
//! What cannot be rolled back is what the database commits by itself: MySQL/MariaDB
//! commit implicitly before DDL (`CREATE`, `ALTER`, `DROP`, `TRUNCATE`), and SQLite
//! refuses `VACUUM` in a transaction.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use snakepit::sync::Recover;
use snakepit::Value;
use tokio::sync::{mpsc, oneshot};

use crate::audit::Outcome;
use crate::params::NamedSql;
use crate::sql::{self, AnyTx, BatchError, Output, SqlError, SqlPool, TxCmd};
use crate::Connectors;

/// A command to the task that holds a connector's sandbox transaction.
enum Cmd {
    /// A named query's parameter sets (values in binding order), in a savepoint of
    /// their own: all or none.
    Run {
        sql: NamedSql,
        sets: Vec<Vec<Value>>,
        reply: oneshot::Sender<Result<Vec<Output>, BatchError>>,
    },
    /// A plugin's transaction begins: savepoint `id`.
    Begin {
        id: u64,
        reply: oneshot::Sender<Result<(), SqlError>>,
    },
    /// A statement of plugin transaction `id`, or its end.
    Tx { id: u64, cmd: TxCmd },
    /// Plugin transaction `id` was left open by its call: rolled back to its savepoint.
    Abandon { id: u64 },
    /// The sandbox ends: everything is rolled back.
    End(oneshot::Sender<Result<(), SqlError>>),
}

/// One open sandbox: the transaction task of each SQL connector used so far, and the
/// API base URLs replaced.
#[derive(Default)]
pub(crate) struct Sandbox {
    conns: tokio::sync::Mutex<HashMap<String, mpsc::UnboundedSender<Cmd>>>,
    api: Mutex<HashMap<String, String>>,
    next_savepoint: AtomicU64,
}

/// The savepoint of a named query (one at a time per connection).
const QUERY_SAVEPOINT: &str = "snakepit_query";

fn savepoint(id: u64) -> String {
    format!("snakepit_tx_{id}")
}

fn ended() -> SqlError {
    SqlError::Task("the test's transaction has ended".into())
}

/// Sends the command `make` builds around a reply channel to a connector's task, and
/// waits for the reply.
async fn ask<T, E: From<SqlError>>(
    conn: &mpsc::UnboundedSender<Cmd>,
    make: impl FnOnce(oneshot::Sender<Result<T, E>>) -> Cmd,
) -> Result<T, E> {
    let (reply, answer) = oneshot::channel();
    conn.send(make(reply)).map_err(|_| ended())?;
    answer.await.unwrap_or_else(|_| Err(ended().into()))
}

impl Sandbox {
    /// The base URL that replaces API connector `name`'s in this sandbox, if any.
    pub(crate) fn api_base(&self, name: &str) -> Option<String> {
        self.api.lock().recover().get(name).cloned()
    }

    pub(crate) fn set_api_base(&self, name: &str, base_url: &str) {
        self.api
            .lock()
            .recover()
            .insert(name.to_owned(), base_url.to_owned());
    }

    /// The channel to connector `name`'s transaction task, which it starts (on the
    /// current runtime: the connectors' home) at the connector's first use.
    async fn conn(
        &self,
        name: &str,
        pool: &Arc<SqlPool>,
    ) -> Result<mpsc::UnboundedSender<Cmd>, SqlError> {
        let mut conns = self.conns.lock().await;
        if let Some(tx) = conns.get(name) {
            return Ok(tx.clone());
        }
        let (cmds, rx) = mpsc::unbounded_channel();
        let (began_tx, began) = oneshot::channel();
        let pool = pool.clone();
        tokio::spawn(async move { serve(sql::begin(&pool).await, rx, began_tx).await });
        began.await.map_err(|_| ended())??;
        conns.insert(name.to_owned(), cmds.clone());
        Ok(cmds)
    }

    /// Runs a named query's sets in connector `name`'s transaction (see [`Cmd::Run`]).
    pub(crate) async fn run(
        &self,
        name: &str,
        pool: &Arc<SqlPool>,
        sql: NamedSql,
        sets: Vec<Vec<Value>>,
    ) -> Result<Vec<Output>, BatchError> {
        let conn = self.conn(name, pool).await?;
        ask(&conn, |reply| Cmd::Run { sql, sets, reply }).await
    }

    /// Serves a plugin's transaction on connector `name` as a savepoint of the
    /// sandbox's: what `sql::transaction` does outside one. Returns the rows affected
    /// and how it ended.
    pub(crate) async fn transaction(
        &self,
        name: &str,
        pool: &Arc<SqlPool>,
        mut rx: mpsc::UnboundedReceiver<TxCmd>,
        began: oneshot::Sender<Result<(), SqlError>>,
    ) -> (Option<u64>, Outcome) {
        let id = self.next_savepoint.fetch_add(1, Ordering::Relaxed);
        let opened = async {
            let conn = self.conn(name, pool).await?;
            ask(&conn, |reply| Cmd::Begin { id, reply }).await?;
            Ok::<_, SqlError>(conn)
        };
        let conn = match opened.await {
            Ok(conn) => conn,
            Err(e) => {
                let _ = began.send(Err(e));
                return (None, Outcome::Failed);
            }
        };
        if began.send(Ok(())).is_err() {
            let _ = conn.send(Cmd::Abandon { id });
            return (None, Outcome::RolledBack);
        }
        let mut rows = 0;
        while let Some(cmd) = rx.recv().await {
            let (reply, commit) = match cmd {
                TxCmd::Execute { sql, params, reply } => {
                    let res = ask(&conn, |mine| {
                        let cmd = TxCmd::Execute {
                            sql,
                            params,
                            reply: mine,
                        };
                        Cmd::Tx { id, cmd }
                    })
                    .await;
                    if let Ok(out) = &res {
                        rows += out.affected;
                    }
                    let _ = reply.send(res);
                    continue;
                }
                TxCmd::Commit(reply) => (reply, true),
                TxCmd::Rollback(reply) => (reply, false),
            };
            let res = ask(&conn, |mine| {
                let cmd = if commit {
                    TxCmd::Commit(mine)
                } else {
                    TxCmd::Rollback(mine)
                };
                Cmd::Tx { id, cmd }
            })
            .await;
            let outcome = match (&res, commit) {
                (Ok(()), true) => Outcome::Committed,
                (Err(_), true) => Outcome::Failed,
                (_, false) => Outcome::RolledBack,
            };
            let _ = reply.send(res);
            return (Some(rows), outcome);
        }
        let _ = conn.send(Cmd::Abandon { id });
        (Some(rows), Outcome::RolledBack)
    }

    /// Rolls back every connector's transaction; the first failure is returned (the
    /// connection is closed then, which rolls back too).
    pub(crate) async fn end(&self) -> Result<(), String> {
        let conns = std::mem::take(&mut *self.conns.lock().await);
        let mut first = Ok(());
        for (name, conn) in conns {
            let done = ask(&conn, Cmd::End).await;
            if let (Err(e), true) = (done, first.is_ok()) {
                first = Err(format!("connector {name:?}: rolling back: {e}"));
            }
        }
        first
    }
}

/// The task holding one connector's sandbox transaction.
async fn serve(
    tx: Result<AnyTx<'_>, SqlError>,
    mut rx: mpsc::UnboundedReceiver<Cmd>,
    began: oneshot::Sender<Result<(), SqlError>>,
) {
    let mut tx = match tx {
        Ok(tx) => tx,
        Err(e) => {
            let _ = began.send(Err(e));
            return;
        }
    };
    if began.send(Ok(())).is_err() {
        let _ = tx.end(false).await;
        return;
    }
    while let Some(cmd) = rx.recv().await {
        match cmd {
            Cmd::Run { sql, sets, reply } => {
                let _ = reply.send(run(&mut tx, &sql, sets).await);
            }
            Cmd::Begin { id, reply } => {
                let _ = reply.send(tx.command(format!("SAVEPOINT {}", savepoint(id))).await);
            }
            Cmd::Tx { id, cmd } => match cmd {
                TxCmd::Execute { sql, params, reply } => {
                    let _ = reply.send(sql::execute_in(&mut tx, &sql, &params).await);
                }
                TxCmd::Commit(reply) => {
                    let release = format!("RELEASE SAVEPOINT {}", savepoint(id));
                    let done = tx.command(release).await;
                    if done.is_err() {
                        let _ = roll_back_to(&mut tx, &savepoint(id)).await;
                    }
                    let _ = reply.send(done);
                }
                TxCmd::Rollback(reply) => {
                    let _ = reply.send(roll_back_to(&mut tx, &savepoint(id)).await);
                }
            },
            Cmd::Abandon { id } => {
                let _ = roll_back_to(&mut tx, &savepoint(id)).await;
            }
            Cmd::End(reply) => {
                let _ = reply.send(tx.end(false).await);
                return;
            }
        }
    }
    let _ = tx.end(false).await;
}

/// Undoes what was done since savepoint `name`, and forgets it.
async fn roll_back_to(tx: &mut AnyTx<'_>, name: &str) -> Result<(), SqlError> {
    tx.command(format!("ROLLBACK TO SAVEPOINT {name}")).await?;
    tx.command(format!("RELEASE SAVEPOINT {name}")).await
}

/// Runs `sql` with each of `sets` in a savepoint: all of them, or none.
async fn run(
    tx: &mut AnyTx<'_>,
    sql: &NamedSql,
    sets: Vec<Vec<Value>>,
) -> Result<Vec<Output>, BatchError> {
    tx.command(format!("SAVEPOINT {QUERY_SAVEPOINT}")).await?;
    let mut outs = Vec::with_capacity(sets.len());
    for (set, values) in sets.into_iter().enumerate() {
        match tx.execute(sql, values).await {
            Ok(out) => outs.push(out),
            Err(error) => {
                let _ = roll_back_to(tx, QUERY_SAVEPOINT).await;
                return Err(BatchError {
                    set: Some(set),
                    error,
                });
            }
        }
    }
    tx.command(format!("RELEASE SAVEPOINT {QUERY_SAVEPOINT}"))
        .await?;
    Ok(outs)
}

impl Connectors {
    /// Test mode (`snakepit test`): from now until [`Connectors::close_sandbox`], every
    /// SQL statement of every call runs in one transaction per SQL connector, opened at
    /// the connector's first use and rolled back at the close; named queries and batches
    /// in savepoints of their own, a plugin's transactions as savepoints (see
    /// `sandbox.rs`). One sandbox at a time: a second is refused.
    pub fn open_sandbox(&self) -> Result<(), String> {
        let mut sandbox = self.inner.sandbox.write().recover();
        if sandbox.is_some() {
            return Err("a sandbox is open already (one test at a time)".into());
        }
        *sandbox = Some(Arc::default());
        Ok(())
    }

    /// Ends the open sandbox: every write made in it is rolled back, and the API base
    /// URLs it replaced are restored. Nothing to do when none is open.
    pub async fn close_sandbox(&self) -> Result<(), String> {
        let sandbox = self.inner.sandbox.write().recover().take();
        match sandbox {
            Some(s) => self
                .on_home(async move { s.end().await })
                .await
                .map_err(|f| f.message)?,
            None => Ok(()),
        }
    }

    /// Points API connector `name` at `base_url` (a test server) until the open
    /// sandbox closes.
    pub fn sandbox_api_base(&self, name: &str, base_url: &str) -> Result<(), String> {
        let Some(sandbox) = self.sandbox() else {
            return Err(
                "no sandbox is open: point an API connector elsewhere inside a test".into(),
            );
        };
        if !self.inner.api.contains_key(name) {
            return Err(self.unknown("API", name));
        }
        let parsed =
            reqwest::Url::parse(base_url).map_err(|e| format!("{base_url:?} is not a URL: {e}"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(format!("{base_url:?} is not an http:// or https:// URL"));
        }
        sandbox.set_api_base(name, base_url.trim_end_matches('/'));
        Ok(())
    }

    pub(crate) fn sandbox(&self) -> Option<Arc<Sandbox>> {
        self.inner.sandbox.read().recover().clone()
    }
}
