//! Read-your-writes view used while applying a batch of log entries: writes collect in memory
//! and commit as one fjall batch together with the applied log id, so a crash never leaves a
//! half-applied entry or an applied index that disagrees with the data.

use std::collections::BTreeMap;

use fjall::{Database, Keyspace, PersistMode};
use ringchat_storage::{decode_record, encode_record, StorageError};
use serde::{de::DeserializeOwned, Serialize};

/// Pending writes over the state machine keyspace.
pub struct Overlay<'a> {
    sm: &'a Keyspace,
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

impl<'a> Overlay<'a> {
    /// An empty overlay over `sm`.
    pub fn new(sm: &'a Keyspace) -> Self {
        Overlay {
            sm,
            writes: BTreeMap::new(),
        }
    }

    /// Reads a raw value, seeing this overlay's own writes first.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        if let Some(v) = self.writes.get(key) {
            return Ok(v.clone());
        }
        Ok(self.sm.get(key)?.map(|v| v.to_vec()))
    }

    /// Reads and decodes a record.
    pub fn get_record<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StorageError> {
        self.get(key)?.map(|b| decode_record(&b)).transpose()
    }

    /// Stages a record write.
    pub fn put_record<T: Serialize>(&mut self, key: Vec<u8>, value: &T) {
        self.writes.insert(key, Some(encode_record(value)));
    }

    /// Stages a delete.
    pub fn delete(&mut self, key: Vec<u8>) {
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
        for (k, v) in self.writes {
            match v {
                Some(v) => batch.insert(self.sm, k, v),
                None => batch.remove(self.sm, k),
            }
        }
        batch.commit()?;
        Ok(())
    }
}
