//! Which partition groups run on this node: only those it replicates.
//!
//! A Raft group costs a node memory (openraft preallocates ~850 KB of queues per group) and a
//! core task, state-machine worker and timers, whether or not the node is a member of it. Every
//! node used to open all P groups, so its cost grew with P instead of with its share P × R / N,
//! and the P that large clusters need (thousands, docs/capacity.md) was out of reach.
//!
//! Now a group is opened when the node has Raft state for the partition (at start: it
//! bootstrapped it, or replicated it before a restart) or when a peer sends it a Raft message
//! for the partition (a replica being moved here: the leader adds it as a learner and starts
//! replicating). A group is closed once the committed layout no longer places a replica here,
//! it does not lead, and no Raft message has arrived for it for `IDLE_BEFORE_CLOSE`: the leader
//! stopped replicating to it. Its data is then deleted (`partition/reclaim.rs`); a later move
//! back starts it empty and fills it from a snapshot, like on a new node.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::Config;
use ringchat_storage::Store;

use crate::cluster::Cluster;
use crate::delivery::{leader_watch, CommitSink, PartitionDelivery};
use crate::error::ClusterError;
use crate::lost_state::LostState;
use crate::network::NoPeers;
use crate::partition::channel_cache::ChannelCache;
use crate::partition::reclaim;
use crate::partition::snapshot_schedule::{self, SnapshotSchedule};
use crate::partition::{LogStore, StateMachine};
use crate::rpc::{GroupRegistry, GrpcNetwork, PartitionGroups, PeerChannels};
use crate::types::{NodeId, PartitionRaft};

/// A group outside the layout is closed after this long without a Raft message: several
/// heartbeat intervals (250 ms), so a replica being added (heartbeats from its leader) is never
/// closed, while one the leader dropped is.
pub const IDLE_BEFORE_CLOSE: Duration = Duration::from_secs(10);

/// Everything needed to open a partition group later than start-up.
pub(crate) struct GroupOpener {
    pub store: Store,
    /// openraft settings of the meta group (its own heartbeats and elections)...
    pub meta_config: Arc<Config>,
    /// ...and of data partitions (quiescent: `liveness/` beats and elects for them).
    pub partition_config: Arc<Config>,
    pub peers: Option<PeerChannels>,
    pub snapshots: PathBuf,
    pub node_id: NodeId,
    /// Where the leader's committed messages go (set by the node after start-up).
    pub commits: CommitSink,
    /// Decoded channel records, shared by every group of the node.
    pub channels: ChannelCache,
    /// Fewest log entries between two snapshots of a group (`snapshot_schedule.rs`).
    pub snapshot_every: u64,
    /// Peers' beats: a new leader asks whether its predecessor is alive (`leader_watch.rs`).
    pub liveness: Arc<crate::liveness::state::Liveness>,
    /// Groups that lost durable Raft state here and may not vote yet (`lost_state.rs`).
    pub lost_state: Arc<LostState>,
}

impl GroupOpener {
    /// Starts the Raft group of partition `p` over its stored log and state machine.
    pub async fn open(&self, p: u16) -> Result<PartitionRaft, ClusterError> {
        let delivery = Arc::new(PartitionDelivery::new(self.commits.clone()));
        let (schedule, snapshot_due) = SnapshotSchedule::new(self.snapshot_every);
        let sm = StateMachine::open(self.store.clone(), p, self.snapshots.clone())?
            .with_delivery(delivery.clone())
            .with_channel_cache(self.channels.clone())
            .with_snapshot_schedule(schedule.clone())?;
        let opened = sm.group_opened();
        let log = LogStore::new(self.store.clone(), p);
        let lost = LostState::lost(p, &log)
            .await
            .map_err(|e| ClusterError::Internal(e.to_string()))?;
        let is_meta = p == crate::meta::META_PARTITION;
        let config = if is_meta {
            self.meta_config.clone()
        } else {
            self.partition_config.clone()
        };
        let raft = match &self.peers {
            Some(peers) => {
                // Data partitions are quiescent: their idle followers get withheld commits
                // from the liveness tick's heartbeats; the meta group keeps openraft's own.
                let network = GrpcNetwork::new(peers.clone(), self.node_id, p).withholding_commits(!is_meta);
                PartitionRaft::new(self.node_id, config, network, log, sm).await
            }
            None => PartitionRaft::new(self.node_id, config, NoPeers, log, sm).await,
        };
        let raft = raft.map_err(|e| ClusterError::Internal(e.to_string()))?;
        opened.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(mark) = lost {
            self.lost_state.hold(p, &raft, mark);
        }
        leader_watch::spawn(&raft, self.node_id, p, delivery, self.liveness.clone());
        snapshot_schedule::spawn_trigger(&raft, p, schedule, snapshot_due);
        Ok(raft)
    }
}

