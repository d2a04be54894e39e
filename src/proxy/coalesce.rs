//! Coalesced misses and revalidations: one origin request per key, streamed to every client
//! (see [`crate::cache::fill`]), and background revalidation for `stale-while-revalidate`.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use futures_util::stream;
use http::header;
use http::{request, Method, Response, StatusCode};
use http_body::Frame;
use http_body_util::BodyExt;

use super::{not_modified_headers, now_keep, only_if_cached, upstream_failure, OriginResponse, Proxy, Target};
use crate::body::{BoxError, IdleBody, OriginBody, ProxyBody, UpBody};
use crate::cache::control::CacheControl;
use crate::cache::fill::{Fill, FillReader, Head, Join, Outcome};

use crate::cache::key::BuildKeyHasher;
use crate::cache::{policy, vary, CacheKey, Entry};
use crate::clock::Millis;
use crate::conditional;
use crate::status::{CacheStatus, Detail, Fwd};
use crate::upstream::UpstreamError;

impl Proxy {
    /// A miss or revalidation for `key`: joins the fill in flight for it, or starts one, and
    /// answers from its outcome. `writes` is the memory tier's write count read before the
    /// lookup that sent the request here.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn coalesced(
        self: &Arc<Self>,
        parts: request::Parts,
        target: Target,
        peer: SocketAddr,
        key: CacheKey,
        fwd: Fwd,
        req_cc: CacheControl,
        stale: Option<Arc<Entry>>,
        writes: u64,
    ) -> (Response<ProxyBody>, CacheStatus) {
        let now = self.clock.now_millis();
        let pass = self.hit_for_pass.active(&key, now);
        if !self.cfg.coalescing.enabled || req_cc.no_store || pass {
            return self.forward(&parts, &target, peer, Some(key), fwd, &req_cc, stale).await;
        }
        // Shared with the fill's task without copying the request's fields.
        let req = Arc::new((parts, target, req_cc));
        let (parts, target, req_cc) = (&req.0, &req.1, &req.2);
        let (fill, mut driver) = match self.inflight.join(key) {
            Join::Leader(fill) => {
                // A fill may have completed between this request's lookup and its join: look
                // again, so a key is never fetched twice in a row; unless nothing at all was
                // written since that lookup (the fill's write counts before it leaves the
                // table of fills in flight, which this join locked after it).
                let written = self.memory.writes() != writes;
                let fresh = written
                    .then(|| self.memory.get_if_present(&key, now))
                    .flatten()
                    .and_then(|v| v.select(&parts.headers).cloned())
                    .filter(|e| !stale.as_ref().is_some_and(|s| Arc::ptr_eq(s, e)))
                    .filter(|e| e.freshness.usable(req_cc, now) == policy::Usable::Fresh);
                if let Some(entry) = fresh {
                    fill.publish(Outcome::Entry(entry.clone()));
                    self.inflight.remove(&key, &fill);
                    let ttl = entry.freshness.ttl_ms(now).div_euclid(1000);
                    return self.serve_stored(parts, &entry, CacheStatus::hit(ttl), now);
                }
                let job = self.clone().run_fill(fill.clone(), key, req.clone(), peer, stale.clone());
                (fill, Some(LeaderFill(Some(Box::pin(job)))))
            }
            Join::Waiter(fill) => (fill, None),
        };
        let leader = driver.is_some();
        // Take a place in the body now, before any byte can be passed and dropped.
        let reader = fill.reader();
        let outcome = match driver.as_mut() {
            Some(driver) => driver.outcome(&fill).await,
            None => match tokio::time::timeout(self.cfg.coalescing.wait_limit, fill.outcome()).await {
                Ok(o) => o,
                Err(_) => {
                    tracing::debug!(%key, "coalescing wait limit reached; going to the origin alone");
                    return self.forward(parts, target, peer, Some(key), fwd, req_cc, stale).await;
                }
            },
        };
        // The leader's fill ended (it ran in these polls) and nobody joined it: it has left the
        // table of fills in flight, so no one else can ask for its outcome, and the head's
        // fields can be moved into this response instead of copied.
        if driver.as_ref().is_some_and(LeaderFill::ended) {
            fill.forget_outcome_if_unjoined();
        }
        // A body still arriving goes on in a task of its own.
        drop(driver);
        let mut status = CacheStatus::forward(fwd);
        status.collapsed = !leader;
        match &*outcome {
            Outcome::Stream(head) => {
                if !vary::matches(&head.vary, &parts.headers) {
                    return self.forward(parts, target, peer, Some(key), fwd, req_cc, stale).await;
                }
                status.fwd_status = Some(head.status.as_u16());
                status.stored = true;
                // The outcome's hold on the head goes, so the head's fields can be moved when
                // this is the last hold (see `forget_outcome_if_unjoined` above).
                let head = head.clone();
                drop(outcome);
                match self.serve_from_fill(parts, reader, head, status) {
                    Some(answer) => answer,
                    // The body outgrew what is kept: this client fetches on its own.
                    None => self.forward(parts, target, peer, Some(key), fwd, req_cc, stale).await,
                }
            }
            Outcome::Entry(entry) => {
                if !vary::matches(&entry.vary, &parts.headers) {
                    return self.forward(parts, target, peer, Some(key), fwd, req_cc, stale).await;
                }
                status.fwd_status = Some(304);
                status.stored = true;
                self.serve_stored(parts, entry, status, self.clock.now_millis())
            }
            Outcome::Pass { status: code, reason, response } => {
                if code.is_server_error() {
                    if let Some(served) = self.stale_on_error(parts, stale.as_ref(), fwd, req_cc, Some(*code)) {
                        return served;
                    }
                }
                let taken = response.lock().unwrap_or_else(|e| e.into_inner()).take();
                match taken {
                    Some(resp) => {
                        status.fwd_status = Some(code.as_u16());
                        status.detail = Some(*reason);
                        status.collapsed = false;
                        let (rp, body) = resp.into_parts();
                        let body = OriginBody::new(body, self.cfg.timeouts.idle, None);
                        let body = if parts.method == Method::HEAD {
                            tokio::spawn(crate::body::drain(body));
                            ProxyBody::empty()
                        } else {
                            ProxyBody::Origin(Box::new(body))
                        };
                        self.respond(rp.status, rp.headers, body, status)
                    }
                    None => self.forward(parts, target, peer, Some(key), fwd, req_cc, stale).await,
                }
            }
            Outcome::Failed(err) => {
                if let Some(served) = self.stale_on_error(parts, stale.as_ref(), fwd, req_cc, None) {
                    return served;
                }
                if req_cc.only_if_cached {
                    return only_if_cached();
                }
                let (resp, mut cs) = upstream_failure(err, fwd);
                cs.collapsed = !leader;
                (resp, cs)
            }
        }
    }

    /// Answers one client from a streaming fill: a 304 for its own matching conditional, the head
    /// alone for HEAD, else the body through a reader. `None` when a body is wanted and there is
    /// no reader (the body outgrew what the fill keeps). Not `async`: the answer is ready at
    /// once, and the rare fetch that `None` calls for stays out of every miss's future.
    fn serve_from_fill(
        &self,
        parts: &request::Parts,
        reader: Option<FillReader>,
        head: Arc<Head>,
        status: CacheStatus,
    ) -> Option<(Response<ProxyBody>, CacheStatus)> {
        let code = head.status;
        if code == StatusCode::OK
            && conditional::is_conditional(&parts.headers)
            && conditional::not_modified(
                &parts.headers,
                head.headers.get(header::ETAG).map(|v| v.as_bytes()),
                head.last_modified,
            )
        {
            return Some(self.respond(
                StatusCode::NOT_MODIFIED,
                not_modified_headers(&head.headers),
                ProxyBody::empty(),
                status,
            ));
        }
        if parts.method == Method::HEAD {
            return Some(self.respond(code, Head::into_headers(head), ProxyBody::empty(), status));
        }
        let mut reader = reader?;
        let body = match reader.complete_body() {
            Some(whole) => ProxyBody::full(whole),
            None => fill_body(reader),
        };
        Some(self.respond(code, Head::into_headers(head), body, status))
    }

    /// `stale-while-revalidate`: starts a revalidation of `entry` unless one is in flight.
    pub(super) fn revalidate_in_background(
        self: &Arc<Self>,
        parts: &request::Parts,
        target: &Target,
        peer: SocketAddr,
        key: CacheKey,
        entry: Arc<Entry>,
    ) {
        if let Join::Leader(fill) = self.inflight.join(key) {
            let me = self.clone();
            let req = Arc::new((parts.clone(), target.clone(), policy::request_cache_control(&parts.headers)));
            tokio::spawn(me.run_fill(fill, key, req, peer, Some(entry)));
        }
    }

    /// The fill itself, in its own task: the origin request, then the body pumped into the fill
    /// until it ends, then the stored entry. Runs to the end whatever the clients do.
    ///
    /// One `async fn` rather than a wrapper around an inner one: its state is moved into a box
    /// when a leader starts it, and a wrapper would hold the inner state as well and move it once
    /// more (about 2.7 KiB) at the first poll.
    async fn run_fill(
        self: Arc<Self>,
        fill: Arc<Fill>,
        key: CacheKey,
        req: Arc<FillRequest>,
        peer: SocketAddr,
        stale: Option<Arc<Entry>>,
    ) {
        // However the fill ends, even dropped, it is then no longer joinable under this key;
        // clients that joined keep their Arc and finish reading.
        let _leave = LeaveInflight { proxy: &self, key, fill: &fill };
        let fill = &fill;
        let (parts, target, req_cc) = &*req;
        let validators = stale.as_deref().filter(|e| e.has_validator());
        let req = self.origin_request(parts, target, peer, &Method::GET, UpBody::Empty, true, validators);
        let OriginResponse { parts: rp, body, request_time, response_time } = match self.ask_origin(req).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, %key, "origin request failed");
                fill.publish(Outcome::Failed(Arc::new(e)));
                return;
            }
        };

        if rp.status == StatusCode::NOT_MODIFIED {
            if let (Some(old), true) = (stale.as_ref(), validators.is_some()) {
                let canonical = target.canonical();
                let (entry, _) =
                    self.refresh(&parts.headers, key, &canonical, old, &rp.headers, request_time, response_time);
                fill.publish(Outcome::Entry(entry));
                return;
            }
        }
        let expected = super::content_length(&rp.headers);
        let (decision, fresh, resp_cc) =
            self.decide(&Method::GET, &parts.headers, req_cc, Some(key), &rp, expected, request_time, response_time);
        if let Err(reason) = decision {
            // A server error is transient: it does not make the key uncacheable.
            if remember_pass(reason) && !rp.status.is_server_error() {
                self.hit_for_pass.mark(key, response_time);
            }
            if let Some(old) = stale.as_ref().filter(|_| !rp.status.is_server_error()) {
                self.tiers.remove_variant(&key, old);
            }
            let code = rp.status;
            let response = Mutex::new(Some(Response::from_parts(rp, body)));
            fill.publish(Outcome::Pass { status: code, reason, response });
            return;
        }

        let template = self.entry_template(&parts.headers, &rp, &resp_cc, fresh);
        let last_modified = fresh.last_modified;
        let head =
            Arc::new(Head { status: rp.status, headers: rp.headers, vary: template.vary.clone(), last_modified });
        fill.publish(Outcome::Stream(head));

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
                        fill.push_last(data, max);
                        // Read the (empty) end so the origin connection goes back to the pool.
                        let _ = body.frame().await;
                        break;
                    }
                    if !fill.push(data, max).await {
                        fill.fail("abandoned: no reader left");
                        return;
                    }
                    if !pass_marked && !fill.retained() {
                        // Too large to store: later requests should not wait on this key.
                        pass_marked = true;
                        self.hit_for_pass.mark(key, response_time);
                        self.inflight.remove(&key, fill);
                    }
                }
                Err(e) => {
                    let detail = Detail::Incomplete.as_str();
                    tracing::warn!(error = %e, %key, detail, "origin body failed; nothing stored");
                    fill.fail("origin body failed");
                    return;
                }
            }
        }
        if let Some(whole) = fill.whole() {
            if expected.is_none_or(|n| n == whole.len() as u64) {
                let keep_for = now_keep(&fresh, response_time, &self.cfg);
                self.tiers.insert(key, || target.canonical(), Arc::new(template.with_body(whole)), keep_for);
            } else {
                tracing::warn!(%key, detail = Detail::Incomplete.as_str(), "origin body length mismatch; nothing stored");
            }
        }
        fill.complete();
    }
}

