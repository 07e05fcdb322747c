//! `snakepit check` for connectors: every database reached, every named query prepared.

use crate::{config, sql, Connectors};

/// One problem [`Connectors::check`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectorProblem {
    /// `[sql.billing]` (the database is unreachable) or
    /// `[sql.billing.queries] drafts-for-period` (the query does not prepare).
    pub entry: String,
    pub reason: String,
}

impl Connectors {
    /// Connects to every SQL connector's database and prepares each of its named
    /// queries there: a database that cannot be reached is a problem of the connector
    /// (`[sql.billing]`), a query that does not prepare (a typo, a missing table or
    /// column) one of the query (`[sql.billing.queries] drafts-for-period`).
    pub async fn check(&self) -> Vec<ConnectorProblem> {
        let this = self.clone();
        let work = async move {
            let mut problems = Vec::new();
            for (name, cfg) in &this.inner.config.sql {
                let pool = &this.inner.sql[name];
                let queries: Vec<(&str, &str)> = cfg
                    .queries
                    .iter()
                    .map(|(q, s)| (q.as_str(), s.sql.as_str()))
                    .collect();
                match sql::prepare_all(pool, &queries).await {
                    Ok(bad) => problems.extend(bad.into_iter().map(|(q, why)| ConnectorProblem {
                        entry: format!("[sql.{}.queries] {}", config::key(name), config::key(&q)),
                        reason: this.inner.config.scrub(&why),
                    })),
                    Err(e) => {
                        let mut why = format!("cannot connect to {}: {e}", cfg.url.masked());
                        if why.ends_with("unable to open database file") {
                            why.push_str(
                                " (does the file exist? create it, or add ?mode=rwc to the url to let snakepit create it)",
                            );
                        }
                        problems.push(ConnectorProblem {
                            entry: format!("[sql.{}]", config::key(name)),
                            reason: this.inner.config.scrub(&why),
                        })
                    }
                }
            }
            problems
        };
        self.on_home(work).await.unwrap_or_else(|f| {
            vec![ConnectorProblem {
                entry: "connectors".into(),
                reason: f.message,
            }]
        })
    }
}
