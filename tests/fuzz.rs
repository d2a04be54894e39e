//! Fuzzed parsers (issue 23): property tests over every parser that reads what a client, an
//! origin, Redis or an operator sends. Each property runs as an ordinary test, with a fixed seed
//! and 256 cases (seconds for the whole file), so `cargo test` is deterministic; the generators
//! aim at the places parsers break (separators, quotes, case, white space, huge numbers, bytes
//! outside ASCII, truncation) rather than at uniform noise.
//!
//! Longer runs (every property, a million cases each; the seed can be changed too):
//!
//! ```sh
//! PROPTEST_CASES=1000000 cargo test --release --test fuzz
//! PROPTEST_CASES=1000000 PROPTEST_RNG_SEED=7 cargo test --release --test fuzz -- envelope
//! ```
//!
//! A failure prints the shrunk input; nothing is written to disk (no regression files), so a
//! case found this way is kept as a unit test next to the parser it broke.

use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use edgecache::clock::http_date;
use edgecache::http::cache_control::{self, CacheControl, Delta, DELTA_MAX};
use edgecache::http::conditional::not_modified;
use edgecache::http::range::{evaluate, RangeAnswer};
use edgecache::http::vary::{matches, normalized, vary_key, vary_names};
use edgecache::store::key::{normalize_host, CacheKey};
use edgecache::store::shared::envelope::{decode, encode};
use edgecache::store::Entry;
use edgecache::Config;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use proptest::prelude::*;
use proptest::test_runner::RngSeed;

/// The seed every run uses unless `PROPTEST_RNG_SEED` names another.
const SEED: u64 = 0x0002_35ec_f022;

/// 256 cases unless `PROPTEST_CASES` says otherwise; a fixed seed unless `PROPTEST_RNG_SEED`
/// says otherwise; no failure files.
fn config() -> ProptestConfig {
    let d = ProptestConfig::default();
    ProptestConfig {
        cases: if std::env::var_os("PROPTEST_CASES").is_some() { d.cases } else { 256 },
        rng_seed: match d.rng_seed {
            RngSeed::Random => RngSeed::Fixed(SEED),
            fixed => fixed,
        },
        failure_persistence: None,
        ..d
    }
}

fn map(pairs: &[(&str, Vec<u8>)]) -> HeaderMap {
    let mut m = HeaderMap::new();
    for (n, v) in pairs {
        if let Ok(v) = HeaderValue::from_bytes(v) {
            m.append(HeaderName::from_bytes(n.as_bytes()).unwrap(), v);
        }
    }
    m
}

/// Any bytes a field value can hold (no CR, LF or NUL: hyper refuses those before us).
fn field_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(prop_oneof![8 => 0x20u8..0x7f, 1 => Just(b'\t'), 1 => 0x80u8..=0xff], 0..64)
}

/// Optional white space.
fn ows() -> impl Strategy<Value = &'static str> {
    prop::sample::select(&["", "", " ", "\t", "  ", " \t "][..])
}

/// `s` with each ASCII letter's case chosen by `mask`.
fn recase(s: &str, mask: u64) -> String {
    s.chars()
        .enumerate()
        .map(|(i, c)| if mask >> (i % 64) & 1 == 1 { c.to_ascii_uppercase() } else { c.to_ascii_lowercase() })
        .collect()
}

// -------------------------------------------------------------------------------------------------
// Cache-Control and targeted fields (src/http/cache_control.rs)
// -------------------------------------------------------------------------------------------------

const DIRECTIVES: &[&str] = &[
    "max-age",
    "s-maxage",
    "max-stale",
    "min-fresh",
    "stale-while-revalidate",
    "stale-if-error",
    "no-cache",
    "no-store",
    "private",
    "public",
    "must-revalidate",
    "proxy-revalidate",
    "must-understand",
    "only-if-cached",
    "immutable",
    "no-transform",
    "community",
    "a-directive-name-longer-than-any-known",
];

/// A directive argument: digits (up to 30, past `u64`), quoted digits, a quoted list, a token,
/// or nothing.
fn argument() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        2 => Just(None),
        4 => "[0-9]{1,30}".prop_map(Some),
        1 => "[0-9]{1,12}".prop_map(|d| Some(format!("\"{d}\""))),
        1 => "[a-zA-Z, -]{0,12}".prop_map(|l| Some(format!("\"{l}\""))),
        1 => "[a-zA-Z0-9.=/+-]{0,8}".prop_map(Some),
        1 => Just(Some("-1".to_string())),
    ]
}

fn directives() -> impl Strategy<Value = Vec<(String, Option<String>)>> {
    let name = prop_oneof![4 => prop::sample::select(DIRECTIVES).prop_map(str::to_string), 1 => "[a-z-]{1,10}"];
    prop::collection::vec((name, argument()), 0..8)
}

