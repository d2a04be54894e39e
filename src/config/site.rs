//! `[[site]]`: the sites one node serves, each with its host names, its origin pool, its health
//! checks and its cache rules. Read key by key like the rest of the file; every bad field is
//! reported with its path (`site[1].rule[0].path: ...`).
//!
//! What is read here is plain data: the proxy builds its routing table, pools and rules from it
//! (`crate::site`), and other parts (the TLS origin client, purge, metrics) read the same values.

use std::collections::HashMap;
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use toml::{Table, Value};

use super::walk::Walker;
use super::{Config, Origin};

/// One site: the requests whose `Host` it names, where they go, and its rules.
#[derive(Debug, Clone, PartialEq)]
pub struct SiteConfig {
    /// A stable name: in the access log, for metrics and for purges scoped to the site.
    pub name: String,
    /// Host names routed to this site: exact names and `*.example.com` wildcards.
    pub hosts: Vec<HostPattern>,
    /// Requests whose `Host` matches no site go here (at most one site).
    pub default: bool,
    /// The `Host` sent to the origin; `None`: the client's.
    pub origin_host: Option<HeaderValue>,
    /// The server name a TLS origin client sends (SNI); `None`: `origin_host`, else each server's
    /// host name. Plain data for the TLS origin client; the cleartext client does not use it.
    pub origin_sni: Option<String>,
    /// How a server is chosen.
    pub balance: Balance,
    /// The origin servers, in order.
    pub servers: Vec<ServerConfig>,
    /// Health checks and ejection.
    pub health: HealthConfig,
    /// Cache rules, in order.
    pub rules: Vec<RuleConfig>,
    /// Refresh-ahead on (`true`) or off (`false`) for this site; `None`: as
    /// `refresh_ahead.enabled` says.
    pub refresh_ahead: Option<bool>,
    /// This site's cache-key version; `None`: `cache.key_version`.
    pub key_version: Option<String>,
}

/// A host name pattern of a site.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostPattern {
    /// Exactly this name (lowercase, no port).
    Exact(String),
    /// Any name ending in `.` + this (`*.example.com`: `a.example.com`, `a.b.example.com`, not
    /// `example.com`).
    Wildcard(String),
    /// Every host: the implied site of a configuration without `[[site]]`.
    Any,
}

/// How a site's pool chooses among its healthy servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    /// Weighted round robin.
    RoundRobin,
    /// By the request's cache key (weighted rendezvous hashing): each object is fetched from one
    /// server while that server is up, and only the objects of a server that goes down move.
    Hash,
}

/// One origin server of a site's pool.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// Where it is.
    pub origin: Origin,
    /// Its share of the requests, relative to the others' (1..=100).
    pub weight: u32,
    /// Used only while every primary server is down.
    pub backup: bool,
    /// Connections open to it at once (busy and idle); `None`: `limits.origin_connections`.
    pub max_connections: Option<usize>,
    /// Requests in flight to it at once (sent and not yet answered to the end); `None`: as many
    /// as its connections carry.
    pub max_requests: Option<usize>,
}

/// A site's health checks (active) and ejection (passive).
#[derive(Debug, Clone, PartialEq)]
pub struct HealthConfig {
    /// Active checks, when configured.
    pub check: Option<ActiveCheck>,
    /// Consecutive failed requests that take a server out (0: never). Applies to pools of more
    /// than one server: with one, there is nowhere else to go.
    pub eject_after: u32,
    /// How long an ejected server gets no requests.
    pub eject_for: Duration,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig { check: None, eject_after: 3, eject_for: Duration::from_secs(10) }
    }
}

/// Active health checks: a GET of `path` on every server every `interval`.
#[derive(Debug, Clone, PartialEq)]
pub struct ActiveCheck {
    /// The path (and query) asked for; a 2xx or 3xx answer within `timeout` is a success.
    pub path: String,
    /// Time between two checks of a server.
    pub interval: Duration,
    /// Longest wait for a check's answer.
    pub timeout: Duration,
    /// How many of the last checks are looked at.
    pub window: u32,
    /// Failures among them that take a server down; successes among them that bring it up.
    pub threshold: u32,
}

