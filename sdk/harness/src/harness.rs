//! [`Harness`]: one connector component, its configuration and sandbox, and
//! a way to hand it deliveries. [`Harness::connector`] documents where built
//! connectors are looked for. The harness does not check that a `.wasm` is
//! newer than its sources: build before testing.

use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use switchboard_sandbox::{
    Component, ConnectorInfo, Limits, Outcome, Runtime, RuntimeConfig, Sandbox, SecretHeader,
};
use tokio::sync::OnceCell;

/// Where built connectors land, relative to a cargo target directory.
const WASM_SUBDIR: &str = "wasm32-wasip2/release";

/// Why a connector could not be found, read or loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HarnessError {
    /// No `.wasm` for the connector in any of the searched places.
    #[error(
        "connector `{name}` is not built: {file} not found in any of\n{}\n\
         Build it first:\n  \
         cd connectors && cargo build --release    (in the Switchboard repo)\n  \
         cargo build --release                     (in a connector's own crate)",
        searched.iter().map(|p| format!("  {}", p.display())).collect::<Vec<_>>().join("\n")
    )]
    NotBuilt {
        /// The connector name asked for.
        name: String,
        /// The file name looked for.
        file: String,
        /// The directories searched, in order.
        searched: Vec<PathBuf>,
    },
    /// The file exists but could not be read.
    #[error("cannot read connector {path}: {reason}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The sandbox runtime could not be created.
    #[error("cannot create the connector runtime: {0}")]
    Runtime(String),
    /// The runtime refused the component (not a component, wrong world,
    /// `describe` failed).
    #[error("cannot load connector {source_name}: {reason}")]
    Load {
        /// Where the bytes came from.
        source_name: String,
        /// The runtime's reason.
        reason: String,
    },
}

/// A connector under test: the component, the configuration it reads, the
/// hosts it may reach and the secret headers the host injects.
///
/// Built with chained setters; the component is compiled on the first
/// [`deliver`](Harness::deliver) or [`describe`](Harness::describe) and kept
/// for the harness's lifetime. Each delivery runs under the harness's
/// limits and egress rules, as in the gateway, and as in the gateway an
/// instance that ended a delivery cleanly serves the next one.
///
/// ```no_run
/// use switchboard_connector_test::{Delivery, FakeUpstream, Harness, Outcome};
/// # async fn f() {
/// let upstream = FakeUpstream::start().await;
/// let hss = Harness::connector("hss")
///     .config("base_url", upstream.url("/api"))
///     .allow_host(upstream.host());
/// let outcome = hss.deliver(Delivery::new("number.release").payload_text(r#"{"msisdn":"1"}"#)).await;
/// assert_eq!(outcome, Outcome::Done);
/// # }
/// ```
pub struct Harness {
    source: String,
    wasm: Vec<u8>,
    sandbox: Sandbox,
    loaded: OnceCell<Result<Component, HarnessError>>,
}

impl fmt::Debug for Harness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Secret header values are deliberately not printed.
        f.debug_struct("Harness")
            .field("source", &self.source)
            .field("allowed_hosts", &self.sandbox.allowed_hosts)
            .field("config", &self.sandbox.config)
            .field(
                "secret_headers",
                &self
                    .sandbox
                    .secret_headers
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>(),
            )
            .field("limits", &self.sandbox.limits)
            .finish()
    }
}

impl Harness {
    /// The built connector `name` (e.g. `"webhook"`, `"forbidden-host"`).
    ///
    /// The file is `<name>.wasm` with `-` replaced by `_` (cargo's artefact
    /// naming) or, failing that, `<name>.wasm` itself (a TypeScript or
    /// Python build), looked for in these places in order, first hit wins:
    /// 1. `$SWITCHBOARD_WASM_DIR/` (an explicit override, e.g. in CI);
    /// 2. `$CARGO_TARGET_DIR/wasm32-wasip2/release/`;
    /// 3. `<dir>/target/wasm32-wasip2/release/` for `<dir>` = the test
    ///    crate's `CARGO_MANIFEST_DIR` and each of its ancestors, then the
    ///    current directory and each of its ancestors.
    ///
    /// # Panics
    /// If it is not built or cannot be read; the message lists the places
    /// searched and the build command.
    ///
    /// ```no_run
    /// let h = switchboard_connector_test::Harness::connector("webhook");
    /// ```
    #[track_caller]
    pub fn connector(name: &str) -> Harness {
        match Self::try_connector(name) {
            Ok(h) => h,
            Err(e) => panic!("{e}"),
        }
    }

