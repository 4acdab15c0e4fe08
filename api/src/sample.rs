//! Random model values for property tests: every message type samples
//! itself (the `message!` macro implements [`Sample`]), bounded in depth,
//! with the strings YAML finds ambiguous and finite floats.

use std::collections::BTreeMap;

/// A type that can make a random value of itself.
pub trait Sample: Sized {
    /// A value; `depth` grows with nesting and bounds recursion.
    fn sample(rng: &mut fastrand::Rng, depth: u32) -> Self;
}

/// Nesting deeper than this samples only `None`s.
const MAX_DEPTH: u32 = 6;

impl<T: Sample> Sample for Option<T> {
    fn sample(rng: &mut fastrand::Rng, depth: u32) -> Self {
        (depth < MAX_DEPTH && rng.bool()).then(|| T::sample(rng, depth))
    }
}

impl<T: Sample> Sample for Box<T> {
    fn sample(rng: &mut fastrand::Rng, depth: u32) -> Self {
        Box::new(T::sample(rng, depth))
    }
}

impl<T: Sample> Sample for Vec<T> {
    fn sample(rng: &mut fastrand::Rng, depth: u32) -> Self {
        (0..rng.usize(0..3))
            .map(|_| T::sample(rng, depth + 1))
            .collect()
    }
}

impl<K: Sample + Ord, V: Sample> Sample for BTreeMap<K, V> {
    fn sample(rng: &mut fastrand::Rng, depth: u32) -> Self {
        (0..rng.usize(0..3))
            .map(|_| (K::sample(rng, depth + 1), V::sample(rng, depth + 1)))
            .collect()
    }
}

/// Strings a YAML writer must quote to keep them strings.
const TRICKY: &[&str] = &[
    "",
    "yes",
    "no",
    "on",
    "off",
    "true",
    "null",
    "~",
    "1.5",
    "0x1f",
    "1e3",
    "-",
    "- a",
    ": b",
    "a: b",
    "#c",
    "'q'",
    "\"q\"",
    " lead",
    "trail ",
    "multi\nline",
    "tab\there",
    "ünïcödé",
    "*",
    "&anchor",
    "!tag",
    "{x}",
    "[y]",
    "100ms",
    "5xx,reset",
];

impl Sample for String {
    fn sample(rng: &mut fastrand::Rng, _: u32) -> Self {
        if rng.bool() {
            TRICKY[rng.usize(..TRICKY.len())].to_string()
        } else {
            (0..rng.usize(1..12)).map(|_| rng.alphanumeric()).collect()
        }
    }
}

impl Sample for bool {
    fn sample(rng: &mut fastrand::Rng, _: u32) -> Self {
        rng.bool()
    }
}

impl Sample for u32 {
    fn sample(rng: &mut fastrand::Rng, _: u32) -> Self {
        if rng.bool() {
            rng.u32(..100)
        } else {
            rng.u32(..)
        }
    }
}

impl Sample for i32 {
    fn sample(rng: &mut fastrand::Rng, _: u32) -> Self {
        if rng.bool() {
            rng.i32(-5..100)
        } else {
            rng.i32(..)
        }
    }
}

impl Sample for u64 {
    fn sample(rng: &mut fastrand::Rng, _: u32) -> Self {
        // Beyond 2^53 YAML readers disagree; Kubernetes caps at that too.
        rng.u64(..1 << 53)
    }
}

impl Sample for f64 {
    fn sample(rng: &mut fastrand::Rng, _: u32) -> Self {
        match rng.u8(..4) {
            0 => 0.0,
            1 => f64::from(rng.u32(..101)),
            2 => rng.f64() * 100.0,
            _ => (rng.f64() - 0.5) * 1e9,
        }
    }
}

impl Sample for serde_json::Value {
    fn sample(rng: &mut fastrand::Rng, depth: u32) -> Self {
        match rng.u8(..3) {
            0 => serde_json::Value::String(String::sample(rng, depth)),
            1 => serde_json::Value::Bool(rng.bool()),
            _ => serde_json::json!({ "name": String::sample(rng, depth) }),
        }
    }
}

impl Sample for crate::linkerd::Quantity {
    fn sample(rng: &mut fastrand::Rng, depth: u32) -> Self {
        if rng.bool() {
            Self::Number(f64::from(rng.u32(..1000)))
        } else {
            Self::Text(format!("{}m", rng.u32(..1000) + depth))
        }
    }
}
