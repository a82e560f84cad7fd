//! Summaries of the benchmarks' figures. Percentiles are
//! [`celeriac_common::stats::Samples`]'s nearest rank, the one definition
//! every benchmark and the dashboard report with.

pub(crate) use celeriac_common::stats::Samples;

/// The median of a few whole-run figures (the bench's rounds), the mean of
/// the middle two for an even count: a summary of runs, not a percentile of
/// samples, so that two rounds give their midpoint. NaN without values.
pub(crate) fn median(values: Vec<f64>) -> f64 {
    let mut v = values;
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(Vec::new()).is_nan());
    }
}
