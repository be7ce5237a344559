//! openraft log storage for one partition, in the shared fjall database.
//!
//! Appends are written at once (readable immediately) and made durable by the node's
//! group-commit thread, which completes openraft's `IOFlushed` callback only after the fsync
//! that covers them: an entry is never reported persisted before it is on disk.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::alias::{EntryOf, LogIdOf, VoteOf};
use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader};
use ringchat_storage::{KeyBuf, Store};

use super::log_tail::LogTail;
use crate::types::TypeConfig;

type C = TypeConfig;

/// How often at most the committed log id is written (see `save_committed`).
const COMMITTED_SAVE_INTERVAL: Duration = Duration::from_secs(1);

/// Log entries removed per write batch when purging (see `purge`).
const PURGE_CHUNK: usize = 1_000;

/// The log store of partition `partition`. Cloning shares the database.
#[derive(Clone)]
pub struct LogStore {
    store: Store,
    partition: u16,
    /// When the committed log id was last written, shared by the clones.
    committed_saved: Arc<Mutex<Option<Instant>>>,
    /// The newest entries, shared by the clones (replication reads them from here).
    tail: Arc<LogTail>,
}

impl LogStore {
    /// The log of `partition` in `store`.
    pub fn new(store: Store, partition: u16) -> Self {
        LogStore {
            store,
            partition,
            committed_saved: Arc::default(),
            tail: Arc::default(),
        }
    }

    /// The store under this log.
    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    /// True if `store` holds any Raft state of `partition` (a vote or log entries): this node
    /// bootstrapped the partition or replicated it before, so its group should run here.
    pub fn has_state(store: &Store, partition: u16) -> bool {
        let vote = store.raft.prefix(KeyBuf::new(partition, 1).build()).next().is_some();
        let log = store.log.prefix(KeyBuf::new(partition, 0).build()).next().is_some();
        vote || log
    }

    fn log_key(&self, index: u64) -> Vec<u8> {
        KeyBuf::new(self.partition, 0).u64(index).build()
    }

    fn meta_key(&self, name: &[u8]) -> Vec<u8> {
        KeyBuf::new(self.partition, 1).raw(name).build()
    }

    fn read_meta<T: serde::de::DeserializeOwned>(&self, name: &[u8]) -> io::Result<Option<T>> {
        match self.store.raft.get(self.meta_key(name)).map_err(io::Error::other)? {
            Some(v) => Ok(Some(crate::codec::decode(&v)?)),
            None => Ok(None),
        }
    }

    /// Waits until everything written so far is fsync'd, in order with pending appends.
    async fn sync(&self) -> io::Result<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.store.syncer.after_sync(0, move |r| {
            let _ = tx.send(r);
        });
        rx.await.map_err(|_| io::Error::other("fsync thread stopped"))?
    }
}

impl RaftLogReader<C> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<EntryOf<C>>, io::Error> {
        let start = match range.start_bound() {
            Bound::Included(x) => *x,
            Bound::Excluded(x) => x.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let last = match range.end_bound() {
            Bound::Included(x) => Some(*x),
            Bound::Excluded(0) => None,
            Bound::Excluded(x) => Some(x - 1),
            Bound::Unbounded => None,
        };
        if let Some(entries) = last.and_then(|last| self.tail.get(start, last)) {
            return Ok(entries);
        }
        let end = match range.end_bound() {
            Bound::Included(x) => Bound::Included(self.log_key(*x)),
            Bound::Excluded(x) => Bound::Excluded(self.log_key(*x)),
            Bound::Unbounded => Bound::Included(self.log_key(u64::MAX)),
        };
        let mut out = Vec::new();
        for item in self
            .store
            .log
            .range::<Vec<u8>, _>((Bound::Included(self.log_key(start)), end))
        {
            let (_, v) = item.into_inner().map_err(io::Error::other)?;
            out.push(crate::codec::decode(&v)?);
        }
        Ok(out)
    }

