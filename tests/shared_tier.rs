//! The shared tier (Redis): two nodes in front of one origin share what either stored, see each
//! other's invalidations (replaying what they missed while disconnected), and keep serving when
//! Redis is down, killed, silent or full of garbage. Needs `redis-server` (never skipped).

pub mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::redis::{key_name, FakeRedis, RedisLink, RedisServer, STREAM};
use common::*;
use edgecache::clock::ManualClock;
use edgecache::config::RedisConfig;
use edgecache::store::shared::{SharedTier, Stats};
use edgecache::store::CacheKey;
use edgecache::Running;

/// `Cache-Status` of a hit found in the shared tier, 60 s left.
const SHARED_HIT: &str = "edgecache; hit; tier=shared; ttl=60";

/// Every request carries this `Host`: the key includes it, and the nodes listen on other ports.
const HOST: &str = "www.example";

/// GET `path` with the shared `Host`.
async fn get(c: &Client, path: &str) -> Resp {
    c.get_with(path, &[("host", HOST)]).await
}

/// POST `path` with the shared `Host`.
async fn post(c: &Client, path: &str) -> Resp {
    c.send("POST", path, &[("host", HOST)], Bytes::from_static(b"x")).await
}

/// GET: `{path}#{n}` (n counted per path) fresh for 60 s; `/v…` varies on `Accept-Language`,
/// `/big…` is 1000 bytes, `/long…` is fresh for an hour. Other methods: 200 `done`.
fn handler() -> impl Fn(&Seen, usize) -> Reply + Send + Sync + 'static {
    let counts: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    move |req, _| {
        if req.method != http::Method::GET {
            return Reply::ok("done");
        }
        let path = req.path().to_string();
        let n = {
            let mut c = counts.lock().unwrap();
            let n = c.entry(path.clone()).or_insert(0);
            *n += 1;
            *n
        };
        if path.starts_with("/v") {
            let lang = req.header("accept-language").unwrap_or("-");
            Reply::ok(format!("{path} {lang}#{n}")).cc("max-age=60").header("vary", "accept-language")
        } else if path.starts_with("/big") {
            Reply::ok(vec![b'x'; 1000]).cc("max-age=60")
        } else if path.starts_with("/long") {
            Reply::ok(format!("{path}#{n}")).cc("max-age=3600")
        } else {
            Reply::ok(format!("{path}#{n}")).cc("max-age=60")
        }
    }
}

/// A node of the fleet: a proxy whose shared tier is the Redis at `url`.
struct Node {
    p: Running,
    c: Client,
}

impl Node {
    async fn start(
        origin: &Origin,
        clock: &Arc<ManualClock>,
        url: String,
        tweak: impl FnOnce(&mut RedisConfig),
    ) -> Node {
        let mut r = RedisConfig { url, ..Default::default() };
        tweak(&mut r);
        let p = start_proxy(origin.addr(), clock, move |cfg| cfg.redis = Some(r)).await;
        let c = Client::new(p.addr());
        Node { p, c }
    }

    fn shared(&self) -> SharedTier {
        self.p.proxy().shared().expect("shared tier configured").clone()
    }

    fn stats(&self) -> std::sync::Arc<Stats> {
        self.p.proxy().metrics().shared.clone()
    }

    /// Waits until the tier is connected with its breaker closed.
    async fn ready(&self) {
        eventually("shared tier connected", async || self.shared().available()).await;
    }

    /// True when the memory tier holds something for `path`.
    fn in_memory(&self, path: &str) -> bool {
        self.p.proxy().memory().get(&CacheKey::new("http", HOST, path)).is_some()
    }
}

