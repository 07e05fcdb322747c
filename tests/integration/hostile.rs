//! Fixture plugins written to misbehave: each failure ends the call with the right
//! error, the worker is replaced (or kept, when it stayed sound), and the supervisor
//! stays up.

use std::time::{Duration, Instant};

use snakepit::{Call, CallError, EventKind, ExitStatus, PoolBuilder, RetireReason, Value};

use crate::support::{
    both_launchers, builder, expect_retired, next_event, read_pid_file, wait_gone, worker_pid,
    KillOnDrop, EVENT_WAIT,
};

both_launchers!(
    exit_hard_is_worker_crashed_and_replaced,
    segfault_is_signal_11_with_fatal_error_on_stderr,
    hang_times_out_and_cancel_keeps_the_worker,
    busy_loop_ignoring_signals_is_killed_after_grace,
    busy_in_c_ignoring_signals_is_killed_after_grace,
    grandchild_dies_with_a_crashed_worker,
    grandchild_dies_with_a_timed_out_worker,
    garbage_length_header_is_protocol_error,
    undecodable_frame_body_is_protocol_error,
    unknown_message_type_is_protocol_error,
);

async fn exit_hard_is_worker_crashed_and_replaced(b: PoolBuilder) {
    let pool = b.build().await.unwrap();
    let mut events = pool.events();
    let before = worker_pid(&pool).await;
    let err = pool
        .submit(Call::new("fx.hostile:exit_hard").kwarg("code", 3i64))
        .await
        .unwrap_err();
    let CallError::WorkerCrashed { status, .. } = &err else {
        panic!("expected WorkerCrashed, got {err:?}")
    };
    assert_eq!(*status, ExitStatus::Code(3));
    let ev = next_event(
        &mut events,
        "Exited of the crashed worker",
        EVENT_WAIT,
        |e| matches!(e.kind, EventKind::Exited { .. }),
    )
    .await;
    assert_eq!(ev.pid, Some(before));
    assert!(
        matches!(
            ev.kind,
            EventKind::Exited {
                status: ExitStatus::Code(3),
                ..
            }
        ),
        "{ev:?}"
    );
    let ready = next_event(&mut events, "Ready of the replacement", EVENT_WAIT, |e| {
        matches!(e.kind, EventKind::Ready { .. })
    })
    .await;
    let replacement = ready.pid.expect("Ready carries the pid");
    assert_ne!(replacement, before);
    assert_eq!(worker_pid(&pool).await, replacement);
    wait_gone("the crashed worker", before, EVENT_WAIT).await;
}

async fn segfault_is_signal_11_with_fatal_error_on_stderr(b: PoolBuilder) {
    let pool = b.build().await.unwrap();
    let before = worker_pid(&pool).await;
    let err = pool
        .submit(Call::new("fx.hostile:segfault"))
        .await
        .unwrap_err();
    let CallError::WorkerCrashed { status, stderr, .. } = &err else {
        panic!("expected WorkerCrashed, got {err:?}")
    };
    assert!(
        matches!(status, ExitStatus::Signal { signal: 11, .. }),
        "{status:?}"
    );
    assert!(
        stderr.iter().any(|l| l.contains("Fatal Python error")),
        "the last stderr lines should carry faulthandler's report: {stderr:#?}"
    );
    assert!(
        stderr.iter().any(|l| l.contains("segfault")),
        "the report should name the plugin function: {stderr:#?}"
    );
    assert_ne!(worker_pid(&pool).await, before);
}

async fn hang_times_out_and_cancel_keeps_the_worker(b: PoolBuilder) {
    let dir = tempfile::tempdir().unwrap();
    let cleanup = dir.path().join("cleanup");
    // A grace long enough that a worker killed for not answering the cancel would show
    // as a new pid, not as the same one.
    let pool = b.kill_grace(Duration::from_secs(2)).build().await.unwrap();
    let mut events = pool.events();
    let before = worker_pid(&pool).await;
    let timeout = Duration::from_millis(300);
    let t0 = Instant::now();
    let err = pool
        .submit(
            Call::new("fx.hostile:sleep")
                .kwarg("seconds", 60.0)
                .kwarg("cleanup", cleanup.to_str().unwrap())
                .timeout(timeout),
        )
        .await
        .unwrap_err();
    let took = t0.elapsed();
    assert!(
        matches!(err, CallError::Timeout(t) if t == timeout),
        "{err:?}"
    );
    assert!(took < Duration::from_secs(2), "the timeout took {took:?}");
    // The cancel interrupted the sleep: the same worker serves the next call, promptly.
    let t1 = Instant::now();
    assert_eq!(worker_pid(&pool).await, before);
    assert!(
        t1.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t1.elapsed()
    );
    assert_eq!(std::fs::read_to_string(&cleanup).unwrap(), "cleaned up");
    while let Ok(ev) = events.try_recv() {
        assert!(
            !matches!(
                ev.kind,
                EventKind::Retired { .. } | EventKind::Exited { .. }
            ),
            "the cancelled worker should have stayed: {ev:?}"
        );
    }
}

