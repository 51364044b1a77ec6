//! A replay of a large history beside live traffic, through the real store
//! and the real replay step (`switchboard::replay::step`, what every node's
//! replay worker runs).
//!
//! 1. `--events` events (one key each) are accepted for `hss` and delivered:
//!    the history a restored destination has lost.
//! 2. Live traffic starts: an event for `hss` every `--live-every-ms`, on
//!    keys of its own, and a consumer that claims and completes whatever is
//!    ready (a destination that answers at once), timing each live event
//!    from acceptance to its claim. Ten seconds without a replay give the
//!    baseline.
//! 3. A replay of the whole history at `--rate` copies per second runs to
//!    the end beside it: its duration, copies per second, the process's
//!    memory (RSS now and at its peak), and the live events' latency during
//!    it, against the baseline.
//!
//! `cargo bench -p switchboard --bench replay -- [--events N] [--rate R]
//! [--live-every-ms MS] [--postgres URL]`; BENCHMARKS.md records what it
//! printed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use switchboard::config::{Bounds, ConnectorConfig};
use switchboard::fleet::Fleet;
use switchboard::queue::event::parse_body;
use switchboard::queue::{now_ms, Millis};
use switchboard::store::{self, Completion, CompletionKind, NewReplay, Routed, Store};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Opts {
    events: usize,
    rate: f64,
    live_every_ms: u64,
    postgres: Option<String>,
}

