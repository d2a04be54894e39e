//! Range requests that no complete stored response answers (RFC 9111 §3.3, §3.4): answered from
//! stored pieces when they hold every byte asked for, else fetched from the origin in aligned
//! slices of `cache.slice_size` (`bytes=0-1048575`, `bytes=1048576-2097151`, ...), each stored as
//! a piece, and the client's range cut from them. A suffix range of a representation whose
//! length is not known yet is forwarded as it is, and the `206` stored as a piece.
//!
//! Pieces of one representation are kept together by its strong validator (see
//! [`pieces`](crate::store::pieces)): the slices fetched after the first carry it in `If-Range`,
//! so a representation that changed meanwhile comes back as a `200`, and the body being sent is
//! cut off (its head is already out) rather than mixed with another representation's bytes. When
//! the pieces add up to the whole representation (within `max_object_size`), they are combined
//! into one complete stored response.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, StatusCode};
use http_body_util::BodyExt;

use super::body::ProxyBody;
use super::origin::{Ask, OriginResponse};
use super::request::Ctx;
use super::respond::{not_modified_headers, only_if_cached, upstream_failure, Answer};
use super::Proxy;
use crate::clock::Millis;
use crate::http::conditional;
use crate::http::policy::{self, Usable};
use crate::http::range::{self, RangeAnswer, Spec};
use crate::status::{CacheStatus, Fwd, NotStored};
use crate::store::headers::StoredHeaders;

use crate::store::pieces::{self, Partial};
use crate::store::purge::{Seq, Stamp, Verdict};
use crate::store::{tags, CacheKey, Entry};
use crate::upstream::body::{BoxError, IdleBody, OriginBody, UpBody};
use crate::upstream::UpstreamError;

/// What the origin answered to a slice request.
enum Fetched {
    /// The slice (or the piece the origin sent instead), and the representation it belongs to.
    Piece { partial: Arc<Partial>, at: u64, bytes: Bytes },
    /// Anything else (a `200`, a `416`, an error status): passed to the client as it is.
    Other(http::response::Parts, crate::upstream::OriginIncoming),
    /// A `206` whose body is not the length its `Content-Range` says: not stored, passed to the
    /// client as it came (read whole already).
    Unusable(http::response::Parts, Bytes),
    /// No usable answer.
    Failed(UpstreamError),
}

impl Proxy {
    /// A GET with a `Range` that no usable complete stored response answers.
    pub(super) async fn ranged(self: &Arc<Self>, ctx: Ctx) -> Answer {
        let now = self.clock.now_millis();
        let h = &ctx.parts.headers;
        let Some(spec) = h.get(header::RANGE).and_then(|r| r.to_str().ok()).and_then(range::spec) else {
            // Several ranges, another unit, or no valid range: the origin decides.
            return self.pass_range(ctx).await;
        };
        let partial = self
            .tiers
            .memory()
            .partial(&ctx.key, now)
            .filter(|p| self.not_purged(&ctx, p))
            .filter(|p| matches!(p.template.freshness.usable(&ctx.cc, now), Usable::Fresh | Usable::Stale));
        if let Some(p) = &partial {
            let etag = p.template.headers.get_bytes(&header::ETAG).and_then(|e| std::str::from_utf8(e).ok());
            if !range::if_range_matches(h, etag, || strong_last_modified(p), now) {
                // The client wants the whole representation when its copy is outdated.
                return self.pass_range(ctx).await;
            }
            let ttl = p.template.freshness.ttl_ms(now).div_euclid(1000);
            if let Some(answer) = self.answer_from_pieces(&ctx, p, spec, CacheStatus::hit(ttl), now) {
                return answer;
            }
        }
        if ctx.cc.only_if_cached {
            return only_if_cached();
        }
        if h.contains_key(header::IF_RANGE) || self.hit_for_pass.active(&ctx.key, now) {
            // Only the origin knows whether the client's copy is current: a 200 or a 206 of its
            // choosing goes back as it is. A URL whose responses may not be stored is not
            // fetched in slices either: the origin would send a slice for nothing.
            return self.pass_range(ctx).await;
        }
        match (spec, partial) {
            (spec, Some(p)) if p.validator.is_some() => match spec.resolve(p.length) {
                RangeAnswer::Partial { start, end } => self.sliced(ctx, Some(p), start, Some(end)).await,
                RangeAnswer::Unsatisfiable | RangeAnswer::Full => self.forward_piece(ctx).await,
            },
            (Spec::From(start, end), None) => self.sliced(ctx, None, start, end).await,
            // The length is not known (a suffix), or the stored piece cannot be combined with
            // another (no strong validator): the range goes to the origin as asked.
            _ => self.forward_piece(ctx).await,
        }
    }

