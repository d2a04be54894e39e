//! The cache key: a canonical, length-prefixed encoding of exactly what is forwarded
//! (scheme, normalized host, path, query), digested with SHA-256.
//!
//! Length prefixes make the encoding unambiguous: `("a/b", "c")` and `("a", "/bc")` can never
//! produce the same bytes. The digest is the same on every machine, so it can name objects in a
//! shared store.

use std::borrow::Cow;
use std::fmt;

use sha2::{Digest, Sha256};

/// Version of the key encoding; bump it when the encoding changes.
const KEY_VERSION: &[u8] = b"edgecache-key-v1";

/// The primary cache key of a URL (RFC 9111 §2): its SHA-256 digest.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct CacheKey([u8; 32]);

/// The key is already a uniformly distributed digest: its first 8 bytes are its hash, for
/// [`KeyHasher`].
impl std::hash::Hash for CacheKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let mut first = [0u8; 8];
        first.copy_from_slice(&self.0[..8]);
        state.write_u64(u64::from_le_bytes(first));
    }
}

/// A hasher for maps keyed by [`CacheKey`]: the digest needs no second hashing (SipHash cost a
/// noticeable share of every lookup). Keys come from client-chosen URLs, so the digest is mixed
/// with a per-process secret: nobody outside can tell which keys share a bucket.
#[derive(Default, Clone, Copy)]
pub struct KeyHasher(u64);

/// The hashing seed, random per process.
fn seed() -> u64 {
    static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *SEED.get_or_init(|| {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u8(1);
        h.finish()
    })
}

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Not reached for CacheKey (it writes one u64); mix anything else in simply.
        for &b in bytes {
            self.0 = self.0.rotate_left(5) ^ u64::from(b);
            self.0 = self.0.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, n: u64) {
        // The secret seed, then MurmurHash3's 64-bit finalizer: every output bit depends on every
        // input bit, so keys that share some digest bits do not share a bucket.
        let mut x = n ^ seed();
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^= x >> 33;
        x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        x ^= x >> 33;
        self.0 ^= x;
    }
}

/// Builds [`KeyHasher`]s.
pub type BuildKeyHasher = std::hash::BuildHasherDefault<KeyHasher>;

impl CacheKey {
    /// Key for `scheme://host` + `path_and_query`, all exactly as forwarded. `host` must already be
    /// normalized (see [`normalize_host`]).
    pub fn new(scheme: &str, host: &str, path_and_query: &str) -> Self {
        CacheKey(url_digest(None, scheme, host, path_and_query).finalize().into())
    }

    /// [`CacheKey::new`] under a site's cache-key version (`cache.key_version`, `[[site]]
    /// key_version`): no key of one version is a key of another, or of no version.
    pub fn versioned(version: &KeyVersion, scheme: &str, host: &str, path_and_query: &str) -> Self {
        CacheKey(url_digest(Some(version), scheme, host, path_and_query).finalize().into())
    }

    /// [`CacheKey::new`] with one more part a site's key rule adds: the value of the request
    /// field or cookie `name` (`None`: the request has none). The same value under two names, and
    /// an absent value, each make another key; a key without the part is never equal to one with.
    pub fn with_extra(
        version: Option<&KeyVersion>,
        scheme: &str,
        host: &str,
        path_and_query: &str,
        name: &str,
        value: Option<&[u8]>,
    ) -> Self {
        let mut h = url_digest(version, scheme, host, path_and_query);
        h.update(b"+");
        frame_part(&mut h, name.as_bytes());
        frame_optional(&mut h, value);
        CacheKey(h.finalize().into())
    }

    /// The key under which slice `index` of this URL's stored pieces is kept (see
    /// [`pieces`](super::pieces)): a digest of this key and the index.
    pub fn slice(&self, index: u64) -> CacheKey {
        let mut h = Sha256::new();
        h.update(KEY_VERSION);
        h.update(b"slice");
        h.update(self.0);
        h.update(index.to_be_bytes());
        CacheKey(h.finalize().into())
    }

    /// The raw digest.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The first 8 bytes of the digest in hex: enough to tell keys apart in logs.
    pub fn short(&self) -> impl fmt::Display {
        hex::encode(&self.0[..8])
    }

    /// Parses the hex form written by `Display`.
    pub fn from_hex(s: &str) -> Option<CacheKey> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(CacheKey(out))
    }
}

/// A site's cache-key version, as it enters a key: 16 bytes derived from the configured text,
/// which take the place of the format version [`KEY_VERSION`] at the start of every key's
/// digest. A versioned key digests as many bytes as an unversioned one, so it costs nothing
/// more to make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyVersion([u8; 16]);

