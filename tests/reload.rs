//! Hot reload: the file re-read and swapped in under load without a failed request or a lost
//! object; an invalid file changes nothing and names every bad field; a new memory budget
//! resizes the store; the shared tier's connection survives a reload that leaves it alone.

pub mod common;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use common::redis::RedisServer;
use common::*;
use edgecache::clock::ManualClock;
use edgecache::config::Config;
use edgecache::metrics::ReloadResult;
use edgecache::ops::Ops;
use edgecache::proxy::Proxy;
use edgecache::reload::{Live, Steps};
use edgecache::Running;

/// A `proxy.toml` in the system's temporary folder, removed when dropped.
struct File(PathBuf);

impl File {
    fn new(name: &str) -> File {
        File(std::env::temp_dir().join(format!("edgecache-reload-{}-{name}.toml", std::process::id())))
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

/// The file's text for `origin`, with `extra` appended.
fn text(origin: std::net::SocketAddr, extra: &str) -> String {
    format!("listen = \"127.0.0.1:0\"\norigin = \"http://{origin}\"\n[log]\naccess = false\n{extra}\n")
}

/// A proxy started from `file` on `clock`, reloading from it.
async fn start_from(file: &File, clock: &Arc<ManualClock>) -> Running {
    let cfg = Config::from_file(&file.0).expect("valid file");
    let listeners = edgecache::server::Listeners::bind(&cfg).await.expect("bind");
    let proxy = Proxy::new(Arc::new(cfg), clock.clone());
    let live = Arc::new(Live::new(proxy, Some(file.0.clone()), Box::new(|_| {})));
    edgecache::server::start_on(listeners, None, live).expect("serve")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_reloads_under_constant_load_fail_no_request_and_lose_no_object() {
    const OBJECTS: usize = 200;
    let clock = clock();
    let origin = Origin::start(&clock, |req, _| Reply::ok(req.path().to_string()).cc("max-age=3600")).await;
    let file = File::new("load");
    file.write(&text(origin.addr(), ""));
    let p = start_from(&file, &clock).await;
    let c = Arc::new(Client::new(p.addr()));
    for i in 0..OBJECTS {
        assert_eq!(c.get(&format!("/o/{i}")).await.cache_status(), MISS_STORED);
    }

    // Four clients ask without pause: stored objects, and new URLs that go to the origin.
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut load = tokio::task::JoinSet::new();
    for worker in 0..4 {
        let (c, stop, done) = (c.clone(), stop.clone(), done.clone());
        load.spawn(async move {
            let mut failures = Vec::new();
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let path = if n % 4 == 3 {
                    format!("/new/{worker}/{n}")
                } else {
                    format!("/o/{}", (n * 7 + worker) % OBJECTS)
                };
                match c.try_send("GET", &path, &[], Default::default()).await {
                    Ok(r) if r.status == 200 && r.text() == path => {}
                    Ok(r) => failures.push(format!("{path}: {} {}", r.status, r.cache_status())),
                    Err(e) => failures.push(format!("{path}: {e}")),
                }
                n += 1;
                done.fetch_add(1, Ordering::Relaxed);
            }
            failures
        });
    }

    for round in 1..=20u64 {
        // Every round changes something a request uses: the stale grace, and every other
        // round the origin client's connect timeout (a new pool; in-flight requests finish on
        // the old one).
        let connect = if round % 2 == 0 { "5s" } else { "6s" };
        file.write(&text(
            origin.addr(),
            &format!("[stale]\ngrace = \"{round}s\"\n[timeouts]\nconnect = \"{connect}\""),
        ));
        let before = done.load(Ordering::Relaxed);
        let reloaded = p.live().reload("test").expect("valid file");
        assert_eq!(reloaded.need_restart, Vec::<&str>::new());
        assert_eq!(p.proxy().config().stale.grace.as_secs(), round);
        eventually("the clients went on after the reload", async || done.load(Ordering::Relaxed) >= before + 20).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut failures = Vec::new();
    while let Some(r) = load.join_next().await {
        failures.extend(r.expect("load task"));
    }
    assert_eq!(failures, Vec::<String>::new());
    assert!(done.load(Ordering::Relaxed) >= 400);
    for i in 0..OBJECTS {
        let path = format!("/o/{i}");
        assert!(c.get(&path).await.is_hit(), "{path} was lost");
        assert_eq!(origin.count_path(&path), 1, "{path} fetched again");
    }
    let m = p.proxy().metrics().clone();
    assert_eq!(m.reloads(ReloadResult::Ok), 20);
    assert_eq!(m.reloads(ReloadResult::Invalid), 0);
}

#[tokio::test]
async fn an_invalid_file_keeps_the_running_configuration_and_names_every_bad_field() {
    let clock = clock();
    let origin = Origin::start(&clock, |_, _| Reply::ok("x").cc("max-age=60")).await;
    let file = File::new("invalid");
    file.write(&text(origin.addr(), "[stale]\ngrace = \"3s\""));
    let p = start_from(&file, &clock).await;
    let c = Client::new(p.addr());
    assert_eq!(c.get("/a").await.cache_status(), MISS_STORED);
    let running = p.proxy();

    file.write(&text(origin.addr(), "[stale]\ngrace = \"soon\"\n[cache]\nmemory = \"lots\"\ncolour = \"blue\""));
    let err = p.live().reload("test").expect_err("an invalid file");
    let fields: Vec<&str> = err.problems.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(fields, ["cache.memory", "cache.colour", "stale.grace"]);
    assert!(Arc::ptr_eq(&running, &p.proxy()), "the running proxy was replaced");
    assert_eq!(p.proxy().config().stale.grace.as_secs(), 3);
    assert_eq!(c.get("/a").await.cache_status(), hit(60));

    // The same through POST /reload: 400 and every problem.
    let ops = Ops::new(p.live().clone(), Arc::new(Steps::config(p.live().clone())));
    let answer = ops.reload("POST /reload");
    assert_eq!(answer.status, 400);
    let problems: Vec<String> = err.to_string().lines().map(str::to_string).collect();
    assert_eq!(problems.iter().map(|p| p.split(": ").next().unwrap()).collect::<Vec<_>>(), fields);
    let steps = serde_json::json!([{ "step": "config", "result": "invalid", "problems": problems }]);
    let body: serde_json::Value = serde_json::from_str(&answer.body).expect("JSON");
    assert_eq!(body, serde_json::json!({ "status": "error", "steps": steps }));
    let m = p.proxy().metrics().clone();
    assert_eq!(m.reloads(ReloadResult::Invalid), 2);
    assert!(m.render().contains("edgecache_reload_problems 3"));
    let log = m.reload_log();
    assert_eq!(log.last().map(|r| (r.result, r.trigger.as_str())), Some((ReloadResult::Invalid, "POST /reload")));
}

#[tokio::test]
async fn a_new_memory_budget_resizes_the_store_and_keeps_what_fits() {
    let clock = clock();
    let origin = Origin::start(&clock, |_, _| Reply::ok(vec![b'x'; 30 << 10]).cc("max-age=600")).await;
    let file = File::new("budget");
    file.write(&text(origin.addr(), "[cache]\nmemory = \"4MiB\"\nmax_object_size = \"64KiB\""));
    let p = start_from(&file, &clock).await;
    let c = Client::new(p.addr());
    for i in 0..50 {
        assert_eq!(c.get(&format!("/{i}")).await.cache_status(), MISS_STORED);
    }
    assert_eq!(p.proxy().memory().entry_count(), 50);

    file.write(&text(origin.addr(), "[cache]\nmemory = \"64MiB\"\nmax_object_size = \"64KiB\""));
    assert_eq!(p.live().reload("test").expect("valid").changed, ["cache"]);
    assert_eq!(p.proxy().memory().budget(), 64 << 20);
    assert_eq!(p.proxy().memory().entry_count(), 50, "a larger budget lost objects");
    for i in 0..50 {
        assert!(c.get(&format!("/{i}")).await.is_hit(), "/{i} lost");
    }

    // 50 objects of 30 KiB do not fit in 1 MiB: the store keeps what does.
    file.write(&text(origin.addr(), "[cache]\nmemory = \"1MiB\"\nmax_object_size = \"64KiB\""));
    p.live().reload("test").expect("valid");
    let memory = p.proxy().memory().clone();
    assert_eq!(memory.budget(), 1 << 20);
    assert!(memory.weighted_size() <= 1 << 20);
    assert!((20..50).contains(&memory.entry_count()), "{} objects kept", memory.entry_count());
}

#[tokio::test]
async fn the_shared_tier_connection_survives_a_reload_that_leaves_redis_alone() {
    let clock = clock();
    let redis = RedisServer::start();
    let origin = Origin::start(&clock, |_, _| Reply::ok("x").cc("max-age=60")).await;
    let file = File::new("redis");
    let with = |extra: &str| text(origin.addr(), &format!("[redis]\nurl = \"{}\"\n{extra}", redis.url()));
    file.write(&with("[stale]\ngrace = \"1s\""));
    let p = start_from(&file, &clock).await;
    eventually("shared tier connected", async || p.proxy().shared().is_some_and(|s| s.available())).await;
    let first = p.proxy();

    file.write(&with("[stale]\ngrace = \"2s\""));
    p.live().reload("test").expect("valid");
    assert!(p.proxy().shares_shared_tier_with(&first), "the connection was not kept");
    assert!(p.proxy().shares_origin_client_with(&first));

    file.write(&with("budget = \"40ms\""));
    assert_eq!(p.live().reload("test").expect("valid").changed, ["stale", "redis"]);
    assert!(!p.proxy().shares_shared_tier_with(&first), "a changed [redis] kept the old connection");
    eventually("the new shared tier connected", async || p.proxy().shared().is_some_and(|s| s.available())).await;
}
