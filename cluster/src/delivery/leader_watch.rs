//! Follows one partition group's leadership for delivery.
//!
//! One task per open group, started with it. It ends when the group shuts down (openraft
//! drops the metrics sender when its core stops), so it needs no shutdown signal of its own.
//!
//! A replica that becomes leader delivers the last 10 s of commits again only when its
//! predecessor may have died with some undelivered: when a voter of the group, or the leader it
//! last knew, no longer beats. When all of them beat, the predecessor handed the group over
//! (leader balancing, a SIGTERM hand-off, a move that took it out of the voters) and had
//! delivered what it applied while leading; delivering the last 10 s again then only sent
//! every recipient hundreds of duplicates per leadership change (3,000 in a 40 s rebalance
//! run, docs/benchmarks.md). Only its writes in flight at the hand-over are left, applied
//! around the change: the last 2 s are delivered again (`PartitionDelivery::took_over`).

use std::sync::Arc;

use openraft::async_runtime::watch::WatchReceiver;

use super::PartitionDelivery;
use crate::liveness::state::Liveness;
use crate::types::{NodeId, PartitionRaft};

/// Starts following `raft`'s leadership on node `me` into `delivery`.
pub fn spawn(
    raft: &PartitionRaft,
    me: NodeId,
    partition: u16,
    delivery: Arc<PartitionDelivery>,
    liveness: Arc<Liveness>,
) {
    // Server metrics change only with the vote, leader or membership, not with every commit.
    let mut watch = raft.server_metrics();
    tokio::spawn(async move {
        // The last other node seen leading this group.
        let mut predecessor: Option<NodeId> = None;
        loop {
            let (leads, leader, others) = {
                let m = watch.borrow_watched();
                let voters: Vec<NodeId> = m.membership_config.membership().voter_ids().collect();
                let leads = m.current_leader == Some(me) && voters.contains(&me);
                let others: Vec<NodeId> = voters.into_iter().filter(|v| *v != me).collect();
                (leads, m.current_leader, others)
            };
            if let Some(other) = leader.filter(|l| *l != me) {
                predecessor = Some(other);
            }
            if leads && !delivery.is_leading() {
                let handed_over = others.iter().chain(predecessor.iter()).all(|n| liveness.is_alive(*n));
                let again = if handed_over {
                    delivery.took_over()
                } else {
                    delivery.became_leader()
                };
                if again > 0 {
                    tracing::debug!(partition, again, "new leader delivers its recent commits again");
                    metrics::counter!("ringchat_redelivered_on_leader_change_total").increment(again as u64);
                }
            } else if !leads && delivery.is_leading() {
                delivery.stopped_leading();
            }
            if watch.changed().await.is_err() {
                delivery.stopped_leading();
                return;
            }
        }
    });
}
