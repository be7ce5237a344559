//! The operator's side of `ringchat cluster status|remove`: one-shot member RPCs to a node.

use std::time::Duration;

use super::membership::member_client;
use super::wire::ClusterStatus;
use crate::codec::{decode, encode};
use crate::error::ClusterError;
use crate::rpc::member_proto::Json;
use crate::rpc::{ClusterSecret, PeerChannels};
use crate::types::NodeId;

fn peers(secret: &str) -> Result<PeerChannels, ClusterError> {
    Ok(PeerChannels::new(
        ClusterSecret::new(secret).map_err(|e| ClusterError::Internal(e.to_string()))?,
    ))
}

/// The cluster status as the node at `addr` sees it (partition leaders gathered from all).
pub async fn fetch_status(addr: &str, secret: &str) -> Result<ClusterStatus, ClusterError> {
    let peers = peers(secret)?;
    let mut client = member_client(&peers, addr)?;
    let reply = tokio::time::timeout(
        Duration::from_secs(15),
        client.status(Json {
            payload: encode(&super::wire::StatusRequest::default()),
        }),
    )
    .await
    .map_err(|_| ClusterError::Unavailable(format!("{addr} did not answer")))?
    .map_err(|s| ClusterError::Unavailable(format!("{addr}: {}", s.message())))?;
    decode(&reply.into_inner().payload).map_err(|e| ClusterError::Internal(e.to_string()))
}

/// Asks the meta leader (found from `addr`) to drain and remove `node`.
pub async fn request_removal(addr: &str, secret: &str, node: NodeId) -> Result<(), ClusterError> {
    let peers = peers(secret)?;
    let payload = encode(&node);
    let mut target = addr.to_string();
    for _ in 0..5 {
        let mut client = member_client(&peers, &target)?;
        match client
            .remove(Json {
                payload: payload.clone(),
            })
            .await
        {
            Ok(_) => return Ok(()),
            Err(status) => match status
                .metadata()
                .get(crate::rpc::LEADER_ADDR_METADATA_KEY)
                .and_then(|v| v.to_str().ok())
            {
                Some(leader) if status.code() == tonic::Code::FailedPrecondition => target = leader.to_string(),
                _ => return Err(ClusterError::Unavailable(format!("{target}: {}", status.message()))),
            },
        }
    }
    Err(ClusterError::Unavailable("could not reach the meta leader".into()))
}
