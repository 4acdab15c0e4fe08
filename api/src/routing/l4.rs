//! TCP and TLS routes: conditions on port, destination subnet, source
//! and (TLS) server name, and weighted destinations.

use std::collections::BTreeMap;

use super::{Error, destination, weight};
use crate::istio::virtual_service::{RouteDestination, TcpRoute, TlsRoute};
use crate::proto;

fn destinations(
    route: Option<&Vec<RouteDestination>>,
    at: &str,
) -> Result<Vec<proto::WeightedDestination>, Error> {
    let ds = route.ok_or_else(|| format!("{at}.route: required"))?;
    Ok(ds
        .iter()
        .map(|d| proto::WeightedDestination {
            destination: d.destination.as_ref().map(destination),
            weight: weight(d.weight, ds.len()),
            headers: None,
        })
        .collect())
}

fn l4_match(
    port: Option<u32>,
    subnets: Option<&Vec<String>>,
    source_labels: Option<&BTreeMap<String, String>>,
    source_namespace: Option<&String>,
) -> proto::L4Match {
    proto::L4Match {
        destination_subnets: subnets.cloned().unwrap_or_default(),
        port: port.unwrap_or(0),
        source_labels: source_labels.cloned().unwrap_or_default(),
        source_namespace: source_namespace.cloned().unwrap_or_default(),
        sni_hosts: Vec::new(),
    }
}

fn route<M>(
    matches: Option<&Vec<M>>,
    route: Option<&Vec<RouteDestination>>,
    at: &str,
    each: impl Fn(&M) -> proto::L4Match,
) -> Result<proto::L4Route, Error> {
    Ok(proto::L4Route {
        matches: matches.into_iter().flatten().map(each).collect(),
        destinations: destinations(route, at)?,
    })
}

/// A `tcp` route.
pub(super) fn tcp(r: &TcpRoute, at: &str) -> Result<proto::L4Route, Error> {
    route(r.r#match.as_ref(), r.route.as_ref(), at, |m| {
        l4_match(
            m.port,
            m.destination_subnets.as_ref(),
            m.source_labels.as_ref(),
            m.source_namespace.as_ref(),
        )
    })
}

/// A `tls` route: `tcp`'s conditions plus the SNI.
pub(super) fn tls(r: &TlsRoute, at: &str) -> Result<proto::L4Route, Error> {
    route(r.r#match.as_ref(), r.route.as_ref(), at, |m| {
        proto::L4Match {
            sni_hosts: m.sni_hosts.clone().unwrap_or_default(),
            ..l4_match(
                m.port,
                m.destination_subnets.as_ref(),
                m.source_labels.as_ref(),
                m.source_namespace.as_ref(),
            )
        }
    })
}