    /// The answer from the pieces stored for `p`, when they hold every byte `spec` selects (or
    /// the client's conditional makes it a 304, or the range is unsatisfiable).
    fn answer_from_pieces(
        &self,
        ctx: &Ctx,
        p: &Arc<Partial>,
        spec: Spec,
        status: CacheStatus,
        now: Millis,
    ) -> Option<Answer> {
        let t = &p.template;
        let mut headers = t.headers.to_map_with_capacity(4);
        headers.insert(header::AGE, HeaderValue::from(t.freshness.age_secs(now)));
        let etag = t.headers.get_bytes(&header::ETAG);
        if conditional::answer_not_modified(&ctx.parts.headers, t.status, etag, t.freshness.last_modified, now) {
            let headers = not_modified_headers(&headers);
            return Some(self.respond(StatusCode::NOT_MODIFIED, headers, ProxyBody::empty(), status));
        }
        let (start, end) = match spec.resolve(p.length) {
            RangeAnswer::Partial { start, end } => (start, end + 1),
            RangeAnswer::Unsatisfiable | RangeAnswer::Full => {
                headers.insert(header::CONTENT_RANGE, content_range_unsatisfied(p.length));
                headers.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
                return Some(self.respond(StatusCode::RANGE_NOT_SATISFIABLE, headers, ProxyBody::empty(), status));
            }
        };
        let pieces = self.stored(&ctx.key, p, start, end, now)?;
        set_range(&mut headers, start, end, p.length);
        Some(self.respond(StatusCode::PARTIAL_CONTENT, headers, ProxyBody::Pieces(pieces), status))
    }

    /// The stored bytes `start..end` of `p` (the pieces of the URL `key`), a piece per slice,
    /// when every one is stored.
    fn stored(&self, key: &CacheKey, p: &Partial, start: u64, end: u64, now: Millis) -> Option<VecDeque<Bytes>> {
        let memory = self.tiers.memory();
        let mut out = VecDeque::with_capacity(1);
        for i in start / p.slice..=(end - 1) / p.slice {
            let (lo, hi) = p.span(i);
            let slice = memory.slice(&key.slice(i), now).filter(|s| s.id == p.id)?;
            out.push_back(slice.get(start.max(lo), end.min(hi))?);
        }
        Some(out)
    }

