//! Durability: acknowledged messages survive kill -9 and restart, gap-free and exactly once;
//! graceful SIGTERM; partition snapshots.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use ringchat_tests::*;
use tokio::sync::Mutex;

/// Reads a whole channel through the HTTP API, ascending.
async fn read_all(user: &TestUser, channel_id: &str) -> Vec<ringchat_client::Message> {
    ringchat_tests::jepsen::read_channel(user.http.base(), user, channel_id).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acked_messages_survive_kill_9_gap_free_and_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = NodeProcess::start(&dir.path().join("n1"), &[]).await;
    let alice = new_user(&node.base, "alice").await;
    let bob = new_user(&node.base, "bob").await;
    let dm = alice.http.open_dm(&bob.user_id).await.unwrap();
    let acked: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let mut tasks = Vec::new();
    for w in 0..4 {
        let http = alice.http.clone();
        let cid = dm.channel_id.clone();
        let acked = acked.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..400 {
                let cmid = format!("w{w}-{i}");
                match http.send_message(&cid, &format!("message {cmid}"), &cmid).await {
                    Ok((_, sent)) => {
                        acked.lock().await.insert(cmid, sent.seq);
                    }
                    Err(_) => return,
                }
            }
        }));
    }
    // Kill while sends are in flight.
    for _ in 0..200 {
        if acked.lock().await.len() >= 150 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    node.kill9();
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(30), t).await;
    }
    let acked = acked.lock().await.clone();
    assert!(acked.len() >= 100, "only {} acked before the kill", acked.len());
    node.restart().await;
    let alice = TestUser {
        http: node.http().with_token(&alice.token),
        ..alice
    };
    let after_restart = read_all(&alice, &dm.channel_id).await;
    let by_cmid: BTreeMap<String, u64> = after_restart
        .iter()
        .map(|m| (m.client_msg_id.clone().unwrap_or_default(), m.seq))
        .collect();
    let lost: Vec<&String> = acked.keys().filter(|c| !by_cmid.contains_key(*c)).collect();
    assert!(lost.is_empty(), "acked messages lost: {lost:?}");
    for (cmid, seq) in &acked {
        assert_eq!(by_cmid[cmid], *seq, "{cmid} moved");
    }
    // Retry everything, as clients do after a timeout: nothing acked is duplicated.
    for w in 0..4 {
        for i in 0..400 {
            let cmid = format!("w{w}-{i}");
            let (status, sent) = alice
                .http
                .send_message(&dm.channel_id, &format!("message {cmid}"), &cmid)
                .await
                .unwrap();
            if let Some(seq) = acked.get(&cmid) {
                assert_eq!(status, 200, "{cmid} was committed before: retry must return 200");
                assert_eq!(sent.seq, *seq);
            }
        }
    }
    let all = read_all(&alice, &dm.channel_id).await;
    assert_eq!(all.len(), 1600, "every message exactly once");
    for (i, m) in all.iter().enumerate() {
        assert_eq!(m.seq, i as u64 + 1, "gap or reorder at {i}");
    }
    let unique: HashSet<_> = all.iter().map(|m| m.client_msg_id.clone()).collect();
    assert_eq!(unique.len(), 1600, "duplicate client_msg_id committed");
    println!(
        "kill -9 check: acked before kill {}, lost 0, duplicates 0, gaps 0",
        acked.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_shuts_down_gracefully_and_closes_sockets_with_1001() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = NodeProcess::start(&dir.path().join("n1"), &[]).await;
    let alice = new_user(&node.base, "alice").await;
    let mut ws = ringchat_client::WsClient::connect(&node.base).await.unwrap();
    ws.hello(&alice.token).await.unwrap();
    ws.recv_type("caught_up", Duration::from_secs(5)).await.unwrap();
    let status = node.terminate().expect("exits within 15 s");
    assert!(status.success(), "exit status {status}");
    match ws.recv(Duration::from_secs(5)).await {
        Err(ringchat_client::ClientError::Closed { code, .. }) => assert_eq!(code, Some(1001)),
        other => panic!("expected close 1001, got {other:?}"),
    }
    // Data written before the shutdown is there after a restart.
    node.restart().await;
    let again = node
        .http()
        .login(&alice.username, PASSWORD, None, Some(&alice.device_id))
        .await
        .unwrap();
    assert_eq!(again.device_id, alice.device_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_snapshots_build_and_the_node_restarts_from_them() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("n1");
    let node = InProcessNode::start_with(|c| c.data_dir = data.clone()).await;
    let alice = new_user(&node.base, "alice").await;
    let bob = new_user(&node.base, "bob").await;
    let dm = alice.http.open_dm(&bob.user_id).await.unwrap();
    for i in 0..30 {
        alice
            .http
            .send_message(&dm.channel_id, &format!("before {i}"), &format!("b{i}"))
            .await
            .unwrap();
    }
    let cluster = node.app.state.cluster.clone();
    for p in 0..cluster.partitions() {
        cluster.snapshot_partition(p).await.expect("snapshot");
    }
    let snaps = std::fs::read_dir(data.join("snapshots")).unwrap().count();
    assert!(snaps >= 1, "no snapshot files written");
    for i in 0..10 {
        alice
            .http
            .send_message(&dm.channel_id, &format!("after {i}"), &format!("a{i}"))
            .await
            .unwrap();
    }
    drop(cluster);
    node.stop().await;
    let node = InProcessNode::start_with(|c| c.data_dir = data.clone()).await;
    let alice = TestUser {
        http: node.http().with_token(&alice.token),
        ..alice
    };
    let all = read_all(&alice, &dm.channel_id).await;
    assert_eq!(all.len(), 40);
    assert!(all.iter().enumerate().all(|(i, m)| m.seq == i as u64 + 1));
    node.stop().await;
}
