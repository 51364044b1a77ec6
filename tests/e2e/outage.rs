//! A destination that is down while events keep arriving: the breaker keeps
//! attempts to a few probes instead of one per queued delivery, and when the
//! destination returns everything is delivered, in order per number.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::{cli, free_port, write_config_on, Db, FakeHss, Gateway};
use crate::reassign::check_order;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_costs_probes_not_attempts_per_delivery_and_loses_nothing_sqlite() {
    an_outage_costs_probes_not_attempts_per_delivery_and_loses_nothing(Db::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_costs_probes_not_attempts_per_delivery_and_loses_nothing_postgres() {
    an_outage_costs_probes_not_attempts_per_delivery_and_loses_nothing(Db::Postgres).await
}

async fn an_outage_costs_probes_not_attempts_per_delivery_and_loses_nothing(db: Db) {
    let dir = tempfile::tempdir().unwrap();
    let hss = FakeHss::default();
    hss.inner().fail_percent.store(100, Ordering::Relaxed);
    let addr = hss.start().await;
    let url = db.fresh_url(dir.path()).await;
    let config = write_config_on(&url, dir.path(), free_port(), addr, 16);
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "[connectors.retry]",
        "[connectors.breaker]\nprobe_max_ms = 2000\n\n[connectors.retry]",
    );
    std::fs::write(&config, text).unwrap();
    let gw = Gateway::start(&config);

    // 100 numbers, each assigned then released: 2,000 events during the outage.
    let http = reqwest::Client::new();
    let (numbers, steps) = (100, 20);
    for s in 0..steps {
        let batch: Vec<Value> = (0..numbers)
            .map(|m| {
                let op = if s % 2 == 0 { "assign" } else { "release" };
                json!({"id": format!("n{m}-s{s}"), "type": format!("number.{op}"),
                       "keys": [format!("msisdn:{m}")],
                       "payload": {"op": op, "msisdn": format!("{m}"), "customer": "A"}})
            })
            .collect();
        let r = http
            .post(gw.url("/v1/events"))
            .json(&batch)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
    }
    tokio::time::sleep(Duration::from_secs(6)).await;
    let during = hss.inner().requests.load(Ordering::Relaxed);
    // Without the breaker, 100 ready deliveries retrying every ≤ 300 ms would
    // make thousands of attempts in 6 s. With it: the first in-flight wave
    // (≤ concurrency) and then one probe per interval (1 s, 2 s, 2 s …).
    assert!(
        during <= 40,
        "{during} attempts against a dead destination in 6 s"
    );
    let v: Value = http
        .get(gw.url("/v1/connectors/hss"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_ne!(v["breaker"]["state"], "closed", "{v}");
    // `switchboard status` shows the open breaker and when it probes next.
    let (code, out, err) = cli(&gw, &["status", "--once"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.lines().any(
            |l| l.starts_with("hss") && (l.contains("open, probe in") || l.contains("probing"))
        ),
        "{out}"
    );

    // The destination comes back: everything is delivered, in order.
    hss.inner().fail_percent.store(0, Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(90);
    while hss.applied().len() < numbers * steps {
        assert!(hss.conflicts().is_empty(), "{:?}", hss.conflicts());
        assert!(
            Instant::now() < deadline,
            "only {} delivered",
            hss.applied().len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(hss.conflicts().is_empty(), "{:?}", hss.conflicts());
    check_order(&hss.applied(), numbers, steps);
}
