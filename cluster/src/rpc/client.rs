//! The sending side: openraft's network for one partition group, over the node's shared peer
//! channels: AppendEntries, votes and leader transfers on the peer's pipe, snapshots on their
//! own stream.

use std::future::Future;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::alias::{SnapshotOf, VoteOf};
use openraft::error::{NetworkError, RPCError, ReplicationClosed, StreamingError, Timeout, Unreachable};
use openraft::network::{RPCOption, RPCTypes, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest, TransferLeaderResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, OptionalSend, RaftNetworkV2};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::AsyncReadExt;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use super::channels::PeerChannels;
use super::error::RpcError;
use super::pipe::PeerPipe;
use super::pipe_proto::Method;
use super::proto::raft_service_client::RaftServiceClient;
use super::proto::snapshot_chunk::Part;
use super::proto::{RaftReply, RaftRequest, SnapshotChunk, SnapshotHeader};
use super::withheld_commits::Confirmed;
use super::MAX_MESSAGE_BYTES;
use crate::codec::{decode, encode};
use crate::partition::SnapshotFile;
use crate::types::{NodeId, TypeConfig};

type C = TypeConfig;

/// Bytes of snapshot file per stream message. Small enough that a sender holds little in
/// memory, large enough that per-message overhead is noise; h2 flow control paces the stream,
/// so openraft's `snapshot_max_chunk_size` hint is not used.
pub const SNAPSHOT_CHUNK_BYTES: usize = 256 * 1024;

/// openraft network factory of one partition group: connections to peers for that partition.
///
/// Every factory made from the same `PeerChannels` shares its channels, so all partition
/// groups of a node talk to a peer over one connection; each request names the partition.
#[derive(Clone)]
pub struct GrpcNetwork {
    peers: PeerChannels,
    local_id: NodeId,
    partition: u16,
    /// Whether the group's replication withholds commit-only requests (`withheld_commits.rs`).
    withhold_commits: bool,
}

impl GrpcNetwork {
    /// The network of partition `partition` on node `local_id` (one per partition, all sharing `peers`).
    pub fn new(peers: PeerChannels, local_id: NodeId, partition: u16) -> Self {
        GrpcNetwork {
            peers,
            local_id,
            partition,
            withhold_commits: false,
        }
    }

    /// The same network, its replication withholding commit-only requests
    /// (`withheld_commits.rs`): for groups whose idle followers get the commit from the
    /// liveness tick's heartbeat, i.e. the quiescent data partitions.
    pub fn withholding_commits(mut self, on: bool) -> Self {
        self.withhold_commits = on;
        self
    }

    /// A connection for `target`; `replication` marks the client of a data partition's
    /// replication stream, the only one that may withhold commit-only requests.
    fn connect(&self, target: NodeId, node: &BasicNode, replication: bool) -> GrpcPeer {
        let client = self.peers.channel(&node.addr).map(|channel| {
            RaftServiceClient::new(channel)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES)
        });
        let pipe = self.peers.pipe(&node.addr);
        GrpcPeer {
            peers: self.peers.clone(),
            local_id: self.local_id,
            target,
            partition: self.partition,
            client: client.map_err(Arc::new),
            pipe: pipe.map_err(Arc::new),
            withhold_commits: replication && self.withhold_commits,
            confirmed: None,
            withheld: false,
        }
    }
}

impl RaftNetworkFactory<C> for GrpcNetwork {
    type Network = GrpcPeer;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> GrpcPeer {
        self.connect(target, node, true)
    }

    /// Heartbeats are probes: they always reach the follower, and they carry the commits the
    /// replication client withheld (`withheld_commits.rs`).
    async fn new_heartbeat_client(&mut self, target: NodeId, node: &BasicNode) -> GrpcPeer {
        self.connect(target, node, false)
    }
}

/// One partition group's connection to one peer (a handle on the shared channel).
pub struct GrpcPeer {
    peers: PeerChannels,
    local_id: NodeId,
    target: NodeId,
    partition: u16,
    /// The client (snapshots), or why the peer's address is unusable (reported on every call).
    client: Result<RaftServiceClient<Channel>, Arc<RpcError>>,
    /// The pipe (AppendEntries, votes, leader transfers), or why the address is unusable.
    pipe: Result<PeerPipe, Arc<RpcError>>,
    /// A data partition's replication client: answers commit-only requests the follower has
    /// no use for yet (`withheld_commits.rs`).
    withhold_commits: bool,
    /// What the follower last accepted in full through this client.
    confirmed: Option<Confirmed>,
    /// This client withheld a commit that no accepted request has carried since; until then
    /// an accepted request need not look at the node's shared record of withheld commits.
    withheld: bool,
}

