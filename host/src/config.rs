//! Configuration: defaults → TOML file → `SWITCHBOARD_*` environment, then
//! validated. Unknown keys are errors wherever they appear, so a typo never
//! silently falls back to a default.
//!
//! Environment overrides address a key by its path with `__` between levels,
//! starting at a top-level section: `SWITCHBOARD_SERVER__LISTEN`,
//! `SWITCHBOARD_STORAGE__URL`, `SWITCHBOARD_CONNECTORS__0__CONCURRENCY`,
//! `SWITCHBOARD_CONNECTORS__0__SECRET_HEADERS__AUTHORIZATION`. Values parse as
//! TOML scalars (numbers, booleans) where they can, and as strings otherwise.
//! Other `SWITCHBOARD_*` variables (such as `SWITCHBOARD_LOG`) are not config.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::queue::breaker::BreakerPolicy;
use crate::queue::retry::RetryPolicy;
use crate::queue::route::RouteSpec;
use crate::queue::OnDead;

const ENV_SECTIONS: [&str; 7] = [
    "server",
    "storage",
    "dispatch",
    "cluster",
    "console",
    "runtime",
    "connectors",
];

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub storage: StorageConfig,
    pub dispatch: DispatchConfig,
    pub cluster: ClusterConfig,
    pub console: ConsoleConfig,
    pub runtime: RuntimeConfig,
    pub connectors: Vec<ConnectorConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address the HTTP API listens on.
    pub listen: SocketAddr,
    /// Largest request body accepted, in bytes (larger → 413).
    pub max_body_bytes: usize,
    /// Most events in one batch.
    pub max_batch: usize,
    /// How long in-flight attempts may run after SIGTERM before their leases
    /// are handed back, in milliseconds.
    pub shutdown_grace_ms: u64,
    /// Threads that serve HTTP, dispatch and run connectors; 0: one per
    /// core. Fewer threads than cores cost less CPU per event at modest
    /// rates (fewer wake-ups) and carry less at saturation (BENCHMARKS.md).
    pub workers: usize,
    /// Bearer tokens. Without any, the gateway serves loopback only and
    /// refuses to listen elsewhere.
    pub tokens: Vec<TokenConfig>,
}

/// One API bearer token.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Who holds it; recorded in the audit log. Never the secret.
    pub name: String,
    /// The secret (at least 16 characters); better set through
    /// `SWITCHBOARD_SERVER__TOKENS__<i>__TOKEN` than written in the file.
    pub token: String,
    /// `ingest` (POST /v1/events), `read` (every GET but the ingest one,
    /// and a read-only console) and/or `admin` (everything but ingest).
    pub scopes: Vec<Scope>,
}

impl std::fmt::Debug for TokenConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenConfig")
            .field("name", &self.name)
            .field("token", &"<redacted>")
            .field("scopes", &self.scopes)
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    Ingest,
    Read,
    Admin,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Ingest => "ingest",
            Scope::Read => "read",
            Scope::Admin => "admin",
        }
    }
}

/// The most `server.workers` accepted.
pub const MAX_WORKERS: usize = 1024;

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7400)),
            max_body_bytes: 10 * 1024 * 1024,
            max_batch: 10_000,
            shutdown_grace_ms: 30_000,
            workers: 0,
            tokens: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// `sqlite://PATH` (embedded default) or `postgres://…`.
    pub url: String,
    /// The dedup window, in days: a finished event's id (every delivery
    /// final: delivered, skipped, expired, superseded) is kept this long
    /// after the event was accepted, so a re-post is a duplicate; then it
    /// may be used again. Events with a delivery still pending or dead are
    /// kept whatever their age. 0 keeps ids for good.
    pub retention_days: u32,
    /// How long a finished event is kept whole, in days: its payload,
    /// deliveries and attempt log, for the event view, the console and
    /// replays. After that only what deduplication needs stays (about 60
    /// bytes an event) until `retention_days`. 0: whole for the whole
    /// window; more than the window ends at the window.
    pub payload_retention_days: u32,
    /// Component versions kept per connector: deploying a new one deletes
    /// those older than the newest this many (the active one is always
    /// among them, so rollback works back that far). 0 keeps every version.
    pub component_versions: u32,
    /// How long, at most, in microseconds, a small group of posts waits for
    /// more before it commits, where posts arrive often enough that more are
    /// due within that time, so that a trickle shares commits
    /// (`store::group`: a shorter wait where eight arrive sooner, none where
    /// recent waits gathered next to nothing). On PostgreSQL a small group
    /// of outcomes waits as long for more, in the same way.
    /// Unset: 2000 on SQLite, 4000 on PostgreSQL; 0 never waits; at most
    /// 100000.
    pub group_commit_wait_us: Option<u32>,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            url: "sqlite://./switchboard.db".into(),
            retention_days: 30,
            payload_retention_days: 7,
            component_versions: 10,
            group_commit_wait_us: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DispatchConfig {
    /// How long a claimed delivery is leased at least, in milliseconds; a
    /// connector whose `limits.deadline_ms` is longer leases for its
    /// deadline plus 10 s. Only an attempt hung on a live node waits for
    /// it: a restarted node takes its own leases back at once, and a lost
    /// node's are taken over by heartbeat (`cluster`).
    pub lease_ms: u64,
    /// How often expired leases are looked for, in milliseconds.
    pub rescue_interval_ms: u64,
    /// Longest idle sleep of a connector's dispatcher, in milliseconds.
    pub poll_interval_ms: u64,
}

impl Default for DispatchConfig {
    fn default() -> Self {
        Self {
            lease_ms: 120_000,
            rescue_interval_ms: 5_000,
            poll_interval_ms: 1_000,
        }
    }
}

