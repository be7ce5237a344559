//! The Raft RPC service: hands each Raft request to the local group of the partition it names,
//! and receives snapshots into staged files.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use openraft::alias::{SnapshotMetaOf, SnapshotOf, VoteOf};
use tokio::io::AsyncWriteExt;
use tonic::{Request, Response, Status, Streaming};

use super::proto::raft_service_server::RaftService;
use super::proto::snapshot_chunk::Part;
use super::proto::{RaftReply, RaftRequest, SnapshotChunk, SnapshotReply};
use super::registry::PartitionGroups;
use crate::codec::{decode, encode};
use crate::partition::SnapshotFile;
use crate::types::{PartitionRaft, TypeConfig};

type C = TypeConfig;

/// The Raft RPC service of one node: routes every request by its partition id.
///
/// Incoming snapshots are written chunk by chunk to a temporary file in `incoming_dir` (on
/// the same disk as the snapshot dir, so the state machine's copy is local) and removed once
/// the group has installed or refused them.
pub struct RaftRpcService {
    groups: Arc<dyn PartitionGroups>,
    incoming_dir: PathBuf,
}

impl RaftRpcService {
    /// A service answering for the groups in `groups`, staging snapshots in `incoming_dir`.
    pub fn new(groups: Arc<dyn PartitionGroups>, incoming_dir: PathBuf) -> Self {
        RaftRpcService { groups, incoming_dir }
    }

    async fn group(&self, partition: u32) -> Result<(u16, PartitionRaft), Status> {
        let p = u16::try_from(partition)
            .map_err(|_| Status::invalid_argument(format!("partition {partition} out of range")))?;
        self.groups
            .group_for_message(p)
            .await
            .map(|raft| (p, raft))
            .ok_or_else(|| Status::not_found(format!("partition {p} is not hosted on this node")))
    }
}

impl RaftRpcService {
    /// Refuses a (pre-)vote that this replica could only grant because it lost durable state
    /// (`lost_state.rs`); to the candidate that is a vote not granted.
    fn check_vote(&self, p: u16, rpc: &openraft::raft::VoteRequest<C>) -> Result<(), Status> {
        let last_index = rpc.last_log_id.as_ref().map(|id| id.index);
        if self.groups.grants_vote(p, rpc.vote.leader_id().term, last_index) {
            Ok(())
        } else {
            Err(Status::unavailable(format!(
                "partition {p} lost durable Raft state on this node: it votes only for a candidate holding what it lost"
            )))
        }
    }
}

fn bad_request(what: &str, e: crate::codec::CodecError) -> Status {
    Status::invalid_argument(format!("{what}: {e}"))
}

fn raft_stopped(p: u16, e: impl std::fmt::Display) -> Status {
    Status::unavailable(format!("partition {p}: {e}"))
}

fn reply<T: serde::Serialize>(value: &T) -> Result<Response<RaftReply>, Status> {
    let payload = encode(value);
    Ok(Response::new(RaftReply { payload }))
}

#[tonic::async_trait]
impl RaftService for RaftRpcService {
    async fn append_entries(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let request = request.into_inner();
        let (p, raft) = self.group(request.partition).await?;
        let rpc = decode(&request.payload).map_err(|e| bad_request("append_entries payload", e))?;
        let response = raft.append_entries(rpc).await.map_err(|e| raft_stopped(p, e))?;
        reply(&response)
    }

    async fn vote(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let request = request.into_inner();
        let (p, raft) = self.group(request.partition).await?;
        let rpc = decode(&request.payload).map_err(|e| bad_request("vote payload", e))?;
        self.check_vote(p, &rpc)?;
        let response = raft.vote(rpc).await.map_err(|e| raft_stopped(p, e))?;
        reply(&response)
    }

    async fn pre_vote(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let request = request.into_inner();
        let (p, raft) = self.group(request.partition).await?;
        let rpc = decode(&request.payload).map_err(|e| bad_request("pre_vote payload", e))?;
        self.check_vote(p, &rpc)?;
        let response = raft.pre_vote(rpc).await.map_err(|e| raft_stopped(p, e))?;
        reply(&response)
    }

    async fn transfer_leader(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let request = request.into_inner();
        let (p, raft) = self.group(request.partition).await?;
        if !self.groups.may_lead(p) {
            return Err(Status::unavailable(format!(
                "partition {p} lost durable Raft state on this node and does not lead until it has caught up"
            )));
        }
        let rpc = decode(&request.payload).map_err(|e| bad_request("transfer_leader payload", e))?;
        let response = raft.handle_transfer_leader(rpc).await.map_err(|e| raft_stopped(p, e))?;
        reply(&response)
    }

