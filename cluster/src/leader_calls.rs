//! Serving a write or a read on this node's own replica of a partition, as its leader.
//!
//! Both the router (a request that starts here) and the node RPC server (a request another node
//! forwarded) end here, so a request is answered the same way wherever it entered the cluster.
//! Anything that is not "done" is classified once: `NotLeader` (ask someone else, safe to
//! retry), `Unavailable` (the group stopped, or a write's outcome is unknown), or a storage error.

use std::time::Duration;

use openraft::async_runtime::watch::WatchReceiver;
use openraft::error::{ClientWriteError, ForwardToLeader, LinearizableReadError, RaftError};
use openraft::{Instant as _, LinearizerOption, ServerState};
use ringchat_storage::{StorageError, Store};

use crate::command::{Command, Response};
use crate::query::{self, Query, QueryResult};
use crate::rpc::withheld_commits::READ_LEASE_MARGIN;
use crate::types::{only_voter_is_self, NodeId, PartitionRaft, TypeConfig};

/// Who leads a partition, as far as some node knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderHint {
    /// The leader's node id.
    pub id: NodeId,
    /// Its cluster address (`BasicNode.addr`), when the membership names it.
    pub addr: Option<String>,
}

/// Why a local write or read was not served.
#[derive(Debug)]
pub(crate) enum LocalFailure {
    /// This replica is not (or no longer surely) the leader: retry at the hinted leader, if
    /// any, or after the group has settled. Nothing was written.
    NotLeader(Option<LeaderHint>),
    /// The group has stopped, or a write's fate is unknown (its entry was discarded on a leader
    /// change and may still commit): not retried by the router.
    Unavailable(String),
    /// The store failed while reading.
    Storage(StorageError),
}

impl LocalFailure {
    /// The same failure for another write of a packed entry (a storage error, which a write
    /// never returns today, is passed on as its message).
    pub(crate) fn duplicate(&self) -> LocalFailure {
        match self {
            LocalFailure::NotLeader(hint) => LocalFailure::NotLeader(hint.clone()),
            LocalFailure::Unavailable(why) => LocalFailure::Unavailable(why.clone()),
            LocalFailure::Storage(e) => LocalFailure::Unavailable(e.to_string()),
        }
    }
}

/// The leader `raft` currently believes in, with its address from the group's membership.
pub(crate) fn known_leader(raft: &PartitionRaft) -> Option<LeaderHint> {
    let metrics = raft.metrics();
    let m = openraft::async_runtime::watch::WatchReceiver::borrow_watched(&metrics);
    let id = m
        .current_leader
        .filter(|id| m.membership_config.membership().voter_ids().any(|v| v == *id))?;
    let addr = m.membership_config.membership().get_node(&id).map(|n| n.addr.clone());
    Some(LeaderHint { id, addr })
}

/// Turns openraft's forwarding info into a hint, filling the address from the membership.
fn hint(raft: &PartitionRaft, f: &ForwardToLeader<TypeConfig>) -> Option<LeaderHint> {
    let id = f.leader_id?;
    let addr = match &f.leader_node {
        Some(node) => Some(node.addr.clone()),
        None => known_leader(raft).filter(|l| l.id == id).and_then(|l| l.addr),
    };
    Some(LeaderHint { id, addr })
}

