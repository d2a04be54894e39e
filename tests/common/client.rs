//! Clients: [`Client`] (pooled hyper client returning status, headers and the whole body) and
//! [`raw_request`] (exact bytes over TCP, for malformed requests).

use std::net::SocketAddr;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{find, within};

/// Header fields from (name, value) pairs, in order, repeated names kept.
fn header_map(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::with_capacity(pairs.len());
    for (name, value) in pairs {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).expect("header name"),
            HeaderValue::from_str(value).expect("header value"),
        );
    }
    map
}

// ---------------------------------------------------------------------------------------------
// HTTP client
// ---------------------------------------------------------------------------------------------

/// A response as the client received it.
#[derive(Debug, Clone)]
pub struct Resp {
    /// Status code.
    pub status: u16,
    /// Header fields.
    pub headers: HeaderMap,
    /// The complete body.
    pub body: Bytes,
}

impl Resp {
    /// A header value as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The `Cache-Status` value (empty when absent).
    pub fn cache_status(&self) -> &str {
        self.header("cache-status").unwrap_or("")
    }

    /// True when `Cache-Status` says this was served from the store.
    pub fn is_hit(&self) -> bool {
        self.cache_status().starts_with("edgecache; hit")
    }

    /// The `Age` value, parsed.
    pub fn age(&self) -> Option<u64> {
        self.header("age").map(|a| a.parse().expect("numeric Age"))
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A pooled HTTP/1.1 client aimed at one proxy.
pub struct Client {
    inner: hyper_util::client::legacy::Client<HttpConnector, Full<Bytes>>,
    base: SocketAddr,
}

impl Client {
    /// A client for the proxy at `addr`.
    pub fn new(addr: SocketAddr) -> Self {
        let inner = hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(HttpConnector::new());
        Client { inner, base: addr }
    }

    /// GET `path`.
    pub async fn get(&self, path: &str) -> Resp {
        self.send("GET", path, &[], Bytes::new()).await
    }

    /// GET `path` with header fields.
    pub async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Resp {
        self.send("GET", path, headers, Bytes::new()).await
    }

    /// HEAD `path` with header fields.
    pub async fn head_with(&self, path: &str, headers: &[(&str, &str)]) -> Resp {
        self.send("HEAD", path, headers, Bytes::new()).await
    }

    /// POST `path` with a body.
    pub async fn post(&self, path: &str, body: impl Into<Bytes>) -> Resp {
        self.send("POST", path, &[], body.into()).await
    }

    /// Any request; panics on a transport error.
    pub async fn send(&self, method: &str, path: &str, headers: &[(&str, &str)], body: Bytes) -> Resp {
        match self.try_send(method, path, headers, body).await {
            Ok(r) => r,
            Err(e) => panic!("{method} {path} failed: {e}"),
        }
    }

    /// Any request; a transport or body error is returned as text.
    pub async fn try_send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<Resp, String> {
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = Method::from_bytes(method.as_bytes()).expect("method");
        *req.uri_mut() = format!("http://{}{}", self.base, path).parse().expect("uri");
        *req.headers_mut() = header_map(headers);
        within(&format!("{method} {path}"), async {
            let resp = self.inner.request(req).await.map_err(|e| {
                let mut msg = e.to_string();
                if let Some(s) = std::error::Error::source(&e) {
                    msg = format!("{msg}: {s}");
                }
                msg
            })?;
            let (parts, body) = resp.into_parts();
            let body = body.collect().await.map_err(|e| format!("body: {e}"))?.to_bytes();
            Ok(Resp { status: parts.status.as_u16(), headers: parts.headers, body })
        })
        .await
    }
}

// ---------------------------------------------------------------------------------------------
// Raw-TCP client
// ---------------------------------------------------------------------------------------------

/// A response read off a raw connection.
#[derive(Debug, Clone)]
pub struct RawResp {
    /// Status code.
    pub status: u16,
    /// Header fields (names lowercased), in order.
    pub headers: Fields,
    /// The body (chunked framing decoded).
    pub body: Vec<u8>,
}

impl RawResp {
    /// The first value of `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// Writes `bytes` to the proxy at `addr` and reads one response (bounded by [`WAIT`]). The
/// request should carry `Connection: close` unless the proxy closes the connection itself.
pub async fn raw_request(addr: SocketAddr, bytes: &[u8]) -> RawResp {
    within("raw request", async {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(bytes).await.expect("write");
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            if let Some(resp) = parse_raw(&buf) {
                return resp;
            }
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        parse_raw_eof(&buf).unwrap_or_else(|| panic!("no response: {:?}", String::from_utf8_lossy(&buf)))
    })
    .await
}

/// Header fields as (lowercased name, value) pairs.
type Fields = Vec<(String, String)>;

/// Status, header fields and the offset of the body.
fn parse_head(buf: &[u8]) -> Option<(u16, Fields, usize)> {
    let end = find(buf, b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..end]);
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Some((status, headers, end + 4))
}

/// A complete response when its framing says it is complete.
fn parse_raw(buf: &[u8]) -> Option<RawResp> {
    let (status, headers, start) = parse_head(buf)?;
    let rest = &buf[start..];
    let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    if let Some(len) = get("content-length").and_then(|v| v.parse::<usize>().ok()) {
        return (rest.len() >= len).then(|| RawResp { status, body: rest[..len].to_vec(), headers });
    }
    if get("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        let body = dechunk(rest)?;
        return Some(RawResp { status, headers, body });
    }
    None
}

/// Whatever arrived before the connection closed.
fn parse_raw_eof(buf: &[u8]) -> Option<RawResp> {
    let (status, headers, start) = parse_head(buf)?;
    Some(RawResp { status, headers, body: buf[start..].to_vec() })
}

fn dechunk(mut rest: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = find(rest, b"\r\n")?;
        let size_str = String::from_utf8_lossy(&rest[..eol]);
        let size = usize::from_str_radix(size_str.split(';').next()?.trim(), 16).ok()?;
        rest = &rest[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        if rest.len() < size + 2 {
            return None;
        }
        out.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP/2 client (cleartext, prior knowledge)
// ---------------------------------------------------------------------------------------------

/// One HTTP/2 connection to the proxy.
pub struct H2 {
    sender: hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    ended: Option<tokio::sync::oneshot::Receiver<()>>,
    base: SocketAddr,
}

impl H2 {
    /// Connects with the HTTP/2 preface (h2c prior knowledge).
    pub async fn connect(addr: SocketAddr) -> H2 {
        let stream = within("h2 connect", TcpStream::connect(addr)).await.expect("connect");
        let (sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), hyper_util::rt::TokioIo::new(stream))
                .await
                .expect("h2 handshake");
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let _ = conn.await;
            let _ = tx.send(());
        });
        H2 { sender, ended: Some(rx), base: addr }
    }

    /// Sends a request on a new stream and reads the whole response.
    pub async fn send(&mut self, method: &str, path: &str, headers: &[(&str, &str)], body: Bytes) -> Resp {
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = Method::from_bytes(method.as_bytes()).expect("method");
        *req.uri_mut() = format!("http://{}{}", self.base, path).parse().expect("uri");
        *req.version_mut() = http::Version::HTTP_2;
        *req.headers_mut() = header_map(headers);
        within(&format!("h2 {method} {path}"), async {
            self.sender.ready().await.expect("h2 connection ready");
            let resp = self.sender.send_request(req).await.expect("h2 response");
            let (parts, body) = resp.into_parts();
            let body = body.collect().await.expect("h2 body").to_bytes();
            Resp { status: parts.status.as_u16(), headers: parts.headers, body }
        })
        .await
    }

    /// Waits (bounded) until the server has ended the connection.
    pub async fn ended(&mut self) {
        let rx = self.ended.take().expect("waited for the end once");
        let _ = within("h2 connection end", rx).await;
    }
}
