//! The pooled keep-alive client to the origin, and the header rules for forwarding
//! (hop-by-hop removal, `Via`, `X-Forwarded-*`).

use std::error::Error as _;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{self, Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

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
    client: Client<Connector, UpBody>,
    first_byte: Duration,
    /// `http`, and the origin's authority: every origin request's URI starts with them.
    scheme: Scheme,
    authority: Authority,
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
            .build(Connector(conn));
        Upstream {
            client,
            first_byte: cfg.timeouts.first_byte,
            scheme: Scheme::HTTP,
            authority: cfg.origin.authority.clone(),
        }
    }

    /// The absolute URI of `path_and_query` at the origin (the client's own bytes, not copied).
    pub fn uri(&self, path_and_query: &PathAndQuery) -> Uri {
        let mut parts = uri::Parts::default();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
        parts.path_and_query = Some(path_and_query.clone());
        Uri::from_parts(parts).unwrap_or_else(|_| Uri::from_static("/"))
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

/// hyper-util's TCP connector, with connections that describe themselves as plain ones: its
/// own attach the addresses (`HttpInfo`) to every response, two allocations per origin response
/// that nothing here reads.
#[derive(Clone)]
pub struct Connector(HttpConnector);

type Connecting = Pin<Box<dyn Future<Output = Result<OriginConn, BoxError>> + Send>>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower_service::Service<Uri> for Connector {
    type Response = OriginConn;
    type Error = BoxError;
    type Future = Connecting;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.0.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Connecting {
        let connecting = self.0.call(uri);
        Box::pin(async move { Ok(OriginConn(connecting.await?)) })
    }
}

/// A TCP connection to the origin.
pub struct OriginConn(TokioIo<TcpStream>);

impl Connection for OriginConn {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl hyper::rt::Read for OriginConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for OriginConn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
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

/// Header fields that apply to one connection only (RFC 9110 §7.6.1) and are never forwarded,
/// with the two obsolete ones (`Keep-Alive`, `Proxy-Connection`) still seen in the wild.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "proxy-authorization"
            | "proxy-authenticate"
            | "keep-alive"
            | "proxy-connection"
    )
}

/// Removes hop-by-hop fields, including every field named in `Connection`.
pub fn remove_hop_by_hop(h: &mut HeaderMap) {
    remove_where(h, |_| false);
}

/// Removes hop-by-hop fields (as [`remove_hop_by_hop`]) and every field `also` names, in one
/// pass over the names present: most messages have none of them, and then nothing is hashed.
pub fn remove_where(h: &mut HeaderMap, also: impl Fn(&str) -> bool) {
    let mut doomed: Vec<HeaderName> = Vec::new();
    for name in h.keys() {
        if is_hop_by_hop(name) || also(name.as_str()) {
            doomed.push(name.clone());
        }
    }
    if doomed.is_empty() {
        return;
    }
    if doomed.contains(&header::CONNECTION) {
        for token in h.get_all(header::CONNECTION).iter().flat_map(|v| v.as_bytes().split(|&b| b == b',')) {
            let token = token.trim_ascii();
            // Most lists say only `keep-alive` (a field already doomed above when present) or
            // `close` (a reserved name, RFC 9110 §7.6.1: no field has it); nothing to parse then.
            if token.eq_ignore_ascii_case(b"keep-alive") || token.eq_ignore_ascii_case(b"close") {
                continue;
            }
            if let Ok(name) = HeaderName::from_bytes(&token.to_ascii_lowercase()) {
                doomed.push(name);
            }
        }
    }
    for name in doomed {
        h.remove(name);
    }
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
pub fn append_list(h: &mut HeaderMap, name: HeaderName, value: HeaderValue) {
    match h.entry(name) {
        header::Entry::Vacant(v) => {
            v.insert(value);
        }
        header::Entry::Occupied(mut o) => {
            let mut joined = Vec::with_capacity(o.iter().map(|v| v.len() + 2).sum::<usize>() + value.len());
            for v in o.iter().filter(|v| !v.is_empty()) {
                joined.extend_from_slice(v.as_bytes());
                joined.extend_from_slice(b", ");
            }
            joined.extend_from_slice(value.as_bytes());
            if let Ok(v) = HeaderValue::from_bytes(&joined) {
                o.insert(v);
            }
        }
    }
}

/// An IP address as a header value, written without an intermediate `String`.
pub fn ip_value(ip: std::net::IpAddr) -> HeaderValue {
    use std::io::Write;
    if let std::net::IpAddr::V4(v4) = ip {
        // Dotted decimal by hand: `Display` goes through the formatter's padding machinery,
        // about a thousand instructions for what every forwarded request writes.
        let mut buf = [0u8; 15];
        let mut len = 0;
        let mut digits = itoa::Buffer::new();
        for (i, octet) in v4.octets().into_iter().enumerate() {
            if i > 0 {
                buf[len] = b'.';
                len += 1;
            }
            let d = digits.format(octet).as_bytes();
            buf[len..len + d.len()].copy_from_slice(d);
            len += d.len();
        }
        return HeaderValue::from_bytes(&buf[..len]).unwrap_or(HeaderValue::from_static("unknown"));
    }
    let mut buf = [0u8; 48];
    let mut w = &mut buf[..];
    let _ = write!(w, "{ip}");
    let len = 48 - w.len();
    HeaderValue::from_bytes(&buf[..len]).unwrap_or(HeaderValue::from_static("unknown"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_named_by_connection_go_with_the_hop_by_hop_ones() {
        let mut h = HeaderMap::new();
        for (name, value) in [
            ("connection", "Keep-Alive, X-Private , close"),
            ("connection", "x-other"),
            ("keep-alive", "timeout=5"),
            ("x-private", "1"),
            ("x-other", "2"),
            ("x-kept", "3"),
            ("transfer-encoding", "chunked"),
        ] {
            h.append(HeaderName::from_static(name), HeaderValue::from_static(value));
        }
        remove_hop_by_hop(&mut h);
        let left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, ["x-kept"]);

        // Only `keep-alive` listed, no Keep-Alive field: nothing else goes.
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        h.insert(header::ETAG, HeaderValue::from_static("\"1\""));
        remove_hop_by_hop(&mut h);
        assert_eq!(h.keys().map(HeaderName::as_str).collect::<Vec<_>>(), ["etag"]);
    }

    #[test]
    fn ip_values_are_written_as_addresses() {
        for ip in ["0.0.0.0", "127.0.0.1", "10.20.3.255", "255.255.255.255", "::1", "2001:db8::8a2e:370:7334"] {
            let v = ip_value(ip.parse().unwrap());
            assert_eq!(v.to_str().unwrap(), ip);
        }
    }
}