/// What a rule does with the responses it applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheMode {
    /// As RFC 9111 and the response say.
    Store,
    /// Never answered from the cache nor stored: forwarded as asked.
    Pass,
    /// Stored, and revalidated with the origin before every use.
    Revalidate,
}

/// Where a rule applies: a path prefix, or a pattern where `*` stands for any characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathPattern {
    /// Paths starting with this.
    Prefix(String),
    /// Paths matching this whole, `*` matching any run of characters (`/` included).
    Glob(String),
}

/// One cache rule, as configured. Every setting is optional: for each one, the first rule in
/// order that matches the request's path and sets it applies.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RuleConfig {
    /// Where it applies.
    pub path: Option<PathPattern>,
    /// Store, pass or always revalidate.
    pub cache: Option<CacheMode>,
    /// Freshness lifetime of a response that gives none (replaces the heuristic).
    pub ttl: Option<Duration>,
    /// Floor on the lifetime.
    pub min_ttl: Option<Duration>,
    /// Ceiling on the lifetime.
    pub max_ttl: Option<Duration>,
    /// The query is left out of the cache key.
    pub key_ignore_query: Option<bool>,
    /// Query parameters left out of the cache key (names; `*` matches any characters).
    pub key_drop_query: Option<Vec<String>>,
    /// The query parameters kept in the key are sorted.
    pub key_sort_query: Option<bool>,
    /// A request header field whose value is added to the cache key.
    pub key_header: Option<HeaderName>,
    /// A cookie whose value is added to the cache key.
    pub key_cookie: Option<String>,
    /// `Cookie` is removed from requests.
    pub strip_cookie: Option<bool>,
    /// `Set-Cookie` is removed from responses.
    pub strip_set_cookie: Option<bool>,
    /// Response header fields set (replacing any the response has) before the response goes to
    /// the client.
    pub response_headers: Option<Vec<(HeaderName, HeaderValue)>>,
    /// Response header fields removed before the response goes to the client.
    pub remove_response_headers: Option<Vec<HeaderName>>,
}

impl SiteConfig {
    /// The implied site of a configuration without `[[site]]`: every host, the one `origin`.
    pub fn single(cfg: &Config) -> SiteConfig {
        SiteConfig {
            name: "default".into(),
            hosts: vec![HostPattern::Any],
            default: true,
            origin_host: cfg.origin.host.clone(),
            // `origin.server_name` (by default the URL's host), not `origin.host`, is what a TLS
            // origin is asked for and verified as.
            origin_sni: cfg.origin.tls.as_ref().map(|t| t.server_name.to_str().into_owned()),
            balance: Balance::RoundRobin,
            servers: vec![ServerConfig {
                origin: cfg.origin.clone(),
                weight: 1,
                backup: false,
                max_connections: None,
                max_requests: None,
            }],
            health: HealthConfig::default(),
            rules: Vec::new(),
            refresh_ahead: None,
            key_version: None,
        }
    }
}

/// Most rules per site (a request's matching rules are a 64-bit set).
pub const MAX_RULES: usize = 64;
/// Most servers per site.
pub const MAX_SERVERS: usize = 64;

/// Fields a rule may not set or remove: the framing and connection fields (hyper writes them),
/// and `Cache-Status` (this cache's own account of what it did).
const PROTECTED_FIELDS: &[&str] = &[
    "connection",
    "content-length",
    "transfer-encoding",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "cache-status",
];