/// The open partition groups, with when each last heard from a peer.
pub(crate) struct HostedGroups {
    groups: GroupRegistry,
    /// Milliseconds since `epoch` of the last Raft message (or the opening) per partition.
    last_heard: Vec<AtomicU64>,
    epoch: Instant,
    /// Opening and closing one at a time: two instances of a group over the same storage
    /// must never run together.
    pub changing: tokio::sync::Mutex<()>,
    /// Set at shutdown: a late Raft message must not open a group nobody will stop.
    stopping: AtomicBool,
}

impl HostedGroups {
    /// `groups` open. Every group id has its slot in `last_heard` (512 KiB): partitions' own
    /// groups and groups named by replica sets alike, without a lock on the message path.
    pub fn new(groups: HashMap<u16, PartitionRaft>) -> Self {
        let hosted = HostedGroups {
            groups: GroupRegistry::new(),
            last_heard: (0..=u16::MAX).map(|_| AtomicU64::new(0)).collect(),
            epoch: Instant::now(),
            changing: tokio::sync::Mutex::new(()),
            stopping: AtomicBool::new(false),
        };
        for (p, raft) in groups {
            hosted.insert(p, raft);
        }
        hosted
    }

    /// The open group of `p`.
    pub fn get(&self, p: u16) -> Option<PartitionRaft> {
        self.groups.group(p)
    }

    /// Every open group, by partition.
    pub fn all(&self) -> Vec<(u16, PartitionRaft)> {
        self.groups.all()
    }

    /// Opening and closing hold `changing`, so the count set here is never stale.
    pub fn insert(&self, p: u16, raft: PartitionRaft) {
        self.heard(p);
        self.groups.insert(p, raft);
        metrics::gauge!("ringchat_raft_groups").set(self.groups.len() as f64);
    }

    pub fn remove(&self, p: u16) -> Option<PartitionRaft> {
        let raft = self.groups.remove(p);
        metrics::gauge!("ringchat_raft_groups").set(self.groups.len() as f64);
        raft
    }

    /// No group opens from now on (shutdown; call it holding `changing`).
    pub fn stop_opening(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    /// Records a Raft message for `p` now.
    pub fn heard(&self, p: u16) {
        if let Some(at) = self.last_heard.get(p as usize) {
            at.store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
        }
    }

    /// How long since `p` last heard from a peer (or was opened).
    pub fn quiet_for(&self, p: u16) -> Duration {
        let at = self.last_heard.get(p as usize).map_or(0, |a| a.load(Ordering::Relaxed));
        self.epoch.elapsed().saturating_sub(Duration::from_millis(at))
    }
}

impl Cluster {
    /// The group `p` for a Raft message from a peer, opened now if this node does not run it
    /// yet (a replica is being moved here, or a group named by a replica set that includes
    /// this node starts). `None` for a group that does not exist here or cannot be opened
    /// (logged).
    pub(crate) async fn open_for_message(&self, p: u16) -> Option<PartitionRaft> {
        if p >= self.partitions() && self.set_group_here(p).is_none() {
            return None;
        }
        self.hosted.heard(p);
        if let Some(raft) = self.hosted.get(p) {
            return Some(raft);
        }
        // A partition's own group that handed its partition over and was closed here never
        // comes back: opened again it would be a pristine replica, free to vote a lagging
        // one into leading a log it lacks the end of.
        if p < self.partitions() && self.home_of(p) != p && !crate::partition::LogStore::has_state(&self.store, p) {
            return None;
        }
        let _one_at_a_time = self.hosted.changing.lock().await;
        if let Some(raft) = self.hosted.get(p) {
            return Some(raft);
        }
        if self.hosted.stopping.load(Ordering::SeqCst) {
            return None;
        }
        match self.opener.open(p).await {
            Ok(raft) => {
                crate::group_events::GROUPS_OPENED.record(p);
                self.hosted.insert(p, raft.clone());
                Some(raft)
            }
            Err(e) => {
                tracing::warn!(partition = p, error = %e, "opening a partition group failed");
                None
            }
        }
    }

