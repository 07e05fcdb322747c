//! The plugin authors' kit: `snakepit init`, `snakepit test` (the fixtures against the
//! real connectors, every write rolled back), `snakepit shim --path`.
//!
//! `snakepit test` needs pytest in the worker interpreter: these tests use the venv that
//! scripts/test.sh makes (`target/pyvenv`), and fail without it when CI is set.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The venv's interpreter (with pytest), or None (and the test is skipped) outside CI.
fn python() -> Option<PathBuf> {
    let venv = repo().join("target/pyvenv/bin/python");
    let ok = Command::new(&venv)
        .args(["-c", "import pytest"])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Some(venv);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{} with pytest is missing: run scripts/test.sh",
        venv.display()
    );
    eprintln!(
        "skipped: no {} with pytest (scripts/test.sh makes it)",
        venv.display()
    );
    None
}

fn snakepit(cwd: &Path, python: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_snakepit"))
        .current_dir(cwd)
        .arg("--python")
        .arg(python)
        .args(args)
        .env_remove("LIBERTY_APPS_DIR")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn show(out: &Output) -> String {
    format!("{}\n{}", text(&out.stdout), text(&out.stderr))
}

#[test]
fn init_makes_an_install_that_check_run_and_test_pass_on() {
    let Some(python) = python() else { return };
    let root = tempfile::tempdir().unwrap();
    let out = snakepit(root.path(), &python, &["init", "demo"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let demo = root.path().join("demo");
    for f in [
        "app.toml",
        "connectors.toml",
        "billing.db",
        "plugins/billing/jobs.toml",
        "plugins/billing/tests/test_invoicing.py",
    ] {
        assert!(demo.join(f).is_file(), "{f}");
    }
    // Not over an install.
    let again = snakepit(root.path(), &python, &["init", "demo"]);
    assert_eq!(again.status.code(), Some(2));
    assert!(
        text(&again.stderr).contains("demo is not empty"),
        "{}",
        show(&again)
    );

    let check = snakepit(&demo, &python, &["check"]);
    assert_eq!(check.status.code(), Some(0), "{}", show(&check));

    let before = std::fs::read(demo.join("billing.db")).unwrap();
    let test = snakepit(&demo, &python, &["test"]);
    assert_eq!(test.status.code(), Some(0), "{}", show(&test));
    assert!(text(&test.stdout).contains("4 passed"), "{}", show(&test));
    assert_eq!(
        std::fs::read(demo.join("billing.db")).unwrap(),
        before,
        "the tests left billing.db as they found it"
    );

    let run = snakepit(&demo, &python, &["run", "reissue-monthly-drafts"]);
    assert_eq!(run.status.code(), Some(0), "{}", show(&run));
    let record: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(
        record["steps"][0]["result"],
        serde_json::json!({"rows_affected": 3})
    );
    assert_eq!(record["steps"][1]["result"]["issued_now"], 3);
}

/// The example install's billing tests (the framework page's MagicMock test, and the same
/// step against the real database) pass and leave the sample database as it was.
#[test]
fn the_example_plugin_tests_pass_and_leave_the_sample_database_as_it_was() {
    let Some(python) = python() else { return };
    let example = repo().join("examples/liberty-apps");
    let dir = tempfile::tempdir().unwrap();
    for f in ["app.toml", "connectors.toml"] {
        std::fs::copy(example.join(f), dir.path().join(f)).unwrap();
    }
    std::os::unix::fs::symlink(
        example.join("plugins").canonicalize().unwrap(),
        dir.path().join("plugins"),
    )
    .unwrap();
    // The sample database of scripts/demo.sh.
    let db = rusqlite::Connection::open(dir.path().join("billing.db")).unwrap();
    db.execute_batch(
        "CREATE TABLE invoices (id INTEGER PRIMARY KEY, customer TEXT NOT NULL, amount TEXT NOT NULL, period TEXT NOT NULL, status TEXT NOT NULL);
         INSERT INTO invoices (customer, amount, period, status) VALUES ('ACME', '120.00', '2026-05', 'draft'), ('Umbrella', '99.00', '2026-05', 'issued');",
    )
    .unwrap();
    drop(db);
    let before = std::fs::read(dir.path().join("billing.db")).unwrap();
    let apps = dir.path().to_str().unwrap();
    let out = snakepit(
        dir.path(),
        &python,
        &[
            "--apps",
            apps,
            "test",
            "billing",
            "--",
            "-p",
            "no:cacheprovider",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(text(&out.stdout).contains("2 passed"), "{}", show(&out));
    assert_eq!(
        std::fs::read(dir.path().join("billing.db")).unwrap(),
        before
    );

    // The framework page's command, plain pytest: the mocked test passes, the one that
    // needs `snakepit test` is skipped.
    let plain = Command::new(&python)
        .current_dir(dir.path())
        .args(["-m", "pytest", "-p", "no:cacheprovider", "plugins/billing"])
        .env("PYTHONPATH", "plugins")
        .env_remove("SNAKEPIT_TEST_SOCKET")
        .output()
        .unwrap();
    assert_eq!(plain.status.code(), Some(0), "{}", show(&plain));
    assert!(
        text(&plain.stdout).contains("1 passed, 1 skipped"),
        "{}",
        show(&plain)
    );
}

/// An install whose tests exercise the fixtures: the plugin's exception (its type, its
/// traceback), a bad reference, the package's grants, a plugin's own transaction, an
/// API connector pointed at the test's server, log records, and a test that sees
/// nothing of the one before. pytest's exit status is the command's.
#[test]
fn the_fixtures_reach_the_real_connectors_and_leave_nothing_behind() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let write = |name: &str, text: &str| {
        let path = p.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    write(
        "app.toml",
        "[plugins.shop]\nconnectors = [\"db\", \"crm\"]\nraw_pools = [\"db\"]\n[plugins.other]\nconnectors = [\"crm\"]\n",
    );
    write(
        "connectors.toml",
        r#"[sql.db]
url = "sqlite://shop.db?mode=rwc"
[sql.db.queries]
count = "SELECT count(*) AS n FROM items"
"add:write" = "INSERT INTO items (name) VALUES (:name)"
[api.crm]
base_url = "http://127.0.0.1:9/nowhere"
[api.crm.endpoints]
get = { method = "GET", path = "/customers/{id}" }
"#,
    );
    write("plugins/shop/__init__.py", "");
    write("plugins/other/__init__.py", "");
    write(
        "plugins/shop/steps.py",
        r#"import logging
log = logging.getLogger(__name__)

class OutOfStock(Exception):
    def __init__(self, item, left):
        super().__init__(f"{item}: {left} left")

def add(*, name, **ctx):
    log.warning("adding %s", name)
    ctx["connectors"].sql("db").run("add:write", name=name)
    return ctx["connectors"].sql("db").run("count")[0]["n"]

def sell(*, item, **ctx):
    raise OutOfStock(item, 0)

def restock(*, names, **ctx):
    with ctx["pools"].get("db").begin_sync() as conn:
        for n in names:
            conn.execute("INSERT INTO items (name) VALUES (:n)", n=n)
    return len(names)

def customer(*, id, **ctx):
    return ctx["connectors"].api("crm").call_sync("get", id=id)
"#,
    );
    write(
        "plugins/other/reads.py",
        "def count(**ctx):\n    return ctx['connectors'].sql('db').run('count')\n",
    );
    write("plugins/shop/tests/__init__.py", "");
    write(
        "plugins/shop/tests/test_fixtures.py",
        r#"import http.server, json, logging, threading
import pytest
from shop import steps
from snakepit_shim.testing import CallFailed, PluginError

def count(ctx):
    return ctx["connectors"].sql("db").run("count")[0]["n"]

def test_a_writes(plugin_ctx, snakepit_call, caplog):
    assert steps.add(name="a", **plugin_ctx) == 1
    with caplog.at_level(logging.WARNING):
        assert snakepit_call("shop.steps:add", name="b") == 2
    assert "adding b" in caplog.text
    assert steps.restock(names=["c", "d"], **plugin_ctx) == 2
    assert snakepit_call("shop.steps:restock", names=["e"]) == 1
    assert count(plugin_ctx) == 5

def test_b_sees_nothing_of_a(plugin_ctx):
    assert count(plugin_ctx) == 0

def test_the_plugins_exception(snakepit_call):
    with pytest.raises(steps.OutOfStock, match="tea: 0 left") as info:
        snakepit_call("shop.steps:sell", item="tea")
    assert isinstance(info.value, PluginError)
    assert info.value.type_name == "shop.steps.OutOfStock"
    assert 'in sell' in info.value.traceback
    with pytest.raises(CallFailed) as bad:
        snakepit_call("shop.steps:nope")
    assert bad.value.kind == "reference"

def test_grants_are_the_packages(snakepit_call):
    with pytest.raises(PermissionError, match="other"):
        snakepit_call("other.reads:count")

def test_an_api_connector_pointed_at_a_test_server(plugin_ctx, snakepit_api):
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps({"path": self.path}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)
        def log_message(self, *args):
            pass
    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    snakepit_api("crm", f"http://127.0.0.1:{server.server_port}/api")
    assert steps.customer(id=7, **plugin_ctx) == {"path": "/api/customers/7"}
    server.shutdown()

def test_a_failure_is_pytests(plugin_ctx):
    assert count(plugin_ctx) == 99
"#,
    );
    let db = rusqlite::Connection::open(p.join("shop.db")).unwrap();
    db.execute_batch("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT)")
        .unwrap();
    drop(db);
    let before = std::fs::read(p.join("shop.db")).unwrap();
    let out = snakepit(
        p,
        &python,
        &[
            "--apps",
            p.to_str().unwrap(),
            "test",
            "--",
            "-p",
            "no:cacheprovider",
        ],
    );
    let all = show(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(all.contains("1 failed, 5 passed"), "{all}");
    assert!(all.contains("assert 0 == 99"), "{all}");
    assert_eq!(std::fs::read(p.join("shop.db")).unwrap(), before);

    // A node id, and pytest's arguments after `--`.
    let node = p.join("plugins/shop/tests/test_fixtures.py::test_b_sees_nothing_of_a");
    let out = snakepit(
        p,
        &python,
        &[
            "--apps",
            p.to_str().unwrap(),
            "test",
            node.to_str().unwrap(),
            "--",
            "-q",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(text(&out.stdout).contains("1 passed"), "{}", show(&out));
}

#[test]
fn test_says_how_to_add_pytest_and_refuses_an_unknown_package() {
    let Some(python) = python() else { return };
    let root = tempfile::tempdir().unwrap();
    let init = snakepit(root.path(), &python, &["init", "demo"]);
    assert_eq!(init.status.code(), Some(0), "{}", show(&init));
    let demo = root.path().join("demo");
    // A venv without pytest (nor pip).
    let bare = root.path().join("bare");
    let made = Command::new(&python)
        .args(["-m", "venv", "--without-pip"])
        .arg(&bare)
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", show(&made));
    let out = snakepit(&demo, &bare.join("bin/python"), &["test"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = text(&out.stderr);
    assert!(
        err.contains("pytest is not installed") && err.contains("-m pip install pytest"),
        "{err}"
    );

    let out = snakepit(&demo, &python, &["test", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("(packages: billing)"),
        "{}",
        show(&out)
    );
}

/// `snakepit shim --path` is a directory the plugin API imports from, outside any
/// worker; its context types have the keys of the extension points, and what needs a
/// supervisor says how to get one.
#[test]
fn shim_path_gives_the_typed_plugin_api() {
    let out = Command::new(env!("CARGO_BIN_EXE_snakepit"))
        .args(["shim", "--path"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let dir = text(&out.stdout).trim().to_owned();
    assert!(
        Path::new(&dir).join("snakepit_shim/contexts.py").is_file(),
        "{dir}"
    );
    let probe = r#"
import json
import snakepit_shim as s
try:
    s.ConnectorRegistry().sql("billing").run("q")
except s.NotInWorker as e:
    err = str(e)
print(json.dumps({
    "job": list(s.JobStepContext.__annotations__),
    "password": list(s.PasswordContext.__annotations__),
    "before_query": list(s.BeforeQueryContext.__annotations__),
    "classes": [c.__name__ for c in (s.ConnectorRegistry, s.SqlConnector, s.ApiConnector, s.PoolRegistry, s.ConnectorError)],
    "error": err,
}))
"#;
    let python = snakepit_tests::python();
    let out = Command::new(python)
        .args(["-c", probe])
        .env("PYTHONPATH", &dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        got["job"],
        serde_json::json!(snakepit_host::JOB_STEP_CONTEXT)
    );
    assert_eq!(
        got["password"],
        serde_json::json!(snakepit_host::PASSWORD_CONTEXT)
    );
    assert_eq!(
        got["before_query"],
        serde_json::json!(["connector", "query", "package"])
    );
    assert!(
        got["error"].as_str().unwrap().contains("snakepit test"),
        "{got}"
    );
}

/// One transaction per SQL connector per test, on every backend: a test writes to a
/// SQLite, a PostgreSQL and a MariaDB connector, in the test process and through a
/// worker; the next test sees none of it, and neither do the servers afterwards.
#[test]
fn every_backend_is_rolled_back_after_each_test() {
    use sqlx::Connection;
    let Some(python) = python() else { return };
    let table = format!("kit_{}_{}", std::process::id(), nanos());
    const PG: &str = "postgres://postgres@127.0.0.1:5432/test";
    const MARIADB: &str = "mysql://root@127.0.0.1:3306/test";
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let exec = |sql: String| {
        rt.block_on(async {
            let mut pg = sqlx::PgConnection::connect(PG)
                .await
                .expect("PostgreSQL at 127.0.0.1:5432 (scripts/services.sh)");
            sqlx::raw_sql(&sql).execute(&mut pg).await.unwrap();
            let mut my = sqlx::MySqlConnection::connect(MARIADB)
                .await
                .expect("MariaDB at 127.0.0.1:3306 (scripts/services.sh)");
            sqlx::raw_sql(&sql).execute(&mut my).await.unwrap();
        })
    };
    exec(format!("CREATE TABLE {table} (name VARCHAR(20))"));
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let mut connectors = String::new();
    for (name, url) in [
        ("lite", "sqlite://lite.db?mode=rwc"),
        ("pg", PG),
        ("maria", MARIADB),
    ] {
        connectors.push_str(&format!(
            "[sql.{name}]\nurl = \"{url}\"\n[sql.{name}.queries]\ncount = \"SELECT count(*) AS n FROM {table}\"\n\"add:write\" = \"INSERT INTO {table} (name) VALUES (:name)\"\n"
        ));
    }
    std::fs::write(p.join("connectors.toml"), connectors).unwrap();
    std::fs::create_dir_all(p.join("plugins/multi/tests")).unwrap();
    std::fs::write(p.join("plugins/multi/__init__.py"), "").unwrap();
    std::fs::write(p.join("plugins/multi/tests/__init__.py"), "").unwrap();
    std::fs::write(
        p.join("plugins/multi/steps.py"),
        "def add(*, name, **ctx):\n    for c in ('lite', 'pg', 'maria'):\n        ctx['connectors'].sql(c).run('add:write', name=name)\n",
    )
    .unwrap();
    std::fs::write(
        p.join("plugins/multi/tests/test_multi.py"),
        r#"from multi.steps import add

def counts(ctx):
    return [ctx["connectors"].sql(c).run("count")[0]["n"] for c in ("lite", "pg", "maria")]

def test_writes_everywhere(plugin_ctx, snakepit_call):
    add(name="here", **plugin_ctx)
    snakepit_call("multi.steps:add", name="worker")
    assert counts(plugin_ctx) == [2, 2, 2]

def test_sees_nothing(plugin_ctx):
    assert counts(plugin_ctx) == [0, 0, 0]
"#,
    )
    .unwrap();
    let db = rusqlite::Connection::open(p.join("lite.db")).unwrap();
    db.execute_batch(&format!("CREATE TABLE {table} (name TEXT)"))
        .unwrap();
    drop(db);
    let out = snakepit(
        p,
        &python,
        &[
            "--apps",
            p.to_str().unwrap(),
            "test",
            "--",
            "-p",
            "no:cacheprovider",
        ],
    );
    let counts = rt.block_on(async {
        let q = format!("SELECT count(*) FROM {table}");
        let mut pg = sqlx::PgConnection::connect(PG).await.unwrap();
        let a: i64 = sqlx::query_scalar(&q).fetch_one(&mut pg).await.unwrap();
        let mut my = sqlx::MySqlConnection::connect(MARIADB).await.unwrap();
        let b: i64 = sqlx::query_scalar(&q).fetch_one(&mut my).await.unwrap();
        (a, b)
    });
    exec(format!("DROP TABLE {table}"));
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(text(&out.stdout).contains("2 passed"), "{}", show(&out));
    assert_eq!(counts, (0, 0));
    let lite = rusqlite::Connection::open(p.join("lite.db")).unwrap();
    let n: i64 = lite
        .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 0);
}

fn nanos() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
}