    /// Fetches the client's range `start..=end` (`end` absent: to the end) slice by slice: the
    /// first slice before the head is sent, the others as the body gets to them. `known` is the
    /// stored representation, when its length and validator are known.
    async fn sliced(self: &Arc<Self>, ctx: Ctx, known: Option<Arc<Partial>>, start: u64, end: Option<u64>) -> Answer {
        let now = self.clock.now_millis();
        let slice = known.as_ref().map_or(self.cfg.cache.slice_bytes, |p| p.slice);
        let first = start / slice;
        let stored_first = known.as_ref().and_then(|p| {
            let (lo, hi) = p.span(first);
            let s = self.tiers.memory().slice(&ctx.key.slice(first), now).filter(|s| s.id == p.id)?;
            Some((p.clone(), lo, s.get(lo, hi)?))
        });
        let mut status = CacheStatus::forward(if known.is_some() { Fwd::Partial } else { Fwd::UriMiss });
        status.fwd_status = Some(206);
        let (p, at, bytes) = match stored_first {
            Some(found) => found,
            None => match self.fetch_slice(&ctx, first, slice, known.as_ref()).await {
                Fetched::Piece { partial, at, bytes } => (partial, at, bytes),
                Fetched::Other(rp, body) => {
                    if known.is_some() && rp.status == StatusCode::OK {
                        // If-Range did not match: the stored pieces are of an older representation.
                        self.tiers.memory().invalidate(&ctx.key);
                    }
                    status.fwd_status = Some(rp.status.as_u16());
                    status.detail = Some(NotStored::Partial.into());
                    let body = ProxyBody::Origin(Box::new(OriginBody::new(body, self.cfg.timeouts.idle)));
                    return self.respond(rp.status, rp.headers, body, status);
                }
                Fetched::Unusable(rp, bytes) => {
                    status.detail = Some(NotStored::Incomplete.into());
                    return self.respond(rp.status, rp.headers, ProxyBody::full(bytes), status);
                }
                Fetched::Failed(e) => {
                    tracing::warn!(error = %e, key = %ctx.key, path = %ctx.target.path_and_query, "origin slice request failed");
                    return upstream_failure(&e, Fwd::UriMiss);
                }
            },
        };
        let end = end.unwrap_or(u64::MAX).min(p.length.saturating_sub(1)) + 1;
        let t = &p.template;
        let mut headers = t.headers.to_map_with_capacity(3);
        if start >= p.length {
            headers.insert(header::CONTENT_RANGE, content_range_unsatisfied(p.length));
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
            return self.respond(StatusCode::RANGE_NOT_SATISFIABLE, headers, ProxyBody::empty(), status);
        }
        let etag = t.headers.get_bytes(&header::ETAG);
        if conditional::answer_not_modified(&ctx.parts.headers, t.status, etag, t.freshness.last_modified, now) {
            let headers = not_modified_headers(&headers);
            return self.respond(StatusCode::NOT_MODIFIED, headers, ProxyBody::empty(), status);
        }
        let first_end = at + bytes.len() as u64;
        if start < at || (end > first_end && first_end < p.span(first).1) {
            // The origin sent another piece than the slice asked for: what it sent goes to the
            // client as its answer (it says which bytes it holds).
            let mut headers = t.headers.to_map_with_capacity(2);
            set_range(&mut headers, at, first_end, p.length);
            return self.respond(StatusCode::PARTIAL_CONTENT, headers, ProxyBody::full(bytes), status);
        }
        set_range(&mut headers, start, end, p.length);
        let head_part = bytes.slice((start - at) as usize..(end.min(first_end) - at) as usize);
        if end <= first_end {
            return self.respond(StatusCode::PARTIAL_CONTENT, headers, ProxyBody::full(head_part), status);
        }
        // The rest, slice by slice, as the client reads.
        let proxy = self.clone();
        let ctx = Arc::new(ctx);
        let rest = futures_util::stream::unfold(Some((first + 1, p.clone())), move |state| {
            let (proxy, ctx) = (proxy.clone(), ctx.clone());
            async move {
                let (i, p) = state?;
                let (lo, hi) = p.span(i);
                if lo >= end {
                    return None;
                }
                let now = proxy.clock.now_millis();
                let stored = proxy.tiers.memory().slice(&ctx.key.slice(i), now).filter(|s| s.id == p.id);
                let bytes = match stored.and_then(|s| s.get(lo, hi)) {
                    Some(b) => b,
                    None => match proxy.fetch_slice(&ctx, i, p.slice, Some(&p)).await {
                        Fetched::Piece { partial, at, bytes }
                            if partial.id == p.id && at == lo && at + bytes.len() as u64 == hi =>
                        {
                            bytes
                        }
                        _ => {
                            proxy.tiers.memory().invalidate(&ctx.key);
                            tracing::warn!(key = %ctx.key, path = %ctx.target.path_and_query, slice = i, "slice not available as the same representation; response cut off");
                            let e: BoxError = "a slice of the representation could not be fetched".into();
                            return Some((Err(e), None));
                        }
                    },
                };
                let part = bytes.slice(..(end.min(hi) - lo) as usize);
                Some((Ok(part), Some((i + 1, p))))
            }
        });
        let body = futures_util::stream::once(async move { Ok::<_, BoxError>(head_part) }).chain(rest);
        use futures_util::StreamExt;
        self.respond(StatusCode::PARTIAL_CONTENT, headers, ProxyBody::Slices(Box::pin(body), end - start), status)
    }

