//! Several nodes on one PostgreSQL database. Each node is a separately opened
//! store (its own pool, as separate gateway processes have), and they race
//! ingest, claim, completion and lease rescue on the same lanes. The lanes
//! must hold across nodes: never two deliveries of a lane at once, each lane
//! in accept order, nothing lost, no lane left waiting for a completion that
//! already happened, and a dead node's leases taken over.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use switchboard::dispatch;
use switchboard::queue::breaker::BreakerPolicy;
use switchboard::queue::retry::RetryPolicy;
use switchboard::queue::{now_ms, OnDead};
use switchboard::store::{self, Completion, CompletionKind, Store};
use tokio::sync::watch;

const CONNECTORS: [&str; 2] = ["hss", "crm"];
const KEYS: usize = 4;
const EVENTS: usize = 900;
/// Producers per node.
const PRODUCERS: usize = 2;
const LEASE_MS: i64 = 1_500;

#[derive(Default, Clone)]
struct Observed {
    /// Lanes with a delivery running now.
    busy: HashSet<(String, String)>,
    /// Per lane, the seqs of the deliveries that finished, in finishing order.
    finished: HashMap<(String, String), Vec<i64>>,
    violations: Vec<String>,
}

async fn worker(
    node: Arc<dyn Store>,
    connector: &'static str,
    seen: Arc<Mutex<Observed>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    abandon_after: Option<usize>,
) {
    let mut done = 0usize;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let now = now_ms();
        let batch = match node.claim(connector, 4, now, LEASE_MS).await {
            Ok(b) => b,
            Err(e) => panic!("claim failed: {e}"),
        };
        if batch.is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        }
        {
            let mut s = seen.lock().unwrap();
            for d in &batch {
                for k in &d.event.keys {
                    if !s.busy.insert((connector.to_string(), k.clone())) {
                        s.violations.push(format!(
                            "{connector}/{k}: {} started while another delivery of the lane ran",
                            d.event.id
                        ));
                    }
                }
            }
        }
        if abandon_after.is_some_and(|n| done >= n) {
            // This node dies holding its leases: the others must take over
            // once the leases expire, and not before (the rows stay
            // in_flight, so their lanes stay closed meanwhile).
            let mut s = seen.lock().unwrap();
            for d in &batch {
                for k in &d.event.keys {
                    s.busy.remove(&(connector.to_string(), k.clone()));
                }
            }
            return;
        }
        tokio::time::sleep(Duration::from_millis(rand::random::<u64>() % 4)).await;
        let mut items = Vec::new();
        {
            let mut s = seen.lock().unwrap();
            for d in &batch {
                // One in ten attempts fails transiently and comes back at once.
                let retry = rand::random::<u8>().is_multiple_of(10);
                for k in &d.event.keys {
                    let lane = (connector.to_string(), k.clone());
                    s.busy.remove(&lane);
                    if !retry {
                        s.finished.entry(lane).or_default().push(d.event.seq);
                    }
                }
                let kind = if retry {
                    CompletionKind::Retry {
                        at: now_ms(),
                        error: "flaky".into(),
                    }
                } else {
                    CompletionKind::Delivered
                };
                items.push(Completion::of(d, kind));
            }
        }
        let ok = node.complete(items, now_ms()).await.expect("complete");
        assert!(ok.iter().all(|&b| b), "a live lease was not current");
        done += batch.len();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_racing_on_shared_lanes_keep_order_and_lose_nothing() {
    let t = common::postgres().await;
    let nodes: Vec<Arc<dyn Store>> = vec![
        t.store.clone(),
        store::open(&t.url).await.unwrap(),
        store::open(&t.url).await.unwrap(),
    ];
    let seen = Arc::new(Mutex::new(Observed::default()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));

    // Workers: every node claims for every connector; node 2 dies after a
    // few deliveries of `hss`, leaving its claimed batch behind.
    let mut workers = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        for c in CONNECTORS {
            let abandon = (i == 2 && c == "hss").then_some(20);
            workers.push(tokio::spawn(worker(
                node.clone(),
                c,
                seen.clone(),
                stop.clone(),
                abandon,
            )));
        }
    }
    // Rescuers on the surviving nodes.
    let rescuers: Vec<_> = nodes[..2]
        .iter()
        .map(|n| {
            let n = n.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut rescued = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    rescued += n.rescue_expired(now_ms()).await.unwrap();
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                rescued
            })
        })
        .collect();

    // Producers: each node ingests a third of the events, in small batches,
    // one or two keys each, so every lane sees events from every node.
    let mut producers = Vec::new();
    let streams = nodes.len() * PRODUCERS;
    for (i, node) in (0..streams).map(|i| (i, nodes[i % nodes.len()].clone())) {
        producers.push(tokio::spawn(async move {
            let mut n = i;
            while n < EVENTS {
                let mut batch = Vec::new();
                for _ in 0..3 {
                    if n >= EVENTS {
                        break;
                    }
                    let a = format!("n{}", n % KEYS);
                    let b = format!("n{}", (n * 7 + 3) % KEYS);
                    let keys: Vec<&str> = if n % 3 == 0 && a != b {
                        vec![&a, &b]
                    } else {
                        vec![&a]
                    };
                    batch.push(common::ev(&format!("e{n}"), "t", &keys, &CONNECTORS));
                    n += streams;
                }
                node.ingest(batch, now_ms()).await.expect("ingest");
            }
        }));
    }
    for p in producers {
        p.await.unwrap();
    }

    // Wait until every delivery is final (or give up after a minute).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let mut delivered = 0;
        for c in CONNECTORS {
            delivered += t.store.catalog().state_counts(c).await.unwrap().delivered;
        }
        if delivered == (EVENTS * CONNECTORS.len()) as u64 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "only {delivered} of {} deliveries finished",
            EVENTS * CONNECTORS.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    let mut rescued = 0;
    for r in rescuers {
        rescued += r.await.unwrap();
    }

    let s = seen.lock().unwrap().clone();
    assert!(s.violations.is_empty(), "{:#?}", s.violations);
    assert!(rescued > 0, "the dead node's leases were never taken over");
    // Every lane ran in accept order, each delivery once.
    for ((c, k), seqs) in &s.finished {
        let mut sorted = seqs.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(seqs, &sorted, "lane {c}/{k} ran out of order");
    }
    let left = t.count_rows("lane_entries").await;
    assert_eq!(left, 0, "lanes left behind");
}

