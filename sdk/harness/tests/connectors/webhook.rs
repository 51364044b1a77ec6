//! The webhook conformance suite (SPEC §4.5: POST the payload verbatim to
//! `config.url`), run against each build of the webhook connector, whatever
//! its source language: `webhook` (Rust), `webhook-ts` (TypeScript) and
//! `webhook-py` (Python). Every check is a function of the connector's name;
//! [`conformance!`] makes one test per check and build.

use crate::{check_statuses, refused_host, SPEC_STATUSES};
use std::time::Duration;
use switchboard_connector_test::{
    Delivery, FakeUpstream, Harness, Limits, Outcome, OutcomeExt, Reply,
};

fn webhook(name: &str, up: &FakeUpstream) -> Harness {
    Harness::connector(name)
        .config("url", up.url("/op"))
        .allow_host(up.host())
}

/// One test module per build, one test per check.
macro_rules! conformance {
    ($($module:ident => $name:literal),* $(,)?) => {$(
        mod $module {
            conformance!(@checks $name: declares_url, posts_payload_verbatim_with_spec_headers,
                classifies_statuses_per_spec, honours_retry_after_seconds_and_dates,
                every_attempt_carries_the_same_idempotency_key, transport_failures_are_retried,
                configuration_mistakes_are_rejected, carries_a_body_of_nine_mebibytes,
                a_denied_host_is_a_retry_that_says_so, one_instance_serves_many_deliveries);
        }
    )*};
    (@checks $name:literal: $($check:ident),*) => {$(
        #[tokio::test]
        async fn $check() {
            super::$check($name).await
        }
    )*};
}

conformance!(rust => "webhook", typescript => "webhook-ts", python => "webhook-py");

