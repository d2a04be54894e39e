//! A site's cache rules, compiled: which of them match a request's path, and for each setting
//! the first matching rule that sets it.
//!
//! Rules are tried in order, and every rule whose path matches contributes: for each setting
//! (`cache`, `ttl`, `key_drop_query` ...) the first matching rule that sets it wins. So specific
//! rules go first and a general one (`path = "/"`) last, and the general one's settings apply
//! where the specific ones say nothing.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::config::{CacheMode, PathPattern, RuleConfig};

/// The rules of a site.
pub struct Rules {
    list: Box<[Rule]>,
}

/// One rule and how often it applied.
pub struct Rule {
    cfg: RuleConfig,
    /// Requests whose path it matched.
    applied: AtomicU64,
}

/// The rules that match one request: bit `i` for rule `i`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RuleSet(u64);

impl RuleSet {
    /// No rule matched.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

/// How the cache key is made from a request, from the rules that match it.
#[derive(Debug, Clone, Copy, Default)]
pub struct KeyRules<'a> {
    /// Leave the query out.
    pub ignore_query: bool,
    /// Leave these query parameters out (names; `*` matches any characters).
    pub drop_query: &'a [String],
    /// Sort the parameters kept.
    pub sort_query: bool,
    /// Add this request field's value.
    pub header: Option<&'a HeaderName>,
    /// Add this cookie's value.
    pub cookie: Option<&'a str>,
}

impl KeyRules<'_> {
    /// The key is the URL as forwarded.
    pub fn is_plain(&self) -> bool {
        !self.ignore_query
            && self.drop_query.is_empty()
            && !self.sort_query
            && self.header.is_none()
            && self.cookie.is_none()
    }

    /// The path and query the key is made of: the query as the rules leave it (absent when they
    /// leave no parameter).
    pub fn path_and_query<'p>(&self, pq: &'p str) -> Cow<'p, str> {
        let (path, query) = match pq.split_once('?') {
            Some((p, q)) => (p, q),
            None => return Cow::Borrowed(pq),
        };
        if self.ignore_query {
            return Cow::Borrowed(path);
        }
        if self.drop_query.is_empty() && !self.sort_query {
            return Cow::Borrowed(pq);
        }
        // Each parameter as written (`a` and `a=` stay apart), with its name.
        let mut params: Vec<(&str, &str)> = query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| (p.split_once('=').map_or(p, |(name, _)| name), p))
            .filter(|(name, _)| !self.drop_query.iter().any(|g| glob(g, name)))
            .collect();
        if self.sort_query {
            params.sort_unstable();
        }
        if params.is_empty() {
            return Cow::Borrowed(path);
        }
        let mut out = String::with_capacity(pq.len());
        out.push_str(path);
        for (i, (_, param)) in params.iter().enumerate() {
            out.push(if i == 0 { '?' } else { '&' });
            out.push_str(param);
        }
        Cow::Owned(out)
    }

    /// The extra part of the key: which field or cookie, and its value in `headers` (`None`
    /// when absent). `None` when the rules add none.
    pub fn extra<'h>(&self, headers: &'h HeaderMap) -> Option<(&str, Option<Cow<'h, [u8]>>)> {
        if let Some(name) = self.header {
            let mut values = headers.get_all(name).iter();
            let value = values.next().map(|first| match values.next() {
                None => Cow::Borrowed(first.as_bytes()),
                Some(_) => {
                    let all: Vec<&[u8]> = headers.get_all(name).iter().map(HeaderValue::as_bytes).collect();
                    Cow::Owned(all.join(&b", "[..]))
                }
            });
            return Some((name.as_str(), value));
        }
        let name = self.cookie?;
        Some((name, cookie(headers, name).map(Cow::Borrowed)))
    }
}

/// The value of cookie `name` in the request's `Cookie` fields (the first one of that name).
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h [u8]> {
    headers.get_all(header::COOKIE).iter().flat_map(|v| v.as_bytes().split(|&b| b == b';')).find_map(|pair| {
        let pair = pair.trim_ascii();
        let eq = pair.iter().position(|&b| b == b'=')?;
        (pair[..eq].trim_ascii() == name.as_bytes()).then(|| pair[eq + 1..].trim_ascii())
    })
}

