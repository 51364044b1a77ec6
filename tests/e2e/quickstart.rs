//! What `make run` does on a fresh machine: `switchboard serve --config
//! quickstart.toml`, with the file exactly as shipped, from a directory
//! holding nothing else but the built connectors (`target`, linked in). Its
//! paths are relative (the component, the database, the compile cache
//! beside it), so they all resolve in that directory.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::{free_port, wasm, Gateway};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quick_start_config_serves_as_shipped_from_a_fresh_directory() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    // <target>/wasm32-wasip2/release/webhook.wasm → <target>
    let target = wasm("webhook").ancestors().nth(3).unwrap().to_path_buf();
    let dir = tempfile::tempdir().unwrap();
    // The file as shipped, beside the built connectors: its relative paths
    // (component, database, cache) all resolve in this directory.
    std::fs::copy(
        repo.join("quickstart.toml"),
        dir.path().join("quickstart.toml"),
    )
    .unwrap();
    std::os::unix::fs::symlink(&target, dir.path().join("target")).unwrap();

    let listen = format!("127.0.0.1:{}", free_port());
    let args = ["--config", "quickstart.toml", "--listen", &listen];
    let gw = Gateway::start_in(dir.path(), &args);

    // Created relative to the working directory, as the README says.
    assert!(dir.path().join("switchboard.db").is_file());
    assert!(dir.path().join("switchboard-cache").is_dir());

    let client = reqwest::Client::new();
    let event = json!({"id": "evt-000123", "type": "number.assign",
                       "keys": ["msisdn:2065551234", "customer:A2"],
                       "payload": {"msisdn": "2065551234", "customer": "A2"}});
    let resp = client
        .post(gw.url("/v1/events"))
        .json(&event)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["accepted"], 1, "{body}");

    let connector = gw.get_json("/v1/connectors/webhook").await;
    assert!(
        connector.to_string().contains("sha256:"),
        "the quick-start connector runs a component: {connector}"
    );

    // Nothing listens on the quick-start receiver's port here (or something
    // unrelated does): either way the delivery is attempted and kept.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ev = gw.get_json("/v1/events/evt-000123").await;
        let d = &ev["deliveries"][0];
        if d["attempts"].as_u64().unwrap_or(0) >= 1 {
            break;
        }
        assert!(Instant::now() < deadline, "never attempted: {ev}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The sandbox's instance slots are on /metrics (no tokens: loopback).
    let metrics = gw.get_text("/metrics").await;
    assert!(
        metrics
            .lines()
            .any(|l| l == "switchboard_sandbox_slots 500"),
        "{metrics}"
    );
    for name in [
        "switchboard_sandbox_slots_in_use ",
        "switchboard_sandbox_slot_waits_total 0",
        "switchboard_sandbox_slot_timeouts_total 0",
    ] {
        assert!(metrics.lines().any(|l| l.starts_with(name)), "{name}");
    }

    // One runtime worker per core by default; `server.workers` sets it.
    let cores = std::thread::available_parallelism().unwrap().get();
    let workers = format!("switchboard_runtime_workers {cores}");
    assert!(metrics.lines().any(|l| l == workers), "{metrics}");

    // A restart serves the same directory again and finds its compile cache.
    assert!(gw.terminate().success());
    let workers = [("SWITCHBOARD_SERVER__WORKERS", "1")];
    let gw = Gateway::start_in_with(dir.path(), &args, &workers);
    let resp = client.get(gw.url("/readyz")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let metrics = gw.get_text("/metrics").await;
    assert!(
        metrics
            .lines()
            .any(|l| l == "switchboard_component_cache_hits_total 1"),
        "the restart recompiled: {metrics}"
    );
    assert!(metrics
        .lines()
        .any(|l| l == "switchboard_component_cache_misses_total 0"));
    assert!(metrics
        .lines()
        .any(|l| l == "switchboard_runtime_workers 1"));
}

#[test]
fn a_config_mistake_is_one_line_naming_its_source_and_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .arg("serve")
        .current_dir(dir.path())
        .env("SWITCHBOARD_SERVER__LISTNE", "127.0.0.1:7400")
        // However the operator's shell is set up: a typo is not a crash.
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(
        lines[0].starts_with(
            "error: environment variable SWITCHBOARD_SERVER__LISTNE: unknown field `listne`"
        ),
        "{err}"
    );
    assert!(
        !dir.path().join("switchboard.db").exists(),
        "nothing was created"
    );
}
