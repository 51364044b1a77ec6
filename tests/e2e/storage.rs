//! The store going away under load, with the real binary: a PostgreSQL
//! server restarted (a private cluster this test starts on a port of its
//! own, never the shared one) and a SQLite database on a full disk (a small
//! tmpfs). While the store is gone ingest answers 503 and stores nothing;
//! nothing acknowledged is lost; delivery resumes by itself.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::{free_port, write_config_on, FakeHss, Gateway, Recorder};
use crate::reassign::{check_order, post_all, wait_applied};

fn is_root() -> bool {
    let out = Command::new("id").arg("-u").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

/// Runs `program args` (as the `postgres` user when this process is root:
/// PostgreSQL refuses to run as root) and fails the test if it fails.
fn run_pg(bin: &Path, program: &str, args: &[&str]) {
    let exe = bin.join(program);
    let out = if is_root() {
        Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(&exe)
            .args(args)
            .output()
    } else {
        Command::new(&exe).args(args).output()
    }
    .unwrap_or_else(|e| panic!("cannot run {}: {e}", exe.display()));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A PostgreSQL cluster of this test's own, on a free port, stopped when
/// dropped.
struct PrivatePg {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
}

impl PrivatePg {
    fn start() -> PrivatePg {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL's server binaries under /usr/lib/postgresql")
            .filter_map(|e| e.ok())
            .map(|e| e.path().join("bin"))
            .find(|b| b.join("initdb").exists())
            .expect("initdb under /usr/lib/postgresql/*/bin");
        let dir = tempfile::tempdir().unwrap();
        if is_root() {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .unwrap()
                .success();
            assert!(ok, "chown the private cluster's directory");
        }
        let data = dir.path().join("data");
        run_pg(
            &bin,
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                "--auth=trust",
                "-N",
            ],
        );
        let pg = PrivatePg {
            bin,
            dir,
            port: free_port(),
        };
        pg.ctl("start");
        pg
    }

    fn ctl(&self, action: &str) {
        let data = self.dir.path().join("data");
        let log = self.dir.path().join("server.log");
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let mut args = vec![
            "-D",
            data.to_str().unwrap(),
            "-l",
            log.to_str().unwrap(),
            "-w",
            "-o",
            &opts,
        ];
        if action == "stop" {
            args.extend(["-m", "fast"]);
        }
        args.push(action);
        run_pg(&self.bin, "pg_ctl", &args);
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let pg_ctl = self.bin.join("pg_ctl");
        let mut cmd = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(pg_ctl);
            c
        } else {
            Command::new(pg_ctl)
        };
        let _ = cmd
            .args(["-D", data.to_str().unwrap(), "-m", "immediate", "stop"])
            .output();
    }
}

