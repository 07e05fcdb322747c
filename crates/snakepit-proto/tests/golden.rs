//! Golden frames shared with the Python tests (`fixtures/frames/`): each decodes, and
//! re-encodes byte for byte, including every value decoded into a tree and back.

use std::path::PathBuf;

use bytes::Bytes;
use snakepit_proto::{
    kind, read_frame, DateTime, ExceptionKind, FromWorker, ToWorker, Value, DEFAULT_FRAME_LIMIT,
};

fn frames_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/frames")
}

fn golden(name: &str) -> (Vec<u8>, Bytes) {
    let path = frames_dir().join(format!("{name}.bin"));
    let frame = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let body = read_frame(&mut &frame[..], DEFAULT_FRAME_LIMIT)
        .unwrap()
        .unwrap();
    (frame, Bytes::from(body))
}

/// Decodes a worker-side frame, checks it re-encodes to the same bytes, and also that its
/// values survive a full decode into `Value` and back.
fn from_worker(name: &str) -> FromWorker {
    let (frame, body) = golden(name);
    let msg = FromWorker::decode(&body).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(msg.encode(), frame, "{name}: re-encoded bytes differ");
    if let FromWorker::Result { value, .. } | FromWorker::HostRequest { payload: value, .. } = &msg
    {
        let tree = value.decode().unwrap();
        assert_eq!(
            tree.to_msgpack(),
            value.as_bytes(),
            "{name}: value re-encoding differs"
        );
    }
    msg
}

fn to_worker(name: &str) -> ToWorker {
    let (frame, body) = golden(name);
    let msg = ToWorker::decode(&body).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(msg.encode(), frame, "{name}: re-encoded bytes differ");
    msg
}

#[test]
fn every_golden_frame_is_covered() {
    let mut names: Vec<String> = std::fs::read_dir(frames_dir())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|n| n.strip_suffix(".bin").map(str::to_owned))
        .collect();
    names.sort();
    for name in &names {
        let (_, body) = golden(name);
        let ty = body[1];
        if ty < kind::RESULT && ty != kind::HANDSHAKE {
            to_worker(name);
        } else {
            from_worker(name);
        }
    }
    assert!(names.len() >= 14, "golden frames missing: {names:?}");
}

#[test]
fn supervisor_to_worker_frames() {
    let ToWorker::Call {
        call_id,
        reference,
        kwargs,
        context,
        measure,
    } = to_worker("call-small")
    else {
        panic!("not a call")
    };
    assert_eq!((call_id, reference.as_str()), (7, "billing.invoicing:run"));
    assert!(measure);
    assert_eq!(
        kwargs,
        vec![
            ("period".into(), Value::from("2026-05")),
            ("dry_run".into(), Value::Bool(false))
        ]
    );
    assert_eq!(context[1], ("run_id".into(), Value::from("r-1")));
    assert_eq!(to_worker("cancel"), ToWorker::Cancel { call_id: 7 });
    assert_eq!(to_worker("shutdown"), ToWorker::Shutdown);
    let ToWorker::HostReply {
        request_id: 4,
        reply: Err(f),
    } = to_worker("host-reply-err")
    else {
        panic!()
    };
    assert_eq!(f.type_name, "UnknownMethod");
    let ToWorker::Validate { context_keys, .. } = to_worker("validate") else {
        panic!()
    };
    assert_eq!(context_keys, ["connectors", "run_id"]);
}

#[test]
fn worker_to_supervisor_frames() {
    assert_eq!(
        from_worker("handshake"),
        FromWorker::handshake(4242, "3.11.7", "stdlib")
    );
    let FromWorker::Result { value, .. } = from_worker("result-scalars") else {
        panic!()
    };
    let v = value.decode().unwrap();
    assert_eq!(v.get("max"), Some(&Value::Int(i64::MAX)));
    assert_eq!(v.get("min"), Some(&Value::Int(i64::MIN)));
    assert_eq!(v.get("str"), Some(&Value::from("héllo")));
    assert_eq!(v.get("bytes"), Some(&Value::Bytes(vec![0, 0xff])));
    assert_eq!(v.get("neg_float"), Some(&Value::Float(-0.25)));

    let FromWorker::Result { value, .. } = from_worker("result-ext") else {
        panic!()
    };
    let Value::List(items) = value.decode().unwrap() else {
        panic!()
    };
    let Value::DateTime(aware) = items[0] else {
        panic!()
    };
    assert_eq!(aware.iso(), "2026-05-01T12:30:45.123456+02:00");
    assert_eq!(
        items[1],
        Value::DateTime(DateTime::parse_iso("2026-05-01T12:30:45").unwrap())
    );
    assert_eq!(
        items[3],
        Value::Date(snakepit_proto::parse_date("2026-05-01").unwrap())
    );
    assert_eq!(items[4], Value::Date(-1));
    assert_eq!(items[5], Value::Decimal("12.50".into()));

    from_worker("result-long");
    let FromWorker::Exception { exception, .. } = from_worker("exception") else {
        panic!()
    };
    assert_eq!(
        (exception.kind, exception.type_name.as_str()),
        (ExceptionKind::Raised, "ValueError")
    );
    let FromWorker::Log(rec) = from_worker("log-between-calls") else {
        panic!()
    };
    assert_eq!(
        (rec.call_id, rec.level, rec.exc_text.as_deref()),
        (None, 30, Some("exc text"))
    );
    let FromWorker::HostRequest {
        method, payload, ..
    } = from_worker("host-request")
    else {
        panic!()
    };
    assert_eq!(
        (method.as_str(), payload.decode().unwrap()),
        ("echo", Value::map([("x", Value::Int(1))]))
    );
    assert_eq!(
        from_worker("usage"),
        FromWorker::Usage {
            call_id: 7,
            usage: snakepit_proto::WorkerUsage {
                cpu_user: 0.25,
                cpu_sys: 0.0625,
                max_rss_kib: 70000,
            },
        }
    );
}

#[test]
fn hostile_bodies_are_errors_not_panics() {
    for body in [
        &[][..],
        &[0x93, 0x10, 0x07][..],                   // RESULT without its value
        &[0x92, 0x10, 0x07][..],                   // wrong arity
        &[0x91, 0x7f][..],                         // unknown type
        &[0x93, 0x10, 0x07, 0xca, 0, 0, 0, 0][..], // float 32 inside a value is still skippable
        &[0x93, 0x10, 0x07, 0xdd, 0xff, 0xff, 0xff, 0xff][..], // huge array, no items
        &[0xc1][..],
    ] {
        let r = FromWorker::decode(&Bytes::copy_from_slice(body));
        if let Ok(FromWorker::Result { value, .. }) = &r {
            assert!(value.decode().is_err());
        } else {
            assert!(r.is_err(), "{body:?}");
        }
    }
    // A map with an int key, and a uint64 above i64::MAX.
    assert!(Value::from_msgpack(&[0x81, 0x01, 0xc0]).is_err());
    assert!(Value::from_msgpack(&[0xcf, 0xff, 0, 0, 0, 0, 0, 0, 0]).is_err());
    // Deep nesting is refused.
    let deep = vec![0x91; 10_000];
    assert!(Value::from_msgpack(&deep).is_err());
}
