//! Client-facing errors: the PROTOCOL error codes, their HTTP statuses, and the one place that
//! maps cluster errors onto them.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ringchat_cluster::log_throttle::{LogThrottle, EVERY_30_S};
use ringchat_cluster::{ApplyError, ClusterError};
use serde_json::json;

/// A protocol error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// 400
    Invalid,
    /// 400
    GroupFull,
    /// 401
    Unauthorized,
    /// 403
    Forbidden,
    /// 404
    NotFound,
    /// 409
    Conflict,
    /// 413
    TooLarge,
    /// 429
    RateLimited,
    /// 500
    Internal,
    /// 503
    Unavailable,
}

impl ErrorCode {
    /// The wire string.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Invalid => "invalid",
            ErrorCode::GroupFull => "group_full",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Conflict => "conflict",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Internal => "internal",
            ErrorCode::Unavailable => "unavailable",
        }
    }

    /// The HTTP status.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::Invalid | ErrorCode::GroupFull => StatusCode::BAD_REQUEST,
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::Forbidden => StatusCode::FORBIDDEN,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::Conflict => StatusCode::CONFLICT,
            ErrorCode::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// An error to show a client: a code and a human message.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}: {message}", code.as_str())]
pub struct ApiError {
    /// Protocol code.
    pub code: ErrorCode,
    /// Human text.
    pub message: String,
    /// Seconds for a `Retry-After` header (`rate_limited`).
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error with `code` and `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            retry_after: None,
        }
    }
    /// The same error telling the client to wait `secs` seconds before retrying.
    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }
    /// `invalid`.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Invalid, message)
    }
    /// `not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }
    /// `forbidden`.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }
    /// `unauthorized` (counted in `ringchat_auth_failures_total`: every refused token ends here).
    pub fn unauthorized() -> Self {
        metrics::counter!("ringchat_auth_failures_total").increment(1);
        Self::new(ErrorCode::Unauthorized, "missing, invalid or revoked token")
    }
    /// `internal`, logging the cause (never shown to the client).
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(ErrorCode::Internal, "internal error")
    }
}

impl From<ClusterError> for ApiError {
    fn from(e: ClusterError) -> Self {
        match e {
            ClusterError::Rejected(ApplyError::NotFound) => ApiError::not_found("not found"),
            ClusterError::Rejected(ApplyError::Forbidden) => ApiError::forbidden("not allowed"),
            ClusterError::Rejected(ApplyError::GroupFull) => {
                ApiError::new(ErrorCode::GroupFull, "the group is at its member limit")
            }
            ClusterError::Rejected(ApplyError::Invalid(m)) => ApiError::invalid(m),
            ClusterError::Rejected(ApplyError::Conflict) => ApiError::new(ErrorCode::Conflict, "already exists"),
            ClusterError::Unavailable(m) => {
                // Per request, for as long as a partition has no leader: one line per 30 s.
                static UNAVAILABLE: LogThrottle = LogThrottle::new(EVERY_30_S);
                if let Some(held_back) = UNAVAILABLE.allow() {
                    tracing::warn!(reason = %m, held_back, "unavailable");
                }
                ApiError::new(ErrorCode::Unavailable, "the cluster could not commit; retry")
            }
            other => ApiError::internal(other),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code.as_str(), "message": self.message}});
        let mut response = (self.code.status(), axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from(secs));
        }
        response
    }
}
