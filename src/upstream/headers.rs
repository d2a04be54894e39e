//! The header rules for a request forwarded to the origin and a response coming back:
//! hop-by-hop fields removed, framing declared from the body actually sent, unkeyed override
//! fields removed, `Via`, `X-Forwarded-*` and `Surrogate-Capability` added.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::Version;

use super::body::UpBody;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// Request fields removed before forwarding because they change what the origin serves without
/// being part of the cache key.
/// Every field that names another host, scheme, port, path or method than the request's own is
/// one of them; `X-Forwarded-Host` and `X-Forwarded-Proto` are replaced instead.
const UNKEYED_OVERRIDES: &[&str] = &[
    "x-original-url",
    "x-rewrite-url",
    "x-original-uri",
    "x-forwarded-uri",
    "x-forwarded-path",
    "x-forwarded-prefix",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-host",
    "x-forwarded-server",
    "x-http-host-override",
    "x-original-host",
    "x-forwarded-port",
    "x-forwarded-scheme",
    "x-forwarded-ssl",
    "front-end-https",
    "forwarded",
];
static SURROGATE_CAPABILITY: HeaderName = HeaderName::from_static("surrogate-capability");

/// The header fields sent to the origin for a client's request with fields `client`, made over
/// `version` and `scheme` (`http` or `https`) from `peer`, to the normalized `host`, with `body`.
/// The client's `X-Forwarded-For` is extended when `peer` is a trusted proxy, else replaced:
/// anyone could write one.
pub fn forwarded(
    client: &HeaderMap,
    version: Version,
    host: &HeaderValue,
    scheme: &'static str,
    peer: IpAddr,
    trusted_peer: bool,
    body: &UpBody,
) -> HeaderMap {
    // A clone, then room for the fields added below: cloning copies the table as it is,
    // where inserting the client's fields one by one into a new map would hash each again.
    let mut headers = client.clone();
    headers.reserve(6);
    let declared_empty = matches!(body, UpBody::Empty) && headers.contains_key(header::CONTENT_LENGTH);
    // Fields some frameworks use to rewrite the URL, host or method: unkeyed, so a client could
    // make the origin answer something else under this key (cache poisoning). The client's
    // framing goes too (`Transfer-Encoding` is hop-by-hop): the request is framed by the body
    // actually sent, never by what the client announced.
    remove_where(&mut headers, |name| name == "content-length" || UNKEYED_OVERRIDES.contains(&name));
    frame(&mut headers, body, declared_empty);
    // The client's own `Host` value when it was already in normal form (no copy).
    headers.insert(header::HOST, host.clone());
    headers.insert(X_FORWARDED_HOST.clone(), host.clone());
    append_list(&mut headers, header::VIA, HeaderValue::from_static(via(version)));
    if trusted_peer {
        append_list(&mut headers, X_FORWARDED_FOR.clone(), ip_value(peer));
    } else {
        headers.insert(X_FORWARDED_FOR.clone(), ip_value(peer));
    }
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(scheme));
    // W3C Edge Architecture: tells the origin which `Surrogate-Control` target is ours.
    append_list(&mut headers, SURROGATE_CAPABILITY.clone(), HeaderValue::from_static("edgecache=\"Surrogate/1.0\""));
    headers
}

/// Declares the framing of `body` (RFC 9112 §6): its exact length when known, else chunked; no
/// field when there is no body, unless the client declared an empty one (`Content-Length: 0`,
/// kept for origins that want a length on every POST).
fn frame(headers: &mut HeaderMap, body: &UpBody, declared_empty: bool) {
    match body {
        UpBody::Empty if declared_empty => {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        }
        UpBody::Empty => {}
        UpBody::Stream(b) => match http_body::Body::size_hint(b).exact() {
            Some(n) => {
                headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
            }
            None => {
                headers.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
            }
        },
    }
}

/// Header fields that apply to one connection only (RFC 9110 §7.6.1) and are never forwarded,
/// with the two obsolete ones (`Keep-Alive`, `Proxy-Connection`) still seen in the wild.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "proxy-authorization"
            | "proxy-authenticate"
            | "keep-alive"
            | "proxy-connection"
    )
}

/// Removes hop-by-hop fields, including every field named in `Connection`, and a
/// `Content-Length` that came with `Transfer-Encoding`.
pub fn remove_hop_by_hop(h: &mut HeaderMap) {
    remove_where(h, |_| false);
}

