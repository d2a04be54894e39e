//! The two values the shared tier keeps in memcached, each versioned.
//!
//! A **bundle** holds what Redis keeps in one URL's hash: its variants (field: a digest of the
//! request field values that select it; value: an [envelope](crate::store::shared::envelope))
//! and its purge marks (`purge:v1:hard` / `purge:v1:soft`, value: the purge's time in decimal
//! milliseconds). Memcached has no hashes, so the fields travel together in one value:
//!
//! ```text
//! "ECB" version:u8 (1)
//! count:u16, { field: u16 len, bytes; value: u32 len, bytes }
//! ```
//!
//! The **record** of purges (`PREFIX:v1:purges`) lists the purges made on every node, oldest
//! first, one per line after the line `ECR 1`:
//!
//! ```text
//! AT|NODE|ID|h or s|url, tag, host, prefix or all|ARGUMENT
//! ```
//!
//! the argument being the URL's key digest, the tag, the host, `HOST/PATH`, or empty.

use bytes::{BufMut, Bytes, BytesMut};

use crate::clock::Millis;
use crate::store::purge::{Purge, Scope};

const BUNDLE_MAGIC: &[u8; 3] = b"ECB";
const BUNDLE_VERSION: u8 = 1;
const RECORD_HEAD: &str = "ECR 1\n";

/// A URL's fields, in the order they were written.
pub type Fields = Vec<(String, Bytes)>;

/// Encodes a bundle.
pub fn encode(fields: &Fields) -> Bytes {
    let len: usize = fields.iter().map(|(f, v)| f.len() + v.len() + 6).sum();
    let mut b = BytesMut::with_capacity(6 + len);
    b.put_slice(BUNDLE_MAGIC);
    b.put_u8(BUNDLE_VERSION);
    b.put_u16(fields.len() as u16);
    for (f, v) in fields {
        b.put_u16(f.len() as u16);
        b.put_slice(f.as_bytes());
        b.put_u32(v.len() as u32);
        b.put_slice(v);
    }
    b.freeze()
}

/// Decodes a bundle; `None` for another version or anything malformed. Values share `value`'s
/// memory.
pub fn decode(value: &Bytes) -> Option<Fields> {
    let mut pos = 0usize;
    let mut take = |n: usize| {
        let s = value.get(pos..pos.checked_add(n)?)?;
        let range = pos..pos + n;
        pos += n;
        Some((s, range))
    };
    if take(3)?.0 != BUNDLE_MAGIC || take(1)?.0 != [BUNDLE_VERSION] {
        return None;
    }
    let count = u16::from_be_bytes(take(2)?.0.try_into().ok()?) as usize;
    let mut out = Vec::with_capacity(count.min(64));
    for _ in 0..count {
        let n = u16::from_be_bytes(take(2)?.0.try_into().ok()?) as usize;
        let field = std::str::from_utf8(take(n)?.0).ok()?.to_string();
        let n = u32::from_be_bytes(take(4)?.0.try_into().ok()?) as usize;
        let (_, range) = take(n)?;
        out.push((field, value.slice(range)));
    }
    (pos == value.len()).then_some(out)
}

/// One purge in the record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub node: String,
    pub id: String,
    pub purge: Purge,
}

impl Record {
    /// Two records are the same purge when the same node made it under the same id.
    pub fn same(&self, other: &Record) -> bool {
        self.node == other.node && self.id == other.id
    }
}

/// Encodes the record of purges.
pub fn encode_records(records: &[Record]) -> Bytes {
    let mut s = String::with_capacity(RECORD_HEAD.len() + records.len() * 64);
    s.push_str(RECORD_HEAD);
    for r in records {
        let p = &r.purge;
        let kind = if p.soft { 's' } else { 'h' };
        let (op, arg) = match &p.scope {
            Scope::Url(k) => ("url", k.to_string()),
            Scope::Tag(t) => ("tag", t.clone()),
            Scope::Host(h) => ("host", h.clone()),
            Scope::Prefix { host, path } => ("prefix", format!("{host}{path}")),
            Scope::All => ("all", String::new()),
        };
        // Ids and node names are the proxy's own tokens; `|` and line breaks never occur in them,
        // nor in a tag, host or path (header values and URLs carry no line breaks; the argument
        // is the last part, so a `|` in it is kept).
        let clean = |s: &str| s.replace(['|', '\n', '\r'], "_");
        s.push_str(&format!("{}|{}|{}|{kind}|{op}|{}\n", p.at, clean(&r.node), clean(&r.id), arg.replace('\n', " ")));
    }
    Bytes::from(s)
}

/// Decodes the record of purges; `None` for another version. Lines that do not parse are left
/// out.
pub fn decode_records(value: &[u8]) -> Option<Vec<Record>> {
    let text = std::str::from_utf8(value).ok()?;
    let body = text.strip_prefix(RECORD_HEAD)?;
    Some(body.lines().filter_map(parse_record).collect())
}

fn parse_record(line: &str) -> Option<Record> {
    let mut parts = line.splitn(6, '|');
    let at: Millis = parts.next()?.parse().ok()?;
    let node = parts.next()?.to_string();
    let id = parts.next()?.to_string();
    let soft = match parts.next()? {
        "s" => true,
        "h" => false,
        _ => return None,
    };
    let (op, arg) = (parts.next()?, parts.next()?);
    let scope = Scope::from_text(op, arg)?;
    Some(Record { node, id, purge: Purge { scope, soft, at } })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::CacheKey;

    #[test]
    fn a_bundle_reads_back_as_written_and_anything_else_is_refused() {
        let fields: Fields =
            vec![("a1".into(), Bytes::from_static(b"one")), ("purge:v1:soft".into(), Bytes::from_static(b"12345"))];
        let bytes = encode(&fields);
        assert_eq!(decode(&bytes), Some(fields));
        for cut in 0..bytes.len() {
            assert_eq!(decode(&bytes.slice(..cut)), None, "cut at {cut}");
        }
        let mut other = bytes.to_vec();
        other[3] = 2;
        assert_eq!(decode(&Bytes::from(other)), None, "another version");
        assert_eq!(decode(&encode(&Vec::new())), Some(Vec::new()));
    }

    #[test]
    fn records_read_back_as_written() {
        let key = CacheKey::from_hex(&"ab".repeat(32)).unwrap();
        let records: Vec<Record> = [
            Scope::Url(key),
            Scope::Tag("a|b".into()),
            Scope::Host("h:81".into()),
            Scope::Prefix { host: "h".into(), path: "/a/b".into() },
            Scope::All,
        ]
        .into_iter()
        .enumerate()
        .map(|(i, scope)| Record {
            node: "n1".into(),
            id: format!("p{i}"),
            purge: Purge { scope, soft: i % 2 == 0, at: 1000 + i as u64 },
        })
        .collect();
        assert_eq!(decode_records(&encode_records(&records)), Some(records));
        assert_eq!(decode_records(b"ECR 2\n1|n|i|h|all|\n"), None, "another version");
    }
}