/// The directives as one field value: names in the case `mask` gives, list separators with
/// optional white space and empty elements.
fn render(dirs: &[(String, Option<String>)], mask: u64, seps: &[(&str, &str, bool)]) -> String {
    let mut out = String::new();
    for (i, (name, arg)) in dirs.iter().enumerate() {
        if i > 0 {
            let (before, after, empty) = seps[i % seps.len().max(1)];
            out.push_str(before);
            out.push(',');
            if empty {
                out.push_str(" ,");
            }
            out.push_str(after);
        }
        out.push_str(&recase(name, mask.rotate_left(i as u32)));
        if let Some(a) = arg {
            out.push('=');
            out.push_str(a);
        }
    }
    out
}

fn separators() -> impl Strategy<Value = Vec<(&'static str, &'static str, bool)>> {
    prop::collection::vec((ows(), ows(), any::<bool>()), 1..4)
}

/// The RFC 9111 §1.2.2 reading of a delta-seconds argument: digits (quoted allowed), clamped to
/// 2^31; anything else invalid.
fn model_delta(arg: Option<&str>) -> Delta {
    let Some(a) = arg else { return Delta::Invalid };
    let a = a.strip_prefix('"').and_then(|a| a.strip_suffix('"')).unwrap_or(a);
    if a.is_empty() || !a.bytes().all(|b| b.is_ascii_digit()) {
        return Delta::Invalid;
    }
    let v = a.bytes().fold(0u128, |v, d| (v * 10 + u128::from(d - b'0')).min(u128::from(u64::MAX)));
    Delta::Secs(v.min(u128::from(DELTA_MAX)) as u64)
}

fn first<'a>(dirs: &'a [(String, Option<String>)], name: &str) -> Option<&'a (String, Option<String>)> {
    dirs.iter().find(|(n, _)| n == name)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn cache_control_any_bytes_never_panic(value in field_bytes(), target in "[a-zA-Z]{0,10}") {
        let h = map(&[("cache-control", value.clone()), ("surrogate-control", value)]);
        let _ = CacheControl::from_headers(&h, &http::header::CACHE_CONTROL);
        let _ = CacheControl::present(&h, &http::header::CACHE_CONTROL);
        let _ = cache_control::targeted(&h, &HeaderName::from_static("surrogate-control"), &target);
    }

    #[test]
    fn cache_control_any_text_never_panics(value in any::<String>()) {
        let _ = CacheControl::parse(&value);
        let _ = cache_control::parse_delta(&value);
    }

    #[test]
    fn cache_control_names_are_case_insensitive_and_list_white_space_is_ignored(
        dirs in directives(), mask in any::<u64>(), seps in separators()
    ) {
        let plain = CacheControl::parse(&render(&dirs, 0, &[("", "", false)]));
        prop_assert_eq!(CacheControl::parse(&render(&dirs, mask, &seps)), plain);
    }

    #[test]
    fn cache_control_first_occurrence_wins_and_deltas_clamp(dirs in directives(), mask in any::<u64>()) {
        let cc = CacheControl::parse(&render(&dirs, mask, &[(" ", "", false)]));
        let delta = |name| first(&dirs, name).map(|(_, a)| model_delta(a.as_deref()));
        prop_assert_eq!(cc.max_age, delta("max-age"));
        prop_assert_eq!(cc.s_maxage, delta("s-maxage"));
        prop_assert_eq!(cc.min_fresh, delta("min-fresh"));
        prop_assert_eq!(cc.stale_while_revalidate, delta("stale-while-revalidate"));
        prop_assert_eq!(cc.stale_if_error, delta("stale-if-error"));
        let max_stale = first(&dirs, "max-stale").map(|(_, a)| a.as_deref().map(|a| model_delta(Some(a)).or(0)));
        prop_assert_eq!(cc.max_stale, max_stale);
        let has = |name| dirs.iter().any(|(n, _)| n == name);
        prop_assert_eq!(cc.no_store, has("no-store"));
        prop_assert_eq!(cc.public, has("public"));
        prop_assert_eq!(cc.must_revalidate, has("must-revalidate"));
        prop_assert_eq!(cc.proxy_revalidate, has("proxy-revalidate"));
        prop_assert_eq!(cc.only_if_cached, has("only-if-cached"));
        // A qualified no-cache / private is never read as the unqualified one, nor lost.
        prop_assert_eq!(cc.no_cache || !cc.no_cache_fields.is_empty(), has("no-cache"));
        prop_assert_eq!(cc.private || !cc.private_fields.is_empty(), has("private"));
    }

    #[test]
    fn targeted_directives_for_us_win_and_others_are_ignored(
        ours in directives(), untargeted in directives(), foreign in directives()
    ) {
        let with = |dirs: &[(String, Option<String>)], target: &str| -> Vec<String> {
            dirs.iter()
                .map(|(n, a)| match a {
                    Some(a) if !a.starts_with('"') => format!("{n}={a};{target}"),
                    Some(_) | None => format!("{n};{target}"),
                })
                .collect()
        };
        let strip = |dirs: &[(String, Option<String>)]| -> Vec<(String, Option<String>)> {
            dirs.iter().map(|(n, a)| (n.clone(), a.clone().filter(|a| !a.starts_with('"')))).collect()
        };
        let mut items = with(&ours, "edgecache");
        items.extend(with(&foreign, "other"));
        items.extend(untargeted.iter().map(|(n, a)| match a { Some(a) => format!("{n}={a}"), None => n.clone() }));
        let h = map(&[("surrogate-control", items.join(", ").into_bytes())]);
        let got = cache_control::targeted(&h, &HeaderName::from_static("surrogate-control"), "edgecache");
        // The same as one Cache-Control listing ours first, then the untargeted ones.
        let mut expected = strip(&ours);
        expected.extend(untargeted.iter().cloned());
        let want = (!expected.is_empty()).then(|| CacheControl::parse(&render(&expected, 0, &[("", "", false)])));
        prop_assert_eq!(got, want);
    }
}

