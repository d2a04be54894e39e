//! HTTP caching rules with no state of their own (RFC 9110, 9111, 5861, 9213): `Cache-Control`
//! and targeted fields, storability and freshness, `Vary`, conditional requests and ranges.
//! Every function takes the time it needs as an argument.

pub mod cache_control;
pub mod conditional;
pub mod policy;
pub mod range;
pub mod vary;
