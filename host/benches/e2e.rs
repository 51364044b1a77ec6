//! End-to-end figures (issue 20, "Measure first"): the real `switchboard`
//! binary, the shipped `webhook` connector and an HSS-like sink, driven by a
//! load generator posting a telecom mix, against the same requests sent to
//! the sink directly (the ceiling of this machine, measured in the same run).
//!
//! `cargo bench -p switchboard --bench e2e -- --backend sqlite --mode single
//! --concurrency 64 --events 20000` (or `make bench-e2e`); BENCHMARKS.md
//! records what it printed.
//!
//! What runs where:
//! - The gateway is `target/release/switchboard serve` as a child process,
//!   with a config written to a temp dir: the store (a SQLite file in that
//!   dir on the real disk, or a fresh schema on PostgreSQL), one `webhook`
//!   connector `hss` routing `*` to the sink, everything else as shipped.
//! - This process runs the load generator (`--concurrency` tasks sharing one
//!   HTTP client, so as many connections) and the sink (axum on
//!   127.0.0.1:0). On a small machine they compete with the gateway for the
//!   same cores; their own CPU per event is printed beside the gateway's.
//! - The mix, per 100 events: 40 `quota.notify` (no key), 30
//!   `customer.update` (`customer:<id>`), 15 number moves of two events each:
//!   `number.release` (keys `msisdn:<n>`, `customer:<old>`) then
//!   `number.assign` (`msisdn:<n>`, `customer:<new>`). The assign is posted
//!   as soon as the release is acknowledged (in a batch: right behind it), so
//!   both race through the gateway; every move has a number of its own, held
//!   by its old customer when the run starts.
//! - The sink answers like an HSS: an assign of a number another customer
//!   holds, or a release by a customer who does not hold it, is a 409 (the
//!   connector rejects it; counted as "reordered"). Replays (same
//!   `Idempotency-Key`) get the first answer again and are not counted twice.
//!   It records when each event first arrived.
//! - The ceiling sends each event's payload to a fresh sink, one request per
//!   event (moves in order, as above), with the connector's concurrency.
//! - `--mode ordered` posts like a config app that keeps order: an event
//!   goes out only once every earlier event sharing a key with it has been
//!   acknowledged (the ceiling keeps the same order), one per request.
//!
//! Figures: delivered events/s (first arrival at the sink, from the first
//! POST to the last arrival), ingest events/s (acknowledged, from the first
//! POST to the last 202), the gateway's CPU per event (utime + stime in
//! `/proc/<pid>/stat` around the measured run, warm-up excluded), its
//! context switches per event (every thread's, `/proc/<pid>/task/*/status`)
//! and memory
//! (`VmRSS`, `VmHWM`), request latency, event-to-delivery latency (from the
//! start of the POST that carried the event to its first arrival), lost
//! (acknowledged but not delivered within `--timeout`) and reordered.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Deserialize;
use serde_json::json;
use sqlx::Connection;

/// The allocator the `switchboard` binary runs with (`host/src/main.rs`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "usage: cargo bench -p switchboard --bench e2e -- \
[--backend sqlite|postgres] [--mode single|batch|ordered] [--concurrency N] [--events N] \
[--batch N] [--rate EVENTS_PER_S] [--connector-concurrency N] [--customers N] [--timeout SECS] \
[--kills N] [--recovery QUEUED] [--seed N] [--dir PATH] [--bin PATH] [--wasm PATH] [--no-ceiling]";

/// Events posted (and waited for) before the measured run: the first
/// deliveries instantiate the component and open connections.
const WARMUP: usize = 32;
/// Attempts per request before the generator gives up on it (503, connection
/// errors); each waits 50 ms more than the one before (9.5 s in all: enough
/// to ride out a `--kills` restart, as a real client retries).
const ATTEMPTS: u32 = 20;
/// How long the gateway stays down at each `--kills` kill.
const KILLED_FOR: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Single,
    Batch,
    /// One event per request, as a config app that keeps order posts: an
    /// event is posted only once every earlier event sharing a key with it
    /// is acknowledged (never two un-acknowledged events on one key).
    Ordered,
}

struct Opts {
    backend: Backend,
    mode: Mode,
    concurrency: usize,
    events: usize,
    batch: usize,
    connector_concurrency: usize,
    customers: usize,
    timeout: Duration,
    /// Events/s the generator offers the gateway (`None`: as fast as it answers).
    rate: Option<f64>,
    /// `kill -9`s of the gateway during the run, each restarted after
    /// [`KILLED_FOR`]: at 1/(N+1), 2/(N+1), … of the events delivered.
    kills: usize,
    /// Instead of the load run: the restart figure with this many
    /// deliveries queued (see [`recovery`]).
    recovery: usize,
    seed: u64,
    dir: Option<PathBuf>,
    bin: PathBuf,
    wasm: PathBuf,
    ceiling: bool,
}

