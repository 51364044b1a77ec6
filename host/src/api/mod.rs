//! HTTP API: ingest (`POST /v1/events`), event look-up, the operator API,
//! health, metrics, and the OpenAPI document of all of it.
//!
//! Errors are typed JSON with a stable code:
//! `{"error": {"code": "...", "message": "...", "index": i, "field": "..."}}`.
//! Every 4xx is that envelope, whoever answers it: a handler, an extractor
//! (`extract`: query strings, path segments, bodies and their limits) or the
//! router (404 for no such path, 405 with `Allow` for no such method). Bad
//! input stores nothing; a store that cannot commit is a 503 (retry later);
//! an internal fault is a logged 500 without detail.

pub mod auth;
pub(crate) mod connectors;
pub mod error;
pub(crate) mod events;
pub mod extract;
pub mod openapi;
pub(crate) mod operate;
pub(crate) mod replays;

use std::sync::Arc;

use axum::Router;

use self::openapi::{Body, Content, Reply};
use crate::config::Scope;
use crate::connectors::Connectors;
use crate::fleet::Fleet;
use crate::store::Store;

#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    /// The connectors served, their routes and settings (changeable at run
    /// time), and each one's live record (`Fleet::registry`).
    pub fleet: Fleet,
    /// The connector runtime, which loads components into the registry's
    /// entries; `None` where the gateway runs without one (API tests).
    pub connectors: Option<Connectors>,
    pub max_body_bytes: usize,
    pub max_batch: usize,
    pub tokens: auth::Tokens,
}

/// The route table: the router and the OpenAPI document are both built from
/// it, so neither can drift from the other. Each entry is the handler and
/// the fields of its [`openapi::RouteDoc`] (the rest as
/// [`openapi::RouteDoc::DEFAULT`]: admin scope, no parameters, no body).
macro_rules! routes {
    ($($method:ident $path:literal => $handler:expr, { $($field:ident: $value:expr),* $(,)? })*) => {
        /// Every route, as documented in `/v1/openapi.json`.
        pub const ROUTES: &[openapi::RouteDoc] = &[$(openapi::RouteDoc {
            method: stringify!($method),
            path: $path,
            $($field: $value,)*
            ..openapi::RouteDoc::DEFAULT
        }),*];

        fn add_routes(router: Router<AppState>) -> Router<AppState> {
            router $(.route($path, axum::routing::$method($handler)))*
        }
    };
}

