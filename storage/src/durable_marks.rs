//! High-water marks of each partition's durable Raft state, in a file beside the database.
//!
//! fjall recovers its journal up to the last intact batch and says nothing of what was cut
//! off after it: a journal that lost its written tail (a truncated file, a disk that lied
//! about an fsync) opens as if those writes never happened. For Raft that is not harmless: a
//! replica that acknowledged entries or granted a vote and then forgot them can help elect a
//! leader that lacks committed entries, or vote twice in one term (the Jepsen NATS lesson).
//!
//! So each partition's newest fsync-confirmed log index and vote term are recorded here, in a
//! small file of its own (written atomically: temp file, fsync, rename, fsync of the folder)
//! about once a second, at shutdown, and at once when a mark goes down (a Raft truncation, a
//! partition dropped from this node). Only what an fsync confirmed is ever marked, so a crash
//! can leave the marks behind the database, never ahead of it: at start a partition whose
//! stored state is below its mark lost durable state, and the cluster layer keeps it from
//! voting or leading until its peers have given it back (`cluster/src/lost_state.rs`).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::StorageError;

/// The file's name in the data dir.
const FILE_NAME: &str = "raft-marks";
/// First line of the file: its format.
const HEADER: &str = "ringchat raft-marks 1";

/// What partition's Raft state was on disk at least once.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Mark {
    /// Newest log index an fsync confirmed.
    pub last_index: u64,
    /// Newest vote term an fsync confirmed.
    pub vote_term: u64,
}

/// What a node whose database is set aside needs to start as the member it was: the
/// cluster's partition count and the other members' cluster addresses to refill from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Membership {
    /// Partitions of the cluster (fixed at bootstrap).
    pub partitions: u16,
    /// Cluster addresses of the other members.
    pub peers: Vec<String>,
}

#[derive(Default)]
struct Marks {
    by_partition: BTreeMap<u16, Mark>,
    membership: Option<Membership>,
    /// Changed since the file was last written.
    dirty: bool,
}

/// The marks of every partition of this node. Shared by the store's clones.
pub struct DurableMarks {
    path: PathBuf,
    marks: Mutex<Marks>,
    /// Held while the file is written: one writer at a time (they share the temp file).
    writing: Mutex<()>,
}

