//! Configuration: command-line flags, `RINGCHAT_*` environment variables and an optional TOML
//! file, merged once and validated into `Config`. Precedence: flag > env > file > default.
//!
//! TOML keys are the flag names; `node-id` and `node_id` are both accepted.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Args;
use serde::Deserialize;

/// Flags of `ringchat serve`. Every field is optional here so that the file and defaults can
/// fill what the flags and environment leave out.
#[derive(Debug, Clone, Default, Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeArgs {
    /// Optional TOML file with any of these settings.
    #[arg(long, env = "RINGCHAT_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Node id (default 1).
    #[arg(long, env = "RINGCHAT_NODE_ID")]
    pub node_id: Option<u64>,
    /// Data directory (default ./ringchat-data).
    #[arg(long, env = "RINGCHAT_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Client HTTP + WebSocket address (default 127.0.0.1:7070).
    #[arg(long, env = "RINGCHAT_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Node-to-node address (default 127.0.0.1:7071).
    #[arg(long, env = "RINGCHAT_CLUSTER_LISTEN")]
    pub cluster_listen: Option<SocketAddr>,
    /// Cluster address other nodes use (default: cluster-listen).
    #[arg(long, env = "RINGCHAT_ADVERTISE")]
    pub advertise: Option<String>,
    /// Client URL this node advertises in `GET /v1/nodes` (default http://<listen>).
    #[arg(long, env = "RINGCHAT_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// PEM certificate chain (leaf first) to serve HTTPS and WSS on the client port; needs
    /// --tls-key. Reloaded on SIGHUP.
    #[arg(long, env = "RINGCHAT_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "RINGCHAT_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// PEM certificate chain of this node, signed by --cluster-tls-ca: the cluster port then
    /// runs mutual TLS (needs --cluster-tls-key and --cluster-tls-ca; the secret stays required).
    #[arg(long, env = "RINGCHAT_CLUSTER_TLS_CERT")]
    pub cluster_tls_cert: Option<PathBuf>,
    /// PEM private key of --cluster-tls-cert.
    #[arg(long, env = "RINGCHAT_CLUSTER_TLS_KEY")]
    pub cluster_tls_key: Option<PathBuf>,
    /// PEM certificate of the CA every node's cluster certificate comes from.
    #[arg(long, env = "RINGCHAT_CLUSTER_TLS_CA")]
    pub cluster_tls_ca: Option<PathBuf>,
    /// Cluster address of any member to join.
    #[arg(long, env = "RINGCHAT_JOIN")]
    pub join: Option<String>,
    /// Replicas per partition (default 3, capped by node count).
    #[arg(long, env = "RINGCHAT_REPLICATION")]
    pub replication: Option<u32>,
    /// Partitions, fixed at bootstrap (default 64).
    #[arg(long, env = "RINGCHAT_PARTITIONS")]
    pub partitions: Option<u16>,
    /// URL to POST push notifications to (http://…).
    #[arg(long, env = "RINGCHAT_PUSH_GATEWAY")]
    pub push_gateway: Option<String>,
    /// Comma-separated list of allowed WebSocket `Origin`s.
    #[arg(long, env = "RINGCHAT_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Option<Vec<String>>,
    /// Group member limit, creator included (default 100).
    #[arg(long, env = "RINGCHAT_MAX_GROUP_MEMBERS")]
    pub max_group_members: Option<usize>,
    /// Shared secret for cluster RPCs (its value from the environment is never shown in --help).
    #[arg(long, env = "RINGCHAT_CLUSTER_SECRET", hide_env_values = true)]
    pub cluster_secret: Option<String>,
    /// WebSocket heartbeat interval in ms (default 15000); idle connections close after twice it.
    #[arg(long, env = "RINGCHAT_HEARTBEAT_MS")]
    pub heartbeat_ms: Option<u64>,
    /// Sustained sends per second per user, HTTP and WebSocket together (default 20).
    #[arg(long, env = "RINGCHAT_SEND_RATE")]
    pub send_rate: Option<u32>,
    /// Burst of sends per user (default 50).
    #[arg(long, env = "RINGCHAT_SEND_BURST")]
    pub send_burst: Option<u32>,
    /// Sign-ups one source address may make per minute (default 10): each costs an argon2 hash.
    #[arg(long, env = "RINGCHAT_SIGNUPS_PER_MINUTE")]
    pub signups_per_minute: Option<u32>,
    /// Frames queued for one client before it counts as too slow (default 1024).
    #[arg(long, env = "RINGCHAT_OUTBOUND_QUEUE")]
    pub outbound_queue: Option<usize>,
    /// Seconds a member may be unreachable before it is declared dead and its partition
    /// replicas are rebuilt on live nodes (default 30).
    #[arg(long, env = "RINGCHAT_DEAD_AFTER_SECS")]
    pub dead_after_secs: Option<u64>,
    /// Async worker threads (default: 2 per core, at least 4). Storage calls block the thread
    /// that makes them, so a few more workers than cores keep one blocked call from stalling
    /// everyone; many more only add wake-ups (docs/runtime.md).
    #[arg(long, env = "RINGCHAT_WORKER_THREADS")]
    pub worker_threads: Option<usize>,
    /// Log format: `text` or `json` (default text).
    #[arg(long, env = "RINGCHAT_LOG_FORMAT")]
    pub log_format: Option<String>,
}

