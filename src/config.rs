//! `proxy.toml`: the file model and its validation into a [`Config`].
//!
//! The file is read as a TOML table and walked key by key, so that every bad field is reported
//! at once, each message naming the field's path (`timeouts.connect: ...`). Unknown keys are
//! errors: a typo must never silently fall back to a default.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use toml::Table;

mod memcached;
mod refresh;
mod site;
mod tls;
mod walk;
pub use memcached::MemcachedConfig;
pub use refresh::RefreshAhead;
pub use site::{
    ActiveCheck, Balance, CacheMode, HealthConfig, HostPattern, PathPattern, RuleConfig, ServerConfig, SiteConfig,
};
use walk::Walker;
pub use walk::{parse_duration, parse_size};

/// The validated runtime configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Address of the cleartext listener `listen` (or `--listen`).
    pub listen: SocketAddr,
    /// Whether `listen` is served: false when the file has `[[listener]]` tables and no `listen`.
    pub listen_enabled: bool,
    /// The `[[listener]]` tables: more listeners, cleartext or TLS.
    pub listeners: Vec<ListenerConfig>,
    /// The origin every request is forwarded to when no `[[site]]` is configured.
    pub origin: Origin,
    /// The sites (`[[site]]`); empty: one site, every host, forwarded to `origin`.
    pub sites: Vec<SiteConfig>,
    /// Cache settings.
    pub cache: CacheConfig,
    /// Timeouts.
    pub timeouts: Timeouts,
    /// Limits on what clients may send.
    pub limits: Limits,
    /// Logging.
    pub log: LogConfig,
    /// Request coalescing.
    pub coalescing: Coalescing,
    /// Serving stale responses.
    pub stale: StaleConfig,
    /// Targeted cache-control fields (RFC 9213, Surrogate-Control).
    pub targeted: Targeted,
    /// The shared tier on Redis, when configured.
    pub redis: Option<RedisConfig>,
    /// The shared tier on memcached, when configured (never with `redis`).
    pub memcached: Option<MemcachedConfig>,
    /// Refreshing hot objects before they expire.
    pub refresh_ahead: RefreshAhead,
    /// How client addresses are passed on to the origin.
    pub forwarding: Forwarding,
    /// What `/ready` asks of the origin.
    pub health: Health,
    /// The admin listener, when configured.
    pub admin: Option<AdminConfig>,
    /// Purging.
    pub purge: PurgeConfig,
}

/// The admin listener: purges (and the other operator calls), apart from client traffic.
#[derive(Clone, PartialEq)]
pub struct AdminConfig {
    /// Address it listens on (loopback by default).
    pub listen: SocketAddr,
    /// The token every call must carry (`Authorization: Bearer` or `Fastly-Key`). Without one,
    /// which only a loopback `listen` allows, calls need none.
    pub token: Option<String>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig { listen: "127.0.0.1:9180".parse().expect("valid"), token: None }
    }
}

impl fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The token is a secret: never in a log line.
        f.debug_struct("AdminConfig")
            .field("listen", &self.listen)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .finish()
    }
}

/// Purging: the tags (surrogate keys) on the origin's responses.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PurgeConfig {
    /// Send `Surrogate-Key`, `Cache-Tag` and `xkey` on to clients (off: they are the origin's
    /// business, and may say more than it means to publish).
    pub forward_tag_fields: bool,
}

/// How client addresses are passed on to the origin.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Forwarding {
    /// Peers whose `X-Forwarded-For` is kept (and extended with their address): the load
    /// balancers in front of this proxy. Anyone else's is replaced with their own address.
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

impl Forwarding {
    /// True when `peer` is one of the trusted proxies.
    pub fn trusts(&self, peer: std::net::IpAddr) -> bool {
        !self.trusted_proxies.is_empty() && self.trusted_proxies.iter().any(|net| net.contains(&peer))
    }
}

/// What `/ready` asks of the origin.
#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    /// The origin counts as reachable when it answered within this long; when no request reached
    /// it for this long, `/ready` tries a connection to it.
    pub origin_interval: Duration,
}

/// The shared tier: Redis, standalone or Cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct RedisConfig {
    /// `redis://[user:password@]host:port[/db]` (a seed node when `cluster`).
    pub url: String,
    /// Use the Redis Cluster client.
    pub cluster: bool,
    /// Time allowed to every Redis call; past it the call is a miss.
    pub budget: Duration,
    /// Larger objects stay in memory only.
    pub max_object_bytes: u64,
    /// Prefix of every key.
    pub key_prefix: String,
    /// Upper bound of every key's TTL.
    pub ttl_cap: Duration,
    /// Writes waiting to be sent; beyond it writes are dropped (and counted).
    pub write_queue: usize,
    /// ACL user name (`AUTH user password`), when not in the URL.
    pub username: Option<String>,
    /// Password, read from `password_file` or the environment variable `password_env` at load.
    pub password: Option<Secret>,
    /// CA certificates (PEM) a `rediss://` server's certificate is verified against, read at
    /// load; `None`: the system's roots.
    pub ca: Option<Vec<u8>>,
}

/// A secret read from outside proxy.toml: never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: "redis://127.0.0.1:6379".into(),
            cluster: false,
            budget: Duration::from_millis(50),
            max_object_bytes: 1 << 20,
            key_prefix: "ec".into(),
            ttl_cap: Duration::from_secs(86_400),
            write_queue: 4096,
            username: None,
            password: None,
            ca: None,
        }
    }
}

