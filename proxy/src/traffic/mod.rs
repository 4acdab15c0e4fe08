//! A Service's routing compiled for the data path: the VirtualService's
//! HTTP routes (matches, weighted destinations, rewrites, redirects, direct
//! responses, header changes, faults, timeouts, retries, mirrors, CORS) and
//! per destination host its endpoints, subsets and DestinationRule policy.
//! Compiled once when discovery delivers it; a resource that does not
//! compile is refused alone (NACK) with the field that is wrong.
//!
//! Pure and synchronous: the I/O is in [`crate::http::forward`].

use std::collections::HashMap;
use std::sync::Arc;

use api::discovery::{Endpoint, Service};
use api::proto;
use hyper::Request;

pub mod backend;
pub mod balance;
pub mod cors;
pub mod l4;
pub mod limits;
pub mod matching;
pub mod outlier;
pub mod ratelimit;
pub mod retry;
pub mod route;
pub mod split;
pub mod state;
pub mod upstream_tls;

pub use backend::Backend;
use matching::{Source, StrMatch};
pub use route::{Abort, Action, Dest, Redirect, Rewrite, Route, rewrite_path};
use route::{default_dest, default_route, route};

/// The endpoints of destination hosts, as discovery last delivered them.
pub type EndpointsByHost = HashMap<String, Arc<[Endpoint]>>;

/// The compiled routing of one Service.
#[derive(Debug)]
pub struct Router {
    /// In order: the first whose match applies wins.
    pub routes: Vec<Route>,
    /// Destination hosts by FQDN.
    pub backends: HashMap<String, Backend>,
    /// Routes for opaque traffic.
    pub tcp: Vec<l4::L4Route>,
    /// Routes for TLS by SNI.
    pub tls: Vec<l4::L4Route>,
    /// Where opaque traffic goes without routes: the address's own host.
    pub default: Dest,
}

impl Router {
    /// The routing of what an address resolves to: a Service's, or for a
    /// pod address, every request to that pod.
    pub fn for_resolved(
        r: &api::discovery::Resolved,
        endpoints: &EndpointsByHost,
        state: &state::Registry,
    ) -> Result<Self, String> {
        match r {
            api::discovery::Resolved::Service(s) => Self::compile(s, endpoints, state),
            api::discovery::Resolved::Workload(w) => {
                let host = w.address.to_string();
                let own: Arc<[Endpoint]> = Arc::new([Endpoint {
                    workload: w.clone(),
                    ports: Default::default(),
                }]);
                let spec = proto::Backend {
                    host: host.clone(),
                    ..Default::default()
                };
                Ok(Self {
                    routes: vec![default_route(&host)],
                    backends: [(
                        host.clone(),
                        Backend::compile(&spec, own, "workload", state)?,
                    )]
                    .into(),
                    tcp: Vec::new(),
                    tls: Vec::new(),
                    default: default_dest(&host),
                })
            }
        }
    }

    /// The hosts whose endpoints the routing of `svc` uses.
    pub fn hosts(svc: &Service) -> Vec<&str> {
        match &svc.routing {
            Some(r) => r.backends.iter().map(|b| b.host.as_str()).collect(),
            None => vec![svc.hostname.as_str()],
        }
    }

    /// Compiles the routing of `svc` over the endpoints known now.
    pub fn compile(
        svc: &Service,
        endpoints: &EndpointsByHost,
        state: &state::Registry,
    ) -> Result<Self, String> {
        match svc.routing.as_deref() {
            Some(r) => Self::from_routing(r, &svc.hostname, endpoints, state),
            None => {
                let plain = proto::Routing {
                    backends: vec![proto::Backend {
                        host: svc.hostname.clone(),
                        ports: svc.ports.iter().map(Into::into).collect(),
                        ..Default::default()
                    }],
                    ..Default::default()
                };
                Self::from_routing(&plain, &svc.hostname, endpoints, state)
            }
        }
    }

