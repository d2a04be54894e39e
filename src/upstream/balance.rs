//! A site's origin pool: one [`Upstream`] per server, the choice among the servers that are up,
//! failover, and each server's health (active checks in `health`, passive ejection here).
//!
//! - **Choice**: among the primary servers that are up, by weighted round robin (a smooth
//!   schedule computed once, walked by one atomic counter) or by the cache key (weighted
//!   rendezvous hashing: each key goes to one server while it is up; when a server goes down only
//!   its keys move). Backups are chosen only when no primary is up. None up: [`UpstreamError::Down`]
//!   without asking anyone.
//! - **Retry**: a request without a body whose method is idempotent, that a server never received
//!   (the connection could not be made, or closed before the request was written), goes to
//!   another server that is up; nothing else is retried (a body may have been read, a
//!   non-idempotent request may have had its effect).
//! - **Passive ejection**: `eject_after` consecutive failures (no connection, no response head in
//!   time, an invalid response) take a server out for `eject_for` on the proxy's clock; the first
//!   request after that is a trial, and one more failure takes it out again. Only in pools of more
//!   than one server: with one there is nowhere else to go, so every request still tries it.
//! - **Limits**: each server's connections (its `Upstream`'s pool) and, when configured, its
//!   requests in flight (sent and not answered to the end): beyond them a request waits at most
//!   `timeouts.origin_queue`, then is answered 503 (`detail=origin-busy`).
//!
//! A pool of one server without checks nor an in-flight limit is today's single origin: a send
//! goes straight to its `Upstream`.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use futures_util::future::Either;
use http::{Request, Response};
use tokio::sync::{watch, Semaphore};

use super::body::UpBody;
use super::{OriginIncoming, SendError, Upstream, UpstreamError};
use crate::clock::{Clock, Millis};
use crate::config::{ActiveCheck, Balance, Config, SiteConfig};
use crate::store::CacheKey;

/// The origin servers of one site.
pub struct OriginPool {
    servers: Box<[Server]>,
    /// The one server, when a send can go straight to it (no checks, no in-flight limit).
    only: Option<Upstream>,
    primaries: Schedule,
    backups: Schedule,
    balance: Balance,
    /// Passive ejection applies (more than one server, `eject_after` > 0).
    passive: bool,
    eject_after: u32,
    eject_for: u64,
    pub(super) check: Option<ActiveCheck>,
    /// The `Host` sent with health checks.
    pub(super) check_host: http::HeaderValue,
    pub(super) clock: Arc<dyn Clock>,
    /// Bumped after every health check round and every change of a server's state.
    changes: watch::Sender<u64>,
}

/// One server of a pool.
pub struct Server {
    pub(super) upstream: Upstream,
    url: String,
    weight: u32,
    backup: bool,
    /// Where it falls on the hash (from its URL: the same on every node).
    seed: u64,
    in_flight: Option<Arc<Semaphore>>,
    pub(super) health: Health,
    stats: ServerStats,
}

/// A server's health: the active checks' verdict and the passive ejection.
#[derive(Default)]
pub(super) struct Health {
    /// The active checks' verdict (up until they say otherwise).
    down: AtomicBool,
    /// The last check results, newest in bit 0, and how many there are (at most the window).
    window: Mutex<(u64, u32)>,
    /// Consecutive failed requests.
    failures: AtomicU32,
    /// Out until then (clock milliseconds).
    ejected_until: AtomicU64,
}

/// What a server's requests came to, for metrics. Not counted in a pool of one plain server
/// (no checks, no in-flight limit), whose requests go straight to it: there they are the site's.
#[derive(Default, Debug)]
pub struct ServerStats {
    /// Requests sent to it.
    pub sent: AtomicU64,
    /// Requests that failed at it (no connection, no response head in time, invalid response).
    pub failed: AtomicU64,
    /// Requests it never received that went to another server.
    pub retried_elsewhere: AtomicU64,
    /// Times it was ejected after consecutive failures.
    pub ejections: AtomicU64,
    /// Health checks that passed.
    pub checks_passed: AtomicU64,
    /// Health checks that failed.
    pub checks_failed: AtomicU64,
}

