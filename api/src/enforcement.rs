//! What the mesh stores without acting on it yet. `apply` prints it as a
//! warning beside the object's result and `analyze` reports it, so that
//! no kind or field is ever accepted silently.

use crate::manifest::Object;

/// Kinds stored but not enforced, and what that means for the user.
fn kind_note(o: &Object) -> Option<&'static str> {
    Some(match o {
        Object::ConfigMap(cm) if crate::istio::mesh_config::from_config_map(cm).is_none() => {
            "stored but not used: pods do not mount ConfigMaps here, and only the ConfigMap `istio` of istio-system or mesh-system configures the mesh"
        }
        Object::WorkloadEntry(_) => {
            "stored but not used yet: no ServiceEntry sends traffic to workload entries"
        }
        _ => return None,
    })
}

/// Fields of enforced kinds that are stored but not acted on.
fn field_notes(o: &Object) -> Vec<(String, &'static str)> {
    let mut out = Vec::new();
    match o {
        Object::Sidecar(s) => {
            let spec = &s.spec;
            for (field, set) in [
                ("spec.ingress", spec.ingress.is_some()),
                ("spec.egress", spec.egress.is_some()),
                (
                    "spec.inboundConnectionPool",
                    spec.inbound_connection_pool.is_some(),
                ),
            ] {
                if set {
                    out.push((
                        field.to_string(),
                        "stored but not enforced yet: only spec.outboundTrafficPolicy is",
                    ));
                }
            }
        }
        Object::VirtualService(v) => {
            if v.spec.export_to.is_some() {
                out.push((
                    "spec.exportTo".into(),
                    "stored but not enforced yet: the routes apply in every namespace",
                ));
            }
            for (i, h) in v.spec.http.iter().flatten().enumerate() {
                if h.cors_policy
                    .as_ref()
                    .is_some_and(|c| c.unmatched_preflights.is_some())
                {
                    out.push((
                        format!("spec.http[{i}].corsPolicy.unmatchedPreflights"),
                        "stored but not enforced yet: unmatched preflights are forwarded",
                    ));
                }
            }
        }
        Object::PeerAuthentication(p) => {
            // Servers honour DISABLE (plaintext is accepted); clients do
            // not read it yet.
            const DISABLE: &str = "DISABLE is enforced as PERMISSIVE: plaintext is accepted, and meshed clients still connect over mTLS unless a DestinationRule sets trafficPolicy.tls.mode DISABLE for this destination";
            let disabled = |m: Option<&crate::istio::security::Mtls>| {
                m.and_then(|m| m.mode.as_deref()) == Some("DISABLE")
            };
            if disabled(p.spec.mtls.as_ref()) {
                out.push(("spec.mtls.mode".into(), DISABLE));
            }
            for (port, m) in p.spec.port_level_mtls.iter().flatten() {
                if disabled(Some(m)) {
                    out.push((format!("spec.portLevelMtls[{port}].mode"), DISABLE));
                }
            }
        }
        Object::AuthorizationPolicy(p) => authz_notes(&p.spec, &mut out),
        Object::Telemetry(t) => telemetry_notes(&t.spec, &mut out),
        Object::ConfigMap(cm) => {
            if let Some(settings) = crate::istio::mesh_config::from_config_map(cm) {
                out.extend(crate::istio::mesh_config::not_used(&settings));
            }
        }
        Object::RequestAuthentication(p)
            if p.spec.target_ref.is_some() || p.spec.target_refs.is_some() =>
        {
            out.push((
                "spec.targetRef".into(),
                "policies attached by targetRef (gateways, waypoints) apply to no sidecar: use a selector",
            ))
        }
        Object::DestinationRule(d) => {
            if d.spec.export_to.is_some() {
                out.push((
                    "spec.exportTo".into(),
                    "stored but not enforced yet: the policy applies in every namespace",
                ));
            }
            tls_notes(&d.spec, &mut out);
        }
        _ => {}
    }
    out
}

