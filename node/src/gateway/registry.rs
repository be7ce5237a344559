//! Local connections by user, for fan-out. Sending never blocks: each connection has a bounded
//! queue, and a connection whose queue is full is closed with 4008 instead of buffering without
//! bound (one slow client must not hold memory or slow everyone else).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use axum::extract::ws::Utf8Bytes;

use super::heartbeat::LastHeard;
pub use super::outbox::QueuedFrame;
use super::outbox::{Outbox, Pushed};
use super::revoked::{RecentRevocations, RevokedSession};

/// Close code: unauthorized / logged out.
pub const CLOSE_UNAUTHORIZED: u16 = 4001;
/// Close code: protocol error or no hello.
pub const CLOSE_PROTOCOL: u16 = 4002;
/// Close code: too slow or rate abuse.
pub const CLOSE_TOO_SLOW: u16 = 4008;
/// Close code: server going away.
pub const CLOSE_GOING_AWAY: u16 = 1001;
/// Close code: message too big.
pub const CLOSE_TOO_BIG: u16 = 1009;

/// One live, authenticated connection as seen by fan-out and presence: a cheap clone of one
/// shared allocation (ids, outbound queue and close switch together; see `outbox.rs` for why
/// one small struct and not a channel plus a token).
#[derive(Clone, Debug)]
pub struct ConnHandle(Arc<Conn>);

/// What `ConnHandle` points to.
#[derive(Debug)]
pub struct Conn {
    /// Process-unique id.
    pub id: u64,
    /// Authenticated user.
    pub user_id: Box<str>,
    /// Device.
    pub device_id: Box<str>,
    /// Session (hash of the token) — logout closes its sockets.
    pub token_hash: Box<str>,
    /// Outbound frames and the close switch, shared with the connection's writer.
    pub outbox: Outbox,
    /// When the client last sent a frame (for the heartbeat sweep).
    pub last_heard: LastHeard,
}

impl std::ops::Deref for ConnHandle {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        &self.0
    }
}

impl ConnHandle {
    /// A new connection with an empty outbound queue of `queue` frames at most.
    pub fn new(user_id: &str, device_id: &str, token_hash: &str, queue: usize) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        ConnHandle(Arc::new(Conn {
            id: NEXT.fetch_add(1, Ordering::Relaxed),
            user_id: user_id.into(),
            device_id: device_id.into(),
            token_hash: token_hash.into(),
            outbox: Outbox::new(queue),
            last_heard: LastHeard::default(),
        }))
    }

    /// Queues a frame; a full queue closes the connection with 4008. Returns false if the
    /// frame was not queued.
    pub fn push(&self, frame: Utf8Bytes) -> bool {
        self.push_shared(Arc::new(frame))
    }

    /// `push` of a frame shared with other connections (a fan-out).
    pub fn push_shared(&self, frame: QueuedFrame) -> bool {
        match self.outbox.push(frame) {
            Pushed::Queued => true,
            Pushed::Full => {
                metrics::counter!("ringchat_slow_consumer_disconnects_total").increment(1);
                false
            }
            Pushed::Closed => false,
        }
    }

    /// Queues a frame, waiting for room (catch-up: backpressure instead of dropping).
    pub async fn push_wait(&self, frame: Utf8Bytes) -> bool {
        self.outbox.push_wait(Arc::new(frame)).await
    }

    /// Requests the close with `code`; the first code set wins.
    pub fn close(&self, code: u16) {
        self.outbox.close(code)
    }
}

/// All local connections, by user, and which other nodes report connections of which users.
#[derive(Default)]
pub struct Registry {
    by_user: RwLock<HashMap<Arc<str>, Vec<ConnHandle>>>,
    count: AtomicU64,
    /// user → nodes (other than this one) holding at least one of its connections.
    remote: RwLock<HashMap<String, HashSet<u64>>>,
    /// Sessions logged out recently anywhere: their connections are closed on registration.
    revoked: RecentRevocations,
}

impl Registry {
    /// Adds a connection; true if its user was offline before (presence goes online). A
    /// connection of a session logged out meanwhile (it passed `hello` just before the logout)
    /// is registered closed with 4001, so it goes through the usual unregister path.
    pub fn register(&self, conn: ConnHandle) -> bool {
        let mut map = self.by_user.write().unwrap_or_else(|e| e.into_inner());
        if self.revoked.contains(&conn.token_hash) {
            conn.close(CLOSE_UNAUTHORIZED);
        }
        let list = match map.get_mut(&*conn.user_id) {
            Some(list) => list,
            None => map.entry(Arc::from(&*conn.user_id)).or_default(),
        };
        let was_offline = list.is_empty();
        list.push(conn);
        let n = self.count.fetch_add(1, Ordering::Relaxed) + 1;
        metrics::gauge!("ringchat_connections").set(n as f64);
        was_offline
    }

