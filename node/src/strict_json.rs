//! PROTOCOL v1.1: request bodies and WebSocket frames must be JSON objects with no duplicate
//! keys. serde_json alone accepts both: a duplicate key silently keeps the last value (two
//! parsers of the same frame, say a proxy and this server, could then read different
//! commands), and a derived struct also accepts a JSON array in field order (`["hi"]` read as
//! `{"text":"hi"}`). This check walks the document once, allocating nothing but the key sets.

use std::collections::HashSet;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, Error, MapAccess, SeqAccess, Visitor};

/// Why a document is not strict JSON (or not JSON at all).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotStrict(pub String);

impl fmt::Display for NotStrict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks that `bytes` is one JSON object with no key twice in any object of it.
pub fn check_object(bytes: &[u8]) -> Result<(), NotStrict> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        return Err(NotStrict("the body must be a JSON object".into()));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    Walk.deserialize(&mut de)
        .and_then(|()| de.end())
        .map_err(|e| NotStrict(e.to_string()))
}

/// Visits every value, refusing repeated keys.
#[derive(Clone, Copy)]
struct Walk;

impl<'de> DeserializeSeed<'de> for Walk {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E: Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E: Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E: Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E: Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Walk)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if !seen.insert(key.clone()) {
                return Err(A::Error::custom(format!("duplicate key \"{key}\"")));
            }
            map.next_value_seed(Walk)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn objects_pass_and_arrays_duplicates_and_garbage_do_not() {
        assert_eq!(check_object(br#" {"text":"hi","n":[1,{"a":2}],"x":null} "#), Ok(()));
        assert!(check_object(br#"["hi"]"#).is_err(), "an array is not an object");
        assert!(check_object(br#""hi""#).is_err());
        assert!(check_object(br#"{"text":"a","text":"b"}"#).is_err());
        assert!(
            check_object(br#"{"a":{"b":1,"b":2}}"#).is_err(),
            "nested duplicates too"
        );
        assert!(check_object(br#"{"a":1}{"b":2}"#).is_err(), "one document only");
        assert!(
            check_object(br#"{"a":"\u00e9","\u0061":1}"#).is_err(),
            "escaped keys compare decoded"
        );
        assert!(check_object(b"{").is_err());
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = check_object(&bytes);
        }
    }
}
