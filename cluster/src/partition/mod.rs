//! One partition = one openraft group whose log, vote and state machine live in the node's
//! fjall database under the partition's key prefix.

pub mod apply;
pub mod channel_cache;
pub mod channel_position;
pub mod log_store;
pub mod log_tail;
pub mod overlay;
pub mod ownership;
pub mod range_copy;
pub mod reclaim;
pub mod snapshot;
pub mod snapshot_schedule;
pub mod state_machine;
pub mod tables;
pub mod write_behind;

pub use log_store::LogStore;
pub use snapshot::{verify_snapshot, SnapshotFile};
pub use state_machine::StateMachine;