/// Proposes `cmd` to the local group and returns the state machine's answer (a rule violation
/// is `Ok(Response::Rejected)`: it is data, decided by the leader). Only a leader's proposal is
/// appended, so a message's `ts` is the leader's clock (`Command::stamped`).
pub(crate) async fn write(raft: &PartitionRaft, cmd: Command) -> Result<Response, LocalFailure> {
    // A quiescent group's leader has heard nothing from its voters for a while, and openraft
    // refuses writes until a quorum acknowledges it again: one heartbeat round renews the
    // lease first (`liveness/`). Checked before the proposal, so the command is never copied
    // for a second attempt; should the lease run out in between, the refusal is a `NotLeader`
    // the router retries, and that attempt renews it.
    if lease_running_out(raft) {
        let _ = renew_lease(raft).await;
    }
    let result = raft.client_write(cmd.stamped(crate::clock::unix_ms())).await;
    match result {
        Ok(resp) => Ok(resp.data),
        // Refused before it was appended (not leader, lease not yet held after an election,
        // leadership transfer): nothing happened, so it is safe to send elsewhere.
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => Err(LocalFailure::NotLeader(hint(raft, &f))),
        Err(e) => Err(LocalFailure::Unavailable(e.to_string())),
    }
}

/// True if this node leads `raft`'s group with other voters and a quorum last acknowledged
/// it three quarters of a lease ago or more (openraft's lease is `election_timeout_max`), or
/// never: a write now would likely be refused. A single voter is its own quorum.
fn lease_running_out(raft: &PartitionRaft) -> bool {
    let lease = Duration::from_millis(raft.config().election_timeout_max);
    let metrics = raft.metrics();
    let m = metrics.borrow_watched();
    m.state == ServerState::Leader
        && m.membership_config.membership().voter_ids().nth(1).is_some()
        && m.last_quorum_acked
            .as_ref()
            .is_none_or(|at| at.elapsed() >= lease * 3 / 4)
}

/// Leader lease if fresh, otherwise one heartbeat round to a quorum first: data partitions
/// are quiescent (`liveness/`), so an idle group's lease has always run out, and a plain
/// `LeaseRead` would refuse every first read after a quiet spell.
/// The acknowledgement must also be `READ_LEASE_MARGIN` younger than openraft's lease: a
/// withheld commit-only request counts as acknowledged when it was withheld, a little after
/// the follower really answered (`rpc/withheld_commits.rs`).
fn lease_or_heartbeat(raft: &PartitionRaft) -> LinearizerOption {
    let lease = Duration::from_millis(raft.config().election_timeout_max);
    LinearizerOption::new(Some(lease.saturating_sub(READ_LEASE_MARGIN)), true)
}

/// Makes sure this leader's quorum lease is fresh, with one heartbeat round if it ran out; a
/// quiescent group's leader needs it before openraft accepts a write or a membership change.
/// An error if no quorum answered (this node may no longer lead).
pub(crate) async fn renew_lease(raft: &PartitionRaft) -> Result<(), String> {
    raft.ensure_linearizable(lease_or_heartbeat(raft))
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Answers `q` from the local replica of `p` if `linearize` is false, or after confirming by
/// openraft's leader lease (no network round trip while the lease holds) that this replica
/// leads `p` and has applied everything committed before the read.
pub(crate) async fn read(
    raft: &PartitionRaft,
    store: &Store,
    p: u16,
    q: &Query,
    linearize: bool,
) -> Result<QueryResult, LocalFailure> {
    if linearize {
        match raft.ensure_linearizable(lease_or_heartbeat(raft)).await {
            Ok(_) => {}
            Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(f))) => {
                return Err(LocalFailure::NotLeader(hint(raft, &f)))
            }
            Err(RaftError::APIError(LinearizableReadError::QuorumNotEnough(_))) => {
                return Err(LocalFailure::NotLeader(None))
            }
            // A group that a storage error stopped (a full disk) still has its state machine on
            // disk. Where it is the only voter it is the only copy, and nothing was acked past
            // what it applied (an ack waits for the apply), so reads go on from it while writes
            // answer `unavailable`; with other voters a new leader elsewhere serves them.
            Err(RaftError::Fatal(e)) if !matches!(e, openraft::error::Fatal::Stopped) && only_voter_is_self(raft) => {}
            Err(RaftError::Fatal(e)) => return Err(LocalFailure::Unavailable(e.to_string())),
        }
    }
    query::execute(store, p, q).map_err(LocalFailure::Storage)
}
