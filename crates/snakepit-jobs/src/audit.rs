//! The audit log of connector calls, kept in the run history: every `AuditRecord` of
//! an install's connectors becomes a row of the state's `audit` table (time, package,
//! call id, run id, connector, query or endpoint, rows, duration, outcome).
//!
//! The records wait for the database in a bounded queue ([`QUEUE`]): a worker that
//! makes connector calls faster than the database takes their rows (denied ones cost it
//! nothing) cannot grow the supervisor. One writer task drains the queue: everything
//! waiting (at most [`BATCH`] records) goes in one transaction, in order. When the
//! queue is short, the writer lets records gather for [`LINGER`] first (a flush cuts
//! that short): a step making a call every 100 µs then costs the database one commit
//! (one fsync) per 20 ms, not one per call, and the writer wakes that often too.
//! Under a backlog it writes full batches back to back. Records that
//! find the queue full are counted per run, and each count is written in their place
//! before the next batch, as a row with outcome `dropped` (`AuditEntry::dropped`),
//! and logged as a warning.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use snakepit::sync::Recover;
use snakepit_connectors::{AuditRecord, Connectors};
use snakepit_state::{AuditEntry, State};
use tokio::sync::{mpsc, oneshot, Notify};

/// Audit records waiting for the database, at most.
pub const QUEUE: usize = 10_000;
/// Audit records written in one transaction, at most.
pub const BATCH: usize = 1_000;
/// How long a short batch waits for more records before it is written.
pub const LINGER: Duration = Duration::from_millis(20);

enum Msg {
    Record(AuditRecord),
    Flush(oneshot::Sender<()>),
}

/// Records that found the queue full, per run (None: calls outside a run).
type Dropped = Arc<Mutex<HashMap<Option<Arc<str>>, u64>>>;

/// Writes the audit records of some connectors into a [`State`]; made by
/// [`AuditLog::attach`].
#[derive(Debug, Clone)]
pub struct AuditLog {
    tx: mpsc::Sender<Msg>,
    /// Ends the writer's [`LINGER`] when a flush is queued.
    flushing: Arc<Notify>,
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
        let (tx, rx) = mpsc::channel::<Msg>(queue);
        let dropped = Dropped::default();
        let flushing = Arc::new(Notify::new());
        tokio::spawn(writer(rx, state.clone(), dropped.clone(), flushing.clone()));
        let sink = tx.clone();
        connectors.set_audit_sink(move |r: &AuditRecord| {
            if let Err(mpsc::error::TrySendError::Full(Msg::Record(r))) =
                sink.try_send(Msg::Record(r.clone()))
            {
                let mut lost = dropped.lock().recover();
                *lost.entry(r.run_id).or_default() += 1;
            }
        });
        AuditLog { tx, flushing }
    }

    /// Returns once every record made so far is written.
    pub async fn flush(&self) {
        let (ack, done) = oneshot::channel();
        if self.tx.send(Msg::Flush(ack)).await.is_ok() {
            self.flushing.notify_one();
            let _ = done.await;
        }
    }
}