/// How a failed call is reported to openraft.
enum Failure {
    /// Back off before retrying.
    Unreachable(RpcError),
    /// Out of time.
    Timeout(Duration),
    /// Retry at once.
    Network(RpcError),
}

/// The client or pipe of a peer, or why the peer's address is unusable, as an `Unreachable`.
fn usable<T>(made: &Result<T, Arc<RpcError>>) -> Result<&T, Failure> {
    made.as_ref()
        .map_err(|e| Failure::Unreachable(RpcError::Unreachable(e.to_string())))
}

impl GrpcPeer {
    fn request<T>(&self, message: T, ttl: Duration) -> Request<T> {
        let mut request = Request::new(message);
        request.set_timeout(ttl);
        self.peers.secret().attach(&mut request);
        request
    }

    /// Awaits `call` for at most `ttl` and sorts its failure.
    async fn within<T>(
        &self,
        ttl: Duration,
        call: impl Future<Output = Result<Response<T>, Status>>,
    ) -> Result<T, Failure> {
        match tokio::time::timeout(ttl, call).await {
            Err(_) => Err(Failure::Timeout(ttl)),
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(Self::failure(ttl, status)),
        }
    }

    /// How a failed call's status is reported to openraft.
    fn failure(ttl: Duration, status: Status) -> Failure {
        if status.code() == tonic::Code::DeadlineExceeded {
            return Failure::Timeout(ttl);
        }
        match RpcError::from_status(status) {
            e @ RpcError::Unreachable(_) => Failure::Unreachable(e),
            e => Failure::Network(e),
        }
    }

    fn rpc_error(&self, action: RPCTypes, failure: Failure) -> RPCError<C> {
        match failure {
            Failure::Unreachable(e) => RPCError::Unreachable(Unreachable::new(&e)),
            Failure::Timeout(timeout) => RPCError::Timeout(Timeout {
                action,
                id: self.local_id,
                target: self.target,
                timeout,
            }),
            Failure::Network(e) => RPCError::Network(NetworkError::new(&e)),
        }
    }

    async fn unary<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        action: RPCTypes,
        rpc: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<C>> {
        self.unary_encoded(action, encode(rpc), option).await
    }

    /// `unary` with the request already encoded as `payload`.
    async fn unary_encoded<Resp: DeserializeOwned>(
        &self,
        action: RPCTypes,
        payload: Vec<u8>,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<C>> {
        let method = match action {
            RPCTypes::Vote => Method::Vote,
            RPCTypes::TransferLeader => Method::TransferLeader,
            _ => Method::AppendEntries,
        };
        let ttl = option.soft_ttl();
        let result = match self.call(method, payload, ttl).await {
            Ok(reply) => decode(&reply.payload).map_err(|e| Failure::Network(e.into())),
            Err(CallFailure::Status(status)) => Err(Self::failure(ttl, status)),
            Err(CallFailure::Other(failure)) => Err(failure),
        };
        result.map_err(|failure| self.rpc_error(action, failure))
    }

    /// Sends one Raft call of `method` for this partition on the pipe.
    async fn call(&self, method: Method, payload: Vec<u8>, ttl: Duration) -> Result<RaftReply, CallFailure> {
        let pipe = usable(&self.pipe).map_err(CallFailure::Other)?;
        let request = RaftRequest {
            partition: u32::from(self.partition),
            payload,
        };
        pipe.call(method, &request, ttl).await.map_err(CallFailure::Status)
    }
}

/// Why a Raft call on the pipe failed: the peer's answer, or no usable pipe.
enum CallFailure {
    Status(Status),
    Other(Failure),
}

impl RaftNetworkV2<C> for GrpcPeer {
    type SnapshotData = SnapshotFile;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<C>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<C>, RPCError<C>> {
        if self.withhold_commits && self.confirmed.as_ref().is_some_and(|c| c.covers_commit_only(&rpc)) {
            self.peers
                .withheld
                .withhold(self.partition, self.target, rpc.leader_commit);
            self.withheld = true;
            return Ok(AppendEntriesResponse::Success);
        }
        // A full batch of a backlog (a replica catching up) is paid from the node's bulk
        // budget; live replication sends small batches and never waits here.
        let payload = encode(&rpc);
        let bulk = super::bulk_budget::is_bulk(rpc.entries.len(), payload.len());
        if bulk {
            self.peers.bulk.take(payload.len()).await;
        }
        let started = std::time::Instant::now();
        let answer = self.unary_encoded(RPCTypes::AppendEntries, payload, &option).await;
        // Live replication's round trips tell the budget whether bulk bytes crowd it out.
        if !bulk && !rpc.entries.is_empty() && answer.is_ok() {
            self.peers.bulk.observe_live(started.elapsed());
        }
        self.confirmed = match &answer {
            Ok(AppendEntriesResponse::Success) => {
                // The heartbeat client always looks: it carries what the replication client
                // withheld. A replication client's requests go one at a time, so the one
                // accepted after its own withholding carries a commit at least as new.
                if self.withheld || !self.withhold_commits {
                    self.peers
                        .withheld
                        .delivered(self.partition, self.target, rpc.leader_commit);
                    self.withheld = false;
                }
                Some(Confirmed::by(&rpc, started))
            }
            _ => None,
        };
        answer
    }

