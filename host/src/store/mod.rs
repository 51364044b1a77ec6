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

mod migrations;
pub mod postgres;
mod recent_lanes;
pub mod sqlite;
mod table_lanes;

use std::collections::{BTreeMap, HashMap, HashSet};

use async_trait::async_trait;
use serde::Serialize;

pub use crate::queue::breaker::SharedHealth;
use crate::queue::event::NewEvent;
use crate::queue::{DeliveryState, Millis, OnDead};

/// An event and the connectors its type routes to.
#[derive(Debug, Clone)]
pub struct Routed {
    pub event: NewEvent,
    pub connectors: Vec<String>,
    /// Connectors whose delivery expires this many milliseconds after the
    /// event is accepted if it has not started (a route's `expire_after`);
    /// the others never expire.
    pub expire_after: BTreeMap<String, Millis>,
}

impl Routed {
    /// `event` for `connectors`, none of them expiring.
    pub fn new(event: NewEvent, connectors: Vec<String>) -> Self {
        Self {
            event,
            connectors,
            expire_after: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct IngestCounts {
    pub accepted: u64,
    pub duplicates: u64,
    pub unrouted: u64,
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
    pub event: StoredEvent,
}

#[derive(Debug, Clone, PartialEq)]
pub enum CompletionKind {
    Delivered,
    Retry { at: Millis, error: String },
    Dead { error: String, on_dead: OnDead },
}

/// The result of one attempt, applied if `lease` is still current.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    pub delivery_id: i64,
    pub lease: i64,
    pub connector: String,
    pub seq: i64,
    pub keys: Vec<String>,
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
            kind,
        }
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
}

/// What is waiting for one connector, read from indexes only (cheap enough
/// for every metrics scrape).
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

    /// Applies outcomes; `false` where the lease was no longer current.
    async fn complete(&self, items: Vec<Completion>, now: Millis) -> StoreResult<Vec<bool>>;

    /// Re-queues deliveries whose lease expired (a crashed or hung attempt).
    async fn rescue_expired(&self, now: Millis) -> StoreResult<u64>;

    /// Ends up to `limit` blocked or ready deliveries whose route's
    /// `expire_after` has passed as `expired` (final, keys released).
    /// Returns how many per connector.
    async fn expire_due(&self, now: Millis, limit: usize) -> StoreResult<Vec<(String, u64)>>;

    /// The earliest `next_attempt_at` among `connector`'s ready deliveries.
    async fn next_due(&self, connector: &str) -> StoreResult<Option<Millis>>;

    async fn event(&self, id: &str) -> StoreResult<Option<EventView>>;

    /// Operator retry of a dead delivery: back to ready in the same lane
    /// position. `false` if it is not dead.
    async fn retry_dead(&self, delivery_id: i64, now: Millis) -> StoreResult<bool>;

    /// Operator skip of a dead delivery: final, its keys released.
    async fn skip_dead(&self, delivery_id: i64, now: Millis) -> StoreResult<bool>;

    /// [`Store::retry_dead`] or [`Store::skip_dead`] by `actor`, with its
    /// audit record written in the same transaction.
    async fn operator_action(
        &self,
        delivery_id: i64,
        action: OperatorAction,
        actor: &str,
        now: Millis,
    ) -> StoreResult<bool>;

    async fn dead_letters(&self, filter: &DeadFilter) -> StoreResult<Vec<DeadLetter>>;

    /// The lane of `key` in each of `connectors`.
    async fn lanes(&self, key: &str, connectors: &[String]) -> StoreResult<Vec<LaneView>>;

    /// The newest audit records, newest first.
    async fn audit_log(
        &self,
        limit: usize,
        before_id: Option<i64>,
    ) -> StoreResult<Vec<AuditRecord>>;

    /// Counts by state for one connector (an operator view: scans).
    async fn state_counts(&self, connector: &str) -> StoreResult<StateCounts>;

    /// Reachable and migrated.
    async fn ping(&self) -> StoreResult<()>;

    async fn queue_stats(&self, connector: &str) -> StoreResult<QueueStats>;

