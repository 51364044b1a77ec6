//! The storage boundary. Everything durable — events, deliveries, lanes —
//! goes through [`Store`], so the SQLite default and the PostgreSQL backend
//! satisfy one contract and one test suite.
//!
//! Contract (see also `queue` for the lane invariants):
//! - [`Store::ingest`] stores a request whole or not at all and returns only
//!   once the commit is durable;
//! - [`Store::claim`] hands out only `ready` deliveries whose
//!   `next_attempt_at <= now`, each under a fresh lease token;
//! - [`Store::complete`] applies an outcome only while the caller's lease is
//!   still the current one (a rescued lease makes a late completion a no-op),
//!   and releases lanes in the same transaction;
//! - every method takes `now`, so tests drive time.

pub mod catalog;
mod group;
mod lite;
mod migrations;
pub mod offer;
pub mod postgres;
mod recent_lanes;
pub mod retention;
pub mod sqlite;
mod table_lanes;

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use serde::Serialize;

pub use self::catalog::{
    AttemptRecord, BreakerTransition, Catalog, MinuteCount, NewReplay, NodeRecord, Replay,
};
pub use self::offer::{Offer, Served};
pub use self::retention::{Purge, Purged};
pub use crate::queue::breaker::SharedHealth;
pub use crate::queue::lanes::Routed;
use crate::queue::lanes::Step;
use crate::queue::{DeliveryState, Millis, OnDead};

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct IngestCounts {
    pub accepted: u64,
    pub duplicates: u64,
    pub unrouted: u64,
    /// Deliveries this request's full-state events superseded, per
    /// connector (coalescing, SPEC §3), stored ones and its own.
    #[serde(skip)]
    pub superseded: BTreeMap<String, u64>,
    /// Connectors whose loop had an offer open when this request committed
    /// ([`Store::offer`]): the store claimed for them, in the same
    /// transaction, whatever the request made ready, so they need no wake.
    #[serde(skip)]
    pub offered: Vec<String>,
}

impl IngestCounts {
    /// Whether `connector`'s loop must be woken to claim what this request
    /// made ready (see [`IngestCounts::offered`]).
    pub fn needs_wake(&self, connector: &str) -> bool {
        self.accepted > 0 && !self.offered.iter().any(|c| c == connector)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IngestOutcome {
    Accepted(IngestCounts),
    /// The event at `index` reuses an accepted id with another body; nothing
    /// of the request was stored.
    Conflict {
        index: usize,
        id: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub seq: i64,
    pub id: String,
    pub event_type: String,
    pub keys: Vec<String>,
    pub payload: String,
    pub accepted_at: Millis,
}

/// A delivery handed to a dispatcher under a lease.
#[derive(Debug, Clone, PartialEq)]
pub struct Claimed {
    pub delivery_id: i64,
    pub connector: String,
    pub lease: i64,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// When the claim took it: the attempt's start in the attempt log.
    pub claimed_at: Millis,
    pub event: StoredEvent,
}

#[derive(Debug, Clone, PartialEq)]
pub enum CompletionKind {
    Delivered,
    Retry { at: Millis, error: String },
    Dead { error: String, on_dead: OnDead },
}

impl CompletionKind {
    /// The lane step this outcome is (`queue::lanes`).
    pub fn step(&self) -> Step {
        match self {
            CompletionKind::Delivered => Step::Delivered,
            CompletionKind::Retry { .. } => Step::Retry,
            CompletionKind::Dead { on_dead, .. } => Step::Dead(*on_dead),
        }
    }

    /// When it runs again (a retry) and the error it records.
    pub(crate) fn next_at_and_error(&self) -> (Option<Millis>, Option<&str>) {
        match self {
            CompletionKind::Delivered => (None, None),
            CompletionKind::Retry { at, error } => (Some(*at), Some(error)),
            CompletionKind::Dead { error, .. } => (None, Some(error)),
        }
    }
}

/// What [`Store::settle`] did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Settled {
    /// Per completion, in order: `false` where the lease was no longer
    /// current (nothing of it applied).
    pub applied: Vec<bool>,
    /// The connectors with a delivery that became ready when a lane these
    /// completions released moved on to it, sorted, each once. A store that
    /// commits several callers' completions together names those of the
    /// whole transaction: more than a caller's own, never fewer. A
    /// connector whose loop had an offer open is left out: the store claimed
    /// for it in that transaction ([`Store::offer`]). A connector's loop that
    /// finds its own name here claims again; one that does not knows that
    /// the outcome left nothing new for it to claim.
    pub readied: Vec<String>,
}

impl Settled {
    /// Whether `connector` has a delivery these completions made ready.
    pub fn readied(&self, connector: &str) -> bool {
        self.readied
            .binary_search_by(|c| c.as_str().cmp(connector))
            .is_ok()
    }
}

/// The result of one attempt, applied if `lease` is still current.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    pub delivery_id: i64,
    pub lease: i64,
    pub connector: String,
    pub seq: i64,
    pub keys: Vec<String>,
    /// Which attempt this is and when it started, for the attempt log.
    pub attempt: u32,
    pub started_at: Millis,
    pub kind: CompletionKind,
}

impl Completion {
    pub fn of(claimed: &Claimed, kind: CompletionKind) -> Self {
        Self {
            delivery_id: claimed.delivery_id,
            lease: claimed.lease,
            connector: claimed.connector.clone(),
            seq: claimed.event.seq,
            keys: claimed.event.keys.clone(),
            attempt: claimed.attempt,
            started_at: claimed.claimed_at,
            kind,
        }
    }

