//! Endpoint choice within one subset: `ROUND_ROBIN`, `RANDOM`,
//! `LEAST_REQUEST` (the better of two random choices, Envoy's default),
//! and consistent hashing on a ring (points per endpoint: the ring size
//! over 8, 128 for Envoy's default of 1024), where removing one of N
//! endpoints moves only its own keys, about 1/N.
//! Every choice can exclude endpoints already tried by this request.

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use api::proto;

/// What a consistent hash reads from a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashOn {
    /// A header's value.
    Header(hyper::header::HeaderName),
    /// A cookie's value; with a TTL, a request without it gets one made
    /// up, sent back in `Set-Cookie` (Envoy's generated cookie).
    Cookie {
        /// Its name.
        name: String,
        /// Lifetime of a generated cookie (`None` or zero: never made).
        ttl: Option<std::time::Duration>,
        /// Its path attribute.
        path: Option<String>,
    },
    /// The client's address.
    SourceIp,
    /// A query parameter.
    Query(String),
}

/// A policy plus its state.
#[derive(Debug)]
pub enum Balancer {
    /// In turn.
    RoundRobin(AtomicUsize),
    /// Uniformly at random.
    Random,
    /// The less loaded of two random endpoints.
    LeastRequest,
    /// By key on a ring; requests without a key go at random.
    Hash {
        /// What the key is.
        on: HashOn,
        /// (point, member index), sorted by point.
        ring: Vec<(u64, usize)>,
    },
}

/// Envoy's default ring size.
pub const DEFAULT_RING: u64 = 1024;
/// A bound on ring memory (Envoy's maximum is 8M; ours is smaller).
pub const MAX_RING: u64 = 65_536;

/// FNV-1a with a final mix: stable across processes and builds, so every
/// proxy places keys alike.
pub fn hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h
}

impl Balancer {
    /// Round robin from a random start, so that the proxies of a
    /// workload (and one proxy after a config push) do not all send
    /// their next request to the same first endpoint.
    fn round_robin() -> Self {
        Self::RoundRobin(AtomicUsize::new(fastrand::usize(..)))
    }

    /// The policy `lb` names over `members` (stable names, e.g. addresses).
    pub fn new(lb: Option<&proto::LoadBalancer>, members: &[String]) -> Result<Self, String> {
        use proto::consistent_hash::Key;
        use proto::load_balancer::Policy;
        match lb.and_then(|lb| lb.policy.as_ref()) {
            Some(Policy::ConsistentHash(ch)) => {
                let on = match &ch.key {
                    Some(Key::Header(h)) => HashOn::Header(
                        hyper::header::HeaderName::try_from(h.to_ascii_lowercase())
                            .map_err(|e| format!("consistentHash.httpHeaderName: {e}"))?,
                    ),
                    Some(Key::Cookie(c)) => HashOn::Cookie {
                        name: c.name.clone(),
                        ttl: c
                            .ttl
                            .as_ref()
                            .map(api::routing::from_wire)
                            .filter(|t| !t.is_zero()),
                        path: Some(c.path.clone()).filter(|p| !p.is_empty()),
                    },
                    Some(Key::SourceIp(_)) => HashOn::SourceIp,
                    Some(Key::QueryParameter(q)) => HashOn::Query(q.clone()),
                    None => return Err("consistentHash: no key".into()),
                };
                let size = match ch.ring_size {
                    0 => DEFAULT_RING,
                    n => n.clamp(1, MAX_RING),
                };
                Ok(Self::Hash {
                    on,
                    ring: ring(members, size),
                })
            }
            Some(Policy::Simple(p)) => Ok(match proto::SimpleLb::try_from(*p) {
                Ok(proto::SimpleLb::Random) => Self::Random,
                Ok(proto::SimpleLb::LeastRequest) => Self::LeastRequest,
                _ => Self::round_robin(),
            }),
            None => Ok(Self::round_robin()),
        }
    }

