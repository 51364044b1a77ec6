//! Three gateway nodes on one PostgreSQL database: events posted round-robin
//! to all of them, number reassignments racing on the same numbers from
//! different nodes, one node `kill -9`ed mid-load and restarted later.
//! Nothing acknowledged is lost, every number's operations arrive in order,
//! and the dead node's leases are taken over by the others.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{free_port, wasm, write_config_on, Db, FakeHss, Gateway, Recorder};
use crate::reassign::{check_order, post_all, wait_applied};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_share_the_work_and_survive_losing_one() {
    let dir = tempfile::tempdir().unwrap();
    let hss = FakeHss::default();
    hss.inner().fail_percent.store(5, Ordering::Relaxed);
    // Slow enough that every node has attempts in flight when one is killed.
    hss.inner().delay_ms.store(20, Ordering::Relaxed);
    let hss_addr = hss.start().await;
    let url = Db::Postgres.fresh_url(dir.path()).await;
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let configs: Vec<_> = ports
        .iter()
        .map(|&port| write_config_on(&url, dir.path(), port, hss_addr, 8))
        .collect();
    // Started together: migrations must be applied once, under a lock.
    let starting: Vec<_> = configs
        .iter()
        .cloned()
        .map(|c| std::thread::spawn(move || Gateway::start(&c)))
        .collect();
    let mut gws: Vec<Option<Gateway>> = starting
        .into_iter()
        .map(|t| Some(t.join().unwrap()))
        .collect();
    // A killed node comes back on the same address.
    let bases: Vec<String> = gws.iter().map(|g| g.as_ref().unwrap().url("")).collect();

    let (numbers, steps) = (60, 8);
    let acked = Arc::new(AtomicUsize::new(0));
    let load = tokio::spawn(post_all(bases, numbers, steps, 6, acked.clone()));
    while acked.load(Ordering::Relaxed) < numbers * steps / 3 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Node 1 dies holding leases (leases name their node, host:port);
    // clients fail over to the others.
    let db = sqlx::PgPool::connect(&url).await.unwrap();
    let held_by_1 = || {
        sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(*) FROM deliveries WHERE state = 'in_flight' AND lease_owner LIKE $1",
        )
        .bind(format!("%:{}", ports[1]))
        .fetch_one(&db)
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while held_by_1().await.unwrap() < 3 {
        assert!(Instant::now() < deadline, "node 1 never held 3 leases");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let dead = gws[1].take().unwrap();
    let dead_log = dead.log.clone();
    dead.kill9();
    let orphaned = held_by_1().await.unwrap();
    assert!(orphaned > 0, "node 1 died holding no lease");
    let at_kill = hss.applied().len();
    load.await.unwrap();

    // Everything is delivered while node 1 is still down: its leases were
    // taken over by the survivors.
    let survivor_log = gws[0].as_ref().unwrap().log.clone();
    wait_applied(&hss, numbers * steps, &survivor_log).await;
    assert!(at_kill < numbers * steps, "the kill should land mid-load");
    // The register may have applied what node 1 sent just before it died;
    // its leases still have to be taken over before nothing is in flight.
    let survivor = gws[0].as_ref().unwrap().url("/v1/connectors/hss");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v: Value = reqwest::get(&survivor).await.unwrap().json().await.unwrap();
        let d = &v["deliveries"];
        if d["in_flight"] == 0 && d["ready"] == 0 && d["blocked"] == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "deliveries left unfinished: {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        held_by_1().await.unwrap(),
        0,
        "the {orphaned} leases node 1 died with were never taken over"
    );
    let rescued = gws
        .iter()
        .flatten()
        .map(|g| std::fs::read_to_string(&g.log).unwrap_or_default())
        .any(|log| {
            // By heartbeat (the dead node went silent) or by the leases'
            // end, whichever comes first.
            log.contains("took over the in-flight deliveries of nodes gone silent")
                || log.contains("re-queued deliveries whose lease expired")
        });
    assert!(rescued, "no survivor logged the takeover");

    // The dead node comes back and serves again.
    let back = Gateway::start(&configs[1]);
    let ready = reqwest::get(back.url("/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200);
    gws[1] = Some(back);

    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        hss.conflicts().is_empty(),
        "out of order across nodes: {:?}\nlog of the killed node:\n{}",
        hss.conflicts(),
        std::fs::read_to_string(dead_log).unwrap_or_default()
    );
    check_order(&hss.applied(), numbers, steps);
    // Each event was posted to one node but is visible from every node.
    for g in gws.iter().flatten() {
        let v: Value = reqwest::get(g.url("/v1/events/n7-s7"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v["deliveries"][0]["state"], "delivered", "{v}");
    }
}

/// A connector created, and its component uploaded, through one node is
/// served by the others: its routes take events posted to them, and they
/// deliver with the uploaded component.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connector_created_through_one_node_is_served_by_all() {
    let dir = tempfile::tempdir().unwrap();
    let up = Recorder::default();
    let up_addr = up.start().await;
    let hss = FakeHss::default();
    let hss_addr = hss.start().await;
    let url = Db::Postgres.fresh_url(dir.path()).await;
    let a = Gateway::start(&write_config_on(&url, dir.path(), free_port(), hss_addr, 4));
    let b = Gateway::start(&write_config_on(&url, dir.path(), free_port(), hss_addr, 4));
    let http = reqwest::Client::new();

    let settings = serde_json::json!({
        "routes": ["quota.*"],
        "allowed_hosts": [up_addr.to_string()],
        "config": {"url": format!("http://{up_addr}/op")},
        "limits": {"deadline_ms": 2000},
    });
    let r = http
        .put(a.url("/v1/connectors/sms"))
        .json(&settings)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
    let wasm = std::fs::read(wasm("webhook")).unwrap();
    let r = http
        .put(a.url("/v1/connectors/sms/component"))
        .body(wasm)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());

    // Node b picks both up within its 2 s store check.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = http.get(b.url("/v1/connectors/sms")).send().await.unwrap();
        if r.status() == 200 {
            let v: Value = r.json().await.unwrap();
            if v["component"]["version"] == 1 {
                break;
            }
        }
        assert!(Instant::now() < deadline, "node b never saw connector sms");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let events: Vec<Value> = (0..20)
        .map(|i| serde_json::json!({"id": format!("q{i}"), "type": "quota.reached", "payload": {"n": i}}))
        .collect();
    let r = http
        .post(b.url("/v1/events"))
        .json(&events)
        .send()
        .await
        .unwrap();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["unrouted"], 0, "{body}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while up.seen().len() < 20 {
        assert!(
            Instant::now() < deadline,
            "only {} of 20 delivered",
            up.seen().len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `switchboard migrate` applies the schema to an empty store of either kind
/// and is a no-op the second time; a bad URL is a clear usage error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_applies_the_schema_once_on_either_backend() {
    let dir = tempfile::tempdir().unwrap();
    // Every migration shipped for the backend, and the newest version
    // (each has its own schema history: SQLite has some the PostgreSQL
    // schema does not need, so PostgreSQL's versions have gaps).
    let shipped = |dir: &str| {
        let versions: Vec<u64> =
            std::fs::read_dir(format!("{}/migrations/{dir}", env!("CARGO_MANIFEST_DIR")))
                .unwrap()
                .map(|f| {
                    let name = f.unwrap().file_name().to_string_lossy().to_string();
                    name.split('_').next().unwrap().parse().unwrap()
                })
                .collect();
        (versions.len(), versions.into_iter().max().unwrap())
    };
    for db in [Db::Sqlite, Db::Postgres] {
        let url = db.fresh_url(dir.path()).await;
        let (migrations, newest) = shipped(match db {
            Db::Sqlite => "sqlite",
            Db::Postgres => "postgres",
        });
        for _ in 0..2 {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
                .args(["--json", "migrate", "--storage", &url])
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "{db:?}: {text} {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let v: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(v["schema_version"], newest, "{db:?}: {v}");
            assert_eq!(
                v["applied"].as_array().unwrap().len(),
                migrations,
                "{db:?}: {v}"
            );
        }
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["migrate", "--storage", "mysql://nope"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("expected a sqlite:// or postgres:// URL"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Nodes wake each other through PostgreSQL NOTIFY: events posted to one
/// node are taken up by the other at once, although it polls only every
/// 30 s. (Run with `SWITCHBOARD_CLUSTER__NOTIFY=false`, which the gateways
/// inherit, this test fails: the other node waits for its poll.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_posted_to_one_node_wake_the_others_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let hss = FakeHss::default();
    hss.inner().delay_ms.store(50, Ordering::Relaxed);
    let hss_addr = hss.start().await;
    let url = Db::Postgres.fresh_url(dir.path()).await;
    let configs: Vec<_> = (0..2)
        .map(|_| {
            let path = write_config_on(&url, dir.path(), free_port(), hss_addr, 4);
            let text = std::fs::read_to_string(&path).unwrap();
            assert!(text.contains("poll_interval_ms = 100"));
            let text = text.replace("poll_interval_ms = 100", "poll_interval_ms = 30000");
            std::fs::write(&path, text).unwrap();
            path
        })
        .collect();
    let posted_to = Gateway::start(&configs[0]);
    let listener = Gateway::start(&configs[1]);
    // Both nodes' loops are idle, asleep until their next poll.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let acked = Arc::new(AtomicUsize::new(0));
    let (numbers, steps) = (100, 2);
    post_all(vec![posted_to.url("")], numbers, steps, 4, acked.clone()).await;
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let port = listener.addr.port();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let by_listener: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM attempts WHERE node LIKE $1")
                .bind(format!("%:{port}"))
                .fetch_one(&pool)
                .await
                .unwrap();
        if by_listener > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the other node did not wake up: it waited for its 30 s poll"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_applied(&hss, numbers * steps, &listener.log).await;
    check_order(&hss.applied(), numbers, steps);
}

/// A console session opened on one node holds on another node of the same
/// cluster (the nodes share their tokens, and a session is signed with a key
/// derived from its token): the second node shows the pages and accepts an
/// action with the CSRF token of its own page, audited under the token's name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_console_session_opened_on_one_node_works_on_another() {
    const TOKEN: &str = "ops-cluster-0123456789";
    let dir = tempfile::tempdir().unwrap();
    let hss = FakeHss::default();
    let hss_addr = hss.start().await;
    let url = Db::Postgres.fresh_url(dir.path()).await;
    let with_token = |config: std::path::PathBuf| {
        let text = std::fs::read_to_string(&config).unwrap().replace(
            "[storage]",
            &format!("[[server.tokens]]\nname = \"ops\"\ntoken = \"{TOKEN}\"\nscopes = [\"admin\"]\n\n[storage]"),
        );
        std::fs::write(&config, text).unwrap();
        config
    };
    let a = Gateway::start(&with_token(write_config_on(
        &url,
        dir.path(),
        free_port(),
        hss_addr,
        4,
    )));
    let b = Gateway::start(&with_token(write_config_on(
        &url,
        dir.path(),
        free_port(),
        hss_addr,
        4,
    )));
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    // As a browser: the login page first (its form token and cookie).
    let page = http.get(a.url("/ui/login")).send().await.unwrap();
    let form_cookie = cookie_set_by(&page);
    let form_csrf = csrf_in(&page.text().await.unwrap());
    let r = http
        .post(a.url("/ui/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("cookie", form_cookie)
        .body(format!("token={TOKEN}&csrf={form_csrf}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "login on node a");
    let cookie = cookie_set_by(&r);

    let page = http
        .get(b.url("/ui/connectors/hss"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200, "node b takes node a's session");
    let body = page.text().await.unwrap();
    let csrf = csrf_in(&body);
    let r = http
        .post(b.url("/ui/connectors/hss/pause"))
        .header("cookie", &cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("csrf={csrf}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "an action on node b");
    let audit: Value = http
        .get(a.url("/v1/audit"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(audit[0]["action"], "connector.pause", "{audit}");
    assert_eq!(audit[0]["actor"], "ops", "{audit}");
    // Without the cookie, node b shows nothing but the way to log in.
    let r = http.get(b.url("/ui/")).send().await.unwrap();
    assert_eq!(r.status(), 303);
    let to = r.headers()["location"].to_str().unwrap();
    assert!(to.starts_with("/ui/login"), "{to}");
}

/// The `name=value` of the cookie a reply sets.
fn cookie_set_by(r: &reqwest::Response) -> String {
    let set = r.headers()["set-cookie"].to_str().unwrap();
    set.split(';').next().unwrap().to_string()
}

/// The value of a console page's first `csrf` field.
fn csrf_in(body: &str) -> String {
    let rest = body
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .expect("a CSRF field on the page");
    rest.split('"').next().unwrap().to_string()
}
