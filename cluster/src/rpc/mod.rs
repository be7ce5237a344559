//! Node-to-node transport of partition Raft groups: tonic gRPC over one channel per node pair.
//!
//! See `docs/node-rpc.md` for why it is shaped this way.

/// Code generated from `proto/raft.proto`.
#[allow(clippy::all, missing_docs)]
pub mod proto {
    tonic::include_proto!("ringchat.raft.v1");
}
