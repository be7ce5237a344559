//! The newest entries of one partition's Raft log, kept in memory.
//!
//! A leader feeds its followers the entries it has just appended. Reading them back from fjall
//! costs a range scan of the memtable and a decode per entry per follower, on the hottest path
//! of a clustered write; served from here it is a clone. The tail mirrors the stored log
//! exactly (appends, truncations and purges go through both), is bounded in entries and bytes,
//! and anything outside it is read from fjall as before, so it changes cost, never content.

use std::collections::VecDeque;
use std::sync::Mutex;

use openraft::alias::EntryOf;
use openraft::entry::RaftEntry;

use crate::types::TypeConfig;

type Entry = EntryOf<TypeConfig>;

/// Entries kept at most per partition.
const MAX_ENTRIES: usize = 4096;
/// Encoded bytes kept at most per partition (64 partitions: 64 MiB at the very most).
const MAX_BYTES: usize = 1 << 20;

/// The tail: consecutive entries, oldest first, each with its encoded size.
#[derive(Default)]
pub struct LogTail {
    inner: Mutex<Tail>,
}

#[derive(Default)]
struct Tail {
    entries: VecDeque<(Entry, usize)>,
    bytes: usize,
}

impl Tail {
    fn first_index(&self) -> Option<u64> {
        self.entries.front().map(|(e, _)| e.index())
    }

    fn last_index(&self) -> Option<u64> {
        self.entries.back().map(|(e, _)| e.index())
    }

    fn pop_front(&mut self) {
        if let Some((_, n)) = self.entries.pop_front() {
            self.bytes -= n;
        }
    }

    fn pop_back(&mut self) {
        if let Some((_, n)) = self.entries.pop_back() {
            self.bytes -= n;
        }
    }
}

impl LogTail {
    fn lock(&self) -> std::sync::MutexGuard<'_, Tail> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Entries just written to the stored log, with their encoded sizes, in index order.
    pub fn appended(&self, entries: impl IntoIterator<Item = (Entry, usize)>) {
        let mut t = self.lock();
        for (entry, size) in entries {
            if t.last_index().is_some_and(|last| entry.index() != last + 1) {
                // Not the next index: the stored log was rewritten under us in a way the tail
                // did not see. Start over rather than serve a gap.
                t.entries.clear();
                t.bytes = 0;
            }
            if size > MAX_BYTES {
                t.entries.clear();
                t.bytes = 0;
                continue;
            }
            t.bytes += size;
            t.entries.push_back((entry, size));
            while t.entries.len() > MAX_ENTRIES || t.bytes > MAX_BYTES {
                t.pop_front();
            }
        }
    }

    /// The stored log lost every entry from `index` on (a follower's conflicting suffix).
    pub fn truncated_from(&self, index: u64) {
        let mut t = self.lock();
        while t.last_index().is_some_and(|last| last >= index) {
            t.pop_back();
        }
    }

    /// The stored log lost every entry up to and including `index`.
    pub fn purged_through(&self, index: u64) {
        let mut t = self.lock();
        while t.first_index().is_some_and(|first| first <= index) {
            t.pop_front();
        }
    }

    /// Entries `start..=end` if the tail holds all of them, else `None` (read the store).
    pub fn get(&self, start: u64, end: u64) -> Option<Vec<Entry>> {
        let t = self.lock();
        let (first, last) = (t.first_index()?, t.last_index()?);
        if start < first || end > last {
            return None;
        }
        if start > end {
            return Some(Vec::new());
        }
        let from = (start - first) as usize;
        let to = (end - first) as usize;
        Some(t.entries.range(from..=to).map(|(e, _)| e.clone()).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64) -> Entry {
        openraft::testing::blank_ent::<TypeConfig>(1, 1, index)
    }

    fn indexes(v: Option<Vec<Entry>>) -> Option<Vec<u64>> {
        v.map(|v| v.iter().map(|e| e.index()).collect())
    }

    #[test]
    fn serves_only_ranges_it_holds_whole() {
        let t = LogTail::default();
        t.appended((5..=9).map(|i| (entry(i), 10)));
        assert_eq!(indexes(t.get(6, 8)), Some(vec![6, 7, 8]));
        assert_eq!(indexes(t.get(5, 9)), Some(vec![5, 6, 7, 8, 9]));
        assert_eq!(t.get(4, 6).map(|v| v.len()), None, "older than the tail");
        assert_eq!(t.get(8, 10).map(|v| v.len()), None, "newer than the tail");
    }

    #[test]
    fn follows_truncation_purge_and_rewrites() {
        let t = LogTail::default();
        t.appended((1..=6).map(|i| (entry(i), 10)));
        t.truncated_from(5);
        assert_eq!(t.get(4, 5).map(|v| v.len()), None);
        t.appended([(entry(5), 10)]);
        assert_eq!(indexes(t.get(1, 5)), Some(vec![1, 2, 3, 4, 5]));
        t.purged_through(2);
        assert_eq!(indexes(t.get(3, 5)), Some(vec![3, 4, 5]));
        assert_eq!(t.get(2, 3).map(|v| v.len()), None);
        // A gap (index 9 after 5) drops everything before it.
        t.appended([(entry(9), 10)]);
        assert_eq!(indexes(t.get(9, 9)), Some(vec![9]));
        assert_eq!(t.get(5, 9).map(|v| v.len()), None);
    }

    #[test]
    fn stays_within_its_byte_bound() {
        let t = LogTail::default();
        t.appended((1..=10).map(|i| (entry(i), MAX_BYTES / 4)));
        assert_eq!(indexes(t.get(7, 10)), Some(vec![7, 8, 9, 10]));
        assert_eq!(t.get(6, 10).map(|v| v.len()), None);
        assert!(t.lock().bytes <= MAX_BYTES);
    }
}
