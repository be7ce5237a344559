//! The cluster's only codec: Raft log entries, state-machine records, node-to-node RPC
//! payloads and delivery batches are all `[format byte][body]`.
//!
//! Format 2 (written) is postcard: a compact binary serde format (varint integers,
//! length-prefixed strings, no field names), about a third the size of JSON and several times
//! cheaper to encode and decode, followed by a 4-byte checksum (xxh3 of the format byte and the
//! body), so a flipped bit on disk or in flight is an error rather than a different value. Format 1 is the JSON that releases before it wrote; it is
//! still read, so a data dir written by an older release opens and its records migrate as they
//! are rewritten (docs/codec.md). Postcard is not self-describing: a type's shape is part of
//! the format, so changing the fields of a stored or replicated type needs a new format byte
//! (and the old shape kept for decoding), never a silent edit.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// JSON, written by releases before the binary codec; read only.
pub const FORMAT_JSON: u8 = 1;
/// postcard: what this release writes.
pub const FORMAT_BINARY: u8 = 2;

/// Bytes that are not a value of the expected type in any known format.
#[derive(Debug, thiserror::Error)]
#[error("undecodable value: {0}")]
pub struct CodecError(String);

/// What the checksum check says when it fails: the bytes changed after they were written.
const CHECKSUM_FAILED: &str = "checksum mismatch";

impl CodecError {
    /// True if the value's own checksum failed (damage), as opposed to bytes that check out
    /// but that this release cannot read (a format or version problem).
    pub fn is_damage(&self) -> bool {
        self.0.starts_with(CHECKSUM_FAILED)
    }
}

impl From<CodecError> for ringchat_storage::StorageError {
    fn from(e: CodecError) -> Self {
        if e.is_damage() {
            ringchat_storage::StorageError::Corrupt(e.0)
        } else {
            ringchat_storage::StorageError::Undecodable(e.0)
        }
    }
}

impl From<CodecError> for std::io::Error {
    fn from(e: CodecError) -> Self {
        std::io::Error::new(std::io::ErrorKind::InvalidData, e)
    }
}

/// Encodes `value` in the current format.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.push(FORMAT_BINARY);
    // Serializing plain data (no maps with non-serializable keys, no lengths past u64) into a
    // Vec cannot fail.
    let out = postcard::to_extend(value, out).expect("value serializes");
    with_checksum(out)
}

/// Wraps raw postcard `body` as a current-format value with a valid checksum, so that a fuzz
/// target's bytes reach the decoder behind the checksum instead of stopping at it.
pub fn seal(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 1 + CHECKSUM_BYTES);
    out.push(FORMAT_BINARY);
    out.extend_from_slice(body);
    with_checksum(out)
}

/// `value` (format byte and body) followed by its checksum: the one place a value is closed.
fn with_checksum(mut value: Vec<u8>) -> Vec<u8> {
    let sum = checksum(&value);
    value.extend_from_slice(&sum);
    value
}

/// Bytes of the checksum that ends a format-2 value.
const CHECKSUM_BYTES: usize = 4;

fn checksum(bytes: &[u8]) -> [u8; CHECKSUM_BYTES] {
    let full = xxhash_rust::xxh3::xxh3_64(bytes).to_le_bytes();
    [full[0], full[1], full[2], full[3]]
}

/// Decodes bytes written by `encode` of this or an older release. Malformed input (a torn
/// record, a peer's garbage, trailing bytes) is an error, never a panic.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    match bytes.split_first() {
        Some((&FORMAT_BINARY, _)) => {
            let Some(split) = bytes.len().checked_sub(CHECKSUM_BYTES).filter(|&n| n > 0) else {
                return Err(CodecError(format!("{CHECKSUM_FAILED}: too short for its checksum")));
            };
            let (value, sum) = bytes.split_at(split);
            if checksum(value) != sum {
                return Err(CodecError(CHECKSUM_FAILED.into()));
            }
            decode_binary(&value[1..])
        }
        Some((&FORMAT_JSON, body)) => serde_json::from_slice(body).map_err(|e| CodecError(e.to_string())),
        Some((v, _)) => Err(CodecError(format!("unknown format {v}"))),
        None => Err(CodecError("empty".into())),
    }
}

