//! Node-level liveness in place of per-group Raft heartbeats (quiescent partition groups).
//!
//! openraft heartbeats every group to every follower: with 64 partitions that is ~260
//! AppendEntries a second per node pair whether or not anything is written, and it cost an idle
//! 2-node cluster 0.3 cores (docs/raft-heartbeats.md). Instead, data partitions run with
//! openraft's heartbeats and elections off, and each node sends every peer one `Beat` per
//! `BEAT_EVERY` naming the partitions it leads (CockroachDB's coalesced heartbeats). A group
//! with nothing to replicate then sends nothing.
//!
//! Elections are started here instead of by openraft's timer: a voter whose group's leader is
//! unknown, or is a node that stopped beating or no longer claims the partition, starts a
//! pre-vote after a randomized timeout (0.5–1.5 s once its beats are 0.75 s old: 1.25–2.25 s in
//! all, against openraft's 1–2 s). A pre-vote cannot unseat
//! a leader a quorum still follows, and the timeout is randomized per attempt so two voters
//! rarely campaign at once. A node that still claims a partition whose group has moved on to a
//! higher term is told so in the beat's answer and heartbeats that group once, which makes
//! openraft step it down.
//!
//! The meta group keeps openraft's own heartbeats: it is one group, and the meta leader reads
//! member silence from them (`meta/membership.rs`).

pub mod state;
mod task;
