//! A removed node finding out that it was removed.
//!
//! `cluster remove` drains a node, takes it out of the meta group and records it dead. Once out
//! of the meta group it receives no more meta entries, so its own replica never says so: left
//! alone it would run on, serving clients from partitions it no longer replicates. So a node
//! asks a peer now and then how the cluster records it. Removed means both: its member record
//! is `dead` *and* it is no longer a member (voter or learner) of the peer's meta group. A node
//! declared dead for silence stays in the meta group and becomes active again when it answers,
//! so it is never mistaken for a removed one.

use std::time::Duration;

use super::membership::{ask_local, LocalAsk};
use super::model::NodeState;
use super::status_detail::StatusDetail;
use super::wire::ClusterStatus;
use crate::cluster::Cluster;

/// How long one peer may take to answer.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);

impl Cluster {
    /// True if a peer's view of the cluster says this node was removed (see the module doc).
    /// False when no peer answers: a node that cannot tell keeps running.
    pub async fn was_removed(&self) -> bool {
        let (Some(peers), Ok(members)) = (&self.peers, self.members()) else {
            return false;
        };
        for peer in members
            .iter()
            .filter(|n| n.node_id != self.node_id && n.state != NodeState::Dead)
        {
            let addr = &peer.cluster_addr;
            let Some(status) = ask_local::<ClusterStatus>(peers, addr, LocalAsk::Status, ASK_TIMEOUT).await else {
                continue;
            };
            let Some(detail) = ask_local::<StatusDetail>(peers, addr, LocalAsk::Detail, ASK_TIMEOUT).await else {
                continue;
            };
            let recorded_dead = status
                .members
                .iter()
                .any(|m| m.node_id == self.node_id && m.state == NodeState::Dead.as_str());
            // One peer with a current view decides; a lagging one that still lists this node
            // is asked again next time.
            return recorded_dead && !detail.meta_members.contains(&self.node_id);
        }
        false
    }
}
