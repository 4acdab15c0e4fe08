//! Reading Prometheus' text exposition (what a proxy's `/metrics`
//! serves): samples with their labels, unescaped.

/// One sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The metric's name (with `_bucket`, `_sum`, ... as written).
    pub name: String,
    /// Its labels, in the order written.
    pub labels: Vec<(String, String)>,
    /// Its value.
    pub value: f64,
}

impl Sample {
    /// The value of label `k` (empty when absent, as Prometheus reads it).
    pub fn label(&self, k: &str) -> &str {
        self.labels
            .iter()
            .find(|(n, _)| n == k)
            .map_or("", |(_, v)| v.as_str())
    }

    /// Whether every `(label, value)` of `want` holds.
    pub fn matches(&self, want: &[(&str, &str)]) -> bool {
        want.iter().all(|(k, v)| self.label(k) == *v)
    }
}

/// Every sample of `text`; lines that are not samples are skipped.
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines().filter_map(line).collect()
}

fn line(l: &str) -> Option<Sample> {
    let l = l.trim();
    if l.is_empty() || l.starts_with('#') {
        return None;
    }
    let name_end = l.find(['{', ' '])?;
    let name = l[..name_end].to_string();
    let mut rest = &l[name_end..];
    let mut labels = Vec::new();
    if let Some(r) = rest.strip_prefix('{') {
        let mut r = r;
        loop {
            r = r.trim_start_matches([',', ' ']);
            if let Some(after) = r.strip_prefix('}') {
                rest = after;
                break;
            }
            let eq = r.find('=')?;
            let key = r[..eq].trim().to_string();
            let body = r[eq + 1..].strip_prefix('"')?;
            let mut value = String::new();
            let mut chars = body.char_indices();
            let end = loop {
                let (i, c) = chars.next()?;
                match c {
                    '\\' => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        other => value.push(other),
                    },
                    '"' => break i,
                    c => value.push(c),
                }
            };
            labels.push((key, value));
            r = &body[end + 1..];
        }
    }
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name,
        labels,
        value,
    })
}

/// The sum of the samples named `name` whose labels include all of
/// `want`.
pub fn sum(samples: &[Sample], name: &str, want: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name && s.matches(want))
        .map(|s| s.value)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_labels_escapes_and_special_values() {
        let text = "# HELP x y\n# TYPE reqs counter\nreqs{a=\"1\",b=\"x,y\"} 3\nreqs{a=\"2\",b=\"q\\\"uote\\\\\"} 4\nreqs_other{a=\"1\"} 9\nplain 2\nh_bucket{le=\"+Inf\"} 7\n\n";
        let s = parse(text);
        assert_eq!(s.len(), 5);
        assert_eq!(sum(&s, "reqs", &[("a", "1")]), 3.0);
        assert_eq!(sum(&s, "reqs", &[]), 7.0);
        assert_eq!(sum(&s, "reqs", &[("b", "x,y")]), 3.0);
        assert_eq!(s[1].label("b"), "q\"uote\\");
        assert_eq!(s[1].label("missing"), "");
        assert_eq!(sum(&s, "plain", &[]), 2.0);
        assert_eq!(s[4].label("le"), "+Inf");
        assert_eq!(sum(&s, "reqs", &[("a", "3")]), 0.0);
        assert!(parse("broken{a=\"1\" 3").is_empty());
    }
}