/// `[[site]]`: every site read, bad fields reported; then the checks across sites (unique names
/// and host names, one default at most).
pub(super) fn sites(w: &mut Walker, root: &mut Table, cfg: &mut Config) {
    let Some(v) = root.remove("site") else { return };
    let Value::Array(list) = v else {
        w.bad("site", format!("expected [[site]] tables, found {}", v.type_str()));
        return;
    };
    let mut names: HashMap<String, usize> = HashMap::new();
    let mut hosts: HashMap<HostPattern, usize> = HashMap::new();
    let mut default: Option<usize> = None;
    for (i, v) in list.into_iter().enumerate() {
        let at = format!("site[{i}]");
        let Value::Table(mut t) = v else {
            w.bad(&at, format!("expected a table, found {}", v.type_str()));
            continue;
        };
        let Some(site) = site(w, &mut t, &at) else { continue };
        if let Some(first) = names.insert(site.name.clone(), i) {
            w.bad(&format!("{at}.name"), format!("{:?} is already the name of site[{first}]", site.name));
        }
        for (j, h) in site.hosts.iter().enumerate() {
            if let Some(first) = hosts.insert(h.clone(), i) {
                w.bad(&format!("{at}.hosts[{j}]"), format!("already a host of site[{first}]"));
            }
        }
        if site.default {
            if let Some(first) = default {
                w.bad(&format!("{at}.default"), format!("site[{first}] is the default site already"));
            }
            default = Some(i);
        }
        cfg.sites.push(site);
    }
}

/// One `[[site]]` table; `None` when a required key is missing or bad (reported).
fn site(w: &mut Walker, t: &mut Table, at: &str) -> Option<SiteConfig> {
    let mut name = None;
    w.take(t, at, "name", |w, p, v| {
        match v.as_str() {
            Some(s)
                if !s.is_empty()
                    && s.len() <= 64
                    && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_') =>
            {
                name = Some(s.to_string())
            }
            _ => w.bad(p, "expected a name of 1 to 64 characters a-z, 0-9, '-' or '_'".into()),
        }
        Some(())
    });
    let mut hosts = Vec::new();
    w.take(t, at, "hosts", |w, p, v| {
        for (j, s) in strings(w, p, v)?.into_iter().enumerate() {
            match host_pattern(&s) {
                Ok(h) => hosts.push(h),
                Err(e) => w.bad(&format!("{p}[{j}]"), e),
            }
        }
        Some(())
    });
    let mut default = false;
    w.take(t, at, "default", |w, p, v| w.boolean(p, v).map(|b| default = b));
    let mut origin_host = None;
    w.take(t, at, "origin_host", |w, p, v| {
        match v.as_str().map(|s| (s, crate::store::key::normalize_host(s, "http"))) {
            Some((_, Some(h))) => origin_host = HeaderValue::from_str(&h).ok(),
            _ => w.bad(p, "expected a host name, with a port if needed".into()),
        }
        Some(())
    });
    let mut origin_sni = None;
    w.take(t, at, "origin_sni", |w, p, v| {
        match v.as_str() {
            Some(s) if host_name(s) => origin_sni = Some(s.to_ascii_lowercase()),
            _ => w.bad(p, "expected a host name (no port)".into()),
        }
        Some(())
    });
    let mut refresh_ahead = None;
    w.take(t, at, "refresh_ahead", |w, p, v| w.boolean(p, v).map(|b| refresh_ahead = Some(b)));
    let mut key_version = None;
    w.take(t, at, "key_version", |w, p, v| super::key_version(w, p, v).map(|k| key_version = Some(k)));
    let mut balance = Balance::RoundRobin;
    w.take(t, at, "balance", |w, p, v| {
        match v.as_str() {
            Some("round-robin") => balance = Balance::RoundRobin,
            Some("hash") => balance = Balance::Hash,
            _ => w.bad(p, "expected \"round-robin\" or \"hash\"".into()),
        }
        Some(())
    });
    let mut servers = Vec::new();
    let server_list = tables(w, t, at, "server");
    for (j, mut s) in server_list.into_iter().enumerate() {
        if let Some(s) = server(w, &mut s, &format!("{at}.server[{j}]")) {
            servers.push(s);
        }
    }
    let mut health = HealthConfig::default();
    match t.remove("health") {
        Some(Value::Table(mut h)) => health_section(w, &mut h, &format!("{at}.health"), &mut health),
        Some(other) => w.bad(&format!("{at}.health"), format!("expected a table, found {}", other.type_str())),
        None => {}
    }
    let mut rules = Vec::new();
    for (j, mut r) in tables(w, t, at, "rule").into_iter().enumerate() {
        if let Some(r) = rule(w, &mut r, &format!("{at}.rule[{j}]")) {
            rules.push(r);
        }
    }
    w.unknown(t, at);
    if name.is_none() && !t.contains_key("name") {
        w.bad(&format!("{at}.name"), "required".into());
    }
    if hosts.is_empty() && !default {
        w.bad(&format!("{at}.hosts"), "a site needs host names, or default = true".into());
    }
    if servers.is_empty() {
        w.bad(&format!("{at}.server"), "a site needs at least one [[site.server]]".into());
    } else if servers.iter().all(|s| s.backup) {
        w.bad(&format!("{at}.server"), "every server is a backup: at least one must not be".into());
    }
    if servers.len() > MAX_SERVERS {
        w.bad(&format!("{at}.server"), format!("at most {MAX_SERVERS} servers per site"));
    }
    if rules.len() > MAX_RULES {
        w.bad(&format!("{at}.rule"), format!("at most {MAX_RULES} rules per site"));
    }
    Some(SiteConfig {
        name: name?,
        hosts,
        default,
        origin_host,
        origin_sni,
        balance,
        servers,
        health,
        rules,
        refresh_ahead,
        key_version,
    })
}

