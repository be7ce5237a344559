//! `ringchat chat`, the terminal client, driven through its stdin and stdout against a node.

use std::process::Stdio;
use std::time::{Duration, Instant};

use ringchat_tests::*;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{ChildStdout, Command};

/// Longest wait for one expected line or frame.
const T: Duration = Duration::from_secs(10);

/// Reads stdout lines until one contains `want`; panics with what was read if none does in time.
async fn expect_line(lines: &mut Lines<BufReader<ChildStdout>>, want: &str) -> String {
    let deadline = Instant::now() + T;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, lines.next_line()).await {
            Ok(Ok(Some(line))) if line.contains(want) => return line,
            Ok(Ok(Some(line))) => seen.push(line),
            other => panic!("no line with {want:?} ({other:?}); read so far: {seen:#?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_terminal_client_opens_a_dm_sends_receives_live_and_reads_history() {
    let node = InProcessNode::start().await;
    let alice = new_user(&node.base, "alice").await;
    let bob = new_user(&node.base, "bob").await;
    let mut bob_ws = ringchat_client::WsClient::connect(&node.base).await.unwrap();
    bob_ws.hello(&bob.token).await.unwrap();
    bob_ws.catch_up(T).await.unwrap();

    let mut child = Command::new(ringchat_bin())
        .args(["chat", "--url", &node.base, "--user", &alice.username])
        .env("RINGCHAT_PASSWORD", PASSWORD)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn ringchat chat");
    let mut stdin = child.stdin.take().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    expect_line(&mut out, "logged in as").await;

    stdin
        .write_all(format!("/dm {}\n", bob.username).as_bytes())
        .await
        .unwrap();
    let opened = expect_line(&mut out, "* open d_").await;
    stdin.write_all(b"hello from the terminal\n").await.unwrap();
    expect_line(&mut out, "* sent seq 1").await;
    let got = bob_ws.recv_type("message", T).await.unwrap();
    assert_eq!(got["text"], "hello from the terminal");
    let channel = got["channel_id"].as_str().unwrap().to_string();
    assert!(opened.contains(&channel), "{opened} names {channel}");

    // Bob answers; the terminal shows it live, under his name.
    let reply = json!({"type": "send", "ref": "r", "channel_id": channel, "text": "hi alice", "client_msg_id": "b1"});
    bob_ws.request(reply, T).await.unwrap();
    expect_line(&mut out, &format!("[{channel}] {}: hi alice", bob.username)).await;

    stdin.write_all(b"/history\n").await.unwrap();
    expect_line(&mut out, &format!("[{channel}] me: hello from the terminal")).await;
    expect_line(&mut out, &format!("[{channel}] {}: hi alice", bob.username)).await;
    stdin.write_all(b"/channels\n").await.unwrap();
    expect_line(&mut out, &format!("* {channel} dm")).await;
    stdin.write_all(b"/open g_nope\n").await.unwrap();
    expect_line(&mut out, "* error: you have no channel g_nope").await;

    stdin.write_all(b"/quit\n").await.unwrap();
    let status = tokio::time::timeout(T, child.wait()).await.expect("exits").unwrap();
    assert!(status.success(), "{status}");
    node.stop().await;
}
