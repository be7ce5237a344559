//! The WebSocket protocol (PROTOCOL §3): every client frame, every server event, catch-up and
//! cursors, multi-device delivery, limits and close codes.

use std::time::{Duration, Instant};

use ringchat_client::{ClientError, WsClient};
use ringchat_tests::*;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(5);

async fn connect(base: &str, user: &TestUser) -> WsClient {
    let mut ws = WsClient::connect(base).await.unwrap();
    ws.hello(&user.token).await.unwrap();
    ws.recv_type("caught_up", T).await.unwrap();
    ws
}

fn close_code(r: Result<Value, ClientError>) -> Option<u16> {
    match r {
        Err(ClientError::Closed { code, .. }) => code,
        other => panic!("expected a close, got {other:?}"),
    }
}

#[tokio::test]
async fn hello_gets_ready_then_backlog_then_caught_up() {
    let node = InProcessNode::start().await;
    let alice = new_user(&node.base, "alice").await;
    let bob = new_user(&node.base, "bob").await;
    let dm = alice.http.open_dm(&bob.user_id).await.unwrap();
    for i in 1..=3 {
        alice
            .http
            .send_message(&dm.channel_id, &format!("m{i}"), &format!("c{i}"))
            .await
            .unwrap();
    }
    let mut ws = WsClient::connect(&node.base).await.unwrap();
    let ready = ws.hello(&bob.token).await.unwrap();
    assert_eq!(ready["type"], "ready");
    assert_eq!(ready["user_id"], bob.user_id.as_str());
    assert_eq!(ready["device_id"], bob.device_id.as_str());
    assert_eq!(ready["heartbeat_ms"], 15_000);
    let ch = &ready["channels"][0];
    assert_eq!(ch["channel_id"], dm.channel_id.as_str());
    assert_eq!(ch["kind"], "dm");
    assert_eq!(ch["last_seq"], 3);
    let backlog = ws.catch_up(T).await.unwrap();
    let seqs: Vec<u64> = backlog.iter().map(|m| m["seq"].as_u64().unwrap()).collect();
    assert_eq!(
        seqs,
        vec![1, 2, 3],
        "bob's device existed before the messages: it gets them all"
    );
    assert_eq!(backlog[0]["text"], "m1");
    assert_eq!(backlog[0]["sender_id"], alice.user_id.as_str());
    assert_eq!(backlog[0]["client_msg_id"], "c1");
    assert!(backlog[0]["ts"].as_u64().is_some());
    node.stop().await;
}

#[tokio::test]
async fn bad_token_closes_4001_and_a_non_hello_first_frame_closes_4002() {
    let node = InProcessNode::start().await;
    let mut ws = WsClient::connect(&node.base).await.unwrap();
    ws.send_json(&json!({"type": "hello", "token": "nope"})).await.unwrap();
    assert_eq!(close_code(ws.recv(T).await), Some(4001));
    let mut ws = WsClient::connect(&node.base).await.unwrap();
    ws.send_json(&json!({"type": "ping"})).await.unwrap();
    assert_eq!(close_code(ws.recv(T).await), Some(4002));
    let mut ws = WsClient::connect(&node.base).await.unwrap();
    ws.send_text("{garbage".into()).await.unwrap();
    assert_eq!(close_code(ws.recv(T).await), Some(4002));
    node.stop().await;
}

#[tokio::test]
async fn no_hello_within_10_seconds_closes_4002() {
    let node = InProcessNode::start().await;
    let mut ws = WsClient::connect(&node.base).await.unwrap();
    let started = Instant::now();
    assert_eq!(close_code(ws.recv(Duration::from_secs(15)).await), Some(4002));
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(9_500) && waited < Duration::from_secs(13),
        "{waited:?}"
    );
    node.stop().await;
}

