//! The shared tier on a real Redis Cluster (three masters started by the test): objects written
//! by one node under keys spread over every hash slot are shared hits on the other, and an
//! invalidation reaches it. Needs `redis-server` and `redis-cli` (never skipped).

pub mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::redis::RedisCluster;
use common::*;
use edgecache::config::RedisConfig;

const HOST: &str = "www.example";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cluster_shares_objects_across_slots_and_invalidations() {
    let cluster = tokio::task::spawn_blocking(RedisCluster::start).await.expect("cluster");
    let clock = clock();
    let origin = Origin::start(&clock, |req, _| Reply::ok(req.path().to_string()).cc("max-age=60")).await;
    let redis = RedisConfig { url: cluster.url(), cluster: true, ..Default::default() };
    let (ra, rb) = (redis.clone(), redis);
    let a = start_proxy(origin.addr(), &clock, move |cfg| cfg.redis = Some(ra)).await;
    let b = start_proxy(origin.addr(), &clock, move |cfg| cfg.redis = Some(rb)).await;
    for p in [&a, &b] {
        eventually("shared tier connected", async || p.proxy().shared().unwrap().available()).await;
    }
    let (ca, cb) = (Arc::new(Client::new(a.addr())), Client::new(b.addr()));

    // 20 URLs stored on A at once: their hashes land on every node, written in batches.
    const N: usize = 20;
    let tasks: Vec<_> = (0..N)
        .map(|i| {
            let c = ca.clone();
            tokio::spawn(async move { c.get_with(&format!("/k/{i}"), &[("host", HOST)]).await })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().status, 200);
    }
    let a_proxy = a.proxy();
    let stats = a_proxy.shared().unwrap().stats();
    eventually("A's writes reached the cluster", async || {
        stats.writes.load(std::sync::atomic::Ordering::Relaxed) >= N as u64
    })
    .await;
    assert_eq!(stats.dropped_writes.load(std::sync::atomic::Ordering::Relaxed), 0);
    for i in 0..N {
        let r = cb.get_with(&format!("/k/{i}"), &[("host", HOST)]).await;
        assert_eq!(r.text(), format!("/k/{i}"));
        assert_eq!(r.cache_status(), "edgecache; hit; tier=shared; ttl=60", "/k/{i}");
    }
    assert_eq!(origin.count(), N);

    // An invalidation on A reaches B through the stream.
    let r = ca.send("POST", "/k/3", &[("host", HOST)], Bytes::from_static(b"x")).await;
    assert_eq!(r.status, 200);
    let b_proxy = b.proxy();
    let b_stats = b_proxy.shared().unwrap().stats();
    eventually("B saw A's invalidation", async || {
        b_stats.remote_invalidations.load(std::sync::atomic::Ordering::Relaxed) >= 1
    })
    .await;
    let r = cb.get_with("/k/3", &[("host", HOST)]).await;
    assert_eq!(r.cache_status(), MISS_STORED);
    drop(cluster);
}
