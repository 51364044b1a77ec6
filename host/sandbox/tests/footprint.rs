//! Big components (JavaScript, Python) in the instance pool: a call holds as
//! many slots as its component needs, so calls wait for room instead of
//! failing; a component that can never fit, or cannot start within its
//! connector's memory limit, is refused when it is loaded.
//!
//! Needs `make connectors` (webhook.wasm, webhook-ts.wasm, webhook-py.wasm).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use axum::routing::post;
use axum::Router;
use common::{delivery, wasm};
use std::collections::BTreeMap;
use switchboard_sandbox::{Limits, Outcome, Runtime, RuntimeConfig, RuntimeError, Sandbox};

/// A runtime of `max_instances` slots sharing the harness's compile cache
/// (a Python component takes ~15 s to compile, then well under one to load).
fn runtime(max_instances: u32) -> Runtime {
    let cache = std::env::var_os("SWITCHBOARD_COMPILE_CACHE")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("switchboard-connector-test-cache"));
    Runtime::new(RuntimeConfig {
        max_instances,
        cache_dir: Some(cache),
        ..RuntimeConfig::default()
    })
    .unwrap()
}

async fn upstream() -> String {
    let app = Router::new().route(
        "/hook",
        post(|| async {
            // Long enough that the calls overlap.
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            "ok"
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn footprints_are_counted_per_language() {
    let rt = runtime(8);
    let mut seen = Vec::new();
    for name in ["webhook", "webhook-ts", "webhook-py"] {
        let c = rt.load(&wasm(name)).await.unwrap();
        let f = c.footprint();
        eprintln!("{name}: {f:?}, {} slot(s) per call", f.slots());
        assert!(f.core_instances >= 1 && f.memories >= 1, "{name}: {f:?}");
        seen.push(f);
    }
    assert_eq!(seen[0].slots(), 1, "a Rust connector takes one slot");
    assert!(
        seen[2].core_instances > 8 && seen[2].slots() >= 2,
        "a Python connector needs more than one slot's core instances: {:?}",
        seen[2]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_that_can_never_fit_is_refused_at_load() {
    let err = runtime(1).load(&wasm("webhook-py")).await.unwrap_err();
    assert!(matches!(err, RuntimeError::TooBig(_)), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("core instances") && text.contains("max_instances"),
        "{text}"
    );
    // The same component fits a runtime with room for it.
    runtime(2).load(&wasm("webhook-py")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_components_wait_for_room_instead_of_failing() {
    // Three slots: 24 core instances. Two Python calls at once would need
    // 28; before calls held slots by footprint, the second one failed to
    // instantiate and was counted against the connector.
    let rt = runtime(3);
    let host = upstream().await;
    let sandbox = Sandbox {
        allowed_hosts: vec![host.clone()],
        config: BTreeMap::from([("url".to_string(), format!("http://{host}/hook"))]),
        ..Sandbox::default()
    };
    let py = rt.load(&wasm("webhook-py")).await.unwrap();
    let ts = rt.load(&wasm("webhook-ts")).await.unwrap();
    let rust = rt.load(&wasm("webhook")).await.unwrap();
    let mut calls = Vec::new();
    for i in 0..12 {
        let c = [&py, &ts, &rust][i % 3].clone();
        let sandbox = sandbox.clone();
        calls.push(tokio::spawn(async move {
            c.deliver(&sandbox, &delivery(r#"{"n":1}"#)).await
        }));
    }
    for (i, call) in calls.into_iter().enumerate() {
        let outcome = call.await.unwrap();
        assert_eq!(outcome, Outcome::Done, "call {i}");
    }
    let stats = rt.slot_stats();
    assert_eq!(stats.in_use, 0, "{stats:?}");
    assert!(stats.waited > 0, "the calls never had to wait: {stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation_runs_under_the_connectors_memory_limit() {
    let rt = runtime(8);
    let small = Limits {
        memory_bytes: 4 << 20,
        ..Limits::default()
    };
    for name in ["webhook-ts", "webhook-py"] {
        let err = rt.load_with(&wasm(name), &small).await.unwrap_err();
        assert!(
            matches!(err, RuntimeError::Describe(_)),
            "{name} under 4 MiB: {err}"
        );
        assert!(err.to_string().contains("memory"), "{name}: {err}");
        rt.load_with(&wasm(name), &Limits::default())
            .await
            .unwrap_or_else(|e| panic!("{name} under the default limits: {e}"));
    }
    // A Rust connector starts in 4 MiB.
    rt.load_with(&wasm("webhook"), &small).await.unwrap();
}