    async fn vote(&mut self, rpc: VoteRequest<C>, option: RPCOption) -> Result<VoteResponse<C>, RPCError<C>> {
        self.unary(RPCTypes::Vote, &rpc, &option).await
    }

    /// Asks whether the peer would vote, without changing its term. A peer that predates the
    /// pre-vote call answers "unknown method"; its grant is assumed, as openraft does for a
    /// transport without pre-vote, so a rolling upgrade elects as before. An unreachable peer
    /// is not a grant: that is what keeps an isolated node from inflating its term.
    async fn pre_vote(&mut self, rpc: VoteRequest<C>, option: RPCOption) -> Result<VoteResponse<C>, RPCError<C>> {
        let ttl = option.soft_ttl();
        let failure = match self.call(Method::PreVote, encode(&rpc), ttl).await {
            Ok(reply) => match decode(&reply.payload) {
                Ok(response) => return Ok(response),
                Err(e) => Failure::Network(e.into()),
            },
            Err(CallFailure::Status(status)) if status.code() == tonic::Code::Unimplemented => {
                return Ok(VoteResponse::new(rpc.vote, None, true));
            }
            Err(CallFailure::Status(status)) => Self::failure(ttl, status),
            Err(CallFailure::Other(failure)) => failure,
        };
        Err(self.rpc_error(RPCTypes::Vote, failure))
    }

