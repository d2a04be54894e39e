//! `[refresh_ahead]`: hot objects revalidated in the background before they expire.

use toml::{Table, Value};

use super::walk::Walker;
use super::Config;

/// Refresh-ahead: a stored response requested at least `min_hits` times since it was stored,
/// asked for in the last `fraction` of its freshness, is revalidated once in the background, so
/// its clients never see it expire. Off by default: it adds origin requests (one per hot object
/// per lifetime) that an operator chooses to spend. A site can turn it on or off for itself
/// (`[[site]] refresh_ahead`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RefreshAhead {
    /// On for sites that do not say otherwise.
    pub enabled: bool,
    /// Hits since the response was stored (or last refreshed) that make it hot.
    pub min_hits: u16,
    /// The last part of the freshness lifetime in which a hot object is refreshed, in
    /// thousandths (100: the last 10 %).
    pub per_mille: u32,
}

impl Default for RefreshAhead {
    fn default() -> Self {
        RefreshAhead { enabled: false, min_hits: 10, per_mille: 100 }
    }
}

/// `[refresh_ahead]`: every key read from `t`, bad ones reported.
pub(super) fn refresh_section(w: &mut Walker, t: &mut Table, cfg: &mut Config) {
    let r = &mut cfg.refresh_ahead;
    w.take(t, "refresh_ahead", "enabled", |w, p, v| w.boolean(p, v).map(|b| r.enabled = b));
    w.take(t, "refresh_ahead", "min_hits", |w, p, v| w.integer(p, v, 1, 60_000).map(|n| r.min_hits = n as u16));
    w.take(t, "refresh_ahead", "fraction", |w, p, v| {
        let f = match v {
            Value::Float(f) => *f,
            other => {
                w.bad(
                    p,
                    format!("expected a number like 0.1 (the last 10 % of the lifetime), found {}", other.type_str()),
                );
                return None;
            }
        };
        let per_mille = (f * 1000.0).round();
        if !(1.0..=999.0).contains(&per_mille) {
            w.bad(p, format!("{f} is out of range 0.001..=0.999"));
            return None;
        }
        r.per_mille = per_mille as u32;
        Some(())
    });
    w.unknown(t, "refresh_ahead");
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::RefreshAhead;

    #[test]
    fn refresh_ahead_is_read_and_bad_fields_are_named() {
        let cfg = Config::parse("[refresh_ahead]\nenabled = true\nmin_hits = 3\nfraction = 0.25\n").unwrap();
        assert_eq!(cfg.refresh_ahead, RefreshAhead { enabled: true, min_hits: 3, per_mille: 250 });
        let err = Config::parse("[refresh_ahead]\nenabled = 1\nmin_hits = 0\nfraction = 1.0\nevery = 2\n").unwrap_err();
        let paths: Vec<&str> = err.problems.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            ["refresh_ahead.enabled", "refresh_ahead.min_hits", "refresh_ahead.fraction", "refresh_ahead.every"]
        );
        let err = Config::parse("[refresh_ahead]\nfraction = 10\n").unwrap_err();
        assert_eq!(err.problems[0].0, "refresh_ahead.fraction", "an integer is no fraction");
        let site = "[[site]]\nname = \"a\"\nhosts = [\"a.example\"]\nrefresh_ahead = \"no\"\n\
                    [[site.server]]\nurl = \"http://127.0.0.1:1\"\n";
        let err = Config::parse(site).unwrap_err();
        let paths: Vec<&str> = err.problems.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(paths, ["site[0].refresh_ahead"]);
    }
}
