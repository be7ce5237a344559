//! Transport hardening on the client port: half-open requests (slowloris) do not hold sockets.

use std::time::{Duration, Instant};

use ringchat_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Longest wait for one reply.
const T: Duration = Duration::from_secs(10);

#[tokio::test]
async fn a_request_whose_headers_never_finish_is_dropped() {
    let node = InProcessNode::start_with(|c| c.header_read_timeout_ms = 500).await;
    let addr = node.base.trim_start_matches("http://").to_string();
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 512];
    // The server must end the connection (EOF or reset), not wait for the rest forever.
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match slow.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "half-sent request still holds its socket after 5 s");
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "closed before the timeout"
    );
    // Complete requests are unaffected.
    assert_eq!(node.http().healthz().await.unwrap(), 200);
    node.stop().await;
}

/// Answers `POST path` with a `Content-Length` of 1,000,000 and one byte of body on each of
/// `count` sockets; returns how long the slowest socket was held by the server.
async fn slow_bodies(addr: &str, path: &str, count: usize, within: Duration) -> Duration {
    let mut socks = Vec::new();
    for _ in 0..count {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n\r\n{{"
        );
        s.write_all(head.as_bytes()).await.unwrap();
        socks.push(s);
    }
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    for mut s in socks {
        let mut reply = Vec::new();
        let ended = tokio::time::timeout(within.saturating_sub(started.elapsed()), async {
            let mut buf = [0u8; 1024];
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => reply.extend_from_slice(&buf[..n]),
                }
            }
        })
        .await;
        assert!(
            ended.is_ok(),
            "a socket with an unfinished body is still open after {within:?}"
        );
        let reply = String::from_utf8_lossy(&reply);
        assert!(
            reply.starts_with("HTTP/1.1 400") && reply.contains("\"invalid\""),
            "expected 400 invalid, got {reply:?}"
        );
        slowest = slowest.max(started.elapsed());
    }
    slowest
}

#[tokio::test]
async fn a_body_that_never_finishes_is_cut_off_and_the_node_keeps_serving() {
    let node = InProcessNode::start_with(|c| c.body_read_timeout_ms = 1_500).await;
    let addr = node.base.trim_start_matches("http://").to_string();
    // Unauthenticated sign-ups and logins: each socket is answered and closed after the
    // timeout, not held for as long as the client likes.
    let slow = slow_bodies(&addr, "/v1/users", 100, Duration::from_secs(8)).await;
    assert!(
        slow >= Duration::from_millis(1_000),
        "cut off before the timeout: {slow:?}"
    );
    let slow = slow_bodies(&addr, "/v1/sessions", 100, Duration::from_secs(8)).await;
    assert!(slow < Duration::from_secs(8));
    // And the node still serves complete requests at once.
    let user = new_user(&node.base, "body").await;
    assert!(user.http.channels().await.is_ok());
    node.stop().await;
}

#[tokio::test]
async fn the_default_body_read_timeout_is_ten_seconds() {
    // The slow-body test above runs with a short timeout; production gets this one.
    assert_eq!(ringchat_node::Config::default().body_read_timeout_ms, 10_000);
}

