//! Durations as Istio writes them: `100ms`, `1.5s`, `2m`, `1h`.

use std::time::Duration;

/// Why a text is not a duration.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0:?} is not a duration: use a number and a unit, e.g. 100ms, 1.5s, 2m, 1h")]
pub struct DurationError(pub String);

/// Parses `<number><unit>` with unit `ms`, `s`, `m` or `h`.
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    let err = || DurationError(text.to_string());
    let split = text
        .find(|c: char| c.is_ascii_alphabetic())
        .ok_or_else(err)?;
    let (num, unit) = text.split_at(split);
    let value: f64 = num.parse().map_err(|_| err())?;
    let scale = match unit {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return Err(err()),
    };
    if !value.is_finite() || value < 0.0 || num.starts_with('+') {
        return Err(err());
    }
    Duration::try_from_secs_f64(value * scale).map_err(|_| err())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_istio_durations() {
        assert_eq!(parse("100ms"), Ok(Duration::from_millis(100)));
        assert_eq!(parse("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse("24h"), Ok(Duration::from_secs(86400)));
        for bad in ["", "10", "s", "-1s", "1d", "1.5.1s", "+1s", "1 s"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
