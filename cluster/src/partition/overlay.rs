//! Read-your-writes view used while applying a batch of log entries: writes collect in memory
//! and commit as one fjall batch together with the applied log id, so a crash never leaves a
//! half-applied entry or an applied index that disagrees with the data.

use std::collections::{BTreeMap, HashMap};

use fjall::{Database, Keyspace, PersistMode};
use ringchat_storage::StorageError;
use serde::{de::DeserializeOwned, Serialize};

use super::channel_cache::ChannelCache;
use super::tables::CHANNEL;
use crate::model::ChannelRecord;

/// Pending writes over the state machine keyspace.
pub struct Overlay<'a> {
    sm: &'a Keyspace,
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// The node's channel cache and this state machine's generation in it.
    cache: Option<(&'a ChannelCache, u64)>,
    /// Channel records staged in `writes`, decoded, for the cache after the commit.
    channels: HashMap<Vec<u8>, ChannelRecord>,
}

impl<'a> Overlay<'a> {
    /// An empty overlay over `sm`.
    pub fn new(sm: &'a Keyspace) -> Self {
        Overlay {
            sm,
            writes: BTreeMap::new(),
            cache: None,
            channels: HashMap::new(),
        }
    }

    /// The same overlay reading channel records through `cache` (generation `generation`) and
    /// writing them through it on commit.
    pub fn with_channel_cache(mut self, cache: &'a ChannelCache, generation: u64) -> Self {
        self.cache = Some((cache, generation));
        self
    }

    /// The channel record at `key`: this batch's own write, else the cache, else fjall (which
    /// then fills the cache: with no write staged, fjall holds the committed value).
    pub fn get_channel(&self, key: &[u8]) -> Result<Option<ChannelRecord>, StorageError> {
        if let Some(record) = self.channels.get(key) {
            return Ok(Some(record.clone()));
        }
        if self.writes.contains_key(key) {
            return self.get_record(key);
        }
        if let Some((cache, generation)) = self.cache {
            if let Some(record) = cache.get(generation, key) {
                return Ok(Some(record));
            }
            let record = self.get_record::<ChannelRecord>(key)?;
            if let Some(record) = &record {
                cache.put(generation, key.to_vec(), record.clone());
            }
            return Ok(record);
        }
        self.get_record(key)
    }

    /// Stages a channel record write (kept decoded for the cache).
    pub fn put_channel(&mut self, key: Vec<u8>, record: &ChannelRecord) {
        self.put_record(key.clone(), record);
        self.channels.insert(key, record.clone());
    }

    /// Reads a raw value, seeing this overlay's own writes first.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        if let Some(v) = self.writes.get(key) {
            return Ok(v.clone());
        }
        Ok(self.sm.get(key)?.map(|v| v.to_vec()))
    }

    /// The value of every record under `prefix`, this overlay's own writes and deletes
    /// included, in key order. Reads the whole range: for small meta tables, never a
    /// partition's data.
    pub fn values_under(&self, prefix: &[u8]) -> Result<Vec<Vec<u8>>, StorageError> {
        let mut seen: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
        for item in self.sm.prefix(prefix) {
            let (k, v) = item.into_inner()?;
            seen.insert(k.to_vec(), Some(v.to_vec()));
        }
        for (k, v) in self
            .writes
            .range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
        {
            seen.insert(k.clone(), v.clone());
        }
        Ok(seen.into_values().flatten().collect())
    }

    /// Reads and decodes a record.
    pub fn get_record<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StorageError> {
        self.get(key)?
            .map(|b| crate::codec::decode(&b).map_err(StorageError::from))
            .transpose()
    }

    /// Stages a record write.
    pub fn put_record<T: Serialize>(&mut self, key: Vec<u8>, value: &T) {
        self.channels.remove(&key);
        self.writes.insert(key, Some(crate::codec::encode(value)));
    }

    /// Stages a delete.
    pub fn delete(&mut self, key: Vec<u8>) {
        self.channels.remove(&key);
        self.writes.insert(key, None);
    }

    /// Commits every staged write atomically (no fsync: the Raft log is the durable record,
    /// and replay from it restores anything the journal lost).
    pub fn commit(self, db: &Database) -> Result<(), StorageError> {
        self.commit_with(db, None)
    }

    /// Commits with an explicit durability (snapshot install needs `SyncAll`).
    pub fn commit_with(self, db: &Database, mode: Option<PersistMode>) -> Result<(), StorageError> {
        if self.writes.is_empty() {
            return Ok(());
        }
        let mut batch = db.batch().durability(mode);
        let mut channel_keys = Vec::new();
        for (k, v) in self.writes {
            if self.cache.is_some() && is_channel_key(&k) {
                channel_keys.push(k.clone());
            }
            match v {
                Some(v) => batch.insert(self.sm, k, v),
                None => batch.remove(self.sm, k),
            }
        }
        let committed = batch.commit();
        // Written through only once committed; a failed commit forgets the keys instead (the
        // group stops on a storage error, and whatever opens next reads fjall).
        if let Some((cache, generation)) = self.cache {
            let mut channels = self.channels;
            for key in channel_keys {
                match channels.remove(&key).filter(|_| committed.is_ok()) {
                    Some(record) => cache.put(generation, key, record),
                    None => cache.forget(generation, &key),
                }
            }
        }
        committed?;
        Ok(())
    }
}

/// Whether `key` is a channel record's (`[partition][CHANNEL][channel_id]`).
fn is_channel_key(key: &[u8]) -> bool {
    key.get(2) == Some(&CHANNEL)
}
