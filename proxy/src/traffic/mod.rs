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
use std::sync::atomic::AtomicU32;
use std::time::Duration;

use api::discovery::{Endpoint, Service, ServicePort};
use api::istio::destination_rule::LoadBalancerSettings;
use api::istio::shared::{Destination, HeaderOperations, Percent};
use api::istio::virtual_service::{HttpFaultInjection, HttpRoute};
use api::traffic::{Backend as BackendSpec, ServiceTraffic};
use bytes::Bytes;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, StatusCode};

pub mod balance;
pub mod cors;
pub mod l4;
pub mod limits;
pub mod matching;
pub mod outlier;
pub mod ratelimit;
pub mod retry;
pub mod split;

use balance::Balancer;
use matching::{RequestMatch, Source, StrMatch};
use retry::{Budget, RetryPolicy};

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

/// One HTTP route.
#[derive(Debug)]
pub struct Route {
    /// Its name (for rate limits and logs).
    pub name: Option<String>,
    /// Any may apply; empty: always.
    pub matches: Vec<RequestMatch>,
    /// What to do.
    pub action: Action,
    /// Path and authority rewrite.
    pub rewrite: Option<Rewrite>,
    /// Bound on all tries together.
    pub timeout: Option<Duration>,
    /// Retries.
    pub retry: RetryPolicy,
    /// Injected faults.
    pub fault: Fault,
    /// Copies sent elsewhere, fire and forget.
    pub mirrors: Vec<Mirror>,
    /// Request and response header changes.
    pub headers: Headers,
    /// CORS.
    pub cors: Option<cors::Cors>,
}

/// A route's action.
#[derive(Debug)]
pub enum Action {
    /// To one of these, by weight.
    Forward(Vec<Dest>),
    /// Answer with a redirect.
    Redirect(Redirect),
    /// Answer directly.
    Direct {
        /// Status.
        status: StatusCode,
        /// Body.
        body: Bytes,
    },
}

/// A weighted destination.
#[derive(Debug)]
pub struct Dest {
    /// FQDN.
    pub host: String,
    /// Subset name.
    pub subset: Option<String>,
    /// Service port (default: the port the app connected to).
    pub port: Option<u16>,
    /// Weight.
    pub weight: u32,
    /// Header changes for this destination.
    pub headers: Headers,
}

/// Where a redirect points.
#[derive(Debug)]
pub struct Redirect {
    /// New path.
    pub uri: Option<String>,
    /// New authority.
    pub authority: Option<String>,
    /// New port.
    pub port: Option<u16>,
    /// New scheme.
    pub scheme: Option<String>,
    /// Status (301 by default).
    pub code: StatusCode,
}

/// Rewrites before forwarding.
#[derive(Debug)]
pub struct Rewrite {
    /// Replaces the matched prefix (or the whole path).
    pub uri: Option<String>,
    /// Replaces the authority.
    pub authority: Option<String>,
    /// A regex rewrite of the path.
    pub regex: Option<(regex::Regex, String)>,
}

/// An injected fault.
#[derive(Debug, Default)]
pub struct Fault {
    /// Delay and the share of requests it hits.
    pub delay: Option<(Duration, f64)>,
    /// Abort and the share of requests it hits.
    pub abort: Option<(Abort, f64)>,
}

/// What an abort answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Abort {
    /// This HTTP status.
    Http(StatusCode),
    /// This gRPC status (in a trailers-only HTTP 200).
    Grpc(u32),
}

/// A mirror.
#[derive(Debug)]
pub struct Mirror {
    /// FQDN.
    pub host: String,
    /// Subset.
    pub subset: Option<String>,
    /// Port.
    pub port: Option<u16>,
    /// Share of requests copied.
    pub percent: f64,
}

/// Header changes in both directions.
#[derive(Debug, Default)]
pub struct Headers {
    /// On the request.
    pub request: HeaderOps,
    /// On the response.
    pub response: HeaderOps,
}

/// Set, add, remove.
#[derive(Debug, Default)]
pub struct HeaderOps {
    set: Vec<(HeaderName, HeaderValue)>,
    add: Vec<(HeaderName, HeaderValue)>,
    remove: Vec<HeaderName>,
}

