//! The relay baseline (see `ringchat_benches::relay`): `relay --listen 127.0.0.1:7170`, runs
//! until SIGINT or SIGTERM.

use std::net::SocketAddr;

use anyhow::{bail, Context};
use clap::Parser;
use tokio::signal::unix::{signal, SignalKind};

#[derive(Parser)]
#[command(about = "minimal WebSocket relay: the physical-limit reference for the loadgen")]
struct Args {
    /// Address to listen on (loopback only).
    #[arg(long, default_value = "127.0.0.1:7170")]
    listen: SocketAddr,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !args.listen.ip().is_loopback() {
        bail!("the relay only listens on loopback");
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("bind {}", args.listen))?;
    let mut term = signal(SignalKind::terminate())?;
    eprintln!("relay listening on {}", args.listen);
    ringchat_benches::relay::serve(listener, async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    })
    .await;
    Ok(())
}
