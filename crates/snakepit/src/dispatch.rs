//! The call path: a caller leases an idle worker and talks to it itself.
//!
//! The cost of a call is wakeups, not work. So on the common path no other thread takes
//! part: the caller's task checks a ready worker out of the pool (a [`Lease`]), writes
//! the CALL frame to the worker's socket with one `send`, waits for the socket on its own
//! runtime's reactor, reads the answer and checks the worker back in: one wakeup per call,
//! like a blocking ping-pong. Logs and host requests are served on the way.
//!
//! Everything else is handed back to the worker's slot thread ([`Handback`]), which owns
//! the process: a timed-out or dropped call (the slot sends CANCEL and waits out the
//! grace period), a worker that died (the slot reaps it and answers the caller with the
//! exit status and stderr), a worker to retire (max calls, RSS, protocol violation).
//! A caller that finds no idle worker waits in a bounded FIFO; a worker checked in is
//! handed straight to the first waiter still waiting.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BufMut;
use futures_util::stream::{FuturesUnordered, StreamExt};
use nix::unistd::Pid;
use snakepit_proto::{
    FrameBuffer, FromWorker, HostFailure, RawValue, ToWorker, Value, WorkerUsage,
};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use crate::calllog::{CallLog, CurrentCall, LogSink};
use crate::config::PoolConfig;
use crate::error::{call_error, CallError};
use crate::event::RetireReason;
use crate::host::HostRequest;
use crate::sync::Recover;
use crate::usage::{CallUsage, Measured};

pub(crate) type Reply = oneshot::Sender<Result<RawValue, CallError>>;

/// One call on its way to a worker.
pub(crate) struct Job {
    pub id: u64,
    pub reference: Arc<str>,
    /// The encoded CALL (or VALIDATE) frame.
    pub frame: Vec<u8>,
    pub deadline: Instant,
    pub timeout: Duration,
    pub logs: Option<LogSink>,
    pub run_id: Option<Arc<str>>,
}

/// A ready worker, checked out of the pool for one call.
pub(crate) struct Lease {
    /// Declared before `sock`: dropped, so deregistered, before the socket closes.
    pub reg: Option<Registration>,
    pub slot: usize,
    /// The CPU the worker is pinned to (`PoolBuilder::pin_workers`).
    pub cpu: Option<usize>,
    pub pid: Pid,
    pub sock: StdUnixStream,
    pub buf: FrameBuffer,
    pub served: u64,
    /// Retire after this many calls.
    pub limit: Option<u64>,
    pub last_rss: Instant,
    pub current: Arc<CurrentCall>,
    pub back: mpsc::UnboundedSender<Handback>,
}

/// A worker going back to its slot thread, with what the slot must do.
pub(crate) enum Handback {
    /// Cancel `call_id` in the worker (CANCEL + SIGUSR1), wait for its answer up to the
    /// grace period, then return it to the pool or kill it. Nobody waits for the answer:
    /// the caller was answered at its deadline, or dropped the call.
    Cancel {
        lease: Lease,
        call_id: u64,
        reason: RetireReason,
    },
    /// The worker's socket closed or failed: reap it and answer `reply` with the crash.
    Died { lease: Lease, reply: Option<Reply> },
    /// Retire the worker.
    Retire { lease: Lease, reason: RetireReason },
}

impl Lease {
    fn hand_back(self, h: impl FnOnce(Lease) -> Handback) {
        let back = self.back.clone();
        // The slot only goes away after its worker: a failed send means the pool is gone.
        let _ = back.send(h(self));
    }

    /// Hands the worker back to have `call_id` cancelled (nobody waits for the answer).
    fn cancel(self, call_id: u64, reason: RetireReason) {
        self.hand_back(|lease| Handback::Cancel {
            lease,
            call_id,
            reason,
        });
    }
}

#[derive(Default)]
struct State {
    idle: Vec<Lease>,
    waiters: VecDeque<oneshot::Sender<Lease>>,
    draining: bool,
    /// Calls each slot's worker had finished when it was last checked in.
    served: Vec<u64>,
}

/// The pool's idle workers and the callers waiting for one.
#[derive(Default)]
pub(crate) struct Dispatch {
    state: Mutex<State>,
}

