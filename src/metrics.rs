//! Metrics in the Prometheus text format: what the proxy did per request (outcome, reason,
//! duration, bytes), what it asked the origin, what the tiers hold and evict, and what the
//! shared tier, the listener and reloads did.
//!
//! Every handle is resolved once, when [`Metrics`] is made: a label set is an index into an
//! array (by [`Outcome`], by [`Detail`], by source ...), so recording is an atomic add or a
//! histogram bucket, never a lookup. Values that already live elsewhere (the shared tier's
//! counters, the listener's) are read when the metrics are rendered.
//!
//! Names: prefix `edgecache_`, base units (seconds, bytes), `_total` on counters.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::clock::Millis;
use crate::server::ServerStats;
use crate::status::{Detail, Failure, NotStored, Outcome, Stale};
use crate::store::shared::Stats as SharedStats;
use crate::upstream::UpstreamError;

pub mod history;

/// One label.
type Label = [(&'static str, &'static str); 1];

/// Where the bytes of a response came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A stored response (memory or shared tier).
    Store,
    /// The origin (streamed or through a fill).
    Origin,
    /// The proxy itself (its own error answers).
    Local,
}

impl Source {
    const ALL: [Source; 3] = [Source::Store, Source::Origin, Source::Local];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Store => "store",
            Source::Origin => "origin",
            Source::Local => "local",
        }
    }

    /// Where the body of a request with `outcome` came from.
    pub fn of(outcome: Outcome) -> Source {
        match outcome {
            Outcome::Hit
            | Outcome::SharedHit
            | Outcome::StaleWhileRevalidate
            | Outcome::StaleIfError
            | Outcome::Revalidated => Source::Store,
            Outcome::Miss | Outcome::Collapsed | Outcome::StaleRefetch | Outcome::RequestRefetch | Outcome::Bypass => {
                Source::Origin
            }
            Outcome::Local => Source::Local,
        }
    }
}

/// Why a request to the origin failed, as counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OriginError {
    /// No connection could be made (refused, handshake failed).
    Connect,
    /// No connection or no response head in time.
    Timeout,
    /// A connection failed after it was made (reset, closed early).
    Reset,
    /// Every allowed connection stayed busy for `timeouts.origin_queue`.
    Busy,
    /// The answer was not a response to the request.
    Invalid,
    /// The origin answered with a server error.
    Status5xx,
    /// The TLS handshake with the origin failed (certificate not trusted, name not matching).
    Tls,
    /// Every server of the site was down: nothing was sent.
    Down,
}

impl OriginError {
    const ALL: [OriginError; 8] = [
        OriginError::Connect,
        OriginError::Timeout,
        OriginError::Reset,
        OriginError::Busy,
        OriginError::Invalid,
        OriginError::Status5xx,
        OriginError::Tls,
        OriginError::Down,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            OriginError::Connect => "connect",
            OriginError::Timeout => "timeout",
            OriginError::Reset => "reset",
            OriginError::Busy => "busy",
            OriginError::Invalid => "invalid",
            OriginError::Status5xx => "5xx",
            OriginError::Tls => "tls",
            OriginError::Down => "down",
        }
    }

    /// The kind of a failed request to the origin; `None` when the origin is not to blame (the
    /// client's body failed, or the fetch waited for was dropped).
    pub fn of(e: &UpstreamError) -> Option<OriginError> {
        match e {
            UpstreamError::Unreachable(_) => Some(OriginError::Connect),
            UpstreamError::Reset(_) => Some(OriginError::Reset),
            UpstreamError::Timeout => Some(OriginError::Timeout),
            UpstreamError::Busy => Some(OriginError::Busy),
            UpstreamError::Invalid(_) => Some(OriginError::Invalid),
            UpstreamError::Tls(_) => Some(OriginError::Tls),
            UpstreamError::Down => Some(OriginError::Down),
            UpstreamError::ClientBodyTimeout | UpstreamError::ClientBody(_) | UpstreamError::Abandoned => None,
        }
    }
}

/// Why an object left the memory tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eviction {
    /// Pushed out by the byte budget while still useful.
    Size,
    /// Pushed out by the byte budget (or a resize) after its useful life had ended.
    Expired,
    /// Removed on purpose: invalidation, purge, or dropped after missed invalidations.
    Purged,
}

