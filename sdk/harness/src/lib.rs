//! # switchboard-connector-test — unit-test a connector without the gateway
//!
//! A connector is a `.wasm` component; this crate runs it natively in the
//! gateway's own sandbox (`switchboard-sandbox`: the same memory cap, CPU
//! budget, egress gates and secret-header injection as in production) and
//! points it at a [`FakeUpstream`], a local HTTP server whose answers a test
//! scripts and whose requests it records.
//!
//! ```no_run
//! use switchboard_connector_test::{json, Delivery, FakeUpstream, Harness, Outcome, Reply};
//! use std::time::Duration;
//!
//! #[tokio::test]
//! async fn retries_on_503_honouring_retry_after() {
//!     let upstream = FakeUpstream::start().await;
//!     upstream.push(Reply::status(503).header("retry-after", "7"));
//!
//!     // Finds target/wasm32-wasip2/release/webhook.wasm; panics with the
//!     // build command if it is not built.
//!     let webhook = Harness::connector("webhook")
//!         .config("url", upstream.url("/hook"))
//!         .allow_host(upstream.host())
//!         .secret_header("authorization", "Bearer t0ken");
//!
//!     let outcome = webhook
//!         .deliver(
//!             Delivery::new("number.assign")
//!                 .id("dlv-1")
//!                 .key("msisdn:2065551234")
//!                 .payload(json!({"msisdn": "2065551234"})),
//!         )
//!         .await;
//!
//!     assert!(matches!(
//!         outcome,
//!         Outcome::Retry { after: Some(d), .. } if d == Duration::from_secs(7)
//!     ));
//!     let req = upstream.last_request().expect("one request");
//!     assert_eq!(req.method, "POST");
//!     assert_eq!(req.header("idempotency-key"), Some("dlv-1"));
//!     assert_eq!(req.header("authorization"), Some("Bearer t0ken"));
//!     assert_eq!(req.json, Some(json!({"msisdn": "2065551234"})));
//! }
//! ```
//!
//! Build the connector before running its tests (the harness never builds
//! it, and never skips a test whose `.wasm` is missing: it fails and names
//! the command):
//!
//! ```text
//! cd connectors && cargo build --release      # in the Switchboard repo
//! cargo build --release                       # in a crate made by `switchboard connector new`
//! ```
//!
//! [`scaffold()`] creates such a crate; it is also built without the default
//! `harness` feature, for the gateway CLI.
//!
//! ## Design
//! - Each [`Harness`] owns a small [`switchboard_sandbox::Runtime`] and
//!   compiles its component on first use (tens of milliseconds). Nothing is
//!   shared between harnesses, so tests stay independent under `cargo
//!   test`'s parallelism and across Tokio runtimes.
//! - [`Harness::deliver`] returns the runtime's [`Outcome`] unchanged: the
//!   connector's own classification, or a `Retry` for a sandbox failure
//!   (trap, CPU budget, deadline, memory cap), exactly as the gateway sees it.
//! - This is test tooling: misuse that can only be a bug in the test (an
//!   unreadable `.wasm`, an invalid scripted header) panics with a message
//!   that says what to fix; the `try_*` variants return errors instead.

#![warn(missing_docs)]

#[cfg(feature = "harness")]
mod harness;
mod polyglot;
pub mod scaffold;
#[cfg(feature = "harness")]
mod upstream;

#[cfg(feature = "harness")]
pub use harness::{Delivery, Harness, HarnessError, OutcomeExt};
pub use scaffold::{scaffold, ScaffoldError};
#[cfg(feature = "harness")]
pub use serde_json::{self, json};
#[cfg(feature = "harness")]
pub use switchboard_sandbox::{self as runtime, ConfigField, ConnectorInfo, Limits, Outcome};
#[cfg(feature = "harness")]
pub use upstream::{FakeUpstream, RecordedRequest, Reply};
