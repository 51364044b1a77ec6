//! The dispatcher with an in-process connector double: order per key under
//! concurrency and retries, dead letters holding their lane, and a shutdown
//! that hands unfinished attempts back.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use switchboard::dispatch::{self, AttemptOutcome, Deliver, DispatchSettings};
use switchboard::queue::retry::RetryPolicy;
use switchboard::queue::Millis;
use switchboard::queue::{now_ms, DeliveryState, OnDead};
use switchboard::registry::{ConnectorPolicy, Registry};
use switchboard::store::{
    Catalog, Claimed, Cluster, Completion, IngestOutcome, LaneView, Offer, OperatorAction, Purge,
    Purged, Routed, Settled, Store, StoreResult,
};
use tokio::sync::watch;

/// Records every attempt; fails each event's first attempt when asked; checks
/// that no two attempts sharing a key overlap.
#[derive(Default)]
struct Recorder {
    running: Mutex<HashSet<String>>,
    /// Attempts running now, and the most that ever ran at once.
    now: std::sync::atomic::AtomicUsize,
    peak: std::sync::atomic::AtomicUsize,
    started: Mutex<Vec<(String, u32)>>,
    fail_first: HashSet<String>,
    reject: HashSet<String>,
    hang: bool,
    overlaps: Mutex<Vec<String>>,
}

