//! Read-your-writes view used while applying a batch of log entries: writes collect in memory
//! and commit as one fjall batch together with the applied log id, so a crash never leaves a
//! half-applied entry or an applied index that disagrees with the data.

use std::collections::{BTreeMap, HashMap};

use fjall::{Database, Keyspace, PersistMode};
use ringchat_storage::StorageError;
use serde::{de::DeserializeOwned, Serialize};

use super::channel_cache::ChannelCache;
use super::channel_position;
use super::tables::{self as t, CHANNEL};
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

    /// The channel record at `key` at its current position: this batch's own version, else
    /// the cache, else fjall's record raised to the channel's newest message
    /// (`channel_position.rs`), which then fills the cache (with nothing staged for the key,
    /// fjall and this batch's messages say everything).
    pub fn get_channel(&self, key: &[u8]) -> Result<Option<ChannelRecord>, StorageError> {
        if let Some(record) = self.channels.get(key) {
            return Ok(Some(record.clone()));
        }
        // With a write of this key staged (raw or a delete), the cache's version is stale and
        // what is read here must not fill it.
        let cache = self.cache.filter(|_| !self.writes.contains_key(key));
        if let Some((cache, generation)) = cache {
            if let Some(record) = cache.get(generation, key) {
                return Ok(Some(record));
            }
        }
        let Some(mut record) = self.get_record::<ChannelRecord>(key)? else {
            return Ok(None);
        };
        channel_position::raise(&mut record, self.newest_message(&t::channel_messages_of(key))?);
        if let Some((cache, generation)) = cache {
            cache.put(generation, key.to_vec(), record.clone());
        }
        Ok(Some(record))
    }

    /// `(seq, ts)` of the newest message under `prefix`: this batch's, else fjall's.
    fn newest_message(&self, prefix: &[u8]) -> Result<Option<(u64, u64)>, StorageError> {
        let staged = self
            .writes
            .range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .filter_map(|(_, v)| v.as_deref())
            .last();
        match staged {
            Some(value) => channel_position::newest_of(value).map(Some),
            None => channel_position::newest_stored(self.sm, prefix),
        }
    }

    /// Stages a channel record write (kept decoded for the cache).
    pub fn put_channel(&mut self, key: Vec<u8>, record: &ChannelRecord) {
        self.put_record(key.clone(), record);
        self.channels.insert(key, record.clone());
    }

    /// Moves a channel's position (`last_seq`, `last_ts`) to a message this batch staged,
    /// without writing the record: readers raise the stored record to the newest message
    /// (`channel_position.rs`). The cache gets the new version once the batch commits.
    pub fn advance_channel(&mut self, key: Vec<u8>, record: ChannelRecord) {
        self.channels.insert(key, record);
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
        // Channel keys whose cached version this batch changes: written ones (a delete or a
        // raw write forgets the cached record) and advanced ones.
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
            for (key, record) in channels {
                match committed {
                    Ok(()) => cache.put(generation, key, record),
                    Err(_) => cache.forget(generation, &key),
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
