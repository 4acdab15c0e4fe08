//! A destination host compiled for endpoint choice: its endpoints, its
//! DestinationRule's subsets (each with its balancer), pool limits,
//! connection settings, outlier detection and retry budget.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU32;

use api::discovery::{Endpoint, ServicePort};
use api::istio::destination_rule::{PortTrafficPolicy, TrafficPolicy};
use api::traffic::Backend as BackendSpec;

use super::balance::Balancer;
use super::retry::Budget;
use super::{limits, outlier, state};

/// A destination host's endpoints, subsets and policy.
#[derive(Debug)]
pub struct Backend {
    /// Ports, for resolving a route's port.
    pub ports: Vec<ServicePort>,
    /// Ready endpoints.
    pub endpoints: Vec<Endpoint>,
    /// By (subset, service port): `None` is every endpoint; port 0 is
    /// the policy without port-level settings.
    subsets: HashMap<(Option<String>, u16), Subset>,
    /// Retries in flight to this host (kept across pushes).
    pub budget: Arc<Budget>,
}

/// A group of endpoints, how to choose among them, and the policy that
/// applies to it (Envoy's cluster: host, subset and port).
#[derive(Debug)]
pub struct Subset {
    /// Indexes into the backend's endpoints.
    pub members: Vec<usize>,
    /// Requests in flight per member (kept across pushes).
    pub active: Vec<Arc<AtomicU32>>,
    /// The policy.
    pub balancer: Balancer,
    /// Connection pool limits (`connectionPool`, kept across pushes).
    pub limits: Arc<limits::Limits>,
    /// Connection settings.
    pub conn: limits::ConnSettings,
    /// Outlier detection, when asked for (state shared by the host).
    pub outlier: Option<(outlier::Config, Arc<outlier::Detector>)>,
}

impl Subset {
    /// Counts a try's result on endpoint `ip` with outlier detection, if
    /// any; returns whether it ejected the endpoint.
    pub fn observe(&self, ip: std::net::IpAddr, seen: outlier::Observed) -> bool {
        self.outlier.as_ref().is_some_and(|(cfg, d)| {
            d.record(cfg, ip, seen, self.members.len(), std::time::Instant::now())
        })
    }
}

/// Istio's precedence for one field: the subset's port-level settings,
/// the subset's policy, the host's port-level settings, the host's policy.
fn field<'a, T>(
    top: Option<&'a TrafficPolicy>,
    sub: Option<&'a TrafficPolicy>,
    port: u16,
    of: impl Fn(&'a TrafficPolicy) -> Option<&'a T>,
    of_port: impl Fn(&'a PortTrafficPolicy) -> Option<&'a T>,
) -> Option<&'a T> {
    let at_port = |p: Option<&'a TrafficPolicy>| {
        p.and_then(|p| p.port_level_settings.as_ref())
            .into_iter()
            .flatten()
            .find(|s| port != 0 && s.port.as_ref().and_then(|p| p.number) == Some(u32::from(port)))
            .and_then(&of_port)
    };
    at_port(sub)
        .or_else(|| sub.and_then(&of))
        .or_else(|| at_port(top))
        .or_else(|| top.and_then(&of))
}

