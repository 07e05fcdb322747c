//! A worker slot: one OS thread with its own single-threaded tokio runtime, owning one
//! worker process at a time, its socket and its state, for the life of the pool.
//!
//! The slot takes calls from the pool's shared queue only when its worker is idle, so
//! the queue balances itself. A call's life in the slot:
//!
//! ```text
//!  Idle ──job──▶ Busy ──RESULT/EXCEPTION──▶ Idle (or Retire: max calls, RSS)
//!                 │ deadline or caller gone
//!                 ▼
//!             Cancelling ──answer──▶ Idle
//!                 │ grace over
//!                 ▼
//!              killed (process group) ──▶ replaced
//! ```
//!
//! Why a thread per slot: the dispatch cost of a call is wakeups, not work. With each
//! worker's socket on its own thread, two busy workers never wait on one another's
//! reactor; and the thread that forks a worker lives as long as the worker, which the
//! parent-death signal requires.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use snakepit_proto::{
    ExceptionKind, FrameBuffer, FromWorker, HostFailure, LogRecord, PyException, RawValue,
    ToWorker, PROTOCOL_VERSION,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio::time::sleep_until;
use tracing::{debug, info, warn, Instrument};

use crate::error::{CallError, ConnError, ExitStatus, SpawnError};
use crate::event::{EventKind, RetireReason};
use crate::host::HostRequest;
use crate::launcher::Launcher;
use crate::pool::{Job, Phase, PoolConfig, Shared};
use crate::process::{FdLineSink, WorkerProcess};

/// One worker slot of a pool.
pub(crate) struct Slot {
    pub id: usize,
    pub cfg: Arc<PoolConfig>,
    pub shared: Arc<Shared>,
    pub queue: flume::Receiver<Job>,
    pub launcher: Arc<Launcher>,
}

type Reply = oneshot::Sender<Result<RawValue, CallError>>;

/// How a worker's life ended, as far as the slot knows before reaping it.
enum End {
    /// It died (or its socket closed) on its own; the call in hand, if any, is answered
    /// once its exit status is known.
    Died(Option<Reply>),
    /// The slot retires it.
    Retire(RetireReason),
    /// The pool is stopping and the queue is empty.
    Stop,
}

/// The call in hand, for routing the lines a worker writes to its fds.
#[derive(Default)]
struct CurrentCall(Mutex<Option<(u64, Option<mpsc::UnboundedSender<LogRecord>>)>>);

impl CurrentCall {
    fn set(&self, v: Option<(u64, Option<mpsc::UnboundedSender<LogRecord>>)>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = v;
    }
}

/// Starts the slot's thread. `ready` gets the outcome of the first start.
pub(crate) fn spawn_slot(
    slot: Slot,
    ready: oneshot::Sender<Result<(), SpawnError>>,
    done: oneshot::Sender<()>,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name(format!("snakepit-{}-{}", slot.cfg.name, slot.id))
        .spawn(move || {
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt.block_on(slot.run(ready)),
                Err(e) => {
                    let _ = ready.send(Err(SpawnError::Os(format!("runtime: {e}"))));
                }
            }
            let _ = done.send(());
        })
        .map(drop)
}

/// A worker's socket with its frame reassembly buffer.
struct Conn {
    sock: UnixStream,
    buf: FrameBuffer,
}

impl Conn {
    /// The next message; `Ok(None)` at a clean EOF. Cancel-safe.
    async fn next(&mut self) -> Result<Option<FromWorker>, ConnError> {
        loop {
            if let Some(body) = self.buf.next_frame()? {
                return Ok(Some(FromWorker::decode(&body)?));
            }
            match self.sock.read_buf(self.buf.read_space()).await {
                Ok(0) => {
                    self.buf.check_eof()?;
                    return Ok(None);
                }
                Ok(_) => {}
                Err(e) => return Err(ConnError::Frame(e.into())),
            }
        }
    }

    async fn send(&mut self, frame: &[u8]) -> bool {
        self.sock.write_all(frame).await.is_ok()
    }
}