/// The client port's certificate chain and private key (PEM files).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain, leaf first.
    pub cert: PathBuf,
    /// Private key of the leaf.
    pub key: PathBuf,
}

/// The cluster port's mutual TLS: this node's pair and the cluster CA (PEM files).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterTlsFiles {
    /// Certificate chain, leaf first, signed by `ca`.
    pub cert: PathBuf,
    /// Private key of the leaf.
    pub key: PathBuf,
    /// The cluster CA: peers' certificates must come from it.
    pub ca: PathBuf,
}

/// Validated node configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Node id.
    pub node_id: u64,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Client address.
    pub listen: SocketAddr,
    /// Cluster address.
    pub cluster_listen: SocketAddr,
    /// Advertised cluster address.
    pub advertise: String,
    /// Client URL advertised in `GET /v1/nodes` (`None`: `http(s)://<bound listen address>`).
    pub public_url: Option<String>,
    /// Certificate and key of the client port's TLS (`None`: plain HTTP and WebSocket).
    pub tls: Option<TlsFiles>,
    /// The cluster port's mutual TLS (`None`: h2c).
    pub cluster_tls: Option<ClusterTlsFiles>,
    /// Member to join, if any.
    pub join: Option<String>,
    /// Replication factor.
    pub replication: u32,
    /// Partition count.
    pub partitions: u16,
    /// Push gateway URL.
    pub push_gateway: Option<String>,
    /// Allowed origins (empty: any).
    pub allowed_origins: Vec<String>,
    /// Group member limit.
    pub max_group_members: usize,
    /// Cluster secret.
    pub cluster_secret: Option<String>,
    /// Heartbeat interval, ms.
    pub heartbeat_ms: u64,
    /// Hello deadline, ms.
    pub hello_timeout_ms: u64,
    /// Sends per second per user (HTTP and WebSocket).
    pub send_rate: u32,
    /// Send burst per user.
    pub send_burst: u32,
    /// Sign-ups per source address per minute (also the burst).
    pub signups_per_minute: u32,
    /// Outbound frame queue per connection.
    pub outbound_queue: usize,
    /// `text` or `json`.
    pub log_format: String,
    /// Fewest log entries between two snapshots of a partition; the interval grows with the
    /// partition (docs/snapshots.md).
    pub snapshot_every: u64,
    /// Unreachable members are declared dead after this many seconds.
    pub dead_after_secs: u64,
    /// Tokio worker threads of `ringchat serve`.
    pub worker_threads: usize,
    /// A request's headers must arrive within this many ms (slowloris guard).
    pub header_read_timeout_ms: u64,
    /// A request's body must arrive within this many ms of the handler starting to read it
    /// (the same guard for bodies: a `Content-Length` that never arrives holds no socket).
    pub body_read_timeout_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            node_id: 1,
            data_dir: PathBuf::from("./ringchat-data"),
            listen: "127.0.0.1:7070".parse().expect("literal"),
            cluster_listen: "127.0.0.1:7071".parse().expect("literal"),
            advertise: "127.0.0.1:7071".into(),
            public_url: None,
            tls: None,
            cluster_tls: None,
            join: None,
            replication: 3,
            partitions: 64,
            push_gateway: None,
            allowed_origins: Vec::new(),
            max_group_members: 100,
            cluster_secret: None,
            heartbeat_ms: 15_000,
            hello_timeout_ms: 10_000,
            send_rate: 20,
            send_burst: 50,
            signups_per_minute: 10,
            outbound_queue: 1024,
            log_format: "text".into(),
            snapshot_every: 20_000,
            dead_after_secs: 30,
            worker_threads: std::thread::available_parallelism()
                .map(|n| n.get() * 2)
                .unwrap_or(4)
                .max(4),
            header_read_timeout_ms: 10_000,
            body_read_timeout_ms: 10_000,
        }
    }
}

