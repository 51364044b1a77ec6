//! The operator API through the real router: authentication and scopes, dead
//! letters (list, retry, skip, bulk), "why is this key blocked", and the
//! audit log of every action.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use switchboard::api::auth::Tokens;
use switchboard::api::{router, AppState};
use switchboard::config::{Scope, TokenConfig};
use switchboard::queue::{now_ms, OnDead};
use switchboard::store::{Completion, CompletionKind};
use tower::ServiceExt;

const INGEST: &str = "ingest-token-0123456789";
const ADMIN: &str = "admin-token-0123456789";
const READ: &str = "read-token-0123456789";

struct Api {
    app: axum::Router,
    t: common::TestStore,
}

async fn api() -> Api {
    api_on(common::sqlite().await)
}

fn api_on(t: common::TestStore) -> Api {
    let tokens = Tokens::new(&[
        TokenConfig {
            name: "config-app".into(),
            token: INGEST.into(),
            scopes: vec![Scope::Ingest],
        },
        TokenConfig {
            name: "alice".into(),
            token: ADMIN.into(),
            scopes: vec![Scope::Admin],
        },
        TokenConfig {
            name: "noc".into(),
            token: READ.into(),
            scopes: vec![Scope::Read],
        },
    ]);
    let app = router(AppState {
        store: t.store.clone(),
        fleet: common::fleet(&[("hss", &["*"])]),
        connectors: None,
        max_body_bytes: 1 << 20,
        max_batch: 100,
        tokens,
    });
    Api { app, t }
}