/// The parts of a Telemetry that are not acted on.
fn telemetry_notes(
    spec: &crate::istio::telemetry::TelemetrySpec,
    out: &mut Vec<(String, &'static str)>,
) {
    if spec.target_ref.is_some() || spec.target_refs.is_some() {
        out.push((
            "spec.targetRef".into(),
            "resources attached by targetRef (gateways, waypoints) apply to no sidecar: use a selector",
        ));
    }
    for (i, m) in spec.metrics.iter().flatten().enumerate() {
        if m.reporting_interval.is_some() {
            out.push((
                format!("spec.metrics[{i}].reportingInterval"),
                "stored but not used: Prometheus scrapes the proxy's current values whenever it asks",
            ));
        }
        for (j, o) in m.overrides.iter().flatten().enumerate() {
            if o.r#match
                .as_ref()
                .is_some_and(|s| s.custom_metric.is_some())
            {
                out.push((
                    format!("spec.metrics[{i}].overrides[{j}].match.customMetric"),
                    "not supported: the proxy has no custom metrics, so this override is ignored",
                ));
            }
        }
        for (j, p) in m.providers.iter().flatten().enumerate() {
            if p.name.as_deref().is_some_and(|n| n != "prometheus") {
                out.push((
                    format!("spec.metrics[{i}].providers[{j}].name"),
                    "only the prometheus provider is served: the overrides apply to it",
                ));
            }
        }
    }
    for (i, t) in spec.tracing.iter().flatten().enumerate() {
        if t.use_request_id_for_trace_sampling.is_some() {
            out.push((
                format!("spec.tracing[{i}].useRequestIdForTraceSampling"),
                "stored but not used: new traces are sampled at random",
            ));
        }
        if t.r#match.is_some() && t.random_sampling_percentage.is_some() {
            out.push((
                format!("spec.tracing[{i}].randomSamplingPercentage"),
                "applies to both sides: the match selects which spans are reported, not the sampling",
            ));
        }
    }
    for (i, a) in spec.access_logging.iter().flatten().enumerate() {
        for (j, p) in a.providers.iter().flatten().enumerate() {
            if p.name.as_deref().is_some_and(|n| n != "envoy") {
                out.push((
                    format!("spec.accessLogging[{i}].providers[{j}].name"),
                    "every provider writes the proxy's JSON access log to its stdout (Istio's built-in envoy provider)",
                ));
            }
        }
    }
}

