//! Recovery in seconds, with the real binary: a gateway `kill -9`ed and
//! restarted takes back what it held in flight at once, and a node that dies
//! for good has its in-flight work taken over by the others once its
//! heartbeat is old, both long before the leases (two minutes here) end.
//! One gateway per SQLite database: a second is refused.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::harness::{free_port, write_config_on, Db, FakeHss, Gateway};
use crate::reassign::{check_order, post_all, wait_applied};

/// Far longer than any recovery below may take: what moves on before it
/// was taken back, not rescued at the lease's end.
const LEASE_MS: u64 = 120_000;

/// The harness's config with two-minute leases and `cluster` settings.
fn config(url: &str, dir: &Path, port: u16, hss: std::net::SocketAddr, cluster: &str) -> PathBuf {
    let path = write_config_on(url, dir, port, hss, 4);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("lease_ms = 3000"), "{text}");
    let text = text.replace("lease_ms = 3000", &format!("lease_ms = {LEASE_MS}"));
    std::fs::write(&path, format!("{text}\n[cluster]\n{cluster}\n")).unwrap();
    path
}

fn log_of(gw: &Gateway) -> String {
    std::fs::read_to_string(&gw.log).unwrap_or_default()
}

/// Waits until the node listening on `port` holds at least `n` leases.
async fn wait_holding(pool: &sqlx::PgPool, port: u16, n: i64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let held: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM deliveries WHERE state = 'in_flight' AND lease_owner LIKE $1",
        )
        .bind(format!("%:{port}"))
        .fetch_one(pool)
        .await
        .unwrap();
        if held >= n {
            return;
        }
        assert!(Instant::now() < deadline, "the node never held {n} leases");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits for every operation at the register through `gw`, then checks
