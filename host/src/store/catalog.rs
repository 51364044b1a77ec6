//! The catalog: what operators configure and look up beside the queue —
//! connector configs and controls (pause, limits), component versions, the
//! audit log — and the read-only views of the queue (an event with its
//! deliveries, dead letters, counts by state, the next due retry).
//!
//! Written once for both backends. Its SQL is the dialect SQLite and
//! PostgreSQL share (`$n` parameters, `ON CONFLICT … DO UPDATE`,
//! `RETURNING`), and [`on!`] runs a statement on whichever connection the
//! store has. Catalog writes never touch lanes, so on SQLite they run on
//! their own connection in a `BEGIN IMMEDIATE` transaction beside the queue
//! writer (SQLite serialises the two); on PostgreSQL changes to one
//! connector's controls or versions are serialised across nodes by an
//! advisory lock ([`Conn::lock_connector`]).

use std::collections::BTreeMap;
use std::sync::LazyLock;

use sha2::{Digest, Sha256};
use sqlx::pool::PoolConnection;
use sqlx::postgres::PgPool;
use sqlx::sqlite::SqlitePool;
use sqlx::{PgConnection, Postgres, QueryBuilder, Sqlite, SqliteConnection};

use super::{
    delivery_view, parse_json, parse_keys, same_digest, stored_event, AuditRecord,
    ComponentVersion, DeadFilter, DeadLetter, DeliveryRow, DeliveryView, EventRow, EventView,
    LimitOverrides, OperatorAction, QueueStats, Retention, StateCounts, StoreError, StoreResult,
    StoredEvent,
};
use crate::queue::{lanes, DeliveryState, Millis};

/// How long a node may go without a heartbeat before another node starting
/// folds its rows of the per-connector counts.
pub const STALE_NODE_MS: Millis = 10 * 60 * 1000;

/// A connection of either backend, for statements written once.
pub(crate) enum Conn<'a> {
    Sqlite(&'a mut SqliteConnection),
    Postgres(&'a mut PgConnection),
}

/// Runs `$body` with `$c` bound to the connection `$conn` holds, and `Db`
/// naming its database type: the statement is written once and checked
/// against both drivers.
macro_rules! on {
    ($conn:expr, |$c:ident| $body:expr) => {
        match $conn {
            $crate::store::catalog::Conn::Sqlite($c) => {
                #[allow(dead_code)]
                type Db = sqlx::Sqlite;
                $body
            }
            $crate::store::catalog::Conn::Postgres($c) => {
                #[allow(dead_code)]
                type Db = sqlx::Postgres;
                $body
            }
        }
    };
}
pub(crate) use on;

/// The database's clock in epoch milliseconds, as PostgreSQL SQL: nodes'
/// heartbeats and the judgement that a node went silent use it, never a
/// node's own wall clock (nodes' clocks drift apart; the database's is one).
pub(crate) const PG_NOW_MS: &str = "(extract(epoch FROM clock_timestamp()) * 1000)::bigint";

impl Conn<'_> {
    /// [`PG_NOW_MS`] in this connection's dialect.
    fn now_ms(&self) -> &'static str {
        match self {
            Conn::Sqlite(_) => "CAST(unixepoch('subsec') * 1000 AS INTEGER)",
            Conn::Postgres(_) => PG_NOW_MS,
        }
    }

    /// The same connection, borrowed again for one more statement.
    pub(crate) fn re(&mut self) -> Conn<'_> {
        match self {
            Conn::Sqlite(c) => Conn::Sqlite(c),
            Conn::Postgres(c) => Conn::Postgres(c),
        }
    }

    /// The opening of a condition "the event's keys (`e.keys`, a JSON
    /// array) hold" the bound value, closed by `)`.
    fn key_in_keys(&self) -> &'static str {
        match self {
            Conn::Sqlite(_) => "EXISTS (SELECT 1 FROM json_each(e.keys) WHERE json_each.value = ",
            Conn::Postgres(_) => "jsonb_exists(e.keys::jsonb, ",
        }
    }

    /// The opening of "where the bound text starts in `column`" (1-based,
    /// 0 if absent, NULL for a NULL column), closed by `)`.
    fn position_in(&self, column: &str) -> String {
        match self {
            Conn::Sqlite(_) => format!("instr({column}, "),
            Conn::Postgres(_) => format!("strpos({column}, "),
        }
    }

    /// The condition "the delivery is pending" that this backend's
    /// partial index `deliveries_pending (connector, id)` is built on: SQLite
    /// keeps a `pending` flag for it (migration 0011), PostgreSQL the states.
    fn pending(&self) -> String {
        match self {
            Conn::Sqlite(_) => "pending = 1".to_string(),
            Conn::Postgres(_) => format!("state IN ({})", lanes::sql::pending_states()),
        }
    }

    /// Serialises changes to one connector's `what` (controls, component)
    /// until the transaction ends. SQLite needs nothing: a write
    /// transaction there excludes every other writer.
    pub(crate) async fn lock_connector(&mut self, what: &str, connector: &str) -> StoreResult<()> {
        if let Conn::Postgres(c) = self {
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(lock_id(what, connector, ""))
                .execute(&mut **c)
                .await?;
        }
        Ok(())
    }
}

/// PostgreSQL's advisory-lock id of a named resource (a lane, a
/// connector's controls): the first eight bytes of a SHA-256, so ids are
/// stable across nodes and versions. A collision only makes two resources
/// wait for each other, never breaks order.
pub(crate) fn lock_id(kind: &str, a: &str, b: &str) -> i64 {
    let mut h = Sha256::new();
    for part in [kind, a, b] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    let d: [u8; 32] = h.finalize().into();
    i64::from_le_bytes(std::array::from_fn(|i| d[i]))
}

const AUDIT_INSERT: &str = "INSERT INTO audit_log (at, actor, action, target, before, after) \
     VALUES ($1, $2, $3, $4, $5, $6)";
const BEFORE_ACTION: &str = "SELECT state, attempts, last_error FROM deliveries WHERE id = $1";
const AFTER_ACTION: &str = "SELECT state FROM deliveries WHERE id = $1";

impl Conn<'_> {
    /// Records one operator action; callers run it in the action's own
    /// transaction.
    pub(crate) async fn audit(
        self,
        now: Millis,
        actor: &str,
        action: &str,
        target: &str,
        before: Option<serde_json::Value>,
        after: impl Into<Option<serde_json::Value>>,
    ) -> StoreResult<()> {
        let after: Option<serde_json::Value> = after.into();
        Ok(on!(self, |c| sqlx::query(AUDIT_INSERT)
            .bind(now)
            .bind(actor)
            .bind(action)
            .bind(target)
            .bind(before.map(|v| v.to_string()))
            .bind(after.map(|v| v.to_string()))
            .execute(c)
            .await
            .map(|_| ()))?)
    }
}

type BeforeRow = (String, i64, Option<String>);

fn before_of(row: Option<BeforeRow>) -> Option<serde_json::Value> {
    row.map(|(state, attempts, last_error)| {
        serde_json::json!({"state": state, "attempts": attempts, "last_error": last_error})
    })
}

fn action_name(action: OperatorAction) -> &'static str {
    match action {
        OperatorAction::Retry => "delivery.retry",
        OperatorAction::Skip => "delivery.skip",
    }
}

/// A delivery as an operator action's audit record shows it before the
/// action: state, attempts, last error.
pub(crate) async fn before_action(
    conn: Conn<'_>,
    id: i64,
) -> StoreResult<Option<serde_json::Value>> {
    let row: Option<BeforeRow> = on!(conn, |c| sqlx::query_as(BEFORE_ACTION)
        .bind(id)
        .fetch_optional(c)
        .await)?;
    Ok(before_of(row))
}

/// Records an operator's retry or skip of delivery `id`, applied in this
/// transaction, with `before` from [`before_action`].
pub(crate) async fn audit_action(
    mut conn: Conn<'_>,
    id: i64,
    action: OperatorAction,
    actor: &str,
    now: Millis,
    before: Option<serde_json::Value>,
) -> StoreResult<()> {
    let after: Option<String> = on!(conn.re(), |c| sqlx::query_scalar(AFTER_ACTION)
        .bind(id)
        .fetch_optional(c)
        .await)?;
    let after = after.map(|state| serde_json::json!({ "state": state }));
    let name = action_name(action);
    conn.audit(now, actor, name, &id.to_string(), before, after)
        .await
}

