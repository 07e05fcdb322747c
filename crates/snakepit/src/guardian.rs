//! The guardian: a tiny forked process that kills the workers' process groups when the
//! supervisor dies, however it dies.
//!
//! A worker dies with the supervisor through its parent-death signal, but what a plugin
//! spawned (`subprocess.Popen`) does not: it is reparented to init. Only someone alive
//! after the supervisor can kill those process groups. The guardian is forked from the
//! supervisor (no exec): it leaves its own process group, closes every descriptor but the
//! read end of a "lifeline" pipe whose write end only the supervisor holds, and blocks
//! reading it. The supervisor writes the pid (= process group) of each worker into a
//! shared anonymous page as it starts it, and clears it once it has reaped it. When the
//! read returns (EOF: the supervisor is gone, or it closed the lifeline at shutdown), the
//! guardian SIGKILLs every group still listed and exits. Between fork and exit it makes
//! only async-signal-safe system calls, as a child of a multi-threaded process must.
//!
//! The fork-server does the same for the workers it forks; the guardian covers workers
//! started as fresh interpreters.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicI32, Ordering};

use nix::unistd::Pid;

/// Process groups one guardian can watch (one per worker slot).
pub(crate) const CAPACITY: usize = 1024;

pub(crate) struct Guardian {
    pid: Pid,
    /// Held by the supervisor alone; closing it (or dying) releases the guardian.
    lifeline: Option<OwnedFd>,
    /// `CAPACITY` process group ids, 0 for none, in a page shared with the guardian.
    table: *mut AtomicI32,
}

// SAFETY: the table is a fixed mapping of atomics, valid until Drop unmaps it.
unsafe impl Send for Guardian {}
unsafe impl Sync for Guardian {}

impl Guardian {
    /// Forks the guardian.
    pub(crate) fn start() -> std::io::Result<Guardian> {
        let len = CAPACITY * std::mem::size_of::<AtomicI32>();
        // SAFETY: an anonymous shared mapping, zero-filled by the kernel; checked below.
        let table = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if table == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let table = table.cast::<AtomicI32>();
        let (read_end, write_end) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(std::io::Error::from)?;
        let rfd = read_end.as_raw_fd();
        // SAFETY: the child runs only async-signal-safe calls (setpgid, close_range, read,
        // kill, _exit) on memory it inherited, then exits without returning.
        match unsafe { libc::fork() } {
            -1 => {
                // SAFETY: unmapping what we mapped above.
                unsafe { libc::munmap(table.cast(), len) };
                Err(std::io::Error::last_os_error())
            }
            0 => unsafe { guard(rfd, table) },
            pid => {
                drop(read_end);
                Ok(Guardian {
                    pid: Pid::from_raw(pid),
                    lifeline: Some(write_end),
                    table,
                })
            }
        }
    }

    fn slot(&self, i: usize) -> &AtomicI32 {
        // SAFETY: i < CAPACITY, within the mapping, which lives as long as self.
        unsafe { &*self.table.add(i) }
    }

    /// Lists a worker's process group under `slot`.
    pub(crate) fn watch(&self, slot: usize, pid: Pid) {
        if slot < CAPACITY {
            self.slot(slot).store(pid.as_raw(), Ordering::SeqCst);
        }
    }

    /// Forgets a reaped worker's process group.
    pub(crate) fn forget(&self, pid: Pid) {
        for i in 0..CAPACITY {
            let _ =
                self.slot(i)
                    .compare_exchange(pid.as_raw(), 0, Ordering::SeqCst, Ordering::SeqCst);
        }
    }
}

impl Drop for Guardian {
    fn drop(&mut self) {
        // Releases the guardian; every worker is gone by now, so it kills nothing.
        for i in 0..CAPACITY {
            self.slot(i).store(0, Ordering::SeqCst);
        }
        drop(self.lifeline.take());
        let _ = nix::sys::wait::waitpid(self.pid, None);
        // SAFETY: unmapping our own mapping; the guardian (the only other user) has exited.
        unsafe {
            libc::munmap(
                self.table.cast(),
                CAPACITY * std::mem::size_of::<AtomicI32>(),
            )
        };
    }
}

/// The guardian's whole life.
unsafe fn guard(lifeline: i32, table: *mut AtomicI32) -> ! {
    // Out of the supervisor's process group: a Ctrl-C aimed at the supervisor must not
    // take the guardian with it.
    libc::setpgid(0, 0);
    if lifeline > 0 {
        libc::syscall(libc::SYS_close_range, 0u32, (lifeline - 1) as u32, 0u32);
    }
    libc::syscall(libc::SYS_close_range, (lifeline + 1) as u32, u32::MAX, 0u32);
    let mut byte = 0u8;
    loop {
        let n = libc::read(lifeline, (&mut byte as *mut u8).cast(), 1);
        if n < 0 && *libc::__errno_location() == libc::EINTR {
            continue;
        }
        break;
    }
    for i in 0..CAPACITY {
        let pgid = (*table.add(i)).load(Ordering::SeqCst);
        if pgid > 0 {
            libc::kill(-pgid, libc::SIGKILL);
        }
    }
    libc::_exit(0)
}
