//! The one way the command line writes: [`outln!`] for the result on stdout, [`errln!`]
//! and [`err!`] for people on stderr.
//!
//! A reader that went away (`snakepit status | head -1`, `2>&1 | head`) is not an
//! error: the write is dropped, and the command ends quietly with the exit code it would
//! have had. SIGPIPE stays ignored, as Rust sets it, so that a closed pipe is an `EPIPE`
//! here instead of a signal that would also kill a serve whose client hung up. Any other
//! failure to write stdout (a full disk) is said once on stderr and turns a success into
//! exit 3: the result did not reach its reader.

use std::fmt;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};

static STDOUT_FAILED: AtomicBool = AtomicBool::new(false);

/// Prints a line on stdout: `outln!("{text}")`.
macro_rules! outln {
    () => {
        $crate::output::stdout(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::output::stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// Prints on stderr without a newline: `err!("{text}")`.
macro_rules! err {
    ($($arg:tt)*) => {
        $crate::output::stderr(format_args!($($arg)*))
    };
}

/// Prints a line on stderr: `errln!("{text}")`.
macro_rules! errln {
    () => {
        $crate::output::stderr(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::output::stderr(format_args!("{}\n", format_args!($($arg)*)))
    };
}

pub(crate) use {err, errln, outln};

/// Writes to stdout (see the module doc for a closed or failing stdout).
pub fn stdout(args: fmt::Arguments) {
    let mut out = io::stdout().lock();
    match out.write_fmt(args).and_then(|()| out.flush()) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {}
        Err(e) => {
            if !STDOUT_FAILED.swap(true, Ordering::Relaxed) {
                errln!("snakepit: cannot write the result to stdout: {e}");
            }
        }
    }
}

/// Writes to stderr; a stderr that is closed or failing is left alone.
pub fn stderr(args: fmt::Arguments) {
    let mut err = io::stderr().lock();
    let _ = err.write_fmt(args).and_then(|()| err.flush());
}

/// True once a write to stdout failed for another reason than a closed pipe.
pub fn stdout_failed() -> bool {
    STDOUT_FAILED.load(Ordering::Relaxed)
}

/// Writes `bytes` (a generated completion script or man page) to stdout as [`stdout`].
pub fn stdout_bytes(bytes: &[u8]) {
    stdout(format_args!("{}", String::from_utf8_lossy(bytes)));
}
