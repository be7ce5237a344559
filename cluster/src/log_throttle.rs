//! At most one log line per period from one place in the code.
//!
//! Some events repeat as long as a fault lasts: a replica move that cannot finish while a
//! member is down is retried every rebalancing pass, a client write answered `unavailable`
//! during an election happens per request. One line per occurrence says nothing more than the
//! first and floods the log (issue: 100+ lines/s per node with one peer down). A `LogThrottle`
//! in a `static` lets one line through per period and counts what it held back, so the next
//! line can say how many there were.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The period most call sites use.
pub const EVERY_30_S: Duration = Duration::from_secs(30);

/// Lets one event per `period` through.
pub struct LogThrottle {
    period: Duration,
    state: Mutex<Option<(Instant, u64)>>,
}

impl LogThrottle {
    /// A throttle letting one event per `period` through.
    pub const fn new(period: Duration) -> Self {
        LogThrottle {
            period,
            state: Mutex::new(None),
        }
    }

    /// `Some(held_back)` if this event is to be logged (with how many were held back since the
    /// last one logged), `None` if it is to be dropped.
    pub fn allow(&self) -> Option<u64> {
        self.allow_at(Instant::now())
    }

    fn allow_at(&self, now: Instant) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match &mut *state {
            Some((last, held)) if now.duration_since(*last) < self.period => {
                *held += 1;
                None
            }
            Some((last, held)) => {
                let was = *held;
                *last = now;
                *held = 0;
                Some(was)
            }
            None => {
                *state = Some((now, 0));
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_event_per_period_gets_through_with_the_count_held_back() {
        let t = LogThrottle::new(Duration::from_secs(30));
        let t0 = Instant::now();
        assert_eq!(t.allow_at(t0), Some(0));
        for s in 1..30 {
            assert_eq!(t.allow_at(t0 + Duration::from_secs(s)), None);
        }
        assert_eq!(t.allow_at(t0 + Duration::from_secs(30)), Some(29));
        assert_eq!(t.allow_at(t0 + Duration::from_secs(31)), None);
    }
}