impl KeyVersion {
    /// The version `text` (`cache.key_version`, `[[site]] key_version`) stands for: the first 16
    /// bytes of a digest of the format version and the text, the same on every node.
    pub fn new(text: &str) -> KeyVersion {
        let mut h = Sha256::new();
        h.update(KEY_VERSION);
        h.update(b"key_version");
        frame_part(&mut h, text.as_bytes());
        let d = h.finalize();
        let mut out = [0u8; 16];
        out.copy_from_slice(&d[..16]);
        KeyVersion(out)
    }
}

/// The digest of a URL's parts so far: the format version (or the site's cache-key version in
/// its place), scheme, host, path and query. Inlined into every key (a call of its own cost a hit
/// about 35 instructions).
#[inline(always)]
fn url_digest(version: Option<&KeyVersion>, scheme: &str, host: &str, path_and_query: &str) -> Sha256 {
    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_and_query, None),
    };
    let mut h = Sha256::new();
    h.update(version.map_or(KEY_VERSION, |v| &v.0[..]));
    for part in [scheme, host, path] {
        frame_part(&mut h, part.as_bytes());
    }
    // "/p" and "/p?" are different URLs: the query's presence is part of the key.
    frame_optional(&mut h, query.map(str::as_bytes));
    h
}

/// Feeds `part` to a digest with its length first: no two sequences of parts make the same
/// bytes (`("a/b", "c")` and `("a", "/bc")` differ).
#[inline]
pub fn frame_part(h: &mut Sha256, part: &[u8]) {
    h.update((part.len() as u32).to_be_bytes());
    h.update(part);
}

/// [`frame_part`] for a part that may be absent: absent and empty differ.
#[inline]
pub fn frame_optional(h: &mut Sha256, part: Option<&[u8]>) {
    match part {
        Some(p) => {
            h.update([1]);
            frame_part(h, p);
        }
        None => h.update([0]),
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CacheKey({})", hex::encode(&self.0[..8]))
    }
}

/// [`HOST_BYTE`] flags.
const INVALID: u8 = 1;
const UPPER: u8 = 2;

/// What each byte is in a reg-name (RFC 3986 §3.2.2: unreserved, sub-delims, `%`): valid (0),
/// valid uppercase ([`UPPER`]) or [`INVALID`].
static HOST_BYTE: [u8; 256] = {
    let mut t = [INVALID; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        if c.is_ascii_lowercase()
            || c.is_ascii_digit()
            || matches!(
                c,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
                    | b'%'
            )
        {
            t[b] = 0;
        } else if c.is_ascii_uppercase() {
            t[b] = UPPER;
        }
        b += 1;
    }
    t
};

/// Normalizes a `Host` / authority value: lowercase, default port for `scheme` removed, trailing
/// dot of a fully-qualified name removed. Returns `None` for a value that is not a valid
/// `uri-host [ ":" port ]`.
pub fn normalize_host(raw: &str, scheme: &str) -> Option<String> {
    normalized_host(raw, scheme).map(Cow::into_owned)
}

