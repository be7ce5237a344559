//! Handing every leadership away before a node stops (graceful shutdown, SIGTERM).
//!
//! A leader that just exits leaves its groups leaderless until their followers' election
//! timeout (1–2 s) runs out, and every write to those partitions waits that long. Handing
//! each group to a caught-up voter first (openraft's leader transfer) makes the change a
//! round trip instead, so a rolling restart costs clients next to nothing.

use std::time::{Duration, Instant};

use openraft::async_runtime::watch::WatchReceiver;

use crate::cluster::Cluster;
use crate::types::{NodeId, PartitionRaft};

/// How often the hand-off checks whether the transfers are done.
const POLL: Duration = Duration::from_millis(20);

impl Cluster {
    /// Hands every group this node leads (the meta group too) to another voter and waits, at
    /// most `within`, until it leads none. Returns how many groups it still leads (0: done).
    pub async fn hand_off_leaderships(&self, within: Duration) -> usize {
        if self.peers.is_none() {
            return 0;
        }
        let deadline = Instant::now() + within;
        let groups = self.led_here();
        let mut started = 0;
        for raft in &groups {
            if let Some(to) = successor(raft, self.node_id, |_| true) {
                // A quiet group's followers may not know this leader's vote yet, and would
                // ignore the hand-over: one heartbeat round first (`liveness/`).
                let _ = crate::leader_calls::renew_lease(raft).await;
                if raft.trigger().transfer_leader(to).await.is_ok() {
                    started += 1;
                }
            }
        }
        tracing::info!(
            leading = groups.len(),
            started,
            "handing leaderships over before stopping"
        );
        loop {
            let still = self.led_here().len();
            if still == 0 || Instant::now() >= deadline {
                if still > 0 {
                    tracing::warn!(still, "stopping while still leading some groups");
                }
                return still;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The groups (data partitions and meta) this node leads now.
    fn led_here(&self) -> Vec<PartitionRaft> {
        self.all_groups()
            .into_iter()
            .map(|(_, raft)| raft)
            .filter(|raft| raft.metrics().borrow_watched().current_leader == Some(self.node_id))
            .collect()
    }
}

/// The voter to hand `raft`'s leadership to: the other voter (one `allowed` accepts) with the
/// most of the log replicated (a caught-up one takes over at once; one that answered nothing
/// is never picked).
pub(crate) fn successor(raft: &PartitionRaft, me: NodeId, allowed: impl Fn(NodeId) -> bool) -> Option<NodeId> {
    let metrics = raft.metrics();
    let m = metrics.borrow_watched();
    let replication = m.replication.as_ref()?;
    m.membership_config
        .membership()
        .voter_ids()
        .filter(|&v| v != me && allowed(v))
        .filter_map(|v| {
            let matched = replication.get(&v).cloned().flatten()?;
            Some((matched.index, v))
        })
        .max()
        .map(|(_, v)| v)
}
