//! Retries with Envoy's meaning: which outcomes `retryOn` retries, the
//! jittered exponential backoff (25 ms base, 250 ms cap), and the budget
//! that caps concurrent retries to a share of active requests (Istio's
//! `retryBudget`, Envoy's retry budget; Linkerd's is the same idea).

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use api::proto;

/// What one attempt came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A response (with the `grpc-status` of a trailers-only response).
    Response {
        /// HTTP status.
        status: u16,
        /// gRPC status from the response headers.
        grpc: Option<u32>,
    },
    /// No connection could be made.
    ConnectFailure,
    /// The stream or connection broke before a response.
    Reset,
    /// HTTP/2 REFUSED_STREAM: the peer did not process the request.
    RefusedStream,
    /// The per-try timeout fired.
    Timeout,
}

/// Conditions, as `retryOn` lists them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetryOn {
    five_xx: bool,
    gateway_error: bool,
    reset: bool,
    connect_failure: bool,
    retriable_4xx: bool,
    refused_stream: bool,
    /// `retriable-status-codes` with the codes listed alongside.
    status_codes: Option<Vec<u16>>,
    /// gRPC statuses: cancelled 1, deadline-exceeded 4,
    /// resource-exhausted 8, internal 13, unavailable 14.
    grpc: Vec<u32>,
}

impl RetryOn {
    /// From the wire (parsed from Istio's `retryOn` by the controller).
    pub fn compile(on: &proto::RetryOn) -> Self {
        use proto::RetryCondition as C;
        let has = |c: C| on.conditions.contains(&(c as i32));
        Self {
            five_xx: has(C::FiveXx),
            gateway_error: has(C::GatewayError),
            reset: has(C::Reset),
            connect_failure: has(C::ConnectFailure),
            retriable_4xx: has(C::Retriable4xx),
            refused_stream: has(C::RefusedStream),
            status_codes: (!on.status_codes.is_empty()).then(|| {
                on.status_codes
                    .iter()
                    .filter_map(|c| u16::try_from(*c).ok())
                    .collect()
            }),
            grpc: on.grpc_statuses.clone(),
        }
    }

    /// Parses Istio's comma list, as the controller does.
    #[cfg(test)]
    pub fn parse(s: &str) -> Result<Self, String> {
        api::routing::retry_on(s).map(|on| Self::compile(&on))
    }

    /// Whether `o` is retried.
    pub fn retriable(&self, o: Outcome) -> bool {
        let any_5xx = self.five_xx || self.gateway_error || self.reset;
        match o {
            Outcome::ConnectFailure => any_5xx || self.connect_failure,
            Outcome::RefusedStream => any_5xx || self.refused_stream,
            Outcome::Reset | Outcome::Timeout => any_5xx,
            Outcome::Response { status, grpc } => {
                (self.five_xx && (500..600).contains(&status))
                    || (self.gateway_error && matches!(status, 502..=504))
                    || (self.retriable_4xx && status == 409)
                    || self
                        .status_codes
                        .as_ref()
                        .is_some_and(|c| c.contains(&status))
                    || grpc.is_some_and(|g| self.grpc.contains(&g))
            }
        }
    }
}

/// A route's retry policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first try.
    pub retries: u32,
    /// Bound on each try.
    pub per_try_timeout: Option<Duration>,
    /// Conditions.
    pub on: RetryOn,
}

impl Default for RetryPolicy {
    /// Istio's default for a route without `retries` (the controller
    /// always sends it; this is for a route that arrives without).
    fn default() -> Self {
        Self::compile(&api::routing::default_retry())
    }
}

impl RetryPolicy {
    /// From the wire.
    pub fn compile(r: &proto::Retry) -> Self {
        Self {
            retries: r.attempts,
            per_try_timeout: r
                .per_try_timeout
                .as_ref()
                .map(api::routing::from_wire)
                .filter(|d| !d.is_zero()),
            on: r.on.as_ref().map(RetryOn::compile).unwrap_or_default(),
        }
    }
}

