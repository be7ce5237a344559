//! The openraft type configuration, declared once for every partition group.

use crate::command::{Command, Response};
pub use crate::meta::model::NodeId;

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

/// True if this replica is its group's only voter: nobody else holds a copy to read from or
/// to refill it from.
pub(crate) fn only_voter_is_self(raft: &PartitionRaft) -> bool {
    let metrics = raft.metrics();
    let m = openraft::async_runtime::watch::WatchReceiver::borrow_watched(&metrics);
    let mut voters = m.membership_config.membership().voter_ids().peekable();
    let alone = voters.peek().is_some() && voters.all(|v| v == m.id);
    alone
}
