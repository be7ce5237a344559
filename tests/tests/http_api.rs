//! The HTTP API, one test per row of PROTOCOL §2 and its error cases, against a real node over
//! real sockets.

use ringchat_client::HttpClient;
use ringchat_tests::*;

#[tokio::test]
async fn signup_creates_users_and_refuses_taken_or_bad_names() {
    let node = InProcessNode::start().await;
    let http = node.http();
    let name = unique_name("Alice");
    let u = http.signup(&name, PASSWORD).await.unwrap();
    assert_eq!(u.username, name.to_lowercase(), "usernames are stored lowercase");
    assert!(!u.user_id.is_empty() && u.user_id.len() <= 64);
    assert_eq!(
        api_error(&http.signup(&name.to_uppercase(), PASSWORD).await.unwrap_err()),
        (409, "conflict".into())
    );
    for bad in ["ab", "has space", "ünïcode", &"x".repeat(33)] {
        assert_eq!(
            api_error(&http.signup(bad, PASSWORD).await.unwrap_err()),
            (400, "invalid".into()),
            "{bad}"
        );
    }
    assert_eq!(
        api_error(&http.signup(&unique_name("p"), "short").await.unwrap_err()).1,
        "invalid"
    );
    assert_eq!(
        api_error(&http.signup(&unique_name("p"), &"x".repeat(1025)).await.unwrap_err()).1,
        "invalid"
    );
    node.stop().await;
}

#[tokio::test]
async fn login_makes_a_device_and_relogin_with_device_id_keeps_it() {
    let node = InProcessNode::start().await;
    let alice = new_user(&node.base, "alice").await;
    let http = node.http();
    let again = http
        .login(&alice.username, PASSWORD, None, Some(&alice.device_id))
        .await
        .unwrap();
    assert_eq!(again.device_id, alice.device_id);
    assert_eq!(again.user_id, alice.user_id);
    assert_ne!(again.token, alice.token);
    let other = http
        .login(&alice.username, PASSWORD, Some("phone"), None)
        .await
        .unwrap();
    assert_ne!(
        other.device_id, alice.device_id,
        "a login without device_id is a new device"
    );
    assert_eq!(
        api_error(
            &http
                .login(&alice.username, "wrong password", None, None)
                .await
                .unwrap_err()
        ),
        (401, "unauthorized".into())
    );
    assert_eq!(
        api_error(&http.login("nobody_here", PASSWORD, None, None).await.unwrap_err()),
        (401, "unauthorized".into())
    );
    assert_eq!(
        api_error(
            &http
                .login(&alice.username, PASSWORD, None, Some("dv_nope"))
                .await
                .unwrap_err()
        ),
        (404, "not_found".into())
    );
    node.stop().await;
}

#[tokio::test]
async fn logout_revokes_the_token() {
    let node = InProcessNode::start().await;
    let alice = new_user(&node.base, "alice").await;
    assert!(alice.http.channels().await.is_ok());
    alice.http.logout().await.unwrap();
    assert_eq!(
        api_error(&alice.http.channels().await.unwrap_err()),
        (401, "unauthorized".into())
    );
    assert_eq!(
        api_error(&node.http().channels().await.unwrap_err()),
        (401, "unauthorized".into())
    );
    assert_eq!(
        api_error(&node.http().with_token("garbage").channels().await.unwrap_err()).0,
        401
    );
    node.stop().await;
}

#[tokio::test]
async fn users_are_found_by_name() {
    let node = InProcessNode::start().await;
    let alice = new_user(&node.base, "alice").await;
    let bob = new_user(&node.base, "bob").await;
    let found = alice.http.user_by_name(&bob.username.to_uppercase()).await.unwrap();
    assert_eq!(found.user_id, bob.user_id);
    assert_eq!(found.username, bob.username);
    assert_eq!(
        api_error(&alice.http.user_by_name("no_such_user").await.unwrap_err()),
        (404, "not_found".into())
    );
    node.stop().await;
}

