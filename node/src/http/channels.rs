//! `POST /v1/dms`, `POST /v1/groups`, `GET /v1/channels`, member add/remove.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::extract::{Auth, JsonBody};
use crate::app::AppState;
use crate::error::ApiError;
use crate::gateway::frames::summary;

/// Body naming one user.
#[derive(Deserialize)]
pub struct UserBody {
    user_id: String,
}

/// 200 channel summary (the same channel every time for the pair).
pub async fn open_dm(
    State(app): State<Arc<AppState>>,
    Auth(auth): Auth,
    JsonBody(b): JsonBody<UserBody>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(summary(&app.chat.open_dm(&auth, &b.user_id).await?)))
}

/// Group creation body.
#[derive(Deserialize)]
pub struct GroupBody {
    name: String,
    #[serde(default)]
    members: Vec<String>,
}

/// 201 channel summary.
pub async fn create_group(
    State(app): State<Arc<AppState>>,
    Auth(auth): Auth,
    JsonBody(b): JsonBody<GroupBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let c = app.chat.create_group(&auth, &b.name, &b.members).await?;
    Ok((StatusCode::CREATED, Json(summary(&c))))
}

/// 200 `{channels: [summary…]}`.
pub async fn list(State(app): State<Arc<AppState>>, Auth(auth): Auth) -> Result<Json<Value>, ApiError> {
    let channels: Vec<Value> = app.chat.list_channels(&auth).await?.iter().map(summary).collect();
    Ok(Json(json!({ "channels": channels })))
}

/// 204.
pub async fn add_member(
    State(app): State<Arc<AppState>>,
    Auth(auth): Auth,
    Path(cid): Path<String>,
    JsonBody(b): JsonBody<UserBody>,
) -> Result<StatusCode, ApiError> {
    app.chat.add_member(&auth, &cid, &b.user_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// 204.
pub async fn remove_member(
    State(app): State<Arc<AppState>>,
    Auth(auth): Auth,
    Path((cid, uid)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    app.chat.remove_member(&auth, &cid, &uid).await?;
    Ok(StatusCode::NO_CONTENT)
}
