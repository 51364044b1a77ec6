//! Connectors as the gateway runs them: loading, deploying and rolling back
//! component versions into each connector's registry entry, and the
//! [`Deliver`] implementation that runs an attempt in the entry's component
//! and sandbox.
//!
//! Swapping a connector's component replaces an `Arc` in its entry:
//! deliveries that start afterwards use the new version at once, attempts
//! already running keep the version they started with until they finish.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use switchboard_sandbox::{Component, Delivery, Outcome, Runtime};

use sha2::{Digest, Sha256};

use crate::config::ConnectorConfig;
use crate::dispatch::{AttemptOutcome, Deliver};
use crate::queue::now_ms;
use crate::registry::Registry;
use crate::store::{Claimed, ComponentVersion, Retention, Store, StoreError};

/// Why a component could not be deployed or rolled back.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("no connector named {0:?} is configured")]
    UnknownConnector(String),
    /// The upload failed validation; the running version is unchanged.
    #[error("component refused: {0}")]
    Invalid(String),
    #[error("connector {0:?} has no earlier version to roll back to")]
    NoPreviousVersion(String),
    /// Every sandbox slot stayed busy: the upload was not judged, and the
    /// running version stays.
    #[error("{0}")]
    Busy(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// `sha256:<hex>` of component bytes, as the runtime reports digests.
pub fn digest_of(wasm: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(wasm)))
}

/// How long a delivery of a connector without a component waits before it is
/// tried again: about one store check, since a component deployed through
/// another node arrives with the next one. A connector that stays without a
/// component trips its breaker, which then probes at its own, slower pace.
const NO_COMPONENT_RETRY: Duration = Duration::from_secs(2);

/// The Wasm runtime, and the registry whose entries hold each connector's
/// sandbox settings and component. The fleet adds and reconfigures the
/// entries; this loads components into them.
#[derive(Clone)]
pub struct Connectors {
    runtime: Runtime,
    registry: Registry,
    /// Component versions kept per connector (`storage.component_versions`).
    keep_versions: u32,
    /// The digest of each connector's configured component file, as read at
    /// start: that version is never pruned, so a restart does not take the
    /// file's bytes for new ones and replace a version deployed since.
    configured: Arc<std::sync::Mutex<std::collections::HashMap<String, String>>>,
}

impl Connectors {
    /// `keep_versions`: component versions kept per connector when a new
    /// one is deployed (0 keeps all).
    pub fn new(runtime: Runtime, registry: Registry, keep_versions: u32) -> Self {
        Self {
            runtime,
            registry,
            keep_versions,
            configured: Default::default(),
        }
    }

    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// Installs `component` for `connector`; returns the version it replaced.
    pub fn install(&self, connector: &str, component: Component) -> Option<Component> {
        self.registry.get(connector)?.install(component)
    }

    pub fn is_configured(&self, connector: &str) -> bool {
        self.registry.get(connector).is_some()
    }

    /// Validates `wasm` (compiles, implements the world, answers `describe`),
    /// stores it as the connector's next version and makes it the one new
    /// deliveries use. On any error the running version stays.
    pub async fn deploy(
        &self,
        store: &dyn Store,
        connector: &str,
        wasm: &[u8],
        actor: &str,
    ) -> Result<ComponentVersion, DeployError> {
        let Some(entry) = self.registry.get(connector) else {
            return Err(DeployError::UnknownConnector(connector.to_string()));
        };
        // Judged under the connector's own limits: a component that cannot
        // even describe itself within them would fail every delivery.
        let limits = entry.sandbox().limits.clone();
        let component = self
            .runtime
            .load_with(wasm, &limits)
            .await
            .map_err(|e| match e {
                switchboard_sandbox::RuntimeError::Busy(_) => DeployError::Busy(e.to_string()),
                e => DeployError::Invalid(e.to_string()),
            })?;
        let info = info_json(&component);
        let configured = self
            .configured
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(connector)
            .cloned();
        let stored = store
            .catalog()
            .add_component(
                connector,
                component.digest(),
                wasm,
                &info,
                actor,
                now_ms(),
                Retention {
                    keep: self.keep_versions,
                    except_digest: configured.as_deref(),
                },
            )
            .await?;
        self.install(connector, component);
        tracing::info!(connector, version = stored.version, digest = %stored.digest, "component deployed");
        Ok(stored)
    }

    /// Re-activates the version uploaded before the active one.
    pub async fn rollback(
        &self,
        store: &dyn Store,
        connector: &str,
        actor: &str,
    ) -> Result<ComponentVersion, DeployError> {
        if !self.is_configured(connector) {
            return Err(DeployError::UnknownConnector(connector.to_string()));
        }
        let versions = store.catalog().component_versions(connector).await?;
        let active = versions.iter().find(|v| v.active).map(|v| v.version);
        let previous = versions
            .iter()
            .find(|v| active.is_some_and(|a| v.version < a))
            .cloned()
            .ok_or_else(|| DeployError::NoPreviousVersion(connector.to_string()))?;
        let component = self
            .load_version(store, connector, previous.version)
            .await?;
        // Another node's deploy may have pruned it since it was listed.
        if !store
            .catalog()
            .activate_component(connector, previous.version, actor, now_ms())
            .await?
        {
            return Err(DeployError::Invalid(format!(
                "version {} is no longer stored",
                previous.version
            )));
        }
        self.install(connector, component);
        tracing::info!(connector, version = previous.version, digest = %previous.digest, "rolled back");
        Ok(ComponentVersion {
            active: true,
            ..previous
        })
    }

