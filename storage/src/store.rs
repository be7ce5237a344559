//! The node's fjall database and its three keyspaces.

use std::path::Path;

use fjall::{Database, Keyspace, KeyspaceCreateOptions, KvSeparationOptions, PersistMode};

use crate::background_priority::open_at_background_priority;
use crate::{AtPath, StorageError, Syncer};

/// Values at least this large (long messages, and the log entries carrying them) are stored
/// in blob files beside the tree instead of inside it.
pub const LARGE_VALUE_BYTES: u32 = 4 * 1024;

/// Options of the keyspaces that hold message text (`log`, `sm`): key-value separation for
/// large values. In a plain LSM tree every compaction rewrites each value it passes, so a
/// 16 KB message is copied again at every level: filling a new replica with 1 GiB of such
/// messages spent ~30 % of its CPU in compaction writes (docs/storage.md). Apart, a value is
/// written once to a blob file and compactions move only its key and a pointer; typical
/// short messages stay inline, where a read costs one lookup. fjall records a keyspace's
/// options when it creates it, so a data dir created before keeps its keyspaces as they were.
fn with_large_values_apart() -> KeyspaceCreateOptions {
    KeyspaceCreateOptions::default().with_kv_separation(Some(
        KvSeparationOptions::default().separation_threshold(LARGE_VALUE_BYTES),
    ))
}

/// One fjall database per node. Cheap to clone (handles are reference counted).
#[derive(Clone)]
pub struct Store {
    /// The database; owns the single journal every keyspace writes through.
    pub db: Database,
    /// Raft log entries: `[partition][index u64]`.
    pub log: Keyspace,
    /// Raft vote, purge point and committed id per partition.
    pub raft: Keyspace,
    /// State machine data of every partition: `[partition][table][key…]`.
    pub sm: Keyspace,
    /// Group-commit thread: one fsync covers every append written before it.
    pub syncer: Syncer,
    /// Frees flushed memtables outside fjall's version lock (`memtable_release.rs`).
    _memtables: crate::memtable_release::MemtableRelease,
    /// Each partition's newest fsync-confirmed log index and vote term, kept outside fjall
    /// (`durable_marks.rs`): how a start tells a journal that lost its tail.
    pub marks: std::sync::Arc<crate::DurableMarks>,
    /// Where a damaged database was moved at this start (`open_with_fsync_spacing`).
    pub set_aside: Option<std::path::PathBuf>,
    /// fjall's folder, named in errors.
    fjall_dir: std::path::PathBuf,
}

impl Store {
    /// Opens (or creates) the database in `dir`, fsyncs spaced `FSYNC_SPACING` apart.
    pub fn open(dir: &Path) -> Result<Self, StorageError> {
        Self::open_with_fsync_spacing(dir, crate::syncer::FSYNC_SPACING)
    }