/// [`before_action`] on the SQLite writer's own connection.
pub(crate) fn before_action_lite(
    conn: &rusqlite::Connection,
    id: i64,
) -> StoreResult<Option<serde_json::Value>> {
    let row = super::lite::query(BEFORE_ACTION)
        .bind(id)
        .fetch_optional(conn)?;
    Ok(before_of(row))
}

/// [`audit_action`] on the SQLite writer's own connection.
pub(crate) fn audit_action_lite(
    conn: &rusqlite::Connection,
    id: i64,
    action: OperatorAction,
    actor: &str,
    now: Millis,
    before: Option<serde_json::Value>,
) -> StoreResult<()> {
    use super::lite::query;
    let after: Option<String> = query(AFTER_ACTION).bind(id).fetch_optional(conn)?;
    let after = after.map(|state| serde_json::json!({ "state": state }));
    query(AUDIT_INSERT)
        .bind(now)
        .bind(actor)
        .bind(action_name(action))
        .bind(id.to_string())
        .bind(before.map(|v| v.to_string()))
        .bind(after.map(|v| v.to_string()))
        .execute(conn)?;
    Ok(())
}

/// An attempt as the log's rows give it: attempt, node, started_at,
/// finished_at, outcome, reason.
type AttemptRow = (i64, String, i64, i64, String, Option<String>);

fn attempt_of(row: AttemptRow) -> AttemptRecord {
    let (attempt, node, started_at, finished_at, outcome, reason) = row;
    AttemptRecord {
        attempt: attempt as u32,
        node,
        started_at,
        finished_at,
        outcome,
        reason,
    }
}

/// One finished attempt of a delivery.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AttemptRecord {
    pub attempt: u32,
    pub node: String,
    pub started_at: Millis,
    pub finished_at: Millis,
    /// `delivered`, `retry`, `dead` or `lease_expired`.
    pub outcome: String,
    pub reason: Option<String>,
}

/// A gateway process that used the store.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NodeRecord {
    pub name: String,
    /// How many times a process of this name started.
    pub epoch: i64,
    pub started_at: Millis,
    pub heartbeat_at: Millis,
}

/// A change of a connector's breaker.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BreakerTransition {
    pub id: i64,
    pub connector: String,
    pub node: String,
    pub at: Millis,
    pub from: String,
    pub to: String,
}

/// One connector's deliveries and failed attempts in one minute, summed
/// over the nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct MinuteCount {
    /// Epoch milliseconds / 60,000.
    pub minute: i64,
    pub delivered: i64,
    pub failed: i64,
}

/// Where the catalog reads and writes.
#[derive(Clone)]
pub(crate) enum Pools {
    Sqlite {
        read: SqlitePool,
        /// One connection, for catalog writes.
        write: SqlitePool,
        /// The queue writer, which stands aside while the catalog writes.
        writer: std::sync::Arc<dyn WriterPause>,
    },
    Postgres(PgPool),
}

/// SQLite's queue writer runs its transactions back to back under load, and
/// a second connection polling for the write lock would seldom catch the
/// moment between two of them. So the catalog asks the writer to stand
/// aside: it finishes its transaction, answers, and waits until the sender
/// it handed out is dropped (or used), which the catalog does once its own
/// transaction ended. The request waits in the writer's queue like any
/// other work, so neither side starves.
#[async_trait::async_trait]
pub(crate) trait WriterPause: Send + Sync {
    async fn pause(&self) -> StoreResult<tokio::sync::oneshot::Sender<()>>;
}

/// [`Catalog::next_due`]'s statement: `$1` the connector, `$2` now.
pub(crate) static NEXT_DUE: LazyLock<String> = LazyLock::new(|| next_due("$1", "$2"));

/// When `connector`'s next delivery a claim would take is due, at `now`
/// (SQL expressions of the statement it is part of).
pub(crate) fn next_due(connector: &str, now: &str) -> String {
    format!(
        "SELECT MIN(next_attempt_at) FROM deliveries \
         WHERE connector = {connector} AND {} \
             AND NOT EXISTS (SELECT 1 FROM connector_controls \
                             WHERE connector = {connector} AND paused)",
        crate::queue::lanes::sql::ready_unexpired(now)
    )
}

/// A pooled connection of either backend.
pub(super) enum Pooled {
    Sqlite(PoolConnection<Sqlite>),
    Postgres(PoolConnection<Postgres>),
}

impl Pooled {
    pub(super) fn conn(&mut self) -> Conn<'_> {
        match self {
            Pooled::Sqlite(c) => Conn::Sqlite(c),
            Pooled::Postgres(c) => Conn::Postgres(c),
        }
    }
}

/// A write transaction of either backend; rolled back if dropped before
/// [`Tx::commit`].
pub(super) enum Tx {
    /// With the queue writer paused until this ends.
    Sqlite(
        sqlx::Transaction<'static, Sqlite>,
        tokio::sync::oneshot::Sender<()>,
    ),
    Postgres(sqlx::Transaction<'static, Postgres>),
}

impl Tx {
    pub(super) fn conn(&mut self) -> Conn<'_> {
        match self {
            Tx::Sqlite(t, _) => Conn::Sqlite(t),
            Tx::Postgres(t) => Conn::Postgres(t),
        }
    }

    pub(super) async fn commit(self) -> StoreResult<()> {
        match self {
            Tx::Sqlite(t, resume) => {
                t.commit().await?;
                let _ = resume.send(());
            }
            Tx::Postgres(t) => t.commit().await?,
        }
        Ok(())
    }
}

/// Connector configs, controls and versions, the audit log and the queue's
/// read-only views, over either backend.
pub struct Catalog {
    pools: Pools,
    /// This process, as it signs what it records.
    node: String,
}

impl Catalog {
    pub(crate) fn new(pools: Pools, node: &str) -> Self {
        Self {
            pools,
            node: node.to_string(),
        }
    }

    /// The name this process records itself under (leases, attempts,
    /// breaker transitions).
    pub fn node(&self) -> &str {
        &self.node
    }

    pub(super) async fn read(&self) -> StoreResult<Pooled> {
        Ok(match &self.pools {
            Pools::Sqlite { read, .. } => Pooled::Sqlite(read.acquire().await?),
            Pools::Postgres(pool) => Pooled::Postgres(pool.acquire().await?),
        })
    }

    pub(super) async fn begin(&self) -> StoreResult<Tx> {
        Ok(match &self.pools {
            Pools::Sqlite { write, writer, .. } => {
                let resume = writer.pause().await?;
                Tx::Sqlite(write.begin_with("BEGIN IMMEDIATE").await?, resume)
            }
            Pools::Postgres(pool) => Tx::Postgres(pool.begin().await?),
        })
    }

    /// Reachable and migrated.
    pub async fn ping(&self) -> StoreResult<()> {
        Ok(on!(self.read().await?.conn(), |c| sqlx::query(
            "SELECT 1 FROM events LIMIT 1"
        )
        .fetch_optional(c)
        .await
        .map(|_| ()))?)
    }

    // ---- Views of the queue.