impl Eviction {
    const ALL: [Eviction; 3] = [Eviction::Size, Eviction::Expired, Eviction::Purged];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Eviction::Size => "size",
            Eviction::Expired => "expired",
            Eviction::Purged => "purged",
        }
    }
}

/// Why a stale response was served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StaleServed {
    /// `stale-while-revalidate`: served while one background revalidation runs.
    WhileRevalidate,
    /// `stale-if-error` from the response or the request allowed it when the origin failed.
    IfError,
    /// Only `stale.grace` allowed it when the origin failed.
    Grace,
}

impl StaleServed {
    const ALL: [StaleServed; 3] = [StaleServed::WhileRevalidate, StaleServed::IfError, StaleServed::Grace];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            StaleServed::WhileRevalidate => Stale::WhileRevalidate.as_str(),
            StaleServed::IfError => Stale::IfError.as_str(),
            StaleServed::Grace => "grace",
        }
    }
}

/// The result of a configuration reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadResult {
    /// The new configuration is in use.
    Ok,
    /// The file was refused; the running configuration stays.
    Invalid,
}

impl ReloadResult {
    const ALL: [ReloadResult; 2] = [ReloadResult::Ok, ReloadResult::Invalid];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ReloadResult::Ok => "ok",
            ReloadResult::Invalid => "invalid",
        }
    }
}

/// Every reason word, in the order of [`detail_index`].
pub const DETAILS: [Detail; 28] = [
    Detail::NotStored(NotStored::NoStore),
    Detail::NotStored(NotStored::RequestNoStore),
    Detail::NotStored(NotStored::Private),
    Detail::NotStored(NotStored::SetCookie),
    Detail::NotStored(NotStored::VaryStar),
    Detail::NotStored(NotStored::TooLarge),
    Detail::NotStored(NotStored::Authorization),
    Detail::NotStored(NotStored::Status),
    Detail::NotStored(NotStored::NoFreshness),
    Detail::NotStored(NotStored::Method),
    Detail::NotStored(NotStored::RequestBody),
    Detail::NotStored(NotStored::Partial),
    Detail::NotStored(NotStored::Precondition),
    Detail::NotStored(NotStored::Incomplete),
    Detail::Stale(Stale::WhileRevalidate),
    Detail::Stale(Stale::IfError),
    Detail::Failure(Failure::BadRequest),
    Detail::Failure(Failure::RequestTimeout),
    Detail::Failure(Failure::MethodNotAllowed),
    Detail::Failure(Failure::OnlyIfCached),
    Detail::Failure(Failure::OriginUnreachable),
    Detail::Failure(Failure::OriginTimeout),
    Detail::Failure(Failure::OriginBusy),
    Detail::Failure(Failure::OriginInvalid),
    Detail::NotStored(NotStored::Rule),
    Detail::Failure(Failure::OriginTls),
    Detail::Failure(Failure::OriginDown),
    Detail::Failure(Failure::Misdirected),
];

/// The place of `d` in [`DETAILS`]. An exhaustive match: a new reason does not compile until it
/// has a place.
pub fn detail_index(d: Detail) -> usize {
    match d {
        Detail::NotStored(r) => match r {
            NotStored::NoStore => 0,
            NotStored::RequestNoStore => 1,
            NotStored::Private => 2,
            NotStored::SetCookie => 3,
            NotStored::VaryStar => 4,
            NotStored::TooLarge => 5,
            NotStored::Authorization => 6,
            NotStored::Status => 7,
            NotStored::NoFreshness => 8,
            NotStored::Method => 9,
            NotStored::RequestBody => 10,
            NotStored::Partial => 11,
            NotStored::Precondition => 12,
            NotStored::Incomplete => 13,
            NotStored::Rule => 24,
        },
        Detail::Stale(r) => match r {
            Stale::WhileRevalidate => 14,
            Stale::IfError => 15,
        },
        Detail::Failure(r) => match r {
            Failure::BadRequest => 16,
            Failure::RequestTimeout => 17,
            Failure::MethodNotAllowed => 18,
            Failure::OnlyIfCached => 19,
            Failure::OriginUnreachable => 20,
            Failure::OriginTimeout => 21,
            Failure::OriginBusy => 22,
            Failure::OriginInvalid => 23,
            Failure::OriginTls => 25,
            Failure::OriginDown => 26,
            Failure::Misdirected => 27,
        },
    }
}