    /// A delivery a store claimed for a loop that was gone by the time it
    /// was sent, handed back to the queue (ready again, due at `at`).
    pub(crate) fn handed_back(claimed: &Claimed, at: Millis) -> Self {
        let error = "claimed for a dispatcher that had stopped: handed back".to_string();
        Self::of(claimed, CompletionKind::Retry { at, error })
    }
}

/// The attempt log's name for how an attempt ended.
pub(crate) fn outcome_name(step: Step) -> &'static str {
    match step {
        Step::Delivered => "delivered",
        Step::Dead(_) => "dead",
        Step::LeaseExpired => "lease_expired",
        Step::Retry => "retry",
        // Not how an attempt ends: never logged as one. A new step that is
        // must be named here, and in the `attempts.outcome` CHECK.
        Step::Expired | Step::Skipped | Step::OperatorRetry | Step::Superseded => "retry",
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperatorAction {
    Retry,
    Skip,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeliveryView {
    pub id: i64,
    pub connector: String,
    pub state: DeliveryState,
    pub attempts: u32,
    pub last_error: Option<String>,
    /// When the next attempt may start (for `ready`/`blocked` deliveries).
    pub next_attempt_at: Option<Millis>,
    pub updated_at: Millis,
    /// The node running it now (for `in_flight` deliveries).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_owner: Option<String>,
    /// When it expires unless started (its route's `expire_after`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Millis>,
    /// The id of the newer full-state event that superseded it (for
    /// `superseded` deliveries; coalescing, SPEC §3).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub superseded_by: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventView {
    pub seq: i64,
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub keys: Vec<String>,
    pub payload: serde_json::Value,
    pub accepted_at: Millis,
    pub deliveries: Vec<DeliveryView>,
    /// For a replay's copy: the replay, and the original event's id (while
    /// it is stored).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replay: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub original: Option<String>,
}

/// Which component versions a deploy keeps ([`Catalog::add_component`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention<'a> {
    /// The newest this many are kept; 0 keeps every version.
    pub keep: u32,
    /// A version with these bytes is kept whatever its age (the connector's
    /// configured component file).
    pub except_digest: Option<&'a str>,
}

impl Retention<'_> {
    /// Every version is kept.
    pub const ALL: Retention<'static> = Retention {
        keep: 0,
        except_digest: None,
    };

    /// The newest `keep`.
    pub fn newest(keep: u32) -> Retention<'static> {
        Retention {
            keep,
            except_digest: None,
        }
    }
}

/// One stored version of a connector's component.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ComponentVersion {
    pub connector: String,
    pub version: i64,
    pub digest: String,
    /// The component's own `describe()` answer, as JSON.
    pub info: serde_json::Value,
    pub uploaded_at: Millis,
    pub active: bool,
    pub size_bytes: i64,
}

/// One operator action, recorded in the same transaction as the action.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditRecord {
    pub id: i64,
    pub at: Millis,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub before: Option<serde_json::Value>,
    pub after: Option<serde_json::Value>,
}

