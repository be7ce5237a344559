//! The receiving side: the task that serves the Raft service (`raft_server.rs`), the pipe, node
//! and member services on one port until shutdown.

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::TcpIncoming;

use super::auth::{ClusterAccess, SecretCheck};
use super::error::RpcError;
use super::member_proto::member_service_server::MemberServiceServer;
use super::member_server::MemberRpcService;
use super::node_server::NodeRpcService;
use super::pipe_proto::pipe_service_server::PipeServiceServer;
use super::pipe_server::PipeRpcService;
use super::proto::node::node_service_server::NodeServiceServer;
use super::proto::raft_service_server::RaftServiceServer;
use super::raft_server::RaftRpcService;
use super::{CONNECTION_WINDOW_BYTES, MAX_MESSAGE_BYTES, PIPE_MESSAGE_BYTES, STREAM_WINDOW_BYTES};

/// What a node's RPC server answers: the Raft transport always, and the node service (writes
/// and reads forwarded to a partition leader) on nodes that route.
///
/// A `RaftRpcService` converts into it alone, so callers that only replicate keep calling
/// `spawn_server(listener, raft_service, ..)`.
pub struct NodeServices {
    raft: RaftRpcService,
    node: Option<NodeRpcService>,
    member: Option<MemberRpcService>,
}

impl NodeServices {
    /// Both services on one port, behind the same secret check.
    pub fn new(raft: RaftRpcService, node: NodeRpcService) -> Self {
        NodeServices {
            raft,
            node: Some(node),
            member: None,
        }
    }

    /// Also serve `member` (joins, status, replica moves, deliveries).
    pub fn with_member(mut self, member: MemberRpcService) -> Self {
        self.member = Some(member);
        self
    }
}

impl From<RaftRpcService> for NodeServices {
    fn from(raft: RaftRpcService) -> Self {
        NodeServices {
            raft,
            node: None,
            member: None,
        }
    }
}

/// Serves `services` on `listener` until `shutdown` is cancelled, refusing every request that
/// lacks the secret of `access` (one interceptor in front of every service) and, with its TLS,
/// every connection without a client certificate of the cluster CA.
///
/// The returned task owns the server: after cancelling `shutdown`, await it to know that the
/// listener is closed and in-flight RPCs have finished. It ends with an error only if serving
/// itself failed.
pub fn spawn_server(
    listener: TcpListener,
    services: impl Into<NodeServices>,
    access: impl Into<ClusterAccess>,
    shutdown: CancellationToken,
) -> JoinHandle<Result<(), RpcError>> {
    let NodeServices { raft, node, member } = services.into();
    let ClusterAccess { secret, tls } = access.into();
    let raft = Arc::new(raft);
    let node = node.map(Arc::new);
    let member = member.map(Arc::new);
    let pipe = InterceptedService::new(
        PipeServiceServer::new(PipeRpcService::new(
            raft.clone(),
            node.clone(),
            member.clone(),
            shutdown.clone(),
        ))
        .max_decoding_message_size(PIPE_MESSAGE_BYTES)
        .max_encoding_message_size(PIPE_MESSAGE_BYTES),
        SecretCheck(secret.clone()),
    );
    let raft = InterceptedService::new(
        RaftServiceServer::from_arc(raft)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES),
        SecretCheck(secret.clone()),
    );
    let member = member.map(|m| {
        InterceptedService::new(
            MemberServiceServer::from_arc(m)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
            SecretCheck(secret.clone()),
        )
    });
    let node = node.map(|node| {
        InterceptedService::new(
            NodeServiceServer::from_arc(node)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
            SecretCheck(secret),
        )
    });
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    tokio::spawn(async move {
        let mut builder = tonic::transport::Server::builder();
        if let Some(tls) = tls {
            // Checked when the files were loaded (`ClusterTls::from_pem`), so this fails only
            // if that check was skipped.
            builder = builder.tls_config(tls.server())?;
        }
        builder
            .initial_stream_window_size(STREAM_WINDOW_BYTES)
            .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
            .add_service(pipe)
            .add_service(raft)
            .add_optional_service(node)
            .add_optional_service(member)
            .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
            .await?;
        Ok(())
    })
}