/// Request coalescing: one origin request per key at a time.
#[derive(Debug, Clone, PartialEq)]
pub struct Coalescing {
    /// Coalesce concurrent misses and revalidations of the same key.
    pub enabled: bool,
    /// A waiter that has not seen the response head after this long goes to the origin itself.
    pub wait_limit: Duration,
    /// A key whose response could not be shared is not coalesced for this long (hit-for-pass).
    pub hit_for_pass: Duration,
}

/// Serving stale responses (RFC 5861 and RFC 9111 §4.2.4).
#[derive(Debug, Clone, PartialEq)]
pub struct StaleConfig {
    /// When the origin fails (5xx, refused, timeout), a stale response may be served for this long
    /// past its expiry even without `stale-if-error` (unless `must-revalidate` and the like forbid
    /// it).
    pub grace: Duration,
}

/// Targeted cache-control fields.
#[derive(Debug, Clone, PartialEq)]
pub struct Targeted {
    /// An edgecache-specific field that takes precedence over `CDN-Cache-Control` and
    /// `Cache-Control` (empty: none).
    pub field: Option<http::HeaderName>,
    /// Send that field on to clients.
    pub forward_field: bool,
    /// Send `CDN-Cache-Control` on to clients (so a downstream CDN can use it).
    pub forward_cdn_cache_control: bool,
    /// Send `Surrogate-Control` on to clients.
    pub forward_surrogate_control: bool,
}

/// The origin server.
#[derive(Debug, Clone, PartialEq)]
pub struct Origin {
    /// `http://host:port` or `https://host:port` as configured (no path).
    pub url: String,
    /// `host:port` to connect to.
    pub authority: http::uri::Authority,
    /// `Host` sent to the origin instead of the client's (`origin.host`).
    pub host: Option<http::HeaderValue>,
    /// For an `https://` origin: how its certificate is verified, and the one presented to it.
    pub tls: Option<OriginTls>,
}

/// TLS to the origin.
#[derive(Debug, Clone)]
pub struct OriginTls {
    /// Sent as SNI and verified in the origin's certificate (`origin.server_name`, by default
    /// the URL's host).
    pub server_name: rustls::pki_types::ServerName<'static>,
    /// The CA bundle the origin's certificate is verified against (`None`: the system's roots).
    pub ca: Option<PathBuf>,
    /// The client certificate presented when the origin asks for one (mutual TLS).
    pub client_certificate: Option<crate::tls::PemPair>,
    /// The rustls client configuration built from the above.
    pub client: Arc<rustls::ClientConfig>,
    /// A digest of the files' contents when they were read: a reload that finds a renewed CA
    /// bundle or client certificate under the same paths sees a change.
    pub files_digest: [u8; 32],
}

impl PartialEq for OriginTls {
    /// The same settings and the same file contents (the rustls configuration is made of them).
    fn eq(&self, other: &Self) -> bool {
        self.server_name == other.server_name
            && self.ca == other.ca
            && self.client_certificate == other.client_certificate
            && self.files_digest == other.files_digest
    }
}

/// A `[[listener]]` table.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerConfig {
    /// Address to listen on.
    pub address: SocketAddr,
    /// Present on a TLS listener (`tls = true`).
    pub tls: Option<ListenerTls>,
    /// A cleartext listener that answers every request with a 301 to `https://` on this port
    /// (`redirect_https`, `redirect_port`).
    pub redirect_https: Option<u16>,
    /// Its table in the file, e.g. `listener[1]`, for messages.
    pub field: String,
}

/// A TLS listener's certificates.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerTls {
    /// `[[listener.certificate]]`, chosen per connection by the name the client asks for (SNI)
    /// among their subjectAltName DNS names.
    pub certificates: Vec<CertificateConfig>,
    /// For a client that sends no name, or one no certificate has.
    pub fallback: Fallback,
}

/// A `[[listener.certificate]]` table.
#[derive(Debug, Clone, PartialEq)]
pub struct CertificateConfig {
    /// The PEM files.
    pub files: crate::tls::PemPair,
    /// The certificate of the fallback (by default the first one).
    pub default: bool,
    /// Its table in the file, e.g. `listener[1].certificate[0]`, for messages.
    pub field: String,
}

/// What a TLS listener does for a client that sends no SNI or a name no certificate has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// Serves the default certificate.
    Default,
    /// Refuses the handshake.
    Refuse,
}

/// Cache settings.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheConfig {
    /// Memory budget in bytes (keys, headers and bodies).
    pub memory_bytes: u64,
    /// Responses larger than this stream through and are not stored.
    pub max_object_bytes: u64,
    /// A range of an object not stored is fetched from the origin in slices of this many bytes
    /// (aligned to multiples of it), each stored as a piece of the object.
    pub slice_bytes: u64,
    /// Heuristic freshness (RFC 9111 §4.2.2) for responses without explicit expiration.
    pub heuristic_freshness: bool,
    /// Upper bound on a heuristic lifetime.
    pub heuristic_max: Duration,
    /// How long a stale entry is kept for revalidation after it expires.
    pub keep_stale: Duration,
    /// Most variants (Vary) kept per URL.
    pub max_variants: usize,
    /// Store responses carrying `Set-Cookie` (strongly discouraged for a shared cache).
    pub store_set_cookie: bool,
    /// Let the kernel back the process's memory with transparent huge pages. Off by default:
    /// filling a 2 MiB page stalls every connection while the kernel clears it.
    pub transparent_huge_pages: bool,
    /// Claim the memory budget at start-up and fault in every page of it, so that a growing
    /// cache never waits for a page fault; the process then keeps the memory it has.
    pub preallocate: bool,
    /// The cache-key version of every site that does not set its own (`[[site]] key_version`):
    /// changing it makes every object stored under the old one unreachable. `None`: keys as
    /// without a version.
    pub key_version: Option<String>,
}

