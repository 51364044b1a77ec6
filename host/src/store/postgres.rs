//! PostgreSQL: the backend several gateway nodes share.
//!
//! Design:
//! - **Every write is one transaction**, at READ COMMITTED, retried from
//!   the start when PostgreSQL reports a deadlock or a serialisation failure
//!   (a settle of one round that releases no lane is a single statement, its
//!   own transaction). Concurrent commits share WAL flushes on the server, so
//!   there is no writer task here. The hot paths (the ingest and settle
//!   group workers, claims) run on connections of their own (`Direct`),
//!   which spare them the pool's check of a connection on the way out and on
//!   the way back; the rest use the pool.
//! - **Lanes are serialised by advisory locks.** Any transaction that adds to
//!   or releases from a lane `(connector, key)` first takes
//!   `pg_advisory_xact_lock` on the lane's 64-bit hash, all of its lanes in
//!   ascending order (so lock waits never cycle); an ingest group and a
//!   settle know theirs from the start and take them in the `BEGIN`'s own
//!   round trip (`Begin::locking`). An ingest takes its `seq`
//!   values only after it holds its lanes, so inside a lane `seq` order is
//!   commit order: a delivery never joins a lane ahead of one that committed
//!   earlier, and a completion always sees every entry that was committed
//!   before it. Each statement at READ COMMITTED sees the commits of the
//!   lock's previous holder. The one lock taken later, coalescing's on the
//!   other lanes of a delivery it supersedes, is only tried
//!   (`pg_try_advisory_xact_lock`), never waited for.
//! - **Claims** use `FOR UPDATE SKIP LOCKED`, so nodes claiming the same
//!   connector never wait on each other and never claim a row twice; leases
//!   carry a random token, so a late completion after a rescue is a no-op on
//!   every node. The rescuer skips rows another transaction holds.
//! - **Offers** (`store::offer`): a loop waiting with an open offer gets
//!   what an ingest group makes ready for it inserted in flight, and what
//!   an outcome group makes ready claimed inside that group's transaction
//!   ([`Take`]); neither costs a claim transaction of its own or a wake.
//!   Rescues, expiries and operator actions wake the loops instead.
//! - Migrations run under sqlx's migration lock, so nodes starting together
//!   apply them once.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::str::FromStr;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::{Connection, Postgres, QueryBuilder};
use tokio::sync::{mpsc, oneshot};

use super::catalog::{self, lock_id, Conn, Counts, Pools};
use super::group::{CommitWindow, POSTGRES_WAIT};
use super::offer::{Offers, Reserved};
use super::retention;
use super::{
    claims_of, classify, completion_rounds, count_superseded, lane_view_of, migrations, parse_keys,
    state_of, Catalog, Claimed, Cluster, Completion, IngestOutcome, LaneHeadRow, LaneView, LastDue,
    Offer, OperatorAction, Purge, Purged, RoundAnswers, Routed, Settled, SharedHealth, Store,
    StoreError, StoreResult, StoredEvent, LANE_BEHIND,
};
use crate::queue::lanes::{self, delivery_count, plan_accept, AcceptPlan, Step};
use crate::queue::{DeliveryState, Millis};

static MIGRATOR: LazyLock<Migrator> = LazyLock::new(|| migrations::migrator(migrations::POSTGRES));

/// Attempts at a transaction that PostgreSQL aborted as a deadlock victim or
/// serialisation failure before the error is returned.
const MAX_TX_ATTEMPTS: usize = 8;

pub struct PostgresStore {
    pool: PgPool,
    catalog: Catalog,
    /// Written as the owner of every lease this node takes.
    node: String,
    /// Connections of their own for claims, taken when one is free (else a
    /// claim uses the pool): a claim is one statement, and the pool's
    /// checks of a connection would double its round trips.
    claimers: [tokio::sync::Mutex<Direct>; CLAIMERS],
    ingests: mpsc::Sender<Queued<Vec<Routed>, IngestOutcome>>,
    completions: mpsc::Sender<Queued<Vec<Completion>, Settled>>,
    /// The session holding this node's name ([`Cluster::hold_name`]).
    name_lock: tokio::sync::Mutex<Option<PgConnection>>,
    /// Tells the other nodes of new work and breaker changes, once
    /// [`Cluster::listen`] turned it on.
    announcer: Arc<Announcer>,
    /// What this node's last claims found of when the next delivery is due.
    due: LastDue,
    /// The loops' standing claims, served by ingest and outcome groups
    /// ([`Store::offer`], [`Take`]).
    offers: Offers,
}

/// How often, at most, a node sends each kind of announcement: what comes
/// in between is coalesced into the next one.
const ANNOUNCE_EVERY: Duration = Duration::from_millis(10);

/// Sends NOTIFYs for [`Cluster::listen`] (events accepted, lanes released,
/// breakers changed), outside the transactions that caused them (a NOTIFY takes a cluster-wide lock at commit) and coalesced:
/// one per channel per [`ANNOUNCE_EVERY`] at most, naming every connector
/// concerned.
///
/// A notification's payload begins with its sender (`@` and a hash of the
/// node's name, which no connector name can be): a node does not act on its
/// own, since it woke its loops itself when it did the work. (Hearing them
/// woke each connector named again, every [`ANNOUNCE_EVERY`] under load,
/// for a claim that mostly found nothing: about 8% of the claims at 1,000
/// events a second.)
struct Announcer {
    enabled: std::sync::atomic::AtomicBool,
    tx: mpsc::UnboundedSender<super::Announcement>,
    /// `NOTIFY` channels of this store's schema: work, health.
    channels: [String; 2],
    /// The first item of this node's payloads.
    sender: String,
}

impl Announcer {
    fn start(pool: PgPool, schema: &str, node: &str) -> Arc<Self> {
        let channels = ["work", "health"].map(|kind| {
            format!(
                "switchboard_{kind}_{:016x}",
                lock_id("notify", kind, schema) as u64
            )
        });
        let sender = format!("@{:016x}", lock_id("notify", node, schema) as u64);
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(announce(pool, rx, channels.clone(), sender.clone()));
        Arc::new(Self {
            enabled: std::sync::atomic::AtomicBool::new(false),
            tx,
            channels,
            sender,
        })
    }

    /// Queues `what` for the next notification, each connector once: a
    /// group of hundreds of events names a handful of connectors.
    fn send(&self, what: impl IntoIterator<Item = super::Announcement>) {
        if self.enabled.load(std::sync::atomic::Ordering::Relaxed) {
            let once: std::collections::BTreeSet<_> = what.into_iter().collect();
            for a in once {
                let _ = self.tx.send(a);
            }
        }
    }
}

async fn announce(
    pool: PgPool,
    mut rx: mpsc::UnboundedReceiver<super::Announcement>,
    channels: [String; 2],
    sender: String,
) {
    use super::Announcement;
    while let Some(first) = rx.recv().await {
        let mut sets: [std::collections::BTreeSet<String>; 2] = Default::default();
        let mut add = |a: Announcement| match a {
            Announcement::Work(c) => sets[0].insert(c),
            Announcement::Health(c) => sets[1].insert(c),
        };
        add(first);
        while let Ok(a) = rx.try_recv() {
            add(a);
        }
        for (channel, names) in channels.iter().zip(sets) {
            // A payload holds at most 8,000 bytes; names are at most 64.
            let names: Vec<String> = names.into_iter().collect();
            for chunk in names.chunks(100) {
                let sent = sqlx::query("SELECT pg_notify($1, $2)")
                    .bind(channel)
                    .bind(format!("{sender},{}", chunk.join(",")))
                    .execute(&pool)
                    .await;
                if let Err(e) = sent {
                    tracing::debug!(error = %e, "cannot announce to the other nodes; they will poll");
                }
            }
        }
        tokio::time::sleep(ANNOUNCE_EVERY).await;
    }
}

/// Ingest requests applied together per transaction, at most.
const MAX_GROUP_REQUESTS: usize = 256;
/// Connections kept for claims (see [`PostgresStore::claimers`]).
const CLAIMERS: usize = 2;
/// Transactions applying groups of one kind (ingest, settle) at once, per
/// node. One: a group that waits for the one before it gathers everything
/// that arrived meanwhile, so the server runs fewer, fuller transactions and
/// no two of a node's groups wait on each other's lane locks. Measured
/// against four (BENCHMARKS.md, "PostgreSQL group workers"), with the server
/// on the gateway's two cores: at 1,000 ev/s the server's CPU per event fell
/// by a fifth and the request p99 by two fifths; saturated, delivery rose by
/// a third. Nodes sharing a database each run their own.
const GROUP_WORKERS: usize = 1;

/// Why one attempt at a transaction failed: retry it, or give up.
enum Fail {
    /// A deadlock, a serialisation failure or a racing insert of the same
    /// event id: run the whole transaction again.
    Again(String),
    /// The connection or the server's session is gone (I/O error, the
    /// server ending the session or still starting): run it again at once
    /// on a new connection if the attempt cannot have committed anything
    /// (see `transaction!`), else answer unavailable.
    Gone(String),
    Store(StoreError),
}

impl From<sqlx::Error> for Fail {
    fn from(e: sqlx::Error) -> Self {
        let code = match &e {
            sqlx::Error::Database(db) => db.code().map(Cow::into_owned),
            _ => None,
        };
        match (code.as_deref(), &e) {
            // deadlock_detected, serialization_failure.
            (Some("40P01" | "40001"), _) => Fail::Again(e.to_string()),
            // admin_shutdown, crash_shutdown, cannot_connect_now.
            (Some("57P01" | "57P02" | "57P03"), _) | (_, sqlx::Error::Io(_)) => {
                Fail::Gone(e.to_string())
            }
            _ => Fail::Store(e.into()),
        }
    }
}

impl From<StoreError> for Fail {
    fn from(e: StoreError) -> Self {
        Fail::Store(e)
    }
}

type TxResult<T> = Result<T, Fail>;

/// How a transaction starts.
enum Begin {
    /// No transaction of its own: the body is one statement, which commits
    /// on its own (one round trip; on a pooled connection, also the pool's
    /// checks of it when it hands it out and when it comes back).
    Autocommit,
    /// `BEGIN`, or a `BEGIN` that takes advisory locks (see
    /// [`Begin::locking`]), sent as one simple query.
    Tx(Cow<'static, str>),
}

impl Begin {
    const PLAIN: Begin = Begin::Tx(Cow::Borrowed("BEGIN"));

    /// A `BEGIN` that then takes the advisory locks of `ids` ([`lock_sql`])
    /// in the same round trip: a transaction that holds its lanes from the
    /// start pays no round trip for the locks.
    fn locking(ids: Vec<i64>) -> Begin {
        lock_sql(ids).map_or(Begin::PLAIN, |lock| {
            Begin::Tx(format!("BEGIN; {lock}").into())
        })
    }
}

/// A connection of its own, outside the pool, for a group worker or a
/// claimer. The pool checks a connection with a round trip when it hands it
/// out and again, always, when it comes back: about 1.3 round trips per
/// delivered event at 1,000 ev/s, as many as the statements of a settle.
/// A worker runs one transaction at a time, so it keeps one connection and
/// checks it only after it has sat idle (a server restarted meanwhile is
/// then found before a group is lost to it) or after a transaction on it
/// failed.
struct Direct {
    opts: Arc<PgConnectOptions>,
    conn: Option<PgConnection>,
    used: tokio::time::Instant,
}

/// How long a [`Direct`] connection may sit unused before it is checked.
const DIRECT_IDLE_CHECK: Duration = Duration::from_secs(1);

impl Direct {
    /// One for a worker or a claimer, made like the pool's
    /// (`plan_cache_mode` included); it connects when it is first used.
    fn new(pool: &PgPool) -> tokio::sync::Mutex<Direct> {
        tokio::sync::Mutex::new(Direct::with(pool.connect_options()))
    }

    fn with(opts: Arc<PgConnectOptions>) -> Direct {
        Direct {
            opts,
            conn: None,
            used: tokio::time::Instant::now(),
        }
    }