// -------------------------------------------------------------------------------------------------
// Vary and its normalisation (src/http/vary.rs)
// -------------------------------------------------------------------------------------------------

const VARIED: &[&str] = &["accept-encoding", "accept-language", "accept", "x-device", "cookie", "user-agent"];

/// List members as clients send them: tokens with parameters, q-values, odd spacing.
fn member() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z*]{1,8}",
        "[a-zA-Z]{1,6}(/[a-z+*]{1,6})?;q=0\\.[0-9]",
        "[a-zA-Z]{1,4}-[A-Z]{2}",
        "[a-z0-9]{1,4} [a-z0-9]{1,4}",
    ]
}

/// Members joined into field lines: separators with white space, split over several lines.
fn lines_of(members: &[String], seps: &[(&str, &str, bool)], lines: usize) -> Vec<Vec<u8>> {
    let per = members.len().div_ceil(lines.max(1)).max(1);
    members
        .chunks(per)
        .map(|chunk| {
            let mut v = String::new();
            for (i, m) in chunk.iter().enumerate() {
                if i > 0 {
                    let (b, a, _) = seps[i % seps.len()];
                    v.push_str(b);
                    v.push(',');
                    v.push_str(a);
                }
                v.push_str(m);
            }
            v.into_bytes()
        })
        .collect()
}

fn req(name: &str, lines: &[Vec<u8>]) -> HeaderMap {
    let pairs: Vec<(&str, Vec<u8>)> = lines.iter().map(|l| (name, l.clone())).collect();
    map(&pairs)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn vary_any_bytes_never_panic(values in prop::collection::vec(field_bytes(), 0..4), name in prop::sample::select(VARIED)) {
        let resp = req("vary", &values);
        let names = vary_names(&resp);
        let r = req(name, &values);
        let n = HeaderName::from_static(name);
        let _ = normalized(&n, &r);
        if let Ok(names) = names {
            prop_assert!(matches(&vary_key(&names, &r), &r), "a request must select the variant keyed by itself");
        }
    }

    #[test]
    fn vary_star_anywhere_means_never_stored_and_names_are_lowercase_and_unique(
        names in prop::collection::vec(prop_oneof![prop::sample::select(VARIED).prop_map(str::to_string), "[a-zA-Z-]{1,8}", Just("*".to_string())], 0..6),
        mask in any::<u64>(), seps in separators()
    ) {
        let recased: Vec<String> = names.iter().enumerate().map(|(i, n)| recase(n, mask.rotate_left(i as u32))).collect();
        let resp = req("vary", &lines_of(&recased, &seps, 2));
        match vary_names(&resp) {
            Err(()) => prop_assert!(names.iter().any(|n| n == "*")),
            Ok(got) => {
                prop_assert!(!names.iter().any(|n| n == "*"));
                let mut want: Vec<String> = Vec::new();
                for n in &names {
                    let l = n.to_ascii_lowercase();
                    if !want.contains(&l) {
                        want.push(l);
                    }
                }
                prop_assert_eq!(got.iter().map(|n| n.as_str().to_string()).collect::<Vec<_>>(), want);
            }
        }
    }

    #[test]
    fn vary_normalisation_is_idempotent_and_ignores_list_white_space(
        members in prop::collection::vec(member(), 0..6), seps in separators(), lines in 1usize..3,
        name in prop::sample::select(VARIED)
    ) {
        let n = HeaderName::from_static(name);
        let compact = normalized(&n, &req(name, &lines_of(&members, &[("", "", false)], 1)));
        let spaced = normalized(&n, &req(name, &lines_of(&members, &seps, lines)));
        prop_assert_eq!(&spaced, &compact);
        if let Some(v) = compact {
            let again = normalized(&n, &req(name, &[v.as_bytes().to_vec()]));
            prop_assert_eq!(again.as_deref(), Some(&*v));
        }
    }

    #[test]
    fn vary_unordered_lists_select_by_member_set_only(
        a in prop::collection::vec("[a-z]{1,5}", 1..5), b in prop::collection::vec("[a-z]{1,5}", 1..5),
        mask in any::<u64>(), shuffle in any::<prop::sample::Index>()
    ) {
        // Accept-Encoding: order and case carry no meaning; a different set of members is a
        // different variant (normalisation never merges two clients that may get different bodies).
        let n = HeaderName::from_static("accept-encoding");
        let mut a2: Vec<String> = a.iter().enumerate().map(|(i, m)| recase(m, mask.rotate_left(i as u32))).collect();
        let k = shuffle.index(a2.len());
        a2.rotate_left(k);
        let na = normalized(&n, &req("accept-encoding", &[a.join(", ").into_bytes()]));
        let na2 = normalized(&n, &req("accept-encoding", &lines_of(&a2, &[(" ", "", false)], 2)));
        prop_assert_eq!(&na, &na2);
        let set = |v: &[String]| { let mut s: Vec<String> = v.iter().map(|m| m.to_ascii_lowercase()).collect(); s.sort(); s.dedup(); s };
        let nb = normalized(&n, &req("accept-encoding", &[b.join(",").into_bytes()]));
        prop_assert_eq!(na == nb, set(&a) == set(&b));
    }
}