/// Which dead letters to list.
#[derive(Debug, Clone, Default)]
pub struct DeadFilter {
    pub connector: Option<String>,
    pub event_type: Option<String>,
    pub key: Option<String>,
    /// Only dead letters whose last error contains this text.
    pub reason: Option<String>,
    /// Only dead letters that died at or after this time.
    pub since: Option<Millis>,
    pub until: Option<Millis>,
    /// Page: only delivery ids below this one (newest first).
    pub before_id: Option<i64>,
    pub limit: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeadLetter {
    pub delivery_id: i64,
    pub connector: String,
    pub event_id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub keys: Vec<String>,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub died_at: Millis,
}

/// "Why is this key blocked": one connector's lane for a key.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LaneView {
    pub connector: String,
    pub key: String,
    /// The delivery at the head of the lane, with its event id.
    pub head: Option<(String, DeliveryView)>,
    /// Deliveries waiting behind the head.
    pub waiting: u64,
    /// The first of them (at most [`LANE_BEHIND`]), in the order they will
    /// run, each with its event id.
    pub behind: Vec<(String, DeliveryView)>,
}

/// How many of the deliveries behind a lane's head a lane view lists.
pub const LANE_BEHIND: usize = 10;

/// What is waiting for one connector, from the maintained counts (cheap
/// enough for every metrics scrape).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct QueueStats {
    pub ready: u64,
    pub blocked: u64,
    pub in_flight: u64,
    pub dead: u64,
    /// When the oldest unfinished delivery was created.
    pub oldest_pending_at: Option<Millis>,
}

/// Run-time overrides of a connector's limits; `None` means as configured.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitOverrides {
    pub concurrency: Option<u32>,
    pub rate: Option<f64>,
}

/// Deliveries of one connector by state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct StateCounts {
    pub blocked: u64,
    pub ready: u64,
    pub in_flight: u64,
    pub delivered: u64,
    pub dead: u64,
    pub superseded: u64,
    pub skipped: u64,
    pub expired: u64,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The store cannot commit right now (disk full, locked, gone); the
    /// request may be retried and nothing of it was stored.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("store migration failed: {0}")]
    Migration(String),
    #[error("invalid storage url {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// The store refused a statement for a reason retrying cannot fix: a
    /// constraint the code should have upheld, a malformed statement. A bug,
    /// answered 500 and logged, never passed off as a passing outage.
    #[error("store refused the statement: {0}")]
    Internal(String),
    /// Another running gateway holds what this one must hold alone: the
    /// SQLite database, or this node's name among the nodes sharing a
    /// PostgreSQL database.
    #[error("{0}")]
    InUse(String),
}

impl From<sqlx::Error> for StoreError {
    /// Unavailable only where waiting can help (connection, I/O, disk full,
    /// locks, resources, shutdown); undecodable rows are corrupt; the rest
    /// (constraint violations, syntax, a missing row the code expected) is
    /// internal.
    fn from(e: sqlx::Error) -> Self {
        use sqlx::Error as E;
        let text = e.to_string();
        match &e {
            E::Io(_)
            | E::Tls(_)
            | E::Protocol(_)
            | E::PoolTimedOut
            | E::PoolClosed
            | E::WorkerCrashed => StoreError::Unavailable(text),
            E::Database(db) => {
                let postgres = db
                    .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                    .is_some();
                if transient_database_error(postgres, db.code().as_deref()) {
                    StoreError::Unavailable(text)
                } else {
                    StoreError::Internal(text)
                }
            }
            E::Decode(_) | E::ColumnDecode { .. } => StoreError::Corrupt(text),
            _ => StoreError::Internal(text),
        }
    }
}

/// Whether a database error code says "not now" rather than "never":
/// PostgreSQL SQLSTATE classes 08 (connection), 40 (serialization, deadlock),
/// 53 (insufficient resources: disk full, out of memory), 57 (operator
/// intervention: shutdown, cannot connect now) and 58 (system, I/O);
/// SQLite's primary codes BUSY, LOCKED, NOMEM, READONLY, IOERR, FULL,
/// CANTOPEN and PROTOCOL (sqlx gives the extended code, whose low byte is
/// the primary one).
fn transient_database_error(postgres: bool, code: Option<&str>) -> bool {
    let Some(code) = code else { return false };
    if postgres {
        return matches!(code.get(..2), Some("08" | "40" | "53" | "57" | "58"));
    }
    code.parse::<u32>()
        .is_ok_and(|sqlite| matches!(sqlite & 0xff, 5 | 6 | 7 | 8 | 10 | 13 | 14 | 15))
}

pub type StoreResult<T> = Result<T, StoreError>;

/// `last_error` of a delivery whose lease ran out.
pub const LEASE_EXPIRED_REASON: &str = LEASE_EXPIRED;
pub(crate) const LEASE_EXPIRED: &str =
    "lease expired: the attempt did not finish (gateway stopped or attempt hung)";
/// `last_error` of a delivery taken back at start-up from this node's
/// previous run ([`Store::reclaim`]).
pub(crate) const RECLAIMED: &str =
    "reclaimed at start-up: the gateway stopped while the attempt ran";
