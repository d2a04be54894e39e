//! `edgecache purge` and `edgecache reload`: the command line client of the admin listener of a
//! running node, whose address and token it reads from the same `proxy.toml`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

use crate::config::AdminConfig;

/// What to purge.
#[derive(Debug, Default, Clone)]
pub struct Ask {
    /// Absolute URLs.
    pub urls: Vec<String>,
    /// Tags (surrogate keys).
    pub tags: Vec<String>,
    /// Prefix URLs.
    pub prefixes: Vec<String>,
    /// Hosts.
    pub hosts: Vec<String>,
    /// Everything.
    pub all: bool,
    /// Mark stale instead of removing.
    pub soft: bool,
}

impl Ask {
    /// The `POST /purge` body; `None` when nothing is asked.
    pub fn body(&self) -> Option<serde_json::Value> {
        let mut m = serde_json::Map::new();
        for (name, list) in
            [("files", &self.urls), ("tags", &self.tags), ("prefixes", &self.prefixes), ("hosts", &self.hosts)]
        {
            if !list.is_empty() {
                m.insert(name.into(), list.clone().into());
            }
        }
        if self.all {
            m.insert("purge_everything".into(), true.into());
        }
        if m.is_empty() {
            return None;
        }
        if self.soft {
            m.insert("soft".into(), true.into());
        }
        Some(m.into())
    }
}

/// Where to reach a listener bound to `listen`: an unspecified address (0.0.0.0, ::) is reached
/// on loopback.
fn reachable(listen: SocketAddr) -> SocketAddr {
    match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => SocketAddr::new(Ipv4Addr::LOCALHOST.into(), listen.port()),
        IpAddr::V6(ip) if ip.is_unspecified() => SocketAddr::new(Ipv6Addr::LOCALHOST.into(), listen.port()),
        _ => listen,
    }
}

/// Sends `body` to `POST /purge` on the admin listener `cfg`; returns the status and the answer's
/// text. Bounded by `timeout`.
pub async fn send(cfg: &AdminConfig, body: &serde_json::Value, timeout: Duration) -> Result<(u16, String), String> {
    post(cfg, "/purge", Bytes::from(serde_json::to_vec(body).unwrap_or_default()), timeout).await
}

/// Sends `POST path` with the JSON `body` to the admin listener `cfg`; returns the status and
/// the answer's text. Bounded by `timeout`.
pub async fn post(cfg: &AdminConfig, path: &str, body: Bytes, timeout: Duration) -> Result<(u16, String), String> {
    let addr = reachable(cfg.listen);
    let exchange = async {
        let stream =
            tokio::net::TcpStream::connect(addr).await.map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| format!("{addr}: {e}"))?;
        tokio::spawn(conn);
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header(HOST, addr.to_string())
            .header(CONTENT_TYPE, "application/json");
        if let Some(t) = &cfg.token {
            req = req.header(AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = req.body(Full::new(body)).map_err(|e| e.to_string())?;
        let resp = sender.send_request(req).await.map_err(|e| format!("{addr}: {e}"))?;
        let status = resp.status().as_u16();
        let text = resp.into_body().collect().await.map_err(|e| format!("{addr}: {e}"))?.to_bytes();
        Ok((status, String::from_utf8_lossy(&text).into_owned()))
    };
    tokio::time::timeout(timeout, exchange).await.map_err(|_| format!("{addr}: no answer within {timeout:?}"))?
}

/// Whether an answer says the purge was accepted: 200 and `"status":"ok"`.
pub fn accepted(status: u16, text: &str) -> bool {
    status == 200
        && serde_json::from_str::<serde_json::Value>(text)
            .is_ok_and(|v| v.get("status").and_then(|s| s.as_str()) == Some("ok"))
}
