//! A destination host compiled for endpoint choice: its endpoints, its
//! DestinationRule's subsets (each with its balancer), pool limits,
//! connection settings, outlier detection and retry budget.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU32;

use api::discovery::{Endpoint, ServicePort};
use api::istio::destination_rule::LoadBalancerSettings;
use api::traffic::Backend as BackendSpec;

use super::balance::Balancer;
use super::retry::Budget;
use super::{limits, outlier};

/// A destination host's endpoints, subsets and policy.
#[derive(Debug)]
pub struct Backend {
    /// Ports, for resolving a route's port.
    pub ports: Vec<ServicePort>,
    /// Ready endpoints.
    pub endpoints: Vec<Endpoint>,
    /// The subsets (`None`: all endpoints).
    pub subsets: HashMap<Option<String>, Subset>,
    /// Retries in flight to this host.
    pub budget: Budget,
    /// Connection pool limits (`connectionPool`).
    pub limits: limits::Limits,
    /// Connection settings.
    pub conn: limits::ConnSettings,
    /// Outlier detection, when the DestinationRule asks for it.
    pub outlier: Option<(outlier::Config, Arc<outlier::Detector>)>,
}

/// A group of endpoints and how to choose among them.
#[derive(Debug)]
pub struct Subset {
    /// Indexes into the backend's endpoints.
    pub members: Vec<usize>,
    /// Requests in flight per member.
    pub active: Vec<AtomicU32>,
    /// The policy.
    pub balancer: Balancer,
}

impl Backend {
    /// Compiles a backend; `at` names it in errors.
    pub fn compile(
        host: &str,
        spec: &BackendSpec,
        at: &str,
        outliers: &outlier::Registry,
    ) -> Result<Self, String> {
        let dr = spec.policy.as_ref();
        let top = dr.and_then(|d| d.traffic_policy.as_ref());
        let pool = top.and_then(|p| p.connection_pool.as_ref());
        let outlier = top
            .and_then(|p| p.outlier_detection.as_ref())
            .map(|od| {
                outlier::Config::compile(od, &format!("{at}.trafficPolicy.outlierDetection"))
                    .map(|c| (c, outliers.detector(host)))
            })
            .transpose()?;
        let top_lb = dr
            .and_then(|d| d.traffic_policy.as_ref())
            .and_then(|p| p.load_balancer.as_ref());
        let mut subsets = HashMap::new();
        subsets.insert(
            None,
            subset(&spec.endpoints, None, top_lb).map_err(|e| format!("{at}: {e}"))?,
        );
        for (i, s) in dr
            .and_then(|d| d.subsets.as_ref())
            .into_iter()
            .flatten()
            .enumerate()
        {
            let lb = s
                .traffic_policy
                .as_ref()
                .and_then(|p| p.load_balancer.as_ref())
                .or(top_lb);
            let sub = subset(&spec.endpoints, s.labels.as_ref(), lb)
                .map_err(|e| format!("{at}.subsets[{i}]: {e}"))?;
            subsets.insert(s.name.clone(), sub);
        }
        Ok(Self {
            ports: spec.ports.clone(),
            endpoints: spec.endpoints.clone(),
            subsets,
            budget: Budget::new(top.and_then(|p| p.retry_budget.as_ref())),
            limits: limits::Limits::new(pool),
            conn: limits::ConnSettings::compile(
                pool,
                &format!("{at}.trafficPolicy.connectionPool"),
            )?,
            outlier,
        })
    }

    /// The endpoint for the next try and its member index: the balancer's
    /// pick among endpoints neither ejected nor tried yet; when every healthy
    /// one was tried, among the healthy ones again; when all are ejected,
    /// among all (Envoy's panic mode).
    pub fn choose(
        &self,
        dest_subset: &Option<String>,
        key: Option<u64>,
        tried: &mut Vec<usize>,
        rng: &mut fastrand::Rng,
    ) -> Option<(usize, &api::discovery::Workload, &Endpoint)> {
        let sub = self.subsets.get(dest_subset)?;
        let n = sub.members.len();
        let ejected: Vec<usize> = match &self.outlier {
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

fn subset(
    endpoints: &[Endpoint],
    labels: Option<&std::collections::BTreeMap<String, String>>,
    lb: Option<&LoadBalancerSettings>,
) -> Result<Subset, String> {
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
    Ok(Subset {
        active: members.iter().map(|_| AtomicU32::new(0)).collect(),
        balancer: Balancer::new(lb, &names)
            .map_err(|e| format!("trafficPolicy.loadBalancer.{e}"))?,
        members,
    })
}
