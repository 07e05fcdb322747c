//! Hot restart (issue 7): under a steady load of calls, a pip upgrade or an edit under
//! `plugins/` brings in a new generation with no failed call; a broken one is refused
//! while the old generation serves; a long call in hand finishes; a burst of changes is
//! one reload. Plus the per-worker fields of `Pool::status`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use snakepit::{Call, CallError, Map, Value, WorkerState};
use snakepit_host::{Host, Install, Watcher};
use tokio::task::JoinHandle;

use crate::support::{builder, plugins_dir, python, wait_for, wait_gone};

/// The watcher's quiet period in these tests.
const QUIET: Duration = Duration::from_millis(200);
/// How long a test waits for a reload to take effect.
const RELOAD_WAIT: Duration = Duration::from_secs(30);

/// A temporary apps dir with `plugins/reloadable.py` (tests/plugins/fx/reload.py) and
/// this app.toml.
fn apps(app_toml: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("plugins")).unwrap();
    std::fs::copy(
        plugins_dir().join("fx/reload.py"),
        dir.path().join("plugins/reloadable.py"),
    )
    .unwrap();
    std::fs::write(dir.path().join("app.toml"), app_toml).unwrap();
    dir
}

const TWO_WORKERS: &str = "[runtime]\nworkers = 2\ncall_timeout = \"20s\"\n";