/// [`normalize_host`], borrowed from `raw` when that is already normal (almost every request's
/// `Host`): no allocation then.
pub fn normalized_host<'a>(raw: &'a str, scheme: &str) -> Option<Cow<'a, str>> {
    let raw = raw.trim();
    if raw.is_empty() || raw.len() > 255 {
        return None;
    }
    let (host, port): (Cow<'a, str>, Option<&str>) = if let Some(rest) = raw.strip_prefix('[') {
        // IP-literal
        let end = rest.find(']')?;
        let (lit, after) = (&rest[..end], &rest[end + 1..]);
        if !lit.bytes().all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.') {
            return None;
        }
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?),
        };
        let host = if lit.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(format!("[{}]", lit.to_ascii_lowercase()))
        } else {
            Cow::Borrowed(&raw[..end + 2])
        };
        (host, port)
    } else {
        let (h, p) = match raw.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (raw, None),
        };
        // One pass: every byte valid, and whether any is uppercase.
        let mut seen = 0u8;
        for b in h.bytes() {
            seen |= HOST_BYTE[b as usize];
        }
        if h.is_empty() || seen & INVALID != 0 {
            return None;
        }
        let h = h.strip_suffix('.').unwrap_or(h);
        if h.is_empty() || h.ends_with('.') {
            // "." alone, or an empty last label ("a.."): no name, or not one normal form.
            return None;
        }
        let host = if seen & UPPER != 0 { Cow::Owned(h.to_ascii_lowercase()) } else { Cow::Borrowed(h) };
        (host, p)
    };
    let port = match port {
        None | Some("") => None,
        Some(p) => {
            if p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let n = p.bytes().fold(0u32, |n, d| n * 10 + u32::from(d - b'0'));
            if n > 65535 {
                return None;
            }
            let default = match scheme {
                "http" => 80,
                "https" => 443,
                _ => 0,
            };
            (n != default).then_some((n, p))
        }
    };
    let Some((n, written)) = port else {
        // A borrowed host is a prefix of `raw`.
        return Some(host);
    };
    if let Cow::Borrowed(h) = host {
        // `raw` is exactly the normal form: host, ':' and the port as written, without leading
        // zeros.
        if !written.starts_with('0') && raw.len() == h.len() + 1 + written.len() {
            return Some(Cow::Borrowed(raw));
        }
    }
    let mut digits = itoa::Buffer::new();
    let digits = digits.format(n);
    let mut s = String::with_capacity(host.len() + 1 + digits.len());
    s.push_str(&host);
    s.push(':');
    s.push_str(digits);
    Some(Cow::Owned(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_prefix_makes_parts_unambiguous() {
        assert_ne!(CacheKey::new("http", "a", "/b?c"), CacheKey::new("http", "a", "/b%3Fc"));
        assert_ne!(CacheKey::new("http", "ab", "/c"), CacheKey::new("http", "a", "b/c"));
        assert_ne!(CacheKey::new("http", "a", "/p"), CacheKey::new("http", "a", "/p?"));
        assert_eq!(CacheKey::new("http", "a", "/p?x=1"), CacheKey::new("http", "a", "/p?x=1"));
    }

    #[test]
    fn a_version_makes_every_key_new_and_no_version_keeps_the_old_ones() {
        let v = |t: &str| KeyVersion::new(t);
        let plain = CacheKey::new("http", "h", "/a");
        let (v1, v2) =
            (CacheKey::versioned(&v("1"), "http", "h", "/a"), CacheKey::versioned(&v("2"), "http", "h", "/a"));
        assert!(plain != v1 && plain != v2 && v1 != v2);
        assert_eq!(v1, CacheKey::versioned(&v("1"), "http", "h", "/a"), "the same on every node");
        assert_ne!(v("1").0, KEY_VERSION, "a version in place of the format version");
        assert_ne!(
            CacheKey::with_extra(None, "http", "h", "/a", "x", None),
            CacheKey::with_extra(Some(&v("1")), "http", "h", "/a", "x", None)
        );
    }

    #[test]
    fn hosts_normalize() {
        assert_eq!(normalize_host("Example.COM", "http").as_deref(), Some("example.com"));
        assert_eq!(normalize_host("example.com:80", "http").as_deref(), Some("example.com"));
        assert_eq!(normalize_host("example.com.:8080", "http").as_deref(), Some("example.com:8080"));
        assert_eq!(normalize_host("[::1]:80", "http").as_deref(), Some("[::1]"));
        assert_eq!(normalize_host("127.0.0.1:8080", "http").as_deref(), Some("127.0.0.1:8080"));
        assert_eq!(normalize_host("127.0.0.1:08080", "http").as_deref(), Some("127.0.0.1:8080"));
        assert_eq!(normalize_host("Example.com.", "http").as_deref(), Some("example.com"));
        assert_eq!(normalize_host("[::ABC]:8080", "http").as_deref(), Some("[::abc]:8080"));
        assert_eq!(normalize_host(" example.com: ", "http").as_deref(), Some("example.com"));
        // Already normal: borrowed, nothing allocated.
        for normal in ["example.com", "example.com:8080", "127.0.0.1:8080", "[::1]", "[::1]:8080"] {
            assert!(matches!(normalized_host(normal, "http"), Some(Cow::Borrowed(h)) if h == normal), "{normal}");
        }
        for (changed, normal) in
            [("example.com:80", "example.com"), ("Example.com", "example.com"), ("a.b.:81", "a.b:81")]
        {
            assert_eq!(normalized_host(changed, "http").as_deref(), Some(normal));
        }
        for bad in
            ["", "a b", "a:99999", "a:x", "[zz]", "a/b", "a@b", "a:80:80", ".", ".:80", ".:8080", "..", "a..", "a..:81"]
        {
            assert_eq!(normalize_host(bad, "http"), None, "{bad}");
        }
    }
}

#[cfg(test)]
mod hasher_tests {
    use super::*;
    use std::hash::BuildHasher;

    #[test]
    fn keys_sharing_digest_bits_spread_over_buckets() {
        // Keys whose first digest bytes differ only in high bits must not share low hash bits.
        let build = BuildKeyHasher::default();
        let mut low_bits = std::collections::HashSet::new();
        for i in 0u64..256 {
            let mut raw = [0u8; 32];
            raw[..8].copy_from_slice(&(i << 56).to_le_bytes());
            low_bits.insert(build.hash_one(CacheKey(raw)) & 0xff);
        }
        // Random placement gives ~162 distinct low bytes out of 256 (σ ≈ 7); a hash that ignored
        // the high digest bits would give 1.
        assert!(low_bits.len() > 64, "only {} distinct low bytes", low_bits.len());
    }
}
