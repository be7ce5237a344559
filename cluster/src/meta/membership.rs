//! Membership: admitting nodes, promoting them once caught up, and moving partition replicas to
//! match the layout that `placement::replica_sets` computes from the active members.
//!
//! Only the meta leader acts (`rebalance_once` is a no-op elsewhere). Moving a replica is an
//! openraft membership change run by the partition's leader: add the new node as a learner
//! (openraft streams it the log or a snapshot), then replace the voter set. The data moves by
//! Raft; nothing here copies records.

use crate::log_throttle::{LogThrottle, EVERY_30_S};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::watch::WatchReceiver;
use openraft::{BasicNode, ChangeMembers, Instant as _};
use ringchat_storage::{KeyReader, StorageError};

use super::model::{Layout, MoveRecord, NodeInfo, NodeState};
use super::wire::{ClusterStatus, JoinReply, MemberStatus, PartitionStatus, ReplicaChange, StatusRequest};
use super::META_PARTITION;
use crate::cluster::Cluster;
use crate::codec::{decode, encode};
use crate::command::{Command, Response};
use crate::error::ClusterError;
use crate::partition::tables as t;
use crate::placement::replica_sets;
use crate::rpc::auth::SecretAttach;
use crate::rpc::member_proto::member_service_client::MemberServiceClient;
use crate::rpc::member_proto::Json;
use crate::rpc::LEADER_ADDR_METADATA_KEY;
use crate::rpc::{Method, PeerChannels, MAX_MESSAGE_BYTES};
use crate::types::{NodeId, PartitionRaft};

/// How long a new replica may take to catch up before the move is retried on a later pass.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(60);

/// A member this long without answering the meta leader holds back the moves of the
/// partitions it replicates until it answers again or is declared dead (at most half the
/// dead-after grace).
const SILENT_AFTER: Duration = Duration::from_secs(3);

/// How long a partition leader that votes itself out waits for its successor to take over.
const HAND_OVER_WAIT: Duration = Duration::from_secs(3);

/// A member RPC client with the cluster secret attached.
pub(crate) type MemberClient =
    MemberServiceClient<tonic::service::interceptor::InterceptedService<tonic::transport::Channel, SecretAttach>>;

/// Which member RPC `ask_local` makes.
#[derive(Clone, Copy)]
pub(crate) enum LocalAsk {
    /// `status`: the member's `ClusterStatus`.
    Status,
    /// `detail`: the member's `StatusDetail`.
    Detail,
}

/// What the member at `addr` knows itself (`local_only`: it asks nobody else), decoded as `T`,
/// within `within`; `None` when it is unreachable, slow, or answers something undecodable.
pub(crate) async fn ask_local<T: serde::de::DeserializeOwned>(
    peers: &PeerChannels,
    addr: &str,
    ask: LocalAsk,
    within: Duration,
) -> Option<T> {
    let mut client = member_client(peers, addr).ok()?;
    let request = Json {
        payload: encode(&StatusRequest { local_only: true }),
    };
    let reply = match ask {
        LocalAsk::Status => tokio::time::timeout(within, client.status(request)).await,
        LocalAsk::Detail => tokio::time::timeout(within, client.detail(request)).await,
    };
    decode(&reply.ok()?.ok()?.into_inner().payload).ok()
}

/// A member RPC client for `addr` over the shared channels.
pub(crate) fn member_client(peers: &PeerChannels, addr: &str) -> Result<MemberClient, ClusterError> {
    let channel = peers
        .channel(addr)
        .map_err(|e| ClusterError::Unavailable(e.to_string()))?;
    Ok(
        MemberServiceClient::with_interceptor(channel, SecretAttach(peers.secret().clone()))
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES),
    )
}

/// How often a join that keeps failing is logged again.
const JOIN_REPORT_EVERY: Duration = Duration::from_secs(5);

