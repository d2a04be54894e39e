//! Several sites on one node: routing by `Host`, each site's origin and rules, the `Host` sent
//! to its origin, and the cache-key rules.

pub mod common;

use std::sync::Arc;

use common::*;

const SHOP: &[(&str, &str)] = &[("host", "shop.example")];
const BLOG: &[(&str, &str)] = &[("host", "blog.example")];

/// `[[site]]` tables for a shop and a blog in front of the two origins, `more` in the blog's.
fn two_sites(shop: &Origin, blog: &Origin, more: &str) -> String {
    format!(
        r#"
[[site]]
name = "shop"
hosts = ["shop.example", "*.shop.example"]
[[site.server]]
url = "http://{shop}"
[[site.rule]]
path = "/admin"
cache = "pass"

[[site]]
name = "blog"
hosts = ["blog.example"]
{more}
[[site.server]]
url = "http://{blog}"
[[site.rule]]
path = "/"
ttl = "60s"
"#,
        shop = shop.addr(),
        blog = blog.addr(),
    )
}

#[tokio::test]
async fn two_sites_on_one_node_go_to_their_own_origins_with_their_own_rules() {
    let clock = clock();
    let shop = Origin::start(&clock, |_, _| Reply::ok("shop").cc("max-age=60")).await;
    // No freshness at all: stored only because the blog's rule gives it a lifetime.
    let blog = Origin::start(&clock, |_, _| Reply::ok("blog")).await;
    let p = start_proxy_toml(&two_sites(&shop, &blog, ""), &clock, |_| {}).await;
    let c = Client::new(p.addr());

    let r = c.get_with("/p", SHOP).await;
    assert_eq!((r.text().as_str(), r.cache_status()), ("shop", MISS_STORED));
    let r = c.get_with("/p", &[("host", "www.shop.example")]).await;
    assert_eq!((r.text().as_str(), r.cache_status()), ("shop", MISS_STORED), "the wildcard's own object");
    assert_eq!(c.get_with("/p", SHOP).await.cache_status(), hit(60));

    let r = c.get_with("/p", BLOG).await;
    assert_eq!((r.text().as_str(), r.cache_status()), ("blog", MISS_STORED));
    assert_eq!(c.get_with("/p", BLOG).await.cache_status(), hit(60), "the blog's ttl rule");

    for _ in 0..2 {
        let r = c.get_with("/admin/orders", SHOP).await;
        assert_eq!(r.cache_status(), "edgecache; fwd=bypass; fwd-status=200; detail=rule");
    }
    assert_eq!(shop.count_path("/admin/orders"), 2, "never cached");
    assert_eq!((shop.count(), blog.count()), (4, 1));
    let r = c.get_with("/admin/orders", BLOG).await;
    assert_eq!(r.cache_status(), MISS_STORED, "the shop's rule is not the blog's");
}

#[tokio::test]
async fn a_host_no_site_names_gets_421_or_the_default_site() {
    let clock = clock();
    let shop = Origin::start(&clock, |_, _| Reply::ok("shop").cc("max-age=60")).await;
    let blog = Origin::start(&clock, |_, _| Reply::ok("blog").cc("max-age=60")).await;
    let p = start_proxy_toml(&two_sites(&shop, &blog, ""), &clock, |_| {}).await;
    let c = Client::new(p.addr());
    for host in ["other.example", "shop.example.org", "xshop.example"] {
        let r = c.get_with("/p", &[("host", host)]).await;
        assert_eq!((r.status, r.cache_status()), (421, "edgecache; fwd=bypass; detail=misdirected"), "{host}");
    }
    assert_eq!(shop.count() + blog.count(), 0);

    let p = start_proxy_toml(&two_sites(&shop, &blog, "default = true"), &clock, |_| {}).await;
    let c = Client::new(p.addr());
    let r = c.get_with("/p", &[("host", "other.example")]).await;
    assert_eq!((r.status, r.text().as_str()), (200, "blog"));
}

#[tokio::test]
async fn a_site_sends_its_origin_the_host_it_is_configured_with() {
    let clock = clock();
    let origin = Origin::start(&clock, |_, _| Reply::ok("x").cc("no-store")).await;
    let text = format!(
        r#"
[[site]]
name = "shop"
hosts = ["shop.example"]
origin_host = "Backend.Internal:8080"
origin_sni = "backend.internal"
[[site.server]]
url = "http://{}"
"#,
        origin.addr()
    );
    let p = start_proxy_toml(&text, &clock, |_| {}).await;
    let c = Client::new(p.addr());
    assert_eq!(c.get_with("/p", SHOP).await.status, 200);
    let seen = origin.last();
    assert_eq!(seen.header("host"), Some("backend.internal:8080"));
    assert_eq!(seen.header("x-forwarded-host"), Some("shop.example"));
    let site = p.proxy().sites().by_name("shop").expect("the site by its name");
    let proxy = p.proxy();
    let server = &proxy.sites().get(site).pool.servers()[0];
    assert_eq!(server.upstream().sni(), "backend.internal", "plain data for the TLS origin client");
}

