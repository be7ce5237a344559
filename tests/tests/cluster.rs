//! Multi-process clusters on loopback: formation by `--join`, placement of every partition on
//! R distinct nodes, `cluster status`, and failover after kill -9.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use ringchat_tests::*;
use serde_json::Value;

fn settled(s: &Value, members: usize, replicas: usize) -> bool {
    let active = s["members"]
        .as_array()
        .is_some_and(|m| m.len() == members && m.iter().all(|m| m["state"] == "active"));
    let placed = s["partitions"].as_array().is_some_and(|ps| {
        !ps.is_empty()
            && ps.iter().all(|p| {
                let set: BTreeSet<u64> = p["replicas"]
                    .as_array()
                    .map(|r| r.iter().filter_map(Value::as_u64).collect())
                    .unwrap_or_default();
                set.len() == replicas && p["leader"].as_u64().is_some_and(|l| set.contains(&l))
            })
    });
    active && placed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_join_and_every_partition_gets_three_replicas() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = start_cluster(dir.path(), 3, &[]).await;
    let status = wait_for_status(&nodes[2], Duration::from_secs(60), |s| settled(s, 3, 3)).await;
    // The PROTOCOL §4 shape, exactly.
    let keys: BTreeSet<&str> = status.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, BTreeSet::from(["meta_leader", "members", "partitions"]));
    assert!((1..=3).contains(&status["meta_leader"].as_u64().unwrap()));
    for (i, m) in status["members"].as_array().unwrap().iter().enumerate() {
        assert_eq!(m["node_id"], i as u64 + 1);
        assert_eq!(m["cluster_addr"], nodes[i].cluster_addr.as_str());
        assert_eq!(format!("http://{}", m["client_addr"].as_str().unwrap()), nodes[i].base);
    }
    assert_eq!(status["partitions"].as_array().unwrap().len(), 8);
    for node in &nodes {
        assert_eq!(node.http().readyz().await.unwrap(), 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_node_moves_leadership_to_the_survivors_and_it_rejoins() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = start_cluster(dir.path(), 3, &[]).await;
    wait_for_status(&nodes[1], Duration::from_secs(60), |s| settled(s, 3, 3)).await;
    // Node 1 bootstrapped the cluster, so it leads the meta group and every partition.
    nodes[0].kill9();
    let killed = Instant::now();
    let status = wait_for_status(&nodes[1], Duration::from_secs(30), |s| {
        s["meta_leader"].as_u64().is_some_and(|l| l != 1)
            && s["partitions"]
                .as_array()
                .is_some_and(|ps| ps.iter().all(|p| p["leader"].as_u64().is_some_and(|l| l != 1)))
    })
    .await;
    let failover = killed.elapsed();
    println!("failover: every partition and the meta group led by a survivor {failover:?} after kill -9");
    assert!(failover < Duration::from_secs(15), "{failover:?}");
    assert_eq!(status["members"].as_array().unwrap().len(), 3);
    nodes[0].restart().await;
    wait_for_status(&nodes[0], Duration::from_secs(60), |s| settled(s, 3, 3)).await;
    assert_eq!(nodes[0].http().readyz().await.unwrap(), 200);
}