#[tokio::test]
async fn send_over_ws_is_acked_and_every_device_of_every_member_gets_it() {
    let node = InProcessNode::start().await;
    let alice = new_user(&node.base, "alice").await;
    let alice2 = new_device(&node.base, &alice).await;
    let bob = new_user(&node.base, "bob").await;
    let bob2 = new_device(&node.base, &bob).await;
    let carol = new_user(&node.base, "carol").await;
    let g = alice
        .http
        .create_group("trio", std::slice::from_ref(&bob.user_id))
        .await
        .unwrap();
    let mut a1 = connect(&node.base, &alice).await;
    let mut a2 = connect(&node.base, &alice2).await;
    let mut b1 = connect(&node.base, &bob).await;
    let mut b2 = connect(&node.base, &bob2).await;
    let mut c1 = connect(&node.base, &carol).await;
    let sent = a1
        .request(
            json!({"type": "send", "ref": "r1", "channel_id": g.channel_id, "text": "hi all", "client_msg_id": "k1"}),
            T,
        )
        .await
        .unwrap();
    assert_eq!(sent["type"], "sent");
    assert_eq!(sent["ref"], "r1");
    assert_eq!(sent["channel_id"], g.channel_id.as_str());
    assert_eq!(sent["seq"], 1);
    assert!(sent["ts"].as_u64().is_some());
    for ws in [&mut a1, &mut a2, &mut b1, &mut b2] {
        let m = ws.recv_type("message", T).await.unwrap();
        assert_eq!(m["seq"], 1);
        assert_eq!(m["text"], "hi all");
        assert_eq!(m["sender_id"], alice.user_id.as_str());
    }
    // Non-members get nothing; integer refs are echoed as integers.
    assert!(matches!(
        c1.recv_type("message", Duration::from_millis(300)).await,
        Err(ClientError::Timeout)
    ));
    let retry = a1
        .request(
            json!({"type": "send", "ref": 7, "channel_id": g.channel_id, "text": "hi all", "client_msg_id": "k1"}),
            T,
        )
        .await
        .unwrap();
    assert_eq!(
        (retry["ref"].clone(), retry["seq"].clone()),
        (json!(7), json!(1)),
        "retry returns the original seq"
    );
    let err = c1
        .request(
            json!({"type": "send", "ref": "x", "channel_id": g.channel_id, "text": "let me in", "client_msg_id": "z"}),
            T,
        )
        .await
        .unwrap();
    assert_eq!(
        (err["type"].as_str(), err["code"].as_str()),
        (Some("error"), Some("forbidden"))
    );
    let err = a1
        .request(json!({"type": "send", "ref": "big", "channel_id": g.channel_id, "text": "é".repeat(100_001), "client_msg_id": "b"}), T)
        .await
        .unwrap();
    assert_eq!(err["code"], "too_large");
    let ok = a1
        .request(json!({"type": "send", "ref": "max", "channel_id": g.channel_id, "text": "é".repeat(100_000), "client_msg_id": "m"}), T)
        .await
        .unwrap();
    assert_eq!(ok["type"], "sent");
    node.stop().await;
}