/// Drains the queue into the database, a batch per transaction: first a `dropped` row
/// per run for the records lost since the last batch, then the records in the order
/// they were queued; then answers the flushes that were queued among them. A short
/// batch with no flush in it waits [`LINGER`] (or until a flush) for more first.
async fn writer(
    mut rx: mpsc::Receiver<Msg>,
    state: State,
    dropped: Dropped,
    flushing: Arc<Notify>,
) {
    let mut msgs = Vec::with_capacity(BATCH);
    let mut records = Vec::with_capacity(BATCH);
    let mut acks = Vec::new();
    while rx.recv_many(&mut msgs, BATCH).await > 0 {
        let flush_queued = |m: &[Msg]| m.iter().any(|m| matches!(m, Msg::Flush(_)));
        if msgs.len() < BATCH && !flush_queued(&msgs) {
            tokio::select! {
                () = tokio::time::sleep(LINGER) => {}
                () = flushing.notified() => {}
            }
            while msgs.len() < BATCH {
                match rx.try_recv() {
                    Ok(m) => msgs.push(m),
                    Err(_) => break,
                }
            }
        }
        for msg in msgs.drain(..) {
            match msg {
                Msg::Record(r) => records.push(r),
                Msg::Flush(ack) => acks.push(ack),
            }
        }
        let gaps = std::mem::take(&mut *dropped.lock().recover());
        let now = chrono::Utc::now();
        let outcomes: Vec<String> = records.iter().map(|r| r.outcome.to_string()).collect();
        let mut entries = Vec::with_capacity(gaps.len() + records.len());
        for (run_id, count) in &gaps {
            tracing::warn!(
                dropped = count,
                run_id = run_id.as_deref(),
                "audit records dropped: the history did not keep up with the connector calls"
            );
            entries.push(AuditEntry::dropped(now, run_id.as_deref(), *count));
        }
        entries.extend(
            records
                .iter()
                .zip(&outcomes)
                .map(|(r, outcome)| AuditEntry {
                    time: r.time.into(),
                    package: &r.package,
                    call_id: r.call_id,
                    run_id: r.run_id.as_deref(),
                    connector: &r.connector,
                    target: &r.target,
                    rows: r.rows,
                    duration_us: u64::try_from(r.duration.as_micros()).unwrap_or(u64::MAX),
                    outcome,
                }),
        );
        if let Err(e) = state.insert_audit(&entries).await {
            tracing::warn!(error = %e, records = entries.len(), "cannot write audit records");
        }
        drop(entries);
        records.clear();
        for ack in acks.drain(..) {
            let _ = ack.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use snakepit::{HostHandler, HostRequest, RawValue, Value};
    use snakepit_connectors::{ConnectorsConfig, Grant, Grants};

    use super::*;

    /// Connectors whose package "spy" may use no connector (every query of it is
    /// denied, and audited, without touching a database), and a state in `dir`.
    async fn spy(dir: &std::path::Path) -> (Connectors, State) {
        let toml = "[sql.billing]\nurl = \"sqlite://b.db?mode=rwc\"\n[sql.billing.queries]\nq = \"SELECT 1\"\n";
        let cfg =
            ConnectorsConfig::parse(toml, &dir.join("connectors.toml"), dir, |_| None).unwrap();
        let spy = Grant {
            connectors: Some(Vec::new()),
            ..Default::default()
        };
        let grants = Grants::new(BTreeMap::from([("spy".to_owned(), spy)]));
        let connectors = Connectors::new(cfg, grants, None).unwrap();
        let state = State::open("sqlite://state.db", dir).await.unwrap();
        (connectors, state)
    }

    /// A denied query of call `call_id` in run `run_id`: one audit record.
    async fn denied(connectors: &Connectors, call_id: u64, run_id: Option<&str>) {
        let payload = RawValue::encode(&Value::map([
            ("connector", Value::from("billing")),
            ("query", Value::from("q")),
        ]));
        let req = HostRequest {
            pool: "default".into(),
            worker: 0,
            call_id,
            reference: "spy:f".into(),
            run_id: run_id.map(Arc::from),
            method: "sql.run".into(),
            payload,
        };
        assert!(connectors.handle(req).await.is_err());
    }

    /// A worker's denied queries are audited faster than a database takes rows: past
    /// the queue, records are counted per run, and each count is written in their place.
    #[tokio::test]
    async fn a_flood_of_audit_records_is_bounded_and_every_record_accounted_for() {
        let dir = tempfile::tempdir().unwrap();
        let (connectors, state) = spy(dir.path()).await;
        let log = AuditLog::attach_queue(&connectors, &state, 16);
        const N: u64 = 3000;
        for i in 0..N {
            let run = if i % 2 == 0 { "r-even" } else { "r-odd" };
            denied(&connectors, i + 1, Some(run)).await;
        }
        log.flush().await;
        // A record after the flood carries the last gaps in.
        denied(&connectors, N + 1, Some("r-odd")).await;
        log.flush().await;
        let rows = state.audit(u32::MAX).await.unwrap();
        let dropped_of = |run: &str| -> u64 {
            rows.iter()
                .filter(|r| r.outcome == "dropped" && r.run_id.as_deref() == Some(run))
                .map(|r| r.row_count.unwrap() as u64)
                .sum()
        };
        let kept_of = |run: &str| {
            rows.iter()
                .filter(|r| r.outcome == "denied" && r.run_id.as_deref() == Some(run))
                .count() as u64
        };
        assert!(dropped_of("r-even") > 0, "the queue of 16 never filled");
        assert_eq!(kept_of("r-even") + dropped_of("r-even"), N / 2);
        assert_eq!(kept_of("r-odd") + dropped_of("r-odd"), N / 2 + 1);
    }

    /// Records written in batches keep the order they were made in, across batches,
    /// and a flush returns only once the records made before it are in the database.
    #[tokio::test]
    async fn batched_records_keep_their_order_and_a_flush_waits_for_them() {
        let dir = tempfile::tempdir().unwrap();
        let (connectors, state) = spy(dir.path()).await;
        let log = AuditLog::attach(&connectors, &state);
        let n = 3 * BATCH as u64 + 7;
        for i in 1..=n {
            denied(&connectors, i, Some("r-1")).await;
            if i == BATCH as u64 / 2 {
                log.flush().await;
                assert_eq!(state.audit(u32::MAX).await.unwrap().len() as u64, i);
            }
        }
        log.flush().await;
        let mut rows = state.audit(u32::MAX).await.unwrap();
        rows.reverse();
        let call_ids: Vec<i64> = rows.iter().map(|r| r.call_id).collect();
        assert_eq!(call_ids, (1..=n as i64).collect::<Vec<_>>());
        assert!(rows
            .windows(2)
            .all(|w| w[0].id < w[1].id && w[0].time <= w[1].time));
    }
}
