//! The calling side of the pipe (`proto/pipe.proto`): one bidirectional stream per peer that
//! carries many small calls per HTTP/2 frame.
//!
//! A call is queued; the stream's sender drains whatever is queued into one `PipeBatch` when
//! h2 asks for the next message, so calls made while a batch is on its way share the next one
//! (no timer: an idle pipe sends a lone call at once). Results come back in batches too and
//! are matched to their callers by id.
//!
//! A session is one open stream. When it ends (connection lost, peer shut down) every call in
//! flight fails with `Unavailable`, the same status a unary call on a broken channel gets, and
//! the next call opens a new session; tonic's channel reconnects underneath.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tonic::transport::Channel;
use tonic::{Request, Status};

use super::auth::ClusterSecret;
use super::peer_health::{GroupsWith, PeerHealth};
use super::pipe_proto::pipe_service_client::PipeServiceClient;
use super::pipe_proto::{Method, PipeBatch, PipeCall, PipeResult};
use super::{PIPE_MESSAGE_BYTES, WIRE_LEVEL_METADATA_KEY};

/// Calls queued for sending on one session; a caller waits (within its timeout) when full.
const CALL_QUEUE: usize = 4096;
/// A batch is closed once it holds this many calls...
pub const BATCH_CALLS: usize = 512;
/// ...or this many body bytes (a single larger call still goes alone).
pub const BATCH_BYTES: usize = 1 << 20;

/// The pipe to one peer. Cloning shares it.
#[derive(Clone)]
pub struct PeerPipe {
    shared: Arc<Shared>,
}

struct Shared {
    channel: Channel,
    /// The peer's cluster address: the `peer` label of this pipe's metrics.
    addr: String,
    /// Whether the peer answers (logged once per change, `peer_health.rs`).
    health: PeerHealth,
    secret: ClusterSecret,
    session: Mutex<Option<Arc<Session>>>,
    next_id: AtomicU64,
    /// Batches and calls sent so far, over every session.
    sent: Arc<SentCounts>,
    /// The wire level the peer announced when the newest session opened (0: none yet).
    peer_wire: Arc<AtomicU8>,
}

#[derive(Default)]
struct SentCounts {
    batches: AtomicU64,
    calls: AtomicU64,
}

/// One open stream: its send queue and the calls waiting for results.
struct Session {
    calls: mpsc::Sender<PipeCall>,
    state: Mutex<SessionState>,
}

enum SessionState {
    /// Calls waiting for their results, by id.
    /// A waiter gets the peer's result, or the status the session ended with (no answer).
    Open(HashMap<u64, oneshot::Sender<Result<PipeResult, Status>>>),
    /// The stream ended with this status; nothing may wait on the session any more.
    Ended(Status),
}

impl Session {
    fn state(&self) -> std::sync::MutexGuard<'_, SessionState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers call `id`; if the session already ended, the status it ended with.
    fn wait_for(&self, id: u64) -> Result<oneshot::Receiver<Result<PipeResult, Status>>, Status> {
        match &mut *self.state() {
            SessionState::Open(pending) => {
                let (tx, rx) = oneshot::channel();
                pending.insert(id, tx);
                Ok(rx)
            }
            SessionState::Ended(status) => Err(status.clone()),
        }
    }

    fn forget(&self, id: u64) {
        if let SessionState::Open(pending) = &mut *self.state() {
            pending.remove(&id);
        }
    }

    fn complete(&self, result: PipeResult) {
        let waiter = match &mut *self.state() {
            SessionState::Open(pending) => pending.remove(&result.id),
            SessionState::Ended(_) => None,
        };
        if let Some(waiter) = waiter {
            let _ = waiter.send(Ok(result));
        }
    }

    /// Ends the session: every waiting call fails with `status`, the stream's own end (e.g.
    /// `Unauthenticated` for a wrong secret, `Unavailable` for a lost connection).
    fn end(&self, status: &Status) {
        let before = std::mem::replace(&mut *self.state(), SessionState::Ended(status.clone()));
        if let SessionState::Open(pending) = before {
            for (_, waiter) in pending {
                let _ = waiter.send(Err(status.clone()));
            }
        }
    }

    fn is_ended(&self) -> bool {
        matches!(*self.state(), SessionState::Ended(_))
    }
}

impl PeerPipe {
    /// A pipe to the peer at `addr` over `channel` (not opened until the first call),
    /// authenticated with `secret`; `groups_with` counts the groups a peer-down line names.
    pub fn new(addr: &str, channel: Channel, secret: ClusterSecret, groups_with: GroupsWith) -> Self {
        PeerPipe {
            shared: Arc::new(Shared {
                channel,
                addr: addr.to_string(),
                health: PeerHealth::new(addr, groups_with),
                secret,
                session: Mutex::new(None),
                next_id: AtomicU64::new(1),
                sent: Arc::default(),
                peer_wire: Arc::default(),
            }),
        }
    }

