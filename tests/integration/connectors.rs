//! Connectors end to end: the fixture install `tests/installs/conn` (app.toml with grants
//! and a `connector.before_query` hook, plugins including the framework page's
//! `billing.invoicing:run` unchanged) copied into a temporary apps dir with a
//! connectors.toml written per backend, against real SQLite files, the PostgreSQL and
//! MariaDB servers (database `test`; each test uses tables of its own), and an HTTP
//! server for the API connector. Real CPython workers throughout.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use snakepit::{CallError, Map, Value};
use snakepit_connectors::{AuditRecord, Outcome};
use snakepit_host::{Host, HostError, Install};
use sqlx::Connection;

use crate::support::{python, wait_for};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Server {
    Sqlite,
    Postgres,
    MariaDb,
}

const PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
const MARIADB_URL: &str = "mysql://root@127.0.0.1:3306/test";

/// A table name no other test (or run) uses.
fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{prefix}_{}_{}_{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A temporary apps dir: the fixture install's app.toml and plugins, and a
/// connectors.toml for `db` over the tables `t` (invoices) and `t_types`.
struct Apps {
    dir: tempfile::TempDir,
    db: Server,
    table: String,
}

impl Apps {
    fn new(db: Server, api_base: Option<SocketAddr>) -> Apps {
        Apps::with(db, api_base, "")
    }

    /// `extra` is appended to connectors.toml.
    fn with(db: Server, api_base: Option<SocketAddr>, extra: &str) -> Apps {
        let dir = tempfile::tempdir().unwrap();
        let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("installs/conn");
        std::fs::copy(fixture.join("app.toml"), dir.path().join("app.toml")).unwrap();
        std::os::unix::fs::symlink(fixture.join("plugins"), dir.path().join("plugins")).unwrap();
        let apps = Apps {
            dir,
            db,
            table: unique("inv"),
        };
        let text = apps.connectors_toml(api_base) + extra;
        std::fs::write(apps.path().join("connectors.toml"), text).unwrap();
        apps
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn url(&self) -> String {
        match self.db {
            Server::Sqlite => "sqlite://billing.db?mode=rwc".into(),
            Server::Postgres => PG_URL.into(),
            Server::MariaDb => MARIADB_URL.into(),
        }
    }

    /// The URL the test itself connects with.
    fn direct_url(&self) -> String {
        match self.db {
            Server::Sqlite => format!("sqlite://{}/billing.db?mode=rwc", self.path().display()),
            _ => self.url(),
        }
    }

    fn connectors_toml(&self, api_base: Option<SocketAddr>) -> String {
        let t = &self.table;
        let mut s = format!(
            r#"[sql.billing]
url = "{url}"
max_connections = 3
[sql.billing.queries]
drafts-for-period = "SELECT id, customer, amount FROM {t} WHERE status = 'draft' AND period = :period ORDER BY id"
"issue-invoice:write" = "UPDATE {t} SET status = 'issued' WHERE id = :id"
"add-invoice:write" = "INSERT INTO {t} (id, customer, amount, status, period) VALUES (:id, :customer, 1, 'draft', '2026-06')"
forbidden-report = "SELECT count(*) AS n FROM {t}"
two-params = "SELECT id FROM {t} WHERE period = :period AND customer = :customer"
"put-types:write" = "INSERT INTO {t}_types (i, f, s, b, d, dt, dtz, day, flag, n) VALUES (:i, :f, :s, :b, :d, :dt, :dtz, :day, :flag, :n)"
get-types = "SELECT i, f, s, b, d, dt, dtz, day, flag, n FROM {t}_types"
"put-day:write" = "INSERT INTO {t}_types (day) VALUES (:day)"
get-days = "SELECT day FROM {t}_types ORDER BY day"
"#,
            url = self.url()
        );
        if let Some(addr) = api_base {
            s.push_str(&format!(
                r#"
[api.crm]
base_url = "http://{addr}/api"
headers = {{ Authorization = "Bearer ${{SNAKEPIT_TEST_CRM_TOKEN}}" }}
timeout = "500ms"
[api.crm.endpoints]
get-customer = {{ method = "GET", path = "/customers/{{id}}" }}
sync-deal = {{ method = "POST", path = "/deals/{{deal_id}}/sync" }}
missing = {{ method = "GET", path = "/missing/{{id}}" }}
slow = {{ method = "GET", path = "/slow/{{id}}" }}
"#
            ));
        } else {
            // The grants of app.toml name "crm": an API connector nobody serves.
            s.push_str(
                "\n[api.crm]\nbase_url = \"http://127.0.0.1:9/api\"\n[api.crm.endpoints]\nget-customer = { method = \"GET\", path = \"/customers/{id}\" }\n",
            );
        }
        s
    }

    /// Creates the tables (and the SQLite file) and puts three drafts of 2026-05, one of
    /// 2026-04 and one issued invoice of 2026-05 in.
    async fn setup(&self) {
        let t = &self.table;
        let (ddl_inv, ddl_types) = match self.db {
            Server::Sqlite => (
                format!("CREATE TABLE {t} (id INTEGER PRIMARY KEY, customer TEXT, amount NUMERIC, status TEXT, period TEXT)"),
                format!("CREATE TABLE {t}_types (i INTEGER, f REAL, s TEXT, b BLOB, d NUMERIC, dt DATETIME, dtz TIMESTAMPTZ, day DATE, flag BOOLEAN, n TEXT)"),
            ),
            Server::Postgres => (
                format!("CREATE TABLE {t} (id SERIAL PRIMARY KEY, customer TEXT, amount NUMERIC(10,2), status TEXT, period TEXT)"),
                format!("CREATE TABLE {t}_types (i BIGINT, f DOUBLE PRECISION, s TEXT, b BYTEA, d NUMERIC(12,3), dt TIMESTAMP, dtz TIMESTAMPTZ, day DATE, flag BOOLEAN, n TEXT)"),
            ),
            Server::MariaDb => (
                format!("CREATE TABLE {t} (id INT AUTO_INCREMENT PRIMARY KEY, customer VARCHAR(100), amount DECIMAL(10,2), status VARCHAR(20), period VARCHAR(7))"),
                format!("CREATE TABLE {t}_types (i BIGINT, f DOUBLE, s VARCHAR(50), b VARBINARY(50), d DECIMAL(12,3), dt DATETIME(6), dtz TIMESTAMP(6) NULL, day DATE, flag BOOLEAN, n VARCHAR(10))"),
            ),
        };
        let rows = format!(
            "INSERT INTO {t} (customer, amount, status, period) VALUES ('ada', 12.50, 'draft', '2026-05'), ('bob', 3.00, 'draft', '2026-05'), ('cy', 7.25, 'draft', '2026-05'), ('dee', 1.00, 'draft', '2026-04'), ('eve', 9.99, 'issued', '2026-05')"
        );
        self.exec(&[&ddl_inv, &ddl_types, &rows]).await;
    }

    /// Runs statements directly (not through snakepit), failing loudly when the server
    /// is down.
    async fn exec(&self, statements: &[&str]) {
        let url = self.direct_url();
        macro_rules! run {
            ($conn:ty) => {{
                let mut c = <$conn>::connect(&url)
                    .await
                    .unwrap_or_else(|e| panic!("cannot connect to {url} (is the server up?): {e}"));
                for s in statements {
                    sqlx::raw_sql(s)
                        .execute(&mut c)
                        .await
                        .unwrap_or_else(|e| panic!("{s}: {e}"));
                }
            }};
        }
        match self.db {
            Server::Sqlite => run!(sqlx::SqliteConnection),
            Server::Postgres => run!(sqlx::PgConnection),
            Server::MariaDb => run!(sqlx::MySqlConnection),
        }
    }

    /// `SELECT count(*)` over the invoices with `condition`, directly.
    async fn count(&self, condition: &str) -> i64 {
        let url = self.direct_url();
        let q = format!("SELECT count(*) FROM {} WHERE {condition}", self.table);
        macro_rules! one {
            ($conn:ty) => {{
                let mut c = <$conn>::connect(&url).await.unwrap();
                let n: i64 = sqlx::query_scalar(&q).fetch_one(&mut c).await.unwrap();
                n
            }};
        }
        match self.db {
            Server::Sqlite => one!(sqlx::SqliteConnection),
            Server::Postgres => one!(sqlx::PgConnection),
            Server::MariaDb => one!(sqlx::MySqlConnection),
        }
    }

    async fn teardown(&self) {
        if self.db != Server::Sqlite {
            let t = &self.table;
            self.exec(&[&format!("DROP TABLE {t}"), &format!("DROP TABLE {t}_types")])
                .await;
        }
    }

    fn install(&self) -> Install {
        Install::load(Some(self.path()), Some(&python())).unwrap()
    }

    /// Starts the install's pools after `check` passed (every query prepared).
    async fn open(&self) -> Host {
        match Host::start_checked(self.install()).await {
            Ok(h) => h,
            Err(e) => panic!("the fixture install does not open: {e}"),
        }
    }
}

/// The context every connector-using call gets: the shim replaces these keys by its
/// registries.
fn ctx() -> Map {
    vec![
        ("connectors".into(), Value::Nil),
        ("pools".into(), Value::Nil),
    ]
}

async fn call(
    host: &Host,
    reference: &str,
    kwargs: Vec<(&str, Value)>,
) -> Result<Value, CallError> {
    let kwargs: Map = kwargs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    host.submit(reference, |c| {
        c.kwargs(kwargs)
            .context(ctx())
            .timeout(Duration::from_secs(20))
    })
    .await
    .map(|v| v.decode().unwrap())
}

fn s(v: &str) -> Value {
    Value::from(v)
}

fn records() -> (
    Arc<Mutex<Vec<AuditRecord>>>,
    impl Fn(&AuditRecord) + Send + Sync + 'static,
) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    (seen, move |r: &AuditRecord| {
        sink.lock().unwrap().push(r.clone())
    })
}

// ---------------------------------------------------------------- the billing example

async fn billing_example(db: Server) {
    let apps = Apps::new(db, None);
    apps.setup().await;
    let host = apps.open().await;
    let (audit, sink) = records();
    host.install().connectors.set_audit_sink(sink);

    let dry = call(
        &host,
        "billing.invoicing:run",
        vec![("period", s("2026-05")), ("dry_run", Value::Bool(true))],
    )
    .await
    .unwrap();
    assert_eq!(
        dry,
        Value::map([("rows_affected", Value::Int(0)), ("matched", Value::Int(3))])
    );
    let done = call(
        &host,
        "billing.invoicing:run",
        vec![("period", s("2026-05"))],
    )
    .await
    .unwrap();
    assert_eq!(done, Value::map([("rows_affected", Value::Int(3))]));
    assert_eq!(
        apps.count("status = 'issued' AND period = '2026-05'").await,
        4
    );
    assert_eq!(
        apps.count("status = 'draft'").await,
        1,
        "2026-04 is left alone"
    );

    // Audited: who, what, how many rows; never the parameters.
    let records = audit.lock().unwrap().clone();
    let targets: Vec<(&str, &str, Option<u64>, Outcome)> = records
        .iter()
        .map(|r| (r.package.as_str(), r.target.as_str(), r.rows, r.outcome))
        .collect();
    assert_eq!(
        targets,
        [
            ("billing", "drafts-for-period", Some(3), Outcome::Ok),
            ("billing", "drafts-for-period", Some(3), Outcome::Ok),
            ("billing", "issue-invoice:write", Some(1), Outcome::Ok),
            ("billing", "issue-invoice:write", Some(1), Outcome::Ok),
            ("billing", "issue-invoice:write", Some(1), Outcome::Ok),
        ]
    );
    assert!(records
        .iter()
        .all(|r| r.connector == "billing" && r.call_id > 0));
    assert!(!format!("{records:?}").contains("2026-05"), "{records:?}");
    host.shutdown(Duration::from_secs(2)).await;
    apps.teardown().await;
}

#[tokio::test]
async fn billing_example_runs_unchanged_on_sqlite() {
    billing_example(Server::Sqlite).await
}

#[tokio::test]
async fn billing_example_runs_unchanged_on_postgres() {
    billing_example(Server::Postgres).await
}

#[tokio::test]
async fn billing_example_runs_unchanged_on_mariadb() {
    billing_example(Server::MariaDb).await
}

// ---------------------------------------------------------------------------- sandbox

/// Test mode (`snakepit test`): while a sandbox is open, every write of every call, named
/// queries, batches and the plugins' own transactions alike, lands in one transaction per
/// connector that closing the sandbox rolls back. A statement that fails is undone alone
/// (on PostgreSQL the test's transaction would otherwise refuse every later statement).
async fn sandbox(db: Server) {
    let apps = Apps::new(db, None);
    apps.setup().await;
    let host = apps.open().await;
    let connectors = host.install().connectors.clone();
    let t = apps.table.clone();
    connectors.open_sandbox().unwrap();
    assert!(connectors.open_sandbox().is_err(), "one sandbox at a time");

    let done = call(
        &host,
        "billing.invoicing:run",
        vec![("period", s("2026-05"))],
    )
    .await
    .unwrap();
    assert_eq!(done, Value::map([("rows_affected", Value::Int(3))]));
    // The test sees its own writes, through another package's call too.
    let period = |p: &str| vec![("period", s(p))];
    let drafts = call(&host, "reports:read", period("2026-05"))
        .await
        .unwrap();
    assert_eq!(drafts, Value::List(vec![]));
    // A statement the database refuses (a duplicate key), then the test goes on.
    let dup = Value::map([("id", Value::Int(1)), ("customer", s("dup"))]);
    let failed = call(
        &host,
        "billing.batch:attempt",
        vec![
            ("query", s("add-invoice:write")),
            ("sets", Value::List(vec![dup])),
        ],
    )
    .await
    .unwrap();
    assert_eq!(failed.get("type"), Some(&s("ConnectorError")), "{failed:?}");
    let left = call(&host, "reports:read", period("2026-04"))
        .await
        .unwrap();
    assert!(
        matches!(&left, Value::List(rows) if rows.len() == 1),
        "{left:?}"
    );
    // The plugins' transactions: a commit (a savepoint released) and a rollback.
    let customer = |c: &str| vec![("table", s(&t)), ("customer", s(c))];
    let committed = call(&host, "txs:commit", customer("zed")).await.unwrap();
    assert_eq!(committed.get("rowcount"), Some(&Value::Int(1)));
    let e = call(&host, "txs:fail", customer("yan")).await.unwrap_err();
    assert!(matches!(e, CallError::Raised(_)), "{e:?}");
    let again = call(&host, "txs:commit", customer("xia")).await.unwrap();
    assert_eq!(again.get("rowcount"), Some(&Value::Int(1)));
    // A worker that dies in its transaction: its savepoint is rolled back, the test's
    // transaction goes on and still holds the committed savepoints' rows.
    let e = call(&host, "txs:die", customer("wd")).await.unwrap_err();
    assert!(matches!(e, CallError::WorkerCrashed { .. }), "{e:?}");
    let rows_of = |c: &str| {
        let params = Value::map([("period", s("2026-05")), ("customer", s(c))]);
        call(
            &host,
            "reports:run_query",
            vec![("query", s("two-params")), ("params", params)],
        )
    };
    let listed = |v: Value| match v {
        Value::List(rows) => rows.len(),
        other => panic!("{other:?}"),
    };
    assert_eq!(listed(rows_of("wd").await.unwrap()), 0);
    assert_eq!(listed(rows_of("yan").await.unwrap()), 0);
    assert_eq!(listed(rows_of("zed").await.unwrap()), 2);
    assert_eq!(
        apps.count("status = 'issued' AND period = '2026-05'").await,
        1,
        "nothing is committed while the sandbox is open"
    );
    connectors.close_sandbox().await.unwrap();
    assert_eq!(
        apps.count("status = 'draft' AND period = '2026-05'").await,
        3
    );
    assert_eq!(
        apps.count("customer IN ('zed', 'yan', 'xia', 'dup', 'wd')")
            .await,
        0
    );
    assert_eq!(connectors.open_transactions(), 0);

    // Closed: writes commit again.
    call(
        &host,
        "billing.invoicing:run",
        vec![("period", s("2026-04"))],
    )
    .await
    .unwrap();
    assert_eq!(
        apps.count("status = 'issued' AND period = '2026-04'").await,
        1
    );
    host.shutdown(Duration::from_secs(2)).await;
    apps.teardown().await;
}

#[tokio::test]
async fn a_sandbox_rolls_back_every_write_on_sqlite() {
    sandbox(Server::Sqlite).await
}

#[tokio::test]
async fn a_sandbox_rolls_back_every_write_on_postgres() {
    sandbox(Server::Postgres).await
}

#[tokio::test]
async fn a_sandbox_rolls_back_every_write_on_mariadb() {
    sandbox(Server::MariaDb).await
}

// ---------------------------------------------------------------------------- run_many

/// `run_many`: every parameter set in one request and one transaction, audited as one
/// call with its total row count; a failing set rolls the whole batch back and is named.
async fn run_many(db: Server) {
    let apps = Apps::new(db, None);
    apps.setup().await;
    let host = apps.open().await;
    let (audit, sink) = records();
    host.install().connectors.set_audit_sink(sink);
    let ints = |ids: &[i64]| Value::List(ids.iter().map(|i| Value::Int(*i)).collect());

    // Reads: one list of rows per set.
    let periods = Value::List(vec![s("2026-05"), s("2026-04"), s("1999-01")]);
    let got = call(&host, "billing.batch:drafts", vec![("periods", periods)])
        .await
        .unwrap();
    let Value::List(per_set) = &got else {
        panic!("{got}")
    };
    let lens: Vec<usize> = per_set
        .iter()
        .map(|rows| match rows {
            Value::List(r) => r.len(),
            other => panic!("{other}"),
        })
        .collect();
    assert_eq!(lens, [3, 1, 0], "{db:?}");

    // Writes: the total.
    let got = call(&host, "billing.batch:issue", vec![("ids", ints(&[1, 2]))])
        .await
        .unwrap();
    assert_eq!(got, Value::map([("rows_affected", Value::Int(2))]));
    assert_eq!(apps.count("status = 'issued'").await, 3);

    // A set the database refuses (a duplicate key) rolls back the sets before it.
    let add = |id: i64| Value::map([("id", Value::Int(id)), ("customer", s("zed"))]);
    let attempt = |query: &str, sets: Vec<Value>| {
        let kwargs = vec![("query", s(query)), ("sets", Value::List(sets))];
        call(&host, "billing.batch:attempt", kwargs)
    };
    let got = attempt("add-invoice:write", vec![add(100), add(101), add(100)])
        .await
        .unwrap();
    assert_eq!(got.get("type"), Some(&s("ConnectorError")), "{got}");
    let msg = got.get("message").and_then(Value::as_str).unwrap();
    assert!(
        msg.starts_with("connector \"billing\", query \"add-invoice:write\", parameter set 2: ")
            && msg.ends_with(" (the whole batch was rolled back)"),
        "{db:?}: {msg}"
    );
    assert_eq!(apps.count("period = '2026-06'").await, 0, "{db:?}");

    // A set with a missing parameter is refused before anything runs.
    let got = attempt(
        "issue-invoice:write",
        vec![
            Value::map([("id", Value::Int(3))]),
            Value::map([("di", Value::Int(3))]),
        ],
    )
    .await
    .unwrap();
    assert_eq!(
        got.get("message"),
        Some(&s("connector \"billing\", query \"issue-invoice:write\", parameter set 1: missing parameter :id (it takes :id)"))
    );
    // An unbindable value fails its set in the database's transaction: rolled back too.
    let got = attempt(
        "issue-invoice:write",
        vec![
            Value::map([("id", Value::Int(3))]),
            Value::map([("id", Value::List(vec![]))]),
        ],
    )
    .await
    .unwrap();
    let msg = got.get("message").and_then(Value::as_str).unwrap();
    assert!(
        msg.contains("parameter set 1: parameter :id is a list"),
        "{db:?}: {msg}"
    );
    assert_eq!(
        apps.count("status = 'issued'").await,
        3,
        "{db:?}: set 0 was rolled back"
    );

    // An empty batch does nothing, and succeeds.
    let got = call(&host, "billing.batch:issue", vec![("ids", ints(&[]))])
        .await
        .unwrap();
    assert_eq!(got, Value::map([("rows_affected", Value::Int(0))]));

    // Checked against the grants like run: reports may not write.
    let e = call(&host, "reports:write_many", vec![("ids", ints(&[3]))])
        .await
        .unwrap_err();
    match e {
        CallError::Raised(e) => assert_eq!(
            (e.type_name.as_str(), e.message.as_str()),
            ("PermissionError", "package \"reports\" may not run write query \"issue-invoice:write\" of connector \"billing\": set write = true in [plugins.reports] in app.toml")
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(apps.count("status = 'issued'").await, 3);

    // One audit record per batch, with its total row count.
    let records: Vec<(String, String, Option<u64>, Outcome)> = audit
        .lock()
        .unwrap()
        .iter()
        .map(|r| (r.package.clone(), r.target.clone(), r.rows, r.outcome))
        .collect();
    let r = |p: &str, t: &str, rows, o| (p.to_owned(), t.to_owned(), rows, o);
    assert_eq!(
        records,
        [
            r("billing", "drafts-for-period", Some(4), Outcome::Ok),
            r("billing", "issue-invoice:write", Some(2), Outcome::Ok),
            r("billing", "add-invoice:write", None, Outcome::Failed),
            r("billing", "issue-invoice:write", None, Outcome::Failed),
            r("billing", "issue-invoice:write", None, Outcome::Failed),
            r("billing", "issue-invoice:write", Some(0), Outcome::Ok),
            r("reports", "issue-invoice:write", None, Outcome::Denied),
        ],
        "{db:?}"
    );
    host.shutdown(Duration::from_secs(2)).await;
    apps.teardown().await;
}

#[tokio::test]
async fn run_many_is_one_transaction_on_sqlite() {
    run_many(Server::Sqlite).await
}

#[tokio::test]
async fn run_many_is_one_transaction_on_postgres() {
    run_many(Server::Postgres).await
}

#[tokio::test]
async fn run_many_is_one_transaction_on_mariadb() {
    run_many(Server::MariaDb).await
}

// ------------------------------------------------------------------------ typed values

async fn typed_values_round_trip(db: Server) {
    let apps = Apps::new(db, None);
    apps.setup().await;
    let host = apps.open().await;
    let naive = snakepit::DateTime::parse_iso("2026-05-01T12:30:45.123456").unwrap();
    let aware = snakepit::DateTime::parse_iso("2026-05-01T12:30:45.123456+02:00").unwrap();
    let day = snakepit_proto::parse_date("2026-05-31").unwrap();
    let values = Value::map([
        ("i", Value::Int(-9_007_199_254_740_993)),
        ("f", Value::Float(1.5)),
        ("s", s("héllo")),
        ("b", Value::Bytes(vec![0, 255, 1])),
        ("d", Value::Decimal("12.500".into())),
        ("dt", Value::DateTime(naive)),
        ("dtz", Value::DateTime(aware)),
        ("day", Value::Date(day)),
        ("flag", Value::Bool(true)),
        ("n", Value::Nil),
    ]);
    let got = call(&host, "typed:roundtrip", vec![("values", values)])
        .await
        .unwrap();
    assert_eq!(
        got.get("written"),
        Some(&Value::map([("rows_affected", Value::Int(1))]))
    );
    let Some(Value::List(rows)) = got.get("rows") else {
        panic!("{got}")
    };
    let row = &rows[0];
    // SQLite keeps the offset as written; PostgreSQL and MariaDB keep the instant (UTC).
    let dtz = match db {
        Server::Sqlite => aware,
        _ => snakepit::DateTime {
            micros: aware.micros,
            offset: Some(0),
        },
    };
    // SQLite stores a NUMERIC as a number: 12.500 comes back as 12.5.
    let d = if db == Server::Sqlite {
        "12.5"
    } else {
        "12.500"
    };
    let want = Value::map([
        ("i", Value::Int(-9_007_199_254_740_993)),
        ("f", Value::Float(1.5)),
        ("s", s("héllo")),
        ("b", Value::Bytes(vec![0, 255, 1])),
        ("d", Value::Decimal(d.into())),
        ("dt", Value::DateTime(naive)),
        ("dtz", Value::DateTime(dtz)),
        ("day", Value::Date(day)),
        ("flag", Value::Bool(true)),
        ("n", Value::Nil),
    ]);
    assert_eq!(row, &want, "{db:?}");
    host.shutdown(Duration::from_secs(2)).await;
    apps.teardown().await;
}

/// Issue 15: `${date.yesterday}` and `${month.previous}` as a job step renders them,
/// into a DATE column, with no conversion in the plugin.
async fn date_templates_bind_to_date_columns(db: Server) {
    let apps = Apps::new(db, None);
    apps.setup().await;
    let host = apps.open().await;
    let when = chrono::TimeZone::with_ymd_and_hms(&chrono_tz::UTC, 2026, 5, 1, 2, 0, 0).unwrap();
    let params = Map::new();
    let templates = snakepit_jobs::TemplateContext {
        scheduled_for: when,
        job: "j",
        run_id: "r",
        params: &params,
    };
    let day = |iso: &str| Value::Date(snakepit_proto::parse_date(iso).unwrap());
    let yesterday = templates.render(&s("${date.yesterday}"));
    assert_eq!(yesterday, day("2026-04-30"));
    let got = call(&host, "typed:put_day", vec![("day", yesterday)])
        .await
        .unwrap();
    assert_eq!(got.get("given"), Some(&s("date")), "{db:?}: {got}");
    let month = templates.render(&s("${month.previous}"));
    assert_eq!(month, s("2026-04"));
    let got = call(&host, "typed:put_month", vec![("day", month)])
        .await
        .unwrap();
    assert_eq!(got.get("given"), Some(&s("date")), "{db:?}: {got}");
    let rows = Value::List(vec![
        Value::map([("day", day("2026-04-01"))]),
        Value::map([("day", day("2026-04-30"))]),
    ]);
    assert_eq!(got.get("rows"), Some(&rows), "{db:?}");
    host.shutdown(Duration::from_secs(2)).await;
    apps.teardown().await;
}

#[tokio::test]
async fn date_templates_bind_to_date_columns_on_sqlite() {
    date_templates_bind_to_date_columns(Server::Sqlite).await
}

#[tokio::test]
async fn date_templates_bind_to_date_columns_on_postgres() {
    date_templates_bind_to_date_columns(Server::Postgres).await
}

#[tokio::test]
async fn date_templates_bind_to_date_columns_on_mariadb() {
    date_templates_bind_to_date_columns(Server::MariaDb).await
}

#[tokio::test]
async fn typed_values_round_trip_on_sqlite() {
    typed_values_round_trip(Server::Sqlite).await
}

#[tokio::test]
async fn typed_values_round_trip_on_postgres() {
    typed_values_round_trip(Server::Postgres).await
}

#[tokio::test]
async fn typed_values_round_trip_on_mariadb() {
    typed_values_round_trip(Server::MariaDb).await
}

// ------------------------------------------------- parameters, grants, hooks, audit

#[tokio::test]
async fn missing_and_extra_parameters_name_connector_and_query() {
    let apps = Apps::new(Server::Sqlite, None);
    apps.setup().await;
    let host = apps.open().await;
    let run = |query: &str, params: Value| {
        let kwargs = vec![("query", s(query)), ("params", params)];
        call(&host, "reports:run_query", kwargs)
    };
    let missing = run("two-params", Value::map([("period", s("2026-05"))]))
        .await
        .unwrap();
    assert_eq!(missing.get("type"), Some(&s("ConnectorError")));
    assert_eq!(
        missing.get("message"),
        Some(&s("connector \"billing\", query \"two-params\": missing parameter :customer (it takes :period, :customer)"))
    );
    let extra = run(
        "drafts-for-period",
        Value::map([("period", s("2026-05")), ("perid", s("x"))]),
    )
    .await
    .unwrap();
    assert_eq!(
        extra.get("message"),
        Some(&s("connector \"billing\", query \"drafts-for-period\": unexpected parameter :perid (it takes :period)"))
    );
    let unknown = run("drafts", Value::map(Vec::<(String, Value)>::new()))
        .await
        .unwrap();
    let msg = unknown.get("message").and_then(Value::as_str).unwrap();
    assert!(
        msg.contains("connector \"billing\" has no query \"drafts\" (it has: ")
            && msg.contains("[sql.billing.queries]"),
        "{msg}"
    );
    host.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn grants_deny_with_the_grant_to_add_and_are_audited() {
    let apps = Apps::new(Server::Sqlite, None);
    apps.setup().await;
    let host = apps.open().await;
    let (audit, sink) = records();
    host.install().connectors.set_audit_sink(sink);
    let denied = |r: Result<Value, CallError>| match r {
        Err(CallError::Raised(e)) if e.type_name == "PermissionError" => e.message,
        other => panic!("expected a PermissionError, got {other:?}"),
    };
    // reads are granted, writes are not ([plugins.reports] write = false)
    let rows = call(&host, "reports:read", vec![("period", s("2026-05"))])
        .await
        .unwrap();
    assert!(matches!(&rows, Value::List(r) if r.len() == 3), "{rows}");
    let m = denied(call(&host, "reports:write", vec![("id", Value::Int(1))]).await);
    assert_eq!(m, "package \"reports\" may not run write query \"issue-invoice:write\" of connector \"billing\": set write = true in [plugins.reports] in app.toml");
    let m = denied(call(&host, "reports:crm", vec![]).await);
    assert_eq!(m, "package \"reports\" may not use connector \"crm\": add \"crm\" to [plugins.reports] connectors in app.toml");
    let m = denied(call(&host, "reports:transaction", vec![]).await);
    assert_eq!(m, "package \"reports\" may not open transactions on \"billing\": add \"billing\" to [plugins.reports] raw_pools in app.toml");
    assert_eq!(apps.count("status = 'issued'").await, 1, "nothing written");
    let outcomes: Vec<(String, Outcome)> = audit
        .lock()
        .unwrap()
        .iter()
        .map(|r| (format!("{}/{}", r.connector, r.target), r.outcome))
        .collect();
    assert_eq!(
        outcomes,
        [
            ("billing/drafts-for-period".to_owned(), Outcome::Ok),
            ("billing/issue-invoice:write".to_owned(), Outcome::Denied),
            ("crm/get-customer".to_owned(), Outcome::Denied),
            ("billing/transaction".to_owned(), Outcome::Denied),
        ]
    );
    host.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn a_before_query_hook_vetoes_without_deadlocking_a_one_worker_pool() {
    // The pool has one worker, busy with the call that makes the query: the hook runs in
    // a pool of its own.
    let apps = Apps::new(Server::Sqlite, None);
    apps.setup().await;
    let host = apps.open().await;
    let (audit, sink) = records();
    host.install().connectors.set_audit_sink(sink);
    let r = tokio::time::timeout(
        Duration::from_secs(30),
        call(&host, "reports:forbidden", vec![]),
    )
    .await
    .expect("the hook does not deadlock the pool");
    match r {
        Err(CallError::Raised(e)) => {
            assert_eq!(e.type_name, "PermissionError");
            assert_eq!(
                e.message,
                "connector.before_query hook gate:before_query vetoed query \"forbidden-report\" of connector \"billing\": reports may not run forbidden-report on billing: closed for audit"
            );
        }
        other => panic!("expected a veto, got {other:?}"),
    }
    let last = audit.lock().unwrap().last().cloned().unwrap();
    assert_eq!(
        (last.target.as_str(), last.outcome),
        ("forbidden-report", Outcome::Vetoed)
    );
    // and the other queries pass the hook
    let rows = call(&host, "reports:read", vec![("period", s("2026-04"))])
        .await
        .unwrap();
    assert!(matches!(&rows, Value::List(r) if r.len() == 1), "{rows}");
    host.shutdown(Duration::from_secs(2)).await;
}

// ------------------------------------------------------------------------ transactions

async fn transactions(db: Server) {
    let apps = Apps::new(db, None);
    apps.setup().await;
    let host = apps.open().await;
    let (audit, sink) = records();
    let connectors = host.install().connectors.clone();
    connectors.set_audit_sink(sink);
    let t = s(&apps.table);
    let args = |who: &str| vec![("table", t.clone()), ("customer", s(who))];

    let got = call(&host, "txs:commit", args("c1")).await.unwrap();
    assert_eq!(got.get("rowcount"), Some(&Value::Int(1)));
    let amounts = match db {
        Server::Sqlite => vec![Value::Decimal("1.25".into()), Value::Decimal("2.5".into())],
        _ => vec![Value::Decimal("1.25".into()), Value::Decimal("2.50".into())],
    };
    assert_eq!(got.get("amounts"), Some(&Value::List(amounts)));
    assert_eq!(apps.count("customer = 'c1'").await, 2);
    assert_eq!(
        call(&host, "txs:commit_async", args("c2")).await.unwrap(),
        Value::Int(1)
    );
    assert_eq!(apps.count("customer = 'c2'").await, 1);

    // An exception rolls back.
    let e = call(&host, "txs:fail", args("r1")).await.unwrap_err();
    assert!(
        matches!(&e, CallError::Raised(x) if x.type_name == "RuntimeError"),
        "{e:?}"
    );
    assert_eq!(apps.count("customer = 'r1'").await, 0);

    // A timeout rolls back (the call is cancelled; the supervisor drops the transaction).
    let kwargs: Map = args("r2")
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    let e = host
        .submit("txs:hang", |c| {
            c.kwargs(kwargs)
                .context(ctx())
                .timeout(Duration::from_millis(700))
        })
        .await
        .unwrap_err();
    assert!(matches!(e, CallError::Timeout { .. }), "{e:?}");
    wait_for(
        "the timed-out call's transaction to end",
        Duration::from_secs(10),
        || connectors.open_transactions() == 0,
    )
    .await;
    assert_eq!(apps.count("customer = 'r2'").await, 0);

    // A worker killed mid-transaction (sync and async) writes nothing.
    for (f, who) in [("txs:die", "r3"), ("txs:die_async", "r4")] {
        let e = call(&host, f, args(who)).await.unwrap_err();
        assert!(matches!(e, CallError::WorkerCrashed { .. }), "{f}: {e:?}");
        assert_eq!(connectors.open_transactions(), 0);
        assert_eq!(apps.count(&format!("customer = '{who}'")).await, 0, "{f}");
    }
    // The rolled-back transactions left no lock behind: the database takes writes.
    let got = call(&host, "txs:commit", args("c3")).await.unwrap();
    assert_eq!(got.get("rowcount"), Some(&Value::Int(1)));

    wait_for(
        "every transaction to be audited",
        Duration::from_secs(10),
        || audit.lock().unwrap().len() >= 7,
    )
    .await;
    let outcomes: Vec<(Outcome, Option<u64>)> = audit
        .lock()
        .unwrap()
        .iter()
        .map(|r| {
            assert_eq!(
                (r.connector.as_str(), r.target.as_str(), r.package.as_str()),
                ("billing", "transaction", "txs")
            );
            (r.outcome, r.rows)
        })
        .collect();
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| o.0 == Outcome::Committed)
            .count(),
        3,
        "{outcomes:?}"
    );
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| o.0 == Outcome::RolledBack)
            .count(),
        4,
        "{outcomes:?}"
    );
    host.shutdown(Duration::from_secs(2)).await;
    apps.teardown().await;
}

#[tokio::test]
async fn transactions_commit_and_roll_back_on_sqlite() {
    transactions(Server::Sqlite).await
}

#[tokio::test]
async fn transactions_commit_and_roll_back_on_postgres() {
    transactions(Server::Postgres).await
}

#[tokio::test]
async fn transactions_commit_and_roll_back_on_mariadb() {
    transactions(Server::MariaDb).await
}

// ---------------------------------------------------------------- identity (issue 12)

/// A pooled PostgreSQL connection whose server end went away (a restart, an idle
/// timeout, `pg_terminate_backend`) is found dead by the ping before it is handed out
/// again, and replaced: the next query works. Connections used within the last 500 ms
/// are not pinged (sqlx's default pings before every query: one more round trip each).
#[tokio::test]
async fn a_postgres_connection_killed_while_idle_is_replaced() {
    let apps = Apps::new(Server::Postgres, None);
    apps.setup().await;
    let name = unique("ping");
    let toml = std::fs::read_to_string(apps.path().join("connectors.toml")).unwrap();
    let toml = toml.replacen(
        &format!("url = \"{PG_URL}\""),
        &format!("url = \"{PG_URL}?application_name={name}\""),
        1,
    );
    std::fs::write(apps.path().join("connectors.toml"), toml).unwrap();
    let host = apps.open().await;
    let read = || call(&host, "reports:read", vec![("period", s("2026-05"))]);
    let Value::List(rows) = read().await.unwrap() else {
        panic!("rows")
    };
    assert_eq!(rows.len(), 3);
    let mut admin = sqlx::PgConnection::connect(PG_URL).await.unwrap();
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
    )
    .bind(&name)
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert!(
        !killed.is_empty() && killed.iter().all(|k| *k),
        "{killed:?}"
    );
    let until = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left: i64 =
            sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1")
                .bind(&name)
                .fetch_one(&mut admin)
                .await
                .unwrap();
        if left == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < until,
            "the backends did not end"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Idle past the window in which a connection is trusted without a ping.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let Value::List(rows) = read().await.unwrap() else {
        panic!("rows")
    };
    assert_eq!(rows.len(), 3, "the dead connection was replaced");
    host.shutdown(Duration::from_secs(2)).await;
    apps.teardown().await;
}

