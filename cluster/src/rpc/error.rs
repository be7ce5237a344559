//! Typed errors of the node-to-node transport.

use std::time::Duration;

/// Why a Raft RPC, the RPC server or its setup failed.
///
/// Inside the transport these are classified once: the client turns them into openraft's
/// `Unreachable` (back off), `Timeout` or `NetworkError` (retry), the server into a gRPC status.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    /// The configured `--cluster-secret` cannot be used (too short, too long or not ASCII).
    #[error("cluster secret must be {min}..={max} visible ASCII characters")]
    BadSecret {
        /// Shortest accepted secret.
        min: usize,
        /// Longest accepted secret.
        max: usize,
    },
    /// The cluster TLS files cannot be used (`--cluster-tls-*`): the reason, with its causes.
    #[error("cluster TLS: {0}")]
    Tls(String),
    /// A peer's advertised address is not a usable `host:port`.
    #[error("bad peer address {addr:?}: {reason}")]
    BadAddress {
        /// The address as found in the membership.
        addr: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The peer could not be reached (connection refused or lost, partition not hosted there).
    #[error("peer unreachable: {0}")]
    Unreachable(String),
    /// The peer answered with an error status.
    #[error("peer answered {code:?}: {message}")]
    Remote {
        /// gRPC status code.
        code: tonic::Code,
        /// The peer's message.
        message: String,
    },
    /// No answer within the RPC's time budget.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// A request or response could not be encoded or decoded.
    #[error("wire encoding: {0}")]
    Encoding(#[from] crate::codec::CodecError),
    /// Reading or writing a snapshot file failed.
    #[error("snapshot file: {0}")]
    Io(#[from] std::io::Error),
    /// The gRPC server stopped with an error.
    #[error("rpc server: {0}")]
    Serve(#[from] tonic::transport::Error),
}

impl RpcError {
    /// Classifies a gRPC status from a call: `Unavailable` is how tonic reports connection
    /// failures, `NotFound` is a peer that does not host the partition (yet); both mean
    /// "back off and try later" rather than "retry now".
    pub(crate) fn from_status(status: tonic::Status) -> Self {
        match status.code() {
            tonic::Code::Unavailable | tonic::Code::NotFound => RpcError::Unreachable(status.message().to_string()),
            code => RpcError::Remote {
                code,
                message: status.message().to_string(),
            },
        }
    }
}
