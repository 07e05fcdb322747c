//! The plugin authors' kit (`snakepit test`): the socket through which a test process
//! reaches the host.
//!
//! The test process (pytest, with the pytest plugin of the shim) speaks the workers' own
//! frames: it sends HOST_REQUESTs, the server answers HOST_REPLYs, so the shim's
//! host-request code (`host.py`, `channel.py`) is its client. Besides the connectors'
//! methods (PROTOCOL.md) and the built-in `echo`, the server serves:
//!
//! | method | payload | reply |
//! |---|---|---|
//! | `test.begin` | `{package, name}` | `{test: id}`: a test opens; the connectors' sandbox opens (see `snakepit_connectors`), and every later request must name call `id` |
//! | `test.end` | | nil: the test's transactions left open are dropped, the sandbox is rolled back |
//! | `test.call` | `{reference, kwargs, context}` | `{value, logs}` or `{raised: {type_name, message, traceback}, logs}`: a call through a worker of the reference's pool |
//! | `test.api` | `{connector, base_url}` | nil: the API connector calls `base_url` until the test ends |
//!
//! A connector request of the test process is made as package `package` (its grants
//! apply) with the test's id as its call id. Only the process the host was told of
//! ([`TestServer::allow`]: the pytest that `snakepit test` started) is served; one test at
//! a time.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use snakepit::sync::Recover;
use snakepit::{CallError, HostFailure, HostHandler, HostRequest, Map, Value};
use snakepit_proto::{FrameBuffer, FromWorker, ToWorker, DEFAULT_FRAME_LIMIT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, watch, Mutex, OnceCell};

use crate::{Host, HostError};

/// The pool name connector requests of the test process are made under.
const TEST_POOL: &str = "test";

/// Serves a test process on a Unix socket (see the module docs).
pub struct TestServer {
    socket: PathBuf,
    allowed: watch::Sender<Option<u32>>,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

/// The host's start, not awaited yet.
type Start = std::pin::Pin<Box<dyn Future<Output = Result<Host, HostError>> + Send>>;

struct State {
    host: OnceCell<Result<Arc<Host>, String>>,
    start: Mutex<Option<Start>>,
    test: std::sync::Mutex<Option<Test>>,
    next_test: std::sync::atomic::AtomicU64,
}

/// The test open now.
#[derive(Clone)]
struct Test {
    id: u64,
    /// `{package}:{name}`: the reference its connector requests are made as.
    reference: Arc<str>,
}

fn failure(type_name: &str, message: impl Into<String>) -> HostFailure {
    HostFailure {
        type_name: type_name.into(),
        message: message.into(),
    }
}

impl TestServer {
    /// Listens on `socket` (a new file) and starts the host with `start` in the
    /// background (a test that needs it waits for it; one that does not never does).
    pub fn start(
        socket: &Path,
        start: impl Future<Output = Result<Host, HostError>> + Send + 'static,
    ) -> std::io::Result<TestServer> {
        let listener = UnixListener::bind(socket)?;
        let (allowed, allowed_rx) = watch::channel(None);
        let state = Arc::new(State {
            host: OnceCell::new(),
            start: Mutex::new(Some(Box::pin(start))),
            test: std::sync::Mutex::new(None),
            next_test: std::sync::atomic::AtomicU64::new(1),
        });
        let warm = state.clone();
        let serving = state.clone();
        let task = tokio::spawn(async move {
            tokio::join!(
                async move {
                    let _ = warm.host().await;
                },
                accept(listener, serving, allowed_rx)
            );
        });
        Ok(TestServer {
            socket: socket.to_owned(),
            allowed,
            state,
            task,
        })
    }

    /// The socket's path (for the test process: `SNAKEPIT_TEST_SOCKET`).
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Serves the process `pid` (and refuses every other peer).
    pub fn allow(&self, pid: u32) {
        self.allowed.send_replace(Some(pid));
    }

