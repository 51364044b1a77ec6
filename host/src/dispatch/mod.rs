//! Claim → run the connector → apply the outcome.
//!
//! One loop per connector keeps up to `concurrency` attempts in flight. Each
//! attempt runs in its own task and writes its own completion, so completions
//! from many attempts share a commit in the store. The loop sleeps until an
//! ingest wakes it, an attempt finishes, the earliest retry falls due, or the
//! poll interval passes.
//!
//! Leases: an attempt is bounded by its connector's deadline, which config
//! validation keeps below the lease, so a live gateway never has a lease
//! expire under an attempt still running. A crashed gateway's leases expire
//! and the rescuer (any node) re-queues them: at-least-once, never lost.
//!
//! Shutdown: stop claiming, give in-flight attempts the grace period, then
//! hand any still running back to the queue (ready now, attempt counted) so a
//! restart retries them at once rather than after the lease.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::clock::Clock;
use crate::queue::breaker::{Breaker, BreakerPolicy};
use crate::queue::rate::TokenBucket;
use crate::queue::retry::{RetryDecision, RetryPolicy};
use crate::queue::OnDead;
use crate::store::{Claimed, Completion, CompletionKind, Store};

/// How a connector classified one attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum AttemptOutcome {
    Done,
    Retry {
        after: Option<Duration>,
        reason: String,
    },
    Reject {
        reason: String,
    },
    /// The gateway could not run the attempt now (no free sandbox slot):
    /// tried again shortly, at no cost to the connector's breaker or its
    /// retry backoff.
    Busy {
        reason: String,
    },
}

/// How soon a [`AttemptOutcome::Busy`] delivery is tried again.
pub const BUSY_RETRY: Duration = Duration::from_secs(1);

/// Runs one attempt of a delivery. The Wasm runtime implements it; tests use
/// in-process doubles. Implementations classify every failure (trap, timeout,
/// limit) as an outcome and never panic.
#[async_trait]
pub trait Deliver: Send + Sync + 'static {
    async fn deliver(&self, delivery: &Claimed) -> AttemptOutcome;
}

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

#[derive(Debug, Clone)]
pub struct DispatchSettings {
    pub lease_ms: i64,
    pub rescue_interval: Duration,
    pub poll_interval: Duration,
    pub shutdown_grace: Duration,
    /// The wall clock, except in simulations.
    pub clock: Clock,
}

/// Wakes a connector's loop when new work may be ready.
#[derive(Default, Clone)]
pub struct Wakers {
    inner: Arc<std::sync::RwLock<HashMap<String, Arc<Notify>>>>,
}

impl Wakers {
    pub fn new<'a>(names: impl IntoIterator<Item = &'a str>) -> Self {
        let map = names
            .into_iter()
            .map(|n| (n.to_string(), Arc::new(Notify::new())))
            .collect();
        Self {
            inner: Arc::new(std::sync::RwLock::new(map)),
        }
    }

    pub fn wake(&self, connector: &str) {
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = inner.get(connector) {
            n.notify_one();
        }
    }

    pub fn wake_all(&self) {
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        for n in inner.values() {
            n.notify_one();
        }
    }

    /// The connector's waker, created on first use (a connector added at
    /// run time).
    fn get(&self, connector: &str) -> Arc<Notify> {
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        inner.entry(connector.to_string()).or_default().clone()
    }
}

/// Adds connectors to a running dispatcher, or changes their policy.
#[derive(Clone)]
pub struct DispatchControl {
    tx: tokio::sync::mpsc::UnboundedSender<ConnectorPolicy>,
}

impl DispatchControl {
    /// Starts a loop for a new connector, or hands an existing loop its new
    /// policy (it applies it before its next claim).
    pub fn upsert(&self, policy: ConnectorPolicy) {
        let _ = self.tx.send(policy);
    }
}

/// Starts one loop per connector plus the lease rescuer. The returned handle
/// finishes when `shutdown` flips to true and in-flight work has been settled.
pub fn spawn(
    store: Arc<dyn Store>,
    deliver: Arc<dyn Deliver>,
    connectors: Vec<ConnectorPolicy>,
    settings: DispatchSettings,
    wakers: Wakers,
    shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    spawn_controlled(store, deliver, connectors, settings, wakers, shutdown).0
}

