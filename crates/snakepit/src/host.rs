//! Requests that a worker sends back to the supervisor in the middle of a call.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use snakepit_proto::{HostFailure, RawValue, Value};

/// A request from a worker, mid-call.
///
/// Every field is the supervisor's own knowledge, never the worker's word: a request is
/// bound to the call its worker has in hand. The `call_id` a worker writes into its
/// HOST_REQUEST must name that call; a request naming another call, or none (made
/// between calls), is refused before it reaches a handler.
#[derive(Debug, Clone)]
pub struct HostRequest {
    pub pool: Arc<str>,
    pub worker: usize,
    /// The call in the worker's hands when the request came.
    pub call_id: u64,
    /// The reference of that call, whose package decides the grants.
    pub reference: Arc<str>,
    /// The job run of that call, when the caller tagged it ([`Call::run_id`](crate::Call::run_id)).
    pub run_id: Option<Arc<str>>,
    pub method: String,
    pub payload: RawValue,
}

/// The future a [`HostHandler`] returns.
pub type HostFuture = Pin<Box<dyn Future<Output = Result<Value, HostFailure>> + Send>>;

/// Serves the host requests of a pool's workers (connectors, transactions, ...).
///
/// Method `"echo"` never reaches the handler: the supervisor answers it itself. A
/// closure `Fn(HostRequest) -> impl Future<Output = Result<Value, HostFailure>>` is a
/// handler.
pub trait HostHandler: Send + Sync + 'static {
    fn handle(&self, req: HostRequest) -> HostFuture;

    /// Call `call_id` of pool `pool` ended, however it ended: answered, raised, timed
    /// out, crashed, or dropped by its caller. A handler that holds state for a call (an
    /// open transaction) releases it here. Called on the caller's task: do not block.
    fn call_ended(&self, pool: &str, call_id: u64) {
        let _ = (pool, call_id);
    }
}

impl<F, Fut> HostHandler for F
where
    F: Fn(HostRequest) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Value, HostFailure>> + Send + 'static,
{
    fn handle(&self, req: HostRequest) -> HostFuture {
        Box::pin(self(req))
    }
}

/// The handler of a pool built without one: every method is unknown.
pub(crate) struct NoHandler;

impl HostHandler for NoHandler {
    fn handle(&self, req: HostRequest) -> HostFuture {
        Box::pin(async move { Err(unknown_method(&req.method)) })
    }
}

pub(crate) fn unknown_method(method: &str) -> HostFailure {
    HostFailure {
        type_name: "UnknownMethod".into(),
        message: format!("the supervisor has no host method {method:?}"),
    }
}
