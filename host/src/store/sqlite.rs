//! The embedded default: SQLite in WAL mode, with `synchronous=FULL` for
//! every commit that acknowledges or readies something (see
//! `Writer::sync_commit`).
//!
//! Design:
//! - **One writer.** SQLite admits one writer at a time, so every queue
//!   write goes through a single thread that owns the write connection. It
//!   drains whatever operations are queued (ingests, claims, completions,
//!   rescues), applies them in one `BEGIN IMMEDIATE` transaction, commits
//!   once and only then answers each caller: group commit. 64 clients
//!   posting single events share one fsync instead of paying one each. The
//!   thread runs its statements itself, synchronously (see `lite`): a
//!   transaction costs one hand-off in and one answer out, however many
//!   statements it holds.
//! - **Offers.** The writer also claims for the dispatch loops waiting with
//!   an open offer, at the end of each group that may have made one of
//!   their deliveries ready, in that group's transaction
//!   (`Writer::serve_offers`; see `store::offer`): at a trickle a delivery
//!   then costs the ingest's and the outcome's transactions, no claim's.
//! - **Readers** use a small read-only pool (sqlx); WAL lets them run beside
//!   the writer and see only committed data. Catalog writes and the purge of
//!   finished events take a connection of their own while the writer stands
//!   aside (`catalog::WriterPause`).
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
use std::sync::{mpsc, Arc, LazyLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::Connection;
use tokio::sync::oneshot;

use super::catalog::{self, Counts, Pools};
use super::group::{CommitWindow, SQLITE_WAIT};
use super::lite;
use super::offer::Offers;
use super::recent_lanes::RecentLanes;
use super::retention;
use super::table_lanes::{InTable, TableLanes};
use super::{
    claims_of, classify, completion_rounds, count_superseded, lane_view_of, migrations, parse_keys,
    runs, state_of, Catalog, Claimed, Completion, EventRow, IngestOutcome, LaneHeadRow, LaneView,
    LastDue, Offer, OperatorAction, Purge, Purged, RoundAnswers, Routed, Settled, Store,
    StoreError, StoreResult, LANE_BEHIND,
};
use crate::queue::lanes::{self, first_released, plan_accept, promotions, AcceptPlan, Step};
use crate::queue::{DeliveryState, Millis};

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
/// Prepared statements the writer keeps: every kind it runs, each in the
/// few sizes `runs` cuts multi-row statements into.
const WRITER_STATEMENTS: usize = 512;

/// Most operations applied in one transaction.
const MAX_GROUP_OPS: usize = 512;
/// Rows of `lane_entries` read per commit group while the writer rebuilds
/// its filter of them under load (about a millisecond; a page ends with the
/// last row of a lane, so one lane with more rows is read whole); when idle
/// it reads `LaneFlush::slice` rows at a time.
const REBUILD_PAGE_BUSY: usize = 1_024;
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

static MIGRATOR: LazyLock<Migrator> = LazyLock::new(|| migrations::migrator(migrations::SQLITE));

pub struct SqliteStore {
    tx: mpsc::Sender<Queued>,
    catalog: Catalog,
    /// What the last claims found of when the next delivery is due.
    due: LastDue,
    /// The loops' standing claims, served by the writer ([`Store::offer`]).
    offers: Offers,
}

/// The settings every connection of the database a `sqlite://` URL names
/// has, and a connection on which the migrations have run. The file is
/// created when missing, and its directory with it
/// (`sqlite://./data/switchboard.db` on a fresh machine).
async fn connect_migrated(url: &str) -> StoreResult<(SqliteConnectOptions, SqliteConnection)> {
    let base = SqliteConnectOptions::from_str(url)
        .map_err(|e| super::invalid_url(url, e))?
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(Duration::from_secs(10))
        .statement_cache_capacity(512)
        .foreign_keys(false);
    if let Some(dir) = base.get_filename().parent() {
        if !dir.as_os_str().is_empty() && !dir.exists() {
            std::fs::create_dir_all(dir).map_err(|e| {
                let dir = dir.display();
                StoreError::Unavailable(format!("cannot create directory {dir} for {url}: {e}"))
            })?;
        }
    }
    let mut conn = SqliteConnection::connect_with(&base.clone().create_if_missing(true))
        .await
        .map_err(|e| StoreError::Unavailable(format!("cannot open {url}: {e}")))?;
    MIGRATOR
        .run(&mut conn)
        .await
        .map_err(|e| StoreError::Migration(e.to_string()))?;
    Ok((base, conn))
}

impl SqliteStore {
    /// Opens (creating if missing, with its directory) the database a
    /// `sqlite://` URL names and applies migrations.
    pub async fn open(url: &str) -> StoreResult<Self> {
        Self::open_tuned(url, &super::default_node(), LaneFlush::default(), None).await
    }

    /// [`SqliteStore::open`], with the node name its leases carry, when to
    /// flush the lane entries the writer holds (tests use tiny values to
    /// flush all the time) and how long a small group of posts waits for
    /// more (`None`: 2 ms; see `store::group`).
    pub async fn open_tuned(
        url: &str,
        node: &str,
        flush: LaneFlush,
        wait: Option<Duration>,
    ) -> StoreResult<Self> {
        let (base, conn) = connect_migrated(url).await?;
        // The writer's file, and its write-ahead log (none in memory).
        let path = base.get_filename().to_path_buf();
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let wal = (!in_memory).then(|| {
            let mut wal = path.as_os_str().to_owned();
            wal.push("-wal");
            std::path::PathBuf::from(wal)
        });
        // No ping before each use: a local file's connection does not go
        // stale, and the ping is a round trip to sqlx's SQLite thread.
        let read = SqlitePoolOptions::new()
            .test_before_acquire(false)
            .max_connections(4)
            .min_connections(1)
            .connect_with(base.clone().read_only(true))
            .await?;
        // The catalog's writes (configs, controls, versions) never touch
        // lanes: they take their own connection and SQLite's write lock.
        let catalog_write = SqlitePoolOptions::new()
            .test_before_acquire(false)
            .max_connections(1)
            .min_connections(0)
            .connect_with(base.pragma("wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES.to_string()))
            .await?;
        let (tx, rx) = mpsc::channel();
        let catalog = Catalog::new(
            Pools::Sqlite {
                read,
                write: catalog_write,
                writer: std::sync::Arc::new(PauseWriter(tx.clone())),
            },
            node,
        );
        // The writer opens its own connection (see `lite`) on its own
        // thread, with its page cache and checkpoint cadence
        // (docs/benchmarks-history.md, "SQLite writer settings": with random
        // keys nearly every statement touches a page that SQLite's default
        // 2 MiB cache no longer holds, and the default checkpoint every 1,000
        // WAL pages copies the same hot pages back into the database over
        // and over), and reads back its state before it serves; the first
        // answer says whether it could.
        let node = node.to_string();
        let offers = Offers::default();
        let writer_offers = offers.clone();
        let (ready, started) = oneshot::channel();
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || {
                let opened = lite::open(&path, in_memory, WRITER_STATEMENTS).and_then(|conn| {
                    conn.execute_batch(&format!(
                        "PRAGMA cache_size = -{WRITER_CACHE_KIB}; \
                         PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT_PAGES}; \
                         PRAGMA temp_store = MEMORY;"
                    ))?;
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
                        rebuild_after: Instant::now(),
                        node,
                        counts: Counts::default(),
                        synchronous_full: true,
                        wal,
                        stopped: None,
                        offers: writer_offers,
                        made_ready: HashSet::new(),
                        ready_any: false,
                        orphaned: Vec::new(),
                        latest_now: 0,
                        window: CommitWindow::new(wait.unwrap_or(SQLITE_WAIT)),
                    };
                    writer.reload()?;
                    Ok(writer)
                });
                match opened {
                    Ok(writer) => {
                        let _ = ready.send(Ok(()));
                        writer.run(rx);
                    }
                    Err(e) => {
                        let _ = ready.send(Err(e));
                    }
                }
            })
            .map_err(|e| StoreError::Unavailable(format!("cannot start the store writer: {e}")))?;
        started
            .await
            .map_err(|_| StoreError::Internal("store writer ended at start".into()))??;
        // Only now: an in-memory database lives as long as a connection to
        // it does.
        conn.close().await?;
        Ok(Self {
            tx,
            catalog,
            due: Default::default(),
            offers,
        })
    }

    /// Applies migrations only (`switchboard migrate`); returns the versions
    /// applied, oldest first.
    pub async fn migrate(url: &str) -> StoreResult<Vec<i64>> {
        let (_, mut conn) = connect_migrated(url).await?;
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

    /// Takes this process's exclusive hold on the database a `sqlite://`
    /// URL names, for as long as the returned lock lives: one gateway
    /// serves a SQLite database, so everything it holds in flight is this
    /// process's own ([`Store::reclaim`]). A second process is refused with
    /// an error naming the holder. `None` for an in-memory database.
    ///
    /// The lock is a `flock` on `PATH.lock` beside the database, which the
    /// kernel releases when the process ends, however it ends; a lock file
    /// left behind holds nothing. (Not on the database file itself: closing
    /// any descriptor of it would drop SQLite's own POSIX locks.)
    pub fn lock(url: &str) -> StoreResult<Option<DatabaseLock>> {
        use std::io::{Read, Seek, Write};
        let Some(db) = Self::path_of(url) else {
            return Ok(None);
        };
        let name = db.to_string_lossy();
        if name.is_empty() || name == ":memory:" || url.contains("mode=memory") {
            return Ok(None);
        }
        let mut path = db.as_os_str().to_owned();
        path.push(".lock");
        let path = std::path::PathBuf::from(path);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Unavailable(format!("cannot create directory {}: {e}", dir.display()))
            })?;
        }
        let cannot = |e: std::io::Error| {
            StoreError::Unavailable(format!("cannot lock {}: {e}", path.display()))
        };
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(cannot)?;
        match file.try_lock() {
            Ok(()) => {
                // Who holds it, for the message a second process prints.
                let holder = format!("pid {}", std::process::id());
                file.set_len(0).map_err(cannot)?;
                file.write_all(holder.as_bytes()).map_err(cannot)?;
                Ok(Some(DatabaseLock { _file: file }))
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.rewind();
                let _ = file.read_to_string(&mut holder);
                let holder = match holder.trim() {
                    "" => String::new(),
                    h => format!(" ({h})"),
                };
                Err(StoreError::InUse(format!(
                    "{} is in use by another switchboard process{holder}: one gateway serves a \
                     SQLite database; stop the other one, or give this one its own \
                     storage.url (several nodes share a PostgreSQL database)",
                    db.display()
                )))
            }
            Err(std::fs::TryLockError::Error(e)) => Err(cannot(e)),
        }
    }

    /// Queues `work` for the writer and waits for its answer, given only
    /// once the transaction holding it committed.
    async fn call<T: Send + 'static>(&self, work: Work) -> StoreResult<T> {
        ask(&self.tx, work)
            .await?
            .downcast::<T>()
            .map(|v| *v)
            .map_err(|_| StoreError::Internal("store writer answered the wrong kind".into()))
    }
}