#[tokio::test]
async fn catch_up_respects_the_cursor_and_acks_never_move_back() {
    let node = InProcessNode::start().await;
    let alice = new_user(&node.base, "alice").await;
    let bob = new_user(&node.base, "bob").await;
    let dm = alice.http.open_dm(&bob.user_id).await.unwrap();
    for i in 1..=5 {
        alice
            .http
            .send_message(&dm.channel_id, &format!("m{i}"), &format!("c{i}"))
            .await
            .unwrap();
    }
    let mut ws = WsClient::connect(&node.base).await.unwrap();
    ws.hello(&bob.token).await.unwrap();
    assert_eq!(ws.catch_up(T).await.unwrap().len(), 5);
    ws.send_json(&json!({"type": "ack", "channel_id": dm.channel_id, "seq": 4}))
        .await
        .unwrap();
    ws.send_json(&json!({"type": "ack", "channel_id": dm.channel_id, "seq": 2}))
        .await
        .unwrap();
    // A ping round-trip proves the acks were processed (frames are handled in order).
    ws.request(json!({"type": "ping", "ref": "p"}), T).await.unwrap();
    ws.close().await.ok();
    for i in 6..=7 {
        alice
            .http
            .send_message(&dm.channel_id, &format!("m{i}"), &format!("c{i}"))
            .await
            .unwrap();
    }
    let mut ws = WsClient::connect(&node.base).await.unwrap();
    ws.hello(&bob.token).await.unwrap();
    let seqs: Vec<u64> = ws
        .catch_up(T)
        .await
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(
        seqs,
        vec![5, 6, 7],
        "everything above the cursor (4), never what was acked"
    );
    // Ack beyond the last message is refused.
    let err = ws
        .request(
            json!({"type": "ack", "ref": "a", "channel_id": dm.channel_id, "seq": 99}),
            T,
        )
        .await
        .unwrap();
    assert_eq!(err["code"], "invalid");
    node.stop().await;
}

#[tokio::test]
async fn new_devices_and_new_members_start_at_the_current_end() {
    let node = InProcessNode::start().await;
    let alice = new_user(&node.base, "alice").await;
    let bob = new_user(&node.base, "bob").await;
    let carol = new_user(&node.base, "carol").await;
    let g = alice
        .http
        .create_group("g", std::slice::from_ref(&bob.user_id))
        .await
        .unwrap();
    for i in 1..=3 {
        alice
            .http
            .send_message(&g.channel_id, &format!("old{i}"), &format!("o{i}"))
            .await
            .unwrap();
    }
    // A new phone does not stream old history.
    let bob_phone = new_device(&node.base, &bob).await;
    let mut ws = WsClient::connect(&node.base).await.unwrap();
    ws.hello(&bob_phone.token).await.unwrap();
    assert!(ws.catch_up(T).await.unwrap().is_empty());
    // A member added later starts at the join point too, but sees newer messages.
    alice.http.add_member(&g.channel_id, &carol.user_id).await.unwrap();
    alice.http.send_message(&g.channel_id, "new", "n1").await.unwrap();
    let mut cw = WsClient::connect(&node.base).await.unwrap();
    cw.hello(&carol.token).await.unwrap();
    let got = cw.catch_up(T).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["seq"], 4);
    // Older messages come from history.
    let h = cw
        .request(
            json!({"type": "history", "ref": 1, "channel_id": g.channel_id, "before": 4}),
            T,
        )
        .await
        .unwrap();
    assert_eq!(h["type"], "history");
    assert_eq!(h["channel_id"], g.channel_id.as_str());
    assert_eq!(h["has_more"], false);
    let seqs: Vec<u64> = h["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, vec![1, 2, 3]);
    node.stop().await;
}

#[tokio::test]
async fn presence_subscribe_reports_state_and_changes_only_for_shared_channels() {
    let node = InProcessNode::start().await;
    let alice = new_user(&node.base, "alice").await;
    let bob = new_user(&node.base, "bob").await;
    let eve = new_user(&node.base, "eve").await;
    alice.http.open_dm(&bob.user_id).await.unwrap();
    let mut a = connect(&node.base, &alice).await;
    let st = a
        .request(
            json!({"type": "presence_subscribe", "ref": "p", "user_ids": [bob.user_id]}),
            T,
        )
        .await
        .unwrap();
    assert_eq!(st["type"], "presence_state");
    assert_eq!(st["users"][0]["user_id"], bob.user_id.as_str());
    assert_eq!(st["users"][0]["status"], "offline");
    let b = connect(&node.base, &bob).await;
    let on = a.recv_type("presence", T).await.unwrap();
    assert_eq!(
        (on["user_id"].as_str(), on["status"].as_str()),
        (Some(bob.user_id.as_str()), Some("online"))
    );
    drop(b);
    let off = a.recv_type("presence", T).await.unwrap();
    assert_eq!(off["status"], "offline");
    assert!(off["last_seen"].as_u64().is_some());
    let err = a
        .request(
            json!({"type": "presence_subscribe", "ref": "q", "user_ids": [eve.user_id]}),
            T,
        )
        .await
        .unwrap();
    assert_eq!(
        (err["type"].as_str(), err["code"].as_str()),
        (Some("error"), Some("forbidden"))
    );
    let too_many: Vec<String> = (0..1001).map(|i| format!("u_{i}")).collect();
    let err = a
        .request(
            json!({"type": "presence_subscribe", "ref": "r", "user_ids": too_many}),
            T,
        )
        .await
        .unwrap();
    assert_eq!(err["code"], "invalid");
    node.stop().await;
}

