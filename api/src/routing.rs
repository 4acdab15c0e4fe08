//! The controller's compile step: a Service's VirtualService and
//! DestinationRules ([`ServiceTraffic`]), and a workload's policy
//! ([`WorkloadPolicy`]), translated into the typed wire of
//! `resources.proto` that proxies apply. Istio's defaults are filled here
//! (retries, outlier detection, redirect codes, weights), durations are
//! parsed here, and DestinationRule precedence is resolved here per subset
//! and port, so that a proxy never reads a CRD.
//!
//! The input was validated ([`crate::istio::validate`]); what still fails
//! to translate is an error with the field path, and the controller serves
//! the Service without that resource rather than a half of it.

use crate::istio::shared::{Destination, HeaderOperations, Headers, StringMatch};
use crate::proto;
use crate::traffic::{ServiceTraffic, WorkloadPolicy};

mod backend;
mod http;
mod l4;
mod workload;

pub use backend::{backend, connection_pool, load_balancer, outlier_detection};
pub use http::{RETRY_ON, default_retry, for_sidecars, grpc_code, request_match, retry_on};

/// A translation failure: the field path and why.
pub type Error = String;

/// The wire routing of one Service.
pub fn routing(t: &ServiceTraffic, own_host: &str) -> Result<proto::Routing, Error> {
    let http = t
        .http
        .iter()
        .enumerate()
        .filter_map(|(i, r)| http::route(r, &format!("http[{i}]"), own_host).transpose())
        .collect::<Result<_, _>>()?;
    let tcp = t
        .tcp
        .iter()
        .enumerate()
        .map(|(i, r)| l4::tcp(r, &format!("tcp[{i}]")))
        .collect::<Result<_, _>>()?;
    let tls = t
        .tls
        .iter()
        .enumerate()
        .map(|(i, r)| l4::tls(r, &format!("tls[{i}]")))
        .collect::<Result<_, _>>()?;
    let backends = t
        .backends
        .iter()
        .map(|(h, b)| backend(h, b).map_err(|e| format!("backends[{h}].{e}")))
        .collect::<Result<_, _>>()?;
    Ok(proto::Routing {
        virtual_service: t.virtual_service.clone().unwrap_or_default(),
        http,
        tcp,
        tls,
        backends,
    })
}

/// What a workload's own proxy enforces, on the wire.
pub fn workload_policy(p: &WorkloadPolicy) -> Result<proto::WorkloadPolicy, Error> {
    workload::policy(p)
}

/// A duration on the wire.
pub fn wire_duration(d: std::time::Duration) -> proto::Duration {
    proto::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

/// A wire duration as a `Duration` (negative parts read as zero).
pub fn from_wire(d: &proto::Duration) -> std::time::Duration {
    std::time::Duration::new(
        u64::try_from(d.seconds).unwrap_or(0),
        u32::try_from(d.nanos).unwrap_or(0),
    )
}

/// An Istio duration field, parsed; zero reads as unset.
fn duration(v: Option<&String>, at: &str) -> Result<Option<proto::Duration>, Error> {
    v.map(|s| crate::duration::parse(s).map_err(|e| format!("{at}: {e}")))
        .transpose()
        .map(|d| d.filter(|d| !d.is_zero()).map(wire_duration))
}

/// An Istio duration field with a default.
fn duration_or(
    v: Option<&String>,
    at: &str,
    default: std::time::Duration,
) -> Result<proto::Duration, Error> {
    Ok(match v {
        Some(s) => wire_duration(crate::duration::parse(s).map_err(|e| format!("{at}: {e}"))?),
        None => wire_duration(default),
    })
}

/// A string condition; an empty one means "present".
fn string_match(m: &StringMatch) -> proto::StringMatch {
    use proto::string_match::Kind;
    let kind = if let Some(e) = &m.exact {
        Some(Kind::Exact(e.clone()))
    } else if let Some(p) = &m.prefix {
        Some(Kind::Prefix(p.clone()))
    } else {
        m.regex.clone().map(Kind::Regex)
    };
    proto::StringMatch { kind }
}

fn named(m: Option<&std::collections::BTreeMap<String, StringMatch>>) -> Vec<proto::NamedMatch> {
    m.into_iter()
        .flatten()
        .map(|(k, v)| proto::NamedMatch {
            name: k.to_ascii_lowercase(),
            r#match: Some(string_match(v)),
        })
        .collect()
}

fn header_ops(ops: Option<&HeaderOperations>) -> Option<proto::HeaderOps> {
    let ops = ops?;
    let pairs = |m: Option<&std::collections::BTreeMap<String, String>>| {
        m.into_iter()
            .flatten()
            .map(|(k, v)| proto::Header {
                name: k.to_ascii_lowercase(),
                value: v.clone(),
            })
            .collect()
    };
    Some(proto::HeaderOps {
        set: pairs(ops.set.as_ref()),
        add: pairs(ops.add.as_ref()),
        remove: ops
            .remove
            .iter()
            .flatten()
            .map(|k| k.to_ascii_lowercase())
            .collect(),
    })
}

fn header_rewrites(h: Option<&Headers>) -> Option<proto::HeaderRewrites> {
    let h = h?;
    Some(proto::HeaderRewrites {
        request: header_ops(h.request.as_ref()),
        response: header_ops(h.response.as_ref()),
    })
}

fn destination(d: &Destination) -> proto::Destination {
    proto::Destination {
        host: d.host.clone().unwrap_or_default(),
        subset: d.subset.clone().unwrap_or_default(),
        port: d.port.as_ref().and_then(|p| p.number).unwrap_or(0),
    }
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

#[cfg(test)]
mod tests;