/// One POST of one event; its status and body.
async fn post_one(http: &reqwest::Client, gw: &Gateway, body: &Value) -> (u16, String) {
    match http.post(gw.url("/v1/events")).json(body).send().await {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
        Err(e) => (0, e.to_string()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgresql_restart_under_load_loses_nothing_and_delivery_resumes() {
    let pg = PrivatePg::start();
    let dir = tempfile::tempdir().unwrap();
    let hss = FakeHss::default();
    hss.inner().delay_ms.store(5, Ordering::Relaxed);
    let hss_addr = hss.start().await;
    let config = write_config_on(&pg.url(), dir.path(), free_port(), hss_addr, 8);
    let gw = Gateway::start(&config);
    let (numbers, steps) = (40, 6);
    let acked = Arc::new(AtomicUsize::new(0));
    let load = tokio::spawn(post_all(vec![gw.url("")], numbers, steps, 4, acked.clone()));
    while acked.load(Ordering::Relaxed) < numbers * steps / 3 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    pg.ctl("stop");
    // While the server is down: a clear 503, and nothing stored.
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let probe = json!({"id": "while-down", "type": "number.assign", "keys": ["msisdn:x"],
                       "payload": {"op": "assign", "msisdn": "x", "customer": "C0"}});
    let asked = Instant::now();
    let (status, body) = post_one(&http, &gw, &probe).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("store_unavailable"), "{body}");
    eprintln!(
        "ingest answered 503 after {:?} with the server down",
        asked.elapsed()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    pg.ctl("start");
    load.await.unwrap();
    wait_applied(&hss, numbers * steps, &gw.log).await;
    assert!(hss.conflicts().is_empty(), "{:?}", hss.conflicts());
    check_order(&hss.applied(), numbers, steps);
    // The refused event was not stored: its id is free.
    let (status, body) = post_one(&http, &gw, &probe).await;
    assert_eq!(status, 202, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["accepted"], 1, "{body}");
}

/// A tmpfs of `mib` MiB mounted at `at` for as long as it lives.
struct SmallDisk {
    at: PathBuf,
}

impl SmallDisk {
    fn mount(at: &Path, mib: u64) -> SmallDisk {
        std::fs::create_dir_all(at).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(at)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "this test mounts a small tmpfs and needs root: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmallDisk {
            at: at.to_path_buf(),
        }
    }

    fn grow(&self, mib: u64) {
        let ok = Command::new("mount")
            .args(["-o", &format!("remount,size={mib}m")])
            .arg(&self.at)
            .status()
            .unwrap()
            .success();
        assert!(ok, "remount {}", self.at.display());
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").args(["-l"]).arg(&self.at).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_on_a_full_disk_answers_503_loses_nothing_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let disk = SmallDisk::mount(&dir.path().join("disk"), 4);
    let up = Recorder::default();
    let addr = up.start().await;
    let url = format!("sqlite://{}", disk.at.join("sb.db").display());
    let config = write_config_on(&url, dir.path(), free_port(), addr, 4);
    let gw = Gateway::start(&config);
    let http = reqwest::Client::new();
    // Events with large payloads until the disk is full.
    let filler = "x".repeat(16 * 1024);
    let event = |i: usize| {
        json!({"id": format!("e{i}"), "type": "number.update", "keys": [format!("msisdn:{}", i % 10)],
               "payload": {"msisdn": format!("{}", i % 10), "seq": i, "filler": filler}})
    };
    let mut acked = Vec::new();
    let mut refused = None;
    for i in 0..2_000 {
        let (status, body) = post_one(&http, &gw, &event(i)).await;
        match status {
            202 => acked.push(i),
            503 | 507 => {
                refused = Some((i, body));
                break;
            }
            other => panic!("event {i}: {other} {body}"),
        }
    }
    let (full_at, body) = refused.expect("the disk never filled");
    assert!(body.contains("store_unavailable"), "{body}");
    assert!(!acked.is_empty());
    // Still full: still refused, still nothing stored, the gateway alive.
    // Delivery goes on meanwhile and SQLite reuses the pages it frees (a
    // checkpoint can free some too), so a post may find room again; such an
    // event is acknowledged and must then be delivered like the others. The
    // disk is full again after a few, and the refusal repeats.
    let mut next = full_at;
    let mut refusals = 0;
    for _ in 0..200 {
        let (status, body) = post_one(&http, &gw, &event(next)).await;
        match status {
            202 => {
                acked.push(next);
                next += 1;
            }
            503 | 507 => {
                assert!(body.contains("store_unavailable"), "{body}");
                refusals += 1;
                if refusals == 2 {
                    break;
                }
            }
            other => panic!("event {next}: {other} {body}"),
        }
    }
    assert_eq!(refusals, 2, "the disk never stayed full");
    assert_eq!(
        reqwest::get(gw.url("/healthz")).await.unwrap().status(),
        200
    );
    // Space returns: ingest works again without a restart.
    disk.grow(64);
    let deadline = Instant::now() + Duration::from_secs(30);
    let i = next;
    loop {
        let (status, body) = post_one(&http, &gw, &event(i)).await;
        if status == 202 {
            acked.push(i);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still refused with space back: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for j in i + 1..i + 20 {
        let (status, body) = post_one(&http, &gw, &event(j)).await;
        assert_eq!(status, 202, "{body}");
        acked.push(j);
    }
    // Every acknowledged event is delivered, in order per number.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let seen: std::collections::HashSet<String> =
            up.seen().iter().map(|s| s.event_id.clone()).collect();
        let missing: Vec<&usize> = acked
            .iter()
            .filter(|i| !seen.contains(&format!("e{i}")))
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "acknowledged but not delivered: {missing:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut last: std::collections::HashMap<String, i64> = Default::default();
    for s in up.seen() {
        let seq = s.body["seq"].as_i64().unwrap();
        let number = s.body["msisdn"].as_str().unwrap().to_string();
        if let Some(prev) = last.insert(number.clone(), seq) {
            assert!(prev < seq, "number {number}: {seq} after {prev}");
        }
    }
    drop(gw);
}
