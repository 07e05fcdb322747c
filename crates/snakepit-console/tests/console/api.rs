//! The console's HTTP surface: pages, JSON API, live log, metrics, health, and who may
//! use them.

use std::time::Duration;

use reqwest::{header, Client, StatusCode};
use serde_json::{json, Value};
use snakepit::{Map, Value as PyValue};
use snakepit_host::Install;
use snakepit_state::{AuditEntry, Claim, NewRun, RunStatus, Trigger};

use crate::fixture::{
    python, wait_until, write_install, Served, SECRET_PARAM, SECRET_URL_PASSWORD, WAIT,
};

fn client() -> Client {
    Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// The CSRF token the console's page carries.
async fn csrf(c: &Client, url: &str) -> String {
    let page = c
        .get(format!("{url}/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let marker = "name=\"csrf\" content=\"";
    let at = page.find(marker).unwrap() + marker.len();
    page[at..].split('"').next().unwrap().to_owned()
}

async fn get_json(c: &Client, url: &str) -> Value {
    let r = c.get(url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{url}");
    r.json().await.unwrap()
}

async fn run_now(c: &Client, url: &str, job: &str, params: Value) -> reqwest::Response {
    let token = csrf(c, url).await;
    c.post(format!("{url}/api/jobs/{job}/run"))
        .header("x-snakepit-csrf", token)
        .json(&json!({ "params": params }))
        .send()
        .await
        .unwrap()
}

async fn run_status(s: &Served, id: &str) -> String {
    s.state.run_status(id).await.unwrap().unwrap_or_default()
}

#[tokio::test]
async fn run_now_runs_the_job_and_its_log_streams_in_while_it_runs() {
    let s = Served::start("127.0.0.1:0", None).await;
    let c = client();
    let r = run_now(&c, &s.url, "gated", json!({})).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["placement"], "this node");
    let id = body["run_id"].as_str().unwrap().to_owned();
    let mut log = c
        .get(format!("{}/api/runs/{id}/log", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(
        log.headers()[header::CONTENT_TYPE],
        "text/event-stream",
        "the live log is Server-Sent Events"
    );
    let mut seen = String::new();
    // The first line arrives while the run waits at its gate: it is live.
    while !seen.contains("before gate") {
        let chunk = tokio::time::timeout(Duration::from_secs(30), log.chunk())
            .await
            .expect("no log line within 30 s")
            .unwrap()
            .expect("the stream ended early");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert_eq!(run_status(&s, &id).await, "running");
    assert!(!seen.contains("after gate"));
    s.open_gate();
    while !seen.contains("event: end") {
        let chunk = tokio::time::timeout(Duration::from_secs(30), log.chunk())
            .await
            .expect("the stream did not end within 30 s")
            .unwrap()
            .expect("the stream ended without its end event");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(seen.contains("after gate"), "{seen}");
    assert!(
        seen.contains("event: status\ndata: \"succeeded\""),
        "{seen}"
    );
    // The run page's record: steps and results, params named but not shown.
    let run = get_json(&c, &format!("{}/api/runs/{id}", s.url)).await;
    assert_eq!(run["status"], "succeeded");
    assert_eq!(run["trigger"], "manual");
    assert_eq!(run["steps"][0]["result"], json!({"gate": "opened"}));
    assert_eq!(run["params"]["secret"], "***");
    let list = c.get(format!("{}/api/runs", s.url)).send().await.unwrap();
    let text = list.text().await.unwrap();
    assert!(!text.contains(SECRET_PARAM) && text.contains(&id), "{text}");
    // Counted: the run by job and status, its call by pool and outcome, the lag.
    let metrics = c
        .get(format!("{}/metrics", s.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for expected in [
        "snakepit_runs_total{job=\"gated\",trigger=\"manual\",status=\"succeeded\"} 1",
        "snakepit_calls_total{pool=\"default\",outcome=\"ok\"} 1",
        "snakepit_scheduler_lag_seconds_count{trigger=\"manual\"} 1",
        "snakepit_queue_depth{pool=\"default\"} 0",
        "snakepit_workers_live{pool=\"default\"} 2",
        "# EOF",
    ] {
        assert!(metrics.contains(expected), "{expected} not in\n{metrics}");
    }
    s.stop().await;
}

/// A run record's connector calls summed per package, connector and target, as the run
/// page gets them: `[(package, connector, target, calls, rows, errors)]`.
fn summary(run: &Value) -> Vec<(String, String, String, i64, Option<i64>, i64)> {
    run["connector_calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["package"].as_str().unwrap().to_owned(),
                c["connector"].as_str().unwrap().to_owned(),
                c["target"].as_str().unwrap().to_owned(),
                c["calls"].as_i64().unwrap(),
                c["rows"].as_i64(),
                c["errors"].as_i64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_runs_connector_calls_come_summed_and_each_call_a_page_at_a_time() {
    let s = Served::start("127.0.0.1:0", None).await;
    let c = client();
    let r = run_now(&c, &s.url, "queries", json!({})).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let body: Value = r.json().await.unwrap();
    let id = body["run_id"].as_str().unwrap().to_owned();
    let run_url = format!("{}/api/runs/{id}", s.url);
    wait_until("the run and its four calls", WAIT, || async {
        let run = get_json(&c, &run_url).await;
        run["status"] == "succeeded" && summary(&run).iter().map(|g| g.3).sum::<i64>() == 4
    })
    .await;
    // The record's summary as the history computed it: one entry per target, in the
    // order of their first calls, with its counts, sums and percentiles.
    let run = get_json(&c, &run_url).await;
    let s3 = |v: &str| v.to_owned();
    assert_eq!(
        summary(&run),
        [
            (s3("demo"), s3("data"), s3("one"), 3, Some(3), 0),
            (s3("demo"), s3("crm"), s3("ping"), 1, None, 1),
        ]
    );
    let one = &run["connector_calls"][0];
    let (total, p50, p99) = (
        one["total_us"].as_i64().unwrap(),
        one["p50_us"].as_i64().unwrap(),
        one["p99_us"].as_i64().unwrap(),
    );
    assert!(p50 <= p99 && p99 <= total, "{one}");
    assert_eq!(run["connector_calls_dropped"], 0);
    // Each call, two a page, as `snakepit runs show ID --calls --json` prints them.
    let mut seen = Vec::new();
    let mut after: Option<i64> = None;
    let mut pages = 0;
    loop {
        let mut url = format!("{}/api/runs/{id}/calls?limit=2", s.url);
        if let Some(a) = after {
            url.push_str(&format!("&after={a}"));
        }
        let page = get_json(&c, &url).await;
        let expected = s.state.calls(&id, after, 2).await.unwrap().unwrap();
        assert_eq!(
            page,
            serde_json::to_value(&expected).unwrap(),
            "the CLI's page"
        );
        assert_eq!(page["run_id"], id.as_str());
        assert_eq!(page["total"], 4);
        pages += 1;
        for call in page["calls"].as_array().unwrap() {
            seen.push((
                call["connector"].as_str().unwrap().to_owned(),
                call["target"].as_str().unwrap().to_owned(),
                call["outcome"].as_str().unwrap().to_owned(),
            ));
        }
        match page["next_after"].as_i64() {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!(pages, 2);
    assert_eq!(seen.len(), 4, "{seen:?}");
    assert!(seen[..3]
        .iter()
        .all(|(c, t, o)| (c.as_str(), t.as_str(), o.as_str()) == ("data", "one", "ok")));
    assert_eq!((seen[3].0.as_str(), seen[3].1.as_str()), ("crm", "ping"));
    assert_ne!(seen[3].2, "ok");
    // Records the history could not keep up with are counted apart.
    let dropped = AuditEntry::dropped(chrono::Utc::now(), Some(&id), 5);
    s.state.insert_audit(&[dropped]).await.unwrap();
    let run = get_json(&c, &run_url).await;
    assert_eq!(run["connector_calls_dropped"], 5);
    assert_eq!(summary(&run).len(), 2);
    // Unknown runs and bad pages are said.
    let r = c
        .get(format!("{}/api/runs/nope/calls", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = c
        .get(format!("{}/api/runs/{id}/calls?after=x", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    s.stop().await;
}

#[tokio::test]
async fn a_post_without_the_pages_csrf_token_is_refused() {
    let s = Served::start("127.0.0.1:0", None).await;
    let c = client();
    let url = format!("{}/api/jobs/quick/run", s.url);
    // What a cross-site form can send: no JSON, no header.
    let form = c
        .post(&url)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body("params=x")
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), StatusCode::FORBIDDEN);
    // JSON from another origin, even with the token.
    let token = csrf(&c, &s.url).await;
    let other = c
        .post(&url)
        .header("x-snakepit-csrf", &token)
        .header(header::ORIGIN, "http://evil.example")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::FORBIDDEN);
    let wrong = c
        .post(&url)
        .header("x-snakepit-csrf", "0000")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::FORBIDDEN);
    let q = snakepit_state::RunQuery {
        limit: 10,
        ..Default::default()
    };
    assert!(
        s.state.run_page(&q).await.unwrap().is_empty(),
        "a refused POST queued a run"
    );
    // The page's own request goes through (the check can pass).
    let ours = c
        .post(&url)
        .header("x-snakepit-csrf", &token)
        .header(header::ORIGIN, &s.url)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(ours.status(), StatusCode::ACCEPTED);
    // A name that resolves to 127.0.0.1 but is not ours (DNS rebinding) reads nothing.
    let rebound = c
        .get(format!("{}/api/status", s.url))
        .header(header::HOST, "evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(rebound.status(), StatusCode::MISDIRECTED_REQUEST);
    s.stop().await;
}

#[tokio::test]
async fn with_a_token_everything_needs_it_and_a_refusal_says_nothing_else() {
    const TOKEN: &str = "0123456789abcdef-console";
    let s = Served::start("0.0.0.0:0", Some(TOKEN)).await;
    let c = client();
    for path in [
        "/",
        "/api/status",
        "/api/runs",
        "/metrics",
        "/healthz",
        "/assets/app.js",
    ] {
        let r = c.get(format!("{}{path}", s.url)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(r.text().await.unwrap(), "401 Unauthorized\n", "{path}");
        let wrong = c
            .get(format!("{}{path}", s.url))
            .bearer_auth("0123456789abcdef-consolX")
            .send()
            .await
            .unwrap();
        assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED, "{path}");
        let right = c
            .get(format!("{}{path}", s.url))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(right.status(), StatusCode::OK, "{path}");
    }
    // A POST with the bearer header is not a browser's: no CSRF token needed.
    let r = c
        .post(format!("{}/api/reload", s.url))
        .bearer_auth(TOKEN)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // A browser signs in once; the cookie carries the token from then on.
    let login = |token: &str| {
        c.post(format!("{}/login", s.url))
            .form(&[("token", token)])
            .send()
    };
    assert_eq!(
        login("nope").await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    let ok = login(TOKEN).await.unwrap();
    assert_eq!(ok.status(), StatusCode::SEE_OTHER);
    let cookie = ok.headers()[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap().to_owned();
    let r = c
        .get(format!("{}/api/status", s.url))
        .header(header::COOKIE, &pair)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    s.stop().await;
}

#[tokio::test]
async fn a_console_beyond_loopback_needs_a_token_of_some_length() {
    let dir = tempfile::tempdir().unwrap();
    write_install(dir.path());
    let app = |extra: &str| {
        std::fs::write(
            dir.path().join("app.toml"),
            format!("[runtime]\nworkers = 1\n{extra}"),
        )
        .unwrap();
        Install::load(Some(dir.path()), Some(&python())).unwrap()
    };
    let install = app("http = \"0.0.0.0:8650\"\n");
    let e = install.http(None).unwrap_err().to_string();
    assert!(
        e.contains("app.toml")
            && e.contains("[runtime] http = \"0.0.0.0:8650\" is not a loopback address")
            && e.contains("http_token"),
        "{e}"
    );
    let e = install.http(Some("10.1.2.3:1")).unwrap_err().to_string();
    assert!(
        e.contains("--http 10.1.2.3:1 is not a loopback address"),
        "{e}"
    );
    assert!(install.http(Some("127.0.0.1:0")).unwrap().is_some());
    assert!(install.http(Some("localhost:0")).unwrap().is_some());
    let e = install.http(Some("nowhere")).unwrap_err().to_string();
    assert!(e.contains("give an address and port"), "{e}");
    let e = app("http = \"0.0.0.0:8650\"\nhttp_token = \"${SNAKEPIT_TEST_UNSET_TOKEN}\"\n")
        .http(None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("SNAKEPIT_TEST_UNSET_TOKEN"), "{e}");
    let e = app("http = \"0.0.0.0:8650\"\nhttp_token = \"short\"\n")
        .http(None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("at least 16"), "{e}");
    let ok = app("http = \"0.0.0.0:8650\"\nhttp_token = \"0123456789abcdefXYZ\"\n")
        .http(None)
        .unwrap()
        .unwrap();
    assert_eq!(ok.token.as_deref(), Some("0123456789abcdefXYZ"));
    assert!(!format!("{ok:?}").contains("0123456789abcdefXYZ"));
    assert!(app("").http(None).unwrap().is_none());
}

/// Records `n` finished runs of `job`, one second apart from `start`.
async fn record_runs(
    s: &Served,
    job: &str,
    n: usize,
    start: i64,
    status: RunStatus,
) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let at = chrono::DateTime::from_timestamp(start + i as i64, 0).unwrap();
        let id = format!("{job}-{i:03}");
        let run = NewRun {
            id: id.clone(),
            job: job.into(),
            trigger: if i % 2 == 0 {
                Trigger::Manual
            } else {
                Trigger::Schedule
            },
            session_user: "t".into(),
            params: json!({}),
            scheduled_for: at,
            queued_at: at,
            steps: vec!["one".into()],
        };
        assert!(s.state.insert_run(&run).await.unwrap());
        // Recorded by this process: a manual run holds epoch 1, a scheduled one 0.
        let claim = Claim {
            run_id: id.clone(),
            epoch: i64::from(i % 2 == 0),
        };
        s.state.finish_run(&claim, status, None, at).await.unwrap();
        ids.push(id);
    }
    ids
}

#[tokio::test]
async fn runs_are_filtered_and_paged_without_gaps_or_repeats() {
    let mut s = Served::start("127.0.0.1:0", None).await;
    // Its scheduled runs are recorded by hand, queued then finished: no scheduler takes
    // them in between.
    s.stop_scheduler().await;
    let c = client();
    // 2026-01-01 and 2026-01-02 (UTC).
    let day1 = 1_767_225_600;
    let a = record_runs(&s, "alpha", 7, day1, RunStatus::Succeeded).await;
    let b = record_runs(&s, "beta", 4, day1 + 86_400, RunStatus::Failed).await;
    let mut seen = Vec::new();
    let mut next: Option<String> = None;
    loop {
        let mut url = format!("{}/api/runs?limit=3", s.url);
        if let Some(n) = &next {
            url.push_str(&format!("&after={}", urlencode(n)));
        }
        let page = get_json(&c, &url).await;
        let runs = page["runs"].as_array().unwrap();
        assert!(runs.len() <= 3);
        seen.extend(runs.iter().map(|r| r["id"].as_str().unwrap().to_owned()));
        match page["next"].as_str() {
            Some(n) => next = Some(n.to_owned()),
            None => break,
        }
    }
    let mut all: Vec<String> = b.iter().rev().chain(a.iter().rev()).cloned().collect();
    assert_eq!(seen, all, "newest first, every run once");
    let ids = |v: &Value| -> Vec<String> {
        v["runs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let failed = get_json(&c, &format!("{}/api/runs?status=failed", s.url)).await;
    assert_eq!(ids(&failed).len(), 4);
    let alpha_manual = get_json(&c, &format!("{}/api/runs?job=alpha&trigger=manual", s.url)).await;
    assert_eq!(
        ids(&alpha_manual),
        ["alpha-006", "alpha-004", "alpha-002", "alpha-000"]
    );
    let day = get_json(
        &c,
        &format!("{}/api/runs?since=2026-01-02&until=2026-01-02", s.url),
    )
    .await;
    all.retain(|id| id.starts_with("beta"));
    assert_eq!(ids(&day), all);
    let bad = c
        .get(format!("{}/api/runs?status=done", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let body: Value = bad.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("the statuses are queued"),
        "{body}"
    );
    s.stop().await;
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn pools_crashes_reload_connectors_and_health() {
    let s = Served::start("127.0.0.1:0", None).await;
    let c = client();
    assert_eq!(
        c.get(format!("{}/healthz", s.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "ok\n"
    );
    let ready = get_json(&c, &format!("{}/readyz", s.url)).await;
    assert_eq!(ready["ready"], true);
    // A worker dies: the pools page lists it with its stderr, the metrics count it.
    let crashed = s
        .host
        .call("demo.steps:crash", Map::new(), Map::new())
        .await;
    assert!(crashed.is_err());
    let crashes_url = format!("{}/api/crashes", s.url);
    wait_until("the crash to be listed", WAIT, || async {
        get_json(&c, &crashes_url)
            .await
            .to_string()
            .contains("crash-marker: going down")
    })
    .await;
    let crashes = get_json(&c, &crashes_url).await;
    assert_eq!(crashes[0]["pool"], "default");
    assert_eq!(crashes[0]["what"], "exit status 3");
    let metrics = c
        .get(format!("{}/metrics", s.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("snakepit_worker_restarts_total{pool=\"default\",reason=\"crashed\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("snakepit_calls_total{pool=\"default\",outcome=\"crashed\"} 1"));
    // Connector calls: per package, connector and target; the URL's password masked.
    let ctx = snakepit_host::call_context(Map::new());
    let r = s
        .host
        .call("demo.steps:query", Map::new(), ctx)
        .await
        .unwrap();
    assert_eq!(
        r.decode().unwrap(),
        PyValue::map([("rows", PyValue::Int(1))])
    );
    let url = format!("{}/api/connectors", s.url);
    wait_until("the audit record", WAIT, || async {
        get_json(&c, &url).await["activity"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
    })
    .await;
    let activity = get_json(&c, &url).await;
    let text = activity.to_string();
    assert!(!text.contains(SECRET_URL_PASSWORD), "{text}");
    assert!(text.contains("crm-user:***@127.0.0.1:9/api"), "{text}");
    let row = &activity["activity"][0];
    assert_eq!(
        (
            row["package"].as_str(),
            row["connector"].as_str(),
            row["target"].as_str()
        ),
        (Some("demo"), Some("data"), Some("one"))
    );
    assert_eq!(
        (row["calls"].as_i64(), row["errors"].as_i64()),
        (Some(1), Some(0))
    );
    let metrics = c
        .get(format!("{}/metrics", s.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(
            "snakepit_host_requests_total{connector=\"data\",target=\"one\",outcome=\"ok\"} 1"
        ),
        "{metrics}"
    );
    // Reload from the page: the same answer as `snakepit reload --json`.
    let token = csrf(&c, &s.url).await;
    let r = c
        .post(format!("{}/api/reload", s.url))
        .header("x-snakepit-csrf", token)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    let reply: Value = r.json().await.unwrap();
    assert_eq!(reply, json!({"reply": "reloaded", "generation": 2}));
    let status = get_json(&c, &format!("{}/api/status", s.url)).await;
    assert_eq!(status["generation"], 2);
    assert_eq!(status["last_reload"]["trigger"], "web console");
    let metrics = c
        .get(format!("{}/metrics", s.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("snakepit_reloads_total{outcome=\"serving\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("snakepit_generation 2"), "{metrics}");
    // The jobs, as `snakepit jobs --json`.
    let jobs = get_json(&c, &format!("{}/api/jobs", s.url)).await;
    let quick = jobs
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["name"] == "quick")
        .unwrap();
    assert_eq!(quick["schedule"], "0 2 1 * *");
    assert!(quick["next_tick"].as_str().unwrap().ends_with("T02:00:00Z"));
    assert_eq!(quick["params"], json!(["region"]));
    // Not found, and a bad param, are said.
    let r = run_now(&c, &s.url, "nope", json!({})).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = run_now(&c, &s.url, "quick", json!({"regoin": "us"})).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("has no param \\\"regoin\\\""));
    s.stop().await;
}
