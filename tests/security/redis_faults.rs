//! Redis faults: down, tarpit, slow, flapping, corrupt values. The shared tier is an
//! optimisation: no fault of Redis fails a request or delays it past `redis.budget`, and no
//! value read back is served unless it is whole and for the URL asked.
//!
//! Covered elsewhere: Redis down at start (`shared_tier::redis_down_at_start_the_proxy_serves_from_origin_and_memory`),
//! a tarpit that accepts and never answers (`shared_tier::a_redis_that_never_answers_delays_no_request_and_is_skipped`),
//! killed under traffic and restarted (`shared_tier::redis_killed_under_traffic_fails_no_request_and_the_tier_resumes_after_restart`),
//! the breaker's backoff (`shared_tier::the_breaker_probes_1_s_after_it_opens_then_2_s_after_a_failed_probe_on_the_clock`),
//! garbage and another URL's value (`shared_tier::corrupt_and_foreign_values_are_misses_and_counted`),
//! the envelope decoder against any bytes (`fuzz::envelope_any_bytes_give_a_value_or_an_error`).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use edgecache::config::RedisConfig;
use edgecache::store::shared::envelope;

use crate::common::redis::{key_name, RedisLink, RedisServer};
use crate::common::*;

const HOST: &str = "www.example";

async fn node(url: String, tweak: impl FnOnce(&mut RedisConfig)) -> (Origin, edgecache::Running, Client) {
    let mut r = RedisConfig { url, budget: Duration::from_millis(50), ..Default::default() };
    tweak(&mut r);
    serve_with(
        &clock(),
        move |cfg| cfg.redis = Some(r),
        |req, n| Reply::ok(format!("{}#{n}", req.path())).cc("max-age=60"),
    )
    .await
}

async fn get(c: &Client, path: &str) -> Result<Resp, String> {
    c.try_send("GET", path, &[("host", HOST)], Bytes::new()).await
}

fn available(p: &edgecache::Running) -> bool {
    p.proxy().shared().is_some_and(|s| s.available())
}

/// A Redis that stops answering for 2 s (`CLIENT PAUSE`): every request in that time is served
/// from the origin, each within the budget plus the origin's time, none fails.
#[tokio::test]
async fn redis_fault_a_paused_redis_delays_no_request_past_its_budget() {
    let redis = RedisServer::start();
    let (origin, p, c) = node(redis.url(), |_| {}).await;
    eventually("shared tier connected", async || available(&p)).await;
    redis.cmd::<String>(&[b"CLIENT", b"PAUSE", b"2000", b"ALL"]).await;
    for i in 0..10 {
        let started = Instant::now();
        let r = get(&c, &format!("/slow{i}")).await.expect("served");
        assert_eq!(r.status, 200, "request {i}");
        assert!(started.elapsed() < Duration::from_millis(1000), "request {i} took {:?}", started.elapsed());
    }
    assert_eq!(origin.count(), 10);
}

/// A link that flaps: cut and restored ten times under traffic. No request fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_fault_a_flapping_link_fails_no_request() {
    let redis = RedisServer::start();
    let link = RedisLink::start(redis.addr()).await;
    let (_origin, p, c) = node(link.url(), |_| {}).await;
    eventually("shared tier connected", async || available(&p)).await;
    let mut failures = Vec::new();
    for round in 0..10 {
        if round % 2 == 1 {
            link.cut();
        } else {
            link.restore();
        }
        for i in 0..20 {
            let path = format!("/flap{}", (round * 20 + i) % 50);
            match get(&c, &path).await {
                Ok(r) if r.status == 200 && r.text().starts_with(&format!("{path}#")) => {}
                other => failures.push(format!("round {round} {path}: {other:?}")),
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// A value claiming more distinct header names than a header map holds (40,000): before issue
/// 23 the decoder panicked on it. Now a miss, counted, and the request served from the origin.
fn header_bomb(canonical: &str) -> Vec<u8> {
    let e = edgecache::store::Entry {
        status: http::StatusCode::OK,
        headers: edgecache::store::headers::StoredHeaders::from_map(&http::HeaderMap::new()),
        body: Bytes::new(),
        vary: Box::new([]),
        freshness: edgecache::http::policy::Freshness {
            times: edgecache::http::policy::Times { request_time: 0, response_time: 0, date: 0, age_value: 0 },
            lifetime: 60,
            no_cache: false,
            no_stale: false,
            strict: false,
            stale_while_revalidate: 0,
            stale_if_error: 0,
            last_modified: 0,
        },
        checked: Default::default(),
        heat: Default::default(),
    };
    let good = envelope::encode(canonical, &e).to_vec();
    let at = good.len() - 4 - 2;
    let mut v = good[..at].to_vec();
    v.extend_from_slice(&40_000u16.to_be_bytes());
    for i in 0..40_000u32 {
        let name = format!("x{i}");
        v.extend_from_slice(&(name.len() as u16).to_be_bytes());
        v.extend_from_slice(name.as_bytes());
        v.extend_from_slice(&0u32.to_be_bytes());
    }
    v.extend_from_slice(&0u32.to_be_bytes());
    v
}

/// Corrupt values of every kind under the keys of URLs about to be asked: each is a miss,
/// counted, and the request is served from the origin; nothing panics.
#[tokio::test]
async fn redis_fault_corrupt_values_are_misses_and_never_panic() {
    let redis = RedisServer::start();
    let (origin, p, c) = node(redis.url(), |_| {}).await;
    eventually("shared tier connected", async || available(&p)).await;
    let good = {
        let _ = get(&c, "/seed").await.expect("seed");
        let key = key_name(HOST, "/seed");
        redis.until::<i64>("seed written", &[b"EXISTS", key.as_bytes()], |n| *n == 1).await;
        let all: std::collections::HashMap<String, Vec<u8>> = redis.cmd(&[b"HGETALL", key.as_bytes()]).await;
        all.into_values().next().expect("a variant")
    };
    let mut values: Vec<(&str, Vec<u8>)> = vec![
        ("/empty", Vec::new()),
        ("/magic", b"ECE".to_vec()),
        ("/version", [b"ECE\x09".as_slice(), &good[4..]].concat()),
        ("/cut", good[..good.len() / 2].to_vec()),
        ("/trailing", [good.as_slice(), b"x"].concat()),
        ("/noise", (0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect()),
    ];
    values.push(("/bomb", header_bomb(&format!("http://{HOST}/bomb"))));
    for (path, value) in &values {
        redis.cmd::<i64>(&[b"HSET", key_name(HOST, path).as_bytes(), b"f", value]).await;
    }
    for (path, _) in &values {
        let r = get(&c, path).await.expect("served");
        assert_eq!(r.status, 200, "{path}");
        assert!(r.text().starts_with(&format!("{path}#")), "{path}: {}", r.text());
    }
    let proxy = p.proxy();
    let shared = proxy.shared().unwrap().stats();
    assert_eq!(shared.bad_values.load(Ordering::Relaxed), values.len() as u64);
    assert_eq!(p.stats().panics.load(Ordering::Relaxed), 0);
    assert_eq!(origin.count(), values.len() + 1);
}
