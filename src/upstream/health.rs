//! Active health checks: every `interval` of the proxy's clock, a GET of the site's check path on
//! each server of a pool, on a connection of its own (outside the pool and its limits: a busy
//! server is not a sick one), with `timeout` to answer. A 2xx or 3xx is a pass; the last
//! `window` results decide whether the server is up (see `Health::record`).

use std::sync::{Arc, Weak};

use http::header::{self, HeaderValue};
use http::{Request, Uri};

use super::balance::{OriginPool, Server};
use super::body::UpBody;

/// Starts the checks of `pool`, when it has any, in the current runtime: the first round at once,
/// then one every interval, until the pool is dropped.
pub fn start(pool: &Arc<OriginPool>) {
    let Some(check) = pool.check.clone() else { return };
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        tracing::warn!("no runtime: health checks not started");
        return;
    };
    let weak: Weak<OriginPool> = Arc::downgrade(pool);
    let clock = pool.clock.clone();
    rt.spawn(async move {
        loop {
            match weak.upgrade() {
                Some(pool) => round(&pool).await,
                None => return,
            }
            clock.sleep(check.interval).await;
        }
    });
}

/// One check of every server of `pool`, at once; the watchers are told when it is done.
pub(super) async fn round(pool: &OriginPool) {
    let Some(check) = &pool.check else { return };
    let checks = pool.servers().iter().map(|s| one(pool, s));
    let results = futures_util::future::join_all(checks).await;
    for (server, passed) in pool.servers().iter().zip(results) {
        let counter = if passed { &server.stats().checks_passed } else { &server.stats().checks_failed };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if server.health.record(passed, check.window, check.threshold) {
            let state = if passed { "up" } else { "down" };
            tracing::warn!(server = %server.url(), path = %check.path, state, "origin server health changed");
        }
    }
    pool.changed();
}

/// Whether `server` answers the check in time with a 2xx or 3xx.
async fn one(pool: &OriginPool, server: &Server) -> bool {
    let Some(check) = &pool.check else { return true };
    let Ok(uri) = check.path.parse::<Uri>() else { return false };
    let mut req = Request::new(UpBody::Empty);
    *req.uri_mut() = uri;
    let headers = req.headers_mut();
    headers.insert(header::HOST, pool.check_host.clone());
    headers.insert(header::USER_AGENT, HeaderValue::from_static("edgecache-health-check"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    tokio::select! {
        r = server.upstream.probe(req) => match r {
            Ok(status) => status.is_success() || status.is_redirection(),
            Err(e) => {
                tracing::debug!(server = %server.url(), error = %e, "health check failed");
                false
            }
        },
        _ = pool.clock.sleep(check.timeout) => {
            tracing::debug!(server = %server.url(), "health check timed out");
            false
        }
    }
}
