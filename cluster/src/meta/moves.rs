//! Replica moves in flight, as the meta leader runs them.
//!
//! Each partition whose committed replicas differ from the placement gets its own move: a task
//! that has the partition's leader change its voters (`Cluster::change_replicas_anywhere`) and
//! then commits that partition's new replica set alone. At most `MAX_PARALLEL` run at once; a
//! move that fails or times out is retried after a backoff of its own, so one stuck partition
//! (its leader unreachable, a learner that cannot catch up) never holds back the others, and
//! the committed layout follows the real replica sets move by move instead of all at the end.
//!
//! The state is the meta leader's memory, not a replicated record: a move is idempotent and
//! is rerun from the committed layout by whichever node leads the meta group next
//! (docs/cluster.md, "Moving replicas").

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::task::AbortHandle;

/// Moves running at once, cluster-wide. Each streams a log or a snapshot to a new replica;
/// eight keep a scale-out or a replacement to seconds without flooding the nodes involved.
pub const MAX_PARALLEL: usize = 8;

/// Longest a move may take from start to committed layout (catching up a learner included).
pub const MOVE_TIMEOUT: Duration = Duration::from_secs(90);

/// First wait before a failed move of a partition is retried; doubles up to `RETRY_MAX`.
const RETRY_FIRST: Duration = Duration::from_secs(1);
/// Longest wait between two attempts at one partition's move.
const RETRY_MAX: Duration = Duration::from_secs(30);

/// A partition whose last move failed.
struct Backoff {
    failures: u32,
    retry_at: Instant,
}

#[derive(Default)]
struct MoveState {
    /// Running moves by partition.
    in_flight: BTreeMap<u16, AbortHandle>,
    backoff: BTreeMap<u16, Backoff>,
}

/// Moves between groups that may hold a partition fenced while its data is copied, at once.
/// The copies share the new node's disk and the sources' bulk budget, so running eight at
/// once made each fence last eight copies long: up to 9 s without writes and failed sends in
/// the 1 GiB rebalance (docs/benchmarks.md, "twenty-second"). One at a time, a partition is
/// fenced only for its own copy; the rebalance takes as long (the budget is the limit).
pub const FENCED_COPIES: usize = 1;

/// The meta leader's moves in flight and the backoff of failed ones.
pub struct Moves {
    state: Mutex<MoveState>,
    /// Serializes the read-modify-write of the committed layout by finished moves.
    pub(crate) commit: tokio::sync::Mutex<()>,
    /// Held from a fence to the new home's commit by a move that copies (`FENCED_COPIES`).
    pub(crate) fenced_copies: tokio::sync::Semaphore,
}

impl Default for Moves {
    fn default() -> Self {
        Moves {
            state: Mutex::default(),
            commit: tokio::sync::Mutex::default(),
            fenced_copies: tokio::sync::Semaphore::new(FENCED_COPIES),
        }
    }
}

impl Moves {
    fn lock(&self) -> std::sync::MutexGuard<'_, MoveState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `ringchat_replica_moves_running`: moves in flight on this node (non-zero only on the
    /// meta leader while the layout and the placement differ).
    fn publish(s: &MoveState) {
        metrics::gauge!("ringchat_replica_moves_running").set(s.in_flight.len() as f64);
    }

    /// Moves running now.
    pub fn running(&self) -> usize {
        self.lock().in_flight.len()
    }

    /// True if `partition` has a move running or must wait before its next attempt.
    pub fn busy(&self, partition: u16, now: Instant) -> bool {
        let s = self.lock();
        s.in_flight.contains_key(&partition) || s.backoff.get(&partition).is_some_and(|b| b.retry_at > now)
    }

    /// Records a move of `partition` and starts it with `spawn`, unless one runs
    /// already or `MAX_PARALLEL` do. The task is spawned under the lock, so one that ends at
    /// once waits for its record to exist before it removes it.
    pub fn start(&self, partition: u16, spawn: impl FnOnce() -> AbortHandle) -> bool {
        let mut s = self.lock();
        if s.in_flight.len() >= MAX_PARALLEL || s.in_flight.contains_key(&partition) {
            return false;
        }
        s.in_flight.insert(partition, spawn());
        Self::publish(&s);
        true
    }

    /// The move of `partition` ended: done, or failed and backed off.
    pub fn finished(&self, partition: u16, ok: bool) {
        let mut s = self.lock();
        s.in_flight.remove(&partition);
        Self::publish(&s);
        if ok {
            s.backoff.remove(&partition);
            return;
        }
        let failures = s.backoff.get(&partition).map_or(0, |b| b.failures) + 1;
        let wait = RETRY_FIRST.saturating_mul(1u32 << (failures - 1).min(5)).min(RETRY_MAX);
        s.backoff.insert(
            partition,
            Backoff {
                failures,
                retry_at: Instant::now() + wait,
            },
        );
    }

    /// Stops every running move (this node no longer leads the meta group, or shuts down).
    /// A move is idempotent, so the next meta leader simply runs it again.
    pub fn abort_all(&self) {
        let mut s = self.lock();
        for task in std::mem::take(&mut s.in_flight).into_values() {
            task.abort();
        }
        s.backoff.clear();
        Self::publish(&s);
    }
}

impl Drop for Moves {
    fn drop(&mut self) {
        self.abort_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idle_task() -> AbortHandle {
        // A task that would run forever unless aborted.
        tokio::spawn(std::future::pending::<()>()).abort_handle()
    }

    #[tokio::test]
    async fn at_most_max_parallel_run_and_one_per_partition() {
        let moves = Moves::default();
        assert!(moves.start(0, idle_task));
        assert!(!moves.start(0, idle_task), "a second move of partition 0");
        for p in 1..MAX_PARALLEL as u16 {
            assert!(moves.start(p, idle_task));
        }
        assert_eq!(moves.running(), MAX_PARALLEL);
        assert!(!moves.start(99, idle_task), "more than MAX_PARALLEL");
        moves.finished(3, true);
        assert!(moves.start(99, idle_task));
    }

    #[tokio::test]
    async fn a_failed_move_waits_longer_each_time_and_a_success_clears_it() {
        let moves = Moves::default();
        let now = Instant::now();
        assert!(moves.start(5, idle_task));
        moves.finished(5, false);
        assert!(moves.busy(5, Instant::now()));
        assert!(!moves.busy(5, now + RETRY_FIRST + Duration::from_millis(50)));
        assert!(!moves.busy(6, Instant::now()), "other partitions are not held back");
        assert!(moves.start(5, idle_task));
        moves.finished(5, false);
        assert!(
            moves.busy(5, now + RETRY_FIRST + Duration::from_millis(50)),
            "second wait is 2 s"
        );
        assert!(moves.start(5, idle_task));
        moves.finished(5, true);
        assert!(!moves.busy(5, Instant::now()));
    }

    #[tokio::test]
    async fn abort_all_stops_the_tasks() {
        let moves = Moves::default();
        let handle = tokio::spawn(std::future::pending::<()>());
        let abort = handle.abort_handle();
        assert!(moves.start(1, move || abort));
        moves.abort_all();
        assert!(handle.await.unwrap_err().is_cancelled());
        assert_eq!(moves.running(), 0);
    }
}
