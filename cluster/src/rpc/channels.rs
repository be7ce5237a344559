//! Channels to peer nodes: one lazily-connected HTTP/2 channel per peer address, shared by
//! every partition group of this node.
//!
//! With P partitions and N nodes, per-group connections would open P x N sockets per node;
//! one multiplexed channel per peer keeps it at N and lets h2 flow control share the link.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use super::auth::{ClusterAccess, ClusterSecret};
use super::error::RpcError;
use super::peer_health::GroupsWith;
use super::pipe::PeerPipe;
use super::tls::ClusterTls;
use super::{CONNECTION_WINDOW_BYTES, STREAM_WINDOW_BYTES};

/// How long opening a TCP connection to a peer may take before it counts as unreachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The channel to one peer and the pipe over it.
#[derive(Clone)]
struct Peer {
    channel: Channel,
    pipe: PeerPipe,
}

/// The node's channels to its peers, keyed by address. Cloning shares them.
#[derive(Clone)]
pub struct PeerChannels {
    channels: Arc<Mutex<HashMap<String, Peer>>>,
    secret: ClusterSecret,
    /// Mutual TLS of every connection (`None`: h2c).
    tls: Option<ClusterTls>,
    /// Source address of outgoing connections (the node's cluster listen address), so peers
    /// and packet filters see one address per node.
    local_ip: Option<IpAddr>,
    /// Counts the groups shared with a peer, for its pipe's peer-down lines.
    groups_with: GroupsWith,
    /// Bytes per second for catching replicas up (`bulk_budget.rs`), shared by every group.
    pub(crate) bulk: super::bulk_budget::BulkBudget,
    /// Commits the groups' replication did not send on their own (`withheld_commits.rs`).
    pub(crate) withheld: super::withheld_commits::WithheldCommits,
}

impl PeerChannels {
    /// An empty pool whose requests carry the secret of `access`, over its TLS if it has one.
    pub fn new(access: impl Into<ClusterAccess>) -> Self {
        let ClusterAccess { secret, tls } = access.into();
        PeerChannels {
            channels: Arc::new(Mutex::new(HashMap::new())),
            secret,
            tls,
            local_ip: None,
            groups_with: GroupsWith::default(),
            bulk: Default::default(),
            withheld: Default::default(),
        }
    }

    /// Outgoing connections bind `ip` as their source address (`None`: the kernel picks).
    pub fn with_local_ip(mut self, ip: Option<IpAddr>) -> Self {
        self.local_ip = ip;
        self
    }

    /// The commits withheld from followers (`withheld_commits.rs`), for the liveness tick.
    pub fn withheld_commits(&self) -> &super::withheld_commits::WithheldCommits {
        &self.withheld
    }

    /// Sets how many groups replicate with the peer at an address (the first call wins).
    pub fn set_groups_with(&self, count: Arc<dyn Fn(&str) -> usize + Send + Sync>) {
        let _ = self.groups_with.set(count);
    }

    /// The secret every request carries.
    pub(crate) fn secret(&self) -> &ClusterSecret {
        &self.secret
    }

    /// The channel to `addr` (`host:port`), created on first use. Creating one does not
    /// connect: tonic connects on the first call and reconnects after a failure by itself.
    pub fn channel(&self, addr: &str) -> Result<Channel, RpcError> {
        Ok(self.peer(addr)?.channel)
    }

    /// The pipe to `addr` (see `pipe`): the frequent small calls go this way.
    pub fn pipe(&self, addr: &str) -> Result<PeerPipe, RpcError> {
        Ok(self.peer(addr)?.pipe)
    }

    fn peer(&self, addr: &str) -> Result<Peer, RpcError> {
        let mut channels = self.channels.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(peer) = channels.get(addr) {
            return Ok(peer.clone());
        }
        let bad = |reason: String| RpcError::BadAddress {
            addr: addr.to_string(),
            reason,
        };
        if addr.is_empty() || addr.contains("://") || addr.contains('/') {
            return Err(bad("expected host:port".into()));
        }
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}")).map_err(|e| bad(e.to_string()))?;
        if let Some(tls) = &self.tls {
            // The name checked in the peer's certificate is the host of `addr`.
            endpoint = endpoint.tls_config(tls.client()).map_err(|e| bad(e.to_string()))?;
        }
        let channel = endpoint
            .connect_timeout(CONNECT_TIMEOUT)
            .local_address(self.local_ip)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5))
            .keep_alive_while_idle(true)
            .initial_stream_window_size(STREAM_WINDOW_BYTES)
            .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
            .connect_lazy();
        let peer = Peer {
            pipe: PeerPipe::new(addr, channel.clone(), self.secret.clone(), self.groups_with.clone()),
            channel,
        };
        channels.insert(addr.to_string(), peer.clone());
        Ok(peer)
    }

    /// True if the peer at `addr` announced a wire level of at least `level` on its newest pipe
    /// stream; false for a peer not talked to yet.
    pub fn peer_reads(&self, addr: &str, level: u8) -> bool {
        let channels = self.channels.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        channels
            .get(addr)
            .is_some_and(|peer| peer.pipe.peer_wire_level() >= level)
    }

    /// Drops the channel to `addr` (a node left the cluster); a later call makes a new one.
    pub fn forget(&self, addr: &str) {
        self.channels
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(addr);
    }

    /// Number of peer channels (one per address ever used and not forgotten).
    pub fn len(&self) -> usize {
        self.channels
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .len()
    }

    /// True if no channel was created yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool() -> PeerChannels {
        PeerChannels::new(ClusterSecret::new("0123456789abcdef-secret").unwrap())
    }

    #[tokio::test]
    async fn one_channel_per_address_is_shared_by_every_partition() {
        let peers = pool();
        peers.channel("127.0.0.1:7001").unwrap();
        peers.channel("127.0.0.1:7001").unwrap();
        peers.channel("127.0.0.1:7002").unwrap();
        assert_eq!(peers.len(), 2);
        peers.forget("127.0.0.1:7001");
        assert_eq!(peers.len(), 1);
    }

    #[tokio::test]
    async fn addresses_with_a_scheme_or_path_are_refused() {
        let peers = pool();
        assert!(matches!(peers.channel("http://a:1"), Err(RpcError::BadAddress { .. })));
        assert!(matches!(peers.channel(""), Err(RpcError::BadAddress { .. })));
        assert!(peers.is_empty());
    }
}
