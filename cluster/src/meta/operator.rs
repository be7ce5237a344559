//! The operator's side of `ringchat cluster status|remove`: one-shot member RPCs to a node.
//!
//! Errors say what went wrong in the operator's terms (`OperatorError`): a bad secret on this
//! side, a node that cannot be reached, one that refused the secret, one that answered with an
//! error. Not everything is `unavailable`.

use std::time::Duration;

use super::membership::member_client;
use super::status_detail::{StatusDetail, StatusRequest};
use super::wire::ClusterStatus;
use crate::codec::{decode, encode};
use crate::rpc::member_proto::Json;
use crate::rpc::{ClusterAccess, PeerChannels, LEADER_ADDR_METADATA_KEY};
use crate::types::NodeId;

/// How long the node asked may take to gather the status from its peers.
const STATUS_TIMEOUT: Duration = Duration::from_secs(15);

/// Why an operator command failed.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    /// `--node` is not an address.
    #[error("invalid --node {addr}: {message}")]
    BadAddress {
        /// As given.
        addr: String,
        /// Why.
        message: String,
    },
    /// Nothing answered at the address (down, wrong port, firewall).
    #[error("unreachable: {addr}: {message}")]
    Unreachable {
        /// The node asked.
        addr: String,
        /// The transport's reason.
        message: String,
    },
    /// The node did not answer in time.
    #[error("timeout: {addr} did not answer within {secs} s")]
    Timeout {
        /// The node asked.
        addr: String,
        /// The wait.
        secs: u64,
    },
    /// The node refused the cluster secret.
    #[error("unauthenticated: {addr} refused the cluster secret (is it the cluster's?)")]
    Unauthenticated {
        /// The node asked.
        addr: String,
    },
    /// The request was refused as invalid (an unknown node id, the last active member…).
    #[error("refused: {0}")]
    Refused(String),
    /// The node answered with another error.
    #[error("{code}: {addr}: {message}")]
    Failed {
        /// The node asked.
        addr: String,
        /// gRPC code, lower case (`unavailable`, `internal`…).
        code: String,
        /// Its message.
        message: String,
    },
    /// The answer did not decode.
    #[error("bad answer from {addr}: {message}")]
    BadAnswer {
        /// The node asked.
        addr: String,
        /// The decoder's reason.
        message: String,
    },
}

type Client = super::membership::MemberClient;

fn client(peers: &PeerChannels, addr: &str) -> Result<Client, OperatorError> {
    member_client(peers, addr).map_err(|e| OperatorError::BadAddress {
        addr: addr.to_string(),
        message: e.to_string(),
    })
}

/// The operator's error for a status a node (or the transport) answered with.
fn from_status(addr: &str, status: &tonic::Status) -> OperatorError {
    use tonic::Code;
    let addr = addr.to_string();
    match status.code() {
        Code::Unauthenticated => OperatorError::Unauthenticated { addr },
        Code::InvalidArgument => OperatorError::Refused(status.message().to_string()),
        // tonic reports a connection that could not be made as `unavailable` with a transport
        // message; a node answering `unavailable` itself says more than "transport error".
        Code::Unavailable if status.message().contains("transport") || status.message().contains("connect") => {
            OperatorError::Unreachable {
                addr,
                message: status.message().to_string(),
            }
        }
        code => OperatorError::Failed {
            addr,
            code: format!("{code:?}").to_lowercase(),
            message: status.message().to_string(),
        },
    }
}

/// One call with the status timeout, its payload decoded.
async fn ask<T: serde::de::DeserializeOwned, F, Fut>(addr: &str, call: F) -> Result<T, OperatorError>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<Json>, tonic::Status>>,
{
    let reply = tokio::time::timeout(STATUS_TIMEOUT, call())
        .await
        .map_err(|_| OperatorError::Timeout {
            addr: addr.to_string(),
            secs: STATUS_TIMEOUT.as_secs(),
        })?
        .map_err(|s| from_status(addr, &s))?;
    decode(&reply.into_inner().payload).map_err(|e| OperatorError::BadAnswer {
        addr: addr.to_string(),
        message: e.to_string(),
    })
}

/// The cluster status as the node at `addr` sees it (partition leaders gathered from all).
pub async fn fetch_status(addr: &str, access: &ClusterAccess) -> Result<ClusterStatus, OperatorError> {
    let peers = PeerChannels::new(access.clone());
    let mut client = client(&peers, addr)?;
    let payload = encode(&StatusRequest::default());
    ask(addr, || client.status(Json { payload })).await
}

/// The status detail (actual voters and learners, reachability) gathered by the node at
/// `addr`; `Ok(None)` from a node of a release without it.
pub async fn fetch_detail(addr: &str, access: &ClusterAccess) -> Result<Option<StatusDetail>, OperatorError> {
    let peers = PeerChannels::new(access.clone());
    let mut client = client(&peers, addr)?;
    let payload = encode(&StatusRequest::default());
    match ask(addr, || client.detail(Json { payload })).await {
        Ok(detail) => Ok(Some(detail)),
        Err(OperatorError::Failed { code, .. }) if code == "unimplemented" => Ok(None),
        Err(e) => Err(e),
    }
}

/// Asks the meta leader (found from `addr`) to drain and remove `node`.
pub async fn request_removal(addr: &str, access: &ClusterAccess, node: NodeId) -> Result<(), OperatorError> {
    let peers = PeerChannels::new(access.clone());
    let payload = encode(&node);
    let mut target = addr.to_string();
    for _ in 0..5 {
        let mut client = client(&peers, &target)?;
        match client
            .remove(Json {
                payload: payload.clone(),
            })
            .await
        {
            Ok(_) => return Ok(()),
            Err(status) => match status
                .metadata()
                .get(LEADER_ADDR_METADATA_KEY)
                .and_then(|v| v.to_str().ok())
            {
                Some(leader) if status.code() == tonic::Code::FailedPrecondition => target = leader.to_string(),
                _ => return Err(from_status(&target, &status)),
            },
        }
    }
    Err(OperatorError::Failed {
        addr: addr.to_string(),
        code: "unavailable".into(),
        message: "could not reach the meta leader".into(),
    })
}
