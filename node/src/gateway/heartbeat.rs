//! Closing connections whose client went quiet (PROTOCOL: a connection is live while the
//! client sends a frame or a ping at least every `2 × heartbeat_ms`).
//!
//! One sweep task for the node instead of a timer per connection: each connection records
//! when it last heard from its client (one relaxed store per frame), and the sweep closes the
//! ones silent for longer than the limit. A per-connection timer cost 112 B of every idle
//! connection's task plus a timer-wheel insert and removal for every frame read.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::registry::{Registry, CLOSE_TOO_SLOW};

/// Milliseconds on the node's monotonic clock (since its first use).
pub fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// When a connection last heard from its client; "not yet" while its catch-up runs (the
/// server is talking then, and a client may not send anything before `caught_up`).
#[derive(Debug)]
pub struct LastHeard(AtomicU64);

impl Default for LastHeard {
    fn default() -> Self {
        LastHeard(AtomicU64::new(u64::MAX))
    }
}

impl LastHeard {
    /// The client was heard from now.
    pub fn touch(&self) {
        self.0.store(now_ms(), Ordering::Relaxed);
    }

    /// True if the client was last heard from more than `limit_ms` before `now`.
    pub fn silent_longer_than(&self, limit_ms: u64, now: u64) -> bool {
        match self.0.load(Ordering::Relaxed) {
            u64::MAX => false,
            at => now.saturating_sub(at) > limit_ms,
        }
    }
}

/// Every quarter heartbeat until shutdown: closes (4008) the connections silent for longer
/// than `2 × heartbeat`, so one is closed between 2 and 2.25 heartbeats after its last frame.
pub async fn sweep(registry: Arc<Registry>, heartbeat: Duration, shutdown: CancellationToken) {
    let limit_ms = 2 * heartbeat.as_millis() as u64;
    let every = (heartbeat / 4).max(Duration::from_millis(10));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let closed = registry.close_silent(limit_ms, now_ms(), CLOSE_TOO_SLOW);
        if closed > 0 {
            tracing::debug!(closed, "closed connections that missed their heartbeats");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_counts_only_once_the_client_was_heard_from() {
        let heard = LastHeard::default();
        assert!(
            !heard.silent_longer_than(0, u64::MAX - 1),
            "not yet reading: never silent"
        );
        heard.touch();
        let at = now_ms();
        assert!(!heard.silent_longer_than(100, at + 100));
        assert!(heard.silent_longer_than(100, at + 10_000));
    }
}