impl DurableMarks {
    /// Reads the marks in `dir` (none if the file does not exist). A file that does not
    /// parse is reported and ignored: the marks only detect a loss, they never hold data.
    pub fn open(dir: &Path) -> DurableMarks {
        let path = dir.join(FILE_NAME);
        let (by_partition, membership) = match std::fs::read_to_string(&path) {
            Ok(text) => parse(&text).unwrap_or_else(|| {
                tracing::error!(path = %path.display(), "unreadable Raft marks file: lost durable state cannot be detected at this start");
                Default::default()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Default::default(),
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "cannot read the Raft marks file: lost durable state cannot be detected at this start");
                Default::default()
            }
        };
        DurableMarks {
            path,
            marks: Mutex::new(Marks {
                by_partition,
                membership,
                dirty: false,
            }),
            writing: Mutex::new(()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Marks> {
        self.marks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The mark of `partition`, if it ever had durable state here.
    pub fn get(&self, partition: u16) -> Option<Mark> {
        self.lock().by_partition.get(&partition).copied()
    }

    /// The membership recorded last (`set_membership`).
    pub fn membership(&self) -> Option<Membership> {
        self.lock().membership.clone()
    }

    /// The other members' cluster addresses, if this node had durable Raft state and knows
    /// peers that hold copies of it (empty otherwise: nobody could refill it).
    pub fn peers_to_refill_from(&self) -> Vec<String> {
        let marks = self.lock();
        match &marks.membership {
            Some(m) if !marks.by_partition.is_empty() => m.peers.clone(),
            _ => Vec::new(),
        }
    }

    /// Records the cluster's partition count and the other members' addresses.
    pub fn set_membership(&self, membership: Membership) {
        let mut marks = self.lock();
        if marks.membership.as_ref() != Some(&membership) {
            marks.membership = Some(membership);
            marks.dirty = true;
        }
    }

    /// An fsync confirmed log entries of `partition` up to `index`.
    pub fn raise_index(&self, partition: u16, index: u64) {
        self.raise(partition, index, |mark| &mut mark.last_index);
    }

    /// An fsync confirmed a vote of `partition` in `term`.
    pub fn raise_vote(&self, partition: u16, term: u64) {
        self.raise(partition, term, |mark| &mut mark.vote_term);
    }

    /// Raises the field `field` of `partition`'s mark to `value`; marks never go down here.
    fn raise(&self, partition: u16, value: u64, field: fn(&mut Mark) -> &mut u64) {
        let mut marks = self.lock();
        let slot = field(marks.by_partition.entry(partition).or_default());
        if value > *slot {
            *slot = value;
            marks.dirty = true;
        }
    }

    /// Raft removed `partition`'s entries after `index` (`None`: all of them) and that is
    /// durable: the mark goes down and the file is written now, so a crash right after
    /// cannot make the shorter log look like a loss.
    pub fn lower_index(&self, partition: u16, index: Option<u64>) -> Result<(), StorageError> {
        {
            let mut marks = self.lock();
            if let Some(mark) = marks.by_partition.get_mut(&partition) {
                let lowered = index.unwrap_or(0);
                if lowered < mark.last_index {
                    mark.last_index = lowered;
                    marks.dirty = true;
                }
            }
        }
        self.write_if_changed()
    }

    /// `partition`'s data left this node: its mark goes, written now.
    pub fn forget(&self, partition: u16) -> Result<(), StorageError> {
        {
            let mut marks = self.lock();
            if marks.by_partition.remove(&partition).is_some() {
                marks.dirty = true;
            }
        }
        self.write_if_changed()
    }

    /// True if a mark changed since the file was last written.
    pub fn changed(&self) -> bool {
        self.lock().dirty
    }

    /// Writes the file if a mark changed since the last write (blocks on the disk: call it
    /// off the async workers).
    pub fn write_if_changed(&self) -> Result<(), StorageError> {
        let _writing = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        self.write_locked()
    }

    /// As `write_if_changed`, but returns at once if another write is under way (it, or the
    /// next periodic write, takes the change).
    pub fn write_if_changed_unless_busy(&self) -> Result<(), StorageError> {
        match self.writing.try_lock() {
            Ok(_writing) => self.write_locked(),
            Err(std::sync::TryLockError::Poisoned(p)) => {
                let _writing = p.into_inner();
                self.write_locked()
            }
            Err(std::sync::TryLockError::WouldBlock) => Ok(()),
        }
    }

    fn write_locked(&self) -> Result<(), StorageError> {
        let text = {
            let mut marks = self.lock();
            if !marks.dirty {
                return Ok(());
            }
            marks.dirty = false;
            render(&marks.by_partition, marks.membership.as_ref())
        };
        let written = write_atomically(&self.path, text.as_bytes());
        if written.is_err() {
            // Try again at the next write.
            self.lock().dirty = true;
        }
        written.map_err(|e| StorageError::Io(e).at(&self.path))
    }
}

fn render(marks: &BTreeMap<u16, Mark>, membership: Option<&Membership>) -> String {
    let mut text = format!("{HEADER}\n");
    if let Some(m) = membership {
        text.push_str(&format!("cluster {}", m.partitions));
        for peer in &m.peers {
            text.push(' ');
            text.push_str(peer);
        }
        text.push('\n');
    }
    for (p, m) in marks {
        text.push_str(&format!("{p} {} {}\n", m.last_index, m.vote_term));
    }
    text.push_str(&format!("end {}\n", marks.len()));
    text
}

/// The marks of a whole file, `None` if any line is off (a torn or foreign file).
fn parse(text: &str) -> Option<(BTreeMap<u16, Mark>, Option<Membership>)> {
    let mut lines = text.lines();
    if lines.next()? != HEADER {
        return None;
    }
    let mut marks = BTreeMap::new();
    let mut membership = None;
    for line in lines {
        let fields: Vec<&str> = line.split(' ').collect();
        match fields.as_slice() {
            ["end", count] => return (count.parse::<usize>().ok()? == marks.len()).then_some((marks, membership)),
            ["cluster", partitions, peers @ ..] => {
                membership = Some(Membership {
                    partitions: partitions.parse().ok()?,
                    peers: peers.iter().map(|p| p.to_string()).collect(),
                });
            }
            [p, index, term] => {
                let mark = Mark {
                    last_index: index.parse().ok()?,
                    vote_term: term.parse().ok()?,
                };
                marks.insert(p.parse().ok()?, mark);
            }
            _ => return None,
        }
    }
    None
}

/// Temp file, fsync, rename over `path`, fsync of the folder: a crash leaves the old file or
/// the new one, never a mix.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_survive_a_reopen_and_only_rise_unless_lowered() {
        let dir = tempfile::tempdir().unwrap();
        let marks = DurableMarks::open(dir.path());
        assert_eq!(marks.get(3), None);
        marks.raise_index(3, 10);
        marks.raise_index(3, 7);
        marks.raise_vote(3, 2);
        marks.raise_index(65534, 4);
        marks.write_if_changed().unwrap();
        let again = DurableMarks::open(dir.path());
        assert_eq!(
            again.get(3),
            Some(Mark {
                last_index: 10,
                vote_term: 2
            })
        );
        assert_eq!(again.get(65534).map(|m| m.last_index), Some(4));
        assert_eq!(again.membership(), None);
        again.set_membership(Membership {
            partitions: 8,
            peers: vec!["127.0.0.1:7071".into(), "127.0.0.2:7071".into()],
        });
        again.lower_index(3, Some(5)).unwrap();
        again.forget(65534).unwrap();
        let third = DurableMarks::open(dir.path());
        assert_eq!(third.get(3).map(|m| m.last_index), Some(5));
        assert_eq!(third.get(65534), None);
        assert_eq!(third.membership().map(|m| (m.partitions, m.peers.len())), Some((8, 2)));
    }

    #[test]
    fn a_torn_file_is_ignored_not_trusted() {
        assert!(parse(&format!("{HEADER}\n1 5 1\n")).is_none(), "no end line");
        assert!(parse(&format!("{HEADER}\n1 5 1\nend 2\n")).is_none(), "count mismatch");
        assert!(parse("something else\nend 0\n").is_none());
        assert_eq!(parse(&format!("{HEADER}\nend 0\n")), Some((BTreeMap::new(), None)));
    }
}
