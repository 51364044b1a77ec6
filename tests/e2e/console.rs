//! The operator console in a real headless Chromium, against the real
//! gateway, as the README's operator would use it during an outage: log in,
//! find the connector that is down and how far behind it is, see why a
//! number is blocked, follow an event to its key, retry the dead letters of
//! one reason in bulk, pause and resume, upload a version and roll it back,
//! and find every action in the audit log; a payload's script never runs.
//! A screenshot of every page goes to `target/console-screenshots/`.

use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::{free_port, wasm, FakeHss, Gateway};
use crate::webdriver::Browser;

const ADMIN: &str = "ops-admin-token-0123456789";
const READ: &str = "noc-read-token-0123456789";
const INGEST: &str = "app-ingest-token-0123456789";

fn config(dir: &std::path::Path, port: u16, hss: std::net::SocketAddr) -> std::path::PathBuf {
    // `crm` points at a port nothing listens on: it is the one that is down.
    let down = free_port();
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:{port}"
[[server.tokens]]
name = "ops"
token = "{ADMIN}"
scopes = ["admin"]
[[server.tokens]]
name = "noc"
token = "{READ}"
scopes = ["read"]
[[server.tokens]]
name = "config-app"
token = "{INGEST}"
scopes = ["ingest"]

[storage]
url = "sqlite://{db}"

[dispatch]
poll_interval_ms = 100

[runtime]
cache_dir = "{cache}"

[[connectors]]
name = "hss"
component = "{wasm}"
routes = ["number.*"]
allowed_hosts = ["{hss}"]
[connectors.retry]
initial_backoff_ms = 50
max_backoff_ms = 500
[connectors.config]
url = "http://{hss}/op"

[[connectors]]
name = "crm"
component = "{wasm}"
routes = ["customer.*"]
allowed_hosts = ["127.0.0.1:{down}"]
[connectors.retry]
initial_backoff_ms = 50
max_backoff_ms = 200
[connectors.breaker]
failure_threshold = 2
probe_initial_ms = 60000
probe_max_ms = 60000
[connectors.config]
url = "http://127.0.0.1:{down}/customers"
"#,
        db = dir.join("sb.db").display(),
        cache = dir.join("cache").display(),
        wasm = wasm("webhook").display(),
    );
    let path = dir.join("console.toml");
    std::fs::write(&path, text).unwrap();
    path
}

async fn api(gw: &Gateway, method: &str, path: &str, token: &str, body: Value) -> Value {
    let c = reqwest::Client::new();
    let req = match method {
        "GET" => c.get(gw.url(path)),
        _ => c.post(gw.url(path)).json(&body),
    };
    let resp = req.bearer_auth(token).send().await.unwrap();
    resp.json().await.unwrap_or(Value::Null)
}

