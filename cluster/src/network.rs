//! Raft network of a node without peers.
//!
//! Every partition group of a single node has exactly one voter, so openraft never needs to
//! reach another node; a call here means the membership names a node this process cannot talk
//! to, and the honest answer is `Unreachable`. The cluster work replaces this factory with the
//! tonic transport; nothing else in the write path changes.

use std::future::Future;

use openraft::alias::{SnapshotOf, VoteOf};
use openraft::error::{RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse};
use openraft::{AnyError, BasicNode, OptionalSend, RaftNetworkV2};

use crate::partition::SnapshotFile;
use crate::types::{NodeId, TypeConfig};

type C = TypeConfig;

/// Network factory for a node that has no peers.
#[derive(Clone, Default)]
pub struct NoPeers;

/// The "connection" to a peer that does not exist.
pub struct NoPeer {
    target: NodeId,
}

impl NoPeer {
    fn unreachable(&self) -> Unreachable<C> {
        Unreachable::new(&AnyError::error(format!(
            "node {} is not reachable: this node runs without peers",
            self.target
        )))
    }
}

impl RaftNetworkFactory<C> for NoPeers {
    type Network = NoPeer;

    async fn new_client(&mut self, target: NodeId, _node: &BasicNode) -> NoPeer {
        NoPeer { target }
    }
}

impl RaftNetworkV2<C> for NoPeer {
    type SnapshotData = SnapshotFile;

    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<C>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<C>, RPCError<C>> {
        Err(RPCError::Unreachable(self.unreachable()))
    }

    async fn vote(&mut self, _rpc: VoteRequest<C>, _option: RPCOption) -> Result<VoteResponse<C>, RPCError<C>> {
        Err(RPCError::Unreachable(self.unreachable()))
    }

    /// Not a grant (openraft's default would be one): nobody is there to ask.
    async fn pre_vote(&mut self, _rpc: VoteRequest<C>, _option: RPCOption) -> Result<VoteResponse<C>, RPCError<C>> {
        Err(RPCError::Unreachable(self.unreachable()))
    }

    async fn full_snapshot(
        &mut self,
        _vote: VoteOf<C>,
        _snapshot: SnapshotOf<C, SnapshotFile>,
        _cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<C>, StreamingError<C>> {
        Err(StreamingError::Unreachable(self.unreachable()))
    }
}
