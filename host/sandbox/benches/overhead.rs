//! Per-delivery runtime overhead: the `webhook` component delivering through
//! the sandbox versus a native call doing the same POST, both against one
//! local HTTP server, at 64 concurrent deliveries.
//!
//! Both sides send the same body and the same three headers, reuse pooled
//! keep-alive connections, and wait for the upstream's `200` before the next
//! delivery of their task. The Wasm side runs as the gateway does (an
//! instance kept warm between deliveries, under the default limits) and
//! pays the guest's request building and response classification and the
//! host's egress check — everything a real delivery pays.
//!
//! Usage: cargo bench -p switchboard-sandbox --bench overhead -- [DELIVERIES] [CONCURRENCY]
//!
//! `--only native|wasm|sandbox` runs one side alone, three times, for a
//! profiler (`perf record`, `strace -c`) to see that side without the others.
//!
//! `--only languages` measures the webhook connector built from Rust,
//! TypeScript and Python (`webhook`, `webhook-ts`, `webhook-py`): compile
//! and `describe` without a cache (what an upload costs), a delivery on a
//! fresh instance (cold start) and on a warm one, one after another — wall
//! time and this process's CPU per delivery — and the resident memory each
//! warm instance adds. DELIVERIES sets the warm deliveries (cold ones are a
//! tenth of it).
//!
//! `--only reload` measures what hot-loading leaves behind instead: it loads
//! `webhook.wasm` DELIVERIES times (a fresh compile each time, as a deploy
//! of new bytes does), delivers a few events through each version while the
//! previous one is dropped, and prints the process's resident memory as it
//! goes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use switchboard_sandbox::{Delivery, Outcome, Runtime, RuntimeConfig, Sandbox};

/// The allocator the `switchboard` binary runs with (`host/src/main.rs`),
/// for both sides.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const PAYLOAD: &str = r#"{"msisdn":"2065551234","customer":"A2","imsi":"310150123456789","profile":"postpaid-5g","services":["voice","data","sms"]}"#;

