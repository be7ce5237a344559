//! openraft state machine of one partition: applies commands into fjall, builds and installs
//! file snapshots.

use std::collections::BTreeSet;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use futures_util::{Stream, TryStreamExt};
use openraft::alias::{LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use ringchat_storage::{StorageError, Store};
use serde::{Deserialize, Serialize};

use super::channel_cache::ChannelCache;
use super::overlay::Overlay;
use super::ownership::{admitted_elsewhere, adoption_waits, apply_entry, source_applied, Ownership};
use super::snapshot::{read_snapshot, verify_snapshot, write_snapshot, Coverage, SnapshotFile};
use super::snapshot_schedule::SnapshotSchedule;
use super::tables as t;
use crate::command::Response;
use crate::delivery::PartitionDelivery;
use crate::types::TypeConfig;

type C = TypeConfig;

/// Where the current snapshot of a partition is, persisted in the `raft` keyspace.
#[derive(Serialize, Deserialize)]
struct SnapshotPointer {
    /// openraft's metadata (last log id and membership covered).
    meta: SnapshotMetaOf<C>,
    /// The file.
    path: PathBuf,
}

/// The state machine of one partition.
pub struct StateMachine {
    store: Store,
    partition: u16,
    snapshot_dir: PathBuf,
    applied: Option<LogIdOf<C>>,
    membership: StoredMembershipOf<C>,
    /// The partitions this group carries, as of `applied`.
    owned: Ownership,
    /// Delivery of what this replica applies, when it leads (`None`: tests and tools).
    delivery: Option<Arc<PartitionDelivery>>,
    /// The node's channel cache and this state machine's current generation in it.
    channels: Option<(ChannelCache, u64)>,
    /// When the next snapshot is due (`None`: openraft's own policy, in tests and tools).
    schedule: Option<Arc<SnapshotSchedule>>,
    /// Set once the group is open (`group_opened`): from then on a snapshot handed out is one
    /// about to be sent, and its file is checked first (`get_current_snapshot`).
    opened: Arc<AtomicBool>,
    /// The snapshot file last checked whole, so a retried send does not read it again.
    checked: Option<PathBuf>,
}

impl StateMachine {
    /// Opens partition `partition`'s state machine, reading its applied position from disk.
    pub fn open(store: Store, partition: u16, snapshot_dir: PathBuf) -> Result<Self, StorageError> {
        std::fs::create_dir_all(&snapshot_dir)?;
        let applied = match store.sm.get(t::meta_applied(partition))? {
            Some(v) => crate::codec::decode(&v)?,
            None => None,
        };
        let membership = match store.sm.get(t::meta_membership(partition))? {
            Some(v) => crate::codec::decode(&v)?,
            None => StoredMembershipOf::<C>::default(),
        };
        let owned = Ownership::load(&Overlay::new(&store.sm), partition)?;
        Ok(StateMachine {
            store,
            partition,
            snapshot_dir,
            applied,
            membership,
            owned,
            delivery: None,
            channels: None,
            schedule: None,
            opened: Arc::new(AtomicBool::new(false)),
            checked: None,
        })
    }

    /// The switch to flip once openraft has opened the group. While it opens, openraft reads
    /// the current snapshot only for its metadata, and checking every file there would read a
    /// node's whole history at each start.
    pub fn group_opened(&self) -> Arc<AtomicBool> {
        self.opened.clone()
    }

    /// The same state machine asking `schedule` for snapshots, starting from the snapshot on
    /// disk (its index, and its record count if a build of this release recorded it).
    pub fn with_snapshot_schedule(mut self, schedule: Arc<SnapshotSchedule>) -> Result<Self, StorageError> {
        if let Some(pointer) = self.read_pointer()? {
            let index = pointer.meta.last_log_id.as_ref().map(|l| l.index()).unwrap_or(0);
            let records = match self.store.raft.get(records_key(self.partition))? {
                Some(v) => crate::codec::decode::<u64>(&v)?,
                None => 0,
            };
            schedule.snapshotted(index, records);
        }
        self.schedule = Some(schedule);
        Ok(self)
    }

    /// The same state machine reading and writing channel records through `cache`.
    pub fn with_channel_cache(mut self, cache: ChannelCache) -> Self {
        let generation = cache.new_generation();
        self.channels = Some((cache, generation));
        self
    }

    /// The same state machine handing committed messages to `delivery` after each apply.
    pub fn with_delivery(mut self, delivery: Arc<PartitionDelivery>) -> Self {
        self.delivery = Some(delivery);
        self
    }

    fn pointer_key(&self) -> Vec<u8> {
        ringchat_storage::KeyBuf::new(self.partition, 1)
            .raw(b"snapshot")
            .build()
    }

    fn read_pointer(&self) -> io::Result<Option<SnapshotPointer>> {
        match self.store.raft.get(self.pointer_key()).map_err(io::Error::other)? {
            Some(v) => Ok(Some(crate::codec::decode(&v)?)),
            None => Ok(None),
        }
    }
}

/// Makes the received snapshot file `src` this replica's current one at `dest`: renamed (the
/// staging dir is on the same disk; the stager's cleanup finds it gone), copied only when the
/// rename fails. Copying wrote and read every byte of a moving replica's history once more.
fn keep_as(src: &std::path::Path, dest: &std::path::Path) -> io::Result<()> {
    if std::fs::rename(src, dest).is_ok() {
        return Ok(());
    }
    std::fs::copy(src, dest).map(|_| ())
}

/// Where the record count of partition `p`'s current snapshot is kept, beside its pointer (a
/// separate key: the pointer's encoded shape is part of the stored format).
fn records_key(p: u16) -> Vec<u8> {
    ringchat_storage::KeyBuf::new(p, 1).raw(b"snapshot_records").build()
}

/// Records `records` as the size of partition `p`'s snapshot at `index`, for `schedule` now and
/// after a restart.
fn snapshot_taken(
    store: &Store,
    p: u16,
    schedule: Option<&Arc<SnapshotSchedule>>,
    index: u64,
    records: u64,
) -> io::Result<()> {
    store
        .raft
        .insert(records_key(p), crate::codec::encode(&records))
        .map_err(io::Error::other)?;
    if let Some(schedule) = schedule {
        schedule.snapshotted(index, records);
    }
    Ok(())
}

/// Builds a snapshot from a read view taken between two applies.
pub struct SnapshotBuilder {
    store: Store,
    partition: u16,
    snapshot_dir: PathBuf,
    view: fjall::Snapshot,
    /// The keys the view's state of the group covers (what it carried at that point).
    coverage: Coverage,
    meta: SnapshotMetaOf<C>,
    pointer_key: Vec<u8>,
    schedule: Option<Arc<SnapshotSchedule>>,
}

impl RaftSnapshotBuilder<C> for SnapshotBuilder {
    type SnapshotData = SnapshotFile;

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<C, SnapshotFile>, io::Error> {
        let built = self.build().await;
        if let (Err(_), Some(schedule)) = (&built, &self.schedule) {
            schedule.not_built();
        }
        built
    }
}

impl SnapshotBuilder {
    /// Writes the snapshot file, points the partition at it and records its size; any error
    /// leaves the schedule free to ask again (`build_snapshot`).
    async fn build(&self) -> Result<SnapshotOf<C, SnapshotFile>, io::Error> {
        let index = self.meta.last_log_id.as_ref().map(|l| l.index()).unwrap_or(0);
        let path = self.snapshot_dir.join(format!("p{}-{}.snap", self.partition, index));
        let (store, view, coverage, p2) = (
            self.store.clone(),
            self.view.clone(),
            self.coverage.clone(),
            path.clone(),
        );
        // At a lower CPU priority: a group carrying many partitions writes hundreds of
        // thousands of records, and on a busy node that took the cores from the request path
        // (docs/benchmarks.md, "twenty-first").
        let count = ringchat_storage::background_priority::run_in_background("ringchat-snap", move || {
            write_snapshot(&store, &view, &coverage, &p2)
        })
        .await??;
        let old = match self.store.raft.get(&self.pointer_key).map_err(io::Error::other)? {
            Some(v) => Some(crate::codec::decode::<SnapshotPointer>(&v)?.path),
            None => None,
        };
        let pointer = SnapshotPointer {
            meta: self.meta.clone(),
            path: path.clone(),
        };
        self.store
            .raft
            .insert(&self.pointer_key, crate::codec::encode(&pointer))
            .map_err(io::Error::other)?;
        snapshot_taken(&self.store, self.partition, self.schedule.as_ref(), index, count)?;
        if let Some(old) = old.filter(|o| *o != path) {
            let _ = std::fs::remove_file(old);
        }
        tracing::info!(partition = self.partition, index, records = count, "snapshot built");
        Ok(SnapshotOf::<C, SnapshotFile> {
            meta: self.meta.clone(),
            snapshot: SnapshotFile(path),
        })
    }
}

impl RaftStateMachine<C> for StateMachine {
    type SnapshotData = SnapshotFile;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogIdOf<C>>, StoredMembershipOf<C>), io::Error> {
        Ok((self.applied, self.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<C>, io::Error>> + Unpin + OptionalSend,
    {
        let p = self.partition;
        let mut ov = Overlay::new(&self.store.sm);
        if let Some((cache, generation)) = &self.channels {
            ov = ov.with_channel_cache(cache, *generation);
        }
        let mut replies = Vec::new();
        let mut committed = Vec::new();
        let mut last = None;
        let mut membership_changed = false;
        while let Some((entry, responder)) = entries.try_next().await? {
            let response = match &entry.payload {
                EntryPayload::Blank => Response::Done,
                EntryPayload::Normal(cmd) => {
                    let waits = adoption_waits(cmd, p);
                    for (partition, from, after) in &waits {
                        source_applied(&self.store, *partition, *from, *after).await?;
                    }
                    if let (false, Some(schedule)) = (waits.is_empty(), &self.schedule) {
                        schedule.adopted(entry.log_id.index());
                    }
                    apply_entry(&mut ov, p, entry.log_id.index(), &mut self.owned, cmd).map_err(|e| {
                        // The group stops on this error; the next start sets the database aside.
                        if e.is_damage() {
                            self.store.note_damage(&format!("partition {p}: {e}"));
                        }
                        e
                    })?
                }
                EntryPayload::Membership(m) => {
                    self.membership = StoredMembershipOf::<C>::new(Some(entry.log_id), m.clone());
                    membership_changed = true;
                    Response::Done
                }
            };
            last = Some(entry.log_id);
            if self.delivery.is_some() {
                let answers = match &response {
                    Response::Batch(answers) => answers.as_slice(),
                    single => std::slice::from_ref(single),
                };
                for answer in answers {
                    if let Response::Sent {
                        message,
                        members,
                        duplicate: false,
                    } = answer
                    {
                        committed.push((message.clone(), members.clone()));
                    }
                }
            }
            if let Some(r) = responder {
                replies.push((r, response));
            }
        }
        if last.is_some() {
            self.applied = last;
            ov.put_record(t::meta_applied(p), &self.applied);
            // Written with the batch that applied it, and only then: it changes rarely, and
            // encoding it on every apply was a cost per message on every replica.
            if membership_changed {
                ov.put_record(t::meta_membership(p), &self.membership);
            }
            ov.commit(&self.store.db)?;
            if let (Some(schedule), Some(id)) = (&self.schedule, &self.applied) {
                schedule.applied(id.index());
            }
        }
        if let Some(delivery) = &self.delivery {
            for (message, members) in committed {
                delivery.applied(message, members);
            }
        }
        for (r, response) in replies {
            r.send(response);
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            store: self.store.clone(),
            partition: self.partition,
            snapshot_dir: self.snapshot_dir.clone(),
            view: self.store.db.snapshot(),
            coverage: Coverage {
                group: self.partition,
                carried: self.owned.carried.clone(),
            },
            meta: SnapshotMetaOf::<C> {
                last_log_id: self.applied,
                last_membership: self.membership.clone(),
            },
            pointer_key: self.pointer_key(),
            schedule: self.schedule.clone(),
        }
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMetaOf<C>, snapshot: SnapshotFile) -> Result<(), io::Error> {
        let p = self.partition;
        let store = self.store.clone();
        let src = snapshot.0.clone();
        let index = meta.last_log_id.as_ref().map(|l| l.index()).unwrap_or(0);
        let dest = self.snapshot_dir.join(format!("p{p}-{index}.snap"));
        let dest2 = dest.clone();
        let carried_before = self.owned.carried.clone();
        let records = tokio::task::spawn_blocking(move || -> io::Result<u64> {
            // A damaged file is refused before anything of the current state is dropped; the
            // same pass finds what the snapshot's group carries.
            let ownership_key = t::meta_ownership(p);
            let mut owned = None;
            read_snapshot(&src, p, |k, v| {
                if k == ownership_key.as_slice() {
                    owned = Some(crate::codec::decode::<Ownership>(v)?);
                }
                Ok(())
            })?;
            let owned = owned.unwrap_or_else(|| Ownership::initial(p));
            // Drop the group's current state (what it carried and what it will carry), then
            // load the snapshot's, in bounded batches; a partition that another group here
            // admits now is that group's, and stays as it is (a snapshot of a group that has
            // since handed it over holds an older copy).
            let mut live_elsewhere = BTreeSet::new();
            for q in carried_before.union(&owned.carried) {
                if admitted_elsewhere(&store, p, *q).map_err(io::Error::other)? {
                    live_elsewhere.insert(*q);
                }
            }
            let dropped = Coverage {
                group: p,
                carried: carried_before
                    .union(&owned.carried)
                    .filter(|q| !live_elsewhere.contains(q))
                    .copied()
                    .collect(),
            };
            let loaded = Coverage {
                group: p,
                carried: owned.carried.difference(&live_elsewhere).copied().collect(),
            };
            let mut batch = store.db.batch();
            for key in dropped.keys(&store.sm) {
                batch.remove(&store.sm, key?);
                if batch.len() >= 10_000 {
                    std::mem::replace(&mut batch, store.db.batch())
                        .commit()
                        .map_err(io::Error::other)?;
                }
            }
            batch.commit().map_err(io::Error::other)?;
            let mut batch = store.db.batch();
            let count = read_snapshot(&src, p, |k, v| {
                if k.len() >= 2 && live_elsewhere.contains(&u16::from_be_bytes([k[0], k[1]])) && !loaded.contains(k) {
                    return Ok(());
                }
                if !loaded.contains(k) {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "a snapshot record outside the group's partitions",
                    ));
                }
                batch.insert(&store.sm, k.to_vec(), v.to_vec());
                if batch.len() >= 10_000 {
                    std::mem::replace(&mut batch, store.db.batch())
                        .commit()
                        .map_err(io::Error::other)?;
                }
                Ok(())
            })?;
            batch.commit().map_err(io::Error::other)?;
            if src != dest2 {
                keep_as(&src, &dest2)?;
            }
            Ok(count)
        })
        .await
        .map_err(io::Error::other)??;
        self.applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        self.owned = Ownership::load(&Overlay::new(&self.store.sm), p).map_err(io::Error::other)?;
        // Every record may have changed: cached ones of the old state are never read again.
        if let Some((cache, generation)) = &mut self.channels {
            *generation = cache.new_generation();
        }
        let mut batch = self.store.db.batch().durability(Some(fjall::PersistMode::SyncAll));
        batch.insert(&self.store.sm, t::meta_applied(p), crate::codec::encode(&self.applied));
        batch.insert(
            &self.store.sm,
            t::meta_membership(p),
            crate::codec::encode(&self.membership),
        );
        let pointer = SnapshotPointer {
            meta: meta.clone(),
            path: dest,
        };
        batch.insert(&self.store.raft, self.pointer_key(), crate::codec::encode(&pointer));
        batch.commit().map_err(io::Error::other)?;
        snapshot_taken(&self.store, p, self.schedule.as_ref(), index, records)?;
        metrics::counter!("ringchat_snapshots_installed_total").increment(1);
        tracing::info!(partition = p, index, records, "snapshot installed");
        Ok(())
    }

    /// The current snapshot; once the group is open (a snapshot asked for then is about to be
    /// sent to a replica), its file is checked whole first, and a damaged one is replaced by a
    /// new snapshot of the state machine, which is intact (its records are checked on read):
    /// a replica must never be refused or fed a damaged copy over and over.
    async fn get_current_snapshot(&mut self) -> Result<Option<SnapshotOf<C, SnapshotFile>>, io::Error> {
        let Some(ptr) = self.read_pointer()?.filter(|ptr| ptr.path.exists()) else {
            return Ok(None);
        };
        if self.opened.load(Ordering::Relaxed) && self.checked.as_ref() != Some(&ptr.path) {
            let path = ptr.path.clone();
            match tokio::task::spawn_blocking(move || verify_snapshot(&path))
                .await
                .map_err(io::Error::other)?
            {
                Ok(_) => self.checked = Some(ptr.path.clone()),
                Err(e) => {
                    tracing::error!(partition = self.partition, path = %ptr.path.display(), error = %e,
                        "snapshot file is damaged; building a new one from the state machine");
                    let rebuilt = self.get_snapshot_builder().await.build().await?;
                    self.checked = Some(rebuilt.snapshot.0.clone());
                    return Ok(Some(rebuilt));
                }
            }
        }
        Ok(Some(SnapshotOf::<C, SnapshotFile> {
            meta: ptr.meta,
            snapshot: SnapshotFile(ptr.path),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn put(store: &Store, key: Vec<u8>, value: &[u8]) {
        store.sm.insert(key, value).unwrap();
    }

    fn get(store: &Store, key: Vec<u8>) -> Option<Vec<u8>> {
        store.sm.get(key).unwrap().map(|v| v.to_vec())
    }

    /// A group carrying partitions 3 and 4 (not its own, 9) snapshots exactly their data and
    /// its own records; installing that on a replica replaces what the group carried there
    /// and leaves every other partition's keys alone.
    #[tokio::test]
    async fn a_group_snapshot_holds_the_partitions_it_carries_and_installs_over_them_only() {
        let dir = tempfile::tempdir().unwrap();
        let source = Store::open(&dir.path().join("a")).unwrap();
        let owned = Ownership {
            carried: BTreeSet::from([3, 4]),
            fenced: BTreeSet::new(),
        };
        put(&source, t::meta_ownership(9), &crate::codec::encode(&owned));
        put(&source, t::user(3, "u3"), b"three");
        put(&source, t::channel(4, "c4"), b"four");
        // Partition 3's own group records and partition 5 are not the group's.
        put(&source, t::meta_applied(3), b"group 3");
        put(&source, t::user(5, "u5"), b"five");
        let mut sm = StateMachine::open(source.clone(), 9, dir.path().join("snaps-a")).unwrap();
        let built = sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
        let mut keys = Vec::new();
        read_snapshot(&built.snapshot.0, 9, |k, _| {
            keys.push(k.to_vec());
            Ok(())
        })
        .unwrap();
        keys.sort();
        let mut want = vec![t::meta_ownership(9), t::user(3, "u3"), t::channel(4, "c4")];
        want.sort();
        assert_eq!(keys, want);

        let replica = Store::open(&dir.path().join("b")).unwrap();
        put(&replica, t::user(3, "stale"), b"old");
        put(&replica, t::user(9, "u9"), b"group 9 carried its own partition before");
        put(&replica, t::user(5, "u5"), b"another group's");
        put(&replica, t::meta_applied(3), b"group 3");
        // Partition 4 has since moved on: another group here admits it and wrote after.
        let meta = crate::meta::META_PARTITION;
        let newer = crate::meta::model::GroupRecord {
            id: 0x8000,
            replicas: vec![1, 2],
        };
        put(&replica, t::meta_group(meta, 0x8000), &crate::codec::encode(&newer));
        let admits_4 = Ownership {
            carried: BTreeSet::from([4]),
            fenced: BTreeSet::new(),
        };
        put(&replica, t::meta_ownership(0x8000), &crate::codec::encode(&admits_4));
        put(&replica, t::channel(4, "c4"), b"written by the group carrying it now");
        put(&replica, t::channel(4, "c5"), b"also");
        let mut sm = StateMachine::open(replica.clone(), 9, dir.path().join("snaps-b")).unwrap();
        sm.install_snapshot(&built.meta, built.snapshot).await.unwrap();
        assert_eq!(get(&replica, t::user(3, "u3")).as_deref(), Some(&b"three"[..]));
        assert_eq!(
            get(&replica, t::channel(4, "c4")).as_deref(),
            Some(&b"written by the group carrying it now"[..])
        );
        assert_eq!(get(&replica, t::channel(4, "c5")).as_deref(), Some(&b"also"[..]));
        assert_eq!(get(&replica, t::user(3, "stale")), None);
        assert_eq!(get(&replica, t::user(9, "u9")), None);
        assert_eq!(
            get(&replica, t::user(5, "u5")).as_deref(),
            Some(&b"another group's"[..])
        );
        assert_eq!(get(&replica, t::meta_applied(3)).as_deref(), Some(&b"group 3"[..]));
        assert_eq!(sm.owned, owned);
    }
}
