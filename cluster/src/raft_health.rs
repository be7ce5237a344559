//! The health of the Raft groups running on this node, read from openraft's metrics when
//! `/metrics` is scraped: how many groups this node leads, the highest term, how far behind
//! each follower is, how many learners (replicas being moved in) the groups led here have,
//! and the members by state. Nothing is recorded on the write path.

use std::collections::BTreeMap;

use openraft::async_runtime::watch::WatchReceiver;

use crate::cluster::Cluster;
use crate::meta::NodeState;
use crate::types::NodeId;

/// A snapshot of this node's Raft groups.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RaftHealth {
    /// Partition groups running here (the meta group not counted).
    pub groups: u64,
    /// Partition groups led here.
    pub groups_led: u64,
    /// Whether this node leads the meta group.
    pub meta_leader: bool,
    /// The highest term of the groups running here (meta included).
    pub max_term: u64,
    /// The meta group's term.
    pub meta_term: u64,
    /// Per follower, the most entries it is behind in any group led here (matched index vs
    /// the leader's last log index; a follower that matched nothing yet counts from 0).
    pub lag_by_peer: BTreeMap<NodeId, u64>,
    /// Learners in the groups led here: replicas being caught up before they become voters.
    pub learners: u64,
    /// Partition groups led here with fewer voters than the replication factor asks.
    pub under_replicated_led: u64,
    /// Members by state, as the meta group records them (`active`, `dead`, …).
    pub members_by_state: BTreeMap<&'static str, u64>,
}

impl Cluster {
    /// Reads the health of every group running here.
    pub fn raft_health(&self) -> RaftHealth {
        let mut h = RaftHealth::default();
        let members = self.members().unwrap_or_default();
        let active = members.iter().filter(|n| n.state == NodeState::Active).count();
        let wanted = self.replication.min(active.max(1)) as u64;
        for state in [
            NodeState::Joining,
            NodeState::Active,
            NodeState::Draining,
            NodeState::Dead,
        ] {
            let n = members.iter().filter(|m| m.state == state).count() as u64;
            h.members_by_state.insert(state.as_str(), n);
        }
        let groups = self.hosted.all();
        h.groups = groups.len() as u64;
        let meta = std::iter::once((crate::meta::META_PARTITION, self.meta.clone()));
        for (p, raft) in groups.into_iter().chain(meta) {
            let m = raft.metrics();
            let m = m.borrow_watched();
            h.max_term = h.max_term.max(m.current_term);
            let is_meta = p == crate::meta::META_PARTITION;
            if is_meta {
                h.meta_term = m.current_term;
            }
            let membership = m.membership_config.membership();
            let leads = m.current_leader == Some(self.node_id) && membership.voter_ids().any(|v| v == self.node_id);
            if !leads {
                continue;
            }
            if is_meta {
                h.meta_leader = true;
                continue;
            }
            h.groups_led += 1;
            h.learners += membership.learner_ids().count() as u64;
            if (membership.voter_ids().count() as u64) < wanted {
                h.under_replicated_led += 1;
            }
            let last = m.last_log_index.unwrap_or(0);
            for (peer, matched) in m.replication.iter().flatten() {
                if *peer == self.node_id {
                    continue;
                }
                let lag = last.saturating_sub(matched.as_ref().map_or(0, |l| l.index));
                let worst = h.lag_by_peer.entry(*peer).or_default();
                *worst = (*worst).max(lag);
            }
        }
        h
    }
}
