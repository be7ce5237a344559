//! `GET /v1/nodes` (PROTOCOL v1.1): service discovery, no token needed. The active nodes'
//! public client URLs and live connection counts, gathered by `Cluster::endpoints`.
//!
//! Anyone may call it, and each answer costs one RPC per other member, so answers are cached
//! for `FRESH_FOR`: a flood of requests costs the cluster at most one round per second.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::Json;
use ringchat_cluster::meta::NodeEndpoint;
use serde::Serialize;

use crate::app::AppState;

/// How long one gathered answer is served again.
pub const FRESH_FOR: Duration = Duration::from_secs(1);

/// The last answer and when it was gathered. The lock is held while gathering, so concurrent
/// requests wait for one round instead of starting their own.
#[derive(Default)]
pub struct EndpointsCache(tokio::sync::Mutex<Option<(Instant, Vec<NodeEndpoint>)>>);

/// The `GET /v1/nodes` body.
#[derive(Serialize)]
pub struct NodesBody {
    /// One entry per active node that answered, by node id.
    pub nodes: Vec<NodeEndpoint>,
}

/// `GET /v1/nodes`.
pub async fn list(State(app): State<Arc<AppState>>) -> Json<NodesBody> {
    let mut cached = app.nodes_cache.0.lock().await;
    if let Some((at, nodes)) = &*cached {
        if at.elapsed() < FRESH_FOR {
            return Json(NodesBody { nodes: nodes.clone() });
        }
    }
    let nodes = app.cluster.endpoints().await;
    *cached = Some((Instant::now(), nodes.clone()));
    Json(NodesBody { nodes })
}