/// Rewrites `plugins/reloadable.py` with `edit` applied, in one rename (as editors do).
fn edit_module(dir: &Path, edit: impl FnOnce(String) -> String) {
    let file = dir.join("plugins/reloadable.py");
    let text = edit(std::fs::read_to_string(&file).unwrap());
    let tmp = dir.join("plugins/.reloadable.py.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, &file).unwrap();
}

fn bump(to: i64) -> impl FnOnce(String) -> String {
    move |text| text.replace("VERSION = 1", &format!("VERSION = {to}"))
}

async fn start(dir: &Path, python: &Path) -> Arc<Host> {
    let install = Install::load(Some(dir), Some(python)).unwrap();
    Arc::new(Host::start_checked(install).await.unwrap())
}

async fn value(host: &Host, reference: &str) -> Value {
    host.call(reference, Map::new(), Map::new())
        .await
        .unwrap_or_else(|e| panic!("{reference}: {e}"))
        .decode()
        .unwrap()
}

/// Waits until `reference` answers `want`.
async fn wait_value(host: &Host, reference: &str, want: Value) {
    let until = tokio::time::Instant::now() + RELOAD_WAIT;
    loop {
        if value(host, reference).await == want {
            // A few more calls, for the callers of a load to make theirs meanwhile.
            for _ in 0..20 {
                assert_eq!(value(host, reference).await, want);
            }
            return;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "{reference} never answered {want:?}; status: {:#?}",
            host.status()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The outcome of one call, and the generation that served when it was made.
type Outcome = (u64, Result<Value, CallError>);

/// Several callers calling `reference` back to back until stopped; each keeps the
/// outcomes of its calls in order. `stop_at` is 0 while they run; `finish` sets it to a
/// generation, and each caller stops once it made a call on that generation (or after a
/// deadline, which the checks then report).
struct Load {
    stop_at: Arc<AtomicU64>,
    callers: Vec<JoinHandle<Vec<Outcome>>>,
}

impl Load {
    fn start(host: &Arc<Host>, reference: &'static str, callers: usize) -> Load {
        let stop_at = Arc::new(AtomicU64::new(0));
        let callers = (0..callers)
            .map(|_| {
                let (host, stop_at) = (host.clone(), stop_at.clone());
                tokio::spawn(async move {
                    let mut outcomes: Vec<Outcome> = Vec::new();
                    let mut stopping_since = None;
                    loop {
                        let target = stop_at.load(Ordering::Relaxed);
                        if target != 0 {
                            let since = *stopping_since.get_or_insert_with(Instant::now);
                            let done = outcomes.last().is_some_and(|(g, _)| *g >= target);
                            if done || since.elapsed() > Duration::from_secs(30) {
                                break;
                            }
                        }
                        let generation = host.generation();
                        let r = host.call(reference, Map::new(), Map::new()).await;
                        outcomes.push((generation, r.map(|v| v.decode().unwrap())));
                        // A steady load, not a flood: the new generation needs CPU to start.
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    outcomes
                })
            })
            .collect();
        Load { stop_at, callers }
    }

    /// Stops the callers; checks that no call failed, and that every call made once
    /// generation `new_generation` served got `new`. (A worker of the old generation
    /// that imports the module for the first time after the change runs the new code.)
    /// Returns how many calls were made.
    async fn finish(self, new_generation: u64, new: Value) -> usize {
        self.stop_at.store(new_generation, Ordering::Relaxed);
        let mut calls = 0;
        for caller in self.callers {
            let outcomes = caller.await.unwrap();
            calls += outcomes.len();
            let failed: Vec<_> = outcomes
                .iter()
                .filter_map(|(_, r)| r.as_ref().err())
                .collect();
            assert!(
                failed.is_empty(),
                "calls failed during the reload: {failed:?}"
            );
            let after: Vec<&Value> = outcomes
                .iter()
                .filter(|(g, _)| *g >= new_generation)
                .map(|(_, r)| r.as_ref().unwrap())
                .collect();
            assert!(!after.is_empty(), "a caller made no call after the reload");
            assert!(
                after.iter().all(|v| **v == new),
                "an old answer after the reload: {outcomes:?}"
            );
        }
        calls
    }
}

#[tokio::test]
async fn an_edited_plugin_takes_over_under_load_with_no_failed_call() {
    let dir = apps(TWO_WORKERS);
    let host = start(dir.path(), &python()).await;
    let _watcher = Watcher::start(host.clone(), QUIET).await.unwrap();
    let load = Load::start(&host, "reloadable:version", 4);
    wait_value(&host, "reloadable:version", Value::Int(1)).await;
    edit_module(dir.path(), bump(2));
    wait_value(&host, "reloadable:version", Value::Int(2)).await;
    let calls = load.finish(2, Value::Int(2)).await;
    assert!(calls > 20, "{calls} calls");
    let status = host.status();
    assert_eq!(status.generation, 2, "{status:#?}");
    let last = status.last_reload.unwrap();
    assert!(last.serving && last.problems.is_empty(), "{last:?}");
    assert_eq!(last.trigger, "plugins/reloadable.py changed");
    host.shutdown(Duration::from_secs(5)).await;
}

/// A wheel of `acme_plugin` at `version`, written with the standard library; `body` is
/// its `__init__.py`.
fn wheel(dir: &Path, version: &str, body: &str) -> PathBuf {
    const MAKE_WHEEL: &str = r#"
import sys, zipfile
path, version, body = sys.argv[1:4]
info = f"acme_plugin-{version}.dist-info"
files = {
    "acme_plugin/__init__.py": body,
    f"{info}/METADATA": f"Metadata-Version: 2.1\nName: acme-plugin\nVersion: {version}\n",
    f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: snakepit-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
}
with zipfile.ZipFile(path, "w") as z:
    for name, text in files.items():
        z.writestr(name, text)
    z.writestr(f"{info}/RECORD", "".join(f"{n},,\n" for n in files) + f"{info}/RECORD,,\n")
"#;
    let path = dir.join(format!("acme_plugin-{version}-py3-none-any.whl"));
    run(Command::new("python3")
        .args(["-c", MAKE_WHEEL])
        .arg(&path)
        .args([version, body]));
    path
}

fn run(c: &mut Command) {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{c:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `<apps>/.venv` (without pip of its own: the system's pip installs into it).
fn venv(apps: &Path) -> PathBuf {
    run(Command::new("python3")
        .args(["-m", "venv", "--without-pip"])
        .arg(apps.join(".venv")));
    apps.join(".venv/bin/python")
}

/// `pip install` into the venv of `python`, without blocking the callers meanwhile.
async fn pip_install(python: &Path, wheel: &Path) {
    let out = tokio::process::Command::new("python3")
        .args(["-m", "pip", "--python"])
        .arg(python)
        .args(["install", "-q", "--no-index", "--disable-pip-version-check"])
        .arg(wheel)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "pip install {}: {}",
        wheel.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn acme(version: &str) -> String {
    format!("VERSION = {version:?}\n\ndef version(**ctx):\n    return VERSION\n")
}

#[tokio::test]
async fn a_pip_upgrade_takes_over_under_load_and_a_broken_one_is_refused() {
    let dir = apps(&format!(
        "{TWO_WORKERS}\n[hooks]\n\"screen.before_save\" = [\"acme_plugin:version\"]\n"
    ));
    let python = venv(dir.path());
    pip_install(&python, &wheel(dir.path(), "1.0", &acme("1.0"))).await;
    let host = start(dir.path(), &python).await;
    let _watcher = Watcher::start(host.clone(), QUIET).await.unwrap();
    let load = Load::start(&host, "acme_plugin:version", 4);
    wait_value(&host, "acme_plugin:version", "1.0".into()).await;
    pip_install(&python, &wheel(dir.path(), "2.0", &acme("2.0"))).await;
    wait_value(&host, "acme_plugin:version", "2.0".into()).await;
    load.finish(2, "2.0".into()).await;
    let last = host.status().last_reload.unwrap();
    assert!(last.trigger.contains(".dist-info"), "{last:?}");

    // 3.0 does not import: refused, and 2.0 keeps serving.
    let generation = host.generation();
    let broken = "raise ImportError('acme 3.0 is broken')\n";
    pip_install(&python, &wheel(dir.path(), "3.0", broken)).await;
    wait_for("the broken upgrade to be refused", RELOAD_WAIT, || {
        host.status()
            .last_reload
            .is_some_and(|r| !r.serving && r.trigger.contains("acme_plugin-3.0.dist-info"))
    })
    .await;
    assert_eq!(host.generation(), generation);
    assert_eq!(value(&host, "acme_plugin:version").await, "2.0".into());
    let last = host.status().last_reload.unwrap();
    let p = &last.problems[0];
    assert_eq!(p.file, dir.path().join("app.toml"));
    assert_eq!(p.entry, "[hooks] \"screen.before_save\"[0]");
    assert!(p.reason.contains("acme 3.0 is broken"), "{p:?}");
    assert_eq!(host.status().failed_reloads, 1);
    host.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_removed_function_still_named_by_app_toml_or_jobs_toml_is_refused() {
    let dir = apps(&format!(
        "{TWO_WORKERS}\n[hooks]\n\"screen.before_save\" = [\"reloadable:hook\"]\n"
    ));
    std::fs::write(
        dir.path().join("jobs.toml"),
        "[[jobs]]\nname = \"nightly\"\nschedule = \"0 3 * * *\"\n\n[[jobs.steps]]\nname = \"only\"\ntype = \"python\"\ncallable = \"reloadable:step\"\n",
    )
    .unwrap();
    let host = start(dir.path(), &python()).await;
    edit_module(dir.path(), |text| {
        bump(2)(text)
            .replace("def hook(", "def renamed_hook(")
            .replace("def step(", "def renamed_step(")
    });
    let problems = host.reload("test").await.unwrap_err();
    let entries: Vec<(&Path, &str)> = problems
        .iter()
        .map(|p| (p.file.as_path(), p.entry.as_str()))
        .collect();
    assert_eq!(
        entries,
        [
            (
                dir.path().join("app.toml").as_path(),
                "[hooks] \"screen.before_save\"[0]"
            ),
            (
                dir.path().join("jobs.toml").as_path(),
                "[[jobs]] \"nightly\" step \"only\""
            ),
        ],
        "{problems:#?}"
    );
    assert!(problems[0].reason.contains("hook"), "{problems:?}");
    // The first generation serves on, with its code.
    assert_eq!(host.generation(), 1);
    assert_eq!(value(&host, "reloadable:version").await, Value::Int(1));
    let status = host.status();
    assert_eq!(status.last_reload.unwrap().problems, problems);
    assert!(status.retiring.is_empty());
    // Fixed: the next reload serves.
    edit_module(dir.path(), |text| {
        text.replace("def renamed_hook(", "def hook(")
            .replace("def renamed_step(", "def step(")
    });
    assert_eq!(host.reload("test").await, Ok(3));
    assert_eq!(value(&host, "reloadable:version").await, Value::Int(2));
    host.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_long_call_in_hand_finishes_on_the_old_generation() {
    let dir = apps(TWO_WORKERS);
    let host = start(dir.path(), &python()).await;
    let release = dir.path().join("release");
    let slow = {
        let host = host.clone();
        let release = release.to_str().unwrap().to_owned();
        tokio::spawn(async move {
            // Held until the test has seen both generations (a timed sleep could end
            // before a slow reload on a loaded machine).
            host.submit("reloadable:held", |c| c.kwarg("release", release))
                .await
                .map(|v| v.decode().unwrap())
        })
    };
    // Its worker has imported the module: a worker that is merely busy may import it
    // after the edit below, and so run the new code.
    let started = dir.path().join("release.started");
    wait_for("the slow call to run", RELOAD_WAIT, || started.exists()).await;
    let old_pids: Vec<u32> = host.status().pools[0]
        .slots
        .iter()
        .filter_map(|w| w.pid)
        .collect();
    edit_module(dir.path(), bump(2));
    assert_eq!(host.reload("test").await, Ok(2));
    // New calls go to the new generation while the old one finishes the slow call.
    assert_eq!(value(&host, "reloadable:version").await, Value::Int(2));
    let status = host.status();
    assert_eq!(status.retiring.len(), 1, "{status:#?}");
    assert_eq!(status.retiring[0].generation, 1);
    std::fs::write(&release, "").unwrap();
    assert_eq!(slow.await.unwrap().unwrap(), Value::Int(1));
    for pid in old_pids {
        wait_gone("a worker of the retired generation", pid, RELOAD_WAIT).await;
    }
    wait_for("the old generation to retire", RELOAD_WAIT, || {
        host.status().retiring.is_empty()
    })
    .await;
    host.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_burst_of_changes_is_one_reload() {
    let dir = apps(TWO_WORKERS);
    let host = start(dir.path(), &python()).await;
    let _watcher = Watcher::start(host.clone(), QUIET).await.unwrap();
    for i in 0..20 {
        std::fs::write(dir.path().join(format!("plugins/extra_{i}.py")), "X = 1\n").unwrap();
    }
    edit_module(dir.path(), bump(2));
    wait_for("a reload", RELOAD_WAIT, || host.status().reloads == 1).await;
    // Nothing else is coming: a few quiet periods pass without another reload.
    tokio::time::sleep(QUIET * 4).await;
    let status = host.status();
    assert_eq!(
        (status.reloads, status.failed_reloads),
        (1, 0),
        "{status:#?}"
    );
    let trigger = status.last_reload.unwrap().trigger;
    assert!(trigger.ends_with("and 20 other files changed"), "{trigger}");
    assert_eq!(value(&host, "reloadable:version").await, Value::Int(2));
    host.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn pool_status_reports_each_worker() {
    let pool = builder().workers(2).build().await.unwrap();
    pool.submit(Call::new("fx.basic:ping")).await.unwrap();
    let slow = {
        let pool = pool.clone();
        tokio::spawn(async move {
            pool.submit(Call::new("fx.hostile:sleep").kwarg("seconds", 1.0))
                .await
        })
    };
    wait_for("a busy worker", Duration::from_secs(10), || {
        pool.status()
            .slots
            .iter()
            .any(|w| w.state == WorkerState::Busy)
    })
    .await;
    let status = pool.status();
    assert_eq!(status.slots.len(), 2);
    let states: Vec<WorkerState> = status.slots.iter().map(|w| w.state).collect();
    assert!(
        states.contains(&WorkerState::Busy) && states.contains(&WorkerState::Idle),
        "{status:#?}"
    );
    for w in &status.slots {
        assert!(w.pid.is_some() && w.rss.unwrap() > 1 << 20, "{w:?}");
        assert!(w.uptime.is_some() && w.restarts == 0, "{w:?}");
    }
    assert_eq!(
        status.slots.iter().map(|w| w.calls).sum::<u64>(),
        1,
        "the ping is counted: {status:#?}"
    );
    slow.await.unwrap().unwrap();
    pool.shutdown(Duration::from_secs(2)).await;
    let status = pool.status();
    assert!(
        status
            .slots
            .iter()
            .all(|w| w.state == WorkerState::Stopped && w.pid.is_none()),
        "{status:#?}"
    );
}

#[tokio::test]
async fn shutting_the_host_down_brings_a_retiring_generation_deadline_forward() {
    let dir = apps(TWO_WORKERS);
    let host = start(dir.path(), &python()).await;
    let slow = {
        let host = host.clone();
        tokio::spawn(async move {
            host.submit("reloadable:slow", |c| c.kwarg("seconds", 60.0))
                .await
        })
    };
    wait_for("the slow call to be in hand", RELOAD_WAIT, || {
        host.status().pools[0]
            .slots
            .iter()
            .any(|w| w.state == "busy")
    })
    .await;
    assert_eq!(host.reload("test").await, Ok(2));
    assert_eq!(host.status().retiring.len(), 1);
    // The retiring generation would wait for the 60 s call; the host's deadline wins.
    let began = std::time::Instant::now();
    host.shutdown(Duration::from_millis(500)).await;
    assert!(
        began.elapsed() < Duration::from_secs(10),
        "{:?}",
        began.elapsed()
    );
    let ended = slow.await.unwrap();
    assert!(matches!(ended, Err(CallError::ShutDown)), "{ended:?}");
    assert!(
        host.reload("after").await.is_err(),
        "no reload after shutdown"
    );
}

#[tokio::test]
async fn a_second_pool_shutdown_brings_the_deadline_forward_and_waits() {
    let pool = builder().workers(1).build().await.unwrap();
    let slow = {
        let pool = pool.clone();
        tokio::spawn(async move {
            pool.submit(Call::new("fx.hostile:sleep").kwarg("seconds", 60.0))
                .await
        })
    };
    wait_for(
        "the slow call to be in hand",
        Duration::from_secs(10),
        || pool.status().slots[0].state == WorkerState::Busy,
    )
    .await;
    let first = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.shutdown(Duration::from_secs(60)).await })
    };
    wait_for("new calls to be refused", Duration::from_secs(10), || {
        refuses_new_calls(&pool)
    })
    .await;
    let began = std::time::Instant::now();
    pool.shutdown(Duration::from_millis(300)).await;
    assert!(
        began.elapsed() < Duration::from_secs(10),
        "{:?}",
        began.elapsed()
    );
    first.await.unwrap();
    assert!(slow.await.unwrap().is_err());
    assert_eq!(pool.status().slots[0].state, WorkerState::Stopped);
}

/// Whether the pool refuses a new call at its first poll (it is shutting down). A call
/// that is not refused waits for the busy worker and is dropped (cancelled) here.
fn refuses_new_calls(pool: &snakepit::Pool) -> bool {
    use std::future::Future;
    let mut call = std::pin::pin!(pool.submit(Call::new("fx.basic:ping")));
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    matches!(
        call.as_mut().poll(&mut cx),
        std::task::Poll::Ready(Err(CallError::ShutDown))
    )
}
