//! WebSocket gateway: one reader and one writer task per socket, a registry of local
//! connections for fan-out, and the hello/catch-up session start.

pub mod connection;
pub mod frames;
pub mod registry;
pub mod session;

pub use registry::{ConnHandle, Registry};
