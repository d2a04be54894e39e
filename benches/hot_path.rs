//! Benchmarks of the per-request hot path: the cache key, `Cache-Control` parsing, freshness,
//! Vary matching, one end-to-end cache hit through the proxy on loopback, and a 1 MiB hit of a
//! whole object against a 1 MiB range answered from a stored slice.
//!
//! `cargo bench --bench hot_path` (criterion; `-- --quick` for a short run, `-- key` to filter).

use std::convert::Infallible;
use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use edgecache::clock::SystemClock;
use edgecache::config::{Config, LogConfig, Origin};
use edgecache::http::cache_control::CacheControl;
use edgecache::http::policy::{self, PolicyOptions, Usable};
use edgecache::http::vary;
use edgecache::status::CacheStatus;
use edgecache::store::headers::StoredHeaders;
use edgecache::store::ready::{self, Head};
use edgecache::store::{CacheKey, Entry, MemoryTier};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Full};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// A response `Cache-Control` as CDNs see it.
const RESPONSE_CC: &str = "public, max-age=3600, s-maxage=600, stale-while-revalidate=30, stale-if-error=86400";
/// Milliseconds since the epoch; the times below are relative to it.
const T0: u64 = 1_700_000_000_000;

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (name, value) in pairs {
        h.append(*name, HeaderValue::from_str(value).expect("valid header value"));
    }
    h
}

fn key(c: &mut Criterion) {
    c.bench_function("CacheKey::new", |b| {
        b.iter(|| {
            CacheKey::new(
                black_box("http"),
                black_box("www.example.com"),
                black_box("/static/js/app.4f3c2a9e.js?v=1723&lang=en"),
            )
        })
    });
}

fn control(c: &mut Criterion) {
    c.bench_function("CacheControl::parse", |b| b.iter(|| CacheControl::parse(black_box(RESPONSE_CC))));
}

fn freshness(c: &mut Criterion) {
    let date = httpdate::fmt_http_date(edgecache::clock::from_millis(T0));
    let modified = httpdate::fmt_http_date(edgecache::clock::from_millis(T0 - 86_400_000));
    let resp = headers(&[
        ("date", &date),
        ("last-modified", &modified),
        ("etag", "\"33a64df551425fcc55e4d42a148795d9f25f89d4\""),
        ("age", "12"),
        ("cache-control", RESPONSE_CC),
        ("content-type", "text/html; charset=utf-8"),
    ]);
    let opts = PolicyOptions::default();
    let cc = policy::response_cache_control(&resp, &opts);
    c.bench_function("policy::freshness", |b| {
        b.iter(|| policy::freshness(StatusCode::OK, black_box(&resp), black_box(&cc), T0, T0 + 5, &opts))
    });
    let fresh = policy::freshness(StatusCode::OK, &resp, &cc, T0, T0 + 5, &opts);
    let req_cc = CacheControl::parse("max-age=600");
    assert_eq!(fresh.usable(&req_cc, T0 + 60_000), Usable::Fresh);
    c.bench_function("Freshness::usable", |b| {
        b.iter(|| black_box(&fresh).usable(black_box(&req_cc), black_box(T0 + 60_000)))
    });
}

fn vary_match(c: &mut Criterion) {
    let names = [HeaderName::from_static("accept-encoding"), HeaderName::from_static("accept-language")];
    let stored = vary::vary_key(
        &names,
        &headers(&[("accept-encoding", "gzip, deflate, br"), ("accept-language", "en-US,en;q=0.9,de;q=0.8")]),
    );
    // Same selection, different order and case: exercises normalization.
    let req = headers(&[
        ("accept-encoding", "br, GZIP, deflate"),
        ("accept-language", "de;q=0.8, en-US, en;q=0.9"),
        ("user-agent", "Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/128.0"),
    ]);
    assert!(vary::matches(&stored, &req));
    c.bench_function("vary::matches", |b| b.iter(|| vary::matches(black_box(&stored), black_box(&req))));
}

static BODY: [u8; 1024] = [b'x'; 1024];

/// An origin on 127.0.0.1:0 answering every request with 1 KiB, cacheable for an hour.
async fn spawn_origin() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind origin");
    let addr = listener.local_addr().expect("origin address");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let svc = service_fn(|_req| async {
                    Ok::<_, Infallible>(
                        Response::builder()
                            .header(header::CACHE_CONTROL, "public, max-age=3600")
                            .header(header::ETAG, "\"v1\"")
                            .body(Full::new(Bytes::from_static(&BODY)))
                            .expect("valid response"),
                    )
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    });
    addr
}

