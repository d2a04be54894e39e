//! What an operator sees: the metrics after known traffic, `/ready` with the origin up and
//! down, and the status page's figures.

pub mod common;

use std::sync::Arc;

use common::*;
use edgecache::clock::Clock;
use edgecache::metrics::history::MINUTE_MS;
use edgecache::metrics::{OriginError, Source, StaleServed};
use edgecache::ops::Ops;
use edgecache::reload::Steps;
use edgecache::status::{Detail, NotStored, Outcome};
use serde_json::Value;

fn ops(p: &edgecache::Running) -> Ops {
    Ops::new(p.live().clone(), Arc::new(Steps::config(p.live().clone())))
}

#[tokio::test]
async fn metrics_count_each_request_by_outcome_reason_source_and_origin_class() {
    let clock = clock();
    let (origin, p, c) = serve(&clock, |req, _| match req.path() {
        "/private" => Reply::ok("mine").cc("private"),
        "/gone" => Reply::status(503).body("down"),
        _ => Reply::ok("x".repeat(100)).cc("max-age=60"),
    })
    .await;
    assert_eq!(get(&c, "/a").await, MISS_STORED);
    assert_eq!(get(&c, "/a").await, hit(60));
    assert_eq!(get(&c, "/private").await, "edgecache; fwd=uri-miss; fwd-status=200; detail=private");
    assert_eq!(get(&c, "/gone").await, "edgecache; fwd=uri-miss; fwd-status=503; detail=status");
    assert_eq!(origin.count(), 3);
    let m = p.proxy().metrics().clone();
    // The record is taken when the body is done: the client has read it by now, but the drop
    // that records may run just after.
    eventually("every request recorded", async || Outcome::ALL.iter().map(|o| m.requests(*o)).sum::<u64>() == 4).await;
    assert_eq!(m.requests(Outcome::Miss), 3);
    assert_eq!(m.requests(Outcome::Hit), 1);
    assert_eq!(m.reasons(Detail::NotStored(NotStored::Private)), 1);
    assert_eq!(m.reasons(Detail::NotStored(NotStored::Status)), 1);
    assert_eq!(m.bytes(Source::Store), 100);
    assert_eq!(m.bytes(Source::Origin), 100 + 4 + 4);
    assert_eq!(m.origin_requests(2), 2);
    assert_eq!(m.origin_requests(5), 1);
    assert_eq!(m.origin_errors(OriginError::Status5xx), 1);
    let text = ops(&p).metrics().body;
    for line in [
        "edgecache_requests_total{outcome=\"hit\"} 1",
        "edgecache_requests_total{outcome=\"miss\"} 3",
        "edgecache_origin_requests_total{class=\"2xx\"} 2",
        "edgecache_memory_objects 1",
        "edgecache_memory_budget_bytes 268435456",
        "edgecache_shared_connected 0",
        "edgecache_connections_accepted_total 1",
    ] {
        assert!(text.contains(line), "{line:?} missing from\n{text}");
    }
}

#[tokio::test]
async fn a_stale_response_served_on_an_origin_error_is_counted_as_grace_or_stale_if_error() {
    let clock = clock();
    let (_origin, p, c) = serve(&clock, |req, n| match (req.path(), n) {
        ("/grace", 1) => Reply::ok("v1").cc("max-age=1"),
        ("/sie", 2) => Reply::ok("v1").cc("max-age=1, stale-if-error=60"),
        _ => Reply::status(500),
    })
    .await;
    get(&c, "/grace").await;
    get(&c, "/sie").await;
    advance(&clock, 5);
    assert!(get(&c, "/grace").await.ends_with("detail=stale-if-error"));
    assert!(get(&c, "/sie").await.ends_with("detail=stale-if-error"));
    let m = p.proxy().metrics().clone();
    assert_eq!(m.stale(StaleServed::Grace), 1);
    assert_eq!(m.stale(StaleServed::IfError), 1);
}

#[tokio::test]
async fn ready_needs_the_origin_reachable_and_health_does_not() {
    let clock = clock();
    let (origin, p, c) = serve(&clock, |_, _| Reply::ok("x").cc("max-age=60")).await;
    let ops = ops(&p);
    get(&c, "/a").await;
    let ready = ops.ready().await;
    assert_eq!(ready.status, 200, "{}", ready.body);
    let body = json(&ready.body);
    assert_eq!(body["origin"]["last_reachable_ms_ago"], 0, "{body}");
    assert_eq!(body["shared_tier"], Value::Null, "{body}");
    assert_eq!(origin.connections(), 1);
    // Past the interval with no request: /ready connects to the origin itself.
    advance(&clock, 11);
    let ready = ops.ready().await;
    assert_eq!(ready.status, 200, "{}", ready.body);
    eventually("the origin saw the connection", async || origin.connections() == 2).await;
    assert_eq!(origin.count(), 1, "the probe sent a request");
    assert_eq!(ops.health().status, 200);

    let closed = closed_port();
    let down = start_proxy(closed.addr(), &clock, |_| {}).await;
    let r = Client::new(down.addr()).get("/a").await;
    assert_eq!(r.status, 502);
    let ready = self::ops(&down).ready().await;
    assert_eq!(ready.status, 503, "{}", ready.body);
    let body = json(&ready.body);
    assert_eq!(body["status"], "not-ready", "{body}");
    assert_eq!(body["origin"]["last_reachable_ms_ago"], Value::Null, "{body}");
}

