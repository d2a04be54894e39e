//! The shared tier on memcached: two nodes in front of one origin share what either stored
//! across a list of servers, an invalidation reaches the other node when its memory copy runs
//! out (`memcached.memory_ttl`), a purge when it next reads the record of purges, and a
//! memcached that dies fails no request. Needs `memcached` (never skipped).

pub mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::memcached::{key_name, MemcachedServer};
use common::*;
use edgecache::clock::ManualClock;
use edgecache::config::{AdminConfig, MemcachedConfig};
use edgecache::store::shared::{SharedTier, Stats};
use edgecache::store::CacheKey;
use edgecache::Running;

/// Every request carries this `Host`.
const HOST: &str = "www.example";

/// `Cache-Status` of a hit found in the shared tier, 60 s left.
const SHARED_HIT: &str = "edgecache; hit; tier=shared; ttl=60";

/// GET: `{path}#{n}` (n counted per path) fresh for 60 s, tagged `t` under `/t`; `/v…` varies on
/// `Accept-Language`, `/big…` is 1000 bytes, `/huge…` 1.5 MB. Other methods: 200 `done`.
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
        } else if path.starts_with("/huge") {
            // Over memcached's default item size (1 MiB).
            Reply::ok(vec![b'x'; 1_500_000]).cc("max-age=60")
        } else if path.starts_with("/t") {
            Reply::ok(format!("{path}#{n}")).cc("max-age=60").header("surrogate-key", "t")
        } else {
            Reply::ok(format!("{path}#{n}")).cc("max-age=60")
        }
    }
}

/// A node: a proxy whose shared tier is memcached at `servers`, with an admin listener.
struct Node {
    p: Running,
    c: Client,
    admin: Client,
}

impl Node {
    async fn start(
        origin: &Origin,
        clock: &Arc<ManualClock>,
        servers: Vec<String>,
        tweak: impl FnOnce(&mut MemcachedConfig),
    ) -> Node {
        let mut m = MemcachedConfig { servers, ..Default::default() };
        tweak(&mut m);
        let p = start_proxy(origin.addr(), clock, move |cfg| {
            cfg.memcached = Some(m);
            cfg.admin = Some(AdminConfig { listen: "127.0.0.1:0".parse().unwrap(), token: None });
        })
        .await;
        let (c, admin) = (Client::new(p.addr()), Client::new(p.admin_addr().unwrap()));
        Node { p, c, admin }
    }

    fn shared(&self) -> SharedTier {
        self.p.proxy().shared().expect("shared tier configured").clone()
    }

    fn stats(&self) -> Arc<Stats> {
        self.p.proxy().metrics().shared.clone()
    }

    fn in_memory(&self, path: &str) -> bool {
        self.p.proxy().memory().get(&CacheKey::new("http", HOST, path)).is_some()
    }

