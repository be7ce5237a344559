//! Commit-only AppendEntries, withheld while the follower's copy is already confirmed.
//!
//! openraft replicates a group's entries one request at a time, and when the leader's commit
//! moves with no new entry to carry it, it sends an entry-less request whose only news is the
//! commit index. A data partition sees a few writes per round even under load (64 groups), so
//! nearly every entry paid for two requests: its own, and the commit-only one after it, with
//! the second also holding the next entry back for a round trip.
//!
//! The follower does not need that commit at once: only the leader answers clients, reads and
//! deliveries, and a new leader finds out what was committed by committing its own first
//! entry. So the replication client answers a commit-only request itself (`Success`, which
//! tells the leader nothing it did not already know) when the same follower confirmed the same
//! position under the same vote moments ago, and records the commit as withheld. The next
//! request of the group carries it anyway; a group that went quiet gets one heartbeat for it at
//! the next liveness tick (`Cluster::send_withheld_commits`), so a follower's state machine
//! trails by at most that in an idle group.
//!
//! Leases: the leader counts the local answer as an acknowledgement sent at its own time, i.e.
//! up to `WITHHOLD_WITHIN` after the follower really answered. Lease reads therefore accept a
//! quorum acknowledgement only `READ_LEASE_MARGIN` (twice that) younger than openraft's lease
//! (`leader_calls::read`), so the lease a read relies on is always one the followers granted.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::alias::{LogIdOf, VoteOf};
use openraft::raft::AppendEntriesRequest;

use crate::types::{NodeId, TypeConfig};

type C = TypeConfig;

/// A commit-only request is answered locally only if the follower's last confirmation of the
/// same position was sent less than this long ago.
pub const WITHHOLD_WITHIN: Duration = Duration::from_millis(100);

/// How much younger than openraft's lease a quorum acknowledgement must be for a lease read.
pub const READ_LEASE_MARGIN: Duration = Duration::from_millis(2 * WITHHOLD_WITHIN.as_millis() as u64);

/// The last request a follower accepted in full, as one replication client saw it.
pub(crate) struct Confirmed {
    vote: VoteOf<C>,
    matching: Option<LogIdOf<C>>,
    sent_at: Instant,
}

impl Confirmed {
    /// What a `Success` answer to `rpc`, sent at `sent_at`, confirms.
    pub(crate) fn by(rpc: &AppendEntriesRequest<C>, sent_at: Instant) -> Self {
        Confirmed {
            vote: rpc.vote,
            matching: rpc.entries.last().map(|e| e.log_id).or(rpc.prev_log_id),
            sent_at,
        }
    }

    /// True if `rpc` carries nothing but a commit index for a position this confirmation
    /// covers, under the same vote, recently enough to answer it here.
    pub(crate) fn covers_commit_only(&self, rpc: &AppendEntriesRequest<C>) -> bool {
        rpc.entries.is_empty()
            && rpc.vote == self.vote
            && rpc.prev_log_id == self.matching
            && self.sent_at.elapsed() < WITHHOLD_WITHIN
    }
}

/// The commits withheld from followers, per partition and follower, with when the first of
/// them was withheld. Shared by every group of the node (`PeerChannels`).
#[derive(Clone, Default)]
pub struct WithheldCommits {
    inner: Arc<Mutex<HashMap<(u16, NodeId), Withheld>>>,
    /// Requests answered locally since the node started (tests; the metric counts the same).
    total: Arc<AtomicU64>,
}

struct Withheld {
    commit: Option<LogIdOf<C>>,
    since: Instant,
}

impl WithheldCommits {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(u16, NodeId), Withheld>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records that `commit` of partition `p` was not sent to `target`.
    pub(crate) fn withhold(&self, p: u16, target: NodeId, commit: Option<LogIdOf<C>>) {
        metrics::counter!("ringchat_raft_commit_only_withheld_total").increment(1);
        self.total.fetch_add(1, Ordering::Relaxed);
        let mut map = self.lock();
        let entry = map.entry((p, target)).or_insert(Withheld {
            commit: None,
            since: Instant::now(),
        });
        entry.commit = entry.commit.max(commit);
    }

