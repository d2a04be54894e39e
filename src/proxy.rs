//! The request flow:
//!
//! checks (`request`) → cache key → lookup in the tiers → freshness decision → serve from the
//! store, answering conditionals and ranges locally (`respond`) | fetch from the origin through
//! a fill, storing while streaming, coalesced with other clients (`fetch`) | pass requests the
//! cache never answers (`pass`) → `Cache-Status` on every response.

use std::net::SocketAddr;
use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, StatusCode};
use hyper::body::Incoming;
use tracing::Instrument;

mod body;
mod fetch;
mod origin;
mod pass;
mod request;
mod respond;

pub use body::ProxyBody;
pub use fetch::FillBody;
pub use respond::{Answer, CACHE_STATUS};

use crate::clock::Clock;
use crate::config::Config;
use crate::http::policy::{self, PolicyOptions, Usable};
use crate::status::{CacheStatus, Failure, Fwd, NotStored, Stale};
use crate::store::fill::Inflight;
use crate::store::hit_for_pass::HitForPass;
use crate::store::shared::SharedTier;
use crate::store::tiers::Tiers;
use crate::store::{CacheKey, MemoryTier};
use crate::upstream::Upstream;
use fetch::{Fetched, Miss};
use request::Ctx;
use respond::{finish, local, only_if_cached};

/// The proxy: configuration, the tiers, the origin client and the clock.
pub struct Proxy {
    cfg: Arc<Config>,
    tiers: Tiers,
    upstream: Upstream,
    clock: Arc<dyn Clock>,
    opts: PolicyOptions,
    /// Fills clients may join, for coalescing.
    inflight: Inflight<Fetched>,
    /// Keys whose responses could not be shared, until when.
    hit_for_pass: HitForPass,
    /// Targeted cache-control fields not sent on to clients.
    strip: Vec<HeaderName>,
    /// One of them has a common name (stored as a tag): stored responses are always stripped.
    strip_known: bool,
}

impl Proxy {
    /// A proxy for `cfg`, reading time from `clock`.
    pub fn new(cfg: Arc<Config>, clock: Arc<dyn Clock>) -> Self {
        let opts = PolicyOptions {
            heuristic: cfg.cache.heuristic_freshness,
            heuristic_max_secs: cfg.cache.heuristic_max.as_secs(),
            store_set_cookie: cfg.cache.store_set_cookie,
            targeted: cfg.targeted.field.iter().cloned().chain([policy::CDN_CACHE_CONTROL.clone()]).collect(),
            ..PolicyOptions::default()
        };
        let tg = &cfg.targeted;
        let mut strip = Vec::new();
        if let (Some(f), false) = (&tg.field, tg.forward_field) {
            strip.push(f.clone());
        }
        if !tg.forward_cdn_cache_control {
            strip.push(policy::CDN_CACHE_CONTROL.clone());
        }
        if !tg.forward_surrogate_control {
            strip.push(policy::SURROGATE_CONTROL.clone());
        }
        let memory = MemoryTier::new(cfg.cache.memory_bytes, cfg.cache.max_variants, clock.clone());
        let shared = cfg.redis.clone().map(|r| SharedTier::start(r, memory.clone(), clock.clone()));
        Proxy {
            tiers: Tiers::new(memory, shared, cfg.cache.keep_stale, clock.clone()),
            inflight: Inflight::default(),
            hit_for_pass: HitForPass::new(cfg.coalescing.hit_for_pass),
            strip_known: strip.iter().any(crate::store::headers::is_known),
            strip,
            upstream: Upstream::new(&cfg),
            clock,
            opts,
            cfg,
        }
    }

    /// The shared tier, when configured (for inspection in tests).
    pub fn shared(&self) -> Option<&SharedTier> {
        self.tiers.shared()
    }

    /// How many requests are waiting on the origin fetch in flight for `key` (coalesced);
    /// `None` when none is in flight.
    pub fn joined(&self, key: &CacheKey) -> Option<usize> {
        self.inflight.joined(key)
    }

    /// The memory tier (for inspection in tests and benches).
    pub fn memory(&self) -> &MemoryTier {
        self.tiers.memory()
    }

