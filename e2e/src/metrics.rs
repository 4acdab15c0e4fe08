//! Reading Prometheus' text exposition, as a test checks it.

use common::prom_text;

/// The sum of the samples of `name` whose labels include all of `want`.
pub fn sum(text: &str, name: &str, want: &[(&str, &str)]) -> f64 {
    prom_text::sum(&prom_text::parse(text), name, want)
}
