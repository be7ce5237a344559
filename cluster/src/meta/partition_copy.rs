//! The copy step of a move between groups: a node new to a partition pulls the partition's
//! data from a replica of the group it moves out of, as that group's fence left it
//! (docs/raft-groups.md; the storage side is `partition/range_copy.rs`).
//!
//! The meta leader asks each new node (`CopyPartition`) and proposes the adoption only once
//! every one answered, so an adoption never waits on a copy nobody runs. The new node reads
//! from the source replicas in turn (`ReadPartition`); a source answers only once its own
//! replica of the source group applied the fence, from one consistent view in which that
//! group still carries the partition fenced, so what it streams is exactly the partition at
//! the fence.

use std::pin::Pin;
use std::time::Duration;

use futures_util::Stream;
use tonic::Status;

use super::membership::member_client;
use super::wire::{CopyRequest, PartitionRead};
use crate::cluster::Cluster;
use crate::codec::{decode, encode};
use crate::error::ClusterError;
use crate::partition::ownership::Ownership;
use crate::partition::range_copy::{self, CopyWriter};
use crate::partition::tables as t;
use crate::rpc::member_proto::Json;

/// Longest a source waits for its replica of the source group to apply the fence.
const FENCE_WAIT: Duration = Duration::from_secs(20);

/// Chunks read ahead of the network on a source.
const CHUNKS_AHEAD: usize = 4;

/// The stream `ReadPartition` answers with.
pub type ChunkStream = Pin<Box<dyn Stream<Item = Result<Json, Status>> + Send>>;

impl Cluster {
    /// Copies `req.partition` here from the first source that serves it; returns its record
    /// count once the copy is durable and its marker written.
    pub async fn copy_partition_here(&self, req: &CopyRequest) -> Result<u64, ClusterError> {
        let peers = self
            .peers
            .as_ref()
            .ok_or_else(|| ClusterError::Unavailable("no peers".into()))?;
        let _one_at_a_time = self.partition_data.lock().await;
        self.reclaimed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&req.partition);
        if let Some(marker) = range_copy::copy_marker(&self.store, req.partition)? {
            if marker.from == req.from && marker.after >= req.after {
                // Done already (a retried request), or a later attempt's copy is here.
                return Ok(0);
            }
        }
        let started = std::time::Instant::now();
        let mut last = String::from("no source to copy from");
        for addr in req.sources.iter().filter(|a| **a != self.advertise) {
            match self.copy_from(peers, addr, req).await {
                Ok(records) => {
                    tracing::debug!(partition = req.partition, from = req.from, source = %addr, records,
                        ms = started.elapsed().as_millis() as u64, "partition copied here");
                    metrics::counter!("ringchat_partition_copies_total").increment(1);
                    return Ok(records);
                }
                Err(e) => {
                    tracing::info!(partition = req.partition, source = %addr, error = %e, "copying a partition from this source failed");
                    last = format!("{addr}: {e}");
                }
            }
        }
        Err(ClusterError::Unavailable(last))
    }

    /// One attempt at the copy from the source at `addr`.
    async fn copy_from(
        &self,
        peers: &crate::rpc::PeerChannels,
        addr: &str,
        req: &CopyRequest,
    ) -> Result<u64, ClusterError> {
        let mut client = member_client(peers, addr)?;
        let read = PartitionRead {
            partition: req.partition,
            from: req.from,
            after: req.after,
        };
        let mut chunks = client
            .read_partition(Json { payload: encode(&read) })
            .await
            .map_err(|s| ClusterError::Unavailable(s.message().to_string()))?
            .into_inner();
        let (store, p) = (self.store.clone(), req.partition);
        let mut writer = blocking(move || CopyWriter::start(&store, p).map_err(ClusterError::from)).await?;
        while let Some(chunk) = chunks
            .message()
            .await
            .map_err(|s| ClusterError::Unavailable(s.message().to_string()))?
        {
            writer = blocking(move || {
                writer
                    .write(&chunk.payload)
                    .map_err(|e| ClusterError::Internal(e.to_string()))?;
                Ok(writer)
            })
            .await?;
        }
        let (from, after) = (req.from, req.after);
        blocking(move || writer.finish(from, after).map_err(ClusterError::from)).await
    }

    /// Source side: partition `read.partition`'s data once this node's replica of group
    /// `read.from` has applied the fence at `read.after`, from one view in which that group
    /// carries the partition fenced.
    pub async fn read_partition(&self, read: PartitionRead) -> Result<ChunkStream, ClusterError> {
        let PartitionRead { partition, from, after } = read;
        tokio::time::timeout(
            FENCE_WAIT,
            crate::partition::ownership::source_applied(&self.store, partition, from, after),
        )
        .await
        .map_err(|_| ClusterError::Unavailable(format!("group {from} has not applied index {after} here")))??;
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Json, Status>>(CHUNKS_AHEAD);
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || {
            let view = store.db.snapshot();
            let fenced_here = fjall::Readable::get(&view, &store.sm, t::meta_ownership(from))
                .map_err(|e| e.to_string())
                .and_then(|v| match v {
                    Some(v) => decode::<Ownership>(&v).map_err(|e| e.to_string()),
                    None => Ok(Ownership::initial(from)),
                })
                .map(|o| o.carried.contains(&partition) && o.fenced.contains(&partition));
            match fenced_here {
                Ok(true) => {}
                Ok(false) => {
                    let _ = tx.blocking_send(Err(Status::failed_precondition(format!(
                        "group {from} does not hold partition {partition} fenced here"
                    ))));
                    return;
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(Status::internal(e)));
                    return;
                }
            }
            let read = range_copy::read_chunks(&store, &view, partition, |chunk| {
                tx.blocking_send(Ok(Json { payload: chunk }))
                    .map_err(|_| std::io::Error::other("the reader went away"))
            });
            if let Err(e) = read {
                let _ = tx.blocking_send(Err(Status::internal(e.to_string())));
            }
        });
        // Paid from the node's budget for catching replicas up (`rpc/bulk_budget.rs`), which
        // yields to live traffic: a rebalance's copies must not queue the live writes.
        let bulk = self.peers.as_ref().map(|p| p.bulk.clone());
        let paced = futures_util::stream::unfold((rx, bulk), |(mut rx, bulk)| async move {
            let item = rx.recv().await?;
            if let (Ok(chunk), Some(budget)) = (&item, &bulk) {
                budget.take(chunk.payload.len()).await;
            }
            Some((item, (rx, bulk)))
        });
        Ok(Box::pin(paced))
    }
}

/// Runs blocking storage work off the async workers.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ClusterError> + Send + 'static,
) -> Result<T, ClusterError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ClusterError::Internal(e.to_string()))?
}