    /// Pauses or resumes a connector (no claims while paused), audited.
    /// `false` if it already was in that state.
    async fn set_paused(
        &self,
        connector: &str,
        paused: bool,
        actor: &str,
        now: Millis,
    ) -> StoreResult<bool>;

    async fn is_paused(&self, connector: &str) -> StoreResult<bool>;

    /// Overrides a connector's concurrency and rate at run time (`None`: as
    /// configured), audited.
    async fn set_limits(
        &self,
        connector: &str,
        limits: LimitOverrides,
        actor: &str,
        now: Millis,
    ) -> StoreResult<()>;

    async fn limit_overrides(&self, connector: &str) -> StoreResult<LimitOverrides>;

    /// Stores a validated component as the connector's next version and makes
    /// it active; the same bytes as the active version are that version.
    async fn add_component(
        &self,
        connector: &str,
        digest: &str,
        wasm: &[u8],
        info: &serde_json::Value,
        actor: &str,
        now: Millis,
    ) -> StoreResult<ComponentVersion>;

    /// Every stored version of `connector`'s component, newest first.
    async fn component_versions(&self, connector: &str) -> StoreResult<Vec<ComponentVersion>>;

    /// The bytes of one version.
    async fn component_wasm(&self, connector: &str, version: i64) -> StoreResult<Option<Vec<u8>>>;

    /// Makes `version` the active one. `false` if there is no such version.
    async fn activate_component(
        &self,
        connector: &str,
        version: i64,
        actor: &str,
        now: Millis,
    ) -> StoreResult<bool>;

    /// Deletes up to `limit` of the oldest events accepted before
    /// `accepted_before` whose deliveries are all final (or that had none),
    /// with their deliveries; returns how many events went. Events with a
    /// delivery still pending or dead are never deleted.
    async fn purge_finished(&self, accepted_before: Millis, limit: usize) -> StoreResult<u64>;

    /// Connector configs set through the operator API, by name: each
    /// overrides the config file's connector of that name.
    async fn connector_configs(&self) -> StoreResult<Vec<(String, serde_json::Value)>>;

    /// Creates or replaces a connector's config, audited as
    /// `connector.config` with `before`/`after` (the caller redacts secrets
    /// from those; `config` itself is stored whole).
    async fn put_connector_config(
        &self,
        connector: &str,
        config: &serde_json::Value,
        before: Option<serde_json::Value>,
        after: serde_json::Value,
        actor: &str,
        now: Millis,
    ) -> StoreResult<()>;

    // ---- Cluster-wide health and rate. A store one node owns alone (SQLite)
    // keeps the defaults: nothing to share, every node decides for itself.

    /// The cluster's view of a connector's breaker; `None` when the store is
    /// not shared or nobody has published one yet.
    async fn shared_health(&self, _connector: &str) -> StoreResult<Option<SharedHealth>> {
        Ok(None)
    }

    /// Publishes this node's view of a connector's breaker to the cluster.
    async fn publish_health(
        &self,
        _connector: &str,
        _health: SharedHealth,
        _now: Millis,
    ) -> StoreResult<()> {
        Ok(())
    }

    /// Asks for the connector's next probe: `true` for exactly one node per
    /// probe interval while the shared breaker is open (and always when it is
    /// closed or the store is not shared). Winning moves the shared schedule
    /// on by one interval.
    async fn take_probe(&self, _connector: &str, _now: Millis) -> StoreResult<bool> {
        Ok(true)
    }

    /// Takes up to `want` tokens from the connector's cluster-wide bucket
    /// (`rate` per second, bursts of one second's worth); `None` when the
    /// store is not shared and the node's own bucket applies.
    async fn take_tokens(
        &self,
        _connector: &str,
        _want: usize,
        _rate: f64,
        _now: Millis,
    ) -> StoreResult<Option<usize>> {
        Ok(None)
    }
}

