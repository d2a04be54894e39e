//! Purges on one node, through its admin listener: by URL (every variant), tag, host, prefix and
//! everything; soft purges revalidate (a 304 keeps the body) and are served stale when the origin
//! fails; a fill that ran across a purge is not kept; the token is required; bad input is refused
//! with its reason; and `edgecache purge` talks to a running node.

pub mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use common::*;
use edgecache::Running;
use tokio::sync::Notify;

const TOKEN: &str = "s3cret";
const AUTH: (&str, &str) = ("authorization", "Bearer s3cret");

/// GET: `{path}#{n}`, fresh for 60 s. `/v…` varies on `Accept-Language`; `/tagged/a` carries the
/// tags `t1 common` (Surrogate-Key), `/tagged/b` `t2 common` (Cache-Tag), `/tagged/c` `t10`
/// (xkey); `/e…` has an ETag and answers a matching `If-None-Match` with 304, and 503 while
/// `down` is set.
fn handler(down: Arc<AtomicBool>) -> impl Fn(&Seen, usize) -> Reply + Send + Sync + 'static {
    move |req, n| {
        let path = req.path().to_string();
        if path.starts_with("/e") {
            if down.load(Ordering::SeqCst) {
                return Reply::status(503);
            }
            if req.header("if-none-match") == Some("\"e1\"") {
                return Reply::status(304).header("etag", "\"e1\"").cc("max-age=60, stale-while-revalidate=0");
            }
            return Reply::ok(format!("{path}#{n}")).header("etag", "\"e1\"").cc("max-age=60");
        }
        let reply = Reply::ok(format!("{path}#{n}")).cc("max-age=60");
        match path.as_str() {
            p if p.starts_with("/v") => reply.header("vary", "accept-language"),
            "/tagged/a" => reply.header("surrogate-key", "t1 common"),
            "/tagged/b" => reply.header("cache-tag", "t2,common"),
            "/tagged/c" => reply.header("xkey", "t10"),
            _ => reply,
        }
    }
}

struct Node {
    origin: Origin,
    p: Running,
    c: Client,
    admin: Client,
    down: Arc<AtomicBool>,
}

/// An admin listener on loopback, port 0.
fn admin_config(token: Option<&str>) -> edgecache::config::AdminConfig {
    edgecache::config::AdminConfig { listen: "127.0.0.1:0".parse().unwrap(), token: token.map(String::from) }
}

async fn node_with(token: Option<&str>) -> Node {
    let clock = clock();
    let down = Arc::new(AtomicBool::new(false));
    let origin = Origin::start(&clock, handler(down.clone())).await;
    let p = start_proxy(origin.addr(), &clock, |cfg| cfg.admin = Some(admin_config(token))).await;
    let c = Client::new(p.addr());
    let admin = Client::new(p.admin_addr().expect("admin listener"));
    Node { origin, p, c, admin, down }
}

async fn node() -> Node {
    node_with(Some(TOKEN)).await
}

impl Node {
    async fn get(&self, host: &str, path: &str) -> Resp {
        self.c.get_with(path, &[("host", host)]).await
    }

    /// `POST /purge` with `json`, authorized.
    async fn purge(&self, json: &str) -> Resp {
        self.admin.send("POST", "/purge", &[AUTH], Bytes::from(json.to_string())).await
    }
}

/// The answer's `purged`, after checking it is `{"status":"ok","id":…,"purged":N}`.
fn purged(r: &Resp) -> u64 {
    assert_eq!(r.status, 200, "{}", r.text());
    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("JSON answer");
    assert_eq!(v["status"], "ok", "{v}");
    assert!(v["id"].as_str().is_some_and(|id| !id.is_empty()), "{v}");
    v["purged"].as_u64().expect("purged")
}

/// The error of a refused call, after checking it is `{"status":"error","error":…}`.
fn refused(r: &Resp, status: u16) -> String {
    assert_eq!(r.status, status, "{}", r.text());
    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("JSON answer");
    assert_eq!(v["status"], "error", "{v}");
    v["error"].as_str().expect("error").to_string()
}

