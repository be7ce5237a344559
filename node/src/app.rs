//! Wires storage, cluster, chat service, gateway, presence and push into one running node, and
//! owns its shutdown: SIGTERM (or `RunningApp::stop`) stops accepting, closes client sockets with
//! 1001, waits for connection tasks, stops the Raft groups and fsyncs.

use ringchat_cluster::log_throttle::{LogThrottle, EVERY_30_S};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use metrics_exporter_prometheus::PrometheusHandle;
use ringchat_cluster::rpc::{
    spawn_server, ClusterAccess, ClusterSecret, MemberRpcService, NodeRpcService, NodeServices, RaftRpcService,
};
use ringchat_cluster::{Cluster, ClusterConfig};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::chat::Chat;
use crate::commit_delivery::CommitDelivery;
use crate::config::Config;
use crate::fanout::{Fanout, Inbound};
use crate::gateway::registry::CLOSE_GOING_AWAY;
use crate::gateway::Registry;
use crate::limits::Limits;
use crate::presence::Presence;
use crate::push::PushSender;
use crate::tls::ClientTls;

/// Everything a request handler or connection needs.
pub struct AppState {
    /// Validated configuration.
    pub config: Config,
    /// Partitions.
    pub cluster: Arc<Cluster>,
    /// Chat operations.
    pub chat: Arc<Chat>,
    /// Local connections.
    pub registry: Arc<Registry>,
    /// Presence.
    pub presence: Arc<Presence>,
    /// Send, login and sign-up limits.
    pub limits: Limits,
    /// Metrics renderer.
    pub metrics: PrometheusHandle,
    /// The last `GET /v1/nodes` answer (`http/nodes.rs`).
    pub nodes_cache: crate::http::nodes::EndpointsCache,
    /// Cancelled on shutdown.
    pub shutdown: CancellationToken,
    /// Tracks connection and worker tasks so shutdown can wait for them.
    pub tracker: TaskTracker,
}

/// A started node.
pub struct RunningApp {
    /// The bound client address (useful with port 0).
    pub addr: SocketAddr,
    /// Shared state (tests inspect the cluster through it).
    pub state: Arc<AppState>,
    handle: JoinHandle<()>,
}

impl RunningApp {
    /// Triggers graceful shutdown and waits for it.
    pub async fn stop(self) {
        self.state.shutdown.cancel();
        let _ = self.handle.await;
    }

    /// Waits until the node stops (after its shutdown token is cancelled).
    pub async fn wait(self) {
        let _ = self.handle.await;
    }
}

/// The node.
pub struct App;

/// Creates the data dir (if needed) readable by its owner only: it holds every message, the
/// token hashes and the Raft logs, and files inside are created with the process umask
/// (0644 by default), so the directory's mode is what keeps other local users out.
fn private_data_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mode = std::fs::metadata(dir)?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        if let Err(e) = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)) {
            tracing::warn!(dir = %dir.display(), mode = format!("{mode:o}"), error = %e, "data dir is readable by others and its mode cannot be changed");
        }
    }
    Ok(())
}

/// The client URL this node advertises: `--public-url`, else `http://<bound client address>`.
fn public_url(config: &Config, bound: SocketAddr) -> String {
    let scheme = if config.tls.is_some() { "https" } else { "http" };
    config
        .public_url
        .clone()
        .unwrap_or_else(|| format!("{scheme}://{bound}"))
}

/// Longest wait on shutdown for this node's leaderships to move to other voters.
const LEADER_HANDOFF: Duration = Duration::from_secs(3);

/// Every this many membership ticks (seconds), a node asks a peer whether it was removed.
const REMOVAL_CHECK_EVERY_TICKS: u64 = 5;

