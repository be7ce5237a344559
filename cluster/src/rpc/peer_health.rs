//! Whether a peer answers, as the calls on its pipe see it, logged once per change.
//!
//! A peer that is down fails every call every group makes to it: heartbeats, votes and
//! appends of every partition, several per second each. Logging each failure (as openraft does
//! at WARN, which the node's default filter therefore silences) writes millions of lines a day
//! that say one thing. Instead: one WARN when the peer stops answering, a summary every
//! `SUMMARY_EVERY` while it stays down, one INFO when it answers again. A peer counts as down
//! once its calls have failed for `GRACE` with no answer in between, so one slow call among
//! answered ones (a forwarded write waiting for its quorum) does not make the log flap.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How many of this node's partition groups replicate with the peer at an address, for the
/// peer-down lines ("64 groups affected"); set by the cluster once its groups exist.
pub type GroupsWith = Arc<OnceLock<Arc<dyn Fn(&str) -> usize + Send + Sync>>>;

/// How often a peer that stays unreachable is reported again.
pub const SUMMARY_EVERY: Duration = Duration::from_secs(30);
/// How long calls must fail, with no answer in between, before the peer counts as down.
pub const GRACE: Duration = Duration::from_secs(2);

/// The reachability of one peer address.
pub struct PeerHealth {
    addr: String,
    groups_with: GroupsWith,
    state: Mutex<State>,
    /// Per-peer metrics, their handles made once (a call costs one atomic add, no lookup).
    answered_calls: metrics::Counter,
    failed_calls: metrics::Counter,
    up: metrics::Gauge,
}

#[derive(Default)]
struct State {
    /// Since when every call has failed, and how many have.
    down: Option<Down>,
}

struct Down {
    /// First failure since the last answer.
    since: Instant,
    /// When it was last reported (`None`: not yet, still within `GRACE`).
    reported: Option<Instant>,
    failed: u64,
}

/// What a call's outcome changed, for the caller to log (kept apart so it can be tested).
#[derive(Debug, PartialEq, Eq)]
pub enum Change {
    /// Nothing worth a line.
    None,
    /// The peer just stopped answering.
    Unreachable,
    /// Still down: time to say so again, with the failures since it went down.
    StillUnreachable { for_secs: u64, failed: u64 },
    /// Answering again after this long.
    Back { after_secs: u64 },
}

impl PeerHealth {
    /// Health of the peer at `addr`, taken as reachable until a call fails.
    pub fn new(addr: &str, groups_with: GroupsWith) -> Self {
        let peer = addr.to_string();
        let up = metrics::gauge!("ringchat_peer_up", "peer" => peer.clone());
        up.set(1.0);
        PeerHealth {
            addr: peer.clone(),
            groups_with,
            state: Mutex::new(State::default()),
            answered_calls: metrics::counter!("ringchat_peer_calls_total", "peer" => peer.clone(), "outcome" => "answered"),
            failed_calls: metrics::counter!("ringchat_peer_calls_total", "peer" => peer, "outcome" => "failed"),
            up,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A call reached the peer and was answered (whatever the handler said).
    pub fn answered(&self) {
        self.answered_calls.increment(1);
        let change = self.answered_at(Instant::now());
        if let Change::Back { after_secs } = change {
            self.up.set(1.0);
            tracing::info!(peer = %self.addr, after_secs, "peer reachable again");
        }
    }

    /// A call did not reach the peer or got no answer in time.
    pub fn failed(&self, reason: &str) {
        self.failed_calls.increment(1);
        let groups_affected = || self.groups_with.get().map_or(0, |count| count(&self.addr));
        match self.failed_at(Instant::now()) {
            Change::Unreachable => {
                self.up.set(0.0);
                tracing::warn!(peer = %self.addr, reason, groups_affected = groups_affected(), "peer unreachable")
            }
            Change::StillUnreachable { for_secs, failed } => tracing::warn!(
                peer = %self.addr,
                for_secs,
                failed_calls = failed,
                groups_affected = groups_affected(),
                reason,
                "peer still unreachable"
            ),
            Change::None | Change::Back { .. } => {}
        }
    }

    fn answered_at(&self, now: Instant) -> Change {
        match self.state().down.take() {
            Some(Down {
                since,
                reported: Some(_),
                ..
            }) => Change::Back {
                after_secs: now.duration_since(since).as_secs(),
            },
            _ => Change::None,
        }
    }

    fn failed_at(&self, now: Instant) -> Change {
        let mut state = self.state();
        let down = state.down.get_or_insert(Down {
            since: now,
            reported: None,
            failed: 0,
        });
        down.failed += 1;
        match down.reported {
            None if now.duration_since(down.since) >= GRACE => {
                down.reported = Some(now);
                Change::Unreachable
            }
            Some(at) if now.duration_since(at) >= SUMMARY_EVERY => {
                down.reported = Some(now);
                Change::StillUnreachable {
                    for_secs: now.duration_since(down.since).as_secs(),
                    failed: down.failed,
                }
            }
            _ => Change::None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_that_stays_down_is_reported_once_then_every_summary_period_then_once_back() {
        let h = PeerHealth::new("p", GroupsWith::default());
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        assert_eq!(h.answered_at(t0), Change::None);
        assert_eq!(h.failed_at(t0), Change::None, "within the grace period");
        assert_eq!(h.failed_at(at(1_000)), Change::None);
        assert_eq!(h.failed_at(at(2_000)), Change::Unreachable);
        for ms in (2_010..32_000).step_by(10) {
            assert_eq!(h.failed_at(at(ms)), Change::None);
        }
        assert_eq!(
            h.failed_at(at(32_000)),
            Change::StillUnreachable {
                for_secs: 32,
                failed: 3_003
            }
        );
        assert_eq!(h.failed_at(at(40_000)), Change::None);
        assert_eq!(h.answered_at(at(45_000)), Change::Back { after_secs: 45 });
        assert_eq!(h.answered_at(at(46_000)), Change::None);
    }

    #[test]
    fn failures_between_answers_do_not_make_a_peer_down() {
        let h = PeerHealth::new("p", GroupsWith::default());
        let t0 = Instant::now();
        for s in 0..10 {
            assert_eq!(h.failed_at(t0 + Duration::from_secs(s)), Change::None);
            assert_eq!(h.answered_at(t0 + Duration::from_millis(s * 1_000 + 500)), Change::None);
        }
    }
}
