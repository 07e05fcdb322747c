//! The audit log of connector calls, kept in the run history: every `AuditRecord` of
//! an install's connectors becomes a row of the state's `audit` table (time, package,
//! call id, run id, connector, query or endpoint, rows, duration, outcome).

use snakepit_connectors::{AuditRecord, Connectors};
use snakepit_state::{AuditEntry, State};
use tokio::sync::{mpsc, oneshot};

enum Msg {
    Record(AuditRecord),
    Flush(oneshot::Sender<()>),
}

/// Writes the audit records of some connectors into a [`State`]; made by
/// [`AuditLog::attach`].
#[derive(Debug, Clone)]
pub struct AuditLog {
    tx: mpsc::UnboundedSender<Msg>,
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
        let (tx, mut rx) = mpsc::unbounded_channel::<Msg>();
        let state = state.clone();
        tokio::spawn(async move {
            while let Some(msg) = rx.recv().await {
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
                if let Err(e) = state.insert_audit(&entry).await {
                    tracing::warn!(error = %e, connector = %r.connector, "cannot write an audit record");
                }
            }
        });
        let sink = tx.clone();
        connectors.set_audit_sink(move |r: &AuditRecord| {
            let _ = sink.send(Msg::Record(r.clone()));
        });
        AuditLog { tx }
    }

    /// Returns once every record made so far is written.
    pub async fn flush(&self) {
        let (ack, done) = oneshot::channel();
        if self.tx.send(Msg::Flush(ack)).is_ok() {
            let _ = done.await;
        }
    }
}
