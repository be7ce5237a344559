//! Presence events go only to watchers who still share a channel with the user.
//!
//! A subscription is checked when it is made (`presence_subscribe`), but membership changes
//! afterwards: a user who leaves a group, or is removed from it, must stop seeing the others
//! come and go, and they must stop seeing the user. So every event is checked again when it is
//! sent, against the channel records (the source of truth for membership), and a watcher who
//! no longer shares a channel is dropped from the subject's watchers: nothing more reaches it.
//!
//! Events are checked and sent by one task in the order they happened, so a watcher never sees
//! `offline` overtake the `online` before it. The task belongs to `Presence`: it ends when the
//! presence (the only sender of its queue) is dropped.

use std::collections::HashSet;
use std::sync::Arc;

use ringchat_cluster::{Cluster, ClusterError};
use serde_json::json;
use tokio::sync::mpsc;

use crate::chat::PresenceState;
use crate::gateway::frames;
use crate::presence::Watchers;

/// Presence events waiting to be checked and sent. A node's transitions come from first
/// connections and last disconnections, so a full queue means a reconnect storm; events beyond
/// it are dropped (and counted), the watchers' next subscription reads the current state.
const QUEUE: usize = 16_384;

/// The sending side: `announce` queues an event without waiting.
pub struct PresenceGate {
    queue: mpsc::Sender<PresenceState>,
}

impl PresenceGate {
    /// Starts the task that checks and sends events to `watchers`, reading membership from
    /// `cluster`.
    pub fn start(cluster: Arc<Cluster>, watchers: Arc<Watchers>) -> Self {
        let (queue, events) = mpsc::channel(QUEUE);
        tokio::spawn(run(cluster, watchers, events));
        PresenceGate { queue }
    }

    /// Queues `state` for the user's watchers.
    pub fn announce(&self, state: PresenceState) {
        if self.queue.try_send(state).is_err() {
            metrics::counter!("ringchat_presence_events_dropped_total").increment(1);
        }
    }
}

async fn run(cluster: Arc<Cluster>, watchers: Arc<Watchers>, mut events: mpsc::Receiver<PresenceState>) {
    while let Some(state) = events.recv().await {
        let targets = watchers.of(&state.user_id);
        if targets.is_empty() {
            continue;
        }
        let sharers = match sharers(&cluster, &state.user_id).await {
            Ok(sharers) => sharers,
            Err(e) => {
                // Unknown membership sends nothing: privacy over completeness.
                tracing::debug!(error = %e, "presence event not sent: membership unreadable");
                continue;
            }
        };
        let mut frame = state.to_json();
        frame["type"] = json!("presence");
        let frame = frames::text(&frame);
        for target in targets {
            if sharers.contains(&*target.user_id) {
                target.push(frame.clone());
            } else {
                watchers.remove(target.id, &state.user_id);
            }
        }
    }
}

/// Everyone who shares at least one channel with `user_id` (and the user itself).
async fn sharers(cluster: &Cluster, user_id: &str) -> Result<HashSet<String>, ClusterError> {
    let mut out = HashSet::from([user_id.to_string()]);
    for (channel_id, _) in cluster.get_user_channels(user_id).await? {
        if let Some(channel) = cluster.get_channel(&channel_id).await? {
            // The user's channel list may lag a removal; the channel record does not.
            if channel.members.iter().any(|m| m == user_id) {
                out.extend(channel.members);
            }
        }
    }
    Ok(out)
}
