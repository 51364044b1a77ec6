//! Shared test helpers: a fresh store per test, events built tersely.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use switchboard::queue::event::parse_body;
use switchboard::store::{self, Routed, Store};

pub struct TestStore {
    pub store: Arc<dyn Store>,
    pub url: String,
    _dir: Option<tempfile::TempDir>,
}

impl TestStore {
    /// Drops the store (as a crash would: no shutdown) and opens it again.
    pub async fn reopen(&mut self) {
        // Give the writer task a moment to see its channel close.
        let url = self.url.clone();
        self.store = store::open(&url).await.expect("reopen store");
    }
}

/// A fresh, empty SQLite store in its own directory.
pub async fn sqlite() -> TestStore {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("sb.db").display());
    TestStore {
        store: store::open(&url).await.unwrap(),
        url,
        _dir: Some(dir),
    }
}

pub fn ev(id: &str, ty: &str, keys: &[&str], connectors: &[&str]) -> Routed {
    let body = serde_json::json!({"id": id, "type": ty, "keys": keys, "payload": {"id": id}});
    let mut events = parse_body(body.to_string().as_bytes(), 1).unwrap();
    Routed {
        event: events.remove(0),
        connectors: connectors.iter().map(|c| c.to_string()).collect(),
    }
}
