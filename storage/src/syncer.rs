//! Group commit: a dedicated thread that turns many "make my write durable" requests into one
//! fsync of the shared journal.
//!
//! Raft appends of every partition write their entries to fjall at once (readable immediately,
//! not yet durable) and then hand their completion callback here. The thread takes every
//! request waiting, calls `persist(SyncAll)` once — which covers every write that reached the
//! journal before it — and only then completes the callbacks. Throughput under load is one
//! fsync per batch, never one per message, and no ack precedes its fsync.

use std::sync::mpsc;

use fjall::{Database, PersistMode};

type Done = Box<dyn FnOnce(std::io::Result<()>) + Send>;

/// Handle to the group-commit thread. The thread exits when every handle is dropped.
#[derive(Clone)]
pub struct Syncer {
    tx: mpsc::Sender<Done>,
}

impl Syncer {
    /// Starts the thread for `db`.
    pub fn start(db: Database) -> Self {
        let (tx, rx) = mpsc::channel::<Done>();
        std::thread::Builder::new()
            .name("ringchat-fsync".into())
            .spawn(move || run(db, rx))
            .expect("spawn fsync thread");
        Syncer { tx }
    }

    /// Calls `done` after everything written to the database before this call is fsync'd.
    pub fn after_sync(&self, done: impl FnOnce(std::io::Result<()>) + Send + 'static) {
        if let Err(mpsc::SendError(done)) = self.tx.send(Box::new(done)) {
            done(Err(std::io::Error::other("fsync thread stopped")));
        }
    }
}

fn run(db: Database, rx: mpsc::Receiver<Done>) {
    let mut waiting: Vec<Done> = Vec::with_capacity(256);
    while let Ok(first) = rx.recv() {
        waiting.push(first);
        while let Ok(more) = rx.try_recv() {
            waiting.push(more);
        }
        metrics_batch(waiting.len());
        let result = db.persist(PersistMode::SyncAll);
        for done in waiting.drain(..) {
            done(match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(std::io::Error::other(e.to_string())),
            });
        }
    }
}

fn metrics_batch(n: usize) {
    tracing::trace!(batch = n, "group commit");
}
