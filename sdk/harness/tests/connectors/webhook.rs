//! `webhook` (SPEC §4.5): POST the payload verbatim to `config.url`.

use crate::{check_statuses, refused_host, SPEC_STATUSES};
use std::time::Duration;
use switchboard_connector_test::{
    Delivery, FakeUpstream, Harness, Limits, Outcome, OutcomeExt, Reply,
};

fn webhook(up: &FakeUpstream) -> Harness {
    Harness::connector("webhook")
        .config("url", up.url("/op"))
        .allow_host(up.host())
}

fn assign() -> Delivery {
    Delivery::new("number.assign")
        .id("dlv-7")
        .event_id("evt-000123")
        .key("msisdn:2065551234")
        // Odd spacing on purpose: the body must be forwarded byte for byte.
        .payload_text(r#"{ "msisdn":"2065551234",  "customer":"A2" }"#)
}

#[tokio::test]
async fn declares_url() {
    let up = FakeUpstream::start().await;
    let info = webhook(&up).describe().await.unwrap();
    assert_eq!(info.name, "webhook");
    assert!(info.config.iter().any(|f| f.name == "url" && f.required));
}

#[tokio::test]
async fn posts_payload_verbatim_with_spec_headers() {
    let up = FakeUpstream::start().await;
    assert_eq!(webhook(&up).deliver(assign()).await, Outcome::Done);

    let reqs = up.requests();
    assert_eq!(reqs.len(), 1);
    let req = &reqs[0];
    assert_eq!((req.method.as_str(), req.path.as_str()), ("POST", "/op"));
    let headers = [
        ("idempotency-key", "dlv-7"),
        ("x-switchboard-event", "evt-000123"),
        ("x-switchboard-type", "number.assign"),
        ("content-type", "application/json"),
    ];
    for (name, want) in headers {
        assert_eq!(req.header(name), Some(want), "header {name}");
    }
    assert_eq!(
        req.body_text(),
        r#"{ "msisdn":"2065551234",  "customer":"A2" }"#
    );
    // Framed by length, not chunked: some upstream APIs (and the proxies in
    // front of them) refuse chunked request bodies.
    let length = req.body_text().len().to_string();
    assert_eq!(req.header("content-length"), Some(length.as_str()));
    assert_eq!(req.header("transfer-encoding"), None);
}

#[tokio::test]
async fn classifies_statuses_per_spec() {
    let up = FakeUpstream::start().await;
    check_statuses(&webhook(&up), &up, SPEC_STATUSES, assign).await;
}

#[tokio::test]
async fn honours_retry_after_seconds_and_dates() {
    let up = FakeUpstream::start().await;
    let h = webhook(&up);
    let table: &[(Reply, Option<Duration>)] = &[
        (
            Reply::status(429).header("retry-after", "120"),
            Some(Duration::from_secs(120)),
        ),
        (
            Reply::status(503).header("retry-after", "0"),
            Some(Duration::ZERO),
        ),
        // An HTTP date in the past means "now".
        (
            Reply::status(503).header("retry-after", "Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(Duration::ZERO),
        ),
        (Reply::status(503).header("retry-after", "soon"), None),
        (Reply::status(503), None),
    ];
    for (reply, want) in table {
        up.push(reply.clone());
        let outcome = h.deliver(assign()).await;
        assert_eq!(outcome.kind(), "retry", "{reply:?}");
        assert_eq!(outcome.retry_after(), *want, "{reply:?}");
    }
}

#[tokio::test]
async fn every_attempt_carries_the_same_idempotency_key() {
    let up = FakeUpstream::start().await;
    up.push(Reply::status(503));
    let h = webhook(&up);
    assert_eq!(h.deliver(assign().attempt(1)).await.kind(), "retry");
    assert_eq!(h.deliver(assign().attempt(2)).await, Outcome::Done);
    let keys: Vec<_> = up
        .requests()
        .iter()
        .map(|r| r.header("idempotency-key").map(str::to_string))
        .collect();
    assert_eq!(keys, vec![Some("dlv-7".to_string()); 2]);
}

#[tokio::test]
async fn transport_failures_are_retried() {
    let refused = refused_host();
    let outcome = Harness::connector("webhook")
        .config("url", format!("http://{refused}/op"))
        .allow_host(refused)
        .deliver(assign())
        .await;
    assert_eq!(outcome.kind(), "retry", "connection refused: {outcome:?}");

    let up = FakeUpstream::start().await;
    up.push(Reply::ok().delay(Duration::from_secs(3)));
    let outcome = webhook(&up)
        .limits(Limits {
            request_timeout: Duration::from_millis(300),
            ..Limits::default()
        })
        .deliver(assign())
        .await;
    assert_eq!(outcome.kind(), "retry", "timeout: {outcome:?}");
    assert!(
        outcome.reason().unwrap().to_lowercase().contains("timeout"),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn configuration_mistakes_are_rejected() {
    for (config, why) in [
        (None, "missing url"),
        (Some("ftp://example/x"), "unsupported scheme"),
        (Some("http://user:pw@127.0.0.1/x"), "credentials in url"),
    ] {
        let mut h = Harness::connector("webhook");
        if let Some(url) = config {
            h = h.config("url", url);
        }
        let outcome = h.deliver(assign()).await;
        assert_eq!(outcome.kind(), "reject", "{why}: {outcome:?}");
    }
}
