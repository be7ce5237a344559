//! Credentials: argon2id password hashes (OWASP parameters, the `argon2` crate's defaults),
//! random bearer tokens stored only as SHA-256, and opaque ids.
//!
//! Hashing costs ~19 MiB and real CPU, so it runs on a few dedicated threads, never on the
//! async workers. Dedicated (not `spawn_blocking`) so that a burst of logins touches the
//! allocator from `threads` threads only; each returns its freed 19 MiB block to the OS after
//! every hash (`allocator::release_freed_memory`).

use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use tokio::sync::{oneshot, Semaphore};

use crate::error::ApiError;

/// Work for a hashing thread.
type Job = Box<dyn FnOnce() + Send>;

/// Hashes waiting per hashing thread before callers wait for a slot.
const QUEUED_PER_THREAD: usize = 32;

/// A fixed set of argon2 threads. The threads end when the last clone of the pool is dropped.
#[derive(Clone)]
pub struct PasswordHasherPool {
    jobs: SyncSender<Job>,
    permits: Arc<Semaphore>,
    /// The hash unknown usernames are verified against (`verify_nobody`), made on first use.
    decoy: Arc<tokio::sync::OnceCell<String>>,
}

impl PasswordHasherPool {
    /// Starts `threads` hashing threads.
    pub fn new(threads: usize) -> Self {
        let threads = threads.max(1);
        let slots = threads * QUEUED_PER_THREAD;
        let (jobs, rx) = sync_channel::<Job>(slots);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("argon2-{i}"))
                .spawn(move || run_jobs(&rx));
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a password hashing thread");
            }
        }
        PasswordHasherPool {
            jobs,
            permits: Arc::new(Semaphore::new(slots)),
            decoy: Arc::new(tokio::sync::OnceCell::new()),
        }
    }

    /// Spends the time of a real `verify` for a username that does not exist, against a
    /// hash of a random password made once with the same parameters: a login for an unknown
    /// user then takes as long as one with a wrong password (PROTOCOL v1.1), so timing does not
    /// tell which usernames exist. Always false.
    pub async fn verify_nobody(&self, password: String) -> Result<bool, ApiError> {
        let decoy = self
            .decoy
            .get_or_try_init(|| async {
                let mut random = [0u8; 24];
                rand::rng().fill_bytes(&mut random);
                self.hash(base64::engine::general_purpose::STANDARD.encode(random))
                    .await
            })
            .await?
            .clone();
        self.verify(password, decoy).await.map(|_| false)
    }

    /// Runs `f` on a hashing thread. A permit per queued job keeps the queue from ever
    /// blocking the async caller.
    async fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T, ApiError> {
        let _permit = self.permits.acquire().await.map_err(ApiError::internal)?;
        let (tx, rx) = oneshot::channel();
        self.jobs
            .send(Box::new(move || {
                let _ = tx.send(f());
            }))
            .map_err(|_| ApiError::internal("password hashing threads stopped"))?;
        rx.await
            .map_err(|_| ApiError::internal("password hashing thread failed"))
    }

    /// Hashes `password` with a fresh salt into a PHC string.
    pub async fn hash(&self, password: String) -> Result<String, ApiError> {
        self.run(move || {
            let mut salt = [0u8; 16];
            rand::rng().fill_bytes(&mut salt);
            let salt = SaltString::encode_b64(&salt).map_err(ApiError::internal)?;
            Argon2::default()
                .hash_password(password.as_bytes(), &salt)
                .map(|h| h.to_string())
                .map_err(ApiError::internal)
        })
        .await?
    }

    /// True if `password` matches the PHC string `hash`.
    pub async fn verify(&self, password: String, hash: String) -> Result<bool, ApiError> {
        self.run(move || {
            let parsed = PasswordHash::new(&hash).map_err(ApiError::internal)?;
            Ok(Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
        })
        .await?
    }
}

