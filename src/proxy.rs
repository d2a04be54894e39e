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
mod endpoint;
mod fetch;
mod origin;
mod pass;
mod purge;
mod ranged;
pub mod reconfigure;
mod request;
mod respond;

pub use body::ProxyBody;
pub use endpoint::{Endpoint, Scheme};
pub use fetch::FillBody;
pub use respond::{Answer, CACHE_STATUS};

use crate::clock::Clock;
use crate::config::{CacheMode, Config};
use crate::http::policy::{self, PolicyOptions, Usable};
use crate::metrics::{Metrics, SharedState, StaleServed, TierFigures};
use crate::site::{Route, Sites};
use crate::status::{CacheStatus, Detail, Failure, Fwd, NotStored, Stale};
use crate::store::fill::Inflight;
use crate::store::hit_for_pass::HitForPass;
use crate::store::purge::{Purger, Purges};
use crate::store::shared::{SharedTier, TierConfig};
use crate::store::tiers::Tiers;
use crate::store::{CacheKey, MemoryTier};
use fetch::{Fetched, Miss};
use request::Ctx;
use respond::{finish, local, only_if_cached};

/// What a reload may carry over from one proxy to the next.
struct Shared {
    tiers: Tiers,
    sites: Arc<Sites>,
    inflight: Arc<Inflight<Fetched>>,
    hit_for_pass: Arc<HitForPass>,
    purges: Arc<Purges>,
    purger: Purger,
}

/// The proxy: configuration, the tiers, the sites (with their origin pools) and the clock.
pub struct Proxy {
    cfg: Arc<Config>,
    tiers: Tiers,
    sites: Arc<Sites>,
    clock: Arc<dyn Clock>,
    opts: PolicyOptions,
    /// Fills clients may join, for coalescing (shared with the proxies a reload makes).
    inflight: Arc<Inflight<Fetched>>,
    /// Keys whose responses could not be shared, until when.
    hit_for_pass: Arc<HitForPass>,
    /// What the proxy counts (shared with the proxies a reload makes).
    metrics: Arc<Metrics>,
    /// Targeted cache-control fields not sent on to clients.
    strip: Vec<HeaderName>,
    /// One of them has a common name (stored as a tag): stored responses are always stripped.
    strip_known: bool,
    /// The purges recorded here: every lookup compares its entry's stamp with them.
    purges: Arc<Purges>,
    /// Applies purges to the memory tier.
    purger: Purger,
}

impl Proxy {
    /// A proxy for `cfg`, reading time from `clock`.
    pub fn new(cfg: Arc<Config>, clock: Arc<dyn Clock>) -> Self {
        Self::with_metrics(cfg, clock, Arc::new(Metrics::new()))
    }

