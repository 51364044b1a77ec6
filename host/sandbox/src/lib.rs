//! # switchboard-sandbox — the WebAssembly connector sandbox
//!
//! Runs connector components (the WIT world `switchboard:connector/connector`
//! in `wit/switchboard-connector-0.1.0`) for the gateway:
//! [`Runtime::load`] validates and compiles a component once,
//! [`Component::deliver`] runs one delivery in its own sandbox (a warm
//! instance of an earlier delivery when one may serve it, see [`warm`]).
//!
//! ## Design
//! - **One engine** per [`Runtime`]: async, component model, pooling
//!   allocator with keep-resident memory (a fresh instance costs ~16 µs), and
//!   epoch interruption driven by a background ticker thread.
//! - **Compile once.** Compiles go through wasmtime's on-disk cache (keyed by
//!   a hash of the wasm bytes and the engine's compilation settings), so a
//!   restart loads known components in microseconds instead of milliseconds.
//!   (wasmtime's `Component::deserialize_file` is `unsafe`, which this
//!   workspace forbids; the built-in cache is its safe equivalent.)
//! - **Validate at load.** A component must compile, satisfy the world's
//!   imports from our linker, export `describe`/`deliver` with the right
//!   types, and answer `describe` within the default limits. Anything else is
//!   a [`RuntimeError`] at upload time, never a surprise at delivery time.
//! - **Warm instances.** A store and its instance serve deliveries of one
//!   component version under one sandbox until a trap, a limit hit, a
//!   leaked host resource, `max_deliveries_per_instance` or an idle timeout
//!   discards them ([`warm`] states exactly what carries over). Each
//!   delivery gets its own CPU budget, wall deadline, host-memory and
//!   request budgets, log budget and egress pass; nothing leaks into
//!   another connector's, version's or setting's calls.
//!
//! ## Invariants
//! - [`Component::deliver`] never panics and never returns an error: every
//!   failure of the sandbox (trap, panic, CPU budget, wall deadline, memory
//!   cap, malformed output) becomes [`Outcome::Retry`] with a reason an
//!   operator can act on (SPEC §3, §6).
//! - A connector has no filesystem, environment, sockets or clocks beyond
//!   WASI's sandboxed defaults; its only network is `wasi:http` through
//!   [`egress`](crate::egress)'s two gates.
//! - The CPU budget is counted in epoch ticks observed while guest code runs,
//!   so time spent waiting on the upstream does not consume it (the wall
//!   deadline bounds that).

mod budget;
mod egress;
mod footprint;
mod gate;
mod guest_log;
mod resolve;
mod tls;
mod warm;

use budget::{CallBudget, HostCaps, LimitHit};
use egress::{EgressHooks, EgressPolicy, Pools, ScopedSecret};
pub use footprint::Footprint;
pub use gate::{EgressGate, Pass};
use guest_log::{GuestLog, Source};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;
use warm::{Idle, MemoryCap, Warm};
use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};
use wasmtime::{StoreLimitsBuilder, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView};

/// Raw host bindings of the connector world.
mod bindings {
    wasmtime::component::bindgen!({
        path: "../../wit/switchboard-connector-0.1.0",
        world: "switchboard:connector/connector",
        exports: { default: async },
        with: {
            "wasi:http": wasmtime_wasi_http::p2::bindings::http,
            "wasi:io": wasmtime_wasi::p2::bindings::io,
        },
        require_store_data_send: true,
    });
}

use bindings::switchboard::connector as wit;

/// Engine-wide settings. Every field has a default suited to one gateway
/// node; see [`RuntimeConfig::default`].
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Directory for cached compiled components, created if missing; a
    /// relative path is taken from the working directory. `None` disables
    /// the cache (every load compiles, 20–130 ms each).
    pub cache_dir: Option<PathBuf>,
    /// Most connector calls that can run at once across all connectors (the
    /// pooling allocator's instance slots). Default 500.
    pub max_instances: u32,
    /// Largest linear memory any instance may have; per-call
    /// [`Limits::memory_bytes`] is clamped to this. Default 256 MiB.
    pub max_memory_bytes: usize,
    /// Epoch tick: granularity of the CPU budget and of cooperative yields.
    /// Default 10 ms.
    pub epoch_tick: Duration,
    /// Idle upstream connections kept per host. Default 256. Keep it at
    /// least the number of calls that may be in flight to one host: below
    /// that, every burst closes the surplus connections and the next one
    /// reconnects (at 64 concurrent deliveries and 32 kept, ~1 in 7
    /// deliveries paid a new TCP connection).
    pub http_pool_max_idle_per_host: usize,
    /// How long an idle upstream connection is kept. Default 90 s.
    pub http_pool_idle_timeout: Duration,
    /// Bytes of guest output (stdout, stderr, `log`) forwarded to tracing per
    /// call; the rest is dropped and counted. Default 16 KiB.
    pub log_bytes_per_call: usize,
    /// PEM file of CA certificates trusted for `https` upstreams in addition
    /// to the public web roots (an operator's internal PKI). Default none.
    pub extra_ca_pem: Option<PathBuf>,
    /// Upstream connections open at once, all connectors together: the
    /// process-wide ceiling on egress descriptors. `None` derives it from
    /// the process's `RLIMIT_NOFILE`, keeping a reserve (a quarter of it,
    /// at least 128) for the listener, the database and files; see
    /// [`egress_ceiling`].
    pub max_egress_connections: Option<usize>,
    /// Until when calls may send upstream ([`EgressGate`]); open for good
    /// by default.
    pub egress_gate: Arc<EgressGate>,
    /// How long an instance is kept warm after its last delivery (see
    /// [`Limits::max_deliveries_per_instance`]). Default 10 s.
    pub instance_idle: Duration,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            cache_dir: None,
            max_instances: 500,
            max_memory_bytes: 256 << 20,
            epoch_tick: Duration::from_millis(10),
            http_pool_max_idle_per_host: 256,
            http_pool_idle_timeout: Duration::from_secs(90),
            log_bytes_per_call: 16 << 10,
            extra_ca_pem: None,
            max_egress_connections: None,
            egress_gate: Arc::new(EgressGate::open()),
            instance_idle: Duration::from_secs(10),
        }
    }
}