fn n(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

/// Two connected nodes A and B in front of one origin, one Redis, one clock.
struct Fleet {
    clock: Arc<ManualClock>,
    origin: Origin,
    redis: RedisServer,
    a: Node,
    b: Node,
}

async fn fleet() -> Fleet {
    let clock = clock();
    let redis = RedisServer::start();
    let origin = Origin::start(&clock, handler()).await;
    let a = Node::start(&origin, &clock, redis.url(), |_| {}).await;
    let b = Node::start(&origin, &clock, redis.url(), |_| {}).await;
    a.ready().await;
    b.ready().await;
    Fleet { clock, origin, redis, a, b }
}

/// Waits until the URL's hash exists in Redis.
async fn wait_stored(redis: &RedisServer, path: &str) {
    let key = key_name(HOST, path);
    redis.until::<i64>(&format!("{path} written to Redis"), &[b"EXISTS", key.as_bytes()], |n| *n == 1).await;
}

async fn exists(redis: &RedisServer, path: &str) -> bool {
    redis.cmd::<i64>(&[b"EXISTS", key_name(HOST, path).as_bytes()]).await == 1
}

#[tokio::test]
async fn what_a_stored_is_a_shared_hit_on_b_with_age_from_a_times() {
    let f = fleet().await;
    assert_eq!(get(&f.a.c, "/a").await.cache_status(), MISS_STORED);
    eventually("A's write reached Redis", async || n(&f.a.stats().writes) >= 1).await;
    assert!(exists(&f.redis, "/a").await);
    advance(&f.clock, 5);
    let r = get(&f.b.c, "/a").await;
    assert_eq!((r.status, r.text().as_str()), (200, "/a#1"));
    assert_eq!(r.cache_status(), "edgecache; hit; tier=shared; ttl=55");
    assert_eq!(r.age(), Some(5), "Age not computed from A's stored times");
    assert_eq!(n(&f.b.stats().hits), 1);
    // Promoted into B's memory: the next one is a plain memory hit.
    let r = get(&f.b.c, "/a").await;
    assert_eq!((r.text().as_str(), r.cache_status()), ("/a#1", hit(55).as_str()));
    assert_eq!(n(&f.b.stats().hits), 1, "B asked Redis again");
    assert_eq!(f.origin.count(), 1);
}

#[tokio::test]
async fn every_variant_of_a_url_is_shared() {
    let f = fleet().await;
    assert_eq!(get_lang(&f.a.c, "en").await.text(), "/v en#1");
    assert_eq!(get_lang(&f.a.c, "fr").await.text(), "/v fr#2");
    let key = key_name(HOST, "/v");
    f.redis.until::<i64>("both variants in Redis", &[b"HLEN", key.as_bytes()], |n| *n == 2).await;
    let en = get_lang(&f.b.c, "en").await;
    assert_eq!((en.text().as_str(), en.cache_status()), ("/v en#1", "edgecache; hit; tier=shared; ttl=60"));
    // Every variant found was promoted: the other language is a memory hit.
    let fr = get_lang(&f.b.c, "fr").await;
    assert_eq!((fr.text().as_str(), fr.cache_status()), ("/v fr#2", hit(60).as_str()));
    assert_eq!(f.origin.count(), 2);
}

async fn get_lang(c: &Client, lang: &str) -> Resp {
    c.get_with("/v", &[("host", HOST), ("accept-language", lang)]).await
}

#[tokio::test]
async fn an_invalidation_on_a_reaches_b() {
    let f = fleet().await;
    f.redis.wait_readers(2).await;
    get(&f.a.c, "/i").await;
    wait_stored(&f.redis, "/i").await;
    assert_eq!(get(&f.b.c, "/i").await.cache_status(), SHARED_HIT);
    assert_eq!(get(&f.b.c, "/i").await.cache_status(), hit(60));
    assert_eq!(post(&f.a.c, "/i").await.status, 200);
    eventually("B applied A's invalidation", async || n(&f.b.stats().remote_invalidations) == 1).await;
    assert!(!f.b.in_memory("/i"));
    let r = get(&f.b.c, "/i").await;
    assert_eq!((r.text().as_str(), r.cache_status()), ("/i#2", MISS_STORED));
    assert_eq!(f.origin.count_path("/i"), 3, "GET, POST, GET");
    assert_eq!(n(&f.a.stats().remote_invalidations), 0, "A applied its own message as a remote one");
}

/// A and B, B through a link that can be cut; the stream holds one entry before they start, so
/// both readers start from a real position.
async fn fleet_with_link() -> (Fleet, RedisLink) {
    fleet_with_link_seeded(true).await
}

/// As [`fleet_with_link`]; without `seed`, the stream does not exist when the nodes start.
async fn fleet_with_link_seeded(seed: bool) -> (Fleet, RedisLink) {
    let clock = clock();
    let redis = RedisServer::start();
    if seed {
        let key = CacheKey::new("http", HOST, "/seed").to_string();
        redis.cmd::<String>(&[b"XADD", STREAM.as_bytes(), b"*", b"key", key.as_bytes(), b"node", b"test"]).await;
    }
    let link = RedisLink::start(redis.addr()).await;
    let origin = Origin::start(&clock, handler()).await;
    let a = Node::start(&origin, &clock, redis.url(), |_| {}).await;
    let b = Node::start(&origin, &clock, link.url(), |_| {}).await;
    a.ready().await;
    b.ready().await;
    redis.wait_readers(2).await;
    (Fleet { clock, origin, redis, a, b }, link)
}

#[tokio::test]
async fn a_disconnected_node_replays_the_invalidations_it_missed() {
    let (f, link) = fleet_with_link().await;
    for p in ["/r", "/keep"] {
        get(&f.b.c, p).await;
        assert!(f.b.in_memory(p));
    }
    link.cut();
    assert_eq!(post(&f.a.c, "/r").await.status, 200);
    f.redis.until::<i64>("A's invalidation in the stream", &[b"XLEN", STREAM.as_bytes()], |n| *n == 2).await;
    // B cannot have seen it.
    assert!(get(&f.b.c, "/r").await.is_hit());
    link.restore();
    eventually("B replayed the missed invalidation", async || n(&f.b.stats().remote_invalidations) == 1).await;
    assert!(!f.b.in_memory("/r"));
    assert!(f.b.in_memory("/keep"), "B dropped more than it missed");
    let r = get(&f.b.c, "/r").await;
    assert_eq!((r.text().as_str(), r.cache_status()), ("/r#2", MISS_STORED));
}

/// `Cache-Status` of a stored object revalidated (these responses have no validators: the
/// origin answers in full).
const REVALIDATED: &str = "edgecache; fwd=stale; fwd-status=200; stored";

#[tokio::test]
async fn a_stream_trimmed_past_the_nodes_position_marks_its_whole_memory_tier_stale() {
    let (f, link) = fleet_with_link().await;
    for p in ["/r", "/s", "/keep"] {
        get(&f.b.c, p).await;
        assert!(f.b.in_memory(p));
    }
    link.cut();
    post(&f.a.c, "/r").await;
    post(&f.a.c, "/s").await;
    f.redis.until::<i64>("A's invalidations in the stream", &[b"XLEN", STREAM.as_bytes()], |n| *n == 3).await;
    // The seed (B's position) and A's first entry are trimmed away.
    f.redis.cmd::<i64>(&[b"XTRIM", STREAM.as_bytes(), b"MAXLEN", b"1"]).await;
    link.restore();
    eventually("B read the stream again", async || n(&f.b.stats().remote_invalidations) >= 1).await;
    assert_eq!(n(&f.b.stats().lost_track), 1);
    // What B may have missed is revalidated, not served and not dropped: with validators the
    // origin would answer 304 and the body would be kept.
    for p in ["/r", "/keep"] {
        assert!(f.b.in_memory(p), "{p} dropped");
        assert_eq!(get(&f.b.c, p).await.cache_status(), REVALIDATED, "{p}");
    }
    assert_eq!(get(&f.b.c, "/s").await.cache_status(), MISS_STORED, "the invalidation B could read");
}

#[tokio::test]
async fn a_node_that_never_saw_an_entry_also_revalidates_its_memory_when_the_stream_was_trimmed() {
    // As above, but the stream did not exist when B started: B has seen no entry yet.
    let (Fleet { redis, a, b, origin: _origin, clock: _clock }, link) = fleet_with_link_seeded(false).await;
    for p in ["/r", "/s"] {
        get(&b.c, p).await;
    }
    link.cut();
    post(&a.c, "/r").await;
    post(&a.c, "/s").await;
    redis.until::<i64>("A's invalidations in the stream", &[b"XLEN", STREAM.as_bytes()], |n| *n == 2).await;
    redis.cmd::<i64>(&[b"XTRIM", STREAM.as_bytes(), b"MAXLEN", b"1"]).await;
    link.restore();
    eventually("B read the stream again", async || n(&b.stats().remote_invalidations) >= 1).await;
    assert_eq!(n(&b.stats().lost_track), 1);
    assert_eq!(get(&b.c, "/r").await.cache_status(), REVALIDATED, "/r served although its invalidation was trimmed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_killed_under_traffic_fails_no_request_and_the_tier_resumes_after_restart() {
    let mut f = fleet().await;
    let mut failures = Vec::new();
    // Four rounds of 50 requests, 10 at a time: A fills /k*, B reads them, Redis dies, A and B
    // fetch /m* (lookups and writes fail).
    for (round, (node, prefix)) in [(&f.a, "/k"), (&f.b, "/k"), (&f.a, "/m"), (&f.b, "/m")].into_iter().enumerate() {
        if round == 2 {
            f.redis.kill();
        }
        for chunk in (0..50).collect::<Vec<_>>().chunks(10) {
            let paths: Vec<String> = chunk.iter().map(|i| format!("{prefix}{i}")).collect();
            let rs = futures_util::future::join_all(
                paths.iter().map(|p| node.c.try_send("GET", p, &[("host", HOST)], Bytes::new())),
            )
            .await;
            for (p, r) in paths.iter().zip(rs) {
                match r {
                    Ok(r) if r.status == 200 && r.text().starts_with(&format!("{p}#")) => {}
                    Ok(r) => failures.push(format!("{p}: {} {:?} {}", r.status, r.text(), r.cache_status())),
                    Err(e) => failures.push(format!("{p}: {e}")),
                }
            }
        }
    }
    assert!(failures.is_empty(), "{} failed requests: {failures:#?}", failures.len());
    let failed = |s: &Stats| n(&s.errors) + n(&s.skipped);
    assert!(failed(&f.a.stats()) > 0 && failed(&f.b.stats()) > 0, "the nodes did not notice Redis was gone");
    assert!(n(&f.b.stats().hits) > 0, "B found nothing before the kill");

    f.redis.restart();
    resume(&f.clock, &[&f.a, &f.b]).await;
    assert_eq!(get(&f.a.c, "/resume").await.cache_status(), MISS_STORED);
    wait_stored(&f.redis, "/resume").await;
    let r = get(&f.b.c, "/resume").await;
    assert_eq!((r.text().as_str(), r.cache_status()), ("/resume#1", SHARED_HIT));
}

/// Waits until the retry (the breaker's probe, or the connector) of every node whose tier is
/// unavailable is asleep on `clock`, and nothing else is.
async fn retries_asleep(clock: &ManualClock, nodes: &[&Node]) {
    let down = || nodes.iter().filter(|node| !node.shared().available()).count();
    eventually("every retry asleep on the clock", async || clock.sleeping() == down()).await;
}

/// Moves `clock` until every node's tier is available again. Each round waits until the retry of
/// every tier still unavailable is asleep on the clock, then moves the clock 30 s, past the
/// longest backoff, so that each tries once more. A probe can fail although Redis is back: the
/// Redis client's own reconnection, which the probe's PING awaits, backs off in real time.
async fn resume(clock: &ManualClock, nodes: &[&Node]) {
    within("the shared tier available again", async {
        loop {
            retries_asleep(clock, nodes).await;
            if nodes.iter().all(|node| node.shared().available()) {
                return;
            }
            advance(clock, 30);
        }
    })
    .await
}

#[tokio::test]
async fn the_breaker_probes_1_s_after_it_opens_then_2_s_after_a_failed_probe_on_the_clock() {
    let clock = clock();
    let mut redis = RedisServer::start();
    let origin = Origin::start(&clock, handler()).await;
    let node = Node::start(&origin, &clock, redis.url(), |_| {}).await;
    node.ready().await;
    redis.kill();
    // Three lookups fail: the breaker opens.
    for i in 0..3 {
        let path = format!("/o{i}");
        let r = get(&node.c, &path).await;
        assert_eq!((r.text(), r.cache_status()), (format!("{path}#1"), MISS_STORED));
    }
    assert!(!node.shared().available());
    retries_asleep(&clock, &[&node]).await;
    assert_eq!(clock.sleeping(), 1);
    clock.advance(Duration::from_millis(999));
    assert_eq!(clock.sleeping(), 1, "probed before 1 s");
    clock.advance(Duration::from_millis(1));
    assert_eq!(clock.sleeping(), 0, "not probed at 1 s");
    // Redis is still down: the probe fails and sleeps again, for 2 s.
    eventually("the probe asleep again", async || clock.sleeping() == 1).await;
    assert!(!node.shared().available());
    clock.advance(Duration::from_millis(1999));
    assert_eq!(clock.sleeping(), 1, "probed again before 2 s");
    clock.advance(Duration::from_millis(1));
    assert_eq!(clock.sleeping(), 0, "not probed again at 2 s");
    eventually("the probe asleep again", async || clock.sleeping() == 1).await;
    assert!(!node.shared().available());
    redis.restart();
    resume(&clock, &[&node]).await;
    assert_eq!(get(&node.c, "/after").await.cache_status(), MISS_STORED);
    wait_stored(&redis, "/after").await;
}

#[tokio::test]
async fn a_redis_unreachable_at_start_is_connected_to_100_ms_later_on_the_clock() {
    let clock = clock();
    let redis = RedisServer::start();
    let link = RedisLink::start(redis.addr()).await;
    link.cut();
    let origin = Origin::start(&clock, handler()).await;
    let node = Node::start(&origin, &clock, link.url(), |_| {}).await;
    retries_asleep(&clock, &[&node]).await;
    assert_eq!(clock.sleeping(), 1, "the connector is not waiting to try again");
    let r = get(&node.c, "/d").await;
    assert_eq!((r.text().as_str(), r.cache_status()), ("/d#1", MISS_STORED));
    link.restore();
    clock.advance(Duration::from_millis(99));
    assert_eq!(clock.sleeping(), 1, "tried again before 100 ms");
    clock.advance(Duration::from_millis(1));
    node.ready().await;
    assert_eq!(get(&node.c, "/e").await.cache_status(), MISS_STORED);
    wait_stored(&redis, "/e").await;
}

#[tokio::test]
async fn redis_down_at_start_the_proxy_serves_from_origin_and_memory() {
    let clock = clock();
    let origin = Origin::start(&clock, handler()).await;
    let closed = closed_port();
    let node = Node::start(&origin, &clock, format!("redis://{}", closed.addr()), |_| {}).await;
    let r = bounded(get(&node.c, "/d")).await;
    assert_eq!((r.status, r.text().as_str(), r.cache_status()), (200, "/d#1", MISS_STORED));
    let r = bounded(get(&node.c, "/d")).await;
    assert_eq!((r.text().as_str(), r.cache_status()), ("/d#1", hit(60).as_str()));
    assert_eq!(origin.count(), 1);
    assert!(!node.shared().available());
}

/// A bound on one request (not a performance assertion): 2 s.
async fn bounded<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(2), f).await.expect("request took more than 2 s")
}