/// Removes hop-by-hop fields (as [`remove_hop_by_hop`]) and every field `also` names, in one
/// pass over the names present: most messages have none of them, and then nothing is hashed.
pub fn remove_where(h: &mut HeaderMap, also: impl Fn(&str) -> bool) {
    let mut doomed: Vec<HeaderName> = Vec::new();
    for name in h.keys() {
        if is_hop_by_hop(name) || also(name.as_str()) {
            doomed.push(name.clone());
        }
    }
    if doomed.is_empty() {
        return;
    }
    // RFC 9112 §6.3: a message received with Transfer-Encoding was framed by it, whatever its
    // Content-Length says; that Content-Length goes with the coding, before anything reads it
    // as the length of what is forwarded or stored.
    if doomed.contains(&header::TRANSFER_ENCODING) {
        doomed.push(header::CONTENT_LENGTH);
    }
    if doomed.contains(&header::CONNECTION) {
        for token in h.get_all(header::CONNECTION).iter().flat_map(|v| v.as_bytes().split(|&b| b == b',')) {
            let token = token.trim_ascii();
            // Most lists say only `keep-alive` (a field already doomed above when present) or
            // `close` (a reserved name, RFC 9110 §7.6.1: no field has it); nothing to parse then.
            if token.eq_ignore_ascii_case(b"keep-alive") || token.eq_ignore_ascii_case(b"close") {
                continue;
            }
            if let Ok(name) = HeaderName::from_bytes(&token.to_ascii_lowercase()) {
                doomed.push(name);
            }
        }
    }
    for name in doomed {
        h.remove(name);
    }
}

/// The `Via` value this proxy adds (RFC 9110 §7.6.3).
pub fn via(version: http::Version) -> &'static str {
    match version {
        http::Version::HTTP_10 => "1.0 edgecache",
        http::Version::HTTP_2 => "2 edgecache",
        _ => "1.1 edgecache",
    }
}

/// Appends `value` to a list field, keeping what is there.
pub fn append_list(h: &mut HeaderMap, name: HeaderName, value: HeaderValue) {
    match h.entry(name) {
        header::Entry::Vacant(v) => {
            v.insert(value);
        }
        header::Entry::Occupied(mut o) => {
            let mut joined = Vec::with_capacity(o.iter().map(|v| v.len() + 2).sum::<usize>() + value.len());
            for v in o.iter().filter(|v| !v.is_empty()) {
                joined.extend_from_slice(v.as_bytes());
                joined.extend_from_slice(b", ");
            }
            joined.extend_from_slice(value.as_bytes());
            if let Ok(v) = HeaderValue::from_bytes(&joined) {
                o.insert(v);
            }
        }
    }
}

/// An IP address as a header value, written without an intermediate `String`.
pub fn ip_value(ip: IpAddr) -> HeaderValue {
    use std::io::Write;
    if let IpAddr::V4(v4) = ip {
        // Dotted decimal by hand: `Display` goes through the formatter's padding machinery,
        // about a thousand instructions for what every forwarded request writes.
        let mut buf = [0u8; 15];
        let mut len = 0;
        let mut digits = itoa::Buffer::new();
        for (i, octet) in v4.octets().into_iter().enumerate() {
            if i > 0 {
                buf[len] = b'.';
                len += 1;
            }
            let d = digits.format(octet).as_bytes();
            buf[len..len + d.len()].copy_from_slice(d);
            len += d.len();
        }
        return HeaderValue::from_bytes(&buf[..len]).unwrap_or(HeaderValue::from_static("unknown"));
    }
    let mut buf = [0u8; 48];
    let mut w = &mut buf[..];
    let _ = write!(w, "{ip}");
    let len = 48 - w.len();
    HeaderValue::from_bytes(&buf[..len]).unwrap_or(HeaderValue::from_static("unknown"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_named_by_connection_go_with_the_hop_by_hop_ones() {
        let mut h = HeaderMap::new();
        for (name, value) in [
            ("connection", "Keep-Alive, X-Private , close"),
            ("connection", "x-other"),
            ("keep-alive", "timeout=5"),
            ("x-private", "1"),
            ("x-other", "2"),
            ("x-kept", "3"),
            ("transfer-encoding", "chunked"),
        ] {
            h.append(HeaderName::from_static(name), HeaderValue::from_static(value));
        }
        remove_hop_by_hop(&mut h);
        let left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, ["x-kept"]);

        // Only `keep-alive` listed, no Keep-Alive field: nothing else goes.
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        h.insert(header::ETAG, HeaderValue::from_static("\"1\""));
        remove_hop_by_hop(&mut h);
        assert_eq!(h.keys().map(HeaderName::as_str).collect::<Vec<_>>(), ["etag"]);
    }

    #[test]
    fn ip_values_are_written_as_addresses() {
        for ip in ["0.0.0.0", "127.0.0.1", "10.20.3.255", "255.255.255.255", "::1", "2001:db8::8a2e:370:7334"] {
            let v = ip_value(ip.parse().unwrap());
            assert_eq!(v.to_str().unwrap(), ip);
        }
    }
}
