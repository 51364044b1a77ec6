//! Prometheus metrics, rendered in the text exposition format at `/metrics`.
//!
//! Two kinds of series, one owner each:
//! - process-wide ones (ingest requests, events, latency) live in one
//!   registry ([`global`]), as with the `prometheus` crate's default
//!   registry;
//! - a connector's own (attempts by outcome, attempt latency, deliveries
//!   expired) are a [`ConnectorMetrics`] that the connector's entry in
//!   `crate::registry` owns. `/metrics` reads them from the entries and
//!   [`render_connectors`] writes them: this module keeps no connector state.
//!
//! A series appears once it has something to count. Labels are bounded by
//! construction: connector names (from config), outcomes and status classes —
//! never an event id, key or number.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// Latency buckets in seconds: 1 ms … 30 s.
const BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, secs: f64) {
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                self.counts[i] += 1;
            }
        }
        self.count += 1;
        self.sum += secs;
    }
}

#[derive(Default)]
pub struct Metrics {
    ingest_requests: Mutex<BTreeMap<u16, u64>>,
    ingest_accepted: AtomicU64,
    ingest_duplicates: AtomicU64,
    ingest_unrouted: AtomicU64,
    ingest_latency: Mutex<Histogram>,
    /// Panics of supervised tasks, by task (`crate::supervise`).
    task_panics: Mutex<BTreeMap<String, u64>>,
}

/// One connector's series; its registry entry owns them.
#[derive(Default)]
pub struct ConnectorMetrics {
    /// By outcome: `done`, `retry`, `reject`, `busy`.
    attempts: Mutex<BTreeMap<&'static str, u64>>,
    attempt_latency: Mutex<Histogram>,
    /// Deliveries this process ended as `expired`.
    expired: AtomicU64,
    /// Deliveries that events this process accepted superseded.
    superseded: AtomicU64,
}

impl ConnectorMetrics {
    /// `outcome` is one of `done`, `retry`, `reject`, `busy`.
    pub fn attempt(&self, outcome: &'static str, latency: Duration) {
        *lock(&self.attempts).entry(outcome).or_default() += 1;
        lock(&self.attempt_latency).observe(latency.as_secs_f64());
    }

    /// Attempts this process made that delivered, and that failed (to be
    /// retried or rejected), since it started.
    pub fn outcome_totals(&self) -> (u64, u64) {
        let a = lock(&self.attempts);
        let n = |k: &str| a.get(k).copied().unwrap_or(0);
        (n("done"), n("retry") + n("reject"))
    }

    /// Deliveries of this connector this process ended as `expired`.
    pub fn expired(&self, n: u64) {
        self.expired.fetch_add(n, Ordering::Relaxed);
    }

    /// Deliveries of this connector that newer full-state events accepted
    /// by this process superseded (coalescing).
    pub fn superseded(&self, n: u64) {
        self.superseded.fetch_add(n, Ordering::Relaxed);
    }
}

