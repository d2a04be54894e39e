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

/// An HTTP date field value (RFC 9110 §5.6.7) in milliseconds since the epoch (0 for a date
/// before it); `None` when it is not one. `now` is the time the value was received, which places
/// a two-digit year.
///
/// A recipient "MUST accept all three HTTP-date formats": the IMF-fixdate
/// `Sun, 06 Nov 1994 08:49:37 GMT`, the obsolete RFC 850 `Sunday, 06-Nov-94 08:49:37 GMT` and
/// ANSI C's asctime() `Sun Nov  6 08:49:37 1994`. RFC 9111 §4.2 asks a cache to "match the field
/// value case-insensitively" (day and month names, `GMT`) and to consider a zone other than GMT
/// invalid; white space around the value is allowed. Anything else is not a date (a missing
/// comma, a two-digit year outside RFC 850, a one-digit hour, runs of spaces, another zone). A
/// day name that is not the date's weekday is accepted: the date is in the other fields.
pub fn http_date(value: &[u8], now: Millis) -> Option<Millis> {
    let v = value.trim_ascii();
    if v.len() == 29 && v[3] == b',' {
        // IMF-fixdate: `Sun, 06 Nov 1994 08:49:37 GMT`
        day_name(&v[..3], false)?;
        expect(v, &[(4, b' '), (7, b' '), (11, b' '), (16, b' '), (25, b' ')])?;
        gmt(&v[26..])?;
        let year = digits(&v[12..16])?;
        return to_epoch(year, month(&v[8..11])?, digits(&v[5..7])?, time_of_day(&v[17..25])?);
    }
    if let Some(comma) = v.iter().position(|&b| b == b',').filter(|&i| i >= 6) {
        // RFC 850: `Sunday, 06-Nov-94 08:49:37 GMT`
        day_name(&v[..comma], true)?;
        let r = &v[comma + 1..];
        if r.len() != 23 {
            return None;
        }
        expect(r, &[(0, b' '), (3, b'-'), (7, b'-'), (10, b' '), (19, b' ')])?;
        gmt(&r[20..])?;
        let (mon, day, time) = (month(&r[4..7])?, digits(&r[1..3])?, time_of_day(&r[11..19])?);
        return two_digit_year(digits(&r[8..10])?, mon, day, time, now);
    }
    if v.len() == 24 && v[3] == b' ' {
        // asctime: `Sun Nov  6 08:49:37 1994`
        day_name(&v[..3], false)?;
        expect(v, &[(7, b' '), (10, b' '), (19, b' ')])?;
        let day = match v[8] {
            b' ' => digits(&v[9..10])?,
            _ => digits(&v[8..10])?,
        };
        return to_epoch(digits(&v[20..24])?, month(&v[4..7])?, day, time_of_day(&v[11..19])?);
    }
    None
}

const DAYS: [&[u8]; 7] = [b"monday", b"tuesday", b"wednesday", b"thursday", b"friday", b"saturday", b"sunday"];
const MONTHS: [&[u8; 3]; 12] =
    [b"jan", b"feb", b"mar", b"apr", b"may", b"jun", b"jul", b"aug", b"sep", b"oct", b"nov", b"dec"];

/// A day name, any case: the three-letter form, or the full one (`long`, RFC 850).
fn day_name(s: &[u8], long: bool) -> Option<()> {
    DAYS.iter().any(|d| if long { s.eq_ignore_ascii_case(d) } else { s.eq_ignore_ascii_case(&d[..3]) }).then_some(())
}

/// A month name, any case: 1 to 12.
fn month(s: &[u8]) -> Option<u32> {
    MONTHS.iter().position(|m| s.eq_ignore_ascii_case(*m)).map(|i| i as u32 + 1)
}

/// `GMT`, any case.
fn gmt(s: &[u8]) -> Option<()> {
    s.eq_ignore_ascii_case(b"GMT").then_some(())
}

/// Each `(index, byte)` is in `s`.
fn expect(s: &[u8], at: &[(usize, u8)]) -> Option<()> {
    at.iter().all(|&(i, b)| s.get(i) == Some(&b)).then_some(())
}

/// A run of ASCII digits (and nothing else) as a number.
fn digits(s: &[u8]) -> Option<u32> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(s.iter().fold(0, |n, &b| n * 10 + u32::from(b - b'0')))
}

/// `08:49:37` as seconds into the day. A leap second (`:60`) is taken as `:59`, the nearest time
/// not later than the value (RFC 9111 §4.2).
fn time_of_day(s: &[u8]) -> Option<u32> {
    expect(s, &[(2, b':'), (5, b':')])?;
    let (h, m, sec) = (digits(&s[0..2])?, digits(&s[3..5])?, digits(&s[6..8])?);
    (h < 24 && m < 60 && sec <= 60).then_some(h * 3600 + m * 60 + sec.min(59))
}

