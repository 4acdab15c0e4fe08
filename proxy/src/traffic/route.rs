//! One HTTP route compiled: its action (weighted destinations, redirect or
//! direct response), rewrite, timeout, retries, faults, mirrors, header
//! operations and CORS; the path rewrite itself.

use std::time::Duration;

use api::istio::shared::{Destination, HeaderOperations, Percent};
use api::istio::virtual_service::{HttpFaultInjection, HttpRoute};
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
    pub(super) fn compile(ops: Option<&HeaderOperations>, at: &str) -> Result<Self, String> {
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
pub(super) fn weight(w: Option<i32>, n: usize) -> u32 {
    match w {
        Some(w) => u32::try_from(w).unwrap_or(0),
        None if n == 1 => 100,
        None => 0,
    }
}

pub(super) fn dest_of(d: &Destination) -> (String, Option<String>, Option<u16>) {
    (
        d.host.clone().unwrap_or_default(),
        d.subset.clone().filter(|s| !s.is_empty()),
        d.port
            .as_ref()
            .and_then(|p| p.number)
            .and_then(|n| u16::try_from(n).ok()),
    )
}

pub(super) fn route(r: &HttpRoute, at: &str, own_host: &str) -> Result<Route, String> {
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
