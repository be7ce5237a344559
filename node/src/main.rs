//! `ringchat`: the server binary.

use clap::{Parser, Subcommand};
use ringchat_cluster::rpc::{ClusterAccess, ClusterSecret};
use ringchat_node::config::{Config, ServeArgs};
use ringchat_node::App;
use tracing_subscriber::EnvFilter;

/// Log filter unless `RINGCHAT_LOG` says otherwise: our own INFO, third-party crates at WARN,
/// and openraft at ERROR: its WARNs are one line per group per failed attempt (a peer that is
/// down made 100+ lines/s per survivor); the node reports a peer's reachability itself, once
/// per change (`cluster/src/rpc/peer_health.rs`). docs/logging.md.
const DEFAULT_LOG_FILTER: &str = "info,openraft=error,fjall=warn,lsm_tree=warn,foyer=warn,foyer_storage=warn,foyer_memory=warn,h2=warn,tonic=warn,hyper=warn,hyper_util=warn,tower=warn";

#[derive(Parser)]
#[command(name = "ringchat", version, about = "ringchat chat server")]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand)]
enum Commands {
    /// Start a node.
    Serve(Box<ServeArgs>),
    /// Operate a running cluster.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// A terminal chat client: log in, open DMs and groups, send, see messages live, read
    /// history (`/help` once running).
    Chat {
        /// Client URL of any node.
        #[arg(long, default_value = "http://127.0.0.1:7070")]
        url: String,
        /// Username to log in as.
        #[arg(long)]
        user: String,
        /// Password; prefer the environment (a command line is visible in `ps`).
        #[arg(long, env = "RINGCHAT_PASSWORD", hide_env_values = true)]
        password: String,
        /// PEM file of a CA to trust for an `https://` URL besides the system's roots (a node
        /// whose certificate a private CA signed).
        #[arg(long, env = "RINGCHAT_CA_CERT")]
        ca_cert: Option<std::path::PathBuf>,
    },
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// Members, their state, the meta leader, and each partition's replicas and leader.
    Status {
        /// Cluster address of any member.
        #[arg(long)]
        node: String,
        /// Print exactly one JSON object (the PROTOCOL fields, and more beside them).
        #[arg(long)]
        json: bool,
        /// Also print one line per partition (target replicas, actual voters and learners,
        /// leader).
        #[arg(long)]
        partitions: bool,
        #[command(flatten)]
        access: AccessArgs,
    },
    /// Drain a node (its partitions move away first) and remove it.
    Remove {
        /// Id of the node to remove.
        node_id: u64,
        /// Cluster address of any member.
        #[arg(long)]
        node: String,
        #[command(flatten)]
        access: AccessArgs,
        /// Give up waiting for the drain after this many seconds.
        #[arg(long, default_value_t = 300)]
        wait_secs: u64,
    },
}

/// How the operator commands reach the cluster port: its secret, and the node certificate of
/// a cluster that runs mutual TLS (`serve --cluster-tls-*`).
#[derive(clap::Args)]
struct AccessArgs {
    /// The cluster secret.
    #[arg(long, env = "RINGCHAT_CLUSTER_SECRET", hide_env_values = true)]
    cluster_secret: String,
    /// PEM certificate signed by the cluster CA (the cluster port runs mutual TLS).
    #[arg(long, env = "RINGCHAT_CLUSTER_TLS_CERT", requires_all = ["cluster_tls_key", "cluster_tls_ca"])]
    cluster_tls_cert: Option<std::path::PathBuf>,
    /// PEM private key of --cluster-tls-cert.
    #[arg(long, env = "RINGCHAT_CLUSTER_TLS_KEY", requires = "cluster_tls_cert")]
    cluster_tls_key: Option<std::path::PathBuf>,
    /// PEM certificate of the cluster CA.
    #[arg(long, env = "RINGCHAT_CLUSTER_TLS_CA", requires = "cluster_tls_cert")]
    cluster_tls_ca: Option<std::path::PathBuf>,
}

impl AccessArgs {
    fn access(&self) -> anyhow::Result<ClusterAccess> {
        let secret =
            ClusterSecret::new(&self.cluster_secret).map_err(|e| anyhow::anyhow!("invalid --cluster-secret: {e}"))?;
        let tls = match (&self.cluster_tls_cert, &self.cluster_tls_key, &self.cluster_tls_ca) {
            (Some(cert), Some(key), Some(ca)) => Some(ringchat_node::tls::load_cluster_tls(cert, key, ca)?),
            _ => None,
        };
        Ok(ClusterAccess::with_tls(secret, tls))
    }
}

