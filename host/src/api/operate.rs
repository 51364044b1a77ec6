//! Operator views and actions on deliveries: dead letters (list, retry,
//! skip, one by one or in bulk), "why is this key blocked", the audit log.
//! Every action is written to the audit log in the same transaction.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};

use super::auth::Actor;
use super::error::ApiError;
use super::AppState;
use crate::queue::now_ms;
use crate::store::{AuditRecord, DeadFilter, DeadLetter, LaneView, OperatorAction};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadQuery {
    pub connector: Option<String>,
    #[serde(rename = "type")]
    pub event_type: Option<String>,
    pub key: Option<String>,
    /// Milliseconds since the epoch.
    pub since: Option<i64>,
    pub until: Option<i64>,
    pub before_id: Option<i64>,
    pub limit: Option<usize>,
}

impl DeadQuery {
    fn filter(&self, default_limit: usize) -> DeadFilter {
        DeadFilter {
            connector: self.connector.clone(),
            event_type: self.event_type.clone(),
            key: self.key.clone(),
            since: self.since,
            until: self.until,
            before_id: self.before_id,
            limit: self.limit.unwrap_or(default_limit),
        }
    }
}

pub async fn dead_letters(
    State(state): State<AppState>,
    Query(q): Query<DeadQuery>,
) -> Result<Json<Vec<DeadLetter>>, ApiError> {
    Ok(Json(state.store.dead_letters(&q.filter(100)).await?))
}

#[derive(Debug, Serialize)]
pub struct ActionAnswer {
    pub delivery_id: i64,
    pub action: &'static str,
}

fn action_of(name: &str) -> Result<(OperatorAction, &'static str), ApiError> {
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
    state.wakers.wake_all();
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
/// parameters: at most `limit` (default 1000) per call.
pub async fn act_bulk(
    State(state): State<AppState>,
    Path(action): Path<String>,
    Extension(actor): Extension<Actor>,
    Query(q): Query<DeadQuery>,
) -> Result<Json<BulkAnswer>, ApiError> {
    let (op, name) = action_of(&action)?;
    let dead = state.store.dead_letters(&q.filter(1000)).await?;
    let mut applied = 0;
    for d in &dead {
        if state
            .store
            .operator_action(d.delivery_id, op, &actor.0, now_ms())
            .await?
        {
            applied += 1;
        }
    }
    state.wakers.wake_all();
    Ok(Json(BulkAnswer {
        action: name,
        matched: dead.len(),
        applied,
    }))
}

/// `GET /v1/keys/{key}`: per connector, the lane's head delivery (its state,
/// attempts, last error, next attempt) and how many wait behind it.
pub async fn key(
    State(state): State<AppState>,
    Path(key): Path<String>,
) -> Result<Json<Vec<LaneView>>, ApiError> {
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
            .audit_log(q.limit.unwrap_or(100), q.before_id)
            .await?,
    ))
}