/// Takes a fill out of the table of fills in flight when dropped (see [`Proxy::run_fill`]).
struct LeaveInflight<'a> {
    proxy: &'a Proxy,
    key: CacheKey,
    fill: &'a Arc<Fill>,
}

impl Drop for LeaveInflight<'_> {
    fn drop(&mut self) {
        self.proxy.inflight.remove(&self.key, self.fill);
    }
}

/// What a fill asks the origin for: the request that started it, where it goes, and its
/// `Cache-Control`.
type FillRequest = (request::Parts, Target, CacheControl);

/// A leader's fill. The leader's request drives it until the outcome is known, so a small
/// response is fetched, stored and served without a task switch; whatever remains of it (a body
/// still arriving, or the whole fill when the leader's client goes away first) is handed to a
/// task of its own when this is dropped. Dropping it never cancels the fill.
struct LeaderFill(Option<Pin<Box<dyn Future<Output = ()> + Send>>>);

impl LeaderFill {
    /// The fill ran to its end in the leader's polls.
    fn ended(&self) -> bool {
        self.0.is_none()
    }

    /// Polls the fill until it has published its outcome, and returns that outcome. The fill
    /// publishes from inside these polls, so the leader looks after each one instead of waiting
    /// on the fill's notification like a waiter: a waiter's registration would have the publish
    /// wake this very task, which is already running, and poll it once more for nothing.
    async fn outcome(&mut self, fill: &Fill) -> Arc<Outcome> {
        std::future::poll_fn(|cx| {
            if let Some(job) = self.0.as_mut() {
                if job.as_mut().poll(cx).is_ready() {
                    self.0 = None;
                }
            }
            if let Some(outcome) = fill.published() {
                return Poll::Ready(outcome);
            }
            if self.ended() {
                // Every way through a fill publishes before it ends; should one not, this client
                // gets an error rather than no answer.
                let e = UpstreamError::Unreachable("the fill ended without an answer".into());
                return Poll::Ready(Arc::new(Outcome::Failed(Arc::new(e))));
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

/// Keys whose last response could not be shared, until when: their requests go straight to the
/// origin instead of queueing behind each other (hit-for-pass).
pub(super) struct HitForPass {
    until: moka::sync::Cache<CacheKey, Millis, BuildKeyHasher>,
    /// Keys marked and not yet removed, never fewer than there are: a key counts from just
    /// before its insertion until moka reports its removal (expired, replaced or evicted). At
    /// zero, the common case, a miss is answered without a lookup.
    live: Arc<AtomicUsize>,
    keep: Duration,
}

impl HitForPass {
    pub(super) fn new(keep: Duration) -> Self {
        let live = Arc::new(AtomicUsize::new(0));
        let removed = live.clone();
        let until = moka::sync::Cache::builder()
            .max_capacity(100_000)
            .time_to_live(keep.max(Duration::from_millis(1)))
            .eviction_listener(move |_, _, _| {
                removed.fetch_sub(1, Ordering::Relaxed);
            })
            .build_with_hasher(BuildKeyHasher::default());
        HitForPass { until, live, keep }
    }

    /// True when `key` was marked and its time is not over at `now`.
    pub(super) fn active(&self, key: &CacheKey, now: Millis) -> bool {
        self.live.load(Ordering::Relaxed) > 0 && self.until.get(key).is_some_and(|until| until > now)
    }

    /// Marks `key` from `now` on, for the configured time.
    pub(super) fn mark(&self, key: CacheKey, now: Millis) {
        self.live.fetch_add(1, Ordering::Relaxed);
        self.until.insert(key, now + self.keep.as_millis() as u64);
    }
}

/// Reasons that come from the response, not from this one request: worth remembering so that
/// the next requests for the key go straight to the origin instead of queueing.
fn remember_pass(reason: Detail) -> bool {
    matches!(
        reason,
        Detail::NoStore
            | Detail::Private
            | Detail::SetCookie
            | Detail::VaryStar
            | Detail::TooLarge
            | Detail::Status
            | Detail::NoFreshness
    )
}

/// A client's body read from a fill.
fn fill_body(reader: FillReader) -> ProxyBody {
    let s = stream::unfold(reader, |mut r| async move {
        let item = match r.next().await? {
            Ok(chunk) => Ok(Frame::data(chunk)),
            Err(why) => Err(BoxError::from(format!("fill failed: {why}"))),
        };
        Some((item, r))
    });
    ProxyBody::Shared(Box::pin(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hit_for_pass_counts_its_keys_and_looks_up_only_while_there_are_some() {
        let h = HitForPass::new(Duration::from_secs(10));
        let (a, b) = (CacheKey::new("http", "x", "/a"), CacheKey::new("http", "x", "/b"));
        assert!(!h.active(&a, 0));
        assert_eq!(h.live.load(Ordering::Relaxed), 0);
        h.mark(a, 1_000);
        assert!(h.active(&a, 1_000) && h.active(&a, 10_999));
        assert!(!h.active(&a, 11_000), "marked for 10 s from its response");
        assert!(!h.active(&b, 1_000));
        // Marking a key again replaces its time; it still counts once.
        h.mark(a, 5_000);
        h.until.run_pending_tasks();
        assert_eq!(h.live.load(Ordering::Relaxed), 1);
        assert!(h.active(&a, 14_999));
        h.mark(b, 5_000);
        h.until.run_pending_tasks();
        assert_eq!(h.live.load(Ordering::Relaxed), 2);
    }
}