fn parse_args() -> Opts {
    const USAGE: &str = "usage: cargo bench -p switchboard --bench replay -- \
        [--events N] [--rate R] [--live-every-ms MS] [--postgres URL]";
    let mut o = Opts {
        events: 1_000_000,
        rate: 100_000.0,
        live_every_ms: 5,
        postgres: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| -> String {
            args.next()
                .unwrap_or_else(|| panic!("{name} needs a value\n{USAGE}"))
        };
        match a.as_str() {
            "--bench" => {}
            "--events" => o.events = value("--events").parse().expect(USAGE),
            "--rate" => o.rate = value("--rate").parse().expect(USAGE),
            "--live-every-ms" => o.live_every_ms = value("--live-every-ms").parse().expect(USAGE),
            "--postgres" => o.postgres = Some(value("--postgres")),
            other => panic!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    o
}

/// This process's resident memory now and at its peak, in MiB.
fn rss_mib() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(0.0, |kib| kib / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn event(id: &str, key: &str) -> switchboard::queue::event::NewEvent {
    let body = format!(
        r#"{{"id":"{id}","type":"number.assign","keys":["{key}"],"payload":{{"msisdn":"{key}","customer":"A1","pad":"{}"}}}}"#,
        "x".repeat(120)
    );
    parse_body(body.as_bytes(), 1).unwrap().remove(0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Claims and completes whatever `hss` has ready until `stop`; records each
/// live event's time from acceptance to claim.
async fn consume(
    store: Arc<dyn Store>,
    stop: Arc<AtomicBool>,
    accepted: Arc<Mutex<HashMap<String, Instant>>>,
    waits: Arc<Mutex<Vec<f64>>>,
) -> u64 {
    let mut delivered = 0;
    while !stop.load(Ordering::Relaxed) {
        let got = store.claim("hss", 512, now_ms(), 60_000).await.unwrap();
        if got.is_empty() {
            tokio::time::sleep(Duration::from_millis(1)).await;
            continue;
        }
        {
            let mut acc = accepted.lock().unwrap();
            let mut w = waits.lock().unwrap();
            for d in &got {
                if let Some(at) = acc.remove(&d.event.id) {
                    w.push(at.elapsed().as_secs_f64() * 1000.0);
                }
            }
        }
        delivered += got.len() as u64;
        let done = got
            .iter()
            .map(|d| Completion::of(d, CompletionKind::Delivered))
            .collect();
        store.complete(done, now_ms()).await.unwrap();
    }
    delivered
}

fn main() {
    let o = parse_args();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(run(o));
}

async fn run(o: Opts) {
    let dir = tempfile::tempdir().unwrap();
    let url = match &o.postgres {
        Some(u) => u.clone(),
        None => format!("sqlite://{}", dir.path().join("replay.db").display()),
    };
    let store = store::open(&url).await.unwrap();
    let backend = if o.postgres.is_some() {
        "PostgreSQL"
    } else {
        "SQLite"
    };
    let config: ConnectorConfig =
        serde_json::from_value(serde_json::json!({"name": "hss", "routes": ["number.*"]})).unwrap();
    let fleet = Fleet::new(vec![config], Bounds::default());

    // 1. The history, delivered.
    let started = Instant::now();
    let history_from: Millis = now_ms();
    for chunk in (0..o.events).collect::<Vec<_>>().chunks(1_000) {
        let batch = chunk
            .iter()
            .map(|i| {
                Routed::new(
                    event(&format!("h{i}"), &format!("msisdn:{i}")),
                    vec!["hss".into()],
                )
            })
            .collect();
        store.ingest(batch, now_ms()).await.unwrap();
    }
    loop {
        let got = store.claim("hss", 2_000, now_ms(), 60_000).await.unwrap();
        if got.is_empty() {
            break;
        }
        let done = got
            .iter()
            .map(|d| Completion::of(d, CompletionKind::Delivered))
            .collect();
        store.complete(done, now_ms()).await.unwrap();
    }
    let history_until = now_ms() + 1;
    println!(
        "{backend}: {} events stored and delivered in {:.1} s; RSS {:.0} MiB",
        o.events,
        started.elapsed().as_secs_f64(),
        rss_mib().0
    );

    // 2. Live traffic and a consumer.
    let stop = Arc::new(AtomicBool::new(false));
    let accepted: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let waits: Arc<Mutex<Vec<f64>>> = Arc::default();
    let consumer = tokio::spawn(consume(
        store.clone(),
        stop.clone(),
        accepted.clone(),
        waits.clone(),
    ));
    let producer = {
        let (store, stop, accepted) = (store.clone(), stop.clone(), accepted.clone());
        let every = Duration::from_millis(o.live_every_ms.max(1));
        tokio::spawn(async move {
            let mut n = 0u64;
            let mut tick = tokio::time::interval(every);
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let id = format!("live{n}");
                let key = format!("live:{}", n % 1_000);
                accepted.lock().unwrap().insert(id.clone(), Instant::now());
                store
                    .ingest(
                        vec![Routed::new(event(&id, &key), vec!["hss".into()])],
                        now_ms(),
                    )
                    .await
                    .unwrap();
                n += 1;
            }
            n
        })
    };
    tokio::time::sleep(Duration::from_secs(10)).await;
    let mut baseline: Vec<f64> = std::mem::take(&mut *waits.lock().unwrap());
    baseline.sort_by(f64::total_cmp);

    // 3. The replay, to the end.
    let asked = NewReplay {
        connector: "hss".into(),
        since: history_from,
        until: history_until,
        types: vec![],
        key: None,
        rate: o.rate,
    };
    let mut replay = store
        .catalog()
        .create_replay(&asked, "bench", now_ms())
        .await
        .unwrap();
    let t = Instant::now();
    let mut peak = rss_mib().1;
    let mut replayed = 0;
    let mut pages = 0;
    loop {
        let step_started = Instant::now();
        let step = switchboard::replay::step(store.as_ref(), &fleet, &replay, now_ms())
            .await
            .unwrap()
            .expect("the page is this run's");
        pages += 1;
        replayed += step.replayed;
        peak = peak.max(rss_mib().1);
        if step.done {
            break;
        }
        replay = store.catalog().replay(replay.id).await.unwrap().unwrap();
        // The worker's pacing: a page's copies at the replay's rate.
        let due = Duration::from_secs_f64(step.replayed as f64 / o.rate);
        if let Some(rest) = due.checked_sub(step_started.elapsed()) {
            tokio::time::sleep(rest).await;
        }
    }
    let copying = t.elapsed();
    // Until the copies are delivered too.
    loop {
        let c = store.catalog().state_counts("hss").await.unwrap();
        if c.ready + c.blocked + c.in_flight == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let drained = t.elapsed();
    let mut during: Vec<f64> = std::mem::take(&mut *waits.lock().unwrap());
    during.sort_by(f64::total_cmp);
    stop.store(true, Ordering::Relaxed);
    let live = producer.await.unwrap();
    let delivered = consumer.await.unwrap();
    let (rss, hwm) = rss_mib();
    println!(
        "replay: {replayed} copies in {pages} pages in {:.1} s = {:.0} copies/s (rate asked {}); \
         all delivered after {:.1} s",
        copying.as_secs_f64(),
        replayed as f64 / copying.as_secs_f64(),
        o.rate,
        drained.as_secs_f64()
    );
    println!(
        "memory: RSS {rss:.0} MiB now, peak {:.0} MiB (the process, store included)",
        peak.max(hwm)
    );
    println!(
        "live traffic (one event every {} ms, {live} in all, {delivered} deliveries consumed): \
         accept→claim p50 / p99 {:.1} / {:.1} ms before the replay ({} events), \
         {:.1} / {:.1} ms during it ({} events)",
        o.live_every_ms,
        percentile(&baseline, 0.5),
        percentile(&baseline, 0.99),
        baseline.len(),
        percentile(&during, 0.5),
        percentile(&during, 0.99),
        during.len()
    );
}
