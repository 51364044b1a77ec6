//! The embedded default: SQLite in WAL mode with `synchronous=FULL`.
//!
//! Design:
//! - **One writer.** SQLite admits one writer at a time, so every write goes
//!   through a single task that owns the write connection. It drains whatever
//!   operations are queued (ingests, claims, completions, rescues), applies
//!   them in one `BEGIN IMMEDIATE` transaction, commits once and only then
//!   answers each caller: group commit. 64 clients posting single events
//!   share one fsync instead of paying one each.
//! - **Readers** use a small read-only pool; WAL lets them run beside the
//!   writer and see only committed data.
//! - Because the writer is the only writer, it assigns `seq` and delivery ids
//!   itself (reloaded from the table after any failed transaction), which lets
//!   one ingest write all its rows with a few multi-row statements.
//! - The writer holds the lane entries of its most recent deliveries in
//!   memory and sweeps them into `lane_entries` in key order, a slice per
//!   group, rebuilding them from the tables at open and after a rollback
//!   (see `recent_lanes`): random keys would otherwise dirty a random page
//!   of that table per key per event.
//! - A counting filter of the lanes that have rows in `lane_entries` (see
//!   `table_lanes`), and a bounded set of lanes known to have some, let the
//!   writer skip looking up most new lanes of an ingest and most released
//!   lanes.
//! - If any statement of a group fails, the whole group rolls back and every
//!   caller in it gets [`StoreError::Unavailable`]: nothing half-applied, and
//!   the ingest API answers 503 so the client retries.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::str::FromStr;
use std::sync::LazyLock;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{Connection, QueryBuilder, Row, Sqlite};
use tokio::sync::{mpsc, oneshot};

use super::recent_lanes::{Entry, RecentLanes};
use super::table_lanes::{InTable, TableLanes};
use super::{
    audit_of, classify, completion_rounds, configs_of, dead_letters_of, delivery_view,
    lane_view_of, migrations, parse_keys, plan_ingest, same_digest, state_counts_of, stored_event,
    versions_of, AuditRecord, AuditRow, Claimed, Completion, CompletionKind, ComponentVersion,
    DeadFilter, DeadLetter, DeadRow, DeliveryRow, EventRow, EventView, IngestOutcome, IngestPlan,
    LaneHeadRow, LaneView, LimitOverrides, OperatorAction, QueueStats, Routed, StateCounts, Store,
    StoreError, StoreResult, StoredEvent, VersionRow,
};
use crate::queue::{Millis, OnDead};

/// Upper bound of the writer connection's page cache (filled only as pages
/// are used; readers keep SQLite's default). Not more: a bigger cache costs
/// at every commit (`perf` puts 6–9% of batch-ingest CPU in SQLite's cache
/// truncation at the end of a write transaction), and since most lane
/// lookups are answered from memory, 64 MiB beat 256 in every pairing
/// measured (docs/benchmarks-history.md, "Lane-table lookups answered from memory").
const WRITER_CACHE_KIB: u32 = 64 * 1024;
/// WAL pages (4 KiB) after which a commit checkpoints: ~40 MiB of WAL at most
/// in steady state, against SQLite's default of 1,000.
const WAL_AUTOCHECKPOINT_PAGES: u32 = 10_000;

/// Most operations applied in one transaction.
const MAX_GROUP_OPS: usize = 512;
/// Most rows in one multi-row statement: few statements per commit group
/// (each is a round trip to SQLite's thread), bind counts far below SQLite's
/// limit of 32,766. A power of two, see [`runs`].
const MAX_ROWS: usize = 256;

/// Splits `items` into runs of `MAX_ROWS`, then of falling powers of two
/// (300 rows: 256, 32, 8, 4): each kind of statement has at most nine
/// distinct texts, so all of them stay in the prepared-statement cache
/// instead of being parsed again for every odd-sized tail.
fn runs<T>(items: &[T]) -> impl Iterator<Item = &[T]> {
    let mut rest = items;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let n = MAX_ROWS.min(1 << rest.len().ilog2());
        let (run, tail) = rest.split_at(n);
        rest = tail;
        Some(run)
    })
}

/// When and how fast the writer moves the lane entries it holds in memory
/// into `lane_entries` (see [`RecentLanes`]). A flush sweeps the lanes in
/// key order, a slice per commit group, so no commit stalls behind writing
/// all of them; once the sweep has passed every lane, the watermark moves to
/// where the sweep started.
#[derive(Debug, Clone, Copy)]
pub struct LaneFlush {
    /// Entries held that start a sweep: bounds the writer's memory (~150
    /// bytes an entry).
    pub entries: usize,
    /// Deliveries created since the watermark that start a sweep: bounds the
    /// rebuild at start, which reads each of them back.
    pub deliveries: i64,
    /// Entries written per commit group during a sweep, at least; an eighth
    /// of those held when that is more, so a sweep outpaces any ingest.
    pub slice: usize,
    /// Slots (one byte each) of the filter that tells which lanes have no
    /// entry in the table, so that neither an ingest nor a release has to
    /// look (see [`TableLanes`]); rounded up to a power of two.
    pub filter_slots: usize,
    /// Lanes remembered as having entries in the table, at most (~100 bytes
    /// each), so that later events on them need not look either.
    pub known_lanes: usize,
}

impl Default for LaneFlush {
    fn default() -> Self {
        Self {
            entries: 65_536,
            deliveries: 262_144,
            slice: 8_192,
            filter_slots: 1 << 24,
            known_lanes: 131_072,
        }
    }
}

/// A flush under way (the lanes it has still to visit are in
/// [`RecentLanes`]).
#[derive(Debug)]
struct Sweep {
    /// The first delivery id not yet created when it started: every entry
    /// of an earlier delivery is in the table once the sweep ends.
    started_at: i64,
}

static MIGRATOR: LazyLock<Migrator> = LazyLock::new(|| migrations::migrator(migrations::SQLITE));

pub struct SqliteStore {
    tx: mpsc::Sender<(Work, Reply)>,
    read: SqlitePool,
}

/// Creates the directory a database file is to live in, as the file itself
/// is created when missing (`sqlite://./data/switchboard.db` on a fresh
/// machine). Nothing to do for an in-memory database.
fn create_parent_dir(opts: &SqliteConnectOptions, url: &str) -> StoreResult<()> {
    match opts.get_filename().parent() {
        Some(dir) if !dir.as_os_str().is_empty() && !dir.exists() => std::fs::create_dir_all(dir)
            .map_err(|e| {
                StoreError::Unavailable(format!(
                    "cannot create directory {} for {url}: {e}",
                    dir.display()
                ))
            }),
        _ => Ok(()),
    }
}

impl SqliteStore {
    /// Opens (creating if missing, with its directory) the database a
    /// `sqlite://` URL names and applies migrations.
    pub async fn open(url: &str) -> StoreResult<Self> {
        Self::open_as(url, &super::default_node()).await
    }

    /// [`SqliteStore::open`], with the node name its leases carry.
    pub async fn open_as(url: &str, node: &str) -> StoreResult<Self> {
        Self::open_tuned(url, node, LaneFlush::default()).await
    }

    /// [`SqliteStore::open_as`], with when to flush the lane entries the
    /// writer holds (tests use tiny values to flush all the time).
    pub async fn open_tuned(url: &str, node: &str, flush: LaneFlush) -> StoreResult<Self> {
        let base = SqliteConnectOptions::from_str(url).map_err(|e| StoreError::InvalidUrl {
            url: url.to_string(),
            reason: e.to_string(),
        })?;
        let base = base
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .statement_cache_capacity(512)
            .foreign_keys(false);
        create_parent_dir(&base, url)?;
        let mut conn = SqliteConnection::connect_with(&base.clone().create_if_missing(true))
            .await
            .map_err(|e| StoreError::Unavailable(format!("cannot open {url}: {e}")))?;
        MIGRATOR
            .run(&mut conn)
            .await
            .map_err(|e| StoreError::Migration(e.to_string()))?;
        // The writer's page cache and checkpoint cadence (docs/benchmarks-history.md,
        // "SQLite writer settings"): with random keys nearly every statement
        // touches a page that SQLite's default 2 MiB cache no longer holds,
        // and the default checkpoint every 1,000 WAL pages copies the same
        // hot pages back into the database over and over.
        for pragma in [
            format!("PRAGMA cache_size = -{}", WRITER_CACHE_KIB),
            format!("PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT_PAGES}"),
            "PRAGMA temp_store = MEMORY".to_string(),
        ] {
            sqlx::query(&pragma).execute(&mut conn).await?;
        }
        let read = SqlitePoolOptions::new()
            .max_connections(4)
            .min_connections(1)
            .connect_with(base.read_only(true))
            .await?;
        let mut writer = Writer {
            conn,
            next_seq: 0,
            next_delivery: 0,
            next_lease: rand::random::<u32>() as i64,
            occupied: HashSet::new(),
            recent: RecentLanes::default(),
            table_lanes: TableLanes::new(flush.filter_slots, flush.known_lanes),
            watermark: 0,
            flush,
            sweep: None,
            flush_now: false,
            node: node.to_string(),
        };
        writer.reload().await?;
        let (tx, rx) = mpsc::channel(4096);
        tokio::spawn(writer.run(rx));
        Ok(Self { tx, read })
    }

