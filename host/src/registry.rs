//! One record per connector: what this node holds of a connector while it
//! runs, in one [`ConnectorEntry`] found by name in the [`Registry`].
//!
//! An entry holds the connector's dispatch policy and sandbox settings (from
//! its config in force), the component version its attempts run in, the
//! waker of its dispatch loop, its breaker, and its series on `/metrics`.
//! The fleet adds and reconfigures entries, the connector runtime installs
//! components into them and runs attempts from them, the dispatcher drives
//! the breaker and counts, and the API and `/metrics` read them.
//!
//! Invariants:
//! - The registry is the single owner: everyone else holds an `Arc` of an
//!   entry, or a clone of the `Registry` handle. An entry is never removed or
//!   replaced, so an `Arc` taken once stays the connector's record for the
//!   life of the process.
//! - Every part of an entry changes in place behind its own lock, held for
//!   no `await`. A new policy or sandbox, or a new component, is a new `Arc`:
//!   attempts that already started keep the ones they started with.
//! - The breaker always has the entry's policy (thresholds, probe intervals,
//!   and concurrency, until the dispatcher applies an operator's override):
//!   [`Registry::configure`] hands both over together. Only the
//!   dispatcher moves it, and every move that can change its state
//!   ([`ConnectorEntry::on_start`], [`ConnectorEntry::on_result`],
//!   [`ConnectorEntry::adopt`]) returns a [`BreakerMove`], so the dispatcher
//!   sees each change of its coarse state (to log, share and record it).
//! - The breaker and the counters are this node's. Nodes sharing a store
//!   agree on open or closed through the store (`store::Cluster`), never
//!   through here.
//!
//! Not here, on purpose: the configs themselves and the route table built
//! from all of them (the fleet's, switched together for ingest), and the
//! dispatch loop's working state that no one else reads (its rate bucket,
//! the limits in force after operator overrides, the attempts in flight).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use switchboard_sandbox::{Component, Sandbox, SecretHeader};
use tokio::sync::{watch, Notify};

use crate::config::ConnectorConfig;
use crate::metrics::ConnectorMetrics;
use crate::queue::breaker::{Breaker, BreakerPolicy, BreakerState, SharedHealth};
use crate::queue::retry::RetryPolicy;
use crate::queue::{Millis, OnDead};

/// What the dispatcher needs to know about one connector.
#[derive(Debug, Clone)]
pub struct ConnectorPolicy {
    pub name: String,
    pub concurrency: usize,
    /// Attempts started per second at most; `None` for unlimited.
    pub rate: Option<f64>,
    pub retry: RetryPolicy,
    pub breaker: BreakerPolicy,
    pub on_dead: OnDead,
    /// Upper bound of one attempt; the attempt is abandoned as a retry after it.
    pub attempt_timeout: Duration,
}

impl ConnectorPolicy {
    /// The dispatcher's view of a connector's config.
    pub fn of(c: &ConnectorConfig) -> Self {
        Self {
            name: c.name.clone(),
            concurrency: c.concurrency,
            rate: c.rate,
            retry: c.retry.clone(),
            breaker: c.breaker.clone(),
            on_dead: c.on_dead,
            attempt_timeout: Duration::from_millis(c.limits.deadline_ms),
        }
    }
}

/// One move of a connector's breaker: its state before and after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerMove {
    pub before: BreakerState,
    pub after: BreakerState,
}

impl BreakerMove {
    /// The coarse states (`closed`, `open`, `probing`) it went from and to,
    /// if they differ: the changes the other nodes follow and the store's
    /// breaker log records.
    pub fn transition(&self) -> Option<(&'static str, &'static str)> {
        let (from, to) = (self.before.name(), self.after.name());
        (from != to).then_some((from, to))
    }
}

