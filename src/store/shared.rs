//! The shared tier: Redis (standalone or Cluster) as a second tier for a fleet of nodes.
//!
//! # Guarantees
//!
//! - **Never in the way.** Every call is bounded by `redis.budget`; past it the call counts as a
//!   miss. After consecutive failures a circuit breaker stops calling Redis and probes again later
//!   (backing off up to 30 s). Connecting happens in the background: a Redis that is down, or
//!   that accepts connections and never answers, never delays startup or a request beyond the
//!   budget. The breaker's probes and the connection attempts wait on the proxy's [`Clock`].
//! - **Writes off the client's path.** Stores go through a bounded queue to one writer task that
//!   batches them; when the queue is full a write is dropped and counted, never waited for.
//! - **Checked reads.** Values are [envelopes](super::envelope) with a version and the canonical
//!   key; anything that does not decode is a miss and is counted.
//! - **Every key expires.** A URL's variants live in one hash `PREFIX:v1:{DIGEST}` (one hash tag
//!   per URL, so it works on Redis Cluster) whose TTL is the longest useful life of its variants
//!   (freshness, stale windows and retention), capped by `redis.ttl_cap`. The invalidation stream
//!   expires a day after its last entry.
//! - **Fleet-wide invalidation.** An invalidation deletes the URL's hash and is appended to the
//!   stream `PREFIX:v1:invalidations`; every node reads the stream from its last position, so a
//!   node that was disconnected replays what it missed. If the stream was trimmed past that
//!   position, the node cannot know what it missed and drops its whole memory tier.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use redis::aio::ConnectionManager;
use redis::cluster_async::ClusterConnection;
use redis::{FromRedisValue, Pipeline};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::entry::Entry;
use super::envelope;
use super::key::CacheKey;
use super::memory::MemoryTier;
use crate::clock::Clock;
use crate::config::RedisConfig;

/// Entries kept in the invalidation stream (approximately).
const STREAM_MAXLEN: usize = 100_000;
/// How long the invalidation stream lives after its last entry.
const STREAM_TTL_SECS: u64 = 86_400;
/// Consecutive failures that open the circuit breaker.
const BREAKER_THRESHOLD: u32 = 3;
/// Writes batched into one pipeline.
const WRITE_BATCH: usize = 64;

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
}

enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Conn {
    async fn query<T: FromRedisValue>(&self, pipe: &Pipeline) -> redis::RedisResult<T> {
        match self {
            Conn::Single(c) => pipe.query_async(&mut c.clone()).await,
            Conn::Cluster(c) => pipe.query_async(&mut c.clone()).await,
        }
    }

    async fn cmd<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> redis::RedisResult<T> {
        match self {
            Conn::Single(c) => cmd.query_async(&mut c.clone()).await,
            Conn::Cluster(c) => cmd.query_async(&mut c.clone()).await,
        }
    }
}

impl Clone for Conn {
    fn clone(&self) -> Self {
        match self {
            Conn::Single(c) => Conn::Single(c.clone()),
            Conn::Cluster(c) => Conn::Cluster(c.clone()),
        }
    }
}

/// The circuit breaker: closed (calls go ahead) until `BREAKER_THRESHOLD` consecutive failures,
/// then open (calls are skipped) until a background probe finds Redis answering again. Client
/// calls never serve as probes, so none of them waits on a Redis that is still away.
struct Breaker {
    failures: u32,
    open: bool,
}

enum Write {
    Put { key: String, field: String, value: Bytes, ttl_secs: u64 },
    RemoveVariant { key: String, field: String },
    Invalidate { key: String, digest: String },
}

struct Inner {
    cfg: RedisConfig,
    conn: RwLock<Option<Conn>>,
    breaker: Mutex<Breaker>,
    stats: Stats,
    node: String,
    /// What the probe and the connector wait on between tries.
    clock: Arc<dyn Clock>,
}

/// A handle on the shared tier; cheap to clone.
#[derive(Clone)]
pub struct SharedTier {
    inner: Arc<Inner>,
    writes: mpsc::Sender<Write>,
}

impl SharedTier {
    /// Starts the tier: connects in the background, and runs the writer and the invalidation
    /// reader (which drops invalidated URLs from `memory`). Retries wait on `clock`.
    pub fn start(cfg: RedisConfig, memory: MemoryTier, clock: Arc<dyn Clock>) -> SharedTier {
        let (tx, rx) = mpsc::channel(cfg.write_queue.max(1));
        let node = node_id();
        let inner = Arc::new(Inner {
            cfg,
            conn: RwLock::new(None),
            breaker: Mutex::new(Breaker { failures: 0, open: false }),
            stats: Stats::default(),
            node,
            clock,
        });
        tokio::spawn(connector(Arc::downgrade(&inner), inner.clock.clone()));
        tokio::spawn(writer(inner.clone(), rx));
        tokio::spawn(invalidation_reader(Arc::downgrade(&inner), memory));
        SharedTier { inner, writes: tx }
    }

