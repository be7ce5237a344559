//! A Jepsen-style workload and checker for fault tests.
//!
//! Writers send continuously, each on its own channel, retrying every message by its
//! `client_msg_id` on the next node until it is acked (bounded). Every ack is recorded with the
//! seq the server gave. After the faults heal, `check` reads every channel back from every
//! node and counts what a user would call data loss: acked messages missing or at another seq,
//! duplicates, gaps, and nodes that disagree on a channel's order.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ringchat_client::{HttpClient, Message};
use ringchat_cluster::placement::partition_of;
use ringchat_cluster::query::{execute, Query, QueryResult};
use ringchat_storage::Store;
use tokio::task::JoinHandle;

use crate::{new_user, TestUser};

/// A send is given up after this many attempts (100 ms apart).
const ATTEMPTS: u64 = 200;
/// Like a client that gives up on a node that does not answer and tries the next one.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);

/// Writers running against a cluster; `finish` stops them.
pub struct Workload {
    /// The writers' users (writer `w` owns `channels[w]`).
    pub users: Vec<TestUser>,
    /// One DM channel per writer.
    pub channels: Vec<String>,
    acked: Arc<Mutex<BTreeMap<(String, String), u64>>>,
    attempted: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    writers: Vec<JoinHandle<Duration>>,
}

/// What the writers did.
#[derive(Debug, Clone)]
pub struct History {
    /// Sends started.
    pub attempted: u64,
    /// (channel, client_msg_id) → seq of every acked send.
    pub acked: BTreeMap<(String, String), u64>,
    /// Longest time one message took from first attempt to ack (the write outage seen).
    pub max_unavailable: Duration,
}

/// The checker's counts; all but `acked` must be 0.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Acked messages.
    pub acked: usize,
    /// Acked messages missing, or at another seq, on some node.
    pub lost: usize,
    /// Messages present twice in a channel.
    pub duplicates: usize,
    /// Positions where a channel's seqs are not 1, 2, 3, …
    pub gaps: usize,
    /// Channels whose order differs between nodes.
    pub order_mismatches: usize,
}

