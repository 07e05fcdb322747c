//! `snakepit run`, `snakepit runs` and `snakepit runs show`: progress on stderr, the
//! run record on stdout, exit codes, the history table, one run in full, and a run
//! whose supervisor was killed mid-step shown interrupted (SQLite and PostgreSQL).

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;

/// The jobs fixture install (`tests/installs/jobs`) in a temporary apps dir, with
/// `plugins/fx` linked to `tests/plugins/fx` and `state` as `[runtime] state`.
fn install(state: Option<&str>) -> tempfile::TempDir {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let src = repo.join("tests/installs/jobs");
    let dir = tempfile::tempdir().unwrap();
    let mut app = std::fs::read_to_string(src.join("app.toml")).unwrap();
    app.push_str("\n[runtime]\nworkers = 1\n");
    if let Some(url) = state {
        app.push_str(&format!("state = {url:?}\n"));
    }
    std::fs::write(dir.path().join("app.toml"), app).unwrap();
    std::fs::copy(src.join("jobs.toml"), dir.path().join("jobs.toml")).unwrap();
    std::fs::create_dir(dir.path().join("plugins")).unwrap();
    std::os::unix::fs::symlink(
        repo.join("tests/plugins/fx").canonicalize().unwrap(),
        dir.path().join("plugins/fx"),
    )
    .unwrap();
    dir
}

