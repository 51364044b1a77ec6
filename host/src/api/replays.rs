//! Replays (SPEC §4.2): `POST /v1/replays` asks for stored events to be
//! delivered again to one connector (without `types`: what its routes take,
//! which is also how a new connector is backfilled); `GET /v1/replays` and
//! `/v1/replays/{id}` show their progress; `POST /v1/replays/{id}/cancel`
//! stops one. The work itself is `crate::replay`, on every node.

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};

use super::auth::Actor;
use super::error::ApiError;
use super::extract::{JsonBody, Path, Query};
use super::openapi::{Param, Ty};
use super::AppState;
use crate::queue::event::MAX_KEY_LEN;
use crate::queue::now_ms;
use crate::queue::route::RoutePattern;
use crate::store::{NewReplay, Replay};

/// Copies per second when neither the request nor the connector says: low
/// enough to leave a destination room for live traffic.
pub const DEFAULT_RATE: f64 = 200.0;
/// The most copies per second a replay may ask for.
pub const MAX_RATE: f64 = 100_000.0;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    pub connector: String,
    /// Events accepted at or after this time (milliseconds since the epoch).
    pub since: i64,
    /// And before this one; default now.
    pub until: Option<i64>,
    /// Type patterns; default the connector's routes (a backfill).
    #[serde(default)]
    pub types: Vec<String>,
    /// Only events with this key.
    pub key: Option<String>,
    /// Copies made per second at most; default half the connector's rate,
    /// or [`DEFAULT_RATE`].
    pub rate: Option<f64>,
}

fn invalid(message: String) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_replay", message)
}

/// The replay `body` asks for, checked against the connector's settings.
async fn request_of(state: &AppState, body: &[u8], now: i64) -> Result<NewReplay, ApiError> {
    let req: ReplayRequest = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            format!(
                "expected {{\"connector\": name, \"since\": ms, \"until\"?: ms, \"types\"?: \
                 [pattern], \"key\"?: key, \"rate\"?: per second}}: {e}"
            ),
        )
    })?;
    let Some(config) = state.fleet.get(&req.connector) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "connector_not_found",
            format!("no connector named {:?} is configured", req.connector),
        ));
    };
    let until = req.until.unwrap_or(now + 1);
    if req.since < 0 || until <= req.since {
        return Err(invalid(format!(
            "`since` ({}) must be a time before `until` ({until}), in milliseconds since the epoch",
            req.since
        )));
    }
    for t in &req.types {
        RoutePattern::parse(t).map_err(|e| invalid(format!("types: {e}")))?;
    }
    if let Some(k) = &req.key {
        if k.is_empty() || k.chars().count() > MAX_KEY_LEN || k.chars().any(char::is_control) {
            return Err(invalid(format!(
                "`key` must be 1 to {MAX_KEY_LEN} characters without control characters"
            )));
        }
    }
    let rate = match req.rate {
        Some(r) if r.is_finite() && r > 0.0 && r <= MAX_RATE => r,
        Some(r) => {
            return Err(invalid(format!(
            "`rate` must be a number of copies per second above 0 and at most {MAX_RATE}, got {r}"
        )))
        }
        // The connector's rate in force (a run-time override first).
        None => {
            let overrides = state.store.catalog().limit_overrides(&config.name).await?;
            overrides
                .rate
                .or(config.rate)
                .map_or(DEFAULT_RATE, |r| (r / 2.0).max(0.1))
        }
    };
    Ok(NewReplay {
        connector: req.connector,
        since: req.since,
        until,
        types: req.types,
        key: req.key,
        rate,
    })
}

/// `POST /v1/replays`.
pub async fn start(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    JsonBody(body): JsonBody,
) -> Result<(StatusCode, Json<Replay>), ApiError> {
    let now = now_ms();
    let replay = request_of(&state, &body, now).await?;
    let replay = state
        .store
        .catalog()
        .create_replay(&replay, &actor.0, now)
        .await?;
    Ok((StatusCode::CREATED, Json(replay)))
}

pub const REPLAY_ID: Param = Param::path(
    "id",
    Ty::Int {
        min: 1,
        max: i64::MAX,
        default: None,
    },
    "The replay's id",
)
.example("1");

pub const LIST_QUERY: &[Param] = &[Param::query(
    "limit",
    Ty::Int {
        min: 1,
        max: super::operate::MAX_LIMIT as i64,
        default: Some(100),
    },
    "Most replays listed",
)];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub limit: Option<usize>,
}

/// `GET /v1/replays`: newest first.
pub async fn list(
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Vec<Replay>>, ApiError> {
    let limit = super::operate::limit_of(q.limit, 100)?;
    Ok(Json(state.store.catalog().replays(None, limit).await?))
}

fn not_found(id: i64) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "replay_not_found",
        format!("no replay {id}"),
    )
}

/// `GET /v1/replays/{id}`.
pub async fn show(
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> Result<Json<Replay>, ApiError> {
    match state.store.catalog().replay(id).await? {
        Some(r) => Ok(Json(r)),
        None => Err(not_found(id)),
    }
}

#[derive(Debug, Serialize)]
pub struct Cancelled {
    pub replay: Replay,
    /// Its copies waiting (not in flight), ended now (as `expired`).
    pub ended: u64,
    /// Its dead copies, skipped so that none holds a key.
    pub skipped_dead: u64,
}

/// `POST /v1/replays/{id}/cancel`.
pub async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    Extension(actor): Extension<Actor>,
) -> Result<Json<Cancelled>, ApiError> {
    let catalog = state.store.catalog();
    let now = now_ms();
    match catalog.cancel_replay(id, &actor.0, now).await? {
        Some((replay, ended)) => {
            let mut skipped_dead = 0;
            for delivery in catalog.replay_dead_copies(id, 100_000).await? {
                let skip = crate::store::OperatorAction::Skip;
                if state
                    .store
                    .operator_action(delivery, skip, &actor.0, now)
                    .await?
                {
                    skipped_dead += 1;
                }
            }
            state.fleet.registry().wake(&replay.connector);
            Ok(Json(Cancelled {
                replay,
                ended,
                skipped_dead,
            }))
        }
        None => match catalog.replay(id).await? {
            None => Err(not_found(id)),
            Some(r) => Err(ApiError::new(
                StatusCode::CONFLICT,
                "replay_not_running",
                format!("replay {id} is {} already", r.state),
            )),
        },
    }
}