/// A site whose rules are `rules`, in front of `origin`.
fn one_site(origin: &Origin, rules: &str) -> String {
    format!(
        "[[site]]\nname = \"shop\"\nhosts = [\"shop.example\"]\n[[site.server]]\nurl = \"http://{}\"\n{rules}",
        origin.addr()
    )
}

#[tokio::test]
async fn urls_that_differ_only_in_utm_source_share_one_object() {
    let clock = clock();
    let origin = Origin::start(&clock, |_, n| Reply::ok(format!("v{n}")).cc("max-age=60")).await;
    let rules = r#"
[[site.rule]]
path = "/static/"
key_ignore_query = true
[[site.rule]]
path = "/"
key_drop_query = ["utm_*", "fbclid", "gclid"]
key_sort_query = true
"#;
    let p = start_proxy_toml(&one_site(&origin, rules), &clock, |_| {}).await;
    let c = Client::new(p.addr());
    let first = c.get_with("/a?id=1&utm_source=news", SHOP).await;
    assert_eq!((first.text().as_str(), first.cache_status()), ("v1", MISS_STORED));
    assert_eq!(origin.last().path(), "/a?id=1&utm_source=news", "the origin gets the query asked for");
    for url in ["/a?utm_source=ads&id=1", "/a?id=1", "/a?fbclid=z&id=1&utm_medium=m&gclid=g"] {
        let r = c.get_with(url, SHOP).await;
        assert_eq!((r.text().as_str(), r.cache_status()), ("v1", hit(60).as_str()), "{url}");
    }
    let r = c.get_with("/a?id=2&utm_source=news", SHOP).await;
    assert_eq!(r.cache_status(), MISS_STORED, "a parameter that stays in the key");
    c.get_with("/b?y=2&x=1", SHOP).await;
    assert!(c.get_with("/b?x=1&y=2", SHOP).await.is_hit(), "sorted");
    c.get_with("/b?utm_campaign=c", SHOP).await;
    assert!(c.get_with("/b", SHOP).await.is_hit(), "no parameter left: the URL without a query");
    c.get_with("/static/app.js?v=1", SHOP).await;
    assert!(c.get_with("/static/app.js?v=2", SHOP).await.is_hit(), "the query ignored");
    assert_eq!(origin.count(), 5);
}

#[tokio::test]
async fn a_cookie_or_a_field_named_by_a_rule_is_part_of_the_key() {
    let clock = clock();
    let origin = Origin::start(&clock, |_, n| Reply::ok(format!("v{n}")).cc("max-age=60")).await;
    let rules = r#"
[[site.rule]]
path = "/m/"
key_header = "X-Device"
[[site.rule]]
path = "/"
key_cookie = "lang"
"#;
    let p = start_proxy_toml(&one_site(&origin, rules), &clock, |_| {}).await;
    let c = Client::new(p.addr());
    let fr = [("host", "shop.example"), ("cookie", "session=1; lang=fr")];
    let fr_other_session = [("host", "shop.example"), ("cookie", "lang=fr; session=2")];
    let en = [("host", "shop.example"), ("cookie", "lang=en")];
    assert_eq!(c.get_with("/p", &fr).await.text(), "v1");
    assert_eq!(c.get_with("/p", &en).await.text(), "v2");
    assert_eq!(c.get_with("/p", SHOP).await.text(), "v3", "no cookie is a value of its own");
    let r = c.get_with("/p", &fr_other_session).await;
    assert_eq!((r.text().as_str(), r.is_hit()), ("v1", true));
    let mobile = [("host", "shop.example"), ("x-device", "mobile")];
    assert_eq!(c.get_with("/m/p", &mobile).await.text(), "v4");
    assert_eq!(c.get_with("/m/p", &[("host", "shop.example"), ("x-device", "desktop")]).await.text(), "v5");
    assert!(c.get_with("/m/p", &mobile).await.is_hit());
}

#[tokio::test]
async fn ttl_rules_bound_what_is_stored_and_clients_see_the_origins_cache_control() {
    let clock = clock();
    let origin = Origin::routes(&clock)
        .route("/long", |_, n| Reply::ok(format!("v{n}")).cc("max-age=3600"))
        .route("/short", |_, n| Reply::ok(format!("v{n}")).cc("max-age=5"))
        .start()
        .await;
    let rules = r#"
[[site.rule]]
path = "/long"
max_ttl = "10s"
[[site.rule]]
path = "/short"
min_ttl = "100s"
"#;
    let p = start_proxy_toml(&one_site(&origin, rules), &clock, |_| {}).await;
    let c = Client::new(p.addr());
    let r = c.get_with("/long", SHOP).await;
    assert_eq!(r.header("cache-control"), Some("max-age=3600"), "unchanged for the client");
    c.get_with("/short", SHOP).await;
    advance(&clock, 50);
    let r = c.get_with("/short", SHOP).await;
    assert_eq!((r.cache_status(), r.header("cache-control")), (hit(50).as_str(), Some("max-age=5")));
    let r = c.get_with("/long", SHOP).await;
    assert_eq!(r.cache_status(), MISS_STORED.replace("uri-miss", "stale"), "past the ceiling");
    assert_eq!(r.text(), "v2");
}

