//! WebSocket gateway: one task per socket (reader and writer joined), a registry of local
//! connections for fan-out, and the hello/catch-up session start.

pub mod connection;
pub mod frames;
pub mod heartbeat;
pub mod outbox;
pub mod registry;
pub mod revoked;
pub mod session;

pub use registry::{ConnHandle, Registry};
