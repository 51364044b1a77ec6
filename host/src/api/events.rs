//! `POST /v1/events` and `GET /v1/events/{id}` (SPEC §4.1).

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::Serialize;

use super::error::ApiError;
use super::extract::{declared_len, read_body, require_json, Path};
use super::openapi::{Param, Ty};
use super::AppState;
use crate::queue::event::{parse_body, MAX_ID_LEN};
use crate::queue::now_ms;
use crate::store::{EventView, IngestCounts, IngestOutcome, Routed};

#[derive(Debug, Serialize)]
pub struct IngestAnswer {
    pub accepted: u64,
    pub duplicates: u64,
    pub unrouted: u64,
}

impl From<IngestCounts> for IngestAnswer {
    fn from(c: IngestCounts) -> Self {
        Self {
            accepted: c.accepted,
            duplicates: c.duplicates,
            unrouted: c.unrouted,
        }
    }
}

pub async fn ingest(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<IngestAnswer>), ApiError> {
    let started = std::time::Instant::now();
    let result = ingest_inner(&state, &headers, body).await;
    let (status, counts) = match &result {
        Ok((s, Json(a))) => (s.as_u16(), (a.accepted, a.duplicates, a.unrouted)),
        Err(e) => (e.status.as_u16(), (0, 0, 0)),
    };
    crate::metrics::global().ingest(status, started.elapsed(), counts.0, counts.1, counts.2);
    result
}

async fn ingest_inner(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<IngestAnswer>), ApiError> {
    require_json(headers)?;
    let bytes = read_body(
        body,
        declared_len(headers),
        state.max_body_bytes,
        "; split it into smaller batches",
    )
    .await?;
    let events = parse_body(&bytes, state.max_batch)?;
    if events.is_empty() {
        // An empty batch is well formed and has nothing to make durable.
        return Ok((StatusCode::ACCEPTED, Json(IngestCounts::default().into())));
    }
    let routes = state.fleet.routes();
    let routed: Vec<Routed> = events
        .into_iter()
        .map(|event| routes.routed(event))
        .collect();
    let mut touched: Vec<&str> = routed
        .iter()
        .flat_map(|r| r.connectors.iter().map(String::as_str))
        .collect();
    touched.sort_unstable();
    touched.dedup();
    let touched: Vec<String> = touched.into_iter().map(String::from).collect();

    match state.store.ingest(routed, now_ms()).await? {
        IngestOutcome::Accepted(counts) => {
            for c in touched.iter().filter(|c| counts.needs_wake(c)) {
                state.fleet.registry().wake(c);
            }
            for (c, n) in &counts.superseded {
                if let Some(entry) = state.fleet.registry().get(c) {
                    entry.metrics().superseded(*n);
                }
            }
            Ok((StatusCode::ACCEPTED, Json(counts.into())))
        }
        IngestOutcome::Conflict { index, id } => Err(ApiError::new(
            StatusCode::CONFLICT,
            "id_conflict",
            format!(
                "event {index}: id {id:?} was already accepted with a different body; \
                 nothing of this request was stored"
            ),
        )
        .with_index(index)),
    }
}

pub const EVENT_ID: Param = Param::path(
    "id",
    Ty::Text {
        max_len: MAX_ID_LEN,
    },
    "The event's id",
)
.example("evt-000123");

pub async fn show(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<EventView>, ApiError> {
    super::extract::stored_text("id", &id, MAX_ID_LEN)?;
    match state.store.catalog().event(&id).await? {
        Some(view) => Ok(Json(view)),
        None => Err(no_event(&state, &id).await?),
    }
}

/// 404 for an event not stored whole, saying why as far as the store can
/// tell: an event reduced to its id after `storage.payload_retention_days`
/// is known (a re-post is still a duplicate), its details are not.
pub async fn no_event(state: &AppState, id: &str) -> Result<ApiError, ApiError> {
    let why = if state.store.catalog().reduced_to_id(id).await? {
        "it finished and passed the payload retention (storage.payload_retention_days): \
         only its id is kept, until the dedup window ends, so a re-post is still a duplicate"
    } else {
        "it was never accepted, or it finished and passed the dedup window"
    };
    Ok(ApiError::new(
        StatusCode::NOT_FOUND,
        "event_not_found",
        format!("no event with id {id:?} is stored: {why}"),
    ))
}
