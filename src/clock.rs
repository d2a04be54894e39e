//! Time is passed in: freshness code asks a [`Clock`], and tests move a [`ManualClock`]
//! instead of sleeping.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Wall-clock time in milliseconds since the Unix epoch.
pub type Millis = u64;

/// Where the cache reads the time from.
pub trait Clock: Send + Sync + 'static {
    /// Now, in milliseconds since the Unix epoch.
    fn now_millis(&self) -> Millis;

    /// Now, as a `SystemTime`.
    fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.now_millis())
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

/// A clock that only moves when told to: for tests.
#[derive(Debug)]
pub struct ManualClock {
    now: AtomicU64,
}

impl ManualClock {
    /// A clock stopped at the current system time.
    pub fn new() -> Self {
        Self::at(SystemTime::now())
    }

    /// A clock stopped at `t`.
    pub fn at(t: SystemTime) -> Self {
        ManualClock { now: AtomicU64::new(to_millis(t)) }
    }

    /// Moves the clock forward by `d`.
    pub fn advance(&self, d: Duration) {
        self.now.fetch_add(d.as_millis() as u64, Ordering::SeqCst);
    }

    /// Sets the clock to `t`.
    pub fn set(&self, t: SystemTime) {
        self.now.store(to_millis(t), Ordering::SeqCst);
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
}
