//! The client-port accept loop. axum's own `serve` gives hyper no timer, and without one hyper
//! ignores its header-read timeout: a client that sends half a request line would hold a socket
//! forever (slowloris). This loop serves HTTP/1.1 with upgrades (WebSocket) and a timer, and
//! finishes in-flight requests on shutdown. With `--tls-cert` every connection is TLS first
//! (`tls.rs`); the handshake has the same deadline as the headers.

use std::time::Duration;

use axum::extract::{ConnectInfo, Request};
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// How long an in-flight request may take to finish once shutdown begins.
const DRAIN: Duration = Duration::from_secs(5);

/// Accepts connections until `shutdown`, serving each with `router` (behind TLS when `tls` is
/// set); a request's headers must arrive within `header_timeout`. Connection tasks are tracked
/// by `tracker`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<TlsAcceptor>,
    header_timeout: Duration,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let service = router.clone().map_request(move |req: Request<Incoming>| {
            let mut req = req.map(axum::body::Body::new);
            // The source address, for the limits keyed by it (`ConnectInfo` in handlers).
            req.extensions_mut().insert(ConnectInfo(peer));
            req
        });
        let stop = shutdown.clone();
        let tls = tls.clone();
        tracker.spawn(async move {
            let Some(tls) = tls else {
                return serve_connection(TokioIo::new(stream), service, header_timeout, stop).await;
            };
            match tokio::time::timeout(header_timeout, tls.accept(stream)).await {
                Ok(Ok(stream)) => serve_connection(TokioIo::new(stream), service, header_timeout, stop).await,
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake did not finish in time"),
            }
        });
    }
}

/// Serves one connection (plain or TLS) until it ends or shutdown asks it to finish.
async fn serve_connection<I, S>(io: I, service: S, header_timeout: Duration, stop: CancellationToken)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: tower::Service<Request<Incoming>, Response = axum::response::Response, Error = std::convert::Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(io, TowerToHyperService::new(service))
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::trace!(error = %e, "http connection ended");
            }
        }
        _ = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(DRAIN, conn).await;
        }
    }
}