    /// Makes sure there is a connection: the one kept, checked first if it
    /// has sat idle, else a new one (a refused connection fails at once, a
    /// server that does not answer after [`ACQUIRE_TIMEOUT`]). Answers
    /// whether it is the one kept from before.
    async fn ready(&mut self) -> Result<bool, sqlx::Error> {
        if self.used.elapsed() > DIRECT_IDLE_CHECK {
            self.check().await;
        }
        self.used = tokio::time::Instant::now();
        if self.conn.is_some() {
            return Ok(true);
        }
        let conn = tokio::time::timeout(ACQUIRE_TIMEOUT, PgConnection::connect_with(&self.opts))
            .await
            .map_err(|_| {
                sqlx::Error::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "no connection to PostgreSQL within the acquire timeout",
                ))
            })??;
        self.conn = Some(conn);
        Ok(false)
    }

    /// Pings the connection, if any, and closes it unless it answers within
    /// [`ACQUIRE_TIMEOUT`] (a peer that vanished without a reset would
    /// otherwise keep the ping waiting for the kernel's retransmissions).
    async fn check(&mut self) {
        if let Some(conn) = &mut self.conn {
            let answered = tokio::time::timeout(ACQUIRE_TIMEOUT, conn.ping()).await;
            if !matches!(answered, Ok(Ok(()))) {
                self.conn = None;
            }
        }
    }
}

/// A connection for one attempt at a transaction.
enum Held<'a> {
    Pooled(sqlx::pool::PoolConnection<Postgres>),
    Direct(&'a mut Direct),
}

impl Held<'_> {
    fn conn(&mut self) -> Result<&mut PgConnection, sqlx::Error> {
        match self {
            Held::Pooled(conn) => Ok(conn),
            // Opened by `Opening::direct`; only a failure closes it, after use.
            Held::Direct(direct) => direct
                .conn
                .as_mut()
                .ok_or_else(|| sqlx::Error::Protocol("the connection was closed".into())),
        }
    }
}

/// A connection and whether its transaction has begun (or, for
/// [`Begin::Autocommit`], needs none). Dropped before that (a lock that
/// failed inside the `BEGIN`, or a caller that gave up while it waited), it
/// is closed, not reused: it may hold an aborted or open transaction that
/// nothing would roll back. Once begun, sqlx's `Transaction` rolls back by
/// itself (sent with the connection's next message) when the attempt fails.
struct Opening<'a> {
    held: Held<'a>,
    begun: bool,
    /// The attempt ran to its end, committed or failed. One dropped before
    /// (its caller gave up in the middle of a statement) may have left the
    /// connection between a message and its answer: it is closed.
    finished: bool,
    /// A [`Direct`] connection kept from an earlier use (not one the pool
    /// checked, nor one just opened): the server may have ended its session
    /// since, which the attempt's first message then finds.
    reused: bool,
}

impl<'a> Opening<'a> {
    async fn pooled(pool: &PgPool) -> Result<Opening<'a>, sqlx::Error> {
        Ok(Opening {
            held: Held::Pooled(pool.acquire().await?),
            begun: false,
            finished: false,
            reused: false,
        })
    }

    async fn direct(direct: &'a mut Direct) -> Result<Opening<'a>, sqlx::Error> {
        let reused = direct.ready().await?;
        Ok(Opening {
            held: Held::Direct(direct),
            begun: false,
            finished: false,
            reused,
        })
    }

    /// After an attempt that failed once its transaction had begun: a pooled
    /// connection is checked by the pool when it goes back; a direct one is
    /// checked here, and closed if it does not answer. The check also sends
    /// the rollback sqlx queued: a transaction that failed on this side (a
    /// row that does not decode, answers that do not match) still holds its
    /// advisory locks on the server until then, and would hold them until
    /// the worker's next group.
    async fn after_failure(&mut self) {
        if let Held::Direct(direct) = &mut self.held {
            direct.check().await;
        }
    }
}

impl Drop for Opening<'_> {
    fn drop(&mut self) {
        if !(self.begun && self.finished) {
            match &mut self.held {
                Held::Pooled(conn) => conn.close_on_drop(),
                Held::Direct(direct) => direct.conn = None,
            }
        }
    }
}

/// Runs `$body` (an async block using `$conn`, a transaction started as
/// `$begin` says, [`Begin::PLAIN`] if not given) on a connection `$open`
/// (an [`Opening`]) gives, until it commits or fails for good.
macro_rules! transaction {
    ($open:expr, |$conn:ident| $body:expr) => {
        transaction!($open, Begin::PLAIN, |$conn| $body)
    };
    ($open:expr, $begin:expr, |$conn:ident| $body:expr) => {{
        let begin: Begin = $begin;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut stale = false;
            let result: TxResult<_> = async {
                let mut opening: Opening = $open.await?;
                let out: TxResult<_> = async {
                    match &begin {
                        Begin::Autocommit => {
                            opening.begun = true;
                            let $conn: &mut PgConnection = opening.held.conn()?;
                            Ok($body.await?)
                        }
                        Begin::Tx(sql) => {
                            let mut tx = opening.held.conn()?.begin_with(sql.clone()).await?;
                            opening.begun = true;
                            let out = {
                                let $conn: &mut PgConnection = &mut tx;
                                $body.await?
                            };
                            tx.commit().await?;
                            Ok(out)
                        }
                    }
                }
                .await;
                opening.finished = true;
                if out.is_err() && opening.begun {
                    opening.after_failure().await;
                }
                // A kept connection whose session the server had ended: the
                // attempt failed before anything could commit if its `BEGIN`
                // did not go through, or if it is one statement (whose
                // repeat is harmless: an outcome is applied only under its
                // lease, and a claim whose answer was lost is rescued when
                // its lease runs out).
                stale = opening.reused
                    && matches!(out, Err(Fail::Gone(_)))
                    && (!opening.begun || matches!(begin, Begin::Autocommit));
                out
            }
            .await;
            match result {
                Ok(v) => break Ok(v),
                Err(Fail::Store(e)) => break Err(e),
                Err(Fail::Gone(why)) if stale && attempt < MAX_TX_ATTEMPTS => {
                    tracing::debug!(attempt, reason = %why, "store connection replaced");
                }
                Err(Fail::Gone(why)) => break Err(StoreError::Unavailable(why)),
                Err(Fail::Again(why)) if attempt < MAX_TX_ATTEMPTS => {
                    tracing::debug!(attempt, reason = %why, "store transaction retried");
                    tokio::time::sleep(Duration::from_millis(2 << attempt.min(6))).await;
                }
                Err(Fail::Again(why)) => break Err(StoreError::Unavailable(why)),
            }
        }
    }};
}

/// A request to a group-commit worker: the work, its time, where to answer,
/// since when it waits.
type Queued<Req, Out> = (Req, Millis, oneshot::Sender<StoreResult<Out>>, Instant);
/// A group-commit queue, taken by one worker at a time while it gathers a
/// group, with when its groups begin (`group`).
type Queue<Req, Out> = Arc<tokio::sync::Mutex<(mpsc::Receiver<Queued<Req, Out>>, CommitWindow)>>;

fn queue<Req, Out>(rx: mpsc::Receiver<Queued<Req, Out>>, wait: Duration) -> Queue<Req, Out> {
    Arc::new(tokio::sync::Mutex::new((rx, CommitWindow::new(wait))))
}

