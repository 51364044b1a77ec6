//! The operator CLI against a running gateway: a rejected reassignment
//! becomes a dead letter that holds its number; the operator finds out why the
//! number is blocked, skips the dead letter, and the lane moves on — with an
//! audit record and the exit codes scripts rely on.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::{cli, free_port, write_config, FakeHss, Gateway};

async fn state_of(gw: &Gateway, id: &str) -> String {
    let v: Value = reqwest::get(gw.url(&format!("/v1/events/{id}")))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["deliveries"][0]["state"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

async fn wait_state(gw: &Gateway, id: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while state_of(gw, id).await != want {
        assert!(
            Instant::now() < deadline,
            "{id} never became {want} (is {})",
            state_of(gw, id).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_finds_and_clears_a_dead_letter_with_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let hss = FakeHss::default();
    let addr = hss.start().await;
    let gw = Gateway::start(&write_config(dir.path(), free_port(), addr, 4));
    let ev = |id: &str, op: &str, customer: &str| {
        json!({"id": id, "type": format!("number.{op}"), "keys": ["msisdn:7"],
               "payload": {"op": op, "msisdn": "7", "customer": customer}})
    };
    // e2 assigns a number that is still held: the register refuses it (409 → dead).
    let events = json!([
        ev("e1", "assign", "A"),
        ev("e2", "assign", "B"),
        ev("e3", "release", "A")
    ]);
    let file = dir.path().join("events.json");
    std::fs::write(&file, events.to_string()).unwrap();
    let (code, out, err) = cli(&gw, &["event", "send", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("accepted 3"), "{out}");
    wait_state(&gw, "e2", "dead").await;
    assert_eq!(state_of(&gw, "e3").await, "blocked");

    let (code, out, _) = cli(&gw, &["key", "why", "msisdn:7"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("hss: head is delivery") && out.contains("(event e2) dead"),
        "{out}"
    );
    assert!(
        out.contains("409") && out.contains("1 waiting behind it"),
        "{out}"
    );

    let (code, out, _) = cli(&gw, &["--json", "dlq", "list", "--connector", "hss"]);
    assert_eq!(code, 0);
    let dead: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(dead.as_array().unwrap().len(), 1, "{dead}");
    let id = dead[0]["delivery_id"].as_i64().unwrap().to_string();

    let (code, _, err) = cli(&gw, &["dlq", "skip", "999999"]);
    assert_eq!(
        code, 1,
        "skipping a delivery that is not dead is refused: {err}"
    );
    let (code, _, err) = cli(&gw, &["dlq", "skip", &id, "--all"]);
    assert_eq!(code, 2, "ids and --all together is a usage error: {err}");
    let (code, out, err) = cli(&gw, &["dlq", "skip", &id]);
    assert_eq!(code, 0, "{out}{err}");
    wait_state(&gw, "e3", "delivered").await;

    let (code, out, _) = cli(&gw, &["audit"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("local") && out.contains("delivery.skip") && out.contains(&id),
        "{out}"
    );
    let (code, out, _) = cli(&gw, &["status", "--once"]);
    assert_eq!(code, 0);
    assert!(
        out.lines()
            .any(|l| l.starts_with("hss") && l.contains(" 2 ")),
        "{out}"
    );
    let (code, out, _) = cli(&gw, &["event", "show", "e2"]);
    assert_eq!(code, 0);
    assert!(out.contains("skipped"), "{out}");

    // Exit codes: not found → 1, unreachable → 3.
    let (code, _, _) = cli(&gw, &["event", "show", "no-such-event"]);
    assert_eq!(code, 1);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["--url", "http://127.0.0.1:1", "connector", "list"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tokens_the_cli_needs_one_and_the_audit_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let hss = FakeHss::default();
    let addr = hss.start().await;
    let config = write_config(dir.path(), free_port(), addr, 4);
    let mut text = std::fs::read_to_string(&config).unwrap();
    text = text.replace(
        "[storage]",
        "[[server.tokens]]\nname = \"ops-alice\"\ntoken = \"alice-0123456789-secret\"\nscopes = [\"admin\"]\n\n[storage]",
    );
    std::fs::write(&config, text).unwrap();
    let gw = Gateway::start(&config);
    let (code, _, err) = cli(&gw, &["connector", "list"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("401") && err.contains("unauthorized"), "{err}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["--url", &gw.url(""), "connector", "rollback", "hss"])
        .env("SWITCHBOARD_TOKEN", "alice-0123456789-secret")
        .output()
        .unwrap();
    // Only one version is stored, so the rollback itself is refused (409) —
    // but it got past authentication.
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("no_previous_version"), "{err}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["--url", &gw.url(""), "audit", "--json"])
        .env("SWITCHBOARD_TOKEN", "alice-0123456789-secret")
        .output()
        .unwrap();
    let audit: Value = serde_json::from_slice(&out.stdout).unwrap();
    // The start-up deploy of the configured file is recorded as "config".
    assert_eq!(audit[0]["action"], "component.deploy", "{audit}");
    assert_eq!(audit[0]["actor"], "config");
    let log = std::fs::read_to_string(&gw.log).unwrap();
    assert!(
        !log.contains("alice-0123456789-secret"),
        "tokens never reach the log"
    );
}

#[test]
fn connector_new_scaffolds_a_crate_and_refuses_bad_names() {
    let dir = tempfile::tempdir().unwrap();
    let run = |name: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .args(["connector", "new", name, "--dir"])
            .arg(dir.path())
            .output()
            .unwrap()
    };
    let out = run("billing");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let crate_dir = dir.path().join("billing");
    for f in [
        "Cargo.toml",
        "src/lib.rs",
        "tests/connector.rs",
        "README.md",
    ] {
        assert!(crate_dir.join(f).exists(), "{f} missing");
    }
    let manifest = std::fs::read_to_string(crate_dir.join("Cargo.toml")).unwrap();
    assert!(manifest.contains("switchboard-sdk"), "{manifest}");
    let again = run("billing");
    assert_eq!(
        again.status.code(),
        Some(2),
        "an existing crate is never overwritten"
    );
    assert_eq!(run("Bad Name").status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_connector_accepts_and_queues_then_delivers_on_resume() {
    let dir = tempfile::tempdir().unwrap();
    let hss = FakeHss::default();
    let addr = hss.start().await;
    let gw = Gateway::start(&write_config(dir.path(), free_port(), addr, 4));
    let (code, out, _) = cli(&gw, &["connector", "pause", "hss"]);
    assert_eq!(code, 0);
    assert!(out.contains("PAUSED"), "{out}");
    let (code, out, _) = cli(&gw, &["status", "--once"]);
    assert_eq!(code, 0);
    assert!(
        out.lines()
            .any(|l| l.starts_with("hss") && l.contains("PAUSED")),
        "{out}"
    );
    let ev = json!({"id": "p1", "type": "number.assign", "keys": ["msisdn:9"],
                    "payload": {"op": "assign", "msisdn": "9", "customer": "A"}});
    let r = reqwest::Client::new()
        .post(gw.url("/v1/events"))
        .json(&ev)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        hss.inner()
            .requests
            .load(std::sync::atomic::Ordering::Relaxed),
        0,
        "nothing attempted while paused"
    );
    assert_eq!(state_of(&gw, "p1").await, "ready");
    let (code, _, _) = cli(&gw, &["connector", "resume", "hss"]);
    assert_eq!(code, 0);
    wait_state(&gw, "p1", "delivered").await;
}
