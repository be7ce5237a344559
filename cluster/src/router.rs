//! Partition → leader routing: every write and read of the node goes to the leader of its
//! partition, here when this node leads it, otherwise forwarded over the node service.
//!
//! How the leader is found, in order: the local group's own view (`current_leader` and its
//! address in the group's membership); the last leader this router reached for the partition;
//! then the replica addresses from `set_replica_hints` (the meta layer's partition map), tried
//! in turn. A "not leader" answer carries the answerer's idea of the leader, which replaces the
//! cached one. Failures that mean "try again shortly" (no leader yet, lease not held after an
//! election, leader unreachable) are retried with a short exponential backoff, bounded by
//! `RetryPolicy` in both time and attempts; after that the caller gets
//! `ClusterError::Unavailable`, which clients may retry. See `docs/routing.md`.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::time::Instant;

use crate::cluster::Cluster;
use crate::codec::{decode, encode};
use crate::command::{Command, Response};
use crate::error::ClusterError;
use crate::leader_calls::{self, known_leader, LeaderHint, LocalFailure};
use crate::local::{LocalPartitions, Replica};
use crate::proposal_packer::{self, Packers};
use crate::query::{Query, QueryResult};
use crate::rpc::node_server::leader_hint;
use crate::rpc::proto::node::{ReadReply, ReadRequest, WriteReply, WriteRequest};
use crate::rpc::{Method, PeerChannels};
use crate::types::{NodeId, PartitionRaft};

/// The replicas of a partition as `(node id, cluster address)`: where to look for its leader
/// when this node's own group knows nothing (it does not host the partition, or has not joined
/// its group yet). Set by whoever owns the partition map.
pub type ReplicaHints = Arc<dyn Fn(u16) -> Vec<(NodeId, String)> + Send + Sync>;

/// How long and how often the router retries before answering `Unavailable`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total time one request may spend finding a leader, including forwarded calls.
    pub max_wait: Duration,
    /// Most attempts (local or forwarded) for one request.
    pub max_attempts: u32,
    /// Pause after the first failed attempt; doubled after each one.
    pub first_backoff: Duration,
    /// Longest pause between attempts.
    pub max_backoff: Duration,
    /// Longest wait for one forwarded attempt: a leader cut off by a partition does not refuse
    /// the call, it never answers, so waiting the whole `max_wait` on it would hide the new
    /// leader elected meanwhile. A retried write is safe: the leader dedups by client_msg_id.
    pub attempt_timeout: Duration,
}

impl Default for RetryPolicy {
    /// 5 s and 40 attempts: an election takes 1–2 election timeouts (1–2 s with the cluster's
    /// Raft config) plus a lease round, so a write sent during a failover still lands, while a
    /// client waiting on an unreachable partition hears back well before its own timeouts.
    fn default() -> Self {
        RetryPolicy {
            max_wait: Duration::from_secs(5),
            max_attempts: 40,
            first_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(200),
            attempt_timeout: Duration::from_secs(1),
        }
    }
}

/// Routes writes and reads of partitions to their leaders, with a leader cache.
///
/// Without peers (`set_peers` never called: a single node) nothing is forwarded and reads come
/// straight from the local store, exactly as before routing existed.
pub struct Router {
    node_id: NodeId,
    peers: RwLock<Option<PeerChannels>>,
    replicas: RwLock<Option<ReplicaHints>>,
    leaders: Mutex<HashMap<u16, (NodeId, String)>>,
    policy: RetryPolicy,
}