    /// An event with its deliveries.
    pub async fn event(&self, id: &str) -> StoreResult<Option<EventView>> {
        let mut r = self.read().await?;
        let row: Option<EventRow> = on!(r.conn(), |c| sqlx::query_as(
            "SELECT seq, id, type, keys, payload, accepted_at FROM events WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(c)
        .await)?;
        let Some(row) = row else { return Ok(None) };
        let e = stored_event(row)?;
        let (replay, original): (Option<i64>, Option<String>) = on!(r.conn(), |c| {
            sqlx::query_as(
            "SELECT e.replay_id, o.id FROM events e LEFT JOIN events o ON o.seq = e.origin_seq \
             WHERE e.seq = $1",
        )
        .bind(e.seq)
        .fetch_one(c)
        .await
        })?;
        let rows: Vec<DeliveryRow<Option<String>>> = on!(r.conn(), |c| sqlx::query_as(
            "SELECT d.id, d.connector, d.state, d.attempts, d.last_error, d.next_attempt_at, \
                 d.updated_at, d.lease_owner, d.expires_at, \
                 COALESCE(s.id, 'seq ' || d.superseded_by) \
             FROM deliveries d LEFT JOIN events s ON s.seq = d.superseded_by \
             WHERE d.event_seq = $1 ORDER BY d.id",
        )
        .bind(e.seq)
        .fetch_all(c)
        .await)?;
        Ok(Some(EventView {
            seq: e.seq,
            id: e.id,
            event_type: e.event_type,
            keys: e.keys,
            payload: serde_json::from_str(&e.payload)
                .map_err(|err| StoreError::Corrupt(err.to_string()))?,
            accepted_at: e.accepted_at,
            deliveries: rows
                .into_iter()
                .map(|row| {
                    let (d, superseded_by) = delivery_view(row)?;
                    Ok(DeliveryView { superseded_by, ..d })
                })
                .collect::<StoreResult<_>>()?,
            replay,
            original,
        }))
    }

    /// Dead letters, newest first. Each connector's are read newest first
    /// through its dead-letter index (`deliveries_dead`: connector, id), a
    /// page at a time, and merged: no query orders every dead letter of
    /// the store. The other filters are checked on the rows that index
    /// yields, so a rare match may read far back, never beyond one
    /// connector's dead letters.
    pub async fn dead_letters(&self, f: &DeadFilter) -> StoreResult<Vec<DeadLetter>> {
        let mut r = self.read().await?;
        let connectors: Vec<String> = match &f.connector {
            Some(c) => vec![c.clone()],
            None => on!(r.conn(), |c| {
                sqlx::query_scalar(
                "SELECT DISTINCT connector FROM connector_counts WHERE dead <> 0 ORDER BY connector"
            )
            .fetch_all(c)
            .await
            })?,
        };
        if connectors.is_empty() {
            return Ok(Vec::new());
        }
        let conn = r.conn();
        let key_in_keys = conn.key_in_keys();
        let contains = conn.position_in("d.last_error");
        let limit = f.limit.clamp(1, 10_000) as i64;
        // Delivery id, connector, event id, type, keys (JSON), attempts,
        // last error, died at.
        type Row = (
            i64,
            String,
            String,
            String,
            String,
            i64,
            Option<String>,
            i64,
        );
        let rows: Vec<Row> = on!(conn, |c| {
            let mut qb = QueryBuilder::<Db>::new("");
            for (i, connector) in connectors.iter().enumerate() {
                if i > 0 {
                    qb.push(" UNION ALL ");
                }
                qb.push(
                    "SELECT * FROM (SELECT d.id, d.connector, e.id AS event_id, e.type, e.keys, \
                         d.attempts, d.last_error, d.updated_at \
                     FROM deliveries d JOIN events e ON e.seq = d.event_seq \
                     WHERE d.state = 'dead' AND d.connector = ",
                )
                .push_bind(connector.clone());
                if let Some(v) = &f.event_type {
                    qb.push(" AND e.type = ").push_bind(v.clone());
                }
                if let Some(k) = &f.key {
                    qb.push(format_args!(" AND {}", key_in_keys))
                        .push_bind(k.clone())
                        .push(")");
                }
                if let Some(v) = &f.reason {
                    qb.push(format_args!(" AND {}", contains))
                        .push_bind(v.clone())
                        .push(") > 0");
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
                    .push_bind(limit)
                    .push(format_args!(") AS c{i}"));
            }
            qb.push(" ORDER BY 1 DESC LIMIT ").push_bind(limit);
            qb.build_query_as().fetch_all(c).await
        })?;
        rows.into_iter()
            .map(
                |(delivery_id, connector, event_id, event_type, keys, attempts, error, at)| {
                    Ok(DeadLetter {
                        delivery_id,
                        connector,
                        event_id,
                        event_type,
                        keys: parse_keys(&keys)?,
                        attempts: attempts as u32,
                        last_error: error,
                        died_at: at,
                    })
                },
            )
            .collect()
    }

    /// A connector's deliveries by state, from the maintained counts.
    pub async fn state_counts(&self, connector: &str) -> StoreResult<StateCounts> {
        static SUMS: LazyLock<String> = LazyLock::new(|| {
            let sums: Vec<String> = DeliveryState::ALL
                .iter()
                .map(|s| format!("CAST(COALESCE(SUM({}), 0) AS BIGINT)", s.as_str()))
                .collect();
            format!(
                "SELECT {} FROM connector_counts WHERE connector = $1",
                sums.join(", ")
            )
        });
        let row = on!(self.read().await?.conn(), |c| sqlx::query(&SUMS)
            .bind(connector)
            .fetch_one(c)
            .await
            .and_then(|row| {
                use sqlx::Row;
                (0..STATES)
                    .map(|i| row.try_get::<i64, _>(i))
                    .collect::<Result<Vec<i64>, _>>()
            }))?;
        let n = |s: DeliveryState| row[Counts::slot(s)].max(0) as u64;
        use DeliveryState::*;
        Ok(StateCounts {
            blocked: n(Blocked),
            ready: n(Ready),
            in_flight: n(InFlight),
            delivered: n(Delivered),
            dead: n(Dead),
            superseded: n(Superseded),
            skipped: n(Skipped),
            expired: n(Expired),
        })
    }

    /// The earliest `next_attempt_at` among the deliveries of `connector` a
    /// claim would take once due: ready, not past their expiry at `now`,
    /// the connector not paused. Those a claim would not take are left out,
    /// or a loop that found nothing to claim would look again at once, and
    /// again, until they expire or the connector resumes.
    pub async fn next_due(&self, connector: &str, now: Millis) -> StoreResult<Option<Millis>> {
        Ok(on!(self.read().await?.conn(), |c| sqlx::query_scalar(
            &NEXT_DUE
        )
        .bind(connector)
        .bind(now)
        .fetch_one(c)
        .await)?)
    }

    /// What waits for one connector: the maintained counts (no rows are
    /// counted) and the creation time of its oldest pending delivery (one
    /// index seek).
    pub async fn queue_stats(&self, connector: &str) -> StoreResult<QueueStats> {
        let counts = self.state_counts(connector).await?;
        // Nothing pending: no row to look for. (PostgreSQL's planner, which
        // cannot tell that a connector with a million dead letters has no
        // pending row, would otherwise walk the primary key looking for one.)
        let oldest: Option<i64> = if counts.ready + counts.blocked + counts.in_flight == 0 {
            None
        } else {
            let mut r = self.read().await?;
            let conn = r.conn();
            let sql = format!(
                "SELECT created_at FROM deliveries WHERE id = (SELECT MIN(id) FROM deliveries \
                     WHERE connector = $1 AND {})",
                conn.pending()
            );
            on!(conn, |c| sqlx::query_scalar(&sql)
                .bind(connector)
                .fetch_optional(c)
                .await)?
        };
        Ok(QueueStats {
            ready: counts.ready,
            blocked: counts.blocked,
            in_flight: counts.in_flight,
            dead: counts.dead,
            oldest_pending_at: oldest,
        })
    }

    /// `connector`'s latest `limit` attempts, newest first, each with its
    /// event's id and its delivery's id, through the log's per-connector
    /// index (however long ago they were, however busy the others are).
    pub async fn recent_attempts(
        &self,
        connector: &str,
        limit: usize,
    ) -> StoreResult<Vec<(String, i64, AttemptRecord)>> {
        type Row = (String, i64, i64, String, i64, i64, String, Option<String>);
        let mut r = self.read().await?;
        let rows: Vec<Row> = on!(r.conn(), |c| sqlx::query_as(
            "SELECT e.id, a.delivery_id, CAST(a.attempt AS BIGINT), a.node, a.started_at, \
                 a.finished_at, a.outcome, a.reason \
             FROM (SELECT * FROM attempts WHERE connector = $1 \
                   ORDER BY finished_at DESC LIMIT $2) a \
                 JOIN deliveries d ON d.id = a.delivery_id \
                 JOIN events e ON e.seq = d.event_seq \
             ORDER BY a.finished_at DESC",
        )
        .bind(connector)
        .bind(limit.clamp(1, 10_000) as i64)
        .fetch_all(c)
        .await)?;
        Ok(rows
            .into_iter()
            .map(|(e, d, a, n, s, f, o, r)| (e, d, attempt_of((a, n, s, f, o, r))))
            .collect())
    }

    /// The attempts of one delivery, first first.
    pub async fn attempts(&self, delivery_id: i64) -> StoreResult<Vec<AttemptRecord>> {
        let rows: Vec<AttemptRow> = on!(self.read().await?.conn(), |c| sqlx::query_as(
            "SELECT CAST(attempt AS BIGINT), node, started_at, finished_at, outcome, reason \
                 FROM attempts WHERE delivery_id = $1 ORDER BY attempt",
        )
        .bind(delivery_id)
        .fetch_all(c)
        .await)?;
        Ok(rows.into_iter().map(attempt_of).collect())
    }

    // ---- Nodes and breakers.

    /// Records that this process started, by the database's clock: its
    /// name's next epoch, returned. It also folds the count rows of writers
    /// on nodes not heard from for [`STALE_NODE_MS`] into one row per
    /// connector, so that rows do not pile up as nodes come and go (a count
    /// is a sum, so a fold racing a late write is still right: that write
    /// makes a new row).
    pub async fn register_node(&self) -> StoreResult<i64> {
        let mut tx = self.begin().await?;
        // SQLite has one writer, so one row per connector, and no
        // data-modifying WITH.
        if let Conn::Postgres(c) = tx.conn() {
            fold_stale_counts(c).await?;
        }
        let sql = format!(
            "INSERT INTO nodes (name, epoch, started_at, heartbeat_at) VALUES ($1, 1, {now}, {now}) \
             ON CONFLICT (name) DO UPDATE SET epoch = nodes.epoch + 1, \
                 started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at \
             RETURNING epoch",
            now = tx.conn().now_ms()
        );
        let epoch: i64 = on!(tx.conn(), |c| sqlx::query_scalar(&sql)
            .bind(&self.node)
            .fetch_one(c)
            .await)?;
        tx.commit().await?;
        Ok(epoch)
    }

    /// Records that this process is alive, by the database's clock, once
    /// that commits. A node that does not for [`Cluster::take_over`]'s
    /// bound loses its in-flight work to the others.
    ///
    /// [`Cluster::take_over`]: super::Cluster::take_over
    pub async fn heartbeat(&self) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        let sql = format!(
            "UPDATE nodes SET heartbeat_at = {now} WHERE name = $1 AND heartbeat_at < {now}",
            now = tx.conn().now_ms()
        );
        on!(tx.conn(), |c| sqlx::query(&sql)
            .bind(&self.node)
            .execute(c)
            .await
            .map(|_| ()))?;
        tx.commit().await
    }

    /// Every node that has used this store, by name.
    pub async fn nodes(&self) -> StoreResult<Vec<NodeRecord>> {
        let rows: Vec<(String, i64, i64, i64)> =
            on!(self.read().await?.conn(), |c| sqlx::query_as(
                "SELECT name, epoch, started_at, heartbeat_at FROM nodes ORDER BY name"
            )
            .fetch_all(c)
            .await)?;
        Ok(rows
            .into_iter()
            .map(|(name, epoch, started_at, heartbeat_at)| NodeRecord {
                name,
                epoch,
                started_at,
                heartbeat_at,
            })
            .collect())
    }

    /// Records a change of `connector`'s breaker as this node saw it
    /// (`from`/`to`: `closed`, `open`, `probing`).
    pub async fn record_breaker(
        &self,
        connector: &str,
        from: &str,
        to: &str,
        at: Millis,
    ) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        on!(tx.conn(), |c| sqlx::query(
            "INSERT INTO breaker_transitions (connector, node, at, from_state, to_state) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(connector)
        .bind(&self.node)
        .bind(at)
        .bind(from)
        .bind(to)
        .execute(c)
        .await
        .map(|_| ()))?;
        tx.commit().await
    }

    /// `connector`'s newest breaker transitions, newest first.
    pub async fn breaker_transitions(
        &self,
        connector: &str,
        limit: usize,
    ) -> StoreResult<Vec<BreakerTransition>> {
        let rows: Vec<(i64, String, i64, String, String)> =
            on!(self.read().await?.conn(), |c| sqlx::query_as(
                "SELECT id, node, at, from_state, to_state FROM breaker_transitions \
             WHERE connector = $1 ORDER BY id DESC LIMIT $2",
            )
            .bind(connector)
            .bind(limit.clamp(1, 10_000) as i64)
            .fetch_all(c)
            .await)?;
        Ok(rows
            .into_iter()
            .map(|(id, node, at, from, to)| BreakerTransition {
                id,
                connector: connector.to_string(),
                node,
                at,
                from,
                to,
            })
            .collect())
    }

    /// The newest audit records, newest first.
    pub async fn audit_log(
        &self,
        limit: usize,
        before_id: Option<i64>,
    ) -> StoreResult<Vec<AuditRecord>> {
        type Row = (
            i64,
            i64,
            String,
            String,
            String,
            Option<String>,
            Option<String>,
        );
        let rows: Vec<Row> = on!(self.read().await?.conn(), |c| sqlx::query_as(
            "SELECT id, at, actor, action, target, before, after FROM audit_log \
             WHERE id < $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(before_id.unwrap_or(i64::MAX))
        .bind(limit.clamp(1, 10_000) as i64)
        .fetch_all(c)
        .await)?;
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

    // ---- Replays (SPEC §4.2).

    /// Records a replay of `r` by `actor` and audits it: it covers the
    /// events stored now (up to the newest `seq`), in pages from the first
    /// accepted at `since`, starting after [`REPLAY_GRACE_MS`] so that
    /// every ingest under way when it was asked for has committed.
    pub async fn create_replay(
        &self,
        r: &NewReplay,
        actor: &str,
        now: Millis,
    ) -> StoreResult<Replay> {
        let mut tx = self.begin().await?;
        let mut conn = tx.conn();
        // Read once: `accepted_at` has no index (nothing else needs one).
        let (first, last): (Option<i64>, Option<i64>) = on!(conn.re(), |c| sqlx::query_as(
            "SELECT (SELECT MIN(seq) FROM events WHERE accepted_at >= $1), \
                    (SELECT MAX(seq) FROM events)"
        )
        .bind(r.since)
        .fetch_one(c)
        .await)?;
        let last = last.unwrap_or(0);
        let start = first.map_or(last, |f| f - 1);
        let types = serde_json::to_string(&r.types).unwrap_or_else(|_| "[]".into());
        let id: i64 = on!(conn.re(), |c| {
            sqlx::query_scalar(
            "INSERT INTO replays (connector, since_ms, until_ms, types, event_key, rate, state, \
                 last_seq, start_seq, cursor_seq, due_at, created_by, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, 'running', $7, $8, $8, $9, $10, $11, $11) \
             RETURNING id",
        )
        .bind(&r.connector)
        .bind(r.since)
        .bind(r.until)
        .bind(&types)
        .bind(&r.key)
        .bind(r.rate)
        .bind(last)
        .bind(start)
        .bind(now + REPLAY_GRACE_MS)
        .bind(actor)
        .bind(now)
        .fetch_one(c)
        .await
        })?;
        let after = serde_json::json!({"replay": id, "since": r.since, "until": r.until,
                                       "types": r.types, "key": r.key, "rate": r.rate});
        conn.audit(now, actor, "replay.start", &r.connector, None, after)
            .await?;
        tx.commit().await?;
        self.replay(id)
            .await?
            .ok_or_else(|| StoreError::Internal(format!("replay {id} vanished")))
    }

    /// One replay, with its progress.
    pub async fn replay(&self, id: i64) -> StoreResult<Option<Replay>> {
        let row: Option<ReplayRow> = on!(self.read().await?.conn(), |c| sqlx::query_as(&format!(
            "SELECT {REPLAY_COLUMNS} FROM replays WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(c)
        .await)?;
        row.map(replay_of).transpose()
    }

    /// The newest replays (of `connector`, or all), newest first.
    pub async fn replays(&self, connector: Option<&str>, limit: usize) -> StoreResult<Vec<Replay>> {
        let rows: Vec<ReplayRow> = on!(self.read().await?.conn(), |c| sqlx::query_as(&format!(
            "SELECT {REPLAY_COLUMNS} FROM replays WHERE $1 IS NULL OR connector = $1 \
             ORDER BY id DESC LIMIT $2"
        ))
        .bind(connector)
        .bind(limit.clamp(1, 10_000) as i64)
        .fetch_all(c)
        .await)?;
        rows.into_iter().map(replay_of).collect()
    }

    /// Running replays whose next page is due at `now`, the longest due
    /// first.
    pub async fn due_replays(&self, now: Millis, limit: usize) -> StoreResult<Vec<Replay>> {
        let rows: Vec<ReplayRow> = on!(self.read().await?.conn(), |c| sqlx::query_as(&format!(
            "SELECT {REPLAY_COLUMNS} FROM replays WHERE state = 'running' AND due_at <= $1 \
             ORDER BY due_at LIMIT $2"
        ))
        .bind(now)
        .bind(limit.clamp(1, 10_000) as i64)
        .fetch_all(c)
        .await)?;
        rows.into_iter().map(replay_of).collect()
    }

    /// Takes replay `id`'s next page for this node, if it is due: no other
    /// node makes it before `now + hold_ms`, or before this one moves the
    /// cursor and sets when the next is due.
    pub async fn take_replay(&self, id: i64, now: Millis, hold_ms: i64) -> StoreResult<bool> {
        let mut tx = self.begin().await?;
        let taken = on!(tx.conn(), |c| {
            sqlx::query(
            "UPDATE replays SET due_at = $3 WHERE id = $1 AND state = 'running' AND due_at <= $2",
        )
        .bind(id)
        .bind(now)
        .bind(now + hold_ms)
        .execute(c)
        .await
        .map(|r| r.rows_affected())
        })? == 1;
        tx.commit().await?;
        Ok(taken)
    }

    /// The next stored events a replay examines: after `after`, up to
    /// `last`, originals only (never another replay's copies), in accept
    /// order.
    pub async fn replay_page(
        &self,
        after: i64,
        last: i64,
        limit: usize,
    ) -> StoreResult<Vec<(StoredEvent, Vec<u8>)>> {
        // An event row, then its digest.
        type PageRow = (i64, String, String, String, String, i64, Vec<u8>);
        let rows: Vec<PageRow> = on!(self.read().await?.conn(), |c| sqlx::query_as(
            "SELECT seq, id, type, keys, payload, accepted_at, digest FROM events \
             WHERE seq > $1 AND seq <= $2 AND replay_id IS NULL ORDER BY seq LIMIT $3",
        )
        .bind(after)
        .bind(last)
        .bind(limit.clamp(1, 10_000) as i64)
        .fetch_all(c)
        .await)?;
        rows.into_iter()
            .map(|(seq, id, ty, keys, payload, at, digest)| {
                Ok((stored_event((seq, id, ty, keys, payload, at))?, digest))
            })
            .collect()
    }

    /// Moves a running replay's cursor from `from` to `to` with what that
    /// page examined and replayed, finished when `done`, its next page due
    /// at `due_at`. False when another node moved it first, or it was
    /// cancelled meanwhile.
    #[allow(clippy::too_many_arguments)]
    pub async fn advance_replay(
        &self,
        id: i64,
        from: i64,
        to: i64,
        examined: u64,
        replayed: u64,
        done: bool,
        due_at: Millis,
        now: Millis,
    ) -> StoreResult<bool> {
        let mut tx = self.begin().await?;
        let moved = on!(tx.conn(), |c| sqlx::query(
            "UPDATE replays SET cursor_seq = $3, examined = examined + $4, \
                 replayed = replayed + $5, updated_at = $6, due_at = $8, \
                 state = CASE WHEN $7 THEN 'done' ELSE state END, \
                 finished_at = CASE WHEN $7 THEN $6 ELSE finished_at END \
             WHERE id = $1 AND cursor_seq = $2 AND state = 'running'",
        )
        .bind(id)
        .bind(from)
        .bind(to)
        .bind(examined as i64)
        .bind(replayed as i64)
        .bind(now)
        .bind(done)
        .bind(due_at)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))?
            == 1;
        tx.commit().await?;
        Ok(moved)
    }

    /// The dead deliveries of replay `id`'s copies (at most `limit`): a
    /// cancel skips them, so none holds a key for ever.
    pub async fn replay_dead_copies(&self, id: i64, limit: usize) -> StoreResult<Vec<i64>> {
        Ok(on!(self.read().await?.conn(), |c| sqlx::query_scalar(
            "SELECT d.id FROM deliveries d JOIN events e ON e.seq = d.event_seq \
             WHERE e.replay_id = $1 AND d.state = 'dead' ORDER BY d.id LIMIT $2",
        )
        .bind(id)
        .bind(limit.clamp(1, 100_000) as i64)
        .fetch_all(c)
        .await)?)
    }

    /// Ends the copies waiting of a cancelled replay, again: for a page a
    /// node made while the replay was being cancelled. How many.
    pub async fn end_cancelled_copies(&self, id: i64, now: Millis) -> StoreResult<u64> {
        let mut tx = self.begin().await?;
        let cancelled: Option<String> = on!(tx.conn(), |c| sqlx::query_scalar(
            "SELECT state FROM replays WHERE id = $1 AND state = 'cancelled'"
        )
        .bind(id)
        .fetch_optional(c)
        .await)?;
        let ended = match cancelled {
            Some(_) => end_copies(tx.conn(), id, now).await?,
            None => 0,
        };
        tx.commit().await?;
        Ok(ended)
    }

    /// Cancels a running replay: it makes no more copies, and its copies
    /// waiting (not in flight) expire now: the expiry sweep ends them as
    /// `expired`, releasing their lanes, and no claim takes them meanwhile.
    /// Audited. Answers the replay and how many deliveries it ended, or
    /// `None` if it was not running.
    pub async fn cancel_replay(
        &self,
        id: i64,
        actor: &str,
        now: Millis,
    ) -> StoreResult<Option<(Replay, u64)>> {
        let mut tx = self.begin().await?;
        let mut conn = tx.conn();
        let connector: Option<String> = on!(conn.re(), |c| sqlx::query_scalar(
            "UPDATE replays SET state = 'cancelled', finished_at = $2, updated_at = $2 \
             WHERE id = $1 AND state = 'running' RETURNING connector",
        )
        .bind(id)
        .bind(now)
        .fetch_optional(c)
        .await)?;
        let Some(connector) = connector else {
            return Ok(None);
        };
        let ended = end_copies(conn.re(), id, now).await?;
        let after = serde_json::json!({"replay": id, "state": "cancelled", "waiting_ended": ended});
        conn.audit(now, actor, "replay.cancel", &connector, None, after)
            .await?;
        tx.commit().await?;
        let replay = self
            .replay(id)
            .await?
            .ok_or_else(|| StoreError::Internal(format!("replay {id} vanished")))?;
        Ok(Some((replay, ended)))
    }

    // ---- Per-minute counts (the console's plots).

    /// Adds what this node saw to its rows of `minute_counts`: per
    /// connector and minute, deliveries and failed attempts.
    pub async fn add_minute_counts(&self, counts: &[(String, i64, i64, i64)]) -> StoreResult<()> {
        if counts.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin().await?;
        for (connector, minute, delivered, failed) in counts {
            on!(tx.conn(), |c| sqlx::query(
                "INSERT INTO minute_counts (connector, minute, node, delivered, failed) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (connector, minute, node) DO UPDATE \
                 SET delivered = minute_counts.delivered + excluded.delivered, \
                     failed = minute_counts.failed + excluded.failed",
            )
            .bind(connector)
            .bind(minute)
            .bind(&self.node)
            .bind(delivered)
            .bind(failed)
            .execute(c)
            .await
            .map(|_| ()))?;
        }
        tx.commit().await
    }

    /// Every connector's counts from minute `since` on, summed over nodes,
    /// by connector then minute.
    pub async fn minute_counts(
        &self,
        since: i64,
    ) -> StoreResult<BTreeMap<String, Vec<MinuteCount>>> {
        let rows: Vec<(String, i64, i64, i64)> = on!(self.read().await?.conn(), |c| {
            sqlx::query_as(
            "SELECT connector, minute, CAST(SUM(delivered) AS BIGINT), CAST(SUM(failed) AS BIGINT) \
             FROM minute_counts WHERE minute >= $1 GROUP BY connector, minute \
             ORDER BY connector, minute",
        )
        .bind(since)
        .fetch_all(c)
        .await
        })?;
        let mut out: BTreeMap<String, Vec<MinuteCount>> = BTreeMap::new();
        for (connector, minute, delivered, failed) in rows {
            out.entry(connector).or_default().push(MinuteCount {
                minute,
                delivered,
                failed,
            });
        }
        Ok(out)
    }

    /// Deletes the counts of minutes before `minute`; how many rows went.
    pub async fn purge_minute_counts(&self, minute: i64) -> StoreResult<u64> {
        let mut tx = self.begin().await?;
        let n = on!(tx.conn(), |c| sqlx::query(
            "DELETE FROM minute_counts WHERE minute < $1"
        )
        .bind(minute)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))?;
        tx.commit().await?;
        Ok(n)
    }

    // ---- Connector controls.

    /// Pauses or resumes a connector (no claims while paused), audited.
    /// `false` if it already was in that state.
    pub async fn set_paused(
        &self,
        connector: &str,
        paused: bool,
        actor: &str,
        now: Millis,
    ) -> StoreResult<bool> {
        let mut tx = self.begin().await?;
        let mut conn = tx.conn();
        conn.lock_connector("controls", connector).await?;
        let was = paused_of(conn.re(), connector).await?;
        if was == paused {
            return Ok(false);
        }
        on!(conn.re(), |c| sqlx::query(
            "INSERT INTO connector_controls (connector, paused, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (connector) DO UPDATE SET paused = excluded.paused, \
                 updated_at = excluded.updated_at",
        )
        .bind(connector)
        .bind(paused)
        .bind(now)
        .execute(c)
        .await
        .map(|_| ()))?;
        let action = if paused {
            "connector.pause"
        } else {
            "connector.resume"
        };
        let before = serde_json::json!({ "paused": was });
        let after = serde_json::json!({ "paused": paused });
        conn.audit(now, actor, action, connector, Some(before), after)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    pub async fn is_paused(&self, connector: &str) -> StoreResult<bool> {
        paused_of(self.read().await?.conn(), connector).await
    }

    /// Overrides a connector's concurrency and rate at run time (`None`: as
    /// configured), audited.
    pub async fn set_limits(
        &self,
        connector: &str,
        limits: LimitOverrides,
        actor: &str,
        now: Millis,
    ) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        let mut conn = tx.conn();
        conn.lock_connector("controls", connector).await?;
        let before = overrides_of(conn.re(), connector).await?;
        on!(conn.re(), |c| sqlx::query(
            "INSERT INTO connector_controls (connector, paused, updated_at, concurrency, rate) \
             VALUES ($1, FALSE, $2, $3, $4) \
             ON CONFLICT (connector) DO UPDATE SET concurrency = excluded.concurrency, \
                 rate = excluded.rate, updated_at = excluded.updated_at",
        )
        .bind(connector)
        .bind(now)
        .bind(limits.concurrency.map(i64::from))
        .bind(limits.rate)
        .execute(c)
        .await
        .map(|_| ()))?;
        let before =
            before.map(|b| serde_json::json!({"concurrency": b.concurrency, "rate": b.rate}));
        let after = serde_json::json!({"concurrency": limits.concurrency, "rate": limits.rate});
        conn.audit(now, actor, "connector.limits", connector, before, after)
            .await?;
        tx.commit().await
    }

    pub async fn limit_overrides(&self, connector: &str) -> StoreResult<LimitOverrides> {
        Ok(overrides_of(self.read().await?.conn(), connector)
            .await?
            .unwrap_or_default())
    }

    // ---- Connector configs set through the API.

    /// Connector configs set through the operator API, by name: each
    /// overrides the config file's connector of that name.
    pub async fn connector_configs(&self) -> StoreResult<Vec<(String, serde_json::Value)>> {
        let rows: Vec<(String, String)> = on!(self.read().await?.conn(), |c| sqlx::query_as(
            "SELECT connector, config FROM connector_configs ORDER BY connector"
        )
        .fetch_all(c)
        .await)?;
        rows.into_iter()
            .map(|(name, text)| {
                let v = serde_json::from_str(&text)
                    .map_err(|e| StoreError::Corrupt(format!("config of {name}: {e}")))?;
                Ok((name, v))
            })
            .collect()
    }

    /// Creates or replaces a connector's config, audited as
    /// `connector.config` with `before`/`after` (the caller redacts secrets
    /// from those; `config` itself is stored whole).
    pub async fn put_connector_config(
        &self,
        connector: &str,
        config: &serde_json::Value,
        before: Option<serde_json::Value>,
        after: serde_json::Value,
        actor: &str,
        now: Millis,
    ) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        let mut conn = tx.conn();
        on!(conn.re(), |c| sqlx::query(
            "INSERT INTO connector_configs (connector, config, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (connector) DO UPDATE SET config = excluded.config, \
                 updated_at = excluded.updated_at",
        )
        .bind(connector)
        .bind(config.to_string())
        .bind(now)
        .execute(c)
        .await
        .map(|_| ()))?;
        conn.audit(now, actor, "connector.config", connector, before, after)
            .await?;
        tx.commit().await
    }

    // ---- Component versions.

    /// Stores a validated component as the connector's next version and makes
    /// it active; the same bytes as the active version are that version.
    /// Versions older than the newest `retention.keep` (the new one
    /// included) are deleted, and the deletion audited.
    #[allow(clippy::too_many_arguments)]
    pub async fn add_component(
        &self,
        connector: &str,
        digest: &str,
        wasm: &[u8],
        info: &serde_json::Value,
        actor: &str,
        now: Millis,
        retention: Retention<'_>,
    ) -> StoreResult<ComponentVersion> {
        let keep = retention.keep;
        let mut tx = self.begin().await?;
        let mut conn = tx.conn();
        conn.lock_connector("component", connector).await?;
        let before = active_version(conn.re(), connector).await?;
        let version = match same_digest(before.as_ref(), digest) {
            Some(active) => active,
            None => {
                let version: i64 = on!(conn.re(), |c| {
                    sqlx::query_scalar(
                    "INSERT INTO components (connector, version, digest, wasm, info, uploaded_at) \
                     SELECT $1, COALESCE(MAX(version), 0) + 1, $2, $3, $4, $5 \
                     FROM components WHERE connector = $1 RETURNING version",
                )
                .bind(connector)
                .bind(digest)
                .bind(wasm)
                .bind(info.to_string())
                .bind(now)
                .fetch_one(c)
                .await
                })?;
                activate(conn.re(), connector, version, now).await?;
                let after = serde_json::json!({"version": version, "digest": digest});
                conn.re()
                    .audit(now, actor, "component.deploy", connector, before, after)
                    .await?;
                if keep > 0 {
                    // Versions are numbered in upload order, so the `keep`
                    // newest are the last `keep` numbers; the new one, just
                    // made active, is among them.
                    let mut pruned: Vec<i64> = on!(conn.re(), |c| sqlx::query_scalar(
                        "DELETE FROM components WHERE connector = $1 AND version <= $2 \
                         AND digest <> $3 RETURNING version",
                    )
                    .bind(connector)
                    .bind(version - i64::from(keep))
                    .bind(retention.except_digest.unwrap_or(""))
                    .fetch_all(c)
                    .await)?;
                    if !pruned.is_empty() {
                        pruned.sort_unstable();
                        conn.audit(
                            now,
                            actor,
                            "component.prune",
                            connector,
                            Some(serde_json::json!({ "versions": pruned })),
                            serde_json::json!({ "kept": keep }),
                        )
                        .await?;
                    }
                }
                version
            }
        };
        tx.commit().await?;
        self.component_versions(connector)
            .await?
            .into_iter()
            .find(|v| v.version == version)
            .ok_or_else(|| StoreError::Corrupt(format!("{connector} version {version} vanished")))
    }

    /// Every stored version of `connector`'s component, newest first.
    pub async fn component_versions(&self, connector: &str) -> StoreResult<Vec<ComponentVersion>> {
        type Row = (i64, String, String, i64, i64, bool);
        let rows: Vec<Row> = on!(self.read().await?.conn(), |c| sqlx::query_as(
            "SELECT c.version, c.digest, c.info, c.uploaded_at, \
                 CAST(octet_length(c.wasm) AS BIGINT), COALESCE(a.version = c.version, FALSE) \
             FROM components c LEFT JOIN active_components a ON a.connector = c.connector \
             WHERE c.connector = $1 ORDER BY c.version DESC",
        )
        .bind(connector)
        .fetch_all(c)
        .await)?;
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

    /// The bytes of one version.
    pub async fn component_wasm(
        &self,
        connector: &str,
        version: i64,
    ) -> StoreResult<Option<Vec<u8>>> {
        Ok(on!(self.read().await?.conn(), |c| sqlx::query_scalar(
            "SELECT wasm FROM components WHERE connector = $1 AND version = $2",
        )
        .bind(connector)
        .bind(version)
        .fetch_optional(c)
        .await)?)
    }

    /// Makes `version` the active one. `false` if there is no such version.
    pub async fn activate_component(
        &self,
        connector: &str,
        version: i64,
        actor: &str,
        now: Millis,
    ) -> StoreResult<bool> {
        let mut tx = self.begin().await?;
        let mut conn = tx.conn();
        conn.lock_connector("component", connector).await?;
        let before = active_version(conn.re(), connector).await?;
        if !activate(conn.re(), connector, version, now).await? {
            return Ok(false);
        }
        let after = serde_json::json!({ "version": version });
        conn.audit(now, actor, "component.activate", connector, before, after)
            .await?;
        tx.commit().await?;
        Ok(true)
    }
}

async fn paused_of(conn: Conn<'_>, connector: &str) -> StoreResult<bool> {
    let v: Option<bool> = on!(conn, |c| sqlx::query_scalar(
        "SELECT paused FROM connector_controls WHERE connector = $1"
    )
    .bind(connector)
    .fetch_optional(c)
    .await)?;
    Ok(v.unwrap_or(false))
}

/// The connector's overrides, `None` when it has no controls row.
async fn overrides_of(conn: Conn<'_>, connector: &str) -> StoreResult<Option<LimitOverrides>> {
    let row: Option<(Option<i64>, Option<f64>)> = on!(conn, |c| sqlx::query_as(
        "SELECT concurrency, rate FROM connector_controls WHERE connector = $1"
    )
    .bind(connector)
    .fetch_optional(c)
    .await)?;
    Ok(row.map(|(concurrency, rate)| LimitOverrides {
        concurrency: concurrency.and_then(|c| u32::try_from(c).ok()),
        rate,
    }))
}

/// The active version and its digest, as audited.
async fn active_version(conn: Conn<'_>, connector: &str) -> StoreResult<Option<serde_json::Value>> {
    let v: Option<(i64, String)> = on!(conn, |c| sqlx::query_as(
        "SELECT a.version, c.digest FROM active_components a \
         JOIN components c ON c.connector = a.connector AND c.version = a.version \
         WHERE a.connector = $1",
    )
    .bind(connector)
    .fetch_optional(c)
    .await)?;
    Ok(v.map(|(version, digest)| serde_json::json!({"version": version, "digest": digest})))
}

/// Makes `version` active if it exists.
async fn activate(conn: Conn<'_>, connector: &str, version: i64, now: Millis) -> StoreResult<bool> {
    // `WHERE` also keeps SQLite from reading `ON CONFLICT` as a join's `ON`.
    let n = on!(conn, |c| sqlx::query(
        "INSERT INTO active_components (connector, version, activated_at) \
         SELECT connector, version, $3 FROM components WHERE connector = $1 AND version = $2 \
         ON CONFLICT (connector) DO UPDATE SET version = excluded.version, \
             activated_at = excluded.activated_at",
    )
    .bind(connector)
    .bind(version)
    .bind(now)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(n == 1)
}

/// The changes one transaction makes to the per-connector counts of
/// deliveries by state (`connector_counts`, one column per state in
/// [`DeliveryState::ALL`] order), written in that transaction by
/// [`Counts::write`], so the counts move exactly when the rows do.
#[derive(Debug, Default)]
pub(crate) struct Counts(BTreeMap<String, [i64; STATES]>);

const STATES: usize = DeliveryState::ALL.len();

/// The statement that adds a transaction's [`Counts`] to a writer's rows:
/// the text before the `VALUES` and after them.
static COUNTS_UPSERT: LazyLock<(String, String)> = LazyLock::new(|| {
    let cols: Vec<&str> = DeliveryState::ALL.iter().map(|s| s.as_str()).collect();
    let insert = format!(
        "INSERT INTO connector_counts (connector, writer, {}) ",
        cols.join(", ")
    );
    let update: Vec<String> = cols
        .iter()
        .map(|c| format!("{c} = connector_counts.{c} + excluded.{c}"))
        .collect();
    let update = update.join(", ");
    (
        insert,
        format!(" ON CONFLICT (connector, writer) DO UPDATE SET {update}"),
    )
});

/// A PostgreSQL statement (for a data-modifying `WITH` item) that adds to
/// `writer`'s counts (a placeholder) the moves in `moves`: a relation of
/// `(connector, from_state, to_state)` rows, one per delivery moved.
pub(crate) fn count_transitions(moves: &str, writer: &str) -> String {
    let deltas: Vec<String> = DeliveryState::ALL
        .iter()
        .map(|s| {
            let s = s.as_str();
            format!(
                "COUNT(*) FILTER (WHERE to_state = '{s}') \
                 - COUNT(*) FILTER (WHERE from_state = '{s}')"
            )
        })
        .collect();
    format!(
        "{} SELECT connector, {writer}, {} FROM {moves} GROUP BY connector{}",
        COUNTS_UPSERT.0,
        deltas.join(", "),
        COUNTS_UPSERT.1
    )
}

/// Pushes [`COUNTS_UPSERT`] with one `VALUES` row per connector's changes
/// onto `$qb` (sqlx's `QueryBuilder` or `lite::Builder`, which share these
/// methods).
macro_rules! push_upsert {
    ($qb:expr, $rows:expr, $writer:expr) => {{
        $qb.push(&COUNTS_UPSERT.0);
        $qb.push_values($rows, |mut b, (connector, d)| {
            b.push_bind(connector).push_bind($writer);
            for n in d {
                b.push_bind(n);
            }
        });
        $qb.push(&COUNTS_UPSERT.1);
    }};
}

impl Counts {
    fn slot(state: DeliveryState) -> usize {
        DeliveryState::ALL
            .iter()
            .position(|s| *s == state)
            .unwrap_or_default()
    }

    /// Applies `f` to `connector`'s changes; a connector's name is copied
    /// only the first time (this runs for every delivery moved).
    fn change(&mut self, connector: &str, f: impl FnOnce(&mut [i64; STATES])) {
        match self.0.get_mut(connector) {
            Some(row) => f(row),
            None => {
                let mut row = [0; STATES];
                f(&mut row);
                self.0.insert(connector.to_string(), row);
            }
        }
    }

    /// `n` deliveries of `connector` went from `from` to `to` (`None`: not
    /// there before: a new delivery).
    pub(crate) fn moved(
        &mut self,
        connector: &str,
        from: Option<DeliveryState>,
        to: DeliveryState,
        n: i64,
    ) {
        if n == 0 || from == Some(to) {
            return;
        }
        self.change(connector, |row| {
            if let Some(from) = from {
                row[Self::slot(from)] -= n;
            }
            row[Self::slot(to)] += n;
        });
    }

    /// `n` deliveries of `connector` in `state` were deleted (a purge).
    pub(crate) fn gone(&mut self, connector: &str, state: DeliveryState, n: i64) {
        self.change(connector, |row| row[Self::slot(state)] -= n);
    }

    /// Adds the changes to `writer`'s rows and forgets them.
    pub(crate) async fn write(&mut self, conn: Conn<'_>, writer: &str) -> StoreResult<()> {
        let rows = self.take();
        if rows.is_empty() {
            return Ok(());
        }
        Ok(on!(conn, |c| {
            let mut qb = QueryBuilder::<Db>::new("");
            push_upsert!(qb, &rows, writer);
            qb.build().execute(c).await.map(|_| ())
        })?)
    }

    /// Adds the changes to `writer`'s rows as one more data-modifying `WITH`
    /// item of the PostgreSQL statement `qb` is building (`, counts AS
    /// (INSERT …)`), so that they cost no round trip of their own; forgets
    /// them. Pushes nothing when nothing changed.
    pub(crate) fn push_cte<'a>(&mut self, qb: &mut QueryBuilder<'a, Postgres>, writer: &'a str) {
        let rows = self.take();
        if rows.is_empty() {
            return;
        }
        qb.push(", counts AS (");
        push_upsert!(qb, rows, writer);
        qb.push(")");
    }

    /// [`Counts::write`] on the SQLite writer's own connection.
    pub(crate) fn write_lite(
        &mut self,
        conn: &rusqlite::Connection,
        writer: &str,
    ) -> StoreResult<()> {
        let rows = self.take();
        if rows.is_empty() {
            return Ok(());
        }
        let mut qb = super::lite::Builder::new("");
        push_upsert!(qb, &rows, writer);
        qb.build().execute(conn).map(|_| ())
    }

    /// The rows to add (those that change anything), forgetting them.
    fn take(&mut self) -> Vec<(String, [i64; STATES])> {
        std::mem::take(&mut self.0)
            .into_iter()
            .filter(|(_, d)| d.iter().any(|n| *n != 0))
            .collect()
    }
}

/// Appends the attempts that `completions` report, run by `node` and
/// finished at `now`, to the attempt log, in the transaction that applied
/// them: SQLite's writer, on its own connection (PostgreSQL logs them in its
/// settle statement).
pub(crate) fn log_attempts_lite(
    conn: &rusqlite::Connection,
    node: &str,
    now: Millis,
    completions: &[&super::Completion],
) -> StoreResult<()> {
    for run in super::runs(completions) {
        let mut qb = super::lite::Builder::new(
            "INSERT INTO attempts \
             (delivery_id, connector, attempt, node, started_at, finished_at, outcome, reason) ",
        );
        qb.push_values(run, |mut b, c| {
            let reason = c.kind.next_at_and_error().1;
            b.push_bind(c.delivery_id)
                .push_bind(c.connector.as_str())
                .push_bind(i64::from(c.attempt))
                .push_bind(node)
                .push_bind(c.started_at)
                .push_bind(now)
                .push_bind(super::outcome_name(c.kind.step()))
                // As PostgreSQL, whose text cannot hold NUL, stores them.
                .push_bind(reason.map(|r| r.replace('\0', "\u{fffd}")));
        });
        // An attempt is logged once; should the same one come again, the
        // first record stands.
        qb.push(" ON CONFLICT (delivery_id, attempt) DO NOTHING");
        qb.build().execute(conn)?;
    }
    Ok(())
}

/// The statement that logs, as `lease_expired`, the attempts of the
/// deliveries `rows` selects (a `FROM` clause over `deliveries d`), before a
/// rescue takes them back: an in-flight row's `updated_at` is its claim.
pub(crate) fn log_lease_expiries(rows: &str, now: &str, reason: &str) -> String {
    format!(
        "INSERT INTO attempts \
             (delivery_id, connector, attempt, node, started_at, finished_at, outcome, reason) \
         SELECT d.id, d.connector, d.attempts, COALESCE(d.lease_owner, ''), d.updated_at, \
             {now}, '{}', \
             {reason} FROM {rows} \
         ON CONFLICT (delivery_id, attempt) DO NOTHING",
        super::outcome_name(crate::queue::lanes::Step::LeaseExpired)
    )
}

/// Makes the copies of replay `id` not started yet expire at `now` (the
/// expiry sweep ends them; no claim takes them meanwhile). How many.
async fn end_copies(conn: Conn<'_>, id: i64, now: Millis) -> StoreResult<u64> {
    static END: LazyLock<String> = LazyLock::new(|| {
        format!(
            "UPDATE deliveries SET expires_at = $2 \
             WHERE {} AND event_seq IN (SELECT seq FROM events WHERE replay_id = $1)",
            crate::queue::lanes::sql::NOT_STARTED
        )
    });
    on!(conn, |c| sqlx::query(&END)
        .bind(id)
        .bind(now)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))
    .map_err(StoreError::from)
}

/// A replay as it is asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct NewReplay {
    pub connector: String,
    /// Events accepted in `[since, until)`, milliseconds since the epoch.
    pub since: Millis,
    pub until: Millis,
    /// Type patterns; empty: whatever the connector's routes take.
    pub types: Vec<String>,
    /// Only events with this key.
    pub key: Option<String>,
    /// Copies made per second at most.
    pub rate: f64,
}

/// A replay and how far it has come.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Replay {
    pub id: i64,
    pub connector: String,
    pub since: Millis,
    pub until: Millis,
    pub types: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    pub rate: f64,
    /// `running`, `done` or `cancelled`.
    pub state: String,
    /// The newest stored event when it was asked for: it goes no further.
    pub last_seq: i64,
    /// Where it began (just before the first event accepted at `since`):
    /// its progress runs from here to `last_seq`.
    pub start_seq: i64,
    /// Every stored event up to here has been examined.
    pub cursor_seq: i64,
    pub examined: u64,
    /// Copies made (each a new delivery).
    pub replayed: u64,
    pub created_by: String,
    pub created_at: Millis,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Millis>,
}

