//! Test harness: start ringchat nodes on 127.0.0.1 with ports chosen at run time, either
//! in-process (fast, inspectable) or as real `ringchat` processes (for kill -9 and SIGTERM),
//! and make users through the client SDK. Every wait is bounded; every process is stopped on
//! drop.

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ringchat_client::HttpClient;
use ringchat_node::{App, Config, RunningApp};

pub mod faultfs;
pub mod jepsen;
pub mod netns;

/// A free loopback port for a node to bind right after: random, below the kernel's ephemeral
/// range (a port the kernel hands out, as `bind(0)` does, can be taken by any outgoing
/// connection of a parallel test before the node binds it; that made a node exit at start-up
/// once in CI), never handed out twice in this process, and bindable right now.
pub fn free_port() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (low, span) = if ephemeral_low > 12_000 {
        (10_000u16, ephemeral_low - 10_000)
    } else {
        (61_000, 4_000)
    };
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|p| p.into_inner());
    for _ in 0..200 {
        let random = std::collections::hash_map::RandomState::new().build_hasher().finish();
        let port = low + (random % u64::from(span)) as u16;
        if handed_out.contains(&port) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            handed_out.push(port);
            return port;
        }
    }
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Sends per second per user (and sign-ups per minute per address) in test nodes: the
/// workloads send as fast as a node commits and sign up many users from 127.0.0.1; the tests
/// of the limits themselves set their own (`hardening.rs`, `websocket.rs`).
pub const TEST_SEND_RATE: u32 = 100_000;

/// A node configuration for tests: fresh ports, small partition count, given data dir, send
/// limit out of the way (`TEST_SEND_RATE`).
pub fn test_config(data_dir: &Path) -> Config {
    Config {
        data_dir: data_dir.to_path_buf(),
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        cluster_listen: SocketAddr::from(([127, 0, 0, 1], free_port())),
        partitions: 8,
        send_rate: TEST_SEND_RATE,
        send_burst: TEST_SEND_RATE,
        signups_per_minute: TEST_SEND_RATE,
        ..Config::default()
    }
}

/// A node running inside the test process.
pub struct InProcessNode {
    /// The running app (stop it with `stop`).
    pub app: RunningApp,
    /// `http://127.0.0.1:port`.
    pub base: String,
    /// Keeps a temporary data dir alive.
    pub _dir: Option<tempfile::TempDir>,
}

impl InProcessNode {
    /// Starts a node on a new temporary data dir, after `tweak` adjusts the config.
    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> InProcessNode {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cfg = test_config(dir.path());
        tweak(&mut cfg);
        let app = App::start(cfg).await.expect("node starts");
        let base = format!("http://{}", app.addr);
        InProcessNode {
            app,
            base,
            _dir: Some(dir),
        }
    }

    /// Starts a node with the test defaults.
    pub async fn start() -> InProcessNode {
        Self::start_with(|_| {}).await
    }

    /// An unauthenticated HTTP client for this node.
    pub fn http(&self) -> HttpClient {
        HttpClient::new(&self.base)
    }

    /// Graceful stop.
    pub async fn stop(self) {
        self.app.stop().await;
    }
}

/// The `ringchat` binary built by this workspace (`target/<profile>/ringchat`).
pub fn ringchat_bin() -> PathBuf {
    if let Ok(p) = std::env::var("RINGCHAT_BIN") {
        return PathBuf::from(p);
    }
    // Test binaries live in target/<profile>/deps/.
    let exe = std::env::current_exe().expect("current exe");
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).expect("target/<profile>");
    let bin = profile_dir.join("ringchat");
    assert!(
        bin.exists(),
        "{} not found: build it first with `cargo build -p ringchat-node` (the test command does)",
        bin.display()
    );
    bin
}

/// A real `ringchat serve` process.
pub struct NodeProcess {
    child: Option<Child>,
    /// Loopback address it listens on (both ports); 127.0.0.1 unless started with `start_at`.
    pub ip: String,
    /// `http://<ip>:port`.
    pub base: String,
    /// Data dir (kept across restarts).
    pub data_dir: PathBuf,
    /// Extra flags it was started with.
    pub extra: Vec<String>,
    /// `<ip>:port` of its node-to-node listener (kept across restarts).
    pub cluster_addr: String,
    port: u16,
}

impl NodeProcess {
    /// Starts `ringchat serve` on `data_dir` and waits (≤ 30 s) until `/readyz` is 200.
    pub async fn start(data_dir: &Path, extra: &[&str]) -> NodeProcess {
        Self::start_at("127.0.0.1", data_dir, extra).await
    }