impl Workload {
    /// Makes `writers` users (spread over `bases`), one DM channel each, and starts a writer per
    /// channel. Writer `w` sends first through `bases[w % len]` and retries on the next ones.
    pub async fn start(bases: &[String], writers: usize) -> Workload {
        let mut users = Vec::new();
        for i in 0..writers {
            users.push(new_user(&bases[i % bases.len()], "w").await);
        }
        let mut channels = Vec::new();
        for i in 0..writers {
            let peer = &users[(i + 1) % writers].user_id;
            channels.push(users[i].http.open_dm(peer).await.expect("open dm").channel_id);
        }
        let acked: Arc<Mutex<BTreeMap<(String, String), u64>>> = Arc::default();
        let attempted = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let mut handles = Vec::new();
        for (w, user) in users.iter().enumerate() {
            let cid = channels[w].clone();
            let token = user.token.clone();
            let mut order: Vec<String> = bases.to_vec();
            order.rotate_left(w % bases.len());
            let (acked, attempted, stop) = (acked.clone(), attempted.clone(), stop.clone());
            handles.push(tokio::spawn(async move {
                let mut worst = Duration::ZERO;
                for i in 0..1_000_000u64 {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let cmid = format!("w{w}-{i}");
                    attempted.fetch_add(1, Ordering::SeqCst);
                    let started = Instant::now();
                    for attempt in 0..ATTEMPTS {
                        let http = HttpClient::new(&order[(attempt % order.len() as u64) as usize]).with_token(&token);
                        let send = http.send_message(&cid, &cmid, &cmid);
                        if let Ok(Ok((_, sent))) = tokio::time::timeout(ATTEMPT_TIMEOUT, send).await {
                            acked
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .insert((cid.clone(), cmid.clone()), sent.seq);
                            worst = worst.max(started.elapsed());
                            break;
                        }
                        if stop.load(Ordering::SeqCst) && attempt > 50 {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
                worst
            }));
        }
        Workload {
            users,
            channels,
            acked,
            attempted,
            stop,
            writers: handles,
        }
    }

    /// Acked sends so far.
    pub fn acked_so_far(&self) -> usize {
        self.acked.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Stops the writers (each finishes its message in flight) and returns what they did.
    pub async fn finish(self) -> (Vec<TestUser>, Vec<String>, History) {
        self.stop.store(true, Ordering::SeqCst);
        let mut max_unavailable = Duration::ZERO;
        for w in self.writers {
            max_unavailable = max_unavailable.max(w.await.expect("writer"));
        }
        let acked = self.acked.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let history = History {
            attempted: self.attempted.load(Ordering::SeqCst),
            acked,
            max_unavailable,
        };
        (self.users, self.channels, history)
    }
}

/// A channel's full history through `base`, as `user` (bounded: ≤ 1,000 pages).
pub async fn read_channel(base: &str, user: &TestUser, channel: &str) -> Vec<Message> {
    let http = HttpClient::new(base).with_token(&user.token);
    let mut all: Vec<Message> = Vec::new();
    let mut after = 0;
    for _ in 0..1000 {
        let page = http
            .history(channel, None, Some(after), Some(500))
            .await
            .expect("history read");
        if let Some(last) = page.messages.last() {
            after = last.seq;
        }
        let more = page.has_more;
        all.extend(page.messages);
        if !more {
            break;
        }
    }
    all
}

/// One line with the run's counts: attempted, acked, lost, duplicates, gaps, order
/// mismatches and the worst write outage.
pub fn summary(history: &History, v: &Verdict) -> String {
    format!(
        "attempted {}, acked {}, lost {}, duplicates {}, gaps {}, order mismatches {}, max unavailability {:?}",
        history.attempted, v.acked, v.lost, v.duplicates, v.gaps, v.order_mismatches, history.max_unavailable
    )
}

/// Reads every channel back through every node in `bases` and counts violations.
pub async fn check(bases: &[String], users: &[TestUser], channels: &[String], history: &History) -> Verdict {
    let mut v = Verdict {
        acked: history.acked.len(),
        ..Verdict::default()
    };
    for (w, cid) in channels.iter().enumerate() {
        let mut first_order = None;
        for base in bases {
            let copy: Vec<_> = read_channel(base, &users[w], cid)
                .await
                .into_iter()
                .map(|m| (m.seq, m.client_msg_id))
                .collect();
            count_copy(&mut v, cid, copy, history, &mut first_order);
        }
    }
    v
}

/// Reads every channel straight from the store of each of its replicas (their nodes stopped)
/// and counts violations: a replica missing an acked message or holding it at another seq,
/// duplicates, gaps, and replicas whose copies differ. `dirs` maps node id → data dir;
/// `status` (cluster status JSON) names each partition's replicas.
pub fn check_replicas(
    dirs: &[(u64, PathBuf)],
    status: &serde_json::Value,
    channels: &[String],
    history: &History,
) -> Verdict {
    let partitions = status["partitions"].as_array().map_or(0, Vec::len) as u16;
    let mut stores: HashMap<u64, Store> = HashMap::new();
    let mut v = Verdict {
        acked: history.acked.len(),
        ..Verdict::default()
    };
    let top = history.acked.values().max().copied().unwrap_or(0) + 100_000;
    for cid in channels {
        let p = partition_of(cid, partitions);
        let replicas: Vec<u64> = status["partitions"][usize::from(p)]["replicas"]
            .as_array()
            .map(|r| r.iter().filter_map(serde_json::Value::as_u64).collect())
            .unwrap_or_default();
        assert!(!replicas.is_empty(), "no replicas listed for partition {p}");
        let mut first = None;
        for id in replicas {
            let dir = &dirs.iter().find(|(n, _)| *n == id).expect("data dir of a replica").1;
            let store = stores
                .entry(id)
                .or_insert_with(|| Store::open(dir).expect("open a replica's store"));
            let query = Query::Messages {
                channel_id: cid.clone(),
                from: 1,
                to: top,
            };
            let Ok(QueryResult::Messages(all)) = execute(store, p, &query) else {
                panic!("reading channel {cid} from node {id}'s store");
            };
            let copy: Vec<_> = all.into_iter().map(|m| (m.seq, m.client_msg_id)).collect();
            count_copy(&mut v, cid, copy, history, &mut first);
        }
    }
    v
}

/// One copy of channel `cid` as (seq, client_msg_id), ascending by storage order.
type Copy = Vec<(u64, Option<String>)>;

/// Counts what is wrong with one copy of a channel: gaps, duplicates, acked messages missing or
/// at another seq, and a difference from the first copy seen (`first`).
fn count_copy(v: &mut Verdict, cid: &str, copy: Copy, history: &History, first: &mut Option<Copy>) {
    let mut seen = HashSet::new();
    for (i, (seq, cmid)) in copy.iter().enumerate() {
        if *seq != i as u64 + 1 {
            v.gaps += 1;
        }
        if !seen.insert(cmid.clone()) {
            v.duplicates += 1;
        }
    }
    let by_cmid: BTreeMap<&str, u64> = copy
        .iter()
        .map(|(seq, cmid)| (cmid.as_deref().unwrap_or_default(), *seq))
        .collect();
    v.lost += history
        .acked
        .iter()
        .filter(|((c, cmid), seq)| c == cid && by_cmid.get(cmid.as_str()) != Some(seq))
        .count();
    match first {
        None => *first = Some(copy),
        Some(f) if *f != copy => v.order_mismatches += 1,
        Some(_) => {}
    }
}

/// Stops `nodes` (SIGTERM, after a moment for followers to apply the last commits), then
/// checks every channel in each replica's own store against `history` and asserts that
/// nothing is wrong. `nodes` pairs node ids with their processes; `layout` is a cluster
/// status taken before (it names each partition's replicas).
pub async fn stop_and_check_replicas(
    nodes: Vec<(u64, &mut crate::NodeProcess)>,
    layout: &serde_json::Value,
    channels: &[String],
    history: &History,
) {
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut dirs = Vec::new();
    for (id, node) in nodes {
        node.terminate();
        dirs.push((id, node.data_dir.clone()));
    }
    let r = check_replicas(&dirs, layout, channels, history);
    println!(
        "checker (every replica's store): lost {}, duplicates {}, gaps {}, copies that differ {}",
        r.lost, r.duplicates, r.gaps, r.order_mismatches
    );
    assert_eq!((r.lost, r.duplicates, r.gaps, r.order_mismatches), (0, 0, 0, 0));
}
