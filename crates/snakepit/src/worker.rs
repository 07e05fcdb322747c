//! A worker slot: one OS thread with its own single-threaded tokio runtime, owning one
//! worker process at a time for the life of the pool.
//!
//! The slot starts the worker, waits for its handshake and lends it to the pool
//! ([`crate::dispatch`]): callers then talk to the worker themselves. The slot watches
//! the process (its pidfd) and takes the worker back when a caller hands it back: to
//! cancel a call and wait out the grace period, to reap a dead worker and report its exit
//! status and stderr, or to retire it. Then it starts the next one, backing off when
//! workers keep dying young.
//!
//! ```text
//!  spawn ─▶ handshake ─▶ lent (idle ⇄ in a caller's call) ─▶ handed back ─▶ finish ─▶ spawn
//!                           │ cancel: CANCEL + SIGUSR1, answer within grace ─▶ lent again
//!                           └ exit seen on the pidfd while idle ─▶ finish
//! ```
//!
//! Why a thread per slot: the thread that forks a worker must live as long as the
//! worker (the parent-death signal follows the forking thread), and a slot's blocking
//! moments (spawning, reaping) never stall a caller or another slot.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use snakepit_proto::{
    FrameBuffer, FromWorker, HostFailure, LogRecord, RawValue, ToWorker, PROTOCOL_VERSION,
};
use std::io::Write;
use std::os::unix::net::UnixStream as StdUnixStream;

use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::time::sleep_until;
use tracing::{debug, info, warn, Instrument};

use crate::calllog::{now_unix, CurrentCall};
use crate::config::PoolConfig;
use crate::dispatch::{Dispatch, Handback, Lease, Reply, Wire, WireError};
use crate::error::{CallError, ExitStatus, SpawnError};
use crate::event::{EventKind, RetireReason, WorkerEvent};
use crate::launcher::Launcher;
use crate::process::{FdLineSink, WorkerProcess};
use crate::sync::Recover;

/// Where the pool is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Running,
    /// Finish the queue and the calls in hand until this instant, then stop.
    Draining(Instant),
}

/// State shared by the pool handle and its worker slots.
pub(crate) struct Shared {
    pub events: broadcast::Sender<WorkerEvent>,
    pub phase: watch::Sender<Phase>,
    pub live: AtomicUsize,
    pub failing: AtomicUsize,
    pub restarts: AtomicU64,
    pub last_spawn_error: Mutex<Option<SpawnError>>,
    pub dispatch: Dispatch,
    /// What each slot is doing, for [`Pool::status`](crate::Pool::status).
    pub slots: Vec<SlotInfo>,
}

/// A slot's life as its thread last told it (for [`Pool::status`](crate::Pool::status);
/// off the call path).
#[derive(Default)]
pub(crate) struct SlotInfo(pub(crate) Mutex<SlotLife>);

#[derive(Default, Clone, Copy)]
pub(crate) struct SlotLife {
    /// The live worker's pid and when it became ready.
    pub live: Option<(u32, Instant)>,
    pub backoff: bool,
    pub stopped: bool,
    pub restarts: u64,
}

impl SlotInfo {
    fn update(&self, f: impl FnOnce(&mut SlotLife)) {
        f(&mut self.0.lock().recover());
    }
    /// A worker is starting (or the slot backs off first, when `backoff`).
    pub(crate) fn starting(&self, backoff: bool) {
        self.update(|l| {
            l.live = None;
            l.backoff = backoff;
        });
    }
    /// Worker `pid` said hello.
    pub(crate) fn ready(&self, pid: u32) {
        self.update(|l| {
            l.live = Some((pid, Instant::now()));
            l.backoff = false;
        });
    }
    /// The worker is gone and will be replaced.
    pub(crate) fn replaced(&self) {
        self.update(|l| {
            l.live = None;
            l.restarts += 1;
        });
    }
    /// The slot's thread ended.
    pub(crate) fn stopped(&self) {
        self.update(|l| {
            l.live = None;
            l.stopped = true;
        });
    }
}

