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
