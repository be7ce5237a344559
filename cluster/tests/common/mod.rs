//! What the cluster integration tests build on: one partition group with its own temporary
//! data dir and store, served over gRPC on loopback (port chosen at run time unless a test asks
//! for one), stopped with a bounded wait; the election of such nodes as voters; and the
//! settings of a single-node `Cluster`.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use openraft::{BasicNode, Config, SnapshotPolicy};
use ringchat_cluster::partition::{LogStore, StateMachine};
use ringchat_cluster::rpc::{spawn_server, ClusterSecret, GrpcNetwork, NodeServices, PeerChannels, RpcError};
use ringchat_cluster::types::PartitionRaft;
use ringchat_cluster::NodeId;
use ringchat_storage::Store;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The cluster secret every test node shares.
pub const SECRET: &str = "test-cluster-secret-0123456789";
/// Bound of every wait for Raft progress.
pub const WAIT: Duration = Duration::from_secs(10);

/// Settings of a single-node `Cluster` in `dir` (no peers, replication 1) with `partitions`
/// partitions and snapshots at least `snapshot_every` entries apart.
pub fn single_node_config(dir: &Path, partitions: u16, snapshot_every: u64) -> ringchat_cluster::ClusterConfig {
    ringchat_cluster::ClusterConfig {
        node_id: 1,
        data_dir: dir.to_path_buf(),
        partitions,
        replication: 1,
        advertise: "127.0.0.1:1".into(),
        client_addr: "127.0.0.1:2".into(),
        public_url: String::new(),
        source_ip: None,
        join: None,
        cluster_access: None,
        dead_after: Duration::from_secs(30),
        snapshot_every,
        cache_memory_bytes: 1 << 20,
        // foyer's disk engine needs room for its blocks: with a few MiB, closing never ends.
        cache_disk_bytes: 256 << 20,
    }
}

/// A group `id` (named after it) of users `u_1` (its creator) and `u_2`.
pub fn group(id: &str) -> ringchat_cluster::ChannelRecord {
    ringchat_cluster::ChannelRecord {
        channel_id: id.into(),
        kind: ringchat_cluster::ChannelKind::Group,
        name: Some(id.into()),
        creator: "u_1".into(),
        members: vec!["u_1".into(), "u_2".into()],
        last_seq: 0,
        created_ms: 1_700_000_000_000,
        last_ts: 0,
    }
}

/// User `n`: id `u_n`, name `usern`.
pub fn user(n: u64) -> ringchat_cluster::UserRecord {
    ringchat_cluster::UserRecord {
        user_id: format!("u_{n}"),
        username: format!("user{n}"),
        created_ms: 1_700_000_000_000 + n,
        last_seen: None,
    }
}

/// `SECRET` as a `ClusterSecret`.
pub fn secret() -> ClusterSecret {
    ClusterSecret::new(SECRET).expect("secret")
}

/// Raft settings of the tests: fast heartbeats and elections, snapshots only when a test asks;
/// `tweak` adjusts the rest.
pub fn raft_config(cluster_name: &str, tweak: impl FnOnce(&mut Config)) -> Arc<Config> {
    let mut config = Config {
        cluster_name: cluster_name.into(),
        heartbeat_interval: 100,
        election_timeout_min: 400,
        election_timeout_max: 800,
        snapshot_policy: SnapshotPolicy::Never,
        ..Default::default()
    };
    tweak(&mut config);
    Arc::new(config.validate().expect("valid raft config"))
}

/// One node hosting one partition group: its own data dir, store, channels and RPC server.
pub struct Replica {
    pub id: NodeId,
    /// Address of its RPC server (`host:port`).
    pub addr: String,
    pub raft: PartitionRaft,
    pub store: Store,
    /// The channels its Raft group sends on (share them with a router of the same node).
    pub peers: PeerChannels,
    pub dir: tempfile::TempDir,
    shutdown: CancellationToken,
    server: JoinHandle<Result<(), RpcError>>,
}

impl Replica {
    /// Starts node `id` with `partition`'s group, its server listening on `listen`
    /// (`127.0.0.1:0`: any free port) and answering with what `services` builds from the
    /// group, the store and the data dir.
    pub async fn start(
        id: NodeId,
        partition: u16,
        listen: &str,
        config: Arc<Config>,
        services: impl FnOnce(&PartitionRaft, &Store, &Path) -> NodeServices,
    ) -> Replica {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open store");
        let sm = StateMachine::open(store.clone(), partition, dir.path().join("snapshots")).expect("open sm");
        let opened = sm.group_opened();
        let listener = TcpListener::bind(listen).await.expect("bind loopback");
        let addr = listener.local_addr().expect("local addr").to_string();
        let peers = PeerChannels::new(secret());
        let raft = PartitionRaft::new(
            id,
            config,
            // Withholding as a node's data partitions do; openraft's own heartbeats (every
            // 100 ms here) carry the withheld commits, as the liveness tick does in a node.
            GrpcNetwork::new(peers.clone(), id, partition).withholding_commits(true),
            LogStore::new(store.clone(), partition),
            sm,
        )
        .await
        .expect("start raft");
        opened.store(true, std::sync::atomic::Ordering::Relaxed);
        let shutdown = CancellationToken::new();
        let server = spawn_server(
            listener,
            services(&raft, &store, dir.path()),
            secret(),
            shutdown.clone(),
        );
        Replica {
            id,
            addr,
            raft,
            store,
            peers,
            dir,
            shutdown,
            server,
        }
    }

    /// This node as a Raft member.
    pub fn node(&self) -> BasicNode {
        BasicNode::new(&self.addr)
    }

    /// Stops the Raft group, then the server, and checks the server task ended cleanly
    /// within 5 s.
    pub async fn stop(self) {
        self.raft.shutdown().await.expect("raft shutdown");
        self.shutdown.cancel();
        let ended = tokio::time::timeout(Duration::from_secs(5), self.server)
            .await
            .expect("server stops within 5 s")
            .expect("server task not panicked");
        ended.expect("server ended without error");
    }
}

/// Makes `replicas` the voters of their partition (through the first) and waits until every
/// one knows the same leader and that leader holds its lease (a new leader accepts writes only
/// once a quorum has acknowledged it). Returns the leader's id.
pub async fn elect(replicas: &[&Replica]) -> NodeId {
    let members: BTreeMap<NodeId, BasicNode> = replicas.iter().map(|r| (r.id, r.node())).collect();
    replicas[0].raft.initialize(members).await.expect("initialize");
    let leader = replicas[0]
        .raft
        .wait(Some(WAIT))
        .metrics(|m| m.current_leader.is_some(), "a leader is elected")
        .await
        .expect("leader within 10 s")
        .current_leader
        .expect("leader");
    for r in replicas {
        r.raft
            .wait(Some(WAIT))
            .metrics(|m| m.current_leader == Some(leader), "every node knows the leader")
            .await
            .expect("all nodes agree on the leader");
    }
    let holder = replicas.iter().find(|r| r.id == leader).expect("leader is one of them");
    holder
        .raft
        .wait(Some(WAIT))
        .metrics(|m| m.last_quorum_acked.is_some(), "leader holds a lease")
        .await
        .expect("quorum acks within 10 s");
    leader
}