/// What `checkout` found.
pub(crate) enum Checkout {
    Ready(Lease),
    Wait(oneshot::Receiver<Lease>),
    Full,
    Closed,
}

impl Dispatch {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().recover()
    }

    /// An idle worker, or a place in the queue (at most `queue_limit` waiting).
    pub(crate) fn checkout(&self, queue_limit: usize) -> Checkout {
        let mut st = self.lock();
        if st.draining {
            return Checkout::Closed;
        }
        if let Some(lease) = take_nearest(&mut st.idle) {
            return Checkout::Ready(lease);
        }
        if st.waiters.len() >= queue_limit {
            st.waiters.retain(|w| !w.is_closed());
            if st.waiters.len() >= queue_limit {
                return Checkout::Full;
            }
        }
        let (tx, rx) = oneshot::channel();
        st.waiters.push_back(tx);
        Checkout::Wait(rx)
    }

    /// Returns a worker: to the first caller still waiting, else to the idle list. While
    /// the pool drains, the worker goes back to its slot to be stopped.
    pub(crate) fn checkin(&self, mut lease: Lease) {
        let mut st = self.lock();
        if st.served.len() <= lease.slot {
            st.served.resize(lease.slot + 1, 0);
        }
        st.served[lease.slot] = lease.served;
        while let Some(w) = st.waiters.pop_front() {
            match w.send(lease) {
                Ok(()) => return,
                Err(l) => lease = l,
            }
        }
        if st.draining {
            drop(st);
            lease.hand_back(|lease| Handback::Retire {
                lease,
                reason: RetireReason::Shutdown,
            });
            return;
        }
        st.idle.push(lease);
    }

    /// Takes slot `slot`'s worker out of the idle list, if it is there.
    pub(crate) fn take_idle(&self, slot: usize) -> Option<Lease> {
        let mut st = self.lock();
        let i = st.idle.iter().position(|l| l.slot == slot)?;
        Some(st.idle.swap_remove(i))
    }

    /// Stops lending workers to new calls: idle ones go back to their slots to stop; the
    /// calls already waiting still get the workers that finish their calls.
    pub(crate) fn drain(&self) {
        let idle = {
            let mut st = self.lock();
            st.draining = true;
            std::mem::take(&mut st.idle)
        };
        for lease in idle {
            lease.hand_back(|lease| Handback::Retire {
                lease,
                reason: RetireReason::Shutdown,
            });
        }
    }

    /// Fails the calls still waiting (their workers are gone).
    pub(crate) fn fail_waiters(&self) {
        let waiters = std::mem::take(&mut self.lock().waiters);
        drop(waiters);
    }

    pub(crate) fn waiting(&self) -> usize {
        self.lock().waiters.len()
    }

    /// The slots whose worker is idle, and the calls each slot's worker had finished
    /// when it was last checked in.
    pub(crate) fn snapshot(&self) -> (Vec<usize>, Vec<u64>) {
        let st = self.lock();
        (st.idle.iter().map(|l| l.slot).collect(), st.served.clone())
    }
}

/// An idle worker: the one pinned to the CPU the caller runs on if there is one, else
/// the one checked in last.
fn take_nearest(idle: &mut Vec<Lease>) -> Option<Lease> {
    if idle.len() > 1 && idle[0].cpu.is_some() {
        // SAFETY: sched_getcpu has no preconditions (vDSO, ≈ 20 ns).
        let here = unsafe { libc::sched_getcpu() };
        if let Some(i) = idle.iter().rposition(|l| l.cpu == Some(here as usize)) {
            return Some(idle.swap_remove(i));
        }
    }
    idle.pop()
}

/// A caller's place in the queue. Dropping it (a timeout, or the caller's future dropped)
/// must not lose a worker that was handed over at that very moment: it is checked back in.
pub(crate) struct Waiting<'a> {
    rx: oneshot::Receiver<Lease>,
    dispatch: &'a Dispatch,
}

impl<'a> Waiting<'a> {
    pub(crate) fn new(rx: oneshot::Receiver<Lease>, dispatch: &'a Dispatch) -> Self {
        Waiting { rx, dispatch }
    }

