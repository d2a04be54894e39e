//! The status page: one server-rendered HTML document with inline CSS and SVG charts, no
//! script and no external asset; it refreshes itself every 10 seconds.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use crate::clock::Millis;
use crate::metrics::history::{Point, MINUTE_MS, POINTS};
use crate::metrics::{OriginError, ReloadResult, Source, StaleServed, DETAILS};
use crate::proxy::Proxy;
use crate::status::Outcome;

const WIDTH: f64 = 600.0;
const HEIGHT: f64 = 140.0;

/// `s` with `&`, `<`, `>` and `"` escaped for HTML text and attributes.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// `n` bytes as `12.3 MiB`.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// How long ago `then` was at `now`, in words.
fn ago(now: Millis, then: Millis) -> String {
    if then == 0 {
        return "never".into();
    }
    let s = now.saturating_sub(then) / 1000;
    match s {
        0..=119 => format!("{s} s ago"),
        120..=7199 => format!("{} min ago", s / 60),
        _ => format!("{} h ago", s / 3600),
    }
}

/// A line chart of `values` (one per minute of the last hour, `None` where there is nothing to
/// show) scaled to `max`, as an SVG element with the class `name`. The path has one point per
/// minute with a value.
fn chart(
    name: &str,
    title: &str,
    points: &[Point],
    now: Millis,
    max: f64,
    value: impl Fn(&Point) -> Option<f64>,
    label: impl Fn(f64) -> String,
) -> String {
    let mut svg = String::new();
    let _ = write!(
        svg,
        "<figure><figcaption>{}</figcaption><svg class=\"chart {name}\" viewBox=\"0 0 {w} {h}\" width=\"{w}\" height=\"{h}\" role=\"img\" aria-label=\"{}\">",
        esc(title),
        esc(title),
        w = WIDTH + 60.0,
        h = HEIGHT + 20.0
    );
    // Axes and grid: the top, middle and bottom of the scale.
    for (i, frac) in [1.0, 0.5, 0.0].iter().enumerate() {
        let y = 5.0 + HEIGHT * (1.0 - frac);
        let _ = write!(
            svg,
            "<line class=\"grid\" x1=\"0\" y1=\"{y:.1}\" x2=\"{WIDTH}\" y2=\"{y:.1}\"/><text class=\"tick\" x=\"{:.0}\" y=\"{:.1}\">{}</text>",
            WIDTH + 4.0,
            y + if i == 0 { 8.0 } else { 4.0 },
            esc(&label(max * frac))
        );
    }
    let start = now.saturating_sub(POINTS as u64 * MINUTE_MS);
    let x = |at: Millis| (at.saturating_sub(start)) as f64 / (POINTS as u64 * MINUTE_MS) as f64 * WIDTH;
    let y = |v: f64| 5.0 + HEIGHT * (1.0 - (v / max).clamp(0.0, 1.0));
    let mut d = String::new();
    let mut dots = String::new();
    for p in points {
        let Some(v) = value(p) else { continue };
        let (px, py) = (x(p.at), y(v));
        let _ = write!(d, "{}{px:.1},{py:.1}", if d.is_empty() { "M" } else { " L" });
        let _ = write!(dots, "<circle cx=\"{px:.1}\" cy=\"{py:.1}\" r=\"2\"/>");
    }
    if d.is_empty() {
        let _ = write!(
            svg,
            "<text class=\"empty\" x=\"{:.0}\" y=\"{:.0}\">no data yet: a point per minute</text>",
            WIDTH / 2.0 - 100.0,
            HEIGHT / 2.0
        );
    } else {
        let _ = write!(svg, "<path class=\"line\" d=\"{d}\"/>{dots}");
    }
    let _ = write!(svg, "<text class=\"tick\" x=\"0\" y=\"{:.0}\">-60 min</text><text class=\"tick\" x=\"{:.0}\" y=\"{:.0}\">now</text></svg></figure>", HEIGHT + 18.0, WIDTH - 24.0, HEIGHT + 18.0);
    svg
}

fn row(out: &mut String, cells: &[&str]) {
    out.push_str("<tr>");
    for c in cells {
        let _ = write!(out, "<td>{c}</td>");
    }
    out.push_str("</tr>");
}