    /// [`Harness::connector`], returning the error instead of panicking.
    ///
    /// ```no_run
    /// match switchboard_connector_test::Harness::try_connector("webhook") {
    ///     Ok(h) => println!("{h:?}"),
    ///     Err(e) => eprintln!("{e}"),
    /// }
    /// ```
    pub fn try_connector(name: &str) -> Result<Harness, HarnessError> {
        Self::try_load(find_wasm(name)?)
    }

    /// The component at `path`.
    ///
    /// # Panics
    /// If the file cannot be read; the message says how to build it.
    ///
    /// ```no_run
    /// let h = switchboard_connector_test::Harness::load("target/wasm32-wasip2/release/webhook.wasm");
    /// ```
    #[track_caller]
    pub fn load(path: impl AsRef<Path>) -> Harness {
        match Self::try_load(path) {
            Ok(h) => h,
            Err(e) => panic!(
                "{e}\nBuild the connector first (`cd connectors && cargo build --release` \
                 in the Switchboard repo, `cargo build --release` in a connector crate)"
            ),
        }
    }

    /// [`Harness::load`], returning the error instead of panicking.
    ///
    /// ```no_run
    /// let h = switchboard_connector_test::Harness::try_load("hss.wasm");
    /// ```
    pub fn try_load(path: impl AsRef<Path>) -> Result<Harness, HarnessError> {
        let path = path.as_ref();
        let wasm = std::fs::read(path).map_err(|e| HarnessError::Read {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        Ok(Self::from_bytes(path.display().to_string(), wasm))
    }

    /// A component from bytes; `source` names it in error messages.
    ///
    /// ```no_run
    /// let bytes = std::fs::read("webhook.wasm").unwrap();
    /// let h = switchboard_connector_test::Harness::from_bytes("webhook.wasm", bytes);
    /// ```
    pub fn from_bytes(source: impl Into<String>, wasm: Vec<u8>) -> Harness {
        Harness {
            source: source.into(),
            wasm,
            sandbox: Sandbox::default(),
            loaded: OnceCell::new(),
        }
    }

    /// Set configuration key `name` (what the connector reads with
    /// `config::get`), as under `[connectors.config]`.
    ///
    /// ```no_run
    /// let h = switchboard_connector_test::Harness::connector("webhook").config("url", "http://127.0.0.1:9/x");
    /// ```
    pub fn config(mut self, name: impl Into<String>, value: impl Into<String>) -> Harness {
        self.sandbox.config.insert(name.into(), value.into());
        self
    }

    /// Replace the whole configuration.
    ///
    /// ```no_run
    /// let cfg = [("url".to_string(), "http://127.0.0.1:9/x".to_string())].into_iter().collect();
    /// let h = switchboard_connector_test::Harness::connector("webhook").configs(cfg);
    /// ```
    pub fn configs(mut self, config: BTreeMap<String, String>) -> Harness {
        self.sandbox.config = config;
        self
    }

    /// Allow outgoing requests to `host` (`"host:port"`, or `"host"` for
    /// any port), as `allowed_hosts` does in the gateway. Nothing is allowed
    /// by default. [`FakeUpstream::host`](crate::FakeUpstream::host) gives
    /// the value for a fake upstream.
    ///
    /// ```no_run
    /// let h = switchboard_connector_test::Harness::connector("webhook").allow_host("127.0.0.1:18080");
    /// ```
    pub fn allow_host(mut self, host: impl Into<String>) -> Harness {
        self.sandbox.allowed_hosts.push(host.into());
        self
    }

    /// A header the host adds to every outgoing request (credentials). The
    /// guest never sees it; the upstream does.
    ///
    /// ```no_run
    /// let h = switchboard_connector_test::Harness::connector("webhook").secret_header("authorization", "Bearer x");
    /// ```
    pub fn secret_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Harness {
        self.sandbox.secret_headers.push(SecretHeader {
            name: name.into(),
            value: value.into(),
            hosts: Vec::new(),
        });
        self
    }

    /// Per-call limits (memory, deadline, CPU budget, request timeout,
    /// response size). Defaults are the gateway's defaults.
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// use switchboard_connector_test::{Harness, Limits};
    /// let h = Harness::connector("webhook").limits(Limits {
    ///     request_timeout: Duration::from_millis(200),
    ///     ..Limits::default()
    /// });
    /// ```
    pub fn limits(mut self, limits: Limits) -> Harness {
        self.sandbox.limits = limits;
        self
    }

    /// Run one delivery and return its outcome, exactly as the gateway
    /// would get it. As in the gateway, the instance of an earlier delivery
    /// that ended cleanly serves the next one (see
    /// [`Harness::instances_started`]); a trap or a limit hit replaces it.
    ///
    /// # Panics
    /// If the component cannot be loaded (see [`Harness::describe`] for the
    /// non-panicking check).
    ///
    /// ```no_run
    /// # use switchboard_connector_test::{Delivery, Harness};
    /// # async fn f(h: Harness) {
    /// let outcome = h.deliver(Delivery::new("number.assign").payload_text("{}")).await;
    /// # }
    /// ```
    pub async fn deliver(&self, delivery: impl Into<switchboard_sandbox::Delivery>) -> Outcome {
        let delivery = delivery.into();
        match self.component().await {
            Ok(component) => component.deliver(&self.sandbox, &delivery).await,
            Err(e) => panic!("{e}"),
        }
    }

    /// Instances this harness has started for its deliveries so far. The
    /// gateway keeps an instance warm for the next delivery of the same
    /// connector when the last one ended cleanly, so a connector must give
    /// the same answers on a reused instance as on a fresh one: a test that
    /// delivers several times and finds this below the number of deliveries
    /// checks that it does.
    ///
    /// ```no_run
    /// # use switchboard_connector_test::{Delivery, Harness};
    /// # async fn f(h: Harness) {
    /// h.deliver(Delivery::new("number.assign").payload_text("{}")).await;
    /// h.deliver(Delivery::new("number.release").payload_text("{}")).await;
    /// assert_eq!(h.instances_started().await, 1);
    /// # }
    /// ```
    pub async fn instances_started(&self) -> u64 {
        match self.component().await {
            Ok(component) => component.slot_stats().instances_started,
            Err(_) => 0,
        }
    }

    /// Load the component (if not yet loaded) and return its `describe()`
    /// answer, or why it could not be loaded.
    ///
    /// ```no_run
    /// # async fn f(h: switchboard_connector_test::Harness) {
    /// let info = h.describe().await.expect("loads");
    /// assert!(info.config.iter().any(|f| f.name == "url" && f.required));
    /// # }
    /// ```
    pub async fn describe(&self) -> Result<ConnectorInfo, HarnessError> {
        self.component().await.map(|c| c.info().clone())
    }

    async fn component(&self) -> Result<&Component, HarnessError> {
        self.loaded
            .get_or_init(|| async {
                // Small pool: a test runs a handful of calls at a time.
                let runtime = Runtime::new(RuntimeConfig {
                    max_instances: 8,
                    cache_dir: Some(compile_cache_dir()),
                    ..RuntimeConfig::default()
                })
                .map_err(|e| HarnessError::Runtime(e.to_string()))?;
                runtime
                    .load(&self.wasm)
                    .await
                    .map_err(|e| HarnessError::Load {
                        source_name: self.source.clone(),
                        reason: e.to_string(),
                    })
            })
            .await
            .as_ref()
            .map_err(Clone::clone)
    }
}

/// Where harnesses keep compiled components between tests and runs:
/// `$SWITCHBOARD_COMPILE_CACHE`, else `switchboard-connector-test-cache` in
/// the system's temporary directory. A Rust connector compiles in tens of
/// milliseconds, but a JavaScript or Python one takes 10–20 s; with the
/// cache every test after the first loads it in well under a second. The
/// cache is wasmtime's own, keyed by the component's bytes and the engine's
/// settings, so a rebuilt component is never served stale.
fn compile_cache_dir() -> PathBuf {
    std::env::var_os("SWITCHBOARD_COMPILE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("switchboard-connector-test-cache"))
}

/// Find the built `.wasm` of connector `name`; see [`Harness::connector`].
fn find_wasm(name: &str) -> Result<PathBuf, HarnessError> {
    // Cargo names a Rust artefact with `_`; the TypeScript and Python builds
    // keep the connector's own name (`webhook-ts.wasm`).
    let file = format!("{}.wasm", name.replace('-', "_"));
    let own = format!("{name}.wasm");
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(dir) = std::env::var_os("SWITCHBOARD_WASM_DIR") {
        dirs.push(PathBuf::from(dir));
    }
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        dirs.push(PathBuf::from(dir).join(WASM_SUBDIR));
    }
    let starts = [
        std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from),
        std::env::current_dir().ok(),
    ];
    for start in starts.into_iter().flatten() {
        for ancestor in start.ancestors() {
            dirs.push(ancestor.join("target").join(WASM_SUBDIR));
        }
    }
    let mut searched: Vec<PathBuf> = Vec::new();
    for dir in dirs {
        if searched.contains(&dir) {
            continue;
        }
        for candidate in [dir.join(&file), dir.join(&own)] {
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
        searched.push(dir);
    }
    Err(HarnessError::NotBuilt {
        name: name.to_string(),
        file,
        searched,
    })
}

/// A delivery to hand to [`Harness::deliver`], with test defaults: id
/// `dlv-1`, attempt 1, event id `evt-1`, no keys, payload `{}`.
///
/// ```no_run
/// use switchboard_connector_test::{json, Delivery};
/// let d = Delivery::new("number.assign")
///     .id("dlv-42")
///     .attempt(3)
///     .event_id("evt-000123")
///     .keys(["msisdn:2065551234", "customer:A2"])
///     .payload(json!({"msisdn": "2065551234", "customer": "A2"}));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct Delivery {
    id: String,
    attempt: u32,
    event_id: String,
    event_type: String,
    keys: Vec<String>,
    payload: String,
}

impl Delivery {
    /// A delivery of an event of type `event_type`.
    ///
    /// ```no_run
    /// let d = switchboard_connector_test::Delivery::new("number.release");
    /// ```
    pub fn new(event_type: impl Into<String>) -> Delivery {
        Delivery {
            id: "dlv-1".into(),
            attempt: 1,
            event_id: "evt-1".into(),
            event_type: event_type.into(),
            keys: Vec::new(),
            payload: "{}".into(),
        }
    }

