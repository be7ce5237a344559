//! Regrouping: the meta leader moves each partition still carried by its own Raft group into
//! the group named by its replica set (docs/raft-groups.md), so a cluster runs one group per
//! distinct replica set instead of one per partition and a Raft round carries the writes of
//! many partitions.
//!
//! A regroup is a move between two groups with the same replicas, so no key is copied: every
//! replica already holds the partition's keys. Per partition, each step idempotent, so a
//! regroup cut short is simply run again (by this meta leader's next pass or the next one):
//! 1. find or define the group of the partition's committed replica set, and wait until it
//!    commits (a `Release` of a partition it does not carry changes nothing);
//! 2. `Fence` the partition in its own group: its writes are refused from there on (the
//!    router retries them: a short `unavailable` at most) and the fence's log index is known;
//! 3. `Adopt` it in the new group, each replica once its own replica of the old group has
//!    applied the fence (`ownership::source_applied`);
//! 4. `Release` it in the old group, and commit the new group as its home in the meta group;
//!    routers send its writes there as soon as their meta replica has it. Each node then
//!    closes the old group and drops its Raft state, keeping the keys (`hosting.rs`).
//!
//! Experimental until a partition carried by a named group can move to other nodes (a copy
//! to the nodes new to it): regrouping runs only on a meta leader started with `--regroup`,
//! and partitions it regrouped are not moved again (`start_moves` skips them).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::moves::MOVE_TIMEOUT;
use super::NodeInfo;
use crate::cluster::Cluster;
use crate::error::ClusterError;
use crate::log_throttle::{LogThrottle, EVERY_30_S};
use crate::types::NodeId;

/// How long after the last replica move regrouping waits (`membership_quiet`).
pub const QUIET_BEFORE_REGROUP: Duration = Duration::from_secs(10);

impl Cluster {
    /// Starts a regroup for every partition still in its own group whose replicas are
    /// settled, up to the moves' parallel bound. Called by the meta leader's pass once the
    /// layout is the placement.
    pub(crate) fn start_regroups(self: &Arc<Self>, members: &[NodeInfo]) -> Result<(), ClusterError> {
        if !self.membership_quiet(members)? || !self.all_move_between_groups(members) {
            return Ok(());
        }
        let layout = self.layout()?;
        let homes = self.homes()?;
        let by_id: BTreeMap<NodeId, NodeInfo> = members.iter().map(|n| (n.node_id, n.clone())).collect();
        let now = std::time::Instant::now();
        for (p, replicas) in layout.replicas.iter().enumerate() {
            let p = p as u16;
            if homes.get(p as usize) != Some(&p) || replicas.is_empty() || self.moves.busy(p, now) {
                continue;
            }
            if self.moves.running() >= super::moves::MAX_PARALLEL {
                break;
            }
            let cluster = Arc::clone(self);
            let replicas = replicas.clone();
            let members = by_id.clone();
            self.moves.start(p, move || {
                tokio::spawn(async move {
                    let result = match tokio::time::timeout(MOVE_TIMEOUT, cluster.regroup(p, &replicas, &members)).await {
                        Ok(result) => result,
                        Err(_) => Err(ClusterError::Unavailable("regroup timed out".into())),
                    };
                    if let Err(e) = &result {
                        static NOT_YET: LogThrottle = LogThrottle::new(EVERY_30_S);
                        if let Some(held_back) = NOT_YET.allow() {
                            tracing::info!(partition = p, error = %e, held_back, "regroup not done yet; retrying later");
                        }
                    }
                    cluster.moves.finished(p, result.is_ok());
                })
                .abort_handle()
            });
        }
        Ok(())
    }

    /// True once membership looks final: two or more active members, none joining or
    /// draining, and no replica move finished in the last `QUIET_BEFORE_REGROUP`. Regrouped
    /// partitions do not move yet, so regrouping a cluster whose nodes are still being added
    /// (one by one, each a few seconds apart) would leave them on the first nodes for good.
    fn membership_quiet(&self, members: &[NodeInfo]) -> Result<bool, ClusterError> {
        use super::NodeState::{Active, Dead};
        let active = members.iter().filter(|n| n.state == Active).count();
        if active < 2 || members.iter().any(|n| !matches!(n.state, Active | Dead)) {
            return Ok(false);
        }
        let last_move = self
            .moves_recorded()?
            .values()
            .filter_map(|m| m.finished_ms)
            .max()
            .unwrap_or(0);
        Ok(crate::clock::unix_ms().saturating_sub(last_move) >= QUIET_BEFORE_REGROUP.as_millis() as u64)
    }

    /// True if every live member announced wire level 7 (a node of an older release cannot
    /// read the commands and groups of moves between groups, nor answer their copies, and
    /// before level 7 would misread the channel records a copy brings).
    pub(crate) fn all_move_between_groups(&self, members: &[NodeInfo]) -> bool {
        let Some(peers) = &self.peers else { return true };
        members
            .iter()
            .filter(|n| n.node_id != self.node_id && n.state != super::NodeState::Dead)
            .all(|n| peers.peer_reads(&n.cluster_addr, crate::rpc::CHANNEL_POSITIONS))
    }

    /// Moves partition `p` from its own group into the group of its replica set `replicas`
    /// (`group_move.rs`: no node is new to it, so nothing is copied).
    async fn regroup(
        &self,
        p: u16,
        replicas: &[NodeId],
        members: &BTreeMap<NodeId, NodeInfo>,
    ) -> Result<(), ClusterError> {
        self.move_between_groups(p, replicas, replicas, members, None).await
    }
}
