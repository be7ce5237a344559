//! Decoded channel records kept in memory between applies.
//!
//! Every message reads its channel record (members, `last_seq`) and moves its position; reading
//! it from fjall's memtable and decoding it was ~6 % of a node's CPU per message (profile in
//! docs/benchmarks.md). A partition's state machine is the only writer of its records, so a
//! cache it writes through after each committed batch is never stale:
//! - a committed write of a channel key replaces (or, for a delete, removes) the cached record;
//! - a message's new position (not written to fjall, `channel_position.rs`) replaces it too;
//! - a read that misses fills the cache from fjall only when the batch has not staged that key;
//! - installing a snapshot replaces the whole partition, so the state machine takes a new
//!   generation and the old entries become unreachable (the LRU drops them).
//!
//! One foyer in-memory cache per node, bounded in bytes, shared by every partition.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use foyer::{Cache, CacheBuilder};

use crate::model::ChannelRecord;

/// Memory for cached channel records per node (estimated bytes, see `weight`).
pub const CHANNEL_CACHE_BYTES: usize = 16 << 20;

/// A cached record's key: the state machine's generation and the record's fjall key.
type Key = (u64, Vec<u8>);

/// The node's cache of decoded channel records. Cloning shares it.
#[derive(Clone)]
pub struct ChannelCache {
    cache: Cache<Key, ChannelRecord>,
    generations: Arc<AtomicU64>,
}

impl Default for ChannelCache {
    fn default() -> Self {
        Self::new(CHANNEL_CACHE_BYTES)
    }
}

impl ChannelCache {
    /// A cache holding about `bytes` of records.
    pub fn new(bytes: usize) -> Self {
        ChannelCache {
            cache: CacheBuilder::new(bytes.max(1))
                .with_shards(8)
                .with_weighter(|key: &Key, record: &ChannelRecord| weight(key, record))
                .build(),
            generations: Arc::new(AtomicU64::new(1)),
        }
    }

    /// A generation no state machine has used yet: entries of older generations are never read.
    pub fn new_generation(&self) -> u64 {
        self.generations.fetch_add(1, Ordering::Relaxed)
    }

    /// The record at `key` in `generation`, if cached.
    pub fn get(&self, generation: u64, key: &[u8]) -> Option<ChannelRecord> {
        self.cache
            .get(&(generation, key.to_vec()))
            .map(|entry| entry.value().clone())
    }

    /// Caches `record` as the committed value of `key`.
    pub fn put(&self, generation: u64, key: Vec<u8>, record: ChannelRecord) {
        self.cache.insert((generation, key), record);
    }

    /// Forgets `key` (deleted, or written without a decoded value at hand).
    pub fn forget(&self, generation: u64, key: &[u8]) {
        self.cache.remove(&(generation, key.to_vec()));
    }
}

/// Approximate heap bytes of one entry.
fn weight(key: &Key, record: &ChannelRecord) -> usize {
    let strings: usize = record.members.iter().map(|m| m.len() + 24).sum::<usize>()
        + record.channel_id.len()
        + record.creator.len()
        + record.name.as_ref().map_or(0, |n| n.len());
    key.1.len() + strings + 160
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ChannelKind;

    fn record(id: &str, members: usize) -> ChannelRecord {
        ChannelRecord {
            channel_id: id.into(),
            kind: ChannelKind::Group,
            name: None,
            creator: "u0".into(),
            members: (0..members).map(|i| format!("user-{i:04}")).collect(),
            last_seq: 0,
            created_ms: 0,
            last_ts: 0,
        }
    }

    #[test]
    fn generations_separate_a_partitions_lifetimes() {
        let cache = ChannelCache::new(1 << 20);
        let (old, new) = (cache.new_generation(), cache.new_generation());
        cache.put(old, b"k".to_vec(), record("g", 2));
        assert!(cache.get(old, b"k").is_some());
        assert!(
            cache.get(new, b"k").is_none(),
            "a new generation sees nothing of the old one"
        );
        cache.forget(old, b"k");
        assert!(cache.get(old, b"k").is_none());
    }

    #[test]
    fn the_cache_stays_within_its_byte_budget() {
        let cache = ChannelCache::new(64 << 10);
        let generation = cache.new_generation();
        for i in 0..2_000 {
            cache.put(
                generation,
                format!("key-{i}").into_bytes(),
                record(&format!("g{i}"), 100),
            );
        }
        let cached = (0..2_000)
            .filter(|i| cache.get(generation, format!("key-{i}").as_bytes()).is_some())
            .count();
        // A 100-member record weighs ~3.6 kB: 64 kB holds fewer than 20 of them.
        assert!(cached > 0 && cached < 20, "{cached} records cached");
    }
}
