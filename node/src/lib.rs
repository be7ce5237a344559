//! The ringchat node: HTTP API, WebSocket gateway, presence and push on top of the cluster
//! layer. `App` wires it together; `main.rs` is only the command line.

pub mod allocator;
pub mod app;
pub mod auth;
pub mod bearer_token;
pub mod chat;
pub mod commit_delivery;
pub mod config;
pub mod error;
pub mod fanout;
pub mod gateway;
pub mod http;
pub mod limits;
pub mod metrics;
pub mod presence;
pub mod presence_gate;
pub mod push;
pub mod rate_limit;
pub mod status_text;
pub mod storage_recovery;
pub mod strict_json;
pub mod terminal_chat;
pub mod tls;
pub mod validate;

pub use app::{App, RunningApp};
pub use config::Config;
