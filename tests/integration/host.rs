//! Host requests: a plugin calling back into the supervisor mid-call, sync and async.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use snakepit::{Call, CallError, HostFailure, HostRequest, Pool, Value};

use crate::support::builder;

fn payload() -> Value {
    Value::map([
        ("s", Value::from("héllo")),
        ("n", Value::Int(-42)),
        ("f", Value::Float(1.5)),
        ("b", Value::Bytes(vec![0, 255])),
        ("l", Value::List(vec![Value::Nil, Value::Bool(true)])),
        ("d", Value::Decimal("12.50".into())),
    ])
}

async fn run(pool: &Pool, call: Call) -> Value {
    pool.submit(call).await.unwrap().decode().unwrap()
}

#[tokio::test]
async fn echo_from_sync_async_and_sync_inside_async() {
    let pool = builder().build().await.unwrap();
    for f in [
        "fx.hostcalls:echo_sync",
        "fx.hostcalls:echo_async",
        "fx.hostcalls:sync_echo_inside_async",
    ] {
        let call = Call::new(f)
            .kwarg("payload", payload())
            .timeout(Duration::from_secs(10));
        assert_eq!(run(&pool, call).await, payload(), "{f}");
    }
}

#[tokio::test]
async fn concurrent_async_echoes_with_gather() {
    let pool = builder().build().await.unwrap();
    let v = run(
        &pool,
        Call::new("fx.hostcalls:echo_gather").kwarg("n", 50i64),
    )
    .await;
    assert_eq!(v, Value::List((0..50).map(Value::Int).collect()));
}

fn handler_pool() -> snakepit::PoolBuilder {
    builder().host_handler(|req: HostRequest| async move {
        match req.method.as_str() {
            "upper" => {
                let v = req.payload.decode().map_err(|e| HostFailure {
                    type_name: "DecodeError".into(),
                    message: e.to_string(),
                })?;
                Ok(Value::from(v.as_str().unwrap_or("").to_uppercase()))
            }
            "whoami" => Ok(Value::map([
                ("reference", Value::from(&*req.reference)),
                ("has_call_id", Value::Bool(req.call_id > 0)),
            ])),
            "slow" => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                Ok(Value::from("late"))
            }
            "hold" => {
                tokio::time::sleep(Duration::from_secs(2)).await;
                Ok(Value::Nil)
            }
            "deny" => Err(HostFailure {
                type_name: "PermissionDenied".into(),
                message: "not granted to this plugin".into(),
            }),
            other => Err(HostFailure {
                type_name: "UnknownMethod".into(),
                message: format!("no method {other}"),
            }),
        }
    })
}

fn custom(f: &str, method: &str, payload: Value) -> Call {
    Call::new(f)
        .kwarg("method", method)
        .kwarg("payload", payload)
        .timeout(Duration::from_secs(10))
}

#[tokio::test]
async fn custom_handler_answers_and_fails() {
    let pool = handler_pool().build().await.unwrap();
    for f in ["fx.hostcalls:custom", "fx.hostcalls:custom_async"] {
        assert_eq!(
            run(&pool, custom(f, "upper", "abc".into())).await,
            Value::map([("ok", Value::from("ABC"))]),
            "{f}"
        );
        assert_eq!(
            run(&pool, custom(f, "slow", Value::Nil)).await,
            Value::map([("ok", Value::from("late"))]),
            "{f}"
        );
        assert_eq!(
            run(&pool, custom(f, "whoami", Value::Nil)).await,
            Value::map([(
                "ok",
                Value::map([
                    ("reference", Value::from(f)),
                    ("has_call_id", Value::Bool(true))
                ])
            )]),
            "{f}"
        );
        assert_eq!(
            run(&pool, custom(f, "deny", Value::Nil)).await,
            Value::map([
                ("error_type", Value::from("PermissionDenied")),
                ("error_message", Value::from("not granted to this plugin")),
            ]),
            "{f}"
        );
    }
    // "echo" never reaches the handler.
    assert_eq!(
        run(
            &pool,
            Call::new("fx.hostcalls:echo_sync").kwarg("payload", 7i64)
        )
        .await,
        Value::Int(7)
    );
    // Uncaught, the HostError is the plugin's exception.
    let err = pool
        .submit(custom("fx.hostcalls:custom_uncaught", "deny", Value::Nil))
        .await
        .unwrap_err();
    let CallError::Raised(e) = &err else {
        panic!("expected Raised, got {err:?}")
    };
    assert!(e.type_name.ends_with("HostError"), "{e:?}");
    assert!(e.message.contains("not granted"), "{e:?}");
}