/// Membership upkeep, once a second until shutdown: the meta leader's rebalancing pass (a no-op
/// on other nodes), handing leaderships to their preferred replicas, closing the groups of
/// partitions no longer replicated here, and links to new peers.
async fn run_membership(cluster: Arc<Cluster>, fanout: Arc<Fanout>, shutdown: CancellationToken) {
    let mut ticks: u64 = 0;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        ticks += 1;
        if ticks.is_multiple_of(REMOVAL_CHECK_EVERY_TICKS) && !cluster.is_meta_leader() && cluster.was_removed().await {
            tracing::error!(
                node_id = cluster.node_id(),
                "this node was removed from the cluster (ringchat cluster remove); stopping. Start it with an empty data dir and --join to add it again"
            );
            shutdown.cancel();
            return;
        }
        if let Err(e) = cluster.rebalance_once().await {
            static INCOMPLETE: LogThrottle = LogThrottle::new(EVERY_30_S);
            if let Some(held_back) = INCOMPLETE.allow() {
                tracing::info!(error = %e, held_back, "rebalance pass incomplete");
            }
        }
        cluster.balance_leaders_once().await;
        cluster.open_set_groups().await;
        cluster.release_idle_groups().await;
        cluster.release_handed_over().await;
        cluster.reclaim_moved_partitions().await;
        ringchat_cluster::group_events::flush_group_events();
        fanout.refresh_links();
    }
}

