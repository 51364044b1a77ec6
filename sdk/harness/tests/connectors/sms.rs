//! `sms`: POST {base_url}/messages {to, text, from?}.

use crate::{check_statuses, SPEC_STATUSES};
use std::time::Duration;
use switchboard_connector_test::{
    json, Delivery, FakeUpstream, Harness, Outcome, OutcomeExt, Reply,
};

fn sms(up: &FakeUpstream) -> Harness {
    Harness::connector("sms")
        .config("base_url", up.url("/gw"))
        .allow_host(up.host())
}

fn notify(payload: serde_json::Value) -> Delivery {
    Delivery::new("quota.exceeded")
        .id("dlv-s")
        .key("customer:A1")
        .payload(payload)
}

fn quota() -> Delivery {
    notify(json!({"to": "+12065551234", "text": "You have used 80% of your quota"}))
}

#[tokio::test]
async fn declares_its_config() {
    let up = FakeUpstream::start().await;
    let info = sms(&up).describe().await.unwrap();
    assert_eq!(info.name, "sms");
    let keys: Vec<_> = info
        .config
        .iter()
        .map(|f| (f.name.as_str(), f.required))
        .collect();
    assert_eq!(keys, [("base_url", true), ("sender", false)]);
}

#[tokio::test]
async fn builds_the_message_from_the_payload() {
    let up = FakeUpstream::start().await;
    let h = sms(&up);
    let vars = json!({"pct": 80, "plan": "Basic", "final": true});
    let cases = [
        (
            json!({"to": "+12065551234", "text": "hello"}),
            json!({"to": "+12065551234", "text": "hello"}),
        ),
        (
            json!({"msisdn": "2065551234", "text": "hello"}),
            json!({"to": "2065551234", "text": "hello"}),
        ),
        (
            json!({"to": "1", "msisdn": "2", "text": "to wins"}),
            json!({"to": "1", "text": "to wins"}),
        ),
        (
            json!({"msisdn": "2065551234", "template": "Used {pct}% of {plan} (final: {final})", "vars": vars}),
            json!({"to": "2065551234", "text": "Used 80% of Basic (final: true)"}),
        ),
        (
            json!({"msisdn": "2065551234", "text": "text wins", "template": "{missing}"}),
            json!({"to": "2065551234", "text": "text wins"}),
        ),
    ];
    for (payload, message) in cases {
        assert_eq!(
            h.deliver(notify(payload.clone())).await,
            Outcome::Done,
            "{payload}"
        );
        let req = up.last_request().unwrap();
        assert_eq!(
            (req.method.as_str(), req.path.as_str()),
            ("POST", "/gw/messages")
        );
        assert_eq!(req.header("idempotency-key"), Some("dlv-s"));
        assert_eq!(req.header("content-type"), Some("application/json"));
        assert_eq!(req.json, Some(message), "{payload}");
    }
}

#[tokio::test]
async fn sender_config_becomes_from() {
    let up = FakeUpstream::start().await;
    let outcome = sms(&up).config("sender", "Operator").deliver(quota()).await;
    assert_eq!(outcome, Outcome::Done);
    assert_eq!(
        up.last_request().unwrap().json,
        Some(
            json!({"to": "+12065551234", "text": "You have used 80% of your quota", "from": "Operator"})
        )
    );
}

#[tokio::test]
async fn classifies_statuses_and_honours_retry_after() {
    let up = FakeUpstream::start().await;
    let h = sms(&up);
    check_statuses(&h, &up, SPEC_STATUSES, quota).await;
    up.push(Reply::status(429).header("retry-after", "60"));
    assert_eq!(
        h.deliver(quota()).await.retry_after(),
        Some(Duration::from_secs(60))
    );
}

#[tokio::test]
async fn refuses_messages_it_cannot_build_without_sending() {
    let up = FakeUpstream::start().await;
    let h = sms(&up);
    let cases = [
        (json!({"text": "hi"}), "no recipient"),
        (json!({"to": "12065551234"}), "no message"),
        (json!({"to": "12065551234", "text": "  "}), "empty"),
        (json!({"to": "call me", "text": "hi"}), "E.164"),
        (json!({"to": "1234567890123456", "text": "hi"}), "E.164"),
        (
            json!({"to": "12065551234", "template": "Hi {name}"}),
            "`name`",
        ),
        (
            json!({"to": "12065551234", "template": "Hi {name}", "vars": {"name": {"first": "A"}}}),
            "`name`",
        ),
        (
            json!({"to": "12065551234", "template": "Hi {name", "vars": {"name": "A"}}),
            "unclosed",
        ),
        (json!(["not", "an", "object"]), "payload"),
    ];
    for (payload, needle) in cases {
        let outcome = h.deliver(notify(payload.clone())).await;
        assert_eq!(outcome.kind(), "reject", "{payload}: {outcome:?}");
        assert!(
            outcome.reason().unwrap().contains(needle),
            "{payload}: {outcome:?}"
        );
    }
    assert!(up.requests().is_empty(), "nothing sent for refused input");
}
