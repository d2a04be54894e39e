//! The cache key: a canonical, length-prefixed encoding of exactly what is forwarded
//! (scheme, normalized host, path, query), digested with SHA-256.
//!
//! Length prefixes make the encoding unambiguous: `("a/b", "c")` and `("a", "/bc")` can never
//! produce the same bytes. The digest is the same on every machine, so it can name objects in a
//! shared store.

use std::fmt;

use sha2::{Digest, Sha256};

/// Version of the key encoding; bump it when the encoding changes.
const KEY_VERSION: &[u8] = b"edgecache-key-v1";

/// The primary cache key of a URL (RFC 9111 §2): its SHA-256 digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CacheKey([u8; 32]);

impl CacheKey {
    /// Key for `scheme://host` + `path_and_query`, all exactly as forwarded. `host` must already be
    /// normalized (see [`normalize_host`]).
    pub fn new(scheme: &str, host: &str, path_and_query: &str) -> Self {
        let (path, query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path_and_query, None),
        };
        let mut h = Sha256::new();
        h.update(KEY_VERSION);
        for part in [scheme, host, path] {
            h.update((part.len() as u32).to_be_bytes());
            h.update(part.as_bytes());
        }
        // "/p" and "/p?" are different URLs: the query's presence is part of the key.
        match query {
            Some(q) => {
                h.update([1]);
                h.update((q.len() as u32).to_be_bytes());
                h.update(q.as_bytes());
            }
            None => h.update([0]),
        }
        CacheKey(h.finalize().into())
    }

    /// The raw digest.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Parses the hex form written by `Display`.
    pub fn from_hex(s: &str) -> Option<CacheKey> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(CacheKey(out))
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

/// Normalizes a `Host` / authority value: lowercase, default port for `scheme` removed, trailing
/// dot of a fully-qualified name removed. Returns `None` for a value that is not a valid
/// `uri-host [ ":" port ]`.
pub fn normalize_host(raw: &str, scheme: &str) -> Option<String> {
    let raw = raw.trim();
    if raw.is_empty() || raw.len() > 255 {
        return None;
    }
    let (host, port) = if let Some(rest) = raw.strip_prefix('[') {
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
        (format!("[{}]", lit.to_ascii_lowercase()), port)
    } else {
        let (h, p) = match raw.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (raw, None),
        };
        let valid = |b: u8| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
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
        };
        if h.is_empty() || !h.bytes().all(valid) {
            return None;
        }
        let h = h.strip_suffix('.').unwrap_or(h);
        (h.to_ascii_lowercase(), p)
    };
    let port = match port {
        None | Some("") => None,
        Some(p) => {
            if p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let n: u32 = p.parse().ok()?;
            if n > 65535 {
                return None;
            }
            let default = match scheme {
                "http" => 80,
                "https" => 443,
                _ => 0,
            };
            (n != default).then_some(n)
        }
    };
    Some(match port {
        Some(p) => format!("{host}:{p}"),
        None => host,
    })
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
    fn hosts_normalize() {
        assert_eq!(normalize_host("Example.COM", "http").as_deref(), Some("example.com"));
        assert_eq!(normalize_host("example.com:80", "http").as_deref(), Some("example.com"));
        assert_eq!(normalize_host("example.com.:8080", "http").as_deref(), Some("example.com:8080"));
        assert_eq!(normalize_host("[::1]:80", "http").as_deref(), Some("[::1]"));
        assert_eq!(normalize_host("127.0.0.1:8080", "http").as_deref(), Some("127.0.0.1:8080"));
        for bad in ["", "a b", "a:99999", "a:x", "[zz]", "a/b", "a@b", "a:80:80"] {
            assert_eq!(normalize_host(bad, "http"), None, "{bad}");
        }
    }
}
