//! `WsClient`: one WebSocket connection speaking PROTOCOL §3 as raw JSON frames, with helpers
//! for `hello`, catch-up and request/reply by `ref`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message as WsMessage};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use crate::error::ClientError;
use crate::http::api_error;
use crate::tls::Trust;

/// A connected WebSocket. Frames that arrive while `request` waits for its reply are kept and
/// handed out by later `recv`/`recv_type` calls, so nothing is lost between helpers.
pub struct WsClient {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pending: VecDeque<Value>,
}

impl WsClient {
    /// Opens `GET /v1/ws` on the node at `base` (`http://…`, or `https://…` for WSS trusting
    /// the system's roots).
    pub async fn connect(base: &str) -> Result<WsClient, ClientError> {
        let trust = if crate::tls::is_tls(base) {
            Some(Trust::system()?)
        } else {
            None
        };
        Self::open(base, None, trust.as_ref()).await
    }

    /// Opens the socket over WSS to a node whose certificate `trust` accepts (a private CA).
    pub async fn connect_with_trust(base: &str, trust: &Trust) -> Result<WsClient, ClientError> {
        Self::open(base, None, Some(trust)).await
    }

    /// Opens the socket with an `Origin` header, as a browser would.
    pub async fn connect_with_origin(base: &str, origin: &str) -> Result<WsClient, ClientError> {
        Self::open(base, Some(origin), None).await
    }

    async fn open(base: &str, origin: Option<&str>, trust: Option<&Trust>) -> Result<WsClient, ClientError> {
        let url = format!("{}/v1/ws", base.trim_end_matches('/').replacen("http", "ws", 1));
        let mut request = url.into_client_request()?;
        if let Some(o) = origin {
            let value = o
                .parse()
                .map_err(|_| ClientError::Decode(format!("bad origin {o:?}")))?;
            request.headers_mut().insert("origin", value);
        }
        // The client may send (and must read) frames past the server's limit, so tests can
        // check how the server treats them.
        let config = WebSocketConfig::default()
            .max_message_size(Some(64 << 20))
            .max_frame_size(Some(64 << 20));
        let connector = trust.map(|t| Connector::Rustls(t.config()));
        match tokio_tungstenite::connect_async_tls_with_config(request, Some(config), true, connector).await {
            Ok((socket, _)) => Ok(WsClient {
                socket,
                pending: VecDeque::new(),
            }),
            Err(tungstenite::Error::Http(resp)) => {
                let body = resp.body().clone().unwrap_or_default();
                Err(api_error(resp.status(), &body))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Sends `hello` and returns the `ready` frame (catch-up follows; see `catch_up`).
    pub async fn hello(&mut self, token: &str) -> Result<Value, ClientError> {
        self.send_json(&json!({"type": "hello", "token": token})).await?;
        self.recv_type("ready", Duration::from_secs(10)).await
    }

    /// Collects the catch-up `message` frames up to `caught_up`, in the order they came.
    pub async fn catch_up(&mut self, within: Duration) -> Result<Vec<Value>, ClientError> {
        let deadline = Instant::now() + within;
        let mut messages = Vec::new();
        loop {
            let frame = self.recv(left(deadline)?).await?;
            match frame["type"].as_str() {
                Some("message") => messages.push(frame),
                Some("caught_up") => return Ok(messages),
                _ => {}
            }
        }
    }

    /// Sends a frame and waits for the reply that echoes its `ref`; other frames are kept.
    pub async fn request(&mut self, frame: Value, within: Duration) -> Result<Value, ClientError> {
        let want = frame.get("ref").cloned().unwrap_or(Value::Null);
        self.send_json(&frame).await?;
        let deadline = Instant::now() + within;
        if let Some(i) = self.pending.iter().position(|f| f.get("ref") == Some(&want)) {
            return Ok(self.pending.remove(i).unwrap_or_default());
        }
        loop {
            let frame = self.read(left(deadline)?).await?;
            if frame.get("ref") == Some(&want) {
                return Ok(frame);
            }
            self.pending.push_back(frame);
        }
    }

    /// The next frame of type `kind`, skipping (and dropping) frames of other types.
    pub async fn recv_type(&mut self, kind: &str, within: Duration) -> Result<Value, ClientError> {
        if let Some(i) = self.pending.iter().position(|f| f["type"] == kind) {
            return Ok(self.pending.remove(i).unwrap_or_default());
        }
        let deadline = Instant::now() + within;
        loop {
            let frame = self.read(left(deadline)?).await?;
            if frame["type"] == kind {
                return Ok(frame);
            }
        }
    }

    /// The next frame, whatever its type.
    pub async fn recv(&mut self, within: Duration) -> Result<Value, ClientError> {
        match self.pending.pop_front() {
            Some(f) => Ok(f),
            None => self.read(within).await,
        }
    }

    /// Sends one JSON object as a text frame.
    pub async fn send_json(&mut self, frame: &Value) -> Result<(), ClientError> {
        self.send_text(frame.to_string()).await
    }

    /// Sends any text frame (for malformed-input tests).
    pub async fn send_text(&mut self, text: String) -> Result<(), ClientError> {
        self.socket.send(WsMessage::Text(text.into())).await?;
        Ok(())
    }

    /// Sends a binary frame (the protocol has none; the server must say so).
    pub async fn send_binary(&mut self, bytes: Vec<u8>) -> Result<(), ClientError> {
        self.socket.send(WsMessage::Binary(bytes.into())).await?;
        Ok(())
    }

    /// Closes the connection politely.
    pub async fn close(&mut self) -> Result<(), ClientError> {
        self.socket.close(None).await?;
        Ok(())
    }

    /// Reads the next JSON text frame from the socket; a close becomes `ClientError::Closed`.
    async fn read(&mut self, within: Duration) -> Result<Value, ClientError> {
        let deadline = Instant::now() + within;
        loop {
            let next = tokio::time::timeout(left(deadline)?, self.socket.next())
                .await
                .map_err(|_| ClientError::Timeout)?;
            match next {
                Some(Ok(WsMessage::Text(t))) => {
                    return serde_json::from_str(&t).map_err(|e| ClientError::Decode(format!("{e}: {t}")));
                }
                Some(Ok(WsMessage::Close(frame))) => {
                    return Err(ClientError::Closed {
                        code: frame.as_ref().map(|f| u16::from(f.code)),
                        reason: frame.map(|f| f.reason.to_string()).unwrap_or_default(),
                    });
                }
                Some(Ok(WsMessage::Binary(_))) => {
                    return Err(ClientError::Decode("binary frame from the server".into()));
                }
                Some(Ok(_)) => continue,
                Some(Err(
                    tungstenite::Error::ConnectionClosed
                    | tungstenite::Error::AlreadyClosed
                    | tungstenite::Error::Protocol(_)
                    | tungstenite::Error::Io(_),
                ))
                | None => {
                    return Err(ClientError::Closed {
                        code: None,
                        reason: "connection ended".into(),
                    });
                }
                Some(Err(e)) => return Err(e.into()),
            }
        }
    }
}

/// Time left until `deadline`, or `Timeout` if it has passed.
fn left(deadline: Instant) -> Result<Duration, ClientError> {
    let d = deadline.saturating_duration_since(Instant::now());
    if d.is_zero() {
        Err(ClientError::Timeout)
    } else {
        Ok(d)
    }
}
