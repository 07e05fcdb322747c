//! Scratch: a host request (echo) against the raw ping-pong, with scheduler figures.
use std::time::Duration;

use snakepit::{Call, Pool, Value};
use snakepit_benches::{
    bench_python, median, process_stat, python_dir, report_sched, thread_stats, RawPeer, Samples,
};

fn samples(v: Value) -> Samples {
    let Value::List(items) = v else { panic!("{v}") };
    let mut s = Samples::with_capacity(items.len());
    for i in items {
        s.push(Duration::from_nanos(i.as_i64().unwrap() as u64));
    }
    s
}

fn main() {
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(9);
    let calls: usize = std::env::var("CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    let python = bench_python(true);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let pool = Pool::builder()
            .python(&python)
            .sys_path(python_dir())
            .sys_path("/tmp/scratch/py")
            .workers(1)
            .build()
            .await
            .unwrap();
        let wpid = pool
            .submit(Call::new("bench_plugin:pid"))
            .await
            .unwrap()
            .decode()
            .unwrap()
            .as_i64()
            .unwrap() as u32;
        let mut peer = RawPeer::python(&python, None).unwrap();
        let ppid = peer.pid().unwrap();
        let echo = |n: usize| {
            let pool = &pool;
            async move {
                let call = Call::new(
                    std::env::var("ECHOFN").unwrap_or("bench_connectors:echo_loop".into()),
                )
                .kwarg("n", n as i64)
                .timeout(Duration::from_secs(120));
                samples(pool.submit(call).await.unwrap().decode().unwrap())
            }
        };
        echo(500).await;
        if std::env::var("PERF").is_ok() {
            println!("WPID {wpid} PPID {ppid} SELF {}", std::process::id());
            let t = std::time::Instant::now();
            while t.elapsed() < Duration::from_secs(12) {
                echo(20000).await;
            }
            let t = std::time::Instant::now();
            let mut i = 0u64;
            while t.elapsed() < Duration::from_secs(12) {
                i += 1;
                peer.round_trip(i).unwrap();
            }
            return;
        }
        if std::env::var("PROF").is_ok() {
            let v = pool
                .submit(
                    Call::new("profecho:run")
                        .kwarg("n", 20000i64)
                        .timeout(Duration::from_secs(120)),
                )
                .await
                .unwrap()
                .decode()
                .unwrap();
            println!("{}", v.as_str().unwrap());
            return;
        }
        let mut ratios = vec![];
        let (mut es, mut rs) = (vec![], vec![]);
        for round in 0..rounds {
            let b = thread_stats();
            let wb = process_stat(wpid);
            let e = echo(calls).await;
            let a = thread_stats();
            let wa = process_stat(wpid);
            if round == rounds - 1 {
                eprintln!(
                    "{}",
                    report_sched("echo", calls, &b, &a, &[("worker".into(), wb, wa)])
                );
            }
            let b = thread_stats();
            let pb = process_stat(ppid);
            let mut r = Samples::with_capacity(calls);
            for i in 0..calls as u64 {
                let t0 = std::time::Instant::now();
                peer.round_trip(1000 + i + round as u64 * 100000).unwrap();
                r.push(t0.elapsed());
            }
            let a = thread_stats();
            let pa = process_stat(ppid);
            if round == rounds - 1 {
                eprintln!(
                    "{}",
                    report_sched("raw", calls, &b, &a, &[("raw worker".into(), pb, pa)])
                );
            }
            eprintln!("round {round}: echo {:.1} raw {:.1}", e.p50(), r.p50());
            ratios.push(e.p50() / r.p50());
            es.push(e.p50());
            rs.push(r.p50());
        }
        println!(
            "echo p50 {:.1} µs, raw {:.1} µs, ratio {:.2}",
            median(&es),
            median(&rs),
            median(&ratios)
        );
    });
}
