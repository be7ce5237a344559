//! Send timestamps carried in the message text, so any recipient can compute end-to-end
//! latency without clock agreement with the server: the loadgen is one process and every
//! timestamp is nanoseconds since one `Instant` taken at start-up.
//!
//! Text format: `lg <step> <id> <scheduled_ns>`. The time is the *scheduled* send time, not the
//! time the frame left: an open-loop load generator that falls behind must charge the delay to
//! the measured latency, or it hides exactly the stalls it is meant to find (coordinated
//! omission).

use std::sync::OnceLock;
use std::time::Instant;

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Nanoseconds since the process-wide epoch (set by the first call).
pub fn now_ns() -> u64 {
    let epoch = *EPOCH.get_or_init(Instant::now);
    epoch.elapsed().as_nanos() as u64
}

/// What a recipient reads back from a message text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Step of the run the message belongs to (late arrivals from an earlier step are counted
    /// apart, not mixed into the next step's latencies).
    pub step: u32,
    /// Message number within the run.
    pub id: u64,
    /// Scheduled send time, ns since the epoch.
    pub scheduled_ns: u64,
}

impl Stamp {
    /// The message text carrying this stamp.
    pub fn text(&self) -> String {
        format!("lg {} {} {}", self.step, self.id, self.scheduled_ns)
    }

    /// Reads a stamp back; `None` for texts the loadgen did not write.
    pub fn parse(text: &str) -> Option<Stamp> {
        let mut parts = text.strip_prefix("lg ")?.split(' ');
        let step = parts.next()?.parse().ok()?;
        let id = parts.next()?.parse().ok()?;
        let scheduled_ns = parts.next()?.parse().ok()?;
        Some(Stamp { step, id, scheduled_ns })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamp_round_trips_through_text() {
        let s = Stamp {
            step: 3,
            id: 17,
            scheduled_ns: now_ns(),
        };
        assert_eq!(Stamp::parse(&s.text()), Some(s));
        assert_eq!(Stamp::parse("hello"), None);
        assert_eq!(Stamp::parse("lg 1 x 3"), None);
    }

    #[test]
    fn clock_moves_forward() {
        let a = now_ns();
        let b = now_ns();
        assert!(b >= a);
    }
}
