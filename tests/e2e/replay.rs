//! A replay through the real binary: events delivered once, then asked for
//! again with the CLI; the gateway's own replay worker copies them, and the
//! destination receives them a second time, as new deliveries, in accept
//! order; `replay list` shows it done.

use std::time::{Duration, Instant};

use crate::harness::{cli, free_port, wasm, write_config, FakeHss, Gateway, Recorder};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_delivered_once_are_replayed_in_order_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let up = Recorder::default();
    let up_addr = up.start().await;
    let hss = FakeHss::default();
    let hss_addr = hss.start().await;
    let gw = Gateway::start(&write_config(dir.path(), free_port(), hss_addr, 4));
    let http = reqwest::Client::new();
    let settings = serde_json::json!({
        "routes": ["quota.*"],
        "allowed_hosts": [up_addr.to_string()],
        "config": {"url": format!("http://{up_addr}/op")},
    });
    let r = http
        .put(gw.url("/v1/connectors/sms"))
        .json(&settings)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
    let r = http
        .put(gw.url("/v1/connectors/sms/component"))
        .body(std::fs::read(wasm("webhook")).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());

    let events: Vec<serde_json::Value> = (0..10)
        .map(|i| serde_json::json!({"id": format!("q{i}"), "type": "quota.reached", "keys": ["msisdn:1"], "payload": {"n": i}}))
        .collect();
    let r = http
        .post(gw.url("/v1/events"))
        .json(&events)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let wait = |n: usize, what: &'static str| {
        let up = up.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            while up.seen().len() < n {
                assert!(
                    Instant::now() < deadline,
                    "{what}: {} of {n}",
                    up.seen().len()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    wait(10, "first deliveries").await;

    let (code, out, err) = cli(
        &gw,
        &[
            "replay",
            "start",
            "sms",
            "--since",
            "2000-01-01T00:00",
            "--rate",
            "1000",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("running") && out.contains("sms"), "{out}");
    wait(20, "replayed deliveries").await;
    let ids: Vec<String> = up.seen().iter().map(|s| s.event_id.clone()).collect();
    let want: Vec<String> = (0..10).map(|i| format!("q{i}~replay-1")).collect();
    assert_eq!(ids[10..], want[..], "again, in accept order");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (code, out, err) = cli(&gw, &["replay", "list"]);
        assert_eq!(code, 0, "{err}");
        if out.contains("done") {
            assert!(out.contains("100%"), "{out}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the replay never finished: {out}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (code, _, err) = cli(&gw, &["replay", "cancel", "1"]);
    assert_eq!(code, 1, "a finished replay is not cancelled: {err}");
    assert!(err.contains("already"), "{err}");
}
