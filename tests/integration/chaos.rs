//! Chaos: thousands of concurrent calls while workers die under them. Every call ends,
//! with its value or `WorkerCrashed`, none hangs, and the pool heals.

use std::time::Duration;

use snakepit::{Call, CallError, EventKind, ExitStatus, Value};

use crate::support::{builder, wait_for};

const CALLS: i64 = 2000;

/// Call `i`'s fate: 1 in 100 exits, 1 in 100 is SIGKILLed (2 % in all).
fn fate(i: i64) -> &'static str {
    match i % 100 {
        7 => "exit",
        57 => "sigkill",
        _ => "ok",
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_ends_while_workers_die_and_the_pool_heals() {
    let pool = builder()
        .workers(4)
        .queue_limit(4096)
        .call_timeout(Duration::from_secs(60))
        .build()
        .await
        .unwrap();
    let mut events = pool.events();
    let tasks: Vec<_> = (0..CALLS)
        .map(|i| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let r = pool
                    .submit(
                        Call::new("fx.chaos:maybe_die")
                            .kwarg("i", i)
                            .kwarg("fate", fate(i)),
                    )
                    .await;
                (i, r)
            })
        })
        .collect();
    let all = async {
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    };
    let results = tokio::time::timeout(Duration::from_secs(45), all)
        .await
        .expect("every call ends within 45 s");
    let (mut ok, mut exited, mut killed) = (0, 0, 0);
    for (i, r) in results {
        match (fate(i), r) {
            ("ok", Ok(v)) => {
                assert_eq!(v.decode().unwrap(), Value::Int(i * 2));
                ok += 1;
            }
            (
                "exit",
                Err(CallError::WorkerCrashed {
                    status: ExitStatus::Code(7),
                    ..
                }),
            ) => exited += 1,
            (
                "sigkill",
                Err(CallError::WorkerCrashed {
                    status: ExitStatus::Signal { signal: 9, .. },
                    ..
                }),
            ) => killed += 1,
            (f, r) => panic!("call {i} ({f}) ended with {r:?}"),
        }
    }
    assert_eq!((ok, exited, killed), (CALLS - 40, 20, 20));
    wait_for(
        "all four workers live again",
        Duration::from_secs(15),
        || pool.status().live == 4,
    )
    .await;
    let status = pool.status();
    assert_eq!((status.failing, status.queued), (0, 0), "{status:?}");
    assert!(status.restarts >= 40, "{status:?}");
    let mut deaths = 0;
    while let Ok(ev) = events.try_recv() {
        if matches!(ev.kind, EventKind::Exited { .. }) {
            deaths += 1;
        }
    }
    assert_eq!(deaths, 40, "one Exited event per crashed call");
}
