//! Push notifications to a local HTTP receiver: sent for offline members only, retried after
//! the gateway fails, and still delivered after the node is killed and restarted.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use ringchat_tests::*;
use serde_json::Value;
use tokio::sync::Mutex;

/// A push gateway on loopback that fails the first `fail_first` requests.
#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<Value>>>,
    fail_first: Arc<AtomicU32>,
    failures: Arc<AtomicU32>,
}

async fn receive(State(r): State<Receiver>, Json(body): Json<Value>) -> StatusCode {
    if r.fail_first.load(Ordering::SeqCst) > 0 {
        r.fail_first.fetch_sub(1, Ordering::SeqCst);
        r.failures.fetch_add(1, Ordering::SeqCst);
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    r.got.lock().await.push(body);
    StatusCode::OK
}

async fn start_receiver(fail_first: u32) -> (Receiver, String) {
    let r = Receiver::default();
    r.fail_first.store(fail_first, Ordering::SeqCst);
    let app = Router::new().route("/push", post(receive)).with_state(r.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/push", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (r, url)
}

async fn wait_for_pushes(r: &Receiver, n: usize, within: Duration) -> Vec<Value> {
    let deadline = Instant::now() + within;
    loop {
        let got = r.got.lock().await.clone();
        if got.len() >= n || Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_member_gets_a_push_retried_until_the_gateway_accepts() {
    let (receiver, url) = start_receiver(2).await;
    let node = InProcessNode::start_with(|c| c.push_gateway = Some(url.clone())).await;
    let alice = new_user(&node.base, "alice").await;
    let bob = new_user(&node.base, "bob").await;
    bob.http.register_push("test", "bob-device-token").await.unwrap();
    let dm = alice.http.open_dm(&bob.user_id).await.unwrap();
    let long = "ü".repeat(150);
    let (_, sent) = alice.http.send_message(&dm.channel_id, &long, "p1").await.unwrap();
    let got = wait_for_pushes(&receiver, 1, Duration::from_secs(20)).await;
    assert_eq!(got.len(), 1, "push not delivered");
    assert!(
        receiver.failures.load(Ordering::SeqCst) >= 2,
        "gateway failures were not retried"
    );
    let p = &got[0];
    assert_eq!(p["user_id"], bob.user_id.as_str());
    assert_eq!(p["device_id"], bob.device_id.as_str());
    assert_eq!(p["platform"], "test");
    assert_eq!(p["token"], "bob-device-token");
    assert_eq!(p["channel_id"], dm.channel_id.as_str());
    assert_eq!(p["seq"], sent.seq);
    assert_eq!(p["sender_id"], alice.user_id.as_str());
    assert_eq!(
        p["preview"].as_str().unwrap().chars().count(),
        100,
        "preview is the first 100 chars"
    );
    // The sender never gets a push for its own message.
    assert!(got.iter().all(|p| p["user_id"] != alice.user_id.as_str()));
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_members_get_no_push() {
    let (receiver, url) = start_receiver(0).await;
    let node = InProcessNode::start_with(|c| c.push_gateway = Some(url.clone())).await;
    let alice = new_user(&node.base, "alice").await;
    let bob = new_user(&node.base, "bob").await;
    bob.http.register_push("fcm", "tok").await.unwrap();
    let mut ws = ringchat_client::WsClient::connect(&node.base).await.unwrap();
    ws.hello(&bob.token).await.unwrap();
    let dm = alice.http.open_dm(&bob.user_id).await.unwrap();
    alice
        .http
        .send_message(&dm.channel_id, "hello online bob", "o1")
        .await
        .unwrap();
    ws.recv_type("message", Duration::from_secs(5)).await.unwrap();
    // Give the push worker time to (wrongly) push; then go offline and expect one push.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(receiver.got.lock().await.is_empty(), "pushed to an online user");
    ws.close().await.ok();
    tokio::time::sleep(Duration::from_millis(300)).await;
    alice
        .http
        .send_message(&dm.channel_id, "hello offline bob", "o2")
        .await
        .unwrap();
    let got = wait_for_pushes(&receiver, 1, Duration::from_secs(15)).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["preview"], "hello offline bob");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_pushes_survive_a_crash_and_are_sent_after_restart() {
    let (receiver, url) = start_receiver(u32::MAX).await;
    let dir = tempfile::tempdir().unwrap();
    let mut node = NodeProcess::start(&dir.path().join("n1"), &["--push-gateway", &url]).await;
    let alice = new_user(&node.base, "alice").await;
    let bob = new_user(&node.base, "bob").await;
    bob.http.register_push("apns", "bob-apns").await.unwrap();
    let dm = alice.http.open_dm(&bob.user_id).await.unwrap();
    let (_, sent) = alice
        .http
        .send_message(&dm.channel_id, "survive me", "s1")
        .await
        .unwrap();
    // Wait until the node has tried (and failed) at least once, then crash it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while receiver.failures.load(Ordering::SeqCst) == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(receiver.failures.load(Ordering::SeqCst) > 0, "no push attempted");
    node.kill9();
    receiver.fail_first.store(0, Ordering::SeqCst);
    node.restart().await;
    let got = wait_for_pushes(&receiver, 1, Duration::from_secs(20)).await;
    assert!(!got.is_empty(), "pending push lost in the crash");
    assert!(got.iter().all(|p| p["seq"] == sent.seq && p["token"] == "bob-apns"));
}
