//! The combined log format (Apache's and nginx's default) with the cache outcome appended, as
//! nginx users log `$upstream_cache_status`:
//!
//! `127.0.0.1 - - [05/Dec/2026:08:10:27 +0000] "GET /a HTTP/1.1" 200 1024 "-" "curl/8.5" hit`

use std::io::Write as _;
use std::net::IpAddr;
use std::time::SystemTime;

/// What the combined format needs from the request beyond the other fields.
pub struct Request {
    /// Protocol version.
    pub version: http::Version,
    /// `Referer`.
    pub referer: Option<String>,
    /// `User-Agent`.
    pub user_agent: Option<String>,
}

/// One line's fields.
pub struct Line<'a> {
    /// Client address.
    pub peer: IpAddr,
    /// Request method.
    pub method: &'a http::Method,
    /// Path and query.
    pub path: &'a str,
    /// Version, `Referer`, `User-Agent`.
    pub request: &'a Request,
    /// Response status.
    pub status: u16,
    /// Body bytes sent.
    pub bytes: u64,
    /// The cache outcome word.
    pub outcome: &'a str,
}

/// Writes `line` to standard output, in one write.
pub fn write(line: &Line<'_>) {
    let text = format(line, SystemTime::now());
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}

/// The line, ending in a newline, at `now` (UTC).
pub fn format(l: &Line<'_>, now: SystemTime) -> String {
    let quoted =
        |v: &Option<String>| v.as_deref().map_or_else(|| "\"-\"".to_string(), |s| format!("\"{}\"", escape(s)));
    format!(
        "{} - - [{}] \"{} {} {:?}\" {} {} {} {} {}\n",
        l.peer,
        clf_time(now),
        l.method,
        escape(l.path),
        l.request.version,
        l.status,
        l.bytes,
        quoted(&l.request.referer),
        quoted(&l.request.user_agent),
        l.outcome,
    )
}

/// `"` and `\` escaped, and bytes outside printable ASCII as `\xNN`, as nginx does.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'"' | b'\\' => {
                out.push('\\');
                out.push(b as char);
            }
            0x20..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("\\x{b:02X}")),
        }
    }
    out
}

/// `05/Dec/2026:08:10:27 +0000`.
fn clf_time(t: SystemTime) -> String {
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let secs = t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{day:02}/{}/{year}:{:02}:{:02}:{:02} +0000",
        MONTHS[(month - 1) as usize],
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_line_in_the_combined_format_with_the_outcome_appended() {
        let req = Request { version: http::Version::HTTP_11, referer: None, user_agent: Some("curl/8.5 \"x\"".into()) };
        let line = Line {
            peer: "127.0.0.1".parse().unwrap(),
            method: &http::Method::GET,
            path: "/a?b=\u{e9}",
            request: &req,
            status: 200,
            bytes: 1024,
            outcome: "hit",
        };
        // 2026-12-05 08:10:27 UTC.
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_458_227);
        assert_eq!(
            format(&line, t),
            "127.0.0.1 - - [05/Dec/2026:08:10:27 +0000] \"GET /a?b=\\xC3\\xA9 HTTP/1.1\" 200 1024 \"-\" \"curl/8.5 \\\"x\\\"\" hit\n"
        );
        assert_eq!(clf_time(SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400)), "29/Feb/2000:00:00:00 +0000");
    }
}
