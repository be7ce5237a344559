//! Which partitions a Raft group carries, as its own log decided: the step that lets one
//! group carry several partitions (docs/raft-groups.md).
//!
//! A group that has never recorded anything carries exactly its own partition (`id =
//! partition`): every group before this record existed. The record changes only by applying
//! the group's own log (`Adopt`, `Fence`, `Release`), so every replica agrees on it at every
//! log position, and a command naming a partition the group does not carry (or has fenced
//! for a move) is refused there, deterministically, as `ApplyError::NotHere`.
//!
//! Data keys stay under the partition's prefix and the group's own records (applied position,
//! membership, this one) under the group's prefix, table `META`: a partition that changes group
//! keeps its keys where they are.

use std::collections::BTreeSet;

use ringchat_storage::StorageError;
use serde::{Deserialize, Serialize};

use super::apply::apply_command;
use super::overlay::Overlay;
use super::tables as t;
use crate::command::{ApplyError, Command, Response};
use crate::meta::model::{FIRST_SET_GROUP, LAST_SET_GROUP};

/// The partitions a group carries and which of them are fenced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ownership {
    /// Partitions whose commands this group applies (unless fenced).
    pub carried: BTreeSet<u16>,
    /// Carried partitions frozen for a move: their keys do not change from the fence on.
    pub fenced: BTreeSet<u16>,
}

impl Ownership {
    /// What a group without a record carries: its own partition.
    pub fn own_partition(group: u16) -> Self {
        Ownership {
            carried: BTreeSet::from([group]),
            fenced: BTreeSet::new(),
        }
    }

    /// The record of `group` as staged in `ov` (or stored), else what a group carries before
    /// its log said anything: a partition's own group its partition (and the meta group its
    /// own records), a group named by a replica set nothing.
    pub fn load(ov: &Overlay<'_>, group: u16) -> Result<Self, StorageError> {
        Ok(ov
            .get_record::<Ownership>(&t::meta_ownership(group))?
            .unwrap_or_else(|| Ownership::initial(group)))
    }

    /// What `group` carries before its log recorded anything (see `load`).
    pub fn initial(group: u16) -> Self {
        if (FIRST_SET_GROUP..=LAST_SET_GROUP).contains(&group) {
            Ownership {
                carried: BTreeSet::new(),
                fenced: BTreeSet::new(),
            }
        } else {
            Ownership::own_partition(group)
        }
    }

    /// True if commands naming `p` apply here now.
    pub fn admits(&self, p: u16) -> bool {
        self.carried.contains(&p) && !self.fenced.contains(&p)
    }
}

/// True if this node's replica of group `group` has applied its adoption of partition `p`
/// (its ownership record admits it).
pub fn admitted_here(store: &ringchat_storage::Store, group: u16, p: u16) -> bool {
    store
        .sm
        .get(t::meta_ownership(group))
        .ok()
        .flatten()
        .and_then(|v| crate::codec::decode::<Ownership>(&v).ok())
        .is_some_and(|o| o.admits(p))
}

/// True if this node's replica of group `group` carries partition `p` (fenced or not), as
/// recorded; an unreadable record counts as carrying it (nothing is deleted on a doubt).
pub fn carried_here(store: &ringchat_storage::Store, group: u16, p: u16) -> bool {
    match store.sm.get(t::meta_ownership(group)) {
        Ok(Some(v)) => crate::codec::decode::<Ownership>(&v).map_or(true, |o| o.carried.contains(&p)),
        Ok(None) => false,
        Err(_) => true,
    }
}

