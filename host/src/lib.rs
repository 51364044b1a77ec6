//! Switchboard: a provisioning gateway that stores change events durably and
//! delivers each to every external system that must hear about it, in order
//! per resource key, through sandboxed WebAssembly connectors.
//!
//! Module map (one concept, one place):
//! - [`queue`] — the domain: events, delivery states, routing, retry policy; no I/O.
//! - [`store`] — the durable queue behind the [`store::Store`] boundary.
//! - [`dispatch`] — claim → run connector → apply outcome; lease rescue.
//! - [`clock`] — the dispatcher's time: wall clock, or simulated for outage runs.
//! - [`api`] — HTTP: ingest and event look-up.
//! - [`config`] — the TOML file and `SWITCHBOARD_*` overrides.

pub mod api;
pub mod app;
pub mod cli;
pub mod clock;
pub mod config;
pub mod dispatch;
pub mod fleet;
pub mod metrics;
pub mod queue;
pub mod runtime;
pub mod store;
