//! Helpers shared by the runtime's test binaries: the built guests, and a
//! delivery to hand them.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::path::PathBuf;
use switchboard_sandbox::{Component, Delivery, Runtime};

/// The bytes of the built guest `name` (`connectors/…`, wasm32-wasip2).
pub fn wasm(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/wasm32-wasip2/release")
        .join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read guest {}: {e}\nBuild the guest components first: \
             `cd connectors && cargo build --release`",
            path.display()
        )
    })
}

/// `name` loaded into `rt`.
pub async fn load(rt: &Runtime, name: &str) -> Component {
    rt.load(&wasm(name))
        .await
        .unwrap_or_else(|e| panic!("loading {name}: {e}"))
}

pub fn delivery(payload: &str) -> Delivery {
    Delivery {
        id: "dlv-1".into(),
        attempt: 1,
        event_id: "evt-000123".into(),
        event_type: "number.assign".into(),
        keys: vec!["msisdn:2065551234".into()],
        payload: payload.into(),
    }
}
