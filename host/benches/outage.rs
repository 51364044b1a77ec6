//! Issue 5's outage figures: a destination down for 72 hours with 1,000,000
//! deliveries queued for it, run through the real store and the real
//! dispatcher on a simulated clock, then the backlog drained into a local
//! sink once the destination is back.
//!
//! `cargo bench -p switchboard --bench outage -- [options]`; BENCHMARKS.md
//! records what it printed.
//!
//! What is real and what is simulated:
//! - The store is opened as the gateway opens it (`store::open`: SQLite WAL,
//!   `synchronous=FULL`, one writer with group commit) in a fresh temp dir on
//!   the real disk. The dispatcher is `dispatch::spawn` with the default
//!   breaker, retry and dispatch settings.
//! - Time is a [`Clock::simulated`]: the dispatcher's sleeps, leases, retry
//!   timers, breaker probes and rate tokens all run on it. A driver moves it
//!   forward only when the dispatcher is at rest (every loop asleep on the
//!   clock, no attempt running), to the earliest deadline but at least one
//!   tick (1 s) on, so a timer fires up to one tick late.
//! - The destinations are in-process doubles: `hss` answers "connection
//!   refused" (a `retry`) until the outage ends, then `done`; `crm` is
//!   always up. Each attempt is counted with its simulated time.
//! - The drain is timed in real time (the simulated clock stands still while
//!   attempts run), from the first successful attempt to the last delivery.
//!   Its sink is in-process, so the figure is the store and dispatcher's
//!   rate, not a connector's.
//! - `--mix coalesce|plain` queues a telecom backlog instead of number
//!   assigns: `--keys` customers, each changing a full-state attribute
//!   (`forwarding.set`) again and again, one event in ten a number move on
//!   the customer and a number (`number.move`, never full-state). With
//!   `coalesce` the route declares `forwarding.*` full-state per customer
//!   (SPEC §3); with `plain` it does not. The sink keeps each customer's
//!   last forwarding value and counts the moves; the run checks both
//!   against what the backlog says they must end as, so the two modes
//!   prove the same final state with different numbers of deliveries.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use switchboard::clock::Clock;
use switchboard::config::DispatchConfig;
use switchboard::dispatch::{self, AttemptOutcome, Deliver, DispatchSettings};
use switchboard::queue::breaker::BreakerPolicy;
use switchboard::queue::event::parse_body;
use switchboard::queue::retry::RetryPolicy;
use switchboard::queue::route::{coalesce_of, Route, RouteSpec};
use switchboard::queue::{now_ms, Millis, OnDead};
use switchboard::registry::{ConnectorPolicy, Registry};
use switchboard::store::{self, Claimed, IngestOutcome, Routed, Store};
use tokio::sync::watch;

/// The allocator the `switchboard` binary runs with (`host/src/main.rs`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const DOWN: &str = "hss";
const UP: &str = "crm";
const HOUR: Millis = 3_600_000;

struct Opts {
    backlog: usize,
    hours: i64,
    keys: usize,
    tick_ms: i64,
    /// A new event for each connector every this many simulated ms.
    trickle_ms: i64,
    concurrency: usize,
    dir: Option<PathBuf>,
    /// `Some(true)`: the telecom mix with coalescing; `Some(false)`: the mix without.
    mix: Option<bool>,
}

const USAGE: &str = "usage: cargo bench -p switchboard --bench outage -- \
[--backlog N] [--hours H] [--keys N] [--tick-ms MS] [--trickle-ms MS] \
[--concurrency N] [--dir PATH] [--mix coalesce|plain]";

