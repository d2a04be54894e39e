//! The admin listener: operator calls, on an address of their own (`[admin]`), apart from client
//! traffic.
//!
//! It owns the server, the authentication and the assembly of the routes; each feature brings its
//! routes as a `routes()` function listed in [`ROUTES`] (a path router: axum, on the same hyper
//! and tokio as the proxy), and, for a request routed by its method rather than its path, an
//! entry in [`METHODS`]. Every call, whatever its route, passes [`guard`] first: with a token
//! configured, it must carry `Authorization: Bearer <token>` or `Fastly-Key: <token>` (compared
//! in constant time), or it is answered 401 and nothing else runs. Answers are JSON.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use http::header::{self, HeaderMap, HeaderValue};
use http::StatusCode;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;

use crate::config::AdminConfig;
use crate::ops::Ops;
use crate::proxy::Proxy;
use crate::reload::{Live, Steps};

pub mod cli;
pub mod ops;
pub mod purge;

/// What every admin route can reach.
#[derive(Clone)]
pub struct Admin {
    live: Arc<Live>,
    ops: Arc<Ops>,
    token: Option<Arc<str>>,
}

impl Admin {
    /// The admin calls of the proxy `live` holds, reloading through `steps`; the token is the
    /// one `[admin]` has at start-up (`admin` needs a restart to change).
    pub fn new(live: Arc<Live>, steps: Arc<Steps>) -> Self {
        let token =
            live.current().config().admin.as_ref().and_then(|a: &AdminConfig| a.token.as_deref().map(Arc::from));
        let ops = Arc::new(Ops::new(live.clone(), steps));
        Admin { live, ops, token }
    }

    /// The proxy in use now: the one the calls act on.
    pub fn proxy(&self) -> Arc<Proxy> {
        self.live.current()
    }

    /// The operations endpoints (metrics, health, readiness, status page, reload).
    pub fn ops(&self) -> &Ops {
        &self.ops
    }
}

/// The routes of each feature, merged into one router.
const ROUTES: &[fn() -> Router<Admin>] = &[purge::routes, ops::routes];

/// A handler for requests routed by method, whatever their path.
type MethodHandler = fn(Admin, Request) -> Pin<Box<dyn Future<Output = Response> + Send>>;

/// Requests routed by their method: `PURGE <url>` names the URL purged as its target, so its
/// path is not a route.
const METHODS: &[(&str, MethodHandler)] = &[("PURGE", |a, r| Box::pin(purge::purge_method(a, r)))];

/// The admin service: every request passes [`guard`], then goes by method ([`METHODS`]) or
/// path ([`ROUTES`]).
pub fn router(admin: Admin) -> Router {
    let routes = ROUTES
        .iter()
        .fold(Router::new(), |r, routes| r.merge(routes()))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such admin call") })
        .method_not_allowed_fallback(|| async { error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed here") })
        .with_state(admin.clone());
    // An outer router whose only service is the routes: its layer runs before their routing.
    Router::new().fallback_service(routes).layer(middleware::from_fn_with_state(admin, guard))
}

/// Serves the admin calls on `listener` until `shutdown` completes; calls in progress finish.
pub async fn serve(listener: TcpListener, admin: Admin, shutdown: impl Future<Output = ()> + Send + 'static) {
    let addr = listener.local_addr().ok();
    if let Err(e) = axum::serve(listener, router(admin)).with_graceful_shutdown(shutdown).await {
        tracing::error!(error = %e, ?addr, "admin listener failed");
    }
}

/// Binds `cfg.listen`, with a message that names the setting when it cannot.
pub async fn bind(cfg: &AdminConfig) -> Result<(TcpListener, SocketAddr), String> {
    let l = TcpListener::bind(cfg.listen)
        .await
        .map_err(|e| format!("cannot listen on admin.listen {}: {e}", cfg.listen))?;
    let addr = l.local_addr().map_err(|e| e.to_string())?;
    Ok((l, addr))
}

/// Authentication, then routing by method.
async fn guard(State(admin): State<Admin>, req: Request, next: Next) -> Response {
    if let Some(token) = &admin.token {
        if !authorized(req.headers(), token) {
            let mut r = error(
                StatusCode::UNAUTHORIZED,
                "missing or wrong token (Authorization: Bearer <token>, or Fastly-Key)",
            );
            r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return r;
        }
    }
    if let Some((_, handler)) = METHODS.iter().find(|(m, _)| req.method().as_str() == *m) {
        return handler(admin, req).await;
    }
    next.run(req).await
}

/// Does the request carry `token` (`Authorization: Bearer`, or `Fastly-Key`)?
fn authorized(h: &HeaderMap, token: &str) -> bool {
    let bearer = h
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim());
    let fastly = h.get("fastly-key").and_then(|v| v.to_str().ok()).map(str::trim);
    [bearer, fastly].into_iter().flatten().any(|given| same(given.as_bytes(), token.as_bytes()))
}

/// Constant-time equality: both sides are digested first, so neither the position of the first
/// difference nor the token's length shows in the time taken.
fn same(a: &[u8], b: &[u8]) -> bool {
    let (a, b) = (Sha256::digest(a), Sha256::digest(b));
    std::hint::black_box(a.iter().zip(b.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y))) == 0
}

/// A JSON answer.
pub fn json(status: StatusCode, value: serde_json::Value) -> Response {
    let mut body = serde_json::to_vec(&value).unwrap_or_default();
    body.push(b'\n');
    let mut r = (status, body).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// A JSON error: `{"status":"error","error":"..."}`.
pub fn error(status: StatusCode, msg: &str) -> Response {
    json(status, serde_json::json!({ "status": "error", "error": msg }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::headers;

    #[test]
    fn a_token_is_accepted_as_bearer_or_fastly_key_only_when_equal() {
        assert!(authorized(&headers(&[("authorization", "Bearer s3cret")]), "s3cret"));
        assert!(authorized(&headers(&[("authorization", "bearer s3cret")]), "s3cret"));
        assert!(authorized(&headers(&[("fastly-key", "s3cret")]), "s3cret"));
        assert!(!authorized(&headers(&[("authorization", "Bearer s3cre")]), "s3cret"));
        assert!(!authorized(&headers(&[("authorization", "Basic s3cret")]), "s3cret"));
        assert!(!authorized(&headers(&[("authorization", "s3cret")]), "s3cret"));
        assert!(!authorized(&HeaderMap::new(), "s3cret"));
    }
}
