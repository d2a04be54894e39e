//! The shared tier: a store beside the nodes of a fleet, as a second tier: Redis (standalone or
//! Cluster) or memcached (a list of servers). One tier with two stores: the budget, the circuit
//! breaker, the write queue, the [envelope](envelope), the TTLs and the size limit are the same
//! for both; what differs is how a URL's variants are kept and how other nodes hear of
//! invalidations and purges.
//!
//! # Guarantees
//!
//! - **Never in the way.** Every call is bounded by the budget (`redis.budget`,
//!   `memcached.budget`); past it the call counts as a miss. After consecutive failures a circuit
//!   breaker stops calling the store and probes again later (backing off up to 30 s). Connecting
//!   happens in the background: a store that is down, or that accepts connections and never
//!   answers, never delays startup or a request beyond the budget. The breaker's probes and the
//!   connection attempts wait on the proxy's [`Clock`].
//! - **Writes off the client's path.** Stores go through a bounded queue to one writer task that
//!   batches them; when the queue is full a write is dropped and counted, never waited for.
//! - **Checked reads.** Values are [envelopes](envelope) with a version and the canonical
//!   key; anything that does not decode is a miss and is counted.
//! - **Every key expires.** A URL's variants live in one hash `PREFIX:v1:{DIGEST}` (Redis; one
//!   hash tag per URL, so it works on Redis Cluster) or one versioned bundle `PREFIX:v1:DIGEST`
//!   (memcached), whose TTL is the longest useful life of its variants (freshness, stale windows
//!   and retention), capped by `ttl_cap`. The invalidation stream expires a day after its last
//!   entry; the record of purges `ttl_cap` after its last purge.
//! - **Fleet-wide invalidation, Redis.** An invalidation deletes the URL's hash and is appended to
//!   the stream `PREFIX:v1:invalidations`; every node reads the stream from its last position, so
//!   a node that was disconnected replays what it missed. If the stream was trimmed past that
//!   position (or Redis restarted empty), the node cannot know what it missed and marks
//!   everything it holds stale: each object is revalidated, and a 304 keeps it.
//! - **Fleet-wide invalidation, memcached** (which has no stream): an invalidation deletes the
//!   URL's bundle, so no node reads the object from memcached again; another node's memory copy
//!   is kept at most `memcached.memory_ttl`, the cap on every memory-tier lifetime while
//!   memcached is the shared tier. Purges are appended to a record every node reads every
//!   `memcached.memory_ttl` and applies as it would a purge from the Redis stream.
//! - **Purges are never lost.** An operator's purge ([`publish`](SharedTier::publish)) is applied
//!   to the store (and announced) by a task of its own that keeps it until the store takes it,
//!   however long the store is away (see `shared/publish.rs` for what is written).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use prometheus_client::metrics::histogram::Histogram;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use tokio::sync::Notify;

use super::entry::Entry;
use super::key::{frame_optional, frame_part, CacheKey};
use super::purge::{Purge, Purger};
use crate::clock::{Clock, Millis};
use crate::config::{MemcachedConfig, RedisConfig};

mod breaker;
mod conn;
pub mod envelope;
mod memcached;
mod publish;
mod stream;
mod writer;

use breaker::Breaker;
use conn::{connector, Conn};
use memcached::{records_reader, Memcached};
use publish::{publisher, Outbox, Outgoing};
use stream::invalidation_reader;
use writer::{writer, Write};

/// Counters of the shared tier, for logs, tests and metrics.
#[derive(Debug, Default)]
pub struct Stats {
    /// Lookups that found a usable value.
    pub hits: AtomicU64,
    /// Lookups that found nothing.
    pub misses: AtomicU64,
    /// Values that could not be decoded (other version, other key, corrupt).
    pub bad_values: AtomicU64,
    /// Calls that failed or ran past the budget.
    pub errors: AtomicU64,
    /// Calls skipped because the breaker was open.
    pub skipped: AtomicU64,
    /// Writes completed.
    pub writes: AtomicU64,
    /// Writes dropped (queue full, breaker open, or failed).
    pub dropped_writes: AtomicU64,
    /// Invalidations received from other nodes.
    pub remote_invalidations: AtomicU64,
    /// Purges received from other nodes and applied here.
    pub remote_purges: AtomicU64,
    /// Purges made here and published (written to Redis and the stream).
    pub published_purges: AtomicU64,
    /// Purges made here that Redis refused every time they were tried (a command error, not an
    /// outage), given up on.
    pub dropped_purges: AtomicU64,
    /// Stream messages of a format this build cannot read, skipped.
    pub unreadable_messages: AtomicU64,
    /// Times this node could not know which invalidations it missed, and marked everything stale.
    pub lost_track: AtomicU64,
}

