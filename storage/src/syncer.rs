//! Group commit: a dedicated thread that turns many "make my write durable" requests into one
//! fsync of the shared journal.
//!
//! Raft appends of every partition write their entries to fjall at once (readable immediately,
//! not yet durable) and then hand their completion callback here. The thread takes every
//! request waiting, fsyncs the journal once — which covers every write that reached the
//! journal before it — and only then completes the callbacks. Throughput under load is one
//! fsync per batch, never one per message, and no ack precedes its fsync.
//!
//! The fsync itself runs outside fjall's journal lock (see `JournalSync`): fjall's own
//! `persist(SyncAll)` holds the lock every writer needs for the whole fsync, which blocked
//! every append and apply — and the tokio worker making it — for milliseconds per batch.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use fjall::{Database, PersistMode};

/// A request: the bytes its writer wrote, and what to call once they are durable.
type Done = (usize, Box<dyn FnOnce(std::io::Result<()>) + Send>);

/// Shortest time between the starts of two fsyncs (stretched under load, `BUSY_SPACING_FACTOR`). On this 2-core VM an fsync costs the
/// process ~170 µs of CPU (the virtio doorbell, ext4's journal) however little it covers: at
/// 4,000 msgs/s on one node, group commit alone ran 1,100 fsyncs/s at 3.7 requests each.
/// Spacing them 2 ms apart cut the node's CPU by ~10 % at that rate (0.94 → 0.85 cores, three
/// runs each), p50 ~1 ms higher, p99 within the runs' noise
/// (docs/benchmarks.md); an ack waits at most this much longer, and only under load.
pub const FSYNC_SPACING: Duration = Duration::from_millis(2);

/// Under load the spacing stretches up to this multiple of `FSYNC_SPACING`: at a 2-node
/// cluster's highest rates (10,000 msgs/s) the fsyncs alone were ~7 % of each node, and 4 ms
/// between them let the cluster pass 10,441 msgs/s instead of 9,492 (docs/benchmarks.md,
/// "twenty-first"). Stretched always, the wait doubled a DM's p50 at 1,000 msgs/s (5.6 →
/// 11.5 ms): so it stretches only as the bytes each fsync covers grow (`BusyGauge`). Not the
/// requests each covers: packed Raft entries keep that near 2 at every rate (measured: 1.7 at
/// 1,000 msgs/s, 1.9 at 5,000), the entries just get bigger.
pub const BUSY_SPACING_FACTOR: u32 = 2;

/// Bytes per fsync (smoothed) at or below which the spacing stays `FSYNC_SPACING` (a
/// 2-node cluster's DMs near 2,500 msgs/s)...
const LIGHT_BYTES: f64 = 1024.0;
/// ...and at or above which it is `BUSY_SPACING_FACTOR` times that (near 7,500 msgs/s),
/// linearly between.
const HEAVY_BYTES: f64 = 3072.0;

/// How full the recent fsyncs were: a moving average of the bytes each covered, as the
/// writers that asked for them reported (`Syncer::after_sync`).
struct BusyGauge {
    average: f64,
}

impl BusyGauge {
    /// Counts an fsync that covered `bytes`.
    fn covered(&mut self, bytes: usize) {
        self.average += (bytes as f64 - self.average) / 8.0;
    }

    /// The spacing before the next fsync, from `base` up to `BUSY_SPACING_FACTOR` × `base`.
    fn spacing(&self, base: Duration) -> Duration {
        let busy = ((self.average - LIGHT_BYTES) / (HEAVY_BYTES - LIGHT_BYTES)).clamp(0.0, 1.0);
        base.mul_f64(1.0 + busy * f64::from(BUSY_SPACING_FACTOR - 1))
    }
}

/// Handle to the group-commit thread. The thread exits when every handle is dropped.
#[derive(Clone)]
pub struct Syncer {
    tx: mpsc::Sender<Done>,
}

impl Syncer {
    /// Starts the thread for `db`, whose journal files (`<id>.jnl`) are in `journal_dir`;
    /// fsyncs start at least `spacing` apart (see `FSYNC_SPACING`).
    pub fn start(db: Database, journal_dir: PathBuf, spacing: Duration) -> Self {
        let (tx, rx) = mpsc::channel::<Done>();
        std::thread::Builder::new()
            .name("ringchat-fsync".into())
            .spawn(move || run(db, JournalSync::new(journal_dir), rx, spacing))
            .expect("spawn fsync thread");
        Syncer { tx }
    }

