//! The receiving side of `MemberService`: joins, status, replica moves and deliveries, handed
//! to the node's `Cluster`. Served on the same port as the Raft service, behind the same
//! secret check.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::member_proto::member_service_server::MemberService;
use super::member_proto::Json;
use super::node_server::LEADER_ADDR_METADATA_KEY;
use crate::cluster::Cluster;
use crate::codec::{decode, encode};
use crate::error::ClusterError;
use crate::liveness::state::Beat;
use crate::meta::membership::NotHere;
use crate::meta::partition_copy::ChunkStream;
use crate::meta::{CopyRequest, DeliveryBatch, NodeInfo, PartitionRead, ReplicaChange, StatusRequest};
use crate::types::NodeId;

/// `MemberService` of one node.
pub struct MemberRpcService {
    cluster: Arc<Cluster>,
}

impl MemberRpcService {
    /// The service answering for `cluster`.
    pub fn new(cluster: Arc<Cluster>) -> Self {
        MemberRpcService { cluster }
    }
}

fn json<T: serde::Serialize>(value: &T) -> Result<Response<Json>, Status> {
    let payload = encode(value);
    Ok(Response::new(Json { payload }))
}

fn payload<T: serde::de::DeserializeOwned>(request: Request<Json>) -> Result<T, Status> {
    decode(&request.into_inner().payload).map_err(|e| Status::invalid_argument(e.to_string()))
}

fn not_here(e: NotHere) -> Status {
    match e {
        NotHere::NotLeader(addr) => {
            let mut status = Status::failed_precondition("not the leader");
            if let Some(value) = addr.and_then(|a| a.parse().ok()) {
                status.metadata_mut().insert(LEADER_ADDR_METADATA_KEY, value);
            }
            status
        }
        NotHere::Failed(e) => cluster_error(e),
    }
}

fn cluster_error(e: ClusterError) -> Status {
    match e {
        ClusterError::Rejected(r) => Status::invalid_argument(r.to_string()),
        ClusterError::Unavailable(m) => Status::unavailable(m),
        other => Status::internal(other.to_string()),
    }
}

#[tonic::async_trait]
impl MemberService for MemberRpcService {
    async fn join(&self, request: Request<Json>) -> Result<Response<Json>, Status> {
        let node: NodeInfo = payload(request)?;
        let reply = self.cluster.admit(node).await.map_err(not_here)?;
        json(&reply)
    }

    async fn status(&self, request: Request<Json>) -> Result<Response<Json>, Status> {
        let ask: StatusRequest = payload(request)?;
        let status = if ask.local_only {
            self.cluster.local_status()
        } else {
            self.cluster.status().await
        }
        .map_err(cluster_error)?;
        json(&status)
    }

    async fn change_replicas(&self, request: Request<Json>) -> Result<Response<Json>, Status> {
        let change: ReplicaChange = payload(request)?;
        self.cluster.change_replicas(&change).await.map_err(not_here)?;
        json(&())
    }

    async fn remove(&self, request: Request<Json>) -> Result<Response<Json>, Status> {
        let node: NodeId = payload(request)?;
        self.cluster.begin_removal(node).await.map_err(not_here)?;
        json(&())
    }

    async fn detail(&self, request: Request<Json>) -> Result<Response<Json>, Status> {
        let ask: StatusRequest = payload(request)?;
        if ask.local_only {
            json(&self.cluster.local_detail())
        } else {
            json(&self.cluster.status_detail().await)
        }
    }

    async fn endpoint(&self, _request: Request<Json>) -> Result<Response<Json>, Status> {
        json(&self.cluster.local_endpoint())
    }

    async fn beat(&self, request: Request<Json>) -> Result<Response<Json>, Status> {
        let beat: Beat = payload(request)?;
        json(&self.cluster.on_beat(&beat))
    }

    async fn copy_partition(&self, request: Request<Json>) -> Result<Response<Json>, Status> {
        let copy: CopyRequest = payload(request)?;
        let records = self.cluster.copy_partition_here(&copy).await.map_err(cluster_error)?;
        json(&records)
    }

    type ReadPartitionStream = ChunkStream;

    async fn read_partition(&self, request: Request<Json>) -> Result<Response<ChunkStream>, Status> {
        let read: PartitionRead = payload(request)?;
        let chunks = self.cluster.read_partition(read).await.map_err(cluster_error)?;
        Ok(Response::new(chunks))
    }

    async fn deliver(&self, request: Request<Json>) -> Result<Response<Json>, Status> {
        let batch: DeliveryBatch = payload(request)?;
        if let Some(delivery) = self.cluster.delivery.get() {
            delivery.deliver(batch);
        }
        json(&())
    }
}
