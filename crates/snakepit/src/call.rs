//! A call to make: its reference, kwargs, context and per-call options.

use std::sync::Arc;
use std::time::Duration;

use snakepit_proto::Value;

use crate::calllog::LogSink;
use crate::error::CallError;

/// Keyword arguments or context: str keys to values, in order.
pub type Map = Vec<(String, Value)>;

/// A call to make: the reference, its kwargs and context, and per-call options. A clone
/// makes the same call again (the same log channel, the same run id).
#[derive(Debug, Clone)]
pub struct Call {
    pub(crate) reference: String,
    pub(crate) kwargs: Map,
    pub(crate) context: Map,
    pub(crate) timeout: Option<Duration>,
    pub(crate) logs: Option<LogSink>,
    pub(crate) run_id: Option<Arc<str>>,
}

impl Call {
    /// A call of `"module.path:function"` with no kwargs and no context.
    pub fn new(reference: impl Into<String>) -> Self {
        Call {
            reference: reference.into(),
            kwargs: Map::new(),
            context: Map::new(),
            timeout: None,
            logs: None,
            run_id: None,
        }
    }
    pub fn kwargs(mut self, kwargs: Map) -> Self {
        self.kwargs = kwargs;
        self
    }
    pub fn kwarg(mut self, key: impl Into<String>, v: impl Into<Value>) -> Self {
        self.kwargs.push((key.into(), v.into()));
        self
    }
    pub fn context(mut self, context: Map) -> Self {
        self.context = context;
        self
    }
    /// This call's timeout instead of the pool's.
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = Some(t);
        self
    }
    /// Also send the call's log records (logging, prints, fd output) to this channel:
    /// a bounded `mpsc::Sender` (records that find it full are dropped and counted) or
    /// an `mpsc::UnboundedSender`. Either way a call logs at most
    /// [`LINES_PER_SEC`](crate::LINES_PER_SEC) records and
    /// [`BYTES_PER_SEC`](crate::BYTES_PER_SEC) bytes a second; the rest are dropped and
    /// counted in a record from logger `"snakepit"`.
    pub fn logs(mut self, tx: impl Into<LogSink>) -> Self {
        self.logs = Some(tx.into());
        self
    }
    /// Tags the call with the job run it belongs to: the host handler sees it in each
    /// [`HostRequest`](crate::HostRequest) of the call (for the audit log).
    pub fn run_id(mut self, run_id: impl Into<Arc<str>>) -> Self {
        self.run_id = Some(run_id.into());
        self
    }
}

/// Refuses a reference that is not `module.path:function` before any worker sees it.
pub(crate) fn check_reference(reference: &str) -> Result<(), CallError> {
    let ok = reference.split_once(':').is_some_and(|(module, func)| {
        let ident = |s: &str| {
            !s.is_empty()
                && !s.starts_with(|c: char| c.is_ascii_digit())
                && s.chars().all(|c| c.is_alphanumeric() || c == '_')
        };
        module.split('.').all(ident) && func.split('.').all(ident)
    });
    if ok {
        Ok(())
    } else {
        Err(CallError::BadReference {
            reference: reference.to_owned(),
            message: "a reference is \"module.path:function\"".into(),
        })
    }
}
