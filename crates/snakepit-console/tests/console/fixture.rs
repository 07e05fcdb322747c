//! An install with jobs, connectors and misbehaving plugins, served by a console in
//! this process (host, run history, scheduler and console as `snakepit serve` wires
//! them).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use snakepit_console::{Console, ConsoleServer, Metrics};
use snakepit_host::control::ServeInfo;
use snakepit_host::{Host, HttpSettings, Install};
use snakepit_jobs::{AuditLog, JobSet, Scheduler, SystemClock};
use snakepit_state::State;
pub use snakepit_tests::{python, wait_until};

/// How long a test waits for something to happen.
pub const WAIT: Duration = Duration::from_secs(30);

pub const STEPS: &str = r#"
import logging, os, time
log = logging.getLogger(__name__)

def gated(*, gate: str, **ctx):
    log.info("before gate")
    deadline = time.time() + 60
    while not os.path.exists(gate):
        if time.time() > deadline:
            raise TimeoutError("the gate never opened")
        time.sleep(0.02)
    log.info("after gate")
    return {"gate": "opened"}

def quick(**ctx):
    log.info("quick step")
    return {"ok": True}

def query(**ctx):
    rows = ctx["connectors"].sql("data").run("one")
    return {"rows": len(rows)}

def queries(**ctx):
    data = ctx["connectors"].sql("data")
    for _ in range(3):
        data.run("one")
    try:
        ctx["connectors"].api("crm").call_sync("ping")
    except Exception as e:
        log.info("crm unreachable: %s", type(e).__name__)
    return {"queries": 3}

def crash(**ctx):
    # Past the shim's capture of sys.stderr: the worker's own stderr.
    os.write(2, b"crash-marker: going down\n")
    os._exit(3)
"#;

/// A param value that must never be shown.
pub const SECRET_PARAM: &str = "param-value-never-shown";
/// The password in a connector URL.
pub const SECRET_URL_PASSWORD: &str = "crm-secret-pw";

/// Writes the install into `dir`; the gated job waits for `dir/gate`.
pub fn write_install(dir: &Path) {
    let pkg = dir.join("plugins/demo");
    std::fs::create_dir_all(&pkg).unwrap();
    std::fs::write(pkg.join("__init__.py"), "").unwrap();
    std::fs::write(pkg.join("steps.py"), STEPS).unwrap();
    std::fs::write(
        dir.join("app.toml"),
        "[runtime]\nworkers = 2\nwatch = false\n",
    )
    .unwrap();
    let gate = dir.join("gate");
    std::fs::write(
        dir.join("jobs.toml"),
        format!(
            r#"
[[jobs]]
name = "gated"
params = {{ gate = {gate:?}, secret = "{SECRET_PARAM}" }}
[[jobs.steps]]
name = "wait"
type = "python"
callable = "demo.steps:gated"
kwargs = {{ gate = "${{params.gate}}" }}

[[jobs]]
name = "quick"
schedule = "0 2 1 * *"
params = {{ region = "eu" }}
[[jobs.steps]]
name = "one"
type = "python"
callable = "demo.steps:quick"

[[jobs]]
name = "query"
[[jobs.steps]]
name = "select"
type = "python"
callable = "demo.steps:query"

[[jobs]]
name = "queries"
[[jobs.steps]]
name = "select"
type = "python"
callable = "demo.steps:queries"
"#,
            gate = gate.display().to_string()
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("connectors.toml"),
        format!(
            r#"
[sql.data]
url = "sqlite://data.db?mode=rwc"
[sql.data.queries]
one = "SELECT 1 AS x"

[api.crm]
base_url = "http://crm-user:{SECRET_URL_PASSWORD}@127.0.0.1:9/api"
[api.crm.endpoints]
ping = {{ method = "GET", path = "/ping" }}
"#
        ),
    )
    .unwrap();
}

/// A console serving an install, as `snakepit serve --http` runs it.
pub struct Served {
    pub dir: tempfile::TempDir,
    pub host: Arc<Host>,
    pub state: State,
    pub console: Option<ConsoleServer>,
    pub url: String,
    scheduling: Option<snakepit_jobs::Scheduling>,
}

impl Served {
    /// Serves a new install on `addr` (port 0: any), with `token` when given.
    pub async fn start(addr: &str, token: Option<&str>) -> Served {
        let dir = tempfile::tempdir().unwrap();
        write_install(dir.path());
        let install = Install::load(Some(dir.path()), Some(&python())).unwrap();
        let jobs = JobSet::load(&install).unwrap();
        let state = State::open_for_apps(dir.path(), None).await.unwrap();
        let host = Arc::new(Host::start_checked(install).await.unwrap());
        let metrics = Metrics::new();
        metrics.watch_host(&host);
        let scheduler = Arc::new(
            Scheduler::new(host.clone(), state.clone(), Arc::new(SystemClock), jobs)
                .grace(Duration::from_secs(5))
                .observe(metrics.clone()),
        );
        let (audit_state, audit_metrics) = (state.clone(), metrics.clone());
        host.on_new_generation(move |install| {
            AuditLog::attach(&install.connectors, &audit_state);
            audit_metrics.count_connector_calls(&install.connectors);
        });
        let scheduling = scheduler.start();
        let info = ServeInfo {
            started: std::time::SystemTime::now(),
            watching: None,
            jobs: None,
            wake: None,
        };
        let settings = HttpSettings {
            addr: addr.parse().unwrap(),
            token: token.map(str::to_owned),
        };
        let console = Console {
            host: host.clone(),
            state: state.clone(),
            scheduler,
            info,
            metrics,
        }
        .serve(&settings)
        .await
        .unwrap();
        let url = format!("http://127.0.0.1:{}", console.addr().port());
        Served {
            dir,
            host,
            state,
            console: Some(console),
            url,
            scheduling: Some(scheduling),
        }
    }

    /// Opens the gate the `gated` job waits for.
    pub fn open_gate(&self) {
        std::fs::write(self.dir.path().join("gate"), "").unwrap();
    }

    /// Stops the scheduler (the console keeps serving): runs recorded by hand then
    /// stay as recorded, not claimed by it.
    pub async fn stop_scheduler(&mut self) {
        if let Some(s) = self.scheduling.take() {
            s.stop().await;
        }
    }

    pub async fn stop(mut self) {
        if let Some(c) = self.console.take() {
            c.stop().await;
        }
        if let Some(s) = self.scheduling.take() {
            s.stop().await;
        }
        self.host.shutdown(Duration::from_secs(5)).await;
        self.state.close().await;
    }
}