impl Config {
    /// Merges flags/env (already resolved by clap) over the file over defaults.
    pub fn from_args(args: ServeArgs) -> anyhow::Result<Config> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => ServeArgs::default(),
        };
        let d = Config::default();
        macro_rules! pick {
            ($f:ident) => {
                args.$f.clone().or(file.$f.clone())
            };
        }
        let cluster_listen = pick!(cluster_listen).unwrap_or(d.cluster_listen);
        let cfg = Config {
            node_id: pick!(node_id).unwrap_or(d.node_id),
            data_dir: pick!(data_dir).unwrap_or(d.data_dir),
            listen: pick!(listen).unwrap_or(d.listen),
            cluster_listen,
            advertise: pick!(advertise).unwrap_or_else(|| cluster_listen.to_string()),
            public_url: pick!(public_url).filter(|s| !s.is_empty()),
            tls: match (pick!(tls_cert), pick!(tls_key)) {
                (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
                (None, None) => None,
                _ => bail!("--tls-cert and --tls-key go together"),
            },
            cluster_tls: match (pick!(cluster_tls_cert), pick!(cluster_tls_key), pick!(cluster_tls_ca)) {
                (Some(cert), Some(key), Some(ca)) => Some(ClusterTlsFiles { cert, key, ca }),
                (None, None, None) => None,
                _ => bail!("--cluster-tls-cert, --cluster-tls-key and --cluster-tls-ca go together"),
            },
            join: pick!(join),
            replication: pick!(replication).unwrap_or(d.replication),
            partitions: pick!(partitions).unwrap_or(d.partitions),
            push_gateway: pick!(push_gateway).filter(|s| !s.is_empty()),
            allowed_origins: pick!(allowed_origins)
                .unwrap_or_default()
                .into_iter()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
            max_group_members: pick!(max_group_members).unwrap_or(d.max_group_members),
            cluster_secret: pick!(cluster_secret),
            heartbeat_ms: pick!(heartbeat_ms).unwrap_or(d.heartbeat_ms),
            hello_timeout_ms: d.hello_timeout_ms,
            send_rate: pick!(send_rate).unwrap_or(d.send_rate),
            send_burst: pick!(send_burst).unwrap_or(d.send_burst),
            signups_per_minute: pick!(signups_per_minute).unwrap_or(d.signups_per_minute),
            outbound_queue: pick!(outbound_queue).unwrap_or(d.outbound_queue),
            log_format: pick!(log_format).unwrap_or(d.log_format),
            snapshot_every: d.snapshot_every,
            dead_after_secs: pick!(dead_after_secs).unwrap_or(d.dead_after_secs),
            worker_threads: pick!(worker_threads).unwrap_or(d.worker_threads),
            header_read_timeout_ms: d.header_read_timeout_ms,
            body_read_timeout_ms: d.body_read_timeout_ms,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks values that would make the node misbehave.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.partitions == 0 {
            bail!("--partitions must be at least 1");
        }
        // Group ids above it name groups of several partitions (docs/raft-groups.md).
        let most = ringchat_cluster::meta::model::FIRST_SET_GROUP;
        if self.partitions > most {
            bail!("--partitions must be at most {most}");
        }
        if self.max_group_members < 2 {
            bail!("--max-group-members must be at least 2");
        }
        if self.replication == 0 {
            bail!("--replication must be at least 1");
        }
        if self.heartbeat_ms < 100 {
            bail!("--heartbeat-ms must be at least 100");
        }
        if self.send_rate == 0 || self.send_burst == 0 {
            bail!("--send-rate and --send-burst must be at least 1");
        }
        if self.signups_per_minute == 0 {
            bail!("--signups-per-minute must be at least 1");
        }
        if self.outbound_queue < 16 {
            bail!("--outbound-queue must be at least 16");
        }
        if let Some(url) = &self.push_gateway {
            if !url.starts_with("http://") && !url.starts_with("https://") {
                bail!("--push-gateway must be an http(s) URL");
            }
        }
        if !matches!(self.log_format.as_str(), "text" | "json") {
            bail!("--log-format must be text or json");
        }
        if let Some(url) = &self.public_url {
            if !url.starts_with("http://") && !url.starts_with("https://") {
                bail!("--public-url must be an http(s) URL");
            }
        }
        // Checked here, before the data dir is created, rather than when the RPC server starts.
        if let Some(secret) = &self.cluster_secret {
            ringchat_cluster::rpc::ClusterSecret::new(secret).map_err(|e| anyhow::anyhow!("--cluster-secret: {e}"))?;
        }
        if self.cluster_tls.is_some() && self.cluster_secret.is_none() {
            bail!("--cluster-tls-* needs --cluster-secret (the secret stays a second factor)");
        }
        if self.join.is_some() && self.cluster_secret.is_none() {
            bail!("--join needs --cluster-secret (nodes refuse cluster RPCs without it)");
        }
        if self.worker_threads == 0 || self.worker_threads > 1024 {
            bail!("--worker-threads must be 1 to 1024");
        }
        if self.dead_after_secs < 2 {
            bail!("--dead-after-secs must be at least 2");
        }
        Ok(())
    }
}

