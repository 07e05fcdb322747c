//! The web console's cost (issue 14, item 7), in one run:
//!
//! ```text
//! cargo run --release -p snakepit-benches --bin console [-- --runs N] [--rounds N]
//!     [--calls N] [--out FILE]
//! ```
//!
//! A temporary install's history (SQLite) is filled with `--runs` finished runs
//! (default 100,000) of five jobs, and served by a console as `snakepit serve --http`
//! serves it. Measured, over HTTP on loopback, median of `--rounds` requests each:
//! the runs page's first screen (the page, its script and stylesheet, `/api/jobs` and
//! the first page of `/api/runs`, as the browser loads them) and the JSON of a filtered
//! page; and a scrape of `/metrics` after some calls. Then the pool's small call
//! (`bench_plugin:echo`, one caller, back to back) in interleaved rounds of `--calls`
//! calls: with the console idle, and while a client follows the live log of a running
//! job that logs every 50 ms (the browser's `EventSource`) and Prometheus scrapes
//! `/metrics` every second. Reported: each p50 (median over rounds) and their ratio;
//! and the cost of one metrics observation of a call, timed alone.
//! Progress on stderr; the markdown tables on stdout (and in `--out`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use snakepit::{Map, Value};
use snakepit_benches::{bench_python, median, python_dir, Samples};
use snakepit_console::{Console, Metrics};
use snakepit_host::control::ServeInfo;
use snakepit_host::{CallObserver, Host, HttpSettings, Install};
use snakepit_jobs::{JobSet, Scheduler, SystemClock};
use snakepit_state::State;

struct Opts {
    runs: usize,
    rounds: usize,
    calls: usize,
    out: Option<PathBuf>,
}

fn parse_opts() -> Opts {
    let mut o = Opts {
        runs: 100_000,
        rounds: 9,
        calls: 3000,
        out: None,
    };
    let mut args = std::env::args().skip(1);
    let num = |v: Option<String>, what: &str| -> usize {
        v.and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{what} needs a number"))
    };
    while let Some(a) = args.next() {
        match a.as_str() {
            "--runs" => o.runs = num(args.next(), "--runs"),
            "--rounds" => o.rounds = num(args.next(), "--rounds"),
            "--calls" => o.calls = num(args.next(), "--calls"),
            "--out" => o.out = args.next().map(PathBuf::from),
            other => panic!("unknown argument {other}; see the module doc"),
        }
    }
    o
}

const CHATTER: &str = r#"
import logging, time
log = logging.getLogger(__name__)

def chatter(*, seconds: int, **ctx):
    end = time.time() + seconds
    i = 0
    while time.time() < end:
        i += 1
        log.info("line %d", i)
        time.sleep(0.05)
    return {"lines": i}
"#;

