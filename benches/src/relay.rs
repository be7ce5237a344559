//! The physical-limit baseline: the smallest WebSocket relay that speaks enough of PROTOCOL §3
//! for the loadgen's scenarios to run against it unchanged. No storage, no auth, no cluster,
//! no HTTP: what is left is the cost of WebSocket framing, JSON and fan-out on this machine,
//! and ringchat's figures are reported as a ratio to it.
//!
//! Protocol subset: `hello {token}` where the token is `relay <user_id> <channel,channel…>`
//! (made up by the loadgen's `--relay` mode; it names the channels the connection joins) →
//! `ready` + `caught_up`; `send` → `message` to every connection in the channel (sender's
//! included, as in ringchat) and `sent` to the sender, with a per-channel seq; `typing` →
//! forwarded to the channel's other connections; `ping` → `pong`; anything else is ignored.
//! There is no catch-up: a relay stores nothing.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

/// Frames queued per connection; when full, frames for that connection are dropped (the
/// loadgen then reports them as lost), as ringchat's gateway bounds its queue too.
const QUEUE: usize = 1024;
/// Time a new connection has to send `hello`.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Frames written before one flush, when more are queued.
const WRITE_BATCH: usize = 64;

type Outbox = mpsc::Sender<Utf8Bytes>;

/// One channel: its seq counter and its live connections.
#[derive(Default)]
struct Channel {
    seq: u64,
    members: Vec<(u64, Outbox)>,
}

/// Every channel by id. A channel's own mutex is held only while fanning one frame out.
#[derive(Default)]
struct Channels {
    by_id: RwLock<HashMap<String, Arc<Mutex<Channel>>>>,
}

impl Channels {
    fn get_or_create(&self, id: &str) -> Arc<Mutex<Channel>> {
        if let Some(c) = self.by_id.read().unwrap_or_else(|e| e.into_inner()).get(id) {
            return c.clone();
        }
        let mut map = self.by_id.write().unwrap_or_else(|e| e.into_inner());
        map.entry(id.to_string()).or_default().clone()
    }

    fn get(&self, id: &str) -> Option<Arc<Mutex<Channel>>> {
        self.by_id.read().unwrap_or_else(|e| e.into_inner()).get(id).cloned()
    }
}

/// The fields of a client frame the relay reads.
#[derive(Deserialize)]
struct ClientFrame<'a> {
    #[serde(rename = "type", borrow)]
    kind: std::borrow::Cow<'a, str>,
    #[serde(default, rename = "ref")]
    r#ref: Option<Value>,
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    channel_id: Option<String>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    client_msg_id: Option<String>,
}

/// Serves WebSocket connections on `listener` until `shutdown` completes; then every
/// connection task is aborted before returning.
pub async fn serve(listener: TcpListener, shutdown: impl Future<Output = ()>) {
    let channels = Arc::new(Channels::default());
    let ids = Arc::new(AtomicU64::new(1));
    let mut tasks = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                let id = ids.fetch_add(1, Relaxed);
                tasks.spawn(connection(stream, id, channels.clone()));
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    tasks.shutdown().await;
}