#[tokio::test]
async fn presence_events_stop_once_two_users_no_longer_share_a_channel() {
    let node = InProcessNode::start().await;
    let alice = new_user(&node.base, "alice").await;
    let bob = new_user(&node.base, "bob").await;
    let mallory = new_user(&node.base, "mallory").await;
    // Mallory puts Bob in a group (no consent needed) and watches him; Alice shares a DM.
    let group = mallory
        .http
        .create_group("g", std::slice::from_ref(&bob.user_id))
        .await
        .unwrap();
    alice.http.open_dm(&bob.user_id).await.unwrap();
    let subscribe = json!({"type": "presence_subscribe", "ref": "p", "user_ids": [bob.user_id]});
    let mut m = connect(&node.base, &mallory).await;
    assert_eq!(m.request(subscribe.clone(), T).await.unwrap()["type"], "presence_state");
    let mut a = connect(&node.base, &alice).await;
    assert_eq!(a.request(subscribe, T).await.unwrap()["type"], "presence_state");
    let b = connect(&node.base, &bob).await;
    assert_eq!(m.recv_type("presence", T).await.unwrap()["status"], "online");
    assert_eq!(a.recv_type("presence", T).await.unwrap()["status"], "online");

    // Bob leaves the group: from then on Mallory learns nothing of him, Alice still does.
    bob.http.remove_member(&group.channel_id, &bob.user_id).await.unwrap();
    drop(b);
    assert_eq!(a.recv_type("presence", T).await.unwrap()["status"], "offline");
    let b = connect(&node.base, &bob).await;
    assert_eq!(a.recv_type("presence", T).await.unwrap()["status"], "online");
    drop(b);
    assert_eq!(a.recv_type("presence", T).await.unwrap()["status"], "offline");
    // Alice has seen both later events, so they were sent; Mallory got neither.
    let leaked = m.recv_type("presence", Duration::from_millis(500)).await;
    assert!(leaked.is_err(), "presence after leaving the group: {leaked:?}");
    node.stop().await;
}

#[tokio::test]
async fn missed_heartbeats_close_the_connection_and_presence_follows() {
    let node = InProcessNode::start_with(|c| c.heartbeat_ms = 300).await;
    let alice = new_user(&node.base, "alice").await;
    let bob = new_user(&node.base, "bob").await;
    alice.http.open_dm(&bob.user_id).await.unwrap();
    let mut b = WsClient::connect(&node.base).await.unwrap();
    let ready = b.hello(&bob.token).await.unwrap();
    assert_eq!(ready["heartbeat_ms"], 300);
    // A client that pings keeps its connection past 2 × heartbeat.
    let mut a = connect(&node.base, &alice).await;
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        a.request(json!({"type": "ping", "ref": 1}), T).await.unwrap();
    }
    // Bob sent nothing: closed within ~600 ms, and he is offline.
    let code = until_closed(&mut b, Duration::from_secs(3)).await;
    assert_eq!(code, Some(4008));
    assert_eq!(alice.http.presence(&bob.user_id).await.unwrap().status, "offline");
    node.stop().await;
}

