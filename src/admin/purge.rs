//! The purge calls of the admin listener.
//!
//! - `PURGE <absolute URL>` (or `PURGE <path>` with `Host`): one URL, every variant.
//! - `POST /purge` with a JSON object: `files` (absolute URLs), `tags`, `hosts`, `prefixes`
//!   (absolute URLs whose path is the prefix, on segment boundaries), `purge_everything`, and
//!   `soft`; or, without a body, a `Surrogate-Key` request field listing tags.
//! - `POST /purge_all`, and Fastly's `POST /service/<site>/purge/<tag>` and
//!   `POST /service/<site>/purge_all` (the site is not looked at: one site per node today).
//!
//! `Fastly-Soft-Purge: 1` makes any of them soft. Each answers 200 with
//! `{"status":"ok","id":ID,"purged":N}` (N: objects removed or marked on this node at once; see
//! [`Proxy::purge`](crate::proxy::Proxy::purge)), or 400 with the reason for a bad request, and
//! nothing is purged then.

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use http::header::{HeaderMap, HOST};
use http::{StatusCode, Uri};
use serde::Deserialize;

use super::{error, json, Admin};
use crate::store::key::normalize_host;
use crate::store::purge::Scope;
use crate::store::{tags, CacheKey};

/// Largest request body read.
pub const MAX_BODY: usize = 1 << 20;

/// Most URLs, tags, hosts and prefixes in one request.
pub const MAX_ITEMS: usize = 10_000;

/// The purge routes.
pub fn routes() -> Router<Admin> {
    Router::new()
        .route("/purge", post(purge_json))
        .route("/purge_all", post(purge_all))
        .route("/service/{site}/purge_all", post(purge_all))
        .route("/service/{site}/purge/{key}", post(fastly_key))
}

/// A `POST /purge` body. Unknown fields are refused: a typo must not purge less than meant.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct PurgeBody {
    files: Option<Vec<String>>,
    tags: Option<Vec<String>>,
    hosts: Option<Vec<String>>,
    prefixes: Option<Vec<String>>,
    purge_everything: Option<bool>,
    soft: Option<bool>,
}

/// `Fastly-Soft-Purge: 1`.
fn soft_header(h: &HeaderMap) -> bool {
    h.get("fastly-soft-purge").is_some_and(|v| v.as_bytes().trim_ascii() == b"1")
}

async fn purge_json(State(admin): State<Admin>, headers: HeaderMap, body: Body) -> Response {
    let bytes = match read_body(&headers, body).await {
        Ok(b) => b,
        Err(msg) => return error(StatusCode::BAD_REQUEST, &msg),
    };
    let req: PurgeBody = if bytes.iter().all(u8::is_ascii_whitespace) {
        PurgeBody::default()
    } else {
        match serde_json::from_slice(&bytes) {
            Ok(r) => r,
            Err(e) => return error(StatusCode::BAD_REQUEST, &format!("invalid purge request: {e}")),
        }
    };
    let header_tags: Vec<String> = headers
        .get_all("surrogate-key")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split([' ', ',']))
        .filter(|t| !t.is_empty())
        .map(String::from)
        .collect();
    let soft = req.soft.unwrap_or(false) || soft_header(&headers);
    match scopes(req, header_tags) {
        Ok(scopes) => run(&admin, scopes, soft).await,
        Err(msg) => error(StatusCode::BAD_REQUEST, &msg),
    }
}

async fn purge_all(State(admin): State<Admin>, headers: HeaderMap) -> Response {
    run(&admin, vec![Scope::All], soft_header(&headers)).await
}

async fn fastly_key(
    State(admin): State<Admin>,
    Path((_site, key)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    match tag(&key) {
        Ok(t) => run(&admin, vec![Scope::Tag(t)], soft_header(&headers)).await,
        Err(msg) => error(StatusCode::BAD_REQUEST, &msg),
    }
}

/// `PURGE <url>`: the request target is the URL purged (absolute form, or a path with `Host`).
pub async fn purge_method(admin: Admin, req: Request) -> Response {
    let uri = req.uri();
    let url = if uri.scheme().is_some() {
        uri.to_string()
    } else {
        let Some(host) = req.headers().get(HOST).and_then(|h| h.to_str().ok()) else {
            return error(StatusCode::BAD_REQUEST, "PURGE needs an absolute URL or a Host field");
        };
        format!("http://{host}{}", uri.path_and_query().map_or("/", |p| p.as_str()))
    };
    match url_key(&url) {
        Ok(key) => run(&admin, vec![Scope::Url(key)], soft_header(req.headers())).await,
        Err(msg) => error(StatusCode::BAD_REQUEST, &msg),
    }
}

/// Purges `scopes` and answers.
async fn run(admin: &Admin, scopes: Vec<Scope>, soft: bool) -> Response {
    let (id, purged) = admin.proxy().purge(scopes, soft).await;
    json(StatusCode::OK, serde_json::json!({ "status": "ok", "id": id, "purged": purged }))
}

/// The body, at most [`MAX_BODY`] bytes.
async fn read_body(headers: &HeaderMap, body: Body) -> Result<bytes::Bytes, String> {
    let too_large = || format!("request body over {MAX_BODY} bytes");
    let declared = headers.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(too_large());
    }
    axum::body::to_bytes(body, MAX_BODY).await.map_err(|_| too_large())
}

