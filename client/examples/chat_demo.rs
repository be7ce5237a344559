//! A whole conversation through the SDK: two users sign up and log in, Alice opens a DM with
//! Bob, both connect their WebSockets, Alice sends over the socket and Bob sees it live, Alice
//! retries the same message over HTTP (the server returns the original `seq`), Bob answers
//! over HTTP and Alice sees it live, and both read the history back.
//!
//! ```sh
//! cargo run -p ringchat-client --example chat_demo -- --url http://127.0.0.1:7070
//! ```
//!
//! The integration tests run this file against a real node (`tests/tests/docs_and_deploy.rs`),
//! so it stays in step with the server.

use std::error::Error;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ringchat_client::{HttpClient, Message, WsClient};
use serde_json::{json, Value};

/// Errors of the demo: any SDK or decoding error, or a step that did not go as expected.
type DemoError = Box<dyn Error + Send + Sync>;

/// How long any one step may wait for the server.
const STEP: Duration = Duration::from_secs(10);

/// What the demo saw, so a test can check it.
#[derive(Debug)]
pub struct DemoReport {
    /// The DM's channel id.
    pub channel_id: String,
    /// The message Bob received live over his WebSocket.
    pub bob_received: Message,
    /// The message Alice received live over hers.
    pub alice_received: Message,
    /// HTTP status of Alice's retry with the same `client_msg_id` (200: already committed).
    pub retry_status: u16,
    /// The `seq` the retry returned (the original one).
    pub retry_seq: u64,
    /// The channel's history as read back at the end.
    pub history: Vec<Message>,
}

#[tokio::main]
async fn main() -> Result<(), DemoError> {
    let url = url_from_args()?;
    let report = run(&url).await?;
    println!("DM {}", report.channel_id);
    for m in &report.history {
        println!("  #{} {}: {}", m.seq, m.sender_id, m.text);
    }
    println!(
        "retry of seq {} answered {} (nothing new committed)",
        report.retry_seq, report.retry_status
    );
    Ok(())
}

/// `--url <base>` from the command line, default `http://127.0.0.1:7070`.
fn url_from_args() -> Result<String, DemoError> {
    let mut args = std::env::args().skip(1);
    let mut url = "http://127.0.0.1:7070".to_string();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--url" => url = args.next().ok_or("--url needs a value")?,
            other => return Err(format!("unknown argument {other}; usage: chat_demo [--url URL]").into()),
        }
    }
    Ok(url)
}

/// Runs the conversation against the node at `url`.
pub async fn run(url: &str) -> Result<DemoReport, DemoError> {
    let anonymous = HttpClient::new(url);
    // Fresh names each run, so the demo works again on the same node.
    let suffix = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() % 1_000_000_000;
    let password = "correct horse battery";
    let (alice_name, bob_name) = (format!("alice_{suffix}"), format!("bob_{suffix}"));

    // Sign up, then log in: each login is a device with its own token.
    anonymous.signup(&alice_name, password).await?;
    anonymous.signup(&bob_name, password).await?;
    let alice_session = anonymous
        .login(&alice_name, password, Some("demo laptop"), None)
        .await?;
    let bob_session = anonymous.login(&bob_name, password, Some("demo phone"), None).await?;
    let alice = anonymous.with_token(&alice_session.token);
    let bob = anonymous.with_token(&bob_session.token);

    // Alice finds Bob by name and opens their DM (the same channel every time).
    let bob_info = alice.user_by_name(&bob_name).await?;
    let dm = alice.open_dm(&bob_info.user_id).await?;
    let channel_id = dm.channel_id.clone();

    // Both connect: hello, then the catch-up backlog up to `caught_up`.
    let mut alice_ws = WsClient::connect(url).await?;
    alice_ws.hello(&alice_session.token).await?;
    alice_ws.catch_up(STEP).await?;
    let mut bob_ws = WsClient::connect(url).await?;
    let ready = bob_ws.hello(&bob_session.token).await?;
    bob_ws.catch_up(STEP).await?;
    println!("bob is connected; heartbeat {} ms", ready["heartbeat_ms"]);

    // Alice sends over her socket; `sent` comes once the message is durable.
    let sent = alice_ws
        .request(
            json!({"type": "send", "ref": 1, "channel_id": channel_id,
                   "text": "hi Bob, this is Alice", "client_msg_id": "demo-1"}),
            STEP,
        )
        .await?;
    expect_type(&sent, "sent")?;
    let seq = sent["seq"].as_u64().ok_or("sent without a seq")?;

    // Bob gets it live. De-duplicate by (channel_id, seq): delivery is at-least-once.
    let bob_received = next_message(&mut bob_ws, &channel_id).await?;
    bob_ws
        .send_json(&json!({"type": "ack", "channel_id": channel_id, "seq": bob_received.seq}))
        .await?;

    // Alice is unsure the send went through (say her socket dropped): she retries over HTTP
    // with the same client_msg_id. 200 and the original seq: nothing new was committed.
    let (retry_status, retried) = alice
        .send_message(&channel_id, "hi Bob, this is Alice", "demo-1")
        .await?;
    if retried.seq != seq {
        return Err(format!("the retry landed at seq {} instead of {seq}", retried.seq).into());
    }

    // Bob answers over HTTP; Alice gets it live on her socket.
    let (_, reply) = bob.send_message(&channel_id, "hello Alice!", "demo-2").await?;
    let alice_received = loop {
        let m = next_message(&mut alice_ws, &channel_id).await?;
        if m.seq == reply.seq {
            break m;
        }
        // Alice's own message comes back to her devices too; skip it.
    };

    // History: ascending by seq, newest page by default.
    let history = bob.history(&channel_id, None, None, Some(50)).await?.messages;

    alice_ws.close().await?;
    bob_ws.close().await?;
    Ok(DemoReport {
        channel_id,
        bob_received,
        alice_received,
        retry_status,
        retry_seq: retried.seq,
        history,
    })
}

/// The next `message` frame of `channel_id` on `ws`, decoded.
async fn next_message(ws: &mut WsClient, channel_id: &str) -> Result<Message, DemoError> {
    loop {
        let frame = ws.recv_type("message", STEP).await?;
        if frame["channel_id"] == channel_id {
            return Ok(serde_json::from_value(frame)?);
        }
    }
}

/// Fails unless `frame` is of type `kind` (an `error` frame says why).
fn expect_type(frame: &Value, kind: &str) -> Result<(), DemoError> {
    if frame["type"] == kind {
        Ok(())
    } else {
        Err(format!("expected {kind}, got {frame}").into())
    }
}
