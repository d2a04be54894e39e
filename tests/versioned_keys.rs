//! Versioned keys: a site's cache-key version changed by a reload makes every object stored under
//! the old one unreachable at once, on this node and, through the shared tier, on every node
//! running the new version; the other sites keep theirs.

pub mod common;

use std::path::PathBuf;
use std::sync::Arc;

use common::redis::RedisServer;
use common::*;
use edgecache::clock::ManualClock;
use edgecache::config::Config;
use edgecache::proxy::Proxy;
use edgecache::reload::Live;
use edgecache::store::key::KeyVersion;
use edgecache::store::CacheKey;
use edgecache::Running;

/// A `proxy.toml` in the system's temporary folder, removed when dropped.
struct File(PathBuf);

impl File {
    fn new(name: &str) -> File {
        File(std::env::temp_dir().join(format!("edgecache-versioned-{}-{name}.toml", std::process::id())))
    }

    fn write(&self, text: &str) {
        std::fs::write(&self.0, text).expect("write proxy.toml");
    }
}

impl Drop for File {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A proxy started from `file` on `clock`, reloading from it.
async fn start_from(file: &File, clock: &Arc<ManualClock>) -> Running {
    let cfg = Config::from_file(&file.0).expect("valid file");
    let listeners = edgecache::server::Listeners::bind(&cfg).await.expect("bind");
    let proxy = Proxy::new(Arc::new(cfg), clock.clone());
    let live = Arc::new(Live::new(proxy, Some(file.0.clone()), Box::new(|_| {})));
    edgecache::server::start_on(listeners, None, live).expect("serve")
}

/// Two sites on one origin: `shop.example` at key version `shop`, `blog.example` at `blog`;
/// `extra` is appended.
fn two_sites(origin: std::net::SocketAddr, shop: &str, blog: &str, extra: &str) -> String {
    format!(
        r#"listen = "127.0.0.1:0"
[log]
access = false
{extra}
[[site]]
name = "shop"
hosts = ["shop.example"]
key_version = "{shop}"
[[site.server]]
url = "http://{origin}"

[[site]]
name = "blog"
hosts = ["blog.example"]
key_version = "{blog}"
[[site.server]]
url = "http://{origin}"
"#
    )
}

/// `{host}{path}#{n}`, n counted over every request; fresh for an hour.
fn handler(req: &Seen, n: usize) -> Reply {
    Reply::ok(format!("{}{}#{n}", req.header("host").unwrap_or("-"), req.path())).cc("max-age=3600")
}

async fn get(c: &Client, host: &str, path: &str) -> Resp {
    c.get_with(path, &[("host", host)]).await
}

#[tokio::test]
async fn a_new_key_version_makes_every_object_of_its_site_a_miss_and_leaves_the_other_site_alone() {
    let clock = clock();
    let origin = Origin::start(&clock, handler).await;
    let file = File::new("two");
    file.write(&two_sites(origin.addr(), "r1", "b1", ""));
    let p = start_from(&file, &clock).await;
    let c = Client::new(p.addr());
    for path in ["/a", "/b"] {
        assert_eq!(get(&c, "shop.example", path).await.cache_status(), MISS_STORED);
    }
    assert_eq!(get(&c, "blog.example", "/a").await.cache_status(), MISS_STORED);
    assert_eq!(get(&c, "shop.example", "/a").await.cache_status(), hit(3600));

    file.write(&two_sites(origin.addr(), "r2", "b1", ""));
    assert_eq!(p.live().reload("test").expect("valid").changed, ["site"]);
    for path in ["/a", "/b"] {
        let r = get(&c, "shop.example", path).await;
        assert_eq!(r.cache_status(), MISS_STORED, "{path} served from the old version");
    }
    let r = get(&c, "blog.example", "/a").await;
    assert_eq!((r.text().as_str(), r.cache_status()), ("blog.example/a#3", hit(3600).as_str()));
    // The old objects are still in memory, unreachable, until their time runs out.
    assert_eq!(stored_urls(&p), 5);
    assert_eq!(origin.count(), 5);
}

#[tokio::test]
async fn a_global_key_version_applies_to_the_implied_site_and_a_purge_by_url_finds_the_new_keys() {
    let clock = clock();
    let origin = Origin::start(&clock, handler).await;
    let file = File::new("global");
    let text = |v: &str| {
        format!(
            "listen = \"127.0.0.1:0\"\norigin = \"http://{}\"\n[log]\naccess = false\n[cache]\nkey_version = \"{v}\"\n",
            origin.addr()
        )
    };
    file.write(&text("1"));
    let p = start_from(&file, &clock).await;
    let c = Client::new(p.addr());
    assert_eq!(get(&c, "www.example", "/g").await.cache_status(), MISS_STORED);
    assert!(p.proxy().memory().get(&CacheKey::new("http", "www.example", "/g")).is_none(), "stored unversioned");
    file.write(&text("2"));
    assert_eq!(p.live().reload("test").expect("valid").changed, ["cache"]);
    assert_eq!(get(&c, "www.example", "/g").await.cache_status(), MISS_STORED);
    assert_eq!(get(&c, "www.example", "/g").await.cache_status(), hit(3600));
    // A URL purge computes the key under the running version.
    let keys = p.proxy().purge_keys("www.example", "/g");
    assert!(p.proxy().memory().get(&keys[0]).is_some(), "the purge key is not the stored key");
}

#[tokio::test]
async fn a_version_bump_is_fleet_wide_through_redis_for_every_node_that_runs_it() {
    let clock = clock();
    let redis = RedisServer::start();
    let origin = Origin::start(&clock, handler).await;
    let with_redis = format!("[redis]\nurl = \"{}\"\n", redis.url());
    let (fa, fb) = (File::new("fleet-a"), File::new("fleet-b"));
    fa.write(&two_sites(origin.addr(), "r1", "b1", &with_redis));
    fb.write(&two_sites(origin.addr(), "r1", "b1", &with_redis));
    let (a, b) = (start_from(&fa, &clock).await, start_from(&fb, &clock).await);
    for p in [&a, &b] {
        eventually("shared tier connected", async || p.proxy().shared().is_some_and(|s| s.available())).await;
    }
    let (ca, cb) = (Client::new(a.addr()), Client::new(b.addr()));
    let written = |p: &Running, n: u64| {
        let stats = p.proxy().metrics().shared.clone();
        async move {
            eventually("writes reached Redis", async || stats.writes.load(std::sync::atomic::Ordering::Relaxed) >= n)
                .await
        }
    };
    assert_eq!(get(&ca, "shop.example", "/f").await.cache_status(), MISS_STORED);
    written(&a, 1).await;
    assert_eq!(get(&cb, "shop.example", "/f").await.cache_status(), "edgecache; hit; tier=shared; ttl=3600");

    // A deploys r2: its r1 objects are unreachable in memory and in Redis.
    fa.write(&two_sites(origin.addr(), "r2", "b1", &with_redis));
    a.live().reload("test").expect("valid");
    let r = get(&ca, "shop.example", "/f").await;
    assert_eq!((r.text().as_str(), r.cache_status()), ("shop.example/f#2", MISS_STORED));
    written(&a, 2).await;
    // B, reloaded to r2 as well, finds A's r2 object in Redis, never the r1 one it holds.
    fb.write(&two_sites(origin.addr(), "r2", "b1", &with_redis));
    b.live().reload("test").expect("valid");
    let r = get(&cb, "shop.example", "/f").await;
    assert_eq!((r.text().as_str(), r.cache_status()), ("shop.example/f#2", "edgecache; hit; tier=shared; ttl=3600"));
    assert_eq!(origin.count(), 2);
    // The r1 object left in Redis ages out by its TTL.
    let old = format!("ec:v1:{{{}}}", CacheKey::versioned(&KeyVersion::new("r1"), "http", "shop.example", "/f"));
    let ttl: i64 = redis.cmd(&[b"TTL", old.as_bytes()]).await;
    assert!(ttl > 0, "the old version's key has no TTL: {ttl}");
}

#[tokio::test]
async fn a_bad_key_version_is_refused_with_its_field_name() {
    let err = Config::parse("[cache]\nkey_version = \"a b\"\n").unwrap_err();
    assert_eq!(err.problems[0].0, "cache.key_version");
    let err = Config::parse(&two_sites("127.0.0.1:1".parse().unwrap(), "", "b", "")).unwrap_err();
    let paths: Vec<&str> = err.problems.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(paths, ["site[0].key_version"]);
}