/// `last_error` of a delivery taken from a node whose heartbeat stopped
/// ([`Cluster::take_over`]).
pub(crate) const TAKEN_OVER: &str =
    "taken over: the node running the attempt stopped sending heartbeats";
/// `last_error` of a delivery that expired.
pub(crate) const EXPIRED: &str = "expired: not started within its route's expire_after";

/// The queue engine of one backend: the operations each backend implements
/// natively, because they move deliveries through their lanes (the rules
/// are `queue::lanes`; a store only stores). Beside it, every store has a
/// [`Catalog`] (written once) and, where nodes share it, a [`Cluster`].
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Stores events and their deliveries atomically; durable on return.
    async fn ingest(&self, events: Vec<Routed>, now: Millis) -> StoreResult<IngestOutcome>;

    /// Claims up to `limit` runnable deliveries of `connector`, oldest first.
    async fn claim(
        &self,
        connector: &str,
        limit: usize,
        now: Millis,
        lease_ms: i64,
    ) -> StoreResult<Vec<Claimed>>;

    /// When a claim of `connector` would next take something, as
    /// [`Catalog::next_due`]: a loop whose claim got fewer than it asked
    /// for sleeps until then. A store may answer from what its last claim
    /// of `connector` found, read in that claim's transaction or statement
    /// (both stores do: no read of its own); whatever makes a delivery
    /// ready since wakes the loop anyway.
    async fn next_due(&self, connector: &str, now: Millis) -> StoreResult<Option<Millis>> {
        match self.last_due().and_then(|known| known.take(connector)) {
            Some(due) => Ok(due),
            None => self.catalog().next_due(connector, now).await,
        }
    }

    /// Where the store keeps what its claims found for [`Store::next_due`],
    /// if it keeps it (both stores do).
    fn last_due(&self) -> Option<&LastDue> {
        None
    }

    /// Drops what the last claim of `connector` found for [`Store::next_due`]:
    /// a loop that sleeps for another reason (its breaker's probe, its rate)
    /// does not look, and a finding must answer only the look that follows
    /// its claim, never a later one.
    fn forget_due(&self, connector: &str) {
        if let Some(known) = self.last_due() {
            known.take(connector);
        }
    }

    /// Leaves a loop's standing claim with the store: while the loop keeps
    /// it open, the store claims for its connector inside each transaction
    /// that may make one of its deliveries ready (PostgreSQL: its ingests
    /// and outcomes; see [`offer`] for which wake instead), and sends what it claimed
    /// once that transaction is durable (see [`offer`]). One per connector;
    /// a new one replaces the last. `false` when the store takes none (the
    /// loop then waits to be woken and claims itself).
    fn offer(&self, offer: std::sync::Arc<Offer>) -> bool {
        let _ = offer;
        false
    }

    /// Applies outcomes, and says which connectors' lanes they released
    /// onto a delivery that is ready now (see [`Settled`]).
    async fn settle(&self, items: Vec<Completion>, now: Millis) -> StoreResult<Settled>;

    /// [`Store::settle`], for callers that need only whether each applied:
    /// `false` where the lease was no longer current.
    async fn complete(&self, items: Vec<Completion>, now: Millis) -> StoreResult<Vec<bool>> {
        Ok(self.settle(items, now).await?.applied)
    }

    /// Re-queues deliveries whose lease expired (a crashed or hung attempt).
    async fn rescue_expired(&self, now: Millis) -> StoreResult<u64>;

    /// At start-up, before the first claim: re-queues at once, rather than
    /// when their leases end, the deliveries this node's previous run left
    /// in flight (a crash, `kill -9`, a power cut). SQLite: every in-flight
    /// delivery, since the caller holds the database alone
    /// ([`sqlite::SqliteStore::lock`]); PostgreSQL: those whose lease names
    /// this node, whose name the caller holds alone
    /// ([`Cluster::hold_name`]).
    async fn reclaim(&self, now: Millis) -> StoreResult<u64>;

    /// Ends up to `limit` blocked or ready deliveries whose route's
    /// `expire_after` has passed as `expired` (final, keys released).
    /// Returns how many per connector.
    async fn expire_due(&self, now: Millis, limit: usize) -> StoreResult<Vec<(String, u64)>>;

    /// An operator's retry (back to the queue in the same lane position) or
    /// skip (final, keys released) of a dead delivery, with its audit record
    /// in the same transaction. `false` if it is not dead.
    async fn operator_action(
        &self,
        delivery_id: i64,
        action: OperatorAction,
        actor: &str,
        now: Millis,
    ) -> StoreResult<bool>;

    /// The lane of `key` in each of `connectors`.
    async fn lanes(&self, key: &str, connectors: &[String]) -> StoreResult<Vec<LaneView>>;

    /// Reduces up to `limit` of the oldest finished events (deliveries all
    /// final, or none) accepted before `purge.compact_before` to their id,
    /// or deletes them whole when accepted before its `forget_before`,
    /// and forgets up to `limit` ids past `forget_before` (see
    /// [`retention`]). Events with a delivery still pending or dead are
    /// never touched.
    async fn purge_finished(&self, purge: Purge, limit: usize) -> StoreResult<Purged>;

    /// Connector configs, controls and versions, the audit log, and the
    /// queue's read-only views.
    fn catalog(&self) -> &Catalog;

    /// Coordination between the nodes sharing this store; `None` for a
    /// store one node owns alone (SQLite), where each node decides alone.
    fn cluster(&self) -> Option<&dyn Cluster> {
        None
    }
}

