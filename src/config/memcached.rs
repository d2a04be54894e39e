//! `[memcached]`: memcached as the shared tier, and how it sits with `[redis]`.

use std::time::Duration;

use toml::Table;

use super::walk::Walker;
use super::Config;

/// The shared tier on memcached: the same budget, TTLs, size limit and write queue as Redis, a
/// list of servers, and the bound on how long an invalidation takes to reach every node.
#[derive(Debug, Clone, PartialEq)]
pub struct MemcachedConfig {
    /// `host:port` of each server; every URL lives on one of them (rendezvous hashing).
    pub servers: Vec<String>,
    /// Time allowed to every call; past it the call is a miss.
    pub budget: Duration,
    /// Larger objects stay in memory only.
    pub max_object_bytes: u64,
    /// Prefix of every key.
    pub key_prefix: String,
    /// Upper bound of every key's TTL.
    pub ttl_cap: Duration,
    /// Writes waiting to be sent; beyond it writes are dropped (and counted).
    pub write_queue: usize,
    /// The longest the memory tier keeps an object, and the interval at which the record of
    /// purges is read: how long an invalidation or purge made on another node can take to reach
    /// this one (memcached has no stream to announce it).
    pub memory_ttl: Duration,
}

impl Default for MemcachedConfig {
    fn default() -> Self {
        MemcachedConfig {
            servers: Vec::new(),
            budget: Duration::from_millis(50),
            // memcached's default item size limit is 1 MiB (`-I`), and a URL's variants share one
            // item.
            max_object_bytes: 512 << 10,
            key_prefix: "ec".into(),
            ttl_cap: Duration::from_secs(86_400),
            write_queue: 4096,
            memory_ttl: Duration::from_secs(5),
        }
    }
}

/// `[memcached]`: every key read from `t`, bad ones reported.
pub(super) fn memcached_section(w: &mut Walker, t: &mut Table, cfg: &mut Config) {
    let mut m = MemcachedConfig::default();
    let mut servers_given = false;
    w.take(t, "memcached", "servers", |w, p, v| {
        servers_given = true;
        let Some(list) = v.as_array() else {
            w.bad(p, format!("expected a list of \"host:port\" strings, found {}", v.type_str()));
            return None;
        };
        for (i, item) in list.iter().enumerate() {
            let path = format!("{p}[{i}]");
            match item.as_str() {
                Some(s) if host_port(s) => {
                    if m.servers.iter().any(|have| have == s) {
                        w.bad(&path, format!("{s:?} is listed twice"));
                    } else {
                        m.servers.push(s.to_string());
                    }
                }
                Some(s) => w.bad(&path, format!("expected \"host:port\", found {s:?}")),
                None => w.bad(&path, format!("expected a string, found {}", item.type_str())),
            }
        }
        Some(())
    });
    w.take(t, "memcached", "budget", |w, p, v| {
        let d = w.duration(p, v)?;
        if d.is_zero() || d > Duration::from_secs(10) {
            w.bad(p, "must be between 1ms and 10s".into());
            return None;
        }
        m.budget = d;
        Some(())
    });
    w.take(t, "memcached", "max_object_size", |w, p, v| {
        let s = w.size(p, v)?;
        if s == 0 || s > 1 << 30 {
            w.bad(p, "must be between 1 byte and 1GiB (memcached's -I limit applies too)".into());
            return None;
        }
        m.max_object_bytes = s;
        Some(())
    });
    w.take(t, "memcached", "key_prefix", |w, p, v| match v.as_str() {
        // Memcached keys: at most 250 bytes, no spaces or control characters.
        Some(s) if !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_graphic()) => {
            m.key_prefix = s.to_string();
            Some(())
        }
        _ => {
            w.bad(p, "expected a non-empty string of at most 64 visible ASCII characters (no spaces)".into());
            None
        }
    });
    w.take(t, "memcached", "ttl_cap", |w, p, v| {
        let d = w.duration(p, v)?;
        // Memcached reads a TTL over 30 days as an absolute Unix time.
        if d < Duration::from_secs(1) || d > Duration::from_secs(30 * 86_400) {
            w.bad(p, "must be between 1s and 30d".into());
            return None;
        }
        m.ttl_cap = d;
        Some(())
    });
    w.take(t, "memcached", "write_queue", |w, p, v| w.integer(p, v, 1, 1_000_000).map(|n| m.write_queue = n as usize));
    w.take(t, "memcached", "memory_ttl", |w, p, v| {
        let d = w.duration(p, v)?;
        if d < Duration::from_secs(1) || d > Duration::from_secs(3600) {
            w.bad(p, "must be between 1s and 1h".into());
            return None;
        }
        m.memory_ttl = d;
        Some(())
    });
    w.unknown(t, "memcached");
    if !servers_given {
        w.bad("memcached.servers", "required: the memcached servers, like [\"127.0.0.1:11211\"]".into());
    } else if m.servers.is_empty() && !w.problems.iter().any(|(p, _)| p.starts_with("memcached.servers")) {
        w.bad("memcached.servers", "must list at least one server".into());
    }
    cfg.memcached = Some(m);
}

