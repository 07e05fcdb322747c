//! The handle callers use: [`Pool`], its calls, status and shutdown.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use snakepit_proto::{encode_call, RawValue, ToWorker};
use tokio::sync::{broadcast, oneshot, watch};

use crate::call::{check_reference, Call, Map};
use crate::calllog::LogSink;
use crate::config::PoolConfig;
use crate::dispatch::{Checkout, Dispatch, Job, Waiting};
use crate::error::{BuildError, CallError, SpawnError};
use crate::event::WorkerEvent;
use crate::host::HostHandler;
use crate::launcher::{LaunchMode, Launcher};
use crate::status::{PoolStatus, WorkerState, WorkerStatus};
use crate::sync::Recover;
use crate::usage::Measured;
use crate::worker::{self, Phase, Shared, SlotInfo};

/// Tells the host handler that a call ended, when dropped.
struct CallEnded<'a> {
    handler: &'a dyn HostHandler,
    pool: &'a str,
    call_id: u64,
}

impl Drop for CallEnded<'_> {
    fn drop(&mut self) {
        self.handler.call_ended(self.pool, self.call_id);
    }
}

/// A pool of supervised Python workers. Cheap to clone; the workers stop when the last
/// clone is dropped (or at [`Pool::shutdown`]).
#[derive(Clone)]
pub struct Pool {
    inner: Arc<PoolInner>,
}

struct PoolInner {
    cfg: Arc<PoolConfig>,
    shared: Arc<Shared>,
    closed: AtomicBool,
    next_id: AtomicU64,
    slots: Mutex<Vec<oneshot::Receiver<()>>>,
    launcher: Arc<Launcher>,
    /// Set once a shutdown has stopped every worker.
    stopped: watch::Sender<bool>,
}

impl Drop for PoolInner {
    fn drop(&mut self) {
        self.shared
            .phase
            .send_replace(Phase::Draining(Instant::now()));
    }
}

impl Pool {
    pub(crate) async fn start(cfg: Arc<PoolConfig>, mode: LaunchMode) -> Result<Pool, BuildError> {
        let shared = Arc::new(Shared {
            events: broadcast::channel(1024).0,
            phase: watch::channel(Phase::Running).0,
            live: AtomicUsize::new(0),
            failing: AtomicUsize::new(0),
            restarts: AtomicU64::new(0),
            last_spawn_error: Mutex::new(None),
            dispatch: Dispatch::default(),
            slots: (0..cfg.workers).map(|_| SlotInfo::default()).collect(),
        });
        let launcher = Arc::new(Launcher::start(mode, cfg.clone()).await?);
        let mut ready_rx = Vec::new();
        let mut slots = Vec::new();
        for slot in 0..cfg.workers {
            let (ready_tx, ready) = oneshot::channel();
            let (done_tx, done) = oneshot::channel();
            worker::spawn_slot(
                worker::Slot {
                    id: slot,
                    cfg: cfg.clone(),
                    shared: shared.clone(),
                    launcher: launcher.clone(),
                },
                ready_tx,
                done_tx,
            )
            .map_err(|e| BuildError::Spawn(SpawnError::Os(format!("thread: {e}"))))?;
            ready_rx.push(ready);
            slots.push(done);
        }
        let pool = Pool {
            inner: Arc::new(PoolInner {
                cfg,
                shared,
                closed: AtomicBool::new(false),
                next_id: AtomicU64::new(1),
                slots: Mutex::new(slots),
                launcher,
                stopped: watch::channel(false).0,
            }),
        };
        // Every slot reports its first start; the pool is usable if one worker is.
        let mut first_error = None;
        let mut any = false;
        for r in ready_rx {
            match r.await {
                Ok(Ok(())) => any = true,
                Ok(Err(e)) => first_error = first_error.or(Some(e)),
                Err(_) => {}
            }
        }
        match (any, first_error) {
            (false, Some(e)) => Err(BuildError::Spawn(e)),
            (false, None) => Err(BuildError::Spawn(SpawnError::Os(
                "no worker started".into(),
            ))),
            _ => Ok(pool),
        }
    }