/// Whether `text` matches `pattern`, where `*` matches any run of characters.
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&b| b == b'*')
}

impl Rules {
    /// The rules of a site, in order.
    pub fn new(rules: &[RuleConfig]) -> Rules {
        Rules { list: rules.iter().map(|r| Rule { cfg: r.clone(), applied: AtomicU64::new(0) }).collect() }
    }

    /// No rule at all.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The rules matching `path` (the path alone, no query), each counted as applied.
    pub fn matching(&self, path: &str) -> RuleSet {
        self.matches(path, true)
    }

    /// [`matching`](Rules::matching), not counted: for a URL that is not a request's.
    pub fn matching_uncounted(&self, path: &str) -> RuleSet {
        self.matches(path, false)
    }

    fn matches(&self, path: &str, count: bool) -> RuleSet {
        let mut set = 0u64;
        for (i, rule) in self.list.iter().enumerate() {
            let hit = match &rule.cfg.path {
                Some(PathPattern::Prefix(p)) => path.starts_with(p.as_str()),
                Some(PathPattern::Glob(g)) => glob(g, path),
                None => false,
            };
            if hit {
                if count {
                    rule.applied.fetch_add(1, Ordering::Relaxed);
                }
                set |= 1 << i;
            }
        }
        RuleSet(set)
    }

    /// How many requests each rule matched, in order.
    pub fn applied(&self) -> Vec<u64> {
        self.list.iter().map(|r| r.applied.load(Ordering::Relaxed)).collect()
    }

    /// The setting `get` reads, from the first rule of `set` that has it.
    fn first<'a, T>(&'a self, set: RuleSet, get: impl Fn(&'a RuleConfig) -> Option<T>) -> Option<T> {
        let mut bits = set.0;
        while bits != 0 {
            let i = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            if let Some(v) = get(&self.list[i].cfg) {
                return Some(v);
            }
        }
        None
    }

    /// Store, pass or always revalidate.
    pub fn mode(&self, set: RuleSet) -> CacheMode {
        if set.is_empty() {
            return CacheMode::Store;
        }
        self.first(set, |r| r.cache).unwrap_or(CacheMode::Store)
    }

