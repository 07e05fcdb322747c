//! snakepit: run Python plugins in supervised, isolated CPython worker processes.
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async {
//! use std::time::Duration;
//! use snakepit::{Call, CallError, Pool, Value};
//!
//! // Two workers of the machine's python3; a plugin is any "module:function" it imports.
//! let pool = Pool::builder().python("python3").workers(2).build().await?;
//! let value = pool.submit(Call::new("string:capwords").kwarg("s", "hello world")).await?;
//! assert_eq!(value.decode()?, Value::from("Hello World"));
//!
//! // What the plugin raises comes back with its type, message and traceback, and the
//! // worker stays usable.
//! match pool.submit(Call::new("string:capwords").kwarg("s", 42)).await {
//!     Err(CallError::Raised(e)) => assert!(e.message.contains("split"), "{}", e.traceback),
//!     other => panic!("{other:?}"),
//! }
//! pool.shutdown(Duration::from_secs(5)).await;
//! # Ok(())
//! # })
//! # }
//! ```
//!
//! # Theory of operation
//!
//! A [`Pool`] has a fixed number of worker *slots*. Each slot is an OS thread running its
//! own single-threaded tokio runtime, and owns one worker process at a time: it has the
//! worker started, waits for its HANDSHAKE, and lends it to the pool as a *lease* (the
//! worker's pid, the supervisor's end of its `socketpair`, the buffer its frames are read
//! into).
//!
//! **A caller makes its own call.** [`Pool::submit`] encodes the CALL frame on the
//! caller's task and checks a lease out of the pool's dispatch: an idle worker (with
//! [`PoolBuilder::pin_workers`], the one pinned to the caller's CPU if it is idle; else
//! the one checked in last), or a place in a bounded FIFO of waiting callers; the wait
//! counts against the call's timeout, and a full queue answers [`CallError::Overloaded`].
//! The caller then talks to the worker itself, on its own runtime's reactor: it writes
//! the frame, reads the worker's frames until the RESULT or EXCEPTION of its call, and
//! checks the worker back in, to the first caller still waiting if there is one. On this
//! path no other thread takes part. Meanwhile the caller passes the call's LOG records on
//! (within [`LINES_PER_SEC`] and [`BYTES_PER_SEC`]; see [`Call::logs`]) and serves the
//! worker's HOST_REQUESTs mid-call from its own task: `echo` itself, anything else with
//! the pool's [`HostHandler`], whose futures it polls next to the socket. A request that
//! does not name the call in hand, or that finds [`HOST_REQUESTS_IN_FLIGHT`] requests or
//! [`HOST_BYTES_IN_FLIGHT`] bytes in flight, is refused. The value of a RESULT is not
//! decoded: it reaches the caller as a [`RawValue`]. However a submitted call ends, the
//! handler's `call_ended` hears of it.
//!
//! **Everything else is handed back to the slot**, which owns the process between calls
//! and watches it (its pidfd) while it is idle:
//! - a call past its deadline answers [`CallError::Timeout`] at once, and a call whose
//!   future is dropped is cancelled: either way the slot sends CANCEL and `SIGUSR1`, and
//!   waits up to the kill grace for the worker's answer, refusing its host requests
//!   meanwhile; a worker that answers is lent again, one that does not is retired;
//! - a worker whose socket closes is reaped, and its caller answered with
//!   [`CallError::WorkerCrashed`]: the exit status, the pool's limit that killed it if
//!   one did, and the last lines of its stderr;
//! - a worker is retired when it breaks the protocol (its caller gets
//!   [`CallError::Protocol`]), after `max_calls_per_worker` calls (plus jitter), or when
//!   its resident size is over `max_worker_rss` after a call.
//!
//! A worker that goes is finished. With a grace period (the kill grace, after a SHUTDOWN
//! frame, for one retired for its calls or its size or at shutdown; 500 ms for one that
//! died) it gets that long to exit, then its process group gets SIGTERM and as long
//! again; then (at once for one retired after a timeout, a cancellation or a protocol
//! violation) it and its group get SIGKILL. Its exit status is collected and the rest of
//! its output read. The slot starts the next worker at once; one whose workers fail to
//! start, or die within a second without serving a call, waits from the second failure in
//! a row on (100 ms doubling, capped at 10 s). A slot whose worker fails to start counts
//! as failing; when no worker is live and every slot fails, calls answer
//! [`CallError::Unavailable`]. What a worker writes to its stdout and stderr descriptors
//! is read by its slot and logged as records of the call in hand.
//!
//! [`Pool::events`] tells of each worker's life: `Ready` (with its start-up time),
//! `SpawnFailed`, `Exited` (it died on its own: status and stderr), `Retired` (a
//! [`RetireReason`]: `MaxCalls`, `Rss`, `Timeout`, `Cancelled`, `Protocol` or
//! `Shutdown`, and its status) and `Backoff`. [`Pool::shutdown`] stops taking calls,
//! sends the idle workers back to their slots to stop, lets the calls in hand and those
//! waiting finish until its deadline, then kills the workers still in a call; dropping
//! the last clone of a pool kills its workers without waiting.
//!
//! **Workers are forked, not started.** A pool starts a template process, the
//! fork-server (its interpreter with the shim imported, on a thread of its own, SIGTERM as
//! its parent-death signal), and asks it for each worker with a SPAWN frame that carries
//! the worker's end of a new `socketpair` and its stdout and stderr pipes; the template
//! forks, answers with the pid, reaps its children and reports their exit statuses. A
//! template that dies while the pool is open is started again; when the supervisor goes
//! away it kills its children's process groups. A pool whose limits need cgroups has a
//! template per slot, in the slot's cgroups; [`PoolBuilder::fresh_interpreters`] makes a
//! template per worker, which serves that worker alone.
//!
//! Each worker confines itself before any plugin code runs, by a plan the pool works out
//! at build time ([`Isolation`], [`Enforcement`]) and hands its templates: no
//! capabilities, no_new_privs, a Landlock domain of its own, a seccomp filter, and
//! cgroups, rlimits and a private TMPDIR for the `[isolation]` settings. A setting the
//! machine cannot enforce makes [`PoolBuilder::build`] fail with a sentence, unless the
//! pool is best-effort.
//!
//! The Python side is the shim in `python-shim/`, embedded in this crate and written to
//! a cache directory at first use: nothing is installed into the worker's interpreter.
//! The wire protocol is in the `snakepit-proto` crate.
//!
//! # Module chain
//!
//! Each module uses only the modules above it, so that no two import each other (a test
//! reads the sources and holds them to this list):
//!
//! 1. `sync`: locks that shrug off poisoning.
//! 2. `error`: the error enums, and a worker's exception as a [`CallError`].
//! 3. `kill`: SIGKILL of a worker and its process group.
//! 4. `event`: worker lifecycle events.
//! 5. `usage`: what a call cost.
//! 6. `calllog`: a call's log records and their budget, and the call in a worker's hands.
//! 7. `host`: host requests and their handler.
//! 8. `isolation`: what confines the workers, and the CPU watchdog.
//! 9. `config`: what every part of a pool needs to know, fixed at build time.
//! 10. `shim`: the embedded Python shim, and the interpreter it runs on.
//! 11. `process`: a worker process, started, watched, killed and reaped.
//! 12. `launcher`: the fork-servers that start the workers.
//! 13. `dispatch`: leases, the queue of waiting callers, and a call's exchange.
//! 14. `worker`: a slot, owning one worker process at a time.
//! 15. `call`: a call to make, and the shape of a reference.
//! 16. `status`: snapshots of a pool's health.
//! 17. `pool`: the handle callers use.
//! 18. `builder`: a pool's settings, turned into a started pool.
//!
//! # Example
//!
//! The same as the README's (this one is compiled by the doc tests):
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use snakepit::{Call, CallError, HostFailure, HostRequest, Pool};
//!
//! let pool = Pool::builder()
//!     .python("python3")
//!     .sys_path("liberty-apps/plugins")
//!     .workers(4)
//!     .call_timeout(Duration::from_secs(30))
//!     .max_worker_rss(512 << 20)
//!     .host_handler(|req: HostRequest| async move {
//!         // Serve the workers' requests (connectors) here; "echo" is built in.
//!         Err(HostFailure { type_name: "UnknownMethod".into(), message: req.method })
//!     })
//!     .build()
//!     .await?;
//!
//! let value = pool.submit(Call::new("billing.pricing:quote").kwarg("amount", "100")).await?;
//! println!("{}", value.decode()?); // a RawValue stays MessagePack bytes until decoded
//!
//! match pool.submit(Call::new("billing.pricing:quote").kwarg("amount", "x")).await {
//!     Err(CallError::Raised(e)) => eprintln!("{}: {}\n{}", e.type_name, e.message, e.traceback),
//!     other => println!("{other:?}"),
//! }
//! let _events = pool.events(); // Ready, Exited, Retired, SpawnFailed, Backoff
//! pool.shutdown(Duration::from_secs(10)).await;
//! # Ok(()) }
//! ```

mod builder;
mod call;
mod calllog;
mod config;
mod dispatch;
mod error;
mod event;
mod host;
mod isolation;
mod kill;
mod launcher;
mod pool;
mod process;
mod shim;
mod status;
pub mod sync;
mod usage;
mod worker;

pub use builder::PoolBuilder;
pub use call::{Call, Map};
pub use calllog::{LogSink, BYTES_PER_SEC, LINES_PER_SEC};
pub use config::DEFAULT_ENV;
pub use dispatch::{HOST_BYTES_IN_FLIGHT, HOST_REQUESTS_IN_FLIGHT};
pub use error::{BuildError, CallError, ExitStatus, SpawnError};
pub use event::{EventKind, RetireReason, WorkerEvent};
pub use host::{HostFuture, HostHandler, HostRequest};
pub use isolation::{
    format_size, helper_command, Enforce, Enforced, Enforcement, Filesystem, Isolation,
};
pub use pool::Pool;
pub use shim::{resolve_interpreter, shim_dir, TEST_BOOTSTRAP};
pub use snakepit_proto::{
    DateTime, ExceptionKind, HostFailure, LogRecord, PyException, RawValue, Value,
};
pub use status::{PoolStatus, WorkerState, WorkerStatus};
pub use usage::{CallUsage, Measured};

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    /// The module chain of the crate doc: its numbered list of `module` names.
    fn declared_chain(lib: &str) -> Vec<String> {
        lib.lines()
            .skip_while(|l| l.trim() != "//! # Module chain")
            .skip(1)
            .take_while(|l| !l.starts_with("//! #"))
            .filter_map(|l| {
                let item = l.strip_prefix("//! ")?;
                let (number, rest) = item.split_once(". `")?;
                number.parse::<u32>().ok()?;
                Some(rest.split_once('`')?.0.to_owned())
            })
            .collect()
    }

    /// The modules `lib.rs` declares.
    fn declared_modules(lib: &str) -> Vec<String> {
        lib.lines()
            .filter_map(|l| {
                let l = l.strip_prefix("pub ").unwrap_or(l);
                Some(l.strip_prefix("mod ")?.strip_suffix(';')?.to_owned())
            })
            .collect()
    }

    /// The source files of module `name`: `name.rs`, or everything under `name/`.
    fn files_of(src: &Path, name: &str) -> Vec<PathBuf> {
        let file = src.join(format!("{name}.rs"));
        if file.exists() {
            return vec![file];
        }
        let mut files = Vec::new();
        let mut dirs = vec![src.join(name)];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).expect("a module file or directory") {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    files.push(path);
                }
            }
        }
        files
    }

    /// The first path segment of every `crate::` path in `text` (each of a
    /// `crate::{a, b::c}` group), code, comments and doc links alike.
    fn crate_paths(text: &str) -> Vec<String> {
        let ident = |s: &str| {
            s.chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect::<String>()
        };
        let mut found = Vec::new();
        for (at, _) in text.match_indices("crate::") {
            let rest = &text[at + "crate::".len()..];
            match rest.strip_prefix('{') {
                None => found.push(ident(rest)),
                Some(group) => {
                    let mut depth = 0;
                    let mut start = true;
                    for (i, c) in group.char_indices() {
                        match c {
                            '{' => depth += 1,
                            '}' if depth == 0 => break,
                            '}' => depth -= 1,
                            ',' if depth == 0 => start = true,
                            c if c.is_whitespace() => {}
                            _ if start && depth == 0 => {
                                found.push(ident(&group[i..]));
                                start = false;
                            }
                            _ => {}
                        }
                    }
                }
            }
        }
        found
    }

    /// Each module may use only the modules before it in the chain of the crate doc, so
    /// that no two modules import each other, however indirectly.
    #[test]
    fn modules_only_use_modules_earlier_in_the_chain() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
        let chain = declared_chain(&lib);
        let mut problems = Vec::new();
        let mut declared = declared_modules(&lib);
        declared.sort();
        let mut listed = chain.clone();
        listed.sort();
        if declared != listed {
            problems.push(format!(
                "lib.rs declares modules {declared:?}, its module chain lists {listed:?}"
            ));
        }
        for (rank, module) in chain.iter().enumerate() {
            for file in files_of(&src, module) {
                let text = std::fs::read_to_string(&file).unwrap();
                let mut later: Vec<String> = crate_paths(&text)
                    .into_iter()
                    .filter(|used| chain.iter().position(|m| m == used) > Some(rank))
                    .collect();
                later.sort();
                later.dedup();
                for used in later {
                    problems.push(format!(
                        "{} ({module}) uses crate::{used}, later in the chain",
                        file.strip_prefix(&src).unwrap().display()
                    ));
                }
            }
        }
        assert!(
            problems.is_empty(),
            "the module chain is broken:\n{}",
            problems.join("\n")
        );
    }
}