    /// As `start`, listening on loopback address `ip` (e.g. `127.0.0.12`): its cluster
    /// connections then leave from `ip` too, so packet filters can tell nodes apart.
    pub async fn start_at(ip: &str, data_dir: &Path, extra: &[&str]) -> NodeProcess {
        let mut node = NodeProcess {
            child: None,
            ip: ip.to_string(),
            base: String::new(),
            data_dir: data_dir.to_path_buf(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            cluster_addr: format!("{ip}:{}", free_port()),
            port: free_port(),
        };
        node.spawn().await;
        node
    }

    async fn spawn(&mut self) {
        self.base = format!("http://{}:{}", self.ip, self.port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.data_dir.with_extension("log"))
            .expect("log file");
        let child = Command::new(ringchat_bin())
            .arg("serve")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--listen")
            .arg(format!("{}:{}", self.ip, self.port))
            .arg("--cluster-listen")
            .arg(&self.cluster_addr)
            .args(
                // 8 unless the test asks for another count.
                (!self.extra.iter().any(|a| a == "--partitions"))
                    .then_some(["--partitions", "8"])
                    .into_iter()
                    .flatten(),
            )
            .args([
                "--send-rate",
                &TEST_SEND_RATE.to_string(),
                "--send-burst",
                &TEST_SEND_RATE.to_string(),
            ])
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn ringchat");
        self.child = Some(child);
        let http = HttpClient::new(&self.base);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(200) = http.readyz().await {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("ringchat exited early with {status}; {}", self.log_tail(15));
            }
            assert!(
                Instant::now() < deadline,
                "node at {} not ready within 30 s; {}",
                self.base,
                self.log_tail(30)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The last `lines` lines of the node's log, for a failure message: the log lives in the
    /// test's temp dir, which is gone once the test fails.
    fn log_tail(&self, lines: usize) -> String {
        let path = self.data_dir.with_extension("log");
        let log = std::fs::read_to_string(&path).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(lines).collect();
        format!(
            "the end of {}:\n{}",
            path.display(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        )
    }

    /// An unauthenticated HTTP client for this node.
    pub fn http(&self) -> HttpClient {
        HttpClient::new(&self.base)
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then waits (≤ 15 s) for the exit status.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(s)) = c.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        let _ = c.wait();
        None
    }

    /// Starts the process again on the same data dir and port.
    pub async fn restart(&mut self) {
        self.kill9();
        self.spawn().await;
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A signed-up, logged-in user.
pub struct TestUser {
    /// Username.
    pub username: String,
    /// Id.
    pub user_id: String,
    /// Device of this login.
    pub device_id: String,
    /// Bearer token.
    pub token: String,
    /// Authenticated HTTP client.
    pub http: HttpClient,
}

/// Password every test user gets.
pub const PASSWORD: &str = "correct horse battery";

/// A unique username with `prefix`.
pub fn unique_name(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{prefix}{}_{}",
        std::process::id() % 100_000,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Signs up and logs in a new user on the node at `base`.
pub async fn new_user(base: &str, prefix: &str) -> TestUser {
    let http = HttpClient::new(base);
    let username = unique_name(prefix);
    let info = http.signup(&username, PASSWORD).await.expect("signup");
    let s = http
        .login(&username, PASSWORD, Some("test"), None)
        .await
        .expect("login");
    TestUser {
        username,
        user_id: info.user_id,
        device_id: s.device_id,
        http: http.with_token(&s.token),
        token: s.token,
    }
}

/// Logs the same user in again as a new device.
pub async fn new_device(base: &str, user: &TestUser) -> TestUser {
    let http = HttpClient::new(base);
    let s = http
        .login(&user.username, PASSWORD, Some("second"), None)
        .await
        .expect("login");
    TestUser {
        username: user.username.clone(),
        user_id: user.user_id.clone(),
        device_id: s.device_id,
        http: http.with_token(&s.token),
        token: s.token,
    }
}

/// Secret of test clusters.
pub const CLUSTER_SECRET: &str = "ringchat-test-cluster-secret";

/// Starts an `n`-node cluster of real processes under `dir`: node 1 bootstraps, the others
/// join it one after another. Returns once every node is ready (`/readyz` 200), every
/// partition has its replicas and every leadership has moved to its preferred replica, so a
/// test starts on a cluster that is not still handing leaderships over.
pub async fn start_cluster(dir: &Path, n: u64, extra: &[&str]) -> Vec<NodeProcess> {
    let mut nodes: Vec<NodeProcess> = Vec::new();
    for id in 1..=n {
        nodes.push(start_cluster_node(dir, id, nodes.first().map(|f| f.cluster_addr.as_str()), extra).await);
    }
    if n > 1 {
        let replicas = n.min(3) as usize;
        wait_for_status(&nodes[0], Duration::from_secs(60), |s| {
            settled(s, n as usize, replicas) && leaders_on_preferred_replicas(s)
        })
        .await;
    }
    nodes
}

/// A cluster with node `i + 1` listening on `ips[i]` (node 1 bootstraps, the others join it),
/// returned once settled with every leadership on its preferred replica, with that status.
pub async fn start_cluster_at(ips: &[&str], dir: &Path) -> (Vec<NodeProcess>, serde_json::Value) {
    let mut nodes: Vec<NodeProcess> = Vec::new();
    for (i, ip) in ips.iter().enumerate() {
        let join = nodes.first().map(|n| n.cluster_addr.clone());
        nodes.push(start_cluster_node_at(ip, dir, i as u64 + 1, join.as_deref(), &[]).await);
    }
    let (n, r) = (ips.len(), ips.len().min(3));
    let status = wait_for_status(&nodes[0], Duration::from_secs(60), |s| {
        settled(s, n, r) && leaders_on_preferred_replicas(s)
    })
    .await;
    (nodes, status)
}

/// True when every partition is led by its preferred replica (the first one listed).
pub fn leaders_on_preferred_replicas(s: &serde_json::Value) -> bool {
    s["partitions"].as_array().is_some_and(|ps| {
        ps.iter()
            .all(|p| p["leader"].as_u64().is_some() && p["leader"] == p["replicas"][0])
    })
}

/// Starts node `id` of a test cluster, joining `join` if given.
pub async fn start_cluster_node(dir: &Path, id: u64, join: Option<&str>, extra: &[&str]) -> NodeProcess {
    start_cluster_node_at("127.0.0.1", dir, id, join, extra).await
}

/// As `start_cluster_node`, listening on loopback address `ip`.
pub async fn start_cluster_node_at(ip: &str, dir: &Path, id: u64, join: Option<&str>, extra: &[&str]) -> NodeProcess {
    let node_id = id.to_string();
    let mut args = vec!["--node-id", node_id.as_str(), "--cluster-secret", CLUSTER_SECRET];
    if let Some(j) = join {
        args.push("--join");
        args.push(j);
    }
    args.extend_from_slice(extra);
    NodeProcess::start_at(ip, &dir.join(format!("n{id}")), &args).await
}

/// Data partitions (ids below the meta group's) with any key in the fjall database under
/// `data_dir`: log, Raft state or state machine. The node must be stopped (fjall locks it).
pub fn partitions_stored(data_dir: &Path) -> BTreeSet<u16> {
    key_prefixes_stored(data_dir)
        .into_iter()
        .filter(|p| *p < ringchat_cluster::meta::model::FIRST_SET_GROUP)
        .collect()
}

/// The groups named by replica sets that a stopped node's data dir holds any key of.
pub fn set_groups_stored(data_dir: &Path) -> BTreeSet<u16> {
    key_prefixes_stored(data_dir)
        .into_iter()
        .filter(|p| *p >= ringchat_cluster::meta::model::FIRST_SET_GROUP)
        .collect()
}

/// Every 2-byte key prefix (partition or group id) below the meta group's in a stopped
/// node's data dir.
fn key_prefixes_stored(data_dir: &Path) -> BTreeSet<u16> {
    let store = ringchat_storage::Store::open(data_dir).expect("open a stopped node's store");
    let mut found = BTreeSet::new();
    for keyspace in [&store.log, &store.raft, &store.sm] {
        for item in keyspace.iter() {
            let key = item.key().expect("read key");
            if key.len() >= 2 {
                let p = u16::from_be_bytes([key[0], key[1]]);
                if p < ringchat_cluster::meta::META_PARTITION {
                    found.insert(p);
                }
            }
        }
    }
    found
}

/// How many data groups each of nodes 1..=`nodes` should run: one per distinct replica set
/// and first replica (the preferred leader) of the partitions in `status` that includes it.
pub fn groups_expected(status: &serde_json::Value, nodes: u64) -> Vec<u64> {
    let keys: BTreeSet<(u64, BTreeSet<u64>)> = status["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let replicas: Vec<u64> = p["replicas"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n.as_u64().unwrap())
                .collect();
            (replicas[0], replicas.into_iter().collect())
        })
        .collect();
    (1..=nodes)
        .map(|id| keys.iter().filter(|(_, set)| set.contains(&id)).count() as u64)
        .collect()
}

/// The `--cluster-tls-*` flags (with their values) `node` was started with: the operator
/// commands present the same certificate.
pub fn cluster_tls_flags(node: &NodeProcess) -> Vec<String> {
    node.extra
        .windows(2)
        .filter(|w| w[0].starts_with("--cluster-tls-"))
        .flat_map(|w| w.iter().cloned())
        .collect()
}

/// `ringchat cluster status --json` against `node`, parsed.
pub fn cluster_status(node: &NodeProcess) -> anyhow::Result<serde_json::Value> {
    let out = Command::new(ringchat_bin())
        .args(["cluster", "status", "--json", "--node", &node.cluster_addr])
        .args(cluster_tls_flags(node))
        .env("RINGCHAT_CLUSTER_SECRET", CLUSTER_SECRET)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "cluster status failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// `ringchat cluster remove <id>` via `node`, waiting (≤ 90 s) until it is drained and dead;
/// panics with the CLI's error output if it fails.
pub fn remove_node(node: &NodeProcess, id: u64) {
    let out = Command::new(ringchat_bin())
        .args([
            "cluster",
            "remove",
            &id.to_string(),
            "--node",
            &node.cluster_addr,
            "--wait-secs",
            "90",
        ])
        .args(cluster_tls_flags(node))
        .env("RINGCHAT_CLUSTER_SECRET", CLUSTER_SECRET)
        .output()
        .expect("run ringchat cluster remove");
    assert!(
        out.status.success(),
        "cluster remove {id} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Member `id` of a cluster status JSON (`Null` if it is not listed).
pub fn member(s: &serde_json::Value, id: u64) -> serde_json::Value {
    s["members"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["node_id"] == id))
        .cloned()
        .unwrap_or_default()
}

/// True when `s` (cluster status JSON) shows `members` active members, every partition with
/// `replicas` distinct replicas, one of which leads, and no partition still to move (its
/// committed replicas are its target placement: the rebalance is over, not between moves).
pub fn settled(s: &serde_json::Value, members: usize, replicas: usize) -> bool {
    use serde_json::Value;
    let active = s["members"]
        .as_array()
        .is_some_and(|m| m.len() == members && m.iter().all(|m| m["state"] == "active"));
    let placed = s["partitions"].as_array().is_some_and(|ps| {
        !ps.is_empty()
            && ps.iter().all(|p| {
                let set: std::collections::BTreeSet<u64> = p["replicas"]
                    .as_array()
                    .map(|r| r.iter().filter_map(Value::as_u64).collect())
                    .unwrap_or_default();
                set.len() == replicas && p["leader"].as_u64().is_some_and(|l| set.contains(&l))
            })
    });
    let rebalanced = s["summary"]["pending"].as_array().is_some_and(Vec::is_empty);
    active && placed && rebalanced
}

/// The sum of metric `name` over its label sets in a node's `/metrics` (0 while it was never
/// recorded).
pub async fn metric_sum(node: &NodeProcess, name: &str) -> u64 {
    let text = node.http().metrics().await.unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.strip_prefix(name).is_some_and(|rest| rest.starts_with([' ', '{'])))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Polls `cluster status` on `node` until `done` accepts it (≤ `within`); returns the last.
pub async fn wait_for_status(
    node: &NodeProcess,
    within: Duration,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + within;
    loop {
        let status = cluster_status(node);
        if let Ok(s) = &status {
            if done(s) {
                return s.clone();
            }
        }
        assert!(
            Instant::now() < deadline,
            "cluster did not settle within {within:?}: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Reads frames until the connection closes; returns the close code.
pub async fn until_closed(ws: &mut ringchat_client::WsClient, within: Duration) -> Option<u16> {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "connection not closed within {within:?}");
        match ws.recv(left).await {
            Ok(_) => continue,
            Err(ringchat_client::ClientError::Closed { code, .. }) => return code,
            Err(ringchat_client::ClientError::Timeout) => panic!("connection not closed within {within:?}"),
            Err(e) => panic!("{e:?}"),
        }
    }
}

/// The HTTP status and PROTOCOL error code of a failed API call (panics on any other failure:
/// the test expected the server to answer with an error).
pub fn api_error(e: &ringchat_client::ClientError) -> (u16, String) {
    match e {
        ringchat_client::ClientError::Api { status, code, .. } => (*status, code.clone()),
        other => panic!("expected an API error, got {other:?}"),
    }
}
