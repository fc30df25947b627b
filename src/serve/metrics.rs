//! Counters for `/metrics`, in the Prometheus text format: decisions by
//! endpoint, verdict and reason, a decision-latency histogram, refused
//! requests by status, handshake failures and policy reloads. Lock-light:
//! the histogram is atomics, the labelled counters one short mutex.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds. A decision takes
/// microseconds; the top buckets show a server in trouble.
const BUCKETS: [f64; 12] = [
    0.000_05, 0.0001, 0.000_25, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 1.0,
];

/// The server's counters, shared by every connection; rendered on each
/// scrape of `/metrics`.
#[derive(Default)]
pub struct Metrics {
    decisions: Mutex<BTreeMap<(&'static str, &'static str, &'static str), u64>>,
    refused: Mutex<BTreeMap<u16, u64>>,
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_nanos: AtomicU64,
    /// Connections that failed or timed out in the TLS handshake.
    pub handshake_failures: AtomicU64,
    /// SIGHUP reloads that took effect.
    pub reloads_ok: AtomicU64,
    /// SIGHUP reloads refused; the previous policy stayed.
    pub reloads_failed: AtomicU64,
}

impl Metrics {
    /// Counts one answered review: `verdict` is `allow` or `deny`, `reason`
    /// an [`Outcome`](crate::policy::Outcome) code, `took` from the complete
    /// body to the answer.
    pub fn decision(
        &self,
        endpoint: &'static str,
        verdict: &'static str,
        reason: &'static str,
        took: Duration,
    ) {
        if let Ok(mut map) = self.decisions.lock() {
            *map.entry((endpoint, verdict, reason)).or_default() += 1;
        }
        let secs = took.as_secs_f64();
        for (bound, counter) in BUCKETS.iter().zip(&self.buckets) {
            if secs <= *bound {
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// A request answered with an error status instead of a decision.
    pub fn refused(&self, status: u16) {
        if let Ok(mut map) = self.refused.lock() {
            *map.entry(status).or_default() += 1;
        }
    }

    /// Every counter in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# HELP staticpin_serve_decisions_total Review decisions, by endpoint, verdict and reason.");
        let _ = writeln!(out, "# TYPE staticpin_serve_decisions_total counter");
        if let Ok(map) = self.decisions.lock() {
            for ((endpoint, verdict, reason), n) in map.iter() {
                let _ = writeln!(
                    out,
                    "staticpin_serve_decisions_total{{endpoint=\"{endpoint}\",verdict=\"{verdict}\",reason=\"{reason}\"}} {n}"
                );
            }
        }
        let _ = writeln!(out, "# HELP staticpin_serve_decision_duration_seconds Time from a complete request body to its answer.");
        let _ = writeln!(
            out,
            "# TYPE staticpin_serve_decision_duration_seconds histogram"
        );
        for (bound, counter) in BUCKETS.iter().zip(&self.buckets) {
            let _ = writeln!(
                out,
                "staticpin_serve_decision_duration_seconds_bucket{{le=\"{bound}\"}} {}",
                counter.load(Ordering::Relaxed)
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "staticpin_serve_decision_duration_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "staticpin_serve_decision_duration_seconds_sum {sum}");
        let _ = writeln!(
            out,
            "staticpin_serve_decision_duration_seconds_count {count}"
        );
        let _ = writeln!(out, "# HELP staticpin_serve_refused_requests_total Requests answered with an error status, by status.");
        let _ = writeln!(out, "# TYPE staticpin_serve_refused_requests_total counter");
        if let Ok(map) = self.refused.lock() {
            for (code, n) in map.iter() {
                let _ = writeln!(
                    out,
                    "staticpin_serve_refused_requests_total{{code=\"{code}\"}} {n}"
                );
            }
        }
        let _ = writeln!(out, "# HELP staticpin_serve_tls_handshake_failures_total Connections that failed or timed out in the TLS handshake (no or untrusted client certificate, plain HTTP).");
        let _ = writeln!(
            out,
            "# TYPE staticpin_serve_tls_handshake_failures_total counter"
        );
        let _ = writeln!(
            out,
            "staticpin_serve_tls_handshake_failures_total {}",
            self.handshake_failures.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP staticpin_serve_policy_reloads_total Reloads on SIGHUP, by result."
        );
        let _ = writeln!(out, "# TYPE staticpin_serve_policy_reloads_total counter");
        let _ = writeln!(
            out,
            "staticpin_serve_policy_reloads_total{{result=\"ok\"}} {}",
            self.reloads_ok.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "staticpin_serve_policy_reloads_total{{result=\"failed\"}} {}",
            self.reloads_failed.load(Ordering::Relaxed)
        );
        out
    }
}