fn parse_args() -> Opts {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_switchboard"));
    // <target>/release/switchboard → <target>/wasm32-wasip2/release/webhook.wasm
    let wasm = bin
        .ancestors()
        .nth(2)
        .map(|target| target.join("wasm32-wasip2/release/webhook.wasm"))
        .unwrap_or_default();
    let mut o = Opts {
        backend: Backend::Sqlite,
        mode: Mode::Single,
        concurrency: 64,
        events: 20_000,
        batch: 100,
        connector_concurrency: 64,
        customers: 1_000,
        timeout: Duration::from_secs(120),
        rate: None,
        kills: 0,
        recovery: 0,
        seed: 20,
        dir: None,
        bin,
        wasm,
        ceiling: true,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| -> String {
            args.next()
                .unwrap_or_else(|| panic!("{name} needs a value\n{USAGE}"))
        };
        match a.as_str() {
            "--bench" => {}
            "--backend" => {
                o.backend = match value("--backend").as_str() {
                    "sqlite" => Backend::Sqlite,
                    "postgres" => Backend::Postgres,
                    other => panic!("unknown backend {other:?}\n{USAGE}"),
                }
            }
            "--mode" => {
                o.mode = match value("--mode").as_str() {
                    "single" => Mode::Single,
                    "batch" => Mode::Batch,
                    "ordered" => Mode::Ordered,
                    other => panic!("unknown mode {other:?}\n{USAGE}"),
                }
            }
            "--concurrency" => o.concurrency = value("--concurrency").parse().expect(USAGE),
            "--events" => o.events = value("--events").parse().expect(USAGE),
            "--batch" => o.batch = value("--batch").parse().expect(USAGE),
            "--connector-concurrency" => {
                o.connector_concurrency = value("--connector-concurrency").parse().expect(USAGE)
            }
            "--customers" => o.customers = value("--customers").parse().expect(USAGE),
            "--timeout" => {
                o.timeout = Duration::from_secs_f64(value("--timeout").parse().expect(USAGE))
            }
            "--rate" => {
                let rate: f64 = value("--rate").parse().expect(USAGE);
                o.rate = (rate > 0.0).then_some(rate);
            }
            "--kills" => o.kills = value("--kills").parse().expect(USAGE),
            "--recovery" => o.recovery = value("--recovery").parse().expect(USAGE),
            "--seed" => o.seed = value("--seed").parse().expect(USAGE),
            "--dir" => o.dir = Some(value("--dir").into()),
            "--bin" => o.bin = value("--bin").into(),
            "--wasm" => o.wasm = value("--wasm").into(),
            "--no-ceiling" => o.ceiling = false,
            other => panic!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    assert!(
        o.concurrency > 0 && o.events > 0 && o.connector_concurrency > 0 && o.customers > 1,
        "{USAGE}"
    );
    assert!(
        o.mode != Mode::Batch || o.batch >= 2,
        "--batch must be at least 2 (a move is two events)\n{USAGE}"
    );
    assert!(
        o.bin.exists(),
        "{} is missing: cargo build --release -p switchboard",
        o.bin.display()
    );
    assert!(
        o.wasm.exists(),
        "{} is missing: build the connectors first (`make connectors`)",
        o.wasm.display()
    );
    o
}

fn main() {
    let opts = parse_args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    if opts.recovery > 0 {
        rt.block_on(recovery(&opts));
        return;
    }
    let load_before = loadavg();
    let mix = Mix::generate(&opts);
    println!(
        "switchboard e2e bench: backend={:?} mode={:?}{} concurrency={} rate={} \
         connector concurrency={} events={} ({} quota.notify, {} customer.update, \
         {} number moves), {} customers, {} cores, load average {load_before}",
        opts.backend,
        opts.mode,
        if opts.mode == Mode::Batch {
            format!(" batch={}", opts.batch)
        } else {
            String::new()
        },
        opts.concurrency,
        opts.rate
            .map_or_else(|| "as fast as answered".into(), |r| format!("{r}/s")),
        opts.connector_concurrency,
        mix.events.len(),
        mix.count("quota.notify"),
        mix.count("customer.update"),
        mix.count("number.assign"),
        opts.customers,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    let rows = rt.block_on(async {
        let mut rows = Vec::new();
        if opts.ceiling {
            rows.push(ceiling(&opts, &mix).await);
        }
        rows.push(through_gateway(&opts, &mix).await);
        rows
    });
    print_table(&rows);
    println!("load average before {load_before}, after {}", loadavg());
}

/// A directory for one gateway run, its store (a SQLite file there, or a
/// fresh PostgreSQL schema, returned for dropping) and its config: one
/// `webhook` connector `hss` routing everything to `sink`, with `extra`
/// TOML (connector tables) appended.
async fn prepare(
    opts: &Opts,
    prefix: &str,
    sink: SocketAddr,
    extra: &str,
) -> (tempfile::TempDir, PathBuf, Option<String>) {
    let parent = opts.dir.clone().unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(&parent)
        .unwrap();
    let (storage, schema) = match opts.backend {
        Backend::Sqlite => (
            format!("sqlite://{}", dir.path().join("switchboard.db").display()),
            None,
        ),
        Backend::Postgres => {
            let (url, schema) = fresh_schema().await;
            (url, Some(schema))
        }
    };
    let config = dir.path().join("switchboard.toml");
    std::fs::write(
        &config,
        format!(
            r#"[server]
listen = "127.0.0.1:{port}"

[storage]
url = "{storage}"

[runtime]
cache_dir = "{cache}"

[[connectors]]
name = "hss"
component = "{wasm}"
routes = ["*"]
allowed_hosts = ["{sink}"]
concurrency = {concurrency}

{extra}
[connectors.config]
url = "http://{sink}/op"
"#,
            port = free_port(),
            cache = dir.path().join("cache").display(),
            wasm = std::fs::canonicalize(&opts.wasm).unwrap().display(),
            concurrency = opts.connector_concurrency,
        ),
    )
    .unwrap();
    (dir, config, schema)
}

// ---------------------------------------------------------------------------
// The restart figure

/// `--recovery QUEUED`: QUEUED events, each on a lane of its own, posted in
/// batches of 1,000 to a gateway whose destination takes requests and never
/// answers, so that the connector's 64 attempts hang in flight with the rest
/// queued behind them; then `kill -9`, and the destination answers from now
/// on. Printed: from the restart (the spawn of the new process) to
/// listening, to the first delivery of a lane that was in flight at the
/// kill, and to the last of them. Leases are the default two minutes.
async fn recovery(opts: &Opts) {
    #[derive(Default)]
    struct Hanging {
        hang: std::sync::atomic::AtomicBool,
        answer: tokio::sync::Notify,
        /// Event ids of the requests taken while hanging.
        held: Mutex<Vec<String>>,
        /// First arrival after the hang, by event id.
        arrived: Mutex<HashMap<String, Instant>>,
    }
    async fn op(State(h): State<Arc<Hanging>>, headers: HeaderMap) -> StatusCode {
        let id = headers
            .get("x-switchboard-event")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        if h.hang.load(Ordering::SeqCst) {
            h.held.lock().unwrap().push(id);
            h.answer.notified().await;
            return StatusCode::SERVICE_UNAVAILABLE;
        }
        h.arrived
            .lock()
            .unwrap()
            .entry(id)
            .or_insert_with(Instant::now);
        StatusCode::OK
    }
    let sink = Arc::new(Hanging::default());
    sink.hang.store(true, Ordering::SeqCst);
    let app = Router::new()
        .route("/op", post(op))
        .with_state(sink.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sink_addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    // The hanging attempts must outlast the fill (about 20 s a million
    // here): one that times out first is retried behind what is queued.
    let hang_ms = (100_000 + opts.recovery as u64 / 20).min(3_600_000);
    let limits =
        format!("[connectors.limits]\ndeadline_ms = {hang_ms}\nrequest_timeout_ms = {hang_ms}\n");
    let (dir, config, schema) = prepare(opts, "switchboard-recovery-", sink_addr, &limits).await;
    let mut gateway = Gateway::start(&opts.bin, &config, dir.path(), 1);
    let ingest = format!("http://{}/v1/events", gateway.addr);
    let client = client(4);
    let queued = opts.recovery;
    let filled = Instant::now();
    for from in (0..queued).step_by(1_000) {
        let batch: Vec<serde_json::Value> = (from..(from + 1_000).min(queued))
            .map(|i| {
                json!({"id": format!("r{i}"), "type": "number.update", "keys": [format!("msisdn:{i}")],
                       "payload": {"op": "update", "msisdn": format!("{i}")}})
            })
            .collect();
        let resp = client.post(&ingest).json(&batch).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 202, "prefill refused");
    }
    println!(
        "recovery: {queued} events queued in {:.1} s",
        filled.elapsed().as_secs_f64()
    );
    wait_until(Duration::from_secs(60), || {
        sink.held.lock().unwrap().len() >= opts.connector_concurrency
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "the attempts never filled the connector; {}",
            gateway.log_tail()
        )
    });
    let in_flight: Vec<String> = sink.held.lock().unwrap().clone();
    gateway.kill();
    sink.hang.store(false, Ordering::SeqCst);
    sink.answer.notify_waiters();
    let restarted = Instant::now();
    let (bin, cfg, d) = (opts.bin.clone(), config.clone(), dir.path().to_path_buf());
    let gateway = tokio::task::spawn_blocking(move || Gateway::start(&bin, &cfg, &d, 2))
        .await
        .unwrap();
    let listening = restarted.elapsed();
    let first = |all: bool| {
        let arrived = sink.arrived.lock().unwrap();
        let times: Vec<Instant> = in_flight
            .iter()
            .filter_map(|id| arrived.get(id).copied())
            .collect();
        match all {
            false => times.into_iter().min(),
            true if times.len() == in_flight.len() => times.into_iter().max(),
            true => None,
        }
    };
    wait_until(Duration::from_secs(300), || first(true).is_some())
        .await
        .unwrap_or_else(|| {
            panic!(
                "the lanes in flight never delivered; {}",
                gateway.log_tail()
            )
        });
    let secs = |t: Option<Instant>| t.map_or(f64::NAN, |t| (t - restarted).as_secs_f64());
    println!(
        "recovery ({:?}, {queued} queued, {} in flight at the kill, leases {} s): \
         listening {:.2} s after the restart; first delivery of a lane that was in \
         flight {:.2} s; all {} of them {:.2} s",
        opts.backend,
        in_flight.len(),
        (hang_ms / 1000 + 10).max(120),
        listening.as_secs_f64(),
        secs(first(false)),
        in_flight.len(),
        secs(first(true)),
    );
    drop(gateway);
    if let Some(schema) = schema {
        drop_schema(&schema).await;
    }
}

// ---------------------------------------------------------------------------
// The mix

struct Event {
    id: String,
    ty: &'static str,
    keys: Vec<String>,
    /// The event object as the gateway takes it.
    json: String,
    /// What the connector POSTs to the sink.
    payload: Bytes,
}

/// One request: the events it carries and its body.
struct Request {
    events: Vec<usize>,
    body: Bytes,
}

/// Requests posted one after the other by one task, each only once the one
/// before was acknowledged.
type Work = Vec<Request>;

struct Mix {
    /// Event ids are `{prefix}{index}`.
    prefix: String,
    events: Vec<Event>,
    /// msisdn → the customer holding it when the run starts.
    owners: HashMap<String, String>,
    /// The gateway's requests, per `--mode`.
    gateway: Vec<Work>,
    /// One event per request, moves in order: the ceiling's requests.
    direct: Vec<Work>,
    /// `--mode ordered`: per unit of work (the same in `gateway` and
    /// `direct`), the earlier units that share a key with it and must be
    /// acknowledged before it is posted (per key, the last one before it).
    after: Option<Vec<Vec<usize>>>,
}

impl Mix {
    fn generate(opts: &Opts) -> Mix {
        let mut rng = StdRng::seed_from_u64(opts.seed);
        let prefix = format!("e2e-{:08x}-", rand::random::<u32>());
        let mut events = Vec::with_capacity(opts.events + 1);
        let mut units: Vec<Vec<usize>> = Vec::new();
        let mut owners = HashMap::new();
        let mut versions = vec![0u32; opts.customers];
        let push = |events: &mut Vec<Event>,
                    ty: &'static str,
                    keys: Vec<String>,
                    payload: serde_json::Value| {
            let i = events.len();
            let id = format!("{prefix}{i}");
            let json = json!({"id": id, "type": ty, "keys": keys, "payload": payload}).to_string();
            let payload = Bytes::from(serde_json::to_vec(&payload).unwrap());
            events.push(Event {
                id,
                ty,
                keys,
                json,
                payload,
            });
            i
        };
        while events.len() < opts.events {
            let c = rng.gen_range(0..opts.customers);
            let customer = format!("C{c:06}");
            let roll = rng.gen_range(0..85);
            if roll < 15 && events.len() + 2 <= opts.events {
                let msisdn = format!("206{:07}", units.len());
                let new = (c + rng.gen_range(1..opts.customers)) % opts.customers;
                let new = format!("C{new:06}");
                owners.insert(msisdn.clone(), customer.clone());
                let release = push(
                    &mut events,
                    "number.release",
                    vec![format!("msisdn:{msisdn}"), format!("customer:{customer}")],
                    json!({"op": "release", "msisdn": msisdn, "customer": customer}),
                );
                let assign = push(
                    &mut events,
                    "number.assign",
                    vec![format!("msisdn:{msisdn}"), format!("customer:{new}")],
                    json!({"op": "assign", "msisdn": msisdn, "customer": new,
                           "imsi": format!("31026{:010}", units.len()), "plan": "unlimited-5g"}),
                );
                units.push(vec![release, assign]);
            } else if roll < 45 {
                versions[c] += 1;
                let plan = ["prepaid", "postpaid-10", "unlimited-5g"][c % 3];
                let i = push(
                    &mut events,
                    "customer.update",
                    vec![format!("customer:{customer}")],
                    json!({"op": "update", "customer": customer, "version": versions[c],
                           "plan": plan,
                           "roaming": c % 2 == 0}),
                );
                units.push(vec![i]);
            } else {
                let i = push(
                    &mut events,
                    "quota.notify",
                    Vec::new(),
                    json!({"op": "notify", "customer": customer,
                           "text": "You have used 80% of your data allowance."}),
                );
                units.push(vec![i]);
            }
        }
        let one = |i: usize| Request {
            events: vec![i],
            body: Bytes::from(events[i].json.clone()),
        };
        let direct: Vec<Work> = units
            .iter()
            .map(|u| {
                u.iter()
                    .map(|&i| Request {
                        events: vec![i],
                        body: events[i].payload.clone(),
                    })
                    .collect()
            })
            .collect();
        let gateway: Vec<Work> = match opts.mode {
            Mode::Single | Mode::Ordered => units
                .iter()
                .map(|u| u.iter().map(|&i| one(i)).collect())
                .collect(),
            Mode::Batch => {
                let mut batches: Vec<Vec<usize>> = vec![Vec::new()];
                for u in &units {
                    if batches.last().unwrap().len() + u.len() > opts.batch {
                        batches.push(Vec::new());
                    }
                    batches.last_mut().unwrap().extend(u);
                }
                batches
                    .into_iter()
                    .map(|b| {
                        let parts: Vec<&str> = b.iter().map(|&i| events[i].json.as_str()).collect();
                        let body = format!("[{}]", parts.join(","));
                        vec![Request {
                            events: b,
                            body: Bytes::from(body),
                        }]
                    })
                    .collect()
            }
        };
        let after = (opts.mode == Mode::Ordered).then(|| {
            let mut last: HashMap<&str, usize> = HashMap::new();
            units
                .iter()
                .enumerate()
                .map(|(u, unit)| {
                    let mut deps: Vec<usize> = Vec::new();
                    for &i in unit {
                        for k in &events[i].keys {
                            if let Some(d) = last.insert(k.as_str(), u).filter(|&d| d != u) {
                                deps.push(d);
                            }
                        }
                    }
                    deps.sort_unstable();
                    deps.dedup();
                    deps
                })
                .collect()
        });
        Mix {
            prefix,
            events,
            owners,
            gateway,
            direct,
            after,
        }
    }

    fn count(&self, ty: &str) -> usize {
        self.events.iter().filter(|e| e.ty == ty).count()
    }
}

// ---------------------------------------------------------------------------
// The sink

/// An HSS-like register: msisdn → owner, answers replayed per idempotency key.
struct Sink {
    t0: Instant,
    prefix: String,
    /// Per event: ns after `t0` of its first arrival, plus one (0: not yet).
    arrived: Vec<AtomicU64>,
    state: Mutex<Register>,
    requests: AtomicU64,
    replays: AtomicU64,
    delivered: AtomicU64,
    reordered: AtomicU64,
    /// First answers that were neither 200 nor 409 (a payload it could not read).
    refused: AtomicU64,
    /// Requests for events outside the measured run (the warm-up).
    other: AtomicU64,
}

struct Register {
    owners: HashMap<String, String>,
    replies: HashMap<String, u16>,
}

#[derive(Deserialize)]
struct Op {
    op: String,
    #[serde(default)]
    msisdn: String,
    #[serde(default)]
    customer: String,
}

impl Sink {
    async fn start(mix: &Mix, t0: Instant) -> (Arc<Sink>, SocketAddr) {
        let sink = Arc::new(Sink {
            t0,
            prefix: mix.prefix.clone(),
            arrived: (0..mix.events.len()).map(|_| AtomicU64::new(0)).collect(),
            state: Mutex::new(Register {
                owners: mix.owners.clone(),
                replies: HashMap::with_capacity(mix.events.len() + WARMUP),
            }),
            requests: AtomicU64::new(0),
            replays: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            reordered: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            other: AtomicU64::new(0),
        });
        let app = Router::new()
            .route("/op", post(sink_op))
            .with_state(sink.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (sink, addr)
    }

    fn apply(&self, key: &str, event_id: &str, body: &[u8]) -> u16 {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let op: Option<Op> = serde_json::from_slice(body).ok();
        let status = {
            let mut reg = self.state.lock().unwrap();
            if let Some(&status) = reg.replies.get(key) {
                self.replays.fetch_add(1, Ordering::Relaxed);
                return status;
            }
            let status = match op {
                None => 400,
                Some(op) => match op.op.as_str() {
                    "notify" | "update" => 200,
                    "assign" => match reg.owners.entry(op.msisdn) {
                        Entry::Occupied(_) => 409,
                        Entry::Vacant(free) => {
                            free.insert(op.customer);
                            200
                        }
                    },
                    "release" => {
                        if reg.owners.get(&op.msisdn) == Some(&op.customer) {
                            reg.owners.remove(&op.msisdn);
                            200
                        } else {
                            409
                        }
                    }
                    _ => 400,
                },
            };
            reg.replies.insert(key.to_string(), status);
            status
        };
        let index = event_id
            .strip_prefix(self.prefix.as_str())
            .and_then(|i| i.parse::<usize>().ok())
            .filter(|&i| i < self.arrived.len());
        let Some(i) = index else {
            self.other.fetch_add(1, Ordering::Relaxed);
            return status;
        };
        let now = self.t0.elapsed().as_nanos() as u64 + 1;
        if self.arrived[i]
            .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            self.delivered.fetch_add(1, Ordering::Relaxed);
            match status {
                200 => {}
                409 => {
                    self.reordered.fetch_add(1, Ordering::Relaxed);
                }
                _ => {
                    self.refused.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        status
    }
}

async fn sink_op(State(sink): State<Arc<Sink>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    };
    let status = sink.apply(
        header("idempotency-key"),
        header("x-switchboard-event"),
        &body,
    );
    StatusCode::from_u16(status).unwrap()
}

// ---------------------------------------------------------------------------
// The load generator

/// Where the generator posts.
#[derive(Clone, Copy)]
enum Target<'a> {
    /// `POST /v1/events` on the gateway: 202 is an acknowledgement.
    Gateway(&'a str),
    /// The sink itself, as the connector would call it: 200 or 409 is an answer.
    Sink(&'a str),
}

/// What the generator saw, in ns after `t0`.
struct Load {
    /// Per event: start of the first attempt of the request that carried it, plus one.
    sent: Vec<AtomicU64>,
    /// Per event: when it was acknowledged, plus one (0: never).
    acked: Vec<AtomicU64>,
    /// Per acknowledged request: its latency (of the attempt that succeeded).
    latencies: Mutex<Vec<u64>>,
    failed_requests: AtomicU64,
    first_error: Mutex<Option<String>>,
}

/// `switchboard_sandbox_instances_{started,reused}_total` from `/metrics`.
async fn instance_counts(
    client: &reqwest::Client,
    addr: std::net::SocketAddr,
) -> Option<(u64, u64)> {
    let text = client
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok())
    };
    Some((
        value("switchboard_sandbox_instances_started_total ")?,
        value("switchboard_sandbox_instances_reused_total ")?,
    ))
}

fn client(concurrency: usize) -> reqwest::Client {
    reqwest::Client::builder()
        // Loopback only: never through a proxy from the environment.
        .no_proxy()
        .pool_max_idle_per_host(concurrency)
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// Runs `work` with `concurrency` tasks, each taking the next unit of work.
async fn generate(
    client: &reqwest::Client,
    target: Target<'_>,
    mix: &Mix,
    work: &[Work],
    concurrency: usize,
    rate: Option<f64>,
    t0: Instant,
) -> Load {
    let load = Load {
        sent: (0..mix.events.len()).map(|_| AtomicU64::new(0)).collect(),
        acked: (0..mix.events.len()).map(|_| AtomicU64::new(0)).collect(),
        latencies: Mutex::new(Vec::with_capacity(mix.events.len())),
        failed_requests: AtomicU64::new(0),
        first_error: Mutex::new(None),
    };
    let next = AtomicUsize::new(0);
    let start = Instant::now();
    // `--mode ordered`: a unit waits until the units it comes after are done.
    let done: Vec<AtomicBool> = (0..work.len()).map(|_| AtomicBool::new(false)).collect();
    let finished = tokio::sync::Notify::new();
    let tasks = (0..concurrency).map(|_| async {
        let mut latencies = Vec::new();
        loop {
            let w = next.fetch_add(1, Ordering::Relaxed);
            let Some(requests) = work.get(w) else { break };
            if let Some(deps) = mix.after.as_ref().map(|a| &a[w]) {
                loop {
                    let notified = finished.notified();
                    tokio::pin!(notified);
                    notified.as_mut().enable();
                    if deps.iter().all(|&d| done[d].load(Ordering::Acquire)) {
                        break;
                    }
                    notified.await;
                }
            }
            if let (Some(rate), Some(first)) = (rate, requests.first()) {
                // Events are numbered in the order they are offered: event i
                // is due i/rate seconds after the start.
                let due = start + Duration::from_secs_f64(first.events[0] as f64 / rate);
                tokio::time::sleep_until(due.into()).await;
            }
            for r in requests {
                match send(client, target, mix, r, &load, t0).await {
                    Ok(latency) => latencies.push(latency),
                    Err(e) => {
                        load.failed_requests.fetch_add(1, Ordering::Relaxed);
                        load.first_error.lock().unwrap().get_or_insert(e);
                        // The rest of the unit (an assign behind its release)
                        // would only be refused.
                        break;
                    }
                }
            }
            done[w].store(true, Ordering::Release);
            finished.notify_waiters();
        }
        load.latencies.lock().unwrap().extend(latencies);
    });
    futures::future::join_all(tasks).await;
    load
}

/// Posts one request until it is answered, at most [`ATTEMPTS`] times; its
/// latency in ns, or why it was given up.
async fn send(
    client: &reqwest::Client,
    target: Target<'_>,
    mix: &Mix,
    r: &Request,
    load: &Load,
    t0: Instant,
) -> Result<u64, String> {
    let mut last = String::new();
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt))).await;
        }
        let start = t0.elapsed().as_nanos() as u64 + 1;
        for &i in &r.events {
            let _ = load.sent[i].compare_exchange(0, start, Ordering::Relaxed, Ordering::Relaxed);
        }
        let req = match target {
            Target::Gateway(url) => client.post(url),
            Target::Sink(url) => {
                let e = &mix.events[r.events[0]];
                client
                    .post(url)
                    .header("idempotency-key", format!("direct-{}", r.events[0]))
                    .header("x-switchboard-event", &e.id)
                    .header("x-switchboard-type", e.ty)
            }
        };
        let resp = req
            .header("content-type", "application/json")
            .body(r.body.clone())
            .send()
            .await;
        let resp = match resp {
            Ok(resp) => resp,
            Err(e) => {
                last = format!("{e}");
                continue;
            }
        };
        let status = resp.status().as_u16();
        let text = resp.bytes().await.unwrap_or_default();
        let answered = match target {
            Target::Gateway(_) => status == 202,
            Target::Sink(_) => status == 200 || status == 409,
        };
        if answered {
            let end = t0.elapsed().as_nanos() as u64 + 1;
            for &i in &r.events {
                load.acked[i].store(end, Ordering::Relaxed);
            }
            return Ok(end - start);
        }
        last = format!("{status} {}", String::from_utf8_lossy(&text));
        if !(status == 503 || status == 429 || status >= 500) {
            break;
        }
    }
    Err(last)
}

