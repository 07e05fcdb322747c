//! Plain calls: values, async functions, exceptions, logs.

use snakepit::{Call, CallError, Value};

use crate::support::builder;

#[tokio::test]
async fn sync_and_async_calls_return_values() {
    let pool = builder().build().await.unwrap();
    for f in ["fx.basic:add", "fx.basic:add_async"] {
        let v = pool
            .submit(Call::new(f).kwarg("a", 2i64).kwarg("b", 40i64))
            .await
            .unwrap();
        assert_eq!(
            v.decode().unwrap(),
            Value::map([("sum", Value::Int(42))]),
            "{f}"
        );
    }
    let v = pool
        .call(
            "fx.basic:ping",
            vec![],
            vec![("run_id".into(), "r1".into())],
        )
        .await
        .unwrap();
    assert!(v.is_nil());
}

#[tokio::test]
async fn raised_exception_carries_type_message_and_chained_traceback() {
    let pool = builder().build().await.unwrap();
    let err = pool
        .submit(Call::new("fx.basic:fail").kwarg("message", "bad period"))
        .await
        .unwrap_err();
    let CallError::Raised(e) = err else {
        panic!("{err:?}")
    };
    assert_eq!(
        (e.type_name.as_str(), e.message.as_str()),
        ("ValueError", "bad period")
    );
    assert!(e.traceback.contains("KeyError: 'inner'"), "{}", e.traceback);
    assert!(e.traceback.contains("direct cause"), "{}", e.traceback);
    // The worker is still usable.
    pool.submit(Call::new("fx.basic:ping")).await.unwrap();
}
