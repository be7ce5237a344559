//! Extractors: bearer authentication and JSON bodies whose failures become protocol errors
//! (`invalid`, `too_large`, `unauthorized`) instead of axum's plain-text rejections.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::app::AppState;
use crate::chat::AuthContext;
use crate::error::{ApiError, ErrorCode};

/// Largest request body: a 100,000-char message is ≤ 400 KB of UTF-8, more when escaped.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// The authenticated caller (`Authorization: Bearer <token>`).
pub struct Auth(pub AuthContext);

impl FromRequestParts<Arc<AppState>> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Self, ApiError> {
        let token = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| crate::bearer_token::from_authorization(v.as_bytes()))
            .ok_or_else(ApiError::unauthorized)?;
        Ok(Auth(state.chat.authenticate(token).await?))
    }
}

/// A JSON body of type `T`.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<Arc<AppState>> for JsonBody<T> {
    type Rejection = ApiError;

    /// Reads the whole body within the body-read timeout. A body that does not arrive in time
    /// is answered `invalid`, and hyper closes a connection whose body was left unread, so a
    /// `Content-Length` that never arrives holds its socket no longer than the timeout.
    async fn from_request(req: Request, state: &Arc<AppState>) -> Result<Self, ApiError> {
        let within = Duration::from_millis(state.config.body_read_timeout_ms);
        let body = tokio::time::timeout(within, axum::body::to_bytes(req.into_body(), MAX_BODY_BYTES))
            .await
            .map_err(|_| ApiError::invalid(format!("request body not received within {} ms", within.as_millis())))?
            .map_err(|_| ApiError::new(ErrorCode::TooLarge, "request body is larger than 1 MiB"))?;
        parse_json(&body).map(JsonBody)
    }
}

/// Parses a JSON body with a clear `invalid` error: it must be one object with no duplicate
/// keys (PROTOCOL v1.1, `strict_json.rs`).
pub fn parse_json<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    crate::strict_json::check_object(body).map_err(|e| ApiError::invalid(format!("bad JSON body: {e}")))?;
    serde_json::from_slice(body).map_err(|e| ApiError::invalid(format!("bad JSON body: {e}")))
}