#[tokio::test]
async fn without_a_handler_other_methods_are_unknown() {
    let pool = builder().build().await.unwrap();
    let v = run(&pool, custom("fx.hostcalls:custom", "sql", Value::Nil)).await;
    assert_eq!(
        v.get("error_type"),
        Some(&Value::from("UnknownMethod")),
        "{v:?}"
    );
}

/// A handler that counts the requests reaching it and answers with their call id.
fn counting_pool(seen: Arc<AtomicUsize>) -> snakepit::PoolBuilder {
    builder().host_handler(move |req: HostRequest| {
        seen.fetch_add(1, Ordering::SeqCst);
        async move { Ok(Value::Int(req.call_id as i64)) }
    })
}

#[tokio::test]
async fn a_forged_call_id_is_refused_before_the_handler() {
    let seen = Arc::new(AtomicUsize::new(0));
    let pool = counting_pool(seen.clone()).build().await.unwrap();
    for claimed in [Value::Int(1_000_000), Value::Nil] {
        let (tx, mut rx) = tokio::sync::mpsc::channel(16);
        let call = Call::new("fx.hostcalls:forged")
            .kwarg("method", "whoami")
            .kwarg("payload", Value::Nil)
            .kwarg("call_id", claimed.clone())
            .timeout(Duration::from_secs(10))
            .logs(tx);
        let v = run(&pool, call).await;
        assert_eq!(
            v.get("error_type"),
            Some(&Value::from("PermissionError")),
            "{claimed:?}: {v:?}"
        );
        // The refusal is in the call's log.
        let rec = rx.try_recv().expect("a record of the refusal");
        assert_eq!(rec.logger, "snakepit");
        assert!(rec.message.starts_with("host request refused: "), "{rec:?}");
    }
    assert_eq!(seen.load(Ordering::SeqCst), 0, "the handler saw none");
    // The worker's own call id goes through, and the handler sees the supervisor's id.
    let v = run(&pool, custom("fx.hostcalls:custom", "whoami", Value::Nil)).await;
    assert!(
        matches!(v.get("ok"), Some(Value::Int(id)) if *id > 0),
        "{v:?}"
    );
    assert_eq!(seen.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_request_made_between_calls_is_refused() {
    let seen = Arc::new(AtomicUsize::new(0));
    let pool = counting_pool(seen.clone()).build().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sent = dir.path().join("sent");
    let started = Call::new("fx.hostcalls:late_request")
        .kwarg("method", "whoami")
        .kwarg("payload", Value::Nil)
        .kwarg("sent", sent.to_str().unwrap());
    assert_eq!(run(&pool, started).await, Value::from("started"));
    crate::support::wait_for(
        "the late request to be sent",
        Duration::from_secs(10),
        || sent.exists(),
    )
    .await;
    // The next call reads the request the worker sent between calls.
    let v = run(&pool, Call::new("fx.hostcalls:late_outcome")).await;
    assert_eq!(v.get("ok"), Some(&Value::Bool(false)), "{v:?}");
    let Some(Value::List(failure)) = v.get("value") else {
        panic!("{v:?}")
    };
    assert_eq!(failure[0], Value::from("PermissionError"), "{v:?}");
    assert!(
        failure[1].as_str().unwrap().contains("between calls"),
        "{v:?}"
    );
    assert_eq!(seen.load(Ordering::SeqCst), 0, "the handler saw none");
}

#[tokio::test]
async fn host_requests_in_flight_per_worker_are_bounded() {
    let pool = handler_pool().build().await.unwrap();
    let call = Call::new("fx.hostcalls:flood_requests")
        .kwarg("method", "hold")
        .kwarg("n", 200i64)
        .timeout(Duration::from_secs(30));
    let v = run(&pool, call).await;
    let limit = snakepit::HOST_REQUESTS_IN_FLIGHT as i64;
    assert_eq!(v.get("ok"), Some(&Value::Int(limit)), "{v:?}");
    assert_eq!(v.get("n_refused"), Some(&Value::Int(200 - limit)), "{v:?}");
    assert_eq!(
        v.get("refused"),
        Some(&Value::List(vec![Value::from("TooManyRequests")]))
    );
    // Their payload bytes too: three of 20 MiB fit in HOST_BYTES_IN_FLIGHT, then no more.
    assert_eq!(snakepit::HOST_BYTES_IN_FLIGHT, 64 << 20);
    let call = Call::new("fx.hostcalls:flood_requests")
        .kwarg("method", "hold")
        .kwarg("n", 5i64)
        .kwarg("size", 20i64 << 20)
        .timeout(Duration::from_secs(30));
    let v = run(&pool, call).await;
    assert_eq!(v.get("ok"), Some(&Value::Int(3)), "{v:?}");
    assert_eq!(v.get("n_refused"), Some(&Value::Int(2)), "{v:?}");
}
