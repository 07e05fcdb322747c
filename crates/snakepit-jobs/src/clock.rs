//! The runner's and the scheduler's sense of time: wall-clock `now` (cron ticks,
//! templates, record times) and `sleep` (retry backoff, waiting for the next tick),
//! behind a trait so that tests drive time by hand.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use snakepit::sync::Recover;
use tokio::sync::watch;

/// A boxed future that does not borrow the clock.
pub type Sleep = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Wall-clock time and sleeping.
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> DateTime<Utc>;
    /// Completes after `d` has passed on this clock.
    fn sleep(&self, d: Duration) -> Sleep;
}

/// The system clock and tokio's timer.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
    fn sleep(&self, d: Duration) -> Sleep {
        Box::pin(tokio::time::sleep(d))
    }
}

/// A clock that moves only when told to, for tests. Every sleep is recorded
/// ([`ManualClock::sleeps`]). Made with [`ManualClock::new`], a sleep completes when
/// [`ManualClock::advance`] or [`ManualClock::set`] reach its end; made with
/// [`ManualClock::auto_advancing`], a sleep moves the clock forward by its length at
/// once (so a test of retry backoff runs instantly and reads the delays back).
#[derive(Debug, Clone)]
pub struct ManualClock {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    now: watch::Sender<DateTime<Utc>>,
    sleeps: Mutex<Vec<Duration>>,
    sleeping: AtomicUsize,
    auto: bool,
}

impl ManualClock {
    /// A clock at `start` that moves when advanced.
    pub fn new(start: DateTime<Utc>) -> ManualClock {
        ManualClock::make(start, false)
    }

    /// A clock at `start` that each sleep moves forward by its length.
    pub fn auto_advancing(start: DateTime<Utc>) -> ManualClock {
        ManualClock::make(start, true)
    }

    fn make(start: DateTime<Utc>, auto: bool) -> ManualClock {
        ManualClock {
            inner: Arc::new(Inner {
                now: watch::channel(start).0,
                sleeps: Mutex::new(Vec::new()),
                sleeping: AtomicUsize::new(0),
                auto,
            }),
        }
    }

    /// Moves the clock forward by `d`.
    pub fn advance(&self, d: Duration) {
        let d = chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX);
        self.inner.now.send_modify(|t| *t += d);
    }

    /// Sets the clock to `t`.
    pub fn set(&self, t: DateTime<Utc>) {
        self.inner.now.send_replace(t);
    }

    /// Every sleep asked of the clock, in order.
    pub fn sleeps(&self) -> Vec<Duration> {
        self.inner.sleeps.lock().recover().clone()
    }

    /// How many sleeps are waiting right now.
    pub fn sleeping(&self) -> usize {
        self.inner.sleeping.load(Ordering::SeqCst)
    }
}

/// Counts a waiting sleep while it lives (also when its future is dropped).
struct Sleeping(Arc<Inner>);

impl Drop for Sleeping {
    fn drop(&mut self) {
        self.0.sleeping.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.inner.now.borrow()
    }

    fn sleep(&self, d: Duration) -> Sleep {
        self.inner.sleeps.lock().recover().push(d);
        if self.inner.auto {
            self.advance(d);
            return Box::pin(std::future::ready(()));
        }
        let until = self.now() + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX);
        let mut rx = self.inner.now.subscribe();
        self.inner.sleeping.fetch_add(1, Ordering::SeqCst);
        let guard = Sleeping(self.inner.clone());
        Box::pin(async move {
            let _guard = guard;
            // The sender lives in `_guard`'s Arc, so `wait_for` only ends at the time.
            let _ = rx.wait_for(|t| *t >= until).await;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_manual_sleep_ends_when_the_clock_gets_there() {
        let start = DateTime::parse_from_rfc3339("2026-05-31T23:59:00Z")
            .unwrap()
            .to_utc();
        let clock = ManualClock::new(start);
        let mut sleep = clock.sleep(Duration::from_secs(60));
        assert_eq!(clock.sleeping(), 1);
        clock.advance(Duration::from_secs(59));
        assert!(futures_poll(&mut sleep).is_none(), "not yet");
        clock.advance(Duration::from_secs(1));
        sleep.await;
        assert_eq!(clock.sleeping(), 0);
        assert_eq!(clock.sleeps(), vec![Duration::from_secs(60)]);

        let auto = ManualClock::auto_advancing(start);
        auto.sleep(Duration::from_secs(2)).await;
        assert_eq!(auto.now(), start + chrono::Duration::seconds(2));
    }

    /// Polls once without waiting.
    fn futures_poll(f: &mut Sleep) -> Option<()> {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        match f.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(()) => Some(()),
            std::task::Poll::Pending => None,
        }
    }
}
