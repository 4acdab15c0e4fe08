//! Live requests for `meshctl tap` and `top` (Linkerd's tap): while a
//! client watches `/tap` on the admin port, each finished request, both
//! directions, is broadcast with its headers (never its body; the values
//! of credentials are masked) and its outcome. With no one watching, the
//! request path checks one counter and builds nothing.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hyper::Request;
use serde::Serialize;
use tokio::sync::broadcast;

/// Events kept for a slow watcher before it misses some.
const BACKLOG: usize = 1024;

/// Headers whose values a tap never shows.
const MASKED: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-mesh-peer",
    "x-mesh-service",
];

/// One finished request.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// Unix milliseconds when it started.
    pub start_ms: u64,
    /// `inbound` (served by this pod) or `outbound` (sent by it).
    pub direction: &'static str,
    /// The method.
    pub method: String,
    /// The authority.
    pub authority: String,
    /// The path and query.
    pub path: String,
    /// Request headers, names and values (credentials masked).
    pub headers: Vec<(String, String)>,
    /// The response's status.
    pub status: u16,
    /// The gRPC status, when one came.
    pub grpc_status: Option<String>,
    /// Milliseconds to the last byte of the response.
    pub latency_ms: f64,
    /// Envoy's response flags.
    pub flags: String,
    /// The client's workload and principal.
    pub source: String,
    /// The client's principal.
    pub source_principal: String,
    /// The server's workload.
    pub destination: String,
    /// The server's principal.
    pub destination_principal: String,
    /// Whether over mTLS.
    pub tls: bool,
}

/// The head of a request being tapped, taken before it goes on.
#[derive(Debug)]
pub struct Head {
    start: SystemTime,
    method: String,
    authority: String,
    path: String,
    headers: Vec<(String, String)>,
}

impl Head {
    /// The head of `req`.
    pub fn of<B>(req: &Request<B>) -> Self {
        let authority = req
            .uri()
            .authority()
            .map(|a| a.to_string())
            .or_else(|| {
                req.headers()
                    .get(hyper::header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .map(str::to_string)
            })
            .unwrap_or_default();
        Self {
            start: SystemTime::now(),
            method: req.method().to_string(),
            authority,
            path: req
                .uri()
                .path_and_query()
                .map_or("/".into(), |p| p.to_string()),
            headers: req
                .headers()
                .iter()
                .map(|(k, v)| {
                    let value = if MASKED.contains(&k.as_str()) {
                        "<masked>".to_string()
                    } else {
                        String::from_utf8_lossy(v.as_bytes()).into_owned()
                    };
                    (k.as_str().to_string(), value)
                })
                .collect(),
        }
    }
}

/// What is known of a request's outcome and ends.
pub struct Outcome<'a> {
    /// `inbound` or `outbound`.
    pub direction: &'static str,
    /// The status.
    pub status: u16,
    /// The gRPC status.
    pub grpc_status: Option<&'a [u8]>,
    /// How long it took.
    pub took: Duration,
    /// Response flags.
    pub flags: String,
    /// Client workload and principal.
    pub source: (&'a str, &'a str),
    /// Server workload and principal.
    pub destination: (&'a str, &'a str),
    /// Over mTLS.
    pub tls: bool,
}

/// The broadcast.
#[derive(Clone)]
pub struct Tap {
    tx: broadcast::Sender<Arc<Event>>,
}

impl Default for Tap {
    fn default() -> Self {
        Self {
            tx: broadcast::channel(BACKLOG).0,
        }
    }
}

impl Tap {
    /// Whether anyone watches.
    pub fn watched(&self) -> bool {
        self.tx.receiver_count() > 0
    }

    /// A new watcher.
    pub fn watch(&self) -> broadcast::Receiver<Arc<Event>> {
        self.tx.subscribe()
    }