pub fn global() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(Metrics::default)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Metrics {
    pub fn ingest(
        &self,
        status: u16,
        latency: Duration,
        accepted: u64,
        duplicates: u64,
        unrouted: u64,
    ) {
        *lock(&self.ingest_requests).entry(status).or_default() += 1;
        lock(&self.ingest_latency).observe(latency.as_secs_f64());
        self.ingest_accepted.fetch_add(accepted, Ordering::Relaxed);
        self.ingest_duplicates
            .fetch_add(duplicates, Ordering::Relaxed);
        self.ingest_unrouted.fetch_add(unrouted, Ordering::Relaxed);
    }

    /// A supervised task (`crate::supervise`) panicked and is started again.
    pub fn task_panicked(&self, task: &str) {
        *lock(&self.task_panics).entry(task.to_string()).or_default() += 1;
    }

    /// The process-wide part of the exposition.
    pub fn render(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP switchboard_ingest_requests_total Ingest requests by HTTP status."
        );
        let _ = writeln!(out, "# TYPE switchboard_ingest_requests_total counter");
        for (status, n) in lock(&self.ingest_requests).iter() {
            let _ = writeln!(
                out,
                "switchboard_ingest_requests_total{{status=\"{status}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP switchboard_ingest_events_total Events posted, by result."
        );
        let _ = writeln!(out, "# TYPE switchboard_ingest_events_total counter");
        for (result, v) in [
            ("accepted", &self.ingest_accepted),
            ("duplicate", &self.ingest_duplicates),
            ("unrouted", &self.ingest_unrouted),
        ] {
            let _ = writeln!(
                out,
                "switchboard_ingest_events_total{{result=\"{result}\"}} {}",
                v.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP switchboard_ingest_duration_seconds Ingest request latency, commit included."
        );
        let _ = writeln!(out, "# TYPE switchboard_ingest_duration_seconds histogram");
        histogram(
            out,
            "switchboard_ingest_duration_seconds",
            "",
            &lock(&self.ingest_latency),
        );
        let _ = writeln!(
            out,
            "# HELP switchboard_task_panics_total Gateway tasks that panicked and were started again (a bug), by task."
        );
        let _ = writeln!(out, "# TYPE switchboard_task_panics_total counter");
        for (task, n) in lock(&self.task_panics).iter() {
            let _ = writeln!(
                out,
                "switchboard_task_panics_total{{task=\"{}\"}} {n}",
                escape(task)
            );
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let _ = writeln!(
                out,
                "# HELP switchboard_runtime_workers Threads serving HTTP, dispatch and connectors (server.workers)."
            );
            let _ = writeln!(out, "# TYPE switchboard_runtime_workers gauge");
            let workers = runtime.metrics().num_workers();
            let _ = writeln!(out, "switchboard_runtime_workers {workers}");
        }
    }
}

/// The per-connector part of the exposition: `connectors` are each
/// connector's name and series, in the order they are to appear.
pub fn render_connectors(out: &mut String, connectors: &[(&str, &ConnectorMetrics)]) {
    let _ = writeln!(
        out,
        "# HELP switchboard_attempts_total Delivery attempts by connector and outcome."
    );
    let _ = writeln!(out, "# TYPE switchboard_attempts_total counter");
    for (c, m) in connectors {
        for (outcome, n) in lock(&m.attempts).iter() {
            let _ = writeln!(
                out,
                "switchboard_attempts_total{{connector=\"{}\",outcome=\"{outcome}\"}} {n}",
                escape(c)
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP switchboard_attempt_duration_seconds Delivery attempt latency by connector."
    );
    let _ = writeln!(out, "# TYPE switchboard_attempt_duration_seconds histogram");
    for (c, m) in connectors {
        let h = lock(&m.attempt_latency);
        if h.count > 0 {
            let label = format!("connector=\"{}\",", escape(c));
            histogram(out, "switchboard_attempt_duration_seconds", &label, &h);
        }
    }
    for (name, help, count) in [
        (
            "switchboard_deliveries_expired_total",
            "Deliveries ended unstarted by their route's expire_after.",
            (|m| &m.expired) as fn(&ConnectorMetrics) -> &AtomicU64,
        ),
        (
            "switchboard_deliveries_superseded_total",
            "Deliveries not started that a newer full-state event superseded (coalescing).",
            |m| &m.superseded,
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} counter");
        for (c, m) in connectors {
            let n = count(m).load(Ordering::Relaxed);
            if n > 0 {
                let _ = writeln!(out, "{name}{{connector=\"{}\"}} {n}", escape(c));
            }
        }
    }
}

fn histogram(out: &mut String, name: &str, labels: &str, h: &Histogram) {
    for (b, n) in BUCKETS.iter().zip(h.counts) {
        let _ = writeln!(out, "{name}_bucket{{{labels}le=\"{b}\"}} {n}");
    }
    let _ = writeln!(out, "{name}_bucket{{{labels}le=\"+Inf\"}} {}", h.count);
    let trimmed = labels.trim_end_matches(',');
    let braces = if trimmed.is_empty() {
        String::new()
    } else {
        format!("{{{trimmed}}}")
    };
    let _ = writeln!(out, "{name}_sum{braces} {}", h.sum);
    let _ = writeln!(out, "{name}_count{braces} {}", h.count);
}

/// Escapes a label value (backslash, quote, newline).
pub fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