impl HeaderOps {
    fn compile(ops: Option<&HeaderOperations>, at: &str) -> Result<Self, String> {
        let Some(ops) = ops else {
            return Ok(Self::default());
        };
        let pairs = |m: Option<&std::collections::BTreeMap<String, String>>, f: &str| {
            m.into_iter()
                .flatten()
                .map(|(k, v)| {
                    let n = HeaderName::try_from(k.to_ascii_lowercase())
                        .map_err(|e| format!("{at}.{f}.{k}: {e}"))?;
                    let v = HeaderValue::try_from(v.as_str())
                        .map_err(|e| format!("{at}.{f}.{k}: {e}"))?;
                    Ok((n, v))
                })
                .collect::<Result<Vec<_>, String>>()
        };
        Ok(Self {
            set: pairs(ops.set.as_ref(), "set")?,
            add: pairs(ops.add.as_ref(), "add")?,
            remove: ops
                .remove
                .iter()
                .flatten()
                .map(|k| {
                    HeaderName::try_from(k.to_ascii_lowercase())
                        .map_err(|e| format!("{at}.remove: {e}"))
                })
                .collect::<Result<_, _>>()?,
        })
    }

    /// Applies the changes: remove, then set, then add.
    pub fn apply(&self, h: &mut HeaderMap) {
        for n in &self.remove {
            h.remove(n);
        }
        for (n, v) in &self.set {
            h.insert(n.clone(), v.clone());
        }
        for (n, v) in &self.add {
            h.append(n.clone(), v.clone());
        }
    }
}

impl Headers {
    fn compile(h: Option<&api::istio::shared::Headers>, at: &str) -> Result<Self, String> {
        Ok(Self {
            request: HeaderOps::compile(
                h.and_then(|h| h.request.as_ref()),
                &format!("{at}.request"),
            )?,
            response: HeaderOps::compile(
                h.and_then(|h| h.response.as_ref()),
                &format!("{at}.response"),
            )?,
        })
    }
}

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

fn percent(p: Option<&Percent>) -> f64 {
    p.and_then(|p| p.value).unwrap_or(100.0)
}

fn duration(v: Option<&String>, at: &str) -> Result<Option<Duration>, String> {
    v.map(|s| api::duration::parse(s).map_err(|e| format!("{at}: {e}")))
        .transpose()
        .map(|d| d.filter(|d| !d.is_zero()))
}

/// gRPC status codes by their names (as `grpcStatus` gives them).
pub fn grpc_code(name: &str) -> Option<u32> {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    name.parse().ok().or_else(|| {
        NAMES
            .iter()
            .position(|n| n.eq_ignore_ascii_case(name))
            .and_then(|i| u32::try_from(i).ok())
    })
}

fn fault(f: Option<&HttpFaultInjection>, at: &str) -> Result<Fault, String> {
    let Some(f) = f else {
        return Ok(Fault::default());
    };
    let delay = match &f.delay {
        Some(d) => {
            let fixed = duration(d.fixed_delay.as_ref(), &format!("{at}.delay.fixedDelay"))?
                .unwrap_or_default();
            let pct = d
                .percentage
                .as_ref()
                .and_then(|p| p.value)
                .or(d.percent.map(f64::from))
                .unwrap_or(100.0);
            Some((fixed, pct))
        }
        None => None,
    };
    let abort = match &f.abort {
        Some(a) => {
            let kind = if let Some(s) = a.http_status {
                Abort::Http(
                    u16::try_from(s)
                        .ok()
                        .and_then(|s| StatusCode::from_u16(s).ok())
                        .ok_or_else(|| format!("{at}.abort.httpStatus: {s} is not a status"))?,
                )
            } else if let Some(g) = &a.grpc_status {
                Abort::Grpc(
                    grpc_code(g)
                        .ok_or_else(|| format!("{at}.abort.grpcStatus: unknown status {g:?}"))?,
                )
            } else {
                Abort::Http(StatusCode::SERVICE_UNAVAILABLE)
            };
            Some((kind, percent(a.percentage.as_ref())))
        }
        None => None,
    };
    Ok(Fault { delay, abort })
}

/// A destination's weight: as given, or all of it for the only one of
/// `n` (Istio's default).
fn weight(w: Option<i32>, n: usize) -> u32 {
    match w {
        Some(w) => u32::try_from(w).unwrap_or(0),
        None if n == 1 => 100,
        None => 0,
    }
}

fn dest_of(d: &Destination) -> (String, Option<String>, Option<u16>) {
    (
        d.host.clone().unwrap_or_default(),
        d.subset.clone().filter(|s| !s.is_empty()),
        d.port
            .as_ref()
            .and_then(|p| p.number)
            .and_then(|n| u16::try_from(n).ok()),
    )
}