// ---------------------------------------------------------------------------
// The runs

/// One line of the report.
struct Row {
    name: String,
    delivered: usize,
    delivered_per_s: f64,
    /// Acknowledged events/s (the gateway's ingest), `None` for the ceiling.
    ingest_per_s: Option<f64>,
    gateway: Option<GatewayFigures>,
    bench_cpu_us_per_event: f64,
    request_ms: (f64, f64),
    delivery_ms: (f64, f64),
    acked: usize,
    lost: usize,
    reordered: u64,
    refused: u64,
    replays: u64,
    failed_requests: u64,
    first_error: Option<String>,
}

struct GatewayFigures {
    cpu_us_per_event: f64,
    /// Voluntary and involuntary context switches of the gateway's threads
    /// per event (`/proc/<pid>/task/*/status`; a thread that ended during
    /// the run takes its count with it, so this is a floor).
    switches_per_event: Option<f64>,
    /// The gateway's CPU time over the measured run's wall time.
    busy_cores: f64,
    /// The PostgreSQL server's CPU per event, when it runs on this machine.
    db: Option<DbCpu>,
    /// Every process's CPU time (`/proc/stat`) over the run's wall time:
    /// above the gateway's, the bench's and the database's, something else ran.
    machine_busy_cores: f64,
    /// Time all cores waited for the disk, over the run's wall time.
    machine_iowait_cores: f64,
    rss_kib: u64,
    hwm_kib: u64,
    log_warnings: Vec<String>,
    /// Connector instances started and deliveries served by warm ones, from
    /// the gateway's `/metrics` at the end (warm-up included).
    instances: Option<(u64, u64)>,
}

