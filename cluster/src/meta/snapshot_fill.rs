//! A replica moving to a node is filled from a fresh snapshot of its partition, not by replaying
//! the partition's log.
//!
//! Replayed, every byte of history costs the new replica four writes (the log entry's journal
//! record and blob, then the applied record's journal record and blob) and an apply per entry:
//! a 1 GiB rebalance kept the test machine's 2 cores full for ~14 s and the live traffic's p99
//! above 100 ms in most runs (docs/benchmarks.md, issue 11). From a snapshot it costs the
//! leader one file and the new replica the records once (docs/snapshots.md).
//!
//! openraft sends a snapshot to a replica that needs an entry the leader has purged. So before
//! adding a learner the leader builds a snapshot if its log since the last one holds more than
//! one AppendEntries batch, and purges the log up to the snapshot: the learner then gets the
//! snapshot and only the entries after it.
//!
//! Best effort: if the build or the purge does not finish in time, the learner is filled from
//! the log as before, which is slower but just as correct.

use std::time::Duration;

use openraft::alias::LogIdOf;
use openraft::async_runtime::watch::WatchReceiver;

use crate::types::{PartitionRaft, TypeConfig};

/// A log at most this long since the last snapshot is replayed (one full AppendEntries): a
/// snapshot of a small or recently snapshotted partition is not worth building.
pub const FILL_BY_LOG_MAX_ENTRIES: u64 = crate::cluster::MAX_PAYLOAD_ENTRIES;

/// Longest wait for the snapshot build (a partition of a few hundred MB on a busy node).
const SNAPSHOT_WAIT: Duration = Duration::from_secs(30);

/// Longest wait for the purge; openraft defers it while a replication stream reads the log.
const PURGE_WAIT: Duration = Duration::from_secs(5);

/// How a new replica of a partition will be filled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fill {
    /// From the snapshot at this index, then the log after it.
    Snapshot(u64),
    /// From the log (short, or the snapshot was not ready in time).
    Log,
}

/// On the partition's leader, before it adds a learner: makes the learner's fill a snapshot
/// when the log since the last one is longer than `FILL_BY_LOG_MAX_ENTRIES`.
pub(crate) async fn prepare(raft: &PartitionRaft, partition: u16) -> Fill {
    let (applied, snapshot, purged) = {
        let m = raft.metrics();
        let m = m.borrow_watched();
        (index(&m.last_applied), index(&m.snapshot), index(&m.purged))
    };
    let mut covered = snapshot;
    if applied.saturating_sub(snapshot) > FILL_BY_LOG_MAX_ENTRIES {
        if raft.trigger().snapshot().await.is_err() {
            return Fill::Log;
        }
        let built = raft
            .wait(Some(SNAPSHOT_WAIT))
            .metrics(|m| index(&m.snapshot) >= applied, "snapshot for a new replica")
            .await;
        match built {
            Ok(m) => covered = index(&m.snapshot),
            Err(e) => {
                tracing::info!(partition, error = %e, "no snapshot in time: the new replica replays the log");
                return Fill::Log;
            }
        }
    }
    if covered == 0 {
        return Fill::Log;
    }
    if covered > purged {
        if raft.trigger().purge_log(covered).await.is_err() {
            return Fill::Log;
        }
        let done = raft
            .wait(Some(PURGE_WAIT))
            .metrics(|m| index(&m.purged) >= covered, "log purged up to the snapshot")
            .await;
        if done.is_err() {
            return Fill::Log;
        }
    }
    Fill::Snapshot(covered)
}

/// The index of `id`, 0 for none.
fn index(id: &Option<LogIdOf<TypeConfig>>) -> u64 {
    id.as_ref().map_or(0, |l| l.index())
}
