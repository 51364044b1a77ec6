//! HTTP API: ingest (`POST /v1/events`), event look-up, health.
//!
//! Errors are typed JSON with a stable code:
//! `{"error": {"code": "...", "message": "...", "index": i, "field": "..."}}`.
//! Bad input is always a 4xx and stores nothing; a store that cannot commit
//! is a 503 (retry later); an internal fault is a logged 500 without detail.

pub mod auth;
mod connectors;
pub mod error;
mod events;
pub mod openapi;
mod operate;

use std::sync::Arc;

use axum::Router;

use crate::dispatch::Wakers;
use crate::fleet::Fleet;
use crate::queue::event::NewEvent;
use crate::queue::route::{expiry_of, Route};
use crate::runtime::Connectors;
use crate::store::{Routed, Store};

/// Which connectors receive which event types.
#[derive(Debug, Default, Clone)]
pub struct RouteTable {
    entries: Vec<(String, Vec<Route>)>,
}

impl RouteTable {
    pub fn new(entries: Vec<(String, Vec<Route>)>) -> Self {
        Self { entries }
    }

    /// The connectors that receive `event`, and how long each delivery may
    /// wait where a route sets `expire_after`.
    pub fn routed(&self, event: NewEvent) -> Routed {
        let mut connectors = Vec::new();
        let mut expire_after = std::collections::BTreeMap::new();
        for (name, routes) in &self.entries {
            if let Some(expiry) = expiry_of(routes, &event.event_type) {
                connectors.push(name.clone());
                if let Some(ms) = expiry {
                    expire_after.insert(name.clone(), ms);
                }
            }
        }
        Routed {
            event,
            connectors,
            expire_after,
        }
    }
}

#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    /// The connectors served, their routes and settings (changeable at run
    /// time).
    pub fleet: Fleet,
    pub wakers: Wakers,
    /// The component registry; `None` where the gateway runs without a
    /// runtime (API tests).
    pub connectors: Option<Connectors>,
    pub max_body_bytes: usize,
    pub max_batch: usize,
    pub tokens: auth::Tokens,
}

/// The route table: the router and the OpenAPI document are both built from
/// it, so neither can drift from the other.
macro_rules! routes {
    ($($method:ident $path:literal => $handler:expr, $scope:literal, $summary:literal, $ok:literal $okdesc:literal;)*) => {
        /// Every route, as documented in `/v1/openapi.json`.
        pub const ROUTES: &[openapi::RouteDoc] = &[$(openapi::RouteDoc {
            method: stringify!($method),
            path: $path,
            scope: $scope,
            summary: $summary,
            ok: ($ok, $okdesc),
        }),*];

        fn add_routes(router: Router<AppState>) -> Router<AppState> {
            router $(.route($path, axum::routing::$method($handler)))*
        }
    };
}

routes! {
    post "/v1/events" => events::ingest, "ingest", "Ingest one event or a batch; 202 once durable", "202" "accepted, duplicates, unrouted";
    get "/v1/events/{id}" => events::show, "admin", "An event and the state of each of its deliveries", "200" "the event";
    get "/v1/connectors" => connectors::list, "admin", "Every connector with its component and queue", "200" "connectors";
    get "/v1/connectors/{name}" => connectors::show, "admin", "One connector", "200" "the connector";
    put "/v1/connectors/{name}" => connectors::configure, "admin", "Create a connector or replace its settings, in force at once on every node", "200" "the connector (201 when created)";
    get "/v1/connectors/{name}/versions" => connectors::versions, "admin", "Stored component versions, newest first", "200" "versions";
    put "/v1/connectors/{name}/component" => connectors::upload, "admin", "Hot load: upload and validate a component version", "201" "the new active version";
    post "/v1/connectors/{name}/rollback" => connectors::rollback, "admin", "Re-activate the previous component version", "200" "the active version";
    put "/v1/connectors/{name}/limits" => connectors::limits, "admin", "Override concurrency and rate at run time (null: as configured)", "200" "the connector";
    post "/v1/connectors/{name}/{action}" => connectors::pause, "admin", "Pause (queue, attempt nothing) or resume a connector", "200" "the connector";
    get "/v1/dead-letters" => operate::dead_letters, "admin", "Dead letters, newest first, filtered", "200" "dead letters";
    post "/v1/dead-letters/{action}" => operate::act_bulk, "admin", "Retry or skip every matching dead letter", "200" "matched and applied counts";
    post "/v1/deliveries/{id}/{action}" => operate::act, "admin", "Retry or skip one dead letter", "200" "done";
    get "/v1/keys/{key}" => operate::key, "admin", "Why is this key blocked: each connector's lane head", "200" "lanes";
    get "/v1/audit" => operate::audit, "admin", "Operator actions, newest first", "200" "audit records";
    get "/v1/openapi.json" => openapi_json, "none", "This document", "200" "OpenAPI 3 document";
    get "/metrics" => metrics, "admin", "Prometheus text exposition", "200" "metrics";
    get "/healthz" => health, "none", "Process up", "200" "ok";
    get "/readyz" => ready, "none", "Store reachable and migrated", "200" "ready";
}

pub fn router(state: AppState) -> Router {
    add_routes(Router::new())
        .fallback(error::not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.tokens.clone(),
            auth::authenticate,
        ))
        .with_state(state)
}

async fn openapi_json() -> axum::Json<serde_json::Value> {
    axum::Json(openapi::document(ROUTES))
}

/// Prometheus text exposition: process counters and per-connector queues.
async fn metrics(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> Result<impl axum::response::IntoResponse, error::ApiError> {
    use std::fmt::Write;
    let mut out = String::new();
    crate::metrics::global().render(&mut out);
    let now = crate::queue::now_ms();
    let mut rows = Vec::new();
    for c in state.fleet.configs().iter() {
        rows.push((c.name.clone(), state.store.queue_stats(&c.name).await?));
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
        let series: [(&str, &str, &str, u64); 6] = [
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
    state.store.ping().await?;
    Ok(axum::Json(serde_json::json!({"status": "ready"})))
}
