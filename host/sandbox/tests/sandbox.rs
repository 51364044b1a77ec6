//! Sandbox tests: the real `webhook` connector against a fake upstream, and
//! adversarial guests (`connectors/fixtures/*`) that must each cost exactly
//! one retried attempt — never the host, never the next delivery.
//!
//! The guests are built separately (they target wasm32-wasip2):
//!     cd connectors && cargo build --release
//! A missing .wasm fails the test with that instruction; nothing is skipped.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{delivery, load, wasm};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{any, get};
use axum::Router;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use switchboard_sandbox::{
    Limits, Outcome, Runtime, RuntimeConfig, RuntimeError, Sandbox, SecretHeader,
};

fn runtime() -> Runtime {
    Runtime::new(RuntimeConfig {
        max_instances: 16,
        ..RuntimeConfig::default()
    })
    .expect("runtime")
}

const BEHAVE: &str = "\"behave\"";

fn sandbox(allowed: &[&str], url: Option<String>) -> Sandbox {
    let mut config = BTreeMap::new();
    if let Some(url) = url {
        config.insert("url".to_string(), url);
    }
    Sandbox {
        allowed_hosts: allowed.iter().map(|s| s.to_string()).collect(),
        config,
        secret_headers: vec![SecretHeader {
            name: "authorization".into(),
            value: "Bearer s3cret".into(),
            hosts: Vec::new(),
        }],
        limits: Limits::default(),
        ..Sandbox::default()
    }
}

fn retry_reason(o: &Outcome) -> &str {
    match o {
        Outcome::Retry { reason, .. } => reason,
        other => panic!("expected a retry, got {other:?}"),
    }
}

// ---------------------------------------------------------------- upstream

#[derive(Debug, Clone)]
struct Seen {
    headers: HeaderMap,
    body: String,
}

/// Status, headers and body of the next reply.
type Reply = (u16, Vec<(String, String)>, String);

#[derive(Clone)]
struct Upstream {
    reply: Arc<Mutex<Reply>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Upstream {
    fn reply(&self, status: u16, headers: &[(&str, &str)], body: &str) {
        *self.reply.lock().unwrap() = (
            status,
            headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body.to_string(),
        );
    }
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn op(State(up): State<Upstream>, headers: HeaderMap, body: String) -> impl IntoResponse {
    up.seen.lock().unwrap().push(Seen { headers, body });
    let (status, hdrs, body) = up.reply.lock().unwrap().clone();
    let mut map = HeaderMap::new();
    for (k, v) in hdrs {
        map.insert(
            axum::http::HeaderName::try_from(k).unwrap(),
            v.parse().unwrap(),
        );
    }
    (StatusCode::from_u16(status).unwrap(), map, body)
}

async fn pause() -> &'static str {
    tokio::time::sleep(Duration::from_millis(300)).await;
    "ok"
}

async fn slow() -> &'static str {
    tokio::time::sleep(Duration::from_secs(5)).await;
    "late"
}

async fn big() -> String {
    "x".repeat(64 * 1024)
}

