//! One small call through a 1-worker pool (fork-server workers, the benchmark venv's
//! interpreter when it exists: see `snakepit_benches::bench_python`), and the same on
//! the raw ping-pong with the minimal Python worker, for scale.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use snakepit::{Call, Pool};
use snakepit_benches::{bench_python, python_dir, RawPeer};

fn pool_call(c: &mut Criterion) {
    let python = bench_python(false);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let pool = rt
        .block_on(
            Pool::builder()
                .python(&python)
                .sys_path(python_dir())
                .workers(1)
                .build(),
        )
        .expect("pool");
    let mut g = c.benchmark_group("pool");
    g.bench_function("submit echo(x=1), 1 worker", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let t = Instant::now();
                for _ in 0..iters {
                    pool.submit(Call::new("bench_plugin:echo").kwarg("x", 1i64))
                        .await
                        .unwrap();
                }
                t.elapsed()
            })
        })
    });
    let mut raw = RawPeer::python(&python, None).expect("raw worker");
    g.bench_function("raw ping-pong echo(x=1), same Python worker", |b| {
        let mut id = 0;
        b.iter(|| {
            id += 1;
            raw.round_trip(id).unwrap()
        })
    });
    g.finish();
    drop(raw);
    rt.block_on(pool.shutdown(Duration::from_secs(2)));
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    targets = pool_call
}
criterion_main!(benches);
