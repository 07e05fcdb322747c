//! The life of workers and pools: recycling, cancellation by drop, back-pressure,
//! graceful shutdown, start-up failures and back-off, and a supervisor killed with
//! SIGKILL.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use snakepit::{
    BuildError, Call, CallError, EventKind, Pool, PoolBuilder, RetireReason, SpawnError,
};

use crate::support::{
    both_launchers, builder, expect_retired, next_event, processes_with, read_file_when_there,
    read_pid_file, unique_name, wait_for, wait_gone, wait_no_processes_with, worker_pid,
    ChildGuard, KillOnDrop, EVENT_WAIT,
};

#[tokio::test]
async fn worker_is_recycled_after_max_calls() {
    let pool = builder()
        .max_calls_per_worker(3)
        .max_calls_jitter(0)
        .build()
        .await
        .unwrap();
    let mut events = pool.events();
    let first = worker_pid(&pool).await;
    assert_eq!(worker_pid(&pool).await, first);
    assert_eq!(
        worker_pid(&pool).await,
        first,
        "the third call on the same worker"
    );
    expect_retired(&mut events, first, RetireReason::MaxCalls).await;
    let second = worker_pid(&pool).await;
    assert_ne!(second, first, "the fourth call on a new worker");
    assert_eq!(worker_pid(&pool).await, second);
    assert_eq!(worker_pid(&pool).await, second);
    assert_ne!(
        worker_pid(&pool).await,
        second,
        "and the seventh on a third"
    );
}

both_launchers!(dropping_the_future_cancels_the_call_in_the_worker);

async fn dropping_the_future_cancels_the_call_in_the_worker(b: PoolBuilder) {
    let dir = tempfile::tempdir().unwrap();
    let (started, cleanup) = (dir.path().join("started"), dir.path().join("cleanup"));
    // A long grace: a worker that ignored the cancel would be killed only after 5 s and
    // the next call would come from a new pid.
    let pool = b.kill_grace(Duration::from_secs(5)).build().await.unwrap();
    let mut events = pool.events();
    let before = worker_pid(&pool).await;
    let call = pool.submit(
        Call::new("fx.hostile:sleep")
            .kwarg("seconds", 60.0)
            .kwarg("started", started.to_str().unwrap())
            .kwarg("cleanup", cleanup.to_str().unwrap()),
    );
    // Drive the call until the plugin runs, then drop the future.
    tokio::select! {
        r = call => panic!("the call should still be running: {r:?}"),
        _ = wait_for("the plugin to start", EVENT_WAIT, || started.exists()) => {}
    }
    let t0 = Instant::now();
    assert_eq!(
        worker_pid(&pool).await,
        before,
        "the same worker serves the next call"
    );
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "promptly: {:?}",
        t0.elapsed()
    );
    assert_eq!(
        read_file_when_there(&cleanup, Duration::from_secs(2)).await,
        "cleaned up",
        "the plugin's finally: ran"
    );
    while let Ok(ev) = events.try_recv() {
        assert!(
            !matches!(
                ev.kind,
                EventKind::Retired { .. } | EventKind::Exited { .. }
            ),
            "{ev:?}"
        );
    }
}

#[tokio::test]
async fn a_full_queue_answers_overloaded() {
    let dir = tempfile::tempdir().unwrap();
    let (started, release) = (dir.path().join("started"), dir.path().join("release"));
    let pool = builder().queue_limit(1).build().await.unwrap();
    let busy = tokio::spawn({
        let pool = pool.clone();
        let call = Call::new("fx.hostile:wait_for_file")
            .kwarg("path", release.to_str().unwrap())
            .kwarg("started", started.to_str().unwrap());
        async move { pool.submit(call).await }
    });
    wait_for("the worker to be busy", EVENT_WAIT, || started.exists()).await;
    let queued = tokio::spawn({
        let pool = pool.clone();
        async move { pool.submit(Call::new("fx.basic:pid")).await }
    });
    wait_for("a call in the queue", EVENT_WAIT, || {
        pool.status().queued == 1
    })
    .await;
    for _ in 0..3 {
        let err = pool.submit(Call::new("fx.basic:pid")).await.unwrap_err();
        assert!(matches!(err, CallError::Overloaded(1)), "{err:?}");
    }
    std::fs::write(&release, b"").unwrap();
    busy.await.unwrap().unwrap();
    queued.await.unwrap().unwrap();
    worker_pid(&pool).await;
}