async fn upstream() -> String {
    use axum::routing::post;
    let hits = Arc::new(AtomicU64::new(0));
    let app = axum::Router::new().route(
        "/op",
        post(move |body: Bytes| {
            let hits = hits.clone();
            async move {
                hits.fetch_add(1, Ordering::Relaxed);
                assert!(!body.is_empty());
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr.to_string()
}

fn wasm_path(name: &str) -> std::path::PathBuf {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("../../target/wasm32-wasip2/release/{name}.wasm"));
    assert!(
        p.exists(),
        "{} missing: run `make connectors` first",
        p.display()
    );
    p
}

async fn run_native(url: &str, total: u64, concurrency: u64) -> Duration {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(concurrency as usize)
        .build_http();
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let client = client.clone();
        let next = next.clone();
        let url: hyper::Uri = format!("http://{url}/op").parse().unwrap();
        tasks.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < total {
                let req = hyper::Request::post(url.clone())
                    .header("content-type", "application/json")
                    .header("idempotency-key", "12345")
                    .header("x-switchboard-event", "evt-1")
                    .header("x-switchboard-type", "number.assign")
                    .body(Full::new(Bytes::from_static(PAYLOAD.as_bytes())))
                    .unwrap();
                let resp = client.request(req).await.unwrap();
                let ok = resp.status().is_success();
                resp.into_body().collect().await.unwrap();
                assert!(ok);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    start.elapsed()
}

/// What the Wasm side runs: the `webhook` connector POSTing to the upstream,
/// or only the sandbox around a delivery that makes no request.
#[derive(Clone, Copy)]
enum Guest {
    Webhook,
    /// `spin.wasm` answers `done` at once when the payload is `"behave"`: a
    /// fresh store and instance, the delivery lifted in, the outcome lifted
    /// out, the teardown, and nothing else. The floor of any connector.
    SandboxOnly,
}

async fn run_wasm(guest: Guest, url: &str, total: u64, concurrency: u64) -> Duration {
    let (file, payload) = match guest {
        Guest::Webhook => ("webhook", PAYLOAD),
        Guest::SandboxOnly => ("spin", "\"behave\""),
    };
    let rt = Runtime::new(RuntimeConfig::default()).unwrap();
    let component = rt
        .load(&std::fs::read(wasm_path(file)).unwrap())
        .await
        .unwrap();
    let sandbox = Arc::new(Sandbox {
        allowed_hosts: vec![url.to_string()],
        config: [("url".to_string(), format!("http://{url}/op"))].into(),
        ..Sandbox::default()
    });
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let component = component.clone();
        let sandbox = sandbox.clone();
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= total {
                    break;
                }
                let d = Delivery {
                    id: n.to_string(),
                    attempt: 1,
                    event_id: "evt-1".into(),
                    event_type: "number.assign".into(),
                    keys: vec!["msisdn:2065551234".into()],
                    payload: payload.into(),
                };
                let out = component.deliver(&sandbox, &d).await;
                assert_eq!(out, Outcome::Done, "{out:?}");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    start.elapsed()
}

/// This process's CPU time (user + system), from `/proc/self/stat`.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses.
    let rest = stat.rsplit(')').next().unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 here.
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

/// Cold and warm deliveries, compile time and memory per warm instance, for
/// each build of the webhook connector (see the module docs).
async fn languages(url: &str, warm_total: u64) {
    let cold_total = (warm_total / 10).max(10);
    println!(
        "webhook by language: {cold_total} cold and {warm_total} warm deliveries one after \
         another; CPU is this process's (the local upstream's ~tens of µs included)"
    );
    println!(
        "| build | .wasm MB | compile + describe, no cache | cold: wall p50 / CPU per delivery | \
         warm: wall p50 / CPU per delivery | memory per warm instance |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for name in ["webhook", "webhook-ts", "webhook-py"] {
        let bytes = std::fs::read(wasm_path(name)).unwrap();
        let rt = Runtime::new(RuntimeConfig::default()).unwrap();
        let t = Instant::now();
        let component = rt.load(&bytes).await.unwrap();
        let compile = t.elapsed();
        let mut sandbox = Sandbox {
            allowed_hosts: vec![url.to_string()],
            config: [("url".to_string(), format!("http://{url}/op"))].into(),
            ..Sandbox::default()
        };
        let delivery = |n: u64| Delivery {
            id: n.to_string(),
            attempt: 1,
            event_id: "evt-1".into(),
            event_type: "number.assign".into(),
            keys: vec!["msisdn:2065551234".into()],
            payload: PAYLOAD.into(),
        };
        let run = |sandbox: Sandbox, total: u64| {
            let component = component.clone();
            async move {
                let mut walls = Vec::new();
                let cpu0 = cpu_time();
                for n in 0..total {
                    let t = Instant::now();
                    let out = component.deliver(&sandbox, &delivery(n)).await;
                    walls.push(t.elapsed());
                    assert_eq!(out, Outcome::Done, "{out:?}");
                }
                let cpu = cpu_time().saturating_sub(cpu0);
                walls.sort();
                (
                    walls[walls.len() / 2],
                    cpu / u32::try_from(total).unwrap_or(1),
                )
            }
        };
        sandbox.limits.max_deliveries_per_instance = 1;
        let (cold_wall, cold_cpu) = run(sandbox.clone(), cold_total).await;
        sandbox.limits.max_deliveries_per_instance = 1_000_000;
        run(sandbox.clone(), 10).await;
        let (warm_wall, warm_cpu) = run(sandbox.clone(), warm_total).await;
        // Memory: 16 deliveries at once leave 16 warm instances behind; what
        // they hold is what the process gives back when they are torn down.
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let (component, sandbox) = (component.clone(), sandbox.clone());
                tokio::spawn(async move {
                    for n in 0..5 {
                        component.deliver(&sandbox, &delivery(n)).await;
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let added = (rt.slot_stats().warm / component.footprint().slots()).max(1);
        let with_them = rss_mib();
        drop(component);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let per_instance = (with_them - rss_mib()) / f64::from(added);
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "| {name} | {:.2} | {:.2} s | {:.2} ms / {:.2} ms | {:.2} ms / {:.2} ms | {:.1} MiB ({added} instances) |",
            bytes.len() as f64 / 1e6,
            compile.as_secs_f64(),
            ms(cold_wall),
            ms(cold_cpu),
            ms(warm_wall),
            ms(warm_cpu),
            per_instance
        );
    }
}

/// Resident set size of this process, from `/proc/self/status`.
fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

/// Load `webhook.wasm` `versions` times into one runtime, each load
/// replacing the previous version the way a deploy does, with deliveries in
/// flight across each swap; print resident memory along the way.
async fn reload(url: &str, versions: u64) {
    let rt = Runtime::new(RuntimeConfig::default()).unwrap();
    let wasm = std::fs::read(wasm_path("webhook")).unwrap();
    let sandbox = Arc::new(Sandbox {
        allowed_hosts: vec![url.to_string()],
        config: [("url".to_string(), format!("http://{url}/op"))].into(),
        ..Sandbox::default()
    });
    let mut current = rt.load(&wasm).await.unwrap();
    let report_every = (versions / 10).max(1);
    println!("versions loaded: 1, resident: {:.1} MiB", rss_mib());
    let start = Instant::now();
    for n in 2..=versions {
        // Deliveries on the running version while the next one compiles.
        let mut inflight = Vec::new();
        for i in 0..8u64 {
            let (c, s) = (current.clone(), sandbox.clone());
            inflight.push(tokio::spawn(async move {
                let d = Delivery {
                    id: format!("{n}-{i}"),
                    attempt: 1,
                    event_id: "evt-1".into(),
                    event_type: "number.assign".into(),
                    keys: vec!["msisdn:2065551234".into()],
                    payload: PAYLOAD.into(),
                };
                c.deliver(&s, &d).await
            }));
        }
        current = rt.load(&wasm).await.unwrap();
        for t in inflight {
            assert_eq!(t.await.unwrap(), Outcome::Done);
        }
        if n % report_every == 0 || n == versions {
            println!(
                "versions loaded: {n}, resident: {:.1} MiB ({:.0} ms per load and swap)",
                rss_mib(),
                start.elapsed().as_secs_f64() * 1e3 / (n - 1) as f64
            );
        }
    }
}

fn main() {
    let all: Vec<String> = std::env::args().skip(1).collect();
    let only = all
        .iter()
        .position(|a| a == "--only")
        .map(|i| all.get(i + 1).cloned().unwrap_or_default());
    let args: Vec<String> = all
        .iter()
        .filter(|a| !a.starts_with("--") && Some(*a) != only.as_ref())
        .cloned()
        .collect();
    let total: u64 = args.first().and_then(|a| a.parse().ok()).unwrap_or(40_000);
    let concurrency: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(64);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let url = upstream().await;
        if only.as_deref() == Some("reload") {
            reload(&url, total).await;
            return;
        }
        if only.as_deref() == Some("languages") {
            languages(&url, total).await;
            return;
        }
        if let Some(side) = only {
            for _ in 0..3 {
                let took = match side.as_str() {
                    "native" => run_native(&url, total, concurrency).await,
                    "wasm" => run_wasm(Guest::Webhook, &url, total, concurrency).await,
                    "sandbox" => run_wasm(Guest::SandboxOnly, &url, total, concurrency).await,
                    other => panic!("--only takes native, wasm or sandbox, not `{other}`"),
                };
                println!(
                    "{side}: {:.0} deliveries/s",
                    total as f64 / took.as_secs_f64()
                );
            }
            return;
        }
        // Warm both paths (connections, compiled code) before measuring.
        run_native(&url, 2_000, concurrency).await;
        run_wasm(Guest::Webhook, &url, 2_000, concurrency).await;
        run_wasm(Guest::SandboxOnly, &url, 2_000, concurrency).await;
        let mut native = Vec::new();
        let mut wasm = Vec::new();
        let mut sandbox = Vec::new();
        for _ in 0..3 {
            native.push(run_native(&url, total, concurrency).await);
            wasm.push(run_wasm(Guest::Webhook, &url, total, concurrency).await);
            sandbox.push(run_wasm(Guest::SandboxOnly, &url, total, concurrency).await);
        }
        let rate = |d: &Duration| total as f64 / d.as_secs_f64();
        let best = |v: &[Duration]| v.iter().map(rate).fold(0.0, f64::max);
        let (n, w, s) = (best(&native), best(&wasm), best(&sandbox));
        println!(
            "deliveries per run: {total}, concurrency: {concurrency}, 3 runs each (best shown)"
        );
        println!(
            "native hyper POST : {:>9.0} deliveries/s  ({:.1} µs each)",
            n,
            1e6 / n
        );
        println!(
            "wasm webhook      : {:>9.0} deliveries/s  ({:.1} µs each)",
            w,
            1e6 / w
        );
        println!(
            "sandbox only      : {:>9.0} deliveries/s  ({:.1} µs each; no request)",
            s,
            1e6 / s
        );
        println!("per-delivery cost ratio wasm/native: {:.2}x", n / w);
        // Both sides saturate the same cores, so per-delivery costs add: a
        // connector whose request cost nothing more than the native call's
        // would still pay the sandbox on top of it.
        println!(
            "floor of that ratio with a fresh sandbox per delivery (native + sandbox only): {:.2}x",
            1.0 + n / s
        );
        let runs = |v: &[Duration]| {
            v.iter()
                .map(|d| format!("{:.0}/s", rate(d)))
                .collect::<Vec<_>>()
        };
        println!("all runs native: {:?}", runs(&native));
        println!("all runs wasm:   {:?}", runs(&wasm));
        println!("all runs sandbox only: {:?}", runs(&sandbox));
    });
}
