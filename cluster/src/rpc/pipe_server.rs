//! The receiving side of the pipe: serves each call of a `PipeBatch` with the same handler as
//! the unary RPC of that name, concurrently, and sends results back in batches as they finish.
//!
//! Calls run concurrently because one peer's calls span many partitions, and a slow one (a
//! write waiting for its commit) must not hold up the heartbeats behind it; deliveries, which
//! never wait, are served in order. All of a stream's calls are polled by its reader task.
//! Each stream has at most `CALLS_IN_FLIGHT` calls running; beyond that it stops reading, and
//! h2 flow control pushes back on the sender.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status, Streaming};

use super::member_proto::member_service_server::MemberService;
use super::member_server::MemberRpcService;
use super::node_server::NodeRpcService;
use super::pipe::{drain_batch, result_of_status};
use super::pipe_proto::pipe_service_server::PipeService;
use super::pipe_proto::{Method, PipeBatch, PipeCall, PipeResult};
use super::proto::node::node_service_server::NodeService;
use super::proto::raft_service_server::RaftService;
use super::raft_server::RaftRpcService;
use super::{WIRE_LEVEL, WIRE_LEVEL_METADATA_KEY};

/// Calls of one stream that may run at once.
const CALLS_IN_FLIGHT: usize = 4096;

/// The handlers a call can reach: the node's Raft, node and member services.
pub struct PipeRpcService {
    handlers: Arc<Handlers>,
    shutdown: CancellationToken,
}

struct Handlers {
    raft: Arc<RaftRpcService>,
    node: Option<Arc<NodeRpcService>>,
    member: Option<Arc<MemberRpcService>>,
}

impl PipeRpcService {
    /// Serves calls with these services; every stream ends when `shutdown` is cancelled (an
    /// open stream would otherwise hold the server's graceful shutdown forever).
    pub fn new(
        raft: Arc<RaftRpcService>,
        node: Option<Arc<NodeRpcService>>,
        member: Option<Arc<MemberRpcService>>,
        shutdown: CancellationToken,
    ) -> Self {
        PipeRpcService {
            handlers: Arc::new(Handlers { raft, node, member }),
            shutdown,
        }
    }
}

/// Decodes `body`, runs `handler` on it and encodes its reply.
async fn unary<Req, Rep, F, Fut>(body: &[u8], handler: F) -> Result<Vec<u8>, Status>
where
    Req: prost::Message + Default,
    Rep: prost::Message,
    F: FnOnce(Request<Req>) -> Fut,
    Fut: Future<Output = Result<Response<Rep>, Status>>,
{
    let request = Req::decode(body).map_err(|e| Status::invalid_argument(format!("undecodable call: {e}")))?;
    Ok(handler(Request::new(request)).await?.into_inner().encode_to_vec())
}

impl Handlers {
    async fn serve(&self, call: &PipeCall) -> Result<Vec<u8>, Status> {
        let body = call.body.as_slice();
        let unimplemented = |what: &str| Status::unimplemented(format!("this node does not serve {what}"));
        match Method::try_from(call.method) {
            Ok(Method::AppendEntries) => unary(body, |r| self.raft.append_entries(r)).await,
            Ok(Method::Vote) => unary(body, |r| self.raft.vote(r)).await,
            Ok(Method::PreVote) => unary(body, |r| self.raft.pre_vote(r)).await,
            Ok(Method::TransferLeader) => unary(body, |r| self.raft.transfer_leader(r)).await,
            Ok(Method::Write) => match &self.node {
                Some(node) => unary(body, |r| node.write(r)).await,
                None => Err(unimplemented("writes")),
            },
            Ok(Method::Read) => match &self.node {
                Some(node) => unary(body, |r| node.read(r)).await,
                None => Err(unimplemented("reads")),
            },
            Ok(Method::Deliver) => match &self.member {
                Some(member) => unary(body, |r| member.deliver(r)).await,
                None => Err(unimplemented("deliveries")),
            },
            Ok(Method::Beat) => match &self.member {
                Some(member) => unary(body, |r| member.beat(r)).await,
                None => Err(unimplemented("beats")),
            },
            Ok(Method::Unspecified) | Err(_) => Err(Status::unimplemented(format!("unknown method {}", call.method))),
        }
    }

