//! Locks that outlive a panic: a panic while a std lock is held (a bug, reported where it
//! happened) must not stop the supervisor, so every `Mutex` and `RwLock` of the snakepit
//! crates is taken with [`Recover::recover`], which uses the data as the panic left it.
//!
//! ```
//! use snakepit::sync::Recover;
//! let m = std::sync::Mutex::new(1);
//! *m.lock().recover() += 1;
//! assert_eq!(*m.lock().recover(), 2);
//! ```

use std::sync::{LockResult, PoisonError};

/// The guard of a lock, poisoned or not.
pub trait Recover<G> {
    /// The guard, also when another thread panicked while holding the lock.
    fn recover(self) -> G;
}

impl<G> Recover<G> for LockResult<G> {
    fn recover(self) -> G {
        self.unwrap_or_else(PoisonError::into_inner)
    }
}
