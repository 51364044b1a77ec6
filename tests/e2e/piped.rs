//! The operator CLI as a script sees it: stdout and stderr are pipes. Nothing
//! carries an escape code (the gateway's log file neither), `status` prints
//! one snapshot and exits by itself, every numeric column ends exactly under
//! its header however long a connector's name or health text is, `--format
//! json` is JSON for every command, and a reader that stops early (`| head`)
//! is not a crash.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::{free_port, wasm, write_config, FakeHss, Gateway};

/// Longer than any fixed column width the tables ever had.
const LONG: &str = "billing-and-provisioning-eu-west-1";

/// The usual `hss` connector plus [`LONG`], on the same routes.
fn two_connectors(dir: &Path, hss: std::net::SocketAddr) -> PathBuf {
    let config = write_config(dir, free_port(), hss, 4);
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        r#"
[[connectors]]
name = "{LONG}"
component = "{wasm}"
routes = ["number.*"]
allowed_hosts = ["{hss}"]

[connectors.limits]
deadline_ms = 2000

[connectors.config]
url = "http://{hss}/op"
"#,
        wasm = wasm("webhook").display(),
    ));
    std::fs::write(&config, text).unwrap();
    config
}

/// The CLI with stdout and stderr piped, in an environment that would allow
/// colour (NO_COLOR unset, a colour-capable TERM): only the pipe says no.
fn command(gw: &Gateway, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchboard"));
    cmd.arg("--url")
        .arg(gw.url(""))
        .args(args)
        .env_remove("NO_COLOR")
        .env("TERM", "xterm-256color")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Runs a command that must end by itself within 20 s; its stdout, checked
/// for escape codes in both streams and for success.
fn run(gw: &Gateway, args: &[&str]) -> String {
    let mut child = command(gw, args).spawn().unwrap();
    // Drained as they are written, so a long answer cannot fill a pipe and
    // pass for a command that does not exit.
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let stdout = std::thread::spawn(move || read_all(stdout));
    let stderr = std::thread::spawn(move || read_all(stderr));
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let out = String::from_utf8_lossy(&stdout.join().unwrap()).into_owned();
            panic!(
                "`switchboard {}` with stdout piped did not exit by itself; it printed:\n{out:?}",
                args.join(" ")
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = String::from_utf8_lossy(&stdout.join().unwrap()).into_owned();
    let err = String::from_utf8_lossy(&stderr.join().unwrap()).into_owned();
    assert!(
        status.success(),
        "`switchboard {}`: {status}\n{out}{err}",
        args.join(" ")
    );
    for (name, text) in [("stdout", &out), ("stderr", &err)] {
        assert!(
            !text.contains('\x1b'),
            "`switchboard {}` wrote an escape code to a piped {name}: {text:?}",
            args.join(" ")
        );
    }
    out
}

fn read_all(stream: Option<impl Read>) -> Vec<u8> {
    let mut buf = Vec::new();
    if let Some(mut s) = stream {
        s.read_to_end(&mut buf).unwrap();
    }
    buf
}

/// Each of `right` ends, on every row, in the header's last column, with a
/// value there (a number, an age such as `42s`, or `-`); each of `left`
/// starts, on every row, in the header's first column.
fn assert_columns(table: &str, right: &[&str], left: &[&str]) {
    let mut lines = table.lines();
    let header = lines.next().unwrap_or_default();
    let rows: Vec<Vec<char>> = lines.map(|l| l.chars().collect()).collect();
    assert!(!rows.is_empty(), "no rows under the header:\n{table}");
    let at = |name: &str| {
        header
            .find(name)
            .unwrap_or_else(|| panic!("no {name} column in the header:\n{table}"))
    };
    for name in right {
        let end = at(name) + name.len();
        for row in &rows {
            let value: String = row[..end.min(row.len())]
                .iter()
                .rev()
                .take_while(|c| **c != ' ')
                .collect();
            let value: String = value.chars().rev().collect();
            assert!(
                row.len() >= end
                    && row.get(end).is_none_or(|c| *c == ' ')
                    && (value == "-" || value.starts_with(|c: char| c.is_ascii_digit())),
                "{name}: {value:?} does not end under its header in\n{table}"
            );
        }
    }
    for name in left {
        let start = at(name);
        for row in &rows {
            assert!(
                start > 0
                    && row.get(start - 1) == Some(&' ')
                    && row.get(start).is_some_and(|c| *c != ' '),
                "{name}: a value does not start under its header in\n{table}"
            );
        }
    }
}

async fn counts(gw: &Gateway, name: &str) -> Value {
    gw.get_json(&format!("/v1/connectors/{name}")).await["deliveries"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn piped_output_has_no_escape_codes_status_exits_and_columns_align() {
    let dir = tempfile::tempdir().unwrap();
    let hss = FakeHss::default();
    let addr = hss.start().await;
    let gw = Gateway::start(&two_connectors(dir.path(), addr));
    // LONG queues everything; hss delivers twelve, refuses one (a number
    // still held: 409, dead) and holds the one behind it: counts of one and
    // two digits side by side.
    run(&gw, &["connector", "pause", LONG]);
    let ev = |id: String, op: &str, msisdn: &str, customer: &str| {
        json!({"id": id, "type": format!("number.{op}"), "keys": [format!("msisdn:{msisdn}")],
               "payload": {"op": op, "msisdn": msisdn, "customer": customer}})
    };
    let mut events = vec![
        ev("e1".into(), "assign", "7", "A"),
        ev("e2".into(), "assign", "7", "B"),
        ev("e3".into(), "release", "7", "A"),
    ];
    events.extend((0..12).map(|i| ev(format!("n{i}"), "assign", &format!("10{i}"), "A")));
    let file = dir.path().join("events.json");
    std::fs::write(&file, Value::Array(events).to_string()).unwrap();
    run(&gw, &["event", "send", file.to_str().unwrap()]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let d = counts(&gw, "hss").await;
        if d["delivered"] == 13 && d["dead"] == 1 && d["blocked"] == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "hss never settled: {d}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // `status` without --once: one snapshot, then it exits.
    let status = run(&gw, &["status"]);
    let numeric = [
        "READY",
        "BLOCKED",
        "IN FLIGHT",
        "DEAD",
        "EXPIRED",
        "DELIVERED",
        "PER SEC",
        "OLDEST",
    ];
    assert_columns(&status, &numeric, &["HEALTH"]);
    assert_eq!(status.lines().count(), 3, "{status}");
    assert!(
        status
            .lines()
            .any(|l| l.starts_with(LONG) && l.contains("PAUSED")),
        "{status}"
    );
    let snapshot: Value = serde_json::from_str(&run(&gw, &["status", "--format", "json"]))
        .expect("`status --format json` piped is one JSON document");
    assert_eq!(snapshot.as_array().unwrap().len(), 2, "{snapshot}");

    let list = run(&gw, &["connector", "list"]);
    assert_columns(
        &list,
        &["READY", "BLOCKED", "IN FLIGHT", "DEAD", "DELIVERED"],
        &["COMPONENT", "HEALTH"],
    );
    assert_eq!(list.lines().count(), 3, "{list}");
    assert_columns(
        &run(&gw, &["connector", "show", LONG]),
        &["READY", "DELIVERED"],
        &["HEALTH"],
    );
    assert_columns(
        &run(&gw, &["connector", "versions", "hss"]),
        &["VERSION", "BYTES"],
        &["DIGEST"],
    );
    assert_columns(
        &run(&gw, &["dlq", "list"]),
        &["ID", "ATTEMPTS"],
        &["EVENT", "LAST ERROR"],
    );
    assert_columns(&run(&gw, &["audit"]), &[], &["ACTOR", "ACTION", "TARGET"]);
    assert_columns(
        &run(&gw, &["event", "show", "e2"])
            .lines()
            .skip(1)
            .collect::<Vec<_>>()
            .join("\n"),
        &["ID", "ATTEMPTS"],
        &["STATE"],
    );
    run(&gw, &["key", "why", "msisdn:7"]);

    // Every operator command speaks JSON with --format json (and --json, as
    // before).
    for args in [
        &["connector", "list"][..],
        &["connector", "show", "hss"],
        &["connector", "versions", "hss"],
        &["dlq", "list"],
        &["key", "why", "msisdn:7"],
        &["event", "show", "e2"],
        &["audit", "--limit", "5"],
    ] {
        for flag in [&["--format", "json"][..], &["--json"]] {
            let all: Vec<&str> = flag.iter().chain(args).copied().collect();
            let out = run(&gw, &all);
            serde_json::from_str::<Value>(&out)
                .unwrap_or_else(|e| panic!("`switchboard {}`: {e}\n{out}", all.join(" ")));
        }
    }
    let out = command(&gw, &["--format", "yaml", "connector", "list"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "an unknown format is bad usage");

    // The gateway's own log went to a file: no colour in it either.
    let log = std::fs::read_to_string(&gw.log).unwrap();
    assert!(!log.is_empty(), "the gateway logged nothing");
    assert!(
        !log.contains('\x1b'),
        "the gateway's log file has escape codes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_stops_early_is_not_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let hss = FakeHss::default();
    let addr = hss.start().await;
    let gw = Gateway::start(&two_connectors(dir.path(), addr));
    for args in [&["connector", "list"][..], &["status"], &["audit"]] {
        let mut child = command(&gw, args).spawn().unwrap();
        // As `| head -0` does: the reader is gone before anything is written.
        drop(child.stdout.take());
        let err = String::from_utf8_lossy(&read_all(child.stderr.take())).into_owned();
        let status = child.wait().unwrap();
        assert!(
            status.success() && err.is_empty(),
            "`switchboard {}` into a closed pipe: {status}\n{err}",
            args.join(" ")
        );
    }
}