    /// Applies migrations only (`switchboard migrate`); returns the versions
    /// applied, oldest first.
    pub async fn migrate(url: &str) -> StoreResult<Vec<i64>> {
        let opts = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::InvalidUrl {
                url: url.to_string(),
                reason: e.to_string(),
            })?
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .create_if_missing(true);
        create_parent_dir(&opts, url)?;
        let mut conn = SqliteConnection::connect_with(&opts)
            .await
            .map_err(|e| StoreError::Unavailable(format!("cannot open {url}: {e}")))?;
        MIGRATOR
            .run(&mut conn)
            .await
            .map_err(|e| StoreError::Migration(e.to_string()))?;
        Ok(sqlx::query_scalar(
            "SELECT version FROM _sqlx_migrations WHERE success ORDER BY version",
        )
        .fetch_all(&mut conn)
        .await?)
    }

    /// The path of a `sqlite://PATH` URL, for diagnostics and benchmarks.
    pub fn path_of(url: &str) -> Option<&Path> {
        let rest = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))?;
        Some(Path::new(rest.split('?').next().unwrap_or(rest)))
    }

    async fn call<T>(
        &self,
        work: Work,
        reply: impl FnOnce(oneshot::Sender<StoreResult<T>>) -> Reply,
    ) -> StoreResult<T> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send((work, reply(tx)))
            .await
            .map_err(|_| StoreError::Unavailable("store writer stopped".into()))?;
        rx.await
            .map_err(|_| StoreError::Unavailable("store writer stopped".into()))?
    }
}

enum Work {
    Ingest {
        events: Vec<Routed>,
        now: Millis,
    },
    Claim {
        connector: String,
        limit: usize,
        now: Millis,
        lease_ms: i64,
    },
    Complete {
        items: Vec<Completion>,
        now: Millis,
    },
    Rescue {
        now: Millis,
    },
    Expire {
        now: Millis,
        limit: usize,
    },
    RetryDead {
        id: i64,
        now: Millis,
    },
    SkipDead {
        id: i64,
        now: Millis,
    },
    AddComponent {
        connector: String,
        digest: String,
        wasm: Vec<u8>,
        info: String,
        actor: String,
        now: Millis,
    },
    Activate {
        connector: String,
        version: i64,
        actor: String,
        now: Millis,
    },
    Operator {
        id: i64,
        action: OperatorAction,
        actor: String,
        now: Millis,
    },
    Pause {
        connector: String,
        paused: bool,
        actor: String,
        now: Millis,
    },
    Limits {
        connector: String,
        limits: LimitOverrides,
        actor: String,
        now: Millis,
    },
    Purge {
        before: Millis,
        limit: usize,
    },
    PutConfig {
        connector: String,
        config: String,
        before: Option<serde_json::Value>,
        after: serde_json::Value,
        actor: String,
        now: Millis,
    },
    /// Read-only, but the writer holds the newest lane entries.
    Lanes {
        key: String,
        connectors: Vec<String>,
    },
}

enum Answer {
    Ingest(IngestOutcome),
    Claim(Vec<Claimed>),
    Bools(Vec<bool>),
    Count(u64),
    Bool(bool),
    Expired(Vec<(String, u64)>),
    Lanes(Vec<LaneView>),
}

enum Reply {
    Ingest(oneshot::Sender<StoreResult<IngestOutcome>>),
    Claim(oneshot::Sender<StoreResult<Vec<Claimed>>>),
    Bools(oneshot::Sender<StoreResult<Vec<bool>>>),
    Count(oneshot::Sender<StoreResult<u64>>),
    Bool(oneshot::Sender<StoreResult<bool>>),
    Expired(oneshot::Sender<StoreResult<Vec<(String, u64)>>>),
    Lanes(oneshot::Sender<StoreResult<Vec<LaneView>>>),
}

impl Reply {
    /// Answers the caller. A caller that went away (request cancelled) is
    /// fine to ignore: its work is committed or rolled back either way.
    fn send(self, result: StoreResult<Answer>) {
        fn mismatch<T>() -> StoreResult<T> {
            Err(StoreError::Corrupt(
                "internal: answer of the wrong kind".into(),
            ))
        }
        match self {
            Reply::Ingest(tx) => {
                let _ = tx.send(result.and_then(|a| match a {
                    Answer::Ingest(v) => Ok(v),
                    _ => mismatch(),
                }));
            }
            Reply::Claim(tx) => {
                let _ = tx.send(result.and_then(|a| match a {
                    Answer::Claim(v) => Ok(v),
                    _ => mismatch(),
                }));
            }
            Reply::Bools(tx) => {
                let _ = tx.send(result.and_then(|a| match a {
                    Answer::Bools(v) => Ok(v),
                    _ => mismatch(),
                }));
            }
            Reply::Count(tx) => {
                let _ = tx.send(result.and_then(|a| match a {
                    Answer::Count(v) => Ok(v),
                    _ => mismatch(),
                }));
            }
            Reply::Bool(tx) => {
                let _ = tx.send(result.and_then(|a| match a {
                    Answer::Bool(v) => Ok(v),
                    _ => mismatch(),
                }));
            }
            Reply::Expired(tx) => {
                let _ = tx.send(result.and_then(|a| match a {
                    Answer::Expired(v) => Ok(v),
                    _ => mismatch(),
                }));
            }
            Reply::Lanes(tx) => {
                let _ = tx.send(result.and_then(|a| match a {
                    Answer::Lanes(v) => Ok(v),
                    _ => mismatch(),
                }));
            }
        }
    }
}