    /// The delivery id (what connectors send as `Idempotency-Key`).
    ///
    /// ```no_run
    /// let d = switchboard_connector_test::Delivery::new("x").id("dlv-7");
    /// ```
    pub fn id(mut self, id: impl Into<String>) -> Delivery {
        self.id = id.into();
        self
    }

    /// The attempt number (1 for the first attempt).
    ///
    /// ```no_run
    /// let d = switchboard_connector_test::Delivery::new("x").attempt(2);
    /// ```
    pub fn attempt(mut self, attempt: u32) -> Delivery {
        self.attempt = attempt;
        self
    }

    /// The event id, as posted by the configuration application.
    ///
    /// ```no_run
    /// let d = switchboard_connector_test::Delivery::new("x").event_id("evt-9");
    /// ```
    pub fn event_id(mut self, event_id: impl Into<String>) -> Delivery {
        self.event_id = event_id.into();
        self
    }

    /// Add one ordering key.
    ///
    /// ```no_run
    /// let d = switchboard_connector_test::Delivery::new("x").key("customer:A1");
    /// ```
    pub fn key(mut self, key: impl Into<String>) -> Delivery {
        self.keys.push(key.into());
        self
    }

    /// Replace the ordering keys.
    ///
    /// ```no_run
    /// let d = switchboard_connector_test::Delivery::new("x").keys(["msisdn:1", "customer:A1"]);
    /// ```
    pub fn keys<I, S>(mut self, keys: I) -> Delivery
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.keys = keys.into_iter().map(Into::into).collect();
        self
    }

