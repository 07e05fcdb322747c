//! Property-based fuzzing of the supervisor's read side: the frame buffer, the message
//! decoders and the value codec get arbitrary bytes, mutated golden frames and frames cut
//! at arbitrary points, and must answer with a value or an error: never a panic, a hang,
//! or an allocation that the input did not pay for. Values round-trip byte for byte.
//! The hostile frames of `fixtures/hostile/` (deep nesting, huge maps, truncated ext
//! types, lengths of 2^32-1) are replayed first; a crash found here becomes one more.
//!
//! Bounded for CI (a few seconds in all). A longer run:
//! `PROPTEST_CASES=200000 cargo test --release -p snakepit-proto --test fuzz`.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use proptest::prelude::*;
use snakepit_proto::{
    read_frame, DateTime, FrameBuffer, FromWorker, RawValue, ToWorker, Value, DEFAULT_FRAME_LIMIT,
};

/// `PROPTEST_CASES` if set, else `cases`.
fn config(cases: u32) -> ProptestConfig {
    let mut c = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        c.cases = cases;
    }
    c.failure_persistence = None;
    c
}

fn fixtures(dir: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures")
        .join(dir);
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "bin"))
        .map(|p: PathBuf| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect();
    out.sort();
    out
}

/// Everything the supervisor (and a test) may do with a frame body from a worker: it
/// must come back, whatever the bytes.
fn decode_all(body: &[u8]) {
    let bytes = Bytes::copy_from_slice(body);
    if let Ok(FromWorker::Result { value, .. } | FromWorker::HostRequest { payload: value, .. }) =
        FromWorker::decode(&bytes)
    {
        let _ = value.decode();
        let _ = value.to_json();
    }
    let _ = ToWorker::decode(body);
    let _ = Value::from_msgpack(body);
    let _ = RawValue::from_bytes(bytes).map(|v| v.decode());
}

/// Feeds `stream` to a frame buffer in `cuts`-sized pieces; returns the bodies, or
/// stops at the first error.
fn frames(stream: &[u8], cuts: &[usize], limit: usize) -> Vec<Bytes> {
    let mut fb = FrameBuffer::new(limit);
    let mut out = Vec::new();
    let mut rest = stream;
    let mut cuts = cuts.iter().cycle();
    while !rest.is_empty() {
        let n = (*cuts.next().unwrap_or(&1)).clamp(1, rest.len());
        fb.read_space().extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        loop {
            match fb.next_frame() {
                Ok(Some(body)) => out.push(body),
                Ok(None) => break,
                Err(_) => return out,
            }
        }
    }
    out
}

#[test]
fn every_hostile_fixture_is_refused_or_harmless() {
    let all = fixtures("hostile");
    assert!(all.len() > 10, "fixtures/hostile is missing");
    for (name, frame) in all {
        // Through the frame buffer (limit checked before allocation), then the decoders.
        for body in frames(&frame, &[frame.len()], DEFAULT_FRAME_LIMIT) {
            decode_all(&body);
            // A RESULT keeps its value undecoded; reading it is refused.
            if name.starts_with("from-worker-result-") {
                let Ok(FromWorker::Result { value, .. }) = FromWorker::decode(&body) else {
                    panic!("{name}: the envelope is fine")
                };
                assert!(value.decode().is_err(), "{name}: a hostile value decoded");
            }
        }
        let _ = read_frame(&mut &frame[..], DEFAULT_FRAME_LIMIT);
    }
}

fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Nil),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::Int),
        any::<f64>()
            .prop_filter("NaN is not equal to itself", |f| !f.is_nan())
            .prop_map(Value::Float),
        ".{0,40}".prop_map(Value::Str),
        proptest::collection::vec(any::<u8>(), 0..64).prop_map(Value::Bytes),
        (any::<i64>(), proptest::option::of(-86_399i32..=86_399))
            .prop_map(|(micros, offset)| Value::DateTime(DateTime { micros, offset })),
        any::<i32>().prop_map(Value::Date),
        "-?[0-9]{1,20}(\\.[0-9]{1,10})?".prop_map(Value::Decimal),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::List),
            proptest::collection::vec((".{0,12}", inner), 0..8).prop_map(Value::Map),
        ]
    })
}

/// A golden frame with a few bytes changed, cut, or inserted.
fn mutated_golden() -> impl Strategy<Value = Vec<u8>> {
    let golden: Vec<Vec<u8>> = fixtures("frames").into_iter().map(|(_, f)| f).collect();
    (
        0..golden.len(),
        proptest::collection::vec((any::<usize>(), any::<u8>(), 0u8..3), 1..8),
    )
        .prop_map(move |(i, edits)| {
            let mut f = golden[i].clone();
            for (at, byte, how) in edits {
                let at = at % (f.len() + 1);
                match how {
                    0 if at < f.len() => f[at] = byte,
                    1 => f.truncate(at),
                    _ => f.insert(at, byte),
                }
            }
            f
        })
}

proptest! {
    #![proptest_config(config(3000))]

    #[test]
    fn arbitrary_bodies_decode_or_fail(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        decode_all(&body);
    }

    #[test]
    fn mutated_golden_frames_decode_or_fail(frame in mutated_golden(), cut in 1usize..64) {
        for body in frames(&frame, &[cut], DEFAULT_FRAME_LIMIT) {
            decode_all(&body);
        }
        let _ = read_frame(&mut &frame[..], 1 << 16);
    }
}

proptest! {
    #![proptest_config(config(500))]

    #[test]
    fn values_round_trip_byte_for_byte(v in value()) {
        let bytes = v.to_msgpack();
        let back = Value::from_msgpack(&bytes).expect("a value we encoded decodes");
        prop_assert_eq!(back.to_msgpack(), bytes);
        prop_assert_eq!(back, v);
    }

    #[test]
    fn frames_cut_anywhere_come_out_whole(
        values in proptest::collection::vec(value(), 1..4),
        cuts in proptest::collection::vec(1usize..200, 1..16),
    ) {
        let sent: Vec<Vec<u8>> = values
            .iter()
            .enumerate()
            .map(|(i, v)| {
                FromWorker::Result { call_id: i as u64, value: RawValue::encode(v) }.encode()
            })
            .collect();
        let got = frames(&sent.concat(), &cuts, DEFAULT_FRAME_LIMIT);
        prop_assert_eq!(got.len(), sent.len());
        for (body, frame) in got.iter().zip(&sent) {
            prop_assert_eq!(&body[..], &frame[4..]);
        }
    }
}
