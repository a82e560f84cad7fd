//! The one percentile definition every benchmark reports with, so that
//! figures from different tools compare: **nearest rank**. The p-th
//! percentile of n samples is the smallest sample such that at least p % of
//! the samples are less than or equal to it, i.e. the ⌈p/100 · n⌉-th
//! smallest (the first for p = 0). It is always one of the samples (never an
//! interpolation), p100 is the maximum, and with 100 samples p99 is the
//! 99th smallest. `scripts/rusty-celery-bench` computes the same. The benchmarks
//! (`celeriac-bench`) and the dashboard's overview report with it.

/// Measurements (latencies, lateness), sorted once, to read percentiles from.
#[derive(Debug, Clone, Default)]
pub struct Samples(Vec<f64>);

impl Samples {
    /// Sorts `values` (NaN, which no measurement yields, sorts last).
    pub fn new(mut values: Vec<f64>) -> Samples {
        values.sort_by(f64::total_cmp);
        Samples(values)
    }

    /// How many samples there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The nearest-rank `p`-th percentile (`p` in 0..=100, clamped), or
    /// `None` without samples.
    pub fn percentile(&self, p: f64) -> Option<f64> {
        let n = self.0.len();
        if n == 0 {
            return None;
        }
        let exact = p.clamp(0.0, 100.0) / 100.0 * n as f64;
        // 0.07 × 100 gives 7.000000000000001: a rank a rounding error above a
        // whole number is that number.
        let rank = (exact - exact * 1e-12).ceil() as usize;
        self.0.get(rank.clamp(1, n) - 1).copied()
    }

    /// The largest sample.
    pub fn max(&self) -> Option<f64> {
        self.0.last().copied()
    }

    /// The arithmetic mean.
    pub fn mean(&self) -> Option<f64> {
        (!self.0.is_empty()).then(|| self.0.iter().sum::<f64>() / self.0.len() as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::Samples;

    fn one_to(n: u32) -> Samples {
        // Reversed, to check the sorting too.
        Samples::new((1..=n).rev().map(f64::from).collect())
    }

    #[test]
    fn percentile_is_the_nearest_rank() {
        let s = one_to(100);
        assert_eq!(s.percentile(50.0), Some(50.0));
        assert_eq!(s.percentile(99.0), Some(99.0));
        assert_eq!(s.percentile(99.5), Some(100.0));
        assert_eq!(s.percentile(100.0), Some(100.0));
        assert_eq!(s.percentile(1.0), Some(1.0));
        assert_eq!(s.percentile(0.0), Some(1.0));
        // 0.07 × 100 is not exactly 7 in floating point.
        assert_eq!(s.percentile(7.0), Some(7.0));
        assert_eq!(s.percentile(29.0), Some(29.0));
    }

    #[test]
    fn percentile_rounds_the_rank_up() {
        // 10 samples: p50 is the 5th, p99 the 10th (9.9 rounds up), p91 the 10th.
        let s = one_to(10);
        assert_eq!(s.percentile(50.0), Some(5.0));
        assert_eq!(s.percentile(51.0), Some(6.0));
        assert_eq!(s.percentile(90.0), Some(9.0));
        assert_eq!(s.percentile(91.0), Some(10.0));
        assert_eq!(s.percentile(99.0), Some(10.0));
        // 3 samples: at least half of them are ≤ the 2nd.
        let s = Samples::new(vec![30.0, 10.0, 20.0]);
        assert_eq!(s.percentile(50.0), Some(20.0));
        assert_eq!(s.percentile(33.0), Some(10.0));
        assert_eq!(s.percentile(34.0), Some(20.0));
    }

    #[test]
    fn percentile_of_one_sample_and_of_none() {
        let s = Samples::new(vec![4.5]);
        for p in [0.0, 50.0, 99.0, 100.0] {
            assert_eq!(s.percentile(p), Some(4.5));
        }
        let none = Samples::new(Vec::new());
        assert_eq!(none.percentile(50.0), None);
        assert_eq!(none.max(), None);
        assert_eq!(none.mean(), None);
        assert_eq!(none.len(), 0);
    }

    #[test]
    fn percentile_clamps_p_and_is_always_a_sample() {
        let s = one_to(7);
        assert_eq!(s.percentile(-5.0), Some(1.0));
        assert_eq!(s.percentile(250.0), Some(7.0));
        for p in 0..=100 {
            let v = s.percentile(f64::from(p)).unwrap_or(f64::NAN);
            assert!(v.fract() == 0.0 && (1.0..=7.0).contains(&v), "p{p}: {v}");
            // At least p % of the samples are ≤ it; fewer are ≤ the one before.
            let at_or_below = (1..=7).filter(|&x| f64::from(x) <= v).count() as f64;
            assert!(at_or_below / 7.0 * 100.0 >= f64::from(p), "p{p}: {v}");
            assert!(v == 1.0 || (at_or_below - 1.0) / 7.0 * 100.0 < f64::from(p));
        }
    }

    #[test]
    fn max_mean_and_len() {
        let s = one_to(4);
        assert_eq!(s.max(), Some(4.0));
        assert_eq!(s.mean(), Some(2.5));
        assert_eq!(s.len(), 4);
    }
}
