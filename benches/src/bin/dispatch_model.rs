//! A model of the supervisor's dispatch path, to test changes to it without touching the
//! supervisor: the same raw Python worker (benches/python/raw_worker.py) behind
//!
//! - `blocking`: the caller's thread writes the CALL and blocks reading the RESULT (the
//!   raw ping-pong of `compare`);
//! - `slot`: what crates/snakepit/src/worker.rs does today: the caller (its own
//!   current_thread runtime) puts the job in a queue (the first design used flume; a tokio
//!   mpsc here) and awaits a oneshot under
//!   `timeout_at`; a slot thread (its own current_thread runtime) owns a tokio
//!   `UnixStream`, picks the job in a `select!` with the socket, writes the frame, then
//!   waits in a `select!` of the socket, a fresh `sleep_until(deadline)` and the reply's
//!   `closed()`, and answers through the oneshot;
//!   (the first design, replaced by the lease);
//! - `lease`: what crates/snakepit/src/dispatch.rs does now: the caller's task
//!   registers the socket with its own reactor for the call (`AsyncFd`, READABLE |
//!   WRITABLE), `send`s the CALL, waits for readability and `recv`s the RESULT, under
//!   `timeout_at(deadline)`; the registration is dropped after the call;
//! - `lease-rdonly`: the same with READABLE interest only (no EPOLLOUT edge when the
//!   worker drains the CALL);
//! - `lease-kept`: READABLE only, and the registration kept across calls (no
//!   `epoll_ctl` ADD/DEL per call).
//!
//! ```text
//! cargo run --release -p snakepit-benches --bin dispatch_model -- [--calls N] [--rounds N]
//! ```
//!
//! Prints, per variant, the median over rounds of p50/p99 and the supervisor-side CPU
//! and sleeps (voluntary context switches) per call of every thread of this process.

#![allow(deprecated)] // AsyncFd::with_interest on a borrowed fd (dispatch.rs registers it the same way)
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream as StdStream;
use std::time::{Duration, Instant};

use bytes::Bytes;
use snakepit_benches::{
    bench_python, median, small_call_frame, thread_stats, RawPeer, Samples, SchedStat,
};
use snakepit_proto::{FrameBuffer, FromWorker, DEFAULT_FRAME_LIMIT};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::sync::{mpsc, oneshot};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Variant {
    Blocking,
    Slot,
    Lease,
    LeaseRdonly,
    LeaseKept,
}

const VARIANTS: [Variant; 5] = [
    Variant::Blocking,
    Variant::Slot,
    Variant::Lease,
    Variant::LeaseRdonly,
    Variant::LeaseKept,
];

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::Blocking => "blocking loop (raw ping-pong)",
            Variant::Slot => "slot thread + queue (first design)",
            Variant::Lease => "lease: per-call AsyncFd, READABLE|WRITABLE (dispatch.rs now)",
            Variant::LeaseRdonly => "lease: per-call AsyncFd, READABLE only",
            Variant::LeaseKept => "lease: AsyncFd READABLE only, kept across calls",
        }
    }
}

struct Job {
    frame: Vec<u8>,
    deadline: Instant,
    reply: oneshot::Sender<Bytes>,
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The slot's end of the socket (tokio's `UnixStream`, as worker.rs had it).
struct Conn {
    sock: tokio::net::UnixStream,
    buf: FrameBuffer,
}

impl Conn {
    async fn next(&mut self) -> Option<Bytes> {
        loop {
            if let Some(body) = self.buf.next_frame().ok()? {
                return Some(body);
            }
            if self.sock.read_buf(self.buf.read_space()).await.ok()? == 0 {
                return None;
            }
        }
    }

    async fn send(&mut self, frame: &[u8]) -> bool {
        self.sock.write_all(frame).await.is_ok()
    }
}

fn result_of(body: &Bytes) -> bool {
    matches!(FromWorker::decode(body), Ok(FromWorker::Result { .. }))
}

/// The slot thread of the `slot*` variants.
fn slot_thread(variant: Variant, sock: StdStream, mut queue: mpsc::Receiver<Job>) {
    rt().block_on(async move {
        sock.set_nonblocking(true).unwrap();
        let _ = variant;
        let sock = tokio::net::UnixStream::from_std(sock).unwrap();
        let mut conn = Conn {
            sock,
            buf: FrameBuffer::new(DEFAULT_FRAME_LIMIT),
        };
        loop {
            let job = tokio::select! {
                biased;
                m = conn.next() => match m { Some(_) => continue, None => return },
                j = queue.recv() => match j { Some(j) => j, None => return },
            };
            let mut reply = Some(job.reply);
            if !conn.send(&job.frame).await {
                return;
            }
            let deadline = tokio::time::Instant::from_std(job.deadline);
            loop {
                tokio::select! {
                    biased;
                    m = conn.next() => match m {
                        Some(body) if result_of(&body) => {
                            if let Some(r) = reply.take() {
                                let _ = r.send(body);
                            }
                            break;
                        }
                        Some(_) => {}
                        None => return,
                    },
                    _ = tokio::time::sleep_until(deadline) => return,
                    _ = async { match &mut reply { Some(r) => r.closed().await, None => std::future::pending().await } } => return,
                }
            }
        }
    });
}

