//! The console's pages over a store with a large backlog: how long each page
//! takes when a destination has been down for days. The store is SQLite,
//! opened as the gateway opens it (WAL, `synchronous=FULL`), or PostgreSQL
//! with `--postgres URL`; the pages are served by the real routers (API and
//! console merged, as the gateway serves them) with an admin session, in
//! process, so the figure is the page's queries and rendering, not a network.
//! On PostgreSQL the tables are analysed after the fill, as autovacuum
//! would do soon after such growth.
//!
//! The backlog: `--pending` deliveries for `hss` on `--keys` keys (so most
//! wait behind a lane's head), and `--dead` dead letters for `crm` (each
//! holding its key), with their attempts in the attempt log. Each page is
//! fetched `--runs` times; the median and the slowest are printed.
//!
//! `cargo bench -p switchboard --bench console -- [--pending N] [--dead N]
//! [--keys N] [--runs N] [--postgres URL]`; BENCHMARKS.md records what it
//! printed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use http_body_util::BodyExt;
use switchboard::api::auth::Tokens;
use switchboard::api::{router, AppState};
use switchboard::config::{Bounds, ConnectorConfig, Scope, TokenConfig};
use switchboard::fleet::Fleet;
use switchboard::queue::event::parse_body;
use switchboard::queue::{now_ms, OnDead};
use switchboard::store::{self, Completion, CompletionKind, Routed, Store};
use switchboard::ui::{session::Sessions, GatewayInfo, UiState};
use tower::ServiceExt;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ADMIN: &str = "admin-token-0123456789";

struct Opts {
    pending: usize,
    dead: usize,
    keys: usize,
    runs: usize,
    postgres: Option<String>,
}