/// Timeouts.
#[derive(Debug, Clone, PartialEq)]
pub struct Timeouts {
    /// Connecting to the origin.
    pub connect: Duration,
    /// From sending the request to the origin's response head.
    pub first_byte: Duration,
    /// Reading a client's request head.
    pub header_read: Duration,
    /// Longest pause between two chunks of a client's request body.
    pub request_body: Duration,
    /// Idle keep-alive connections to the origin are closed after this; also the longest pause
    /// between two chunks of the origin's response body.
    pub idle: Duration,
    /// Hard deadline for in-flight requests after SIGTERM / SIGINT.
    pub shutdown: Duration,
    /// A client connection with no request in progress is closed after this (HTTP/2: GOAWAY).
    pub client_idle: Duration,
    /// Longest wait for a connection to the origin when `limits.origin_connections` are all
    /// busy; past it the request is answered 503.
    pub origin_queue: Duration,
}

/// Limits on client input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest request head accepted (HTTP/1.1 read buffer / HTTP/2 header list).
    pub max_header_bytes: usize,
    /// Client connections open at once; beyond it, new connections wait in the listen backlog.
    pub max_connections: usize,
    /// Concurrent HTTP/2 streams per client connection.
    pub max_concurrent_streams: u32,
    /// Connections to the origin open at once (busy and idle).
    pub origin_connections: usize,
}

/// Logging.
#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    /// One line per request on the `access` target.
    pub access: bool,
    /// `text` or `json`.
    pub format: LogFormat,
    /// How access log lines are written.
    pub access_format: AccessFormat,
}

/// How access log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessFormat {
    /// An event on the `access` target with named fields, in the `log.format` of every line.
    Fields,
    /// The combined log format (Apache, nginx) with the cache outcome appended, one line on
    /// standard output, for tools that read it.
    Combined,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable.
    Text,
    /// One JSON object per line.
    Json,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:8080".parse().expect("valid"),
            listen_enabled: true,
            listeners: Vec::new(),
            origin: Origin::parse("http://127.0.0.1:9000").expect("valid"),
            sites: Vec::new(),
            cache: CacheConfig {
                memory_bytes: 256 << 20,
                max_object_bytes: 8 << 20,
                slice_bytes: 1 << 20,
                heuristic_freshness: true,
                heuristic_max: Duration::from_secs(86_400),
                keep_stale: Duration::from_secs(3_600),
                max_variants: 16,
                store_set_cookie: false,
                transparent_huge_pages: false,
                preallocate: false,
                key_version: None,
            },
            timeouts: Timeouts {
                connect: Duration::from_secs(5),
                first_byte: Duration::from_secs(30),
                header_read: Duration::from_secs(10),
                request_body: Duration::from_secs(30),
                idle: Duration::from_secs(60),
                shutdown: Duration::from_secs(10),
                client_idle: Duration::from_secs(60),
                origin_queue: Duration::from_secs(5),
            },
            limits: Limits {
                max_header_bytes: 64 << 10,
                max_connections: 10_000,
                max_concurrent_streams: 100,
                origin_connections: 256,
            },
            log: LogConfig { access: true, format: LogFormat::Text, access_format: AccessFormat::Fields },
            coalescing: Coalescing {
                enabled: true,
                wait_limit: Duration::from_secs(10),
                hit_for_pass: Duration::from_secs(10),
            },
            stale: StaleConfig { grace: Duration::from_secs(10) },
            targeted: Targeted {
                field: Some(http::HeaderName::from_static("edgecache-control")),
                forward_field: false,
                forward_cdn_cache_control: true,
                forward_surrogate_control: false,
            },
            redis: None,
            memcached: None,
            refresh_ahead: RefreshAhead::default(),
            forwarding: Forwarding::default(),
            health: Health { origin_interval: Duration::from_secs(10) },
            admin: None,
            purge: PurgeConfig::default(),
        }
    }
}

impl Config {
    /// The sites as configured, or the one implied by `origin` when there is no `[[site]]`.
    pub fn effective_sites(&self) -> Vec<SiteConfig> {
        if self.sites.is_empty() {
            vec![SiteConfig::single(self)]
        } else {
            self.sites.clone()
        }
    }
}

impl Origin {
    /// Parses an origin URL: `http://host[:port]` or `https://host[:port]`, nothing after the
    /// authority but `/`. An `https://` origin is verified against the system's roots, by its
    /// URL's host.
    pub fn parse(s: &str) -> Result<Origin, String> {
        let mut origin = Origin::parse_url(s)?;
        if origin.is_https() {
            origin.tls = Some(OriginTls::new(&origin, None, None, None).map_err(|(_, e)| e)?);
        }
        Ok(origin)
    }

    /// True for an `https://` origin.
    pub fn is_https(&self) -> bool {
        self.url.starts_with("https://")
    }