async fn ceiling(opts: &Opts, mix: &Mix) -> Row {
    let t0 = Instant::now();
    let (sink, addr) = Sink::start(mix, t0).await;
    let url = format!("http://{addr}/op");
    let client = client(opts.connector_concurrency);
    let cpu0 = cpu_ticks("self");
    let load = generate(
        &client,
        Target::Sink(&url),
        mix,
        &mix.direct,
        opts.connector_concurrency,
        None,
        t0,
    )
    .await;
    let cpu1 = cpu_ticks("self");
    figures(
        "no gateway (ceiling)".into(),
        mix,
        &sink,
        &load,
        ticks_us(cpu1 - cpu0),
        None,
    )
}

async fn through_gateway(opts: &Opts, mix: &Mix) -> Row {
    let t0 = Instant::now();
    let (sink, sink_addr) = Sink::start(mix, t0).await;
    let (dir, config, schema) = prepare(opts, "switchboard-e2e-", sink_addr, "").await;
    let gateway = Gateway::start(&opts.bin, &config, dir.path(), 1);
    let ingest = format!("http://{}/v1/events", gateway.addr);
    let client = client(opts.concurrency);

    // Warm-up: the first deliveries instantiate the component and open the
    // connections to the sink; they are not measured.
    for i in 0..WARMUP {
        let body = json!({"id": format!("warm-{}{i}", mix.prefix), "type": "quota.notify",
                          "payload": {"op": "notify", "customer": "C000000", "text": "warm-up"}});
        let resp = client.post(&ingest).json(&body).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 202, "warm-up event refused");
    }
    wait_until(Duration::from_secs(60), || {
        sink.other.load(Ordering::Relaxed) >= WARMUP as u64
    })
    .await
    .unwrap_or_else(|| panic!("warm-up events not delivered; {}", gateway.log_tail()));

    let measured_from = Instant::now();
    let machine0 = machine_ticks();
    let db0 = postgres_ticks(opts.backend);
    let cpu0 = cpu_ticks(&gateway.pid.to_string());
    let switches0 = context_switches(gateway.pid);
    let self0 = cpu_ticks("self");
    // `--kills`: the gateway dies (SIGKILL) and comes back on the same
    // config and port while the load runs; the CPU of each killed process
    // is read just before its kill.
    let gateway = Arc::new(Mutex::new(gateway));
    let killed_cpu = Arc::new(AtomicU64::new(0));
    let killer = {
        let (gateway, sink, killed_cpu) = (gateway.clone(), sink.clone(), killed_cpu.clone());
        let (kills, events) = (opts.kills, mix.events.len());
        let (bin, config, dir) = (opts.bin.clone(), config.clone(), dir.path().to_path_buf());
        tokio::spawn(async move {
            for k in 1..=kills {
                let at = (events * k / (kills + 1)) as u64;
                while sink.delivered.load(Ordering::Relaxed) < at {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                let pid = gateway.lock().unwrap().pid;
                // The first process ran before the measured run began.
                let baseline = if k == 1 { cpu0 } else { 0 };
                let used = cpu_ticks(&pid.to_string()).saturating_sub(baseline);
                killed_cpu.fetch_add(used, Ordering::Relaxed);
                let killed = Instant::now();
                gateway.lock().unwrap().kill();
                tokio::time::sleep(KILLED_FOR).await;
                let (bin, config, dir) = (bin.clone(), config.clone(), dir.clone());
                let next =
                    tokio::task::spawn_blocking(move || Gateway::start(&bin, &config, &dir, k + 1))
                        .await
                        .unwrap();
                println!(
                    "  kill {k} at {at} delivered; listening again {:.2} s after the kill",
                    killed.elapsed().as_secs_f64()
                );
                *gateway.lock().unwrap() = next;
            }
        })
    };
    let load = generate(
        &client,
        Target::Gateway(&ingest),
        mix,
        &mix.gateway,
        opts.concurrency,
        opts.rate,
        t0,
    )
    .await;
    let acked: Vec<usize> = (0..mix.events.len())
        .filter(|&i| load.acked[i].load(Ordering::Relaxed) > 0)
        .collect();
    let all_in = wait_until(opts.timeout, || {
        acked
            .iter()
            .all(|&i| sink.arrived[i].load(Ordering::Relaxed) > 0)
    })
    .await;
    if all_in.is_none() {
        println!(
            "  not every acknowledged event arrived within {:?}",
            opts.timeout
        );
    }
    killer.await.unwrap();
    let gateway = Arc::try_unwrap(gateway)
        .ok()
        .expect("the killer is done")
        .into_inner()
        .unwrap();
    // Every process's CPU in the measured run: the killed ones' up to their
    // kill, the last one's since it started (after `cpu0` was read, unless
    // it is the first), expressed as a reading to subtract `cpu0` from.
    let last = cpu_ticks(&gateway.pid.to_string());
    // Across a kill the counts of the killed process are gone: none then.
    let switches = (opts.kills == 0).then(|| {
        let now = context_switches(gateway.pid);
        // Where they happen, for the profile (to stderr: the table stays one).
        let delivered = sink.delivered.load(Ordering::Relaxed).max(1) as f64;
        let per_event = |n: u64| n as f64 / delivered;
        let by: Vec<String> = now
            .iter()
            .map(|(name, n)| (name, n.saturating_sub(*switches0.get(name).unwrap_or(&0))))
            .filter(|(_, n)| *n > 0)
            .map(|(name, n)| format!("{name} {:.1}", per_event(n)))
            .collect();
        eprintln!("gateway switches/ev by thread: {}", by.join(", "));
        now.values().sum::<u64>() - switches0.values().sum::<u64>()
    });
    let cpu1 = match opts.kills {
        0 => last,
        _ => cpu0 + killed_cpu.load(Ordering::Relaxed) + last,
    };
    let self1 = cpu_ticks("self");
    let db1 = postgres_ticks(opts.backend);
    let machine1 = machine_ticks();
    let busy = measured_from.elapsed();
    let db = match &schema {
        Some(schema) => Some(db_cpu(schema, &db0, &db1).await),
        None => None,
    };
    let (rss_kib, hwm_kib) = memory(gateway.pid);
    let log_warnings = gateway.warnings();
    let instances = instance_counts(&client, gateway.addr).await;
    drop(gateway);
    if let Some(schema) = schema {
        drop_schema(&schema).await;
    }
    let name = format!(
        "gateway, {}, {}",
        match opts.backend {
            Backend::Sqlite => "SQLite",
            Backend::Postgres => "PostgreSQL",
        },
        match opts.mode {
            Mode::Single => format!("1 event/request, c{}", opts.concurrency),
            Mode::Ordered => format!(
                "1 event/request, ordered producer (never two un-acked on a key), c{}",
                opts.concurrency
            ),
            Mode::Batch => format!("batches of {}, c{}", opts.batch, opts.concurrency),
        }
    ) + &opts
        .rate
        .map(|r| format!(", offered {r}/s"))
        .unwrap_or_default()
        + &match opts.kills {
            0 => String::new(),
            n => format!(", {n} kill -9 (down {} s each)", KILLED_FOR.as_secs_f64()),
        };
    println!(
        "  {name}: the measured run took {:.2} s",
        busy.as_secs_f64()
    );
    let delivered = sink.delivered.load(Ordering::Relaxed).max(1) as f64;
    figures(
        name,
        mix,
        &sink,
        &load,
        ticks_us(self1 - self0),
        Some(GatewayFigures {
            cpu_us_per_event: ticks_us(cpu1 - cpu0) / delivered,
            switches_per_event: switches.map(|n| n as f64 / delivered),
            busy_cores: ticks_us(cpu1 - cpu0) / 1e6 / busy.as_secs_f64(),
            db: db.map(|d| DbCpu {
                sessions_us: d.sessions_us / delivered,
                background_us: d.background_us / delivered,
                others_us: d.others_us / delivered,
            }),
            machine_busy_cores: ticks_us(machine1.0 - machine0.0) / 1e6 / busy.as_secs_f64(),
            machine_iowait_cores: ticks_us(machine1.1 - machine0.1) / 1e6 / busy.as_secs_f64(),
            rss_kib,
            hwm_kib,
            log_warnings,
            instances,
        }),
    )
}

