//! Checks of `VirtualService`: hosts, HTTP, TCP and TLS routes (matches,
//! destinations and weights, rewrites, redirects, retries, faults,
//! mirrors, CORS, headers).

use super::Problem;
use super::{Check, did_you_mean};
use crate::istio::virtual_service::{HttpRoute, RouteDestination, VirtualServiceSpec};
use crate::routing::RETRY_ON;

/// Checks a VirtualService spec.
pub fn virtual_service(spec: &VirtualServiceSpec) -> Vec<Problem> {
    let mut c = Check::default();
    let delegate_only = spec.hosts.as_ref().is_none_or(Vec::is_empty);
    if delegate_only && spec.http.as_ref().is_none_or(Vec::is_empty) {
        c.fail("spec.hosts", "at least one host is required");
    }
    for (i, h) in spec.hosts.iter().flatten().enumerate() {
        if h.is_empty() {
            c.fail(format!("spec.hosts[{i}]"), "empty host");
        }
    }
    if [
        &spec.http.as_ref().map(Vec::len),
        &spec.tcp.as_ref().map(Vec::len),
        &spec.tls.as_ref().map(Vec::len),
    ]
    .iter()
    .all(|n| n.unwrap_or(0) == 0)
    {
        c.fail(
            "spec",
            "at least one of http, tcp or tls routes is required",
        );
    }
    for (i, r) in spec.http.iter().flatten().enumerate() {
        http_route(&mut c, &format!("spec.http[{i}]"), r);
    }
    c.export_to("spec.exportTo", spec.export_to.as_ref());
    for (kind, routes) in [
        (
            "tcp",
            spec.tcp
                .iter()
                .flatten()
                .map(|r| r.route.as_deref().unwrap_or_default())
                .collect::<Vec<_>>(),
        ),
        (
            "tls",
            spec.tls
                .iter()
                .flatten()
                .map(|r| r.route.as_deref().unwrap_or_default())
                .collect(),
        ),
    ] {
        for (i, route) in routes.iter().enumerate() {
            l4_routes(&mut c, &format!("spec.{kind}[{i}]"), route);
        }
    }
    for (i, t) in spec.tls.iter().flatten().enumerate() {
        for (j, m) in t.r#match.iter().flatten().enumerate() {
            if m.sni_hosts.as_ref().is_none_or(Vec::is_empty) {
                c.fail(
                    format!("spec.tls[{i}].match[{j}].sniHosts"),
                    "required: the SNI names this route takes",
                );
            }
            c.port(&format!("spec.tls[{i}].match[{j}].port"), m.port);
        }
    }
    for (i, t) in spec.tcp.iter().flatten().enumerate() {
        for (j, m) in t.r#match.iter().flatten().enumerate() {
            c.port(&format!("spec.tcp[{i}].match[{j}].port"), m.port);
        }
    }
    c.0
}

fn l4_routes(c: &mut Check, at: &str, route: &[RouteDestination]) {
    if route.is_empty() {
        c.fail(
            format!("{at}.route"),
            "at least one destination is required",
        );
    }
    let mut weights = Vec::new();
    for (j, d) in route.iter().enumerate() {
        let f = format!("{at}.route[{j}]");
        c.destination(&format!("{f}.destination"), d.destination.as_ref());
        weights.push((d.weight, f));
    }
    c.weights(&format!("{at}.route"), &weights);
}

