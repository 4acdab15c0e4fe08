//! Local rate limiting (`policy.mesh.io/v1alpha1` LocalRateLimit), applied
//! by the receiving workload's proxy as Envoy's local rate limit filter
//! does: a token bucket holds at most `maxTokens`, gains `tokensPerFill`
//! each `fillInterval`, and a request takes one token or is refused
//! (429 by default, flag `RL`). A request that matches one of the
//! policy's `routes` (by the client's VirtualService route name, or uri
//! and method) uses that route's bucket instead of the workload's.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use api::policy::{LocalRateLimitSpec, TokenBucket};
use hyper::{Request, StatusCode};

use super::matching::StrMatch;

/// One token bucket.
#[derive(Debug)]
pub struct Bucket {
    max: u32,
    per_fill: u32,
    interval: Duration,
    state: Mutex<(u32, Instant)>,
}

impl Bucket {
    /// A full bucket from `b`; `at` names it in errors.
    pub fn new(b: &TokenBucket, at: &str, now: Instant) -> Result<Self, String> {
        let max = b
            .max_tokens
            .ok_or_else(|| format!("{at}.maxTokens: required"))?;
        let interval = b
            .fill_interval
            .as_deref()
            .ok_or_else(|| format!("{at}.fillInterval: required"))
            .and_then(|s| api::duration::parse(s).map_err(|e| format!("{at}.fillInterval: {e}")))?
            .max(api::policy::MIN_FILL_INTERVAL);
        Ok(Self {
            max,
            per_fill: b.tokens_per_fill.unwrap_or(1),
            interval,
            state: Mutex::new((max, now)),
        })
    }

    /// Takes a token if there is one at `now`.
    pub fn take(&self, now: Instant) -> bool {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let (tokens, last) = &mut *s;
        let fills =
            now.saturating_duration_since(*last).as_nanos() / self.interval.as_nanos().max(1);
        if fills > 0 {
            let added = u64::try_from(fills)
                .unwrap_or(u64::MAX)
                .saturating_mul(u64::from(self.per_fill));
            *tokens = u32::try_from((u64::from(*tokens) + added).min(u64::from(self.max)))
                .unwrap_or(self.max);
            *last += self.interval * u32::try_from(fills).unwrap_or(u32::MAX);
        }
        if *tokens == 0 {
            return false;
        }
        *tokens -= 1;
        true
    }
}

#[derive(Debug)]
struct RouteLimit {
    name: Option<String>,
    uri: Option<StrMatch>,
    method: Option<StrMatch>,
    bucket: Bucket,
}

/// One compiled policy with its buckets.
#[derive(Debug)]
pub struct Limiter {
    /// `namespace/name`, for logs.
    pub policy: String,
    status: StatusCode,
    workload: Option<Bucket>,
    routes: Vec<RouteLimit>,
}

impl Limiter {
    /// Compiles `spec` with full buckets.
    pub fn new(policy: &str, spec: &LocalRateLimitSpec, now: Instant) -> Result<Self, String> {
        let routes = spec
            .routes
            .iter()
            .flatten()
            .enumerate()
            .map(|(i, r)| {
                let at = format!("spec.routes[{i}]");
                let m = r.r#match.clone().unwrap_or_default();
                let one = |s: &Option<api::istio::shared::StringMatch>, f: &str| {
                    s.as_ref()
                        .map(|s| StrMatch::compile(s, &format!("{at}.match.{f}")))
                        .transpose()
                };
                Ok(RouteLimit {
                    name: m.name.clone(),
                    uri: one(&m.uri, "uri")?,
                    method: one(&m.method, "method")?,
                    bucket: Bucket::new(
                        r.token_bucket
                            .as_ref()
                            .ok_or_else(|| format!("{at}.tokenBucket: required"))?,
                        &format!("{at}.tokenBucket"),
                        now,
                    )?,
                })
            })
            .collect::<Result<_, String>>()?;
        Ok(Self {
            policy: policy.to_string(),
            status: spec
                .status_code
                .and_then(|c| u16::try_from(c).ok())
                .and_then(|c| StatusCode::from_u16(c).ok())
                .unwrap_or(StatusCode::TOO_MANY_REQUESTS),
            workload: spec
                .token_bucket
                .as_ref()
                .map(|b| Bucket::new(b, "spec.tokenBucket", now))
                .transpose()?,
            routes,
        })
    }

