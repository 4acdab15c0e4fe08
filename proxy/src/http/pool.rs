//! One HTTP/2 connection per key, shared by every request to it
//! (multiplexed), made again when it closes, when it carried
//! `maxRequestsPerConnection` requests, or after `idleTimeout` unused.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::Instant;

use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};

use super::Body;
use crate::traffic::limits::ConnSettings;

/// A pooled connection and how it is used.
struct Pooled {
    sender: SendRequest<Body>,
    uses: u32,
    last_used: Instant,
    settings: ConnSettings,
}

/// HTTP/2 connections by key.
pub struct H2Pool<K> {
    conns: Mutex<HashMap<K, Pooled>>,
}

impl<K: Hash + Eq + Clone> Default for H2Pool<K> {
    fn default() -> Self {
        Self {
            conns: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Hash + Eq + Clone> H2Pool<K> {
    fn cached(&self, key: &K) -> Option<SendRequest<Body>> {
        let mut conns = self
            .conns
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let p = conns.get_mut(key)?;
        let spent = p
            .settings
            .max_requests_per_connection
            .is_some_and(|max| p.uses >= max);
        if p.sender.is_closed() || spent {
            // Requests in flight keep the old connection until they end.
            conns.remove(key);
            return None;
        }
        p.uses += 1;
        p.last_used = Instant::now();
        Some(p.sender.clone())
    }

    /// Drops connections idle longer than their `idleTimeout`; hyper closes
    /// one once its last handle is gone.
    pub fn reap(&self) {
        let now = Instant::now();
        self.conns
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|_, p| {
                p.settings
                    .idle_timeout
                    .is_none_or(|t| now.duration_since(p.last_used) < t)
            });
    }

    /// The live connection for `key`, or a new one from `connect`.
    pub async fn get<F, Fut, IO>(
        &self,
        key: K,
        settings: &ConnSettings,
        connect: F,
    ) -> anyhow::Result<SendRequest<Body>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = anyhow::Result<IO>>,
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        if let Some(s) = self.cached(&key) {
            return Ok(s);
        }
        let io = connect().await?;
        let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .timer(hyper_util::rt::TokioTimer::new())
            .keep_alive_interval(std::time::Duration::from_secs(30))
            .max_header_list_size(super::limits::PEER_MAX_HEADER_LIST)
            .handshake(TokioIo::new(io))
            .await?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "HTTP/2 connection ended");
            }
        });
        self.conns
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(
                key,
                Pooled {
                    sender: sender.clone(),
                    uses: 1,
                    last_used: Instant::now(),
                    settings: *settings,
                },
            );
        Ok(sender)
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use http_body_util::BodyExt;
    use hyper::Response;
    use hyper::service::service_fn;

    use super::*;

    /// A pool whose connections go to an in-memory HTTP/2 server; counts
    /// the connections made.
    async fn get(pool: &H2Pool<u8>, settings: &ConnSettings, made: &Arc<AtomicUsize>) {
        let made = made.clone();
        let mut sender = pool
            .get(1, settings, || async move {
                made.fetch_add(1, Ordering::SeqCst);
                let (client, server) = tokio::io::duplex(64 * 1024);
                tokio::spawn(async move {
                    let svc = service_fn(|_req| async {
                        Ok::<_, Infallible>(Response::new(
                            http_body_util::Empty::<bytes::Bytes>::new(),
                        ))
                    });
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(server), svc)
                        .await;
                });
                Ok(client)
            })
            .await
            .unwrap();
        let req = hyper::Request::builder()
            .uri("http://x/")
            .body(
                http_body_util::Empty::<bytes::Bytes>::new()
                    .map_err(|n| match n {})
                    .boxed(),
            )
            .unwrap();
        assert_eq!(sender.send_request(req).await.unwrap().status(), 200);
    }

    #[tokio::test]
    async fn connections_are_shared_until_spent_or_idle() {
        let made = Arc::new(AtomicUsize::new(0));
        let pool = H2Pool::default();
        let plain = ConnSettings::default();
        for _ in 0..5 {
            get(&pool, &plain, &made).await;
        }
        assert_eq!(made.load(Ordering::SeqCst), 1, "one shared connection");

        let made = Arc::new(AtomicUsize::new(0));
        let pool = H2Pool::default();
        let two = ConnSettings {
            max_requests_per_connection: Some(2),
            ..ConnSettings::default()
        };
        for _ in 0..5 {
            get(&pool, &two, &made).await;
        }
        assert_eq!(made.load(Ordering::SeqCst), 3, "two requests a connection");

        let made = Arc::new(AtomicUsize::new(0));
        let pool = H2Pool::default();
        let idle = ConnSettings {
            idle_timeout: Some(Duration::from_millis(30)),
            ..ConnSettings::default()
        };
        get(&pool, &idle, &made).await;
        pool.reap();
        get(&pool, &idle, &made).await;
        assert_eq!(made.load(Ordering::SeqCst), 1, "not idle yet");
        tokio::time::sleep(Duration::from_millis(60)).await;
        pool.reap();
        get(&pool, &idle, &made).await;
        assert_eq!(made.load(Ordering::SeqCst), 2, "reaped after idleTimeout");
    }
}