impl fmt::Debug for Router {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Router")
            .field("node_id", &self.node_id)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

/// A write or a read, as the retry loop sees it.
enum Op<'a> {
    Write(&'a Command),
    Read(&'a Query),
}

/// What an `Op` returned.
enum Answer {
    Write(Response),
    Read(QueryResult),
}

/// Where the next attempt goes.
enum Target {
    Local(Replica),
    Remote(NodeId, String),
    Unknown,
}

/// Why an attempt failed, as far as retrying is concerned.
enum Failure {
    /// The answerer does not lead the partition; maybe it named who does.
    NotLeader(Option<LeaderHint>),
    /// The target could not be reached or is not ready: forget it, back off, retry.
    Retry(String),
    /// Retrying cannot help.
    Fail(ClusterError),
}

impl Router {
    /// A router for node `node_id` with no peers and no replica hints (single-node behaviour).
    pub fn new(node_id: NodeId) -> Self {
        Router {
            node_id,
            peers: RwLock::new(None),
            replicas: RwLock::new(None),
            leaders: Mutex::new(HashMap::new()),
            policy: RetryPolicy::default(),
        }
    }

    /// The same router with another retry bound (tests use short ones).
    pub fn with_retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// The node this router runs on.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// Enables forwarding over `peers` (the node's shared channels, which carry the cluster
    /// secret). From then on local reads also confirm leadership by lease.
    pub fn set_peers(&self, peers: PeerChannels) {
        *self.peers.write().unwrap_or_else(|p| p.into_inner()) = Some(peers);
    }

    /// Sets where to look for a partition's leader when the local group knows nothing.
    pub fn set_replica_hints(&self, hints: ReplicaHints) {
        *self.replicas.write().unwrap_or_else(|p| p.into_inner()) = Some(hints);
    }

    /// The leader this router last reached or was told about for `p`, if any.
    pub fn cached_leader(&self, p: u16) -> Option<(NodeId, String)> {
        self.leaders.lock().unwrap_or_else(|e| e.into_inner()).get(&p).cloned()
    }

    /// Commits `cmd` in partition `p` at its leader and returns the state machine's answer
    /// (a broken rule is `Ok(Response::Rejected)`, as the leader decided it).
    ///
    /// Commands are retried after failures whose outcome may be unknown (a connection lost
    /// mid-call), so they must be idempotent; every `Command` is (creates are "if absent",
    /// messages are deduplicated by `client_msg_id`).
    pub async fn write(&self, local: &dyn LocalPartitions, p: u16, cmd: &Command) -> Result<Response, ClusterError> {
        match self.route(local, p, None, Op::Write(cmd)).await? {
            Answer::Write(response) => Ok(response),
            Answer::Read(_) => Err(ClusterError::Internal("a write was answered as a read".into())),
        }
    }

    /// Commits `cmd` in group `g` itself (a move's fence, adopt or release of partition `p`),
    /// whichever group carries `p` now; its answer comes back as it is, `NotHere` included.
    pub async fn write_to_group(
        &self,
        local: &dyn LocalPartitions,
        p: u16,
        g: u16,
        cmd: &Command,
    ) -> Result<Response, ClusterError> {
        match self.route(local, p, Some(g), Op::Write(cmd)).await? {
            Answer::Write(response) => Ok(response),
            Answer::Read(_) => Err(ClusterError::Internal("a write was answered as a read".into())),
        }
    }

    /// Answers `query` for partition `p` at its leader.
    pub async fn read(&self, local: &dyn LocalPartitions, p: u16, query: &Query) -> Result<QueryResult, ClusterError> {
        match self.route(local, p, None, Op::Read(query)).await? {
            Answer::Read(result) => Ok(result),
            Answer::Write(_) => Err(ClusterError::Internal("a read was answered as a write".into())),
        }
    }

    /// Routes `op` for partition `p` to the leader of the group carrying it, or of `group`
    /// when one is named (then nothing is cached: the leader cache is by partition).
    async fn route(
        &self,
        local: &dyn LocalPartitions,
        p: u16,
        group: Option<u16>,
        op: Op<'_>,
    ) -> Result<Answer, ClusterError> {
        let peers = self.peers.read().unwrap_or_else(|e| e.into_inner()).clone();
        let resolve = || match group {
            Some(g) => local.group_replica(g),
            None => local.replica(p),
        };
        let mut replica = resolve();
        let Some(peers) = peers else {
            return self.route_alone(local.packers(), replica, p, group, op).await;
        };

        let started = Instant::now();
        let deadline = started + self.policy.max_wait;
        let mut backoff = self.policy.first_backoff;
        let mut attempt = 0u32;
        let mut followed_hint = false;
        // The last node that answered "not leader": this node's own replica may still name it
        // (a quiescent follower learns of a new leader only from its first message).
        let mut denied: Option<NodeId> = None;
        loop {
            attempt += 1;
            let target = self.target(replica.as_ref(), p, group, attempt, denied);
            let tried = match &target {
                Target::Remote(id, _) => Some(*id),
                _ => None,
            };
            let outcome = match target {
                Target::Local(here) => {
                    // A leader that lost its majority keeps the write pending until it heals:
                    // answer `unavailable` in time instead (the write may still land later,
                    // and a retry with the same client_msg_id finds it).
                    let budget = deadline.saturating_duration_since(Instant::now());
                    match tokio::time::timeout(
                        budget,
                        attempt_local(local.packers(), &here, p, group.is_none(), &op, true),
                    )
                    .await
                    {
                        Ok(outcome) => outcome,
                        Err(_) => Err(Failure::Retry(format!("local group did not answer within {budget:?}"))),
                    }
                }
                Target::Remote(id, addr) => {
                    let budget = deadline
                        .saturating_duration_since(Instant::now())
                        .min(self.policy.attempt_timeout);
                    let outcome = self.forward(&peers, &addr, p, group, &op, budget).await;
                    if outcome.is_ok() && group.is_none() {
                        self.remember(p, id, addr);
                        metrics::counter!("ringchat_router_forwarded_total").increment(1);
                    }
                    outcome
                }
                Target::Unknown => Err(Failure::Retry("no leader known".into())),
            };
            let (fresh_hint, last) = match outcome {
                // The partition left the group that answered (a move's fence or release):
                // look up the group carrying it now and try again.
                Ok(Answer::Write(Response::Rejected(crate::ApplyError::NotHere))) if group.is_none() => {
                    self.forget(p);
                    replica = resolve();
                    (false, "the partition is moving to another group".to_string())
                }
                Ok(answer) => return Ok(answer),
                Err(Failure::Fail(e)) => return Err(e),
                Err(Failure::NotLeader(hint)) => {
                    let reason = format!("not leader (hint: {hint:?})");
                    denied = tried.or(denied);
                    if group.is_some() {
                        (false, reason)
                    } else {
                        self.forget(p);
                        let next = self.learn(replica.as_ref().map(|r| &r.raft), p, hint);
                        (next.is_some_and(|id| Some(id) != tried), reason)
                    }
                }
                Err(Failure::Retry(reason)) => {
                    self.forget(p);
                    (false, reason)
                }
            };
            let now = Instant::now();
            if attempt >= self.policy.max_attempts || now >= deadline {
                return Err(ClusterError::Unavailable(format!(
                    "partition {p}: no leader answered in {:?} ({attempt} attempts): {last}",
                    now - started
                )));
            }
            // A hint naming a node not just tried is followed at once, but not twice in a row:
            // around a leader change two nodes can name each other for a moment, and bouncing
            // between them without a pause would use up every attempt in milliseconds.
            if fresh_hint && !followed_hint {
                followed_hint = true;
            } else {
                followed_hint = false;
                tokio::time::sleep(backoff.min(deadline - now)).await;
                backoff = (backoff * 2).min(self.policy.max_backoff);
            }
        }
    }

    /// Single-node routing: reads come from the local store as they always did; a write waits
    /// (bounded) for the local group to lead, e.g. right after start.
    async fn route_alone(
        &self,
        packers: Option<&Packers>,
        replica: Option<Replica>,
        p: u16,
        group: Option<u16>,
        op: Op<'_>,
    ) -> Result<Answer, ClusterError> {
        let Some(here) = replica else {
            return Err(ClusterError::Unavailable(format!(
                "partition {p} is not hosted here and this node has no peers"
            )));
        };
        let deadline = Instant::now() + self.policy.max_wait;
        let mut backoff = self.policy.first_backoff;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let reason = match attempt_local(packers, &here, p, group.is_none(), &op, false).await {
                Ok(Answer::Write(Response::Rejected(crate::ApplyError::NotHere))) if group.is_none() => {
                    "the partition is not in this node's group".to_string()
                }
                Ok(answer) => return Ok(answer),
                Err(Failure::Fail(e)) => return Err(e),
                Err(Failure::NotLeader(Some(hint))) if hint.id != self.node_id => {
                    return Err(ClusterError::Unavailable(format!(
                        "partition {p} is led by node {} and this node has no peers",
                        hint.id
                    )))
                }
                Err(Failure::NotLeader(hint)) => format!("no local leader yet (hint: {hint:?})"),
                Err(Failure::Retry(reason)) => reason,
            };
            let now = Instant::now();
            if attempt >= self.policy.max_attempts || now >= deadline {
                return Err(ClusterError::Unavailable(format!("partition {p}: {reason}")));
            }
            tokio::time::sleep(backoff.min(deadline - now)).await;
            backoff = (backoff * 2).min(self.policy.max_backoff);
        }
    }

    /// Picks the node the next attempt goes to: this node's own replica's idea of the leader
    /// unless that is the node that has just `denied` leading, else the leader a hint named,
    /// else the partition's replicas in turn.
    fn target(
        &self,
        local: Option<&Replica>,
        p: u16,
        group: Option<u16>,
        attempt: u32,
        denied: Option<NodeId>,
    ) -> Target {
        if let Some(here) = local {
            // Not the node that has just said it does not lead: a hint from it, or the
            // replicas, come next. Asking it again until this replica heard from the new leader
            // held writes for 1–3 s after each leader hand-over (docs/routing.md).
            if let Some(leader) = known_leader(&here.raft).filter(|l| Some(l.id) != denied) {
                if leader.id == self.node_id {
                    return Target::Local(here.clone());
                }
                if let Some(addr) = leader.addr {
                    return Target::Remote(leader.id, addr);
                }
            }
        }
        if let Some((id, addr)) = self.cached_leader(p).filter(|_| group.is_none()) {
            return Target::Remote(id, addr);
        }
        let hints = self.replicas.read().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(hints) = hints {
            let candidates: Vec<_> = hints(group.unwrap_or(p))
                .into_iter()
                .filter(|(id, _)| *id != self.node_id)
                .collect();
            if !candidates.is_empty() {
                let (id, addr) = candidates[(attempt as usize - 1) % candidates.len()].clone();
                return Target::Remote(id, addr);
            }
        }
        Target::Unknown
    }

    /// Records a "not leader" hint; returns the hinted node if it can be tried next.
    fn learn(&self, local: Option<&PartitionRaft>, p: u16, hint: Option<LeaderHint>) -> Option<NodeId> {
        let hint = hint?;
        if hint.id == self.node_id {
            // Our own group will see it once it has caught up; nothing to cache or rush to.
            return None;
        }
        let addr = hint.addr.or_else(|| {
            local.and_then(|raft| {
                let metrics = raft.metrics();
                let m = openraft::async_runtime::watch::WatchReceiver::borrow_watched(&metrics);
                m.membership_config
                    .membership()
                    .get_node(&hint.id)
                    .map(|n| n.addr.clone())
            })
        })?;
        self.remember(p, hint.id, addr);
        Some(hint.id)
    }

    fn remember(&self, p: u16, id: NodeId, addr: String) {
        self.leaders
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(p, (id, addr));
    }

    fn forget(&self, p: u16) {
        self.leaders.lock().unwrap_or_else(|e| e.into_inner()).remove(&p);
    }

    /// Sends `op` to the node at `addr` over the node service, within `budget`.
    async fn forward(
        &self,
        peers: &PeerChannels,
        addr: &str,
        p: u16,
        group: Option<u16>,
        op: &Op<'_>,
        budget: Duration,
    ) -> Result<Answer, Failure> {
        if budget.is_zero() {
            return Err(Failure::Retry("out of time".into()));
        }
        let pipe = peers.pipe(addr).map_err(|e| Failure::Retry(e.to_string()))?;
        let partition = u32::from(p);
        let internal =
            |what: &str, e: crate::codec::CodecError| Failure::Fail(ClusterError::Internal(format!("{what}: {e}")));
        let call = async {
            match op {
                Op::Write(cmd) => {
                    let command = encode(cmd);
                    let request = WriteRequest {
                        partition,
                        command,
                        group: group.map(u32::from),
                    };
                    let reply: WriteReply = pipe.call(Method::Write, &request, budget).await.map_err(classify)?;
                    let response = decode(&reply.response).map_err(|e| internal("leader's response", e))?;
                    Ok(Answer::Write(response))
                }
                Op::Read(query) => {
                    let query = encode(query);
                    let request = ReadRequest { partition, query };
                    let reply: ReadReply = pipe.call(Method::Read, &request, budget).await.map_err(classify)?;
                    let result = decode(&reply.result).map_err(|e| internal("leader's result", e))?;
                    Ok(Answer::Read(result))
                }
            }
        };
        match tokio::time::timeout(budget, call).await {
            Ok(outcome) => outcome,
            Err(_) => Err(Failure::Retry(format!("{addr} did not answer within {budget:?}"))),
        }
    }
}

/// Sorts a node service error status for the retry loop.
fn classify(status: tonic::Status) -> Failure {
    use tonic::Code;
    match status.code() {
        Code::FailedPrecondition => Failure::NotLeader(leader_hint(&status)),
        // Connection failures (tonic reports them as Unavailable), a group that is stopping or
        // not hosted there (yet), or an answer cut short: another node or a later try may do.
        Code::Unavailable | Code::NotFound | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown => {
            Failure::Retry(format!("{:?}: {}", status.code(), status.message()))
        }
        // Wrong secret, a peer without the node service, bad payloads: retrying cannot help.
        code => Failure::Fail(ClusterError::Internal(format!(
            "node service answered {code:?}: {}",
            status.message()
        ))),
    }
}

/// Serves `op` for partition `p` on the local replica of its group (a write named by its
/// partition when `name` and the group is not the partition's own; a write to a group named
/// by the caller goes as it is); `linearize` confirms leadership by lease first.
async fn attempt_local(
    packers: Option<&Packers>,
    here: &Replica,
    p: u16,
    name: bool,
    op: &Op<'_>,
    linearize: bool,
) -> Result<Answer, Failure> {
    let store = &here.store;
    let outcome = match op {
        Op::Write(cmd) => {
            let cmd = if name {
                here.command_for(p, (*cmd).clone())
            } else {
                (*cmd).clone()
            };
            proposal_packer::write(packers, &here.raft, here.group, cmd)
                .await
                .map(Answer::Write)
        }
        Op::Read(query) => leader_calls::read(&here.raft, store, p, query, linearize)
            .await
            .map(Answer::Read),
    };
    outcome.map_err(|failure| match failure {
        LocalFailure::NotLeader(hint) => Failure::NotLeader(hint),
        LocalFailure::Unavailable(e) => Failure::Fail(ClusterError::Unavailable(format!("partition {p}: {e}"))),
        LocalFailure::Storage(e) => {
            // A damaged record answers an error, never its bytes; the node then restarts and
            // rebuilds its database from its peers (`Store::note_damage`).
            if e.is_damage() {
                store.note_damage(&format!("partition {p}: {e}"));
            }
            Failure::Fail(ClusterError::Storage(e))
        }
    })
}

impl Cluster {
    /// Lets this node forward writes and reads to partition leaders on other nodes over
    /// `peers`. Until it is called the node routes as a single node (everything local).
    pub fn set_peers(&self, peers: PeerChannels) {
        self.router.set_peers(peers);
    }

