//! What the admin listener's operations endpoints answer, independent of its router:
//! `GET /metrics`, `GET /health`, `GET /ready`, `GET /` (the status page) and `POST /reload`.
//! Each returns an [`Answer`]; the router only maps paths and methods to them.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use serde_json::json;

use crate::clock::Millis;
use crate::metrics::ReloadResult;
use crate::reload::{Live, Steps};

pub mod page;

/// An endpoint's answer: status, `Content-Type` and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// Status code.
    pub status: StatusCode,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// Body.
    pub body: String,
}

impl Answer {
    fn json(status: StatusCode, value: serde_json::Value) -> Answer {
        Answer { status, content_type: "application/json", body: value.to_string() }
    }
}

/// The operations endpoints of one process.
pub struct Ops {
    live: Arc<Live>,
    steps: Arc<Steps>,
}

impl Ops {
    /// The endpoints for `live`, reloading through `steps`.
    pub fn new(live: Arc<Live>, steps: Arc<Steps>) -> Self {
        Ops { live, steps }
    }

    /// `GET /metrics`: the Prometheus text format.
    pub fn metrics(&self) -> Answer {
        let proxy = self.live.current();
        Answer { status: StatusCode::OK, content_type: crate::metrics::CONTENT_TYPE, body: proxy.render_metrics() }
    }

    /// `GET /health`: the process serves (200 whenever it can answer at all).
    pub fn health(&self) -> Answer {
        Answer::json(StatusCode::OK, json!({ "status": "ok" }))
    }

    /// `GET /ready`: 200 when the listeners accept, a configuration is loaded, every site has a
    /// server up (its health checks and ejections say so) and the origin was reachable within
    /// `health.origin_interval`; 503 otherwise. When no request reached an origin within the
    /// interval, a connection to an up server of each site is tried now (within
    /// `timeouts.connect`, at most 2 s). The shared tier's state is reported, not required (a
    /// request without it goes to the origin).
    pub async fn ready(&self) -> Answer {
        let proxy = self.live.current();
        let m = proxy.metrics();
        let cfg = proxy.config();
        let clock = proxy.clock();
        let listening = m.server.listening.load(Ordering::Relaxed);
        let within = cfg.health.origin_interval.as_millis() as Millis;
        let recent = |last: Millis| last != 0 && clock.now_millis().saturating_sub(last) <= within;
        let mut sites = Vec::new();
        let mut every_site_up = true;
        let mut probes = Vec::new();
        for (_, site) in proxy.sites().iter() {
            let pool = &site.pool;
            let servers: Vec<serde_json::Value> = (0..pool.servers().len())
                .map(|i| json!({ "url": pool.servers()[i].url(), "up": pool.is_up(i) }))
                .collect();
            let up = (0..pool.servers().len()).find(|&i| pool.is_up(i));
            every_site_up &= up.is_some();
            if let Some(i) = up {
                probes.push(pool.servers()[i].upstream().authority().clone());
            }
            sites.push(json!({ "name": &**site.name(), "servers": servers }));
        }
        if !recent(m.origin.last_reachable.load(Ordering::Relaxed)) && !probes.is_empty() {
            let tries = probes.iter().map(|a| probe(a, cfg.timeouts.connect));
            if futures_util::future::join_all(tries).await.into_iter().all(|ok| ok) {
                m.origin.last_reachable.fetch_max(clock.now_millis(), Ordering::Relaxed);
            }
        }
        let last = m.origin.last_reachable.load(Ordering::Relaxed);
        let reachable = recent(last) && every_site_up;
        let now = clock.now_millis();
        let ready = listening && reachable;
        let last_reload = m.reload_log().last().map_or("none", |r| r.result.as_str());
        let shared = proxy
            .shared_state()
            .map(|s| json!({ "connected": s.connected, "breaker": if s.breaker_open { "open" } else { "closed" } }));
        let body = json!({
            "status": if ready { "ready" } else { "not-ready" },
            "listening": listening,
            "config": { "loaded": true, "last_reload": last_reload },
            "origin": {
                "url": cfg.origin.url,
                "reachable": reachable,
                "last_reachable_ms_ago": (last != 0).then(|| now.saturating_sub(last)),
                "interval_ms": within,
            },
            "sites": sites,
            "shared_tier": shared,
        });
        Answer::json(if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }, body)
    }

    /// `GET /`: the status page.
    pub fn page(&self) -> Answer {
        let proxy = self.live.current();
        Answer { status: StatusCode::OK, content_type: "text/html; charset=utf-8", body: page::render(&proxy) }
    }

    /// `POST /reload`: runs every reload step; 200 when all succeeded, 400 with every problem
    /// when one refused its input (the running state is kept).
    pub fn reload(&self, trigger: &str) -> Answer {
        let report = self.steps.run(trigger);
        let ok = report.iter().all(|(_, r)| r.is_ok());
        let steps: Vec<serde_json::Value> = report
            .iter()
            .map(|(name, r)| match r {
                Ok(changes) => json!({ "step": name, "result": ReloadResult::Ok.as_str(), "changes": changes }),
                Err(problems) => {
                    json!({ "step": name, "result": ReloadResult::Invalid.as_str(), "problems": problems })
                }
            })
            .collect();
        let body = json!({ "status": if ok { "ok" } else { "error" }, "steps": steps });
        Answer::json(if ok { StatusCode::OK } else { StatusCode::BAD_REQUEST }, body)
    }
}

/// Does `origin` accept a connection within `connect` (at most 2 s)?
async fn probe(origin: &http::uri::Authority, connect: Duration) -> bool {
    let host = origin.host().trim_start_matches('[').trim_end_matches(']');
    let attempt = tokio::net::TcpStream::connect((host, origin.port_u16().unwrap_or(80)));
    matches!(tokio::time::timeout(connect.min(Duration::from_secs(2)), attempt).await, Ok(Ok(_)))
}