// -------------------------------------------------------------------------------------------------
// Range (src/http/range.rs)
// -------------------------------------------------------------------------------------------------

/// A position as written: small, near a length, or past `u64` (nginx's CVE-2017-7529 was an
/// overflow of such sums).
fn position() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => (0u64..2000).prop_map(|n| n.to_string()),
        1 => any::<u64>().prop_map(|n| n.to_string()),
        1 => "[0-9]{20,30}",
        1 => Just(String::new()),
        1 => "[0-9 a-z+-]{1,4}",
    ]
}

fn digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// RFC 9110 §14.1.2 for one range against `len` bytes, positions read as `u64` saturating (as
/// the implementation reads them).
fn model_range(first: &str, last: &str, len: u64) -> RangeAnswer {
    let num = |s: &str| s.parse::<u64>().unwrap_or(u64::MAX);
    if first.is_empty() {
        if !digits(last) {
            return RangeAnswer::Full;
        }
        let n = num(last);
        if n == 0 || len == 0 {
            return RangeAnswer::Unsatisfiable;
        }
        return RangeAnswer::Partial { start: len - n.min(len), end: len - 1 };
    }
    if !digits(first) || !(last.is_empty() || digits(last)) {
        return RangeAnswer::Full;
    }
    let (start, end) = (num(first), if last.is_empty() { u64::MAX } else { num(last) });
    if end < start {
        return RangeAnswer::Full;
    }
    if start >= len {
        return RangeAnswer::Unsatisfiable;
    }
    RangeAnswer::Partial { start, end: end.min(len - 1) }
}

fn length() -> impl Strategy<Value = u64> {
    prop_oneof![3 => 0u64..3000, 1 => any::<u64>()]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn range_any_text_never_panics_and_stays_inside_the_body(
        range in any::<String>(), if_range in field_bytes(), len in length(), etag in "[ -~]{0,10}", lm in any::<Option<u64>>()
    ) {
        let h = map(&[("if-range", if_range)]);
        for r in [range.clone(), format!("bytes={range}")] {
            if let RangeAnswer::Partial { start, end } = evaluate(&r, &h, len, Some(&etag), || lm, NOW) {
                prop_assert!(start <= end && end < len, "{r:?} on {len} bytes gave {start}-{end}");
            }
        }
    }

    #[test]
    fn range_single_ranges_follow_rfc_9110(
        first in position(), last in position(), len in length(), ws in ows()
    ) {
        let spec = format!("{first}-{last}");
        let got = evaluate(&format!("bytes={ws}{spec}{ws}"), &HeaderMap::new(), len, None, || None, NOW);
        let (f, l) = spec.split_once('-').unwrap();
        prop_assert_eq!(got, model_range(f.trim(), l.trim(), len));
    }

    #[test]
    fn range_several_or_overlapping_ranges_get_the_whole_body_once(
        ranges in prop::collection::vec((0u64..100, 0u64..100), 2..50), len in length()
    ) {
        // Overlapping and repeated ranges can make a multipart answer far larger than the body
        // (CVE-2011-3192, Apache "Range: bytes=0-,0-,..."): several ranges get the plain 200.
        let spec: Vec<String> = ranges.iter().map(|(a, b)| format!("{a}-{b}")).collect();
        prop_assert_eq!(evaluate(&format!("bytes={}", spec.join(",")), &HeaderMap::new(), len, None, || None, NOW), RangeAnswer::Full);
    }
}

// -------------------------------------------------------------------------------------------------
// HTTP dates (src/clock.rs)
// -------------------------------------------------------------------------------------------------