    /// The worker, once one is checked in for this caller; `None` if the pool stopped.
    pub(crate) async fn lease(&mut self) -> Option<Lease> {
        (&mut self.rx).await.ok()
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.rx.close();
        if let Ok(lease) = self.rx.try_recv() {
            self.dispatch.checkin(lease);
        }
    }
}

/// A lease in a caller's hands; dropping it mid-call cancels the call in the worker.
struct Held {
    lease: Option<Lease>,
    call_id: u64,
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(lease) = self.lease.take() {
            lease.cancel(self.call_id, RetireReason::Cancelled);
        }
    }
}

/// How an exchange with a worker ended.
enum Exchange {
    Done(Result<RawValue, CallError>, Tally),
    Died,
    Violation(String),
}

/// What an exchange counted of the call's cost.
#[derive(Default)]
struct Tally {
    worker: Option<WorkerUsage>,
    host_requests: u32,
    host_time: Duration,
}

impl Tally {
    fn host_request(&mut self, since: Instant) {
        self.host_requests = self.host_requests.saturating_add(1);
        self.host_time += since.elapsed();
    }
}

/// The raw fd of a lease's socket, for registering it with the caller's reactor.
struct Fd(RawFd);

impl AsRawFd for Fd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

fn send(fd: RawFd, data: &[u8]) -> io::Result<usize> {
    // SAFETY: data is a valid slice; MSG_NOSIGNAL turns a dead peer into EPIPE, not SIGPIPE.
    let n = unsafe { libc::send(fd, data.as_ptr().cast(), data.len(), libc::MSG_NOSIGNAL) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Makes room for a read in the frame buffer; the bytes a read may bring.
fn read_space(buf: &mut FrameBuffer) -> usize {
    let space = buf.read_space();
    if space.capacity() - space.len() < 4096 {
        space.reserve(64 * 1024);
    }
    space.capacity() - space.len()
}

/// Reads what the socket has into the frame buffer's spare capacity (no zeroing).
pub(crate) fn recv_into(fd: RawFd, buf: &mut FrameBuffer) -> io::Result<usize> {
    read_space(buf);
    let space = buf.read_space();
    let chunk = space.chunk_mut();
    // SAFETY: recv writes at most chunk.len() bytes into the chunk; we then advance by
    // exactly the number of bytes it wrote.
    let n = unsafe { libc::recv(fd, chunk.as_mut_ptr().cast(), chunk.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel initialised n bytes.
    unsafe { space.advance_mut(n as usize) };
    Ok(n as usize)
}

/// A host request in a handler's hands: its id, payload size and arrival, then its
/// answer.
type HostDone = std::pin::Pin<
    Box<dyn std::future::Future<Output = (u64, usize, Instant, Result<Value, HostFailure>)> + Send>,
>;

/// Runs one call on a leased worker, from the caller's task.
pub(crate) async fn call_on(
    cfg: &Arc<PoolConfig>,
    dispatch: &Dispatch,
    lease: Lease,
    job: &Job,
) -> Measured {
    let began = Instant::now();
    let log = Arc::new(CallLog::new(
        job.id,
        job.logs.clone(),
        cfg.name.clone(),
        lease.slot,
    ));
    lease.current.set(Some(log.clone()));
    let mut held = Held {
        lease: Some(lease),
        call_id: job.id,
    };
    let outcome = {
        let lease = held.lease.as_mut().expect("held until the exchange ends");
        let span = tracing::debug_span!("call", pool = %cfg.name, worker = lease.slot, id = job.id, callable = %job.reference);
        // The CPU watchdog of `[isolation] cpu_seconds` (two atomic stores a call).
        let _watched = cfg.confine.watch_call(lease.slot, job.id, lease.pid);
        tokio::time::timeout_at(job.deadline.into(), exchange(cfg, lease, job, &log))
            .instrument(span)
            .await
    };
    log.finish();
    // `current` keeps naming this call until the next one: fd-level output is read by the
    // slot's thread and may arrive a moment after the call's answer.
    let mut lease = held.lease.take().expect("the exchange returned it");
    match outcome {
        Ok(Exchange::Done(result, tally)) => {
            let usage = CallUsage::new(
                began.elapsed(),
                tally.worker,
                tally.host_requests,
                tally.host_time,
            );
            lease.served += 1;
            if let Some(reason) = retire_reason(cfg, &mut lease, began) {
                lease.hand_back(|lease| Handback::Retire { lease, reason });
            } else {
                dispatch.checkin(lease);
            }
            Measured {
                result,
                usage: Some(usage),
            }
        }
        Ok(Exchange::Violation(detail)) => {
            tracing::warn!(pool = %cfg.name, worker = lease.slot, pid = lease.pid.as_raw(), detail, "worker broke the protocol; killing it");
            lease.hand_back(|lease| Handback::Retire {
                lease,
                reason: RetireReason::Protocol,
            });
            Measured::unmeasured(Err(CallError::Protocol(detail)))
        }
        Ok(Exchange::Died) => {
            let (tx, rx) = oneshot::channel();
            lease.hand_back(|lease| Handback::Died {
                lease,
                reply: Some(tx),
            });
            Measured::unmeasured(rx.await.unwrap_or(Err(CallError::ShutDown)))
        }
        Err(_elapsed) => {
            tracing::debug!(id = job.id, "call timed out; cancelling it in the worker");
            lease.cancel(job.id, RetireReason::Timeout);
            Measured::unmeasured(Err(CallError::Timeout(job.timeout)))
        }
    }
}

/// Whether a worker that just finished a call must be retired.
fn retire_reason(cfg: &PoolConfig, lease: &mut Lease, began: Instant) -> Option<RetireReason> {
    if lease.limit.is_some_and(|l| lease.served >= l) {
        return Some(RetireReason::MaxCalls);
    }
    let max = cfg.max_rss?;
    // Reading /proc costs ≈ 10 µs: after slow calls, or every 10 ms of fast ones.
    if began.elapsed() >= Duration::from_millis(1)
        || lease.last_rss.elapsed() >= Duration::from_millis(10)
    {
        lease.last_rss = Instant::now();
        if crate::process::rss(lease.pid).is_some_and(|rss| rss > max) {
            return Some(RetireReason::Rss);
        }
    }
    None
}

/// Why a worker's socket can no longer be used.
pub(crate) enum WireError {
    /// It closed or failed: the worker is dead or dying.
    Closed,
    /// The worker sent something that is not the protocol.
    Violation(String),
}

/// A worker's socket registered with one runtime's reactor. Kept in the lease across
/// calls, so that a caller on the same runtime as the previous one pays nothing to wait on
/// the socket; a caller on another runtime registers it anew.
pub(crate) struct Registration {
    runtime: tokio::runtime::Id,
    afd: AsyncFd<Fd>,
    writable: bool,
    /// Whether [`Wire::answer`] polls before sleeping.
    linger: Backoff,
}

/// Whether to poll a socket before sleeping on it. Polling pays when the peer runs on
/// another CPU and answers within the window; when both share a CPU the poll only keeps
/// the peer from running (`sched_yield` does not reliably hand the CPU over), and when
/// the peer takes longer it only burns CPU. A poll that ran out skips the next 2, 4, …
/// 64 chances, and one that found its data starts over: a loop on one CPU, or of slow
/// queries, polls once per 64 requests. The shim's side does the same (`channel.py`,
/// `_recv_soon`).
#[derive(Default)]
struct Backoff {
    skip: u32,
    misses: u32,
}

impl Backoff {
    const MAX_MISSES: u32 = 6;

    fn poll_now(&mut self) -> bool {
        if self.skip > 0 {
            self.skip -= 1;
            return false;
        }
        true
    }

    fn found(&mut self) {
        self.misses = 0;
    }

    fn ran_out(&mut self) {
        self.misses = (self.misses + 1).min(Self::MAX_MISSES);
        self.skip = 1 << self.misses;
    }
}

fn register(fd: RawFd, writable: bool) -> io::Result<Registration> {
    // Interest in writability only while a write would block: a socket always ready for
    // writing would wake the reactor once per call for nothing.
    let interest = if writable {
        Interest::READABLE | Interest::WRITABLE
    } else {
        Interest::READABLE
    };
    // SAFETY: a Registration lives in the lease next to the socket and is declared before
    // it, so it is dropped (deregistered) before the socket is closed.
    let afd =
        unsafe { AsyncFd::register_with_interest(Fd(fd), interest) }.map_err(io::Error::from)?;
    Ok(Registration {
        runtime: tokio::runtime::Handle::current().id(),
        afd,
        writable,
        linger: Backoff::default(),
    })
}

/// A worker's socket, as seen from the current runtime, and the buffer its frames are
/// reassembled in.
pub(crate) struct Wire<'a> {
    reg: &'a mut Option<Registration>,
    fd: RawFd,
    buf: &'a mut FrameBuffer,
}

impl<'a> Wire<'a> {
    /// Uses the socket's registration if it belongs to the current runtime, else makes one.
    pub(crate) fn open(
        reg: &'a mut Option<Registration>,
        sock: &StdUnixStream,
        buf: &'a mut FrameBuffer,
    ) -> io::Result<Self> {
        let fd = sock.as_raw_fd();
        let here = tokio::runtime::Handle::current().id();
        if !matches!(reg, Some(r) if r.runtime == here && !r.writable) {
            *reg = None;
            *reg = Some(register(fd, false)?);
        }
        Ok(Wire { reg, fd, buf })
    }

    fn afd(&self) -> &AsyncFd<Fd> {
        &self.reg.as_ref().expect("registered in open").afd
    }

    /// Writes a whole frame.
    pub(crate) async fn send(&mut self, mut data: &[u8]) -> Result<(), WireError> {
        let mut watched = false;
        while !data.is_empty() {
            match send(self.fd, data) {
                Ok(n) => data = &data[n..],
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // A frame larger than the socket buffer: watch writability for it.
                    if !watched {
                        *self.reg = None;
                        *self.reg = Some(register(self.fd, true).map_err(|_| WireError::Closed)?);
                        watched = true;
                    }
                    let mut guard = self.afd().writable().await.map_err(|_| WireError::Closed)?;
                    guard.clear_ready();
                }
                Err(_) => return Err(WireError::Closed),
            }
        }
        if watched {
            *self.reg = None;
            *self.reg = Some(register(self.fd, false).map_err(|_| WireError::Closed)?);
        }
        Ok(())
    }

    /// Answers a host request, then polls the socket for the worker's next message for
    /// up to [`LINGER`] (unless [`Backoff`] says the polls keep running out), yielding
    /// the CPU between tries, before the caller goes to sleep
    /// on the reactor: a plugin's loop of host requests (one query per draft) sends the
    /// next within microseconds, and finding it awake spares both a wake-up across CPUs
    /// (≈ 60 µs on a VM, where a whole round trip on one CPU is ≈ 10 µs). The shim's
    /// side does the same while it waits for the reply (`channel.py`, `SPIN_NS`).
    async fn answer(
        &mut self,
        request_id: u64,
        reply: Result<Value, HostFailure>,
    ) -> Result<(), WireError> {
        self.send(&ToWorker::HostReply { request_id, reply }.encode())
            .await?;
        let linger = &mut self.reg.as_mut().expect("registered in open").linger;
        if !linger.poll_now() {
            return Ok(());
        }
        let until = Instant::now() + LINGER;
        loop {
            match recv_into(self.fd, self.buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // Bytes, the end of the stream or an error: next() takes it from here.
                _ => {
                    linger.found();
                    return Ok(());
                }
            }
            if Instant::now() >= until {
                linger.ran_out();
                return Ok(());
            }
            std::thread::yield_now();
        }
    }

    /// The next message, reading as needed. Cancel-safe: bytes read stay in the buffer.
    pub(crate) async fn next(&mut self) -> Result<FromWorker, WireError> {
        let mut reregistered = false;
        loop {
            match self.buf.next_frame() {
                Ok(Some(body)) => {
                    return FromWorker::decode(&body)
                        .map_err(|e| WireError::Violation(format!("undecodable frame: {e}")))
                }
                Ok(None) => {}
                Err(e) => return Err(WireError::Violation(e.to_string())),
            }
            let (fd, buf) = (self.fd, &mut *self.buf);
            let afd = &self.reg.as_ref().expect("registered in open").afd;
            let mut guard = match afd.readable().await {
                Ok(g) => g,
                // The registration outlived its runtime (runtime ids are reused once a
                // runtime is gone): register with this one and wait again.
                Err(_) if !reregistered => {
                    reregistered = true;
                    *self.reg = None;
                    *self.reg = Some(register(fd, false).map_err(|_| WireError::Closed)?);
                    continue;
                }
                Err(_) => return Err(WireError::Closed),
            };
            let mut offered = 0;
            let got = guard.try_io(|_| {
                offered = read_space(buf);
                recv_into(fd, buf)
            });
            match got {
                Ok(Ok(0)) => {
                    return Err(match buf.check_eof() {
                        Ok(()) => WireError::Closed,
                        Err(e) => WireError::Violation(e.to_string()),
                    })
                }
                // A read that did not fill the space offered emptied the socket: forget
                // the readiness now rather than learn it from one more `recv` (EAGAIN)
                // next time. An event that came after this guard's is kept (tokio
                // compares the readiness tick).
                Ok(Ok(n)) if n < offered => guard.clear_ready(),
                Ok(Ok(_)) | Err(_) => {}
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Ok(Err(_)) => return Err(WireError::Closed),
            }
        }
    }
}

/// How long a caller polls a worker's socket after answering a host request.
const LINGER: Duration = Duration::from_micros(50);

/// Host requests one worker may have in flight at once; more are refused.
pub const HOST_REQUESTS_IN_FLIGHT: usize = 64;
/// Payload bytes of the host requests one worker may have in flight at once (a single
/// request of any size the frame limit allows is let through when none is).
pub const HOST_BYTES_IN_FLIGHT: usize = 64 << 20;

/// The host requests a worker has in a handler's hands: how many, and their payload
/// bytes.
#[derive(Default)]
struct InFlight {
    requests: usize,
    bytes: usize,
}

/// Why a host request is refused before it reaches a handler, if it is: it must come
/// from the call in hand (the worker's `call_id` is its word, checked against the
/// supervisor's), and the worker may have only so much in flight.
fn refusal(
    claimed: Option<u64>,
    call_id: u64,
    in_flight: &InFlight,
    size: usize,
) -> Option<HostFailure> {
    let message = match claimed {
        Some(id) if id == call_id => {
            let full = in_flight.requests >= HOST_REQUESTS_IN_FLIGHT
                || (in_flight.requests > 0 && in_flight.bytes + size > HOST_BYTES_IN_FLIGHT);
            if !full {
                return None;
            }
            return Some(HostFailure {
                type_name: "TooManyRequests".into(),
                message: format!(
                    "the worker has {} host requests ({} KiB) in flight; at most {HOST_REQUESTS_IN_FLIGHT} ({} MiB) are taken: wait for some to finish",
                    in_flight.requests,
                    in_flight.bytes >> 10,
                    HOST_BYTES_IN_FLIGHT >> 20
                ),
            });
        }
        Some(id) => {
            format!("the host request names call {id}, but the worker's call in hand is {call_id}")
        }
        None => "a host request made between calls is refused: make it while the call runs".into(),
    };
    Some(HostFailure {
        type_name: "PermissionError".into(),
        message,
    })
}

/// Writes the job's frame and reads until its answer, serving logs and host requests.
async fn exchange(cfg: &Arc<PoolConfig>, lease: &mut Lease, job: &Job, log: &CallLog) -> Exchange {
    let slot = lease.slot;
    let mut wire = match Wire::open(&mut lease.reg, &lease.sock, &mut lease.buf) {
        Ok(w) => w,
        Err(e) => return Exchange::Violation(format!("cannot watch the worker's socket: {e}")),
    };
    let broken = |e: WireError| match e {
        WireError::Closed => Exchange::Died,
        WireError::Violation(d) => Exchange::Violation(d),
    };
    if let Err(e) = wire.send(&job.frame).await {
        return broken(e);
    }
    let mut host: FuturesUnordered<HostDone> = FuturesUnordered::new();
    let mut in_flight = InFlight::default();
    let mut tally = Tally::default();
    loop {
        let msg = tokio::select! {
            biased;
            m = wire.next() => match m {
                Ok(m) => m,
                Err(e) => return broken(e),
            },
            Some((request_id, size, since, reply)) = host.next(), if !host.is_empty() => {
                in_flight.requests -= 1;
                in_flight.bytes -= size;
                if let Err(e) = wire.answer(request_id, reply).await {
                    return broken(e);
                }
                tally.host_request(since);
                continue;
            }
        };
        match msg {
            FromWorker::Result { call_id, value } if call_id == job.id => {
                return Exchange::Done(Ok(value), tally)
            }
            FromWorker::Exception { call_id, exception } if call_id == job.id => {
                return Exchange::Done(Err(call_error(exception, &job.reference)), tally)
            }
            FromWorker::Usage { call_id, usage } if call_id == job.id => tally.worker = Some(usage),
            FromWorker::Log(rec) => log.forward(rec),
            FromWorker::HostRequest {
                request_id,
                call_id,
                method,
                payload,
            } => {
                let since = Instant::now();
                let size = payload.as_bytes().len();
                let reply = if let Some(refused) = refusal(call_id, job.id, &in_flight, size) {
                    log.warn(format!("host request refused: {}", refused.message));
                    Err(refused)
                } else if method == "echo" {
                    payload.decode().map_err(|e| HostFailure {
                        type_name: "DecodeError".into(),
                        message: e.to_string(),
                    })
                } else {
                    let fut = cfg.handler.handle(HostRequest {
                        pool: cfg.name.clone(),
                        worker: slot,
                        call_id: job.id,
                        reference: job.reference.clone(),
                        run_id: job.run_id.clone(),
                        method,
                        payload,
                    });
                    in_flight.requests += 1;
                    in_flight.bytes += size;
                    host.push(Box::pin(
                        async move { (request_id, size, since, fut.await) },
                    ));
                    continue;
                };
                if let Err(e) = wire.answer(request_id, reply).await {
                    return broken(e);
                }
                tally.host_request(since);
            }
            other => {
                return Exchange::Violation(format!(
                    "unexpected message during call {}: {other:?}",
                    job.id
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polls_that_run_out_back_off_and_one_that_finds_data_starts_over() {
        let mut b = Backoff::default();
        assert!(b.poll_now());
        b.ran_out();
        // 2, then 4, ... skipped chances, up to 64.
        let mut skipped = vec![];
        for _ in 0..8 {
            let mut n = 0;
            while !b.poll_now() {
                n += 1;
            }
            skipped.push(n);
            b.ran_out();
        }
        assert_eq!(skipped, [2, 4, 8, 16, 32, 64, 64, 64]);
        b.found();
        b.ran_out();
        let mut n = 0;
        while !b.poll_now() {
            n += 1;
        }
        assert_eq!(n, 2, "found() starts the backoff over");
    }

    fn lease(slot: usize, back: &mpsc::UnboundedSender<Handback>) -> Lease {
        Lease {
            reg: None,
            slot,
            cpu: None,
            pid: Pid::from_raw(1),
            sock: StdUnixStream::pair().unwrap().0,
            buf: FrameBuffer::new(1024),
            served: 0,
            limit: None,
            last_rss: Instant::now(),
            current: Arc::default(),
            back: back.clone(),
        }
    }

    #[test]
    fn a_worker_handed_to_a_caller_that_just_gave_up_is_not_lost() {
        let d = Dispatch::default();
        let (back, _rx) = mpsc::unbounded_channel();
        let Checkout::Wait(rx) = d.checkout(4) else {
            panic!("nothing is idle yet")
        };
        let waiting = Waiting::new(rx, &d);
        d.checkin(lease(0, &back)); // handed to the waiter...
        drop(waiting); // ...which is dropped before it looks
        assert!(matches!(d.checkout(4), Checkout::Ready(l) if l.slot == 0));
    }

    #[test]
    fn the_queue_is_bounded_and_closed_waiters_do_not_count() {
        let d = Dispatch::default();
        let a = d.checkout(1);
        assert!(matches!(d.checkout(1), Checkout::Full));
        drop(a);
        assert!(matches!(d.checkout(1), Checkout::Wait(_)));
    }

    #[test]
    fn draining_sends_idle_workers_back_and_refuses_new_calls() {
        let d = Dispatch::default();
        let (back, mut rx) = mpsc::unbounded_channel();
        d.checkin(lease(3, &back));
        d.drain();
        assert!(matches!(
            rx.try_recv(),
            Ok(Handback::Retire {
                reason: RetireReason::Shutdown,
                ..
            })
        ));
        assert!(matches!(d.checkout(4), Checkout::Closed));
    }
}