fn figures(
    name: String,
    mix: &Mix,
    sink: &Sink,
    load: &Load,
    bench_cpu_us: f64,
    gateway: Option<GatewayFigures>,
) -> Row {
    let n = mix.events.len();
    let get = |v: &[AtomicU64], i: usize| v[i].load(Ordering::Relaxed).checked_sub(1);
    let first_sent = (0..n).filter_map(|i| get(&load.sent, i)).min().unwrap_or(0);
    let mut last_ack = 0;
    let mut last_arrival = 0;
    let (mut acked, mut delivered, mut lost) = (0usize, 0usize, 0usize);
    let mut to_delivery = Vec::with_capacity(n);
    for i in 0..n {
        let arrived = get(&sink.arrived, i);
        if let Some(a) = arrived {
            delivered += 1;
            last_arrival = last_arrival.max(a);
        }
        if let Some(k) = get(&load.acked, i) {
            acked += 1;
            last_ack = last_ack.max(k);
            match (arrived, get(&load.sent, i)) {
                (Some(a), Some(s)) => to_delivery.push(a.saturating_sub(s)),
                _ => lost += 1,
            }
        }
    }
    let per_s = |count: usize, until: u64| {
        let secs = until.saturating_sub(first_sent) as f64 / 1e9;
        if secs > 0.0 {
            count as f64 / secs
        } else {
            0.0
        }
    };
    let mut latencies = std::mem::take(&mut *load.latencies.lock().unwrap());
    latencies.sort_unstable();
    to_delivery.sort_unstable();
    let is_gateway = gateway.is_some();
    Row {
        name,
        delivered,
        delivered_per_s: per_s(delivered, last_arrival),
        ingest_per_s: is_gateway.then(|| per_s(acked, last_ack)),
        gateway,
        bench_cpu_us_per_event: bench_cpu_us / delivered.max(1) as f64,
        request_ms: (pct_ms(&latencies, 0.50), pct_ms(&latencies, 0.99)),
        delivery_ms: (pct_ms(&to_delivery, 0.50), pct_ms(&to_delivery, 0.99)),
        acked,
        lost,
        reordered: sink.reordered.load(Ordering::Relaxed),
        refused: sink.refused.load(Ordering::Relaxed),
        replays: sink.replays.load(Ordering::Relaxed),
        failed_requests: load.failed_requests.load(Ordering::Relaxed),
        first_error: load.first_error.lock().unwrap().clone(),
    }
}

