//! CI smoke test of the load generator: a short, low-rate run of the real engine against an
//! in-process node and against the in-process relay. It proves the loadgen's wiring (setup,
//! source-address binding, stamping, delivery accounting, histograms) end to end; the figures
//! themselves come from `benches/run.sh`.

use std::time::{Duration, Instant};

use ringchat_benches::engine::{self, RunConfig, Scenario};
use ringchat_tests::InProcessNode;

fn config(url: String, scenario: Scenario, relay: bool) -> RunConfig {
    RunConfig {
        urls: vec![url],
        scenario,
        clients: 20,
        users: 10,
        group_size: 5,
        rate: 40.0,
        duration: Duration::from_secs(3),
        find_max: false,
        then_half: false,
        // Debug builds on a busy 2-core CI machine: only wiring is checked here.
        p99_target_ms: 10_000.0,
        relay,
        pids: vec![std::process::id()],
        source_spread: 4,
        login_concurrency: 4,
        limit: Duration::from_secs(60),
        progress: false,
        pad_bytes: 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_run_against_a_node_delivers_everything_and_times_it() {
    let started = Instant::now();
    let node = InProcessNode::start().await;
    // With filler after the stamp (`--pad-bytes`): every delivery must still be timed.
    let padded = RunConfig {
        pad_bytes: 3_000,
        ..config(node.base.clone(), Scenario::Group, false)
    };
    let reports = engine::run(padded).await.expect("loadgen run");
    node.stop().await;
    let r = &reports[0];
    assert_eq!(r.target, "ringchat");
    assert!(r.sent >= 100, "sent {}", r.sent);
    assert_eq!(r.acked, r.sent, "every send acknowledged: {r:?}");
    // Each group has 5 users × 2 connections: 10 deliveries per message.
    assert_eq!(r.delivered, r.sent * 10, "{r:?}");
    assert_eq!((r.lost, r.errors), (0, 0), "{r:?}");
    assert_eq!(r.samples, r.delivered);
    assert!(r.p50_ms > 0.0 && r.p99_ms >= r.p50_ms && r.max_ms >= r.p99_ms);
    // A generous bound: CI runs other argon2-heavy tests beside this one.
    assert!(started.elapsed() < Duration::from_secs(60));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_run_against_the_relay_delivers_everything() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let relay = tokio::spawn(ringchat_benches::relay::serve(listener, async move {
        let _ = stop_rx.await;
    }));
    let reports = engine::run(config(url, Scenario::Mixed, true))
        .await
        .expect("loadgen run");
    let _ = stop_tx.send(());
    tokio::time::timeout(Duration::from_secs(5), relay)
        .await
        .expect("relay stops")
        .expect("relay task");
    let r = &reports[0];
    assert_eq!(r.target, "relay");
    assert!(r.sent >= 100 && r.acked == r.sent, "{r:?}");
    assert_eq!((r.lost, r.errors), (0, 0), "{r:?}");
    assert!(r.delivered > r.sent && r.samples == r.delivered);
}
