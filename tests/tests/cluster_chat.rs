//! Chat across the nodes of a 3-process cluster: every protocol feature with the users on
//! different nodes, a token from one node used on another, and a Jepsen-style run with kill -9.

use std::time::Duration;

use ringchat_client::WsClient;
use ringchat_tests::jepsen::{check, stop_and_check_replicas, summary, Workload};
use ringchat_tests::*;
use serde_json::json;

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
    // Node 1 hears it over its own link from node 3, a moment later at most.
    let mut status = String::new();
    for _ in 0..50 {
        status = alice.http.presence(&carol.user_id).await.unwrap().status;
        if status == "offline" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, "offline", "node 1 agrees within 5 s");
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
    // Writers use nodes 1 and 3; node 2 is killed and later removed, node 4 joins mid-run.
    let bases: Vec<String> = [&nodes[0], &nodes[2]].iter().map(|n| n.base.clone()).collect();
    let work = Workload::start(&bases, 4).await;
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
    let (users, channels, history) = work.finish().await;
    // Read every channel back from every remaining node.
    let readers: Vec<String> = [&nodes[0], &nodes[2], &nodes[3]]
        .iter()
        .map(|n| n.base.clone())
        .collect();
    let v = check(&readers, &users, &channels, &history).await;
    println!("checker: {}", summary(&history, &v));
    assert!(v.acked > 50, "too few acked to mean anything: {}", v.acked);
    assert_eq!((v.lost, v.duplicates, v.gaps, v.order_mismatches), (0, 0, 0, 0));
    // And straight from each replica's own store (nodes 1, 3 and 4; node 2 was removed).
    let layout = wait_for_status(&nodes[0], Duration::from_secs(60), |s| {
        s["partitions"].as_array().is_some_and(|ps| {
            ps.iter().all(|p| {
                p["leader"].as_u64().is_some()
                    && p["replicas"]
                        .as_array()
                        .is_some_and(|r| r.len() == 3 && !r.contains(&json!(2)))
            })
        })
    })
    .await;
    let ids = nodes
        .iter_mut()
        .enumerate()
        .filter(|(i, _)| *i != 1)
        .map(|(i, n)| (i as u64 + 1, n))
        .collect();
    stop_and_check_replicas(ids, &layout, &channels, &history).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_go_only_to_nodes_holding_recipients_and_a_new_connection_misses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = start_cluster(dir.path(), 3, &[]).await;
    let alice = new_user(&nodes[0].base, "alice").await;
    let bob = new_user(&nodes[1].base, "bob").await;
    let dm = alice.http.open_dm(&bob.user_id).await.unwrap().channel_id;
    let mut b = connect(&nodes[1].base, &bob).await;
    let idle_before = metric_sum(&nodes[2], "ringchat_peer_frames_received_total").await;
    // Deliveries to local sockets, whether the frame came from a peer or this node leads the
    // DM's partition and delivered it itself.
    let bob_node_before = metric_sum(&nodes[1], "ringchat_deliveries_total").await;
    for i in 0..20 {
        alice
            .http
            .send_message(&dm, "to node 2", &format!("t{i}"))
            .await
            .unwrap();
        assert_eq!(b.recv_type("message", T).await.unwrap()["text"], "to node 2");
    }
    // Node 3 holds neither user: it was sent nothing; node 2 got every message.
    assert_eq!(
        metric_sum(&nodes[2], "ringchat_peer_frames_received_total").await,
        idle_before
    );
    assert!(metric_sum(&nodes[1], "ringchat_deliveries_total").await >= bob_node_before + 20);
    let node3_before = metric_sum(&nodes[2], "ringchat_deliveries_total").await;
    // A connection of bob just opened on node 3 (his first there) gets a message sent right
    // after its `caught_up` live: node 3 told the others before its catch-up read.
    for i in 0..10 {
        let mut d = connect(&nodes[2].base, &bob).await;
        let text = format!("right after connect {i}");
        alice.http.send_message(&dm, &text, &format!("r{i}")).await.unwrap();
        assert_eq!(d.recv_type("message", T).await.unwrap()["text"], text.as_str());
        drop(d);
        // Wait until bob's last connection on node 3 is gone everywhere before the next round.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(metric_sum(&nodes[2], "ringchat_deliveries_total").await >= node3_before + 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_on_one_node_closes_the_sessions_sockets_on_every_node() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = start_cluster(dir.path(), 2, &[]).await;
    let alice = new_user(&nodes[0].base, "alice").await;
    let alice_phone = new_device(&nodes[0].base, &alice).await;
    let bob = new_user(&nodes[0].base, "bob").await;
    let dm = bob.http.open_dm(&alice.user_id).await.unwrap().channel_id;
    // Alice's session is open on node 2 (twice) and node 1; her phone's session on node 2.
    let mut there = connect(&nodes[1].base, &alice).await;
    let mut there_too = connect(&nodes[1].base, &alice).await;
    let mut here = connect(&nodes[0].base, &alice).await;
    let mut phone = connect(&nodes[1].base, &alice_phone).await;
    alice.http.logout().await.unwrap();
    for ws in [&mut there, &mut there_too, &mut here] {
        assert_eq!(until_closed(ws, Duration::from_secs(5)).await, Some(4001));
    }
    // The token is dead on node 2 too, and the other session is untouched.
    assert!(on(&nodes[1], &alice).http.channels().await.is_err());
    bob.http
        .send_message(&dm, "still there?", "after-logout")
        .await
        .unwrap();
    let m = phone.recv_type("message", T).await.unwrap();
    assert_eq!(m["text"], "still there?", "the phone's session stays open");
    // A hello with the dead token on node 2 is refused.
    let mut again = WsClient::connect(&nodes[1].base).await.unwrap();
    again
        .send_json(&json!({"type": "hello", "token": alice.token}))
        .await
        .unwrap();
    assert_eq!(until_closed(&mut again, T).await, Some(4001));
}
