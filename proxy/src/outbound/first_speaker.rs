//! Who speaks first on a destination, learned when a client stays silent
//! through detection on a port nothing declares. The first such
//! connection is taken for a server-first protocol and connected (a
//! banner must not stall); whichever side then speaks first is
//! remembered for that address (a server silent for [`BANNER_WAIT`]
//! counts as client-first). On a client-first destination a silent
//! client gets no upstream connection until it sends a byte, so that idle
//! connections do not each open one (5,000 idle clients were 9,000 file
//! descriptors); on a server-first one detection is skipped.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::connect::Io;

/// Which side spoke first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Speaker {
    /// The server (a banner: SMTP, MySQL...).
    Server,
    /// The client.
    Client,
}

/// Destinations remembered, at most.
pub const MAX: usize = 4096;

/// How long a silent client on a client-first destination is held
/// without an upstream (Envoy's TCP idle timeout).
pub const SILENT_CLIENT_WAIT: Duration = Duration::from_secs(3600);

/// How soon a server-first protocol speaks once connected; a server
/// silent this long, with a silent client, makes the destination
/// client-first.
pub const BANNER_WAIT: Duration = Duration::from_secs(1);

/// What was learned, by destination address.
#[derive(Default)]
pub(crate) struct Speakers {
    map: Mutex<HashMap<SocketAddr, Speaker>>,
}

impl Speakers {
    /// What is known of `dst`.
    pub fn get(&self, dst: SocketAddr) -> Option<Speaker> {
        self.map
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&dst)
            .copied()
    }

    /// Remembers `who` for `dst` (while there is room).
    pub fn learn(&self, dst: SocketAddr, who: Speaker) {
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() < MAX || map.contains_key(&dst) {
            map.insert(dst, who);
        }
    }

    /// Waits for the first side to speak on a new connection whose client
    /// was silent, and learns it; what the server sent is passed to the
    /// client.
    pub async fn observe(
        &self,
        dst: SocketAddr,
        app: &mut TcpStream,
        upstream: &mut Box<dyn Io>,
    ) -> std::io::Result<()> {
        let mut first = [0u8; 4096];
        tokio::select! {
            n = upstream.read(&mut first) => {
                let n = n?;
                if n > 0 {
                    self.learn(dst, Speaker::Server);
                    app.write_all(&first[..n]).await?;
                }
            }
            r = app.readable() => {
                r?;
                self.learn(dst, Speaker::Client);
            }
            () = tokio::time::sleep(BANNER_WAIT) => self.learn(dst, Speaker::Client),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learning_is_bounded() {
        let s = Speakers::default();
        for i in 0..(MAX as u32 + 10) {
            s.learn(
                SocketAddr::new(std::net::Ipv4Addr::from(i).into(), 80),
                Speaker::Client,
            );
        }
        assert_eq!(s.map.lock().unwrap().len(), MAX);
        let known = *s.map.lock().unwrap().keys().next().unwrap();
        s.learn(known, Speaker::Server);
        assert_eq!(
            s.get(known),
            Some(Speaker::Server),
            "a known one is updated"
        );
    }
}
