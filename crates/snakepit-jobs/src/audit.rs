//! The audit log of connector calls, kept in the run history: every `AuditRecord` of
//! an install's connectors becomes a row of the state's `audit` table (time, package,
//! call id, run id, connector, query or endpoint, rows, duration, outcome).
//!
//! The records wait for the database in a bounded queue ([`QUEUE`]): a worker that
//! makes connector calls faster than the database takes their rows (denied ones cost it
//! nothing) cannot grow the supervisor. Records that find the queue full are counted,
//! and the count is written in their place, as a row with outcome `dropped` and target
//! `N audit records dropped`, and logged as a warning.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use snakepit_connectors::{AuditRecord, Connectors};
use snakepit_state::{AuditEntry, State};
use tokio::sync::{mpsc, oneshot};

/// Audit records waiting for the database, at most.
pub const QUEUE: usize = 10_000;

enum Msg {
    Record(AuditRecord),
    Flush(oneshot::Sender<()>),
}

/// Writes the audit records of some connectors into a [`State`]; made by
/// [`AuditLog::attach`].
#[derive(Debug, Clone)]
pub struct AuditLog {
    tx: mpsc::Sender<Msg>,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Msg::Record(_) => "Record",
            Msg::Flush(_) => "Flush",
        })
    }
}

impl AuditLog {
    /// Sets `connectors`' audit sink: from now on each record is written to `state` in
    /// the background, in order (still also logged to `tracing` by the connectors).
    /// Needs a tokio runtime.
    pub fn attach(connectors: &Connectors, state: &State) -> AuditLog {
        AuditLog::attach_queue(connectors, state, QUEUE)
    }

    fn attach_queue(connectors: &Connectors, state: &State, queue: usize) -> AuditLog {
        let (tx, mut rx) = mpsc::channel::<Msg>(queue);
        let dropped = Arc::new(AtomicU64::new(0));
        let state = state.clone();
        let lost = dropped.clone();
        tokio::spawn(async move {
            while let Some(msg) = rx.recv().await {
                // The gap goes in before the records that came after it.
                let gap = lost.swap(0, Ordering::Relaxed);
                if gap > 0 {
                    tracing::warn!(dropped = gap, "audit records dropped: the history did not keep up with the connector calls");
                    let target = format!("{gap} audit records dropped");
                    let entry = AuditEntry {
                        time: chrono::Utc::now(),
                        package: "",
                        call_id: 0,
                        run_id: None,
                        connector: "",
                        target: &target,
                        rows: None,
                        duration_us: 0,
                        outcome: "dropped",
                    };
                    write(&state, &entry).await;
                }
                let r = match msg {
                    Msg::Record(r) => r,
                    Msg::Flush(ack) => {
                        let _ = ack.send(());
                        continue;
                    }
                };
                let outcome = r.outcome.to_string();
                let entry = AuditEntry {
                    time: r.time.into(),
                    package: &r.package,
                    call_id: r.call_id,
                    run_id: r.run_id.as_deref(),
                    connector: &r.connector,
                    target: &r.target,
                    rows: r.rows,
                    duration_us: u64::try_from(r.duration.as_micros()).unwrap_or(u64::MAX),
                    outcome: &outcome,
                };
                write(&state, &entry).await;
            }
        });
        let sink = tx.clone();
        connectors.set_audit_sink(move |r: &AuditRecord| {
            if let Err(mpsc::error::TrySendError::Full(_)) = sink.try_send(Msg::Record(r.clone())) {
                dropped.fetch_add(1, Ordering::Relaxed);
            }
        });
        AuditLog { tx }
    }

    /// Returns once every record made so far is written.
    pub async fn flush(&self) {
        let (ack, done) = oneshot::channel();
        if self.tx.send(Msg::Flush(ack)).await.is_ok() {
            let _ = done.await;
        }
    }
}

async fn write(state: &State, entry: &AuditEntry<'_>) {
    if let Err(e) = state.insert_audit(entry).await {
        tracing::warn!(error = %e, connector = entry.connector, "cannot write an audit record");
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use snakepit::{HostHandler, HostRequest, RawValue, Value};
    use snakepit_connectors::{ConnectorsConfig, Grant, Grants};

    use super::*;

    /// A worker's denied queries are audited faster than a database takes rows: past
    /// the queue, records are counted, and the count is written in their place.
    #[tokio::test]
    async fn a_flood_of_audit_records_is_bounded_and_every_record_accounted_for() {
        let dir = tempfile::tempdir().unwrap();
        let toml = "[sql.billing]\nurl = \"sqlite://b.db?mode=rwc\"\n[sql.billing.queries]\nq = \"SELECT 1\"\n";
        let cfg = ConnectorsConfig::parse(
            toml,
            &dir.path().join("connectors.toml"),
            dir.path(),
            |_| None,
        )
        .unwrap();
        // Package "spy" may use no connector: every query of it is denied (and audited).
        let spy = Grant {
            connectors: Some(Vec::new()),
            ..Default::default()
        };
        let grants = Grants::new(BTreeMap::from([("spy".to_owned(), spy)]));
        let connectors = Connectors::new(cfg, grants, None).unwrap();
        let state = State::open("sqlite://state.db", dir.path()).await.unwrap();
        let log = AuditLog::attach_queue(&connectors, &state, 16);
        let payload = RawValue::encode(&Value::map([
            ("connector", Value::from("billing")),
            ("query", Value::from("q")),
        ]));
        const N: u64 = 3000;
        for i in 0..N {
            let denied = connectors.handle(HostRequest {
                pool: "default".into(),
                worker: 0,
                call_id: i + 1,
                reference: "spy:f".into(),
                run_id: None,
                method: "sql.run".into(),
                payload: payload.clone(),
            });
            assert!(denied.await.is_err());
        }
        log.flush().await;
        // A record after the flood carries the last gap in.
        let last = connectors.handle(HostRequest {
            pool: "default".into(),
            worker: 0,
            call_id: N + 1,
            reference: "spy:f".into(),
            run_id: None,
            method: "sql.run".into(),
            payload,
        });
        assert!(last.await.is_err());
        log.flush().await;
        let rows = state.audit(u32::MAX).await.unwrap();
        let dropped: u64 = rows
            .iter()
            .filter(|r| r.outcome == "dropped")
            .map(|r| r.target.split(' ').next().unwrap().parse::<u64>().unwrap())
            .sum();
        let kept = rows.iter().filter(|r| r.outcome == "denied").count() as u64;
        assert!(dropped > 0, "the queue of 16 never filled");
        assert_eq!(kept + dropped, N + 1);
    }
}
