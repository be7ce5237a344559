//! Node-to-node transport of partition Raft groups: tonic gRPC over one channel per node pair,
//! the partition id in every request, client-streaming snapshots, and a shared cluster secret;
//! plus the node service that carries writes and reads forwarded to a partition leader.
//!
//! See `docs/node-rpc.md` for why it is shaped this way. The single-node path keeps using
//! `network::NoPeers`.

pub mod auth;
pub mod bulk_budget;
pub mod channels;
pub mod client;
pub mod error;
pub mod member_server;
pub mod node_server;
pub mod peer_health;
pub mod pipe;
pub mod pipe_server;
pub mod raft_server;
pub mod registry;
pub mod server;
pub mod tls;
pub mod withheld_commits;

/// Code generated from `proto/raft.proto` (and, in `node`, from `proto/node.proto`).
#[allow(clippy::all, missing_docs)]
pub mod proto {
    tonic::include_proto!("ringchat.raft.v1");

    /// Code generated from `proto/node.proto`: writes and reads forwarded to a leader.
    #[allow(clippy::all, missing_docs)]
    pub mod node {
        tonic::include_proto!("ringchat.node.v1");
    }
}

/// Code generated from `proto/pipe.proto`: the batched stream of frequent calls.
#[allow(clippy::all, missing_docs)]
pub mod pipe_proto {
    tonic::include_proto!("ringchat.pipe.v1");
}

/// Code generated from `proto/member.proto`.
#[allow(clippy::all, missing_docs)]
pub mod member_proto {
    tonic::include_proto!("ringchat.member.v1");
}

pub use auth::{ClusterAccess, ClusterSecret, SECRET_METADATA_KEY};
pub use channels::PeerChannels;
pub use client::{GrpcNetwork, GrpcPeer};
pub use error::RpcError;
pub use member_server::MemberRpcService;
pub use node_server::{NodeRpcService, LEADER_ADDR_METADATA_KEY, LEADER_METADATA_KEY};
pub use pipe::PeerPipe;
pub use pipe_proto::Method;
pub use raft_server::RaftRpcService;
pub use registry::{GroupRegistry, PartitionGroups};
pub use server::{spawn_server, NodeServices};
pub use tls::ClusterTls;

/// Largest gRPC message either side accepts or sends. An AppendEntries batch carries up to
/// openraft's `max_payload_entries` commands of up to ~400 KiB each (100,000 characters of UTF-8); tonic's
/// 4 MiB default would wedge replication on a burst of long messages.
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// What this release's node-to-node messages may contain, announced on every pipe stream it
/// answers (`x-ringchat-wire`): every level below it too. A peer that announces less
/// (releases before levels announce nothing: 1) is never sent what it cannot decode.
pub const WIRE_LEVEL: u8 = CHANNEL_POSITIONS;
/// Wire level 2: log entries may be packed (`Command::Batch`, `proposal_packer.rs`).
pub const PACKED_ENTRIES: u8 = 2;
/// Wire level 3: snapshot streams may be format v2 (with their checksum,
/// `partition/snapshot.rs`); a peer below it is sent the same file as v1.
pub const SNAPSHOT_V2: u8 = 3;
/// Wire level 4: the meta log may carry `Command::MetaRecordMove` (`meta/membership.rs`).
pub const MOVE_RECORDS: u8 = 4;
/// Wire level 5: a group's log may carry `Command::For`, `Adopt`, `Fence` and `Release`, and
/// its snapshots may be format v3 (a group carrying several partitions, docs/raft-groups.md).
pub const PARTITION_GROUPS: u8 = 5;
/// Wire level 6: a partition moves between groups, copied to nodes new to it by the member
/// RPCs `CopyPartition` and `ReadPartition` (`meta/group_move.rs`).
pub const GROUP_MOVES: u8 = 6;
/// Wire level 7: a channel record's stored position may be behind its newest message
/// (`partition/channel_position.rs`), so snapshots and partition copies, which carry stored
/// records as they are, go only to nodes that raise it on reading. A node of an older
/// release numbers messages from the stored record: it gets neither until it is upgraded
/// (its log replication is unaffected: it applies entries with its own code).
pub const CHANNEL_POSITIONS: u8 = 7;
/// The pipe stream's response header that carries `WIRE_LEVEL`.
pub const WIRE_LEVEL_METADATA_KEY: &str = "x-ringchat-wire";

/// Largest `PipeBatch`: one call of `MAX_MESSAGE_BYTES` after a batch's worth of small ones.
pub const PIPE_MESSAGE_BYTES: usize = MAX_MESSAGE_BYTES + pipe::BATCH_BYTES + (1 << 20);

/// HTTP/2 flow-control windows of node-to-node connections (both directions). The pipe puts a
/// peer's calls on one stream, so h2's 64 KiB default stream window would cap a peer's whole
/// traffic at one window per round trip.
pub const STREAM_WINDOW_BYTES: u32 = 8 << 20;
/// Connection window: room for the pipe and a snapshot stream at once.
pub const CONNECTION_WINDOW_BYTES: u32 = 16 << 20;