/// Opens the store a URL names (`sqlite://…` or `postgres://…`), applying
/// migrations; its leases name this process ([`default_node`]).
pub async fn open(url: &str) -> StoreResult<std::sync::Arc<dyn Store>> {
    open_as(url, &default_node()).await
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

/// [`open`], with the name its leases carry (`node`), e.g. `host:port`.
pub async fn open_as(url: &str, node: &str) -> StoreResult<std::sync::Arc<dyn Store>> {
    if url.starts_with("sqlite:") {
        Ok(std::sync::Arc::new(
            sqlite::SqliteStore::open_as(url, node).await?,
        ))
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        Ok(std::sync::Arc::new(
            postgres::PostgresStore::open_as(url, node).await?,
        ))
    } else {
        Err(StoreError::InvalidUrl {
            url: url.to_string(),
            reason: "expected a sqlite:// or postgres:// URL".into(),
        })
    }
}

/// Applies the migrations of the store a URL names and reports the versions
/// now applied (`switchboard migrate`).
pub async fn migrate(url: &str) -> StoreResult<Vec<i64>> {
    if url.starts_with("sqlite:") {
        sqlite::SqliteStore::migrate(url).await
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        postgres::PostgresStore::migrate(url).await
    } else {
        Err(StoreError::InvalidUrl {
            url: url.to_string(),
            reason: "expected a sqlite:// or postgres:// URL".into(),
        })
    }
}

// ---- Pieces both backends share: pure, so they are written (and tested) once.

/// A delivery row as both backends select it: id, connector, state, attempts,
/// last_error, next_attempt_at, updated_at, lease_owner, expires_at.
pub(crate) type DeliveryRow = (
    i64,
    String,
    String,
    i64,
    Option<String>,
    i64,
    i64,
    Option<String>,
    Option<i64>,
);

pub(crate) fn delivery_view(row: DeliveryRow) -> StoreResult<DeliveryView> {
    let (id, connector, state, attempts, last_error, next, updated_at, lease_owner, expires_at) =
        row;
    let state = DeliveryState::parse(&state)
        .ok_or_else(|| StoreError::Corrupt(format!("unknown delivery state {state:?}")))?;
    Ok(DeliveryView {
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
    })
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

/// A component version row: version, digest, info (JSON), uploaded_at,
/// size in bytes, active.
pub(crate) type VersionRow = (i64, String, String, i64, i64, bool);

pub(crate) fn versions_of(
    connector: &str,
    rows: Vec<VersionRow>,
) -> StoreResult<Vec<ComponentVersion>> {
    rows.into_iter()
        .map(|(version, digest, info, uploaded_at, size_bytes, active)| {
            Ok(ComponentVersion {
                connector: connector.to_string(),
                version,
                digest,
                info: serde_json::from_str(&info)
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                uploaded_at,
                active,
                size_bytes,
            })
        })
        .collect()
}

/// An audit row: id, at, actor, action, target, before, after (JSON).
pub(crate) type AuditRow = (
    i64,
    i64,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
);

pub(crate) fn audit_of(rows: Vec<AuditRow>) -> StoreResult<Vec<AuditRecord>> {
    rows.into_iter()
        .map(|(id, at, actor, action, target, before, after)| {
            Ok(AuditRecord {
                id,
                at,
                actor,
                action,
                target,
                before: parse_json(before)?,
                after: parse_json(after)?,
            })
        })
        .collect()
}

/// A dead-letter row: delivery id, connector, event id, type, keys (JSON),
/// attempts, last error, died at.
pub(crate) type DeadRow = (
    i64,
    String,
    String,
    String,
    String,
    i64,
    Option<String>,
    i64,
);

pub(crate) fn dead_letters_of(rows: Vec<DeadRow>) -> StoreResult<Vec<DeadLetter>> {
    rows.into_iter()
        .map(
            |(
                delivery_id,
                connector,
                event_id,
                event_type,
                keys,
                attempts,
                last_error,
                died_at,
            )| {
                Ok(DeadLetter {
                    delivery_id,
                    connector,
                    event_id,
                    event_type,
                    keys: parse_keys(&keys)?,
                    attempts: attempts as u32,
                    last_error,
                    died_at,
                })
            },
        )
        .collect()
}

/// A lane head row: the delivery's columns as [`DeliveryRow`], then its
/// event id.
pub(crate) type LaneHeadRow = (
    i64,
    String,
    String,
    i64,
    Option<String>,
    i64,
    i64,
    Option<String>,
    Option<i64>,
    String,
);

pub(crate) fn lane_view_of(
    connector: &str,
    key: &str,
    head: Option<LaneHeadRow>,
    entries: i64,
) -> StoreResult<LaneView> {
    let head = match head {
        Some((id, c, state, attempts, last_error, next, updated, owner, expires, event_id)) => {
            Some((
                event_id,
                delivery_view((
                    id, c, state, attempts, last_error, next, updated, owner, expires,
                ))?,
            ))
        }
        None => None,
    };
    Ok(LaneView {
        connector: connector.to_string(),
        key: key.to_string(),
        head,
        waiting: entries.saturating_sub(1).max(0) as u64,
    })
}

/// Stored connector configs: name and JSON text.
pub(crate) fn configs_of(
    rows: Vec<(String, String)>,
) -> StoreResult<Vec<(String, serde_json::Value)>> {
    rows.into_iter()
        .map(|(name, text)| {
            let v = serde_json::from_str(&text)
                .map_err(|e| StoreError::Corrupt(format!("config of {name}: {e}")))?;
            Ok((name, v))
        })
        .collect()
}

pub(crate) fn state_counts_of(rows: Vec<(String, i64)>) -> StoreResult<StateCounts> {
    let mut c = StateCounts::default();
    for (state, n) in rows {
        let n = n as u64;
        match DeliveryState::parse(&state) {
            Some(DeliveryState::Blocked) => c.blocked = n,
            Some(DeliveryState::Ready) => c.ready = n,
            Some(DeliveryState::InFlight) => c.in_flight = n,
            Some(DeliveryState::Delivered) => c.delivered = n,
            Some(DeliveryState::Dead) => c.dead = n,
            Some(DeliveryState::Superseded) => c.superseded = n,
            Some(DeliveryState::Skipped) => c.skipped = n,
            Some(DeliveryState::Expired) => c.expired = n,
            None => return Err(StoreError::Corrupt(format!("unknown state {state:?}"))),
        }
    }
    Ok(c)
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
                Some(d) if d.as_slice() == r.event.digest => counts.duplicates += 1,
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

/// A delivery row about to be inserted.
pub(crate) struct NewDelivery<'a> {
    pub id: i64,
    pub seq: i64,
    pub connector: &'a str,
    pub blockers: i64,
    pub expires_at: Option<Millis>,
}

/// The rows an ingest writes: one delivery per (event, connector) and one
/// lane entry per (delivery, key), in accept order. `occupied` holds the lanes
/// that already have an entry and learns the new ones, so a delivery counts
/// one blocker per lane it does not head.
pub(crate) struct IngestPlan<'a> {
    pub deliveries: Vec<NewDelivery<'a>>,
    /// (connector, key, seq, delivery id)
    pub lanes: Vec<(&'a str, &'a str, i64, i64)>,
}

pub(crate) fn plan_ingest<'a>(
    fresh: &[&'a Routed],
    seqs: &[i64],
    mut next_delivery: impl FnMut() -> i64,
    occupied: &mut HashSet<(String, String)>,
    now: Millis,
) -> IngestPlan<'a> {
    let mut plan = IngestPlan {
        deliveries: Vec::new(),
        lanes: Vec::new(),
    };
    for (r, &seq) in fresh.iter().zip(seqs) {
        for (i, c) in r.connectors.iter().enumerate() {
            if r.connectors[..i].contains(c) {
                continue; // one delivery per connector, however it was routed
            }
            let id = next_delivery();
            let mut blockers = 0;
            for k in &r.event.keys {
                if !occupied.insert((c.clone(), k.clone())) {
                    blockers += 1;
                }
                plan.lanes.push((c, k, seq, id));
            }
            plan.deliveries.push(NewDelivery {
                id,
                seq,
                connector: c,
                blockers,
                expires_at: r.expire_after.get(c).map(|ms| now.saturating_add(*ms)),
            });
        }
    }
    plan
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

/// How many deliveries `fresh` will create (one per distinct connector).
pub(crate) fn delivery_count(fresh: &[&Routed]) -> usize {
    fresh
        .iter()
        .map(|r| {
            r.connectors
                .iter()
                .enumerate()
                .filter(|(i, c)| !r.connectors[..*i].contains(c))
                .count()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::transient_database_error;

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