    /// Calls `reference` with `kwargs` and `context` (merged as keyword arguments).
    pub async fn call(
        &self,
        reference: &str,
        kwargs: Map,
        context: Map,
    ) -> Result<RawValue, CallError> {
        self.submit(Call::new(reference).kwargs(kwargs).context(context))
            .await
    }

    /// Makes a call. Dropping the returned future cancels the call in its worker.
    pub async fn submit(&self, call: Call) -> Result<RawValue, CallError> {
        self.submit_ref(&call).await
    }

    /// [`Pool::submit`] of a call the caller keeps: one it may make again elsewhere
    /// (after `ShutDown`) without copying its kwargs.
    pub async fn submit_ref(&self, call: &Call) -> Result<RawValue, CallError> {
        self.submit_call(call, false).await.result
    }

    /// [`Pool::submit_ref`], with what the call cost: its CPU time, the worker's peak
    /// resident size, its host requests and its wall time (see [`CallUsage`](crate::CallUsage)).
    ///
    /// Only a measured call costs the worker its CPU readings (a syscall or two, a few
    /// microseconds): a call made with `submit_ref` costs nothing for accounting.
    pub async fn submit_measured(&self, call: &Call) -> Measured {
        self.submit_call(call, true).await
    }

    async fn submit_call(&self, call: &Call, measure: bool) -> Measured {
        let inner = &self.inner;
        if let Err(e) = check_reference(&call.reference) {
            return Measured::unmeasured(Err(e));
        }
        let id = inner.next_id.fetch_add(1, Ordering::Relaxed);
        let frame = encode_call(id, &call.reference, &call.kwargs, &call.context, measure);
        // However the call ends (answer, timeout, crash, or the caller dropping it), the
        // handler hears of it: it rolls back what the call left open.
        let _ended = CallEnded {
            handler: &*self.inner.cfg.handler,
            pool: &self.inner.cfg.name,
            call_id: id,
        };
        self.enqueue(
            id,
            call.reference.clone(),
            frame,
            call.timeout,
            call.logs.clone(),
            call.run_id.clone(),
        )
        .await
    }

    /// Checks, in a worker, that `reference` imports and accepts `kwargs` (names and
    /// simple annotations) with a context that has `context_keys`, without calling it.
    pub async fn validate(
        &self,
        reference: &str,
        kwargs: Map,
        context_keys: Vec<String>,
    ) -> Result<(), CallError> {
        check_reference(reference)?;
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let frame = ToWorker::Validate {
            call_id: id,
            reference: reference.to_owned(),
            kwargs,
            context_keys,
        }
        .encode();
        self.enqueue(id, reference.to_owned(), frame, None, None, None)
            .await
            .result
            .map(drop)
    }

    async fn enqueue(
        &self,
        id: u64,
        reference: String,
        frame: Vec<u8>,
        timeout: Option<Duration>,
        logs: Option<LogSink>,
        run_id: Option<Arc<str>>,
    ) -> Measured {
        let unmeasured = Measured::unmeasured;
        let inner = &self.inner;
        if inner.closed.load(Ordering::Acquire) {
            return unmeasured(Err(CallError::ShutDown));
        }
        if frame.len() - 4 > inner.cfg.frame_limit {
            return unmeasured(Err(CallError::Unserializable(format!(
                "the call's arguments take {} bytes, over the frame limit of {}",
                frame.len() - 4,
                inner.cfg.frame_limit
            ))));
        }
        if inner.shared.live.load(Ordering::Acquire) == 0
            && inner.shared.failing.load(Ordering::Acquire) == inner.cfg.workers
        {
            let e = inner.shared.last_spawn_error.lock().recover().clone();
            if let Some(e) = e {
                return unmeasured(Err(CallError::Unavailable(e)));
            }
        }
        let timeout = timeout.unwrap_or(inner.cfg.call_timeout);
        let deadline = Instant::now() + timeout;
        let job = Job {
            id,
            reference: reference.into(),
            frame,
            deadline,
            timeout,
            logs,
            run_id,
        };
        let dispatch = &inner.shared.dispatch;
        let lease = match dispatch.checkout(inner.cfg.queue_limit) {
            Checkout::Ready(lease) => lease,
            Checkout::Full => return unmeasured(Err(CallError::Overloaded(inner.cfg.queue_limit))),
            Checkout::Closed => return unmeasured(Err(CallError::ShutDown)),
            // Waiting for a worker counts against the call's timeout.
            Checkout::Wait(rx) => {
                let mut waiting = Waiting::new(rx, dispatch);
                match tokio::time::timeout_at(deadline.into(), waiting.lease()).await {
                    Ok(Some(lease)) => lease,
                    Ok(None) => return unmeasured(Err(CallError::ShutDown)),
                    Err(_) => return unmeasured(Err(CallError::Timeout(timeout))),
                }
            }
        };
        crate::dispatch::call_on(&inner.cfg, dispatch, lease, &job).await
    }