#[tokio::test]
async fn graceful_shutdown_finishes_calls_in_hand_and_refuses_new_ones() {
    let dir = tempfile::tempdir().unwrap();
    let name = unique_name("shutdown-graceful");
    let pool = builder().name(&name).workers(2).build().await.unwrap();
    assert_eq!(processes_with(&name).len(), 3, "a template and two workers");
    let calls: Vec<_> = (0..2)
        .map(|i| {
            let pool = pool.clone();
            let started = dir.path().join(format!("started-{i}"));
            tokio::spawn(async move {
                pool.submit(
                    Call::new("fx.hostile:sleep")
                        .kwarg("seconds", 1.0)
                        .kwarg("started", started.to_str().unwrap()),
                )
                .await
            })
        })
        .collect();
    wait_for("both calls to start", EVENT_WAIT, || {
        (0..2).all(|i| dir.path().join(format!("started-{i}")).exists())
    })
    .await;
    let t0 = Instant::now();
    let shutdown = tokio::spawn({
        let pool = pool.clone();
        async move { pool.shutdown(Duration::from_secs(10)).await }
    });
    // New calls are refused while the calls in hand still run. (A ping sent before the
    // shutdown began would wait in the queue: give up on it and try again.)
    let refused = async {
        loop {
            let ping = pool.submit(Call::new("fx.basic:ping"));
            match tokio::time::timeout(Duration::from_millis(10), ping).await {
                Ok(Err(CallError::ShutDown)) => break,
                Err(_) => continue,
                Ok(other) => panic!("expected ShutDown, got {other:?}"),
            }
        }
    };
    tokio::time::timeout(EVENT_WAIT, refused)
        .await
        .expect("ShutDown");
    assert!(
        calls.iter().all(|c| !c.is_finished()),
        "refused before the calls ended"
    );
    let mut pids = Vec::new();
    for c in calls {
        let v = c
            .await
            .unwrap()
            .expect("a call in hand finishes")
            .decode()
            .unwrap();
        pids.push(v.get("pid").and_then(|p| p.as_i64()).unwrap() as u32);
    }
    tokio::time::timeout(EVENT_WAIT, shutdown)
        .await
        .unwrap()
        .unwrap();
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "well before the deadline: {:?}",
        t0.elapsed()
    );
    for pid in pids {
        wait_gone("a worker after shutdown", pid, Duration::from_secs(3)).await;
    }
    assert!(matches!(
        pool.submit(Call::new("fx.basic:ping")).await,
        Err(CallError::ShutDown)
    ));
    drop(pool);
    wait_no_processes_with(&name, Duration::from_secs(3)).await;
}

