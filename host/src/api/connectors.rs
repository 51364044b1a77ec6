//! Connectors: list, component versions, hot load, roll back (SPEC §4.2).
//!
//! `PUT /v1/connectors/{name}/component` takes the raw `.wasm` bytes. The
//! upload is validated (compiles, implements the world, answers `describe`)
//! before it is stored; an invalid upload is a 422 and the running version
//! stays. New deliveries use an accepted version at once; attempts already
//! running finish on the version they started with.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::Extension;
use axum::Json;
use serde::Serialize;

use super::auth::Actor;
use super::error::ApiError;
use super::extract::{declared_len, read_body, JsonBody, Path, MAX_COMPONENT_BYTES};
use super::openapi::{Param, Ty, COMPONENT_MEDIA_TYPES, MAX_CONCURRENCY_OVERRIDE};
use super::AppState;
use crate::connectors::{Connectors, DeployError};
use crate::queue::now_ms;
use crate::store::{ComponentVersion, LimitOverrides, StateCounts};

/// A connector's name (`[[connectors]] name`).
pub const NAME: Param = Param::path(
    "name",
    Ty::Pattern("^[A-Za-z0-9_-]{1,64}$"),
    "The connector's name",
)
.example("hss");

pub const PAUSE_ACTION: Param = Param::path(
    "action",
    Ty::OneOf(&["pause", "resume"]),
    "pause: queue, attempt nothing; resume: attempt again",
)
.example("pause");

#[derive(Debug, Serialize)]
pub struct ConnectorView {
    pub name: String,
    pub routes: Vec<crate::queue::route::RouteSpec>,
    pub concurrency: usize,
    /// Attempts per second at most (absent: unlimited).
    pub rate: Option<f64>,
    pub allowed_hosts: Vec<String>,
    pub component: Option<ComponentVersion>,
    /// Paused by an operator: events are queued, nothing is attempted.
    pub paused: bool,
    /// Operator overrides of `concurrency` and `rate` (null: as configured).
    pub overrides: LimitOverrides,
    pub deliveries: StateCounts,
    /// Age of the oldest unfinished delivery, in milliseconds.
    pub oldest_pending_age_ms: Option<i64>,
    /// The breaker as this node last saw it (absent before the first attempt).
    pub breaker: Option<crate::queue::breaker::BreakerState>,
    /// Every setting in force (as `PUT /v1/connectors/{name}` takes them),
    /// secret header values redacted.
    pub settings: serde_json::Value,
}

fn runtime(state: &AppState) -> Result<&Connectors, ApiError> {
    state.connectors.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "runtime_unavailable",
            "this gateway runs without a connector runtime",
        )
    })
}

fn unknown(name: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "connector_not_found",
        format!("no connector named {name:?} is configured"),
    )
}

impl From<DeployError> for ApiError {
    fn from(e: DeployError) -> Self {
        match e {
            DeployError::UnknownConnector(name) => unknown(&name),
            DeployError::Invalid(reason) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_component",
                format!("component refused, the running version stays: {reason}"),
            ),
            DeployError::NoPreviousVersion(name) => ApiError::new(
                StatusCode::CONFLICT,
                "no_previous_version",
                format!("connector {name:?} has no earlier version to roll back to"),
            ),
            DeployError::Busy(reason) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                format!("the running version stays: {reason}"),
            ),
            DeployError::Store(e) => e.into(),
        }
    }
}

pub async fn list(State(state): State<AppState>) -> Result<Json<Vec<ConnectorView>>, ApiError> {
    let configs = state.fleet.configs();
    let mut out = Vec::with_capacity(configs.len());
    for c in configs.iter() {
        out.push(view(&state, &c.name).await?);
    }
    Ok(Json(out))
}