    /// Subscribes to worker lifecycle events (from now on).
    pub fn events(&self) -> broadcast::Receiver<WorkerEvent> {
        self.inner.shared.events.subscribe()
    }

    /// The CPU worker slot `slot` is pinned to (`PoolBuilder::pin_workers`): a caller
    /// thread pinned there talks to that worker without crossing CPUs.
    pub fn worker_cpu(&self, slot: usize) -> Option<usize> {
        self.inner.cfg.cpu_of(slot)
    }

    /// The pool's health right now, with each worker's state, pid, calls, resident size
    /// (read from `/proc`), uptime and restarts.
    pub fn status(&self) -> PoolStatus {
        let i = &self.inner;
        let (idle, served) = i.shared.dispatch.snapshot();
        let slots = i
            .shared
            .slots
            .iter()
            .enumerate()
            .map(|(slot, info)| {
                let life = *info.0.lock().recover();
                let state = match life.live {
                    Some(_) if idle.contains(&slot) => WorkerState::Idle,
                    Some(_) => WorkerState::Busy,
                    None if life.stopped => WorkerState::Stopped,
                    None if life.backoff => WorkerState::Backoff,
                    None => WorkerState::Starting,
                };
                let pid = life.live.map(|(pid, _)| pid);
                WorkerStatus {
                    slot,
                    state,
                    pid,
                    calls: if pid.is_some() {
                        served.get(slot).copied().unwrap_or(0)
                    } else {
                        0
                    },
                    rss: pid
                        .and_then(|p| crate::process::rss(nix::unistd::Pid::from_raw(p as i32))),
                    uptime: life.live.map(|(_, since)| since.elapsed()),
                    restarts: life.restarts,
                }
            })
            .collect();
        PoolStatus {
            name: i.cfg.name.to_string(),
            generation: i.cfg.generation,
            workers: i.cfg.workers,
            live: i.shared.live.load(Ordering::Acquire),
            failing: i.shared.failing.load(Ordering::Acquire),
            restarts: i.shared.restarts.load(Ordering::Acquire),
            queued: i.shared.dispatch.waiting(),
            slots,
            isolation: i.cfg.confine.report.clone(),
        }
    }

    /// The real interpreter the workers run.
    pub fn python(&self) -> &std::path::Path {
        &self.inner.cfg.python
    }

    /// Stops taking calls, lets the queued and running ones finish for up to `deadline`,
    /// then stops the workers (SHUTDOWN, then SIGTERM, then SIGKILL of their process
    /// groups after the kill grace). Calls still unfinished then fail with `ShutDown`.
    ///
    /// Called again while a shutdown is under way, it brings the deadline forward (never
    /// back) and returns when the workers are stopped.
    pub async fn shutdown(&self, deadline: Duration) {
        let inner = &self.inner;
        inner.closed.store(true, Ordering::Release);
        let until = Instant::now() + deadline;
        inner.shared.phase.send_if_modified(|phase| {
            let sooner = !matches!(*phase, Phase::Draining(t) if t <= until);
            if sooner {
                *phase = Phase::Draining(until);
            }
            sooner
        });
        inner.shared.dispatch.drain();
        let slots = std::mem::take(&mut *inner.slots.lock().recover());
        if slots.is_empty() {
            // Another shutdown is stopping the workers: wait for it.
            let _ = inner.stopped.subscribe().wait_for(|stopped| *stopped).await;
            return;
        }
        for done in slots {
            let _ = done.await;
        }
        inner.shared.dispatch.fail_waiters();
        inner.launcher.close();
        inner.cfg.confine.release().await;
        inner.stopped.send_replace(true);
    }
}
