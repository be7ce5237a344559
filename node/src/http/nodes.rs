//! `GET /v1/nodes` (PROTOCOL v1.1): service discovery, no token needed. The active nodes'
//! public client URLs and live connection counts, gathered by `Cluster::endpoints`.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use ringchat_cluster::meta::NodeEndpoint;
use serde::Serialize;

use crate::app::AppState;

/// The `GET /v1/nodes` body.
#[derive(Serialize)]
pub struct NodesBody {
    /// One entry per active node that answered, by node id.
    pub nodes: Vec<NodeEndpoint>,
}

/// `GET /v1/nodes`.
pub async fn list(State(app): State<Arc<AppState>>) -> Json<NodesBody> {
    Json(NodesBody {
        nodes: app.cluster.endpoints().await,
    })
}