    /// Opens every group named by a replica set that includes this node and is not running
    /// here yet, and initializes it with its fixed membership if it has never run anywhere
    /// here: every replica initializes it the same way, which openraft allows (the vote picks
    /// one leader), so a group starts as soon as a majority of its replicas did. Returns how
    /// many were opened. A replica whose Raft state was lost here never initializes
    /// (`lost_state.rs`): it waits to be refilled.
    pub async fn open_set_groups(&self) -> usize {
        let (Ok(groups), Ok(members)) = (self.set_groups(), self.members()) else {
            return 0;
        };
        let addrs: std::collections::BTreeMap<NodeId, openraft::BasicNode> = members
            .iter()
            .map(|n| (n.node_id, openraft::BasicNode::new(&n.cluster_addr)))
            .collect();
        let mut opened = 0;
        for record in groups.values().filter(|r| r.replicas.contains(&self.node_id)) {
            let raft = match self.hosted.get(record.id) {
                Some(raft) => raft,
                None => match self.open_for_message(record.id).await {
                    Some(raft) => {
                        opened += 1;
                        raft
                    }
                    None => continue,
                },
            };
            if !self.opener.lost_state.may_lead(record.id) || raft.is_initialized().await.unwrap_or(true) {
                continue;
            }
            let voters: std::collections::BTreeMap<NodeId, openraft::BasicNode> = record
                .replicas
                .iter()
                .filter_map(|id| addrs.get(id).map(|n| (*id, n.clone())))
                .collect();
            if voters.len() != record.replicas.len() {
                // A replica not (or no longer) a member: the group cannot be formed as named.
                continue;
            }
            if let Err(e) = raft.initialize(voters).await {
                tracing::debug!(group = record.id, error = %e, "initializing a set group");
            }
        }
        opened
    }

    /// Closes the groups this node no longer runs (see the module doc); returns how many.
    /// Nothing is closed before a layout is committed or on a node without peers.
    ///
    /// - A partition's own group whose partition went to a group named by a replica set
    ///   (its home is that group, which has adopted it here) closes at once, and only its Raft
    ///   state goes: the partition's keys are the new group's.
    /// - A group the layout (or the set-group records) no longer places here closes once it
    ///   has been quiet for `IDLE_BEFORE_CLOSE` and does not lead; all its keys go.
    pub async fn release_idle_groups(&self) -> usize {
        if self.peers.is_none() {
            return 0;
        }
        let Ok(layout) = self.layout() else { return 0 };
        if layout.replicas.is_empty() {
            return 0;
        }
        let mut closed = 0;
        for (p, raft) in self.hosted.all() {
            let own_partition = p < self.partitions();
            let home = if own_partition { self.home_of(p) } else { p };
            let placed_here = if own_partition {
                layout
                    .replicas
                    .get(p as usize)
                    .is_some_and(|r| r.contains(&self.node_id))
            } else {
                self.set_group_here(p).is_some()
            };
            // Handed over: the new group adopted it here (or it does not replicate it here any
            // more), and if this node leads the old group, every replica of the old group has
            // its whole log (a replica that was down during the fence still needs this leader
            // to catch up and let its new group adopt).
            let handed_over = own_partition
                && home != p
                && (!placed_here || crate::partition::ownership::admitted_here(&self.store, home, p))
                && every_replica_caught_up(&raft, self.node_id);
            // A set group dropped (or never placing this node) is gone cluster-wide: it
            // closes at once, even where it leads (no message for it is still to come).
            let dropped_set = !own_partition && !placed_here && self.adoptions_applied_here();
            if !handed_over
                && !dropped_set
                && (placed_here || self.hosted.quiet_for(p) < IDLE_BEFORE_CLOSE || leads(&raft, self.node_id))
            {
                continue;
            }
            let _one_at_a_time = self.hosted.changing.lock().await;
            if self.hosted.stopping.load(Ordering::SeqCst) {
                break;
            }
            // A message may have arrived while waiting for the lock.
            if !handed_over && !dropped_set && self.hosted.quiet_for(p) < IDLE_BEFORE_CLOSE {
                continue;
            }
            let Some(raft) = self.hosted.remove(p) else { continue };
            if let Err(e) = raft.shutdown().await {
                tracing::warn!(partition = p, error = %e, "closing a partition group");
            }
            drop(raft);
            self.opener.lost_state.forget(p);
            crate::group_events::GROUPS_CLOSED.record(p);
            closed += 1;
            // Still holding `changing`: the group cannot reopen while its keys go.
            let (store, snapshots) = (self.store.clone(), self.opener.snapshots.clone());
            let keep_data = handed_over || !own_partition;
            let dropped = tokio::task::spawn_blocking(move || {
                if keep_data {
                    reclaim::drop_group_state(&store, p, &snapshots)
                } else {
                    reclaim::drop_partition(&store, p, &snapshots)
                }
            })
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()));
            match dropped {
                Ok(keys) if keep_data => {
                    tracing::info!(
                        group = p,
                        keys,
                        "group closed: its partitions are carried by other groups or deleted apart"
                    );
                }
                Ok(keys) => {
                    metrics::counter!("ringchat_partitions_reclaimed_total").increment(1);
                    tracing::info!(partition = p, keys, "partition data deleted: no replica is placed here");
                }
                Err(e) => tracing::warn!(partition = p, error = %e, "deleting a closed group's data"),
            }
        }
        closed
    }
}