/// [`spawn`], with a handle that adds and reconfigures connectors while it
/// runs.
pub fn spawn_controlled(
    store: Arc<dyn Store>,
    deliver: Arc<dyn Deliver>,
    connectors: Vec<ConnectorPolicy>,
    settings: DispatchSettings,
    wakers: Wakers,
    shutdown: watch::Receiver<bool>,
) -> (tokio::task::JoinHandle<()>, DispatchControl) {
    let (tx, mut control) = tokio::sync::mpsc::unbounded_channel::<ConnectorPolicy>();
    let handle = tokio::spawn(async move {
        let mut loops = JoinSet::new();
        let mut policies: HashMap<String, watch::Sender<Arc<ConnectorPolicy>>> = HashMap::new();
        let start = |loops: &mut JoinSet<()>,
                     policies: &mut HashMap<String, watch::Sender<Arc<ConnectorPolicy>>>,
                     policy: ConnectorPolicy| {
            if let Some(tx) = policies.get(&policy.name) {
                let _ = tx.send(Arc::new(policy));
                return;
            }
            let policy = Arc::new(policy);
            let (tx, updates) = watch::channel(policy.clone());
            policies.insert(policy.name.clone(), tx);
            let l = ConnectorLoop {
                bucket: Mutex::new(TokenBucket::new(policy.rate, settings.clock.now())),
                breaker: Arc::new(Mutex::new(Breaker::new(
                    policy.breaker.clone(),
                    policy.concurrency,
                ))),
                store: store.clone(),
                deliver: deliver.clone(),
                notify: wakers.get(&policy.name),
                policy,
                updates,
                settings: settings.clone(),
                in_flight: Arc::new(Mutex::new(HashMap::new())),
            };
            let span = tracing::info_span!("dispatch", connector = %l.policy.name);
            loops.spawn(l.run(shutdown.clone()).instrument(span));
        };
        for policy in connectors {
            start(&mut loops, &mut policies, policy);
        }
        loops.spawn(rescuer(
            store.clone(),
            settings.rescue_interval,
            settings.clock.clone(),
            wakers.clone(),
            shutdown.clone(),
        ));
        let mut open = true;
        loop {
            tokio::select! {
                p = control.recv(), if open => match p {
                    Some(p) if !*shutdown.borrow() => start(&mut loops, &mut policies, p),
                    Some(_) => {}
                    None => open = false,
                },
                done = loops.join_next() => if done.is_none() { break },
            }
        }
    });
    (handle, DispatchControl { tx })
}

async fn rescuer(
    store: Arc<dyn Store>,
    every: Duration,
    clock: Clock,
    wakers: Wakers,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        match store.rescue_expired(clock.now()).await {
            Ok(0) => {}
            Ok(n) => {
                tracing::warn!(count = n, "re-queued deliveries whose lease expired");
                wakers.wake_all();
            }
            Err(e) => tracing::warn!(error = %e, "lease rescue failed; will try again"),
        }
        expire(store.as_ref(), clock.now(), &wakers).await;
        tokio::select! {
            _ = clock.sleep(every) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
    }
}

/// Deliveries expired per store call; the sweep repeats while calls come
/// back full.
const EXPIRE_BATCH: usize = 1_000;

/// Ends every delivery past its route's `expire_after` as `expired`, in
/// batches, and wakes the connectors whose lanes that released.
pub async fn expire(store: &dyn Store, now: crate::queue::Millis, wakers: &Wakers) -> u64 {
    let mut total = 0;
    loop {
        match store.expire_due(now, EXPIRE_BATCH).await {
            Ok(counts) => {
                let n: u64 = counts.iter().map(|(_, n)| n).sum();
                for (connector, k) in &counts {
                    tracing::info!(connector = %connector, count = k, "deliveries expired unstarted (expire_after)");
                    crate::metrics::global().expired(connector, *k);
                    wakers.wake(connector);
                }
                total += n;
                if n < EXPIRE_BATCH as u64 {
                    return total;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "expiry sweep failed; will try again");
                return total;
            }
        }
    }
}

/// How often a connector's loop re-reads operator overrides of its limits.
const LIMITS_REFRESH: Duration = Duration::from_secs(1);

/// The limits in force: the configured ones unless an operator overrode them.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Limits {
    concurrency: usize,
    rate: Option<f64>,
}