#[tokio::test]
async fn without_the_token_a_purge_is_refused_401_and_nothing_changes() {
    let n = node().await;
    assert_eq!(n.get("h", "/a").await.cache_status(), MISS_STORED);
    let body = Bytes::from_static(br#"{"purge_everything":true}"#);
    for headers in [vec![], vec![("authorization", "Bearer wrong")], vec![("fastly-key", "wrong")]] {
        let r = n.admin.send("POST", "/purge", &headers, body.clone()).await;
        refused(&r, 401);
        assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    }
    let r = n.admin.send("PURGE", "/a", &[("host", "h")], Bytes::new()).await;
    refused(&r, 401);
    assert_eq!(n.get("h", "/a").await.cache_status(), hit(60));
    // Fastly-Key is accepted as well as Bearer.
    let r = n.admin.send("POST", "/purge_all", &[("fastly-key", TOKEN)], Bytes::new()).await;
    purged(&r);
    assert_eq!(n.get("h", "/a").await.cache_status(), MISS_STORED);
}

#[tokio::test]
async fn without_a_token_configured_a_loopback_listener_needs_none() {
    let n = node_with(None).await;
    n.get("h", "/a").await;
    let r = n.admin.send("PURGE", "/a", &[("host", "h")], Bytes::new()).await;
    assert_eq!(purged(&r), 1);
}

#[tokio::test]
async fn a_url_purge_removes_every_variant() {
    let n = node().await;
    for lang in ["en", "fr"] {
        n.c.get_with("/v", &[("host", "h"), ("accept-language", lang)]).await;
    }
    n.get("h", "/other").await;
    let r = n.purge(r#"{"files":["http://h/v"]}"#).await;
    assert_eq!(purged(&r), 2, "both variants");
    // The first is a miss of the URL: no variant was left; the second, a miss of its variant.
    for (lang, want) in [("fr", "uri-miss"), ("en", "vary-miss")] {
        let r = n.c.get_with("/v", &[("host", "h"), ("accept-language", lang)]).await;
        assert_eq!(r.cache_status(), format!("edgecache; fwd={want}; fwd-status=200; stored"), "{lang}");
    }
    assert_eq!(n.origin.count_path("/v"), 4);
    assert_eq!(n.get("h", "/other").await.cache_status(), hit(60));
}

#[tokio::test]
async fn purge_method_takes_an_absolute_url_or_a_path_with_host() {
    let n = node().await;
    n.get("h", "/a").await;
    n.get("h", "/b").await;
    let admin = n.p.admin_addr().unwrap();
    let raw = format!(
        "PURGE http://h/a HTTP/1.1\r\nHost: {admin}\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"
    );
    let r = raw_request(admin, raw.as_bytes()).await;
    assert_eq!(r.status, 200);
    let r = n.admin.send("PURGE", "/b", &[("host", "h"), AUTH], Bytes::new()).await;
    assert_eq!(purged(&r), 1);
    for p in ["/a", "/b"] {
        assert_eq!(n.get("h", p).await.cache_status(), MISS_STORED, "{p}");
    }
}

#[tokio::test]
async fn a_tag_purge_removes_exactly_the_objects_carrying_the_tag() {
    let n = node().await;
    for p in ["/tagged/a", "/tagged/b", "/tagged/c"] {
        let r = n.get("h", p).await;
        for field in ["surrogate-key", "cache-tag", "xkey"] {
            assert_eq!(r.header(field), None, "{p}: {field} sent to the client");
        }
    }
    // Exact: t1 is not a prefix of t10.
    assert_eq!(purged(&n.purge(r#"{"tags":["t1"]}"#).await), 1);
    assert_eq!(n.get("h", "/tagged/a").await.cache_status(), MISS_STORED);
    assert_eq!(n.get("h", "/tagged/b").await.cache_status(), hit(60));
    assert_eq!(n.get("h", "/tagged/c").await.cache_status(), hit(60));
    // The Surrogate-Key request field, and Fastly's path.
    let r = n.admin.send("POST", "/purge", &[AUTH, ("surrogate-key", "common")], Bytes::new()).await;
    assert_eq!(purged(&r), 2, "/tagged/a (stored again) and /tagged/b");
    let r = n.admin.send("POST", "/service/site/purge/t10", &[AUTH], Bytes::new()).await;
    assert_eq!(purged(&r), 1);
    for p in ["/tagged/a", "/tagged/b", "/tagged/c"] {
        assert_eq!(n.get("h", p).await.cache_status(), MISS_STORED, "{p}");
    }
}

#[tokio::test]
async fn host_and_prefix_purges_apply_to_their_urls_only() {
    let n = node().await;
    let urls = [("h1", "/a"), ("h2", "/a"), ("h2", "/blog"), ("h2", "/blog/x/y"), ("h2", "/blogger"), ("h2", "/c")];
    for (h, p) in urls {
        n.get(h, p).await;
    }
    purged(&n.purge(r#"{"hosts":["H1"]}"#).await);
    purged(&n.purge(r#"{"prefixes":["https://h2/blog/"]}"#).await);
    for (h, p) in urls {
        let want = if h == "h1" || p == "/blog" || p == "/blog/x/y" { MISS_STORED.to_string() } else { hit(60) };
        assert_eq!(n.get(h, p).await.cache_status(), want, "{h}{p}");
    }
    // Stored after the purges: untouched by them.
    assert_eq!(n.get("h1", "/a").await.cache_status(), hit(60));
}

#[tokio::test]
async fn everything_is_purged_in_one_generation_step() {
    let n = node().await;
    for i in 0..20 {
        n.get("h", &format!("/{i}")).await;
    }
    assert_eq!(purged(&n.purge(r#"{"purge_everything":true}"#).await), 20);
    for i in 0..20 {
        assert_eq!(n.get("h", &format!("/{i}")).await.cache_status(), MISS_STORED);
    }
    assert_eq!(n.get("h", "/0").await.cache_status(), hit(60));
    assert_eq!(n.origin.count(), 40);
}

#[tokio::test]
async fn a_soft_purge_revalidates_and_a_304_keeps_the_body() {
    let n = node().await;
    let first = n.get("h", "/e").await;
    let r = n.admin.send("PURGE", "/e", &[("host", "h"), AUTH, ("fastly-soft-purge", "1")], Bytes::new()).await;
    assert_eq!(purged(&r), 1);
    let r = n.get("h", "/e").await;
    assert_eq!(r.cache_status(), "edgecache; fwd=stale; fwd-status=304; stored");
    assert_eq!(r.text(), first.text(), "the body was not kept");
    assert_eq!(n.origin.last().header("if-none-match"), Some("\"e1\""), "not a conditional request");
    assert_eq!(n.get("h", "/e").await.cache_status(), hit(60));
    assert_eq!(n.origin.count(), 2);
}

#[tokio::test]
async fn a_soft_purged_object_is_served_stale_when_the_origin_fails() {
    let n = node().await;
    let first = n.get("h", "/e1").await;
    purged(&n.purge(r#"{"prefixes":["http://h/e1"],"soft":true}"#).await);
    n.down.store(true, Ordering::SeqCst);
    // Within stale.grace (10 s): the stale copy, not the 503.
    let r = n.get("h", "/e1").await;
    assert_eq!((r.status, r.text()), (200, first.text()));
    assert_eq!(r.cache_status(), "edgecache; hit; fwd=stale; fwd-status=503; ttl=0; detail=stale-if-error");
}

#[tokio::test]
async fn a_fill_under_way_when_its_tag_is_purged_is_not_kept() {
    let clock = clock();
    let gate = Arc::new(Notify::new());
    let g = gate.clone();
    let origin = Origin::start(&clock, move |req, n| {
        let r = Reply::ok(format!("{}#{n}", req.path())).cc("max-age=60").header("surrogate-key", "t");
        if n == 1 {
            r.gate(g.clone())
        } else {
            r
        }
    })
    .await;
    let p = start_proxy(origin.addr(), &clock, |cfg| cfg.admin = Some(admin_config(None))).await;
    let (c, admin) = (Arc::new(Client::new(p.addr())), Client::new(p.admin_addr().unwrap()));
    let c2 = c.clone();
    let first = tokio::spawn(async move { c2.get_with("/slow", &[("host", "h")]).await });
    origin.wait_count(1).await;
    let r = admin.send("POST", "/purge", &[], Bytes::from_static(br#"{"tags":["t"]}"#)).await;
    assert_eq!(purged(&r), 0, "nothing stored yet");
    gate.notify_one();
    assert_eq!(within("the first request", first).await.unwrap().text(), "/slow#1");
    let r = c.get_with("/slow", &[("host", "h")]).await;
    assert_eq!((r.text().as_str(), r.cache_status()), ("/slow#2", MISS_STORED));
}

#[tokio::test]
async fn bad_requests_are_refused_with_their_reason_and_purge_nothing() {
    let n = node().await;
    n.get("h", "/a").await;
    for (body, reason) in [
        (r#"{"files":["http://h/a"],"colour":"blue"}"#, "unknown field `colour`"),
        (r#"{"tags":[]}"#, "tags: empty list"),
        (r#"{"files":["http://h/a","h/b"]}"#, "files: \"h/b\" is not an absolute http(s) URL"),
        (r#"{"tags":["a b"]}"#, "tags: \"a b\" is not a tag"),
        (r#"{"prefixes":["http://h/a?x=1"]}"#, "a prefix is a path, without a query"),
        (r#"{}"#, "nothing to purge"),
        (r#"{"files":"#, "invalid purge request"),
    ] {
        let e = refused(&n.purge(body).await, 400);
        assert!(e.contains(reason), "{body}: {e}");
    }
    // Refused on its declared length, before the body is read.
    let admin = n.p.admin_addr().unwrap();
    let head = format!(
        "POST /purge HTTP/1.1\r\nHost: {admin}\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 2000000\r\nConnection: close\r\n\r\n"
    );
    let r = raw_request(admin, head.as_bytes()).await;
    assert_eq!(r.status, 400);
    assert!(String::from_utf8_lossy(&r.body).contains("request body over 1048576 bytes"));
    refused(&n.admin.send("GET", "/purge", &[AUTH], Bytes::new()).await, 405);
    refused(&n.admin.send("POST", "/nowhere", &[AUTH], Bytes::new()).await, 404);
    let e = refused(&n.admin.send("PURGE", "/a", &[AUTH, ("host", "a b")], Bytes::new()).await, 400);
    assert!(e.contains("is not an absolute http(s) URL"), "{e}");
    assert_eq!(n.get("h", "/a").await.cache_status(), hit(60), "a refused request purged");
}

// ---------------------------------------------------------------------------------------------
// The binary: edgecache purge, and the start-up check
// ---------------------------------------------------------------------------------------------

const BIN: &str = env!("CARGO_BIN_EXE_edgecache");

/// Writes a proxy.toml with an `[admin]` table for `admin` (and `token`, when given).
fn config_file(name: &str, admin: SocketAddr, token: Option<&str>) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("edgecache-purge-{}-{name}.toml", std::process::id()));
    let token = token.map(|t| format!("token = \"{t}\"\n")).unwrap_or_default();
    std::fs::write(&path, format!("[admin]\nlisten = \"{admin}\"\n{token}")).unwrap();
    path
}

async fn run(args: &[&str]) -> std::process::Output {
    let out =
        tokio::process::Command::new(BIN).args(args).stdin(std::process::Stdio::null()).kill_on_drop(true).output();
    within(&format!("edgecache {args:?}"), out).await.expect("run edgecache")
}

#[tokio::test]
async fn edgecache_purge_uses_the_admin_address_and_token_of_the_config() {
    let n = node().await;
    n.get("h", "/a").await;
    n.get("h", "/tagged/a").await;
    let admin = n.p.admin_addr().unwrap();
    let good = config_file("good", admin, Some(TOKEN));
    let cfg = good.to_str().unwrap();
    let out = run(&["purge", "--config", cfg, "http://h/a", "--tag", "t1", "--soft"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON printed");
    assert_eq!((answer["status"].as_str(), answer["purged"].as_u64()), (Some("ok"), Some(2)));
    assert!(n.get("h", "/a").await.cache_status().starts_with("edgecache; fwd=stale"), "not soft-purged");
    // A wrong token: the node's 401 printed, exit code 1.
    let wrong = config_file("wrong", admin, Some("nope"));
    let out = run(&["purge", "--config", wrong.to_str().unwrap(), "--all"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"status\":\"error\""));
    // Nothing asked: a usage error, nothing sent.
    let out = run(&["purge", "--config", cfg]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(n.get("h", "/tagged/a").await.cache_status().starts_with("edgecache; fwd=stale"), "--tag t1 not purged");
    for f in [good, wrong] {
        let _ = std::fs::remove_file(f);
    }
}

#[tokio::test]
async fn a_public_admin_listener_without_a_token_is_refused_before_start() {
    let path = config_file("public", "0.0.0.0:9180".parse().unwrap(), None);
    let p = path.to_str().unwrap();
    for args in [vec!["--config", p, "--check-config"], vec!["--config", p]] {
        let out = run(&args).await;
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("admin.token: required when admin.listen (0.0.0.0:9180) is not a loopback address"),
            "{err}"
        );
    }
    let _ = std::fs::remove_file(path);
}
