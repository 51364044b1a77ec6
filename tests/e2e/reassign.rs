//! Numbers moving between customers, end to end: each move must de-register
//! the old holder before registering the new one, or the register refuses it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::{
    free_port, write_config_on, write_config_with, Applied, Db, FakeHss, Gateway,
};

/// Event `s` of number `m`: even steps assign to a customer, odd steps release.
fn event(m: usize, s: usize) -> Value {
    let customer = format!("C{}", (m + s / 2) % 7);
    let op = if s.is_multiple_of(2) {
        "assign"
    } else {
        "release"
    };
    json!({
        "id": format!("n{m}-s{s}"),
        "type": format!("number.{op}"),
        "keys": [format!("msisdn:{m}"), format!("customer:{customer}")],
        "payload": {"op": op, "msisdn": format!("{m}"), "customer": customer},
    })
}

/// Clients that each own some numbers and post their next event per number
/// in one batch, re-posting the same batch until it is acknowledged (as a
/// real client does when the gateway is unreachable). With several gateway
/// `bases`, client `c` posts step `s` to node `(c + s) % n` and moves on to
/// the next node while one does not answer (as behind a load balancer).
pub(crate) async fn post_all(
    bases: Vec<String>,
    numbers: usize,
    steps: usize,
    clients: usize,
    acked: Arc<AtomicUsize>,
) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let http = http.clone();
        let bases = bases.clone();
        let acked = acked.clone();
        tasks.push(tokio::spawn(async move {
            let mine: Vec<usize> = (c..numbers).step_by(clients).collect();
            for s in 0..steps {
                let batch: Vec<Value> = mine.iter().map(|&m| event(m, s)).collect();
                let mut target = c + s;
                loop {
                    let url = format!("{}/v1/events", bases[target % bases.len()]);
                    match http.post(&url).json(&batch).send().await {
                        Ok(r) if r.status() == 202 => {
                            let body: Value = r.json().await.unwrap();
                            let n = body["accepted"].as_u64().unwrap()
                                + body["duplicates"].as_u64().unwrap();
                            assert_eq!(n as usize, batch.len(), "{body}");
                            acked.fetch_add(batch.len(), Ordering::Relaxed);
                            break;
                        }
                        Ok(r) if r.status().is_client_error() => {
                            panic!(
                                "gateway refused a valid batch: {} {}",
                                r.status(),
                                r.text().await.unwrap_or_default()
                            )
                        }
                        _ => {
                            target += 1;
                            tokio::time::sleep(Duration::from_millis(50)).await
                        }
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

pub(crate) async fn wait_applied(hss: &FakeHss, want: usize, log: &std::path::Path) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let n = hss.applied().len();
        if n >= want {
            return;
        }
        assert!(
            hss.conflicts().is_empty(),
            "register refused out-of-order operations: {:?}",
            hss.conflicts()
        );
        if Instant::now() > deadline {
            panic!(
                "only {n} of {want} operations applied; gateway log:\n{}",
                std::fs::read_to_string(log)
                    .unwrap_or_default()
                    .lines()
                    .rev()
                    .take(60)
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every number's operations were applied exactly in posting order, each once.
pub(crate) fn check_order(applied: &[Applied], numbers: usize, steps: usize) {
    let mut per_number: HashMap<String, Vec<String>> = HashMap::new();
    for a in applied {
        per_number
            .entry(a.msisdn.clone())
            .or_default()
            .push(a.event_id.clone());
    }
    for m in 0..numbers {
        let want: Vec<String> = (0..steps).map(|s| format!("n{m}-s{s}")).collect();
        assert_eq!(per_number.get(&format!("{m}")), Some(&want), "number {m}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reassignments_arrive_in_order_through_a_flaky_register_sqlite() {
    reassignments_arrive_in_order_through_a_flaky_register(Db::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reassignments_arrive_in_order_through_a_flaky_register_postgres() {
    reassignments_arrive_in_order_through_a_flaky_register(Db::Postgres).await
}

async fn reassignments_arrive_in_order_through_a_flaky_register(db: Db) {
    let (_dir, gw) = moves_in_order_through(db, "webhook", 16, 40).await;
    // The gateway reports each event delivered.
    let v: Value = reqwest::get(gw.url("/v1/events/n3-s5"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["deliveries"][0]["state"], "delivered", "{v}");
    let status = gw.terminate();
    assert!(
        status.success(),
        "SIGTERM should be a clean exit, got {status}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_typescript_webhook_carries_number_moves_in_order() {
    polyglot_moves_in_order("webhook-ts").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_webhook_carries_number_moves_in_order() {
    polyglot_moves_in_order("webhook-py").await
}

/// The same keyed mix through the webhook connector built from another
/// language, and the deployed component is that build.
async fn polyglot_moves_in_order(component: &str) {
    let (_dir, gw) = moves_in_order_through(Db::Sqlite, component, 8, 30).await;
    let v: Value = reqwest::get(gw.url("/v1/connectors/hss"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        v["component"]["info"]["name"], "webhook",
        "{component}: {v}"
    );
    // The 13-19 MB build, not the 0.1 MB Rust one.
    let size = v["component"]["size_bytes"].as_i64().unwrap_or_default();
    assert!(size > 5_000_000, "{component}: {size} bytes");
}

/// `numbers` numbers moved six times each by four clients, through
/// `component` at `concurrency` into a register that refuses out-of-order
/// operations and fails 15% of calls with a 503: every operation applied
/// once, in posting order. Returns the running gateway (and its directory).
async fn moves_in_order_through(
    db: Db,
    component: &str,
    concurrency: usize,
    numbers: usize,
) -> (tempfile::TempDir, Gateway) {
    let dir = tempfile::tempdir().unwrap();
    let hss = FakeHss::default();
    hss.inner().fail_percent.store(15, Ordering::Relaxed);
    let hss_addr = hss.start().await;
    let url = db.fresh_url(dir.path()).await;
    let config = write_config_with(
        &url,
        dir.path(),
        free_port(),
        hss_addr,
        concurrency,
        component,
    );
    let gw = Gateway::start(&config);
    let steps = 6;
    post_all(
        vec![gw.url("")],
        numbers,
        steps,
        4,
        Arc::new(AtomicUsize::new(0)),
    )
    .await;
    wait_applied(&hss, numbers * steps, &gw.log).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        hss.conflicts().is_empty(),
        "{component}: {:?}",
        hss.conflicts()
    );
    check_order(&hss.applied(), numbers, steps);
    (dir, gw)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_load_loses_nothing_acknowledged_and_keeps_order_sqlite() {
    kill_9_mid_load_loses_nothing_acknowledged_and_keeps_order(Db::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_load_loses_nothing_acknowledged_and_keeps_order_postgres() {
    kill_9_mid_load_loses_nothing_acknowledged_and_keeps_order(Db::Postgres).await
}

async fn kill_9_mid_load_loses_nothing_acknowledged_and_keeps_order(db: Db) {
    let dir = tempfile::tempdir().unwrap();
    let hss = FakeHss::default();
    hss.inner().fail_percent.store(5, Ordering::Relaxed);
    let hss_addr = hss.start().await;
    let port = free_port();
    let url = db.fresh_url(dir.path()).await;
    let config = write_config_on(&url, dir.path(), port, hss_addr, 16);
    let gw = Gateway::start(&config);
    let (numbers, steps) = (60, 8);
    // The restarted gateway listens on the same address.
    let bases = vec![gw.url("")];
    let acked = Arc::new(AtomicUsize::new(0));
    let load = tokio::spawn(post_all(bases, numbers, steps, 6, acked.clone()));

    // Let a third of the load be acknowledged (and some delivered), then kill.
    while acked.load(Ordering::Relaxed) < numbers * steps / 3 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let log1 = gw.log.clone();
    gw.kill9();
    let at_kill = hss.applied().len();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let gw = Gateway::start(&config);
    load.await.unwrap();
    wait_applied(&hss, numbers * steps, &gw.log).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        hss.conflicts().is_empty(),
        "out of order after a crash: {:?}\nfirst log:\n{}",
        hss.conflicts(),
        std::fs::read_to_string(log1).unwrap_or_default()
    );
    check_order(&hss.applied(), numbers, steps);
    assert!(at_kill < numbers * steps, "the kill should land mid-load");
}