/// A fake upstream on 127.0.0.1:0; returns it and its `host:port`.
async fn upstream() -> (Upstream, String) {
    let up = Upstream {
        reply: Arc::new(Mutex::new((200, vec![], String::new()))),
        seen: Arc::new(Mutex::new(Vec::new())),
    };
    let app = Router::new()
        .route("/op", any(op))
        .route("/slow", any(slow))
        .route("/pause", any(pause))
        .route("/big", get(big).post(big))
        .with_state(up.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (up, format!("127.0.0.1:{}", addr.port()))
}

// ---------------------------------------------------------------- webhook

#[tokio::test]
async fn webhook_posts_payload_with_spec_headers_and_secret() {
    let rt = runtime();
    let webhook = load(&rt, "webhook").await;
    assert_eq!(webhook.info().name, "webhook");
    assert!(webhook
        .info()
        .config
        .iter()
        .any(|f| f.name == "url" && f.required));
    assert!(webhook.digest().starts_with("sha256:") && webhook.digest().len() == 7 + 64);

    let (up, host) = upstream().await;
    let sb = sandbox(&[host.as_str()], Some(format!("http://{host}/op")));
    let payload = r#"{"msisdn":"2065551234","customer":"A2"}"#;
    assert_eq!(
        webhook.deliver(&sb, &delivery(payload)).await,
        Outcome::Done
    );

    let seen = up.seen();
    assert_eq!(seen.len(), 1);
    let h = &seen[0].headers;
    assert_eq!(h["idempotency-key"], "dlv-1");
    assert_eq!(h["x-switchboard-event"], "evt-000123");
    assert_eq!(h["x-switchboard-type"], "number.assign");
    assert_eq!(h["content-type"], "application/json");
    assert_eq!(
        h["authorization"], "Bearer s3cret",
        "secret header injected by the host"
    );
    assert_eq!(seen[0].body, payload, "payload is forwarded verbatim");
}

#[tokio::test]
async fn webhook_classifies_statuses_per_spec_4_5() {
    let rt = runtime();
    let webhook = load(&rt, "webhook").await;
    let (up, host) = upstream().await;
    let sb = sandbox(&[host.as_str()], Some(format!("http://{host}/op")));

    // (status, headers, body, expected kind, expected after, reason must contain)
    type Case<'a> = (
        u16,
        &'a [(&'a str, &'a str)],
        &'a str,
        &'a str,
        Option<u64>,
        &'a str,
    );
    let cases: &[Case] = &[
        (200, &[], "", "done", None, ""),
        (202, &[], "", "done", None, ""),
        (204, &[], "", "done", None, ""),
        (408, &[], "", "retry", None, "HTTP 408"),
        (
            429,
            &[("retry-after", "7")],
            "",
            "retry",
            Some(7),
            "HTTP 429",
        ),
        (500, &[], "boom", "retry", None, "HTTP 500: boom"),
        (
            503,
            &[("retry-after", "120")],
            "",
            "retry",
            Some(120),
            "HTTP 503",
        ),
        (
            400,
            &[],
            "bad msisdn",
            "reject",
            None,
            "HTTP 400: bad msisdn",
        ),
        (
            404,
            &[],
            "no such subscriber",
            "reject",
            None,
            "HTTP 404: no such subscriber",
        ),
        (409, &[], "", "reject", None, "HTTP 409"),
        (422, &[], "", "reject", None, "HTTP 422"),
    ];
    for &(status, headers, body, kind, after, reason_part) in cases {
        up.reply(status, headers, body);
        let got = webhook.deliver(&sb, &delivery("{}")).await;
        let ctx = format!("status {status}: {got:?}");
        match (kind, &got) {
            ("done", Outcome::Done) => {}
            ("retry", Outcome::Retry { after: a, reason }) => {
                assert_eq!(*a, after.map(Duration::from_secs), "{ctx}");
                assert!(reason.contains(reason_part), "{ctx}");
            }
            ("reject", Outcome::Reject { reason }) => {
                assert!(reason.contains(reason_part), "{ctx}");
            }
            _ => panic!("expected {kind}, {ctx}"),
        }
    }
}