    async fn transfer_leader(
        &mut self,
        rpc: TransferLeaderRequest<C>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<C>, RPCError<C>> {
        self.unary(RPCTypes::TransferLeader, &rpc, &option).await
    }

    /// Streams the snapshot file in `SNAPSHOT_CHUNK_BYTES` pieces after a header with the
    /// partition, vote, metadata and size; the file is read as the stream is sent, never whole.
    async fn full_snapshot(
        &mut self,
        vote: VoteOf<C>,
        snapshot: SnapshotOf<C, SnapshotFile>,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<C>, StreamingError<C>> {
        let storage_error = |e: io::Error| {
            StreamingError::StorageError(openraft::StorageError::from_io_error(
                openraft::ErrorSubject::Snapshot(Some(snapshot.meta.signature())),
                openraft::ErrorVerb::Read,
                e,
            ))
        };
        let file = tokio::fs::File::open(&snapshot.snapshot.0)
            .await
            .map_err(storage_error)?;
        let size = file.metadata().await.map_err(storage_error)?.len();
        // Only a peer of this release's snapshot generation is sent one: earlier releases
        // either cannot read a group's snapshot (v3, level 5) or would misread its channel
        // records (level 7, `partition/channel_position.rs`).
        // Not knowing the peer's release (no answer yet) or a peer that cannot read this
        // file is no fault of this node's storage: the send fails as unreachable and is
        // retried after a back-off (a storage error would stop the group).
        let peer_level = match &self.pipe {
            Ok(pipe) => pipe.announced_wire_level(option.soft_ttl()).await,
            Err(_) => 0,
        };
        let unreachable = |why: &str| {
            StreamingError::from(self.rpc_error(
                RPCTypes::InstallSnapshot,
                Failure::Unreachable(RpcError::Unreachable(why.to_string())),
            ))
        };
        if peer_level == 0 {
            return Err(unreachable("the peer's release is not known yet"));
        }
        if peer_level < super::CHANNEL_POSITIONS {
            return Err(unreachable(
                "the peer's release reads channel positions from stored records only (upgrade it)",
            ));
        }
        let ttl = option.soft_ttl();
        let action = RPCTypes::InstallSnapshot;
        let header = SnapshotHeader {
            partition: u32::from(self.partition),
            vote: encode(&vote),
            meta: encode(&snapshot.meta),
            size,
        };
        let read_failure = Arc::new(Mutex::new(None));
        let chunks = snapshot_chunks(header, (file, size), read_failure.clone(), self.peers.bulk.clone());
        let mut client = usable(&self.client).map_err(|f| self.rpc_error(action, f))?.clone();
        let request = self.request(chunks, ttl);

        let sent = tokio::select! {
            sent = self.within(ttl, client.install_snapshot(request)) => sent,
            closed = cancel => return Err(StreamingError::Closed(closed)),
        };
        if let Some(e) = read_failure.lock().unwrap_or_else(|p| p.into_inner()).take() {
            return Err(storage_error(e));
        }
        let reply = sent.map_err(|f| self.rpc_error(action, f))?;
        decode(&reply.payload).map_err(|e| self.rpc_error(action, Failure::Network(e.into())).into())
    }
}

/// The stream of one snapshot: `header`, then the first `size` bytes of the file in chunks,
/// each paid from the node's bulk budget.
/// A read error ends the stream early (the receiver then refuses the short snapshot) and is
/// left in `failure`.
fn snapshot_chunks(
    header: SnapshotHeader,
    (file, size): (tokio::fs::File, u64),
    failure: Arc<Mutex<Option<io::Error>>>,
    budget: super::bulk_budget::BulkBudget,
) -> impl futures_util::Stream<Item = SnapshotChunk> + Send + 'static {
    let start = (Some(header), Some(file), 0u64, failure);
    futures_util::stream::unfold(start, move |(header, file, sent, failure)| {
        let budget = budget.clone();
        async move {
            if let Some(header) = header {
                let chunk = SnapshotChunk {
                    part: Some(Part::Header(header)),
                };
                return Some((chunk, (None, file, sent, failure)));
            }
            let mut file = file?;
            let want = (SNAPSHOT_CHUNK_BYTES as u64).min(size - sent);
            let mut data = Vec::with_capacity(want as usize);
            match (&mut file).take(want).read_to_end(&mut data).await {
                Ok(0) => None,
                Ok(n) => {
                    budget.take(n).await;
                    Some((
                        SnapshotChunk {
                            part: Some(Part::Data(data)),
                        },
                        (None, Some(file), sent + n as u64, failure),
                    ))
                }
                Err(e) => {
                    *failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                    None
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;

    use super::*;

    /// A snapshot reaches the peer whole, in several chunks, byte for byte as written.
    #[tokio::test]
    async fn a_snapshot_streams_in_chunks_byte_for_byte() {
        let dir = tempfile::tempdir().unwrap();
        let record = (b"k".to_vec(), vec![7u8; 3 * SNAPSHOT_CHUNK_BYTES]);
        let path = crate::partition::snapshot::write_test_snapshot(dir.path(), 2, &[record]);
        let written = std::fs::read(&path).unwrap();
        let size = written.len() as u64;
        let header = SnapshotHeader {
            partition: 2,
            vote: Vec::new(),
            meta: Vec::new(),
            size,
        };
        let file = tokio::fs::File::open(&path).await.unwrap();
        let failure = Arc::new(Mutex::new(None));
        let chunks: Vec<SnapshotChunk> = snapshot_chunks(header, (file, size), failure.clone(), Default::default())
            .collect()
            .await;
        assert!(failure.lock().unwrap().is_none());
        let mut sent = Vec::new();
        for chunk in &chunks[1..] {
            match &chunk.part {
                Some(Part::Data(data)) => sent.extend_from_slice(data),
                other => panic!("expected data, got {other:?}"),
            }
        }
        assert!(chunks.len() > 3, "several chunks");
        assert_eq!(sent.len() as u64, size);
        assert_eq!(sent, written);
        let records = crate::partition::snapshot::read_snapshot_from(sent.as_slice(), 2, |_, v| {
            assert_eq!(v.len(), 3 * SNAPSHOT_CHUNK_BYTES);
            Ok(())
        })
        .unwrap();
        assert_eq!(records, 1);
    }
}