/// The page for `proxy` now.
pub fn render(proxy: &Proxy) -> String {
    let m = proxy.metrics();
    let cfg = proxy.config();
    let now = proxy.clock().now_millis();
    let points = m.history.points();
    let figures = proxy.tier_figures();
    let last = points.last().copied().unwrap_or_default();
    let mut out = String::with_capacity(32 << 10);
    out.push_str(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"10\">\
         <meta name=\"viewport\" content=\"width=device-width\"><title>edgecache status</title><style>\
         body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}\
         h1{font-size:1.4em;margin:0 0 .2em}h2{font-size:1.1em;margin:1.2em 0 .4em}\
         .figures{display:flex;gap:1.5em;flex-wrap:wrap}.figure{background:#fff;border:1px solid #ddd;padding:.5em 1em}\
         .figure b{display:block;font-size:1.6em}.grid{stroke:#ddd}.line{fill:none;stroke:#1f6feb;stroke-width:2}\
         circle{fill:#1f6feb}.tick,.empty{font-size:11px;fill:#666}figure{margin:0 0 1em}figcaption{font-weight:600}\
         table{border-collapse:collapse;background:#fff}td,th{border:1px solid #ddd;padding:.2em .6em;text-align:left}\
         .bar{width:300px;height:12px;background:#eee;display:inline-block;vertical-align:middle}\
         .bar span{display:block;height:100%;background:#2da44e}.bad{color:#b42318}.good{color:#1a7f37}\
         </style></head><body>",
    );
    let _ = write!(
        out,
        "<h1>edgecache {}</h1><p>origin <code>{}</code> · listening on <code>{}</code> · refreshed every 10 s</p>",
        env!("CARGO_PKG_VERSION"),
        esc(&cfg.origin.url),
        esc(&cfg.listen.to_string())
    );

    // The last minute's figures.
    let ratio = last.hit_ratio().map_or("–".to_string(), |r| format!("{:.1} %", r * 100.0));
    let _ = write!(
        out,
        "<div class=\"figures\"><div class=\"figure\">hit ratio (last minute)<b id=\"hit-ratio\">{ratio}</b></div>\
         <div class=\"figure\">requests/s (last minute)<b id=\"rate\">{:.1}</b></div>\
         <div class=\"figure\">memory<b id=\"memory\">{} / {}</b></div>\
         <div class=\"figure\">objects<b id=\"objects\">{}</b></div></div>",
        last.rate(),
        bytes(figures.bytes),
        bytes(figures.budget),
        figures.objects
    );

    // The last hour.
    out.push_str("<h2>Last hour</h2>");
    out.push_str(&chart(
        "hit-ratio",
        "Hit ratio (served from the store without asking the origin)",
        &points,
        now,
        1.0,
        Point::hit_ratio,
        |v| format!("{:.0} %", v * 100.0),
    ));
    let max_rate = points.iter().map(Point::rate).fold(0.0, f64::max).max(1.0) * 1.1;
    out.push_str(&chart(
        "rate",
        "Requests per second",
        &points,
        now,
        max_rate,
        |p| Some(p.rate()),
        |v| format!("{v:.1}"),
    ));
    let max_lat = points.iter().filter_map(Point::origin_latency_ms).fold(0.0, f64::max).max(1.0) * 1.1;
    out.push_str(&chart(
        "origin-latency",
        "Origin latency, mean (ms)",
        &points,
        now,
        max_lat,
        Point::origin_latency_ms,
        |v| format!("{v:.1} ms"),
    ));

    // Outcomes and reasons since start.
    let total: u64 = Outcome::ALL.iter().map(|o| m.requests(*o)).sum();
    out.push_str(
        "<h2>Outcomes since start</h2><table id=\"outcomes\"><tr><th>outcome</th><th>requests</th><th>share</th></tr>",
    );
    for o in Outcome::ALL {
        let n = m.requests(o);
        let share = if total > 0 { format!("{:.1} %", n as f64 * 100.0 / total as f64) } else { "–".into() };
        row(&mut out, &[o.as_str(), &n.to_string(), &share]);
    }
    out.push_str("</table><h2>Reasons since start</h2><table id=\"reasons\"><tr><th>reason</th><th>requests</th></tr>");
    let mut any = false;
    for d in DETAILS {
        let n = m.reasons(d);
        if n > 0 {
            any = true;
            row(&mut out, &[d.as_str(), &n.to_string()]);
        }
    }
    if !any {
        row(&mut out, &["none yet", ""]);
    }
    out.push_str("</table>");
    let stale: Vec<String> = [StaleServed::WhileRevalidate, StaleServed::IfError, StaleServed::Grace]
        .iter()
        .map(|s| format!("{} {}", s.as_str(), m.stale(*s)))
        .collect();
    let _ = write!(
        out,
        "<p>stale served: {} · coalesced waiters {} · hit-for-pass requests {} · bytes from the store {} · from the origin {}</p>",
        stale.join(", "),
        m.coalesced_waiters(),
        m.hit_for_pass_requests(),
        bytes(m.bytes(Source::Store)),
        bytes(m.bytes(Source::Origin))
    );

    // Memory per tier against the budget.
    let used = if figures.budget > 0 { figures.bytes as f64 / figures.budget as f64 } else { 0.0 };
    let _ = write!(
        out,
        "<h2>Memory</h2><table id=\"tiers\"><tr><th>tier</th><th>objects</th><th>bytes</th><th>budget</th><th></th></tr>\
         <tr><td>memory</td><td>{}</td><td>{}</td><td>{}</td><td><span class=\"bar\"><span style=\"width:{:.1}%\"></span></span> {:.1} %</td></tr>",
        figures.objects,
        bytes(figures.bytes),
        bytes(figures.budget),
        used * 100.0,
        used * 100.0
    );
    let shared = proxy.shared_state();
    let store = match (&cfg.redis, &cfg.memcached) {
        (Some(r), _) => Some(redact(&r.url)),
        (None, Some(m)) => Some(format!("memcached {}", m.servers.join(", "))),
        (None, None) => None,
    };
    match (store, shared) {
        (Some(store), Some(s)) => {
            let st = &m.shared;
            let _ = write!(
                out,
                "<tr><td>shared (<code>{}</code>)</td><td colspan=\"3\">hits {} · misses {} · errors {} · dropped writes {} · invalidations applied {}</td>\
                 <td id=\"breaker\" class=\"{}\">{} · breaker {}</td></tr>",
                esc(&store),
                st.hits.load(Ordering::Relaxed),
                st.misses.load(Ordering::Relaxed),
                st.errors.load(Ordering::Relaxed),
                st.dropped_writes.load(Ordering::Relaxed),
                st.remote_invalidations.load(Ordering::Relaxed),
                if s.connected && !s.breaker_open { "good" } else { "bad" },
                if s.connected { "connected" } else { "not connected" },
                if s.breaker_open { "open" } else { "closed" }
            );
        }
        _ => out.push_str("<tr><td>shared</td><td colspan=\"4\" id=\"breaker\">not configured</td></tr>"),
    }
    out.push_str("</table>");

    // The origin.
    let reach = m.origin.last_reachable.load(Ordering::Relaxed);
    let reachable = reach != 0 && now.saturating_sub(reach) <= cfg.health.origin_interval.as_millis() as Millis;
    let errors: Vec<String> = [
        OriginError::Connect,
        OriginError::Timeout,
        OriginError::Reset,
        OriginError::Busy,
        OriginError::Invalid,
        OriginError::Status5xx,
    ]
    .iter()
    .map(|k| format!("{} {}", k.as_str(), m.origin_errors(*k)))
    .collect();
    let _ = write!(
        out,
        "<h2>Origin</h2><table id=\"origin\"><tr><td>state</td><td class=\"{}\">{}</td></tr>\
         <tr><td>last reachable</td><td>{}</td></tr><tr><td>last failure</td><td>{}</td></tr>\
         <tr><td>mean latency, last minute</td><td>{}</td></tr><tr><td>responses</td><td>2xx {} · 3xx {} · 4xx {} · 5xx {}</td></tr>\
         <tr><td>errors</td><td>{}</td></tr></table>",
        if reachable { "good" } else { "bad" },
        if reachable { "reachable" } else { "not reached recently" },
        ago(now, reach),
        ago(now, m.origin.last_failure.load(Ordering::Relaxed)),
        last.origin_latency_ms().map_or("–".to_string(), |v| format!("{v:.2} ms")),
        m.origin_requests(2),
        m.origin_requests(3),
        m.origin_requests(4),
        m.origin_requests(5),
        errors.join(" · ")
    );

    // The last reloads.
    out.push_str(
        "<h2>Last reloads</h2><table id=\"reloads\"><tr><th>when</th><th>trigger</th><th>result</th><th>what</th></tr>",
    );
    let log = m.reload_log();
    if log.is_empty() {
        row(&mut out, &["none since start", "", "", ""]);
    }
    for r in log.iter().rev() {
        let class = if r.result == ReloadResult::Ok { "good" } else { "bad" };
        let what = if r.summary.is_empty() {
            "nothing changed".to_string()
        } else {
            r.summary.iter().map(|s| esc(s)).collect::<Vec<_>>().join("<br>")
        };
        row(
            &mut out,
            &[
                &ago(now, r.at),
                &esc(&r.trigger),
                &format!("<span class=\"{class}\">{}</span>", r.result.as_str()),
                &what,
            ],
        );
    }
    out.push_str("</table></body></html>\n");
    out
}

/// A Redis URL without its password.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}***{}", &url[..s + 3], &url[at..]),
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_has_one_point_per_minute_with_data() {
        let now = 100 * MINUTE_MS;
        let points: Vec<Point> =
            (0..3).map(|i| Point { at: now - (2 - i) * MINUTE_MS, requests: 10 + i, ..Point::default() }).collect();
        let svg = chart("rate", "r", &points, now, 1.0, |p| Some(p.rate()), |v| format!("{v}"));
        assert_eq!(svg.matches("<circle").count(), 3);
        assert!(svg.contains("d=\"M"), "{svg}");
        assert_eq!(
            chart("rate", "r", &[], now, 1.0, |p| Some(p.rate()), |v| format!("{v}")).matches("<path").count(),
            0
        );
        assert_eq!(redact("redis://u:secret@h:6379"), "redis://***@h:6379");
        assert_eq!(esc("<a href=\"x\">&"), "&lt;a href=&quot;x&quot;&gt;&amp;");
    }
}
