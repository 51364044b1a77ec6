//! The OpenAPI 3 document, generated from the route table the router is
//! built from (`routes!` in `api/mod.rs`): a route cannot exist without an
//! entry here, and the test suite checks every entry is served.
//!
//! Each entry says everything the document says about its operation: who may
//! call it, its parameters with their types and bounds, its body, the
//! success answers with their schemas and the errors it can answer. Every
//! error is the JSON envelope (`Error`); the document is exact enough to
//! contract-test (`make contract`): a request the document calls valid is
//! answered 2xx (or a 404/409 naming state the request cannot know), one it
//! calls invalid a 4xx.
//!
//! The few bounds that are settings (`server.max_batch`,
//! `server.max_body_bytes`) are taken from the running gateway, so the
//! document describes this gateway, not the defaults.

use serde_json::{json, Map, Value};

use crate::config::Scope;

/// One route as the router serves it and the document describes it.
#[derive(Debug, Clone, Copy)]
pub struct RouteDoc {
    pub method: &'static str,
    pub path: &'static str,
    /// The scope a token needs; `None`: open (health, this document).
    pub scope: Option<Scope>,
    pub summary: &'static str,
    /// Each `{name}` of `path`, in order.
    pub path_params: &'static [Param],
    pub query: &'static [Param],
    pub body: Body,
    /// Success answers.
    pub ok: &'static [Reply],
    /// Error statuses besides 401/403 (implied by `scope`).
    pub errors: &'static [u16],
}

impl RouteDoc {
    /// The defaults a `routes!` entry leaves out.
    pub const DEFAULT: RouteDoc = RouteDoc {
        method: "",
        path: "",
        scope: Some(Scope::Admin),
        summary: "",
        path_params: &[],
        query: &[],
        body: Body::None,
        ok: &[],
        errors: &[],
    };
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum In {
    Path,
    Query,
}

/// The media types a component upload may be sent as (or none); the
/// upload handler enforces them, the document states them.
pub const COMPONENT_MEDIA_TYPES: [&str; 2] = ["application/wasm", "application/octet-stream"];

/// The largest `concurrency` an operator may set at run time.
pub const MAX_CONCURRENCY_OVERRIDE: u32 = 100_000;

/// A path or query parameter.
#[derive(Debug, Clone, Copy)]
pub struct Param {
    pub name: &'static str,
    pub location: In,
    pub ty: Ty,
    pub description: &'static str,
    /// A value to show (and to try first); empty: none.
    pub example: &'static str,
}

impl Param {
    pub const fn path(name: &'static str, ty: Ty, description: &'static str) -> Self {
        Self {
            name,
            location: In::Path,
            ty,
            description,
            example: "",
        }
    }

    pub const fn query(name: &'static str, ty: Ty, description: &'static str) -> Self {
        Self {
            name,
            location: In::Query,
            ty,
            description,
            example: "",
        }
    }

    pub const fn example(mut self, example: &'static str) -> Self {
        self.example = example;
        self
    }
}

/// A parameter's type, as precise as the handler checks it.
#[derive(Debug, Clone, Copy)]
pub enum Ty {
    /// Text without control characters, at most `max_len` characters (no
    /// bound: 0).
    Text { max_len: usize },
    /// Text matching `pattern`.
    Pattern(&'static str),
    /// A 64-bit integer in `min..=max`, `default` when absent.
    Int {
        min: i64,
        max: i64,
        default: Option<i64>,
    },
    /// One of these words.
    OneOf(&'static [&'static str]),
}

/// A request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    None,
    /// `application/json` of this `components/schemas` entry, at most
    /// [`super::extract::ADMIN_JSON_LIMIT`] bytes.
    Json(&'static str),
    /// The events of `POST /v1/events`: at most `server.max_body_bytes`.
    Events,
    /// A component's `.wasm` bytes, at most
    /// [`super::extract::MAX_COMPONENT_BYTES`].
    Component,
}

/// A success answer.
#[derive(Debug, Clone, Copy)]
pub struct Reply {
    pub status: u16,
    pub description: &'static str,
    pub content: Content,
}

impl Reply {
    pub const fn json(status: u16, description: &'static str, schema: &'static str) -> Self {
        Self {
            status,
            description,
            content: Content::Json(schema),
        }
    }

