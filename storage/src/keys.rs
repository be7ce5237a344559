//! Binary key codec: `[partition u16 BE][table u8][components…]`.
//!
//! Strings are written with a one-byte length prefix (ids and names are at most 64 bytes by
//! protocol, and the codec refuses longer ones rather than truncating), integers big-endian so
//! that byte order equals numeric order and range scans over `seq` work.

/// Builds a key component by component.
#[derive(Debug, Clone, Default)]
pub struct KeyBuf(Vec<u8>);

/// Longest string component accepted in a key.
pub const MAX_KEY_STR: usize = 255;

impl KeyBuf {
    /// Starts a key for `table` in `partition`.
    pub fn new(partition: u16, table: u8) -> Self {
        let mut v = Vec::with_capacity(48);
        v.extend_from_slice(&partition.to_be_bytes());
        v.push(table);
        KeyBuf(v)
    }

    /// Appends a length-prefixed string; callers validate lengths first (ids ≤ 64 bytes),
    /// longer strings are cut at 255 bytes on a char boundary so the codec never panics.
    pub fn str(mut self, s: &str) -> Self {
        let mut end = s.len().min(MAX_KEY_STR);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        self.0.push(end as u8);
        self.0.extend_from_slice(&s.as_bytes()[..end]);
        self
    }

    /// Appends a big-endian u64.
    pub fn u64(mut self, n: u64) -> Self {
        self.0.extend_from_slice(&n.to_be_bytes());
        self
    }

    /// Appends raw bytes (used for fixed-width names of meta keys).
    pub fn raw(mut self, b: &[u8]) -> Self {
        self.0.extend_from_slice(b);
        self
    }

    /// The finished key.
    pub fn build(self) -> Vec<u8> {
        self.0
    }
}

/// The two-byte prefix shared by every key of `partition`.
pub fn partition_prefix(partition: u16) -> [u8; 2] {
    partition.to_be_bytes()
}

/// Reads a key back component by component; every method returns `None` on malformed input
/// instead of panicking, because keys come from disk.
#[derive(Debug)]
pub struct KeyReader<'a> {
    buf: &'a [u8],
}

impl<'a> KeyReader<'a> {
    /// Starts reading after the partition and table header.
    pub fn after_header(key: &'a [u8]) -> Option<Self> {
        key.get(3..).map(|buf| KeyReader { buf })
    }

    /// Reads a length-prefixed string.
    pub fn str(&mut self) -> Option<&'a str> {
        let (&len, rest) = self.buf.split_first()?;
        let bytes = rest.get(..len as usize)?;
        self.buf = &rest[len as usize..];
        std::str::from_utf8(bytes).ok()
    }

    /// Reads a big-endian u64.
    pub fn u64(&mut self) -> Option<u64> {
        let bytes: [u8; 8] = self.buf.get(..8)?.try_into().ok()?;
        self.buf = &self.buf[8..];
        Some(u64::from_be_bytes(bytes))
    }

    /// True once every byte was consumed.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

/// Decodes the partition id of any key.
pub fn partition_of_key(key: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes(key.get(..2)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn string_and_u64_components_round_trip(p in any::<u16>(), t in any::<u8>(), a in "\\PC{0,64}", b in "\\PC{0,64}", n in any::<u64>()) {
            prop_assume!(a.len() <= 255 && b.len() <= 255);
            let key = KeyBuf::new(p, t).str(&a).str(&b).u64(n).build();
            prop_assert_eq!(partition_of_key(&key), Some(p));
            prop_assert_eq!(key[2], t);
            let mut r = KeyReader::after_header(&key).unwrap();
            prop_assert_eq!(r.str(), Some(a.as_str()));
            prop_assert_eq!(r.str(), Some(b.as_str()));
            prop_assert_eq!(r.u64(), Some(n));
            prop_assert!(r.is_empty());
        }

        #[test]
        fn u64_suffix_orders_like_numbers(p in any::<u16>(), s in "[a-z]{0,10}", x in any::<u64>(), y in any::<u64>()) {
            let kx = KeyBuf::new(p, 8).str(&s).u64(x).build();
            let ky = KeyBuf::new(p, 8).str(&s).u64(y).build();
            prop_assert_eq!(kx.cmp(&ky), x.cmp(&y));
        }

        #[test]
        fn reader_never_panics_on_garbage(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            if let Some(mut r) = KeyReader::after_header(&bytes) {
                let _ = r.str();
                let _ = r.u64();
                let _ = r.str();
            }
        }

        #[test]
        fn partitions_do_not_share_prefixes(p in any::<u16>(), q in any::<u16>(), s in "[a-z]{0,8}") {
            prop_assume!(p != q);
            let k = KeyBuf::new(q, 1).str(&s).build();
            prop_assert!(!k.starts_with(&partition_prefix(p)));
        }
    }

    #[test]
    fn long_strings_are_cut_on_char_boundary() {
        let s = "é".repeat(200);
        let key = KeyBuf::new(0, 1).str(&s).build();
        let mut r = KeyReader::after_header(&key).unwrap();
        let back = r.str().unwrap();
        assert!(back.len() <= 255 && s.starts_with(back));
    }
}