/// What both stores share: how long a call may take, what is written and for how long.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    /// Time allowed to every call; past it the call is a miss.
    pub budget: Duration,
    /// Larger objects stay in memory only.
    pub max_object_bytes: u64,
    /// Prefix of every key.
    pub key_prefix: String,
    /// Upper bound of every key's TTL.
    pub ttl_cap: Duration,
    /// Writes waiting to be sent; beyond it writes are dropped (and counted).
    pub write_queue: usize,
    /// The cap on every memory-tier lifetime, when the store cannot tell other nodes of an
    /// invalidation (memcached).
    pub memory_ttl: Option<Duration>,
}

/// Where the shared tier keeps its objects.
enum Backend {
    /// Redis: the connection, made in the background.
    Redis(RedisBackend),
    /// Memcached: the servers.
    Memcached(Memcached),
}

struct RedisBackend {
    cfg: RedisConfig,
    conn: RwLock<Option<Conn>>,
}

/// The store the shared tier was started on, as configured (`[redis]` or `[memcached]`).
#[derive(Debug, Clone, PartialEq)]
pub enum TierConfig {
    /// `[redis]`.
    Redis(RedisConfig),
    /// `[memcached]`.
    Memcached(MemcachedConfig),
}

impl TierConfig {
    /// The shared tier `cfg` configures, if any (the file allows one of the two).
    pub fn of(cfg: &crate::config::Config) -> Option<TierConfig> {
        match (&cfg.redis, &cfg.memcached) {
            (Some(r), _) => Some(TierConfig::Redis(r.clone())),
            (None, Some(m)) => Some(TierConfig::Memcached(m.clone())),
            (None, None) => None,
        }
    }

    /// The upper bound of every key's TTL.
    pub fn ttl_cap(&self) -> Duration {
        match self {
            TierConfig::Redis(r) => r.ttl_cap,
            TierConfig::Memcached(m) => m.ttl_cap,
        }
    }
}

struct Inner {
    /// What it was started from.
    started: TierConfig,
    limits: Limits,
    backend: Backend,
    breaker: Mutex<Breaker>,
    stats: Arc<Stats>,
    /// Time of each call.
    call_seconds: Histogram,
    node: String,
    /// What the probe and the connector wait on between tries.
    clock: Arc<dyn Clock>,
    /// Woken when the tier becomes available (connected, or the breaker closed).
    up: Arc<Notify>,
}

/// A handle on the shared tier; cheap to clone.
#[derive(Clone)]
pub struct SharedTier {
    inner: Arc<Inner>,
    writes: mpsc::Sender<Write>,
    purges: Arc<Outbox>,
}

impl SharedTier {
    /// Starts the tier on the store `cfg` names. Redis: connects in the background, and runs
    /// the invalidation reader (which applies other nodes' invalidations and purges through
    /// `purger`). Memcached: runs the reader of the record of purges (applied through `purger`);
    /// connections are made by the calls that need them, within their budget. Both: the writer
    /// and the purge publisher. Retries wait on `clock`. Counts in `stats`, and the time of each
    /// call in `call_seconds`.
    pub fn start(
        cfg: TierConfig,
        purger: Purger,
        clock: Arc<dyn Clock>,
        stats: Arc<Stats>,
        call_seconds: Histogram,
    ) -> SharedTier {
        let (limits, backend) = match &cfg {
            TierConfig::Redis(r) => (
                Limits {
                    budget: r.budget,
                    max_object_bytes: r.max_object_bytes,
                    key_prefix: r.key_prefix.clone(),
                    ttl_cap: r.ttl_cap,
                    write_queue: r.write_queue,
                    memory_ttl: None,
                },
                Backend::Redis(RedisBackend { cfg: r.clone(), conn: RwLock::new(None) }),
            ),
            TierConfig::Memcached(m) => (
                Limits {
                    budget: m.budget,
                    max_object_bytes: m.max_object_bytes,
                    key_prefix: m.key_prefix.clone(),
                    ttl_cap: m.ttl_cap,
                    write_queue: m.write_queue,
                    memory_ttl: Some(m.memory_ttl),
                },
                Backend::Memcached(Memcached::new(&m.servers)),
            ),
        };
        let (tx, rx) = mpsc::channel(limits.write_queue.max(1));
        let up = Arc::new(Notify::new());
        let inner = Arc::new(Inner {
            started: cfg,
            limits,
            backend,
            breaker: Mutex::new(Breaker { failures: 0, open: false }),
            stats,
            call_seconds,
            node: node_id(),
            clock,
            up: up.clone(),
        });
        match &inner.backend {
            Backend::Redis(_) => {
                tokio::spawn(connector(Arc::downgrade(&inner), inner.clock.clone()));
                tokio::spawn(invalidation_reader(Arc::downgrade(&inner), purger));
            }
            Backend::Memcached(_) => {
                tokio::spawn(records_reader(Arc::downgrade(&inner), purger));
            }
        }
        let (outbox, pending) = Outbox::new();
        tokio::spawn(writer(inner.clone(), rx));
        tokio::spawn(publisher(Arc::downgrade(&inner), pending, outbox.clone(), up));
        SharedTier { inner, writes: tx, purges: outbox }
    }

