//! The meta group: one Raft group (partition id `META_PARTITION`, same log store, state machine
//! and transport as the data partitions) whose state is the cluster itself — members and their
//! states, and the committed partition layout. Every node replicates it (voters up to
//! `MAX_META_VOTERS`, the rest learners) and reads it locally.
//!
//! `membership.rs` admits nodes and moves replicas (each move a task of its own, `moves.rs`); `snapshot_fill.rs` makes a moving replica's fill a snapshot; `meta_voters.rs` keeps the meta voters
//! drawn from live members; `wire.rs` holds the payloads of the member RPCs.

pub mod group_move;
pub mod group_records;
pub mod leader_balance;
pub mod leader_handoff;
pub mod membership;
mod meta_voters;
pub mod model;
pub mod moves;
pub mod nodes;
pub mod operator;
pub mod partition_copy;
pub mod regroup;
pub mod removal;
pub mod set_groups;
pub mod snapshot_fill;
pub mod status_detail;
pub mod unused_groups;
pub mod wire;

pub use model::{Layout, MoveRecord, NodeInfo, NodeState};
pub use nodes::NodeEndpoint;
pub use wire::{
    ClusterStatus, CopyRequest, Delivery, DeliveryBatch, JoinReply, MemberStatus, PartitionRead, PartitionStatus,
    ReplicaChange, StatusRequest,
};

/// Partition id of the meta group. Data partitions are `0..P` with P at most a few thousand,
/// and `u16::MAX` prefixes node-wide settings in the `raft` keyspace, so this id is free.
pub const META_PARTITION: u16 = u16::MAX - 1;

/// At most this many meta voters; other members follow the meta group as learners.
pub const MAX_META_VOTERS: usize = 5;