#[tokio::test]
async fn a_pair_has_exactly_one_dm() {
    let node = InProcessNode::start().await;
    let alice = new_user(&node.base, "alice").await;
    let bob = new_user(&node.base, "bob").await;
    let a = alice.http.open_dm(&bob.user_id).await.unwrap();
    let b = bob.http.open_dm(&alice.user_id).await.unwrap();
    let c = alice.http.open_dm(&bob.user_id).await.unwrap();
    assert_eq!(a.channel_id, b.channel_id);
    assert_eq!(a.channel_id, c.channel_id);
    assert_eq!(a.kind, "dm");
    assert_eq!(a.name, None);
    let mut members = a.members.clone();
    members.sort();
    let mut want = vec![alice.user_id.clone(), bob.user_id.clone()];
    want.sort();
    assert_eq!(members, want);
    assert_eq!(
        api_error(&alice.http.open_dm(&alice.user_id).await.unwrap_err()).1,
        "invalid"
    );
    assert_eq!(
        api_error(&alice.http.open_dm("u_nobody").await.unwrap_err()),
        (404, "not_found".into())
    );
    // DM members are fixed.
    let carol = new_user(&node.base, "carol").await;
    assert_eq!(
        api_error(&alice.http.add_member(&a.channel_id, &carol.user_id).await.unwrap_err()),
        (400, "invalid".into())
    );
    assert_eq!(
        api_error(&alice.http.remove_member(&a.channel_id, &bob.user_id).await.unwrap_err()),
        (400, "invalid".into())
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_hold_100_members_counting_the_creator_and_refuse_the_101st() {
    let node = InProcessNode::start().await;
    let owner = new_user(&node.base, "owner").await;
    let http = node.http();
    let mut ids = Vec::new();
    for _ in 0..100 {
        ids.push(http.signup(&unique_name("m"), PASSWORD).await.unwrap().user_id);
    }
    assert_eq!(
        api_error(&owner.http.create_group("too big", &ids).await.unwrap_err()),
        (400, "group_full".into())
    );
    let g = owner.http.create_group("just right", &ids[..99]).await.unwrap();
    assert_eq!(g.kind, "group");
    assert_eq!(g.name.as_deref(), Some("just right"));
    assert_eq!(g.members.len(), 100);
    assert_eq!(g.members[0], owner.user_id, "the creator is a member");
    assert_eq!(
        api_error(&owner.http.add_member(&g.channel_id, &ids[99]).await.unwrap_err()),
        (400, "group_full".into())
    );
    node.stop().await;
}

#[tokio::test]
async fn member_rules_any_member_adds_self_or_creator_removes() {
    let node = InProcessNode::start().await;
    let owner = new_user(&node.base, "owner").await;
    let bob = new_user(&node.base, "bob").await;
    let carol = new_user(&node.base, "carol").await;
    let dave = new_user(&node.base, "dave").await;
    let g = owner
        .http
        .create_group("team", std::slice::from_ref(&bob.user_id))
        .await
        .unwrap();
    // Any member may add; non-members may not.
    bob.http.add_member(&g.channel_id, &carol.user_id).await.unwrap();
    assert_eq!(
        api_error(&dave.http.add_member(&g.channel_id, &dave.user_id).await.unwrap_err()),
        (403, "forbidden".into())
    );
    // A member cannot remove someone else; the creator can; anyone can leave.
    assert_eq!(
        api_error(&bob.http.remove_member(&g.channel_id, &carol.user_id).await.unwrap_err()),
        (403, "forbidden".into())
    );
    owner.http.remove_member(&g.channel_id, &carol.user_id).await.unwrap();
    bob.http.remove_member(&g.channel_id, &bob.user_id).await.unwrap();
    let list = owner.http.channels().await.unwrap();
    let now = list.iter().find(|c| c.channel_id == g.channel_id).unwrap();
    assert_eq!(now.members, vec![owner.user_id.clone()]);
    assert!(bob
        .http
        .channels()
        .await
        .unwrap()
        .iter()
        .all(|c| c.channel_id != g.channel_id));
    // Removed members can no longer read or post.
    assert_eq!(
        api_error(&bob.http.history(&g.channel_id, None, None, None).await.unwrap_err()).0,
        403
    );
    assert_eq!(
        api_error(&bob.http.send_message(&g.channel_id, "hi", "x").await.unwrap_err()).0,
        403
    );
    // Unknown ids.
    // A channel that does not exist is answered like one the caller is not in (v1.1).
    assert_eq!(
        api_error(&owner.http.add_member("g_nope", &bob.user_id).await.unwrap_err()).0,
        403
    );
    assert_eq!(
        api_error(&owner.http.add_member(&g.channel_id, "u_nope").await.unwrap_err()).0,
        404
    );
    assert_eq!(
        api_error(&owner.http.create_group("x", &["u_nope".to_string()]).await.unwrap_err()).0,
        404
    );
    assert_eq!(
        api_error(&owner.http.create_group("", &[]).await.unwrap_err()).1,
        "invalid"
    );
    node.stop().await;
}

#[tokio::test]
async fn channels_lists_the_callers_channels_with_last_seq() {
    let node = InProcessNode::start().await;
    let alice = new_user(&node.base, "alice").await;
    let bob = new_user(&node.base, "bob").await;
    let carol = new_user(&node.base, "carol").await;
    let dm = alice.http.open_dm(&bob.user_id).await.unwrap();
    let g = alice
        .http
        .create_group("g", std::slice::from_ref(&carol.user_id))
        .await
        .unwrap();
    alice.http.send_message(&g.channel_id, "one", "1").await.unwrap();
    alice.http.send_message(&g.channel_id, "two", "2").await.unwrap();
    let mut mine: Vec<(String, u64)> = alice
        .http
        .channels()
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.channel_id, c.last_seq))
        .collect();
    mine.sort();
    let mut want = vec![(dm.channel_id.clone(), 0), (g.channel_id.clone(), 2)];
    want.sort();
    assert_eq!(mine, want);
    let bobs: Vec<String> = bob
        .http
        .channels()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.channel_id)
        .collect();
    assert_eq!(bobs, vec![dm.channel_id]);
    node.stop().await;
}

