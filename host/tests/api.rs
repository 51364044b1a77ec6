//! The HTTP API through the real router: ingest, look-up and every kind of bad
//! input (each a 4xx JSON error that stores nothing and leaves the server
//! healthy).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use switchboard::api::{router, AppState};
use tower::ServiceExt;

struct Api {
    app: axum::Router,
    _store: common::TestStore,
}

async fn api() -> Api {
    let t = common::sqlite().await;
    let app = router(AppState {
        store: t.store.clone(),
        fleet: common::fleet(&[("hss", &["number.*"]), ("crm", &["*"])]),
        connectors: None,
        tokens: switchboard::api::auth::Tokens::new(&[]),
        max_body_bytes: 64 * 1024,
        max_batch: 100,
    });
    Api { app, _store: t }
}

impl Api {
    async fn call(&self, method: &str, uri: &str, body: impl Into<Body>) -> (StatusCode, Value) {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json")
            .body(body.into())
            .unwrap();
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let value = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
            panic!(
                "{method} {uri}: body is not JSON: {:?}",
                String::from_utf8_lossy(&bytes)
            )
        });
        (status, value)
    }

    async fn post(&self, body: impl Into<Body>) -> (StatusCode, Value) {
        self.call("POST", "/v1/events", body).await
    }

    async fn exists(&self, id: &str) -> bool {
        let (status, _) = self
            .call("GET", &format!("/v1/events/{id}"), Body::empty())
            .await;
        status == StatusCode::OK
    }
}

#[tokio::test]
async fn ingest_answers_202_with_counts_and_the_event_can_be_looked_up() {
    let api = api().await;
    let ev = json!({"id": "evt-1", "type": "number.assign",
                    "keys": ["msisdn:2065551234", "customer:A2"],
                    "payload": {"msisdn": "2065551234", "customer": "A2"}});
    let (s, b) = api.post(ev.to_string()).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    assert_eq!(b, json!({"accepted": 1, "duplicates": 0, "unrouted": 0}));
    let (s, b) = api.post(ev.to_string()).await;
    assert_eq!(
        (s, b["duplicates"].as_u64()),
        (StatusCode::ACCEPTED, Some(1))
    );

    let (s, view) = api.call("GET", "/v1/events/evt-1", Body::empty()).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(view["type"], "number.assign");
    assert_eq!(view["payload"]["customer"], "A2");
    let deliveries = view["deliveries"].as_array().unwrap();
    let mut connectors: Vec<&str> = deliveries
        .iter()
        .map(|d| d["connector"].as_str().unwrap())
        .collect();
    connectors.sort();
    assert_eq!(connectors, ["crm", "hss"]);
    for d in deliveries {
        assert_eq!(d["state"], "ready");
        assert_eq!(d["attempts"], 0);
        assert!(d["next_attempt_at"].is_i64());
    }
    let (s, b) = api.call("GET", "/v1/events/nope", Body::empty()).await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("event_not_found"))
    );
}

/// Past the payload retention an event is reduced to its id: the event
/// view says so (rather than "never accepted"), and a re-post of the same
/// body is still a duplicate through the API.
#[tokio::test]
async fn an_event_reduced_to_its_id_is_still_known_and_says_why_it_is_gone() {
    let api = api().await;
    let ev = json!({"id": "old-1", "type": "customer.note", "payload": {"n": 1}});
    let (s, _) = api.post(ev.to_string()).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let store = &api._store.store;
    let later = i64::MAX / 4;
    let claimed = store.claim("crm", 10, later, 30_000).await.unwrap();
    assert_eq!(claimed.len(), 1);
    let delivered = switchboard::store::CompletionKind::Delivered;
    let done = vec![switchboard::store::Completion::of(&claimed[0], delivered)];
    store.complete(done, later).await.unwrap();
    let purge = switchboard::store::Purge {
        compact_before: i64::MAX / 2,
        forget_before: Some(0),
    };
    assert_eq!(store.purge_finished(purge, 10).await.unwrap().compacted, 1);

    let (s, b) = api.call("GET", "/v1/events/old-1", Body::empty()).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let message = b["error"]["message"].as_str().unwrap();
    assert!(message.contains("payload retention"), "{message}");
    let (_, b) = api.call("GET", "/v1/events/never", Body::empty()).await;
    let message = b["error"]["message"].as_str().unwrap();
    assert!(message.contains("never accepted"), "{message}");

    let (s, b) = api.post(ev.to_string()).await;
    assert_eq!(
        (s, b["duplicates"].as_u64()),
        (StatusCode::ACCEPTED, Some(1))
    );
    let other = json!({"id": "old-1", "type": "customer.note", "payload": {"n": 2}});
    let (s, b) = api.post(other.to_string()).await;
    assert_eq!(s, StatusCode::CONFLICT, "{b}");
}

