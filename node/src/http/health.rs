//! `/healthz`, `/readyz`, `/metrics`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;

use crate::app::AppState;

/// 200 while the process is up.
pub async fn healthz() -> &'static str {
    "ok"
}

/// 200 once every partition has a leader here; 503 otherwise (starting, shutting down, a group
/// stopped on a storage error such as a full disk).
pub async fn readyz(State(app): State<Arc<AppState>>) -> (StatusCode, &'static str) {
    if !app.shutdown.is_cancelled() && app.cluster.is_ready() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

/// Prometheus text format.
pub async fn metrics(State(app): State<Arc<AppState>>) -> ([(axum::http::HeaderName, &'static str); 1], String) {
    (
        [(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::metrics::render(&app.metrics, &app.cluster),
    )
}
