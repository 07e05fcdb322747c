//! The connectors benchmark: a plugin's named-query round trip (`ctx["connectors"]
//! .sql("billing").run("by-id", id=1)`, timed inside the plugin) against the same query
//! issued directly from Rust (sqlx, a pool of one connection on the same SQLite file),
//! with the raw ping-pong (one Python round trip, no supervisor), the built-in `echo`
//! host method (a host request's floor) and the same request given to the connectors'
//! host handler from Rust (the supervisor's share, no worker) as references, in one run.
//!
//! ```text
//! cargo run --release -p snakepit-benches --bin connectors [-- --rounds N] [--calls N] [--postgres]
//! ```
//!
//! `--postgres` runs the same against PostgreSQL (`postgres://postgres@127.0.0.1:5432/test`,
//! a table of its own, dropped at the end) instead of a SQLite file.
//!
//! Rounds interleave the candidates (the order flips every round); each figure is the
//! median over rounds of the round's p50, the ratio the median of the per-round ratios.
//! Target: the proxy adds at most one raw ping-pong plus 10 %:
//! `plugin p50 <= 1.10 × direct p50 + raw ping-pong p50`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use snakepit::{Call, HostHandler, HostRequest, Pool, RawValue, Value};
use snakepit_benches::{arg, bench_python, median, python_dir, RawPeer, Samples};
use snakepit_connectors::{Connectors, ConnectorsConfig, Grants};
use sqlx::sqlite::SqlitePoolOptions;

const PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// The database the direct queries go to (a pool of one connection).
enum Direct {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

/// The samples (nanoseconds) a plugin loop returned.
fn samples(v: Value) -> Samples {
    let Value::List(items) = v else {
        panic!("the plugin returned {v}")
    };
    let mut s = Samples::with_capacity(items.len());
    for i in items {
        s.push(Duration::from_nanos(i.as_i64().expect("ns") as u64));
    }
    s
}

async fn plugin(pool: &Pool, func: &str, n: usize) -> Samples {
    plugin_with(pool, func, n, 0).await
}

async fn plugin_with(pool: &Pool, func: &str, n: usize, us: i64) -> Samples {
    let call = Call::new(func)
        .kwarg("n", n as i64)
        .kwarg("us", us)
        .kwarg("id", 1i64)
        .context(vec![
            ("connectors".into(), Value::Nil),
            ("pools".into(), Value::Nil),
        ])
        .timeout(Duration::from_secs(120));
    samples(
        pool.submit(call)
            .await
            .expect("the plugin loop")
            .decode()
            .unwrap(),
    )
}

async fn direct(db: &Direct, table: &str, n: usize) -> Samples {
    let mut s = Samples::with_capacity(n);
    let sqlite = format!("SELECT id, customer, amount FROM {table} WHERE id = ?");
    let pg = format!("SELECT id, customer, amount FROM {table} WHERE id = $1");
    for _ in 0..n {
        let t0 = Instant::now();
        let rows = match db {
            Direct::Sqlite(p) => sqlx::query(&sqlite)
                .bind(1i64)
                .fetch_all(p)
                .await
                .unwrap()
                .len(),
            Direct::Postgres(p) => sqlx::query(&pg)
                .bind(1i32)
                .fetch_all(p)
                .await
                .unwrap()
                .len(),
        };
        s.push(t0.elapsed());
        assert_eq!(rows, 1);
    }
    s
}

/// The `sql.run` request a plugin sends, served by the handler with no worker.
async fn handler(connectors: &Connectors, n: usize) -> Samples {
    let payload = RawValue::encode(&Value::map([
        ("connector", Value::from("billing")),
        ("query", Value::from("by-id")),
        ("params", Value::map([("id", Value::Int(1))])),
    ]));
    let mut s = Samples::with_capacity(n);
    for i in 0..n {
        let req = HostRequest {
            pool: "default".into(),
            worker: 0,
            call_id: i as u64,
            reference: "bench_connectors:query_loop".into(),
            run_id: None,
            method: "sql.run".into(),
            payload: payload.clone(),
        };
        let t0 = Instant::now();
        let v = connectors.handle(req).await.expect("sql.run");
        s.push(t0.elapsed());
        assert!(matches!(v, Value::List(r) if r.len() == 1));
    }
    s
}

/// The connectors' handler, timing each request it serves (to split the plugin's round
/// trip into the handler's share and the rest).
struct Timed {
    inner: Connectors,
    spent: Arc<Mutex<Vec<Duration>>>,
}

impl HostHandler for Timed {
    fn handle(&self, req: HostRequest) -> snakepit::HostFuture {
        if req.method == "spin" {
            // Busy for the given microseconds on this thread, then answer: a reply that
            // comes that late, with the supervisor's thread awake all along.
            let us = req
                .payload
                .decode()
                .ok()
                .and_then(|v| v.as_i64())
                .unwrap_or(0);
            let until = Instant::now() + Duration::from_micros(us as u64);
            while Instant::now() < until {
                std::hint::spin_loop();
            }
            return Box::pin(async { Ok(Value::Nil) });
        }
        let fut = self.inner.handle(req);
        let spent = self.spent.clone();
        Box::pin(async move {
            let t0 = Instant::now();
            let out = fut.await;
            spent.lock().unwrap().push(t0.elapsed());
            out
        })
    }
}

fn raw(peer: &mut RawPeer, n: usize, first: u64) -> Samples {
    let mut s = Samples::with_capacity(n);
    for i in 0..n as u64 {
        let t0 = Instant::now();
        peer.round_trip(first + i).unwrap();
        s.push(t0.elapsed());
    }
    s
}

fn main() {
    let rounds = arg("--rounds", 15);
    let calls = arg("--calls", 2000);
    let python = bench_python(true);
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let postgres = std::env::args().any(|a| a == "--postgres");
        let table = format!("bench_invoices_{}", std::process::id());
        let create = format!(
            "CREATE TABLE {table} (id {}, customer TEXT, amount NUMERIC(10,2), status TEXT, period TEXT);
             INSERT INTO {table} (customer, amount, status, period) VALUES ('ada', 12.50, 'draft', '2026-05');",
            if postgres { "SERIAL PRIMARY KEY" } else { "INTEGER PRIMARY KEY" }
        );
        // Configured as the connectors configure their pools (SQLite: no ping before use).
        let (db, url) = if postgres {
            let db = sqlx::postgres::PgPoolOptions::new()
                .max_connections(1)
                .connect(PG_URL)
                .await
                .unwrap_or_else(|e| panic!("cannot connect to {PG_URL}: {e}"));
            sqlx::raw_sql(&create).execute(&db).await.unwrap();
            (Direct::Postgres(db), PG_URL.to_owned())
        } else {
            let file = dir.path().join("billing.db");
            let db = SqlitePoolOptions::new()
                .max_connections(1)
                .test_before_acquire(false)
                .connect(&format!("sqlite://{}?mode=rwc", file.display()))
                .await
                .unwrap();
            sqlx::raw_sql(&create).execute(&db).await.unwrap();
            (Direct::Sqlite(db), "sqlite://billing.db".to_owned())
        };
        let toml = format!(
            "[sql.billing]\nurl = \"{url}\"\nmax_connections = 1\n[sql.billing.queries]\nby-id = \"SELECT id, customer, amount FROM {table} WHERE id = :id\"\n"
        );
        let cfg = ConnectorsConfig::parse(&toml, &dir.path().join("connectors.toml"), dir.path(), |_| None)
            .unwrap();
        let connectors = Connectors::new(cfg, Grants::default(), None).unwrap();
        assert!(connectors.check().await.is_empty());
        let spent = Arc::new(Mutex::new(Vec::new()));
        let pool = Pool::builder()
            .python(&python)
            .sys_path(python_dir())
            .workers(1)
            .shared_host_handler(Arc::new(Timed {
                inner: connectors.clone(),
                spent: spent.clone(),
            }))
            .build()
            .await
            .unwrap();
        let mut peer = RawPeer::python(&python, None).unwrap();
        // warm up every path
        plugin(&pool, "bench_connectors:query_loop", 200).await;
        plugin(&pool, "bench_connectors:echo_loop", 200).await;
        direct(&db, &table, 200).await;
        raw(&mut peer, 200, 1);

        handler(&connectors, 200).await;
        let (mut p, mut d, mut r, mut e, mut h, mut within, mut spin, mut ratio) =
            (vec![], vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
        let mut next_id = 1_000;
        for round in 0..rounds {
            spent.lock().unwrap().clear();
            let (pp, dd, rr, ee, hh);
            if round % 2 == 0 {
                dd = direct(&db, &table, calls).await;
                pp = plugin(&pool, "bench_connectors:query_loop", calls).await;
                hh = handler(&connectors, calls).await;
                rr = raw(&mut peer, calls, next_id);
                ee = plugin(&pool, "bench_connectors:echo_loop", calls).await;
            } else {
                ee = plugin(&pool, "bench_connectors:echo_loop", calls).await;
                rr = raw(&mut peer, calls, next_id);
                hh = handler(&connectors, calls).await;
                pp = plugin(&pool, "bench_connectors:query_loop", calls).await;
                dd = direct(&db, &table, calls).await;
            }
            next_id += calls as u64;
            eprintln!(
                "round {}/{rounds}: plugin {:.1} µs, direct {:.1} µs, handler {:.1} µs, raw ping-pong {:.1} µs, echo {:.1} µs",
                round + 1,
                pp.p50(),
                dd.p50(),
                hh.p50(),
                rr.p50(),
                ee.p50()
            );
            h.push(hh.p50());
            let mut inside = Samples::with_capacity(calls);
            for d in spent.lock().unwrap().iter() {
                inside.push(*d);
            }
            within.push(inside.p50());
            // A reply that comes as late as the handler's, the supervisor awake meanwhile.
            let wait = inside.p50().round() as i64;
            let ss = plugin_with(&pool, "bench_connectors:spin_loop", calls, wait).await;
            spin.push(ss.p50() - wait as f64);
            ratio.push(pp.p50() / dd.p50());
            p.push(pp.p50());
            d.push(dd.p50());
            r.push(rr.p50());
            e.push(ee.p50());
        }
        let (p, d, r, e, h) = (median(&p), median(&d), median(&r), median(&e), median(&h));
        let budget = 1.10 * d + r;
        println!("| what | p50 |");
        println!("|---|---:|");
        println!("| named query from Rust (sqlx, direct) | {d:.1} µs |");
        println!("| named query from a plugin (`sql(...).run`) | {p:.1} µs |");
        println!(
            "| … of which in the host handler, during the plugin's loop | {:.1} µs |",
            median(&within)
        );
        println!("| the same request to the host handler from Rust (no worker) | {h:.1} µs |");
        println!("| host request `echo` from a plugin (the floor) | {e:.1} µs |");
        println!(
            "| a host request answered after the handler's time (spinning), minus that time | {:.1} µs |",
            median(&spin)
        );
        println!("| raw ping-pong (one Python round trip) | {r:.1} µs |");
        println!("| proxy cost (plugin − direct) | {:.1} µs |", p - d);
        println!("| ratio plugin / direct (median of rounds) | {:.2}× |", median(&ratio));
        println!(
            "| target: plugin ≤ 1.10 × direct + raw ping-pong = {budget:.1} µs | {} |",
            if p <= budget { "met" } else { "NOT met" }
        );
        pool.shutdown(Duration::from_secs(5)).await;
        if let Direct::Postgres(db) = &db {
            sqlx::raw_sql(&format!("DROP TABLE {table}")).execute(db).await.unwrap();
        }
    });
}
