//! Wall-clock time of this node, and the check that a peer's clock agrees with it.
//!
//! Message `ts` is stamped by the partition leader (and never below the channel's previous
//! one, `partition/apply.rs`), so a skewed node shows up as timestamps from the future or a
//! channel whose times stall; each batch on the pipe carries its sender's clock, and the
//! receiver warns when the two disagree by more than `MAX_SKEW`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::log_throttle::{LogThrottle, EVERY_30_S};

/// Largest clock difference to a peer that is not reported. Generous next to the link's
/// one-way delay (the batch's age is part of the difference measured).
pub const MAX_SKEW: Duration = Duration::from_secs(1);

/// Current time, Unix ms.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// How far `peer_ms` (a peer's clock when it sent something) is ahead of `local_ms` (ours when
/// it arrived): positive when the peer is ahead. `None` when the peer sent no clock.
pub fn skew_ms(peer_ms: u64, local_ms: u64) -> Option<i64> {
    (peer_ms != 0).then(|| peer_ms as i64 - local_ms as i64)
}

/// Warns (at most once per 30 s) when `peer`'s clock, read from a batch it stamped with
/// `peer_ms`, is off ours by more than `MAX_SKEW`; records the skew as a gauge.
pub fn check_peer_clock(peer: &str, peer_ms: u64) {
    let Some(skew) = skew_ms(peer_ms, unix_ms()) else {
        return;
    };
    metrics::gauge!("ringchat_peer_clock_skew_ms").set(skew as f64);
    if skew.unsigned_abs() > MAX_SKEW.as_millis() as u64 {
        static SKEWED: LogThrottle = LogThrottle::new(EVERY_30_S);
        if let Some(held_back) = SKEWED.allow() {
            tracing::warn!(
                peer,
                skew_ms = skew,
                held_back,
                "a peer's clock disagrees with ours by more than 1 s; message times follow the partition leaders' clocks"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skew_is_signed_and_absent_without_a_clock() {
        assert_eq!(skew_ms(5_000, 2_000), Some(3_000));
        assert_eq!(skew_ms(2_000, 5_000), Some(-3_000));
        assert_eq!(skew_ms(0, 5_000), None, "an older peer sends no clock");
    }
}
