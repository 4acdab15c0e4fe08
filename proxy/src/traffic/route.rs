//! One HTTP route compiled: its action (weighted destinations, redirect or
//! direct response), rewrite, timeout, retries, faults, mirrors, header
//! operations and CORS; the path rewrite itself.

use std::time::Duration;

use api::proto;
use api::routing::from_wire;
use bytes::Bytes;
use hyper::StatusCode;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};

use super::cors;
use super::matching::{RequestMatch, StrMatch};
use super::retry::RetryPolicy;

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
#[derive(Debug, Default, Clone, Copy)]
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
    pub(super) fn compile(ops: Option<&proto::HeaderOps>, at: &str) -> Result<Self, String> {
        let Some(ops) = ops else {
            return Ok(Self::default());
        };
        let name = |k: &str, f: &str| {
            HeaderName::try_from(k.to_ascii_lowercase()).map_err(|e| format!("{at}.{f}.{k}: {e}"))
        };
        let pairs = |hs: &[proto::Header], f: &str| {
            hs.iter()
                .map(|h| {
                    let v = HeaderValue::try_from(h.value.as_str())
                        .map_err(|e| format!("{at}.{f}.{}: {e}", h.name))?;
                    Ok((name(&h.name, f)?, v))
                })
                .collect::<Result<Vec<_>, String>>()
        };
        Ok(Self {
            set: pairs(&ops.set, "set")?,
            add: pairs(&ops.add, "add")?,
            remove: ops
                .remove
                .iter()
                .map(|k| name(k, "remove"))
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
    fn compile(h: Option<&proto::HeaderRewrites>, at: &str) -> Result<Self, String> {
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

fn status(code: u32, at: &str) -> Result<StatusCode, String> {
    u16::try_from(code)
        .ok()
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or_else(|| format!("{at}: {code} is not an HTTP status"))
}

fn fault(f: Option<&proto::Fault>, at: &str) -> Result<Fault, String> {
    let Some(f) = f else {
        return Ok(Fault::default());
    };
    let delay = f.delay.as_ref().map(|d| {
        (
            d.fixed.as_ref().map(from_wire).unwrap_or_default(),
            d.percent,
        )
    });
    let abort = match &f.abort {
        Some(a) => {
            use proto::fault_abort::Code;
            let kind = match a.code {
                Some(Code::HttpStatus(s)) => {
                    Abort::Http(status(s, &format!("{at}.abort.httpStatus"))?)
                }
                Some(Code::GrpcStatus(g)) => Abort::Grpc(g),
                None => Abort::Http(StatusCode::SERVICE_UNAVAILABLE),
            };
            Some((kind, a.percent))
        }
        None => None,
    };
    Ok(Fault { delay, abort })
}

/// A wire destination's host, subset and port.
pub(super) fn dest_of(d: Option<&proto::Destination>) -> (String, Option<String>, Option<u16>) {
    d.map(|d| {
        (
            d.host.clone(),
            Some(d.subset.clone()).filter(|s| !s.is_empty()),
            u16::try_from(d.port).ok().filter(|p| *p != 0),
        )
    })
    .unwrap_or_default()
}

/// Weighted destinations.
pub(super) fn dests(ds: &[proto::WeightedDestination], at: &str) -> Result<Vec<Dest>, String> {
    ds.iter()
        .enumerate()
        .map(|(i, d)| {
            let (host, subset, port) = dest_of(d.destination.as_ref());
            Ok(Dest {
                host,
                subset,
                port,
                weight: d.weight,
                headers: Headers::compile(d.headers.as_ref(), &format!("{at}[{i}].headers"))?,
            })
        })
        .collect()
}

fn nonempty(s: &str) -> Option<String> {
    Some(s.to_string()).filter(|s| !s.is_empty())
}

pub(super) fn route(r: &proto::HttpRoute, at: &str, own_host: &str) -> Result<Route, String> {
    use proto::http_route::Action as Wire;
    let matches = r
        .matches
        .iter()
        .enumerate()
        .map(|(i, m)| RequestMatch::compile(m, &format!("{at}.match[{i}]")))
        .collect::<Result<Vec<_>, _>>()?;
    let action = match &r.action {
        Some(Wire::DirectResponse(d)) => Action::Direct {
            status: status(d.status, &format!("{at}.directResponse.status"))?,
            body: Bytes::from(d.body.clone()),
        },
        Some(Wire::Redirect(rd)) => Action::Redirect(Redirect {
            uri: nonempty(&rd.uri),
            authority: nonempty(&rd.authority),
            port: u16::try_from(rd.port).ok().filter(|p| *p != 0),
            scheme: nonempty(&rd.scheme),
            code: status(rd.status, &format!("{at}.redirect.redirectCode"))?,
        }),
        Some(Wire::Forward(f)) if !f.destinations.is_empty() => {
            Action::Forward(dests(&f.destinations, &format!("{at}.route"))?)
        }
        _ => Action::Forward(vec![default_dest(own_host)]),
    };
    let rewrite = r.rewrite.as_ref().map(|w| {
        Ok::<_, String>(Rewrite {
            uri: nonempty(&w.uri),
            authority: nonempty(&w.authority),
            regex: match &w.regex {
                Some(rr) => Some((
                    regex::Regex::new(&rr.pattern)
                        .map_err(|e| format!("{at}.rewrite.uriRegexRewrite.match: {e}"))?,
                    rr.substitution.clone(),
                )),
                None => None,
            },
        })
    });
    let mirrors = r
        .mirrors
        .iter()
        .map(|m| {
            let (host, subset, port) = dest_of(m.destination.as_ref());
            Mirror {
                host,
                subset,
                port,
                percent: m.percent,
            }
        })
        .collect();
    Ok(Route {
        name: nonempty(&r.name),
        matches,
        action,
        rewrite: rewrite.transpose()?,
        timeout: r.timeout.as_ref().map(from_wire).filter(|d| !d.is_zero()),
        retry: r
            .retry
            .as_ref()
            .map(RetryPolicy::compile)
            .unwrap_or_default(),
        fault: fault(r.fault.as_ref(), &format!("{at}.fault"))?,
        mirrors,
        headers: Headers::compile(r.headers.as_ref(), &format!("{at}.headers"))?,
        cors: r
            .cors
            .as_ref()
            .map(|c| cors::Cors::compile(c, &format!("{at}.corsPolicy")))
            .transpose()?,
    })
}

pub(super) fn default_dest(host: &str) -> Dest {
    Dest {
        host: host.to_string(),
        subset: None,
        port: None,
        weight: 100,
        headers: Headers::default(),
    }
}

pub(super) fn default_route(host: &str) -> Route {
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