    /// The counters.
    pub fn stats(&self) -> &Stats {
        &self.inner.stats
    }

    /// True while a connection is established and the breaker is closed.
    pub fn available(&self) -> bool {
        self.inner.conn().is_some() && !self.inner.breaker.lock().unwrap_or_else(|e| e.into_inner()).open
    }

    /// Every stored variant of the URL, within the time budget; empty on a miss or any failure.
    pub async fn get(&self, key: &CacheKey, canonical: &str) -> Vec<Entry> {
        let inner = &self.inner;
        let name = inner.key_name(key);
        let mut pipe = redis::pipe();
        pipe.cmd("HGETALL").arg(&name);
        let fields: Option<(HashMap<String, Vec<u8>>,)> = inner.call(&pipe).await;
        let Some((fields,)) = fields else { return Vec::new() };
        let mut out = Vec::with_capacity(fields.len());
        for (_, value) in fields {
            match envelope::decode(Bytes::from(value), canonical) {
                Ok(e) => out.push(e),
                Err(e) => {
                    inner.stats.bad_values.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, %key, "shared tier value rejected");
                }
            }
        }
        let counter = if out.is_empty() { &inner.stats.misses } else { &inner.stats.hits };
        counter.fetch_add(1, Ordering::Relaxed);
        out
    }

    /// Queues `entry` to be written for the URL, living `ttl` (capped by `redis.ttl_cap`).
    /// Larger than `redis.max_object_size`: not written.
    pub fn put(&self, key: &CacheKey, canonical: &str, entry: &Entry, ttl: Duration) {
        if entry.body.len() as u64 > self.inner.cfg.max_object_bytes {
            return;
        }
        let ttl_secs = ttl.min(self.inner.cfg.ttl_cap).as_secs().max(1);
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
        h.update((name.as_str().len() as u32).to_be_bytes());
        h.update(name.as_str());
        match value {
            Some(v) => {
                h.update([1]);
                h.update((v.len() as u32).to_be_bytes());
                h.update(v.as_bytes());
            }
            None => h.update([0]),
        }
    }
    hex::encode(&h.finalize()[..16])
}

impl Inner {
    fn key_name(&self, key: &CacheKey) -> String {
        format!("{}:v{}:{{{}}}", self.cfg.key_prefix, envelope::VERSION, key)
    }

    fn stream_name(&self) -> String {
        format!("{}:v{}:invalidations", self.cfg.key_prefix, envelope::VERSION)
    }