    async fn purge(&self, json: &str) {
        let r = self.admin.send("POST", "/purge", &[], Bytes::from(json.to_string())).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
}

async fn get(c: &Client, path: &str) -> Resp {
    c.get_with(path, &[("host", HOST)]).await
}

fn n(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

/// Two nodes A and B in front of one origin and one memcached, on one clock; each node's reader
/// of the record of purges has made its first read and sleeps on the clock.
struct Fleet {
    clock: Arc<ManualClock>,
    origin: Origin,
    mc: MemcachedServer,
    a: Node,
    b: Node,
}

async fn fleet() -> Fleet {
    let clock = clock();
    let mc = MemcachedServer::start();
    let origin = Origin::start(&clock, handler()).await;
    let a = Node::start(&origin, &clock, vec![mc.addr()], |_| {}).await;
    let b = Node::start(&origin, &clock, vec![mc.addr()], |_| {}).await;
    readers_asleep(&clock, 2).await;
    Fleet { clock, origin, mc, a, b }
}

/// Waits until `n` readers of the record of purges (one per node) sleep on the clock.
async fn readers_asleep(clock: &ManualClock, n: usize) {
    eventually("the record readers asleep on the clock", async || clock.sleeping() == n).await;
}

async fn written(node: &Node, writes: u64) {
    eventually("writes reached memcached", async || n(&node.stats().writes) >= writes).await;
}

#[tokio::test]
async fn what_a_stored_is_a_shared_hit_on_b_with_age_from_a_times() {
    let f = fleet().await;
    assert_eq!(get(&f.a.c, "/a").await.cache_status(), MISS_STORED);
    written(&f.a, 1).await;
    assert!(f.mc.get(&key_name(HOST, "/a")).is_some());
    advance(&f.clock, 4);
    let r = get(&f.b.c, "/a").await;
    assert_eq!((r.status, r.text().as_str()), (200, "/a#1"));
    assert_eq!(r.cache_status(), "edgecache; hit; tier=shared; ttl=56");
    assert_eq!(r.age(), Some(4));
    let r = get(&f.b.c, "/a").await;
    assert_eq!((r.text().as_str(), r.cache_status()), ("/a#1", hit(56).as_str()));
    assert_eq!((n(&f.b.stats().hits), f.origin.count()), (1, 1));
}

#[tokio::test]
async fn every_variant_of_a_url_is_kept_in_its_one_bundle() {
    let f = fleet().await;
    let lang = async |c: &Client, l: &'static str| c.get_with("/v", &[("host", HOST), ("accept-language", l)]).await;
    assert_eq!(lang(&f.a.c, "en").await.text(), "/v en#1");
    assert_eq!(lang(&f.a.c, "fr").await.text(), "/v fr#2");
    written(&f.a, 2).await;
    let en = lang(&f.b.c, "en").await;
    assert_eq!((en.text().as_str(), en.cache_status()), ("/v en#1", SHARED_HIT));
    // Both variants came in the one read, and were promoted.
    let fr = lang(&f.b.c, "fr").await;
    assert_eq!((fr.text().as_str(), fr.cache_status()), ("/v fr#2", hit(60).as_str()));
    assert_eq!(f.origin.count(), 2);
}

#[tokio::test]
async fn urls_are_spread_over_the_servers_and_every_node_finds_each_on_the_same_one() {
    let clock = clock();
    let (one, two) = (MemcachedServer::start(), MemcachedServer::start());
    let origin = Origin::start(&clock, handler()).await;
    let servers = vec![one.addr(), two.addr()];
    let a = Node::start(&origin, &clock, servers.clone(), |_| {}).await;
    // B lists the servers in the other order: placement does not depend on it.
    let b = Node::start(&origin, &clock, servers.into_iter().rev().collect(), |_| {}).await;
    let paths: Vec<String> = (0..20).map(|i| format!("/s{i}")).collect();
    for p in &paths {
        assert_eq!(get(&a.c, p).await.cache_status(), MISS_STORED);
    }
    written(&a, 20).await;
    let on = |s: &MemcachedServer| paths.iter().filter(|p| s.get(&key_name(HOST, p)).is_some()).count();
    let (on_one, on_two) = (on(&one), on(&two));
    assert_eq!(on_one + on_two, 20, "a URL on both servers, or on neither");
    assert!(on_one > 0 && on_two > 0, "every URL on one server: {on_one} / {on_two}");
    for p in &paths {
        assert_eq!(get(&b.c, p).await.cache_status(), SHARED_HIT, "{p}");
    }
    assert_eq!(origin.count(), 20);
}

#[tokio::test]
async fn an_invalidation_on_a_reaches_b_when_its_memory_copy_runs_out() {
    let f = fleet().await;
    get(&f.a.c, "/i").await;
    written(&f.a, 1).await;
    assert_eq!(get(&f.b.c, "/i").await.cache_status(), SHARED_HIT);
    assert_eq!(f.a.c.send("POST", "/i", &[("host", HOST)], Bytes::from_static(b"x")).await.status, 200);
    written(&f.a, 2).await;
    assert_eq!(f.mc.get(&key_name(HOST, "/i")), None, "the invalidation left the object in memcached");
    // Memcached cannot tell B: B's memory copy is served until memory_ttl (5 s) ends.
    advance(&f.clock, 4);
    assert_eq!(get(&f.b.c, "/i").await.cache_status(), hit(56));
    advance(&f.clock, 1);
    let r = get(&f.b.c, "/i").await;
    assert_eq!((r.text().as_str(), r.cache_status()), ("/i#2", MISS_STORED));
}

#[tokio::test]
async fn a_tag_purge_on_a_reaches_b_at_its_next_read_of_the_record_and_bars_memcached_copies() {
    let f = fleet().await;
    for p in ["/t1", "/keep"] {
        get(&f.b.c, p).await;
    }
    written(&f.b, 2).await;
    f.a.purge(r#"{"tags":["t"]}"#).await;
    eventually("A published the purge", async || n(&f.a.stats().published_purges) == 1).await;
    // B has not read the record yet.
    assert!(f.b.in_memory("/t1"));
    advance(&f.clock, 5);
    eventually("B applied A's purge", async || n(&f.b.stats().remote_purges) == 1).await;
    assert!(!f.b.in_memory("/t1"), "the tag purge was not applied to B's memory");
    // The copy in memcached is refused on read: fetched again from the origin.
    let r = get(&f.b.c, "/t1").await;
    assert_eq!((r.text().as_str(), r.cache_status()), ("/t1#2", MISS_STORED));
    // B's memory copy ran out (memory_ttl): read again from memcached, which still has it.
    assert_eq!(get(&f.b.c, "/keep").await.cache_status(), "edgecache; hit; tier=shared; ttl=55");
    assert_eq!(n(&f.a.stats().remote_purges), 0, "A applied its own purge twice");
    let ttl = f.mc.ttl("ec:v1:purges").expect("the record of purges");
    assert!((1..=86_400).contains(&ttl), "the record expires: {ttl}");
}

#[tokio::test]
async fn a_node_started_after_a_hard_url_purge_does_not_get_the_object_back_from_memcached() {
    let f = fleet().await;
    get(&f.a.c, "/u").await;
    written(&f.a, 1).await;
    f.a.purge(r#"{"files":["http://www.example/u"]}"#).await;
    eventually("A published the purge", async || n(&f.a.stats().published_purges) == 2).await;
    let c = Node::start(&f.origin, &f.clock, vec![f.mc.addr()], |_| {}).await;
    let r = get(&c.c, "/u").await;
    assert_eq!((r.text().as_str(), r.cache_status()), ("/u#2", MISS_STORED));
}

#[tokio::test]
async fn a_memcached_killed_fails_no_request_and_the_breaker_closes_after_its_restart() {
    let mut f = fleet().await;
    get(&f.a.c, "/k").await;
    written(&f.a, 1).await;
    f.mc.kill();
    for i in 0..5 {
        let r = get(&f.b.c, &format!("/m{i}")).await;
        assert_eq!((r.status, r.cache_status()), (200, MISS_STORED));
    }
    assert!(!f.b.shared().available(), "the breaker did not open");
    assert!(n(&f.b.stats().skipped) > 0, "calls were not skipped with the breaker open");
    f.mc.restart();
    // The probe runs 1 s after the breaker opened, on the clock; both readers and the probe sleep.
    readers_asleep(&f.clock, 3).await;
    advance(&f.clock, 1);
    eventually("the breaker closed", async || f.b.shared().available()).await;
    get(&f.b.c, "/back").await;
    written(&f.b, 1).await;
    assert_eq!(get(&f.a.c, "/back").await.cache_status(), SHARED_HIT);
}

#[tokio::test]
async fn a_value_that_is_not_a_bundle_is_a_miss_and_counted() {
    let f = fleet().await;
    f.mc.set(&key_name(HOST, "/g"), b"garbage");
    let r = get(&f.a.c, "/g").await;
    assert_eq!((r.text().as_str(), r.cache_status()), ("/g#1", MISS_STORED));
    assert_eq!(n(&f.a.stats().bad_values), 1);
}

#[tokio::test]
async fn every_key_expires_within_ttl_cap_and_large_objects_stay_in_memory() {
    let clock = clock();
    let mc = MemcachedServer::start();
    let origin = Origin::start(&clock, handler()).await;
    let a = Node::start(&origin, &clock, vec![mc.addr()], |m| {
        m.ttl_cap = Duration::from_secs(30);
        m.max_object_bytes = 100;
    })
    .await;
    get(&a.c, "/small").await;
    written(&a, 1).await;
    // max-age=60 and an hour of keep_stale, capped at 30 s (memcached counts whole seconds of its
    // own clock, which may tick between the write and this read).
    let ttl = mc.ttl(&key_name(HOST, "/small")).expect("stored");
    assert!(ttl == 30 || ttl == 29, "TTL {ttl}");
    get(&a.c, "/big").await;
    get(&a.c, "/after").await;
    written(&a, 2).await;
    assert_eq!(mc.get(&key_name(HOST, "/big")), None, "an object over max_object_size was written");
}

#[tokio::test]
async fn an_object_memcached_refuses_for_its_size_is_a_dropped_write_not_a_failing_server() {
    let clock = clock();
    let mc = MemcachedServer::start();
    let origin = Origin::start(&clock, handler()).await;
    let a = Node::start(&origin, &clock, vec![mc.addr()], |m| m.max_object_bytes = 2 << 20).await;
    for i in 0..4 {
        // Streamed to the client before it is stored: the head says no more than the miss.
        let r = get(&a.c, &format!("/huge{i}")).await;
        assert_eq!((r.status, r.cache_status()), (200, "edgecache; fwd=uri-miss; fwd-status=200"));
    }
    eventually("the four writes refused", async || n(&a.stats().dropped_writes) == 4).await;
    assert_eq!(n(&a.stats().errors), 0, "a refused value counted as a failing server");
    assert!(a.shared().available(), "the breaker opened");
    get(&a.c, "/after").await;
    written(&a, 1).await;
}