/// The kind of reason a detail word is.
fn detail_kind(d: Detail) -> &'static str {
    match d {
        Detail::NotStored(_) => "not-stored",
        Detail::Stale(_) => "stale",
        Detail::Failure(_) => "failure",
    }
}

/// Upper bounds of the request duration buckets, in seconds: 100 µs to 10 s.
const REQUEST_BUCKETS: [f64; 16] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
/// Upper bounds of the origin latency buckets, in seconds: 1 ms to 30 s.
const ORIGIN_BUCKETS: [f64; 14] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
/// Upper bounds of the shared tier's call latency buckets, in seconds: 100 µs to 1 s.
const SHARED_BUCKETS: [f64; 10] = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1.0];

fn request_histogram() -> Histogram {
    Histogram::new(REQUEST_BUCKETS)
}

fn origin_histogram() -> Histogram {
    Histogram::new(ORIGIN_BUCKETS)
}

/// What the status page and `/ready` need about the origin that a counter does not say.
#[derive(Debug, Default)]
pub struct OriginHealth {
    /// When the origin last answered with a response head, or accepted the connection `/ready`
    /// tries when it has not (clock milliseconds; 0: never).
    pub last_reachable: AtomicU64,
    /// When a request to it last failed (0: never).
    pub last_failure: AtomicU64,
    /// Sum of the latencies of its answers, in microseconds, and their number: a mean per
    /// minute for the status page (the histogram's sum is not readable).
    pub latency_us: AtomicU64,
    /// Answers counted in `latency_us`.
    pub answers: AtomicU64,
}

/// A reload as the status page lists it.
#[derive(Debug, Clone)]
pub struct ReloadRecord {
    /// When (clock milliseconds).
    pub at: Millis,
    /// What came of it.
    pub result: ReloadResult,
    /// What triggered it (`SIGHUP`, `POST /reload` ...).
    pub trigger: String,
    /// What changed, or every bad field.
    pub summary: Vec<String>,
}

/// Reloads kept for the status page.
const RELOADS_KEPT: usize = 10;

/// The memory tier's figures, read when the metrics are rendered.
#[derive(Debug, Default, Clone, Copy)]
pub struct TierFigures {
    /// URLs stored.
    pub objects: u64,
    /// Bytes counted against the budget.
    pub bytes: u64,
    /// The budget.
    pub budget: u64,
}

/// Every metric of one proxy process, with its handles resolved.
pub struct Metrics {
    registry: Registry,
    requests: Vec<Counter>,
    durations: Vec<Histogram>,
    reasons: Vec<Counter>,
    bytes: Vec<Counter>,
    origin_requests: Vec<Counter>,
    origin_errors: Vec<Counter>,
    origin_seconds: Histogram,
    evictions: Vec<Counter>,
    coalesced: Counter,
    hit_for_pass_marked: Counter,
    hit_for_pass_passed: Counter,
    stale: Vec<Counter>,
    shared_call_seconds: Histogram,
    reloads: Vec<Counter>,
    reload_problems: Gauge,
    memory_objects: Gauge,
    memory_bytes: Gauge,
    memory_budget: Gauge,
    shared_breaker_open: Gauge,
    shared_connected: Gauge,
    /// The shared tier's counters (kept across reloads that restart the tier).
    pub shared: Arc<SharedStats>,
    /// The client listener's counters.
    pub server: Arc<ServerStats>,
    /// The origin's last answer and failure.
    pub origin: OriginHealth,
    /// The last reloads, newest last.
    reload_log: Mutex<Vec<ReloadRecord>>,
    /// Per-minute points for the status page.
    pub history: history::History,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// The counter of every label value in `values`, registered as one family.
fn counters<T: Copy>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    label: &'static str,
    values: &[T],
    word: impl Fn(T) -> &'static str,
) -> Vec<Counter> {
    let family = Family::<Label, Counter>::default();
    registry.register(name, help, family.clone());
    values.iter().map(|v| family.get_or_create_owned(&[(label, word(*v))])).collect()
}

fn gauge(registry: &mut Registry, name: &str, help: &str) -> Gauge {
    let g = Gauge::default();
    registry.register(name, help, g.clone());
    g
}

