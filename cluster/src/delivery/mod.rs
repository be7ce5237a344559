//! Delivery from the partition leader: the leader of a partition applies each committed
//! message and hands it, with the channel's members, to the node's delivery layer, which writes
//! to its own sockets and sends one batched delivery to each node holding a recipient. The node
//! that took the send gets only the `sent` reply (docs/fanout.md).
//!
//! - `commit_events.rs`: what the node implements, and the slot it is set in.
//! - `partition_delivery.rs`: per partition, whether this replica leads, and the recent
//!   commits a new leader delivers again (the old one may have died before delivering them).
//! - `leader_watch.rs`: follows a group's leadership and flips the above.

pub mod commit_events;
pub mod leader_watch;
pub mod partition_delivery;

pub use commit_events::{CommitEvents, CommitSink};
pub use partition_delivery::PartitionDelivery;
