//! Pieces of a representation stored from `206` responses (RFC 9111 §3.3, §3.4).
//!
//! A URL whose representation is stored in pieces has a [`Partial`] under its key: the header
//! fields and freshness of the representation, its complete length, the strong validator that
//! keeps its pieces together, and an id. The bytes are in [`Slice`]s, one per aligned slice of
//! `slice` bytes (slice `i` holds bytes `i * slice .. (i + 1) * slice`), each under a key of its
//! own ([`CacheKey::slice`](super::key::CacheKey::slice)) in the same memory tier: they count
//! against its budget and are evicted one by one. A slice holds the runs of bytes received in
//! its span, with the id of the `Partial` they belong to; a slice of another id is a piece of
//! another representation and is never used.
//!
//! §3.4: pieces are combined only when "they all share the same strong validator". A piece
//! whose validator differs from the stored ones (or that has none) starts a new `Partial` with a
//! new id, which orphans the old pieces: they are never read again and the budget evicts them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::entry::Entry;

/// The representation a URL's pieces belong to.
#[derive(Debug)]
pub struct Partial {
    /// The representation as a complete `200` would be stored, without a body: its header
    /// fields (no `Content-Range`; `Content-Length` is the complete length) and the freshness
    /// of the latest piece.
    pub template: Entry,
    /// The complete length (the `/length` of `Content-Range`).
    pub length: u64,
    /// The strong validator the pieces share (an `ETag`, else a `Last-Modified`); `None` when
    /// the response had none, and then no other piece is ever combined with these.
    pub validator: Option<Bytes>,
    /// The slices of this representation carry this id.
    pub id: u64,
    /// The slice size the pieces are grouped by.
    pub slice: u64,
}

impl Partial {
    /// A new id, never used before in this process.
    pub fn new_id() -> u64 {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        NEXT.fetch_add(1, Ordering::Relaxed)
    }

    /// The number of slices of the representation.
    pub fn slices(&self) -> u64 {
        self.length.div_ceil(self.slice)
    }

    /// The span `start..end` (end exclusive) of slice `i`.
    pub fn span(&self, i: u64) -> (u64, u64) {
        let start = i * self.slice;
        (start, (start + self.slice).min(self.length))
    }

    /// Bytes this record takes in memory.
    pub fn weight(&self) -> usize {
        self.template.weight() + std::mem::size_of::<Self>() + self.validator.as_ref().map_or(0, Bytes::len) + 16
    }
}

/// The bytes of one slice of a representation that are stored: disjoint, sorted runs, none
/// adjacent to another (adjacent runs are joined).
#[derive(Debug, Default)]
pub struct Slice {
    /// The [`Partial::id`] these bytes belong to.
    pub id: u64,
    /// `(offset in the representation, bytes)`.
    pub runs: Vec<(u64, Bytes)>,
}

impl Slice {
    /// The bytes `start..end` (end exclusive), when one run holds all of them.
    pub fn get(&self, start: u64, end: u64) -> Option<Bytes> {
        let (at, run) = self.runs.iter().find(|(at, run)| *at <= start && end <= at + run.len() as u64)?;
        Some(run.slice((start - at) as usize..(end - at) as usize))
    }

    /// This slice with the bytes `data` at offset `at` added: runs that overlap or touch it are
    /// joined into one run in an allocation of its own (a run never keeps a connection's
    /// buffer alive). The new bytes win where they overlap old ones.
    pub fn with(&self, id: u64, at: u64, data: &[u8]) -> Slice {
        let end = at + data.len() as u64;
        let mut runs = Vec::with_capacity(self.runs.len() + 1);
        let (mut lo, mut hi) = (at, end);
        let mut joined: Vec<&(u64, Bytes)> = Vec::new();
        for run in &self.runs {
            let (r_lo, r_hi) = (run.0, run.0 + run.1.len() as u64);
            if r_hi < lo || r_lo > hi {
                runs.push(run.clone());
            } else {
                lo = lo.min(r_lo);
                hi = hi.max(r_hi);
                joined.push(run);
            }
        }
        let mut buf = BytesMut::zeroed((hi - lo) as usize);
        for (r_lo, r) in joined {
            let o = (r_lo - lo) as usize;
            buf[o..o + r.len()].copy_from_slice(r);
        }
        let o = (at - lo) as usize;
        buf[o..o + data.len()].copy_from_slice(data);
        runs.push((lo, buf.freeze()));
        runs.sort_unstable_by_key(|(at, _)| *at);
        Slice { id, runs }
    }

