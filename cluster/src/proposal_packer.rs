//! Packing writes at a partition's leader: while a group already has `IN_FLIGHT` proposals on
//! their way through Raft, further writes wait here and leave together, as one
//! `Command::Batch` log entry, when one of those finishes.
//!
//! Why: every log entry pays a whole Raft round on every replica (the leader's RaftCore
//! passes, the log append and its fsync hand-off, an AppendEntries per follower and its reply,
//! a commit notice, an apply batch, a reply per proposal), and with 64 groups a group sees
//! fewer writes per round than that machinery can share. Packing makes the cost per round
//! fall as the load rises: an idle group proposes each write at once (a lone write is never
//! held back by a timer), a busy one sends everything that queued during a round in the next.
//! Measured before/after in docs/benchmarks.md; the design in docs/write-path.md.
//!
//! A packed entry is a command variant that releases before it cannot decode, so a leader
//! packs only when every other member of the group has said it can read it (`can_pack`).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use crate::command::{Command, Response};
use crate::leader_calls::{self, LocalFailure};
use crate::types::PartitionRaft;

/// Proposals of one group in flight before further writes wait to be packed: two keep the
/// pipeline busy (one being replicated while the next one's entry is appended) without giving
/// up the packing that waiting buys.
pub const IN_FLIGHT: usize = 2;
/// Most commands in one packed entry...
pub const MAX_COMMANDS: usize = 256;
/// ...and most message text in it (a single larger command still goes alone): a packed entry
/// must stay well inside one pipe batch and one AppendEntries.
pub const MAX_TEXT_BYTES: usize = 512 * 1024;

/// Whether every other member of a group can decode packed entries (see the module doc).
pub type CanPack = Arc<dyn Fn(&PartitionRaft) -> bool + Send + Sync>;

/// A write waiting for the next packed entry.
struct Waiting {
    command: Command,
    reply: oneshot::Sender<Result<Response, LocalFailure>>,
}

#[derive(Default)]
struct State {
    in_flight: usize,
    waiting: VecDeque<Waiting>,
}

/// The writes of one group on this node (whichever instance of it serves them now).
#[derive(Default)]
struct Packer {
    state: Mutex<State>,
}

impl Packer {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes the next packed entry's commands off the queue, or gives the turn back.
    fn next_batch(&self) -> Option<Vec<Waiting>> {
        let mut state = self.lock();
        // Writes whose caller gave up (router timeout, dropped connection) are not proposed.
        state.waiting.retain(|w| !w.reply.is_closed());
        if state.waiting.is_empty() {
            state.in_flight -= 1;
            return None;
        }
        let mut batch = Vec::new();
        let mut text = 0;
        while let Some(next) = state.waiting.front() {
            let size = text_bytes(&next.command);
            if !batch.is_empty() && (batch.len() >= MAX_COMMANDS || text + size > MAX_TEXT_BYTES) {
                break;
            }
            text += size;
            batch.extend(state.waiting.pop_front());
        }
        Some(batch)
    }
}

/// Message text a command carries (what bounds a packed entry's size).
fn text_bytes(command: &Command) -> usize {
    match command {
        Command::SendMessage { text, .. } => text.len(),
        _ => 0,
    }
}

/// The packers of a node's groups, and the gate that says whether a group may pack.
pub struct Packers {
    by_group: Mutex<HashMap<u16, Arc<Packer>>>,
    can_pack: CanPack,
}

impl Packers {
    /// Packers that pack a group's writes whenever `can_pack` allows it for that group.
    pub fn new(can_pack: CanPack) -> Self {
        Packers {
            by_group: Mutex::default(),
            can_pack,
        }
    }

    /// The packer of group `group` (whichever instance of it serves it now).
    fn packer(&self, group: u16) -> Arc<Packer> {
        self.by_group
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(group)
            .or_default()
            .clone()
    }