    /// Calls `method` with `request` and waits at most `ttl` for its reply. Failures are the
    /// statuses the unary RPC of the same name would end with (`Unavailable` for a lost
    /// connection, `DeadlineExceeded` when out of time, the handler's own status otherwise).
    pub async fn call<Req, Rep>(&self, method: Method, request: &Req, ttl: Duration) -> Result<Rep, Status>
    where
        Req: prost::Message,
        Rep: prost::Message + Default,
    {
        let body = request.encode_to_vec();
        let started = std::time::Instant::now();
        let result = match tokio::time::timeout(ttl, self.call_raw(method, body, ttl)).await {
            Ok(Ok(result)) => {
                self.shared.health.answered();
                result
            }
            Ok(Err(status)) => {
                self.shared.health.failed(status.message());
                return Err(status);
            }
            Err(_) => {
                self.shared.health.failed("no answer in time");
                return Err(Status::deadline_exceeded(format!("no answer within {ttl:?}")));
            }
        };
        metrics::histogram!(
            "ringchat_peer_call_seconds",
            "method" => method.as_str_name(),
            "peer" => self.shared.addr.clone()
        )
        .record(started.elapsed().as_secs_f64());
        if result.code != tonic::Code::Ok as i32 {
            return Err(status_of(result));
        }
        Rep::decode(result.body.as_slice()).map_err(|e| Status::internal(format!("undecodable reply: {e}")))
    }

    async fn call_raw(&self, method: Method, body: Vec<u8>, ttl: Duration) -> Result<PipeResult, Status> {
        let session = self.session();
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let result = session.wait_for(id)?;
        // Forgets the call if the caller gives up (timeout or drop) before its result.
        let guard = ForgetOnDrop { session: &session, id };
        let call = PipeCall {
            id,
            method: method as i32,
            body,
            timeout_ms: u32::try_from(ttl.as_millis()).unwrap_or(u32::MAX),
        };
        // A failed send means the stream is ending; the session's end then answers this call
        // with the stream's status (registered above), so the caller learns why.
        let _ = session.calls.send(call).await;
        // A session that ended is no answer from the peer: its status is an error here, so
        // the peer's health counts it as a failure, not as a reply.
        let result = result
            .await
            .unwrap_or_else(|_| Err(Status::unavailable("pipe to peer lost")));
        std::mem::forget(guard);
        result
    }

    /// The wire level the peer announced on the newest stream (`WIRE_LEVEL`), 0 if no
    /// stream has been opened yet. A peer of a release before levels announces none: 1.
    pub fn peer_wire_level(&self) -> u8 {
        self.shared.peer_wire.load(Ordering::Relaxed)
    }

    /// The peer's wire level, opening a stream to learn it if none is open yet and waiting
    /// for its answer at most `within`; 0 if it did not answer in time. A caller that must
    /// choose a format by level (a snapshot's) asks this, not `peer_wire_level`: right after
    /// a restart no stream has been opened and the level reads 0.
    pub async fn announced_wire_level(&self, within: Duration) -> u8 {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let level = self.peer_wire_level();
            if level > 0 || tokio::time::Instant::now() >= deadline {
                return level;
            }
            drop(self.session());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Batches and calls sent on this pipe so far: calls / batches is how much it batched.
    pub fn sent(&self) -> (u64, u64) {
        let sent = &self.shared.sent;
        (sent.batches.load(Ordering::Relaxed), sent.calls.load(Ordering::Relaxed))
    }

    /// The open session, or a new one if there is none or it ended.
    fn session(&self) -> Arc<Session> {
        let mut current = self.shared.session.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(session) = current.as_ref().filter(|s| !s.is_ended()) {
            return session.clone();
        }
        let (calls, queued) = mpsc::channel(CALL_QUEUE);
        let session = Arc::new(Session {
            calls,
            state: Mutex::new(SessionState::Open(HashMap::new())),
        });
        *current = Some(session.clone());
        tokio::spawn(run_session(
            self.shared.channel.clone(),
            self.shared.secret.clone(),
            batches(queued, self.shared.sent.clone()),
            Arc::downgrade(&session),
            self.shared.peer_wire.clone(),
        ));
        session
    }
}

struct ForgetOnDrop<'a> {
    session: &'a Session,
    id: u64,
}

impl Drop for ForgetOnDrop<'_> {
    fn drop(&mut self) {
        self.session.forget(self.id);
    }
}