    /// Stops serving: a test left open is rolled back, the host (if it started) shut
    /// down, the socket removed.
    pub async fn stop(self, deadline: std::time::Duration) {
        self.task.abort();
        let _ = self.task.await;
        if let Some(Ok(host)) = self.state.host.get() {
            let _ = self.state.end(host).await;
            host.shutdown(deadline).await;
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

impl State {
    /// The host, started once (its start-up error, as text, for every request after).
    async fn host(&self) -> Result<Arc<Host>, String> {
        self.host
            .get_or_init(|| async {
                let start = self.start.lock().await.take();
                match start {
                    Some(start) => start
                        .await
                        .map(Arc::new)
                        .map_err(|e| format!("the install does not start: {e}")),
                    None => Err("the host is gone".into()),
                }
            })
            .await
            .clone()
    }

    fn current(&self) -> Option<Test> {
        self.test.lock().recover().clone()
    }

    /// Ends the open test, if any: its plugin transactions dropped, its sandbox rolled
    /// back.
    async fn end(&self, host: &Host) -> Result<(), HostFailure> {
        let test = self.test.lock().recover().take();
        let Some(test) = test else { return Ok(()) };
        let connectors = host.install().connectors.clone();
        connectors.call_ended(TEST_POOL, test.id);
        connectors
            .close_sandbox()
            .await
            .map_err(|m| failure("ConnectorError", m))
    }

    async fn serve(
        &self,
        claimed: Option<u64>,
        method: String,
        payload: snakepit::RawValue,
    ) -> Result<Value, HostFailure> {
        let host = self
            .host()
            .await
            .map_err(|m| failure("SupervisorError", m))?;
        let test = self.current();
        if method == "test.begin" {
            return self.begin(&host, test, payload);
        }
        let test = match (test, claimed) {
            (Some(t), Some(id)) if t.id == id => t,
            (Some(t), _) => {
                return Err(failure(
                    "PermissionError",
                    format!("the request does not name the open test {}", t.id),
                ))
            }
            (None, _) => {
                return Err(failure(
                    "RuntimeError",
                    "no test is open: the snakepit fixtures open one",
                ))
            }
        };
        let decoded = || {
            payload
                .decode()
                .map_err(|e| failure("DecodeError", e.to_string()))
        };
        match method.as_str() {
            // Built in, as in a worker's call.
            "echo" => decoded(),
            "test.end" => self.end(&host).await.map(|()| Value::Nil),
            "test.call" => call(&host, decoded()?).await,
            "test.api" => {
                let p = decoded()?;
                let field = |k: &str| {
                    p.get(k).and_then(Value::as_str).ok_or_else(|| {
                        failure(
                            "TypeError",
                            format!("test.api: the payload has no str {k:?}"),
                        )
                    })
                };
                host.install()
                    .connectors
                    .sandbox_api_base(field("connector")?, field("base_url")?)
                    .map(|()| Value::Nil)
                    .map_err(|m| failure("ConnectorError", m))
            }
            _ => {
                let connectors = host.install().connectors.clone();
                connectors
                    .handle(HostRequest {
                        pool: TEST_POOL.into(),
                        worker: 0,
                        call_id: test.id,
                        reference: test.reference,
                        run_id: None,
                        method,
                        payload,
                    })
                    .await
            }
        }
    }

    fn begin(
        &self,
        host: &Host,
        open: Option<Test>,
        payload: snakepit::RawValue,
    ) -> Result<Value, HostFailure> {
        if let Some(t) = open {
            return Err(failure(
                "RuntimeError",
                format!("test {} is still open: one test at a time", t.id),
            ));
        }
        let p = payload
            .decode()
            .map_err(|e| failure("DecodeError", e.to_string()))?;
        let text = |k: &str| p.get(k).and_then(Value::as_str).unwrap_or("");
        let package = text("package");
        if package.is_empty() || package.contains(['.', ':']) {
            return Err(failure(
                "ValueError",
                format!("test.begin: {package:?} is not a package name"),
            ));
        }
        host.install()
            .connectors
            .open_sandbox()
            .map_err(|m| failure("RuntimeError", m))?;
        let id = self
            .next_test
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name: String = text("name")
            .chars()
            .map(|c| if c.is_alphanumeric() { c } else { '_' })
            .collect();
        *self.test.lock().recover() = Some(Test {
            id,
            reference: format!("{package}:{name}").into(),
        });
        Ok(Value::map([("test", Value::Int(id as i64))]))
    }
}

/// `test.call`: the reference through a worker of its pool, its log records collected.
async fn call(host: &Host, payload: Value) -> Result<Value, HostFailure> {
    let Some(reference) = payload.get("reference").and_then(Value::as_str) else {
        return Err(failure(
            "TypeError",
            "test.call: the payload has no str \"reference\"",
        ));
    };
    let map = |k: &str| match payload.get(k) {
        Some(Value::Map(m)) => m.clone(),
        _ => Map::new(),
    };
    let (tx, mut rx) = mpsc::unbounded_channel();
    let result = host
        .submit(reference, |c| {
            c.kwargs(map("kwargs")).context(map("context")).logs(tx)
        })
        .await;
    let mut logs = Vec::new();
    while let Ok(rec) = rx.try_recv() {
        logs.push(Value::map([
            ("level", Value::Int(rec.level)),
            ("logger", Value::from(rec.logger)),
            ("message", Value::from(rec.message)),
            ("exc_text", rec.exc_text.map_or(Value::Nil, Value::from)),
            ("time", Value::Float(rec.time)),
        ]));
    }
    let logs = ("logs", Value::List(logs));
    match result {
        Ok(raw) => {
            let value = raw
                .decode()
                .map_err(|e| failure("DecodeError", e.to_string()))?;
            Ok(Value::map([("value", value), logs]))
        }
        Err(CallError::Raised(e)) => Ok(Value::map([
            (
                "raised",
                Value::map([
                    ("type_name", Value::from(e.type_name)),
                    ("message", Value::from(e.message)),
                    ("traceback", Value::from(e.traceback)),
                ]),
            ),
            logs,
        ])),
        Err(e) => Err(failure(&format!("snakepit.{}", e.kind()), e.to_string())),
    }
}

async fn accept(
    listener: UnixListener,
    state: Arc<State>,
    mut allowed: watch::Receiver<Option<u32>>,
) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            conn = listener.accept() => {
                let Ok((stream, _)) = conn else { continue };
                let Ok(pid) = allowed.wait_for(Option::is_some).await.map(|p| p.unwrap_or(0)) else {
                    return;
                };
                let peer = stream.peer_cred().ok().and_then(|c| c.pid());
                if peer != Some(pid as i32) {
                    tracing::warn!(?peer, "test socket: refused a peer that is not the test process");
                    continue;
                }
                conns.spawn(connection(stream, state.clone()));
            }
        }
    }
}

/// Serves one connection: each request on a task of its own, answered when done (the
/// test process may have several in flight).
async fn connection(stream: UnixStream, state: Arc<State>) {
    let (mut read, mut write) = stream.into_split();
    let (replies, mut out) = mpsc::unbounded_channel::<Vec<u8>>();
    let writer = tokio::spawn(async move {
        while let Some(frame) = out.recv().await {
            if write.write_all(&frame).await.is_err() {
                return;
            }
        }
    });
    let mut buf = FrameBuffer::new(DEFAULT_FRAME_LIMIT);
    let mut requests = tokio::task::JoinSet::new();
    'read: loop {
        loop {
            let body = match buf.next_frame() {
                Ok(Some(body)) => body,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "test socket: bad frame");
                    break 'read;
                }
            };
            let Ok(FromWorker::HostRequest {
                request_id,
                call_id,
                method,
                payload,
            }) = FromWorker::decode(&body)
            else {
                tracing::warn!("test socket: not a host request");
                break 'read;
            };
            let (state, replies) = (state.clone(), replies.clone());
            requests.spawn(async move {
                let reply = state.serve(call_id, method, payload).await;
                let _ = replies.send(ToWorker::HostReply { request_id, reply }.encode());
            });
        }
        match read.read_buf(buf.read_space()).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    drop(replies);
    while requests.join_next().await.is_some() {}
    let _ = writer.await;
}
