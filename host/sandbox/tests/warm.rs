//! Warm instances: an instance serves the next delivery of the same
//! component version under the same sandbox, and nothing that went wrong in
//! one delivery — a trap, a limit hit, a leaked host resource — reaches the
//! next. The `stateful` fixture answers `served N`, N counting the
//! deliveries its instance has run (1 on a fresh instance).
//!
//! The guests are built separately (they target wasm32-wasip2):
//!     cd connectors && cargo build --release

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{delivery, load};
use std::collections::BTreeMap;
use std::time::Duration;
use switchboard_sandbox::{Component, Limits, Outcome, Runtime, RuntimeConfig, Sandbox};

fn runtime(max_instances: u32, idle: Duration) -> Runtime {
    Runtime::new(RuntimeConfig {
        max_instances,
        instance_idle: idle,
        ..RuntimeConfig::default()
    })
    .expect("runtime")
}

/// The fixture's sandbox: loopback's discard port allowed (for `flood`),
/// tight limits so that each bad delivery ends quickly.
fn sandbox(name: &str) -> Sandbox {
    Sandbox {
        connector: name.into(),
        allowed_hosts: vec!["127.0.0.1:9".into()],
        config: BTreeMap::from([("tag".to_string(), name.to_string())]),
        limits: Limits {
            memory_bytes: 16 << 20,
            deadline: Duration::from_secs(1),
            cpu_budget: Duration::from_millis(100),
            max_concurrent_requests: 1,
            ..Limits::default()
        },
        ..Sandbox::default()
    }
}

/// What one delivery of `payload` answered: `served N` as N, or the outcome.
async fn served(c: &Component, sb: &Sandbox, payload: &str) -> Result<u32, Outcome> {
    let out = c.deliver(sb, &delivery(&format!("\"{payload}\""))).await;
    match &out {
        Outcome::Retry { reason, .. } => reason
            .strip_prefix("served ")
            .and_then(|n| n.parse().ok())
            .ok_or(out),
        _ => Err(out),
    }
}

#[tokio::test]
async fn a_warm_instance_serves_the_next_deliveries_of_its_connector() {
    let rt = runtime(8, Duration::from_secs(60));
    let c = load(&rt, "stateful").await;
    let sb = sandbox("a");
    for n in 1..=5 {
        assert_eq!(served(&c, &sb, "count").await, Ok(n));
    }
    let stats = rt.slot_stats();
    assert_eq!((stats.instances_started, stats.instances_reused), (1, 4));
    assert_eq!((stats.in_use, stats.warm), (0, 1), "{stats:?}");
}

#[tokio::test]
async fn a_trap_a_limit_hit_or_a_leak_never_reaches_the_next_delivery() {
    let rt = runtime(8, Duration::from_secs(60));
    let c = load(&rt, "stateful").await;
    let sb = sandbox("a");
    // Each way a delivery can end badly, after a warm-up that makes the
    // instance one that would otherwise be reused.
    for (bad, why) in [
        ("panic", "trapped"),
        ("grow", "memory limit"),
        ("spin", "CPU budget"),
        ("sleep", "wall-clock deadline"),
        ("flood", "max_concurrent_requests"),
        ("leak", "served 3"),
    ] {
        assert_eq!(served(&c, &sb, "count").await, Ok(1), "before {bad}");
        assert_eq!(served(&c, &sb, "count").await, Ok(2), "before {bad}");
        let out = c.deliver(&sb, &delivery(&format!("\"{bad}\""))).await;
        let Outcome::Retry { reason, .. } = &out else {
            panic!("{bad}: {out:?}")
        };
        assert!(reason.contains(why), "{bad}: {reason}");
        // The next delivery runs in a fresh instance: its count starts over.
        assert_eq!(served(&c, &sb, "count").await, Ok(1), "after {bad}");
        // And it is kept: the one after is served by it.
        assert_eq!(served(&c, &sb, "count").await, Ok(2), "after {bad}");
        // Start the next round on a fresh instance.
        assert_eq!(served(&c, &sb, "panic").await.ok(), None);
    }
    assert_eq!(rt.slot_stats().in_use, 0);
}

#[tokio::test]
async fn a_request_with_options_leaves_nothing_behind_and_the_instance_is_kept() {
    // The guest hands request options over with its request; the host
    // deletes them, so they neither hold a resource slot nor keep the
    // instance from being reused.
    let rt = runtime(8, Duration::from_secs(60));
    let c = load(&rt, "stateful").await;
    let sb = sandbox("a");
    assert_eq!(served(&c, &sb, "count").await, Ok(1));
    assert_eq!(served(&c, &sb, "timeout").await, Ok(2));
    assert_eq!(served(&c, &sb, "count").await, Ok(3));
}

