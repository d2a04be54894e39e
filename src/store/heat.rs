//! How often a stored response was used since it was stored: what makes it hot enough for
//! refresh-ahead, and the claim that lets one request, once, start its refresh.

use std::sync::atomic::{AtomicU16, Ordering};

/// Hits of one stored response, or "refresh claimed". It sits in the padding after the entry's
/// status, so the entry keeps its size; a copy (a refreshed or softened entry is a new stored
/// response) counts from zero.
#[derive(Default)]
pub struct Heat(AtomicU16);

/// The value that marks a refresh claimed: no more hits are counted.
const CLAIMED: u16 = u16::MAX;

impl Heat {
    /// Counts one hit; returns the hits counted so far (saturating below the claim mark), or
    /// `None` once a refresh was claimed.
    pub fn hit(&self) -> Option<u16> {
        let mut cur = self.0.load(Ordering::Relaxed);
        loop {
            if cur == CLAIMED {
                return None;
            }
            let next = cur.saturating_add(1).min(CLAIMED - 1);
            match self.0.compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return Some(next),
                Err(now) => cur = now,
            }
        }
    }

    /// Claims the refresh: true for exactly one caller.
    pub fn claim(&self) -> bool {
        self.0.swap(CLAIMED, Ordering::Relaxed) != CLAIMED
    }
}

impl Clone for Heat {
    fn clone(&self) -> Self {
        Heat::default()
    }
}

impl std::fmt::Debug for Heat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.load(Ordering::Relaxed) {
            CLAIMED => f.write_str("claimed"),
            n => write!(f, "{n} hits"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hits_count_until_one_claim_and_a_copy_starts_cold() {
        let h = Heat::default();
        assert_eq!((h.hit(), h.hit()), (Some(1), Some(2)));
        let copy = h.clone();
        assert_eq!((h.claim(), h.claim()), (true, false));
        assert_eq!(h.hit(), None, "hits counted after the claim");
        assert_eq!(copy.hit(), Some(1));
    }
}