/// Per-call resource limits of a connector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Linear memory cap (all memories of the instance). Default 64 MiB.
    pub memory_bytes: usize,
    /// Wall-clock deadline of one call, I/O included. Default 30 s.
    pub deadline: Duration,
    /// CPU time the guest may spend executing (epoch-tick granularity).
    /// Default 5 s.
    pub cpu_budget: Duration,
    /// Timeout of one outgoing request, connect + response head. Default 10 s.
    pub request_timeout: Duration,
    /// Largest response body the guest may read. Default 4 MiB.
    pub max_response_bytes: usize,
    /// Host memory the call's `wasi:http` resources may hold (header
    /// fields, requests, buffered body chunks, connection buffers); see
    /// the `budget` module for how it bounds the worst case. Default 16 MiB.
    pub host_memory_bytes: usize,
    /// Host resources (handles: fields, requests, bodies, streams,
    /// pollables) the call may hold at once. Default 1,000.
    pub max_host_resources: usize,
    /// Outgoing requests in flight at once within one call; one more fails
    /// at once. Default 8.
    pub max_concurrent_requests: usize,
    /// Request-body bytes one call may send upstream, all requests
    /// together. Default 64 MiB (the ingest limit is 10 MiB).
    pub max_request_bytes: u64,
    /// Upstream connections this connector may have open (its own pool),
    /// all its calls together; a call that needs one more waits for one,
    /// within its request timeout. Default 128.
    pub max_connections: usize,
    /// Deliveries one instance may serve before it is replaced by a fresh
    /// one; 1 gives every delivery a fresh instance. An instance is
    /// replaced sooner after a trap, a limit hit or a leaked host resource
    /// (see the `warm` module). Default 1,000.
    pub max_deliveries_per_instance: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_bytes: 64 << 20,
            deadline: Duration::from_secs(30),
            cpu_budget: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            max_response_bytes: 4 << 20,
            host_memory_bytes: 16 << 20,
            max_host_resources: 1000,
            max_concurrent_requests: 8,
            max_request_bytes: 64 << 20,
            max_connections: 128,
            max_deliveries_per_instance: 1000,
        }
    }
}

impl Limits {
    /// Checks that the limits can be applied together: the host memory
    /// budget must leave each resource enough room (see the `budget`
    /// module). The error names the setting to change.
    pub fn check(&self) -> Result<(), String> {
        HostCaps::of(self).map(|_| ())
    }
}

/// A header the host adds to outgoing requests (a credential the guest
/// never sees), and the hosts it is for.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretHeader {
    /// Header name.
    pub name: String,
    /// Header value; never logged.
    pub value: String,
    /// `allowed_hosts` entries (`host:port` or `host`) whose requests get
    /// it; empty means every allowed host.
    pub hosts: Vec<String>,
}

impl fmt::Debug for SecretHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretHeader")
            .field("name", &self.name)
            .field("value", &"<redacted>")
            .field("hosts", &self.hosts)
            .finish()
    }
}

/// What a connector may do on one call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sandbox {
    /// The deployed connector's name (e.g. `hss-east`): its upstream
    /// connections are pooled and capped under this name. Empty: the
    /// component's own name.
    pub connector: String,
    /// Hosts reachable over `wasi:http`: `"host:port"`, or `"host"` for any
    /// port. A host that is an IP literal also allows that IP even if it is
    /// otherwise prohibited (link-local, loopback, metadata).
    pub allowed_hosts: Vec<String>,
    /// Configuration visible to the guest through `config.get`.
    pub config: BTreeMap<String, String>,
    /// Headers set on outgoing requests to their hosts (credentials); the
    /// guest never sees them. Invalid names/values are skipped with a
    /// warning.
    pub secret_headers: Vec<SecretHeader>,
    /// Resource limits.
    pub limits: Limits,
}

/// One delivery, as handed to the connector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Delivery id; the same on every attempt (the idempotency key).
    pub id: String,
    /// Attempt number, starting at 1.
    pub attempt: u32,
    /// Event id.
    pub event_id: String,
    /// Event type.
    pub event_type: String,
    /// Ordering keys.
    pub keys: Vec<String>,
    /// Event payload, JSON text.
    pub payload: String,
}

/// How one attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Delivered; final.
    Done,
    /// Transient failure (also: any sandbox failure). The host schedules the
    /// next attempt, no sooner than `after` if given (clamp it).
    Retry {
        /// Minimum delay requested by the connector (e.g. `Retry-After`).
        after: Option<Duration>,
        /// Why, for operators.
        reason: String,
    },
    /// Permanent failure: dead letter.
    Reject {
        /// Why, for operators.
        reason: String,
    },
    /// The connector was not called: every sandbox slot of this runtime was
    /// taken for as long as the call could wait. Not the connector's fault
    /// (the gateway is saturated); try again shortly.
    Busy {
        /// Why, for operators.
        reason: String,
    },
}

/// One configuration key a connector declares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigField {
    /// Key name.
    pub name: String,
    /// Whether the connector needs it.
    pub required: bool,
    /// Description for operators.
    pub description: String,
}

/// A connector's self-description, from `describe`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectorInfo {
    /// Connector name.
    pub name: String,
    /// Connector version.
    pub version: String,
    /// Configuration keys.
    pub config: Vec<ConfigField>,
}

