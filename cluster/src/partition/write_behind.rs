//! Writing a large file without one long burst of dirty pages at its fsync.
//!
//! A snapshot file of a busy partition is tens of MB. Written whole and fsynced once at the
//! end (or left to the kernel's writeback), its pages reach the disk in one burst of 100 ms or
//! more, and every journal fsync on the machine, the one each acknowledged write waits for,
//! queues behind it: the slowest seconds of the 1 GiB rebalance lined up with such fsyncs
//! (docs/benchmarks.md, nineteenth). Syncing every `SYNC_EVERY_BYTES` keeps each burst to a
//! few MB.

use std::fs::File;
use std::io::{self, Write};

/// Bytes written between two syncs of a large file.
pub const SYNC_EVERY_BYTES: u64 = 4 << 20;

/// Fastest a large file is written (bytes per second, averaged over each sync): a burst of
/// several syncs back to back held every journal fsync behind it for as long.
pub const MAX_BYTES_PER_SEC: u64 = 48 << 20;

/// Bytes written since the last sync of a file: says when the next one is due. Shared by the
/// blocking writer below and the async one that stages a received snapshot (`rpc/raft_server.rs`).
#[derive(Default)]
pub struct SyncDue {
    unsynced: u64,
}

impl SyncDue {
    /// Counts `n` more bytes written; true (and counting from zero again) once
    /// `SYNC_EVERY_BYTES` have gone unsynced.
    pub fn wrote(&mut self, n: u64) -> bool {
        self.unsynced += n;
        if self.unsynced < SYNC_EVERY_BYTES {
            return false;
        }
        self.unsynced = 0;
        true
    }
}

/// A file written through `Write` that syncs its data every `SYNC_EVERY_BYTES`, at most
/// `MAX_BYTES_PER_SEC` (a blocking writer: it sleeps).
pub struct WriteBehind {
    file: File,
    due: SyncDue,
    /// When the last sync ended (or the file was opened).
    since: std::time::Instant,
}

impl WriteBehind {
    /// Writes to `file`.
    pub fn new(file: File) -> Self {
        WriteBehind {
            file,
            due: SyncDue::default(),
            since: std::time::Instant::now(),
        }
    }

    /// The file, every byte written so far synced with its metadata.
    pub fn finish(self) -> io::Result<File> {
        self.file.sync_all()?;
        Ok(self.file)
    }
}

impl Write for WriteBehind {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        if self.due.wrote(n as u64) {
            self.file.sync_data()?;
            let least = std::time::Duration::from_secs_f64(SYNC_EVERY_BYTES as f64 / MAX_BYTES_PER_SEC as f64);
            if let Some(rest) = least.checked_sub(self.since.elapsed()) {
                std::thread::sleep(rest);
            }
            self.since = std::time::Instant::now();
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    #[test]
    fn every_byte_written_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut w = WriteBehind::new(File::create(&path).unwrap());
        let chunk = vec![7u8; 1 << 20];
        for _ in 0..9 {
            w.write_all(&chunk).unwrap();
        }
        assert!(w.due.unsynced < SYNC_EVERY_BYTES, "synced along the way");
        w.finish().unwrap();
        let mut back = Vec::new();
        File::open(&path).unwrap().read_to_end(&mut back).unwrap();
        assert_eq!(back.len(), 9 << 20);
        assert!(back.iter().all(|b| *b == 7));
    }
}
