//! A built-in demo origin, so a newcomer sees miss, hit, 304, revalidation and "not stored"
//! with one command. Each page's headers show one caching behaviour.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

const INDEX: &str = "edgecache demo origin\n\
/articles/N   public, max-age=60, ETag \"aN\"      -> miss, then hit; If-None-Match gives 304\n\
/short        max-age=5, ETag                    -> after 5 s, revalidated (origin answers 304)\n\
/no-cache     no-cache, ETag                     -> stored, revalidated on every request\n\
/private      private, max-age=60                -> not stored (detail=private)\n\
/no-store     no-store                           -> not stored (detail=no-store)\n\
/cookie       max-age=60 + Set-Cookie            -> not stored (detail=set-cookie)\n\
/lang         max-age=60, Vary: Accept-Language  -> one variant per language\n\
/heuristic    Last-Modified only                 -> heuristic freshness\n\
/slow         max-age=60 after 2 s               -> concurrent requests share one fill (collapsed)\n\
/swr          max-age=2, stale-while-revalidate=60 -> stale served at once, refreshed in the background\n\
/sie          max-age=2, stale-if-error=60; then 503 -> the stale copy is served while the origin fails\n\
/bytes/N/...  N bytes (at most 16 MiB), public, max-age=3600 -> any path under it is its own object\n";

static SIE_CALLS: AtomicU64 = AtomicU64::new(0);

/// Binds `addr` and serves the demo origin in a background task; returns the bound address.
pub async fn spawn(addr: SocketAddr) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let hits = Arc::new(AtomicU64::new(0));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let hits = hits.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let n = hits.fetch_add(1, Ordering::Relaxed) + 1;
                    async move { Ok::<_, Infallible>(page(req, n).await) }
                });
                let _ = auto::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    });
    Ok(local)
}

async fn page(req: Request<Incoming>, n: u64) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let now = httpdate::fmt_http_date(SystemTime::now());
    let resp = Response::builder().header(header::DATE, &now).header(header::CONTENT_TYPE, "text/plain; charset=utf-8");
    let inm = req.headers().get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let body = |s: String| Full::new(Bytes::from(s));
    let text = format!("{path}: origin response #{n} at {now}\n");
    let with_etag = |resp: http::response::Builder, etag: &str| {
        if inm.as_deref() == Some(etag) {
            return resp.status(StatusCode::NOT_MODIFIED).header(header::ETAG, etag).body(body(String::new()));
        }
        resp.header(header::ETAG, etag).body(body(text.clone()))
    };
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return resp.body(body(format!("{} {path}: accepted (request #{n})\n", req.method()))).unwrap_or_default();
    }
    let r = match path.as_str() {
        "/" => resp.header(header::CACHE_CONTROL, "no-cache").body(body(INDEX.to_string())),
        p if p.starts_with("/bytes/") => {
            let n = p["/bytes/".len()..].split('/').next().and_then(|n| n.parse::<usize>().ok());
            match n.filter(|&n| n <= 16 << 20) {
                Some(n) => resp
                    .header(header::CACHE_CONTROL, "public, max-age=3600")
                    .header(header::ETAG, format!("\"b{n}\""))
                    .body(Full::new(Bytes::from(vec![b'x'; n]))),
                None => resp.status(StatusCode::BAD_REQUEST).body(body("size: 0 to 16777216 bytes\n".into())),
            }
        }
        p if p.starts_with("/articles/") => {
            let id = &p["/articles/".len()..];
            let etag = format!("\"a{id}\"");
            with_etag(resp.header(header::CACHE_CONTROL, "public, max-age=60"), &etag)
        }
        "/short" => with_etag(resp.header(header::CACHE_CONTROL, "max-age=5"), "\"short-v1\""),
        "/no-cache" => with_etag(resp.header(header::CACHE_CONTROL, "no-cache"), "\"nc-v1\""),
        "/private" => resp.header(header::CACHE_CONTROL, "private, max-age=60").body(body(text)),
        "/no-store" => resp.header(header::CACHE_CONTROL, "no-store").body(body(text)),
        "/cookie" => resp
            .header(header::CACHE_CONTROL, "max-age=60")
            .header(header::SET_COOKIE, format!("session={n}; HttpOnly"))
            .body(body(text)),
        "/lang" => {
            let lang = req.headers().get(header::ACCEPT_LANGUAGE).cloned().unwrap_or(HeaderValue::from_static("en"));
            let greeting = if lang.to_str().unwrap_or("").starts_with("fr") { "Bonjour" } else { "Hello" };
            resp.header(header::CACHE_CONTROL, "max-age=60")
                .header(header::VARY, "Accept-Language")
                .body(body(format!("{greeting} (response #{n})\n")))
        }
        "/heuristic" => {
            let lm = httpdate::fmt_http_date(SystemTime::now() - Duration::from_secs(3_600));
            resp.header(header::LAST_MODIFIED, lm).body(body(text))
        }
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(2)).await;
            resp.header(header::CACHE_CONTROL, "max-age=60").body(body(text))
        }
        "/swr" => with_etag(
            resp.header(header::CACHE_CONTROL, "max-age=2, stale-while-revalidate=60"),
            &format!("\"swr{n}\""),
        ),
        "/sie" if SIE_CALLS.fetch_add(1, Ordering::Relaxed) == 0 => {
            resp.header(header::CACHE_CONTROL, "max-age=2, stale-if-error=60").body(body(text))
        }
        "/sie" => resp.status(StatusCode::SERVICE_UNAVAILABLE).body(body("origin is down\n".into())),
        _ => resp
            .status(StatusCode::NOT_FOUND)
            .header(header::CACHE_CONTROL, "max-age=10")
            .body(body("not found\n".into())),
    };
    r.unwrap_or_default()
}