routes! {
    post "/v1/events" => events::ingest, {
        scope: Some(Scope::Ingest),
        summary: "Ingest one event or a batch; 202 once durable",
        body: Body::Events,
        ok: &[Reply::json(202, "accepted, duplicates and unrouted counts; the new events are durable", "IngestAnswer")],
        errors: &[400, 409, 413, 415, 503],
    }
    get "/v1/events/{id}" => events::show, {
        scope: Some(Scope::Read),
        summary: "An event and the state of each of its deliveries",
        path_params: &[events::EVENT_ID],
        ok: &[Reply::json(200, "the event", "EventView")],
        errors: &[400, 404, 503],
    }
    get "/v1/connectors" => connectors::list, {
        scope: Some(Scope::Read),
        summary: "Every connector with its component and queue",
        ok: &[Reply::list(200, "connectors", "Connector")],
        errors: &[503],
    }
    get "/v1/connectors/{name}" => connectors::show, {
        scope: Some(Scope::Read),
        summary: "One connector",
        path_params: &[connectors::NAME],
        ok: &[Reply::json(200, "the connector", "Connector")],
        errors: &[404, 503],
    }
    put "/v1/connectors/{name}" => connectors::configure, {
        summary: "Create a connector or replace its settings, in force at once on every node",
        path_params: &[connectors::NAME],
        body: Body::Json("ConnectorSettings"),
        ok: &[Reply::json(200, "replaced: the connector", "Connector"),
              Reply::json(201, "created: the connector", "Connector")],
        errors: &[400, 413, 415, 422, 503],
    }
    get "/v1/connectors/{name}/versions" => connectors::versions, {
        scope: Some(Scope::Read),
        summary: "Stored component versions, newest first",
        path_params: &[connectors::NAME],
        ok: &[Reply::list(200, "versions", "ComponentVersion")],
        errors: &[404, 503],
    }
    put "/v1/connectors/{name}/component" => connectors::upload, {
        summary: "Hot load: upload and validate a component version",
        path_params: &[connectors::NAME],
        body: Body::Component,
        ok: &[Reply::json(201, "the new active version", "ComponentVersion")],
        errors: &[400, 404, 413, 415, 422, 503],
    }
    post "/v1/connectors/{name}/rollback" => connectors::rollback, {
        summary: "Re-activate the previous component version",
        path_params: &[connectors::NAME],
        ok: &[Reply::json(200, "the active version", "ComponentVersion")],
        errors: &[404, 409, 503],
    }
    put "/v1/connectors/{name}/limits" => connectors::limits, {
        summary: "Override concurrency and rate at run time (null: as configured)",
        path_params: &[connectors::NAME],
        body: Body::Json("LimitOverrides"),
        ok: &[Reply::json(200, "the connector", "Connector")],
        errors: &[400, 404, 413, 415, 503],
    }
    post "/v1/connectors/{name}/{action}" => connectors::pause, {
        summary: "Pause (queue, attempt nothing) or resume a connector",
        path_params: &[connectors::NAME, connectors::PAUSE_ACTION],
        ok: &[Reply::json(200, "the connector", "Connector")],
        errors: &[404, 503],
    }
    get "/v1/dead-letters" => operate::dead_letters, {
        scope: Some(Scope::Read),
        summary: "Dead letters, newest first, filtered",
        query: operate::DEAD_FILTERS,
        ok: &[Reply::list(200, "dead letters", "DeadLetter")],
        errors: &[400, 503],
    }
    post "/v1/dead-letters/{action}" => operate::act_bulk, {
        summary: "Retry or skip every matching dead letter, up to `limit`",
        path_params: &[operate::ACTION],
        query: operate::BULK_FILTERS,
        ok: &[Reply::json(200, "matched and applied counts", "BulkAnswer")],
        errors: &[400, 404, 503],
    }
    post "/v1/deliveries/{id}/{action}" => operate::act, {
        summary: "Retry or skip one dead letter",
        path_params: &[operate::DELIVERY_ID, operate::ACTION],
        ok: &[Reply::json(200, "done", "ActionAnswer")],
        errors: &[400, 404, 409, 503],
    }
    get "/v1/keys/{key}" => operate::key, {
        scope: Some(Scope::Read),
        summary: "Why is this key blocked: each connector's lane head",
        path_params: &[operate::KEY],
        ok: &[Reply::list(200, "one lane per connector", "Lane")],
        errors: &[400, 503],
    }
    post "/v1/replays" => replays::start, {
        summary: "Deliver stored events again to one connector (without types: a backfill of what its routes take)",
        body: Body::Json("ReplayRequest"),
        ok: &[Reply::json(201, "the replay, started", "Replay")],
        errors: &[400, 404, 413, 415, 422, 503],
    }
    get "/v1/replays" => replays::list, {
        scope: Some(Scope::Read),
        summary: "Replays, newest first, with their progress",
        query: replays::LIST_QUERY,
        ok: &[Reply::list(200, "replays", "Replay")],
        errors: &[400, 503],
    }
    get "/v1/replays/{id}" => replays::show, {
        scope: Some(Scope::Read),
        summary: "One replay and its progress",
        path_params: &[replays::REPLAY_ID],
        ok: &[Reply::json(200, "the replay", "Replay")],
        errors: &[400, 404, 503],
    }
    post "/v1/replays/{id}/cancel" => replays::cancel, {
        summary: "Stop a replay: no more copies; its deliveries not started end as expired",
        path_params: &[replays::REPLAY_ID],
        ok: &[Reply::json(200, "the replay, cancelled, and how many deliveries it ended", "ReplayCancelled")],
        errors: &[400, 404, 409, 503],
    }
    get "/v1/audit" => operate::audit, {
        scope: Some(Scope::Read),
        summary: "Operator actions, newest first",
        query: operate::AUDIT_QUERY,
        ok: &[Reply::list(200, "audit records", "AuditRecord")],
        errors: &[400, 503],
    }
    get "/v1/openapi.json" => openapi_json, {
        scope: None,
        summary: "This document",
        ok: &[Reply { status: 200, description: "OpenAPI 3 document", content: Content::Document }],
    }
    get "/metrics" => metrics, {
        scope: Some(Scope::Read),
        summary: "Prometheus text exposition",
        ok: &[Reply { status: 200, description: "metrics", content: Content::Metrics }],
        errors: &[503],
    }
    get "/healthz" => health, {
        scope: None,
        summary: "Process up",
        ok: &[Reply::json(200, "ok", "Status")],
    }
    get "/readyz" => ready, {
        scope: None,
        summary: "Store reachable and migrated",
        ok: &[Reply::json(200, "ready", "Status")],
        errors: &[503],
    }
}

pub fn router(state: AppState) -> Router {
    add_routes(Router::new())
        .method_not_allowed_fallback(error::method_not_allowed)
        .fallback(error::not_found)
        .layer(axum::middleware::from_fn_with_state(
            (state.tokens.clone(), ROUTES),
            auth::authenticate,
        ))
        .with_state(state)
}

