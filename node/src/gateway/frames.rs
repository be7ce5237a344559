//! Wire types of the WebSocket protocol: client frames parsed once into typed requests, and
//! server frames built as JSON text shared between recipients.

use axum::extract::ws::Utf8Bytes;
use ringchat_cluster::{ChannelRecord, MessageRecord};
use serde::Deserialize;
use serde_json::{json, Value};

/// A request `ref`: a string or an integer, echoed back verbatim.
pub type Ref = Option<Value>;

/// A parsed client frame.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientFrame {
    /// Authenticate.
    Hello {
        /// Bearer token.
        token: String,
        #[serde(rename = "ref", default)]
        /// Optional ref.
        r#ref: Ref,
    },
    /// Post a message.
    Send {
        #[serde(rename = "ref", default)]
        /// Echoed in `sent`/`error`.
        r#ref: Ref,
        /// Channel.
        channel_id: String,
        /// Text.
        text: String,
        /// Idempotency key.
        #[serde(default)]
        client_msg_id: Option<String>,
    },
    /// Move this device's cursor.
    Ack {
        #[serde(rename = "ref", default)]
        /// Optional ref (echoed on error).
        r#ref: Ref,
        /// Channel.
        channel_id: String,
        /// Seq.
        seq: u64,
    },
    /// Page of history.
    History {
        #[serde(rename = "ref", default)]
        /// Echoed.
        r#ref: Ref,
        /// Channel.
        channel_id: String,
        /// Newest messages below this seq.
        #[serde(default)]
        before: Option<u64>,
        /// Messages above this seq.
        #[serde(default)]
        after: Option<u64>,
        /// Page size.
        #[serde(default)]
        limit: Option<u64>,
    },
    /// Watch presence of users.
    PresenceSubscribe {
        #[serde(rename = "ref", default)]
        /// Echoed.
        r#ref: Ref,
        /// Users (≤ 1000).
        user_ids: Vec<String>,
    },
    /// Typing indicator.
    Typing {
        #[serde(rename = "ref", default)]
        /// Optional ref (echoed on error).
        r#ref: Ref,
        /// Channel.
        channel_id: String,
    },
    /// Read marker.
    Read {
        #[serde(rename = "ref", default)]
        /// Optional ref (echoed on error).
        r#ref: Ref,
        /// Channel.
        channel_id: String,
        /// Seq.
        seq: u64,
    },
    /// Liveness.
    Ping {
        #[serde(rename = "ref", default)]
        /// Echoed.
        r#ref: Ref,
    },
}

/// A frame that did not parse: the message to return and the `ref` if one could be read.
#[derive(Debug)]
pub struct FrameError {
    /// The client's ref, if valid.
    pub r#ref: Ref,
    /// Why.
    pub message: String,
}

/// Parses one text frame.
pub fn parse(text: &str) -> Result<ClientFrame, FrameError> {
    let value: Value = serde_json::from_str(text).map_err(|e| FrameError {
        r#ref: None,
        message: format!("malformed JSON: {e}"),
    })?;
    let r#ref = match value.get("ref") {
        Some(r @ (Value::String(_) | Value::Number(_))) => Some(r.clone()),
        Some(Value::Null) | None => None,
        Some(_) => {
            return Err(FrameError {
                r#ref: None,
                message: "ref must be a string or an integer".into(),
            })
        }
    };
    if !value.is_object() {
        return Err(FrameError {
            r#ref,
            message: "a frame must be a JSON object".into(),
        });
    }
    if !value.get("type").is_some_and(Value::is_string) {
        return Err(FrameError {
            r#ref,
            message: "a frame needs a string \"type\"".into(),
        });
    }
    // serde_json keeps the last of two equal keys; PROTOCOL v1.1 refuses such a frame.
    if let Err(e) = crate::strict_json::check_object(text.as_bytes()) {
        return Err(FrameError {
            r#ref,
            message: format!("malformed JSON: {e}"),
        });
    }
    serde_json::from_value(value).map_err(|e| FrameError {
        r#ref,
        message: e.to_string(),
    })
}

/// Serializes a server frame once, to be shared by every recipient.
pub fn text(v: &Value) -> Utf8Bytes {
    Utf8Bytes::from(v.to_string())
}

/// The channel summary object.
pub fn summary(c: &ChannelRecord) -> Value {
    json!({
        "channel_id": c.channel_id,
        "kind": c.kind,
        "name": c.name,
        "members": c.members,
        "last_seq": c.last_seq,
    })
}

/// The message object.
pub fn message_object(m: &MessageRecord) -> Value {
    json!({
        "channel_id": m.channel_id,
        "seq": m.seq,
        "sender_id": m.sender_id,
        "text": m.text,
        "ts": m.ts,
        "client_msg_id": m.client_msg_id,
    })
}

/// A `message` frame.
pub fn message_frame(m: &MessageRecord) -> Utf8Bytes {
    let mut v = message_object(m);
    v["type"] = json!("message");
    text(&v)
}

/// An `error` frame.
pub fn error_frame(r#ref: &Ref, code: &str, message: &str) -> Utf8Bytes {
    let mut v = json!({"type": "error", "code": code, "message": message});
    if let Some(r) = r#ref {
        v["ref"] = r.clone();
    }
    text(&v)
}

/// Adds the `ref` to a reply.
pub fn with_ref(mut v: Value, r#ref: &Ref) -> Utf8Bytes {
    if let Some(r) = r#ref {
        v["ref"] = r.clone();
    }
    text(&v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_frames_parse_and_refs_survive_errors() {
        assert!(matches!(
            parse(r#"{"type":"ping","ref":3}"#),
            Ok(ClientFrame::Ping { .. })
        ));
        let e = parse(r#"{"type":"send","ref":"r1","channel_id":5}"#).unwrap_err();
        assert_eq!(e.r#ref, Some(json!("r1")));
        let e = parse(r#"{"type":"ack","channel_id":"c","seq":-1}"#).unwrap_err();
        assert!(e.message.contains("invalid"), "{}", e.message);
        assert!(parse(r#"{"type":"nope"}"#).is_err());
        assert!(parse("[1,2]").is_err());
        assert!(parse(r#"{"type":"ack","channel_id":"c","seq":1e400}"#).is_err());
        assert!(parse(r#"{"type":"ack","channel_id":"c","seq":18446744073709551616}"#).is_err());
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in "\\PC{0,200}") {
            let _ = parse(&s);
        }

        #[test]
        fn parse_never_panics_on_json_like_input(
            t in prop_oneof!["hello","send","ack","history","presence_subscribe","typing","read","ping","x"],
            field in "[a-z_]{1,12}",
            v in prop_oneof![Just("1".to_string()), Just("-1".to_string()), Just("\"s\"".to_string()), Just("null".to_string()), Just("[]".to_string()), Just("{}".to_string()), Just("1e999".to_string())],
        ) {
            let _ = parse(&format!(r#"{{"type":"{t}","{field}":{v}}}"#));
        }
    }
}