impl Api {
    async fn call(
        &self,
        method: &str,
        uri: &str,
        token: Option<&str>,
        body: Value,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json");
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let body = if body.is_null() {
            Body::empty()
        } else {
            Body::from(body.to_string())
        };
        let resp = self
            .app
            .clone()
            .oneshot(req.body(body).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    /// Two events on one number; the first is rejected and held dead.
    async fn dead_letter_ahead_of_another(&self) -> i64 {
        let batch = json!([
            {"id": "bad", "type": "number.assign", "keys": ["msisdn:1"], "payload": {}},
            {"id": "next", "type": "number.assign", "keys": ["msisdn:1"], "payload": {}},
        ]);
        let (s, _) = self.call("POST", "/v1/events", Some(INGEST), batch).await;
        assert_eq!(s, StatusCode::ACCEPTED);
        let claimed = self
            .t
            .store
            .claim("hss", 10, now_ms(), 30_000)
            .await
            .unwrap();
        assert_eq!(claimed.len(), 1);
        let dead = CompletionKind::Dead {
            error: "rejected: 409 number in use".into(),
            on_dead: OnDead::Hold,
        };
        self.t
            .store
            .complete(vec![Completion::of(&claimed[0], dead)], now_ms())
            .await
            .unwrap();
        claimed[0].delivery_id
    }
}

/// A resume reaches the other nodes sharing a PostgreSQL store at once
/// (they would otherwise claim at their next poll); a pause, which makes
/// nothing ready, is not announced.
#[tokio::test]
async fn a_resume_is_announced_to_the_other_nodes() {
    use std::time::Duration;
    use switchboard::store::postgres::PostgresStore;
    use switchboard::store::{Announcement, Store};
    let api = api_on(common::postgres().await);
    let b = PostgresStore::open_as(&api.t.url, "b:1").await.unwrap();
    let mut heard = b.cluster().unwrap().listen().await.unwrap();
    // This node announces once it listens too.
    let _mine = api.t.store.cluster().unwrap().listen().await.unwrap();
    let pause = "/v1/connectors/hss/pause";
    let (s, _) = api.call("POST", pause, Some(ADMIN), Value::Null).await;
    assert_eq!(s, StatusCode::OK);
    let quiet = tokio::time::timeout(Duration::from_millis(300), heard.recv()).await;
    assert!(quiet.is_err(), "a pause is not announced: {quiet:?}");
    let resume = "/v1/connectors/hss/resume";
    let (s, _) = api.call("POST", resume, Some(ADMIN), Value::Null).await;
    assert_eq!(s, StatusCode::OK);
    let next = tokio::time::timeout(Duration::from_secs(10), heard.recv())
        .await
        .expect("announced within seconds")
        .unwrap();
    assert_eq!(next, Announcement::Work("hss".into()));
}

#[tokio::test]
async fn tokens_and_scopes_are_enforced_and_nothing_changes_on_refusal() {
    let api = api().await;
    let ev = json!({"id": "e1", "type": "number.assign", "payload": {}});
    let (s, b) = api.call("POST", "/v1/events", None, ev.clone()).await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("unauthorized"))
    );
    let (s, _) = api
        .call("POST", "/v1/events", Some("not-a-token-at-all"), ev.clone())
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(
        api.t.store.catalog().event("e1").await.unwrap().is_none(),
        "refused ingest stores nothing"
    );
    let (s, _) = api
        .call("POST", "/v1/events", Some(INGEST), ev.clone())
        .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    // The ingest scope cannot read or operate.
    let (s, b) = api
        .call("GET", "/v1/events/e1", Some(INGEST), Value::Null)
        .await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("forbidden"))
    );
    let (s, _) = api
        .call("POST", "/v1/dead-letters/skip", Some(INGEST), Value::Null)
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = api.call("GET", "/v1/audit", None, Value::Null).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // Admin may do everything; health probes are open.
    let (s, _) = api
        .call("GET", "/v1/events/e1", Some(ADMIN), Value::Null)
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = api.call("GET", "/readyz", None, Value::Null).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn a_read_token_reads_everything_an_operator_sees_and_changes_nothing() {
    let api = api().await;
    let id = api.dead_letter_ahead_of_another().await;
    for path in [
        "/v1/events/bad",
        "/v1/connectors",
        "/v1/connectors/hss",
        "/v1/dead-letters",
        "/v1/keys/msisdn:1",
        "/v1/audit",
    ] {
        let (s, b) = api.call("GET", path, Some(READ), Value::Null).await;
        assert_eq!(s, StatusCode::OK, "GET {path}: {b}");
    }
    let metrics = api
        .app
        .clone()
        .oneshot(
            Request::get("/metrics")
                .header("authorization", format!("Bearer {READ}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(metrics.status(), StatusCode::OK);
    let ev = json!({"id": "r1", "type": "number.assign", "payload": {}});
    let refused = [
        ("POST", "/v1/events".to_string(), ev),
        ("POST", format!("/v1/deliveries/{id}/retry"), Value::Null),
        ("POST", "/v1/dead-letters/skip".to_string(), Value::Null),
        ("POST", "/v1/connectors/hss/pause".to_string(), Value::Null),
        (
            "PUT",
            "/v1/connectors/hss/limits".to_string(),
            json!({"concurrency": 1}),
        ),
    ];
    for (method, path, body) in refused {
        let (s, b) = api.call(method, &path, Some(READ), body).await;
        assert_eq!(
            (s, b["error"]["code"].as_str()),
            (StatusCode::FORBIDDEN, Some("forbidden")),
            "{method} {path}"
        );
        assert!(
            b["error"]["message"].as_str().unwrap().contains("`admin`")
                || b["error"]["message"].as_str().unwrap().contains("`ingest`"),
            "{b}"
        );
    }
    let (_, dead) = api
        .call("GET", "/v1/dead-letters", Some(READ), Value::Null)
        .await;
    assert_eq!(dead[0]["delivery_id"], id, "still dead");
    assert!(!api.t.store.catalog().is_paused("hss").await.unwrap());
    let (_, audit) = api.call("GET", "/v1/audit", Some(READ), Value::Null).await;
    assert!(audit.as_array().unwrap().is_empty(), "{audit}");
}

#[tokio::test]
async fn dead_letters_can_be_listed_explained_retried_and_skipped_with_an_audit_trail() {
    let api = api().await;
    let id = api.dead_letter_ahead_of_another().await;

    let (s, list) = api
        .call(
            "GET",
            "/v1/dead-letters?connector=hss&key=msisdn:1",
            Some(ADMIN),
            Value::Null,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{list}");
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["event_id"], "bad");
    assert_eq!(list[0]["last_error"], "rejected: 409 number in use");
    let (_, none) = api
        .call(
            "GET",
            "/v1/dead-letters?key=msisdn:2",
            Some(ADMIN),
            Value::Null,
        )
        .await;
    assert!(none.as_array().unwrap().is_empty());
    for (reason, n) in [("409", 1), ("number in use", 1), ("503", 0)] {
        let (s, found) = api
            .call(
                "GET",
                &format!("/v1/dead-letters?reason={}", reason.replace(' ', "%20")),
                Some(ADMIN),
                Value::Null,
            )
            .await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(
            found.as_array().unwrap().len(),
            n,
            "reason {reason:?}: {found}"
        );
    }

    // Why is msisdn:1 blocked? Its head is the dead letter, one waits behind.
    let (s, why) = api
        .call("GET", "/v1/keys/msisdn:1", Some(ADMIN), Value::Null)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(why[0]["head"][0], "bad", "{why}");
    assert_eq!(why[0]["head"][1]["state"], "dead");
    assert_eq!(why[0]["waiting"], 1);

    // Retry: back to ready at the head.
    let (s, _) = api
        .call(
            "POST",
            &format!("/v1/deliveries/{id}/retry"),
            Some(ADMIN),
            Value::Null,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, b) = api
        .call(
            "POST",
            &format!("/v1/deliveries/{id}/retry"),
            Some(ADMIN),
            Value::Null,
        )
        .await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("not_dead"))
    );
    let again = api
        .t
        .store
        .claim("hss", 10, now_ms(), 30_000)
        .await
        .unwrap();
    assert_eq!(again[0].event.id, "bad");
    let dead = CompletionKind::Dead {
        error: "rejected again".into(),
        on_dead: OnDead::Hold,
    };
    api.t
        .store
        .complete(vec![Completion::of(&again[0], dead)], now_ms())
        .await
        .unwrap();

    // Bulk skip by filter releases the lane.
    let (s, b) = api
        .call(
            "POST",
            "/v1/dead-letters/skip?connector=hss",
            Some(ADMIN),
            Value::Null,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        (b["matched"].as_u64(), b["applied"].as_u64()),
        (Some(1), Some(1))
    );
    let next = api
        .t
        .store
        .claim("hss", 10, now_ms(), 30_000)
        .await
        .unwrap();
    assert_eq!(next[0].event.id, "next");

    let (_, audit) = api.call("GET", "/v1/audit", Some(ADMIN), Value::Null).await;
    let actions: Vec<(&str, &str)> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["action"].as_str().unwrap(), a["actor"].as_str().unwrap()))
        .collect();
    assert_eq!(
        actions,
        vec![("delivery.skip", "alice"), ("delivery.retry", "alice")]
    );
    assert_eq!(audit[1]["before"]["state"], "dead");
    assert_eq!(audit[1]["after"]["state"], "ready");
    assert_eq!(audit[0]["target"], id.to_string());
}