/// Cluster-wide breaker and rate, for nodes sharing one store.
#[async_trait]
pub trait Cluster: Send + Sync {
    /// Takes (or, after a lost connection, takes again) this node's name
    /// for as long as the process lives, so that no two running gateways
    /// act under one name; waits up to `patience` for a previous run's
    /// session to end. [`StoreError::InUse`] when another one holds it.
    async fn hold_name(&self, patience: std::time::Duration) -> StoreResult<()>;

    /// Turns on announcements through the database (new work, breaker
    /// changes) from this node, and returns those of every node as they
    /// come; the receiver ends if the listening connection fails for good.
    /// Announcements are a shortcut: a node that misses one finds the work
    /// by polling.
    async fn listen(&self) -> StoreResult<tokio::sync::mpsc::Receiver<Announcement>>;

    /// Re-queues the in-flight deliveries of other nodes whose heartbeat
    /// is older than `silent_ms` by the database's clock: their work moves
    /// on without waiting for their leases to end.
    async fn take_over(&self, now: Millis, silent_ms: i64) -> StoreResult<u64>;

    /// The cluster's view of a connector's breaker; `None` while nobody has
    /// published one.
    async fn shared_health(&self, connector: &str) -> StoreResult<Option<SharedHealth>>;

    /// Tells the other nodes that `connector` may have work ready now,
    /// which nothing in the queue announced: an operator resumed it. (What
    /// the store does itself, it announces itself.)
    fn announce_work(&self, connector: &str);

    /// Publishes this node's view of a connector's breaker to the cluster.
    async fn publish_health(
        &self,
        connector: &str,
        health: SharedHealth,
        now: Millis,
    ) -> StoreResult<()>;

    /// Asks for the connector's next probe: `true` for exactly one node per
    /// probe interval while the shared breaker is open (and always when it
    /// is closed). Winning moves the shared schedule on by one interval.
    async fn take_probe(&self, connector: &str, now: Millis) -> StoreResult<bool>;

    /// Takes up to `want` tokens from the connector's cluster-wide bucket
    /// (`rate` per second, bursts of one second's worth).
    async fn take_tokens(
        &self,
        connector: &str,
        want: usize,
        rate: f64,
        now: Millis,
    ) -> StoreResult<usize>;
}

/// What a node tells the others through the database ([`Cluster::listen`]).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Announcement {
    /// The connector has new deliveries, or a released lane may have made
    /// its next one ready.
    Work(String),
    /// The connector's shared breaker changed.
    Health(String),
}

/// Opens the store a URL names (`sqlite://…` or `postgres://…`), applying
/// migrations; its leases name this process ([`default_node`]).
pub async fn open(url: &str) -> StoreResult<std::sync::Arc<dyn Store>> {
    open_waiting(url, &default_node(), None).await
}

/// This host's name and process id: who holds a lease, for operators.
pub fn default_node() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!("{host}:{}", std::process::id())
}

/// [`open`], with the name its leases carry (`node`, e.g. `host:port`) and
/// how long a small group of posts waits for more
/// (`storage.group_commit_wait_us`; `None`: the backend's default, see
/// `group`).
pub async fn open_waiting(
    url: &str,
    node: &str,
    wait: Option<std::time::Duration>,
) -> StoreResult<std::sync::Arc<dyn Store>> {
    Ok(match is_sqlite(url)? {
        true => {
            let flush = sqlite::LaneFlush::default();
            std::sync::Arc::new(sqlite::SqliteStore::open_tuned(url, node, flush, wait).await?)
        }
        false => std::sync::Arc::new(postgres::PostgresStore::open_waiting(url, node, wait).await?),
    })
}