fn http_route(c: &mut Check, at: &str, r: &HttpRoute) {
    let has_route = r.route.as_ref().is_some_and(|v| !v.is_empty());
    let actions = [
        has_route,
        r.redirect.is_some(),
        r.direct_response.is_some(),
        r.delegate.is_some(),
    ];
    match actions.iter().filter(|a| **a).count() {
        0 => c.fail(
            at,
            "needs one of route, redirect, directResponse or delegate",
        ),
        1 => {}
        _ => c.fail(
            at,
            "set only one of route, redirect, directResponse and delegate",
        ),
    }
    for (j, m) in r.r#match.iter().flatten().enumerate() {
        let f = format!("{at}.match[{j}]");
        for (name, sm) in [
            ("uri", &m.uri),
            ("scheme", &m.scheme),
            ("method", &m.method),
            ("authority", &m.authority),
        ] {
            if let Some(sm) = sm {
                c.string_match(&format!("{f}.{name}"), sm, false);
            }
        }
        for (name, map) in [
            ("headers", &m.headers),
            ("queryParams", &m.query_params),
            ("withoutHeaders", &m.without_headers),
        ] {
            for (k, sm) in map.iter().flatten() {
                c.string_match(&format!("{f}.{name}.{k}"), sm, true);
            }
        }
        c.port(&format!("{f}.port"), m.port);
    }
    let mut weights = Vec::new();
    for (j, d) in r.route.iter().flatten().enumerate() {
        let f = format!("{at}.route[{j}]");
        c.destination(&format!("{f}.destination"), d.destination.as_ref());
        weights.push((d.weight, f));
    }
    c.weights(&format!("{at}.route"), &weights);
    if let Some(d) = &r.direct_response {
        match d.status {
            Some(s) if (200..=599).contains(&s) => {}
            Some(s) => c.fail(
                format!("{at}.directResponse.status"),
                format!("{s} is not an HTTP status (200-599)"),
            ),
            None => c.fail(format!("{at}.directResponse.status"), "required"),
        }
    }
    if let Some(rw) = &r.rewrite {
        if rw.uri.is_some() && rw.uri_regex_rewrite.is_some() {
            c.fail(
                format!("{at}.rewrite"),
                "set only one of uri and uriRegexRewrite",
            );
        }
        if let Some(re) = rw
            .uri_regex_rewrite
            .as_ref()
            .and_then(|x| x.r#match.as_ref())
        {
            c.regex(&format!("{at}.rewrite.uriRegexRewrite.match"), re);
        }
    }
    c.duration(&format!("{at}.timeout"), r.timeout.as_ref());
    if let Some(rt) = &r.retries {
        if rt.attempts.is_some_and(|a| a < 0) {
            c.fail(format!("{at}.retries.attempts"), "must be 0 or more");
        }
        c.duration(
            &format!("{at}.retries.perTryTimeout"),
            rt.per_try_timeout.as_ref(),
        );
        if let Some(on) = &rt.retry_on
            && let Err(e) = crate::routing::retry_on(on)
        {
            let cond = e
                .trim_start_matches("unknown retry condition ")
                .trim_matches('"');
            let hint = did_you_mean(cond, RETRY_ON)
                .map(|h| format!(" (did you mean {h:?}?)"))
                .unwrap_or_default();
            c.fail(
                format!("{at}.retries.retryOn"),
                format!(
                    "{e}{hint}; use a status code or one of {}",
                    RETRY_ON.join(", ")
                ),
            );
        }
    }
    if let Some(f) = &r.fault {
        if let Some(d) = &f.delay {
            c.duration(
                &format!("{at}.fault.delay.fixedDelay"),
                d.fixed_delay.as_ref(),
            );
            c.percent(
                &format!("{at}.fault.delay.percentage"),
                d.percentage.as_ref(),
            );
            if d.fixed_delay.is_none() && d.exponential_delay.is_none() {
                c.fail(
                    format!("{at}.fault.delay.fixedDelay"),
                    "required: how long to delay",
                );
            }
        }
        if let Some(a) = &f.abort {
            c.percent(
                &format!("{at}.fault.abort.percentage"),
                a.percentage.as_ref(),
            );
            match (a.http_status, &a.grpc_status) {
                (Some(s), None) if !(200..=599).contains(&s) => {
                    c.fail(
                        format!("{at}.fault.abort.httpStatus"),
                        format!("{s} is not an HTTP status (200-599)"),
                    );
                }
                (Some(_), Some(_)) => c.fail(
                    format!("{at}.fault.abort"),
                    "set only one of httpStatus and grpcStatus",
                ),
                (None, None) if a.http2_error.is_none() => {
                    c.fail(
                        format!("{at}.fault.abort"),
                        "needs httpStatus or grpcStatus",
                    );
                }
                _ => {}
            }
        }
    }
    if r.mirror.is_some() {
        c.destination(&format!("{at}.mirror"), r.mirror.as_ref());
        if r.mirrors.as_ref().is_some_and(|m| !m.is_empty()) {
            c.fail(
                format!("{at}.mirrors"),
                "set only one of mirror and mirrors",
            );
        }
    }
    c.percent(
        &format!("{at}.mirrorPercentage"),
        r.mirror_percentage.as_ref(),
    );
    for (j, m) in r.mirrors.iter().flatten().enumerate() {
        c.destination(
            &format!("{at}.mirrors[{j}].destination"),
            m.destination.as_ref(),
        );
        c.percent(
            &format!("{at}.mirrors[{j}].percentage"),
            m.percentage.as_ref(),
        );
    }
    if let Some(cors) = &r.cors_policy {
        c.duration(&format!("{at}.corsPolicy.maxAge"), cors.max_age.as_ref());
        for (j, o) in cors.allow_origins.iter().flatten().enumerate() {
            c.string_match(&format!("{at}.corsPolicy.allowOrigins[{j}]"), o, false);
        }
    }
}