    fn conn(&self) -> Option<Conn> {
        self.conn.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// May a call go ahead? A skipped call is counted.
    fn allow(&self) -> bool {
        let open = self.breaker.lock().unwrap_or_else(|e| e.into_inner()).open;
        if open {
            self.stats.skipped.fetch_add(1, Ordering::Relaxed);
        }
        !open
    }

    fn success(&self) {
        self.breaker.lock().unwrap_or_else(|e| e.into_inner()).failures = 0;
    }

    fn failure(self: &Arc<Self>, what: &str) {
        self.stats.errors.fetch_add(1, Ordering::Relaxed);
        let mut b = self.breaker.lock().unwrap_or_else(|e| e.into_inner());
        if b.open {
            // A call that was already under way when the circuit opened.
            return;
        }
        b.failures += 1;
        if b.failures >= BREAKER_THRESHOLD {
            b.open = true;
            tracing::warn!(error = what, "shared tier unavailable; circuit open, probing in the background");
            tokio::spawn(probe(Arc::downgrade(self), self.clock.clone()));
        }
    }

    /// Does Redis answer a PING within the budget? Tried twice: after an outage the first call
    /// on a reconnecting connection can return the error of the reconnection it started.
    async fn ping(&self) -> bool {
        let Some(conn) = self.conn() else { return false };
        for _ in 0..2 {
            let pong = tokio::time::timeout(self.cfg.budget, conn.cmd::<String>(&redis::cmd("PING"))).await;
            if matches!(pong, Ok(Ok(_))) {
                return true;
            }
        }
        false
    }

    /// Runs `pipe` within the budget; `None` on any failure (counted, and fed to the breaker).
    async fn call<T: FromRedisValue>(self: &Arc<Self>, pipe: &Pipeline) -> Option<T> {
        if !self.allow() {
            return None;
        }
        let Some(conn) = self.conn() else {
            self.stats.skipped.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        match tokio::time::timeout(self.cfg.budget, conn.query::<T>(pipe)).await {
            Ok(Ok(v)) => {
                self.success();
                Some(v)
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "shared tier call failed");
                self.failure(&e.to_string());
                None
            }
            Err(_) => {
                self.failure("timed out");
                None
            }
        }
    }
}

/// While the circuit is open: probes Redis after 1 s on `clock`, then backing off to 30 s, and
/// closes the circuit at the first answer.
async fn probe(inner: std::sync::Weak<Inner>, clock: Arc<dyn Clock>) {
    let mut wait = Duration::from_secs(1);
    loop {
        clock.sleep(wait).await;
        let Some(me) = inner.upgrade() else { return };
        if me.ping().await {
            let mut b = me.breaker.lock().unwrap_or_else(|e| e.into_inner());
            b.open = false;
            b.failures = 0;
            tracing::info!("shared tier answering again; circuit closed");
            return;
        }
        wait = (wait * 2).min(Duration::from_secs(30));
    }
}

/// Connects in the background, retrying (backing off on `clock`) until it succeeds; never blocks
/// a request.
async fn connector(inner: std::sync::Weak<Inner>, clock: Arc<dyn Clock>) {
    let mut delay = Duration::from_millis(100);
    loop {
        let Some(me) = inner.upgrade() else { return };
        if me.conn().is_some() {
            return;
        }
        let attempt = tokio::time::timeout(connect_timeout(&me.cfg), connect(&me.cfg, Some(me.cfg.budget))).await;
        match attempt {
            Ok(Ok(c)) => {
                tracing::info!(url = %me.cfg.url, "shared tier connected");
                *me.conn.write().unwrap_or_else(|e| e.into_inner()) = Some(c);
                return;
            }
            Ok(Err(e)) => tracing::warn!(error = %e, url = %me.cfg.url, "shared tier: cannot connect; retrying"),
            Err(_) => tracing::warn!(url = %me.cfg.url, "shared tier: connect timed out; retrying"),
        }
        drop(me);
        clock.sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(10));
    }
}

fn connect_timeout(cfg: &RedisConfig) -> Duration {
    (cfg.budget * 10).max(Duration::from_secs(1))
}

/// Connects; `response_timeout` bounds every command on the connection (None for the blocking
/// stream reader, whose calls carry their own bound).
async fn connect(cfg: &RedisConfig, response_timeout: Option<Duration>) -> redis::RedisResult<Conn> {
    if cfg.cluster {
        let mut builder =
            redis::cluster::ClusterClientBuilder::new(vec![cfg.url.as_str()]).connection_timeout(connect_timeout(cfg));
        if let Some(t) = response_timeout {
            builder = builder.response_timeout(t);
        }
        let client = builder.build()?;
        Ok(Conn::Cluster(client.get_async_connection().await?))
    } else {
        let client = redis::Client::open(cfg.url.as_str())?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(connect_timeout(cfg)))
            .set_response_timeout(response_timeout)
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        Ok(Conn::Single(ConnectionManager::new_with_config(client, config).await?))
    }
}

/// Drains the write queue in batches, one pipeline per batch, each within the budget.
async fn writer(inner: Arc<Inner>, mut rx: mpsc::Receiver<Write>) {
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    let stream = inner.stream_name();
    while rx.recv_many(&mut batch, WRITE_BATCH).await > 0 {
        for (pipe, writes) in pipelines(&mut batch, inner.cfg.cluster, &stream, &inner.node) {
            match inner.call::<()>(&pipe).await {
                Some(()) => inner.stats.writes.fetch_add(writes, Ordering::Relaxed),
                None => inner.stats.dropped_writes.fetch_add(writes.max(1), Ordering::Relaxed),
            };
        }
    }
}

