//! The plugin host (issue 4): app.toml's schema, `check`, the password validator, hooks
//! and pool routing, against the fixture installs in `tests/installs/`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use snakepit::{Map, Value};
use snakepit_host::{Host, HostError, Install, PasswordError};

use crate::support::python;

fn install_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("installs")
        .join(name)
}

async fn open(dir: &Path) -> Result<Host, HostError> {
    Host::start(Install::load(Some(dir), Some(&python()))?).await
}

fn load_err(app_toml: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("app.toml"), app_toml).unwrap();
    Install::load(Some(dir.path()), Some(&python()))
        .unwrap_err()
        .to_string()
}

#[tokio::test]
async fn check_reports_every_broken_entry_with_file_and_entry() {
    let dir = install_dir("broken");
    let host = open(&dir).await.unwrap();
    let problems = host.check().await;
    host.shutdown(Duration::from_secs(2)).await;
    let file = dir.join("app.toml");
    assert!(problems.iter().all(|p| p.file == file), "{problems:#?}");
    let entries: Vec<&str> = problems.iter().map(|p| p.entry.as_str()).collect();
    assert_eq!(
        entries,
        [
            "[auth] password_validator",
            "[hooks] \"screen.after_save\"[0]",
            "[hooks] \"screen.before_save\"[1]",
            "[hooks] \"screen.before_save\"[2]",
        ],
        "{problems:#?}"
    );
    let reason = |i: usize| problems[i].reason.as_str();
    assert!(reason(0).contains("nosuch_module"), "{}", reason(0));
    assert!(reason(1).contains("not_callable"), "{}", reason(1));
    assert!(reason(2).contains("missing_attr"), "{}", reason(2));
    assert!(reason(3).contains("no_colon_here"), "{}", reason(3));
}

#[tokio::test]
async fn check_reports_every_broken_job_with_file_entry_and_reason() {
    // Its own install: `snakepit check` on tests/installs/broken is pinned to the four
    // app.toml problems by the CLI tests.
    let dir = install_dir("broken-jobs");
    let host = open(&dir).await.unwrap();
    let problems = host.check().await;
    host.shutdown(Duration::from_secs(2)).await;
    let top = dir.join("jobs.toml");
    let pkg = dir.join("plugins/billing/jobs.toml");
    let drafts = r#"[[jobs]] "reissue-monthly-drafts" step "reissue-drafts""#;
    let sync = r#"[[jobs]] "sync-ads" step "sync""#;
    let expected: [(&Path, &str, &str); 11] = [
        (
            &top,
            r#"[[jobs]] "typo" step "s""#,
            "line 34, column 1: [[jobs.steps]] retrys is not a setting",
        ),
        (&top, drafts, "unknown template ${month.previus}"),
        (
            &top,
            drafts,
            "a second step named \"reissue-drafts\" in this job",
        ),
        (
            &top,
            drafts,
            "kwarg 'period' = 2026 (int) does not match the annotation 'str'",
        ),
        (
            &top,
            r#"[[jobs]] "sync-ads""#,
            "the hour field \"25\" is out of range 0-23",
        ),
        (
            &top,
            sync,
            "the template ${params.region} names no param of the job",
        ),
        (&top, sync, "no module named 'nosuch_jobs_module'"),
        (
            &top,
            r#"[[jobs]] "shell-out" step "s""#,
            "type = \"shell\" is not a step type",
        ),
        (
            &top,
            r#"[[jobs]] "dated" step "s""#,
            "kwarg 'dry_run' = ${date.today} (a date template) does not match the annotation 'bool'",
        ),
        (
            &pkg,
            r#"[[jobs]] "reissue-monthly-drafts""#,
            "another job named \"reissue-monthly-drafts\" is in jobs.toml",
        ),
        (
            &pkg,
            r#"[[jobs]] "reissue-monthly-drafts" step "run""#,
            "has no attribute 'missing'",
        ),
    ];
    let jobs: Vec<_> = problems.iter().collect();
    for (file, entry, reason) in expected {
        assert!(
            jobs.iter()
                .any(|p| p.file == file && p.entry == entry && p.reason.contains(reason)),
            "no problem {entry} in {}: {reason}\n{jobs:#?}",
            file.display()
        );
    }
    assert_eq!(jobs.len(), expected.len(), "{jobs:#?}");
    // File by file: jobs.toml, then plugins/<pkg>/jobs.toml.
    assert!(jobs[..9].iter().all(|p| p.file == top), "{jobs:#?}");
}

