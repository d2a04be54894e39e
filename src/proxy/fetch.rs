//! Going to the origin for a cacheable request, and storing while streaming: the fill.
//!
//! A miss or a revalidation joins the fill in flight for its key, or starts one (coalescing).
//! A request that may not join one (coalescing off, a `no-store` request, a key marked
//! hit-for-pass, a waiter that gave up or cannot use what it waited for) runs a fill of its own,
//! through the same steps. The first client drives its fill until it can answer, so a small
//! response is fetched, stored and served without a task switch; what is left of the fill then
//! (a body still arriving), or all of it when that client goes away, runs in a task of its own,
//! so no client's disconnect cancels it.
//!
//! What a fill publishes ([`Fetched`]):
//! - `Stream`: a storable response is arriving; each client reads it through its own reader.
//! - `Entry`: the origin confirmed the stored response (304); it was refreshed.
//! - `Pass`: the response may not be shared. The first client to ask takes it; the others fetch
//!   on their own, and the key is marked hit-for-pass so later requests do not queue.
//! - `Failed`: no response; each client answers on its own (stale if allowed, else an error).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::stream;
use http::header::{self, HeaderMap};
use http::{request, Method, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;

use super::body::ProxyBody;
use super::origin::{content_length, Ask, OriginResponse};
use super::request::Ctx;
use super::respond::{local_with, not_modified_headers, only_if_cached, upstream_failure, Answer};
use super::Proxy;
use crate::clock::Millis;
use crate::http::cache_control::CacheControl;
use crate::http::conditional;
use crate::http::policy::{self, Freshness, Usable};
use crate::http::vary::{self, VaryKey};
use crate::metrics::StaleServed;
use crate::status::{CacheStatus, Fwd, NotStored, Stale};
use crate::store::fill::{Abandoned, Fill, FillReader, Join, Settled};
use crate::store::headers::StoredHeaders;
use crate::store::purge::{Seq, Stamp};
use crate::store::Entry;
use crate::upstream::body::{drain, BoxError, IdleBody, OriginBody, UpBody};
use crate::upstream::{OriginIncoming, UpstreamError};

/// A response whose `Content-Length` is at most this waits for its whole body before its head
/// goes out, so that the head can say `stored`, which is never said before it is certain
/// (RFC 9211 allows saying less). A larger body, or one of unknown length, is streamed at once
/// (an origin may flush the start of a page early on purpose), its head says nothing of
/// storing, and the access log says how it ended.
const WHOLE_BEFORE_HEAD: u64 = 64 << 10;

/// A fill of an origin response.
pub(super) type OriginFill = Fill<Fetched>;

/// What a fill's fetch came to, published to every client of the fill. Made once per fill and
/// kept in an `Arc`: its size is not copied around.
#[allow(clippy::large_enum_variant)]
pub(super) enum Fetched {
    /// A storable response, streamed to every reader.
    Stream(Arc<Head>),
    /// The stored response was revalidated (304) and refreshed; stored again, or why not.
    /// `origin_us`: the origin's time to answer (`None`: found stored, not fetched).
    Entry { entry: Arc<Entry>, stored: Result<(), NotStored>, origin_us: Option<u32> },
    /// A response that may not be shared: the first client to ask takes it.
    Pass { status: StatusCode, reason: NotStored, response: Mutex<Option<Response<OriginIncoming>>>, origin_us: u32 },
    /// The origin failed before a response head.
    Failed(Arc<UpstreamError>),
}

impl Fetched {
    /// Whether a response head waits for the end of the body (see [`WHOLE_BEFORE_HEAD`]).
    fn waits_for_end(&self) -> bool {
        matches!(self, Fetched::Stream(head) if head.whole_first)
    }
}

/// A response being fetched and streamed: what every client of the fill sends.
pub(super) struct Head {
    /// Status to send.
    pub(super) status: StatusCode,
    /// Header fields to send (hop-by-hop removed, `Via` added).
    pub(super) headers: HeaderMap,
    /// The request field values the response was selected by.
    pub(super) vary: VaryKey,
    /// `Last-Modified` (or `Date`), for answering `If-Modified-Since`.
    pub(super) last_modified: Millis,
    /// The body is small and of known length: heads wait for it (see [`WHOLE_BEFORE_HEAD`]).
    pub(super) whole_first: bool,
    /// The origin's time to answer, in microseconds.
    pub(super) origin_us: u32,
}

impl Head {
    /// The header fields: moved out when this is the last hold on the head (see
    /// [`Fill::forget_outcome_if_unjoined`]), copied otherwise.
    fn into_headers(head: Arc<Head>) -> HeaderMap {
        Arc::try_unwrap(head).map_or_else(|h| h.headers.clone(), |h| h.headers)
    }
}

/// Why a cacheable request goes to the origin, and whether it may join a fill in flight.
pub(super) struct Miss {
    /// Why (`Cache-Status; fwd=`).
    pub(super) fwd: Fwd,
    /// The stored response to revalidate, when there is one.
    pub(super) stale: Option<Arc<Entry>>,
    /// The memory tier's write count read before the lookup that missed, when the request may
    /// join the fill in flight for its key; `None` for a fill of its own.
    pub(super) join: Option<u64>,
}

impl Proxy {
    /// Answers a miss or revalidation from a fill: the one in flight for the key, a new one in
    /// the table, or one of its own.
    pub(super) async fn fetch(self: &Arc<Self>, ctx: Arc<Ctx>, miss: Miss) -> Answer {
        let Miss { fwd, stale, join } = miss;
        let key = ctx.key;
        let now = self.clock.now_millis();
        let join = join.filter(|_| self.cfg.coalescing.enabled && !ctx.cc.no_store).filter(|_| {
            let marked = self.hit_for_pass.active(&key, now);
            if marked {
                self.metrics.hit_for_pass_passed();
            }
            !marked
        });
        let (fill, mut driver) = match join.map(|writes| (writes, self.inflight.join(key))) {
            None => {
                let fill = Arc::new(OriginFill::default());
                let job = self.clone().run_fill(fill.clone(), ctx.clone(), stale.clone());
                (fill, Some(LeaderFill(Some(Box::pin(job)))))
            }
            Some((writes, Join::Leader(fill))) => {
                // A fill may have completed between this request's lookup and its join: look
                // again, so a key is never fetched twice in a row; unless nothing at all was
                // written since that lookup (the fill's write counts before it leaves the
                // table of fills in flight, which this join locked after it).
                let memory = self.tiers.memory();
                let written = memory.writes() != writes;
                let fresh = written
                    .then(|| memory.get_if_present(&key, now))
                    .flatten()
                    .and_then(|v| v.select(&ctx.parts.headers).cloned())
                    .filter(|e| !stale.as_ref().is_some_and(|s| Arc::ptr_eq(s, e)))
                    .filter(|e| !self.purges.unchecked(&e.checked))
                    .filter(|e| e.freshness.usable(&ctx.cc, now) == Usable::Fresh);
                if let Some(entry) = fresh {
                    let writer = fill.writer();
                    writer.publish(Fetched::Entry { entry: entry.clone(), stored: Ok(()), origin_us: None });
                    writer.finish();
                    self.inflight.remove(&key, &fill);
                    let ttl = entry.freshness.ttl_ms(now).div_euclid(1000);
                    return self.serve_stored(&ctx.parts, &entry, CacheStatus::hit(ttl), now);
                }
                let job = self.clone().run_fill(fill.clone(), ctx.clone(), stale.clone());
                (fill, Some(LeaderFill(Some(Box::pin(job)))))
            }
            Some((_, Join::Waiter(fill))) => {
                self.metrics.coalesced();
                (fill, None)
            }
        };
        let first = driver.is_some();
        // Take a place in the body now, before any byte can be passed and dropped.
        let reader = fill.reader();
        let ready = match driver.as_mut() {
            Some(driver) => driver.ready(&fill).await,
            None => {
                let wait = fill.wait_ready(Fetched::waits_for_end);
                match tokio::time::timeout(self.cfg.coalescing.wait_limit, wait).await {
                    Ok(o) => o,
                    Err(_) => {
                        tracing::debug!(%key, "coalescing wait limit reached; fetching alone");
                        return self.fetch_alone(ctx, fwd, stale).await;
                    }
                }
            }
        };
        // The first client's fill ended (it ran in these polls) and nobody joined it: it has
        // left the table of fills in flight, so no one else can ask for its outcome, and the
        // head's fields can be moved into this response instead of copied.
        if driver.as_ref().is_some_and(LeaderFill::ended) {
            fill.forget_outcome_if_unjoined();
        }
        // A body still arriving goes on in a task of its own.
        drop(driver);
        let outcome = match ready {
            Ok(o) => o,
            Err(Abandoned) => Arc::new(Fetched::Failed(Arc::new(UpstreamError::Abandoned))),
        };
        let mut status = CacheStatus::forward(fwd);
        status.collapsed = !first;
        let parts = &ctx.parts;
        match &*outcome {
            Fetched::Stream(head) => {
                let language = head.headers.get(header::CONTENT_LANGUAGE).map(|v| v.as_bytes());
                if !vary::selects(&head.vary, &parts.headers, language) {
                    return self.fetch_alone(ctx, fwd, stale).await;
                }
                status.fwd_status = Some(head.status.as_u16());
                status.origin_us = Some(head.origin_us);
                if head.whole_first && fill.settled() == Some(Settled::NotStored(NotStored::Incomplete)) {
                    // The body failed before the head went out: no response is better than a
                    // truncated one presented as the origin's.
                    tracing::warn!(%key, path = %ctx.target.path_and_query, "origin body failed before the head was sent");
                    status.detail = Some(NotStored::Incomplete.into());
                    return local_with(StatusCode::BAD_GATEWAY, "origin response incomplete\n", status);
                }
                status.stored = head.whole_first && fill.settled() == Some(Settled::Stored);
                // The outcome's hold on the head goes, so the head's fields can be moved when
                // this is the last hold (see `forget_outcome_if_unjoined` above).
                let head = head.clone();
                drop(outcome);
                match self.serve_from_fill(parts, reader, head, status) {
                    Some(answer) => answer,
                    // The body outgrew what is kept: this client fetches on its own.
                    None => self.fetch_alone(ctx, fwd, stale).await,
                }
            }
            Fetched::Entry { entry, stored, origin_us } => {
                // A refreshed response that may not be stored may not be shared either: the 304
                // answered the first client's request (a `Set-Cookie` in it is that client's), so
                // the others fetch on their own, as for `Fetched::Pass`.
                let language = entry.headers.get_bytes(&header::CONTENT_LANGUAGE);
                if !vary::selects(&entry.vary, &parts.headers, language) || (!first && stored.is_err()) {
                    return self.fetch_alone(ctx, fwd, stale).await;
                }
                status.fwd_status = Some(304);
                status.origin_us = *origin_us;
                match stored {
                    Ok(()) => status.stored = true,
                    Err(reason) => status.detail = Some((*reason).into()),
                }
                self.serve_stored(parts, entry, status, self.clock.now_millis())
            }
            Fetched::Pass { status: code, reason, response, origin_us } => {
                if code.is_server_error() {
                    if let Some(served) = self.stale_on_error(&ctx, stale.as_ref(), fwd, Some(*code)) {
                        return served;
                    }
                }
                let taken = response.lock().unwrap_or_else(|e| e.into_inner()).take();
                let Some(resp) = taken else {
                    return self.fetch_alone(ctx, fwd, stale).await;
                };
                status.fwd_status = Some(code.as_u16());
                status.origin_us = Some(*origin_us);
                status.detail = Some((*reason).into());
                status.collapsed = false;
                let (rp, body) = resp.into_parts();
                let body = OriginBody::new(body, self.cfg.timeouts.idle);
                let body = if parts.method == Method::HEAD {
                    tokio::spawn(drain(body));
                    ProxyBody::empty()
                } else {
                    ProxyBody::Origin(Box::new(body))
                };
                self.respond(rp.status, rp.headers, body, status)
            }
            Fetched::Failed(err) => {
                if let Some(served) = self.stale_on_error(&ctx, stale.as_ref(), fwd, None) {
                    return served;
                }
                if ctx.cc.only_if_cached {
                    return only_if_cached();
                }
                let (resp, mut cs) = upstream_failure(err, fwd);
                cs.collapsed = !first;
                (resp, cs)
            }
        }
    }

    /// [`fetch`](Proxy::fetch) with a fill of its own. Boxed: it is the rare path, and `fetch`
    /// reaches it from inside itself.
    fn fetch_alone(
        self: &Arc<Self>,
        ctx: Arc<Ctx>,
        fwd: Fwd,
        stale: Option<Arc<Entry>>,
    ) -> Pin<Box<dyn Future<Output = Answer> + Send + '_>> {
        Box::pin(self.fetch(ctx, Miss { fwd, stale, join: None }))
    }

    /// Answers one client from a streaming fill: a 304 for its own matching conditional, the head
    /// alone for HEAD, else the body through a reader. `None` when a body is wanted and there is
    /// no reader (the body outgrew what the fill keeps). Not `async`: the answer is ready at
    /// once, and the rare fetch that `None` calls for stays out of every miss's future.
    fn serve_from_fill(
        &self,
        parts: &request::Parts,
        reader: Option<FillReader<Fetched>>,
        head: Arc<Head>,
        status: CacheStatus,
    ) -> Option<Answer> {
        let code = head.status;
        let etag = head.headers.get(header::ETAG).map(|v| v.as_bytes());
        let now = self.clock.now_millis();
        if conditional::answer_not_modified(&parts.headers, code, etag, head.last_modified, now) {
            let headers = not_modified_headers(&head.headers);
            return Some(self.respond(StatusCode::NOT_MODIFIED, headers, ProxyBody::empty(), status));
        }
        if parts.method == Method::HEAD {
            return Some(self.respond(code, Head::into_headers(head), ProxyBody::empty(), status));
        }
        let mut reader = reader?;
        let body = match reader.complete_body() {
            Some(whole) => ProxyBody::full(whole),
            None => ProxyBody::Fill(Box::new(FillBody::new(reader))),
        };
        Some(self.respond(code, Head::into_headers(head), body, status))
    }

    /// `stale-while-revalidate`: starts a revalidation of `entry` unless one is in flight.
    pub(super) fn revalidate_in_background(self: &Arc<Self>, ctx: &Ctx, entry: Arc<Entry>) {
        if let Join::Leader(fill) = self.inflight.join(ctx.key) {
            let ctx = Arc::new(Ctx {
                parts: ctx.parts.clone(),
                target: ctx.target.clone(),
                peer: ctx.peer,
                cc: ctx.cc.clone(),
                key: ctx.key,
                route: ctx.route,
                key_url: ctx.key_url.clone(),
            });
            tokio::spawn(self.clone().run_fill(fill, ctx, Some(entry)));
        }
    }

    /// RFC 5861 §4, RFC 9111 §4.2.4: the origin failed (`status` 5xx, or no response); serve the
    /// stale response if its window allows. Only for a revalidation the cache itself needed,
    /// never against the client's `no-cache` / `max-age` demands.
    fn stale_on_error(
        &self,
        ctx: &Ctx,
        stale: Option<&Arc<Entry>>,
        fwd: Fwd,
        status: Option<StatusCode>,
    ) -> Option<Answer> {
        let entry = stale.filter(|_| fwd == Fwd::Stale)?;
        let now = self.clock.now_millis();
        if !entry.freshness.stale_on_error(&ctx.cc, self.cfg.stale.grace.as_millis() as u64, now) {
            return None;
        }
        // The metrics tell apart what `stale-if-error` allowed from what only the grace did.
        let why =
            if entry.freshness.stale_on_error(&ctx.cc, 0, now) { StaleServed::IfError } else { StaleServed::Grace };
        self.metrics.stale_served(why);
        let cs = CacheStatus {
            hit: true,
            fwd: Some(Fwd::Stale),
            fwd_status: status.map(|s| s.as_u16()),
            ttl: Some(entry.freshness.ttl_ms(now).div_euclid(1000)),
            detail: Some(Stale::IfError.into()),
            ..Default::default()
        };
        Some(self.serve_stored(&ctx.parts, entry, cs, now))
    }

    /// The fill itself: the origin request, then the body pushed into the fill until it ends,
    /// then the stored entry. Runs to the end whatever the clients do.
    ///
    /// One `async fn` rather than a wrapper around an inner one: its state is moved into a box
    /// when a first client starts it, and a wrapper would hold the inner state as well and move
    /// it once more at the first poll.
    async fn run_fill(self: Arc<Self>, fill: Arc<OriginFill>, ctx: Arc<Ctx>, stale: Option<Arc<Entry>>) {
        // Dropped without finishing (the task aborted, a panic), the writer marks the fill
        // abandoned and its clients move on at once.
        let writer = fill.writer();
        // However the fill ends, even dropped, it is then no longer joinable under this key;
        // clients that joined keep their Arc and finish reading.
        let _leave = LeaveInflight { proxy: &self, fill: &fill, key: ctx.key };
        let (key, parts, target) = (ctx.key, &ctx.parts, &ctx.target);
        // What is stored is stamped with the purges before the origin was asked: any purge
        // since applies to it.
        let stamp = self.purges.seq();
        let validators = stale.as_deref().filter(|e| e.has_validator());
        let ask = match validators {
            Some(e) => Ask::Revalidate(e),
            // Never stored: the client's own conditionals go to the origin, whose 304 passes.
            None if ctx.cc.no_store => Ask::AsIs,
            None => Ask::Full,
        };
        // HEAD is fetched as GET, so a later GET is a hit and a stored body stays valid.
        let req = self.origin_request(ctx.asker(), &Method::GET, UpBody::Empty, ask);
        let OriginResponse { parts: rp, body, request_time, response_time, took_us } = match self
            .ask_origin(ctx.route, &key, req)
            .await
        {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, %key, path = %target.path_and_query, peer = %ctx.peer, "origin request failed");
                writer.publish(Fetched::Failed(Arc::new(e)));
                return writer.finish();
            }
        };

        // §4.3.4: a 304 to our revalidation refreshes the stored response.
        if rp.status == StatusCode::NOT_MODIFIED {
            if let (Some(old), true) = (stale.as_ref(), validators.is_some()) {
                let (entry, stored) = self.refresh(&ctx, old, &rp.headers, (request_time, response_time), stamp);
                writer.publish(Fetched::Entry { entry, stored, origin_us: Some(took_us) });
                return writer.finish();
            }
        }
        // A response without a body (204, or a zero length) is complete already.
        let expected = content_length(&rp.headers).or_else(|| http_body::Body::is_end_stream(&body).then_some(0));
        let (decision, fresh, resp_cc) = self.decide(&ctx, &rp, expected, request_time, response_time);
        if let Err(reason) = decision {
            // A server error is transient: it does not make the key uncacheable, nor does it
            // replace what is stored (§4.3.3 for every other full response).
            if !rp.status.is_server_error() {
                if reason.from_response() {
                    self.hit_for_pass.mark(key, response_time);
                    self.metrics.hit_for_pass_marked();
                }
                if let Some(old) = stale.as_ref() {
                    self.tiers.remove_variant(&key, old);
                }
            }
            let code = rp.status;
            let response = Mutex::new(Some(Response::from_parts(rp, body)));
            writer.publish(Fetched::Pass { status: code, reason, response, origin_us: took_us });
            return writer.finish();
        }

        let template = self.entry_template(&parts.headers, &rp, &resp_cc, fresh, stamp);
        let last_modified = fresh.last_modified;
        let whole_first = expected.is_some_and(|n| n <= WHOLE_BEFORE_HEAD);
        let vary = template.vary.clone();
        let head = Arc::new(Head {
            status: rp.status,
            headers: rp.headers,
            vary,
            last_modified,
            whole_first,
            origin_us: took_us,
        });
        writer.publish(Fetched::Stream(head));
        writer.announce(expected);

        let max = self.cfg.cache.max_object_bytes;
        let mut body = IdleBody::new(body, self.cfg.timeouts.idle);
        let mut pass_marked = false;
        let mut received = 0u64;
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(frame) => {
                    let Ok(data) = frame.into_data() else { continue };
                    received += data.len() as u64;
                    if expected == Some(received) {
                        // The last byte: store before any client can see the end.
                        writer.push_last(data, max);
                        // Read the (empty) end so the origin connection goes back to the pool.
                        let _ = body.frame().await;
                        break;
                    }
                    if !writer.push(data, max).await {
                        return writer.fail("abandoned: no reader left");
                    }
                    if !pass_marked && !fill.retained() {
                        // Too large to store: later requests should not wait on this key.
                        pass_marked = true;
                        self.hit_for_pass.mark(key, response_time);
                        self.metrics.hit_for_pass_marked();
                        self.inflight.remove(&key, &fill);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, %key, path = %target.path_and_query, detail = NotStored::Incomplete.as_str(), "origin body failed; nothing stored");
                    return writer.fail("origin body failed");
                }
            }
        }
        // The fill keeps the body for clients that join it until it leaves the table of fills in
        // flight, after the insert: a request whose lookup missed before the insert joins it and
        // reads the body from it, and one that looks after the insert finds the body stored.
        let Some(whole) = writer.whole() else {
            return writer.complete(Err(NotStored::TooLarge));
        };
        if expected.is_some_and(|n| n != whole.len() as u64) {
            tracing::warn!(%key, path = %target.path_and_query, detail = NotStored::Incomplete.as_str(), "origin body length mismatch; nothing stored");
            return writer.fail("origin body length mismatch");
        }
        let entry = Arc::new(template.with_body(whole));
        self.tiers.insert(key, || ctx.canonical(), entry.clone(), response_time);
        self.after_store(key, &entry, stamp);
        writer.complete(Ok(()));
    }

    /// A 304 from the origin refreshed `old`: merge (RFC 9111 §4.3.4) and store, stamped with
    /// the purges before the revalidation (`stamp`). Returns the refreshed entry and whether it
    /// could be stored.
    fn refresh(
        &self,
        ctx: &Ctx,
        old: &Arc<Entry>,
        not_modified: &HeaderMap,
        (request_time, response_time): (Millis, Millis),
        stamp: Seq,
    ) -> (Arc<Entry>, Result<(), NotStored>) {
        let mut merged = old.merged_headers(not_modified);
        let cc = policy::response_cache_control(&merged, &self.opts);
        let mut fresh = policy::freshness(old.status, &merged, &cc, request_time, response_time, &self.opts);
        fresh.lifetime = self.rule_lifetime(ctx, &merged, &cc, fresh.lifetime);
        // The 304's own Age is not stored (it is recomputed) but counts in the new freshness.
        fresh.times.age_value = policy::secs32(policy::age_value(not_modified));
        // §5.2.2.4 / §5.2.2.7: fields named by a qualified no-cache or private are not stored.
        for name in cc.no_cache_fields.iter().chain(cc.private_fields.iter()) {
            merged.remove(&**name);
        }
        let mut refreshed = old.refreshed(&merged, fresh);
        refreshed.checked = Stamp::new(stamp);
        let entry = Arc::new(refreshed);
        let req = policy::Req { method: &Method::GET, headers: &ctx.parts.headers, cc: &ctx.cc };
        let resp = policy::Resp { status: entry.status, headers: &merged, cc: &cc };
        let stored = policy::storable(&req, &resp, &self.opts);
        match stored {
            Ok(()) => {
                self.tiers.replace(ctx.key, &ctx.canonical(), old, entry.clone(), response_time);
                self.after_store(ctx.key, &entry, stamp);
            }
            Err(_) => self.tiers.remove_variant(&ctx.key, old),
        }
        (entry, stored)
    }

    /// Whether the response to a request may be stored, and its freshness. `length` is the
    /// response's `Content-Length`.
    fn decide(
        &self,
        ctx: &Ctx,
        rp: &http::response::Parts,
        length: Option<u64>,
        request_time: Millis,
        response_time: Millis,
    ) -> (Result<(), NotStored>, Freshness, CacheControl) {
        let resp_cc = policy::response_cache_control(&rp.headers, &self.opts);
        let req = policy::Req { method: &Method::GET, headers: &ctx.parts.headers, cc: &ctx.cc };
        let resp = policy::Resp { status: rp.status, headers: &rp.headers, cc: &resp_cc };
        let mut decision = policy::storable(&req, &resp, &self.opts);
        if decision.is_ok() && length.is_some_and(|n| n > self.cfg.cache.max_object_bytes) {
            decision = Err(NotStored::TooLarge);
        }
        let mut fresh = policy::freshness(rp.status, &rp.headers, &resp_cc, request_time, response_time, &self.opts);
        fresh.lifetime = self.rule_lifetime(ctx, &rp.headers, &resp_cc, fresh.lifetime);
        if decision.is_ok()
            && fresh.lifetime == 0
            && !fresh.no_cache
            && !policy::has_validator(&rp.headers, response_time)
        {
            decision = Err(NotStored::NoFreshness);
        }
        (decision, fresh, resp_cc)
    }

    /// The freshness lifetime the site's rules give a response whose own is `lifetime` (seconds):
    /// `ttl` when it has no explicit one (`s-maxage`, `max-age`, `Expires`), bounded by `min_ttl`
    /// and `max_ttl`. Only the stored freshness changes: what clients are sent stays the origin's.
    fn rule_lifetime(&self, ctx: &Ctx, headers: &HeaderMap, cc: &CacheControl, lifetime: u32) -> u32 {
        if ctx.route.rules.is_empty() {
            return lifetime;
        }
        let explicit = cc.s_maxage.is_some() || cc.max_age.is_some() || headers.contains_key(header::EXPIRES);
        self.sites.get(ctx.route.site).rules.lifetime(ctx.route.rules, explicit, lifetime)
    }

    /// What a response will be stored as, all but its body.
    fn entry_template(
        &self,
        req: &HeaderMap,
        rp: &http::response::Parts,
        cc: &CacheControl,
        fresh: Freshness,
        stamp: Seq,
    ) -> Entry {
        // `Age` is recomputed when served. §5.2.2.4 / §5.2.2.7: fields named by a qualified
        // no-cache or private are not stored.
        let named =
            |n: &str| cc.no_cache_fields.iter().chain(cc.private_fields.iter()).any(|f| f.eq_ignore_ascii_case(n));
        let headers = StoredHeaders::from_map_where(&rp.headers, |n| *n != header::AGE && !named(n.as_str()));
        let names = vary::vary_names(&rp.headers).unwrap_or_default();
        let vary = vary::vary_key(&names, req);
        Entry {
            status: rp.status,
            headers,
            body: Bytes::new(),
            vary,
            freshness: fresh,
            checked: Stamp::new(stamp),
            heat: Default::default(),
        }
    }
}

