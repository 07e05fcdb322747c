//! Shared by the CLI's test binaries.

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