    pub const fn list(status: u16, description: &'static str, schema: &'static str) -> Self {
        Self {
            status,
            description,
            content: Content::List(schema),
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub enum Content {
    /// `application/json`: this `components/schemas` entry.
    Json(&'static str),
    /// `application/json`: an array of this `components/schemas` entry.
    List(&'static str),
    /// Prometheus text exposition.
    Metrics,
    /// The OpenAPI document itself.
    Document,
}

/// The running gateway's settings the document states.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub max_batch: usize,
    pub max_body_bytes: usize,
}

/// Text with no control character (`char::is_control`: C0, DEL, C1).
const PRINTABLE: &str = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$";

fn param(p: &Param) -> Value {
    let schema = match p.ty {
        Ty::Text { max_len: 0 } => json!({"type": "string", "pattern": PRINTABLE}),
        Ty::Text { max_len } => {
            json!({"type": "string", "pattern": PRINTABLE, "minLength": 1, "maxLength": max_len})
        }
        Ty::Pattern(pattern) => json!({"type": "string", "pattern": pattern}),
        Ty::Int { min, max, default } => {
            let mut s =
                json!({"type": "integer", "format": "int64", "minimum": min, "maximum": max});
            if let Some(d) = default {
                s["default"] = d.into();
            }
            s
        }
        Ty::OneOf(words) => json!({"type": "string", "enum": words}),
    };
    let mut out = json!({
        "name": p.name,
        "in": match p.location { In::Path => "path", In::Query => "query" },
        "required": p.location == In::Path,
        "description": p.description,
        "schema": schema,
    });
    if !p.example.is_empty() {
        out["example"] = match p.ty {
            Ty::Int { .. } => p.example.parse::<i64>().map_or(Value::Null, Value::from),
            _ => p.example.into(),
        };
    }
    out
}

fn error_response(status: u16, r: &RouteDoc, settings: &Settings) -> Value {
    let limit = match r.body {
        Body::Events => settings.max_body_bytes,
        Body::Component => super::extract::MAX_COMPONENT_BYTES,
        Body::Json(_) | Body::None => super::extract::ADMIN_JSON_LIMIT,
    };
    let description = match status {
        400 => "Invalid input: `code` says what, `field` (and in a batch `index`) where; nothing was changed".to_string(),
        401 => "Missing or unknown bearer token".to_string(),
        403 => "The token lacks the scope this operation needs".to_string(),
        404 => "No such resource".to_string(),
        409 => "Conflicts with the current state; nothing was changed".to_string(),
        413 => format!("The body exceeds this operation's limit of {limit} bytes"),
        415 => "The body's content type is not accepted".to_string(),
        422 => "Well-formed but refused: the message says why; nothing was changed".to_string(),
        503 => "Unavailable now (the store cannot commit, or the runtime is busy); retry later".to_string(),
        _ => "Error".to_string(),
    };
    let mut out = json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    });
    if status == 401 {
        out["headers"] = json!({"WWW-Authenticate": {
            "description": "`Bearer`", "required": true, "schema": {"type": "string"}}});
    }
    out
}

fn reply(r: &Reply) -> Value {
    let content = match r.content {
        Content::Json(schema) => {
            json!({"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}})
        }
        Content::List(schema) => json!({"application/json": {"schema": {
            "type": "array", "items": {"$ref": format!("#/components/schemas/{schema}")}}}}),
        Content::Metrics => json!({"text/plain": {"schema": {"type": "string"}}}),
        Content::Document => json!({"application/json": {"schema": {"type": "object"}}}),
    };
    json!({"description": r.description, "content": content})
}

fn request_body(body: Body) -> Option<Value> {
    let content = match body {
        Body::None => return None,
        Body::Json(schema) => {
            json!({"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}})
        }
        Body::Events => {
            json!({"application/json": {"schema": {"$ref": "#/components/schemas/Events"}}})
        }
        Body::Component => {
            let binary = json!({"schema": {"type": "string", "format": "binary", "minLength": 1},
                                "description": "The component's `.wasm` bytes (a WebAssembly component implementing the connector world)"});
            let mut m = Map::new();
            for media in COMPONENT_MEDIA_TYPES {
                m.insert(media.to_string(), binary.clone());
            }
            Value::Object(m)
        }
    };
    Some(json!({"required": true, "content": content}))
}

fn operation(r: &RouteDoc, settings: &Settings) -> Value {
    let mut responses = Map::new();
    for ok in r.ok {
        responses.insert(ok.status.to_string(), reply(ok));
    }
    let mut errors: Vec<u16> = r.errors.to_vec();
    if r.scope.is_some() {
        errors.extend([401, 403]);
    }
    errors.sort_unstable();
    errors.dedup();
    for status in errors {
        responses.insert(status.to_string(), error_response(status, r, settings));
    }
    let mut op = json!({
        "summary": r.summary,
        "operationId": format!("{}_{}", r.method, r.path.trim_matches('/').replace(['/', '{', '}', '-', '.'], "_")),
        "parameters": r.path_params.iter().chain(r.query).map(param).collect::<Vec<_>>(),
        "responses": responses,
    });
    match r.scope {
        None => op["security"] = json!([]),
        Some(scope) => {
            op["security"] = json!([{"bearer": []}]);
            op["x-scope"] = json!(scope.as_str());
        }
    }
    if let Some(body) = request_body(r.body) {
        op["requestBody"] = body;
    }
    op
}

/// The whole document.
pub fn document(routes: &[RouteDoc], settings: &Settings) -> Value {
    let mut paths = Map::new();
    for r in routes {
        let item = paths
            .entry(r.path.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(m) = item {
            m.insert(r.method.to_string(), operation(r, settings));
        }
    }
    json!({
        "openapi": "3.0.3",
        "info": {"title": "Switchboard", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Provisioning gateway: durable, ordered delivery of change events to sandboxed connectors. \
                                 Every error is `{\"error\": {\"code\", \"message\"}}`; 401 and 403 name the token's problem; \
                                 a method a path does not serve is a 405 with `Allow`."},
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                "description": "An API token; `x-scope` on each operation names the scope it needs (`admin` tokens may ingest too)."}},
            "schemas": schemas(settings),
        }
    })
}

fn int(min: i64) -> Value {
    json!({"type": "integer", "format": "int64", "minimum": min})
}

fn nullable(schema: Value) -> Value {
    json!({"nullable": true, "allOf": [schema]})
}

fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

/// Every `components/schemas` entry: request bodies, answers, the error.
fn schemas(settings: &Settings) -> Value {
    use crate::queue::event::{MAX_ID_LEN, MAX_KEYS, MAX_KEY_LEN, MAX_TYPE_LEN};
    let timestamp = json!({"type": "integer", "format": "int64", "description": "milliseconds since the Unix epoch"});
    let key =
        json!({"type": "string", "minLength": 1, "maxLength": MAX_KEY_LEN, "pattern": PRINTABLE});
    let states: Vec<&str> = crate::queue::DeliveryState::ALL
        .iter()
        .map(|s| s.as_str())
        .collect();
    let mut all = json!({
        "Event": {
            "type": "object",
            "required": ["id", "type", "payload"],
            "additionalProperties": false,
            "properties": {
                "id": {"type": "string", "minLength": 1, "maxLength": MAX_ID_LEN, "pattern": PRINTABLE,
                       "description": "The idempotency key: re-posting it with the same body is a duplicate, with another a 409"},
                "type": {"type": "string", "minLength": 1, "maxLength": MAX_TYPE_LEN, "pattern": "^[a-z0-9_.-]*$"},
                "keys": {"type": "array", "maxItems": MAX_KEYS, "items": key,
                         "description": "Ordering keys: events sharing a key are delivered in order, per connector. Repeats count once."},
                "payload": {"description": "Any JSON value, handed to the connectors"}
            }
        },
        "Events": {
            "description": "One event, or a batch: an array of events, stored all or nothing, in order. An empty batch stores nothing.",
            "oneOf": [
                schema_ref("Event"),
                {"type": "array", "maxItems": settings.max_batch, "items": schema_ref("Event")}
            ]
        },
        "IngestAnswer": {
            "type": "object",
            "required": ["accepted", "duplicates", "unrouted"],
            "additionalProperties": false,
            "properties": {
                "accepted": {"type": "integer", "minimum": 0, "description": "new events, durable"},
                "duplicates": {"type": "integer", "minimum": 0, "description": "events already accepted with the same body"},
                "unrouted": {"type": "integer", "minimum": 0, "description": "new events no connector routes (stored)"}
            }
        },
        "Delivery": {
            "type": "object",
            "required": ["id", "connector", "state", "attempts", "last_error", "next_attempt_at", "updated_at"],
            "additionalProperties": false,
            "properties": {
                "id": int(1),
                "connector": {"type": "string"},
                "state": {"type": "string", "enum": states},
                "attempts": {"type": "integer", "minimum": 0},
                "last_error": {"type": "string", "nullable": true},
                "next_attempt_at": {"allOf": [timestamp], "nullable": true},
                "updated_at": timestamp,
                "lease_owner": {"type": "string", "description": "the node running it (in_flight only)"},
                "expires_at": {"allOf": [timestamp], "description": "when it expires unless started (routes with expire_after)"},
                "superseded_by": {"type": "string", "description": "the id of the newer full-state event that superseded it, or `seq N` once that event has been purged (superseded only; routes with coalesce_key)"}
            }
        },
        "EventView": {
            "type": "object",
            "required": ["seq", "id", "type", "keys", "payload", "accepted_at", "deliveries"],
            "additionalProperties": false,
            "properties": {
                "seq": int(1),
                "id": {"type": "string"},
                "type": {"type": "string"},
                "keys": {"type": "array", "items": {"type": "string"}},
                "payload": {},
                "accepted_at": timestamp,
                "deliveries": {"type": "array", "items": schema_ref("Delivery")},
                "replay": {"type": "integer", "minimum": 1, "description": "a replay's copy: the replay that made it"},
                "original": {"type": "string", "description": "a replay's copy: the original event's id"}
            }
        },
        "ComponentVersion": {
            "type": "object",
            "required": ["connector", "version", "digest", "info", "uploaded_at", "active", "size_bytes"],
            "additionalProperties": false,
            "properties": {
                "connector": {"type": "string"},
                "version": int(1),
                "digest": {"type": "string"},
                "info": {"description": "the component's own describe() answer"},
                "uploaded_at": timestamp,
                "active": {"type": "boolean"},
                "size_bytes": int(0)
            }
        },
        "LimitOverrides": {
            "type": "object",
            "additionalProperties": false,
            "description": "Run-time overrides of a connector's limits; null or absent: as configured",
            "properties": {
                "concurrency": {"type": "integer", "minimum": 1, "maximum": MAX_CONCURRENCY_OVERRIDE, "nullable": true},
                "rate": {"type": "number", "minimum": 0, "exclusiveMinimum": true, "nullable": true,
                         "description": "attempts per second at most"}
            }
        },
        "StateCounts": {
            "type": "object",
            "required": states,
            "additionalProperties": false,
            "properties": states.iter().map(|s| (s.to_string(), json!({"type": "integer", "minimum": 0}))).collect::<Map<_, _>>()
        },
        "Breaker": {
            "description": "The circuit breaker as this node last saw it",
            "oneOf": [
                {"type": "object", "additionalProperties": false,
                 "required": ["state", "consecutive_failures", "window"],
                 "properties": {
                    "state": {"type": "string", "enum": ["closed"]},
                    "consecutive_failures": {"type": "integer", "minimum": 0},
                    "window": {"type": "integer", "minimum": 0, "description": "attempts allowed in flight now (slow start)"}
                 }},
                {"type": "object", "additionalProperties": false,
                 "required": ["state", "next_probe_at", "probe_interval_ms"],
                 "properties": {
                    "state": {"type": "string", "enum": ["open"]},
                    "next_probe_at": timestamp,
                    "probe_interval_ms": {"type": "integer", "minimum": 0}
                 }},
                {"type": "object", "additionalProperties": false,
                 "required": ["state", "probe_interval_ms"],
                 "properties": {
                    "state": {"type": "string", "enum": ["probing"]},
                    "probe_interval_ms": {"type": "integer", "minimum": 0}
                 }}
            ]
        },
        "Connector": {
            "type": "object",
            "required": ["name", "routes", "concurrency", "rate", "allowed_hosts", "component", "paused",
                         "overrides", "deliveries", "oldest_pending_age_ms", "breaker", "settings"],
            "additionalProperties": false,
            "properties": {
                "name": {"type": "string"},
                "routes": {"type": "array", "items": schema_ref("Route")},
                "concurrency": {"type": "integer", "minimum": 1},
                "rate": {"type": "number", "nullable": true},
                "allowed_hosts": {"type": "array", "items": {"type": "string"}},
                "component": nullable(schema_ref("ComponentVersion")),
                "paused": {"type": "boolean"},
                "overrides": schema_ref("LimitOverrides"),
                "deliveries": schema_ref("StateCounts"),
                "oldest_pending_age_ms": {"type": "integer", "minimum": 0, "nullable": true},
                "breaker": nullable(schema_ref("Breaker")),
                "settings": {"type": "object", "description": "every setting in force, as PUT /v1/connectors/{name} takes them (with `name`), secret header values redacted"}
            }
        },
        "Route": {
            "description": "An event type (`number.assign`), a prefix (`number.*`), `*`, or a rule with an expiry or a full-state (coalescing) declaration",
            "oneOf": [
                {"type": "string", "pattern": ROUTE_PATTERN},
                {"type": "object", "required": ["match"], "additionalProperties": false,
                 "properties": {
                    "match": {"type": "string", "pattern": ROUTE_PATTERN},
                    "expire_after": {"type": "string", "nullable": true, "pattern": "^0*[1-9][0-9]{0,8}(ms|s|m|h|d)$",
                                     "description": "deliveries not started this long after the event was accepted expire (\"90s\", \"72h\"); null: never"},
                    "coalesce_key": {"type": "string", "nullable": true, "pattern": "^[A-Za-z0-9_.-]{1,64}$",
                                     "description": "the types this rule matches carry full state per this key (\"customer\": the event's key `customer:…`): a newer event supersedes this connector's older deliveries with the same key value that have not started (coalescing); an event without that key, or with two, is delivered as any other"},
                    "coalesce_group": {"type": "string", "nullable": true, "pattern": "^[A-Za-z0-9_.-]{1,64}$",
                                       "description": "types that supersede one another (with coalesce_key); without it, only events of the same type do"}
                 }}
            ]
        },
        "ConnectorSettings": connector_settings(),
        "DeadLetter": {
            "type": "object",
            "required": ["delivery_id", "connector", "event_id", "type", "keys", "attempts", "last_error", "died_at"],
            "additionalProperties": false,
            "properties": {
                "delivery_id": int(1),
                "connector": {"type": "string"},
                "event_id": {"type": "string"},
                "type": {"type": "string"},
                "keys": {"type": "array", "items": {"type": "string"}},
                "attempts": {"type": "integer", "minimum": 0},
                "last_error": {"type": "string", "nullable": true},
                "died_at": timestamp
            }
        },
        "ActionAnswer": {
            "type": "object",
            "required": ["delivery_id", "action"],
            "additionalProperties": false,
            "properties": {
                "delivery_id": {"type": "integer", "format": "int64"},
                "action": {"type": "string", "enum": ["retry", "skip"]}
            }
        },
        "BulkAnswer": {
            "type": "object",
            "required": ["action", "matched", "applied"],
            "additionalProperties": false,
            "properties": {
                "action": {"type": "string", "enum": ["retry", "skip"]},
                "matched": {"type": "integer", "minimum": 0},
                "applied": {"type": "integer", "minimum": 0}
            }
        },
        "Lane": {
            "type": "object",
            "required": ["connector", "key", "head", "waiting", "behind"],
            "additionalProperties": false,
            "properties": {
                "connector": {"type": "string"},
                "key": {"type": "string"},
                "head": {"type": "array", "nullable": true, "minItems": 2, "maxItems": 2,
                         "description": "the delivery at the lane's head: [event id, delivery]",
                         "items": {"oneOf": [{"type": "string"}, schema_ref("Delivery")]}},
                "waiting": {"type": "integer", "minimum": 0},
                "behind": {"type": "array", "maxItems": 10,
                           "description": "the first deliveries waiting behind the head, in the order they will run: [event id, delivery] each",
                           "items": {"type": "array", "minItems": 2, "maxItems": 2,
                                     "items": {"oneOf": [{"type": "string"}, schema_ref("Delivery")]}}}
            }
        },
        "AuditRecord": {
            "type": "object",
            "required": ["id", "at", "actor", "action", "target", "before", "after"],
            "additionalProperties": false,
            "properties": {
                "id": int(1),
                "at": timestamp,
                "actor": {"type": "string", "description": "the token's name"},
                "action": {"type": "string"},
                "target": {"type": "string"},
                "before": {"description": "the state before (null: none)"},
                "after": {"description": "the state after (null: none)"}
            }
        },
        "Status": {
            "type": "object",
            "required": ["status"],
            "additionalProperties": false,
            "properties": {"status": {"type": "string", "enum": ["ok", "ready"]}}
        },
        "Error": {
            "type": "object",
            "required": ["error"],
            "additionalProperties": false,
            "properties": {"error": {
                "type": "object",
                "required": ["code", "message"],
                "additionalProperties": false,
                "properties": {
                    "code": {"type": "string", "description": "stable, machine-readable"},
                    "message": {"type": "string"},
                    "index": {"type": "integer", "minimum": 0, "description": "the event at fault, in a batch"},
                    "field": {"type": "string", "description": "the field or parameter at fault"}
                }
            }}
        }
    });
    if let (Some(all), Value::Object(more)) = (all.as_object_mut(), replay_schemas(&timestamp)) {
        all.extend(more);
    }
    all
}

/// The replays' schemas (apart: one `json!` of everything is too deep).
fn replay_schemas(timestamp: &Value) -> Value {
    json!({
        "ReplayRequest": {
            "type": "object",
            "required": ["connector", "since"],
            "additionalProperties": false,
            "description": "Stored events to deliver again to one connector, as new deliveries behind what is queued, in accept order. Refused with 422: `since` not before `until`, a bad type pattern, a bad key, a rate out of range",
            "properties": {
                "connector": {"type": "string"},
                "since": {"type": "integer", "format": "int64", "minimum": 0, "description": "events accepted at or after this time, ms since the epoch"},
                "until": {"type": "integer", "format": "int64", "minimum": 1, "nullable": true, "description": "and before this time; default now"},
                "types": {"type": "array", "items": {"type": "string", "pattern": ROUTE_PATTERN}, "description": "type patterns; default the connector's routes (a backfill)"},
                "key": {"type": "string", "nullable": true, "minLength": 1, "maxLength": 200, "pattern": PRINTABLE, "description": "only events with this key"},
                "rate": {"type": "number", "nullable": true, "exclusiveMinimum": true, "minimum": 0, "maximum": 100000, "description": "copies per second, over every node together; default half the connector's rate in force, or 200"}
            }
        },
        "Replay": {
            "type": "object",
            "required": ["id", "connector", "since", "until", "types", "rate", "state", "last_seq", "start_seq", "cursor_seq", "examined", "replayed", "created_by", "created_at"],
            "additionalProperties": false,
            "properties": {
                "id": int(1),
                "connector": {"type": "string"},
                "since": timestamp,
                "until": timestamp,
                "types": {"type": "array", "items": {"type": "string"}},
                "key": {"type": "string"},
                "rate": {"type": "number"},
                "state": {"type": "string", "enum": ["running", "done", "cancelled"]},
                "last_seq": {"type": "integer", "format": "int64", "description": "the newest stored event when it started: it goes no further"},
                "start_seq": {"type": "integer", "format": "int64", "description": "where it began: its progress runs from here to last_seq"},
                "cursor_seq": {"type": "integer", "format": "int64", "description": "every stored event up to here examined"},
                "examined": int(0),
                "replayed": {"type": "integer", "minimum": 0, "description": "copies made, each a new delivery (event id `<id>~replay-<replay id>`)"},
                "created_by": {"type": "string"},
                "created_at": timestamp,
                "finished_at": timestamp
            }
        },
        "ReplayCancelled": {
            "type": "object",
            "required": ["replay", "ended", "skipped_dead"],
            "additionalProperties": false,
            "properties": {
                "replay": schema_ref("Replay"),
                "ended": {"type": "integer", "minimum": 0, "description": "its copies waiting (not in flight), ended as expired"},
                "skipped_dead": {"type": "integer", "minimum": 0, "description": "its dead copies, skipped so that none holds a key"}
            }
        }
    })
}

/// A route's event type pattern: a type, a prefix ending in `.*`, or `*`.
const ROUTE_PATTERN: &str = "^(\\*|[a-z0-9_.-]+(\\.\\*)?)$";

/// `PUT /v1/connectors/{name}`: the fields of a `[[connectors]]` entry, each
/// with the bounds `ConnectorConfig::validate` checks on its own. Rules that
/// relate two fields (or a field and a gateway setting) are stated in the
/// descriptions and answered `422 invalid_connector`.
fn connector_settings() -> Value {
    use crate::config::{MAX_HOST_MEMORY_MB, MAX_HOST_RESOURCES};
    let count = |min: u64| json!({"type": "integer", "minimum": min, "maximum": u64::MAX});
    let ms = |min: u64, description: &str| json!({"type": "integer", "minimum": min, "maximum": u64::MAX, "description": description});
    json!({
        "type": "object",
        "additionalProperties": false,
        "description": "The fields of a `[[connectors]]` entry of the config file, as JSON; absent fields take their defaults. \
                        The body may also carry `name`, equal to the path's. Refused with 422 (nothing changes): \
                        `limits.memory_mb` above `runtime.max_memory_mb`, \
                        `limits.host_memory_mb` too small for `max_host_resources` and `max_concurrent_requests`, \
                        a secret header without `hosts` on a connector with several `allowed_hosts`, \
                        `hosts` naming a host that is not one of its `allowed_hosts`, \
                        a route with `coalesce_group` but no `coalesce_key`, \
                        or two routes that can match one type with different coalescing (one with coalesce_key and one without included).",
        "properties": {
            "component": {"nullable": true, "enum": [null],
                          "description": "Only null here: upload the component with PUT /v1/connectors/{name}/component"},
            "routes": {"type": "array", "items": schema_ref("Route"),
                       "description": "The event types this connector receives"},
            "allowed_hosts": {"type": "array", "items": {"type": "string"},
                              "description": "`host:port` (or `host` for any port) the component may call"},
            "concurrency": {"type": "integer", "minimum": 1, "maximum": u64::MAX,
                            "description": "Most deliveries in flight at once (default 16)"},
            "rate": {"type": "number", "minimum": 0, "exclusiveMinimum": true, "nullable": true,
                     "description": "Most attempts started per second; null: unlimited"},
            "on_dead": {"type": "string", "enum": ["hold", "release"],
                        "description": "What a dead letter does to its keys (default hold)"},
            "retry": {
                "type": "object", "additionalProperties": false,
                "properties": {
                    "initial_backoff_ms": ms(0, "upper bound of the first retry's delay"),
                    "max_backoff_ms": ms(0, "the cap the doubling stops at"),
                    "max_retry_after_ms": ms(0, "the longest Retry-After honoured"),
                    "give_up_after_ms": {"type": "integer", "minimum": 0, "maximum": u64::MAX, "nullable": true,
                                         "description": "dead when still failing this long after the event was accepted; null: retry for ever"}
                }
            },
            "breaker": {
                "type": "object", "additionalProperties": false,
                "properties": {
                    "failure_threshold": {"type": "integer", "minimum": 0, "maximum": u32::MAX,
                                          "description": "consecutive transient failures that open the breaker"},
                    "probe_initial_ms": ms(0, "first probe interval after opening"),
                    "probe_max_ms": ms(0, "the probe interval doubles up to this")
                }
            },
            "limits": {
                "type": "object", "additionalProperties": false,
                "description": "Sandbox limits per attempt",
                "properties": {
                    "memory_mb": {"type": "integer", "minimum": 1, "maximum": u64::MAX,
                                  "description": "guest memory; at most runtime.max_memory_mb"},
                    "deadline_ms": ms(1, "wall-clock deadline of one attempt, at most an hour (its lease lasts at least 10 s longer)"),
                    "cpu_budget_ms": ms(1, "CPU time one attempt may spend in the guest"),
                    "request_timeout_ms": ms(1, "timeout of one outgoing HTTP request"),
                    "max_response_bytes": count(1),
                    "host_memory_mb": {"type": "integer", "minimum": 1, "maximum": MAX_HOST_MEMORY_MB,
                                       "description": "host memory one attempt's HTTP resources may hold"},
                    "max_host_resources": {"type": "integer", "minimum": 1, "maximum": MAX_HOST_RESOURCES},
                    "max_concurrent_requests": count(1),
                    "max_request_bytes": count(1),
                    "max_connections": count(1),
                    "max_deliveries_per_instance": {"type": "integer", "minimum": 1, "maximum": u32::MAX,
                                                    "description": "deliveries one warm instance serves before a fresh one replaces it; 1 gives every attempt a fresh instance"}
                }
            },
            "config": {"type": "object", "description": "Values handed to the component (config::get)",
                       "additionalProperties": {"anyOf": [{"type": "string"}, {"type": "number"}, {"type": "boolean"}]}},
            "secret_headers": {"type": "object",
                               "description": "Headers the host adds to outgoing requests (credentials the component never sees): a value, or a value and the allowed hosts it is for",
                               "additionalProperties": {"oneOf": [
                                   {"type": "string"},
                                   {"type": "object", "additionalProperties": false, "required": ["value", "hosts"],
                                    "properties": {"value": {"type": "string"},
                                                   "hosts": {"type": "array", "items": {"type": "string"}}}}
                               ]}}
        }
    })
}
