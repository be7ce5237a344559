//! `POST /v1/users`, `GET /v1/users/by-name/{username}`, `GET /v1/users/{uid}/presence`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::extract::{Auth, JsonBody};
use crate::app::AppState;
use crate::error::ApiError;

/// Sign-up body.
#[derive(Deserialize)]
pub struct SignupBody {
    username: String,
    password: String,
}

/// 201 `{user_id, username}`; 409 if taken; 429 beyond the source address's sign-ups.
pub async fn signup(
    State(app): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    JsonBody(b): JsonBody<SignupBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    app.limits.signup(peer.ip())?;
    let user = app.chat.signup(&b.username, &b.password).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"user_id": user.user_id, "username": user.username})),
    ))
}

/// 200 `{user_id, username}`.
pub async fn by_name(
    State(app): State<Arc<AppState>>,
    _auth: Auth,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let user = app.chat.user_by_name(&name).await?;
    Ok(Json(json!({"user_id": user.user_id, "username": user.username})))
}

/// 200 `{user_id, status, last_seen}`; 403 unless a channel is shared.
pub async fn presence(
    State(app): State<Arc<AppState>>,
    Auth(auth): Auth,
    Path(uid): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(app.chat.presence(&auth, &uid).await?.to_json()))
}