fn route(r: &HttpRoute, at: &str, own_host: &str) -> Result<Route, String> {
    let matches = r
        .r#match
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, m)| RequestMatch::compile(m, &format!("{at}.match[{i}]")))
        .collect::<Result<Vec<_>, _>>()?;
    let action = if let Some(d) = &r.direct_response {
        let status = d
            .status
            .and_then(|s| u16::try_from(s).ok())
            .and_then(|s| StatusCode::from_u16(s).ok())
            .ok_or_else(|| format!("{at}.directResponse.status: not an HTTP status"))?;
        let body = d
            .body
            .as_ref()
            .and_then(|b| b.string.clone())
            .map(Bytes::from)
            .unwrap_or_default();
        Action::Direct { status, body }
    } else if let Some(rd) = &r.redirect {
        Action::Redirect(Redirect {
            uri: rd.uri.clone(),
            authority: rd.authority.clone(),
            port: rd.port.and_then(|p| u16::try_from(p).ok()),
            scheme: rd.scheme.clone(),
            code: rd
                .redirect_code
                .and_then(|c| u16::try_from(c).ok())
                .and_then(|c| StatusCode::from_u16(c).ok())
                .unwrap_or(StatusCode::MOVED_PERMANENTLY),
        })
    } else {
        let dests = match &r.route {
            Some(ds) if !ds.is_empty() => {
                let n = ds.len();
                ds.iter()
                    .enumerate()
                    .map(|(i, d)| {
                        let (host, subset, port) =
                            d.destination.as_ref().map(dest_of).unwrap_or_default();
                        Ok(Dest {
                            host,
                            subset,
                            port,
                            weight: weight(d.weight, n),
                            headers: Headers::compile(
                                d.headers.as_ref(),
                                &format!("{at}.route[{i}].headers"),
                            )?,
                        })
                    })
                    .collect::<Result<Vec<_>, String>>()?
            }
            _ => vec![default_dest(own_host)],
        };
        Action::Forward(dests)
    };
    let rewrite = r.rewrite.as_ref().map(|w| {
        Ok::<_, String>(Rewrite {
            uri: w.uri.clone(),
            authority: w.authority.clone(),
            regex: match &w.uri_regex_rewrite {
                Some(rr) => Some((
                    regex::Regex::new(rr.r#match.as_deref().unwrap_or(""))
                        .map_err(|e| format!("{at}.rewrite.uriRegexRewrite.match: {e}"))?,
                    rr.rewrite.clone().unwrap_or_default(),
                )),
                None => None,
            },
        })
    });
    let mut mirrors: Vec<Mirror> = r
        .mirror
        .as_ref()
        .map(|d| {
            let (host, subset, port) = dest_of(d);
            let pct = r
                .mirror_percentage
                .as_ref()
                .and_then(|p| p.value)
                .or(r.mirror_percent.map(f64::from))
                .unwrap_or(100.0);
            Mirror {
                host,
                subset,
                port,
                percent: pct,
            }
        })
        .into_iter()
        .collect();
    for m in r.mirrors.iter().flatten() {
        if let Some(d) = &m.destination {
            let (host, subset, port) = dest_of(d);
            mirrors.push(Mirror {
                host,
                subset,
                port,
                percent: percent(m.percentage.as_ref()),
            });
        }
    }
    Ok(Route {
        name: r.name.clone(),
        matches,
        action,
        rewrite: rewrite.transpose()?,
        timeout: duration(r.timeout.as_ref(), &format!("{at}.timeout"))?,
        retry: RetryPolicy::compile(r.retries.as_ref(), &format!("{at}.retries"))?,
        fault: fault(r.fault.as_ref(), &format!("{at}.fault"))?,
        mirrors,
        headers: Headers::compile(r.headers.as_ref(), &format!("{at}.headers"))?,
        cors: r
            .cors_policy
            .as_ref()
            .map(|c| cors::Cors::compile(c, &format!("{at}.corsPolicy")))
            .transpose()?,
    })
}

fn default_dest(host: &str) -> Dest {
    Dest {
        host: host.to_string(),
        subset: None,
        port: None,
        weight: 100,
        headers: Headers::default(),
    }
}

fn default_route(host: &str) -> Route {
    Route {
        name: None,
        matches: Vec::new(),
        action: Action::Forward(vec![default_dest(host)]),
        rewrite: None,
        timeout: None,
        retry: RetryPolicy::default(),
        fault: Fault::default(),
        mirrors: Vec::new(),
        headers: Headers::default(),
        cors: None,
    }
}

