//! Outlier detection with Envoy's meaning: per endpoint, consecutive 5xx
//! (`consecutive5xxErrors`), gateway errors (502/503/504,
//! `consecutiveGatewayErrors`) and, with `splitExternalLocalOriginErrors`,
//! locally originated failures (connect failure, reset, timeout:
//! `consecutiveLocalOriginFailures`) eject it for `baseEjectionTime` times
//! the number of its ejections (capped at 300 s, Envoy's default), never more
//! than `maxEjectionPercent` of the endpoints at once (at least one), and
//! not at all while fewer than `minHealthPercent` are healthy.
//!
//! Circuit states per endpoint: closed (in rotation), open (ejected) and
//! half-open (the ejection time passed: back in rotation, and its first
//! failure ejects it again at once). A healthy `interval` after returning,
//! the ejection count steps back down, as Envoy's multiplier does.
//!
//! State is per destination host and survives configuration updates.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

pub use api::config_dump::{Circuit, EndpointState};
use api::proto;

/// Envoy's cap on one ejection.
pub const MAX_EJECTION: Duration = Duration::from_secs(300);

/// A compiled `outlierDetection`.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    consecutive_5xx: u32,
    consecutive_gateway: u32,
    consecutive_local: u32,
    split: bool,
    interval: Duration,
    base_ejection: Duration,
    max_ejection_percent: u32,
    min_health_percent: u32,
}

impl Config {
    /// From the wire (Istio's defaults filled by the controller).
    pub fn compile(od: &proto::OutlierDetection) -> Self {
        let dur = |d: Option<&proto::Duration>, default: u64| {
            d.map(api::routing::from_wire)
                .unwrap_or(Duration::from_secs(default))
        };
        Self {
            consecutive_5xx: od.consecutive_5xx,
            consecutive_gateway: od.consecutive_gateway,
            consecutive_local: od.consecutive_local_origin,
            split: od.split_local_origin,
            interval: dur(od.interval.as_ref(), 10),
            base_ejection: dur(od.base_ejection_time.as_ref(), 30),
            max_ejection_percent: od.max_ejection_percent.min(100),
            min_health_percent: od.min_health_percent.min(100),
        }
    }
}

/// Outlier detection for one subset, held by a try in flight.
#[derive(Debug, Clone)]
pub struct Observer {
    /// The subset's settings.
    pub config: Config,
    /// The host's detector.
    pub detector: std::sync::Arc<Detector>,
    /// How many endpoints the subset has.
    pub members: usize,
}

impl Observer {
    /// Counts `seen` on `ip`; returns whether it ejected the endpoint.
    pub fn record(&self, ip: IpAddr, seen: Observed) -> bool {
        self.detector
            .record(&self.config, ip, seen, self.members, Instant::now())
    }
}

/// What one try came to, as the detector counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observed {
    /// A response below 500.
    Success,
    /// A 5xx response from the endpoint.
    Status(u16),
    /// Connect failure, reset or timeout: originated here.
    LocalFailure,
}

#[derive(Debug, Default)]
struct Endpoint {
    c5xx: u32,
    gateway: u32,
    local: u32,
    ejected_until: Option<Instant>,
    returned_at: Option<Instant>,
    ejections: u32,
    half_open: bool,
}

impl Endpoint {
    fn circuit(&self, now: Instant) -> Circuit {
        match self.ejected_until {
            Some(t) if now < t => Circuit::Open,
            Some(_) => Circuit::HalfOpen,
            None if self.half_open => Circuit::HalfOpen,
            None => Circuit::Closed,
        }
    }
}

/// The detector of one destination host.
#[derive(Debug, Default)]
pub struct Detector {
    endpoints: Mutex<HashMap<IpAddr, Endpoint>>,
}

impl Detector {
    /// Which of `eps` may be chosen now (`false`: ejected). When too few
    /// are healthy for `cfg.min_health_percent`, all may.
    pub fn available(&self, cfg: &Config, eps: &[IpAddr], now: Instant) -> Vec<bool> {
        let mut map = self
            .endpoints
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut ok: Vec<bool> = eps
            .iter()
            .map(|ip| {
                let Some(e) = map.get_mut(ip) else {
                    return true;
                };
                match e.ejected_until {
                    Some(t) if now < t => false,
                    Some(_) => {
                        // Time served: back on probation.
                        e.ejected_until = None;
                        e.half_open = true;
                        e.returned_at = Some(now);
                        true
                    }
                    None => true,
                }
            })
            .collect();
        let healthy = ok.iter().filter(|b| **b).count();
        if !eps.is_empty() && healthy * 100 < eps.len() * cfg.min_health_percent as usize {
            ok.iter_mut().for_each(|b| *b = true);
        }
        ok
    }

