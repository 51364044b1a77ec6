//! Operator views and actions on deliveries: dead letters (list, retry,
//! skip, one by one or in bulk), "why is this key blocked", the audit log.
//! Every action is written to the audit log in the same transaction.

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};

use super::auth::Actor;
use super::error::ApiError;
use super::extract::{printable_query, stored_text, Path, Query};
use super::openapi::{Param, Ty};
use super::AppState;
use crate::queue::now_ms;
use crate::store::{AuditRecord, DeadFilter, DeadLetter, LaneView, OperatorAction};

const fn int(min: i64, max: i64, default: Option<i64>) -> Ty {
    Ty::Int { min, max, default }
}

const ANY_TIME: Ty = int(i64::MIN, i64::MAX, None);

const CONNECTOR: Param = Param::query(
    "connector",
    Ty::Text { max_len: 0 },
    "Only this connector's (empty: every connector's)",
);
const TYPE: Param = Param::query(
    "type",
    Ty::Text { max_len: 0 },
    "Only events of this exact type (empty: any)",
);
const KEY_FILTER: Param = Param::query(
    "key",
    Ty::Text { max_len: 0 },
    "Only events with this key (empty: any)",
);
const REASON: Param = Param::query(
    "reason",
    Ty::Text { max_len: 0 },
    "Only those whose last error contains this text (empty: any)",
);
const SINCE: Param = Param::query(
    "since",
    ANY_TIME,
    "Only those that died at or after this time (milliseconds since the Unix epoch)",
);
const UNTIL: Param = Param::query(
    "until",
    ANY_TIME,
    "Only those that died before this time (milliseconds since the Unix epoch)",
);
const BEFORE_ID: Param = Param::query(
    "before_id",
    ANY_TIME,
    "Page: only ids below this one (newest first)",
);

/// The filters of `GET /v1/dead-letters`.
pub const DEAD_FILTERS: &[Param] = &[
    CONNECTOR,
    TYPE,
    KEY_FILTER,
    REASON,
    SINCE,
    UNTIL,
    BEFORE_ID,
    Param::query(
        "limit",
        int(1, MAX_LIMIT as i64, Some(100)),
        "Most dead letters listed",
    ),
];

/// The filters of `POST /v1/dead-letters/{action}`.
pub const BULK_FILTERS: &[Param] = &[
    CONNECTOR,
    TYPE,
    KEY_FILTER,
    REASON,
    SINCE,
    UNTIL,
    BEFORE_ID,
    Param::query(
        "limit",
        int(1, MAX_LIMIT as i64, Some(MAX_LIMIT as i64)),
        "Most dead letters acted on in this call",
    ),
];

/// The parameters of `GET /v1/audit`.
pub const AUDIT_QUERY: &[Param] = &[
    Param::query(
        "limit",
        int(1, MAX_LIMIT as i64, Some(100)),
        "Most records listed",
    ),
    BEFORE_ID,
];

pub const ACTION: Param = Param::path(
    "action",
    Ty::OneOf(&["retry", "skip"]),
    "retry: back to ready in the same lane position; skip: final, keys released",
)
.example("retry");

pub const DELIVERY_ID: Param =
    Param::path("id", int(1, i64::MAX, None), "The delivery's id").example("1");

pub const KEY: Param = Param::path(
    "key",
    Ty::Text {
        max_len: crate::queue::event::MAX_KEY_LEN,
    },
    "An ordering key, as events carry it",
)
.example("msisdn:2065551234");

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadQuery {
    pub connector: Option<String>,
    #[serde(rename = "type")]
    pub event_type: Option<String>,
    pub key: Option<String>,
    pub reason: Option<String>,
    /// Milliseconds since the epoch.
    pub since: Option<i64>,
    pub until: Option<i64>,
    pub before_id: Option<i64>,
    pub limit: Option<usize>,
}

/// Most records one call lists or acts on.
pub const MAX_LIMIT: usize = 1000;

/// `limit`, or `default` when absent; `400 invalid_query` outside
/// 1..=[`MAX_LIMIT`].
pub(crate) fn limit_of(limit: Option<usize>, default: usize) -> Result<usize, ApiError> {
    match limit {
        None => Ok(default),
        Some(n @ 1..=MAX_LIMIT) => Ok(n),
        Some(n) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            format!("`limit` must be 1 to {MAX_LIMIT}, got {n}"),
        )
        .with_field("limit")),
    }
}