/// Takes a fill out of the table of fills in flight when dropped (see [`Proxy::run_fill`]).
struct LeaveInflight<'a> {
    proxy: &'a Proxy,
    fill: &'a Arc<OriginFill>,
    key: crate::store::CacheKey,
}

impl Drop for LeaveInflight<'_> {
    fn drop(&mut self) {
        self.proxy.inflight.remove(&self.key, self.fill);
    }
}

/// A first client's fill. That client's request drives it until it can answer, so a small
/// response is fetched, stored and served without a task switch; whatever remains of it (a body
/// still arriving, or the whole fill when the client goes away first) is handed to a task of its
/// own when this is dropped. Dropping it never cancels the fill.
struct LeaderFill(Option<Pin<Box<dyn Future<Output = ()> + Send>>>);

impl LeaderFill {
    /// The fill ran to its end in the first client's polls.
    fn ended(&self) -> bool {
        self.0.is_none()
    }

    /// Polls the fill until a response head can be sent (see [`Fill::ready`]). The fill
    /// publishes from inside these polls, so the first client looks after each one instead of
    /// waiting on the fill's notification like a waiter: a waiter's registration would have the
    /// publish wake this very task, which is already running, and poll it once more for nothing.
    async fn ready(&mut self, fill: &OriginFill) -> Result<Arc<Fetched>, Abandoned> {
        std::future::poll_fn(|cx| {
            if let Some(job) = self.0.as_mut() {
                if job.as_mut().poll(cx).is_ready() {
                    self.0 = None;
                }
            }
            if let Some(ready) = fill.ready(Fetched::waits_for_end) {
                return Poll::Ready(ready);
            }
            if self.ended() {
                // The writer is gone, so the fill is settled or abandoned; never reached.
                return Poll::Ready(Err(Abandoned));
            }
            Poll::Pending
        })
        .await
    }
}

impl Drop for LeaderFill {
    fn drop(&mut self) {
        if let Some(job) = self.0.take() {
            // Outside a runtime (it is shutting down) there is nobody left to serve.
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(job);
            }
        }
    }
}

/// A client's body read from a fill, and how the fill ended (for the access log).
pub struct FillBody {
    fill: Arc<OriginFill>,
    chunks: Pin<Box<dyn futures_util::Stream<Item = Result<Frame<Bytes>, BoxError>> + Send>>,
}

impl FillBody {
    fn new(reader: FillReader<Fetched>) -> Self {
        let fill = reader.fill().clone();
        let chunks = stream::unfold(reader, |mut r| async move {
            let item = match r.next().await? {
                Ok(chunk) => Ok(Frame::data(chunk)),
                Err(why) => Err(BoxError::from(format!("fill failed: {why}"))),
            };
            Some((item, r))
        });
        FillBody { fill, chunks: Box::pin(chunks) }
    }

    /// How the fill's body ended, once it has.
    pub fn settled(&self) -> Option<Settled> {
        self.fill.settled()
    }
}

impl Body for FillBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.chunks.as_mut().poll_next(cx)
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}
