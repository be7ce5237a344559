//! One benchmark client connection: connect from a chosen loopback source address, `hello`,
//! read the catch-up up to `caught_up`, then send what the engine queues and time every
//! `message` that arrives.
//!
//! Frames are parsed into a borrowed struct with only the fields the loadgen reads, not a
//! `serde_json::Value`: at hundreds of thousands of deliveries per second the loadgen's own
//! CPU decides whether it, rather than the server, is the bottleneck.

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::source_addr::{connect_from, loopback_target};
use crate::stamp::{now_ns, Stamp};

/// Histogram shards: connections record into `index % SHARDS`, so two runtime threads rarely
/// meet on one lock and memory stays fixed (one 3-digit histogram is ~180 KB; one per
/// connection would cost gigabytes at 10k connections).
const SHARDS: usize = 16;
/// Longest latency recorded, µs (one hour); larger values are clamped to it.
const MAX_LATENCY_US: u64 = 3_600_000_000;
/// Interval of the keep-alive `ping` frame: well under the server's 2 × 15 s idle limit.
const PING_EVERY: Duration = Duration::from_secs(10);
/// Longest wait from TCP connect to `caught_up`.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A latency histogram in µs, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("static histogram bounds")
}

/// Counters and histograms every connection of a run adds to; the engine reads and resets
/// them between steps.
pub struct Shared {
    /// Current step: messages stamped with another step count as `stale`, not as latency.
    pub step: AtomicU32,
    /// `send` frames handed to a connection.
    pub sent: AtomicU64,
    /// Sends the loadgen could not queue (a connection's queue was full or it was closed).
    pub dropped: AtomicU64,
    /// `sent` replies (durable commits acknowledged to the sender).
    pub acked: AtomicU64,
    /// `message` frames of the current step received, at every recipient.
    pub delivered: AtomicU64,
    /// Recipient deliveries the current step's sends should cause.
    pub expected: AtomicU64,
    /// `message` frames from an earlier step (arrived after that step was measured).
    pub stale: AtomicU64,
    /// Messages a connection had already received (a new leader delivers its last commits
    /// again; clients drop them by `(channel_id, seq)`, as PROTOCOL says): counted, not timed.
    pub duplicates: AtomicU64,
    /// `error` frames, failed connects and unexpected closes.
    pub errors: AtomicU64,
    /// The first error of the step, as text.
    pub first_error: Mutex<Option<String>>,
    /// End-to-end latency (scheduled send → received), µs, sharded.
    pub latency: Vec<Mutex<Histogram<u64>>>,
    /// Time from starting to connect to `caught_up`, µs (the catch-up storm's figure).
    pub ready: Mutex<Histogram<u64>>,
    /// Deliveries slower than `SLOW_US` since the last progress line (where a tail comes from).
    pub slow: AtomicU64,
    /// The slowest delivery since the last progress line, µs.
    pub worst_us: AtomicU64,
}

/// A delivery slower than this counts as slow in the progress lines (µs).
pub const SLOW_US: u64 = 100_000;

impl Shared {
    /// Empty counters for step 0.
    pub fn new() -> Shared {
        Shared {
            step: AtomicU32::new(0),
            sent: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            expected: AtomicU64::new(0),
            stale: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            first_error: Mutex::new(None),
            latency: (0..SHARDS).map(|_| Mutex::new(new_histogram())).collect(),
            ready: Mutex::new(new_histogram()),
            slow: AtomicU64::new(0),
            worst_us: AtomicU64::new(0),
        }
    }

    /// Counts an error and keeps the first one's text.
    pub fn error(&self, what: impl FnOnce() -> String) {
        self.errors.fetch_add(1, Relaxed);
        let mut first = self.first_error.lock().unwrap_or_else(|e| e.into_inner());
        if first.is_none() {
            *first = Some(what());
        }
    }

    /// All latency shards merged, and the shards reset.
    pub fn take_latency(&self) -> Histogram<u64> {
        let mut all = new_histogram();
        for shard in &self.latency {
            let mut h = shard.lock().unwrap_or_else(|e| e.into_inner());
            // Same bounds everywhere, so `add` cannot fail.
            let _ = all.add(&*h);
            h.reset();
        }
        all
    }