/// `[redis]` and `[memcached]` together: refused. One shared tier holds the fleet's objects; two
/// would disagree on what is stored and on what was purged.
pub(super) fn one_shared_tier(w: &mut Walker, cfg: &Config) {
    if cfg.redis.is_some() && cfg.memcached.is_some() {
        w.bad(
            "memcached",
            "[redis] is configured too: the shared tier is Redis or memcached, not both; remove one of the tables"
                .into(),
        );
    }
}

/// `host:port` with a port: a name or an address (IPv6 in brackets).
fn host_port(s: &str) -> bool {
    let Some((host, port)) = s.rsplit_once(':') else { return false };
    let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => !host.is_empty() && host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-'),
    };
    host_ok && port.parse::<u16>().is_ok_and(|p| p != 0)
}

#[cfg(test)]
mod tests {
    use super::super::Config;

    fn paths(text: &str) -> Vec<String> {
        Config::parse(text).unwrap_err().problems.into_iter().map(|(p, _)| p).collect()
    }

    #[test]
    fn a_memcached_table_is_read() {
        let cfg = Config::parse(
            "[memcached]\nservers = [\"127.0.0.1:11211\", \"cache-2:11211\"]\nbudget = \"20ms\"\nmemory_ttl = \"2s\"\n",
        )
        .unwrap();
        let m = cfg.memcached.unwrap();
        assert_eq!(m.servers, ["127.0.0.1:11211", "cache-2:11211"]);
        assert_eq!((m.budget.as_millis(), m.memory_ttl.as_secs()), (20, 2));
    }

    #[test]
    fn every_bad_memcached_field_is_reported_with_its_name() {
        assert_eq!(
            paths(
                "[memcached]\nservers = [\"nohost\", \"a:1\", \"a:1\", 3]\nbudget = \"0ms\"\nmax_object_size = 0\n\
                 key_prefix = \"a b\"\nttl_cap = \"31d\"\nwrite_queue = 0\nmemory_ttl = \"0s\"\ncolour = 1\n"
            ),
            [
                "memcached.servers[0]",
                "memcached.servers[2]",
                "memcached.servers[3]",
                "memcached.budget",
                "memcached.max_object_size",
                "memcached.key_prefix",
                "memcached.ttl_cap",
                "memcached.write_queue",
                "memcached.memory_ttl",
                "memcached.colour",
            ]
        );
        assert_eq!(paths("[memcached]\n"), ["memcached.servers"]);
        assert_eq!(paths("[memcached]\nservers = []\n"), ["memcached.servers"]);
    }

    #[test]
    fn redis_and_memcached_together_are_refused() {
        assert_eq!(
            paths("[redis]\nurl = \"redis://127.0.0.1:6379\"\n[memcached]\nservers = [\"127.0.0.1:11211\"]\n"),
            ["memcached"]
        );
    }
}