/// `[[site.server]]`.
fn server(w: &mut Walker, t: &mut Table, at: &str) -> Option<ServerConfig> {
    let mut origin = None;
    w.take(t, at, "url", |w, p, v| {
        match v.as_str().map(Origin::parse) {
            Some(Ok(o)) => origin = Some(o),
            Some(Err(e)) => w.bad(p, e),
            None => w.bad(p, format!("expected a URL string, found {}", v.type_str())),
        }
        Some(())
    });
    let mut s = ServerConfig {
        origin: Origin::parse("http://127.0.0.1:9000").expect("valid"),
        weight: 1,
        backup: false,
        max_connections: None,
        max_requests: None,
    };
    w.take(t, at, "weight", |w, p, v| w.integer(p, v, 1, 100).map(|n| s.weight = n as u32));
    w.take(t, at, "backup", |w, p, v| w.boolean(p, v).map(|b| s.backup = b));
    w.take(t, at, "max_connections", |w, p, v| {
        w.integer(p, v, 1, 1_000_000).map(|n| s.max_connections = Some(n as usize))
    });
    w.take(t, at, "max_requests", |w, p, v| w.integer(p, v, 1, 1_000_000).map(|n| s.max_requests = Some(n as usize)));
    w.unknown(t, at);
    match origin {
        Some(o) => {
            s.origin = o;
            Some(s)
        }
        None => {
            if !w.problems.iter().any(|(p, _)| p == &format!("{at}.url")) {
                w.bad(&format!("{at}.url"), "required".into());
            }
            None
        }
    }
}

