//! The cluster crate's integration tests, built as one binary (see `Cargo.toml`).

mod common;
mod grpc_replication;
mod packing;
mod routing;
mod snapshots;