/// A weighted round robin over some servers: the smooth order (nginx's), computed once.
struct Schedule {
    order: Box<[u16]>,
    members: Box<[u16]>,
    next: AtomicUsize,
}

impl OriginPool {
    /// The pool of `site`, with `cfg`'s limits and timeouts.
    pub fn new(site: &SiteConfig, cfg: &Config, clock: Arc<dyn Clock>) -> OriginPool {
        let sni = site.origin_sni.as_deref().or_else(|| {
            let host = site.origin_host.as_ref()?.to_str().ok()?;
            Some(host.rsplit_once(':').map_or(host, |(h, _)| h))
        });
        let servers: Box<[Server]> = site
            .servers
            .iter()
            .map(|s| Server {
                upstream: Upstream::to_server(
                    &s.origin,
                    s.max_connections.unwrap_or(cfg.limits.origin_connections),
                    &cfg.timeouts,
                    sni,
                ),
                url: s.origin.url.clone(),
                weight: s.weight,
                backup: s.backup,
                seed: fnv1a(s.origin.url.as_bytes()),
                in_flight: s.max_requests.map(|n| Arc::new(Semaphore::new(n))),
                health: Health::default(),
                stats: ServerStats::default(),
            })
            .collect();
        let group = |backup: bool| {
            let members: Vec<(u16, u32)> = servers
                .iter()
                .enumerate()
                .filter(|(_, s)| s.backup == backup)
                .map(|(i, s)| (i as u16, s.weight))
                .collect();
            Schedule::new(&members)
        };
        let only = (servers.len() == 1 && site.health.check.is_none() && servers[0].in_flight.is_none())
            .then(|| servers[0].upstream.clone());
        let check_host = site
            .origin_host
            .clone()
            .or_else(|| {
                site.hosts.iter().find_map(|h| match h {
                    crate::config::HostPattern::Exact(name) => http::HeaderValue::from_str(name).ok(),
                    _ => None,
                })
            })
            .unwrap_or_else(|| {
                http::HeaderValue::from_str(servers[0].upstream.authority().as_str()).expect("an authority is a value")
            });
        OriginPool {
            primaries: group(false),
            backups: group(true),
            only,
            balance: site.balance,
            passive: servers.len() > 1 && site.health.eject_after > 0,
            eject_after: site.health.eject_after,
            eject_for: site.health.eject_for.as_millis() as u64,
            check: site.health.check.clone(),
            check_host,
            clock,
            changes: watch::channel(0).0,
            servers,
        }
    }