fn command(apps: &Path, args: &[&str]) -> Command {
    let python = snakepit_tests::python();
    let mut c = Command::new(env!("CARGO_BIN_EXE_snakepit"));
    c.arg("--apps")
        .arg(apps)
        .arg("--python")
        .arg(python)
        .args(args)
        .env_remove("LIBERTY_APPS_DIR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

fn snakepit(apps: &Path, args: &[&str]) -> Output {
    command(apps, args).output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", text(&out.stdout), text(&out.stderr)))
}

#[test]
fn run_shows_progress_prints_the_record_and_exits_by_outcome() {
    let dir = install(None);
    let out = snakepit(
        dir.path(),
        &["run", "etl", "--param", "region=us", "--user", "ada"],
    );
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let rec = json(&out);
    assert_eq!(rec["status"], "succeeded");
    assert_eq!(rec["session_user"], "ada");
    assert_eq!(rec["trigger"], "manual");
    assert_eq!(rec["params"]["region"], "us");
    assert!(rec["steps"][0]["result"]["tag"]
        .as_str()
        .unwrap()
        .starts_with("us-etl-"));
    assert_eq!(rec["logs"].as_array().unwrap().len(), 3, "{rec}");
    for line in [
        "of etl (2 steps, manual, user ada)",
        "extract: attempt 1/1",
        "extract: INFO fx.jobsteps: extract period=",
        "extract: a print from extract",
        "load: succeeded (attempt 1)",
        "snakepit: run succeeded in",
    ] {
        assert!(err.contains(line), "{line:?} not in:\n{err}");
    }

    let out = snakepit(dir.path(), &["run", "fails-fast"]);
    assert_eq!(out.status.code(), Some(1));
    let rec = json(&out);
    assert_eq!(rec["status"], "failed");
    assert_eq!(rec["steps"][0]["error"]["type"], "ValueError");
    let err = text(&out.stderr);
    assert!(
        err.contains("boom: failed after 1 attempt(s)") && err.contains("KeyError: 'inner'"),
        "{err}"
    );
    assert!(
        err.contains("snakepit: run failed (step \"boom\" failed"),
        "{err}"
    );

    let out = snakepit(dir.path(), &["run", "etl", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        text(&out.stdout).trim().lines().count(),
        1,
        "--json: one line"
    );

    let out = snakepit(dir.path(), &["run", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("there is no job named \"nope\"; the jobs are: crashy, etl, failing, fails-fast, flaky, hang, hourly, new-year, too-slow"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
    let out = snakepit(dir.path(), &["run", "etl", "--param", "limit=many"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("the param \"limit\" of \"etl\" is an integer"));
}

#[test]
fn runs_lists_the_history_and_shows_one_run() {
    let dir = install(None);
    let out = snakepit(dir.path(), &["runs"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stderr).contains("no runs recorded yet"));
    let ok = json(&snakepit(dir.path(), &["run", "etl", "--user", "ada"]));
    let failed = json(&snakepit(dir.path(), &["run", "fails-fast"]));
    let (ok_id, failed_id) = (ok["id"].as_str().unwrap(), failed["id"].as_str().unwrap());

    let out = snakepit(dir.path(), &["runs"]);
    assert_eq!(out.status.code(), Some(0));
    let table = text(&out.stdout);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(
        lines[0].starts_with("ID") && lines[0].contains("STATUS"),
        "{table}"
    );
    assert!(
        lines[1].starts_with(failed_id) && lines[1].contains("failed"),
        "{table}"
    );
    assert!(
        lines[2].starts_with(ok_id) && lines[2].contains(" ada ") && lines[2].contains("succeeded"),
        "{table}"
    );

    let out = snakepit(
        dir.path(),
        &["runs", "--job", "etl", "--limit", "5", "--json"],
    );
    let runs = json(&out);
    assert_eq!(runs.as_array().unwrap().len(), 1);
    assert_eq!(runs[0]["id"], ok_id);

    let out = snakepit(dir.path(), &["runs", "show", failed_id]);
    assert_eq!(out.status.code(), Some(0));
    let shown = text(&out.stdout);
    for part in [
        &format!("run {failed_id}"),
        "status         failed — step \"boom\" failed",
        "1. boom — failed (1 attempt",
        "error: ValueError: boom",
        "The above exception was the direct cause",
        "ERROR snakepit.jobs: step failed",
    ] {
        assert!(shown.contains(part), "{part:?} not in:\n{shown}");
    }
    let out = snakepit(dir.path(), &["runs", "show", &ok_id[..19], "--json"]);
    let rec = json(&out);
    assert_eq!(rec["id"], ok_id, "a prefix names the run");
    assert_eq!(rec["steps"][1]["result"]["got"]["step_name"], "extract");
    let out = snakepit(dir.path(), &["runs", "show", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("no run \"nope\""));
}

/// A run that makes 250 connector calls: its record sums them up per target (the
/// calls themselves are not in it), and `runs show ID --calls` pages through them.
#[test]
fn a_run_record_sums_up_connector_calls_and_runs_show_calls_pages_through_them() {
    let dir = install(None);
    std::fs::write(
        dir.path().join("connectors.toml"),
        "[sql.billing]\nurl = \"sqlite://billing.db?mode=rwc\"\n[sql.billing.queries]\none = \"SELECT 1 AS x WHERE :id > 0\"\n",
    )
    .unwrap();
    let mut jobs = std::fs::read_to_string(dir.path().join("jobs.toml")).unwrap();
    jobs.push_str("\n[[jobs]]\nname = \"lookups\"\n[[jobs.steps]]\nname = \"lookups\"\ntype = \"python\"\ncallable = \"fx.jobsteps:lookups\"\nkwargs = { n = 250 }\n");
    std::fs::write(dir.path().join("jobs.toml"), jobs).unwrap();

    let out = snakepit(dir.path(), &["run", "lookups", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(out.stdout.len() < 4096, "{} bytes", out.stdout.len());
    let rec = json(&out);
    let id = rec["id"].as_str().unwrap().to_owned();
    let calls = rec["connector_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 2, "{rec}");
    let (one, missing) = (&calls[0], &calls[1]);
    assert_eq!(
        (&one["package"], &one["connector"], &one["target"]),
        (&"fx".into(), &"billing".into(), &"one".into())
    );
    assert_eq!(
        (&one["calls"], &one["rows"], &one["errors"]),
        (&250.into(), &250.into(), &0.into())
    );
    let (p50, p99, total) = (
        one["p50_us"].as_i64().unwrap(),
        one["p99_us"].as_i64().unwrap(),
        one["total_us"].as_i64().unwrap(),
    );
    assert!(0 < p50 && p50 <= p99 && p99 <= total, "{one}");
    assert_eq!(
        (&missing["target"], &missing["calls"], &missing["errors"]),
        (&"missing".into(), &1.into(), &1.into())
    );
    assert_eq!(missing["rows"], serde_json::Value::Null);
    assert_eq!(rec["connector_calls_dropped"], 0);

    let shown = text(&snakepit(dir.path(), &["runs", "show", &id]).stdout);
    for part in [
        format!("connector calls (251; each: snakepit runs show {id} --calls)"),
        "PACKAGE  CONNECTOR  TARGET   CALLS  ROWS  ERRORS".to_owned(),
        "fx       billing    one      250    250   0".to_owned(),
        "fx       billing    missing  1      -     1".to_owned(),
    ] {
        assert!(shown.contains(&part), "{part:?} not in:\n{shown}");
    }

    // Pages of 100 in JSON, each naming the next, until the last.
    let mut seen = Vec::new();
    let mut after: Option<i64> = None;
    let mut pages = 0;
    loop {
        let mut args = vec![
            "runs",
            "show",
            &id[..19],
            "--calls",
            "--limit",
            "100",
            "--json",
        ];
        let cursor = after.map(|a| a.to_string());
        if let Some(c) = &cursor {
            args.extend(["--after", c]);
        }
        let page = json(&snakepit(dir.path(), &args));
        pages += 1;
        assert_eq!(page["run_id"], id.as_str());
        assert_eq!(page["total"], 251);
        let calls = page["calls"].as_array().unwrap();
        seen.extend(calls.iter().map(|c| {
            (
                c["id"].as_i64().unwrap(),
                c["target"].as_str().unwrap().to_owned(),
            )
        }));
        match page["next_after"].as_i64() {
            Some(next) => {
                assert_eq!(calls.len(), 100);
                assert_eq!(Some(next), calls.last().and_then(|c| c["id"].as_i64()));
                after = Some(next);
            }
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen.len(), 251);
    assert!(
        seen.windows(2).all(|w| w[0].0 < w[1].0),
        "oldest first, no repeats"
    );
    assert_eq!(seen.last().unwrap().1, "missing");

    // The same for a person: the page and the command for the next one.
    let second = seen[99].0.to_string();
    let out = snakepit(
        dir.path(),
        &[
            "runs", "show", &id, "--calls", "--limit", "100", "--after", &second,
        ],
    );
    let page = text(&out.stdout);
    assert!(
        page.contains(&format!(
            "connector calls of run {id} (251 in all; 100 shown, after call #{second})"
        )),
        "{page}"
    );
    assert!(page.contains(" fx → billing.one — ok, 1 row, "), "{page}");
    assert!(
        page.contains(&format!(
            "next page: snakepit runs show {id} --calls --after {}",
            seen[199].0
        )),
        "{page}"
    );

    let out = snakepit(dir.path(), &["runs", "show", &id, "--limit", "5"]);
    assert_eq!(out.status.code(), Some(2), "--limit needs --calls");
}

/// Starts `run hang`, SIGKILLs the CLI once the step is running, and checks that the
/// next start shows the run interrupted.
fn killed_mid_step(state: Option<&str>) {
    let dir = install(state);
    let marker = dir.path().join("hang");
    let param = format!("dir={}", dir.path().display());
    let mut child = command(dir.path(), &["run", "hang", "--param", &param])
        .spawn()
        .unwrap();
    let until = Instant::now() + Duration::from_secs(30);
    // The marker holds the worker's pid once written (it may be seen empty first).
    let worker: i32 = loop {
        let written = std::fs::read_to_string(&marker).unwrap_or_default();
        if let Ok(pid) = written.trim().parse() {
            break pid;
        }
        assert!(Instant::now() < until, "the step never started");
        assert!(
            child.try_wait().unwrap().is_none(),
            "snakepit run ended early"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    // While it runs, another start sees it running (its owner is alive), and the
    // step's log line is in the history already: written as it happened.
    let runs = json(&snakepit(dir.path(), &["runs", "--json"]));
    assert_eq!(runs[0]["status"], "running", "{runs}");
    let id = runs[0]["id"].as_str().unwrap().to_owned();
    loop {
        let rec = json(&snakepit(dir.path(), &["runs", "show", &id, "--json"]));
        if rec["logs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["message"] == "hanging for 60.0 s")
        {
            break;
        }
        assert!(
            Instant::now() < until,
            "the step's log line never reached the history"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    let runs = json(&snakepit(dir.path(), &["runs", "--json"]));
    assert_eq!(runs[0]["status"], "interrupted", "{runs}");
    assert!(runs[0]["error"]
        .as_str()
        .unwrap()
        .contains("stopped before the run finished"));
    let id = runs[0]["id"].as_str().unwrap();
    let shown = text(&snakepit(dir.path(), &["runs", "show", id]).stdout);
    assert!(shown.contains("status         interrupted"), "{shown}");
    assert!(
        shown.contains("1. hang — interrupted (1 attempt"),
        "{shown}"
    );
    assert!(
        shown.contains("INFO fx.jobsteps: hanging for 60.0 s"),
        "{shown}"
    );
    // The worker did not outlive its supervisor.
    let until = Instant::now() + Duration::from_secs(10);
    while std::path::Path::new(&format!("/proc/{worker}")).exists()
        && !std::fs::read_to_string(format!("/proc/{worker}/stat"))
            .unwrap_or_default()
            .contains(") Z")
    {
        assert!(
            Instant::now() < until,
            "the worker {worker} outlived its supervisor"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigterm_cancels_the_run_and_records_it_cancelled() {
    let dir = install(None);
    let marker = dir.path().join("hang");
    let param = format!("dir={}", dir.path().display());
    let child = command(dir.path(), &["run", "hang", "--param", &param])
        .spawn()
        .unwrap();
    let until = Instant::now() + Duration::from_secs(30);
    while !marker.exists() {
        assert!(Instant::now() < until, "the step never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let rec = json(&out);
    assert_eq!(rec["status"], "cancelled");
    assert_eq!(rec["steps"][0]["status"], "cancelled");
    assert_eq!(rec["error"], "cancelled during step \"hang\"");
}

#[test]
fn a_run_whose_supervisor_was_killed_is_shown_interrupted_sqlite() {
    killed_mid_step(None);
}

#[test]
fn a_run_whose_supervisor_was_killed_is_shown_interrupted_postgres() {
    let base = "postgres://postgres@127.0.0.1:5432/test";
    let schema = format!("snakepit_cli_{}", std::process::id());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let pool = sqlx::PgPool::connect(base)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL at {base} is needed for this test: {e}"));
        sqlx::raw_sql(&format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
        ))
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;
    });
    killed_mid_step(Some(&format!("{base}?options=-c%20search_path%3D{schema}")));
}

#[test]
fn a_bad_time_zone_or_state_url_is_named_with_the_fix() {
    let dir = install(None);
    let app = dir.path().join("app.toml");
    let toml = std::fs::read_to_string(&app).unwrap();
    std::fs::write(&app, format!("{toml}timezone = \"Mars/Olympus\"\n")).unwrap();
    let out = snakepit(dir.path(), &["check"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(
            "app.toml: [runtime] timezone: \"Mars/Olympus\" is not a time zone; use an IANA name"
        ),
        "{err}"
    );
    let out = snakepit(dir.path(), &["run", "etl"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "an install with problems does not run"
    );

    std::fs::write(&app, format!("{toml}state = \"mysql://db/state\"\n")).unwrap();
    let out = snakepit(dir.path(), &["runs"]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains(
            "[runtime] state = \"mysql://db/state\" is not a state url: use sqlite://PATH"
        ),
        "{err}"
    );
}

/// A step that floods LOG records while `snakepit run`'s stderr is unread for two
/// seconds: the process stays within a few tens of MiB of a quiet run's peak (its log
/// channels are bounded; the run's history keeps the lines the budget admitted).
#[test]
fn a_log_flood_does_not_grow_snakepit_run() {
    let dir = install(None);
    let mut jobs = std::fs::read_to_string(dir.path().join("jobs.toml")).unwrap();
    jobs.push_str(
        "\n[[jobs]]\nname = \"flood\"\n[[jobs.steps]]\nname = \"flood\"\ntype = \"python\"\ncallable = \"fx.logs:flood\"\nkwargs = { seconds = 3.0 }\n\n[[jobs]]\nname = \"quiet\"\n[[jobs.steps]]\nname = \"quiet\"\ntype = \"python\"\ncallable = \"fx.jobsteps:nothing\"\n",
    );
    std::fs::write(dir.path().join("jobs.toml"), jobs).unwrap();
    let peak = |job: &str, stall: Duration| {
        let (kib, status) = common::peak_kib(command(dir.path(), &["run", job]), stall);
        assert!(status.success(), "run {job}: {status}");
        kib
    };
    let quiet = peak("quiet", Duration::ZERO);
    let flood = peak("flood", Duration::from_secs(2));
    eprintln!("snakepit run peak RSS: quiet {quiet} KiB, under a flood {flood} KiB");
    assert!(
        flood < quiet + 40 * 1024,
        "quiet {quiet} KiB, flood {flood} KiB"
    );
}

/// Polls `done` every 50 ms for up to 60 s.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `run --enqueue` on SQLite: refused while no serve runs (nothing queued); with one,
/// the serve runs it, `--wait` follows it to its end with `run`'s exit code, and
/// `status --cluster` lists the serve as a node.
#[test]
fn enqueue_on_sqlite_needs_the_serve_which_runs_the_run() {
    let dir = install(None);
    let out = snakepit(dir.path(), &["run", "etl", "--enqueue"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("on SQLite") && err.contains("start `snakepit serve`"),
        "{err}"
    );
    let runs = json(&snakepit(dir.path(), &["runs", "--json"]));
    assert_eq!(
        runs.as_array().unwrap().len(),
        0,
        "nothing was queued: {runs}"
    );

    let mut serve = command(dir.path(), &["serve"]).spawn().unwrap();
    wait_until("the serve to answer", || {
        snakepit(dir.path(), &["status"]).status.success()
    });
    let out = snakepit(
        dir.path(),
        &["run", "etl", "--enqueue", "--wait", "--param", "region=us"],
    );
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("queued run") && err.contains("snakepit: run succeeded"),
        "{err}"
    );
    let rec = json(&out);
    assert_eq!(rec["status"], "succeeded");
    assert_eq!(rec["params"]["region"], "us");
    let owner = rec["owner"].as_str().unwrap();
    assert_eq!(
        owner.split('/').nth(2),
        Some(serve.id().to_string().as_str())
    );

    let out = snakepit(dir.path(), &["run", "etl", "--enqueue"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let id = text(&out.stdout).trim().to_owned();
    assert!(id.len() > 16, "{id:?}");
    wait_until("the queued run to end", || {
        let rec = json(&snakepit(dir.path(), &["runs", "show", &id, "--json"]));
        rec["status"] != "queued" && rec["status"] != "running"
    });

    let nodes = json(&snakepit(dir.path(), &["status", "--cluster", "--json"]));
    let nodes = nodes.as_array().unwrap();
    assert_eq!(nodes.len(), 1, "{nodes:?}");
    assert_eq!(nodes[0]["pid"], serve.id());
    assert_eq!(nodes[0]["lost"], false);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(serve.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(serve.wait().unwrap().success());
    // A clean stop removes the node.
    let nodes = json(&snakepit(dir.path(), &["status", "--cluster", "--json"]));
    assert_eq!(nodes.as_array().unwrap().len(), 0, "{nodes}");
}