pub async fn show(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<ConnectorView>, ApiError> {
    Ok(Json(view(&state, &name).await?))
}

pub(crate) async fn view(state: &AppState, name: &str) -> Result<ConnectorView, ApiError> {
    let c = state.fleet.get(name).ok_or_else(|| unknown(name))?;
    let versions = state.store.catalog().component_versions(name).await?;
    Ok(ConnectorView {
        name: c.name.clone(),
        routes: c.routes.clone(),
        concurrency: c.concurrency,
        rate: c.rate,
        allowed_hosts: c.allowed_hosts.clone(),
        component: versions.into_iter().find(|v| v.active),
        paused: state.store.catalog().is_paused(name).await?,
        overrides: state.store.catalog().limit_overrides(name).await?,
        deliveries: state.store.catalog().state_counts(name).await?,
        oldest_pending_age_ms: state
            .store
            .catalog()
            .queue_stats(name)
            .await?
            .oldest_pending_at
            .map(|t| (now_ms() - t).max(0)),
        breaker: state
            .fleet
            .registry()
            .get(name)
            .and_then(|e| e.breaker_state()),
        settings: c.redacted(),
    })
}

pub async fn versions(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Vec<ComponentVersion>>, ApiError> {
    if state.fleet.get(&name).is_none() {
        return Err(unknown(&name));
    }
    Ok(Json(state.store.catalog().component_versions(&name).await?))
}

pub async fn upload(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Extension(actor): Extension<Actor>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<ComponentVersion>), ApiError> {
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        let text = ct.to_str().unwrap_or("");
        let essence = text.split(';').next().unwrap_or("").trim();
        if !COMPONENT_MEDIA_TYPES
            .iter()
            .any(|m| essence.eq_ignore_ascii_case(m))
        {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                format!("send the component as application/wasm, got {text:?}"),
            ));
        }
    }
    // Before reading up to 64 MiB for a connector that does not exist.
    if state.fleet.get(&name).is_none() {
        return Err(unknown(&name));
    }
    let wasm = read_body(body, declared_len(&headers), MAX_COMPONENT_BYTES, "").await?;
    Ok((
        StatusCode::CREATED,
        Json(deploy(&state, &name, &wasm, &actor.0).await?),
    ))
}

/// Validates, stores and activates a component version (the API's upload
/// and the console's).
pub(crate) async fn deploy(
    state: &AppState,
    name: &str,
    wasm: &[u8],
    actor: &str,
) -> Result<ComponentVersion, ApiError> {
    if wasm.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "empty_body",
            "send the component's .wasm bytes as the request body",
        ));
    }
    let stored = runtime(state)?
        .deploy(&*state.store, name, wasm, actor)
        .await?;
    state.fleet.registry().wake(name);
    Ok(stored)
}

pub async fn rollback(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Extension(actor): Extension<Actor>,
) -> Result<Json<ComponentVersion>, ApiError> {
    Ok(Json(roll_back(&state, &name, &actor.0).await?))
}

/// Re-activates the version before the active one.
pub(crate) async fn roll_back(
    state: &AppState,
    name: &str,
    actor: &str,
) -> Result<ComponentVersion, ApiError> {
    let v = runtime(state)?.rollback(&*state.store, name, actor).await?;
    state.fleet.registry().wake(name);
    Ok(v)
}

/// `POST /v1/connectors/{name}/pause` and `/resume`.
pub async fn pause(
    State(state): State<AppState>,
    Path((name, action)): Path<(String, String)>,
    Extension(actor): Extension<Actor>,
) -> Result<Json<ConnectorView>, ApiError> {
    let paused = match action.as_str() {
        "pause" => true,
        "resume" => false,
        other => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("unknown action {other:?}: use pause or resume"),
            ))
        }
    };
    set_paused(&state, &name, paused, &actor.0).await?;
    Ok(Json(view(&state, &name).await?))
}

/// Pauses or resumes a connector, audited.
pub(crate) async fn set_paused(
    state: &AppState,
    name: &str,
    paused: bool,
    actor: &str,
) -> Result<(), ApiError> {
    if state.fleet.get(name).is_none() {
        return Err(unknown(name));
    }
    state
        .store
        .catalog()
        .set_paused(name, paused, actor, now_ms())
        .await?;
    state.fleet.registry().wake(name);
    if !paused {
        // The other nodes sharing the store claim at once too, rather than
        // at their next poll.
        if let Some(cluster) = state.store.cluster() {
            cluster.announce_work(name);
        }
    }
    Ok(())
}

