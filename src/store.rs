//! What is stored and where: the cache key, stored entries and their header blocks, the memory
//! tier, the shared tier (Redis), fills in flight and hit-for-pass, the tiers' read and write
//! paths, and purges (records, generations and the tag index).

pub mod entry;

pub mod fill;
pub mod headers;
pub mod heat;
pub mod hit_for_pass;
pub mod key;
pub mod memory;
pub mod pieces;
pub mod purge;
pub mod ready;
pub mod shared;
pub mod tags;
pub mod tiers;

pub use entry::Entry;
pub use key::CacheKey;
pub use memory::MemoryTier;
