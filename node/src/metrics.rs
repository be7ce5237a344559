//! Prometheus metrics: one recorder per process (the `metrics` facade is global), rendered at
//! `/metrics`. Most series are recorded where things happen; those that describe a state
//! (Raft health, members, `process_*`) are read when `/metrics` is scraped, so nothing on
//! the write path pays for them. `docs/metrics.md` lists them all.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use ringchat_cluster::Cluster;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
static PROCESS: OnceLock<metrics_process::Collector> = OnceLock::new();

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
            metrics::gauge!("ringchat_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
            PROCESS.get_or_init(|| {
                let collector = metrics_process::Collector::default();
                collector.describe();
                collector
            });
            handle
        })
        .clone()
}

/// The text of `/metrics`: state read now (process, Raft health, members), then everything.
pub fn render(handle: &PrometheusHandle, cluster: &Cluster) -> String {
    if let Some(process) = PROCESS.get() {
        process.collect();
    }
    record_raft_health(cluster);
    handle.render()
}

fn record_raft_health(cluster: &Cluster) {
    let h = cluster.raft_health();
    metrics::gauge!("ringchat_raft_groups").set(h.groups as f64);
    metrics::gauge!("ringchat_raft_groups_led").set(h.groups_led as f64);
    metrics::gauge!("ringchat_raft_meta_leader").set(if h.meta_leader { 1.0 } else { 0.0 });
    metrics::gauge!("ringchat_raft_term_max").set(h.max_term as f64);
    metrics::gauge!("ringchat_raft_meta_term").set(h.meta_term as f64);
    metrics::gauge!("ringchat_raft_learners").set(h.learners as f64);
    metrics::gauge!("ringchat_raft_under_replicated_led").set(h.under_replicated_led as f64);
    for (peer, lag) in &h.lag_by_peer {
        metrics::gauge!("ringchat_raft_replication_lag_entries", "peer" => peer.to_string()).set(*lag as f64);
    }
    for (state, n) in &h.members_by_state {
        metrics::gauge!("ringchat_cluster_members", "state" => *state).set(*n as f64);
    }
}

fn describe() {
    metrics::describe_gauge!(
        "ringchat_build_info",
        "Always 1; the version label is this node's release"
    );
    metrics::describe_gauge!("ringchat_connections", "Live authenticated WebSocket connections");
    metrics::describe_counter!("ringchat_messages_committed_total", "Messages committed");
    metrics::describe_gauge!(
        "ringchat_raft_groups",
        "Partition Raft groups running on this node (the meta group not counted)"
    );
    metrics::describe_gauge!("ringchat_raft_groups_led", "Partition Raft groups led by this node");
    metrics::describe_gauge!("ringchat_raft_meta_leader", "1 if this node leads the meta group");
    metrics::describe_gauge!(
        "ringchat_raft_term_max",
        "Highest Raft term among the groups on this node"
    );
    metrics::describe_gauge!("ringchat_raft_meta_term", "Raft term of the meta group");
    metrics::describe_counter!(
        "ringchat_raft_campaigns_total",
        "Elections (each begun with a pre-vote) this node started for partitions without a live leader"
    );
    metrics::describe_gauge!(
        "ringchat_raft_learners",
        "Learners (replicas being caught up) in the groups led by this node"
    );
    metrics::describe_gauge!(
        "ringchat_raft_under_replicated_led",
        "Groups led here with fewer voters than the replication factor"
    );
    metrics::describe_gauge!(
        "ringchat_raft_replication_lag_entries",
        "Per follower: most log entries it is behind in any group led here"
    );
    metrics::describe_gauge!(
        "ringchat_cluster_members",
        "Members by state, as the meta group records them"
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
    metrics::describe_counter!(
        "ringchat_peer_calls_total",
        "Node-to-node calls by peer (cluster address) and outcome (answered, failed)"
    );
    metrics::describe_gauge!("ringchat_peer_up", "Per peer: 0 while it counts as unreachable, else 1");
    metrics::describe_histogram!(
        "ringchat_peer_call_seconds",
        "Round trip of one node-to-node call, by method, at the caller"
    );
    metrics::describe_histogram!(
        "ringchat_peer_serve_seconds",
        "Time to answer one node-to-node call, by method, at the callee"
    );
    metrics::describe_counter!("ringchat_http_requests_total", "HTTP requests by route and status");
    metrics::describe_histogram!("ringchat_http_request_seconds", "HTTP request duration by route");
    metrics::describe_counter!("ringchat_ws_closes_total", "WebSocket close frames sent, by close code");
    metrics::describe_counter!(
        "ringchat_rate_limited_total",
        "Requests refused by a rate limit, by limit"
    );
    metrics::describe_counter!(
        "ringchat_login_failures_total",
        "Logins with a wrong username or password"
    );
    metrics::describe_counter!(
        "ringchat_auth_failures_total",
        "Requests and hellos refused for a missing, unknown or revoked token"
    );
    metrics::describe_counter!("ringchat_push_total", "Push POSTs by outcome");
    metrics::describe_counter!(
        "ringchat_slow_consumer_disconnects_total",
        "Connections closed with 4008 for a full queue"
    );
}
