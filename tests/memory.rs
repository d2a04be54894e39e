//! The memory tier's byte budget (`cache.memory`) holds, whatever is stored.

pub mod common;

use common::*;

#[tokio::test]
async fn the_byte_budget_holds_when_filled_far_past_it() {
    let clock = clock();
    const BUDGET: u64 = 2 << 20;
    const OBJECTS: usize = 200;
    let body = vec![b'x'; 60 << 10];
    let (origin, p, c) = serve_with(
        &clock,
        |cfg| {
            cfg.cache.memory_bytes = BUDGET;
            cfg.cache.max_object_bytes = 64 << 10;
        },
        move |_, _| Reply::ok(body.clone()).cc("max-age=600"),
    )
    .await;
    // 200 × 60 KiB = 12 MiB through a 2 MiB budget.
    for i in 0..OBJECTS {
        let r = c.get(&format!("/o/{i}")).await;
        assert_eq!((r.status, r.body.len()), (200, 60 << 10));
    }
    assert_eq!(origin.count(), OBJECTS);
    let proxy = p.proxy();
    let memory = proxy.memory();
    let used = memory.weighted_size();
    assert!(used <= BUDGET, "{used} bytes counted against a {BUDGET}-byte budget");
    // Bodies are counted: the budget is mostly used, not bypassed.
    assert!(used >= BUDGET / 2, "only {used} bytes counted");
    let stored = memory.entry_count();
    assert!(stored > 0 && stored < OBJECTS as u64, "{stored} objects kept");
}

#[tokio::test]
async fn an_object_over_max_object_size_is_never_counted() {
    let clock = clock();
    let (_origin, p, c) = serve_with(
        &clock,
        |cfg| cfg.cache.max_object_bytes = 1 << 10,
        |_, _| Reply::ok(vec![b'y'; 4 << 10]).cc("max-age=600"),
    )
    .await;
    let r = c.get("/big").await;
    assert_eq!(r.body.len(), 4 << 10);
    assert_eq!(p.proxy().memory().weighted_size(), 0);
    assert_eq!(stored_urls(&p), 0);
}