/// What a `POST /purge` asks for, every item checked; the reason of the first bad one otherwise.
fn scopes(req: PurgeBody, header_tags: Vec<String>) -> Result<Vec<Scope>, String> {
    let mut out = Vec::new();
    let lists = [("files", req.files), ("hosts", req.hosts), ("prefixes", req.prefixes), ("tags", req.tags)];
    let mut items = 0;
    for (name, list) in lists {
        let Some(list) = list else { continue };
        if list.is_empty() {
            return Err(format!("{name}: empty list"));
        }
        items += list.len();
        if items > MAX_ITEMS {
            return Err(format!("more than {MAX_ITEMS} items in one request"));
        }
        for item in &list {
            let scope = match name {
                "files" => url_key(item).map(Scope::Url),
                "hosts" => host(item).map(Scope::Host),
                "prefixes" => prefix(item),
                _ => tag(item).map(Scope::Tag),
            };
            out.push(scope.map_err(|e| format!("{name}: {e}"))?);
        }
    }
    for t in header_tags {
        out.push(Scope::Tag(tag(&t).map_err(|e| format!("Surrogate-Key: {e}"))?));
    }
    if req.purge_everything == Some(true) {
        out.push(Scope::All);
    }
    if out.is_empty() {
        return Err("nothing to purge: give files, tags, hosts, prefixes or purge_everything".into());
    }
    Ok(out)
}

/// An absolute `http` or `https` URL: its normalized host and its path and query.
fn split_url(s: &str) -> Result<(String, String), String> {
    let bad = |why: &str| format!("{s:?} is not an absolute http(s) URL: {why}");
    let uri: Uri = s.parse().map_err(|e: http::uri::InvalidUri| bad(&e.to_string()))?;
    let scheme = match uri.scheme_str() {
        Some(s @ ("http" | "https")) => s,
        Some(_) => return Err(bad("only http and https")),
        None => return Err(bad("no scheme")),
    };
    let authority = uri.authority().ok_or_else(|| bad("no host"))?;
    if authority.as_str().contains('@') {
        return Err(bad("credentials are not part of a cached URL"));
    }
    let host = normalize_host(authority.as_str(), scheme).ok_or_else(|| bad("invalid host"))?;
    let pq = uri.path_and_query().map_or("/", |p| p.as_str());
    let pq = if pq.is_empty() { "/" } else { pq };
    Ok((host, pq.to_string()))
}

/// The cache key of an absolute URL: the key the proxy stores it under (its scheme is the one
/// the proxy keys every request with).
fn url_key(s: &str) -> Result<CacheKey, String> {
    let (host, pq) = split_url(s)?;
    Ok(CacheKey::new("http", &host, &pq))
}

fn host(s: &str) -> Result<String, String> {
    normalize_host(s, "http").ok_or_else(|| format!("{s:?} is not a host name (host or host:port)"))
}

/// A prefix URL: its host and path, on segment boundaries; `/` is the whole host.
fn prefix(s: &str) -> Result<Scope, String> {
    let (host, pq) = split_url(s)?;
    if pq.contains('?') {
        return Err(format!("{s:?}: a prefix is a path, without a query"));
    }
    let path = pq.trim_end_matches('/');
    if path.is_empty() {
        return Ok(Scope::Host(host));
    }
    Ok(Scope::Prefix { host, path: path.to_string() })
}

fn tag(s: &str) -> Result<String, String> {
    if tags::valid(s) {
        Ok(s.to_string())
    } else {
        Err(format!("{s:?} is not a tag (1 to {} visible characters, no spaces or commas)", tags::MAX_TAG_BYTES))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_keyed_as_the_proxy_keys_requests() {
        assert_eq!(url_key("http://Example.COM:80/a?b=1"), Ok(CacheKey::new("http", "example.com", "/a?b=1")));
        assert_eq!(url_key("https://example.com:443/a"), Ok(CacheKey::new("http", "example.com", "/a")));
        assert_eq!(url_key("http://example.com"), Ok(CacheKey::new("http", "example.com", "/")));
        assert_eq!(url_key("http://h:8080/p"), Ok(CacheKey::new("http", "h:8080", "/p")));
        for bad in ["/a", "ftp://h/a", "http://", "http://a b/", "not a url", "http://u@h/"] {
            assert!(url_key(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn prefixes_are_paths_and_the_root_is_the_host() {
        let p = |path: &str| Ok(Scope::Prefix { host: "h".into(), path: path.into() });
        assert_eq!(prefix("https://h/blog/"), p("/blog"));
        assert_eq!(prefix("http://h/blog"), p("/blog"));
        assert_eq!(prefix("http://h/"), Ok(Scope::Host("h".into())));
        assert!(prefix("http://h/blog?x").is_err());
    }

    #[test]
    fn a_request_is_refused_whole_for_one_bad_item() {
        let body = |json: &str| serde_json::from_str::<PurgeBody>(json);
        assert!(body(r#"{"files":["http://h/"],"colour":1}"#).is_err(), "unknown field");
        let empty = body(r#"{"tags":[]}"#).unwrap();
        assert_eq!(scopes(empty, vec![]), Err("tags: empty list".into()));
        let bad = body(r#"{"files":["http://h/a","nope"]}"#).unwrap();
        assert!(scopes(bad, vec![]).unwrap_err().starts_with("files: \"nope\""));
        assert!(scopes(PurgeBody::default(), vec![]).unwrap_err().starts_with("nothing to purge"));
        let ok = body(r#"{"tags":["a"],"purge_everything":true}"#).unwrap();
        assert_eq!(scopes(ok, vec!["b".into()]), Ok(vec![Scope::Tag("a".into()), Scope::Tag("b".into()), Scope::All]));
        assert!(tag("a b").is_err() && tag("").is_err() && tag(&"x".repeat(1025)).is_err());
    }
}