impl App {
    /// Opens storage, starts the partitions, the cluster RPC server (with a cluster secret)
    /// and the client listener.
    pub async fn start(config: Config) -> anyhow::Result<RunningApp> {
        let metrics = crate::metrics::handle();
        // Loaded before anything is opened: a bad certificate fails the start with its reason.
        let tls = match &config.tls {
            Some(files) => Some(ClientTls::load(&files.cert, &files.key).context("--tls-cert/--tls-key")?),
            None => None,
        };
        let cluster_access = match &config.cluster_secret {
            Some(secret) => {
                let tls = match &config.cluster_tls {
                    Some(f) => Some(
                        crate::tls::load_cluster_tls(&f.cert, &f.key, &f.ca)
                            .context("--cluster-tls-cert/--cluster-tls-key/--cluster-tls-ca")?,
                    ),
                    None => None,
                };
                Some(ClusterAccess::with_tls(ClusterSecret::new(secret)?, tls))
            }
            None => None,
        };
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        let addr = listener.local_addr()?;
        // Both sockets are bound before anything else: a taken port fails the start at once,
        // not after a join, and nobody else can take the cluster port while we open storage.
        let rpc_listener = match &config.cluster_secret {
            Some(_) => Some(
                tokio::net::TcpListener::bind(config.cluster_listen)
                    .await
                    .with_context(|| format!("binding {}", config.cluster_listen))?,
            ),
            None => None,
        };
        private_data_dir(&config.data_dir)?;
        let cluster = Cluster::open(&ClusterConfig {
            node_id: config.node_id,
            data_dir: config.data_dir.clone(),
            partitions: config.partitions,
            replication: config.replication as usize,
            advertise: config.advertise.clone(),
            client_addr: addr.to_string(),
            public_url: public_url(&config, addr),
            // Outgoing cluster connections leave from the address the node listens on.
            source_ip: Some(config.cluster_listen.ip()).filter(|ip| !ip.is_unspecified()),
            join: config.join.clone(),
            cluster_access: cluster_access.clone(),
            dead_after: Duration::from_secs(config.dead_after_secs),
            snapshot_every: config.snapshot_every,
            cache_memory_bytes: 64 << 20,
            cache_disk_bytes: 256 << 20,
        })
        .await
        .context("opening storage and partitions")?;
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        let rpc_stop = CancellationToken::new();
        let rpc_server = match (cluster_access, rpc_listener) {
            (Some(access), Some(rpc_listener)) => {
                let services = NodeServices::new(
                    RaftRpcService::new(cluster.clone(), config.data_dir.join("incoming")),
                    NodeRpcService::new(cluster.clone()),
                )
                .with_member(MemberRpcService::new(cluster.clone()));
                Some(spawn_server(rpc_listener, services, access, rpc_stop.clone()))
            }
            _ => None,
        };
        let registry = Arc::new(Registry::default());
        let counted = Arc::downgrade(&registry);
        cluster.set_connection_count(Arc::new(move || counted.upgrade().map_or(0, |r| r.count())));
        let fanout = Arc::new(Fanout::new(
            cluster.clone(),
            registry.clone(),
            shutdown.clone(),
            tracker.clone(),
        ));
        let presence = Arc::new(Presence::new(cluster.clone(), registry.clone(), fanout.clone()));
        let lost = Arc::downgrade(&presence);
        fanout.set_on_node_lost(Arc::new(move |node| {
            if let Some(p) = lost.upgrade() {
                p.node_lost(node);
            }
        }));
        cluster.set_local_delivery(Arc::new(Inbound {
            registry: registry.clone(),
            presence: Arc::downgrade(&presence),
        }));
        tracker.spawn(run_membership(cluster.clone(), fanout.clone(), shutdown.clone()));
        if let Some(tls) = &tls {
            tracker.spawn(tls.clone().reload_on_sighup(shutdown.clone()));
        }
        tracker.spawn(crate::gateway::heartbeat::sweep(
            registry.clone(),
            Duration::from_millis(config.heartbeat_ms),
            shutdown.clone(),
        ));
        if !cluster.wait_ready(Duration::from_secs(30)).await {
            tracing::warn!("not every partition has a leader yet; /readyz will say so");
        }
        let push_tx = match &config.push_gateway {
            Some(url) => {
                let (tx, rx) = mpsc::channel(4096);
                let sender = PushSender::new(cluster.clone(), registry.clone(), url.clone());
                tracker.spawn(sender.run(rx, shutdown.clone()));
                Some(tx)
            }
            None => None,
        };
        cluster.set_commit_events(Arc::new(CommitDelivery {
            fanout: Arc::downgrade(&fanout),
            push: push_tx.clone(),
        }));
        let chat = Arc::new(Chat::new(
            cluster.clone(),
            registry.clone(),
            fanout,
            config.max_group_members,
            push_tx.is_some(),
        ));
        let limits = Limits::new(config.send_rate, config.send_burst, config.signups_per_minute);
        let state = Arc::new(AppState {
            config,
            cluster: cluster.clone(),
            chat,
            registry: registry.clone(),
            presence,
            limits,
            metrics,
            nodes_cache: Default::default(),
            shutdown: shutdown.clone(),
            tracker: tracker.clone(),
        });
        let router = crate::http::router(state.clone());
        let stop = shutdown.clone();
        let header_timeout = Duration::from_millis(state.config.header_read_timeout_ms);
        let handle = tokio::spawn(async move {
            let acceptor = tls.map(|tls| tls.acceptor());
            crate::http::serve::serve(
                listener,
                router,
                acceptor,
                header_timeout,
                stop.clone(),
                tracker.clone(),
            )
            .await;
            stop.cancel();
            registry.close_all(CLOSE_GOING_AWAY);
            tracker.close();
            if tokio::time::timeout(Duration::from_secs(5), tracker.wait())
                .await
                .is_err()
            {
                tracing::warn!("connections did not close within 5 s");
            }
            // Last, right before the groups stop: a peer's leader balancing could hand a
            // leadership back in the meantime otherwise.
            cluster.hand_off_leaderships(LEADER_HANDOFF).await;
            cluster.shutdown().await;
            rpc_stop.cancel();
            if let Some(server) = rpc_server {
                let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
            }
            tracing::info!("stopped");
        });
        tracing::info!(
            version = %env!("CARGO_PKG_VERSION"),
            node_id = state.config.node_id,
            data_dir = %state.config.data_dir.display(),
            client = %addr,
            public_url = %public_url(&state.config, addr),
            cluster = %if state.config.cluster_secret.is_some() { state.config.advertise.as_str() } else { "off (no --cluster-secret)" },
            "ringchat node serving"
        );
        Ok(RunningApp { addr, state, handle })
    }
}
