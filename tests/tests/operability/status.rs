//! `ringchat cluster status` on real clusters: summary first, the table behind `--partitions`,
//! `--json` with the PROTOCOL §4 fields and more beside them, errors with the right prefix;
//! and a removed node stopping instead of running on.

use std::process::Command;
use std::time::{Duration, Instant};

use ringchat_tests::*;
use serde_json::Value;

/// `ringchat cluster status` at `addr` with `secret` and `flags`: (success, stdout, stderr).
fn status_cli(addr: &str, secret: &str, flags: &[&str]) -> (bool, String, String) {
    let out = Command::new(ringchat_bin())
        .args(["cluster", "status", "--node", addr])
        .args(flags)
        .env("RINGCHAT_CLUSTER_SECRET", secret)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_a_summary_with_reachability_and_keeps_the_protocol_json() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = start_cluster(dir.path(), 2, &[]).await;
    let s = cluster_status(&nodes[0]).unwrap();
    // §4 fields, exactly as before.
    assert!(s["meta_leader"].as_u64().is_some());
    for m in s["members"].as_array().unwrap() {
        for f in ["node_id", "cluster_addr", "client_addr", "state"] {
            assert!(m.get(f).is_some(), "member lacks {f}: {m}");
        }
        assert_eq!(m["reachable"], true, "{m}");
    }
    for p in s["partitions"].as_array().unwrap() {
        assert!(
            p["partition"].is_u64() && p["replicas"].is_array() && p.get("leader").is_some(),
            "{p}"
        );
        let mut voters: Vec<u64> = p["voters"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_u64)
            .collect();
        let mut target: Vec<u64> = p["replicas"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_u64)
            .collect();
        voters.sort();
        target.sort();
        assert_eq!(voters, target, "settled: actual voters = target: {p}");
        assert_eq!(p["moving"], false);
    }
    assert_eq!(s["summary"]["under_replicated"], serde_json::json!([]));
    assert_eq!(s["summary"]["moving"], serde_json::json!([]));
    let led: u64 = s["summary"]["leaders_per_node"]
        .as_object()
        .unwrap()
        .values()
        .filter_map(Value::as_u64)
        .sum();
    assert_eq!(led, 8);

    let (ok, text, _) = status_cli(&nodes[0].cluster_addr, CLUSTER_SECRET, &[]);
    assert!(ok);
    assert!(text.starts_with("meta leader:"), "{text}");
    assert!(text.contains("under-replicated: 0"), "{text}");
    assert!(!text.contains("target ["), "the table is behind --partitions:\n{text}");
    let (_, table, _) = status_cli(&nodes[0].cluster_addr, CLUSTER_SECRET, &["--partitions"]);
    assert_eq!(table.lines().filter(|l| l.contains("target [")).count(), 8, "{table}");

    // Node 2 stops: at once unreachable and its partitions under-replicated, long before the
    // dead-after grace marks it dead.
    nodes[1].kill9();
    let down = Instant::now();
    let s = wait_for_status(&nodes[0], Duration::from_secs(15), |s| {
        s["summary"]["unreachable"] == serde_json::json!([2])
            && s["summary"]["under_replicated"]
                .as_array()
                .is_some_and(|u| u.len() == 8)
    })
    .await;
    assert!(down.elapsed() < Duration::from_secs(15));
    let two = member(&s, 2);
    assert_eq!(two["reachable"], false, "{two}");
    let (_, text, _) = status_cli(&nodes[0].cluster_addr, CLUSTER_SECRET, &[]);
    assert!(text.contains("unreachable: 2"), "{text}");
    assert!(text.contains("under-replicated: 8"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_errors_say_what_went_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_cluster_node(dir.path(), 1, None, &[]).await;
    let (ok, _, err) = status_cli(&node.cluster_addr, "a-different-secret-of-the-right-length", &[]);
    assert!(!ok);
    assert!(err.contains("unauthenticated:"), "{err}");
    let nobody = format!("127.0.0.1:{}", free_port());
    let (ok, _, err) = status_cli(&nobody, CLUSTER_SECRET, &[]);
    assert!(!ok);
    assert!(err.contains("unreachable:") && err.contains(&nobody), "{err}");
    let (ok, _, err) = status_cli(&node.cluster_addr, "short", &[]);
    assert!(!ok);
    assert!(err.contains("invalid --cluster-secret"), "{err}");
    assert!(!err.contains("unavailable:"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_node_learns_it_was_removed_and_stops() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = start_cluster(dir.path(), 2, &[]).await;
    remove_node(&nodes[0], 2);
    let deadline = Instant::now() + Duration::from_secs(30);
    while nodes[1].http().healthz().await.is_ok() {
        assert!(Instant::now() < deadline, "node 2 still serving 30 s after its removal");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let log = std::fs::read_to_string(nodes[1].data_dir.with_extension("log")).unwrap();
    assert!(log.contains("was removed from the cluster"), "{log}");
    // The survivor carries on alone.
    let alice = new_user(&nodes[0].base, "alice").await;
    let bob = new_user(&nodes[0].base, "bob").await;
    let dm = alice.http.open_dm(&bob.user_id).await.unwrap().channel_id;
    alice.http.send_message(&dm, "after the removal", "r1").await.unwrap();
}
