//! Username lookup by id (PROTOCOL v1.1): `GET /v1/users/{user_id}` and `GET /v1/users?ids=…`,
//! on one node and across the two nodes of a cluster whose partitions have one replica each,
//! so a user's record lives on one node only and the other must fetch it.

use std::time::Duration;

use reqwest::Method;
use ringchat_client::HttpClient;
use ringchat_cluster::placement::partition_of;
use ringchat_tests::*;

#[tokio::test]
async fn a_user_is_found_by_id_and_an_unknown_id_is_not_found() {
    let node = InProcessNode::start().await;
    let alice = new_user(&node.base, "alice").await;
    let bob = new_user(&node.base, "bob").await;
    let found = alice.http.user(&bob.user_id).await.unwrap();
    assert_eq!(
        (found.user_id.as_str(), found.username.as_str()),
        (bob.user_id.as_str(), bob.username.as_str())
    );
    assert_eq!(alice.http.user(&alice.user_id).await.unwrap().username, alice.username);
    for unknown in ["u_nobody", &"x".repeat(65), "by-name"] {
        assert_eq!(
            api_error(&alice.http.user(unknown).await.unwrap_err()),
            (404, "not_found".into()),
            "{unknown}"
        );
    }
    // A token is needed, as for every other user call.
    assert_eq!(
        api_error(&node.http().user(&bob.user_id).await.unwrap_err()),
        (401, "unauthorized".into())
    );
    let (status, _) = node
        .http()
        .raw(Method::GET, &format!("/v1/users?ids={}", bob.user_id), None, None)
        .await
        .unwrap();
    assert_eq!(status, 401);
    node.stop().await;
}

#[tokio::test]
async fn a_batch_lookup_answers_known_ids_in_order_and_leaves_unknown_ones_out() {
    let node = InProcessNode::start().await;
    let alice = new_user(&node.base, "alice").await;
    let bob = new_user(&node.base, "bob").await;
    let carol = new_user(&node.base, "carol").await;
    let users = alice
        .http
        .users(&[&carol.user_id, "u_nobody", &bob.user_id, &carol.user_id])
        .await
        .unwrap();
    let got: Vec<(&str, &str)> = users
        .iter()
        .map(|u| (u.user_id.as_str(), u.username.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (carol.user_id.as_str(), carol.username.as_str()),
            (bob.user_id.as_str(), bob.username.as_str())
        ],
        "asked order, each once, the unknown id left out"
    );
    // A browser's URLSearchParams encodes the commas: the same answer.
    let (status, body) = alice
        .http
        .raw(
            Method::GET,
            &format!("/v1/users?ids={}%2C{}", bob.user_id, carol.user_id),
            None,
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["users"].as_array().map(Vec::len), Some(2), "{body}");
    assert!(alice.http.users(&[]).await.unwrap().is_empty());
    node.stop().await;
}

#[tokio::test]
async fn a_batch_lookup_takes_at_most_a_hundred_ids() {
    let node = InProcessNode::start().await;
    let alice = new_user(&node.base, "alice").await;
    let mut ids: Vec<String> = (0..99).map(|i| format!("u_unknown{i}")).collect();
    ids.push(alice.user_id.clone());
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let users = alice.http.users(&refs).await.unwrap();
    assert_eq!(users.len(), 1, "a hundred ids are allowed");
    assert_eq!(users[0].username, alice.username);
    ids.push("u_onemore".into());
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    assert_eq!(
        api_error(&alice.http.users(&refs).await.unwrap_err()),
        (400, "invalid".into())
    );
    for bad in ["/v1/users", "/v1/users?limit=3", "/v1/users?ids=a&x=1"] {
        let (status, body) = alice.http.raw(Method::GET, bad, None, None).await.unwrap();
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some("invalid")),
            "{bad}"
        );
    }
    node.stop().await;
}

/// The node leading the one replica of `id`'s partition, per `cluster status`.
fn home_node(status: &serde_json::Value, id: &str, partitions: u16) -> Option<u64> {
    let p = partition_of(id, partitions);
    status["partitions"]
        .as_array()?
        .iter()
        .find(|row| row["partition"].as_u64() == Some(u64::from(p)))?["leader"]
        .as_u64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_are_looked_up_on_the_node_that_does_not_hold_them() {
    let dir = tempfile::tempdir().unwrap();
    // One replica per partition: each user record is on one node only. Sign-ups come from one
    // address, beyond the default per-address limit.
    let one_replica = ["--replication", "1", "--signups-per-minute", "1000"];
    let first = start_cluster_node(dir.path(), 1, None, &one_replica).await;
    let second = start_cluster_node(dir.path(), 2, Some(&first.cluster_addr), &one_replica).await;
    // Settled, with partitions moved to the new node, so each node holds some alone.
    let leads = |s: &serde_json::Value, node: u64| {
        s["partitions"]
            .as_array()
            .is_some_and(|ps| ps.iter().any(|p| p["leader"].as_u64() == Some(node)))
    };
    let status = wait_for_status(&first, Duration::from_secs(60), |s| {
        settled(s, 2, 1) && leaders_on_preferred_replicas(s) && leads(s, 1) && leads(s, 2)
    })
    .await;
    let nodes = [&first, &second];
    let viewer = new_user(&first.base, "viewer").await;
    // Sign up users on both nodes until each node holds at least one of them (bounded: with 8
    // partitions split over 2 nodes, 40 users all on one node is a 2^-39 chance).
    let mut users: Vec<(String, String, u64)> = Vec::new();
    for i in 0..40 {
        let on = nodes[i % 2];
        let name = unique_name("lookup");
        let info = HttpClient::new(&on.base).signup(&name, PASSWORD).await.unwrap();
        let home = home_node(&status, &info.user_id, 8).expect("the partition has a leader");
        users.push((info.user_id, info.username, home));
        if users.iter().any(|u| u.2 == 1) && users.iter().any(|u| u.2 == 2) {
            break;
        }
    }
    assert!(
        users.iter().any(|u| u.2 == 1) && users.iter().any(|u| u.2 == 2),
        "users on both nodes: {users:?}"
    );
    for (n, node) in nodes.iter().enumerate() {
        let here = node.http().with_token(&viewer.token);
        for (id, name, home) in &users {
            let found = here
                .user(id)
                .await
                .unwrap_or_else(|e| panic!("{id} (held by node {home}) on node {}: {e:?}", n + 1));
            assert_eq!(&found.username, name);
        }
        let ids: Vec<&str> = users.iter().map(|u| u.0.as_str()).collect();
        let batch = here.users(&ids).await.unwrap();
        let got: Vec<(&str, &str)> = batch
            .iter()
            .map(|u| (u.user_id.as_str(), u.username.as_str()))
            .collect();
        let want: Vec<(&str, &str)> = users.iter().map(|u| (u.0.as_str(), u.1.as_str())).collect();
        assert_eq!(got, want, "batch on node {}", n + 1);
    }
    // The placement the test relied on did not move while it ran.
    let after = cluster_status(&first).unwrap();
    for (id, _, home) in &users {
        assert_eq!(home_node(&after, id, 8), Some(*home), "{id}");
    }
}
