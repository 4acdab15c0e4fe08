//! The app's probes, sent through the proxy as Istio does: kubelet's
//! plaintext probes would be refused once mTLS is strict, so each HTTP
//! or TCP probe becomes an HTTP probe of the proxy's health port at
//! `/app-health/<container>/<livez|readyz|startupz>`, and the proxy (told
//! the originals in `MESH_APP_PROBERS`, as JSON) probes the app itself.
//! HTTPS probes and probes of another host are left as they are.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, HTTPGetAction, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::HEALTH_PORT;

/// The original of a rewritten probe, as the proxy runs it: an HTTP GET
/// of `path` when there is one, else a TCP connect.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppProbe {
    /// The app's port (a named port resolved).
    pub port: u16,
    /// `httpGet.path`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// `httpGet.httpHeaders`, as (name, value).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<(String, String)>,
    /// `timeoutSeconds`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<i32>,
}

/// A named port of `c`, or the number.
fn port_of(c: &Container, p: &IntOrString) -> Option<u16> {
    let n = match p {
        IntOrString::Int(n) => *n,
        IntOrString::String(name) => {
            c.ports
                .iter()
                .flatten()
                .find(|cp| cp.name.as_deref() == Some(name.as_str()))?
                .container_port
        }
    };
    u16::try_from(n).ok()
}

fn rewrite_one(c: &Container, probe: &mut Probe, kind: &str) -> Option<(String, AppProbe)> {
    let original = if let Some(h) = &probe.http_get {
        // HTTPS, or another host than the pod: kubelet's own business.
        if h.scheme.as_deref().is_some_and(|s| s != "HTTP") || h.host.is_some() {
            return None;
        }
        AppProbe {
            port: port_of(c, &h.port)?,
            path: Some(h.path.clone().unwrap_or_else(|| "/".into())),
            headers: h
                .http_headers
                .iter()
                .flatten()
                .map(|h| (h.name.clone(), h.value.clone()))
                .collect(),
            timeout_seconds: probe.timeout_seconds,
        }
    } else if let Some(t) = &probe.tcp_socket {
        AppProbe {
            port: port_of(c, &t.port)?,
            path: None,
            headers: Vec::new(),
            timeout_seconds: probe.timeout_seconds,
        }
    } else {
        return None;
    };
    let path = format!("/app-health/{}/{kind}", c.name);
    probe.tcp_socket = None;
    probe.http_get = Some(HTTPGetAction {
        path: Some(path.clone()),
        port: IntOrString::Int(HEALTH_PORT),
        scheme: Some("HTTP".into()),
        ..Default::default()
    });
    Some((path, original))
}

/// Rewrites the HTTP and TCP probes of `containers`; the originals by
/// path, as JSON, when there were any.
pub fn rewrite(containers: &mut [Container]) -> Option<String> {
    let mut originals = BTreeMap::new();
    for c in containers.iter_mut() {
        let snapshot = c.clone();
        for (probe, kind) in [
            (&mut c.liveness_probe, "livez"),
            (&mut c.readiness_probe, "readyz"),
            (&mut c.startup_probe, "startupz"),
        ] {
            if let Some(p) = probe
                && let Some((path, original)) = rewrite_one(&snapshot, p, kind)
            {
                originals.insert(path, original);
            }
        }
    }
    (!originals.is_empty()).then(|| serde_json::to_string(&originals).unwrap_or_default())
}