/// Applies the migrations of the store a URL names and reports the versions
/// now applied (`switchboard migrate`).
pub async fn migrate(url: &str) -> StoreResult<Vec<i64>> {
    match is_sqlite(url)? {
        true => sqlite::SqliteStore::migrate(url).await,
        false => postgres::PostgresStore::migrate(url).await,
    }
}

/// Whether a store URL names SQLite (else PostgreSQL), or why it names
/// neither.
fn is_sqlite(url: &str) -> StoreResult<bool> {
    if url.starts_with("sqlite:") {
        Ok(true)
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        Ok(false)
    } else {
        Err(invalid_url(url, "expected a sqlite:// or postgres:// URL"))
    }
}

pub(crate) fn invalid_url(url: &str, reason: impl ToString) -> StoreError {
    StoreError::InvalidUrl {
        url: url.to_string(),
        reason: reason.to_string(),
    }
}

// ---- Pieces both backends share: pure, so they are written (and tested) once.

/// A delivery row as both backends select it: id, connector, state, attempts,
/// last_error, next_attempt_at, updated_at, lease_owner, expires_at; then a
/// column of the caller's (a lane head's event id, a superseding event).
pub(crate) type DeliveryRow<T> = (
    i64,
    String,
    String,
    i64,
    Option<String>,
    i64,
    i64,
    Option<String>,
    Option<i64>,
    T,
);

/// The view of a delivery row, and its last column.
pub(crate) fn delivery_view<T>(row: DeliveryRow<T>) -> StoreResult<(DeliveryView, T)> {
    let (id, connector, state, attempts, last_error, next, updated_at, lease_owner, expires_at, t) =
        row;
    let state = state_of(&state)?;
    let view = DeliveryView {
        id,
        connector,
        state,
        attempts: attempts as u32,
        last_error,
        next_attempt_at: matches!(state, DeliveryState::Ready | DeliveryState::Blocked)
            .then_some(next),
        updated_at,
        lease_owner: lease_owner.filter(|_| state == DeliveryState::InFlight),
        expires_at,
        superseded_by: None,
    };
    Ok((view, t))
}

/// An event row: seq, id, type, keys (JSON), payload, accepted_at.
pub(crate) type EventRow = (i64, String, String, String, String, i64);

pub(crate) fn stored_event(row: EventRow) -> StoreResult<StoredEvent> {
    let (seq, id, event_type, keys, payload, accepted_at) = row;
    Ok(StoredEvent {
        seq,
        id,
        event_type,
        keys: parse_keys(&keys)?,
        payload,
        accepted_at,
    })
}

pub(crate) fn parse_keys(json: &str) -> StoreResult<Vec<String>> {
    serde_json::from_str(json).map_err(|e| StoreError::Corrupt(format!("stored keys: {e}")))
}

pub(crate) fn parse_json(text: Option<String>) -> StoreResult<Option<serde_json::Value>> {
    text.map(|t| serde_json::from_str(&t).map_err(|e| StoreError::Corrupt(e.to_string())))
        .transpose()
}

/// A lane head row: the delivery's columns, then its event id.
pub(crate) type LaneHeadRow = DeliveryRow<String>;

/// The view of a lane with `entries` entries whose first ones are `first`
/// (in lane order, the head first, at most [`LANE_BEHIND`] + 1).
pub(crate) fn lane_view_of(
    connector: &str,
    key: &str,
    first: Vec<LaneHeadRow>,
    entries: i64,
) -> StoreResult<LaneView> {
    let mut first = first
        .into_iter()
        .map(|row| delivery_view(row).map(|(d, event_id)| (event_id, d)))
        .collect::<StoreResult<Vec<_>>>()?
        .into_iter();
    Ok(LaneView {
        connector: connector.to_string(),
        key: key.to_string(),
        head: first.next(),
        waiting: entries.saturating_sub(1).max(0) as u64,
        behind: first.collect(),
    })
}

/// A stored state, or `Corrupt`.
pub(crate) fn state_of(state: &str) -> StoreResult<DeliveryState> {
    DeliveryState::parse(state)
        .ok_or_else(|| StoreError::Corrupt(format!("unknown delivery state {state:?}")))
}