    async fn load_version(
        &self,
        store: &dyn Store,
        connector: &str,
        version: i64,
    ) -> Result<Component, DeployError> {
        let wasm = store
            .catalog()
            .component_wasm(connector, version)
            .await?
            .ok_or_else(|| DeployError::Invalid(format!("version {version} is not stored")))?;
        let limits = self
            .registry
            .get(connector)
            .map(|entry| entry.sandbox().limits.clone())
            .unwrap_or_default();
        self.runtime
            .load_with(&wasm, &limits)
            .await
            .map_err(|e| match e {
                switchboard_sandbox::RuntimeError::Busy(_) => DeployError::Busy(e.to_string()),
                e => DeployError::Invalid(format!("stored version {version}: {e}")),
            })
    }

    /// At start: deploys each connector's configured component file if its
    /// bytes are new to the registry, then installs every connector's active
    /// version. A version that was hot-loaded or rolled back through the API
    /// stays active across restarts unless the configured file changes.
    pub async fn restore(
        &self,
        store: &dyn Store,
        configs: &[ConnectorConfig],
    ) -> Result<(), RestoreError> {
        for c in configs {
            let versions = store.catalog().component_versions(&c.name).await?;
            if let Some(path) = &c.component {
                let wasm = tokio::fs::read(path)
                    .await
                    .map_err(|source| RestoreError::File {
                        connector: c.name.clone(),
                        path: path.clone(),
                        source,
                    })?;
                let digest = digest_of(&wasm);
                self.configured
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(c.name.clone(), digest.clone());
                if !versions.iter().any(|v| v.digest == digest) {
                    self.deploy(store, &c.name, &wasm, "config")
                        .await
                        .map_err(|e| RestoreError::Deploy {
                            connector: c.name.clone(),
                            path: path.clone(),
                            reason: e.to_string(),
                        })?;
                    continue;
                }
            }
            let versions = store.catalog().component_versions(&c.name).await?;
            match versions.iter().find(|v| v.active) {
                Some(active) => {
                    let component = self
                        .load_version(store, &c.name, active.version)
                        .await
                        .map_err(|e| RestoreError::Deploy {
                            connector: c.name.clone(),
                            path: format!("registry version {}", active.version).into(),
                            reason: e.to_string(),
                        })?;
                    tracing::info!(connector = %c.name, version = active.version, digest = %active.digest, "component loaded");
                    self.install(&c.name, component);
                }
                None => tracing::warn!(
                    connector = %c.name,
                    "no component deployed yet; deliveries wait until one is uploaded"
                ),
            }
        }
        Ok(())
    }

    /// Installs each connector's active version where it differs from the
    /// one running here: a deploy or rollback made through another node on
    /// the same database. Returns how many connectors changed.
    pub async fn sync(&self, store: &dyn Store) -> Result<usize, DeployError> {
        let mut changed = 0;
        for entry in self.registry.entries() {
            let connector = entry.name();
            let versions = store.catalog().component_versions(connector).await?;
            let Some(active) = versions.into_iter().find(|v| v.active) else {
                continue;
            };
            if entry
                .component()
                .is_some_and(|c| c.digest() == active.digest)
            {
                continue;
            }
            let component = self.load_version(store, connector, active.version).await?;
            entry.install(component);
            tracing::info!(connector = %connector, version = active.version, digest = %active.digest, "component changed through another node; now serving it");
            changed += 1;
        }
        Ok(changed)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("connector {connector:?}: cannot read component {path}: {source}")]
    File {
        connector: String,
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("connector {connector:?}: component {path} was refused: {reason}")]
    Deploy {
        connector: String,
        path: std::path::PathBuf,
        reason: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn info_json(c: &Component) -> serde_json::Value {
    let info = c.info();
    serde_json::json!({
        "name": info.name,
        "version": info.version,
        "config": info.config.iter().map(|f| serde_json::json!({
            "name": f.name, "required": f.required, "description": f.description,
        })).collect::<Vec<_>>(),
    })
}

#[async_trait]
impl Deliver for Connectors {
    fn egress_gate(&self) -> Option<std::sync::Arc<switchboard_sandbox::EgressGate>> {
        Some(self.runtime.egress_gate()).filter(|g| g.fences())
    }

    async fn deliver(&self, d: &Claimed) -> AttemptOutcome {
        let Some(entry) = self.registry.get(&d.connector) else {
            return AttemptOutcome::Retry {
                after: Some(NO_COMPONENT_RETRY),
                reason: format!("connector {:?} is not configured on this node", d.connector),
            };
        };
        let Some(component) = entry.component() else {
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
        match component.deliver(&entry.sandbox(), &delivery).await {
            Outcome::Done => AttemptOutcome::Done,
            Outcome::Retry { after, reason } => AttemptOutcome::Retry { after, reason },
            Outcome::Reject { reason } => AttemptOutcome::Reject { reason },
            Outcome::Busy { reason } => AttemptOutcome::Busy { reason },
        }
    }
}
