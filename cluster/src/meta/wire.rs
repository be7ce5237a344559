//! Payloads of the member RPCs (`proto/member.proto`), encoded by `codec.rs` on the wire. `ClusterStatus`
//! is also exactly the `ringchat cluster status --json` object of PROTOCOL §4.

use serde::{Deserialize, Serialize};

use crate::types::NodeId;

/// What a joining node learns from the meta leader.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinReply {
    /// The cluster's partition count (fixed at bootstrap).
    pub partitions: u16,
    /// The meta leader's id.
    pub leader: NodeId,
}

/// One member in `cluster status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberStatus {
    /// Node id.
    pub node_id: NodeId,
    /// Cluster (gRPC) address.
    pub cluster_addr: String,
    /// Client (HTTP + WebSocket) address.
    pub client_addr: String,
    /// `joining`, `active`, `draining` or `dead`.
    pub state: String,
}

/// One partition in `cluster status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionStatus {
    /// Partition id.
    pub partition: u32,
    /// Its replica set, as committed in the layout.
    pub replicas: Vec<NodeId>,
    /// Its current leader, if any node hosting it knows one.
    pub leader: Option<NodeId>,
}

/// `ringchat cluster status --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// Leader of the meta group (0 if none is known).
    pub meta_leader: NodeId,
    /// Every member.
    pub members: Vec<MemberStatus>,
    /// Every data partition.
    pub partitions: Vec<PartitionStatus>,
}

/// Asks the leader of `partition` to make exactly `voters` its voters.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReplicaChange {
    /// Partition.
    pub partition: u16,
    /// `(node id, cluster address)` of every desired voter.
    pub voters: Vec<(NodeId, String)>,
}

/// Something for the connections on another node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Delivery {
    /// A frame for every local connection of `users` (except those of `except`).
    Frame {
        /// Recipients.
        users: Vec<String>,
        /// A user whose devices are skipped (`typing` is not echoed to the typer).
        except: Option<String>,
        /// The serialized server frame.
        frame: String,
    },
    /// A user's first connection on `node` opened, or its last one there closed.
    Presence {
        /// The user.
        user_id: String,
        /// The node reporting.
        node: NodeId,
        /// Whether the user now has a connection on `node`.
        online: bool,
        /// When the connection ended, for `online == false`.
        last_seen: Option<u64>,
    },
    /// A session was logged out: close its connections with 4001 (PROTOCOL §2: the token
    /// stops working on every node, and every socket of the session is closed).
    CloseSession {
        /// The session's user (its connections are found by user).
        user_id: String,
        /// The session (hash of its token).
        token_hash: String,
    },
    /// Every user with a connection on `node`, replacing what the receiver knew of it. Sent
    /// first whenever a link (re)starts, so presence heals after a lost batch or a restart.
    PresenceSnapshot {
        /// The node reporting.
        node: NodeId,
        /// Its users.
        users: Vec<String>,
    },
}

/// Deliveries batched for one node: one RPC carries many.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct DeliveryBatch {
    /// In the order they were produced.
    pub items: Vec<Delivery>,
}

/// What a `status` call asks for: the whole cluster's view (the operator CLI), or only what
/// the answering node knows itself (one member asking the others while building the former).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct StatusRequest {
    /// Answer from local state only, asking no other member.
    pub local_only: bool,
}

/// Copy partition `partition` to the node asked, from a replica of `from` that applied its
/// fence at log index `after` (`meta/partition_copy.rs`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyRequest {
    /// The partition.
    pub partition: u16,
    /// The group it moves out of.
    pub from: u16,
    /// The log index of its fence there.
    pub after: u64,
    /// Cluster addresses of the replicas of `from` to read it from, in order of preference.
    pub sources: Vec<String>,
}

/// Send partition `partition`'s data as group `from` left it at its fence at `after`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionRead {
    /// The partition.
    pub partition: u16,
    /// The group it moves out of.
    pub from: u16,
    /// The log index of its fence there.
    pub after: u64,
}
