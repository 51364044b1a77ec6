//! Boots the gateway as a child process and fakes an HSS-like register.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::Value;

/// Where cargo put the wasm connectors: `<target>/wasm32-wasip2/release`.
pub fn wasm(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // <target>/debug/deps/e2e-… → <target>
    let target = exe.ancestors().nth(3).unwrap();
    let path = target
        .join("wasm32-wasip2/release")
        .join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: build the connectors first (`make connectors`, or `cd connectors && cargo build --release`)",
        path.display()
    );
    path
}

/// A free loopback port, so a restarted gateway can keep its address.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Gateway {
    child: Child,
    pub addr: SocketAddr,
    pub log: PathBuf,
}

impl Gateway {
    /// Starts `switchboard serve --config <config>` and waits for it to listen.
    pub fn start(config: &Path) -> Gateway {
        let dir = config.parent().unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchboard"));
        cmd.args(["serve", "--config"]).arg(config);
        Self::spawn(cmd, dir)
    }

    /// Like [`Gateway::start`], with the process's open-files limit (soft and
    /// hard) set to `nofile` by `prlimit`, as a tight production host would.
    pub fn start_with_nofile(config: &Path, nofile: u64) -> Gateway {
        let dir = config.parent().unwrap();
        let mut cmd = Command::new("prlimit");
        cmd.arg(format!("--nofile={nofile}:{nofile}"))
            .arg("--")
            .arg(env!("CARGO_BIN_EXE_switchboard"))
            .args(["serve", "--config"])
            .arg(config);
        Self::spawn(cmd, dir)
    }

    /// Starts `switchboard serve <args>` in the working directory `cwd` (its
    /// log goes there too) and waits for it to listen.
    pub fn start_in(cwd: &Path, args: &[&str]) -> Gateway {
        Self::start_in_with(cwd, args, &[])
    }

    /// [`Gateway::start_in`], with `env` added to the environment.
    pub fn start_in_with(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Gateway {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchboard"));
        cmd.arg("serve").args(args).current_dir(cwd);
        cmd.envs(env.iter().copied());
        Self::spawn(cmd, cwd)
    }

    fn spawn(mut cmd: Command, log_dir: &Path) -> Gateway {
        let log = log_dir.join(format!("gateway-{}.log", rand_suffix()));
        let mut child = cmd
            .env("SWITCHBOARD_LOG", "info,switchboard=debug")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn switchboard");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if let Some(addr) = line.strip_prefix("listening on ") {
                    let _ = tx.send(addr.parse::<SocketAddr>().unwrap());
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(addr) => Gateway { child, addr, log },
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "gateway did not start; log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
        }
    }