    /// `target` accepted a request of partition `p` carrying `commit`: what was withheld up to
    /// it has arrived.
    pub(crate) fn delivered(&self, p: u16, target: NodeId, commit: Option<LogIdOf<C>>) {
        let mut map = self.lock();
        if map.get(&(p, target)).is_some_and(|w| w.commit <= commit) {
            map.remove(&(p, target));
        }
    }

    /// The partitions with a commit withheld from some follower for `at_least`: their groups
    /// went quiet before a request carried it.
    pub fn overdue(&self, at_least: Duration) -> Vec<u16> {
        let mut partitions: Vec<u16> = self
            .lock()
            .iter()
            .filter(|(_, w)| w.since.elapsed() >= at_least)
            .map(|((p, _), _)| *p)
            .collect();
        partitions.sort_unstable();
        partitions.dedup();
        partitions
    }

    /// Commit-only requests answered locally since the node started.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// Forgets what was withheld in partition `p` (this node no longer leads it: the next
    /// leader's own commit reaches the followers).
    pub fn forget(&self, p: u16) {
        self.lock().retain(|(q, _), _| *q != p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::testing::blank_ent;
    use openraft::Vote;

    fn log_id(term: u64, index: u64) -> LogIdOf<C> {
        openraft::testing::log_id::<C>(term, 1, index)
    }

    fn request(term: u64, prev: Option<u64>, entries: &[u64], commit: Option<u64>) -> AppendEntriesRequest<C> {
        AppendEntriesRequest {
            vote: Vote::new_committed(term, 1),
            prev_log_id: prev.map(|i| log_id(term, i)),
            leader_commit: commit.map(|i| log_id(term, i)),
            entries: entries.iter().map(|i| blank_ent::<C>(term, 1, *i)).collect(),
        }
    }

    #[test]
    fn only_a_commit_for_the_confirmed_position_under_the_same_vote_is_covered() {
        let confirmed = Confirmed::by(&request(2, Some(4), &[5, 6], Some(4)), Instant::now());
        assert!(confirmed.covers_commit_only(&request(2, Some(6), &[], Some(6))));
        // Entries to send, another position, another vote: the follower must see it.
        assert!(!confirmed.covers_commit_only(&request(2, Some(6), &[7], Some(6))));
        assert!(!confirmed.covers_commit_only(&request(2, Some(5), &[], Some(6))));
        assert!(!confirmed.covers_commit_only(&request(3, Some(6), &[], Some(6))));
        // A confirmation older than the window no longer answers for the follower.
        let old = Confirmed::by(&request(2, Some(4), &[5, 6], Some(4)), Instant::now() - WITHHOLD_WITHIN);
        assert!(!old.covers_commit_only(&request(2, Some(6), &[], Some(6))));
    }

    #[test]
    fn a_withheld_commit_is_overdue_until_a_request_carrying_it_is_accepted() {
        let withheld = WithheldCommits::default();
        withheld.withhold(3, 2, Some(log_id(1, 5)));
        withheld.withhold(3, 2, Some(log_id(1, 7)));
        assert_eq!(withheld.overdue(Duration::ZERO), vec![3]);
        assert!(withheld.overdue(Duration::from_secs(60)).is_empty(), "not yet overdue");
        // A request that carried an older commit does not clear the newer one.
        withheld.delivered(3, 2, Some(log_id(1, 6)));
        assert_eq!(withheld.overdue(Duration::ZERO), vec![3]);
        withheld.delivered(3, 2, Some(log_id(1, 7)));
        assert!(withheld.overdue(Duration::ZERO).is_empty());
        withheld.withhold(4, 2, Some(log_id(1, 1)));
        withheld.forget(4);
        assert!(withheld.overdue(Duration::ZERO).is_empty());
    }
}
