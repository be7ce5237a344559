//! Meta voter upkeep: the meta group keeps up to `MAX_META_VOTERS` voters drawn from live
//! members, so the cluster survives losing voters one after another, not only the first few.
//!
//! Without it the voter set was fixed by join order: in a 6-node cluster, three dead voters out
//! of the first five lose the meta quorum (no member changes, no replica moves, no failover of
//! the layout) while three healthy nodes sit by as learners. Now, once a voter is declared dead
//! (`mark_liveness`), a caught-up active learner is added as a voter first and only then is the
//! dead one demoted, so the voter count never dips during the swap. The dead node stays a
//! learner: when it answers again it becomes active and is promoted back if there is room.
//! The same pass fills free seats: a joiner that just became active (the first five members
//! become voters this way), or a voter set that shrank below the maximum (a removal).

use std::collections::{BTreeMap, BTreeSet};

use openraft::async_runtime::watch::WatchReceiver;
use openraft::ChangeMembers;

use super::model::{NodeInfo, NodeState};
use super::MAX_META_VOTERS;
use crate::cluster::Cluster;
use crate::error::ClusterError;
use crate::types::NodeId;

/// The meta group as its leader sees it: voters, learners, each follower's matched log index,
/// and the leader's last log index.
pub(super) struct MetaProgress {
    pub voters: BTreeSet<NodeId>,
    pub learners: BTreeSet<NodeId>,
    pub matched: BTreeMap<NodeId, u64>,
    pub last: u64,
}

impl MetaProgress {
    /// True if `node`'s copy of the meta log is within one entry of the leader's.
    pub fn caught_up(&self, node: NodeId) -> bool {
        self.matched.get(&node).is_some_and(|&i| i + 1 >= self.last)
    }
}

/// Which learners to promote and which dead voters to demote, given the members' states.
/// Dead voters are demoted only one for one against promotions, so a swap never lowers the
/// number of voters (demoting a dead voter without a replacement gains no fault tolerance).
pub(super) fn plan(progress: &MetaProgress, members: &[NodeInfo]) -> (BTreeSet<NodeId>, BTreeSet<NodeId>) {
    let state: BTreeMap<NodeId, NodeState> = members.iter().map(|n| (n.node_id, n.state)).collect();
    let dead: Vec<NodeId> = progress
        .voters
        .iter()
        .copied()
        .filter(|id| state.get(id) == Some(&NodeState::Dead))
        .collect();
    let live_voters = progress.voters.len() - dead.len();
    let room = MAX_META_VOTERS.saturating_sub(live_voters);
    let promote: BTreeSet<NodeId> = progress
        .learners
        .iter()
        .copied()
        .filter(|id| state.get(id) == Some(&NodeState::Active) && progress.caught_up(*id))
        .take(room)
        .collect();
    let demote: BTreeSet<NodeId> = dead.into_iter().take(promote.len()).collect();
    (promote, demote)
}

impl Cluster {
    /// The meta group's progress as this node sees it (meaningful at the meta leader).
    pub(super) fn meta_progress(&self) -> MetaProgress {
        let m = self.meta.metrics();
        let m = m.borrow_watched();
        let membership = m.membership_config.membership();
        MetaProgress {
            voters: membership.voter_ids().collect(),
            learners: membership.learner_ids().collect(),
            matched: m
                .replication
                .as_ref()
                .map(|r| {
                    r.iter()
                        .map(|(id, log)| (*id, log.as_ref().map(|l| l.index).unwrap_or(0)))
                        .collect()
                })
                .unwrap_or_default(),
            last: m.last_log_index.unwrap_or(0),
        }
    }

    /// Meta leader: replaces dead voters with live learners and fills free voter seats.
    pub(super) async fn refill_meta_voters(&self, members: &[NodeInfo]) -> Result<(), ClusterError> {
        let (promote, demote) = plan(&self.meta_progress(), members);
        if promote.is_empty() {
            return Ok(());
        }
        tracing::info!(promote = ?promote, demote = ?demote, "meta voters changing");
        self.meta
            .change_membership(ChangeMembers::AddVoterIds(promote), false)
            .await
            .map_err(|e| ClusterError::Unavailable(e.to_string()))?;
        if !demote.is_empty() {
            // `true`: the dead nodes stay learners, so one that comes back catches up and can
            // be promoted again.
            self.meta
                .change_membership(ChangeMembers::RemoveVoters(demote), true)
                .await
                .map_err(|e| ClusterError::Unavailable(e.to_string()))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: NodeId, state: NodeState) -> NodeInfo {
        NodeInfo {
            node_id: id,
            cluster_addr: format!("127.0.0.1:{}", 7000 + id),
            client_addr: format!("127.0.0.1:{}", 8000 + id),
            state,
        }
    }

    fn progress(voters: &[NodeId], learners: &[NodeId], lagging: &[NodeId]) -> MetaProgress {
        let last = 100;
        MetaProgress {
            voters: voters.iter().copied().collect(),
            learners: learners.iter().copied().collect(),
            matched: voters
                .iter()
                .chain(learners)
                .map(|&id| (id, if lagging.contains(&id) { 10 } else { last }))
                .collect(),
            last,
        }
    }

    fn ids(v: &[NodeId]) -> BTreeSet<NodeId> {
        v.iter().copied().collect()
    }

    #[test]
    fn a_dead_voter_is_swapped_for_a_caught_up_active_learner() {
        let members: Vec<NodeInfo> = (1..=7)
            .map(|id| member(id, if id == 2 { NodeState::Dead } else { NodeState::Active }))
            .collect();
        // 6 is behind on the meta log, 7 is caught up.
        let (promote, demote) = plan(&progress(&[1, 2, 3, 4, 5], &[6, 7], &[6]), &members);
        assert_eq!((promote, demote), (ids(&[7]), ids(&[2])));
    }

    #[test]
    fn without_a_replacement_the_dead_voter_stays() {
        let members = vec![
            member(1, NodeState::Active),
            member(2, NodeState::Active),
            member(3, NodeState::Dead),
        ];
        let (promote, demote) = plan(&progress(&[1, 2, 3], &[], &[]), &members);
        assert!(promote.is_empty() && demote.is_empty());
    }

    #[test]
    fn free_seats_are_filled_but_never_past_the_maximum() {
        let members: Vec<NodeInfo> = (1..=8).map(|id| member(id, NodeState::Active)).collect();
        let (promote, demote) = plan(&progress(&[1, 2, 3], &[4, 5, 6, 7, 8], &[]), &members);
        assert_eq!(promote.len(), MAX_META_VOTERS - 3);
        assert!(demote.is_empty());
        let (promote, _) = plan(&progress(&[1, 2, 3, 4, 5], &[6, 7, 8], &[]), &members);
        assert!(promote.is_empty());
    }

    #[test]
    fn joining_draining_and_dead_learners_are_not_promoted() {
        let members = vec![
            member(1, NodeState::Active),
            member(2, NodeState::Joining),
            member(3, NodeState::Draining),
            member(4, NodeState::Dead),
        ];
        let (promote, _) = plan(&progress(&[1], &[2, 3, 4], &[]), &members);
        assert!(promote.is_empty());
    }
}
