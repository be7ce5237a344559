//! The integration tests, one module per area, built as one binary (see `tests/Cargo.toml`).

mod cluster;
mod cluster_chat;
mod cluster_tls;
mod disk_full;
mod docs_and_deploy;
mod durability;
mod hardening;
mod http_api;
mod isolation;
mod leader_delivery;
mod lost_state;
mod operability;
mod partition;
mod power_loss;
mod push;
mod terminal_chat;
mod tls;
mod upgrade;
mod user_lookup;
mod web_client;
mod websocket;