/// Backoff base and cap (Envoy's defaults).
pub const BACKOFF_BASE: Duration = Duration::from_millis(25);
/// The cap: ten times the base.
pub const BACKOFF_MAX: Duration = Duration::from_millis(250);

/// The wait before retry `n` (1-based): uniform in
/// `[0, min(base * 2^(n-1), max))`, Envoy's fully jittered backoff.
pub fn backoff(n: u32, rng: &mut fastrand::Rng) -> Duration {
    let ceiling = BACKOFF_BASE
        .saturating_mul(1u32 << n.saturating_sub(1).min(16))
        .min(BACKOFF_MAX);
    let ms = u64::try_from(ceiling.as_millis()).unwrap_or(250).max(1);
    Duration::from_millis(rng.u64(0..ms))
}

/// What to do after a try.
#[derive(Debug)]
pub enum Next<'a> {
    /// Try again after this wait, holding the budget's slot.
    Retry(Duration, Active<'a>),
    /// Answer with this try's result; `exhausted` when a retriable result
    /// ran out of tries or budget (Envoy's `URX`).
    Stop {
        /// Retries (or the budget) ran out.
        exhausted: bool,
    },
}

/// The retry state of one request: tries made, and the decision after
/// each, by policy, replayability and budget.
#[derive(Debug)]
pub struct RetryState<'a> {
    policy: &'a RetryPolicy,
    budget: &'a Budget,
    tries: u32,
    rng: fastrand::Rng,
}

impl<'a> RetryState<'a> {
    /// Before the first try.
    pub fn new(policy: &'a RetryPolicy, budget: &'a Budget) -> Self {
        Self {
            policy,
            budget,
            tries: 0,
            rng: fastrand::Rng::new(),
        }
    }

    /// Counts a try about to be made; returns its number (1-based).
    pub fn begin(&mut self) -> u32 {
        self.tries += 1;
        self.tries
    }

    /// The decision after a try that came to `outcome`; `replayable`:
    /// the request can be sent again.
    pub fn after(&mut self, outcome: Outcome, replayable: bool) -> Next<'a> {
        let retriable = self.policy.on.retriable(outcome);
        if retriable && replayable && self.tries <= self.policy.retries {
            if let Some(slot) = self.budget.try_retry() {
                return Next::Retry(backoff(self.tries, &mut self.rng), slot);
            }
            return Next::Stop { exhausted: true };
        }
        Next::Stop {
            exhausted: retriable && self.tries > 1,
        }
    }
}

/// Caps retries in flight at `percent` of the requests in flight, never
/// below `min_concurrency` (Envoy's retry budget; defaults 20% and 3).
#[derive(Debug)]
pub struct Budget {
    percent: f64,
    min_concurrency: u32,
    active: AtomicU32,
    retrying: AtomicU32,
}

impl Budget {
    /// A budget from a DestinationRule's `retryBudget` (Envoy's defaults
    /// if absent).
    pub fn new(b: Option<&proto::RetryBudget>) -> Self {
        Self {
            percent: b.map_or(20.0, |b| b.percent).clamp(0.0, 100.0),
            min_concurrency: b.map_or(3, |b| b.min_retry_concurrency),
            active: AtomicU32::new(0),
            retrying: AtomicU32::new(0),
        }
    }

    /// Whether `other` has the same percent and minimum.
    pub fn same_bounds(&self, other: &Budget) -> bool {
        self.percent == other.percent && self.min_concurrency == other.min_concurrency
    }

    /// Counts a request in flight until the guard drops.
    pub fn request(&self) -> Active<'_> {
        self.active.fetch_add(1, Ordering::Relaxed);
        Active(&self.active)
    }

    /// A retry if the budget allows one now; it is held until the guard
    /// drops.
    pub fn try_retry(&self) -> Option<Active<'_>> {
        let active = f64::from(self.active.load(Ordering::Relaxed));
        // Truncation is the point: whole retries only.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let cap = ((active * self.percent / 100.0) as u32).max(self.min_concurrency);
        self.retrying
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < cap).then_some(n + 1)
            })
            .ok()
            .map(|_| Active(&self.retrying))
    }

    /// Retries in flight now.
    #[cfg(test)]
    pub fn retrying(&self) -> u32 {
        self.retrying.load(Ordering::Relaxed)
    }
}

