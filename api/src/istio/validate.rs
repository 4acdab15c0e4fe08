//! What Istio's validation rejects, rejected here with the field path and
//! the fix. Every problem of a resource is reported, not just the first.

use super::shared::{Destination, Percent, StringMatch};

mod destination_rule;
mod security;
mod service_entry;
mod virtual_service;

pub use destination_rule::destination_rule;
pub use security::{authorization_policy, peer_authentication, request_authentication, telemetry};
pub use service_entry::{service_entry, sidecar, workload_entry};
pub use virtual_service::virtual_service;

/// A problem at a field path (from `spec`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// e.g. `spec.http[0].route[1].weight`.
    pub field: String,
    /// What is wrong and what to do.
    pub message: String,
}

/// Collects problems.
#[derive(Default)]
pub(crate) struct Check(pub(crate) Vec<Problem>);

impl Check {
    pub(crate) fn fail(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            field: field.into(),
            message: message.into(),
        });
    }

    pub(crate) fn duration(&mut self, field: &str, v: Option<&String>) {
        if let Some(v) = v
            && let Err(e) = crate::duration::parse(v)
        {
            self.fail(field, e.to_string());
        }
    }

    pub(crate) fn percent(&mut self, field: &str, p: Option<&Percent>) {
        if let Some(v) = p.and_then(|p| p.value)
            && !(0.0..=100.0).contains(&v)
        {
            self.fail(format!("{field}.value"), format!("{v} is outside 0..100"));
        }
    }

    pub(crate) fn one_of(&mut self, field: &str, v: Option<&String>, allowed: &[&str]) {
        if let Some(v) = v
            && !allowed.contains(&v.as_str())
        {
            self.fail(field, format!("{v:?} is not one of {}", allowed.join(", ")));
        }
    }

    pub(crate) fn port(&mut self, field: &str, p: Option<u32>) {
        if let Some(p) = p
            && !(1..=65535).contains(&p)
        {
            self.fail(field, format!("{p} is not a port (1-65535)"));
        }
    }

    pub(crate) fn string_match(&mut self, field: &str, m: &StringMatch, presence_ok: bool) {
        let set = [m.exact.is_some(), m.prefix.is_some(), m.regex.is_some()]
            .iter()
            .filter(|s| **s)
            .count();
        if set > 1 {
            self.fail(field, "set only one of exact, prefix and regex");
        } else if set == 0 && !presence_ok {
            self.fail(field, "set one of exact, prefix or regex");
        }
        if let Some(r) = &m.regex {
            self.regex(&format!("{field}.regex"), r);
        }
    }

    /// `exportTo`: `.` (this namespace), `*` (all), `~` (none) or namespaces.
    pub(crate) fn export_to(&mut self, field: &str, v: Option<&Vec<String>>) {
        for (i, e) in v.into_iter().flatten().enumerate() {
            if !matches!(e.as_str(), "." | "*" | "~") && !crate::manifest::is_dns_label(e) {
                self.fail(
                    format!("{field}[{i}]"),
                    format!("{e:?}: use \".\", \"*\", \"~\" or a namespace name"),
                );
            }
        }
    }

    pub(crate) fn regex(&mut self, field: &str, r: &str) {
        if let Err(e) = regex::Regex::new(r) {
            let first = e
                .to_string()
                .lines()
                .last()
                .unwrap_or_default()
                .trim()
                .to_string();
            self.fail(field, format!("invalid regex {r:?}: {first}"));
        }
    }

    pub(crate) fn destination(&mut self, field: &str, d: Option<&Destination>) {
        let Some(d) = d else {
            return self.fail(field, "required: the destination host");
        };
        if d.host.as_deref().is_none_or(str::is_empty) {
            self.fail(
                format!("{field}.host"),
                "required: a service name such as reviews.default.svc.cluster.local",
            );
        }
        self.port(
            &format!("{field}.port.number"),
            d.port.as_ref().and_then(|p| p.number),
        );
    }

    /// Weights: none negative; with several destinations they sum to 100.
    pub(crate) fn weights(&mut self, field: &str, weights: &[(Option<i32>, String)]) {
        let mut sum: i64 = 0;
        for (w, at) in weights {
            match w {
                Some(w) if *w < 0 => self.fail(
                    format!("{at}.weight"),
                    format!("{w} is negative; weights are 0..100"),
                ),
                Some(w) => sum += i64::from(*w),
                None => {}
            }
        }
        if weights.len() > 1 && sum != 100 {
            self.fail(field, format!("weights sum to {sum}, expected 100"));
        }
    }
}

/// The closest of `candidates` to `word` (edit distance at most 2, or a
/// case-insensitive match), for "did you mean".
pub fn did_you_mean<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let lower = word.to_ascii_lowercase();
    candidates
        .iter()
        .map(|c| {
            (
                c,
                if c.to_ascii_lowercase() == lower {
                    0
                } else {
                    distance(&lower, &c.to_ascii_lowercase())
                },
            )
        })
        .filter(|(_, d)| *d <= 2)
        .min_by_key(|(_, d)| *d)
        .map(|(c, _)| *c)
}

fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Turns serde's "unknown field `x`, expected one of `a`, `b`" into a
/// message with a suggestion; other texts pass unchanged. Returns the
/// unknown name too, to extend the field path.
pub fn unknown_field(message: &str) -> Option<(String, String)> {
    let rest = message.strip_prefix("unknown field `")?;
    let (name, rest) = rest.split_once('`')?;
    let expected: Vec<&str> = rest.split('`').skip(1).step_by(2).collect();
    let hint = match did_you_mean(name, &expected) {
        Some(s) => format!("; did you mean {s:?}?"),
        None if expected.is_empty() => String::new(),
        None => format!("; expected one of {}", expected.join(", ")),
    };
    Some((name.to_string(), format!("unknown field {name:?}{hint}")))
}

#[cfg(test)]
mod tests;