    /// A name to send as SNI and verify: a DNS name or an IP address.
    pub fn server_name(s: &str) -> Result<rustls::pki_types::ServerName<'static>, String> {
        let bare = s.trim_start_matches('[').trim_end_matches(']');
        rustls::pki_types::ServerName::try_from(bare.to_string()).map_err(|e| format!("{s:?}: {e}"))
    }

    /// The URL alone, without TLS set up.
    fn parse_url(s: &str) -> Result<Origin, String> {
        let url = url::Url::parse(s).map_err(|e| format!("not a valid URL ({e}): {s:?}"))?;
        let scheme = match url.scheme() {
            scheme @ ("http" | "https") => scheme,
            other => return Err(format!("unsupported scheme {other:?}; use http:// or https://")),
        };
        if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
            return Err(format!("must have no path, query or fragment: {s:?}"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("must not contain credentials".into());
        }
        let host = url.host_str().ok_or_else(|| format!("has no host: {s:?}"))?;
        let port = url.port_or_known_default().unwrap_or(80);
        let authority: http::uri::Authority =
            format!("{host}:{port}").parse().map_err(|e| format!("invalid authority: {e}"))?;
        Ok(Origin { url: format!("{scheme}://{authority}"), authority, host: None, tls: None })
    }
}

impl OriginTls {
    /// TLS to `origin`: `server_name` (default: the URL's host) verified against the bundle at
    /// `ca` (default: the system's roots), `client` presented when asked.
    pub fn new(
        origin: &Origin,
        server_name: Option<rustls::pki_types::ServerName<'static>>,
        ca: Option<PathBuf>,
        client: Option<crate::tls::PemPair>,
    ) -> Result<OriginTls, (crate::tls::OriginField, String)> {
        let server_name = match server_name {
            Some(n) => n,
            None => Origin::server_name(origin.authority.host())
                .map_err(|e| (crate::tls::OriginField::Ca, format!("the URL's host is not a name to verify: {e}")))?,
        };
        let config = crate::tls::client_config(ca.as_deref(), client.as_ref())?;
        let files = ca.iter().chain(client.iter().flat_map(|c| [&c.chain, &c.key]));
        let files_digest = crate::tls::digest_files(files);
        Ok(OriginTls { server_name, ca, client_certificate: client, client: config, files_digest })
    }
}

/// Every problem found in a configuration file, one per field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// `(path, message)` pairs, e.g. `("timeouts.connect", "expected a duration like \"5s\"")`.
    pub problems: Vec<(String, String)>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (path, msg)) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            if path.is_empty() {
                write!(f, "{msg}")?;
            } else {
                write!(f, "{path}: {msg}")?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads and validates a file.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            problems: vec![(String::new(), format!("cannot read {}: {e}", path.display()))],
        })?;
        Config::parse(&text)
    }

    /// Parses and validates the text of a `proxy.toml`.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let table: Table = text.parse().map_err(|e: toml::de::Error| {
            let msg = e.message().to_string();
            let at = e.span().map(|s| line_col(text, s.start)).unwrap_or_default();
            ConfigError { problems: vec![(String::new(), format!("not valid TOML{at}: {msg}"))] }
        })?;
        let mut w = Walker { problems: Vec::new() };
        let mut cfg = Config::default();
        let mut root = table;

        let listen_set = root.contains_key("listen");
        if let Some(v) = root.remove("listen") {
            if let Some(a) = w.socket_addr("listen", &v) {
                cfg.listen = a;
            }
        }
        let origin_given = root.contains_key("origin");
        if let Some(v) = root.remove("origin") {
            match v {
                toml::Value::String(s) => match Origin::parse(&s) {
                    Ok(o) => cfg.origin = o,
                    Err(e) => w.bad("origin", e),
                },
                toml::Value::Table(t) => {
                    if let Some(o) = tls::origin_table(&mut w, t) {
                        cfg.origin = o;
                    }
                }
                v => w.bad("origin", format!("expected a URL string or an [origin] table, found {}", v.type_str())),
            }
        }
        if let Some(v) = root.remove("listener") {
            tls::listeners(&mut w, v, listen_set, &mut cfg);
        }
        for (name, read) in SECTIONS {
            if let Some(mut t) = w.table(&mut root, name) {
                read(&mut w, &mut t, &mut cfg);
            }
        }
        memcached::one_shared_tier(&mut w, &cfg);
        site::sites(&mut w, &mut root, &mut cfg);
        if origin_given && !cfg.sites.is_empty() {
            w.bad("origin", "not used with [[site]]: give each site its servers (default = true for the rest)".into());
        }
        w.unknown(&root, "");
        if w.problems.is_empty() {
            Ok(cfg)
        } else {
            Err(ConfigError { problems: w.problems })
        }
    }
}

/// `[forwarding]`: every key read from `t`, bad ones reported.
fn forwarding_section(w: &mut Walker, t: &mut Table, cfg: &mut Config) {
    let f = &mut cfg.forwarding;
    w.take(t, "forwarding", "trusted_proxies", |w, p, v| {
        let Some(list) = v.as_array() else {
            w.bad(p, format!("expected a list of addresses or networks like [\"10.0.0.0/8\"], found {}", v.type_str()));
            return None;
        };
        for (i, item) in list.iter().enumerate() {
            let path = format!("{p}[{i}]");
            match item.as_str().map(|s| {
                (s, s.parse::<ipnet::IpNet>().or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from)))
            }) {
                Some((_, Ok(net))) => f.trusted_proxies.push(net),
                Some((s, Err(_))) => {
                    w.bad(&path, format!("expected an address or a network like \"10.0.0.0/8\", found {s:?}"))
                }
                None => w.bad(&path, format!("expected a string, found {}", item.type_str())),
            }
        }
        Some(())
    });
    w.unknown(t, "forwarding");
}