    /// True when the runs hold every byte of `start..end`.
    pub fn covers(&self, start: u64, end: u64) -> bool {
        start >= end || self.get(start, end).is_some()
    }

    /// Bytes this slice takes in memory.
    pub fn weight(&self) -> usize {
        std::mem::size_of::<Self>() + self.runs.iter().map(|(_, r)| r.len() + 48).sum::<usize>()
    }
}

/// A strong validator of a response (RFC 9110 §8.8.1): its `ETag` when that is not weak, else
/// its `Last-Modified` when the response's `Date` is at least a second later (§8.8.2.2). `None`
/// when it has neither.
pub fn strong_validator(etag: Option<&[u8]>, last_modified: Option<(&[u8], u64)>, date: u64) -> Option<Bytes> {
    if let Some(tag) = etag.filter(|t| !t.starts_with(b"W/")) {
        return Some(Bytes::copy_from_slice(tag));
    }
    let (value, lm) = last_modified?;
    (date >= lm.saturating_add(1000)).then(|| Bytes::copy_from_slice(value))
}

/// A piece stored into slices: the new records of each slice it touches, `(index, slice)`.
pub fn split(
    partial: &Arc<Partial>,
    at: u64,
    data: &[u8],
    old: impl Fn(u64) -> Option<Arc<Slice>>,
) -> Vec<(u64, Slice)> {
    let end = at + data.len() as u64;
    if data.is_empty() {
        return Vec::new();
    }
    let (first, last) = (at / partial.slice, (end - 1) / partial.slice);
    (first..=last)
        .map(|i| {
            let (s_lo, s_hi) = partial.span(i);
            let (lo, hi) = (at.max(s_lo), end.min(s_hi));
            let part = &data[(lo - at) as usize..(hi - at) as usize];
            let slice = match old(i).filter(|s| s.id == partial.id) {
                Some(s) => s.with(partial.id, lo, part),
                None => Slice::default().with(partial.id, lo, part),
            };
            (i, slice)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_join_when_they_touch_or_overlap() {
        let s = Slice::default().with(1, 10, b"abc");
        assert_eq!(s.get(10, 13).as_deref(), Some(&b"abc"[..]));
        assert_eq!(s.get(9, 12), None);
        let s = s.with(1, 13, b"de").with(1, 20, b"z");
        assert_eq!(s.runs.len(), 2);
        assert_eq!(s.get(11, 15).as_deref(), Some(&b"bcde"[..]));
        let s = s.with(1, 14, b"EFGHIJ");
        assert_eq!(s.runs.len(), 1, "the gap is filled: one run");
        assert_eq!(s.get(10, 21).as_deref(), Some(&b"abcdEFGHIJz"[..]));
        assert!(s.covers(10, 21) && !s.covers(9, 21));
    }

    #[test]
    fn a_piece_is_split_at_slice_boundaries() {
        let p = Arc::new(Partial {
            template: (*Entry::for_tests(&http::HeaderMap::new(), Bytes::new(), 10)).clone(),
            length: 10,
            validator: None,
            id: 7,
            slice: 4,
        });
        let parts = split(&p, 2, b"234567", |_| None);
        let runs = |s: &Slice| s.runs.iter().map(|(a, r)| (*a, r.to_vec())).collect::<Vec<_>>();
        assert_eq!(parts.len(), 2);
        assert_eq!((parts[0].0, runs(&parts[0].1)), (0, vec![(2, b"23".to_vec())]));
        assert_eq!((parts[1].0, runs(&parts[1].1)), (1, vec![(4, b"4567".to_vec())]));
        assert_eq!((p.slices(), p.span(2)), (3, (8, 10)));
    }

    #[test]
    fn only_strong_validators_keep_pieces_together() {
        assert_eq!(strong_validator(Some(b"\"a\""), None, 0).as_deref(), Some(&b"\"a\""[..]));
        assert_eq!(strong_validator(Some(b"W/\"a\""), None, 0), None);
        assert_eq!(strong_validator(None, Some((b"lm", 5_000)), 6_000).as_deref(), Some(&b"lm"[..]));
        assert_eq!(strong_validator(None, Some((b"lm", 5_000)), 5_500), None);
    }
}