/// Why the runtime could not be built or a component could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// The engine configuration was refused (e.g. pool sizes too large for
    /// this machine's address space).
    #[error("cannot create wasm engine: {0}")]
    Engine(String),
    /// The compile cache directory could not be set up.
    #[error("cannot use compile cache directory {dir}: {reason}")]
    Cache {
        /// The directory.
        dir: PathBuf,
        /// Why.
        reason: String,
    },
    /// The TLS settings for `https` upstreams (e.g. the extra CA file) were
    /// refused.
    #[error("TLS for upstreams: {0}")]
    Tls(String),
    /// The bytes are not a valid WebAssembly component.
    #[error("not a valid wasm component: {0}")]
    Compile(String),
    /// The component does not implement `switchboard:connector/connector@0.1.0`
    /// (wrong exports, or imports this gateway does not provide).
    #[error("component does not implement switchboard:connector/connector@0.1.0: {0}")]
    WrongWorld(String),
    /// `describe` failed, trapped or timed out.
    #[error("component's describe() failed: {0}")]
    Describe(String),
    /// The component needs more of the instance pool per call than this
    /// runtime has in all (`max_instances` slots).
    #[error("component cannot run here: {0}")]
    TooBig(String),
    /// No sandbox slot was free to run `describe`: the runtime is saturated,
    /// the component was not judged.
    #[error("cannot check the component now: {0}")]
    Busy(String),
}

struct Shared {
    engine: Engine,
    linker: Linker<State>,
    pools: Pools,
    /// One permit per instance slot of the pool. A call takes one before it
    /// instantiates and gives it back after its store is gone, so calls
    /// beyond `max_instances` wait for a slot instead of failing to
    /// instantiate (which would count against the connector as a failed
    /// attempt, and refuse a deploy as an invalid component).
    slots: Arc<tokio::sync::Semaphore>,
    slot_waits: std::sync::atomic::AtomicU64,
    slot_timeouts: std::sync::atomic::AtomicU64,
    cfg: RuntimeConfig,
    cache: Option<wasmtime::Cache>,
    stop_ticker: Arc<AtomicBool>,
    /// Instances kept warm between deliveries.
    idle: Idle,
    /// Ids of loaded components, whose warm instances are theirs alone.
    next_component: AtomicU64,
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.stop_ticker.store(true, Ordering::Relaxed);
    }
}

/// The connector runtime. Cheap to clone; all clones share one engine, one
/// linker, one epoch ticker and one pooled HTTP client.
#[derive(Clone)]
pub struct Runtime {
    shared: Arc<Shared>,
}

impl fmt::Debug for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runtime")
            .field("cfg", &self.shared.cfg)
            .finish()
    }
}

/// Compile-cache counters, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Loads served from the on-disk cache.
    pub hits: usize,
    /// Loads that compiled (and stored the result).
    pub misses: usize,
}

/// Instance-slot counters, for metrics: how full the pool is, and how often
/// a call had to wait for a slot or gave up waiting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SlotStats {
    /// Slots in the pool (`max_instances`).
    pub total: u32,
    /// Slots held by a call running now.
    pub in_use: u32,
    /// Calls that found every slot taken and waited.
    pub waited: u64,
    /// Calls that got no slot within their deadline (each a retry).
    pub timed_out: u64,
    /// Slots held by warm instances between deliveries (free for any call
    /// that needs them: the oldest are dropped first).
    pub warm: u32,
    /// Instances started (each a fresh instantiation).
    pub instances_started: u64,
    /// Deliveries served by an instance kept warm from an earlier one.
    pub instances_reused: u64,
}

/// Upstream-connection counters, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EgressStats {
    /// Most upstream connections open at once, all connectors together.
    pub ceiling: usize,
    /// Upstream connections open now (idle pooled ones included).
    pub open: usize,
}

/// The process's soft `RLIMIT_NOFILE` (1,024 if it cannot be read).
pub fn nofile_limit() -> u64 {
    rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX)
        .min(1 << 20)
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns the soft
/// limit before and after, and the hard limit. Call once at start-up,
/// before [`Runtime::new`] derives its egress ceiling from it.
pub fn raise_nofile_limit() -> Result<(u64, u64, u64), String> {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let before = getrlimit(Resource::Nofile);
    let show = |v: Option<u64>| v.unwrap_or(u64::MAX);
    if before.current != before.maximum {
        let raised = rustix::process::Rlimit {
            current: before.maximum,
            maximum: before.maximum,
        };
        setrlimit(Resource::Nofile, raised)
            .map_err(|e| format!("cannot raise the open-files limit: {e}"))?;
    }
    let after = getrlimit(Resource::Nofile);
    Ok((
        show(before.current),
        show(after.current),
        show(after.maximum),
    ))
}

/// The egress ceiling for a process that may open `nofile` descriptors: a
/// quarter of them, and at least 128, stay in reserve for the listener and
/// its clients, the database and files; the rest may be upstream
/// connections (at least 16).
pub fn egress_ceiling(nofile: u64) -> usize {
    let nofile = usize::try_from(nofile).unwrap_or(usize::MAX);
    let reserve = (nofile / 4).max(128);
    nofile.saturating_sub(reserve).max(16)
}

/// Bytes of each pooled linear memory kept resident between instances (see
/// [`Runtime::new`]).
const KEEP_RESIDENT_BYTES: usize = 256 << 10;

