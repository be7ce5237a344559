//! Storage append and history read on a real fjall store in a temp dir, with the keys and
//! record codec the partition state machine uses (`tables::message`, `codec::encode`).
//!
//! Appends are measured two ways: the write alone (what a Raft apply costs before its fsync)
//! and a batch of 100 writes made durable by one group-commit fsync (`Syncer::after_sync`),
//! which is how the node acknowledges sends: per-message durability cost is fsync ÷ batch.
//! History read is the newest 50 messages of a 10,000-message channel, as
//! `GET …/messages?limit=50` reads them on a cache miss.

mod common;

use std::hint::black_box;
use std::sync::mpsc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ringchat_cluster::codec::{decode, encode};
use ringchat_cluster::partition::tables;
use ringchat_cluster::MessageRecord;
use ringchat_storage::Store;

const PARTITION: u16 = 7;

fn message(channel: &str, seq: u64) -> MessageRecord {
    MessageRecord {
        channel_id: channel.into(),
        seq,
        sender_id: "u-7be1c0d4".into(),
        text: "see you at the standup in five minutes, bring the numbers".into(),
        ts: 1_764_000_000_000 + seq,
        client_msg_id: Some(format!("m-{seq}")),
    }
}

fn storage(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open store");
    let mut g = c.benchmark_group("storage");

    let mut seq = 0u64;
    g.throughput(Throughput::Elements(1));
    g.bench_function("append_one_unsynced", |b| {
        b.iter(|| {
            seq += 1;
            let m = message("c-append", seq);
            store
                .sm
                .insert(tables::message(PARTITION, &m.channel_id, seq), encode(&m))
                .expect("insert");
        })
    });

    g.throughput(Throughput::Elements(100));
    g.bench_function("append_100_then_group_fsync", |b| {
        b.iter_batched(
            || (),
            |()| {
                for _ in 0..100 {
                    seq += 1;
                    let m = message("c-append", seq);
                    store
                        .sm
                        .insert(tables::message(PARTITION, &m.channel_id, seq), encode(&m))
                        .expect("insert");
                }
                let (tx, rx) = mpsc::channel();
                store.syncer.after_sync(0, move |r| {
                    let _ = tx.send(r.is_ok());
                });
                assert!(rx.recv_timeout(Duration::from_secs(10)).expect("fsync answered"));
            },
            BatchSize::PerIteration,
        )
    });

    for s in 1..=10_000u64 {
        let m = message("c-history", s);
        store
            .sm
            .insert(tables::message(PARTITION, "c-history", s), encode(&m))
            .expect("insert");
    }
    g.throughput(Throughput::Elements(50));
    g.bench_function("history_newest_50_of_10k", |b| {
        b.iter(|| {
            let from = tables::message(PARTITION, "c-history", 10_000 - 49);
            let to = tables::message(PARTITION, "c-history", 10_000);
            let mut n = 0;
            for item in store.sm.range(from..=to) {
                let (_, v) = item.into_inner().expect("read");
                let m: MessageRecord = decode(&v).expect("decode");
                n += black_box(m).seq;
            }
            n
        })
    });
    g.finish();
}

criterion_group! { name = benches; config = common::short_config(Duration::from_secs(3), 20); targets = storage }
criterion_main!(benches);
