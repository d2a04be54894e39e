//! `Vary` abuse: `Vary: *`, a flood of variants, and request values crafted to miss.
//!
//! Covered elsewhere: `Vary: *` never stored (`storability::vary_star_is_not_stored`), variants
//! per URL capped by `cache.max_variants` with the oldest dropped
//! (`vary::max_variants_drops_the_oldest`), list values normalised before matching
//! (`vary::accept_encoding_order_and_spacing_do_not_make_a_new_variant`,
//! `fuzz::vary_normalisation_is_idempotent_and_ignores_list_white_space`).

use crate::common::*;

fn varying(field: &'static str) -> impl Fn(&Seen, usize) -> Reply + Send + Sync + 'static {
    move |req, n| Reply::ok(format!("{} #{n}", req.header(field).unwrap_or("-"))).cc("max-age=60").header("vary", field)
}

/// A thousand distinct `Accept-Language` values: the URL keeps at most `max_variants`, the memory
/// budget holds, and a normal client's variant is still served right.
#[tokio::test]
async fn vary_abuse_a_flood_of_variants_stays_within_max_variants() {
    let (origin, p, c) = serve_with(&clock(), |cfg| cfg.cache.max_variants = 16, varying("accept-language")).await;
    let normal = c.get_with("/v", &[("accept-language", "en")]).await;
    assert_eq!(normal.text(), "en #1");
    for i in 0..1000 {
        c.get_with("/v", &[("accept-language", &format!("x-{i}"))]).await;
    }
    let key = edgecache::store::CacheKey::new("http", &p.addr().to_string(), "/v");
    let variants = p.proxy().memory().get(&key).map_or(0, |v| v.entries().len());
    assert!(variants <= 16, "{variants} variants kept for one URL");
    assert!(
        p.proxy().memory().weighted_size() < 1 << 20,
        "the flood grew the store to {} bytes",
        p.proxy().memory().weighted_size()
    );
    let again = c.get_with("/v", &[("accept-language", "en")]).await;
    assert!(again.text().starts_with("en #"), "{}", again.text());
    assert_eq!(origin.count() as u64, 1001 + u64::from(!again.is_hit()));
}

/// Traffic Server's CVE-2024-35296: an invalid `Accept-Encoding` made the cache lookup fail, so
/// every such request went to the origin. Here an odd value is just another variant: stored,
/// then hit, and the variants of valid values are untouched.
#[tokio::test]
async fn vary_abuse_ats_cve_2024_35296_an_invalid_accept_encoding_is_a_variant_not_a_bypass() {
    let (origin, _p, c) = serve(&clock(), varying("accept-encoding")).await;
    assert_eq!(c.get_with("/e", &[("accept-encoding", "gzip")]).await.text(), "gzip #1");
    for odd in [",;;q=,", "gzip;q=x, br;;", ",,,", "*;q=-1", "identity;q=0,*;q=0"] {
        let first = c.get_with("/e", &[("accept-encoding", odd)]).await;
        assert_eq!(first.status, 200, "{odd:?}");
        let second = c.get_with("/e", &[("accept-encoding", odd)]).await;
        assert!(second.is_hit(), "{odd:?}: {}", second.cache_status());
    }
    let gzip = c.get_with("/e", &[("accept-encoding", "gzip")]).await;
    assert_eq!((gzip.text(), gzip.is_hit()), ("gzip #1".to_string(), true));
    assert_eq!(origin.count(), 6);
}

/// A response that varies on many fields, or on a field with a huge value, is stored within the
/// same bounds and matched exactly.
#[tokio::test]
async fn vary_abuse_many_fields_and_huge_values_are_matched_exactly() {
    let fields: Vec<String> = (0..64).map(|i| format!("x-v{i}")).collect();
    let vary = fields.join(", ");
    let (origin, _p, c) =
        serve(&clock(), move |_, n| Reply::ok(format!("#{n}")).cc("max-age=60").header("vary", &vary)).await;
    let big = "v".repeat(16 * 1024);
    let headers: Vec<(&str, &str)> = fields.iter().map(|f| (f.as_str(), big.as_str())).take(2).collect();
    assert_eq!(c.get_with("/m", &headers).await.text(), "#1");
    assert!(c.get_with("/m", &headers).await.is_hit());
    let mut other = headers.clone();
    other[1].1 = "w";
    assert_eq!(c.get_with("/m", &other).await.text(), "#2");
    assert_eq!(origin.count(), 2);
}
