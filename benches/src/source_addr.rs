//! Client sockets bound to distinct loopback source addresses (127.0.0.1 … 127.0.0.N).
//!
//! One source address has ~28k ephemeral ports towards one server port; binding each socket to
//! one of N loopback addresses before `connect` multiplies that by N, so large runs do not fail
//! with `EADDRNOTAVAIL`. All of 127.0.0.0/8 is loopback on Linux, so no setup is needed.

use std::net::{Ipv4Addr, SocketAddr};

use anyhow::{bail, Context};
use tokio::net::{TcpSocket, TcpStream};

/// The `i`-th of `spread` source addresses: 127.0.0.1 up to 127.0.0.`spread` (at most 254).
pub fn source_for(i: usize, spread: usize) -> Ipv4Addr {
    let n = spread.clamp(1, 254);
    Ipv4Addr::new(127, 0, 0, 1 + (i % n) as u8)
}

/// `host:port` of an `http://…` or `ws://…` URL, which must name a loopback IP literal: the
/// suite only ever drives loopback.
pub fn loopback_target(url: &str) -> anyhow::Result<SocketAddr> {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let host_port = rest.split('/').next().unwrap_or(rest);
    let addr: SocketAddr = host_port
        .parse()
        .with_context(|| format!("{url}: expected http://127.x.y.z:port"))?;
    if !addr.ip().is_loopback() {
        bail!("{url}: only loopback targets are allowed");
    }
    Ok(addr)
}

/// A TCP connection to `target` from `source` (any free port), with Nagle off so small frames
/// leave at once, as a chat client's would.
pub async fn connect_from(source: Ipv4Addr, target: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((source, 0)))?;
    let stream = socket.connect(target).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_cycle_over_the_spread() {
        assert_eq!(source_for(0, 4), Ipv4Addr::new(127, 0, 0, 1));
        assert_eq!(source_for(5, 4), Ipv4Addr::new(127, 0, 0, 2));
        assert_eq!(source_for(300, 1000), Ipv4Addr::new(127, 0, 0, 47));
    }

    #[test]
    fn only_loopback_urls_are_accepted() {
        assert_eq!(
            loopback_target("http://127.0.0.1:7070").unwrap(),
            "127.0.0.1:7070".parse().unwrap()
        );
        assert!(loopback_target("http://10.0.0.1:7070").is_err());
        assert!(loopback_target("http://example.com:80").is_err());
    }
}
