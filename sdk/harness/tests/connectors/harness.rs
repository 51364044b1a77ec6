//! The harness itself: the fake upstream's script order and recording, and
//! that the sandbox around a connector is the gateway's (egress gate, secret
//! injection, sandbox failures as retries).

use std::time::Duration;
use switchboard_connector_test::{
    json, Delivery, FakeUpstream, Harness, HarnessError, OutcomeExt, Reply,
};

#[tokio::test]
async fn replies_come_from_queue_then_handler_then_default() {
    let up = FakeUpstream::start().await;
    let h = Harness::connector("webhook")
        .config("url", up.url("/hook?x=1"))
        .allow_host(up.host());
    up.push(Reply::status(503)).push(Reply::status(404));
    up.handle(|req| {
        if req.json == Some(json!({"n": 3})) {
            Reply::status(201)
        } else {
            Reply::status(500)
        }
    });
    let kinds = [
        h.deliver(Delivery::new("t").payload(json!({"n": 1})))
            .await
            .kind(),
        h.deliver(Delivery::new("t").payload(json!({"n": 2})))
            .await
            .kind(),
        h.deliver(Delivery::new("t").payload(json!({"n": 3})))
            .await
            .kind(),
        h.deliver(Delivery::new("t").payload(json!({"n": 4})))
            .await
            .kind(),
    ];
    assert_eq!(kinds, ["retry", "reject", "done", "retry"]);
    up.set_default(Reply::status(204));
    assert_eq!(h.deliver(Delivery::new("t")).await.kind(), "done");

    let reqs = up.take_requests();
    assert_eq!(reqs.len(), 5);
    assert!(up.requests().is_empty());
    assert_eq!(reqs[0].path, "/hook");
    assert_eq!(reqs[0].query.as_deref(), Some("x=1"));
    assert_eq!(reqs[0].body_text(), r#"{"n":1}"#);
}

#[tokio::test]
async fn secret_headers_reach_the_upstream() {
    let up = FakeUpstream::start().await;
    let h = Harness::connector("webhook")
        .config("url", up.url("/hook"))
        .allow_host(up.host())
        .secret_header("authorization", "Bearer s3cret");
    assert_eq!(h.deliver(Delivery::new("t")).await.kind(), "done");
    assert_eq!(
        up.last_request().unwrap().header("Authorization"),
        Some("Bearer s3cret")
    );
}

#[tokio::test]
async fn hosts_not_allowed_are_denied_before_any_request() {
    let up = FakeUpstream::start().await;
    let outcome = Harness::connector("webhook")
        .config("url", up.url("/hook"))
        .deliver(Delivery::new("t"))
        .await;
    assert_eq!(outcome.kind(), "retry", "{outcome:?}");
    assert!(outcome.reason().unwrap().contains("denied"), "{outcome:?}");
    assert!(up.requests().is_empty(), "nothing reached the upstream");
}

#[tokio::test]
async fn sandbox_failures_are_retries() {
    let spin = Harness::connector("spin").limits(switchboard_connector_test::Limits {
        cpu_budget: Duration::from_millis(200),
        ..Default::default()
    });
    let outcome = spin
        .deliver(Delivery::new("t").payload_text("\"spin\""))
        .await;
    assert_eq!(outcome.kind(), "retry", "{outcome:?}");
}

#[tokio::test]
async fn a_component_of_the_wrong_world_is_a_load_error() {
    let err = Harness::connector("wrong-world")
        .describe()
        .await
        .expect_err("wrong world does not load");
    assert!(matches!(err, HarnessError::Load { .. }), "{err}");
}

#[test]
fn a_connector_that_is_not_built_fails_with_the_build_command() {
    let err = Harness::try_connector("not-built-anywhere").expect_err("not built");
    let msg = err.to_string();
    assert!(msg.contains("not_built_anywhere.wasm"), "{msg}");
    assert!(msg.contains("cargo build --release"), "{msg}");
}
