//! What operators and client authors see around the chat itself: service discovery
//! (`GET /v1/nodes`), the node's logs, its metrics, and `cluster status`.

mod discovery;
mod logs;
mod metrics;
mod status;