/// The pipelines that carry `batch` (drained), in the order they must run, each with the number
/// of writes it counts for.
fn pipelines(batch: &mut Vec<Write>, cluster: bool, stream: &str, node: &str) -> Vec<(Pipeline, u64)> {
    // Standalone: one pipeline for the whole batch. Cluster: a pipeline may not cross hash
    // slots, so one per key (a write touches one URL's hash, an invalidation also the stream).
    let mut pipes: Vec<(Pipeline, u64)> = Vec::new();
    let mut one = redis::pipe();
    let n = batch.len() as u64;
    for w in batch.drain(..) {
        let mut per_key = redis::pipe();
        let mut announce = None;
        let pipe = if cluster { &mut per_key } else { &mut one };
        match w {
            Write::Put { key, field, value, ttl_secs } => {
                pipe.cmd("HSET").arg(&key).arg(&field).arg(value.as_ref()).ignore();
                // A new hash gets the TTL; an existing one only ever has it extended.
                pipe.cmd("EXPIRE").arg(&key).arg(ttl_secs).arg("NX").ignore();
                pipe.cmd("EXPIRE").arg(&key).arg(ttl_secs).arg("GT").ignore();
            }
            Write::RemoveVariant { key, field } => {
                pipe.cmd("HDEL").arg(&key).arg(&field).ignore();
            }
            Write::Invalidate { key, digest } => {
                pipe.cmd("DEL").arg(&key).ignore();
                let mut to_stream = redis::pipe();
                let sp = if cluster { &mut to_stream } else { &mut *pipe };
                sp.cmd("XADD")
                    .arg(stream)
                    .arg("MAXLEN")
                    .arg("~")
                    .arg(STREAM_MAXLEN)
                    .arg("*")
                    .arg("key")
                    .arg(&digest)
                    .arg("node")
                    .arg(node)
                    .ignore();
                sp.cmd("EXPIRE").arg(stream).arg(STREAM_TTL_SECS).ignore();
                if cluster {
                    announce = Some(to_stream);
                }
            }
        }
        if cluster {
            pipes.push((per_key, 1));
            // The pipelines run one after another: the stream tells the other nodes of an
            // invalidation only once its DEL is done, so a node that drops its copy and asks
            // the tier again cannot find the old object there.
            pipes.extend(announce.map(|p| (p, 0)));
        }
    }
    if !cluster {
        pipes.push((one, n));
    }
    pipes
}