/// Whether the test itself can take an ACCESS EXCLUSIVE lock on `table` within 3 s:
/// false when a transaction snakepit holds for a plugin still has it.
async fn lock_is_free(table: &str) -> bool {
    let mut c = sqlx::PgConnection::connect(PG_URL)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {PG_URL} (is the server up?): {e}"));
    let mut tx = c.begin().await.unwrap();
    sqlx::raw_sql("SET LOCAL lock_timeout = '3s'")
        .execute(&mut *tx)
        .await
        .unwrap();
    let free = sqlx::raw_sql(&format!("LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"))
        .execute(&mut *tx)
        .await
        .is_ok();
    tx.rollback().await.unwrap();
    free
}

/// The finding of issue 12: a `tx.begin` with a forged call id opened a transaction that
/// outlived its call, holding an ACCESS EXCLUSIVE lock. Now the forged request is refused,
/// a transaction left open by its plugin ends with its call, a later call cannot use it,
/// and the audit names the true call, package and run.
#[tokio::test]
async fn a_transaction_cannot_outlive_its_call_whatever_id_the_worker_sends() {
    let apps = Apps::new(Server::Postgres, None);
    apps.setup().await;
    let host = apps.open().await;
    let (audit, sink) = records();
    let connectors = host.install().connectors.clone();
    connectors.set_audit_sink(sink);
    let table = s(&apps.table);
    let submit = |f: &'static str, kwargs: Map| {
        host.submit(f, |c| {
            c.kwargs(kwargs)
                .context(ctx())
                .run_id("run-12")
                .timeout(Duration::from_secs(20))
        })
    };

    let forged = vec![
        ("table".to_owned(), table.clone()),
        ("call_id".to_owned(), Value::Int(424_242)),
    ];
    let v = submit("txs:forged_lock", forged).await.unwrap();
    let v = v.decode().unwrap();
    let refused = v.get("refused").and_then(Value::as_str).unwrap_or("");
    assert!(refused.contains("names call 424242"), "{v:?}");
    assert_eq!(connectors.open_transactions(), 0);
    assert!(
        lock_is_free(&apps.table).await,
        "the forged transaction holds the lock"
    );

    let leaked = vec![("table".to_owned(), table.clone())];
    let call_id = submit("txs:leaked_lock", leaked.clone()).await.unwrap();
    let call_id = call_id.decode().unwrap().as_i64().unwrap() as u64;
    wait_for(
        "the leaked transaction to be rolled back",
        Duration::from_secs(10),
        || connectors.open_transactions() == 0,
    )
    .await;
    assert!(
        lock_is_free(&apps.table).await,
        "the call's lock outlived it"
    );
    // The next call names the old transaction: not its own.
    let v = submit("txs:reuse_held", leaked).await.unwrap();
    let v = v.decode().unwrap();
    assert_eq!(v.get("type"), Some(&s("ConnectorError")), "{v:?}");
    assert!(
        v.get("message")
            .and_then(Value::as_str)
            .is_some_and(|m| m.contains("is not open in this call")),
        "{v:?}"
    );

    wait_for("the transaction's audit", Duration::from_secs(10), || {
        !audit.lock().unwrap().is_empty()
    })
    .await;
    let records = audit.lock().unwrap().clone();
    assert_eq!(records.len(), 1, "{records:?}");
    let r = &records[0];
    assert_eq!(
        (
            r.package.as_str(),
            r.call_id,
            r.run_id.as_deref(),
            r.outcome
        ),
        ("txs", call_id, Some("run-12"), Outcome::RolledBack),
        "{r:?}"
    );
    host.shutdown(Duration::from_secs(2)).await;
    apps.teardown().await;
}

