//! Cross-node fan-out: frames and presence changes for connections on other nodes.
//!
//! Each peer gets one bounded queue and one task that drains it into batched `Deliver` RPCs
//! (one RPC carries up to `BATCH` items), so a message to a group spread over three nodes costs
//! one RPC per node, not one per recipient. A frame goes only to the nodes that hold a
//! connection of one of its recipients, each getting just the recipients it holds: every node
//! keeps the user → nodes map that presence needs anyway (the node-level "subscription" of a
//! user), so no per-channel subscription table has to be rebuilt when a partition leader
//! changes (docs/fanout.md).
//!
//! A node announces a user's first connection to every peer and waits (bounded) until the
//! peers have it *before* the connection's catch-up read: a message committed before that
//! read is in the catch-up, one committed after it is fanned out by a node that already knows
//! where the user is. A queue that overflows drops frames (counted): devices still get every
//! message at their next catch-up, and typing/presence are ephemeral.
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
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::gateway::revoked::RevokedSession;
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

/// One queued item, with whom to tell once a peer has it.
struct Queued {
    item: Delivery,
    delivered: Option<oneshot::Sender<()>>,
}

impl Queued {
    fn item(item: Delivery) -> Self {
        Queued { item, delivered: None }
    }
}

type PeerQueue = mpsc::Sender<Queued>;

/// Live peers' queues, and when the list was taken.
type CachedQueues = Option<(Instant, Vec<(NodeId, PeerQueue)>)>;

/// Called with a node id when that node is taken as gone.
pub type NodeLost = Arc<dyn Fn(NodeId) + Send + Sync>;

/// Per-peer delivery queues of this node.
pub struct Fanout {
    cluster: Arc<Cluster>,
    registry: Arc<Registry>,
    links: Mutex<HashMap<NodeId, (String, PeerQueue)>>,
    /// The live peers' queues as of a moment ago (see `peer_queues`).
    cached: Mutex<CachedQueues>,
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

    /// Queues `frame` to every connection of `users` on this node and on the other nodes that
    /// hold some of them (except `except`'s connections). Returns the local connections reached.
    pub fn send_to_users(&self, users: &[String], frame: &Utf8Bytes, except: Option<&str>) -> usize {
        let n = self.registry.send_to_users(users, frame, except);
        let by_node = self.registry.remote_nodes_of(users, except);
        if by_node.is_empty() {
            return n;
        }
        for (node, tx) in self.peer_queues() {
            let Some(there) = by_node.get(&node) else { continue };
            let item = Delivery::Frame {
                users: there.clone(),
                except: None,
                frame: frame.as_str().to_string(),
            };
            enqueue(&tx, Queued::item(item));
            metrics::counter!("ringchat_peer_frames_sent_total").increment(1);
        }
        n
    }

    /// Queues `item` for every live peer.
    pub fn broadcast(&self, item: Delivery) {
        for (_, tx) in self.peer_queues() {
            enqueue(&tx, Queued::item(item.clone()));
        }
    }

    /// Queues `item` for every live peer and waits until each has it, a peer fails, or
    /// `within` passes. Returns how many peers confirmed.
    pub async fn broadcast_confirmed(&self, item: Delivery, within: Duration) -> usize {
        let mut waiting = Vec::new();
        for (_, tx) in self.peer_queues() {
            let (done, confirmed) = oneshot::channel();
            let queued = Queued {
                item: item.clone(),
                delivered: Some(done),
            };
            if enqueue(&tx, queued) {
                waiting.push(confirmed);
            }
        }
        let deadline = Instant::now() + within;
        let mut confirmed = 0;
        for w in waiting {
            if let Ok(Ok(())) = tokio::time::timeout_at(deadline, w).await {
                confirmed += 1;
            }
        }
        confirmed
    }

    /// A logout: closes the session's connections here and on every live peer, waiting
    /// (at most `within`) until each peer has it. Peers that miss it get it again when their
    /// link restarts (see `revoked.rs`).
    pub async fn revoke_session_everywhere(&self, session: RevokedSession, within: Duration) {
        self.registry.revoke_session(session.clone());
        self.broadcast_confirmed(close_session_item(session), within).await;
    }

    /// Starts links to members that have none yet (called periodically and on demand).
    pub fn refresh_links(&self) {
        let _ = self.peer_queues();
    }

    fn peer_queues(&self) -> Vec<(NodeId, PeerQueue)> {
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
            out.push((m.node_id, tx.clone()));
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
    async fn run(self, mut rx: mpsc::Receiver<Queued>, shutdown: CancellationToken) {
        let mut healthy = false;
        let mut failing_since: Option<Instant> = None;
        let mut lost_reported = false;
        loop {
            let mut queued = Vec::new();
            tokio::select! {
                _ = shutdown.cancelled() => return,
                next = tokio::time::timeout(HEARTBEAT, rx.recv()) => match next {
                    Ok(Some(q)) => queued.push(q),
                    Ok(None) => return,
                    Err(_) => {}
                },
            }
            while queued.len() < BATCH {
                match rx.try_recv() {
                    Ok(q) => queued.push(q),
                    Err(_) => break,
                }
            }
            let mut delivered = Vec::new();
            let mut items = Vec::with_capacity(queued.len() + 1);
            for q in queued {
                items.push(q.item);
                delivered.extend(q.delivered);
            }
            if !healthy {
                // A (re)started link first says who is here and which sessions were logged
                // out lately: the peer may have missed both while it was unreachable.
                let users = self.registry.local_users().into_iter().collect();
                let mut first = vec![Delivery::PresenceSnapshot {
                    node: self.cluster.node_id(),
                    users,
                }];
                first.extend(self.registry.recent_revocations().into_iter().map(close_session_item));
                items.splice(0..0, first);
            }
            match self.cluster.deliver_to(&self.addr, &DeliveryBatch { items }).await {
                Ok(()) => {
                    healthy = true;
                    failing_since = None;
                    lost_reported = false;
                    for d in delivered {
                        let _ = d.send(());
                    }
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

/// The delivery that tells a peer to close `session`'s connections.
fn close_session_item(session: RevokedSession) -> Delivery {
    Delivery::CloseSession {
        user_id: session.user_id,
        token_hash: session.token_hash,
    }
}

/// Queues `q` without waiting; a full queue drops it (counted). True if queued.
fn enqueue(tx: &PeerQueue, q: Queued) -> bool {
    let ok = tx.try_send(q).is_ok();
    if !ok {
        metrics::counter!("ringchat_peer_deliveries_dropped_total").increment(1);
    }
    ok
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
                    metrics::counter!("ringchat_peer_frames_received_total").increment(1);
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
                Delivery::CloseSession { user_id, token_hash } => {
                    self.registry.revoke_session(RevokedSession { user_id, token_hash });
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