    /// Calls `done` after everything written to the database before this call is fsync'd;
    /// `bytes` is about how much the caller wrote (it paces the fsyncs, `BusyGauge`).
    pub fn after_sync(&self, bytes: usize, done: impl FnOnce(std::io::Result<()>) + Send + 'static) {
        if let Err(mpsc::SendError((_, done))) = self.tx.send((bytes, Box::new(done))) {
            done(Err(std::io::Error::other("fsync thread stopped")));
        }
    }
}

fn run(db: Database, mut journal: JournalSync, rx: mpsc::Receiver<Done>, spacing: Duration) {
    let mut waiting: Vec<Done> = Vec::with_capacity(256);
    let mut last_start: Option<std::time::Instant> = None;
    let mut gauge = BusyGauge { average: 0.0 };
    while let Ok(first) = rx.recv() {
        waiting.push(first);
        // Requests arriving within the spacing of the previous fsync's start wait for the rest
        // of it and share the next one; a request after a quiet spell is synced at once.
        if let Some(at) = last_start {
            let next = at + gauge.spacing(spacing);
            let now = std::time::Instant::now();
            if next > now {
                std::thread::sleep(next - now);
            }
        }
        while let Ok(more) = rx.try_recv() {
            waiting.push(more);
        }
        let started = std::time::Instant::now();
        last_start = Some(started);
        let result = journal.sync(&db);
        record_sync(waiting.len(), started.elapsed());
        gauge.covered(waiting.iter().map(|(bytes, _)| bytes).sum());
        for (_, done) in waiting.drain(..) {
            done(match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
            });
        }
    }
}

/// Makes every journal write that returned before `sync` durable, holding fjall's journal lock
/// only to hand its buffer to the kernel.
///
/// 1. `persist(Buffer)` (under the lock, one `write`): every returned write is now in the page
///    cache of the journal file it went to.
/// 2. `fsync` of the newest journal through this thread's own descriptor, without the lock.
///
/// A write went either to that newest file, which step 2 covers, or to an older one, which
/// fjall sealed with `persist(SyncAll)` when it rotated to the next (`<id + 1>.jnl`), before
/// that next file existed. A rotation between the steps only means step 2 syncs a file that is
/// already durable. Any surprise (no journal found, a file that cannot be opened) falls back
/// to fjall's own `persist(SyncAll)`.
struct JournalSync {
    dir: PathBuf,
    /// The newest journal seen so far, with a descriptor for fsync.
    active: Option<(u64, File)>,
}

impl JournalSync {
    fn new(dir: PathBuf) -> Self {
        JournalSync { dir, active: None }
    }

    fn sync(&mut self, db: &Database) -> io::Result<()> {
        let dir = self.dir.clone();
        self.sync_unnamed(db)
            .map_err(|e| io::Error::new(e.kind(), format!("fsync of the journal in {}: {e}", dir.display())))
    }

    fn sync_unnamed(&mut self, db: &Database) -> io::Result<()> {
        db.persist(PersistMode::Buffer).map_err(io::Error::other)?;
        match self.newest() {
            Ok(file) => file.sync_all(),
            Err(e) => {
                tracing::debug!(error = %e, "journal not found for a lock-free fsync; fjall's persist instead");
                self.active = None;
                db.persist(PersistMode::SyncAll).map_err(io::Error::other)
            }
        }
    }

    /// The newest journal file, opened: the cached one unless `<id + 1>.jnl` exists by now
    /// (rotation), found by listing the directory the first time.
    fn newest(&mut self) -> io::Result<&File> {
        let mut id = match &self.active {
            Some((id, _)) => *id,
            None => newest_journal_id(&self.dir)?,
        };
        while journal_path(&self.dir, id + 1).exists() {
            id += 1;
        }
        if self.active.as_ref().map(|(open, _)| *open) != Some(id) {
            self.active = Some((id, File::open(journal_path(&self.dir, id))?));
        }
        match &self.active {
            Some((_, file)) => Ok(file),
            None => Err(io::Error::other("no journal open")),
        }
    }
}

fn journal_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id}.jnl"))
}

/// The highest `<id>.jnl` in `dir`.
fn newest_journal_id(dir: &Path) -> io::Result<u64> {
    let mut newest = None;
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let id = name
            .to_str()
            .and_then(|n| n.strip_suffix(".jnl"))
            .and_then(|n| n.parse::<u64>().ok());
        newest = newest.max(id);
    }
    newest.ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no journal in {}", dir.display())))
}