/// The parts of a DestinationRule's `tls` that are not acted on yet.
fn tls_notes(
    spec: &crate::istio::destination_rule::DestinationRuleSpec,
    out: &mut Vec<(String, &'static str)>,
) {
    use crate::istio::destination_rule::TrafficPolicy;
    let mut policies: Vec<(String, &TrafficPolicy)> = Vec::new();
    if let Some(tp) = &spec.traffic_policy {
        policies.push(("spec.trafficPolicy".into(), tp));
    }
    for (i, s) in spec.subsets.iter().flatten().enumerate() {
        if let Some(tp) = &s.traffic_policy {
            policies.push((format!("spec.subsets[{i}].trafficPolicy"), tp));
        }
    }
    for (at, tp) in policies {
        let levels = std::iter::once((at.clone(), tp.tls.as_ref())).chain(
            tp.port_level_settings
                .iter()
                .flatten()
                .enumerate()
                .map(|(i, p)| (format!("{at}.portLevelSettings[{i}]"), p.tls.as_ref())),
        );
        for (at, tls) in levels {
            let Some(tls) = tls else { continue };
            if tls.credential_name.is_some() {
                out.push((
                    format!("{at}.tls.credentialName"),
                    "stored but not enforced yet: sidecars read no Secrets; give caCertificates, clientCertificate and privateKey as files the proxy can read",
                ));
            }
            let sans = tls.subject_alt_names.as_deref().unwrap_or_default();
            match tls.mode.as_deref() {
                Some("ISTIO_MUTUAL") if !sans.is_empty() => out.push((
                    format!("{at}.tls.subjectAltNames"),
                    "not consulted with ISTIO_MUTUAL: each endpoint must present the SPIFFE ID discovery names for it",
                )),
                Some("SIMPLE" | "MUTUAL") if sans.iter().any(|n| n.contains("://")) => {
                    out.push((
                        format!("{at}.tls.subjectAltNames"),
                        "URI names are not supported: the destination fails (503 UF) until only DNS names and IP addresses are listed",
                    ))
                }
                _ => {}
            }
            if tls.ca_crl.is_some() {
                out.push((
                    format!("{at}.tls.caCrl"),
                    "stored but not enforced yet: revoked server certificates are not refused",
                ));
            }
        }
    }
}

/// The parts of an AuthorizationPolicy that are not acted on yet.
fn authz_notes(
    spec: &crate::istio::security::AuthorizationPolicySpec,
    out: &mut Vec<(String, &'static str)>,
) {
    if spec.target_ref.is_some() || spec.target_refs.is_some() {
        out.push((
            "spec.targetRef".into(),
            "policies attached by targetRef (gateways, waypoints) apply to no sidecar: use a selector",
        ));
    }
    for (i, r) in spec.rules.iter().flatten().enumerate() {
        for (j, c) in r.when.iter().flatten().enumerate() {
            let key = c.key.as_deref().unwrap_or_default();
            if key.starts_with("experimental.envoy.filters.") {
                out.push((
                    format!("spec.rules[{i}].when[{j}].key"),
                    "Envoy filter metadata is not supported: the condition matches nothing in ALLOW and everything in DENY",
                ));
            }
        }
    }
}

/// What of `o` is stored and not enforced: (field path, note); an empty
/// path stands for the whole object.
pub fn not_enforced(o: &Object) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = kind_note(o)
        .map(|n| (String::new(), format!("{} is {n}", o.kind())))
        .into_iter()
        .collect();
    out.extend(field_notes(o).into_iter().map(|(f, n)| (f, n.to_string())));
    if let Object::LocalRateLimit(rl) = o
        && let Some(n) = crate::policy::envoy_filter::note(rl)
    {
        out.push((String::new(), n));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(yaml: &str) -> Object {
        let (docs, errors) = crate::manifest::parse("t", yaml);
        assert!(errors.is_empty(), "{errors:?}");
        docs.into_iter().next().unwrap().object
    }

    #[test]
    fn security_kinds_and_unused_fields_are_named() {
        let pa = object(
            "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: shop}\nspec: {mtls: {mode: STRICT}}\n",
        );
        assert!(not_enforced(&pa).is_empty());
        let pa = object(
            "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: db, namespace: shop}\nspec:\n  selector: {matchLabels: {app: db}}\n  mtls: {mode: DISABLE}\n  portLevelMtls: {5432: {mode: DISABLE}, 80: {mode: STRICT}}\n",
        );
        let fields: Vec<String> = not_enforced(&pa).into_iter().map(|n| n.0).collect();
        assert_eq!(fields, ["spec.mtls.mode", "spec.portLevelMtls[5432].mode"]);
        let authz = object(
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: deny, namespace: shop}\nspec: {}\n",
        );
        assert!(not_enforced(&authz).is_empty());
        let authz = object(
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: jwt, namespace: shop}\nspec:\n  action: CUSTOM\n  provider: {name: ext}\n  rules:\n  - from: [{source: {requestPrincipals: [\"*\"]}}]\n    when: [{key: \"request.auth.claims[role]\", values: [admin]}, {key: source.ip, values: [10.0.0.0/8]}]\n",
        );
        let fields: Vec<String> = not_enforced(&authz).into_iter().map(|n| n.0).collect();
        assert!(
            fields.is_empty(),
            "CUSTOM and JWT fields are enforced: {fields:?}"
        );
        let ra = object(
            "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {name: jwt, namespace: shop}\nspec:\n  jwtRules: [{issuer: https://auth.example.com}]\n",
        );
        assert!(not_enforced(&ra).is_empty());
        let sidecar = object(
            "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: default, namespace: shop}\nspec:\n  egress: [{hosts: [\"./*\"]}]\n  outboundTrafficPolicy: {mode: REGISTRY_ONLY}\n",
        );
        let notes = not_enforced(&sidecar);
        assert_eq!(
            notes.iter().map(|n| n.0.as_str()).collect::<Vec<_>>(),
            ["spec.egress"]
        );
        let vs = object(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: web, namespace: shop}\nspec:\n  hosts: [web]\n  http: [{route: [{destination: {host: web}}]}]\n",
        );
        assert!(not_enforced(&vs).is_empty());
        let dr = object(
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: api, namespace: shop}\nspec:\n  host: api.example.com\n  trafficPolicy:\n    tls: {mode: SIMPLE, caCertificates: /etc/ca.pem, sni: api.example.com}\n    portLevelSettings: [{port: {number: 443}, tls: {mode: MUTUAL, credentialName: api-cert}}]\n",
        );
        let fields: Vec<String> = not_enforced(&dr).into_iter().map(|n| n.0).collect();
        assert_eq!(
            fields,
            ["spec.trafficPolicy.portLevelSettings[0].tls.credentialName"]
        );
        let uri = object(
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: api, namespace: shop}\nspec:\n  host: api.example.com\n  trafficPolicy: {tls: {mode: SIMPLE, subjectAltNames: [\"spiffe://x/ns/a/sa/b\"]}}\n",
        );
        let notes = not_enforced(&uri);
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(
            notes[0].1.contains("URI names are not supported"),
            "{notes:?}"
        );
    }

    #[test]
    fn telemetry_is_enforced_but_what_it_cannot_do() {
        let t = object(
            "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: t, namespace: shop}\nspec:\n  tracing: [{providers: [{name: otel}], randomSamplingPercentage: 5}]\n  accessLogging: [{providers: [{name: envoy}], filter: {expression: \"response.code >= 400\"}}]\n  metrics: [{overrides: [{match: {metric: REQUEST_COUNT}, tagOverrides: {request_host: {value: request.host}}}]}]\n",
        );
        assert!(not_enforced(&t).is_empty(), "{:?}", not_enforced(&t));
        let t = object(
            "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: t, namespace: shop}\nspec:\n  metrics:\n  - reportingInterval: 5s\n    providers: [{name: stackdriver}]\n    overrides: [{match: {customMetric: my_metric}, disabled: true}]\n  accessLogging: [{providers: [{name: otel-als}]}]\n  tracing: [{useRequestIdForTraceSampling: true}]\n",
        );
        let fields: Vec<String> = not_enforced(&t).into_iter().map(|n| n.0).collect();
        assert_eq!(
            fields,
            [
                "spec.metrics[0].reportingInterval",
                "spec.metrics[0].overrides[0].match.customMetric",
                "spec.metrics[0].providers[0].name",
                "spec.tracing[0].useRequestIdForTraceSampling",
                "spec.accessLogging[0].providers[0].name",
            ]
        );
    }
}