#[tokio::test]
async fn messages_get_gap_free_seqs_and_retries_return_the_original() {
    let node = InProcessNode::start().await;
    let alice = new_user(&node.base, "alice").await;
    let bob = new_user(&node.base, "bob").await;
    let dm = alice.http.open_dm(&bob.user_id).await.unwrap();
    let (s1, m1) = alice.http.send_message(&dm.channel_id, "hello", "c-1").await.unwrap();
    let (s2, m2) = bob.http.send_message(&dm.channel_id, "hi", "c-1").await.unwrap();
    assert_eq!((s1, m1.seq), (201, 1));
    assert_eq!(
        (s2, m2.seq),
        (201, 2),
        "same client_msg_id, other sender: a new message"
    );
    assert_eq!(m1.channel_id, dm.channel_id);
    assert!(m1.ts > 1_600_000_000_000);
    let (s3, m3) = alice.http.send_message(&dm.channel_id, "hello", "c-1").await.unwrap();
    assert_eq!((s3, m3.seq, m3.ts), (200, 1, m1.ts), "retry returns the original");
    let page = alice.http.history(&dm.channel_id, None, None, None).await.unwrap();
    assert_eq!(page.messages.len(), 2);
    assert_eq!(page.messages[0].text, "hello");
    assert_eq!(page.messages[0].sender_id, alice.user_id);
    assert_eq!(page.messages[0].client_msg_id.as_deref(), Some("c-1"));
    node.stop().await;
}

#[tokio::test]
async fn text_limits_count_characters_not_bytes() {
    let node = InProcessNode::start().await;
    let alice = new_user(&node.base, "alice").await;
    let bob = new_user(&node.base, "bob").await;
    let dm = alice.http.open_dm(&bob.user_id).await.unwrap();
    // 100,000 four-byte characters (400 KB of UTF-8) are accepted and read back intact.
    let max = "😀".repeat(100_000);
    let (status, sent) = alice.http.send_message(&dm.channel_id, &max, "big").await.unwrap();
    assert_eq!(status, 201);
    let page = bob.http.history(&dm.channel_id, None, None, Some(1)).await.unwrap();
    assert_eq!(page.messages[0].seq, sent.seq);
    assert_eq!(page.messages[0].text, max);
    let over = "é".repeat(100_001);
    assert_eq!(
        api_error(
            &alice
                .http
                .send_message(&dm.channel_id, &over, "over")
                .await
                .unwrap_err()
        ),
        (413, "too_large".into())
    );
    assert_eq!(
        api_error(&alice.http.send_message(&dm.channel_id, "", "empty").await.unwrap_err()),
        (400, "invalid".into())
    );
    assert_eq!(
        api_error(
            &alice
                .http
                .send_message(&dm.channel_id, "x", &"k".repeat(65))
                .await
                .unwrap_err()
        )
        .1,
        "invalid"
    );
    assert_eq!(
        api_error(&alice.http.send_message("d_nope", "x", "k").await.unwrap_err()),
        (403, "forbidden".into())
    );
    node.stop().await;
}

