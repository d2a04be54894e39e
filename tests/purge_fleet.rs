//! Purges across a fleet sharing a real `redis-server`: every shape made on A is honoured on B
//! and applied to Redis (a purged object does not come back from it, even to a node started
//! later); soft purges make B revalidate; a purge made while A cannot reach Redis reaches B when
//! it can; a disconnected node catches up; after Redis restarts empty, nodes revalidate what they
//! hold instead of dropping it. Needs `redis-server` (never skipped).

pub mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use common::redis::{key_name, RedisLink, RedisServer, STREAM};
use common::*;
use edgecache::clock::ManualClock;
use edgecache::config::{AdminConfig, RedisConfig};
use edgecache::store::shared::{SharedTier, Stats};
use edgecache::store::CacheKey;
use edgecache::Running;

const HOST: &str = "www.example";

/// `{path}#{n}`, fresh for an hour (the clock moves by 30 s steps while a node reconnects);
/// `/tagged…` carries the tag `t`; `/e…` has an ETag and answers a matching `If-None-Match`
/// with 304.
fn handler(req: &Seen, n: usize) -> Reply {
    let path = req.path().to_string();
    let r = Reply::ok(format!("{path}#{n}")).cc("max-age=3600");
    if path.starts_with("/e") {
        if req.header("if-none-match") == Some("\"e1\"") {
            return Reply::status(304).header("etag", "\"e1\"").cc("max-age=3600");
        }
        return r.header("etag", "\"e1\"");
    }
    if path.starts_with("/tagged") {
        return r.header("surrogate-key", "t");
    }
    r
}

struct Node {
    p: Running,
    c: Client,
    admin: Client,
}

impl Node {
    async fn start(origin: &Origin, clock: &Arc<ManualClock>, url: String) -> Node {
        let r = RedisConfig { url, ..Default::default() };
        let p = start_proxy(origin.addr(), clock, move |cfg| {
            cfg.redis = Some(r);
            cfg.admin = Some(AdminConfig { listen: "127.0.0.1:0".parse().unwrap(), token: None });
        })
        .await;
        let (c, admin) = (Client::new(p.addr()), Client::new(p.admin_addr().unwrap()));
        let node = Node { p, c, admin };
        eventually("shared tier connected", async || node.shared().available()).await;
        node
    }

    fn shared(&self) -> SharedTier {
        self.p.proxy().shared().expect("shared tier").clone()
    }

    fn stats(&self) -> std::sync::Arc<Stats> {
        self.p.proxy().metrics().shared.clone()
    }

    async fn get(&self, host: &str, path: &str) -> Resp {
        self.c.get_with(path, &[("host", host)]).await
    }

    async fn purge(&self, json: &str) -> Resp {
        let r = self.admin.send("POST", "/purge", &[], Bytes::from(json.to_string())).await;
        assert_eq!(r.status, 200, "{}", r.text());
        r
    }

    fn in_memory(&self, host: &str, path: &str) -> bool {
        self.p.proxy().memory().get(&CacheKey::new("http", host, path)).is_some()
    }
}