impl Limits {
    fn of(policy: &ConnectorPolicy) -> Self {
        Self {
            concurrency: policy.concurrency,
            rate: policy.rate,
        }
    }
}

struct ConnectorLoop {
    store: Arc<dyn Store>,
    deliver: Arc<dyn Deliver>,
    notify: Arc<Notify>,
    policy: Arc<ConnectorPolicy>,
    /// New policies for this connector (reconfigured through the API).
    updates: watch::Receiver<Arc<ConnectorPolicy>>,
    settings: DispatchSettings,
    /// Claimed deliveries whose completion has not been written yet.
    in_flight: Arc<Mutex<HashMap<i64, Claimed>>>,
    breaker: Arc<Mutex<Breaker>>,
    bucket: Mutex<TokenBucket>,
}

impl ConnectorLoop {
    async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut tasks: JoinSet<()> = JoinSet::new();
        let mut limits = Limits::of(&self.policy);
        let clock = self.settings.clock.clone();
        let mut limits_read_at: Option<crate::queue::Millis> = None;
        loop {
            if *shutdown.borrow() {
                break;
            }
            if self.updates.has_changed().unwrap_or(false) {
                let policy = self.updates.borrow_and_update().clone();
                tracing::info!("connector reconfigured");
                lock(&self.breaker).set_policy(policy.breaker.clone());
                self.policy = policy;
                // The configured limits in force now; operator overrides are
                // read again at once.
                limits = Limits::of(&self.policy);
                *lock(&self.bucket) = TokenBucket::new(limits.rate, clock.now());
                lock(&self.breaker).set_concurrency(limits.concurrency);
                limits_read_at = None;
            }
            // Operators change concurrency and rate through the store (shared
            // by every node); look at most once a second.
            if limits_read_at.is_none_or(|t| clock.now() - t >= LIMITS_REFRESH.as_millis() as i64) {
                limits_read_at = Some(clock.now());
                if let Ok(o) = self
                    .store
                    .catalog()
                    .limit_overrides(&self.policy.name)
                    .await
                {
                    let next = Limits {
                        concurrency: o
                            .concurrency
                            .map_or(self.policy.concurrency, |c| c as usize),
                        rate: o.rate.or(self.policy.rate),
                    };
                    if next != limits {
                        tracing::info!(concurrency = next.concurrency, rate = ?next.rate, "connector limits changed");
                        *lock(&self.bucket) = TokenBucket::new(next.rate, clock.now());
                        lock(&self.breaker).set_concurrency(next.concurrency);
                        limits = next;
                    }
                }
                self.adopt_shared_health().await;
            }
            // Reap finished attempts first: a slot whose attempt already
            // wrote its completion is free, and counting it as busy would
            // make every claim after the first a claim of one.
            while tasks.try_join_next().is_some() {}
            let now = clock.now();
            let mut permits = lock(&self.breaker).permits(now, tasks.len());
            let probe_due = permits > 0 && lock(&self.breaker).next_probe_at().is_some();
            let cluster = self.store.cluster();
            let won = match cluster {
                Some(cluster) if probe_due => cluster
                    .take_probe(&self.policy.name, now)
                    .await
                    .unwrap_or(false),
                _ => true,
            };
            if !won {
                // Another node sends this probe: follow the shared schedule.
                permits = 0;
                self.adopt_shared_health().await;
            }
            let mut free = limits.concurrency.saturating_sub(tasks.len()).min(permits);
            // The rate is the cluster's when the store is shared, else this
            // node's own bucket.
            let mut local_tokens = true;
            let mut rate_wait = None;
            if free > 0 {
                if let Some(rate) = limits.rate {
                    let taken = match cluster {
                        Some(cluster) => Some(
                            cluster
                                .take_tokens(&self.policy.name, free, rate, now)
                                .await,
                        ),
                        None => None,
                    };
                    match taken {
                        Some(Ok(granted)) => {
                            free = free.min(granted);
                            local_tokens = false;
                            if granted == 0 {
                                // The cluster's bucket is empty: the next
                                // token is about 1/rate away.
                                let ms = (1000.0 / rate).ceil().clamp(1.0, 60_000.0) as u64;
                                rate_wait = Some(Duration::from_millis(ms));
                            }
                        }
                        None => free = free.min(lock(&self.bucket).available(now)),
                        Some(Err(e)) => {
                            tracing::warn!(error = %e, "cannot take rate tokens; will try again");
                            free = 0;
                        }
                    }
                }
            }
            let mut claimed_all = false;
            if free > 0 {
                match self
                    .store
                    .claim(&self.policy.name, free, now, self.settings.lease_ms)
                    .await
                {
                    Ok(batch) => {
                        claimed_all = batch.len() == free;
                        if local_tokens {
                            lock(&self.bucket).take(batch.len(), now);
                        }
                        for d in batch {
                            lock(&self.breaker).on_start(now);
                            self.start(&mut tasks, d);
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "claim failed; will try again"),
                }
            }
            if claimed_all {
                // There may be more ready: go round once an attempt frees a slot.
                tokio::select! {
                    _ = tasks.join_next() => {}
                    _ = shutdown.wait_for(|s| *s) => break,
                }
                continue;
            }
            let sleep = match rate_wait {
                Some(wait) => wait.min(self.settings.poll_interval),
                None => self.idle_sleep().await,
            };
            tokio::select! {
                _ = self.notify.notified() => {}
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                _ = clock.sleep(sleep) => {}
                _ = shutdown.wait_for(|s| *s) => break,
            }
        }
        self.drain(tasks).await;
    }

