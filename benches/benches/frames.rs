//! Frame encode/decode with the gateway's own code (`ringchat_node::gateway::frames`): parsing
//! a client `send` frame and serializing the `message` frame that fan-out shares between
//! recipients. Both run once per message (parse) or once per message per node (encode), so
//! they bound the gateway's per-message CPU.

mod common;

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ringchat_cluster::MessageRecord;
use ringchat_node::gateway::frames;

fn frames(c: &mut Criterion) {
    let send = r#"{"type":"send","ref":17,"channel_id":"c-0f3a9b2e","text":"lg 1 42 123456789 see you at the standup in five","client_msg_id":"s1-42"}"#;
    let message = MessageRecord {
        channel_id: "c-0f3a9b2e".into(),
        seq: 42,
        sender_id: "u-7be1c0d4".into(),
        text: "lg 1 42 123456789 see you at the standup in five".into(),
        ts: 1_764_000_000_000,
        client_msg_id: Some("s1-42".into()),
    };
    let mut g = c.benchmark_group("frames");
    g.throughput(Throughput::Elements(1));
    g.bench_function("decode_send", |b| b.iter(|| frames::parse(black_box(send)).is_ok()));
    g.bench_function("encode_message", |b| {
        b.iter(|| frames::message_frame(black_box(&message)))
    });
    g.finish();
}

criterion_group! { name = benches; config = common::short_config(Duration::from_secs(2), 30); targets = frames }
criterion_main!(benches);
