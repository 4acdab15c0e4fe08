//! A workload's own policy: its LocalRateLimits and the outbound traffic
//! mode of the Sidecar that applies to it.

use super::{Error, duration, string_match};
use crate::policy::TokenBucket;
use crate::proto;
use crate::traffic::WorkloadPolicy;

fn bucket(b: &TokenBucket, at: &str) -> Result<proto::TokenBucket, Error> {
    Ok(proto::TokenBucket {
        max_tokens: b.max_tokens.unwrap_or(0),
        tokens_per_fill: b.tokens_per_fill.unwrap_or(1),
        fill_interval: Some(
            duration(b.fill_interval.as_ref(), &format!("{at}.fillInterval"))?
                .ok_or_else(|| format!("{at}.fillInterval: required"))?,
        ),
    })
}

pub(super) fn policy(p: &WorkloadPolicy) -> Result<proto::WorkloadPolicy, Error> {
    let rate_limits = p
        .rate_limits
        .iter()
        .map(|rl| {
            let at = |f: &str| format!("{}: spec.{f}", rl.name);
            Ok(proto::RateLimit {
                name: rl.name.clone(),
                bucket: rl
                    .spec
                    .token_bucket
                    .as_ref()
                    .map(|b| bucket(b, &at("tokenBucket")))
                    .transpose()?,
                status: rl.spec.status_code.unwrap_or(429),
                routes: rl
                    .spec
                    .routes
                    .iter()
                    .flatten()
                    .enumerate()
                    .map(|(i, r)| {
                        let m = r.r#match.clone().unwrap_or_default();
                        Ok(proto::RouteRateLimit {
                            route: m.name.unwrap_or_default(),
                            uri: m.uri.as_ref().map(string_match),
                            method: m.method.as_ref().map(string_match),
                            bucket: Some(bucket(
                                r.token_bucket.as_ref().ok_or_else(|| {
                                    at(&format!("routes[{i}].tokenBucket: required"))
                                })?,
                                &at(&format!("routes[{i}].tokenBucket")),
                            )?),
                        })
                    })
                    .collect::<Result<_, Error>>()?,
            })
        })
        .collect::<Result<_, Error>>()?;
    let outbound = match p.outbound_traffic_policy.as_deref() {
        Some("REGISTRY_ONLY") => proto::OutboundMode::RegistryOnly,
        _ => proto::OutboundMode::AllowAny,
    };
    Ok(proto::WorkloadPolicy {
        rate_limits,
        outbound: outbound as i32,
        app_exited: false,
        ..proto::WorkloadPolicy::default()
    })
}