/// A process's exclusive hold on a SQLite database ([`SqliteStore::lock`]),
/// released when dropped or when the process ends.
#[derive(Debug)]
pub struct DatabaseLock {
    _file: std::fs::File,
}

/// Asks the writer to stand aside for the catalog (`catalog::WriterPause`).
struct PauseWriter(mpsc::Sender<Queued>);

#[async_trait]
impl catalog::WriterPause for PauseWriter {
    async fn pause(&self) -> StoreResult<oneshot::Sender<()>> {
        let (resume, waiting) = oneshot::channel();
        ask(&self.0, Work::Pause { resume: waiting }).await?;
        Ok(resume)
    }
}

/// Sends `work` to the writer's thread and waits for its answer.
async fn ask(writer: &mpsc::Sender<Queued>, work: Work) -> StoreResult<Answer> {
    let stopped = || StoreError::Unavailable("store writer stopped".into());
    let (tx, rx) = oneshot::channel();
    writer
        .send((work, tx, Instant::now()))
        .map_err(|_| stopped())?;
    rx.await.map_err(|_| stopped())?
}

/// What the writer applies, in one transaction with whatever else is queued.
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
    /// Leases past their end; with `all`, every lease (see
    /// [`Store::reclaim`]).
    Rescue {
        now: Millis,
        all: bool,
    },
    Expire {
        now: Millis,
        limit: usize,
    },
    Operator {
        id: i64,
        action: OperatorAction,
        actor: String,
        now: Millis,
    },
    /// Read-only, but the writer holds the newest lane entries.
    Lanes {
        key: String,
        connectors: Vec<String>,
    },
    /// Stand aside, between two transactions, until `resume` is sent or
    /// dropped: the catalog writes on its own connection meanwhile (see
    /// `catalog::WriterPause`).
    Pause {
        resume: oneshot::Receiver<()>,
    },
}

impl Work {
    /// The time its caller gave it (0 for what carries none).
    fn now(&self) -> Millis {
        match self {
            Work::Ingest { now, .. }
            | Work::Claim { now, .. }
            | Work::Complete { now, .. }
            | Work::Rescue { now, .. }
            | Work::Expire { now, .. }
            | Work::Operator { now, .. } => *now,
            Work::Lanes { .. } | Work::Pause { .. } => 0,
        }
    }

    /// Whether a commit holding this waits for the disk: all but what
    /// acknowledges nothing and, on its own, readies nothing (see
    /// [`Writer::sync_commit`]; an outcome that readies a delivery is
    /// synced after its commit).
    fn must_sync(&self) -> bool {
        !matches!(
            self,
            Work::Claim { .. }
                | Work::Complete { .. }
                | Work::Rescue { .. }
                | Work::Lanes { .. }
                | Work::Pause { .. }
        )
    }
}

/// What [`Writer::supersede`] ended: each stored delivery's connector and
/// superseding `seq`; and which of the accept's own deliveries are born
/// superseded, by whom.
type Supersessions = (Vec<(String, i64)>, HashMap<(i64, String), i64>);

/// A claim's deliveries and, when it got fewer than it asked for, when the
/// next is due (see [`Store::next_due`]).
type ClaimAnswer = (Vec<Claimed>, Option<Option<Millis>>);

/// The result of one [`Work`], of the type its caller expects.
type Answer = Box<dyn std::any::Any + Send>;
type Reply = oneshot::Sender<StoreResult<Answer>>;
/// A [`Work`] on its way to the writer: where to answer, and since when it
/// waits.
type Queued = (Work, Reply, Instant);

struct Writer {
    conn: rusqlite::Connection,
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
    /// A flush under way (the lanes it has still to visit are in
    /// [`RecentLanes`]): the first delivery id not yet created when it
    /// started. Every entry of an earlier delivery is in the table once the
    /// sweep ends.
    sweep: Option<i64>,
    /// Flush everything at the end of this transaction.
    flush_now: bool,
    /// No page of the lane filter's rebuild before this (one failed).
    rebuild_after: Instant,
    /// Written as the owner of every lease this store hands out.
    node: String,
    /// What this transaction changed in the per-connector counts.
    counts: Counts,
    /// The connection's `synchronous` setting: `FULL`, or `NORMAL` for a
    /// commit that may skip the sync (see [`Writer::sync_commit`]).
    synchronous_full: bool,
    /// The write-ahead log's file, synced by [`Writer::sync_wal`] (none for
    /// an in-memory database).
    wal: Option<std::path::PathBuf>,
    /// Set once a sync failed: every request is answered with it.
    stopped: Option<StoreError>,
    /// The loops' standing claims ([`Writer::serve_offers`]).
    offers: Offers,
    /// Connectors this transaction may have made a delivery of ready
    /// (every connector with an offer, with `ready_any`).
    made_ready: HashSet<String>,
    ready_any: bool,
    /// Deliveries claimed for an offer whose loop was gone when they were
    /// sent: handed back (ready now) in the next transaction.
    orphaned: Vec<Claimed>,
    /// The latest time any group carried: every delivery accepted so far
    /// was due by then.
    latest_now: Millis,
    /// How long a small group waits for company ([`super::group`]).
    window: CommitWindow,
}