#[tokio::test]
async fn a_redis_that_never_answers_delays_no_request_and_is_skipped() {
    let clock = clock();
    let fake = FakeRedis::start().await;
    let origin = Origin::start(&clock, handler()).await;
    let node = Node::start(&origin, &clock, fake.url(), |r| r.budget = Duration::from_millis(50)).await;
    for i in 0..10 {
        let path = format!("/f{}", i % 5);
        let r = bounded(get(&node.c, &path)).await;
        assert_eq!(r.status, 200);
        assert!(r.text().starts_with(&format!("{path}#")), "{path}: {}", r.text());
    }
    assert_eq!(origin.count(), 5);
    assert!(n(&node.stats().skipped) > 0, "Redis was not skipped: {:?}", node.stats());
    assert!(!node.shared().available());
}

#[tokio::test]
async fn corrupt_and_foreign_values_are_misses_and_counted() {
    let f = fleet().await;
    let c_key = key_name(HOST, "/c");
    f.redis.cmd::<i64>(&[b"HSET", c_key.as_bytes(), b"junk", b"garbage"]).await;
    // A valid envelope, but for another URL, copied under /c2's key.
    get(&f.a.c, "/other").await;
    wait_stored(&f.redis, "/other").await;
    let other: HashMap<String, Vec<u8>> = f.redis.cmd(&[b"HGETALL", key_name(HOST, "/other").as_bytes()]).await;
    let (field, value) = other.into_iter().next().expect("a variant of /other");
    f.redis.cmd::<i64>(&[b"HSET", key_name(HOST, "/c2").as_bytes(), field.as_bytes(), &value]).await;
    for p in ["/c", "/c2"] {
        let r = get(&f.b.c, p).await;
        assert_eq!((r.status, r.text(), r.cache_status()), (200, format!("{p}#1"), MISS_STORED), "{p}");
    }
    assert_eq!(n(&f.b.stats().bad_values), 2);
    assert_eq!(n(&f.b.stats().hits), 0);
    assert_eq!(f.origin.count_path("/c") + f.origin.count_path("/c2"), 2);
}

