//! Which local Raft group serves a partition: the server's only view of the node.
//!
//! The server looks a group up per request instead of holding a fixed list, so the cluster can
//! start and stop partition groups (moves, rebalancing) while the server keeps running.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use futures_util::future::BoxFuture;

use crate::cluster::Cluster;
use crate::types::PartitionRaft;

/// Finds the local Raft group of a partition, if this node hosts it.
pub trait PartitionGroups: Send + Sync + 'static {
    /// The group of `partition`, or `None` if this node does not host it (now).
    fn group(&self, partition: u16) -> Option<PartitionRaft>;

    /// The group for a Raft message from a peer. A node that opens groups on demand (a replica
    /// moving here) does it here; by default the same as `group`.
    fn group_for_message(&self, partition: u16) -> BoxFuture<'_, Option<PartitionRaft>> {
        Box::pin(std::future::ready(self.group(partition)))
    }

    /// False while this node's replica of `partition` may not become leader (it lost durable
    /// Raft state and has not caught up: `lost_state.rs`).
    fn may_lead(&self, _partition: u16) -> bool {
        true
    }

    /// Whether this node's replica of `partition` may vote for a candidate of `term` whose log
    /// ends at `last_index`: always, unless it lost durable state (`lost_state.rs`).
    fn grants_vote(&self, _partition: u16, _term: u64, _last_index: Option<u64>) -> bool {
        true
    }
}

impl<F> PartitionGroups for F
where
    F: Fn(u16) -> Option<PartitionRaft> + Send + Sync + 'static,
{
    fn group(&self, partition: u16) -> Option<PartitionRaft> {
        self(partition)
    }
}

/// A mutable set of local groups: add one when it starts, remove it when it stops.
/// Cloning shares the set.
#[derive(Clone, Default)]
pub struct GroupRegistry {
    groups: Arc<RwLock<HashMap<u16, PartitionRaft>>>,
}

impl GroupRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Routes `partition` to `raft` from now on; returns the group it replaces.
    pub fn insert(&self, partition: u16, raft: PartitionRaft) -> Option<PartitionRaft> {
        self.groups
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(partition, raft)
    }

    /// Stops routing `partition`; later requests for it are answered `NotFound`.
    pub fn remove(&self, partition: u16) -> Option<PartitionRaft> {
        self.groups
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(&partition)
    }

    /// Every group, by partition.
    pub fn all(&self) -> Vec<(u16, PartitionRaft)> {
        let groups = self.groups.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut all: Vec<_> = groups.iter().map(|(p, g)| (*p, g.clone())).collect();
        all.sort_by_key(|(p, _)| *p);
        all
    }

    /// How many groups are routed.
    pub fn len(&self) -> usize {
        self.groups
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .len()
    }

    /// True if no group is routed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl PartitionGroups for GroupRegistry {
    fn group(&self, partition: u16) -> Option<PartitionRaft> {
        self.groups
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(&partition)
            .cloned()
    }
}

impl PartitionGroups for Cluster {
    fn group(&self, partition: u16) -> Option<PartitionRaft> {
        self.partition_group(partition)
    }

    fn group_for_message(&self, partition: u16) -> BoxFuture<'_, Option<PartitionRaft>> {
        if partition == crate::meta::META_PARTITION {
            return Box::pin(std::future::ready(Some(self.meta.clone())));
        }
        Box::pin(self.open_for_message(partition))
    }

    fn may_lead(&self, partition: u16) -> bool {
        self.opener.lost_state.may_lead(partition)
    }

    fn grants_vote(&self, partition: u16, term: u64, last_index: Option<u64>) -> bool {
        self.opener.lost_state.grants_vote(partition, term, last_index)
    }
}