    /// The answer to a request whose handling panicked (the server contains the panic to that
    /// request, counts and logs it).
    pub fn internal_error() -> Answer {
        local(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n", Failure::Internal, Fwd::Bypass)
    }

    /// Handles one request from `peer`.
    pub async fn handle(self: &Arc<Self>, req: Request<Incoming>, peer: SocketAddr) -> Answer {
        let (parts, body) = req.into_parts();
        if parts.method == Method::CONNECT {
            let msg = "CONNECT is not supported\n";
            return local(StatusCode::METHOD_NOT_ALLOWED, msg, Failure::MethodNotAllowed, Fwd::Bypass);
        }
        // A transfer coding only comes with a body (hyper refuses one that does not end in
        // chunked); a request without one has nothing to check.
        if !http_body::Body::is_end_stream(&body) {
            if let Err((code, msg)) = request::transfer_coding(&parts.headers) {
                return local(code, msg, Failure::BadRequest, Fwd::Bypass);
            }
        }
        let target = match request::target(&parts) {
            Ok(t) => t,
            Err(msg) => return local(StatusCode::BAD_REQUEST, msg, Failure::BadRequest, Fwd::Bypass),
        };
        if parts.method == Method::OPTIONS && target.path_and_query.as_str() == "*" {
            // Server-wide OPTIONS (RFC 9110 §9.3.7): answered here; the origin client only
            // speaks origin-form.
            let mut headers = HeaderMap::with_capacity(3);
            headers.insert(header::ALLOW, HeaderValue::from_static("GET, HEAD, OPTIONS, POST, PUT, PATCH, DELETE"));
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
            return finish(StatusCode::OK, headers, ProxyBody::empty(), CacheStatus::default());
        }
        // A span per request at debug level: disabled by default, it costs a level check.
        let key = target.key();
        let span =
            tracing::debug_span!("request", method = %parts.method, path = %target.path_and_query, key = %key.short());
        if parts.method != Method::GET && parts.method != Method::HEAD {
            return Box::pin(self.pass(parts, Some(body), target, peer, NotStored::Method)).instrument(span).await;
        }
        if request::has_body(&body) {
            return Box::pin(self.pass(parts, Some(body), target, peer, NotStored::RequestBody)).instrument(span).await;
        }
        let cc = policy::request_cache_control(&parts.headers);
        self.cacheable(Ctx { parts, target, peer, cc, key }).instrument(span).await
    }

    /// GET and HEAD: look up, serve, revalidate or fetch.
    async fn cacheable(self: &Arc<Self>, ctx: Ctx) -> Answer {
        let h = &ctx.parts.headers;
        if h.contains_key(header::IF_MATCH) || h.contains_key(header::IF_UNMODIFIED_SINCE) {
            // Preconditions for state-changing intent: the origin evaluates them; nothing stored.
            return Box::pin(self.pass(ctx.parts, None, ctx.target, ctx.peer, NotStored::Precondition)).await;
        }
        let mut now = self.clock.now_millis();
        let writes = self.tiers.memory().writes();
        let found = self.tiers.in_memory(&ctx.key, h, now);
        let mut selected = found.selected;
        let mut from_shared = false;
        if selected.is_none() && self.tiers.shared().is_some() {
            // Memory → shared tier → origin. A shared-tier hit is promoted into memory.
            selected = Box::pin(self.tiers.in_shared(&ctx.key, &ctx.target.canonical(), h)).await;
            from_shared = selected.is_some();
            now = self.clock.now_millis();
        }
        let hit = |ttl: i64| CacheStatus { shared_tier: from_shared, ..CacheStatus::hit(ttl) };
        if h.contains_key(header::RANGE) {
            // A range is served from a usable complete stored response; otherwise the request
            // is forwarded as it is and the partial response is not stored.
            let usable = |e: &Arc<crate::store::Entry>| {
                matches!(e.freshness.usable(&ctx.cc, now), Usable::Fresh | Usable::Stale)
            };
            if let Some(entry) = selected.filter(usable) {
                let ttl = entry.freshness.ttl_ms(now).div_euclid(1000);
                return self.serve_stored(&ctx.parts, &entry, hit(ttl), now);
            }
            if ctx.cc.only_if_cached {
                return only_if_cached();
            }
            return Box::pin(self.pass(ctx.parts, None, ctx.target, ctx.peer, NotStored::Partial)).await;
        }
        let Some(entry) = selected else {
            if ctx.cc.only_if_cached {
                return only_if_cached();
            }
            let fwd = if found.variants.is_some() { Fwd::VaryMiss } else { Fwd::UriMiss };
            return self.fetch(Arc::new(ctx), Miss { fwd, stale: None, join: Some(writes) }).await;
        };
        match entry.freshness.usable(&ctx.cc, now) {
            Usable::Fresh | Usable::Stale => {
                let ttl = entry.freshness.ttl_ms(now).div_euclid(1000);
                self.serve_stored(&ctx.parts, &entry, hit(ttl), now)
            }
            // RFC 5861 §3: serve stale at once, revalidate once in the background.
            Usable::Revalidate(Fwd::Stale) if entry.freshness.within_stale_while_revalidate(now) => {
                self.revalidate_in_background(&ctx, entry.clone());
                let status = CacheStatus {
                    detail: Some(Stale::WhileRevalidate.into()),
                    ..hit(entry.freshness.ttl_ms(now).div_euclid(1000))
                };
                self.serve_stored(&ctx.parts, &entry, status, now)
            }
            Usable::Revalidate(_) if ctx.cc.only_if_cached => only_if_cached(),
            Usable::Revalidate(fwd) => {
                self.fetch(Arc::new(ctx), Miss { fwd, stale: Some(entry), join: Some(writes) }).await
            }
        }
    }
}