fn decode_binary<T: DeserializeOwned>(body: &[u8]) -> Result<T, CodecError> {
    match postcard::take_from_bytes(body) {
        Ok((value, [])) => Ok(value),
        Ok((_, rest)) => Err(CodecError(format!("{} trailing bytes", rest.len()))),
        Err(e) => Err(CodecError(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::Command;
    use crate::model::{ChannelKind, ChannelRecord, MessageRecord};
    use proptest::prelude::*;

    fn json(value: &impl Serialize) -> Vec<u8> {
        let mut out = vec![FORMAT_JSON];
        serde_json::to_writer(&mut out, value).unwrap();
        out
    }

    proptest! {
        #[test]
        fn values_round_trip(s in "\\PC{0,200}", n in any::<u64>(), o in proptest::option::of("\\PC{0,20}")) {
            let bytes = encode(&(s.clone(), n, o.clone()));
            let back: (String, u64, Option<String>) = decode(&bytes).unwrap();
            prop_assert_eq!(back, (s, n, o));
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode::<Command>(&bytes);
            let _ = decode::<ChannelRecord>(&bytes);
        }
    }

    #[test]
    fn records_written_as_json_by_older_releases_still_decode() {
        let record = MessageRecord {
            channel_id: "d_x".into(),
            seq: 7,
            sender_id: "u_a".into(),
            text: "héllo \"quoted\"".into(),
            ts: 1_764_000_000_000,
            client_msg_id: Some("c-1".into()),
        };
        let old: MessageRecord = decode(&json(&record)).unwrap();
        let new: MessageRecord = decode(&encode(&record)).unwrap();
        assert_eq!(old, record);
        assert_eq!(new, record);
        // A v1 channel record from before `last_ts` existed takes the field's default.
        let legacy = br#"{"channel_id":"g_1","kind":"group","name":"team","creator":"u_a","members":["u_a"],"last_seq":3,"created_ms":5}"#;
        let channel: ChannelRecord = decode(&[&[FORMAT_JSON][..], &legacy[..]].concat()).unwrap();
        assert_eq!(
            (channel.kind, channel.last_seq, channel.last_ts),
            (ChannelKind::Group, 3, 0)
        );
    }

    #[test]
    fn the_binary_format_is_smaller_than_json() {
        let cmd = Command::SendMessage {
            channel_id: "d_5PhKhVbXmuNWZGNGPsyNwA20".into(),
            sender_id: "u_yDEzO8FR".into(),
            text: "a chat message of ordinary length".into(),
            client_msg_id: Some("lg-1234-5678".into()),
            ts: 1_764_000_000_000,
            push: true,
        };
        assert!(encode(&cmd).len() * 3 < json(&cmd).len() * 2);
    }

    #[test]
    fn unknown_formats_trailing_bytes_and_empty_input_are_errors() {
        let mut bytes = encode(&1u64);
        assert!(decode::<u64>(&bytes).is_ok());
        bytes.push(0);
        assert!(decode::<u64>(&bytes).is_err());
        bytes[0] = 99;
        assert!(decode::<u64>(&bytes).is_err());
        assert!(decode::<u64>(&[]).is_err());
        assert!(decode::<u64>(&[FORMAT_BINARY]).is_err());
        // A body followed by its checksum but with trailing bytes inside it.
        let mut inner = vec![FORMAT_BINARY, 1, 0];
        let sum = checksum(&inner);
        inner.extend_from_slice(&sum);
        assert!(decode::<u8>(&inner).is_err());
    }

    proptest! {
        #[test]
        fn any_flipped_bit_is_detected(text in "\\PC{0,100}", bit in any::<prop::sample::Index>()) {
            let mut bytes = encode(&text);
            let at = bit.index(bytes.len() * 8);
            bytes[at / 8] ^= 1 << (at % 8);
            prop_assert!(decode::<String>(&bytes).is_err());
        }
    }
}