    /// Sets where to look for a partition's leader when this node's own group of it knows
    /// nothing (the meta layer's replica sets).
    pub fn set_replica_hints(&self, hints: ReplicaHints) {
        self.router.set_replica_hints(hints);
    }

    /// The node's router (leader cache and forwarding).
    pub fn router(&self) -> &Router {
        &self.router
    }

    /// Answers `query` for partition `p` at the partition's leader: the one entry point of
    /// every read (`get_*`).
    pub async fn read(&self, p: u16, query: Query) -> Result<QueryResult, ClusterError> {
        self.router.read(self, p, &query).await
    }

    /// Commits `cmd` in partition `p` at its leader; rule violations come back as
    /// `ClusterError::Rejected`, a partition without a reachable leader as `Unavailable`.
    pub async fn write_partition(&self, p: u16, cmd: Command) -> Result<Response, ClusterError> {
        let started = std::time::Instant::now();
        let result = self.router.write(self, p, &cmd).await;
        metrics::histogram!("ringchat_commit_latency_seconds").record(started.elapsed().as_secs_f64());
        match result? {
            Response::Rejected(e) => Err(ClusterError::Rejected(e)),
            Response::Sent {
                message,
                members,
                duplicate,
            } => {
                if !duplicate {
                    metrics::counter!("ringchat_messages_committed_total").increment(1);
                    // A forwarded send comes back without its text (`Response::for_forwarder`);
                    // a committed text is never empty, so only a whole message is cached.
                    if !message.text.is_empty() {
                        self.cache.insert(&message);
                    }
                }
                Ok(Response::Sent {
                    message,
                    members,
                    duplicate,
                })
            }
            other => Ok(other),
        }
    }
}

impl LocalPartitions for Cluster {
    fn replica(&self, p: u16) -> Option<Replica> {
        self.group_replica(self.home_of(p))
    }

    fn group_replica(&self, g: u16) -> Option<Replica> {
        self.partition_group(g).map(|raft| Replica {
            group: g,
            raft,
            store: self.store.clone(),
        })
    }

    fn packers(&self) -> Option<&Packers> {
        Some(&self.packers)
    }
}

impl Cluster {
    /// True if this node runs without peers (every partition is read here) or its group of
    /// `p` currently believes it leads `p`.
    pub(crate) fn leads_or_runs_alone(&self, p: u16) -> bool {
        if self.router.peers.read().unwrap_or_else(|e| e.into_inner()).is_none() {
            return true;
        }
        self.partition_group(self.home_of(p))
            .and_then(|raft| known_leader(&raft))
            .is_some_and(|leader| leader.id == self.router.node_id)
    }
}