    /// Proposes `command` to `raft` (this node's replica of group `group`, which it leads) and
    /// returns the state machine's answer, packed with other writes while the group is busy.
    pub(crate) async fn write(
        &self,
        raft: &PartitionRaft,
        group: u16,
        command: Command,
    ) -> Result<Response, LocalFailure> {
        // The gate is asked where a packed entry forms (`propose`), not for every write.
        let slots = slots();
        if slots == 0 || matches!(command, Command::Batch(_)) {
            return leader_calls::write(raft, command).await;
        }
        let packer = self.packer(group);
        // Ok: this write takes a free slot now; Err: it waits for the next packed entry.
        let turn = {
            let mut state = packer.lock();
            if state.in_flight < slots {
                state.in_flight += 1;
                Ok(command)
            } else {
                let (reply, answer) = oneshot::channel();
                state.waiting.push_back(Waiting { command, reply });
                Err(answer)
            }
        };
        match turn {
            Ok(command) => {
                let _turn = Turn {
                    packer,
                    raft: raft.clone(),
                    can_pack: self.can_pack.clone(),
                };
                leader_calls::write(raft, command).await
            }
            Err(answer) => answer
                .await
                .unwrap_or_else(|_| Err(LocalFailure::Unavailable("the packed write was dropped".into()))),
        }
    }
}

/// Proposes `command` on `raft` (group `group`), through `packers` when the node packs.
///
/// Boxed: this future sits deep inside every cluster call's future (gateway → router →
/// packer → Raft), and without the box the compiler's layout queries of the callers' futures
/// run past its depth limit.
pub(crate) fn write<'a>(
    packers: Option<&'a Packers>,
    raft: &'a PartitionRaft,
    group: u16,
    command: Command,
) -> Pin<Box<dyn Future<Output = Result<Response, LocalFailure>> + Send + 'a>> {
    Box::pin(async move {
        match packers {
            Some(packers) => packers.write(raft, group, command).await,
            None => leader_calls::write(raft, command).await,
        }
    })
}

/// A proposal slot of a group. When the proposal holding it ends (or its caller gives up),
/// the slot passes to the writes that queued meanwhile, as one packed entry.
struct Turn {
    packer: Arc<Packer>,
    raft: PartitionRaft,
    /// Asked when a packed entry forms, the moment it matters: a member that cannot read it
    /// may have joined the group while the writes waited.
    can_pack: CanPack,
}

impl Drop for Turn {
    fn drop(&mut self) {
        let Some(batch) = self.packer.next_batch() else {
            return;
        };
        let turn = Turn {
            packer: self.packer.clone(),
            raft: self.raft.clone(),
            can_pack: self.can_pack.clone(),
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    propose(&turn.raft, batch, &turn.can_pack).await;
                    drop(turn);
                });
            }
            // No runtime left (shutdown): the waiters' senders drop with `batch`, and each hears
            // "dropped"; the turn is given back so the packer stays usable.
            Err(_) => {
                drop(batch);
                std::mem::forget(turn);
                let mut state = self.packer.lock();
                state.in_flight = state.in_flight.saturating_sub(1);
            }
        }
    }
}

/// Proposes the queued writes as one entry and answers each of them.
async fn propose(raft: &PartitionRaft, mut batch: Vec<Waiting>, can_pack: &CanPack) {
    if batch.len() == 1 {
        let Waiting { command, reply } = batch.pop().expect("one write");
        let _ = reply.send(leader_calls::write(raft, command).await);
        return;
    }
    if !can_pack(raft) {
        // A member cannot read packed entries: one entry per write, proposed together
        // (openraft still shares their rounds).
        let writes = batch.into_iter().map(|Waiting { command, reply }| async move {
            let _ = reply.send(leader_calls::write(raft, command).await);
        });
        futures_util::future::join_all(writes).await;
        return;
    }
    let (commands, replies): (Vec<_>, Vec<_>) = batch.into_iter().map(|w| (w.command, w.reply)).unzip();
    metrics::histogram!("ringchat_packed_writes_per_entry").record(commands.len() as f64);
    let count = commands.len();
    match leader_calls::write(raft, Command::Batch(commands)).await {
        Ok(Response::Batch(answers)) if answers.len() == count => {
            for (reply, answer) in replies.into_iter().zip(answers) {
                let _ = reply.send(Ok(answer));
            }
        }
        Ok(_) => {
            let why = format!("a packed entry of {count} writes was not answered write by write");
            for reply in replies {
                let _ = reply.send(Err(LocalFailure::Unavailable(why.clone())));
            }
        }
        Err(failure) => {
            for reply in replies {
                let _ = reply.send(Err(failure.duplicate()));
            }
        }
    }
}

/// The proposal slots per group: `IN_FLIGHT`, or `RINGCHAT_PACK_IN_FLIGHT` when set (0 turns
/// packing off), so a benchmark can compare both on one binary (docs/benchmarks.md).
fn slots() -> usize {
    static SLOTS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *SLOTS.get_or_init(|| {
        std::env::var("RINGCHAT_PACK_IN_FLIGHT")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(IN_FLIGHT)
    })
}