fn end_to_end(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let (running, client, uri) = rt.block_on(async {
        let origin = spawn_origin().await;
        let defaults = Config::default();
        let cfg = Config {
            listen: "127.0.0.1:0".parse().expect("valid address"),
            origin: Origin::parse(&format!("http://{origin}")).expect("valid origin"),
            log: LogConfig { access: false, ..defaults.log },
            ..defaults
        };
        let running = edgecache::start(cfg, Arc::new(SystemClock)).await.expect("start the proxy");
        let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
        let uri: Uri = format!("http://{}/hit/1k", running.addr()).parse().expect("valid URI");
        // Prime, then check that the next request is a hit.
        let resp = client.get(uri.clone()).await.expect("prime");
        resp.into_body().collect().await.expect("prime body");
        let resp = client.get(uri.clone()).await.expect("hit");
        let status = resp.headers().get("cache-status").cloned();
        assert!(
            status.as_ref().and_then(|s| s.to_str().ok()).is_some_and(|s| s.contains("hit")),
            "not a hit: cache-status {status:?}"
        );
        resp.into_body().collect().await.expect("hit body");
        (running, client, uri)
    });

    let (client_ref, uri_ref) = (&client, &uri);
    c.bench_function("e2e GET hit 1 KiB (keep-alive)", |b| {
        b.to_async(&rt).iter(|| async move {
            let resp = client_ref.get(uri_ref.clone()).await.expect("GET");
            assert_eq!(resp.status(), StatusCode::OK);
            let body = resp.into_body().collect().await.expect("body").to_bytes();
            black_box(body)
        })
    });
    drop(client);
    rt.block_on(running.shutdown());
}

/// An origin on 127.0.0.1:0: `/whole` is 1 MiB, `/sliced` 16 MiB (past `max_object_size`, so
/// only ever stored in slices) answering one byte range per request; both cacheable for an hour.
async fn spawn_large_origin() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind origin");
    let addr = listener.local_addr().expect("origin address");
    let whole = Bytes::from(vec![b'w'; 1 << 20]);
    let sliced = Bytes::from(vec![b's'; 16 << 20]);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (whole, sliced) = (whole.clone(), sliced.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let (whole, sliced) = (whole.clone(), sliced.clone());
                    async move {
                        let resp = Response::builder()
                            .header(header::CACHE_CONTROL, "public, max-age=3600")
                            .header(header::ETAG, "\"v1\"");
                        let range = req.headers().get(header::RANGE).and_then(|r| r.to_str().ok());
                        let spec = range.and_then(|r| r.strip_prefix("bytes=")).and_then(|s| s.split_once('-'));
                        let resp = match (req.uri().path(), spec) {
                            ("/sliced", Some((a, b))) => {
                                let (a, b): (usize, usize) = (a.parse().expect("start"), b.parse().expect("end"));
                                let b = b.min(sliced.len() - 1);
                                resp.status(StatusCode::PARTIAL_CONTENT)
                                    .header(header::CONTENT_RANGE, format!("bytes {a}-{b}/{}", sliced.len()))
                                    .body(Full::new(sliced.slice(a..=b)))
                            }
                            _ => resp.body(Full::new(whole)),
                        };
                        Ok::<_, Infallible>(resp.expect("valid response"))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    });
    addr
}