    /// Removes a connection; true if that was its user's last one (presence goes offline).
    pub fn unregister(&self, user_id: &str, conn_id: u64) -> bool {
        let mut map = self.by_user.write().unwrap_or_else(|e| e.into_inner());
        let Some(list) = map.get_mut(user_id) else {
            return false;
        };
        let before = list.len();
        list.retain(|c| c.id != conn_id);
        if list.len() < before {
            let n = self.count.fetch_sub(1, Ordering::Relaxed) - 1;
            metrics::gauge!("ringchat_connections").set(n as f64);
        }
        if list.is_empty() {
            map.remove(user_id);
            before > 0
        } else {
            false
        }
    }

    /// Number of the user's live connections here.
    pub fn connections_of(&self, user_id: &str) -> usize {
        self.by_user
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(user_id)
            .map_or(0, |l| l.len())
    }

    /// True if the user has a live connection here.
    pub fn is_online_here(&self, user_id: &str) -> bool {
        self.by_user
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(user_id)
            .is_some_and(|l| !l.is_empty())
    }

    /// True if the user has a live connection on this node or on any node that reported one.
    pub fn is_online(&self, user_id: &str) -> bool {
        self.is_online_here(user_id)
            || self
                .remote
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .get(user_id)
                .is_some_and(|n| !n.is_empty())
    }

    /// Records that `node` holds (or no longer holds) connections of `user_id`. Returns true if
    /// that changed whether the user is online anywhere.
    pub fn set_remote(&self, user_id: &str, node: u64, online: bool) -> bool {
        let before = self.is_online(user_id);
        {
            let mut remote = self.remote.write().unwrap_or_else(|e| e.into_inner());
            if online {
                remote.entry(user_id.to_string()).or_default().insert(node);
            } else if let Some(nodes) = remote.get_mut(user_id) {
                nodes.remove(&node);
                if nodes.is_empty() {
                    remote.remove(user_id);
                }
            }
        }
        before != self.is_online(user_id)
    }

