//! The cache: keys, RFC 9111 policy, stored entries and the memory tier.

pub mod control;
pub mod entry;
pub mod envelope;
pub mod fill;
pub mod headers;
pub mod key;
pub mod memory;
pub mod policy;
pub mod ready;
pub mod shared;
pub mod tiers;
pub mod vary;

pub use entry::Entry;
pub use key::CacheKey;
pub use memory::MemoryTier;
