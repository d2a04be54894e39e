//! Refresh-ahead: a hot stored response in the last part of its freshness is revalidated once in
//! the background, so its clients never see it expire; a cold one, or one of a site that turned
//! refresh-ahead off, is left to expire.

pub mod common;

use common::*;
use edgecache::config::RefreshAhead;
use edgecache::store::CacheKey;
use edgecache::Running;

const HOST: &str = "www.example";

/// `v1` with an `ETag`, fresh for 10 s; a 304 to a request that has it.
fn handler(req: &Seen, _: usize) -> Reply {
    if req.header("if-none-match") == Some("\"v1\"") {
        return Reply::status(304).cc("max-age=10").header("etag", "\"v1\"");
    }
    Reply::ok("v1").cc("max-age=10").header("etag", "\"v1\"")
}

/// Three hits make an object hot; the last 20 % of its lifetime (2 s of 10) is the window.
const HOT: RefreshAhead = RefreshAhead { enabled: true, min_hits: 3, per_mille: 200 };

async fn get(c: &Client) -> Resp {
    c.get_with("/h", &[("host", HOST)]).await
}

/// When the stored response of `/h` was last received from the origin (ms).
fn stored_at(p: &Running) -> u64 {
    let v = p.proxy().memory().get(&CacheKey::new("http", HOST, "/h")).expect("stored");
    v.entries()[0].freshness.times.response_time
}

/// `Cache-Status` of a stored response the client's request revalidated (the origin said 304).
const REVALIDATED: &str = "edgecache; fwd=stale; fwd-status=304; stored";

#[tokio::test]
async fn a_hot_object_is_revalidated_once_before_it_expires_and_its_clients_never_see_it_expire() {
    let clock = clock();
    let (origin, p, c) = serve_with(&clock, |cfg| cfg.refresh_ahead = HOT, handler).await;
    assert_eq!(get(&c).await.cache_status(), MISS_STORED);
    for _ in 0..3 {
        assert_eq!(get(&c).await.cache_status(), hit(10));
    }
    let t0 = stored_at(&p);
    // 8 s on, 2 s left: in the window. This hit is served as usual and starts the refresh.
    advance(&clock, 8);
    assert_eq!(get(&c).await.cache_status(), hit(2));
    origin.wait_count(2).await;
    assert_eq!(origin.last().header("if-none-match"), Some("\"v1\""), "the refresh was not conditional");
    eventually("the refreshed response stored", async || stored_at(&p) == t0 + 8_000).await;
    // Where the old response would have expired, the refreshed one is fresh for 8 s more.
    advance(&clock, 2);
    let r = get(&c).await;
    assert_eq!((r.text().as_str(), r.cache_status()), ("v1", hit(8).as_str()));
    assert_eq!(origin.count(), 2);
}

#[tokio::test]
async fn an_object_with_fewer_hits_than_min_hits_is_not_refreshed_and_expires() {
    let clock = clock();
    let (origin, _p, c) = serve_with(&clock, |cfg| cfg.refresh_ahead = HOT, handler).await;
    assert_eq!(get(&c).await.cache_status(), MISS_STORED);
    assert_eq!(get(&c).await.cache_status(), hit(10));
    advance(&clock, 9);
    // The second hit, in the window: not hot enough.
    assert_eq!(get(&c).await.cache_status(), hit(1));
    advance(&clock, 1);
    // Nothing refreshed it: expired, revalidated by this request.
    assert_eq!(get(&c).await.cache_status(), REVALIDATED);
    assert_eq!(origin.count(), 2);
}

#[tokio::test]
async fn refresh_ahead_is_off_by_default() {
    let clock = clock();
    let (origin, _p, c) = serve(&clock, handler).await;
    get(&c).await;
    for _ in 0..20 {
        get(&c).await;
    }
    advance(&clock, 9);
    assert_eq!(get(&c).await.cache_status(), hit(1));
    advance(&clock, 1);
    assert_eq!(get(&c).await.cache_status(), REVALIDATED);
    assert_eq!(origin.count(), 2);
}

#[tokio::test]
async fn a_site_turns_refresh_ahead_off_for_itself() {
    let clock = clock();
    let origin = Origin::start(&clock, handler).await;
    let text = format!(
        r#"
[refresh_ahead]
enabled = true
min_hits = 3
fraction = 0.2

[[site]]
name = "quiet"
hosts = ["{HOST}"]
refresh_ahead = false
[[site.server]]
url = "http://{}"
"#,
        origin.addr()
    );
    let p = start_proxy_toml(&text, &clock, |_| {}).await;
    let c = Client::new(p.addr());
    for _ in 0..5 {
        get(&c).await;
    }
    advance(&clock, 9);
    assert_eq!(get(&c).await.cache_status(), hit(1));
    advance(&clock, 1);
    assert_eq!(get(&c).await.cache_status(), REVALIDATED);
    assert_eq!(origin.count(), 2);
}
