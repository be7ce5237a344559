//! Follows one partition group's leadership for delivery.
//!
//! One task per open group, started with it. It ends when the group shuts down (openraft
//! drops the metrics sender when its core stops), so it needs no shutdown signal of its own.

use std::sync::Arc;

use openraft::async_runtime::watch::WatchReceiver;

use super::PartitionDelivery;
use crate::types::{NodeId, PartitionRaft};

/// Starts following `raft`'s leadership on node `me` into `delivery`.
pub fn spawn(raft: &PartitionRaft, me: NodeId, partition: u16, delivery: Arc<PartitionDelivery>) {
    // Server metrics change only with the vote, leader or membership, not with every commit.
    let mut watch = raft.server_metrics();
    tokio::spawn(async move {
        loop {
            let leads = {
                let m = watch.borrow_watched();
                m.current_leader == Some(me) && m.membership_config.membership().voter_ids().any(|v| v == me)
            };
            if leads && !delivery.is_leading() {
                let again = delivery.became_leader();
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
