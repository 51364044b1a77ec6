//! The gateway's side of the Wasm runtime: which component version and
//! sandbox each connector runs, and the [`Deliver`] implementation that runs
//! an attempt in it.
//!
//! Swapping a connector's component replaces an `Arc`: deliveries that start
//! afterwards use the new version at once, attempts already running keep the
//! version they started with until they finish.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use switchboard_runtime::{Component, Delivery, Limits, Outcome, Runtime, Sandbox};

use crate::config::ConnectorConfig;
use crate::dispatch::{AttemptOutcome, Deliver};
use crate::store::Claimed;

/// How long a delivery of a connector without a component waits before it is
/// tried again (the operator may deploy one meanwhile).
const NO_COMPONENT_RETRY: Duration = Duration::from_secs(30);

struct Slot {
    sandbox: Arc<Sandbox>,
    component: RwLock<Option<Component>>,
}

/// Connector name → the component and sandbox its deliveries run in.
#[derive(Clone)]
pub struct Connectors {
    runtime: Runtime,
    slots: Arc<HashMap<String, Slot>>,
}

impl Connectors {
    pub fn new(runtime: Runtime, configs: &[ConnectorConfig]) -> Self {
        let slots = configs
            .iter()
            .map(|c| {
                let slot = Slot {
                    sandbox: Arc::new(sandbox_of(c)),
                    component: RwLock::new(None),
                };
                (c.name.clone(), slot)
            })
            .collect();
        Self {
            runtime,
            slots: Arc::new(slots),
        }
    }

    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// Installs `component` for `connector`; returns the version it replaced.
    pub fn install(&self, connector: &str, component: Component) -> Option<Component> {
        let slot = self.slots.get(connector)?;
        let mut current = slot.component.write().unwrap_or_else(|p| p.into_inner());
        current.replace(component)
    }

    pub fn current(&self, connector: &str) -> Option<Component> {
        let slot = self.slots.get(connector)?;
        let current = slot.component.read().unwrap_or_else(|p| p.into_inner());
        current.clone()
    }
}

fn sandbox_of(c: &ConnectorConfig) -> Sandbox {
    Sandbox {
        allowed_hosts: c.allowed_hosts.clone(),
        config: c
            .config
            .iter()
            .map(|(k, v)| (k.clone(), v.to_text()))
            .collect(),
        secret_headers: c
            .secret_headers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        limits: Limits {
            memory_bytes: c.limits.memory_mb.saturating_mul(1 << 20),
            deadline: Duration::from_millis(c.limits.deadline_ms),
            cpu_budget: Duration::from_millis(c.limits.cpu_budget_ms),
            request_timeout: Duration::from_millis(c.limits.request_timeout_ms),
            max_response_bytes: c.limits.max_response_bytes,
        },
    }
}

#[async_trait]
impl Deliver for Connectors {
    async fn deliver(&self, d: &Claimed) -> AttemptOutcome {
        let Some(slot) = self.slots.get(&d.connector) else {
            return AttemptOutcome::Retry {
                after: Some(NO_COMPONENT_RETRY),
                reason: format!("connector {:?} is not configured on this node", d.connector),
            };
        };
        let component = slot
            .component
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let Some(component) = component else {
            return AttemptOutcome::Retry {
                after: Some(NO_COMPONENT_RETRY),
                reason: format!("no component is deployed for connector {:?}", d.connector),
            };
        };
        let delivery = Delivery {
            id: d.delivery_id.to_string(),
            attempt: d.attempt,
            event_id: d.event.id.clone(),
            event_type: d.event.event_type.clone(),
            keys: d.event.keys.clone(),
            payload: d.event.payload.clone(),
        };
        match component.deliver(&slot.sandbox, &delivery).await {
            Outcome::Done => AttemptOutcome::Done,
            Outcome::Retry { after, reason } => AttemptOutcome::Retry { after, reason },
            Outcome::Reject { reason } => AttemptOutcome::Reject { reason },
        }
    }
}