/// Ports with port-level settings in `policies`.
fn tuned_ports(policies: &[Option<&TrafficPolicy>]) -> Vec<u16> {
    let mut ports: Vec<u16> = policies
        .iter()
        .flatten()
        .flat_map(|p| p.port_level_settings.iter().flatten())
        .filter_map(|s| s.port.as_ref()?.number.and_then(|n| u16::try_from(n).ok()))
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

impl Backend {
    /// Compiles a backend; `at` names it in errors.
    pub fn compile(
        host: &str,
        spec: &BackendSpec,
        at: &str,
        state: &state::Registry,
    ) -> Result<Self, String> {
        let dr = spec.policy.as_ref();
        let top = dr.and_then(|d| d.traffic_policy.as_ref());
        let named = dr.and_then(|d| d.subsets.as_ref()).into_iter().flatten();
        let groups = std::iter::once((None, None, None, at.to_string())).chain(
            named.enumerate().map(|(i, s)| {
                (
                    s.name.clone(),
                    s.labels.as_ref(),
                    s.traffic_policy.as_ref(),
                    format!("{at}.subsets[{i}]"),
                )
            }),
        );
        let mut subsets = HashMap::new();
        for (name, labels, policy, at) in groups {
            for port in std::iter::once(0).chain(tuned_ports(&[top, policy])) {
                let place = Place {
                    host,
                    subset: name.as_deref(),
                    port,
                    state,
                };
                let sub = subset(&spec.endpoints, labels, top, policy, &place)
                    .map_err(|e| format!("{at}: {e}"))?;
                subsets.insert((name.clone(), port), sub);
            }
        }
        Ok(Self {
            ports: spec.ports.clone(),
            endpoints: spec.endpoints.clone(),
            subsets,
            budget: state.budget(host, top.and_then(|p| p.retry_budget.as_ref())),
        })
    }

    /// The subset `name` as it applies to service port `port`.
    pub fn subset(&self, name: &Option<String>, port: u16) -> Option<&Subset> {
        self.subsets
            .get(&(name.clone(), port))
            .or_else(|| self.subsets.get(&(name.clone(), 0)))
    }

    /// Whether a subset of that name exists.
    pub fn has_subset(&self, name: &Option<String>) -> bool {
        self.subsets.contains_key(&(name.clone(), 0))
    }

    /// Every subset, for state dumps.
    pub fn subsets(&self) -> impl Iterator<Item = &Subset> {
        self.subsets.values()
    }

    /// The endpoint for the next try and its member index: the balancer's
    /// pick among endpoints neither ejected nor tried yet; when every healthy
    /// one was tried, among the healthy ones again; when all are ejected,
    /// among all (Envoy's panic mode).
    pub fn choose(
        &self,
        sub: &Subset,
        key: Option<u64>,
        tried: &mut Vec<usize>,
        rng: &mut fastrand::Rng,
    ) -> Option<(usize, &api::discovery::Workload, &Endpoint)> {
        let n = sub.members.len();
        let ejected: Vec<usize> = match &sub.outlier {
            Some((cfg, d)) => {
                let addrs: Vec<std::net::IpAddr> = sub
                    .members
                    .iter()
                    .map(|i| self.endpoints[*i].workload.address)
                    .collect();
                d.available(cfg, &addrs, std::time::Instant::now())
                    .iter()
                    .enumerate()
                    .filter(|(_, ok)| !**ok)
                    .map(|(i, _)| i)
                    .collect()
            }
            None => Vec::new(),
        };
        let skip: Vec<usize> = tried.iter().chain(&ejected).copied().collect();
        let m = sub
            .balancer
            .pick(n, &sub.active, key, &skip, rng)
            .or_else(|| {
                tried.clear();
                sub.balancer.pick(n, &sub.active, key, &ejected, rng)
            })
            .or_else(|| sub.balancer.pick(n, &sub.active, key, &[], rng))?;
        tried.push(m);
        let ep = self.endpoints.get(*sub.members.get(m)?)?;
        Some((m, &ep.workload, ep))
    }

    /// The endpoint port for service port `port`.
    pub fn endpoint_port(&self, ep: &Endpoint, port: u16) -> u16 {
        ep.ports.get(&port).copied().unwrap_or(port)
    }

    /// The service port a destination without one uses: the app's port if
    /// the host has it, else the host's only port.
    pub fn service_port(&self, wanted: Option<u16>, app_port: u16) -> u16 {
        wanted.unwrap_or_else(|| {
            if self.ports.is_empty() || self.ports.iter().any(|p| p.port == app_port) {
                app_port
            } else {
                self.ports[0].port
            }
        })
    }
}

/// Which subset is compiled, and where its lasting state lives.
struct Place<'a> {
    host: &'a str,
    subset: Option<&'a str>,
    port: u16,
    state: &'a state::Registry,
}

fn subset(
    endpoints: &[Endpoint],
    labels: Option<&std::collections::BTreeMap<String, String>>,
    top: Option<&TrafficPolicy>,
    policy: Option<&TrafficPolicy>,
    place: &Place<'_>,
) -> Result<Subset, String> {
    let port = place.port;
    let members: Vec<usize> = endpoints
        .iter()
        .enumerate()
        .filter(|(_, e)| labels.is_none_or(|l| api::cluster::labels_match(l, &e.workload.labels)))
        .map(|(i, _)| i)
        .collect();
    let names: Vec<String> = members
        .iter()
        .map(|i| endpoints[*i].workload.address.to_string())
        .collect();
    let lb = field(
        top,
        policy,
        port,
        |p| p.load_balancer.as_ref(),
        |p| p.load_balancer.as_ref(),
    );
    let pool = field(
        top,
        policy,
        port,
        |p| p.connection_pool.as_ref(),
        |p| p.connection_pool.as_ref(),
    );
    let od = field(
        top,
        policy,
        port,
        |p| p.outlier_detection.as_ref(),
        |p| p.outlier_detection.as_ref(),
    );
    Ok(Subset {
        active: members
            .iter()
            .map(|i| {
                place
                    .state
                    .active(place.host, endpoints[*i].workload.address)
            })
            .collect(),
        balancer: Balancer::new(lb, &names)
            .map_err(|e| format!("trafficPolicy.loadBalancer.{e}"))?,
        members,
        limits: place.state.limits(place.host, place.subset, port, pool),
        conn: limits::ConnSettings::compile(pool, "trafficPolicy.connectionPool")?,
        outlier: od
            .map(|od| {
                outlier::Config::compile(od, "trafficPolicy.outlierDetection")
                    .map(|c| (c, place.state.detector(place.host)))
            })
            .transpose()?,
    })
}