/// `[site.health]`.
fn health_section(w: &mut Walker, t: &mut Table, at: &str, h: &mut HealthConfig) {
    let mut check = ActiveCheck {
        path: String::new(),
        interval: Duration::from_secs(5),
        timeout: Duration::from_secs(2),
        window: 5,
        threshold: 3,
    };
    let active = ["interval", "timeout", "window", "threshold"].iter().any(|k| t.contains_key(*k));
    let mut path = None;
    w.take(t, at, "path", |w, p, v| {
        match v.as_str() {
            Some(s) if s.starts_with('/') && s.parse::<http::uri::PathAndQuery>().is_ok() => path = Some(s.to_string()),
            _ => w.bad(p, "expected a path starting with /".into()),
        }
        Some(())
    });
    for (name, slot) in [("interval", &mut check.interval), ("timeout", &mut check.timeout)] {
        w.take(t, at, name, |w, p, v| {
            let d = w.duration(p, v)?;
            if d.is_zero() {
                w.bad(p, "must be greater than 0".into());
                return None;
            }
            *slot = d;
            Some(())
        });
    }
    w.take(t, at, "window", |w, p, v| w.integer(p, v, 1, 64).map(|n| check.window = n as u32));
    w.take(t, at, "threshold", |w, p, v| w.integer(p, v, 1, 64).map(|n| check.threshold = n as u32));
    w.take(t, at, "eject_after", |w, p, v| w.integer(p, v, 0, 1000).map(|n| h.eject_after = n as u32));
    w.take(t, at, "eject_for", |w, p, v| w.duration(p, v).map(|d| h.eject_for = d));
    w.unknown(t, at);
    if check.threshold > check.window {
        w.bad(&format!("{at}.threshold"), "must not exceed window".into());
    }
    match path {
        Some(path) => h.check = Some(ActiveCheck { path, ..check }),
        None if active && !w.problems.iter().any(|(p, _)| p == &format!("{at}.path")) => {
            w.bad(&format!("{at}.path"), "required for active checks (interval, timeout, window, threshold)".into())
        }
        None => {}
    }
}

/// `[[site.rule]]`.
fn rule(w: &mut Walker, t: &mut Table, at: &str) -> Option<RuleConfig> {
    let mut r = RuleConfig::default();
    w.take(t, at, "path", |w, p, v| {
        match v.as_str() {
            Some(s) if s.starts_with('/') || s.starts_with('*') => {
                r.path = Some(if s.contains('*') { PathPattern::Glob(s.into()) } else { PathPattern::Prefix(s.into()) })
            }
            _ => w.bad(p, "expected a path prefix like \"/static/\" or a pattern like \"*.css\"".into()),
        }
        Some(())
    });
    w.take(t, at, "cache", |w, p, v| {
        match v.as_str() {
            Some("store") => r.cache = Some(CacheMode::Store),
            Some("pass") => r.cache = Some(CacheMode::Pass),
            Some("revalidate") => r.cache = Some(CacheMode::Revalidate),
            _ => w.bad(p, "expected \"store\", \"pass\" or \"revalidate\"".into()),
        }
        Some(())
    });
    for (name, slot) in [("ttl", &mut r.ttl), ("min_ttl", &mut r.min_ttl), ("max_ttl", &mut r.max_ttl)] {
        w.take(t, at, name, |w, p, v| w.duration(p, v).map(|d| *slot = Some(d)));
    }
    for (name, slot) in [
        ("key_ignore_query", &mut r.key_ignore_query),
        ("key_sort_query", &mut r.key_sort_query),
        ("strip_cookie", &mut r.strip_cookie),
        ("strip_set_cookie", &mut r.strip_set_cookie),
    ] {
        w.take(t, at, name, |w, p, v| w.boolean(p, v).map(|b| *slot = Some(b)));
    }
    w.take(t, at, "key_drop_query", |w, p, v| {
        let names = strings(w, p, v)?;
        for (j, n) in names.iter().enumerate() {
            if n.is_empty() || n.bytes().any(|b| matches!(b, b'&' | b'=' | b'#' | b' ') || b.is_ascii_control()) {
                w.bad(&format!("{p}[{j}]"), format!("not a query parameter name: {n:?}"));
            }
        }
        r.key_drop_query = Some(names);
        Some(())
    });
    w.take(t, at, "key_header", |w, p, v| {
        match v.as_str().map(|s| HeaderName::from_bytes(s.to_ascii_lowercase().as_bytes())) {
            Some(Ok(n)) => r.key_header = Some(n),
            _ => w.bad(p, "expected a header field name".into()),
        }
        Some(())
    });
    w.take(t, at, "key_cookie", |w, p, v| {
        match v.as_str() {
            Some(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic() && !b";=,\"".contains(&b)) => {
                r.key_cookie = Some(s.to_string())
            }
            _ => w.bad(p, "expected a cookie name".into()),
        }
        Some(())
    });
    w.take(t, at, "response_headers", |w, p, v| {
        let Some(table) = v.as_table() else {
            w.bad(p, format!("expected a table of field = \"value\", found {}", v.type_str()));
            return None;
        };
        let mut set = Vec::new();
        for (name, value) in table {
            let path = format!("{p}.{name}");
            let Some(n) = field_name(w, &path, name) else { continue };
            match value.as_str().map(HeaderValue::from_str) {
                Some(Ok(v)) => set.push((n, v)),
                _ => w.bad(&path, "expected a field value string".into()),
            }
        }
        r.response_headers = Some(set);
        Some(())
    });
    w.take(t, at, "remove_response_headers", |w, p, v| {
        let names = strings(w, p, v)?;
        let list = names.iter().enumerate().filter_map(|(j, n)| field_name(w, &format!("{p}[{j}]"), n)).collect();
        r.remove_response_headers = Some(list);
        Some(())
    });
    w.unknown(t, at);
    if r.path.is_none() {
        if !w.problems.iter().any(|(p, _)| p == &format!("{at}.path")) {
            w.bad(&format!("{at}.path"), "required (\"/\" for every path)".into());
        }
        return None;
    }
    if let (Some(min), Some(max)) = (r.min_ttl, r.max_ttl) {
        if min > max {
            w.bad(&format!("{at}.min_ttl"), "must not exceed max_ttl".into());
        }
    }
    Some(r)
}