    /// Publishes a finished request.
    pub fn publish(&self, head: Head, o: Outcome<'_>) {
        let event = Event {
            start_ms: head
                .start
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            direction: o.direction,
            method: head.method,
            authority: head.authority,
            path: head.path,
            headers: head.headers,
            status: o.status,
            grpc_status: o
                .grpc_status
                .map(|s| String::from_utf8_lossy(s).into_owned()),
            latency_ms: o.took.as_secs_f64() * 1000.0,
            flags: o.flags,
            source: o.source.0.to_string(),
            source_principal: o.source.1.to_string(),
            destination: o.destination.0.to_string(),
            destination_principal: o.destination.1.to_string(),
            tls: o.tls,
        };
        let _ = self.tx.send(Arc::new(event));
    }
}

/// What a watcher asks for (`/tap?` query parameters).
#[derive(Debug, Default, serde::Deserialize)]
pub struct Filter {
    /// `inbound` or `outbound`.
    pub direction: Option<String>,
    /// The method.
    pub method: Option<String>,
    /// A path prefix.
    pub path: Option<String>,
    /// The status.
    pub status: Option<u16>,
    /// An authority (exact, port optional).
    pub authority: Option<String>,
    /// Events to send before the stream ends (default 100, at most 10000).
    pub max: Option<usize>,
    /// Seconds before the stream ends (default 30, at most 600).
    pub seconds: Option<u64>,
}

impl Filter {
    /// Whether `e` is wanted.
    pub fn matches(&self, e: &Event) -> bool {
        self.direction.as_deref().is_none_or(|d| d == e.direction)
            && self
                .method
                .as_deref()
                .is_none_or(|m| m.eq_ignore_ascii_case(&e.method))
            && self.path.as_deref().is_none_or(|p| e.path.starts_with(p))
            && self.status.is_none_or(|s| s == e.status)
            && self
                .authority
                .as_deref()
                .is_none_or(|a| e.authority == a || e.authority.split(':').next() == Some(a))
    }

    /// How many events, bounded.
    pub fn max(&self) -> usize {
        self.max.unwrap_or(100).clamp(1, 10_000)
    }

    /// For how long, bounded.
    pub fn duration(&self) -> Duration {
        Duration::from_secs(self.seconds.unwrap_or(30).clamp(1, 600))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(tap: &Tap, method: &str, path: &str, status: u16) {
        let req = Request::builder()
            .method(method)
            .uri(format!("http://orders:8080{path}"))
            .header("authorization", "Bearer secret")
            .header("x-user", "ann")
            .body(())
            .unwrap();
        tap.publish(
            Head::of(&req),
            Outcome {
                direction: "inbound",
                status,
                grpc_status: None,
                took: Duration::from_millis(12),
                flags: "-".into(),
                source: ("web", "spiffe://cluster.local/ns/shop/sa/web"),
                destination: ("orders", "spiffe://cluster.local/ns/shop/sa/orders"),
                tls: true,
            },
        );
    }

    #[tokio::test]
    async fn watchers_get_headers_masked_and_filters_hold() {
        let tap = Tap::default();
        assert!(!tap.watched());
        event(&tap, "GET", "/lost", 200);
        let mut rx = tap.watch();
        assert!(tap.watched());
        event(&tap, "POST", "/pay?x=1", 503);
        let e = rx.recv().await.unwrap();
        assert_eq!((e.method.as_str(), e.path.as_str()), ("POST", "/pay?x=1"));
        assert_eq!(e.authority, "orders:8080");
        let h = |k: &str| e.headers.iter().find(|(n, _)| n == k).unwrap().1.clone();
        assert_eq!(h("authorization"), "<masked>");
        assert_eq!(h("x-user"), "ann");
        let f = Filter {
            method: Some("post".into()),
            path: Some("/pay".into()),
            status: Some(503),
            authority: Some("orders".into()),
            ..Filter::default()
        };
        assert!(f.matches(&e));
        assert!(
            !Filter {
                status: Some(200),
                ..Filter::default()
            }
            .matches(&e)
        );
        assert!(
            !Filter {
                direction: Some("outbound".into()),
                ..Filter::default()
            }
            .matches(&e)
        );
        assert_eq!(Filter::default().max(), 100);
        assert_eq!(
            Filter {
                seconds: Some(100_000),
                ..Filter::default()
            }
            .duration(),
            Duration::from_secs(600)
        );
    }
}
