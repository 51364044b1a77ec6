//! The OpenAPI 3 document, generated from the route table the router is
//! built from (`routes!` in `api/mod.rs`): a route cannot exist without an
//! entry here, and the test suite checks every entry is served.

use serde_json::{json, Map, Value};

/// One route as the router serves it and the document describes it.
#[derive(Debug, Clone, Copy)]
pub struct RouteDoc {
    pub method: &'static str,
    pub path: &'static str,
    /// `ingest`, `admin` or `none`.
    pub scope: &'static str,
    pub summary: &'static str,
    /// Success status and what it returns.
    pub ok: (&'static str, &'static str),
}

fn parameters(path: &str, method: &str) -> Vec<Value> {
    let mut out: Vec<Value> = path
        .split('/')
        .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
        .map(|name| {
            json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}})
        })
        .collect();
    let query: &[&str] = match (method, path) {
        ("get", "/v1/dead-letters") | ("post", "/v1/dead-letters/{action}") => &[
            "connector",
            "type",
            "key",
            "since",
            "until",
            "before_id",
            "limit",
        ],
        ("get", "/v1/audit") => &["limit", "before_id"],
        _ => &[],
    };
    out.extend(query.iter().map(
        |q| json!({"name": q, "in": "query", "required": false, "schema": {"type": "string"}}),
    ));
    out
}

fn event_schema() -> Value {
    json!({
        "type": "object",
        "required": ["id", "type", "payload"],
        "additionalProperties": false,
        "properties": {
            "id": {"type": "string", "minLength": 1, "maxLength": 200},
            "type": {"type": "string", "pattern": "^[a-z0-9_.-]{1,200}$"},
            "keys": {"type": "array", "maxItems": 64, "items": {"type": "string", "minLength": 1, "maxLength": 200}},
            "payload": {}
        }
    })
}

/// The whole document.
pub fn document(routes: &[RouteDoc]) -> Value {
    let mut paths = Map::new();
    for r in routes {
        let item = paths
            .entry(r.path.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        let mut op = json!({
            "summary": r.summary,
            "operationId": format!("{}_{}", r.method, r.path.trim_matches('/').replace(['/', '{', '}', '-', '.'], "_")),
            "parameters": parameters(r.path, r.method),
            "responses": {
                r.ok.0: {"description": r.ok.1},
                "default": {"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
            }
        });
        if r.scope != "none" {
            op["security"] = json!([{"bearer": [r.scope]}]);
        }
        if r.path == "/v1/events" && r.method == "post" {
            op["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": {
                "oneOf": [{"$ref": "#/components/schemas/Event"},
                          {"type": "array", "items": {"$ref": "#/components/schemas/Event"}}]}}}});
        }
        if r.path.ends_with("/component") {
            op["requestBody"] = json!({"required": true, "content": {"application/wasm": {"schema": {"type": "string", "format": "binary"}}}});
        }
        if let Value::Object(m) = item {
            m.insert(r.method.to_string(), op);
        }
    }
    json!({
        "openapi": "3.0.3",
        "info": {"title": "Switchboard", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Provisioning gateway: durable, ordered delivery of change events to sandboxed connectors."},
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Event": event_schema(),
                "Error": {"type": "object", "required": ["error"], "properties": {"error": {
                    "type": "object", "required": ["code", "message"],
                    "properties": {"code": {"type": "string"}, "message": {"type": "string"},
                                   "index": {"type": "integer"}, "field": {"type": "string"}}}}}
            }
        }
    })
}