    /// The gateway's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `GET path` on the API, as text.
    pub async fn get_text(&self, path: &str) -> String {
        reqwest::get(self.url(path))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// `GET path` on the API, as JSON.
    pub async fn get_json(&self, path: &str) -> Value {
        reqwest::get(self.url(path))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// SIGKILL: no shutdown, no flush; only what was committed survives.
    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM and wait for a clean exit.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        for _ in 0..300 {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        panic!("gateway did not exit within 30 s of SIGTERM");
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        % 1_000_000_007
}

/// One applied operation, as the register saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    pub msisdn: String,
    pub op: String,
    pub customer: String,
    pub event_id: String,
}

/// An HSS-like number register behind the webhook connector: assigning a
/// number still held by another customer, or releasing one the customer does
/// not hold, is refused with 409 — exactly what an out-of-order delivery
/// would cause. Answers are replayed per `Idempotency-Key`, as a real
/// idempotent API would.
#[derive(Clone, Default)]
pub struct FakeHss {
    inner: Arc<HssInner>,
}

#[derive(Default)]
pub struct HssInner {
    owners: Mutex<HashMap<String, String>>,
    replies: Mutex<HashMap<String, (u16, String)>>,
    pub applied: Mutex<Vec<Applied>>,
    pub conflicts: Mutex<Vec<String>>,
    pub requests: AtomicU64,
    /// Percent of requests answered 503 without touching state.
    pub fail_percent: AtomicU32,
    /// Milliseconds each request takes before it is handled (keeps attempts
    /// in flight).
    pub delay_ms: AtomicU64,
}

impl FakeHss {
    pub async fn start(&self) -> SocketAddr {
        let app = Router::new()
            .route("/op", post(handle))
            .with_state(self.inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        addr
    }

    pub fn inner(&self) -> &HssInner {
        &self.inner
    }

    pub fn applied(&self) -> Vec<Applied> {
        self.inner.applied.lock().unwrap().clone()
    }

    pub fn conflicts(&self) -> Vec<String> {
        self.inner.conflicts.lock().unwrap().clone()
    }
}

async fn handle(
    State(s): State<Arc<HssInner>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> (StatusCode, String) {
    let n = s.requests.fetch_add(1, Ordering::Relaxed);
    let delay = s.delay_ms.load(Ordering::Relaxed);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let fail = s.fail_percent.load(Ordering::Relaxed) as u64;
    if fail > 0 && (n.wrapping_mul(2654435761) % 100) < fail {
        return (StatusCode::SERVICE_UNAVAILABLE, "try later".into());
    }
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let event_id = headers
        .get("x-switchboard-event")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    if let Some((status, text)) = s.replies.lock().unwrap().get(&key) {
        return (StatusCode::from_u16(*status).unwrap(), text.clone());
    }
    let msisdn = body["msisdn"].as_str().unwrap_or("").to_string();
    let customer = body["customer"].as_str().unwrap_or("").to_string();
    let op = body["op"].as_str().unwrap_or("").to_string();
    let (status, text) = {
        let mut owners = s.owners.lock().unwrap();
        let holder = owners.get(&msisdn).cloned();
        match (op.as_str(), holder) {
            ("assign", None) => {
                owners.insert(msisdn.clone(), customer.clone());
                (200, "assigned".to_string())
            }
            ("assign", Some(h)) => (409, format!("number {msisdn} in use by {h}")),
            ("release", Some(h)) if h == customer => {
                owners.remove(&msisdn);
                (200, "released".to_string())
            }
            ("release", h) => (
                409,
                format!("number {msisdn} is not held by {customer} (holder {h:?})"),
            ),
            _ => (400, format!("unknown op {op:?}")),
        }
    };
    if status == 200 {
        s.applied.lock().unwrap().push(Applied {
            msisdn,
            op,
            customer,
            event_id,
        });
    } else {
        s.conflicts
            .lock()
            .unwrap()
            .push(format!("{event_id}: {text}"));
    }
    s.replies
        .lock()
        .unwrap()
        .insert(key, (status, text.clone()));
    (StatusCode::from_u16(status).unwrap(), text)
}

/// Which store a gateway under test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

impl Db {
    /// A fresh, empty store of this kind: a file in `dir`, or a new schema on
    /// the test PostgreSQL server (`SWITCHBOARD_TEST_PG`).
    pub async fn fresh_url(self, dir: &Path) -> String {
        match self {
            Db::Sqlite => format!("sqlite://{}", dir.join("sb.db").display()),
            Db::Postgres => crate::common::pg_schema_url().await,
        }
    }
}

/// A gateway config: SQLite in `dir`, the webhook connector pointed at `hss`,
/// short leases and backoff so recovery is quick in tests.
pub fn write_config(dir: &Path, port: u16, hss: SocketAddr, concurrency: usize) -> PathBuf {
    let url = format!("sqlite://{}", dir.join("sb.db").display());
    write_config_on(&url, dir, port, hss, concurrency)
}

/// As [`write_config`], on the store `storage` names.
pub fn write_config_on(
    storage: &str,
    dir: &Path,
    port: u16,
    hss: SocketAddr,
    concurrency: usize,
) -> PathBuf {
    write_config_with(storage, dir, port, hss, concurrency, "webhook")
}

/// [`write_config_on`] with the `hss` connector running `component`
/// (`webhook`, `webhook-ts`, `webhook-py`). The JavaScript and Python
/// builds take 10-20 s to compile, so their compiles are kept between tests
/// and runs in one cache in the temporary directory.
pub fn write_config_with(
    storage: &str,
    dir: &Path,
    port: u16,
    hss: SocketAddr,
    concurrency: usize,
    component: &str,
) -> PathBuf {
    let cache = if component == "webhook" {
        dir.join("cache")
    } else {
        std::env::temp_dir().join("switchboard-e2e-compile-cache")
    };
    let path = dir.join(format!("switchboard-{port}.toml"));
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:{port}"
shutdown_grace_ms = 5000

[storage]
url = "{storage}"

[dispatch]
lease_ms = 3000
rescue_interval_ms = 300
poll_interval_ms = 100

[runtime]
cache_dir = "{cache}"

[[connectors]]
name = "hss"
component = "{wasm}"
routes = ["number.*"]
allowed_hosts = ["{hss}"]
concurrency = {concurrency}

[connectors.retry]
initial_backoff_ms = 20
max_backoff_ms = 300

[connectors.limits]
deadline_ms = 2000
request_timeout_ms = 1500

[connectors.config]
url = "http://{hss}/op"
"#,
        cache = cache.display(),
        wasm = wasm(component).display(),
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// What a recording upstream saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub event_id: String,
    pub user_agent: String,
    pub body: Value,
}

/// An upstream that answers 200 to everything and records each first
/// delivery (replays are recognised by `Idempotency-Key` and not recorded).
#[derive(Clone, Default)]
pub struct Recorder {
    pub seen: Arc<Mutex<Vec<Seen>>>,
    keys: Arc<Mutex<std::collections::HashSet<String>>>,
}

impl Recorder {
    pub async fn start(&self) -> SocketAddr {
        let me = self.clone();
        let app = Router::new().route(
            "/op",
            post(move |headers: HeaderMap, Json(body): Json<Value>| {
                let me = me.clone();
                async move {
                    let h = |n: &str| {
                        headers
                            .get(n)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_string()
                    };
                    if me.keys.lock().unwrap().insert(h("idempotency-key")) {
                        me.seen.lock().unwrap().push(Seen {
                            event_id: h("x-switchboard-event"),
                            user_agent: h("user-agent"),
                            body,
                        });
                    }
                    "ok"
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        addr
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// Runs the `switchboard` CLI against a gateway; returns (exit code, stdout, stderr).
pub fn cli(gateway: &Gateway, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .arg("--url")
        .arg(gateway.url(""))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