fn print_table(rows: &[Row]) {
    let ceiling = rows
        .iter()
        .find(|r| r.gateway.is_none())
        .map(|r| r.delivered_per_s);
    let dash = || "—".to_string();
    println!();
    println!(
        "| run | delivered ev/s | of ceiling | ingest ev/s | gateway CPU µs/ev | \
         gateway switches/ev | database CPU µs/ev | bench CPU µs/ev | gateway RSS / peak MiB | \
         request p50 / p99 ms | event→delivery p50 / p99 ms | lost | reordered |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let share = match (ceiling, &r.gateway) {
            (Some(c), Some(_)) if c > 0.0 => format!("{:.0}%", 100.0 * r.delivered_per_s / c),
            _ => dash(),
        };
        let (cpu, switches, db, rss) = match &r.gateway {
            Some(g) => (
                format!("{:.0}", g.cpu_us_per_event),
                g.switches_per_event
                    .map_or_else(dash, |n| format!("{n:.1}")),
                g.db.as_ref().map_or_else(
                    || "in the gateway".to_string(),
                    |d| format!("{:.0}", d.sessions_us + d.background_us),
                ),
                format!(
                    "{:.0} / {:.0}",
                    g.rss_kib as f64 / 1024.0,
                    g.hwm_kib as f64 / 1024.0
                ),
            ),
            None => (dash(), dash(), dash(), dash()),
        };
        println!(
            "| {} | {} | {share} | {} | {cpu} | {switches} | {db} | {:.0} | {rss} | {:.2} / {:.2} | {:.2} / {:.2} | {} | {} |",
            r.name,
            thousands(r.delivered_per_s),
            r.ingest_per_s.map_or_else(dash, thousands),
            r.bench_cpu_us_per_event,
            r.request_ms.0,
            r.request_ms.1,
            r.delivery_ms.0,
            r.delivery_ms.1,
            r.lost,
            r.reordered,
        );
    }
    println!();
    for r in rows {
        println!(
            "{}: {} acknowledged, {} delivered, {} lost, {} reordered, {} other refusals, \
             {} replays, {} requests given up{}",
            r.name,
            r.acked,
            r.delivered,
            r.lost,
            r.reordered,
            r.refused,
            r.replays,
            r.failed_requests,
            r.gateway
                .as_ref()
                .map(|g| format!(
                    ", gateway busy {:.2} cores on average{}, the machine {:.2} cores \
                     (and {:.2} waiting for the disk), {} WARN/ERROR lines in the gateway log{}",
                    g.busy_cores,
                    g.db.as_ref()
                        .map(|d| format!(
                            ", PostgreSQL µs/event: {:.0} in the gateway's sessions, \
                             {:.0} in its background processes, {:.0} for other clients",
                            d.sessions_us, d.background_us, d.others_us
                        ))
                        .unwrap_or_default(),
                    g.machine_busy_cores,
                    g.machine_iowait_cores,
                    g.log_warnings.len(),
                    g.instances
                        .map(|(started, reused)| format!(
                            ", {started} connector instances started and {reused} \
                             deliveries served by warm ones"
                        ))
                        .unwrap_or_default()
                ))
                .unwrap_or_default(),
        );
        if let Some(e) = &r.first_error {
            println!("  first request given up: {e}");
        }
        for line in r.gateway.iter().flat_map(|g| g.log_warnings.iter().take(3)) {
            println!("  {line}");
        }
    }
}