/// A route that declares forwarding updates full-state per customer: the
/// older update not started is superseded, and its event says by which;
/// the number move between them is neither superseded nor jumped.
#[tokio::test]
async fn a_full_state_update_supersedes_the_older_one_and_says_so() {
    let t = common::sqlite().await;
    let hss: switchboard::config::ConnectorConfig = serde_json::from_value(json!({
        "name": "hss",
        "routes": ["number.*", {"match": "forwarding.*", "coalesce_key": "customer",
                                "coalesce_group": "forwarding"}]
    }))
    .unwrap();
    let fleet = switchboard::fleet::Fleet::new(vec![hss], switchboard::config::Bounds::default());
    let api = Api {
        app: router(AppState {
            store: t.store.clone(),
            fleet,
            connectors: None,
            tokens: switchboard::api::auth::Tokens::new(&[]),
            max_body_bytes: 64 * 1024,
            max_batch: 100,
        }),
        _store: t,
    };
    let ev = |id: &str, ty: &str, keys: &[&str]| {
        json!({"id": id, "type": ty, "keys": keys, "payload": {}}).to_string()
    };
    for body in [
        ev("f1", "forwarding.set", &["customer:A1"]),
        ev("m1", "number.move", &["customer:A1", "msisdn:1"]),
        ev("f2", "forwarding.clear", &["customer:A1"]),
    ] {
        let (s, b) = api.post(body).await;
        assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    }
    let delivery = |v: &Value| v["deliveries"][0].clone();
    let (_, f1) = api.call("GET", "/v1/events/f1", Body::empty()).await;
    assert_eq!(delivery(&f1)["state"], "superseded", "{f1}");
    assert_eq!(delivery(&f1)["superseded_by"], "f2", "{f1}");
    let (_, m1) = api.call("GET", "/v1/events/m1", Body::empty()).await;
    assert_eq!(delivery(&m1)["state"], "ready", "{m1}");
    assert!(delivery(&m1).get("superseded_by").is_none(), "{m1}");
    let (_, f2) = api.call("GET", "/v1/events/f2", Body::empty()).await;
    assert_eq!(delivery(&f2)["state"], "blocked", "{f2}");
}

#[tokio::test]
async fn same_id_with_another_body_is_a_409_and_stores_nothing_of_the_batch() {
    let api = api().await;
    api.post(json!({"id": "a", "type": "x", "payload": 1}).to_string())
        .await;
    let batch = json!([
        {"id": "b", "type": "x", "payload": 1},
        {"id": "a", "type": "x", "payload": 2},
    ]);
    let (s, b) = api.post(batch.to_string()).await;
    assert_eq!(s, StatusCode::CONFLICT, "{b}");
    assert_eq!(b["error"]["code"], "id_conflict");
    assert_eq!(b["error"]["index"], 1);
    assert!(!api.exists("b").await);
}

