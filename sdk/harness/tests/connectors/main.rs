//! The shipped connectors (`connectors/*`), each run through the harness in
//! the real sandbox against a `FakeUpstream`: status → outcome tables, the
//! shape of every request, `Idempotency-Key`, `Retry-After`, refused input.
//!
//! The connectors are built separately (they target wasm32-wasip2):
//!     cd connectors && cargo build --release
//! A missing `.wasm` fails the test with that command; nothing is skipped.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod crm;
mod harness;
mod hss;
mod sms;
mod template;
mod webhook;

use switchboard_connector_test::{Delivery, FakeUpstream, Harness, OutcomeExt, Reply};

/// How every connector classifies an answer it has no special case for
/// (SPEC §4.5): 2xx done; 408, 429, 5xx retry; anything else reject.
pub const SPEC_STATUSES: &[(u16, &str)] = &[
    (200, "done"),
    (201, "done"),
    (202, "done"),
    (204, "done"),
    (408, "retry"),
    (429, "retry"),
    (500, "retry"),
    (502, "retry"),
    (503, "retry"),
    (504, "retry"),
    (301, "reject"),
    (400, "reject"),
    (401, "reject"),
    (403, "reject"),
    (404, "reject"),
    (422, "reject"),
];

/// Deliver `delivery()` once per row of `table` (status → expected kind),
/// the upstream answering that status with a recognisable body, and report
/// every mismatching row at once. A reject's reason must name the status
/// and quote the body.
pub async fn check_statuses(
    h: &Harness,
    up: &FakeUpstream,
    table: &[(u16, &str)],
    delivery: impl Fn() -> Delivery,
) {
    let mut wrong = Vec::new();
    for &(status, want) in table {
        up.push(Reply::status(status).body("upstream-body"));
        let outcome = h.deliver(delivery()).await;
        if outcome.kind() != want {
            wrong.push(format!("HTTP {status}: want {want}, got {outcome:?}"));
        } else if want == "reject" {
            let reason = outcome.reason().unwrap_or("");
            if !reason.contains(&status.to_string()) || !reason.contains("upstream-body") {
                wrong.push(format!(
                    "HTTP {status}: reason lacks status or body: {reason:?}"
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "misclassified:\n{}", wrong.join("\n"));
}

/// `127.0.0.1:<port>` with nothing listening: connections are refused.
pub fn refused_host() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    addr.to_string()
}