    /// Sends `req` to a server that is up, chosen for `key`; see the module's documentation.
    /// A combinator when the pool is one plain server, as [`Upstream::send`] is.
    pub fn send<'a>(
        &'a self,
        req: Request<UpBody>,
        key: &CacheKey,
    ) -> impl Future<Output = Result<Response<OriginIncoming>, UpstreamError>> + Send + 'a {
        match &self.only {
            Some(upstream) => Either::Left(upstream.send(req)),
            None => Either::Right(Box::pin(self.send_balanced(req, *key))),
        }
    }

    async fn send_balanced(
        &self,
        mut req: Request<UpBody>,
        key: CacheKey,
    ) -> Result<Response<OriginIncoming>, UpstreamError> {
        let retry = matches!(req.body(), UpBody::Empty) && req.method().is_idempotent();
        let mut tried = 0u64;
        let Some(mut i) = self.choose(&key, self.clock.now_millis(), tried) else {
            return Err(UpstreamError::Down);
        };
        loop {
            let now = self.clock.now_millis();
            tried |= 1 << i;
            let server = &self.servers[i];
            let permit = match &server.in_flight {
                None => None,
                Some(limit) => match tokio::time::timeout(server.upstream.queue(), limit.clone().acquire_owned()).await
                {
                    Ok(Ok(permit)) => Some(permit),
                    _ => return Err(UpstreamError::Busy),
                },
            };
            server.stats.sent.fetch_add(1, Ordering::Relaxed);
            let sent = if retry {
                server.upstream.try_send(req).await
            } else {
                server.upstream.send(req).await.map_err(SendError::Failed)
            };
            let error = match sent {
                Ok(resp) => {
                    server.health.failures.store(0, Ordering::Relaxed);
                    return Ok(match permit {
                        Some(permit) => resp.map(|body| body.holding(permit)),
                        None => resp,
                    });
                }
                Err(SendError::NotSent(e, r)) => {
                    self.failed(i, now);
                    let next = if retry { self.choose(&key, self.clock.now_millis(), tried) } else { None };
                    let Some(next) = next else { return Err(e) };
                    tracing::debug!(server = %server.url, error = %e, "origin server not reached; trying another");
                    server.stats.retried_elsewhere.fetch_add(1, Ordering::Relaxed);
                    (i, req) = (next, *r);
                    continue;
                }
                Err(SendError::Failed(e)) => e,
            };
            if matches!(error, UpstreamError::Unreachable(_) | UpstreamError::Timeout | UpstreamError::Invalid(_)) {
                self.failed(i, now);
            }
            return Err(error);
        }
    }

    /// The server for `key` among those up and not in `tried`: primaries first, backups when no
    /// primary is.
    fn choose(&self, key: &CacheKey, now: Millis, tried: u64) -> Option<usize> {
        let usable = |i: usize| tried & (1 << i) == 0 && self.servers[i].is_up(now);
        [&self.primaries, &self.backups].into_iter().find_map(|group| match self.balance {
            Balance::RoundRobin => group.next(usable),
            Balance::Hash => self.by_hash(group, key, usable),
        })
    }

    /// Weighted rendezvous hashing: the usable member with the highest `weight / -ln(u)`, `u` a
    /// uniform draw from the key and the server's seed.
    fn by_hash(&self, group: &Schedule, key: &CacheKey, usable: impl Fn(usize) -> bool) -> Option<usize> {
        let mut k = [0u8; 8];
        k.copy_from_slice(&key.as_bytes()[..8]);
        let k = u64::from_le_bytes(k);
        let mut best: Option<(f64, usize)> = None;
        for &m in group.members.iter() {
            let i = usize::from(m);
            if !usable(i) {
                continue;
            }
            let s = &self.servers[i];
            let u = ((mix(k ^ s.seed) >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
            let score = f64::from(s.weight) / -u.ln();
            if best.is_none_or(|(b, _)| score > b) {
                best = Some((score, i));
            }
        }
        best.map(|(_, i)| i)
    }

    /// A request to server `i` failed: counted, and the server ejected at `eject_after` in a row.
    fn failed(&self, i: usize, now: Millis) {
        let s = &self.servers[i];
        s.stats.failed.fetch_add(1, Ordering::Relaxed);
        if !self.passive {
            return;
        }
        let n = s.health.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= self.eject_after {
            // One more failure after the ejection ends takes it out again.
            s.health.failures.store(self.eject_after - 1, Ordering::Relaxed);
            s.health.ejected_until.store(now.saturating_add(self.eject_for), Ordering::Relaxed);
            s.stats.ejections.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(server = %s.url, failures = n, eject_for_ms = self.eject_for, "origin server ejected");
            self.changed();
        }
    }

    /// Tells the watchers of [`changes`](OriginPool::changes).
    pub(super) fn changed(&self) {
        self.changes.send_modify(|n| *n += 1);
    }

    /// A receiver that sees a new value after every health check round and every change of a
    /// server's state.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// The servers, in configured order.
    pub fn servers(&self) -> &[Server] {
        &self.servers
    }

    /// Whether server `i` gets requests now.
    pub fn is_up(&self, i: usize) -> bool {
        self.servers[i].is_up(self.clock.now_millis())
    }

    /// Runs one round of active checks now (every server at once) and waits for it.
    pub async fn check_now(&self) {
        super::health::round(self).await
    }
}

impl Server {
    fn is_up(&self, now: Millis) -> bool {
        !self.health.down.load(Ordering::Relaxed) && now >= self.health.ejected_until.load(Ordering::Relaxed)
    }

    /// Its URL as configured.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Its counters.
    pub fn stats(&self) -> &ServerStats {
        &self.stats
    }

    /// The client to it (its authority, its TLS server name).
    pub fn upstream(&self) -> &Upstream {
        &self.upstream
    }
}

impl Health {
    /// Records a check result; true when it changed the verdict. Down once `threshold` of the
    /// last `window` checks failed; up again once `threshold` of them passed. When both could
    /// hold (a window of at least twice the threshold), the verdict stays as it is.
    pub(super) fn record(&self, passed: bool, window: u32, threshold: u32) -> bool {
        let mut w = self.window.lock().unwrap_or_else(PoisonError::into_inner);
        let mask = if window >= 64 { u64::MAX } else { (1u64 << window) - 1 };
        w.0 = ((w.0 << 1) | u64::from(passed)) & mask;
        w.1 = (w.1 + 1).min(window);
        let passes = w.0.count_ones();
        let failures = w.1 - passes;
        let down = self.down.load(Ordering::Relaxed);
        let now_down = if down { passes < threshold } else { failures >= threshold };
        if passed {
            // A server that answers its check is no longer out for earlier failed requests.
            self.failures.store(0, Ordering::Relaxed);
            self.ejected_until.store(0, Ordering::Relaxed);
        }
        self.down.store(now_down, Ordering::Relaxed);
        now_down != down
    }
}

impl Schedule {
    /// The smooth weighted round robin order of `members` (index, weight): every member appears
    /// `weight / gcd` times, spread out.
    fn new(members: &[(u16, u32)]) -> Schedule {
        let g = members.iter().fold(0, |g, &(_, w)| gcd(g, w)).max(1);
        let weights: Vec<i64> = members.iter().map(|&(_, w)| i64::from(w / g)).collect();
        let total: i64 = weights.iter().sum();
        let mut current = vec![0i64; members.len()];
        let mut order = Vec::with_capacity(total as usize);
        for _ in 0..total {
            for (c, w) in current.iter_mut().zip(&weights) {
                *c += w;
            }
            let (pick, _) = current.iter().enumerate().max_by_key(|&(i, c)| (*c, -(i as i64))).expect("members");
            current[pick] -= total;
            order.push(members[pick].0);
        }
        Schedule { order: order.into(), members: members.iter().map(|&(i, _)| i).collect(), next: AtomicUsize::new(0) }
    }

    /// The next member in the order that is `usable`.
    fn next(&self, usable: impl Fn(usize) -> bool) -> Option<usize> {
        let len = self.order.len();
        if len == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..len).map(|k| usize::from(self.order[(start + k) % len])).find(|&i| usable(i))
    }
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// FNV-1a: a server's place on the hash from its URL, the same on every node.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
}

