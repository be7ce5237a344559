//! Versioned record encoding: `[version u8][json]`.
//!
//! Every value written to disk carries a format version from day one, so a later release can
//! read an older data dir and migrate it (see `docs/storage.md`).

use serde::{de::DeserializeOwned, Serialize};

use crate::StorageError;

/// The format version written by this release.
pub const RECORD_VERSION: u8 = 1;

/// Encodes a value as a version byte followed by JSON.
pub fn encode_record<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.push(RECORD_VERSION);
    // Serializing plain data structs to a Vec cannot fail.
    serde_json::to_writer(&mut out, value).expect("record serializes");
    out
}

/// Decodes a record written by `encode_record`; unknown versions and bad JSON are `Corrupt`.
pub fn decode_record<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StorageError> {
    match bytes.split_first() {
        Some((&RECORD_VERSION, body)) => serde_json::from_slice(body).map_err(|e| StorageError::Corrupt(e.to_string())),
        Some((v, _)) => Err(StorageError::Corrupt(format!("unknown record version {v}"))),
        None => Err(StorageError::Corrupt("empty record".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn records_round_trip(s in "\\PC{0,200}", n in any::<u64>()) {
            let bytes = encode_record(&(s.clone(), n));
            let back: (String, u64) = decode_record(&bytes).unwrap();
            prop_assert_eq!(back, (s, n));
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_record::<(String, u64)>(&bytes);
        }
    }

    #[test]
    fn unknown_version_is_corrupt() {
        let mut bytes = encode_record(&1u64);
        bytes[0] = 99;
        assert!(matches!(decode_record::<u64>(&bytes), Err(StorageError::Corrupt(_))));
    }
}
