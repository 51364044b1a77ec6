//! Tests of the connector, run natively against its built `.wasm` in the
//! gateway's own sandbox, with a fake upstream standing in for the real one.
//!
//! Build first, then test (a missing `.wasm` fails with the build command):
//!
//! ```text
//! cargo build --release && cargo test --target host-tuple
//! ```
//!
//! (This file is also the `template` connector's test in the Switchboard
//! repo, and what `switchboard connector new` copies into a new crate.)

use std::time::Duration;
use switchboard_connector_test::{
    json, Delivery, FakeUpstream, Harness, Limits, Outcome, OutcomeExt, Reply,
};

const NAME: &str = "template";

fn harness(upstream: &FakeUpstream) -> Harness {
    Harness::connector(NAME)
        .config("url", upstream.url("/events"))
        .allow_host(upstream.host())
}

#[tokio::test]
async fn describes_itself_and_its_config() {
    let up = FakeUpstream::start().await;
    let info = harness(&up).describe().await.expect("component loads");
    assert_eq!(info.name, NAME);
    assert!(info.config.iter().any(|f| f.name == "url" && f.required));
}

#[tokio::test]
async fn posts_the_payload_with_an_idempotency_key() {
    let up = FakeUpstream::start().await;
    let outcome = harness(&up)
        .deliver(
            Delivery::new("number.assign")
                .id("dlv-42")
                .event_id("evt-7")
                .payload(json!({"msisdn": "2065551234", "customer": "A2"})),
        )
        .await;
    assert_eq!(outcome, Outcome::Done);

    let req = up.last_request().expect("one request");
    assert_eq!(
        (req.method.as_str(), req.path.as_str()),
        ("POST", "/events")
    );
    assert_eq!(req.header("idempotency-key"), Some("dlv-42"));
    assert_eq!(req.header("x-switchboard-event"), Some("evt-7"));
    assert_eq!(req.header("x-switchboard-type"), Some("number.assign"));
    assert_eq!(req.header("content-type"), Some("application/json"));
    assert_eq!(
        req.json,
        Some(json!({"msisdn": "2065551234", "customer": "A2"}))
    );
}

#[tokio::test]
async fn classifies_upstream_statuses() {
    let up = FakeUpstream::start().await;
    let h = harness(&up);
    let table: &[(u16, &str)] = &[
        (200, "done"),
        (201, "done"),
        (204, "done"),
        (408, "retry"),
        (429, "retry"),
        (500, "retry"),
        (503, "retry"),
        (400, "reject"),
        (404, "reject"),
        (422, "reject"),
    ];
    for &(status, want) in table {
        up.push(Reply::status(status).body("upstream says so"));
        let outcome = h.deliver(Delivery::new("number.assign")).await;
        assert_eq!(outcome.kind(), want, "HTTP {status}: {outcome:?}");
    }
}

#[tokio::test]
async fn honours_retry_after() {
    let up = FakeUpstream::start().await;
    up.push(Reply::status(503).header("retry-after", "30"));
    let outcome = harness(&up).deliver(Delivery::new("number.assign")).await;
    assert_eq!(outcome.retry_after(), Some(Duration::from_secs(30)));
}

#[tokio::test]
async fn a_slow_upstream_is_retried() {
    let up = FakeUpstream::start().await;
    up.push(Reply::ok().delay(Duration::from_secs(3)));
    let outcome = harness(&up)
        .limits(Limits {
            request_timeout: Duration::from_millis(300),
            ..Limits::default()
        })
        .deliver(Delivery::new("number.assign"))
        .await;
    assert_eq!(outcome.kind(), "retry", "{outcome:?}");
}

#[tokio::test]
async fn without_url_it_rejects() {
    let outcome = Harness::connector(NAME)
        .deliver(Delivery::new("number.assign"))
        .await;
    assert_eq!(outcome.kind(), "reject", "{outcome:?}");
    assert!(
        outcome.reason().unwrap_or("").contains("url"),
        "{outcome:?}"
    );
}