/// `n` finished runs of five jobs, one a minute back from now, in one transaction.
async fn fill_history(db: &std::path::Path, n: usize) {
    use sqlx::sqlite::SqliteConnectOptions;
    use sqlx::{ConnectOptions, Connection};
    let mut conn = SqliteConnectOptions::new()
        .filename(db)
        .connect()
        .await
        .unwrap();
    let mut tx = conn.begin().await.unwrap();
    let now = Utc::now();
    let statuses = [
        "succeeded",
        "succeeded",
        "succeeded",
        "failed",
        "interrupted",
    ];
    for i in 0..n {
        let at: DateTime<Utc> = now - chrono::Duration::minutes(i as i64 + 10);
        let end = at + chrono::Duration::seconds(3);
        sqlx::query(
            "INSERT INTO runs (id, job, trigger_type, session_user_name, status, params, \
             scheduled_for, queued_at, started_at, finished_at, error, owner, lease_until) \
             VALUES ($1, $2, $3, 'system', $4, '{\"region\":\"eu\"}', $5, $5, $5, $6, NULL, '', $6)",
        )
        .bind(format!("{}-{i:06x}", at.format("%Y%m%d-%H%M%S")))
        .bind(format!("job-{}", i % 5))
        .bind(if i % 7 == 0 { "manual" } else { "schedule" })
        .bind(statuses[i % statuses.len()])
        .bind(at)
        .bind(end)
        .execute(&mut *tx)
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
}

async fn get(c: &reqwest::Client, url: &str) -> Duration {
    let began = Instant::now();
    let r = c.get(url).send().await.unwrap();
    assert!(r.status().is_success(), "{url}: {}", r.status());
    r.bytes().await.unwrap();
    began.elapsed()
}

fn ms(d: f64) -> String {
    format!("{:.2} ms", d * 1e3)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let o = parse_opts();
    let dir = tempfile::tempdir().unwrap();
    let apps = dir.path();
    std::fs::create_dir_all(apps.join("plugins/jobs")).unwrap();
    std::fs::write(apps.join("plugins/jobs/__init__.py"), "").unwrap();
    std::fs::write(apps.join("plugins/jobs/chatter.py"), CHATTER).unwrap();
    std::fs::copy(
        python_dir().join("bench_plugin.py"),
        apps.join("plugins/bench_plugin.py"),
    )
    .unwrap();
    // The job runs in its own pool: the small calls have the default pool's worker.
    std::fs::write(
        apps.join("app.toml"),
        "[runtime]\nworkers = 1\nwatch = false\n[plugins.jobs]\npool = \"jobs\"\n[pools.jobs]\nworkers = 1\n",
    )
    .unwrap();
    let mut jobs = String::new();
    for j in 0..5 {
        jobs.push_str(&format!(
            "[[jobs]]\nname = \"job-{j}\"\nschedule = \"0 {j} * * *\"\n[[jobs.steps]]\nname = \"s\"\ntype = \"python\"\ncallable = \"jobs.chatter:chatter\"\nkwargs = {{ seconds = 1 }}\n\n"
        ));
    }
    jobs.push_str("[[jobs]]\nname = \"chatter\"\n[[jobs.steps]]\nname = \"talk\"\ntype = \"python\"\ncallable = \"jobs.chatter:chatter\"\nkwargs = { seconds = 3600 }\n");
    std::fs::write(apps.join("jobs.toml"), jobs).unwrap();
    let state = State::open_for_apps(apps, None).await.unwrap();
    state.close().await;
    eprintln!("recording {} runs ...", o.runs);
    fill_history(&apps.join(".snakepit/state.db"), o.runs).await;
    let python = bench_python(true);
    let install = Install::load(Some(apps), Some(&python)).unwrap();
    let jobset = JobSet::load(&install).unwrap();
    let state = State::open_for_apps(apps, None).await.unwrap();
    let host = Arc::new(Host::start_checked(install).await.unwrap());
    let metrics = Metrics::new();
    metrics.watch_host(&host);
    let scheduler = Arc::new(
        Scheduler::new(host.clone(), state.clone(), Arc::new(SystemClock), jobset)
            .grace(Duration::from_secs(1))
            .observe(metrics.clone()),
    );
    let scheduling = scheduler.start();
    let console = Console {
        host: host.clone(),
        state: state.clone(),
        scheduler: scheduler.clone(),
        info: ServeInfo {
            started: std::time::SystemTime::now(),
            watching: None,
            jobs: None,
            wake: None,
        },
        metrics: metrics.clone(),
    }
    .serve(&HttpSettings {
        addr: "127.0.0.1:0".parse().unwrap(),
        token: None,
    })
    .await
    .unwrap();
    let base = format!("http://{}", console.addr());
    let c = reqwest::Client::new();

    // 1. The runs page's first screen, and a filtered page.
    let first_screen = [
        "/",
        "/assets/app.js",
        "/assets/app.css",
        "/api/jobs",
        "/api/runs",
    ];
    let (mut screen, mut filtered) = (Vec::new(), Vec::new());
    for _ in 0..o.rounds {
        let began = Instant::now();
        for path in first_screen {
            get(&c, &format!("{base}{path}")).await;
        }
        screen.push(began.elapsed().as_secs_f64());
        let d = get(&c, &format!("{base}/api/runs?job=job-3&status=failed")).await;
        filtered.push(d.as_secs_f64());
    }
    // 2. A scrape after some calls (every family has series).
    let echo = |host: Arc<Host>| async move {
        let kwargs: Map = vec![("x".into(), Value::Int(1))];
        host.call("bench_plugin:echo", kwargs, Map::new())
            .await
            .unwrap();
    };
    for _ in 0..200 {
        echo(host.clone()).await;
    }
    let mut scrape = Vec::new();
    for _ in 0..(o.rounds * 20) {
        scrape.push(get(&c, &format!("{base}/metrics")).await.as_secs_f64());
    }
    // 3. Small calls, the console idle vs watched.
    let token = {
        let page = c.get(format!("{base}/")).send().await.unwrap();
        let page = page.text().await.unwrap();
        let marker = "name=\"csrf\" content=\"";
        let at = page.find(marker).unwrap() + marker.len();
        page[at..].split('"').next().unwrap().to_owned()
    };
    let r: serde_json::Value = c
        .post(format!("{base}/api/jobs/chatter/run"))
        .header("x-snakepit-csrf", token)
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let run_id = r["run_id"].as_str().unwrap().to_owned();
    let round = |host: Arc<Host>, calls: usize| async move {
        let mut s = Samples::with_capacity(calls);
        for _ in 0..calls {
            let began = Instant::now();
            echo(host.clone()).await;
            s.push(began.elapsed());
        }
        s.quantile_us(0.5)
    };
    round(host.clone(), o.calls).await; // warm-up
    let (mut idle, mut watched) = (Vec::new(), Vec::new());
    let streamed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for i in 0..o.rounds {
        eprintln!("round {}/{}", i + 1, o.rounds);
        idle.push(round(host.clone(), o.calls).await);
        // The browser: the live log, and Prometheus.
        let log_url = format!("{base}/api/runs/{run_id}/log");
        let watcher = tokio::spawn({
            let (c, streamed) = (c.clone(), streamed.clone());
            async move {
                let mut r = c.get(log_url).send().await.unwrap();
                while let Ok(Some(chunk)) = r.chunk().await {
                    streamed.fetch_add(chunk.len(), std::sync::atomic::Ordering::Relaxed);
                }
            }
        });
        let scraper = tokio::spawn({
            let (c, url) = (c.clone(), format!("{base}/metrics"));
            async move {
                loop {
                    get(&c, &url).await;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        });
        watched.push(round(host.clone(), o.calls).await);
        watcher.abort();
        scraper.abort();
    }
    let streamed = streamed.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        streamed > 0,
        "the live log streamed nothing: the job did not run"
    );
    // 4. One observation of a call, alone.
    const N: u32 = 1_000_000;
    let began = Instant::now();
    for _ in 0..N {
        metrics.call_ended("default", "ok", Duration::from_micros(100));
    }
    let observe_ns = began.elapsed().as_nanos() as f64 / f64::from(N);

    let (p_idle, p_watched) = (median(&idle), median(&watched));
    let table = format!(
        "| measure ({} runs in the history) | median |\n|---|---|\n\
         | runs page, first screen (page, script, stylesheet, /api/jobs, /api/runs) | {} |\n\
         | /api/runs?job=job-3&status=failed | {} |\n\
         | /metrics scrape | {} |\n\n\
         | small call p50 (median of {} rounds of {} calls) | µs |\n|---|---|\n\
         | console idle | {:.1} |\n\
         | a client follows a live log, /metrics scraped every second | {:.1} |\n\
         | ratio (watched / idle) | {:.3} |\n\n\
         One metrics observation of a call (counter and histogram): {:.0} ns. \
         The live log sent {} bytes over the watched rounds.\n",
        o.runs,
        ms(median(&screen)),
        ms(median(&filtered)),
        ms(median(&scrape)),
        o.rounds,
        o.calls,
        p_idle,
        p_watched,
        p_watched / p_idle,
        observe_ns,
        streamed,
    );
    print!("{table}");
    if let Some(out) = &o.out {
        std::fs::write(out, &table).unwrap();
    }
    console.stop().await;
    scheduling.stop().await;
    host.shutdown(Duration::from_secs(5)).await;
}
