//! Delivery from the partition leader survives the leader's death: the leader of a channel's
//! partition delivers each message it commits, so a leader killed right after `sent` may have
//! delivered nothing; the replica elected next delivers its recent commits again.
//!
//! Deterministic with a one-way cut (private network namespace, like `partition.rs`): the
//! leader's packets to the recipient's node are dropped, so its own delivery cannot arrive,
//! then it is killed right after the sender's `sent`. The recipient must still get the message
//! live, from the new leader.

use std::time::Duration;

use ringchat_client::WsClient;
use ringchat_cluster::placement::partition_of;
use ringchat_tests::netns::{isolated, Firewall};
use ringchat_tests::*;
use serde_json::json;

const IPS: [&str; 3] = ["127.0.0.21", "127.0.0.22", "127.0.0.23"];
const T: Duration = Duration::from_secs(10);

#[test]
fn a_recipient_on_a_third_node_gets_a_message_live_when_the_leader_dies_right_after_sent() {
    const NAME: &str = "a_recipient_on_a_third_node_gets_a_message_live_when_the_leader_dies_right_after_sent";
    let Some((firewall, rt)) = isolated(NAME) else {
        return;
    };
    rt.block_on(leader_killed_after_sent(&firewall));
}

async fn connect(base: &str, user: &TestUser) -> WsClient {
    let mut ws = WsClient::connect(base).await.unwrap();
    ws.hello(&user.token).await.unwrap();
    ws.recv_type("caught_up", T).await.unwrap();
    ws
}

/// Sends `text` over `ws` and waits for its `sent`.
async fn send_and_wait_for_sent(ws: &mut WsClient, channel: &str, n: u64, text: &str) {
    let frame =
        json!({"type": "send", "ref": n, "channel_id": channel, "text": text, "client_msg_id": format!("m{n}")});
    let sent = ws.request(frame, T).await.unwrap();
    assert_eq!(sent["type"], "sent", "{sent}");
}

async fn leader_killed_after_sent(firewall: &Firewall) {
    let dir = tempfile::tempdir().unwrap();
    let (mut nodes, status) = start_cluster_at(&IPS, dir.path()).await;
    let partitions = status["partitions"].as_array().unwrap().len() as u16;
    let leader_of = |p: u16| status["partitions"][p as usize]["leader"].as_u64();
    // Alice sends through node 1, Bob listens on node 3; the channel's partition is led by
    // node 2, so node 2 delivers (groups have random ids: make them until one lands there).
    let alice = new_user(&nodes[0].base, "alice").await;
    let bob = new_user(&nodes[2].base, "bob").await;
    let mut channel = None;
    for _ in 0..64 {
        let g = alice
            .http
            .create_group("g", std::slice::from_ref(&bob.user_id))
            .await
            .unwrap();
        if leader_of(partition_of(&g.channel_id, partitions)) == Some(2) {
            channel = Some(g.channel_id);
            break;
        }
    }
    let channel = channel.expect("no group landed on a partition led by node 2 in 64 tries");
    let mut a = connect(&nodes[0].base, &alice).await;
    let mut b = connect(&nodes[2].base, &bob).await;
    // Delivery works while all is well.
    send_and_wait_for_sent(&mut a, &channel, 1, "before").await;
    assert_eq!(b.recv_type("message", T).await.unwrap()["text"], "before");
    // Node 2's packets to node 3 are dropped: its delivery to Bob cannot arrive (nor its
    // appends to node 3; node 1 still makes the majority). Then it dies right after `sent`.
    firewall.cut(IPS[1], IPS[2]);
    send_and_wait_for_sent(&mut a, &channel, 2, "after").await;
    nodes[1].kill9();
    let started = std::time::Instant::now();
    // The cut stays until Bob has the message: the dead node's kernel keeps retransmitting
    // what its sockets still held, and would deliver its last batch once healed.
    // The new leader delivers its recent commits again: seq 1 may come back first (a client
    // drops it by seq, as this one does).
    let deadline = started + Duration::from_secs(15);
    let m = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match b.recv_type("message", left).await {
            Ok(m) if m["seq"].as_u64() == Some(1) => continue,
            other => break other,
        }
    };
    let dropped = firewall.heal();
    let m = m.unwrap();
    assert_eq!((m["text"].as_str(), m["seq"].as_u64()), (Some("after"), Some(2)), "{m}");
    println!(
        "message delivered live {:?} after the leader was killed",
        started.elapsed()
    );
    assert!(dropped > 0, "the cut matched no packet: the test did not test anything");
    let again = metric_sum(&nodes[0], "ringchat_redelivered_on_leader_change_total").await
        + metric_sum(&nodes[2], "ringchat_redelivered_on_leader_change_total").await;
    assert!(again > 0, "the new leader delivered nothing again");
}
