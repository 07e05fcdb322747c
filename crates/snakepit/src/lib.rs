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
//! A [`Pool`] owns a fixed number of worker *slots*. Each slot is an OS thread running
//! its own single-threaded tokio runtime; it owns one worker process at a time, its end
//! of a `socketpair`, and the worker's stdout/stderr pipes. Calls go into one bounded
//! queue shared by the slots; an idle slot takes the next call, writes it as a CALL
//! frame, and answers the caller's oneshot with the RESULT or EXCEPTION frame that comes
//! back, serving the worker's HOST_REQUESTs (its connector calls) and LOG records
//! meanwhile. The value of a RESULT is not decoded: it reaches the caller as a
//! [`RawValue`].
//!
//! Every call ends. The slot watches the call's deadline, the caller (a dropped future is
//! a cancellation), the worker's exit (pidfd) and its socket (EOF, garbage): a timed-out
//! or dropped call is cancelled in the worker (CANCEL frame and `SIGUSR1`), and the
//! worker's process group is killed if it does not stop within the grace period. A
//! worker that dies is replaced at once; one that keeps dying young backs off (100 ms
//! doubling, capped at 10 s) and the pool reports the slot as failing. Workers are
//! recycled after `max_calls_per_worker` calls (with jitter) or above `max_worker_rss`,
//! after the call in hand. Each worker runs in its own process group with the
//! parent-death signal set, so nothing outlives the supervisor.
//!
//! Every worker is forked from a per-pool template (the fork-server) and confines itself
//! before any plugin code runs, by a plan the pool works out at build time
//! ([`Isolation`], [`Enforcement`]): no capabilities, no_new_privs, a Landlock domain of
//! its own, a seccomp filter, and cgroups, rlimits and a private TMPDIR for the
//! `[isolation]` settings. A setting the machine cannot enforce makes
//! [`PoolBuilder::build`] fail with a sentence, unless the pool is best-effort.
//!
//! The Python side is the shim in `python-shim/`, embedded in this crate and written to
//! a cache directory at first use: nothing is installed into the worker's interpreter.
//! The wire protocol is in the `snakepit-proto` crate.
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
pub mod sync;
mod usage;
mod worker;

pub use calllog::{LogSink, BYTES_PER_SEC, LINES_PER_SEC};
pub use config::DEFAULT_ENV;
pub use dispatch::{HOST_BYTES_IN_FLIGHT, HOST_REQUESTS_IN_FLIGHT};
pub use error::{BuildError, CallError, ExitStatus, SpawnError};
pub use event::{EventKind, RetireReason, WorkerEvent};
pub use host::{HostFuture, HostHandler, HostRequest};
pub use isolation::{
    format_size, helper_command, Enforce, Enforced, Enforcement, Filesystem, Isolation,
};
pub use pool::{Call, Map, Pool, PoolBuilder, PoolStatus, WorkerState, WorkerStatus};
pub use shim::{resolve_interpreter, shim_dir, TEST_BOOTSTRAP};
pub use snakepit_proto::{
    DateTime, ExceptionKind, HostFailure, LogRecord, PyException, RawValue, Value,
};
pub use usage::{CallUsage, Measured};
