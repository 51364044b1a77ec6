//! `hss`: number.assign → PUT, number.release → DELETE on
//! `{base_url}/subscribers/{msisdn}`.

use crate::{check_statuses, refused_host, SPEC_STATUSES};
use std::time::Duration;
use switchboard_connector_test::{
    json, Delivery, FakeUpstream, Harness, Outcome, OutcomeExt, Reply,
};

fn hss(up: &FakeUpstream) -> Harness {
    // A trailing slash on base_url must not double the separator.
    Harness::connector("hss")
        .config("base_url", up.url("/api/v1/"))
        .allow_host(up.host())
}

fn assign() -> Delivery {
    Delivery::new("number.assign")
        .id("dlv-a")
        .event_id("evt-a")
        .keys(["msisdn:2065551234", "customer:A2"])
        .payload(json!({"msisdn": "2065551234", "customer": "A2"}))
}

fn release() -> Delivery {
    Delivery::new("number.release")
        .id("dlv-r")
        .event_id("evt-r")
        .keys(["msisdn:2065551234", "customer:A1"])
        .payload(json!({"msisdn": "2065551234", "customer": "A1"}))
}

#[tokio::test]
async fn declares_its_config() {
    let up = FakeUpstream::start().await;
    let info = hss(&up).describe().await.unwrap();
    assert_eq!(info.name, "hss");
    let keys: Vec<_> = info
        .config
        .iter()
        .map(|f| (f.name.as_str(), f.required))
        .collect();
    assert_eq!(keys, [("base_url", true), ("profile", false)]);
}

#[tokio::test]
async fn assign_puts_the_subscriber_record() {
    let up = FakeUpstream::start().await;
    let h = hss(&up).config("profile", "default-4g");
    let cases = [
        (
            json!({"msisdn": "2065551234", "customer": "A2"}),
            json!({"msisdn": "2065551234", "customer": "A2", "profile": "default-4g"}),
        ),
        (
            json!({"msisdn": "+2065551234", "customer": "A2", "imsi": "310150123456789", "profile": "5g-plus", "extra": 1}),
            json!({"msisdn": "2065551234", "customer": "A2", "imsi": "310150123456789", "profile": "5g-plus"}),
        ),
    ];
    for (payload, record) in cases {
        assert_eq!(
            h.deliver(assign().payload(payload.clone())).await,
            Outcome::Done
        );
        let req = up.last_request().unwrap();
        assert_eq!(req.method, "PUT", "{payload}");
        assert_eq!(req.path, "/api/v1/subscribers/2065551234", "{payload}");
        assert_eq!(req.header("idempotency-key"), Some("dlv-a"));
        assert_eq!(req.header("x-switchboard-event"), Some("evt-a"));
        assert_eq!(req.header("content-type"), Some("application/json"));
        assert_eq!(req.json, Some(record), "{payload}");
    }
}

#[tokio::test]
async fn assign_without_a_profile_anywhere_sends_none() {
    let up = FakeUpstream::start().await;
    assert_eq!(hss(&up).deliver(assign()).await, Outcome::Done);
    assert_eq!(
        up.last_request().unwrap().json,
        Some(json!({"msisdn": "2065551234", "customer": "A2"}))
    );
}

#[tokio::test]
async fn release_deletes_the_subscriber() {
    let up = FakeUpstream::start().await;
    assert_eq!(hss(&up).deliver(release()).await, Outcome::Done);
    let req = up.last_request().unwrap();
    assert_eq!(
        (req.method.as_str(), req.path.as_str()),
        ("DELETE", "/api/v1/subscribers/2065551234")
    );
    assert_eq!(req.header("idempotency-key"), Some("dlv-r"));
    assert!(req.body.is_empty());
    // No body: no framing headers at all (not an empty chunked body).
    assert_eq!(req.header("transfer-encoding"), None);
    assert_eq!(req.header("content-length"), None);
}

#[tokio::test]
async fn assign_statuses() {
    let up = FakeUpstream::start().await;
    let h = hss(&up);
    check_statuses(&h, &up, SPEC_STATUSES, assign).await;

    up.push(Reply::status(409).body(r#"{"error":"msisdn in use"}"#));
    let outcome = h.deliver(assign()).await;
    assert_eq!(outcome.kind(), "reject");
    let reason = outcome.reason().unwrap();
    assert!(
        reason.contains("2065551234 in use")
            && reason.contains("409")
            && reason.contains("msisdn in use"),
        "{reason}"
    );
}

#[tokio::test]
async fn release_statuses_treat_404_as_already_gone() {
    let up = FakeUpstream::start().await;
    let table: Vec<(u16, &str)> = SPEC_STATUSES
        .iter()
        .map(|&(s, k)| if s == 404 { (404, "done") } else { (s, k) })
        .chain([(409, "reject"), (410, "reject")])
        .collect();
    // check_statuses checks a reject's reason quotes the body; a 404 is done.
    check_statuses(&hss(&up), &up, &table, release).await;
}

#[tokio::test]
async fn both_operations_honour_retry_after() {
    let up = FakeUpstream::start().await;
    let h = hss(&up);
    for d in [assign(), release()] {
        up.push(Reply::status(503).header("retry-after", "42"));
        let outcome = h.deliver(d).await;
        assert_eq!(
            outcome.retry_after(),
            Some(Duration::from_secs(42)),
            "{outcome:?}"
        );
    }
}

#[tokio::test]
async fn refuses_what_it_cannot_map_without_calling_the_hss() {
    let up = FakeUpstream::start().await;
    let h = hss(&up);
    let cases = [
        (
            Delivery::new("number.port"),
            "unsupported event type `number.port`",
        ),
        (
            Delivery::new("customer.update"),
            "number.assign, number.release",
        ),
        (assign().payload(json!({"customer": "A2"})), "msisdn"),
        (
            assign().payload(json!({"msisdn": "2065551234"})),
            "customer",
        ),
        (
            assign().payload(json!({"msisdn": "2065551234", "customer": " "})),
            "customer",
        ),
        (
            assign().payload(json!({"msisdn": "../admin", "customer": "A2"})),
            "msisdn",
        ),
        (
            assign().payload(json!({"msisdn": "20655512345678901", "customer": "A2"})),
            "msisdn",
        ),
        (
            assign().payload(json!({"msisdn": "", "customer": "A2"})),
            "msisdn",
        ),
        (
            assign().payload(json!({"msisdn": 2065551234u64, "customer": "A2"})),
            "expected a string",
        ),
        (
            assign().payload(json!({"msisdn": "2065551234", "customer": "A2", "imsi": "31015x"})),
            "imsi",
        ),
        (
            release().payload(json!({"msisdn": "206 555 1234"})),
            "msisdn",
        ),
        (release().payload_text("not json"), "payload"),
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
    assert!(up.requests().is_empty(), "no request for refused input");
}

#[tokio::test]
async fn unreachable_hss_is_retried_and_missing_base_url_rejected() {
    let refused = refused_host();
    let outcome = Harness::connector("hss")
        .config("base_url", format!("http://{refused}"))
        .allow_host(refused)
        .deliver(assign())
        .await;
    assert_eq!(outcome.kind(), "retry", "{outcome:?}");

    let outcome = Harness::connector("hss").deliver(release()).await;
    assert_eq!(outcome.kind(), "reject", "{outcome:?}");
    assert!(
        outcome.reason().unwrap().contains("base_url"),
        "{outcome:?}"
    );
}
