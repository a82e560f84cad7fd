//! A histogram that counts with atomics only: no lock when a value is
//! observed (prometheus-client's own takes a mutex), so a worker can time
//! every task without contention between its threads.

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Bucket bounds in seconds of Python `prometheus_client`'s default
/// histogram, which celery-exporter's `celery_task_runtime` uses.
pub const DEFAULT_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// Bucket bounds in seconds for waits that run from milliseconds to hours
/// (queue waits, beat's lateness).
pub const WAIT_BUCKETS: [f64; 16] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0,
];

/// A Prometheus histogram of seconds. Cheap to clone: clones share their counts.
#[derive(Debug, Clone)]
pub struct AtomicHistogram {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Upper bounds, ascending, without the implicit `+Inf`.
    bounds: Box<[f64]>,
    /// Observations per bucket (not cumulative); the last is `+Inf`'s.
    counts: Box<[AtomicU64]>,
    /// Sum of the observations, in nanoseconds.
    sum_nanos: AtomicU64,
}

impl AtomicHistogram {
    /// A histogram with these upper bounds (seconds; non-finite ones and
    /// duplicates are dropped, `+Inf` is always there).
    pub fn new(bounds: &[f64]) -> AtomicHistogram {
        let mut bounds: Vec<f64> = bounds.iter().copied().filter(|b| b.is_finite()).collect();
        bounds.sort_by(f64::total_cmp);
        bounds.dedup();
        let counts = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        AtomicHistogram {
            inner: Arc::new(Inner {
                bounds: bounds.into_boxed_slice(),
                counts,
                sum_nanos: AtomicU64::new(0),
            }),
        }
    }

    /// A histogram with [`DEFAULT_BUCKETS`].
    pub fn runtime() -> AtomicHistogram {
        AtomicHistogram::new(&DEFAULT_BUCKETS)
    }

    /// A histogram with [`WAIT_BUCKETS`].
    pub fn wait() -> AtomicHistogram {
        AtomicHistogram::new(&WAIT_BUCKETS)
    }

    /// Counts one observation of `d`.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let bucket = self.inner.bounds.partition_point(|b| *b < secs);
        if let Some(c) = self.inner.counts.get(bucket) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.inner.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Counts one observation of `secs` seconds (negative or NaN count as 0).
    pub fn observe_secs(&self, secs: f64) {
        let secs = if secs.is_nan() { 0.0 } else { secs.max(0.0) };
        self.observe(Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX));
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.inner
            .counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }

    /// Sum of the observations, in seconds.
    pub fn sum(&self) -> f64 {
        self.inner.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9
    }
}

impl TypedMetric for AtomicHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for AtomicHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let bounds = self.inner.bounds.iter().copied().chain([f64::INFINITY]);
        let buckets: Vec<(f64, u64)> = bounds
            .zip(self.inner.counts.iter().map(|c| c.load(Ordering::Relaxed)))
            .collect();
        // The count is the buckets' total, so `_count` always equals the
        // `+Inf` bucket even while observations land during the scrape.
        let count = buckets.iter().map(|(_, n)| n).sum();
        encoder.encode_histogram::<NoLabelSet>(self.sum(), count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::registry::Registry;

    #[test]
    fn observations_land_in_their_buckets() {
        let h = AtomicHistogram::new(&[0.1, 1.0, f64::INFINITY, 0.1]);
        h.observe(Duration::from_millis(50));
        h.observe(Duration::from_millis(100));
        h.observe(Duration::from_millis(500));
        h.observe_secs(7.0);
        h.observe_secs(-1.0);
        assert_eq!(h.count(), 5);
        assert!((h.sum() - 7.65).abs() < 1e-9, "{}", h.sum());
        let mut registry = Registry::default();
        registry.register("wait", "A wait", h.clone());
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &registry)
            .expect("encodes");
        assert!(text.contains("# TYPE wait histogram"), "{text}");
        assert!(text.contains("wait_bucket{le=\"0.1\"} 3\n"), "{text}");
        assert!(text.contains("wait_bucket{le=\"1\"} 4\n"), "{text}");
        assert!(text.contains("wait_bucket{le=\"+Inf\"} 5\n"), "{text}");
        assert!(text.contains("wait_count 5\n"), "{text}");
        assert_eq!(text.matches("le=\"+Inf\"").count(), 1, "{text}");
    }
}