    /// Checks the stored pieces `p` against the generation purges (host, prefix, everything)
    /// recorded since they were checked. A purged representation's record is removed, hard or
    /// soft alike (a stale piece cannot be revalidated on its own), and its slices with it: they
    /// are only reached through it.
    fn not_purged(&self, ctx: &Ctx, p: &Partial) -> bool {
        if !self.purges.unchecked(&p.template.checked) {
            return true;
        }
        let seq = self.purges.seq();
        let path = ctx.target.path_and_query.as_str();
        match self.purges.at_lookup(&ctx.target.host, path, p.template.checked.get()) {
            Verdict::Keep => {
                p.template.checked.set(seq);
                true
            }
            Verdict::Hard | Verdict::Soft(_) => {
                self.tiers.memory().invalidate(&ctx.key);
                false
            }
        }
    }

    /// Asks the origin for slice `i` (`slice` bytes from `i * slice`), with the strong
    /// validator of `known` in `If-Range`, and stores the `206` as a piece.
    async fn fetch_slice(&self, ctx: &Ctx, i: u64, slice: u64, known: Option<&Arc<Partial>>) -> Fetched {
        let lo = i * slice;
        let hi = known.map_or(lo + slice, |p| p.span(i).1);
        let mut req = self.origin_request(ctx.asker(), &Method::GET, UpBody::Empty, Ask::Full);
        // The piece is stamped with the purges before the origin was asked (see `fetch`).
        let stamp = self.purges.seq();
        let h = req.headers_mut();
        h.insert(header::RANGE, HeaderValue::from_str(&format!("bytes={lo}-{}", hi - 1)).expect("ascii"));
        h.remove(header::IF_RANGE);
        if let Some(v) = known.and_then(|p| p.validator.as_ref()).and_then(|v| HeaderValue::from_bytes(v).ok()) {
            h.insert(header::IF_RANGE, v);
        }
        let resp = match self.ask_origin(ctx.route, &ctx.key, req).await {
            Ok(r) => r,
            Err(e) => return Fetched::Failed(e),
        };
        self.take_piece(ctx, resp, stamp).await
    }