/// `PUT /v1/connectors/{name}/limits` with `{"concurrency": n|null, "rate": r|null}`:
/// overrides the configured limits at run time on every node (null: as
/// configured). Takes effect within a second.
pub async fn limits(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Extension(actor): Extension<Actor>,
    JsonBody(body): JsonBody,
) -> Result<Json<ConnectorView>, ApiError> {
    if state.fleet.get(&name).is_none() {
        return Err(unknown(&name));
    }
    let invalid = |detail: String| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_limits",
            format!(
                "expected {{\"concurrency\": integer or null, \"rate\": number or null}}: {detail}"
            ),
        )
    };
    let value: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| invalid(e.to_string()))?;
    // serde would also read a struct from an array (`[8, null]`).
    if !value.is_object() {
        return Err(invalid("the body is not an object".into()));
    }
    let limits: LimitOverrides =
        serde_json::from_value(value).map_err(|e| invalid(e.to_string()))?;
    set_limits(&state, &name, limits, &actor.0).await?;
    Ok(Json(view(&state, &name).await?))
}

/// Overrides a connector's limits after checking them, audited.
pub(crate) async fn set_limits(
    state: &AppState,
    name: &str,
    limits: LimitOverrides,
    actor: &str,
) -> Result<(), ApiError> {
    if state.fleet.get(name).is_none() {
        return Err(unknown(name));
    }
    if limits.concurrency == Some(0)
        || limits
            .concurrency
            .is_some_and(|c| c > MAX_CONCURRENCY_OVERRIDE)
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_limits",
            format!("concurrency must be between 1 and {MAX_CONCURRENCY_OVERRIDE}"),
        ));
    }
    if limits.rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_limits",
            "rate must be a positive number of deliveries per second",
        ));
    }
    state
        .store
        .catalog()
        .set_limits(name, limits, actor, now_ms())
        .await?;
    state.fleet.registry().wake(name);
    Ok(())
}

/// `PUT /v1/connectors/{name}` with the connector's settings as JSON (the
/// fields of a `[[connectors]]` entry in the config file; `name` may be left
/// out): creates the connector or replaces its settings. Stored and audited
/// (secret header values redacted), in force on this node at once and on
/// every node sharing the store within seconds. The component is uploaded
/// separately (`PUT /v1/connectors/{name}/component`).
pub async fn configure(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Extension(actor): Extension<Actor>,
    JsonBody(body): JsonBody,
) -> Result<(StatusCode, Json<ConnectorView>), ApiError> {
    let invalid = |message: String| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_connector",
            message,
        )
    };
    let mut value: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("request body is not JSON: {e}"),
        )
    })?;
    let Some(fields) = value.as_object_mut() else {
        return Err(invalid(
            "expected an object with the connector's settings".into(),
        ));
    };
    match fields.get("name") {
        None => {
            fields.insert("name".into(), name.clone().into());
        }
        Some(n) if n.as_str() == Some(name.as_str()) => {}
        Some(n) => {
            return Err(invalid(format!(
                "body names connector {n}, the path {name:?}: rename by creating a new connector"
            )))
        }
    }
    if fields.get("component").is_some_and(|c| !c.is_null()) {
        return Err(invalid(
            "\"component\" is a file path for the config file; upload the component with \
             PUT /v1/connectors/{name}/component"
                .into(),
        ));
    }
    // serde would also read these tables from arrays (`"retry": [1, 2, 3]`).
    for table in ["retry", "breaker", "limits"] {
        if fields.get(table).is_some_and(|t| !t.is_object()) {
            return Err(invalid(format!("`{table}` must be an object")));
        }
    }
    // A secret header is untagged (a value, or a table): serde would read
    // the table from an array too, and ignore keys it does not know.
    if let Some(serde_json::Value::Object(headers)) = fields.get("secret_headers") {
        for (header, secret) in headers {
            if let Some(table) = secret.as_object() {
                if let Some(k) = table
                    .keys()
                    .find(|k| !matches!(k.as_str(), "value" | "hosts"))
                {
                    return Err(invalid(format!(
                        "secret_headers.{header}: unknown field `{k}`, expected `value` and `hosts`"
                    )));
                }
            } else if !secret.is_string() {
                return Err(invalid(format!(
                    "secret_headers.{header}: expected a string, or {{\"value\": …, \"hosts\": […]}}"
                )));
            }
        }
    }
    let config: crate::config::ConnectorConfig =
        serde_json::from_value(value).map_err(|e| invalid(e.to_string()))?;
    let created = match state.fleet.put(&*state.store, config, &actor.0).await {
        Ok(created) => created,
        Err(crate::fleet::FleetError::Invalid(e)) => return Err(invalid(e.to_string())),
        Err(crate::fleet::FleetError::Store(e)) => return Err(e.into()),
    };
    state.fleet.registry().wake(&name);
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(view(&state, &name).await?)))
}