/// A response field a rule may set or remove.
fn field_name(w: &mut Walker, path: &str, name: &str) -> Option<HeaderName> {
    match HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()) {
        Ok(n) if PROTECTED_FIELDS.contains(&n.as_str()) => {
            w.bad(path, format!("{name} is written by the proxy itself and cannot be changed by a rule"));
            None
        }
        Ok(n) => Some(n),
        Err(_) => {
            w.bad(path, format!("not a header field name: {name:?}"));
            None
        }
    }
}

/// An array of strings.
fn strings(w: &mut Walker, path: &str, v: &Value) -> Option<Vec<String>> {
    let Some(list) = v.as_array() else {
        w.bad(path, format!("expected an array of strings, found {}", v.type_str()));
        return None;
    };
    let mut out = Vec::with_capacity(list.len());
    for (j, item) in list.iter().enumerate() {
        match item.as_str() {
            Some(s) => out.push(s.to_string()),
            None => w.bad(&format!("{path}[{j}]"), format!("expected a string, found {}", item.type_str())),
        }
    }
    Some(out)
}

/// The array of tables `key` in `t` (`[[site.server]]`, `[[site.rule]]`).
fn tables(w: &mut Walker, t: &mut Table, at: &str, key: &str) -> Vec<Table> {
    let Some(v) = t.remove(key) else { return Vec::new() };
    let path = format!("{at}.{key}");
    let Value::Array(list) = v else {
        w.bad(&path, format!("expected [[site.{key}]] tables, found {}", v.type_str()));
        return Vec::new();
    };
    let mut out = Vec::with_capacity(list.len());
    for (j, item) in list.into_iter().enumerate() {
        match item {
            Value::Table(t) => out.push(t),
            other => w.bad(&format!("{path}[{j}]"), format!("expected a table, found {}", other.type_str())),
        }
    }
    out
}