/// This node among those sharing a store, and when a silent one's work
/// moves to the others (docs/RECOVERY.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// This node's name in the store: its leases, heartbeat and records
    /// carry it, and at start-up it takes back at once what its previous
    /// run left in flight. Default `HOST:PORT` (the API's port). It must
    /// stay the same across restarts and differ between the nodes sharing
    /// a PostgreSQL database; a second running gateway under a taken name
    /// is refused.
    pub node: Option<String>,
    /// A node whose heartbeat (renewed every fifth of this, judged by the
    /// database's clock) is older than this plus `fence_margin_ms` loses its
    /// in-flight deliveries to the other nodes, in milliseconds.
    pub node_timeout_ms: u64,
    /// The gap between a node stopping itself and the others taking over
    /// its work, in milliseconds (docs/RECOVERY.md).
    pub fence_margin_ms: u64,
    /// Nodes sharing a PostgreSQL database wake each other through
    /// `LISTEN`/`NOTIFY` when events arrive or a breaker changes. Off (for
    /// a connection pooler in transaction mode, where `LISTEN` does not
    /// work), they find new work within `dispatch.poll_interval_ms`.
    pub notify: bool,
}

/// The operator console at `/ui/` (README, "Console").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleConfig {
    /// Serve the console on this node. Off, `/ui/` is not served; the
    /// per-minute counts behind its plots are still written (another node
    /// may serve it).
    pub enabled: bool,
    /// How long a console session lasts after logging in, in hours.
    pub session_hours: u32,
    /// How long the per-minute delivery counts behind the plots are kept,
    /// in days.
    pub history_days: u32,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            session_hours: 8,
            history_days: 7,
        }
    }
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            node: None,
            node_timeout_ms: 10_000,
            fence_margin_ms: 2_000,
            notify: true,
        }
    }
}

impl ClusterConfig {
    /// How often this node renews its heartbeat.
    pub fn heartbeat_every(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.node_timeout_ms / 5)
    }

    /// How long after sending a heartbeat the store has not confirmed this
    /// node stops sending upstream: `node_timeout_ms - fence_margin_ms`.
    pub fn fence_after(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.node_timeout_ms - self.fence_margin_ms)
    }

    /// How long another node's heartbeat may be silent, by the database's
    /// clock, before its work is taken over.
    pub fn takeover_after_ms(&self) -> i64 {
        (self.node_timeout_ms + self.fence_margin_ms) as i64
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// Where compiled components are cached (default: next to the database,
    /// in `switchboard-cache/`).
    pub cache_dir: Option<PathBuf>,
    /// PEM file of CA certificates trusted for `https` upstreams besides the
    /// public web roots (an internal PKI).
    pub ca_file: Option<PathBuf>,
    /// Connector calls that can run at once on this node, all connectors
    /// together (instance slots; default 500). Calls beyond it wait for a
    /// slot within their deadline.
    pub max_instances: Option<u32>,
    /// Largest `limits.memory_mb` a connector may have (default 256); a
    /// connector asking for more is refused.
    pub max_memory_mb: Option<usize>,
    /// Upstream connections open at once, all connectors together (default:
    /// the open-files limit less a reserve of a quarter of it, at least
    /// 128, for the listener, the database and files).
    pub max_egress_connections: Option<usize>,
    /// How long a warm connector instance is kept after its last delivery
    /// (default 10,000 ms); see `limits.max_deliveries_per_instance`.
    pub instance_idle_ms: Option<u64>,
}

impl RuntimeConfig {
    /// `max_memory_mb`, defaulted.
    pub fn max_memory_mb(&self) -> usize {
        self.max_memory_mb.unwrap_or(DEFAULT_MAX_MEMORY_MB)
    }
}

/// The longest `limits.deadline_ms` a connector may have: an hour.
pub const MAX_DEADLINE_MS: u64 = 3_600_000;

/// Default of `runtime.max_memory_mb`.
pub const DEFAULT_MAX_MEMORY_MB: usize = 256;

/// What a connector's settings are checked against: gateway-wide settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// `runtime.max_memory_mb`: the largest `limits.memory_mb`.
    pub max_memory_mb: usize,
}

impl Bounds {
    pub fn of(config: &Config) -> Bounds {
        Bounds {
            max_memory_mb: config.runtime.max_memory_mb(),
        }
    }
}

impl Default for Bounds {
    fn default() -> Self {
        Bounds::of(&Config::default())
    }
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectorConfig {
    /// Unique name, e.g. `hss-east`.
    pub name: String,
    /// Path to the component (`.wasm`); relative paths are relative to the
    /// config file.
    #[serde(default)]
    pub component: Option<PathBuf>,
    /// Event type patterns routed to this connector (`number.*`, `*`), or
    /// tables with options (`{ match = "quota.*", expire_after = "72h" }`).
    #[serde(default)]
    pub routes: Vec<RouteSpec>,
    /// `host:port` (or `host` for any port) the component may call.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// Most deliveries in flight at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Most attempts started per second (token bucket, bursts up to one
    /// second's worth); unlimited when absent.
    #[serde(default)]
    pub rate: Option<f64>,
    /// What a dead letter does to its keys (default `hold`).
    #[serde(default)]
    pub on_dead: OnDead,
    #[serde(default)]
    pub retry: RetryPolicy,
    /// Circuit breaker: consecutive transient failures before it opens, and
    /// the probe interval while open.
    #[serde(default)]
    pub breaker: BreakerPolicy,
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Values handed to the component (`config::get`).
    #[serde(default)]
    pub config: BTreeMap<String, ConfigValue>,
    /// Headers the host adds to outgoing requests (credentials), so the
    /// component never holds them: `name = "value"` (only for a connector
    /// with a single allowed host) or `name = { value = "…", hosts = [...] }`
    /// naming the `allowed_hosts` entries it is sent to.
    #[serde(default)]
    pub secret_headers: BTreeMap<String, SecretHeader>,
}

/// One secret header: its value, and the allowed hosts it is sent to.
#[derive(Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(untagged)]
pub enum SecretHeader {
    /// Sent to the connector's only allowed host.
    Value(String),
    /// Sent to the listed `allowed_hosts` entries only.
    Scoped(ScopedSecret),
}

/// `{ value = "…", hosts = [...] }`.
#[derive(Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ScopedSecret {
    pub value: String,
    pub hosts: Vec<String>,
}

