//! Telemetry's metric overrides, compiled for the metrics' label arrays:
//! a metric switched off for a reporter, a label removed (left empty,
//! which Prometheus stores as no label at all) or set from a CEL
//! expression evaluated per request. A tag outside Istio's standard
//! labels is added to its metric ([`Overrides::extra`]); on the reporter
//! it does not apply to, it stays empty.

use api::proto::MetricOverride;
use api::telemetry::expr::{self, Attributes, Expr};

use super::families::standard;

/// Istio's metric names in Telemetry, in the order of [`Metric`].
pub const NAMES: [&str; 10] = [
    "REQUEST_COUNT",
    "REQUEST_DURATION",
    "REQUEST_SIZE",
    "RESPONSE_SIZE",
    "GRPC_REQUEST_MESSAGES",
    "GRPC_RESPONSE_MESSAGES",
    "TCP_OPENED_CONNECTIONS",
    "TCP_CLOSED_CONNECTIONS",
    "TCP_SENT_BYTES",
    "TCP_RECEIVED_BYTES",
];

/// A metric, by its index in [`NAMES`].
pub type Metric = usize;

/// What happens to one label.
#[derive(Debug, Clone)]
enum Op {
    Remove,
    Set(Expr),
}

/// A label: one of Istio's (by index), or an added tag.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Label {
    Standard(usize),
    Added(String),
}

#[derive(Debug, Clone, Default)]
struct Rules {
    disabled: bool,
    tags: Vec<(Label, Op)>,
}

/// The overrides of one workload.
#[derive(Debug, Default)]
pub struct Overrides {
    /// By metric, then reporter (0: source, 1: destination).
    rules: [[Rules; 2]; 10],
    /// Set from expressions: the cache keys of requests must hold them.
    pub evaluates: bool,
    /// Reads request headers (the request's must be kept).
    pub reads_headers: bool,
    /// Told apart from every other compiled set (part of the cache key
    /// of request handles, which a new set must not reuse).
    pub generation: u64,
}

static GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl Overrides {
    /// Compiles `list`, in order (a later one wins for the same label).
    pub fn compile(list: &[MetricOverride]) -> Self {
        let mut out = Self {
            generation: GENERATION.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            ..Self::default()
        };
        for o in list {
            let metrics: Vec<Metric> = match NAMES.iter().position(|n| *n == o.metric) {
                Some(i) => vec![i],
                None => (0..NAMES.len()).collect(),
            };
            let reporters: Vec<usize> = [(o.client, 0), (o.server, 1)]
                .into_iter()
                .filter_map(|(on, r)| on.then_some(r))
                .collect();
            for &m in &metrics {
                for &r in &reporters {
                    let rules = &mut out.rules[m][r];
                    rules.disabled = o.disabled;
                    for (name, t) in &o.tags {
                        let label = match standard(m).iter().position(|l| l == name) {
                            // The reporter is never overridden.
                            Some(0) => continue,
                            Some(i) => Label::Standard(i),
                            None => Label::Added(name.clone()),
                        };
                        let op = if t.remove {
                            Op::Remove
                        } else {
                            match expr::parse(&t.value) {
                                Ok(e) => {
                                    out.evaluates = true;
                                    out.reads_headers |= e.reads_headers();
                                    Op::Set(e)
                                }
                                Err(_) => continue,
                            }
                        };
                        rules.tags.retain(|(l, _)| *l != label);
                        rules.tags.push((label, op));
                    }
                }
            }
        }
        out
    }

    /// Whether `m` is reported by `reporter` (0: source, 1: destination).
    pub fn enabled(&self, m: Metric, reporter: usize) -> bool {
        !self.rules[m][reporter].disabled
    }

    /// The tags each metric gains beyond Istio's labels, sorted.
    pub fn extra(&self) -> [Vec<String>; 10] {
        std::array::from_fn(|m| {
            let mut names: Vec<String> = self.rules[m]
                .iter()
                .flat_map(|r| &r.tags)
                .filter_map(|(l, _)| match l {
                    Label::Added(n) => Some(n.clone()),
                    Label::Standard(_) => None,
                })
                .collect();
            names.sort();
            names.dedup();
            names
        })
    }

    /// Whether any label of any metric changes.
    pub fn changes_labels(&self) -> bool {
        self.rules.iter().flatten().any(|r| !r.tags.is_empty())
    }

    /// The values the expressions give for `attrs`, in a fixed order
    /// (part of a request's cache key).
    pub fn evaluated(&self, attrs: &dyn Attributes) -> Vec<String> {
        if !self.evaluates {
            return Vec::new();
        }
        self.rules
            .iter()
            .flatten()
            .flat_map(|r| &r.tags)
            .filter_map(|(_, op)| match op {
                Op::Set(e) => Some(e.eval(attrs).text()),
                Op::Remove => None,
            })
            .collect()
    }

    /// Applies the rules of `m` for `reporter` to `values` (label values
    /// in Istio's order, then one per `added` tag, empty), taking set
    /// values from `evaluated` (as [`Overrides::evaluated`] made them).
    pub fn apply<'a>(
        &self,
        m: Metric,
        reporter: usize,
        values: &mut [&'a str],
        evaluated: &'a [String],
        added: &[String],
    ) {
        let base = standard(m).len();
        // The position of each expression's value in `evaluated`.
        let mut at = 0;
        for (mi, per) in self.rules.iter().enumerate() {
            for (ri, rules) in per.iter().enumerate() {
                for (label, op) in &rules.tags {
                    let value = match op {
                        Op::Set(_) => {
                            at += 1;
                            evaluated.get(at - 1).map_or("unknown", String::as_str)
                        }
                        Op::Remove => "",
                    };
                    if mi != m || ri != reporter {
                        continue;
                    }
                    let idx = match label {
                        Label::Standard(i) => Some(*i),
                        Label::Added(n) => added.iter().position(|a| a == n).map(|p| base + p),
                    };
                    if let Some(slot) = idx.and_then(|i| values.get_mut(i)) {
                        *slot = value;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::proto::TagOverride;
    use api::telemetry::expr::{Attr, Value};

    use crate::metrics::labels::REQUEST;

    struct Host;
    impl Attributes for Host {
        fn get(&self, a: &Attr) -> Value<'_> {
            match a {
                Attr::Host => Value::Str("orders:8080".into()),
                _ => Value::Absent,
            }
        }
    }

    #[test]
    fn rules_apply_per_metric_and_reporter() {
        let o = Overrides::compile(&[
            MetricOverride {
                metric: "REQUEST_COUNT".into(),
                client: false,
                server: true,
                disabled: false,
                tags: [
                    (
                        "destination_service".to_string(),
                        TagOverride {
                            remove: false,
                            value: "request.host".into(),
                        },
                    ),
                    (
                        "request_protocol".to_string(),
                        TagOverride {
                            remove: true,
                            value: String::new(),
                        },
                    ),
                    (
                        "request_host".to_string(),
                        TagOverride {
                            remove: false,
                            value: "request.host".into(),
                        },
                    ),
                ]
                .into(),
            },
            MetricOverride {
                metric: "ALL_METRICS".into(),
                client: true,
                server: false,
                disabled: true,
                tags: Default::default(),
            },
        ]);
        assert!(o.enabled(0, 1) && !o.enabled(0, 0) && !o.enabled(9, 0) && o.enabled(9, 1));
        let evaluated = o.evaluated(&Host);
        assert_eq!(evaluated, ["orders:8080", "orders:8080"]);
        let extra = o.extra();
        assert_eq!(extra[0], ["request_host"]);
        assert!(extra[1].is_empty());
        let mut v = ["x"; 26];
        v[25] = "";
        o.apply(0, 1, &mut v, &evaluated, &extra[0]);
        let get = |name: &str| v[REQUEST.iter().position(|l| *l == name).unwrap()];
        assert_eq!(get("destination_service"), "orders:8080");
        assert_eq!(get("request_protocol"), "");
        assert_eq!(get("response_code"), "x");
        assert_eq!(v[25], "orders:8080", "the added tag");
        let mut client = ["x"; 26];
        client[25] = "";
        o.apply(0, 0, &mut client, &evaluated, &extra[0]);
        assert_eq!(client[25], "", "empty where the tag does not apply");
        let mut other = ["x"; 25];
        o.apply(1, 1, &mut other, &evaluated, &extra[1]);
        assert!(
            other.iter().all(|v| *v == "x"),
            "another metric keeps its labels"
        );
    }
}