/// A group commit that takes longer than this is logged: every ack behind it waited as long.
const SLOW_SYNC: std::time::Duration = std::time::Duration::from_millis(100);

/// Metrics of one group commit: its duration and how many requests it covered.
fn record_sync(batch: usize, took: std::time::Duration) {
    metrics::histogram!("ringchat_fsync_seconds").record(took.as_secs_f64());
    metrics::counter!("ringchat_fsync_total").increment(1);
    metrics::counter!("ringchat_fsync_requests_total").increment(batch as u64);
    if took >= SLOW_SYNC {
        tracing::warn!(batch, ms = took.as_millis() as u64, "slow journal fsync");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spacing_stretches_only_as_fsyncs_fill_up() {
        let base = Duration::from_millis(2);
        let mut gauge = BusyGauge { average: 0.0 };
        for _ in 0..50 {
            gauge.covered(600);
        }
        assert_eq!(gauge.spacing(base), base, "light load: the base spacing");
        for _ in 0..50 {
            gauge.covered(40_000);
        }
        assert_eq!(
            gauge.spacing(base),
            base * BUSY_SPACING_FACTOR,
            "full fsyncs: stretched"
        );
        gauge.average = 2048.0;
        assert_eq!(gauge.spacing(base), Duration::from_millis(3), "halfway between");
    }

    #[test]
    fn the_newest_journal_follows_rotations() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = JournalSync::new(dir.path().to_path_buf());
        assert!(journal.newest().is_err(), "no journal yet");
        std::fs::write(dir.path().join("0.jnl"), b"a").unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"x").unwrap();
        journal.newest().unwrap();
        assert_eq!(journal.active.as_ref().map(|(id, _)| *id), Some(0));
        // fjall rotates to <id + 1>.jnl; older ones are deleted once flushed.
        std::fs::write(dir.path().join("1.jnl"), b"b").unwrap();
        std::fs::write(dir.path().join("2.jnl"), b"c").unwrap();
        std::fs::remove_file(dir.path().join("0.jnl")).unwrap();
        journal.newest().unwrap();
        assert_eq!(journal.active.as_ref().map(|(id, _)| *id), Some(2));
        assert_eq!(newest_journal_id(dir.path()).unwrap(), 2);
    }

    #[test]
    fn group_commit_syncs_the_database_journal_without_fjalls_lock() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::Store::open(dir.path()).unwrap();
        store.sm.insert(b"k", b"v").unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        store
            .syncer
            .after_sync(0, move |r| tx.send(r.map_err(|e| e.to_string())).unwrap());
        rx.recv_timeout(std::time::Duration::from_secs(10))
            .expect("sync completes")
            .expect("sync succeeds");
        // The lock-free path found fjall's journal (the fallback would also succeed, so check
        // that the file it syncs is the one fjall writes).
        let mut journal = JournalSync::new(dir.path().join("fjall"));
        journal.sync(&store.db).unwrap();
        assert!(journal.active.is_some(), "journal of a fresh database found");
    }

    #[test]
    fn fsyncs_under_load_are_spaced_and_one_after_a_quiet_spell_is_immediate() {
        let dir = tempfile::tempdir().unwrap();
        let spacing = Duration::from_millis(80);
        let store = crate::Store::open_with_fsync_spacing(dir.path(), spacing).unwrap();
        let synced = |store: &crate::Store| {
            let (tx, rx) = std::sync::mpsc::channel();
            store.sm.insert(b"k", b"v").unwrap();
            let asked = std::time::Instant::now();
            store.syncer.after_sync(0, move |r| tx.send(r.is_ok()).unwrap());
            assert!(rx.recv_timeout(Duration::from_secs(10)).unwrap(), "sync succeeds");
            asked.elapsed()
        };
        synced(&store);
        // Right after a sync: waits out the spacing (minus the previous sync's own time).
        let busy = synced(&store);
        std::thread::sleep(spacing * 2);
        // After a quiet spell: synced at once.
        let quiet = synced(&store);
        assert!(busy >= spacing / 2, "a sync right after another waited only {busy:?}");
        assert!(
            quiet < busy,
            "after a quiet spell {quiet:?}, right after a sync {busy:?}"
        );
    }
}