/// A table of the file and the function that reads it into the configuration.
type Section = fn(&mut Walker, &mut Table, &mut Config);

/// The tables, in the order they are read.
const SECTIONS: &[(&str, Section)] = &[
    ("forwarding", forwarding_section),
    ("cache", cache_section),
    ("timeouts", timeouts_section),
    ("limits", limits_section),
    ("coalescing", coalescing_section),
    ("stale", stale_section),
    ("targeted", targeted_section),
    ("redis", redis_section),
    ("memcached", memcached::memcached_section),
    ("refresh_ahead", refresh::refresh_section),
    ("admin", admin_section),
    ("purge", purge_section),
    ("log", log_section),
    ("health", health_section),
];

/// `[health]`: every key read from `t`, bad ones reported.
fn health_section(w: &mut Walker, t: &mut Table, cfg: &mut Config) {
    let h = &mut cfg.health;
    w.take(t, "health", "origin_interval", |w, p, v| {
        let d = w.duration(p, v)?;
        if d < Duration::from_secs(1) || d > Duration::from_secs(3600) {
            w.bad(p, "must be between 1s and 1h".into());
            return None;
        }
        h.origin_interval = d;
        Some(())
    });
    w.unknown(t, "health");
}

/// `[cache]`: every key read from `t`, bad ones reported.
fn cache_section(w: &mut Walker, t: &mut Table, cfg: &mut Config) {
    let c = &mut cfg.cache;
    w.take(t, "cache", "memory", |w, p, v| w.size(p, v).map(|s| c.memory_bytes = s));
    w.take(t, "cache", "max_object_size", |w, p, v| w.size(p, v).map(|s| c.max_object_bytes = s));
    let mut slice_size = None;
    w.take(t, "cache", "slice_size", |w, p, v| w.size(p, v).map(|s| slice_size = Some(s)));
    w.take(t, "cache", "heuristic_freshness", |w, p, v| w.boolean(p, v).map(|b| c.heuristic_freshness = b));
    w.take(t, "cache", "heuristic_max", |w, p, v| w.duration(p, v).map(|d| c.heuristic_max = d));
    w.take(t, "cache", "keep_stale", |w, p, v| w.duration(p, v).map(|d| c.keep_stale = d));
    w.take(t, "cache", "max_variants", |w, p, v| w.integer(p, v, 1, 1024).map(|n| c.max_variants = n as usize));
    w.take(t, "cache", "store_set_cookie", |w, p, v| w.boolean(p, v).map(|b| c.store_set_cookie = b));
    w.take(t, "cache", "transparent_huge_pages", |w, p, v| w.boolean(p, v).map(|b| c.transparent_huge_pages = b));
    w.take(t, "cache", "preallocate", |w, p, v| w.boolean(p, v).map(|b| c.preallocate = b));
    w.take(t, "cache", "key_version", |w, p, v| key_version(w, p, v).map(|k| c.key_version = Some(k)));
    w.unknown(t, "cache");
    if c.memory_bytes < 1 << 20 {
        w.bad("cache.memory", "must be at least 1MiB".into());
    }
    if c.max_object_bytes == 0 {
        w.bad("cache.max_object_size", "must be greater than 0".into());
    } else if c.max_object_bytes > c.memory_bytes {
        w.bad("cache.max_object_size", "must not exceed cache.memory".into());
    }
    match slice_size {
        Some(s) if s < 1 << 10 => w.bad("cache.slice_size", "must be at least 1KiB".into()),
        Some(s) if s > c.max_object_bytes => w.bad("cache.slice_size", "must not exceed cache.max_object_size".into()),
        Some(s) => c.slice_bytes = s,
        // The default, within a smaller max_object_size.
        None => c.slice_bytes = c.slice_bytes.min(c.max_object_bytes.max(1)),
    }
}

/// A cache-key version (`cache.key_version`, `[[site]] key_version`): 1 to 64 visible ASCII
/// characters, such as a release name or a date.
fn key_version(w: &mut Walker, path: &str, v: &toml::Value) -> Option<String> {
    match v.as_str() {
        Some(s) if !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_graphic()) => Some(s.to_string()),
        _ => {
            w.bad(path, "expected 1 to 64 visible ASCII characters (no spaces), like \"2026-12-05\" or \"v42\"".into());
            None
        }
    }
}

/// `[timeouts]`: every key read from `t`, bad ones reported.
fn timeouts_section(w: &mut Walker, t: &mut Table, cfg: &mut Config) {
    let to = &mut cfg.timeouts;
    for (name, slot) in [
        ("connect", &mut to.connect),
        ("first_byte", &mut to.first_byte),
        ("header_read", &mut to.header_read),
        ("request_body", &mut to.request_body),
        ("idle", &mut to.idle),
        ("shutdown", &mut to.shutdown),
        ("client_idle", &mut to.client_idle),
        ("origin_queue", &mut to.origin_queue),
    ] {
        w.take(t, "timeouts", name, |w, p, v| {
            let d = w.duration(p, v)?;
            if d.is_zero() {
                w.bad(p, "must be greater than 0".into());
                return None;
            }
            *slot = d;
            Some(())
        });
    }
    w.unknown(t, "timeouts");
}