/// A destination double: answers every attempt with `outcome`, counting
/// attempts with their start time.
struct Counting {
    fail: bool,
    attempts: Mutex<Vec<i64>>,
}

#[async_trait::async_trait]
impl dispatch::Deliver for Counting {
    async fn deliver(&self, _d: &switchboard::store::Claimed) -> dispatch::AttemptOutcome {
        self.attempts.lock().unwrap().push(now_ms());
        if self.fail {
            dispatch::AttemptOutcome::Retry {
                after: None,
                reason: "503 down".into(),
            }
        } else {
            dispatch::AttemptOutcome::Done
        }
    }
}

/// Three dispatchers, one per node, all on `t`'s database, delivering
/// `events` unkeyed events of connector `hss` through `deliver`.
async fn three_dispatchers(
    t: &common::TestStore,
    deliver: Arc<Counting>,
    rate: Option<f64>,
    events: usize,
) -> Vec<(watch::Sender<bool>, tokio::task::JoinHandle<()>)> {
    let batch = (0..events)
        .map(|i| common::ev(&format!("e{i}"), "t", &[], &["hss"]))
        .collect();
    t.store.ingest(batch, now_ms()).await.unwrap();
    let mut running = Vec::new();
    for _ in 0..3 {
        let node = store::open(&t.url).await.unwrap();
        let policy = switchboard::registry::ConnectorPolicy {
            name: "hss".into(),
            concurrency: 4,
            rate,
            retry: RetryPolicy {
                initial_backoff_ms: 10,
                max_backoff_ms: 50,
                ..RetryPolicy::default()
            },
            breaker: BreakerPolicy {
                failure_threshold: 3,
                probe_initial_ms: 200,
                probe_max_ms: 200,
            },
            on_dead: OnDead::Hold,
            attempt_timeout: Duration::from_secs(5),
        };
        let settings = dispatch::DispatchSettings {
            lease_ms: 30_000,
            rescue_interval: Duration::from_millis(500),
            poll_interval: Duration::from_millis(20),
            shutdown_grace: Duration::from_secs(2),
            clock: switchboard::clock::Clock::wall(),
        };
        let (stop, rx) = watch::channel(false);
        let handle = dispatch::spawn(
            node,
            deliver.clone(),
            switchboard::registry::Registry::of([policy]),
            settings,
            rx,
        );
        running.push((stop, handle));
    }
    running
}

async fn stop_all(running: Vec<(watch::Sender<bool>, tokio::task::JoinHandle<()>)>) {
    for (stop, _) in &running {
        stop.send(true).unwrap();
    }
    for (_, handle) in running {
        handle.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_destination_gets_one_probe_per_interval_from_the_whole_cluster() {
    let t = common::postgres().await;
    let deliver = Arc::new(Counting {
        fail: true,
        attempts: Mutex::new(Vec::new()),
    });
    let started = now_ms();
    let running = three_dispatchers(&t, deliver.clone(), None, 300).await;
    tokio::time::sleep(Duration::from_millis(4_000)).await;
    stop_all(running).await;
    let attempts = deliver.attempts.lock().unwrap().clone();
    // After the opening wave (each node trips its own breaker or adopts the
    // shared one within a second), one probe per 200 ms for the cluster:
    // about 10 in the last two seconds. Three independent breakers would
    // make about 30.
    let late = attempts.iter().filter(|&&at| at >= started + 2_000).count();
    assert!(
        (5..=14).contains(&late),
        "{late} attempts in 2 s against a dead destination from 3 nodes \
         (one probe per 200 ms is about 10)"
    );
    assert!(attempts.len() < 60, "{} attempts in all", attempts.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rate_limit_holds_for_the_cluster_not_per_node() {
    let t = common::postgres().await;
    let deliver = Arc::new(Counting {
        fail: false,
        attempts: Mutex::new(Vec::new()),
    });
    let started = now_ms();
    let running = three_dispatchers(&t, deliver.clone(), Some(20.0), 1_000).await;
    tokio::time::sleep(Duration::from_millis(3_000)).await;
    stop_all(running).await;
    let attempts = deliver.attempts.lock().unwrap().clone();
    let in_window = attempts.iter().filter(|&&at| at < started + 3_000).count();
    // 20/s for the cluster with a one-second burst: about 20 + 3 × 20 = 80
    // in 3 s. Per-node buckets would allow three times as many.
    assert!(
        (40..=110).contains(&in_window),
        "{in_window} deliveries in 3 s at a cluster-wide 20/s"
    );
}
