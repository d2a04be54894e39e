//! Origin pools: failover when a server dies, its return once healthy, active health checks on
//! the proxy's clock, backups, stale responses and 503 when every server is down, the retry of a
//! request no server received, the choice by cache key, and the per-server limits.

pub mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use edgecache::upstream::OriginPool;
use edgecache::Running;
use tokio::sync::Notify;

const SHOP: &[(&str, &str)] = &[("host", "shop.example")];

/// One site in front of `servers` (URLs' authorities), with `more` in its `[[site]]` table
/// (before the servers) and `tail` after them.
fn pool_site(servers: &[(std::net::SocketAddr, &str)], more: &str, tail: &str) -> String {
    let mut t = format!("[[site]]\nname = \"shop\"\nhosts = [\"shop.example\"]\n{more}\n");
    for (addr, extra) in servers {
        t.push_str(&format!("[[site.server]]\nurl = \"http://{addr}\"\n{extra}\n"));
    }
    t.push_str(tail);
    t
}

fn pool(p: &Running) -> Arc<OriginPool> {
    let proxy = p.proxy();
    let sites = proxy.sites();
    sites.get(sites.by_name("shop").expect("site shop")).pool.clone()
}

/// Sends `n` requests for distinct uncacheable URLs, `at_once` at a time; returns every status.
async fn load(c: &Arc<Client>, prefix: &str, n: usize, at_once: usize) -> Vec<u16> {
    let mut statuses = Vec::with_capacity(n);
    for batch in 0..n.div_ceil(at_once) {
        let mut tasks = tokio::task::JoinSet::new();
        for i in batch * at_once..((batch + 1) * at_once).min(n) {
            let (c, url) = (c.clone(), format!("{prefix}{i}"));
            tasks.spawn(async move { c.get_with(&url, SHOP).await.status });
        }
        while let Some(s) = tasks.join_next().await {
            statuses.push(s.unwrap());
        }
    }
    statuses
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_server_in_a_pool_of_two_costs_no_request_and_is_used_again_once_healthy() {
    let clock = clock();
    let live = Origin::start(&clock, |_, _| Reply::ok("live").cc("no-store")).await;
    let dead = closed_port();
    let text =
        pool_site(&[(live.addr(), ""), (dead.addr(), "")], "", "[site.health]\neject_after = 1\neject_for = \"30s\"\n");
    let p = start_proxy_toml(&text, &clock, |_| {}).await;
    let c = Arc::new(Client::new(p.addr()));
    let shop = pool(&p);
    let dead_server = &shop.servers()[1];
    assert_eq!(load(&c, "/a", 4, 4).await, vec![200; 4], "not even a request that found it dead failed");
    let found_dead = dead_server.stats().failed.load(Ordering::Relaxed);
    // Up to every request of the first batch may have chosen it before the first found it dead.
    assert!((1..=4).contains(&found_dead), "{found_dead}");
    assert_eq!(dead_server.stats().retried_elsewhere.load(Ordering::Relaxed), found_dead);
    assert!(!pool(&p).is_up(1));
    assert_eq!(load(&c, "/a", 40, 4).await, vec![200; 40]);
    assert_eq!(dead_server.stats().failed.load(Ordering::Relaxed), found_dead, "left alone once ejected");
    assert_eq!(live.count(), 44);

    let dead_addr = dead.addr();
    let back = Origin::start_on(dead.listen(), &clock, |_, _| Reply::ok("back").cc("no-store"));
    assert_eq!(back.addr(), dead_addr);
    advance(&clock, 30);
    assert!(pool(&p).is_up(1), "its ejection is over: it gets a trial");
    let statuses = load(&c, "/b", 20, 1).await;
    assert_eq!(statuses, vec![200; 20]);
    assert_eq!((live.count(), back.count()), (54, 10), "round robin again");
}

#[tokio::test]
async fn active_checks_take_a_failing_server_out_and_bring_it_back_on_the_proxys_clock() {
    let clock = clock();
    let a = Origin::start(&clock, |_, _| Reply::ok("a").cc("no-store")).await;
    let sick = Arc::new(AtomicBool::new(false));
    let s = sick.clone();
    let b = Origin::start(&clock, move |req, _| {
        if req.path() == "/health" && s.load(Ordering::SeqCst) {
            Reply::status(503)
        } else {
            Reply::ok("b").cc("no-store")
        }
    })
    .await;
    let health = "[site.health]\npath = \"/health\"\ninterval = \"10s\"\ntimeout = \"2s\"\nwindow = 3\nthreshold = 2\n";
    let p = start_proxy_toml(&pool_site(&[(a.addr(), ""), (b.addr(), "")], "", health), &clock, |_| {}).await;
    let c = Arc::new(Client::new(p.addr()));
    let pool = pool(&p);
    // The first round runs at start; then one every 10 s of the proxy's clock.
    b.wait_count(1).await;
    eventually("the checker asleep until its next round", async || clock.sleeping() >= 1).await;

    sick.store(true, Ordering::SeqCst);
    pool.check_now().await;
    assert!(pool.is_up(1), "one failure of the two needed");
    let mut changes = pool.changes();
    changes.mark_unchanged();
    advance(&clock, 10);
    within("a round driven by the clock", changes.changed()).await.unwrap();
    assert!(!pool.is_up(1), "the second failure takes it down");
    let before = b.count();
    assert_eq!(load(&c, "/a", 10, 2).await, vec![200; 10]);
    assert_eq!(b.count(), before, "a server that is down gets no request");

    sick.store(false, Ordering::SeqCst);
    pool.check_now().await;
    pool.check_now().await;
    assert!(pool.is_up(1));
    assert_eq!(load(&c, "/b", 10, 1).await, vec![200; 10]);
    assert_eq!(b.count() - before, 2 + 5, "two checks, then half of the requests");
    let stats = pool.servers()[1].stats();
    assert_eq!((stats.checks_failed.load(Ordering::Relaxed), stats.checks_passed.load(Ordering::Relaxed)), (2, 3));
}

#[tokio::test]
async fn a_backup_gets_requests_only_while_every_primary_is_down() {
    let clock = clock();
    let sick = Arc::new(AtomicBool::new(false));
    let s = sick.clone();
    let primary = Origin::start(&clock, move |req, _| {
        if req.path() == "/health" && s.load(Ordering::SeqCst) {
            Reply::status(500)
        } else {
            Reply::ok("primary").cc("no-store")
        }
    })
    .await;
    let backup = Origin::start(&clock, |_, _| Reply::ok("backup").cc("no-store")).await;
    let health = "[site.health]\npath = \"/health\"\ninterval = \"1h\"\nwindow = 1\nthreshold = 1\n";
    let servers = [(primary.addr(), ""), (backup.addr(), "backup = true")];
    let p = start_proxy_toml(&pool_site(&servers, "", health), &clock, |_| {}).await;
    let c = Client::new(p.addr());
    eventually("the first round of checks done", async || clock.sleeping() >= 1).await;
    for _ in 0..3 {
        assert_eq!(c.get_with("/p", SHOP).await.text(), "primary");
    }
    sick.store(true, Ordering::SeqCst);
    pool(&p).check_now().await;
    for _ in 0..3 {
        assert_eq!(c.get_with("/p", SHOP).await.text(), "backup");
    }
    sick.store(false, Ordering::SeqCst);
    pool(&p).check_now().await;
    assert_eq!(c.get_with("/p", SHOP).await.text(), "primary");
    assert_eq!(backup.count_path("/p"), 3);
}

#[tokio::test]
async fn when_every_server_is_down_stale_is_served_then_503_origin_down() {
    let clock = clock();
    let sick = Arc::new(AtomicBool::new(false));
    let mut origins = Vec::new();
    for _ in 0..2 {
        let s = sick.clone();
        origins.push(
            Origin::start(&clock, move |req, n| {
                if req.path() == "/health" && s.load(Ordering::SeqCst) {
                    Reply::status(503)
                } else {
                    Reply::ok(format!("v{n}")).cc("max-age=1")
                }
            })
            .await,
        );
    }
    let health = "[site.health]\npath = \"/health\"\ninterval = \"1h\"\nwindow = 1\nthreshold = 1\n";
    let servers = [(origins[0].addr(), ""), (origins[1].addr(), "")];
    let p = start_proxy_toml(&pool_site(&servers, "", health), &clock, |_| {}).await;
    let c = Client::new(p.addr());
    eventually("the first round of checks done", async || clock.sleeping() >= 1).await;
    assert_eq!(c.get_with("/s", SHOP).await.cache_status(), MISS_STORED);
    sick.store(true, Ordering::SeqCst);
    pool(&p).check_now().await;
    assert!(!pool(&p).is_up(0) && !pool(&p).is_up(1));

    advance(&clock, 2);
    let r = c.get_with("/s", SHOP).await;
    assert_eq!((r.status, r.cache_status()), (200, "edgecache; hit; fwd=stale; ttl=-1; detail=stale-if-error"));
    advance(&clock, 20);
    let r = c.get_with("/s", SHOP).await;
    assert_eq!((r.status, r.cache_status()), (503, "edgecache; fwd=stale; detail=origin-down"), "past the grace");
    let r = c.get_with("/never-stored", SHOP).await;
    assert_eq!((r.status, r.cache_status()), (503, "edgecache; fwd=uri-miss; detail=origin-down"));
    assert_eq!(origins[0].count_path("/s") + origins[1].count_path("/s"), 1, "nobody was asked");
}

#[tokio::test]
async fn a_request_no_server_received_is_retried_elsewhere_only_when_idempotent() {
    let clock = clock();
    let live = Origin::start(&clock, |_, _| Reply::ok("live").cc("no-store")).await;
    let dead = closed_port();
    // Never ejected: every request to the dead server finds it dead.
    let text = pool_site(&[(dead.addr(), ""), (live.addr(), "")], "", "[site.health]\neject_after = 0\n");
    let p = start_proxy_toml(&text, &clock, |_| {}).await;
    let c = Client::new(p.addr());
    // Round robin: the dead server, the live one, the dead one again.
    let r = c.send("POST", "/order", SHOP, bytes::Bytes::from_static(b"x")).await;
    assert_eq!(
        (r.status, r.cache_status()),
        (502, "edgecache; fwd=bypass; detail=origin-unreachable"),
        "never retried"
    );
    let r = c.get_with("/p", SHOP).await;
    assert_eq!((r.status, r.text().as_str()), (200, "live"), "the live server's turn");
    let r = c.send("DELETE", "/item", SHOP, bytes::Bytes::new()).await;
    assert_eq!((r.status, r.text().as_str()), (200, "live"), "the dead server's turn: an idempotent method goes on");
    assert_eq!(live.count(), 2);
    let shop = pool(&p);
    let stats = shop.servers()[0].stats();
    assert_eq!((stats.failed.load(Ordering::Relaxed), stats.retried_elsewhere.load(Ordering::Relaxed)), (2, 1));
}

#[tokio::test]
async fn the_hash_balance_fetches_each_object_from_one_server() {
    let clock = clock();
    let a = Origin::start(&clock, |_, _| Reply::ok("a").cc("no-store")).await;
    let b = Origin::start(&clock, |_, _| Reply::ok("b").cc("no-store")).await;
    let p =
        start_proxy_toml(&pool_site(&[(a.addr(), ""), (b.addr(), "")], "balance = \"hash\"", ""), &clock, |_| {}).await;
    let c = Client::new(p.addr());
    for round in 0..3 {
        for i in 0..20 {
            c.get_with(&format!("/k{i}"), SHOP).await;
        }
        for i in 0..20 {
            let path = format!("/k{i}");
            let (at_a, at_b) = (a.count_path(&path), b.count_path(&path));
            let servers = [at_a, at_b].iter().filter(|&&n| n > 0).count();
            assert_eq!(servers, 1, "{path}: fetched from one server only");
            assert_eq!(at_a + at_b, round + 1);
        }
    }
    assert!(a.count() > 0 && b.count() > 0, "20 keys all on one server: {} and {}", a.count(), b.count());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_hold_under_a_burst_of_misses() {
    let clock = clock();
    let gate = Arc::new(Notify::new());
    let (ga, gb) = (gate.clone(), gate.clone());
    let a = Origin::start(&clock, move |_, _| Reply::ok("a").cc("max-age=60").gate(ga.clone())).await;
    let b = Origin::start(&clock, move |_, _| Reply::ok("b").cc("max-age=60").gate(gb.clone())).await;
    let limits = "max_connections = 4\nmax_requests = 2";
    let text = pool_site(&[(a.addr(), limits), (b.addr(), limits)], "", "");
    let p = start_proxy_toml(&text, &clock, |cfg| cfg.timeouts.origin_queue = Duration::from_millis(300)).await;
    let c = Arc::new(Client::new(p.addr()));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..30 {
        let c = c.clone();
        tasks.spawn(async move { c.get_with(&format!("/burst{i}"), SHOP).await });
    }
    a.wait_count(2).await;
    b.wait_count(2).await;
    // The queue's 300 ms pass for the 26 others: each is answered 503.
    let mut busy = 0;
    while busy < 26 {
        let r = within("a queued request's 503", tasks.join_next()).await.unwrap().unwrap();
        assert_eq!((r.status, r.cache_status()), (503, "edgecache; fwd=uri-miss; detail=origin-busy"));
        busy += 1;
    }
    assert_eq!((a.count(), b.count()), (2, 2), "two in flight per server, never more");
    gate.notify_waiters();
    while let Some(r) = tasks.join_next().await {
        assert_eq!(r.unwrap().status, 200);
    }
    assert!(a.connections() <= 4 && b.connections() <= 4);
}