    /// How the key is made.
    pub fn key(&self, set: RuleSet) -> KeyRules<'_> {
        if set.is_empty() {
            return KeyRules::default();
        }
        KeyRules {
            ignore_query: self.first(set, |r| r.key_ignore_query).unwrap_or(false),
            drop_query: self.first(set, |r| r.key_drop_query.as_deref()).unwrap_or(&[]),
            sort_query: self.first(set, |r| r.key_sort_query).unwrap_or(false),
            header: self.first(set, |r| r.key_header.as_ref()),
            cookie: self.first(set, |r| r.key_cookie.as_deref()),
        }
    }

    /// `Cookie` is removed from the request.
    pub fn strip_cookie(&self, set: RuleSet) -> bool {
        !set.is_empty() && self.first(set, |r| r.strip_cookie).unwrap_or(false)
    }

    /// `Set-Cookie` is removed from the response.
    pub fn strip_set_cookie(&self, set: RuleSet) -> bool {
        !set.is_empty() && self.first(set, |r| r.strip_set_cookie).unwrap_or(false)
    }

    /// The freshness lifetime a response is stored with, in seconds: `ttl` when the response
    /// gives no explicit one (`explicit` false: its `lifetime` is heuristic or none), then
    /// bounded by `min_ttl` and `max_ttl`.
    pub fn lifetime(&self, set: RuleSet, explicit: bool, lifetime: u32) -> u32 {
        if set.is_empty() {
            return lifetime;
        }
        let secs = |d: Duration| u32::try_from(d.as_secs()).unwrap_or(u32::MAX);
        let mut l = lifetime;
        if !explicit {
            if let Some(ttl) = self.first(set, |r| r.ttl) {
                l = secs(ttl);
            }
        }
        if let Some(min) = self.first(set, |r| r.min_ttl) {
            l = l.max(secs(min));
        }
        if let Some(max) = self.first(set, |r| r.max_ttl) {
            l = l.min(secs(max));
        }
        l
    }

    /// Whether any rule of `set` changes the response's header fields.
    pub fn edits_response(&self, set: RuleSet) -> bool {
        !set.is_empty()
            && (self.first(set, |r| r.response_headers.as_ref()).is_some()
                || self.first(set, |r| r.remove_response_headers.as_ref()).is_some())
    }

    /// Removes, then sets, the response fields the rules of `set` name.
    pub fn edit_response(&self, set: RuleSet, headers: &mut HeaderMap) {
        if let Some(remove) = self.first(set, |r| r.remove_response_headers.as_ref()) {
            for name in remove {
                headers.remove(name);
            }
        }
        if let Some(add) = self.first(set, |r| r.response_headers.as_ref()) {
            for (name, value) in add {
                headers.insert(name.clone(), value.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::headers;

    fn drop(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn globs_match_any_run_of_characters() {
        assert!(glob("utm_*", "utm_source"));
        assert!(glob("utm_*", "utm_"));
        assert!(!glob("utm_*", "xutm_source"));
        assert!(glob("*.css", "/a/b.css"));
        assert!(!glob("*.css", "/a/b.css.map"));
        assert!(glob("/img/*/*.png", "/img/a/b/c.png"));
        assert!(glob("fbclid", "fbclid"));
        assert!(!glob("fbclid", "fbclid2"));
    }

    #[test]
    fn the_key_query_drops_sorts_or_ignores() {
        let names = drop(&["utm_*", "fbclid"]);
        let k = KeyRules { drop_query: &names, ..Default::default() };
        assert_eq!(k.path_and_query("/p?utm_source=x&b=2&fbclid=z&a=1"), "/p?b=2&a=1");
        assert_eq!(k.path_and_query("/p?utm_source=x"), "/p", "nothing left: no query");
        assert_eq!(k.path_and_query("/p"), "/p");
        let k = KeyRules { drop_query: &names, sort_query: true, ..Default::default() };
        assert_eq!(k.path_and_query("/p?b=2&utm_medium=m&a=1&a"), "/p?a&a=1&b=2");
        let k = KeyRules { ignore_query: true, ..Default::default() };
        assert_eq!(k.path_and_query("/p?x=1"), "/p");
        let k = KeyRules::default();
        assert!(k.is_plain());
        assert_eq!(k.path_and_query("/p?b&a"), "/p?b&a");
    }

    #[test]
    fn the_key_takes_a_field_or_one_cookie() {
        let h = headers(&[("cookie", "a=1; lang=fr ; b=2"), ("x-device", "mobile")]);
        let name = HeaderName::from_static("x-device");
        let k = KeyRules { header: Some(&name), ..Default::default() };
        assert_eq!(k.extra(&h), Some(("x-device", Some(Cow::Borrowed(&b"mobile"[..])))));
        let k = KeyRules { cookie: Some("lang"), ..Default::default() };
        assert_eq!(k.extra(&h), Some(("lang", Some(Cow::Borrowed(&b"fr"[..])))));
        let k = KeyRules { cookie: Some("none"), ..Default::default() };
        assert_eq!(k.extra(&h), Some(("none", None)));
        assert_eq!(KeyRules::default().extra(&h), None);
    }

    #[test]
    fn each_setting_comes_from_the_first_matching_rule_that_sets_it() {
        let rules = Rules::new(&[
            RuleConfig {
                path: Some(PathPattern::Prefix("/static/".into())),
                ttl: Some(Duration::from_secs(60)),
                ..Default::default()
            },
            RuleConfig {
                path: Some(PathPattern::Glob("*.css".into())),
                ttl: Some(Duration::from_secs(5)),
                cache: Some(CacheMode::Revalidate),
                ..Default::default()
            },
            RuleConfig {
                path: Some(PathPattern::Prefix("/".into())),
                cache: Some(CacheMode::Pass),
                max_ttl: Some(Duration::from_secs(30)),
                ..Default::default()
            },
        ]);
        let set = rules.matching("/static/a.css");
        assert_eq!(rules.mode(set), CacheMode::Revalidate);
        assert_eq!(rules.lifetime(set, false, 0), 30, "ttl 60 from the first, capped by the third");
        assert_eq!(rules.lifetime(set, true, 10), 10, "an explicit lifetime is kept");
        assert_eq!(rules.mode(rules.matching("/other")), CacheMode::Pass);
        assert_eq!(rules.applied(), [1, 1, 2]);
        assert!(rules.matching("x").is_empty());
    }
}
