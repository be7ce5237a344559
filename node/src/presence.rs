//! Presence: a user is online while any of its devices holds a live connection. Transitions
//! come from the registry (first connection in, last one out); subscribers are the local
//! connections that asked with `presence_subscribe`. `last_seen` is committed to the user's
//! home partition when the last connection ends, so it survives restarts.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use ringchat_cluster::meta::Delivery;
use ringchat_cluster::{Cluster, Command, NodeId};

use crate::chat::{now_ms, PresenceState};
use crate::fanout::Fanout;
use crate::gateway::{ConnHandle, Registry};
use crate::presence_gate::PresenceGate;

/// How long a user's first connection here waits for the peers to learn of it; a peer that
/// does not confirm in time is unreachable and gets the user in its next presence snapshot.
const ANNOUNCE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Most users one connection may watch.
pub const MAX_WATCHED_PER_CONNECTION: usize = 1000;

/// Presence of local connections and who watches whom.
pub struct Presence {
    cluster: Arc<Cluster>,
    registry: Arc<Registry>,
    fanout: Arc<Fanout>,
    watchers: Arc<Watchers>,
    gate: PresenceGate,
}

/// Local connections watching each user, by user id and connection id.
#[derive(Default)]
pub struct Watchers(Mutex<HashMap<String, HashMap<u64, ConnHandle>>>);

impl Watchers {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, HashMap<u64, ConnHandle>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The connections watching `user_id` now.
    pub fn of(&self, user_id: &str) -> Vec<ConnHandle> {
        self.lock()
            .get(user_id)
            .map(|set| set.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Drops connection `conn_id` from the watchers of `user_id`.
    pub fn remove(&self, conn_id: u64, user_id: &str) {
        let mut w = self.lock();
        if let Some(set) = w.get_mut(user_id) {
            set.remove(&conn_id);
            if set.is_empty() {
                w.remove(user_id);
            }
        }
    }
}

impl Presence {
    /// Presence over `registry`, persisting `last_seen` through `cluster` and telling other
    /// nodes through `fanout`.
    /// Starts the task that sends presence events (`presence_gate.rs`); it ends with this.
    pub fn new(cluster: Arc<Cluster>, registry: Arc<Registry>, fanout: Arc<Fanout>) -> Self {
        let watchers = Arc::new(Watchers::default());
        Presence {
            gate: PresenceGate::start(cluster.clone(), watchers.clone()),
            cluster,
            registry,
            fanout,
            watchers,
        }
    }

    /// Adds `conn` to the registry; tells other nodes if it is the user's first here, and
    /// announces `online` if the user was offline everywhere.
    pub async fn connected(&self, conn: ConnHandle) {
        let user = conn.user_id.to_string();
        let was_online = self.registry.is_online(&user);
        if self.registry.register(conn) {
            // Confirmed before the caller's catch-up read: from then on every node fans the
            // user's messages out to this one (see fanout.rs).
            let item = Delivery::Presence {
                user_id: user.clone(),
                node: self.cluster.node_id(),
                online: true,
                last_seen: None,
            };
            self.fanout.broadcast_confirmed(item, ANNOUNCE_WAIT).await;
            if !was_online {
                let last_seen = match self.cluster.get_user(&user).await {
                    Ok(Some(u)) => u.last_seen,
                    _ => None,
                };
                self.announce(&PresenceState {
                    user_id: user,
                    online: true,
                    last_seen,
                });
            }
        }
    }

    /// Another node reports that `user_id` gained its first or lost its last connection there.
    pub fn remote_changed(&self, user_id: &str, node: NodeId, online: bool, last_seen: Option<u64>) {
        if self.registry.set_remote(user_id, node, online) {
            self.announce(&PresenceState {
                user_id: user_id.to_string(),
                online,
                last_seen: if online { None } else { last_seen },
            });
        }
    }

    /// Another node reports its full set of connected users.
    pub fn remote_snapshot(&self, node: NodeId, users: &HashSet<String>) {
        for (user_id, online) in self.registry.replace_remote_node(node, users) {
            self.announce(&PresenceState {
                user_id,
                online,
                last_seen: (!online).then(now_ms),
            });
        }
    }

    /// A node stopped answering: its users are offline unless connected elsewhere.
    pub fn node_lost(&self, node: NodeId) {
        self.remote_snapshot(node, &HashSet::new());
    }

    /// Removes `conn`; if it was the user's last, stores `last_seen` and announces `offline`.
    /// `last_seen` is committed *before* the registry shows the user offline, so nobody can
    /// read `offline` with a missing `last_seen`.
    pub async fn disconnected(&self, conn: &ConnHandle, watched: &[String]) {
        self.unwatch(conn.id, watched);
        let ms = now_ms();
        let stored = self.registry.connections_of(&conn.user_id) <= 1 && self.store_last_seen(&conn.user_id, ms).await;
        if self.registry.unregister(&conn.user_id, conn.id) {
            if !stored {
                // Another device left at the same moment and counted on us: store it now.
                self.store_last_seen(&conn.user_id, ms).await;
            }
            self.fanout.broadcast(Delivery::Presence {
                user_id: conn.user_id.to_string(),
                node: self.cluster.node_id(),
                online: false,
                last_seen: Some(ms),
            });
            if !self.registry.is_online(&conn.user_id) {
                self.announce(&PresenceState {
                    user_id: conn.user_id.to_string(),
                    online: false,
                    last_seen: Some(ms),
                });
            }
        }
    }

    async fn store_last_seen(&self, user_id: &str, ms: u64) -> bool {
        let cmd = Command::SetLastSeen {
            user_id: user_id.to_string(),
            ms,
        };
        match self.cluster.write(user_id, cmd).await {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(error = %e, "storing last_seen");
                false
            }
        }
    }

    /// Registers `conn` as a watcher of `users`.
    pub fn watch(&self, conn: &ConnHandle, users: &[String]) {
        let mut w = self.watchers.lock();
        for u in users {
            w.entry(u.clone()).or_default().insert(conn.id, conn.clone());
        }
    }

    /// Drops `conn_id` from the watchers of `users`.
    pub fn unwatch(&self, conn_id: u64, users: &[String]) {
        for u in users {
            self.watchers.remove(conn_id, u);
        }
    }

    /// Sends `state` to the user's watchers that still share a channel with it.
    fn announce(&self, state: &PresenceState) {
        self.gate.announce(state.clone());
    }
}