fn counter(registry: &mut Registry, name: &str, help: &str) -> Counter {
    let c = Counter::default();
    registry.register(name, help, c.clone());
    c
}

impl Metrics {
    /// Every metric registered, at zero.
    pub fn new() -> Self {
        let mut r = Registry::with_prefix("edgecache");
        let requests = counters(
            &mut r,
            "requests",
            "Requests answered, by cache outcome (the Cache-Status word)",
            "outcome",
            &Outcome::ALL,
            Outcome::as_str,
        );
        let durations_family =
            Family::<Label, Histogram, fn() -> Histogram>::new_with_constructor(request_histogram as fn() -> Histogram);
        r.register(
            "request_duration_seconds",
            "Time from the request's arrival to the end of its response body, by cache outcome",
            durations_family.clone(),
        );
        let durations =
            Outcome::ALL.iter().map(|o| durations_family.get_or_create_owned(&[("outcome", o.as_str())])).collect();
        let reasons_family = Family::<[(&'static str, &'static str); 2], Counter>::default();
        r.register(
            "request_reasons",
            "Requests whose Cache-Status named a reason (detail=), by reason and its kind",
            reasons_family.clone(),
        );
        let reasons = DETAILS
            .iter()
            .map(|d| reasons_family.get_or_create_owned(&[("reason", d.as_str()), ("kind", detail_kind(*d))]))
            .collect();
        let bytes = counters(
            &mut r,
            "response_bytes",
            "Response body bytes sent to clients, by source",
            "source",
            &Source::ALL,
            Source::as_str,
        );
        let origin_requests = counters(
            &mut r,
            "origin_requests",
            "Responses from the origin, by status class",
            "class",
            &["1xx", "2xx", "3xx", "4xx", "5xx"],
            |c| c,
        );
        let origin_errors = counters(
            &mut r,
            "origin_errors",
            "Failed origin requests, by kind (5xx: answered with a server error)",
            "kind",
            &OriginError::ALL,
            OriginError::as_str,
        );
        let origin_seconds = origin_histogram();
        r.register(
            "origin_response_seconds",
            "Time from sending a request to the origin to its response head",
            origin_seconds.clone(),
        );
        let evictions = counters(
            &mut r,
            "evictions",
            "Objects that left the memory tier, by cause",
            "cause",
            &Eviction::ALL,
            Eviction::as_str,
        );
        let coalesced =
            counter(&mut r, "coalesced_waiters", "Requests that joined another request's origin fetch of the same URL");
        let hit_for_pass_marked =
            counter(&mut r, "hit_for_pass_marked", "URLs marked hit-for-pass (their response could not be shared)");
        let hit_for_pass_passed = counter(
            &mut r,
            "hit_for_pass_requests",
            "Requests sent straight to the origin because their URL was marked hit-for-pass",
        );
        let stale = counters(
            &mut r,
            "stale_served",
            "Stale responses served, by reason",
            "reason",
            &StaleServed::ALL,
            StaleServed::as_str,
        );
        let shared_call_seconds = Histogram::new(SHARED_BUCKETS);
        r.register(
            "shared_call_seconds",
            "Time of each call to the shared tier (Redis), within redis.budget",
            shared_call_seconds.clone(),
        );
        let reloads = counters(
            &mut r,
            "reloads",
            "Configuration reloads, by result",
            "result",
            &ReloadResult::ALL,
            ReloadResult::as_str,
        );
        let reload_problems =
            gauge(&mut r, "reload_problems", "Bad fields in the last configuration file refused (0 after a good one)");
        let memory_objects = gauge(&mut r, "memory_objects", "URLs stored in the memory tier");
        let memory_bytes = gauge(&mut r, "memory_bytes", "Bytes the memory tier counts against its budget");
        let memory_budget = gauge(&mut r, "memory_budget_bytes", "The memory tier's budget (cache.memory)");
        let shared_breaker_open =
            gauge(&mut r, "shared_breaker_open", "1 while the shared tier's circuit breaker is open (calls skipped)");
        let shared_connected =
            gauge(&mut r, "shared_connected", "1 while the shared tier has a connection; absent without [redis]");
        let info = Family::<[(&'static str, &'static str); 1], Gauge>::default();
        r.register("build_info", "Always 1; the version as a label", info.clone());
        info.get_or_create(&[("version", env!("CARGO_PKG_VERSION"))]).set(1);
        let shared = Arc::new(SharedStats::default());
        let server = Arc::new(ServerStats::default());
        r.register_collector(Box::new(Live { shared: shared.clone(), server: server.clone() }));
        Metrics {
            registry: r,
            requests,
            durations,
            reasons,
            bytes,
            origin_requests,
            origin_errors,
            origin_seconds,
            evictions,
            coalesced,
            hit_for_pass_marked,
            hit_for_pass_passed,
            stale,
            shared_call_seconds,
            reloads,
            reload_problems,
            memory_objects,
            memory_bytes,
            memory_budget,
            shared_breaker_open,
            shared_connected,
            shared,
            server,
            origin: OriginHealth::default(),
            reload_log: Mutex::new(Vec::new()),
            history: history::History::default(),
        }
    }

