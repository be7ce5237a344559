//! `Cluster`: the node's handle on every partition group. The node layer reads and writes only
//! through it, naming ids; the cluster picks the partition and the router (`router.rs`) its
//! leader, here or on a peer.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use openraft::{BasicNode, Config, SnapshotPolicy};
use ringchat_storage::Store;
use tokio_util::sync::CancellationToken;

use crate::command::{Command, Response};
use crate::delivery::{CommitEvents, CommitSink};
use crate::error::ClusterError;
use crate::hosting::{GroupOpener, HostedGroups};
use crate::liveness::state::Liveness;
use crate::message_cache::MessageCache;
use crate::meta::{DeliveryBatch, NodeInfo, NodeState, META_PARTITION};
use crate::partition::channel_cache::ChannelCache;
use crate::partition::LogStore;
use crate::placement::partition_of;
use crate::proposal_packer::{CanPack, Packers};
use crate::router::Router;
use crate::rpc::{ClusterAccess, PeerChannels, PACKED_ENTRIES};
use crate::types::{NodeId, PartitionRaft};

/// What the cluster layer needs from the node's configuration.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// This node's id.
    pub node_id: NodeId,
    /// Data directory (fjall, snapshots, cache).
    pub data_dir: PathBuf,
    /// Number of partitions (fixed at bootstrap; a joining node takes the cluster's).
    pub partitions: u16,
    /// Replicas per partition (capped by the number of active nodes).
    pub replication: usize,
    /// Cluster address others use to reach this node.
    pub advertise: String,
    /// Client address, published in the member list.
    pub client_addr: String,
    /// Client URL advertised in `GET /v1/nodes` (empty: `http://<client_addr>`).
    pub public_url: String,
    /// Source address of outgoing cluster connections (`None`: the kernel picks).
    pub source_ip: Option<std::net::IpAddr>,
    /// Cluster address of a member to join; `None` bootstraps (or restarts) alone.
    pub join: Option<String>,
    /// The secret (and TLS) of cluster RPCs; without it the node runs without peers.
    pub cluster_access: Option<ClusterAccess>,
    /// A member silent this long is declared dead and its replicas are rebuilt elsewhere.
    pub dead_after: Duration,
    /// Fewest log entries between two snapshots of a group; the interval grows with the
    /// partition (`partition/snapshot_schedule.rs`).
    pub snapshot_every: u64,
    /// Message cache sizes.
    pub cache_memory_bytes: usize,
    /// Message cache disk size.
    pub cache_disk_bytes: usize,
}

/// The partition groups of this node and the storage under them.
pub struct Cluster {
    pub(crate) node_id: NodeId,
    partitions: u16,
    pub(crate) replication: usize,
    pub(crate) advertise: String,
    pub(crate) client_addr: String,
    pub(crate) public_url: String,
    /// This node's live client connection count, for `GET /v1/nodes` (`meta/nodes.rs`).
    pub(crate) connection_count: OnceLock<Arc<dyn Fn() -> u64 + Send + Sync>>,
    pub(crate) store: Store,
    /// The partition groups running here (`hosting.rs`).
    pub(crate) hosted: HostedGroups,
    /// Opens a partition group on demand.
    pub(crate) opener: GroupOpener,
    pub(crate) meta: PartitionRaft,
    pub(crate) cache: MessageCache,
    pub(crate) peers: Option<PeerChannels>,
    pub(crate) delivery: OnceLock<Arc<dyn LocalDelivery>>,
    pub(crate) dead_after: Duration,
    /// Since when this node has led the meta group (liveness needs a baseline).
    pub(crate) meta_leader_since: std::sync::Mutex<Option<Instant>>,
    /// Replica moves the meta leader is running (`meta/moves.rs`).
    pub(crate) moves: crate::meta::moves::Moves,
    /// Sends writes and reads to partition leaders (`router.rs`); local-only until `set_peers`.
    pub(crate) router: Router,
    /// Peers' beats, and the elections of leaderless groups (`liveness/`).
    pub(crate) liveness: Arc<Liveness>,
    /// Stops the liveness task (`shutdown`).
    liveness_stop: CancellationToken,
    /// Packs the writes this node leads while their group is busy (`proposal_packer.rs`).
    pub(crate) packers: Packers,
    /// Which group carries each partition (`meta/set_groups.rs`).
    pub(crate) homes_cache: crate::meta::set_groups::HomeCache,
    /// Copies of partitions to this node and deletions of partitions' data here, one at a
    /// time (`meta/partition_copy.rs`, `hosting.rs`): a deletion never runs into a copy.
    pub(crate) partition_data: tokio::sync::Mutex<()>,
    /// Partitions seen fenced in a group led here after their move ended (`meta/group_move.rs`).
    pub(crate) handed_over: crate::meta::group_move::HandedOver,
    /// Partitions whose data this process deleted here and that nothing was copied to since
    /// (`hosting.rs`, `reclaim_moved_partitions`).
    pub(crate) reclaimed: std::sync::Mutex<std::collections::BTreeSet<u16>>,
}