#[tokio::test]
async fn shutdown_deadline_fails_calls_still_running() {
    let name = unique_name("shutdown-deadline");
    let pool = builder()
        .name(&name)
        .kill_grace(Duration::from_millis(300))
        .build()
        .await
        .unwrap();
    let pid = worker_pid(&pool).await;
    let call = tokio::spawn({
        let pool = pool.clone();
        async move {
            pool.submit(Call::new("fx.hostile:busy_ignoring_signals"))
                .await
        }
    });
    wait_for("the call to be taken", EVENT_WAIT, || {
        pool.status().queued == 0
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await; // let it reach the plugin
    let t0 = Instant::now();
    pool.shutdown(Duration::from_millis(300)).await;
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(4), "shutdown took {took:?}");
    let err = call.await.unwrap().unwrap_err();
    assert!(matches!(err, CallError::ShutDown), "{err:?}");
    wait_gone("the worker", pid, Duration::from_secs(3)).await;
    drop(pool);
    wait_no_processes_with(&name, Duration::from_secs(3)).await;
}

/// `shutdown()` leaves no process of the pool behind, the fork-server template included,
/// even while a handle to the (shut down) pool is still held.
#[tokio::test]
async fn shutdown_stops_the_fork_server_template_too() {
    let name = unique_name("shutdown-template");
    let pool = builder().name(&name).build().await.unwrap();
    worker_pid(&pool).await;
    assert_eq!(processes_with(&name).len(), 2, "a template and a worker");
    pool.shutdown(Duration::from_secs(2)).await;
    wait_no_processes_with(&name, Duration::from_secs(3)).await;
}

#[tokio::test]
async fn dropping_the_last_handle_stops_every_process() {
    let name = unique_name("dropped");
    let pool = builder().name(&name).workers(2).build().await.unwrap();
    let other = pool.clone();
    worker_pid(&pool).await;
    drop(pool);
    worker_pid(&other).await; // a clone keeps the pool alive
    assert_eq!(processes_with(&name).len(), 3, "a template and two workers");
    drop(other);
    wait_no_processes_with(&name, Duration::from_secs(5)).await;
}

// ------------------------------------------------------------------ start-up failures

/// Writes an executable shell script `python` into `dir`.
fn fake_python(dir: &Path, body: &str) -> std::path::PathBuf {
    let path = dir.join("python");
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// The real interpreter behind `python3`, for fake pythons to exec.
fn real_python() -> std::path::PathBuf {
    snakepit::resolve_interpreter(&crate::support::python()).unwrap()
}

/// Answers the interpreter probe (`-c "...sys.executable..."`) with the script's own
/// path, so that the pool keeps using the script.
const PROBE: &str = r#"case "$2" in *sys.executable*) echo "$0"; echo 3.11.0; exit 0;; esac"#;

#[tokio::test]
async fn an_interpreter_that_does_not_run_fails_the_build_with_its_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let python = fake_python(dir.path(), "echo 'fake python: broken install' >&2; exit 1");
    let err = builder()
        .python(&python)
        .build()
        .await
        .err()
        .expect("build fails");
    assert!(
        matches!(&err, BuildError::Spawn(SpawnError::Interpreter { .. })),
        "{err:?}"
    );
    assert!(err.to_string().contains("broken install"), "{err}");
}

both_launchers!(a_shim_that_exits_at_start_fails_the_build_with_its_stderr);

async fn a_shim_that_exits_at_start_fails_the_build_with_its_stderr(b: PoolBuilder) {
    let dir = tempfile::tempdir().unwrap();
    let python = fake_python(
        dir.path(),
        &format!("{PROBE}\necho 'fake python: cannot import the shim' >&2; exit 1"),
    );
    let t0 = Instant::now();
    let err = b.python(&python).build().await.err().expect("build fails");
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    let BuildError::Spawn(SpawnError::Exited { status, stderr }) = &err else {
        panic!("expected Spawn(Exited), got {err:?}")
    };
    assert_eq!(*status, snakepit::ExitStatus::Code(1));
    assert!(
        stderr.iter().any(|l| l.contains("cannot import the shim")),
        "{stderr:?}"
    );
    assert!(err.to_string().contains("cannot import the shim"), "{err}");
}

both_launchers!(a_start_up_failure_keeps_the_stderr_tail_of_a_worker);

/// A template's stderr tail is a worker's: the last 20 lines, a long line cut at 16 KiB,
/// bytes that are not UTF-8 replaced (the launcher once kept lines whole and stopped
/// reading at the first bad byte).
async fn a_start_up_failure_keeps_the_stderr_tail_of_a_worker(b: PoolBuilder) {
    let dir = tempfile::tempdir().unwrap();
    let body = "{ head -c 40000 /dev/zero | tr '\\0' x; echo; printf 'bad \\377 byte\\n'; \
                for i in $(seq 1 17); do echo \"line $i\"; done; } >&2; exit 1";
    let python = fake_python(dir.path(), &format!("{PROBE}\n{body}"));
    let err = b.python(&python).build().await.err().expect("build fails");
    let BuildError::Spawn(SpawnError::Exited { stderr, .. }) = &err else {
        panic!("expected Spawn(Exited), got {err:?}")
    };
    let lens: Vec<usize> = stderr.iter().map(|l| l.len()).collect();
    assert_eq!(stderr.len(), 20, "{lens:?}");
    assert_eq!(
        (lens[0], lens[1]),
        (16 * 1024, 40000 - 2 * 16 * 1024),
        "{lens:?}"
    );
    assert_eq!(stderr[2], "bad \u{FFFD} byte");
    assert_eq!(stderr[19], "line 17");
}

#[tokio::test]
async fn a_worker_that_keeps_dying_young_backs_off_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let (fail, starts) = (dir.path().join("fail"), dir.path().join("starts"));
    let python = fake_python(
        dir.path(),
        &format!(
            "{PROBE}\necho x >> '{starts}'\nif [ -e '{fail}' ]; then echo 'fake python: refusing to start' >&2; exit 1; fi\nexec '{real}' \"$@\"",
            starts = starts.display(),
            fail = fail.display(),
            real = real_python().display(),
        ),
    );
    let pool = builder()
        .python(&python)
        .fresh_interpreters(true)
        .build()
        .await
        .unwrap();
    let mut events = pool.events();
    std::fs::write(&fail, b"").unwrap();
    let err = pool
        .submit(Call::new("fx.hostile:exit_hard"))
        .await
        .unwrap_err();
    assert!(matches!(err, CallError::WorkerCrashed { .. }), "{err:?}");
    let mut delays = Vec::new();
    while delays.len() < 3 {
        let ev = next_event(&mut events, "Backoff", EVENT_WAIT, |e| {
            matches!(
                e.kind,
                EventKind::Backoff { .. } | EventKind::SpawnFailed { .. }
            )
        })
        .await;
        match ev.kind {
            EventKind::Backoff { delay, failures } => delays.push((delay, failures)),
            EventKind::SpawnFailed { error } => {
                assert!(error.to_string().contains("refusing to start"), "{error}")
            }
            _ => unreachable!(),
        }
    }
    for w in delays.windows(2) {
        assert_eq!(w[1].0, w[0].0 * 2, "doubling delays: {delays:?}");
        assert_eq!(w[1].1, w[0].1 + 1, "counting failures: {delays:?}");
    }
    // Degraded, not spinning: one start per back-off, give or take the first ones.
    let status = pool.status();
    assert_eq!((status.live, status.failing), (0, 1), "{status:?}");
    let n = std::fs::read_to_string(&starts).unwrap().lines().count();
    assert!(n <= 7, "{n} starts for 3 back-offs");
    let err = pool.submit(Call::new("fx.basic:ping")).await.unwrap_err();
    let CallError::Unavailable(e) = &err else {
        panic!("expected Unavailable, got {err:?}")
    };
    assert!(e.to_string().contains("refusing to start"), "{e}");
    // It recovers once the interpreter works again.
    std::fs::remove_file(&fail).unwrap();
    next_event(&mut events, "Ready after recovery", EVENT_WAIT, |e| {
        matches!(e.kind, EventKind::Ready { .. })
    })
    .await;
    wait_for("the slot to stop failing", EVENT_WAIT, || {
        pool.status().failing == 0
    })
    .await;
    worker_pid(&pool).await;
}