async fn openapi_json(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> axum::Json<serde_json::Value> {
    axum::Json(openapi::document(
        ROUTES,
        &openapi::Settings {
            max_batch: state.max_batch,
            max_body_bytes: state.max_body_bytes,
        },
    ))
}

/// Prometheus text exposition: process counters, each connector's series
/// (read from its registry entry) and per-connector queues.
async fn metrics(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> Result<impl axum::response::IntoResponse, error::ApiError> {
    use std::fmt::Write;
    let mut out = String::new();
    crate::metrics::global().render(&mut out);
    let entries = state.fleet.registry().entries();
    let series: Vec<_> = entries.iter().map(|e| (e.name(), e.metrics())).collect();
    crate::metrics::render_connectors(&mut out, &series);
    let now = crate::queue::now_ms();
    let mut rows = Vec::new();
    for c in state.fleet.configs().iter() {
        rows.push((
            c.name.clone(),
            state.store.catalog().queue_stats(&c.name).await?,
        ));
    }
    let age = |q: &crate::store::QueueStats| {
        q.oldest_pending_at
            .map_or(0.0, |t| (now - t).max(0) as f64 / 1000.0)
    };
    type Gauge<'a> = (
        &'a str,
        &'a str,
        &'a dyn Fn(&crate::store::QueueStats) -> f64,
    );
    let gauges: [Gauge; 5] = [
        (
            "switchboard_queue_ready",
            "Deliveries ready to run.",
            &|q| q.ready as f64,
        ),
        (
            "switchboard_queue_blocked",
            "Deliveries waiting behind an earlier one on a key.",
            &|q| q.blocked as f64,
        ),
        (
            "switchboard_in_flight",
            "Deliveries being attempted.",
            &|q| q.in_flight as f64,
        ),
        (
            "switchboard_dead_letters",
            "Dead deliveries awaiting an operator.",
            &|q| q.dead as f64,
        ),
        (
            "switchboard_oldest_pending_age_seconds",
            "Age of the oldest unfinished delivery.",
            &age,
        ),
    ];
    for (name, help, f) in gauges {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} gauge");
        for (c, q) in &rows {
            let _ = writeln!(
                out,
                "{name}{{connector=\"{}\"}} {}",
                crate::metrics::escape(c),
                f(q)
            );
        }
    }
    if let Some(connectors) = &state.connectors {
        let slots = connectors.runtime().slot_stats();
        let cache = connectors.runtime().cache_stats();
        let egress = connectors.runtime().egress_stats();
        let series: [(&str, &str, &str, u64); 11] = [
            (
                "switchboard_component_cache_hits_total",
                "counter",
                "Component loads served from the on-disk compile cache.",
                cache.hits as u64,
            ),
            (
                "switchboard_component_cache_misses_total",
                "counter",
                "Component loads that compiled (and filled the cache).",
                cache.misses as u64,
            ),
            (
                "switchboard_sandbox_slots",
                "gauge",
                "Instance slots for connector calls on this node (runtime.max_instances).",
                slots.total.into(),
            ),
            (
                "switchboard_sandbox_slots_in_use",
                "gauge",
                "Instance slots held by a connector call now.",
                slots.in_use.into(),
            ),
            (
                "switchboard_sandbox_slots_warm",
                "gauge",
                "Instance slots held by warm connector instances between deliveries (given up to any call that needs them).",
                slots.warm.into(),
            ),
            (
                "switchboard_sandbox_instances_started_total",
                "counter",
                "Connector instances started fresh.",
                slots.instances_started,
            ),
            (
                "switchboard_sandbox_instances_reused_total",
                "counter",
                "Deliveries served by a warm instance kept from an earlier delivery.",
                slots.instances_reused,
            ),
            (
                "switchboard_sandbox_slot_waits_total",
                "counter",
                "Connector calls that found every slot taken and waited.",
                slots.waited,
            ),
            (
                "switchboard_sandbox_slot_timeouts_total",
                "counter",
                "Connector calls that got no slot within their deadline (retried).",
                slots.timed_out,
            ),
            (
                "switchboard_egress_connections",
                "gauge",
                "Upstream connections open now, all connectors together (idle pooled ones included).",
                egress.open as u64,
            ),
            (
                "switchboard_egress_connections_max",
                "gauge",
                "Ceiling on upstream connections, below the open-files limit (runtime.max_egress_connections).",
                egress.ceiling as u64,
            ),
        ];
        for (name, kind, help, value) in series {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            let _ = writeln!(out, "{name} {value}");
        }
    }
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    ))
}

async fn health() -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({"status": "ok"}))
}

async fn ready(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> Result<axum::Json<serde_json::Value>, error::ApiError> {
    state.store.catalog().ping().await?;
    Ok(axum::Json(serde_json::json!({"status": "ready"})))
}