#[tokio::test]
async fn typing_reaches_other_members_and_read_reaches_all() {
    let node = InProcessNode::start().await;
    let alice = new_user(&node.base, "alice").await;
    let bob = new_user(&node.base, "bob").await;
    let dm = alice.http.open_dm(&bob.user_id).await.unwrap();
    alice.http.send_message(&dm.channel_id, "read me", "r1").await.unwrap();
    let mut a = connect(&node.base, &alice).await;
    let mut b = connect(&node.base, &bob).await;
    a.send_json(&json!({"type": "typing", "channel_id": dm.channel_id}))
        .await
        .unwrap();
    let t = b.recv_type("typing", T).await.unwrap();
    assert_eq!(
        (t["channel_id"].as_str(), t["user_id"].as_str()),
        (Some(dm.channel_id.as_str()), Some(alice.user_id.as_str()))
    );
    assert!(
        matches!(
            a.recv_type("typing", Duration::from_millis(300)).await,
            Err(ClientError::Timeout)
        ),
        "no typing echo to the typer"
    );
    b.send_json(&json!({"type": "read", "channel_id": dm.channel_id, "seq": 1}))
        .await
        .unwrap();
    for ws in [&mut a, &mut b] {
        let r = ws.recv_type("read", T).await.unwrap();
        assert_eq!(
            (r["user_id"].as_str(), r["seq"].as_u64()),
            (Some(bob.user_id.as_str()), Some(1))
        );
        assert_eq!(r["channel_id"], dm.channel_id.as_str());
    }
    let pong = a.request(json!({"type": "ping", "ref": "abc"}), T).await.unwrap();
    assert_eq!(
        (pong["type"].as_str(), pong["ref"].as_str()),
        (Some("pong"), Some("abc"))
    );
    node.stop().await;
}

#[tokio::test]
async fn channel_events_tell_members_about_joins_leaves_and_updates() {
    let node = InProcessNode::start().await;
    let alice = new_user(&node.base, "alice").await;
    let bob = new_user(&node.base, "bob").await;
    let carol = new_user(&node.base, "carol").await;
    let mut a = connect(&node.base, &alice).await;
    let mut b = connect(&node.base, &bob).await;
    let mut c = connect(&node.base, &carol).await;
    let g = alice
        .http
        .create_group("crew", std::slice::from_ref(&bob.user_id))
        .await
        .unwrap();
    for ws in [&mut a, &mut b] {
        let e = ws.recv_type("channel", T).await.unwrap();
        assert_eq!(e["event"], "joined");
        assert_eq!(e["channel"]["channel_id"], g.channel_id.as_str());
        assert_eq!(e["channel"]["name"], "crew");
    }
    bob.http.add_member(&g.channel_id, &carol.user_id).await.unwrap();
    let e = c.recv_type("channel", T).await.unwrap();
    assert_eq!(e["event"], "joined");
    assert_eq!(e["channel"]["members"].as_array().unwrap().len(), 3);
    for ws in [&mut a, &mut b] {
        assert_eq!(ws.recv_type("channel", T).await.unwrap()["event"], "updated");
    }
    alice.http.remove_member(&g.channel_id, &bob.user_id).await.unwrap();
    assert_eq!(b.recv_type("channel", T).await.unwrap()["event"], "left");
    for ws in [&mut a, &mut c] {
        let e = ws.recv_type("channel", T).await.unwrap();
        assert_eq!(e["event"], "updated");
        assert_eq!(e["channel"]["members"].as_array().unwrap().len(), 2);
    }
    node.stop().await;
}