#[tokio::test]
async fn the_web_page_is_served_with_a_content_security_policy_and_no_framing() {
    let node = InProcessNode::start().await;
    let page = reqwest::get(format!("{}/", node.base)).await.unwrap();
    assert_eq!(page.status(), 200);
    let h = page.headers().clone();
    let header = |name: &str| h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let csp = header("content-security-policy");
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(
        csp.contains("script-src 'sha256-"),
        "inline script allowed by hash only: {csp}"
    );
    assert!(csp.contains("connect-src 'self'"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(header("x-frame-options"), "DENY");
    assert_eq!(header("x-content-type-options"), "nosniff");
    assert!(page.text().await.unwrap().contains("<script>"));
    node.stop().await;
}

/// `POST path` with `body` as `user` must be answered `400 invalid`.
async fn assert_refused_as_invalid(user: &TestUser, path: &str, body: Vec<u8>) {
    let shown = String::from_utf8_lossy(&body).into_owned();
    let (status, reply) = user
        .http
        .raw(reqwest::Method::POST, path, Some(body), Some("application/json"))
        .await
        .unwrap();
    assert_eq!(
        (status, reply["error"]["code"].as_str()),
        (400, Some("invalid")),
        "{shown}: {reply}"
    );
}

#[tokio::test]
async fn bodies_and_frames_must_be_objects_without_duplicate_keys() {
    use ringchat_client::WsClient;
    let node = InProcessNode::start().await;
    let alice = new_user(&node.base, "strict").await;
    let bob = new_user(&node.base, "strictb").await;
    let dm = alice.http.open_dm(&bob.user_id).await.unwrap().channel_id;
    let path = format!("/v1/channels/{dm}/messages");
    for body in [
        r#"["hi"]"#,
        r#"{"text":"a","text":"b"}"#,
        r#"{"text":"hi","client_msg_id":"1","client_msg_id":"2"}"#,
    ] {
        assert_refused_as_invalid(&alice, &path, body.as_bytes().to_vec()).await;
    }
    let (status, _) = alice
        .http
        .raw(
            reqwest::Method::POST,
            &path,
            Some(br#"{"text":"ok"}"#.to_vec()),
            Some("application/json"),
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "a strict body still works");
    let mut ws = WsClient::connect(&node.base).await.unwrap();
    ws.hello(&alice.token).await.unwrap();
    ws.recv_type("caught_up", Duration::from_secs(10)).await.unwrap();
    ws.send_text(format!(
        r#"{{"type":"send","ref":7,"channel_id":"{dm}","text":"a","text":"b","client_msg_id":"w"}}"#
    ))
    .await
    .unwrap();
    let reply = ws.recv_type("error", Duration::from_secs(10)).await.unwrap();
    assert_eq!(
        (reply["code"].as_str(), reply["ref"].as_u64()),
        (Some("invalid"), Some(7)),
        "{reply}"
    );
    node.stop().await;
}

#[tokio::test]
async fn a_login_for_an_unknown_user_takes_as_long_as_one_with_a_wrong_password() {
    let node = InProcessNode::start().await;
    let known = new_user(&node.base, "timing").await;
    let http = node.http();
    let median = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let mut wrong_password = Vec::new();
    let mut unknown_user = Vec::new();
    for i in 0..7 {
        let started = Instant::now();
        assert!(http
            .login(&known.username, "not the password", None, None)
            .await
            .is_err());
        wrong_password.push(started.elapsed());
        let started = Instant::now();
        assert!(http
            .login(&format!("nobody_{i}"), "not the password", None, None)
            .await
            .is_err());
        unknown_user.push(started.elapsed());
    }
    let (known, unknown) = (median(wrong_password), median(unknown_user));
    println!("login median: wrong password {known:?}, unknown user {unknown:?}");
    assert!(
        unknown * 2 >= known && known * 2 >= unknown,
        "timing tells unknown users apart: wrong password {known:?}, unknown user {unknown:?}"
    );
    node.stop().await;
}

/// `POST path` with `body` and `token`: status, `Retry-After` seconds, error code.
async fn post_json(base: &str, path: &str, token: Option<&str>, body: serde_json::Value) -> (u16, Option<u64>, String) {
    let mut request = reqwest::Client::new().post(format!("{base}{path}")).json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let reply = request.send().await.unwrap();
    let status = reply.status().as_u16();
    let retry_after = reply
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let body: serde_json::Value = reply.json().await.unwrap_or_default();
    (
        status,
        retry_after,
        body["error"]["code"].as_str().unwrap_or("").to_string(),
    )
}

#[tokio::test]
async fn sends_are_limited_per_user_across_http_and_every_socket() {
    use ringchat_client::WsClient;
    // A burst of 20, then one send a second: a refill or two during the checks is tolerated,
    // a per-connection limit (a fresh burst of 20 for the second socket) is not.
    let node = InProcessNode::start_with(|c| {
        c.send_rate = 1;
        c.send_burst = 20;
    })
    .await;
    let alice = new_user(&node.base, "spammer").await;
    let bob = new_user(&node.base, "spamtarget").await;
    let dm = alice.http.open_dm(&bob.user_id).await.unwrap().channel_id;
    let path = format!("/v1/channels/{dm}/messages");
    let send_frame = |i: u32| serde_json::json!({"type": "send", "ref": i, "channel_id": dm, "text": "x", "client_msg_id": format!("w{i}")});
    let mut sockets = Vec::new();
    for _ in 0..2 {
        let mut ws = WsClient::connect(&node.base).await.unwrap();
        ws.hello(&alice.token).await.unwrap();
        ws.recv_type("caught_up", T).await.unwrap();
        sockets.push(ws);
    }
    let http_send = |i: u32| {
        post_json(
            &node.base,
            &path,
            Some(&alice.token),
            serde_json::json!({"text": "h", "client_msg_id": format!("h{i}")}),
        )
    };
    // The burst, spent half over the first socket and half over HTTP.
    for i in 0..10 {
        let reply = sockets[0].request(send_frame(i), T).await.unwrap();
        assert_eq!(reply["type"], "sent", "{reply}");
        assert_eq!(http_send(i).await.0, 201);
    }
    // HTTP now answers 429 with Retry-After...
    let mut refused = 0;
    for i in 10..15 {
        let (status, retry_after, code) = http_send(i).await;
        if status == 429 {
            assert_eq!(code, "rate_limited");
            assert!(retry_after.is_some_and(|s| s >= 1), "Retry-After {retry_after:?}");
            refused += 1;
        }
    }
    assert!(refused >= 3, "only {refused} of 5 HTTP sends refused after the burst");
    // ...and so does the second socket, which has sent nothing: the limit is the user's.
    let mut limited = 0;
    for i in 20..25 {
        let reply = sockets[1].request(send_frame(i), T).await.unwrap();
        if reply["type"] == "error" {
            assert_eq!(reply["code"], "rate_limited", "{reply}");
            limited += 1;
        }
    }
    assert!(limited >= 3, "only {limited} of 5 sends on a fresh socket refused");
    // Another user is not affected.
    let (status, _, _) = post_json(&node.base, &path, Some(&bob.token), serde_json::json!({"text": "fine"})).await;
    assert_eq!(status, 201);
    node.stop().await;
}

#[tokio::test]
async fn failed_logins_are_throttled_per_username_then_refused_even_with_the_right_password() {
    let node = InProcessNode::start().await;
    let victim = new_user(&node.base, "victim").await;
    let other = new_user(&node.base, "bystander").await;
    let login = |username: &str, password: &str| {
        post_json(
            &node.base,
            "/v1/sessions",
            None,
            serde_json::json!({"username": username, "password": password}),
        )
    };
    for _ in 0..10 {
        let (status, _, _) = login(&victim.username, "wrong password!").await;
        assert_eq!(status, 401);
    }
    let (status, retry_after, code) = login(&victim.username, "wrong password!").await;
    assert_eq!((status, code.as_str()), (429, "rate_limited"));
    assert!(
        retry_after.is_some_and(|s| (1..=10).contains(&s)),
        "Retry-After {retry_after:?}"
    );
    let (status, _, _) = login(&victim.username, PASSWORD).await;
    assert_eq!(status, 429, "guessing stops, right or wrong: the answer must not tell");
    // Usernames are throttled one by one: another account still logs in.
    let (status, _, _) = login(&other.username, PASSWORD).await;
    assert_eq!(status, 201);
    let failures = reqwest::get(format!("{}/metrics", node.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let counted = failures
        .lines()
        .find_map(|l| l.strip_prefix("ringchat_login_failures_total "))
        .and_then(|v| v.trim().parse::<f64>().ok());
    assert_eq!(counted, Some(10.0), "failed logins are counted");
    node.stop().await;
}

#[tokio::test]
async fn failed_logins_are_throttled_per_source_address() {
    let node = InProcessNode::start().await;
    let real = new_user(&node.base, "realuser").await;
    // Failures over many usernames (none exist) from one address spend its allowance of 100
    // (one more comes back each second, and each attempt costs an argon2 hash).
    let mut refused_after = None;
    for i in 0..200 {
        let (status, _, _) = post_json(
            &node.base,
            "/v1/sessions",
            None,
            serde_json::json!({"username": format!("guess_{i}"), "password": "wrong password!"}),
        )
        .await;
        if status == 429 {
            refused_after = Some(i);
            break;
        }
        assert_eq!(status, 401, "attempt {i}");
    }
    let refused_after = refused_after.expect("an address guessing 200 usernames is throttled");
    assert!(refused_after >= 100, "throttled after only {refused_after} failures");
    // The right password of a real user from that address is refused too, for now.
    let (status, retry_after, code) = post_json(
        &node.base,
        "/v1/sessions",
        None,
        serde_json::json!({"username": real.username, "password": PASSWORD}),
    )
    .await;
    assert_eq!((status, code.as_str()), (429, "rate_limited"));
    assert_eq!(retry_after, Some(1));
    node.stop().await;
}

#[tokio::test]
async fn the_data_dir_is_private_to_its_owner() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let node = InProcessNode::start_with(|c| c.data_dir = data.clone()).await;
    let mode = std::fs::metadata(&data).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "data dir mode {mode:o}");
    node.stop().await;
}

#[tokio::test]
async fn look_alike_usernames_and_hidden_characters_in_names_are_refused() {
    let node = InProcessNode::start().await;
    let http = node.http();
    // U+212A (Kelvin sign) lowercases to `k` under Unicode rules: it must not become "kate".
    let err = http.signup("\u{212A}ate_x", PASSWORD).await.unwrap_err();
    assert!(err.to_string().contains("invalid"), "{err}");
    let alice = new_user(&node.base, "namer").await;
    for name in ["a\u{0}b", "evil\u{202E}gnp.exe", "two\nlines"] {
        let body = serde_json::to_vec(&serde_json::json!({"name": name, "members": []})).unwrap();
        assert_refused_as_invalid(&alice, "/v1/groups", body).await;
    }
    node.stop().await;
}

#[tokio::test]
async fn sign_ups_are_limited_per_source_address() {
    let node = InProcessNode::start_with(|c| c.signups_per_minute = 3).await;
    let http = node.http();
    for i in 0..3 {
        http.signup(&unique_name(&format!("burst{i}_")), PASSWORD)
            .await
            .expect("within the allowance");
    }
    let (status, retry_after, code) = post_json(
        &node.base,
        "/v1/users",
        None,
        serde_json::json!({"username": unique_name("over"), "password": PASSWORD}),
    )
    .await;
    assert_eq!((status, code.as_str()), (429, "rate_limited"));
    // Three a minute: the next one is ~20 s away.
    assert!(
        retry_after.is_some_and(|s| (10..=20).contains(&s)),
        "Retry-After {retry_after:?}"
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_dm_ids_are_keyed_and_stay_the_same_for_the_pair_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = NodeProcess::start(&dir.path().join("n1"), &[]).await;
    let alice = new_user(&node.base, "alice").await;
    let bob = new_user(&node.base, "bob").await;
    let carol = new_user(&node.base, "carol").await;
    let ab = alice.http.open_dm(&bob.user_id).await.unwrap().channel_id;
    // An outsider cannot compute the id from the two user ids any more.
    assert_ne!(
        ab,
        ringchat_node::auth::legacy_dm_channel_id(&alice.user_id, &bob.user_id)
    );
    assert!(ab.starts_with("d_"), "{ab}");
    assert_eq!(bob.http.open_dm(&alice.user_id).await.unwrap().channel_id, ab);
    assert_ne!(alice.http.open_dm(&carol.user_id).await.unwrap().channel_id, ab);
    // The key is stored by the cluster: the same pair names the same DM after a restart.
    node.restart().await;
    let alice = node.http().with_token(&alice.token);
    assert_eq!(alice.open_dm(&bob.user_id).await.unwrap().channel_id, ab);
    node.terminate();
}

/// Finding 6: whether two users have a DM must not be testable by a third. The DM's real id,
/// its old unkeyed id (which an outsider can compute) and a made-up id all get one answer,
/// the same status, code and message, for reading and for posting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outsider_gets_the_same_answer_for_an_existing_dm_and_a_missing_one() {
    let node = InProcessNode::start().await;
    let alice = new_user(&node.base, "alice").await;
    let bob = new_user(&node.base, "bob").await;
    let carol = new_user(&node.base, "carol").await;
    let dm = alice.http.open_dm(&bob.user_id).await.unwrap().channel_id;
    alice.http.send_message(&dm, "private", "m1").await.unwrap();
    let computable = ringchat_node::auth::legacy_dm_channel_id(&alice.user_id, &bob.user_id);
    let made_up = ringchat_node::auth::legacy_dm_channel_id(&carol.user_id, "u_nobody");
    let mut answers = Vec::new();
    for id in [&dm, &computable, &made_up] {
        let read = carol.http.history(id, None, None, None).await.unwrap_err();
        let post = carol.http.send_message(id, "hi", "c1").await.unwrap_err();
        assert_eq!(api_error(&read).0, 403, "{id}: {read}");
        assert_eq!(api_error(&post).0, 403, "{id}: {post}");
        answers.push((read.to_string(), post.to_string()));
    }
    assert!(
        answers.iter().all(|a| *a == answers[0]),
        "an outsider can tell the ids apart: {answers:?}"
    );
    node.stop().await;
}
