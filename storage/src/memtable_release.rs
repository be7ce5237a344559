//! Frees flushed memtables on a thread of ours, not under fjall's version lock.
//!
//! After a memtable is flushed, fjall drops the last version that still names it while it
//! holds that keyspace's version-history write lock (lsm-tree's `SuperVersions::maintenance`,
//! called from its memtable rotation), and dropping a 64 MiB memtable frees its whole skip
//! list: ~130 ms of CPU on a fjall worker, which runs at background priority. Every read and
//! write of the keyspace waits for that lock, so each flush of the state machine stalled a
//! node's writes for 0.2–0.5 s and decided the cluster's p99 near its highest rate
//! (docs/write-path.md, "Memtables freed outside fjall's lock").
//!
//! This thread keeps a handle on every memtable it sees as active, so fjall's drop under
//! the lock only lowers a count; once the handle here is the last one, the memtable is freed
//! here, with no lock held. It runs in the idle scheduling class: freeing a 64 MiB memtable
//! is ~0.2 s of a core, and it happens when the next memtable is sealed, i.e. beside that
//! memtable's flush on both replicas at once; at normal priority it took that CPU from the
//! tokio workers and the worst latency of those seconds doubled (docs/benchmarks.md,
//! "twenty-third"). Nothing waits for the memory; it comes back a little later. It reaches the memtables
//! through `fjall::AbstractTree`, which fjall exports but hides from its docs: an fjall
//! upgrade must keep `Keyspace::tree` and `active_memtable` or replace this module.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::Duration;

use fjall::{AbstractTree, Keyspace};

/// How often the active memtables are looked at: a memtable is active for seconds under
/// load, so none is missed, and a released one is freed this late at most.
const LOOK_EVERY: Duration = Duration::from_millis(20);

/// The owner of the release thread: it runs until every clone of this handle is gone (the
/// channel then disconnects; nothing is ever sent on it).
#[derive(Clone)]
pub struct MemtableRelease {
    _alive: mpsc::Sender<()>,
}

impl MemtableRelease {
    /// Starts the thread for `keyspaces`.
    pub fn start(keyspaces: Vec<Keyspace>) -> std::io::Result<Self> {
        let (alive, gone) = mpsc::channel::<()>();
        std::thread::Builder::new()
            .name("ringchat-memtables".into())
            .spawn(move || {
                crate::background_priority::idle_this_thread();
                run(&keyspaces, &gone)
            })?;
        Ok(MemtableRelease { _alive: alive })
    }
}

/// A memtable held here: its keyspace (index), its id, and the handle.
type Held = (usize, u64, Arc<dyn std::any::Any + Send + Sync>);

fn run(keyspaces: &[Keyspace], gone: &mpsc::Receiver<()>) {
    let mut held: Vec<Held> = Vec::new();
    loop {
        match gone.recv_timeout(LOOK_EVERY) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
        look(keyspaces, &mut held);
    }
}

/// Takes a handle on each keyspace's active memtable if there is none yet, and frees every
/// memtable only this thread still holds.
fn look(keyspaces: &[Keyspace], held: &mut Vec<Held>) {
    let mut active = Vec::with_capacity(keyspaces.len());
    for (k, keyspace) in keyspaces.iter().enumerate() {
        let memtable = keyspace.tree.active_memtable();
        let id = memtable.id();
        active.push((k, id));
        if !held.iter().any(|(hk, hid, _)| *hk == k && *hid == id) {
            held.push((k, id, memtable));
        }
    }
    // A memtable that is no longer active and has no other handle: flushed, and no version
    // or reader names it any more. Dropped here, by `retain`.
    held.retain(|(k, id, memtable)| active.contains(&(*k, *id)) || Arc::strong_count(memtable) > 1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flushed_memtable_is_freed_by_the_release_thread_once_fjall_lets_go_of_it() {
        let dir = tempfile::tempdir().unwrap();
        let db = fjall::Database::builder(dir.path()).open().unwrap();
        let ks = db.keyspace("ks", fjall::KeyspaceCreateOptions::default).unwrap();
        let keyspaces = vec![ks.clone()];
        let mut held = Vec::new();
        ks.insert("a", "1").unwrap();
        look(&keyspaces, &mut held);
        let first = ks.tree.active_memtable();
        assert_eq!(held.len(), 1);
        assert!(
            Arc::strong_count(&first) >= 3,
            "held here, by the tree and by this test"
        );
        ks.rotate_memtable_and_wait().unwrap();
        ks.insert("b", "2").unwrap();
        look(&keyspaces, &mut held);
        // The flushed one is still held here while anything else names it (this test does).
        assert_eq!(held.len(), 2);
        let flushed_id = first.id();
        drop(first);
        // fjall keeps old versions until a later rotation's maintenance: rotate until it let
        // go (bounded), then the next look frees it.
        for i in 0..10 {
            if !held
                .iter()
                .any(|(_, id, m)| *id == flushed_id && Arc::strong_count(m) > 1)
            {
                break;
            }
            ks.insert(format!("c{i}"), "3").unwrap();
            ks.rotate_memtable_and_wait().unwrap();
        }
        look(&keyspaces, &mut held);
        assert!(
            held.iter().all(|(_, id, _)| *id != flushed_id),
            "the flushed memtable is freed once only the release thread held it"
        );
        assert_eq!(ks.get("a").unwrap().as_deref(), Some(&b"1"[..]));
    }
}