/// True if a group on this node other than `group` admits partition `p` now (carries it,
/// unfenced): that group's replica holds the partition's live keys, and a snapshot of `group`
/// must neither drop nor overwrite them. The candidates are `p`'s own group (which carries it
/// without a record until it fences it) and every group named by a replica set.
pub fn admitted_elsewhere(store: &ringchat_storage::Store, group: u16, p: u16) -> Result<bool, StorageError> {
    let recorded = |g: u16| -> Result<Option<Ownership>, StorageError> {
        match store.sm.get(t::meta_ownership(g))? {
            Some(v) => Ok(Some(crate::codec::decode(&v)?)),
            None => Ok(None),
        }
    };
    if group != p {
        let own = match recorded(p)? {
            Some(o) => o.admits(p),
            None => super::LogStore::has_state(store, p),
        };
        if own {
            return Ok(true);
        }
    }
    for g in crate::meta::group_records::set_groups_in(store)?.into_keys() {
        if g != group && recorded(g)?.is_some_and(|o| o.admits(p)) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The `(partition, source group, log index)` an entry of group `group` must see in place on
/// this node before it applies: the partition, source and fence of each `Adopt` in it (none
/// for an adoption from the group itself, which is how a new cluster's groups start).
pub fn adoption_waits(cmd: &Command, group: u16) -> Vec<(u16, u16, u64)> {
    match cmd {
        Command::Adopt { partition, from, after } if *from != group => vec![(*partition, *from, *after)],
        Command::Batch(commands) => commands.iter().flat_map(|c| adoption_waits(c, group)).collect(),
        _ => Vec::new(),
    }
}

/// Waits until partition `p`'s keys on this node are its state at its fence in group `from`
/// (log index `after`): this node's replica of `from` has applied its log that far, as its
/// state machine recorded it in `store`, or a copy of `p` taken at that fence finished here
/// (`range_copy.rs`, on a node new to the partition). A group adopting a partition waits here
/// (only on this node: its other replicas go on), so it never writes a key of the partition
/// before the source group's last write of it has landed here.
pub async fn source_applied(
    store: &ringchat_storage::Store,
    p: u16,
    from: u16,
    after: u64,
) -> Result<(), StorageError> {
    let started = std::time::Instant::now();
    let mut warned = std::time::Duration::ZERO;
    loop {
        let applied = match store.sm.get(t::meta_applied(from))? {
            Some(v) => crate::codec::decode::<Option<openraft::alias::LogIdOf<crate::types::TypeConfig>>>(&v)?,
            None => None,
        };
        if applied.is_some_and(|l| l.index() >= after) {
            return Ok(());
        }
        if super::range_copy::copy_marker(store, p)?.is_some_and(|m| m.from == from && m.after == after) {
            return Ok(());
        }
        let waited = started.elapsed();
        if waited >= warned + std::time::Duration::from_secs(10) {
            warned = waited;
            tracing::warn!(partition = p, from, after, applied = ?applied.map(|l| l.index()), waited_s = waited.as_secs(),
                "adopting a partition waits for its source group to apply its fence here");
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// Applies one log entry's command (at log `index`) to group `group`, which carries `owned`:
/// packed entries command by command, named commands only for a partition it admits,
/// ownership changes to `owned` (staged in `ov` with the rest), anything else as a command of
/// the group's own partition (`apply_command`).
pub fn apply_entry(
    ov: &mut Overlay<'_>,
    group: u16,
    index: u64,
    owned: &mut Ownership,
    cmd: &Command,
) -> Result<Response, StorageError> {
    Ok(match cmd {
        Command::Batch(commands) => {
            let mut answers = Vec::with_capacity(commands.len());
            for command in commands {
                answers.push(match command {
                    Command::Batch(_) => Response::Rejected(ApplyError::Invalid("nested batch".into())),
                    command => apply_entry(ov, group, index, owned, command)?,
                });
            }
            Response::Batch(answers)
        }
        Command::For { partition, command } => match command.as_ref() {
            Command::Batch(_)
            | Command::For { .. }
            | Command::Adopt { .. }
            | Command::Fence { .. }
            | Command::Release { .. } => {
                Response::Rejected(ApplyError::Invalid("a named command holds one plain command".into()))
            }
            _ if !owned.admits(*partition) => Response::Rejected(ApplyError::NotHere),
            command => apply_command(ov, *partition, command)?,
        },
        Command::Adopt { partition, .. } => {
            owned.carried.insert(*partition);
            owned.fenced.remove(partition);
            ov.put_record(t::meta_ownership(group), owned);
            Response::Done
        }
        Command::Fence { partition } => {
            if owned.carried.contains(partition) {
                owned.fenced.insert(*partition);
                ov.put_record(t::meta_ownership(group), owned);
                Response::Position(index)
            } else {
                Response::Rejected(ApplyError::NotHere)
            }
        }
        Command::Release { partition } => {
            owned.carried.remove(partition);
            owned.fenced.remove(partition);
            ov.put_record(t::meta_ownership(group), owned);
            Response::Done
        }
        // A bare command: the group's own partition, while it carries it.
        _ if !owned.admits(group) => Response::Rejected(ApplyError::NotHere),
        command => apply_command(ov, group, command)?,
    })
}