struct Writer {
    conn: SqliteConnection,
    next_seq: i64,
    next_delivery: i64,
    next_lease: i64,
    /// Lanes known to hold an entry, valid within one transaction. A release
    /// evicts its lane, so a stale "occupied" can never block a delivery that
    /// nothing would unblock.
    occupied: HashSet<(String, String)>,
    /// The lane entries of deliveries from `watermark` on; earlier ones are
    /// in `lane_entries` (see [`RecentLanes`]).
    recent: RecentLanes,
    /// Which lanes have entries in `lane_entries`, as far as memory can
    /// tell: every row written there or deleted goes through it.
    table_lanes: TableLanes,
    /// `lane_watermark.delivery_id` as last committed.
    watermark: i64,
    flush: LaneFlush,
    sweep: Option<Sweep>,
    /// Flush everything at the end of this transaction.
    flush_now: bool,
    /// Written as the owner of every lease this store hands out.
    node: String,
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::Receiver<(Work, Reply)>) {
        while let Some(first) = rx.recv().await {
            let mut group = vec![first];
            while group.len() < MAX_GROUP_OPS {
                match rx.try_recv() {
                    Ok(op) => group.push(op),
                    Err(_) => break,
                }
            }
            self.apply_group(group).await;
        }
    }

    async fn apply_group(&mut self, group: Vec<(Work, Reply)>) {
        self.occupied.clear();
        let mut answers = Vec::with_capacity(group.len());
        let mut failure = sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut self.conn)
            .await
            .err()
            .map(StoreError::from);
        let mut replies = Vec::with_capacity(group.len());
        // Every ingest of the group first, as one batch (see `ingest`), then
        // every completion, as one batch (see `complete_batch`); the other
        // operations then run in arrival order. Any order is a valid
        // serialisation: the group commits or fails as one, and no
        // completion in it can belong to a claim in it (an attempt starts
        // only after its claim committed).
        let mut slots: Vec<Option<Answer>> = Vec::with_capacity(group.len());
        let mut ingests: Vec<Vec<Routed>> = Vec::new();
        let mut ingest_now = 0;
        let mut completions: Vec<Completion> = Vec::new();
        let mut completion_slots: Vec<(usize, usize)> = Vec::new();
        let mut complete_now = 0;
        let mut rest = Vec::new();
        for (i, (work, reply)) in group.into_iter().enumerate() {
            replies.push(reply);
            slots.push(None);
            match work {
                Work::Ingest { events, now } => {
                    ingest_now = ingest_now.max(now);
                    ingests.push(events);
                    rest.push((i, None));
                }
                Work::Complete { items, now } => {
                    complete_now = complete_now.max(now);
                    completion_slots.push((i, items.len()));
                    completions.extend(items);
                }
                other => rest.push((i, Some(other))),
            }
        }
        if failure.is_none() && !ingests.is_empty() {
            match self.ingest(&ingests, ingest_now).await {
                Ok(outcomes) => {
                    let mut outcomes = outcomes.into_iter();
                    for (i, work) in &rest {
                        if work.is_none() {
                            slots[*i] = outcomes.next().map(Answer::Ingest);
                        }
                    }
                }
                Err(e) => failure = Some(e),
            }
        }
        if failure.is_none() && !completion_slots.is_empty() {
            match self.complete_batch(&completions, complete_now).await {
                Ok(applied) => {
                    let mut applied = applied.into_iter();
                    for (i, n) in completion_slots {
                        slots[i] = Some(Answer::Bools(applied.by_ref().take(n).collect()));
                    }
                }
                Err(e) => failure = Some(e),
            }
        }
        for (i, work) in rest {
            let Some(work) = work else { continue };
            if failure.is_some() {
                break;
            }
            match self.apply(work).await {
                Ok(a) => slots[i] = Some(a),
                Err(e) => failure = Some(e),
            }
        }
        for slot in slots {
            match slot {
                Some(a) => answers.push(a),
                None if failure.is_none() => {
                    failure = Some(StoreError::Corrupt(
                        "internal: operation without an answer".into(),
                    ))
                }
                None => {}
            }
        }
        let mut flushed = None;
        if failure.is_none() {
            match self.flush_lanes().await {
                Ok(w) => flushed = w,
                Err(e) => failure = Some(e),
            }
        }
        if failure.is_none() {
            if let Err(e) = sqlx::query("COMMIT").execute(&mut self.conn).await {
                failure = Some(e.into());
            }
        }
        match failure {
            None => {
                if let Some(w) = flushed {
                    self.watermark = w;
                }
                for (reply, answer) in replies.into_iter().zip(answers) {
                    reply.send(Ok(answer));
                }
            }
            Some(err) => {
                tracing::warn!(error = %err, ops = replies.len(), "store transaction failed, rolled back");
                let _ = sqlx::query("ROLLBACK").execute(&mut self.conn).await;
                // The lane entries held in memory may include the rolled-back
                // group's: rebuild them from what was committed.
                if let Err(e) = self.reload().await {
                    tracing::error!(error = %e, "cannot reload store state after rollback");
                }
                for reply in replies {
                    reply.send(Err(err.clone()));
                }
            }
        }
    }

    /// Each connector's lane of `key`: its head and how many wait behind it,
    /// counting the entries held in memory and those in the table.
    async fn lane_views(&mut self, key: &str, connectors: &[String]) -> StoreResult<Vec<LaneView>> {
        let mut out = Vec::with_capacity(connectors.len());
        for c in connectors {
            let (in_table, table_head): (i64, Option<i64>) = sqlx::query_as(
                "SELECT COUNT(*), (SELECT delivery_id FROM lane_entries \
                     WHERE connector = ?1 AND key = ?2 ORDER BY seq LIMIT 1) \
                 FROM lane_entries WHERE connector = ?1 AND key = ?2",
            )
            .bind(c)
            .bind(key)
            .fetch_one(&mut self.conn)
            .await?;
            let table_head = match table_head {
                Some(id) => Some((
                    sqlx::query_scalar::<_, i64>("SELECT event_seq FROM deliveries WHERE id = ?1")
                        .bind(id)
                        .fetch_one(&mut self.conn)
                        .await?,
                    id,
                )),
                None => None,
            };
            let head = match (self.recent.head(c, key), table_head) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let head = match head {
                Some((_, id)) => {
                    sqlx::query_as::<_, LaneHeadRow>(
                        "SELECT d.id, d.connector, d.state, d.attempts, d.last_error, \
                             d.next_attempt_at, d.updated_at, d.lease_owner, d.expires_at, e.id \
                         FROM deliveries d JOIN events e ON e.seq = d.event_seq WHERE d.id = ?1",
                    )
                    .bind(id)
                    .fetch_optional(&mut self.conn)
                    .await?
                }
                None => None,
            };
            let count = in_table + self.recent.count(c, key) as i64;
            out.push(lane_view_of(c, key, head, count)?);
        }
        Ok(out)
    }

    /// Re-reads what the writer keeps between transactions from the
    /// database: its counters and the lane entries it holds in memory. Runs
    /// at open and after a rolled-back transaction.
    async fn reload(&mut self) -> StoreResult<()> {
        self.reload_counters().await?;
        self.watermark = sqlx::query_scalar("SELECT delivery_id FROM lane_watermark WHERE id = 1")
            .fetch_one(&mut self.conn)
            .await?;
        self.recent.clear();
        self.occupied.clear();
        self.sweep = None;
        self.flush_now = false;
        self.count_table_lanes().await?;
        // Every delivery from the watermark on that holds its lanes and is
        // not dead: a dead one that holds them moved its entries to
        // `lane_entries` when it died, and one brought back from dead keeps
        // them there, which the EXISTS check below finds.
        let rows: Vec<(i64, String, i64, String)> = sqlx::query_as(
            "SELECT d.id, d.connector, d.event_seq, e.keys FROM deliveries d \
             JOIN events e ON e.seq = d.event_seq \
             WHERE d.id >= ?1 AND d.state IN ('blocked', 'ready', 'in_flight') ORDER BY d.id",
        )
        .bind(self.watermark)
        .fetch_all(&mut self.conn)
        .await?;
        let mut entries: Vec<(String, String, i64, i64)> = Vec::new();
        for (id, connector, seq, keys) in rows {
            for key in parse_keys(&keys)? {
                entries.push((connector.clone(), key, seq, id));
            }
        }
        let mut in_table: HashSet<(String, String, i64)> = HashSet::new();
        let maybe: Vec<&(String, String, i64, i64)> = entries
            .iter()
            .filter(|(c, k, _, _)| self.table_lanes.may_hold(c, k))
            .collect();
        for chunk in runs(&maybe) {
            let mut qb =
                QueryBuilder::<Sqlite>::new("SELECT v.column1, v.column2, v.column3 FROM (VALUES ");
            let mut sep = qb.separated(", ");
            for (c, k, seq, _) in chunk {
                sep.push("(");
                sep.push_bind_unseparated(c.as_str());
                sep.push_unseparated(", ");
                sep.push_bind_unseparated(k.as_str());
                sep.push_unseparated(", ");
                sep.push_bind_unseparated(*seq);
                sep.push_unseparated(")");
            }
            qb.push(
                ") AS v WHERE EXISTS (SELECT 1 FROM lane_entries l \
                 WHERE l.connector = v.column1 AND l.key = v.column2 AND l.seq = v.column3)",
            );
            in_table.extend(
                qb.build_query_as::<(String, String, i64)>()
                    .fetch_all(&mut self.conn)
                    .await?,
            );
        }
        for (c, k, seq, id) in entries {
            if !in_table.contains(&(c.clone(), k.clone(), seq)) {
                self.recent.push(&c, &k, seq, id);
            }
        }
        Ok(())
    }

    /// Rebuilds [`TableLanes`] from every row of `lane_entries`. Rows come
    /// back a page at a time, each page framed into one string by SQLite
    /// (`<bytes>,<connector><bytes>,<key>` per row): fetched a row at a
    /// time, 1,800,000 rows took 4.1 s, nearly all of it per-row overhead
    /// between SQLite's thread and this task.
    async fn count_table_lanes(&mut self) -> StoreResult<()> {
        const FRAMED: &str = "SELECT group_concat(octet_length(connector) || ',' || connector \
                              || octet_length(key) || ',' || key, '') FROM (SELECT connector, key \
                              FROM lane_entries WHERE (connector, key, seq) > (?1, ?2, ?3)";
        self.table_lanes.clear();
        let page = self.flush.slice.max(1) as i64;
        let mut after = (String::new(), String::new(), i64::MIN);
        loop {
            // The page's last row, if there are more rows than a page.
            let end: Option<(String, String, i64)> = sqlx::query_as(
                "SELECT connector, key, seq FROM lane_entries \
                 WHERE (connector, key, seq) > (?1, ?2, ?3) \
                 ORDER BY connector, key, seq LIMIT 1 OFFSET ?4",
            )
            .bind(&after.0)
            .bind(&after.1)
            .bind(after.2)
            .bind(page - 1)
            .fetch_optional(&mut self.conn)
            .await?;
            let framed: Option<String> = match &end {
                Some((c, k, seq)) => {
                    sqlx::query_scalar(&format!(
                        "{FRAMED} AND (connector, key, seq) <= (?4, ?5, ?6) \
                         ORDER BY connector, key, seq)"
                    ))
                    .bind(&after.0)
                    .bind(&after.1)
                    .bind(after.2)
                    .bind(c)
                    .bind(k)
                    .bind(seq)
                    .fetch_one(&mut self.conn)
                    .await?
                }
                None => {
                    sqlx::query_scalar(&format!("{FRAMED} ORDER BY connector, key, seq)"))
                        .bind(&after.0)
                        .bind(&after.1)
                        .bind(after.2)
                        .fetch_one(&mut self.conn)
                        .await?
                }
            };
            for (c, k) in unframe_lanes(framed.as_deref().unwrap_or(""))? {
                self.table_lanes.added(c, k);
            }
            match end {
                Some(e) => after = e,
                None => return Ok(()),
            }
        }
    }

    /// Goes on with the flush under way, or starts one when the thresholds
    /// say so: writes the next slice of lanes held in memory to
    /// `lane_entries`. Returns the new watermark when a flush ended; it is
    /// in the transaction, so it counts once the group commits (a rollback
    /// rebuilds everything from what was committed).
    async fn flush_lanes(&mut self) -> StoreResult<Option<i64>> {
        if self.flush_now {
            // Everything at once, and the watermark past every delivery.
            self.flush_now = false;
            self.sweep = Some(Sweep {
                started_at: self.next_delivery,
            });
            let entries = self.recent.take_all();
            return self.write_slice(entries, true).await;
        }
        if self.sweep.is_none()
            && (self.recent.len() >= self.flush.entries
                || self.next_delivery - self.watermark >= self.flush.deliveries)
        {
            self.sweep = Some(Sweep {
                started_at: self.next_delivery,
            });
            self.recent.start_sweep();
        }
        if self.sweep.is_none() {
            return Ok(None);
        }
        let max = self.flush.slice.max(self.recent.len() / 8);
        let (entries, done) = self.recent.sweep(max);
        self.write_slice(entries, done).await
    }

    /// Writes one slice of a sweep; `done` when it ends the sweep.
    async fn write_slice(&mut self, entries: Vec<Entry>, done: bool) -> StoreResult<Option<i64>> {
        for (c, k, _, _) in &entries {
            self.table_lanes.added(c, k);
        }
        for chunk in runs(&entries) {
            let mut qb = QueryBuilder::<Sqlite>::new(
                "INSERT OR FAIL INTO lane_entries (connector, key, seq, delivery_id) ",
            );
            qb.push_values(chunk, |mut b, (c, k, seq, id)| {
                b.push_bind(c.as_str())
                    .push_bind(k.as_str())
                    .push_bind(*seq)
                    .push_bind(*id);
            });
            qb.build().execute(&mut self.conn).await?;
        }
        if !done {
            return Ok(None);
        }
        let Some(sweep) = self.sweep.take() else {
            return Ok(None);
        };
        let watermark = sweep.started_at;
        sqlx::query("UPDATE lane_watermark SET delivery_id = ?1 WHERE id = 1")
            .bind(watermark)
            .execute(&mut self.conn)
            .await?;
        tracing::debug!(
            watermark,
            held = self.recent.len(),
            "lane entries swept into lane_entries"
        );
        Ok(Some(watermark))
    }

    async fn reload_counters(&mut self) -> StoreResult<()> {
        let seq: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) + 1 FROM events")
            .fetch_one(&mut self.conn)
            .await?;
        let did: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) + 1 FROM deliveries")
            .fetch_one(&mut self.conn)
            .await?;
        self.next_seq = seq;
        self.next_delivery = did;
        Ok(())
    }

    async fn apply(&mut self, work: Work) -> StoreResult<Answer> {
        Ok(match work {
            Work::Ingest { events, now } => {
                let mut out = self.ingest(&[events], now).await?;
                Answer::Ingest(
                    out.pop()
                        .ok_or_else(|| StoreError::Corrupt("internal: no ingest answer".into()))?,
                )
            }
            Work::Claim {
                connector,
                limit,
                now,
                lease_ms,
            } => Answer::Claim(self.claim(&connector, limit, now, lease_ms).await?),
            Work::Complete { items, now } => Answer::Bools(self.complete_batch(&items, now).await?),
            Work::Rescue { now } => Answer::Count(self.rescue(now).await?),
            Work::Expire { now, limit } => Answer::Expired(self.expire(now, limit).await?),
            Work::RetryDead { id, now } => Answer::Bool(self.retry_dead(id, now).await?),
            Work::SkipDead { id, now } => Answer::Bool(self.skip_dead(id, now).await?),
            Work::AddComponent {
                connector,
                digest,
                wasm,
                info,
                actor,
                now,
            } => {
                let before = self.active_version(&connector).await?;
                if let Some(active) = same_digest(before.as_ref(), &digest) {
                    return Ok(Answer::Count(active as u64));
                }
                let version: i64 = sqlx::query_scalar(
                    "INSERT INTO components (connector, version, digest, wasm, info, uploaded_at) \
                     SELECT ?1, COALESCE(MAX(version), 0) + 1, ?2, ?3, ?4, ?5 \
                     FROM components WHERE connector = ?1 RETURNING version",
                )
                .bind(&connector)
                .bind(&digest)
                .bind(&wasm)
                .bind(&info)
                .bind(now)
                .fetch_one(&mut self.conn)
                .await?;
                self.activate(&connector, version, now).await?;
                let after = serde_json::json!({"version": version, "digest": digest});
                self.audit(
                    now,
                    &actor,
                    "component.deploy",
                    &connector,
                    before,
                    Some(after),
                )
                .await?;
                Answer::Count(version as u64)
            }
            Work::Activate {
                connector,
                version,
                actor,
                now,
            } => {
                let before = self.active_version(&connector).await?;
                let done = self.activate(&connector, version, now).await?;
                if done {
                    let after = serde_json::json!({"version": version});
                    self.audit(
                        now,
                        &actor,
                        "component.activate",
                        &connector,
                        before,
                        Some(after),
                    )
                    .await?;
                }
                Answer::Bool(done)
            }
            Work::Limits {
                connector,
                limits,
                actor,
                now,
            } => {
                let before: Option<(Option<i64>, Option<f64>)> = sqlx::query_as(
                    "SELECT concurrency, rate FROM connector_controls WHERE connector = ?1",
                )
                .bind(&connector)
                .fetch_optional(&mut self.conn)
                .await?;
                sqlx::query(
                    "INSERT INTO connector_controls (connector, paused, updated_at, concurrency, rate) \
                     VALUES (?1, 0, ?2, ?3, ?4) \
                     ON CONFLICT (connector) DO UPDATE SET concurrency = excluded.concurrency, \
                         rate = excluded.rate, updated_at = excluded.updated_at",
                )
                .bind(&connector)
                .bind(now)
                .bind(limits.concurrency.map(i64::from))
                .bind(limits.rate)
                .execute(&mut self.conn)
                .await?;
                let before = before.map(|(c, r)| serde_json::json!({"concurrency": c, "rate": r}));
                let after =
                    serde_json::json!({"concurrency": limits.concurrency, "rate": limits.rate});
                self.audit(
                    now,
                    &actor,
                    "connector.limits",
                    &connector,
                    before,
                    Some(after),
                )
                .await?;
                Answer::Bool(true)
            }
            Work::Purge { before, limit } => {
                let seqs: Vec<i64> = sqlx::query_scalar(
                    "SELECT seq FROM events e WHERE e.accepted_at < ?1 AND NOT EXISTS \
                         (SELECT 1 FROM deliveries d WHERE d.event_seq = e.seq \
                          AND d.state NOT IN ('delivered', 'skipped', 'superseded', 'expired')) \
                     ORDER BY seq LIMIT ?2",
                )
                .bind(before)
                .bind(limit as i64)
                .fetch_all(&mut self.conn)
                .await?;
                for chunk in runs(&seqs) {
                    for table in ["deliveries WHERE event_seq", "events WHERE seq"] {
                        let mut qb =
                            QueryBuilder::<Sqlite>::new(format!("DELETE FROM {table} IN ("));
                        let mut sep = qb.separated(", ");
                        for seq in chunk {
                            sep.push_bind(*seq);
                        }
                        qb.push(")");
                        qb.build().execute(&mut self.conn).await?;
                    }
                }
                Answer::Count(seqs.len() as u64)
            }
            Work::PutConfig {
                connector,
                config,
                before,
                after,
                actor,
                now,
            } => {
                sqlx::query(
                    "INSERT INTO connector_configs (connector, config, updated_at) \
                     VALUES (?1, ?2, ?3) \
                     ON CONFLICT (connector) DO UPDATE SET config = excluded.config, \
                         updated_at = excluded.updated_at",
                )
                .bind(&connector)
                .bind(&config)
                .bind(now)
                .execute(&mut self.conn)
                .await?;
                self.audit(
                    now,
                    &actor,
                    "connector.config",
                    &connector,
                    before,
                    Some(after),
                )
                .await?;
                Answer::Bool(true)
            }
            Work::Lanes { key, connectors } => {
                Answer::Lanes(self.lane_views(&key, &connectors).await?)
            }
            Work::Pause {
                connector,
                paused,
                actor,
                now,
            } => {
                let was: Option<bool> = sqlx::query_scalar(
                    "SELECT paused FROM connector_controls WHERE connector = ?1",
                )
                .bind(&connector)
                .fetch_optional(&mut self.conn)
                .await?;
                let was = was.unwrap_or(false);
                if was == paused {
                    Answer::Bool(false)
                } else {
                    sqlx::query(
                        "INSERT INTO connector_controls (connector, paused, updated_at) VALUES (?1, ?2, ?3) \
                         ON CONFLICT (connector) DO UPDATE SET paused = excluded.paused, updated_at = excluded.updated_at",
                    )
                    .bind(&connector)
                    .bind(paused)
                    .bind(now)
                    .execute(&mut self.conn)
                    .await?;
                    let action = if paused {
                        "connector.pause"
                    } else {
                        "connector.resume"
                    };
                    self.audit(
                        now,
                        &actor,
                        action,
                        &connector,
                        Some(serde_json::json!({"paused": was})),
                        Some(serde_json::json!({"paused": paused})),
                    )
                    .await?;
                    Answer::Bool(true)
                }
            }
            Work::Operator {
                id,
                action,
                actor,
                now,
            } => {
                let before: Option<(String, i64, Option<String>)> = sqlx::query_as(
                    "SELECT state, attempts, last_error FROM deliveries WHERE id = ?1",
                )
                .bind(id)
                .fetch_optional(&mut self.conn)
                .await?;
                let (done, name) = match action {
                    OperatorAction::Retry => (self.retry_dead(id, now).await?, "delivery.retry"),
                    OperatorAction::Skip => (self.skip_dead(id, now).await?, "delivery.skip"),
                };
                if done {
                    let after: Option<(String,)> =
                        sqlx::query_as("SELECT state FROM deliveries WHERE id = ?1")
                            .bind(id)
                            .fetch_optional(&mut self.conn)
                            .await?;
                    let before = before.map(|(state, attempts, last_error)| {
                        serde_json::json!({"state": state, "attempts": attempts, "last_error": last_error})
                    });
                    let after = after.map(|(state,)| serde_json::json!({"state": state}));
                    self.audit(now, &actor, name, &id.to_string(), before, after)
                        .await?;
                }
                Answer::Bool(done)
            }
        })
    }

    /// Applies every ingest request of a commit group as one batch: one
    /// idempotency look-up, one lane look-up and multi-row inserts for all of
    /// them, so 64 clients posting single events cost a handful of statements
    /// rather than a handful each. Each request is still all-or-nothing: its
    /// conflicts are decided before anything is written, and a request with a
    /// conflict contributes no rows.
    async fn ingest(
        &mut self,
        requests: &[Vec<Routed>],
        now: Millis,
    ) -> StoreResult<Vec<IngestOutcome>> {
        // 1. Idempotency: which ids exist already, and with which digest.
        let all: Vec<&Routed> = requests.iter().flatten().collect();
        let mut known: HashMap<String, Vec<u8>> = HashMap::new();
        for chunk in runs(&all) {
            let mut qb = QueryBuilder::<Sqlite>::new("SELECT id, digest FROM events WHERE id IN (");
            let mut sep = qb.separated(", ");
            for r in chunk {
                sep.push_bind(r.event.id.as_str());
            }
            qb.push(")");
            for row in qb.build().fetch_all(&mut self.conn).await? {
                known.insert(row.try_get(0)?, row.try_get(1)?);
            }
        }
        let (outcomes, fresh) = classify(requests, &mut known);
        if fresh.is_empty() {
            return Ok(outcomes);
        }

        // 2. Which lanes these deliveries join are occupied already: those
        //    with an entry held in memory, and those with one in the table.
        let mut unknown: Vec<(&str, &str)> = Vec::new();
        let mut asked: HashSet<(&str, &str)> = HashSet::new();
        for r in &fresh {
            for c in &r.connectors {
                for k in &r.event.keys {
                    let lane = (c.as_str(), k.as_str());
                    if !asked.insert(lane) {
                        continue;
                    }
                    let owned = (lane.0.to_string(), lane.1.to_string());
                    if self.occupied.contains(&owned) {
                        continue;
                    }
                    if self.recent.holds(&owned) {
                        self.occupied.insert(owned);
                        continue;
                    }
                    match self.table_lanes.get(&owned) {
                        InTable::Yes => {
                            self.occupied.insert(owned);
                        }
                        InTable::Maybe => unknown.push(lane),
                        InTable::No => {}
                    }
                }
            }
        }
        for chunk in runs(&unknown) {
            let mut qb = QueryBuilder::<Sqlite>::new("SELECT v.column1, v.column2 FROM (VALUES ");
            let mut sep = qb.separated(", ");
            for (c, k) in chunk {
                sep.push("(");
                sep.push_bind_unseparated(*c);
                sep.push_unseparated(", ");
                sep.push_bind_unseparated(*k);
                sep.push_unseparated(")");
            }
            qb.push(
                ") AS v WHERE EXISTS (SELECT 1 FROM lane_entries l \
                 WHERE l.connector = v.column1 AND l.key = v.column2)",
            );
            for row in qb.build().fetch_all(&mut self.conn).await? {
                let lane: (String, String) = (row.try_get(0)?, row.try_get(1)?);
                self.table_lanes.found(lane.clone());
                self.occupied.insert(lane);
            }
        }

        // 3. Assign sequence numbers and delivery ids; count blockers.
        let seqs: Vec<i64> = (self.next_seq..self.next_seq + fresh.len() as i64).collect();
        self.next_seq += fresh.len() as i64;
        let mut next_delivery = self.next_delivery;
        let IngestPlan { deliveries, lanes } = plan_ingest(
            &fresh,
            &seqs,
            || {
                next_delivery += 1;
                next_delivery - 1
            },
            &mut self.occupied,
            now,
        );
        self.next_delivery = next_delivery;

        // 4. Write.
        for (chunk, seq_chunk) in runs(&fresh).zip(runs(&seqs)) {
            let mut qb = QueryBuilder::<Sqlite>::new(
                "INSERT OR FAIL INTO events (seq, id, type, keys, payload, digest, accepted_at) ",
            );
            let keys_json: Vec<String> = chunk
                .iter()
                .map(|r| serde_json::to_string(&r.event.keys).unwrap_or_else(|_| "[]".into()))
                .collect();
            qb.push_values(
                chunk.iter().zip(seq_chunk).zip(&keys_json),
                |mut b, ((r, seq), keys)| {
                    b.push_bind(*seq)
                        .push_bind(r.event.id.as_str())
                        .push_bind(r.event.event_type.as_str())
                        .push_bind(keys.as_str())
                        .push_bind(r.event.payload.as_str())
                        .push_bind(&r.event.digest[..])
                        .push_bind(now);
                },
            );
            qb.build().execute(&mut self.conn).await?;
        }
        for chunk in runs(&deliveries) {
            let mut qb = QueryBuilder::<Sqlite>::new(
                "INSERT OR FAIL INTO deliveries (id, event_seq, connector, state, blockers, next_attempt_at, created_at, updated_at, expires_at) ",
            );
            qb.push_values(chunk, |mut b, d| {
                let state = if d.blockers > 0 { "blocked" } else { "ready" };
                b.push_bind(d.id)
                    .push_bind(d.seq)
                    .push_bind(d.connector)
                    .push_bind(state)
                    .push_bind(d.blockers)
                    .push_bind(now)
                    .push_bind(now)
                    .push_bind(now)
                    .push_bind(d.expires_at);
            });
            qb.build().execute(&mut self.conn).await?;
        }
        // The lane entries stay in memory until the next flush (see
        // `RecentLanes`): a rebuild finds them from the rows above.
        for (c, k, seq, id) in lanes {
            self.recent.push(c, k, seq, id);
        }
        Ok(outcomes)
    }

    async fn claim(
        &mut self,
        connector: &str,
        limit: usize,
        now: Millis,
        lease_ms: i64,
    ) -> StoreResult<Vec<Claimed>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let lease = self.next_lease;
        self.next_lease += 1;
        let rows = sqlx::query(
            "UPDATE deliveries SET state = 'in_flight', attempts = attempts + 1, \
                 lease_until = ?1, lease_token = ?2, updated_at = ?3, lease_owner = ?6 \
             WHERE id IN (SELECT id FROM deliveries \
                 WHERE state = 'ready' AND connector = ?4 AND next_attempt_at <= ?3 \
                 AND (expires_at IS NULL OR expires_at > ?3) \
                 AND NOT EXISTS (SELECT 1 FROM connector_controls \
                                 WHERE connector = ?4 AND paused = 1) \
                 ORDER BY next_attempt_at, id LIMIT ?5) \
             RETURNING id, event_seq, attempts",
        )
        .bind(now.saturating_add(lease_ms))
        .bind(lease)
        .bind(now)
        .bind(connector)
        .bind(limit as i64)
        .bind(&self.node)
        .fetch_all(&mut self.conn)
        .await?;
        let mut claimed: Vec<(i64, i64, u32)> = Vec::with_capacity(rows.len());
        for row in rows {
            claimed.push((
                row.try_get(0)?,
                row.try_get(1)?,
                row.try_get::<i64, _>(2)? as u32,
            ));
        }
        claimed.sort_by_key(|c| c.1);
        let mut events: HashMap<i64, StoredEvent> = HashMap::with_capacity(claimed.len());
        for chunk in runs(&claimed) {
            let mut qb = QueryBuilder::<Sqlite>::new(
                "SELECT seq, id, type, keys, payload, accepted_at FROM events WHERE seq IN (",
            );
            let mut sep = qb.separated(", ");
            for c in chunk {
                sep.push_bind(c.1);
            }
            qb.push(")");
            for row in qb
                .build_query_as::<EventRow>()
                .fetch_all(&mut self.conn)
                .await?
            {
                let e = stored_event(row)?;
                events.insert(e.seq, e);
            }
        }
        claimed
            .into_iter()
            .map(|(id, seq, attempt)| {
                let event = events.get(&seq).cloned().ok_or_else(|| {
                    StoreError::Corrupt(format!("delivery {id} refers to missing event {seq}"))
                })?;
                Ok(Claimed {
                    delivery_id: id,
                    connector: connector.to_string(),
                    lease,
                    attempt,
                    event,
                })
            })
            .collect()
    }

    /// Applies a group's outcomes with a few multi-row statements: one
    /// update of the deliveries (each only if its lease is still current),
    /// then one release of every lane entry the delivered and released-dead
    /// ones held, one look-up of the lanes' new heads and one update of the
    /// heads that lose a blocker.
    async fn complete_batch(
        &mut self,
        items: &[Completion],
        now: Millis,
    ) -> StoreResult<Vec<bool>> {
        let mut out = vec![false; items.len()];
        for round in completion_rounds(items) {
            let batch: Vec<Completion> = round.iter().map(|&i| items[i].clone()).collect();
            let applied = self.complete_round(&batch, now).await?;
            for (k, &i) in round.iter().enumerate() {
                out[i] = applied.get(k).copied().unwrap_or(false);
            }
        }
        Ok(out)
    }

    /// [`Writer::complete_batch`] for completions of distinct deliveries.
    async fn complete_round(
        &mut self,
        items: &[Completion],
        now: Millis,
    ) -> StoreResult<Vec<bool>> {
        let mut applied: HashSet<i64> = HashSet::with_capacity(items.len());
        for chunk in runs(items) {
            let mut qb = QueryBuilder::<Sqlite>::new(
                "UPDATE deliveries SET state = v.column3, pending = (v.column3 = 'ready'), \
                     next_attempt_at = COALESCE(v.column4, deliveries.next_attempt_at), \
                     last_error = COALESCE(v.column5, deliveries.last_error), \
                     lease_until = NULL, lease_token = NULL, lease_owner = NULL, updated_at = ",
            );
            qb.push_bind(now).push(" FROM (VALUES ");
            let mut sep = qb.separated(", ");
            for c in chunk {
                let (state, at, error) = match &c.kind {
                    CompletionKind::Delivered => ("delivered", None, None),
                    CompletionKind::Retry { at, error } => {
                        ("ready", Some(*at), Some(error.as_str()))
                    }
                    CompletionKind::Dead { error, .. } => ("dead", None, Some(error.as_str())),
                };
                sep.push("(");
                sep.push_bind_unseparated(c.delivery_id);
                sep.push_unseparated(", ");
                sep.push_bind_unseparated(c.lease);
                sep.push_unseparated(", ");
                sep.push_bind_unseparated(state);
                sep.push_unseparated(", ");
                sep.push_bind_unseparated(at);
                sep.push_unseparated(", ");
                sep.push_bind_unseparated(error);
                sep.push_unseparated(")");
            }
            qb.push(
                ") AS v WHERE deliveries.id = v.column1 AND deliveries.state = 'in_flight' \
                 AND deliveries.lease_token = v.column2 RETURNING deliveries.id",
            );
            for id in qb
                .build_query_scalar::<i64>()
                .fetch_all(&mut self.conn)
                .await?
            {
                applied.insert(id);
            }
        }
        let mut entries: Vec<(&str, &str, i64)> = Vec::new();
        let mut held: Vec<(&str, &str, i64, i64)> = Vec::new();
        for c in items {
            if !applied.contains(&c.delivery_id) {
                continue;
            }
            match &c.kind {
                CompletionKind::Retry { .. } => {}
                CompletionKind::Dead { on_dead, .. } if *on_dead == OnDead::Hold => {
                    // Held entries go to the table now: a rebuild from the
                    // deliveries could not tell them from released ones.
                    for k in &c.keys {
                        if self.recent.remove(&c.connector, k, c.seq) {
                            held.push((&c.connector, k, c.seq, c.delivery_id));
                        }
                    }
                }
                CompletionKind::Delivered | CompletionKind::Dead { .. } => {
                    for k in &c.keys {
                        entries.push((&c.connector, k, c.seq));
                    }
                }
            }
        }
        for (c, k, _, _) in &held {
            self.table_lanes.added(c, k);
        }
        for chunk in runs(&held) {
            let mut qb = QueryBuilder::<Sqlite>::new(
                "INSERT OR FAIL INTO lane_entries (connector, key, seq, delivery_id) ",
            );
            qb.push_values(chunk, |mut b, (c, k, seq, id)| {
                b.push_bind(*c).push_bind(*k).push_bind(*seq).push_bind(*id);
            });
            qb.build().execute(&mut self.conn).await?;
        }
        self.release_entries(&entries, now).await?;
        Ok(items
            .iter()
            .map(|c| applied.contains(&c.delivery_id))
            .collect())
    }

    /// Removes lane entries `(connector, key, seq)`; where one was its
    /// lane's head, the new head loses a blocker (one per lane it heads) and
    /// becomes ready when it has none left.
    async fn release_entries(
        &mut self,
        entries: &[(&str, &str, i64)],
        now: Millis,
    ) -> StoreResult<()> {
        // Remove each entry where it is: held in memory, else in the table.
        let mut removed: Vec<(String, String, i64)> = Vec::new();
        let mut in_table: Vec<(&str, &str, i64)> = Vec::new();
        for &(c, k, seq) in entries {
            let lane = (c.to_string(), k.to_string());
            self.occupied.remove(&lane);
            if self.recent.remove_from(&lane, seq) {
                removed.push((lane.0, lane.1, seq));
            } else {
                in_table.push((c, k, seq));
            }
        }
        let from_table = removed.len();
        for chunk in runs(&in_table) {
            let mut qb = QueryBuilder::<Sqlite>::new(
                "DELETE FROM lane_entries WHERE (connector, key, seq) IN (VALUES ",
            );
            let mut sep = qb.separated(", ");
            for (c, k, seq) in chunk {
                sep.push("(");
                sep.push_bind_unseparated(*c);
                sep.push_unseparated(", ");
                sep.push_bind_unseparated(*k);
                sep.push_unseparated(", ");
                sep.push_bind_unseparated(*seq);
                sep.push_unseparated(")");
            }
            qb.push(") RETURNING connector, key, seq");
            removed.extend(
                qb.build_query_as::<(String, String, i64)>()
                    .fetch_all(&mut self.conn)
                    .await?,
            );
        }
        for (c, k, _) in &removed[from_table..] {
            self.table_lanes.removed(&(c.clone(), k.clone()));
        }
        // Per lane, the earliest entry released. The lane's head after the
        // release moves up one lane (loses one blocker) if an entry before
        // it went: however many went, it is now the head of one more lane.
        let mut lanes: HashMap<(String, String), i64> = HashMap::new();
        for (c, k, seq) in removed {
            let first = lanes.entry((c, k)).or_insert(seq);
            *first = (*first).min(seq);
        }
        let lanes: Vec<((String, String), i64)> = lanes.into_iter().collect();
        // The new head of each lane: the first entry held here or in the
        // table, whichever comes first. Only lanes the filter cannot rule
        // out are looked up in the table.
        let mut heads: HashMap<(String, String), (i64, i64)> = HashMap::new();
        let mut look_up: Vec<&(String, String)> = Vec::new();
        for (lane, _) in &lanes {
            let (c, k) = lane;
            if let Some(head) = self.recent.head(c, k) {
                heads.insert(lane.clone(), head);
            }
            if self.table_lanes.get(lane) != InTable::No {
                look_up.push(lane);
            }
        }
        for chunk in runs(&look_up) {
            let mut qb = QueryBuilder::<Sqlite>::new(
                "SELECT v.column1, v.column2, l.seq, l.delivery_id FROM (VALUES ",
            );
            let mut sep = qb.separated(", ");
            for (c, k) in chunk {
                sep.push("(");
                sep.push_bind_unseparated(c.as_str());
                sep.push_unseparated(", ");
                sep.push_bind_unseparated(k.as_str());
                sep.push_unseparated(")");
            }
            qb.push(
                ") AS v JOIN lane_entries l ON l.connector = v.column1 AND l.key = v.column2 \
                 AND l.seq = (SELECT MIN(seq) FROM lane_entries \
                              WHERE connector = v.column1 AND key = v.column2)",
            );
            for (c, k, seq, id) in qb
                .build_query_as::<(String, String, i64, i64)>()
                .fetch_all(&mut self.conn)
                .await?
            {
                let head = heads.entry((c, k)).or_insert((seq, id));
                if seq < head.0 {
                    *head = (seq, id);
                }
            }
        }
        let mut unblock: std::collections::BTreeMap<i64, i64> = std::collections::BTreeMap::new();
        for (lane, first_released) in &lanes {
            if let Some(&(head_seq, head_id)) = heads.get(lane) {
                if head_seq > *first_released {
                    *unblock.entry(head_id).or_default() += 1;
                }
            }
        }
        let unblock: Vec<(i64, i64)> = unblock.into_iter().collect();
        for chunk in runs(&unblock) {
            let mut qb = QueryBuilder::<Sqlite>::new(
                "UPDATE deliveries SET blockers = deliveries.blockers - v.column2, \
                     state = CASE WHEN deliveries.blockers = v.column2 AND deliveries.state = 'blocked' \
                             THEN 'ready' ELSE deliveries.state END, updated_at = ",
            );
            qb.push_bind(now).push(" FROM (VALUES ");
            let mut sep = qb.separated(", ");
            for (id, n) in chunk {
                sep.push("(");
                sep.push_bind_unseparated(*id);
                sep.push_unseparated(", ");
                sep.push_bind_unseparated(*n);
                sep.push_unseparated(")");
            }
            qb.push(") AS v WHERE deliveries.id = v.column1");
            qb.build().execute(&mut self.conn).await?;
        }
        Ok(())
    }

    async fn active_version(&mut self, connector: &str) -> StoreResult<Option<serde_json::Value>> {
        let v: Option<(i64, String)> = sqlx::query_as(
            "SELECT a.version, c.digest FROM active_components a \
             JOIN components c ON c.connector = a.connector AND c.version = a.version \
             WHERE a.connector = ?1",
        )
        .bind(connector)
        .fetch_optional(&mut self.conn)
        .await?;
        Ok(v.map(|(version, digest)| serde_json::json!({"version": version, "digest": digest})))
    }

    async fn audit(
        &mut self,
        now: Millis,
        actor: &str,
        action: &str,
        target: &str,
        before: Option<serde_json::Value>,
        after: Option<serde_json::Value>,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO audit_log (at, actor, action, target, before, after) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .bind(now)
        .bind(actor)
        .bind(action)
        .bind(target)
        .bind(before.map(|v| v.to_string()))
        .bind(after.map(|v| v.to_string()))
        .execute(&mut self.conn)
        .await?;
        Ok(())
    }

    async fn activate(&mut self, connector: &str, version: i64, now: Millis) -> StoreResult<bool> {
        let exists: Option<i64> = sqlx::query_scalar(
            "SELECT version FROM components WHERE connector = ?1 AND version = ?2",
        )
        .bind(connector)
        .bind(version)
        .fetch_optional(&mut self.conn)
        .await?;
        if exists.is_none() {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO active_components (connector, version, activated_at) VALUES (?1, ?2, ?3) \
             ON CONFLICT (connector) DO UPDATE SET version = excluded.version, activated_at = excluded.activated_at",
        )
        .bind(connector)
        .bind(version)
        .bind(now)
        .execute(&mut self.conn)
        .await?;
        Ok(true)
    }

    async fn rescue(&mut self, now: Millis) -> StoreResult<u64> {
        Ok(sqlx::query(
            "UPDATE deliveries SET state = 'ready', lease_until = NULL, lease_token = NULL, lease_owner = NULL, \
                 next_attempt_at = ?1, updated_at = ?1, \
                 last_error = 'lease expired: the attempt did not finish (gateway stopped or attempt hung)' \
             WHERE state = 'in_flight' AND lease_until <= ?1",
        )
        .bind(now)
        .execute(&mut self.conn)
        .await?
        .rows_affected())
    }

    /// Ends up to `limit` not-yet-started deliveries whose `expires_at` has
    /// passed as `expired`, releasing their lane entries (a blocked one may
    /// expire behind a head that still waits: removing an entry that is not
    /// its lane's head unblocks nothing, and its successors stay in order).
    async fn expire(&mut self, now: Millis, limit: usize) -> StoreResult<Vec<(String, u64)>> {
        let rows: Vec<(String, i64, String)> = sqlx::query_as(
            "UPDATE deliveries SET state = 'expired', pending = 0, updated_at = ?1, \
                 last_error = 'expired: not started within its route''s expire_after' \
             WHERE id IN (SELECT id FROM deliveries \
                 WHERE expires_at IS NOT NULL AND state IN ('blocked', 'ready') \
                 AND expires_at <= ?1 ORDER BY expires_at LIMIT ?2) \
             RETURNING connector, event_seq, (SELECT keys FROM events WHERE seq = event_seq)",
        )
        .bind(now)
        .bind(limit as i64)
        .fetch_all(&mut self.conn)
        .await?;
        let mut keys: Vec<(String, Vec<String>, i64)> = Vec::with_capacity(rows.len());
        let mut counts: std::collections::BTreeMap<String, u64> = Default::default();
        for (connector, seq, k) in rows {
            *counts.entry(connector.clone()).or_default() += 1;
            keys.push((connector, parse_keys(&k)?, seq));
        }
        let entries: Vec<(&str, &str, i64)> = keys
            .iter()
            .flat_map(|(c, ks, seq)| ks.iter().map(move |k| (c.as_str(), k.as_str(), *seq)))
            .collect();
        self.release_entries(&entries, now).await?;
        Ok(counts.into_iter().collect())
    }

    async fn retry_dead(&mut self, id: i64, now: Millis) -> StoreResult<bool> {
        let retried = sqlx::query(
            "UPDATE deliveries SET state = CASE WHEN blockers > 0 THEN 'blocked' ELSE 'ready' END, \
                 pending = 1, next_attempt_at = ?1, updated_at = ?1 \
             WHERE id = ?2 AND state = 'dead'",
        )
        .bind(now)
        .bind(id)
        .execute(&mut self.conn)
        .await?
        .rows_affected()
            == 1;
        // A rebuild takes every pending delivery from the watermark on to
        // hold its lanes, but one that released them when it died runs again
        // without them. Moving the watermark past it keeps a rebuild from
        // giving it back lanes it no longer holds (a held one's entries are
        // in the table already).
        if retried && id >= self.watermark {
            self.flush_now = true;
        }
        Ok(retried)
    }

    async fn skip_dead(&mut self, id: i64, now: Millis) -> StoreResult<bool> {
        let row: Option<(String, i64, String)> = sqlx::query_as(
            "UPDATE deliveries SET state = 'skipped', updated_at = ?1 \
             WHERE id = ?2 AND state = 'dead' \
             RETURNING connector, event_seq, (SELECT keys FROM events WHERE seq = event_seq)",
        )
        .bind(now)
        .bind(id)
        .fetch_optional(&mut self.conn)
        .await?;
        let Some((connector, seq, keys)) = row else {
            return Ok(false);
        };
        let keys = parse_keys(&keys)?;
        let entries: Vec<(&str, &str, i64)> = keys
            .iter()
            .map(|k| (connector.as_str(), k.as_str(), seq))
            .collect();
        self.release_entries(&entries, now).await?;
        Ok(true)
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn ingest(&self, events: Vec<Routed>, now: Millis) -> StoreResult<IngestOutcome> {
        self.call(Work::Ingest { events, now }, Reply::Ingest).await
    }

    async fn claim(
        &self,
        connector: &str,
        limit: usize,
        now: Millis,
        lease_ms: i64,
    ) -> StoreResult<Vec<Claimed>> {
        let work = Work::Claim {
            connector: connector.to_string(),
            limit,
            now,
            lease_ms,
        };
        self.call(work, Reply::Claim).await
    }

    async fn complete(&self, items: Vec<Completion>, now: Millis) -> StoreResult<Vec<bool>> {
        self.call(Work::Complete { items, now }, Reply::Bools).await
    }

    async fn rescue_expired(&self, now: Millis) -> StoreResult<u64> {
        self.call(Work::Rescue { now }, Reply::Count).await
    }

    async fn expire_due(&self, now: Millis, limit: usize) -> StoreResult<Vec<(String, u64)>> {
        self.call(Work::Expire { now, limit }, Reply::Expired).await
    }

    async fn next_due(&self, connector: &str) -> StoreResult<Option<Millis>> {
        Ok(sqlx::query_scalar(
            "SELECT MIN(next_attempt_at) FROM deliveries WHERE state = 'ready' AND connector = ?1",
        )
        .bind(connector)
        .fetch_one(&self.read)
        .await?)
    }

    async fn event(&self, id: &str) -> StoreResult<Option<EventView>> {
        let Some(row) = sqlx::query_as::<_, EventRow>(
            "SELECT seq, id, type, keys, payload, accepted_at FROM events WHERE id = ?1",
        )
        .bind(id)
        .fetch_optional(&self.read)
        .await?
        else {
            return Ok(None);
        };
        let e = stored_event(row)?;
        let rows = sqlx::query_as::<_, DeliveryRow>(
            "SELECT id, connector, state, attempts, last_error, next_attempt_at, updated_at, \
                 lease_owner, expires_at FROM deliveries WHERE event_seq = ?1 ORDER BY id",
        )
        .bind(e.seq)
        .fetch_all(&self.read)
        .await?;
        let deliveries = rows
            .into_iter()
            .map(delivery_view)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(Some(EventView {
            seq: e.seq,
            id: e.id,
            event_type: e.event_type,
            keys: e.keys,
            payload: serde_json::from_str(&e.payload)
                .map_err(|err| StoreError::Corrupt(err.to_string()))?,
            accepted_at: e.accepted_at,
            deliveries,
        }))
    }

    async fn retry_dead(&self, delivery_id: i64, now: Millis) -> StoreResult<bool> {
        self.call(
            Work::RetryDead {
                id: delivery_id,
                now,
            },
            Reply::Bool,
        )
        .await
    }

    async fn skip_dead(&self, delivery_id: i64, now: Millis) -> StoreResult<bool> {
        self.call(
            Work::SkipDead {
                id: delivery_id,
                now,
            },
            Reply::Bool,
        )
        .await
    }

    async fn state_counts(&self, connector: &str) -> StoreResult<StateCounts> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT state, COUNT(*) FROM deliveries WHERE connector = ?1 GROUP BY state",
        )
        .bind(connector)
        .fetch_all(&self.read)
        .await?;
        state_counts_of(rows)
    }

    async fn add_component(
        &self,
        connector: &str,
        digest: &str,
        wasm: &[u8],
        info: &serde_json::Value,
        actor: &str,
        now: Millis,
    ) -> StoreResult<ComponentVersion> {
        let work = Work::AddComponent {
            connector: connector.to_string(),
            digest: digest.to_string(),
            wasm: wasm.to_vec(),
            info: info.to_string(),
            actor: actor.to_string(),
            now,
        };
        let version = self.call(work, Reply::Count).await? as i64;
        self.component_versions(connector)
            .await?
            .into_iter()
            .find(|v| v.version == version)
            .ok_or_else(|| StoreError::Corrupt(format!("{connector} version {version} vanished")))
    }

    async fn component_versions(&self, connector: &str) -> StoreResult<Vec<ComponentVersion>> {
        let rows: Vec<VersionRow> = sqlx::query_as(
            "SELECT c.version, c.digest, c.info, c.uploaded_at, length(c.wasm), \
                 COALESCE(a.version = c.version, 0) \
             FROM components c LEFT JOIN active_components a ON a.connector = c.connector \
             WHERE c.connector = ?1 ORDER BY c.version DESC",
        )
        .bind(connector)
        .fetch_all(&self.read)
        .await?;
        versions_of(connector, rows)
    }

    async fn component_wasm(&self, connector: &str, version: i64) -> StoreResult<Option<Vec<u8>>> {
        Ok(
            sqlx::query_scalar("SELECT wasm FROM components WHERE connector = ?1 AND version = ?2")
                .bind(connector)
                .bind(version)
                .fetch_optional(&self.read)
                .await?,
        )
    }

    async fn activate_component(
        &self,
        connector: &str,
        version: i64,
        actor: &str,
        now: Millis,
    ) -> StoreResult<bool> {
        let work = Work::Activate {
            connector: connector.to_string(),
            version,
            actor: actor.to_string(),
            now,
        };
        self.call(work, Reply::Bool).await
    }

    async fn operator_action(
        &self,
        delivery_id: i64,
        action: OperatorAction,
        actor: &str,
        now: Millis,
    ) -> StoreResult<bool> {
        let work = Work::Operator {
            id: delivery_id,
            action,
            actor: actor.to_string(),
            now,
        };
        self.call(work, Reply::Bool).await
    }

    async fn dead_letters(&self, f: &DeadFilter) -> StoreResult<Vec<DeadLetter>> {
        let mut qb = QueryBuilder::<Sqlite>::new(
            "SELECT d.id, d.connector, e.id, e.type, e.keys, d.attempts, d.last_error, d.updated_at \
             FROM deliveries d JOIN events e ON e.seq = d.event_seq WHERE d.state = 'dead'",
        );
        if let Some(c) = &f.connector {
            qb.push(" AND d.connector = ").push_bind(c.clone());
        }
        if let Some(t) = &f.event_type {
            qb.push(" AND e.type = ").push_bind(t.clone());
        }
        if let Some(k) = &f.key {
            qb.push(" AND EXISTS (SELECT 1 FROM json_each(e.keys) WHERE json_each.value = ")
                .push_bind(k.clone())
                .push(")");
        }
        if let Some(t) = f.since {
            qb.push(" AND d.updated_at >= ").push_bind(t);
        }
        if let Some(t) = f.until {
            qb.push(" AND d.updated_at < ").push_bind(t);
        }
        if let Some(id) = f.before_id {
            qb.push(" AND d.id < ").push_bind(id);
        }
        qb.push(" ORDER BY d.id DESC LIMIT ")
            .push_bind(f.limit.clamp(1, 10_000) as i64);
        let rows: Vec<DeadRow> = qb.build_query_as().fetch_all(&self.read).await?;
        dead_letters_of(rows)
    }

    async fn lanes(&self, key: &str, connectors: &[String]) -> StoreResult<Vec<LaneView>> {
        self.call(
            Work::Lanes {
                key: key.to_string(),
                connectors: connectors.to_vec(),
            },
            Reply::Lanes,
        )
        .await
    }

    async fn audit_log(
        &self,
        limit: usize,
        before_id: Option<i64>,
    ) -> StoreResult<Vec<AuditRecord>> {
        let rows: Vec<AuditRow> = sqlx::query_as(
            "SELECT id, at, actor, action, target, before, after FROM audit_log \
             WHERE id < ?1 ORDER BY id DESC LIMIT ?2",
        )
        .bind(before_id.unwrap_or(i64::MAX))
        .bind(limit.clamp(1, 10_000) as i64)
        .fetch_all(&self.read)
        .await?;
        audit_of(rows)
    }

    async fn set_paused(
        &self,
        connector: &str,
        paused: bool,
        actor: &str,
        now: Millis,
    ) -> StoreResult<bool> {
        let work = Work::Pause {
            connector: connector.to_string(),
            paused,
            actor: actor.to_string(),
            now,
        };
        self.call(work, Reply::Bool).await
    }

    async fn set_limits(
        &self,
        connector: &str,
        limits: LimitOverrides,
        actor: &str,
        now: Millis,
    ) -> StoreResult<()> {
        let work = Work::Limits {
            connector: connector.to_string(),
            limits,
            actor: actor.to_string(),
            now,
        };
        self.call(work, Reply::Bool).await.map(|_| ())
    }

    async fn purge_finished(&self, accepted_before: Millis, limit: usize) -> StoreResult<u64> {
        let work = Work::Purge {
            before: accepted_before,
            limit,
        };
        self.call(work, Reply::Count).await
    }

    async fn connector_configs(&self) -> StoreResult<Vec<(String, serde_json::Value)>> {
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT connector, config FROM connector_configs ORDER BY connector")
                .fetch_all(&self.read)
                .await?;
        configs_of(rows)
    }

    async fn put_connector_config(
        &self,
        connector: &str,
        config: &serde_json::Value,
        before: Option<serde_json::Value>,
        after: serde_json::Value,
        actor: &str,
        now: Millis,
    ) -> StoreResult<()> {
        let work = Work::PutConfig {
            connector: connector.to_string(),
            config: config.to_string(),
            before,
            after,
            actor: actor.to_string(),
            now,
        };
        self.call(work, Reply::Bool).await.map(|_| ())
    }

    async fn limit_overrides(&self, connector: &str) -> StoreResult<LimitOverrides> {
        let row: Option<(Option<i64>, Option<f64>)> =
            sqlx::query_as("SELECT concurrency, rate FROM connector_controls WHERE connector = ?1")
                .bind(connector)
                .fetch_optional(&self.read)
                .await?;
        let (concurrency, rate) = row.unwrap_or((None, None));
        Ok(LimitOverrides {
            concurrency: concurrency.and_then(|c| u32::try_from(c).ok()),
            rate,
        })
    }

    async fn is_paused(&self, connector: &str) -> StoreResult<bool> {
        let v: Option<bool> =
            sqlx::query_scalar("SELECT paused FROM connector_controls WHERE connector = ?1")
                .bind(connector)
                .fetch_optional(&self.read)
                .await?;
        Ok(v.unwrap_or(false))
    }

    async fn queue_stats(&self, connector: &str) -> StoreResult<QueueStats> {
        let (ready, blocked, in_flight): (i64, i64, i64) = sqlx::query_as(
            "SELECT COUNT(*) FILTER (WHERE state = 'ready'), \
                 COUNT(*) FILTER (WHERE state = 'blocked'), \
                 COUNT(*) FILTER (WHERE state = 'in_flight') \
             FROM deliveries INDEXED BY deliveries_pending \
             WHERE connector = ?1 AND pending = 1",
        )
        .bind(connector)
        .fetch_one(&self.read)
        .await?;
        let oldest: Option<i64> = sqlx::query_scalar(
            "SELECT created_at FROM deliveries WHERE id = \
                 (SELECT MIN(id) FROM deliveries INDEXED BY deliveries_pending \
                  WHERE connector = ?1 AND pending = 1)",
        )
        .bind(connector)
        .fetch_optional(&self.read)
        .await?;
        let dead: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM deliveries WHERE connector = ?1 AND state = 'dead'",
        )
        .bind(connector)
        .fetch_one(&self.read)
        .await?;
        Ok(QueueStats {
            ready: ready as u64,
            blocked: blocked as u64,
            in_flight: in_flight as u64,
            dead: dead as u64,
            oldest_pending_at: oldest,
        })
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1 FROM events LIMIT 1")
            .fetch_optional(&self.read)
            .await?;
        Ok(())
    }
}

