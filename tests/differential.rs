//! Differential check of our RFC 9111 core against http-cache-semantics (the crate the team
//! chose for the RFC core): where that crate is known to be right, both must agree on
//! storability and remaining freshness. Where it has known gaps (case-sensitive directive names,
//! one variant per URL, stale-* extensions, Set-Cookie, 304 merging), our layer differs on
//! purpose and those cases are tested elsewhere.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use edgecache::http::policy::{self, PolicyOptions};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_cache_semantics::{CacheOptions, CachePolicy};

const T0: u64 = 1_700_000_000;

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn date(secs: u64) -> String {
    httpdate::fmt_http_date(at(secs))
}

struct Case {
    name: &'static str,
    request: Vec<(&'static str, String)>,
    status: u16,
    response: Vec<(&'static str, String)>,
}

fn case(name: &'static str, status: u16, response: &[(&'static str, &str)]) -> Case {
    let mut resp: Vec<(&'static str, String)> = vec![("date", date(T0))];
    resp.extend(response.iter().map(|(k, v)| (*k, v.to_string())));
    Case { name, request: Vec::new(), status, response: resp }
}

#[test]
fn storability_and_freshness_agree_with_http_cache_semantics() {
    let lm = date(T0 - 1_000);
    let expires = date(T0 + 120);
    let mut cases = vec![
        case("max-age", 200, &[("cache-control", "max-age=60")]),
        case("s-maxage wins", 200, &[("cache-control", "s-maxage=30, max-age=60")]),
        case("expires", 200, &[("expires", &expires)]),
        case("max-age over expires", 200, &[("cache-control", "max-age=10"), ("expires", &expires)]),
        case("upstream age", 200, &[("cache-control", "max-age=60"), ("age", "10")]),
        case("heuristic", 200, &[("last-modified", &lm)]),
        case("heuristic 404", 404, &[("last-modified", &lm)]),
        case("private", 200, &[("cache-control", "private, max-age=60")]),
        case("no-store", 200, &[("cache-control", "no-store, max-age=60")]),
        case("max-age=0", 200, &[("cache-control", "max-age=0")]),
        case("explicit 404", 404, &[("cache-control", "max-age=60")]),
        case("302 without freshness", 302, &[]),
        case("302 with max-age", 302, &[("cache-control", "max-age=60")]),
        case("invalid expires", 200, &[("expires", "0")]),
        case("no-cache", 200, &[("cache-control", "no-cache"), ("etag", "\"x\"")]),
    ];
    let mut auth = case("authorization, not public", 200, &[("cache-control", "max-age=60")]);
    auth.request.push(("authorization", "Basic eDp5".into()));
    cases.push(auth);
    let mut auth_public = case("authorization, public", 200, &[("cache-control", "public, max-age=60")]);
    auth_public.request.push(("authorization", "Basic eDp5".into()));
    cases.push(auth_public);
    let mut auth_smaxage = case("authorization, s-maxage", 200, &[("cache-control", "s-maxage=60")]);
    auth_smaxage.request.push(("authorization", "Basic eDp5".into()));
    cases.push(auth_smaxage);

    let opts = PolicyOptions::default();
    for c in cases {
        let mut req = Request::builder().method(Method::GET).uri("http://example.com/a");
        for (k, v) in &c.request {
            req = req.header(*k, HeaderValue::from_str(v).unwrap());
        }
        let (req, ()) = req.body(()).unwrap().into_parts();
        let mut resp = Response::builder().status(c.status);
        for (k, v) in &c.response {
            resp = resp.header(*k, HeaderValue::from_str(v).unwrap());
        }
        let (resp, ()) = resp.body(()).unwrap().into_parts();

        let theirs = CachePolicy::new_options(&req, &resp, at(T0), CacheOptions::default());

        let req_cc = policy::request_cache_control(&req.headers);
        let resp_cc = policy::response_cache_control(&resp.headers, &opts);
        let status = StatusCode::from_u16(c.status).unwrap();
        let ours_storable = policy::storable(
            &policy::Req { method: &Method::GET, headers: &req.headers, cc: &req_cc },
            &policy::Resp { status, headers: &resp.headers, cc: &resp_cc },
            &opts,
        );
        assert_eq!(ours_storable.is_ok(), theirs.is_storable(), "{}: storable ({ours_storable:?})", c.name);
        if theirs.is_storable() {
            let now = T0 * 1000;
            let fresh = policy::freshness(status, &resp.headers, &resp_cc, now, now, &opts);
            let ours_ttl = (fresh.ttl_ms(now).max(0) / 1000) as u64;
            // Response no-cache: storable, but never reusable without revalidation.
            let ours_ttl = if fresh.no_cache { 0 } else { ours_ttl };
            assert_eq!(ours_ttl, theirs.time_to_live(at(T0)).as_secs(), "{}: time to live", c.name);
        }
    }
}
