//! Weighted choice among a route's destinations, and percentages (faults,
//! mirrors) as Istio gives them: 0-100 with fractions.

/// The index whose weight band holds `roll` (in `0..total`).
pub fn pick_weighted(weights: &[u32], roll: u64) -> Option<usize> {
    let mut acc = 0u64;
    for (i, w) in weights.iter().enumerate() {
        acc += u64::from(*w);
        if roll < acc {
            return Some(i);
        }
    }
    None
}

/// Sum of weights.
pub fn total(weights: &[u32]) -> u64 {
    weights.iter().map(|w| u64::from(*w)).sum()
}

/// Whether a request falls within `percent` (0-100).
pub fn hits(percent: f64, rng: &mut fastrand::Rng) -> bool {
    percent >= 100.0 || (percent > 0.0 && rng.f64() * 100.0 < percent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_split_traffic_in_proportion() {
        let mut rng = fastrand::Rng::with_seed(11);
        for weights in [vec![90, 10], vec![95, 5], vec![50, 30, 20], vec![100, 0]] {
            let t = total(&weights);
            let n = 10_000;
            let mut got = vec![0u32; weights.len()];
            for _ in 0..n {
                got[pick_weighted(&weights, rng.u64(0..t)).unwrap()] += 1;
            }
            for (w, g) in weights.iter().zip(&got) {
                let want = f64::from(*w) / f64::from(u32::try_from(t).unwrap()) * 100.0;
                let share = f64::from(*g) / f64::from(n) * 100.0;
                assert!((share - want).abs() < 1.5, "{weights:?}: {got:?}");
            }
        }
        assert_eq!(pick_weighted(&[0, 0], 0), None);
        assert_eq!(pick_weighted(&[0, 5], 0), Some(1));
    }

    #[test]
    fn percentages_hit_about_that_often() {
        let mut rng = fastrand::Rng::with_seed(5);
        let n = (0..10_000).filter(|_| hits(10.0, &mut rng)).count();
        assert!((900..1100).contains(&n), "{n}");
        assert!((0..100).all(|_| hits(100.0, &mut rng)));
        assert!((0..100).all(|_| !hits(0.0, &mut rng)));
        let n = (0..100_000).filter(|_| hits(0.5, &mut rng)).count();
        assert!((350..650).contains(&n), "{n}");
    }
}
