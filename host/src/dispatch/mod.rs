//! Claim → run the connector → apply the outcome.
//!
//! One loop per connector keeps up to `concurrency` attempts in flight. Each
//! attempt runs in its own task and hands its completion to a task that
//! writes it, so completions from many attempts share a commit in the store.
//! The loop sleeps until
//! something may have made a delivery ready (an ingest, an outcome whose
//! released lanes moved on to a delivery or that scheduled a retry, a rescue,
//! an operator), the earliest retry falls due, or the poll interval passes.
//! An attempt that ends frees a slot; the loop claims for it only when its
//! last claim may have left deliveries ready (it got as many as it asked for).
//! So at a trickle a delivery costs one claim, not a claim and an empty one.
//!
//! A slot is the destination's: it frees once the connector has answered and
//! the outcome is handed to the store, not once the store has committed it
//! (`Settling`). So the store may hold an outcome back to share its commit
//! with others (`store::group`) without slowing the connector down. A lane
//! still moves on only once the outcome is committed, and an outcome lost
//! with a crash before its commit only repeats the delivery, which
//! at-least-once allows. Outcomes waiting for their commit beyond the
//! connector's concurrency hold slots again (the loop then waits for one to
//! be written), so a store that falls behind slows the claims down instead
//! of piling up outcomes that leases would outlive.
//!
//! The loop keeps no copy of the connector's state: policy, waker, breaker
//! and counters are the connector's entry in the [`Registry`], which the API
//! and `/metrics` read too. The loop alone moves the breaker; each change of
//! its coarse state (closed, open, probing) is logged, shared with the other
//! nodes (opened or closed) and written to the store's breaker log, off the
//! attempt's path: a log that cannot be written is a warning.
//!
//! Leases: an attempt is bounded by its connector's deadline, which config
//! validation keeps below the lease, so a live gateway never has a lease
//! expire under an attempt still running. A crashed gateway's leases expire
//! and the rescuer (any node) re-queues them: at-least-once, never lost.
//!
//! Shutdown: stop claiming, give in-flight attempts the grace period, wait
//! up to `SETTLE_GRACE` for the outcomes handed over to be written, then
//! hand any still running or unwritten back to the queue (ready now, attempt
//! counted) so a restart retries them at once rather than after the lease.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::clock::Clock;
use crate::queue::rate::TokenBucket;
use crate::queue::retry::RetryDecision;
use crate::queue::Millis;
use crate::registry::{ConnectorEntry, ConnectorPolicy, Registry};
use crate::store::{Claimed, Completion, CompletionKind, Offer, Served, Store};
use switchboard_sandbox::{EgressGate, Pass};

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

    /// Until when this node may send upstream ([`EgressGate`]): nothing is
    /// claimed while it is closed, and attempts still running when it
    /// closes are abandoned and handed back. `None`: always open.
    fn egress_gate(&self) -> Option<Arc<EgressGate>> {
        None
    }
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

/// How much longer than its connector's deadline a lease lasts at least:
/// the attempt's outcome is written before the lease can end.
pub const LEASE_BEYOND_DEADLINE_MS: i64 = 10_000;

/// Starts loops for connectors added to a running dispatcher. A connector's
/// new policy needs no message: its loop follows its registry entry.
#[derive(Clone)]
pub struct DispatchControl {
    tx: tokio::sync::mpsc::UnboundedSender<Arc<ConnectorEntry>>,
}

impl DispatchControl {
    /// Starts a loop for `entry`'s connector, unless one runs already.
    pub fn start(&self, entry: Arc<ConnectorEntry>) {
        let _ = self.tx.send(entry);
    }
}

/// Starts one loop per connector of `registry` plus the lease rescuer. The
/// returned handle finishes when `shutdown` flips to true and in-flight work
/// has been settled.
pub fn spawn(
    store: Arc<dyn Store>,
    deliver: Arc<dyn Deliver>,
    registry: Registry,
    settings: DispatchSettings,
    shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    spawn_controlled(store, deliver, registry, settings, shutdown).0
}

