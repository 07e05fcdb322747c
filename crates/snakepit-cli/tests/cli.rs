//! The `snakepit` binary: exit codes, stdout carrying only the result, logs on stderr,
//! the bench summary, and errors that name the file and the fix (SPEC §7).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn apps() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let pkg = dir.path().join("plugins/demo");
    std::fs::create_dir_all(&pkg).unwrap();
    std::fs::write(pkg.join("__init__.py"), "").unwrap();
    std::fs::write(
        pkg.join("calls.py"),
        r#"
import logging, os, time
log = logging.getLogger(__name__)

def hello(*, name: str, **ctx):
    log.info("greeting %s", name)
    print("a print")
    return {"hello": name, "run_id": ctx.get("run_id")}

def boom(**ctx):
    try:
        raise KeyError("inner")
    except KeyError as e:
        raise ValueError("outer") from e

def sleepy(**ctx):
    time.sleep(30)

def crash(**ctx):
    os._exit(7)

def ping(**ctx):
    return None
"#,
    )
    .unwrap();
    dir
}

fn snakepit(apps: &Path, args: &[&str]) -> Output {
    let python =
        std::env::var_os("SNAKEPIT_PYTHON").map_or_else(|| PathBuf::from("python3"), PathBuf::from);
    Command::new(env!("CARGO_BIN_EXE_snakepit"))
        .arg("--apps")
        .arg(apps)
        .arg("--python")
        .arg(python)
        .args(args)
        .env_remove("LIBERTY_APPS_DIR")
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn call_prints_only_the_result_on_stdout_and_logs_on_stderr() {
    let dir = apps();
    let out = snakepit(
        dir.path(),
        &[
            "call",
            "demo.calls:hello",
            "--kwargs",
            r#"{"name": "ada"}"#,
            "--ctx",
            r#"{"run_id": "r-1"}"#,
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json, serde_json::json!({"hello": "ada", "run_id": "r-1"}));
    let err = text(&out.stderr);
    assert!(
        err.contains("INFO demo.calls: greeting ada") && err.contains("a print"),
        "{err}"
    );
}

#[test]
fn exit_codes_follow_the_contract() {
    let dir = apps();
    let raised = snakepit(dir.path(), &["call", "demo.calls:boom"]);
    assert_eq!(raised.status.code(), Some(1));
    let err = text(&raised.stderr);
    assert!(
        err.contains("Traceback")
            && err.contains("KeyError: 'inner'")
            && err.contains("ValueError: outer"),
        "{err}"
    );
    assert!(raised.stdout.is_empty());

    for args in [
        &["call", "demo.calls:nope"][..],
        &["call", "demo.missing:f"],
        &["call", "not a reference"],
        &["call", "demo.calls:hello"], // missing kwarg
        &["call", "demo.calls:hello", "--kwargs", "[1, 2]"], // not an object
        &["call", "demo.calls:hello", "--kwargs", "{oops"], // not JSON
    ] {
        let out = snakepit(dir.path(), args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(!text(&out.stderr).contains("panicked"), "{args:?}");
    }

    let timeout = snakepit(
        dir.path(),
        &["call", "demo.calls:sleepy", "--timeout", "300ms"],
    );
    assert_eq!(timeout.status.code(), Some(3), "{}", text(&timeout.stderr));
    let crash = snakepit(dir.path(), &["call", "demo.calls:crash"]);
    assert_eq!(crash.status.code(), Some(3));
    assert!(
        text(&crash.stderr).contains("exit status 7"),
        "{}",
        text(&crash.stderr)
    );
}

#[test]
fn bench_json_summary_accounts_for_every_call() {
    let dir = apps();
    let out = snakepit(
        dir.path(),
        &[
            "bench",
            "demo.calls:ping",
            "--calls",
            "300",
            "--workers",
            "2",
            "--json",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["calls"], 300);
    assert_eq!(s["ok"], 300);
    for k in ["raised", "timeout", "crashed", "overloaded", "cancelled"] {
        assert_eq!(s["errors"][k], 0, "{k}");
    }
    assert!(s["p50_us"].as_u64().unwrap() > 0 && s["p99_us"].as_u64() >= s["p50_us"].as_u64());
    assert!(s["calls_per_sec"].as_f64().unwrap() > 0.0);
    assert_eq!(s["workers_restarted"], 0);
}

#[test]
fn bad_app_toml_names_the_file_and_the_entry() {
    let dir = apps();
    for (toml, entry) in [
        ("[runtime]\nworkers = \"many\"\n", "[runtime] workers"),
        ("[runtme]\nworkers = 2\n", "[runtme] is not a table"),
        (
            "[runtime]\ncall_timout = \"5s\"\n",
            "[runtime] call_timout is not a setting",
        ),
    ] {
        std::fs::write(dir.path().join("app.toml"), toml).unwrap();
        let out = snakepit(dir.path(), &["call", "demo.calls:ping"]);
        assert_eq!(out.status.code(), Some(2), "{toml}");
        let err = text(&out.stderr);
        assert!(err.contains("app.toml") && err.contains(entry), "{err}");
    }
}

#[test]
fn bad_flags_are_usage_errors() {
    let dir = apps();
    for args in [
        &["call", "demo.calls:ping", "--timeout", "0s"][..],
        &["bench", "demo.calls:ping", "--workers", "0"],
    ] {
        let out = snakepit(dir.path(), args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
}

#[test]
fn a_missing_interpreter_is_a_sentence_not_a_panic() {
    let dir = apps();
    let out = Command::new(env!("CARGO_BIN_EXE_snakepit"))
        .args(["--apps"])
        .arg(dir.path())
        .args([
            "--python",
            "/nonexistent/python3",
            "call",
            "demo.calls:ping",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("/nonexistent/python3")
            && err.contains("comes from --python")
            && !err.contains("panicked"),
        "{err}"
    );
}

#[test]
fn interpreter_comes_from_app_toml_relative_to_the_apps_dir() {
    let dir = apps();
    // A wrapper script standing in for a venv's python, named in app.toml.
    let real = String::from_utf8(
        Command::new("python3")
            .args(["-c", "import sys; print(sys.executable)"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let bin = dir.path().join("venv/bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(real.trim(), bin.join("python")).unwrap();
    std::fs::write(
        dir.path().join("app.toml"),
        "[runtime]\npython = \"venv/bin/python\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_snakepit"))
        .arg("--apps")
        .arg(dir.path())
        .args(["call", "demo.calls:hello", "--kwargs", r#"{"name": "x"}"#])
        .env_remove("SNAKEPIT_PYTHON")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}