#[tokio::test]
async fn an_always_revalidate_rule_asks_the_origin_before_every_use() {
    let clock = clock();
    let origin = Origin::start(&clock, |req, _| {
        if req.header("if-none-match") == Some("\"e1\"") {
            Reply::status(304).header("etag", "\"e1\"").cc("max-age=3600")
        } else {
            Reply::ok("body").header("etag", "\"e1\"").cc("max-age=3600")
        }
    })
    .await;
    let rules = "[[site.rule]]\npath = \"/\"\ncache = \"revalidate\"\n";
    let p = start_proxy_toml(&one_site(&origin, rules), &clock, |_| {}).await;
    let c = Client::new(p.addr());
    assert_eq!(c.get_with("/p", SHOP).await.cache_status(), MISS_STORED);
    for n in 2..=3 {
        let r = c.get_with("/p", SHOP).await;
        assert_eq!((r.text().as_str(), r.cache_status()), ("body", "edgecache; fwd=stale; fwd-status=304; stored"));
        assert_eq!(origin.count(), n);
    }
}

#[tokio::test]
async fn static_paths_lose_their_cookies_both_ways_and_become_cacheable() {
    let clock = clock();
    let origin =
        Origin::start(&clock, |_, n| Reply::ok(format!("v{n}")).cc("max-age=60").header("set-cookie", "s=1")).await;
    let rules = "[[site.rule]]\npath = \"/static/\"\nstrip_cookie = true\nstrip_set_cookie = true\n";
    let p = start_proxy_toml(&one_site(&origin, rules), &clock, |_| {}).await;
    let c = Client::new(p.addr());
    let with_cookie = [("host", "shop.example"), ("cookie", "session=secret")];
    let r = c.get_with("/static/a.css", &with_cookie).await;
    assert_eq!((r.cache_status(), r.header("set-cookie")), (MISS_STORED, None));
    assert_eq!(origin.last().header("cookie"), None);
    assert!(c.get_with("/static/a.css", SHOP).await.is_hit());
    let r = c.get_with("/page", &with_cookie).await;
    assert_eq!(r.cache_status(), "edgecache; fwd=uri-miss; fwd-status=200; detail=set-cookie", "other paths keep them");
    assert_eq!((r.header("set-cookie"), origin.last().header("cookie")), (Some("s=1"), Some("session=secret")));
}

#[tokio::test]
async fn a_rule_sets_and_removes_response_fields_for_clients_while_the_edge_keeps_the_object() {
    let clock = clock();
    let origin = Origin::start(&clock, |_, _| {
        Reply::ok("x").cc("max-age=3600").header("x-powered-by", "php").header("server", "o")
    })
    .await;
    let rules = r#"
[[site.rule]]
path = "/"
response_headers = { "Cache-Control" = "no-cache", "X-Site" = "shop" }
remove_response_headers = ["X-Powered-By"]
"#;
    let p = start_proxy_toml(&one_site(&origin, rules), &clock, |_| {}).await;
    let c = Client::new(p.addr());
    for status in [MISS_STORED.to_string(), hit(3600)] {
        let r = c.get_with("/p", SHOP).await;
        assert_eq!(r.cache_status(), status);
        assert_eq!(r.header("cache-control"), Some("no-cache"));
        assert_eq!((r.header("x-site"), r.header("x-powered-by"), r.header("server")), (Some("shop"), None, Some("o")));
    }
    assert_eq!(origin.count(), 1);
    let site = p.proxy().sites().by_name("shop").unwrap();
    assert_eq!(p.proxy().sites().get(site).rules.applied(), [2], "counted when applied");
}

#[tokio::test]
async fn an_unsafe_method_invalidates_the_key_the_rules_make() {
    let clock = clock();
    let origin = Origin::start(&clock, |_, n| Reply::ok(format!("v{n}")).cc("max-age=60")).await;
    let rules = "[[site.rule]]\npath = \"/\"\nkey_drop_query = [\"utm_*\"]\n";
    let p = start_proxy_toml(&one_site(&origin, rules), &clock, |_| {}).await;
    let c = Client::new(p.addr());
    c.get_with("/a?utm_source=x", SHOP).await;
    assert!(c.get_with("/a", SHOP).await.is_hit());
    let posted = c.send("POST", "/a?utm_source=y", SHOP, bytes::Bytes::from_static(b"x")).await;
    assert_eq!(posted.status, 200);
    assert_eq!(c.get_with("/a", SHOP).await.cache_status(), MISS_STORED);
    let site = p.proxy().sites().by_name("shop").unwrap();
    let key = p.proxy().sites().get(site).cache_key("http", "shop.example", "/a?utm_source=z", &Default::default());
    assert!(p.proxy().memory().get_if_present(&key, clock_now(&clock)).is_some(), "a purge finds it by its URL");
}

fn clock_now(clock: &Arc<edgecache::clock::ManualClock>) -> u64 {
    use edgecache::clock::Clock;
    clock.now_millis()
}