#[tokio::test]
async fn every_key_written_expires() {
    let f = fleet().await;
    get(&f.a.c, "/t").await;
    wait_stored(&f.redis, "/t").await;
    let key = key_name(HOST, "/t");
    // 60 s of freshness plus the default hour kept for revalidation.
    assert_expires_in(&f.redis, &key, 3660).await;
    post(&f.a.c, "/t").await;
    f.redis.until::<i64>("invalidation stream written", &[b"EXISTS", STREAM.as_bytes()], |n| *n == 1).await;
    assert_expires_in(&f.redis, STREAM, 86_400).await;
    assert!(!exists(&f.redis, "/t").await, "the invalidated URL's hash is still there");
    get(&f.b.c, "/t2").await;
    wait_stored(&f.redis, "/t2").await;
    let mut keys: Vec<String> = f.redis.cmd(&[b"KEYS", b"*"]).await;
    keys.sort();
    let t2 = key_name(HOST, "/t2");
    assert_eq!(keys, [STREAM, t2.as_str()]);
    assert_expires_in(&f.redis, &t2, 3660).await;
}

/// Asserts that `key` expires `secs` after it was written: Redis counts its TTL down in real
/// time, so up to a second may have gone since.
async fn assert_expires_in(redis: &RedisServer, key: &str, secs: i64) {
    let ms: i64 = redis.cmd(&[b"PTTL", key.as_bytes()]).await;
    assert!((secs * 1000 - 1000..=secs * 1000).contains(&ms), "{key}: PTTL {ms} ms, not {secs} s");
}