impl SecretHeader {
    pub fn value(&self) -> &str {
        match self {
            SecretHeader::Value(v) => v,
            SecretHeader::Scoped(s) => &s.value,
        }
    }

    /// The hosts it is for; empty: every allowed host (valid only with one).
    pub fn hosts(&self) -> &[String] {
        match self {
            SecretHeader::Value(_) => &[],
            SecretHeader::Scoped(s) => &s.hosts,
        }
    }

    fn redacted(&self) -> SecretHeader {
        match self {
            SecretHeader::Value(_) => SecretHeader::Value("***".into()),
            SecretHeader::Scoped(s) => SecretHeader::Scoped(ScopedSecret {
                value: "***".into(),
                hosts: s.hosts.clone(),
            }),
        }
    }
}

impl std::fmt::Debug for SecretHeader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretHeader")
            .field("value", &"<redacted>")
            .field("hosts", &self.hosts())
            .finish()
    }
}

impl ConnectorConfig {
    /// Checks one connector's settings (from the file or the API) against
    /// the gateway-wide bounds. The message names the field at fault.
    pub fn validate(&self, bounds: &Bounds) -> Result<(), ConfigError> {
        let c = self;
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if c.name.is_empty()
            || c.name.len() > 64
            || !c
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return invalid(format!(
                "connector name {:?}: use 1 to 64 characters of a-z A-Z 0-9 - _",
                c.name
            ));
        }
        if c.rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
            return invalid(format!(
                "connector {:?}: rate must be a positive number of deliveries per second",
                c.name
            ));
        }
        if c.concurrency == 0 {
            return invalid(format!(
                "connector {:?}: concurrency must be at least 1",
                c.name
            ));
        }
        let mut compiled = Vec::with_capacity(c.routes.len());
        for r in &c.routes {
            compiled.push(
                r.compile()
                    .map_err(|e| ConfigError::Invalid(format!("connector {:?}: {e}", c.name)))?,
            );
        }
        if let Some((a, b)) = crate::queue::route::conflicting_coalesce(&compiled) {
            return invalid(format!(
                "connector {:?}: routes {a:?} and {b:?} can match the same type with \
                 different coalescing (coalesce_key, coalesce_group, or none); a type is \
                 full-state only when every route that matches it says so alike: make \
                 them agree, or make them match different types",
                c.name
            ));
        }
        let l = &c.limits;
        for (field, value) in [
            ("memory_mb", l.memory_mb as u64),
            ("deadline_ms", l.deadline_ms),
            ("cpu_budget_ms", l.cpu_budget_ms),
            ("request_timeout_ms", l.request_timeout_ms),
            ("max_response_bytes", l.max_response_bytes as u64),
            ("host_memory_mb", l.host_memory_mb as u64),
            ("max_host_resources", l.max_host_resources as u64),
            ("max_concurrent_requests", l.max_concurrent_requests as u64),
            ("max_request_bytes", l.max_request_bytes),
            ("max_connections", l.max_connections as u64),
            (
                "max_deliveries_per_instance",
                l.max_deliveries_per_instance.into(),
            ),
        ] {
            if value == 0 {
                return invalid(format!(
                    "connector {:?}: limits.{field} must be positive",
                    c.name
                ));
            }
        }
        if l.deadline_ms > MAX_DEADLINE_MS {
            return invalid(format!(
                "connector {:?}: limits.deadline_ms ({}) is more than an hour ({MAX_DEADLINE_MS}): \
                 a delivery's lease lasts at least its deadline, and an attempt that long \
                 holds its lanes that long",
                c.name, l.deadline_ms
            ));
        }
        if l.memory_mb > bounds.max_memory_mb {
            return invalid(format!(
                "connector {:?}: limits.memory_mb ({}) is above the gateway's maximum of {} \
                 (runtime.max_memory_mb)",
                c.name, l.memory_mb, bounds.max_memory_mb
            ));
        }
        if l.host_memory_mb > MAX_HOST_MEMORY_MB {
            return invalid(format!(
                "connector {:?}: limits.host_memory_mb ({}) is above the maximum of {MAX_HOST_MEMORY_MB}",
                c.name, l.host_memory_mb
            ));
        }
        if l.max_host_resources > MAX_HOST_RESOURCES {
            return invalid(format!(
                "connector {:?}: limits.max_host_resources ({}) is above the maximum of {MAX_HOST_RESOURCES}",
                c.name, l.max_host_resources
            ));
        }
        c.sandbox_limits()
            .check()
            .map_err(|why| ConfigError::Invalid(format!("connector {:?}: limits.{why}", c.name)))?;
        for (name, secret) in &c.secret_headers {
            if secret.hosts().is_empty() && c.allowed_hosts.len() > 1 {
                return invalid(format!(
                    "connector {:?}: secret_headers.{name} has no `hosts` and the connector has \
                     {} allowed_hosts: say which of them it is for, \
                     e.g. {name} = {{ value = \"…\", hosts = [{:?}] }}",
                    c.name,
                    c.allowed_hosts.len(),
                    c.allowed_hosts[0]
                ));
            }
            if let Some(h) = secret.hosts().iter().find(|h| !c.allowed_hosts.contains(h)) {
                return invalid(format!(
                    "connector {:?}: secret_headers.{name}.hosts names {h:?}, which is not one of \
                     its allowed_hosts {:?}",
                    c.name, c.allowed_hosts
                ));
            }
        }
        Ok(())
    }

    /// The per-call sandbox limits these settings give.
    pub fn sandbox_limits(&self) -> switchboard_sandbox::Limits {
        let l = &self.limits;
        switchboard_sandbox::Limits {
            memory_bytes: l.memory_mb.saturating_mul(1 << 20),
            deadline: std::time::Duration::from_millis(l.deadline_ms),
            cpu_budget: std::time::Duration::from_millis(l.cpu_budget_ms),
            request_timeout: std::time::Duration::from_millis(l.request_timeout_ms),
            max_response_bytes: l.max_response_bytes,
            host_memory_bytes: l.host_memory_mb.saturating_mul(1 << 20),
            max_host_resources: l.max_host_resources,
            max_concurrent_requests: l.max_concurrent_requests,
            max_request_bytes: l.max_request_bytes,
            max_connections: l.max_connections,
            max_deliveries_per_instance: l.max_deliveries_per_instance,
        }
    }

    /// The config as operators may see it: secret header values replaced.
    pub fn redacted(&self) -> serde_json::Value {
        let mut c = self.clone();
        for v in c.secret_headers.values_mut() {
            *v = v.redacted();
        }
        serde_json::to_value(&c).unwrap_or(serde_json::Value::Null)
    }
}