    async fn read_vote(&mut self) -> Result<Option<VoteOf<C>>, io::Error> {
        self.read_meta(b"vote")
    }
}

impl RaftLogStorage<C> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<C>, io::Error> {
        let last = match self
            .store
            .log
            .prefix(KeyBuf::new(self.partition, 0).build())
            .next_back()
        {
            Some(item) => {
                let (_, v) = item.into_inner().map_err(io::Error::other)?;
                let entry: EntryOf<C> = crate::codec::decode(&v)?;
                Some(entry.log_id())
            }
            None => None,
        };
        let last_purged: Option<LogIdOf<C>> = self.read_meta(b"purged")?;
        // Entries at or below the purge point may outlive it by a crash mid-purge (`purge`):
        // the last log id is never older than the purge point.
        Ok(LogState {
            last_log_id: last.max(last_purged),
            last_purged_log_id: last_purged,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &VoteOf<C>) -> Result<(), io::Error> {
        self.store
            .raft
            .insert(self.meta_key(b"vote"), crate::codec::encode(vote))
            .map_err(io::Error::other)?;
        self.sync().await?;
        self.store.marks.raise_vote(self.partition, vote.leader_id().term);
        Ok(())
    }

    /// Written at most once per `COMMITTED_SAVE_INTERVAL`: openraft calls this on every commit,
    /// and a journal write per message was ~4% of a clustered node's CPU. The saved id only
    /// lets a restarted replica apply its log before hearing from a leader; an older one is
    /// still correct (entries up to it are committed), the rest is applied once a leader
    /// confirms it, so durability does not depend on it.
    async fn save_committed(&mut self, committed: Option<LogIdOf<C>>) -> Result<(), io::Error> {
        {
            let mut saved = self.committed_saved.lock().unwrap_or_else(|p| p.into_inner());
            if saved.is_some_and(|at| at.elapsed() < COMMITTED_SAVE_INTERVAL) {
                return Ok(());
            }
            *saved = Some(Instant::now());
        }
        self.store
            .raft
            .insert(self.meta_key(b"committed"), crate::codec::encode(&committed))
            .map_err(io::Error::other)
    }

    async fn read_committed(&mut self) -> Result<Option<LogIdOf<C>>, io::Error> {
        Ok(self.read_meta::<Option<LogIdOf<C>>>(b"committed")?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<C>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = EntryOf<C>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = self.store.db.batch();
        let mut written = Vec::new();
        for entry in entries {
            let bytes = crate::codec::encode(&entry);
            let size = bytes.len();
            batch.insert(&self.store.log, self.log_key(entry.index()), bytes);
            written.push((entry, size));
        }
        batch.commit().map_err(io::Error::other)?;
        let last = written.last().map(|(entry, _)| entry.index());
        let bytes = written.iter().map(|(_, size)| size).sum();
        self.tail.appended(written);
        let (marks, partition) = (self.store.marks.clone(), self.partition);
        self.store.syncer.after_sync(bytes, move |result| {
            if let (Ok(()), Some(last)) = (&result, last) {
                marks.raise_index(partition, last);
            }
            callback.io_completed(result)
        });
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogIdOf<C>>) -> Result<(), io::Error> {
        let from = last_log_id.map(|id| id.index() + 1).unwrap_or(0);
        self.tail.truncated_from(from);
        let mut batch = self.store.db.batch();
        for item in self.store.log.range(self.log_key(from)..=self.log_key(u64::MAX)) {
            let key = item.key().map_err(io::Error::other)?;
            batch.remove(&self.store.log, key);
        }
        batch.commit().map_err(io::Error::other)?;
        self.sync().await?;
        // A shorter log is now on disk: a crash before the next marks write must not read it
        // as a lost tail.
        let (marks, partition) = (self.store.marks.clone(), self.partition);
        tokio::task::spawn_blocking(move || marks.lower_index(partition, from.checked_sub(1)))
            .await
            .map_err(io::Error::other)?
            .map_err(io::Error::other)
    }

    /// The purge point is written first, then the entries are removed in batches of
    /// `PURGE_CHUNK` with a yield between them: after a snapshot tens of thousands of entries
    /// go at once, and one batch of them held a worker thread for tens of milliseconds. A crash
    /// in between leaves entries below the purge point, which nothing reads and the next purge
    /// removes.
    async fn purge(&mut self, log_id: LogIdOf<C>) -> Result<(), io::Error> {
        self.tail.purged_through(log_id.index());
        self.store
            .raft
            .insert(self.meta_key(b"purged"), crate::codec::encode(&log_id))
            .map_err(io::Error::other)?;
        // Each chunk starts after the last key removed, so no chunk walks the tombstones of
        // the ones before it.
        let mut from = self.log_key(0);
        loop {
            let mut batch = self.store.db.batch();
            let mut last = None;
            for item in self
                .store
                .log
                .range(from.clone()..=self.log_key(log_id.index()))
                .take(PURGE_CHUNK)
            {
                let key = item.key().map_err(io::Error::other)?;
                batch.remove(&self.store.log, key.clone());
                last = Some(key);
            }
            let removed = batch.len();
            batch.commit().map_err(io::Error::other)?;
            match last {
                Some(key) if removed == PURGE_CHUNK => {
                    from = key.to_vec();
                    from.push(0);
                }
                _ => return Ok(()),
            }
            tokio::task::yield_now().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Builder {
        dirs: std::sync::Mutex<Vec<tempfile::TempDir>>,
    }

    impl openraft::testing::log::StoreBuilder<C, LogStore, crate::partition::StateMachine, ()> for Arc<Builder> {
        async fn build(&self) -> Result<((), LogStore, crate::partition::StateMachine), openraft::StorageError<C>> {
            let err = |e: io::Error| {
                openraft::StorageError::from_io_error(openraft::ErrorSubject::Store, openraft::ErrorVerb::Write, e)
            };
            let dir = tempfile::tempdir().map_err(err)?;
            let store = Store::open(dir.path()).map_err(|e| err(e.into()))?;
            let sm = crate::partition::StateMachine::open(store.clone(), 5, dir.path().join("snapshots"))
                .map_err(|e| err(e.into()))?;
            self.dirs.lock().unwrap().push(dir);
            Ok(((), LogStore::new(store, 5), sm))
        }
    }

    /// A purge larger than one chunk removes exactly the entries through the purge point.
    #[test]
    fn a_purge_of_many_chunks_removes_exactly_the_entries_it_covers() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(dir.path()).unwrap();
            let mut log = LogStore::new(store.clone(), 3);
            let last = 2 * PURGE_CHUNK as u64 + 500;
            let entries: Vec<EntryOf<C>> = (1..=last)
                .map(|i| EntryOf::<C>::new_blank(openraft::testing::log_id::<C>(1, 1, i)))
                .collect();
            log.append(entries, IOFlushed::noop()).await.unwrap();
            let through = 2 * PURGE_CHUNK as u64 + 100;
            log.purge(openraft::testing::log_id::<C>(1, 1, through)).await.unwrap();
            let left: Vec<u64> = store
                .log
                .prefix(KeyBuf::new(3, 0).build())
                .map(|item| {
                    let (k, _) = item.into_inner().unwrap();
                    u64::from_be_bytes(k[k.len() - 8..].try_into().unwrap())
                })
                .collect();
            assert_eq!(left, (through + 1..=last).collect::<Vec<_>>());
            let state = log.get_log_state().await.unwrap();
            assert_eq!(state.last_purged_log_id.map(|l| l.index()), Some(through));
            assert_eq!(state.last_log_id.map(|l| l.index()), Some(last));
        });
    }

    /// openraft's own conformance suite (~44 cases) against the fjall log store.
    #[test]
    fn openraft_log_store_suite_passes() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let builder = Arc::new(Builder {
                dirs: std::sync::Mutex::new(Vec::new()),
            });
            openraft::testing::log::Suite::test_all(builder).await.unwrap();
        });
    }
}