/// that it took well under a lease (`since`: the kill or the restart) and
/// that `gw` logged `line`.
async fn delivered_before_the_leases_end(
    hss: &FakeHss,
    want: usize,
    gw: &Gateway,
    since: Instant,
    line: &str,
) {
    wait_applied(hss, want, &gw.log).await;
    let took = since.elapsed();
    eprintln!("everything was delivered {took:?} after the kill or restart");
    assert!(
        took < Duration::from_millis(LEASE_MS / 2),
        "in-flight lanes waited for their leases ({took:?})"
    );
    let log = log_of(gw);
    assert!(log.contains(line), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_gateway_on_one_sqlite_database_is_refused_and_names_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let hss = FakeHss::default().start().await;
    let url = Db::Sqlite.fresh_url(dir.path()).await;
    let first = Gateway::start(&config(&url, dir.path(), free_port(), hss, ""));
    let second = config(&url, dir.path(), free_port(), hss, "");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .args(["serve", "--config"])
            .arg(&second)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("sb.db is in use by another switchboard process")
            && err.contains(&format!("(pid {})", first.pid())),
        "{err}"
    );
    // The first one is untouched.
    assert_eq!(
        reqwest::get(first.url("/healthz")).await.unwrap().status(),
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_and_restart_moves_in_flight_lanes_on_at_once_sqlite() {
    kill_9_and_restart_moves_in_flight_lanes_on_at_once(Db::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_and_restart_moves_in_flight_lanes_on_at_once_postgres() {
    kill_9_and_restart_moves_in_flight_lanes_on_at_once(Db::Postgres).await
}

async fn kill_9_and_restart_moves_in_flight_lanes_on_at_once(db: Db) {
    let dir = tempfile::tempdir().unwrap();
    let hss = FakeHss::default();
    // Every attempt takes a while: the kill finds some in flight.
    hss.inner().delay_ms.store(300, Ordering::Relaxed);
    let hss_addr = hss.start().await;
    let url = db.fresh_url(dir.path()).await;
    let config = config(&url, dir.path(), free_port(), hss_addr, "");
    let gw = Gateway::start(&config);
    let (numbers, steps) = (16, 6);
    let acked = Arc::new(AtomicUsize::new(0));
    post_all(vec![gw.url("")], numbers, steps, 4, acked.clone()).await;
    while hss.inner().requests.load(Ordering::Relaxed) < 8 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let first_log = gw.log.clone();
    gw.kill9();
    assert!(
        hss.applied().len() < numbers * steps,
        "the kill should land mid-delivery"
    );
    hss.inner().delay_ms.store(0, Ordering::Relaxed);
    let restarted = Instant::now();
    let gw = Gateway::start(&config);
    delivered_before_the_leases_end(
        &hss,
        numbers * steps,
        &gw,
        restarted,
        "re-queued the deliveries this node's previous run left in flight",
    )
    .await;
    assert!(
        hss.conflicts().is_empty(),
        "out of order after a restart: {:?}\nfirst log:\n{}",
        hss.conflicts(),
        std::fs::read_to_string(first_log).unwrap_or_default()
    );
    check_order(&hss.applied(), numbers, steps);
}

/// Two nodes on PostgreSQL; one dies for good holding leases. Its lanes
/// deliver again through the other once its heartbeat is older than
/// `node_timeout_ms + fence_margin_ms` (2.5 s here), not after two minutes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_dies_for_good_has_its_lanes_taken_over_in_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let hss = FakeHss::default();
    hss.inner().delay_ms.store(300, Ordering::Relaxed);
    let hss_addr = hss.start().await;
    let url = Db::Postgres.fresh_url(dir.path()).await;
    let cluster = "node_timeout_ms = 2000\nfence_margin_ms = 500";
    let configs: Vec<_> = (0..2)
        .map(|_| config(&url, dir.path(), free_port(), hss_addr, cluster))
        .collect();
    let doomed = Gateway::start(&configs[0]);
    let survivor = Gateway::start(&configs[1]);
    let (numbers, steps) = (16, 6);
    let acked = Arc::new(AtomicUsize::new(0));
    post_all(
        vec![doomed.url(""), survivor.url("")],
        numbers,
        steps,
        4,
        acked.clone(),
    )
    .await;
    // The doomed node holds leases when it dies.
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    wait_holding(&pool, doomed.addr.port(), 1).await;
    doomed.kill9();
    let killed = Instant::now();
    hss.inner().delay_ms.store(0, Ordering::Relaxed);
    delivered_before_the_leases_end(
        &hss,
        numbers * steps,
        &survivor,
        killed,
        "took over the in-flight deliveries of nodes gone silent",
    )
    .await;
    assert!(hss.conflicts().is_empty(), "{:?}", hss.conflicts());
    check_order(&hss.applied(), numbers, steps);
}

fn signal(gw: &Gateway, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &gw.pid().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig}");
}

/// A node frozen (SIGSTOP) past the bound while it holds leases: the other
/// takes its work over and delivers it; when the frozen one resumes
/// (SIGCONT) with attempts that were waiting to send, not one request
/// leaves it, no delivery ends twice, and the register sees every number's
/// operations in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_node_sends_nothing_for_work_taken_over_when_it_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let hss = FakeHss::default();
    hss.inner().delay_ms.store(500, Ordering::Relaxed);
    let hss_addr = hss.start().await;
    let url = Db::Postgres.fresh_url(dir.path()).await;
    let cluster = "node_timeout_ms = 2000\nfence_margin_ms = 500";
    // The node to freeze runs one call at a time with four claimed: when
    // it resumes, three attempts are still waiting for the sandbox, well
    // within their deadline, ready to send.
    let frozen_config = config(&url, dir.path(), free_port(), hss_addr, cluster);
    let text = std::fs::read_to_string(&frozen_config).unwrap();
    let text = text
        .replace("[runtime]\n", "[runtime]\nmax_instances = 1\n")
        .replace("deadline_ms = 2000", "deadline_ms = 60000");
    std::fs::write(&frozen_config, text).unwrap();
    let frozen = Gateway::start(&frozen_config);
    let other = Gateway::start(&config(&url, dir.path(), free_port(), hss_addr, cluster));
    let (numbers, steps) = (16, 4);
    let acked = Arc::new(AtomicUsize::new(0));
    post_all(vec![frozen.url("")], numbers, steps, 4, acked.clone()).await;
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    wait_holding(&pool, frozen.addr.port(), 3).await;
    signal(&frozen, "-STOP");
    hss.inner().delay_ms.store(0, Ordering::Relaxed);
    wait_applied(&hss, numbers * steps, &other.log).await;
    // The other node is idle now: every request from here on would be the
    // frozen node's.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = hss.inner().requests.load(Ordering::Relaxed);
    signal(&frozen, "-CONT");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = hss.inner().requests.load(Ordering::Relaxed);
    let log = log_of(&frozen);
    assert_eq!(
        after, before,
        "the resumed node sent requests for work taken over; its log:\n{log}"
    );
    assert!(log.contains("attempt abandoned"), "{log}");
    assert!(hss.conflicts().is_empty(), "{:?}", hss.conflicts());
    check_order(&hss.applied(), numbers, steps);
    let unfinished: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM deliveries WHERE state <> 'delivered'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(unfinished, 0);
    let twice: Vec<i64> = sqlx::query_scalar(
        "SELECT delivery_id FROM attempts WHERE outcome = 'delivered' \
         GROUP BY delivery_id HAVING COUNT(*) > 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(twice.is_empty(), "delivered twice: {twice:?}");
    // It works again once its heartbeat is confirmed.
    hss.inner().delay_ms.store(0, Ordering::Relaxed);
    let http = reqwest::Client::new();
    let r = http
        .post(frozen.url("/v1/events"))
        .json(&serde_json::json!({"id": "after", "type": "number.assign",
            "keys": ["msisdn:999"],
            "payload": {"op": "assign", "msisdn": "999", "customer": "C9"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !hss.applied().iter().any(|a| a.event_id == "after") {
        assert!(
            Instant::now() < deadline,
            "nothing delivered after resuming"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
