//! Pieces of a Jepsen-style checker: writers that send continuously and retry by
//! `client_msg_id` until acked, and a verdict over what every node returns afterwards —
//! every acked message present exactly once at its acked seq, every channel gap-free, and the
//! same order on every node. Every loop is bounded in time and count.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ringchat_client::{HttpClient, Message};
use tokio::task::JoinHandle;

/// `(channel_id, client_msg_id)` → acked seq.
pub type Acked = BTreeMap<(String, String), u64>;

/// Writers sending `w{n}-{i}` messages (text = client_msg_id) until stopped.
pub struct Writers {
    tasks: Vec<JoinHandle<Duration>>,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Acked>>,
    attempted: Arc<AtomicU64>,
}

/// What the writers did.
#[derive(Debug, Clone)]
pub struct WriteLog {
    /// Every acked message.
    pub acked: Acked,
    /// Messages tried (acked or not).
    pub attempted: u64,
    /// Longest time one message took from first try to ack.
    pub max_unavailable: Duration,
}

impl Writers {
    /// One writer per `(channel_id, token)`; message `i` of writer `n` goes to
    /// `bases[(i + attempt) % bases.len()]`, retried by its client_msg_id (each try ≤ 5 s, the
    /// message given up after `give_up`) until acked.
    pub fn start(writers: Vec<(String, String)>, bases: Vec<String>, give_up: Duration) -> Writers {
        assert!(!bases.is_empty());
        let stop = Arc::new(AtomicBool::new(false));
        let acked: Arc<Mutex<Acked>> = Arc::default();
        let attempted = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for (w, (cid, token)) in writers.into_iter().enumerate() {
            let (bases, stop, acked, attempted) = (bases.clone(), stop.clone(), acked.clone(), attempted.clone());
            tasks.push(tokio::spawn(async move {
                let mut worst = Duration::ZERO;
                for i in 0..100_000u64 {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let cmid = format!("w{w}-{i}");
                    attempted.fetch_add(1, Ordering::SeqCst);
                    let started = Instant::now();
                    for attempt in 0..10_000u64 {
                        if stop.load(Ordering::SeqCst) || started.elapsed() > give_up {
                            break;
                        }
                        let base = &bases[((i + attempt) % bases.len() as u64) as usize];
                        let http = HttpClient::new(base).with_token(&token);
                        let sent =
                            tokio::time::timeout(Duration::from_secs(5), http.send_message(&cid, &cmid, &cmid)).await;
                        if let Ok(Ok((_, sent))) = sent {
                            acked.lock().unwrap().insert((cid.clone(), cmid.clone()), sent.seq);
                            worst = worst.max(started.elapsed());
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
                worst
            }));
        }
        Writers {
            tasks,
            stop,
            acked,
            attempted,
        }
    }

    /// Messages acked so far.
    pub fn acked_count(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    /// Stops the writers (a message in retry is given up) and returns what they did.
    pub async fn stop(self) -> WriteLog {
        self.stop.store(true, Ordering::SeqCst);
        let mut max_unavailable = Duration::ZERO;
        for t in self.tasks {
            max_unavailable = max_unavailable.max(t.await.expect("writer task"));
        }
        let acked = self.acked.lock().unwrap().clone();
        WriteLog {
            acked,
            attempted: self.attempted.load(Ordering::SeqCst),
            max_unavailable,
        }
    }
}

/// Reads the whole history of `cid` (≤ 1000 pages of 500).
pub async fn read_channel(http: &HttpClient, cid: &str) -> anyhow::Result<Vec<Message>> {
    let mut all = Vec::new();
    let mut after = 0;
    for _ in 0..1000 {
        let page = http.history(cid, None, Some(after), Some(500)).await?;
        if let Some(last) = page.messages.last() {
            after = last.seq;
        }
        let more = page.has_more;
        all.extend(page.messages);
        if !more {
            return Ok(all);
        }
    }
    anyhow::bail!("channel {cid}: more than 1000 pages")
}

/// Anomalies found in one or more channel reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Anomalies {
    /// Acked messages missing, or present at another seq than acked.
    pub lost: usize,
    /// Messages whose client_msg_id appears more than once in a channel.
    pub duplicates: usize,
    /// Positions whose seq is not its index + 1.
    pub gaps: usize,
}

impl std::ops::AddAssign for Anomalies {
    fn add_assign(&mut self, o: Anomalies) {
        self.lost += o.lost;
        self.duplicates += o.duplicates;
        self.gaps += o.gaps;
    }
}

/// Checks one read of channel `cid` against the acked messages; `lost_ids` collects the
/// client_msg_ids of lost messages.
pub fn check_channel(cid: &str, msgs: &[Message], acked: &Acked, lost_ids: &mut Vec<String>) -> Anomalies {
    let mut a = Anomalies::default();
    let mut seen = HashSet::new();
    for (i, m) in msgs.iter().enumerate() {
        if m.seq != i as u64 + 1 {
            a.gaps += 1;
        }
        if !seen.insert(m.client_msg_id.clone()) {
            a.duplicates += 1;
        }
    }
    let by_cmid: BTreeMap<&str, u64> = msgs
        .iter()
        .map(|m| (m.client_msg_id.as_deref().unwrap_or_default(), m.seq))
        .collect();
    for ((c, cmid), seq) in acked {
        if c == cid && by_cmid.get(cmid.as_str()) != Some(seq) {
            a.lost += 1;
            lost_ids.push(format!("{cid}/{cmid}@{seq}"));
        }
    }
    a
}

/// `(seq, client_msg_id)` of each message: what two nodes must agree on.
pub fn order_of(msgs: &[Message]) -> Vec<(u64, Option<String>)> {
    msgs.iter().map(|m| (m.seq, m.client_msg_id.clone())).collect()
}
