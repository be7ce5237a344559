//! Deleting a partition from a node that no longer replicates it.
//!
//! Once a replica has moved away, the committed layout no longer places it here and its
//! leader has stopped replicating to it, the node closes the group (`hosting.rs`) and deletes
//! every key of the partition: its state machine, its Raft log, then its vote and pointers, and
//! last its snapshot files. In that order a crash half-way leaves Raft state behind, so the
//! group opens again at the next start, is found outside the layout again and deleted again;
//! it never leaves a partition's records without anything that would reclaim them. A replica
//! moved back later starts empty, as a learner fed by a snapshot, like on a new node.

use std::path::Path;

use ringchat_storage::keys::partition_prefix;
use ringchat_storage::{StorageError, Store};

/// Keys deleted per write batch: bounded memory however large the partition is.
const CHUNK: usize = 10_000;

/// Deletes every key and snapshot file of `partition`; returns the number of keys deleted.
/// Blocking (fjall and file I/O): run it off the async workers.
pub fn drop_partition(store: &Store, partition: u16, snapshot_dir: &Path) -> Result<u64, StorageError> {
    // First: with the data going, a mark left behind would make a later replica of the
    // partition here look like one that lost its log.
    store.marks.forget(partition)?;
    let mut deleted = 0;
    for keyspace in [&store.sm, &store.log, &store.raft] {
        deleted += drop_prefix(store, keyspace, &partition_prefix(partition))?;
    }
    drop_snapshot_files(partition, snapshot_dir)?;
    Ok(deleted)
}

/// Deletes the Raft group `group`'s own state and snapshot files, leaving the data of the
/// partitions it carried (another group carries them now, `ownership.rs`): its log, vote and
/// pointers, and its records under `[group][META]`. Blocking, like `drop_partition`.
pub fn drop_group_state(store: &Store, group: u16, snapshot_dir: &Path) -> Result<u64, StorageError> {
    store.marks.forget(group)?;
    let own_records = ringchat_storage::KeyBuf::new(group, super::tables::META).build();
    let mut deleted = drop_prefix(store, &store.sm, &own_records)?;
    for keyspace in [&store.log, &store.raft] {
        deleted += drop_prefix(store, keyspace, &partition_prefix(group))?;
    }
    drop_snapshot_files(group, snapshot_dir)?;
    Ok(deleted)
}

/// Removes group `group`'s snapshot files (and temp files of builds cut short).
fn drop_snapshot_files(group: u16, snapshot_dir: &Path) -> Result<(), StorageError> {
    let name_prefix = format!("p{group}-");
    let temp = format!(".{}", super::snapshot::TEMP_EXTENSION);
    if let Ok(files) = std::fs::read_dir(snapshot_dir) {
        for file in files.flatten() {
            let name = file.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(&name_prefix) && (name.ends_with(".snap") || name.contains(&temp)) {
                std::fs::remove_file(file.path())?;
            }
        }
    }
    Ok(())
}

/// Deletes every key of `keyspace` that starts with `prefix`, `CHUNK` keys per batch.
fn drop_prefix(store: &Store, keyspace: &fjall::Keyspace, prefix: &[u8]) -> Result<u64, StorageError> {
    let mut deleted = 0u64;
    loop {
        // Each chunk scans from the prefix again: the keys of the chunks before it are gone,
        // and the scan of a memtable tombstone is cheap next to a disk read.
        let mut batch = store.db.batch();
        for item in keyspace.prefix(prefix).take(CHUNK) {
            batch.remove(keyspace, item.key()?);
        }
        let n = batch.len();
        batch.commit()?;
        deleted += n as u64;
        if n < CHUNK {
            return Ok(deleted);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringchat_storage::KeyBuf;

    fn count(keyspace: &fjall::Keyspace, p: u16) -> usize {
        keyspace.prefix(partition_prefix(p)).count()
    }

    #[test]
    fn every_key_and_snapshot_of_the_partition_goes_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let snaps = dir.path().join("snapshots");
        std::fs::create_dir_all(&snaps).unwrap();
        // Partition 1 spans more than one chunk; partitions 0 and 12 must stay.
        for p in [0u16, 1, 12] {
            let n = if p == 1 { CHUNK as u64 * 2 + 7 } else { 5 };
            for i in 0..n {
                store.sm.insert(KeyBuf::new(p, 3).u64(i).build(), b"v").unwrap();
            }
            store.log.insert(KeyBuf::new(p, 0).u64(1).build(), b"entry").unwrap();
            store
                .raft
                .insert(KeyBuf::new(p, 1).raw(b"vote").build(), b"vote")
                .unwrap();
            std::fs::write(snaps.join(format!("p{p}-40.snap")), b"snapshot").unwrap();
            // A temp file a crash left behind mid-build.
            std::fs::write(snaps.join(format!("p{p}-41.tmp3")), b"half a snapshot").unwrap();
        }
        store.raft.insert(b"\xff\xffpartitions", b"64").unwrap();

        let deleted = drop_partition(&store, 1, &snaps).unwrap();
        assert_eq!(deleted, CHUNK as u64 * 2 + 7 + 2);
        for keyspace in [&store.sm, &store.log, &store.raft] {
            assert_eq!(count(keyspace, 1), 0);
            assert!(count(keyspace, 0) > 0 && count(keyspace, 12) > 0);
        }
        assert!(!snaps.join("p1-40.snap").exists() && !snaps.join("p1-41.tmp3").exists());
        assert!(snaps.join("p0-41.tmp3").exists(), "another partition's temp file stays");
        assert!(snaps.join("p0-40.snap").exists() && snaps.join("p12-40.snap").exists());
        assert!(store.raft.get(b"\xff\xffpartitions").unwrap().is_some());
    }
}
