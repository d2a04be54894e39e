//! The last hour, minute by minute, for the status page: a fixed ring of 60 points, each the
//! difference of the counters between two minute boundaries of the proxy's clock.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use super::{Metrics, Source};
use crate::clock::{Clock, Millis};
use crate::status::Outcome;

/// Points kept: one hour.
pub const POINTS: usize = 60;
/// The length of a point.
pub const MINUTE_MS: Millis = 60_000;

/// One minute of traffic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Point {
    /// The minute's end (clock milliseconds).
    pub at: Millis,
    /// Requests answered.
    pub requests: u64,
    /// Requests answered by the proxy itself (errors), left out of the hit ratio.
    pub local: u64,
    /// Requests answered from the store without asking the origin.
    pub from_store: u64,
    /// Origin answers, and the sum of their latencies in microseconds.
    pub origin_answers: u64,
    /// Sum of the origin's answer latencies, in microseconds.
    pub origin_latency_us: u64,
}

impl Point {
    /// Requests served from the store without asking the origin, over the requests that could
    /// have been (all but the proxy's own answers); `None` without such requests.
    pub fn hit_ratio(&self) -> Option<f64> {
        let n = self.requests.saturating_sub(self.local);
        (n > 0).then(|| self.from_store as f64 / n as f64)
    }

    /// Requests per second over the minute.
    pub fn rate(&self) -> f64 {
        self.requests as f64 / (MINUTE_MS / 1000) as f64
    }

    /// Mean origin latency in milliseconds; `None` without answers.
    pub fn origin_latency_ms(&self) -> Option<f64> {
        (self.origin_answers > 0).then(|| self.origin_latency_us as f64 / self.origin_answers as f64 / 1000.0)
    }
}

/// Counter totals at one instant.
#[derive(Debug, Clone, Copy, Default)]
struct Totals {
    requests: u64,
    local: u64,
    from_store: u64,
    origin_answers: u64,
    origin_latency_us: u64,
}

impl Totals {
    fn read(m: &Metrics) -> Totals {
        let mut t = Totals::default();
        for o in Outcome::ALL {
            let n = m.requests(o);
            t.requests += n;
            if o == Outcome::Local {
                t.local += n;
            }
            // Revalidated asked the origin (a 304), so it is not counted as served from the
            // store here.
            if Source::of(o) == Source::Store && o != Outcome::Revalidated {
                t.from_store += n;
            }
        }
        t.origin_answers = m.origin.answers.load(Ordering::Relaxed);
        t.origin_latency_us = m.origin.latency_us.load(Ordering::Relaxed);
        t
    }
}

#[derive(Debug, Default)]
struct Ring {
    points: Vec<Point>,
    /// Index of the oldest point once the ring is full.
    next: usize,
    /// The totals at the last point (zero before the first).
    last: Totals,
}

/// The ring of per-minute points.
#[derive(Debug, Default)]
pub struct History {
    ring: Mutex<Ring>,
}

impl History {
    /// Closes the minute ending at `at`: the counters' change since the previous call (the
    /// first time: since they started) becomes a point.
    pub fn sample(&self, m: &Metrics, at: Millis) {
        let now = Totals::read(m);
        let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        let prev = std::mem::replace(&mut ring.last, now);
        let point = Point {
            at,
            requests: now.requests - prev.requests,
            local: now.local - prev.local,
            from_store: now.from_store - prev.from_store,
            origin_answers: now.origin_answers - prev.origin_answers,
            origin_latency_us: now.origin_latency_us - prev.origin_latency_us,
        };
        if ring.points.len() < POINTS {
            ring.points.push(point);
        } else {
            let i = ring.next;
            ring.points[i] = point;
            ring.next = (i + 1) % POINTS;
        }
    }

    /// The points, oldest first.
    pub fn points(&self) -> Vec<Point> {
        let ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        let (newer, older) = ring.points.split_at(ring.next);
        older.iter().chain(newer.iter()).copied().collect()
    }
}

/// Takes a point at every minute boundary of `clock` for as long as `metrics` lives. It waits
/// on the runtime's timer, not on `clock`: a test clock's sleepers are the proxy's own retries,
/// which tests count; tests take points with [`History::sample`].
pub async fn sampler(metrics: Weak<Metrics>, clock: Arc<dyn Clock>) {
    loop {
        let now = clock.now_millis();
        let wait = MINUTE_MS - now % MINUTE_MS;
        tokio::time::sleep(Duration::from_millis(wait)).await;
        let Some(m) = metrics.upgrade() else { return };
        m.history.sample(&m, clock.now_millis());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_keeps_the_last_hour_oldest_first() {
        let m = Metrics::new();
        for minute in 1..=(POINTS as u64 + 5) {
            for _ in 0..minute {
                m.request(Outcome::Hit, None, 0, Duration::ZERO);
            }
            m.request(Outcome::Miss, None, 0, Duration::ZERO);
            m.history.sample(&m, minute * MINUTE_MS);
        }
        let points = m.history.points();
        assert_eq!(points.len(), POINTS);
        assert_eq!(points[0].at, 6 * MINUTE_MS);
        assert_eq!(points[0].requests, 7);
        assert_eq!(points[POINTS - 1].at, 65 * MINUTE_MS);
        assert_eq!(points[POINTS - 1].hit_ratio(), Some(65.0 / 66.0));
    }

    #[test]
    fn the_proxys_own_answers_are_left_out_of_the_hit_ratio() {
        let m = Metrics::new();
        m.request(Outcome::Hit, None, 0, Duration::ZERO);
        m.request(Outcome::Local, None, 0, Duration::ZERO);
        m.request(Outcome::Revalidated, None, 0, Duration::ZERO);
        m.history.sample(&m, MINUTE_MS);
        let p = m.history.points()[0];
        assert_eq!(p.requests, 3);
        assert_eq!(p.hit_ratio(), Some(0.5));
        assert_eq!(p.rate(), 3.0 / 60.0);
    }
}
