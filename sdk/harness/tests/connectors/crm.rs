//! `crm`: POST {base_url}/serviceOrder, a TMF641-style service order.

use crate::{check_statuses, SPEC_STATUSES};
use std::time::Duration;
use switchboard_connector_test::{
    json, Delivery, FakeUpstream, Harness, Outcome, OutcomeExt, Reply,
};

fn crm(up: &FakeUpstream) -> Harness {
    Harness::connector("crm")
        .config("base_url", up.url("/tmf-api/serviceOrdering/v4"))
        .allow_host(up.host())
}

fn event(event_type: &str) -> Delivery {
    Delivery::new(event_type)
        .id("dlv-c")
        .event_id("evt-000123")
        .payload(json!({"msisdn": "2065551234", "customer": "A2", "plan": {"name": "Basic"}}))
}

#[tokio::test]
async fn declares_base_url() {
    let up = FakeUpstream::start().await;
    let info = crm(&up).describe().await.unwrap();
    assert_eq!(info.name, "crm");
    assert!(info
        .config
        .iter()
        .any(|f| f.name == "base_url" && f.required));
}

#[tokio::test]
async fn maps_event_types_to_order_actions() {
    let up = FakeUpstream::start().await;
    let h = crm(&up);
    let table = [
        ("number.assign", "add"),
        ("customer.create", "add"),
        ("service.add", "add"),
        ("service.activate", "add"),
        ("customer.update", "modify"),
        ("service.modify", "modify"),
        ("plan.change", "modify"),
        ("number.release", "delete"),
        ("customer.delete", "delete"),
        ("addon.remove", "delete"),
        ("service.deactivate", "delete"),
        ("contract.terminate", "delete"),
        ("update", "modify"),
    ];
    for (event_type, action) in table {
        up.push(Reply::status(201).json(&json!({"id": "so-1", "state": "acknowledged"})));
        assert_eq!(
            h.deliver(event(event_type)).await,
            Outcome::Done,
            "{event_type}"
        );
        let req = up.last_request().unwrap();
        assert_eq!(req.method, "POST");
        assert_eq!(req.path, "/tmf-api/serviceOrdering/v4/serviceOrder");
        assert_eq!(req.header("idempotency-key"), Some("dlv-c"));
        assert_eq!(req.header("content-type"), Some("application/json"));
        assert_eq!(
            req.json,
            Some(json!({
                "externalId": "evt-000123",
                "serviceOrderItem": [{
                    "id": "1",
                    "action": action,
                    "service": {"msisdn": "2065551234", "customer": "A2", "plan": {"name": "Basic"}},
                }],
            })),
            "{event_type}"
        );
    }
}

#[tokio::test]
async fn classifies_statuses_and_honours_retry_after() {
    let up = FakeUpstream::start().await;
    let h = crm(&up);
    check_statuses(&h, &up, SPEC_STATUSES, || event("customer.update")).await;
    up.push(Reply::status(503).header("retry-after", "15"));
    assert_eq!(
        h.deliver(event("customer.update")).await.retry_after(),
        Some(Duration::from_secs(15))
    );
}

#[tokio::test]
async fn refuses_what_it_cannot_map_without_calling_the_crm() {
    let up = FakeUpstream::start().await;
    let h = crm(&up);
    let cases = [
        (event("number.port"), "`number.port`"),
        (event("number.assign."), "no service order action"),
        (
            event("customer.update").payload(json!(["a"])),
            "JSON object",
        ),
        (event("customer.update").payload(json!("A2")), "JSON object"),
        (event("customer.update").payload_text("{"), "JSON object"),
    ];
    for (d, needle) in cases {
        let label = format!("{d:?}");
        let outcome = h.deliver(d).await;
        assert_eq!(outcome.kind(), "reject", "{label}: {outcome:?}");
        assert!(
            outcome.reason().unwrap().contains(needle),
            "{label}: {outcome:?}"
        );
    }
    assert!(up.requests().is_empty(), "no order for refused input");
}

/// The deepest payload the gateway accepts (126 levels; see
/// `payloads_nest_at_most_126_deep` in the host) is parsed and re-encoded
/// inside the component without running out of the 128 KiB stack that
/// connectors are built with (`connectors/.cargo/config.toml`).
#[tokio::test]
async fn a_payload_nested_as_deep_as_ingest_allows_fits_the_connector_stack() {
    let up = FakeUpstream::start().await;
    let h = crm(&up);
    let arrays = 125; // inside the payload object: 126 levels in all
    let deep = format!("{}1{}", "[".repeat(arrays), "]".repeat(arrays));
    let payload = format!(r#"{{"msisdn":"2065551234","customer":"A2","deep":{deep}}}"#);
    up.push(Reply::status(201).json(&json!({"id": "so-1", "state": "acknowledged"})));
    let outcome = h
        .deliver(event("customer.update").payload_text(payload))
        .await;
    assert_eq!(outcome, Outcome::Done);
    let req = up.last_request().unwrap();
    let body = String::from_utf8(req.body).unwrap();
    assert!(body.contains(&format!(r#""deep":{deep}"#)), "{body}");
}