/// Sends `Join` for `me` to `addr`, following not-leader answers to the meta leader, for at
/// most 30 s.
pub async fn request_join(peers: &PeerChannels, addr: &str, me: &NodeInfo) -> Result<JoinReply, ClusterError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let payload = encode(me);
    let mut target = addr.to_string();
    let mut last_error = String::new();
    let started = tokio::time::Instant::now();
    let mut reported: Option<tokio::time::Instant> = None;
    while tokio::time::Instant::now() < deadline {
        // The first failure and then one line per JOIN_REPORT_EVERY: a dead --join address is
        // not silent for the whole 30 s.
        if !last_error.is_empty() && reported.is_none_or(|at| at.elapsed() >= JOIN_REPORT_EVERY) {
            tracing::warn!(via = %target, error = %last_error, waited_secs = started.elapsed().as_secs(), "join not accepted yet; retrying");
            reported = Some(tokio::time::Instant::now());
        }
        let mut client = member_client(peers, &target)?;
        match client
            .join(Json {
                payload: payload.clone(),
            })
            .await
        {
            Ok(reply) => {
                return decode(&reply.into_inner().payload).map_err(|e| ClusterError::Internal(e.to_string()));
            }
            Err(status) => {
                last_error = status.message().to_string();
                match status
                    .metadata()
                    .get(LEADER_ADDR_METADATA_KEY)
                    .and_then(|v| v.to_str().ok())
                {
                    Some(leader) if !leader.is_empty() => target = leader.to_string(),
                    _ => target = addr.to_string(),
                }
                if status.code() == tonic::Code::Unauthenticated || status.code() == tonic::Code::InvalidArgument {
                    return Err(ClusterError::Internal(format!(
                        "join refused by {target}: {last_error}"
                    )));
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    Err(ClusterError::Unavailable(format!(
        "could not join via {addr}: {last_error}"
    )))
}

/// Why a member request must go elsewhere.
#[derive(Debug)]
pub enum NotHere {
    /// This node is not the leader; the leader's cluster address if known.
    NotLeader(Option<String>),
    /// Anything else.
    Failed(ClusterError),
}

impl From<ClusterError> for NotHere {
    fn from(e: ClusterError) -> Self {
        NotHere::Failed(e)
    }
}

fn leader_of(raft: &PartitionRaft) -> (Option<NodeId>, Option<String>) {
    let m = raft.metrics();
    let m = m.borrow_watched();
    let leader = m.current_leader;
    let addr = leader.and_then(|l| m.membership_config.membership().get_node(&l).map(|n| n.addr.clone()));
    (leader, addr)
}

impl Cluster {
    /// Every member, as committed in the meta group (read from this node's replica).
    pub fn members(&self) -> Result<Vec<NodeInfo>, ClusterError> {
        let mut out = Vec::new();
        for item in self.store.sm.prefix(t::meta_nodes(META_PARTITION)) {
            let (k, v) = item.into_inner().map_err(StorageError::from)?;
            // Keys are checked only for shape; the record carries its own id.
            KeyReader::after_header(&k).ok_or_else(|| StorageError::Undecodable("short meta key".into()))?;
            out.push(crate::codec::decode::<NodeInfo>(&v).map_err(StorageError::from)?);
        }
        Ok(out)
    }

    /// The committed layout (empty before bootstrap completes).
    pub fn layout(&self) -> Result<Layout, ClusterError> {
        match self
            .store
            .sm
            .get(t::meta_layout(META_PARTITION))
            .map_err(StorageError::from)?
        {
            Some(v) => Ok(crate::codec::decode(&v).map_err(StorageError::from)?),
            None => Ok(Layout::default()),
        }
    }

    /// The latest move of every partition that ever moved, as committed in the meta group
    /// (read from this node's replica).
    pub fn moves_recorded(&self) -> Result<BTreeMap<u16, MoveRecord>, ClusterError> {
        self.records_by_partition(&t::meta_moves(META_PARTITION))
    }

    /// Every meta record under `prefix` whose key ends in a data partition's id (`[table]
    /// [partition as u64]`: moves, homes), by partition, as this node's meta replica holds them.
    pub(crate) fn records_by_partition<T: serde::de::DeserializeOwned>(
        &self,
        prefix: &[u8],
    ) -> Result<BTreeMap<u16, T>, ClusterError> {
        let mut out = BTreeMap::new();
        for item in self.store.sm.prefix(prefix) {
            let (k, v) = item.into_inner().map_err(StorageError::from)?;
            let partition = KeyReader::after_header(&k)
                .and_then(|mut r| r.u64())
                .and_then(|p| u16::try_from(p).ok())
                .ok_or_else(|| StorageError::Undecodable("a meta key without a partition".into()))?;
            out.insert(partition, crate::codec::decode::<T>(&v).map_err(StorageError::from)?);
        }
        Ok(out)
    }

    /// The latest move of partition `p`, as committed in the meta group.
    fn move_recorded(&self, p: u16) -> Result<Option<MoveRecord>, ClusterError> {
        match self
            .store
            .sm
            .get(t::meta_move(META_PARTITION, p))
            .map_err(StorageError::from)?
        {
            Some(v) => Ok(Some(crate::codec::decode(&v).map_err(StorageError::from)?)),
            None => Ok(None),
        }
    }

    /// True once every other member of the meta group reads `MetaRecordMove` (a node of an
    /// older release would stop applying the meta log at the first one).
    fn meta_reads_move_records(&self) -> bool {
        crate::cluster::others_read(&self.meta, self.node_id, self.peers.as_ref(), crate::rpc::MOVE_RECORDS)
    }

    /// Commits the start of partition `p`'s move from `from` to `to`, unless the same move is
    /// already recorded as running (a retry keeps its first start). Best effort: the record
    /// is what `cluster status` shows; the move itself does not depend on it.
    async fn record_move_started(&self, p: u16, from: &[NodeId], to: &[NodeId]) -> Option<MoveRecord> {
        if !self.meta_reads_move_records() {
            return None;
        }
        let running = self
            .move_recorded(p)
            .ok()
            .flatten()
            .filter(|r| r.to == to && r.finished_ms.is_none());
        if let Some(record) = running {
            return Some(record);
        }
        let record = MoveRecord {
            from: from.to_vec(),
            to: to.to_vec(),
            started_ms: crate::clock::unix_ms(),
            finished_ms: None,
        };
        let cmd = Command::MetaRecordMove {
            partition: p,
            record: record.clone(),
        };
        match self.write_meta(cmd).await {
            Ok(_) => Some(record),
            Err(e) => {
                tracing::debug!(partition = p, error = %e, "recording a move's start");
                None
            }
        }
    }

    /// `(node id, cluster address)` of partition `p`'s replicas in the committed layout (the
    /// meta group's replicas for `META_PARTITION`): where the router looks for a leader.
    pub fn replicas_of(&self, p: u16) -> Vec<(NodeId, String)> {
        let Ok(members) = self.members() else { return Vec::new() };
        let addr = |id: &NodeId| {
            members
                .iter()
                .find(|n| n.node_id == *id)
                .map(|n| (*id, n.cluster_addr.clone()))
        };
        if p == META_PARTITION {
            return members
                .iter()
                .filter(|n| n.state != NodeState::Dead)
                .map(|n| (n.node_id, n.cluster_addr.clone()))
                .collect();
        }
        if p >= super::model::FIRST_SET_GROUP {
            return self
                .set_group(p)
                .map(|g| g.replicas.iter().filter_map(addr).collect())
                .unwrap_or_default();
        }
        self.layout()
            .ok()
            .and_then(|l| l.replicas.get(p as usize).cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(addr)
            .collect()
    }

    /// True if this node leads the meta group.
    pub fn is_meta_leader(&self) -> bool {
        leader_of(&self.meta).0 == Some(self.node_id)
    }

    fn meta_not_leader(&self) -> NotHere {
        NotHere::NotLeader(leader_of(&self.meta).1)
    }

    /// Commits a command to the meta group (this node must lead it).
    pub(crate) async fn write_meta(&self, cmd: Command) -> Result<Response, ClusterError> {
        self.write_partition(META_PARTITION, cmd).await
    }

    /// Records this node as the first member and the layout that places every partition
    /// here (bootstrap). A node that will have peers carries every partition in one group
    /// named by its replica set (`[this node]`, docs/raft-groups.md) from the start; a node
    /// without peers keeps one group per partition (opened by `Cluster::open`). Each step is
    /// idempotent and the layout is written last, so a bootstrap cut short by a crash is
    /// finished at the next start (`Cluster::open`).
    pub(crate) async fn record_bootstrap(&self) -> Result<(), ClusterError> {
        if !self.wait_meta_leader(Duration::from_secs(30)).await {
            return Err(ClusterError::Unavailable("meta group elected no leader".into()));
        }
        if !self.layout()?.replicas.is_empty() {
            return Ok(());
        }
        let me = NodeInfo {
            node_id: self.node_id,
            cluster_addr: self.advertise.clone(),
            client_addr: self.client_addr.clone(),
            state: NodeState::Active,
        };
        self.write_meta(Command::MetaUpsertNode { node: me }).await?;
        if self.peers.is_some() {
            self.bootstrap_set_group().await?;
        }
        let layout = Layout {
            version: 1,
            replicas: vec![vec![self.node_id]; self.partitions() as usize],
        };
        self.write_meta(Command::MetaSetLayout { layout }).await?;
        Ok(())
    }

    /// Bootstrap: the group of `[this node]` adopts every partition (from itself: there is no
    /// source to wait for) and becomes each partition's home.
    async fn bootstrap_set_group(&self) -> Result<(), ClusterError> {
        let g = self.group_of_set(&[self.node_id]).await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            self.open_set_groups().await;
            let adopted = self
                .write_to_group(
                    0,
                    g,
                    Command::Batch(
                        (0..self.partitions())
                            .map(|p| Command::Adopt {
                                partition: p,
                                from: g,
                                after: 0,
                            })
                            .collect(),
                    ),
                )
                .await;
            match adopted {
                Ok(_) => break,
                Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        let homes = (0..self.partitions())
            .map(|partition| Command::MetaSetHome { partition, group: g })
            .collect();
        self.write_meta(Command::Batch(homes)).await?;
        tracing::info!(
            group = g,
            partitions = self.partitions(),
            "every partition carried by this node's group"
        );
        Ok(())
    }

    async fn wait_meta_leader(&self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        while tokio::time::Instant::now() < deadline {
            if self.is_meta_leader() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    /// Meta leader: admits `node` as a learner of the meta group and records it as joining.
    /// Idempotent, so a joining node may retry.
    pub async fn admit(&self, node: NodeInfo) -> Result<JoinReply, NotHere> {
        if !self.is_meta_leader() {
            return Err(self.meta_not_leader());
        }
        if node.node_id == 0 || node.node_id == self.node_id && node.cluster_addr != self.advertise {
            return Err(NotHere::Failed(ClusterError::Rejected(crate::ApplyError::Invalid(
                format!("node id {} is taken", node.node_id),
            ))));
        }
        let known = self.members()?.into_iter().find(|n| n.node_id == node.node_id);
        if let Some(k) = &known {
            if k.cluster_addr != node.cluster_addr && k.state != NodeState::Dead {
                return Err(NotHere::Failed(ClusterError::Rejected(crate::ApplyError::Invalid(
                    format!("node id {} is already a member at {}", node.node_id, k.cluster_addr),
                ))));
            }
        }
        self.meta
            .add_learner(node.node_id, BasicNode::new(&node.cluster_addr), false)
            .await
            .map_err(|e| NotHere::Failed(ClusterError::Unavailable(e.to_string())))?;
        if known.as_ref().is_none_or(|k| k.state == NodeState::Dead) {
            let record = NodeInfo {
                state: NodeState::Joining,
                ..node
            };
            self.write_meta(Command::MetaUpsertNode { node: record }).await?;
        }
        Ok(JoinReply {
            partitions: self.partitions(),
            leader: self.node_id,
        })
    }

    /// Meta leader: marks `node` draining; rebalancing moves its replicas away and then
    /// removes it (`finish_removals`).
    pub async fn begin_removal(&self, node: NodeId) -> Result<(), NotHere> {
        if !self.is_meta_leader() {
            return Err(self.meta_not_leader());
        }
        let members = self.members()?;
        let Some(info) = members.iter().find(|n| n.node_id == node) else {
            return Err(NotHere::Failed(ClusterError::Rejected(crate::ApplyError::NotFound)));
        };
        let others_active = members
            .iter()
            .filter(|n| n.node_id != node && n.state == NodeState::Active)
            .count();
        if others_active == 0 {
            return Err(NotHere::Failed(ClusterError::Rejected(crate::ApplyError::Invalid(
                "cannot remove the last active member".into(),
            ))));
        }
        if info.state == NodeState::Draining {
            return Ok(());
        }
        // A member declared dead for silence is still in the meta group (so that it can come
        // back) and may still be in the layout: removing it drains it like a live one, except
        // that its replicas are rebuilt from the survivors. One already taken out is done.
        if info.state == NodeState::Dead && !self.meta_members().contains(&node) && !self.in_layout(node)? {
            return Ok(());
        }
        let record = NodeInfo {
            state: NodeState::Draining,
            ..info.clone()
        };
        tracing::info!(node, "member draining");
        self.write_meta(Command::MetaUpsertNode { node: record }).await?;
        Ok(())
    }

    /// True if the committed layout places a replica of some partition on `node`.
    fn in_layout(&self, node: NodeId) -> Result<bool, ClusterError> {
        Ok(self.layout()?.replicas.iter().any(|set| set.contains(&node)))
    }

    /// Draining members that hold no replica in the committed layout leave the meta group and
    /// are recorded as dead.
    async fn finish_removals(&self, members: &[NodeInfo]) -> Result<(), ClusterError> {
        let layout = self.layout()?;
        for n in members.iter().filter(|n| n.state == NodeState::Draining) {
            if layout.replicas.iter().any(|set| set.contains(&n.node_id)) {
                continue;
            }
            let (voters, learners) = {
                let m = self.meta.metrics();
                let m = m.borrow_watched();
                let membership = m.membership_config.membership();
                let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
                let learners: BTreeSet<NodeId> = membership.learner_ids().collect();
                (voters, learners)
            };
            let mut gone = BTreeSet::new();
            gone.insert(n.node_id);
            if voters.contains(&n.node_id) {
                self.meta
                    .change_membership(ChangeMembers::RemoveVoters(gone.clone()), false)
                    .await
                    .map_err(|e| ClusterError::Unavailable(e.to_string()))?;
            }
            if voters.contains(&n.node_id) || learners.contains(&n.node_id) {
                self.meta
                    .change_membership(ChangeMembers::RemoveNodes(gone), false)
                    .await
                    .map_err(|e| ClusterError::Unavailable(e.to_string()))?;
            }
            let record = NodeInfo {
                state: NodeState::Dead,
                ..n.clone()
            };
            tracing::info!(node = n.node_id, "member removed");
            self.write_meta(Command::MetaUpsertNode { node: record }).await?;
        }
        Ok(())
    }

    /// One pass of the meta leader's membership work: promote joiners that caught up, then
    /// start a move for every partition whose committed replicas differ from the placement
    /// over the active members (`meta/moves.rs`). Moves run as tasks of their own and each
    /// commits its partition's replica set when done; this pass never waits for one.
    pub async fn rebalance_once(self: &Arc<Self>) -> Result<(), ClusterError> {
        if !self.is_meta_leader() || self.peers.is_none() {
            *self.meta_leader_since.lock().unwrap_or_else(|e| e.into_inner()) = None;
            self.moves.abort_all();
            return Ok(());
        }
        let members = self.members()?;
        self.mark_liveness(&members).await?;
        let members = self.members()?;
        self.promote_caught_up(&members).await?;
        let members = self.members()?;
        self.refill_meta_voters(&members).await?;
        if self.start_moves(&members)? {
            self.drop_unused_groups().await?;
            self.start_regroups(&members)?;
            return self.finish_removals(&members).await;
        }
        Ok(())
    }

    /// Starts a move for every partition whose committed replicas differ from the placement
    /// over the active members, up to `MAX_PARALLEL` running. Called by each pass and by every
    /// move that ends, so the next move starts at once rather than on the next pass. True if
    /// the committed layout already is the placement.
    fn start_moves(self: &Arc<Self>, members: &[NodeInfo]) -> Result<bool, ClusterError> {
        let Some(desired) = self.placement(members) else {
            return Ok(false);
        };
        let current = self.layout()?;
        if current.replicas == desired {
            return Ok(true);
        }
        // A member that stopped answering but is not declared dead yet may only be back in a
        // moment: a move of a partition it replicates (or would replicate) waits for the
        // verdict, so a replica on a live node is never evicted in favour of a silent one.
        // Draining members are not waited for: the operator asked for them to go.
        let silent_after = SILENT_AFTER.min(self.dead_after / 2);
        let silence = self.member_silence();
        let silent: BTreeSet<NodeId> = members
            .iter()
            .filter(|n| matches!(n.state, NodeState::Active | NodeState::Joining))
            .filter(|n| silence.get(&n.node_id).is_some_and(|q| *q >= silent_after))
            .map(|n| n.node_id)
            .collect();
        let now = std::time::Instant::now();
        let mut waiting = 0usize;
        let between_groups = self.all_move_between_groups(members);
        for (p, voters) in desired.iter().enumerate() {
            let p = p as u16;
            let before: Vec<NodeId> = current.replicas.get(p as usize).cloned().unwrap_or_default();
            if &before == voters || self.moves.busy(p, now) {
                continue;
            }
            // Carried by a group named by its replica set: it moves only between groups,
            // which every member must understand (a rolling upgrade in progress).
            if self.home_of(p) != p && !between_groups {
                continue;
            }
            if before.iter().chain(voters).any(|n| silent.contains(n)) {
                waiting += 1;
                continue;
            }
            if self.moves.running() >= super::moves::MAX_PARALLEL {
                break;
            }
            self.start_move(p, voters.clone(), before, members, between_groups);
        }
        if waiting > 0 {
            static WAITING: LogThrottle = LogThrottle::new(EVERY_30_S);
            if let Some(held_back) = WAITING.allow() {
                tracing::info!(partitions = waiting, silent = ?silent, held_back, "replica moves wait for silent members to answer or be declared dead");
            }
        }
        Ok(false)
    }

    /// Where the partitions belong: `replica_sets` over the active members (`None` while
    /// there is none). The layout is settled when it equals this.
    pub(crate) fn placement(&self, members: &[NodeInfo]) -> Option<Vec<Vec<NodeId>>> {
        let active: BTreeSet<NodeId> = members
            .iter()
            .filter(|n| n.state == NodeState::Active)
            .map(|n| n.node_id)
            .collect();
        (!active.is_empty()).then(|| replica_sets(&active, self.partitions(), self.replication))
    }

    /// Starts the move of partition `p` from `before` to `moving_to` as a task of its own:
    /// between groups (`group_move.rs`) once every member can, else (a rolling upgrade from a
    /// release before it) as a voter change of the partition's own group.
    fn start_move(
        self: &Arc<Self>,
        p: u16,
        moving_to: Vec<NodeId>,
        before: Vec<NodeId>,
        members: &[NodeInfo],
        between_groups: bool,
    ) {
        let addrs: BTreeMap<NodeId, NodeInfo> = members.iter().map(|n| (n.node_id, n.clone())).collect();
        let change = ReplicaChange {
            partition: p,
            voters: moving_to
                .iter()
                .filter_map(|id| addrs.get(id).map(|n| (*id, n.cluster_addr.clone())))
                .collect(),
        };
        let cluster = Arc::clone(self);
        self.moves.start(p, move || {
            tokio::spawn(async move {
                let by_id: BTreeMap<NodeId, &NodeInfo> = addrs.iter().map(|(id, n)| (*id, n)).collect();
                let started = std::time::Instant::now();
                let record = cluster.record_move_started(p, &before, &moving_to).await;
                let moved = async {
                    if between_groups {
                        cluster
                            .move_between_groups(p, &before, &moving_to, &addrs, record)
                            .await
                    } else {
                        cluster.change_replicas_anywhere(&change, &before, &by_id).await?;
                        cluster.commit_replicas(p, &moving_to, record, None).await
                    }
                };
                let result = match tokio::time::timeout(super::moves::MOVE_TIMEOUT, moved).await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(e),
                    Err(_) => Err(ClusterError::Unavailable(format!(
                        "move did not finish in {} s",
                        super::moves::MOVE_TIMEOUT.as_secs()
                    ))),
                };
                match &result {
                    Ok(()) => tracing::debug!(partition = p, from = ?before, to = ?moving_to, ms = started.elapsed().as_millis() as u64, "replica move committed"),
                    Err(e) => {
                        // Retried with a backoff for as long as the cause lasts (a member
                        // down): one line per 30 s, not one per partition per attempt.
                        static MOVE_NOT_DONE: LogThrottle = LogThrottle::new(EVERY_30_S);
                        if let Some(held_back) = MOVE_NOT_DONE.allow() {
                            tracing::info!(partition = p, error = %e, held_back, "replica move not done yet; retrying later");
                        }
                    }
                }
                cluster.moves.finished(p, result.is_ok());
                if result.is_ok() && cluster.is_meta_leader() {
                    if let Ok(members) = cluster.members() {
                        let _ = cluster.start_moves(&members);
                    }
                }
            })
            .abort_handle()
        });
    }

    /// Commits `replicas` as partition `p`'s replica set, leaving every other partition's
    /// entry as committed, and in the same meta entry its new home group (a move between
    /// groups, `group_move.rs`) and the finish of its move `record` (if its start was
    /// recorded). Finished moves commit one at a time (`Moves::commit`), each on the layout the
    /// previous one left.
    pub(crate) async fn commit_replicas(
        &self,
        p: u16,
        replicas: &[NodeId],
        record: Option<MoveRecord>,
        home: Option<u16>,
    ) -> Result<(), ClusterError> {
        let _one_at_a_time = self.moves.commit.lock().await;
        let mut layout = self.layout()?;
        let Some(entry) = layout.replicas.get_mut(p as usize) else {
            return Err(ClusterError::Internal(format!("partition {p} is not in the layout")));
        };
        let mut commands = Vec::new();
        if entry.as_slice() != replicas {
            *entry = replicas.to_vec();
            layout.version += 1;
            tracing::info!(partition = p, version = layout.version, replicas = ?replicas, "partition replicas committed");
            commands.push(Command::MetaSetLayout { layout });
        }
        if let Some(group) = home {
            commands.push(Command::MetaSetHome { partition: p, group });
        }
        if let Some(r) = record {
            commands.push(Command::MetaRecordMove {
                partition: p,
                record: MoveRecord {
                    finished_ms: Some(crate::clock::unix_ms()),
                    ..r
                },
            });
        }
        match commands.len() {
            0 => {}
            1 => {
                self.write_meta(commands.remove(0)).await?;
            }
            _ => {
                self.write_meta(Command::Batch(commands)).await?;
            }
        }
        Ok(())
    }

    /// How long each member has been silent towards the meta leader (since its last
    /// heartbeat answer, or since this node became leader if none came).
    fn member_silence(&self) -> BTreeMap<NodeId, Duration> {
        let leading_for = {
            let mut since = self.meta_leader_since.lock().unwrap_or_else(|e| e.into_inner());
            since.get_or_insert_with(std::time::Instant::now).elapsed()
        };
        let m = self.meta.metrics();
        let m = m.borrow_watched();
        m.heartbeat
            .as_ref()
            .map(|h| {
                h.iter()
                    .map(|(id, at)| (*id, at.as_ref().map_or(leading_for, |t| t.elapsed())))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Declares members silent for `dead_after` dead (their replicas then move to live nodes),
    /// and dead members that answer again active (they get replicas back). Silence is measured
    /// from the last heartbeat the meta leader got from them, or from when it became leader.
    async fn mark_liveness(&self, members: &[NodeInfo]) -> Result<(), ClusterError> {
        let silence = self.member_silence();
        for n in members.iter().filter(|n| n.node_id != self.node_id) {
            let Some(quiet) = silence.get(&n.node_id).copied() else {
                continue;
            };
            let next = match n.state {
                NodeState::Active | NodeState::Joining if quiet >= self.dead_after => NodeState::Dead,
                NodeState::Dead if quiet < Duration::from_secs(2) => NodeState::Active,
                _ => continue,
            };
            tracing::warn!(
                node = n.node_id,
                silent_ms = quiet.as_millis() as u64,
                state = next.as_str(),
                "member liveness changed"
            );
            let record = NodeInfo {
                state: next,
                ..n.clone()
            };
            self.write_meta(Command::MetaUpsertNode { node: record }).await?;
        }
        Ok(())
    }

    /// Joiners whose meta log caught up become active; `refill_meta_voters`, next in the same
    /// pass, gives them a voter seat if one is free.
    async fn promote_caught_up(&self, members: &[NodeInfo]) -> Result<(), ClusterError> {
        let progress = self.meta_progress();
        for n in members.iter().filter(|n| n.state == NodeState::Joining) {
            if !progress.caught_up(n.node_id) {
                continue;
            }
            let record = NodeInfo {
                state: NodeState::Active,
                ..n.clone()
            };
            tracing::info!(node = n.node_id, "member active");
            self.write_meta(Command::MetaUpsertNode { node: record }).await?;
        }
        Ok(())
    }

    /// Runs `change` at the partition's leader: here if this node leads it, else at the leader
    /// this node knows of or at the partition's current replicas (`hints`), which forward.
    async fn change_replicas_anywhere(
        &self,
        change: &ReplicaChange,
        hints: &[NodeId],
        by_id: &BTreeMap<NodeId, &NodeInfo>,
    ) -> Result<(), ClusterError> {
        let mut targets: Vec<String> = Vec::new();
        match self.change_replicas(change).await {
            Ok(()) => return Ok(()),
            Err(NotHere::NotLeader(Some(addr))) => targets.push(addr),
            Err(NotHere::NotLeader(None)) => {}
            // Our view of the leader was stale (e.g. this node was just voted out): ask the
            // replicas instead.
            Err(NotHere::Failed(e)) => {
                tracing::debug!(partition = change.partition, error = %e, "local replica change failed")
            }
        }
        targets.extend(
            hints
                .iter()
                .filter(|id| **id != self.node_id)
                .filter_map(|id| by_id.get(id).map(|n| n.cluster_addr.clone())),
        );
        let peers = self
            .peers
            .as_ref()
            .ok_or_else(|| ClusterError::Unavailable("no peers".into()))?;
        let payload = encode(change);
        let mut last = String::from("no replica answered");
        // A replica that is not the leader names it, and a leader that hands the group over
        // before leaving names its successor: that address is asked next (once each).
        let mut targets: std::collections::VecDeque<String> = targets.into();
        let mut asked: BTreeSet<String> = BTreeSet::new();
        while let Some(addr) = targets.pop_front() {
            if !asked.insert(addr.clone()) {
                continue;
            }
            let mut client = member_client(peers, &addr)?;
            match client
                .change_replicas(Json {
                    payload: payload.clone(),
                })
                .await
            {
                Ok(_) => return Ok(()),
                Err(status) => {
                    if let Some(leader) = status
                        .metadata()
                        .get(LEADER_ADDR_METADATA_KEY)
                        .and_then(|v| v.to_str().ok())
                        .filter(|a| !asked.contains(*a))
                    {
                        targets.push_front(leader.to_string());
                    }
                    last = format!("{addr}: {}", status.message());
                }
            }
        }
        Err(ClusterError::Unavailable(last))
    }

    /// Partition leader: makes `change.voters` the voters of the partition (learner first,
    /// then the voter swap). Idempotent.
    pub async fn change_replicas(&self, change: &ReplicaChange) -> Result<(), NotHere> {
        let raft = self
            .partition_group(change.partition)
            .filter(|_| change.partition != META_PARTITION)
            .ok_or_else(|| NotHere::Failed(ClusterError::Internal(format!("no partition {}", change.partition))))?;
        let (leader, leader_addr) = leader_of(&raft);
        let (voters, learners) = {
            let m = raft.metrics();
            let m = m.borrow_watched();
            let membership = m.membership_config.membership();
            let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
            let learners: BTreeSet<NodeId> = membership.learner_ids().collect();
            (voters, learners)
        };
        // A node voted out of a group can still show itself as its leader in stale metrics.
        if leader != Some(self.node_id) || !voters.contains(&self.node_id) {
            return Err(NotHere::NotLeader(leader_addr.filter(|_| leader != Some(self.node_id))));
        }
        let desired: BTreeSet<NodeId> = change.voters.iter().map(|(id, _)| *id).collect();
        if desired.is_empty() || voters == desired {
            return Ok(());
        }
        // A quiet partition's leader must hear from a quorum before openraft takes a change.
        crate::leader_calls::renew_lease(&raft)
            .await
            .map_err(ClusterError::Unavailable)?;
        let mut prepared = false;
        for (id, addr) in &change.voters {
            if voters.contains(id) {
                continue;
            }
            if !learners.contains(id) {
                // Once per change: the snapshot (and the purge) serve every learner it adds.
                if !prepared {
                    let how = super::snapshot_fill::prepare(&raft, change.partition).await;
                    let from = if matches!(how, super::snapshot_fill::Fill::Snapshot(_)) {
                        "snapshot"
                    } else {
                        "log"
                    };
                    metrics::counter!("ringchat_replica_fills_total", "from" => from).increment(1);
                    prepared = true;
                }
                // Returns once the learner has caught up with the log (or a snapshot).
                tokio::time::timeout(CATCH_UP_TIMEOUT, raft.add_learner(*id, BasicNode::new(addr), true))
                    .await
                    .map_err(|_| ClusterError::Unavailable(format!("node {id} did not catch up in time")))?
                    .map_err(|e| {
                        tracing::warn!(partition = change.partition, node = id, error = %e, "add learner failed");
                        ClusterError::Unavailable(e.to_string())
                    })?;
            }
        }
        // A leader that votes itself out steps down once the change commits and leaves the
        // group leaderless for an election timeout (1–2 s of stalled writes): it hands the
        // group to a voter that stays first, and that one makes the change.
        if !desired.contains(&self.node_id) {
            if let Some(to) = self.hand_over_before_leaving(&raft, &desired).await {
                let addr = change.voters.iter().find(|(id, _)| *id == to).map(|(_, a)| a.clone());
                return Err(NotHere::NotLeader(addr));
            }
        }
        crate::leader_calls::renew_lease(&raft)
            .await
            .map_err(ClusterError::Unavailable)?;
        raft.change_membership(ChangeMembers::ReplaceAllVoters(desired), false)
            .await
            .map_err(|e| {
                tracing::warn!(partition = change.partition, error = %e, "voter change failed");
                ClusterError::Unavailable(e.to_string())
            })?;
        tracing::debug!(partition = change.partition, voters = ?change.voters, "replica set changed");
        crate::group_events::REPLICA_SETS_CHANGED.record(change.partition);
        Ok(())
    }

    /// Hands the leadership of `raft` to the most caught-up voter in `staying` and waits (at
    /// most `HAND_OVER_WAIT`) until it leads. Returns it, or `None` if it did not take over
    /// (then this node makes the change itself and the group elects afterwards).
    async fn hand_over_before_leaving(&self, raft: &PartitionRaft, staying: &BTreeSet<NodeId>) -> Option<NodeId> {
        let to = super::leader_handoff::successor(raft, self.node_id, |v| staying.contains(&v))?;
        raft.trigger().transfer_leader(to).await.ok()?;
        raft.wait(Some(HAND_OVER_WAIT))
            .current_leader(to, "successor takes over")
            .await
            .ok()
            .map(|_| to)
    }

    /// Sends `batch` to the node at `addr` (its `Deliver` handler, over the pipe), within 5 s.
    pub async fn deliver_to(&self, addr: &str, batch: &crate::meta::DeliveryBatch) -> Result<(), ClusterError> {
        let peers = self
            .peers
            .as_ref()
            .ok_or_else(|| ClusterError::Unavailable("no peers".into()))?;
        let payload = encode(batch);
        let pipe = peers.pipe(addr).map_err(|e| ClusterError::Unavailable(e.to_string()))?;
        pipe.call::<_, Json>(Method::Deliver, &Json { payload }, Duration::from_secs(5))
            .await
            .map(|_| ())
            .map_err(|status| ClusterError::Unavailable(format!("{addr}: {}", status.message())))
    }

    /// True if this node talks to peers (a cluster secret is set).
    pub fn has_peers(&self) -> bool {
        self.peers.is_some()
    }

    /// What this node knows of the cluster: members, meta leader, and the leader of every
    /// partition it hosts (`None` for the others).
    pub fn local_status(&self) -> Result<ClusterStatus, ClusterError> {
        let layout = self.layout()?;
        let partitions = (0..self.partitions())
            .map(|p| {
                let group = self.partition_group(self.home_of(p));
                let leader = group.as_ref().and_then(|g| {
                    let (leader, _) = leader_of(g);
                    let hosts = {
                        let m = g.metrics();
                        let m = m.borrow_watched();
                        let hosts = m.membership_config.membership().voter_ids().any(|v| v == self.node_id);
                        hosts
                    };
                    leader.filter(|_| hosts)
                });
                PartitionStatus {
                    partition: u32::from(p),
                    replicas: layout.replicas.get(p as usize).cloned().unwrap_or_default(),
                    leader,
                }
            })
            .collect();
        Ok(ClusterStatus {
            meta_leader: leader_of(&self.meta).0.unwrap_or(0),
            members: self
                .members()?
                .into_iter()
                .map(|n| MemberStatus {
                    node_id: n.node_id,
                    cluster_addr: n.cluster_addr,
                    client_addr: n.client_addr,
                    state: n.state.as_str().to_string(),
                })
                .collect(),
            partitions,
        })
    }

    /// The cluster's status, with partition leaders filled in from every reachable member.
    pub async fn status(&self) -> Result<ClusterStatus, ClusterError> {
        let mut status = self.local_status()?;
        let Some(peers) = &self.peers else { return Ok(status) };
        for member in status.members.clone() {
            if member.node_id == self.node_id || member.state == "dead" {
                continue;
            }
            let asked =
                ask_local::<ClusterStatus>(peers, &member.cluster_addr, LocalAsk::Status, Duration::from_secs(2));
            let Some(theirs) = asked.await else { continue };
            for (mine, other) in status.partitions.iter_mut().zip(theirs.partitions) {
                if mine.leader.is_none() {
                    mine.leader = other.leader;
                }
            }
        }
        Ok(status)
    }
}