fn default_concurrency() -> usize {
    16
}

/// Sandbox limits per attempt.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    pub memory_mb: usize,
    /// Wall-clock deadline of one attempt.
    pub deadline_ms: u64,
    /// CPU time one attempt may spend in the guest.
    pub cpu_budget_ms: u64,
    /// Timeout of one outgoing HTTP request.
    pub request_timeout_ms: u64,
    /// Largest response body a component may read.
    pub max_response_bytes: usize,
    /// Host memory one attempt's HTTP resources may hold (header fields,
    /// requests, buffered body chunks, connection buffers), in MiB.
    pub host_memory_mb: usize,
    /// Host resources (HTTP fields, requests, bodies, streams) one attempt
    /// may hold at once.
    pub max_host_resources: usize,
    /// Outgoing requests in flight at once within one attempt.
    pub max_concurrent_requests: usize,
    /// Request-body bytes one attempt may send upstream, all requests
    /// together.
    pub max_request_bytes: u64,
    /// Upstream connections the connector may have open, all its attempts
    /// together (its own pool).
    pub max_connections: usize,
    /// Deliveries one warm instance serves before a fresh one replaces it;
    /// 1 gives every attempt a fresh instance.
    pub max_deliveries_per_instance: u32,
}

/// Upper bound of `limits.host_memory_mb`.
pub const MAX_HOST_MEMORY_MB: usize = 1024;
/// Upper bound of `limits.max_host_resources`.
pub const MAX_HOST_RESOURCES: usize = 100_000;

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            memory_mb: 64,
            deadline_ms: 30_000,
            cpu_budget_ms: 5_000,
            request_timeout_ms: 10_000,
            max_response_bytes: 4 * 1024 * 1024,
            host_memory_mb: 16,
            max_host_resources: 1000,
            max_concurrent_requests: 8,
            max_request_bytes: 64 * 1024 * 1024,
            max_connections: 128,
            max_deliveries_per_instance: 1000,
        }
    }
}

/// A connector config value: TOML strings, numbers and booleans are handed to
/// the component as text.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(untagged)]
pub enum ConfigValue {
    String(String),
    Integer(i64),
    Float(f64),
    Bool(bool),
}