/// A host name: letters, digits, `-` and `.`, not empty, no port.
fn host_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && !s.starts_with('.')
        && !s.ends_with('.')
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// `shop.example` or `*.shop.example`, lowercased.
fn host_pattern(s: &str) -> Result<HostPattern, String> {
    let lower = s.to_ascii_lowercase();
    match lower.strip_prefix("*.") {
        Some(rest) if host_name(rest) => Ok(HostPattern::Wildcard(rest.to_string())),
        None if host_name(&lower) => Ok(HostPattern::Exact(lower)),
        _ => Err(format!("expected a host name like \"shop.example\" or \"*.shop.example\" (no port), found {s:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(text: &str) -> Vec<String> {
        Config::parse(text).expect_err("invalid").problems.into_iter().map(|(p, _)| p).collect()
    }

    #[test]
    fn a_two_site_file_is_read() {
        let cfg = Config::parse(
            r#"
            [[site]]
            name = "shop"
            hosts = ["Shop.Example", "*.shop.example"]
            origin_host = "backend:8080"
            balance = "hash"
            [[site.server]]
            url = "http://10.0.0.1:8080"
            weight = 3
            max_requests = 50
            [[site.server]]
            url = "http://10.0.0.2:8080"
            backup = true
            [site.health]
            path = "/healthz"
            interval = "2s"
            [[site.rule]]
            path = "*.css"
            key_drop_query = ["utm_*"]
            response_headers = { "Cache-Control" = "no-cache" }

            [[site]]
            name = "blog"
            default = true
            [[site.server]]
            url = "http://10.0.0.3"
            "#,
        )
        .unwrap();
        let shop = &cfg.sites[0];
        assert_eq!(
            shop.hosts,
            [HostPattern::Exact("shop.example".into()), HostPattern::Wildcard("shop.example".into())]
        );
        assert_eq!(shop.origin_host.as_ref().unwrap(), "backend:8080");
        assert_eq!(shop.balance, Balance::Hash);
        assert_eq!((shop.servers[0].weight, shop.servers[0].max_requests, shop.servers[1].backup), (3, Some(50), true));
        let check = shop.health.check.as_ref().unwrap();
        assert_eq!((check.path.as_str(), check.interval, check.window), ("/healthz", Duration::from_secs(2), 5));
        assert_eq!(shop.rules[0].path, Some(PathPattern::Glob("*.css".into())));
        assert!(cfg.sites[1].default && cfg.sites[1].hosts.is_empty());
        assert_eq!(cfg.effective_sites().len(), 2);
        assert_eq!(Config::parse("").unwrap().effective_sites()[0].hosts, [HostPattern::Any]);
    }

    #[test]
    fn every_bad_site_field_is_reported_with_its_path() {
        let got = paths(
            r#"
            origin = "http://127.0.0.1:9000"
            [[site]]
            name = "Shop"
            hosts = ["shop.example:80", "a.*.example"]
            balance = "random"
            [[site.server]]
            url = "ftp://x"
            weight = 0
            [site.health]
            interval = "1s"
            threshold = 9
            [[site.rule]]
            cache = "sometimes"
            [[site.rule]]
            path = "/"
            ttl = "soon"
            key_header = "bad header"
            response_headers = { "Content-Length" = "1" }
            remove_response_headers = ["Cache-Status"]
            colour = "red"

            [[site]]
            name = "blog"
            hosts = ["blog.example"]
            default = true
            [[site.server]]
            url = "http://b"
            [[site]]
            name = "blog"
            hosts = ["blog.example"]
            default = true
            [[site.server]]
            url = "http://c"
            backup = true
            "#,
        );
        for p in [
            "origin",
            "site[0].name",
            "site[0].hosts[0]",
            "site[0].hosts[1]",
            "site[0].balance",
            "site[0].server[0].url",
            "site[0].server[0].weight",
            "site[0].health.threshold",
            "site[0].health.path",
            "site[0].rule[0].cache",
            "site[0].rule[0].path",
            "site[0].rule[1].ttl",
            "site[0].rule[1].key_header",
            "site[0].rule[1].response_headers.Content-Length",
            "site[0].rule[1].remove_response_headers[0]",
            "site[0].rule[1].colour",
            "site[2].name",
            "site[2].hosts[0]",
            "site[2].default",
            "site[2].server",
        ] {
            assert!(got.iter().any(|g| g == p), "{p} missing from {got:?}");
        }
    }
}
