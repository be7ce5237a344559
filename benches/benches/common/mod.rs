//! Shared by every criterion suite.

use std::time::Duration;

use criterion::Criterion;

/// Short measurement windows (`measurement`, `samples`) after a 0.5 s warm-up:
/// `benches/run.sh` runs every suite in a few minutes.
pub fn short_config(measurement: Duration, samples: usize) -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(measurement)
        .sample_size(samples)
}