    /// The ready-time histogram, reset.
    pub fn take_ready(&self) -> Histogram<u64> {
        let mut h = self.ready.lock().unwrap_or_else(|e| e.into_inner());
        let out = h.clone();
        h.reset();
        out
    }
}

impl Default for Shared {
    fn default() -> Self {
        Shared::new()
    }
}

/// What one connection is.
#[derive(Debug, Clone)]
pub struct ConnSpec {
    /// Connection number (picks the histogram shard).
    pub index: usize,
    /// Node (or relay) base URL, `http://127.0.0.1:port`.
    pub url: String,
    /// Session token sent in `hello`.
    pub token: String,
    /// Loopback source address to bind.
    pub source: Ipv4Addr,
    /// Acknowledge received messages once a second, as real clients do (moves the cursor).
    pub ack: bool,
    /// Users to `presence_subscribe` to after `caught_up`.
    pub presence: Vec<String>,
}

/// The fields of a server frame the loadgen reads; everything else is skipped unparsed.
#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    channel_id: Option<Cow<'a, str>>,
    #[serde(default)]
    seq: Option<u64>,
    #[serde(default, borrow)]
    code: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    message: Option<Cow<'a, str>>,
}

/// Runs one connection until its queue's senders are dropped (then it closes politely) or the
/// socket fails. `ready` is answered once `caught_up` arrived (or connecting failed);
/// `connect_permit` caps how many connections handshake at once.
pub async fn run(
    spec: ConnSpec,
    mut outgoing: mpsc::Receiver<String>,
    shared: Arc<Shared>,
    connect_permit: Arc<Semaphore>,
    ready: oneshot::Sender<anyhow::Result<()>>,
) {
    let started = Instant::now();
    let permit = connect_permit.acquire_owned().await;
    let opened = tokio::time::timeout(READY_TIMEOUT, open(&spec, &shared))
        .await
        .context("no caught_up within 60 s")
        .and_then(|r| r);
    drop(permit);
    let mut ws = match opened {
        Ok(ws) => ws,
        Err(e) => {
            shared.error(|| format!("connection {}: {e:#}", spec.index));
            let _ = ready.send(Err(e));
            return;
        }
    };
    record(&shared.ready, started.elapsed().as_micros() as u64);
    let _ = ready.send(Ok(()));
    if !spec.presence.is_empty() {
        let frame = json!({"type": "presence_subscribe", "ref": "presence", "user_ids": spec.presence});
        let _ = ws.send(WsMessage::Text(frame.to_string().into())).await;
    }
    let shard = &shared.latency[spec.index % SHARDS];
    let mut to_ack: HashMap<String, u64> = HashMap::new();
    let mut seen = Seen::default();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last_frame_out = Instant::now();
    loop {
        tokio::select! {
            biased;
            incoming = ws.next() => match incoming {
                Some(Ok(WsMessage::Text(t))) => on_frame(&t, &shared, shard, &mut seen, spec.ack.then_some(&mut to_ack)),
                Some(Ok(WsMessage::Close(c))) => {
                    shared.error(|| format!("connection {}: closed by server: {c:?}", spec.index));
                    return;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    shared.error(|| format!("connection {}: {e}", spec.index));
                    return;
                }
                None => {
                    shared.error(|| format!("connection {}: ended", spec.index));
                    return;
                }
            },
            out = outgoing.recv() => match out {
                Some(text) => {
                    last_frame_out = Instant::now();
                    if let Err(e) = ws.send(WsMessage::Text(text.into())).await {
                        shared.error(|| format!("connection {}: send: {e}", spec.index));
                        return;
                    }
                }
                None => {
                    let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
                    return;
                }
            },
            _ = tick.tick() => {
                for (channel_id, seq) in to_ack.drain() {
                    let frame = json!({"type": "ack", "channel_id": channel_id, "seq": seq});
                    if ws.send(WsMessage::Text(frame.to_string().into())).await.is_err() {
                        break;
                    }
                    last_frame_out = Instant::now();
                }
                if last_frame_out.elapsed() >= PING_EVERY {
                    last_frame_out = Instant::now();
                    let _ = ws.send(WsMessage::Text(r#"{"type":"ping"}"#.into())).await;
                }
            }
        }
    }
}

type Socket = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// TCP connect from the spec's source address, WebSocket handshake, `hello`, and the catch-up
/// (whose messages are timed and counted like live ones).
async fn open(spec: &ConnSpec, shared: &Shared) -> anyhow::Result<Socket> {
    let target = loopback_target(&spec.url)?;
    let tcp = connect_from(spec.source, target)
        .await
        .with_context(|| format!("connect {target} from {}", spec.source))?;
    // Small buffers: the loadgen holds thousands of sockets and frames are small. tungstenite
    // defaults to 128 KiB of read buffer per socket.
    let config = WebSocketConfig::default()
        .read_buffer_size(8 << 10)
        .write_buffer_size(0)
        .max_message_size(Some(16 << 20));
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(format!("ws://{target}/v1/ws"), tcp, Some(config))
        .await
        .context("websocket handshake")?;
    let hello = json!({"type": "hello", "token": spec.token});
    ws.send(WsMessage::Text(hello.to_string().into())).await?;
    let shard = &shared.latency[spec.index % SHARDS];
    loop {
        match ws.next().await {
            Some(Ok(WsMessage::Text(t))) => {
                let is_caught_up =
                    t.contains("caught_up") && serde_json::from_str::<Frame>(&t).is_ok_and(|f| f.kind == "caught_up");
                if is_caught_up {
                    return Ok(ws);
                }
                on_frame(&t, shared, shard, &mut Seen::default(), None);
            }
            Some(Ok(WsMessage::Close(c))) => anyhow::bail!("closed during hello: {c:?}"),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.into()),
            None => anyhow::bail!("connection ended during hello"),
        }
    }
}

/// The messages of the current step one connection has received, by stamp id: what a client
/// de-duplicating by `(channel_id, seq)` would drop (a stamp id names one message).
#[derive(Default)]
struct Seen {
    step: u32,
    ids: std::collections::HashSet<u64>,
}

impl Seen {
    /// True the first time message `id` of `step` arrives; a new step forgets the last one's.
    fn first(&mut self, step: u32, id: u64) -> bool {
        if step != self.step {
            self.step = step;
            self.ids.clear();
        }
        self.ids.insert(id)
    }
}

/// Accounts for one server frame.
fn on_frame(
    text: &str,
    shared: &Shared,
    shard: &Mutex<Histogram<u64>>,
    seen: &mut Seen,
    to_ack: Option<&mut HashMap<String, u64>>,
) {
    let Ok(frame) = serde_json::from_str::<Frame>(text) else {
        shared.error(|| format!("undecodable frame: {text:.200}"));
        return;
    };
    match &*frame.kind {
        "message" => {
            let received = now_ns();
            if let (Some(ack), Some(cid), Some(seq)) = (to_ack, &frame.channel_id, frame.seq) {
                let entry = ack.entry(cid.to_string()).or_insert(0);
                *entry = (*entry).max(seq);
            }
            let Some(stamp) = frame.text.as_deref().and_then(Stamp::parse) else {
                return;
            };
            if stamp.step != shared.step.load(Relaxed) {
                shared.stale.fetch_add(1, Relaxed);
                return;
            }
            if !seen.first(stamp.step, stamp.id) {
                shared.duplicates.fetch_add(1, Relaxed);
                return;
            }
            shared.delivered.fetch_add(1, Relaxed);
            let us = received.saturating_sub(stamp.scheduled_ns) / 1000;
            if us > SLOW_US {
                shared.slow.fetch_add(1, Relaxed);
            }
            shared.worst_us.fetch_max(us, Relaxed);
            record(shard, us);
        }
        "sent" => {
            shared.acked.fetch_add(1, Relaxed);
        }
        "error" => shared.error(|| {
            format!(
                "error frame: {} {}",
                frame.code.as_deref().unwrap_or("?"),
                frame.message.as_deref().unwrap_or("")
            )
        }),
        _ => {}
    }
}

/// Records `us` (clamped into the histogram's range).
fn record(h: &Mutex<Histogram<u64>>, us: u64) {
    let mut h = h.lock().unwrap_or_else(|e| e.into_inner());
    h.saturating_record(us.clamp(1, MAX_LATENCY_US));
}
