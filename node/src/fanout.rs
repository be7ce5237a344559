//! Cross-node fan-out: frames and presence changes for connections on other nodes.
//!
//! Each peer gets one bounded queue and one task that drains it into batched `Deliver` RPCs
//! (one RPC carries up to `BATCH` items), so a message to a group spread over three nodes costs
//! one RPC per node, not one per recipient. Every frame goes to every live peer: a peer can
//! then never miss a live message for a connection that opened a moment ago (its catch-up read
//! happens after it registered). Narrowing this to the peers holding recipients (gateway
//! subscriptions) is the next step. A queue that overflows drops frames (counted): devices
//! still get every message at their next catch-up, and typing/presence are ephemeral.
//!
//! Links double as failure detection: an idle link sends an empty batch every `HEARTBEAT`; a
//! peer that fails for `PEER_TIMEOUT` is taken as gone and its users' presence with it. Every
//! link (re)start begins with a full presence snapshot of this node, so presence heals.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use ringchat_cluster::meta::{Delivery, DeliveryBatch, NodeState};
use ringchat_cluster::{Cluster, LocalDelivery, NodeId};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::gateway::Registry;

/// Items per `Deliver` RPC at most.
const BATCH: usize = 512;
/// Items queued per peer before new ones are dropped.
const QUEUE: usize = 16_384;
/// An idle link says hello this often.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// How long the member list behind `broadcast` is reused.
const MEMBER_CACHE: Duration = Duration::from_millis(250);
/// A peer failing this long is taken as gone (its users go offline here).
const PEER_TIMEOUT: Duration = Duration::from_secs(5);

/// Called with a node id when that node is taken as gone.
pub type NodeLost = Arc<dyn Fn(NodeId) + Send + Sync>;

/// Per-peer delivery queues of this node.
pub struct Fanout {
    cluster: Arc<Cluster>,
    registry: Arc<Registry>,
    links: Mutex<HashMap<NodeId, (String, mpsc::Sender<Delivery>)>>,
    /// The live peers' queues as of a moment ago (see `peer_queues`).
    cached: Mutex<Option<(Instant, Vec<mpsc::Sender<Delivery>>)>>,
    on_node_lost: OnceLock<NodeLost>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

impl Fanout {
    /// Fan-out over `cluster`'s members; link tasks stop on `shutdown` and are tracked by
    /// `tracker`.
    pub fn new(
        cluster: Arc<Cluster>,
        registry: Arc<Registry>,
        shutdown: CancellationToken,
        tracker: TaskTracker,
    ) -> Self {
        Fanout {
            cluster,
            registry,
            links: Mutex::new(HashMap::new()),
            cached: Mutex::new(None),
            on_node_lost: OnceLock::new(),
            shutdown,
            tracker,
        }
    }

    /// Sets what happens when a peer is taken as gone (presence); first call wins.
    pub fn set_on_node_lost(&self, f: NodeLost) {
        let _ = self.on_node_lost.set(f);
    }

    /// Queues `frame` to every connection of `users` on this node and on every other node
    /// (except `except`'s connections). Returns the local connections reached.
    pub fn send_to_users(&self, users: &[String], frame: &Utf8Bytes, except: Option<&str>) -> usize {
        let n = self.registry.send_to_users(users, frame, except);
        self.broadcast(Delivery::Frame {
            users: users.to_vec(),
            except: except.map(str::to_string),
            frame: frame.as_str().to_string(),
        });
        n
    }

    /// Queues `item` for every live peer.
    pub fn broadcast(&self, item: Delivery) {
        for tx in self.peer_queues() {
            if tx.try_send(item.clone()).is_err() {
                metrics::counter!("ringchat_peer_deliveries_dropped_total").increment(1);
            }
        }
    }

    /// Starts links to members that have none yet (called periodically and on demand).
    pub fn refresh_links(&self) {
        let _ = self.peer_queues();
    }

