//! The `snakepit` binary: exit codes, stdout carrying only the result, logs on stderr,
//! the bench summary, and errors that name the file and the fix (README, "From the command line").

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;

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

def flood(*, seconds: float = 3.0, **ctx):
    """Logs 4 KB records as fast as it can, then writes 32 MiB to fd 2 with no newline."""
    big = "x" * 4000
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        log.warning("flood %d %s", n, big)
        n += 1
    os.write(2, b"y" * (32 << 20))
    return n
"#,
    )
    .unwrap();
    dir
}

fn snakepit(apps: &Path, args: &[&str]) -> Output {
    snakepit_with(apps, args, "", &[])
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

// The plugin host's commands against the fixture installs in tests/installs/.

fn install(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/installs")
        .join(name)
}

fn snakepit_with(apps: &Path, args: &[&str], stdin: &str, env: &[(&str, &str)]) -> Output {
    use std::io::Write;
    let python = snakepit_tests::python();
    let mut child = Command::new(env!("CARGO_BIN_EXE_snakepit"))
        .arg("--apps")
        .arg(apps)
        .arg("--python")
        .arg(python)
        .args(args)
        .env_remove("LIBERTY_APPS_DIR")
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn check_exits_0_for_a_valid_install_and_1_with_every_problem() {
    let out = snakepit(&install("good"), &["check"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

    let out = snakepit(&install("broken"), &["check"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 4, "{err}");
    assert!(
        lines[0].ends_with("app.toml: [auth] password_validator: \"nosuch_module:validate\": no module named 'nosuch_module' (searched the plugins dir, then ")
            || lines[0].contains("app.toml: [auth] password_validator: "),
        "{err}"
    );
    assert!(
        lines[3].contains("app.toml: [hooks] \"screen.before_save\"[2]: "),
        "{err}"
    );

    let out = snakepit(&install("broken"), &["check", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let list = json.as_array().unwrap();
    assert_eq!(list.len(), 4);
    assert_eq!(list[1]["entry"], "[hooks] \"screen.after_save\"[0]");
    assert!(list[1]["file"].as_str().unwrap().ends_with("app.toml"));
}

#[test]
fn check_names_line_and_column_of_a_bad_app_toml_and_an_empty_dir() {
    let dir = apps();
    std::fs::write(
        dir.path().join("app.toml"),
        "[hooks]\n\"a.before_x\" = [\"x:y\"\n",
    )
    .unwrap();
    let out = snakepit(dir.path(), &["check"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("app.toml: line 3, column 1: "), "{err}");

    std::fs::write(dir.path().join("app.toml"), "[pools.small]\nworkerz = 2\n").unwrap();
    let out = snakepit(dir.path(), &["check"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("app.toml: line 2, column 1: [pools.small] workerz is not a setting"),
        "{err}"
    );
}

#[test]
fn validate_password_reads_stdin_and_exits_0_or_1() {
    let good = install("good");
    let out = snakepit_with(
        &good,
        &["validate-password", "--username", "ada"],
        "correct horse battery\n",
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

    let out = snakepit_with(
        &good,
        &["validate-password", "--username", "ada"],
        "adalovelace99\n",
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert_eq!(err.trim(), "the password must not contain the username");
    assert!(!err.contains("adalovelace99") && out.stdout.is_empty());

    // Not even the supervisor's trace output carries the password.
    let out = snakepit_with(
        &good,
        &["-vvv", "validate-password", "--username", "ada"],
        "s3cret-Passw0rd\n",
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(!text(&out.stderr).contains("s3cret-Passw0rd") && out.stdout.is_empty());

    let out = snakepit_with(
        &good,
        &[
            "validate-password",
            "--username",
            "ada",
            "--existing-user",
            r#"{"old_password": "correct horse"}"#,
        ],
        "correct horse",
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("differ from the old one"));
}

#[test]
fn dispatch_exits_1_on_a_veto_and_0_otherwise() {
    let good = install("good");
    let tmp = tempfile::tempdir().unwrap();
    let trace = tmp.path().join("trace");
    let payload = |veto: bool| {
        serde_json::json!({"trace": trace.to_str().unwrap(), "veto": veto}).to_string()
    };
    let out = snakepit(
        &good,
        &[
            "dispatch",
            "screen.before_save",
            "--payload",
            &payload(true),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr).trim(),
        "saving this screen is not allowed"
    );

    let out = snakepit(
        &good,
        &[
            "dispatch",
            "screen.before_save",
            "--payload",
            &payload(false),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

    // A failing after_* hook is reported but vetoes nothing.
    let out = snakepit(
        &good,
        &[
            "dispatch",
            "screen.after_save",
            "--payload",
            &payload(false),
        ],
    );
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stderr).contains("audit:after_boom raised RuntimeError: after hook failed"));
}

#[test]
fn hooks_and_the_validator_are_heard_on_stderr_and_answer_json_on_every_outcome() {
    let good = install("good");
    let json = |out: &std::process::Output| -> serde_json::Value {
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {:?}", text(&out.stdout)))
    };
    let strong = "correct horse battery\n";
    let out = snakepit_with(
        &good,
        &["validate-password", "--username", "loud"],
        strong,
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("validating loud"), "{err}");
    assert!(err.contains("WARNING security: loud warning"), "{err}");
    let out = snakepit_with(
        &good,
        &["-q", "validate-password", "--username", "loud"],
        strong,
        &[],
    );
    assert!(!text(&out.stderr).contains("validating loud"));

    let out = snakepit_with(
        &good,
        &["--json", "validate-password", "--username", "ada"],
        strong,
        &[],
    );
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        json(&out),
        serde_json::json!({"accepted": true, "reason": null, "error": null})
    );
    let out = snakepit_with(
        &good,
        &["--json", "validate-password", "--username", "ada"],
        "adalovelace99\n",
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        json(&out),
        serde_json::json!({"accepted": false, "reason": "the password must not contain the username", "error": null})
    );
    // An install without a validator still answers JSON (exit 2).
    let bare = tempfile::tempdir().unwrap();
    std::fs::write(bare.path().join("app.toml"), "").unwrap();
    let out = snakepit_with(
        bare.path(),
        &["--json", "validate-password", "--username", "ada"],
        strong,
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    let answer = json(&out);
    assert_eq!(
        (
            answer["accepted"].as_bool(),
            answer["error"]["kind"].as_str()
        ),
        (Some(false), Some("usage"))
    );

    // A hook's prints reach stderr, unless -q.
    let tmp = tempfile::tempdir().unwrap();
    let trace = tmp.path().join("trace");
    let payload = |veto: bool| {
        serde_json::json!({"trace": trace.to_str().unwrap(), "veto": veto, "say": "hello from a hook"})
            .to_string()
    };
    let out = snakepit(
        &good,
        &[
            "dispatch",
            "screen.before_save",
            "--payload",
            &payload(false),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("hello from a hook"));
    let out = snakepit(
        &good,
        &[
            "-q",
            "dispatch",
            "screen.before_save",
            "--payload",
            &payload(false),
        ],
    );
    assert_eq!(out.status.code(), Some(0));
    assert!(!text(&out.stderr).contains("hello from a hook"));
    // A veto in JSON.
    let out = snakepit(
        &good,
        &[
            "--json",
            "dispatch",
            "screen.before_save",
            "--payload",
            &payload(true),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let answer = json(&out);
    assert_eq!(
        answer["veto"]["message"],
        "saving this screen is not allowed"
    );
    assert_eq!(answer["passed"], serde_json::json!(["audit:first"]));
    assert_eq!(answer["error"], serde_json::Value::Null);

    // An event nobody uses and nobody documents: 2, with the known events.
    let known = "connector.before_query, screen.after_save, screen.before_save";
    let out = snakepit(&good, &["dispatch", "screen.befor_save"]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("\"screen.befor_save\"") && err.contains(known),
        "{err}"
    );
    let out = snakepit(&good, &["--json", "dispatch", "screen.befor_save"]);
    assert_eq!(out.status.code(), Some(2));
    let answer = json(&out);
    assert_eq!(
        answer["error"]["known_events"],
        serde_json::json!([
            "connector.before_query",
            "screen.after_save",
            "screen.before_save"
        ])
    );
    assert_eq!(answer["passed"], serde_json::json!([]));
    // A documented event that no hook uses passes, silently.
    let out = snakepit(&good, &["--json", "dispatch", "connector.before_query"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn workers_see_only_the_allowlisted_environment() {
    let good = install("good");
    let env = [("SNAKEPIT_TEST_SECRET", "hunter2"), ("TZ", "Europe/Paris")];
    let read = |name: &str| {
        let kwargs = serde_json::json!({ "name": name }).to_string();
        let out = snakepit_with(
            &good,
            &["call", "envspy:read", "--kwargs", &kwargs],
            "",
            &env,
        );
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        text(&out.stdout).trim().to_owned()
    };
    assert_eq!(read("SNAKEPIT_TEST_SECRET"), "null");
    assert_eq!(read("TZ"), "\"Europe/Paris\"");
}

#[test]
fn call_runs_in_the_pool_of_the_package() {
    // [plugins.envspy] pool = "untrusted", whose call_timeout is 1s (the default is 30s).
    let started = std::time::Instant::now();
    let out = snakepit(&install("good"), &["call", "envspy:slow"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("1s"), "{}", text(&out.stderr));
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}

/// A wheel of a one-module plugin package, written with the standard library (no network,
/// no build backend needed), for `pip install --no-index`.
const MAKE_WHEEL: &str = r#"
import sys, zipfile
files = {
    "acme_plugin/__init__.py": "def hello(*, name: str, **ctx):\n    return {'from': 'site-packages', 'name': name}\n",
    "acme_plugin-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: acme-plugin\nVersion: 1.0\n",
    "acme_plugin-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: snakepit-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
}
with zipfile.ZipFile(sys.argv[1], "w") as z:
    for name, text in files.items():
        z.writestr(name, text)
    z.writestr("acme_plugin-1.0.dist-info/RECORD", "".join(f"{n},,\n" for n in files) + "acme_plugin-1.0.dist-info/RECORD,,\n")
"#;

#[test]
fn a_pip_installed_plugin_package_in_the_apps_venv_works_with_the_same_reference() {
    let dir = apps();
    let venv = dir.path().join(".venv");
    let ok = |c: &mut Command| {
        let out = c.output().unwrap();
        assert!(out.status.success(), "{:?}: {}", c, text(&out.stderr));
    };
    ok(Command::new("python3").arg("-m").arg("venv").arg(&venv));
    let wheel = dir.path().join("acme_plugin-1.0-py3-none-any.whl");
    ok(Command::new("python3").args(["-c", MAKE_WHEEL]).arg(&wheel));
    ok(Command::new(venv.join("bin/pip"))
        .args(["install", "-q", "--no-index", "--disable-pip-version-check"])
        .arg(&wheel));
    // No --python and no $SNAKEPIT_PYTHON: the interpreter is <apps>/.venv/bin/python
    // (README, "From the command line"), and the package resolves through its site-packages.
    let out = Command::new(env!("CARGO_BIN_EXE_snakepit"))
        .arg("--apps")
        .arg(dir.path())
        .args([
            "call",
            "acme_plugin:hello",
            "--kwargs",
            r#"{"name": "ada"}"#,
        ])
        .env_remove("SNAKEPIT_PYTHON")
        .env_remove("LIBERTY_APPS_DIR")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"from": "site-packages", "name": "ada"})
    );
    // plugins/ still comes first: the fixture package next to it resolves too.
    let out = Command::new(env!("CARGO_BIN_EXE_snakepit"))
        .arg("--apps")
        .arg(dir.path())
        .args(["call", "demo.calls:ping"])
        .env_remove("SNAKEPIT_PYTHON")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn an_interpreter_older_than_3_9_is_named_with_the_fix() {
    use std::os::unix::fs::PermissionsExt;
    let dir = apps();
    let fake = dir.path().join("python3.8");
    std::fs::write(&fake, "#!/bin/sh\necho /usr/bin/python3.8\necho 3.8.18\n").unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_snakepit"))
        .arg("--apps")
        .arg(dir.path())
        .arg("--python")
        .arg(&fake)
        .args(["call", "demo.calls:ping"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("3.8.18") && err.contains("3.9 or newer") && err.contains("--python"),
        "{err}"
    );
}

#[test]
fn a_plugins_folder_that_is_a_file_is_a_sentence() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("plugins"), "not a folder").unwrap();
    let out = snakepit(dir.path(), &["call", "demo.calls:ping"]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("plugins") && err.contains("is not a directory"),
        "{err}"
    );
}

#[test]
fn commands_refuse_an_install_whose_references_do_not_load() {
    let out = snakepit_with(
        &install("broken"),
        &["validate-password", "--username", "ada"],
        "whatever\n",
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("the install has") && err.contains("app.toml"),
        "{err}"
    );
    assert!(
        !err.contains("whatever"),
        "the password must never be printed"
    );
}

#[test]
fn a_call_by_hand_gets_the_connectors_like_a_job_step() {
    let dir = apps();
    std::fs::write(
        dir.path().join("connectors.toml"),
        "[sql.db]\nurl = \"sqlite://data.db\"\n[sql.db.queries]\necho = \"SELECT :x AS x\"\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("data.db"), "").unwrap(); // an empty SQLite database
    std::fs::write(
        dir.path().join("plugins/demo/queries.py"),
        "def echo(*, x: int, **ctx):\n    return ctx['connectors'].sql('db').run('echo', x=x)\n",
    )
    .unwrap();
    let out = snakepit(
        dir.path(),
        &["call", "demo.queries:echo", "--kwargs", r#"{"x": 5}"#],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), r#"[{"x":5}]"#);
}

/// The peak resident size (KiB) of `snakepit call REFERENCE`, its stderr unread for
/// the first `stall`.
fn call_peak_kib(apps: &Path, reference: &str, stall: std::time::Duration) -> u64 {
    let python = snakepit_tests::python();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_snakepit"));
    cmd.arg("--apps")
        .arg(apps)
        .arg("--python")
        .arg(python)
        .args(["call", reference]);
    let (peak, status) = common::peak_kib(cmd, stall);
    assert!(status.success(), "snakepit call {reference} failed");
    peak
}

/// The finding of issue 12: a LOG flood grew `snakepit call` to 1.1 GiB (its log channel
/// had no bound). Now its peak stays within a few tens of MiB of an idle call's, with
/// its stderr unread for two seconds, and a 32 MiB line without a newline on fd 2.
#[test]
fn a_log_flood_does_not_grow_snakepit_call() {
    let dir = apps();
    let idle = call_peak_kib(dir.path(), "demo.calls:ping", std::time::Duration::ZERO);
    let flood = call_peak_kib(
        dir.path(),
        "demo.calls:flood",
        std::time::Duration::from_secs(2),
    );
    eprintln!("snakepit call peak RSS: idle {idle} KiB, under a flood {flood} KiB");
    assert!(
        flood < idle + 40 * 1024,
        "idle {idle} KiB, flood {flood} KiB"
    );
}

/// A `[plugins.PKG]` whose package cannot be imported (a misspelt name) is a problem:
/// otherwise its pool and its isolation would apply to nothing, and the package it
/// means would run with the defaults. One that imports is fine.
#[test]
fn check_names_a_plugins_table_whose_package_does_not_import() {
    let dir = apps();
    std::fs::write(
        dir.path().join("app.toml"),
        "[plugins.demo]\nwrite = false\n\n[plugins.dmeo]\npool = \"untrusted\"\n\n[pools.untrusted]\nworkers = 1\n",
    )
    .unwrap();
    let out = snakepit(dir.path(), &["check"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("[plugins.dmeo]") && err.contains("check the spelling"),
        "{err}"
    );
    assert!(!err.contains("[plugins.demo]"), "{err}");
}

/// `snakepit ARGS` against `apps`, not yet run (the interpreter of the tests).
fn command(apps: &Path, args: &[&str]) -> Command {
    let python =
        std::env::var_os("SNAKEPIT_PYTHON").map_or_else(|| PathBuf::from("python3"), PathBuf::from);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_snakepit"));
    cmd.arg("--apps")
        .arg(apps)
        .arg("--python")
        .arg(python)
        .args(args)
        .env_remove("LIBERTY_APPS_DIR")
        .env_remove("SNAKEPIT_LOG");
    cmd
}

#[test]
fn a_closed_stdout_ends_the_command_quietly_with_its_exit_code() {
    let dir = apps();
    for (args, code) in [
        (&["completions", "bash"][..], 0),
        (&["man"], 0),
        (&["--help"], 0),
        (
            &["call", "demo.calls:hello", "--kwargs", r#"{"name": "ada"}"#],
            0,
        ),
        (&["call", "demo.calls:boom", "--json"], 1),
        (&["call", "demo.calls:nope", "--json"], 2),
        (&["check", "--json"], 0),
        (&["runs", "--json"], 0),
        (&["status", "--json"], 3),
    ] {
        // Every write fails with EPIPE (the reader is gone before the command starts),
        // several times over: the outcome may not depend on timing.
        for _ in 0..3 {
            let (status, stderr) = common::with_closed_stdout(&mut command(dir.path(), args));
            common::assert_no_panic(&format!("{args:?}"), &stderr);
            assert_eq!(status.code(), Some(code), "{args:?}: {stderr}");
        }
    }
    // `| head -1`: the reader takes a line, then goes (the race of the issue: the rest
    // of the output is written before or after the pipe closes).
    for _ in 0..20 {
        let (line, status, stderr) =
            common::head_1(&mut command(dir.path(), &["completions", "zsh"]));
        common::assert_no_panic("completions zsh | head -1", &stderr);
        assert_eq!(status.code(), Some(0), "{stderr}");
        assert!(line.starts_with("#compdef snakepit"), "{line}");
    }
}

#[test]
fn a_closed_stderr_ends_the_command_with_its_exit_code() {
    let dir = apps();
    let (reader, writer) = nix::unistd::pipe().unwrap();
    drop(reader);
    let out = command(dir.path(), &["call", "demo.calls:boom"])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::from(writer))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "the raise's exit code, not a panic's"
    );
}

#[test]
fn no_backtrace_reaches_a_user_for_bad_input() {
    let dir = apps();
    std::fs::write(dir.path().join("jobs.toml"), "[[jobs]]\nname = 1\n").unwrap();
    let bad_toml = tempfile::tempdir().unwrap();
    std::fs::write(bad_toml.path().join("app.toml"), "[runtime\nworkers = 2\n").unwrap();
    let bad_connectors = tempfile::tempdir().unwrap();
    std::fs::write(
        bad_connectors.path().join("connectors.toml"),
        "[sql.x]\nurl = \"postgres://u:${NOT_SET_ANYWHERE_1}@db/x\"\n",
    )
    .unwrap();
    let missing = dir.path().join("no/such/dir");
    for backtrace in ["1", "full"] {
        for (apps, args, code) in [
            (bad_toml.path(), &["call", "demo.calls:ping"][..], 2),
            (bad_toml.path(), &["serve"], 2),
            (bad_connectors.path(), &["check"], 1),
            (bad_connectors.path(), &["run", "x"], 2),
            (dir.path(), &["run", "nosuch"], 2),
            (dir.path(), &["jobs"], 2),
            (
                dir.path(),
                &["call", "demo.calls:hello", "--kwargs", "{oops"],
                2,
            ),
            (
                dir.path(),
                &["call", "demo.calls:ping", "--timeout", "soon"],
                2,
            ),
            (dir.path(), &["runs", "show", "nosuch"], 2),
            (dir.path(), &["status"], 3),
            (dir.path(), &["completions", "tcsh"], 2),
            (&missing, &["call", "demo.calls:ping"], 2),
        ] {
            let out = command(apps, args)
                .env("RUST_BACKTRACE", backtrace)
                .stdin(std::process::Stdio::null())
                .output()
                .unwrap();
            let err = text(&out.stderr);
            common::assert_no_panic(&format!("{args:?}"), &err);
            assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
            assert!(!err.trim().is_empty(), "{args:?}: a failure says why");
        }
    }
}

#[test]
fn json_answers_failures_in_json_with_the_same_exit_codes() {
    let dir = apps();
    let bad = tempfile::tempdir().unwrap();
    std::fs::write(bad.path().join("app.toml"), "[runtime]\nworkerz = 2\n").unwrap();
    // jobs.toml's problems are a file's too (`config`, with the file), not bad flags.
    let bad_jobs = tempfile::tempdir().unwrap();
    std::fs::write(bad_jobs.path().join("jobs.toml"), "x = [\n").unwrap();
    for (apps, args, code, kind) in [
        (dir.path(), &["call", "demo.calls:boom"][..], 1, "raised"),
        (dir.path(), &["call", "demo.calls:nope"], 2, "reference"),
        (
            dir.path(),
            &["call", "demo.calls:sleepy", "--timeout", "300ms"],
            3,
            "timeout",
        ),
        (
            dir.path(),
            &["call", "demo.calls:hello", "--kwargs", "[1]"],
            2,
            "usage",
        ),
        (dir.path(), &["call"], 2, "usage"), // clap: REF missing
        (dir.path(), &["run", "nosuch"], 2, "usage"),
        (dir.path(), &["runs", "show", "nosuch"], 2, "usage"),
        (dir.path(), &["status"], 3, "unavailable"),
        (dir.path(), &["reload"], 3, "unavailable"),
        (
            dir.path(),
            &["call", "--remote", "demo.calls:ping"],
            3,
            "unavailable",
        ),
        (
            dir.path(),
            &["bench", "demo.calls:nope", "--calls", "10"],
            2,
            "reference",
        ),
        (bad.path(), &["call", "demo.calls:ping"], 2, "config"),
        (bad.path(), &["serve"], 2, "config"),
        (bad.path(), &["run", "x"], 2, "config"),
        (bad.path(), &["jobs"], 2, "config"),
        (bad_jobs.path(), &["jobs"], 2, "config"),
        (bad_jobs.path(), &["run", "x"], 2, "config"),
    ] {
        let plain = command(apps, args)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let mut json_args = args.to_vec();
        json_args.push("--json");
        let out = command(apps, &json_args)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(code),
            "{json_args:?}: {}",
            text(&out.stderr)
        );
        assert_eq!(
            plain.status.code(),
            Some(code),
            "{args:?}: {}",
            text(&plain.stderr)
        );
        assert!(plain.stdout.is_empty(), "{args:?}: stdout is for results");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{json_args:?}: {e}: {:?}", text(&out.stdout)));
        assert_eq!(v["error"]["kind"], kind, "{json_args:?}: {v}");
        if kind == "config" {
            assert!(v["error"]["file"].as_str().is_some(), "{json_args:?}: {v}");
        }
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{json_args:?}: {v}"
        );
        // stderr keeps the sentence for people.
        assert!(!text(&out.stderr).trim().is_empty(), "{json_args:?}");
    }
    let out = command(dir.path(), &["call", "demo.calls:boom", "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["error"]["raised"]["type_name"], "ValueError", "{v}");
    assert!(v["error"]["raised"]["traceback"]
        .as_str()
        .unwrap()
        .contains("KeyError: 'inner'"));
    let out = command(bad.path(), &["call", "demo.calls:ping", "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        v["error"]["file"].as_str().unwrap().ends_with("app.toml"),
        "{v}"
    );
}

#[test]
fn completions_and_the_man_page_are_generated_from_the_flags() {
    let dir = apps();
    for (shell, sign) in [
        ("bash", "_snakepit()"),
        ("zsh", "#compdef snakepit"),
        ("fish", "complete -c snakepit"),
    ] {
        let out = command(dir.path(), &["completions", shell])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{shell}");
        let script = text(&out.stdout);
        assert!(
            script.contains(sign)
                && script.contains("validate-password")
                && script.contains("graceful-timeout"),
            "{shell}: {script}"
        );
    }
    let out = command(dir.path(), &["man"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let page = text(&out.stdout);
    assert!(
        page.starts_with(".ie") || page.contains(".TH snakepit"),
        "{page}"
    );
    assert!(
        page.contains("SNAKEPIT_LOG") && page.contains("completions"),
        "{page}"
    );
}

#[test]
fn help_lists_every_environment_variable_the_command_line_reads() {
    let out = Command::new(env!("CARGO_BIN_EXE_snakepit"))
        .arg("--help")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let help = text(&out.stdout);
    for var in [
        "LIBERTY_APPS_DIR",
        "SNAKEPIT_PYTHON",
        "SNAKEPIT_LOG",
        "SNAKEPIT_CACHE_DIR",
        "XDG_CACHE_HOME",
        "PATH",
        "USER",
        "[isolation] env",
    ] {
        assert!(help.contains(var), "{var} missing from --help:\n{help}");
    }
}
