//! Per-call accounting: what a call cost its worker (CPU, peak RSS) and the supervisor
//! (host requests, wall time), on the call's result.

use std::time::Duration;

use snakepit::{Call, CallError};

use crate::support::builder;

#[tokio::test]
async fn a_call_reports_its_cpu_memory_host_requests_and_wall_time() {
    let pool = builder().build().await.unwrap();
    let burn = pool
        .submit_measured(&Call::new("fx.basic:burn").kwarg("ms", 80i64))
        .await;
    burn.result.unwrap();
    let u = burn.usage.expect("an answered call is measured");
    assert!(u.cpu() >= Duration::from_millis(75), "{u:?}");
    assert!(u.wall >= Duration::from_millis(75), "{u:?}");
    assert!(
        u.peak_rss > 4 << 20,
        "a CPython worker is several MiB: {u:?}"
    );
    assert_eq!((u.host_requests, u.host_time), (0, Duration::ZERO));

    // The next call starts from the end of this one: a small call costs little.
    let small = pool
        .submit_measured(&Call::new("fx.basic:burn").kwarg("ms", 0i64))
        .await;
    assert!(small.usage.unwrap().cpu() < Duration::from_millis(75));

    // Host requests are counted, concurrent ones each.
    let echoes = pool
        .submit_measured(&Call::new("fx.hostcalls:echo_gather").kwarg("n", 20i64))
        .await;
    echoes.result.unwrap();
    let u = echoes.usage.unwrap();
    assert_eq!(u.host_requests, 20, "{u:?}");
    assert!(u.host_time > Duration::ZERO);

    // A plugin that raised was answered, so measured; a timeout was not.
    let failed = pool.submit_measured(&Call::new("fx.basic:fail")).await;
    assert!(matches!(failed.result, Err(CallError::Raised(_))));
    assert!(failed.usage.is_some());
    let late = pool
        .submit_measured(
            &Call::new("fx.basic:burn")
                .kwarg("ms", 5_000i64)
                .timeout(Duration::from_millis(200)),
        )
        .await;
    assert!(matches!(late.result, Err(CallError::Timeout(_))));
    assert!(late.usage.is_none());
}