    /// Reads a `206` from the origin and stores it as a piece, stamped `stamp`; anything else
    /// is handed back.
    async fn take_piece(&self, ctx: &Ctx, resp: OriginResponse, stamp: Seq) -> Fetched {
        let OriginResponse { parts: rp, body, request_time, response_time, .. } = resp;
        let range = rp.headers.get(header::CONTENT_RANGE).and_then(|v| content_range(v.as_bytes()));
        let (Some((at, last, length)), StatusCode::PARTIAL_CONTENT) = (range, rp.status) else {
            return Fetched::Other(rp, body);
        };
        let want = last - at + 1;
        if want > self.cfg.cache.max_object_bytes {
            return Fetched::Other(rp, body);
        }
        let mut body = IdleBody::new(body, self.cfg.timeouts.idle);
        let mut buf = BytesMut::with_capacity(want as usize);
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(frame) => {
                    if let Ok(data) = frame.into_data() {
                        buf.extend_from_slice(&data);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, key = %ctx.key, "origin slice body failed");
                    return Fetched::Failed(UpstreamError::Invalid("slice body failed"));
                }
            }
            if buf.len() as u64 > want {
                break;
            }
        }
        if buf.len() as u64 != want {
            tracing::warn!(key = %ctx.key, detail = NotStored::Incomplete.as_str(), "206 body length differs from its Content-Range; not stored");
            return Fetched::Unusable(rp, buf.freeze());
        }
        let bytes = buf.freeze();
        let partial = self.store_piece(ctx, &rp.headers, (at, length), &bytes, (request_time, response_time), stamp);
        Fetched::Piece { partial, at, bytes }
    }

    /// Stores the piece `bytes` at `at` of a representation of `length` bytes whose `206` had
    /// `headers`, when it may be stored (§3.3: as an incomplete 200). Returns the representation
    /// record the piece belongs to (a new one, not stored, when the piece may not be).
    fn store_piece(
        &self,
        ctx: &Ctx,
        headers: &HeaderMap,
        (at, length): (u64, u64),
        bytes: &Bytes,
        (request_time, response_time): (Millis, Millis),
        stamp: Seq,
    ) -> Arc<Partial> {
        let key = ctx.key;
        let cc = policy::response_cache_control(headers, &self.opts);
        let fresh = policy::freshness(StatusCode::OK, headers, &cc, request_time, response_time, &self.opts);
        let mut whole = headers.clone();
        whole.remove(header::CONTENT_RANGE);
        whole.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
        let named =
            |n: &str| cc.no_cache_fields.iter().chain(cc.private_fields.iter()).any(|f| f.eq_ignore_ascii_case(n));
        let template = Entry {
            status: StatusCode::OK,
            headers: StoredHeaders::from_map_where(&whole, |n| *n != header::AGE && !named(n.as_str())),
            body: Bytes::new(),
            vary: Box::new([]),
            freshness: fresh,
            checked: Stamp::new(stamp),
            heat: Default::default(),
        };
        let date = fresh.times.date;
        let lm = headers
            .get(header::LAST_MODIFIED)
            .and_then(|v| Some((v.as_bytes(), policy::header_date(headers, header::LAST_MODIFIED, response_time)?)));
        let validator = pieces::strong_validator(headers.get(header::ETAG).map(|v| v.as_bytes()), lm, date);
        let memory = self.tiers.memory();
        let now = self.clock.now_millis();
        let old = memory.partial(&key, now);
        let same = old.filter(|o| o.length == length && o.validator.is_some() && o.validator == validator);
        let partial = Arc::new(Partial {
            template,
            length,
            validator,
            id: same.as_ref().map_or_else(Partial::new_id, |o| o.id),
            slice: same.as_ref().map_or(self.cfg.cache.slice_bytes, |o| o.slice),
        });
        let req = policy::Req { method: &Method::GET, headers: &ctx.parts.headers, cc: &ctx.cc };
        let resp = policy::Resp { status: StatusCode::PARTIAL_CONTENT, headers, cc: &cc };
        let mut decision = policy::storable_piece(&req, &resp, &self.opts);
        if decision.is_ok() && headers.contains_key(header::VARY) {
            decision = Err(NotStored::Partial);
        }
        let has_validator = policy::has_validator(headers, response_time);
        if decision.is_ok() && fresh.lifetime == 0 && !fresh.no_cache && !has_validator {
            decision = Err(NotStored::NoFreshness);
        }
        if let Err(reason) = decision {
            if reason.from_response() {
                self.hit_for_pass.mark(key, response_time);
            }
            return partial;
        }
        let keep_for = self.tiers.memory_keep_for(&fresh, response_time);
        let parts = pieces::split(&partial, at, bytes, |i| memory.slice(&key.slice(i), now));
        for (i, s) in parts {
            memory.put_slice(key.slice(i), Arc::new(s), keep_for);
        }
        memory.put_partial(key, partial.clone(), keep_for);
        // A URL or tag purge recorded while the piece was fetched applies to it (see
        // `after_store`): the record goes, and with it every piece.
        if self.purges.seq() != stamp
            && !matches!(self.purges.after_store(&key, &tags::of(&partial.template.headers), stamp), Verdict::Keep)
        {
            memory.invalidate(&key);
            return partial;
        }
        self.combine(ctx, &partial, now);
        partial
    }

    /// §3.4: when the pieces of `p` hold the whole representation (and it is within
    /// `max_object_size`), they become one complete stored response.
    fn combine(&self, ctx: &Ctx, p: &Arc<Partial>, now: Millis) {
        if p.length > self.cfg.cache.max_object_bytes {
            return;
        }
        let Some(pieces) =
            (if p.length == 0 { Some(VecDeque::new()) } else { self.stored(&ctx.key, p, 0, p.length, now) })
        else {
            return;
        };
        let mut body = BytesMut::with_capacity(p.length as usize);
        for piece in &pieces {
            body.extend_from_slice(piece);
        }
        let entry = Arc::new(p.template.clone().with_body(body.freeze()));
        self.tiers.insert(ctx.key, || ctx.target.canonical(), entry, now);
        let memory = self.tiers.memory();
        for i in 0..p.slices() {
            memory.invalidate(&ctx.key.slice(i));
        }
    }

    /// Forwards the request as it is; a `206` answer is stored as a piece on its way.
    async fn forward_piece(&self, ctx: Ctx) -> Answer {
        let req = self.origin_request(ctx.asker(), &Method::GET, UpBody::Empty, Ask::Full);
        let stamp = self.purges.seq();
        let mut status = CacheStatus::forward(Fwd::UriMiss);
        let resp = match self.ask_origin(ctx.route, &ctx.key, req).await {
            Ok(r) => r,
            Err(e) => return upstream_failure(&e, Fwd::UriMiss),
        };
        let headers = resp.parts.headers.clone();
        status.fwd_status = Some(resp.parts.status.as_u16());
        match self.take_piece(&ctx, resp, stamp).await {
            Fetched::Piece { bytes, .. } => {
                self.respond(StatusCode::PARTIAL_CONTENT, headers, ProxyBody::full(bytes), status)
            }
            Fetched::Other(rp, body) => {
                status.detail = Some(NotStored::Partial.into());
                let body = ProxyBody::Origin(Box::new(OriginBody::new(body, self.cfg.timeouts.idle)));
                self.respond(rp.status, rp.headers, body, status)
            }
            Fetched::Unusable(rp, bytes) => {
                status.detail = Some(NotStored::Incomplete.into());
                self.respond(rp.status, rp.headers, ProxyBody::full(bytes), status)
            }
            Fetched::Failed(e) => upstream_failure(&e, Fwd::UriMiss),
        }
    }

    /// A range request passed through as it is, nothing stored.
    async fn pass_range(&self, ctx: Ctx) -> Answer {
        if ctx.cc.only_if_cached {
            return only_if_cached();
        }
        Box::pin(self.pass(ctx.parts, None, ctx.target, ctx.peer, ctx.route, NotStored::Partial)).await
    }
}

