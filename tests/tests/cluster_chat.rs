//! Chat across the nodes of a 3-process cluster: every protocol feature with the users on
//! different nodes, a token from one node used on another, and a Jepsen-style run with kill -9.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use ringchat_client::WsClient;
use ringchat_tests::*;
use serde_json::json;
use tokio::sync::Mutex;

const T: Duration = Duration::from_secs(10);

async fn connect(base: &str, user: &TestUser) -> WsClient {
    let mut ws = WsClient::connect(base).await.unwrap();
    ws.hello(&user.token).await.unwrap();
    ws.recv_type("caught_up", T).await.unwrap();
    ws
}

/// The same user, with its token, talking to another node.
fn on(node: &NodeProcess, user: &TestUser) -> TestUser {
    TestUser {
        username: user.username.clone(),
        user_id: user.user_id.clone(),
        device_id: user.device_id.clone(),
        token: user.token.clone(),
        http: node.http().with_token(&user.token),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dm_group_presence_typing_and_read_work_across_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = start_cluster(dir.path(), 3, &[]).await;
    let alice = new_user(&nodes[0].base, "alice").await;
    let bob = new_user(&nodes[1].base, "bob").await;
    let carol = new_user(&nodes[2].base, "carol").await;
    // A token issued by node 1 works on node 3.
    let alice3 = on(&nodes[2], &alice);
    assert!(alice3.http.channels().await.is_ok());
    let mut a = connect(&nodes[0].base, &alice).await;
    let mut b = connect(&nodes[1].base, &bob).await;
    let mut c = connect(&nodes[2].base, &carol).await;
    // DM opened on node 3 (alice's token), message sent from node 1, bob on node 2 gets it.
    let dm = alice3.http.open_dm(&bob.user_id).await.unwrap();
    assert_eq!(b.recv_type("channel", T).await.unwrap()["event"], "joined");
    let sent = a
        .request(
            json!({"type": "send", "ref": 1, "channel_id": dm.channel_id, "text": "hi bob", "client_msg_id": "x1"}),
            T,
        )
        .await
        .unwrap();
    assert_eq!(sent["type"], "sent", "{sent}");
    let m = b.recv_type("message", T).await.unwrap();
    assert_eq!((m["text"].as_str(), m["seq"].as_u64()), (Some("hi bob"), Some(1)));
    assert_eq!(
        a.recv_type("message", T).await.unwrap()["seq"],
        1,
        "the sender's devices too"
    );
    // Group across all three nodes.
    let g = bob
        .http
        .create_group("trio", &[alice.user_id.clone(), carol.user_id.clone()])
        .await
        .unwrap();
    c.recv_type("channel", T).await.unwrap();
    carol
        .http
        .send_message(&g.channel_id, "from node 3", "g1")
        .await
        .unwrap();
    for ws in [&mut a, &mut b, &mut c] {
        let m = ws.recv_type("message", T).await.unwrap();
        assert_eq!(m["text"], "from node 3");
    }
    // Typing and read receipts cross nodes.
    c.send_json(&json!({"type": "typing", "channel_id": g.channel_id}))
        .await
        .unwrap();
    assert_eq!(
        a.recv_type("typing", T).await.unwrap()["user_id"],
        carol.user_id.as_str()
    );
    a.send_json(&json!({"type": "read", "channel_id": g.channel_id, "seq": 1}))
        .await
        .unwrap();
    assert_eq!(c.recv_type("read", T).await.unwrap()["user_id"], alice.user_id.as_str());
    // Presence: bob (node 2) watches carol (node 3); she leaves, he sees it.
    let st = b
        .request(
            json!({"type": "presence_subscribe", "ref": "p", "user_ids": [carol.user_id]}),
            T,
        )
        .await
        .unwrap();
    assert_eq!(st["users"][0]["status"], "online", "{st}");
    drop(c);
    let off = b.recv_type("presence", T).await.unwrap();
    assert_eq!(off["status"], "offline");
    assert_eq!(
        alice.http.presence(&carol.user_id).await.unwrap().status,
        "offline",
        "node 1 agrees"
    );
    // History from any node is the same.
    for node in &nodes {
        let page = on(node, &bob)
            .http
            .history(&g.channel_id, None, None, None)
            .await
            .unwrap();
        assert_eq!(page.messages.len(), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acked_messages_survive_kill_9_rounds_exactly_once_and_gap_free() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = start_cluster(dir.path(), 3, &[]).await;
    let mut users = Vec::new();
    for i in 0..4 {
        users.push(new_user(&nodes[i % 3].base, "w").await);
    }
    let mut channels = Vec::new();
    for i in 0..4 {
        channels.push(
            users[i]
                .http
                .open_dm(&users[(i + 1) % 4].user_id)
                .await
                .unwrap()
                .channel_id,
        );
    }
    // Writers use nodes 1 and 3; node 2 is killed and later removed, node 4 joins mid-run.
    let bases: Vec<String> = [&nodes[0], &nodes[2]].iter().map(|n| n.base.clone()).collect();
    let acked: Arc<Mutex<BTreeMap<(String, String), u64>>> = Arc::default();
    let attempted = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for (w, user) in users.iter().enumerate() {
        let cid = channels[w].clone();
        let token = user.token.clone();
        let bases = bases.clone();
        let acked = acked.clone();
        let attempted = attempted.clone();
        let stop = stop.clone();
        writers.push(tokio::spawn(async move {
            let mut worst_outage = Duration::ZERO;
            for i in 0..100_000u64 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let cmid = format!("w{w}-{i}");
                attempted.fetch_add(1, Ordering::SeqCst);
                let started = Instant::now();
                // Retry by client_msg_id on any node until acked (bounded).
                for attempt in 0..200u64 {
                    let base = &bases[((i + attempt) % bases.len() as u64) as usize];
                    let http = ringchat_client::HttpClient::new(base).with_token(&token);
                    match tokio::time::timeout(Duration::from_secs(5), http.send_message(&cid, &cmid, &cmid)).await {
                        Ok(Ok((_, sent))) => {
                            acked.lock().await.insert((cid.clone(), cmid.clone()), sent.seq);
                            worst_outage = worst_outage.max(started.elapsed());
                            break;
                        }
                        _ => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                }
            }
            worst_outage
        }));
    }
    // Kill rounds: the bootstrap node (meta leader, first partition leaders), then another.
    for victim in [0usize, 1] {
        tokio::time::sleep(Duration::from_secs(3)).await;
        nodes[victim].kill9();
        tokio::time::sleep(Duration::from_secs(4)).await;
        nodes[victim].restart().await;
    }
    // Scale out, then drain and remove node 2, all while the writers keep going.
    let joined = start_cluster_node(dir.path(), 4, Some(&nodes[0].cluster_addr), &[]).await;
    nodes.push(joined);
    tokio::time::sleep(Duration::from_secs(2)).await;
    remove_node(&nodes[0], 2);
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::SeqCst);
    let mut max_unavailable = Duration::ZERO;
    for w in writers {
        max_unavailable = max_unavailable.max(w.await.unwrap());
    }
    let acked = acked.lock().await.clone();
    // Read every channel back from every remaining node.
    let (mut lost, mut dups, mut gaps) = (0usize, 0usize, 0usize);
    for node in [&nodes[0], &nodes[2], &nodes[3]] {
        for (w, cid) in channels.iter().enumerate() {
            let reader = on(node, &users[w]);
            let mut all = Vec::new();
            let mut after = 0;
            for _ in 0..1000 {
                let page = reader.http.history(cid, None, Some(after), Some(500)).await.unwrap();
                if let Some(last) = page.messages.last() {
                    after = last.seq;
                }
                let more = page.has_more;
                all.extend(page.messages);
                if !more {
                    break;
                }
            }
            let mut seen = HashSet::new();
            for (i, m) in all.iter().enumerate() {
                if m.seq != i as u64 + 1 {
                    gaps += 1;
                }
                if !seen.insert(m.client_msg_id.clone()) {
                    dups += 1;
                }
            }
            let by_cmid: BTreeMap<String, u64> = all
                .iter()
                .map(|m| (m.client_msg_id.clone().unwrap_or_default(), m.seq))
                .collect();
            for ((c, cmid), seq) in &acked {
                if c == cid && by_cmid.get(cmid) != Some(seq) {
                    lost += 1;
                }
            }
        }
    }
    println!(
        "checker: attempted {}, acked {}, lost {lost}, duplicates {dups}, gaps {gaps}, max unavailability {max_unavailable:?}",
        attempted.load(Ordering::SeqCst),
        acked.len()
    );
    assert!(acked.len() > 50, "too few acked to mean anything: {}", acked.len());
    assert_eq!((lost, dups, gaps), (0, 0, 0));
}
