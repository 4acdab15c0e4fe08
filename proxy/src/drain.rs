//! Graceful drain on SIGTERM: listeners stop accepting, HTTP/2
//! connections get a GOAWAY and HTTP/1 ones close after the request in
//! flight, and the process waits (bounded by a grace period) until every
//! connection has finished. Readiness fails from the start of the drain.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, watch};

/// Connections still open.
#[derive(Default)]
struct Live {
    count: AtomicUsize,
    idle: Notify,
}

/// The process's side: starts the drain and waits for it.
pub struct Drain {
    signal: watch::Sender<bool>,
    live: Arc<Live>,
}

/// The connections' side: is the drain on, and a guard per connection.
#[derive(Clone)]
pub struct Watch {
    signal: watch::Receiver<bool>,
    live: Arc<Live>,
}

/// Held by a connection while it lives.
pub struct Guard(Arc<Live>);

impl Drop for Guard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// A new drain and its watch.
pub fn channel() -> (Drain, Watch) {
    let (tx, rx) = watch::channel(false);
    let live = Arc::new(Live::default());
    (
        Drain {
            signal: tx,
            live: live.clone(),
        },
        Watch { signal: rx, live },
    )
}

impl Drain {
    /// Starts draining and waits until no connection is left or `grace`
    /// passes; returns how many were still open.
    pub async fn run(self, grace: Duration) -> usize {
        self.signal.send_replace(true);
        let wait = async {
            loop {
                let idle = self.live.idle.notified();
                if self.live.count.load(Ordering::Acquire) == 0 {
                    return;
                }
                idle.await;
            }
        };
        let _ = tokio::time::timeout(grace, wait).await;
        self.live.count.load(Ordering::Acquire)
    }
}

impl Watch {
    /// Whether the drain has started.
    pub fn draining(&self) -> bool {
        *self.signal.borrow()
    }

    /// Resolves once the drain starts.
    pub async fn signaled(&self) {
        let mut rx = self.signal.clone();
        let _ = rx.wait_for(|d| *d).await;
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.live.count.load(Ordering::Acquire)
    }

    /// Counts a connection until the guard drops.
    pub fn guard(&self) -> Guard {
        self.live.count.fetch_add(1, Ordering::AcqRel);
        Guard(self.live.clone())
    }
}

/// A hyper server connection that can be asked to finish.
pub trait Graceful: Future {
    /// HTTP/2: GOAWAY; HTTP/1: close after the request in flight.
    fn graceful_shutdown(self: Pin<&mut Self>);
}

macro_rules! graceful {
    ($($t:ty),*) => {$(
        impl<I, S, B> Graceful for $t
        where
            S: hyper::service::HttpService<hyper::body::Incoming, ResBody = B>,
            S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
            I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
            B: hyper::body::Body + Send + 'static,
            B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
        {
            fn graceful_shutdown(self: Pin<&mut Self>) {
                self.graceful_shutdown()
            }
        }
    )*};
}

graceful!(
    hyper::server::conn::http1::Connection<I, S>,
    hyper::server::conn::http1::UpgradeableConnection<I, S>
);

impl<I, S, B, E> Graceful for hyper::server::conn::http2::Connection<I, S, E>
where
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + 'static,
    B: hyper::body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, B>,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        self.graceful_shutdown()
    }
}

/// Runs `conn` to its end, asking it to finish once the drain starts.
pub async fn serve<C: Graceful>(conn: C, drain: &Watch) -> C::Output {
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        out = conn.as_mut() => return out,
        () = drain.signaled() => conn.as_mut().graceful_shutdown(),
    }
    conn.await
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use bytes::Bytes;
    use http_body_util::{BodyExt, Empty, Full};
    use hyper::service::service_fn;
    use hyper_util::rt::{TokioExecutor, TokioIo};

    use super::*;

    #[tokio::test]
    async fn http2_finishes_the_request_in_flight_and_refuses_new_ones() {
        let (drain, watch) = channel();
        let (client, server) = tokio::io::duplex(64 * 1024);
        let guard = watch.guard();
        let w = watch.clone();
        tokio::spawn(async move {
            let _guard = guard;
            let svc = service_fn(|_req| async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from("done"))))
            });
            let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(server), svc);
            let _ = serve(conn, &w).await;
        });
        let (mut tx, conn) = hyper::client::conn::http2::handshake::<_, _, Empty<Bytes>>(
            TokioExecutor::new(),
            TokioIo::new(client),
        )
        .await
        .unwrap();
        let conn = tokio::spawn(conn);
        let req = || {
            hyper::Request::builder()
                .uri("http://x/")
                .body(Empty::new())
                .unwrap()
        };
        let in_flight = tokio::spawn(tx.send_request(req()));
        tokio::time::sleep(Duration::from_millis(50)).await;
        let draining = tokio::spawn(drain.run(Duration::from_secs(5)));
        let resp = in_flight.await.unwrap().unwrap();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "done");
        // After the GOAWAY the connection ends; nothing new goes on it.
        assert_eq!(draining.await.unwrap(), 0, "every connection finished");
        conn.await.unwrap().unwrap();
        assert!(tx.send_request(req()).await.is_err());
        assert!(watch.draining());
    }

    #[tokio::test(start_paused = true)]
    async fn the_wait_is_bounded_by_the_grace_period() {
        let (drain, watch) = channel();
        let _stuck = watch.guard();
        assert_eq!(drain.run(Duration::from_secs(5)).await, 1);
    }
}
