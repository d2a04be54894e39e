//! Shared helpers for the integration tests: an in-process origin that counts and records what
//! it receives, a raw-TCP origin for byte-exact misbehaviour, the proxy started in-process on a
//! `ManualClock`, a small HTTP client and a raw-TCP client.
//!
//! Everything binds `127.0.0.1:0`; every wait is bounded by [`WAIT`].
//!
//! Every test file is a crate of its own that compiles this module, and uses only some of it.
//! Each declares it `pub mod common;`: its items are then the test crate's public items, which the
//! dead-code lint does not flag in the test files that do not use them. A helper no test file
//! uses is not flagged either: remove it with its last use.

mod client;
pub mod memcached;
mod origin;
pub mod redis;
pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use edgecache::clock::{Clock, ManualClock};
use edgecache::{Config, Running};

pub use client::{raw_request, Client, RawResp, Resp, H2};
pub use origin::{closed_port, Origin, RawOrigin, RawRequest, Reply, Seen};

/// Upper bound of every wait in the tests.
pub const WAIT: Duration = Duration::from_secs(10);

/// The instant every test clock starts at: a whole second, so `Date` (second precision) equals
/// the clock exactly and `Age` / `ttl` values are exact.
pub const T0_SECS: u64 = 1_700_000_000;

/// A manual clock stopped at [`T0_SECS`].
pub fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::at(UNIX_EPOCH + Duration::from_secs(T0_SECS)))
}

/// `clock` moved by `secs` (negative: in the past), as an HTTP date.
pub fn date_at(clock: &ManualClock, secs: i64) -> String {
    let now = clock.now();
    let t =
        if secs >= 0 { now + Duration::from_secs(secs as u64) } else { now - Duration::from_secs(secs.unsigned_abs()) };
    httpdate::fmt_http_date(t)
}

/// The IMF-fixdate `date` (as [`date_at`] gives) in RFC 9110 §5.6.7's two obsolete formats: RFC
/// 850 (`Sunday, 06-Nov-94 08:49:37 GMT`) and ANSI C's asctime() (`Sun Nov  6 08:49:37 1994`).
pub fn obsolete_dates(date: &str) -> [String; 2] {
    let (day, dd, mon, year, time) = (&date[..3], &date[5..7], &date[8..11], &date[12..16], &date[17..25]);
    let long = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
        .into_iter()
        .find(|d| d.starts_with(day))
        .expect("a day name");
    let day_of_month: u32 = dd.parse().expect("a day");
    [format!("{long}, {dd}-{mon}-{} {time} GMT", &year[2..]), format!("{day} {mon} {day_of_month:>2} {time} {year}")]
}

/// Advances `clock` by whole seconds.
pub fn advance(clock: &ManualClock, secs: u64) {
    clock.advance(Duration::from_secs(secs));
}

/// Runs `f` with the global bound [`WAIT`], panicking with `what` when it does not finish.
pub async fn within<F: Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(WAIT, f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {WAIT:?}: {what}"),
    }
}

/// Waits (bounded by [`WAIT`]) until `check` holds. `check` is async, so it can ask the proxy,
/// Redis or anything else; it is re-checked every millisecond. The last resort, for state that
/// announces no change (the proxy's tables and counters, Redis): where a change is announced,
/// wait on it instead ([`Origin::wait_count`], [`RawOrigin::wait_count`], a `watch` channel).
pub async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    within(what, async {
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while !check().await {
            tick.tick().await;
        }
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// The proxy
// ---------------------------------------------------------------------------------------------

/// The test configuration for a proxy in front of `origin`: loopback, port 0, no access log.
pub fn config_for(origin: SocketAddr) -> Config {
    let mut cfg = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        origin: edgecache::config::Origin::parse(&format!("http://{origin}")).unwrap(),
        ..Default::default()
    };
    cfg.log.access = false;
    cfg
}

/// Starts the proxy in front of `origin`, on `clock`, after `tweak` adjusted the configuration.
pub async fn start_proxy(origin: SocketAddr, clock: &Arc<ManualClock>, tweak: impl FnOnce(&mut Config)) -> Running {
    let mut cfg = config_for(origin);
    tweak(&mut cfg);
    let clock: Arc<dyn Clock> = clock.clone();
    edgecache::start(cfg, clock).await.expect("start proxy")
}

/// Starts the proxy configured by the TOML `text` on `clock`, on `127.0.0.1:0` without access
/// log, after `tweak` adjusted the configuration.
pub async fn start_proxy_toml(text: &str, clock: &Arc<ManualClock>, tweak: impl FnOnce(&mut Config)) -> Running {
    let mut cfg = Config::parse(text).unwrap_or_else(|e| panic!("test configuration: {e}"));
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    cfg.log.access = false;
    tweak(&mut cfg);
    let clock: Arc<dyn Clock> = clock.clone();
    edgecache::start(cfg, clock).await.expect("start proxy")
}

/// Number of URLs the proxy's memory tier holds.
pub fn stored_urls(p: &Running) -> u64 {
    p.proxy().memory().entry_count()
}

// ---------------------------------------------------------------------------------------------
// Shortcuts
// ---------------------------------------------------------------------------------------------

/// `Cache-Status` of a miss whose 200 was stored.
pub const MISS_STORED: &str = "edgecache; fwd=uri-miss; fwd-status=200; stored";

/// `Cache-Status` of a fresh hit with `ttl` seconds left.
pub fn hit(ttl: i64) -> String {
    format!("edgecache; hit; ttl={ttl}")
}

/// An origin answering with `handler`, a default proxy in front of it on `clock`, and a client.
pub async fn serve(
    clock: &Arc<ManualClock>,
    handler: impl Fn(&Seen, usize) -> Reply + Send + Sync + 'static,
) -> (Origin, Running, Client) {
    serve_with(clock, |_| {}, handler).await
}

/// As [`serve`], with the proxy's configuration adjusted by `tweak`.
pub async fn serve_with(
    clock: &Arc<ManualClock>,
    tweak: impl FnOnce(&mut Config),
    handler: impl Fn(&Seen, usize) -> Reply + Send + Sync + 'static,
) -> (Origin, Running, Client) {
    let origin = Origin::start(clock, handler).await;
    let proxy = start_proxy(origin.addr(), clock, tweak).await;
    let client = Client::new(proxy.addr());
    (origin, proxy, client)
}

/// Position of `needle` in `hay`.
pub(crate) fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