impl Runtime {
    /// Build the engine, the linker and the background epoch ticker.
    ///
    /// Must be called inside a Tokio runtime only for [`Runtime::load`] and
    /// [`Component::deliver`]; `new` itself does not need one.
    pub fn new(cfg: RuntimeConfig) -> Result<Runtime, RuntimeError> {
        let mut pool = PoolingAllocationConfig::new();
        let n = cfg.max_instances.max(1);
        // Each slot brings a fixed share of core instances, memories and
        // tables; a call holds as many slots as its component needs (see
        // `footprint`), so the pool never runs dry under a call.
        pool.total_component_instances(n)
            .total_core_instances(n.saturating_mul(footprint::CORE_INSTANCES_PER_SLOT))
            .total_memories(n.saturating_mul(footprint::MEMORIES_PER_SLOT))
            .total_tables(n.saturating_mul(footprint::TABLES_PER_SLOT))
            .total_stacks(n)
            .max_memory_size(cfg.max_memory_bytes)
            // Keep the first 256 KiB of each slot's memory resident, so the
            // next instance in the slot does not page-fault its way back in
            // and a teardown that fits needs no madvise (no TLB-shootdown
            // IPIs). Not more: without userfaultfd write-protection, Linux's
            // PAGEMAP_SCAN reports every resident page as written, so
            // teardown memsets all of it, touched or not (at 1 MiB that
            // memset was ~50% of a webhook delivery's CPU). 256 KiB covers a
            // connector built with the SDK's 128 KiB stack (stack, data and
            // the heap of a typical delivery); a guest with Rust's default
            // 1 MiB stack touches pages past it whatever this is set to.
            // docs/benchmarks-history.md, "Guest stack size", has the measurements.
            .linear_memory_keep_resident(KEEP_RESIDENT_BYTES)
            .table_keep_resident(64 << 10);

        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));

        let cache = match &cfg.cache_dir {
            None => None,
            Some(dir) => {
                let cache_err = |reason: String| RuntimeError::Cache {
                    dir: dir.clone(),
                    reason,
                };
                std::fs::create_dir_all(dir).map_err(|e| cache_err(e.to_string()))?;
                // wasmtime takes only an absolute directory; a relative one
                // (the default next to `sqlite://./switchboard.db`) is taken
                // from the working directory, as every other path is.
                let dir = std::path::absolute(dir).map_err(|e| cache_err(e.to_string()))?;
                let mut cache_cfg = wasmtime::CacheConfig::new();
                cache_cfg.with_directory(dir);
                let cache =
                    wasmtime::Cache::new(cache_cfg).map_err(|e| cache_err(format!("{e:#}")))?;
                config.cache(Some(cache.clone()));
                Some(cache)
            }
        };

        let engine = Engine::new(&config).map_err(|e| RuntimeError::Engine(format!("{e:#}")))?;
        let linker = build_linker(&engine).map_err(|e| RuntimeError::Engine(format!("{e:#}")))?;

        let stop_ticker = Arc::new(AtomicBool::new(false));

        let tls = tls::client_config(cfg.extra_ca_pem.as_deref()).map_err(RuntimeError::Tls)?;
        let ceiling = cfg
            .max_egress_connections
            .unwrap_or_else(|| egress_ceiling(nofile_limit()));
        let pools = Pools::new(
            cfg.http_pool_idle_timeout,
            cfg.http_pool_max_idle_per_host,
            tls,
            ceiling,
        );
        let shared = Arc::new(Shared {
            engine,
            linker,
            pools,
            slots: Arc::new(tokio::sync::Semaphore::new(n as usize)),
            slot_waits: Default::default(),
            slot_timeouts: Default::default(),
            cfg,
            cache,
            stop_ticker,
            idle: Idle::default(),
            next_component: AtomicU64::new(1),
        });
        spawn_epoch_ticker(&shared)?;
        Ok(Runtime { shared })
    }

    /// Instance-slot counters.
    pub fn slot_stats(&self) -> SlotStats {
        let s = &self.shared;
        let total = s.cfg.max_instances.max(1);
        let free = u32::try_from(s.slots.available_permits()).unwrap_or(total);
        let warm = u32::try_from(s.idle.slots()).unwrap_or(u32::MAX);
        SlotStats {
            total,
            in_use: total.saturating_sub(free).saturating_sub(warm),
            waited: s.slot_waits.load(Ordering::Relaxed),
            timed_out: s.slot_timeouts.load(Ordering::Relaxed),
            warm,
            instances_started: s.idle.started.load(Ordering::Relaxed),
            instances_reused: s.idle.reused.load(Ordering::Relaxed),
        }
    }

    /// Until when calls may send upstream (`RuntimeConfig::egress_gate`).
    pub fn egress_gate(&self) -> Arc<EgressGate> {
        self.shared.cfg.egress_gate.clone()
    }

    /// Upstream connections: the process-wide ceiling and how many are open.
    pub fn egress_stats(&self) -> EgressStats {
        EgressStats {
            ceiling: self.shared.pools.ceiling(),
            open: self.shared.pools.open(),
        }
    }

    /// Compile-cache counters (all zero without a cache directory).
    pub fn cache_stats(&self) -> CacheStats {
        self.shared
            .cache
            .as_ref()
            .map(|c| CacheStats {
                hits: c.cache_hits(),
                misses: c.cache_misses(),
            })
            .unwrap_or_default()
    }

    /// Compile (or load the cached compile of) `wasm`, check that it
    /// implements the connector world, instantiate it and call `describe`.
    ///
    /// Errors say which check failed; nothing is retained on error.
    pub async fn load(&self, wasm: &[u8]) -> Result<Component, RuntimeError> {
        self.load_with(wasm, &Limits::default()).await
    }

    /// [`Runtime::load`], running `describe` under `limits` (a connector's
    /// own memory cap, deadline and CPU budget), so a component that cannot
    /// start within them is refused here rather than failing every delivery.
    pub async fn load_with(&self, wasm: &[u8], limits: &Limits) -> Result<Component, RuntimeError> {
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(wasm)));
        let engine = self.shared.engine.clone();
        let bytes = wasm.to_vec();
        // Compiling is CPU-bound (tens of ms); keep it off the async workers.
        let compiled = tokio::task::spawn_blocking(move || {
            wasmtime::component::Component::new(&engine, &bytes)
        })
        .await
        .map_err(|e| RuntimeError::Compile(format!("compile task failed: {e}")))?
        .map_err(|e| RuntimeError::Compile(format!("{e:#}")))?;

        let footprint = Footprint::of(wasm).map_err(RuntimeError::Compile)?;
        let total = self.shared.cfg.max_instances.max(1);
        if footprint.slots() > total {
            return Err(RuntimeError::TooBig(format!(
                "one instance creates {} core instances, {} memories and {} tables, \
                 which take {} sandbox slots per call; this gateway has {total} \
                 (runtime.max_instances)",
                footprint.core_instances,
                footprint.memories,
                footprint.tables,
                footprint.slots()
            )));
        }

        let instance_pre = self
            .shared
            .linker
            .instantiate_pre(&compiled)
            .map_err(|e| RuntimeError::WrongWorld(format!("{e:#}")))?;
        let pre = bindings::ConnectorPre::new(instance_pre)
            .map_err(|e| RuntimeError::WrongWorld(format!("{e:#}")))?;

        let mut component = Component {
            inner: Arc::new(ComponentInner {
                id: self.shared.next_component.fetch_add(1, Ordering::Relaxed),
                pre,
                digest,
                footprint,
                info: ConnectorInfo {
                    name: String::new(),
                    version: String::new(),
                    config: Vec::new(),
                },
                shared: self.shared.clone(),
            }),
        };
        let info = component.describe(limits).await?;
        if let Some(inner) = Arc::get_mut(&mut component.inner) {
            inner.info = info;
        }
        tracing::info!(
            connector = %component.info().name,
            version = %component.info().version,
            digest = %component.digest(),
            "component loaded"
        );
        Ok(component)
    }
}