/// Everything this node holds of one connector.
pub struct ConnectorEntry {
    name: String,
    /// The policy in force; the dispatch loop subscribes to its changes.
    policy: watch::Sender<Arc<ConnectorPolicy>>,
    sandbox: RwLock<Arc<Sandbox>>,
    /// The active component version; `None` until one is deployed.
    component: RwLock<Option<Component>>,
    /// Wakes the connector's dispatch loop: new work may be ready.
    waker: Notify,
    breaker: Mutex<Breaker>,
    /// The breaker has judged an attempt here or taken in another node's
    /// change; until then the API shows none.
    judged: AtomicBool,
    /// Another node announced a change of the shared breaker: the loop
    /// reads the cluster's state now rather than at its next refresh.
    shared_changed: AtomicBool,
    metrics: ConnectorMetrics,
}

impl ConnectorEntry {
    fn new(policy: ConnectorPolicy, sandbox: Sandbox) -> Self {
        Self {
            name: policy.name.clone(),
            breaker: Mutex::new(Breaker::new(policy.breaker.clone(), policy.concurrency)),
            policy: watch::Sender::new(Arc::new(policy)),
            sandbox: RwLock::new(Arc::new(sandbox)),
            component: RwLock::new(None),
            waker: Notify::new(),
            judged: AtomicBool::new(false),
            shared_changed: AtomicBool::new(false),
            metrics: ConnectorMetrics::default(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The policy in force.
    pub fn policy(&self) -> Arc<ConnectorPolicy> {
        self.policy.borrow().clone()
    }

    /// Tells of each new policy from now on.
    pub fn policy_updates(&self) -> watch::Receiver<Arc<ConnectorPolicy>> {
        self.policy.subscribe()
    }

    /// What an attempt may do (allowed hosts, config, secret headers, limits).
    pub fn sandbox(&self) -> Arc<Sandbox> {
        read(&self.sandbox).clone()
    }

    /// The version new attempts run; `None` until one is deployed.
    pub fn component(&self) -> Option<Component> {
        read(&self.component).clone()
    }

    /// Makes `component` the version new attempts run; returns the one it
    /// replaced.
    pub fn install(&self, component: Component) -> Option<Component> {
        write(&self.component).replace(component)
    }

    /// Wakes the dispatch loop (a permit is kept if it is not waiting).
    pub fn wake(&self) {
        self.waker.notify_one();
    }

    /// Until [`wake`](Self::wake).
    pub async fn woken(&self) {
        self.waker.notified().await;
    }

    /// Another node changed the connector's shared state (its breaker):
    /// wakes the loop, which reads it at once.
    pub fn shared_changed(&self) {
        self.shared_changed.store(true, Ordering::Release);
        self.wake();
    }

    /// Whether [`shared_changed`](Self::shared_changed) was called since
    /// the last time this was asked.
    pub fn take_shared_changed(&self) -> bool {
        self.shared_changed.swap(false, Ordering::AcqRel)
    }

    /// The breaker, for the dispatcher's reads (`permits`, `next_probe_at`)
    /// and for operator limits (`set_concurrency`).
    pub fn breaker(&self) -> MutexGuard<'_, Breaker> {
        lock(&self.breaker)
    }

    /// An attempt starts ([`Breaker::on_start`]): a due probe moves an open
    /// breaker to probing.
    pub fn on_start(&self, now: Millis) -> BreakerMove {
        self.move_breaker(|b| b.on_start(now))
    }

    /// An attempt ended ([`Breaker::on_result`]); `healthy` is false only
    /// for transient failures.
    pub fn on_result(&self, healthy: bool, now: Millis) -> BreakerMove {
        self.judged.store(true, Ordering::Relaxed);
        self.move_breaker(|b| b.on_result(healthy, now))
    }

    /// Takes in the breaker state the nodes sharing the store published
    /// ([`Breaker::adopt`]).
    pub fn adopt(&self, shared: SharedHealth) -> BreakerMove {
        let moved = self.move_breaker(|b| b.adopt(shared));
        if moved.transition().is_some() {
            self.judged.store(true, Ordering::Relaxed);
        }
        moved
    }

    fn move_breaker(&self, f: impl FnOnce(&mut Breaker)) -> BreakerMove {
        let mut b = lock(&self.breaker);
        let before = b.state();
        f(&mut b);
        BreakerMove {
            before,
            after: b.state(),
        }
    }

    /// The breaker as the API shows it: `None` until it has judged an
    /// attempt here or followed another node.
    pub fn breaker_state(&self) -> Option<BreakerState> {
        let b = lock(&self.breaker);
        self.judged.load(Ordering::Relaxed).then(|| b.state())
    }

    pub fn metrics(&self) -> &ConnectorMetrics {
        &self.metrics
    }
}

/// Connector name → its entry, in name order. Cloning gives another handle
/// on the same entries.
#[derive(Clone, Default)]
pub struct Registry {
    entries: Arc<RwLock<BTreeMap<String, Arc<ConnectorEntry>>>>,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// A registry of `policies`, each with default sandbox settings: for a
    /// dispatcher without a connector runtime (tests, benchmarks).
    pub fn of(policies: impl IntoIterator<Item = ConnectorPolicy>) -> Self {
        let me = Self::new();
        for p in policies {
            me.set(p, Sandbox::default());
        }
        me
    }

    /// Gives `c`'s connector the settings of `c` (dispatch policy, sandbox),
    /// adding its entry if it has none. Returns the entry and whether it is
    /// new.
    pub fn configure(&self, c: &ConnectorConfig) -> (Arc<ConnectorEntry>, bool) {
        self.set(ConnectorPolicy::of(c), sandbox_of(c))
    }

    fn set(&self, policy: ConnectorPolicy, sandbox: Sandbox) -> (Arc<ConnectorEntry>, bool) {
        let mut entries = write(&self.entries);
        if let Some(entry) = entries.get(&policy.name) {
            {
                let mut b = lock(&entry.breaker);
                b.set_policy(policy.breaker.clone());
                b.set_concurrency(policy.concurrency);
            }
            *write(&entry.sandbox) = Arc::new(sandbox);
            entry.policy.send_replace(Arc::new(policy));
            return (entry.clone(), false);
        }
        let entry = Arc::new(ConnectorEntry::new(policy, sandbox));
        entries.insert(entry.name.clone(), entry.clone());
        (entry, true)
    }

    pub fn get(&self, name: &str) -> Option<Arc<ConnectorEntry>> {
        read(&self.entries).get(name).cloned()
    }

    /// Every entry, in name order.
    pub fn entries(&self) -> Vec<Arc<ConnectorEntry>> {
        read(&self.entries).values().cloned().collect()
    }

    /// Wakes `name`'s dispatch loop (nothing if there is no such connector).
    pub fn wake(&self, name: &str) {
        if let Some(entry) = read(&self.entries).get(name) {
            entry.wake();
        }
    }

    pub fn wake_all(&self) {
        for entry in read(&self.entries).values() {
            entry.wake();
        }
    }
}

fn sandbox_of(c: &ConnectorConfig) -> Sandbox {
    Sandbox {
        connector: c.name.clone(),
        allowed_hosts: c.allowed_hosts.clone(),
        config: c
            .config
            .iter()
            .map(|(k, v)| (k.clone(), v.to_text()))
            .collect(),
        secret_headers: c
            .secret_headers
            .iter()
            .map(|(name, secret)| SecretHeader {
                name: name.clone(),
                value: secret.value().to_string(),
                hosts: secret.hosts().to_vec(),
            })
            .collect(),
        limits: c.sandbox_limits(),
    }
}

// A panic while holding one of these locks cannot leave its value half
// written (every change is one assignment), so a poisoned lock is still
// usable.

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: serde_json::Value) -> ConnectorConfig {
        serde_json::from_value(json).unwrap()
    }

