//! Per-inode undo records: everything a power loss would take back from one file.
//!
//! Writes go straight through to the backing file. Before a write or truncate changes bytes
//! that were already synced, the old bytes are saved; the first change after a sync also
//! remembers the file length at that sync. `fsync`/`fdatasync` on any handle of the inode
//! drops the record (everything is synced now). A power loss applies each record: the saved
//! bytes are written back newest first (so the oldest copy, the synced one, lands last) and the
//! length is set back to the synced length.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// What a power loss must undo in one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Undo {
    /// Length of the file at its last sync (or when first seen).
    pub synced_len: u64,
    /// `(offset, old bytes)` of synced bytes overwritten since, oldest first.
    pub saved: Vec<(u64, Vec<u8>)>,
}

impl Undo {
    /// Applies the record to `file`: only synced data remains. Returns how many unsynced bytes
    /// were dropped: the bytes past the synced length plus the synced bytes restored.
    pub fn apply(&self, file: &File) -> io::Result<u64> {
        let len = file.metadata()?.len();
        let mut dropped = len.saturating_sub(self.synced_len);
        for (offset, old) in self.saved.iter().rev() {
            file.write_all_at(old, *offset)?;
            dropped += old.len() as u64;
        }
        file.set_len(self.synced_len)?;
        Ok(dropped)
    }
}

/// Undo records of every inode with unsynced changes.
#[derive(Debug, Default)]
pub struct UndoLog {
    records: HashMap<u64, Undo>,
}

/// Reads `len` bytes at `offset`, fewer if the file ends first.
fn read_range(file: &File, offset: u64, len: u64) -> io::Result<Vec<u8>> {
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
    fn record(&mut self, ino: u64, file: &File) -> io::Result<&mut Undo> {
        Ok(match self.records.entry(ino) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => e.insert(Undo {
                synced_len: file.metadata()?.len(),
                saved: Vec::new(),
            }),
        })
    }

    /// Saves the synced bytes in `[offset, offset + len)` that `file` still has.
    fn save(&mut self, ino: u64, file: &File, offset: u64, len: u64) -> io::Result<()> {
        let rec = self.record(ino, file)?;
        let end = offset.saturating_add(len).min(rec.synced_len);
        if offset < end {
            let old = read_range(file, offset, end - offset)?;
            if !old.is_empty() {
                rec.saved.push((offset, old));
            }
        }
        Ok(())
    }

    /// Call before writing `len` bytes at `offset` of `file` (inode `ino`).
    pub fn before_write(&mut self, ino: u64, file: &File, offset: u64, len: u64) -> io::Result<()> {
        self.save(ino, file, offset, len)
    }

    /// Call before setting the length of `file` to `new_len`.
    pub fn before_truncate(&mut self, ino: u64, file: &File, new_len: u64) -> io::Result<()> {
        let synced_len = self.record(ino, file)?.synced_len;
        if new_len < synced_len {
            self.save(ino, file, new_len, synced_len - new_len)?;
        }
        Ok(())
    }

    /// Call before any other change of `file`'s data or length (e.g. `fallocate`) that touches
    /// `[offset, offset + len)`.
    pub fn before_change(&mut self, ino: u64, file: &File, offset: u64, len: u64) -> io::Result<()> {
        self.save(ino, file, offset, len)
    }

    /// `fsync`/`fdatasync` of the inode: nothing to undo any more.
    pub fn synced(&mut self, ino: u64) {
        self.records.remove(&ino);
    }

    /// The inode is gone (its last name was removed): nothing to undo.
    pub fn forget(&mut self, ino: u64) {
        self.records.remove(&ino);
    }

    /// Takes every record out, leaving the log empty.
    pub fn take_all(&mut self) -> Vec<(u64, Undo)> {
        let mut all: Vec<_> = self.records.drain().collect();
        all.sort_by_key(|(ino, _)| *ino);
        all
    }

    /// Number of inodes with unsynced changes.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// True when every file is synced.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
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
        log.before_truncate(7, &f, 3).unwrap();
        f.set_len(3).unwrap();
        write(&mut log, &f, 3, b"XYZXYZXYZ");
        log.before_truncate(7, &f, 1).unwrap();
        f.set_len(1).unwrap();
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
}
