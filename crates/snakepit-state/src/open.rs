//! Opening a state: the url, the SQLite file made private, the pool, the migrations,
//! then the recovery of the runs of dead owners.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::Utc;
use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};

use crate::{Db, Owner, State, StateError, DEFAULT_LEASE, DEFAULT_URL};

impl State {
    /// Opens the state of the install in `apps_dir`: `configured` (its `[runtime]
    /// state`), else [`DEFAULT_URL`]. A relative SQLite path is relative to the apps
    /// dir, and its directory is created.
    pub async fn open_for_apps(
        apps_dir: &Path,
        configured: Option<&str>,
    ) -> Result<State, StateError> {
        State::open(configured.unwrap_or(DEFAULT_URL), apps_dir).await
    }

    /// Opens `url` (`sqlite://PATH`, `sqlite:PATH`, `postgres://…`, `postgresql://…`),
    /// a relative SQLite path taken from `base`; migrates; recovers the runs of dead
    /// owners (see [`State::recover`]). The runs this state starts or claims are owned
    /// by this process ([`Owner::current`]).
    pub async fn open(url: &str, base: &Path) -> Result<State, StateError> {
        State::open_as(url, base, Owner::current()).await
    }

    /// [`State::open`] with the runs owned by `owner`: several "nodes" in one process
    /// (tests of README, "Several machines") each open the database as their own owner, on distinct hosts
    /// so that each judges the others by their leases.
    pub async fn open_as(url: &str, base: &Path, owner: Owner) -> Result<State, StateError> {
        let bad = |reason: &str| StateError::Url {
            url: snakepit_redact::mask_url(url),
            reason: reason.to_owned(),
        };
        let (db, shown) = if let Some(path) = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
        {
            let path = path.split('?').next().unwrap_or(path);
            if path.is_empty() {
                return Err(bad("it has no file path; e.g. sqlite://.snakepit/state.db"));
            }
            let file: PathBuf = base.join(path);
            private_file(&file).map_err(|e| bad(&e))?;
            let shown = format!("sqlite://{}", file.display());
            let opts = SqliteConnectOptions::new()
                .filename(&file)
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .busy_timeout(Duration::from_secs(10))
                .foreign_keys(true);
            let pool = SqlitePoolOptions::new()
                .max_connections(4)
                .connect_with(opts)
                .await
                .map_err(|source| StateError::Connect {
                    url: shown.clone(),
                    source,
                })?;
            (Db::Sqlite(pool), shown)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let shown = snakepit_redact::mask_url(url);
            // Five for the queries, one for the wake-ups' listener (`State::wakeups`).
            let pool = PgPoolOptions::new()
                .max_connections(6)
                .acquire_timeout(Duration::from_secs(10))
                .connect(url)
                .await
                .map_err(|source| StateError::Connect {
                    url: shown.clone(),
                    source,
                })?;
            (Db::Postgres(pool), shown)
        } else {
            return Err(bad(
                "use sqlite://PATH (relative to the apps dir) or postgres://USER@HOST/DB",
            ));
        };
        let state = State {
            db,
            url: shown,
            owner,
            lease: DEFAULT_LEASE,
        };
        let migrated = match &state.db {
            Db::Sqlite(p) => sqlx::migrate!("migrations/sqlite").run(p).await,
            Db::Postgres(p) => sqlx::migrate!("migrations/postgres").run(p).await,
        };
        migrated.map_err(|source| StateError::Migrate {
            url: state.url.clone(),
            source,
        })?;
        state.recover(Utc::now()).await?.log();
        Ok(state)
    }
}

/// Makes `file`'s directory (0700, like `.snakepit/`) and the file itself (0600) if
/// they are missing, and takes the group's and others' bits off a file already there:
/// the history holds plugin output and audit records that workers running under
/// another uid must not read. (SQLite gives its `-wal` and `-shm` files the database
/// file's mode.)
fn private_file(file: &Path) -> Result<(), String> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("cannot create the directory {}: {e}", dir.display()))?;
    }
    let opened = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(file)
        .and_then(|f| {
            let mut perms = f.metadata()?.permissions();
            if perms.mode() & 0o077 != 0 {
                perms.set_mode(perms.mode() & 0o700);
                f.set_permissions(perms)?;
            }
            Ok(())
        });
    opened.map_err(|e| format!("cannot create {} private (0600): {e}", file.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_password_is_masked_in_every_message_about_the_url() {
        let dir = tempfile::tempdir().unwrap();
        // An invalid port: the connection fails at once, and says where it went.
        let url = "postgres://u:p@ss@127.0.0.1:99999/db?password=p@ss";
        let e = State::open(url, dir.path()).await.unwrap_err().to_string();
        assert!(
            e.contains("postgres://u:***@127.0.0.1:99999/db?password=***") && !e.contains("p@ss"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn the_state_directory_and_database_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let apps = tempfile::tempdir().unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let state = State::open_for_apps(apps.path(), None).await.unwrap();
        let dir = apps.path().join(".snakepit");
        assert_eq!(mode(&dir), 0o700);
        for f in ["state.db", "state.db-wal", "state.db-shm"] {
            assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
        }
        state.close().await;
        // A database made readable by others before is made private again.
        let db = dir.join("state.db");
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
        State::open_for_apps(apps.path(), None)
            .await
            .unwrap()
            .close()
            .await;
        assert_eq!(mode(&db), 0o600);
    }

    #[tokio::test]
    async fn a_bad_url_says_what_to_write() {
        let dir = tempfile::tempdir().unwrap();
        let e = State::open("mysql://x", dir.path()).await.unwrap_err();
        assert!(e.to_string().contains("use sqlite://PATH"), "{e}");
    }
}
