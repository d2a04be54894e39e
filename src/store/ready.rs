//! Response heads kept ready for the entries each thread serves most.
//!
//! A hit answers with a `HeaderMap` built from the entry's compact header block: every value is
//! checked again (`HeaderValue` demands it) and every name hashed into a new table, about 4k
//! instructions for a usual response, more than half of what this proxy adds to a hit; a 304
//! from the store selects its fields the same way. Cloning a map built once costs a fraction of
//! that. Keeping a map in every entry would double what a small object costs in memory, so only a
//! few are kept: each worker thread has a small table, indexed by the entry's address, of maps it
//! built. An occupant that keeps being served stays;
//! one that is not gives its slot to the next entry served there (a second chance, as in CLOCK),
//! so a slot shared by a hot and a cold entry stays with the hot one.
//!
//! A slot holds a `Weak` reference: an entry evicted or replaced is freed as usual (its body at
//! once), and the slot is recognised as dead. While the `Weak` lives, no other entry can take
//! the address, so an address that matches is the same, unchanged entry (entries are never
//! modified once stored). What the table holds beyond the byte budget is bounded: per thread,
//! [`SLOTS`] maps and the header blocks they share.

use std::cell::RefCell;
use std::sync::{Arc, Weak};

use http::HeaderMap;

use super::Entry;

/// Slots per thread (a power of two: the slot is the top bits of a hash).
pub const SLOTS: usize = 64;
const _: () = assert!(SLOTS.is_power_of_two());

/// Times an occupant can be passed over before it loses its slot.
const MAX_USES: u8 = 3;

/// Which head of an entry.
#[derive(Clone, Copy)]
pub enum Head {
    /// Every stored field: a 200 (or the stored status) from the store.
    Full = 0,
    /// The fields of a 304 (RFC 9110 §15.4.5).
    NotModified = 1,
}

struct Slot {
    entry: Weak<Entry>,
    maps: [Option<HeaderMap>; 2],
    uses: u8,
}

thread_local! {
    static READY: RefCell<[Option<Slot>; SLOTS]> = const { RefCell::new([const { None }; SLOTS]) };
}

/// The `head` of `entry` as a map: a copy of the one kept, or `build`'s, which is kept when
/// the slot is free for it.
pub fn header_map(entry: &Arc<Entry>, head: Head, build: impl FnOnce() -> HeaderMap) -> HeaderMap {
    let at = slot_of(entry);
    READY.with_borrow_mut(|slots| {
        let slot = &mut slots[at];
        match slot {
            Some(s) if std::ptr::eq(s.entry.as_ptr(), Arc::as_ptr(entry)) => {
                s.uses = (s.uses + 1).min(MAX_USES);
                return s.maps[head as usize].get_or_insert_with(build).clone();
            }
            Some(s) if s.uses > 0 && s.entry.strong_count() > 0 => {
                // Another entry's slot, served recently: it keeps it, one chance fewer.
                s.uses -= 1;
                return build();
            }
            _ => {}
        }
        let map = build();
        let mut maps = [None, None];
        maps[head as usize] = Some(map.clone());
        *slot = Some(Slot { entry: Arc::downgrade(entry), maps, uses: 0 });
        map
    })
}

/// The slot of an entry: its address, whose low bits are the same for every allocation of the
/// size class, multiplied out (Fibonacci hashing).
fn slot_of(entry: &Arc<Entry>) -> usize {
    let addr = Arc::as_ptr(entry) as usize as u64;
    (addr.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - SLOTS.trailing_zeros())) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn entry(etag: &'static str) -> Arc<Entry> {
        let mut h = HeaderMap::new();
        h.insert(http::header::ETAG, HeaderValue::from_static(etag));
        h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        h.append(http::header::LINK, HeaderValue::from_static("</a>; rel=preload"));
        h.append(http::header::LINK, HeaderValue::from_static("</b>; rel=preload"));
        Entry::for_tests(&h, bytes::Bytes::new(), 10)
    }

    #[test]
    fn a_kept_map_is_the_map_the_entry_builds() {
        let e = entry("\"1\"");
        let full = e.headers.to_map();
        let etag_only = e.headers.select(1, |n| n == "etag");
        for _ in 0..3 {
            assert_eq!(header_map(&e, Head::Full, || e.headers.to_map()), full);
            assert_eq!(header_map(&e, Head::NotModified, || e.headers.select(1, |n| n == "etag")), etag_only);
        }
    }

    #[test]
    fn an_entry_freed_and_another_at_its_slot_get_their_own_maps() {
        // Many entries, alive and dropped, cycle through the slots: each always gets its own.
        let mut alive = Vec::new();
        for i in 0..(4 * SLOTS) {
            let tag: &'static str = Box::leak(format!("\"{i}\"").into_boxed_str());
            let e = entry(tag);
            for _ in 0..2 {
                assert_eq!(header_map(&e, Head::Full, || e.headers.to_map()).get(http::header::ETAG).unwrap(), tag);
            }
            if i % 2 == 0 {
                alive.push((e, tag));
            }
        }
        for (e, tag) in &alive {
            assert_eq!(header_map(e, Head::Full, || e.headers.to_map()).get(http::header::ETAG).unwrap(), *tag);
        }
    }
}