/// SplitMix64's finalizer: every output bit depends on every input bit.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_smooth_order_spreads_each_server_by_its_weight() {
        let s = Schedule::new(&[(0, 5), (1, 1), (2, 1)]);
        assert_eq!(&*s.order, &[0, 0, 1, 0, 2, 0, 0]);
        let s = Schedule::new(&[(0, 2), (1, 4)]);
        assert_eq!(&*s.order, &[1, 0, 1]);
    }

    #[test]
    fn round_robin_skips_what_is_not_usable() {
        let s = Schedule::new(&[(0, 1), (1, 1)]);
        let picks: Vec<_> = (0..4).map(|_| s.next(|i| i != 1).unwrap()).collect();
        assert_eq!(picks, [0, 0, 0, 0]);
        assert_eq!(s.next(|_| false), None);
    }

    #[test]
    fn a_window_decides_down_and_up_by_its_threshold() {
        let h = Health::default();
        assert!(!h.record(false, 5, 3), "one failure of three needed");
        assert!(!h.record(false, 5, 3));
        assert!(h.record(false, 5, 3), "the third failure takes it down");
        assert!(!h.record(true, 5, 3));
        assert!(!h.record(true, 5, 3), "two passes of three needed");
        assert!(h.record(true, 5, 3), "the third pass brings it up");
    }
}