/// One connection: hello, register in its channels, then relay until it closes.
async fn connection(stream: TcpStream, id: u64, channels: Arc<Channels>) {
    // The same hardening as the node's gateway: 1 MiB frames, small read buffer.
    let config = WebSocketConfig::default()
        .max_message_size(Some(1 << 20))
        .max_frame_size(Some(1 << 20))
        .read_buffer_size(4 << 10);
    let Ok(ws) = tokio_tungstenite::accept_async_with_config(stream, Some(config)).await else {
        return;
    };
    let (mut sink, mut source) = ws.split();
    let Ok(Some(Ok(Message::Text(first)))) = tokio::time::timeout(HELLO_TIMEOUT, source.next()).await else {
        return;
    };
    let token = serde_json::from_str::<ClientFrame>(&first)
        .ok()
        .filter(|f| f.kind == "hello")
        .and_then(|f| f.token);
    let Some((user_id, joined)) = token.as_deref().and_then(parse_token) else {
        let _ = sink.close().await;
        return;
    };
    let (tx, mut rx) = mpsc::channel::<Utf8Bytes>(QUEUE);
    let ready = json!({"type": "ready", "user_id": user_id, "device_id": format!("d{id}"), "channels": [], "heartbeat_ms": 15000});
    let _ = tx.try_send(ready.to_string().into());
    let _ = tx.try_send(r#"{"type":"caught_up"}"#.into());
    let mine: Vec<Arc<Mutex<Channel>>> = joined.iter().map(|c| channels.get_or_create(c)).collect();
    for c in &mine {
        c.lock()
            .unwrap_or_else(|e| e.into_inner())
            .members
            .push((id, tx.clone()));
    }
    let writer = tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            if sink.feed(Message::Text(first)).await.is_err() {
                return;
            }
            for _ in 1..WRITE_BATCH {
                let Ok(more) = rx.try_recv() else { break };
                if sink.feed(Message::Text(more)).await.is_err() {
                    return;
                }
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
    });
    while let Some(Ok(msg)) = source.next().await {
        let Message::Text(text) = msg else {
            if matches!(msg, Message::Close(_)) {
                break;
            }
            continue;
        };
        let Ok(frame) = serde_json::from_str::<ClientFrame>(&text) else {
            continue;
        };
        match &*frame.kind {
            "send" => relay_send(&channels, &tx, &user_id, frame),
            "typing" => {
                let Some(c) = frame.channel_id.as_deref().and_then(|c| channels.get(c)) else {
                    continue;
                };
                let out: Utf8Bytes = json!({"type": "typing", "channel_id": frame.channel_id, "user_id": user_id})
                    .to_string()
                    .into();
                for (member, q) in &c.lock().unwrap_or_else(|e| e.into_inner()).members {
                    if *member != id {
                        let _ = q.try_send(out.clone());
                    }
                }
            }
            "ping" => {
                let _ = tx.try_send(json!({"type": "pong", "ref": frame.r#ref}).to_string().into());
            }
            _ => {}
        }
    }
    for c in &mine {
        c.lock()
            .unwrap_or_else(|e| e.into_inner())
            .members
            .retain(|(m, _)| *m != id);
    }
    drop(tx);
    writer.abort();
}

/// `send`: number the message in its channel, fan the one serialized frame out, reply `sent`.
fn relay_send(channels: &Channels, reply: &Outbox, user_id: &str, frame: ClientFrame) {
    let Some(cid) = frame.channel_id else { return };
    let Some(channel) = channels.get(&cid) else {
        let err = json!({"type": "error", "ref": frame.r#ref, "code": "not_found", "message": "unknown channel"});
        let _ = reply.try_send(err.to_string().into());
        return;
    };
    let ts = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let seq = {
        let mut c = channel.lock().unwrap_or_else(|e| e.into_inner());
        c.seq += 1;
        let message: Utf8Bytes = json!({
            "type": "message",
            "channel_id": cid,
            "seq": c.seq,
            "sender_id": user_id,
            "text": frame.text,
            "ts": ts,
            "client_msg_id": frame.client_msg_id,
        })
        .to_string()
        .into();
        for (_, q) in &c.members {
            let _ = q.try_send(message.clone());
        }
        c.seq
    };
    let sent = json!({"type": "sent", "ref": frame.r#ref, "channel_id": cid, "seq": seq, "ts": ts});
    let _ = reply.try_send(sent.to_string().into());
}

/// `relay <user_id> <channel,channel…>` → the user id and its channels.
fn parse_token(token: &str) -> Option<(String, Vec<String>)> {
    let mut parts = token.strip_prefix("relay ")?.splitn(2, ' ');
    let user = parts.next().filter(|u| !u.is_empty())?.to_string();
    let channels = parts
        .next()
        .unwrap_or("")
        .split(',')
        .filter(|c| !c.is_empty())
        .map(String::from)
        .collect();
    Some((user, channels))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_name_user_and_channels() {
        assert_eq!(
            parse_token("relay u1 c0,c5"),
            Some(("u1".into(), vec!["c0".into(), "c5".into()]))
        );
        assert_eq!(parse_token("relay u1"), Some(("u1".into(), vec![])));
        assert_eq!(parse_token("bearer x"), None);
    }
}
