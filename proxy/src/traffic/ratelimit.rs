//! Local rate limiting (`policy.mesh.io/v1alpha1` LocalRateLimit), applied
//! by the receiving workload's proxy as Envoy's local rate limit filter
//! does: a token bucket holds at most `maxTokens`, gains `tokensPerFill`
//! each `fillInterval`, and a request takes one token or is refused
//! (429 by default, flag `RL`). A request that matches one of the
//! policy's `routes` (by the client's VirtualService route name, or uri
//! and method) uses that route's bucket instead of the workload's.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use api::proto;
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
    pub fn new(b: &proto::TokenBucket, at: &str, now: Instant) -> Result<Self, String> {
        if b.max_tokens == 0 {
            return Err(format!("{at}.maxTokens: at least 1"));
        }
        let interval = b
            .fill_interval
            .as_ref()
            .map(api::routing::from_wire)
            .ok_or_else(|| format!("{at}.fillInterval: required"))?
            .max(api::policy::MIN_FILL_INTERVAL);
        Ok(Self {
            max: b.max_tokens,
            per_fill: b.tokens_per_fill.max(1),
            interval,
            state: Mutex::new((b.max_tokens, now)),
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
    /// Compiles `rl` with full buckets.
    pub fn new(rl: &proto::RateLimit, now: Instant) -> Result<Self, String> {
        let routes = rl
            .routes
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let at = format!("spec.routes[{i}]");
                Ok(RouteLimit {
                    name: Some(r.route.clone()).filter(|n| !n.is_empty()),
                    uri: StrMatch::compile_opt(r.uri.as_ref(), &format!("{at}.match.uri"))?,
                    method: StrMatch::compile_opt(
                        r.method.as_ref(),
                        &format!("{at}.match.method"),
                    )?,
                    bucket: Bucket::new(
                        r.bucket
                            .as_ref()
                            .ok_or_else(|| format!("{at}.tokenBucket: required"))?,
                        &format!("{at}.tokenBucket"),
                        now,
                    )?,
                })
            })
            .collect::<Result<_, String>>()?;
        Ok(Self {
            policy: rl.name.clone(),
            status: u16::try_from(rl.status)
                .ok()
                .and_then(|c| StatusCode::from_u16(c).ok())
                .unwrap_or(StatusCode::TOO_MANY_REQUESTS),
            workload: rl
                .bucket
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
        policy: Option<&proto::WorkloadPolicy>,
    ) -> std::sync::Arc<(String, Vec<Limiter>)> {
        let cur = self.current.load_full();
        if cur.0 == version {
            return cur;
        }
        let now = Instant::now();
        let limiters = policy
            .into_iter()
            .flat_map(|p| &p.rate_limits)
            .filter_map(|rl| match Limiter::new(rl, now) {
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

    /// A LocalRateLimit through the controller's translation.
    fn spec(yaml: &str) -> proto::RateLimit {
        let p = api::traffic::WorkloadPolicy {
            rate_limits: vec![api::traffic::RateLimit {
                name: "shop/limit".into(),
                spec: serde_yaml_ng::from_str(yaml).unwrap(),
            }],
            outbound_traffic_policy: None,
        };
        api::routing::workload_policy(&p)
            .unwrap()
            .rate_limits
            .remove(0)
    }

    #[test]
    fn a_bucket_refills_by_whole_intervals_up_to_its_size() {
        let t = Instant::now();
        let b = Bucket::new(
            spec("{tokenBucket: {maxTokens: 3, tokensPerFill: 2, fillInterval: 1s}}")
                .bucket
                .as_ref()
                .unwrap(),
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
        let mut empty = spec("{tokenBucket: {maxTokens: 1, fillInterval: 1s}}");
        empty.bucket.as_mut().unwrap().max_tokens = 0;
        let err = Limiter::new(&empty, t).unwrap_err();
        assert!(err.starts_with("spec.tokenBucket.maxTokens"), "{err}");
    }
}