/// When the values are received: 2026-05-28, in milliseconds since the epoch.
const NOW: u64 = 1_780_000_000_000;

/// A mean Gregorian year, in milliseconds.
const YEAR_MS: u64 = 31_556_952_000;

const DAYS: [&str; 7] = ["Thursday", "Friday", "Saturday", "Sunday", "Monday", "Tuesday", "Wednesday"];
const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/// (year, month 1-12, day, hour, minute, second, weekday index into [`DAYS`]) of `secs` after
/// the epoch (Howard Hinnant's civil_from_days).
fn civil(secs: u64) -> (u64, usize, u64, u64, u64, u64, usize) {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y as u64, m as usize, d as u64, rem / 3600, rem % 3600 / 60, rem % 60, (days % 7) as usize)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn http_date_any_bytes_never_panic(value in prop::collection::vec(any::<u8>(), 0..40), text in "[A-Za-z0-9 ,:-]{0,32}") {
        let _ = http_date(&value, NOW);
        let _ = http_date(text.as_bytes(), NOW);
    }

    #[test]
    fn http_date_all_three_formats_read_the_same_instant(secs in 0u64..253_402_300_800, ws in ows()) {
        let (y, mo, d, h, mi, s, wd) = civil(secs);
        let imf = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(secs));
        prop_assert_eq!(http_date(format!("{ws}{imf}{ws}").as_bytes(), NOW), Some(secs * 1000));
        let asctime = format!("{} {} {:>2} {h:02}:{mi:02}:{s:02} {y}", &DAYS[wd][..3], MONTHS[mo - 1], d);
        prop_assert_eq!(http_date(asctime.as_bytes(), NOW), Some(secs * 1000), "{}", asctime);
        if (secs * 1000).abs_diff(NOW) < 49 * YEAR_MS {
            // Two-digit years (RFC 9110 §5.6.7): read as the latest year with those digits that
            // is not more than 50 years after the time the value was received (`NOW`).
            let rfc850 = format!("{}, {d:02}-{}-{:02} {h:02}:{mi:02}:{s:02} GMT", DAYS[wd], MONTHS[mo - 1], y % 100);
            prop_assert_eq!(http_date(rfc850.as_bytes(), NOW), Some(secs * 1000), "{}", rfc850);
        }
    }
}

// -------------------------------------------------------------------------------------------------
// Entity tags and If-None-Match (src/http/conditional.rs)
// -------------------------------------------------------------------------------------------------

/// An entity tag: optional `W/`, then `"` etagc* `"` (etagc: `!`, `#`-`~`; obs-text is left
/// out: a list holding it is never matched, which costs a full response, never a wrong 304).
fn etag() -> impl Strategy<Value = (bool, String)> {
    (any::<bool>(), "[!#-~]{0,8}")
}

fn tag_text((weak, opaque): &(bool, String)) -> String {
    format!("{}\"{opaque}\"", if *weak { "W/" } else { "" })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn if_none_match_any_bytes_never_panic(inm in field_bytes(), stored in prop::option::of(field_bytes()), lm in any::<u64>(), ims in field_bytes()) {
        let h = map(&[("if-none-match", inm), ("if-modified-since", ims)]);
        let _ = not_modified(&h, stored.as_deref(), lm, NOW);
    }

    #[test]
    fn if_none_match_matches_exactly_when_the_list_holds_the_opaque_tag(
        stored in etag(), others in prop::collection::vec(etag(), 0..6), include in any::<bool>(), weak in any::<bool>(),
        at in any::<prop::sample::Index>(), seps in separators(), lines in 1usize..3
    ) {
        let mut list: Vec<String> = others.iter().filter(|(_, o)| *o != stored.1).map(tag_text).collect();
        if include {
            let k = at.index(list.len() + 1);
            list.insert(k, tag_text(&(weak, stored.1.clone())));
        }
        let pairs: Vec<(&str, Vec<u8>)> = lines_of(&list, &seps, lines).into_iter().map(|l| ("if-none-match", l)).collect();
        let mut h = map(&pairs);
        if list.is_empty() {
            h.insert("if-none-match", HeaderValue::from_static(""));
        }
        // If-Modified-Since must be ignored when If-None-Match is present (RFC 9110 §13.2.2).
        h.insert("if-modified-since", HeaderValue::from_static("Sun, 06 Nov 2094 08:49:37 GMT"));
        prop_assert_eq!(not_modified(&h, Some(tag_text(&stored).as_bytes()), 0, NOW), include);
        h.append("if-none-match", HeaderValue::from_static("*"));
        prop_assert!(not_modified(&h, Some(tag_text(&stored).as_bytes()), 0, NOW), "* matches any stored response");
    }
}

// -------------------------------------------------------------------------------------------------
// The cache key (src/store/key.rs): no two distinct requests share a key
// -------------------------------------------------------------------------------------------------

/// Text made of the characters that separate the key's parts, so that different splits of the
/// same characters are tried against each other.
fn key_text() -> impl Strategy<Value = String> {
    "[a/?:.%3F=&#]{0,12}"
}