impl Writer {
    /// Serves commit groups until every sender is gone, on the writer's
    /// own thread (see `lite`).
    fn run(mut self, rx: mpsc::Receiver<Queued>) {
        loop {
            let first = if self.table_lanes.rebuild_from().is_some() {
                // Rebuilding the lane filter: a page whenever nothing waits.
                match rx.try_recv() {
                    Ok(op) => op,
                    Err(mpsc::TryRecvError::Empty) if self.rebuild_due() => {
                        if let Err(e) = self.rebuild_table_lanes(self.flush.slice) {
                            self.rebuild_failed(&e);
                        }
                        continue;
                    }
                    // After a failed page: work, or the time to try again.
                    Err(mpsc::TryRecvError::Empty) => {
                        let wait = self.rebuild_after.saturating_duration_since(Instant::now());
                        match rx.recv_timeout(wait) {
                            Ok(op) => op,
                            Err(mpsc::RecvTimeoutError::Timeout) => continue,
                            Err(mpsc::RecvTimeoutError::Disconnected) => break,
                        }
                    }
                    Err(mpsc::TryRecvError::Disconnected) => break,
                }
            } else {
                match rx.recv() {
                    Ok(op) => op,
                    Err(_) => break,
                }
            };
            let mut group = vec![first];
            let drain = |group: &mut Vec<_>| {
                while group.len() < MAX_GROUP_OPS {
                    match rx.try_recv() {
                        Ok(op) => group.push(op),
                        Err(_) => break,
                    }
                }
            };
            drain(&mut group);
            // Too few posts where more are due: wait for company (`group`;
            // only posts make a group wait).
            let posts = |group: &[Queued]| {
                let mut posts = group
                    .iter()
                    .filter(|(w, ..)| matches!(w, Work::Ingest { .. }));
                let oldest = posts.next().map(|(.., at)| *at);
                (oldest, usize::from(oldest.is_some()) + posts.count())
            };
            if let (Some(since), count) = posts(&group) {
                let now = Instant::now();
                let open = self.stopped.is_none() && group.len() < MAX_GROUP_OPS;
                let until = open.then(|| self.window.until(count, since, now));
                if let Some(until) = until.flatten() {
                    std::thread::sleep(until - now);
                    drain(&mut group);
                }
                self.window.took(posts(&group).1);
            }
            // A pause splits the group: what came before it commits first.
            let mut batch = Vec::with_capacity(group.len());
            for (work, reply, _) in group {
                if let Some(e) = &self.stopped {
                    let _ = reply.send(Err(e.clone()));
                    continue;
                }
                match work {
                    Work::Pause { resume } => {
                        if !batch.is_empty() {
                            self.apply_group(std::mem::take(&mut batch));
                        }
                        if reply.send(Ok(Box::new(()))).is_ok() {
                            let _ = resume.blocking_recv();
                        }
                    }
                    work => batch.push((work, reply)),
                }
            }
            if !batch.is_empty() {
                self.apply_group(batch);
            }
        }
    }

    /// Applies a group in one transaction ([`Writer::transact`]) and answers
    /// it; rolls it back, whole, on an error.
    fn apply_group(&mut self, group: Vec<(Work, Reply)>) {
        self.occupied.clear();
        self.made_ready.clear();
        self.ready_any = false;
        let (works, replies): (Vec<Work>, Vec<Reply>) = group.into_iter().unzip();
        let durable = works.iter().any(Work::must_sync);
        let group_now = works.iter().map(Work::now).max().unwrap_or(0);
        // Deliveries claimed for a loop that was gone go back to the queue
        // with this group's outcomes (no caller waits for their answer).
        let orphaned = match group_now {
            0 => Vec::new(),
            _ => std::mem::take(&mut self.orphaned),
        };
        let mut served = Vec::new();
        match self.transact(works, &orphaned, group_now, durable, &mut served) {
            Ok((answers, readied)) => {
                if readied && !durable {
                    // Committed, but it moved a lane on: synced before anyone
                    // hears of it (see `sync_commit`).
                    if let Err(e) = self.sync_wal() {
                        for (offer, claimed, ..) in served {
                            offer.rolled_back(claimed.len());
                        }
                        self.stop(e, replies);
                        return;
                    }
                }
                for (reply, answer) in replies.into_iter().zip(answers) {
                    // A caller that went away (request cancelled) is fine
                    // to ignore: its work committed either way.
                    let _ = reply.send(Ok(answer));
                }
                // After the answers: a producer's acknowledgement does not
                // wait for the dispatch its event set off.
                for (offer, claimed, exhausted, ticket) in served {
                    if let Err(claimed) = offer.send(claimed, exhausted, ticket) {
                        self.orphaned.extend(claimed);
                    }
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, ops = replies.len(), "store transaction failed, rolled back");
                let _ = self.conn.execute_batch("ROLLBACK");
                self.counts = Counts::default();
                for (offer, claimed, ..) in served {
                    offer.rolled_back(claimed.len());
                }
                if self.orphaned.is_empty() {
                    self.orphaned = orphaned;
                }
                // The lane entries held in memory may include the rolled-back
                // group's: rebuild them from what was committed.
                if let Err(e) = self.reload() {
                    tracing::error!(error = %e, "cannot reload store state after rollback");
                }
                for reply in replies {
                    let _ = reply.send(Err(err.clone()));
                }
            }
        }
    }

