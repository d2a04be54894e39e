//! Where a request came in: the scheme its listener speaks, which is the cache key's scheme and
//! the `X-Forwarded-Proto` sent to the origin, and whether that listener only redirects to
//! HTTPS.

use http::header::{self, HeaderMap, HeaderValue};
use http::StatusCode;

use super::body::ProxyBody;
use super::request::{target, Target};
use super::respond::{finish, local, Answer};
use crate::status::{CacheStatus, Failure, Fwd};

/// The scheme a client used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Cleartext.
    Http,
    /// TLS.
    Https,
}

impl Scheme {
    /// `http` or `https`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// How a listener's requests are served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    /// The scheme its clients use.
    pub scheme: Scheme,
    /// Answer every request with a 301 to `https://` on this port instead of serving it.
    pub redirect_https: Option<u16>,
}

impl Endpoint {
    /// A cleartext listener that serves.
    pub const PLAIN: Endpoint = Endpoint { scheme: Scheme::Http, redirect_https: None };
    /// A TLS listener.
    pub const TLS: Endpoint = Endpoint { scheme: Scheme::Https, redirect_https: None };
}

/// 301 to the same host, path and query over `https://` on `port` (RFC 9110 §15.4.2); never
/// stored nor forwarded. A request without a valid `Host` gets the 400 any request would.
pub(super) fn redirect_https(parts: &http::request::Parts, port: u16) -> Answer {
    let target = match target(parts, Scheme::Http) {
        Ok(t) => t,
        Err(msg) => return local(StatusCode::BAD_REQUEST, msg, Failure::BadRequest, Fwd::Bypass),
    };
    let location = https_location(&target, port);
    let mut headers = HeaderMap::with_capacity(3);
    match HeaderValue::try_from(location) {
        Ok(v) => headers.insert(header::LOCATION, v),
        Err(_) => {
            return local(StatusCode::BAD_REQUEST, "request target is not valid\n", Failure::BadRequest, Fwd::Bypass)
        }
    };
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
    finish(StatusCode::MOVED_PERMANENTLY, headers, ProxyBody::empty(), CacheStatus::default())
}

/// `https://host[:port]/path?query` for `target` (its cleartext port dropped).
fn https_location(target: &Target, port: u16) -> String {
    let host: &str = &target.host;
    let name = match host.rfind(':') {
        // A port after the name, or after an IPv6 literal's `]`.
        Some(i) if !host[i..].contains(']') && (!host.starts_with('[') || host[..i].ends_with(']')) => &host[..i],
        _ => host,
    };
    let pq = target.path_and_query.as_str();
    let pq = if pq == "*" { "/" } else { pq };
    if port == 443 {
        format!("https://{name}{pq}")
    } else {
        format!("https://{name}:{port}{pq}")
    }
}
