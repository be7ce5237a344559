//! A partition's move between two Raft groups: from the group carrying it (its home) to the
//! group named by its new replica set (docs/raft-groups.md). Regrouping (`regroup.rs`) is the
//! move whose replica set stays the same; a replica move (`membership.rs`) the move to
//! another set.
//!
//! Per partition, run by the meta leader, each step idempotent so a move cut short is simply
//! run again (by this leader's next pass or the next leader's):
//! 1. find or define the group of the new replica set, and check that it commits (an empty
//!    batch changes nothing);
//! 2. `Fence` the partition in its home group: its writes are refused from there on (the
//!    router retries them: a short wait at most) and the fence's log index is known;
//! 3. copy the partition to each node new to it, from a replica of the home group that
//!    applied the fence (`partition_copy.rs`); nodes in both sets hold it already;
//! 4. `Adopt` it in the new group: each replica once its keys are the partition at the fence
//!    (its own replica of the home group applied the fence, or its copy finished:
//!    `ownership::source_applied`);
//! 5. commit the new group as its home together with its new replica set in the meta group
//!    (routers send its writes there as soon as their meta replica has it);
//! 6. `Release` it in the old group. A release that does not happen (the leader died just
//!    then) is made later by the old group's leader (`release_handed_over`): a group never
//!    keeps a partition whose home is elsewhere.
//!
//! Nodes that no longer replicate the partition then delete its keys (`hosting.rs`), and a
//! partition's own group that handed it over closes.

use std::collections::BTreeMap;

use super::membership::member_client;
use super::model::{GroupRecord, FIRST_SET_GROUP, LAST_SET_GROUP};
use super::wire::CopyRequest;
use super::{MoveRecord, NodeInfo, NodeState};
use crate::cluster::Cluster;
use crate::codec::encode;
use crate::command::{ApplyError, Command, Response};
use crate::error::ClusterError;
use crate::partition::ownership::{admitted_here, Ownership};
use crate::partition::tables as t;
use crate::rpc::member_proto::Json;
use crate::types::NodeId;

impl Cluster {
    /// Moves partition `p` from its home group to the group of `to` (module doc). `before`
    /// is its committed replica set (the replicas of a partition's own group).
    pub(crate) async fn move_between_groups(
        &self,
        p: u16,
        before: &[NodeId],
        to: &[NodeId],
        members: &BTreeMap<NodeId, NodeInfo>,
        record: Option<MoveRecord>,
    ) -> Result<(), ClusterError> {
        let from = self.home_of(p);
        let g = self.group_of_set(to).await?;
        if from == g {
            return self.commit_replicas(p, to, record, None).await;
        }
        self.write_to_group(p, g, Command::Batch(Vec::new())).await?;
        let sources: Vec<NodeId> = match self.set_group(from) {
            Some(record) => record.replicas,
            None => before.to_vec(),
        };
        let new_nodes: Vec<NodeId> = to.iter().filter(|n| !sources.contains(n)).copied().collect();
        // A move that copies keeps the partition fenced for its copy: one such at a time.
        let copy_slot = if new_nodes.is_empty() {
            None
        } else {
            let slot = self.moves.fenced_copies.acquire().await;
            Some(slot.map_err(|_| ClusterError::Unavailable("shutting down".into()))?)
        };
        let after = match self.write_to_group(p, from, Command::Fence { partition: p }).await? {
            Response::Position(index) => index,
            other => return Err(ClusterError::Internal(format!("a fence answered {other:?}"))),
        };
        if !new_nodes.is_empty() {
            let addr = |id: &NodeId| members.get(id).map(|n| n.cluster_addr.clone());
            // Live sources first; the leader of the old group has applied the fence already.
            let mut ordered = sources.clone();
            ordered.sort_by_key(|n| members.get(n).is_none_or(|m| m.state == NodeState::Dead));
            let request = CopyRequest {
                partition: p,
                from,
                after,
                sources: ordered.iter().filter_map(addr).collect(),
            };
            let copies = new_nodes.iter().map(|n| {
                let request = request.clone();
                let target = addr(n);
                async move {
                    let target =
                        target.ok_or_else(|| ClusterError::Unavailable(format!("node {n} is not a member")))?;
                    self.copy_to(&target, &request).await
                }
            });
            for result in futures_util::future::join_all(copies).await {
                result?;
            }
        }
        self.write_to_group(
            p,
            g,
            Command::Adopt {
                partition: p,
                from,
                after,
            },
        )
        .await?;
        self.commit_replicas(p, to, record, Some(g)).await?;
        drop(copy_slot);
        self.write_to_group(p, from, Command::Release { partition: p })
            .await
            .or_else(|e| match e {
                // Released already (a move cut short after its release).
                ClusterError::Rejected(ApplyError::NotHere) => Ok(Response::Done),
                e => Err(e),
            })?;
        tracing::debug!(partition = p, from, to = g, "partition moved between groups");
        Ok(())
    }

    /// Asks the node at `target` to copy a partition from the sources in `request`.
    async fn copy_to(&self, target: &str, request: &CopyRequest) -> Result<(), ClusterError> {
        let peers = self
            .peers
            .as_ref()
            .ok_or_else(|| ClusterError::Unavailable("no peers".into()))?;
        if *target == self.advertise {
            return self.copy_partition_here(request).await.map(|_| ());
        }
        member_client(peers, target)?
            .copy_partition(Json {
                payload: encode(request),
            })
            .await
            .map_err(|s| ClusterError::Unavailable(format!("copy to {target}: {}", s.message())))?;
        Ok(())
    }

