//! One WebSocket connection: a reader task (this one) that authenticates, runs catch-up and
//! handles requests in order, and a writer task that drains the bounded outbound queue to the
//! socket. Either side ends the connection through `ConnControl`, with a close code.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::time::timeout;
use tracing::Instrument;

use super::frames::{self, ClientFrame, Ref};
use super::registry::*;
use super::session;
use crate::app::AppState;
use crate::chat::AuthContext;
use crate::error::{ApiError, ErrorCode};
use crate::presence::MAX_WATCHED_PER_CONNECTION;
use crate::rate_limit::Bucket;

/// A write to the socket that takes longer than this means the client is not reading.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for a close frame to get through to the client.
const CLOSE_FRAME_TIMEOUT: Duration = Duration::from_secs(10);
/// Frames of any kind per second per connection before it counts as abuse (4008).
const FRAME_RATE: f64 = 100.0;
/// Burst of frames of any kind.
const FRAME_BURST: f64 = 300.0;

/// Serves an upgraded socket until it closes.
///
/// One task per connection: the reader (hello, catch-up, requests in order) and the writer
/// (drains the outbox) are two futures joined here, so a slow request never stalls the
/// frames going out, and an idle connection costs one task, not two.
///
/// This future lives as long as the connection, so everything that runs only once (the hello,
/// the closes) is boxed: inline, their states would sit in every idle connection's task
/// (measured: 2.6 kB of the task's future before, most of it the hello and close paths).
pub fn serve(socket: WebSocket, app: Arc<AppState>) -> impl std::future::Future<Output = ()> {
    // Split before the future exists: an async fn keeps its arguments in the future for its
    // whole life, and the unsplit socket is ~400 B that every idle connection would carry.
    let (sink, stream) = socket.split();
    serve_split(sink, stream, app)
}

async fn serve_split(mut sink: SplitSink<WebSocket, Message>, mut stream: SplitStream<WebSocket>, app: Arc<AppState>) {
    let auth = match Box::pin(hello(&app, &mut stream, &mut sink)).await {
        Some(accepted) => accepted,
        None => return,
    };
    let conn = ConnHandle::new(
        &auth.user_id,
        &auth.device_id,
        &auth.token_hash,
        app.config.outbound_queue,
    );
    Box::pin(app.presence.connected(conn.clone())).await;
    // Shutdown closes every registered connection (`Registry::close_all`) right after it
    // cancels `app.shutdown`; one registered just after that sweep sees the cancellation here.
    if app.shutdown.is_cancelled() {
        conn.close(CLOSE_GOING_AWAY);
    }
    let reader = async {
        // A debug span: at info level an enabled span per connection is formatted and kept
        // (~200 B of every idle connection); events that matter name the user themselves.
        let span = tracing::debug_span!("ws", user = %auth.user_id, device = %auth.device_id);
        let mut watched: Vec<String> = Vec::new();
        if let Err(e) = Box::pin(session::start(&app, &auth, &conn)).await {
            tracing::warn!(error = %e, user = %auth.user_id, device = %auth.device_id, "catch-up failed");
            conn.close(1011);
        }
        read_loop(&app, &auth, &conn, &mut stream, &mut watched)
            .instrument(span)
            .await;
        conn.close(CLOSE_GOING_AWAY);
        Box::pin(app.presence.disconnected(&conn, &watched)).await;
    };
    tokio::join!(reader, write_loop(&mut sink, &conn));
}

/// Waits for the client's hello and authenticates it; on failure closes the socket with the
/// matching code and returns `None`.
async fn hello(
    app: &AppState,
    stream: &mut SplitStream<WebSocket>,
    sink: &mut SplitSink<WebSocket, Message>,
) -> Option<AuthContext> {
    let hello_deadline = Duration::from_millis(app.config.hello_timeout_ms);
    let refused = match timeout(hello_deadline, stream.next()).await {
        Err(_) => (CLOSE_PROTOCOL, "no hello within 10 s"),
        Ok(None) => return None,
        // A frame over the size limit gets its 1009 before `hello` too; other read errors mean
        // the socket is gone.
        Ok(Some(Err(e))) => {
            if !is_too_big(e) {
                return None;
            }
            (CLOSE_TOO_BIG, "frame too large")
        }
        Ok(Some(Ok(Message::Text(t)))) => match frames::parse(&t) {
            Ok(ClientFrame::Hello { token, .. }) => match Box::pin(app.chat.authenticate(&token)).await {
                Ok(auth) => return Some(auth),
                Err(e) if e.code == ErrorCode::Unauthorized => (CLOSE_UNAUTHORIZED, "invalid token"),
                Err(_) => (1011, "try again"),
            },
            _ => (CLOSE_PROTOCOL, "the first frame must be hello"),
        },
        Ok(Some(Ok(_))) => (CLOSE_PROTOCOL, "the first frame must be a hello text frame"),
    };
    close_now(sink, refused.0, refused.1).await;
    None
}

