//! The openraft type configuration, declared once for every partition group.

use crate::command::{Command, Response};

/// Node identity (the `--node-id` flag).
pub type NodeId = u64;

openraft::declare_raft_types!(
    /// Raft types of a ringchat partition group.
    pub TypeConfig:
        D = Command,
        R = Response,
        NodeId = NodeId,
        Node = openraft::BasicNode,
);

/// The Raft handle of one partition.
pub type PartitionRaft = openraft::Raft<TypeConfig, crate::partition::StateMachine>;