    /// The id of the group that can carry a partition placed on `replicas`, defined now if
    /// there is none: one whose replicas are the same set with the same first (the preferred
    /// leader), exactly `replicas` if there is such a group. The order of the others does not
    /// name another group: it matters nowhere, and keying by it would double the groups
    /// (3 nodes: 6 orders, 3 first replicas).
    pub(crate) async fn group_of_set(&self, replicas: &[NodeId]) -> Result<u16, ClusterError> {
        let find = |c: &Cluster| -> Result<Option<u16>, ClusterError> {
            let groups = c.set_groups()?;
            let exact = groups.values().find(|g| g.replicas == replicas);
            let alike = || groups.values().find(|g| same_group_key(&g.replicas, replicas));
            Ok(exact.or_else(alike).map(|g| g.id))
        };
        if let Some(g) = find(self)? {
            return Ok(g);
        }
        // One definition at a time: two moves of partitions to one set define one group.
        let _one = self.moves.commit.lock().await;
        if let Some(g) = find(self)? {
            return Ok(g);
        }
        let highest = match self.store.sm.get(t::meta_group_ids(super::META_PARTITION)) {
            Ok(Some(v)) => crate::codec::decode::<u16>(&v).map_err(ringchat_storage::StorageError::from)?,
            _ => FIRST_SET_GROUP - 1,
        };
        let id = highest
            .checked_add(1)
            .filter(|id| *id <= LAST_SET_GROUP)
            .ok_or_else(|| ClusterError::Internal("no group ids left".into()))?;
        let group = GroupRecord {
            id,
            replicas: replicas.to_vec(),
        };
        self.write_meta(Command::MetaDefineGroup { group }).await?;
        tracing::info!(group = id, replicas = ?replicas, "group defined for a replica set");
        Ok(id)
    }

    /// Commits `cmd` in group `g` itself (about partition `p`); a refusal comes back as
    /// `ClusterError::Rejected`.
    pub(crate) async fn write_to_group(&self, p: u16, g: u16, cmd: Command) -> Result<Response, ClusterError> {
        match self.router().write_to_group(self, p, g, &cmd).await? {
            Response::Rejected(e) => Err(ClusterError::Rejected(e)),
            other => Ok(other),
        }
    }

    /// On the leader of each group running here: releases every partition the group still
    /// carries while its home is another group that has adopted it here, for longer than a
    /// move may take: a move whose last step, the release, did not happen (its meta leader
    /// died just then), or an adoption whose move was given up for one to another set. Both
    /// conditions guard against a stale meta replica: during a move the home is the old group,
    /// which has the partition fenced, and a move ends (or times out) well within
    /// `SWEEP_AFTER`. Called by the membership upkeep.
    pub async fn release_handed_over(&self) {
        let now = std::time::Instant::now();
        let mut seen_now = Vec::new();
        for (g, raft) in self.hosted.all() {
            if !crate::hosting::leads(&raft, self.node_id) {
                continue;
            }
            let Ok(Some(v)) = self.store.sm.get(t::meta_ownership(g)) else {
                continue;
            };
            let Ok(owned) = crate::codec::decode::<Ownership>(&v) else {
                continue;
            };
            for q in owned.carried {
                let home = self.home_of(q);
                if q >= self.partitions() || home == g || !admitted_here(&self.store, home, q) {
                    continue;
                }
                seen_now.push((g, q));
                let first_seen = *self
                    .handed_over
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .entry((g, q))
                    .or_insert(now);
                if now.duration_since(first_seen) < SWEEP_AFTER {
                    continue;
                }
                match self.write_to_group(q, g, Command::Release { partition: q }).await {
                    Ok(_) => tracing::info!(
                        group = g,
                        partition = q,
                        "released a partition whose move ended elsewhere"
                    ),
                    Err(e) => {
                        tracing::debug!(group = g, partition = q, error = %e, "releasing a handed-over partition")
                    }
                }
            }
        }
        self.handed_over
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|k, _| seen_now.contains(k));
    }
}

/// How long a partition must look handed over (fenced here, adopted by its home) before its
/// old group's leader releases it: longer than any move runs (`MOVE_TIMEOUT`).
const SWEEP_AFTER: std::time::Duration = std::time::Duration::from_secs(120);

/// When each `(group, partition)` was first seen handed over but not released.
pub(crate) type HandedOver = std::sync::Mutex<std::collections::HashMap<(u16, u16), std::time::Instant>>;

/// Whether a group of replicas `a` can carry a partition placed on `b`: the same first
/// replica, the same set.
fn same_group_key(a: &[NodeId], b: &[NodeId]) -> bool {
    let rest = |r: &[NodeId]| r.iter().skip(1).copied().collect::<std::collections::BTreeSet<_>>();
    a.first() == b.first() && a.len() == b.len() && rest(a) == rest(b)
}

#[cfg(test)]
mod tests {
    use super::same_group_key;

    #[test]
    fn a_group_is_named_by_its_first_replica_and_the_set_of_the_others() {
        assert!(same_group_key(&[1, 2, 3], &[1, 3, 2]));
        assert!(same_group_key(&[2], &[2]));
        assert!(!same_group_key(&[1, 2, 3], &[2, 1, 3]), "another preferred leader");
        assert!(!same_group_key(&[1, 2, 3], &[1, 2, 4]));
        assert!(!same_group_key(&[1, 2], &[1, 2, 3]));
        assert!(
            !same_group_key(&[1, 2, 2], &[1, 2, 3]),
            "sets compared, not lengths alone"
        );
    }
}
