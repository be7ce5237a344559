//! foyer hybrid (memory + disk) cache of committed messages, keyed by `(channel_id, seq)`.
//!
//! Messages never change once committed and seqs have no gaps, so a history page is an exact
//! set of keys: the cache can answer it without consulting storage, and there is nothing to
//! invalidate. Correctness never depends on it: a miss reads fjall.

use std::path::Path;

use foyer::{BlockEngineConfig, DeviceBuilder, FsDeviceBuilder, HybridCache, HybridCacheBuilder};

use crate::error::ClusterError;
use crate::model::MessageRecord;

/// Cache key: channel and seq.
pub type MessageKey = (String, u64);

/// The node's message cache.
#[derive(Clone)]
pub struct MessageCache {
    cache: HybridCache<MessageKey, MessageRecord>,
}

impl MessageCache {
    /// Opens a cache with `memory_bytes` in memory and `disk_bytes` on disk under `dir`.
    pub async fn open(dir: &Path, memory_bytes: usize, disk_bytes: usize) -> Result<Self, ClusterError> {
        std::fs::create_dir_all(dir).map_err(|e| ClusterError::Internal(e.to_string()))?;
        let device = FsDeviceBuilder::new(dir)
            .with_capacity(disk_bytes)
            .build()
            .map_err(|e| ClusterError::Internal(format!("cache device: {e}")))?;
        let cache = HybridCacheBuilder::new()
            .with_name("messages")
            .memory(memory_bytes)
            .with_weighter(|k: &MessageKey, v: &MessageRecord| k.0.len() + v.text.len() + v.sender_id.len() + 96)
            .storage()
            .with_engine_config(BlockEngineConfig::new(device))
            .build()
            .await
            .map_err(|e| ClusterError::Internal(format!("cache: {e}")))?;
        Ok(MessageCache { cache })
    }

    /// Remembers a committed message.
    pub fn insert(&self, message: &MessageRecord) {
        self.cache
            .insert((message.channel_id.clone(), message.seq), message.clone());
    }

    /// Looks a message up; `None` on a miss or a cache error.
    pub async fn get(&self, channel_id: &str, seq: u64) -> Option<MessageRecord> {
        match self.cache.get(&(channel_id.to_string(), seq)).await {
            Ok(Some(entry)) => Some(entry.value().clone()),
            _ => None,
        }
    }

    /// Flushes and closes the disk part.
    pub async fn close(&self) {
        if let Err(e) = self.cache.close().await {
            tracing::warn!(error = %e, "closing message cache");
        }
    }
}
