//! Per-inode undo logs: everything a power loss would take back from one file.
//!
//! Writes go straight through to the backing file. Before a write, truncate or `fallocate`
//! changes a file, an entry records the file's length and the old bytes of the range it
//! changes (only the bytes a power loss would have to bring back: those inside the durable
//! length, or any existing bytes while an fsync of the file is in flight). A power loss undoes
//! the entries newest first, so the file ends exactly as it was at its durable point.
//!
//! An fsync takes a snapshot (the newest entry) when it starts and, when it returns, drops the
//! entries up to that snapshot: the durable point moves to the moment the fsync started. Writes
//! that arrive while it is in flight stay undoable. A power loss while an fsync is in flight
//! wins: that fsync completes nothing (see [`UndoLog::take_all`]).

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// One change to undo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    seq: u64,
    /// Where the saved bytes go back.
    offset: u64,
    /// Bytes the change overwrote or cut off (possibly fewer than it touched, see module doc).
    old: Vec<u8>,
    /// File length before the change.
    old_len: u64,
}

/// What a power loss must undo in one file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Undo {
    entries: Vec<Entry>,
    /// fsyncs of this inode started and not yet returned.
    in_flight: usize,
}

impl Undo {
    /// Length of the file at its durable point, if anything is to be undone.
    pub fn durable_len(&self) -> Option<u64> {
        self.entries.first().map(|e| e.old_len)
    }

    /// Applies the log to `file`: only durable data remains. Returns how many unsynced bytes
    /// were dropped: the bytes past the durable length plus the durable bytes restored.
    pub fn apply(&self, file: &File) -> io::Result<u64> {
        let Some(durable_len) = self.durable_len() else {
            return Ok(0);
        };
        let len = file.metadata()?.len();
        let mut dropped = len.saturating_sub(durable_len);
        for e in self.entries.iter().rev() {
            file.set_len(e.old_len)?;
            file.write_all_at(&e.old, e.offset)?;
            let end = (e.offset + e.old.len() as u64).min(durable_len);
            dropped += end.saturating_sub(e.offset);
        }
        file.set_len(durable_len)?;
        Ok(dropped)
    }
}

/// An fsync in flight: what it will make durable when it returns.
#[derive(Debug, Clone, Copy)]
pub struct SyncToken {
    ino: u64,
    upto: u64,
    epoch: u64,
}

/// Undo logs of every inode with unsynced changes.
#[derive(Debug, Default)]
pub struct UndoLog {
    records: HashMap<u64, Undo>,
    seq: u64,
    /// Power losses so far: an fsync that spans one completes nothing.
    epoch: u64,
}

/// Reads `len` bytes at `offset`, fewer if the file ends first.
pub(crate) fn read_range(file: &File, offset: u64, len: u64) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len as usize];
    let mut done = 0usize;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(done);
    Ok(buf)
}

impl UndoLog {
    /// Records that `file` (inode `ino`) is about to change in `[offset, offset + len)` (its
    /// length may change too).
    fn before(&mut self, ino: u64, file: &File, offset: u64, len: u64) -> io::Result<()> {
        let cur_len = file.metadata()?.len();
        let rec = self.records.entry(ino).or_default();
        // Bytes a power loss may have to restore: inside the durable length, or all existing
        // ones while an fsync is in flight (it may move the durable point past them).
        let limit = if rec.in_flight > 0 {
            cur_len
        } else {
            rec.durable_len().unwrap_or(cur_len).min(cur_len)
        };
        let end = offset.saturating_add(len).min(limit);
        let old = if offset < end {
            read_range(file, offset, end - offset)?
        } else {
            Vec::new()
        };
        // An entry without old bytes only matters as the first (it fixes the durable length)
        // or while an fsync is in flight (it may become the first).
        if old.is_empty() && !rec.entries.is_empty() && rec.in_flight == 0 {
            return Ok(());
        }
        self.seq += 1;
        rec.entries.push(Entry {
            seq: self.seq,
            offset,
            old,
            old_len: cur_len,
        });
        Ok(())
    }

    /// Call before writing `len` bytes at `offset` of `file` (inode `ino`).
    pub fn before_write(&mut self, ino: u64, file: &File, offset: u64, len: u64) -> io::Result<()> {
        self.before(ino, file, offset, len)
    }

    /// Call before setting the length of `file` to `new_len`.
    pub fn before_truncate(&mut self, ino: u64, file: &File, new_len: u64) -> io::Result<()> {
        self.before(ino, file, new_len, u64::MAX - new_len)
    }

    /// Call before any other change of `file`'s data or length (e.g. `fallocate`) that touches
    /// `[offset, offset + len)`.
    pub fn before_change(&mut self, ino: u64, file: &File, offset: u64, len: u64) -> io::Result<()> {
        self.before(ino, file, offset, len)
    }

    /// An fsync/fdatasync of `ino` starts: everything written so far becomes durable when
    /// [`UndoLog::sync_end`] is called with the token.
    pub fn sync_start(&mut self, ino: u64) -> SyncToken {
        self.records.entry(ino).or_default().in_flight += 1;
        SyncToken {
            ino,
            upto: self.seq,
            epoch: self.epoch,
        }
    }

    /// The fsync returns. False if a power loss came first (then nothing became durable).
    pub fn sync_end(&mut self, t: SyncToken) -> bool {
        if t.epoch != self.epoch {
            return false;
        }
        if let Some(rec) = self.records.get_mut(&t.ino) {
            rec.in_flight -= 1;
            rec.entries.retain(|e| e.seq > t.upto);
            if rec.entries.is_empty() && rec.in_flight == 0 {
                self.records.remove(&t.ino);
            }
        }
        true
    }

