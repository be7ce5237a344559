//! The hand-off from a partition leader's apply to the node's connections.

use std::sync::{Arc, OnceLock};

use crate::model::MessageRecord;

/// What the node does with a message committed in a partition this node leads. Called from
/// the partition's state-machine worker after the commit is durable and applied: it must not
/// block (queue frames, never wait for a peer).
pub trait CommitEvents: Send + Sync + 'static {
    /// `message` was committed (or, after a leader change, may not have been delivered yet):
    /// every connected device of every one of `members` is to get it. Delivering one twice is
    /// allowed (clients de-duplicate by `(channel_id, seq)`).
    fn message_committed(&self, message: &MessageRecord, members: &[String]);
}

/// Where commit events go, set once by the node after start-up (the groups open, and may
/// apply their log, before the node's delivery layer exists: those applies deliver nothing,
/// as no client is connected yet). Cloning shares the slot.
#[derive(Clone, Default)]
pub struct CommitSink {
    slot: Arc<OnceLock<Arc<dyn CommitEvents>>>,
}

impl CommitSink {
    /// Sets the receiver of commit events; the first call wins.
    pub fn set(&self, events: Arc<dyn CommitEvents>) {
        let _ = self.slot.set(events);
    }

    /// Hands `message` to the receiver, if one is set.
    pub fn message_committed(&self, message: &MessageRecord, members: &[String]) {
        if let Some(events) = self.slot.get() {
            events.message_committed(message, members);
        }
    }
}
