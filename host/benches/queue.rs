//! Issue 2's throughput and footprint targets, measured with fsync on.
//!
//! `cargo bench -p switchboard --bench queue -- <scenario> [options]`, where
//! scenario is one of `ingest-single`, `ingest-batch`, `drain`, `footprint`,
//! `storage`, `churn`, `all`. BENCHMARKS.md at the repository root records what it printed.
//!
//! Honesty rules this program keeps:
//! - The store is opened exactly as the gateway opens it (`store::open`: WAL,
//!   `synchronous=FULL`, one writer with group commit). Nothing is relaxed.
//! - The database lives in a fresh temp dir on the real disk (`--dir` to
//!   choose where; the path is printed).
//! - Ingest goes through the real axum router over real loopback TCP
//!   (HTTP/1.1 keep-alive); the clients run in the same process and share the
//!   machine's cores with the server, which understates the server alone.
//! - Drain uses the real dispatcher (`dispatch::spawn`) with a connector
//!   double that answers `Done` at once, so it measures claim + complete (and
//!   the lane bookkeeping behind them), not a connector.
//! - Every figure is computed from what was counted; nothing is extrapolated.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sqlx::Connection;
use switchboard::api::{router, AppState};
use switchboard::config::{DispatchConfig, ServerConfig};
use switchboard::dispatch::{self, AttemptOutcome, Deliver, DispatchSettings};
use switchboard::fleet::Fleet;
use switchboard::queue::event::parse_body;
use switchboard::queue::retry::RetryPolicy;
use switchboard::queue::{now_ms, OnDead};
use switchboard::registry::{ConnectorPolicy, Registry};
use switchboard::store::{self, Claimed, IngestOutcome, Routed, Store};
use tokio::sync::watch;

/// The allocator the `switchboard` binary runs with (`host/src/main.rs`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CONNECTOR: &str = "hss";
/// Every generator starts from this seed, so the measured deliveries of both
/// drain runs carry the same keys.
const SEED: u64 = 0x5b_2026;
const MSISDN_SPACE: u64 = 1_000_000;
const CUSTOMER_SPACE: u64 = 100_000;
const PAYLOAD_BYTES: usize = 200;

#[derive(Debug, Clone)]
struct Opts {
    duration: Duration,
    warmup: Duration,
    /// Concurrent HTTP clients (default: 64 single, 4 batch).
    clients: Option<usize>,
    /// Events per POST in `ingest-batch`.
    batch: usize,
    /// Deliveries whose draining is timed.
    measured: usize,
    /// Deliveries queued at the start of the loaded drain run and by `footprint`.
    backlog: usize,
    /// Events per `store.ingest` call when pre-filling.
    prefill_batch: usize,
    concurrency: usize,
    dir: Option<PathBuf>,
    /// A `postgres://` server to run on instead of SQLite (each run gets a
    /// fresh schema there).
    storage: Option<String>,
    /// Gateway nodes sharing the store (PostgreSQL only): each has its own
    /// store connection pool, HTTP listener and dispatcher.
    nodes: usize,
    /// Fill-deliver-purge cycles of `churn`, `backlog` events each.
    cycles: usize,
}

impl Default for Opts {
    fn default() -> Self {
        Self {
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(1),
            clients: None,
            batch: 500,
            measured: 50_000,
            backlog: 1_000_000,
            prefill_batch: 1_000,
            concurrency: 64,
            dir: None,
            storage: None,
            nodes: 1,
            cycles: 10,
        }
    }
}

const USAGE: &str = "usage: cargo bench -p switchboard --bench queue -- \
<ingest-single|ingest-batch|drain|footprint|storage|churn|all> \
[--duration SECS] [--warmup SECS] [--clients N] [--batch N] \
[--measured N] [--backlog N] [--prefill-batch N] [--concurrency N] [--dir PATH] [--cycles N] \
[--storage postgres://… [--nodes N]]";