/// `Content-Range: bytes start-(end-1)/length` and the matching `Content-Length`.
fn set_range(headers: &mut HeaderMap, start: u64, end: u64, length: u64) {
    let cr = format!("bytes {start}-{}/{length}", end - 1);
    headers.insert(header::CONTENT_RANGE, HeaderValue::from_str(&cr).expect("ascii"));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start));
}

/// `Content-Range: bytes */length` (RFC 9110 §14.4, for a 416).
fn content_range_unsatisfied(length: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("bytes */{length}")).expect("ascii")
}

/// A `Content-Range` of a single part (RFC 9110 §14.4): `bytes first-last/length`, with the
/// complete length known. `None` for anything else.
fn content_range(v: &[u8]) -> Option<(u64, u64, u64)> {
    let v = std::str::from_utf8(v).ok()?.trim();
    let (range, length) = v.strip_prefix("bytes ")?.trim().split_once('/')?;
    let (first, last) = range.split_once('-')?;
    let num =
        |s: &str| (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse::<u64>().ok()).flatten();
    let (first, last, length) = (num(first)?, num(last)?, num(length)?);
    (first <= last && last < length).then_some((first, last, length))
}

/// The stored `Last-Modified` of a pieces record, when it is a strong validator.
fn strong_last_modified(p: &Partial) -> Option<Millis> {
    let received = p.template.freshness.times.response_time;
    let lm = crate::clock::http_date(p.template.headers.get(&header::LAST_MODIFIED)?.as_bytes(), received)?;
    (p.template.freshness.times.date >= lm.saturating_add(1000)).then_some(lm)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges() {
        assert_eq!(content_range(b"bytes 4-9/10"), Some((4, 9, 10)));
        assert_eq!(content_range(b"bytes 0-0/1"), Some((0, 0, 1)));
        for bad in [&b"bytes 4-9/*"[..], b"bytes */10", b"bytes 9-4/10", b"bytes 4-10/10", b"items 0-1/2", b"bytes 0-1"]
        {
            assert_eq!(content_range(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
