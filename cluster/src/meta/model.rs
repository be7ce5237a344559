//! Records of the meta group: the cluster's members and the partition layout. Persisted in the
//! meta group's state machine and replicated to every node, so each reads them locally.

use serde::{Deserialize, Serialize};

/// Node identity (the `--node-id` flag). Declared with the member records that carry it, so
/// the records depend on nothing above them (openraft's `TypeConfig` in `types.rs` uses it).
pub type NodeId = u64;

/// Lifecycle of a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    /// Admitted to the meta group, not yet holding partitions.
    Joining,
    /// Holds partitions and serves.
    Active,
    /// Being emptied before removal (`ringchat cluster remove`).
    Draining,
    /// Gone: failed past the grace period, or removed.
    Dead,
}

impl NodeState {
    /// The PROTOCOL §4 name.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Joining => "joining",
            NodeState::Active => "active",
            NodeState::Draining => "draining",
            NodeState::Dead => "dead",
        }
    }
}

/// One member of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// `--node-id`.
    pub node_id: NodeId,
    /// Address other nodes use for gRPC (`--advertise`).
    pub cluster_addr: String,
    /// Client HTTP + WebSocket address (`--listen`), shown by `cluster status`.
    pub client_addr: String,
    /// Lifecycle state.
    pub state: NodeState,
}

/// A Raft group whose members never change, named by its replica set (preferred leader
/// first): every partition placed on that set is carried by it (docs/raft-groups.md). Its id
/// is never reused, so a group dropped and a group defined later can never be mixed up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupRecord {
    /// Group id, from `FIRST_SET_GROUP` up (ids below it are the partitions' own groups).
    pub id: u16,
    /// Its voters, preferred leader first; fixed for the group's life.
    pub replicas: Vec<NodeId>,
}

/// The first id of a group named by a replica set. Partitions are numbered below it (their
/// own groups keep `id = partition`), the meta group and node-wide keys above the last one.
pub const FIRST_SET_GROUP: u16 = 0x8000;
/// The last id a group named by a replica set may take.
pub const LAST_SET_GROUP: u16 = 0xFFFD;

/// The last move of one partition, committed by the meta leader when it starts and again when
/// it finishes (with the layout entry it changes): the layout's history of moves in flight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoveRecord {
    /// Replicas before the move (the committed layout's entry when it started).
    pub from: Vec<NodeId>,
    /// Replicas it moves to: the partition's target, preferred leader first.
    pub to: Vec<NodeId>,
    /// Unix ms (meta leader's clock) when the move started.
    pub started_ms: u64,
    /// Unix ms when its layout entry was committed; `None` while it runs.
    pub finished_ms: Option<u64>,
}

/// The committed partition layout: which nodes replicate each partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Layout {
    /// Increases with every committed change; a stale proposal (lower or equal) is ignored.
    pub version: u64,
    /// `replicas[p]`: the voters of partition `p`, preferred leader first.
    pub replicas: Vec<Vec<NodeId>>,
}