    /// Counts a try's result on `ip`, one of `n` endpoints; returns
    /// whether it was ejected by it.
    pub fn record(&self, cfg: &Config, ip: IpAddr, r: Observed, n: usize, now: Instant) -> bool {
        let mut map = self
            .endpoints
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let ejected_now = map
            .values()
            .filter(|e| e.ejected_until.is_some_and(|t| now < t))
            .count();
        let e = map.entry(ip).or_default();
        if e.ejected_until.is_some_and(|t| now < t) {
            return false;
        }
        let trip = match r {
            Observed::Success => {
                e.c5xx = 0;
                e.gateway = 0;
                e.local = 0;
                if e.half_open {
                    e.half_open = false;
                }
                false
            }
            Observed::Status(s) => {
                e.c5xx += 1;
                if matches!(s, 502..=504) {
                    e.gateway += 1;
                } else {
                    e.gateway = 0;
                }
                e.local = 0;
                e.half_open
                    || hit(cfg.consecutive_5xx, e.c5xx)
                    || hit(cfg.consecutive_gateway, e.gateway)
            }
            Observed::LocalFailure if cfg.split => {
                e.local += 1;
                e.half_open || hit(cfg.consecutive_local, e.local)
            }
            Observed::LocalFailure => {
                // Not split: a local failure counts as a gateway error.
                e.c5xx += 1;
                e.gateway += 1;
                e.half_open
                    || hit(cfg.consecutive_5xx, e.c5xx)
                    || hit(cfg.consecutive_gateway, e.gateway)
            }
        };
        let cap = (n * cfg.max_ejection_percent as usize / 100).max(1);
        if !trip || ejected_now >= cap {
            return false;
        }
        // A healthy interval since the last return steps the count down.
        if let Some(back) = e.returned_at {
            let quiet = now.saturating_duration_since(back).as_secs_f64()
                / cfg.interval.as_secs_f64().max(0.001);
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let steps = quiet as u32;
            e.ejections = e.ejections.saturating_sub(steps);
        }
        e.ejections += 1;
        let time = cfg
            .base_ejection
            .saturating_mul(e.ejections)
            .min(MAX_EJECTION.max(cfg.base_ejection));
        e.ejected_until = Some(now + time);
        e.half_open = false;
        e.c5xx = 0;
        e.gateway = 0;
        e.local = 0;
        true
    }

    /// Every endpoint's state among `eps`.
    pub fn states(&self, eps: &[IpAddr], now: Instant) -> Vec<EndpointState> {
        let map = self
            .endpoints
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        eps.iter()
            .map(|ip| {
                let e = map.get(ip);
                EndpointState {
                    address: *ip,
                    pod: String::new(),
                    identity: String::new(),
                    circuit: e.map_or(Circuit::Closed, |e| e.circuit(now)),
                    ejections: e.map_or(0, |e| e.ejections),
                    ejected_for_secs: e
                        .and_then(|e| e.ejected_until)
                        .map_or(0.0, |t| t.saturating_duration_since(now).as_secs_f64()),
                }
            })
            .collect()
    }
}

