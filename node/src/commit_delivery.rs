//! Delivery from the partition leader, the node's side: a message committed in a partition
//! this node leads goes to every member's connections, here and (one batched delivery per
//! node) on the nodes holding them, and offline members' pushes start here. The node that took
//! the send only answers `sent` (docs/fanout.md).

use std::sync::Weak;

use ringchat_cluster::{CommitEvents, MessageRecord, PushOutboxRecord};
use tokio::sync::mpsc;

use crate::fanout::Fanout;
use crate::gateway::frames;

/// Characters of a message's text in its push preview (PROTOCOL §3).
const PREVIEW_CHARS: usize = 100;

/// Hands committed messages to the connections and the push worker.
pub struct CommitDelivery {
    /// Local and cross-node fan-out. Weak: the cluster holds this, and the fan-out holds the
    /// cluster (a strong link would keep the store open after shutdown).
    pub fanout: Weak<Fanout>,
    /// The push worker's inbox, if a push gateway is configured. The outbox entry is durable
    /// (written by the same commit); this only starts the push without waiting for a rescan.
    pub push: Option<mpsc::Sender<PushOutboxRecord>>,
}

impl CommitEvents for CommitDelivery {
    fn message_committed(&self, message: &MessageRecord, members: &[String]) {
        let Some(fanout) = self.fanout.upgrade() else { return };
        let frame = frames::message_frame(message);
        let n = fanout.send_to_users(members, &frame, None);
        metrics::counter!("ringchat_deliveries_total").increment(n as u64);
        if let Some(push) = &self.push {
            if members.len() > 1 {
                // A full inbox only delays the push to the next outbox scan.
                let _ = push.try_send(PushOutboxRecord {
                    channel_id: message.channel_id.clone(),
                    seq: message.seq,
                    sender_id: message.sender_id.clone(),
                    recipients: members.iter().filter(|m| **m != message.sender_id).cloned().collect(),
                    preview: message.text.chars().take(PREVIEW_CHARS).collect(),
                });
            }
        }
    }
}