/// `[limits]`: every key read from `t`, bad ones reported.
fn limits_section(w: &mut Walker, t: &mut Table, cfg: &mut Config) {
    let l = &mut cfg.limits;
    w.take(t, "limits", "max_header_size", |w, p, v| {
        let s = w.size(p, v)?;
        if !(8192..=16 << 20).contains(&s) {
            w.bad(p, "must be between 8KiB and 16MiB".into());
            return None;
        }
        l.max_header_bytes = s as usize;
        Some(())
    });
    w.take(t, "limits", "max_connections", |w, p, v| {
        w.integer(p, v, 1, 1_000_000).map(|n| l.max_connections = n as usize)
    });
    w.take(t, "limits", "max_concurrent_streams", |w, p, v| {
        w.integer(p, v, 1, 10_000).map(|n| l.max_concurrent_streams = n as u32)
    });
    w.take(t, "limits", "origin_connections", |w, p, v| {
        w.integer(p, v, 1, 1_000_000).map(|n| l.origin_connections = n as usize)
    });
    w.unknown(t, "limits");
}

/// `[coalescing]`: every key read from `t`, bad ones reported.
fn coalescing_section(w: &mut Walker, t: &mut Table, cfg: &mut Config) {
    let c = &mut cfg.coalescing;
    w.take(t, "coalescing", "enabled", |w, p, v| w.boolean(p, v).map(|b| c.enabled = b));
    w.take(t, "coalescing", "wait_limit", |w, p, v| w.duration(p, v).map(|d| c.wait_limit = d));
    w.take(t, "coalescing", "hit_for_pass", |w, p, v| w.duration(p, v).map(|d| c.hit_for_pass = d));
    w.unknown(t, "coalescing");
}

/// `[stale]`: every key read from `t`, bad ones reported.
fn stale_section(w: &mut Walker, t: &mut Table, cfg: &mut Config) {
    let s = &mut cfg.stale;
    w.take(t, "stale", "grace", |w, p, v| w.duration(p, v).map(|d| s.grace = d));
    w.unknown(t, "stale");
}

/// `[targeted]`: every key read from `t`, bad ones reported.
fn targeted_section(w: &mut Walker, t: &mut Table, cfg: &mut Config) {
    let tg = &mut cfg.targeted;
    w.take(t, "targeted", "field", |w, p, v| match v.as_str() {
        Some("") => {
            tg.field = None;
            Some(())
        }
        Some(s) => match http::HeaderName::from_bytes(s.to_ascii_lowercase().as_bytes()) {
            Ok(n) if !matches!(n.as_str(), "cache-control" | "cdn-cache-control" | "surrogate-control") => {
                tg.field = Some(n);
                Some(())
            }
            Ok(_) => {
                w.bad(
                    p,
                    "must be a field of its own, not Cache-Control, CDN-Cache-Control or Surrogate-Control".into(),
                );
                None
            }
            Err(_) => {
                w.bad(p, format!("not a valid header field name: {s:?}"));
                None
            }
        },
        None => {
            w.bad(p, format!("expected a header field name, found {}", v.type_str()));
            None
        }
    });
    w.take(t, "targeted", "forward_field", |w, p, v| w.boolean(p, v).map(|b| tg.forward_field = b));
    w.take(t, "targeted", "forward_cdn_cache_control", |w, p, v| {
        w.boolean(p, v).map(|b| tg.forward_cdn_cache_control = b)
    });
    w.take(t, "targeted", "forward_surrogate_control", |w, p, v| {
        w.boolean(p, v).map(|b| tg.forward_surrogate_control = b)
    });
    w.unknown(t, "targeted");
}

