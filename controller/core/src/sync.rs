//! Per-proxy sync state: every open discovery stream records here what it
//! sent and what the proxy answered; the debug API lists it for `meshctl
//! proxy-status`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use api::sync::{Exchange, Nack, ProxySync, Refusal};

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The sync state of every connected proxy.
#[derive(Default)]
pub struct Registry {
    next: AtomicU64,
    streams: Mutex<BTreeMap<u64, ProxySync>>,
}

impl Registry {
    /// Registers a new stream; it leaves the registry when the handle drops.
    pub fn open(self: &Arc<Self>, proxy: ProxySync) -> Handle {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.with_streams(|s| s.insert(id, proxy));
        Handle {
            registry: self.clone(),
            id,
        }
    }

    /// Every stream, by pod name.
    pub fn list(&self) -> Vec<ProxySync> {
        let mut all: Vec<ProxySync> = self.with_streams(|s| s.values().cloned().collect());
        all.sort_by(|a, b| (&a.namespace, &a.pod).cmp(&(&b.namespace, &b.pod)));
        all
    }

    fn with_streams<T>(&self, f: impl FnOnce(&mut BTreeMap<u64, ProxySync>) -> T) -> T {
        f(&mut self.streams.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// One stream's entry in the registry.
pub struct Handle {
    registry: Arc<Registry>,
    id: u64,
}

impl Handle {
    fn update(&self, f: impl FnOnce(&mut ProxySync)) {
        self.registry.with_streams(|s| {
            if let Some(p) = s.get_mut(&self.id) {
                f(p);
            }
        });
    }

    /// The proxy said something (and now subscribes to `subscriptions`).
    pub fn seen(&self, subscriptions: usize) {
        self.update(|p| {
            p.last_seen = now();
            p.subscriptions = subscriptions;
        });
    }

    /// A response went out.
    pub fn sent(&self, nonce: &str, version: &str) {
        self.update(|p| p.sent = Some(exchange(nonce, version)));
    }

    /// The proxy acknowledged a response.
    pub fn acked(&self, nonce: &str, version: &str) {
        self.update(|p| p.acked = Some(exchange(nonce, version)));
    }

    /// The proxy refused (part of) a response.
    pub fn nacked(&self, nonce: &str, version: &str, errors: Vec<Refusal>) {
        self.update(|p| {
            p.nacked = Some(Nack {
                of: exchange(nonce, version),
                errors,
            })
        });
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.registry.with_streams(|s| s.remove(&self.id));
    }
}

fn exchange(nonce: &str, version: &str) -> Exchange {
    Exchange {
        nonce: nonce.into(),
        version: version.into(),
        at: now(),
    }
}

#[cfg(test)]
mod tests {
    use api::sync::SyncStatus;

    use super::*;

    fn proxy(pod: &str) -> ProxySync {
        ProxySync::opened(pod, "ns", "", "", 0)
    }

    #[test]
    fn streams_are_listed_while_open() {
        let r = Arc::new(Registry::default());
        let b = r.open(proxy("b"));
        let a = r.open(proxy("a"));
        a.sent("1", "5");
        a.acked("1", "5");
        b.sent("1", "5");
        b.nacked("1", "5", vec![]);
        b.seen(3);
        let list = r.list();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].pod, "a");
        assert_eq!(list[0].status(), SyncStatus::Synced);
        assert_eq!(list[1].status(), SyncStatus::Error);
        assert_eq!(list[1].subscriptions, 3);
        drop(a);
        assert_eq!(r.list().len(), 1);
    }
}