impl Router {
    /// The routing of what an address resolves to: a Service's, or for a
    /// pod address, every request to that pod.
    pub fn for_resolved(
        r: &api::discovery::Resolved,
        outliers: &outlier::Registry,
    ) -> Result<Self, String> {
        match r {
            api::discovery::Resolved::Service(s) => Self::compile(s, outliers),
            api::discovery::Resolved::Workload(w) => {
                let host = w.address.to_string();
                let spec = BackendSpec {
                    endpoints: vec![Endpoint {
                        workload: w.clone(),
                        ports: Default::default(),
                    }],
                    ..BackendSpec::default()
                };
                Ok(Self {
                    routes: vec![default_route(&host)],
                    backends: [(
                        host.clone(),
                        Backend::compile(&host, &spec, "workload", outliers)?,
                    )]
                    .into(),
                    tcp: Vec::new(),
                    tls: Vec::new(),
                    default: default_dest(&host),
                })
            }
        }
    }

    /// Compiles the routing of `svc`.
    pub fn compile(svc: &Service, outliers: &outlier::Registry) -> Result<Self, String> {
        let Some(t) = svc.traffic.as_deref() else {
            let spec = BackendSpec {
                ports: svc.ports.clone(),
                endpoints: svc.endpoints.clone(),
                ..BackendSpec::default()
            };
            return Ok(Self {
                routes: vec![default_route(&svc.hostname)],
                backends: [(
                    svc.hostname.clone(),
                    Backend::compile(&svc.hostname, &spec, "traffic", outliers)?,
                )]
                .into(),
                tcp: Vec::new(),
                tls: Vec::new(),
                default: default_dest(&svc.hostname),
            });
        };
        Self::from_traffic(t, &svc.hostname, outliers)
    }

    fn from_traffic(
        t: &ServiceTraffic,
        own_host: &str,
        outliers: &outlier::Registry,
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
            .map(|(h, b)| {
                Ok((
                    h.clone(),
                    Backend::compile(h, b, &format!("backends[{h}]"), outliers)?,
                ))
            })
            .collect::<Result<HashMap<_, _>, String>>()?;
        for (i, r) in routes.iter().enumerate() {
            if let Action::Forward(ds) = &r.action {
                for d in ds {
                    let b = backends
                        .get(&d.host)
                        .ok_or_else(|| format!("http[{i}]: host {} has no backend", d.host))?;
                    if !b.subsets.contains_key(&d.subset) {
                        tracing::warn!(host = %d.host, subset = ?d.subset, "route names an undefined subset; requests to it get 503");
                    }
                }
            }
        }
        let tcp = t
            .tcp
            .iter()
            .enumerate()
            .map(|(i, r)| l4::L4Route::tcp(r, &format!("tcp[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;
        let tls = t
            .tls
            .iter()
            .enumerate()
            .map(|(i, r)| l4::L4Route::tls(r, &format!("tls[{i}]")))
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
                let (_, d) = b.outlier.as_ref()?;
                let addrs: Vec<_> = b.endpoints.iter().map(|e| e.workload.address).collect();
                Some((host.as_str(), d.states(&addrs, now)))
            })
            .collect()
    }

    /// The route for `req` and the prefix its uri match took, if any;
    /// `None`: no route matches (404, Envoy's `NR`).
    pub fn select<B>(
        &self,
        req: &Request<B>,
        port: u16,
        src: &Source,
    ) -> Option<(&Route, Option<&StrMatch>)> {
        self.routes.iter().find_map(|r| {
            if r.matches.is_empty() {
                return Some((r, None));
            }
            r.matches
                .iter()
                .find(|m| m.matches(req, port, src))
                .map(|m| (r, m.uri.as_ref()))
        })
    }
}

/// The path after a rewrite: a prefix match's prefix is replaced, any
/// other match replaces the whole path; the query is kept.
pub fn rewrite_path(path_and_query: &str, matched: Option<&StrMatch>, rw: &Rewrite) -> String {
    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_and_query, None),
    };
    let mut out = match (&rw.uri, matched) {
        (Some(new), Some(StrMatch::Prefix(p))) if path.len() >= p.len() => {
            let rest = &path[p.len()..];
            // `/v2/` -> `/` on `/v2/x` gives `/x`, not `//x`.
            if new.ends_with('/') && rest.starts_with('/') {
                format!("{new}{}", &rest[1..])
            } else {
                format!("{new}{rest}")
            }
        }
        (Some(new), _) => new.clone(),
        (None, _) => path.to_string(),
    };
    if let Some((re, with)) = &rw.regex {
        out = re.replace_all(&out, with.as_str()).into_owned();
    }
    if out.is_empty() {
        out.push('/');
    }
    match query {
        Some(q) => format!("{out}?{q}"),
        None => out,
    }
}

#[cfg(test)]
mod tests;