#[tokio::test]
async fn ttl_cap_bounds_every_key() {
    let clock = clock();
    let redis = RedisServer::start();
    let origin = Origin::start(&clock, handler()).await;
    let node = Node::start(&origin, &clock, redis.url(), |r| r.ttl_cap = Duration::from_secs(5)).await;
    node.ready().await;
    assert_eq!(get(&node.c, "/long").await.cache_status(), MISS_STORED);
    wait_stored(&redis, "/long").await;
    // max-age=3600, capped by ttl_cap.
    assert_expires_in(&redis, &key_name(HOST, "/long"), 5).await;
}

#[tokio::test]
async fn objects_larger_than_the_redis_limit_stay_in_memory_only() {
    let clock = clock();
    let redis = RedisServer::start();
    let origin = Origin::start(&clock, handler()).await;
    let node = Node::start(&origin, &clock, redis.url(), |r| r.max_object_bytes = 100).await;
    node.ready().await;
    assert_eq!(get(&node.c, "/big").await.cache_status(), MISS_STORED);
    let r = get(&node.c, "/big").await;
    assert_eq!((r.body.len(), r.cache_status()), (1000, hit(60).as_str()));
    // Writes are sent in order: once a later small object is there, the big one was skipped.
    get(&node.c, "/small").await;
    wait_stored(&redis, "/small").await;
    assert!(!exists(&redis, "/big").await, "an object over max_object_bytes was written to Redis");
    assert_eq!(n(&node.stats().dropped_writes), 0);
    assert_eq!(origin.count(), 2);
}