// ------------------------------------------------------------- supervisor SIGKILLed

const CHILD_DIR: &str = "SNAKEPIT_TEST_SUPERVISOR_DIR";
const CHILD_EXEC: &str = "SNAKEPIT_TEST_SUPERVISOR_EXEC";
const CHILD_DAEMON: &str = "SNAKEPIT_TEST_SUPERVISOR_DAEMON";

/// Not a test on its own: the supervisor process of `supervisor_killed_*`, which run
/// this test binary again with `SNAKEPIT_TEST_SUPERVISOR_DIR` set. Without it, it
/// returns at once.
#[tokio::test]
async fn sigkill_child_supervisor() {
    let Some(dir) = std::env::var_os(CHILD_DIR).map(std::path::PathBuf::from) else {
        return;
    };
    let exec = std::env::var_os(CHILD_EXEC).is_some();
    let pool: Pool = builder()
        .name(dir.file_name().unwrap().to_str().unwrap())
        .fresh_interpreters(exec)
        .build()
        .await
        .unwrap();
    let pid = worker_pid(&pool).await;
    std::fs::write(dir.join("worker.pid"), pid.to_string()).unwrap();
    let grandchild = dir.join("grandchild.pid");
    let call = if std::env::var_os(CHILD_DAEMON).is_some() {
        // A double-forked, setsid daemon: in no process group of the worker's.
        pool.submit(Call::new("fx.attack:daemon").kwarg("pid_file", grandchild.to_str().unwrap()))
            .await
            .unwrap();
        pool.submit(
            Call::new("fx.hostile:sleep")
                .kwarg("seconds", 120.0)
                .timeout(Duration::from_secs(120)),
        )
    } else {
        pool.submit(
            Call::new("fx.hostile:grandchild_then_sleep")
                .kwarg("pid_file", grandchild.to_str().unwrap())
                .timeout(Duration::from_secs(120)),
        )
    };
    // The parent kills this process during the call.
    let _ = tokio::time::timeout(Duration::from_secs(60), call).await;
    panic!("the parent test should have killed this supervisor");
}

