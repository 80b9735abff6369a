//! Latency samples and their percentiles.

use std::time::Duration;

/// Latencies in microseconds (u32: an hour fits, and a million samples stay at 4 MB).
#[derive(Debug, Clone, Default)]
pub struct Latencies {
    micros: Vec<u32>,
    sorted: bool,
}

impl Latencies {
    pub fn push(&mut self, d: Duration) {
        self.micros
            .push(d.as_micros().min(u128::from(u32::MAX)) as u32);
        self.sorted = false;
    }

    pub fn extend(&mut self, other: Latencies) {
        self.micros.extend(other.micros);
        self.sorted = false;
    }

    pub fn len(&self) -> usize {
        self.micros.len()
    }

    pub fn is_empty(&self) -> bool {
        self.micros.is_empty()
    }

    /// The `p` quantile (0.0-1.0) in milliseconds; NaN without samples.
    pub fn percentile_ms(&mut self, p: f64) -> f64 {
        if self.micros.is_empty() {
            return f64::NAN;
        }
        if !self.sorted {
            self.micros.sort_unstable();
            self.sorted = true;
        }
        let index = ((self.micros.len() - 1) as f64 * p).round() as usize;
        f64::from(self.micros[index]) / 1000.0
    }
}

/// Requests per second, p50 and p99 of one measurement, with its error count.
#[derive(Debug, Clone, Copy)]
pub struct Row {
    /// Requests answered (the basis of the per-request CPU rows).
    pub requests: u64,
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub errors: u64,
}

impl Row {
    pub fn from_latencies(mut latencies: Latencies, elapsed: Duration, errors: u64) -> Row {
        Row {
            requests: latencies.len() as u64,
            rps: latencies.len() as f64 / elapsed.as_secs_f64(),
            p50_ms: latencies.percentile_ms(0.50),
            p99_ms: latencies.percentile_ms(0.99),
            errors,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_the_nearest_rank() {
        let mut l = Latencies::default();
        assert!(l.percentile_ms(0.5).is_nan());
        for us in (1..=100).rev() {
            l.push(Duration::from_micros(us * 10));
        }
        assert_eq!(l.percentile_ms(0.0), 0.01);
        assert_eq!(l.percentile_ms(0.5), 0.51);
        assert_eq!(l.percentile_ms(0.99), 0.99);
        assert_eq!(l.percentile_ms(1.0), 1.0);
    }
}