#[async_trait]
impl Deliver for Recorder {
    async fn deliver(&self, d: &Claimed) -> AttemptOutcome {
        use std::sync::atomic::Ordering::SeqCst;
        let now = self.now.fetch_add(1, SeqCst) + 1;
        self.peak.fetch_max(now, SeqCst);
        {
            let mut running = self.running.lock().unwrap();
            for k in &d.event.keys {
                if !running.insert(k.clone()) {
                    self.overlaps
                        .lock()
                        .unwrap()
                        .push(format!("{} on {k}", d.event.id));
                }
            }
            self.started
                .lock()
                .unwrap()
                .push((d.event.id.clone(), d.attempt));
        }
        if self.hang {
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(Duration::from_millis(rand::random::<u64>() % 3)).await;
        {
            let mut running = self.running.lock().unwrap();
            for k in &d.event.keys {
                running.remove(k);
            }
        }
        self.now.fetch_sub(1, SeqCst);
        if self.reject.contains(&d.event.id) {
            AttemptOutcome::Reject {
                reason: "400 number unknown".into(),
            }
        } else if d.attempt == 1 && self.fail_first.contains(&d.event.id) {
            AttemptOutcome::Retry {
                after: None,
                reason: "503".into(),
            }
        } else {
            AttemptOutcome::Done
        }
    }
}

fn policy(concurrency: usize) -> ConnectorPolicy {
    policy_with_rate(concurrency, None)
}

fn policy_with_rate(concurrency: usize, rate: Option<f64>) -> ConnectorPolicy {
    ConnectorPolicy {
        name: "hss".into(),
        concurrency,
        retry: RetryPolicy {
            initial_backoff_ms: 5,
            max_backoff_ms: 20,
            ..RetryPolicy::default()
        },
        rate,
        breaker: Default::default(),
        on_dead: OnDead::Hold,
        attempt_timeout: Duration::from_secs(5),
    }
}

fn settings(grace: Duration) -> DispatchSettings {
    DispatchSettings {
        lease_ms: 30_000,
        rescue_interval: Duration::from_millis(200),
        poll_interval: Duration::from_millis(20),
        shutdown_grace: grace,
        clock: switchboard::clock::Clock::wall(),
    }
}

struct Running {
    stop: watch::Sender<bool>,
    handle: tokio::task::JoinHandle<()>,
    registry: Registry,
}

fn start(
    store: Arc<dyn Store>,
    deliver: Arc<Recorder>,
    concurrency: usize,
    grace: Duration,
) -> Running {
    let registry = Registry::of([policy(concurrency)]);
    let (stop, rx) = watch::channel(false);
    let handle = dispatch::spawn(store, deliver, registry.clone(), settings(grace), rx);
    Running {
        stop,
        handle,
        registry,
    }
}

/// [`start`] for a loop that only a wake, its offer or a minute's poll
/// sets going, with more slots (four) than these tests ever fill: every
/// claim gets fewer than it asked for, so no claim is owed to a slot that
/// frees.
fn start_waiting(store: Arc<dyn Store>, deliver: Arc<dyn Deliver>) -> Running {
    let registry = Registry::of([policy(4)]);
    let (stop, rx) = watch::channel(false);
    let settings = DispatchSettings {
        poll_interval: Duration::from_secs(60),
        ..settings(Duration::from_secs(5))
    };
    let handle = dispatch::spawn(store, deliver, registry.clone(), settings, rx);
    Running {
        stop,
        handle,
        registry,
    }
}

async fn wait_until(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !f().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_per_key_holds_under_concurrency_and_retries() {
    let t = common::sqlite().await;
    let n = 300;
    let mut fail_first = HashSet::new();
    let mut events = Vec::new();
    let mut keys_of: HashMap<String, Vec<String>> = HashMap::new();
    for i in 0..n {
        let id = format!("e{i:04}");
        let keys = vec![format!("msisdn:{}", i % 7), format!("customer:{}", i % 11)];
        if i % 5 == 0 {
            fail_first.insert(id.clone());
        }
        keys_of.insert(id.clone(), keys.clone());
        let ks: Vec<&str> = keys.iter().map(String::as_str).collect();
        events.push(common::ev(&id, "number.assign", &ks, &["hss"]));
    }
    let rec = Arc::new(Recorder {
        fail_first,
        ..Default::default()
    });
    let run = start(t.store.clone(), rec.clone(), 16, Duration::from_secs(5));
    for chunk in events.chunks(25) {
        t.store.ingest(chunk.to_vec(), now_ms()).await.unwrap();
        run.registry.wake("hss");
    }
    wait_until("all delivered", async || {
        t.store
            .catalog()
            .state_counts("hss")
            .await
            .unwrap()
            .delivered
            == n
    })
    .await;
    run.stop.send(true).unwrap();
    run.handle.await.unwrap();

    assert!(
        rec.overlaps.lock().unwrap().is_empty(),
        "overlapping attempts: {:?}",
        rec.overlaps.lock().unwrap()
    );
    // Per key, the successful attempts start in accept order.
    let started = rec.started.lock().unwrap().clone();
    let mut last_per_key: HashMap<&str, &str> = HashMap::new();
    let final_attempts: Vec<&(String, u32)> = started
        .iter()
        .filter(|(id, attempt)| *attempt == 2 || !rec.fail_first.contains(id))
        .collect();
    for (id, _) in final_attempts {
        for k in &keys_of[id] {
            if let Some(prev) = last_per_key.insert(k, id) {
                assert!(prev < id.as_str(), "{id} delivered after {prev} on {k}");
            }
        }
    }
    assert_eq!(started.len(), n as usize + rec.fail_first.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_holds_its_keys_and_nothing_else() {
    let t = common::sqlite().await;
    let rec = Arc::new(Recorder {
        reject: HashSet::from(["bad".to_string()]),
        ..Default::default()
    });
    t.store
        .ingest(
            vec![
                common::ev("bad", "t", &["msisdn:1"], &["hss"]),
                common::ev("behind", "t", &["msisdn:1"], &["hss"]),
                common::ev("other", "t", &["msisdn:2"], &["hss"]),
            ],
            now_ms(),
        )
        .await
        .unwrap();
    let run = start(t.store.clone(), rec.clone(), 4, Duration::from_secs(5));
    wait_until("other delivered", async || {
        t.store
            .catalog()
            .state_counts("hss")
            .await
            .unwrap()
            .delivered
            == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let bad = t.store.catalog().event("bad").await.unwrap().unwrap();
    assert_eq!(bad.deliveries[0].state, DeliveryState::Dead);
    assert_eq!(
        bad.deliveries[0].last_error.as_deref(),
        Some("rejected: 400 number unknown")
    );
    let behind = t.store.catalog().event("behind").await.unwrap().unwrap();
    assert_eq!(behind.deliveries[0].state, DeliveryState::Blocked);

    // The operator skips the dead letter; the lane moves on.
    assert!(t
        .store
        .operator_action(bad.deliveries[0].id, OperatorAction::Skip, "ops", now_ms())
        .await
        .unwrap());
    run.registry.wake("hss");
    wait_until("behind delivered", async || {
        t.store
            .catalog()
            .state_counts("hss")
            .await
            .unwrap()
            .delivered
            == 2
    })
    .await;
    run.stop.send(true).unwrap();
    run.handle.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_hands_unfinished_attempts_back_to_the_queue() {
    let t = common::sqlite().await;
    let rec = Arc::new(Recorder {
        hang: true,
        ..Default::default()
    });
    t.store
        .ingest(vec![common::ev("slow", "t", &["k"], &["hss"])], now_ms())
        .await
        .unwrap();
    let run = start(t.store.clone(), rec.clone(), 4, Duration::from_millis(100));
    wait_until("attempt started", async || {
        !rec.started.lock().unwrap().is_empty()
    })
    .await;
    run.stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), run.handle)
        .await
        .expect("shutdown within grace")
        .unwrap();
    let v = t.store.catalog().event("slow").await.unwrap().unwrap();
    assert_eq!(v.deliveries[0].state, DeliveryState::Ready);
    assert_eq!(v.deliveries[0].attempts, 1);
    assert_eq!(
        v.deliveries[0].last_error.as_deref(),
        Some("gateway shut down during the attempt")
    );
}

/// Takes `delay` over each attempt; fails the first attempt of the ids in
/// `fail_first`.
struct Paced {
    delay: Duration,
    fail_first: HashSet<String>,
    done: Mutex<Vec<String>>,
}

#[async_trait]
impl Deliver for Paced {
    async fn deliver(&self, d: &Claimed) -> AttemptOutcome {
        tokio::time::sleep(self.delay).await;
        if d.attempt == 1 && self.fail_first.contains(&d.event.id) {
            return AttemptOutcome::Retry {
                after: None,
                reason: "503".into(),
            };
        }
        self.done.lock().unwrap().push(d.event.id.clone());
        AttemptOutcome::Done
    }
}

/// The store, counting the loop's own claims and those that came back
/// empty; with `held`, each outcome handed to it waits until that says
/// `true` before it is written, and no offer is taken.
struct CountingClaims {
    inner: Arc<dyn Store>,
    empty: std::sync::atomic::AtomicUsize,
    all: std::sync::atomic::AtomicUsize,
    held: Option<watch::Receiver<bool>>,
}

impl CountingClaims {
    fn new(inner: Arc<dyn Store>, held: Option<watch::Receiver<bool>>) -> Self {
        Self {
            inner,
            empty: Default::default(),
            all: Default::default(),
            held,
        }
    }

    fn empty(&self) -> usize {
        self.empty.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn all(&self) -> usize {
        self.all.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[async_trait]
impl Store for CountingClaims {
    async fn ingest(&self, events: Vec<Routed>, now: Millis) -> StoreResult<IngestOutcome> {
        self.inner.ingest(events, now).await
    }
    async fn claim(
        &self,
        connector: &str,
        limit: usize,
        now: Millis,
        lease_ms: i64,
    ) -> StoreResult<Vec<Claimed>> {
        let got = self.inner.claim(connector, limit, now, lease_ms).await?;
        self.all.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if got.is_empty() {
            self.empty.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        Ok(got)
    }
    fn offer(&self, offer: Arc<Offer>) -> bool {
        self.held.is_none() && self.inner.offer(offer)
    }
    async fn settle(&self, items: Vec<Completion>, now: Millis) -> StoreResult<Settled> {
        if let Some(held) = &self.held {
            let _ = held.clone().wait_for(|go| *go).await;
        }
        self.inner.settle(items, now).await
    }
    async fn rescue_expired(&self, now: Millis) -> StoreResult<u64> {
        self.inner.rescue_expired(now).await
    }
    async fn reclaim(&self, now: Millis) -> StoreResult<u64> {
        self.inner.reclaim(now).await
    }
    async fn expire_due(&self, now: Millis, limit: usize) -> StoreResult<Vec<(String, u64)>> {
        self.inner.expire_due(now, limit).await
    }
    async fn operator_action(
        &self,
        delivery_id: i64,
        action: OperatorAction,
        actor: &str,
        now: Millis,
    ) -> StoreResult<bool> {
        self.inner
            .operator_action(delivery_id, action, actor, now)
            .await
    }
    async fn lanes(&self, key: &str, connectors: &[String]) -> StoreResult<Vec<LaneView>> {
        self.inner.lanes(key, connectors).await
    }
    async fn purge_finished(&self, purge: Purge, limit: usize) -> StoreResult<Purged> {
        self.inner.purge_finished(purge, limit).await
    }
    fn catalog(&self) -> &Catalog {
        self.inner.catalog()
    }
    fn cluster(&self) -> Option<&dyn Cluster> {
        self.inner.cluster()
    }
}

/// With a poll interval of a minute, every way work becomes ready wakes the
/// loop, and nothing else does: a delivery at a trickle costs one claim,
/// not one and an empty one after it, and a paused connector's loop does
/// not look again and again. Phases, each waited out:
/// 1. paused with two queued: no claim spins; resumed: both delivered;
/// 2. three events posted one at a time;
/// 3. a chain of two on one key, the first failing once (a retry to wait
///    for, then a lane moving on);
/// 4. an event ingested while another runs.
async fn a_trickle_costs_one_claim_a_delivery_and_waits_for_no_poll(t: common::TestStore) {
    let store = Arc::new(CountingClaims::new(t.store.clone(), None));
    // The store takes the loop's offer: what an ingest makes ready is
    // claimed in its transaction, and the loop makes no claim of its own.
    let deliver = Arc::new(Paced {
        delay: Duration::from_millis(150),
        fail_first: HashSet::from(["chain-1".to_string()]),
        done: Mutex::new(Vec::new()),
    });
    let Running {
        stop,
        handle,
        registry,
    } = start_waiting(store.clone(), deliver.clone());
    let delivered = async |n: usize| {
        let what = format!("{n} delivered");
        wait_until(&what, async || deliver.done.lock().unwrap().len() >= n).await;
    };
    // As the API does: the loop is woken unless the store claimed for it.
    let ingest = async |id: &str, keys: &[&str]| {
        let e = common::ev(id, "t", keys, &["hss"]);
        match t.store.ingest(vec![e], now_ms()).await.unwrap() {
            IngestOutcome::Accepted(c) if !c.needs_wake("hss") => {}
            _ => registry.wake("hss"),
        }
    };
    // The loop's first look finds nothing.
    wait_until("the first claim", async || store.empty() == 1).await;
    let catalog = t.store.catalog();
    catalog
        .set_paused("hss", true, "ops", now_ms())
        .await
        .unwrap();
    ingest("paused-1", &[]).await;
    ingest("paused-2", &[]).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let paused = store.empty();
    assert!(paused <= 3, "{paused} empty claims while paused");
    catalog
        .set_paused("hss", false, "ops", now_ms())
        .await
        .unwrap();
    registry.wake("hss");
    delivered(2).await;
    // Whatever the loop does after the last of those, it has done by now.
    let settled = async || {
        tokio::time::sleep(Duration::from_millis(300)).await;
        store.empty()
    };
    let before = settled().await;
    let claims_before = store.all();
    for i in 1..=3 {
        ingest(&format!("single-{i}"), &[]).await;
        delivered(2 + i).await;
    }
    let singles = settled().await - before;
    assert_eq!(singles, 0, "empty claims after three single deliveries");
    let claims = store.all() - claims_before;
    assert_eq!(claims, 0, "claims of the loop's own");
    ingest("chain-1", &["msisdn:1"]).await;
    ingest("chain-2", &["msisdn:1"]).await;
    delivered(7).await;
    ingest("first", &[]).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    ingest("second", &[]).await;
    delivered(9).await;
    // Empty claims that are meant to be: the wake of `chain-2`'s ingest
    // (blocked behind `chain-1`) unless it came with `chain-1`'s, and the
    // retry's wake (not due yet). Were every outcome to wake the loop, each
    // of these four deliveries would add one.
    let rest = settled().await - before;
    assert!(rest <= 4, "{rest} empty claims for 4 deliveries");
    let done = deliver.done.lock().unwrap().clone();
    let chain: Vec<&String> = done.iter().filter(|id| id.starts_with("chain")).collect();
    assert_eq!(chain, ["chain-1", "chain-2"]);
    stop.send(true).unwrap();
    handle.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickle_costs_one_claim_a_delivery_and_waits_for_no_poll_sqlite() {
    a_trickle_costs_one_claim_a_delivery_and_waits_for_no_poll(common::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickle_costs_one_claim_a_delivery_and_waits_for_no_poll_postgres() {
    a_trickle_costs_one_claim_a_delivery_and_waits_for_no_poll(common::postgres().await).await;
}

/// A connector double behind an egress gate that fences (nodes share the
/// store): records each attempt that reached it.
struct Gated {
    gate: Arc<switchboard_sandbox::EgressGate>,
    sent: Mutex<Vec<(String, u32)>>,
}

#[async_trait]
impl Deliver for Gated {
    async fn deliver(&self, d: &Claimed) -> AttemptOutcome {
        let attempt = (d.event.id.clone(), d.attempt);
        self.sent.lock().unwrap().push(attempt);
        AttemptOutcome::Done
    }

    fn egress_gate(&self) -> Option<Arc<switchboard_sandbox::EgressGate>> {
        Some(self.gate.clone())
    }
}

/// What the store claims for a loop's offer is sent under the egress pass
/// the loop opened the offer with: when the gate closes (the other nodes
/// may take this node's leases over), the loop closes its offer, so nothing
/// is claimed for it under that pass; once the gate has reopened, what
/// arrives is claimed and sent under a fresh one. (A batch reserved before
/// the close and arriving after it carries the old pass, and is abandoned
/// rather than sent: `store::offer`, "Fenced".)
async fn an_offer_served_after_the_gate_closed_sends_nothing_under_its_old_pass(
    t: common::TestStore,
) {
    let store = Arc::new(CountingClaims::new(t.store.clone(), None));
    let gate = Arc::new(switchboard_sandbox::EgressGate::closing_at(
        std::time::Instant::now() + Duration::from_millis(500),
    ));
    let deliver = Arc::new(Gated {
        gate: gate.clone(),
        sent: Mutex::new(Vec::new()),
    });
    let Running {
        stop,
        handle,
        registry,
    } = start_waiting(store.clone(), deliver.clone());
    // The loop's first claim finds nothing: it waits with its offer open.
    wait_until("the first claim", async || store.empty() == 1).await;
    // The gate closes, then the store confirms the node again.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!gate.is_open());
    gate.open_until(std::time::Instant::now() + Duration::from_secs(60));
    let e = common::ev("e1", "t", &["k"], &["hss"]);
    let counts = match t.store.ingest(vec![e], now_ms()).await.unwrap() {
        IngestOutcome::Accepted(c) => c,
        other => panic!("{other:?}"),
    };
    assert!(
        counts.needs_wake("hss"),
        "the gate's closing closed the offer: the loop is woken to claim"
    );
    registry.wake("hss");
    wait_until("e1 delivered", async || {
        !deliver.sent.lock().unwrap().is_empty()
    })
    .await;
    assert_eq!(
        deliver.sent.lock().unwrap().clone(),
        [("e1".to_string(), 1)],
        "claimed once, under the fresh pass, and sent"
    );
    stop.send(true).unwrap();
    handle.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offer_served_after_the_gate_closed_sends_nothing_under_its_old_pass_sqlite() {
    an_offer_served_after_the_gate_closed_sends_nothing_under_its_old_pass(common::sqlite().await)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offer_served_after_the_gate_closed_sends_nothing_under_its_old_pass_postgres() {
    an_offer_served_after_the_gate_closed_sends_nothing_under_its_old_pass(
        common::postgres().await,
    )
    .await;
}

/// A slot is the destination's: it frees once the connector has answered
/// and the outcome is handed to the store, so the store may take its time
/// to commit it (sharing the commit with others) without slowing delivery
/// down. Outcomes not yet written beyond the concurrency hold slots again:
/// with two slots and the store writing nothing, four attempts run, not two
/// and not all eight. A loop that stops waits for what it handed over to be
/// written, rather than handing those deliveries back to the queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_frees_once_the_outcome_is_handed_to_the_store() {
    let t = common::sqlite().await;
    let (write, held) = watch::channel(false);
    let store = Arc::new(CountingClaims::new(t.store.clone(), Some(held)));
    let ids: Vec<String> = (0..8).map(|i| format!("e{i}")).collect();
    let events = ids.iter().map(|id| common::ev(id, "t", &[], &["hss"]));
    t.store.ingest(events.collect(), now_ms()).await.unwrap();
    let rec = Arc::new(Recorder::default());
    let run = start(store, rec.clone(), 2, Duration::from_secs(5));
    let started = || rec.started.lock().unwrap().len();
    wait_until("four attempts", async || started() >= 4).await;
    // Time for a fifth, were the bound not there.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(started(), 4, "attempts while no outcome is written");
    let peak = rec.peak.load(std::sync::atomic::Ordering::SeqCst);
    assert!(peak <= 2, "{peak} attempts at once with two slots");
    // Stopping now: the loop waits for the four outcomes to be written.
    run.stop.send(true).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !run.handle.is_finished(),
        "the dispatcher stopped before the outcomes it handed over were written"
    );
    write.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(10), run.handle)
        .await
        .expect("stopped")
        .unwrap();
    let mut delivered = 0;
    for id in &ids[..4] {
        let v = t.store.catalog().event(id).await.unwrap().unwrap();
        if v.deliveries[0].state == DeliveryState::Delivered {
            delivered += 1;
        }
        assert_eq!(v.deliveries[0].attempts, 1);
    }
    assert_eq!(delivered, 4, "outcomes handed over before the stop");
    // The rest: a dispatcher that writes at once delivers them all.
    let run = start(t.store.clone(), rec.clone(), 2, Duration::from_secs(5));
    wait_until("all delivered", async || {
        let mut n = 0;
        for id in &ids {
            let v = t.store.catalog().event(id).await.unwrap().unwrap();
            n += usize::from(v.deliveries[0].state == DeliveryState::Delivered);
        }
        n == ids.len()
    })
    .await;
    assert_eq!(started(), 8);
    run.stop.send(true).unwrap();
    run.handle.await.unwrap();
}

/// Drains 60 unkeyed deliveries with `policy` (after applying `overrides`,
/// if any) and returns how long it took and how many attempts started.
async fn drain_60(
    policy: ConnectorPolicy,
    overrides: Option<switchboard::store::LimitOverrides>,
) -> (Duration, usize) {
    let t = common::sqlite().await;
    let events: Vec<_> = (0..60)
        .map(|i| common::ev(&format!("r{i}"), "t", &[], &["hss"]))
        .collect();
    t.store.ingest(events, now_ms()).await.unwrap();
    if let Some(limits) = overrides {
        t.store
            .catalog()
            .set_limits("hss", limits, "ops", now_ms())
            .await
            .unwrap();
    }
    let rec = Arc::new(Recorder::default());
    let (stop, rx) = watch::channel(false);
    let started = std::time::Instant::now();
    let handle = dispatch::spawn(
        t.store.clone(),
        rec.clone(),
        Registry::of([policy]),
        settings(Duration::from_secs(5)),
        rx,
    );
    wait_until("all delivered", async || {
        t.store
            .catalog()
            .state_counts("hss")
            .await
            .unwrap()
            .delivered
            == 60
    })
    .await;
    let elapsed = started.elapsed();
    stop.send(true).unwrap();
    handle.await.unwrap();
    let attempts = rec.started.lock().unwrap().len();
    (elapsed, attempts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_bounds_attempts_per_second() {
    let (elapsed, attempts) = drain_60(policy_with_rate(64, Some(20.0)), None).await;
    // 60 attempts at 20/s with a one-second burst cannot finish before 2 s.
    assert!(elapsed >= Duration::from_millis(1_900), "{elapsed:?}");
    assert_eq!(attempts, 60);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_rate_override_applies_without_a_restart() {
    // Configured unlimited; the stored override limits it.
    let limits = switchboard::store::LimitOverrides {
        concurrency: Some(4),
        rate: Some(20.0),
    };
    let (elapsed, _) = drain_60(policy(64), Some(limits)).await;
    assert!(elapsed >= Duration::from_millis(1_900), "{elapsed:?}");
}

/// A destination that refuses every attempt until `back_at` on the clock,
/// then accepts; records refused attempts' times and what it received.
struct Outage {
    clock: switchboard::clock::Clock,
    back_at: std::sync::atomic::AtomicI64,
    refused: Mutex<Vec<i64>>,
    received: Mutex<Vec<(String, i64)>>,
}

#[async_trait]
impl Deliver for Outage {
    async fn deliver(&self, d: &Claimed) -> AttemptOutcome {
        let now = self.clock.now();
        if now < self.back_at.load(std::sync::atomic::Ordering::SeqCst) {
            self.refused.lock().unwrap().push(now);
            return AttemptOutcome::Retry {
                after: None,
                reason: "connection refused".into(),
            };
        }
        for k in &d.event.keys {
            self.received.lock().unwrap().push((k.clone(), d.event.seq));
        }
        AttemptOutcome::Done
    }
}

/// Six simulated hours of outage through the real store and dispatcher on a
/// simulated clock: a probe budget instead of one attempt per queued
/// delivery, the stale events of an `expire_after` route expired (releasing
/// their keys), and after recovery everything else delivered in key order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_outage_costs_probes_and_expires_only_what_may_expire() {
    use switchboard::clock::Clock;
    const HOUR: i64 = 3_600_000;
    let t = common::sqlite().await;
    let store = t.store.clone();
    let t0 = 1_700_000_000_000;
    let clock = Clock::simulated(t0);
    // 2,000 events on 100 keys; every tenth is a quota notice whose route
    // expires it after 1 h.
    let events: Vec<_> = (0..2_000)
        .map(|i| {
            let quota = i % 10 == 0;
            let ty = if quota {
                "quota.reached"
            } else {
                "number.assign"
            };
            let key = format!("k{}", i % 100);
            let mut r = common::ev(&format!("e{i}"), ty, &[&key], &["hss"]);
            if quota {
                r.expire_after.insert("hss".into(), HOUR);
            }
            r
        })
        .collect();
    store.ingest(events, t0).await.unwrap();
    let up = Arc::new(Outage {
        clock: clock.clone(),
        back_at: std::sync::atomic::AtomicI64::new(t0 + 6 * HOUR),
        refused: Mutex::new(Vec::new()),
        received: Mutex::new(Vec::new()),
    });
    let (stop, rx) = watch::channel(false);
    let mut policy = policy(16);
    policy.retry = RetryPolicy::default();
    let handle = dispatch::spawn(
        store.clone(),
        up.clone(),
        Registry::of([policy]),
        DispatchSettings {
            lease_ms: 120_000,
            rescue_interval: Duration::from_secs(5),
            poll_interval: Duration::from_secs(1),
            shutdown_grace: Duration::from_secs(1),
            clock: clock.clone(),
        },
        rx,
    );
    // One connector loop and the rescuer sleep on the clock; 10 s ticks.
    while clock.now() < t0 + 6 * HOUR {
        clock.step(2, 10_000, t0 + 6 * HOUR).await;
    }
    let refused = up.refused.lock().unwrap().clone();
    // At most a full window (16) before the breaker opens, then one probe
    // per interval: 1, 2, 4 … 60 s, so about one a minute for six hours.
    assert!(
        refused.len() <= 16 + 6 * 60 + 10,
        "{} attempts during the outage",
        refused.len()
    );
    let late: Vec<_> = refused.iter().filter(|&&at| at > t0 + HOUR).collect();
    assert!(
        late.len() >= 5 * 60 - 10,
        "the breaker kept probing: {} probes after the first hour",
        late.len()
    );
    let counts = store.catalog().state_counts("hss").await.unwrap();
    assert_eq!(counts.expired, 200, "{counts:?}");
    assert!(up.received.lock().unwrap().is_empty());
    // Back: everything that may not expire is delivered, in order per key.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while store.catalog().state_counts("hss").await.unwrap().delivered < 1_800 {
        assert!(std::time::Instant::now() < deadline, "drain stalled");
        clock.step(2, 10_000, i64::MAX).await;
    }
    let received = up.received.lock().unwrap().clone();
    assert_eq!(received.len(), 1_800);
    let mut last: HashMap<String, i64> = HashMap::new();
    for (k, seq) in received {
        let prev = last.insert(k.clone(), seq);
        assert!(prev.is_none_or(|p| p < seq), "{k} out of order");
    }
    let counts = store.catalog().state_counts("hss").await.unwrap();
    assert_eq!((counts.delivered, counts.expired), (1_800, 200));
    assert_eq!(
        counts.ready + counts.blocked + counts.in_flight + counts.dead,
        0
    );
    let _ = stop.send(true);
    handle.await.unwrap();
}

/// Answers `Busy` (the gateway had no sandbox slot) to the first `busy`
/// calls, then delivers; notes the connector's breaker as each call sees it.
struct Saturated {
    /// The connector's registry entry, where the dispatcher keeps its breaker.
    entry: Arc<switchboard::registry::ConnectorEntry>,
    busy: std::sync::atomic::AtomicU32,
    calls: Mutex<Vec<(u32, Option<switchboard::queue::breaker::BreakerState>)>>,
}

#[async_trait]
impl Deliver for Saturated {
    async fn deliver(&self, d: &Claimed) -> AttemptOutcome {
        let breaker = self.entry.breaker_state();
        self.calls.lock().unwrap().push((d.attempt, breaker));
        // One busy answer taken at a time: concurrent attempts must not
        // both take the last one.
        use std::sync::atomic::Ordering::SeqCst;
        if self
            .busy
            .fetch_update(SeqCst, SeqCst, |left| left.checked_sub(1))
            .is_ok()
        {
            return AttemptOutcome::Busy {
                reason: "no sandbox slot free".into(),
            };
        }
        AttemptOutcome::Done
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_gateway_neither_trips_the_breaker_nor_backs_off() {
    use switchboard::queue::breaker::BreakerState;
    const NAME: &str = "saturated";
    let t = common::sqlite().await;
    let store = t.store.clone();
    let events = (0..3)
        .map(|i| {
            common::ev(
                &format!("b{i}"),
                "number.assign",
                &[&format!("k{i}")],
                &[NAME],
            )
        })
        .collect();
    store.ingest(events, now_ms()).await.unwrap();
    let mut policy = policy(4);
    policy.name = NAME.into();
    // A retry policy that would wait a minute after the first failure.
    policy.retry = RetryPolicy {
        initial_backoff_ms: 60_000,
        max_backoff_ms: 60_000,
        ..RetryPolicy::default()
    };
    let registry = Registry::of([policy]);
    // Nine busy answers: three rounds for three events, well past the
    // breaker's five consecutive failures if they counted.
    let up = Arc::new(Saturated {
        entry: registry.get(NAME).unwrap(),
        busy: std::sync::atomic::AtomicU32::new(9),
        calls: Mutex::new(Vec::new()),
    });
    let (stop, rx) = watch::channel(false);
    let handle = dispatch::spawn(
        store.clone(),
        up.clone(),
        registry,
        settings(Duration::from_secs(1)),
        rx,
    );
    wait_until("all three delivered after the busy answers", async || {
        store.catalog().state_counts(NAME).await.unwrap().delivered == 3
    })
    .await;
    let calls = up.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 12, "{calls:?}");
    for (attempt, breaker) in &calls {
        assert!(
            matches!(
                breaker,
                None | Some(BreakerState::Closed {
                    consecutive_failures: 0,
                    ..
                })
            ),
            "attempt {attempt} saw the breaker at {breaker:?}"
        );
    }
    let _ = stop.send(true);
    handle.await.unwrap();
}

/// Answers every attempt with a transient failure.
struct Down;

#[async_trait]
impl Deliver for Down {
    async fn deliver(&self, _d: &Claimed) -> AttemptOutcome {
        AttemptOutcome::Retry {
            after: None,
            reason: "503 service unavailable".into(),
        }
    }
}

/// `GET path` through the router, as text.
async fn get(app: &axum::Router, path: &str) -> String {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let req = axum::http::Request::builder()
        .uri(path)
        .body(axum::body::Body::empty())
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), axum::http::StatusCode::OK, "{path}");
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// The dispatcher, the API and `/metrics` hold the same registry entry: the
/// breaker the dispatcher opened is the one `GET /v1/connectors/{name}`
/// shows, its attempts are the ones `/metrics` counts, and the store's
/// breaker log has the change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_and_metrics_show_the_breaker_and_attempts_the_dispatcher_set() {
    use switchboard::api::{router, AppState};
    let t = common::sqlite().await;
    let fleet = common::fleet(&[("hss", &["*"])]);
    let app = router(AppState {
        store: t.store.clone(),
        fleet: fleet.clone(),
        connectors: None,
        max_body_bytes: 1 << 20,
        max_batch: 100,
        tokens: switchboard::api::auth::Tokens::new(&[]),
    });
    let events = (0..8)
        .map(|i| common::ev(&format!("d{i}"), "t", &[&format!("k{i}")], &["hss"]))
        .collect();
    t.store.ingest(events, now_ms()).await.unwrap();
    let view: serde_json::Value =
        serde_json::from_str(&get(&app, "/v1/connectors/hss").await).unwrap();
    assert!(view["breaker"].is_null(), "nothing attempted yet: {view}");

    let (stop, rx) = watch::channel(false);
    let handle = dispatch::spawn(
        t.store.clone(),
        Arc::new(Down),
        fleet.registry().clone(),
        settings(Duration::from_secs(1)),
        rx,
    );
    wait_until("the breaker opened", async || {
        fleet.registry().get("hss").unwrap().breaker().is_open()
    })
    .await;
    let _ = stop.send(true);
    handle.await.unwrap();

    let view: serde_json::Value =
        serde_json::from_str(&get(&app, "/v1/connectors/hss").await).unwrap();
    assert_ne!(view["breaker"]["state"], "closed", "{view}");
    let metrics = get(&app, "/metrics").await;
    let value = |prefix: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no {prefix}: {metrics}"))
            .trim()
            .parse()
            .unwrap()
    };
    let retries = value(r#"switchboard_attempts_total{connector="hss",outcome="retry"}"#);
    assert!(
        retries >= 5,
        "the breaker opens at the fifth failure: {metrics}"
    );
    assert_eq!(
        value(r#"switchboard_attempt_duration_seconds_count{connector="hss"}"#),
        retries
    );
    // The change is written to the store's breaker log off the attempt's
    // path, so it may land a moment after the breaker opened.
    wait_until("the breaker log has the change", async || {
        t.store
            .catalog()
            .breaker_transitions("hss", 10)
            .await
            .unwrap()
            .iter()
            .any(|r| (r.from.as_str(), r.to.as_str()) == ("closed", "open"))
    })
    .await;
}

/// A connector double with bugs: its first attempt of `slow` never ends,
/// its first attempt of `boom` panics, and the third time the dispatcher
/// asks for its egress gate it panics (inside the connector's loop).
#[derive(Default)]
struct Buggy {
    gate_asked: std::sync::atomic::AtomicUsize,
    started: Mutex<Vec<(String, u32)>>,
}

#[async_trait]
impl Deliver for Buggy {
    async fn deliver(&self, d: &Claimed) -> AttemptOutcome {
        self.started
            .lock()
            .unwrap()
            .push((d.event.id.clone(), d.attempt));
        match (d.event.id.as_str(), d.attempt) {
            ("slow", 1) => std::future::pending().await,
            ("boom", 1) => panic!("boom: a bug in an attempt"),
            _ => AttemptOutcome::Done,
        }
    }

    fn egress_gate(&self) -> Option<Arc<switchboard_sandbox::EgressGate>> {
        let n = self
            .gate_asked
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if n == 2 {
            panic!("boom: a bug in the connector's loop");
        }
        None
    }
}

/// A panic in an attempt or in a connector's loop is logged, counted and
/// survived: the loop starts again, what it held in flight goes back to
/// the queue at once, and everything is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_an_attempt_or_a_loop_never_stops_delivery() {
    let t = common::sqlite().await;
    let buggy = Arc::new(Buggy::default());
    let registry = Registry::of([policy(4)]);
    let (stop, rx) = watch::channel(false);
    let handle = dispatch::spawn(
        t.store.clone(),
        buggy.clone(),
        registry.clone(),
        settings(Duration::from_secs(1)),
        rx,
    );
    let events = ["slow", "boom", "after"]
        .iter()
        .map(|id| common::ev(id, "t", &[id], &["hss"]))
        .collect();
    t.store.ingest(events, now_ms()).await.unwrap();
    registry.wake("hss");
    wait_until("all delivered", async || {
        t.store
            .catalog()
            .state_counts("hss")
            .await
            .unwrap()
            .delivered
            == 3
    })
    .await;
    stop.send(true).unwrap();
    handle.await.unwrap();
    let started = buggy.started.lock().unwrap().clone();
    assert!(started.contains(&("slow".into(), 2)), "{started:?}");
    assert!(started.contains(&("boom".into(), 2)), "{started:?}");
    // The hung attempt was handed back when the loop restarted, not when
    // its 30 s lease ended (the test would have timed out).
    let slow = t.store.catalog().event("slow").await.unwrap().unwrap();
    assert_eq!(slow.deliveries[0].attempts, 2);
    let mut text = String::new();
    switchboard::metrics::global().render(&mut text);
    for task in ["dispatch:hss", "attempt:hss"] {
        assert!(
            text.contains(&format!(
                "switchboard_task_panics_total{{task=\"{task}\"}} 1"
            )),
            "{text}"
        );
    }
}
