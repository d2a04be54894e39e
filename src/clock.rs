//! Time is passed in: freshness code asks a [`Clock`], background retries wait on it, and tests
//! move a [`ManualClock`] instead of sleeping.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::Notify;

/// Wall-clock time in milliseconds since the Unix epoch.
pub type Millis = u64;

/// A wait on a [`Clock`], boxed so that the clock can be a `dyn Clock`.
pub type Sleep<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// Where the cache reads the time from.
pub trait Clock: Send + Sync + 'static {
    /// Now, in milliseconds since the Unix epoch.
    fn now_millis(&self) -> Millis;

    /// Now, as a `SystemTime`.
    fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.now_millis())
    }

    /// Completes once `d` has passed on this clock. By default `d` of the runtime's monotonic
    /// time (`tokio::time::sleep`): a step of the wall clock meanwhile neither shortens nor
    /// lengthens it.
    fn sleep(&self, d: Duration) -> Sleep<'_> {
        Box::pin(tokio::time::sleep(d))
    }
}

/// The system's real-time clock, read at the kernel's tick (1–10 ms on Linux).
///
/// HTTP caching counts in whole seconds (RFC 9111 §1.2.2), so a request reads the clock a few
/// times without needing its fine resolution. On Linux the coarse clock (`CLOCK_REALTIME_COARSE`,
/// through the vDSO) is a plain read of a value the kernel keeps: about 5 ns here, against 25 ns
/// for the precise one, which reads and scales the CPU's time-stamp counter.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn now_millis(&self) -> Millis {
        let ts = rustix::time::clock_gettime(rustix::time::ClockId::RealtimeCoarse);
        u64::try_from(ts.tv_sec).map(|s| s * 1000 + ts.tv_nsec as u64 / 1_000_000).unwrap_or(0)
    }

    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    fn now_millis(&self) -> Millis {
        to_millis(SystemTime::now())
    }
}

/// A clock that only moves when told to: for tests. Its [`sleep`](Clock::sleep)s end when the
/// clock is moved past their deadline, never by themselves.
#[derive(Debug)]
pub struct ManualClock {
    now: AtomicU64,
    /// Woken at every move.
    moved: Notify,
    /// The deadline of every sleep in progress, by sleep id.
    sleeps: Mutex<Vec<(u64, Millis)>>,
    next_sleep: AtomicU64,
}

impl ManualClock {
    /// A clock stopped at the current system time.
    pub fn new() -> Self {
        Self::at(SystemTime::now())
    }

    /// A clock stopped at `t`.
    pub fn at(t: SystemTime) -> Self {
        ManualClock {
            now: AtomicU64::new(to_millis(t)),
            moved: Notify::new(),
            sleeps: Mutex::new(Vec::new()),
            next_sleep: AtomicU64::new(0),
        }
    }

    /// Moves the clock forward by `d`.
    pub fn advance(&self, d: Duration) {
        self.now.fetch_add(d.as_millis() as u64, Ordering::SeqCst);
        self.moved.notify_waiters();
    }

    /// Sets the clock to `t`.
    pub fn set(&self, t: SystemTime) {
        self.now.store(to_millis(t), Ordering::SeqCst);
        self.moved.notify_waiters();
    }

    /// Sleeps in progress whose deadline the clock has not reached: what is waiting for the clock
    /// to move. A sleep the last move has ended no longer counts, even before its task runs.
    pub fn sleeping(&self) -> usize {
        let now = self.now_millis();
        self.sleeps.lock().unwrap_or_else(|e| e.into_inner()).iter().filter(|(_, until)| *until > now).count()
    }
}

/// Takes a sleep's deadline out of [`ManualClock::sleeping`] when the sleep ends or is dropped.
struct Asleep<'a> {
    clock: &'a ManualClock,
    id: u64,
}

