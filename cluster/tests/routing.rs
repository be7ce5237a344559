//! Routing writes and reads to a partition's leader: three nodes with their own stores and
//! gRPC servers (Raft and node services) on loopback, one partition replicated on all three,
//! and a router on each; plus a "gateway" router that hosts nothing and knows the replicas only
//! from hints, and a single-node `Cluster` that must route everything locally.
//!
//! Every wait is bounded and every server is stopped at the end of each test.

use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::async_runtime::watch::WatchReceiver;
use ringchat_cluster::query::{self, Query, QueryResult};
use ringchat_cluster::rpc::{ClusterSecret, NodeRpcService, NodeServices, PeerChannels, RaftRpcService};
use ringchat_cluster::{Cluster, ClusterError, Command, HostedPartitions, NodeId, Response, RetryPolicy, Router};
use ringchat_storage::Store;
use tokio::net::TcpListener;

use crate::common::{elect, group, raft_config, single_node_config, user, Replica, SECRET, WAIT};

const PARTITION: u16 = 5;

/// A replica serving both RPC services (Raft and forwarded writes/reads), with its own router.
struct TestNode {
    replica: Replica,
    hosted: HostedPartitions,
    router: Router,
}

impl std::ops::Deref for TestNode {
    type Target = Replica;
    fn deref(&self) -> &Replica {
        &self.replica
    }
}

fn peers() -> PeerChannels {
    PeerChannels::new(ClusterSecret::new(SECRET).expect("secret"))
}

impl TestNode {
    async fn start(id: NodeId) -> TestNode {
        let mut hosted = None;
        let config = raft_config("ringchat-routing-test", |_| {});
        let replica = Replica::start(id, PARTITION, "127.0.0.1:0", config, |raft, store, dir| {
            let h = HostedPartitions::new(store.clone());
            h.groups().insert(PARTITION, raft.clone());
            hosted = Some(h.clone());
            NodeServices::new(
                RaftRpcService::new(Arc::new(h.clone()), dir.join("incoming")),
                NodeRpcService::new(Arc::new(h)),
            )
        })
        .await;
        let router = Router::new(id);
        router.set_peers(replica.peers.clone());
        TestNode {
            replica,
            hosted: hosted.expect("services built"),
            router,
        }
    }

    async fn write(&self, cmd: Command) -> Result<Response, ClusterError> {
        self.router.write(&self.hosted, PARTITION, &cmd).await
    }

    async fn read(&self, query: Query) -> Result<QueryResult, ClusterError> {
        self.router.read(&self.hosted, PARTITION, &query).await
    }

    async fn stop(self) {
        self.replica.stop().await;
    }
}

/// Starts nodes 1..=3 as voters of the partition and waits for a leader that holds its lease.
async fn three_voters() -> (Vec<TestNode>, NodeId) {
    let mut nodes = Vec::new();
    for id in 1..=3 {
        nodes.push(TestNode::start(id).await);
    }
    let leader = elect(&nodes.iter().map(|n| &n.replica).collect::<Vec<_>>()).await;
    (nodes, leader)
}

fn create_group(id: &str) -> Command {
    Command::CreateChannel {
        channel: group(id),
        max_members: 10,
    }
}

fn index_of(nodes: &[TestNode], id: NodeId) -> usize {
    nodes.iter().position(|n| n.id == id).expect("node is in the test")
}