/// A group may pack its entries when every other member of it has announced that it reads
/// them (a single node has no one to ask). Membership changes add the new member's pipe as a
/// condition at once, so a node of an older release that joins stops the packing before it
/// could be sent an entry it cannot decode.
fn packing_gate(node_id: NodeId, peers: Option<PeerChannels>) -> CanPack {
    Arc::new(move |raft: &PartitionRaft| others_read(raft, node_id, peers.as_ref(), PACKED_ENTRIES))
}

/// True if every member of `raft`'s group other than node `me` has announced wire `level` on
/// its pipe (without peers there is no one else to ask).
pub(crate) fn others_read(raft: &PartitionRaft, me: NodeId, peers: Option<&PeerChannels>, level: u8) -> bool {
    match peers {
        None => true,
        Some(peers) => !any_other_member(raft, me, |node| !peers.peer_reads(&node.addr, level)),
    }
}

/// True if a member of `raft`'s group (voter or learner) other than node `me` satisfies `test`.
fn any_other_member(raft: &PartitionRaft, me: NodeId, mut test: impl FnMut(&BasicNode) -> bool) -> bool {
    let metrics = raft.metrics();
    let m = openraft::async_runtime::watch::WatchReceiver::borrow_watched(&metrics);
    let found = m
        .membership_config
        .membership()
        .nodes()
        .any(|(id, node)| *id != me && test(node));
    found
}

/// Where frames for this node's connections go (the node's connection registry).
pub trait LocalDelivery: Send + Sync + 'static {
    /// Hands a batch that another node sent to the local connections.
    fn deliver(&self, batch: DeliveryBatch);
}

