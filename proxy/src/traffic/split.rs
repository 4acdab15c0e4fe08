//! Weighted choice among a route's destinations, and percentages (faults,
//! mirrors) as Istio gives them: 0-100 with fractions.

/// One of `items`, with odds in proportion to `weight` (`None`: every
/// weight is 0).
pub fn pick<'a, T>(
    items: &'a [T],
    weight: impl Fn(&T) -> u32,
    rng: &mut fastrand::Rng,
) -> Option<&'a T> {
    pick_index(items, weight, rng).map(|i| &items[i])
}

/// The index of one of `items`, as [`pick`] chooses.
pub fn pick_index<T>(
    items: &[T],
    weight: impl Fn(&T) -> u32,
    rng: &mut fastrand::Rng,
) -> Option<usize> {
    let total: u64 = items.iter().map(|i| u64::from(weight(i))).sum();
    if total == 0 {
        return None;
    }
    let mut roll = rng.u64(0..total);
    items.iter().position(|i| {
        let w = u64::from(weight(i));
        if roll < w {
            return true;
        }
        roll -= w;
        false
    })
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
            let items: Vec<(usize, u32)> = weights.iter().copied().enumerate().collect();
            let t: u32 = weights.iter().sum();
            let n = 10_000;
            let mut got = vec![0u32; weights.len()];
            for _ in 0..n {
                got[pick(&items, |i| i.1, &mut rng).unwrap().0] += 1;
            }
            for (w, g) in weights.iter().zip(&got) {
                let want = f64::from(*w) / f64::from(t) * 100.0;
                let share = f64::from(*g) / f64::from(n) * 100.0;
                assert!((share - want).abs() < 1.5, "{weights:?}: {got:?}");
            }
        }
        assert_eq!(pick(&[0u32, 0], |w| *w, &mut rng), None);
        assert_eq!(pick(&[0u32, 5], |w| *w, &mut rng), Some(&5));
        assert_eq!(pick::<u32>(&[], |w| *w, &mut rng), None);
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