#[tokio::test]
async fn a_jobs_toml_syntax_error_names_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let jobs = "[[jobs]]\nname = \"a\"\nschedule = \"0 2 1 * *\n";
    let pkg = dir.path().join("plugins/billing");
    std::fs::create_dir_all(&pkg).unwrap();
    std::fs::write(pkg.join("jobs.toml"), jobs).unwrap();
    let host = open(dir.path()).await.unwrap();
    let problems = host.check().await;
    host.shutdown(Duration::from_secs(2)).await;
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert_eq!(problems[0].file, pkg.join("jobs.toml"));
    assert!(
        problems[0].reason.starts_with("line 3, column "),
        "{problems:#?}"
    );
}

#[tokio::test]
async fn a_valid_install_checks_clean() {
    // Its jobs.toml and plugins/billing/jobs.toml are read and their steps checked.
    let (files, steps, problems) = snakepit_host::load_jobs(&install_dir("good"));
    assert_eq!((files.len(), steps.len()), (2, 3), "{problems:#?}");
    let host = open(&install_dir("good")).await.unwrap();
    let problems = host.check().await;
    host.shutdown(Duration::from_secs(2)).await;
    assert_eq!(problems, []);
}

#[test]
fn a_toml_syntax_error_names_line_and_column() {
    let e = load_err("[runtime]\nworkers = 1\ncall_timeout = \"5s\n");
    assert!(e.contains("app.toml: line 3, column "), "{e}");
}

#[test]
fn an_unknown_key_is_reported_with_its_place() {
    let e = load_err("[runtime]\nworkers = 1\n\n[auth]\npasword_validator = \"a:b\"\n");
    assert!(
        e.contains("app.toml: line 5, column 1: [auth] pasword_validator is not a setting"),
        "{e}"
    );
}

#[tokio::test]
async fn the_password_validator_accepts_and_rejects() {
    let host = open(&install_dir("good")).await.unwrap();
    host.validate_password("ada", "correct horse battery", None, None)
        .await
        .unwrap();
    let short = host.validate_password("ada", "short", None, None).await;
    assert!(
        matches!(&short, Err(PasswordError::Rejected(m)) if m == "the password needs at least 8 characters"),
        "{short:?}"
    );
    let existing = Value::Map(vec![("old_password".into(), "correct horse".into())]);
    let same = host
        .validate_password("ada", "correct horse", Some(existing), None)
        .await;
    assert!(
        matches!(&same, Err(PasswordError::Rejected(m)) if m.contains("differ from the old")),
        "{same:?}"
    );
    host.shutdown(Duration::from_secs(2)).await;
}

fn trace_payload(trace: &Path, veto: bool) -> Map {
    vec![
        ("trace".into(), Value::from(trace.to_str().unwrap())),
        ("veto".into(), Value::Bool(veto)),
    ]
}

fn read_trace(trace: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(trace).unwrap_or_default();
    let lines = text.lines().map(str::to_owned).collect();
    let _ = std::fs::remove_file(trace);
    lines
}