// ------------------------------------------------------------------------------ check

#[tokio::test]
async fn check_reports_a_sql_typo_with_connector_and_query() {
    for db in [Server::Sqlite, Server::Postgres, Server::MariaDb] {
        let apps = Apps::with(
            db,
            None,
            "\n[sql.ledger]\nurl = \"postgres://postgres:hunter2@127.0.0.1:1/test\"\n",
        );
        apps.setup().await;
        let toml = std::fs::read_to_string(apps.path().join("connectors.toml")).unwrap();
        let toml = toml.replace(
            "get-types = \"SELECT i,",
            "get-typos = \"SELEC i FROM nowhere\"\nget-types = \"SELECT i,",
        );
        std::fs::write(apps.path().join("connectors.toml"), toml).unwrap();
        let Err(HostError::Invalid(problems)) = Host::start_checked(apps.install()).await else {
            panic!("{db:?}: a typo must keep the install from opening")
        };
        let file = apps.path().join("connectors.toml");
        let found: Vec<(&Path, &str)> = problems
            .iter()
            .map(|p| (p.file.as_path(), p.entry.as_str()))
            .collect();
        assert_eq!(
            found,
            [
                (file.as_path(), "[sql.billing.queries] get-typos"),
                (file.as_path(), "[sql.ledger]")
            ],
            "{db:?}: {problems:?}"
        );
        assert!(
            problems[0].reason.to_lowercase().contains("syntax"),
            "{db:?}: {problems:?}"
        );
        let unreachable = &problems[1].reason;
        assert!(
            unreachable.starts_with("cannot connect to postgres://postgres:***@127.0.0.1:1/test: "),
            "{unreachable}"
        );
        assert!(!unreachable.contains("hunter2"));
        apps.teardown().await;
    }
}

