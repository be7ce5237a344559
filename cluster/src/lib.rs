//! ringchat cluster layer: partition Raft groups (openraft) over fjall storage, placement of
//! ids onto partitions, and the `Cluster` handle the node uses for every read and write.
//!
//! A single node is the same system with one voter per partition; the cluster work adds peers
//! (tonic network), a meta group and partition moves without changing the write path.

pub mod clock;
pub mod cluster;
pub mod codec;
pub mod command;
pub mod delivery;
pub mod error;
pub mod group_events;
pub mod hosting;
pub mod leader_calls;
pub mod liveness;
pub mod local;
pub mod log_throttle;
pub(crate) mod lost_state;
pub mod message_cache;
pub mod meta;
pub mod model;
pub mod network;
pub mod partition;
pub mod placement;
pub mod proposal_packer;
pub mod query;
pub mod raft_health;
pub mod reads;
pub mod router;
pub mod rpc;
pub mod types;

pub use cluster::{Cluster, ClusterConfig, LocalDelivery};
pub use command::{ApplyError, Command, Response};
pub use delivery::CommitEvents;
pub use error::ClusterError;
pub use leader_calls::LeaderHint;
pub use local::{HostedPartitions, LocalPartitions, Replica};
pub use model::*;
pub use query::{Query, QueryResult};
pub use router::{ReplicaHints, RetryPolicy, Router};
pub use types::{NodeId, TypeConfig};