/// RFC 9110 §5.6.7: "Recipients of a timestamp value in rfc850-date format, which uses a two-digit
/// year, MUST interpret a timestamp that appears to be more than 50 years in the future as
/// representing the most recent year in the past that had the same last two digits." The year
/// taken is the latest one with those digits that is not more than 50 years after `now`.
fn two_digit_year(yy: u32, mon: u32, day: u32, time: u32, now: Millis) -> Option<Millis> {
    const FIFTY_YEARS_MS: u64 = 50 * 31_556_952_000;
    let limit = now.saturating_add(FIFTY_YEARS_MS);
    let century = civil_year(now) / 100 * 100;
    let mut year = century + 100 + yy;
    loop {
        // February 29 exists in some centuries' year and not in others'.
        if let Some(t) = to_epoch(year, mon, day, time).filter(|&t| t <= limit) {
            return Some(t);
        }
        year = year.checked_sub(100)?;
    }
}

/// The Gregorian year of `ms` milliseconds since the epoch.
fn civil_year(ms: Millis) -> u32 {
    // Days to a civil date (Howard Hinnant's algorithm), year only.
    let z = (ms / 86_400_000) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let year = yoe + era * 400 + i64::from(mp >= 10);
    year.clamp(0, 9999) as u32
}

/// Milliseconds since the epoch of a valid date (0 before the epoch); `None` for an invalid one
/// (February 30, month 13).
fn to_epoch(year: u32, mon: u32, day: u32, secs: u32) -> Option<Millis> {
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days_in_month = match mon {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    if day == 0 || day > days_in_month {
        return None;
    }
    // Days from a civil date (Howard Hinnant's algorithm).
    let y = i64::from(year) - i64::from(mon <= 2);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(mon) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + i64::from(secs);
    Some(u64::try_from(secs).unwrap_or(0) * 1000)
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

    /// RFC 9110 §5.6.7's three forms of one instant, and the leniency RFC 9111 §4.2 allows.
    #[test]
    fn http_dates_in_every_format() {
        let now = 1_700_000_000_000; // 2023-11-14
        let t = 784_111_777_000; // Sun, 06 Nov 1994 08:49:37 GMT
        for v in [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
            "Sun Nov 06 08:49:37 1994",
            "SUN, 06 NOV 1994 08:49:37 gmt",
            "sunday, 06-nov-94 08:49:37 Gmt",
            "  Sun, 06 Nov 1994 08:49:37 GMT\t",
            "Mon, 06 Nov 1994 08:49:37 GMT",
        ] {
            assert_eq!(http_date(v.as_bytes(), now), Some(t), "{v:?}");
        }
        assert_eq!(http_date(b"Thu, 01 Jan 1970 00:00:00 GMT", now), Some(0));
        assert_eq!(http_date(b"Sat, 31 Dec 1960 23:59:59 GMT", now), Some(0), "before the epoch");
        assert_eq!(http_date(b"Tue, 29 Feb 2000 23:59:60 GMT", now), Some(951_868_799_000), "leap day, leap second");
        assert_eq!(http_date(b"Sat, 20 Nov 2286 17:46:39 GMT", now), Some(9_999_999_999_000));
        for bad in [
            "",
            "0",
            "yesterday",
            "Thu, 18 Aug 2050 02:01:18 UTC",
            "Thu, 18 Aug 2050 02:01:18 AEST",
            "Thu, 18 Aug 50 02:01:18 GMT",
            "Thu 18 Aug 2050 02:01:18 GMT",
            "Thu, 18  Aug  2050 02:01:18 GMT",
            "Thu, 18-Aug-2050 02:01:18 GMT",
            "Thu, 18 Aug 2050 02.01.18 GMT",
            "Thu, 18 Aug 2050 2:01:18 GMT",
            "Thu, 30 Feb 2050 02:01:18 GMT",
            "Thu, 18 Aug 2050 24:00:00 GMT",
            "Xyz, 18 Aug 2050 02:01:18 GMT",
            "Thursday, 18-Aug-2050 02:01:18 GMT",
            "Thu Aug 8 02:01:18 2050",
        ] {
            assert_eq!(http_date(bad.as_bytes(), now), None, "{bad:?}");
        }
    }

    /// RFC 9110 §5.6.7: a two-digit year more than 50 years ahead is the most recent past year
    /// with those digits.
    #[test]
    fn a_two_digit_year_is_placed_within_fifty_years_ahead_of_now() {
        let year = |v: &str, now| civil_year(http_date(v.as_bytes(), now).expect(v));
        let y2023 = 1_700_000_000_000;
        assert_eq!(year("Thursday, 18-Aug-50 02:01:18 GMT", y2023), 2050);
        assert_eq!(year("Sunday, 06-Nov-94 08:49:37 GMT", y2023), 1994);
        assert_eq!(year("Sunday, 01-Jan-73 00:00:00 GMT", y2023), 2073, "49 years and a half ahead");
        assert_eq!(year("Monday, 01-Jan-74 00:00:00 GMT", y2023), 1974, "50 years and a month ahead");
        assert_eq!(year("Tuesday, 29-Feb-00 00:00:00 GMT", y2023), 2000);
        assert_eq!(year("Monday, 01-Jan-80 00:00:00 GMT", y2023), 1980);
        let y2090 = 3_786_000_000_000; // 2089-12-22
        assert_eq!(year("Saturday, 01-Jan-30 00:00:00 GMT", y2090), 2130);
        assert_eq!(year("Thursday, 01-Jan-50 00:00:00 GMT", y2090), 2050, "2150 is 60 years ahead");
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