    /// A proxy for `cfg`, reading time from `clock`, counting in `metrics`; within a runtime,
    /// it also takes the status page's per-minute points.
    pub fn with_metrics(cfg: Arc<Config>, clock: Arc<dyn Clock>, metrics: Arc<Metrics>) -> Self {
        let c = &cfg.cache;
        let memory = MemoryTier::counted(c.memory_bytes, c.max_variants, clock.clone(), &metrics);
        // Records are kept as long as anything in the shared tier can be older than them.
        let tier = TierConfig::of(&cfg);
        let retain = tier.as_ref().map_or(std::time::Duration::from_secs(86_400), TierConfig::ttl_cap);
        let purges = Arc::new(Purges::new(retain));
        let purger = Purger::new(memory.clone(), purges.clone(), clock.clone());
        let shared = tier.map(|t| {
            SharedTier::start(t, purger.clone(), clock.clone(), metrics.shared.clone(), metrics.shared_call_seconds())
        });
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(crate::metrics::history::sampler(Arc::downgrade(&metrics), clock.clone()));
        }
        let parts = Shared {
            tiers: Tiers::new(memory, shared, cfg.cache.keep_stale, clock.clone(), purges.clone()),
            sites: Arc::new(Sites::new(&cfg, clock.clone())),
            inflight: Arc::default(),
            hit_for_pass: Arc::new(HitForPass::new(cfg.coalescing.hit_for_pass)),
            purges,
            purger,
        };
        Self::assemble(cfg, clock, metrics, parts)
    }

    /// A proxy for `cfg` made of `parts`.
    fn assemble(cfg: Arc<Config>, clock: Arc<dyn Clock>, metrics: Arc<Metrics>, parts: Shared) -> Self {
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
        if !cfg.purge.forward_tag_fields {
            strip.extend(crate::store::tags::TAG_FIELDS.iter().cloned());
        }
        Proxy {
            tiers: parts.tiers,
            purges: parts.purges,
            purger: parts.purger,
            inflight: parts.inflight,
            hit_for_pass: parts.hit_for_pass,
            metrics,
            strip_known: strip.iter().any(crate::store::headers::is_known),
            strip,
            sites: parts.sites,
            clock,
            opts,
            cfg,
        }
    }

    /// The sites, their pools and rules.
    pub fn sites(&self) -> &Sites {
        &self.sites
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &Arc<Config> {
        &self.cfg
    }

    /// The clock it reads.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// What it counts.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Every metric in the Prometheus text format, the tiers' gauges read now.
    pub fn render_metrics(&self) -> String {
        self.metrics.set_tiers(self.tier_figures(), self.shared_state());
        self.metrics.render()
    }

    /// The memory tier's objects, bytes and budget now.
    pub fn tier_figures(&self) -> TierFigures {
        let m = self.tiers.memory();
        TierFigures { objects: m.entry_count(), bytes: m.weighted_size(), budget: m.budget() }
    }

    /// The shared tier's state now; `None` without one.
    pub fn shared_state(&self) -> Option<SharedState> {
        self.tiers.shared().map(|s| SharedState { connected: s.connected(), breaker_open: s.breaker_open() })
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

    /// Handles one request from `peer` on a cleartext listener.
    pub async fn handle(self: &Arc<Self>, req: Request<Incoming>, peer: SocketAddr) -> Answer {
        self.handle_on(req, peer, Endpoint::PLAIN).await
    }

    /// Handles one request from `peer` that came in on a listener served as `endpoint`.
    pub async fn handle_on(self: &Arc<Self>, req: Request<Incoming>, peer: SocketAddr, endpoint: Endpoint) -> Answer {
        let (mut parts, body) = req.into_parts();
        if let Some(port) = endpoint.redirect_https {
            return endpoint::redirect_https(&parts, port);
        }
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
        let target = match request::target(&parts, endpoint.scheme) {
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
        let Some(id) = self.sites.single().or_else(|| self.sites.route(&target.host)) else {
            let msg = "no site is served here for this host\n";
            return local(StatusCode::MISDIRECTED_REQUEST, msg, Failure::Misdirected, Fwd::Bypass);
        };
        let site = self.sites.get(id);
        let route = site.route(id, target.path_and_query.as_str());
        let (key, key_url) =
            site.key(target.scheme.as_str(), &target.host, target.path_and_query.as_str(), &parts.headers, route.rules);
        if site.rules.strip_cookie(route.rules) {
            parts.headers.remove(header::COOKIE);
        }
        // A span per request at debug level. Disabled (the default), it costs a level check,
        // and the request is not wrapped in it: wrapping moves the request's whole state once.
        let span =
            tracing::debug_span!("request", method = %parts.method, path = %target.path_and_query, key = %key.short());
        let pass = if parts.method != Method::GET && parts.method != Method::HEAD {
            Some(NotStored::Method)
        } else if request::has_body(&body) {
            Some(NotStored::RequestBody)
        } else if site.rules.mode(route.rules) == CacheMode::Pass {
            Some(NotStored::Rule)
        } else {
            None
        };
        if let Some(why) = pass {
            let answer = Box::pin(self.pass(parts, Some(body), target, peer, route, why)).instrument(span).await;
            return self.routed(answer, route);
        }
        let cc = policy::request_cache_control(&parts.headers);
        let ctx = Ctx { parts, target, peer, cc, key, route, key_url };
        let answer = if span.is_disabled() {
            self.cacheable(ctx).await
        } else {
            Box::pin(self.cacheable(ctx).instrument(span)).await
        };
        self.routed(answer, route)
    }

    /// An answer of the route's site: the site named for the log and metrics, and the rules'
    /// response fields put on what the origin or the store answered (not on the proxy's own
    /// errors).
    #[inline]
    fn routed(&self, (mut resp, mut cs): Answer, route: Route) -> Answer {
        cs.site = Some(route.site);
        if route.rules.is_empty() {
            return (resp, cs);
        }
        let rules = &self.sites.get(route.site).rules;
        if !matches!(cs.detail, Some(Detail::Failure(_))) && rules.edits_response(route.rules) {
            rules.edit_response(route.rules, resp.headers_mut());
        }
        (resp, cs)
    }

    /// Refresh-ahead (`[refresh_ahead]`, `[[site]] refresh_ahead`): a fresh hit on `entry`,
    /// `ttl_ms` before it expires, is counted; when the entry has had `min_hits` hits and is in
    /// the last `fraction` of its freshness lifetime, it is revalidated once in the background
    /// (the fill machinery: a 304 refreshes it, a 200 replaces it), so it does not expire under
    /// its clients. A cold entry is never refreshed; with refresh-ahead off nothing is counted.
    fn refresh_ahead(self: &Arc<Self>, ctx: &Ctx, entry: &Arc<crate::store::Entry>, ttl_ms: i64) {
        let Some(ra) = self.sites.get(ctx.route.site).refresh_ahead else { return };
        let Some(hits) = entry.heat.hit() else { return };
        let lifetime_ms = i64::from(entry.freshness.lifetime) * 1000;
        if hits >= ra.min_hits && ttl_ms * 1000 <= lifetime_ms * i64::from(ra.per_mille) && entry.heat.claim() {
            self.revalidate_in_background(ctx, entry.clone());
        }
    }

    /// GET and HEAD: look up, serve, revalidate or fetch.
    async fn cacheable(self: &Arc<Self>, ctx: Ctx) -> Answer {
        let h = &ctx.parts.headers;
        if h.contains_key(header::IF_MATCH) || h.contains_key(header::IF_UNMODIFIED_SINCE) {
            // Preconditions for state-changing intent: the origin evaluates them; nothing stored.
            return Box::pin(self.pass(ctx.parts, None, ctx.target, ctx.peer, ctx.route, NotStored::Precondition))
                .await;
        }
        let mut now = self.clock.now_millis();
        let writes = self.tiers.memory().writes();
        let found = self.tiers.in_memory(&ctx.key, h, now);
        let mut selected = found.selected;
        let mut purged = false;
        if let Some(e) = selected.as_ref().filter(|e| self.purges.unchecked(&e.checked)) {
            // A host, prefix or everything purge since this entry was last checked.
            selected = self.recheck(&ctx, e.clone(), now);
            purged = selected.is_none();
        }
        let mut from_shared = false;
        if selected.is_none() && self.tiers.shared().is_some() {
            // Memory → shared tier → origin. A shared-tier hit is promoted into memory.
            let at = (&*ctx.target.host, ctx.target.path_and_query.as_str());
            selected = Box::pin(self.tiers.in_shared(&ctx.key, &ctx.canonical(), at, h)).await;
            from_shared = selected.is_some();
            now = self.clock.now_millis();
        }
        let hit = |ttl: i64| CacheStatus { shared_tier: from_shared, ..CacheStatus::hit(ttl) };
        // A site's rule may have every stored response revalidated before it is used.
        let always_revalidate = !ctx.route.rules.is_empty()
            && self.sites.get(ctx.route.site).rules.mode(ctx.route.rules) == CacheMode::Revalidate;
        if h.contains_key(header::RANGE) {
            // A range is served from a usable complete stored response; a GET's otherwise from
            // stored pieces or fetched in slices (`ranged`); a HEAD's is forwarded.
            let usable = |e: &Arc<crate::store::Entry>| {
                !always_revalidate && matches!(e.freshness.usable(&ctx.cc, now), Usable::Fresh | Usable::Stale)
            };
            if let Some(entry) = selected.filter(usable) {
                let ttl = entry.freshness.ttl_ms(now).div_euclid(1000);
                return self.serve_stored(&ctx.parts, &entry, hit(ttl), now);
            }
            if ctx.parts.method == Method::GET {
                return Box::pin(self.ranged(ctx)).await;
            }
            if ctx.cc.only_if_cached {
                return only_if_cached();
            }
            return Box::pin(self.pass(ctx.parts, None, ctx.target, ctx.peer, ctx.route, NotStored::Partial)).await;
        }
        let Some(entry) = selected else {
            if ctx.cc.only_if_cached {
                return only_if_cached();
            }
            // Other variants than one just purged: a vary miss. Pieces of a representation are no
            // variant.
            let others = found.variants.as_ref().is_some_and(|v| v.entries().len() > usize::from(purged));
            let fwd = if others { Fwd::VaryMiss } else { Fwd::UriMiss };
            return self.fetch(Arc::new(ctx), Miss { fwd, stale: None, join: Some(writes) }).await;
        };
        let usable = match entry.freshness.usable(&ctx.cc, now) {
            Usable::Fresh | Usable::Stale if always_revalidate => Usable::Revalidate(Fwd::Stale),
            usable => usable,
        };
        match usable {
            Usable::Fresh | Usable::Stale => {
                let ttl_ms = entry.freshness.ttl_ms(now);
                if ttl_ms > 0 {
                    self.refresh_ahead(&ctx, &entry, ttl_ms);
                }
                self.serve_stored(&ctx.parts, &entry, hit(ttl_ms.div_euclid(1000)), now)
            }
            // RFC 5861 §3: serve stale at once, revalidate once in the background.
            Usable::Revalidate(Fwd::Stale)
                if !always_revalidate && entry.freshness.within_stale_while_revalidate(now) =>
            {
                self.metrics.stale_served(StaleServed::WhileRevalidate);
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
