//! The benchmark suite's library: everything the `loadgen`, `relay` and `bench_table` binaries
//! share, kept here so the CI smoke test can drive the same code in-process.
//!
//! One idea per module: `stamp` (send time carried in the message text), `proc_stats` (RSS
//! and CPU of a process), `source_addr` (loopback source addresses so ports do not run out),
//! `population` (users, sessions and channels to drive), `connection` (one WebSocket client),
//! `engine` (open-loop schedule and steps), `report` (JSON lines and Markdown) and `relay`
//! (the physical-limit baseline server).

pub mod connection;
pub mod engine;
pub mod population;
pub mod proc_stats;
pub mod relay;
pub mod report;
pub mod source_addr;
pub mod stamp;

pub use proc_stats::rss_bytes;