#[tokio::test]
async fn an_instance_whose_memory_fills_up_is_replaced_before_it_fails_a_delivery() {
    let rt = runtime(8, Duration::from_secs(60));
    let c = load(&rt, "stateful").await;
    let sb = sandbox("a");
    // Each delivery keeps 1 MiB more for good; with a 16 MiB cap the
    // instance is dropped once its memory passes 12 MiB, so no delivery
    // ever meets the cap.
    let mut counts = Vec::new();
    for _ in 0..40 {
        counts.push(
            served(&c, &sb, "hoard")
                .await
                .expect("every delivery answers"),
        );
    }
    let restarts = counts.iter().filter(|&&n| n == 1).count();
    assert!(restarts >= 3, "{counts:?}");
    assert!(counts.iter().all(|&n| n < 16), "{counts:?}");
}

#[tokio::test]
async fn another_sandbox_or_version_never_gets_the_instance() {
    let rt = runtime(8, Duration::from_secs(60));
    let c = load(&rt, "stateful").await;
    let (a, b) = (sandbox("a"), sandbox("b"));
    assert_eq!(served(&c, &a, "count").await, Ok(1));
    assert_eq!(served(&c, &b, "count").await, Ok(1));
    assert_eq!(served(&c, &a, "count").await, Ok(2));
    // Same connector, changed settings: a fresh instance.
    let mut a2 = a.clone();
    a2.config.insert("url".into(), "http://127.0.0.1:9/".into());
    assert_eq!(served(&c, &a2, "count").await, Ok(1));
    let mut a3 = a.clone();
    a3.limits.cpu_budget = Duration::from_millis(200);
    assert_eq!(served(&c, &a3, "count").await, Ok(1));
    // The same bytes loaded again are another version: a fresh instance.
    let again = load(&rt, "stateful").await;
    assert_eq!(served(&again, &a, "count").await, Ok(1));
    assert_eq!(served(&c, &a, "count").await, Ok(3));
    // A version nobody holds any more gives its warm instances back.
    let warm = rt.slot_stats().warm;
    drop(c);
    assert!(rt.slot_stats().warm < warm, "{:?}", rt.slot_stats());
}

#[tokio::test]
async fn max_deliveries_per_instance_bounds_what_one_instance_serves() {
    let rt = runtime(8, Duration::from_secs(60));
    let c = load(&rt, "stateful").await;
    let mut sb = sandbox("a");
    sb.limits.max_deliveries_per_instance = 3;
    let mut counts = Vec::new();
    for _ in 0..7 {
        counts.push(served(&c, &sb, "count").await.unwrap());
    }
    assert_eq!(counts, [1, 2, 3, 1, 2, 3, 1]);
    sb.limits.max_deliveries_per_instance = 1;
    for _ in 0..3 {
        assert_eq!(served(&c, &sb, "count").await, Ok(1));
    }
}

#[tokio::test]
async fn an_idle_instance_is_dropped_after_instance_idle() {
    let rt = runtime(8, Duration::from_millis(200));
    let c = load(&rt, "stateful").await;
    let sb = sandbox("a");
    assert_eq!(served(&c, &sb, "count").await, Ok(1));
    assert_eq!(rt.slot_stats().warm, 1);
    // The ticker sweeps about once a second.
    let started = std::time::Instant::now();
    while rt.slot_stats().warm > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            rt.slot_stats()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(served(&c, &sb, "count").await, Ok(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_instances_give_their_slots_to_a_call_that_needs_one() {
    // One slot, held warm by connector a: connector b's delivery takes it
    // at once rather than waiting for it (or ending busy).
    let rt = runtime(1, Duration::from_secs(60));
    let c = load(&rt, "stateful").await;
    let (a, mut b) = (sandbox("a"), sandbox("b"));
    assert_eq!(served(&c, &a, "count").await, Ok(1));
    assert_eq!(rt.slot_stats().warm, 1);
    b.limits.deadline = Duration::from_millis(300);
    assert_eq!(served(&c, &b, "count").await, Ok(1));
    let stats = rt.slot_stats();
    assert_eq!((stats.waited, stats.timed_out), (0, 0), "{stats:?}");
    // a's instance went to b: a starts over.
    assert_eq!(served(&c, &a, "count").await, Ok(1));
}