/// A Redis that requires a password (`requirepass`): the password comes from a file named in
/// proxy.toml, never from the file itself, and the nodes share through it.
#[tokio::test]
async fn a_redis_with_a_password_is_reached_with_the_password_file() {
    let clock = clock();
    let redis = RedisServer::start_with_password("s3cret-for-tests");
    let origin = Origin::start(&clock, handler()).await;
    let dir = std::env::temp_dir().join(format!("edgecache-redis-auth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("redis-password");
    std::fs::write(&file, "s3cret-for-tests\n").unwrap();
    let toml = format!("[redis]\nurl = \"{}\"\npassword_file = \"{}\"\n", redis.url(), file.display());
    let r = edgecache::Config::parse(&toml).expect("valid").redis.expect("[redis]");
    assert_eq!(format!("{:?}", r.password), "Some(Secret(..))", "the password is never printed");
    let (ra, rb) = (r.clone(), r);
    let a = Node::start(&origin, &clock, redis.url(), move |c| *c = ra).await;
    let b = Node::start(&origin, &clock, redis.url(), move |c| *c = rb).await;
    a.ready().await;
    b.ready().await;
    assert_eq!(get(&a.c, "/auth").await.cache_status(), MISS_STORED);
    wait_stored(&redis, "/auth").await;
    assert_eq!(get(&b.c, "/auth").await.cache_status(), SHARED_HIT);
    assert_eq!(origin.count(), 1);
}

#[tokio::test]
async fn a_wrong_redis_password_fails_open() {
    let clock = clock();
    let redis = RedisServer::start_with_password("right");
    let origin = Origin::start(&clock, handler()).await;
    let a = Node::start(&origin, &clock, redis.url(), |c| {
        c.password = edgecache::Config::parse("[redis]\npassword_env = \"PATH\"\n").unwrap().redis.unwrap().password;
    })
    .await;
    assert_eq!(get(&a.c, "/x").await.cache_status(), MISS_STORED);
    assert_eq!(get(&a.c, "/x").await.cache_status(), hit(60));
    assert!(!a.shared().available(), "connected with a wrong password");
}

/// `rediss://`: the shared tier over TLS, the server's certificate verified against the CA file
/// named by `redis.ca`; a server whose certificate that CA did not sign is never used.
#[tokio::test]
async fn a_redis_over_tls_is_verified_against_the_configured_ca() {
    use common::tls::{test_dir, TestCa};
    let clock = clock();
    let dir = test_dir("rediss");
    let ca = TestCa::new("redis CA");
    let (chain, key) = ca.leaf(&["localhost"]).write(&dir, "redis");
    let ca_file = ca.write(&dir, "ca.pem");
    let (redis, tls_url) = RedisServer::start_with_tls(&chain, &key, &ca_file);
    let origin = Origin::start(&clock, handler()).await;
    let toml = format!("[redis]\nurl = \"{tls_url}\"\nca = \"{}\"\n", ca_file.display());
    let r = edgecache::Config::parse(&toml).expect("valid").redis.expect("[redis]");
    let (ra, rb) = (r.clone(), r);
    let a = Node::start(&origin, &clock, tls_url.clone(), move |c| *c = ra).await;
    let b = Node::start(&origin, &clock, tls_url.clone(), move |c| *c = rb).await;
    a.ready().await;
    b.ready().await;
    assert_eq!(get(&a.c, "/tls").await.cache_status(), MISS_STORED);
    wait_stored(&redis, "/tls").await;
    assert_eq!(get(&b.c, "/tls").await.cache_status(), SHARED_HIT);

    // Another CA: the connection is refused, requests are served without the tier.
    let other = TestCa::new("someone else");
    let other_file = other.write(&dir, "other-ca.pem");
    let toml = format!("[redis]\nurl = \"{tls_url}\"\nca = \"{}\"\n", other_file.display());
    let r = edgecache::Config::parse(&toml).expect("valid").redis.expect("[redis]");
    let c = Node::start(&origin, &clock, tls_url, move |cfg| *cfg = r).await;
    assert_eq!(get(&c.c, "/other").await.cache_status(), MISS_STORED);
    assert!(!c.shared().available(), "connected to a server the CA did not sign");
}