    /// Takes in the breaker state the other nodes sharing the store
    /// published (nothing happens on a store one node owns alone).
    async fn adopt_shared_health(&self) {
        let Some(cluster) = self.store.cluster() else {
            return;
        };
        let Ok(Some(shared)) = cluster.shared_health(&self.policy.name).await else {
            return;
        };
        let mut b = lock(&self.breaker);
        let was_open = b.is_open();
        b.adopt(shared);
        if b.is_open() != was_open {
            if was_open {
                tracing::warn!("another node's probe succeeded: breaker closed, ramping up");
            } else {
                tracing::warn!("another node opened the breaker: probing only");
            }
            crate::metrics::global().breaker(&self.policy.name, b.state());
        }
    }

    /// Until the earliest retry (or the breaker's next probe) is due, bounded
    /// by the poll interval.
    async fn idle_sleep(&self) -> Duration {
        let poll = self.settings.poll_interval;
        let now = self.settings.clock.now();
        let probe = lock(&self.breaker).next_probe_at();
        let token = lock(&self.bucket).next_token_at(now);
        if let Some(at) = probe.or(token) {
            let wait = at.saturating_sub(now).max(1) as u64;
            return poll.min(Duration::from_millis(wait));
        }
        match self.store.catalog().next_due(&self.policy.name).await {
            Ok(Some(at)) => {
                let wait = at.saturating_sub(now).max(1) as u64;
                poll.min(Duration::from_millis(wait))
            }
            _ => poll,
        }
    }