impl ConfigValue {
    pub fn to_text(&self) -> String {
        match self {
            ConfigValue::String(s) => s.clone(),
            ConfigValue::Integer(i) => i.to_string(),
            ConfigValue::Float(f) => f.to_string(),
            ConfigValue::Bool(b) => b.to_string(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    #[error("invalid config: {0}")]
    Invalid(String),
}

/// Command-line settings that override the file and the environment.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `serve --listen`.
    pub listen: Option<SocketAddr>,
}

impl Config {
    /// Loads defaults, then `path` (if any), then the environment, and
    /// validates the result.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        Config::load_with(path, env, &Overrides::default())
    }

    /// Like [`Config::load`], with command-line overrides applied last. The
    /// configuration is validated once, as it will run: a check that ran
    /// before an override could be bypassed by it.
    pub fn load_with(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        overrides: &Overrides,
    ) -> Result<Config, ConfigError> {
        let (mut table, origin) = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.to_path_buf(),
                    source,
                })?;
                let table: toml::Table =
                    text.parse()
                        .map_err(|e: toml::de::Error| ConfigError::Parse {
                            path: p.display().to_string(),
                            message: e.to_string(),
                        })?;
                (table, p.display().to_string())
            }
            None => (toml::Table::new(), "(defaults)".to_string()),
        };
        let vars = config_vars(env);
        let from_file = table.clone();
        apply_env(&mut table, &vars)?;
        let mut config: Config = match toml::Value::Table(table).try_into() {
            Ok(config) => config,
            Err(e) => return Err(blame(from_file, &vars, origin, e)),
        };
        if let Some(dir) = path.and_then(Path::parent) {
            for c in &mut config.connectors {
                if let Some(component) = &c.component {
                    if component.is_relative() {
                        c.component = Some(dir.join(component));
                    }
                }
            }
        }
        if let Some(listen) = overrides.listen {
            config.server.listen = listen;
        }
        config.validate()?;
        Ok(config)
    }

    /// Checks the whole configuration. [`crate::app::run`] calls it again on
    /// what it is given, so no caller can start an unchecked gateway.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        let mut names = std::collections::HashSet::new();
        let bounds = Bounds::of(self);
        for c in &self.connectors {
            c.validate(&bounds)?;
            if !names.insert(&c.name) {
                return invalid(format!("connector name {:?} is used twice", c.name));
            }
        }
        if let Some(us) = self.storage.group_commit_wait_us.filter(|&us| us > 100_000) {
            return invalid(format!(
                "storage.group_commit_wait_us ({us}) must be at most 100000 (0.1 s): every \
                 post may wait this long for its answer"
            ));
        }
        let cl = &self.cluster;
        if cl.node_timeout_ms < 1_000 || cl.node_timeout_ms > 600_000 {
            return invalid(format!(
                "cluster.node_timeout_ms ({}) must be between 1000 and 600000",
                cl.node_timeout_ms
            ));
        }
        if cl.fence_margin_ms < 100 || cl.fence_margin_ms > cl.node_timeout_ms / 4 {
            return invalid(format!(
                "cluster.fence_margin_ms ({}) must be between 100 and a quarter of \
                 cluster.node_timeout_ms ({})",
                cl.fence_margin_ms, cl.node_timeout_ms
            ));
        }
        if let Some(node) = &cl.node {
            if node.is_empty()
                || node.len() > 128
                || node.contains('/')
                || node.chars().any(char::is_control)
            {
                return invalid(format!(
                    "cluster.node {node:?}: use 1 to 128 characters, no '/' or control characters"
                ));
            }
        }
        let co = &self.console;
        if co.session_hours == 0 || co.session_hours > 24 * 30 {
            return invalid(format!(
                "console.session_hours ({}) must be between 1 and 720",
                co.session_hours
            ));
        }
        if co.history_days == 0 || co.history_days > 400 {
            return invalid(format!(
                "console.history_days ({}) must be between 1 and 400",
                co.history_days
            ));
        }
        let mut token_names = std::collections::HashSet::new();
        for t in &self.server.tokens {
            if t.name.is_empty() || !token_names.insert(&t.name) {
                return invalid(format!("token name {:?} is empty or used twice", t.name));
            }
            if t.token.chars().count() < 16 {
                return invalid(format!("token {:?} is shorter than 16 characters", t.name));
            }
            if t.scopes.is_empty() {
                return invalid(format!("token {:?} has no scopes", t.name));
            }
        }
        if self.server.tokens.is_empty() && !self.server.listen.ip().is_loopback() {
            return invalid(format!(
                "refusing to listen on {} without authentication: add [[server.tokens]] \
                 (name, token, scopes) or listen on a loopback address",
                self.server.listen
            ));
        }
        if self.runtime.max_instances == Some(0) {
            return invalid("runtime.max_instances must be at least 1".into());
        }
        if self.runtime.max_memory_mb == Some(0) || self.runtime.max_egress_connections == Some(0) {
            return invalid(
                "runtime.max_memory_mb and runtime.max_egress_connections must be positive".into(),
            );
        }
        if self.server.max_batch == 0 || self.server.max_body_bytes == 0 {
            return invalid("server.max_batch and server.max_body_bytes must be positive".into());
        }
        if self.server.workers > MAX_WORKERS {
            return invalid(format!(
                "server.workers is {}: at most {MAX_WORKERS} (0: one per core)",
                self.server.workers
            ));
        }
        Ok(())
    }
}

/// The `SWITCHBOARD_*` variables that address a config key, in the order
/// they are applied, each with its key path.
fn config_vars(env: impl IntoIterator<Item = (String, String)>) -> Vec<(String, String)> {
    let mut vars: Vec<(String, String)> = env
        .into_iter()
        .filter(|(k, _)| {
            k.strip_prefix("SWITCHBOARD_").is_some_and(|rest| {
                let mut path = rest.split("__");
                let section = path.next().unwrap_or("").to_ascii_lowercase();
                path.next().is_some() && ENV_SECTIONS.contains(&section.as_str())
            })
        })
        .collect();
    vars.sort();
    vars
}

fn apply_env(table: &mut toml::Table, vars: &[(String, String)]) -> Result<(), ConfigError> {
    for (var, value) in vars {
        let path: Vec<String> = var["SWITCHBOARD_".len()..]
            .split("__")
            .map(str::to_ascii_lowercase)
            .collect();
        let err = |message: String| ConfigError::Env {
            var: var.clone(),
            message,
        };
        let parsed = parse_scalar(value);
        set_path(table, &path, parsed).map_err(err)?;
    }
    Ok(())
}

/// Which input a config that does not deserialize should be blamed on: the
/// file (or the defaults) if it fails alone; else the one environment
/// variable without which the rest deserializes — so
/// `SWITCHBOARD_SERVER__LISTNE` is reported as that variable, not as a fault
/// in the file; else (several at fault) the merged whole.
fn blame(
    from_file: toml::Table,
    vars: &[(String, String)],
    origin: String,
    whole: toml::de::Error,
) -> ConfigError {
    let fails = |vars: &[(String, String)]| {
        let mut table = from_file.clone();
        apply_env(&mut table, vars).is_err()
            || toml::Value::Table(table).try_into::<Config>().is_err()
    };
    if let Err(e) = toml::Value::Table(from_file.clone()).try_into::<Config>() {
        return ConfigError::Parse {
            path: origin,
            message: e.to_string(),
        };
    }
    for (i, (var, _)) in vars.iter().enumerate() {
        let others: Vec<(String, String)> = vars
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, v)| v.clone())
            .collect();
        if !fails(&others) {
            // toml puts "in `section`" on a line of its own; there is no
            // file snippet to keep aligned here, so make it one line.
            return ConfigError::Env {
                var: var.clone(),
                message: whole
                    .to_string()
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" "),
            };
        }
    }
    ConfigError::Parse {
        path: format!("{origin} with the SWITCHBOARD_* environment"),
        message: whole.to_string(),
    }
}