async fn busy_loop_ignoring_signals_is_killed_after_grace(b: PoolBuilder) {
    killed_after_grace(b, "fx.hostile:busy_ignoring_signals").await
}

async fn busy_in_c_ignoring_signals_is_killed_after_grace(b: PoolBuilder) {
    killed_after_grace(b, "fx.hostile:busy_in_c").await
}

async fn killed_after_grace(b: PoolBuilder, reference: &str) {
    let grace = Duration::from_millis(300);
    let pool = b.kill_grace(grace).build().await.unwrap();
    let mut events = pool.events();
    let before = worker_pid(&pool).await;
    let timeout = Duration::from_millis(300);
    let t0 = Instant::now();
    let err = pool
        .submit(Call::new(reference).timeout(timeout))
        .await
        .unwrap_err();
    assert!(matches!(err, CallError::Timeout(_)), "{err:?}");
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    let ev = next_event(&mut events, "Retired{Timeout}", EVENT_WAIT, |e| {
        matches!(e.kind, EventKind::Retired { .. })
    })
    .await;
    assert_eq!(ev.pid, Some(before));
    let EventKind::Retired { reason, status } = ev.kind else {
        unreachable!()
    };
    // Which of the two is reported races (see `timed_out_calls_retire_with_reason_timeout`).
    assert!(
        matches!(reason, RetireReason::Timeout | RetireReason::Cancelled),
        "{reason:?}"
    );
    assert!(
        matches!(status, ExitStatus::Signal { signal: 9, .. }),
        "killed with SIGKILL: {status:?}"
    );
    // Killed no sooner than the grace after the timeout.
    assert!(t0.elapsed() >= timeout + grace, "{:?}", t0.elapsed());
    wait_gone("the busy worker", before, EVENT_WAIT).await;
    let after = worker_pid(&pool).await;
    assert_ne!(after, before);
}

async fn grandchild_dies_with_a_crashed_worker(b: PoolBuilder) {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("grandchild.pid");
    let pool = b.build().await.unwrap();
    let err = pool
        .submit(
            Call::new("fx.hostile:grandchild_then_crash")
                .kwarg("pid_file", pid_file.to_str().unwrap()),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            CallError::WorkerCrashed {
                status: ExitStatus::Code(1),
                ..
            }
        ),
        "{err:?}"
    );
    let grandchild = read_pid_file(&pid_file, EVENT_WAIT).await;
    let _guard = KillOnDrop(vec![(grandchild, "sleep")]);
    wait_gone(
        "the crashed worker's grandchild",
        grandchild,
        Duration::from_secs(5),
    )
    .await;
    worker_pid(&pool).await;
}

async fn grandchild_dies_with_a_timed_out_worker(b: PoolBuilder) {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("grandchild.pid");
    let pool = b
        .kill_grace(Duration::from_millis(300))
        .build()
        .await
        .unwrap();
    let err = pool
        .submit(
            Call::new("fx.hostile:grandchild_then_hang")
                .kwarg("pid_file", pid_file.to_str().unwrap())
                .timeout(Duration::from_millis(500)),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, CallError::Timeout(_)), "{err:?}");
    let grandchild = read_pid_file(&pid_file, EVENT_WAIT).await;
    let _guard = KillOnDrop(vec![(grandchild, "sleep")]);
    wait_gone(
        "the timed-out worker's grandchild",
        grandchild,
        Duration::from_secs(5),
    )
    .await;
    worker_pid(&pool).await;
}

