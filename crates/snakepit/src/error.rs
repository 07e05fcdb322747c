//! Errors of the supervisor, one enum per operation.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use snakepit_proto::{ExceptionKind, PyException};

/// How a worker process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// It exited with this code.
    Code(i32),
    /// A signal killed it.
    Signal { signal: i32, core_dumped: bool },
    /// It ended, but its status could not be read.
    Unknown,
}

impl ExitStatus {
    /// From a raw `waitpid` status.
    pub fn from_raw(status: i32) -> Self {
        if libc::WIFEXITED(status) {
            ExitStatus::Code(libc::WEXITSTATUS(status))
        } else if libc::WIFSIGNALED(status) {
            ExitStatus::Signal {
                signal: libc::WTERMSIG(status),
                core_dumped: libc::WCOREDUMP(status),
            }
        } else {
            ExitStatus::Unknown
        }
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitStatus::Code(c) => write!(f, "exit status {c}"),
            ExitStatus::Signal {
                signal,
                core_dumped,
            } => {
                let name = nix::sys::signal::Signal::try_from(*signal)
                    .map(|s| s.as_str())
                    .unwrap_or("unknown signal");
                write!(f, "signal {signal} ({name})")?;
                if *core_dumped {
                    write!(f, ", core dumped")?;
                }
                Ok(())
            }
            ExitStatus::Unknown => write!(f, "unknown status"),
        }
    }
}

/// Why a worker could not be started.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SpawnError {
    #[error("failed to run the Python interpreter {path}: {reason}")]
    Interpreter { path: PathBuf, reason: String },
    #[error("the Python interpreter {path} is {version}; snakepit needs CPython 3.9 or newer")]
    PythonTooOld { path: PathBuf, version: String },
    #[error("failed to write the worker shim to {dir}: {reason}")]
    Shim { dir: PathBuf, reason: String },
    #[error("failed to start the worker process: {0}")]
    Os(String),
    #[error("the worker exited before it was ready ({status}){}", tail(.stderr))]
    Exited {
        status: ExitStatus,
        stderr: Vec<String>,
    },
    #[error("the worker was not ready within {0:?}")]
    Timeout(Duration),
    #[error("the worker's handshake was wrong: {0}")]
    Handshake(String),
}

fn bad_reference(reference: &str, message: &str) -> String {
    // The shim's messages usually name the reference already.
    if message.contains(reference) {
        format!("bad reference: {message}")
    } else {
        format!("bad reference {reference}: {message}")
    }
}

fn because(reason: &Option<String>) -> String {
    reason.as_ref().map_or(String::new(), |r| format!(": {r}"))
}

fn tail(lines: &[String]) -> String {
    if lines.is_empty() {
        String::new()
    } else {
        format!("; its last stderr lines:\n  {}", lines.join("\n  "))
    }
}

/// Why a pool could not be built.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BuildError {
    #[error("invalid pool setting: {0}")]
    Config(String),
    #[error(transparent)]
    Spawn(#[from] SpawnError),
}

/// How a call ended when it did not return a value.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// The plugin raised.
    #[error("{}: {}", .0.type_name, .0.message)]
    Raised(PyException),
    /// The reference does not resolve, or the arguments do not fit its signature.
    #[error("{}", bad_reference(.reference, .message))]
    BadReference { reference: String, message: String },
    /// The call ran past its timeout (it was cancelled in the worker, whose process group
    /// is killed if it does not stop within the grace period).
    #[error("the call did not finish within {0:?}")]
    Timeout(Duration),
    /// The worker died during the call; `reason` says so when a limit of the pool's
    /// `[isolation]` killed it ("memory limit: …", "CPU limit: …").
    #[error("the worker crashed during the call ({status}){}{}", because(.reason), tail(.stderr))]
    WorkerCrashed {
        status: ExitStatus,
        reason: Option<String>,
        stderr: Vec<String>,
    },
    /// The queue was full.
    #[error("the pool's queue is full ({0} calls waiting)")]
    Overloaded(usize),
    /// The call was cancelled in the worker.
    #[error("the call was cancelled")]
    Cancelled,
    /// The worker broke the protocol (garbage, an oversized frame); it was killed.
    #[error("the worker broke the protocol and was killed: {0}")]
    Protocol(String),
    /// The return value could not cross the wire.
    #[error("the result cannot be sent back: {0}")]
    Unserializable(String),
    /// No worker could be started.
    #[error("no worker is available: {0}")]
    Unavailable(SpawnError),
    /// The pool is shutting down or gone.
    #[error("the pool is shut down")]
    ShutDown,
}

impl CallError {
    /// A short machine name for the kind of error, as in `snakepit bench --json`.
    pub fn kind(&self) -> &'static str {
        match self {
            CallError::Raised(_) | CallError::Unserializable(_) => "raised",
            CallError::BadReference { .. } => "reference",
            CallError::Timeout(_) => "timeout",
            CallError::WorkerCrashed { .. }
            | CallError::Protocol(_)
            | CallError::Unavailable(_) => "crashed",
            CallError::Overloaded(_) => "overloaded",
            CallError::Cancelled | CallError::ShutDown => "cancelled",
        }
    }
}

pub(crate) fn call_error(e: PyException, reference: &str) -> CallError {
    match e.kind {
        ExceptionKind::Raised => CallError::Raised(e),
        ExceptionKind::Reference => CallError::BadReference {
            reference: reference.to_owned(),
            message: e.message,
        },
        ExceptionKind::Cancelled => CallError::Cancelled,
        ExceptionKind::Encode => CallError::Unserializable(e.message),
    }
}
