//! Order statistics over timings and ratios.

/// The q-quantile (0 ≤ q ≤ 1) by the nearest-rank method; `None` for no samples. Samples
/// must be ordered (timings; finite ratios).
pub fn quantile<T: Copy + PartialOrd>(samples: &[T], q: f64) -> Option<T> {
    if samples.is_empty() {
        return None;
    }
    let mut s = samples.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let rank = (q.clamp(0.0, 1.0) * s.len() as f64).ceil() as usize;
    Some(s[rank.saturating_sub(1).min(s.len() - 1)])
}

pub fn median<T: Copy + PartialOrd>(samples: &[T]) -> Option<T> {
    quantile(samples, 0.5)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ms(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|&x| Duration::from_millis(x)).collect()
    }

    #[test]
    fn nearest_rank_quantiles() {
        let s = ms(&[5, 1, 4, 2, 3]);
        assert_eq!(median(&s), Some(Duration::from_millis(3)));
        assert_eq!(quantile(&s, 0.9), Some(Duration::from_millis(5)));
        assert_eq!(quantile(&s, 0.0), Some(Duration::from_millis(1)));
        let ten = ms(&[10, 9, 8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(quantile(&ten, 0.9), Some(Duration::from_millis(9)));
        assert_eq!(median::<Duration>(&[]), None);
        // Ratios: the same rule (the lower of two middle values).
        assert_eq!(median(&[1.5, 1.2, 1.4, 1.6]), Some(1.4));
    }
}
