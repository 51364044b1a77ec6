//! The OpenAPI document covers every route the router serves, each route's
//! documented scope is the one enforced, and the document says what a client
//! needs to call it: parameters with their types, bodies with their schemas,
//! every answer with its schema.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use switchboard::api::auth::Tokens;
use switchboard::api::{router, AppState, ROUTES};
use switchboard::config::{Scope, TokenConfig};
use tower::ServiceExt;

const INGEST: &str = "ingest-token-0123456789";
const ADMIN: &str = "admin-token-0123456789";
const READ: &str = "read-token-0123456789";

async fn app() -> (axum::Router, common::TestStore) {
    let t = common::sqlite().await;
    let app = router(AppState {
        store: t.store.clone(),
        fleet: common::fleet(&[]),
        connectors: None,
        max_body_bytes: 1 << 20,
        max_batch: 10,
        tokens: Tokens::new(&[
            TokenConfig {
                name: "app".into(),
                token: INGEST.into(),
                scopes: vec![Scope::Ingest],
            },
            TokenConfig {
                name: "ops".into(),
                token: ADMIN.into(),
                scopes: vec![Scope::Admin],
            },
            TokenConfig {
                name: "noc".into(),
                token: READ.into(),
                scopes: vec![Scope::Read],
            },
        ]),
    });
    (app, t)
}

async fn call(
    app: &axum::Router,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> (StatusCode, Value) {
    let mut req = Request::builder()
        .method(method.to_uppercase().as_str())
        .uri(path);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let resp = app
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn concrete(path: &str) -> String {
    let action = if path.starts_with("/v1/connectors") {
        "pause"
    } else {
        "retry"
    };
    path.replace("{action}", action)
        .replace("{id}", "1")
        .replace("{name}", "hss")
        .replace("{key}", "msisdn:1")
}

#[tokio::test]
async fn every_route_is_documented_served_and_guarded_as_documented() {
    let (app, _t) = app().await;
    let (s, doc) = call(&app, "get", "/v1/openapi.json", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.0.3");
    assert!(ROUTES.len() >= 16);
    for r in ROUTES {
        let op = &doc["paths"][r.path][r.method];
        assert!(
            op.is_object(),
            "{} {} missing from the document",
            r.method,
            r.path
        );
        for ok in r.ok {
            assert!(
                op["responses"][ok.status.to_string()].is_object(),
                "{} {}",
                r.method,
                r.path
            );
        }
        let path = concrete(r.path);
        // Served: whatever the handler answers, it is not the router's fallback.
        let (_, body) = call(&app, r.method, &path, Some(ADMIN)).await;
        assert_ne!(
            body["error"]["code"], "not_found",
            "{} {} is not routed",
            r.method, r.path
        );
        // Guarded as documented.
        let (anon, _) = call(&app, r.method, &path, None).await;
        let (ingest, _) = call(&app, r.method, &path, Some(INGEST)).await;
        let (read, _) = call(&app, r.method, &path, Some(READ)).await;
        match r.scope {
            None => assert_ne!(anon, StatusCode::UNAUTHORIZED, "{} {}", r.method, r.path),
            Some(Scope::Ingest) => {
                assert_eq!(anon, StatusCode::UNAUTHORIZED, "{} {}", r.method, r.path);
                assert_ne!(ingest, StatusCode::FORBIDDEN, "{} {}", r.method, r.path);
            }
            Some(Scope::Read) => {
                assert_eq!(anon, StatusCode::UNAUTHORIZED, "{} {}", r.method, r.path);
                assert_eq!(ingest, StatusCode::FORBIDDEN, "{} {}", r.method, r.path);
                assert_ne!(read, StatusCode::FORBIDDEN, "{} {}", r.method, r.path);
                assert_eq!(r.method, "get", "only reads need only `read`");
            }
            Some(Scope::Admin) => {
                assert_eq!(anon, StatusCode::UNAUTHORIZED, "{} {}", r.method, r.path);
                assert_eq!(ingest, StatusCode::FORBIDDEN, "{} {}", r.method, r.path);
                assert_eq!(read, StatusCode::FORBIDDEN, "{} {}", r.method, r.path);
            }
        }
    }
    // And nothing undocumented answers.
    let (_, body) = call(&app, "get", "/v1/undocumented", Some(ADMIN)).await;
    assert_eq!(body["error"]["code"], "not_found");
}

/// Resolves a local `$ref` (one level is all the document uses).
fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(r) => {
            let name = r.trim_start_matches("#/components/schemas/");
            let target = &doc["components"]["schemas"][name];
            assert!(target.is_object(), "dangling $ref {r}");
            target
        }
        None => schema,
    }
}

/// Every `$ref` anywhere in `v`.
fn refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get("$ref") {
                out.push(r.clone());
            }
            m.values().for_each(|v| refs(v, out));
        }
        Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

