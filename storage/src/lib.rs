//! ringchat storage: one fjall database per node, holding every partition's Raft log, vote
//! and state machine, plus the key and record codecs they share.
//!
//! Layout (see `docs/storage.md`): three keyspaces, every key prefixed by the partition id
//! so one partition's data can be scanned, snapshotted and dropped as a unit.

pub mod background_priority;
pub mod durable_marks;
pub mod error;
pub mod keys;
pub mod memtable_release;

pub mod store;
pub mod syncer;

pub use durable_marks::{DurableMarks, Mark, Membership};
pub use error::{AtPath, StorageError};
pub use keys::{KeyBuf, KeyReader};

pub use store::Store;
pub use syncer::Syncer;