/// Owns one stream: sends the queued calls in batches and hands results to their callers until
/// the stream ends, then ends the session. The task ends by itself when the connection is lost,
/// the peer ends the stream (shutdown), or every handle on the session is gone (the queue
/// closes, so the request stream ends and the peer closes its side).
async fn run_session(
    channel: Channel,
    secret: ClusterSecret,
    requests: impl futures_util::Stream<Item = PipeBatch> + Send + 'static,
    session: std::sync::Weak<Session>,
    peer_wire: Arc<AtomicU8>,
) {
    let mut client = PipeServiceClient::new(channel)
        .max_decoding_message_size(PIPE_MESSAGE_BYTES)
        .max_encoding_message_size(PIPE_MESSAGE_BYTES);
    let mut request = Request::new(requests);
    secret.attach(&mut request);
    let outcome: Result<(), Status> = async {
        let response = client.pipe(request).await?;
        peer_wire.store(wire_level_of(response.metadata()), Ordering::Relaxed);
        let mut results = response.into_inner();
        while let Some(batch) = results.message().await? {
            let Some(session) = session.upgrade() else {
                return Ok(());
            };
            for result in batch.results {
                session.complete(result);
            }
        }
        Ok(())
    }
    .await;
    let status = match outcome {
        Ok(()) => Status::unavailable("peer closed the pipe"),
        Err(status) => {
            tracing::debug!(code = ?status.code(), message = status.message(), "pipe to peer ended");
            status
        }
    };
    if let Some(session) = session.upgrade() {
        session.end(&status);
    }
}

/// The wire level a pipe stream's answer announces: 1 when it names none (a release before
/// levels), what it names otherwise.
fn wire_level_of(metadata: &MetadataMap) -> u8 {
    metadata
        .get(WIRE_LEVEL_METADATA_KEY)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

/// The request stream: each item is every call queued at that moment (up to the batch limits).
fn batches(
    queued: mpsc::Receiver<PipeCall>,
    sent: Arc<SentCounts>,
) -> impl futures_util::Stream<Item = PipeBatch> + Send + 'static {
    futures_util::stream::unfold((queued, sent), |(mut queued, sent)| async move {
        let first = queued.recv().await?;
        let calls = drain_batch(first, &mut queued, |call| call.body.len());
        sent.batches.fetch_add(1, Ordering::Relaxed);
        sent.calls.fetch_add(calls.len() as u64, Ordering::Relaxed);
        metrics::counter!("ringchat_pipe_batches_sent_total").increment(1);
        metrics::counter!("ringchat_pipe_calls_sent_total").increment(calls.len() as u64);
        Some((
            PipeBatch {
                calls,
                results: Vec::new(),
                sent_unix_ms: crate::clock::unix_ms(),
            },
            (queued, sent),
        ))
    })
}

/// `first` and whatever else is queued right now, up to `BATCH_CALLS` items or `BATCH_BYTES`
/// of bodies (`size`): one batch of either side of a pipe.
pub(super) fn drain_batch<T>(first: T, queued: &mut mpsc::Receiver<T>, size: impl Fn(&T) -> usize) -> Vec<T> {
    let mut bytes = size(&first);
    let mut batch = vec![first];
    while batch.len() < BATCH_CALLS && bytes < BATCH_BYTES {
        match queued.try_recv() {
            Ok(item) => {
                bytes += size(&item);
                batch.push(item);
            }
            Err(_) => break,
        }
    }
    batch
}

/// The status a failed result stands for, with its metadata (leader hints) restored.
fn status_of(result: PipeResult) -> Status {
    let mut metadata = MetadataMap::new();
    for (key, value) in result.metadata {
        if let (Ok(key), Ok(value)) = (MetadataKey::from_bytes(key.as_bytes()), MetadataValue::try_from(value)) {
            metadata.insert(key, value);
        }
    }
    Status::with_metadata(tonic::Code::from_i32(result.code), result.message, metadata)
}

/// The result that carries `status` (code, message and its ASCII metadata) for call `id`.
pub fn result_of_status(id: u64, status: &Status) -> PipeResult {
    let metadata = status
        .metadata()
        .iter()
        .filter_map(|entry| match entry {
            tonic::metadata::KeyAndValueRef::Ascii(key, value) => {
                Some((key.as_str().to_string(), value.to_str().ok()?.to_string()))
            }
            tonic::metadata::KeyAndValueRef::Binary(..) => None,
        })
        .collect();
    PipeResult {
        id,
        code: status.code() as i32,
        body: Vec::new(),
        message: status.message().to_string(),
        metadata,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_stream_without_a_wire_level_is_a_release_before_levels() {
        let mut metadata = MetadataMap::new();
        assert_eq!(super::wire_level_of(&metadata), 1);
        metadata.insert(super::WIRE_LEVEL_METADATA_KEY, MetadataValue::from(2u64));
        assert_eq!(super::wire_level_of(&metadata), 2);
        metadata.insert(super::WIRE_LEVEL_METADATA_KEY, MetadataValue::from_static("junk"));
        assert_eq!(super::wire_level_of(&metadata), 1);
    }

    use super::*;

    #[test]
    fn a_status_survives_the_round_trip_with_its_leader_hint() {
        let hint = crate::leader_calls::LeaderHint {
            id: 3,
            addr: Some("127.0.0.3:7100".into()),
        };
        let status = super::super::node_server::not_leader(9, Some(&hint));
        let back = status_of(result_of_status(7, &status));
        assert_eq!(back.code(), tonic::Code::FailedPrecondition);
        assert_eq!(back.message(), status.message());
        assert_eq!(super::super::node_server::leader_hint(&back), Some(hint));
    }
}