#[tokio::test]
async fn history_pages_before_after_and_limit_exactly() {
    let node = InProcessNode::start().await;
    let alice = new_user(&node.base, "alice").await;
    let bob = new_user(&node.base, "bob").await;
    let carol = new_user(&node.base, "carol").await;
    let dm = alice.http.open_dm(&bob.user_id).await.unwrap();
    for i in 1..=120 {
        alice
            .http
            .send_message(&dm.channel_id, &format!("m{i}"), &format!("c{i}"))
            .await
            .unwrap();
    }
    let seqs = |p: &ringchat_client::HistoryPage| p.messages.iter().map(|m| m.seq).collect::<Vec<_>>();
    let h = &alice.http;
    let cid = &dm.channel_id;
    let newest = h.history(cid, None, None, None).await.unwrap();
    assert_eq!(
        seqs(&newest),
        (71..=120).collect::<Vec<_>>(),
        "default: the newest 50, ascending"
    );
    assert!(newest.has_more);
    let before = h.history(cid, Some(71), None, Some(30)).await.unwrap();
    assert_eq!(seqs(&before), (41..=70).collect::<Vec<_>>());
    assert!(before.has_more);
    let first = h.history(cid, Some(11), None, Some(50)).await.unwrap();
    assert_eq!(seqs(&first), (1..=10).collect::<Vec<_>>());
    assert!(!first.has_more);
    let after = h.history(cid, None, Some(100), Some(10)).await.unwrap();
    assert_eq!(seqs(&after), (101..=110).collect::<Vec<_>>());
    assert!(after.has_more);
    let tail = h.history(cid, None, Some(110), Some(50)).await.unwrap();
    assert_eq!(seqs(&tail), (111..=120).collect::<Vec<_>>());
    assert!(!tail.has_more);
    let between = h.history(cid, Some(20), Some(5), Some(100)).await.unwrap();
    assert_eq!(seqs(&between), (6..=19).collect::<Vec<_>>());
    let all = h.history(cid, None, Some(0), Some(500)).await.unwrap();
    assert_eq!(all.messages.len(), 120);
    assert!(h.history(cid, None, Some(120), None).await.unwrap().messages.is_empty());
    assert_eq!(
        api_error(&h.history(cid, None, None, Some(501)).await.unwrap_err()).1,
        "invalid"
    );
    assert_eq!(
        api_error(&h.history(cid, None, None, Some(0)).await.unwrap_err()).1,
        "invalid"
    );
    assert_eq!(
        api_error(&carol.http.history(cid, None, None, None).await.unwrap_err()),
        (403, "forbidden".into())
    );
    assert_eq!(
        api_error(&h.history("d_nope", None, None, None).await.unwrap_err()),
        api_error(&carol.http.history(cid, None, None, None).await.unwrap_err()),
        "a missing channel and someone else's get the same answer"
    );
    let (status, body) = node
        .http()
        .with_token(&alice.token)
        .raw(
            reqwest::Method::GET,
            &format!("/v1/channels/{cid}/messages?limit=-1"),
            None,
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, 400, "{body:?}");
    node.stop().await;
}

#[tokio::test]
async fn presence_is_visible_only_to_users_sharing_a_channel() {
    let node = InProcessNode::start().await;
    let alice = new_user(&node.base, "alice").await;
    let bob = new_user(&node.base, "bob").await;
    let eve = new_user(&node.base, "eve").await;
    alice.http.open_dm(&bob.user_id).await.unwrap();
    let p = alice.http.presence(&bob.user_id).await.unwrap();
    assert_eq!(p.user_id, bob.user_id);
    assert_eq!(p.status, "offline");
    assert_eq!(p.last_seen, None);
    assert_eq!(
        api_error(&eve.http.presence(&bob.user_id).await.unwrap_err()),
        (403, "forbidden".into())
    );
    let mut ws = ringchat_client::WsClient::connect(&node.base).await.unwrap();
    ws.hello(&bob.token).await.unwrap();
    assert_eq!(alice.http.presence(&bob.user_id).await.unwrap().status, "online");
    ws.close().await.ok();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let p = alice.http.presence(&bob.user_id).await.unwrap();
        if p.status == "offline" {
            assert!(p.last_seen.is_some(), "last_seen set when the last connection ends");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "still online after disconnect");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    node.stop().await;
}