    fn hss() -> ConnectorConfig {
        config(serde_json::json!({"name": "hss", "routes": ["*"], "concurrency": 4}))
    }

    fn open(entry: &ConnectorEntry, now: Millis) {
        for _ in 0..entry.policy().breaker.failure_threshold {
            entry.on_result(false, now);
        }
    }

    #[test]
    fn a_reconfigured_connector_keeps_its_entry_and_gets_the_new_settings_whole() {
        let registry = Registry::new();
        let (entry, created) = registry.configure(&hss());
        assert!(created);
        let mut updates = entry.policy_updates();
        let mut changed = hss();
        changed.concurrency = 2;
        changed.breaker.failure_threshold = 2;
        changed.allowed_hosts = vec!["hss.example".into()];
        let (again, created) = registry.configure(&changed);
        assert!(!created);
        assert!(Arc::ptr_eq(&entry, &again), "one record per connector");
        assert!(updates.has_changed().unwrap(), "the loop hears of it");
        assert_eq!(updates.borrow_and_update().concurrency, 2);
        assert_eq!(entry.sandbox().allowed_hosts, ["hss.example"]);
        // The breaker took the new policy with it: two failures open it and
        // its window is capped at the new concurrency.
        assert_eq!(entry.breaker().permits(0, 0), 2);
        entry.on_result(false, 0);
        entry.on_result(false, 0);
        assert!(entry.breaker().is_open());
    }