/// How long after it is asked for a replay starts: every ingest under way
/// then has committed (PostgreSQL hands out `seq` before commit).
pub const REPLAY_GRACE_MS: i64 = 2_000;

const REPLAY_COLUMNS: &str = "id, connector, since_ms, until_ms, types, event_key, rate, state, \
     last_seq, start_seq, cursor_seq, examined, replayed, created_by, created_at, finished_at";

type ReplayRow = (
    i64,
    String,
    i64,
    i64,
    String,
    Option<String>,
    f64,
    String,
    i64,
    i64,
    i64,
    i64,
    i64,
    String,
    i64,
    Option<i64>,
);

fn replay_of(row: ReplayRow) -> StoreResult<Replay> {
    let types = serde_json::from_str(&row.4).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    Ok(Replay {
        id: row.0,
        connector: row.1,
        since: row.2,
        until: row.3,
        types,
        key: row.5,
        rate: row.6,
        state: row.7,
        last_seq: row.8,
        start_seq: row.9,
        cursor_seq: row.10,
        examined: row.11.max(0) as u64,
        replayed: row.12.max(0) as u64,
        created_by: row.13,
        created_at: row.14,
        finished_at: row.15,
    })
}

/// Folds the count rows of PostgreSQL writers on nodes not heard from for
/// [`STALE_NODE_MS`] into the connector's shared row.
async fn fold_stale_counts(c: &mut PgConnection) -> StoreResult<()> {
    static FOLD: LazyLock<String> = LazyLock::new(|| {
        let sums: Vec<String> = DeliveryState::ALL
            .iter()
            .map(|s| format!("SUM({})", s.as_str()))
            .collect();
        format!(
            "WITH gone AS (DELETE FROM connector_counts WHERE writer <> '' AND NOT EXISTS \
                 (SELECT 1 FROM nodes n WHERE n.heartbeat_at > {PG_NOW_MS} - $1 \
                  AND connector_counts.writer LIKE n.name || '/%') \
                 RETURNING *) \
             {} SELECT connector, '', {} FROM gone GROUP BY connector{}",
            COUNTS_UPSERT.0,
            sums.join(", "),
            COUNTS_UPSERT.1
        )
    });
    sqlx::query(&FOLD).bind(STALE_NODE_MS).execute(c).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::lock_id;

    #[test]
    fn lock_ids_are_stable_and_separate_their_parts() {
        assert_eq!(lock_id("lane", "hss", "k1"), lock_id("lane", "hss", "k1"));
        assert_ne!(lock_id("lane", "hss", "k1"), lock_id("lane", "hss", "k2"));
        // "ab" + "c" and "a" + "bc" are different lanes.
        assert_ne!(lock_id("lane", "ab", "c"), lock_id("lane", "a", "bc"));
    }
}