#[tokio::test]
async fn push_registration_validates_platform() {
    let node = InProcessNode::start().await;
    let alice = new_user(&node.base, "alice").await;
    for platform in ["apns", "fcm", "webpush", "test"] {
        alice.http.register_push(platform, "token-1").await.unwrap();
    }
    assert_eq!(
        api_error(&alice.http.register_push("pager", "t").await.unwrap_err()),
        (400, "invalid".into())
    );
    assert_eq!(
        api_error(&alice.http.register_push("fcm", "").await.unwrap_err()),
        (400, "invalid".into())
    );
    assert_eq!(
        api_error(&node.http().register_push("fcm", "t").await.unwrap_err()).0,
        401
    );
    node.stop().await;
}

#[tokio::test]
async fn health_ready_and_metrics() {
    let node = InProcessNode::start().await;
    let http = node.http();
    assert_eq!(http.healthz().await.unwrap(), 200);
    assert_eq!(http.readyz().await.unwrap(), 200);
    let alice = new_user(&node.base, "alice").await;
    let bob = new_user(&node.base, "bob").await;
    let dm = alice.http.open_dm(&bob.user_id).await.unwrap();
    alice.http.send_message(&dm.channel_id, "count me", "m").await.unwrap();
    let text = http.metrics().await.unwrap();
    for name in [
        "ringchat_messages_committed_total",
        "ringchat_commit_latency_seconds_bucket",
        "ringchat_deliveries_total",
    ] {
        assert!(text.contains(name), "{name} missing from /metrics:\n{text}");
    }
    node.stop().await;
}

#[tokio::test]
async fn bad_input_gets_clear_errors_never_a_crash() {
    let node = InProcessNode::start().await;
    let alice = new_user(&node.base, "alice").await;
    let bob = new_user(&node.base, "bob").await;
    let dm = alice.http.open_dm(&bob.user_id).await.unwrap();
    let authed = node.http().with_token(&alice.token);
    let post = |path: String, body: &'static [u8]| {
        let c = authed.clone();
        async move {
            c.raw(
                reqwest::Method::POST,
                &path,
                Some(body.to_vec()),
                Some("application/json"),
            )
            .await
            .unwrap()
        }
    };
    let msgs = format!("/v1/channels/{}/messages", dm.channel_id);
    for body in [
        &b"{not json"[..],
        b"[]",
        b"{\"text\": 5}",
        b"{\"text\": \"x\", \"client_msg_id\": 12}",
        b"{}",
        b"\xff\xfe",
    ] {
        let (status, v) = post(msgs.clone(), body).await;
        assert_eq!(status, 400, "{:?} -> {v:?}", String::from_utf8_lossy(body));
        assert_eq!(v["error"]["code"], "invalid");
        assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let (status, _) = post("/v1/users".into(), b"{\"username\": null}").await;
    assert_eq!(status, 400);
    let (status, _) = post("/v1/sessions".into(), b"{\"username\": \"a\", \"password\": [1]}").await;
    assert_eq!(status, 400);
    // Over 1 MiB of body.
    let huge = format!("{{\"text\": \"{}\"}}", "a".repeat(1_100_000));
    let (status, v) = authed
        .raw(
            reqwest::Method::POST,
            &msgs,
            Some(huge.into_bytes()),
            Some("application/json"),
        )
        .await
        .unwrap();
    assert_eq!(status, 413, "{v:?}");
    assert_eq!(v["error"]["code"], "too_large");
    // Unknown endpoint, missing token.
    let (status, v) = authed
        .raw(reqwest::Method::GET, "/v1/nothing", None, None)
        .await
        .unwrap();
    assert_eq!((status, v["error"]["code"].as_str()), (404, Some("not_found")));
    let (status, v) = node
        .http()
        .raw(reqwest::Method::GET, "/v1/channels", None, None)
        .await
        .unwrap();
    assert_eq!((status, v["error"]["code"].as_str()), (401, Some("unauthorized")));
    // The node still works.
    let _ = HttpClient::new(&node.base).healthz().await.unwrap();
    assert_eq!(
        alice
            .http
            .send_message(&dm.channel_id, "still fine", "ok")
            .await
            .unwrap()
            .0,
        201
    );
    node.stop().await;
}
