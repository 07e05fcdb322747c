//! Wake-ups on PostgreSQL: a run queued (inserted or re-queued) or ended notifies the
//! channel `snakepit_runs` (a trigger of migration 0004, with the table's schema as
//! payload), and [`Wakeups::next`] returns at each notification for this state's
//! schema, so that idle nodes look at once instead of at their next timer.

use std::time::Duration;

use sqlx::postgres::PgListener;

use crate::{Db, State, StateError};

/// The channel the runs trigger notifies.
const CHANNEL: &str = "snakepit_runs";

/// A listener on the runs channel ([`State::wakeups`]).
pub struct Wakeups {
    listener: PgListener,
    schema: String,
}

impl std::fmt::Debug for Wakeups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wakeups")
            .field("schema", &self.schema)
            .finish()
    }
}

impl Wakeups {
    /// Returns at the next notification for this schema. A lost connection is
    /// reconnected (sqlx does, at the next receive; a wake-up missed meanwhile is made
    /// up for by returning once it is back, and by the scheduler's timers).
    pub async fn next(&mut self) {
        loop {
            match self.listener.try_recv().await {
                Ok(Some(n)) if n.payload() == self.schema => return,
                Ok(Some(_)) => {}
                // The connection was lost and is reconnected at the next call: look
                // once, in case a notification went by meanwhile.
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "lost the state database's notifications; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
}

impl State {
    /// A listener of the runs queued and ended (by any node) on PostgreSQL; None on
    /// SQLite, which one node serves.
    pub async fn wakeups(&self) -> Result<Option<Wakeups>, StateError> {
        let Db::Postgres(pool) = &self.db else {
            return Ok(None);
        };
        let schema: String = sqlx::query_scalar("SELECT current_schema()")
            .fetch_one(pool)
            .await?;
        let mut listener = PgListener::connect_with(pool).await?;
        listener.listen(CHANNEL).await?;
        Ok(Some(Wakeups { listener, schema }))
    }
}