/// A text filter: empty means no filter (as an HTML form sends an empty
/// field); control characters match nothing stored and are refused.
fn text_filter(field: &'static str, value: &Option<String>) -> Result<Option<String>, ApiError> {
    match value.as_deref() {
        None | Some("") => Ok(None),
        Some(v) => {
            printable_query(field, v)?;
            Ok(Some(v.to_string()))
        }
    }
}

impl DeadQuery {
    pub(crate) fn filter(&self, default_limit: usize) -> Result<DeadFilter, ApiError> {
        Ok(DeadFilter {
            connector: text_filter("connector", &self.connector)?,
            event_type: text_filter("type", &self.event_type)?,
            key: text_filter("key", &self.key)?,
            reason: text_filter("reason", &self.reason)?,
            since: self.since,
            until: self.until,
            before_id: self.before_id,
            limit: limit_of(self.limit, default_limit)?,
        })
    }
}

pub async fn dead_letters(
    State(state): State<AppState>,
    Query(q): Query<DeadQuery>,
) -> Result<Json<Vec<DeadLetter>>, ApiError> {
    Ok(Json(
        state.store.catalog().dead_letters(&q.filter(100)?).await?,
    ))
}

#[derive(Debug, Serialize)]
pub struct ActionAnswer {
    pub delivery_id: i64,
    pub action: &'static str,
}

pub(crate) fn action_of(name: &str) -> Result<(OperatorAction, &'static str), ApiError> {
    match name {
        "retry" => Ok((OperatorAction::Retry, "retry")),
        "skip" => Ok((OperatorAction::Skip, "skip")),
        other => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("unknown action {other:?}: use retry or skip"),
        )),
    }
}

/// `POST /v1/deliveries/{id}/retry` and `/skip`: only dead deliveries.
pub async fn act(
    State(state): State<AppState>,
    Path((id, action)): Path<(i64, String)>,
    Extension(actor): Extension<Actor>,
) -> Result<Json<ActionAnswer>, ApiError> {
    let (op, name) = action_of(&action)?;
    if !state
        .store
        .operator_action(id, op, &actor.0, now_ms())
        .await?
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_dead",
            format!("delivery {id} does not exist or is not dead; only dead letters can be retried or skipped"),
        ));
    }
    state.fleet.registry().wake_all();
    Ok(Json(ActionAnswer {
        delivery_id: id,
        action: name,
    }))
}

#[derive(Debug, Serialize)]
pub struct BulkAnswer {
    pub action: &'static str,
    pub matched: usize,
    pub applied: usize,
}

/// `POST /v1/dead-letters/retry` and `/skip` with the list filters as query
/// parameters: at most `limit` (default [`MAX_LIMIT`]) per call.
pub async fn act_bulk(
    State(state): State<AppState>,
    Path(action): Path<String>,
    Extension(actor): Extension<Actor>,
    Query(q): Query<DeadQuery>,
) -> Result<Json<BulkAnswer>, ApiError> {
    let (op, name) = action_of(&action)?;
    let filter = q.filter(MAX_LIMIT)?;
    let dead = state.store.catalog().dead_letters(&filter).await?;
    let ids: Vec<i64> = dead.iter().map(|d| d.delivery_id).collect();
    let applied = act_on(&state, &ids, op, &actor.0).await?;
    Ok(Json(BulkAnswer {
        action: name,
        matched: dead.len(),
        applied,
    }))
}

/// Retries or skips each of `ids` that is dead, each audited: how many were.
pub(crate) async fn act_on(
    state: &AppState,
    ids: &[i64],
    op: OperatorAction,
    actor: &str,
) -> Result<usize, ApiError> {
    let mut applied = 0;
    for &id in ids {
        if state.store.operator_action(id, op, actor, now_ms()).await? {
            applied += 1;
        }
    }
    state.fleet.registry().wake_all();
    Ok(applied)
}

/// `GET /v1/keys/{key}`: per connector, the lane's head delivery (its state,
/// attempts, last error, next attempt) and how many wait behind it.
pub async fn key(
    State(state): State<AppState>,
    Path(key): Path<String>,
) -> Result<Json<Vec<LaneView>>, ApiError> {
    stored_text("key", &key, crate::queue::event::MAX_KEY_LEN)?;
    let names = state.fleet.names();
    Ok(Json(state.store.lanes(&key, &names).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    pub limit: Option<usize>,
    pub before_id: Option<i64>,
}

pub async fn audit(
    State(state): State<AppState>,
    Query(q): Query<AuditQuery>,
) -> Result<Json<Vec<AuditRecord>>, ApiError> {
    Ok(Json(
        state
            .store
            .catalog()
            .audit_log(limit_of(q.limit, 100)?, q.before_id)
            .await?,
    ))
}
