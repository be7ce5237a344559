//! Snapshots on their own schedule: a running node snapshots a partition after the configured
//! floor of entries, purges the log behind it, and waits longer between snapshots as the
//! partition grows (a snapshot writes every record, so a fixed interval would cost more each
//! time; `partition/snapshot_schedule.rs`). A single-node `Cluster` in-process on loopback.

use std::time::{Duration, Instant};

use openraft::async_runtime::watch::WatchReceiver;
use ringchat_cluster::{Cluster, Command};

use crate::common::{single_node_config, user, WAIT};

const FLOOR: u64 = 50;

/// The snapshot index and the first log index still stored of partition 0.
fn snapshot_and_log_start(cluster: &Cluster) -> (u64, u64) {
    let raft = cluster.partition_group(0).expect("partition 0 hosted");
    let m = raft.metrics();
    let m = m.borrow_watched();
    let snapshot = m.snapshot.as_ref().map(|l| l.index).unwrap_or(0);
    let purged = m.purged.as_ref().map(|l| l.index + 1).unwrap_or(0);
    (snapshot, purged)
}

/// Writes users from `*next` on until the snapshot index moves past `after` (at most `limit`
/// writes, then a bounded wait for a build in progress); returns the writes it took.
async fn write_until_snapshot(cluster: &Cluster, next: &mut u64, after: u64, limit: u64) -> u64 {
    let start = *next;
    while *next - start < limit {
        cluster
            .write("u_0", Command::EnsureUser { user: user(*next) })
            .await
            .expect("write");
        *next += 1;
        if snapshot_and_log_start(cluster).0 > after {
            return *next - start;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while snapshot_and_log_start(cluster).0 <= after {
        assert!(Instant::now() < deadline, "no snapshot after {limit} writes");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    *next - start
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_snapshot_by_themselves_and_less_often_as_they_grow() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = Cluster::open(&single_node_config(dir.path(), 1, FLOOR))
        .await
        .expect("open single node");
    assert!(cluster.wait_ready(WAIT).await, "partition led locally");

    // The first snapshot comes after the floor (a few entries of the bootstrap count too).
    let mut next = 0;
    let first = write_until_snapshot(&cluster, &mut next, 0, 4 * FLOOR).await;
    assert!(first <= FLOOR + 5, "first snapshot after {first} writes, floor {FLOOR}");

    // Grow the partition to ~1,500 records: the last intervals must exceed the floor (a
    // quarter of the records each snapshot held), and snapshots keep coming.
    let mut gaps = Vec::new();
    while next < 1_500 {
        let at = snapshot_and_log_start(&cluster).0;
        gaps.push(write_until_snapshot(&cluster, &mut next, at, 2_000).await);
    }
    let last = *gaps.last().expect("snapshots while growing");
    assert!(
        last >= 3 * FLOOR,
        "with ~{next} records the interval is still {last} writes (floor {FLOOR}); gaps {gaps:?}"
    );
    assert!(last <= next, "interval {last} beyond the partition's size {next}");
    // openraft keeps the newest 1,000 entries behind a snapshot for lagging followers.
    let (snapshot, log_start) = snapshot_and_log_start(&cluster);
    assert!(
        snapshot > 1_000 && log_start + 1_000 >= snapshot && log_start > 0,
        "the log behind the snapshot at {snapshot} is purged (first kept: {log_start})"
    );

    // Restarted on the same data dir, the node keeps the grown interval (the record count is
    // stored with the snapshot) rather than falling back to the floor.
    cluster.shutdown().await;
    drop(cluster);
    let cluster = Cluster::open(&single_node_config(dir.path(), 1, FLOOR))
        .await
        .expect("reopen");
    assert!(cluster.wait_ready(WAIT).await, "partition led again");
    let at = snapshot_and_log_start(&cluster).0;
    let after_restart = write_until_snapshot(&cluster, &mut next, at, 2_000).await;
    assert!(
        after_restart >= 3 * FLOOR,
        "after a restart the next snapshot came after {after_restart} writes (floor {FLOOR})"
    );
    cluster.shutdown().await;
}
