//! Reading Prometheus' text exposition, as a test checks it.

/// The labels and value of each sample of metric `name` (exactly).
pub fn samples<'a>(text: &'a str, name: &str) -> Vec<(Vec<(&'a str, &'a str)>, f64)> {
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let (labels, value) = match rest.strip_prefix('{') {
                Some(r) => r.rsplit_once("} ")?,
                None => ("", rest.strip_prefix(' ')?),
            };
            let labels = labels
                .split("\",")
                .filter_map(|kv| {
                    let (k, v) = kv.split_once("=\"")?;
                    Some((k, v.trim_end_matches('"')))
                })
                .collect();
            Some((labels, value.trim().parse().ok()?))
        })
        .collect()
}

/// The sum of the samples of `name` whose labels include all of `want`.
pub fn sum(text: &str, name: &str, want: &[(&str, &str)]) -> f64 {
    samples(text, name)
        .into_iter()
        .filter(|(labels, _)| want.iter().all(|w| labels.contains(w)))
        .map(|(_, v)| v)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_what_matches() {
        let text = "# HELP x y\nreqs{a=\"1\",b=\"x,y\"} 3\nreqs{a=\"2\",b=\"\"} 4\nreqs_other{a=\"1\"} 9\nplain 2\n";
        assert_eq!(sum(text, "reqs", &[("a", "1")]), 3.0);
        assert_eq!(sum(text, "reqs", &[]), 7.0);
        assert_eq!(sum(text, "reqs", &[("b", "")]), 4.0);
        assert_eq!(sum(text, "reqs", &[("b", "x,y")]), 3.0);
        assert_eq!(sum(text, "plain", &[]), 2.0);
        assert_eq!(sum(text, "reqs", &[("a", "3")]), 0.0);
    }
}
