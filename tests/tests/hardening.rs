//! Transport hardening on the client port: half-open requests (slowloris) do not hold sockets.

use std::time::{Duration, Instant};

use ringchat_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