    fn from_routing(
        t: &proto::Routing,
        own_host: &str,
        endpoints: &EndpointsByHost,
        state: &state::Registry,
    ) -> Result<Self, String> {
        let mut routes = t
            .http
            .iter()
            .enumerate()
            .map(|(i, r)| route(r, &format!("http[{i}]"), own_host))
            .collect::<Result<Vec<_>, _>>()?;
        if routes.is_empty() {
            routes.push(default_route(own_host));
        }
        let backends = t
            .backends
            .iter()
            .map(|b| {
                let eps = endpoints
                    .get(&b.host)
                    .cloned()
                    .unwrap_or_else(|| Arc::new([]));
                let at = format!("backends[{}]", b.host);
                Ok((b.host.clone(), Backend::compile(b, eps, &at, state)?))
            })
            .collect::<Result<HashMap<_, _>, String>>()?;
        for (i, r) in routes.iter().enumerate() {
            if let Action::Forward(ds) = &r.action {
                for d in ds {
                    let b = backends
                        .get(&d.host)
                        .ok_or_else(|| format!("http[{i}]: host {} has no backend", d.host))?;
                    if !b.has_subset(&d.subset) {
                        tracing::warn!(host = %d.host, subset = ?d.subset, "route names an undefined subset; requests to it get 503");
                    }
                }
            }
        }
        let tcp = t
            .tcp
            .iter()
            .enumerate()
            .map(|(i, r)| l4::L4Route::compile(r, &format!("tcp[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;
        let tls = t
            .tls
            .iter()
            .enumerate()
            .map(|(i, r)| l4::L4Route::compile(r, &format!("tls[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;
        for (kind, list) in [("tcp", &tcp), ("tls", &tls)] {
            for (i, r) in list.iter().enumerate() {
                if let Some(d) = r.dests.iter().find(|d| !backends.contains_key(&d.host)) {
                    return Err(format!("{kind}[{i}]: host {} has no backend", d.host));
                }
            }
        }
        Ok(Self {
            routes,
            backends,
            tcp,
            tls,
            default: default_dest(own_host),
        })
    }

    /// Where an opaque connection goes: the first matching `tls` route
    /// (when the client sent an SNI), else the first matching `tcp` route,
    /// else, without routes of either kind, the address's own host.
    /// `None`: there are routes, and none takes it.
    pub fn l4_dest(
        &self,
        dst: std::net::IpAddr,
        port: u16,
        src: &Source,
        sni: Option<&str>,
        rng: &mut fastrand::Rng,
    ) -> Option<&Dest> {
        if sni.is_some()
            && let Some(r) = self.tls.iter().find(|r| r.matches(dst, port, src, sni))
        {
            return r.pick(rng);
        }
        if let Some(r) = self.tcp.iter().find(|r| r.matches(dst, port, src, None)) {
            return r.pick(rng);
        }
        (self.tcp.is_empty() && self.tls.is_empty()).then_some(&self.default)
    }

    /// The circuit of every endpoint of every host with outlier detection.
    pub fn circuits(&self) -> Vec<(&str, Vec<outlier::EndpointState>)> {
        let now = std::time::Instant::now();
        self.backends
            .iter()
            .filter_map(|(host, b)| {
                let (_, d) = b.subsets().find_map(|(_, _, s)| s.outlier.as_ref())?;
                let addrs: Vec<_> = b.endpoints.iter().map(|e| e.workload.address).collect();
                Some((host.as_str(), d.states(&addrs, now)))
            })
            .collect()
    }

    /// The route for `req` (its index and itself) and the prefix its uri
    /// match took, if any; `None`: no route matches (404, Envoy's `NR`).
    pub fn select<B>(
        &self,
        req: &Request<B>,
        port: u16,
        src: &Source,
    ) -> Option<(usize, &Route, Option<&StrMatch>)> {
        self.routes.iter().enumerate().find_map(|(i, r)| {
            if r.matches.is_empty() {
                return Some((i, r, None));
            }
            r.matches
                .iter()
                .find(|m| m.matches(req, port, src))
                .map(|m| (i, r, m.uri.as_ref()))
        })
    }
}

#[cfg(test)]
mod tests;