/// A raw fd to register with a reactor (not closed on drop).
struct Fd(RawFd);

impl AsRawFd for Fd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

fn send(fd: RawFd, data: &[u8]) -> bool {
    // SAFETY: a valid slice; small frames always fit the socket buffer here.
    let n = unsafe { libc::send(fd, data.as_ptr().cast(), data.len(), libc::MSG_NOSIGNAL) };
    n == data.len() as isize
}

fn recv_into(fd: RawFd, buf: &mut FrameBuffer) -> std::io::Result<usize> {
    let space = buf.read_space();
    if space.capacity() - space.len() < 4096 {
        space.reserve(64 * 1024);
    }
    let chunk = space.spare_capacity_mut();
    // SAFETY: recv writes at most chunk.len() bytes.
    let n = unsafe { libc::recv(fd, chunk.as_mut_ptr().cast(), chunk.len(), 0) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel initialised n bytes.
    unsafe { space.set_len(space.len() + n as usize) };
    Ok(n as usize)
}

/// One call on the caller's task, as dispatch.rs's `exchange` does it.
async fn lease_exchange(
    fd: RawFd,
    buf: &mut FrameBuffer,
    frame: &[u8],
    afd: &AsyncFd<Fd>,
) -> Bytes {
    assert!(send(fd, frame));
    loop {
        if let Some(body) = buf.next_frame().unwrap() {
            if result_of(&body) {
                return body;
            }
            continue;
        }
        let mut guard = afd.readable().await.unwrap();
        match guard.try_io(|_| recv_into(fd, buf)) {
            Ok(Ok(0)) => panic!("worker closed"),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("recv: {e}"),
            Err(_would_block) => {}
        }
    }
}

struct Setup {
    variant: Variant,
    peer: RawPeer,
    queue: Option<mpsc::Sender<Job>>,
    buf: FrameBuffer,
    kept: Option<(tokio::runtime::Id, AsyncFd<Fd>)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Setup {
    fn new(variant: Variant, python: &std::path::Path) -> Setup {
        let peer = RawPeer::python(python, None).expect("raw worker");
        let mut s = Setup {
            variant,
            peer,
            queue: None,
            buf: FrameBuffer::new(DEFAULT_FRAME_LIMIT),
            kept: None,
            thread: None,
        };
        match variant {
            Variant::Blocking => {}
            Variant::Lease | Variant::LeaseRdonly | Variant::LeaseKept => {
                s.peer.sock.set_nonblocking(true).unwrap();
            }
            v => {
                let sock = s.peer.sock.try_clone().unwrap();
                let (tx, rx) = mpsc::channel(1024);
                s.thread = Some(
                    std::thread::Builder::new()
                        .name("model-slot".into())
                        .spawn(move || slot_thread(v, sock, rx))
                        .unwrap(),
                );
                s.queue = Some(tx);
            }
        }
        s
    }

    /// `n` small calls from this thread; latency samples.
    fn run(&mut self, n: usize, rt: &tokio::runtime::Runtime) -> Samples {
        let mut s = Samples::with_capacity(n);
        match self.variant {
            Variant::Blocking => {
                for i in 1..=n as u64 {
                    let t = Instant::now();
                    self.peer.round_trip(i).unwrap();
                    s.push(t.elapsed());
                }
            }
            Variant::Lease | Variant::LeaseRdonly | Variant::LeaseKept => {
                let fd = self.peer.sock.as_raw_fd();
                let interest = if self.variant == Variant::Lease {
                    Interest::READABLE | Interest::WRITABLE
                } else {
                    Interest::READABLE
                };
                let (buf, kept, variant) = (&mut self.buf, &mut self.kept, self.variant);
                rt.block_on(async {
                    // The registration is only good on the runtime it was made on: keep
                    // it with that runtime's id (tokio::runtime::Id is stable since 1.52)
                    // and register again when a call comes from another runtime.
                    let here = tokio::runtime::Handle::current().id();
                    if variant == Variant::LeaseKept
                        && kept.as_ref().is_none_or(|(id, _)| *id != here)
                    {
                        drop(kept.take()); // the same fd cannot be in one epoll twice
                        *kept = Some((here, AsyncFd::with_interest(Fd(fd), interest).unwrap()));
                    }
                    for i in 1..=n as u64 {
                        let t = Instant::now();
                        let frame = small_call_frame(i);
                        let deadline = Instant::now() + Duration::from_secs(30);
                        let body = if let Some((_, afd)) = kept.as_ref() {
                            tokio::time::timeout_at(
                                deadline.into(),
                                lease_exchange(fd, buf, &frame, afd),
                            )
                            .await
                            .unwrap()
                        } else {
                            let afd = AsyncFd::with_interest(Fd(fd), interest).unwrap();
                            tokio::time::timeout_at(
                                deadline.into(),
                                lease_exchange(fd, buf, &frame, &afd),
                            )
                            .await
                            .unwrap()
                        };
                        assert!(!body.is_empty());
                        s.push(t.elapsed());
                    }
                });
            }
            _ => {
                let q = self.queue.as_ref().unwrap();
                rt.block_on(async {
                    for i in 1..=n as u64 {
                        let t = Instant::now();
                        let deadline = Instant::now() + Duration::from_secs(30);
                        let (tx, rx) = oneshot::channel();
                        q.try_send(Job {
                            frame: small_call_frame(i),
                            deadline,
                            reply: tx,
                        })
                        .ok()
                        .unwrap();
                        let body = tokio::time::timeout_at(deadline.into(), rx)
                            .await
                            .unwrap()
                            .unwrap();
                        assert!(!body.is_empty());
                        s.push(t.elapsed());
                    }
                });
            }
        }
        s
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        self.queue = None;
        self.kept = None;
        let _ = self.peer.sock.shutdown(std::net::Shutdown::Both);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut calls, mut rounds) = (5000usize, 5usize);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--calls" => calls = args.next().unwrap().parse().unwrap(),
            "--rounds" => rounds = args.next().unwrap().parse().unwrap(),
            other => panic!("unknown option {other}"),
        }
    }
    let python = bench_python(true);
    let rt = rt();
    let mut setups: Vec<Setup> = VARIANTS.iter().map(|v| Setup::new(*v, &python)).collect();
    for s in &mut setups {
        s.run(300, &rt);
    }
    let k = VARIANTS.len();
    let mut p50 = vec![Vec::new(); k];
    let mut p99 = vec![Vec::new(); k];
    let mut mean = vec![Vec::new(); k];
    let mut cpu = vec![Vec::new(); k];
    let mut sleeps = vec![Vec::new(); k];
    let mut pyc = vec![Vec::new(); k];
    for round in 0..rounds {
        eprintln!("round {}/{rounds}", round + 1);
        let order: Vec<usize> = if round % 2 == 0 {
            (0..k).collect()
        } else {
            (0..k).rev().collect()
        };
        for i in order {
            let pid = setups[i].peer.pid().unwrap();
            let before = thread_stats();
            let wb = snakepit_benches::process_stat(pid);
            let t = Instant::now();
            let s = setups[i].run(calls, &rt);
            let dt = t.elapsed();
            let after = thread_stats();
            let wa = snakepit_benches::process_stat(pid);
            let mut tot = SchedStat::default();
            for (tid, _, a) in &after {
                if let Some((_, _, b)) = before.iter().find(|(t, _, _)| t == tid) {
                    let d = a.minus(*b);
                    tot.cpu_ns += d.cpu_ns;
                    tot.vol += d.vol;
                }
            }
            p50[i].push(s.p50());
            p99[i].push(s.p99());
            mean[i].push(dt.as_secs_f64() * 1e6 / calls as f64);
            cpu[i].push(tot.cpu_ns as f64 / 1000.0 / calls as f64);
            sleeps[i].push(tot.vol as f64 / calls as f64);
            pyc[i].push(wa.minus(wb).cpu_ns as f64 / 1000.0 / calls as f64);
        }
    }
    println!(
        "| dispatch variant (1 worker, raw Python worker) | p50 | p99 | mean | p50 vs blocking | \
         supervisor CPU/call | supervisor sleeps/call | worker CPU/call |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    let base = median(&p50[0]);
    for i in 0..k {
        println!(
            "| {} | {:.1} µs | {:.1} µs | {:.1} µs | {:.2}× | {:.1} µs | {:.2} | {:.1} µs |",
            VARIANTS[i].name(),
            median(&p50[i]),
            median(&p99[i]),
            median(&mean[i]),
            median(&p50[i]) / base,
            median(&cpu[i]),
            median(&sleeps[i]),
            median(&pyc[i]),
        );
    }
    println!("\n{rounds} rounds × {calls} calls per variant, interleaved; medians over rounds.");
    drop(setups);
}