/// `[redis]`: every key read from `t`, bad ones reported.
fn redis_section(w: &mut Walker, t: &mut Table, cfg: &mut Config) {
    let mut r = RedisConfig::default();
    w.take(t, "redis", "url", |w, p, v| match v.as_str().map(|s| (s, url::Url::parse(s))) {
        Some((s, Ok(u))) if matches!(u.scheme(), "redis" | "rediss") && u.host_str().is_some() => {
            r.url = s.to_string();
            Some(())
        }
        Some((s, _)) => {
            w.bad(p, format!("expected redis://host:port, found {s:?}"));
            None
        }
        None => {
            w.bad(p, format!("expected a URL string, found {}", v.type_str()));
            None
        }
    });
    w.take(t, "redis", "cluster", |w, p, v| w.boolean(p, v).map(|b| r.cluster = b));
    w.take(t, "redis", "budget", |w, p, v| {
        let d = w.duration(p, v)?;
        if d.is_zero() || d > Duration::from_secs(10) {
            w.bad(p, "must be between 1ms and 10s".into());
            return None;
        }
        r.budget = d;
        Some(())
    });
    w.take(t, "redis", "max_object_size", |w, p, v| w.size(p, v).map(|s| r.max_object_bytes = s));
    w.take(t, "redis", "key_prefix", |w, p, v| match v.as_str() {
        Some(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic() && b != b'{' && b != b'}') => {
            r.key_prefix = s.to_string();
            Some(())
        }
        _ => {
            w.bad(p, "expected a non-empty string without spaces or braces".into());
            None
        }
    });
    w.take(t, "redis", "ttl_cap", |w, p, v| {
        let d = w.duration(p, v)?;
        if d < Duration::from_secs(1) {
            w.bad(p, "must be at least 1s".into());
            return None;
        }
        r.ttl_cap = d;
        Some(())
    });
    w.take(t, "redis", "write_queue", |w, p, v| w.integer(p, v, 1, 1_000_000).map(|n| r.write_queue = n as usize));
    w.take(t, "redis", "username", |w, p, v| match v.as_str() {
        Some(s) if !s.is_empty() && !s.contains(char::is_whitespace) => {
            r.username = Some(s.to_string());
            Some(())
        }
        _ => {
            w.bad(p, "expected a user name without spaces".into());
            None
        }
    });
    // The password never sits in proxy.toml: a file (mode 0600, a secret mount) or the
    // environment (a systemd credential, a container secret) holds it.
    let mut from = Vec::new();
    w.take(t, "redis", "password_file", |w, p, v| {
        let Some(path) = v.as_str() else {
            w.bad(p, format!("expected a file path, found {}", v.type_str()));
            return None;
        };
        match std::fs::read_to_string(path) {
            Ok(text) if !text.trim_end_matches(['\r', '\n']).is_empty() => {
                r.password = Some(Secret(text.trim_end_matches(['\r', '\n']).to_string()));
                from.push(p.to_string());
                Some(())
            }
            Ok(_) => {
                w.bad(p, format!("{path} is empty"));
                None
            }
            Err(e) => {
                w.bad(p, format!("cannot read {path}: {e}"));
                None
            }
        }
    });
    w.take(t, "redis", "password_env", |w, p, v| {
        let Some(name) = v.as_str() else {
            w.bad(p, format!("expected an environment variable name, found {}", v.type_str()));
            return None;
        };
        match std::env::var(name) {
            Ok(value) if !value.is_empty() => {
                r.password = Some(Secret(value));
                from.push(p.to_string());
                Some(())
            }
            _ => {
                w.bad(p, format!("the environment variable {name} is not set"));
                None
            }
        }
    });
    if from.len() > 1 {
        w.bad("redis.password_env", "give the password once: password_file or password_env".into());
    }
    w.take(t, "redis", "ca", |w, p, v| {
        let Some(path) = v.as_str() else {
            w.bad(p, format!("expected a file path, found {}", v.type_str()));
            return None;
        };
        match std::fs::read(path) {
            Ok(pem) if String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") => {
                r.ca = Some(pem);
                Some(())
            }
            Ok(_) => {
                w.bad(p, format!("{path} holds no PEM certificate"));
                None
            }
            Err(e) => {
                w.bad(p, format!("cannot read {path}: {e}"));
                None
            }
        }
    });
    if r.ca.is_some() && !r.url.starts_with("rediss://") {
        w.bad("redis.ca", "only for a rediss:// (TLS) url".into());
    }
    if r.password.is_some() && url::Url::parse(&r.url).is_ok_and(|u| u.password().is_some()) {
        w.bad("redis.url", "has a password, and so does password_file/password_env: give it once".into());
    }
    w.unknown(t, "redis");
    cfg.redis = Some(r);
}

/// `[admin]`: every key read from `t`, bad ones reported. The table turns the admin listener on.
fn admin_section(w: &mut Walker, t: &mut Table, cfg: &mut Config) {
    let mut a = AdminConfig::default();
    w.take(t, "admin", "listen", |w, p, v| w.socket_addr(p, v).map(|addr| a.listen = addr));
    let valid = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic());
    let mut token = None;
    w.take(t, "admin", "token", |w, p, v| match v.as_str() {
        Some(s) if valid(s) => {
            token = Some(s.to_string());
            Some(())
        }
        _ => {
            w.bad(p, "expected a non-empty string of visible ASCII characters (no spaces)".into());
            None
        }
    });
    let mut from_file = None;
    w.take(t, "admin", "token_file", |w, p, v| {
        let Some(path) = v.as_str() else {
            w.bad(p, format!("expected a file path, found {}", v.type_str()));
            return None;
        };
        match std::fs::read_to_string(path) {
            Ok(text) if valid(text.trim_end()) => {
                from_file = Some(text.trim_end().to_string());
                Some(())
            }
            Ok(_) => {
                w.bad(p, format!("{path}: expected one token of visible ASCII characters (no spaces)"));
                None
            }
            Err(e) => {
                w.bad(p, format!("cannot read {path}: {e}"));
                None
            }
        }
    });
    w.unknown(t, "admin");
    match (token, from_file) {
        (Some(_), Some(_)) => w.bad("admin.token_file", "set admin.token or admin.token_file, not both".into()),
        (t, f) => a.token = t.or(f),
    }
    if a.token.is_none() && !a.listen.ip().is_loopback() {
        w.bad(
            "admin.token",
            format!(
                "required when admin.listen ({}) is not a loopback address: anyone who reaches it could purge; \
                 set admin.token or admin.token_file, or listen on 127.0.0.1",
                a.listen
            ),
        );
    }
    cfg.admin = Some(a);
}

/// `[purge]`: every key read from `t`, bad ones reported.
fn purge_section(w: &mut Walker, t: &mut Table, cfg: &mut Config) {
    let p = &mut cfg.purge;
    w.take(t, "purge", "forward_tag_fields", |w, path, v| w.boolean(path, v).map(|b| p.forward_tag_fields = b));
    w.unknown(t, "purge");
}