fn log_record(rec: &LogRecord, pool: &str, worker: usize) {
    let (logger, msg, call) = (&rec.logger, &rec.message, rec.call_id);
    let exc = rec.exc_text.as_deref().unwrap_or("");
    macro_rules! ev {
        ($lvl:expr) => {
            tracing::event!(target: "snakepit::plugin", $lvl, pool, worker, call, logger = %logger, exc, "{msg}")
        };
    }
    match rec.level {
        l if l >= 40 => ev!(tracing::Level::ERROR),
        l if l >= 30 => ev!(tracing::Level::WARN),
        l if l >= 20 => ev!(tracing::Level::INFO),
        l if l >= 10 => ev!(tracing::Level::DEBUG),
        _ => ev!(tracing::Level::TRACE),
    }
}

fn now_unix() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

async fn closed(reply: &mut Option<Reply>) {
    match reply {
        Some(r) => r.closed().await,
        None => std::future::pending().await,
    }
}

fn answer(reply: &mut Option<Reply>, result: Result<RawValue, CallError>) {
    if let Some(r) = reply.take() {
        let _ = r.send(result);
    }
}

fn call_error(e: PyException, reference: &str) -> CallError {
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

impl Slot {
    async fn run(self, ready: oneshot::Sender<Result<(), SpawnError>>) {
        let mut ready = Some(ready);
        let mut failures: u32 = 0;
        let mut marked_failing = false;
        let mut phase = self.shared.phase.subscribe();
        loop {
            if *phase.borrow() != Phase::Running && self.queue.is_empty() {
                break;
            }
            let current = Arc::new(CurrentCall::default());
            let started = Instant::now();
            let (mut proc, conn) = match self.start(current.clone()).await {
                Ok(p) => p,
                Err(e) => {
                    warn!(pool = %self.cfg.name, worker = self.id, error = %e, "worker failed to start");
                    *self
                        .shared
                        .last_spawn_error
                        .lock()
                        .unwrap_or_else(|p| p.into_inner()) = Some(e.clone());
                    if !marked_failing {
                        marked_failing = true;
                        self.shared.failing.fetch_add(1, Ordering::AcqRel);
                    }
                    self.emit(None, EventKind::SpawnFailed { error: e.clone() });
                    if let Some(r) = ready.take() {
                        let _ = r.send(Err(e));
                    }
                    failures += 1;
                    if !self.backoff(failures, &mut phase).await {
                        break;
                    }
                    continue;
                }
            };
            let pid = proc.pid.as_raw() as u32;
            if marked_failing {
                marked_failing = false;
                self.shared.failing.fetch_sub(1, Ordering::AcqRel);
            }
            self.emit(
                Some(pid),
                EventKind::Ready {
                    startup: started.elapsed(),
                },
            );
            if let Some(r) = ready.take() {
                let _ = r.send(Ok(()));
            }
            self.shared.live.fetch_add(1, Ordering::AcqRel);
            let span = tracing::info_span!("worker", pool = %self.cfg.name, worker = self.id, generation = self.cfg.generation, pid);
            let (end, served) = self
                .serve(&mut proc, conn, &current, &mut phase)
                .instrument(span)
                .await;
            self.shared.live.fetch_sub(1, Ordering::AcqRel);
            let grace = match &end {
                End::Stop | End::Retire(RetireReason::MaxCalls | RetireReason::Rss) => {
                    Some(self.cfg.kill_grace)
                }
                End::Died(_) => Some(Duration::from_millis(500)),
                End::Retire(_) => None,
            };
            let status = proc.finish(grace, &self.launcher).await;
            match end {
                End::Died(mut reply) => {
                    let stderr = proc
                        .stderr_tail
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .lines();
                    warn!(pool = %self.cfg.name, worker = self.id, pid, %status, "worker died");
                    answer(
                        &mut reply,
                        Err(CallError::WorkerCrashed {
                            status,
                            stderr: stderr.clone(),
                        }),
                    );
                    self.emit(Some(pid), EventKind::Exited { status, stderr });
                    // Dying young, before serving anything, counts towards back-off.
                    if served == 0 && started.elapsed() < Duration::from_secs(1) {
                        failures += 1;
                    } else {
                        failures = 0;
                    }
                }
                End::Retire(reason) => {
                    info!(pool = %self.cfg.name, worker = self.id, pid, ?reason, %status, "worker retired");
                    self.emit(Some(pid), EventKind::Retired { reason, status });
                    failures = 0;
                }
                End::Stop => {
                    self.emit(
                        Some(pid),
                        EventKind::Retired {
                            reason: RetireReason::Shutdown,
                            status,
                        },
                    );
                    break;
                }
            }
            self.shared.restarts.fetch_add(1, Ordering::AcqRel);
            if !self.backoff(failures, &mut phase).await {
                break;
            }
        }
        if marked_failing {
            self.shared.failing.fetch_sub(1, Ordering::AcqRel);
        }
    }

    fn emit(&self, pid: Option<u32>, kind: EventKind) {
        self.shared.emit(&self.cfg, self.id, pid, kind);
    }

    /// Waits before the next start when the slot keeps failing: nothing the first time,
    /// then 100 ms doubling up to the cap. `false` when the pool stopped meanwhile.
    async fn backoff(&self, failures: u32, phase: &mut watch::Receiver<Phase>) -> bool {
        if failures < 2 {
            return true;
        }
        let delay = self
            .cfg
            .backoff_base
            .saturating_mul(1 << (failures - 2).min(16))
            .min(self.cfg.backoff_cap);
        self.emit(None, EventKind::Backoff { delay, failures });
        let until = tokio::time::Instant::now() + delay;
        loop {
            tokio::select! {
                _ = sleep_until(until) => return true,
                r = phase.changed() => if r.is_err() || *phase.borrow() != Phase::Running { return false },
            }
        }
    }

    /// Starts a worker and waits for its handshake.
    async fn start(&self, current: Arc<CurrentCall>) -> Result<(WorkerProcess, Conn), SpawnError> {
        let (pool, worker) = (self.cfg.name.clone(), self.id);
        let sink: FdLineSink = Arc::new(move |stream, line| {
            let guard = current.0.lock().unwrap_or_else(|p| p.into_inner());
            let call_id = guard.as_ref().map(|(id, _)| *id);
            let rec = LogRecord {
                call_id,
                level: if stream == "stderr" { 30 } else { 20 },
                logger: format!("fd.{stream}"),
                message: line,
                exc_text: None,
                time: now_unix(),
            };
            log_record(&rec, &pool, worker);
            if let Some((_, Some(tx))) = guard.as_ref() {
                let _ = tx.send(rec);
            }
        });
        let (mut proc, sock) = self
            .launcher
            .spawn(self.id, self.cfg.generation, sink)
            .await?;
        let mut conn = Conn {
            sock,
            buf: FrameBuffer::new(self.cfg.frame_limit),
        };
        let deadline = tokio::time::Instant::now() + self.cfg.spawn_timeout;
        let outcome = tokio::select! {
            m = conn.next() => match m {
                Ok(Some(FromWorker::Handshake { version, .. })) if version == PROTOCOL_VERSION => Ok(()),
                Ok(Some(FromWorker::Handshake { version, .. })) => Err(SpawnError::Handshake(format!(
                    "the shim speaks protocol {version}, the supervisor {PROTOCOL_VERSION}"))),
                Ok(Some(other)) => Err(SpawnError::Handshake(format!("expected HANDSHAKE, got {other:?}"))),
                Ok(None) => Err(SpawnError::Exited { status: ExitStatus::Unknown, stderr: vec![] }),
                Err(e) => Err(SpawnError::Handshake(e.to_string())),
            },
            _ = proc.exited() => Err(SpawnError::Exited { status: ExitStatus::Unknown, stderr: vec![] }),
            _ = sleep_until(deadline) => Err(SpawnError::Timeout(self.cfg.spawn_timeout)),
        };
        match outcome {
            Ok(()) => Ok((proc, conn)),
            Err(e) => {
                let status = proc
                    .finish(Some(Duration::from_millis(200)), &self.launcher)
                    .await;
                let stderr = proc
                    .stderr_tail
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .lines();
                Err(match e {
                    SpawnError::Exited { .. } => SpawnError::Exited { status, stderr },
                    e => e,
                })
            }
        }
    }

    /// Serves calls until the worker ends; returns how, and how many calls it served.
    async fn serve(
        &self,
        proc: &mut WorkerProcess,
        mut conn: Conn,
        current: &CurrentCall,
        phase: &mut watch::Receiver<Phase>,
    ) -> (End, u64) {
        let limit = self
            .cfg
            .max_calls
            .map(|n| n + fastrand::u64(0..=self.cfg.max_calls_jitter));
        let mut served = 0u64;
        let mut last_rss = Instant::now();
        loop {
            let draining = *phase.borrow() != Phase::Running;
            let job = if draining {
                match self.queue.try_recv() {
                    Ok(job) => job,
                    Err(_) => {
                        let _ = conn.send(&ToWorker::Shutdown.encode()).await;
                        return (End::Stop, served);
                    }
                }
            } else {
                tokio::select! {
                    biased;
                    m = conn.next() => match m {
                        Ok(Some(FromWorker::Log(rec))) => { self.log(&rec, None); continue }
                        Ok(Some(other)) => return (self.violation(proc, &format!("unexpected message while idle: {other:?}")), served),
                        Ok(None) => return (End::Died(None), served),
                        Err(e) => return (self.violation(proc, &e.to_string()), served),
                    },
                    _ = proc.exited() => return (End::Died(None), served),
                    _ = phase.changed() => continue,
                    j = self.queue.recv_async() => match j {
                        Ok(job) => job,
                        Err(_) => return (End::Stop, served),
                    },
                }
            };
            if job.reply.is_closed() {
                continue;
            }
            if job.deadline <= Instant::now() {
                let _ = job.reply.send(Err(CallError::Timeout(job.timeout)));
                continue;
            }
            let began = Instant::now();
            current.set(Some((job.id, job.logs.clone())));
            let span = tracing::debug_span!("call", id = job.id, callable = %job.reference);
            let end = self
                .run_call(proc, &mut conn, job, phase)
                .instrument(span)
                .await;
            current.set(None);
            if let Some(end) = end {
                return (end, served);
            }
            served += 1;
            if limit.is_some_and(|l| served >= l) {
                let _ = conn.send(&ToWorker::Shutdown.encode()).await;
                return (End::Retire(RetireReason::MaxCalls), served);
            }
            if let Some(max) = self.cfg.max_rss {
                if began.elapsed() >= Duration::from_millis(1)
                    || last_rss.elapsed() >= Duration::from_millis(10)
                {
                    last_rss = Instant::now();
                    if proc.rss().is_some_and(|rss| rss > max) {
                        let _ = conn.send(&ToWorker::Shutdown.encode()).await;
                        return (End::Retire(RetireReason::Rss), served);
                    }
                }
            }
        }
    }

    fn log(&self, rec: &LogRecord, sink: Option<&mpsc::UnboundedSender<LogRecord>>) {
        log_record(rec, &self.cfg.name, self.id);
        if let Some(tx) = sink {
            let _ = tx.send(rec.clone());
        }
    }

    fn violation(&self, proc: &WorkerProcess, detail: &str) -> End {
        warn!(pool = %self.cfg.name, worker = self.id, pid = proc.pid.as_raw(), detail, "worker broke the protocol; killing it");
        End::Retire(RetireReason::Protocol)
    }

    /// Runs one job on the worker. `None` when the worker is still good for more.
    async fn run_call(
        &self,
        proc: &mut WorkerProcess,
        conn: &mut Conn,
        job: Job,
        phase: &mut watch::Receiver<Phase>,
    ) -> Option<End> {
        let mut reply = Some(job.reply);
        if !conn.send(&job.frame).await {
            return Some(End::Died(reply));
        }
        let mut host: JoinSet<(u64, Result<snakepit_proto::Value, HostFailure>)> = JoinSet::new();
        let mut cancel_by: Option<(tokio::time::Instant, RetireReason)> = None;
        let deadline = tokio::time::Instant::from_std(job.deadline);
        let drain_at = |p: &watch::Receiver<Phase>| match *p.borrow() {
            Phase::Draining(until) => Some(tokio::time::Instant::from_std(until)),
            Phase::Running => None,
        };
        let mut drain = drain_at(phase);
        loop {
            tokio::select! {
                biased;
                m = conn.next() => match m {
                    Ok(Some(FromWorker::Result { call_id, value })) if call_id == job.id => {
                        answer(&mut reply, Ok(value));
                        return None;
                    }
                    Ok(Some(FromWorker::Exception { call_id, exception })) if call_id == job.id => {
                        answer(&mut reply, Err(call_error(exception, &job.reference)));
                        return None;
                    }
                    Ok(Some(FromWorker::Log(rec))) => self.log(&rec, job.logs.as_ref()),
                    Ok(Some(FromWorker::HostRequest { request_id, call_id, method, payload })) => {
                        if method == "echo" {
                            let frame = ToWorker::HostReply { request_id, reply: payload.decode().map_err(|e| HostFailure {
                                type_name: "DecodeError".into(), message: e.to_string() }) }.encode();
                            if !conn.send(&frame).await {
                                return Some(End::Died(reply));
                            }
                        } else {
                            let req = HostRequest {
                                pool: self.cfg.name.clone(),
                                worker: self.id,
                                call_id,
                                reference: Some(job.reference.clone()),
                                method,
                                payload,
                            };
                            let fut = self.cfg.handler.handle(req);
                            host.spawn(async move { (request_id, fut.await) });
                        }
                    }
                    Ok(Some(other)) => {
                        let detail = format!("unexpected message during call {}: {other:?}", job.id);
                        answer(&mut reply, Err(CallError::Protocol(detail.clone())));
                        return Some(self.violation(proc, &detail));
                    }
                    Ok(None) => return Some(End::Died(reply)),
                    Err(e) => {
                        answer(&mut reply, Err(CallError::Protocol(e.to_string())));
                        return Some(self.violation(proc, &e.to_string()));
                    }
                },
                Some(done) = host.join_next() => {
                    let (request_id, result) = match done {
                        Ok(r) => r,
                        Err(e) => {
                            warn!(error = %e, "host request handler failed");
                            continue;
                        }
                    };
                    if !conn.send(&ToWorker::HostReply { request_id, reply: result }.encode()).await {
                        return Some(End::Died(reply));
                    }
                }
                _ = proc.exited() => return Some(End::Died(reply)),
                _ = sleep_until(deadline), if cancel_by.is_none() => {
                    debug!(id = job.id, "call timed out; cancelling it in the worker");
                    answer(&mut reply, Err(CallError::Timeout(job.timeout)));
                    cancel_by = Some(self.cancel(proc, conn, job.id, RetireReason::Timeout).await);
                }
                _ = closed(&mut reply), if cancel_by.is_none() => {
                    debug!(id = job.id, "caller dropped the call; cancelling it in the worker");
                    cancel_by = Some(self.cancel(proc, conn, job.id, RetireReason::Cancelled).await);
                }
                _ = sleep_until(cancel_by.map_or(deadline, |c| c.0)), if cancel_by.is_some() => {
                    return Some(End::Retire(cancel_by.map_or(RetireReason::Timeout, |c| c.1)));
                }
                _ = sleep_until(drain.unwrap_or(deadline)), if drain.is_some() => {
                    answer(&mut reply, Err(CallError::ShutDown));
                    return Some(End::Retire(RetireReason::Shutdown));
                }
                r = phase.changed() => if r.is_ok() { drain = drain_at(phase) },
            }
        }
    }

    async fn cancel(
        &self,
        proc: &WorkerProcess,
        conn: &mut Conn,
        call_id: u64,
        reason: RetireReason,
    ) -> (tokio::time::Instant, RetireReason) {
        let _ = conn.send(&ToWorker::Cancel { call_id }.encode()).await;
        proc.signal(Signal::SIGUSR1);
        (tokio::time::Instant::now() + self.cfg.kill_grace, reason)
    }
}