#[tokio::test]
async fn malformed_frames_get_error_frames_and_the_connection_stays() {
    let node = InProcessNode::start().await;
    let alice = new_user(&node.base, "alice").await;
    let mut a = connect(&node.base, &alice).await;
    let cases = [
        json!({"type": "nope", "ref": 1}),
        json!({"type": "ack", "ref": 2, "channel_id": "d_x", "seq": -1}),
        json!({"type": "ack", "ref": 3, "channel_id": "d_x", "seq": "five"}),
        json!({"type": "send", "ref": 4, "channel_id": 5, "text": "x"}),
        json!({"type": "history", "ref": 5, "channel_id": "d_x", "limit": 1e30}),
        json!({"type": "presence_subscribe", "ref": 6, "user_ids": "all"}),
        json!({"ref": 7}),
    ];
    for (i, frame) in cases.iter().enumerate() {
        let e = a.request(frame.clone(), T).await.unwrap();
        assert_eq!(
            (e["type"].as_str(), e["code"].as_str()),
            (Some("error"), Some("invalid")),
            "case {i}: {e}"
        );
        assert_eq!(e["ref"], i as u64 + 1);
    }
    for raw in ["{", "[]", "null", "\"hello\"", "{\"type\": 12}"] {
        a.send_text(raw.to_string()).await.unwrap();
        let e = a.recv_type("error", T).await.unwrap();
        assert_eq!(e["code"], "invalid", "{raw}");
    }
    a.send_binary(vec![0, 159, 146, 150]).await.unwrap();
    assert_eq!(a.recv_type("error", T).await.unwrap()["code"], "invalid");
    let unknown = a
        .request(json!({"type": "history", "ref": "h", "channel_id": "g_unknown"}), T)
        .await
        .unwrap();
    // PROTOCOL v1.1: a channel that does not exist is answered like one the caller is not in.
    assert_eq!(unknown["code"], "forbidden");
    assert_eq!(
        a.request(json!({"type": "ping", "ref": 8}), T).await.unwrap()["type"],
        "pong"
    );
    node.stop().await;
}

#[tokio::test]
async fn a_frame_over_1_mib_before_hello_also_closes_with_1009() {
    let node = InProcessNode::start().await;
    let mut ws = ringchat_client::WsClient::connect(&node.base).await.unwrap();
    let big = format!("{{\"type\":\"hello\",\"token\":\"{}\"}}", "x".repeat((1 << 20) + 10));
    ws.send_text(big).await.unwrap();
    assert_eq!(until_closed(&mut ws, T).await, Some(1009));
    node.stop().await;
}

#[tokio::test]
async fn frames_over_1_mib_close_with_1009() {
    let node = InProcessNode::start().await;
    let alice = new_user(&node.base, "alice").await;
    let mut a = connect(&node.base, &alice).await;
    let big = format!("{{\"type\":\"ping\",\"pad\":\"{}\"}}", "x".repeat((1 << 20) + 10));
    a.send_text(big).await.unwrap();
    assert_eq!(until_closed(&mut a, T).await, Some(1009));
    node.stop().await;
}