    /// The payload, as JSON.
    ///
    /// ```no_run
    /// let d = switchboard_connector_test::Delivery::new("x").payload(serde_json::json!({"a": 1}));
    /// ```
    pub fn payload(mut self, payload: Value) -> Delivery {
        self.payload = payload.to_string();
        self
    }

    /// The payload as raw text, sent verbatim (e.g. to test what a
    /// connector does with text that is not JSON).
    ///
    /// ```no_run
    /// let d = switchboard_connector_test::Delivery::new("x").payload_text("not json");
    /// ```
    pub fn payload_text(mut self, payload: impl Into<String>) -> Delivery {
        self.payload = payload.into();
        self
    }
}

impl From<Delivery> for switchboard_sandbox::Delivery {
    fn from(d: Delivery) -> Self {
        switchboard_sandbox::Delivery {
            id: d.id,
            attempt: d.attempt,
            event_id: d.event_id,
            event_type: d.event_type,
            keys: d.keys,
            payload: d.payload,
        }
    }
}

/// Accessors on [`Outcome`] for table-driven assertions.
///
/// ```no_run
/// use switchboard_connector_test::{Outcome, OutcomeExt};
/// let o = Outcome::Reject { reason: "HTTP 404".into() };
/// assert_eq!(o.kind(), "reject");
/// assert_eq!(o.reason(), Some("HTTP 404"));
/// ```
pub trait OutcomeExt {
    /// `"done"`, `"retry"`, `"reject"`, or `"busy"` (the sandbox had no free
    /// slot; the connector was not called).
    fn kind(&self) -> &'static str;
    /// The reason of a retry, reject or busy.
    fn reason(&self) -> Option<&str>;
    /// The delay a retry asks for (e.g. from `Retry-After`).
    fn retry_after(&self) -> Option<Duration>;
}

