//! Clients that hold a server's connections without asking anything (idle) or that send a
//! request's head a few bytes and then stall (slow headers), for the tests of the servers'
//! timeouts and limits.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// `idle` connections to `addr` that send nothing, and `slow` that send the start of a request
/// head and stall.
pub async fn idle_and_slow(addr: &str, idle: usize, slow: usize) -> std::io::Result<Vec<TcpStream>> {
    let mut held = Vec::with_capacity(idle + slow);
    for _ in 0..idle {
        held.push(TcpStream::connect(addr).await?);
    }
    for _ in 0..slow {
        let mut s = TcpStream::connect(addr).await?;
        s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nX-Slow: ").await?;
        held.push(s);
    }
    Ok(held)
}

/// Whether the peer closed `stream` (EOF or a reset) within `within`, whatever it sent first.
pub async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    tokio::time::timeout(within, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}
