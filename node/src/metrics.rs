//! Prometheus metrics: one recorder per process (the `metrics` facade is global), rendered at
//! `/metrics`.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the recorder on first use and returns the handle that renders it.
pub fn handle() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&[0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5])
                .expect("static buckets")
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (an embedding program); ours then
            // renders nothing, which is better than failing to start.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            handle
        })
        .clone()
}

fn describe() {
    metrics::describe_gauge!("ringchat_connections", "Live authenticated WebSocket connections");
    metrics::describe_counter!("ringchat_messages_committed_total", "Messages committed");
    metrics::describe_gauge!(
        "ringchat_raft_groups",
        "Partition Raft groups running on this node (the meta group not counted)"
    );
    metrics::describe_histogram!("ringchat_commit_latency_seconds", "Raft commit latency of writes");
    metrics::describe_counter!("ringchat_deliveries_total", "Message frames queued to connections");
    metrics::describe_histogram!(
        "ringchat_fsync_seconds",
        "Duration of one group-commit fsync of the journal"
    );
    metrics::describe_counter!("ringchat_fsync_total", "Group-commit fsyncs");
    metrics::describe_counter!(
        "ringchat_fsync_requests_total",
        "Durability requests (Raft appends, votes) covered by group-commit fsyncs"
    );
    metrics::describe_counter!("ringchat_pipe_batches_sent_total", "Batches sent on node-to-node pipes");
    metrics::describe_counter!("ringchat_pipe_calls_sent_total", "Calls sent on node-to-node pipes");
    metrics::describe_histogram!(
        "ringchat_peer_call_seconds",
        "Round trip of one node-to-node call, by method, at the caller"
    );
    metrics::describe_histogram!(
        "ringchat_peer_serve_seconds",
        "Time to answer one node-to-node call, by method, at the callee"
    );
    metrics::describe_counter!("ringchat_push_total", "Push POSTs by outcome");
    metrics::describe_counter!(
        "ringchat_slow_consumer_disconnects_total",
        "Connections closed with 4008 for a full queue"
    );
}
