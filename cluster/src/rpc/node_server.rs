//! The node service: the receiving side of writes and reads forwarded to a partition leader.
//!
//! A handler serves the request on the local replica through the same code path as a request
//! that entered here (`leader_calls::write`, `leader_calls::read`), so the leader answers identically either
//! way. If this node does not lead the partition it says so with a hint instead of forwarding
//! again: the sender's router owns retries, which keeps every request at most one hop.

use std::sync::Arc;

use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status};

use super::proto::node::node_service_server::NodeService;
use super::proto::node::{ReadReply, ReadRequest, WriteReply, WriteRequest};
use crate::codec::{decode, encode};
use crate::command::Command;
use crate::leader_calls::{self, LeaderHint, LocalFailure};
use crate::local::{LocalPartitions, Replica};
use crate::proposal_packer;
use crate::query::Query;
use crate::types::NodeId;

/// Metadata key of a "not leader" answer naming the leader's node id (decimal).
pub const LEADER_METADATA_KEY: &str = "x-ringchat-leader";
/// Metadata key of a "not leader" answer naming the leader's cluster address (`host:port`).
pub const LEADER_ADDR_METADATA_KEY: &str = "x-ringchat-leader-addr";

/// The node service of one node: serves forwarded writes and reads of the partitions it leads.
pub struct NodeRpcService {
    local: Arc<dyn LocalPartitions>,
}

impl NodeRpcService {
    /// A service answering from the replicas in `local` (the node's `Cluster`, or a
    /// `HostedPartitions` in tests and tools).
    pub fn new(local: Arc<dyn LocalPartitions>) -> Self {
        NodeRpcService { local }
    }

    fn replica(&self, partition: u32) -> Result<(u16, Replica), Status> {
        let p = u16::try_from(partition)
            .map_err(|_| Status::invalid_argument(format!("partition {partition} out of range")))?;
        self.local
            .replica(p)
            .map(|replica| (p, replica))
            .ok_or_else(|| Status::not_found(format!("partition {p} is not hosted on this node")))
    }
}

/// The status of a request this node cannot serve.
fn failure_status(p: u16, failure: LocalFailure) -> Status {
    match failure {
        LocalFailure::NotLeader(hint) => not_leader(p, hint.as_ref()),
        LocalFailure::Unavailable(e) => Status::unavailable(format!("partition {p}: {e}")),
        LocalFailure::Storage(e) => Status::internal(format!("partition {p}: storage: {e}")),
    }
}

/// `FailedPrecondition` with the leader hint in metadata, when there is one.
pub fn not_leader(p: u16, hint: Option<&LeaderHint>) -> Status {
    let mut status = Status::failed_precondition(format!("not the leader of partition {p}"));
    if let Some(hint) = hint {
        status
            .metadata_mut()
            .insert(LEADER_METADATA_KEY, MetadataValue::from(hint.id));
        if let Some(addr) = hint.addr.as_deref().and_then(|a| MetadataValue::try_from(a).ok()) {
            status.metadata_mut().insert(LEADER_ADDR_METADATA_KEY, addr);
        }
    }
    status
}

/// Reads the leader hint of a "not leader" answer; malformed or missing metadata is no hint.
pub fn leader_hint(status: &Status) -> Option<LeaderHint> {
    let id: NodeId = status
        .metadata()
        .get(LEADER_METADATA_KEY)?
        .to_str()
        .ok()?
        .parse()
        .ok()?;
    let addr = status
        .metadata()
        .get(LEADER_ADDR_METADATA_KEY)
        .and_then(|v| v.to_str().ok())
        .filter(|a| !a.is_empty())
        .map(str::to_string);
    Some(LeaderHint { id, addr })
}

#[tonic::async_trait]
impl NodeService for NodeRpcService {
    async fn write(&self, request: Request<WriteRequest>) -> Result<Response<WriteReply>, Status> {
        let request = request.into_inner();
        let cmd: Command = decode(&request.command).map_err(|e| Status::invalid_argument(format!("command: {e}")))?;
        let (p, replica, cmd) = match request.group {
            // A named group takes the command as it is (its own business: fence, adopt, release).
            Some(g) => {
                let g = u16::try_from(g).map_err(|_| Status::invalid_argument(format!("group {g} out of range")))?;
                let replica = self
                    .local
                    .group_replica(g)
                    .ok_or_else(|| Status::not_found(format!("group {g} is not hosted on this node")))?;
                (g, replica, cmd)
            }
            None => {
                let (p, replica) = self.replica(request.partition)?;
                let cmd = replica.command_for(p, cmd);
                (p, replica, cmd)
            }
        };
        let response = proposal_packer::write(self.local.packers(), &replica.raft, replica.group, cmd)
            .await
            .map_err(|f| failure_status(p, f))?;
        let response = encode(&response.for_forwarder());
        Ok(Response::new(WriteReply { response }))
    }

    async fn read(&self, request: Request<ReadRequest>) -> Result<Response<ReadReply>, Status> {
        let request = request.into_inner();
        let (p, replica) = self.replica(request.partition)?;
        let query: Query = decode(&request.query).map_err(|e| Status::invalid_argument(format!("query: {e}")))?;
        let result = leader_calls::read(&replica.raft, &replica.store, p, &query, true)
            .await
            .map_err(|f| failure_status(p, f))?;
        let result = encode(&result);
        Ok(Response::new(ReadReply { result }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leader_hint_survives_the_status_metadata() {
        let hint = LeaderHint {
            id: 7,
            addr: Some("10.0.0.7:7100".into()),
        };
        let status = not_leader(3, Some(&hint));
        assert_eq!(status.code(), tonic::Code::FailedPrecondition);
        assert_eq!(leader_hint(&status), Some(hint));
        assert_eq!(leader_hint(&not_leader(3, None)), None);
    }

    #[test]
    fn malformed_leader_metadata_is_no_hint() {
        let mut status = Status::failed_precondition("x");
        status
            .metadata_mut()
            .insert(LEADER_METADATA_KEY, MetadataValue::from_static("seven"));
        assert_eq!(leader_hint(&status), None);
    }
}
