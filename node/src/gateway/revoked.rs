//! Sessions logged out recently, anywhere in the cluster.
//!
//! A logout closes the session's sockets on every node by a delivery to each peer, but two
//! things can slip past that one message: a connection that passed `hello` with the token just
//! before the logout and registers just after it, and a peer that was unreachable when the
//! logout was broadcast. So every node remembers the logouts it has seen for a while: a
//! connection registering with a remembered session is closed at once, and every (re)started
//! peer link replays the list, so a peer that missed the broadcast closes the sockets when it
//! is reachable again. Bounded in count and age: older sessions' sockets have long been closed.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a logout is remembered.
const KEEP: Duration = Duration::from_secs(600);
/// Logouts remembered at most (oldest forgotten first).
const MAX: usize = 10_000;

/// One logged-out session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokedSession {
    /// The session's user.
    pub user_id: String,
    /// The session (hash of its token).
    pub token_hash: String,
}

/// The recent logouts, oldest first, and their token hashes for lookups.
#[derive(Default)]
pub struct RecentRevocations {
    inner: Mutex<Recent>,
}

#[derive(Default)]
struct Recent {
    list: VecDeque<(Instant, RevokedSession)>,
    hashes: HashSet<String>,
}

impl Recent {
    fn forget_old(&mut self, now: Instant) {
        while self.list.front().is_some_and(|(at, _)| now.duration_since(*at) >= KEEP) {
            self.pop_oldest();
        }
    }

    fn pop_oldest(&mut self) {
        if let Some((_, s)) = self.list.pop_front() {
            self.hashes.remove(&s.token_hash);
        }
    }
}

impl RecentRevocations {
    /// Remembers `session`; true if it was not remembered already.
    pub fn remember(&self, session: RevokedSession) -> bool {
        let now = Instant::now();
        let mut r = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        r.forget_old(now);
        if r.hashes.contains(&session.token_hash) {
            return false;
        }
        if r.list.len() == MAX {
            r.pop_oldest();
        }
        r.hashes.insert(session.token_hash.clone());
        r.list.push_back((now, session));
        true
    }

    /// True if the session `token_hash` was logged out recently.
    pub fn contains(&self, token_hash: &str) -> bool {
        let mut r = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        r.forget_old(Instant::now());
        r.hashes.contains(token_hash)
    }

    /// Every logout still remembered, oldest first.
    pub fn all(&self) -> Vec<RevokedSession> {
        let mut r = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        r.forget_old(Instant::now());
        r.list.iter().map(|(_, s)| s.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(t: &str) -> RevokedSession {
        RevokedSession {
            user_id: "u".into(),
            token_hash: t.into(),
        }
    }

    #[test]
    fn a_remembered_logout_is_found_once_and_listed() {
        let r = RecentRevocations::default();
        assert!(r.remember(s("a")));
        assert!(!r.remember(s("a")), "the same logout twice is one entry");
        assert!(r.remember(s("b")));
        assert!(r.contains("a") && r.contains("b") && !r.contains("c"));
        assert_eq!(r.all(), vec![s("a"), s("b")]);
    }

    #[test]
    fn the_list_is_bounded_in_count() {
        let r = RecentRevocations::default();
        for i in 0..MAX + 5 {
            r.remember(s(&i.to_string()));
        }
        assert_eq!(r.all().len(), MAX);
        assert!(!r.contains("0"), "the oldest is forgotten first");
        assert!(r.contains(&(MAX + 4).to_string()));
    }
}
