//! Push sender: delivers the durable push outbox to the configured gateway.
//!
//! Each committed message with a push gateway configured leaves an outbox entry in its
//! channel's partition. This worker takes entries (live from `Chat`, and by rescanning the
//! outbox at start and periodically, which covers crashes and a full inbox), decides once which
//! recipients are offline and which of their devices are registered, POSTs one request per
//! device, retries failures with exponential backoff until a 2xx, and only then commits
//! `PushDone`. Delivery is at-least-once: a crash after a POST but before `PushDone` repeats it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringchat_cluster::{Cluster, Command, PushOutboxRecord};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::gateway::Registry;

/// First retry delay; doubles per failure up to `MAX_BACKOFF`.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// Longest retry delay.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// How often the outbox is rescanned.
const RESCAN_EVERY: Duration = Duration::from_secs(10);
/// Most entries held in memory; the rest wait on disk for a later scan.
const MAX_PENDING: usize = 10_000;

/// One device to notify.
#[derive(Debug, Clone)]
struct Target {
    user_id: String,
    device_id: String,
    platform: String,
    token: String,
}

struct Pending {
    record: PushOutboxRecord,
    /// Decided on the first attempt; `None` until then.
    targets: Option<Vec<Target>>,
    attempts: u32,
    due: Instant,
}

/// The push worker; owned by the app and stopped by its shutdown token.
pub struct PushSender {
    cluster: Arc<Cluster>,
    registry: Arc<Registry>,
    gateway: String,
    http: reqwest::Client,
}

impl PushSender {
    /// A sender POSTing to `gateway`.
    pub fn new(cluster: Arc<Cluster>, registry: Arc<Registry>, gateway: String) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        PushSender {
            cluster,
            registry,
            gateway,
            http,
        }
    }

    /// Runs until `shutdown`.
    pub async fn run(self, mut inbox: mpsc::Receiver<PushOutboxRecord>, shutdown: CancellationToken) {
        let mut pending: HashMap<(String, u64), Pending> = HashMap::new();
        let mut next_scan = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                Some(record) = inbox.recv() => {
                    if pending.len() < MAX_PENDING {
                        let key = (record.channel_id.clone(), record.seq);
                        pending.entry(key).or_insert(Pending { record, targets: None, attempts: 0, due: Instant::now() });
                    }
                }
                _ = tick.tick() => {}
            }
            if Instant::now() >= next_scan {
                next_scan = Instant::now() + RESCAN_EVERY;
                match self.cluster.pending_pushes().await {
                    Ok(records) => {
                        for record in records {
                            if pending.len() >= MAX_PENDING {
                                break;
                            }
                            let key = (record.channel_id.clone(), record.seq);
                            pending.entry(key).or_insert(Pending {
                                record,
                                targets: None,
                                attempts: 0,
                                due: Instant::now(),
                            });
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "scanning push outbox"),
                }
            }
            let now = Instant::now();
            let due: Vec<(String, u64)> = pending
                .iter()
                .filter(|(_, p)| p.due <= now)
                .map(|(k, _)| k.clone())
                .take(64)
                .collect();
            for key in due {
                let Some(mut p) = pending.remove(&key) else { continue };
                if self.attempt(&mut p).await {
                    let cmd = Command::PushDone {
                        channel_id: key.0.clone(),
                        seq: key.1,
                    };
                    if let Err(e) = self.cluster.write(&key.0, cmd).await {
                        tracing::warn!(error = %e, "committing PushDone; will retry");
                        p.due = Instant::now() + FIRST_BACKOFF;
                        pending.insert(key, p);
                    }
                } else {
                    p.attempts += 1;
                    let backoff = FIRST_BACKOFF.saturating_mul(1 << p.attempts.min(8)).min(MAX_BACKOFF);
                    p.due = Instant::now() + backoff;
                    pending.insert(key, p);
                }
            }
        }
    }

    /// One attempt; true once every target has answered 2xx.
    async fn attempt(&self, p: &mut Pending) -> bool {
        if p.targets.is_none() {
            match self.targets(&p.record).await {
                Ok(t) => p.targets = Some(t),
                Err(e) => {
                    tracing::warn!(error = %e, "resolving push targets");
                    return false;
                }
            }
        }
        let Some(targets) = p.targets.as_mut() else {
            return false;
        };
        let mut left = Vec::new();
        for t in targets.drain(..) {
            let body = json!({
                "user_id": t.user_id, "device_id": t.device_id, "platform": t.platform, "token": t.token,
                "channel_id": p.record.channel_id, "seq": p.record.seq, "sender_id": p.record.sender_id,
                "preview": p.record.preview,
            });
            let ok = match self.http.post(&self.gateway).json(&body).send().await {
                Ok(r) if r.status().is_success() => true,
                Ok(r) => {
                    tracing::info!(status = %r.status(), "push gateway refused; will retry");
                    false
                }
                Err(e) => {
                    tracing::info!(error = %e, "push gateway unreachable; will retry");
                    false
                }
            };
            metrics::counter!("ringchat_push_total", "outcome" => if ok { "ok" } else { "retry" }).increment(1);
            if !ok {
                left.push(t);
            }
        }
        *targets = left;
        targets.is_empty()
    }

    /// Push-registered devices of recipients with no live connection right now.
    async fn targets(&self, record: &PushOutboxRecord) -> Result<Vec<Target>, ringchat_cluster::ClusterError> {
        let mut out = Vec::new();
        for user in &record.recipients {
            if self.registry.is_online(user) {
                continue;
            }
            for d in self.cluster.get_devices(user).await? {
                if let Some(push) = d.push {
                    out.push(Target {
                        user_id: user.clone(),
                        device_id: d.device_id,
                        platform: push.platform,
                        token: push.token,
                    });
                }
            }
        }
        Ok(out)
    }
}