fn parse_args() -> Opts {
    let mut o = Opts {
        backlog: 1_000_000,
        hours: 72,
        keys: 100_000,
        tick_ms: 1_000,
        trickle_ms: 60_000,
        concurrency: 64,
        dir: None,
        mix: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| -> String {
            args.next()
                .unwrap_or_else(|| panic!("{name} needs a value\n{USAGE}"))
        };
        match a.as_str() {
            "--bench" => {}
            "--backlog" => o.backlog = value("--backlog").parse().expect(USAGE),
            "--hours" => o.hours = value("--hours").parse().expect(USAGE),
            "--keys" => o.keys = value("--keys").parse().expect(USAGE),
            "--tick-ms" => o.tick_ms = value("--tick-ms").parse().expect(USAGE),
            "--trickle-ms" => o.trickle_ms = value("--trickle-ms").parse().expect(USAGE),
            "--concurrency" => o.concurrency = value("--concurrency").parse().expect(USAGE),
            "--dir" => o.dir = Some(value("--dir").into()),
            "--mix" => {
                o.mix = Some(match value("--mix").as_str() {
                    "coalesce" => true,
                    "plain" => false,
                    _ => panic!("--mix takes coalesce or plain\n{USAGE}"),
                })
            }
            other => panic!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    assert!(o.keys > 0 && o.tick_ms > 0 && o.trickle_ms > 0, "{USAGE}");
    o
}

/// Both destinations, counting what reaches them.
struct Upstreams {
    clock: Clock,
    /// Simulated time the outage ends (`i64::MAX` while it lasts).
    back_at: AtomicI64,
    /// Simulated times of the attempts `hss` refused.
    refused: Mutex<Vec<Millis>>,
    delivered: AtomicU64,
    /// Real time of the first attempt `hss` accepted.
    first_success: Mutex<Option<Instant>>,
    /// The last event seq `hss` received per key: order is checked on arrival.
    last_seq: Mutex<HashMap<String, i64>>,
    out_of_order: AtomicU64,
    up_delivered: AtomicU64,
    /// Simulated ms between accept and delivery, worst seen, for `crm`.
    up_worst_lag: AtomicI64,
    /// The mix: each customer's last forwarding value (the event id), and
    /// the number moves received.
    forwarding: Mutex<HashMap<String, String>>,
    moves: AtomicU64,
}

#[async_trait]
impl Deliver for Upstreams {
    async fn deliver(&self, d: &Claimed) -> AttemptOutcome {
        let now = self.clock.now();
        if d.connector == UP {
            self.up_worst_lag
                .fetch_max(now - d.event.accepted_at, Ordering::SeqCst);
            self.up_delivered.fetch_add(1, Ordering::SeqCst);
            return AttemptOutcome::Done;
        }
        if now < self.back_at.load(Ordering::SeqCst) {
            self.refused.lock().unwrap().push(now);
            return AttemptOutcome::Retry {
                after: None,
                reason: "connection refused (simulated outage)".into(),
            };
        }
        {
            let mut last = self.last_seq.lock().unwrap();
            for k in &d.event.keys {
                let prev = last.insert(k.clone(), d.event.seq);
                if prev.is_some_and(|p| p >= d.event.seq) {
                    self.out_of_order.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
        match d.event.event_type.as_str() {
            "forwarding.set" => {
                let customer = d.event.keys[0].clone();
                self.forwarding
                    .lock()
                    .unwrap()
                    .insert(customer, d.event.id.clone());
            }
            "number.move" => {
                self.moves.fetch_add(1, Ordering::SeqCst);
            }
            _ => {}
        }
        self.first_success
            .lock()
            .unwrap()
            .get_or_insert_with(Instant::now);
        self.delivered.fetch_add(1, Ordering::SeqCst);
        AttemptOutcome::Done
    }
}

fn event(id: &str, ty: &str, key: &str, pad: &str) -> switchboard::queue::event::NewEvent {
    event_on(id, ty, &[key], pad)
}

fn event_on(id: &str, ty: &str, keys: &[&str], pad: &str) -> switchboard::queue::event::NewEvent {
    let body = serde_json::json!({"id": id, "type": ty, "keys": keys,
                                  "payload": {"key": keys[0], "pad": pad}});
    parse_body(body.to_string().as_bytes(), 1)
        .unwrap()
        .remove(0)
}

/// The mix's `i`-th backlog event for `customers` customers, routed to the
/// down destination through `routes` (so coalescing is what the config
/// declares, as the gateway computes it).
fn mix_event(i: usize, customers: usize, routes: &[Route], pad: &str) -> Routed {
    let customer = format!("customer:{}", i % customers);
    let e = if i % 10 == 9 {
        let number = format!("msisdn:{}", i % (customers * 3));
        event_on(&format!("b{i}"), "number.move", &[&customer, &number], pad)
    } else {
        event_on(&format!("b{i}"), "forwarding.set", &[&customer], pad)
    };
    let mut r = Routed::new(e, vec![DOWN.into()]);
    if let Some(tag) = coalesce_of(routes, &r.event.event_type, &r.event.keys) {
        r.coalesce.insert(DOWN.into(), tag);
    }
    r
}

async fn ingest(store: &dyn Store, events: Vec<Routed>, now: Millis) {
    let n = events.len();
    match store.ingest(events, now).await.unwrap() {
        IngestOutcome::Accepted(c) => assert_eq!(c.accepted as usize, n),
        other => panic!("ingest refused: {other:?}"),
    }
}

fn disk_bytes(db: &std::path::Path) -> u64 {
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    [db.to_path_buf(), PathBuf::from(wal)]
        .iter()
        .map(|p| std::fs::metadata(p).map_or(0, |m| m.len()))
        .sum()
}

fn policy(name: &str, concurrency: usize) -> ConnectorPolicy {
    ConnectorPolicy {
        name: name.into(),
        concurrency,
        rate: None,
        retry: RetryPolicy::default(),
        breaker: BreakerPolicy::default(),
        on_dead: OnDead::Hold,
        attempt_timeout: Duration::from_secs(30),
    }
}

fn main() {
    let o = parse_args();
    println!(
        "switchboard outage simulation: {} cores, load average {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/loadavg")
            .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    );
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(run(o));
}

async fn run(o: Opts) {
    let parent = o.dir.clone().unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::Builder::new()
        .prefix("sb-outage-")
        .tempdir_in(&parent)
        .unwrap();
    let path = dir.path().join("outage.db");
    let store = store::open(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    println!("  database: {} (WAL, synchronous=FULL)", path.display());
    let t0 = now_ms();
    let clock = Clock::simulated(t0);
    let pad = "x".repeat(200);

    // 1. The backlog, queued before the dispatcher starts (as if it had
    //    built up while the destination was already down). The mix posts
    //    one event per request, as a config app does.
    let routes: Vec<Route> = match o.mix {
        Some(true) => vec![serde_json::from_value::<RouteSpec>(serde_json::json!(
            {"match": "forwarding.*", "coalesce_key": "customer"}))
        .unwrap()
        .compile()
        .unwrap()],
        _ => vec![],
    };
    let started = Instant::now();
    let mut done = 0;
    // The mix's final state: each customer's last forwarding event, and moves.
    let mut want_forwarding: HashMap<String, String> = HashMap::new();
    let mut want_moves = 0u64;
    while done < o.backlog {
        let k = 1_000.min(o.backlog - done);
        if o.mix.is_some() {
            let mut posts = Vec::with_capacity(k);
            for i in done..done + k {
                let r = mix_event(i, o.keys, &routes, &pad);
                if r.event.event_type == "number.move" {
                    want_moves += 1;
                } else {
                    want_forwarding.insert(r.event.keys[0].clone(), r.event.id.clone());
                }
                let store = store.clone();
                posts.push(async move { ingest(store.as_ref(), vec![r], t0).await });
            }
            futures::future::join_all(posts).await;
        } else {
            let batch = (done..done + k)
                .map(|i| {
                    let e = event(
                        &format!("b{i}"),
                        "number.assign",
                        &format!("msisdn:{}", i % o.keys),
                        &pad,
                    );
                    Routed::new(e, vec![DOWN.into()])
                })
                .collect();
            ingest(store.as_ref(), batch, t0).await;
        }
        done += k;
    }
    let backlog_bytes = disk_bytes(&path);
    println!(
        "backlog: {} deliveries for {DOWN} on {} keys queued in {:.1} s; database {:.1} MiB \
         = {:.0} bytes per queued delivery (db + wal)",
        o.backlog,
        o.keys.min(o.backlog),
        started.elapsed().as_secs_f64(),
        backlog_bytes as f64 / (1024.0 * 1024.0),
        backlog_bytes as f64 / o.backlog.max(1) as f64
    );

    // 2. The dispatcher on the simulated clock, with the gateway's defaults.
    let up = Arc::new(Upstreams {
        clock: clock.clone(),
        back_at: AtomicI64::new(i64::MAX),
        refused: Mutex::new(Vec::new()),
        delivered: AtomicU64::new(0),
        first_success: Mutex::new(None),
        last_seq: Mutex::new(HashMap::new()),
        out_of_order: AtomicU64::new(0),
        up_delivered: AtomicU64::new(0),
        up_worst_lag: AtomicI64::new(0),
        forwarding: Mutex::new(HashMap::new()),
        moves: AtomicU64::new(0),
    });
    let defaults = DispatchConfig::default();
    let settings = DispatchSettings {
        lease_ms: defaults.lease_ms as i64,
        rescue_interval: Duration::from_millis(defaults.rescue_interval_ms),
        poll_interval: Duration::from_millis(defaults.poll_interval_ms),
        shutdown_grace: Duration::from_secs(5),
        clock: clock.clone(),
    };
    let registry = Registry::of([policy(DOWN, o.concurrency), policy(UP, 16)]);
    let (stop, stop_rx) = watch::channel(false);
    let dispatcher = dispatch::spawn(
        store.clone(),
        up.clone(),
        registry.clone(),
        settings,
        stop_rx,
    );
    // Two connector loops and the lease rescuer sleep on the clock.
    const PARTICIPANTS: usize = 3;

    // 3. The outage: every `trickle_ms` a new event for each connector.
    let end = t0 + o.hours * HOUR;
    let real = Instant::now();
    let mut next_trickle = t0 + o.trickle_ms;
    let mut trickled = 0u64;
    let mut steps = 0u64;
    let mut next_report = t0 + 12 * HOUR;
    loop {
        let target = clock
            .step(PARTICIPANTS, o.tick_ms, next_trickle.min(end))
            .await;
        steps += 1;
        if target >= end {
            break;
        }
        if target == next_trickle {
            let n = trickled;
            let key = format!("msisdn:{}", n as usize % o.keys);
            let batch = vec![
                Routed::new(
                    event(&format!("t{n}"), "number.assign", &key, &pad),
                    vec![DOWN.into()],
                ),
                Routed::new(
                    event(&format!("u{n}"), "customer.update", &key, &pad),
                    vec![UP.into()],
                ),
            ];
            ingest(store.as_ref(), batch, target).await;
            registry.wake(DOWN);
            registry.wake(UP);
            clock.woke(2);
            trickled += 1;
            next_trickle += o.trickle_ms;
        }
        if target >= next_report {
            println!(
                "  t+{:>2} h: {} attempts refused so far, {} {UP} deliveries, {:.0} s real",
                (target - t0) / HOUR,
                up.refused.lock().unwrap().len(),
                up.up_delivered.load(Ordering::SeqCst),
                real.elapsed().as_secs_f64()
            );
            next_report += 12 * HOUR;
        }
    }
    let outage_real = real.elapsed();
    let refused = up.refused.lock().unwrap().clone();
    let counts = store.catalog().state_counts(DOWN).await.unwrap();
    println!(
        "outage: {} simulated hours in {:.1} s real ({steps} clock steps); {} events for each \
         connector arrived during it",
        o.hours,
        outage_real.as_secs_f64(),
        trickled
    );
    let opened_after = refused
        .windows(2)
        .position(|w| w[1] - w[0] >= 1_000)
        .map_or(refused.len(), |i| i + 1);
    let worst_minute = refused
        .iter()
        .enumerate()
        .skip(opened_after)
        .map(|(i, &t)| refused[i..].iter().take_while(|&&u| u < t + 60_000).count())
        .max()
        .unwrap_or(0);
    let budget = o.hours * 60;
    println!(
        "outage: {} attempts against {DOWN} in all ({} before the breaker opened, then {} \
         probes); at most {worst_minute} in any 60 s after it opened; budget (1 per 60 s): {budget}",
        refused.len(),
        opened_after,
        refused.len() - opened_after,
    );
    println!(
        "outage: {DOWN} backlog at the end: {} ready, {} blocked, {} in flight, {} dead; \
         database {:.1} MiB",
        counts.ready,
        counts.blocked,
        counts.in_flight,
        counts.dead,
        disk_bytes(&path) as f64 / (1024.0 * 1024.0)
    );
    println!(
        "outage: {UP} kept delivering: {} of {} delivered, worst accept-to-delivery {} ms \
         (simulated)",
        up.up_delivered.load(Ordering::SeqCst),
        trickled,
        up.up_worst_lag.load(Ordering::SeqCst)
    );

    // 4. The destination comes back: drive the clock until all is
    //    delivered but what was superseded (only ingest supersedes, and
    //    nothing is posted from here on).
    let superseded = counts.superseded;
    if o.mix.is_some() {
        println!(
            "coalescing {}: {superseded} of {} queued deliveries superseded before recovery",
            if o.mix == Some(true) { "on" } else { "off" },
            o.backlog as u64 + trickled
        );
    }
    let expected = (o.backlog as u64) + trickled - superseded;
    let back = clock.now();
    up.back_at.store(back, Ordering::SeqCst);
    let mut back_seen_at: Option<Millis> = None;
    let drain_cap = Instant::now() + Duration::from_secs(3_600);
    while up.delivered.load(Ordering::SeqCst) < expected {
        assert!(
            Instant::now() < drain_cap,
            "drain did not finish in an hour"
        );
        let before = clock.now();
        clock.step(PARTICIPANTS, o.tick_ms, Millis::MAX).await;
        if back_seen_at.is_none() && up.delivered.load(Ordering::SeqCst) > 0 {
            back_seen_at = Some(before);
        }
    }
    let finished = Instant::now();
    let first = up.first_success.lock().unwrap().unwrap();
    let drain = finished - first;
    println!(
        "recovery: first successful probe {} s (simulated) after the destination came back",
        (back_seen_at.unwrap_or(back) - back) / 1000
    );
    println!(
        "recovery: {expected} deliveries drained in {:.1} s real = {:.0} deliveries/s \
         (concurrency {}, in-process sink); {} out of order",
        drain.as_secs_f64(),
        expected as f64 / drain.as_secs_f64(),
        o.concurrency,
        up.out_of_order.load(Ordering::SeqCst)
    );
    let counts = store.catalog().state_counts(DOWN).await.unwrap();
    println!(
        "recovery: {DOWN} now {} delivered, {} ready, {} blocked, {} in flight, {} dead",
        counts.delivered, counts.ready, counts.blocked, counts.in_flight, counts.dead
    );
    assert_eq!(counts.delivered, expected, "every accepted event delivered");
    if o.mix.is_some() {
        let got = up.forwarding.lock().unwrap().clone();
        let moves = up.moves.load(Ordering::SeqCst);
        println!(
            "final state: {} customers, each with its last forwarding value: {}; number moves \
             delivered {moves} of {want_moves}",
            want_forwarding.len(),
            if got == want_forwarding { "yes" } else { "NO" }
        );
        assert_eq!(got, want_forwarding, "final forwarding state");
        assert_eq!(moves, want_moves, "every number move delivered");
    }
    assert_eq!(
        up.out_of_order.load(Ordering::SeqCst),
        0,
        "order per key kept"
    );
    let _ = stop.send(true);
    let _ = dispatcher.await;
}