    fn peer_queues(&self) -> Vec<mpsc::Sender<Delivery>> {
        if !self.cluster.has_peers() {
            return Vec::new();
        }
        {
            // Hot path: reuse the last list for a moment instead of scanning the meta replica
            // per frame. A member is listed from `joining` on, well before it can hold
            // connections (`active` takes at least one rebalancing pass), so nothing is missed.
            let cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((at, queues)) = cached.as_ref() {
                if at.elapsed() < MEMBER_CACHE {
                    return queues.clone();
                }
            }
        }
        let Ok(members) = self.cluster.members() else {
            return Vec::new();
        };
        let me = self.cluster.node_id();
        let mut links = self.links.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        for m in members.iter().filter(|m| m.node_id != me && m.state != NodeState::Dead) {
            let stale = links
                .get(&m.node_id)
                .is_some_and(|(addr, tx)| *addr != m.cluster_addr || tx.is_closed());
            if stale {
                links.remove(&m.node_id);
            }
            let (_, tx) = links.entry(m.node_id).or_insert_with(|| {
                let (tx, rx) = mpsc::channel(QUEUE);
                let link = Link {
                    cluster: self.cluster.clone(),
                    registry: self.registry.clone(),
                    node: m.node_id,
                    addr: m.cluster_addr.clone(),
                    on_node_lost: self.on_node_lost.get().cloned(),
                };
                self.tracker.spawn(link.run(rx, self.shutdown.clone()));
                (m.cluster_addr.clone(), tx)
            });
            out.push(tx.clone());
        }
        drop(links);
        *self.cached.lock().unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), out.clone()));
        out
    }
}

/// The sending side of one peer link.
struct Link {
    cluster: Arc<Cluster>,
    registry: Arc<Registry>,
    node: NodeId,
    addr: String,
    on_node_lost: Option<NodeLost>,
}

impl Link {
    async fn run(self, mut rx: mpsc::Receiver<Delivery>, shutdown: CancellationToken) {
        let mut healthy = false;
        let mut failing_since: Option<Instant> = None;
        let mut lost_reported = false;
        loop {
            let mut items = Vec::new();
            tokio::select! {
                _ = shutdown.cancelled() => return,
                next = tokio::time::timeout(HEARTBEAT, rx.recv()) => match next {
                    Ok(Some(item)) => items.push(item),
                    Ok(None) => return,
                    Err(_) => {}
                },
            }
            while items.len() < BATCH {
                match rx.try_recv() {
                    Ok(item) => items.push(item),
                    Err(_) => break,
                }
            }
            if !healthy {
                let users = self.registry.local_users().into_iter().collect();
                items.insert(
                    0,
                    Delivery::PresenceSnapshot {
                        node: self.cluster.node_id(),
                        users,
                    },
                );
            }
            match self.cluster.deliver_to(&self.addr, &DeliveryBatch { items }).await {
                Ok(()) => {
                    healthy = true;
                    failing_since = None;
                    lost_reported = false;
                }
                Err(e) => {
                    healthy = false;
                    let since = *failing_since.get_or_insert_with(Instant::now);
                    tracing::debug!(peer = self.node, error = %e, "delivery to peer failed");
                    metrics::counter!("ringchat_peer_deliveries_dropped_total").increment(1);
                    if !lost_reported && since.elapsed() >= PEER_TIMEOUT {
                        lost_reported = true;
                        tracing::warn!(peer = self.node, "peer unreachable; its users are offline here");
                        if let Some(f) = &self.on_node_lost {
                            f(self.node);
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }
}

/// Receives other nodes' batches: frames to local connections, presence to the registry.
pub struct Inbound {
    /// Local connections.
    pub registry: Arc<Registry>,
    /// Presence (announces changes to local watchers). Weak: the cluster holds this, and
    /// presence holds the cluster.
    pub presence: std::sync::Weak<crate::presence::Presence>,
}

impl LocalDelivery for Inbound {
    fn deliver(&self, batch: DeliveryBatch) {
        for item in batch.items {
            match item {
                Delivery::Frame { users, except, frame } => {
                    let n = self
                        .registry
                        .send_to_users(&users, &Utf8Bytes::from(frame), except.as_deref());
                    metrics::counter!("ringchat_deliveries_total").increment(n as u64);
                }
                Delivery::Presence {
                    user_id,
                    node,
                    online,
                    last_seen,
                } => {
                    if let Some(p) = self.presence.upgrade() {
                        p.remote_changed(&user_id, node, online, last_seen);
                    }
                }
                Delivery::PresenceSnapshot { node, users } => {
                    let users: HashSet<String> = users.into_iter().collect();
                    if let Some(p) = self.presence.upgrade() {
                        p.remote_snapshot(node, &users);
                    }
                }
            }
        }
    }
}
