//! `Cluster`: the node's handle on every partition group. The node layer reads and writes only
//! through it, naming ids; the cluster picks the partition and the router (`router.rs`) its
//! leader, here or on a peer.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::{BasicNode, Config, SnapshotPolicy};
use ringchat_storage::Store;

use crate::command::{Command, Response};
use crate::error::ClusterError;
use crate::message_cache::MessageCache;
use crate::network::NoPeers;
use crate::partition::{LogStore, StateMachine};
use crate::placement::partition_of;
use crate::router::Router;
use crate::types::{NodeId, PartitionRaft};

/// What the cluster layer needs from the node's configuration.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// This node's id.
    pub node_id: NodeId,
    /// Data directory (fjall, snapshots, cache).
    pub data_dir: PathBuf,
    /// Number of partitions (fixed at bootstrap).
    pub partitions: u16,
    /// Cluster address others use to reach this node.
    pub advertise: String,
    /// Build a snapshot after this many log entries since the last one.
    pub snapshot_every: u64,
    /// Message cache sizes.
    pub cache_memory_bytes: usize,
    /// Message cache disk size.
    pub cache_disk_bytes: usize,
}

/// The partition groups of this node and the storage under them.
pub struct Cluster {
    node_id: NodeId,
    partitions: u16,
    pub(crate) store: Store,
    groups: Vec<PartitionRaft>,
    pub(crate) cache: MessageCache,
    /// Sends writes and reads to partition leaders (`router.rs`); local-only until `set_peers`.
    pub(crate) router: Router,
}

impl Cluster {
    /// Opens storage and starts one Raft group per partition, bootstrapping them if the data dir
    /// is new. The partition count of an existing data dir wins over the flag.
    pub async fn open(cfg: &ClusterConfig) -> Result<Arc<Cluster>, ClusterError> {
        let store = Store::open(&cfg.data_dir)?;
        let partitions = settled_partition_count(&store, cfg.partitions)?;
        let raft_config = Arc::new(
            Config {
                cluster_name: "ringchat".into(),
                heartbeat_interval: 250,
                election_timeout_min: 1000,
                election_timeout_max: 2000,
                snapshot_policy: SnapshotPolicy::LogsSinceLast(cfg.snapshot_every),
                max_in_snapshot_log_to_keep: 1000,
                ..Default::default()
            }
            .validate()
            .map_err(|e| ClusterError::Internal(e.to_string()))?,
        );
        let mut groups = Vec::with_capacity(partitions as usize);
        for p in 0..partitions {
            let sm = StateMachine::open(store.clone(), p, cfg.data_dir.join("snapshots"))?;
            let raft = PartitionRaft::new(
                cfg.node_id,
                raft_config.clone(),
                NoPeers,
                LogStore::new(store.clone(), p),
                sm,
            )
            .await
            .map_err(|e| ClusterError::Internal(e.to_string()))?;
            if !raft
                .is_initialized()
                .await
                .map_err(|e| ClusterError::Internal(e.to_string()))?
            {
                let mut members = BTreeMap::new();
                members.insert(cfg.node_id, BasicNode::new(&cfg.advertise));
                raft.initialize(members)
                    .await
                    .map_err(|e| ClusterError::Internal(e.to_string()))?;
            }
            groups.push(raft);
        }
        let cache = MessageCache::open(
            &cfg.data_dir.join("cache"),
            cfg.cache_memory_bytes,
            cfg.cache_disk_bytes,
        )
        .await?;
        Ok(Arc::new(Cluster {
            node_id: cfg.node_id,
            partitions,
            store,
            groups,
            cache,
            router: Router::new(cfg.node_id),
        }))
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
        self.groups.get(p as usize).cloned()
    }

    /// True once every partition has a leader this node can reach.
    pub fn is_ready(&self) -> bool {
        self.groups.iter().all(|g| {
            let m = g.metrics();
            let m = openraft::async_runtime::watch::WatchReceiver::borrow_watched(&m);
            m.current_leader == Some(self.node_id)
        })
    }

    /// Waits until `is_ready`, or `timeout`.
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.is_ready() {
                return true;
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
        let raft = &self.groups[p as usize];
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
        for g in &self.groups {
            if let Err(e) = g.shutdown().await {
                tracing::warn!(error = %e, "raft shutdown");
            }
        }
        self.cache.close().await;
        if let Err(e) = self.store.sync() {
            tracing::error!(error = %e, "final fsync failed");
        }
    }
}

/// Reads the partition count stored at bootstrap, or stores `requested` for a new data dir.
fn settled_partition_count(store: &Store, requested: u16) -> Result<u16, ClusterError> {
    const KEY: &[u8] = b"\xff\xffpartitions";
    if let Some(v) = store.raft.get(KEY).map_err(ringchat_storage::StorageError::from)? {
        let stored: u16 = ringchat_storage::decode_record(&v)?;
        if stored != requested {
            tracing::warn!(
                stored,
                requested,
                "data dir was bootstrapped with another partition count; keeping it"
            );
        }
        return Ok(stored);
    }
    if requested == 0 {
        return Err(ClusterError::Internal("--partitions must be at least 1".into()));
    }
    store
        .raft
        .insert(KEY, ringchat_storage::encode_record(&requested))
        .map_err(ringchat_storage::StorageError::from)?;
    store.sync()?;
    Ok(requested)
}