    /// Its policy, in the DestinationRule's words.
    pub fn name(&self) -> &'static str {
        match self {
            Self::RoundRobin(_) => "ROUND_ROBIN",
            Self::Random => "RANDOM",
            Self::LeastRequest => "LEAST_REQUEST",
            Self::Hash { .. } => "CONSISTENT_HASH",
        }
    }

    /// The hash key source, if this is a hash balancer.
    pub fn hash_on(&self) -> Option<&HashOn> {
        match self {
            Self::Hash { on, .. } => Some(on),
            _ => None,
        }
    }

    /// A member index in `0..n`, skipping `tried`; `active` holds the
    /// requests in flight per member; `key` is the request's hash.
    pub fn pick(
        &self,
        n: usize,
        active: &[std::sync::Arc<AtomicU32>],
        key: Option<u64>,
        tried: &[usize],
        rng: &mut fastrand::Rng,
    ) -> Option<usize> {
        // The first try excludes nothing: no list to build on that path.
        let open: Option<Vec<usize>> =
            (!tried.is_empty()).then(|| (0..n).filter(|i| !tried.contains(i)).collect());
        let len = open.as_ref().map_or(n, Vec::len);
        if len == 0 {
            return None;
        }
        let at = |i: usize| open.as_ref().map_or(i, |o| o[i]);
        Some(match self {
            Self::RoundRobin(cursor) => {
                let start = cursor.fetch_add(1, Ordering::Relaxed);
                at(start % len)
            }
            Self::Random => at(rng.usize(..len)),
            Self::LeastRequest => {
                let a = at(rng.usize(..len));
                let b = at(rng.usize(..len));
                let load = |i: usize| active.get(i).map_or(0, |c| c.load(Ordering::Relaxed));
                if load(b) < load(a) { b } else { a }
            }
            Self::Hash { ring, .. } => match key {
                Some(k) if !ring.is_empty() => {
                    let start = ring.partition_point(|(p, _)| *p < k);
                    (0..ring.len())
                        .map(|i| ring[(start + i) % ring.len()].1)
                        .find(|m| !tried.contains(m))?
                }
                _ => at(rng.usize(..len)),
            },
        })
    }
}

