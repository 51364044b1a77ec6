//! A hostile connector (`connectors/fixtures/hostile`) attacks the host's
//! side of the sandbox through raw `wasi:http`: header fields by the
//! thousand, bodies buffered and never sent, thousands of connections,
//! hundreds of MiB streamed, `exit()`, forged log lines. Each attack must
//! cost one retried attempt whose reason names the limit it hit, and leave
//! the process as it found it (memory back to its baseline).
//!
//! The tests run one at a time (`SERIAL`), so the memory readings are this
//! test's alone; the binary uses the gateway's allocator.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use axum::extract::State;
use axum::routing::any;
use axum::Router;
use common::{delivery, load};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use switchboard_sandbox::{Component, Limits, Outcome, Runtime, RuntimeConfig, Sandbox};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Requests the upstream is answering right now, the most seen at once, and
/// the body bytes it received.
#[derive(Clone, Default)]
struct Sink {
    now: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
    bytes: Arc<AtomicUsize>,
}

async fn sink(State(s): State<Sink>, body: axum::body::Body) -> &'static str {
    let n = s.now.fetch_add(1, Ordering::SeqCst) + 1;
    s.peak.fetch_max(n, Ordering::SeqCst);
    let mut stream = body.into_data_stream();
    use futures::StreamExt;
    while let Some(Ok(chunk)) = stream.next().await {
        s.bytes.fetch_add(chunk.len(), Ordering::SeqCst);
    }
    // Hold the connection a while, so requests overlap.
    tokio::time::sleep(Duration::from_millis(200)).await;
    s.now.fetch_sub(1, Ordering::SeqCst);
    "ok"
}

async fn upstream() -> (Sink, String) {
    let s = Sink::default();
    let app = Router::new()
        .route("/sink", any(sink))
        .with_state(s.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (s, format!("127.0.0.1:{}", addr.port()))
}

fn sandbox(host: &str, limits: Limits) -> Sandbox {
    Sandbox {
        allowed_hosts: vec![host.to_string()],
        config: BTreeMap::from([("url".to_string(), format!("http://{host}/sink"))]),
        limits,
        ..Sandbox::default()
    }
}

async fn hostile() -> (Runtime, Component) {
    let rt = Runtime::new(RuntimeConfig {
        max_instances: 8,
        ..RuntimeConfig::default()
    })
    .unwrap();
    let c = load(&rt, "hostile").await;
    (rt, c)
}

fn retry_reason(o: Outcome) -> String {
    match o {
        Outcome::Retry { reason, .. } => reason,
        other => panic!("expected a retry, got {other:?}"),
    }
}

async fn attack(c: &Component, sb: &Sandbox, what: &str) -> String {
    retry_reason(c.deliver(sb, &delivery(&format!("\"{what}\""))).await)
}

#[tokio::test]
async fn ten_thousand_header_fields_hit_the_resource_limit() {
    let _serial = SERIAL.lock().await;
    let (_rt, c) = hostile().await;
    let (_s, host) = upstream().await;
    let reason = attack(&c, &sandbox(&host, Limits::default()), "fields").await;
    assert!(
        reason.contains("1000 host resources") && reason.contains("limits.max_host_resources"),
        "{reason}"
    );
}

#[tokio::test]
async fn one_oversized_set_of_fields_hits_the_fields_size_limit() {
    let _serial = SERIAL.lock().await;
    let (_rt, c) = hostile().await;
    let (_s, host) = upstream().await;
    let reason = attack(&c, &sandbox(&host, Limits::default()), "big-fields").await;
    assert!(
        reason.contains("size limit of one set of HTTP header fields"),
        "{reason}"
    );
}

#[tokio::test]
async fn bodies_buffered_and_never_sent_hit_the_resource_limit() {
    let _serial = SERIAL.lock().await;
    let (_rt, c) = hostile().await;
    let (_s, host) = upstream().await;
    let reason = attack(&c, &sandbox(&host, Limits::default()), "bodies").await;
    assert!(reason.contains("limits.max_host_resources"), "{reason}");
}

#[tokio::test]
async fn five_hundred_requests_at_once_hit_the_per_call_request_limit() {
    let _serial = SERIAL.lock().await;
    let (_rt, c) = hostile().await;
    let (sink, host) = upstream().await;
    let reason = attack(&c, &sandbox(&host, Limits::default()), "connections").await;
    assert!(
        reason.contains("8 outgoing requests in flight")
            && reason.contains("limits.max_concurrent_requests"),
        "{reason}"
    );
    let peak = sink.peak.load(Ordering::SeqCst);
    assert!(
        (1..=8).contains(&peak),
        "upstream saw {peak} requests at once"
    );
}

#[tokio::test]
async fn streaming_past_the_byte_budget_is_cut_off() {
    let _serial = SERIAL.lock().await;
    let (_rt, c) = hostile().await;
    let (sink, host) = upstream().await;
    let limits = Limits {
        max_request_bytes: 1 << 20,
        ..Limits::default()
    };
    let reason = attack(&c, &sandbox(&host, limits), "stream").await;
    assert!(
        reason.contains("1048576 request-body bytes")
            && reason.contains("limits.max_request_bytes"),
        "{reason}"
    );
    let got = sink.bytes.load(Ordering::SeqCst);
    assert!(got <= 1 << 20, "upstream received {got} bytes");
}

#[tokio::test]
async fn exit_is_a_retry_that_says_so() {
    let _serial = SERIAL.lock().await;
    let (_rt, c) = hostile().await;
    let (_s, host) = upstream().await;
    let reason = attack(&c, &sandbox(&host, Limits::default()), "exit").await;
    // WASI p2 carries success or failure only: exit(3) arrives as status 1.
    assert!(reason.contains("called exit(1)"), "{reason}");
}

/// Captures what the fmt subscriber writes, as the gateway's log would.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn guest_output_cannot_forge_log_lines_or_send_terminal_escapes() {
    let _serial = SERIAL.lock().await;
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let (_rt, c) = hostile().await;
    let (_s, host) = upstream().await;
    let outcome = c
        .deliver(&sandbox(&host, Limits::default()), &delivery("\"forge\""))
        .await;
    assert_eq!(outcome, Outcome::Done);
    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let guest_lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("connector output"))
        .collect();
    // One `log` call, and two lines each on stdout and stderr: every line
    // is an event of its own, its text quoted and escaped.
    assert_eq!(guest_lines.len(), 5, "{text}");
    assert!(
        !text.contains('\x1b'),
        "a terminal escape got through: {text:?}"
    );
    for line in text.lines() {
        assert!(
            !line.starts_with("2026-12-03T07:00:00"),
            "a forged line stands on its own: {text}"
        );
    }
}