/// mimalloc, not glibc malloc: see `ringchat_node::allocator` and docs/allocator.md.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Commands::Serve(args) => {
            let config = Config::from_args(*args)?;
            init_logs(&config.log_format);
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(config.worker_threads)
                .enable_all()
                .build()?;
            rt.block_on(serve(config))
        }
        Commands::Cluster(cmd) => {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(operate(cmd))
        }
        Commands::Chat {
            url,
            user,
            password,
            ca_cert,
        } => {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(ringchat_node::terminal_chat::run(
                &url,
                &user,
                &password,
                ca_cert.as_deref(),
            ))
        }
    }
}

async fn operate(cmd: ClusterCommand) -> anyhow::Result<()> {
    use ringchat_cluster::meta::operator::{fetch_detail, fetch_status, request_removal};
    match cmd {
        ClusterCommand::Status {
            node,
            json,
            partitions,
            access,
        } => {
            let access = access.access()?;
            let status = fetch_status(&node, &access).await?;
            let detail = fetch_detail(&node, &access).await?;
            let report = ringchat_node::status_text::StatusReport::new(status, detail);
            if json {
                println!("{}", serde_json::to_string(&report.to_json())?);
            } else {
                print!("{}", report.render(partitions));
            }
            Ok(())
        }
        ClusterCommand::Remove {
            node_id,
            node,
            access,
            wait_secs,
        } => {
            let access = access.access()?;
            request_removal(&node, &access, node_id).await?;
            eprintln!("node {node_id} is draining; waiting for its partitions to move");
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(wait_secs);
            loop {
                let status = fetch_status(&node, &access).await?;
                let state = status
                    .members
                    .iter()
                    .find(|m| m.node_id == node_id)
                    .map(|m| m.state.clone());
                // Dead and in no partition's replica set: a member that was already dead
                // when asked is removed only once its replicas are rebuilt elsewhere.
                let placed = status.partitions.iter().any(|p| p.replicas.contains(&node_id));
                if state.as_deref() == Some("dead") && !placed {
                    println!("node {node_id} removed");
                    return Ok(());
                }
                anyhow::ensure!(
                    std::time::Instant::now() < deadline,
                    "node {node_id} still {} after {wait_secs} s",
                    state.unwrap_or_default()
                );
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
        }
    }
}

fn init_logs(format: &str) {
    let filter = EnvFilter::try_from_env("RINGCHAT_LOG").unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG_FILTER));
    // Colours only on a terminal: a log file or journald gets plain text to grep.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Runs the node until a signal; starts it again on the same data dir after a storage error
/// stopped its groups, once the disk takes writes again (`storage_recovery.rs`).
async fn serve(config: Config) -> anyhow::Result<()> {
    use ringchat_node::storage_recovery;
    let stop = tokio_util::sync::CancellationToken::new();
    let on_signal = stop.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down");
        on_signal.cancel();
    });
    let mut app = App::start(config.clone()).await?;
    loop {
        let shutdown = app.state.shutdown.clone();
        let cluster = app.state.cluster.clone();
        let stopped = tokio::select! {
            _ = shutdown.cancelled() => None,
            stopped = storage_recovery::stopped_groups(&cluster, &stop) => stopped,
        };
        // Nothing may hold the old cluster (and its store) when the app starts again.
        drop(cluster);
        let Some(stopped) = stopped else {
            shutdown.cancel();
            app.wait().await;
            return Ok(());
        };
        tracing::error!(
            groups = stopped.len(),
            first = %stopped[0].1,
            "a storage error stopped Raft groups; restarting the node once the data dir takes writes again"
        );
        // Until then the node keeps serving what it can: writes answer `unavailable` and
        // `/readyz` 503, so clients and load balancers know, rather than a closed port.
        let room = storage_recovery::room_in(&config.data_dir, &stop).await;
        shutdown.cancel();
        app.wait().await;
        if !room {
            return Ok(());
        }
        app = loop {
            match App::start(config.clone()).await {
                Ok(app) => break app,
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "restart after a storage error failed; retrying");
                    tokio::select! {
                        _ = stop.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(std::time::Duration::from_secs(2)) => {}
                    }
                }
            }
        };
        tracing::info!("node restarted after a storage error");
    }
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
