//! Service discovery (`GET /v1/nodes`, PROTOCOL v1.1): every active member's public client URL
//! and live connection count, so a client or load balancer can pick the least loaded node.
//!
//! Which nodes are active comes from the meta replica; each active peer is then asked over the
//! member RPC (`Endpoint`) with a short timeout, all at once, and answers with its own current
//! URL and connection count (neither is replicated: the count changes every second, and the
//! member record's binary shape is part of the data format). A peer that does not answer in time is left
//! out: a node that cannot be reached is no node to send a client to. docs/discovery.md.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::membership::member_client;
use super::model::NodeState;
use crate::cluster::Cluster;
use crate::codec::decode;
use crate::rpc::member_proto::Json;
use crate::types::NodeId;

/// How long one peer may take to report its connection count.
pub const ENDPOINT_TIMEOUT: Duration = Duration::from_millis(500);

/// One entry of `GET /v1/nodes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeEndpoint {
    /// Node id.
    pub node_id: NodeId,
    /// Public client URL (`--public-url`, default `http://<listen>`).
    pub url: String,
    /// Live authenticated WebSocket connections on that node.
    pub connections: u64,
}

impl Cluster {
    /// Sets how this node counts its live client connections (the node's registry).
    pub fn set_connection_count(&self, count: Arc<dyn Fn() -> u64 + Send + Sync>) {
        let _ = self.connection_count.set(count);
    }

    /// This node's own entry.
    pub fn local_endpoint(&self) -> NodeEndpoint {
        NodeEndpoint {
            node_id: self.node_id,
            url: if self.public_url.is_empty() {
                format!("http://{}", self.client_addr)
            } else {
                self.public_url.clone()
            },
            connections: self.connection_count.get().map_or(0, |count| count()),
        }
    }

    /// Every active member's entry, by node id: this node's own, and each peer's as it reports
    /// it within `ENDPOINT_TIMEOUT` (peers that do not answer are left out).
    pub async fn endpoints(&self) -> Vec<NodeEndpoint> {
        let mut out = vec![self.local_endpoint()];
        let (Some(peers), Ok(members)) = (&self.peers, self.members()) else {
            return out;
        };
        // A node being drained or joining is not one to send clients to, this one included.
        if members
            .iter()
            .any(|n| n.node_id == self.node_id && n.state != NodeState::Active)
        {
            out.clear();
        }
        let asks = members
            .into_iter()
            .filter(|n| n.node_id != self.node_id && n.state == NodeState::Active)
            .map(|n| async move {
                let mut client = member_client(peers, &n.cluster_addr).ok()?;
                let reply = tokio::time::timeout(
                    ENDPOINT_TIMEOUT,
                    client.endpoint(Json {
                        payload: b"{}".to_vec(),
                    }),
                )
                .await
                .ok()?
                .ok()?;
                let theirs: NodeEndpoint = decode(&reply.into_inner().payload).ok()?;
                // The record decides which node this is; the URL is the node's own, current one.
                (theirs.node_id == n.node_id).then_some(theirs)
            });
        out.extend(futures_util::future::join_all(asks).await.into_iter().flatten());
        out.sort_by_key(|e| e.node_id);
        out
    }
}