    /// The result of `call`, within the time its caller waits.
    async fn answer(&self, call: PipeCall) -> PipeResult {
        let started = std::time::Instant::now();
        let outcome = if call.timeout_ms == 0 {
            self.serve(&call).await
        } else {
            let ttl = Duration::from_millis(u64::from(call.timeout_ms));
            tokio::time::timeout(ttl, self.serve(&call))
                .await
                .unwrap_or_else(|_| Err(Status::deadline_exceeded("out of time")))
        };
        let method = Method::try_from(call.method).unwrap_or(Method::Unspecified);
        metrics::histogram!("ringchat_peer_serve_seconds", "method" => method.as_str_name())
            .record(started.elapsed().as_secs_f64());
        match outcome {
            Ok(body) => PipeResult {
                id: call.id,
                code: tonic::Code::Ok as i32,
                body,
                message: String::new(),
                metadata: Default::default(),
            },
            Err(status) => result_of_status(call.id, &status),
        }
    }
}

type ResultStream = Pin<Box<dyn futures_util::Stream<Item = Result<PipeBatch, Status>> + Send>>;

#[tonic::async_trait]
impl PipeService for PipeRpcService {
    type PipeStream = ResultStream;

    async fn pipe(&self, request: Request<Streaming<PipeBatch>>) -> Result<Response<ResultStream>, Status> {
        let peer = request
            .remote_addr()
            .map_or_else(|| "unknown".to_string(), |a| a.to_string());
        let incoming = request.into_inner();
        let (results, finished) = mpsc::channel(CALLS_IN_FLIGHT);
        tokio::spawn(read_calls(
            peer,
            incoming,
            self.handlers.clone(),
            results,
            self.shutdown.clone(),
        ));
        let stream = result_batches(finished, self.shutdown.clone());
        let mut response = Response::new(Box::pin(stream) as ResultStream);
        response
            .metadata_mut()
            .insert(WIRE_LEVEL_METADATA_KEY, MetadataValue::from(u64::from(WIRE_LEVEL)));
        Ok(response)
    }
}

/// Reads the caller's batches and serves their calls until the caller ends the stream, the
/// connection breaks or the server shuts down; then finishes the calls still running (each is
/// bounded by its caller's timeout) unless shutting down.
///
/// The calls run on this task, polled together with the stream (`FuturesUnordered`), not in a
/// task each: a call that finishes is answered from here, without the spawn and the hand-off
/// to another task (and often another worker thread) that a task per call costs on every
/// AppendEntries and forwarded write.
async fn read_calls(
    peer: String,
    mut incoming: Streaming<PipeBatch>,
    handlers: Arc<Handlers>,
    results: mpsc::Sender<PipeResult>,
    shutdown: CancellationToken,
) {
    let mut running = FuturesUnordered::new();
    let mut reading = true;
    while reading || !running.is_empty() {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            Some(result) = running.next(), if !running.is_empty() => {
                if results.send(result).await.is_err() {
                    return;
                }
            }
            batch = incoming.message(), if reading && running.len() < CALLS_IN_FLIGHT => {
                let batch = match batch {
                    Ok(Some(batch)) => batch,
                    Ok(None) => {
                        reading = false;
                        continue;
                    }
                    Err(status) => {
                        tracing::debug!(code = ?status.code(), message = status.message(), "pipe from peer ended");
                        reading = false;
                        continue;
                    }
                };
                crate::clock::check_peer_clock(&peer, batch.sent_unix_ms);
                for call in batch.calls {
                    if call.method == Method::Deliver as i32 || call.method == Method::Beat as i32 {
                        // A delivery never waits (it queues frames on local sockets), nor does
                        // a beat: served in order, at once.
                        let result = handlers.answer(call).await;
                        if results.send(result).await.is_err() {
                            return;
                        }
                    } else {
                        running.push(handlers.answer(call));
                    }
                }
            }
        }
    }
}

/// The response stream: every result finished at that moment per batch; it ends when all calls
/// are answered and the caller's side is closed, or at shutdown.
fn result_batches(
    finished: mpsc::Receiver<PipeResult>,
    shutdown: CancellationToken,
) -> impl futures_util::Stream<Item = Result<PipeBatch, Status>> + Send + 'static {
    futures_util::stream::unfold((finished, shutdown), |(mut finished, shutdown)| async move {
        let first = tokio::select! {
            _ = shutdown.cancelled() => return None,
            first = finished.recv() => first?,
        };
        let results = drain_batch(first, &mut finished, |result| result.body.len());
        let batch = PipeBatch {
            calls: Vec::new(),
            results,
            sent_unix_ms: crate::clock::unix_ms(),
        };
        Some((Ok(batch), (finished, shutdown)))
    })
}
