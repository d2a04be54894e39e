//! One request as the flow handles it: its checks (framing, target, `Host`), where it goes
//! ([`Target`]), and what the steps after the checks share ([`Ctx`]).

use std::borrow::Cow;
use std::net::SocketAddr;

use http::header::{self, HeaderMap, HeaderValue};
use http::uri::PathAndQuery;
use http::{request, Method, StatusCode};
use hyper::body::Incoming;

use super::endpoint::Scheme;
use crate::http::cache_control::CacheControl;
use crate::site::Route;
use crate::store::key::normalized_host;
use crate::store::CacheKey;

/// A cacheable request (GET or HEAD without a body) and what the steps after its checks need.
pub struct Ctx {
    /// The request line and header fields.
    pub parts: request::Parts,
    /// Where it goes.
    pub target: Target,
    /// The client's address.
    pub peer: SocketAddr,
    /// The request's `Cache-Control`.
    pub cc: CacheControl,
    /// The cache key.
    pub key: CacheKey,
    /// Its site and the site's rules that match.
    pub route: Route,
    /// What the key was made of, when a site's key rule made it of something else than the URL
    /// as forwarded.
    pub key_url: Option<Box<str>>,
}

impl Ctx {
    /// This request, as what an origin request is made from.
    pub(super) fn asker(&self) -> super::origin::Asker<'_> {
        super::origin::Asker { parts: &self.parts, target: &self.target, peer: self.peer, route: self.route }
    }

    /// The URL stored with the response in the shared tier's envelopes: what the key was made of.
    pub fn canonical(&self) -> String {
        match &self.key_url {
            Some(url) => url.to_string(),
            None => self.target.canonical(),
        }
    }
}

/// Where a request goes, as forwarded: the scheme the client used, normalized host and the path
/// and query. Host and path share the request's own bytes when they are already in normal form
/// (no copy).
#[derive(Clone)]
pub struct Target {
    /// The scheme of the listener the request came in on.
    pub scheme: Scheme,
    /// The normalized host and port.
    pub host: HostValue,
    /// The path and query, as received.
    pub path_and_query: PathAndQuery,
}

/// A normalized host name and port, as a field value: the request's own `Host` value when that
/// is already normal (cloning it copies nothing), else a value of its own. Read as text, it is
/// checked again (a few nanoseconds for a host name) rather than trusted.
#[derive(Clone)]
pub struct HostValue(HeaderValue);

impl HostValue {
    /// The normal form of `raw` (an authority, or `field`'s text) for `scheme`, `None` when it
    /// is invalid.
    fn new(raw: &str, field: Option<&HeaderValue>, scheme: Scheme) -> Option<HostValue> {
        match (normalized_host(raw, scheme.as_str())?, field) {
            (Cow::Borrowed(normal), Some(field)) if normal.len() == field.len() => Some(HostValue(field.clone())),
            (normal, _) => HeaderValue::from_str(&normal).ok().map(HostValue),
        }
    }
}

impl std::ops::Deref for HostValue {
    type Target = str;

    fn deref(&self) -> &str {
        std::str::from_utf8(self.0.as_bytes()).unwrap_or("")
    }
}

impl std::fmt::Display for HostValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self)
    }
}

impl Target {
    /// The URL as stored in the shared tier's envelopes.
    pub fn canonical(&self) -> String {
        format!("{}://{}{}", self.scheme.as_str(), self.host, self.path_and_query)
    }
}

impl HostValue {
    /// As a field value (`Host`, `X-Forwarded-Host`).
    pub fn value(&self) -> &HeaderValue {
        &self.0
    }
}

/// True when a request carries a body: a `Content-Length` over 0, chunked framing, or HTTP/2
/// DATA. A GET or HEAD with one is passed to the origin with its body and never cached: the
/// origin may read it, and the cache key does not include it.
pub fn has_body(body: &Incoming) -> bool {
    !http_body::Body::is_end_stream(body) && http_body::Body::size_hint(body).exact() != Some(0)
}

/// The request's transfer coding (RFC 9112 §6.1): only `chunked`, once, is forwarded; any other
/// coding would reach the origin undeclared once the body is re-framed (501), and `chunked`
/// applied twice is malformed (400).
pub fn transfer_coding(h: &HeaderMap) -> Result<(), (StatusCode, &'static str)> {
    let mut codings = h.get_all(header::TRANSFER_ENCODING).iter().flat_map(|v| v.as_bytes().split(|&b| b == b','));
    let Some(first) = codings.next() else { return Ok(()) };
    let mut chunked = usize::from(first.trim_ascii().eq_ignore_ascii_case(b"chunked"));
    let mut others = 1 - chunked;
    for c in codings {
        if c.trim_ascii().eq_ignore_ascii_case(b"chunked") {
            chunked += 1;
        } else {
            others += 1;
        }
    }
    match (chunked, others) {
        (1, 0) => Ok(()),
        (_, 0) => Err((StatusCode::BAD_REQUEST, "chunked applied more than once\n")),
        _ => Err((StatusCode::NOT_IMPLEMENTED, "only the chunked transfer coding is supported\n")),
    }
}

/// Resolves the request target (RFC 9112 §3.2) of a request that came in over `scheme`: the
/// authority of an absolute-form target wins over `Host`; otherwise exactly one valid `Host` is
/// required (HTTP/1.1). Absolute-form is accepted for the listener's own scheme only, and
/// authority-form only belongs to CONNECT (refused before this).
pub fn target(parts: &request::Parts, scheme: Scheme) -> Result<Target, &'static str> {
    match (parts.uri.scheme_str(), parts.uri.authority()) {
        (Some(s), _) if s != scheme.as_str() => {
            return Err(match scheme {
                Scheme::Http => "only http:// request targets are served here\n",
                Scheme::Https => "only https:// request targets are served here\n",
            })
        }
        (None, Some(_)) => return Err("authority-form is only for CONNECT\n"),
        _ => {}
    }
    let mut hosts = parts.headers.get_all(header::HOST).iter();
    let host_field = hosts.next();
    if hosts.next().is_some() {
        return Err("more than one Host field\n");
    }
    let (raw, field) = match (parts.uri.authority(), host_field) {
        (Some(a), _) => {
            if a.as_str().contains('@') {
                return Err("userinfo is not allowed in the request target\n");
            }
            (a.as_str(), None)
        }
        (None, Some(h)) => (h.to_str().map_err(|_| "Host is not valid\n")?, Some(h)),
        (None, None) => return Err("missing Host\n"),
    };
    let host = HostValue::new(raw, field, scheme).ok_or("Host is not valid\n")?;
    let path_and_query = match parts.uri.path_and_query() {
        Some(pq) if pq.as_str().starts_with('/') => pq.clone(),
        Some(pq) if pq.as_str() == "*" && parts.method == Method::OPTIONS => PathAndQuery::from_static("*"),
        None => PathAndQuery::from_static("/"),
        Some(_) => return Err("request target must start with /\n"),
    };
    Ok(Target { scheme, host, path_and_query })
}
