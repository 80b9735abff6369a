//! Prometheus text exposition, hand-written: a few counters and one latency histogram.
//! Labels come from bounded sets (outcome and reason enums), never from object names.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds in seconds; admission should sit well under a millisecond.
const BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0,
];

#[derive(Default)]
struct Histogram {
    counts: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl Histogram {
    fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        for (bound, count) in BUCKETS.iter().zip(&self.counts) {
            if secs <= *bound {
                count.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_nanos
            .fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
    }
}

#[derive(Default)]
pub struct Metrics {
    admissions: Mutex<BTreeMap<(&'static str, String), u64>>,
    mutate_latency: Histogram,
    validate_latency: Histogram,
    reconciles: Mutex<BTreeMap<&'static str, u64>>,
    reconcile_errors: Mutex<BTreeMap<&'static str, u64>>,
    tls_reloads: Mutex<BTreeMap<&'static str, u64>>,
    certificates: Mutex<BTreeMap<&'static str, u64>>,
    leader: AtomicU64,
}

fn bump<K: Ord>(map: &Mutex<BTreeMap<K, u64>>, key: K) {
    *map.lock().expect("metrics lock").entry(key).or_default() += 1;
}

impl Metrics {
    /// `webhook` is "mutate-pods" or "validate-virtualmachines"; `outcome` a bounded label.
    pub fn admission(&self, webhook: &'static str, outcome: &str, took: Duration) {
        bump(&self.admissions, (webhook, outcome.to_owned()));
        match webhook {
            "mutate-pods" => self.mutate_latency.observe(took),
            _ => self.validate_latency.observe(took),
        }
    }

    pub fn reconcile(&self, result: &'static str) {
        bump(&self.reconciles, result);
    }

    pub fn reconcile_error(&self, reason: &'static str) {
        bump(&self.reconcile_errors, reason);
    }

    /// Whether this replica holds the controller's leader Lease.
    pub fn leader(&self, leading: bool) {
        self.leader.store(u64::from(leading), Ordering::Relaxed);
    }

    pub fn tls_reload(&self, result: &'static str) {
        bump(&self.tls_reloads, result);
    }

    /// A sidecar certificate request answered, by outcome (signed, refused, ...).
    pub fn certificate(&self, outcome: &'static str) {
        bump(&self.certificates, outcome);
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP kubevirt_bmc_admission_total Admission reviews answered, by webhook and outcome.\n# TYPE kubevirt_bmc_admission_total counter\n");
        for ((webhook, outcome), n) in self.admissions.lock().expect("metrics lock").iter() {
            let _ = writeln!(
                out,
                "kubevirt_bmc_admission_total{{webhook=\"{webhook}\",outcome=\"{outcome}\"}} {n}"
            );
        }
        out.push_str("# HELP kubevirt_bmc_admission_duration_seconds Time to decide one admission review.\n# TYPE kubevirt_bmc_admission_duration_seconds histogram\n");
        for (webhook, h) in [
            ("mutate-pods", &self.mutate_latency),
            ("validate-virtualmachines", &self.validate_latency),
        ] {
            for (bound, count) in BUCKETS.iter().zip(&h.counts) {
                let _ = writeln!(
                    out,
                    "kubevirt_bmc_admission_duration_seconds_bucket{{webhook=\"{webhook}\",le=\"{bound}\"}} {}",
                    count.load(Ordering::Relaxed)
                );
            }
            let count = h.count.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "kubevirt_bmc_admission_duration_seconds_bucket{{webhook=\"{webhook}\",le=\"+Inf\"}} {count}"
            );
            let _ = writeln!(
                out,
                "kubevirt_bmc_admission_duration_seconds_sum{{webhook=\"{webhook}\"}} {}",
                h.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9
            );
            let _ = writeln!(
                out,
                "kubevirt_bmc_admission_duration_seconds_count{{webhook=\"{webhook}\"}} {count}"
            );
        }
        for (name, help, label, map) in [
            (
                "kubevirt_bmc_reconcile_total",
                "VM reconciles, by result.",
                "result",
                &self.reconciles,
            ),
            (
                "kubevirt_bmc_reconcile_errors_total",
                "Failed VM reconciles, by reason.",
                "reason",
                &self.reconcile_errors,
            ),
            (
                "kubevirt_bmc_certificate_requests_total",
                "Sidecar serving certificate requests, by outcome.",
                "outcome",
                &self.certificates,
            ),
            (
                "kubevirt_bmc_tls_reload_total",
                "Serving certificate reloads, by result.",
                "result",
                &self.tls_reloads,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (value, n) in map.lock().expect("metrics lock").iter() {
                let _ = writeln!(out, "{name}{{{label}=\"{value}\"}} {n}");
            }
        }
        let _ = writeln!(
            out,
            "# HELP kubevirt_bmc_leader 1 while this replica holds the controller's leader Lease.\n# TYPE kubevirt_bmc_leader gauge\nkubevirt_bmc_leader {}",
            self.leader.load(Ordering::Relaxed)
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_cumulative_buckets() {
        let m = Metrics::default();
        m.admission("mutate-pods", "injected", Duration::from_micros(300));
        m.admission("mutate-pods", "injected", Duration::from_millis(3));
        m.reconcile("ok");
        let text = m.render();
        assert!(text.contains(
            "kubevirt_bmc_admission_total{webhook=\"mutate-pods\",outcome=\"injected\"} 2"
        ));
        assert!(text.contains(
            "kubevirt_bmc_admission_duration_seconds_bucket{webhook=\"mutate-pods\",le=\"0.0005\"} 1"
        ));
        assert!(text.contains(
            "kubevirt_bmc_admission_duration_seconds_bucket{webhook=\"mutate-pods\",le=\"0.005\"} 2"
        ));
        assert!(
            text.contains(
                "kubevirt_bmc_admission_duration_seconds_count{webhook=\"mutate-pods\"} 2"
            )
        );
        assert!(text.contains("kubevirt_bmc_reconcile_total{result=\"ok\"} 1"));
    }
}