/// [`spawn`], with a handle that starts loops for connectors added while it
/// runs.
pub fn spawn_controlled(
    store: Arc<dyn Store>,
    deliver: Arc<dyn Deliver>,
    registry: Registry,
    settings: DispatchSettings,
    shutdown: watch::Receiver<bool>,
) -> (tokio::task::JoinHandle<()>, DispatchControl) {
    let (tx, mut control) = tokio::sync::mpsc::unbounded_channel::<Arc<ConnectorEntry>>();
    let handle = tokio::spawn(async move {
        let mut loops = JoinSet::new();
        // One loop per connector, however often it is asked for.
        let mut running: HashSet<String> = HashSet::new();
        let start = |loops: &mut JoinSet<()>,
                     running: &mut HashSet<String>,
                     entry: Arc<ConnectorEntry>| {
            if !running.insert(entry.name().to_string()) {
                return;
            }
            // Shared by the loop's incarnations: what one that panicked
            // left in flight, the next hands back (see `crate::supervise`).
            let in_flight = Arc::new(Mutex::new(HashMap::new()));
            let settling = Settling::default();
            let (store, deliver, settings) = (store.clone(), deliver.clone(), settings.clone());
            let stop = shutdown.clone();
            let task = format!("dispatch:{}", entry.name());
            let span = tracing::info_span!("dispatch", connector = %entry.name());
            let make = move || {
                let l = ConnectorLoop {
                    bucket: Mutex::new(TokenBucket::new(entry.policy().rate, settings.clock.now())),
                    updates: entry.policy_updates(),
                    entry: entry.clone(),
                    store: store.clone(),
                    deliver: deliver.clone(),
                    settings: settings.clone(),
                    in_flight: in_flight.clone(),
                    offer: None,
                    settling: settling.clone(),
                };
                l.run(stop.clone()).instrument(span.clone())
            };
            loops.spawn(crate::supervise::supervised(task, shutdown.clone(), make));
        };
        for entry in registry.entries() {
            start(&mut loops, &mut running, entry);
        }
        let (rescue_store, rescue_clock) = (store.clone(), settings.clock.clone());
        let rescue_stop = shutdown.clone();
        loops.spawn(crate::supervise::supervised(
            "rescuer".into(),
            shutdown.clone(),
            move || {
                rescuer(
                    rescue_store.clone(),
                    settings.rescue_interval,
                    rescue_clock.clone(),
                    registry.clone(),
                    rescue_stop.clone(),
                )
            },
        ));
        let mut open = true;
        loop {
            tokio::select! {
                e = control.recv(), if open => match e {
                    Some(e) if !*shutdown.borrow() => start(&mut loops, &mut running, e),
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
    registry: Registry,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        match store.rescue_expired(clock.now()).await {
            Ok(0) => {}
            Ok(n) => {
                tracing::warn!(count = n, "re-queued deliveries whose lease expired");
                registry.wake_all();
            }
            Err(e) => tracing::warn!(error = %e, "lease rescue failed; will try again"),
        }
        expire(store.as_ref(), clock.now(), &registry).await;
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
/// batches, counts them, and wakes the connectors whose lanes that released.
pub async fn expire(store: &dyn Store, now: Millis, registry: &Registry) -> u64 {
    let mut total = 0;
    loop {
        match store.expire_due(now, EXPIRE_BATCH).await {
            Ok(counts) => {
                let n: u64 = counts.iter().map(|(_, n)| n).sum();
                for (connector, k) in &counts {
                    tracing::info!(connector = %connector, count = k, "deliveries expired unstarted (expire_after)");
                    if let Some(entry) = registry.get(connector) {
                        entry.metrics().expired(*k);
                        entry.wake();
                    }
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
    /// The connector's record: policy, waker, breaker, counters.
    entry: Arc<ConnectorEntry>,
    /// Tells of the entry's new policies (reconfigured through the API).
    updates: watch::Receiver<Arc<ConnectorPolicy>>,
    store: Arc<dyn Store>,
    deliver: Arc<dyn Deliver>,
    settings: DispatchSettings,
    /// Claimed deliveries whose completion has not been written yet.
    in_flight: Arc<Mutex<HashMap<i64, Claimed>>>,
    /// This node's rate, used where the store keeps no shared one.
    bucket: Mutex<TokenBucket>,
    /// The standing claim this loop leaves with the store while it waits,
    /// where the store takes one (`store::offer`).
    offer: Option<Arc<Offer>>,
    /// Outcomes handed to the store and not committed yet.
    settling: Settling,
}

impl ConnectorLoop {
    async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        // Attempts of an incarnation of this loop that panicked were
        // aborted with it: their leases go back now, not at their end (once
        // the outcomes it handed over are written).
        let _ = tokio::time::timeout(SETTLE_GRACE, self.settling.idle()).await;
        self.hand_back("the connector's dispatcher restarted during the attempt")
            .await;
        let mut tasks: JoinSet<()> = JoinSet::new();
        // While it waits with free slots and nothing left to claim, the
        // loop leaves the store an offer: the transaction that makes one of
        // its deliveries ready claims it too, and it arrives here with no
        // wake and no claim of the loop's own (see `store::offer`).
        let (offer, served) = Offer::new(self.entry.name());
        let mut served = ServedBatches {
            rx: served,
            in_flight: self.in_flight.clone(),
        };
        if self.store.offer(offer.clone()) {
            self.offer = Some(offer.clone());
        }
        let mut limits = Limits::of(&self.entry.policy());
        let clock = self.settings.clock.clone();
        let mut limits_read_at: Option<crate::queue::Millis> = None;
        loop {
            if *shutdown.borrow() {
                break;
            }
            if self.updates.has_changed().unwrap_or(false) {
                let policy = self.updates.borrow_and_update().clone();
                tracing::info!("connector reconfigured");
                // The configured limits in force now (the entry gave the
                // breaker the new policy); operator overrides are read again
                // at once.
                limits = Limits::of(&policy);
                *lock(&self.bucket) = TokenBucket::new(limits.rate, clock.now());
                limits_read_at = None;
            }
            // Another node announced a change of the shared breaker.
            if self.entry.take_shared_changed() {
                limits_read_at = None;
            }
            // Operators change concurrency and rate through the store (shared
            // by every node); look at most once a second.
            if limits_read_at.is_none_or(|t| clock.now() - t >= LIMITS_REFRESH.as_millis() as i64) {
                limits_read_at = Some(clock.now());
                if let Ok(o) = self
                    .store
                    .catalog()
                    .limit_overrides(self.entry.name())
                    .await
                {
                    let policy = self.entry.policy();
                    let next = Limits {
                        concurrency: o.concurrency.map_or(policy.concurrency, |c| c as usize),
                        rate: o.rate.or(policy.rate),
                    };
                    if next != limits {
                        tracing::info!(concurrency = next.concurrency, rate = ?next.rate, "connector limits changed");
                        *lock(&self.bucket) = TokenBucket::new(next.rate, clock.now());
                        self.entry.breaker().set_concurrency(next.concurrency);
                        limits = next;
                    }
                }
                self.adopt_shared_health().await;
            }
            // What the store claimed for the offer runs first.
            while let Ok(batch) = served.rx.try_recv() {
                self.take_served(&offer, batch, &mut tasks);
            }
            // Reap finished attempts first: a slot whose attempt already
            // handed its completion over is free, and counting it as busy
            // would make every claim after the first a claim of one.
            while tasks.try_join_next().is_some() {}
            let now = clock.now();
            // Claimed for the offer but not received yet: those hold slots;
            // so do outcomes waiting for their commit beyond the concurrency.
            let busy = tasks.len()
                + offer.in_transit()
                + self.settling.len().saturating_sub(limits.concurrency);
            // Outcomes waiting for their commit hold every slot: nothing may
            // start until one is written (or an attempt ends).
            if busy >= limits.concurrency && self.settling.len() > limits.concurrency {
                tokio::select! {
                    _ = self.settling.written() => {}
                    Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                    Some(batch) = served.rx.recv() => self.take_served(&offer, batch, &mut tasks),
                    _ = shutdown.wait_for(|s| *s) => break,
                }
                continue;
            }
            // Whatever an attempt's outcome did to the breaker until now is
            // read below (see `Offer::hold`).
            offer.looked();
            let mut permits = self.entry.breaker().permits(now, busy);
            // Nothing but free slots limits what may start: no rate, no
            // ramp-up or probe. Only then may the store claim for the loop
            // while it waits (under the pass of this round's claim, which a
            // closing gate ends: see `store::offer`).
            let unlimited = limits.rate.is_none()
                && !self.entry.breaker().is_open()
                && permits >= limits.concurrency.saturating_sub(busy);
            let probe_due = permits > 0 && self.entry.breaker().next_probe_at().is_some();
            let cluster = self.store.cluster();
            let won = match cluster {
                Some(cluster) if probe_due => cluster
                    .take_probe(self.entry.name(), now)
                    .await
                    .unwrap_or(false),
                _ => true,
            };
            if !won {
                // Another node sends this probe: follow the shared schedule.
                permits = 0;
                self.adopt_shared_health().await;
            }
            let mut free = limits.concurrency.saturating_sub(busy).min(permits);
            let gate = self.deliver.egress_gate();
            if gate.as_ref().is_some_and(|g| !g.is_open()) {
                // Fenced: the others may be taking this node's work over.
                free = 0;
            }
            // The rate is the cluster's when the store is shared, else this
            // node's own bucket.
            let mut local_tokens = true;
            let mut rate_wait = None;
            if free > 0 {
                if let Some(rate) = limits.rate {
                    let taken = match cluster {
                        Some(cluster) => Some(
                            cluster
                                .take_tokens(self.entry.name(), free, rate, now)
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
            // The claim took every delivery ready then: until something
            // wakes the loop, an attempt that ends leaves nothing to claim.
            let mut drained = false;
            let mut room = 0;
            // Work claimed now may send only until the egress gate next
            // closes, even if it reopens before the work runs.
            let pass = gate.map(|g| (g.pass(), g));
            if free > 0 {
                match self
                    .store
                    .claim(self.entry.name(), free, now, self.lease_ms())
                    .await
                {
                    Ok(batch) => {
                        claimed_all = batch.len() == free;
                        drained = batch.len() < free;
                        room = free.saturating_sub(batch.len());
                        if local_tokens {
                            lock(&self.bucket).take(batch.len(), now);
                        }
                        for d in batch {
                            self.on_start(now);
                            self.start(&mut tasks, d, pass.clone());
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "claim failed; will try again"),
                }
            }
            if claimed_all {
                // There may be more ready: go round once an attempt frees a
                // slot (or what the store claimed before the offer closed
                // arrives).
                tokio::select! {
                    _ = tasks.join_next() => {}
                    Some(batch) = served.rx.recv() => self.take_served(&offer, batch, &mut tasks),
                    _ = shutdown.wait_for(|s| *s) => break,
                }
                continue;
            }
            let sleep = match rate_wait {
                Some(wait) => wait.min(self.settings.poll_interval),
                None => self.idle_sleep().await,
            };
            // Wait with the offer open: what the store claims for it starts
            // here; an attempt that ends gives its slot to it. Anything else
            // that may call for a claim (a wake, the timer, a batch that
            // filled the room) closes it first, and the loop claims itself.
            // (`open` refuses if an attempt held it since the loop looked.)
            // The offer carries the pass the claim above was made under.
            let ticket = pass.as_ref().map_or(0, |(p, _)| p.number());
            if drained
                && unlimited
                && self.offer.is_some()
                && offer.open(room, self.lease_ms(), ticket)
            {
                let timer = clock.sleep(sleep);
                tokio::pin!(timer);
                let stop = loop {
                    tokio::select! {
                        Some(batch) = served.rx.recv() => {
                            let exhausted = batch.exhausted;
                            self.take_served(&offer, batch, &mut tasks);
                            if exhausted {
                                break false;
                            }
                        }
                        Some(_) = tasks.join_next(), if !tasks.is_empty() => {
                            // Its slot is free unless outcomes waiting for
                            // their commit hold it (the loop then looks again).
                            if self.settling.len() > limits.concurrency {
                                break false;
                            }
                            offer.add_room();
                        }
                        _ = self.entry.woken() => break false,
                        _ = &mut timer => break false,
                        // What would be claimed for the offer now could no
                        // longer be sent: claim afresh once the gate reopens.
                        _ = gate_closed(&pass) => break false,
                        _ = shutdown.wait_for(|s| *s) => break true,
                    }
                };
                offer.close();
                if stop {
                    break;
                }
                continue;
            }
            // Whatever may have made a delivery ready wakes the loop: an
            // ingest, a released lane (the attempt below wakes it only then,
            // see `Settled`), a retry scheduled, a rescue, an operator. An
            // attempt that just ended frees a slot, which matters only if
            // the last claim left deliveries ready behind it.
            let timer = clock.sleep(sleep);
            tokio::pin!(timer);
            let stop = loop {
                tokio::select! {
                    _ = self.entry.woken() => break false,
                    Some(_) = tasks.join_next(), if !tasks.is_empty() => {
                        if !drained {
                            break false;
                        }
                    }
                    // Claimed for the offer before it closed.
                    Some(batch) = served.rx.recv() => {
                        self.take_served(&offer, batch, &mut tasks);
                        break false;
                    }
                    _ = &mut timer => break false,
                    _ = shutdown.wait_for(|s| *s) => break true,
                }
            };
            if stop {
                break;
            }
        }
        // Claimed for the offer before it closed: not started, handed back
        // with the attempts still running when the grace ends.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        while offer.in_transit() > 0 {
            match tokio::time::timeout_at(deadline, served.rx.recv()).await {
                Ok(Some(batch)) => {
                    offer.received(batch.claimed.len());
                    served.keep(batch);
                }
                _ => break,
            }
        }
        drop(served);
        self.drain(tasks).await;
    }

    /// Starts what the store claimed for the offer.
    fn take_served(&self, offer: &Offer, batch: Served, tasks: &mut JoinSet<()>) {
        offer.received(batch.claimed.len());
        if batch.claimed.is_empty() {
            return;
        }
        let now = self.settings.clock.now();
        lock(&self.bucket).take(batch.claimed.len(), now);
        // The pass the offer was opened with (see `store::offer`).
        let pass = self
            .deliver
            .egress_gate()
            .map(|g| (Pass::of_number(batch.ticket), g));
        for d in batch.claimed {
            self.on_start(now);
            self.start(tasks, d, pass.clone());
        }
    }

    /// How long this connector's claims are leased: `dispatch.lease_ms`, or
    /// its deadline plus [`LEASE_BEYOND_DEADLINE_MS`] when that is longer,
    /// so a slow connector needs no gateway-wide setting changed.
    fn lease_ms(&self) -> i64 {
        let deadline = self.entry.policy().attempt_timeout.as_millis() as i64;
        self.settings
            .lease_ms
            .max(deadline.saturating_add(LEASE_BEYOND_DEADLINE_MS))
    }

    /// An attempt starts: a due probe moves an open breaker to probing.
    fn on_start(&self, now: Millis) {
        if let Some(t) = self.entry.on_start(now).transition() {
            record_breaker(&self.store, self.entry.name(), t, now);
        }
    }

    /// Takes in the breaker state the other nodes sharing the store
    /// published (nothing happens on a store one node owns alone).
    async fn adopt_shared_health(&self) {
        let Some(cluster) = self.store.cluster() else {
            return;
        };
        let Ok(Some(shared)) = cluster.shared_health(self.entry.name()).await else {
            return;
        };
        let Some((from, to)) = self.entry.adopt(shared).transition() else {
            return;
        };
        if to == "closed" {
            tracing::warn!("another node's probe succeeded: breaker closed, ramping up");
        } else {
            tracing::warn!("another node opened the breaker: probing only");
        }
        let now = self.settings.clock.now();
        record_breaker(&self.store, self.entry.name(), (from, to), now);
    }

    /// Until the earliest retry (or the breaker's next probe) is due, bounded
    /// by the poll interval.
    async fn idle_sleep(&self) -> Duration {
        let poll = self.settings.poll_interval;
        let now = self.settings.clock.now();
        let probe = self.entry.breaker().next_probe_at();
        let token = lock(&self.bucket).next_token_at(now);
        if let Some(at) = probe.or(token) {
            self.store.forget_due(self.entry.name());
            let wait = at.saturating_sub(now).max(1) as u64;
            return poll.min(Duration::from_millis(wait));
        }
        match self.store.next_due(self.entry.name(), now).await {
            Ok(Some(at)) => {
                let wait = at.saturating_sub(now).max(1) as u64;
                poll.min(Duration::from_millis(wait))
            }
            _ => poll,
        }
    }

    fn start(&self, tasks: &mut JoinSet<()>, d: Claimed, pass: Option<(Pass, Arc<EgressGate>)>) {
        let store = self.store.clone();
        let deliver = self.deliver.clone();
        let entry = self.entry.clone();
        // The attempt runs and settles with the policy it started with.
        let policy = entry.policy();
        let in_flight = self.in_flight.clone();
        let clock = self.settings.clock.clone();
        let offer = self.offer.clone();
        let settling = self.settling.clone();
        lock(&in_flight).insert(d.delivery_id, d.clone());
        let span = tracing::info_span!(
            "attempt",
            delivery_id = d.delivery_id,
            event_id = %d.event.id,
            attempt = d.attempt
        );
        // One for the attempt's task and its outcome's.
        let after_panic = Arc::new(AfterPanic {
            store: store.clone(),
            policy: policy.clone(),
            d: d.clone(),
            clock: clock.clone(),
            in_flight: in_flight.clone(),
            entry: entry.clone(),
        });
        let settle_panic = after_panic.clone();
        let attempt = async move {
            // A simulated clock stands still until the outcome is stored.
            let busy = clock.busy();
            let started = std::time::Instant::now();
            let attempt = tokio::time::timeout(policy.attempt_timeout, deliver.deliver(&d));
            let finished = match pass {
                Some((pass, gate)) => tokio::select! {
                    biased;
                    _ = gate.closed_for(pass) => None,
                    r = attempt => Some(r),
                },
                None => Some(attempt.await),
            };
            let Some(finished) = finished else {
                hand_back_fenced(&store, &d, &clock, policy.attempt_timeout).await;
                forget(&in_flight, &d);
                entry.wake();
                return;
            };
            let outcome = match finished {
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
            entry.metrics().attempt(label, started.elapsed());
            let now = clock.now();
            // A busy gateway says nothing about the connector's health.
            // Opened, closed, or reopened after a failed probe: the other
            // nodes sharing the store follow.
            let moved = (label != "busy")
                .then(|| entry.on_result(label != "retry", now))
                .and_then(|m| Some((m.transition()?, m.after)));
            if let Some(((from, to), state)) = moved {
                if to == "closed" {
                    tracing::warn!("connector healthy again: breaker closed, ramping up");
                } else if from == "closed" {
                    tracing::warn!(?state, "connector failing: breaker open, probing only");
                }
                if let (Some(health), Some(cluster)) = (state.shared(), store.cluster()) {
                    if let Err(e) = cluster.publish_health(entry.name(), health, now).await {
                        tracing::warn!(error = %e, "cannot share the breaker state with other nodes");
                    }
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
            let delivered = matches!(kind, CompletionKind::Delivered);
            if !delivered {
                // The breaker or the retry's due time may call for another
                // look: the store claims nothing more until the loop had it.
                if let Some(offer) = &offer {
                    offer.hold();
                }
            }
            // The slot is free once the outcome is handed over: the store
            // may hold it back to share a commit (see the module notes).
            let settle = async move {
                // Whether the loop has something new to claim or schedule: a
                // delivery made ready by the lanes this one released, or a
                // retry (its due time). A plain delivery leaves nothing;
                // waking the loop for it would cost an empty claim per
                // delivery.
                let wake = match store.settle(vec![Completion::of(&d, kind)], now).await {
                    Ok(s) if s.applied.first() == Some(&false) => {
                        tracing::warn!(
                            "lease was taken over before the attempt finished; its outcome is dropped"
                        );
                        true
                    }
                    Ok(s) => !delivered || s.readied(entry.name()),
                    Err(e) => {
                        tracing::warn!(
                            error = %e,
                            "cannot record the outcome; the lease will expire and the delivery run again"
                        );
                        true
                    }
                };
                forget(&in_flight, &d);
                if wake {
                    entry.wake();
                }
                if let Some((transition, _)) = moved {
                    record_breaker(&store, entry.name(), transition, now);
                }
            };
            settling.spawn(
                async move {
                    use futures::FutureExt;
                    // The clock moves on once the outcome is stored.
                    let _busy = busy;
                    if let Err(panic) = std::panic::AssertUnwindSafe(settle).catch_unwind().await {
                        settle_panic.retry(panic, "settle").await;
                    }
                }
                .in_current_span(),
            );
        };
        tasks.spawn(
            async move {
                use futures::FutureExt;
                if let Err(panic) = std::panic::AssertUnwindSafe(attempt).catch_unwind().await {
                    after_panic.retry(panic, "attempt").await;
                }
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
        // Outcomes handed over are written before the rest goes back.
        let written = tokio::time::timeout(SETTLE_GRACE, self.settling.idle()).await;
        if written.is_err() {
            tracing::warn!(
                count = self.settling.len(),
                "outcomes not written within {} s of shutdown; their deliveries go back to the queue",
                SETTLE_GRACE.as_secs()
            );
        }
        self.hand_back("gateway shut down during the attempt").await;
    }

    /// Hands the leases of attempts no longer running (aborted) back to the
    /// queue: ready now, the attempt counted, `why` recorded.
    async fn hand_back(&self, why: &str) {
        let left: Vec<Claimed> = lock(&self.in_flight).drain().map(|(_, d)| d).collect();
        if left.is_empty() {
            return;
        }
        tracing::warn!(
            count = left.len(),
            reason = why,
            "attempts handed back to the queue"
        );
        let now = self.settings.clock.now();
        let items = left
            .iter()
            .map(|d| {
                let kind = CompletionKind::Retry {
                    at: now,
                    error: why.to_string(),
                };
                Completion::of(d, kind)
            })
            .collect();
        if let Err(e) = self.store.complete(items, now).await {
            tracing::warn!(error = %e, "cannot hand leases back; they will expire instead");
        }
    }
}

/// What retrying an attempt takes after the gateway panicked during it or
/// while writing its outcome (a bug, not the connector's failing): the
/// delivery is retried as its retry policy allows, and the loop goes on.
struct AfterPanic {
    store: Arc<dyn Store>,
    policy: Arc<ConnectorPolicy>,
    d: Claimed,
    clock: Clock,
    in_flight: Arc<Mutex<HashMap<i64, Claimed>>>,
    entry: Arc<ConnectorEntry>,
}

impl AfterPanic {
    /// `during`: "attempt" or "settle", the task that panicked.
    async fn retry(&self, panic: Box<dyn std::any::Any + Send>, during: &str) {
        let panic = crate::supervise::panic_message(panic);
        let name = self.entry.name();
        crate::metrics::global().task_panicked(&format!("{during}:{name}"));
        tracing::error!(panic = %panic, task = during, "an attempt panicked (a bug: please report it with this line); the delivery will be retried");
        let now = self.clock.now();
        let outcome = AttemptOutcome::Retry {
            after: Some(Duration::from_secs(5)),
            reason: "the gateway failed during the attempt (a bug, logged)".into(),
        };
        let kind = classify(&self.policy, &self.d, outcome, now);
        let retry = vec![Completion::of(&self.d, kind)];
        if let Err(e) = self.store.complete(retry, now).await {
            tracing::warn!(error = %e, "cannot record the outcome; the lease will expire and the delivery run again");
        }
        forget(&self.in_flight, &self.d);
        self.entry.wake();
    }
}

/// Takes `d` out of the in-flight map, unless the delivery is there under
/// another lease (handed back, then claimed again meanwhile).
fn forget(in_flight: &Mutex<HashMap<i64, Claimed>>, d: &Claimed) {
    let mut in_flight = lock(in_flight);
    if in_flight
        .get(&d.delivery_id)
        .is_some_and(|c| c.lease == d.lease)
    {
        in_flight.remove(&d.delivery_id);
    }
}

/// How long a loop that stops waits for the outcomes it handed to the store
/// to be written, before it hands their deliveries back instead.
const SETTLE_GRACE: Duration = Duration::from_secs(5);

/// Outcomes handed to the store and not yet written: each one's write runs
/// in a task of its own, counted here until it ends, however it ends.
#[derive(Clone, Default)]
struct Settling(Arc<SettlingInner>);

#[derive(Default)]
struct SettlingInner {
    count: AtomicUsize,
    /// Told when the count reaches zero.
    idle: Notify,
    /// Told each time a write ends.
    written: Notify,
}

impl Settling {
    fn spawn(&self, write: impl std::future::Future<Output = ()> + Send + 'static) {
        /// Counts the write down however its task ends.
        struct Counted(Settling);
        impl Drop for Counted {
            fn drop(&mut self) {
                let inner = &(self.0).0;
                if inner.count.fetch_sub(1, Ordering::AcqRel) == 1 {
                    inner.idle.notify_waiters();
                }
                inner.written.notify_one();
            }
        }
        self.0.count.fetch_add(1, Ordering::AcqRel);
        let counted = Counted(self.clone());
        tokio::spawn(async move {
            let _counted = counted;
            write.await
        });
    }

    fn len(&self) -> usize {
        self.0.count.load(Ordering::Acquire)
    }

    /// Until a write ends (or one ended since the last call).
    async fn written(&self) {
        self.0.written.notified().await
    }

    /// Until no outcome is waiting to be written.
    async fn idle(&self) {
        loop {
            let idle = self.0.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if self.len() == 0 {
                return;
            }
            idle.await;
        }
    }
}

/// Resolves once work holding `pass` may no longer send (never without a
/// gate).
async fn gate_closed(pass: &Option<(Pass, Arc<EgressGate>)>) {
    match pass {
        Some((pass, gate)) => gate.closed_for(*pass).await,
        None => std::future::pending().await,
    }
}

/// Where what the store claimed for a loop's offer arrives. Batches still
/// here when the loop ends (a panic, shutdown) were claimed but never
/// started: they join the loop's in-flight map, whose leases the loop's
/// next incarnation, or its shutdown, hands back to the queue.
struct ServedBatches {
    rx: tokio::sync::mpsc::UnboundedReceiver<Served>,
    in_flight: Arc<Mutex<HashMap<i64, Claimed>>>,
}

impl ServedBatches {
    fn keep(&self, batch: Served) {
        let mut in_flight = lock(&self.in_flight);
        for d in batch.claimed {
            in_flight.insert(d.delivery_id, d);
        }
    }
}

impl Drop for ServedBatches {
    fn drop(&mut self) {
        self.rx.close();
        while let Ok(batch) = self.rx.try_recv() {
            self.keep(batch);
        }
    }
}

/// An attempt abandoned because this node's egress gate closed (its
/// heartbeat unconfirmed: the other nodes may be taking its work over).
/// Nothing more of it is sent; its lease is handed back (ready now, the
/// attempt counted) as soon as the store answers, unless it was taken over
/// meanwhile (then the lease check refuses the hand-back). Tried for as
/// long as the attempt could have run.
async fn hand_back_fenced(store: &Arc<dyn Store>, d: &Claimed, clock: &Clock, patience: Duration) {
    tracing::warn!("attempt abandoned: this node's heartbeat is unconfirmed and the other nodes may take its work over; it sends nothing until the store confirms it again");
    let until = std::time::Instant::now() + patience;
    loop {
        let now = clock.now();
        let kind = CompletionKind::Retry {
            at: now,
            error: "abandoned: the node running the attempt lost touch with the store".into(),
        };
        match store.complete(vec![Completion::of(d, kind)], now).await {
            Ok(_) => return,
            Err(e) if std::time::Instant::now() >= until => {
                tracing::warn!(error = %e, "cannot hand the lease back; it will be taken over or expire");
                return;
            }
            Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
}

/// Writes a change of a breaker's coarse state to the store's breaker log in
/// a task of its own, so neither an attempt nor the claim loop waits for it.
fn record_breaker(
    store: &Arc<dyn Store>,
    connector: &str,
    (from, to): (&'static str, &'static str),
    at: Millis,
) {
    let store = store.clone();
    let connector = connector.to_string();
    tokio::spawn(
        async move {
            if let Err(e) = store
                .catalog()
                .record_breaker(&connector, from, to, at)
                .await
            {
                tracing::warn!(error = %e, from, to, "cannot record the breaker's change");
            }
        }
        .in_current_span(),
    );
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
    // A panic while holding one of these locks cannot leave its value
    // inconsistent (each operation is one insert, remove or assignment), so a
    // poisoned lock is still usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}
