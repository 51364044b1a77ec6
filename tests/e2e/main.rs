//! End-to-end tests: the real `switchboard` binary, real connectors built as
//! Wasm components, and fake upstreams on loopback whose behaviour changes
//! mid-test. Build the connectors first (`make test` does).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cluster;
#[path = "../../host/tests/common/mod.rs"]
mod common;
mod console;
mod harness;
mod hotload;
mod operator;
mod outage;
mod piped;
mod quickstart;
mod reassign;
mod recovery;
mod replay;
mod sandbox;
mod scaffold;
mod storage;
mod webdriver;
