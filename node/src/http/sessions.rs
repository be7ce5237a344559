//! `POST /v1/sessions`, `DELETE /v1/sessions/current`, `PUT /v1/devices/current/push`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::extract::{Auth, JsonBody};
use crate::app::AppState;
use crate::error::{ApiError, ErrorCode};

/// Login body.
#[derive(Deserialize)]
pub struct LoginBody {
    username: String,
    password: String,
    #[serde(default)]
    device_name: Option<String>,
    #[serde(default)]
    device_id: Option<String>,
}

/// 201 `{token, user_id, device_id}`.
/// Failed logins are throttled per username and per source address (`limits.rs`).
pub async fn login(
    State(app): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    JsonBody(b): JsonBody<LoginBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    app.limits.login_allowed(&b.username, peer.ip())?;
    let s = match app
        .chat
        .login(&b.username, &b.password, b.device_name, b.device_id)
        .await
    {
        Ok(s) => s,
        Err(e) => {
            if e.code == ErrorCode::Unauthorized {
                app.limits.login_failed(&b.username, peer.ip());
            }
            return Err(e);
        }
    };
    Ok((
        StatusCode::CREATED,
        Json(json!({"token": s.token, "user_id": s.user_id, "device_id": s.device_id})),
    ))
}

/// 204; the token stops working and its sockets close.
pub async fn logout(State(app): State<Arc<AppState>>, Auth(auth): Auth) -> Result<StatusCode, ApiError> {
    app.chat.logout(&auth).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Push registration body.
#[derive(Deserialize)]
pub struct PushBody {
    platform: String,
    token: String,
}

/// 204.
pub async fn register_push(
    State(app): State<Arc<AppState>>,
    Auth(auth): Auth,
    JsonBody(b): JsonBody<PushBody>,
) -> Result<StatusCode, ApiError> {
    app.chat.register_push(&auth, &b.platform, &b.token).await?;
    Ok(StatusCode::NO_CONTENT)
}
