//! Ring lookup and rebalance (`ringchat_cluster::placement`): `partition_of` runs on every
//! request that names an id; `replica_sets` runs whenever membership changes, for every
//! partition, so adding a node to a 3-node cluster is measured whole, with the count of moved
//! replicas.

mod common;

use std::collections::BTreeSet;
use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ringchat_cluster::placement::{moved_replicas, partition_of, replica_sets};

fn placement(c: &mut Criterion) {
    let ids: Vec<String> = (0..1000).map(|i| format!("c-{i:08x}")).collect();
    let mut g = c.benchmark_group("placement");
    g.throughput(Throughput::Elements(ids.len() as u64));
    g.bench_function("partition_of_1000_ids", |b| {
        b.iter(|| {
            ids.iter()
                .map(|id| partition_of(black_box(id), 256) as u64)
                .sum::<u64>()
        })
    });
    g.throughput(Throughput::Elements(256));
    let three: BTreeSet<u64> = [1, 2, 3].into();
    let four: BTreeSet<u64> = [1, 2, 3, 4].into();
    g.bench_function("replica_sets_3_nodes_256_partitions", |b| {
        b.iter(|| replica_sets(black_box(&three), 256, 3))
    });
    g.bench_function("rebalance_3_to_4_nodes_256_partitions", |b| {
        b.iter(|| {
            let before = replica_sets(black_box(&three), 256, 3);
            let after = replica_sets(black_box(&four), 256, 3);
            moved_replicas(&before, &after)
        })
    });
    g.finish();
}

criterion_group! { name = benches; config = common::short_config(Duration::from_secs(2), 20); targets = placement }
criterion_main!(benches);