#[tokio::test]
async fn the_status_page_shows_the_last_minutes_and_the_breakdown() {
    let clock = clock();
    let (_origin, p, c) = serve(&clock, |_, _| Reply::ok("x").cc("max-age=600")).await;
    let m = p.proxy().metrics().clone();
    let start = clock.now_millis() / MINUTE_MS * MINUTE_MS;
    for minute in 1..=3u64 {
        for i in 0..minute * 2 {
            get(&c, &format!("/{i}")).await;
        }
        eventually("requests recorded", async || {
            Outcome::ALL.iter().map(|o| m.requests(*o)).sum::<u64>() == (1..=minute).map(|k| k * 2).sum::<u64>()
        })
        .await;
        advance(&clock, 60);
        m.history.sample(&m, start + minute * MINUTE_MS);
    }
    let page = ops(&p).page();
    assert_eq!(page.content_type, "text/html; charset=utf-8");
    let html = page.body;
    assert!(html.contains("<meta http-equiv=\"refresh\" content=\"10\">"));
    assert!(!html.contains("<script"));
    // Three points in each chart (origin latency included: every minute had a miss).
    for chart in ["hit-ratio", "rate", "origin-latency"] {
        let at = html.find(&format!("class=\"chart {chart}\"")).unwrap_or_else(|| panic!("{chart} missing"));
        let svg = &html[at..at + html[at..].find("</svg>").unwrap()];
        assert_eq!(svg.matches("<circle").count(), 3, "{chart}: {svg}");
    }
    // The last minute: 6 requests, 4 of them hits (/0 to /3 were stored before).
    assert!(html.contains("<b id=\"hit-ratio\">66.7 %</b>"), "{html}");
    assert!(html.contains("<b id=\"rate\">0.1</b>"), "{html}");
    assert!(html.contains("<b id=\"objects\">6</b>"), "{html}");
    assert!(html.contains("<tr><td>hit</td><td>6</td>"), "{html}");
}

async fn get(c: &Client, path: &str) -> String {
    c.get(path).await.cache_status().to_string()
}

/// A JSON answer's body, parsed (the endpoints' key order is serde_json's, not part of the answer).
fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

#[tokio::test]
async fn the_admin_listener_serves_every_operations_endpoint_and_refuses_bad_input() {
    const AUTH: (&str, &str) = ("authorization", "Bearer s3cret");
    let clock = clock();
    let (_origin, p, c) = serve_with(
        &clock,
        |cfg| {
            cfg.admin = Some(edgecache::config::AdminConfig {
                listen: "127.0.0.1:0".parse().unwrap(),
                token: Some("s3cret".into()),
            })
        },
        |_, _| Reply::ok("x").cc("max-age=60"),
    )
    .await;
    get(&c, "/a").await;
    let admin = Client::new(p.admin_addr().expect("admin listener"));
    let ask = async |method: &str, path: &str| admin.send(method, path, &[AUTH], Default::default()).await;

    let r = ask("GET", "/metrics").await;
    assert_eq!((r.status, r.header("content-type")), (200, Some("text/plain; version=0.0.4; charset=utf-8")));
    assert!(r.text().contains("edgecache_requests_total{outcome=\"miss\"} 1"), "{}", r.text());
    let r = ask("GET", "/health").await;
    assert_eq!((r.status, json(&r.text())), (200, serde_json::json!({ "status": "ok" })));
    let r = ask("GET", "/ready").await;
    assert_eq!((r.status, r.header("content-type")), (200, Some("application/json")));
    let body = json(&r.text());
    assert_eq!((&body["status"], &body["listening"]), (&Value::from("ready"), &Value::Bool(true)), "{body}");
    let r = ask("GET", "/").await;
    assert_eq!((r.status, r.header("content-type")), (200, Some("text/html; charset=utf-8")));
    assert!(r.text().contains("class=\"chart hit-ratio\""));
    // Started without a file: a reload has nothing to re-read, and says so.
    let r = ask("POST", "/reload").await;
    assert_eq!(r.status, 400);
    let problems = ["started without --config: there is no file to re-read"];
    let steps = serde_json::json!([{ "step": "config", "result": "invalid", "problems": problems }]);
    assert_eq!(json(&r.text()), serde_json::json!({ "status": "error", "steps": steps }));

    // Bad input: a reason, never a panic.
    assert_eq!(ask("GET", "/nowhere").await.status, 404);
    let r = ask("POST", "/metrics").await;
    assert_eq!(r.status, 405);
    assert_eq!(json(&r.text()), serde_json::json!({ "status": "error", "error": "method not allowed here" }));
    assert_eq!(ask("GET", "/reload").await.status, 405);
    let r = admin.get("/metrics").await;
    assert_eq!(r.status, 401, "no token");
}
