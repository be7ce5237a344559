//! The node's budget for bulk replication: bytes per second that catching up a replica may
//! send, whatever the number of groups and peers doing it.
//!
//! A replica that moves to a node is filled by its leader with full AppendEntries batches
//! (or a snapshot stream) as fast as the link takes them. Eight moves at once wrote ~230 MB/s
//! to the new node's disk on the test VM, every node's fsync there rose to 100–190 ms and the
//! live traffic's p99 to 0.7 s during a 1 GiB rebalance (docs/benchmarks.md). Paying for bulk
//! bytes from one token bucket per sending node keeps a rebalance at a known rate; live
//! replication (small batches) never waits on it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Bulk bytes per second a node sends to replicas catching up (all peers together).
pub const BULK_BYTES_PER_SEC: f64 = 32.0 * 1024.0 * 1024.0;

/// The bucket's depth: a burst this large goes out at once.
const BURST_BYTES: f64 = 1024.0 * 1024.0;

/// An AppendEntries counts as bulk when it is a full batch (openraft's `max_payload_entries`
/// entries: the leader is streaming a backlog) of at least this many bytes.
pub const BULK_MIN_BYTES: usize = 256 * 1024;

/// True if an AppendEntries of `entries` entries and `bytes` encoded bytes is bulk.
pub fn is_bulk(entries: usize, bytes: usize) -> bool {
    entries >= crate::cluster::MAX_PAYLOAD_ENTRIES as usize && bytes >= BULK_MIN_BYTES
}

struct Bucket {
    available: f64,
    at: Instant,
}

/// Shared by every group's network on a node (cloning shares it).
#[derive(Clone)]
pub struct BulkBudget {
    rate: f64,
    bucket: Arc<Mutex<Bucket>>,
}

impl Default for BulkBudget {
    fn default() -> Self {
        Self::new(BULK_BYTES_PER_SEC)
    }
}

impl BulkBudget {
    /// A budget of `rate` bytes per second.
    pub fn new(rate: f64) -> Self {
        BulkBudget {
            rate,
            bucket: Arc::new(Mutex::new(Bucket {
                available: BURST_BYTES,
                at: Instant::now(),
            })),
        }
    }

    /// How long a send of `bytes` must wait; takes them from the bucket (it may go negative:
    /// later sends wait for the debt).
    fn reserve(&self, bytes: usize) -> Duration {
        let mut b = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        b.available = (b.available + now.duration_since(b.at).as_secs_f64() * self.rate).min(BURST_BYTES);
        b.at = now;
        b.available -= bytes as f64;
        if b.available >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-b.available / self.rate)
        }
    }

    /// Waits until `bytes` of bulk replication may go out.
    pub async fn take(&self, bytes: usize) {
        metrics::counter!("ringchat_bulk_replication_bytes_total").increment(bytes as u64);
        let wait = self.reserve(bytes);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_goes_at_once_then_sends_are_paced_at_the_rate() {
        let budget = BulkBudget::new(1024.0 * 1024.0);
        assert_eq!(budget.reserve(BURST_BYTES as usize), Duration::ZERO);
        // The bucket is empty: 512 KiB more waits ~0.5 s, and the next 512 KiB ~1 s.
        let first = budget.reserve(512 * 1024);
        let second = budget.reserve(512 * 1024);
        assert!((first.as_secs_f64() - 0.5).abs() < 0.05, "{first:?}");
        assert!((second.as_secs_f64() - 1.0).abs() < 0.05, "{second:?}");
    }
}
