//! A destination host compiled for endpoint choice: its endpoints, its
//! DestinationRule's subsets (each with its balancer), pool limits,
//! connection settings, outlier detection and retry budget.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU32;

use api::discovery::{Endpoint, ServicePort};
use api::proto;

use super::balance::Balancer;
use super::retry::Budget;
use super::{limits, outlier, state};

/// A destination host's endpoints, subsets and policy.
#[derive(Debug)]
pub struct Backend {
    /// Ports, for resolving a route's port.
    pub ports: Vec<ServicePort>,
    /// Ready endpoints.
    pub endpoints: Arc<[Endpoint]>,
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
    /// How its endpoints are connected to (`trafficPolicy.tls`).
    pub tls: super::upstream_tls::UpstreamTls,
    /// Outlier detection, when asked for (state shared by the host).
    pub outlier: Option<(outlier::Config, Arc<outlier::Detector>)>,
}

impl Subset {
    /// Counts a try's result on endpoint `ip` with outlier detection, if
    /// any; returns whether it ejected the endpoint.
    pub fn observe(&self, ip: std::net::IpAddr, seen: outlier::Observed) -> bool {
        self.observer().is_some_and(|o| o.record(ip, seen))
    }

    /// What counts tries' results for outlier detection, if it is on.
    pub fn observer(&self) -> Option<outlier::Observer> {
        self.outlier.as_ref().map(|(cfg, d)| outlier::Observer {
            config: cfg.clone(),
            detector: d.clone(),
            members: self.members.len(),
        })
    }
}

impl Backend {
    /// Compiles a backend over `endpoints`; `at` names it in errors.
    pub fn compile(
        spec: &proto::Backend,
        endpoints: Arc<[Endpoint]>,
        at: &str,
        state: &state::Registry,
    ) -> Result<Self, String> {
        let host = spec.host.as_str();
        let mut subsets = HashMap::new();
        for (i, sub) in spec.subsets.iter().enumerate() {
            let name = Some(sub.name.clone()).filter(|n| !n.is_empty());
            let port = u16::try_from(sub.port).unwrap_or(0);
            let place = Place {
                host,
                subset: name.as_deref(),
                port,
                state,
            };
            let compiled =
                subset(&endpoints, sub, &place).map_err(|e| format!("{at}.subsets[{i}]: {e}"))?;
            subsets.insert((name, port), compiled);
        }
        // Every endpoint, with the defaults, when the controller sent no
        // policy for the whole host.
        if let std::collections::hash_map::Entry::Vacant(v) = subsets.entry((None, 0)) {
            let place = Place {
                host,
                subset: None,
                port: 0,
                state,
            };
            v.insert(subset(&endpoints, &proto::Subset::default(), &place)?);
        }
        Ok(Self {
            ports: spec
                .ports
                .iter()
                .enumerate()
                .map(|(i, p)| ServicePort::try_from(p).map_err(|e| format!("{at}.ports[{i}].{e}")))
                .collect::<Result<_, _>>()?,
            endpoints,
            subsets,
            budget: state.budget(host, spec.retry_budget.as_ref()),
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

    /// Every subset with its name and port, for state dumps.
    pub fn subsets(&self) -> impl Iterator<Item = (&Option<String>, u16, &Subset)> {
        self.subsets.iter().map(|((n, p), s)| (n, *p, s))
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
    spec: &proto::Subset,
    place: &Place<'_>,
) -> Result<Subset, String> {
    let members: Vec<usize> = endpoints
        .iter()
        .enumerate()
        .filter(|(_, e)| api::cluster::labels_match(&spec.labels, &e.workload.labels))
        .map(|(i, _)| i)
        .collect();
    let names: Vec<String> = members
        .iter()
        .map(|i| endpoints[*i].workload.address.to_string())
        .collect();
    let pool = spec.connection_pool.as_ref();
    Ok(Subset {
        active: members
            .iter()
            .map(|i| {
                place
                    .state
                    .active(place.host, endpoints[*i].workload.address)
            })
            .collect(),
        balancer: Balancer::new(spec.load_balancer.as_ref(), &names)
            .map_err(|e| format!("loadBalancer.{e}"))?,
        members,
        limits: place
            .state
            .limits(place.host, place.subset, place.port, pool),
        conn: limits::ConnSettings::compile(pool),
        tls: super::upstream_tls::UpstreamTls::compile(spec.tls.as_ref(), place.host),
        outlier: spec.outlier_detection.as_ref().map(|od| {
            (
                outlier::Config::compile(od),
                place.state.detector(place.host),
            )
        }),
    })
}
