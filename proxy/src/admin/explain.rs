//! `/explain/outbound` and `/explain/inbound`: what this proxy would do
//! with a request, from the configuration it holds now, judged by the
//! same code as real requests ([`Router::select`], [`api::jwt`],
//! [`api::authz`]). `meshctl explain` asks the client's proxy for the
//! route and endpoints, then each endpoint's proxy for the verdict.

use std::net::{IpAddr, SocketAddr};

use api::discovery::Resolved;
use api::explain::{Authorization, Destination, Endpoint, Inbound, Outbound, Query, RouteChoice};
use api::proto::MtlsMode;
use hyper::header::{HOST, HeaderName, HeaderValue};
use hyper::{Method, Request, Uri};

use super::State;
use crate::discovery::Lookup;
use crate::inbound::http::View;
use crate::inbound::http::authn::{self, Outcome};
use crate::inbound::{authorize, own_policy};
use crate::traffic::{Action, Router};

/// The request `q` describes, as the proxy would see it.
fn request(q: &Query) -> Result<(Request<()>, String, u16), String> {
    let uri: Uri = q.url.parse().map_err(|e| format!("url {:?}: {e}", q.url))?;
    let host = uri
        .host()
        .ok_or_else(|| format!("url {:?} has no host", q.url))?
        .trim_matches(['[', ']'])
        .to_string();
    let port = uri
        .port_u16()
        .unwrap_or(if uri.scheme_str() == Some("https") {
            443
        } else {
            80
        });
    let method = Method::from_bytes(q.method.as_bytes())
        .map_err(|_| format!("method {:?} is not a method", q.method))?;
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .body(())
        .map_err(|e| e.to_string())?;
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
    let h = req.headers_mut();
    h.insert(
        HOST,
        HeaderValue::try_from(authority).map_err(|e| e.to_string())?,
    );
    for (n, v) in q.header_pairs()? {
        let name = HeaderName::try_from(n.as_str()).map_err(|e| format!("header {n:?}: {e}"))?;
        let value = HeaderValue::try_from(v.as_str()).map_err(|e| format!("header {n:?}: {e}"))?;
        h.append(name, value);
    }
    Ok((req, host, port))
}

/// `host` resolved inside the pod, as the app would.
async fn resolve(host: &str, port: u16) -> Result<IpAddr, String> {
    if let Ok(ip) = host.parse() {
        return Ok(ip);
    }
    tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| format!("{host} does not resolve in this pod: {e}"))?
        .next()
        .map(|a| a.ip())
        .ok_or_else(|| format!("{host} resolves to no address"))
}

fn destinations(router: &Router, ds: &[crate::traffic::Dest], port: u16) -> Vec<Destination> {
    ds.iter()
        .map(|d| {
            let mut out = Destination {
                host: d.host.clone(),
                subset: d.subset.clone(),
                port: d.port.unwrap_or(port),
                weight: d.weight,
                ..Destination::default()
            };
            let Some(b) = router.backends.get(&d.host) else {
                out.error = Some(format!("unknown destination host {}: 503 (UH)", d.host));
                return out;
            };
            out.port = b.service_port(d.port, port);
            let Some(sub) = b.subset(&d.subset, out.port) else {
                out.error = Some(format!(
                    "{} has no subset {}: 503 (NR)",
                    d.host,
                    d.subset.as_deref().unwrap_or("-")
                ));
                return out;
            };
            out.endpoints = sub
                .members
                .iter()
                .map(|i| {
                    let e = &b.endpoints[*i];
                    let w = &e.workload;
                    Endpoint {
                        pod: format!("{}/{}", w.namespace, w.name),
                        address: w.address,
                        port: b.endpoint_port(e, out.port),
                        identity: w.identity.as_ref().map(ToString::to_string),
                    }
                })
                .collect();
            if out.endpoints.is_empty() {
                out.error = Some("no endpoint: 503 (UH)".into());
            }
            out
        })
        .collect()
}

