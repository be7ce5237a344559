//! One partition's data copied to a node new to it, for a move between two groups
//! (docs/raft-groups.md, "What the copy really has to move").
//!
//! A source replica that applied the partition's fence reads the partition's data tables
//! (`[p][1..]`, never `[p][META]`: a group's own records are not the partition's) from one
//! consistent fjall view and sends them in chunks. The node new to the partition first
//! deletes whatever it still held of it, writes the chunks, fsyncs, and only then records a
//! **copy marker** `(from, after)`: the group adopting the partition waits for that marker (or
//! for its own replica of the source group to have applied the fence, on a node that has one)
//! before it applies the adoption here (`ownership::source_applied`). A copy cut short leaves
//! no marker, so it is simply done again.
//!
//! The marker lives in the node's own Raft keyspace under `\xff\xff`, which no group
//! replicates or snapshots. The chunk format is the snapshot files' record framing, whole keys:
//! `[u32 BE key len][key][u32 BE value len][value]`, repeated.

use std::io;

use fjall::Readable;
use ringchat_storage::keys::partition_prefix;
use ringchat_storage::{KeyBuf, StorageError, Store};
use serde::{Deserialize, Serialize};

use super::tables as t;

/// Bytes of records per chunk sent (a chunk may exceed it by one record).
pub const CHUNK_BYTES: usize = 1 << 20;

/// Records per local write batch while writing a copy.
const BATCH_RECORDS: usize = 10_000;

/// What a finished copy of a partition recorded on the node that received it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyMarker {
    /// The group the partition was copied out of...
    pub from: u16,
    /// ...as that group's log left it at its fence (this log index).
    pub after: u64,
    /// Unix ms when the copy finished: an unused marker is only stale after a while
    /// (`is_stale`).
    pub at_ms: u64,
}

/// A marker this old whose partition no group here took over belongs to a move that was
/// given up (its adoption would have followed within the move's timeout).
pub const STALE_AFTER_MS: u64 = 10 * 60 * 1000;

impl CopyMarker {
    /// True once the move that made it would have timed out long ago.
    pub fn is_stale(&self, now_ms: u64) -> bool {
        now_ms.saturating_sub(self.at_ms) >= STALE_AFTER_MS
    }
}

/// The node-local key of partition `p`'s copy marker.
fn marker_key(p: u16) -> Vec<u8> {
    let mut key = b"\xff\xffcopied/".to_vec();
    key.extend_from_slice(&p.to_be_bytes());
    key
}

/// The copy marker of partition `p` on this node, if a copy of it finished here.
pub fn copy_marker(store: &Store, p: u16) -> Result<Option<CopyMarker>, StorageError> {
    match store.raft.get(marker_key(p))? {
        Some(v) => Ok(Some(crate::codec::decode(&v)?)),
        None => Ok(None),
    }
}

/// Removes partition `p`'s copy marker (its data went).
pub fn forget_copy(store: &Store, p: u16) -> Result<(), StorageError> {
    store.raft.remove(marker_key(p))?;
    Ok(())
}

/// The key range of partition `p`'s data tables: every key of `p` after its `META` table.
fn data_range(p: u16) -> std::ops::Range<Vec<u8>> {
    KeyBuf::new(p, t::META + 1).build()..partition_prefix(p + 1).to_vec()
}

/// True if this node holds any data key of partition `p`.
pub fn holds_data(store: &Store, p: u16) -> Result<bool, StorageError> {
    Ok(store.sm.range(data_range(p)).next().is_some())
}

/// Reads partition `p`'s data tables as `view` sees them, calling `each` with every chunk of
/// about `CHUNK_BYTES`; returns the record count. Blocking: run it off the workers.
pub fn read_chunks(
    store: &Store,
    view: &fjall::Snapshot,
    p: u16,
    mut each: impl FnMut(Vec<u8>) -> io::Result<()>,
) -> io::Result<u64> {
    let mut chunk = Vec::with_capacity(CHUNK_BYTES + 4096);
    let mut count = 0u64;
    for item in view.range(&store.sm, data_range(p)) {
        let (k, v) = item.into_inner().map_err(io::Error::other)?;
        chunk.extend_from_slice(&(k.len() as u32).to_be_bytes());
        chunk.extend_from_slice(&k);
        chunk.extend_from_slice(&(v.len() as u32).to_be_bytes());
        chunk.extend_from_slice(&v);
        count += 1;
        if chunk.len() >= CHUNK_BYTES {
            each(std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK_BYTES + 4096)))?;
        }
    }
    if !chunk.is_empty() {
        each(chunk)?;
    }
    Ok(count)
}

/// Writes a copy of partition `p` arriving in chunks (see the module doc). Blocking.
pub struct CopyWriter {
    store: Store,
    p: u16,
    batch: fjall::OwnedWriteBatch,
    records: u64,
}

impl CopyWriter {
    /// Starts a copy of `p`: its marker and every data key this node still holds of it go
    /// first (a copy cut short, or data left from an earlier time here).
    pub fn start(store: &Store, p: u16) -> Result<Self, StorageError> {
        forget_copy(store, p)?;
        drop_data(store, p)?;
        Ok(CopyWriter {
            store: store.clone(),
            p,
            batch: store.db.batch(),
            records: 0,
        })
    }