/// Resident memory of this process, in bytes.
fn rss() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: usize = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_returns_to_its_baseline_after_hostile_calls() {
    let _serial = SERIAL.lock().await;
    let (_rt, c) = hostile().await;
    let (_s, host) = upstream().await;
    let sb = sandbox(&host, Limits::default());
    // Warm up the paths an ordinary call takes (instance slot, pools).
    for _ in 0..20 {
        assert_eq!(c.deliver(&sb, &delivery("\"behave\"")).await, Outcome::Done);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before_any_attack = rss();
    let mut peak = before_any_attack;
    // The first rounds also warm the allocator for allocations of this size
    // (it keeps a working set of freed pages for reuse: ~10 MiB seen once,
    // never growing after; on a busy machine it has landed in round 1 as
    // well as round 0). That working set then rises and falls by ~10 MiB
    // from one round to the next as the allocator trims it (CI saw 72, 81,
    // 81, 80 MiB), so no single sample is a baseline. Something kept per
    // call grows with every round instead: the lowest the later rounds
    // reach must not sit above the highest the warm-up rounds reached.
    let mut samples = Vec::new();
    for round in 0..8 {
        for what in ["fields", "bodies", "big-fields"] {
            // Four at once, as the measurement did.
            let calls = (0..4).map(|_| attack(&c, &sb, what));
            let reasons = futures::future::join_all(calls).await;
            assert!(reasons.iter().all(|r| r.contains("limit")), "{reasons:?}");
            peak = peak.max(rss());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        samples.push(rss());
        eprintln!("round {round}: rss {} MiB", samples[round] >> 20);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss();
    samples.push(after);
    let warm = samples[1].max(samples[2]);
    let late = *samples[5..].iter().min().unwrap();
    eprintln!(
        "warm-up high {} MiB, later low {} MiB, peak {} MiB, after {} MiB",
        warm >> 20,
        late >> 20,
        peak >> 20,
        after >> 20
    );
    // Four calls, each within its 16 MiB host budget (plus its guest
    // memory, 64 MiB at most, kept resident only in part).
    assert!(
        peak < before_any_attack + 4 * (16 + 64) * (1 << 20),
        "peak {peak} vs {before_any_attack} before any attack"
    );
    // What the allocator keeps after the first round is one budget's worth
    // of four calls at most (before the limits: 4.5 GB stayed).
    assert!(
        after < before_any_attack + 4 * 16 * (1 << 20),
        "{after} bytes after, {before_any_attack} before any attack"
    );
    assert!(
        late * 10 <= warm * 11,
        "memory did not return: {late} bytes at the later rounds' lowest, \
         {warm} at the warm-up rounds' highest"
    );
}