/// What the outbound side does with `q`.
pub(super) async fn outbound(st: &State, q: &Query) -> Result<Outbound, String> {
    let (req, host, port) = request(q)?;
    let ip = resolve(&host, port).await?;
    let mut out = Outbound {
        identity: st.pod.identity.id().to_string(),
        source_address: Some(st.pod.ip),
        address: SocketAddr::new(ip, port).to_string(),
        ..Outbound::default()
    };
    let target = match st.discovery.lookup(ip).await {
        Lookup::Mesh(t) => t,
        Lookup::Passthrough => {
            out.note = Some(
                "not in the mesh: the connection goes to the address as it is, unrouted".into(),
            );
            return Ok(out);
        }
    };
    match &target.resolved {
        Resolved::Service(s) => {
            out.target = Some(s.hostname.clone());
            out.virtual_service = s
                .routing
                .as_ref()
                .map(|r| r.virtual_service.clone())
                .filter(|v| !v.is_empty());
        }
        Resolved::Workload(w) => out.target = Some(format!("{}/{}", w.namespace, w.name)),
    }
    let source = st.pod.source.load();
    let Some((index, route, _)) = target.router.select(&req, port, &source) else {
        out.note = Some("no route matches: 404 (NR)".into());
        return Ok(out);
    };
    let mut choice = RouteChoice {
        index,
        name: route.name.clone().unwrap_or_else(|| "default".into()),
        ..RouteChoice::default()
    };
    match &route.action {
        Action::Forward(ds) => {
            choice.action = "forward".into();
            choice.destinations = destinations(&target.router, ds, port);
        }
        Action::Redirect(rd) => {
            choice.action = format!("redirect {}", rd.code.as_u16());
        }
        Action::Direct { status, .. } => {
            choice.action = format!("direct response {}", status.as_u16());
        }
    }
    out.route = Some(choice);
    Ok(out)
}

/// Istio's name of `m`.
fn mode_name(m: MtlsMode) -> &'static str {
    m.as_str_name().trim_start_matches("MTLS_MODE_")
}

/// What the inbound side does with `q` from `q.principal` at `q.source`
/// to target port `q.port`.
pub(super) fn inbound(st: &State, q: &Query) -> Result<Inbound, String> {
    let ib = &st.inbound;
    let port = q.port.ok_or("give the target port")?;
    let (req, _, _) = request(q)?;
    let principal = q
        .principal
        .as_deref()
        .unwrap_or_default()
        .trim_start_matches("spiffe://");
    let mode = own_policy(ib, |p| api::proto::mtls_mode(p.peer_auth.as_ref(), port))
        .unwrap_or(MtlsMode::Permissive);
    let name = match ib
        .discovery
        .current(ib.pod.ip)
        .as_deref()
        .map(|t| &t.resolved)
    {
        Some(Resolved::Workload(w)) => format!("{}/{}", w.namespace, w.name),
        _ => ib.pod.identity.id().to_string(),
    };
    let mut out = Inbound {
        pod: name,
        port,
        mtls_mode: mode_name(mode).into(),
        ..Inbound::default()
    };
    out.connection = match (principal.is_empty(), mode) {
        (true, MtlsMode::Strict) => {
            out.authentication = "not reached".into();
            out.authorization.explanation = "not reached".into();
            out.connection = "refused: STRICT takes mTLS only, and a plaintext connection is closed before any byte reaches the app".into();
            return Ok(out);
        }
        (true, _) => format!("accepted in plaintext ({})", mode_name(mode)),
        (false, _) => format!("accepted over mTLS from {principal}"),
    };
    let auth = match authn::judge(ib, &req).0 {
        Outcome::NoRules => {
            out.authentication = "no RequestAuthentication applies".into();
            None
        }
        Outcome::NoToken => {
            out.authentication = "no token: the request goes on without a request principal".into();
            None
        }
        Outcome::Valid { auth, .. } => {
            out.authentication = format!("valid token: request principal {}", auth.principal);
            Some(auth)
        }
        Outcome::Refused(f) => {
            out.authentication = format!("refused: 401 {f}");
            out.authorization.explanation = "not reached".into();
            return Ok(out);
        }
    };
    let source = q.source.unwrap_or(IpAddr::from([0, 0, 0, 0]));
    let view = View(&req);
    let mut r = crate::inbound::request(
        principal,
        source,
        SocketAddr::new(ib.pod.ip, port),
        Some(&view),
    );
    r.auth = auth.as_ref();
    out.authorization = Authorization::of(authorize(ib, &r).as_ref());
    Ok(out)
}
