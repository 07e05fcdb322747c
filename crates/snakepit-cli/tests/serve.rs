//! `snakepit serve` and its clients (README, "Serving and hot restart"): `status [--json]`,
//! `reload` and `call --remote` through the control socket; signals; one serve per apps
//! dir.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

mod common;

use snakepit_tests::{python, wait_for_blocking};

fn snakepit(apps: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_snakepit"))
        .arg("--apps")
        .arg(apps)
        .arg("--python")
        .arg(python())
        .args(args)
        .env_remove("LIBERTY_APPS_DIR")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// How long a test waits for the serve.
const WAIT: Duration = Duration::from_secs(30);

const CALLS: &str = r#"
import logging
log = logging.getLogger(__name__)

def hello(*, name: str, **ctx):
    log.info("greeting %s", name)
    return {"hello": name, "run_id": ctx.get("run_id")}

def boom(**ctx):
    try:
        raise KeyError("inner")
    except KeyError as e:
        raise ValueError("outer") from e

def hook(**ctx):
    return None
"#;

fn apps(app_toml: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let pkg = dir.path().join("plugins/demo");
    std::fs::create_dir_all(&pkg).unwrap();
    std::fs::write(pkg.join("__init__.py"), "").unwrap();
    std::fs::write(pkg.join("calls.py"), CALLS).unwrap();
    std::fs::write(dir.path().join("app.toml"), app_toml).unwrap();
    dir
}

/// A running `snakepit serve`, killed on drop if the test did not stop it.
struct Serve(Option<Child>);

impl Serve {
    /// Starts a serve of `apps` and waits until `status` answers.
    fn start(apps: &Path) -> Serve {
        let child = Command::new(env!("CARGO_BIN_EXE_snakepit"))
            .arg("--apps")
            .arg(apps)
            .arg("--python")
            .arg(python())
            .arg("serve")
            .env_remove("LIBERTY_APPS_DIR")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let serve = Serve(Some(child));
        wait_for_blocking("the serve to answer status", WAIT, || {
            snakepit(apps, &["status"]).status.success()
        });
        serve
    }

    fn pid(&self) -> u32 {
        self.0.as_ref().unwrap().id()
    }

    fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .args(["-s", name, &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// Sends SIGTERM and returns how the serve exited.
    fn stop(mut self) -> Output {
        self.signal("TERM");
        self.0.take().unwrap().wait_with_output().unwrap()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn status_json(apps: &Path) -> serde_json::Value {
    let out = snakepit(apps, &["status", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn serve_answers_status_reload_and_remote_calls_then_stops_on_sigterm() {
    let dir = apps("[runtime]\nworkers = 1\nwatch = false\n\n[hooks]\n\"screen.before_save\" = [\"demo.calls:hook\"]\n");
    let serve = Serve::start(dir.path());

    // The socket is private to the user: 0600 in a 0700 directory.
    let socket = dir.path().join(".snakepit/control.sock");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&socket), 0o600);
    assert_eq!(mode(socket.parent().unwrap()), 0o700);

    let status = status_json(dir.path());
    assert_eq!(status["pid"], serve.pid());
    assert_eq!(status["generation"], 1);
    assert_eq!(status["watch"], false);
    let worker = &status["pools"][0]["slots"][0];
    assert_eq!(status["pools"][0]["name"], "default");
    assert!(
        worker["pid"].is_u64() && worker["rss_bytes"].is_u64(),
        "{status:#}"
    );
    assert_eq!(worker["state"], "idle");
    let text_status = text(&snakepit(dir.path(), &["status"]).stdout);
    assert!(
        text_status.contains("generation 1 serving since")
            && text_status.contains("pool default: 1/1 live"),
        "{text_status}"
    );

    // `call --remote` prints and exits as the local call does.
    let same = |args: &[&str]| {
        let local = snakepit(dir.path(), args);
        let mut remote_args = args.to_vec();
        remote_args.push("--remote");
        let remote = snakepit(dir.path(), &remote_args);
        assert_eq!(
            (
                remote.status.code(),
                text(&remote.stdout),
                text(&remote.stderr)
            ),
            (
                local.status.code(),
                text(&local.stdout),
                text(&local.stderr)
            ),
            "{args:?}"
        );
        remote
    };
    let hello = same(&[
        "call",
        "demo.calls:hello",
        "--kwargs",
        r#"{"name": "ada"}"#,
        "--ctx",
        r#"{"run_id": "r-1"}"#,
    ]);
    assert_eq!(hello.status.code(), Some(0));
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&hello.stdout).unwrap(),
        serde_json::json!({"hello": "ada", "run_id": "r-1"})
    );
    assert!(text(&hello.stderr).contains("INFO demo.calls: greeting ada"));
    let boom = same(&["call", "demo.calls:boom"]);
    assert_eq!(boom.status.code(), Some(1));
    assert!(text(&boom.stderr).contains("KeyError: 'inner'"));
    assert_eq!(same(&["call", "demo.calls:nosuch"]).status.code(), Some(2));
    // `-v` prints the call's cost on stderr, remote as local; a failing call has one too.
    for args in [
        &[
            "call",
            "-v",
            "demo.calls:hello",
            "--kwargs",
            r#"{"name": "ada"}"#,
        ][..],
        &["call", "-v", "demo.calls:boom"][..],
    ] {
        for remote in [false, true] {
            let mut args = args.to_vec();
            if remote {
                args.push("--remote");
            }
            let out = snakepit(dir.path(), &args);
            let err = text(&out.stderr);
            let cost = format!("snakepit: {}: wall ", args[2]);
            assert!(
                err.contains(&cost) && err.contains(" · cpu ") && err.contains("peak RSS"),
                "{args:?}: {err}"
            );
        }
    }
    assert_eq!(
        same(&["call", "demo.calls:hello", "--kwargs", "[1]"])
            .status
            .code(),
        Some(2)
    );

    // `reload`: 0 once the next generation serves.
    let out = snakepit(dir.path(), &["reload"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("generation 2 serves"));
    assert_eq!(status_json(dir.path())["generation"], 2);

    // A hook that no longer exists: 1 with the problem, generation 2 still serves.
    std::fs::write(
        dir.path().join("plugins/demo/calls.py"),
        CALLS.replace("def hook(", "def renamed_hook("),
    )
    .unwrap();
    let out = snakepit(dir.path(), &["reload"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("app.toml: [hooks] \"screen.before_save\"[0]:")
            && err.contains("generation 2 still serves"),
        "{err}"
    );
    let status = status_json(dir.path());
    assert_eq!(status["generation"], 2);
    assert_eq!(status["last_reload"]["serving"], false);
    assert_eq!(status["last_reload"]["trigger"], "snakepit reload");
    let problem = &status["last_reload"]["problems"][0];
    assert_eq!(problem["entry"], "[hooks] \"screen.before_save\"[0]");
    assert!(problem["reason"].as_str().unwrap().contains("hook"));
    assert!(text(&snakepit(dir.path(), &["status"]).stdout).contains("refused"));
    let out = snakepit(
        dir.path(),
        &[
            "call",
            "--remote",
            "demo.calls:hello",
            "--kwargs",
            r#"{"name": "bo"}"#,
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

    // Fixed, then SIGHUP: the next generation serves.
    std::fs::write(dir.path().join("plugins/demo/calls.py"), CALLS).unwrap();
    serve.signal("HUP");
    wait_for_blocking("SIGHUP to reload", WAIT, || {
        status_json(dir.path())["last_reload"]["trigger"] == "SIGHUP"
    });
    assert_eq!(status_json(dir.path())["generation"], 4);

    // A client connected and silent does not hold the stop up.
    let idle = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    let out = serve.stop();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("SIGTERM: stopping"));
    assert!(!socket.exists(), "the socket file goes with the serve");
    drop(idle);
    let out = snakepit(dir.path(), &["status"]);
    assert_eq!(out.status.code(), Some(3));
}

#[test]
fn one_serve_per_apps_dir_and_a_stale_socket_is_replaced() {
    let dir = apps("[runtime]\nworkers = 1\n");
    // A socket file left by a serve that died: bound, then nobody listens.
    let socket = dir.path().join(".snakepit/control.sock");
    std::fs::create_dir_all(socket.parent().unwrap()).unwrap();
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    assert!(socket.exists());
    let serve = Serve::start(dir.path());
    let out = snakepit(dir.path(), &["serve"]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "another `snakepit serve` (pid {}) is running for",
            serve.pid()
        )),
        "{err}"
    );
    // The first one serves on.
    assert_eq!(status_json(dir.path())["pid"], serve.pid());
    assert_eq!(serve.stop().status.code(), Some(0));
}

#[test]
fn clients_without_a_serve_say_how_to_start_one() {
    let dir = apps("");
    for args in [
        &["status"][..],
        &["reload"],
        &["call", "--remote", "demo.calls:hook"],
    ] {
        let out = snakepit(dir.path(), args);
        assert_eq!(out.status.code(), Some(3), "{args:?}");
        let err = text(&out.stderr);
        assert!(
            err.contains("no `snakepit serve` is running for")
                && err.contains("start one with `snakepit serve`"),
            "{err}"
        );
    }
}

/// A client of another user is refused by the serve's SO_PEERCRED check even when the
/// file modes would let it connect. Making such a client needs root (to open the modes
/// up and to switch to `nobody`); run as another user, only the modes are checked.
#[test]
fn a_peer_of_another_user_is_refused() {
    let dir = apps("[runtime]\nworkers = 1\nwatch = false\n");
    let serve = Serve::start(dir.path());
    let socket = dir.path().join(".snakepit/control.sock");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&socket), 0o600);
    let root = Command::new("id").arg("-u").output().unwrap().stdout == b"0\n";
    if root {
        // Open every door the file system has, so that only the peer check is left.
        for p in [dir.path(), socket.parent().unwrap(), &socket] {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o777)).unwrap();
        }
        const CLIENT: &str = r#"
import os, socket, struct, sys
os.setgid(65534)
os.setuid(65534)
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
# The refusal comes first, before any request.
head = s.recv(4, socket.MSG_WAITALL)
print(s.recv(struct.unpack(">I", head)[0], socket.MSG_WAITALL).decode())
"#;
        let out = Command::new("python3")
            .args(["-c", CLIENT])
            .arg(&socket)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        let reply: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(reply["reply"], "error", "{reply}");
        let message = reply["message"].as_str().unwrap();
        assert!(
            message.contains("refused") && message.contains("65534"),
            "{message}"
        );
    }
    // The serve's own user still gets answers.
    assert_eq!(status_json(dir.path())["pid"], serve.pid());
    assert_eq!(serve.stop().status.code(), Some(0));
}

/// Starts a serve of `apps` with the attack fixture as a plugin, and has one of its
/// workers ask the serve's control socket for its status (`call --remote`): the serve
/// and what the plugin got.
fn worker_asks_the_control_socket(apps: &Path) -> (Serve, serde_json::Value) {
    std::fs::write(
        apps.join("plugins/attack.py"),
        include_str!("../../../tests/plugins/fx/attack.py"),
    )
    .unwrap();
    let serve = Serve::start(apps);
    let socket = apps.join(".snakepit/control.sock");
    let kwargs = serde_json::json!({ "path": socket }).to_string();
    let out = snakepit(
        apps,
        &[
            "call",
            "attack:control_request",
            "--kwargs",
            &kwargs,
            "--remote",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    (serve, serde_json::from_slice(&out.stdout).unwrap())
}

/// A plugin cannot use the control socket (same uid, so SO_PEERCRED lets it in: the
/// serve refuses its own descendants), and `status --json` says what confines each pool.
#[test]
fn a_worker_cannot_use_the_control_socket_and_status_shows_the_isolation() {
    let dir = apps(
        "[runtime]\nworkers = 1\nwatch = false\n\n[isolation]\nnetwork = false\nenforce = \"best-effort\"\n",
    );
    let (serve, v) = worker_asks_the_control_socket(dir.path());
    assert_eq!(v["reached"], false, "{v}");
    // network = false: the socket cannot even be made; without it, the serve refuses.
    let detail = v["detail"].as_str().unwrap();
    assert!(
        detail.contains("refused") || detail.contains("not permitted"),
        "{detail}"
    );

    let status = status_json(dir.path());
    let iso = &status["pools"][0]["isolation"];
    assert_eq!(iso["seccomp"], true, "{iso}");
    assert!(iso["landlock"]["abi"].as_u64().is_some(), "{iso}");
    let settings = iso["settings"].as_array().unwrap();
    assert!(
        settings
            .iter()
            .any(|s| s["setting"] == "network" && s["by"].as_str().unwrap().contains("seccomp")),
        "{iso}"
    );
    let text_status = text(&snakepit(dir.path(), &["status"]).stdout);
    assert!(text_status.contains("isolation: uid"), "{text_status}");
    assert_eq!(serve.stop().status.code(), Some(0));
}

/// Without network = false the socket can be made and connected: the serve's peer
/// check is what refuses the worker.
#[test]
fn the_serve_refuses_its_own_workers_on_the_control_socket() {
    let dir = apps("[runtime]\nworkers = 1\nwatch = false\n");
    let (serve, v) = worker_asks_the_control_socket(dir.path());
    assert_eq!(v["reached"], false, "{v}");
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .contains("is a worker of this serve"),
        "{v}"
    );
    assert_eq!(serve.stop().status.code(), Some(0));
}

#[test]
fn a_console_beyond_loopback_without_a_token_is_refused_before_anything_starts() {
    let dir = apps("[runtime]\nworkers = 1\n");
    let out = snakepit(dir.path(), &["serve", "--http", "0.0.0.0:0"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("app.toml")
            && err.contains("--http 0.0.0.0:0 is not a loopback address")
            && err.contains("http_token"),
        "{err}"
    );
    // Nothing was started: no serve lock was taken.
    assert!(!dir.path().join(".snakepit/serve.lock").exists());
}

#[test]
fn jobs_lists_schedule_next_tick_and_last_run_and_status_shows_them() {
    let dir = apps("[runtime]\nworkers = 1\n");
    std::fs::write(
        dir.path().join("jobs.toml"),
        "[[jobs]]\nname = \"greet\"\nschedule = \"0 2 1 * *\"\nparams = { name = \"ada\" }\n[[jobs.steps]]\nname = \"s\"\ntype = \"python\"\ncallable = \"demo.calls:hello\"\nkwargs = { name = \"${params.name}\" }\n",
    )
    .unwrap();
    let out = snakepit(dir.path(), &["jobs", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let jobs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(jobs[0]["name"], "greet");
    assert_eq!(jobs[0]["schedule"], "0 2 1 * *");
    assert!(jobs[0]["next_tick"]
        .as_str()
        .unwrap()
        .ends_with("T02:00:00Z"));
    assert_eq!(jobs[0]["last_run"], serde_json::Value::Null);
    assert_eq!(jobs[0]["params"], serde_json::json!(["name"]));
    let run = snakepit(dir.path(), &["run", "greet"]);
    assert!(run.status.success(), "{}", text(&run.stderr));
    let table = text(&snakepit(dir.path(), &["jobs"]).stdout);
    assert!(table.starts_with("JOB"), "{table}");
    assert!(
        table.contains("greet") && table.contains("succeeded"),
        "{table}"
    );
    let serve = Serve::start(dir.path());
    let status = text(&snakepit(dir.path(), &["status"]).stdout);
    assert!(
        status.contains("jobs\n  greet: \"0 2 1 * *\" (UTC); next ")
            && status.contains("succeeded (manual"),
        "{status}"
    );
    assert_eq!(status_json(dir.path())["jobs"][0]["name"], "greet");
    assert!(serve.stop().status.success());
}

#[test]
fn serve_json_says_when_it_serves_and_status_into_a_closed_pipe_is_quiet() {
    use std::io::BufRead;
    let dir = apps("[runtime]\nworkers = 1\nwatch = false\n");
    let mut child = Command::new(env!("CARGO_BIN_EXE_snakepit"))
        .arg("--apps")
        .arg(dir.path())
        .arg("--python")
        .arg(python())
        .args(["serve", "--json"])
        .env_remove("LIBERTY_APPS_DIR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let serve = Serve(Some(child));
    let ready: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
    assert_eq!(ready["pid"], serve.pid(), "{ready}");
    assert_eq!(ready["generation"], 1, "{ready}");
    assert!(
        ready["control_socket"]
            .as_str()
            .unwrap()
            .ends_with("control.sock"),
        "{ready}"
    );
    assert!(ready["console"].is_null(), "{ready}");

    // `snakepit status | head -1`, the issue's panic one time in ten: never.
    for _ in 0..10 {
        let mut status = Command::new(env!("CARGO_BIN_EXE_snakepit"));
        status.arg("--apps").arg(dir.path()).arg("status");
        let (status_code, stderr) = common::with_closed_stdout(&mut status);
        common::assert_no_panic("status into a closed pipe", &stderr);
        assert_eq!(status_code.code(), Some(0), "{stderr}");
        let (first, status_code, stderr) = common::head_1(&mut status);
        common::assert_no_panic("status | head -1", &stderr);
        assert_eq!(status_code.code(), Some(0), "{stderr}");
        assert!(!first.trim().is_empty());
    }

    // A remote call's failure in JSON, with the local call's exit code.
    let out = snakepit(
        dir.path(),
        &["call", "--remote", "demo.calls:boom", "--json"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["error"]["kind"], "raised", "{v}");
    assert_eq!(v["error"]["raised"]["type_name"], "ValueError", "{v}");
    assert_eq!(serve.stop().status.code(), Some(0));
}