    /// Opens the database in `dir` with fsyncs starting at least `spacing` apart.
    ///
    /// A database fjall finds damaged (a checksum that does not match, a journal batch that does
    /// not parse) is set aside, not used and not deleted, when this node is a member of a
    /// cluster with other members to refill it from (`durable_marks.rs` records them): it then
    /// opens empty, `set_aside` says where the damaged one went, and every partition it held
    /// counts as having lost its state (`cluster/src/lost_state.rs`). A node without peers
    /// refuses to start instead: its database is the only copy.
    pub fn open_with_fsync_spacing(dir: &Path, spacing: std::time::Duration) -> Result<Self, StorageError> {
        std::fs::create_dir_all(dir).at_path(dir)?;
        let fjall_dir = dir.join("fjall");
        let marks = std::sync::Arc::new(crate::DurableMarks::open(dir));
        let found_running = std::fs::read_to_string(dir.join(DAMAGE_FOUND)).ok();
        let opened = match (open_catching_panics(&fjall_dir), found_running) {
            // Damage a read found while the node ran (`note_damage`): treated as damage found
            // now, but only where peers can refill it; alone, the node goes on with what it has.
            (Ok(db), Some(what)) => {
                if !marks.peers_to_refill_from().is_empty() {
                    drop(db);
                    Err(Damage::FoundRunning(what))
                } else {
                    tracing::error!(what = %what, "a read found the database damaged, and no other member is known to rebuild it from: it stays in use");
                    // Acted on: left in place it would restart the node again and again.
                    let _ = std::fs::remove_file(dir.join(DAMAGE_FOUND));
                    Ok(db)
                }
            }
            (Ok(db), None) => Ok(db),
            (Err(Opening::Failed(e)), _) if is_damage(&e) => Err(Damage::AtOpen(e)),
            (Err(Opening::Failed(e)), _) => return Err(StorageError::from(e).at(&fjall_dir)),
            (Err(Opening::Panicked(what)), _) => Err(Damage::Panicked(what)),
        };
        let (db, set_aside) = match opened {
            Ok(db) => (db, None),
            Err(e) => {
                let peers = marks.peers_to_refill_from();
                if peers.is_empty() {
                    return Err(StorageError::Corrupt(format!(
                        "the database in {} is damaged ({e}) and no other member is known to rebuild it from: restore the data dir from a backup, or move {} away to start this node empty",
                        fjall_dir.display(),
                        fjall_dir.display()
                    )));
                }
                let secs = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                let aside = dir.join(format!("fjall.damaged-{secs}"));
                std::fs::rename(&fjall_dir, &aside).at_path(&fjall_dir)?;
                tracing::error!(
                    error = %e,
                    moved_to = %aside.display(),
                    peers = ?peers,
                    "the database is damaged: it is set aside and this node starts empty, refilled by its peers"
                );
                let _ = std::fs::remove_file(dir.join(DAMAGE_FOUND));
                (
                    open_at_background_priority(&fjall_dir).at_path(&fjall_dir)?,
                    Some(aside),
                )
            }
        };
        let log = db.keyspace("log", with_large_values_apart).at_path(&fjall_dir)?;
        let raft = db
            .keyspace("raft", KeyspaceCreateOptions::default)
            .at_path(&fjall_dir)?;
        let sm = db.keyspace("sm", with_large_values_apart).at_path(&fjall_dir)?;
        // fjall keeps its journals (`<id>.jnl`) directly in its database folder.
        let syncer = Syncer::start(db.clone(), fjall_dir.clone(), spacing);
        let memtables = crate::memtable_release::MemtableRelease::start(vec![log.clone(), raft.clone(), sm.clone()])
            .at_path(&fjall_dir)?;
        Ok(Store {
            db,
            log,
            raft,
            sm,
            syncer,
            _memtables: memtables,
            marks,
            set_aside,
            fjall_dir,
        })
    }

    /// Records that a read found the database damaged (`StorageError::is_damage`), so that the
    /// next start sets it aside and refills it from the peers (`open_with_fsync_spacing`); the
    /// node's storage recovery restarts it (`node/src/storage_recovery.rs`). Logged once.
    pub fn note_damage(&self, what: &str) {
        if self.damage_noted() {
            return;
        }
        let flag = self.data_dir().join(DAMAGE_FOUND);
        tracing::error!(
            what,
            "a read found the database damaged; the node restarts and rebuilds it from its peers"
        );
        if let Err(e) = std::fs::write(&flag, what) {
            tracing::error!(error = %e, path = %flag.display(), "cannot record the damage");
        }
    }

    /// True once `note_damage` recorded damage that the next start will act on.
    pub fn damage_noted(&self) -> bool {
        self.data_dir().join(DAMAGE_FOUND).exists()
    }

    fn data_dir(&self) -> &Path {
        self.fjall_dir.parent().unwrap_or(&self.fjall_dir)
    }

    /// Flushes and fsyncs everything written so far (used on shutdown and for votes).
    pub fn sync(&self) -> Result<(), StorageError> {
        self.db.persist(PersistMode::SyncAll).at_path(&self.fjall_dir)?;
        Ok(())
    }
}

/// File in the data dir that says a read found the database damaged (`Store::note_damage`).
const DAMAGE_FOUND: &str = "damage-found";