/// A 1 MiB hit of a whole stored object against a 1 MiB range answered from a stored slice.
fn range_hit(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let (running, client, whole, sliced) = rt.block_on(async {
        let origin = spawn_large_origin().await;
        let defaults = Config::default();
        let cfg = Config {
            listen: "127.0.0.1:0".parse().expect("valid address"),
            origin: Origin::parse(&format!("http://{origin}")).expect("valid origin"),
            log: LogConfig { access: false, ..defaults.log },
            ..defaults
        };
        let running = edgecache::start(cfg, Arc::new(SystemClock)).await.expect("start the proxy");
        let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
        let whole: Uri = format!("http://{}/whole", running.addr()).parse().expect("valid URI");
        let sliced: Uri = format!("http://{}/sliced", running.addr()).parse().expect("valid URI");
        for (uri, range) in [(&whole, None), (&sliced, Some("bytes=1048576-2097151"))] {
            for round in ["prime", "hit"] {
                let mut req = http::Request::get(uri.clone());
                if let Some(r) = range {
                    req = req.header(header::RANGE, r);
                }
                let resp = client.request(req.body(Empty::new()).expect("request")).await.expect("GET");
                let status = resp.headers().get("cache-status").and_then(|s| s.to_str().ok()).unwrap_or("").to_owned();
                let body = resp.into_body().collect().await.expect("body").to_bytes();
                assert_eq!(body.len(), 1 << 20, "{uri} {round}");
                assert!(round == "prime" || status.contains("hit"), "{uri}: not a hit: {status}");
            }
        }
        (running, client, whole, sliced)
    });
    let client_ref = &client;
    for (name, uri, range) in [
        ("e2e GET hit 1 MiB whole object", &whole, None),
        ("e2e GET hit 1 MiB range from a stored slice", &sliced, Some("bytes=1048576-2097151")),
    ] {
        c.bench_function(name, |b| {
            b.to_async(&rt).iter(|| async move {
                let mut req = http::Request::get(uri.clone());
                if let Some(r) = range {
                    req = req.header(header::RANGE, r);
                }
                let resp = client_ref.request(req.body(Empty::new()).expect("request")).await.expect("GET");
                let body = resp.into_body().collect().await.expect("body").to_bytes();
                black_box(body)
            })
        });
    }
    drop(client);
    rt.block_on(running.shutdown());
}

/// Memory-tier lookup of one of 10,000 stored URLs, and the variant selection.
fn lookup(c: &mut Criterion) {
    let tier = MemoryTier::new(256 << 20, 16, Arc::new(SystemClock));
    let stored = stored_entry();
    let keys: Vec<CacheKey> =
        (0..10_000).map(|i| CacheKey::new("http", "www.example.com", &format!("/a/{i}"))).collect();
    for k in &keys {
        tier.insert(*k, stored.clone(), std::time::Duration::from_secs(3600));
    }
    let req = HeaderMap::new();
    let mut i = 0;
    c.bench_function("MemoryTier::get + select (10k URLs)", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            let v = tier.get(black_box(&keys[i])).expect("stored");
            black_box(v.select(&req).is_some())
        })
    });
}

/// Building a hit's response head: the stored fields into a `HeaderMap`, `Age`, `Cache-Status`.
fn response_assembly(c: &mut Criterion) {
    let stored = stored_entry();
    c.bench_function("hit response head (10 stored fields)", |b| {
        b.iter(|| {
            let mut h = black_box(&stored).headers.to_map_with_capacity(3);
            h.insert(header::AGE, HeaderValue::from(12u64));
            h.insert(HeaderName::from_static("cache-status"), CacheStatus::hit(48).header_value());
            black_box(h)
        })
    });
    // The same head from the table of heads kept ready (what a hit on a hot entry does).
    c.bench_function("hit response head, kept ready (10 stored fields)", |b| {
        b.iter(|| {
            let e = black_box(&stored);
            let mut h = ready::header_map(e, Head::Full, || e.headers.to_map_with_capacity(3));
            h.insert(header::AGE, HeaderValue::from(12u64));
            h.insert(HeaderName::from_static("cache-status"), CacheStatus::hit(48).header_value());
            black_box(h)
        })
    });
}

/// A typical stored 1 KiB response (the fields nginx sends, plus Via).
fn stored_entry() -> Arc<Entry> {
    let date = httpdate::fmt_http_date(edgecache::clock::from_millis(T0));
    let resp = headers(&[
        ("server", "nginx/1.22.1"),
        ("date", &date),
        ("content-type", "application/octet-stream"),
        ("content-length", "1024"),
        ("last-modified", &date),
        ("etag", "\"6565e0a1-400\""),
        ("cache-control", "public, max-age=3600"),
        ("accept-ranges", "bytes"),
        ("via", "1.1 edgecache"),
    ]);
    let opts = PolicyOptions::default();
    let cc = policy::response_cache_control(&resp, &opts);
    let freshness = policy::freshness(StatusCode::OK, &resp, &cc, T0, T0, &opts);
    Arc::new(Entry {
        status: StatusCode::OK,
        headers: StoredHeaders::from_map(&resp),
        body: Bytes::from(vec![b'x'; 1024]),
        vary: Box::new([]),
        freshness,
        checked: Default::default(),
        heat: Default::default(),
    })
}

criterion_group!(benches, key, control, freshness, vary_match, lookup, response_assembly, end_to_end, range_hit);
criterion_main!(benches);