    /// Replaces everything known about `node`'s users with `users` (a node's full report, or
    /// an empty one when it stopped answering). Returns the users whose online-anywhere state
    /// changed, with their new state.
    pub fn replace_remote_node(&self, node: u64, users: &HashSet<String>) -> Vec<(String, bool)> {
        let previously: Vec<String> = self
            .remote
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(_, nodes)| nodes.contains(&node))
            .map(|(u, _)| u.clone())
            .collect();
        let mut changed = Vec::new();
        for u in previously.iter().filter(|u| !users.contains(*u)) {
            if self.set_remote(u, node, false) {
                changed.push((u.clone(), false));
            }
        }
        for u in users {
            if self.set_remote(u, node, true) {
                changed.push((u.clone(), true));
            }
        }
        changed
    }

    /// Users with a live connection on this node.
    pub fn local_users(&self) -> HashSet<String> {
        self.by_user
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(_, l)| !l.is_empty())
            .map(|(u, _)| u.to_string())
            .collect()
    }

    /// Number of live connections.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// The other nodes holding connections of `users` (except `skip_user`), each with the users
    /// it holds: where a frame for `users` has to go.
    pub fn remote_nodes_of<'a>(
        &self,
        users: impl IntoIterator<Item = &'a String>,
        skip_user: Option<&str>,
    ) -> HashMap<u64, Vec<String>> {
        let remote = self.remote.read().unwrap_or_else(|e| e.into_inner());
        let mut out: HashMap<u64, Vec<String>> = HashMap::new();
        for u in users.into_iter().filter(|u| Some(u.as_str()) != skip_user) {
            for node in remote.get(u).into_iter().flatten() {
                out.entry(*node).or_default().push(u.clone());
            }
        }
        out
    }

    /// Queues `frame` to every connection of every user in `users`, except `skip_user`'s.
    /// Returns how many connections it reached.
    pub fn send_to_users<'a>(
        &self,
        users: impl IntoIterator<Item = &'a String>,
        frame: &Utf8Bytes,
        skip_user: Option<&str>,
    ) -> usize {
        let targets: Vec<ConnHandle> = {
            let map = self.by_user.read().unwrap_or_else(|e| e.into_inner());
            users
                .into_iter()
                .filter(|u| Some(u.as_str()) != skip_user)
                .filter_map(|u| map.get(u.as_str()))
                .flatten()
                .cloned()
                .collect()
        };
        let shared = Arc::new(frame.clone());
        targets.iter().filter(|c| c.push_shared(shared.clone())).count()
    }

    /// Logout of a session, here or on another node: closes its connections here with 4001
    /// and remembers it (see `revoked.rs`). Returns how many connections it closed.
    pub fn revoke_session(&self, session: RevokedSession) -> usize {
        // Remembered under the map's write lock: a registration either sees the revocation or
        // is already in the map when the close below looks.
        let map = self.by_user.write().unwrap_or_else(|e| e.into_inner());
        self.revoked.remember(session.clone());
        let mut closed = 0;
        for c in map
            .get(session.user_id.as_str())
            .into_iter()
            .flatten()
            .filter(|c| *c.token_hash == *session.token_hash)
        {
            c.close(CLOSE_UNAUTHORIZED);
            closed += 1;
        }
        closed
    }

    /// The sessions logged out recently (replayed to a peer whose link (re)starts).
    pub fn recent_revocations(&self) -> Vec<RevokedSession> {
        self.revoked.all()
    }

    /// Closes the connections whose client has been silent for more than `limit_ms` at `now`
    /// (milliseconds of `heartbeat::now_ms`); returns how many.
    pub fn close_silent(&self, limit_ms: u64, now: u64, code: u16) -> usize {
        self.close_where(code, |c| {
            !c.outbox.is_closed() && c.last_heard.silent_longer_than(limit_ms, now)
        })
    }

    /// Closes every connection (shutdown).
    pub fn close_all(&self, code: u16) {
        self.close_where(code, |_| true);
    }

    /// Closes the connections `pick` selects; returns how many.
    fn close_where(&self, code: u16, pick: impl Fn(&ConnHandle) -> bool) -> usize {
        let map = self.by_user.read().unwrap_or_else(|e| e.into_inner());
        let mut closed = 0;
        for c in map.values().flatten().filter(|c| pick(c)) {
            c.close(code);
            closed += 1;
        }
        closed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(user: &str, cap: usize) -> ConnHandle {
        ConnHandle::new(user, "d", "t", cap)
    }

    #[test]
    fn remote_nodes_of_lists_each_node_with_the_users_it_holds() {
        let r = Registry::default();
        r.set_remote("a", 2, true);
        r.set_remote("b", 2, true);
        r.set_remote("b", 3, true);
        r.set_remote("c", 3, true);
        r.set_remote("c", 3, false);
        let users: Vec<String> = ["a", "b", "c", "d"].map(String::from).to_vec();
        let mut by_node = r.remote_nodes_of(&users, None);
        by_node.values_mut().for_each(|v| v.sort());
        assert_eq!(by_node.len(), 2);
        assert_eq!(by_node[&2], vec!["a".to_string(), "b".to_string()]);
        assert_eq!(by_node[&3], vec!["b".to_string()]);
        let by_node = r.remote_nodes_of(&users, Some("b"));
        assert_eq!(by_node.len(), 1);
        assert_eq!(by_node[&2], vec!["a".to_string()]);
    }

    #[test]
    fn a_logout_closes_that_sessions_connections_and_any_that_register_after_it() {
        let r = Registry::default();
        let mine = ConnHandle::new("a", "d1", "t1", 4);
        let other_device = ConnHandle::new("a", "d2", "t2", 4);
        r.register(mine.clone());
        r.register(other_device.clone());
        let session = RevokedSession {
            user_id: "a".into(),
            token_hash: "t1".into(),
        };
        assert_eq!(r.revoke_session(session.clone()), 1);
        assert_eq!(mine.outbox.code(), CLOSE_UNAUTHORIZED);
        assert!(!other_device.outbox.is_closed(), "other sessions stay open");
        // A connection that passed hello just before the logout registers just after it.
        let late = ConnHandle::new("a", "d1", "t1", 4);
        r.register(late.clone());
        assert_eq!(late.outbox.code(), CLOSE_UNAUTHORIZED);
        assert_eq!(r.recent_revocations(), vec![session]);
    }

    #[test]
    fn presence_transitions_follow_first_and_last_connection() {
        let r = Registry::default();
        let a1 = conn("a", 4);
        let a2 = conn("a", 4);
        assert!(r.register(a1.clone()));
        assert!(!r.register(a2.clone()));
        assert!(!r.unregister("a", a1.id));
        assert!(r.is_online("a"));
        assert!(r.unregister("a", a2.id));
        assert!(!r.is_online("a"));
    }

    #[test]
    fn full_queue_closes_with_4008_instead_of_growing() {
        let r = Registry::default();
        let a = conn("a", 2);
        r.register(a.clone());
        let users = vec!["a".to_string()];
        let f: Utf8Bytes = "x".into();
        assert_eq!(r.send_to_users(&users, &f, None), 1);
        assert_eq!(r.send_to_users(&users, &f, None), 1);
        assert_eq!(r.send_to_users(&users, &f, None), 0);
        assert!(a.outbox.is_closed());
        assert_eq!(a.outbox.code(), CLOSE_TOO_SLOW);
    }
}
