//! Token buckets: one per connection for its frames, and keyed ones shared by every request of
//! a user (sends over HTTP and WebSocket), a username or a source address (failed logins).
//!
//! A keyed set is bounded (`max_keys`), because its keys come from clients: when it is full,
//! buckets that have refilled (their key is idle) are dropped, at most once a second; if none
//! has, an arbitrary one goes. An evicted key starts again with a full bucket, which only ever
//! errs towards letting a client through; the per-address limit still holds a single source.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A token bucket: `burst` tokens, refilled at `rate` per second.
#[derive(Debug, Clone)]
pub struct Bucket {
    tokens: f64,
    rate: f64,
    burst: f64,
    at: Instant,
}

impl Bucket {
    /// A full bucket.
    pub fn new(rate: f64, burst: f64) -> Self {
        Bucket {
            tokens: burst,
            rate,
            burst,
            at: Instant::now(),
        }
    }

    fn refill(&mut self, now: Instant) {
        self.tokens = (self.tokens + now.saturating_duration_since(self.at).as_secs_f64() * self.rate).min(self.burst);
        self.at = now;
    }

    /// Takes a token if there is one.
    pub fn take(&mut self) -> bool {
        self.refill(Instant::now());
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// How long until a token is there (zero if one is).
    pub fn wait(&mut self) -> Duration {
        self.refill(Instant::now());
        if self.tokens >= 1.0 || self.rate <= 0.0 {
            return Duration::ZERO;
        }
        Duration::from_secs_f64((1.0 - self.tokens) / self.rate)
    }

    fn is_full(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= self.burst
    }
}

/// Buckets by key, all with the same rate and burst.
pub struct KeyedBuckets {
    rate: f64,
    burst: f64,
    max_keys: usize,
    state: Mutex<KeyedState>,
}

struct KeyedState {
    buckets: HashMap<String, Bucket>,
    last_sweep: Option<Instant>,
}

impl KeyedBuckets {
    /// `burst` tokens per key, refilled at `rate` per second, for at most `max_keys` keys.
    pub fn new(rate: f64, burst: f64, max_keys: usize) -> Self {
        KeyedBuckets {
            rate,
            burst,
            max_keys: max_keys.max(1),
            state: Mutex::new(KeyedState {
                buckets: HashMap::new(),
                last_sweep: None,
            }),
        }
    }

    /// Takes a token of `key`'s bucket; when it is empty, how long until it has one.
    pub fn take(&self, key: &str) -> Result<(), Duration> {
        self.with(key, |bucket| if bucket.take() { Ok(()) } else { Err(bucket.wait()) })
    }

    /// Whether `key`'s bucket has a token, without taking it; when empty, how long until.
    pub fn check(&self, key: &str) -> Result<(), Duration> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match state.buckets.get_mut(key) {
            None => Ok(()),
            Some(bucket) => match bucket.wait() {
                Duration::ZERO => Ok(()),
                wait => Err(wait),
            },
        }
    }

    /// Keys tracked right now.
    pub fn len(&self) -> usize {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).buckets.len()
    }

    /// Whether no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn with<T>(&self, key: &str, f: impl FnOnce(&mut Bucket) -> T) -> T {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if !state.buckets.contains_key(key) && state.buckets.len() >= self.max_keys {
            state.make_room(self.max_keys);
        }
        let bucket = state
            .buckets
            .entry(key.to_string())
            .or_insert_with(|| Bucket::new(self.rate, self.burst));
        f(bucket)
    }
}

impl KeyedState {
    /// Frees at least one slot: drops refilled buckets (once a second at most), else any one.
    fn make_room(&mut self, max_keys: usize) {
        let now = Instant::now();
        if self
            .last_sweep
            .is_none_or(|at| now.duration_since(at) >= Duration::from_secs(1))
        {
            self.last_sweep = Some(now);
            self.buckets.retain(|_, bucket| !bucket.is_full(now));
        }
        while self.buckets.len() >= max_keys {
            let Some(key) = self.buckets.keys().next().cloned() else {
                break;
            };
            self.buckets.remove(&key);
        }
    }
}

/// The seconds a `Retry-After` header carries for `wait`: rounded up, at least 1.
pub fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_gets_its_burst_then_waits_and_keys_are_separate() {
        let limits = KeyedBuckets::new(1.0, 3.0, 100);
        for _ in 0..3 {
            assert!(limits.take("a").is_ok());
        }
        let wait = limits.take("a").unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(1), "{wait:?}");
        assert!(limits.check("a").is_err(), "check sees the empty bucket");
        assert!(limits.take("b").is_ok(), "another key has its own bucket");
        assert_eq!(retry_after_secs(wait), 1);
    }

    #[test]
    fn check_takes_nothing() {
        let limits = KeyedBuckets::new(0.001, 1.0, 100);
        for _ in 0..10 {
            assert!(limits.check("a").is_ok());
        }
        assert!(limits.take("a").is_ok());
        assert!(limits.take("a").is_err());
    }

    #[test]
    fn the_key_count_stays_bounded() {
        let limits = KeyedBuckets::new(0.001, 2.0, 50);
        for i in 0..10_000 {
            let _ = limits.take(&format!("user-{i}"));
            assert!(limits.len() <= 50);
        }
    }
}