/// Whether a read failed because the frame was over the size limit (answered with 1009).
fn is_too_big(e: axum::Error) -> bool {
    matches!(
        e.into_inner().downcast_ref::<tokio_tungstenite::tungstenite::Error>(),
        Some(tokio_tungstenite::tungstenite::Error::Capacity(_))
    )
}

/// Sends a close frame and closes. The frame waits behind whatever the socket already holds,
/// which for a slow reader (4008) can be megabytes: it gets `CLOSE_FRAME_TIMEOUT` before the
/// socket is dropped without one.
async fn close_now(sink: &mut SplitSink<WebSocket, Message>, code: u16, reason: &'static str) {
    metrics::counter!("ringchat_ws_closes_total", "code" => code.to_string()).increment(1);
    let frame = CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    };
    let _ = timeout(CLOSE_FRAME_TIMEOUT, sink.send(Message::Close(Some(frame)))).await;
    let _ = timeout(Duration::from_secs(1), sink.close()).await;
}

/// Frames one flush may carry at most.
const FRAMES_PER_FLUSH: usize = 64;

/// Drains the outbox to the socket until a close is requested, then sends the close frame.
/// Every run of queued frames (up to `FRAMES_PER_FLUSH`) goes out with one flush, so a
/// connection that receives several frames at once (a busy group, `sent` next to `message`)
/// costs one write syscall instead of one per frame. The sink is borrowed, not owned: an owned
/// argument stays in the future for its whole life.
async fn write_loop(sink: &mut SplitSink<WebSocket, Message>, conn: &ConnHandle) {
    let mut run: Vec<QueuedFrame> = Vec::new();
    while conn.outbox.next_frames(&mut run, FRAMES_PER_FLUSH).await {
        // Boxed with its timer: the write state exists only while a run goes out, and inline
        // its timer (112 B) would sit in every idle connection.
        let sent = Box::pin(timeout(WRITE_TIMEOUT, send_run(sink, &mut run))).await;
        run.clear();
        match sent {
            Ok(Ok(())) => {}
            // The socket is gone, or the client stopped reading: no close frame can get through.
            Ok(Err(_)) => return conn.close(1006),
            Err(_) => return conn.close(CLOSE_TOO_SLOW),
        }
    }
    let code = conn.outbox.code();
    let reason = match code {
        CLOSE_UNAUTHORIZED => "logged out",
        CLOSE_PROTOCOL => "protocol error",
        CLOSE_TOO_SLOW => "too slow",
        CLOSE_TOO_BIG => "frame too large",
        CLOSE_GOING_AWAY => "going away",
        _ => "",
    };
    Box::pin(close_now(sink, code, reason)).await;
}

/// Feeds every frame of `run` and flushes once.
async fn send_run(sink: &mut SplitSink<WebSocket, Message>, run: &mut Vec<QueuedFrame>) -> Result<(), axum::Error> {
    for frame in run.drain(..) {
        sink.feed(Message::Text(Utf8Bytes::clone(&frame))).await?;
    }
    sink.flush().await
}