/// A strict reading of the Prometheus text format: every sample line is
/// `name{label="value",…} number`, and each family's TYPE comes first.
/// (metric name, labels, value)
type Sample = (String, Vec<(String, String)>, f64);

fn parse_exposition(text: &str) -> Vec<Sample> {
    let mut typed = std::collections::HashSet::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            typed.insert(parts.next().unwrap().to_string());
            assert!(
                matches!(parts.next(), Some("counter" | "gauge" | "histogram")),
                "{line}"
            );
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value: {line}"));
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (
                n,
                l.strip_suffix('}')
                    .unwrap_or_else(|| panic!("unclosed: {line}")),
            ),
            None => (series, ""),
        };
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad name: {line}"
        );
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| typed.contains(*f)))
            .unwrap_or(name);
        assert!(typed.contains(family), "sample before its TYPE: {line}");
        let mut parsed = Vec::new();
        for pair in labels.split(',').filter(|p| !p.is_empty()) {
            let (k, v) = pair
                .split_once('=')
                .unwrap_or_else(|| panic!("bad label: {line}"));
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or_else(|| panic!("unquoted: {line}"));
            parsed.push((k.to_string(), v.to_string()));
        }
        samples.push((name.to_string(), parsed, value));
    }
    samples
}

#[tokio::test]
async fn metrics_are_valid_prometheus_text_with_bounded_labels() {
    let api = api().await;
    api.dead_letter_ahead_of_another().await;
    let (s, _) = api
        .call(
            "POST",
            "/v1/events",
            Some(INGEST),
            json!({"id": "x", "type": "t"}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = api.call("GET", "/metrics", None, Value::Null).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "metrics need the admin scope");
    let req = Request::builder()
        .uri("/metrics")
        .header("authorization", format!("Bearer {ADMIN}"))
        .body(Body::empty())
        .unwrap();
    let resp = api.app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let text = String::from_utf8(
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    let samples = parse_exposition(&text);
    let get = |name: &str, labels: &[(&str, &str)]| {
        samples
            .iter()
            .find(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map(|s| s.2)
    };
    assert_eq!(
        get("switchboard_dead_letters", &[("connector", "hss")]),
        Some(1.0)
    );
    assert_eq!(
        get("switchboard_queue_blocked", &[("connector", "hss")]),
        Some(1.0)
    );
    assert!(
        get(
            "switchboard_oldest_pending_age_seconds",
            &[("connector", "hss")]
        )
        .unwrap()
            >= 0.0
    );
    assert!(get("switchboard_ingest_requests_total", &[("status", "400")]).unwrap() >= 1.0);
    assert!(get("switchboard_ingest_duration_seconds_count", &[]).unwrap() >= 2.0);
    // No key, number or event id ever becomes a label value.
    for (_, labels, _) in &samples {
        for (k, v) in labels {
            assert!(
                matches!(
                    k.as_str(),
                    "connector" | "status" | "result" | "outcome" | "le"
                ),
                "label {k}"
            );
            assert!(
                !v.contains("msisdn") && v != "bad" && v != "next",
                "label value {v}"
            );
        }
    }
}

#[tokio::test]
async fn connectors_are_created_and_reconfigured_through_the_api_audited_and_stored() {
    let api = api().await;
    let sms = json!({
        "routes": ["quota.*"],
        "allowed_hosts": ["127.0.0.1:9"],
        "concurrency": 4,
        "rate": 10.0,
        "config": {"url": "http://127.0.0.1:9/send"},
        "secret_headers": {"authorization": "Bearer s3cr3t"}
    });
    // Ingest scope and no token are refused, and nothing is created.
    let (s, _) = api
        .call("PUT", "/v1/connectors/sms", Some(INGEST), sms.clone())
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = api
        .call("GET", "/v1/connectors/sms", Some(ADMIN), Value::Null)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // Created: 201, listed, and events of its routes reach it at once.
    let (s, b) = api
        .call("PUT", "/v1/connectors/sms", Some(ADMIN), sms.clone())
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert_eq!(
        (b["name"].as_str(), b["concurrency"].as_u64()),
        (Some("sms"), Some(4))
    );
    let ev = json!({"id": "q1", "type": "quota.reached", "payload": {}});
    let (s, b) = api.call("POST", "/v1/events", Some(INGEST), ev).await;
    assert_eq!(
        (s, b["unrouted"].as_u64()),
        (StatusCode::ACCEPTED, Some(0)),
        "{b}"
    );
    let claimed = api
        .t
        .store
        .claim("sms", 10, now_ms(), 30_000)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);

    // Reconfigured: 200, the new routes in force.
    let mut changed = sms.clone();
    changed["routes"] = json!(["quota.*", "usage.*"]);
    let (s, b) = api
        .call("PUT", "/v1/connectors/sms", Some(ADMIN), changed)
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let ev = json!({"id": "u1", "type": "usage.high", "payload": {}});
    let (_, b) = api.call("POST", "/v1/events", Some(INGEST), ev).await;
    assert_eq!(b["unrouted"].as_u64(), Some(0), "{b}");

    // Bad settings: a clear 4xx, and the connector keeps what it had.
    for (body, code) in [
        (json!({"concurrency": 0}), "invalid_connector"),
        (json!({"routes": ["bad pattern!"]}), "invalid_connector"),
        // A coalesce key must name an event key, never a payload field.
        (
            json!({"routes": [{"match": "fwd.*", "coalesce_key": "$.customer"}]}),
            "invalid_connector",
        ),
        (
            json!({"routes": [{"match": "fwd.*", "coalesce_group": "fwd"}]}),
            "invalid_connector",
        ),
        (
            json!({"routes": [{"match": "fwd.*", "coalesce_key": "customer"},
                              {"match": "fwd.set", "coalesce_key": "msisdn"}]}),
            "invalid_connector",
        ),
        (
            json!({"limits": {"deadline_ms": 999999999}}),
            "invalid_connector",
        ),
        (json!({"retries": 3}), "invalid_connector"),
        (json!({"name": "other"}), "invalid_connector"),
        (json!({"component": "/tmp/x.wasm"}), "invalid_connector"),
        (json!([1, 2]), "invalid_connector"),
    ] {
        let (s, b) = api
            .call("PUT", "/v1/connectors/sms", Some(ADMIN), body.clone())
            .await;
        assert_eq!(
            (s, b["error"]["code"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some(code)),
            "{body} → {b}"
        );
    }
    let (_, b) = api
        .call("GET", "/v1/connectors/sms", Some(ADMIN), Value::Null)
        .await;
    assert_eq!(b["routes"], json!(["quota.*", "usage.*"]), "{b}");
    assert_eq!(b["settings"]["concurrency"], 4, "{b}");
    assert_eq!(
        b["settings"]["secret_headers"]["authorization"], "***",
        "{b}"
    );

    // Stored whole (it survives restarts and reaches other nodes) ...
    let stored = api.t.store.catalog().connector_configs().await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(
        stored[0].1["secret_headers"]["authorization"],
        "Bearer s3cr3t"
    );
    // ... and audited with the secret redacted.
    let (_, audit) = api.call("GET", "/v1/audit", Some(ADMIN), Value::Null).await;
    let configs: Vec<&Value> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["action"] == "connector.config")
        .collect();
    assert_eq!(configs.len(), 2, "{audit}");
    assert_eq!(configs[0]["actor"], "alice");
    assert!(configs[1]["before"].is_null(), "created: nothing before");
    assert_eq!(configs[0]["before"]["routes"], json!(["quota.*"]));
    assert!(!audit.to_string().contains("s3cr3t"), "{audit}");
}

/// `POST /v1/replays` and friends: bad requests are refused with a clear
/// error and store nothing; a read token sees replays and starts none; a
/// replay's progress is visible; a cancel answers once, then 409.
#[tokio::test]
async fn replays_are_started_watched_and_cancelled_through_the_api() {
    let api = api().await;
    for i in 0..3 {
        let ev = json!({"id": format!("r{i}"), "type": "number.assign", "keys": ["msisdn:1"], "payload": {}});
        let (s, _) = api.call("POST", "/v1/events", Some(INGEST), ev).await;
        assert_eq!(s, StatusCode::ACCEPTED);
    }
    for (body, status, code) in [
        (
            json!({"connector": "nope", "since": 0}),
            StatusCode::NOT_FOUND,
            "connector_not_found",
        ),
        (
            json!({"connector": "hss", "since": 10, "until": 10}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_replay",
        ),
        (
            json!({"connector": "hss", "since": 0, "types": ["Bad*"]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_replay",
        ),
        (
            json!({"connector": "hss", "since": 0, "rate": 0}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_replay",
        ),
        (
            json!({"connector": "hss", "since": 0, "key": ""}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_replay",
        ),
        (
            json!({"connector": "hss"}),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            json!({"connector": "hss", "since": 0, "from": 1}),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
    ] {
        let (s, b) = api
            .call("POST", "/v1/replays", Some(ADMIN), body.clone())
            .await;
        assert_eq!(
            (s, b["error"]["code"].as_str()),
            (status, Some(code)),
            "{body} → {b}"
        );
    }
    let (s, _) = api
        .call(
            "POST",
            "/v1/replays",
            Some(READ),
            json!({"connector": "hss", "since": 0}),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "a read token starts nothing");
    let (s, list) = api
        .call("GET", "/v1/replays", Some(READ), Value::Null)
        .await;
    assert_eq!((s, list), (StatusCode::OK, json!([])), "nothing was stored");

    let (s, r) = api
        .call(
            "POST",
            "/v1/replays",
            Some(ADMIN),
            json!({"connector": "hss", "since": 0, "rate": 50}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{r}");
    assert_eq!(
        (
            r["state"].as_str(),
            r["rate"].as_f64(),
            r["created_by"].as_str()
        ),
        (Some("running"), Some(50.0), Some("alice"))
    );
    let id = r["id"].as_i64().unwrap();
    let (s, one) = api
        .call("GET", &format!("/v1/replays/{id}"), Some(READ), Value::Null)
        .await;
    assert_eq!((s, one["id"].as_i64()), (StatusCode::OK, Some(id)));
    let (s, _) = api
        .call("GET", "/v1/replays/999", Some(READ), Value::Null)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    let cancel = format!("/v1/replays/{id}/cancel");
    let (s, _) = api.call("POST", &cancel, Some(READ), Value::Null).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, b) = api.call("POST", &cancel, Some(ADMIN), Value::Null).await;
    assert_eq!(
        (s, b["replay"]["state"].as_str()),
        (StatusCode::OK, Some("cancelled")),
        "{b}"
    );
    let (s, b) = api.call("POST", &cancel, Some(ADMIN), Value::Null).await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("replay_not_running"))
    );
    let audit = api.t.store.catalog().audit_log(10, None).await.unwrap();
    let actions: Vec<&str> = audit.iter().map(|a| a.action.as_str()).collect();
    assert_eq!(actions[..2], ["replay.cancel", "replay.start"]);
}
