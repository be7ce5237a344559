//! Dropping groups named by replica sets that no partition calls home any more: after a
//! rebalance the groups of the old replica sets carry nothing, and each replica would keep
//! running them (a core task, queues, timers) for good.
//!
//! The meta leader drops them only once the layout is the placement and no move runs (a
//! move defines its target group before the group adopts anything, and is never in flight
//! here then); the meta group refuses to drop a group that is still some partition's home.
//! Each replica then closes the group, even where it leads it, and drops its Raft state
//! (`hosting.rs`); keys of partitions it still carried (a release that never came) are
//! deleted apart where no replica is placed (`reclaim_moved_partitions`).

use crate::cluster::Cluster;
use crate::command::Command;
use crate::error::ClusterError;

impl Cluster {
    /// Meta leader, layout settled: drops every set group that is no partition's home.
    pub(crate) async fn drop_unused_groups(&self) -> Result<(), ClusterError> {
        if self.moves.running() > 0 {
            return Ok(());
        }
        let homes = self.homes()?;
        for id in self.set_groups()?.into_keys() {
            if homes.contains(&id) {
                continue;
            }
            self.write_meta(Command::MetaDropGroup { id }).await?;
            tracing::info!(group = id, "group dropped: no partition is carried by it any more");
        }
        Ok(())
    }
}
