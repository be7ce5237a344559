//! What `cluster status` shows beside the PROTOCOL §4 object: each partition's actual Raft
//! voters and learners (from the node leading it, not the committed layout), each member's
//! reachability from the node answering, and whether this node has been removed.
//!
//! Served by its own member RPC (`Detail`), so the §4 `Status` reply keeps its shape and a
//! mixed-version cluster keeps answering it; an older node answers `Detail` with
//! `Unimplemented`, and the operator then sees the §4 fields alone.

use std::collections::BTreeSet;
use std::time::Duration;

use openraft::async_runtime::watch::WatchReceiver;
use serde::{Deserialize, Serialize};

use super::membership::{ask_local, LocalAsk};
use super::model::{MoveRecord, NodeState};
pub use super::wire::StatusRequest;
use super::META_PARTITION;
use crate::cluster::Cluster;
use crate::types::NodeId;

/// How long one member may take to report its detail.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);

/// One partition group as its leader sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupDetail {
    /// Partition id.
    pub partition: u32,
    /// Its leader (the node reporting).
    pub leader: NodeId,
    /// The leader's term.
    pub term: u64,
    /// Actual Raft voters.
    pub voters: Vec<NodeId>,
    /// Actual Raft learners: replicas being caught up (a move in progress).
    pub learners: Vec<NodeId>,
}

/// One member's reachability from the node answering.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberReach {
    /// Node id.
    pub node_id: NodeId,
    /// Whether it answered within `ASK_TIMEOUT` (the answering node itself: true).
    pub reachable: bool,
}

/// The latest committed move of one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionMove {
    /// Partition id.
    pub partition: u32,
    /// The move.
    pub record: MoveRecord,
}

/// The detail of `cluster status`, gathered by one node from itself and every live member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct StatusDetail {
    /// Every member that is not dead, with its reachability.
    pub members: Vec<MemberReach>,
    /// The groups led by the nodes that answered, by partition.
    pub groups: Vec<GroupDetail>,
    /// Members of the meta group (voters and learners) as the answering node sees them.
    pub meta_members: Vec<NodeId>,
    /// Each partition's latest move, from the answering node's meta replica (absent from an
    /// older release's answer).
    #[serde(default)]
    pub moves: Vec<PartitionMove>,
    /// Where every partition belongs (the placement over the active members, by partition;
    /// empty when unknown or from an older release): a partition whose committed replicas
    /// differ from it has a move running or still to start.
    #[serde(default)]
    pub targets: Vec<Vec<NodeId>>,
}

impl Cluster {
    /// The partition groups led here, with their actual voters and learners: one entry per
    /// partition, a group carrying several partitions giving each its own.
    pub fn led_groups(&self) -> Vec<GroupDetail> {
        let mut carried: std::collections::HashMap<u16, Vec<u16>> = Default::default();
        for (p, home) in self.homes().unwrap_or_default().into_iter().enumerate() {
            carried.entry(home).or_default().push(p as u16);
        }
        let mut out: Vec<GroupDetail> = self
            .hosted
            .all()
            .into_iter()
            .filter(|(p, _)| *p != META_PARTITION)
            .flat_map(|(g, raft)| {
                let partitions = carried.remove(&g).unwrap_or_default();
                partitions.into_iter().map(move |p| (p, raft.clone()))
            })
            .filter_map(|(p, raft)| {
                let m = raft.metrics();
                let m = m.borrow_watched();
                let membership = m.membership_config.membership();
                let voters: Vec<NodeId> = membership.voter_ids().collect();
                if m.current_leader != Some(self.node_id) || !voters.contains(&self.node_id) {
                    return None;
                }
                Some(GroupDetail {
                    partition: u32::from(p),
                    leader: self.node_id,
                    term: m.current_term,
                    voters,
                    learners: membership.learner_ids().collect(),
                })
            })
            .collect();
        out.sort_by_key(|g| g.partition);
        out
    }

    /// Voters and learners of the meta group, as this node's replica sees them.
    pub fn meta_members(&self) -> Vec<NodeId> {
        let m = self.meta.metrics();
        let m = m.borrow_watched();
        let membership = m.membership_config.membership();
        let all: BTreeSet<NodeId> = membership.voter_ids().chain(membership.learner_ids()).collect();
        all.into_iter().collect()
    }

    /// This node's own part of the detail.
    pub fn local_detail(&self) -> StatusDetail {
        StatusDetail {
            members: vec![MemberReach {
                node_id: self.node_id,
                reachable: true,
            }],
            groups: self.led_groups(),
            meta_members: self.meta_members(),
            moves: self
                .moves_recorded()
                .unwrap_or_default()
                .into_iter()
                .map(|(p, record)| PartitionMove {
                    partition: u32::from(p),
                    record,
                })
                .collect(),
            targets: self
                .members()
                .ok()
                .and_then(|members| self.placement(&members))
                .unwrap_or_default(),
        }
    }

    /// The detail of the whole cluster: this node's, and every non-dead member's as it
    /// answers within `ASK_TIMEOUT` (all asked at once).
    pub async fn status_detail(&self) -> StatusDetail {
        let mut detail = self.local_detail();
        let (Some(peers), Ok(members)) = (&self.peers, self.members()) else {
            return detail;
        };
        let asks = members
            .into_iter()
            .filter(|n| n.node_id != self.node_id && n.state != NodeState::Dead)
            .map(|n| async move {
                let answer = ask_local::<StatusDetail>(peers, &n.cluster_addr, LocalAsk::Detail, ASK_TIMEOUT).await;
                (n.node_id, answer)
            });
        for (node_id, answer) in futures_util::future::join_all(asks).await {
            detail.members.push(MemberReach {
                node_id,
                reachable: answer.is_some(),
            });
            if let Some(theirs) = answer {
                // Two nodes can both claim a partition for a moment (an old leader that has
                // not heard of the new term yet): the higher term wins.
                for g in theirs.groups {
                    match detail.groups.iter_mut().find(|d| d.partition == g.partition) {
                        Some(d) if d.term >= g.term => {}
                        Some(d) => *d = g,
                        None => detail.groups.push(g),
                    }
                }
            }
        }
        detail.members.sort_by_key(|m| m.node_id);
        detail.groups.sort_by_key(|g| g.partition);
        detail
    }
}
