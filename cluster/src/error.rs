//! Typed errors of the cluster layer.

use crate::command::ApplyError;

/// Why a read or write through the cluster failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The state machine refused the command (maps to a protocol error code).
    #[error(transparent)]
    Rejected(#[from] ApplyError),
    /// The partition could not commit right now (no leader, shutting down): safe to retry.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// Storage failed.
    #[error("storage: {0}")]
    Storage(#[from] ringchat_storage::StorageError),
    /// Something that should not happen.
    #[error("internal: {0}")]
    Internal(String),
}