fn shots_dir() -> std::path::PathBuf {
    // <target>/debug/deps/e2e-… → <target>
    let exe = std::env::current_exe().unwrap();
    exe.ancestors().nth(3).unwrap().join("console-screenshots")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_works_an_outage_in_the_console_alone() {
    let dir = tempfile::tempdir().unwrap();
    let hss = FakeHss::default();
    let hss_addr = hss.start().await;
    let gw = Gateway::start(&config(dir.path(), free_port(), hss_addr));

    // The config app's events: a number moved badly (e2 assigns a number A
    // still holds: the register refuses it, 409, and it is held dead ahead of
    // the release), two more refused the same way, customer updates for the
    // CRM that is down, and an event whose id, key and payload carry script.
    let ev = |id: &str, op: &str, msisdn: &str, customer: &str| {
        json!({"id": id, "type": format!("number.{op}"), "keys": [format!("msisdn:{msisdn}")],
               "payload": {"op": op, "msisdn": msisdn, "customer": customer}})
    };
    let mut events = vec![
        ev("e1", "assign", "2065551234", "A"),
        ev("e2", "assign", "2065551234", "B"),
        ev("e3", "release", "2065551234", "A"),
        ev("f1", "assign", "2065550001", "C"),
        ev("f2", "assign", "2065550001", "D"),
        ev("g1", "assign", "2065550002", "C"),
        ev("g2", "assign", "2065550002", "D"),
    ];
    for i in 0..5 {
        events.push(json!({"id": format!("c{i}"), "type": "customer.update",
                           "keys": [format!("customer:C{i}")], "payload": {"plan": "gold"}}));
    }
    events.push(json!({"id": "x<img src=x onerror=\"window.__xss=1\">", "type": "customer.update",
        "keys": ["customer:<script>window.__xss=2</script>"],
        "payload": {"note": "</pre><script>window.__xss=3</script><img src=x onerror=\"window.__xss=4\">"}}));
    let r = api(&gw, "POST", "/v1/events", INGEST, json!(events)).await;
    assert_eq!(r["accepted"], 13, "{r}");

    let b = Browser::start(&shots_dir()).await;
    let base = gw.url("");

    // Log in: every page sends to the login first.
    b.goto(&format!("{base}/ui/")).await;
    assert!(b.url().await.contains("/ui/login"), "{}", b.url().await);
    b.screenshot("login").await;
    b.find("#token").await.send(ADMIN).await;
    b.find("form button[type=submit]").await.open().await;

    // The overview: the CRM is down, listed first, with how far behind it is.
    b.reload_until(
        "#connectors tbody tr:first-child",
        "down",
        Duration::from_secs(30),
    )
    .await;
    let first = b.text("#connectors tbody tr:first-child").await;
    assert!(first.starts_with("crm"), "{first}");
    assert!(first.contains(" 6 "), "6 pending for the CRM: {first}");
    assert!(
        first.contains(" s") || first.contains("min"),
        "oldest pending age: {first}"
    );
    // The plots draw from the stored per-minute counts.
    b.find(r#"figure[data-plot="hss"][data-drawn="1"] canvas"#)
        .await;
    assert!(!b.alert_open().await);
    b.screenshot("overview").await;

    // Why is msisdn:2065551234 blocked? From its event to its key.
    b.goto(&format!("{base}/ui/events/e3")).await;
    b.find("h1").await;
    b.screenshot("event").await;
    b.find(r#"a.key[href="/ui/keys/msisdn:2065551234"]"#)
        .await
        .open()
        .await;
    let why = b.find("section.lane p.why").await.text().await;
    assert!(why.contains("dead letter"), "{why}");
    let lane = b.text("section.lane").await;
    assert!(
        lane.contains("e2") && lane.contains("number 2065551234 in use"),
        "{lane}"
    );
    b.screenshot("key").await;

    // Dead letters of one reason, retried in bulk after a confirmation.
    b.goto(&format!("{base}/ui/dead-letters")).await;
    b.reload_until("#dead", "g2", Duration::from_secs(15)).await;
    b.screenshot("dead-letters").await;
    b.find(r#"input[name="reason"]"#)
        .await
        .send("in use by C")
        .await;
    b.find("form.filters button[type=submit]")
        .await
        .open()
        .await;
    let filtered = b.find("#dead").await.text().await;
    assert!(
        filtered.contains("f2") && filtered.contains("g2") && !filtered.contains("e2"),
        "{filtered}"
    );
    b.find(r#"form.bulk button[value="retry"]"#)
        .await
        .open()
        .await;
    assert!(b
        .find("h1")
        .await
        .text()
        .await
        .contains("Retry 2 dead letter(s)?"));
    b.screenshot("dead-letters-confirm").await;
    b.find("button.danger").await.open().await;
    let done = b.find("p.done").await.text().await;
    assert!(done.contains("Retried 2 of 2"), "{done}");

    // Pause and resume the HSS connector; upload a version and roll it back.
    b.goto(&format!("{base}/ui/connectors/hss")).await;
    b.find(r#"button[value="pause"]"#).await.open().await;
    b.find(r#"button[value="resume"]"#).await;
    let v = api(&gw, "GET", "/v1/connectors/hss", READ, Value::Null).await;
    assert_eq!(v["paused"], true, "{v}");
    b.screenshot("connector-paused").await;
    b.find(r#"button[value="resume"]"#).await.open().await;
    b.find(r#"button[value="pause"]"#).await;
    let v = api(&gw, "GET", "/v1/connectors/hss", READ, Value::Null).await;
    assert_eq!(v["paused"], false, "{v}");

    let next = wasm("webhook_next");
    b.find(r#"input[type="file"]"#)
        .await
        .send(next.to_str().unwrap())
        .await;
    b.find(r#"form[enctype="multipart/form-data"] button"#)
        .await
        .open()
        .await;
    b.reload_until("#versions tr.active", "2", Duration::from_secs(10))
        .await;
    let v = api(&gw, "GET", "/v1/connectors/hss", READ, Value::Null).await;
    assert_eq!(v["component"]["version"], 2, "{v}");
    b.find(r#"form[action="/ui/connectors/hss/rollback"] button"#)
        .await
        .open()
        .await;
    b.find("#versions").await;
    let v = api(&gw, "GET", "/v1/connectors/hss", READ, Value::Null).await;
    assert_eq!(v["component"]["version"], 1, "rolled back: {v}");
    b.screenshot("connector").await;

    // Nothing from a payload ran anywhere.
    let hostile_id = "x%3Cimg%20src%3Dx%20onerror%3D%22window.__xss%3D1%22%3E";
    b.goto(&format!("{base}/ui/events/{hostile_id}")).await;
    let h1 = b.find("h1").await.text().await;
    assert!(h1.contains("onerror"), "shown as text: {h1}");
    b.find("a.key").await.open().await;
    b.find("section.lane").await;
    b.goto(&format!("{base}/ui/dead-letters")).await;
    b.find("#dead").await;
    let ran = b
        .run("return [window.__xss === undefined, document.querySelectorAll('img').length, document.scripts.length];")
        .await;
    assert_eq!(ran, json!([true, 0, 2]), "no script from a payload ran");
    assert!(!b.alert_open().await);
    // The console itself works under its own policy: nothing was refused
    // and no script failed on any page so far.
    let log = b.console_log().await;
    assert!(
        !log.iter()
            .any(|l| l.contains("Content Security Policy") || l.contains("SEVERE")),
        "{log:#?}"
    );

    // Every action is in the audit log, under the session's token name.
    b.goto(&format!("{base}/ui/audit")).await;
    let audit = b.find("#audit").await.text().await;
    for action in [
        "delivery.retry",
        "connector.pause",
        "connector.resume",
        "component.deploy",
        "component.activate",
    ] {
        assert!(audit.contains(action), "{action} missing: {audit}");
    }
    assert!(audit.contains("ops"));
    b.screenshot("audit").await;

    // The plots' counts reach the store (every node writes them every 5 s):
    // e1, f1 and g1 were delivered to the HSS this minute.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let series = b
            .run_async(
                "const done = arguments[arguments.length - 1];
                 fetch('/ui/series.json').then(r => r.json()).then(done, e => done(String(e)));",
            )
            .await;
        let delivered: f64 = series["connectors"]["hss"]["delivered"]
            .as_array()
            .map_or(0.0, |m| m.iter().filter_map(Value::as_f64).sum());
        if delivered * 60.0 >= 2.99 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no counts recorded: {series}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // A read-only token sees it all and no action.
    b.find("form.logout button").await.open().await;
    b.find("#token").await.send(READ).await;
    b.find("form button[type=submit]").await.open().await;
    b.goto(&format!("{base}/ui/connectors/hss")).await;
    b.find("#versions").await;
    assert!(b.text("header .who").await.contains("read-only"));
    for action in [
        r#"button[value="pause"]"#,
        r#"form[action="/ui/connectors/hss/rollback"]"#,
        r#"input[type="file"]"#,
    ] {
        assert!(!b.exists(action).await, "read-only session sees {action}");
    }
    b.quit().await;
    drop(gw);
}