/// Decides each ingest request against the ids already stored (`known`: id →
/// digest): duplicates are counted, a reused id with another body makes its
/// whole request a conflict, and the rest are fresh. Returns one outcome per
/// request and the fresh events in order; `known` learns the fresh ids.
pub(crate) fn classify<'a, R: AsRef<[Routed]>>(
    requests: &'a [R],
    known: &mut HashMap<String, Vec<u8>>,
) -> (Vec<IngestOutcome>, Vec<&'a Routed>) {
    let mut outcomes = Vec::with_capacity(requests.len());
    let mut fresh = Vec::new();
    for events in requests {
        let events = events.as_ref();
        let mut counts = IngestCounts::default();
        let mut mine: Vec<&Routed> = Vec::new();
        let mut conflict = None;
        for (index, r) in events.iter().enumerate() {
            match known.get(&r.event.id) {
                // `d` is a prefix of the digest once the event is reduced
                // to its id (see `retention`).
                Some(d) if r.event.digest.starts_with(d) => counts.duplicates += 1,
                Some(_) => {
                    conflict = Some(IngestOutcome::Conflict {
                        index,
                        id: r.event.id.clone(),
                    });
                    break;
                }
                None => {
                    known.insert(r.event.id.clone(), r.event.digest.to_vec());
                    mine.push(r);
                }
            }
        }
        match conflict {
            Some(c) => {
                // Nothing of this request is stored: forget its ids.
                for r in mine {
                    known.remove(&r.event.id);
                }
                outcomes.push(c);
            }
            None => {
                counts.accepted = mine.len() as u64;
                counts.unrouted = mine.iter().filter(|r| r.connectors.is_empty()).count() as u64;
                fresh.extend(mine);
                outcomes.push(IngestOutcome::Accepted(counts));
            }
        }
    }
    (outcomes, fresh)
}

/// Adds each superseded delivery to the counts of the request that posted
/// the event that superseded it: the stored ones (`stored`: connector and
/// the superseding event's `seq`), and those of the accept created
/// superseded. `seqs` are the fresh events' sequence numbers in the order
/// [`classify`] gave them, which is request order.
pub(crate) fn count_superseded(
    outcomes: &mut [IngestOutcome],
    seqs: &[i64],
    stored: &[(String, i64)],
    created: &[crate::queue::lanes::NewDelivery<'_>],
) {
    let mut owner: HashMap<i64, usize> = HashMap::with_capacity(seqs.len());
    let mut next = seqs.iter();
    for (i, o) in outcomes.iter().enumerate() {
        if let IngestOutcome::Accepted(c) = o {
            for seq in next.by_ref().take(c.accepted as usize) {
                owner.insert(*seq, i);
            }
        }
    }
    let stored = stored.iter().map(|(c, by)| (c.as_str(), *by));
    let created = created
        .iter()
        .filter_map(|d| Some((d.connector, d.superseded_by?)));
    for (connector, by) in stored.chain(created) {
        if let Some(IngestOutcome::Accepted(c)) = owner.get(&by).map(|&i| &mut outcomes[i]) {
            *c.superseded.entry(connector.to_string()).or_default() += 1;
        }
    }
}

/// The active version's number when `active` (its `{"version", "digest"}`)
/// already has `digest`: deploying the same bytes again is a no-op, which also
/// keeps nodes that start together with one configured file from each adding
/// a version.
pub(crate) fn same_digest(active: Option<&serde_json::Value>, digest: &str) -> Option<i64> {
    let active = active?;
    (active.get("digest")?.as_str()? == digest)
        .then(|| active.get("version")?.as_i64())
        .flatten()
}

/// Per connector, when its next delivery is due as its last claim that got
/// fewer than it asked for found it, in that claim's own transaction or
/// statement; taken by the next look ([`Store::next_due`]), which so costs
/// no read of its own after such a claim.
#[derive(Debug, Default)]
pub struct LastDue(std::sync::Mutex<HashMap<String, Option<Millis>>>);

impl LastDue {
    /// Records a claim's finding: `Some(due)` when it got fewer than it
    /// asked for; `None` (nothing known) when it got all or failed, so an
    /// older finding never stands in for it.
    pub(crate) fn record(&self, connector: &str, found: Option<Option<Millis>>) {
        let mut known = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match (found, known.get_mut(connector)) {
            (Some(due), Some(slot)) => *slot = due,
            (Some(due), None) => {
                known.insert(connector.to_string(), due);
            }
            (None, _) => {
                known.remove(connector);
            }
        }
    }

    /// The last claim's finding for `connector`, if it has one, forgotten.
    pub(crate) fn take(&self, connector: &str) -> Option<Option<Millis>> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(connector)
    }
}

