//! Partition Raft groups replicating over the tonic transport: separate stores, separate gRPC
//! servers on loopback ports chosen at run time, one partition, real elections.
//!
//! Every wait is bounded (openraft's `Wait` with a timeout) and every node is shut down, server
//! included, at the end of each test.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use openraft::alias::SnapshotMetaOf;
use openraft::async_runtime::watch::WatchReceiver;
use openraft::Config;
use ringchat_cluster::codec::decode;
use ringchat_cluster::partition::tables;
use ringchat_cluster::rpc::client::SNAPSHOT_CHUNK_BYTES;
use ringchat_cluster::rpc::proto::raft_service_client::RaftServiceClient;
use ringchat_cluster::rpc::proto::snapshot_chunk::Part;
use ringchat_cluster::rpc::proto::{RaftReply, RaftRequest, SnapshotChunk, SnapshotHeader};
use ringchat_cluster::rpc::{
    ClusterSecret, GroupRegistry, Method, PeerChannels, RaftRpcService, SECRET_METADATA_KEY, WIRE_LEVEL,
};
use ringchat_cluster::{Command, NodeId, TypeConfig, UserRecord};

use crate::common::{elect, raft_config, Replica, SECRET, WAIT};

const PARTITION: u16 = 3;

/// A replica serving only the Raft transport, with the dir where it stages incoming snapshots.
struct TestNode {
    replica: Replica,
    incoming_dir: PathBuf,
}

impl std::ops::Deref for TestNode {
    type Target = Replica;
    fn deref(&self) -> &Replica {
        &self.replica
    }
}

fn config() -> Arc<Config> {
    raft_config("ringchat-test", |c| {
        c.install_snapshot_timeout = 5_000;
        // No log kept behind a snapshot, so a purge leaves a new learner no choice but
        // InstallSnapshot.
        c.max_in_snapshot_log_to_keep = 0;
    })
}

impl TestNode {
    async fn start(id: NodeId) -> TestNode {
        Self::start_at(id, "127.0.0.1:0").await
    }

    /// A node whose server listens on `addr` (a port of 0: chosen by the kernel).
    async fn start_at(id: NodeId, addr: &str) -> TestNode {
        let mut incoming_dir = PathBuf::new();
        let replica = Replica::start(id, PARTITION, addr, config(), |raft, _, dir| {
            let registry = GroupRegistry::new();
            registry.insert(PARTITION, raft.clone());
            incoming_dir = dir.join("incoming");
            RaftRpcService::new(Arc::new(registry), incoming_dir.clone()).into()
        })
        .await;
        TestNode { replica, incoming_dir }
    }

    fn user(&self, user_id: &str) -> Option<UserRecord> {
        let bytes = self.store.sm.get(tables::user(PARTITION, user_id)).expect("read sm")?;
        Some(decode(&bytes).expect("decode user"))
    }

    async fn stop(self) {
        self.replica.stop().await;
    }
}

fn ensure_user(n: u64) -> Command {
    ensure_user_padded(n, 0)
}

/// A user whose name is padded by `pad` bytes, to make snapshots span several chunks.
fn ensure_user_padded(n: u64, pad: usize) -> Command {
    Command::EnsureUser {
        user: UserRecord {
            user_id: format!("u_{n}"),
            username: format!("user{n}{}", "x".repeat(pad)),
            created_ms: 1_700_000_000_000 + n,
            last_seen: None,
        },
    }
}

/// Starts nodes 1..=3, initializes them as voters and returns them with the leader's id.
async fn three_voters() -> (Vec<TestNode>, NodeId) {
    let mut nodes = Vec::new();
    for id in 1..=3 {
        nodes.push(TestNode::start(id).await);
    }
    let leader = elect(&nodes.iter().map(|n| &n.replica).collect::<Vec<_>>()).await;
    (nodes, leader)
}