fn build_linker(engine: &Engine) -> wasmtime::Result<Linker<State>> {
    let mut linker = Linker::<State>::new(engine);
    // All of WASI p2 (Rust std imports wasi:cli, clocks, random, ...), with
    // the sandboxed defaults of the WasiCtx built per call.
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    // wasi:http types from wasmtime-wasi-http, the outgoing handler with our
    // egress gate in front.
    let options = wasmtime_wasi_http::p2::bindings::LinkOptions::default();
    wasmtime_wasi_http::p2::bindings::http::types::add_to_linker::<_, wasmtime_wasi_http::WasiHttp>(
        &mut linker,
        &options.into(),
        State::http_view,
    )?;
    linker
        .instance("wasi:http/outgoing-handler@0.2.12")?
        .func_wrap(
            "handle",
            |mut store: wasmtime::StoreContextMut<'_, State>,
             (request, options): (
                wasmtime::component::Resource<wasmtime_wasi_http::p2::types::HostOutgoingRequest>,
                Option<
                    wasmtime::component::Resource<
                        wasmtime_wasi_http::p2::bindings::http::types::RequestOptions,
                    >,
                >,
            )| {
                let state = store.data_mut();
                let http = WasiHttpCtxView {
                    ctx: &mut state.http,
                    table: &mut state.table,
                    hooks: &mut state.hooks,
                };
                egress::gated_handle(http, &state.policy, &state.connector, request, options)
                    .map(|r| (r,))
            },
        )?;
    wit::config::add_to_linker::<_, HasSelf<State>>(&mut linker, |s| s)?;
    wit::log::add_to_linker::<_, HasSelf<State>>(&mut linker, |s| s)?;
    Ok(linker)
}

/// The thread that advances the epoch every tick (CPU budgets, yields)
/// and, about once a second, drops instances idle for longer than
/// `instance_idle`.
fn spawn_epoch_ticker(shared: &Arc<Shared>) -> Result<(), RuntimeError> {
    let engine = shared.engine.clone();
    let stop = shared.stop_ticker.clone();
    let weak: Weak<Shared> = Arc::downgrade(shared);
    let tick = shared.cfg.epoch_tick.max(Duration::from_millis(1));
    let ticks_per_sweep = (Duration::from_secs(1).as_nanos() / tick.as_nanos()).max(1);
    std::thread::Builder::new()
        .name("wasm-epoch-ticker".into())
        .spawn(move || {
            let mut ticks: u128 = 0;
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(tick);
                engine.increment_epoch();
                ticks += 1;
                if ticks.is_multiple_of(ticks_per_sweep) {
                    let Some(shared) = weak.upgrade() else { break };
                    let expired = shared.idle.expired(shared.cfg.instance_idle);
                    drop(shared);
                    // Torn down off this thread: a long teardown here
                    // would delay every running guest's CPU-budget check.
                    if !expired.is_empty() {
                        let _ = std::thread::Builder::new()
                            .name("wasm-idle-teardown".into())
                            .spawn(move || drop(expired));
                    }
                }
            }
        })
        .map(|_| ())
        .map_err(|e| RuntimeError::Engine(format!("cannot start epoch ticker: {e}")))
}

struct ComponentInner {
    /// Unique in its runtime: names its warm instances.
    id: u64,
    pre: bindings::ConnectorPre<State>,
    digest: String,
    footprint: Footprint,
    info: ConnectorInfo,
    shared: Arc<Shared>,
}

impl Drop for ComponentInner {
    fn drop(&mut self) {
        // A version nobody can call again: its warm instances go now.
        self.shared.idle.forget(self.id);
    }
}

/// A loaded, validated connector component. Cheap to clone; in-flight calls
/// keep their version alive after a newer one replaces it.
#[derive(Clone)]
pub struct Component {
    inner: Arc<ComponentInner>,
}

impl fmt::Debug for Component {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Component")
            .field("digest", &self.inner.digest)
            .field("info", &self.inner.info)
            .finish()
    }
}

/// Why a call ended without an outcome from the guest.
#[derive(Debug, thiserror::Error)]
enum Interrupted {
    #[error("CPU budget of {0:?} exhausted")]
    CpuBudget(Duration),
}

impl Component {
    /// `"sha256:<hex>"` of the component bytes.
    pub fn digest(&self) -> &str {
        &self.inner.digest
    }

    /// The component's `describe()` answer, taken at load.
    pub fn info(&self) -> &ConnectorInfo {
        &self.inner.info
    }

    /// The instance-slot counters of the runtime it was loaded into.
    pub fn slot_stats(&self) -> SlotStats {
        Runtime {
            shared: self.inner.shared.clone(),
        }
        .slot_stats()
    }

    /// What one instance of it takes from the pool.
    pub fn footprint(&self) -> Footprint {
        self.inner.footprint
    }