/// How opening the database went wrong.
enum Opening {
    /// fjall returned an error.
    Failed(fjall::Error),
    /// fjall panicked: some damaged journals trip an assertion in its recovery (fjall 3.1.13,
    /// `journal/entry.rs`: a length field that no longer matches) instead of an error.
    Panicked(String),
}

/// Opens the database in `fjall_dir`, turning a panic inside fjall's recovery into an error.
fn open_catching_panics(fjall_dir: &Path) -> Result<Database, Opening> {
    // fjall's flush and compaction threads start at a lower priority (`background_priority.rs`).
    let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| open_at_background_priority(fjall_dir)));
    match opened {
        Ok(result) => result.map_err(Opening::Failed),
        Err(panic) => {
            let what = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "a panic".into());
            Err(Opening::Panicked(what))
        }
    }
}

/// Why the database is set aside.
enum Damage {
    /// fjall refused to open it.
    AtOpen(fjall::Error),
    /// fjall panicked while opening it (`Opening::Panicked`).
    Panicked(String),
    /// A read of the running node found it damaged (`Store::note_damage`).
    FoundRunning(String),
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Damage::AtOpen(e) => write!(f, "{e:?}"),
            Damage::Panicked(what) => write!(f, "fjall panicked while recovering it: {what}"),
            Damage::FoundRunning(what) => write!(f, "found while running: {what}"),
        }
    }
}

/// Whether fjall refused what it read back as damaged (not because of the disk, a lock, a
/// newer format or a file name it does not know).
pub(crate) fn is_damage(e: &fjall::Error) -> bool {
    use fjall::Error as F;
    use fjall::LsmError as L;
    match e {
        F::JournalRecovery(r) => *r != fjall::JournalRecoveryError::InvalidFileName,
        F::Decompress(_) | F::InvalidTrailer | F::InvalidTag(_) | F::Unrecoverable => true,
        F::Storage(inner) => matches!(
            inner,
            L::ChecksumMismatch { .. }
                | L::Decompress(_)
                | L::InvalidTag(_)
                | L::InvalidTrailer
                | L::InvalidHeader(_)
                | L::Unrecoverable
        ),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy_dir(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap().flatten() {
            let target = to.join(entry.file_name());
            if entry.file_type().unwrap().is_dir() {
                copy_dir(&entry.path(), &target);
            } else {
                std::fs::copy(entry.path(), &target).unwrap();
            }
        }
    }

    /// fjall 3.1.13 panics on some damaged journals (an assertion on a length field) where it
    /// returns an error on others: either way, opening must end in a damage error (a node
    /// without peers refuses to start with it), never a panic that takes the process down.
    #[test]
    fn a_journal_damaged_anywhere_opens_or_is_a_damage_error_never_a_panic() {
        let base = tempfile::tempdir().unwrap();
        {
            let store = Store::open(base.path()).unwrap();
            for i in 0u32..200 {
                store.sm.insert(i.to_be_bytes(), vec![b'x'; 64 + i as usize]).unwrap();
            }
            store.sync().unwrap();
        }
        let journal = base.path().join("fjall").join("0.jnl");
        let data = std::fs::read(&journal).unwrap();
        let written = data.iter().rposition(|b| *b != 0).unwrap() + 1;
        let mut damaged = 0;
        for k in 0..48 {
            let copy = tempfile::tempdir().unwrap();
            copy_dir(base.path(), copy.path());
            let at = written * k / 48;
            let mut bytes = data.clone();
            bytes[at] ^= 0xff;
            std::fs::write(copy.path().join("fjall").join("0.jnl"), &bytes).unwrap();
            match Store::open(copy.path()) {
                Ok(_) => {}
                Err(e) => {
                    assert!(e.is_damage(), "byte {at}: {e}");
                    assert!(e.to_string().contains("move"), "the error says what to do: {e}");
                    damaged += 1;
                }
            }
        }
        assert!(damaged > 0, "no flipped byte was found damaged");
    }
}