#[tokio::test]
async fn webhook_connect_error_and_timeout_are_retries() {
    let rt = runtime();
    let webhook = load(&rt, "webhook").await;

    // A port nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_host = format!("127.0.0.1:{}", closed.local_addr().unwrap().port());
    drop(closed);
    let sb = sandbox(
        &[closed_host.as_str()],
        Some(format!("http://{closed_host}/op")),
    );
    let o = webhook.deliver(&sb, &delivery("{}")).await;
    assert!(retry_reason(&o).contains("connect"), "{o:?}");

    let (_up, host) = upstream().await;
    let mut sb = sandbox(&[host.as_str()], Some(format!("http://{host}/slow")));
    sb.limits.request_timeout = Duration::from_millis(300);
    let started = Instant::now();
    let o = webhook.deliver(&sb, &delivery("{}")).await;
    assert!(retry_reason(&o).contains("timeout"), "{o:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn webhook_response_over_size_cap_is_retry() {
    let rt = runtime();
    let webhook = load(&rt, "webhook").await;
    let (_up, host) = upstream().await;
    let mut sb = sandbox(&[host.as_str()], Some(format!("http://{host}/big")));
    sb.limits.max_response_bytes = 1024;
    let o = webhook.deliver(&sb, &delivery("{}")).await;
    assert!(
        retry_reason(&o).contains("body size exceeds limit"),
        "{o:?}"
    );
}

#[tokio::test]
async fn webhook_without_url_config_is_reject() {
    let rt = runtime();
    let webhook = load(&rt, "webhook").await;
    let o = webhook.deliver(&sandbox(&[], None), &delivery("{}")).await;
    assert!(
        matches!(&o, Outcome::Reject { reason } if reason.contains("url")),
        "{o:?}"
    );
}

// ---------------------------------------------------------------- adversarial

#[tokio::test]
async fn spinning_guest_is_stopped_by_cpu_budget_then_next_delivery_works() {
    let rt = runtime();
    let spin = load(&rt, "spin").await;
    let mut sb = sandbox(&[], None);
    sb.limits.cpu_budget = Duration::from_millis(300);
    let started = Instant::now();
    let o = spin.deliver(&sb, &delivery("{}")).await;
    assert!(retry_reason(&o).contains("CPU budget"), "{o:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(spin.deliver(&sb, &delivery(BEHAVE)).await, Outcome::Done);
}

#[tokio::test]
async fn spinning_guest_is_stopped_by_wall_deadline() {
    let rt = runtime();
    let spin = load(&rt, "spin").await;
    let mut sb = sandbox(&[], None);
    sb.limits.deadline = Duration::from_millis(200);
    let o = spin.deliver(&sb, &delivery("{}")).await;
    assert!(retry_reason(&o).contains("deadline"), "{o:?}");
}

#[tokio::test]
async fn spinning_guest_does_not_starve_other_connectors() {
    let rt = runtime();
    let spin = load(&rt, "spin").await;
    let webhook = load(&rt, "webhook").await;
    let (_up, host) = upstream().await;
    let mut spin_sb = sandbox(&[], None);
    spin_sb.limits.cpu_budget = Duration::from_secs(2);
    let spinners: Vec<_> = (0..2)
        .map(|_| {
            let (spin, sb) = (spin.clone(), spin_sb.clone());
            tokio::spawn(async move { spin.deliver(&sb, &delivery("{}")).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let sb = sandbox(&[host.as_str()], Some(format!("http://{host}/op")));
    let started = Instant::now();
    for _ in 0..5 {
        assert_eq!(webhook.deliver(&sb, &delivery("{}")).await, Outcome::Done);
    }
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "webhook slowed by spinners: {:?}",
        started.elapsed()
    );
    for s in spinners {
        let o = s.await.unwrap();
        assert!(retry_reason(&o).contains("CPU budget"), "{o:?}");
    }
}

#[tokio::test]
async fn memory_bomb_hits_memory_cap_then_next_delivery_works() {
    let rt = runtime();
    let bomb = load(&rt, "membomb").await;
    let mut sb = sandbox(&[], None);
    sb.limits.memory_bytes = 16 << 20;
    let o = bomb.deliver(&sb, &delivery("{}")).await;
    assert!(retry_reason(&o).contains("memory"), "{o:?}");
    assert_eq!(bomb.deliver(&sb, &delivery(BEHAVE)).await, Outcome::Done);
}

#[tokio::test]
async fn panicking_guest_is_a_retry_with_its_message() {
    let rt = runtime();
    let panic = load(&rt, "panic").await;
    let sb = sandbox(&[], None);
    let o = panic.deliver(&sb, &delivery("{}")).await;
    let reason = retry_reason(&o);
    assert!(reason.contains("trapped"), "{reason}");
    assert!(
        reason.contains("fixture panicked on purpose for delivery dlv-1"),
        "{reason}"
    );
    assert_eq!(panic.deliver(&sb, &delivery(BEHAVE)).await, Outcome::Done);
}

#[tokio::test]
async fn host_not_in_allowed_hosts_is_denied_in_handle() {
    let rt = runtime();
    let fixture = load(&rt, "forbidden_host").await;
    let (up, allowed) = upstream().await;
    let (other_up, other) = upstream().await;
    let sb = sandbox(&[allowed.as_str()], Some(format!("http://{other}/op")));
    let o = fixture.deliver(&sb, &delivery("{}")).await;
    assert!(
        retry_reason(&o).contains("egress denied: host not in allowed_hosts"),
        "{o:?}"
    );
    assert!(
        other_up.seen().is_empty(),
        "the forbidden upstream was reached"
    );

    // The same component, pointed at its allowed host, still works.
    let sb = sandbox(&[allowed.as_str()], Some(format!("http://{allowed}/op")));
    assert_eq!(fixture.deliver(&sb, &delivery("{}")).await, Outcome::Done);
    assert_eq!(up.seen().len(), 1);
}

#[tokio::test]
async fn metadata_address_is_denied_by_name_and_by_resolved_address() {
    let rt = runtime();
    let fixture = load(&rt, "metadata").await;

    // Literal 169.254.169.254, not allowed: gate 1.
    let o = fixture.deliver(&sandbox(&[], None), &delivery("{}")).await;
    assert!(retry_reason(&o).contains("egress denied"), "{o:?}");

    // A *name* that is allowed but resolves to 169.254.169.254 (inet_aton's
    // decimal form, a classic SSRF bypass): gate 2.
    let sb = sandbox(
        &["2852039166"],
        Some("http://2852039166/latest/meta-data/".into()),
    );
    let o = fixture.deliver(&sb, &delivery("{}")).await;
    assert!(retry_reason(&o).contains("prohibited"), "{o:?}");

    // A name resolving to loopback (other than `localhost`) is refused too,
    // even though a server is listening there.
    let (up, host) = upstream().await;
    let port = host.rsplit_once(':').unwrap().1;
    let sb = sandbox(
        &[format!("127.1:{port}").as_str()],
        Some(format!("http://127.1:{port}/op")),
    );
    let o = fixture.deliver(&sb, &delivery("{}")).await;
    assert!(retry_reason(&o).contains("prohibited"), "{o:?}");
    assert!(up.seen().is_empty());

    // The IP literal listed explicitly is allowed (the operator's intent).
    let sb = sandbox(&[host.as_str()], Some(format!("http://{host}/op")));
    assert_eq!(fixture.deliver(&sb, &delivery("{}")).await, Outcome::Done);
}

#[tokio::test]
async fn wrong_world_and_corrupt_bytes_fail_to_load() {
    let rt = runtime();
    match rt.load(&wasm("wrong_world")).await {
        Err(RuntimeError::WrongWorld(msg)) => assert!(!msg.is_empty()),
        other => panic!("expected WrongWorld, got {other:?}"),
    }
    match rt.load(b"\0asm garbage").await {
        Err(RuntimeError::Compile(_)) => {}
        other => panic!("expected Compile, got {other:?}"),
    }
    let mut truncated = wasm("webhook");
    truncated.truncate(truncated.len() / 2);
    assert!(matches!(
        rt.load(&truncated).await,
        Err(RuntimeError::Compile(_))
    ));
    // The runtime is unaffected.
    load(&rt, "webhook").await;
}

#[tokio::test]
async fn second_load_hits_the_disk_cache() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = RuntimeConfig {
        cache_dir: Some(dir.path().to_path_buf()),
        max_instances: 8,
        ..RuntimeConfig::default()
    };
    let bytes = wasm("webhook");

    let rt = Runtime::new(cfg.clone()).unwrap();
    let first = rt.load(&bytes).await.unwrap();
    assert_eq!(rt.cache_stats().misses, 1, "{:?}", rt.cache_stats());
    assert_eq!(rt.cache_stats().hits, 0);

    // A fresh runtime (as after a restart) with the same directory.
    let rt2 = Runtime::new(cfg).unwrap();
    let second = rt2.load(&bytes).await.unwrap();
    assert_eq!(rt2.cache_stats().hits, 1, "{:?}", rt2.cache_stats());
    assert_eq!(rt2.cache_stats().misses, 0);
    assert_eq!(first.digest(), second.digest());
    assert_eq!(first.info(), second.info());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_calls_than_instance_slots_wait_for_a_slot_instead_of_failing() {
    // Two slots, six deliveries each holding its instance ~300 ms on a slow
    // upstream, and a load (describe) in the middle: nothing fails for want
    // of a slot; the surplus waits its turn.
    let rt = Runtime::new(RuntimeConfig {
        max_instances: 2,
        ..RuntimeConfig::default()
    })
    .unwrap();
    let webhook = load(&rt, "webhook").await;
    let (_up, host) = upstream().await;
    let sb = Arc::new(sandbox(
        &[host.as_str()],
        Some(format!("http://{host}/pause")),
    ));
    let calls: Vec<_> = (0..6)
        .map(|_| {
            let (w, sb) = (webhook.clone(), sb.clone());
            tokio::spawn(async move { w.deliver(&sb, &delivery(r#"{"n":1}"#)).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let again = rt.load(&wasm("webhook")).await;
    assert!(
        again.is_ok(),
        "load while every slot is busy: {:?}",
        again.err()
    );
    for c in calls {
        assert_eq!(c.await.unwrap(), Outcome::Done);
    }
    let slots = rt.slot_stats();
    assert_eq!((slots.total, slots.in_use, slots.timed_out), (2, 0, 0));
    assert!(slots.waited >= 1, "{slots:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_that_gets_no_slot_in_time_is_busy_not_a_connector_failure() {
    let rt = Runtime::new(RuntimeConfig {
        max_instances: 1,
        ..RuntimeConfig::default()
    })
    .unwrap();
    let webhook = load(&rt, "webhook").await;
    let (_up, host) = upstream().await;
    let mut sb = sandbox(&[host.as_str()], Some(format!("http://{host}/slow")));
    let busy = {
        let (w, sb) = (webhook.clone(), sb.clone());
        tokio::spawn(async move { w.deliver(&sb, &delivery(r#"{"n":1}"#)).await })
    };
    // Until the first call holds the only slot (however slow the machine).
    let started = Instant::now();
    while rt.slot_stats().in_use == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "first call never started"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    sb.limits.deadline = Duration::from_millis(300);
    let out = webhook.deliver(&sb, &delivery(r#"{"n":2}"#)).await;
    let Outcome::Busy { reason } = &out else {
        panic!("expected busy, got {out:?}")
    };
    assert!(reason.contains("no sandbox slot"), "{reason}");
    let slots = rt.slot_stats();
    assert_eq!((slots.in_use, slots.waited, slots.timed_out), (1, 1, 1));
    assert_eq!(busy.await.unwrap(), Outcome::Done);
    assert_eq!(rt.slot_stats().in_use, 0);
}

#[tokio::test]
async fn a_relative_cache_directory_is_taken_from_the_working_directory() {
    // The gateway's default cache sits next to the database, and the
    // quick-start database is `sqlite://./switchboard.db`: a relative path.
    let dir = tempfile::tempdir().unwrap();
    let cwd = std::env::current_dir().unwrap();
    let up = "../".repeat(cwd.components().count() - 1);
    let relative = PathBuf::from(up).join(dir.path().strip_prefix("/").unwrap().join("cache"));
    assert!(relative.is_relative());
    let cfg = RuntimeConfig {
        cache_dir: Some(relative),
        max_instances: 8,
        ..RuntimeConfig::default()
    };
    let bytes = wasm("webhook");

    let rt = Runtime::new(cfg.clone()).expect("a relative cache directory is accepted");
    rt.load(&bytes).await.unwrap();
    assert_eq!(rt.cache_stats().misses, 1, "{:?}", rt.cache_stats());
    assert!(dir.path().join("cache").is_dir());

    let rt2 = Runtime::new(cfg).unwrap();
    rt2.load(&bytes).await.unwrap();
    assert_eq!(rt2.cache_stats().hits, 1, "{:?}", rt2.cache_stats());
}

// ---- HTTPS upstreams. The certificates in tests/tls are test fixtures: a
// CA, a server certificate it issued for `localhost`, and an unrelated CA.

fn tls_fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/tls")
        .join(name)
}

/// An HTTPS upstream on 127.0.0.1 with the `localhost` certificate; answers
/// 200 and records each request's path and `authorization` header.
async fn tls_upstream() -> (u16, Arc<Mutex<Vec<(String, String)>>>) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(tls_fixture("server.pem"))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
    let key = PrivateKeyDer::from_pem_file(tls_fixture("server.key")).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let log = log.clone();
            tokio::spawn(async move {
                // A client that refuses the certificate ends the handshake.
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let log = log.clone();
                        async move {
                            let auth = req
                                .headers()
                                .get("authorization")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("")
                                .to_string();
                            log.lock()
                                .unwrap()
                                .push((req.uri().path().to_string(), auth));
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(
                                http_body_util::Full::new(bytes::Bytes::from_static(b"ok")),
                            ))
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    (port, seen)
}

fn runtime_trusting(ca: Option<&str>) -> Runtime {
    Runtime::new(RuntimeConfig {
        max_instances: 16,
        extra_ca_pem: ca.map(tls_fixture),
        ..RuntimeConfig::default()
    })
    .expect("runtime")
}

#[tokio::test]
async fn https_upstream_with_a_trusted_certificate_gets_the_delivery_and_secret() {
    let (port, seen) = tls_upstream().await;
    let rt = runtime_trusting(Some("ca.pem"));
    let webhook = load(&rt, "webhook").await;
    let sb = sandbox(
        &[&format!("localhost:{port}")],
        Some(format!("https://localhost:{port}/op")),
    );
    let out = webhook.deliver(&sb, &delivery(BEHAVE)).await;
    assert_eq!(out, Outcome::Done, "{out:?}");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen, vec![("/op".to_string(), "Bearer s3cret".to_string())]);
}

#[tokio::test]
async fn https_upstream_with_an_untrusted_or_misnamed_certificate_is_a_retry() {
    let (port, seen) = tls_upstream().await;
    // Not issued by a CA the gateway trusts (public roots, or another CA).
    for ca in [None, Some("other-ca.pem")] {
        let rt = runtime_trusting(ca);
        let webhook = load(&rt, "webhook").await;
        let sb = sandbox(
            &[&format!("localhost:{port}")],
            Some(format!("https://localhost:{port}/op")),
        );
        let out = webhook.deliver(&sb, &delivery(BEHAVE)).await;
        let reason = retry_reason(&out).to_ascii_lowercase();
        assert!(reason.contains("tls"), "{ca:?}: {reason}");
    }
    // Trusted CA, but the certificate names `localhost`, not 127.0.0.1.
    let rt = runtime_trusting(Some("ca.pem"));
    let webhook = load(&rt, "webhook").await;
    let sb = sandbox(
        &[&format!("127.0.0.1:{port}")],
        Some(format!("https://127.0.0.1:{port}/op")),
    );
    let out = webhook.deliver(&sb, &delivery(BEHAVE)).await;
    assert!(
        retry_reason(&out).to_ascii_lowercase().contains("tls"),
        "{out:?}"
    );
    assert!(
        seen.lock().unwrap().is_empty(),
        "nothing reached the upstream"
    );
}

#[tokio::test]
async fn an_unreadable_or_empty_ca_file_stops_the_runtime_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").unwrap();
    for path in [dir.path().join("missing.pem"), empty] {
        let err = Runtime::new(RuntimeConfig {
            extra_ca_pem: Some(path.clone()),
            ..RuntimeConfig::default()
        })
        .err()
        .unwrap_or_else(|| panic!("{} was accepted", path.display()));
        assert!(matches!(err, RuntimeError::Tls(_)), "{err}");
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
    }
}