    /// One request answered: its outcome, its reason, the body bytes sent and how long it took.
    pub fn request(&self, outcome: Outcome, detail: Option<Detail>, bytes: u64, took: Duration) {
        let i = outcome as usize;
        self.requests[i].inc();
        if let Some(d) = detail {
            self.reasons[detail_index(d)].inc();
        }
        if bytes > 0 {
            self.bytes[Source::of(outcome) as usize].inc_by(bytes);
        }
        self.durations[i].observe(took.as_secs_f64());
    }

    /// Requests answered with `outcome` so far.
    pub fn requests(&self, outcome: Outcome) -> u64 {
        self.requests[outcome as usize].get()
    }

    /// Requests whose reason was `d` so far.
    pub fn reasons(&self, d: Detail) -> u64 {
        self.reasons[detail_index(d)].get()
    }

    /// Body bytes sent from `source` so far.
    pub fn bytes(&self, source: Source) -> u64 {
        self.bytes[source as usize].get()
    }

    /// The origin answered with `status` after `took`, at `now`.
    pub fn origin_answered(&self, status: http::StatusCode, took: Duration, now: Millis) {
        let class = (status.as_u16() / 100).clamp(1, 5) as usize - 1;
        self.origin_requests[class].inc();
        if status.is_server_error() {
            self.origin_errors[OriginError::Status5xx as usize].inc();
            self.origin.last_failure.store(now, Ordering::Relaxed);
        }
        self.origin_seconds.observe(took.as_secs_f64());
        self.origin.last_reachable.store(now, Ordering::Relaxed);
        self.origin.latency_us.fetch_add(took.as_micros() as u64, Ordering::Relaxed);
        self.origin.answers.fetch_add(1, Ordering::Relaxed);
    }

    /// A request to the origin failed at `now`.
    pub fn origin_failed(&self, e: &UpstreamError, now: Millis) {
        if let Some(kind) = OriginError::of(e) {
            self.origin_errors[kind as usize].inc();
            self.origin.last_failure.store(now, Ordering::Relaxed);
        }
    }

    /// Origin responses of status class `class` (1 to 5) so far.
    pub fn origin_requests(&self, class: u16) -> u64 {
        self.origin_requests[usize::from(class.clamp(1, 5)) - 1].get()
    }

    /// Origin failures of `kind` so far.
    pub fn origin_errors(&self, kind: OriginError) -> u64 {
        self.origin_errors[kind as usize].get()
    }

    /// The handle counting evictions for `cause`.
    pub fn eviction_counter(&self, cause: Eviction) -> Counter {
        self.evictions[cause as usize].clone()
    }

    /// Objects evicted for `cause` so far.
    pub fn evictions(&self, cause: Eviction) -> u64 {
        self.evictions[cause as usize].get()
    }

    /// A request joined another's origin fetch.
    pub fn coalesced(&self) {
        self.coalesced.inc();
    }

    /// Coalesced waiters so far.
    pub fn coalesced_waiters(&self) -> u64 {
        self.coalesced.get()
    }

    /// A URL was marked hit-for-pass.
    pub fn hit_for_pass_marked(&self) {
        self.hit_for_pass_marked.inc();
    }

    /// A request went to the origin alone because its URL is marked hit-for-pass.
    pub fn hit_for_pass_passed(&self) {
        self.hit_for_pass_passed.inc();
    }

    /// Requests passed because of hit-for-pass so far.
    pub fn hit_for_pass_requests(&self) -> u64 {
        self.hit_for_pass_passed.get()
    }