/// Runs `sigkill_child_supervisor` in a child process, waits until its call runs, kills
/// it with SIGKILL, and returns (worker pid, grandchild pid, pool name).
async fn kill_a_supervisor_mid_call(
    exec: bool,
    daemon: bool,
) -> (u32, u32, String, tempfile::TempDir) {
    let name = unique_name("sigkilled");
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join(&name);
    std::fs::create_dir(&dir).unwrap();
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "lifecycle::sigkill_child_supervisor",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(CHILD_DIR, &dir)
    .stdout(std::process::Stdio::null());
    if exec {
        cmd.env(CHILD_EXEC, "1");
    }
    if daemon {
        cmd.env(CHILD_DAEMON, "1");
    }
    let mut child = ChildGuard(Some(cmd.spawn().unwrap()));
    let worker = read_pid_file(&dir.join("worker.pid"), Duration::from_secs(20)).await;
    let grandchild = read_pid_file(&dir.join("grandchild.pid"), Duration::from_secs(20)).await;
    let mut supervisor = child.0.take().unwrap();
    assert!(
        supervisor.try_wait().unwrap().is_none(),
        "the child supervisor is running"
    );
    supervisor.kill().unwrap(); // SIGKILL
    let status = supervisor.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );
    (worker, grandchild, name, parent)
}

#[tokio::test]
async fn supervisor_killed_with_sigkill_leaves_no_worker_fork_server() {
    supervisor_killed_leaves_no_worker(false).await
}

#[tokio::test]
async fn supervisor_killed_with_sigkill_leaves_no_worker_exec() {
    supervisor_killed_leaves_no_worker(true).await
}

#[tokio::test]
async fn supervisor_killed_with_sigkill_leaves_no_grandchild_fork_server() {
    supervisor_killed_leaves_no_grandchild(false).await
}

#[tokio::test]
async fn supervisor_killed_with_sigkill_leaves_no_grandchild_exec() {
    supervisor_killed_leaves_no_grandchild(true).await
}

async fn supervisor_killed_leaves_no_worker(exec: bool) {
    let (worker, grandchild, name, _dir) = kill_a_supervisor_mid_call(exec, false).await;
    let _guard = KillOnDrop(vec![(worker, "snakepit_shim"), (grandchild, "sleep")]);
    wait_gone(
        "the worker of a SIGKILLed supervisor",
        worker,
        Duration::from_secs(5),
    )
    .await;
    wait_no_processes_with(&name, Duration::from_secs(5)).await;
}

#[tokio::test]
async fn supervisor_killed_with_sigkill_leaves_no_setsid_daemon() {
    supervisor_killed_leaves_no_grandchild_or_daemon(false, true).await
}

async fn supervisor_killed_leaves_no_grandchild(exec: bool) {
    supervisor_killed_leaves_no_grandchild_or_daemon(exec, false).await
}

async fn supervisor_killed_leaves_no_grandchild_or_daemon(exec: bool, daemon: bool) {
    let (worker, grandchild, _name, _dir) = kill_a_supervisor_mid_call(exec, daemon).await;
    let _guard = KillOnDrop(vec![(worker, "snakepit_shim"), (grandchild, "sleep")]);
    wait_gone(
        "the grandchild of a SIGKILLed supervisor's worker",
        grandchild,
        Duration::from_secs(5),
    )
    .await;
}