async fn stop_all(nodes: Vec<TestNode>) {
    for node in nodes {
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_through_a_follower_lands_at_the_leader_and_returns_its_response() {
    let (nodes, leader) = three_voters().await;
    let follower = nodes.iter().find(|n| n.id != leader).expect("a follower");

    let first = follower
        .write(create_group("g_routed"))
        .await
        .expect("forwarded write commits");
    match first {
        Response::Channel { channel, changed } => {
            assert!(changed, "the first create changes the state");
            assert_eq!(channel, group("g_routed"));
        }
        other => panic!("expected the leader's Channel response, got {other:?}"),
    }
    assert_eq!(
        follower.router.cached_leader(PARTITION).map(|(id, _)| id),
        Some(leader),
        "the router remembers the leader it reached"
    );

    // The leader decided it: a second create through the other follower sees it as existing.
    let other = nodes
        .iter()
        .find(|n| n.id != leader && n.id != follower.id)
        .expect("another follower");
    match other.write(create_group("g_routed")).await.expect("second write") {
        Response::Channel { changed, .. } => assert!(!changed, "already created at the leader"),
        response => panic!("expected Channel, got {response:?}"),
    }
    let at_leader = query::execute(
        &nodes[index_of(&nodes, leader)].store,
        PARTITION,
        &Query::Channel {
            channel_id: "g_routed".into(),
        },
    )
    .expect("leader store read");
    assert_eq!(at_leader, QueryResult::Channel(Some(group("g_routed"))));

    // A rule violation decided by the leader comes back as data, not as a transport error.
    let too_big = Command::CreateChannel {
        channel: group("g_too_big"),
        max_members: 1,
    };
    assert!(matches!(
        follower.write(too_big).await.expect("answered"),
        Response::Rejected(_)
    ));

    stop_all(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_through_a_follower_returns_the_leaders_data() {
    let (nodes, leader) = three_voters().await;
    let leader_node = &nodes[index_of(&nodes, leader)];
    for n in 0..3 {
        leader_node
            .write(Command::EnsureUser { user: user(n) })
            .await
            .expect("write at the leader");
    }
    let follower = nodes.iter().find(|n| n.id != leader).expect("a follower");
    for n in 0..3 {
        let answer = follower
            .read(Query::User {
                user_id: format!("u_{n}"),
            })
            .await
            .expect("forwarded read");
        assert_eq!(answer, QueryResult::User(Some(user(n))));
    }
    assert_eq!(follower.router.cached_leader(PARTITION).map(|(id, _)| id), Some(leader));

    // Rough cost of the leader's lease check: lease-confirmed reads through the router against
    // plain store reads, on the leader itself (printed; asserted only loosely).
    let query = Query::User { user_id: "u_1".into() };
    let rounds = 200;
    let started = Instant::now();
    for _ in 0..rounds {
        query::execute(&leader_node.store, PARTITION, &query).expect("plain read");
    }
    let plain = started.elapsed() / rounds;
    let started = Instant::now();
    for _ in 0..rounds {
        leader_node.read(query.clone()).await.expect("lease read");
    }
    let leased = started.elapsed() / rounds;
    let started = Instant::now();
    for _ in 0..rounds {
        follower.read(query.clone()).await.expect("forwarded read");
    }
    let forwarded = started.elapsed() / rounds;
    eprintln!("read cost per call: store {plain:?}, leader with lease check {leased:?}, forwarded {forwarded:?}");
    assert!(
        leased < Duration::from_millis(20),
        "a lease read needs no network round"
    );

    stop_all(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_without_the_partition_finds_the_leader_from_replica_hints() {
    let (nodes, leader) = three_voters().await;
    let gateway_store_dir = tempfile::tempdir().expect("tempdir");
    let gateway_local = HostedPartitions::new(Store::open(gateway_store_dir.path()).expect("store"));
    let gateway = Router::new(9);
    gateway.set_peers(peers());
    // Hints list the replicas in an order that starts at a follower, so the gateway must follow
    // a "not leader" answer's hint.
    let mut replicas: Vec<(NodeId, String)> = nodes.iter().map(|n| (n.id, n.addr.clone())).collect();
    replicas.sort_by_key(|(id, _)| *id == leader);
    gateway.set_replica_hints(Arc::new(move |_p| replicas.clone()));

    let written = gateway
        .write(&gateway_local, PARTITION, &Command::EnsureUser { user: user(42) })
        .await
        .expect("write via hints");
    assert!(matches!(written, Response::Done));
    let read = gateway
        .read(&gateway_local, PARTITION, &Query::User { user_id: "u_42".into() })
        .await
        .expect("read via hints");
    assert_eq!(read, QueryResult::User(Some(user(42))));
    assert_eq!(gateway.cached_leader(PARTITION).map(|(id, _)| id), Some(leader));

    stop_all(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_through_a_survivor_succeeds_after_the_leader_stops() {
    let (mut nodes, leader) = three_voters().await;
    let survivor_id = nodes.iter().find(|n| n.id != leader).expect("a follower").id;
    // Warm the survivor's cache with the old leader, so the retry path must notice it is gone.
    nodes[index_of(&nodes, survivor_id)]
        .write(Command::EnsureUser { user: user(1) })
        .await
        .expect("write before failover");

    let old = nodes.remove(index_of(&nodes, leader));
    old.stop().await;

    let survivor = &nodes[index_of(&nodes, survivor_id)];
    let started = Instant::now();
    let response = survivor
        .write(Command::EnsureUser { user: user(2) })
        .await
        .expect("write lands after re-election");
    let took = started.elapsed();
    assert!(matches!(response, Response::Done));
    assert!(took < Duration::from_secs(5), "within the retry bound: {took:?}");
    eprintln!("write during failover took {took:?}");

    let new_leader = survivor.router.cached_leader(PARTITION).map(|(id, _)| id);
    let local_leader = survivor.raft.metrics().borrow_watched().current_leader;
    assert_ne!(local_leader, Some(leader), "a new leader was elected");
    assert!(new_leader.is_none() || new_leader != Some(leader));
    for node in &nodes {
        let answer = node
            .read(Query::User { user_id: "u_2".into() })
            .await
            .expect("read after failover");
        assert_eq!(answer, QueryResult::User(Some(user(2))), "node {}", node.id);
    }

    stop_all(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_reachable_leader_is_unavailable_within_the_bound() {
    let (mut nodes, leader) = three_voters().await;
    let bound = Duration::from_millis(1500);
    let survivor_id = nodes.iter().find(|n| n.id != leader).expect("a follower").id;
    // Stop everyone but one follower: it can neither reach the old leader nor win an election.
    for id in nodes
        .iter()
        .map(|n| n.id)
        .filter(|id| *id != survivor_id)
        .collect::<Vec<_>>()
    {
        let node = nodes.remove(index_of(&nodes, id));
        node.stop().await;
    }
    let survivor = nodes.pop().expect("survivor");
    let router = Router::new(survivor.id).with_retry_policy(RetryPolicy {
        max_wait: bound,
        ..RetryPolicy::default()
    });
    router.set_peers(peers());

    let started = Instant::now();
    let write = router
        .write(&survivor.hosted, PARTITION, &Command::EnsureUser { user: user(3) })
        .await;
    let took = started.elapsed();
    assert!(matches!(write, Err(ClusterError::Unavailable(_))), "{write:?}");
    assert!(took >= bound.mul_f32(0.8), "retried until the bound: {took:?}");
    assert!(took < bound + Duration::from_secs(1), "gave up at the bound: {took:?}");

    let started = Instant::now();
    let read = router
        .read(&survivor.hosted, PARTITION, &Query::User { user_id: "u_3".into() })
        .await;
    assert!(matches!(read, Err(ClusterError::Unavailable(_))), "{read:?}");
    assert!(started.elapsed() < bound + Duration::from_secs(1));

    // A gateway whose hints name only dead or absent nodes gives up within its bound too.
    let gateway_dir = tempfile::tempdir().expect("tempdir");
    let gateway_local = HostedPartitions::new(Store::open(gateway_dir.path()).expect("store"));
    let gateway = Router::new(9).with_retry_policy(RetryPolicy {
        max_wait: bound,
        ..RetryPolicy::default()
    });
    gateway.set_peers(peers());
    let dead = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let dead_addr = dead.local_addr().expect("addr").to_string();
    drop(dead);
    gateway.set_replica_hints(Arc::new(move |_p| vec![(1, dead_addr.clone())]));
    let started = Instant::now();
    let write = gateway
        .write(&gateway_local, PARTITION, &Command::EnsureUser { user: user(4) })
        .await;
    assert!(matches!(write, Err(ClusterError::Unavailable(_))), "{write:?}");
    assert!(started.elapsed() < bound + Duration::from_secs(1));

    survivor.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_node_cluster_without_peers_routes_everything_locally() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = Cluster::open(&single_node_config(dir.path(), 4, 10_000))
        .await
        .expect("open single node");
    assert!(cluster.wait_ready(WAIT).await, "every partition led locally");

    cluster
        .write("u_7", Command::EnsureUser { user: user(7) })
        .await
        .expect("local write");
    assert_eq!(cluster.get_user("u_7").await.expect("read"), Some(user(7)));
    assert_eq!(cluster.get_user("u_nobody").await.expect("read"), None);
    let channel = group("g_local");
    cluster
        .write(
            "g_local",
            Command::CreateChannel {
                channel: channel.clone(),
                max_members: 10,
            },
        )
        .await
        .expect("create channel");
    assert_eq!(cluster.get_channel("g_local").await.expect("read"), Some(channel));
    assert!(cluster
        .get_messages("g_local", 1, 10)
        .await
        .expect("no messages")
        .is_empty());
    assert!(cluster
        .get_messages("g_local", 0, u64::MAX)
        .await
        .expect("whole range")
        .is_empty());
    assert_eq!(cluster.get_read_marker("g_local", "u_1").await.expect("marker"), 0);
    assert!(cluster.pending_pushes().await.expect("outbox").is_empty());
    let too_big = Command::CreateChannel {
        channel: group("g_too_big"),
        max_members: 1,
    };
    assert!(matches!(
        cluster.write("g_too_big", too_big).await,
        Err(ClusterError::Rejected(_))
    ));
    tokio::time::timeout(WAIT, cluster.shutdown())
        .await
        .expect("cluster shuts down within 10 s");
}
