//! When a partition builds its next snapshot: after `floor` entries, or after a quarter of the
//! records its last snapshot held, whichever is more.
//!
//! A snapshot writes every record of the partition, and history is kept forever, so with a
//! fixed interval (openraft's `LogsSinceLast`) each snapshot cost more than the last: a 2-node
//! cluster with 2 partitions at 5,000 msgs/s built one every 8 s per group, and p99 rose from
//! 48 to 238 ms while they ran (docs/snapshots.md). Scaling the interval with the size keeps
//! the work per applied entry bounded (at most `RECORDS_PER_ENTRY` records written per entry)
//! and the log that is kept below a quarter of the data beyond the floor.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::types::PartitionRaft;

/// A snapshot is due once the entries applied since the last one reach 1 / this of its records.
pub const RECORDS_PER_ENTRY: u64 = 4;

/// Shared by a partition's state machine (which asks) and its snapshot builder (which reports).
pub struct SnapshotSchedule {
    /// Fewest entries between two snapshots (`--snapshot-every`'s default 20,000).
    floor: u64,
    /// Log index the last snapshot covers (0: none yet).
    last_index: AtomicU64,
    /// Records the last snapshot held (0: unknown, the floor applies).
    last_records: AtomicU64,
    /// A snapshot was asked for and has not been reported built yet.
    asked: AtomicBool,
    /// The trigger task's wake-up: the applied index a snapshot is due at.
    due: tokio::sync::watch::Sender<u64>,
    /// Highest log index of an adoption from another group applied here whose entries are
    /// not yet behind a snapshot and purged (0: none). See `adopted`.
    purge_through: AtomicU64,
}

impl SnapshotSchedule {
    /// A schedule with `floor` entries between snapshots at least, and the receiver its trigger
    /// task waits on.
    pub fn new(floor: u64) -> (Arc<Self>, tokio::sync::watch::Receiver<u64>) {
        let (due, rx) = tokio::sync::watch::channel(0);
        let schedule = SnapshotSchedule {
            floor: floor.max(1),
            last_index: AtomicU64::new(0),
            last_records: AtomicU64::new(0),
            asked: AtomicBool::new(false),
            due,
            purge_through: AtomicU64::new(0),
        };
        (Arc::new(schedule), rx)
    }

    /// Entries to apply after a snapshot before the next is due.
    pub fn interval(&self) -> u64 {
        self.floor
            .max(self.last_records.load(Ordering::Relaxed) / RECORDS_PER_ENTRY)
    }

    /// Called after each applied batch: wakes the trigger task once a snapshot is due.
    pub fn applied(&self, index: u64) {
        let since = index.saturating_sub(self.last_index.load(Ordering::Relaxed));
        if since >= self.interval() && !self.asked.swap(true, Ordering::Relaxed) {
            self.due.send_replace(index);
        }
    }

    /// A snapshot covering `index` with `records` records exists (built, installed, or found at
    /// start-up).
    pub fn snapshotted(&self, index: u64, records: u64) {
        self.last_index.store(index, Ordering::Relaxed);
        self.last_records.store(records, Ordering::Relaxed);
        self.asked.store(false, Ordering::Relaxed);
    }

    /// An adoption of a partition from another group was applied at `index`. Replaying it
    /// needs the partition's keys as the source group's fence left them on this node, which a
    /// replica rebuilt from nothing (its database set aside) does not have and cannot get: so
    /// the group's log must never be fed to anyone across it. Every replica soon builds a
    /// snapshot past it and purges its log up to the snapshot (the trigger task), after which
    /// a replica that needs those entries is sent the snapshot instead.
    pub fn adopted(&self, index: u64) {
        if self.purge_through.fetch_max(index, Ordering::Relaxed) < index {
            self.due.send_replace(index);
        }
    }

    /// A build that was asked for failed or was skipped: ask again at the next apply.
    pub fn not_built(&self) {
        self.asked.store(false, Ordering::Relaxed);
    }
}

/// How long after an adoption its snapshot waits: the moves of a rebalance adopt partitions
/// into a group one after another, and one snapshot covers them all.
const ADOPTIONS_SETTLE: Duration = Duration::from_secs(3);

/// Longest wait for a snapshot past an adoption to be built.
const SNAPSHOT_WAIT: Duration = Duration::from_secs(60);

/// Starts the task that asks `raft` for a snapshot whenever its schedule says one is due, and
/// purges the log behind one after an adoption (`SnapshotSchedule::adopted`). It ends when the
/// state machine (the schedule's sender) is dropped, i.e. when the group stops.
pub fn spawn_trigger(
    raft: &PartitionRaft,
    partition: u16,
    schedule: Arc<SnapshotSchedule>,
    mut due: tokio::sync::watch::Receiver<u64>,
) {
    let raft = raft.clone();
    // The schedule lives in the state machine; the task must not keep it (and so itself) alive.
    let schedule = Arc::downgrade(&schedule);
    tokio::spawn(async move {
        while due.changed().await.is_ok() {
            let index = *due.borrow_and_update();
            let purge_through = schedule
                .upgrade()
                .map_or(0, |s| s.purge_through.load(Ordering::Relaxed));
            if purge_through == 0 {
                tracing::debug!(partition, index, "snapshot due");
                if raft.trigger().snapshot().await.is_err() {
                    return;
                }
                continue;
            }
            tokio::time::sleep(ADOPTIONS_SETTLE).await;
            let Some(through) = schedule.upgrade().map(|s| s.purge_through.load(Ordering::Relaxed)) else {
                return;
            };
            if raft.trigger().snapshot().await.is_err() {
                return;
            }
            // A build already running when asked may end before `through`: then ask again.
            let built = raft
                .wait(Some(SNAPSHOT_WAIT))
                .metrics(
                    |m| m.snapshot.as_ref().is_some_and(|s| s.index() >= through),
                    "snapshot past the adoptions",
                )
                .await;
            let Ok(metrics) = built else {
                if let Some(s) = schedule.upgrade() {
                    s.due.send_replace(through);
                }
                continue;
            };
            let covered = metrics.snapshot.as_ref().map_or(0, |s| s.index());
            if raft.trigger().purge_log(covered).await.is_err() {
                return;
            }
            tracing::debug!(partition, covered, "log purged behind the snapshot past adoptions");
            if let Some(s) = schedule.upgrade() {
                let _ = s
                    .purge_through
                    .compare_exchange(through, 0, Ordering::Relaxed, Ordering::Relaxed);
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_interval_grows_with_the_last_snapshot_and_never_drops_below_the_floor() {
        let (s, mut rx) = SnapshotSchedule::new(100);
        s.applied(99);
        assert!(!rx.has_changed().unwrap(), "99 entries: not due");
        s.applied(100);
        assert!(rx.has_changed().unwrap(), "100 entries: due");
        assert_eq!(*rx.borrow_and_update(), 100);
        s.applied(150);
        assert!(!rx.has_changed().unwrap(), "asked once until it is built");

        s.snapshotted(150, 2_000);
        assert_eq!(s.interval(), 500, "a quarter of 2,000 records");
        s.applied(600);
        assert!(!rx.has_changed().unwrap(), "450 entries since: not due");
        s.applied(650);
        assert_eq!(*rx.borrow_and_update(), 650);

        s.snapshotted(650, 40);
        assert_eq!(s.interval(), 100, "a small partition keeps the floor");
        s.not_built();
        s.applied(750);
        assert_eq!(*rx.borrow_and_update(), 750);
    }
}