    fn start(&self, tasks: &mut JoinSet<()>, d: Claimed) {
        let store = self.store.clone();
        let deliver = self.deliver.clone();
        let policy = self.policy.clone();
        let in_flight = self.in_flight.clone();
        let notify = self.notify.clone();
        let breaker = self.breaker.clone();
        let clock = self.settings.clock.clone();
        lock(&in_flight).insert(d.delivery_id, d.clone());
        let span = tracing::info_span!(
            "attempt",
            delivery_id = d.delivery_id,
            event_id = %d.event.id,
            attempt = d.attempt
        );
        tasks.spawn(
            async move {
                // A simulated clock stands still until the outcome is stored.
                let _busy = clock.busy();
                let started = std::time::Instant::now();
                let outcome = match tokio::time::timeout(policy.attempt_timeout, deliver.deliver(&d)).await {
                    Ok(o) => o,
                    Err(_) => AttemptOutcome::Retry {
                        after: None,
                        reason: format!(
                            "attempt exceeded its deadline of {} ms",
                            policy.attempt_timeout.as_millis()
                        ),
                    },
                };
                let label = match &outcome {
                    AttemptOutcome::Done => "done",
                    AttemptOutcome::Retry { .. } => "retry",
                    AttemptOutcome::Reject { .. } => "reject",
                    AttemptOutcome::Busy { .. } => "busy",
                };
                crate::metrics::global().attempt(&policy.name, label, started.elapsed());
                let now = clock.now();
                // A busy gateway says nothing about the connector's health.
                let publish = if label == "busy" {
                    None
                } else {
                    let mut b = lock(&breaker);
                    let was_open = b.is_open();
                    let before = b.state();
                    b.on_result(label != "retry", now);
                    let state = b.state();
                    if b.is_open() != was_open {
                        if was_open {
                            tracing::warn!("connector healthy again: breaker closed, ramping up");
                        } else {
                            tracing::warn!(?state, "connector failing: breaker open, probing only");
                        }
                    }
                    crate::metrics::global().breaker(&policy.name, state);
                    // Opened, closed, or reopened after a failed probe: the
                    // other nodes sharing the store follow.
                    (std::mem::discriminant(&before) != std::mem::discriminant(&state))
                        .then(|| b.shared())
                        .flatten()
                };
                if let (Some(health), Some(cluster)) = (publish, store.cluster()) {
                    if let Err(e) = cluster.publish_health(&policy.name, health, now).await {
                        tracing::warn!(error = %e, "cannot share the breaker state with other nodes");
                    }
                }
                let kind = classify(&policy, &d, outcome, now);
                match &kind {
                    CompletionKind::Delivered => tracing::debug!("delivered"),
                    CompletionKind::Retry { at, error } => {
                        tracing::info!(retry_in_ms = at - now, error = %error, "attempt failed; will retry")
                    }
                    CompletionKind::Dead { error, .. } => {
                        tracing::warn!(error = %error, "delivery is dead; an operator must retry or skip it")
                    }
                }
                match store.complete(vec![Completion::of(&d, kind)], now).await {
                    Ok(applied) if applied.first() == Some(&false) => {
                        tracing::warn!("lease was taken over before the attempt finished; its outcome is dropped")
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(
                        error = %e,
                        "cannot record the outcome; the lease will expire and the delivery run again"
                    ),
                }
                lock(&in_flight).remove(&d.delivery_id);
                notify.notify_one();
            }
            .instrument(span),
        );
    }

    async fn drain(self, mut tasks: JoinSet<()>) {
        let grace = tokio::time::sleep(self.settings.shutdown_grace);
        tokio::pin!(grace);
        while !tasks.is_empty() {
            tokio::select! {
                _ = tasks.join_next() => {}
                _ = &mut grace => break,
            }
        }
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
        let left: Vec<Claimed> = lock(&self.in_flight).drain().map(|(_, d)| d).collect();
        if left.is_empty() {
            return;
        }
        tracing::warn!(
            count = left.len(),
            "attempts still running at the end of the shutdown grace period are handed back to the queue"
        );
        let now = self.settings.clock.now();
        let items = left
            .iter()
            .map(|d| {
                let kind = CompletionKind::Retry {
                    at: now,
                    error: "gateway shut down during the attempt".into(),
                };
                Completion::of(d, kind)
            })
            .collect();
        if let Err(e) = self.store.complete(items, now).await {
            tracing::warn!(error = %e, "cannot hand leases back; they will expire instead");
        }
    }
}

/// Turns a connector's outcome into the store transition, applying the retry
/// policy and the dead-letter policy.
pub fn classify(
    policy: &ConnectorPolicy,
    d: &Claimed,
    outcome: AttemptOutcome,
    now: i64,
) -> CompletionKind {
    match outcome {
        AttemptOutcome::Done => CompletionKind::Delivered,
        AttemptOutcome::Reject { reason } => CompletionKind::Dead {
            error: format!("rejected: {reason}"),
            on_dead: policy.on_dead,
        },
        AttemptOutcome::Busy { reason } => CompletionKind::Retry {
            at: now + BUSY_RETRY.as_millis() as i64,
            error: reason,
        },
        AttemptOutcome::Retry { after, reason } => {
            match policy.retry.next(
                d.attempt,
                after,
                d.event.accepted_at,
                now,
                &mut rand::thread_rng(),
            ) {
                RetryDecision::At(at) => CompletionKind::Retry { at, error: reason },
                RetryDecision::GiveUp => CompletionKind::Dead {
                    error: format!("gave up after {} attempts: {reason}", d.attempt),
                    on_dead: policy.on_dead,
                },
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding this lock cannot leave the map inconsistent (each
    // operation is one insert or remove), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}
