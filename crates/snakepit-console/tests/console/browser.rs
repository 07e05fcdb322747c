//! The pages in a real headless Chromium (Debian's `chromium` and `chromium-driver`),
//! driven over WebDriver with `fantoccini`. `scripts/test.sh` installs them; in CI
//! (`CI` set) a missing browser fails these tests, elsewhere it skips them with a note.
//!
//! With `SNAKEPIT_CONSOLE_SCREENSHOTS=DIR`, each page is also saved as a PNG there
//! (the screenshots of `docs/console/`).

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use snakepit::Map;

use crate::fixture::{wait_until, Served, WAIT};

/// chromedriver, killed on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |n| dir.join(n)))
        .find(|p| p.is_file())
}

/// Starts chromedriver, or says why not: None (skip) outside CI, a panic in CI.
async fn driver() -> Option<Driver> {
    let Some(bin) = find(&["chromedriver"]) else {
        let why = "chromedriver is not installed (Debian: apt-get install chromium chromium-driver; scripts/test.sh does)";
        assert!(std::env::var_os("CI").is_none(), "{why}");
        eprintln!("SKIPPED: {why}");
        return None;
    };
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(bin)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let status = format!("{url}/status");
    wait_until("chromedriver to answer", WAIT, || async {
        reqwest::get(&status).await.is_ok()
    })
    .await;
    Some(Driver { child, url })
}

async fn browser(driver: &Driver, width: u32, height: u32) -> Client {
    let mut caps = serde_json::Map::new();
    let mut args = vec![
        "--headless=new".to_owned(),
        "--no-sandbox".to_owned(),
        "--disable-gpu".to_owned(),
        "--disable-dev-shm-usage".to_owned(),
        format!("--window-size={width},{height}"),
    ];
    if width < 600 {
        args.push("--force-device-scale-factor=1".to_owned());
    }
    let mut options = json!({ "args": args });
    if let Some(chromium) = find(&["chromium", "chromium-browser"]) {
        options["binary"] = json!(chromium);
    }
    caps.insert("goog:chromeOptions".into(), options);
    caps.insert("goog:loggingPrefs".into(), json!({ "browser": "ALL" }));
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("chromedriver starts a headless Chromium")
}

/// chromedriver's log of the page's console (`goog:loggingPrefs`).
#[derive(Debug)]
struct BrowserLog;

impl WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base: &url::Url,
        session: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base.join(&format!("session/{}/se/log", session.unwrap_or_default()))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (
            http::Method::POST,
            Some(json!({"type": "browser"}).to_string()),
        )
    }
}