impl Drop for Asleep<'_> {
    fn drop(&mut self) {
        self.clock.sleeps.lock().unwrap_or_else(|e| e.into_inner()).retain(|(id, _)| *id != self.id);
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for ManualClock {
    fn now_millis(&self) -> Millis {
        self.now.load(Ordering::SeqCst)
    }

    /// Ends once the clock has been moved `d` past the time of this call.
    fn sleep(&self, d: Duration) -> Sleep<'_> {
        let until = self.now_millis().saturating_add(d.as_millis() as u64);
        let id = self.next_sleep.fetch_add(1, Ordering::Relaxed);
        self.sleeps.lock().unwrap_or_else(|e| e.into_inner()).push((id, until));
        let asleep = Asleep { clock: self, id };
        Box::pin(async move {
            let _asleep = asleep;
            loop {
                let moved = self.moved.notified();
                tokio::pin!(moved);
                // Registered before the clock is read, so a move in between is not missed.
                moved.as_mut().enable();
                if self.now_millis() >= until {
                    return;
                }
                moved.await;
            }
        })
    }
}

/// An HTTP date field value (RFC 9110 §5.6.7, any of its three formats, surrounding white space
/// allowed) in milliseconds since the epoch; `None` when it is not one.
pub fn http_date(value: &[u8]) -> Option<Millis> {
    let text = std::str::from_utf8(value).ok()?;
    httpdate::parse_http_date(text.trim()).ok().map(to_millis)
}

/// Milliseconds since the epoch for `t` (0 before the epoch).
pub fn to_millis(t: SystemTime) -> Millis {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// The `SystemTime` for `ms` milliseconds since the epoch.
pub fn from_millis(ms: Millis) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_clock_reads_the_wall_clock() {
        // The coarse clock trails the precise one by a kernel tick (1–10 ms); a descheduled VM
        // can see it later. A second either way is still right for HTTP, and catches a wrong
        // unit (seconds, microseconds) or a wrong sum of the two fields.
        let before = to_millis(SystemTime::now());
        let coarse = SystemClock.now_millis();
        let after = to_millis(SystemTime::now());
        assert!(coarse + 1000 >= before, "coarse {coarse} ms, precise {before} ms before it");
        assert!(coarse <= after + 1000, "coarse {coarse} ms, precise {after} ms after it");
    }

    /// Polls `s` once.
    fn polled(s: &mut Sleep<'_>) -> Option<()> {
        futures_util::FutureExt::now_or_never(s.as_mut())
    }

    #[tokio::test]
    async fn a_manual_sleep_ends_when_the_clock_is_moved_past_its_deadline() {
        let clock = ManualClock::new();
        let mut sleep = clock.sleep(Duration::from_secs(2));
        let mut other = clock.sleep(Duration::from_secs(5));
        assert_eq!(clock.sleeping(), 2);
        assert_eq!(polled(&mut sleep), None);
        clock.advance(Duration::from_millis(1999));
        assert_eq!(polled(&mut sleep), None, "ended before its deadline");
        assert_eq!(clock.sleeping(), 2);
        clock.advance(Duration::from_millis(1));
        assert_eq!(clock.sleeping(), 1, "a sleep the move ended still counts");
        assert_eq!(polled(&mut sleep), Some(()));
        drop(sleep);
        assert_eq!(polled(&mut other), None);
        drop(other);
        assert_eq!(clock.sleeping(), 0, "a dropped sleep still counts");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_manual_sleep_waiting_in_a_task_is_woken_by_the_move() {
        let clock = std::sync::Arc::new(ManualClock::new());
        let c = clock.clone();
        let (started, wait_started) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let sleep = c.sleep(Duration::from_secs(1));
            let _ = started.send(());
            sleep.await;
        });
        wait_started.await.expect("the task started its sleep");
        clock.advance(Duration::from_secs(1));
        tokio::time::timeout(Duration::from_secs(10), task).await.expect("woken by the move").expect("task");
        assert_eq!(clock.sleeping(), 0);
    }
}
