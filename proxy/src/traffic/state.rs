//! Per-destination state that outlives a config push: outlier detectors,
//! connection-pool semaphores, retry budgets and requests in flight per
//! endpoint, by destination host. A router compiled from a new discovery
//! answer takes the state of the one it replaces, so that limits keep
//! counting what is already open (never doubled during endpoint churn)
//! and ejections, budgets and least-request counts carry on. A limit or
//! budget whose settings changed starts afresh.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::AtomicU32;
use std::sync::{Arc, Mutex, PoisonError};

use api::proto;

use super::limits::{Caps, Limits};
use super::outlier::Detector;
use super::retry::Budget;

/// Where one subset's limits apply: host, subset, service port.
type LimitsKey = (String, Option<String>, u16);

/// The state of every destination host this proxy talks to.
#[derive(Debug, Default)]
pub struct Registry {
    detectors: Mutex<HashMap<String, Arc<Detector>>>,
    limits: Mutex<HashMap<LimitsKey, Arc<Limits>>>,
    budgets: Mutex<HashMap<String, Arc<Budget>>>,
    active: Mutex<HashMap<(String, IpAddr), Arc<AtomicU32>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Registry {
    /// The outlier detector of `host`, made on first use.
    pub fn detector(&self, host: &str) -> Arc<Detector> {
        lock(&self.detectors)
            .entry(host.to_string())
            .or_default()
            .clone()
    }

    /// The connection-pool limits of (`host`, `subset`, `port`): the ones
    /// in use when `pool` sets the same caps, else new ones.
    pub fn limits(
        &self,
        host: &str,
        subset: Option<&str>,
        port: u16,
        pool: Option<&proto::ConnectionPool>,
    ) -> Arc<Limits> {
        let caps = Caps::of(pool);
        let key = (host.to_string(), subset.map(str::to_string), port);
        let mut all = lock(&self.limits);
        match all.get(&key) {
            Some(l) if l.caps() == caps => l.clone(),
            _ => {
                let l = Arc::new(Limits::new(caps));
                all.insert(key, l.clone());
                l
            }
        }
    }

    /// The retry budget of `host`: the one in use when `spec` sets the
    /// same bounds, else a new one.
    pub fn budget(&self, host: &str, spec: Option<&proto::RetryBudget>) -> Arc<Budget> {
        let fresh = Budget::new(spec);
        let mut all = lock(&self.budgets);
        match all.get(host) {
            Some(b) if b.same_bounds(&fresh) => b.clone(),
            _ => {
                let b = Arc::new(fresh);
                all.insert(host.to_string(), b.clone());
                b
            }
        }
    }

    /// Requests in flight to endpoint `ip` of `host`.
    pub fn active(&self, host: &str, ip: IpAddr) -> Arc<AtomicU32> {
        lock(&self.active)
            .entry((host.to_string(), ip))
            .or_default()
            .clone()
    }

    /// Forgets the in-flight counts of endpoints no compiled routing holds
    /// any more, so that pod churn does not grow the registry for ever.
    /// (Hosts, subsets and ports are bounded by the config and stay.)
    pub fn sweep(&self) {
        lock(&self.active).retain(|_, count| Arc::strong_count(count) > 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_of_endpoints_no_router_holds_are_forgotten() {
        let r = Registry::default();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let held = r.active("a", ip);
        held.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        drop(r.active("a", "10.0.0.2".parse().unwrap()));
        r.sweep();
        assert_eq!(lock(&r.active).len(), 1);
        assert!(Arc::ptr_eq(&held, &r.active("a", ip)));
    }
}