    /// Writes one chunk. Every record must be a data key of `p` (the chunk came from a peer).
    pub fn write(&mut self, chunk: &[u8]) -> io::Result<()> {
        let range = data_range(self.p);
        let mut rest = chunk;
        while !rest.is_empty() {
            let key = take_field(&mut rest)?;
            let value = take_field(&mut rest)?;
            if key < range.start.as_slice() || key >= range.end.as_slice() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "a copied record outside the partition's data",
                ));
            }
            self.batch.insert(&self.store.sm, key.to_vec(), value.to_vec());
            self.records += 1;
            if self.batch.len() >= BATCH_RECORDS {
                std::mem::replace(&mut self.batch, self.store.db.batch())
                    .commit()
                    .map_err(io::Error::other)?;
            }
        }
        Ok(())
    }

    /// Ends the copy: fsyncs what was written, then records the marker (fsync'd too), so a
    /// marker always stands for a whole, durable copy. Returns the record count.
    pub fn finish(self, from: u16, after: u64) -> Result<u64, StorageError> {
        self.batch.commit()?;
        self.store.sync()?;
        let marker = CopyMarker {
            from,
            after,
            at_ms: crate::clock::unix_ms(),
        };
        let mut batch = self.store.db.batch().durability(Some(fjall::PersistMode::SyncAll));
        batch.insert(&self.store.raft, marker_key(self.p), crate::codec::encode(&marker));
        batch.commit()?;
        Ok(self.records)
    }
}

/// Deletes every data key of partition `p` here (not its `META` records), in bounded
/// batches; returns how many. Blocking.
pub fn drop_data(store: &Store, p: u16) -> Result<u64, StorageError> {
    let mut deleted = 0u64;
    loop {
        let mut batch = store.db.batch();
        for item in store.sm.range(data_range(p)).take(BATCH_RECORDS) {
            batch.remove(&store.sm, item.key()?);
        }
        let n = batch.len();
        batch.commit()?;
        deleted += n as u64;
        if n < BATCH_RECORDS {
            return Ok(deleted);
        }
    }
}

/// Takes one length-prefixed field off the front of `rest`.
fn take_field<'a>(rest: &mut &'a [u8]) -> io::Result<&'a [u8]> {
    let torn = || io::Error::new(io::ErrorKind::InvalidData, "a torn copy chunk");
    let len = rest.get(..4).ok_or_else(torn)?;
    let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
    let field = rest.get(4..4 + len).ok_or_else(torn)?;
    *rest = &rest[4 + len..];
    Ok(field)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(store: &Store, p: u16, table: u8, i: u64, value: &[u8]) {
        store.sm.insert(KeyBuf::new(p, table).u64(i).build(), value).unwrap();
    }

    #[test]
    fn a_copy_carries_the_data_tables_only_and_replaces_what_was_there() {
        let dir = tempfile::tempdir().unwrap();
        let source = Store::open(&dir.path().join("a")).unwrap();
        let target = Store::open(&dir.path().join("b")).unwrap();
        for i in 0..30_000 {
            put(&source, 7, t::MESSAGE, i, &[b'x'; 100]);
        }
        put(&source, 7, t::CHANNEL, 1, b"channel");
        put(&source, 7, t::META, 1, b"group record: not the partition's");
        put(&source, 8, t::MESSAGE, 1, b"another partition");
        // The target holds a stale record of partition 7 and its own of partition 6.
        put(&target, 7, t::MESSAGE, 99_999, b"stale");
        put(&target, 6, t::MESSAGE, 1, b"stays");

        let mut chunks = Vec::new();
        let read = read_chunks(&source, &source.db.snapshot(), 7, |c| {
            chunks.push(c);
            Ok(())
        })
        .unwrap();
        assert_eq!(read, 30_001);
        assert!(chunks.len() > 1, "3 MB goes in several chunks");
        let mut writer = CopyWriter::start(&target, 7).unwrap();
        for c in &chunks {
            writer.write(c).unwrap();
        }
        assert_eq!(copy_marker(&target, 7).unwrap(), None, "no marker before the end");
        assert_eq!(writer.finish(0x8001, 42).unwrap(), 30_001);
        let marker = copy_marker(&target, 7).unwrap().unwrap();
        assert_eq!((marker.from, marker.after), (0x8001, 42));

        assert_eq!(target.sm.range(data_range(7)).count(), 30_001);
        assert!(target
            .sm
            .get(KeyBuf::new(7, t::MESSAGE).u64(99_999).build())
            .unwrap()
            .is_none());
        assert!(target.sm.get(KeyBuf::new(7, t::META).u64(1).build()).unwrap().is_none());
        assert!(target
            .sm
            .get(KeyBuf::new(8, t::MESSAGE).u64(1).build())
            .unwrap()
            .is_none());
        assert!(target
            .sm
            .get(KeyBuf::new(6, t::MESSAGE).u64(1).build())
            .unwrap()
            .is_some());

        assert_eq!(drop_data(&target, 7).unwrap(), 30_001);
        assert!(!holds_data(&target, 7).unwrap());
        assert!(holds_data(&target, 6).unwrap());
    }

    #[test]
    fn records_of_another_partition_or_a_torn_chunk_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut chunk = Vec::new();
        let key = KeyBuf::new(8, t::MESSAGE).u64(1).build();
        chunk.extend_from_slice(&(key.len() as u32).to_be_bytes());
        chunk.extend_from_slice(&key);
        chunk.extend_from_slice(&1u32.to_be_bytes());
        chunk.push(b'v');
        let mut writer = CopyWriter::start(&store, 7).unwrap();
        assert!(writer.write(&chunk).is_err(), "partition 8's record in a copy of 7");
        let mut writer = CopyWriter::start(&store, 8).unwrap();
        assert!(writer.write(&chunk[..chunk.len() - 1]).is_err(), "torn");
        let meta_key = KeyBuf::new(8, t::META).u64(1).build();
        let mut meta = (meta_key.len() as u32).to_be_bytes().to_vec();
        meta.extend_from_slice(&meta_key);
        meta.extend_from_slice(&0u32.to_be_bytes());
        assert!(writer.write(&meta).is_err(), "a group record");
    }
}
