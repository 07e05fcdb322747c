//! Shared by the CLI's test binaries (each uses some of it).
#![allow(dead_code)]

use std::io::Read;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Runs `cmd` (stdout discarded) with its stderr unread for the first `stall`, then
/// drained; returns its peak resident size in KiB (VmHWM, read every 10 ms until it
/// exits) and its exit status.
pub fn peak_kib(mut cmd: Command, stall: Duration) -> (u64, ExitStatus) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let drain = std::thread::spawn(move || {
        std::thread::sleep(stall);
        let mut sink = Vec::new();
        stderr.read_to_end(&mut sink).unwrap();
    });
    let status = format!("/proc/{}/status", child.id());
    let mut peak = 0;
    let until = Instant::now() + Duration::from_secs(60);
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        assert!(Instant::now() < until, "{cmd:?} did not end within 60 s");
        if let Some(kib) = std::fs::read_to_string(&status).ok().and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        }) {
            peak = kib;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    drain.join().unwrap();
    (peak, exit)
}

/// Runs `cmd` with its stdout a pipe whose reader is already gone (as after `| head -1`):
/// every write to stdout fails with EPIPE. Returns its exit status and stderr.
pub fn with_closed_stdout(cmd: &mut Command) -> (ExitStatus, String) {
    let (reader, writer) = nix::unistd::pipe().unwrap();
    drop(reader);
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::from(writer))
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `cmd`, reads the first line of its stdout and closes the pipe, like `| head -1`.
/// Returns that line, its exit status and its stderr.
pub fn head_1(cmd: &mut Command) -> (String, ExitStatus, String) {
    use std::io::BufRead;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        line,
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// What a panic or a backtrace leaves on stderr: none of it may reach a user.
pub fn assert_no_panic(what: &str, stderr: &str) {
    for sign in [
        "panicked",
        "stack backtrace",
        "RUST_BACKTRACE",
        "Broken pipe",
    ] {
        assert!(
            !stderr.contains(sign),
            "{what}: {sign:?} on stderr:\n{stderr}"
        );
    }
}
