//! The sites one node serves: which site a request is for (by its `Host`), and what the site
//! brings to it — its origin pool, its cache rules, the `Host` its origin is sent.
//!
//! Without `[[site]]` there is one site, `default`, for every host, forwarded to `origin`: routing
//! is then a constant and the rules are none, so a request costs what it did before sites.
//!
//! A site's name is stable (it comes from the file): the access log names it, every request's
//! `CacheStatus` carries its [`SiteId`] (for per-site metrics), and purges scoped to a site find
//! it with [`Sites::by_name`]. [`Site::cache_key`] computes a URL's
//! key as a request for it would, with the site's key rules: what a purge must use.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use http::header::{HeaderMap, HeaderValue};

use crate::clock::Clock;
use crate::config::{Config, HostPattern, RefreshAhead};
use crate::store::key::KeyVersion;
use crate::store::CacheKey;
use crate::upstream::OriginPool;

pub mod rules;
use rules::{RuleSet, Rules};

/// A site's index among the node's sites.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SiteId(u16);

/// Where a request goes: its site, and the site's rules that match its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// The site.
    pub site: SiteId,
    /// Its rules that match.
    pub rules: RuleSet,
}

/// Every site, and the table from host names to them.
pub struct Sites {
    list: Box<[Site]>,
    exact: HashMap<Box<str>, SiteId>,
    wildcard: HashMap<Box<str>, SiteId>,
    default: Option<SiteId>,
    /// The site every host goes to, when there is no table to look in (no `[[site]]`).
    all: Option<SiteId>,
}

/// One site.
pub struct Site {
    name: Arc<str>,
    /// Its origin servers.
    pub pool: Arc<OriginPool>,
    /// Its cache rules.
    pub rules: Rules,
    /// The `Host` sent to its origin, when not the client's.
    pub origin_host: Option<HeaderValue>,
    /// Refresh-ahead, when on for this site.
    pub refresh_ahead: Option<RefreshAhead>,
    /// The cache-key version every key of this site is made under, when one is configured.
    key_version: Option<KeyVersion>,
}

impl Sites {
    /// The sites of `cfg` (the one implied by `origin` when it has no `[[site]]`), their pools'
    /// health checks started in the current runtime.
    pub fn new(cfg: &Config, clock: Arc<dyn Clock>) -> Sites {
        let configured = cfg.effective_sites();
        let mut sites =
            Sites { list: Box::new([]), exact: HashMap::new(), wildcard: HashMap::new(), default: None, all: None };
        let mut list = Vec::with_capacity(configured.len());
        for (i, s) in configured.iter().enumerate() {
            let id = SiteId(i as u16);
            for h in &s.hosts {
                match h {
                    HostPattern::Exact(name) => sites.exact.insert(name.as_str().into(), id),
                    HostPattern::Wildcard(suffix) => sites.wildcard.insert(suffix.as_str().into(), id),
                    HostPattern::Any => sites.all.replace(id),
                };
            }
            if s.default {
                sites.default = Some(id);
            }
            let pool = Arc::new(OriginPool::new(s, cfg, clock.clone()));
            crate::upstream::health::start(&pool);
            list.push(Site {
                name: Arc::from(s.name.as_str()),
                pool,
                rules: Rules::new(&s.rules),
                origin_host: s.origin_host.clone(),
                refresh_ahead: s.refresh_ahead.unwrap_or(cfg.refresh_ahead.enabled).then_some(cfg.refresh_ahead),
                key_version: s.key_version.as_deref().or(cfg.cache.key_version.as_deref()).map(KeyVersion::new),
            });
        }
        sites.list = list.into();
        sites
    }

    /// The one site every host goes to, when there is no routing table (no `[[site]]`): asked
    /// first, it spares reading the request's host as text.
    pub fn single(&self) -> Option<SiteId> {
        self.all
    }

    /// The site for the normalized `host` (`name[:port]`): an exact name, else the longest
    /// wildcard, else the default site; `None` when there is none (421).
    pub fn route(&self, host: &str) -> Option<SiteId> {
        if let Some(all) = self.all {
            return Some(all);
        }
        let name = match host.strip_prefix('[') {
            Some(_) => host.split_once(']').map_or(host, |(h, _)| &host[..h.len() + 1]),
            None => host.rsplit_once(':').map_or(host, |(h, _)| h),
        };
        if let Some(id) = self.exact.get(name) {
            return Some(*id);
        }
        let mut rest = name;
        while let Some((_, parent)) = rest.split_once('.') {
            if let Some(id) = self.wildcard.get(parent) {
                return Some(*id);
            }
            rest = parent;
        }
        self.default
    }

    /// The site `id` names.
    pub fn get(&self, id: SiteId) -> &Site {
        &self.list[usize::from(id.0)]
    }

    /// The site of this name.
    pub fn by_name(&self, name: &str) -> Option<SiteId> {
        self.list.iter().position(|s| &*s.name == name).map(|i| SiteId(i as u16))
    }