    /// A stale response was served, for `why`.
    pub fn stale_served(&self, why: StaleServed) {
        self.stale[why as usize].inc();
    }

    /// Stale responses served for `why` so far.
    pub fn stale(&self, why: StaleServed) -> u64 {
        self.stale[why as usize].get()
    }

    /// The histogram of the shared tier's call times.
    pub fn shared_call_seconds(&self) -> Histogram {
        self.shared_call_seconds.clone()
    }

    /// A reload at `at`, triggered by `trigger`: its result and what changed (or every bad field).
    pub fn reloaded(&self, at: Millis, result: ReloadResult, trigger: &str, summary: Vec<String>) {
        self.reloads[result as usize].inc();
        let problems = if result == ReloadResult::Invalid { summary.len() as i64 } else { 0 };
        self.reload_problems.set(problems);
        let mut log = self.reload_log.lock().unwrap_or_else(|e| e.into_inner());
        if log.len() == RELOADS_KEPT {
            log.remove(0);
        }
        log.push(ReloadRecord { at, result, trigger: trigger.to_string(), summary });
    }

    /// Reloads with `result` so far.
    pub fn reloads(&self, result: ReloadResult) -> u64 {
        self.reloads[result as usize].get()
    }

    /// The last reloads, newest last.
    pub fn reload_log(&self) -> Vec<ReloadRecord> {
        self.reload_log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Sets the gauges read from the tiers: the memory tier's figures, and the shared tier's
    /// state when there is one (`None`: no shared tier).
    pub fn set_tiers(&self, memory: TierFigures, shared: Option<SharedState>) {
        self.memory_objects.set(memory.objects as i64);
        self.memory_bytes.set(memory.bytes as i64);
        self.memory_budget.set(memory.budget as i64);
        let (connected, open) = match shared {
            Some(s) => (i64::from(s.connected), i64::from(s.breaker_open)),
            None => (0, 0),
        };
        self.shared_connected.set(connected);
        self.shared_breaker_open.set(open);
    }

    /// Every metric in the Prometheus text format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(16 << 10);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        out
    }
}

/// The `Content-Type` of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The shared tier's state, as the gauges show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedState {
    /// A connection is established.
    pub connected: bool,
    /// The circuit breaker is open.
    pub breaker_open: bool,
}

/// Counters kept elsewhere as atomics, read at each render.
#[derive(Debug)]
struct Live {
    shared: Arc<SharedStats>,
    server: Arc<ServerStats>,
}

fn encode_counter(e: &mut DescriptorEncoder, name: &str, help: &str, v: &AtomicU64) -> Result<(), std::fmt::Error> {
    let c = ConstCounter::new(v.load(Ordering::Relaxed));
    let m = e.encode_descriptor(name, help, None, c.metric_type())?;
    c.encode(m)
}