async fn read_loop(
    app: &Arc<AppState>,
    auth: &AuthContext,
    conn: &ConnHandle,
    stream: &mut SplitStream<WebSocket>,
    watched: &mut Vec<String>,
) {
    let mut frames_bucket = Bucket::new(FRAME_RATE, FRAME_BURST);
    let mut rate_limited_in_a_row = 0u32;
    // Silence is policed by the node's heartbeat sweep (`heartbeat.rs`), not a timer here.
    conn.last_heard.touch();
    loop {
        let next = tokio::select! {
            _ = conn.outbox.closed() => return,
            n = stream.next() => n,
        };
        let msg = match next {
            None => return,
            Some(Err(e)) => {
                conn.close(if is_too_big(e) { CLOSE_TOO_BIG } else { 1002 });
                return;
            }
            Some(Ok(m)) => m,
        };
        conn.last_heard.touch();
        if !frames_bucket.take() {
            conn.close(CLOSE_TOO_SLOW);
            return;
        }
        let text = match msg {
            Message::Text(t) => t,
            Message::Binary(_) => {
                reply(
                    conn,
                    frames::error_frame(&None, "invalid", "binary frames are not supported; send JSON text"),
                );
                continue;
            }
            Message::Ping(_) | Message::Pong(_) => continue,
            Message::Close(_) => return,
        };
        let frame = match frames::parse(&text) {
            Ok(f) => f,
            Err(e) => {
                reply(conn, frames::error_frame(&e.r#ref, "invalid", &e.message));
                continue;
            }
        };
        if let ClientFrame::Send { r#ref, .. } = &frame {
            if let Err(refused) = app.limits.send(&auth.user_id) {
                rate_limited_in_a_row += 1;
                if rate_limited_in_a_row > 100 {
                    conn.close(CLOSE_TOO_SLOW);
                    return;
                }
                reply(
                    conn,
                    frames::error_frame(r#ref, refused.code.as_str(), &refused.message),
                );
                continue;
            }
            rate_limited_in_a_row = 0;
        }
        // Boxed: a request's future (a Raft write, a history read) is large and short-lived;
        // inline it would sit in every idle connection's task for the connection's lifetime.
        Box::pin(handle(app, auth, conn, frame, watched)).await;
    }
}

fn reply(conn: &ConnHandle, frame: Utf8Bytes) {
    conn.push(frame);
}

fn reply_error(conn: &ConnHandle, r#ref: &Ref, e: &ApiError) {
    reply(conn, frames::error_frame(r#ref, e.code.as_str(), &e.message));
}

async fn handle(
    app: &Arc<AppState>,
    auth: &AuthContext,
    conn: &ConnHandle,
    frame: ClientFrame,
    watched: &mut Vec<String>,
) {
    let chat = &app.chat;
    match frame {
        ClientFrame::Hello { r#ref, .. } => {
            reply_error(conn, &r#ref, &ApiError::invalid("already authenticated"));
        }
        ClientFrame::Send {
            r#ref,
            channel_id,
            text,
            client_msg_id,
        } => match chat.send_message(auth, &channel_id, &text, client_msg_id).await {
            Ok((m, _dup)) => reply(
                conn,
                frames::with_ref(
                    json!({"type": "sent", "channel_id": m.channel_id, "seq": m.seq, "ts": m.ts}),
                    &r#ref,
                ),
            ),
            Err(e) => reply_error(conn, &r#ref, &e),
        },
        ClientFrame::Ack { r#ref, channel_id, seq } => {
            if let Err(e) = chat.ack(auth, &channel_id, seq).await {
                reply_error(conn, &r#ref, &e);
            }
        }
        ClientFrame::History {
            r#ref,
            channel_id,
            before,
            after,
            limit,
        } => match chat.history(auth, &channel_id, before, after, limit).await {
            Ok(page) => {
                let messages: Vec<Value> = page.messages.iter().map(frames::message_object).collect();
                reply(
                    conn,
                    frames::with_ref(
                        json!({"type": "history", "channel_id": channel_id, "messages": messages, "has_more": page.has_more}),
                        &r#ref,
                    ),
                )
            }
            Err(e) => reply_error(conn, &r#ref, &e),
        },
        ClientFrame::PresenceSubscribe { r#ref, user_ids } => {
            match presence_subscribe(app, auth, conn, user_ids, watched).await {
                Ok(users) => reply(
                    conn,
                    frames::with_ref(json!({"type": "presence_state", "users": users}), &r#ref),
                ),
                Err(e) => reply_error(conn, &r#ref, &e),
            }
        }
        ClientFrame::Typing { r#ref, channel_id } => {
            if let Err(e) = chat.typing(auth, &channel_id).await {
                reply_error(conn, &r#ref, &e);
            }
        }
        ClientFrame::Read { r#ref, channel_id, seq } => {
            if let Err(e) = chat.read(auth, &channel_id, seq).await {
                reply_error(conn, &r#ref, &e);
            }
        }
        ClientFrame::Ping { r#ref } => {
            let mut v = json!({"type": "pong"});
            v["ref"] = r#ref.unwrap_or(Value::Null);
            reply(conn, frames::text(&v));
        }
    }
}

async fn presence_subscribe(
    app: &Arc<AppState>,
    auth: &AuthContext,
    conn: &ConnHandle,
    user_ids: Vec<String>,
    watched: &mut Vec<String>,
) -> Result<Vec<Value>, ApiError> {
    if user_ids.len() > MAX_WATCHED_PER_CONNECTION {
        return Err(ApiError::invalid(format!(
            "at most {MAX_WATCHED_PER_CONNECTION} user_ids"
        )));
    }
    let mut unique: Vec<String> = Vec::with_capacity(user_ids.len());
    let mut seen = HashSet::new();
    for u in user_ids {
        crate::validate::id("user_id", &u)?;
        if seen.insert(u.clone()) {
            unique.push(u);
        }
    }
    let mine = app.chat.channel_ids(&auth.user_id).await?;
    let mut states = Vec::with_capacity(unique.len());
    for u in &unique {
        let state = app.chat.presence_of(u).await?;
        if !app.chat.shares_channel(&mine, &auth.user_id, u).await? {
            return Err(ApiError::forbidden(format!("you share no channel with {u}")));
        }
        states.push(state);
    }
    let new: Vec<String> = unique.into_iter().filter(|u| !watched.contains(u)).collect();
    if watched.len() + new.len() > MAX_WATCHED_PER_CONNECTION {
        return Err(ApiError::invalid(format!(
            "a connection watches at most {MAX_WATCHED_PER_CONNECTION} users"
        )));
    }
    app.presence.watch(conn, &new);
    watched.extend(new);
    Ok(states.iter().map(|s| s.to_json()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Size of the future an async fn of two arguments returns (no value needed).
    fn future_size<A, B, R>(_: fn(A, B) -> R) -> usize {
        std::mem::size_of::<R>()
    }

    /// Every idle connection carries this future for its whole life (docs/gateway.md: the
    /// idle-memory budget). It was 1,384 B with the unsplit socket kept as an argument.
    #[test]
    fn a_connections_long_lived_future_stays_small() {
        let size = future_size(serve);
        assert!(size <= 1_100, "connection future grew to {size} B");
    }
}
