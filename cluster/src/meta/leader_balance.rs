//! Leader balancing: a partition's leadership belongs on the first replica of its replica set
//! in the committed layout (placement puts the partition's hash owner first, so those are
//! spread evenly over the nodes). Leaders order every write and drive replication, so where
//! they sit decides how the write load spreads. Elections alone leave every leader on the
//! bootstrap node of a new cluster, and away from a node that came back after a failure.
//!
//! Each node looks at the partitions it leads and hands a few of them per pass to their
//! preferred replica with openraft's leader transfer, only when that replica is an active
//! voter whose log has caught up with the leader's (so the hand-over is quick and no write
//! waits on a lagging node).

use super::model::NodeState;
use crate::cluster::Cluster;

/// Transfers started per pass (one a second) at most: each one makes its partition briefly
/// unavailable (an election's worth), so they are spread over passes. Four at once from each
/// of three nodes handed a node that had just filled 48 replicas twelve elections at a time;
/// most of those hand-overs took 1–3 s instead of milliseconds (docs/benchmarks.md).
const MAX_PER_PASS: usize = 1;

impl Cluster {
    /// One balancing pass over the partitions this node leads; returns the transfers started.
    pub async fn balance_leaders_once(&self) -> usize {
        if self.peers.is_none() {
            return 0;
        }
        let (Ok(layout), Ok(members)) = (self.layout(), self.members()) else {
            return 0;
        };
        // While replicas are still moving, leaders stay put: a node filling up with moved
        // replicas writes at the bulk budget's rate and its fsyncs take 100–400 ms, so a
        // leadership handed to it then stalls that partition's writes (p99 0.5 s in the
        // 1 GiB rebalance, docs/benchmarks.md). Once the layout matches the placement, the
        // usual passes spread the leaders in a few seconds.
        if self.placement(&members).as_ref() != Some(&layout.replicas) {
            return 0;
        }
        let active = |id: u64| members.iter().any(|m| m.node_id == id && m.state == NodeState::Active);
        // Each group with its preferred leader: a partition's own group has its layout
        // entry's first replica, a group named by a replica set that set's first.
        let homes = self.homes().unwrap_or_default();
        let own = (0..self.partitions())
            .filter(|p| homes.get(usize::from(*p)).is_none_or(|home| home == p))
            .filter_map(|p| Some((p, *layout.replicas.get(usize::from(p))?.first()?)));
        let named = self
            .set_groups()
            .unwrap_or_default()
            .into_values()
            .filter_map(|g| Some((g.id, *g.replicas.first()?)));
        let mut started = 0;
        for (p, preferred) in own.chain(named) {
            if started >= MAX_PER_PASS {
                break;
            }
            // A preferred replica that does not beat (still starting, say) would not take over.
            if preferred == self.node_id || !active(preferred) || !self.liveness.is_alive(preferred) {
                continue;
            }
            let Some(raft) = self.partition_group(p) else { continue };
            let ready = {
                let metrics = raft.metrics();
                let m = openraft::async_runtime::watch::WatchReceiver::borrow_watched(&metrics);
                let caught_up = m
                    .replication
                    .as_ref()
                    .and_then(|r| r.get(&preferred).cloned().flatten())
                    .is_some_and(|matched| Some(matched.index) == m.last_log_index);
                m.current_leader == Some(self.node_id)
                    && m.membership_config.membership().voter_ids().any(|v| v == preferred)
                    && caught_up
            };
            if !ready {
                continue;
            }
            // A quiet group sends its followers nothing (`liveness/`), so one that restarted
            // may not know this leader's vote yet and would ignore the hand-over: one heartbeat
            // round first tells them (a pass later retries if it still did not arrive).
            if crate::leader_calls::renew_lease(&raft).await.is_err() {
                continue;
            }
            self.liveness.transfer_started(p);
            if raft.trigger().transfer_leader(preferred).await.is_ok() {
                tracing::info!(
                    partition = p,
                    to = preferred,
                    "handing leadership to the preferred replica"
                );
                metrics::counter!("ringchat_leader_transfers_total").increment(1);
                started += 1;
            }
        }
        started
    }
}