    #[test]
    fn the_api_shows_no_breaker_until_it_has_judged_an_attempt() {
        let registry = Registry::of([ConnectorPolicy::of(&hss())]);
        let entry = registry.get("hss").unwrap();
        entry.breaker().set_concurrency(8);
        assert_eq!(entry.breaker_state(), None);
        assert_eq!(entry.adopt(SharedHealth::Closed).transition(), None);
        assert_eq!(entry.breaker_state(), None, "nothing changed");
        entry.on_result(true, 0);
        assert!(matches!(
            entry.breaker_state(),
            Some(BreakerState::Closed { .. })
        ));
    }

    #[test]
    fn only_changes_of_the_coarse_state_are_transitions() {
        let registry = Registry::of([ConnectorPolicy::of(&hss())]);
        let entry = registry.get("hss").unwrap();
        let mut seen = Vec::new();
        let mut note = |m: BreakerMove| seen.extend(m.transition());
        // Failures below the threshold move the count, not the state.
        for _ in 0..5 {
            note(entry.on_result(false, 0));
        }
        note(entry.on_start(10));
        note(entry.on_start(1_000));
        note(entry.on_result(false, 1_000));
        note(entry.on_start(3_000));
        note(entry.on_result(true, 3_000));
        note(entry.adopt(SharedHealth::Open {
            next_probe_at: 9_000,
            probe_interval_ms: 4_000,
        }));
        note(entry.adopt(SharedHealth::Closed));
        assert_eq!(
            seen,
            [
                ("closed", "open"),
                ("open", "probing"),
                ("probing", "open"),
                ("open", "probing"),
                ("probing", "closed"),
                ("closed", "open"),
                ("open", "closed"),
            ]
        );
    }

    /// What `/metrics` and `GET /v1/connectors/{name}` read is what the
    /// dispatcher wrote, because all three hold the same entry.
    #[test]
    fn the_api_and_metrics_read_what_the_dispatcher_set() {
        let registry = Registry::new();
        registry.configure(&hss());
        registry.configure(&config(serde_json::json!({"name": "crm", "routes": ["*"]})));
        let dispatcher = registry.get("hss").unwrap();
        for _ in 0..5 {
            dispatcher
                .metrics()
                .attempt("retry", Duration::from_millis(20));
        }
        dispatcher.metrics().expired(3);
        dispatcher.metrics().superseded(7);
        open(&dispatcher, 100);

        let api = registry.get("hss").unwrap();
        assert_eq!(
            api.breaker_state(),
            Some(BreakerState::Open {
                next_probe_at: 1_100,
                probe_interval_ms: 1_000
            })
        );
        let entries = registry.entries();
        let series: Vec<_> = entries.iter().map(|e| (e.name(), e.metrics())).collect();
        let mut out = String::new();
        crate::metrics::render_connectors(&mut out, &series);
        let lines: Vec<&str> = out.lines().filter(|l| !l.starts_with('#')).collect();
        assert!(lines.contains(&r#"switchboard_attempts_total{connector="hss",outcome="retry"} 5"#));
        assert!(lines.contains(&r#"switchboard_attempt_duration_seconds_count{connector="hss"} 5"#));
        assert!(lines.contains(&r#"switchboard_deliveries_expired_total{connector="hss"} 3"#));
        assert!(lines.contains(&r#"switchboard_deliveries_superseded_total{connector="hss"} 7"#));
        assert!(
            !out.contains(r#"connector="crm""#),
            "a connector with nothing counted has no series yet: {out}"
        );
    }
}