    /// Every site, in configured order.
    pub fn iter(&self) -> impl Iterator<Item = (SiteId, &Site)> {
        self.list.iter().enumerate().map(|(i, s)| (SiteId(i as u16), s))
    }
}

impl Site {
    /// Its name.
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// The route of a request for `path_and_query` to this site: the rules matching its path
    /// (each counted as applied).
    pub fn route(&self, id: SiteId, path_and_query: &str) -> Route {
        if self.rules.is_empty() {
            return Route { site: id, rules: RuleSet::default() };
        }
        let path = path_and_query.split_once('?').map_or(path_and_query, |(p, _)| p);
        Route { site: id, rules: self.rules.matching(path) }
    }

    /// The cache key of `path_and_query` on the normalized `host`, for a request with `headers`
    /// matching `rules`; with the text of what it was made of when the key rules changed it (the
    /// URL checked in the shared tier's envelopes), `None` when it is the URL as forwarded.
    #[inline]
    pub fn key(
        &self,
        scheme: &str,
        host: &str,
        path_and_query: &str,
        headers: &HeaderMap,
        rules: RuleSet,
    ) -> (CacheKey, Option<Box<str>>) {
        if rules.is_empty() {
            return (self.url_key(scheme, host, path_and_query), None);
        }
        self.key_by_rules(scheme, host, path_and_query, headers, rules)
    }

    /// The key of a URL as is, under the site's cache-key version when it has one: a new version
    /// makes every key of the site new, in memory and in the shared tier.
    #[inline]
    fn url_key(&self, scheme: &str, host: &str, path_and_query: &str) -> CacheKey {
        match &self.key_version {
            None => CacheKey::new(scheme, host, path_and_query),
            Some(v) => CacheKey::versioned(v, scheme, host, path_and_query),
        }
    }

    /// [`key`](Site::key) when some rules match.
    #[inline(never)]
    fn key_by_rules(
        &self,
        scheme: &str,
        host: &str,
        path_and_query: &str,
        headers: &HeaderMap,
        rules: RuleSet,
    ) -> (CacheKey, Option<Box<str>>) {
        let k = self.rules.key(rules);
        if k.is_plain() {
            return (self.url_key(scheme, host, path_and_query), None);
        }
        let pq = k.path_and_query(path_and_query);
        let (key, extra) = match k.extra(headers) {
            None => (self.url_key(scheme, host, &pq), String::new()),
            Some((name, value)) => {
                let key = CacheKey::with_extra(self.key_version.as_ref(), scheme, host, &pq, name, value.as_deref());
                let shown = value.as_deref().map_or(Cow::Borrowed("(none)"), String::from_utf8_lossy);
                (key, format!(" {name}={shown}"))
            }
        };
        (key, Some(format!("{scheme}://{host}{pq}{extra}").into_boxed_str()))
    }

    /// [`key`](Site::key) for a URL outside a request (a purge, an invalidated `Location`): its
    /// path matched against the rules without counting them.
    pub fn cache_key(&self, scheme: &str, host: &str, path_and_query: &str, headers: &HeaderMap) -> CacheKey {
        let path = path_and_query.split_once('?').map_or(path_and_query, |(p, _)| p);
        self.key(scheme, host, path_and_query, headers, self.rules.matching_uncounted(path)).0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_goes_to_its_exact_name_else_the_longest_wildcard_else_the_default() {
        let site = |name: &str, hosts: &str, default: bool| {
            format!(
                "[[site]]\nname = \"{name}\"\nhosts = [{hosts}]\ndefault = {default}\n[[site.server]]\nurl = \"http://127.0.0.1:9\"\n"
            )
        };
        let text = [
            site("a", "\"a.example\", \"*.example\"", false),
            site("b", "\"*.b.example\"", false),
            site("c", "\"c.b.example\"", false),
        ]
        .concat();
        let cfg = Config::parse(&text).unwrap();
        let sites = Sites::new(&cfg, Arc::new(crate::clock::ManualClock::new()));
        let name = |host: &str| sites.route(host).map(|id| sites.get(id).name().to_string());
        for (host, want) in [
            ("a.example", Some("a")),
            ("a.example:8080", Some("a")),
            ("x.example", Some("a")),
            ("x.b.example", Some("b")),
            ("y.x.b.example", Some("b")),
            ("b.example", Some("a")),
            ("c.b.example", Some("c")),
            ("example", None),
            ("[::1]:80", None),
            ("other.org", None),
        ] {
            assert_eq!(name(host).as_deref(), want, "{host}");
        }
        let cfg = Config::parse(&[text, site("d", "", true)].concat()).unwrap();
        let sites = Sites::new(&cfg, Arc::new(crate::clock::ManualClock::new()));
        assert_eq!(sites.route("other.org").map(|id| sites.get(id).name().to_string()).as_deref(), Some("d"));
        assert_eq!(sites.by_name("c").map(|id| sites.get(id).name().to_string()).as_deref(), Some("c"));
    }
}