impl Collector for Live {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = &self.shared;
        encode_counter(&mut e, "shared_hits", "Shared tier lookups that found a usable value", &s.hits)?;
        encode_counter(&mut e, "shared_misses", "Shared tier lookups that found nothing", &s.misses)?;
        encode_counter(&mut e, "shared_errors", "Shared tier calls that failed or ran past redis.budget", &s.errors)?;
        encode_counter(
            &mut e,
            "shared_skipped",
            "Shared tier calls skipped while the breaker was open or unconnected",
            &s.skipped,
        )?;
        encode_counter(
            &mut e,
            "shared_bad_values",
            "Shared tier values refused (other version, other key, corrupt)",
            &s.bad_values,
        )?;
        encode_counter(&mut e, "shared_writes", "Writes to the shared tier completed", &s.writes)?;
        encode_counter(
            &mut e,
            "shared_dropped_writes",
            "Writes to the shared tier dropped (queue full, breaker open, failed)",
            &s.dropped_writes,
        )?;
        encode_counter(
            &mut e,
            "shared_invalidations_applied",
            "Invalidations from other nodes applied to the memory tier",
            &s.remote_invalidations,
        )?;
        let v = &self.server;
        let open = ConstGauge::new(v.open.load(Ordering::Relaxed) as i64);
        let m = e.encode_descriptor("connections_open", "Client connections open now", None, open.metric_type())?;
        open.encode(m)?;
        encode_counter(&mut e, "connections_accepted", "Client connections accepted", &v.accepted)?;
        encode_counter(
            &mut e,
            "connections_at_limit",
            "Times the listener stopped accepting at limits.max_connections",
            &v.at_limit,
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_its_own_place() {
        for (i, d) in DETAILS.iter().enumerate() {
            assert_eq!(detail_index(*d), i, "{}", d.as_str());
        }
        for (i, o) in Outcome::ALL.iter().enumerate() {
            assert_eq!(*o as usize, i, "{}", o.as_str());
        }
        for (i, s) in Source::ALL.iter().enumerate() {
            assert_eq!(*s as usize, i);
        }
        for (i, k) in OriginError::ALL.iter().enumerate() {
            assert_eq!(*k as usize, i);
        }
        for (i, k) in Eviction::ALL.iter().enumerate() {
            assert_eq!(*k as usize, i);
        }
        for (i, k) in StaleServed::ALL.iter().enumerate() {
            assert_eq!(*k as usize, i);
        }
        for (i, k) in ReloadResult::ALL.iter().enumerate() {
            assert_eq!(*k as usize, i);
        }
    }

    #[test]
    fn a_request_is_counted_by_outcome_reason_source_and_duration() {
        let m = Metrics::new();
        m.request(Outcome::Miss, Some(NotStored::Private.into()), 1024, Duration::from_micros(300));
        m.request(Outcome::Hit, None, 10, Duration::from_micros(50));
        let text = m.render();
        for line in [
            "edgecache_requests_total{outcome=\"miss\"} 1",
            "edgecache_requests_total{outcome=\"hit\"} 1",
            "edgecache_requests_total{outcome=\"collapsed\"} 0",
            "edgecache_request_reasons_total{reason=\"private\",kind=\"not-stored\"} 1",
            "edgecache_response_bytes_total{source=\"origin\"} 1024",
            "edgecache_response_bytes_total{source=\"store\"} 10",
            "edgecache_request_duration_seconds_bucket{outcome=\"miss\",le=\"0.0005\"} 1",
            "edgecache_request_duration_seconds_bucket{outcome=\"miss\",le=\"0.00025\"} 0",
            "edgecache_request_duration_seconds_count{outcome=\"hit\"} 1",
            "edgecache_build_info{version=\"",
            "# TYPE edgecache_shared_hits_total counter",
            "edgecache_connections_open 0",
        ] {
            assert!(text.contains(line), "{line:?} missing from\n{text}");
        }
    }

    #[test]
    fn origin_answers_and_failures_are_counted_by_class_and_kind() {
        let m = Metrics::new();
        m.origin_answered(http::StatusCode::OK, Duration::from_millis(3), 1_000);
        m.origin_answered(http::StatusCode::BAD_GATEWAY, Duration::from_millis(3), 2_000);
        m.origin_failed(&UpstreamError::Timeout, 3_000);
        m.origin_failed(&UpstreamError::ClientBodyTimeout, 4_000);
        assert_eq!(m.origin_requests(2), 1);
        assert_eq!(m.origin_requests(5), 1);
        assert_eq!(m.origin_errors(OriginError::Status5xx), 1);
        assert_eq!(m.origin_errors(OriginError::Timeout), 1);
        assert_eq!(m.origin.last_reachable.load(Ordering::Relaxed), 2_000);
        assert_eq!(
            m.origin.last_failure.load(Ordering::Relaxed),
            3_000,
            "the client's body is not the origin's failure"
        );
        let text = m.render();
        assert!(text.contains("edgecache_origin_errors_total{kind=\"timeout\"} 1"), "{text}");
        assert!(text.contains("edgecache_origin_response_seconds_count 2"), "{text}");
    }

    #[test]
    fn a_refused_reload_reports_its_problems_and_a_good_one_clears_them() {
        let m = Metrics::new();
        m.reloaded(1, ReloadResult::Invalid, "test", vec!["a: bad".into(), "b: bad".into()]);
        assert!(m.render().contains("edgecache_reload_problems 2"));
        m.reloaded(2, ReloadResult::Ok, "test", vec![]);
        let text = m.render();
        assert!(text.contains("edgecache_reload_problems 0"), "{text}");
        assert!(text.contains("edgecache_reloads_total{result=\"invalid\"} 1"), "{text}");
        assert_eq!(m.reload_log().len(), 2);
    }
}