/// `[log]`: every key read from `t`, bad ones reported.
fn log_section(w: &mut Walker, t: &mut Table, cfg: &mut Config) {
    let l = &mut cfg.log;
    w.take(t, "log", "access", |w, p, v| w.boolean(p, v).map(|b| l.access = b));
    w.take(t, "log", "format", |w, p, v| match v.as_str() {
        Some("text") => {
            l.format = LogFormat::Text;
            Some(())
        }
        Some("json") => {
            l.format = LogFormat::Json;
            Some(())
        }
        _ => {
            w.bad(p, "expected \"text\" or \"json\"".into());
            None
        }
    });
    w.take(t, "log", "access_format", |w, p, v| match v.as_str() {
        Some("fields") => {
            l.access_format = AccessFormat::Fields;
            Some(())
        }
        Some("combined") => {
            l.access_format = AccessFormat::Combined;
            Some(())
        }
        _ => {
            w.bad(p, "expected \"fields\" or \"combined\"".into());
            None
        }
    });
    w.unknown(t, "log");
}

fn line_col(text: &str, offset: usize) -> String {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    format!(" at line {line}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("256MiB"), Ok(256 << 20));
        assert_eq!(parse_size("10"), Ok(10));
        assert!(parse_size("ten").is_err());
        assert!(parse_size("5XB").is_err());
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("5").is_err());
    }

    #[test]
    fn every_bad_field_is_reported() {
        let err = Config::parse(
            r#"
            listen = "nowhere"
            origin = "ftp://x"
            colour = "blue"
            [cache]
            memory = "lots"
            max_object_size = true
            slice_size = "1KB"
            [timeouts]
            connect = "0s"
            idle = 5
            "#,
        )
        .unwrap_err();
        let paths: Vec<&str> = err.problems.iter().map(|(p, _)| p.as_str()).collect();
        for p in [
            "listen",
            "origin",
            "colour",
            "cache.memory",
            "cache.max_object_size",
            "cache.slice_size",
            "timeouts.connect",
            "timeouts.idle",
        ] {
            assert!(paths.contains(&p), "{p} missing from {paths:?}");
        }
    }

    #[test]
    fn the_access_format_is_fields_or_combined() {
        let cfg = Config::parse("[log]\naccess_format = \"combined\"").unwrap();
        assert_eq!(cfg.log.access_format, AccessFormat::Combined);
        let err = Config::parse("[log]\naccess_format = \"clf\"").unwrap_err();
        assert_eq!(
            err.problems,
            [("log.access_format".to_string(), "expected \"fields\" or \"combined\"".to_string())]
        );
    }

    #[test]
    fn the_origin_interval_is_between_a_second_and_an_hour() {
        let cfg = Config::parse("[health]\norigin_interval = \"30s\"").unwrap();
        assert_eq!(cfg.health.origin_interval, Duration::from_secs(30));
        let err = Config::parse("[health]\norigin_interval = \"500ms\"\ncolour = 1").unwrap_err();
        assert_eq!(
            err.problems,
            [
                ("health.origin_interval".to_string(), "must be between 1s and 1h".to_string()),
                ("health.colour".to_string(), "unknown key".to_string())
            ]
        );
    }

    #[test]
    fn admin_keys_are_checked_and_a_public_listener_needs_a_token() {
        let cfg = Config::parse("[admin]\ntoken = \"s3cret\"\n").unwrap();
        let admin = cfg.admin.unwrap();
        assert_eq!((admin.listen.to_string(), admin.token.as_deref()), ("127.0.0.1:9180".into(), Some("s3cret")));
        assert!(!format!("{admin:?}").contains("s3cret"), "the token is printed");
        assert!(Config::parse("").unwrap().admin.is_none(), "on without [admin]");
        let err = Config::parse("[admin]\nlisten = \"0.0.0.0:9180\"\n").unwrap_err();
        assert_eq!(err.problems.len(), 1);
        assert_eq!(err.problems[0].0, "admin.token");
        assert!(err.problems[0].1.contains("not a loopback address"), "{}", err.problems[0].1);
        assert!(Config::parse("[admin]\nlisten = \"[::1]:9180\"\n").is_ok(), "IPv6 loopback needs no token");
        let err = Config::parse("[admin]\ntoken = \"a b\"\ntoken_file = \"/nonexistent\"\ncolour = 1\n").unwrap_err();
        let paths: Vec<&str> = err.problems.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(paths, ["admin.token", "admin.token_file", "admin.colour"]);
        let err = Config::parse("[purge]\nforward_tag_fields = \"yes\"\n").unwrap_err();
        assert_eq!(err.problems[0].0, "purge.forward_tag_fields");
    }

    #[test]
    fn empty_file_is_defaults() {
        let cfg = Config::parse("").unwrap();
        assert_eq!(cfg.cache.memory_bytes, 256 << 20);
        assert_eq!(cfg.cache.slice_bytes, 1 << 20);
    }

    #[test]
    fn slice_size_is_a_size_within_the_object_limit() {
        assert_eq!(Config::parse("[cache]\nslice_size = \"256KiB\"").unwrap().cache.slice_bytes, 256 << 10);
        let small = Config::parse("[cache]\nmax_object_size = \"32KiB\"").unwrap();
        assert_eq!(small.cache.slice_bytes, 32 << 10, "the default stays within max_object_size");
        for bad in ["\"0\"", "\"512\"", "\"9MiB\"", "\"big\"", "true"] {
            let err = Config::parse(&format!("[cache]\nslice_size = {bad}")).unwrap_err();
            let paths: Vec<&str> = err.problems.iter().map(|(p, _)| p.as_str()).collect();
            assert_eq!(paths, ["cache.slice_size"], "slice_size = {bad}");
        }
    }
}