    /// The fsync ends without making anything durable (its caller died before it returned).
    pub fn sync_abandon(&mut self, t: SyncToken) {
        if t.epoch != self.epoch {
            return;
        }
        if let Some(rec) = self.records.get_mut(&t.ino) {
            rec.in_flight -= 1;
            if rec.entries.is_empty() && rec.in_flight == 0 {
                self.records.remove(&t.ino);
            }
        }
    }

    /// An fsync that takes no time.
    pub fn synced(&mut self, ino: u64) {
        let t = self.sync_start(ino);
        self.sync_end(t);
    }

    /// The inode is gone (its last name was removed): nothing to undo.
    pub fn forget(&mut self, ino: u64) {
        if let Some(rec) = self.records.get_mut(&ino) {
            rec.entries.clear();
            if rec.in_flight == 0 {
                self.records.remove(&ino);
            }
        }
    }

    /// Power loss: takes every log out (the caller applies them); fsyncs in flight will
    /// complete nothing.
    pub fn take_all(&mut self) -> Vec<(u64, Undo)> {
        self.epoch += 1;
        let mut all: Vec<_> = self.records.drain().filter(|(_, u)| !u.entries.is_empty()).collect();
        all.sort_by_key(|(ino, _)| *ino);
        all
    }

    /// Number of inodes with unsynced changes.
    pub fn len(&self) -> usize {
        self.records.values().filter(|u| !u.entries.is_empty()).count()
    }

    /// True when every file is synced.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;

    fn open(dir: &tempfile::TempDir, name: &str) -> File {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.path().join(name))
            .unwrap()
    }

    fn content(f: &File) -> Vec<u8> {
        read_range(f, 0, f.metadata().unwrap().len()).unwrap()
    }

    fn write(log: &mut UndoLog, f: &File, offset: u64, data: &[u8]) {
        log.before_write(7, f, offset, data.len() as u64).unwrap();
        f.write_all_at(data, offset).unwrap();
    }

    fn truncate(log: &mut UndoLog, f: &File, len: u64) {
        log.before_truncate(7, f, len).unwrap();
        f.set_len(len).unwrap();
    }

    fn crash(log: &mut UndoLog, f: &File) -> u64 {
        log.take_all().iter().map(|(_, u)| u.apply(f).unwrap()).sum()
    }

    #[test]
    fn unsynced_appends_and_overwrites_are_undone_and_synced_data_stays() {
        let dir = tempfile::tempdir().unwrap();
        let f = open(&dir, "a");
        let mut log = UndoLog::default();
        write(&mut log, &f, 0, b"0123456789");
        log.synced(7);
        write(&mut log, &f, 10, b"abcde");
        write(&mut log, &f, 2, b"XY");
        write(&mut log, &f, 3, b"ZZZZZZZZZZ"); // overlaps the first overwrite and the append
        assert_ne!(content(&f), b"0123456789");
        assert_eq!(crash(&mut log, &f), 5 + 2 + 7);
        assert_eq!(content(&f), b"0123456789");
        assert!(log.is_empty());
    }

    #[test]
    fn a_file_never_synced_is_empty_after_the_crash() {
        let dir = tempfile::tempdir().unwrap();
        let f = open(&dir, "b");
        let mut log = UndoLog::default();
        write(&mut log, &f, 0, b"hello");
        write(&mut log, &f, 5, b" world");
        assert_eq!(crash(&mut log, &f), 11);
        assert_eq!(content(&f), b"");
    }

    #[test]
    fn truncates_below_the_synced_length_are_undone() {
        let dir = tempfile::tempdir().unwrap();
        let f = open(&dir, "c");
        let mut log = UndoLog::default();
        write(&mut log, &f, 0, b"abcdefgh");
        log.synced(7);
        truncate(&mut log, &f, 3);
        write(&mut log, &f, 3, b"XYZXYZXYZ");
        truncate(&mut log, &f, 1);
        truncate(&mut log, &f, 20);
        crash(&mut log, &f);
        assert_eq!(content(&f), b"abcdefgh");
    }

    #[test]
    fn fsync_keeps_everything_written_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let f = open(&dir, "d");
        let mut log = UndoLog::default();
        write(&mut log, &f, 0, b"one");
        log.synced(7);
        write(&mut log, &f, 3, b"two");
        log.synced(7);
        write(&mut log, &f, 6, b"three");
        assert_eq!(crash(&mut log, &f), 5);
        assert_eq!(content(&f), b"onetwo");
    }

    #[test]
    fn an_fsync_makes_durable_what_was_written_before_it_started_not_during_it() {
        let dir = tempfile::tempdir().unwrap();
        let f = open(&dir, "e");
        let mut log = UndoLog::default();
        write(&mut log, &f, 0, b"base");
        let t = log.sync_start(7);
        // Written while the fsync is in flight: an append and an overwrite of bytes that
        // were not durable before but will be once the fsync returns.
        write(&mut log, &f, 4, b"-later");
        write(&mut log, &f, 1, b"XX");
        assert!(log.sync_end(t));
        assert_eq!(crash(&mut log, &f), 6 + 2);
        assert_eq!(content(&f), b"base");
    }

    #[test]
    fn a_power_loss_during_an_fsync_wins() {
        let dir = tempfile::tempdir().unwrap();
        let f = open(&dir, "f");
        let mut log = UndoLog::default();
        write(&mut log, &f, 0, b"durable");
        log.synced(7);
        write(&mut log, &f, 7, b"+acked-too-early");
        let t = log.sync_start(7);
        assert_eq!(crash(&mut log, &f), 16);
        assert!(!log.sync_end(t), "the fsync returns after the power is gone");
        assert_eq!(content(&f), b"durable");
        assert!(log.is_empty());
    }
}