/// Group commit: each worker takes every request queued at that moment (up
/// to [`MAX_GROUP_REQUESTS`]) and applies them in one transaction, so
/// concurrent callers share round trips and a WAL flush instead of paying a
/// handful of statements and an fsync each. `apply` answers one output per
/// request, in order; if the transaction fails, every caller in it hears so.
///
/// A small group in steady traffic first waits for company (`group`).
async fn group_worker<Req, Out, F, Fut>(what: &'static str, queue: Queue<Req, Out>, apply: F)
where
    F: Fn(Vec<Req>, Millis) -> Fut,
    Fut: std::future::Future<Output = StoreResult<Vec<Out>>>,
{
    loop {
        let mut group = Vec::new();
        {
            let mut queue = queue.lock().await;
            let (rx, window) = &mut *queue;
            match rx.recv().await {
                Some(first) => group.push(first),
                None => return,
            }
            let drain = |rx: &mut mpsc::Receiver<_>, group: &mut Vec<_>| {
                while group.len() < MAX_GROUP_REQUESTS {
                    match rx.try_recv() {
                        Ok(more) => group.push(more),
                        Err(_) => break,
                    }
                }
            };
            drain(rx, &mut group);
            if let Some(until) = window.until(group.len(), group[0].3, Instant::now()) {
                tokio::time::sleep_until(until.into()).await;
                drain(rx, &mut group);
            }
            window.took(group.len());
        }
        let now = group.iter().map(|g| g.1).max().unwrap_or_default();
        let (requests, replies): (Vec<Req>, Vec<_>) = group
            .into_iter()
            .map(|(req, _, reply, _)| (req, reply))
            .unzip();
        let n = replies.len();
        match apply(requests, now).await {
            Ok(outs) if outs.len() == n => {
                for (reply, out) in replies.into_iter().zip(outs) {
                    let _ = reply.send(Ok(out));
                }
            }
            Ok(_) => {
                for reply in replies {
                    let _ = reply.send(Err(StoreError::Corrupt(format!(
                        "internal: {what} answers do not match requests"
                    ))));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, requests = n, "{what} transaction failed, rolled back");
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
}

/// A group-commit worker of ingests or outcomes, with the connection of
/// its own it runs its transactions on.
struct Worker {
    direct: tokio::sync::Mutex<Direct>,
    /// Whose rows of the per-connector counts it moves.
    writer: String,
    node: String,
    announcer: Arc<Announcer>,
    offers: Offers,
    /// Where deliveries claimed for a stopped loop go back ([`serve_takes`]).
    completions: mpsc::Sender<Queued<Vec<Completion>, Settled>>,
}

impl Worker {
    /// One group of ingest requests, in one transaction.
    async fn ingest(
        self: Arc<Self>,
        requests: Vec<Vec<Routed>>,
        now: Millis,
    ) -> StoreResult<Vec<IngestOutcome>> {
        let mut direct = self.direct.lock().await;
        // One delivery per event and connector.
        let mut most = HashMap::new();
        for c in requests.iter().flatten().flat_map(|r| &r.connectors) {
            *most.entry(c.as_str()).or_default() += 1;
        }
        let takes = Take::reserve(&self.offers, &most);
        let (writer, node) = (&self.writer, &self.node);
        let begin = Begin::locking(ingest_locks(&requests));
        let done = transaction!(Opening::direct(&mut direct), begin, |conn| counted(
            conn,
            writer,
            async |conn, counts| {
                ingest_tx(conn, &requests, now, (writer, counts), (node, &takes)).await
            }
        ));
        let (mut outcomes, given) = serve_takes(takes, done, &self.completions, &self.offers, now)?;
        for o in &mut outcomes {
            if let IngestOutcome::Accepted(counts) = o {
                counts.offered.clone_from(&given.offered);
            }
        }
        // Other nodes may take what this one's offers did not.
        let connectors = requests.iter().flatten().flat_map(|r| &r.connectors);
        self.announcer.send(
            connectors
                .filter(|c| given.left_to_others(c))
                .map(|c| super::Announcement::Work(c.clone())),
        );
        Ok(outcomes)
    }

    /// One group of outcome requests, in one transaction.
    async fn settle(
        self: Arc<Self>,
        requests: Vec<Vec<Completion>>,
        now: Millis,
    ) -> StoreResult<Vec<Settled>> {
        let mut direct = self.direct.lock().await;
        let sizes: Vec<usize> = requests.iter().map(Vec::len).collect();
        let items: Vec<Completion> = requests.into_iter().flatten().collect();
        let rounds = completion_rounds(&items);
        let locks = settle_locks(&items);
        // Completions that release no lane, of distinct deliveries, are one
        // statement and its own commit; they make nothing ready, so no
        // offer is served.
        let (begin, takes) = if locks.is_empty() && rounds.len() == 1 {
            (Begin::Autocommit, Vec::new())
        } else {
            // A released lane entry readies at most its lane's next head.
            let mut most = HashMap::new();
            for c in items.iter().filter(|c| c.kind.step().releases()) {
                *most.entry(c.connector.as_str()).or_default() += c.keys.len();
            }
            (Begin::locking(locks), Take::reserve(&self.offers, &most))
        };
        let who = (self.node.as_str(), self.writer.as_str());
        let done = transaction!(Opening::direct(&mut direct), begin, |conn| complete_tx(
            conn, &items, &rounds, now, who, &takes
        ));
        let (mut settled, given) = serve_takes(takes, done, &self.completions, &self.offers, now)?;
        // A released lane made its next delivery ready: any node may take
        // what an offer did not.
        self.announcer.send(
            settled
                .readied
                .iter()
                .filter(|c| given.left_to_others(c))
                .map(|c| super::Announcement::Work(c.clone())),
        );
        // A loop whose offer was served needs no wake (one whose room was
        // filled claims the rest on its own).
        settled.readied.retain(|c| !given.offered.contains(c));
        let mut applied = settled.applied.into_iter();
        Ok(sizes
            .into_iter()
            .map(|n| Settled {
                applied: applied.by_ref().take(n).collect(),
                readied: settled.readied.clone(),
            })
            .collect())
    }
}

/// Sends `req` to a group-commit queue and waits for its answer.
async fn enqueue<Req, Out>(
    queue: &mpsc::Sender<Queued<Req, Out>>,
    req: Req,
    now: Millis,
) -> StoreResult<Out> {
    let (tx, rx) = oneshot::channel();
    let stopped = || StoreError::Unavailable("store workers stopped".into());
    queue
        .send((req, now, tx, Instant::now()))
        .await
        .map_err(|_| stopped())?;
    rx.await.map_err(|_| stopped())?
}

/// Says so at start when the server's autovacuum is off: every event that
/// passes through leaves dead rows behind (updated deliveries, released lane
/// entries, purged events), and without autovacuum their space is never
/// reused, so the tables grow without bound. Migration 0019 tunes it for the
/// queue's tables; it cannot turn it on.
async fn warn_without_autovacuum(pool: &PgPool) {
    let on: Result<Vec<(String, String)>, _> = sqlx::query_as(
        "SELECT name, setting FROM pg_settings WHERE name IN ('autovacuum', 'track_counts')",
    )
    .fetch_all(pool)
    .await;
    for (name, setting) in on.unwrap_or_default() {
        if setting != "on" {
            tracing::warn!(
                setting = %name,
                "PostgreSQL runs with {name} = off: the space of the queue's dead rows is never \
                 reused and its tables grow with every event; set {name} = on (the server's \
                 default) in postgresql.conf"
            );
        }
    }
}

/// How long a request waits for a connection before it is answered 503,
/// with the server unreachable: a config app waiting on its ack should hear
/// "retry later", not time out itself.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long start-up waits for a PostgreSQL that refuses connections or is
/// still starting (as the pool would: its acquire timeout).
const CONNECT_PATIENCE: Duration = Duration::from_secs(10);

/// One connection, made directly so that a failure says why. A pool that
/// cannot connect only reports that it timed out waiting; an operator needs
/// "connection refused" or "password authentication failed", and where (the
/// URL without its password). A server that is down or still starting is
/// tried again until `patience` runs out, as a pool would; any other error
/// (unknown role, bad password, no such database) is final at once.
async fn connect_once(opts: &PgConnectOptions, patience: Duration) -> StoreResult<PgConnection> {
    let give_up = tokio::time::Instant::now() + patience;
    let mut pause = Duration::from_millis(50);
    loop {
        let e = match PgConnection::connect_with(opts).await {
            Ok(conn) => return Ok(conn),
            Err(e) => e,
        };
        let transient = match &e {
            sqlx::Error::Io(_) => true,
            // cannot_connect_now: "the database system is starting up"
            sqlx::Error::Database(db) => db.code().as_deref() == Some("57P03"),
            _ => false,
        };
        if !transient || tokio::time::Instant::now() + pause > give_up {
            let db = opts.get_database().unwrap_or("");
            let at = match opts.get_socket() {
                Some(socket) => socket.display().to_string(),
                None => format!("{}:{}", opts.get_host(), opts.get_port()),
            };
            return Err(StoreError::Unavailable(format!(
                "cannot connect to PostgreSQL as {:?} at {at}, database {db:?}: {e}",
                opts.get_username()
            )));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(1));
    }
}

impl PostgresStore {
    /// Connects to the database a `postgres://` URL names and applies
    /// migrations (under sqlx's migration lock, so nodes starting together
    /// apply them once); `node` is the name its leases carry.
    pub async fn open_as(url: &str, node: &str) -> StoreResult<Self> {
        Self::open_waiting(url, node, None).await
    }

    /// [`PostgresStore::open_as`], with how long a small group of posts
    /// waits for more (`None`: 4 ms; see `store::group`).
    pub async fn open_waiting(url: &str, node: &str, wait: Option<Duration>) -> StoreResult<Self> {
        // Plan every statement for its actual arguments. A generic plan made
        // while the tables were nearly empty (sequential scans are cheapest
        // then) would otherwise stay cached as they grow to millions of rows.
        let opts = PgConnectOptions::from_str(url)
            .map_err(|e| super::invalid_url(url, e))?
            .options([("plan_cache_mode", "force_custom_plan")]);
        connect_once(&opts, CONNECT_PATIENCE)
            .await?
            .close()
            .await
            .ok();
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .min_connections(1)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(opts)
            .await
            .map_err(|e| StoreError::Unavailable(format!("cannot connect: {e}")))?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| StoreError::Migration(e.to_string()))?;
        let schema: String = sqlx::query_scalar("SELECT current_schema()")
            .fetch_one(&pool)
            .await?;
        warn_without_autovacuum(&pool).await;
        let announcer = Announcer::start(pool.clone(), &schema, node);
        let (ingests, rx) = mpsc::channel(4096);
        let (completions, completed) = mpsc::channel(4096);
        let offers = Offers::default();
        let wait = wait.unwrap_or(POSTGRES_WAIT);
        let rx: Queue<Vec<Routed>, IngestOutcome> = queue(rx, wait);
        // Outcomes wait for company too: they hold no connector's slot
        // (see `group`).
        let settle_rx: Queue<Vec<Completion>, Settled> = queue(completed, wait);
        for i in 0..GROUP_WORKERS {
            let worker = |what: &str| {
                Arc::new(Worker {
                    direct: Direct::new(&pool),
                    writer: format!("{node}/{what}{i}"),
                    node: node.to_string(),
                    announcer: announcer.clone(),
                    offers: offers.clone(),
                    completions: completions.clone(),
                })
            };
            let w = worker("ingest");
            tokio::spawn(group_worker("ingest", rx.clone(), move |requests, now| {
                w.clone().ingest(requests, now)
            }));
            let w = worker("complete");
            tokio::spawn(group_worker(
                "completion",
                settle_rx.clone(),
                move |requests, now| w.clone().settle(requests, now),
            ));
        }
        Ok(Self {
            catalog: Catalog::new(Pools::Postgres(pool.clone()), node),
            claimers: std::array::from_fn(|_| Direct::new(&pool)),
            pool,
            node: node.to_string(),
            ingests,
            completions,
            name_lock: tokio::sync::Mutex::new(None),
            announcer,
            due: LastDue::default(),
            offers,
        })
    }

    /// Applies migrations only (`switchboard migrate`); returns the versions
    /// applied, oldest first.
    pub async fn migrate(url: &str) -> StoreResult<Vec<i64>> {
        let opts = PgConnectOptions::from_str(url).map_err(|e| super::invalid_url(url, e))?;
        let mut conn = connect_once(&opts, CONNECT_PATIENCE).await?;
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
}

/// The statement that takes the advisory locks of `ids` for the rest of
/// the transaction, in ascending order so that two transactions never wait
/// on each other in a cycle; `None` for no ids. The ids are numbers,
/// written into the text (sent as a simple query, it is never prepared).
fn lock_sql(mut ids: Vec<i64>) -> Option<String> {
    ids.sort_unstable();
    ids.dedup();
    match ids.as_slice() {
        [] => None,
        [id] => Some(format!("SELECT pg_advisory_xact_lock({id})")),
        _ => {
            let list: Vec<String> = ids.iter().map(i64::to_string).collect();
            Some(format!(
                "SELECT pg_advisory_xact_lock(l.id) \
                 FROM unnest('{{{}}}'::int8[]) WITH ORDINALITY AS l(id, n) ORDER BY l.n",
                list.join(",")
            ))
        }
    }
}

fn lane_lock(connector: &str, key: &str) -> i64 {
    lock_id("lane", connector, key)
}

/// Runs `body` with a fresh [`Counts`], then adds what it changed to
/// `writer`'s rows of the per-connector counts, in the same transaction.
async fn counted<T>(
    conn: &mut PgConnection,
    writer: &str,
    body: impl AsyncFnOnce(&mut PgConnection, &mut Counts) -> TxResult<T>,
) -> TxResult<T> {
    let mut counts = Counts::default();
    let out = body(&mut *conn, &mut counts).await?;
    counts.write(Conn::Postgres(conn), writer).await?;
    Ok(out)
}

/// The ingest's look-up of the lanes it joins that hold an entry already:
/// the 0-based positions among the lanes `(connectors[i], keys[i])` bound
/// at `connectors` and `keys` (`text[]` each).
fn occupied_of(connectors: &str, keys: &str) -> String {
    format!(
        "SELECT v.i - 1 FROM unnest({connectors}::text[], {keys}::text[]) \
             WITH ORDINALITY AS v(c, k, i) \
         WHERE EXISTS (SELECT 1 FROM lane_entries l WHERE l.connector = v.c AND l.key = v.k)"
    )
}

/// The lanes an ingest group's events join, each once, in the order first
/// met: its transaction begins by locking them ([`ingest_locks`]), and its
/// first statement asks which of them hold an entry already.
fn group_lanes(requests: &[Vec<Routed>]) -> (Vec<&str>, Vec<&str>) {
    let (mut connectors, mut keys) = (Vec::new(), Vec::new());
    let mut seen = HashSet::new();
    for r in requests.iter().flatten() {
        for c in &r.connectors {
            for k in &r.event.keys {
                if seen.insert((c.as_str(), k.as_str())) {
                    connectors.push(c.as_str());
                    keys.push(k.as_str());
                }
            }
        }
    }
    (connectors, keys)
}

/// The locks of [`group_lanes`] ([`Begin::locking`]).
fn ingest_locks(requests: &[Vec<Routed>]) -> Vec<i64> {
    let (connectors, keys) = group_lanes(requests);
    connectors
        .into_iter()
        .zip(keys)
        .map(|(c, k)| lane_lock(c, k))
        .collect()
}

/// The ingest requests waiting at one moment, applied in one transaction
/// that holds their lanes' locks from its `BEGIN` ([`ingest_locks`]): see
/// the module notes for why the lane locks come before the sequence
/// numbers. Each request stays all-or-nothing (a conflict in one stores
/// nothing of it and does not touch the others).
async fn ingest_tx(
    conn: &mut PgConnection,
    requests: &[Vec<Routed>],
    now: Millis,
    (writer, counts): (&str, &mut Counts),
    (node, takes): (&str, &[Take]),
) -> TxResult<(Vec<IngestOutcome>, Vec<Option<Vec<Claimed>>>)> {
    // 1. One round trip: the duplicate look-up, `seq`s and delivery ids
    //    for every event of the group (those drawn for a duplicate stay
    //    unused, a gap such as a rolled-back transaction leaves too), and
    //    which of the group's lanes hold an entry already (and which
    //    connectors with an open offer are paused). The `BEGIN` took
    //    these lanes, so the `seq`s follow every commit that added to them
    //    and nothing else adds to or releases from them until this commits.
    let all: Vec<&Routed> = requests.iter().flatten().collect();
    let ids: Vec<&str> = all.iter().map(|r| r.event.id.as_str()).collect();
    let (lane_c, lane_k) = group_lanes(requests);
    static FIRST: LazyLock<String> = LazyLock::new(|| {
        format!(
            "SELECT ARRAY(SELECT nextval('events_seq') FROM generate_series(1, $1)), \
                    ARRAY(SELECT nextval('deliveries_id') FROM generate_series(1, $2)), \
                    whole.ids, whole.digests, reduced.hashes, reduced.digests, \
                    ARRAY({}), \
                    ARRAY(SELECT connector FROM connector_controls \
                          WHERE paused AND connector = ANY($7)) \
             FROM {}",
            occupied_of("$5", "$6"),
            retention::known_ids_from("$3", "$4"),
        )
    });
    type First = (
        Vec<i64>,
        Vec<i64>,
        Option<Vec<String>>,
        Option<Vec<Vec<u8>>>,
        Option<Vec<Vec<u8>>>,
        Option<Vec<Vec<u8>>>,
        Vec<i64>,
        Vec<String>,
    );
    let offered: Vec<&str> = takes.iter().map(|t| t.offer.connector()).collect();
    let (mut seqs, delivery_ids, whole_ids, whole_digests, hashes, reduced_digests, held, paused): First =
        sqlx::query_as(&FIRST)
            .bind(ids.len() as i64)
            .bind(delivery_count(&all) as i64)
            .bind(&ids)
            .bind(retention::id_hashes(&ids))
            .bind(&lane_c)
            .bind(&lane_k)
            .bind(&offered)
            .fetch_one(&mut *conn)
            .await?;
    let mut known =
        retention::known_of_arrays((whole_ids, whole_digests, hashes, reduced_digests), &ids);
    let (mut outcomes, fresh) = classify(requests, &mut known);
    if fresh.is_empty() {
        return Ok((outcomes, takes.iter().map(|_| Some(Vec::new())).collect()));
    }
    seqs.truncate(fresh.len());
    let lane_at = |i: i64| {
        let i = usize::try_from(i).ok()?;
        Some((lane_c.get(i)?.to_string(), lane_k.get(i)?.to_string()))
    };
    let mut occupied: HashSet<(String, String)> = held.into_iter().filter_map(lane_at).collect();

    // 2. Coalescing: the first full-state event of each tag ends
    //    the stored deliveries it supersedes, which leave their lanes
    //    before the new ones join: which lanes hold an entry is asked again
    //    once some did.
    let (superseded, superseded_here) = supersede_tx(conn, &fresh, &seqs, now, counts).await?;
    if !superseded.is_empty() {
        static AGAIN: LazyLock<String> = LazyLock::new(|| occupied_of("$1", "$2"));
        let held: Vec<i64> = sqlx::query_scalar(&AGAIN)
            .bind(&lane_c)
            .bind(&lane_k)
            .fetch_all(&mut *conn)
            .await?;
        occupied = held.into_iter().filter_map(lane_at).collect();
    }
    let mut next = delivery_ids.into_iter();
    let mut exhausted = false;
    let AcceptPlan {
        deliveries,
        entries: lanes,
    } = plan_accept(
        &fresh,
        &seqs,
        || {
            next.next().unwrap_or_else(|| {
                exhausted = true;
                0
            })
        },
        &mut occupied,
        now,
        &superseded_here,
    );
    if exhausted {
        return Err(StoreError::Corrupt("internal: too few delivery ids".into()).into());
    }
    let (served, leased) = take_for_offers(
        takes,
        &deliveries,
        (&fresh, &seqs),
        &paused,
        &superseded,
        now,
    );

    // 3. Write the events, deliveries (those taken for an offer in flight),
    // lane entries and per-connector counts in one statement (one round
    // trip). A racing transaction that inserted one of our ids after our
    // look-up makes the insert skip it: start again, the look-up will see
    // it.
    let state_of = |i: usize| match leased[i] {
        Some(_) => DeliveryState::InFlight,
        None => deliveries[i].state(),
    };
    for (i, d) in deliveries.iter().enumerate() {
        counts.moved(d.connector, None, state_of(i), 1);
    }
    let lease_of = |i: usize| leased[i].map(|t| &takes[t]);
    let n = deliveries.len();
    let mut qb =
        QueryBuilder::<Postgres>::new("WITH new_events AS (INSERT INTO events (accepted_at, ");
    qb.push("seq, id, type, keys, payload, digest, replay_id, origin_seq) SELECT ")
        .push_bind(now)
        .push(", * FROM unnest(");
    let keys_json =
        |r: &&Routed| serde_json::to_string(&r.event.keys).unwrap_or_else(|_| "[]".into());
    qb.separated(", ")
        .push_bind(&seqs)
        .push_bind(each(&fresh, |r| r.event.id.as_str()))
        .push_bind(each(&fresh, |r| r.event.event_type.as_str()))
        .push_bind(each(&fresh, keys_json))
        .push_bind(each(&fresh, |r| r.event.payload.as_str()))
        .push_bind(each(&fresh, |r| r.event.digest.to_vec()))
        .push_bind(each(&fresh, |r| r.origin.map(|o| o.replay)))
        .push_bind(each(&fresh, |r| r.origin.map(|o| o.seq)));
    // `$1` is `now`.
    qb.push(
        ") ON CONFLICT (id) DO NOTHING RETURNING 1), \
         new_deliveries AS (INSERT INTO deliveries (next_attempt_at, created_at, updated_at, \
             id, event_seq, connector, blockers, expires_at, state, coalesce_key, superseded_by, \
             attempts, lease_until, lease_token, lease_owner) \
         SELECT $1, $1, $1, * FROM unnest(",
    );
    qb.separated(", ")
        .push_bind(each(&deliveries, |d| d.id))
        .push_bind(each(&deliveries, |d| d.seq))
        .push_bind(each(&deliveries, |d| d.connector))
        .push_bind(each(&deliveries, |d| d.blockers))
        .push_bind(each(&deliveries, |d| d.expires_at))
        .push_bind(each(0..n, |i| state_of(i).as_str()))
        .push_bind(each(&deliveries, |d| d.coalesce))
        .push_bind(each(&deliveries, |d| d.superseded_by))
        .push_bind(each(0..n, |i| lease_of(i).map_or(0, |_| 1i64)))
        .push_bind(each(0..n, |i| {
            lease_of(i).map(|t| now.saturating_add(t.room.lease_ms))
        }))
        .push_bind(each(0..n, |i| lease_of(i).map(|t| t.lease)))
        .push_bind(each(0..n, |i| lease_of(i).map(|_| node)));
    qb.push(
        ")), new_entries AS (INSERT INTO lane_entries (connector, key, seq, delivery_id) \
         SELECT * FROM unnest(",
    );
    qb.separated(", ")
        .push_bind(each(&lanes, |l| l.0))
        .push_bind(each(&lanes, |l| l.1))
        .push_bind(each(&lanes, |l| l.2))
        .push_bind(each(&lanes, |l| l.3));
    qb.push("))");
    counts.push_cte(&mut qb, writer);
    qb.push(" SELECT count(*) FROM new_events");
    let inserted: i64 = qb.build_query_scalar().fetch_one(&mut *conn).await?;
    if inserted != fresh.len() as i64 {
        return Err(Fail::Again("an event id was inserted concurrently".into()));
    }
    count_superseded(&mut outcomes, &seqs, &superseded, &deliveries);
    Ok((outcomes, served))
}

/// Room of a loop waiting with an open offer (`store::offer`) for a
/// connector an ingest or outcome group may make deliveries of ready,
/// reserved before the group's transaction: an ingest inserts what it
/// makes ready for that connector in flight, leased to this node as a claim
/// would; an outcome group claims what it made ready in its transaction;
/// either sends it to the loop once committed. The loop needs no wake and
/// makes no claim of its own for it, and no claim transaction (nor its
/// commit) is spent on it.
struct Take {
    offer: Arc<Offer>,
    room: Reserved,
    lease: i64,
}

impl Take {
    /// Reserves room in every open offer of a connector that `most` names
    /// with the most of its deliveries the transaction can make ready: no
    /// more, so that the ingest and outcome groups running beside each
    /// other both find room (one that finds none must wake the loop).
    fn reserve(offers: &Offers, most: &HashMap<&str, usize>) -> Vec<Take> {
        let open = offers.open();
        if open.is_empty() {
            return Vec::new();
        }
        open.into_iter()
            .filter_map(|offer| {
                let room = offer.reserve_at_most(*most.get(offer.connector())?)?;
                let lease = rand::random::<i64>() & i64::MAX;
                Some(Take { offer, room, lease })
            })
            .collect()
    }
}

/// Which of an accept's new deliveries go in flight for an offer (by
/// index into `takes`), and what each offer gets: its connector's ready
/// deliveries, oldest first, up to its room. A paused connector's offer
/// gets none (a claim would take none). `None` for an offer whose
/// connector had stored deliveries superseded by the group: their lanes
/// may have moved on to deliveries that only a claim finds, so its loop is
/// woken to claim, as without an offer.
fn take_for_offers(
    takes: &[Take],
    deliveries: &[lanes::NewDelivery<'_>],
    (fresh, seqs): (&[&Routed], &[i64]),
    paused: &[String],
    superseded: &[(String, i64)],
    now: Millis,
) -> (Vec<Option<Vec<Claimed>>>, Vec<Option<usize>>) {
    let mut served: Vec<Option<Vec<Claimed>>> = takes
        .iter()
        .map(|t| {
            let c = t.offer.connector();
            (!superseded.iter().any(|(s, _)| s == c)).then(Vec::new)
        })
        .collect();
    let mut leased = vec![None; deliveries.len()];
    if takes.is_empty() {
        return (served, leased);
    }
    let event_of: HashMap<i64, &Routed> = seqs.iter().copied().zip(fresh.iter().copied()).collect();
    for (i, d) in deliveries.iter().enumerate() {
        if d.state() != DeliveryState::Ready || paused.iter().any(|p| p == d.connector) {
            continue;
        }
        let Some(t) = takes
            .iter()
            .position(|t| t.offer.connector() == d.connector)
        else {
            continue;
        };
        let (Some(batch), Some(r)) = (served[t].as_mut(), event_of.get(&d.seq)) else {
            continue;
        };
        if batch.len() >= takes[t].room.limit {
            continue;
        }
        batch.push(Claimed {
            delivery_id: d.id,
            connector: d.connector.to_string(),
            lease: takes[t].lease,
            attempt: 1,
            claimed_at: now,
            event: StoredEvent {
                seq: d.seq,
                id: r.event.id.clone(),
                event_type: r.event.event_type.clone(),
                keys: r.event.keys.clone(),
                payload: r.event.payload.clone(),
                accepted_at: now,
            },
        });
        leased[i] = Some(t);
    }
    (served, leased)
}

/// What an ingest or outcome group gave the offers ([`serve_takes`]).
struct Given {
    /// Connectors whose loops need no wake for the group.
    offered: Vec<String>,
    /// Those of them that may have deliveries left ready behind (an offer
    /// whose room the group filled: their loops claim on their own).
    left: Vec<String>,
}

impl Given {
    /// Whether other nodes may find `connector`'s deliveries that the group
    /// made ready still to take.
    fn left_to_others(&self, connector: &String) -> bool {
        !self.offered.contains(connector) || self.left.contains(connector)
    }
}

/// After an ingest or outcome group's transaction (`done`, with what it
/// took for each of `takes`): gives each offer what the group took for it
/// (or, if it failed, its room back), then answers the group's own result
/// and what it gave. What a loop that is gone cannot receive is handed
/// back to the queue, and the connector's loop started since, if there is
/// one, is told to claim it ([`Offer::nudge`]): it may have claimed before
/// the hand-back was committed, and would otherwise find it only at its
/// poll.
fn serve_takes<T>(
    takes: Vec<Take>,
    done: StoreResult<(T, Vec<Option<Vec<Claimed>>>)>,
    completions: &mpsc::Sender<Queued<Vec<Completion>, Settled>>,
    offers: &Offers,
    now: Millis,
) -> StoreResult<(T, Given)> {
    let (done, served) = match done {
        Ok((out, served)) => (Ok(out), Some(served)),
        Err(e) => (Err(e), None),
    };
    let (mut offered, mut left) = (Vec::new(), Vec::new());
    let mut orphans = Vec::new();
    let mut served = served.map(Vec::into_iter);
    for t in takes {
        let got = served.as_mut().and_then(|s| s.next()).flatten();
        let took = got.is_some();
        let claimed = got.unwrap_or_default();
        let exhausted = t.offer.claimed(t.room, claimed.len());
        if took {
            let connector = t.offer.connector().to_string();
            if exhausted {
                left.push(connector.clone());
            }
            offered.push(connector);
        }
        // The loop counts the room reserved as in transit until it hears
        // back: one that closed its offer meanwhile is told even of
        // nothing, so that it looks again at once.
        if !claimed.is_empty() || exhausted || !t.offer.is_open() {
            if let Err(claimed) = t.offer.send(claimed, exhausted, t.room.ticket) {
                orphans.extend(claimed);
            }
        }
    }
    if !orphans.is_empty() {
        let items = orphans
            .iter()
            .map(|d| Completion::handed_back(d, now))
            .collect();
        let connectors: std::collections::BTreeSet<String> =
            orphans.iter().map(|d| d.connector.clone()).collect();
        let (completions, offers) = (completions.clone(), offers.clone());
        tokio::spawn(async move {
            match enqueue(&completions, items, now).await {
                Ok(_) => connectors
                    .iter()
                    .filter_map(|c| offers.live(c))
                    .for_each(|o| o.nudge()),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot hand leases back; they will expire instead")
                }
            }
        });
    }
    Ok((done?, Given { offered, left }))
}

/// Coalescing: finds the stored deliveries not started with the tags of
/// `fresh` ([`lanes::sql::supersedable`]), asks [`lanes::supersessions`]
/// which go, ends those (recording which event superseded each) and
/// releases their lanes. The lanes are taken first — the coalesce key's is
/// held already (the ingest locked it); the others are only tried, never
/// waited for, so this late lock can never close a cycle with a transaction
/// that locked in order, and a delivery with a lane busy right now stays,
/// which is always safe — and the update re-checks each row under its row
/// lock, so one a claim took meanwhile stays with the claim. Answers each
/// ended one's connector and superseding event's `seq`, and the accept's
/// own deliveries to create superseded.
async fn supersede_tx(
    conn: &mut PgConnection,
    fresh: &[&Routed],
    seqs: &[i64],
    now: Millis,
    counts: &mut Counts,
) -> TxResult<(Vec<(String, i64)>, HashMap<(i64, String), i64>)> {
    let tags = lanes::tags_of(fresh);
    if tags.is_empty() {
        return Ok((Vec::new(), HashMap::new()));
    }
    let cs: Vec<&str> = tags.iter().map(|k| k.0).collect();
    let ts: Vec<&str> = tags.iter().map(|k| k.1).collect();
    static FIND: LazyLock<String> = LazyLock::new(|| {
        format!(
            "SELECT d.id, d.connector, d.coalesce_key, d.event_seq, \
                 COALESCE(e.origin_seq, e.seq), e.keys \
             FROM unnest($1::text[], $2::text[]) AS v(c, t) \
             JOIN deliveries d ON d.connector = v.c AND d.coalesce_key = v.t \
             JOIN events e ON e.seq = d.event_seq WHERE {}",
            lanes::sql::supersedable("d")
        )
    });
    let found: Vec<(i64, String, String, i64, i64, String)> = sqlx::query_as(&FIND)
        .bind(&cs)
        .bind(&ts)
        .fetch_all(&mut *conn)
        .await?;
    let candidates: Vec<lanes::Candidate> = found
        .iter()
        .map(|(id, c, tag, seq, order, _)| lanes::Candidate::new(*id, c, tag, *seq, *order))
        .collect();
    // A replay's copies also meet the newest state of their key that a
    // destination has or is getting.
    let mut kept = Vec::new();
    if fresh.iter().any(|r| r.origin.is_some()) {
        static KEPT: LazyLock<String> = LazyLock::new(|| {
            format!(
                "SELECT v.c, v.t, k.o, k.s FROM unnest($1::text[], $2::text[]) AS v(c, t) \
                 CROSS JOIN LATERAL (SELECT COALESCE(e.origin_seq, e.seq) AS o, d.event_seq AS s \
                     FROM deliveries d JOIN events e ON e.seq = d.event_seq \
                     WHERE d.connector = v.c AND d.coalesce_key = v.t AND {} \
                     ORDER BY o DESC LIMIT 1) k",
                lanes::sql::delivering("d")
            )
        });
        let rows: Vec<(String, String, i64, i64)> = sqlx::query_as(&KEPT)
            .bind(&cs)
            .bind(&ts)
            .fetch_all(&mut *conn)
            .await?;
        kept.extend(
            rows.iter()
                .map(|(c, tag, order, seq)| lanes::Candidate::new(0, c, tag, *seq, *order)),
        );
    }
    let decided = lanes::supersessions(fresh, seqs, &candidates, &kept);
    if decided.stored.is_empty() {
        return Ok((Vec::new(), decided.fresh));
    }
    let by_of: HashMap<i64, i64> = decided.stored.iter().copied().collect();
    let mut held = held_lanes(
        found
            .into_iter()
            .filter(|f| by_of.contains_key(&f.0))
            .map(|(id, c, _, seq, _, keys)| (id, c, seq, keys))
            .collect(),
    )?;
    let (mut lock_ids, mut lock_lanes) = (Vec::new(), Vec::new());
    for (id, (c, _, keys)) in &held {
        for k in keys {
            lock_ids.push(*id);
            lock_lanes.push(lane_lock(c, k));
        }
    }
    let free: Vec<i64> = sqlx::query_scalar(
        "SELECT v.id FROM unnest($1::int8[], $2::int8[]) AS v(id, lane) \
         GROUP BY v.id HAVING bool_and(pg_try_advisory_xact_lock(v.lane))",
    )
    .bind(&lock_ids)
    .bind(&lock_lanes)
    .fetch_all(&mut *conn)
    .await?;
    if free.is_empty() {
        return Ok((Vec::new(), decided.fresh));
    }
    static END: LazyLock<String> = LazyLock::new(|| {
        format!(
            "WITH old AS (SELECT d.id, d.state FROM deliveries d \
                 WHERE d.id = ANY($1) AND {} FOR UPDATE) \
             UPDATE deliveries d SET state = $3, superseded_by = v.by, updated_at = $4 \
             FROM old JOIN unnest($1::int8[], $2::int8[]) AS v(id, by) ON v.id = old.id \
             WHERE d.id = old.id RETURNING d.id, old.state",
            lanes::sql::supersedable("d")
        )
    });
    let ended: Vec<(i64, String)> = sqlx::query_as(&END)
        .bind(&free)
        .bind(each(&free, |id| by_of[id]))
        .bind(Step::Superseded.state().as_str())
        .bind(now)
        .fetch_all(&mut *conn)
        .await?;
    let ended: Vec<(i64, DeliveryState)> = ended
        .iter()
        .map(|(id, state)| Ok((*id, state_of(state)?)))
        .collect::<StoreResult<_>>()?;
    let out = release_ended(conn, &mut held, ended, Step::Superseded, now, counts).await?;
    let out = out.into_iter().map(|(id, c)| (c, by_of[&id])).collect();
    Ok((out, decided.fresh))
}

/// Removes the entries `(connector, key, seq)` from their lanes, in one
/// statement; where one was the head, the new head loses a blocker and
/// becomes ready when it has none left ([`unblocking`]). The caller holds
/// the lanes' advisory locks.
async fn release_lanes(
    conn: &mut PgConnection,
    entries: &[(String, String, i64)],
    now: Millis,
    counts: &mut Counts,
) -> TxResult<()> {
    if entries.is_empty() {
        return Ok(());
    }
    static RELEASE: LazyLock<String> = LazyLock::new(|| {
        format!(
            "WITH gone AS (DELETE FROM lane_entries l \
                 USING unnest($1::text[], $2::text[], $3::int8[]) AS v(c, k, s) \
                 WHERE l.connector = v.c AND l.key = v.k AND l.seq = v.s \
                 RETURNING l.connector, l.key, l.seq), {} \
             SELECT connector FROM unblocked WHERE ready",
            unblocking("gone", "$4")
        )
    });
    // Bound from locals: a closure's temporary held across the await would
    // keep the future from being `Send`.
    let (cs, ks) = (
        each(entries, |e| e.0.as_str()),
        each(entries, |e| e.1.as_str()),
    );
    let readied: Vec<String> = sqlx::query_scalar(&RELEASE)
        .bind(cs)
        .bind(ks)
        .bind(each(entries, |e| e.2))
        .bind(now)
        .fetch_all(&mut *conn)
        .await?;
    for connector in readied {
        let blocked = Some(DeliveryState::Blocked);
        counts.moved(&connector, blocked, DeliveryState::Ready, 1);
    }
    Ok(())
}

/// The items of a statement that promote the new heads of the lanes whose
/// entries `gone` deletes (`lanes::sql::promotions`): `unblocked` returns
/// each delivery that lost blockers (`id`, `connector`, and whether it is
/// `ready` now), updated at `now` (a placeholder).
fn unblocking(gone: &str, now: &str) -> String {
    format!(
        "lose AS ({}), \
         unblocked AS (UPDATE deliveries d SET blockers = d.blockers - lose.n, \
             state = {}, updated_at = {now} \
             FROM lose WHERE d.id = lose.id \
             RETURNING d.id, d.connector, d.state = 'ready' AS ready)",
        lanes::sql::promotions(gone),
        lanes::sql::unblocked_state("d", "lose.n"),
    )
}

/// Each of `items` through `f`, collected: the arrays a statement binds.
fn each<T, U>(items: impl IntoIterator<Item = T>, f: impl FnMut(T) -> U) -> Vec<U> {
    items.into_iter().map(f).collect()
}

/// The lanes a settle releases: its transaction begins by locking them
/// ([`Begin::locking`]), so that no ingest joins them meanwhile.
fn settle_locks(items: &[Completion]) -> Vec<i64> {
    items
        .iter()
        .filter(|c| c.kind.step().releases())
        .flat_map(|c| c.keys.iter().map(|k| lane_lock(&c.connector, k)))
        .collect()
}

/// Applies a settle group's completions, a round of distinct deliveries at
/// a time (`rounds`, from [`completion_rounds`]); the caller holds their
/// lanes' locks ([`settle_locks`]).
async fn complete_tx(
    conn: &mut PgConnection,
    items: &[Completion],
    rounds: &[Vec<usize>],
    now: Millis,
    who: (&str, &str),
    takes: &[Take],
) -> TxResult<(Settled, Vec<Option<Vec<Claimed>>>)> {
    let mut answers = RoundAnswers::new(items.len());
    let mut ready = Vec::new();
    for round in rounds {
        let batch = RoundAnswers::batch(items, round);
        let (answer, ids) = complete_round(conn, &batch, now, who).await?;
        answers.add(round, answer);
        ready.extend(ids);
    }
    let settled = answers.settled();
    // A loop waiting with an open offer gets what these outcomes made ready
    // for it, claimed in this transaction: those deliveries only, so that
    // one that fills a share of the room (`Offer::reserve_at_most`) has
    // left none of them ready behind.
    let mut served = Vec::with_capacity(takes.len());
    for t in takes {
        let connector = t.offer.connector();
        let mut claimed = Vec::new();
        if settled.readied(connector) {
            let how = ClaimHow {
                connector,
                limit: t.room.limit,
                now,
                lease_until: now.saturating_add(t.room.lease_ms),
                lease: t.lease,
                node: who.0,
                writer: who.1,
                only: Some(&ready),
            };
            claimed = claim_tx(conn, &how).await?.0;
        }
        served.push(Some(claimed));
    }
    Ok((settled, served))
}

/// [`complete_tx`] for completions of distinct deliveries, in one
/// statement: whether each applied, and the connectors it readied a
/// delivery of; and the ids of those deliveries.
///
/// The statement applies the outcomes, logs the attempts they end, takes
/// the released entries out of their lanes, promotes the new heads
/// (`lanes::sql::promotions`) and moves the counts. A settle of one round
/// that releases no lane is this statement alone, committing on its own;
/// else it runs between the `BEGIN` that locks the lanes and the `COMMIT`.
async fn complete_round(
    conn: &mut PgConnection,
    items: &[Completion],
    now: Millis,
    (node, writer): (&str, &str),
) -> TxResult<((Vec<bool>, Vec<String>), Vec<i64>)> {
    // The lane entries each completion releases, should it apply.
    let (mut rel_c, mut rel_k, mut rel_s, mut rel_id) = (vec![], vec![], vec![], vec![]);
    for c in items.iter().filter(|c| c.kind.step().releases()) {
        for k in &c.keys {
            rel_c.push(c.connector.as_str());
            rel_k.push(k.as_str());
            rel_s.push(c.seq);
            rel_id.push(c.delivery_id);
        }
    }
    // Two texts: completions that release no lane (unkeyed deliveries,
    // retries, dead letters held) skip the lane items, which the server
    // would otherwise plan at every execution for nothing.
    fn settle_sql(releasing: bool) -> String {
        let lanes = if releasing {
            format!(
                "gone AS (DELETE FROM lane_entries l \
                     USING unnest($12::text[], $13::text[], $14::int8[], $15::int8[]) \
                         AS r(c, k, s, id) \
                     JOIN done ON done.id = r.id \
                     WHERE l.connector = r.c AND l.key = r.k AND l.seq = r.s \
                     RETURNING l.connector, l.key, l.seq), {}, ",
                unblocking("gone", "$6"),
            )
        } else {
            String::new()
        };
        let (moved, readied) = if releasing {
            (
                " UNION ALL SELECT connector, 'blocked', 'ready' FROM unblocked WHERE ready",
                " UNION ALL SELECT NULL, connector, id FROM unblocked WHERE ready",
            )
        } else {
            ("", "")
        };
        format!(
            "WITH v AS (SELECT * FROM unnest($1::int8[], $2::int8[], $3::text[], $4::int8[], \
                 $5::text[], $7::int8[], $8::int8[], $9::text[]) \
                 AS v(id, lease, st, at, err, attempt, started, outcome)), \
             done AS (UPDATE deliveries d SET state = v.st, \
                 next_attempt_at = COALESCE(v.at, d.next_attempt_at), \
                 last_error = COALESCE(v.err, d.last_error), \
                 lease_until = NULL, lease_token = NULL, lease_owner = NULL, updated_at = $6 \
                 FROM v WHERE d.id = v.id AND d.state = 'in_flight' AND d.lease_token = v.lease \
                 RETURNING d.id, d.connector, d.state), \
             logged AS (INSERT INTO attempts \
                 (delivery_id, connector, attempt, node, started_at, finished_at, outcome, reason) \
                 SELECT v.id, done.connector, v.attempt, $10, v.started, $6, v.outcome, v.err \
                 FROM v JOIN done ON done.id = v.id \
                 ON CONFLICT (delivery_id, attempt) DO NOTHING), \
             {lanes}\
             moves AS (SELECT connector, 'in_flight'::text AS from_state, state AS to_state \
                 FROM done{moved}), \
             counted AS ({counts}) \
             SELECT done.id, NULL::text, NULL::int8 FROM done{readied}",
            counts = catalog::count_transitions("moves", "$11"),
        )
    }
    static SETTLE: LazyLock<[String; 2]> = LazyLock::new(|| [settle_sql(false), settle_sql(true)]);
    let releasing = !rel_id.is_empty();
    let mut query = sqlx::query_as(&SETTLE[usize::from(releasing)])
        .bind(each(items, |c| c.delivery_id))
        .bind(each(items, |c| c.lease))
        .bind(each(items, |c| c.kind.step().state().as_str()))
        .bind(each(items, |c| c.kind.next_at_and_error().0))
        // PostgreSQL text cannot hold NUL; a connector's error text might.
        .bind(each(items, |c| {
            let error = c.kind.next_at_and_error().1;
            error.map(|e| e.replace('\0', "\u{fffd}"))
        }))
        .bind(now)
        .bind(each(items, |c| i64::from(c.attempt)))
        .bind(each(items, |c| c.started_at))
        .bind(each(items, |c| super::outcome_name(c.kind.step())))
        .bind(node)
        .bind(writer);
    if releasing {
        query = query.bind(&rel_c).bind(&rel_k).bind(&rel_s).bind(&rel_id);
    }
    let rows: Vec<(Option<i64>, Option<String>, Option<i64>)> = query.fetch_all(&mut *conn).await?;
    let mut applied = HashSet::new();
    let (mut readied, mut ready_ids) = (Vec::new(), Vec::new());
    for (id, connector, ready) in rows {
        applied.extend(id);
        readied.extend(connector);
        ready_ids.extend(ready);
    }
    let applied = items
        .iter()
        .map(|c| applied.contains(&c.delivery_id))
        .collect();
    Ok(((applied, readied), ready_ids))
}

/// Ends up to `limit` blocked or ready deliveries past their `expires_at` as
/// `expired` and releases their lane entries, under their lanes' locks. A
/// candidate claimed or completed meanwhile is left alone (the update
/// re-checks the state).
async fn expire_tx(
    conn: &mut PgConnection,
    now: Millis,
    limit: usize,
    counts: &mut Counts,
) -> TxResult<Vec<(String, u64)>> {
    static CANDIDATES: LazyLock<String> = LazyLock::new(|| {
        format!(
            "{LANES_OF}{} ORDER BY d.expires_at LIMIT $2",
            lanes::sql::expirable("$1")
        )
    });
    static EXPIRE: LazyLock<String> = LazyLock::new(|| {
        format!(
            "UPDATE deliveries SET state = $3, updated_at = $1, last_error = $4 \
             WHERE id = ANY($2) AND {} RETURNING id, blockers",
            lanes::sql::expirable("$1")
        )
    });
    let candidates = sqlx::query_as(&CANDIDATES)
        .bind(now)
        .bind(limit as i64)
        .fetch_all(&mut *conn)
        .await?;
    let mut held = held_lanes(candidates)?;
    if held.is_empty() {
        return Ok(Vec::new());
    }
    lock_held(conn, &held).await?;
    let ids: Vec<i64> = held.keys().copied().collect();
    let expired: Vec<(i64, i64)> = sqlx::query_as(&EXPIRE)
        .bind(now)
        .bind(ids)
        .bind(Step::Expired.state().as_str())
        .bind(super::EXPIRED)
        .fetch_all(&mut *conn)
        .await?;
    let ended = expired
        .into_iter()
        .map(|(id, blockers)| (id, lanes::initial_state(blockers)));
    let mut per_connector: BTreeMap<String, u64> = BTreeMap::new();
    for (_, connector) in release_ended(conn, &mut held, ended, Step::Expired, now, counts).await? {
        *per_connector.entry(connector).or_default() += 1;
    }
    Ok(per_connector.into_iter().collect())
}

/// Selects what [`held_lanes`] reads of deliveries: id, connector, seq and
/// keys; a condition on `d` (deliveries) or `e` (events) follows.
const LANES_OF: &str = "SELECT d.id, d.connector, d.event_seq, e.keys FROM deliveries d \
     JOIN events e ON e.seq = d.event_seq WHERE ";

/// Deliveries' lanes by id: their connector, seq and keys.
type HeldLanes = HashMap<i64, (String, i64, Vec<String>)>;

fn held_lanes(rows: Vec<(i64, String, i64, String)>) -> StoreResult<HeldLanes> {
    rows.into_iter()
        .map(|(id, c, seq, keys)| Ok((id, (c, seq, parse_keys(&keys)?))))
        .collect()
}

/// Takes the advisory locks of every lane in `held` inside a transaction
/// ([`lock_sql`]).
async fn lock_held(conn: &mut PgConnection, held: &HeldLanes) -> TxResult<()> {
    let ids = held
        .values()
        .flat_map(|(c, _, keys)| keys.iter().map(move |k| lane_lock(c, k)));
    if let Some(lock) = lock_sql(ids.collect()) {
        sqlx::Executor::execute(&mut *conn, lock.as_str()).await?;
    }
    Ok(())
}

/// Moves the deliveries `ended` (each with the state it left) to `step`'s
/// final state in the counts and, if the step releases ([`Step::releases`]),
/// releases their lanes ([`release_lanes`]), which `held` has and whose
/// locks the caller holds. Returns each one's id and connector.
async fn release_ended(
    conn: &mut PgConnection,
    held: &mut HeldLanes,
    ended: impl IntoIterator<Item = (i64, DeliveryState)>,
    step: Step,
    now: Millis,
    counts: &mut Counts,
) -> TxResult<Vec<(i64, String)>> {
    let (mut entries, mut out) = (Vec::new(), Vec::new());
    for (id, was) in ended {
        let Some((connector, seq, keys)) = held.remove(&id) else {
            continue;
        };
        counts.moved(&connector, Some(was), step.state(), 1);
        entries.extend(keys.into_iter().map(|k| (connector.clone(), k, seq)));
        out.push((id, connector));
    }
    if step.releases() {
        release_lanes(conn, &entries, now, counts).await?;
    }
    Ok(out)
}

async fn retry_dead_tx(
    conn: &mut PgConnection,
    id: i64,
    now: Millis,
    counts: &mut Counts,
) -> TxResult<bool> {
    static RETRY: LazyLock<String> = LazyLock::new(|| {
        format!(
            "UPDATE deliveries SET state = {}, next_attempt_at = $1, updated_at = $1 \
             WHERE id = $2 AND state = 'dead' RETURNING connector, state",
            lanes::sql::REQUEUED_STATE
        )
    });
    let row: Option<(String, String)> = sqlx::query_as(&RETRY)
        .bind(now)
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    let Some((connector, state)) = row else {
        return Ok(false);
    };
    counts.moved(&connector, Some(DeliveryState::Dead), state_of(&state)?, 1);
    Ok(true)
}

async fn skip_dead_tx(
    conn: &mut PgConnection,
    id: i64,
    now: Millis,
    counts: &mut Counts,
) -> TxResult<bool> {
    static LANES: LazyLock<String> = LazyLock::new(|| format!("{LANES_OF}d.id = $1"));
    let mut held = held_lanes(
        sqlx::query_as(&LANES)
            .bind(id)
            .fetch_all(&mut *conn)
            .await?,
    )?;
    if held.is_empty() {
        return Ok(false);
    }
    lock_held(conn, &held).await?;
    let done = sqlx::query(
        "UPDATE deliveries SET state = $3, updated_at = $1 WHERE id = $2 AND state = 'dead'",
    )
    .bind(now)
    .bind(id)
    .bind(Step::Skipped.state().as_str())
    .execute(&mut *conn)
    .await?
    .rows_affected()
        == 1;
    if done {
        let ended = [(id, DeliveryState::Dead)];
        release_ended(conn, &mut held, ended, Step::Skipped, now, counts).await?;
    }
    Ok(done)
}

async fn operator_tx(
    conn: &mut PgConnection,
    id: i64,
    action: OperatorAction,
    actor: &str,
    now: Millis,
    counts: &mut Counts,
) -> TxResult<bool> {
    let before = catalog::before_action(Conn::Postgres(conn), id).await?;
    let done = match action {
        OperatorAction::Retry => retry_dead_tx(conn, id, now, counts).await?,
        OperatorAction::Skip => skip_dead_tx(conn, id, now, counts).await?,
    };
    if done {
        catalog::audit_action(Conn::Postgres(conn), id, action, actor, now, before).await?;
    }
    Ok(done)
}

/// Which in-flight deliveries a rescue takes back.
#[derive(Clone, Copy)]
enum Rescue {
    /// Those whose lease ended.
    Expired,
    /// Those whose lease names this node: its previous run's, at start-up.
    Own,
    /// Those whose lease names another node not heard from for this many
    /// milliseconds by the database's clock.
    Stale(i64),
}

/// What a claim takes and how it leases it.
struct ClaimHow<'a> {
    connector: &'a str,
    limit: usize,
    now: Millis,
    lease_until: Millis,
    lease: i64,
    /// The lease's owner.
    node: &'a str,
    /// Whose rows of the per-connector counts the claim moves.
    writer: &'a str,
    /// Only these deliveries (those an outcome group just made ready,
    /// whatever their due time).
    only: Option<&'a [i64]>,
}

/// A claim, in one statement (one round trip): takes the rows, moves them
/// from ready to in flight in `writer`'s row of the counts, reads their
/// events, and finds when the next of the rest is due (for a claim that
/// gets fewer than it asks for, `Store::next_due` then reads nothing). With
/// nothing taken it answers one row with only that time. Such a claim took
/// every due row it could lock, so the next due is a later one: rows due
/// now that it left were locked by another claim.
async fn claim_tx(
    conn: &mut PgConnection,
    how: &ClaimHow<'_>,
) -> TxResult<(Vec<Claimed>, Option<Millis>)> {
    static CLAIM: LazyLock<String> = LazyLock::new(|| {
        format!(
            "WITH taken AS (UPDATE deliveries d SET state = 'in_flight', \
                 attempts = d.attempts + 1, lease_until = $1, lease_token = $2, \
                 updated_at = $3, lease_owner = $6 \
             FROM (SELECT id FROM deliveries WHERE connector = $4 AND {} \
                   AND (next_attempt_at <= $3 OR $8::int8[] IS NOT NULL) \
                   AND ($8::int8[] IS NULL OR id = ANY($8)) \
                   AND NOT EXISTS (SELECT 1 FROM connector_controls \
                                   WHERE connector = $4 AND paused) \
                   ORDER BY next_attempt_at, id LIMIT $5 \
                   FOR UPDATE SKIP LOCKED) c \
             WHERE d.id = c.id \
             RETURNING d.id, d.event_seq, d.attempts), \
             moves AS (SELECT $4::text AS connector, 'ready'::text AS from_state, \
                 'in_flight'::text AS to_state FROM taken), \
             counted AS ({}) \
             SELECT due.at, t.id, t.event_seq, t.attempts, \
                 e.seq, e.id, e.type, e.keys, e.payload, e.accepted_at \
             FROM ({} AND next_attempt_at > $3) AS due(at) \
             LEFT JOIN taken t ON true LEFT JOIN events e ON e.seq = t.event_seq",
            // `lanes::sql::claimable`, but that deliveries an outcome just
            // made ready are due whatever `$3` says: never attempted, they
            // were due when accepted, which may be a moment after the time
            // the outcome carries.
            lanes::sql::ready_unexpired("$3"),
            catalog::count_transitions("moves", "$7"),
            catalog::next_due("$4", "$3"),
        )
    });
    // With nothing taken, one row of NULLs but the due time.
    type Row = (
        Option<Millis>,
        Option<i64>,
        Option<i64>,
        Option<i64>,
        Option<i64>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<i64>,
    );
    let rows: Vec<Row> = sqlx::query_as(&CLAIM)
        .bind(how.lease_until)
        .bind(how.lease)
        .bind(how.now)
        .bind(how.connector)
        .bind(how.limit as i64)
        .bind(how.node)
        .bind(how.writer)
        .bind(how.only)
        .fetch_all(conn)
        .await?;
    let (mut claimed, mut events, mut due) = (Vec::new(), Vec::new(), None);
    for (at, id, seq, attempts, e_seq, e_id, e_type, keys, payload, accepted) in rows {
        due = at;
        if let (Some(id), Some(seq), Some(attempts)) = (id, seq, attempts) {
            claimed.push((id, seq, attempts));
        }
        if let (Some(s), Some(i), Some(t), Some(k), Some(p), Some(a)) =
            (e_seq, e_id, e_type, keys, payload, accepted)
        {
            events.push((s, i, t, k, p, a));
        }
    }
    // A claimed row whose event is missing is reported there.
    let claims = claims_of(how.connector, how.lease, how.now, claimed, events)?;
    Ok((claims, due))
}

impl PostgresStore {
    /// Re-queues the in-flight deliveries `which` selects and logs their
    /// attempts as ended, in one statement: its sub-statements all see the
    /// rows as they were, so the attempt log reads each claim's start before
    /// the update. SKIP LOCKED: a row another transaction holds is being
    /// completed right now; it is not abandoned. `next_attempt_at` stays:
    /// they keep their place at the front of the ready order.
    async fn rescue(&self, now: Millis, which: Rescue) -> StoreResult<u64> {
        fn sql(which: &str) -> String {
            format!(
                "WITH x AS (SELECT id FROM deliveries WHERE {which} FOR UPDATE SKIP LOCKED), \
                 logged AS ({}), \
                 rescued AS (UPDATE deliveries d SET state = $2, lease_until = NULL, \
                     lease_token = NULL, lease_owner = NULL, \
                     updated_at = $1, last_error = $3 \
                     FROM x WHERE d.id = x.id RETURNING d.connector), \
                 moves AS (SELECT connector, 'in_flight'::text AS from_state, \
                     $2::text AS to_state FROM rescued), \
                 counted AS ({}) \
                 SELECT COUNT(*) FROM rescued",
                catalog::log_lease_expiries("deliveries d JOIN x ON d.id = x.id", "$1", "$3"),
                catalog::count_transitions("moves", "$4"),
            )
        }
        static EXPIRED: LazyLock<String> = LazyLock::new(|| sql(&lanes::sql::lease_expired("$1")));
        static OWN: LazyLock<String> =
            LazyLock::new(|| sql(&format!("{} AND lease_owner = $5", lanes::sql::IN_FLIGHT)));
        static STALE: LazyLock<String> = LazyLock::new(|| {
            sql(&format!(
                "{} AND lease_owner <> $5 AND lease_owner IN \
                     (SELECT name FROM nodes WHERE heartbeat_at < {} - $6)",
                lanes::sql::IN_FLIGHT,
                catalog::PG_NOW_MS
            ))
        });
        let (statement, reason) = match which {
            Rescue::Expired => (&*EXPIRED, super::LEASE_EXPIRED),
            Rescue::Own => (&*OWN, super::RECLAIMED),
            Rescue::Stale(_) => (&*STALE, super::TAKEN_OVER),
        };
        let q = sqlx::query_scalar(statement)
            .bind(now)
            .bind(Step::LeaseExpired.state().as_str())
            .bind(reason)
            .bind(format!("{}/rescue", self.node));
        let q = match which {
            Rescue::Expired => q,
            Rescue::Own => q.bind(&self.node),
            Rescue::Stale(ms) => q.bind(&self.node).bind(ms),
        };
        let rescued: i64 = q.fetch_one(&self.pool).await?;
        Ok(rescued.max(0) as u64)
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn ingest(&self, events: Vec<Routed>, now: Millis) -> StoreResult<IngestOutcome> {
        enqueue(&self.ingests, events, now).await
    }

    async fn claim(
        &self,
        connector: &str,
        limit: usize,
        now: Millis,
        lease_ms: i64,
    ) -> StoreResult<Vec<Claimed>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let lease = rand::random::<i64>() & i64::MAX;
        let claimer = format!("{}/claim", self.node);
        let how = ClaimHow {
            connector,
            limit,
            now,
            lease_until: now.saturating_add(lease_ms),
            lease,
            node: &self.node,
            writer: &claimer,
            only: None,
        };
        // The same transaction either way (retried alike), on whichever
        // connection is to hand.
        let got = match self.claimers.iter().find_map(|c| c.try_lock().ok()) {
            Some(mut direct) => {
                transaction!(Opening::direct(&mut direct), Begin::Autocommit, |conn| {
                    claim_tx(conn, &how)
                })
            }
            None => transaction!(Opening::pooled(&self.pool), Begin::Autocommit, |conn| {
                claim_tx(conn, &how)
            }),
        };
        let (claims, due) = match got {
            Ok((claims, due)) => (Ok(claims), due),
            Err(e) => (Err(e), None),
        };
        // Only this claim's finding stands: none when it got all it asked
        // for, or failed.
        let fewer = claims.as_ref().is_ok_and(|c| c.len() < limit);
        self.due.record(connector, fewer.then_some(due));
        claims
    }

    fn last_due(&self) -> Option<&LastDue> {
        Some(&self.due)
    }

    fn offer(&self, offer: Arc<Offer>) -> bool {
        self.offers.leave(offer);
        true
    }

    async fn settle(&self, items: Vec<Completion>, now: Millis) -> StoreResult<Settled> {
        if items.is_empty() {
            return Ok(Settled::default());
        }
        enqueue(&self.completions, items, now).await
    }

    async fn rescue_expired(&self, now: Millis) -> StoreResult<u64> {
        self.rescue(now, Rescue::Expired).await
    }

    async fn reclaim(&self, now: Millis) -> StoreResult<u64> {
        self.rescue(now, Rescue::Own).await
    }

    async fn expire_due(&self, now: Millis, limit: usize) -> StoreResult<Vec<(String, u64)>> {
        let writer = format!("{}/expire", self.node);
        transaction!(Opening::pooled(&self.pool), |conn| counted(
            conn,
            &writer,
            async |conn, counts| { expire_tx(conn, now, limit, counts).await }
        ))
    }

    async fn operator_action(
        &self,
        delivery_id: i64,
        action: OperatorAction,
        actor: &str,
        now: Millis,
    ) -> StoreResult<bool> {
        let writer = format!("{}/operator", self.node);
        transaction!(Opening::pooled(&self.pool), |conn| counted(
            conn,
            &writer,
            async |conn, counts| {
                operator_tx(conn, delivery_id, action, actor, now, counts).await
            }
        ))
    }

    async fn lanes(&self, key: &str, connectors: &[String]) -> StoreResult<Vec<LaneView>> {
        let mut out = Vec::with_capacity(connectors.len());
        for c in connectors {
            let count: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM lane_entries WHERE connector = $1 AND key = $2",
            )
            .bind(c)
            .bind(key)
            .fetch_one(&self.pool)
            .await?;
            let first: Vec<LaneHeadRow> = sqlx::query_as(
                "SELECT d.id, d.connector, d.state, d.attempts, d.last_error, d.next_attempt_at, \
                     d.updated_at, d.lease_owner, d.expires_at, e.id \
                 FROM lane_entries l \
                 JOIN deliveries d ON d.id = l.delivery_id \
                 JOIN events e ON e.seq = l.seq \
                 WHERE l.connector = $1 AND l.key = $2 ORDER BY l.seq LIMIT $3",
            )
            .bind(c)
            .bind(key)
            .bind(LANE_BEHIND as i64 + 1)
            .fetch_all(&self.pool)
            .await?;
            out.push(lane_view_of(c, key, first, count)?);
        }
        Ok(out)
    }

    async fn purge_finished(&self, r: Purge, limit: usize) -> StoreResult<Purged> {
        // SKIP LOCKED: an event another node is purging right now is left
        // to it.
        let lock = "FOR UPDATE SKIP LOCKED";
        let writer = format!("{}/purge", self.node);
        transaction!(Opening::pooled(&self.pool), |conn| counted(
            conn,
            &writer,
            async |conn, counts| {
                Ok(retention::purge(Conn::Postgres(conn), r, limit, lock, counts).await?)
            }
        ))
    }

    fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    fn cluster(&self) -> Option<&dyn Cluster> {
        Some(self)
    }
}

#[async_trait]
impl Cluster for PostgresStore {
    fn announce_work(&self, connector: &str) {
        let work = super::Announcement::Work(connector.to_string());
        self.announcer.send([work]);
    }

    async fn hold_name(&self, patience: Duration) -> StoreResult<()> {
        let mut held = self.name_lock.lock().await;
        if let Some(conn) = held.as_mut() {
            if conn.ping().await.is_ok() {
                return Ok(());
            }
            tracing::warn!(node = %self.node, "lost the session holding this node's name; taking it again");
            *held = None;
        }
        let mut conn = PgConnection::connect_with(&self.pool.connect_options())
            .await
            .map_err(|e| StoreError::Unavailable(format!("cannot connect: {e}")))?;
        // Scoped to the schema: one database may hold several clusters.
        let schema: String = sqlx::query_scalar("SELECT current_schema()")
            .fetch_one(&mut conn)
            .await?;
        let id = lock_id("node", &self.node, &schema);
        let until = std::time::Instant::now() + patience;
        // A previous run killed a moment ago holds it until the server sees
        // its connection close.
        loop {
            let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                .bind(id)
                .fetch_one(&mut conn)
                .await?;
            if got {
                *held = Some(conn);
                return Ok(());
            }
            if std::time::Instant::now() >= until {
                return Err(StoreError::InUse(format!(
                    "node name {:?} is held by another running gateway on this database: \
                     give each node its own cluster.node",
                    self.node
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn listen(&self) -> StoreResult<mpsc::Receiver<super::Announcement>> {
        use super::Announcement;
        let mut listener = sqlx::postgres::PgListener::connect_with(&self.pool).await?;
        let [work, health] = self.announcer.channels.clone();
        let own = self.announcer.sender.clone();
        listener
            .listen_all([work.as_str(), health.as_str()])
            .await?;
        self.announcer
            .enabled
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(async move {
            loop {
                // Reconnects by itself after a lost connection (what was
                // announced meanwhile is lost: polling finds that work).
                let n = match listener.recv().await {
                    Ok(n) => n,
                    Err(e) => {
                        tracing::warn!(error = %e, "stopped listening to the other nodes");
                        return;
                    }
                };
                let kind: fn(String) -> Announcement = if n.channel() == work {
                    Announcement::Work
                } else {
                    Announcement::Health
                };
                let items: Vec<String> = n
                    .payload()
                    .split(',')
                    .filter(|c| !c.is_empty())
                    .map(str::to_string)
                    .collect();
                if items.first() == Some(&own) {
                    continue;
                }
                // Names only: a sender is not a connector.
                for name in items.into_iter().filter(|c| !c.starts_with('@')) {
                    if tx.send(kind(name)).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(rx)
    }

    async fn take_over(&self, now: Millis, silent_ms: i64) -> StoreResult<u64> {
        self.rescue(now, Rescue::Stale(silent_ms)).await
    }

    async fn shared_health(&self, connector: &str) -> StoreResult<Option<SharedHealth>> {
        let row: Option<(bool, i64, i64)> = sqlx::query_as(
            "SELECT open, next_probe_at, probe_interval_ms FROM connector_health \
             WHERE connector = $1",
        )
        .bind(connector)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(open, next_probe_at, interval)| {
            if open {
                SharedHealth::Open {
                    next_probe_at,
                    probe_interval_ms: interval.max(0) as u64,
                }
            } else {
                SharedHealth::Closed
            }
        }))
    }

    async fn publish_health(
        &self,
        connector: &str,
        health: SharedHealth,
        now: Millis,
    ) -> StoreResult<()> {
        let (open, next, interval) = match health {
            SharedHealth::Closed => (false, 0, 0),
            SharedHealth::Open {
                next_probe_at,
                probe_interval_ms,
            } => (true, next_probe_at, probe_interval_ms as i64),
        };
        sqlx::query(
            "INSERT INTO connector_health (connector, open, next_probe_at, probe_interval_ms, \
                 updated_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (connector) DO UPDATE SET open = excluded.open, \
                 next_probe_at = excluded.next_probe_at, \
                 probe_interval_ms = excluded.probe_interval_ms, updated_at = excluded.updated_at",
        )
        .bind(connector)
        .bind(open)
        .bind(next)
        .bind(interval)
        .bind(now)
        .execute(&self.pool)
        .await?;
        self.announcer
            .send([super::Announcement::Health(connector.to_string())]);
        Ok(())
    }

    async fn take_probe(&self, connector: &str, now: Millis) -> StoreResult<bool> {
        // One statement: the row lock makes exactly one node win each due
        // probe; a closed or missing breaker row never stands in the way.
        let won: Option<bool> = sqlx::query_scalar(
            "WITH cur AS (SELECT open, next_probe_at FROM connector_health \
                          WHERE connector = $1 FOR UPDATE), \
                  moved AS (UPDATE connector_health h \
                            SET next_probe_at = $2 + h.probe_interval_ms, updated_at = $2 \
                            FROM cur WHERE h.connector = $1 AND cur.open \
                                AND cur.next_probe_at <= $2 \
                            RETURNING 1) \
             SELECT CASE WHEN NOT EXISTS (SELECT 1 FROM cur WHERE open) THEN TRUE \
                         ELSE EXISTS (SELECT 1 FROM moved) END",
        )
        .bind(connector)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        Ok(won.unwrap_or(true))
    }

    async fn take_tokens(
        &self,
        connector: &str,
        want: usize,
        rate: f64,
        now: Millis,
    ) -> StoreResult<usize> {
        if want == 0 || rate.is_nan() || rate <= 0.0 {
            return Ok(0);
        }
        let burst = rate.max(1.0);
        sqlx::query(
            "INSERT INTO connector_tokens (connector, tokens, refreshed_at) VALUES ($1, $2, $3) \
             ON CONFLICT (connector) DO NOTHING",
        )
        .bind(connector)
        .bind(burst)
        .bind(now)
        .execute(&self.pool)
        .await?;
        let granted: i64 = sqlx::query_scalar(
            "WITH cur AS (SELECT LEAST($3::float8, tokens + GREATEST(0, $4 - refreshed_at) \
                                 * $5::float8 / 1000.0) AS t \
                          FROM connector_tokens WHERE connector = $1 FOR UPDATE) \
             UPDATE connector_tokens c \
             SET tokens = cur.t - LEAST(floor(cur.t), $2::float8), \
                 refreshed_at = GREATEST(c.refreshed_at, $4) \
             FROM cur WHERE c.connector = $1 \
             RETURNING LEAST(floor(cur.t), $2::float8)::int8",
        )
        .bind(connector)
        .bind(want as f64)
        .bind(burst)
        .bind(now)
        .bind(rate)
        .fetch_one(&self.pool)
        .await?;
        Ok(granted.max(0) as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::super::CompletionKind;
    use super::*;

    fn test_options() -> PgConnectOptions {
        let url = std::env::var("SWITCHBOARD_TEST_PG")
            .or_else(|_| std::env::var("DATABASE_URL"))
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        PgConnectOptions::from_str(&url)
            .unwrap()
            .options([("lock_timeout", "200ms")])
    }

    /// An advisory lock held by a connection of its own, so that a `BEGIN`
    /// which takes it waits, then fails on the 200 ms lock timeout.
    async fn hold_a_lock(opts: &PgConnectOptions) -> (PgConnection, i64) {
        let mut holder = PgConnection::connect_with(opts)
            .await
            .expect("the test database (SWITCHBOARD_TEST_PG) is reachable");
        let held = lock_id("test", "held", &rand::random::<u64>().to_string());
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(held)
            .execute(&mut holder)
            .await
            .unwrap();
        (holder, held)
    }

    /// A `BEGIN` whose lock fails leaves an aborted transaction on its
    /// connection, and one given up while it waits leaves the wait going:
    /// nothing would clear either, so that connection must not be used
    /// again (back in the pool, or kept by a worker), or every later
    /// transaction on it fails or hangs. `run` runs `SELECT 7` in a
    /// transaction begun as it is given.
    async fn a_failed_or_abandoned_begin_leaves_nothing_stuck(
        mut run: impl AsyncFnMut(Begin) -> StoreResult<i32>,
        mut holder: PgConnection,
        held: i64,
    ) {
        let locks = || Begin::locking(vec![held, held.wrapping_add(1)]);
        let e = run(locks()).await.unwrap_err().to_string();
        assert!(e.contains("lock timeout"), "{e}");
        // The connection serves the next transaction.
        assert_eq!(run(Begin::PLAIN).await.unwrap(), 7);
        assert_eq!(run(Begin::Autocommit).await.unwrap(), 7);
        // A caller that gives up while its `BEGIN` waits for the lock
        // leaves no connection stuck in that wait behind either.
        let gave_up = tokio::time::timeout(Duration::from_millis(50), run(locks())).await;
        assert!(gave_up.is_err(), "the lock was free: {gave_up:?}");
        let next = tokio::time::timeout(Duration::from_secs(5), run(Begin::PLAIN)).await;
        assert_eq!(next.expect("the connection is stuck").unwrap(), 7);
        // Once the lock is free, the same `BEGIN` takes it.
        sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(held)
            .execute(&mut holder)
            .await
            .unwrap();
        assert_eq!(run(locks()).await.unwrap(), 7);
    }

    #[tokio::test]
    async fn a_begin_that_fails_or_is_given_up_gives_the_pool_no_stuck_connection() {
        let opts = test_options();
        let (holder, held) = hold_a_lock(&opts).await;
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(opts)
            .await
            .unwrap();
        let run = async |begin: Begin| -> StoreResult<i32> {
            transaction!(Opening::pooled(&pool), begin, |conn| async {
                Ok::<i32, Fail>(sqlx::query_scalar("SELECT 7").fetch_one(&mut *conn).await?)
            })
        };
        a_failed_or_abandoned_begin_leaves_nothing_stuck(run, holder, held).await;
    }

    #[tokio::test]
    async fn a_begin_that_fails_or_is_given_up_leaves_a_worker_no_stuck_connection() {
        let opts = test_options();
        let (holder, held) = hold_a_lock(&opts).await;
        let mut direct = Direct::with(Arc::new(opts));
        let run = async |begin: Begin| -> StoreResult<i32> {
            transaction!(Opening::direct(&mut direct), begin, |conn| async {
                Ok::<i32, Fail>(sqlx::query_scalar("SELECT 7").fetch_one(&mut *conn).await?)
            })
        };
        a_failed_or_abandoned_begin_leaves_nothing_stuck(run, holder, held).await;
    }

    /// A worker's own connection: a transaction that fails on the gateway's
    /// side lets its locks go at once (not with the worker's next group;
    /// one the server fails has let them go already), and a connection the
    /// server ended is replaced, before use once it has sat idle, else when
    /// the attempt's first message finds it gone (the attempt then runs
    /// again at once: nothing of it can have committed).
    #[tokio::test]
    async fn a_workers_connection_lets_its_locks_go_and_is_replaced_when_it_dies() {
        let opts = test_options();
        let mut other = PgConnection::connect_with(&opts)
            .await
            .expect("the test database (SWITCHBOARD_TEST_PG) is reachable");
        let mut direct = Direct::with(Arc::new(opts));
        let lock = lock_id("test", "direct", &rand::random::<u64>().to_string());
        let failed: StoreResult<()> = transaction!(
            Opening::direct(&mut direct),
            Begin::locking(vec![lock]),
            |conn| async {
                // Failing on this side, as a row that does not decode would:
                // the server's transaction is still open, holding the lock.
                sqlx::query("SELECT 1").execute(&mut *conn).await?;
                Err::<(), Fail>(Fail::Store(StoreError::Corrupt(
                    "a row that does not decode".into(),
                )))
            }
        );
        assert!(failed.is_err());
        let free: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(lock)
            .fetch_one(&mut other)
            .await
            .unwrap();
        assert!(free, "the failed transaction still holds its lock");

        let pid = async |direct: &mut Direct| -> StoreResult<i32> {
            transaction!(Opening::direct(direct), Begin::Autocommit, |conn| async {
                Ok::<i32, Fail>(
                    sqlx::query_scalar("SELECT pg_backend_pid()")
                        .fetch_one(&mut *conn)
                        .await?,
                )
            })
        };
        let end = async |other: &mut PgConnection, pid: i32| {
            sqlx::query("SELECT pg_terminate_backend($1)")
                .bind(pid)
                .execute(other)
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        // Ended, then used at once (before the idle check would catch it):
        // the statement, or the `BEGIN` of a transaction, finds it gone and
        // runs again at once on a new connection.
        let first = pid(&mut direct).await.unwrap();
        end(&mut other, first).await;
        let second = pid(&mut direct).await.unwrap();
        assert_ne!(second, first);
        end(&mut other, second).await;
        let in_tx: StoreResult<i32> =
            transaction!(Opening::direct(&mut direct), Begin::PLAIN, |conn| async {
                Ok::<i32, Fail>(
                    sqlx::query_scalar("SELECT pg_backend_pid()")
                        .fetch_one(&mut *conn)
                        .await?,
                )
            });
        let renewed = in_tx.unwrap();
        assert_ne!(renewed, second);
        let second = renewed;
        // Ended, then used after sitting idle: checked first, replaced, and
        // the transaction runs.
        end(&mut other, second).await;
        tokio::time::sleep(DIRECT_IDLE_CHECK + Duration::from_millis(100)).await;
        let third = pid(&mut direct).await.unwrap();
        assert_ne!(third, second);
        // Given up in the middle of a statement (a claim whose loop stops):
        // the connection is closed, the next statement runs on a new one.
        let gave_up = tokio::time::timeout(Duration::from_millis(50), async {
            transaction!(
                Opening::direct(&mut direct),
                Begin::Autocommit,
                |conn| async {
                    Ok::<(), Fail>(
                        sqlx::query("SELECT pg_sleep(1)")
                            .execute(&mut *conn)
                            .await
                            .map(drop)?,
                    )
                }
            )
        })
        .await;
        assert!(gave_up.is_err(), "the statement finished: {gave_up:?}");
        let fourth = pid(&mut direct).await.unwrap();
        assert_ne!(fourth, third);
    }

    #[tokio::test]
    async fn an_unreachable_server_is_named_with_the_reason_after_waiting_for_it() {
        use std::str::FromStr;
        // Port 1 on loopback: nothing listens there.
        let opts =
            super::PgConnectOptions::from_str("postgres://switchboard:s3cret@127.0.0.1:1/queue")
                .unwrap();
        let started = std::time::Instant::now();
        let e = super::connect_once(&opts, std::time::Duration::from_millis(300))
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("127.0.0.1:1"), "{e}");
        assert!(e.contains("\"queue\""), "{e}");
        assert!(e.to_lowercase().contains("refused"), "{e}");
        assert!(!e.contains("s3cret"), "the password leaked: {e}");
        // Refused is transient (a server still starting): it was tried again.
        assert!(started.elapsed() >= std::time::Duration::from_millis(150));
    }

    /// Deliveries claimed for a loop that stopped while its group ran go
    /// back to the queue as retries due at once; the connector's loop
    /// started since (which may have claimed before they were back) is
    /// told to claim again once the hand-back is committed, and not before.
    #[tokio::test]
    async fn what_a_stopped_loop_cannot_receive_goes_back_and_its_successor_is_told() {
        let offers = Offers::default();
        let (gone, gone_rx) = Offer::new("hss");
        offers.leave(gone.clone());
        assert!(gone.open(4, 60_000, 0));
        let takes = Take::reserve(&offers, &HashMap::from([("hss", 1)]));
        assert_eq!(takes.len(), 1, "the open offer has room");
        drop(gone_rx);
        // Its successor waits with an offer of its own.
        let (next, mut next_rx) = Offer::new("hss");
        offers.leave(next.clone());
        assert!(next.open(4, 60_000, 0));
        let d = Claimed {
            delivery_id: 7,
            connector: "hss".into(),
            lease: 3,
            attempt: 1,
            claimed_at: 1_000,
            event: StoredEvent {
                seq: 1,
                id: "e1".into(),
                event_type: "number.assign".into(),
                keys: vec!["msisdn:2065551234".into()],
                payload: "{}".into(),
                accepted_at: 900,
            },
        };
        let (tx, mut handed_back) = mpsc::channel(4);
        let done = Ok(((), vec![Some(vec![d.clone()])]));
        let ((), given) = serve_takes(takes, done, &tx, &offers, 2_000).unwrap();
        assert_eq!(given.offered, ["hss"], "the group served the offer");
        let (items, _, reply, _) = handed_back.recv().await.expect("handed back");
        let expected = CompletionKind::Retry {
            at: 2_000,
            error: "claimed for a dispatcher that had stopped: handed back".into(),
        };
        assert_eq!(items, [Completion::of(&d, expected)]);
        tokio::task::yield_now().await;
        assert!(
            next_rx.try_recv().is_err(),
            "told before the hand-back committed"
        );
        reply.send(Ok(Settled::default())).unwrap();
        let told = tokio::time::timeout(Duration::from_secs(5), next_rx.recv())
            .await
            .expect("the successor is told")
            .unwrap();
        assert!(told.claimed.is_empty() && told.exhausted, "{told:?}");
        assert_eq!(next.in_transit(), 0, "nothing reserved in its offer");
    }
}