/// A hashing thread: runs jobs until every sender is gone.
fn run_jobs(rx: &Mutex<Receiver<Job>>) {
    loop {
        let job = match rx.lock() {
            Ok(guard) => guard.recv(),
            Err(poisoned) => poisoned.into_inner().recv(),
        };
        match job {
            // A panicking job must not take the thread (and every later login) with it.
            Ok(job) => {
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                crate::allocator::release_freed_memory();
            }
            Err(_) => return,
        }
    }
}

/// A new bearer token: 32 random bytes, base64url.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// What is stored for a token: hex SHA-256 (a stolen database yields no usable tokens).
pub fn token_hash(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    let mut out = String::with_capacity(64);
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// A new opaque id: `prefix` + 16 base64url chars (96 random bits).
pub fn new_id(prefix: &str) -> String {
    let mut bytes = [0u8; 12];
    rand::rng().fill_bytes(&mut bytes);
    format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// The DM channel id of a pair in releases before keyed ids: an unkeyed hash of the sorted
/// pair, which anyone can compute. Still looked up, so DMs opened before keep their ids.
pub fn legacy_dm_channel_id(a: &str, b: &str) -> String {
    let (x, y) = if a <= b { (a, b) } else { (b, a) };
    let mut h = Sha256::new();
    h.update(x.as_bytes());
    h.update([0u8]);
    h.update(y.as_bytes());
    let digest = h.finalize();
    format!(
        "d_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..18])
    )
}

/// The one DM channel id of a pair: HMAC-SHA-256 under the cluster's DM id key of the sorted
/// pair, so asking twice (or from either side, or on any node) names the same channel without
/// coordination, while nobody without the key can compute it (who talks to whom stays hidden).
pub fn dm_channel_id(key: &[u8], a: &str, b: &str) -> String {
    use hmac::Mac;
    let (x, y) = if a <= b { (a, b) } else { (b, a) };
    let mut mac = hmac::Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    // Length-prefixed, so no two pairs feed the MAC the same bytes.
    mac.update(&(x.len() as u64).to_be_bytes());
    mac.update(x.as_bytes());
    mac.update(y.as_bytes());
    let digest = mac.finalize().into_bytes();
    format!(
        "d_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..18])
    )
}

/// A fresh DM id key (32 random bytes), kept by the cluster only if it has none yet.
pub fn new_dm_id_key() -> Vec<u8> {
    let mut key = vec![0u8; 32];
    rand::rng().fill_bytes(&mut key);
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dm_id_is_symmetric_and_distinct() {
        let k = b"0123456789abcdef0123456789abcdef";
        assert_eq!(dm_channel_id(k, "u_a", "u_b"), dm_channel_id(k, "u_b", "u_a"));
        assert_ne!(dm_channel_id(k, "u_a", "u_b"), dm_channel_id(k, "u_a", "u_c"));
        assert_ne!(dm_channel_id(k, "u_ab", "u_c"), dm_channel_id(k, "u_a", "u_bc"));
        assert!(dm_channel_id(k, "u_a", "u_b").len() <= 64);
        // Another key, another id; and neither is the unkeyed one anyone can compute.
        assert_ne!(
            dm_channel_id(k, "u_a", "u_b"),
            dm_channel_id(b"another key", "u_a", "u_b")
        );
        assert_ne!(dm_channel_id(k, "u_a", "u_b"), legacy_dm_channel_id("u_a", "u_b"));
        assert_eq!(legacy_dm_channel_id("u_a", "u_b"), legacy_dm_channel_id("u_b", "u_a"));
    }

    #[test]
    fn tokens_are_unique_and_hash_stably() {
        let (a, b) = (new_token(), new_token());
        assert_ne!(a, b);
        assert_eq!(token_hash(&a), token_hash(&a));
        assert_eq!(token_hash(&a).len(), 64);
    }

    #[tokio::test]
    async fn password_hash_verifies_only_the_password() {
        let pool = PasswordHasherPool::new(1);
        let h = pool.hash("correct horse".into()).await.unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(pool.verify("correct horse".into(), h.clone()).await.unwrap());
        assert!(!pool.verify("wrong horse!".into(), h).await.unwrap());
    }
}
