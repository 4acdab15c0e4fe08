//! `connectionPool` as Envoy's circuit breakers apply it to one
//! destination host: requests in flight are capped (`http2MaxRequests`,
//! and `tcp.maxConnections`, since an HTTP/1.1 upstream carries one request
//! per connection); over the cap a request waits in a queue of at most
//! `http1MaxPendingRequests`, and beyond that fails at once (503, `UO`).
//! Opaque TCP connections are capped by `tcp.maxConnections` alone.
//! Connection settings (`connectTimeout`, `maxRequestsPerConnection`,
//! `idleTimeout`) go to the connection pool.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use api::proto;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Istio's default connect timeout.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Caps for one host.
#[derive(Debug, Default)]
pub struct Limits {
    caps: Caps,
    requests: Option<Arc<Semaphore>>,
    pending: AtomicU32,
    connections: Option<Arc<Semaphore>>,
}

/// The numbers a `connectionPool` sets.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// Requests in flight (`http2MaxRequests`, bounded by `maxConnections`).
    requests: Option<usize>,
    /// Requests waiting for a slot (`http1MaxPendingRequests`).
    max_pending: Option<u32>,
    /// Opaque connections (`tcp.maxConnections`).
    connections: Option<usize>,
}

impl Caps {
    /// The caps `pool` sets (none when absent).
    pub fn of(pool: Option<&proto::ConnectionPool>) -> Self {
        let positive = |n: u32| usize::try_from(n).ok().filter(|n| *n > 0);
        let conns = pool.and_then(|p| positive(p.max_connections));
        let reqs = pool.and_then(|p| positive(p.max_requests));
        Self {
            requests: match (reqs, conns) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
            max_pending: pool.map(|p| p.max_pending_requests).filter(|n| *n > 0),
            connections: conns,
        }
    }
}

/// Over the limit: answer 503 with `UO`.
#[derive(Debug, PartialEq, Eq)]
pub struct Overflow;

impl Limits {
    /// Limits with `caps`.
    pub fn new(caps: Caps) -> Self {
        let sem = |n: usize| Arc::new(Semaphore::new(n.min(Semaphore::MAX_PERMITS)));
        Self {
            caps,
            requests: caps.requests.map(sem),
            pending: AtomicU32::new(0),
            connections: caps.connections.map(sem),
        }
    }

    /// The caps they enforce.
    pub fn caps(&self) -> Caps {
        self.caps
    }

    /// A slot for one request: at once, after a bounded wait in the pending
    /// queue, or [`Overflow`]. `None`: no cap.
    pub async fn admit(&self) -> Result<Option<OwnedSemaphorePermit>, Overflow> {
        let Some(sem) = &self.requests else {
            return Ok(None);
        };
        if let Ok(p) = sem.clone().try_acquire_owned() {
            return Ok(Some(p));
        }
        let max = self.caps.max_pending.unwrap_or(u32::MAX);
        if self
            .pending
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_err()
        {
            return Err(Overflow);
        }
        let p = sem.clone().acquire_owned().await;
        self.pending.fetch_sub(1, Ordering::AcqRel);
        p.map(Some).map_err(|_| Overflow)
    }

    /// A slot for one opaque TCP connection, or [`Overflow`].
    pub fn connection(&self) -> Result<Option<OwnedSemaphorePermit>, Overflow> {
        match &self.connections {
            None => Ok(None),
            Some(s) => s
                .clone()
                .try_acquire_owned()
                .map(Some)
                .map_err(|_| Overflow),
        }
    }
}

/// How connections to a host are made and kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnSettings {
    /// TCP connect (and TLS handshake) bound.
    pub connect_timeout: Duration,
    /// Requests after which a connection is replaced.
    pub max_requests_per_connection: Option<u32>,
    /// Idle time after which a connection is closed.
    pub idle_timeout: Option<Duration>,
}

impl Default for ConnSettings {
    fn default() -> Self {
        Self {
            connect_timeout: CONNECT_TIMEOUT,
            max_requests_per_connection: None,
            idle_timeout: None,
        }
    }
}

impl ConnSettings {
    /// From `pool` (defaults when absent).
    pub fn compile(pool: Option<&proto::ConnectionPool>) -> Self {
        let dur =
            |d: Option<&proto::Duration>| d.map(api::routing::from_wire).filter(|d| !d.is_zero());
        Self {
            connect_timeout: dur(pool.and_then(|p| p.connect_timeout.as_ref()))
                .unwrap_or(CONNECT_TIMEOUT),
            max_requests_per_connection: pool
                .map(|p| p.max_requests_per_connection)
                .filter(|n| *n > 0),
            idle_timeout: dur(pool.and_then(|p| p.idle_timeout.as_ref())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(yaml: &str) -> proto::ConnectionPool {
        api::routing::connection_pool(&serde_yaml_ng::from_str(yaml).unwrap()).unwrap()
    }

    #[tokio::test]
    async fn over_the_cap_requests_queue_then_overflow() {
        let l = Arc::new(Limits::new(Caps::of(Some(&pool(
            "{tcp: {maxConnections: 5}, http: {http2MaxRequests: 2, http1MaxPendingRequests: 1}}",
        )))));
        let a = l.admit().await.unwrap();
        let _b = l.admit().await.unwrap();
        // The third waits in the queue...
        let queued = tokio::spawn({
            let l = l.clone();
            async move { l.admit().await.map(|p| p.is_some()) }
        });
        while l.pending.load(Ordering::Acquire) == 0 {
            tokio::task::yield_now().await;
        }
        // ...the fourth overflows at once...
        assert_eq!(l.admit().await.unwrap_err(), Overflow);
        // ...and the queued one gets the first free slot.
        drop(a);
        assert_eq!(queued.await.unwrap(), Ok(true));
    }

    #[tokio::test]
    async fn max_connections_caps_requests_too_and_no_settings_no_caps() {
        let l = Limits::new(Caps::of(Some(&pool("{tcp: {maxConnections: 1}}"))));
        let _a = l.admit().await.unwrap();
        let l2 = Limits::new(Caps::of(Some(&pool(
            "{tcp: {maxConnections: 1}, http: {http1MaxPendingRequests: 1}}",
        ))));
        let _x = l2.admit().await.unwrap();
        let _c = l2.connection().unwrap();
        assert_eq!(l2.connection().unwrap_err(), Overflow);
        let none = Limits::new(Caps::of(None));
        for _ in 0..100 {
            assert!(none.admit().await.unwrap().is_none());
        }
        drop(_a);
    }

    #[test]
    fn connection_settings_with_defaults() {
        let s = ConnSettings::compile(Some(&pool(
            "{tcp: {connectTimeout: 250ms}, http: {maxRequestsPerConnection: 1, idleTimeout: 5s}}",
        )));
        assert_eq!(s.connect_timeout, Duration::from_millis(250));
        assert_eq!(s.max_requests_per_connection, Some(1));
        assert_eq!(s.idle_timeout, Some(Duration::from_secs(5)));
        assert_eq!(ConnSettings::compile(None), ConnSettings::default());
    }
}