fn read_file(path: &Path) -> anyhow::Result<ServeArgs> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let table: toml::Table = toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    // Accept `node-id` and `node_id` alike.
    let normalized: toml::Table = table.into_iter().map(|(k, v)| (k.replace('-', "_"), v)).collect();
    let args: ServeArgs = normalized
        .try_into()
        .with_context(|| format!("settings in {}", path.display()))?;
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_file_and_file_over_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "node-id = 7\nmax_group_members = 10\nlisten = \"127.0.0.1:9000\"\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(path),
            node_id: Some(3),
            ..Default::default()
        };
        let cfg = Config::from_args(args).unwrap();
        assert_eq!(cfg.node_id, 3);
        assert_eq!(cfg.max_group_members, 10);
        assert_eq!(cfg.listen.port(), 9000);
        assert_eq!(cfg.partitions, 64);
        assert_eq!(cfg.advertise, "127.0.0.1:7071");
    }

    #[test]
    fn a_too_short_cluster_secret_is_refused_by_validation() {
        let args = ServeArgs {
            cluster_secret: Some("short".into()),
            ..Default::default()
        };
        let err = Config::from_args(args).unwrap_err().to_string();
        assert!(err.contains("--cluster-secret"), "{err}");
        assert!(!err.contains("short"), "the secret itself is not echoed: {err}");
    }

    #[test]
    fn unknown_file_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "nodeid = 7\n").unwrap();
        let args = ServeArgs {
            config: Some(path),
            ..Default::default()
        };
        assert!(Config::from_args(args).is_err());
    }
}