/// A host as clients write it: name, optional trailing dot, case, optional port (default,
/// other, leading zeros) or an IP literal.
fn raw_host() -> impl Strategy<Value = String> {
    let name = "[a-z0-9-]{1,8}(\\.[a-z0-9-]{1,8}){0,2}";
    prop_oneof![
        4 => (name, any::<u64>(), any::<bool>(), prop::option::of(prop_oneof![Just("80".to_string()), Just("080".to_string()), Just("8080".to_string()), "[0-9]{1,6}", Just(String::new())]))
            .prop_map(|(n, mask, dot, port)| {
                let mut h = recase(&n, mask);
                if dot { h.push('.'); }
                if let Some(p) = port { h.push(':'); h.push_str(&p); }
                h
            }),
        1 => (prop_oneof![Just("::1"), Just("::ABC"), Just("2001:db8::1")], prop::option::of("[0-9]{1,5}"))
            .prop_map(|(ip, port)| match port { Some(p) => format!("[{ip}]:{p}"), None => format!("[{ip}]") }),
        1 => "[ -~]{0,12}",
        // Short runs of separators: ".", ":80", "a.:", where normal forms can come out empty.
        1 => "[.:08a\\[\\]]{0,4}",
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn cache_key_distinct_parts_never_share_a_key(
        text in key_text(), i in any::<prop::sample::Index>(), j in any::<prop::sample::Index>(),
        other in key_text(), k in any::<prop::sample::Index>(), scheme in prop::sample::select(&["http", "https"][..])
    ) {
        // The same characters cut into (host, path-and-query) at two places, and an unrelated
        // pair: keys are equal exactly when the parts are.
        let cut = |s: &str, at: usize| { let at = at.min(s.len()); (s[..at].to_string(), format!("/{}", &s[at..])) };
        let a = cut(&text, i.index(text.len() + 1));
        let b = cut(&text, j.index(text.len() + 1));
        let c = cut(&other, k.index(other.len() + 1));
        for (x, y) in [(&a, &b), (&a, &c)] {
            let same = CacheKey::new(scheme, &x.0, &x.1) == CacheKey::new(scheme, &y.0, &y.1);
            prop_assert_eq!(same, x == y, "{:?} vs {:?}", x, y);
        }
        prop_assert_ne!(CacheKey::new("http", &a.0, &a.1), CacheKey::new("https", &a.0, &a.1));
    }

    #[test]
    fn cache_key_host_normalisation_is_idempotent_and_only_merges_spellings_of_one_host(
        h1 in raw_host(), h2 in raw_host(), pq in "/[a-z?=&/.%]{0,8}"
    ) {
        let n1 = normalize_host(&h1, "http");
        if let Some(n) = &n1 {
            let again = normalize_host(n, "http");
            prop_assert_eq!(again.as_ref(), Some(n), "normal form is a fixed point");
            let odd = n.bytes().find(|b| b.is_ascii_uppercase() || b"/?#@ \t".contains(b));
            prop_assert_eq!(odd, None, "no upper case, separator or space in {:?}", n);
            if let Some((_, port)) = n.rsplit_once(':').filter(|(_, p)| digits(p)) {
                prop_assert_ne!(port, "80", "the default port is removed: {:?}", n);
                let unpadded = match port.trim_start_matches('0') {
                    "" => "0",
                    p => p,
                };
                prop_assert_eq!(port, unpadded, "leading zeros are removed: {:?}", n);
            }
        }
        let n2 = normalize_host(&h2, "http");
        if let (Some(a), Some(b)) = (&n1, &n2) {
            prop_assert_eq!(CacheKey::new("http", a, &pq) == CacheKey::new("http", b, &pq), a == b);
            // Spellings of one host: case, trailing dot, default port.
            let strip = |h: &str| {
                let h = h.to_ascii_lowercase();
                let (name, port) = match h.rsplit_once(':') { Some((n, p)) => (n, Some(p)), None => (h.as_str(), None) };
                let name = name.strip_suffix('.').unwrap_or(name);
                match port.filter(|p| !p.is_empty()).map(|p| p.parse::<u32>().unwrap()) {
                    None | Some(80) => name.to_string(),
                    Some(n) => format!("{name}:{n}"),
                }
            };
            if !h1.starts_with('[') && !h2.starts_with('[') && h1.bytes().all(|c| c.is_ascii_alphanumeric() || b".-:".contains(&c)) && h2.bytes().all(|c| c.is_ascii_alphanumeric() || b".-:".contains(&c)) {
                prop_assert_eq!(a == b, strip(&h1) == strip(&h2), "{:?} {:?}", h1, h2);
            }
        }
    }
}

// -------------------------------------------------------------------------------------------------
// The shared-tier envelope (src/store/shared/envelope.rs): any bytes give a value or an error
// -------------------------------------------------------------------------------------------------

fn entry() -> impl Strategy<Value = Entry> {
    let field = ("[a-z][a-z0-9-]{0,10}", field_bytes());
    (
        100u16..1000,
        prop::collection::vec(field, 0..8),
        prop::collection::vec(any::<u8>(), 0..64),
        prop::collection::vec(("[a-z][a-z-]{0,8}", prop::option::of("[ -~]{0,8}")), 0..3),
        any::<[u64; 4]>(),
        any::<[u32; 4]>(),
        any::<[bool; 3]>(),
    )
        .prop_map(|(status, fields, body, vary, t, s, f)| {
            let mut headers = HeaderMap::new();
            for (n, v) in fields {
                if let Ok(v) = HeaderValue::from_bytes(&v) {
                    headers.append(HeaderName::from_bytes(n.as_bytes()).unwrap(), v);
                }
            }
            Entry {
                status: http::StatusCode::from_u16(status).unwrap(),
                headers: edgecache::store::headers::StoredHeaders::from_map(&headers),
                body: Bytes::from(body),
                vary: vary
                    .into_iter()
                    .map(|(n, v)| (HeaderName::from_bytes(n.as_bytes()).unwrap(), v.map(String::into_boxed_str)))
                    .collect(),
                freshness: edgecache::http::policy::Freshness {
                    times: edgecache::http::policy::Times {
                        request_time: t[0],
                        response_time: t[1],
                        date: t[2],
                        age_value: s[0] >> 1,
                    },
                    lifetime: s[1] >> 1,
                    no_cache: f[0],
                    no_stale: f[1],
                    strict: f[2],
                    stale_while_revalidate: s[2] >> 1,
                    stale_if_error: s[3] >> 1,
                    last_modified: t[3],
                },
                checked: Default::default(),
                heat: Default::default(),
            }
        })
}

/// Ways a value can be damaged: a byte changed, cut short, bytes inserted, a stretch repeated.
#[derive(Debug, Clone)]
enum Damage {
    Set(prop::sample::Index, u8),
    Cut(prop::sample::Index),
    Insert(prop::sample::Index, Vec<u8>),
    Repeat(prop::sample::Index, usize),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        4 => (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(i, b)| Damage::Set(i, b)),
        1 => any::<prop::sample::Index>().prop_map(Damage::Cut),
        1 => (any::<prop::sample::Index>(), prop::collection::vec(any::<u8>(), 1..8)).prop_map(|(i, b)| Damage::Insert(i, b)),
        1 => (any::<prop::sample::Index>(), 1usize..16).prop_map(|(i, n)| Damage::Repeat(i, n)),
    ]
}