    /// How long the memory tier may keep an object at most: the bound on how long an
    /// invalidation made on another node takes to reach this one, when the store has no stream
    /// to carry it (memcached); `None` otherwise.
    pub fn memory_ttl(&self) -> Option<Duration> {
        self.inner.limits.memory_ttl
    }

    /// The upper bound of every key's TTL.
    pub fn ttl_cap(&self) -> Duration {
        self.inner.limits.ttl_cap
    }

    /// Publishes a purge made on this node (already applied here): applied to Redis, then
    /// announced to every node on the stream. Kept until Redis takes it, in order.
    pub fn publish(&self, purge: &Purge, id: &str) {
        self.purges.push(Outgoing { purge: purge.clone(), id: id.to_string() });
    }

    /// Purges made here and not yet taken by Redis.
    pub fn pending_purges(&self) -> usize {
        self.purges.len()
    }

    /// The counters.
    pub fn stats(&self) -> &Stats {
        &self.inner.stats
    }

    /// True while a connection is established and the breaker is closed.
    pub fn available(&self) -> bool {
        self.inner.available()
    }

    /// Completes once the tier is available (connected, breaker closed).
    pub async fn wait_available(&self) {
        loop {
            let up = self.inner.up.notified();
            tokio::pin!(up);
            // Registered before the check, so becoming available in between is not missed.
            up.as_mut().enable();
            if self.available() {
                return;
            }
            up.await;
        }
    }

    /// True once a connection is established (memcached: always; its connections are made by
    /// the calls).
    pub fn connected(&self) -> bool {
        match &self.inner.backend {
            Backend::Redis(r) => r.conn().is_some(),
            Backend::Memcached(_) => true,
        }
    }

    /// True while the circuit breaker is open: calls are skipped.
    pub fn breaker_open(&self) -> bool {
        self.inner.breaker.lock().unwrap_or_else(|e| e.into_inner()).open
    }

    /// The configuration it was started with.
    pub fn config(&self) -> &TierConfig {
        &self.inner.started
    }