impl Shared {
    pub(crate) fn emit(&self, cfg: &PoolConfig, worker: usize, pid: Option<u32>, kind: EventKind) {
        let _ = self.events.send(WorkerEvent {
            pool: cfg.name.clone(),
            worker,
            generation: cfg.generation,
            pid,
            kind,
        });
    }
}

/// One worker slot of a pool.
pub(crate) struct Slot {
    pub id: usize,
    pub cfg: Arc<PoolConfig>,
    pub shared: Arc<Shared>,
    pub launcher: Arc<Launcher>,
}

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

/// Pins process `pid` (its threads to come included) to `cpu`; false if refused.
fn pin(pid: nix::unistd::Pid, cpu: usize) -> bool {
    use nix::sched::{sched_setaffinity, CpuSet};
    let mut set = CpuSet::new();
    let pinned = set
        .set(cpu)
        .and_then(|()| sched_setaffinity(pid, &set))
        .map_err(|e| tracing::debug!(pid = pid.as_raw(), cpu, error = %e, "cannot pin the worker"));
    pinned.is_ok()
}

fn answer(reply: &mut Option<Reply>, result: Result<RawValue, CallError>) {
    if let Some(r) = reply.take() {
        let _ = r.send(result);
    }
}

impl Slot {
    async fn run(self, ready: oneshot::Sender<Result<(), SpawnError>>) {
        let mut ready = Some(ready);
        let mut failures: u32 = 0;
        let mut marked_failing = false;
        let mut phase = self.shared.phase.subscribe();
        let (back_tx, mut back_rx) = mpsc::unbounded_channel();
        loop {
            if *phase.borrow() != Phase::Running {
                break;
            }
            self.shared.slots[self.id].starting(false);
            let current = Arc::new(CurrentCall::default());
            let started = Instant::now();
            let (mut proc, sock, buf) = match self.start(current.clone()).await {
                Ok(p) => p,
                Err(e) => {
                    warn!(pool = %self.cfg.name, worker = self.id, error = %e, "worker failed to start");
                    *self.shared.last_spawn_error.lock().recover() = Some(e.clone());
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
            self.shared.slots[self.id].ready(pid);
            let span = tracing::info_span!("worker", pool = %self.cfg.name, worker = self.id, generation = self.cfg.generation, pid);
            let cpu = self.cfg.cpu_of(self.id).filter(|&c| pin(proc.pid, c));
            let lease = Lease {
                reg: None,
                slot: self.id,
                cpu,
                pid: proc.pid,
                sock,
                buf,
                served: 0,
                limit: self
                    .cfg
                    .max_calls
                    .map(|n| n + fastrand::u64(0..=self.cfg.max_calls_jitter)),
                last_rss: Instant::now(),
                current: current.clone(),
                back: back_tx.clone(),
            };
            let (end, served) = self
                .watch(&mut proc, lease, &mut back_rx, &mut phase)
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
            self.cfg.confine.worker_ending(self.id);
            let status = proc
                .finish(grace, self.launcher.exit_status(proc.pid))
                .await;
            match end {
                End::Died(mut reply) => {
                    let stderr = proc.stderr_tail.lock().recover().lines();
                    let stopping = *phase.borrow() != Phase::Running;
                    let reason = self.cfg.confine.death_reason(self.id);
                    if !stopping {
                        warn!(pool = %self.cfg.name, worker = self.id, pid, %status, reason = reason.as_deref().unwrap_or("-"), "worker died");
                    }
                    answer(
                        &mut reply,
                        Err(if stopping {
                            CallError::ShutDown
                        } else {
                            CallError::WorkerCrashed {
                                status,
                                reason,
                                stderr: stderr.clone(),
                            }
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
            self.shared.slots[self.id].replaced();
            if !self.backoff(failures, &mut phase).await {
                break;
            }
        }
        if marked_failing {
            self.shared.failing.fetch_sub(1, Ordering::AcqRel);
        }
        self.shared.slots[self.id].stopped();
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
        self.shared.slots[self.id].starting(true);
        let until = tokio::time::Instant::now() + delay;
        loop {
            tokio::select! {
                _ = sleep_until(until) => return true,
                r = phase.changed() => if r.is_err() || *phase.borrow() != Phase::Running { return false },
            }
        }
    }

    /// Starts a worker and waits for its handshake.
    async fn start(
        &self,
        current: Arc<CurrentCall>,
    ) -> Result<(WorkerProcess, StdUnixStream, FrameBuffer), SpawnError> {
        let (pool, worker) = (self.cfg.name.clone(), self.id);
        let sink: FdLineSink = Arc::new(move |stream, line| {
            let rec = LogRecord {
                call_id: None,
                level: if stream == "stderr" { 30 } else { 20 },
                logger: format!("fd.{stream}"),
                message: line,
                exc_text: None,
                time: now_unix(),
            };
            current.forward(rec, &pool, worker);
        });
        self.cfg.confine.worker_starting(self.id);
        let (mut proc, sock) = self.launcher.spawn(self.id, sink).await?;
        let mut buf = FrameBuffer::new(self.cfg.frame_limit);
        let mut reg = None;
        let deadline = tokio::time::Instant::now() + self.cfg.spawn_timeout;
        let outcome = match Wire::open(&mut reg, &sock, &mut buf) {
            Err(e) => Err(SpawnError::Os(format!(
                "registering the worker's socket: {e}"
            ))),
            Ok(mut wire) => tokio::select! {
                m = wire.next() => match m {
                    Ok(FromWorker::Handshake { version, .. }) if version == PROTOCOL_VERSION => Ok(()),
                    Ok(FromWorker::Handshake { version, .. }) => Err(SpawnError::Handshake(format!(
                        "the shim speaks protocol {version}, the supervisor {PROTOCOL_VERSION}"))),
                    Ok(other) => Err(SpawnError::Handshake(format!("expected HANDSHAKE, got {other:?}"))),
                    Err(WireError::Closed) => Err(SpawnError::Exited { status: ExitStatus::Unknown, stderr: vec![] }),
                    Err(WireError::Violation(d)) => Err(SpawnError::Handshake(d)),
                },
                _ = proc.exited() => Err(SpawnError::Exited { status: ExitStatus::Unknown, stderr: vec![] }),
                _ = sleep_until(deadline) => Err(SpawnError::Timeout(self.cfg.spawn_timeout)),
            },
        };
        match outcome {
            Ok(()) => Ok((proc, sock, buf)),
            Err(e) => {
                let status = proc
                    .finish(
                        Some(Duration::from_millis(200)),
                        self.launcher.exit_status(proc.pid),
                    )
                    .await;
                let stderr = proc.stderr_tail.lock().recover().lines();
                Err(match e {
                    SpawnError::Exited { .. } => SpawnError::Exited { status, stderr },
                    e => e,
                })
            }
        }
    }

    /// Lends the worker to the pool and watches it until it comes back for good.
    /// Returns how its life ended and how many calls it served.
    async fn watch(
        &self,
        proc: &mut WorkerProcess,
        lease: Lease,
        back: &mut mpsc::UnboundedReceiver<Handback>,
        phase: &mut watch::Receiver<Phase>,
    ) -> (End, u64) {
        let dispatch = &self.shared.dispatch;
        dispatch.checkin(lease);
        let mut exited = false;
        let mut killed = false;
        loop {
            let drain_at = match *phase.borrow() {
                Phase::Draining(until) => Some(tokio::time::Instant::from_std(until)),
                Phase::Running => None,
            };
            tokio::select! {
                biased;
                h = back.recv() => match h {
                    Some(Handback::Died { lease, reply }) => return (End::Died(reply), lease.served),
                    Some(Handback::Retire { lease, reason }) => {
                        if matches!(reason, RetireReason::MaxCalls | RetireReason::Rss | RetireReason::Shutdown) {
                            let _ = (&lease.sock).write(&ToWorker::Shutdown.encode());
                        }
                        let end = if reason == RetireReason::Shutdown { End::Stop } else { End::Retire(reason) };
                        return (end, lease.served);
                    }
                    Some(Handback::Cancel { lease, call_id, reason }) => {
                        let served = lease.served;
                        match self.cancel(proc, lease, call_id, reason).await {
                            Ok(lease) => dispatch.checkin(lease),
                            Err(end) => return (end, served),
                        }
                    }
                    // Unreachable: this slot holds a sender.
                    None => return (End::Stop, 0),
                },
                _ = proc.exited(), if !exited => {
                    exited = true;
                    if let Some(lease) = dispatch.take_idle(self.id) {
                        return (End::Died(None), lease.served);
                    }
                    // A caller has it: its read sees the EOF and hands it back.
                }
                _ = sleep_until(drain_at.unwrap_or_else(tokio::time::Instant::now)), if drain_at.is_some() && !killed => {
                    // The shutdown deadline passed with a call still running.
                    killed = true;
                    proc.kill_group();
                }
                r = phase.changed() => {
                    if r.is_err() {
                        return (End::Stop, 0);
                    }
                }
            }
        }
    }

    /// Cancels `call_id` in the worker and waits for its answer up to the grace period.
    /// The worker comes back ready for more, or the slot's verdict on it.
    async fn cancel(
        &self,
        proc: &mut WorkerProcess,
        mut lease: Lease,
        call_id: u64,
        reason: RetireReason,
    ) -> Result<Lease, End> {
        let Ok(mut wire) = Wire::open(&mut lease.reg, &lease.sock, &mut lease.buf) else {
            return Err(End::Retire(reason));
        };
        if wire
            .send(&ToWorker::Cancel { call_id }.encode())
            .await
            .is_err()
        {
            return Err(End::Died(None));
        }
        proc.signal(Signal::SIGUSR1);
        let grace = tokio::time::Instant::now() + self.cfg.kill_grace;
        loop {
            let msg = tokio::select! {
                biased;
                m = wire.next() => m,
                _ = proc.exited() => return Err(End::Died(None)),
                _ = sleep_until(grace) => {
                    debug!(call_id, "the worker did not stop within the grace period; killing it");
                    return Err(End::Retire(reason));
                }
            };
            match msg {
                // The caller is gone, or was answered at its deadline: the answer only
                // says that the worker is free again.
                Ok(
                    FromWorker::Result { call_id: id, .. }
                    | FromWorker::Exception { call_id: id, .. },
                ) if id == call_id => break,
                // Nobody waits for what the cancelled call cost.
                Ok(FromWorker::Usage { .. }) => {}
                Ok(FromWorker::Log(rec)) => lease.current.forward(rec, &self.cfg.name, self.id),
                Ok(FromWorker::HostRequest { request_id, .. }) => {
                    let refusal = ToWorker::HostReply {
                        request_id,
                        reply: Err(HostFailure {
                            type_name: "CallCancelled".into(),
                            message: "the call is being cancelled".into(),
                        }),
                    };
                    if wire.send(&refusal.encode()).await.is_err() {
                        return Err(End::Died(None));
                    }
                }
                Ok(other) => {
                    warn!(pool = %self.cfg.name, worker = self.id, "unexpected message while cancelling: {other:?}");
                    return Err(End::Retire(RetireReason::Protocol));
                }
                Err(WireError::Closed) => return Err(End::Died(None)),
                Err(WireError::Violation(d)) => {
                    warn!(pool = %self.cfg.name, worker = self.id, detail = d, "worker broke the protocol while cancelling");
                    return Err(End::Retire(RetireReason::Protocol));
                }
            }
        }
        Ok(lease)
    }
}
