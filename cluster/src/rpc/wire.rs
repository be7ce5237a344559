//! Encoding of openraft's requests and responses inside the protobuf messages.
//!
//! serde_json, for three reasons: openraft's types derive serde (feature `serde`) but not
//! protobuf, so JSON needs no hand-written mirror of structs that still change between openraft
//! alphas; it is self-describing, so it tolerates `skip_serializing_if` and enums that compact
//! non-self-describing formats (bincode, postcard) reject or mis-decode; and it is the encoding
//! the log store already uses for entries, so one format is debugged, not two. The cost is size
//! (roughly 2x a binary encoding for command text), which h2 framing absorbs at chat message
//! sizes; a binary serde format can replace it behind these two functions.

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::error::RpcError;

/// Encodes an openraft value for a protobuf `bytes` field.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, RpcError> {
    Ok(serde_json::to_vec(value)?)
}

/// Decodes a value sent by a peer; malformed input is an error, never a panic.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, RpcError> {
    Ok(serde_json::from_slice(bytes)?)
}