impl OutcomeExt for Outcome {
    fn kind(&self) -> &'static str {
        match self {
            Outcome::Done => "done",
            Outcome::Retry { .. } => "retry",
            Outcome::Reject { .. } => "reject",
            Outcome::Busy { .. } => "busy",
        }
    }

    fn reason(&self) -> Option<&str> {
        match self {
            Outcome::Done => None,
            Outcome::Retry { reason, .. }
            | Outcome::Reject { reason }
            | Outcome::Busy { reason } => Some(reason),
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            Outcome::Retry { after, .. } => *after,
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_connector_names_the_build_command() {
        let err = find_wasm("no-such-connector").expect_err("not built");
        let msg = err.to_string();
        assert!(msg.contains("no_such_connector.wasm"), "{msg}");
        assert!(
            msg.contains("cd connectors && cargo build --release"),
            "{msg}"
        );
        assert!(msg.contains("target/wasm32-wasip2/release"), "{msg}");
    }

    #[test]
    fn delivery_defaults_and_conversion() {
        let d: switchboard_sandbox::Delivery = Delivery::new("number.assign")
            .key("msisdn:1")
            .payload(serde_json::json!({"a": 1}))
            .into();
        assert_eq!(d.id, "dlv-1");
        assert_eq!(d.attempt, 1);
        assert_eq!(d.event_id, "evt-1");
        assert_eq!(d.keys, vec!["msisdn:1".to_string()]);
        assert_eq!(d.payload, r#"{"a":1}"#);
    }

    #[test]
    fn debug_does_not_print_secret_values() {
        let h =
            Harness::from_bytes("x", Vec::new()).secret_header("authorization", "Bearer s3cret");
        let dbg = format!("{h:?}");
        assert!(
            dbg.contains("authorization") && !dbg.contains("s3cret"),
            "{dbg}"
        );
    }

    #[tokio::test]
    async fn garbage_bytes_are_a_load_error_not_a_panic() {
        let h = Harness::from_bytes("garbage.wasm", b"not wasm".to_vec());
        let err = h.describe().await.expect_err("garbage does not load");
        assert!(
            matches!(&err, HarnessError::Load { source_name, .. } if source_name == "garbage.wasm"),
            "{err}"
        );
    }
}