fn assign() -> Delivery {
    Delivery::new("number.assign")
        .id("dlv-7")
        .event_id("evt-000123")
        .key("msisdn:2065551234")
        // Odd spacing on purpose: the body must be forwarded byte for byte.
        .payload_text(r#"{ "msisdn":"2065551234",  "customer":"A2" }"#)
}

async fn declares_url(name: &str) {
    let up = FakeUpstream::start().await;
    let info = webhook(name, &up).describe().await.unwrap();
    assert_eq!(info.name, "webhook");
    assert!(!info.version.is_empty());
    assert!(info.config.iter().any(|f| f.name == "url" && f.required));
}

async fn posts_payload_verbatim_with_spec_headers(name: &str) {
    let up = FakeUpstream::start().await;
    assert_eq!(webhook(name, &up).deliver(assign()).await, Outcome::Done);

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
    for (header, want) in headers {
        assert_eq!(req.header(header), Some(want), "{name}: header {header}");
    }
    let agent = req.header("user-agent").unwrap_or_default();
    assert!(agent.starts_with("switchboard-webhook"), "{name}: {agent}");
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

async fn classifies_statuses_per_spec(name: &str) {
    let up = FakeUpstream::start().await;
    check_statuses(&webhook(name, &up), &up, SPEC_STATUSES, assign).await;
}

async fn honours_retry_after_seconds_and_dates(name: &str) {
    let up = FakeUpstream::start().await;
    let h = webhook(name, &up);
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

async fn every_attempt_carries_the_same_idempotency_key(name: &str) {
    let up = FakeUpstream::start().await;
    up.push(Reply::status(503));
    let h = webhook(name, &up);
    assert_eq!(h.deliver(assign().attempt(1)).await.kind(), "retry");
    assert_eq!(h.deliver(assign().attempt(2)).await, Outcome::Done);
    let keys: Vec<_> = up
        .requests()
        .iter()
        .map(|r| r.header("idempotency-key").map(str::to_string))
        .collect();
    assert_eq!(keys, vec![Some("dlv-7".to_string()); 2]);
}

async fn transport_failures_are_retried(name: &str) {
    let refused = refused_host();
    let outcome = Harness::connector(name)
        .config("url", format!("http://{refused}/op"))
        .allow_host(refused)
        .deliver(assign())
        .await;
    assert_eq!(outcome.kind(), "retry", "connection refused: {outcome:?}");
    // The error code by its WIT name, the same in every language, so one
    // filter on reasons finds it whatever the connector is written in.
    assert!(
        outcome.reason().unwrap().contains("connection-refused"),
        "{name}: {outcome:?}"
    );

    let up = FakeUpstream::start().await;
    up.push(Reply::ok().delay(Duration::from_secs(3)));
    let outcome = webhook(name, &up)
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

async fn configuration_mistakes_are_rejected(name: &str) {
    for (config, why) in [
        (None, "missing url"),
        (Some("ftp://example/x"), "unsupported scheme"),
        (Some("http://user:pw@127.0.0.1/x"), "credentials in url"),
    ] {
        let mut h = Harness::connector(name);
        if let Some(url) = config {
            h = h.config("url", url);
        }
        let outcome = h.deliver(assign()).await;
        assert_eq!(outcome.kind(), "reject", "{why}: {outcome:?}");
    }
}

async fn carries_a_body_of_nine_mebibytes(name: &str) {
    // Near the gateway's default ingest limit (10 MiB per request): what
    // was accepted must be deliverable, in every language.
    let up = FakeUpstream::start().await;
    let filler = "0123456789abcdef".repeat(9 * 1024 * 1024 / 16);
    let payload = format!(r#"{{"msisdn":"2065551234","notes":"{filler}"}}"#);
    let outcome = webhook(name, &up)
        .deliver(assign().payload_text(payload.clone()))
        .await;
    assert_eq!(outcome, Outcome::Done, "{name}");
    let reqs = up.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].body.len(), payload.len(), "{name}");
    assert!(reqs[0].body_text() == payload, "{name}: body differs");
    let length = payload.len().to_string();
    assert_eq!(reqs[0].header("content-length"), Some(length.as_str()));
}

async fn a_denied_host_is_a_retry_that_says_so(name: &str) {
    // The real reason reaches the operator, not "an error occurred".
    let up = FakeUpstream::start().await;
    let outcome = Harness::connector(name)
        .config("url", up.url("/op"))
        .deliver(assign())
        .await;
    assert_eq!(outcome.kind(), "retry", "{name}: {outcome:?}");
    let reason = outcome.reason().unwrap_or_default();
    assert!(reason.contains("allowed_hosts"), "{name}: {reason}");
    assert!(up.requests().is_empty());
}

/// The gateway keeps an instance warm for the next delivery: each of these
/// must carry its own delivery's id, event, type and body, never one left
/// over from the delivery before, whatever the SDK caches.
async fn one_instance_serves_many_deliveries(name: &str) {
    let up = FakeUpstream::start().await;
    let h = webhook(name, &up);
    let types = ["number.release", "number.assign", "customer.update"];
    for i in 0..12 {
        let d = Delivery::new(types[i % 3])
            .id(format!("dlv-{i}"))
            .event_id(format!("evt-{i}"))
            .key(format!("msisdn:{i}"))
            .payload_text(format!(r#"{{"n":{i}}}"#));
        assert_eq!(h.deliver(d).await, Outcome::Done, "{name}: delivery {i}");
    }
    let reqs = up.requests();
    assert_eq!(reqs.len(), 12, "{name}");
    for (i, req) in reqs.iter().enumerate() {
        let (id, event) = (format!("dlv-{i}"), format!("evt-{i}"));
        assert_eq!(req.header("idempotency-key"), Some(id.as_str()), "{name}");
        assert_eq!(
            req.header("x-switchboard-event"),
            Some(event.as_str()),
            "{name}"
        );
        assert_eq!(
            req.header("x-switchboard-type"),
            Some(types[i % 3]),
            "{name}"
        );
        assert_eq!(req.body_text(), format!(r#"{{"n":{i}}}"#), "{name}");
    }
    assert_eq!(
        h.instances_started().await,
        1,
        "{name}: one instance served all 12"
    );
}
