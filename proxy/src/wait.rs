//! `mesh-proxy wait`: polls the proxy's readiness on the pod's loopback
//! until it answers 200, or fails after a timeout. A classic sidecar's
//! postStart hook runs it, so that kubelet starts the app only once the
//! proxy can carry its traffic (Istio's `holdApplicationUntilProxyStarts`).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::ports;

fn ready(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    if s.write_all(b"GET /ready HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.1 200")
}

/// Waits up to `timeout` for the local proxy to be ready.
pub fn until_ready(timeout: Duration) -> anyhow::Result<()> {
    until_ready_at(
        SocketAddr::new(Ipv4Addr::LOCALHOST.into(), ports::HEALTH),
        timeout,
    )
}

fn until_ready_at(addr: SocketAddr, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if ready(addr) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    anyhow::bail!("the proxy was not ready at {addr} within {timeout:?}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn waits_for_200_and_gives_up_after_the_timeout() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            for (i, s) in l.incoming().take(3).enumerate() {
                let mut s = s.unwrap();
                let mut buf = [0u8; 256];
                let _ = s.read(&mut buf);
                let status = if i < 2 {
                    "503 Service Unavailable"
                } else {
                    "200 OK"
                };
                let _ = s.write_all(format!("HTTP/1.1 {status}\r\n\r\n").as_bytes());
            }
        });
        until_ready_at(addr, Duration::from_secs(10)).unwrap();
        server.join().unwrap();
        let closed = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let started = Instant::now();
        assert!(until_ready_at(closed, Duration::from_millis(500)).is_err());
        assert!(started.elapsed() < Duration::from_secs(3));
    }
}
