//! One HTTP/2 connection per key, shared by every request to it
//! (multiplexed), made again when it closes.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::Mutex;

use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};

use super::Body;

/// HTTP/2 connections by key.
pub struct H2Pool<K> {
    conns: Mutex<HashMap<K, SendRequest<Body>>>,
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
        match conns.get(key) {
            Some(s) if !s.is_closed() => Some(s.clone()),
            Some(_) => {
                conns.remove(key);
                None
            }
            None => None,
        }
    }

    /// The live connection for `key`, or a new one from `connect`.
    pub async fn get<F, Fut, IO>(&self, key: K, connect: F) -> anyhow::Result<SendRequest<Body>>
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
            .insert(key, sender.clone());
        Ok(sender)
    }
}