/// Decrements its counter when dropped.
#[derive(Debug)]
pub struct Active<'a>(&'a AtomicU32);

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(status: u16) -> Outcome {
        Outcome::Response { status, grpc: None }
    }

    #[test]
    fn conditions_have_envoys_meaning() {
        let on = RetryOn::parse("5xx").unwrap();
        assert!(on.retriable(resp(500)) && on.retriable(resp(503)));
        assert!(on.retriable(Outcome::Reset) && on.retriable(Outcome::ConnectFailure));
        assert!(on.retriable(Outcome::Timeout) && on.retriable(Outcome::RefusedStream));
        assert!(!on.retriable(resp(409)) && !on.retriable(resp(200)));

        let on = RetryOn::parse("gateway-error").unwrap();
        assert!(on.retriable(resp(502)) && on.retriable(resp(504)));
        assert!(!on.retriable(resp(500)));

        let on = RetryOn::parse("connect-failure,retriable-4xx").unwrap();
        assert!(on.retriable(Outcome::ConnectFailure) && on.retriable(resp(409)));
        assert!(!on.retriable(Outcome::Reset) && !on.retriable(resp(503)));
        assert!(!on.retriable(resp(404)));

        let on = RetryOn::parse("refused-stream").unwrap();
        assert!(on.retriable(Outcome::RefusedStream) && !on.retriable(Outcome::Reset));

        let on = RetryOn::parse("retriable-status-codes,429, 418").unwrap();
        assert!(on.retriable(resp(429)) && on.retriable(resp(418)) && !on.retriable(resp(503)));
        let on = RetryOn::parse("503").unwrap();
        assert!(on.retriable(resp(503)));

        let on = RetryOn::parse("unavailable,resource-exhausted").unwrap();
        let grpc = |g| Outcome::Response {
            status: 200,
            grpc: Some(g),
        };
        assert!(on.retriable(grpc(14)) && on.retriable(grpc(8)));
        assert!(!on.retriable(grpc(13)) && !on.retriable(grpc(0)));

        assert!(RetryOn::parse("5xx,sometimes").is_err());
    }

    /// The retries of the seed VirtualService, through the controller's
    /// translation.
    fn seeded() -> RetryPolicy {
        let vs: api::istio::virtual_service::HttpRoute = serde_yaml_ng::from_str(
            "{retries: {attempts: 3, perTryTimeout: 2s, retryOn: '5xx,connect-failure,retriable-4xx'}}",
        )
        .unwrap();
        let t = api::traffic::ServiceTraffic {
            http: vec![vs],
            ..Default::default()
        };
        let wire = api::routing::routing(&t, "h").unwrap();
        RetryPolicy::compile(wire.http[0].retry.as_ref().unwrap())
    }

    #[test]
    fn istio_default_retries_503_and_connect_failures_twice() {
        let p = RetryPolicy::default();
        assert_eq!(p.retries, 2);
        assert!(p.on.retriable(resp(503)) && p.on.retriable(Outcome::ConnectFailure));
        assert!(!p.on.retriable(resp(500)) && !p.on.retriable(Outcome::Reset));
        let p = seeded();
        assert_eq!(p.retries, 3);
        assert_eq!(p.per_try_timeout, Some(Duration::from_secs(2)));
        assert!(p.on.retriable(resp(409)));
    }

    #[test]
    fn backoff_is_jittered_under_a_growing_capped_ceiling() {
        let mut rng = fastrand::Rng::with_seed(7);
        for n in 1..10 {
            let ceiling = (25u64 << (n - 1)).min(250);
            let waits: Vec<u64> = (0..200)
                .map(|_| u64::try_from(backoff(n, &mut rng).as_millis()).unwrap())
                .collect();
            assert!(waits.iter().all(|w| *w < ceiling), "retry {n}: {waits:?}");
            // Jittered: not all the same, and some in the upper half.
            assert!(waits.iter().any(|w| *w >= ceiling / 2));
            assert!(waits.iter().any(|w| *w != waits[0]));
        }
    }

    /// Drives the state machine as the data path does: each try bounded
    /// by the per-try timeout, waits between tries; `results` are the
    /// tries' outcomes (`None`: the try hangs).
    async fn drive(
        policy: &RetryPolicy,
        budget: &Budget,
        results: &[Option<Outcome>],
    ) -> (u32, bool, Outcome) {
        let mut state = RetryState::new(policy, budget);
        let mut _slot = None;
        loop {
            let n = state.begin();
            let result = results[usize::try_from(n).unwrap() - 1];
            let attempt = async move {
                match result {
                    Some(o) => o,
                    None => std::future::pending().await,
                }
            };
            let outcome = match policy.per_try_timeout {
                Some(t) => tokio::time::timeout(t, attempt)
                    .await
                    .unwrap_or(Outcome::Timeout),
                None => attempt.await,
            };
            match state.after(outcome, true) {
                Next::Retry(wait, slot) => {
                    _slot = Some(slot);
                    tokio::time::sleep(wait).await;
                }
                Next::Stop { exhausted } => return (n, exhausted, outcome),
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_seed_policy_retries_three_times_within_its_timeouts() {
        let policy = seeded();
        let budget = Budget::new(None);
        // Every try hangs: four tries of 2 s, with backoff between them.
        let start = tokio::time::Instant::now();
        let (tries, exhausted, last) = drive(&policy, &budget, &[None; 4]).await;
        let took = start.elapsed();
        assert_eq!((tries, exhausted, last), (4, true, Outcome::Timeout));
        assert!(took >= Duration::from_secs(8), "{took:?}");
        // Backoff: under 25 + 50 + 100 ms in all.
        assert!(took < Duration::from_millis(8175), "{took:?}");

        // A 503 then a 200: two tries, no exhaustion.
        let (tries, exhausted, last) =
            drive(&policy, &budget, &[Some(resp(503)), Some(resp(200))]).await;
        assert_eq!((tries, exhausted, last), (2, false, resp(200)));

        // A 404 is not retried at all.
        let (tries, exhausted, _) = drive(&policy, &budget, &[Some(resp(404))]).await;
        assert_eq!((tries, exhausted), (1, false));

        // Nothing replayable: no retry whatever the outcome.
        let mut state = RetryState::new(&policy, &budget);
        state.begin();
        assert!(matches!(
            state.after(resp(503), false),
            Next::Stop { exhausted: false }
        ));
        assert_eq!(budget.retrying(), 0, "slots are given back");
    }

    #[tokio::test(start_paused = true)]
    async fn an_empty_budget_stops_retries_at_once() {
        let policy = RetryPolicy::default();
        let budget = Budget::new(Some(&proto::RetryBudget {
            percent: 0.0,
            min_retry_concurrency: 0,
        }));
        let (tries, exhausted, _) = drive(&policy, &budget, &[Some(resp(503)); 3]).await;
        assert_eq!((tries, exhausted), (1, true));
    }

    #[test]
    fn budget_caps_concurrent_retries() {
        let b = Budget::new(None);
        let active: Vec<_> = (0..50).map(|_| b.request()).collect();
        // 20% of 50 = 10 retries at once, no more.
        let held: Vec<_> = std::iter::from_fn(|| b.try_retry()).take(100).collect();
        assert_eq!(held.len(), 10);
        drop(held);
        drop(active);
        // Idle: the floor of 3 still allows some.
        let held: Vec<_> = std::iter::from_fn(|| b.try_retry()).take(100).collect();
        assert_eq!(held.len(), 3);
        assert_eq!(b.retrying(), 3);
        drop(held);
        assert_eq!(b.retrying(), 0);
        let strict = Budget::new(Some(&proto::RetryBudget {
            percent: 0.0,
            min_retry_concurrency: 0,
        }));
        let _a = strict.request();
        assert!(strict.try_retry().is_none());
    }
}
