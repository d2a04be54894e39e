//! The pooled keep-alive client to the origin, and the header rules for forwarding
//! (hop-by-hop removal, `Via`, `X-Forwarded-*`).

use std::error::Error as _;
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::body::{BodyTimeout, UpBody};
use crate::config::Config;

/// Why a request to the origin failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// Connection refused, reset, or failed before a response head arrived.
    #[error("origin unreachable: {0}")]
    Unreachable(String),
    /// No response head within `timeouts.first_byte`, or no connection within `timeouts.connect`.
    #[error("origin timed out")]
    Timeout,
    /// The client's request body stalled past `timeouts.request_body`.
    #[error("client request body timed out")]
    ClientBodyTimeout,
}

/// Pooled client to the one origin.
#[derive(Clone)]
pub struct Upstream {
    client: Client<HttpConnector, UpBody>,
    first_byte: Duration,
}

impl Upstream {
    /// A client configured from `cfg`.
    pub fn new(cfg: &Config) -> Self {
        let mut conn = HttpConnector::new();
        conn.set_connect_timeout(Some(cfg.timeouts.connect));
        conn.set_nodelay(true);
        conn.set_keepalive(Some(Duration::from_secs(60)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(cfg.timeouts.idle)
            .pool_max_idle_per_host(1024)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(conn);
        Upstream { client, first_byte: cfg.timeouts.first_byte }
    }

    /// Sends `req`, waiting at most `timeouts.first_byte` for the response head.
    pub async fn send(&self, req: Request<UpBody>) -> Result<Response<Incoming>, UpstreamError> {
        match tokio::time::timeout(self.first_byte, self.client.request(req)).await {
            Err(_) => Err(UpstreamError::Timeout),
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(classify(&e)),
        }
    }
}

fn classify(e: &hyper_util::client::legacy::Error) -> UpstreamError {
    let mut src: Option<&(dyn std::error::Error + 'static)> = e.source();
    while let Some(s) = src {
        if s.is::<BodyTimeout>() {
            return UpstreamError::ClientBodyTimeout;
        }
        let text = s.to_string();
        if text.contains("timed out") {
            return UpstreamError::Timeout;
        }
        src = s.source();
    }
    let mut msg = e.to_string();
    if let Some(s) = e.source() {
        msg = format!("{msg}: {s}");
    }
    UpstreamError::Unreachable(msg)
}

/// Header fields that apply to one connection only (RFC 9110 §7.6.1) and are never forwarded.
const HOP_BY_HOP: &[HeaderName] = &[
    header::CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
    header::PROXY_AUTHENTICATE,
];

/// Removes hop-by-hop fields, including every field named in `Connection`.
pub fn remove_hop_by_hop(h: &mut HeaderMap) {
    let listed: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|s| s.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().to_ascii_lowercase().as_bytes()).ok())
        .collect();
    for name in listed {
        h.remove(name);
    }
    for name in HOP_BY_HOP {
        h.remove(name);
    }
    h.remove("keep-alive");
    h.remove("proxy-connection");
}

/// The `Via` value this proxy adds (RFC 9110 §7.6.3).
pub fn via(version: http::Version) -> &'static str {
    match version {
        http::Version::HTTP_10 => "1.0 edgecache",
        http::Version::HTTP_2 => "2 edgecache",
        _ => "1.1 edgecache",
    }
}

/// Appends `value` to a list field, keeping what is there.
pub fn append_list(h: &mut HeaderMap, name: HeaderName, value: &str) {
    let joined = match h.get(&name).and_then(|v| v.to_str().ok()) {
        Some(existing) if !existing.is_empty() => {
            let all: Vec<&str> = h.get_all(&name).iter().filter_map(|v| v.to_str().ok()).collect();
            format!("{}, {value}", all.join(", "))
        }
        _ => value.to_string(),
    };
    if let Ok(v) = HeaderValue::from_str(&joined) {
        h.insert(name, v);
    }
}
