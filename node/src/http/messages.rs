//! `POST /v1/channels/{cid}/messages` and `GET /v1/channels/{cid}/messages`.

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::extract::{Auth, JsonBody};
use crate::app::AppState;
use crate::error::ApiError;
use crate::gateway::frames::message_object;

/// Send body.
#[derive(Deserialize)]
pub struct SendBody {
    text: String,
    #[serde(default)]
    client_msg_id: Option<String>,
}

/// 201 `{channel_id, seq, ts}` once durable; 200 with the original for a retried id.
pub async fn send(
    State(app): State<Arc<AppState>>,
    Auth(auth): Auth,
    Path(cid): Path<String>,
    JsonBody(b): JsonBody<SendBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    app.limits.send(&auth.user_id)?;
    let (m, duplicate) = app.chat.send_message(&auth, &cid, &b.text, b.client_msg_id).await?;
    let status = if duplicate { StatusCode::OK } else { StatusCode::CREATED };
    Ok((
        status,
        Json(json!({"channel_id": m.channel_id, "seq": m.seq, "ts": m.ts})),
    ))
}

/// 200 `{messages, has_more}`.
pub async fn history(
    State(app): State<Arc<AppState>>,
    Auth(auth): Auth,
    Path(cid): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let (mut before, mut after, mut limit) = (None, None, None);
    for pair in q.as_deref().unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let n = || {
            v.parse::<u64>()
                .map_err(|_| ApiError::invalid(format!("{k} must be a non-negative integer")))
        };
        match k {
            "before" => before = Some(n()?),
            "after" => after = Some(n()?),
            "limit" => limit = Some(n()?),
            _ => return Err(ApiError::invalid(format!("unknown query parameter {k}"))),
        }
    }
    let page = app.chat.history(&auth, &cid, before, after, limit).await?;
    let messages: Vec<Value> = page.messages.iter().map(message_object).collect();
    Ok(Json(json!({"messages": messages, "has_more": page.has_more})))
}