#[tokio::test]
async fn the_document_types_every_parameter_body_and_answer() {
    let (app, _t) = app().await;
    let (_, doc) = call(&app, "get", "/v1/openapi.json", None).await;
    let mut all = Vec::new();
    refs(&doc, &mut all);
    for r in &all {
        let name = r.trim_start_matches("#/components/schemas/");
        assert!(
            doc["components"]["schemas"][name].is_object(),
            "dangling $ref {r}"
        );
    }
    for r in ROUTES {
        let op = &doc["paths"][r.path][r.method];
        let at = format!("{} {}", r.method, r.path);
        // Path parameters: exactly the path's placeholders, required, typed.
        let placeholders: Vec<&str> = r
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
            .collect();
        let params = op["parameters"].as_array().unwrap();
        let in_path: Vec<&str> = params
            .iter()
            .filter(|p| p["in"] == "path")
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert_eq!(in_path, placeholders, "{at}");
        for p in params {
            assert!(p["schema"]["type"].is_string(), "{at}: {p}");
            assert_eq!(p["required"], p["in"] == "path", "{at}: {p}");
        }
        // Success answers carry a schema.
        for ok in r.ok {
            let content = &op["responses"][ok.status.to_string()]["content"];
            let (_, media) = content.as_object().unwrap().iter().next().unwrap();
            assert!(media["schema"].is_object(), "{at} {}", ok.status);
        }
        // Every other documented answer is the error envelope in JSON.
        for (status, resp) in op["responses"].as_object().unwrap() {
            if r.ok.iter().any(|ok| ok.status.to_string() == *status) {
                continue;
            }
            assert!(status.starts_with('4') || status.starts_with('5'), "{at}");
            assert_eq!(
                resp["content"]["application/json"]["schema"]["$ref"], "#/components/schemas/Error",
                "{at} {status}"
            );
        }
        // Guarded routes say so, and document 401 and 403.
        if r.scope.is_some() {
            assert_eq!(op["security"], serde_json::json!([{"bearer": []}]), "{at}");
            assert!(op["responses"]["401"].is_object(), "{at}");
            assert!(op["responses"]["403"].is_object(), "{at}");
        } else {
            assert_eq!(op["security"], serde_json::json!([]), "{at}");
        }
        // A route that reads a body documents it as required, with its size
        // limit and content-type errors.
        let reads_body = r.body != switchboard::api::openapi::Body::None;
        assert_eq!(
            reads_body,
            matches!(r.method, "put")
                || (r.method == "post" && ["/v1/events", "/v1/replays"].contains(&r.path)),
            "{at}: the routes that read a body"
        );
        if reads_body {
            assert_eq!(op["requestBody"]["required"], true, "{at}");
            let content = op["requestBody"]["content"].as_object().unwrap();
            assert!(!content.is_empty(), "{at}");
            for media in content.values() {
                assert!(media["schema"].is_object(), "{at}");
            }
            for status in ["400", "413", "415"] {
                assert!(op["responses"][status].is_object(), "{at} {status}");
            }
        } else {
            assert!(op["requestBody"].is_null(), "{at}");
        }
    }

    let op = |m: &str, p: &str| doc["paths"][p][m].clone();
    let param = |op: &Value, name: &str| {
        op["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no parameter {name} in {op}"))
    };
    // Enumerated actions.
    assert_eq!(
        param(&op("post", "/v1/connectors/{name}/{action}"), "action")["schema"]["enum"],
        serde_json::json!(["pause", "resume"])
    );
    for (m, p) in [
        ("post", "/v1/dead-letters/{action}"),
        ("post", "/v1/deliveries/{id}/{action}"),
    ] {
        assert_eq!(
            param(&op(m, p), "action")["schema"]["enum"],
            serde_json::json!(["retry", "skip"])
        );
    }
    // Integers are integers, with their bounds.
    let limit = param(&op("get", "/v1/dead-letters"), "limit");
    assert_eq!(limit["schema"]["type"], "integer");
    assert_eq!(limit["schema"]["minimum"], 1);
    assert_eq!(limit["schema"]["maximum"], 1000);
    for name in ["since", "until", "before_id"] {
        let p = param(&op("get", "/v1/dead-letters"), name);
        assert_eq!(p["schema"]["type"], "integer", "{name}");
    }
    assert_eq!(
        param(&op("post", "/v1/deliveries/{id}/{action}"), "id")["schema"]["type"],
        "integer"
    );
    // The body schemas: events with this gateway's batch bound, the
    // connector settings, the limits; the upload as binary.
    let events = resolve(
        &doc,
        &op("post", "/v1/events")["requestBody"]["content"]["application/json"]["schema"],
    )
    .clone();
    assert_eq!(events["oneOf"][1]["maxItems"], 10);
    let configure = op("put", "/v1/connectors/{name}");
    let settings = resolve(
        &doc,
        &configure["requestBody"]["content"]["application/json"]["schema"],
    );
    assert_eq!(settings["additionalProperties"], false);
    let upload = &op("put", "/v1/connectors/{name}/component")["requestBody"]["content"];
    assert_eq!(upload["application/wasm"]["schema"]["format"], "binary");
}

/// The settings schema names exactly the fields a connector's settings
/// have, at every level, so a field added to the config cannot be missing
/// from the document (nor a removed one linger).
#[test]
fn connector_settings_schema_names_every_config_field() {
    let doc = switchboard::api::openapi::document(
        ROUTES,
        &switchboard::api::openapi::Settings {
            max_batch: 1,
            max_body_bytes: 1,
        },
    );
    let schema = &doc["components"]["schemas"]["ConnectorSettings"];
    let config: switchboard::config::ConnectorConfig =
        serde_json::from_value(serde_json::json!({"name": "x"})).unwrap();
    let full = serde_json::to_value(&config).unwrap();
    fn keys(v: &Value) -> Vec<String> {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    }
    let mut top = keys(&full);
    top.retain(|k| k != "name");
    assert_eq!(keys(&schema["properties"]), top);
    for nested in ["retry", "breaker", "limits"] {
        assert_eq!(
            keys(&schema["properties"][nested]["properties"]),
            keys(&full[nested]),
            "{nested}"
        );
    }
}