    /// `Err(status)` when `req` (of client route `route`) is over the limit.
    pub fn check<B>(
        &self,
        req: &Request<B>,
        route: Option<&str>,
        now: Instant,
    ) -> Result<(), StatusCode> {
        let matched = self.routes.iter().find(|r| {
            (r.name.is_none() || r.name.as_deref() == route)
                && r.uri
                    .as_ref()
                    .is_none_or(|u| u.matches(req.uri().path(), false))
                && r.method
                    .as_ref()
                    .is_none_or(|m| m.matches(req.method().as_str(), false))
        });
        let bucket = match matched {
            Some(r) => Some(&r.bucket),
            None => self.workload.as_ref(),
        };
        match bucket {
            Some(b) if !b.take(now) => Err(self.status),
            _ => Ok(()),
        }
    }
}

/// The limiters of this workload's current policy, rebuilt (buckets
/// full) only when the policy's resource version changes.
#[derive(Default)]
pub struct Policies {
    current: arc_swap::ArcSwap<(String, Vec<Limiter>)>,
}

impl Policies {
    /// The limiters for `policy` at resource `version`.
    pub fn get(
        &self,
        version: &str,
        policy: Option<&api::traffic::WorkloadPolicy>,
    ) -> std::sync::Arc<(String, Vec<Limiter>)> {
        let cur = self.current.load_full();
        if cur.0 == version {
            return cur;
        }
        let now = Instant::now();
        let limiters = policy
            .into_iter()
            .flat_map(|p| &p.rate_limits)
            .filter_map(|rl| match Limiter::new(&rl.name, &rl.spec, now) {
                Ok(l) => Some(l),
                Err(e) => {
                    tracing::warn!(policy = %rl.name, error = %e, "rate limit not applied");
                    None
                }
            })
            .collect();
        let next = std::sync::Arc::new((version.to_string(), limiters));
        self.current.store(next.clone());
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> LocalRateLimitSpec {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    #[test]
    fn a_bucket_refills_by_whole_intervals_up_to_its_size() {
        let t = Instant::now();
        let b = Bucket::new(
            &serde_yaml_ng::from_str("{maxTokens: 3, tokensPerFill: 2, fillInterval: 1s}").unwrap(),
            "b",
            t,
        )
        .unwrap();
        assert_eq!((0..5).filter(|_| b.take(t)).count(), 3);
        assert!(!b.take(t + Duration::from_millis(999)));
        let t1 = t + Duration::from_secs(1);
        assert_eq!((0..5).filter(|_| b.take(t1)).count(), 2);
        // A long pause fills to the brim, not beyond.
        let t2 = t1 + Duration::from_secs(60);
        assert_eq!((0..10).filter(|_| b.take(t2)).count(), 3);
    }

    #[test]
    fn routes_have_their_own_buckets_and_others_share_the_workloads() {
        let t = Instant::now();
        let l = Limiter::new(
            "shop/limit",
            &spec(
                "{tokenBucket: {maxTokens: 2, fillInterval: 1m}, statusCode: 503, routes: [{match: {name: checkout}, tokenBucket: {maxTokens: 1, fillInterval: 1m}}, {match: {uri: {prefix: /search}, method: {exact: GET}}, tokenBucket: {maxTokens: 5, fillInterval: 1m}}]}",
            ),
            t,
        )
        .unwrap();
        let get = |path: &str| Request::builder().uri(path).body(()).unwrap();
        assert!(l.check(&get("/pay"), Some("checkout"), t).is_ok());
        assert_eq!(
            l.check(&get("/pay"), Some("checkout"), t),
            Err(StatusCode::SERVICE_UNAVAILABLE)
        );
        assert_eq!(
            (0..9)
                .filter(|_| l.check(&get("/search?q"), None, t).is_ok())
                .count(),
            5
        );
        assert_eq!(
            (0..9)
                .filter(|_| l.check(&get("/other"), None, t).is_ok())
                .count(),
            2
        );
        let err = Limiter::new(
            "x",
            &spec("{tokenBucket: {maxTokens: 1, fillInterval: soon}}"),
            t,
        )
        .unwrap_err();
        assert!(err.starts_with("spec.tokenBucket.fillInterval"), "{err}");
    }
}
