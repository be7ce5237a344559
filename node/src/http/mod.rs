//! HTTP API routes (PROTOCOL §2), one file per resource, plus the extractors that turn
//! requests into validated input and client errors into the protocol's error bodies.

pub mod channels;
pub mod extract;
pub mod health;
pub mod messages;
pub mod nodes;
pub mod request_metrics;
pub mod serve;
pub mod sessions;
pub mod users;
pub mod web_page;
pub mod ws;

use std::sync::Arc;

use axum::routing::{delete, get, post, put};
use axum::Router;

use crate::app::AppState;
use crate::error::ApiError;

/// All client-port routes.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(web_page::index))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/v1/nodes", get(nodes::list))
        .route("/v1/users", post(users::signup).get(users::by_ids))
        .route("/v1/users/by-name/{username}", get(users::by_name))
        .route("/v1/users/{uid}", get(users::by_id))
        .route("/v1/users/{uid}/presence", get(users::presence))
        .route("/v1/sessions", post(sessions::login))
        .route("/v1/sessions/current", delete(sessions::logout))
        .route("/v1/devices/current/push", put(sessions::register_push))
        .route("/v1/dms", post(channels::open_dm))
        .route("/v1/groups", post(channels::create_group))
        .route("/v1/channels", get(channels::list))
        .route("/v1/channels/{cid}/members", post(channels::add_member))
        .route("/v1/channels/{cid}/members/{uid}", delete(channels::remove_member))
        .route(
            "/v1/channels/{cid}/messages",
            post(messages::send).get(messages::history),
        )
        .route("/v1/ws", get(ws::upgrade))
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .method_not_allowed_fallback(|| async { ApiError::invalid("method not allowed on this endpoint") })
        .route_layer(axum::middleware::from_fn(request_metrics::record))
        .with_state(state)
}