    /// A group's transaction, committed: each operation's answer, and
    /// whether an outcome readied a delivery. On an error the transaction
    /// may be open still, for the caller to roll back; `served` holds what
    /// was claimed for open offers by then.
    ///
    /// Every ingest of the group first, as one batch (see `ingest`), then
    /// every completion, with the retries of the `orphaned` handed back, as
    /// one batch (see `complete_batch`); the other operations then run in
    /// arrival order. Any order is a valid serialisation: the group commits
    /// or fails as one, and no completion in it can belong to a claim in it
    /// (an attempt starts only after its claim committed).
    fn transact(
        &mut self,
        works: Vec<Work>,
        orphaned: &[Claimed],
        group_now: Millis,
        durable: bool,
        served: &mut Vec<(Arc<Offer>, Vec<Claimed>, bool, u64)>,
    ) -> StoreResult<(Vec<Answer>, bool)> {
        let mut slots: Vec<Option<Answer>> = Vec::with_capacity(works.len());
        let (mut ingests, mut ingest_slots, mut ingest_now) = (Vec::new(), Vec::new(), 0);
        let (mut completions, mut completion_slots, mut complete_now) = (vec![], vec![], 0);
        let mut rest = Vec::new();
        for (i, work) in works.into_iter().enumerate() {
            slots.push(None);
            match work {
                Work::Ingest { events, now } => {
                    ingest_now = ingest_now.max(now);
                    ingests.push(events);
                    ingest_slots.push(i);
                }
                Work::Complete { items, now } => {
                    complete_now = complete_now.max(now);
                    completion_slots.push((i, items.len()));
                    completions.extend(items);
                }
                other => rest.push((i, other)),
            }
        }
        for d in orphaned {
            completions.push(Completion::handed_back(d, group_now));
            complete_now = complete_now.max(group_now);
            // Ready again, with no caller to wake anyone: an open offer
            // (the restarted loop's) takes it.
            self.made_ready.insert(d.connector.clone());
        }
        // The sync level is set outside a transaction (SQLite refuses it
        // inside one).
        self.sync_commit(durable)?;
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        let ingested = match ingests.is_empty() {
            true => Vec::new(),
            false => self.ingest(&ingests, ingest_now)?,
        };
        let mut settled = Settled::default();
        if !completions.is_empty() {
            settled = self.complete_batch(&completions, complete_now)?;
            self.made_ready.extend(settled.readied.iter().cloned());
        }
        let readied = !settled.readied.is_empty();
        for (i, work) in rest {
            slots[i] = Some(self.apply(work)?);
        }
        // What this group made ready goes to the loops waiting for it, in
        // this transaction; they need no wake. An outcome's time is its
        // attempt's end, read before it waited to share a commit: the
        // delivery it readies may have been accepted a moment later, by an
        // earlier group. It was due when accepted, and once given to the
        // offer no one else claims it.
        self.latest_now = self.latest_now.max(group_now);
        let mut offered = HashSet::new();
        self.serve_offers(self.latest_now, served, &mut offered)?;
        for (i, mut o) in ingest_slots.into_iter().zip(ingested) {
            if let IngestOutcome::Accepted(counts) = &mut o {
                counts.offered = offered.iter().cloned().collect();
            }
            slots[i] = Some(Box::new(o));
        }
        settled.readied.retain(|c| !offered.contains(c));
        let mut applied = settled.applied.into_iter();
        for (i, n) in completion_slots {
            let mine = Settled {
                applied: applied.by_ref().take(n).collect(),
                readied: settled.readied.clone(),
            };
            slots[i] = Some(Box::new(mine));
        }
        let answers = slots
            .into_iter()
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                StoreError::Internal("store writer: an operation without an answer".into())
            })?;
        if self.rebuild_due() {
            // A small page per group while requests keep the writer busy. A
            // statement that failed may have ended the transaction: the
            // group fails (and the rebuild starts over); only a page that
            // does not parse leaves it be.
            match self.rebuild_table_lanes(REBUILD_PAGE_BUSY) {
                Err(e @ StoreError::Corrupt(_)) => self.rebuild_failed(&e),
                done => done?,
            }
        }
        let flushed = self.flush_lanes()?;
        // The only writer: one row of counts per connector.
        self.counts.write_lite(&self.conn, "")?;
        // Should the commit fail, the transaction is still open and rolls
        // back.
        self.conn.execute_batch("COMMIT")?;
        if let Some(w) = flushed {
            self.watermark = w;
        }
        Ok((answers, readied))
    }

    /// Stops serving after `error`, answering `replies` and everything
    /// after them with it: a sync of the write-ahead log failed, so what
    /// was committed may not be on disk, and a later sync that succeeds
    /// proves nothing (the kernel may have dropped the pages that failed).
    /// Nothing more is committed; a restart reads back what the disk holds
    /// and takes back what was in flight.
    fn stop(&mut self, error: StoreError, replies: Vec<Reply>) {
        tracing::error!(error = %error, "cannot sync the write-ahead log; the store stops until the gateway restarts");
        let error = StoreError::Unavailable(format!(
            "the store stopped after a failed sync ({error}); restart the gateway"
        ));
        for reply in replies {
            let _ = reply.send(Err(error.clone()));
        }
        self.stopped = Some(error);
    }

    /// Whether the group's commit waits for the disk (`synchronous =
    /// FULL`) or only for the operating system (`NORMAL`: the WAL is not
    /// synced, and a power failure may take the transaction back, with
    /// every later one; a process crash cannot).
    ///
    /// Only what acknowledges nothing and readies nothing may skip the sync:
    /// claims, rescues, and outcomes that move no lane on. Losing one of
    /// those repeats a delivery, which at-least-once allows, and in its
    /// lane's order: whatever comes next in a lane is claimed only after an
    /// outcome that made it ready, and such an outcome is synced before it
    /// is answered ([`Writer::sync_wal`]), which makes every transaction
    /// before it durable too (the WAL is one file, replayed as a prefix).
    /// Ingests (acknowledged with 202), operator actions and expiries always
    /// commit with `FULL`.
    fn sync_commit(&mut self, durable: bool) -> StoreResult<()> {
        if durable != self.synchronous_full {
            let level = if durable { "FULL" } else { "NORMAL" };
            self.conn
                .execute_batch(&format!("PRAGMA synchronous = {level}"))?;
            self.synchronous_full = durable;
        }
        Ok(())
    }

    /// Makes what was committed with `synchronous = NORMAL` durable: syncs
    /// the write-ahead log, as a `FULL` commit would have. (Any descriptor
    /// of the file will do: a sync flushes the file, not the descriptor.)
    fn sync_wal(&self) -> StoreResult<()> {
        let Some(wal) = &self.wal else {
            return Ok(());
        };
        std::fs::File::open(wal)
            .and_then(|f| f.sync_data())
            .map_err(|e| StoreError::Unavailable(format!("cannot sync {}: {e}", wal.display())))
    }

    /// Each connector's lane of `key`: its head and how many wait behind it,
    /// counting the entries held in memory and those in the table.
    fn lane_views(&mut self, key: &str, connectors: &[String]) -> StoreResult<Vec<LaneView>> {
        let mut out = Vec::with_capacity(connectors.len());
        for c in connectors {
            let in_table: i64 =
                lite::query("SELECT COUNT(*) FROM lane_entries WHERE connector = ?1 AND key = ?2")
                    .bind(c)
                    .bind(key)
                    .fetch_one(&self.conn)?;
            // The lane's first entries: those in the table and those held
            // here, merged by seq.
            let n = LANE_BEHIND + 1;
            let mut first: Vec<(i64, i64)> = lite::query(
                "SELECT seq, delivery_id FROM lane_entries \
                 WHERE connector = ?1 AND key = ?2 ORDER BY seq LIMIT ?3",
            )
            .bind(c)
            .bind(key)
            .bind(n as i64)
            .fetch_all(&self.conn)?;
            let lane = (c.clone(), key.to_string());
            first.extend(self.recent.first(&lane, n));
            first.sort_unstable();
            first.truncate(n);
            let mut rows = Vec::with_capacity(first.len());
            for (_, id) in first {
                rows.extend(
                    lite::query(
                        "SELECT d.id, d.connector, d.state, d.attempts, d.last_error, \
                             d.next_attempt_at, d.updated_at, d.lease_owner, d.expires_at, e.id \
                         FROM deliveries d JOIN events e ON e.seq = d.event_seq WHERE d.id = ?1",
                    )
                    .bind(id)
                    .fetch_optional::<LaneHeadRow>(&self.conn)?,
                );
            }
            let count = in_table + self.recent.count(&lane) as i64;
            out.push(lane_view_of(c, key, rows, count)?);
        }
        Ok(out)
    }

    /// Re-reads what the writer keeps between transactions from the
    /// database: its counters and the lane entries it holds in memory. Runs
    /// at open and after a rolled-back transaction.
    fn reload(&mut self) -> StoreResult<()> {
        // Forgotten first, so that a reload that fails half-way leaves
        // nothing of the rolled-back transaction behind. The filter is
        // rebuilt a page at a time as the store serves (see `TableLanes`).
        self.table_lanes.restart();
        self.recent.clear();
        self.occupied.clear();
        self.sweep = None;
        self.flush_now = false;
        self.watermark = lite::query("SELECT delivery_id FROM lane_watermark WHERE id = 1")
            .fetch_one(&self.conn)?;
        // The next `seq` and delivery id: past every one ever handed out, so
        // none is used twice even when the newest events were purged (a seq
        // may live on in `finished_ids`, and the watermark is past every
        // delivery it swept: one below it would not be rebuilt).
        self.next_seq = lite::query(
            "SELECT MAX(COALESCE((SELECT MAX(seq) FROM events), 0), \
                        COALESCE((SELECT MAX(seq) FROM finished_ids), 0)) + 1",
        )
        .fetch_one(&self.conn)?;
        let next: i64 =
            lite::query("SELECT COALESCE(MAX(id), 0) + 1 FROM deliveries").fetch_one(&self.conn)?;
        self.next_delivery = next.max(self.watermark);
        // Every delivery from the watermark on that holds its lanes and is
        // not dead: a dead one that holds them moved its entries to
        // `lane_entries` when it died, and one brought back from dead keeps
        // them there, which the EXISTS check below finds.
        let rows: Vec<(i64, String, i64, String)> = lite::query(&format!(
            "SELECT d.id, d.connector, d.event_seq, e.keys FROM deliveries d \
             JOIN events e ON e.seq = d.event_seq \
             WHERE d.id >= ?1 AND d.state IN ({}) ORDER BY d.id",
            lanes::sql::pending_states()
        ))
        .bind(self.watermark)
        .fetch_all(&self.conn)?;
        let mut entries: Vec<(String, String, i64, i64)> = Vec::new();
        for (id, connector, seq, keys) in rows {
            for key in parse_keys(&keys)? {
                entries.push((connector.clone(), key, seq, id));
            }
        }
        let mut in_table: HashSet<(String, String, i64)> = HashSet::new();
        let mut maybe: Vec<&(String, String, i64, i64)> = entries
            .iter()
            .filter(|(c, k, _, _)| self.table_lanes.may_hold(c, k))
            .collect();
        // In the table's order: neighbouring look-ups share its pages.
        maybe.sort_unstable_by(|a, b| (&a.0, &a.1, a.2).cmp(&(&b.0, &b.1, b.2)));
        for chunk in runs(&maybe) {
            let mut qb = lite::Builder::new("SELECT v.column1, v.column2, v.column3 FROM (");
            qb.push_values(chunk, |mut b, (c, k, seq, _)| {
                b.push_bind(c.as_str())
                    .push_bind(k.as_str())
                    .push_bind(*seq);
            });
            qb.push(
                ") AS v WHERE EXISTS (SELECT 1 FROM lane_entries l \
                 WHERE l.connector = v.column1 AND l.key = v.column2 AND l.seq = v.column3)",
            );
            in_table.extend(qb.build().fetch_all(&self.conn)?);
        }
        for (c, k, seq, id) in entries {
            if !in_table.contains(&(c.clone(), k.clone(), seq)) {
                self.recent.push(&c, &k, seq, id);
            }
        }
        Ok(())
    }

    /// Goes on rebuilding [`TableLanes`] from `lane_entries`: reads every
    /// row of about `page` lanes' worth past the last lane counted (whole
    /// lanes: the page ends at a lane's last row). Rows come back framed
    /// into one string by SQLite (`<bytes>,<connector><bytes>,<key>` per
    /// row): fetched a row at a time, 1,800,000 rows took 4.1 s, nearly all
    /// of it per-row overhead between SQLite's thread and this task.
    fn rebuild_table_lanes(&mut self, page: usize) -> StoreResult<()> {
        let Some(from) = self.table_lanes.rebuild_from() else {
            return Ok(());
        };
        // The first page starts at ("", ""), the least lane there can be.
        let (after, past) = match from {
            Some(lane) => (lane.clone(), ">"),
            None => ((String::new(), String::new()), ">="),
        };
        // The lane of the page's last row, if there are more rows than a page.
        let end: Option<(String, String)> = lite::query(&format!(
            "SELECT connector, key FROM lane_entries WHERE (connector, key) {past} (?1, ?2) \
             ORDER BY connector, key LIMIT 1 OFFSET ?3"
        ))
        .bind(&after.0)
        .bind(&after.1)
        .bind(page.max(1) as i64 - 1)
        .fetch_optional(&self.conn)?;
        let upto = end
            .as_ref()
            .map_or("", |_| " AND (connector, key) <= (?3, ?4)");
        let mut framed = lite::query(&format!(
            "SELECT group_concat(octet_length(connector) || ',' || connector \
             || octet_length(key) || ',' || key, '') FROM (SELECT connector, key \
             FROM lane_entries WHERE (connector, key) {past} (?1, ?2){upto} \
             ORDER BY connector, key)"
        ))
        .bind(&after.0)
        .bind(&after.1);
        if let Some((c, k)) = &end {
            framed = framed.bind(c).bind(k);
        }
        let framed: Option<String> = framed.fetch_one(&self.conn)?;
        let rows = unframe_lanes(framed.as_deref().unwrap_or(""))?;
        self.table_lanes.scanned_to(rows, end);
        Ok(())
    }

    /// Whether a page of the lane filter's rebuild is to be read now.
    fn rebuild_due(&self) -> bool {
        self.table_lanes.rebuild_from().is_some() && Instant::now() >= self.rebuild_after
    }

    /// A page of the rebuild failed: try again in a second (lanes not
    /// reached are looked up meanwhile, which only costs time).
    fn rebuild_failed(&mut self, e: &StoreError) {
        tracing::warn!(error = %e, "cannot read the lane table; will try again in 1 s");
        self.rebuild_after = Instant::now() + Duration::from_secs(1);
    }

    /// Goes on with the flush under way, or starts one when the thresholds
    /// say so: writes the next slice of lanes held in memory to
    /// `lane_entries`. Returns the new watermark when a flush ended; it is
    /// in the transaction, so it counts once the group commits (a rollback
    /// rebuilds everything from what was committed).
    fn flush_lanes(&mut self) -> StoreResult<Option<i64>> {
        // `flush_now`: everything at once, and the watermark past every
        // delivery.
        let all = std::mem::take(&mut self.flush_now);
        if all
            || (self.sweep.is_none()
                && (self.recent.len() >= self.flush.entries
                    || self.next_delivery - self.watermark >= self.flush.deliveries))
        {
            self.sweep = Some(self.next_delivery);
            self.recent.start_sweep();
        }
        let Some(watermark) = self.sweep else {
            return Ok(None);
        };
        let max = match all {
            true => usize::MAX,
            false => self.flush.slice.max(self.recent.len() / 8),
        };
        let (entries, done) = self.recent.sweep(max);
        self.insert_entries(&entries)?;
        if !done {
            return Ok(None);
        }
        self.sweep = None;
        lite::query("UPDATE lane_watermark SET delivery_id = ?1 WHERE id = 1")
            .bind(watermark)
            .execute(&self.conn)?;
        tracing::debug!(
            watermark,
            held = self.recent.len(),
            "lane entries swept into lane_entries"
        );
        Ok(Some(watermark))
    }

    /// Writes lane entries `(connector, key, seq, delivery id)` to
    /// `lane_entries`, telling the lane filter.
    fn insert_entries<S: AsRef<str>>(&mut self, entries: &[(S, S, i64, i64)]) -> StoreResult<()> {
        for (c, k, _, _) in entries {
            self.table_lanes.added(c.as_ref(), k.as_ref());
        }
        for chunk in runs(entries) {
            let mut qb = lite::Builder::new(
                "INSERT OR FAIL INTO lane_entries (connector, key, seq, delivery_id) ",
            );
            qb.push_values(chunk, |mut b, (c, k, seq, id)| {
                b.push_bind(c.as_ref())
                    .push_bind(k.as_ref())
                    .push_bind(*seq)
                    .push_bind(*id);
            });
            qb.build().execute(&self.conn)?;
        }
        Ok(())
    }

    fn apply(&mut self, work: Work) -> StoreResult<Answer> {
        Ok(match work {
            Work::Claim {
                connector,
                limit,
                now,
                lease_ms,
            } => Box::new(self.claim(&connector, limit, now, lease_ms, true)?),
            // These may make any connector's deliveries ready: every open
            // offer is served when they changed something.
            Work::Rescue { now, all } => {
                let rescued = self.rescue(now, all)?;
                self.ready_any |= rescued > 0;
                Box::new(rescued)
            }
            Work::Expire { now, limit } => {
                let expired = self.expire(now, limit)?;
                self.ready_any |= !expired.is_empty();
                Box::new(expired)
            }
            Work::Lanes { key, connectors } => Box::new(self.lane_views(&key, &connectors)?),
            // The group's batches ([`Writer::transact`]), and what runs
            // between groups.
            Work::Ingest { .. } | Work::Complete { .. } | Work::Pause { .. } => {
                return Err(StoreError::Internal(
                    "store writer: an operation out of its place in a group".into(),
                ))
            }
            Work::Operator {
                id,
                action,
                actor,
                now,
            } => {
                let before = catalog::before_action_lite(&self.conn, id)?;
                let done = match action {
                    OperatorAction::Retry => self.retry_dead(id, now)?,
                    OperatorAction::Skip => self.skip_dead(id, now)?,
                };
                if done {
                    catalog::audit_action_lite(&self.conn, id, action, &actor, now, before)?;
                    self.ready_any = true;
                }
                Box::new(done)
            }
        })
    }

    /// Applies every ingest request of a commit group as one batch: one
    /// idempotency look-up, one lane look-up and multi-row inserts for all of
    /// them, so 64 clients posting single events cost a handful of statements
    /// rather than a handful each. Each request is still all-or-nothing: its
    /// conflicts are decided before anything is written, and a request with a
    /// conflict contributes no rows.
    fn ingest(&mut self, requests: &[Vec<Routed>], now: Millis) -> StoreResult<Vec<IngestOutcome>> {
        // 1. Idempotency: which ids exist already, and with which digest.
        let all: Vec<&str> = requests
            .iter()
            .flatten()
            .map(|r| r.event.id.as_str())
            .collect();
        let mut known = retention::known_ids_lite(&self.conn, &all)?;
        let (mut outcomes, fresh) = classify(requests, &mut known);
        if fresh.is_empty() {
            return Ok(outcomes);
        }
        let seqs: Vec<i64> = (self.next_seq..self.next_seq + fresh.len() as i64).collect();
        self.next_seq += fresh.len() as i64;

        // 2. Coalescing: the first full-state event of each tag ends
        //    the stored deliveries it supersedes, which leave their lanes
        //    before the new ones join.
        let (superseded, superseded_here) = self.supersede(&fresh, &seqs, now)?;

        // 3. Which lanes these deliveries join are occupied already: those
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
            let mut qb = lite::Builder::new("SELECT v.column1, v.column2 FROM (");
            qb.push_values(chunk, |mut b, (c, k)| {
                b.push_bind(*c).push_bind(*k);
            });
            qb.push(
                ") AS v WHERE EXISTS (SELECT 1 FROM lane_entries l \
                 WHERE l.connector = v.column1 AND l.key = v.column2)",
            );
            for lane in qb.build().fetch_all::<(String, String)>(&self.conn)? {
                self.table_lanes.found(lane.clone());
                self.occupied.insert(lane);
            }
        }

        // 4. Assign delivery ids; count blockers.
        let mut next_delivery = self.next_delivery;
        let AcceptPlan {
            deliveries,
            entries,
        } = plan_accept(
            &fresh,
            &seqs,
            || {
                next_delivery += 1;
                next_delivery - 1
            },
            &mut self.occupied,
            now,
            &superseded_here,
        );
        self.next_delivery = next_delivery;

        // 5. Write.
        for (chunk, seq_chunk) in runs(&fresh).zip(runs(&seqs)) {
            let mut qb = lite::Builder::new(
                "INSERT OR FAIL INTO events (seq, id, type, keys, payload, digest, accepted_at, replay_id, origin_seq) ",
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
                        .push_bind(now)
                        .push_bind(r.origin.map(|o| o.replay))
                        .push_bind(r.origin.map(|o| o.seq));
                },
            );
            qb.build().execute(&self.conn)?;
        }
        for chunk in runs(&deliveries) {
            let mut qb = lite::Builder::new(
                "INSERT OR FAIL INTO deliveries (id, event_seq, connector, state, blockers, next_attempt_at, created_at, updated_at, expires_at, coalesce_key, superseded_by, pending) ",
            );
            qb.push_values(chunk, |mut b, d| {
                b.push_bind(d.id)
                    .push_bind(d.seq)
                    .push_bind(d.connector)
                    .push_bind(d.state().as_str())
                    .push_bind(d.blockers)
                    .push_bind(now)
                    .push_bind(now)
                    .push_bind(now)
                    .push_bind(d.expires_at)
                    .push_bind(d.coalesce)
                    .push_bind(d.superseded_by)
                    .push_bind(d.state().is_pending());
            });
            qb.build().execute(&self.conn)?;
        }
        for d in &deliveries {
            self.counts.moved(d.connector, None, d.state(), 1);
            if d.state() == DeliveryState::Ready && !self.made_ready.contains(d.connector) {
                self.made_ready.insert(d.connector.to_string());
            }
        }
        count_superseded(&mut outcomes, &seqs, &superseded, &deliveries);
        // The lane entries stay in memory until the next flush (see
        // `RecentLanes`): a rebuild finds them from the rows above.
        for (c, k, seq, id) in entries {
            self.recent.push(c, k, seq, id);
        }
        Ok(outcomes)
    }

    /// Coalescing: finds the stored deliveries not started with the tags
    /// of `fresh` ([`lanes::sql::supersedable`]), asks
    /// [`lanes::supersessions`] which go, ends those (recording which event
    /// superseded each) and releases their lanes. Answers each ended one's
    /// connector and superseding event's `seq`, and the accept's own
    /// deliveries to create superseded.
    fn supersede(
        &mut self,
        fresh: &[&Routed],
        seqs: &[i64],
        now: Millis,
    ) -> StoreResult<Supersessions> {
        let tags: Vec<(&str, &str)> = lanes::tags_of(fresh).into_iter().collect();
        if tags.is_empty() {
            return Ok((Vec::new(), HashMap::new()));
        }
        type Found = (i64, String, String, i64, i64, String, String);
        let mut found: Vec<Found> = Vec::new();
        for chunk in runs(&tags) {
            let mut qb = lite::Builder::new(
                "SELECT d.id, d.connector, d.coalesce_key, d.event_seq, \
                     COALESCE(e.origin_seq, e.seq), d.state, e.keys FROM (",
            );
            qb.push_values(chunk, |mut b, (c, t)| {
                b.push_bind(*c).push_bind(*t);
            });
            qb.push(format!(
                ") AS v JOIN deliveries d ON d.connector = v.column1 AND d.coalesce_key = v.column2 \
                 AND d.pending = 1 JOIN events e ON e.seq = d.event_seq WHERE {}",
                lanes::sql::supersedable("d")
            ));
            found.extend(qb.build().fetch_all::<Found>(&self.conn)?);
        }
        let candidates: Vec<lanes::Candidate> = found
            .iter()
            .map(|(id, c, tag, seq, order, ..)| lanes::Candidate::new(*id, c, tag, *seq, *order))
            .collect();
        // A replay's copies also meet the newest state of their key that a
        // destination has or is getting.
        let mut kept = Vec::new();
        if fresh.iter().any(|r| r.origin.is_some()) {
            static KEPT: LazyLock<String> = LazyLock::new(|| {
                format!(
                    "SELECT COALESCE(e.origin_seq, e.seq) AS o, d.event_seq FROM deliveries d \
                     JOIN events e ON e.seq = d.event_seq \
                     WHERE d.connector = ?1 AND d.coalesce_key = ?2 AND {} \
                     ORDER BY o DESC LIMIT 1",
                    lanes::sql::delivering("d")
                )
            });
            for (c, t) in &tags {
                let row: Option<(i64, i64)> = lite::query(&KEPT)
                    .bind(*c)
                    .bind(*t)
                    .fetch_optional(&self.conn)?;
                if let Some((order, seq)) = row {
                    kept.push(lanes::Candidate::new(0, c, t, seq, order));
                }
            }
        }
        let decided = lanes::supersessions(fresh, seqs, &candidates, &kept);
        if decided.stored.is_empty() {
            return Ok((Vec::new(), decided.fresh));
        }
        for chunk in runs(&decided.stored) {
            let mut qb = lite::Builder::new("UPDATE deliveries SET state = ");
            qb.push_bind(Step::Superseded.state().as_str())
                .push(", superseded_by = v.column2, pending = 0, updated_at = ")
                .push_bind(now)
                .push(" FROM (");
            qb.push_values(chunk, |mut b, (id, by)| {
                b.push_bind(*id).push_bind(*by);
            });
            qb.push(") AS v WHERE deliveries.id = v.column1");
            qb.build().execute(&self.conn)?;
        }
        let by_of: HashMap<i64, i64> = decided.stored.iter().copied().collect();
        let (mut ended, mut gone) = (Vec::with_capacity(by_of.len()), Vec::new());
        for (id, connector, _, seq, _, state, k) in &found {
            let Some(&by) = by_of.get(id) else { continue };
            gone.push((connector.as_str(), *seq, k.as_str(), state_of(state)?));
            ended.push((connector.clone(), by));
        }
        // What moves up behind a superseded delivery is ready for an offer
        // as much as what the ingest adds.
        let readied = self.release_ended(gone, Step::Superseded, now)?;
        self.made_ready.extend(readied);
        Ok((ended, decided.fresh))
    }

    /// Claims up to `limit` of `connector`'s ready deliveries; with
    /// `want_due`, a claim that gets fewer also reads when the next is due.
    fn claim(
        &mut self,
        connector: &str,
        limit: usize,
        now: Millis,
        lease_ms: i64,
        want_due: bool,
    ) -> StoreResult<ClaimAnswer> {
        if limit == 0 {
            return Ok((Vec::new(), None));
        }
        let lease = self.next_lease;
        self.next_lease += 1;
        static CLAIM: LazyLock<String> = LazyLock::new(|| {
            format!(
                "UPDATE deliveries SET state = 'in_flight', attempts = attempts + 1, \
                     lease_until = ?1, lease_token = ?2, updated_at = ?3, lease_owner = ?6 \
                 WHERE id IN (SELECT id FROM deliveries WHERE connector = ?4 AND {} \
                     AND NOT EXISTS (SELECT 1 FROM connector_controls \
                                     WHERE connector = ?4 AND paused = 1) \
                     ORDER BY next_attempt_at, id LIMIT ?5) \
                 RETURNING id, event_seq, attempts",
                lanes::sql::claimable("?3")
            )
        });
        let taken: Vec<(i64, i64, i64)> = lite::query(&CLAIM)
            .bind(now.saturating_add(lease_ms))
            .bind(lease)
            .bind(now)
            .bind(connector)
            .bind(limit as i64)
            .bind(&self.node)
            .fetch_all(&self.conn)?;
        let n = taken.len() as i64;
        self.counts.moved(
            connector,
            Some(DeliveryState::Ready),
            DeliveryState::InFlight,
            n,
        );
        let mut events = Vec::with_capacity(taken.len());
        for chunk in runs(&taken) {
            let mut qb = lite::Builder::new(
                "SELECT seq, id, type, keys, payload, accepted_at FROM events WHERE seq IN (",
            );
            let mut sep = qb.separated(", ");
            for t in chunk {
                sep.push_bind(t.1);
            }
            qb.push(")");
            events.extend(qb.build().fetch_all::<EventRow>(&self.conn)?);
        }
        // Fewer than asked for: the loop sleeps until the next is due, which
        // it would otherwise read on its own a moment later.
        let due = match want_due && taken.len() < limit {
            true => Some(
                lite::query(&catalog::NEXT_DUE)
                    .bind(connector)
                    .bind(now)
                    .fetch_one::<Option<i64>>(&self.conn)?,
            ),
            false => None,
        };
        Ok((claims_of(connector, lease, now, taken, events)?, due))
    }

    /// Claims, in this transaction, for each open offer whose connector it
    /// may have made a delivery of ready (`store::offer`): into `served`
    /// what each got and whether that filled its room, to be sent once the
    /// transaction is durable (or rolled back with it); into `offered` every
    /// connector whose offer was open, whose loop needs no wake.
    fn serve_offers(
        &mut self,
        now: Millis,
        served: &mut Vec<(Arc<Offer>, Vec<Claimed>, bool, u64)>,
        offered: &mut HashSet<String>,
    ) -> StoreResult<()> {
        for offer in self.offers.open() {
            let c = offer.connector();
            offered.insert(c.to_string());
            if !self.ready_any && !self.made_ready.contains(c) {
                continue;
            }
            let Some(room) = offer.reserve() else {
                continue;
            };
            match self.claim(c, room.limit, now, room.lease_ms, false) {
                Ok((claimed, _)) => {
                    let exhausted = offer.claimed(room, claimed.len());
                    if !claimed.is_empty() || exhausted {
                        served.push((offer, claimed, exhausted, room.ticket));
                    }
                }
                Err(e) => {
                    offer.claimed(room, 0);
                    served.push((offer, Vec::new(), false, room.ticket));
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Applies a group's outcomes with a few multi-row statements: one
    /// update of the deliveries (each only if its lease is still current),
    /// then one release of every lane entry the delivered and released-dead
    /// ones held, one look-up of the lanes' new heads and one update of the
    /// heads that lose a blocker.
    fn complete_batch(&mut self, items: &[Completion], now: Millis) -> StoreResult<Settled> {
        let mut answers = RoundAnswers::new(items.len());
        for round in completion_rounds(items) {
            let batch = RoundAnswers::batch(items, &round);
            answers.add(&round, self.complete_round(&batch, now)?);
        }
        Ok(answers.settled())
    }

    /// [`Writer::complete_batch`] for completions of distinct deliveries:
    /// whether each applied, and the connectors it readied a delivery of.
    fn complete_round(
        &mut self,
        items: &[Completion],
        now: Millis,
    ) -> StoreResult<(Vec<bool>, Vec<String>)> {
        let mut applied: HashSet<i64> = HashSet::with_capacity(items.len());
        for chunk in runs(items) {
            let mut qb = lite::Builder::new(
                "UPDATE deliveries SET state = v.column3, pending = (v.column3 = 'ready'), \
                     next_attempt_at = COALESCE(v.column4, deliveries.next_attempt_at), \
                     last_error = COALESCE(v.column5, deliveries.last_error), \
                     lease_until = NULL, lease_token = NULL, lease_owner = NULL, updated_at = ",
            );
            qb.push_bind(now).push(" FROM (");
            qb.push_values(chunk, |mut b, c| {
                let state = c.kind.step().state().as_str();
                let (at, error) = c.kind.next_at_and_error();
                b.push_bind(c.delivery_id)
                    .push_bind(c.lease)
                    .push_bind(state)
                    .push_bind(at)
                    .push_bind(error);
            });
            qb.push(
                ") AS v WHERE deliveries.id = v.column1 AND deliveries.state = 'in_flight' \
                 AND deliveries.lease_token = v.column2 RETURNING deliveries.id",
            );
            applied.extend(qb.build().fetch_all::<i64>(&self.conn)?);
        }
        let mut entries = Vec::new();
        let mut held: Vec<(&str, &str, i64, i64)> = Vec::new();
        let mut log = Vec::with_capacity(applied.len());
        for c in items {
            if !applied.contains(&c.delivery_id) {
                continue;
            }
            let step = c.kind.step();
            self.counts
                .moved(&c.connector, Some(DeliveryState::InFlight), step.state(), 1);
            log.push(c);
            if step.parks() {
                // Parked entries go to the table now: a rebuild from the
                // pending deliveries would not find them.
                for k in &c.keys {
                    if self.recent.remove(&(c.connector.clone(), k.clone()), c.seq) {
                        held.push((&c.connector, k, c.seq, c.delivery_id));
                    }
                }
            } else if step.releases() {
                for k in &c.keys {
                    entries.push((c.connector.clone(), k.clone(), c.seq));
                }
            }
        }
        catalog::log_attempts_lite(&self.conn, &self.node, now, &log)?;
        self.insert_entries(&held)?;
        let readied = self.release_entries(entries, now)?;
        let applied = items
            .iter()
            .map(|c| applied.contains(&c.delivery_id))
            .collect();
        Ok((applied, readied))
    }

    /// Removes lane entries `(connector, key, seq)`; where one was its
    /// lane's head, the new head loses a blocker (one per lane it heads) and
    /// becomes ready when it has none left. Returns the connector of each
    /// delivery that became ready.
    fn release_entries(
        &mut self,
        entries: Vec<(String, String, i64)>,
        now: Millis,
    ) -> StoreResult<Vec<String>> {
        // Remove each entry where it is: held in memory, else in the table.
        let (mut removed, mut in_table) = (Vec::new(), Vec::new());
        for (c, k, seq) in entries {
            let lane = (c, k);
            self.occupied.remove(&lane);
            match self.recent.remove(&lane, seq) {
                true => removed.push((lane.0, lane.1, seq)),
                false => in_table.push((lane.0, lane.1, seq)),
            }
        }
        let from_table = removed.len();
        for chunk in runs(&in_table) {
            let mut qb =
                lite::Builder::new("DELETE FROM lane_entries WHERE (connector, key, seq) IN (");
            qb.push_values(chunk, |mut b, (c, k, seq)| {
                b.push_bind(c.as_str())
                    .push_bind(k.as_str())
                    .push_bind(*seq);
            });
            qb.push(") RETURNING connector, key, seq");
            removed.extend(qb.build().fetch_all(&self.conn)?);
        }
        for (c, k, _) in &removed[from_table..] {
            self.table_lanes.removed(&(c.clone(), k.clone()));
        }
        let first = first_released(removed.into_iter().map(|(c, k, seq)| ((c, k), seq)));
        // The new head of each lane: the first entry held here or in the
        // table, whichever comes first. Only lanes the filter cannot rule
        // out are looked up in the table.
        let mut heads: HashMap<(String, String), (i64, i64)> = HashMap::new();
        let mut look_up: Vec<&(String, String)> = Vec::new();
        for lane in first.keys() {
            if let Some(head) = self.recent.head(lane) {
                heads.insert(lane.clone(), head);
            }
            if self.table_lanes.get(lane) != InTable::No {
                look_up.push(lane);
            }
        }
        for chunk in runs(&look_up) {
            let mut qb =
                lite::Builder::new("SELECT v.column1, v.column2, l.seq, l.delivery_id FROM (");
            qb.push_values(chunk, |mut b, (c, k)| {
                b.push_bind(c.as_str()).push_bind(k.as_str());
            });
            qb.push(
                ") AS v JOIN lane_entries l ON l.connector = v.column1 AND l.key = v.column2 \
                 AND l.seq = (SELECT MIN(seq) FROM lane_entries \
                              WHERE connector = v.column1 AND key = v.column2)",
            );
            for (c, k, seq, id) in qb.build().fetch_all(&self.conn)? {
                let head = heads.entry((c, k)).or_insert((seq, id));
                if seq < head.0 {
                    *head = (seq, id);
                }
            }
        }
        let unblock: Vec<(i64, i64)> = promotions(&first, |lane| heads.get(lane).copied())
            .into_iter()
            .collect();
        let mut readied = Vec::new();
        for chunk in runs(&unblock) {
            let mut qb = lite::Builder::new(format!(
                "UPDATE deliveries SET blockers = deliveries.blockers - v.column2, state = {}, \
                 updated_at = ",
                lanes::sql::unblocked_state("deliveries", "v.column2")
            ));
            qb.push_bind(now).push(" FROM (");
            qb.push_values(chunk, |mut b, (id, n)| {
                b.push_bind(*id).push_bind(*n);
            });
            qb.push(
                ") AS v WHERE deliveries.id = v.column1 \
                 RETURNING deliveries.connector, deliveries.state = 'ready'",
            );
            let moved: Vec<(String, bool)> = qb.build().fetch_all(&self.conn)?;
            for (connector, _) in moved.into_iter().filter(|(_, ready)| *ready) {
                let blocked = Some(DeliveryState::Blocked);
                self.counts
                    .moved(&connector, blocked, DeliveryState::Ready, 1);
                readied.push(connector);
            }
        }
        Ok(readied)
    }

    /// Re-queues deliveries whose lease ended, or with `all` every
    /// in-flight one (at start-up, under the database's lock: they were
    /// this process's previous run's), and logs their attempts as ended.
    /// Their `next_attempt_at` stays: they keep their place at the front of
    /// the ready order rather than queueing behind a backlog.
    fn rescue(&mut self, now: Millis, all: bool) -> StoreResult<u64> {
        fn rescue(which: &str) -> String {
            format!(
                "UPDATE deliveries SET state = ?2, lease_until = NULL, lease_token = NULL, \
                     lease_owner = NULL, updated_at = ?1, last_error = ?3 \
                 WHERE {which} RETURNING connector"
            )
        }
        fn log(which: &str) -> String {
            catalog::log_lease_expiries(&format!("deliveries d WHERE {which}"), "?1", "?2")
        }
        static EXPIRED: LazyLock<[String; 2]> = LazyLock::new(|| {
            let which = lanes::sql::lease_expired("?1");
            [log(&which), rescue(&which)]
        });
        static ALL: LazyLock<[String; 2]> =
            LazyLock::new(|| [log(lanes::sql::IN_FLIGHT), rescue(lanes::sql::IN_FLIGHT)]);
        let ([log, rescue], reason) = match all {
            false => (&*EXPIRED, super::LEASE_EXPIRED),
            true => (&*ALL, super::RECLAIMED),
        };
        lite::query(log)
            .bind(now)
            .bind(reason)
            .execute(&self.conn)?;
        let rescued: Vec<String> = lite::query(rescue)
            .bind(now)
            .bind(Step::LeaseExpired.state().as_str())
            .bind(reason)
            .fetch_all(&self.conn)?;
        for connector in &rescued {
            let in_flight = Some(DeliveryState::InFlight);
            self.counts
                .moved(connector, in_flight, Step::LeaseExpired.state(), 1);
        }
        Ok(rescued.len() as u64)
    }

    /// Ends up to `limit` not-yet-started deliveries whose `expires_at` has
    /// passed as `expired`, releasing their lane entries (a blocked one may
    /// expire behind a head that still waits: removing an entry that is not
    /// its lane's head unblocks nothing, and its successors stay in order).
    fn expire(&mut self, now: Millis, limit: usize) -> StoreResult<Vec<(String, u64)>> {
        static EXPIRE: LazyLock<String> = LazyLock::new(|| {
            format!(
                "UPDATE deliveries SET state = ?3, pending = 0, updated_at = ?1, last_error = ?4 \
                 WHERE id IN (SELECT id FROM deliveries WHERE {} ORDER BY expires_at LIMIT ?2) \
                 RETURNING connector, event_seq, (SELECT keys FROM events WHERE seq = event_seq), \
                     blockers",
                lanes::sql::expirable("?1")
            )
        });
        let rows: Vec<(String, i64, String, i64)> = lite::query(&EXPIRE)
            .bind(now)
            .bind(limit as i64)
            .bind(Step::Expired.state().as_str())
            .bind(super::EXPIRED)
            .fetch_all(&self.conn)?;
        let mut counts: std::collections::BTreeMap<String, u64> = Default::default();
        for (connector, ..) in &rows {
            *counts.entry(connector.clone()).or_default() += 1;
        }
        let ended = rows.iter().map(|(connector, seq, keys, blockers)| {
            let was = lanes::initial_state(*blockers);
            (connector.as_str(), *seq, keys.as_str(), was)
        });
        self.release_ended(ended, Step::Expired, now)?;
        Ok(counts.into_iter().collect())
    }

    fn retry_dead(&mut self, id: i64, now: Millis) -> StoreResult<bool> {
        static RETRY: LazyLock<String> = LazyLock::new(|| {
            format!(
                "UPDATE deliveries SET state = {}, pending = 1, next_attempt_at = ?1, \
                     updated_at = ?1 WHERE id = ?2 AND state = 'dead' RETURNING connector, state",
                lanes::sql::REQUEUED_STATE
            )
        });
        let row: Option<(String, String)> = lite::query(&RETRY)
            .bind(now)
            .bind(id)
            .fetch_optional(&self.conn)?;
        let Some((connector, state)) = row else {
            return Ok(false);
        };
        let dead = Some(DeliveryState::Dead);
        self.counts.moved(&connector, dead, state_of(&state)?, 1);
        // A rebuild takes every pending delivery from the watermark on to
        // hold its lanes, but one that released them when it died runs again
        // without them. Moving the watermark past it keeps a rebuild from
        // giving it back lanes it no longer holds (a held one's entries are
        // in the table already).
        if id >= self.watermark {
            self.flush_now = true;
        }
        Ok(true)
    }

    fn skip_dead(&mut self, id: i64, now: Millis) -> StoreResult<bool> {
        let row: Option<(String, i64, String)> = lite::query(
            "UPDATE deliveries SET state = ?3, pending = 0, updated_at = ?1 \
             WHERE id = ?2 AND state = 'dead' \
             RETURNING connector, event_seq, (SELECT keys FROM events WHERE seq = event_seq)",
        )
        .bind(now)
        .bind(id)
        .bind(Step::Skipped.state().as_str())
        .fetch_optional(&self.conn)?;
        let Some((connector, seq, keys)) = row else {
            return Ok(false);
        };
        let ended = [(connector.as_str(), seq, keys.as_str(), DeliveryState::Dead)];
        self.release_ended(ended, Step::Skipped, now)?;
        Ok(true)
    }

    /// Moves the deliveries `ended` (connector, `seq`, keys as stored, the
    /// state each left) to `step`'s final state in the counts and, if the
    /// step releases ([`Step::releases`]), releases their lane entries
    /// ([`Writer::release_entries`]). Answers the connectors whose lanes
    /// moved a delivery up to ready.
    fn release_ended<'a>(
        &mut self,
        ended: impl IntoIterator<Item = (&'a str, i64, &'a str, DeliveryState)>,
        step: Step,
        now: Millis,
    ) -> StoreResult<Vec<String>> {
        let mut entries = Vec::new();
        for (connector, seq, keys, was) in ended {
            self.counts.moved(connector, Some(was), step.state(), 1);
            let keys = parse_keys(keys)?.into_iter();
            entries.extend(keys.map(|k| (connector.to_string(), k, seq)));
        }
        if !step.releases() {
            return Ok(Vec::new());
        }
        self.release_entries(entries, now)
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn ingest(&self, events: Vec<Routed>, now: Millis) -> StoreResult<IngestOutcome> {
        self.call(Work::Ingest { events, now }).await
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
        let answer: StoreResult<ClaimAnswer> = self.call(work).await;
        self.due
            .record(connector, answer.as_ref().ok().and_then(|(_, due)| *due));
        answer.map(|(claimed, _)| claimed)
    }

    fn last_due(&self) -> Option<&LastDue> {
        Some(&self.due)
    }

    fn offer(&self, offer: Arc<Offer>) -> bool {
        self.offers.leave(offer);
        true
    }

    async fn settle(&self, items: Vec<Completion>, now: Millis) -> StoreResult<Settled> {
        self.call(Work::Complete { items, now }).await
    }

    async fn rescue_expired(&self, now: Millis) -> StoreResult<u64> {
        self.call(Work::Rescue { now, all: false }).await
    }

    async fn reclaim(&self, now: Millis) -> StoreResult<u64> {
        self.call(Work::Rescue { now, all: true }).await
    }

    async fn expire_due(&self, now: Millis, limit: usize) -> StoreResult<Vec<(String, u64)>> {
        self.call(Work::Expire { now, limit }).await
    }

    async fn operator_action(
        &self,
        id: i64,
        action: OperatorAction,
        actor: &str,
        now: Millis,
    ) -> StoreResult<bool> {
        let actor = actor.to_string();
        self.call(Work::Operator {
            id,
            action,
            actor,
            now,
        })
        .await
    }

    async fn lanes(&self, key: &str, connectors: &[String]) -> StoreResult<Vec<LaneView>> {
        let (key, connectors) = (key.to_string(), connectors.to_vec());
        self.call(Work::Lanes { key, connectors }).await
    }

    async fn purge_finished(&self, retention: Purge, limit: usize) -> StoreResult<Purged> {
        self.catalog.purge_aside(retention, limit).await
    }

    fn catalog(&self) -> &Catalog {
        &self.catalog
    }
}

/// Splits what [`Writer::rebuild_table_lanes`] has SQLite frame: per row,
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
    use super::{unframe_lanes, OperatorAction, Work};

    #[test]
    fn one_process_at_a_time_holds_a_database_and_a_second_is_told_who() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("db/queue.db").display());
        let held = super::SqliteStore::lock(&url).unwrap().expect("a file");
        // A second holder (another open file, as another process would have)
        // is refused, with the holder's pid and what to do.
        match super::SqliteStore::lock(&url) {
            Err(crate::store::StoreError::InUse(m)) => {
                assert!(
                    m.contains("queue.db is in use by another switchboard process")
                        && m.contains(&format!("(pid {})", std::process::id()))
                        && m.contains("storage.url"),
                    "{m}"
                );
            }
            r => panic!("a second lock: {r:?}"),
        }
        drop(held);
        // The file left behind holds nothing.
        assert!(dir.path().join("db/queue.db.lock").exists());
        super::SqliteStore::lock(&url).unwrap().expect("free again");
        assert!(super::SqliteStore::lock("sqlite::memory:")
            .unwrap()
            .is_none());
    }

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

    /// The writer's own connection meets sqlx's in the same in-memory
    /// database, by the name sqlx gives it.
    #[tokio::test]
    async fn an_in_memory_database_serves_the_writer_and_the_readers_alike() {
        use crate::store::{Routed, Store};
        let s = super::SqliteStore::open("sqlite::memory:").await.unwrap();
        let body = r#"{"id": "m1", "type": "t", "keys": ["k"], "payload": {}}"#;
        let event = crate::queue::event::parse_body(body.as_bytes(), 1)
            .unwrap()
            .remove(0);
        let routed = Routed::new(event, vec!["c".to_string()]);
        s.ingest(vec![routed], 0).await.unwrap();
        assert!(s.catalog().event("m1").await.unwrap().is_some());
        assert_eq!(s.claim("c", 4, 1, 1_000).await.unwrap().len(), 1);
    }

    #[test]
    fn only_what_acknowledges_nothing_and_readies_nothing_commits_unsynced() {
        let now = 0;
        let synced = [
            Work::Ingest {
                events: Vec::new(),
                now,
            },
            Work::Operator {
                id: 1,
                action: OperatorAction::Retry,
                actor: "op".into(),
                now,
            },
            Work::Expire { now, limit: 1 },
        ];
        for w in &synced {
            assert!(w.must_sync());
        }
        let unsynced = [
            Work::Claim {
                connector: "c".into(),
                limit: 1,
                now,
                lease_ms: 1,
            },
            Work::Complete {
                items: Vec::new(),
                now,
            },
            Work::Rescue { now, all: true },
            Work::Lanes {
                key: "k".into(),
                connectors: Vec::new(),
            },
        ];
        for w in &unsynced {
            assert!(!w.must_sync());
        }
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
}
