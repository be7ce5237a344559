//! Counts every HTTP request by route and status (`ringchat_http_requests_total`) and times it
//! (`ringchat_http_request_seconds`). The route is the matched pattern (`/v1/channels/{cid}/messages`),
//! never the raw path: ids in paths would make one series per channel.

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;

/// The middleware (`axum::middleware::from_fn`).
pub async fn record(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("ringchat_http_requests_total", "route" => route.clone(), "status" => status).increment(1);
    metrics::histogram!("ringchat_http_request_seconds", "route" => route).record(started.elapsed().as_secs_f64());
    response
}