impl Cluster {
    /// Opens storage and starts the meta group and one Raft group per partition.
    ///
    /// A new data dir without `join` bootstraps a cluster of one: every group is initialized
    /// with this node as its only voter. A new data dir with `join` asks that member to admit
    /// this node and takes the cluster's partition count; its groups start empty and fill as
    /// the meta leader moves replicas here. An existing data dir restarts with its identity,
    /// data and partition count.
    pub async fn open(cfg: &ClusterConfig) -> Result<Arc<Cluster>, ClusterError> {
        let store = Store::open(&cfg.data_dir)?;
        let peers = cfg
            .cluster_access
            .clone()
            .map(|access| PeerChannels::new(access).with_local_ip(cfg.source_ip));
        let stored = stored_partition_count(&store)?;
        let (partitions, bootstrap) = match (stored, &cfg.join) {
            (Some(p), _) => {
                if p != cfg.partitions && cfg.join.is_none() {
                    tracing::warn!(
                        stored = p,
                        requested = cfg.partitions,
                        "data dir was bootstrapped with another partition count; keeping it"
                    );
                }
                (p, false)
            }
            // The database was damaged and set aside (`Store::open`): this node is the member it
            // was, with its partition count from the marks, and waits for its peers to refill it
            // (`lost_state.rs`); it neither bootstraps nor joins anew.
            (None, _) if store.set_aside.is_some() => {
                let membership = store.marks.membership().ok_or_else(|| {
                    ClusterError::Internal("a set-aside database without a recorded membership".into())
                })?;
                (membership.partitions, false)
            }
            (None, None) => (cfg.partitions, true),
            (None, Some(addr)) => {
                let peers = peers
                    .as_ref()
                    .ok_or_else(|| ClusterError::Internal("--join needs --cluster-secret".into()))?;
                let reply =
                    crate::meta::membership::request_join(peers, addr, &self_info(cfg, NodeState::Joining)).await?;
                tracing::info!(
                    partitions = reply.partitions,
                    leader = reply.leader,
                    "admitted to the cluster"
                );
                (reply.partitions, false)
            }
        };
        if partitions == 0 {
            return Err(ClusterError::Internal("--partitions must be at least 1".into()));
        }
        let meta_config = raft_config(true)?;
        // Data partitions are quiescent: no per-group heartbeats or election timers; node-level
        // beats stand in for both (`liveness/`).
        let partition_config = raft_config(false)?;
        let opener = GroupOpener {
            store: store.clone(),
            meta_config,
            partition_config,
            peers: peers.clone(),
            snapshots: cfg.data_dir.join("snapshots"),
            node_id: cfg.node_id,
            commits: CommitSink::default(),
            channels: ChannelCache::default(),
            snapshot_every: cfg.snapshot_every,
            liveness: Arc::default(),
            lost_state: Arc::default(),
        };
        let meta = opener.open(META_PARTITION).await?;
        // A partition's own group runs only where the node replicates it: all of them on a
        // node without peers that bootstraps (a node with peers bootstraps into one group
        // named by its replica set instead: `record_bootstrap`), those it has Raft state for
        // on a restart, none on a joiner (they open as replicas move here; `hosting.rs`).
        let mut groups = HashMap::new();
        for p in 0..partitions {
            if (bootstrap && peers.is_none()) || LogStore::has_state(&store, p) {
                groups.insert(p, opener.open(p).await?);
            }
        }
        // Groups named by replica sets that this node ran before (those it has not started
        // yet open with the membership upkeep: `open_set_groups`).
        for (g, record) in crate::meta::group_records::set_groups_in(&store)? {
            if record.replicas.contains(&cfg.node_id) && LogStore::has_state(&store, g) {
                groups.insert(g, opener.open(g).await?);
            }
        }
        if bootstrap {
            let mut members = BTreeMap::new();
            members.insert(cfg.node_id, BasicNode::new(&cfg.advertise));
            for g in std::iter::once(&meta).chain(groups.values()) {
                if !g
                    .is_initialized()
                    .await
                    .map_err(|e| ClusterError::Internal(e.to_string()))?
                {
                    g.initialize(members.clone())
                        .await
                        .map_err(|e| ClusterError::Internal(e.to_string()))?;
                }
            }
        }
        // Stored only once bootstrap or admission happened: a data dir without it starts over.
        store_partition_count(&store, partitions)?;
        let cache = MessageCache::open(
            &cfg.data_dir.join("cache"),
            cfg.cache_memory_bytes,
            cfg.cache_disk_bytes,
        )
        .await?;
        let liveness = opener.liveness.clone();
        let cluster = Arc::new(Cluster {
            node_id: cfg.node_id,
            partitions,
            replication: cfg.replication.max(1),
            advertise: cfg.advertise.clone(),
            client_addr: cfg.client_addr.clone(),
            public_url: cfg.public_url.clone(),
            connection_count: OnceLock::new(),
            store,
            hosted: HostedGroups::new(groups),
            opener,
            meta,
            cache,
            peers: peers.clone(),
            delivery: OnceLock::new(),
            dead_after: cfg.dead_after,
            meta_leader_since: std::sync::Mutex::new(None),
            moves: Default::default(),
            router: Router::new(cfg.node_id),
            liveness,
            liveness_stop: CancellationToken::new(),
            packers: Packers::new(packing_gate(cfg.node_id, peers.clone())),
            homes_cache: Default::default(),
            partition_data: Default::default(),
            handed_over: Default::default(),
            reclaimed: Default::default(),
        });
        cluster.spawn_liveness(cluster.liveness_stop.clone());
        if let Some(peers) = peers {
            let weak = Arc::downgrade(&cluster);
            peers.set_groups_with(Arc::new(move |addr| {
                weak.upgrade().map_or(0, |c| c.groups_replicated_with(addr))
            }));
            cluster.set_peers(peers);
            // Weak: the hints live inside the cluster they read from.
            let weak = Arc::downgrade(&cluster);
            cluster.set_replica_hints(Arc::new(move |p| {
                weak.upgrade().map(|c| c.replicas_of(p)).unwrap_or_default()
            }));
        }
        // A bootstrap, or one a crash cut short: no layout yet, and this node alone in the
        // meta group it initialized (a joiner's meta group has other voters).
        if bootstrap || (cfg.join.is_none() && cluster.store.set_aside.is_none() && cluster.alone_without_layout()?) {
            cluster.record_bootstrap().await?;
        }
        Ok(cluster)
    }

