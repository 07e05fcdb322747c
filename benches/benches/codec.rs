//! The protocol codec on the supervisor's hot path: encoding a small CALL, decoding a
//! RESULT envelope (small and 10,000 rows: the payload stays bytes, so both should cost
//! the same), and decoding a 10,000-row value into a `Value` tree (what a caller pays
//! only when it reads the result).

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use snakepit_benches::rows_value;
use snakepit_proto::{FromWorker, RawValue, ToWorker, Value};

fn body_of(frame: Vec<u8>) -> Bytes {
    Bytes::from(frame).slice(4..)
}

fn codec(c: &mut Criterion) {
    let mut g = c.benchmark_group("codec");
    g.bench_function("encode CALL (echo, 1 kwarg)", |b| {
        let mut id = 0u64;
        b.iter(|| {
            id += 1;
            ToWorker::Call {
                call_id: id,
                reference: black_box("bench_plugin:echo").into(),
                kwargs: vec![("x".into(), Value::Int(1))],
                context: vec![],
                measure: false,
            }
            .encode()
        })
    });
    let small = body_of(
        FromWorker::Result {
            call_id: 123_456,
            value: RawValue::encode(&Value::Int(1)),
        }
        .encode(),
    );
    g.bench_function("decode RESULT envelope (small)", |b| {
        b.iter(|| FromWorker::decode(black_box(&small)).unwrap())
    });
    let rows = RawValue::encode(&rows_value(10_000));
    let big = body_of(
        FromWorker::Result {
            call_id: 123_456,
            value: rows.clone(),
        }
        .encode(),
    );
    g.bench_function("decode RESULT envelope (10k rows)", |b| {
        b.iter(|| FromWorker::decode(black_box(&big)).unwrap())
    });
    g.throughput(Throughput::Bytes(rows.as_bytes().len() as u64));
    g.sample_size(20);
    g.bench_function("decode 10k-row value into Value", |b| {
        b.iter(|| black_box(&rows).decode().unwrap())
    });
    g.bench_function("decode 10k-row value to JSON", |b| {
        b.iter(|| black_box(&rows).to_json().unwrap())
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_secs(1))
        .measurement_time(std::time::Duration::from_secs(3));
    targets = codec
}
criterion_main!(benches);