#[tokio::test]
async fn sends_over_the_rate_limit_get_rate_limited_errors() {
    let node = InProcessNode::start_with(|c| {
        c.send_rate = 2;
        c.send_burst = 3;
    })
    .await;
    let alice = new_user(&node.base, "alice").await;
    let bob = new_user(&node.base, "bob").await;
    let dm = alice.http.open_dm(&bob.user_id).await.unwrap();
    let mut a = connect(&node.base, &alice).await;
    let mut limited = 0;
    let mut sent = 0;
    for i in 0..10 {
        let r = a
            .request(json!({"type": "send", "ref": i, "channel_id": dm.channel_id, "text": "spam", "client_msg_id": format!("s{i}")}), T)
            .await
            .unwrap();
        match r["type"].as_str() {
            Some("sent") => sent += 1,
            Some("error") => {
                assert_eq!(r["code"], "rate_limited");
                limited += 1;
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(sent >= 3 && limited >= 5, "sent {sent}, limited {limited}");
    node.stop().await;
}

#[tokio::test]
async fn a_client_that_stops_reading_is_disconnected_with_4008() {
    stalled_reader_is_cut_off(|c| c.outbound_queue = 16).await;
}

#[tokio::test]
async fn a_stalled_connections_queue_is_bounded_in_bytes_not_only_frames() {
    // The default queue holds 1,024 frames; 200 frames of 100 KB pass its 8 MiB byte bound
    // first (the kernel's socket buffers hold a few MB of them).
    stalled_reader_is_cut_off(|_| {}).await;
}

/// Bob stops reading while ~20 MB of messages are sent to him: the server closes him with
/// 4008, and everything is there at his next catch-up.
async fn stalled_reader_is_cut_off(tweak: impl FnOnce(&mut ringchat_node::Config)) {
    let node = InProcessNode::start_with(tweak).await;
    let alice = new_user(&node.base, "alice").await;
    let bob = new_user(&node.base, "bob").await;
    let dm = alice.http.open_dm(&bob.user_id).await.unwrap();
    let mut slow = connect(&node.base, &bob).await;
    // Bob does not read while ~20 MB of messages are sent to him, until the server has given
    // up on him. Then he reads: the 4008 close frame waits behind what the socket holds, and
    // the server gives it 10 s (a client that never reads again cannot see any code).
    let text = "z".repeat(100_000);
    let (http, cid) = (alice.http.clone(), dm.channel_id.clone());
    let sender = tokio::spawn(async move {
        for i in 0..200 {
            http.send_message(&cid, &text, &format!("f{i}")).await.unwrap();
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let metrics = node.http().metrics().await.unwrap();
        let closed = metrics
            .lines()
            .any(|l| l.starts_with("ringchat_slow_consumer_disconnects_total") && !l.ends_with(" 0"));
        if closed {
            break;
        }
        assert!(Instant::now() < deadline, "the server never gave up on the slow reader");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(until_closed(&mut slow, Duration::from_secs(20)).await, Some(4008));
    sender.await.unwrap();
    // Nothing was lost for him: it is all there on reconnect.
    let mut again = WsClient::connect(&node.base).await.unwrap();
    again.hello(&bob.token).await.unwrap();
    let backlog = again.catch_up(Duration::from_secs(30)).await.unwrap();
    assert_eq!(backlog.len(), 200);
    node.stop().await;
}

#[tokio::test]
async fn origins_outside_allowed_origins_are_refused_with_403() {
    let node = InProcessNode::start_with(|c| c.allowed_origins = vec!["https://chat.example".into()]).await;
    let alice = new_user(&node.base, "alice").await;
    match WsClient::connect_with_origin(&node.base, "https://evil.example").await {
        Err(ClientError::Api { status, .. }) => assert_eq!(status, 403),
        Err(e) => panic!("expected 403, got {e:?}"),
        Ok(_) => panic!("upgrade from a foreign origin was accepted"),
    }
    let mut ok = WsClient::connect_with_origin(&node.base, "https://chat.example")
        .await
        .unwrap();
    ok.hello(&alice.token).await.unwrap();
    node.stop().await;
}

#[tokio::test]
async fn logout_closes_that_sessions_sockets_with_4001() {
    let node = InProcessNode::start().await;
    let alice = new_user(&node.base, "alice").await;
    let alice2 = new_device(&node.base, &alice).await;
    let mut one = connect(&node.base, &alice).await;
    let mut two = connect(&node.base, &alice2).await;
    alice.http.logout().await.unwrap();
    assert_eq!(until_closed(&mut one, T).await, Some(4001));
    assert_eq!(
        two.request(json!({"type": "ping", "ref": 1}), T).await.unwrap()["type"],
        "pong",
        "other sessions stay"
    );
    let mut again = WsClient::connect(&node.base).await.unwrap();
    again
        .send_json(&json!({"type": "hello", "token": alice.token}))
        .await
        .unwrap();
    assert_eq!(close_code(again.recv(T).await), Some(4001));
    node.stop().await;
}