    /// Waits for an instance slot, at most `deadline` less a margin (a
    /// tenth of it, or a second if that is more, but never more than nine
    /// tenths): a call that gets no slot ends as [`Outcome::Busy`] before
    /// any timer the caller set to the same deadline fires.
    ///
    /// Warm instances hold slots between deliveries: when none is free, idle
    /// ones are dropped, oldest first, before waiting, and none is kept
    /// while this call waits.
    async fn slot(&self, deadline: Duration) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let shared = &self.inner.shared;
        let slots = self.inner.footprint.slots();
        if let Ok(permit) = shared.slots.clone().try_acquire_many_owned(slots) {
            return Some(permit);
        }
        let _waiting = Waiting::new(&shared.idle.waiting);
        loop {
            if let Ok(permit) = shared.slots.clone().try_acquire_many_owned(slots) {
                return Some(permit);
            }
            if !shared.idle.evict_one() {
                break;
            }
        }
        shared.slot_waits.fetch_add(1, Ordering::Relaxed);
        let margin = (deadline / 10)
            .max(Duration::from_secs(1))
            .min(deadline / 10 * 9);
        let patience = deadline.saturating_sub(margin);
        match tokio::time::timeout(patience, shared.slots.clone().acquire_many_owned(slots)).await {
            Ok(Ok(permit)) => Some(permit),
            // The semaphore is never closed; treat it like a timeout anyway.
            Ok(Err(_)) | Err(_) => {
                shared.slot_timeouts.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    async fn describe(&self, limits: &Limits) -> Result<ConnectorInfo, RuntimeError> {
        let sandbox = Sandbox {
            limits: limits.clone(),
            ..Sandbox::default()
        };
        let deadline = sandbox.limits.deadline;
        let started = tokio::time::Instant::now();
        let Some(_slot) = self.slot(deadline).await else {
            return Err(RuntimeError::Busy(format!(
                "all {} sandbox slots stayed in use (runtime max_instances); try again",
                self.inner.shared.cfg.max_instances.max(1)
            )));
        };
        let name: Arc<str> = Arc::from("(loading)");
        let caps = HostCaps::of(&sandbox.limits).map_err(RuntimeError::Describe)?;
        let (mut store, log, _budget) = self.new_store(&sandbox, caps, name, Arc::from("describe"));
        let pre = self.inner.pre.clone();
        let result = tokio::time::timeout(deadline.saturating_sub(started.elapsed()), async {
            let instance = pre.instantiate_async(&mut store).await?;
            instance.call_describe(&mut store).await
        })
        .await;
        // The slot is free again only once the instance is torn down.
        drop(store);
        log.finish();
        let info = match result {
            Err(_) => {
                return Err(RuntimeError::Describe(format!(
                    "timed out after {deadline:?}"
                )))
            }
            Ok(Err(e)) if pool_exhausted(&e) => {
                return Err(RuntimeError::Busy(format!("sandbox pool exhausted: {e}")));
            }
            Ok(Err(e)) => {
                return Err(RuntimeError::Describe(failure_reason(&e, &log, &caps)));
            }
            Ok(Ok(info)) => info,
        };
        if info.name.trim().is_empty() {
            return Err(RuntimeError::Describe("empty connector name".into()));
        }
        Ok(ConnectorInfo {
            name: info.name,
            version: info.version,
            config: info
                .config
                .into_iter()
                .map(|f| ConfigField {
                    name: f.name,
                    required: f.required,
                    description: f.description,
                })
                .collect(),
        })
    }

    fn new_store(
        &self,
        sandbox: &Sandbox,
        caps: HostCaps,
        connector: Arc<str>,
        delivery_id: Arc<str>,
    ) -> (Store<State>, GuestLog, Arc<CallBudget>) {
        let shared = &self.inner.shared;
        let limits = &sandbox.limits;
        let log = GuestLog::new(
            connector.clone(),
            delivery_id,
            shared.cfg.log_bytes_per_call,
        );

        // Sandboxed defaults: no preopens, no env, no args, no sockets, no
        // name lookup. Only stdout/stderr are wired (to the bounded log).
        let wasi = WasiCtxBuilder::new()
            .stdout(log.stream(Source::Stdout))
            .stderr(log.stream(Source::Stderr))
            .build();

        let mut secret_headers = Vec::with_capacity(sandbox.secret_headers.len());
        for secret in &sandbox.secret_headers {
            match (
                http::HeaderName::try_from(secret.name.as_str()),
                http::HeaderValue::try_from(secret.value.as_str()),
            ) {
                (Ok(name), Ok(mut value)) => {
                    value.set_sensitive(true);
                    secret_headers.push(ScopedSecret {
                        name,
                        value,
                        hosts: (!secret.hosts.is_empty()).then(|| EgressPolicy::new(&secret.hosts)),
                    });
                }
                _ => {
                    tracing::warn!(connector = %connector, header = %secret.name, "skipping invalid secret header")
                }
            }
        }
        let client = shared.pools.client(
            pool_name(sandbox, &connector),
            limits.max_connections,
            limits.request_timeout,
        );
        let call_budget = CallBudget::new(limits);
        let mut http = WasiHttpCtx::new();
        http.set_field_size_limit(caps.resource_bytes);
        let mut table = ResourceTable::new();
        table.set_max_capacity(caps.resources);

        let memory = limits.memory_bytes.min(shared.cfg.max_memory_bytes);

        let state = State {
            wasi,
            http,
            table,
            hooks: EgressHooks {
                client,
                secret_headers,
                request_timeout: limits.request_timeout,
                max_response_bytes: limits.max_response_bytes,
                connector: connector.clone(),
                budget: call_budget.clone(),
                body_chunk: caps.body_chunk,
                pass: shared.cfg.egress_gate.pass(),
                gate: shared.cfg.egress_gate.clone(),
            },
            policy: EgressPolicy::new(&sandbox.allowed_hosts),
            config: sandbox.config.clone(),
            limits: MemoryCap {
                limits: StoreLimitsBuilder::new()
                    .memory_size(memory)
                    .trap_on_grow_failure(true)
                    .build(),
                cap: memory,
                peak: 0,
            },
            log: log.clone(),
            connector,
            cpu_ticks_left: cpu_ticks(limits, shared.cfg.epoch_tick),
        };
        let mut store = Store::new(&shared.engine, state);
        store.limiter(|s| &mut s.limits);
        store.set_epoch_deadline(1);
        let budget = limits.cpu_budget;
        store.epoch_deadline_callback(move |mut ctx| {
            let state = ctx.data_mut();
            if state.cpu_ticks_left == 0 {
                return Err(wasmtime::Error::new(Interrupted::CpuBudget(budget)));
            }
            state.cpu_ticks_left -= 1;
            // Yield through Tokio so spinning guests cannot starve other
            // deliveries (plain `Yield` measured ~10x worse, NOTES-wasm).
            Ok(UpdateDeadline::YieldCustom(
                1,
                Box::pin(tokio::task::yield_now()),
            ))
        });
        (store, log, call_budget)
    }

    /// Gives a warm instance a new delivery's budgets: log, CPU, host
    /// memory and requests, egress pass.
    fn rearm(&self, warm: &mut Warm, delivery_id: Arc<str>) -> (GuestLog, Arc<CallBudget>) {
        let shared = &self.inner.shared;
        let budget = CallBudget::new(&warm.sandbox.limits);
        let ticks = cpu_ticks(&warm.sandbox.limits, shared.cfg.epoch_tick);
        let limits = &warm.sandbox.limits;
        // The connector's pool as it is now (a settings change replaces it).
        let client = shared.pools.client(
            pool_name(&warm.sandbox, &self.inner.info.name),
            limits.max_connections,
            limits.request_timeout,
        );
        let state = warm.store.data_mut();
        state.log.rearm(delivery_id, shared.cfg.log_bytes_per_call);
        state.hooks.client = client;
        state.hooks.budget = budget.clone();
        state.hooks.pass = shared.cfg.egress_gate.pass();
        state.cpu_ticks_left = ticks;
        let log = state.log.clone();
        warm.store.set_epoch_deadline(1);
        (log, budget)
    }

    /// Run one delivery, in a warm instance of this version under an equal
    /// sandbox if one is idle, else in a fresh one (see [`warm`] for when an
    /// instance is kept). Never panics, never errors: a sandbox failure is
    /// [`Outcome::Retry`] with the reason.
    pub async fn deliver(&self, sandbox: &Sandbox, delivery: &Delivery) -> Outcome {
        let deadline = sandbox.limits.deadline;
        let caps = match HostCaps::of(&sandbox.limits) {
            Ok(caps) => caps,
            Err(why) => {
                return Outcome::Retry {
                    after: None,
                    reason: format!("connector limits cannot be applied: {why}"),
                }
            }
        };
        let started = tokio::time::Instant::now();
        let shared = &self.inner.shared;
        let connector: Arc<str> = Arc::from(self.inner.info.name.as_str());
        let delivery_id: Arc<str> = Arc::from(delivery.id.as_str());
        let ttl = shared.cfg.instance_idle;
        let (mut warm, log, budget, waited) = match shared.idle.take(self.inner.id, sandbox, ttl) {
            Some(mut warm) => {
                let (log, budget) = self.rearm(&mut warm, delivery_id);
                (warm, log, budget, Duration::ZERO)
            }
            None => {
                // Waiting for a slot counts against the call's wall-clock deadline.
                let Some(slot) = self.slot(deadline).await else {
                    return Outcome::Busy {
                        reason: format!(
                            "no sandbox slot free within {:?}: all {} are in use (runtime max_instances)",
                            started.elapsed(),
                            shared.cfg.max_instances.max(1)
                        ),
                    };
                };
                let waited = started.elapsed();
                let (store, log, budget) =
                    self.new_store(sandbox, caps, connector.clone(), delivery_id);
                let warm = Warm {
                    owner: self.inner.id,
                    sandbox: sandbox.clone(),
                    store,
                    instance: None,
                    slot,
                    served: 0,
                    idle_since: std::time::Instant::now(),
                };
                (warm, log, budget, waited)
            }
        };
        let wit_delivery = wit::types::Delivery {
            id: delivery.id.clone(),
            attempt: delivery.attempt,
            event_id: delivery.event_id.clone(),
            event_type: delivery.event_type.clone(),
            keys: delivery.keys.clone(),
            payload: delivery.payload.clone(),
        };
        let pre = &self.inner.pre;
        let result = tokio::time::timeout(deadline.saturating_sub(started.elapsed()), async {
            let instance = match warm.instance.take() {
                Some(instance) => instance,
                None => {
                    shared.idle.started.fetch_add(1, Ordering::Relaxed);
                    pre.instantiate_async(&mut warm.store).await?
                }
            };
            let answer = instance.call_deliver(&mut warm.store, &wit_delivery).await;
            warm.instance = Some(instance);
            answer
        })
        .await;
        warm.served = warm.served.saturating_add(1);
        // Before the instance may serve anyone else: its log is this call's
        // until here.
        log.finish();
        if let Ok(Err(e)) = &result {
            if let Some(hit) = limit_hit_of(e, &caps) {
                budget.record(hit);
            }
        }
        // Only an instance that answered by itself, within every limit, and
        // holds nothing it should not, serves another delivery; any other is
        // torn down here, and its slot is free again once it is.
        if matches!(result, Ok(Ok(_))) && budget.hit().is_none() && warm.reusable() {
            shared.idle.put(warm, ttl);
        } else {
            drop(warm);
        }
        let outcome = match result {
            // A host limit the call hit decides the outcome, whatever the
            // guest made of the error code it got (it may not even have
            // noticed: a refused request it did not wait for).
            _ if budget.hit().is_some() => Outcome::Retry {
                after: None,
                reason: budget.hit().map(|h| h.reason()).unwrap_or_default(),
            },
            Err(_) if waited >= Duration::from_millis(1) => Outcome::Retry {
                after: None,
                reason: format!(
                    "connector exceeded its wall-clock deadline of {deadline:?}, \
                     {waited:?} of it spent waiting for a sandbox slot"
                ),
            },
            Err(_) => Outcome::Retry {
                after: None,
                reason: format!("connector exceeded its wall-clock deadline of {deadline:?}"),
            },
            // The pool ran dry under the call (the footprint counts what it
            // can see; this is the backstop): the gateway's limit, not the
            // connector's failure.
            Ok(Err(e)) if pool_exhausted(&e) => Outcome::Busy {
                reason: format!("sandbox pool exhausted: {e}"),
            },
            Ok(Err(e)) => Outcome::Retry {
                after: None,
                reason: failure_reason(&e, &log, &caps),
            },
            Ok(Ok(wit::types::Outcome::Done)) => Outcome::Done,
            Ok(Ok(wit::types::Outcome::Retry(info))) => Outcome::Retry {
                after: info.after_ms.map(Duration::from_millis),
                reason: guest_log::escape(guest_log::cut(&info.reason, 4096)),
            },
            Ok(Ok(wit::types::Outcome::Reject(reason))) => Outcome::Reject {
                reason: guest_log::escape(guest_log::cut(&reason, 4096)),
            },
        };
        // Debug only: the gateway's dispatcher logs every outcome with its
        // decision (backoff, dead letter), so logging here would double it.
        match &outcome {
            Outcome::Done => {
                tracing::debug!(connector = %connector, delivery_id = %delivery.id, "delivered")
            }
            Outcome::Retry { reason, .. } => {
                tracing::debug!(connector = %connector, delivery_id = %delivery.id, %reason, "retry")
            }
            Outcome::Reject { reason } => {
                tracing::debug!(connector = %connector, delivery_id = %delivery.id, %reason, "rejected")
            }
            Outcome::Busy { reason } => {
                tracing::debug!(connector = %connector, delivery_id = %delivery.id, %reason, "busy")
            }
        }
        outcome
    }
}

/// The name a connector's upstream connections are pooled under: the
/// deployed connector's, else the component's own.
fn pool_name<'a>(sandbox: &'a Sandbox, component: &'a str) -> &'a str {
    if sandbox.connector.is_empty() {
        component
    } else {
        &sandbox.connector
    }
}

/// Epoch ticks of CPU a call may spend (at least one).
fn cpu_ticks(limits: &Limits, tick: Duration) -> u64 {
    let tick = tick.max(Duration::from_millis(1));
    u64::try_from(limits.cpu_budget.as_nanos() / tick.as_nanos().max(1))
        .unwrap_or(u64::MAX)
        .max(1)
}

/// Counts a call waiting for a slot for as long as it waits (cancelled or
/// not), so that no instance is kept warm meanwhile.
struct Waiting<'a>(&'a std::sync::atomic::AtomicUsize);

impl<'a> Waiting<'a> {
    fn new(count: &'a std::sync::atomic::AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Self(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Whether instantiating failed because the instance pool had no room left.
fn pool_exhausted(e: &wasmtime::Error) -> bool {
    e.chain()
        .any(|c| c.is::<wasmtime::PoolConcurrencyLimitError>())
}

/// A one-line reason for a failed call, for operators.
fn failure_reason(e: &wasmtime::Error, log: &GuestLog, caps: &HostCaps) -> String {
    let full = format!("{e:#}");
    let limit_hit = limit_hit_of(e, caps);
    let detail = if let Some(Interrupted::CpuBudget(b)) = e.downcast_ref::<Interrupted>() {
        format!("connector exceeded its CPU budget of {b:?}")
    } else if let Some(exit) = e.downcast_ref::<wasmtime_wasi::I32Exit>() {
        format!(
            "connector called exit({}) instead of returning an outcome",
            exit.0
        )
    } else if let Some(hit) = limit_hit {
        hit.reason()
    } else if full.contains("forcing trap when growing memory") {
        "connector exceeded its memory limit".to_string()
    } else if let Some(trap) = e.downcast_ref::<wasmtime::Trap>() {
        format!("connector trapped: {trap}")
    } else {
        format!(
            "connector failed: {}",
            guest_log::cut(full.lines().next().unwrap_or(""), 512)
        )
    };
    match log.stderr_tail() {
        Some(tail) => format!("{detail}; stderr: {tail}"),
        None => detail,
    }
}

/// The host limit a trap came from, if it came from one: wasmtime traps
/// when the resource table is full or a `fields` map would outgrow its
/// size limit.
fn limit_hit_of(e: &wasmtime::Error, caps: &HostCaps) -> Option<LimitHit> {
    e.chain().find_map(|cause| {
        if matches!(
            cause.downcast_ref::<wasmtime::component::ResourceTableError>(),
            Some(wasmtime::component::ResourceTableError::Full)
        ) {
            return Some(LimitHit::Resources(caps.resources));
        }
        match cause.downcast_ref::<wasmtime_wasi_http::FieldMapError>() {
            Some(
                wasmtime_wasi_http::FieldMapError::TotalSizeTooBig
                | wasmtime_wasi_http::FieldMapError::TooManyFields,
            ) => Some(LimitHit::FieldsSize(caps.resource_bytes)),
            _ => None,
        }
    })
}

/// Per-call store data.
struct State {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    hooks: EgressHooks,
    policy: EgressPolicy,
    config: BTreeMap<String, String>,
    limits: MemoryCap,
    log: GuestLog,
    connector: Arc<str>,
    cpu_ticks_left: u64,
}

impl State {
    fn http_view(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl wit::config::Host for State {
    fn get(&mut self, name: String) -> Option<String> {
        self.config.get(&name).cloned()
    }
}

impl wit::log::Host for State {
    fn log(&mut self, level: wit::log::Level, message: String) {
        let level = match level {
            wit::log::Level::Trace => guest_log::Level::Trace,
            wit::log::Level::Debug => guest_log::Level::Debug,
            wit::log::Level::Info => guest_log::Level::Info,
            wit::log::Level::Warn => guest_log::Level::Warn,
            wit::log::Level::Error => guest_log::Level::Error,
        };
        self.log.log(level, &message);
    }
}

impl wit::types::Host for State {}