// ---------------------------------------------------------------------------
// The gateway process

struct Gateway {
    child: Child,
    pid: u32,
    addr: SocketAddr,
    log: PathBuf,
}

impl Gateway {
    /// `switchboard serve --config <config>`, waiting for `listening on <addr>`;
    /// the `n`th start logs to `gateway-<n>.log`.
    fn start(bin: &Path, config: &Path, dir: &Path, n: usize) -> Gateway {
        let log = dir.join(format!("gateway-{n}.log"));
        let mut child = Command::new(bin)
            .args(["serve", "--config"])
            .arg(config)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn switchboard");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        // Reads stdout to its end (the gateway's exit), so it never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if let Some(addr) = line.strip_prefix("listening on ") {
                    let _ = tx.send(addr.trim().parse::<SocketAddr>());
                }
            }
        });
        let pid = child.id();
        let mut gateway = Gateway {
            child,
            pid,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            log,
        };
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(Ok(addr)) => gateway.addr = addr,
            _ => panic!("the gateway did not start; {}", gateway.log_tail()),
        }
        gateway
    }

    /// `kill -9`, and reaped.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(30)..].join("\n");
        format!("gateway log {}:\n{tail}", self.log.display())
    }

    /// The log's WARN and ERROR lines.
    fn warnings(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

use common::pg_base_url;

/// A new, empty schema for this run (made as the test suite makes them, and
/// dropped the same way when stale), and the URL that uses it.
async fn fresh_schema() -> (String, String) {
    let base = pg_base_url();
    let tested = common::pg_schema_url().await;
    let schema = tested
        .rsplit("search_path]=")
        .next()
        .unwrap_or_default()
        .to_string();
    let mut conn = sqlx::PgConnection::connect(&base)
        .await
        .unwrap_or_else(|e| panic!("no PostgreSQL at {base} (set SWITCHBOARD_TEST_PG): {e}"));
    let settings: Vec<(String, String)> = sqlx::query_as(
        "SELECT name, setting FROM pg_settings \
         WHERE name IN ('fsync', 'synchronous_commit', 'server_version')",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap_or_default();
    let _ = conn.close().await;
    let shown: Vec<String> = settings.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!("  PostgreSQL schema {schema} ({})", shown.join(", "));
    // The application name tells the gateway's sessions apart from other
    // clients' in `pg_stat_activity`, so their CPU can be counted.
    (format!("{tested}&application_name={schema}"), schema)
}

async fn drop_schema(schema: &str) {
    if let Ok(mut conn) = sqlx::PgConnection::connect(&pg_base_url()).await {
        let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .execute(&mut conn)
            .await;
        let _ = conn.close().await;
    }
}

// ---------------------------------------------------------------------------
// Helpers

/// Polls `done` every 20 ms until it holds (`Some`) or `limit` passes (`None`).
async fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> Option<()> {
    let deadline = Instant::now() + limit;
    loop {
        if done() {
            return Some(());
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Context switches so far of every live thread of process `pid`, by
/// thread name (threads of one name summed).
fn context_switches(pid: u32) -> BTreeMap<String, u64> {
    let mut by_name = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return by_name;
    };
    for task in tasks.flatten() {
        let Ok(status) = std::fs::read_to_string(task.path().join("status")) else {
            continue;
        };
        let name = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        let n: u64 = status
            .lines()
            .filter(|l| l.contains("ctxt_switches:"))
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum();
        *by_name.entry(name.trim().to_string()).or_default() += n;
    }
    by_name
}

/// utime + stime of `/proc/<pid>/stat`, in clock ticks.
fn cpu_ticks(pid: &str) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name (field 2) may hold spaces; fields are counted after it.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ")": state is field 3, utime 14, stime 15.
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    field(14).unwrap_or(0) + field(15).unwrap_or(0)
}

/// Busy clock ticks of all cores together (`/proc/stat`: user, nice,
/// system, irq, softirq; not idle, iowait nor steal), and iowait.
fn machine_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let cpu: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    let busy = [0, 1, 2, 5, 6].iter().filter_map(|&i| cpu.get(i)).sum();
    (busy, cpu.get(4).copied().unwrap_or(0))
}

/// The PostgreSQL server's CPU over the measured run, in µs.
struct DbCpu {
    /// The backends serving the gateway's connections.
    sessions_us: f64,
    /// WAL writer, checkpointer, background writer, autovacuum, postmaster,
    /// and processes gone by the end of the run.
    background_us: f64,
    /// Backends serving any other client (other work on a shared server).
    others_us: f64,
}

/// Splits the `postgres` processes' CPU between the start (`before`) and the
/// end (`after`) of the run by whom they serve (`pg_stat_activity`); the
/// gateway's sessions carry `application_name = schema`.
async fn db_cpu(schema: &str, before: &HashMap<u32, u64>, after: &HashMap<u32, u64>) -> DbCpu {
    let mut sessions: Vec<(i32, String, String)> = Vec::new();
    if let Ok(mut conn) = sqlx::PgConnection::connect(&pg_base_url()).await {
        sessions = sqlx::query_as(
            "SELECT pid, coalesce(backend_type, ''), coalesce(application_name, '') \
             FROM pg_stat_activity",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap_or_default();
        let _ = conn.close().await;
    }
    let mut cpu = DbCpu {
        sessions_us: 0.0,
        background_us: 0.0,
        others_us: 0.0,
    };
    for (pid, ticks) in after {
        let us = ticks_us(ticks.saturating_sub(before.get(pid).copied().unwrap_or(0)));
        match sessions.iter().find(|(p, _, _)| *p as u32 == *pid) {
            Some((_, _, app)) if app == schema => cpu.sessions_us += us,
            Some((_, kind, _)) if kind == "client backend" => cpu.others_us += us,
            _ => cpu.background_us += us,
        }
    }
    cpu
}

/// utime + stime of every `postgres` process by pid (empty for SQLite): the
/// database server's share, when it runs on this machine.
fn postgres_ticks(backend: Backend) -> HashMap<u32, u64> {
    let mut out = HashMap::new();
    if backend != Backend::Postgres {
        return out;
    }
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if stat.contains(" (postgres) ") {
            out.insert(pid, cpu_ticks(&pid.to_string()));
        }
    }
    out
}

/// Clock ticks to µs, with the kernel's tick rate (`getconf CLK_TCK`, 100 on Linux).
fn ticks_us(ticks: u64) -> f64 {
    static HZ: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    let hz = *HZ.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    });
    ticks as f64 * 1e6 / hz
}

/// `VmRSS` and `VmHWM` of a process, in KiB.
fn memory(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (kib("VmRSS:"), kib("VmHWM:"))
}

/// The `p` quantile of sorted ns values, in ms.
fn pct_ms(sorted_ns: &[u64], p: f64) -> f64 {
    if sorted_ns.is_empty() {
        return 0.0;
    }
    let i = ((sorted_ns.len() as f64 * p).ceil() as usize).clamp(1, sorted_ns.len()) - 1;
    sorted_ns[i] as f64 / 1e6
}

fn thousands(v: f64) -> String {
    let s = format!("{:.0}", v);
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}