fn apply(v: &mut Vec<u8>, d: &Damage) {
    match d {
        Damage::Set(i, b) if !v.is_empty() => {
            let i = i.index(v.len());
            v[i] = *b;
        }
        Damage::Cut(i) => v.truncate(i.index(v.len() + 1)),
        Damage::Insert(i, b) => {
            let i = i.index(v.len() + 1);
            v.splice(i..i, b.iter().copied());
        }
        Damage::Repeat(i, n) if !v.is_empty() => {
            let i = i.index(v.len());
            let end = (i + n).min(v.len());
            let stretch = v[i..end].to_vec();
            v.splice(i..i, stretch);
        }
        _ => {}
    }
}

const URL: &str = "http://www.example/a?b";

proptest! {
    #![proptest_config(config())]

    #[test]
    fn envelope_any_bytes_give_a_value_or_an_error(value in prop::collection::vec(any::<u8>(), 0..256)) {
        let mut framed = b"ECE\x01".to_vec();
        framed.extend_from_slice(&(URL.len() as u32).to_be_bytes());
        framed.extend_from_slice(URL.as_bytes());
        framed.extend_from_slice(&value);
        let _ = decode(Bytes::from(value), URL);
        let _ = decode(Bytes::from(framed), URL);
    }

    #[test]
    fn envelope_round_trips_and_damaged_values_never_panic(e in entry(), damages in prop::collection::vec(damage(), 1..4)) {
        let good = encode(URL, &e);
        let back = decode(good.clone(), URL).expect("an encoded entry decodes");
        prop_assert_eq!(back.status, e.status);
        prop_assert_eq!(&back.headers, &e.headers);
        prop_assert_eq!(&back.body, &e.body);
        prop_assert_eq!(&back.vary, &e.vary);
        prop_assert_eq!(back.freshness, e.freshness);
        prop_assert!(decode(good.clone(), "http://www.example/a?c").is_err(), "a value for another URL is never used");
        let mut v = good.to_vec();
        for d in &damages {
            apply(&mut v, d);
        }
        if let Ok(got) = decode(Bytes::from(v), URL) {
            // Whatever decodes is self-consistent: it encodes back to a value that decodes.
            prop_assert!(decode(encode(URL, &got), URL).is_ok());
        }
    }
}