    /// True if no layout is committed and this node is the meta group's only voter.
    fn alone_without_layout(&self) -> Result<bool, ClusterError> {
        if !self.layout()?.replicas.is_empty() {
            return Ok(false);
        }
        let m = self.meta.metrics();
        let m = openraft::async_runtime::watch::WatchReceiver::borrow_watched(&m);
        let voters: Vec<NodeId> = m.membership_config.membership().voter_ids().collect();
        Ok(voters == [self.node_id])
    }

    /// How many groups running here (data partitions and meta) have the node at cluster
    /// address `addr` as a voter or learner: what a peer-down line says is affected.
    pub fn groups_replicated_with(&self, addr: &str) -> usize {
        self.all_groups()
            .into_iter()
            .filter(|(_, g)| any_other_member(g, self.node_id, |n| n.addr == addr))
            .count()
    }

    /// Sets where frames from other nodes go; the first call wins.
    pub fn set_local_delivery(&self, delivery: Arc<dyn LocalDelivery>) {
        let _ = self.delivery.set(delivery);
    }

    /// Sets what this node does with the messages committed in partitions it leads: deliver
    /// them to every member's connections (delivery from the leader, `delivery/`).
    pub fn set_commit_events(&self, events: Arc<dyn CommitEvents>) {
        self.opener.commits.set(events);
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// Number of partitions.
    pub fn partitions(&self) -> u16 {
        self.partitions
    }

    /// The partition that holds `id`.
    pub fn partition_of(&self, id: &str) -> u16 {
        partition_of(id, self.partitions)
    }

    /// The local Raft group of partition `p`, if it exists (the RPC server routes by it).
    pub fn partition_group(&self, p: u16) -> Option<PartitionRaft> {
        if p == META_PARTITION {
            return Some(self.meta.clone());
        }
        self.hosted.get(p)
    }

    /// True once the node is an active member of a cluster whose meta group has a leader, and
    /// every partition it replicates has a leader; false while any of its groups has stopped
    /// (openraft stops a group for good on a storage error, e.g. a full disk: it answers no
    /// write until the node restarts, so the node must not be sent clients).
    pub fn is_ready(&self) -> bool {
        let meta_led = {
            let m = self.meta.metrics();
            let m = openraft::async_runtime::watch::WatchReceiver::borrow_watched(&m);
            m.current_leader.is_some() && m.running_state.is_ok()
        };
        if !meta_led {
            return false;
        }
        let Ok(members) = self.members() else { return false };
        if !members
            .iter()
            .any(|n| n.node_id == self.node_id && n.state == NodeState::Active)
        {
            return false;
        }
        self.hosted.all().iter().all(|(_, g)| {
            let m = g.metrics();
            let m = openraft::async_runtime::watch::WatchReceiver::borrow_watched(&m);
            let hosts = m.membership_config.membership().voter_ids().any(|v| v == self.node_id);
            m.running_state.is_ok() && (!hosts || m.current_leader.is_some())
        })
    }

    /// The groups of this node (meta included) that have stopped on an error, with the error:
    /// openraft stops a group for good on a storage error (or a panic), and only reopening the
    /// store brings it back. A group shut down on purpose (`Fatal::Stopped`) is not listed.
    pub fn stopped_groups(&self) -> Vec<(u16, String)> {
        self.all_groups()
            .into_iter()
            .filter_map(|(p, g)| {
                let m = g.metrics();
                let m = openraft::async_runtime::watch::WatchReceiver::borrow_watched(&m);
                match &m.running_state {
                    Err(e) if !matches!(e, openraft::error::Fatal::Stopped) => Some((p, e.to_string())),
                    _ => None,
                }
            })
            .collect()
    }

    /// True once a read found the database damaged (`Store::note_damage`): the node should
    /// restart, and the next start sets the database aside and refills it from the peers.
    pub fn damage_noted(&self) -> bool {
        self.store.damage_noted()
    }

    /// Every group running here: the data partitions, then the meta group.
    pub(crate) fn all_groups(&self) -> Vec<(u16, PartitionRaft)> {
        let mut groups = self.hosted.all();
        groups.push((META_PARTITION, self.meta.clone()));
        groups
    }

    /// Waits until `is_ready`, or `timeout`.
    /// Gives up at once when a group has stopped on an error or a read found damage: the node
    /// cannot get ready before its storage recovery restarts it, which waits for this.
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.is_ready() {
                return true;
            }
            if self.damage_noted() || !self.stopped_groups().is_empty() {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.is_ready()
    }

    /// Commits `cmd` in the partition of `key` and returns the state machine's answer;
    /// rule violations come back as `ClusterError::Rejected`.
    pub async fn write(&self, key: &str, cmd: Command) -> Result<Response, ClusterError> {
        let p = self.partition_of(key);
        self.write_partition(p, cmd).await
    }

    /// Builds a snapshot of partition `p` now and waits for it (operators and tests).
    pub async fn snapshot_partition(&self, p: u16) -> Result<u64, ClusterError> {
        let raft = &self
            .partition_group(p)
            .ok_or_else(|| ClusterError::Unavailable(format!("partition {p} is not hosted here")))?;
        let applied = {
            let m = raft.metrics();
            let m = openraft::async_runtime::watch::WatchReceiver::borrow_watched(&m);
            m.last_applied.as_ref().map(|l| l.index).unwrap_or(0)
        };
        raft.trigger()
            .snapshot()
            .await
            .map_err(|e| ClusterError::Internal(e.to_string()))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let built = {
                let m = raft.metrics();
                let m = openraft::async_runtime::watch::WatchReceiver::borrow_watched(&m);
                m.snapshot.as_ref().map(|l| l.index).unwrap_or(0)
            };
            if built >= applied {
                return Ok(built);
            }
            if Instant::now() > deadline {
                return Err(ClusterError::Unavailable("snapshot did not finish".into()));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops every Raft group, closes the cache and fsyncs storage.
    pub async fn shutdown(&self) {
        // Held to the end: no group opens or closes while the rest stop.
        let _no_changes = self.hosted.changing.lock().await;
        self.hosted.stop_opening();
        self.liveness_stop.cancel();
        self.moves.abort_all();
        for (_, g) in self.all_groups() {
            if let Err(e) = g.shutdown().await {
                tracing::warn!(error = %e, "raft shutdown");
            }
        }
        self.cache.close().await;
        if let Err(e) = self.store.sync() {
            tracing::error!(error = %e, "final fsync failed");
        }
        if let Err(e) = self.store.marks.write_if_changed() {
            tracing::error!(error = %e, "final write of the Raft marks failed");
        }
    }
}

const PARTITIONS_KEY: &[u8] = b"\xff\xffpartitions";

/// The partition count stored when this data dir joined or bootstrapped a cluster.
fn stored_partition_count(store: &Store) -> Result<Option<u16>, ClusterError> {
    match store
        .raft
        .get(PARTITIONS_KEY)
        .map_err(ringchat_storage::StorageError::from)?
    {
        Some(v) => Ok(Some(
            crate::codec::decode(&v).map_err(ringchat_storage::StorageError::from)?,
        )),
        None => Ok(None),
    }
}

/// Stores the partition count (durably: it decides where every key lives).
fn store_partition_count(store: &Store, partitions: u16) -> Result<(), ClusterError> {
    store
        .raft
        .insert(PARTITIONS_KEY, crate::codec::encode(&partitions))
        .map_err(ringchat_storage::StorageError::from)?;
    store.sync()?;
    Ok(())
}

/// Entries per AppendEntries at most. openraft's default, 300, made one catch-up batch of
/// 16 KB messages 4.8 MB (and of 100,000-character ones 30 MB) on the pipe every other call
/// of that peer waits behind; 64 keeps a batch of typical messages small and a backlog's
/// batches paced by the bulk budget (`rpc/bulk_budget.rs`).
pub const MAX_PAYLOAD_ENTRIES: u64 = 64;

/// The openraft settings of a group: with `timers`, openraft heartbeats it and runs its
/// elections (the meta group); without, `liveness/` does (data partitions).
fn raft_config(timers: bool) -> Result<Arc<Config>, ClusterError> {
    let config = Config {
        cluster_name: "ringchat".into(),
        heartbeat_interval: 250,
        election_timeout_min: 1000,
        election_timeout_max: 2000,
        enable_heartbeat: timers,
        enable_elect: timers,
        // Without heartbeats and elections openraft's tick does nothing in a group, yet each
        // tick (every 50 ms per group) wakes the group's core for a pass and a metrics flush:
        // 64 groups on a node were ~1,300 empty passes a second, idle or not.
        enable_tick: timers,
        // An election starts with a pre-vote (the meta group's timer here, `liveness/` for the
        // partitions): a node that cannot win, cut off or behind, does not raise its term and
        // depose a healthy leader when it comes back.
        enable_pre_vote: Some(true),
        install_snapshot_timeout: 60_000,
        // Snapshots are asked for by each group's schedule, whose interval grows with the
        // partition (`partition/snapshot_schedule.rs`), not after a fixed count.
        snapshot_policy: SnapshotPolicy::Never,
        max_in_snapshot_log_to_keep: 1000,
        max_payload_entries: MAX_PAYLOAD_ENTRIES,
        // A learner counts as caught up (a move may promote it) within one batch of the
        // leader, not openraft's 5,000 entries: with that default a moving partition of
        // ~1,000 entries was "caught up" at once, its new voter held none of the data, and
        // the backlog streamed afterwards, unthrottled by the move that had already ended.
        replication_lag_threshold: MAX_PAYLOAD_ENTRIES,
        // A follower whose journal lost its tail comes back with a shorter log than its
        // leader had matched. openraft's default treats that as a bug and panics the leader's
        // group; here the follower detects the loss itself and holds its vote
        // (`lost_state.rs`), and the leader only has to send the lost entries again.
        allow_log_reversion: Some(true),
        ..Default::default()
    }
    .validate()
    .map_err(|e| ClusterError::Internal(e.to_string()))?;
    Ok(Arc::new(config))
}

/// This node as a member record.
fn self_info(cfg: &ClusterConfig, state: NodeState) -> NodeInfo {
    NodeInfo {
        node_id: cfg.node_id,
        cluster_addr: cfg.advertise.clone(),
        client_addr: cfg.client_addr.clone(),
        state,
    }
}