async fn protocol_violation(b: PoolBuilder, reference: &str) {
    let pool = b.build().await.unwrap();
    let mut events = pool.events();
    let before = worker_pid(&pool).await;
    let t0 = Instant::now();
    let err = pool.submit(Call::new(reference)).await.unwrap_err();
    assert!(matches!(err, CallError::Protocol(_)), "{err:?}");
    // Found at once, not at the plugin's 30 s sleep or the call timeout.
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    expect_retired(&mut events, before, RetireReason::Protocol).await;
    wait_gone("the worker that broke the protocol", before, EVENT_WAIT).await;
    assert_ne!(worker_pid(&pool).await, before);
}

async fn garbage_length_header_is_protocol_error(b: PoolBuilder) {
    protocol_violation(b, "fx.hostile:garbage_header").await
}

async fn undecodable_frame_body_is_protocol_error(b: PoolBuilder) {
    protocol_violation(b, "fx.hostile:garbage_body").await
}

async fn unknown_message_type_is_protocol_error(b: PoolBuilder) {
    protocol_violation(b, "fx.hostile:unknown_message").await
}

/// A flood of prints: the call succeeds, the supervisor keeps the call's budget
/// (`LINES_PER_SEC` a second) and counts every line it dropped, in order.
#[tokio::test]
async fn stdout_flood_succeeds_and_every_line_is_kept_or_counted() {
    let pool = builder().build().await.unwrap();
    let before = worker_pid(&pool).await;
    let (tx, mut rx) = tokio::sync::mpsc::channel(100_000);
    let v = pool
        .submit(
            Call::new("fx.hostile:flood_stdout")
                .kwarg("lines", 100_000i64)
                .logs(tx),
        )
        .await
        .unwrap();
    assert_eq!(
        v.decode().unwrap(),
        Value::map([("lines", Value::Int(100_000))])
    );
    let (mut kept, mut dropped, mut next) = (0u64, 0u64, 0u64);
    while let Ok(rec) = rx.try_recv() {
        if rec.logger == "stdout" {
            let i: u64 = rec.message["flood line ".len()..].parse().unwrap();
            assert!(i >= next, "lines stay in order");
            next = i + 1;
            kept += 1;
        } else if rec.logger == "snakepit" {
            let n = rec.message.split(' ').next().unwrap();
            dropped += n.parse::<u64>().unwrap();
        }
    }
    assert!(kept >= u64::from(snakepit::LINES_PER_SEC), "{kept}");
    assert_eq!(kept + dropped, 100_000, "kept {kept}, dropped {dropped}");
    assert_eq!(worker_pid(&pool).await, before, "the worker stayed up");
}

/// Output that never ends its line is cut into 16 KiB pieces: the crash report's stderr
/// tail (20 lines) stays small whatever the worker wrote.
#[tokio::test]
async fn a_stderr_line_without_end_is_cut_and_the_tail_stays_small() {
    let pool = builder().build().await.unwrap();
    let e = pool
        .submit(Call::new("fx.hostile:endless_stderr_line").kwarg("mib", 8i64))
        .await
        .unwrap_err();
    let CallError::WorkerCrashed { stderr, .. } = &e else {
        panic!("expected WorkerCrashed, got {e:?}")
    };
    assert_eq!(stderr.len(), 20, "the tail is full of pieces");
    assert!(stderr
        .iter()
        .all(|l| l.len() <= 16 * 1024 && l.starts_with('z')));
}

/// The finding of issue 12: a plugin appended code to the shim's cache, and it ran in
/// the fork servers of every pool started after. Now the next pool checks the copy
/// against the shim it embeds and writes it afresh.
#[tokio::test]
async fn code_appended_to_the_shim_cache_never_runs() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ran");
    let pool = builder().build().await.unwrap();
    let path = pool
        .submit(
            Call::new("fx.hostile:tamper_shim")
                .kwarg("marker", marker.to_str().unwrap())
                .kwarg("pool", "after-tamper"),
        )
        .await
        .unwrap()
        .decode()
        .unwrap();
    let path = path.as_str().unwrap().to_owned();
    let tampered = |p: &str| {
        std::fs::read_to_string(p)
            .unwrap()
            .contains(marker.to_str().unwrap())
    };
    assert!(tampered(&path));
    let next = builder().name("after-tamper").build().await.unwrap();
    let v = next.submit(Call::new("fx.basic:ping")).await.unwrap();
    assert!(v.decode().is_ok());
    assert!(!marker.exists(), "the appended code ran");
    assert!(!tampered(&path), "the copy was written afresh");
}