#[tokio::test]
async fn hooks_run_in_order_and_a_before_hook_vetoes() {
    let host = open(&install_dir("good")).await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let trace = tmp.path().join("trace");

    let out = host
        .dispatch("screen.before_save", trace_payload(&trace, false), None)
        .await;
    assert!(out.veto.is_none() && out.failed.is_empty(), "{out:?}");
    assert_eq!(read_trace(&trace), ["first", "veto_if_asked", "third"]);

    let out = host
        .dispatch("screen.before_save", trace_payload(&trace, true), None)
        .await;
    let veto = out.veto.expect("vetoed");
    assert_eq!(
        (veto.reference.as_str(), veto.message.as_str()),
        ("audit:veto_if_asked", "saving this screen is not allowed")
    );
    assert_eq!(
        read_trace(&trace),
        ["first", "veto_if_asked"],
        "third not called"
    );

    // An after_* hook that raises is reported; the rest still run.
    let out = host
        .dispatch("screen.after_save", trace_payload(&trace, false), None)
        .await;
    assert!(out.veto.is_none(), "{out:?}");
    assert_eq!(out.failed.len(), 1);
    assert_eq!(out.failed[0].0, "audit:after_boom");
    assert_eq!(read_trace(&trace), ["first", "after_boom", "third"]);

    // An event without hooks passes.
    let out = host
        .dispatch("connector.before_query", Map::new(), None)
        .await;
    assert!(out.veto.is_none() && out.passed.is_empty());
    host.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn calls_go_to_the_pool_of_their_package() {
    let host = open(&install_dir("good")).await.unwrap();
    assert_eq!(host.pool_name("envspy:pid"), "untrusted");
    assert_eq!(host.pool_name("audit:first"), "default");
    let pid = |v: snakepit::RawValue| match v.decode().unwrap() {
        Value::Int(n) => n,
        other => panic!("{other:?}"),
    };
    let in_untrusted = pid(host
        .call("envspy:pid", Map::new(), Map::new())
        .await
        .unwrap());
    let untrusted_pool = host.pool("untrusted").unwrap();
    let direct = pid(untrusted_pool
        .call("envspy:pid", Map::new(), Map::new())
        .await
        .unwrap());
    // One worker in the untrusted pool: the same process served both.
    assert_eq!(in_untrusted, direct);
    let in_default = pid(host
        .pool("default")
        .unwrap()
        .call("envspy:pid", Map::new(), Map::new())
        .await
        .unwrap());
    assert_ne!(in_default, in_untrusted);
    host.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn a_crash_in_one_pool_leaves_the_others_alone() {
    let host = open(&install_dir("good")).await.unwrap();
    let default_pid = host
        .pool("default")
        .unwrap()
        .call("envspy:pid", Map::new(), Map::new())
        .await
        .unwrap()
        .decode()
        .unwrap();
    let crashed = host.call("envspy:crash", Map::new(), Map::new()).await;
    assert!(
        matches!(crashed, Err(snakepit::CallError::WorkerCrashed { .. })),
        "{crashed:?}"
    );
    let again = host
        .pool("default")
        .unwrap()
        .call("envspy:pid", Map::new(), Map::new())
        .await
        .unwrap()
        .decode()
        .unwrap();
    assert_eq!(
        default_pid, again,
        "the default pool's worker was not disturbed"
    );
    host.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn a_missing_apps_dir_is_a_sentence() {
    let e = Host::open("/nonexistent/liberty-apps").await.unwrap_err();
    assert!(
        matches!(&e, HostError::Usage(m) if m.contains("/nonexistent/liberty-apps does not exist")),
        "{e}"
    );
}

#[tokio::test]
async fn opening_an_install_with_broken_references_fails_with_all_of_them() {
    let dir = install_dir("broken");
    let install = Install::load(Some(&dir), Some(&python())).unwrap();
    let Err(HostError::Invalid(problems)) = Host::start_checked(install).await else {
        panic!("a broken install opened")
    };
    assert_eq!(problems.len(), 4, "{problems:#?}");
    let text = HostError::Invalid(problems).to_string();
    assert!(
        text.starts_with("the install has 4 problems") && text.contains("snakepit check"),
        "{text}"
    );
    // A valid one opens.
    let good = Install::load(Some(&install_dir("good")), Some(&python())).unwrap();
    Host::start_checked(good)
        .await
        .unwrap()
        .shutdown(Duration::from_secs(2))
        .await;
}

#[test]
fn a_relative_apps_dir_is_made_absolute() {
    // The watcher compares the absolute paths inotify reports with the install's; a
    // relative `--apps` once made every edit go unnoticed.
    assert!(
        Path::new("installs/good").is_dir(),
        "tests run from the tests crate"
    );
    let install = Install::load(Some(Path::new("installs/good")), Some(&python())).unwrap();
    assert!(install.dir.is_absolute(), "{}", install.dir.display());
    assert!(install.dir.ends_with("installs/good"));
}