// -------------------------------------------------------------------------------------------------
// proxy.toml (Config::parse in src/config.rs): any text gives a configuration or field errors
// -------------------------------------------------------------------------------------------------

const SECTIONS: &[&str] =
    &["cache", "timeouts", "limits", "log", "coalescing", "stale", "targeted", "redis", "forwarding", "nope"];
const KEYS: &[&str] = &[
    "listen",
    "origin",
    "memory",
    "max_object_size",
    "heuristic_freshness",
    "heuristic_max",
    "keep_stale",
    "max_variants",
    "store_set_cookie",
    "transparent_huge_pages",
    "preallocate",
    "connect",
    "first_byte",
    "header_read",
    "request_body",
    "idle",
    "shutdown",
    "client_idle",
    "origin_queue",
    "max_header_size",
    "max_connections",
    "max_concurrent_streams",
    "origin_connections",
    "access",
    "format",
    "enabled",
    "wait_limit",
    "hit_for_pass",
    "grace",
    "field",
    "forward_field",
    "forward_cdn_cache_control",
    "forward_surrogate_control",
    "url",
    "cluster",
    "budget",
    "key_prefix",
    "ttl_cap",
    "write_queue",
    "username",
    "password_env",
    "trusted_proxies",
    "unknown_key",
];

/// A TOML value of the kinds the file uses, valid for its key or not.
fn toml_value() -> impl Strategy<Value = String> {
    prop_oneof![
        "-?[0-9]{1,22}",
        "[0-9]{1,21}(ms|s|m|h|d|KiB|MiB|GiB|TiB|MB|kB|B|x)?".prop_map(|v| format!("\"{v}\"")),
        Just("true".to_string()),
        Just("\"\"".to_string()),
        "(127\\.0\\.0\\.1|\\[::1\\]|0\\.0\\.0\\.0|[a-z]{1,5}):[0-9]{1,6}".prop_map(|v| format!("\"{v}\"")),
        "(http|https|redis|rediss|ftp)://[a-z0-9.:@\\[\\]]{0,16}(/[a-z0-9]{0,4})?".prop_map(|v| format!("\"{v}\"")),
        "[ -!#-\\[\\]-~]{0,12}".prop_map(|v| format!("\"{v}\"")),
        prop::collection::vec("\"[0-9./:a-f]{0,18}\"", 0..3).prop_map(|v| format!("[{}]", v.join(", "))),
        Just("{ a = 1 }".to_string()),
        "-?[0-9]{1,4}\\.[0-9]{1,3}",
        Just("1979-05-27T07:32:00Z".to_string()),
    ]
}

/// The path of every key `text` writes, as the configuration reader names a field ("key",
/// "section.key", "section.table.key"); none when `text` is not TOML. A line of printable noise
/// can write a key of its own (`a=''`), whose problem then names that key.
fn written_paths(text: &str) -> Vec<String> {
    fn walk(table: &toml::Table, prefix: &str, out: &mut Vec<String>) {
        for (key, value) in table {
            let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
            if let toml::Value::Table(inner) = value {
                walk(inner, &path, out);
            }
            out.push(path);
        }
    }
    let mut out = Vec::new();
    if let Ok(table) = text.parse::<toml::Table>() {
        walk(&table, "", &mut out);
    }
    out
}

fn toml_line() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => prop::sample::select(SECTIONS).prop_map(|s| format!("[{s}]")),
        6 => (prop::sample::select(KEYS), toml_value()).prop_map(|(k, v)| format!("{k} = {v}")),
        1 => "[ -~]{0,20}",
        1 => Just("# comment".to_string()),
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn config_any_text_gives_a_configuration_or_field_errors(text in any::<String>()) {
        if let Err(e) = Config::parse(&text) {
            prop_assert!(!e.problems.is_empty() && e.problems.iter().all(|(_, m)| !m.is_empty()));
        }
    }

    #[test]
    fn config_files_of_known_keys_give_a_configuration_or_field_errors(lines in prop::collection::vec(toml_line(), 0..16)) {
        let text = lines.join("\n");
        match Config::parse(&text) {
            Ok(cfg) => {
                // A configuration accepted is one the server can run with.
                prop_assert!(cfg.limits.max_connections > 0 && cfg.limits.max_concurrent_streams > 0);
                prop_assert!(cfg.limits.max_header_bytes <= u32::MAX as usize);
            }
            Err(e) => {
                prop_assert!(!e.problems.is_empty());
                for (path, msg) in &e.problems {
                    prop_assert!(!msg.is_empty());
                    // Every problem names its field (one the reader knows, or one the text
                    // wrote), or is the TOML syntax error (no field).
                    prop_assert!(
                        path.is_empty()
                            || KEYS.iter().chain(SECTIONS).any(|k| path.ends_with(k) || path.starts_with(k))
                            || written_paths(&text).contains(path),
                        "{path}: {msg}"
                    );
                }
            }
        }
    }
}
