//! Session start after `hello`: `ready`, then every message above this device's cursor in
//! every channel (ascending per channel), then `caught_up`.
//!
//! The connection is registered for live delivery *before* catch-up reads, so nothing
//! committed in between is missed; a live message may therefore arrive during catch-up and
//! again in it. Clients de-duplicate by `(channel_id, seq)` as the protocol requires.

use serde_json::json;

use super::frames;
use super::ConnHandle;
use crate::app::AppState;
use crate::chat::AuthContext;
use crate::error::ApiError;

/// Messages read per storage call during catch-up.
const CATCH_UP_PAGE: u64 = 200;

/// Sends `ready`, the backlog and `caught_up` to `conn`. Waits for queue room rather than
/// dropping, so a large backlog streams at the client's pace within a bounded queue.
pub async fn start(app: &AppState, auth: &AuthContext, conn: &ConnHandle) -> Result<(), ApiError> {
    let channels = app.chat.channels_with_join(&auth.user_id).await?;
    let ready = json!({
        "type": "ready",
        "user_id": auth.user_id,
        "device_id": auth.device_id,
        "channels": channels.iter().map(|(c, _)| frames::summary(c)).collect::<Vec<_>>(),
        "heartbeat_ms": app.config.heartbeat_ms,
    });
    if !conn.push_wait(frames::text(&ready)).await {
        return Ok(());
    }
    let cursors = app.cluster.get_cursors(&auth.user_id, &auth.device_id).await?;
    for (channel, join_seq) in &channels {
        let cursor = cursors.get(&channel.channel_id).copied().unwrap_or(0).max(*join_seq);
        let mut next = cursor + 1;
        while next <= channel.last_seq {
            let to = channel.last_seq.min(next + CATCH_UP_PAGE - 1);
            let page = app.cluster.get_messages(&channel.channel_id, next, to).await?;
            for m in &page {
                if !conn.push_wait(frames::message_frame(m)).await {
                    return Ok(());
                }
            }
            next = to + 1;
        }
    }
    conn.push_wait(frames::text(&json!({"type": "caught_up"}))).await;
    Ok(())
}
