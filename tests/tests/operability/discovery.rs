//! `GET /v1/nodes` (PROTOCOL v1.1) on a real 2-node cluster.

use std::time::{Duration, Instant};

use reqwest::Method;
use ringchat_client::WsClient;
use ringchat_tests::*;
use serde_json::Value;

/// `GET /v1/nodes` at `node`, without a token.
async fn nodes_at(node: &NodeProcess) -> Value {
    let (status, body) = node.http().raw(Method::GET, "/v1/nodes", None, None).await.unwrap();
    assert_eq!(status, 200, "{body}");
    body
}

fn entry(body: &Value, id: u64) -> Option<&Value> {
    body["nodes"].as_array()?.iter().find(|n| n["node_id"] == id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_lists_every_active_node_with_its_public_url_and_live_connection_count() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = vec![start_cluster_node(dir.path(), 1, None, &[]).await];
    let join = nodes[0].cluster_addr.clone();
    // Only advertised, never contacted.
    nodes.push(
        start_cluster_node(
            dir.path(),
            2,
            Some(&join),
            &["--public-url", "https://chat-2.example.test"],
        )
        .await,
    );
    wait_for_status(&nodes[0], Duration::from_secs(60), |s| settled(s, 2, 2)).await;

    let alice = new_user(&nodes[0].base, "alice").await;
    let mut sockets = Vec::new();
    for _ in 0..2 {
        let mut ws = WsClient::connect(&nodes[1].base).await.unwrap();
        ws.hello(&alice.token).await.unwrap();
        ws.recv_type("caught_up", Duration::from_secs(10)).await.unwrap();
        sockets.push(ws);
    }

    // Asked at node 1, node 2's count is node 2's live one.
    let deadline = Instant::now() + Duration::from_secs(10);
    let body = loop {
        let body = nodes_at(&nodes[0]).await;
        if entry(&body, 2).is_some_and(|n| n["connections"] == 2) || Instant::now() > deadline {
            break body;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(body["nodes"].as_array().map(Vec::len), Some(2), "{body}");
    let one = entry(&body, 1).unwrap();
    assert_eq!(one["url"], nodes[0].base.as_str(), "default: http://<listen>");
    assert_eq!(one["connections"], 0);
    let two = entry(&body, 2).unwrap();
    assert_eq!(two["url"], "https://chat-2.example.test");
    assert_eq!(two["connections"], 2, "{body}");
    assert_eq!(
        nodes_at(&nodes[1]).await["nodes"],
        body["nodes"],
        "every node gives one answer"
    );

    // The count follows closes.
    sockets.pop().unwrap().close().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while entry(&nodes_at(&nodes[0]).await, 2).map(|n| n["connections"].clone()) != Some(1.into()) {
        assert!(Instant::now() < deadline, "node 2's count did not drop to 1");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A node that is down is not offered to clients.
    // (Answers are cached for a second, so within a few.)
    nodes[1].kill9();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let body = nodes_at(&nodes[0]).await;
        let ids: Vec<u64> = body["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|n| n["node_id"].as_u64())
            .collect();
        if ids == [1] {
            break;
        }
        assert!(Instant::now() < deadline, "a dead node still offered: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