#[test]
fn a_connectors_toml_error_names_file_line_and_entry() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("connectors.toml"),
        "[api.crm]\nbase_url = \"http://x\"\nheaders = { Authorization = \"Bearer ${SNAKEPIT_TEST_UNSET_TOKEN}\" }\n",
    )
    .unwrap();
    let e = Install::load(Some(dir.path()), Some(&python()))
        .unwrap_err()
        .to_string();
    assert!(
        e.ends_with("connectors.toml: line 3, column 29: [api.crm] headers.Authorization uses ${SNAKEPIT_TEST_UNSET_TOKEN}, which is not set in the supervisor's environment; set SNAKEPIT_TEST_UNSET_TOKEN before starting snakepit"),
        "{e}"
    );
    std::fs::write(dir.path().join("connectors.toml"), "").unwrap();
    std::fs::write(
        dir.path().join("app.toml"),
        "[plugins.billing]\nconnectors = [\"billing\"]\n",
    )
    .unwrap();
    let e = Install::load(Some(dir.path()), Some(&python()))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(
            "app.toml: [plugins.billing] connectors names \"billing\", which is no connector of"
        ),
        "{e}"
    );
}

// ---------------------------------------------------------------------------- the API

/// The HTTP server the API connector talks to: checks the bearer token and answers.
async fn crm_server(token: &'static str) -> SocketAddr {
    use axum::extract::{Json, Path as UrlPath, Query};
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::{get, post};
    use std::collections::BTreeMap;

    let authorized = move |h: &HeaderMap| {
        h.get("authorization").and_then(|v| v.to_str().ok()) == Some(&format!("Bearer {token}"))
    };
    let app = axum::Router::new()
        .route(
            "/api/customers/{id}",
            get(move |UrlPath(id): UrlPath<i64>, Query(q): Query<BTreeMap<String, String>>, h: HeaderMap| async move {
                if !authorized(&h) {
                    return (StatusCode::UNAUTHORIZED, Json(serde_json::json!({"error": "no token"})));
                }
                (StatusCode::OK, Json(serde_json::json!({"id": id, "name": "Ada", "query": q})))
            }),
        )
        .route(
            "/api/deals/{deal_id}/sync",
            post(|UrlPath(deal_id): UrlPath<String>, Json(body): Json<serde_json::Value>| async move {
                Json(serde_json::json!({"deal": deal_id, "got": body}))
            }),
        )
        .route(
            "/api/missing/{id}",
            get(|| async { (StatusCode::NOT_FOUND, Json(serde_json::json!({"error": "no such thing"}))) }),
        )
        .route(
            "/api/slow/{id}",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "late"
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

const CRM_TOKEN: &str = "tok-4f1c9e2a7b";

fn set_crm_token() {
    // The same value from every test that sets it: harmless to set concurrently.
    std::env::set_var("SNAKEPIT_TEST_CRM_TOKEN", CRM_TOKEN);
}

#[tokio::test]
async fn api_calls_fill_the_path_query_and_body_and_report_failures() {
    set_crm_token();
    let addr = crm_server(CRM_TOKEN).await;
    let apps = Apps::new(Server::Sqlite, Some(addr));
    apps.setup().await;
    let host = apps.open().await;
    let (audit, sink) = records();
    host.install().connectors.set_audit_sink(sink);

    let got = call(&host, "crmcalls:customer", vec![("id", Value::Int(42))])
        .await
        .unwrap();
    assert_eq!(
        got.to_json(),
        serde_json::json!({"id": 42, "name": "Ada", "query": {"expand": "orders"}})
    );
    let got = call(
        &host,
        "crmcalls:sync_deal",
        vec![
            ("deal_id", s("d 7/x")),
            ("amount", Value::Decimal("9.90".into())),
        ],
    )
    .await
    .unwrap();
    assert_eq!(
        got.to_json(),
        serde_json::json!({"deal": "d 7/x", "got": {"amount": "9.90"}})
    );

    let failed = call(&host, "crmcalls:failing", vec![("endpoint", s("missing"))])
        .await
        .unwrap();
    assert_eq!(failed.get("kind"), Some(&s("HTTPStatus")));
    assert_eq!(failed.get("status"), Some(&Value::Int(404)));
    assert_eq!(
        failed.get("body"),
        Some(&Value::map([("error", s("no such thing"))]))
    );

    let slow = call(&host, "crmcalls:failing", vec![("endpoint", s("slow"))])
        .await
        .unwrap();
    assert_eq!(slow.get("kind"), Some(&s("ConnectorError")));
    assert_eq!(
        slow.get("message"),
        Some(&s(
            "connector \"crm\", endpoint \"slow\": no answer within 500ms"
        ))
    );
    let outcomes: Vec<(String, Outcome)> = audit
        .lock()
        .unwrap()
        .iter()
        .map(|r| (r.target.clone(), r.outcome))
        .collect();
    assert_eq!(
        outcomes,
        [
            ("get-customer".to_owned(), Outcome::Ok),
            ("sync-deal".to_owned(), Outcome::Ok),
            ("missing".to_owned(), Outcome::HttpError(404)),
            ("slow".to_owned(), Outcome::Failed),
        ]
    );
    host.shutdown(Duration::from_secs(2)).await;
}

// ---------------------------------------------------------------------------- secrets

#[tokio::test]
async fn a_worker_never_sees_a_connector_secret() {
    set_crm_token();
    std::env::set_var("SNAKEPIT_TEST_PG_PASSWORD", "pg-pass-81d3");
    let addr = crm_server(CRM_TOKEN).await;
    let apps = Apps::with(
        Server::Sqlite,
        Some(addr),
        // trust authentication: the password is sent and ignored.
        "\n[sql.ledger]\nurl = \"postgres://postgres:${SNAKEPIT_TEST_PG_PASSWORD}@127.0.0.1:5432/test\"\n[sql.ledger.queries]\none = \"SELECT 1 AS one\"\n",
    );
    apps.setup().await;
    let app_toml = std::fs::read_to_string(apps.path().join("app.toml")).unwrap();
    std::fs::write(
        apps.path().join("app.toml"),
        app_toml.replace(
            "[plugins.spy]\nconnectors = [\"billing\", \"crm\"]",
            "[plugins.spy]\nconnectors = [\"billing\", \"crm\", \"ledger\"]",
        ),
    )
    .unwrap();
    let install = apps.install();
    for secret in ["pg-pass-81d3", CRM_TOKEN] {
        assert!(
            !format!("{install:?}").contains(secret),
            "Debug of the install"
        );
    }
    let host = Host::start_checked(install).await.unwrap();
    let env = call(&host, "spy:environment", vec![])
        .await
        .unwrap()
        .to_json()
        .to_string();
    let replies = call(&host, "spy:replies", vec![])
        .await
        .unwrap()
        .to_json()
        .to_string();
    for secret in ["pg-pass-81d3", CRM_TOKEN] {
        assert!(!env.contains(secret), "the environment of a worker: {env}");
        assert!(
            !replies.contains(secret),
            "the replies to a worker: {replies}"
        );
    }
    assert!(!env.contains("SNAKEPIT_TEST_"), "{env}");
    assert!(
        replies.contains("[{'one': 1}]"),
        "the ledger query ran with its password: {replies}"
    );
    assert!(
        replies.contains("'name': 'Ada'"),
        "the API call went with its token: {replies}"
    );
    host.shutdown(Duration::from_secs(2)).await;

    // And an app.toml that would pass the secret's variable to the workers is refused.
    std::fs::write(
        apps.path().join("app.toml"),
        "[isolation]\nenv = [\"PATH\", \"SNAKEPIT_TEST_CRM_TOKEN\"]\n",
    )
    .unwrap();
    let e = Install::load(Some(apps.path()), Some(&python()))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("[isolation] env passes SNAKEPIT_TEST_CRM_TOKEN to the workers"),
        "{e}"
    );
}