fn ring(members: &[String], size: u64) -> Vec<(u64, usize)> {
    if members.is_empty() {
        return Vec::new();
    }
    // A fixed count per endpoint, whatever their number: when one goes,
    // only the keys on its points move (Envoy divides the ring size by the
    // endpoint count, which moves more).
    let per = (size / 8).clamp(16, 1024);
    let mut ring: Vec<(u64, usize)> = members
        .iter()
        .enumerate()
        .flat_map(|(i, m)| (0..per).map(move |r| (hash(format!("{m}_{r}").as_bytes()), i)))
        .collect();
    ring.sort_unstable();
    ring
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn lb(yaml: &str) -> proto::LoadBalancer {
        api::routing::load_balancer(&serde_yaml_ng::from_str(yaml).unwrap()).unwrap()
    }

    fn members(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("10.244.0.{}", i + 2)).collect()
    }

    fn counts(
        b: &Balancer,
        n: usize,
        active: &[std::sync::Arc<AtomicU32>],
        picks: usize,
    ) -> Vec<usize> {
        let mut rng = fastrand::Rng::with_seed(1);
        let mut c = vec![0; n];
        for _ in 0..picks {
            c[b.pick(n, active, None, &[], &mut rng).unwrap()] += 1;
        }
        c
    }

    #[test]
    fn round_robin_is_even_and_skips_tried() {
        let b = Balancer::new(None, &members(3)).unwrap();
        assert_eq!(counts(&b, 3, &[], 300), [100, 100, 100]);
        let mut rng = fastrand::Rng::with_seed(1);
        for _ in 0..10 {
            assert_eq!(b.pick(3, &[], None, &[0, 2], &mut rng), Some(1));
        }
        assert_eq!(b.pick(3, &[], None, &[0, 1, 2], &mut rng), None);
    }

    #[test]
    fn random_spreads_everywhere() {
        let b = Balancer::new(Some(&lb("simple: RANDOM")), &members(4)).unwrap();
        let c = counts(&b, 4, &[], 4000);
        assert!(c.iter().all(|n| (800..1200).contains(n)), "{c:?}");
    }

    #[test]
    fn least_request_avoids_the_busy_endpoint() {
        let b = Balancer::new(Some(&lb("simple: LEAST_REQUEST")), &members(3)).unwrap();
        let active = [50, 0, 0].map(|n| std::sync::Arc::new(AtomicU32::new(n)));
        let c = counts(&b, 3, &active, 3000);
        // The busy one wins only when both choices land on it: about 1/9.
        assert!(c[0] < 450, "{c:?}");
        assert!(c[1] > 1000 && c[2] > 1000, "{c:?}");
    }

    #[test]
    fn hashing_is_sticky_and_moves_about_one_nth_of_keys() {
        let policy = lb("consistentHash: {httpHeaderName: x-user-id}");
        let four = Balancer::new(Some(&policy), &members(4)).unwrap();
        assert!(matches!(four.hash_on(), Some(HashOn::Header(h)) if h == "x-user-id"));
        let mut rng = fastrand::Rng::with_seed(3);
        let keys: Vec<u64> = (0..2000)
            .map(|i| hash(format!("user-{i}").as_bytes()))
            .collect();
        let place = |b: &Balancer, n, rng: &mut fastrand::Rng| -> Vec<usize> {
            keys.iter()
                .map(|k| b.pick(n, &[], Some(*k), &[], rng).unwrap())
                .collect()
        };
        let first = place(&four, 4, &mut rng);
        assert_eq!(first, place(&four, 4, &mut rng), "same key, same endpoint");
        let mut spread: HashMap<usize, usize> = HashMap::new();
        for m in &first {
            *spread.entry(*m).or_default() += 1;
        }
        assert!(
            spread.values().all(|n| (300..700).contains(n)),
            "{spread:?}"
        );
        // The last endpoint goes: only its keys move.
        let three = Balancer::new(Some(&policy), &members(3)).unwrap();
        let after = place(&three, 3, &mut rng);
        let moved = first.iter().zip(&after).filter(|(a, b)| a != b).count();
        let had = first.iter().filter(|m| **m == 3).count();
        assert_eq!(moved, had, "keys of the remaining endpoints stay");
        assert!(moved < 2000 * 2 / 5, "moved {moved}");
        // A retry skips the endpoint tried first.
        let k = keys[0];
        let p = four.pick(4, &[], Some(k), &[], &mut rng).unwrap();
        assert_ne!(four.pick(4, &[], Some(k), &[p], &mut rng), Some(p));
    }

    #[test]
    fn hash_needs_a_key_source() {
        let err =
            api::routing::load_balancer(&serde_yaml_ng::from_str("consistentHash: {}").unwrap())
                .unwrap_err();
        assert!(err.contains("consistentHash"), "{err}");
        let keyless = proto::LoadBalancer {
            policy: Some(proto::load_balancer::Policy::ConsistentHash(
                proto::ConsistentHash::default(),
            )),
        };
        let err = Balancer::new(Some(&keyless), &members(2)).unwrap_err();
        assert!(err.contains("consistentHash"), "{err}");
        for (yaml, want) in [
            ("consistentHash: {useSourceIp: true}", HashOn::SourceIp),
            (
                "consistentHash: {httpQueryParameterName: u}",
                HashOn::Query("u".into()),
            ),
            (
                "consistentHash: {httpCookie: {name: session, ttl: 0s}}",
                HashOn::Cookie {
                    name: "session".into(),
                    ttl: None,
                    path: None,
                },
            ),
            (
                "consistentHash: {httpCookie: {name: s, ttl: 1h, path: /}}",
                HashOn::Cookie {
                    name: "s".into(),
                    ttl: Some(std::time::Duration::from_secs(3600)),
                    path: Some("/".into()),
                },
            ),
        ] {
            let b = Balancer::new(Some(&lb(yaml)), &members(2)).unwrap();
            assert_eq!(b.hash_on(), Some(&want));
        }
    }
}