/// The console messages of level SEVERE (errors) since the last look.
async fn console_errors(c: &Client) -> Vec<String> {
    let log = c.issue_cmd(BrowserLog).await.unwrap();
    log.as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["level"] == "SEVERE")
        .map(|e| e["message"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Waits until the page's text (the `main` element's) contains `text`.
async fn wait_text(c: &Client, css: &str, text: &str) -> String {
    let until = Instant::now() + Duration::from_secs(30);
    let mut seen = String::new();
    loop {
        if let Ok(el) = c.find(Locator::Css(css)).await {
            if let Ok(t) = el.text().await {
                if t.contains(text) {
                    return t;
                }
                seen = t;
            }
        }
        assert!(
            Instant::now() < until,
            "timed out waiting for {text:?} in {css}, which reads:\n{seen}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The cells of the run page's connector-call summary row of `target`
/// (`package/connector/target`).
async fn cells(c: &Client, target: &str) -> Vec<String> {
    let row = c
        .find(Locator::Css(&format!("tr[data-target=\"{target}\"]")))
        .await
        .unwrap();
    let mut cells = Vec::new();
    for td in row.find_all(Locator::Css("td")).await.unwrap() {
        cells.push(td.text().await.unwrap());
    }
    cells
}

async fn screenshot(c: &Client, name: &str) {
    let Some(dir) = std::env::var_os("SNAKEPIT_CONSOLE_SCREENSHOTS") else {
        return;
    };
    let png = c.screenshot().await.unwrap();
    std::fs::write(PathBuf::from(dir).join(format!("{name}.png")), png).unwrap();
}

/// Every page loads without a console error, a run started with the button appears
/// and its log lines stream in while it runs, and a worker crash shows on the pools
/// page.
#[tokio::test]
async fn the_pages_in_chromium() {
    let Some(driver) = driver().await else { return };
    let s = Served::start("127.0.0.1:0", None).await;
    // Some history first, for the runs, jobs and connectors pages.
    let ctx = snakepit_host::call_context(Map::new());
    s.host
        .call("demo.steps:query", Map::new(), ctx)
        .await
        .unwrap();
    let c = browser(&driver, 1280, 800).await;
    c.goto(&format!("{}/#/jobs", s.url)).await.unwrap();
    wait_text(&c, "main", "quick").await;
    // Run now: the form, then the run's page with its log.
    let row = c
        .find(Locator::Css("tr[data-job=\"gated\"]"))
        .await
        .unwrap();
    row.find(Locator::Css("button.run-now"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    screenshot(&c, "jobs").await;
    c.find(Locator::Css(".runform button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text(&c, "#log", "before gate").await;
    let status = wait_text(&c, "#run-status", "running").await;
    assert_eq!(status, "running", "the line came while the run was running");
    let log = wait_text(&c, "#log", "before gate").await;
    assert!(!log.contains("after gate"));
    assert_eq!(
        c.find(Locator::Css("#live"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "live"
    );
    screenshot(&c, "run-live").await;
    s.open_gate();
    wait_text(&c, "#log", "after gate").await;
    wait_text(&c, "#run-status", "succeeded").await;
    wait_text(&c, "#live", "(ended)").await;
    // The step and its result.
    wait_text(&c, "main", "\"gate\": \"opened\"").await;
    screenshot(&c, "run").await;
    let url = c.current_url().await.unwrap();
    let run_id = url
        .fragment()
        .unwrap()
        .trim_start_matches("/runs/")
        .to_owned();
    // A run with connector calls: its page shows their summary per target as the
    // history computed it, and pages through each call.
    c.goto(&format!("{}/#/jobs", s.url)).await.unwrap();
    wait_text(&c, "main", "queries").await;
    let row = c
        .find(Locator::Css("tr[data-job=\"queries\"]"))
        .await
        .unwrap();
    row.find(Locator::Css("button.run-now"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.find(Locator::Css(".runform button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text(&c, "#run-status", "succeeded").await;
    let queries_id = c
        .current_url()
        .await
        .unwrap()
        .fragment()
        .unwrap()
        .trim_start_matches("/runs/")
        .to_owned();
    // The page shows what the history held when it read the record: read it again once
    // the audit writer has written all four calls.
    wait_until("the run's four calls in the history", WAIT, || async {
        let rec = s.state.run(&queries_id).await.unwrap().unwrap();
        rec.connector_calls.iter().map(|g| g.calls).sum::<i64>() == 4
    })
    .await;
    c.refresh().await.unwrap();
    wait_text(&c, "#connector-calls h2", "(4)").await;
    // Package, connector, target, calls, rows, errors (then total, p50, p99).
    let one = cells(&c, "demo/data/one").await;
    assert_eq!(one[..6], ["demo", "data", "one", "3", "3", "0"], "{one:?}");
    assert!(one[6..].iter().all(|t| t.ends_with('s')), "{one:?}");
    let ping = cells(&c, "demo/crm/ping").await;
    assert_eq!(
        ping[..6],
        ["demo", "crm", "ping", "1", "-", "1"],
        "{ping:?}"
    );
    assert!(c.find(Locator::Css("#calls-dropped")).await.is_err());
    // Calls the history did not keep up with are said.
    let dropped = snakepit_state::AuditEntry::dropped(chrono::Utc::now(), Some(&queries_id), 7);
    s.state.insert_audit(&[dropped]).await.unwrap();
    c.refresh().await.unwrap();
    wait_text(&c, "#calls-dropped", "And 7 calls not recorded").await;
    // Each call, from the link.
    c.find(Locator::Css("#each-call"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text(&c, "#calls-total", "5 in all; 5 shown, from the first").await;
    let listed = c.find_all(Locator::Css("tr[data-call]")).await.unwrap();
    assert_eq!(listed.len(), 5);
    wait_text(&c, "main", "7 calls not recorded").await;
    assert!(
        c.find(Locator::Css("#calls-next")).await.is_err(),
        "one page"
    );
    // The run is in the list.
    c.goto(&format!("{}/#/runs", s.url)).await.unwrap();
    wait_text(&c, "main", &run_id).await;
    screenshot(&c, "runs").await;
    // A crash shows on the pools page, with the worker's stderr.
    c.goto(&format!("{}/#/pools", s.url)).await.unwrap();
    wait_text(&c, "main", "Pool default").await;
    let crashed = s
        .host
        .call("demo.steps:crash", Map::new(), Map::new())
        .await;
    assert!(crashed.is_err());
    wait_text(&c, "main", "crash-marker: going down").await;
    screenshot(&c, "pools").await;
    c.goto(&format!("{}/#/connectors", s.url)).await.unwrap();
    wait_text(&c, "main", "crm-user:***@").await;
    screenshot(&c, "connectors").await;
    c.goto(&format!("{}/#/reload", s.url)).await.unwrap();
    wait_text(&c, "main", "No reload since").await;
    c.find(Locator::Css("#reload"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text(&c, "#reload-outcome", "Generation 2 serves").await;
    screenshot(&c, "reload").await;
    let errors = console_errors(&c).await;
    assert!(errors.is_empty(), "console errors: {errors:#?}");
    c.close().await.unwrap();
    // On a phone.
    let phone = browser(&driver, 390, 844).await;
    phone.goto(&format!("{}/#/runs", s.url)).await.unwrap();
    wait_text(&phone, "main", &run_id).await;
    screenshot(&phone, "runs-phone").await;
    let errors = console_errors(&phone).await;
    assert!(errors.is_empty(), "console errors: {errors:#?}");
    phone.close().await.unwrap();
    s.stop().await;
}

/// A console on a non-loopback address refuses the browser until it signs in with the
/// token.
#[tokio::test]
async fn a_console_with_a_token_refuses_the_browser_until_it_signs_in() {
    const TOKEN: &str = "browser-token-0123456789";
    let Some(driver) = driver().await else { return };
    let s = Served::start("0.0.0.0:0", Some(TOKEN)).await;
    let c = browser(&driver, 1280, 800).await;
    c.goto(&format!("{}/#/runs", s.url)).await.unwrap();
    let body = c
        .find(Locator::Css("body"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(body.trim(), "401 Unauthorized");
    c.goto(&format!("{}/login", s.url)).await.unwrap();
    let input = c.find(Locator::Css("input[name=token]")).await.unwrap();
    input.send_keys("not-the-token-000000").await.unwrap();
    c.find(Locator::Css("button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text(&c, "body", "not the console's token").await;
    let input = c.find(Locator::Css("input[name=token]")).await.unwrap();
    input.send_keys(TOKEN).await.unwrap();
    c.find(Locator::Css("button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text(&c, "main", "Runs").await;
    c.goto(&format!("{}/#/pools", s.url)).await.unwrap();
    wait_text(&c, "main", "Pool default").await;
    // Refused requests show in the console as errors (the 401s before signing in): only
    // those.
    let errors = console_errors(&c).await;
    assert!(
        errors.iter().all(|e| e.contains("401")),
        "console errors: {errors:#?}"
    );
    c.close().await.unwrap();
    s.stop().await;
}
