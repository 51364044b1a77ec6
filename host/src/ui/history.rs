//! The per-minute counts behind the console's plots: every few seconds each
//! node adds the deliveries and failed attempts it made since the last time
//! to its own rows of `minute_counts`, per connector and minute. The plots
//! sum the nodes, so they show the cluster and survive restarts. Counts
//! older than `console.history_days` are deleted.
//!
//! What a node saw in its last few seconds before a crash, or before this
//! task was restarted after a panic, is lost from the plots (never from the
//! queue).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::queue::now_ms;
use crate::registry::Registry;
use crate::store::Store;

/// How often a node writes what it counted.
pub const RECORD_EVERY: Duration = Duration::from_secs(5);
/// How often counts past the history are deleted.
const PURGE_EVERY: Duration = Duration::from_secs(3600);

/// Writes this node's counts until `stop`, then once more: stop it after
/// the dispatcher has drained, so the last attempts are in the plots.
pub async fn record(
    store: Arc<dyn Store>,
    registry: Registry,
    history_days: u32,
    mut stop: watch::Receiver<bool>,
) {
    // What the entries counted before this task (re)started was written
    // by its previous run, or is lost with it: never count it twice.
    let mut last: HashMap<String, (u64, u64)> = registry
        .entries()
        .iter()
        .map(|e| (e.name().to_string(), e.metrics().outcome_totals()))
        .collect();
    let mut pending: HashMap<(String, i64), (i64, i64)> = HashMap::new();
    let mut purged_at = None::<tokio::time::Instant>;
    loop {
        let stopping = tokio::select! {
            _ = tokio::time::sleep(RECORD_EVERY) => false,
            _ = stop.wait_for(|s| *s) => true,
        };
        let minute = now_ms().div_euclid(60_000);
        for entry in registry.entries() {
            let (delivered, failed) = entry.metrics().outcome_totals();
            let before = last.insert(entry.name().to_string(), (delivered, failed));
            let (d0, f0) = before.unwrap_or((0, 0));
            let (d, f) = (delivered.saturating_sub(d0), failed.saturating_sub(f0));
            if d + f > 0 {
                let slot = pending
                    .entry((entry.name().to_string(), minute))
                    .or_default();
                slot.0 += d as i64;
                slot.1 += f as i64;
            }
        }
        let rows: Vec<_> = pending
            .iter()
            .map(|((c, m), (d, f))| (c.clone(), *m, *d, *f))
            .collect();
        match store.catalog().add_minute_counts(&rows).await {
            Ok(()) => pending.clear(),
            // Kept and added to the next write: the plots lag, they do not lose.
            Err(e) => {
                tracing::warn!(error = %e, "cannot record the console's per-minute counts; will try again")
            }
        }
        if stopping {
            return;
        }
        if purged_at.is_none_or(|t| t.elapsed() >= PURGE_EVERY) {
            let before = minute - i64::from(history_days) * 24 * 60;
            match store.catalog().purge_minute_counts(before).await {
                Ok(_) => purged_at = Some(tokio::time::Instant::now()),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot delete old per-minute counts; will try again")
                }
            }
        }
    }
}