fn parse_scalar(raw: &str) -> toml::Value {
    match format!("v = {raw}").parse::<toml::Table>() {
        Ok(mut t) => match t.remove("v") {
            Some(
                v @ (toml::Value::Integer(_) | toml::Value::Float(_) | toml::Value::Boolean(_)),
            ) => v,
            _ => toml::Value::String(raw.to_string()),
        },
        Err(_) => toml::Value::String(raw.to_string()),
    }
}

fn set_path(table: &mut toml::Table, path: &[String], value: toml::Value) -> Result<(), String> {
    let (head, rest) = path.split_first().ok_or("empty key")?;
    if rest.is_empty() {
        table.insert(head.clone(), value);
        return Ok(());
    }
    // A numeric next segment addresses a list entry (`CONNECTORS__0__NAME`).
    let is_index = rest.first().is_some_and(|r| r.parse::<usize>().is_ok());
    let entry = table.entry(head.clone()).or_insert_with(|| {
        if is_index {
            toml::Value::Array(Vec::new())
        } else {
            toml::Value::Table(toml::Table::new())
        }
    });
    match entry {
        toml::Value::Table(t) => set_path(t, rest, value),
        toml::Value::Array(items) => {
            let (idx, rest) = rest.split_first().ok_or("missing index")?;
            let i: usize = idx
                .parse()
                .map_err(|_| format!("`{head}` is a list: expected an index, got {idx:?}"))?;
            if i > items.len() {
                return Err(format!(
                    "`{head}` has {} entries; index {i} would leave a gap",
                    items.len()
                ));
            }
            if i == items.len() {
                items.push(toml::Value::Table(toml::Table::new()));
            }
            match &mut items[i] {
                toml::Value::Table(t) if !rest.is_empty() => set_path(t, rest, value),
                _ => Err(format!("`{head}[{i}]` cannot hold {rest:?}")),
            }
        }
        _ => Err(format!("`{head}` is a value, not a section")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(toml: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, toml).unwrap();
        Config::load(
            Some(&p),
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    const SPEC_EXAMPLE: &str = r#"
[server]
listen = "127.0.0.1:7400"

[storage]
url = "sqlite://./switchboard.db"

[[connectors]]
name = "hss"
component = "path/to/webhook.wasm"
routes = ["number.*", "customer.*"]
allowed_hosts = ["127.0.0.1:18080"]
concurrency = 64
[connectors.config]
url = "http://127.0.0.1:18080/op"
"#;

    #[test]
    fn the_runtime_workers_are_one_per_core_unless_set_and_bounded() {
        assert_eq!(load(SPEC_EXAMPLE, &[]).unwrap().server.workers, 0);
        let one = load(SPEC_EXAMPLE, &[("SWITCHBOARD_SERVER__WORKERS", "1")]).unwrap();
        assert_eq!(one.server.workers, 1);
        let e = load(SPEC_EXAMPLE, &[("SWITCHBOARD_SERVER__WORKERS", "5000")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("server.workers") && e.contains("1024"), "{e}");
    }

    #[test]
    fn the_group_commit_wait_is_the_backends_unless_set_and_bounded() {
        assert_eq!(
            load(SPEC_EXAMPLE, &[])
                .unwrap()
                .storage
                .group_commit_wait_us,
            None
        );
        let var = "SWITCHBOARD_STORAGE__GROUP_COMMIT_WAIT_US";
        let off = load(SPEC_EXAMPLE, &[(var, "0")]).unwrap();
        assert_eq!(off.storage.group_commit_wait_us, Some(0));
        let e = load(SPEC_EXAMPLE, &[(var, "100001")])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("storage.group_commit_wait_us") && e.contains("100000"),
            "{e}"
        );
        let e = load(SPEC_EXAMPLE, &[(var, "-1")]).unwrap_err().to_string();
        assert!(e.contains("group_commit_wait_us"), "{e}");
    }

    #[test]
    fn the_spec_example_loads() {
        let c = load(SPEC_EXAMPLE, &[]).unwrap();
        assert_eq!(c.connectors[0].concurrency, 64);
        assert_eq!(
            c.connectors[0].config["url"].to_text(),
            "http://127.0.0.1:18080/op"
        );
        assert!(c.connectors[0].component.as_ref().unwrap().is_absolute());
        assert_eq!(c.connectors[0].on_dead, OnDead::Hold);
    }

    #[test]
    fn a_slow_connector_needs_no_longer_lease_and_cluster_timings_are_checked() {
        // A five-minute deadline with the default two-minute lease: the
        // connector's claims lease for its deadline plus 10 s instead.
        let slow = format!("{SPEC_EXAMPLE}[connectors.limits]\ndeadline_ms = 300000\n");
        let c = load(&slow, &[]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.connectors[0].limits.deadline_ms, 300_000);
        let endless = format!("{SPEC_EXAMPLE}[connectors.limits]\ndeadline_ms = 3600001\n");
        let e = load(&endless, &[]).unwrap_err().to_string();
        assert!(
            e.contains("limits.deadline_ms") && e.contains("an hour"),
            "{e}"
        );
        assert_eq!(c.cluster.fence_after(), std::time::Duration::from_secs(8));
        assert_eq!(c.cluster.takeover_after_ms(), 12_000);
        assert_eq!(
            c.cluster.heartbeat_every(),
            std::time::Duration::from_secs(2)
        );
        for (env, field) in [
            (
                ("SWITCHBOARD_CLUSTER__NODE_TIMEOUT_MS", "500"),
                "node_timeout_ms",
            ),
            (
                ("SWITCHBOARD_CLUSTER__FENCE_MARGIN_MS", "5000"),
                "fence_margin_ms",
            ),
            (("SWITCHBOARD_CLUSTER__NODE", "a/b"), "cluster.node"),
        ] {
            let e = load(SPEC_EXAMPLE, &[env]).unwrap_err().to_string();
            assert!(e.contains(field), "{e}");
        }
    }

    #[test]
    fn unknown_keys_are_errors_that_name_the_key() {
        let e = load("[server]\nlisten = \"127.0.0.1:1\"\nlisten_port = 3\n", &[]).unwrap_err();
        assert!(e.to_string().contains("listen_port"), "{e}");
        let e = load("[[connectors]]\nname = \"x\"\nroute = [\"a\"]\n", &[]).unwrap_err();
        assert!(e.to_string().contains("route"), "{e}");
        let e = load("", &[("SWITCHBOARD_SERVER__LISTN", "1")]).unwrap_err();
        assert!(e.to_string().contains("listn"), "{e}");
    }

    #[test]
    fn a_bad_environment_variable_is_named_not_blamed_on_the_file() {
        let file = "[server]\nlisten = \"127.0.0.1:1\"\n";
        let env = [
            ("SWITCHBOARD_SERVER__MAX_BATCH", "5"),
            ("SWITCHBOARD_SERVER__LISTNE", "127.0.0.1:2"),
        ];
        let e = load(file, &env).unwrap_err();
        let ConfigError::Env { var, message } = &e else {
            panic!("not blamed on the environment: {e}")
        };
        assert_eq!(var, "SWITCHBOARD_SERVER__LISTNE");
        assert!(message.contains("listne"), "{message}");
        // A wrong type, too.
        let e = load(file, &[("SWITCHBOARD_SERVER__MAX_BATCH", "many")]).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("environment variable SWITCHBOARD_SERVER__MAX_BATCH:"),
            "{e}"
        );
        // Variables that are fine together but not alone are not blamed for
        // another's typo.
        let e = load(
            file,
            &[
                ("SWITCHBOARD_CONNECTORS__0__COMPONENT", "/x.wasm"),
                ("SWITCHBOARD_CONNECTORS__0__NAME", "b"),
                ("SWITCHBOARD_STORAGE__URLL", "sqlite://x.db"),
            ],
        )
        .unwrap_err();
        assert!(
            matches!(&e, ConfigError::Env { var, .. } if var == "SWITCHBOARD_STORAGE__URLL"),
            "{e}"
        );
        // A fault in the file is still the file's, whatever the environment says.
        let e = load("[server]\nlisten_port = 3\n", &env).unwrap_err();
        assert!(
            matches!(&e, ConfigError::Parse { message, .. } if message.contains("listen_port")),
            "{e}"
        );
    }

    #[test]
    fn environment_overrides_the_file() {
        let c = load(
            SPEC_EXAMPLE,
            &[
                ("SWITCHBOARD_SERVER__LISTEN", "127.0.0.1:9999"),
                ("SWITCHBOARD_CONNECTORS__0__CONCURRENCY", "3"),
                (
                    "SWITCHBOARD_CONNECTORS__0__SECRET_HEADERS__AUTHORIZATION",
                    "Bearer s3cret",
                ),
                ("SWITCHBOARD_TEST_PG", "postgres://ignored"),
                ("SWITCHBOARD_LOG", "debug"),
            ],
        )
        .unwrap();
        assert_eq!(c.server.listen.port(), 9999);
        assert_eq!(c.connectors[0].concurrency, 3);
        assert_eq!(
            c.connectors[0].secret_headers["authorization"].value(),
            "Bearer s3cret"
        );
    }

    #[test]
    fn the_environment_alone_can_define_a_connector() {
        let c = Config::load(
            None,
            [
                ("SWITCHBOARD_CONNECTORS__0__NAME", "hss"),
                ("SWITCHBOARD_CONNECTORS__0__ROUTES", "number.*"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        // A list value from the environment is a string, which `routes` refuses
        // with a message naming the key; the connector itself is created.
        let e = c.unwrap_err().to_string();
        assert!(e.contains("routes"), "{e}");
        let c = Config::load(
            None,
            [(
                "SWITCHBOARD_CONNECTORS__0__NAME".to_string(),
                "hss".to_string(),
            )],
        )
        .unwrap();
        assert_eq!(c.connectors[0].name, "hss");
    }

    #[test]
    fn invalid_values_are_refused() {
        assert!(load(
            "[[connectors]]\nname = \"a\"\n[[connectors]]\nname = \"a\"\n",
            &[]
        )
        .is_err());
        assert!(load("[[connectors]]\nname = \"a\"\nconcurrency = 0\n", &[]).is_err());
        assert!(load("[[connectors]]\nname = \"a\"\nroutes = [\"Bad*\"]\n", &[]).is_err());
        assert!(load("[[connectors]]\nname = \"a b\"\n", &[]).is_err());
        assert!(load("[server]\nlisten = \"nowhere\"\n", &[]).is_err());
        assert!(load("[runtime]\nmax_instances = 0\n", &[]).is_err());
        let c = load("", &[("SWITCHBOARD_RUNTIME__MAX_INSTANCES", "64")]).unwrap();
        assert_eq!(c.runtime.max_instances, Some(64));
    }

    #[test]
    fn listening_beyond_loopback_needs_tokens() {
        let e = load("[server]\nlisten = \"0.0.0.0:7400\"\n", &[]).unwrap_err();
        assert!(e.to_string().contains("without authentication"), "{e}");
        let ok = load(
            "[server]\nlisten = \"0.0.0.0:7400\"\n[[server.tokens]]\nname = \"app\"\nscopes = [\"ingest\"]\n",
            &[("SWITCHBOARD_SERVER__TOKENS__0__TOKEN", "0123456789abcdef-secret")],
        )
        .unwrap();
        assert_eq!(ok.server.tokens[0].scopes, vec![Scope::Ingest]);
        assert!(
            !format!("{ok:?}").contains("0123456789abcdef"),
            "tokens never appear in debug output"
        );
        let short = "[[server.tokens]]\nname = \"a\"\ntoken = \"short\"\nscopes = [\"admin\"]\n";
        assert!(load(short, &[]).is_err());
    }

    /// Every way to give the address (file, environment, `--listen`) ×
    /// every kind of address: only loopback is served without tokens, and
    /// the check sees the address that will actually be used.
    #[test]
    fn the_listen_address_is_checked_whichever_way_it_is_given() {
        let cases = [
            ("127.0.0.1:7400", true),
            ("[::1]:7400", true),
            ("0.0.0.0:7400", false),
            ("[::]:7400", false),
            ("192.0.2.10:7400", false),
        ];
        let token = "[[server.tokens]]\nname = \"ops\"\ntoken = \"0123456789abcdef-secret\"\nscopes = [\"admin\"]\n";
        for (addr, loopback) in cases {
            let parsed: SocketAddr = addr.parse().unwrap();
            let dir = tempfile::tempdir().unwrap();
            let p = dir.path().join("c.toml");
            let load_via = |file: &str, env: &[(&str, &str)], flag: Option<SocketAddr>| {
                std::fs::write(&p, file).unwrap();
                Config::load_with(
                    Some(&p),
                    env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
                    &Overrides { listen: flag },
                )
            };
            let from_file = format!("[server]\nlisten = \"{addr}\"\n");
            let sources: [(&str, Result<Config, ConfigError>); 3] = [
                ("file", load_via(&from_file, &[], None)),
                (
                    "env",
                    load_via("", &[("SWITCHBOARD_SERVER__LISTEN", addr)], None),
                ),
                // A loopback file and environment, overridden by the flag.
                (
                    "flag",
                    load_via(
                        "[server]\nlisten = \"127.0.0.1:7400\"\n",
                        &[("SWITCHBOARD_SERVER__LISTEN", "127.0.0.1:7401")],
                        Some(parsed),
                    ),
                ),
            ];
            for (source, result) in sources {
                match (loopback, result) {
                    (true, Ok(c)) => assert_eq!(c.server.listen, parsed, "{source} {addr}"),
                    (false, Err(e)) => assert!(
                        e.to_string().contains("without authentication"),
                        "{source} {addr}: {e}"
                    ),
                    (_, r) => panic!("{source} {addr}: {r:?}"),
                }
            }
            // With a token, every address is accepted, the flag included.
            let with_token = load_via(token, &[], Some(parsed)).unwrap();
            assert_eq!(with_token.server.listen, parsed);
        }
    }

    #[test]
    fn limits_above_their_maximum_are_refused_naming_the_field() {
        let conn = |limits: &str| {
            format!(
                "[[connectors]]\nname = \"hss\"\nallowed_hosts = [\"a:1\"]\n[connectors.limits]\n{limits}\n"
            )
        };
        let e = load(&conn("memory_mb = 512"), &[]).unwrap_err().to_string();
        assert!(
            e.contains("limits.memory_mb (512)") && e.contains("maximum of 256"),
            "{e}"
        );
        let raised = format!(
            "[runtime]\nmax_memory_mb = 1024\n{}",
            conn("memory_mb = 512")
        );
        assert!(load(&raised, &[]).is_ok());
        let e = load(&conn("max_host_resources = 0"), &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("limits.max_host_resources must be positive"),
            "{e}"
        );
        let e = load(&conn("host_memory_mb = 1\nmax_host_resources = 5000"), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("limits.host_memory_mb"), "{e}");
    }

    #[test]
    fn a_scoped_secret_with_an_unknown_key_is_refused() {
        let file = "[[connectors]]\nname = \"crm\"\nallowed_hosts = [\"crm:443\"]\n[connectors.secret_headers]\nauthorization = { value = \"x\", hosts = [\"crm:443\"], host = \"crm\" }\n";
        assert!(load(file, &[]).is_err());
    }

    #[test]
    fn a_secret_must_say_which_of_several_hosts_it_is_for() {
        let conn = |hosts: &str, secret: &str| {
            format!(
                "[[connectors]]\nname = \"crm\"\nallowed_hosts = {hosts}\n[connectors.secret_headers]\nauthorization = {secret}\n"
            )
        };
        // One allowed host: a plain value goes to it.
        assert!(load(&conn("[\"crm:443\"]", "\"Bearer x\""), &[]).is_ok());
        let e = load(&conn("[\"crm:443\", \"sms:443\"]", "\"Bearer x\""), &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("secret_headers.authorization has no `hosts`"),
            "{e}"
        );
        let scoped = "{ value = \"Bearer x\", hosts = [\"crm:443\"] }";
        let c = load(&conn("[\"crm:443\", \"sms:443\"]", scoped), &[]).unwrap();
        let secret = &c.connectors[0].secret_headers["authorization"];
        assert_eq!(secret.value(), "Bearer x");
        assert_eq!(secret.hosts(), ["crm:443".to_string()]);
        assert!(
            !format!("{c:?}").contains("Bearer x"),
            "secrets never in debug output"
        );
        let redacted = c.connectors[0].redacted();
        assert_eq!(redacted["secret_headers"]["authorization"]["value"], "***");
        let stray = "{ value = \"Bearer x\", hosts = [\"evil:443\"] }";
        let e = load(&conn("[\"crm:443\", \"sms:443\"]", stray), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("not one of its allowed_hosts"), "{e}");
    }

    #[test]
    fn no_file_means_the_embedded_default() {
        let c = Config::load(None, std::iter::empty()).unwrap();
        assert_eq!(c.storage.url, "sqlite://./switchboard.db");
        assert!(c.server.listen.ip().is_loopback());
    }
}