    async fn install_snapshot(
        &self,
        request: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<SnapshotReply>, Status> {
        let mut stream = request.into_inner();
        let header = match stream.message().await? {
            Some(SnapshotChunk {
                part: Some(Part::Header(header)),
            }) => header,
            Some(_) => return Err(Status::invalid_argument("a snapshot stream must start with its header")),
            None => return Err(Status::invalid_argument("empty snapshot stream")),
        };
        let (p, raft) = self.group(header.partition).await?;
        let vote: VoteOf<C> = decode(&header.vote).map_err(|e| bad_request("snapshot vote", e))?;
        let meta: SnapshotMetaOf<C> = decode(&header.meta).map_err(|e| bad_request("snapshot meta", e))?;

        let staged = StagedFile::create(&self.incoming_dir, p)
            .await
            .map_err(|e| Status::internal(format!("staging snapshot: {e}")))?;
        let mut file = tokio::io::BufWriter::new(
            tokio::fs::File::create(&staged.0)
                .await
                .map_err(|e| Status::internal(format!("staging snapshot: {e}")))?,
        );
        let mut received = 0u64;
        let mut sync_due = crate::partition::write_behind::SyncDue::default();
        while let Some(chunk) = stream.message().await? {
            let Some(Part::Data(data)) = chunk.part else {
                return Err(Status::invalid_argument("only data may follow the snapshot header"));
            };
            received += data.len() as u64;
            if received > header.size {
                return Err(Status::invalid_argument(format!(
                    "snapshot longer than its declared {} bytes",
                    header.size
                )));
            }
            file.write_all(&data)
                .await
                .map_err(|e| Status::internal(format!("writing snapshot: {e}")))?;
            // A few MB at a time reach the disk, not the whole file in one burst at the end
            // (`partition/write_behind.rs`).
            if sync_due.wrote(data.len() as u64) {
                sync_staged(&mut file).await?;
            }
        }
        if received != header.size {
            // A cut stream must never reach the state machine: it would refuse the torn file
            // only after dropping the partition's current state.
            return Err(Status::invalid_argument(format!(
                "snapshot ended after {received} of {} bytes",
                header.size
            )));
        }
        // On disk now, while the move is under way: left to the kernel, a moving replica's
        // bytes were written back ~30 s later (its dirty-page expiry), when every node's journal
        // fsync on the machine waited behind them for 120–170 ms (docs/benchmarks.md). The
        // rest since the last sync above.
        sync_staged(&mut file).await?;
        drop(file);
        // A damaged file is refused here, with an answer the sender retries: handed to the
        // group, the failed install would stop it as a storage error.
        let path = staged.0.clone();
        let checked = tokio::task::spawn_blocking(move || crate::partition::verify_snapshot(&path))
            .await
            .map_err(|e| Status::internal(format!("checking snapshot: {e}")))?;
        if let Err(e) = checked {
            tracing::warn!(partition = p, error = %e, "received snapshot refused");
            return Err(Status::data_loss(format!("snapshot refused: {e}")));
        }

        tracing::info!(partition = p, bytes = received, "snapshot received, installing");
        let snapshot = SnapshotOf::<C, SnapshotFile> {
            meta,
            snapshot: SnapshotFile(staged.0.clone()),
        };
        // openraft answers only after the state machine has installed (and copied) the file,
        // or refused it for a stale vote, so the staged file may go when this returns.
        let response = raft
            .install_full_snapshot(vote, snapshot)
            .await
            .map_err(|e| raft_stopped(p, e))?;
        let payload = encode(&response);
        Ok(Response::new(SnapshotReply { payload }))
    }
}

/// Writes out what `file` buffers and syncs the file's data.
async fn sync_staged(file: &mut tokio::io::BufWriter<tokio::fs::File>) -> Result<(), Status> {
    let failed = |e: std::io::Error| Status::internal(format!("writing snapshot: {e}"));
    file.flush().await.map_err(failed)?;
    file.get_ref().sync_data().await.map_err(failed)
}

/// A temporary snapshot file, removed when dropped (after install, on error or cancellation).
struct StagedFile(PathBuf);

impl StagedFile {
    async fn create(dir: &Path, partition: u16) -> std::io::Result<Self> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        tokio::fs::create_dir_all(dir).await?;
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        Ok(StagedFile(dir.join(format!(
            "incoming-p{partition}-{}-{n}.part",
            std::process::id()
        ))))
    }
}

impl Drop for StagedFile {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.0) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %self.0.display(), error = %e, "could not remove staged snapshot");
            }
        }
    }
}