impl Cluster {
    /// True if every partition's home group that runs here has applied its adoption here (it
    /// admits the partition). Until then a group the partition came from must stay: the
    /// adoption waits for that group's applied position on this node
    /// (`ownership::source_applied`), which closing the group deletes.
    fn adoptions_applied_here(&self) -> bool {
        let Ok(homes) = self.homes() else { return false };
        homes.iter().enumerate().all(|(q, home)| {
            *home == q as u16
                || self.hosted.get(*home).is_none()
                || crate::partition::ownership::admitted_here(&self.store, *home, q as u16)
        })
    }

    /// Deletes the data of every partition this node holds keys of but no longer replicates:
    /// the committed layout places it elsewhere, no group here carries it (fenced or not),
    /// and no copy of it to this node is waiting for its adoption (a fresh copy marker).
    /// The partitions of groups named by replica sets leave a node this way after a move
    /// between groups (`meta/group_move.rs`); a partition's own group deletes its
    /// partition's data when it closes (above). Returns how many partitions went.
    pub async fn reclaim_moved_partitions(&self) -> usize {
        if self.peers.is_none() {
            return 0;
        }
        let Ok(layout) = self.layout() else { return 0 };
        let mut reclaimed = 0;
        for (p, replicas) in layout.replicas.iter().enumerate() {
            let p = p as u16;
            if replicas.contains(&self.node_id) || self.known_empty(p) || !self.may_reclaim(p) {
                continue;
            }
            // Never while a copy of it to this node runs; checked again under the lock.
            let _one_at_a_time = self.partition_data.lock().await;
            if !self.may_reclaim(p) {
                continue;
            }
            let store = self.store.clone();
            let dropped = tokio::task::spawn_blocking(move || {
                let keys = crate::partition::range_copy::drop_data(&store, p)?;
                crate::partition::range_copy::forget_copy(&store, p)?;
                Ok::<u64, ringchat_storage::StorageError>(keys)
            })
            .await;
            match dropped {
                Ok(Ok(keys)) => {
                    self.reclaimed.lock().unwrap_or_else(|e| e.into_inner()).insert(p);
                    reclaimed += 1;
                    metrics::counter!("ringchat_partitions_reclaimed_total").increment(1);
                    tracing::info!(partition = p, keys, "partition data deleted: no replica is placed here");
                }
                Ok(Err(e)) => tracing::warn!(partition = p, error = %e, "deleting a moved partition's data"),
                Err(e) => tracing::warn!(partition = p, error = %e, "deleting a moved partition's data"),
            }
        }
        reclaimed
    }

    /// True if this process deleted `p`'s data and nothing was copied here since: no need to
    /// scan its range (tombstones until compaction) every second.
    fn known_empty(&self, p: u16) -> bool {
        self.reclaimed.lock().unwrap_or_else(|e| e.into_inner()).contains(&p)
    }

    /// True if partition `p`'s keys here belong to nobody: no partition's own group for it runs
    /// here, no group recorded here carries it, no fresh copy marker, and there are keys.
    fn may_reclaim(&self, p: u16) -> bool {
        use crate::partition::range_copy;
        if self.hosted.get(p).is_some() || LogStore::has_state(&self.store, p) {
            return false;
        }
        let carried = crate::meta::group_records::set_groups_in(&self.store).map(|groups| {
            groups
                .into_keys()
                .any(|g| crate::partition::ownership::carried_here(&self.store, g, p))
        });
        if !matches!(carried, Ok(false)) {
            return false;
        }
        match range_copy::copy_marker(&self.store, p) {
            Ok(Some(marker)) if !marker.is_stale(crate::clock::unix_ms()) => return false,
            Ok(_) => {}
            Err(_) => return false,
        }
        range_copy::holds_data(&self.store, p).unwrap_or(false)
    }
}

/// True unless `me` leads `raft`'s group and one of its other replicas has not matched the
/// leader's last log entry yet.
fn every_replica_caught_up(raft: &PartitionRaft, me: NodeId) -> bool {
    let m = raft.metrics();
    let m = openraft::async_runtime::watch::WatchReceiver::borrow_watched(&m);
    if m.current_leader != Some(me) {
        return true;
    }
    let Some(replication) = m.replication.as_ref() else {
        return true;
    };
    replication
        .iter()
        .filter(|(id, _)| **id != me)
        .all(|(_, matched)| matched.as_ref().map(|l| l.index()) == m.last_log_index)
}

/// True if `me` leads `raft`'s group as one of its voters. A leader that removed itself from
/// the voters can still name itself leader in its metrics; it leads nothing any more.
pub(crate) fn leads(raft: &PartitionRaft, me: NodeId) -> bool {
    let m = raft.metrics();
    let m = openraft::async_runtime::watch::WatchReceiver::borrow_watched(&m);
    m.current_leader == Some(me) && m.membership_config.membership().voter_ids().any(|v| v == me)
}
