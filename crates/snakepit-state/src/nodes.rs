//! The nodes: each `snakepit serve` records itself (host, pid, version, start time, last
//! seen, runs in hand) and renews its row at each heartbeat; a node not seen for its
//! lease is lost. `snakepit status --cluster` and the web console list them.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::{Db, State, StateError};

/// A node not seen for this long is forgotten (its row deleted at another node's
/// heartbeat).
const FORGET_AFTER: Duration = Duration::from_secs(24 * 3600);

/// One node as the nodes table has it.
#[derive(Debug, Clone, Serialize)]
pub struct Node {
    /// Its owner name: `host/boot id/pid/start time`.
    pub id: String,
    pub host: String,
    pub pid: i64,
    /// The snakepit version it runs.
    pub version: String,
    pub started_at: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    /// The runs it had in hand when last seen.
    pub runs: i64,
    /// Its lease: it renews its row every third of it.
    pub lease_ms: i64,
    /// Not seen for longer than its lease: stopped, killed or cut off.
    pub lost: bool,
}

#[derive(sqlx::FromRow)]
struct NodeRow {
    id: String,
    host: String,
    pid: i64,
    version: String,
    started_at: DateTime<Utc>,
    last_seen: DateTime<Utc>,
    runs: i64,
    lease_ms: i64,
}

impl State {
    /// Records this state's owner as a node seen at `now` with `runs` in hand (started
    /// at `started_at`, running `version`), and forgets nodes not seen for a day.
    pub async fn heartbeat(
        &self,
        version: &str,
        started_at: DateTime<Utc>,
        runs: usize,
        now: DateTime<Utc>,
    ) -> Result<(), StateError> {
        let lease_ms = i64::try_from(self.lease.as_millis()).unwrap_or(i64::MAX);
        let forget = now - FORGET_AFTER;
        with_db!(self, p => {
            let mut tx = p.begin().await?;
            sqlx::query(
                "INSERT INTO nodes (id, host, pid, version, started_at, last_seen, runs, lease_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (id) DO UPDATE SET \
                 version = $4, last_seen = $6, runs = $7, lease_ms = $8",
            )
            .bind(self.owner.to_string())
            .bind(&self.owner.host)
            .bind(i64::from(self.owner.pid))
            .bind(version)
            .bind(started_at)
            .bind(now)
            .bind(runs as i64)
            .bind(lease_ms)
            .execute(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM nodes WHERE last_seen < $1")
                .bind(forget)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// Removes this state's owner from the nodes (a clean stop).
    pub async fn leave(&self) -> Result<(), StateError> {
        with_db!(self, p => {
            sqlx::query("DELETE FROM nodes WHERE id = $1")
                .bind(self.owner.to_string())
                .execute(p)
                .await?;
        });
        Ok(())
    }

    /// Every node recorded, the longest-running first, each marked lost when it was
    /// last seen more than its lease before `now`.
    pub async fn nodes(&self, now: DateTime<Utc>) -> Result<Vec<Node>, StateError> {
        let rows: Vec<NodeRow> = with_db!(self, p => {
            sqlx::query_as(
                "SELECT id, host, pid, version, started_at, last_seen, runs, lease_ms \
                 FROM nodes ORDER BY started_at, id",
            )
            .fetch_all(p)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(|r| Node {
                lost: now - r.last_seen > chrono::Duration::milliseconds(r.lease_ms),
                id: r.id,
                host: r.host,
                pid: r.pid,
                version: r.version,
                started_at: r.started_at,
                last_seen: r.last_seen,
                runs: r.runs,
                lease_ms: r.lease_ms,
            })
            .collect())
    }
}
