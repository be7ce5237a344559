//! Network partitions of a 3-process cluster, with a Jepsen-style checker.
//!
//! The test runs in a private network namespace (see `ringchat_tests::netns`): each node
//! listens on its own 127.0.0.x address and nftables rules drop the packets between them.
//! Rounds: the meta leader cut off from both peers (full partition), a node whose outgoing
//! packets are dropped (one-way), and a follower cut off. Writers keep sending through every
//! node with retries by client_msg_id; the majority side must keep taking writes, and after
//! healing nothing acked may be lost, duplicated, out of order or missing on any node.

use std::time::Duration;

use ringchat_tests::jepsen::{check, stop_and_check_replicas, summary, Workload};
use ringchat_tests::netns::{isolated, Firewall};
use ringchat_tests::*;

const IPS: [&str; 3] = ["127.0.0.11", "127.0.0.12", "127.0.0.13"];
/// How long each partition lasts: longer than an election, shorter than `--dead-after-secs`.
const CUT: Duration = Duration::from_secs(8);

#[test]
fn acked_messages_survive_full_and_one_way_partitions() {
    const NAME: &str = "acked_messages_survive_full_and_one_way_partitions";
    let Some((firewall, rt)) = isolated(NAME) else {
        return;
    };
    rt.block_on(partition_rounds(&firewall));
}

async fn partition_rounds(firewall: &Firewall) {
    let dir = tempfile::tempdir().unwrap();
    let (mut nodes, status) = start_cluster_at(&IPS, dir.path()).await;
    let bases: Vec<String> = nodes.iter().map(|n| n.base.clone()).collect();
    let work = Workload::start(&bases, 6).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let meta_leader = status["meta_leader"].as_u64().expect("meta leader") as usize - 1;
    let follower = (meta_leader + 1) % 3;
    let rounds: [(&str, usize, bool); 3] = [
        ("meta leader cut off, both ways", meta_leader, true),
        ("outgoing packets of a node dropped (one-way)", follower, false),
        ("a follower cut off, both ways", (meta_leader + 2) % 3, true),
    ];
    for (what, victim, both_ways) in rounds {
        let others: Vec<&str> = IPS.iter().copied().filter(|ip| *ip != IPS[victim]).collect();
        let before = work.acked_so_far();
        if both_ways {
            firewall.isolate(IPS[victim], &others);
        } else {
            for o in &others {
                firewall.cut(IPS[victim], o);
            }
        }
        tokio::time::sleep(CUT).await;
        let during = work.acked_so_far() - before;
        let dropped = firewall.heal();
        println!(
            "partition round: {what} (node {}): {during} sends acked while cut, {dropped} packets dropped",
            victim + 1
        );
        assert!(dropped > 0, "the rules matched no packet while {what}: nothing was cut");
        assert!(during > 0, "no write was acked while {what}");
        tokio::time::sleep(Duration::from_secs(4)).await;
    }

    let (users, channels, history) = work.finish().await;
    // Healed: every partition has a leader again before reading back.
    wait_for_status(&nodes[0], Duration::from_secs(60), |s| settled(s, 3, 3)).await;
    let verdict = check(&bases, &users, &channels, &history).await;
    println!("checker (partitions): {}", summary(&history, &verdict));
    assert!(verdict.acked > 50, "too few acked to mean anything: {}", verdict.acked);
    assert_eq!(
        (verdict.lost, verdict.duplicates, verdict.gaps, verdict.order_mismatches),
        (0, 0, 0, 0)
    );
    // And straight from each replica's own store, nodes stopped: every copy is the same.
    let layout = cluster_status(&nodes[0]).expect("status");
    let ids = nodes.iter_mut().enumerate().map(|(i, n)| (i as u64 + 1, n)).collect();
    stop_and_check_replicas(ids, &layout, &channels, &history).await;
}