fn hit(threshold: u32, count: u32) -> bool {
    threshold > 0 && count >= threshold
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(yaml: &str) -> Config {
        Config::compile(
            &api::routing::outlier_detection(&serde_yaml_ng::from_str(yaml).unwrap()).unwrap(),
        )
    }

    fn ips(n: u8) -> Vec<IpAddr> {
        (1..=n).map(|i| IpAddr::from([10, 0, 0, i])).collect()
    }

    #[test]
    fn five_consecutive_5xx_eject_and_the_time_grows() {
        let c = cfg(
            "{consecutive5xxErrors: 5, interval: 10s, baseEjectionTime: 30s, maxEjectionPercent: 100}",
        );
        let d = Detector::default();
        let eps = ips(3);
        let t0 = Instant::now();
        for _ in 0..4 {
            assert!(!d.record(&c, eps[0], Observed::Status(500), 3, t0));
        }
        // A success in between resets the count.
        d.record(&c, eps[0], Observed::Success, 3, t0);
        for _ in 0..4 {
            assert!(!d.record(&c, eps[0], Observed::Status(503), 3, t0));
        }
        assert!(d.record(&c, eps[0], Observed::Status(503), 3, t0));
        assert_eq!(d.available(&c, &eps, t0), [false, true, true]);
        assert_eq!(d.states(&eps, t0)[0].circuit, Circuit::Open);
        // Back after 30 s, half-open; one failure ejects it again, for 60 s.
        let t1 = t0 + Duration::from_secs(31);
        assert_eq!(d.available(&c, &eps, t1), [true, true, true]);
        assert_eq!(d.states(&eps, t1)[0].circuit, Circuit::HalfOpen);
        assert!(d.record(&c, eps[0], Observed::Status(500), 3, t1));
        assert!(!d.available(&c, &eps, t1 + Duration::from_secs(59))[0]);
        assert!(d.available(&c, &eps, t1 + Duration::from_secs(61))[0]);
        // A success closes the circuit.
        d.record(
            &c,
            eps[0],
            Observed::Success,
            3,
            t1 + Duration::from_secs(61),
        );
        assert_eq!(
            d.states(&eps, t1 + Duration::from_secs(62))[0].circuit,
            Circuit::Closed
        );
    }

    #[test]
    fn gateway_errors_and_split_local_failures_count_apart() {
        let c =
            cfg("{consecutive5xxErrors: 0, consecutiveGatewayErrors: 2, maxEjectionPercent: 100}");
        let d = Detector::default();
        let eps = ips(2);
        let t = Instant::now();
        assert!(!d.record(&c, eps[0], Observed::Status(500), 2, t));
        assert!(!d.record(&c, eps[0], Observed::Status(502), 2, t));
        assert!(
            d.record(&c, eps[0], Observed::LocalFailure, 2, t),
            "unsplit: local is gateway"
        );

        let c = cfg(
            "{consecutive5xxErrors: 0, splitExternalLocalOriginErrors: true, consecutiveLocalOriginFailures: 3, maxEjectionPercent: 100}",
        );
        let d = Detector::default();
        assert!(!d.record(&c, eps[0], Observed::LocalFailure, 2, t));
        assert!(!d.record(&c, eps[0], Observed::LocalFailure, 2, t));
        // A response, even a 503, means the connection worked: the local
        // count starts over, and 5xx alone never ejects (threshold 0).
        assert!(
            !d.record(&c, eps[0], Observed::Status(503), 2, t),
            "5xx off"
        );
        assert!(!d.record(&c, eps[0], Observed::LocalFailure, 2, t));
        assert!(!d.record(&c, eps[0], Observed::LocalFailure, 2, t));
        assert!(d.record(&c, eps[0], Observed::LocalFailure, 2, t));
    }

    #[test]
    fn ejections_are_capped_and_min_health_disables_them() {
        let c = cfg("{consecutive5xxErrors: 1, maxEjectionPercent: 50}");
        let d = Detector::default();
        let eps = ips(4);
        let t = Instant::now();
        assert!(d.record(&c, eps[0], Observed::Status(500), 4, t));
        assert!(d.record(&c, eps[1], Observed::Status(500), 4, t));
        assert!(
            !d.record(&c, eps[2], Observed::Status(500), 4, t),
            "50% of 4 is 2"
        );
        assert_eq!(d.available(&c, &eps, t), [false, false, true, true]);
        // At least one, whatever the percentage.
        let c10 = cfg("{consecutive5xxErrors: 1}");
        let d = Detector::default();
        assert!(d.record(&c10, eps[0], Observed::Status(500), 4, t));
        assert!(!d.record(&c10, eps[1], Observed::Status(500), 4, t));
        // Below minHealthPercent, everything is in rotation.
        let c = cfg("{consecutive5xxErrors: 1, maxEjectionPercent: 100, minHealthPercent: 60}");
        let d = Detector::default();
        d.record(&c, eps[0], Observed::Status(500), 4, t);
        assert_eq!(d.available(&c, &eps, t), [false, true, true, true]);
        d.record(&c, eps[1], Observed::Status(500), 4, t);
        assert_eq!(d.available(&c, &eps, t), [true, true, true, true]);
    }

    #[test]
    fn a_quiet_interval_steps_the_multiplier_down() {
        let c = cfg(
            "{consecutive5xxErrors: 1, interval: 10s, baseEjectionTime: 10s, maxEjectionPercent: 100}",
        );
        let d = Detector::default();
        let eps = ips(2);
        let t = Instant::now();
        d.record(&c, eps[0], Observed::Status(500), 2, t);
        let back = t + Duration::from_secs(11);
        d.available(&c, &eps, back);
        d.record(&c, eps[0], Observed::Success, 2, back);
        // Two quiet intervals later, the next ejection is the base again.
        let later = back + Duration::from_secs(25);
        assert!(d.record(&c, eps[0], Observed::Status(500), 2, later));
        assert_eq!(d.states(&eps, later)[0].ejections, 1);
        assert!(d.available(&c, &eps, later + Duration::from_secs(11))[0]);
    }
}