    /// True when `other` is a handle on this same tier (one connection, one writer).
    pub fn same_as(&self, other: &SharedTier) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// Every stored variant of the URL, within the time budget; empty on a miss or any failure.
    /// A purge of the URL written into its hash (see `shared/publish.rs`) applies to the variants
    /// whose origin request was sent at or before it: removed (hard) or stale from then (soft).
    pub async fn get(&self, key: &CacheKey, canonical: &str) -> Vec<Entry> {
        let inner = &self.inner;
        let name = inner.key_name(key);
        let fields: Vec<(String, Bytes)> = match &inner.backend {
            Backend::Redis(_) => {
                let mut pipe = redis::pipe();
                pipe.cmd("HGETALL").arg(&name);
                let fields: Option<(HashMap<String, Vec<u8>>,)> = inner.call(&pipe).await;
                let Some((fields,)) = fields else { return Vec::new() };
                fields.into_iter().map(|(f, v)| (f, Bytes::from(v))).collect()
            }
            Backend::Memcached(m) => match inner.guard(m.get(&name)).await {
                None => return Vec::new(),
                Some(None) => Vec::new(),
                Some(Some(value)) => memcached::bundle::decode(&value).unwrap_or_else(|| {
                    inner.stats.bad_values.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%key, "shared tier bundle rejected");
                    Vec::new()
                }),
            },
        };
        let mut out = Vec::with_capacity(fields.len());
        let (mut hard, mut soft): (Option<Millis>, Option<Millis>) = (None, None);
        for (field, value) in fields {
            if let Some(kind) = field.strip_prefix(publish::MARK) {
                let at = std::str::from_utf8(&value).ok().and_then(|v| v.parse().ok());
                match kind {
                    "hard" => hard = at,
                    "soft" => soft = at,
                    _ => {}
                }
                continue;
            }
            match envelope::decode(value, canonical) {
                Ok(e) => out.push(e),
                Err(e) => {
                    inner.stats.bad_values.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, %key, "shared tier value rejected");
                }
            }
        }
        if let Some(t) = hard {
            out.retain(|e| e.freshness.times.request_time > t);
        }
        if let Some(t) = soft {
            let at = t.min(inner.clock.now_millis());
            for e in out.iter_mut().filter(|e| e.freshness.times.request_time <= t) {
                e.freshness.stale_from(at);
            }
        }
        let counter = if out.is_empty() { &inner.stats.misses } else { &inner.stats.hits };
        counter.fetch_add(1, Ordering::Relaxed);
        out
    }

    /// Queues `entry` to be written for the URL, living `ttl` (capped by `ttl_cap`). Larger than
    /// `max_object_size`: not written.
    pub fn put(&self, key: &CacheKey, canonical: &str, entry: &Entry, ttl: Duration) {
        if entry.body.len() as u64 > self.inner.limits.max_object_bytes {
            return;
        }
        let ttl_secs = ttl.min(self.inner.limits.ttl_cap).as_secs().max(1);
        let value = envelope::encode(canonical, entry);
        self.enqueue(Write::Put { key: self.inner.key_name(key), field: variant_field(entry), value, ttl_secs });
    }

    /// Queues the removal of one variant.
    pub fn remove_variant(&self, key: &CacheKey, entry: &Entry) {
        self.enqueue(Write::RemoveVariant { key: self.inner.key_name(key), field: variant_field(entry) });
    }

    /// Queues a fleet-wide invalidation of the URL.
    pub fn invalidate(&self, key: &CacheKey) {
        self.enqueue(Write::Invalidate { key: self.inner.key_name(key), digest: key.to_string() });
    }

    fn enqueue(&self, w: Write) {
        if self.writes.try_send(w).is_err() {
            let n = self.inner.stats.dropped_writes.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::warn!(dropped = n, "shared tier write queue full; writes dropped");
            }
        }
    }
}

/// A random id for this process, to recognise its own messages on the invalidation stream.
fn node_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
    format!("{:016x}", h.finish())
}

/// The hash field of a variant: a digest of the request field values that select it.
fn variant_field(entry: &Entry) -> String {
    let mut h = Sha256::new();
    for (name, value) in entry.vary.iter() {
        frame_part(&mut h, name.as_str().as_bytes());
        frame_optional(&mut h, value.as_deref().map(str::as_bytes));
    }
    hex::encode(&h.finalize()[..16])
}

impl Inner {
    /// The key of a URL's variants: a Redis hash (its digest in braces, the Cluster hash tag), or
    /// a memcached bundle.
    fn key_name(&self, key: &CacheKey) -> String {
        match self.backend {
            Backend::Redis(_) => format!("{}:v{}:{{{}}}", self.limits.key_prefix, envelope::VERSION, key),
            Backend::Memcached(_) => format!("{}:v{}:{}", self.limits.key_prefix, envelope::VERSION, key),
        }
    }

    fn stream_name(&self) -> String {
        format!("{}:v{}:invalidations", self.limits.key_prefix, envelope::VERSION)
    }

    /// The record of purges: on Redis the sorted set of the purges other than by URL, scored by
    /// time (see `shared/publish.rs`); on memcached the list of every purge (see
    /// `shared/memcached/bundle.rs`).
    fn purges_name(&self) -> String {
        format!("{}:v{}:purges", self.limits.key_prefix, envelope::VERSION)
    }

    fn records_name(&self) -> String {
        self.purges_name()
    }

    fn available(&self) -> bool {
        let connected = match &self.backend {
            Backend::Redis(r) => r.conn().is_some(),
            Backend::Memcached(_) => true,
        };
        connected && !self.breaker.lock().unwrap_or_else(|e| e.into_inner()).open
    }

    /// The Redis settings, when the store is Redis.
    fn redis(&self) -> Option<&RedisBackend> {
        match &self.backend {
            Backend::Redis(r) => Some(r),
            Backend::Memcached(_) => None,
        }
    }
}

impl RedisBackend {
    fn conn(&self) -> Option<Conn> {
        self.conn.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}
