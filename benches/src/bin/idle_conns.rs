//! Idle-connection memory: opens N authenticated WebSocket connections to a running node
//! (`ringchat serve`, pid given) and reports the node's RSS growth per connection.
//!
//! The figure is marginal: RSS growth from the first 10% of connections to all of them, divided
//! by the connections in between, so start-up and login garbage do not count as per-connection
//! cost.
//!
//! `cargo run --release -p ringchat-benches --bin idle_conns -- --pid <pid> --url http://127.0.0.1:7070 --conns 10000`

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

#[derive(Parser)]
struct Args {
    /// Node client URL.
    #[arg(long, default_value = "http://127.0.0.1:7070")]
    url: String,
    /// Node process id (for RSS).
    #[arg(long)]
    pid: u32,
    /// Connections to open.
    #[arg(long, default_value_t = 10_000)]
    conns: usize,
    /// Distinct users (connections are spread over them; each login is an argon2 hash).
    #[arg(long, default_value_t = 200)]
    users: usize,
    /// Time limit for the whole run, seconds.
    #[arg(long, default_value_t = 600)]
    limit_secs: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let deadline = Instant::now() + Duration::from_secs(args.limit_secs);
    let http = reqwest::Client::new();
    let run = std::process::id();
    let mut tokens = Vec::new();
    for i in 0..args.users {
        let name = format!("idle{run}_{i}");
        let body = json!({"username": name, "password": "benchmark-pass"});
        http.post(format!("{}/v1/users", args.url))
            .json(&body)
            .send()
            .await?
            .error_for_status()?;
        let s: Value = http
            .post(format!("{}/v1/sessions", args.url))
            .json(&body)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        tokens.push(s["token"].as_str().context("token")?.to_string());
    }
    let warm = (args.conns / 10).max(1);
    let mut before = ringchat_benches::rss_bytes(args.pid)?;
    let ws_url = format!("{}/v1/ws", args.url.replacen("http", "ws", 1));
    let mut sockets = Vec::with_capacity(args.conns);
    for i in 0..args.conns {
        if Instant::now() > deadline {
            bail!("time limit reached after {i} connections");
        }
        let (mut ws, _) = tokio_tungstenite::connect_async(&ws_url).await?;
        ws.send(Message::Text(
            json!({"type": "hello", "token": tokens[i % tokens.len()]})
                .to_string()
                .into(),
        ))
        .await?;
        loop {
            match tokio::time::timeout(Duration::from_secs(10), ws.next()).await? {
                Some(Ok(Message::Text(t))) if t.contains("\"caught_up\"") => break,
                Some(Ok(_)) => continue,
                other => bail!("connection {i}: {other:?}"),
            }
        }
        sockets.push(ws);
        if i + 1 == warm {
            tokio::time::sleep(Duration::from_secs(1)).await;
            before = ringchat_benches::rss_bytes(args.pid)?;
        }
        if (i + 1) % 2000 == 0 {
            eprintln!("{} connections", i + 1);
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = ringchat_benches::rss_bytes(args.pid)?;
    let per = (after.saturating_sub(before)) as f64 / (args.conns - warm).max(1) as f64;
    println!(
        "{{\"conns\":{},\"users\":{},\"rss_before\":{},\"rss_after\":{},\"bytes_per_conn\":{:.0}}}",
        args.conns, args.users, before, after, per
    );
    println!(
        "| idle authenticated connections | {} | {:.0} bytes RSS each |",
        args.conns, per
    );
    drop(sockets);
    Ok(())
}