fn leader_of(nodes: &[TestNode], leader: NodeId) -> &TestNode {
    nodes
        .iter()
        .find(|n| n.id == leader)
        .expect("leader is one of the nodes")
}

/// Waits until `node` has applied up to `index`.
async fn wait_applied(node: &TestNode, index: u64) {
    node.raft
        .wait(Some(WAIT))
        .applied_index_at_least(Some(index), "replica applies the writes")
        .await
        .expect("replica caught up within 10 s");
}

/// Waits until every node applied up to `last_index`, then checks each holds users 0..`count`.
async fn every_node_has_users(nodes: &[TestNode], last_index: u64, count: u64) {
    for node in nodes {
        wait_applied(node, last_index).await;
        for n in 0..count {
            let user = node.user(&format!("u_{n}")).expect("replica has the user");
            assert_eq!(user.username, format!("user{n}"), "node {}", node.id);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_replicate_writes_over_grpc() {
    let (nodes, leader) = three_voters().await;
    let mut last_index = 0;
    for n in 0..5 {
        let written = leader_of(&nodes, leader)
            .raft
            .client_write(ensure_user(n))
            .await
            .expect("write commits");
        last_index = written.log_id.index;
    }
    every_node_has_users(&nodes, last_index, 5).await;
    for node in nodes {
        node.stop().await;
    }
}

/// Writes one at a time: each commit moves with no entry behind it, so its commit-only request
/// is answered by the leader's replication client itself (`withheld_commits.rs`). The followers
/// must still apply every write, through the next request or a heartbeat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_apply_every_write_when_commit_only_requests_are_withheld() {
    let (nodes, leader) = three_voters().await;
    let leader_node = leader_of(&nodes, leader);
    let mut last_index = 0;
    for n in 0..20 {
        let written = leader_node
            .raft
            .client_write(ensure_user(n))
            .await
            .expect("write commits");
        last_index = written.log_id.index;
        // Let the answer to the write's own request arrive before the next write, so the
        // commit finds nothing to ride on.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        leader_node.peers.withheld_commits().total() > 0,
        "no commit-only request was withheld: the test does not test the rule"
    );
    every_node_has_users(&nodes, last_index, 20).await;
    for node in nodes {
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_the_right_secret_are_refused() {
    let node = TestNode::start(1).await;
    let mut client = RaftServiceClient::connect(format!("http://{}", node.addr))
        .await
        .expect("connect");
    let request = || RaftRequest {
        partition: u32::from(PARTITION),
        payload: b"{}".to_vec(),
    };

    let missing = client.vote(request()).await.expect_err("no secret is refused");
    assert_eq!(missing.code(), tonic::Code::Unauthenticated);

    let mut wrong = tonic::Request::new(request());
    wrong.metadata_mut().insert(
        SECRET_METADATA_KEY,
        "not-the-cluster-secret-at-all".parse().expect("ascii"),
    );
    let status = client.append_entries(wrong).await.expect_err("wrong secret is refused");
    assert_eq!(status.code(), tonic::Code::Unauthenticated);

    // With the right secret the same bytes get past authentication and fail validation
    // instead, and an unknown partition is `NotFound`: the refusals above were the secret's.
    let secret = ClusterSecret::new(SECRET).expect("secret");
    let mut right = tonic::Request::new(request());
    secret.attach(&mut right);
    let status = client.vote(right).await.expect_err("empty object is not a vote");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    let mut elsewhere = tonic::Request::new(RaftRequest {
        partition: 999,
        payload: b"{}".to_vec(),
    });
    secret.attach(&mut elsewhere);
    let status = client.vote(elsewhere).await.expect_err("partition not hosted");
    assert_eq!(status.code(), tonic::Code::NotFound);

    drop(client);
    node.stop().await;
}

/// Sends `count` Vote calls at once over `peers`' pipe to `addr`, for partitions
/// `1000..1000 + count` (hosted nowhere), and returns their outcomes in call order.
async fn votes_for_unknown_partitions(
    peers: &PeerChannels,
    addr: &str,
    count: u32,
) -> Vec<Result<RaftReply, tonic::Status>> {
    let pipe = peers.pipe(addr).expect("pipe");
    let calls = (0..count).map(|i| {
        let pipe = pipe.clone();
        async move {
            let request = RaftRequest {
                partition: 1000 + i,
                payload: b"{}".to_vec(),
            };
            pipe.call(Method::Vote, &request, WAIT).await
        }
    });
    futures_util::future::join_all(calls).await
}

// One thread: the pipe's sender then drains the queue only when the test's task yields, so
// whether calls share batches does not depend on how the machine schedules two workers (with
// two workers under a busy CI machine the sender once raced every call: 500 batches).
#[tokio::test(flavor = "current_thread")]
async fn pipe_answers_concurrent_calls_in_batches_and_reopens_after_the_peer_restarts() {
    let node = TestNode::start(1).await;
    let addr = node.addr.clone();
    let peers = PeerChannels::new(ClusterSecret::new(SECRET).expect("secret"));
    assert!(
        !peers.peer_reads(&addr, WIRE_LEVEL),
        "nothing is known of a peer before its pipe opened"
    );

    // Every call gets its own answer: the partition named in each status is the call's own.
    let outcomes = votes_for_unknown_partitions(&peers, &addr, 500).await;
    for (i, outcome) in outcomes.iter().enumerate() {
        let status = outcome.as_ref().expect_err("partition not hosted");
        assert_eq!(status.code(), tonic::Code::NotFound, "call {i}: {status:?}");
        assert!(
            status.message().contains(&format!("partition {}", 1000 + i)),
            "call {i} got another call's answer: {}",
            status.message()
        );
    }
    let (batches, calls) = peers.pipe(&addr).expect("pipe").sent();
    // The peer's stream announced what it can read (packed log entries need level 2).
    assert!(peers.peer_reads(&addr, WIRE_LEVEL));
    assert!(!peers.peer_reads(&addr, WIRE_LEVEL + 1));
    assert_eq!(calls, 500);
    assert!(batches < calls, "500 concurrent calls went out in {batches} batches");

    // The server stops within its bound although our pipe is open, and calls then fail as
    // unreachable instead of waiting for their timeout.
    node.stop().await;
    let down = votes_for_unknown_partitions(&peers, &addr, 1).await;
    assert_eq!(
        down[0].as_ref().expect_err("peer is down").code(),
        tonic::Code::Unavailable
    );

    // A node back on the same address is reached through the same pipe.
    let node = TestNode::start_at(1, &addr).await;
    let again = votes_for_unknown_partitions(&peers, &addr, 3).await;
    for outcome in &again {
        assert_eq!(outcome.as_ref().expect_err("not hosted").code(), tonic::Code::NotFound);
    }

    // A pipe opened with another secret gets nothing but `Unauthenticated`.
    let stranger = PeerChannels::new(ClusterSecret::new("another-cluster-secret-9876").expect("secret"));
    let refused = votes_for_unknown_partitions(&stranger, &addr, 2).await;
    for outcome in &refused {
        assert_eq!(
            outcome.as_ref().expect_err("refused").code(),
            tonic::Code::Unauthenticated
        );
    }
    node.stop().await;
}

/// Writes 20 users of ~40 KiB through the leader (an ~800 KiB snapshot, streamed as several
/// 256 KiB chunks), waits until every node applied them, then snapshots the leader and purges
/// its log, so a new learner can only catch up through InstallSnapshot. Returns the last index.
async fn snapshot_and_purge(nodes: &[TestNode], leader: NodeId) -> u64 {
    let mut last_index = 0;
    for n in 0..20 {
        let written = leader_of(nodes, leader)
            .raft
            .client_write(ensure_user_padded(n, 40 * 1024))
            .await
            .expect("write commits");
        last_index = written.log_id.index;
    }
    for node in nodes {
        wait_applied(node, last_index).await;
    }
    let leader_raft = &leader_of(nodes, leader).raft;
    leader_raft.trigger().snapshot().await.expect("trigger snapshot");
    leader_raft
        .wait(Some(WAIT))
        .metrics(
            |m| m.snapshot.is_some_and(|s| s.index >= last_index),
            "leader built a snapshot of every write",
        )
        .await
        .expect("snapshot within 10 s");
    leader_raft
        .trigger()
        .purge_log(last_index)
        .await
        .expect("trigger purge");
    leader_raft
        .wait(Some(WAIT))
        .metrics(
            |m| m.purged.is_some_and(|p| p.index >= last_index),
            "leader purged the log the snapshot covers",
        )
        .await
        .expect("purge within 10 s");
    last_index
}

/// Adds node 4 as a learner and waits until it installed a snapshot of `last_index` and
/// holds every user written by `snapshot_and_purge`.
async fn add_learner_from_snapshot(leader_raft: &ringchat_cluster::types::PartitionRaft, last_index: u64) -> TestNode {
    let learner = TestNode::start(4).await;
    leader_raft
        .add_learner(learner.id, learner.node(), true)
        .await
        .expect("learner added and caught up");
    let metrics = learner
        .raft
        .wait(Some(WAIT))
        .metrics(
            |m| m.snapshot.is_some_and(|s| s.index >= last_index),
            "learner installed the leader's snapshot",
        )
        .await
        .expect("snapshot installed within 10 s");
    assert!(
        metrics.last_applied.is_some_and(|a| a.index >= last_index),
        "learner applied up to the snapshot"
    );
    for n in 0..20 {
        let user = learner.user(&format!("u_{n}")).expect("learner has the user");
        assert_eq!(user.username.len(), format!("user{n}").len() + 40 * 1024);
    }
    learner
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_learner_catches_up_through_install_snapshot() {
    let (mut nodes, leader) = three_voters().await;
    let last_index = snapshot_and_purge(&nodes, leader).await;
    let leader_raft = leader_of(&nodes, leader).raft.clone();
    let learner = add_learner_from_snapshot(&leader_raft, last_index).await;
    let installed: u64 = std::fs::read_dir(learner.dir.path().join("snapshots"))
        .expect("learner snapshot dir")
        .map(|e| e.expect("dir entry").metadata().expect("metadata").len())
        .sum();
    assert!(
        installed > 2 * SNAPSHOT_CHUNK_BYTES as u64,
        "the snapshot spans several chunks ({installed} bytes)"
    );
    // The learner follows new writes through AppendEntries after the snapshot.
    let written = leader_raft.client_write(ensure_user(100)).await.expect("write commits");
    wait_applied(&learner, written.log_id.index).await;
    assert!(learner.user("u_100").is_some());

    // The staged file goes once the install RPC returns (shortly after metrics show the
    // snapshot): poll, bounded.
    let staged_files = || -> BTreeSet<_> {
        std::fs::read_dir(&learner.incoming_dir)
            .expect("incoming dir exists after a transfer")
            .map(|e| e.expect("dir entry").file_name())
            .collect()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !staged_files().is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let staged = staged_files();
    assert!(staged.is_empty(), "staged snapshot files are removed: {staged:?}");

    nodes.push(learner);
    for node in nodes {
        node.stop().await;
    }
}

/// A leader whose snapshot file was damaged on disk builds a new one from its state machine
/// before sending, so the learner gets intact data and the group keeps running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_snapshot_file_is_rebuilt_before_a_learner_gets_it() {
    let (mut nodes, leader) = three_voters().await;
    let last_index = snapshot_and_purge(&nodes, leader).await;
    let snapshots = leader_of(&nodes, leader).dir.path().join("snapshots");
    let files: Vec<_> = std::fs::read_dir(&snapshots)
        .expect("leader snapshot dir")
        .map(|e| e.expect("dir entry").path())
        .collect();
    assert_eq!(files.len(), 1, "one snapshot file: {files:?}");
    let mut bytes = std::fs::read(&files[0]).expect("read snapshot");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x20;
    std::fs::write(&files[0], &bytes).expect("damage snapshot");
    assert!(ringchat_cluster::partition::verify_snapshot(&files[0]).is_err());

    let leader_raft = leader_of(&nodes, leader).raft.clone();
    let learner = add_learner_from_snapshot(&leader_raft, last_index).await;
    let rebuilt: Vec<_> = std::fs::read_dir(&snapshots)
        .expect("leader snapshot dir")
        .map(|e| e.expect("dir entry").path())
        .collect();
    assert_eq!(rebuilt.len(), 1, "one snapshot file after the rebuild: {rebuilt:?}");
    ringchat_cluster::partition::verify_snapshot(&rebuilt[0]).expect("the leader's snapshot is intact again");
    let written = leader_raft
        .client_write(ensure_user(100))
        .await
        .expect("the group still commits");
    wait_applied(&learner, written.log_id.index).await;

    nodes.push(learner);
    for node in nodes {
        node.stop().await;
    }
}

/// A snapshot stream whose bytes do not match its checksum is refused before the group sees
/// it (handed to the group, the failed install would stop it), with a code the sender retries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_stream_with_a_wrong_checksum_is_refused() {
    let node = TestNode::start(1).await;
    let mut file = b"RCSNAP2\n".to_vec();
    file.extend_from_slice(&u32::MAX.to_be_bytes());
    file.extend_from_slice(&[0u8; 8]);
    let status = send_snapshot_stream(&node, file.len() as u64, file)
        .await
        .expect_err("refused");
    assert_eq!(status.code(), tonic::Code::DataLoss, "{status:?}");
    assert!(
        node.raft.metrics().borrow_watched().snapshot.is_none(),
        "nothing installed"
    );
    let running = node.raft.client_write(ensure_user(1)).await;
    assert!(
        !matches!(running, Err(openraft::error::RaftError::Fatal(_))),
        "the group still runs: {running:?}"
    );
    node.stop().await;
}

/// Sends a snapshot stream of `data` to `node`'s partition whose header declares `size` bytes.
async fn send_snapshot_stream(node: &TestNode, size: u64, data: Vec<u8>) -> Result<(), tonic::Status> {
    let mut client = RaftServiceClient::connect(format!("http://{}", node.addr))
        .await
        .expect("connect");
    let vote = node.raft.metrics().borrow_watched().vote;
    let header = SnapshotHeader {
        partition: u32::from(PARTITION),
        vote: ringchat_cluster::codec::encode(&vote),
        meta: ringchat_cluster::codec::encode(&SnapshotMetaOf::<TypeConfig>::default()),
        size,
    };
    let messages = vec![
        SnapshotChunk {
            part: Some(Part::Header(header)),
        },
        SnapshotChunk {
            part: Some(Part::Data(data)),
        },
    ];
    let mut request = tonic::Request::new(futures_util::stream::iter(messages));
    ClusterSecret::new(SECRET).expect("secret").attach(&mut request);
    client.install_snapshot(request).await.map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_snapshot_stream_is_refused_and_leaves_no_file() {
    let node = TestNode::start(1).await;
    let status = send_snapshot_stream(&node, 1000, vec![0u8; 100])
        .await
        .expect_err("100 of 1000 bytes is refused");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    let left: Vec<_> = std::fs::read_dir(&node.incoming_dir)
        .map(|dir| dir.map(|e| e.expect("dir entry").file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "staged file removed: {left:?}");
    assert!(
        node.raft.metrics().borrow_watched().snapshot.is_none(),
        "nothing installed"
    );
    node.stop().await;
}
