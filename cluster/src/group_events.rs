//! Per-partition events logged as one line per burst, not one line per group.
//!
//! A joining node opens a group for every partition moving to it, a rebalance changes the
//! replica set of most partitions, a drained node closes all of them: dozens of identical
//! lines within a second or two (issue: a joiner logged 64 "partition group opened" lines).
//! Each site records its partition in a `GroupEvents`; `flush_group_events`, called once a
//! second by the node, writes one line per kind once its burst is over (no new event for
//! `QUIET`), naming how many partitions and which.

use std::collections::BTreeSet;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A burst is over once no event of its kind came for this long.
pub const QUIET: Duration = Duration::from_secs(1);

/// Groups opened here because a replica is moving here (`hosting.rs`).
pub static GROUPS_OPENED: GroupEvents = GroupEvents::new("partition groups opened for replicas moving here");
/// Groups closed here because their replica moved away (`hosting.rs`).
pub static GROUPS_CLOSED: GroupEvents = GroupEvents::new("partition groups closed: their replicas moved away");
/// Replica sets changed by this node as partition leader (`meta/membership.rs`).
pub static REPLICA_SETS_CHANGED: GroupEvents = GroupEvents::new("partition replica sets changed");
/// Elections this node started for groups without a live leader (`liveness/`).
pub static ELECTIONS_STARTED: GroupEvents = GroupEvents::new("elections started: no live leader");

/// Writes the line of every kind whose burst is over.
pub fn flush_group_events() {
    for events in [
        &GROUPS_OPENED,
        &GROUPS_CLOSED,
        &REPLICA_SETS_CHANGED,
        &ELECTIONS_STARTED,
    ] {
        if let Some((count, partitions)) = events.take_finished(Instant::now()) {
            tracing::info!(count, partitions = %partitions, "{}", events.what);
        }
    }
}

/// One kind of per-partition event, summarized per burst.
pub struct GroupEvents {
    what: &'static str,
    pending: Mutex<Pending>,
}

struct Pending {
    partitions: BTreeSet<u16>,
    last: Option<Instant>,
}

impl GroupEvents {
    /// Events described by `what` in the summary line.
    pub const fn new(what: &'static str) -> Self {
        GroupEvents {
            what,
            pending: Mutex::new(Pending {
                partitions: BTreeSet::new(),
                last: None,
            }),
        }
    }

    /// It happened to partition `p` (a DEBUG line for each, the summary later).
    pub fn record(&self, p: u16) {
        tracing::debug!(partition = p, "{}", self.what);
        self.record_at(p, Instant::now());
    }

    fn record_at(&self, p: u16, now: Instant) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.partitions.insert(p);
        pending.last = Some(now);
    }

    /// `(count, partitions as ranges)` if a burst ended by `now`; resets it.
    fn take_finished(&self, now: Instant) -> Option<(usize, String)> {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let last = pending.last?;
        if now.duration_since(last) < QUIET {
            return None;
        }
        pending.last = None;
        let partitions = std::mem::take(&mut pending.partitions);
        Some((partitions.len(), ranges(&partitions)))
    }
}

/// `0-7,9,12-13`.
fn ranges(set: &BTreeSet<u16>) -> String {
    let mut out = String::new();
    let mut iter = set.iter().copied().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end.wrapping_add(1))) && end < u16::MAX {
            end = iter.next().unwrap_or(end);
        }
        if !out.is_empty() {
            out.push(',');
        }
        if start == end {
            let _ = write!(out, "{start}");
        } else {
            let _ = write!(out, "{start}-{end}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_events_becomes_one_summary_once_it_is_over() {
        let events = GroupEvents::new("opened");
        let t0 = Instant::now();
        for p in [0u16, 1, 2, 3, 5, 9, 10, 63] {
            events.record_at(p, t0);
        }
        assert_eq!(
            events.take_finished(t0 + Duration::from_millis(500)),
            None,
            "still going"
        );
        assert_eq!(events.take_finished(t0 + QUIET), Some((8, "0-3,5,9-10,63".to_string())));
        assert_eq!(events.take_finished(t0 + QUIET * 3), None, "reported once");
    }
}