fn parse_args() -> (String, Opts) {
    let mut opts = Opts::default();
    let mut scenario = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| -> String {
            args.next()
                .unwrap_or_else(|| panic!("{name} needs a value\n{USAGE}"))
        };
        match a.as_str() {
            // cargo bench passes --bench to harness = false targets.
            "--bench" => {}
            "--duration" => opts.duration = secs(&value("--duration")),
            "--warmup" => opts.warmup = secs(&value("--warmup")),
            "--clients" => opts.clients = Some(value("--clients").parse().expect(USAGE)),
            "--batch" => opts.batch = value("--batch").parse().expect(USAGE),
            "--measured" => opts.measured = value("--measured").parse().expect(USAGE),
            "--backlog" => opts.backlog = value("--backlog").parse().expect(USAGE),
            "--prefill-batch" => {
                opts.prefill_batch = value("--prefill-batch").parse().expect(USAGE)
            }
            "--concurrency" => opts.concurrency = value("--concurrency").parse().expect(USAGE),
            "--dir" => opts.dir = Some(PathBuf::from(value("--dir"))),
            "--storage" => opts.storage = Some(value("--storage")),
            "--nodes" => opts.nodes = value("--nodes").parse().expect(USAGE),
            "--cycles" => opts.cycles = value("--cycles").parse().expect(USAGE),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            s if !s.starts_with('-') && scenario.is_none() => scenario = Some(s.to_string()),
            other => panic!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    assert!(
        opts.nodes >= 1 && (opts.nodes == 1 || opts.storage.is_some()),
        "--nodes > 1 needs --storage postgres://… (SQLite has one node)\n{USAGE}"
    );
    (scenario.unwrap_or_else(|| "all".into()), opts)
}

fn secs(s: &str) -> Duration {
    Duration::from_secs_f64(s.parse().expect(USAGE))
}

fn main() {
    let (scenario, opts) = parse_args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!(
        "switchboard queue bench: scenario={scenario}, {} cores, load average {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        loadavg()
    );
    rt.block_on(async {
        match scenario.as_str() {
            "ingest-single" => ingest_single(&opts).await,
            "ingest-batch" => ingest_batch(&opts).await,
            "drain" => drain(&opts).await,
            "footprint" => {
                let db = prefilled(&opts, opts.backlog, Behind::SameKeys).await;
                footprint(&db).await;
            }
            "storage" => storage(&opts).await,
            "churn" => churn(&opts).await,
            "all" => {
                ingest_single(&opts).await;
                ingest_batch(&opts).await;
                drain(&opts).await;
            }
            other => panic!("unknown scenario {other:?}\n{USAGE}"),
        }
    });
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

// ---------------------------------------------------------------------------
// Data

/// Generates events shaped like the spec's example: two keys from a large
/// space and a ~200-byte payload.
struct Gen {
    rng: StdRng,
    pad: String,
    /// Put in front of every key: a generator with another tag draws its
    /// keys from a space disjoint from this one's.
    tag: &'static str,
}

impl Gen {
    fn new() -> Self {
        Self {
            rng: StdRng::seed_from_u64(SEED),
            pad: "x".repeat(PAYLOAD_BYTES),
            tag: "",
        }
    }

    /// One event as JSON text.
    fn event(&mut self, id: &str, out: &mut String) {
        use std::fmt::Write;
        let m = 2_060_000_000u64 + self.rng.gen_range(0..MSISDN_SPACE);
        let c = self.rng.gen_range(0..CUSTOMER_SPACE);
        let imsi = 310_260_000_000_000u64 + self.rng.gen_range(0..MSISDN_SPACE);
        let mut payload = format!(
            r#"{{"msisdn":"{m}","customer":"C{c}","imsi":"{imsi}","plan":"unlimited-5g","action":"assign","note":""#
        );
        let pad = PAYLOAD_BYTES.saturating_sub(payload.len() + 2);
        payload.push_str(&self.pad[..pad]);
        payload.push_str("\"}");
        write!(
            out,
            r#"{{"id":"{id}","type":"number.assign","keys":["msisdn:{t}{m}","customer:{t}{c}"],"payload":{payload}}}"#,
            t = self.tag
        )
        .unwrap();
    }

    /// A JSON array of `n` events with ids `{prefix}{first}`, `{prefix}{first+1}`, ….
    fn batch(&mut self, prefix: &str, first: usize, n: usize) -> String {
        let mut out = String::with_capacity(n * 400 + 2);
        out.push('[');
        for i in 0..n {
            if i > 0 {
                out.push(',');
            }
            self.event(&format!("{prefix}{}", first + i), &mut out);
        }
        out.push(']');
        out
    }

    fn routed(&mut self, prefix: &str, first: usize, n: usize) -> Vec<Routed> {
        let body = self.batch(prefix, first, n);
        parse_body(body.as_bytes(), n)
            .unwrap()
            .into_iter()
            .map(|event| Routed::new(event, vec![CONNECTOR.to_string()]))
            .collect()
    }
}

struct Db {
    store: Arc<dyn Store>,
    /// Every node's store: `store` first, then one more pool per extra node.
    nodes: Vec<Arc<dyn Store>>,
    url: String,
    /// The SQLite file, or `None` on PostgreSQL.
    path: Option<PathBuf>,
    /// The PostgreSQL schema this run owns.
    schema: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

async fn fresh_db(opts: &Opts) -> Db {
    if let Some(base) = &opts.storage {
        return fresh_pg(base, opts.nodes).await;
    }
    let parent = opts.dir.clone().unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::Builder::new()
        .prefix("sb-bench-")
        .tempdir_in(&parent)
        .unwrap();
    let path = dir.path().join("bench.db");
    let url = format!("sqlite://{}", path.display());
    let store = store::open(&url).await.unwrap();
    println!("  database: {} (WAL, synchronous=FULL)", path.display());
    Db {
        nodes: vec![store.clone()],
        store,
        url,
        path: Some(path),
        schema: None,
        _dir: Some(dir),
    }
}

/// A fresh schema on the PostgreSQL server `base` names, opened once per node.
async fn fresh_pg(base: &str, nodes: usize) -> Db {
    let mut conn = sqlx::PgConnection::connect(base).await.unwrap();
    let schema = format!(
        "sbbench_{}_{:06x}",
        now_ms() / 1000,
        rand::random::<u32>() & 0xff_ffff
    );
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut conn)
        .await
        .unwrap();
    let settings: Vec<(String, String)> = sqlx::query_as(
        "SELECT name, setting FROM pg_settings \
         WHERE name IN ('fsync', 'synchronous_commit', 'shared_buffers', 'server_version')",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();
    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{sep}options[search_path]={schema}");
    let mut all = Vec::new();
    for _ in 0..nodes {
        all.push(store::open(&url).await.unwrap());
    }
    let shown: Vec<String> = settings.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!(
        "  database: PostgreSQL schema {schema} ({}), {nodes} node(s)",
        shown.join(", ")
    );
    Db {
        store: all[0].clone(),
        nodes: all,
        url,
        path: None,
        schema: Some(schema),
        _dir: None,
    }
}

/// Whose keys the deliveries queued behind the measured ones carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Behind {
    /// Drawn from the same key space as the measured ones, so releasing a
    /// measured delivery often unblocks a queued one (a real backlog).
    SameKeys,
    /// Drawn from a disjoint key space: the measured deliveries do exactly
    /// the lane work they do with nothing queued behind them.
    OtherKeys,
}

/// A fresh database with `n` queued deliveries of one connector, written with
/// `store.ingest` in batches of `opts.prefill_batch` (one caller, so one batch
/// per commit), then checkpointed so every run starts from the same shape.
/// The first `opts.measured` events are the same in every call (same seed);
/// `behind` decides the keys of the rest.
async fn prefilled(opts: &Opts, n: usize, behind: Behind) -> Db {
    let db = fresh_db(opts).await;
    let mut gen = Gen::new();
    let mut in_store = Duration::ZERO;
    // Time inside store.ingest for the first and the last tenth of the
    // fill: whether ingest slows as the queue grows.
    let tenth = (n / 10).max(1);
    let (mut first_tenth, mut last_tenth) = (Duration::ZERO, Duration::ZERO);
    let wall = Instant::now();
    let mut done = 0;
    while done < n {
        let mut k = opts.prefill_batch.min(n - done);
        if done < opts.measured {
            // Batches never straddle the measured/backlog boundary.
            k = k.min(opts.measured - done);
        } else if behind == Behind::OtherKeys {
            gen.tag = "b";
        }
        let batch = gen.routed("e", done, k);
        let t = Instant::now();
        match db.store.ingest(batch, now_ms()).await.unwrap() {
            IngestOutcome::Accepted(c) => assert_eq!(c.accepted as usize, k),
            other => panic!("prefill: {other:?}"),
        }
        let took = t.elapsed();
        in_store += took;
        if done < tenth {
            first_tenth += took;
        } else if done >= n - tenth {
            last_tenth += took;
        }
        done += k;
    }
    let wall = wall.elapsed();
    if n >= 100_000 {
        println!(
            "  prefill: {:.0} events/s inside store.ingest over the first tenth, {:.0} over the \
             last (with {} queued before it)",
            tenth as f64 / first_tenth.as_secs_f64(),
            tenth as f64 / last_tenth.as_secs_f64(),
            n - tenth
        );
    }
    if db.path.is_none() {
        println!(
            "  prefill: {n} events/deliveries in batches of {} via store.ingest: {:.0} events/s",
            opts.prefill_batch,
            n as f64 / in_store.as_secs_f64()
        );
        // Fresh statistics, as autovacuum would have them on a live system.
        let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
        sqlx::query("VACUUM ANALYZE")
            .execute(&mut conn)
            .await
            .unwrap();
        return db;
    }
    println!(
        "  prefill: {n} events/deliveries in batches of {} via store.ingest: {:.0} events/s \
         inside store.ingest ({:.1} s), {:.0} events/s wall incl. generating + validating ({:.1} s)",
        opts.prefill_batch,
        n as f64 / in_store.as_secs_f64(),
        in_store.as_secs_f64(),
        n as f64 / wall.as_secs_f64(),
        wall.as_secs_f64(),
    );
    let path = db.path.clone().unwrap_or_default();
    let wal_before = file_len(&wal_path(&path));
    let (busy, _, _) = checkpoint(&db).await;
    println!(
        "  wal_checkpoint(TRUNCATE): busy={busy}, wal {wal_before} -> {} bytes",
        file_len(&wal_path(&path))
    );
    db
}

/// `PRAGMA wal_checkpoint(TRUNCATE)` on a connection of its own.
async fn checkpoint(db: &Db) -> (i64, i64, i64) {
    let mut conn = sqlx::sqlite::SqliteConnection::connect(&db.url)
        .await
        .unwrap();
    let row: (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(TRUNCATE)")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    row
}

fn wal_path(db: &std::path::Path) -> PathBuf {
    PathBuf::from(format!("{}-wal", db.display()))
}

fn file_len(p: &std::path::Path) -> u64 {
    std::fs::metadata(p).map_or(0, |m| m.len())
}

async fn footprint(db: &Db) {
    let queued = db.store.catalog().state_counts(CONNECTOR).await.unwrap();
    let queued_n = queued.ready + queued.blocked;
    let (Some(path), None) = (&db.path, &db.schema) else {
        return pg_footprint(db, queued_n).await;
    };
    let main = file_len(path);
    let wal = file_len(&wal_path(path));
    println!(
        "footprint: {queued_n} queued deliveries ({} ready, {} blocked); db file {} bytes, \
         wal {} bytes, total {:.1} MiB",
        queued.ready,
        queued.blocked,
        main,
        wal,
        (main + wal) as f64 / (1024.0 * 1024.0)
    );
    println!(
        "footprint: {:.0} bytes per queued delivery (db + wal)",
        (main + wal) as f64 / queued_n as f64
    );
    // Where the bytes are, if this SQLite has the dbstat table (bundled does).
    let mut conn = sqlx::sqlite::SqliteConnection::connect(&db.url)
        .await
        .unwrap();
    match sqlx::query_as::<_, (String, i64)>(
        "SELECT name, SUM(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC",
    )
    .fetch_all(&mut conn)
    .await
    {
        Ok(rows) => {
            // Tables and indexes that hold nothing measurable are left out.
            for (name, bytes) in rows.into_iter().filter(|r| r.1 >= 64 * 1024) {
                println!(
                    "  {name:<28} {:>8.1} MiB  {:>6.0} bytes/delivery",
                    bytes as f64 / (1024.0 * 1024.0),
                    bytes as f64 / queued_n as f64
                );
            }
        }
        Err(e) => println!("  (no per-table breakdown: {e})"),
    }
    conn.close().await.unwrap();
    // What a restart costs before the gateway serves: opening the store
    // rebuilds the writer's held lane entries from the database (its filter
    // of the lane table is rebuilt afterwards, while the store serves).
    let t = Instant::now();
    let reopened = store::open(&db.url).await.unwrap();
    println!(
        "footprint: opening the store with {queued_n} queued took {:.2} s",
        t.elapsed().as_secs_f64()
    );
    drop(reopened);
}

/// Bytes per event as it goes through its life (issue 25, item 5): `n`
/// events (`--backlog`) queued, then delivered, then reduced to their id
/// past the payload retention (`store::retention`). Each figure is the
/// pages the database's tables and indexes occupy (SQLite: `dbstat`, free
/// space inside pages included, free pages not; PostgreSQL:
/// `pg_relation_size` of each table and index after `VACUUM`) divided by `n`.
async fn storage(opts: &Opts) {
    let n = opts.backlog;
    let db = prefilled(opts, n, Behind::SameKeys).await;
    let per = |bytes: i64| bytes as f64 / n as f64;
    let live = table_bytes(&db).await;
    println!(
        "storage: {n} events queued (ids of ~20 characters, two keys, a {PAYLOAD_BYTES}-byte \
         payload): {:.0} bytes per live event",
        per(live.iter().map(|r| r.1).sum())
    );
    print_tables(&live, n);

    let t = Instant::now();
    deliver_all(&db, n).await;
    println!(
        "storage: delivered all {n} in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let finished = table_bytes(&db).await;
    println!(
        "storage: {:.0} bytes per finished event, whole",
        per(finished.iter().map(|r| r.1).sum())
    );
    print_tables(&finished, n);

    // Everything past the payload retention, nothing past the window.
    let purge = store::Purge {
        compact_before: now_ms() + 1,
        forget_before: Some(0),
    };
    let t = Instant::now();
    let mut compacted = 0;
    loop {
        let p = db.store.purge_finished(purge, 5_000).await.unwrap();
        compacted += p.compacted;
        if p.events() == 0 {
            break;
        }
    }
    assert_eq!(compacted as usize, n, "every event reduced to its id");
    let took = t.elapsed().as_secs_f64();
    println!(
        "storage: reduced {n} events to their ids in {took:.1} s ({:.0} events/s, 5,000 a \
         transaction)",
        n as f64 / took
    );
    let reduced = table_bytes(&db).await;
    let ids: i64 = reduced
        .iter()
        .filter(|r| r.0.starts_with("finished_"))
        .map(|r| r.1)
        .sum();
    println!(
        "storage: {:.1} bytes per finished event past its payload retention (finished_ids, its \
         index, finished_marks); {:.1} bytes per event for the whole database",
        per(ids),
        per(reduced.iter().map(|r| r.1).sum())
    );
    print_tables(&reduced, n);
}

/// Claims and completes (`Delivered`) every queued delivery, 1,000 at a
/// time, and checks that there were `n`.
async fn deliver_all(db: &Db, n: usize) {
    let mut delivered = 0;
    loop {
        let claimed = db
            .store
            .claim(CONNECTOR, 1_000, now_ms(), 60_000)
            .await
            .unwrap();
        if claimed.is_empty() {
            break;
        }
        delivered += claimed.len();
        let done = claimed
            .iter()
            .map(|d| store::Completion::of(d, store::CompletionKind::Delivered))
            .collect();
        db.store.complete(done, now_ms()).await.unwrap();
    }
    assert_eq!(delivered, n, "every event delivered");
}

/// Whether the tables stay bounded while millions of events go through
/// them: on PostgreSQL every claim and outcome updates a row and every
/// release and purge deletes some, and only (auto)vacuum makes their space
/// reusable. Each cycle queues `backlog` events, delivers them all, and
/// purges every finished one (reduced to its id, then the ids forgotten) as
/// the retention loop does once their time has passed; after each it prints
/// the bytes of every table with its indexes and its dead rows, as
/// autovacuum left them: this program runs no VACUUM of its own until the
/// end, when one shows what a manual VACUUM would still have reclaimed.
async fn churn(opts: &Opts) {
    let n = opts.backlog;
    let db = fresh_db(opts).await;
    if db.path.is_none() {
        let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
        let settings: Vec<(String, String)> = sqlx::query_as(
            "SELECT name, setting FROM pg_settings WHERE name IN ('autovacuum', \
             'autovacuum_naptime', 'autovacuum_vacuum_scale_factor', \
             'autovacuum_vacuum_insert_scale_factor', 'autovacuum_vacuum_cost_limit') \
             ORDER BY name",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap();
        let settings: Vec<String> = settings.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!("  server: {}", settings.join(", "));
    }
    println!(
        "churn: {} cycles of {n} events (two keys, {PAYLOAD_BYTES}-byte payload): queue them \
         ({} per store.ingest), deliver them all (claims of 1,000), purge them all",
        opts.cycles, opts.prefill_batch
    );
    let mut gen = Gen::new();
    let mib = |b: i64| b as f64 / (1024.0 * 1024.0);
    let total = |rows: &[(String, i64, i64)]| rows.iter().map(|r| r.1).sum::<i64>();
    for cycle in 1..=opts.cycles {
        let t = Instant::now();
        let mut done = 0;
        while done < n {
            let k = opts.prefill_batch.min(n - done);
            let batch = gen.routed(&format!("c{cycle}-"), done, k);
            match db.store.ingest(batch, now_ms()).await.unwrap() {
                IngestOutcome::Accepted(c) => assert_eq!(c.accepted as usize, k),
                other => panic!("churn: {other:?}"),
            }
            done += k;
        }
        let filled = t.elapsed();
        let full = relation_sizes(&db).await;
        let t = Instant::now();
        deliver_all(&db, n).await;
        let drained = t.elapsed();
        let t = Instant::now();
        // Reduced to their ids (the payload retention), then the ids
        // forgotten (the dedup window).
        let reduce = store::Purge {
            compact_before: now_ms() + 1,
            forget_before: None,
        };
        for purge in [reduce, store::Purge::whole(now_ms() + 1)] {
            loop {
                let p = db.store.purge_finished(purge, 5_000).await.unwrap();
                if p.events() == 0 && p.forgotten == 0 {
                    break;
                }
            }
        }
        let purged = t.elapsed();
        let empty = relation_sizes(&db).await;
        let dead: i64 = empty.iter().map(|r| r.2).sum();
        println!(
            "churn: cycle {cycle} ({} events so far): queued in {:.0} s, delivered in {:.0} s, \
             purged in {:.0} s; tables and indexes {:.1} MiB with {n} queued, {:.1} MiB once \
             purged ({dead} dead rows)",
            cycle * n,
            filled.as_secs_f64(),
            drained.as_secs_f64(),
            purged.as_secs_f64(),
            mib(total(&full)),
            mib(total(&empty)),
        );
        if cycle == 1 || cycle == opts.cycles {
            for (name, bytes, dead) in full.iter().filter(|r| r.1 >= 1 << 20) {
                let after = empty.iter().find(|r| &r.0 == name).map_or(0, |r| r.1);
                println!(
                    "  {name:<24} {:>8.1} MiB queued, {:>8.1} MiB purged ({dead} dead rows \
                     when queued)",
                    mib(*bytes),
                    mib(after)
                );
            }
        }
    }
    if db.path.is_none() {
        let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
        sqlx::query("VACUUM").execute(&mut conn).await.unwrap();
        let after = relation_sizes(&db).await;
        println!(
            "churn: after a manual VACUUM: {:.1} MiB ({} dead rows); files only shrink by \
             their empty tail, the rest is reused",
            mib(total(&after)),
            after.iter().map(|r| r.2).sum::<i64>()
        );
    }
}

/// Each table's bytes with its indexes (and TOAST), and its dead rows as the
/// server counts them (PostgreSQL; SQLite reuses free pages at once: 0).
async fn relation_sizes(db: &Db) -> Vec<(String, i64, i64)> {
    if db.path.is_some() {
        return table_bytes(db)
            .await
            .into_iter()
            .map(|(name, bytes)| (name, bytes, 0))
            .collect();
    }
    let schema = db.schema.clone().unwrap_or_default();
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    // The server's statistics arrive within a second of a commit.
    tokio::time::sleep(Duration::from_secs(1)).await;
    sqlx::query_as(
        "SELECT c.relname::text, pg_total_relation_size(c.oid)::int8, \
             COALESCE(s.n_dead_tup, 0)::int8 FROM pg_class c \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid \
         WHERE n.nspname = $1 AND c.relkind = 'r' ORDER BY 2 DESC",
    )
    .bind(&schema)
    .fetch_all(&mut conn)
    .await
    .unwrap()
}

/// Each table's and index's bytes, largest first (see [`storage`]).
async fn table_bytes(db: &Db) -> Vec<(String, i64)> {
    if db.path.is_none() {
        let schema = db.schema.clone().unwrap_or_default();
        let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
        sqlx::query("VACUUM").execute(&mut conn).await.unwrap();
        return sqlx::query_as(
            "SELECT c.relname::text, pg_relation_size(c.oid)::int8 FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relkind IN ('r', 'i', 't') ORDER BY 2 DESC",
        )
        .bind(&schema)
        .fetch_all(&mut conn)
        .await
        .unwrap();
    }
    let mut conn = sqlx::sqlite::SqliteConnection::connect(&db.url)
        .await
        .unwrap();
    let rows = sqlx::query_as("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    rows
}

fn print_tables(rows: &[(String, i64)], n: usize) {
    for (name, bytes) in rows.iter().filter(|r| r.1 >= 64 * 1024) {
        println!(
            "  {name:<28} {:>8.1} MiB  {:>6.1} bytes/event",
            *bytes as f64 / (1024.0 * 1024.0),
            *bytes as f64 / n as f64
        );
    }
}

/// Bytes of the schema's tables and indexes (heap, TOAST, indexes).
async fn pg_footprint(db: &Db, queued_n: u64) {
    let schema = db.schema.clone().unwrap_or_default();
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT c.relname::text, pg_total_relation_size(c.oid) FROM pg_class c \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = $1 AND c.relkind = 'r' ORDER BY 2 DESC",
    )
    .bind(&schema)
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let total: i64 = rows.iter().map(|r| r.1).sum();
    println!(
        "footprint: {queued_n} queued deliveries; tables + indexes {:.1} MiB = {:.0} bytes per \
         queued delivery (PostgreSQL, after VACUUM ANALYZE; WAL not counted)",
        total as f64 / (1024.0 * 1024.0),
        total as f64 / queued_n.max(1) as f64
    );
    for (name, bytes) in rows.into_iter().filter(|r| r.1 >= 64 * 1024) {
        println!(
            "  {name:<28} {:>8.1} MiB  {:>6.0} bytes/delivery",
            bytes as f64 / (1024.0 * 1024.0),
            bytes as f64 / queued_n.max(1) as f64
        );
    }
}

// ---------------------------------------------------------------------------
// Ingest over HTTP

async fn serve(store: Arc<dyn Store>) -> (String, tokio::task::JoinHandle<()>) {
    let server = ServerConfig::default();
    let hss: switchboard::config::ConnectorConfig =
        serde_json::from_value(serde_json::json!({"name": CONNECTOR, "routes": ["*"]})).unwrap();
    let app = router(AppState {
        store,
        fleet: Fleet::new(vec![hss], switchboard::config::Bounds::default()),
        connectors: None,
        max_body_bytes: server.max_body_bytes,
        max_batch: server.max_batch,
        // No tokens configured: the loopback-only mode, every caller `local`.
        tokens: switchboard::api::auth::Tokens::new(&[]),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (format!("http://{addr}/v1/events"), handle)
}

async fn ingest_single(opts: &Opts) {
    let clients = opts.clients.unwrap_or(64);
    println!(
        "\n== ingest-single: {clients} keep-alive HTTP/1.1 clients, 1 event per POST, \
         {:?} after {:?} warm-up (target >= 5,000 events/s)",
        opts.duration, opts.warmup
    );
    ingest_http(opts, clients, 1).await;
}

async fn ingest_batch(opts: &Opts) {
    let clients = opts.clients.unwrap_or(4);
    println!(
        "\n== ingest-batch: {clients} keep-alive HTTP/1.1 clients, {} events per POST, \
         {:?} after {:?} warm-up (target >= 30,000 events/s)",
        opts.batch, opts.duration, opts.warmup
    );
    ingest_http(opts, clients, opts.batch).await;
}

/// Per-client tallies of requests that finished inside the measured window.
#[derive(Default)]
struct Tally {
    requests: u64,
    latencies_us: Vec<u64>,
    errors: u64,
}

async fn ingest_http(opts: &Opts, clients: usize, per_post: usize) {
    let db = fresh_db(opts).await;
    let mut urls = Vec::new();
    let mut servers = Vec::new();
    for node in &db.nodes {
        let (url, server) = serve(node.clone()).await;
        urls.push(url);
        servers.push(server);
    }
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(clients)
        .build()
        .unwrap();
    let start = Instant::now();
    let measure_from = start + opts.warmup;
    let measure_to = measure_from + opts.duration;
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..clients {
        let http = http.clone();
        // Clients spread over the nodes, as behind a load balancer.
        let url = urls[c % urls.len()].clone();
        tasks.spawn(async move {
            let mut gen = Gen::new();
            gen.rng = StdRng::seed_from_u64(SEED ^ (c as u64 + 1));
            let mut tally = Tally::default();
            let mut n = 0usize;
            while Instant::now() < measure_to {
                let body = if per_post == 1 {
                    let mut s = String::with_capacity(400);
                    gen.event(&format!("c{c}-{n}"), &mut s);
                    s
                } else {
                    gen.batch(&format!("c{c}-"), n, per_post)
                };
                n += per_post;
                let t0 = Instant::now();
                let resp = http
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await;
                let ok = match resp {
                    Ok(r) => {
                        let status = r.status();
                        let text = r.text().await.unwrap_or_default();
                        if status.as_u16() != 202 {
                            eprintln!("unexpected answer {status}: {text}");
                        }
                        status.as_u16() == 202
                    }
                    Err(e) => {
                        eprintln!("request failed: {e}");
                        false
                    }
                };
                let t1 = Instant::now();
                if t0 >= measure_from && t1 <= measure_to {
                    if ok {
                        tally.requests += 1;
                        tally.latencies_us.push((t1 - t0).as_micros() as u64);
                    } else {
                        tally.errors += 1;
                    }
                }
            }
            tally
        });
    }
    let mut requests = 0u64;
    let mut errors = 0u64;
    let mut lat = Vec::new();
    while let Some(t) = tasks.join_next().await {
        let t = t.unwrap();
        requests += t.requests;
        errors += t.errors;
        lat.extend(t.latencies_us);
    }
    for server in servers {
        server.abort();
    }
    lat.sort_unstable();
    let secs = opts.duration.as_secs_f64();
    let events = requests * per_post as u64;
    println!(
        "ingest: {events} events in {requests} requests accepted (202) in {secs:.1} s; \
         {errors} errors",
    );
    println!(
        "ingest: {:.0} events/s, {:.0} requests/s; latency per POST p50 {:.1} ms, p99 {:.1} ms, \
         max {:.1} ms",
        events as f64 / secs,
        requests as f64 / secs,
        pct(&lat, 0.50),
        pct(&lat, 0.99),
        lat.last().copied().unwrap_or(0) as f64 / 1000.0
    );
    // The request handler only answered after the commit, so the rows are
    // there; confirm the shape the scenario promises (one delivery per event).
    let counts = db.store.catalog().state_counts(CONNECTOR).await.unwrap();
    println!(
        "ingest: store now holds {} deliveries ({} ready, {} blocked behind a shared key)",
        counts.ready + counts.blocked,
        counts.ready,
        counts.blocked
    );
}

/// The `p`-quantile of sorted microseconds, in milliseconds.
fn pct(sorted_us: &[u64], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted_us.len() as f64 * p).ceil() as usize).clamp(1, sorted_us.len()) - 1;
    sorted_us[i] as f64 / 1000.0
}

// ---------------------------------------------------------------------------
// Drain with the real dispatcher

/// Answers every attempt `Done` at once, and counts what it was handed: all
/// attempts, those of the measured events, and the distinct lease tokens
/// (the store issues one per claim call, so attempts / leases is the average
/// number of deliveries a claim handed out).
struct DoneAtOnce {
    /// Events with `seq <= measured_last` are the measured ones.
    measured_last: i64,
    measured: AtomicU64,
    total: AtomicU64,
    leases: Mutex<HashSet<i64>>,
}

impl DoneAtOnce {
    fn new(measured_last: i64) -> Self {
        Self {
            measured_last,
            measured: AtomicU64::new(0),
            total: AtomicU64::new(0),
            leases: Mutex::new(HashSet::new()),
        }
    }
}

#[async_trait]
impl Deliver for DoneAtOnce {
    async fn deliver(&self, d: &Claimed) -> AttemptOutcome {
        self.total.fetch_add(1, Ordering::Relaxed);
        if d.event.seq <= self.measured_last {
            self.measured.fetch_add(1, Ordering::Relaxed);
        }
        self.leases.lock().unwrap().insert(d.lease);
        AttemptOutcome::Done
    }
}

struct DrainResult {
    rate: f64,
    /// Blocked deliveries made ready by a release, per delivery completed.
    promotions: f64,
}

async fn drain(opts: &Opts) {
    println!(
        "\n== drain (a): claim + complete with the real dispatcher (concurrency {}), \
         queue holding only the {} measured deliveries",
        opts.concurrency, opts.measured
    );
    let db = prefilled(opts, opts.measured, Behind::SameKeys).await;
    let a = drain_measured(opts, &db).await;
    drop(db);

    println!(
        "\n== drain (b): the same {} measured deliveries at the head of {} queued \
         (same connector, same claim index, same lane table; {} stay queued behind \
         them on keys disjoint from theirs, so each delivery's lane work is as in (a))",
        opts.measured,
        opts.backlog,
        opts.backlog.saturating_sub(opts.measured)
    );
    let db = prefilled(opts, opts.backlog, Behind::OtherKeys).await;
    let b = drain_measured(opts, &db).await;
    drop(db);

    println!(
        "\n== drain (c): the same {} measured deliveries at the head of {} queued \
         whose keys overlap theirs ({} stay queued behind them; most releases also \
         unblock a queued delivery, work that (a) and (b) mostly do not do)",
        opts.measured,
        opts.backlog,
        opts.backlog.saturating_sub(opts.measured)
    );
    let db = prefilled(opts, opts.backlog, Behind::SameKeys).await;
    footprint(&db).await;
    let c = drain_measured(opts, &db).await;
    let ratio = |x: &DrainResult, y: &DrainResult| x.rate.max(y.rate) / x.rate.min(y.rate);
    println!(
        "\ndrain: (a) {:.0}/s with only the measured queued; (b) {:.0}/s with {} queued \
         behind on other keys: ratio {:.2}x (target: within 1.3x); (c) {:.0}/s with {} \
         queued behind on the same keys: {:.2}x (a), {:.2} promotions per delivery",
        a.rate,
        b.rate,
        opts.backlog,
        ratio(&a, &b),
        c.rate,
        opts.backlog,
        ratio(&a, &c),
        c.promotions,
    );
}

/// Bytes this process has caused to be written to storage so far (Linux's
/// `/proc/self/io`), or `None` where that is not available.
fn bytes_written() -> Option<u64> {
    std::fs::read_to_string("/proc/self/io")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("write_bytes: "))?
        .trim()
        .parse()
        .ok()
}

/// Runs the dispatcher until every delivery of the first `opts.measured`
/// events has been attempted, then stops it; the dispatcher's shutdown waits
/// for the completions of the attempts it started, so the clock stops once all
/// of them are committed. The rate counts every delivery completed in that
/// time (in the loaded run a few backlog deliveries that a released lane made
/// ready are interleaved: they are claim + complete work too).
async fn drain_measured(opts: &Opts, db: &Db) -> DrainResult {
    let last_id = format!("e{}", opts.measured - 1);
    let measured_last = db
        .store
        .catalog()
        .event(&last_id)
        .await
        .unwrap()
        .unwrap()
        .seq;
    let before = db.store.catalog().state_counts(CONNECTOR).await.unwrap();
    let defaults = DispatchConfig::default();
    let policy = ConnectorPolicy {
        name: CONNECTOR.into(),
        concurrency: opts.concurrency,
        retry: RetryPolicy::default(),
        rate: None,
        breaker: Default::default(),
        on_dead: OnDead::Hold,
        attempt_timeout: Duration::from_secs(30),
    };
    let settings = DispatchSettings {
        lease_ms: defaults.lease_ms as i64,
        rescue_interval: Duration::from_millis(defaults.rescue_interval_ms),
        poll_interval: Duration::from_millis(defaults.poll_interval_ms),
        shutdown_grace: Duration::from_secs(30),
        clock: switchboard::clock::Clock::wall(),
    };
    let deliver = Arc::new(DoneAtOnce::new(measured_last));
    let (stop, stop_rx) = watch::channel(false);
    let target = opts.measured as u64;
    let written_before = bytes_written();
    let t0 = Instant::now();
    // One dispatcher per node, each claiming through its own pool.
    let handles: Vec<_> = db
        .nodes
        .iter()
        .map(|node| {
            dispatch::spawn(
                node.clone(),
                deliver.clone(),
                Registry::of([policy.clone()]),
                settings.clone(),
                stop_rx.clone(),
            )
        })
        .collect();
    let deadline = t0 + Duration::from_secs(300);
    while deliver.measured.load(Ordering::Relaxed) < target {
        assert!(Instant::now() < deadline, "drain did not finish in 300 s");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    stop.send(true).unwrap();
    for handle in handles {
        handle.await.unwrap();
    }
    let elapsed = t0.elapsed();
    let written = bytes_written()
        .zip(written_before)
        .map(|(a, b)| a.saturating_sub(b));
    let total = deliver.total.load(Ordering::Relaxed);
    let claims = deliver.leases.lock().unwrap().len();
    let after = db.store.catalog().state_counts(CONNECTOR).await.unwrap();
    // Every attempt answered Done, so every one must now be delivered.
    assert_eq!(
        after.delivered, total,
        "attempts and delivered rows disagree"
    );
    assert_eq!(after.in_flight, 0, "a completion was not written");
    let rate = total as f64 / elapsed.as_secs_f64();
    println!(
        "drain: {total} deliveries claimed and completed in {:.2} s = {rate:.0} deliveries/s \
         ({} of them measured); {claims} claims, avg {:.1} deliveries per claim",
        elapsed.as_secs_f64(),
        deliver.measured.load(Ordering::Relaxed),
        total as f64 / claims.max(1) as f64,
    );
    println!(
        "drain: queued before {} (ready {}, blocked {}), after {} (ready {}, blocked {}); \
         delivered {}",
        before.ready + before.blocked,
        before.ready,
        before.blocked,
        after.ready + after.blocked,
        after.ready,
        after.blocked,
        after.delivered
    );
    if let Some(w) = written {
        // Unlike the rate, this hardly moves with the machine's load: it is
        // the pages the work dirtied (WAL frames, and checkpoints if one ran).
        println!(
            "drain: {:.1} MiB written to disk, {:.1} KiB per delivery (/proc/self/io write_bytes)",
            w as f64 / (1 << 20) as f64,
            w as f64 / 1024.0 / total.max(1) as f64
        );
    }
    DrainResult {
        rate,
        promotions: before.blocked.saturating_sub(after.blocked) as f64 / total.max(1) as f64,
    }
}
