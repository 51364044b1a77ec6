//! Hot load under load: a new component version uploaded while events flow
//! (thousands before it and after it) is used for new deliveries at once;
//! nothing is lost or reordered; an invalid upload is refused without
//! disturbing the running version; rollback brings the previous version back.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::{cli, free_port, wasm, write_config_on, Db, Gateway, Recorder};

const V1: &str = "switchboard-webhook/0.1.0";
const V2: &str = "switchboard-webhook/0.2.0";

fn batch(from: usize, n: usize) -> Value {
    Value::Array(
        (from..from + n)
            .map(|i| {
                json!({"id": format!("e{i}"), "type": "number.update",
                       "keys": [format!("msisdn:{}", i % 200)],
                       "payload": {"msisdn": format!("{}", i % 200), "seq": i}})
            })
            .collect(),
    )
}

async fn post(http: &reqwest::Client, gw: &Gateway, body: &Value) {
    let r = http
        .post(gw.url("/v1/events"))
        .json(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap_or_default());
}

async fn wait_seen(up: &Recorder, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while up.seen().len() < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} delivered",
            up.seen().len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_version_under_load_is_used_at_once_and_rollback_restores_the_old_sqlite() {
    new_version_under_load_is_used_at_once_and_rollback_restores_the_old(Db::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_version_under_load_is_used_at_once_and_rollback_restores_the_old_postgres() {
    new_version_under_load_is_used_at_once_and_rollback_restores_the_old(Db::Postgres).await
}

async fn new_version_under_load_is_used_at_once_and_rollback_restores_the_old(db: Db) {
    let dir = tempfile::tempdir().unwrap();
    let up = Recorder::default();
    let addr = up.start().await;
    let url = db.fresh_url(dir.path()).await;
    let config = write_config_on(&url, dir.path(), free_port(), addr, 16);
    let gw = Gateway::start(&config);
    let http = reqwest::Client::new();
    // Load in the background until the upload has landed in the middle of
    // it, then `AFTER` more events: how many are posted before the deploy
    // returns depends on how long the gateway takes to compile the
    // component, so the load is not a fixed count that a fast ingest could
    // finish first.
    const BATCH: usize = 200;
    const BEFORE: usize = 3_000;
    const AFTER: usize = 4_000;
    const LIMIT: usize = 200_000;
    let posted = Arc::new(AtomicUsize::new(0));
    let deployed = Arc::new(AtomicUsize::new(usize::MAX));
    let loader = {
        let (http, url) = (http.clone(), gw.url("/v1/events"));
        let (posted, deployed) = (posted.clone(), deployed.clone());
        tokio::spawn(async move {
            let mut from = 0;
            while from < deployed.load(Ordering::SeqCst).saturating_add(AFTER) {
                assert!(
                    from < LIMIT,
                    "the deploy did not land within {LIMIT} events"
                );
                let r = http
                    .post(&url)
                    .json(&batch(from, BATCH))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 202);
                from += BATCH;
                posted.store(from, Ordering::SeqCst);
            }
            from
        })
    };
    while posted.load(Ordering::SeqCst) < BEFORE {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }

    // An invalid upload is refused with a clear error; the running version stays.
    let garbage = dir.path().join("garbage.wasm");
    std::fs::write(&garbage, b"\0asm definitely not a component").unwrap();
    let (code, _, err) = cli(
        &gw,
        &["connector", "deploy", "hss", garbage.to_str().unwrap()],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("invalid_component"), "{err}");
    let wrong = wasm("wrong_world");
    let (code, _, err) = cli(
        &gw,
        &["connector", "deploy", "hss", wrong.to_str().unwrap()],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("does not implement"), "{err}");

    let next = wasm("webhook_next");
    let started = Instant::now();
    let (code, out, err) = cli(&gw, &["connector", "deploy", "hss", next.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("deployed hss") && out.contains("0.2.0"),
        "{out}"
    );
    let deployed_at = posted.load(Ordering::SeqCst);
    deployed.store(deployed_at, Ordering::SeqCst);
    eprintln!(
        "deploy returned after {:?} with {deployed_at} events posted",
        started.elapsed()
    );
    let total = loader.await.unwrap();
    assert!(
        total >= deployed_at + AFTER,
        "the load went on after the deploy"
    );
    wait_seen(&up, total).await;

    let seen = up.seen();
    assert_eq!(seen.len(), total, "each event delivered once");
    // Nothing reordered per number.
    let mut last: HashMap<String, i64> = HashMap::new();
    for s in &seen {
        let msisdn = s.body["msisdn"].as_str().unwrap().to_string();
        let seq = s.body["seq"].as_i64().unwrap();
        if let Some(prev) = last.insert(msisdn.clone(), seq) {
            assert!(prev < seq, "msisdn {msisdn}: {seq} after {prev}");
        }
    }
    // Everything posted after the deploy returned ran on the new version.
    for s in &seen {
        let seq = s.body["seq"].as_i64().unwrap() as usize;
        if seq >= deployed_at + 200 {
            assert_eq!(
                s.user_agent, V2,
                "event {} ran on the old version",
                s.event_id
            );
        }
    }
    assert!(
        seen.iter().any(|s| s.user_agent == V1),
        "the first part ran on the old version"
    );

    // Versions are listed with digest and upload time; roll back to v1.
    let (code, out, _) = cli(&gw, &["--json", "connector", "versions", "hss"]);
    assert_eq!(code, 0);
    let versions: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(versions.as_array().unwrap().len(), 2, "{versions}");
    assert_eq!(versions[0]["active"], true);
    assert!(versions[0]["digest"]
        .as_str()
        .unwrap()
        .starts_with("sha256:"));
    let (code, out, err) = cli(&gw, &["connector", "rollback", "hss"]);
    assert_eq!(code, 0, "{out}{err}");
    post(&http, &gw, &batch(total, 100)).await;
    wait_seen(&up, total + 100).await;
    assert!(
        up.seen()[total..].iter().all(|s| s.user_agent == V1),
        "after rollback the old version runs"
    );

    // The registry survives a restart: the rolled-back version stays active.
    gw.terminate();
    let gw = Gateway::start(&config);
    let (_, out, _) = cli(&gw, &["--json", "connector", "show", "hss"]);
    let shown: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(shown["component"]["version"], 1, "{shown}");
    let (code, _, err) = cli(&gw, &["connector", "rollback", "nope"]);
    assert_eq!(code, 1, "{err}");
}
