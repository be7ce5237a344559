//! Partitions whose Raft state on this node is older than what was once durable here.
//!
//! At start every group's stored log end and vote are compared with its durable mark
//! (`ringchat_storage::durable_marks`). A group below its mark lost entries it may have
//! acknowledged, or a vote it granted: counted in a quorum, it could elect a leader that lacks
//! committed entries, or vote twice in one term. Such a group is held: it does not campaign
//! or take a leadership handed to it, it votes only as an intact replica could (for a term
//! above the vote it may have granted and a log that reaches what it had), and it asks the
//! leader through the liveness beat to replicate to it again. Once its log has reached the
//! mark again and it has seen the marked term, it was given back what it lost and is released.
//!
//! A group whose only voter is this node has nobody to recover from: it is released with an
//! ERROR at the next check and runs on what is left (holding it would stop it for good).

use std::collections::HashMap;
use std::sync::Mutex;

use openraft::async_runtime::watch::WatchReceiver;
use openraft::storage::{RaftLogReader, RaftLogStorage};
use ringchat_storage::Mark;

use crate::meta::META_PARTITION;
use crate::partition::LogStore;
use crate::types::{only_voter_is_self, PartitionRaft};

/// The held groups and the marks they must reach again.
#[derive(Default)]
pub(crate) struct LostState {
    held: Mutex<HashMap<u16, Mark>>,
}

impl LostState {
    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<u16, Mark>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What partition `p` had durable and no longer has, before its group starts: its mark if
    /// the stored log ends below it or the stored vote is of an older term, else `None`.
    pub async fn lost(p: u16, log: &LogStore) -> std::io::Result<Option<Mark>> {
        let Some(mark) = log.store().marks.get(p) else {
            return Ok(None);
        };
        let mut probe = log.clone();
        let state = probe.get_log_state().await?;
        let last_index = state.last_log_id.map(|id| id.index);
        let vote_term = probe.read_vote().await?.map(|v| v.leader_id().term);
        let log_short = mark.last_index > last_index.unwrap_or(0);
        let vote_old = mark.vote_term > vote_term.unwrap_or(0);
        if !(log_short || vote_old) {
            return Ok(None);
        }
        tracing::error!(
            partition = p,
            log_ends_at = ?last_index,
            durable_up_to = mark.last_index,
            vote_term = ?vote_term,
            durable_vote_term = mark.vote_term,
            "partition lost Raft state that was durable here (a damaged or truncated journal)"
        );
        Ok(Some(mark))
    }

    /// Holds the started group of `p`, which lost what `mark` says.
    pub fn hold(&self, p: u16, raft: &PartitionRaft, mark: Mark) {
        // The meta group elects by openraft's timer; data groups only through `liveness/`,
        // which asks `may_lead` first.
        if p == META_PARTITION {
            raft.runtime_config().elect(false);
        }
        let mut held = self.held();
        held.insert(p, mark);
        tracing::warn!(
            partition = p,
            "partition will not vote or lead until its peers have replicated to it what it lost"
        );
        metrics::gauge!("ringchat_partitions_recovering_lost_state").set(held.len() as f64);
    }

    /// False while `p` is held: it neither campaigns nor takes a leadership handed to it.
    pub fn may_lead(&self, p: u16) -> bool {
        !self.held().contains_key(&p)
    }

    /// Whether `p` may vote for a candidate of `term` whose log ends at `last_index`. A held
    /// replica votes as if it still had what it lost: only for a term above the vote it may
    /// have granted, and only for a log that reaches what it had acknowledged. Such a vote is
    /// one an intact replica could give too, so a quorum with it cannot elect a leader that
    /// lacks committed entries, and the partition stays available while the replica waits.
    pub fn grants_vote(&self, p: u16, term: u64, last_index: Option<u64>) -> bool {
        match self.held().get(&p) {
            None => true,
            Some(mark) => term > mark.vote_term && last_index.is_some_and(|i| i >= mark.last_index),
        }
    }

    /// Releases every held group among `groups` whose log reached its mark again and that
    /// has seen the marked term, and every one in which this node is the only voter (nobody
    /// could give it back what it lost: holding it would stop the partition for good).
    pub fn release_caught_up(&self, groups: impl IntoIterator<Item = (u16, PartitionRaft)>) {
        let mut held = self.held();
        if held.is_empty() {
            return;
        }
        for (p, raft) in groups {
            let Some(mark) = held.get(&p).copied() else { continue };
            let caught_up = {
                let m = raft.metrics();
                let m = m.borrow_watched();
                m.last_log_index.is_some_and(|i| i >= mark.last_index) && m.current_term >= mark.vote_term
            };
            if !(caught_up || only_voter_is_self(&raft)) {
                continue;
            }
            held.remove(&p);
            if p == META_PARTITION {
                raft.runtime_config().elect(true);
            }
            if caught_up {
                tracing::info!(partition = p, "partition caught up from its peers; it votes again");
            } else {
                tracing::error!(
                    partition = p,
                    "no other replica holds this partition: it runs on what is left of its log"
                );
            }
        }
        metrics::gauge!("ringchat_partitions_recovering_lost_state").set(held.len() as f64);
    }

    /// Forgets `p` (its group closed on this node).
    pub fn forget(&self, p: u16) {
        self.held().remove(&p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_replica_votes_only_as_an_intact_one_could() {
        let lost = LostState::default();
        assert!(lost.grants_vote(3, 1, None), "nothing held: openraft decides");
        lost.held().insert(
            3,
            Mark {
                last_index: 40,
                vote_term: 5,
            },
        );
        assert!(!lost.may_lead(3));
        assert!(lost.may_lead(4));
        assert!(!lost.grants_vote(3, 5, Some(100)), "the term it may have voted in");
        assert!(!lost.grants_vote(3, 6, Some(39)), "a log short of what it had");
        assert!(!lost.grants_vote(3, 6, None));
        assert!(lost.grants_vote(3, 6, Some(40)));
        lost.forget(3);
        assert!(lost.may_lead(3));
    }
}
