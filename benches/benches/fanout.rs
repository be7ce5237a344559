//! Fan-out of one message to 100 local connections through the gateway's own `Registry`: one
//! serialized frame, shared (reference-counted) into 100 bounded per-connection outboxes without
//! waiting, as a group message of 100 members is delivered on one node. The queues are
//! drained outside the measured part so they never fill.

mod common;

use std::time::{Duration, Instant};

use axum::extract::ws::Utf8Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ringchat_node::gateway::registry::{ConnHandle, Registry};

fn fanout(c: &mut Criterion) {
    let registry = Registry::default();
    let users: Vec<String> = (0..100).map(|i| format!("u-{i:04}")).collect();
    let mut conns = Vec::new();
    for u in &users {
        let conn = ConnHandle::new(u, "d", "t", 1024);
        registry.register(conn.clone());
        conns.push(conn);
    }
    let frame = Utf8Bytes::from(
        r#"{"type":"message","channel_id":"c-0f3a9b2e","seq":42,"sender_id":"u-0001","text":"see you at the standup","ts":1764000000000,"client_msg_id":"s1-42"}"#,
    );
    let mut g = c.benchmark_group("fanout");
    g.throughput(Throughput::Elements(100));
    g.bench_function("one_frame_to_100_connections", |b| {
        b.iter_custom(|iters| {
            let mut measured = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                // Chunks below the queue capacity, drained outside the timed part.
                let chunk = left.min(1000);
                let start = Instant::now();
                for _ in 0..chunk {
                    assert_eq!(registry.send_to_users(&users, &frame, None), 100);
                }
                measured += start.elapsed();
                left -= chunk;
                let mut drained = Vec::new();
                for c in &conns {
                    while c.outbox.try_take(&mut drained, 1024) > 0 {
                        drained.clear();
                    }
                }
            }
            measured
        })
    });
    g.finish();
}

criterion_group! { name = benches; config = common::short_config(Duration::from_secs(2), 30); targets = fanout }
criterion_main!(benches);