/// The deliveries a claim took — (id, event seq, attempts) — with their
/// events, as the dispatcher gets them: in accept order.
pub(crate) fn claims_of(
    connector: &str,
    lease: i64,
    claimed_at: Millis,
    mut taken: Vec<(i64, i64, i64)>,
    events: Vec<EventRow>,
) -> StoreResult<Vec<Claimed>> {
    let mut events: HashMap<i64, StoredEvent> = events
        .into_iter()
        .map(|row| stored_event(row).map(|e| (e.seq, e)))
        .collect::<StoreResult<_>>()?;
    taken.sort_by_key(|t| t.1);
    taken
        .into_iter()
        .map(|(id, seq, attempt)| {
            let event = events.remove(&seq).ok_or_else(|| {
                StoreError::Corrupt(format!("delivery {id} refers to missing event {seq}"))
            })?;
            Ok(Claimed {
                delivery_id: id,
                connector: connector.to_string(),
                lease,
                attempt: attempt as u32,
                claimed_at,
                event,
            })
        })
        .collect()
}

/// Most rows in one multi-row statement: few statements per commit group
/// (each is a round trip to SQLite's thread), bind counts far below SQLite's
/// limit of 32,766. A power of two, see [`runs`].
pub(crate) const MAX_ROWS: usize = 256;

/// Splits `items` into runs of `MAX_ROWS`, then of falling powers of two
/// (300 rows: 256, 32, 8, 4): each kind of statement has at most nine
/// distinct texts, so all of them stay in the prepared-statement cache
/// instead of being parsed again for every odd-sized tail.
pub(crate) fn runs<T>(items: &[T]) -> impl Iterator<Item = &[T]> {
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

/// Splits a group's completions into rounds in which each delivery appears at
/// most once, keeping their order: a batch statement matches rows by
/// delivery id, so two outcomes for one delivery (an attempt abandoned at
/// shutdown after it had already reported) must be applied one after the
/// other — the second then finds the lease gone and is refused. Returns the
/// item indexes of each round.
pub(crate) fn completion_rounds(items: &[Completion]) -> Vec<Vec<usize>> {
    let mut rounds: Vec<Vec<usize>> = Vec::new();
    let mut seen: HashMap<i64, usize> = HashMap::new();
    for (i, c) in items.iter().enumerate() {
        let round = seen.entry(c.delivery_id).or_insert(0);
        if rounds.len() <= *round {
            rounds.push(Vec::new());
        }
        rounds[*round].push(i);
        *round += 1;
    }
    rounds
}

/// A settle's answers, gathered round by round ([`completion_rounds`]) and
/// put back in the order of its completions.
pub(crate) struct RoundAnswers {
    applied: Vec<bool>,
    readied: Vec<String>,
}

impl RoundAnswers {
    pub(crate) fn new(items: usize) -> Self {
        RoundAnswers {
            applied: vec![false; items],
            readied: Vec::new(),
        }
    }

    /// The completions of `round`, to apply as one batch.
    pub(crate) fn batch(items: &[Completion], round: &[usize]) -> Vec<Completion> {
        round.iter().map(|&i| items[i].clone()).collect()
    }

    /// One round's answers: whether each of its completions applied, in the
    /// round's order, and the connectors it readied a delivery of.
    pub(crate) fn add(&mut self, round: &[usize], (applied, readied): (Vec<bool>, Vec<String>)) {
        for (k, &i) in round.iter().enumerate() {
            self.applied[i] = applied.get(k).copied().unwrap_or(false);
        }
        self.readied.extend(readied);
    }

    pub(crate) fn settled(mut self) -> Settled {
        self.readied.sort_unstable();
        self.readied.dedup();
        Settled {
            applied: self.applied,
            readied: self.readied,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{runs, transient_database_error, MAX_ROWS};

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

    #[test]
    fn only_errors_that_waiting_can_fix_are_transient() {
        // SQLite BUSY, BUSY_SNAPSHOT (extended), FULL, IOERR_FSYNC;
        // PostgreSQL connection failure, deadlock, disk full, shutdown.
        for transient in ["5", "517", "13", "1034"] {
            assert!(
                transient_database_error(false, Some(transient)),
                "{transient}"
            );
        }
        for transient in ["08006", "40P01", "53100", "57P01"] {
            assert!(
                transient_database_error(true, Some(transient)),
                "{transient}"
            );
        }
        // SQLite CONSTRAINT_UNIQUE and ERROR; PostgreSQL unique_violation,
        // check_violation and syntax_error.
        for bug in ["2067", "1"] {
            assert!(!transient_database_error(false, Some(bug)), "{bug}");
        }
        for bug in ["23505", "23514", "42601"] {
            assert!(!transient_database_error(true, Some(bug)), "{bug}");
        }
        assert!(!transient_database_error(true, None));
    }
}