fn parse_args() -> Opts {
    const USAGE: &str = "usage: cargo bench -p switchboard --bench console -- \
        [--pending N] [--dead N] [--keys N] [--runs N] [--postgres URL]";
    let mut o = Opts {
        pending: 1_000_000,
        dead: 100_000,
        keys: 100_000,
        runs: 7,
        postgres: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| -> String {
            args.next()
                .unwrap_or_else(|| panic!("{name} needs a value\n{USAGE}"))
        };
        match a.as_str() {
            "--bench" => {}
            "--pending" => o.pending = value("--pending").parse().expect(USAGE),
            "--dead" => o.dead = value("--dead").parse().expect(USAGE),
            "--keys" => o.keys = value("--keys").parse().expect(USAGE),
            "--runs" => o.runs = value("--runs").parse().expect(USAGE),
            "--postgres" => o.postgres = Some(value("--postgres")),
            other => panic!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    assert!(o.keys > 0 && o.runs > 0, "{USAGE}");
    o
}

fn event(id: &str, key: &str) -> switchboard::queue::event::NewEvent {
    let body = format!(
        r#"{{"id":"{id}","type":"number.assign","keys":["{key}"],"payload":{{"msisdn":"{key}","customer":"A1"}}}}"#
    );
    parse_body(body.as_bytes(), 1).unwrap().remove(0)
}

async fn fill(store: &Arc<dyn Store>, o: &Opts) {
    let started = Instant::now();
    let now = now_ms();
    for chunk in (0..o.pending).collect::<Vec<_>>().chunks(1_000) {
        let batch = chunk
            .iter()
            .map(|i| {
                let e = event(&format!("p{i}"), &format!("msisdn:{}", i % o.keys));
                Routed::new(e, vec!["hss".into()])
            })
            .collect();
        store.ingest(batch, now).await.unwrap();
    }
    // The dead letters: each the head of its own key, claimed and rejected.
    for chunk in (0..o.dead).collect::<Vec<_>>().chunks(1_000) {
        let batch = chunk
            .iter()
            .map(|i| {
                let e = event(&format!("d{i}"), &format!("msisdn:{}", 9_000_000 + i));
                Routed::new(e, vec!["crm".into()])
            })
            .collect();
        store.ingest(batch, now).await.unwrap();
        let claimed = store.claim("crm", 1_000, now, 60_000).await.unwrap();
        let items = claimed
            .iter()
            .map(|d| {
                let dead = CompletionKind::Dead {
                    error: "rejected: HTTP 409 number in use by another customer".into(),
                    on_dead: OnDead::Hold,
                };
                Completion::of(d, dead)
            })
            .collect();
        store.complete(items, now).await.unwrap();
    }
    println!(
        "store: {} pending for hss on {} keys, {} dead letters for crm, filled in {:.1} s",
        o.pending,
        o.keys.min(o.pending),
        o.dead,
        started.elapsed().as_secs_f64()
    );
}

fn connector(name: &str) -> ConnectorConfig {
    serde_json::from_value(serde_json::json!({"name": name, "routes": ["number.*"]})).unwrap()
}

async fn get(app: &axum::Router, path: &str, cookie: &str) -> (StatusCode, usize) {
    let req = Request::get(path)
        .header(header::HOST, "127.0.0.1:7400")
        .header(header::COOKIE, cookie)
        .body(Body::empty())
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, bytes.len())
}

/// The `name=value` of the cookie a reply sets.
fn cookie_set_by(headers: &axum::http::HeaderMap) -> String {
    let set = headers[header::SET_COOKIE].to_str().unwrap();
    set.split(';').next().unwrap().to_string()
}

/// The value of a page's first `csrf` field.
fn csrf_in(body: &str) -> String {
    let rest = body.split("name=\"csrf\" value=\"").nth(1).unwrap();
    rest.split('"').next().unwrap().to_string()
}

fn main() {
    let o = parse_args();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(run(o));
}

async fn run(o: Opts) {
    let dir = tempfile::tempdir().unwrap();
    let url = match &o.postgres {
        Some(u) => u.clone(),
        None => format!("sqlite://{}", dir.path().join("console.db").display()),
    };
    let store = store::open(&url).await.unwrap();
    let backend = if o.postgres.is_some() {
        "PostgreSQL"
    } else {
        "SQLite"
    };
    println!("  database: {backend}");
    fill(&store, &o).await;
    if let Some(url) = &o.postgres {
        // What autovacuum does soon after a table grows this much: without
        // statistics the planner takes a million rows for a handful.
        let pool = sqlx::PgPool::connect(url).await.unwrap();
        sqlx::query("ANALYZE").execute(&pool).await.unwrap();
    }

    let tokens = vec![TokenConfig {
        name: "ops".into(),
        token: ADMIN.into(),
        scopes: vec![Scope::Admin],
    }];
    let state = AppState {
        store: store.clone(),
        fleet: Fleet::new(vec![connector("hss"), connector("crm")], Bounds::default()),
        connectors: None,
        max_body_bytes: 1 << 20,
        max_batch: 100,
        tokens: Tokens::new(&tokens),
    };
    let ui = switchboard::ui::router(UiState {
        sessions: Sessions::new(state.tokens.clone(), 8),
        info: Arc::new(GatewayInfo {
            version: "bench",
            backend,
            node: "n1".into(),
            takeover_after_ms: 12_000,
        }),
        app: state.clone(),
    });
    let app = router(state).merge(ui);
    // As a browser logs in: the login page's form cookie and token first.
    let page = app
        .clone()
        .oneshot(
            Request::get("/ui/login")
                .header(header::HOST, "127.0.0.1:7400")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let form_cookie = cookie_set_by(page.headers());
    let body = page.into_body().collect().await.unwrap().to_bytes();
    let csrf = csrf_in(&String::from_utf8_lossy(&body));
    let login = Request::post("/ui/login")
        .header(header::HOST, "127.0.0.1:7400")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::COOKIE, form_cookie)
        .body(Body::from(format!("token={ADMIN}&csrf={csrf}")))
        .unwrap();
    let resp = app.clone().oneshot(login).await.unwrap();
    let cookie = cookie_set_by(resp.headers());

    let mid = o.keys / 2;
    let pages = [
        ("overview", "/ui/".to_string()),
        ("connector (hss)", "/ui/connectors/hss".to_string()),
        ("connector (crm)", "/ui/connectors/crm".to_string()),
        ("dead letters, all", "/ui/dead-letters".to_string()),
        (
            "dead letters, crm",
            "/ui/dead-letters?connector=crm".to_string(),
        ),
        (
            "dead letters, by reason",
            "/ui/dead-letters?reason=HTTP%20409".to_string(),
        ),
        (
            "dead letters, by key",
            format!("/ui/dead-letters?key=msisdn%3A{}", 9_000_000 + o.dead / 2),
        ),
        (
            "dead letters, page back",
            format!("/ui/dead-letters?before_id={}", o.pending + o.dead / 2),
        ),
        ("event", format!("/ui/events/p{}", o.pending / 2)),
        (
            "key (lane of ~pending/keys)",
            format!("/ui/keys/msisdn%3A{mid}"),
        ),
        ("audit", "/ui/audit".to_string()),
        ("plots' data", "/ui/series.json".to_string()),
    ];
    println!(
        "{:<30} {:>10} {:>10} {:>9}",
        "page", "median ms", "worst ms", "bytes"
    );
    for (name, path) in pages {
        let mut times = Vec::with_capacity(o.runs);
        let mut size = 0;
        for _ in 0..o.runs {
            let t = Instant::now();
            let (status, bytes) = get(&app, &path, &cookie).await;
            times.push(t.elapsed());
            assert_eq!(status, StatusCode::OK, "{path}");
            size = bytes;
        }
        times.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!(
            "{name:<30} {:>10.2} {:>10.2} {size:>9}",
            ms(times[times.len() / 2]),
            ms(*times.last().unwrap())
        );
    }
}