/// Applies other nodes' invalidations to `memory`, reading the stream from the last position
/// seen, across disconnects.
async fn invalidation_reader(inner: std::sync::Weak<Inner>, memory: MemoryTier) {
    let mut pos: Option<Position> = None;
    let mut delay = Duration::from_millis(100);
    loop {
        let Some(me) = inner.upgrade() else { return };
        let cfg = me.cfg.clone();
        let stream = me.stream_name();
        drop(me);
        // A connection of its own: XREAD BLOCK holds it.
        let conn = match tokio::time::timeout(connect_timeout(&cfg), connect(&cfg, None)).await {
            Ok(Ok(c)) => c,
            _ => {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
                continue;
            }
        };
        delay = Duration::from_millis(100);
        match read_stream(&inner, &conn, &stream, &mut pos, &memory).await {
            Ok(()) => return, // the tier was dropped
            Err(e) => {
                tracing::debug!(error = %e, "invalidation stream read failed; reconnecting");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Stream ids compare as (milliseconds, sequence).
fn parse_id(id: &str) -> (u64, u64) {
    let (a, b) = id.split_once('-').unwrap_or((id, "0"));
    (a.parse().unwrap_or(0), b.parse().unwrap_or(0))
}

/// A reader's place in the invalidation stream: the last entry id read, and the stream's
/// `entries-added` counter at that entry.
#[derive(Debug, Clone)]
struct Position {
    id: String,
    added: u64,
}

/// `XINFO STREAM`: `None` when the stream does not exist.
async fn stream_info(
    conn: &Conn,
    stream: &str,
    bound: Duration,
) -> redis::RedisResult<Option<HashMap<String, redis::Value>>> {
    let mut cmd = redis::cmd("XINFO");
    cmd.arg("STREAM").arg(stream);
    match timeout(bound, conn.cmd::<HashMap<String, redis::Value>>(&cmd)).await {
        Ok(map) => Ok(Some(map)),
        Err(e) if e.to_string().to_ascii_lowercase().contains("no such key") => Ok(None),
        Err(e) => Err(e),
    }
}

fn info_field<T: FromRedisValue>(info: &HashMap<String, redis::Value>, name: &str) -> Option<T> {
    info.get(name).and_then(|v| redis::from_redis_value::<T>(v.clone()).ok())
}

async fn read_stream(
    inner: &std::sync::Weak<Inner>,
    conn: &Conn,
    stream: &str,
    pos: &mut Option<Position>,
    memory: &MemoryTier,
) -> redis::RedisResult<()> {
    use redis::streams::StreamReadReply;
    let budget = match inner.upgrade() {
        Some(me) => me.cfg.budget,
        None => return Ok(()),
    };
    let bounded = |d: Duration| d + budget + Duration::from_secs(1);
    let info = stream_info(conn, stream, bounded(Duration::ZERO)).await?;
    match (pos.as_ref(), info) {
        // First connection: start after the newest entry (the memory tier is empty).
        (None, None) => *pos = Some(Position { id: "0-0".into(), added: 0 }),
        (None, Some(info)) => {
            let id = info_field::<String>(&info, "last-generated-id").unwrap_or_else(|| "0-0".into());
            *pos = Some(Position { id, added: info_field(&info, "entries-added").unwrap_or(0) });
        }
        // Reconnected. If entries after our position were trimmed before we could read them, or
        // the stream we had read from is gone or was recreated (Redis restarted empty), we cannot
        // know what we missed: nothing in memory can be trusted.
        (Some(p), info) => {
            let missed = match info {
                None => p.id != "0-0",
                Some(info) => {
                    let added: u64 = info_field(&info, "entries-added").unwrap_or(0);
                    let length: u64 = info_field(&info, "length").unwrap_or(0);
                    let first = info_field::<String>(&info, "recorded-first-entry-id").unwrap_or_else(|| "0-0".into());
                    let added_since = added.saturating_sub(p.added);
                    added < p.added || (parse_id(&first) > parse_id(&p.id) && added_since > length)
                }
            };
            if missed {
                tracing::warn!("missed invalidations while disconnected; dropping the memory tier");
                memory.invalidate_all();
            }
        }
    }
    let block = Duration::from_secs(2);
    loop {
        let Some(me) = inner.upgrade() else { return Ok(()) };
        let node = me.node.clone();
        drop(me);
        let from = pos.as_ref().map(|p| p.id.clone()).unwrap_or_else(|| "0-0".into());
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("BLOCK").arg(block.as_millis() as u64).arg("COUNT").arg(512).arg("STREAMS").arg(stream).arg(&from);
        let reply: Option<StreamReadReply> = timeout(bounded(block), conn.cmd(&cmd)).await?;
        let Some(reply) = reply else { continue };
        for key in reply.keys {
            for entry in key.ids {
                if let Some(p) = pos.as_mut() {
                    p.id = entry.id.clone();
                    p.added += 1;
                }
                let from_node: Option<String> = entry.get("node");
                if from_node.as_deref() == Some(node.as_str()) {
                    continue;
                }
                let Some(digest) = entry.get::<String>("key") else { continue };
                if let Some(k) = CacheKey::from_hex(&digest) {
                    memory.invalidate(&k);
                    if let Some(me) = inner.upgrade() {
                        me.stats.remote_invalidations.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
    }
}

async fn timeout<T>(d: Duration, f: impl std::future::Future<Output = redis::RedisResult<T>>) -> redis::RedisResult<T> {
    match tokio::time::timeout(d, f).await {
        Ok(r) => r,
        Err(_) => Err(redis::RedisError::from(std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The command names of a pipeline, in order.
    fn commands(p: &Pipeline) -> Vec<String> {
        p.cmd_iter()
            .map(|c| match c.args_iter().next() {
                Some(redis::Arg::Simple(name)) => String::from_utf8_lossy(name).into_owned(),
                _ => String::new(),
            })
            .collect()
    }

    fn batch() -> Vec<Write> {
        vec![
            Write::Put { key: "a".into(), field: "v".into(), value: Bytes::from_static(b"x"), ttl_secs: 60 },
            Write::Invalidate { key: "b".into(), digest: "d".into() },
        ]
    }

    #[test]
    fn an_invalidation_reaches_the_stream_only_after_its_del() {
        // Cluster: one pipeline per key, and the stream's after the DEL's.
        let mut writes = batch();
        let pipes: Vec<(Vec<String>, u64)> =
            pipelines(&mut writes, true, "s", "n").iter().map(|(p, n)| (commands(p), *n)).collect();
        assert!(writes.is_empty());
        assert_eq!(
            pipes,
            [
                (vec!["HSET".into(), "EXPIRE".into(), "EXPIRE".into()], 1),
                (vec!["DEL".into()], 1),
                (vec!["XADD".into(), "EXPIRE".into()], 0),
            ]
        );
        // Standalone: one pipeline, run in order on one connection.
        let mut writes = batch();
        let pipes: Vec<(Vec<String>, u64)> =
            pipelines(&mut writes, false, "s", "n").iter().map(|(p, n)| (commands(p), *n)).collect();
        let expected = ["HSET", "EXPIRE", "EXPIRE", "DEL", "XADD", "EXPIRE"].map(String::from).to_vec();
        assert_eq!(pipes, [(expected, 2)]);
    }
}
