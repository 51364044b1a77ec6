//! Switchboard: a provisioning gateway that stores change events durably and
//! delivers each to every external system that must hear about it, in order
//! per resource key, through sandboxed WebAssembly connectors.
//!
//! Module map (one concept, one place; `docs/ARCHITECTURE.md` has the path
//! of an event through them):
//! - [`queue`] — the domain: events, delivery states, routing, retry policy; no I/O.
//! - [`store`] — the durable queue behind the [`store::Store`] boundary.
//! - [`dispatch`] — claim → run connector → apply outcome; lease rescue.
//! - [`connectors`] — each connector's component version and sandbox, and
//!   running an attempt in it (the Wasm sandbox itself is the
//!   `switchboard-sandbox` crate).
//! - [`fleet`] — the connector configs in force and the route table.
//! - [`registry`] — one record per connector: policy, sandbox, component,
//!   waker, breaker and counters, read by dispatch, the API and metrics.
//! - [`clock`] — the dispatcher's time: wall clock, or simulated for outage runs.
//! - [`api`] — HTTP: ingest, operator API, health, metrics, OpenAPI.
//! - [`ui`] — the operator console at `/ui/`: sessions, pages, actions, plots.
//! - [`config`] — the TOML file and `SWITCHBOARD_*` overrides.
//! - [`app`] — wiring and ordered shutdown; [`cli`] — the operator commands.

pub mod api;
pub mod app;
pub mod cli;
pub mod clock;
pub mod config;
pub mod connectors;
pub mod dispatch;
pub mod fleet;
pub mod metrics;
pub mod queue;
pub mod registry;
pub mod replay;
pub mod store;
pub mod supervise;
pub mod timefmt;
pub mod ui;
