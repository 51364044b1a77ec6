//! The OpenAPI document covers every route the router serves, and each
//! route's documented scope is the one enforced.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use switchboard::api::auth::Tokens;
use switchboard::api::{router, AppState, ROUTES};
use switchboard::config::{Scope, TokenConfig};
use switchboard::dispatch::Wakers;
use tower::ServiceExt;

const INGEST: &str = "ingest-token-0123456789";
const ADMIN: &str = "admin-token-0123456789";

async fn app() -> (axum::Router, common::TestStore) {
    let t = common::sqlite().await;
    let app = router(AppState {
        store: t.store.clone(),
        fleet: common::fleet(&[]),
        wakers: Wakers::new([]),
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
        assert!(
            op["responses"][r.ok.0].is_object(),
            "{} {}",
            r.method,
            r.path
        );
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
        match r.scope {
            "none" => assert_ne!(anon, StatusCode::UNAUTHORIZED, "{} {}", r.method, r.path),
            "ingest" => {
                assert_eq!(anon, StatusCode::UNAUTHORIZED, "{} {}", r.method, r.path);
                assert_ne!(ingest, StatusCode::FORBIDDEN, "{} {}", r.method, r.path);
            }
            "admin" => {
                assert_eq!(anon, StatusCode::UNAUTHORIZED, "{} {}", r.method, r.path);
                assert_eq!(ingest, StatusCode::FORBIDDEN, "{} {}", r.method, r.path);
            }
            other => panic!("unknown scope {other}"),
        }
    }
    // And nothing undocumented answers.
    let (_, body) = call(&app, "get", "/v1/undocumented", Some(ADMIN)).await;
    assert_eq!(body["error"]["code"], "not_found");
}
