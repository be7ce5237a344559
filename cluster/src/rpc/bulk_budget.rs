//! The node's budget for bulk replication: bytes per second that catching up a replica may
//! send, whatever the number of groups and peers doing it, and lower while live traffic
//! suffers.
//!
//! A replica that moves to a node is filled by its leader with full AppendEntries batches
//! (or a snapshot stream) as fast as the link takes them. Eight moves at once wrote ~230 MB/s
//! to the new node's disk on the test VM, every node's fsync there rose to 100–190 ms and the
//! live traffic's p99 to 0.7 s during a 1 GiB rebalance (docs/benchmarks.md). Paying for bulk
//! bytes from one token bucket per sending node keeps a rebalance at a known rate; live
//! replication (small batches) never waits on it.
//!
//! The rate is a ceiling, not a promise: filling a replica costs its node CPU and disk that
//! the live traffic of every node on a shared machine also needs. Like a background transfer
//! that yields to the foreground (LEDBAT), the budget watches the round trips of this node's
//! live AppendEntries: when more than a tenth of a quarter second's exceed `LIVE_RTT_TARGET`,
//! the rate halves (down to `MIN_BYTES_PER_SEC`); a quiet quarter second adds
//! `STEP_BYTES_PER_SEC` back, up to the ceiling.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Bulk bytes per second a node sends to replicas catching up (all peers together).
pub const BULK_BYTES_PER_SEC: f64 = 32.0 * 1024.0 * 1024.0;

/// The bucket's depth: a burst this large goes out at once.
const BURST_BYTES: f64 = 1024.0 * 1024.0;

/// The lowest rate the budget backs off to: a replica always makes progress.
pub const MIN_BYTES_PER_SEC: f64 = 2.0 * 1024.0 * 1024.0;

/// What a quiet window gives back: from the floor to the ceiling in ~4 s.
const STEP_BYTES_PER_SEC: f64 = 8.0 * 1024.0 * 1024.0;

/// A live AppendEntries round trip above this means the path live messages take is queueing
/// (a healthy one is an fsync and a loopback hop: 2–10 ms here).
pub const LIVE_RTT_TARGET: Duration = Duration::from_millis(25);

/// How often the rate is reconsidered.
const WINDOW: Duration = Duration::from_millis(250);

/// Live round trips observed in the current window.
struct Window {
    started: Instant,
    samples: u32,
    slow: u32,
}

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
    /// Bytes per second now, between `MIN_BYTES_PER_SEC` and the ceiling.
    rate: f64,
    window: Window,
}

/// Shared by every group's network on a node (cloning shares it).
#[derive(Clone)]
pub struct BulkBudget {
    /// The ceiling.
    ceiling: f64,
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
        let now = Instant::now();
        BulkBudget {
            ceiling: rate,
            bucket: Arc::new(Mutex::new(Bucket {
                available: BURST_BYTES,
                at: now,
                rate,
                window: Window {
                    started: now,
                    samples: 0,
                    slow: 0,
                },
            })),
        }
    }

    /// Bytes per second bulk replication may use now.
    pub fn rate(&self) -> f64 {
        self.bucket.lock().unwrap_or_else(|e| e.into_inner()).rate
    }

    /// Records the round trip of a live (not bulk) AppendEntries this node sent, and at the
    /// end of each window moves the rate: halved if live traffic queued, raised if not.
    pub fn observe_live(&self, rtt: Duration) {
        self.observe_at(rtt, Instant::now());
    }

    fn observe_at(&self, rtt: Duration, now: Instant) {
        let mut b = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
        b.window.samples += 1;
        if rtt > LIVE_RTT_TARGET {
            b.window.slow += 1;
        }
        self.close_window(&mut b, now);
    }

    /// Once a window is over: halves the rate if its live round trips queued, else raises it
    /// (a window without live traffic is quiet), and starts the next window.
    fn close_window(&self, b: &mut Bucket, now: Instant) {
        if now.duration_since(b.window.started) < WINDOW {
            return;
        }
        let queued = b.window.slow * 10 > b.window.samples;
        let before = b.rate;
        b.rate = if queued {
            (b.rate / 2.0).max(MIN_BYTES_PER_SEC.min(self.ceiling))
        } else {
            (b.rate + STEP_BYTES_PER_SEC).min(self.ceiling)
        };
        b.window = Window {
            started: now,
            samples: 0,
            slow: 0,
        };
        if b.rate != before {
            metrics::gauge!("ringchat_bulk_replication_rate_bytes").set(b.rate);
        }
    }

    /// How long a send of `bytes` must wait; takes them from the bucket (it may go negative:
    /// later sends wait for the debt).
    fn reserve(&self, bytes: usize) -> Duration {
        let mut b = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        self.close_window(&mut b, now);
        let rate = b.rate;
        b.available = (b.available + now.duration_since(b.at).as_secs_f64() * rate).min(BURST_BYTES);
        b.at = now;
        b.available -= bytes as f64;
        if b.available >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-b.available / rate)
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

    #[test]
    fn queueing_live_traffic_halves_the_rate_and_quiet_windows_raise_it_back_to_the_ceiling() {
        let ceiling = 32.0 * 1024.0 * 1024.0;
        let budget = BulkBudget::new(ceiling);
        let slow = LIVE_RTT_TARGET * 4;
        let fast = LIVE_RTT_TARGET / 5;
        let mut at = Instant::now();
        // Starts the next window with `n` round trips of `rtt` (the first one closes the last).
        let mut window = |rtts: &[(Duration, u32)]| {
            at += WINDOW;
            for &(rtt, n) in rtts {
                for _ in 0..n {
                    budget.observe_at(rtt, at);
                }
            }
        };
        // A fifth of the live round trips slow: halved, window after window, to the floor.
        for expected in [16.0, 8.0, 4.0, 2.0, 2.0] {
            window(&[(slow, 1), (fast, 4)]);
            assert_eq!(budget.rate(), expected * 1024.0 * 1024.0);
        }
        // Quiet windows give 8 MiB/s back each, never past the ceiling.
        for expected in [10.0, 18.0, 26.0, 32.0, 32.0] {
            window(&[(fast, 20)]);
            assert_eq!(budget.rate(), expected * 1024.0 * 1024.0);
        }
        // One slow round trip in twenty is noise, not queueing.
        window(&[(fast, 19), (slow, 1)]);
        window(&[(fast, 1)]);
        assert_eq!(budget.rate(), ceiling);
    }
}
