//! Keyword dispatch and load-time validation: references that do not resolve and
//! arguments that do not fit are `BadReference`, and the worker stays.

use snakepit::{Call, CallError, Map, Pool, Value};

use crate::support::{builder, worker_pid};

/// The message of a `BadReference`, or a panic naming what came instead.
fn bad_reference(r: Result<impl std::fmt::Debug, CallError>) -> String {
    match r {
        Err(CallError::BadReference { message, .. }) => message,
        other => panic!("expected BadReference, got {other:?}"),
    }
}

fn kw(pairs: &[(&str, Value)]) -> Map {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

async fn call(pool: &Pool, reference: &str, kwargs: Map, context: Map) -> Result<Value, CallError> {
    pool.call(reference, kwargs, context)
        .await
        .map(|v| v.decode().expect("decodable result"))
}

#[tokio::test]
async fn arguments_that_do_not_fit_are_bad_reference() {
    let pool = builder().build().await.unwrap();
    let before = worker_pid(&pool).await;
    let m = bad_reference(call(&pool, "fx.dispatch:needs_period", vec![], vec![]).await);
    assert!(m.contains("'period'") && m.contains("missing"), "{m}");
    let m = bad_reference(
        call(
            &pool,
            "fx.dispatch:needs_period",
            kw(&[("period", "2026-05".into()), ("colour", "red".into())]),
            vec![],
        )
        .await,
    );
    assert!(m.contains("'colour'") && m.contains("unexpected"), "{m}");
    // Context keys fill required parameters; kwargs win over the context.
    let v = call(
        &pool,
        "fx.dispatch:needs_period",
        kw(&[("dry_run", true.into())]),
        kw(&[("period", "2026-04".into())]),
    )
    .await
    .unwrap();
    assert_eq!(v.get("period"), Some(&Value::from("2026-04")));
    assert_eq!(v.get("dry_run"), Some(&Value::Bool(true)));
    let v = call(
        &pool,
        "fx.dispatch:needs_period",
        kw(&[("period", "kw".into())]),
        kw(&[("period", "ctx".into())]),
    )
    .await
    .unwrap();
    assert_eq!(v.get("period"), Some(&Value::from("kw")));
    assert_eq!(
        worker_pid(&pool).await,
        before,
        "reference errors keep the worker"
    );
}

#[tokio::test]
async fn a_function_without_var_kwargs_gets_only_the_context_keys_it_declares() {
    let pool = builder().build().await.unwrap();
    let context = kw(&[
        ("run_id", "r-7".into()),
        ("job_id", Value::Int(12)),
        ("connectors", Value::Nil),
        ("logger", Value::Nil),
    ]);
    let v = call(&pool, "fx.dispatch:declared_only", vec![], context.clone())
        .await
        .unwrap();
    assert_eq!(
        v,
        Value::map([("run_id", Value::from("r-7")), ("job_id", Value::Int(12))])
    );
    // With **kwargs it gets every context key and every kwarg.
    let v = call(
        &pool,
        "fx.dispatch:everything",
        kw(&[("extra", 1i64.into())]),
        context,
    )
    .await
    .unwrap();
    let keys: Vec<_> = ["connectors", "extra", "job_id", "logger", "run_id"]
        .into_iter()
        .map(Value::from)
        .collect();
    assert_eq!(v, Value::map([("keys", Value::List(keys))]));
}

#[tokio::test]
async fn references_that_do_not_resolve_are_bad_reference() {
    let pool = builder().build().await.unwrap();
    let before = worker_pid(&pool).await;
    let m = bad_reference(call(&pool, "fx.no_such_module:run", vec![], vec![]).await);
    assert!(m.contains("no_such_module"), "{m}");
    let m = bad_reference(call(&pool, "fx.broken_import:run", vec![], vec![]).await);
    assert!(m.contains("broken at import"), "{m}");
    let m = bad_reference(call(&pool, "fx.dispatch:no_such_function", vec![], vec![]).await);
    assert!(m.contains("no_such_function"), "{m}");
    let m = bad_reference(call(&pool, "fx.dispatch:not_callable", vec![], vec![]).await);
    assert!(m.contains("not callable"), "{m}");
    // Refused before it reaches a worker.
    bad_reference(call(&pool, "no colon here", vec![], vec![]).await);
    // A dotted attribute path resolves.
    let v = call(&pool, "fx.dispatch:Holder.nested", vec![], vec![])
        .await
        .unwrap();
    assert_eq!(v, Value::from("nested"));
    assert_eq!(worker_pid(&pool).await, before);
}

#[tokio::test]
async fn validate_checks_names_required_parameters_and_simple_annotations() {
    let pool = builder().build().await.unwrap();
    let keys = |ks: &[&str]| ks.iter().map(|k| k.to_string()).collect::<Vec<_>>();
    // Fine: the kwargs fit, or the context provides what they leave out.
    pool.validate(
        "fx.dispatch:needs_period",
        kw(&[("period", "2026-05".into())]),
        vec![],
    )
    .await
    .unwrap();
    pool.validate("fx.dispatch:needs_period", vec![], keys(&["period"]))
        .await
        .unwrap();
    pool.validate(
        "fx.dispatch:typed",
        kw(&[
            ("period", "2026-05".into()),
            ("count", Value::Int(3)),
            ("ratio", Value::Int(2)), // an int where a float is expected is fine
            ("flag", Value::Bool(true)),
            ("note", Value::Nil), // Optional[str]
            ("items", Value::List(vec![])),
            ("anything", Value::Int(1)), // **ctx takes it
        ]),
        vec![],
    )
    .await
    .unwrap();
    // Failing.
    let m = bad_reference(
        pool.validate(
            "fx.dispatch:needs_period",
            kw(&[("period", Value::Int(2026))]),
            vec![],
        )
        .await,
    );
    assert!(m.contains("'period'") && m.contains("str"), "{m}");
    let m = bad_reference(
        pool.validate(
            "fx.dispatch:typed",
            kw(&[("period", "p".into()), ("count", "3".into())]),
            vec![],
        )
        .await,
    );
    assert!(m.contains("'count'") && m.contains("int"), "{m}");
    let m = bad_reference(
        pool.validate(
            "fx.dispatch:typed",
            kw(&[("period", "p".into()), ("note", Value::Int(1))]),
            vec![],
        )
        .await,
    );
    assert!(m.contains("'note'"), "{m}");
    let m = bad_reference(
        pool.validate("fx.dispatch:needs_period", vec![], vec![])
            .await,
    );
    assert!(m.contains("'period'"), "{m}");
    let m = bad_reference(
        pool.validate(
            "fx.dispatch:needs_period",
            kw(&[("period", "p".into()), ("colour", "red".into())]),
            vec![],
        )
        .await,
    );
    assert!(m.contains("'colour'"), "{m}");
    bad_reference(pool.validate("fx.no_such_module:run", vec![], vec![]).await);
    bad_reference(
        pool.validate("fx.dispatch:no_such_function", vec![], vec![])
            .await,
    );
    bad_reference(
        pool.validate("fx.dispatch:not_callable", vec![], vec![])
            .await,
    );
    bad_reference(pool.validate("fx.broken_import:run", vec![], vec![]).await);
    // Validation does not call: a function that would exit the worker is fine to check.
    let before = worker_pid(&pool).await;
    pool.validate("fx.hostile:exit_hard", vec![], vec![])
        .await
        .unwrap();
    assert_eq!(worker_pid(&pool).await, before);
}

#[tokio::test]
async fn submit_with_kwarg_builder() {
    let pool = builder().build().await.unwrap();
    let v = pool
        .submit(Call::new("fx.dispatch:needs_period").kwarg("period", "2026-05"))
        .await
        .unwrap()
        .decode()
        .unwrap();
    assert_eq!(v.get("dry_run"), Some(&Value::Bool(false)));
}

#[tokio::test]
async fn pinned_workers_run_on_their_cpu_and_callers_get_the_one_on_theirs() {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pool = builder()
        .workers(2)
        .pin_workers(true)
        .build()
        .await
        .unwrap();
    let unpinned = builder().workers(1).build().await.unwrap();
    let on = |v: Value| -> Vec<i64> {
        let Value::List(l) = v else { panic!("{v}") };
        l.iter().map(|c| c.as_i64().unwrap()).collect()
    };
    // Without pinning a worker may run anywhere (the protection off: the check can fail).
    let free = on(call(&unpinned, "fx.basic:cpus", vec![], vec![])
        .await
        .unwrap());
    assert_eq!(
        free.len(),
        cpus,
        "an unpinned worker runs on every CPU: {free:?}"
    );
    // Both workers idle, then this test's thread on each one's CPU in turn: the pool
    // hands it the worker on its CPU.
    crate::support::wait_for(
        "both workers idle",
        std::time::Duration::from_secs(10),
        || {
            let st = pool.status();
            st.slots
                .iter()
                .filter(|w| w.state == snakepit::WorkerState::Idle)
                .count()
                == 2
        },
    )
    .await;
    for slot in 0..2 {
        let cpu = pool.worker_cpu(slot).expect("a pinned pool names its CPUs");
        let mut set = nix::sched::CpuSet::new();
        set.set(cpu).unwrap();
        nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).unwrap();
        let got = on(call(&pool, "fx.basic:cpus", vec![], vec![]).await.unwrap());
        assert_eq!(got, vec![cpu as i64], "slot {slot}'s worker on CPU {cpu}");
    }
    assert_eq!(unpinned.worker_cpu(0), None);
}