/// Splits what [`Writer::count_table_lanes`] has SQLite frame: per row,
/// the connector's length in bytes, a comma and the connector, then the
/// same for the key.
fn unframe_lanes(mut framed: &str) -> StoreResult<Vec<(&str, &str)>> {
    fn field<'a>(rest: &mut &'a str) -> StoreResult<&'a str> {
        let bad = || StoreError::Corrupt("lane_entries: a framed row does not parse".into());
        let (len, tail) = rest.split_once(',').ok_or_else(bad)?;
        let len: usize = len.parse().map_err(|_| bad())?;
        if tail.len() < len || !tail.is_char_boundary(len) {
            return Err(bad());
        }
        let (value, tail) = tail.split_at(len);
        *rest = tail;
        Ok(value)
    }
    let mut out = Vec::new();
    while !framed.is_empty() {
        let c = field(&mut framed)?;
        let k = field(&mut framed)?;
        out.push((c, k));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::{runs, unframe_lanes, MAX_ROWS};

    #[tokio::test]
    async fn a_database_in_a_directory_that_does_not_exist_yet_is_created_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("data/switchboard/queue.db");
        let url = format!("sqlite://{}", file.display());
        super::SqliteStore::migrate(&url).await.unwrap();
        assert!(file.is_file());
        let file = dir.path().join("other/queue.db");
        let url = format!("sqlite://{}", file.display());
        drop(super::SqliteStore::open(&url).await.unwrap());
        assert!(file.is_file());
        // A directory that cannot be made is an error that says which.
        std::fs::write(dir.path().join("plain"), b"").unwrap();
        let url = format!("sqlite://{}", dir.path().join("plain/x/queue.db").display());
        let e = super::SqliteStore::open(&url)
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("plain/x"), "{e}");
    }

    #[test]
    fn framed_lanes_split_back_whatever_the_keys_hold() {
        let lanes = [
            ("hss", "msisdn:2065551234"),
            ("crm", "a,b,3,c"),
            ("sms", ""),
            ("hss", "3,ü€,x"),
        ];
        let framed: String = lanes
            .iter()
            .map(|(c, k)| format!("{},{c}{},{k}", c.len(), k.len()))
            .collect();
        assert_eq!(unframe_lanes(&framed).unwrap(), lanes);
        assert!(unframe_lanes("").unwrap().is_empty());
        for bad in ["3,hss", "x,hss0,", "3,hss9,short", "3,hss1,ü"] {
            assert!(unframe_lanes(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn runs_cover_every_item_once_in_few_distinct_sizes() {
        let mut sizes = std::collections::BTreeSet::new();
        for n in 0..=3 * MAX_ROWS + 1 {
            let items: Vec<usize> = (0..n).collect();
            let joined: Vec<usize> = runs(&items).flatten().copied().collect();
            assert_eq!(joined, items, "n = {n}");
            for run in runs(&items) {
                assert!(run.len().is_power_of_two() && run.len() <= MAX_ROWS);
                sizes.insert(run.len());
            }
        }
        assert_eq!(sizes.len(), MAX_ROWS.ilog2() as usize + 1);
        let split: Vec<usize> = runs(&[0u8; 300]).map(<[u8]>::len).collect();
        assert_eq!(split, [256, 32, 8, 4]);
    }
}