fn n(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

/// Waits until `node` has written `writes` objects to Redis.
async fn written(node: &Node, writes: u64) {
    eventually("writes reached Redis", async || n(&node.stats().writes) >= writes).await;
}

/// Moves `clock` 30 s at a time (past the breaker's longest backoff) until `node`'s tier is
/// available again, each time once its retry is asleep on the clock.
async fn resume(clock: &ManualClock, node: &Node) {
    within("the shared tier available again", async {
        while !node.shared().available() {
            eventually("the retry asleep on the clock", async || clock.sleeping() >= 1 || node.shared().available())
                .await;
            if !node.shared().available() {
                advance(clock, 30);
            }
        }
    })
    .await
}

#[tokio::test]
async fn every_purge_shape_made_on_a_is_honoured_on_b_and_in_redis() {
    let clock = clock();
    let redis = RedisServer::start();
    let origin = Origin::start(&clock, handler).await;
    let a = Node::start(&origin, &clock, redis.url()).await;
    let b = Node::start(&origin, &clock, redis.url()).await;
    redis.wait_readers(2).await;
    let urls = [(HOST, "/u"), (HOST, "/tagged"), ("other.example", "/x"), (HOST, "/blog/p"), (HOST, "/keep")];
    for (h, p) in urls {
        assert_eq!(b.get(h, p).await.cache_status(), MISS_STORED);
    }
    written(&b, 5).await;
    a.purge(r#"{"files":["http://www.example/u"]}"#).await;
    a.purge(r#"{"tags":["t"]}"#).await;
    a.purge(r#"{"hosts":["other.example"]}"#).await;
    a.purge(r#"{"prefixes":["http://www.example/blog/"]}"#).await;
    // A URL purge is two: its http and its https key.
    eventually("B applied A's five purges", async || n(&b.stats().remote_purges) == 5).await;
    assert!(!b.in_memory(HOST, "/u") && !b.in_memory(HOST, "/tagged"), "URL and tag purges not applied at once");
    for (h, p) in urls {
        let r = b.get(h, p).await;
        // Purged: fetched again from the origin, neither served from B's memory nor from Redis.
        let want = if p == "/keep" { hit(3600) } else { MISS_STORED.to_string() };
        assert_eq!(r.cache_status(), want, "{h}{p}");
    }
    assert_eq!(origin.count(), 9);
    assert_eq!(n(&a.stats().remote_purges), 0, "A applied its own purges twice");
    // What the purges left in Redis expires.
    for key in [key_name(HOST, "/u"), "ec:v1:purges".to_string(), STREAM.to_string()] {
        let ttl: i64 = redis.cmd(&[b"PTTL", key.as_bytes()]).await;
        assert!(ttl > 0, "{key}: PTTL {ttl}");
    }
    a.purge(r#"{"purge_everything":true}"#).await;
    eventually("B applied the purge of everything", async || n(&b.stats().remote_purges) == 6).await;
    assert_eq!(b.get(HOST, "/keep").await.cache_status(), MISS_STORED);
}

#[tokio::test]
async fn a_node_started_after_a_purge_does_not_take_the_purged_object_from_redis() {
    let clock = clock();
    let redis = RedisServer::start();
    let origin = Origin::start(&clock, handler).await;
    let a = Node::start(&origin, &clock, redis.url()).await;
    for p in ["/tagged", "/other"] {
        a.get(HOST, p).await;
    }
    written(&a, 2).await;
    a.purge(r#"{"tags":["t"]}"#).await;
    eventually("A's purge published", async || n(&a.stats().published_purges) == 1).await;
    let c = Node::start(&origin, &clock, redis.url()).await;
    redis.wait_readers(2).await;
    assert_eq!(c.get(HOST, "/tagged").await.cache_status(), MISS_STORED);
    assert_eq!(c.get(HOST, "/other").await.cache_status(), "edgecache; hit; tier=shared; ttl=3600");
}

#[tokio::test]
async fn a_soft_purge_on_a_makes_b_revalidate_and_keep_the_body() {
    let clock = clock();
    let redis = RedisServer::start();
    let origin = Origin::start(&clock, handler).await;
    let a = Node::start(&origin, &clock, redis.url()).await;
    let b = Node::start(&origin, &clock, redis.url()).await;
    redis.wait_readers(2).await;
    let first = b.get(HOST, "/e").await;
    a.purge(r#"{"files":["http://www.example/e"],"soft":true}"#).await;
    eventually("B applied the soft purge (of both keys)", async || n(&b.stats().remote_purges) == 2).await;
    let r = b.get(HOST, "/e").await;
    assert_eq!(r.cache_status(), "edgecache; fwd=stale; fwd-status=304; stored");
    assert_eq!(r.text(), first.text());
    assert_eq!(origin.last().header("if-none-match"), Some("\"e1\""));
}

#[tokio::test]
async fn a_purge_made_while_a_cannot_reach_redis_reaches_b_when_it_can() {
    let clock = clock();
    let redis = RedisServer::start();
    let link = RedisLink::start(redis.addr()).await;
    let origin = Origin::start(&clock, handler).await;
    let a = Node::start(&origin, &clock, link.url()).await;
    let b = Node::start(&origin, &clock, redis.url()).await;
    redis.wait_readers(2).await;
    b.get(HOST, "/tagged").await;
    link.cut();
    let r = a.purge(r#"{"tags":["t"]}"#).await;
    assert_eq!(r.status, 200);
    eventually("A's breaker open", async || !a.shared().available()).await;
    assert_eq!(a.shared().pending_purges(), 1, "the purge was not kept");
    assert!(b.get(HOST, "/tagged").await.is_hit(), "B cannot have heard of it yet");
    link.restore();
    resume(&clock, &a).await;
    eventually("B applied A's kept purge", async || n(&b.stats().remote_purges) == 1).await;
    eventually("A's outbox empty", async || a.shared().pending_purges() == 0).await;
    assert_eq!(b.get(HOST, "/tagged").await.cache_status(), MISS_STORED);
}

#[tokio::test]
async fn a_disconnected_node_catches_up_on_the_purges_it_missed() {
    let clock = clock();
    let redis = RedisServer::start();
    let link = RedisLink::start(redis.addr()).await;
    let origin = Origin::start(&clock, handler).await;
    let a = Node::start(&origin, &clock, redis.url()).await;
    let b = Node::start(&origin, &clock, link.url()).await;
    redis.wait_readers(2).await;
    for (h, p) in [(HOST, "/tagged"), ("other.example", "/x"), (HOST, "/keep")] {
        b.get(h, p).await;
    }
    link.cut();
    a.purge(r#"{"tags":["t"]}"#).await;
    a.purge(r#"{"hosts":["other.example"]}"#).await;
    redis.until::<i64>("A's purges in the stream", &[b"XLEN", STREAM.as_bytes()], |n| *n == 2).await;
    assert!(b.get(HOST, "/tagged").await.is_hit(), "B cannot have heard of it yet");
    link.restore();
    eventually("B replayed the purges it missed", async || n(&b.stats().remote_purges) == 2).await;
    assert_eq!(n(&b.stats().lost_track), 0, "B lost track although the stream held its position");
    assert_eq!(b.get(HOST, "/tagged").await.cache_status(), MISS_STORED);
    assert_eq!(b.get("other.example", "/x").await.cache_status(), MISS_STORED);
    assert!(b.get(HOST, "/keep").await.is_hit(), "B purged more than it missed");
}

#[tokio::test]
async fn after_redis_restarts_empty_nodes_revalidate_what_they_hold_instead_of_dropping_it() {
    let clock = clock();
    let mut redis = RedisServer::start();
    // One entry in the stream: both readers start from a real position.
    let seed = CacheKey::new("http", HOST, "/seed").to_string();
    redis.cmd::<String>(&[b"XADD", STREAM.as_bytes(), b"*", b"key", seed.as_bytes(), b"node", b"test"]).await;
    let origin = Origin::start(&clock, handler).await;
    let a = Node::start(&origin, &clock, redis.url()).await;
    let b = Node::start(&origin, &clock, redis.url()).await;
    redis.wait_readers(2).await;
    for node in [&a, &b] {
        node.get(HOST, "/e").await;
    }
    assert_eq!(origin.count(), 1, "B did not take A's copy from Redis");
    redis.restart();
    for node in [&a, &b] {
        eventually("the node noticed it lost track", async || n(&node.stats().lost_track) == 1).await;
        assert!(node.in_memory(HOST, "/e"), "the memory tier was dropped");
        let r = node.get(HOST, "/e").await;
        assert_eq!(r.cache_status(), "edgecache; fwd=stale; fwd-status=304; stored");
        assert_eq!(r.text(), "/e#1");
    }
    assert_eq!(origin.count(), 3, "one conditional request per node");
}
