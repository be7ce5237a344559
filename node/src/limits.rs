//! The node's request limits (PROTOCOL v1.1): sends per user across HTTP and WebSocket,
//! failed logins per username and per source address, sign-ups per source address.
//!
//! Limits are per node: a user spread over two nodes gets each node's rate. That bounds what
//! one account can push through one node (finding 3 of the hardening issue: 25 MB/s to disk
//! from one account) without a cluster round trip per send.

use std::net::IpAddr;
use std::time::Duration;

use ringchat_cluster::log_throttle::{LogThrottle, EVERY_30_S};

use crate::error::{ApiError, ErrorCode};
use crate::rate_limit::{retry_after_secs, KeyedBuckets};

/// Failed logins one username may have at once; then one more per `USERNAME_REFILL`.
pub const USERNAME_FAILURES: f64 = 10.0;
/// Time for one more failed login of a username.
pub const USERNAME_REFILL: Duration = Duration::from_secs(10);
/// Failed logins one source address may have at once (any usernames); then one per second.
pub const ADDRESS_FAILURES: f64 = 100.0;
/// Keys each limit tracks at most (see `rate_limit.rs` for what happens beyond).
const MAX_KEYS: usize = 200_000;

/// The node's limits.
pub struct Limits {
    sends: KeyedBuckets,
    failed_logins_by_username: KeyedBuckets,
    failed_logins_by_address: KeyedBuckets,
    signups_by_address: KeyedBuckets,
}

impl Limits {
    /// Sends at `send_rate` per second per user with bursts of `send_burst`; sign-ups at
    /// `signups_per_minute` per source address (the same number at once).
    pub fn new(send_rate: u32, send_burst: u32, signups_per_minute: u32) -> Self {
        Limits {
            sends: KeyedBuckets::new(f64::from(send_rate), f64::from(send_burst), MAX_KEYS),
            failed_logins_by_username: KeyedBuckets::new(
                1.0 / USERNAME_REFILL.as_secs_f64(),
                USERNAME_FAILURES,
                MAX_KEYS,
            ),
            failed_logins_by_address: KeyedBuckets::new(1.0, ADDRESS_FAILURES, MAX_KEYS),
            signups_by_address: KeyedBuckets::new(
                f64::from(signups_per_minute) / 60.0,
                f64::from(signups_per_minute),
                MAX_KEYS,
            ),
        }
    }

    /// One send by `user_id`, or `rate_limited` with the wait.
    pub fn send(&self, user_id: &str) -> Result<(), ApiError> {
        self.sends.take(user_id).map_err(|wait| {
            metrics::counter!("ringchat_rate_limited_total", "limit" => "send").increment(1);
            rate_limited("too many messages; slow down", wait)
        })
    }

    /// One sign-up from `address` (each costs the node an argon2 hash), or `rate_limited`.
    pub fn signup(&self, address: IpAddr) -> Result<(), ApiError> {
        self.signups_by_address.take(&address.to_string()).map_err(|wait| {
            metrics::counter!("ringchat_rate_limited_total", "limit" => "signup").increment(1);
            rate_limited("too many sign-ups from this address; wait before trying again", wait)
        })
    }

    /// Whether a login for `username` from `address` may be tried now: refused while either
    /// has used up its failures, whatever the password (so guessing stops, right or wrong).
    pub fn login_allowed(&self, username: &str, address: IpAddr) -> Result<(), ApiError> {
        let username = username.to_ascii_lowercase();
        let wait = match (
            self.failed_logins_by_username.check(&username),
            self.failed_logins_by_address.check(&address.to_string()),
        ) {
            (Ok(()), Ok(())) => return Ok(()),
            (Err(a), Err(b)) => a.max(b),
            (Err(wait), Ok(())) | (Ok(()), Err(wait)) => wait,
        };
        metrics::counter!("ringchat_rate_limited_total", "limit" => "login").increment(1);
        Err(rate_limited("too many failed logins; wait before trying again", wait))
    }

    /// Counts a failed login against `username` and `address`, in a metric and the log.
    pub fn login_failed(&self, username: &str, address: IpAddr) {
        let username = username.to_ascii_lowercase();
        let _ = self.failed_logins_by_username.take(&username);
        let _ = self.failed_logins_by_address.take(&address.to_string());
        metrics::counter!("ringchat_login_failures_total").increment(1);
        // A guessing run is thousands of failures: one line per 30 s, with the count held back.
        static FAILED: LogThrottle = LogThrottle::new(EVERY_30_S);
        if let Some(held_back) = FAILED.allow() {
            tracing::warn!(%username, %address, held_back, "failed login");
        }
    }
}

/// `rate_limited` carrying `wait` as its `Retry-After`.
fn rate_limited(message: &str, wait: Duration) -> ApiError {
    ApiError::new(ErrorCode::RateLimited, message).with_retry_after(retry_after_secs(wait))
}