#[tokio::test]
async fn result_over_the_frame_limit_is_a_clean_error() {
    let pool = builder().frame_limit(64 * 1024).build().await.unwrap();
    let before = worker_pid(&pool).await;
    let err = pool
        .submit(Call::new("fx.hostile:big_bytes").kwarg("size", 1i64 << 20))
        .await
        .unwrap_err();
    match &err {
        CallError::Unserializable(m) => assert!(m.contains("frame limit"), "{m}"),
        CallError::Protocol(_) => {}
        other => panic!("expected Unserializable or Protocol, got {other:?}"),
    }
    // Just under the limit still crosses.
    let v = pool
        .submit(Call::new("fx.hostile:big_bytes").kwarg("size", 60i64 * 1024))
        .await
        .unwrap();
    assert!(matches!(v.decode().unwrap(), Value::Bytes(b) if b.len() == 60 * 1024));
    if matches!(err, CallError::Unserializable(_)) {
        assert_eq!(
            worker_pid(&pool).await,
            before,
            "an encode error keeps the worker"
        );
    }
    // Arguments over the limit are refused before they are sent.
    let err = pool
        .submit(Call::new("fx.basic:ping").kwarg("blob", Value::Bytes(vec![0; 100 * 1024])))
        .await
        .unwrap_err();
    assert!(matches!(err, CallError::Unserializable(_)), "{err:?}");
    worker_pid(&pool).await;
}

#[tokio::test]
async fn unserializable_result_names_the_key_path() {
    let pool = builder().build().await.unwrap();
    let before = worker_pid(&pool).await;
    let err = pool
        .submit(Call::new("fx.hostile:unserializable"))
        .await
        .unwrap_err();
    let CallError::Unserializable(message) = &err else {
        panic!("expected Unserializable, got {err:?}")
    };
    assert!(
        message.contains(r#"["rows"][1]["tags"]"#),
        "the message should name the key path: {message}"
    );
    assert!(message.contains("set"), "{message}");
    assert_eq!(worker_pid(&pool).await, before);
}

#[tokio::test]
async fn worker_over_the_rss_ceiling_is_retired_after_the_call() {
    let pool = builder().max_worker_rss(100 << 20).build().await.unwrap();
    let mut events = pool.events();
    let before = worker_pid(&pool).await;
    let v = pool
        .submit(Call::new("fx.hostile:grow").kwarg("mib", 200i64))
        .await
        .unwrap();
    assert_eq!(
        v.decode().unwrap(),
        Value::map([("pid", Value::Int(before as i64))]),
        "the call in hand succeeds"
    );
    expect_retired(&mut events, before, RetireReason::Rss).await;
    assert_ne!(worker_pid(&pool).await, before);
}

/// A worker killed because its call timed out is retired with reason `Timeout`, not
/// `Cancelled`: the caller's own timer (same deadline) must not turn a timeout into a
/// cancellation. Sixteen at once, idle: the race between the caller's timer and the
/// worker slot's (same deadline, two runtimes) shows in a few percent of calls when the
/// CPUs are free.
#[tokio::test]
async fn timed_out_calls_retire_with_reason_timeout() {
    let pool = builder()
        .workers(16)
        .kill_grace(Duration::from_millis(200))
        .build()
        .await
        .unwrap();
    let mut events = pool.events();
    let calls: Vec<_> = (0..16)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move {
                pool.submit(
                    Call::new("fx.hostile:ignore_cancel_idle").timeout(Duration::from_millis(300)),
                )
                .await
            })
        })
        .collect();
    for c in calls {
        let err = c.await.unwrap().unwrap_err();
        assert!(matches!(err, CallError::Timeout(_)), "{err:?}");
    }
    let mut reasons = Vec::new();
    while reasons.len() < 16 {
        let ev = next_event(&mut events, "sixteen Retired events", EVENT_WAIT, |e| {
            matches!(e.kind, EventKind::Retired { .. })
        })
        .await;
        if let EventKind::Retired { reason, .. } = ev.kind {
            reasons.push(reason);
        }
    }
    assert_eq!(reasons, vec![RetireReason::Timeout; 16]);
}
