//! Surrogate keys (tags): what the origin puts on its responses to purge them by name later, and
//! the memory tier's index from each tag to the URLs whose stored variants carry it.
//!
//! A response is tagged by `Surrogate-Key` (Fastly, Varnish), `Cache-Tag` (Cloudflare) or `xkey`
//! (Varnish's module): space- or comma-separated tags, each matched exactly, never as a pattern.
//! The fields are stored with the response (so a node that reads it from the shared tier knows its
//! tags) and stripped from what clients get unless `purge.forward_tag_fields` is set.
//!
//! The index holds, per tag, the keys of the URLs carrying it and how many stored values (moka
//! values: a URL's variant list) reference the pair. It is kept exact by counting: every value
//! stored adds its pairs, every value that leaves the memory tier (replaced, removed, evicted,
//! refused admission) takes them away, through moka's removal listener. Its bytes are counted in
//! each stored value's weight ([`INDEX_BYTES_PER_TAG`]), so the byte budget covers it.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Mutex;

use http::HeaderName;

use super::headers::StoredHeaders;
use super::key::{BuildKeyHasher, CacheKey};

/// The response fields that carry tags.
pub static TAG_FIELDS: [HeaderName; 3] =
    [HeaderName::from_static("surrogate-key"), HeaderName::from_static("cache-tag"), HeaderName::from_static("xkey")];

/// Longest tag indexed; a longer one is ignored (Fastly's limit is 1 KiB).
pub const MAX_TAG_BYTES: usize = 1024;

/// Most tags indexed per response; the ones after it are ignored.
pub const MAX_TAGS: usize = 256;

/// Bytes of index one tag of one stored variant costs, counted in the value's weight: the key and
/// its count in the tag's map (36 bytes, in a table at most 7/8 full and at least 7/16 full after
/// it grows, plus a control byte), and a share of the tag's own map.
pub const INDEX_BYTES_PER_TAG: usize = 96;

/// A tag as indexed: a 64-bit keyed hash of its bytes (SipHash with a per-process secret key, so
/// no origin can pick tags that collide on purpose).
pub type TagId = u64;

/// The id of `tag`.
pub fn id(tag: &[u8]) -> TagId {
    static KEYS: std::sync::OnceLock<std::collections::hash_map::RandomState> = std::sync::OnceLock::new();
    KEYS.get_or_init(Default::default).hash_one(tag)
}

/// Whether `tag` can be a tag: 1 to [`MAX_TAG_BYTES`] visible ASCII bytes, no comma.
pub fn valid(tag: &str) -> bool {
    !tag.is_empty() && tag.len() <= MAX_TAG_BYTES && tag.bytes().all(|b| b.is_ascii_graphic() && b != b',')
}

/// The tags of a stored response, as ids (at most [`MAX_TAGS`]; duplicates kept once).
pub fn of(headers: &StoredHeaders) -> Vec<TagId> {
    let mut out = Vec::new();
    // Every tag field has a name of its own: a block of common names only carries none.
    if headers.all_known() {
        return out;
    }
    for (name, value) in headers.iter() {
        if !TAG_FIELDS.iter().any(|f| f.as_str() == name) {
            continue;
        }
        for tag in value.split(|&b| b == b' ' || b == b',' || b == b'\t') {
            if tag.is_empty() || tag.len() > MAX_TAG_BYTES {
                continue;
            }
            if out.len() == MAX_TAGS {
                return out;
            }
            let t = id(tag);
            if !out.contains(&t) {
                out.push(t);
            }
        }
    }
    out
}

/// Shards of the index: a purge of one tag and stores of others do not wait for each other.
const SHARDS: usize = 64;

type Keys = HashMap<CacheKey, u32, BuildKeyHasher>;

/// Tag → keys of the URLs whose stored variants carry it.
pub struct TagIndex {
    shards: Box<[Mutex<HashMap<TagId, Keys>>]>,
}

impl Default for TagIndex {
    fn default() -> Self {
        TagIndex { shards: (0..SHARDS).map(|_| Mutex::default()).collect() }
    }
}

impl TagIndex {
    fn shard(&self, tag: TagId) -> std::sync::MutexGuard<'_, HashMap<TagId, Keys>> {
        self.shards[(tag >> 58) as usize % SHARDS].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One more stored value of `key` carries each of `tags`.
    pub fn add(&self, key: &CacheKey, tags: &[TagId]) {
        for &t in tags {
            *self.shard(t).entry(t).or_default().entry(*key).or_insert(0) += 1;
        }
    }

    /// One stored value of `key` carrying each of `tags` has left.
    pub fn remove(&self, key: &CacheKey, tags: &[TagId]) {
        for &t in tags {
            let mut shard = self.shard(t);
            let Some(keys) = shard.get_mut(&t) else { continue };
            if let Some(n) = keys.get_mut(key) {
                *n -= 1;
                if *n == 0 {
                    keys.remove(key);
                }
            }
            if keys.is_empty() {
                shard.remove(&t);
            } else if keys.capacity() > 64 && keys.len() < keys.capacity() / 4 {
                keys.shrink_to_fit();
            }
        }
    }

    /// The keys carrying `tag` now (a copy: the lock is not held while they are purged).
    pub fn keys(&self, tag: TagId) -> Vec<CacheKey> {
        self.shard(tag).get(&tag).map(|k| k.keys().copied().collect()).unwrap_or_default()
    }

    /// Number of (tag, key) pairs indexed.
    pub fn pairs(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).values().map(HashMap::len).sum::<usize>())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::headers;

    #[test]
    fn tags_are_read_from_every_tag_field_split_on_spaces_and_commas() {
        let h = StoredHeaders::from_map(&headers(&[
            ("surrogate-key", "a b"),
            ("cache-tag", "c,d, e"),
            ("xkey", "a"),
            ("content-type", "text/plain"),
        ]));
        let want: Vec<TagId> = ["a", "b", "c", "d", "e"].iter().map(|t| id(t.as_bytes())).collect();
        assert_eq!(of(&h), want);
        assert_eq!(of(&StoredHeaders::from_map(&headers(&[("content-type", "x")]))), Vec::<TagId>::new());
        // Exact: a tag is never a prefix or pattern of another.
        assert_ne!(id(b"product"), id(b"product-1"));
    }

    #[test]
    fn a_pair_stays_while_any_value_references_it() {
        let index = TagIndex::default();
        let (k, t) = (CacheKey::new("http", "h", "/a"), id(b"t"));
        index.add(&k, &[t]);
        index.add(&k, &[t]);
        index.remove(&k, &[t]);
        assert_eq!(index.keys(t), vec![k]);
        index.remove(&k, &[t]);
        assert_eq!(index.keys(t), Vec::<CacheKey>::new());
        assert_eq!(index.pairs(), 0);
    }
}