#[tokio::test]
async fn unrouted_events_are_kept_and_counted() {
    let t = common::sqlite().await;
    let app = router(AppState {
        store: t.store.clone(),
        fleet: common::fleet(&[("hss", &["number.*"])]),
        connectors: None,
        tokens: switchboard::api::auth::Tokens::new(&[]),
        max_body_bytes: 1 << 20,
        max_batch: 10,
    });
    let api = Api { app, _store: t };
    let (s, b) = api
        .post(
            json!([{"id": "n", "type": "number.assign", "payload": {}},
                     {"id": "q", "type": "quota.exceeded", "payload": {}}])
            .to_string(),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    assert_eq!(b, json!({"accepted": 2, "duplicates": 0, "unrouted": 1}));
    assert!(api.exists("q").await);
}

#[tokio::test]
async fn bad_input_is_a_4xx_json_error_that_stores_nothing() {
    let api = api().await;
    let long = "x".repeat(201);
    let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
    let cases: Vec<(&str, Vec<u8>, StatusCode, &str)> = vec![
        ("malformed", b"{\"id\": \"m1\", ".to_vec(), StatusCode::BAD_REQUEST, "malformed_json"),
        ("invalid utf-8", b"{\"id\":\"m2\xff\",\"type\":\"t\",\"payload\":1}".to_vec(), StatusCode::BAD_REQUEST, "malformed_json"),
        ("wrong type", br#"{"id":"m3","type":5,"payload":1}"#.to_vec(), StatusCode::BAD_REQUEST, "invalid_type"),
        ("missing payload", br#"{"id":"m4","type":"t"}"#.to_vec(), StatusCode::BAD_REQUEST, "missing_field"),
        ("missing id", br#"{"type":"t","payload":1}"#.to_vec(), StatusCode::BAD_REQUEST, "missing_field"),
        ("oversize id", format!(r#"{{"id":"{long}","type":"t","payload":1}}"#).into_bytes(), StatusCode::BAD_REQUEST, "invalid_length"),
        ("oversize key", format!(r#"{{"id":"m5","type":"t","keys":["{long}"],"payload":1}}"#).into_bytes(), StatusCode::BAD_REQUEST, "invalid_length"),
        ("control character in a key", br#"{"id":"m5b","type":"t","keys":["a\u0000b"],"payload":1}"#.to_vec(), StatusCode::BAD_REQUEST, "invalid_value"),
        ("deep nesting", format!(r#"{{"id":"m6","type":"t","payload":{deep}}}"#).into_bytes(), StatusCode::BAD_REQUEST, "malformed_json"),
        ("oversize body", format!(r#"{{"id":"m7","type":"t","payload":"{}"}}"#, "y".repeat(70_000)).into_bytes(), StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
        ("not an object", b"\"hello\"".to_vec(), StatusCode::BAD_REQUEST, "invalid_body"),
        ("unknown field", br#"{"id":"m8","type":"t","key":["k"],"payload":1}"#.to_vec(), StatusCode::BAD_REQUEST, "unknown_field"),
        ("batch with one bad event", br#"[{"id":"m9","type":"t","payload":1},{"id":"m10","type":"t"},{"id":"m11","type":"t","payload":1}]"#.to_vec(), StatusCode::BAD_REQUEST, "missing_field"),
    ];
    for (name, body, status, code) in cases {
        let (s, b) = api.post(body).await;
        assert_eq!(s, status, "{name}: {b}");
        assert_eq!(b["error"]["code"], code, "{name}: {b}");
        assert!(
            b["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{name}"
        );
    }
    let (_, b) = api
        .post(br#"[{"id":"m9","type":"t","payload":1},{"id":"m10","type":"t"}]"#.to_vec())
        .await;
    assert_eq!(
        (b["error"]["index"].as_u64(), b["error"]["field"].as_str()),
        (Some(1), Some("payload"))
    );
    for id in ["m1", "m3", "m4", "m5", "m6", "m7", "m8", "m9", "m10", "m11"] {
        assert!(!api.exists(id).await, "{id} must not be stored");
    }
    // Still healthy and still accepting.
    let (s, _) = api.call("GET", "/readyz", Body::empty()).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = api
        .post(json!({"id": "ok", "type": "t", "payload": 1}).to_string())
        .await;
    assert_eq!(s, StatusCode::ACCEPTED);
}

#[tokio::test]
async fn a_non_json_content_type_is_refused() {
    let api = api().await;
    let req = Request::builder()
        .method("POST")
        .uri("/v1/events")
        .header("content-type", "text/plain")
        .body(Body::from(
            json!({"id": "a", "type": "t", "payload": 1}).to_string(),
        ))
        .unwrap();
    let resp = api.app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
}

#[tokio::test]
async fn an_empty_batch_is_accepted_with_zero_counts() {
    let api = api().await;
    let (s, b) = api.post("[]").await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    assert_eq!(b, json!({"accepted": 0, "duplicates": 0, "unrouted": 0}));
}

#[tokio::test]
async fn keys_null_is_refused_as_the_wrong_type() {
    let api = api().await;
    let (s, b) = api
        .post(json!({"id": "kn", "type": "t", "keys": null, "payload": 1}).to_string())
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert_eq!(
        (b["error"]["code"].as_str(), b["error"]["field"].as_str()),
        (Some("invalid_type"), Some("keys"))
    );
    assert!(!api.exists("kn").await);
}

/// Sends a raw request and returns status, content type, `Allow` and body.
async fn raw(
    app: &axum::Router,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: impl Into<Body>,
) -> (StatusCode, String, Option<String>, Value) {
    let mut req = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = app
        .clone()
        .oneshot(req.body(body.into()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let header = |name| {
        resp.headers()
            .get(name)
            .map(|v: &axum::http::HeaderValue| v.to_str().unwrap().to_string())
    };
    let ct = header("content-type").unwrap_or_default();
    let allow = header("allow");
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, ct, allow, value)
}

/// Every 4xx the router or an extractor answers (bad query strings, path
/// segments, bodies, methods) is the JSON envelope, never axum's text/plain.
#[tokio::test]
async fn every_4xx_is_the_json_error_envelope() {
    let api = api().await;
    let json = [("content-type", "application/json")];
    let big = format!(r#"{{"routes": ["{}"]}}"#, "a".repeat(70 * 1024));
    // method, path and query, headers, body, status, error code
    type Case<'a> = (
        &'a str,
        &'a str,
        &'a [(&'a str, &'a str)],
        Vec<u8>,
        StatusCode,
        &'a str,
    );
    #[rustfmt::skip]
    let cases: Vec<Case> = vec![
        ("GET", "/v1/audit?limit=abc", &[], vec![], StatusCode::BAD_REQUEST, "invalid_query"),
        ("GET", "/v1/audit?limit=0", &[], vec![], StatusCode::BAD_REQUEST, "invalid_query"),
        ("GET", "/v1/audit?limit=1001", &[], vec![], StatusCode::BAD_REQUEST, "invalid_query"),
        ("GET", "/v1/audit?before_id=x", &[], vec![], StatusCode::BAD_REQUEST, "invalid_query"),
        ("GET", "/v1/dead-letters?since=x", &[], vec![], StatusCode::BAD_REQUEST, "invalid_query"),
        ("GET", "/v1/dead-letters?until=", &[], vec![], StatusCode::BAD_REQUEST, "invalid_query"),
        ("GET", "/v1/dead-letters?limit=-1", &[], vec![], StatusCode::BAD_REQUEST, "invalid_query"),
        ("GET", "/v1/dead-letters?nonsense=1", &[], vec![], StatusCode::BAD_REQUEST, "invalid_query"),
        ("GET", "/v1/dead-letters?key=a%00b", &[], vec![], StatusCode::BAD_REQUEST, "invalid_query"),
        ("POST", "/v1/dead-letters/retry?limit=abc", &[], vec![], StatusCode::BAD_REQUEST, "invalid_query"),
        ("POST", "/v1/dead-letters/explode", &[], vec![], StatusCode::NOT_FOUND, "not_found"),
        ("POST", "/v1/deliveries/abc/retry", &[], vec![], StatusCode::BAD_REQUEST, "invalid_path"),
        ("POST", "/v1/deliveries/99999999999999999999/skip", &[], vec![], StatusCode::BAD_REQUEST, "invalid_path"),
        ("POST", "/v1/deliveries/1/explode", &[], vec![], StatusCode::NOT_FOUND, "not_found"),
        ("GET", "/v1/keys/a%00b", &[], vec![], StatusCode::BAD_REQUEST, "invalid_path"),
        ("GET", "/v1/events/%01", &[], vec![], StatusCode::BAD_REQUEST, "invalid_path"),
        ("GET", "/v1/events/%FF", &[], vec![], StatusCode::BAD_REQUEST, "invalid_path"),
        ("PUT", "/v1/connectors/hss", &json, b"{".to_vec(), StatusCode::BAD_REQUEST, "invalid_json"),
        ("PUT", "/v1/connectors/hss", &[("content-type", "text/plain")], b"{}".to_vec(), StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
        ("PUT", "/v1/connectors/hss", &json, big.clone().into_bytes(), StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
        ("PUT", "/v1/connectors/hss/limits", &json, b"[".to_vec(), StatusCode::BAD_REQUEST, "invalid_limits"),
        ("PUT", "/v1/connectors/hss/limits", &[("content-type", "application/xml")], b"{}".to_vec(), StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
        ("PUT", "/v1/connectors/hss/limits", &json, big.into_bytes(), StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
        ("PUT", "/v1/connectors/hss/component", &[("content-type", "application/wasm"), ("content-length", "67108865")], b"\0asm".to_vec(), StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
        ("PUT", "/v1/connectors/hss/component", &[("content-type", "text/plain")], b"\0asm".to_vec(), StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
        ("PUT", "/v1/connectors/hss/component", &[("content-type", "application/wasm")], vec![], StatusCode::BAD_REQUEST, "empty_body"),
        ("DELETE", "/v1/events", &[], vec![], StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
        ("POST", "/healthz", &[], vec![], StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
        ("PATCH", "/v1/connectors/hss", &[], vec![], StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
        ("GET", "/v1/nowhere", &[], vec![], StatusCode::NOT_FOUND, "not_found"),
    ];
    for (method, uri, headers, body, status, code) in cases {
        let (s, ct, allow, b) = raw(&api.app, method, uri, headers, body).await;
        let case = format!("{method} {uri}: {s} {ct} {b}");
        assert_eq!(s, status, "{case}");
        assert_eq!(ct, "application/json", "{case}");
        assert_eq!(b["error"]["code"], code, "{case}");
        assert!(
            b["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{case}"
        );
        if s == StatusCode::METHOD_NOT_ALLOWED {
            assert!(
                allow.is_some_and(|a| !a.is_empty()),
                "{case}: no Allow header"
            );
        }
    }
    // None of it disturbed the gateway.
    let (s, _) = api.call("GET", "/readyz", Body::empty()).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn empty_text_filters_mean_no_filter() {
    let api = api().await;
    let (s, b) = api
        .call(
            "GET",
            "/v1/dead-letters?connector=&type=&key=&limit=5",
            Body::empty(),
        )
        .await;
    assert_eq!((s, b), (StatusCode::OK, json!([])));
}
