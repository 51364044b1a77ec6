//! The connectors a gateway serves, which connectors each event type routes
//! to ([`RouteTable`]), and changing them while it runs.
//!
//! The config file's `[[connectors]]` are the base; a connector created or
//! changed through the operator API (`PUT /v1/connectors/{name}`) is stored
//! in the store, overrides the file's connector of that name, survives
//! restarts and reaches every node sharing the database (each node looks for
//! changes every 2 s, with the component check). Applying a config updates,
//! in place, the route table ingest uses and the connector's entry in the
//! [`Registry`] (which the fleet owns): its sandbox (allowed hosts, config
//! values, secret headers, limits) and its dispatch policy (concurrency,
//! rate, retry, breaker, dead letters, deadline). A new connector gets an
//! entry, its stored component, then a dispatch loop of its own. Attempts
//! already running finish with the settings they started with.
//!
//! Every connector in the configs in force has a registry entry; during an
//! apply the entry may be ahead of the configs, never behind.

use std::sync::{Arc, OnceLock, RwLock};

use crate::config::{Bounds, ConfigError, ConnectorConfig};
use crate::connectors::Connectors;
use crate::dispatch::DispatchControl;
use crate::queue::event::NewEvent;
use crate::queue::now_ms;
use crate::queue::route::{coalesce_of, expiry_of, Route};
use crate::registry::Registry;
use crate::store::{Routed, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error(transparent)]
    Invalid(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

struct Current {
    configs: Arc<Vec<ConnectorConfig>>,
    routes: Arc<RouteTable>,
}

#[derive(Clone)]
pub struct Fleet {
    current: Arc<RwLock<Current>>,
    /// What connector settings are checked against (see
    /// `ConnectorConfig::validate`).
    bounds: Bounds,
    /// Each connector's live record, kept to the configs in force.
    registry: Registry,
    runtime: Option<Connectors>,
    dispatch: Arc<OnceLock<DispatchControl>>,
    applying: Arc<tokio::sync::Mutex<()>>,
}

/// Which connectors receive which event types.
#[derive(Debug, Default, Clone)]
pub struct RouteTable {
    entries: Vec<(String, Vec<Route>)>,
}

impl RouteTable {
    pub fn new(entries: Vec<(String, Vec<Route>)>) -> Self {
        Self { entries }
    }

    /// `connector`'s routes, if it is configured.
    pub fn routes_of(&self, connector: &str) -> Option<&[Route]> {
        self.entries
            .iter()
            .find(|(name, _)| name == connector)
            .map(|(_, routes)| routes.as_slice())
    }

    /// The connectors that receive `event`, and how long each delivery may
    /// wait where a route sets `expire_after`.
    pub fn routed(&self, event: NewEvent) -> Routed {
        let mut connectors = Vec::new();
        let mut expire_after = std::collections::BTreeMap::new();
        let mut coalesce = std::collections::BTreeMap::new();
        for (name, routes) in &self.entries {
            if let Some(expiry) = expiry_of(routes, &event.event_type) {
                connectors.push(name.clone());
                if let Some(ms) = expiry {
                    expire_after.insert(name.clone(), ms);
                }
                if let Some(tag) = coalesce_of(routes, &event.event_type, &event.keys) {
                    coalesce.insert(name.clone(), tag);
                }
            }
        }
        Routed {
            event,
            connectors,
            expire_after,
            coalesce,
            origin: None,
        }
    }
}

fn route_table(configs: &[ConnectorConfig]) -> RouteTable {
    RouteTable::new(
        configs
            .iter()
            .map(|c| {
                // Validated on the way in; a pattern that still fails to
                // parse routes nothing rather than everything.
                let routes = c.routes.iter().filter_map(|r| r.compile().ok()).collect();
                (c.name.clone(), routes)
            })
            .collect(),
    )
}

impl Fleet {
    /// The file's connectors (already validated with the config).
    pub fn new(configs: Vec<ConnectorConfig>, bounds: Bounds) -> Self {
        let routes = Arc::new(route_table(&configs));
        let registry = Registry::new();
        for c in &configs {
            registry.configure(c);
        }
        Self {
            current: Arc::new(RwLock::new(Current {
                configs: Arc::new(configs),
                routes,
            })),
            bounds,
            registry,
            runtime: None,
            dispatch: Arc::new(OnceLock::new()),
            applying: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// Each connector's live record: policy, sandbox, component, waker,
    /// breaker, counters.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Loads a new connector's component into this runtime as well.
    pub fn with_runtime(mut self, runtime: Connectors) -> Self {
        self.runtime = Some(runtime);
        self
    }

    /// Starts new connectors' loops in this dispatcher as well.
    pub fn attach_dispatch(&self, control: DispatchControl) {
        let _ = self.dispatch.set(control);
    }

    pub fn configs(&self) -> Arc<Vec<ConnectorConfig>> {
        self.read().configs.clone()
    }

    pub fn routes(&self) -> Arc<RouteTable> {
        self.read().routes.clone()
    }

    pub fn get(&self, name: &str) -> Option<ConnectorConfig> {
        self.read().configs.iter().find(|c| c.name == name).cloned()
    }

    pub fn names(&self) -> Vec<String> {
        self.read().configs.iter().map(|c| c.name.clone()).collect()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Current> {
        self.current.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes `c` the connector's config on this node. `false` if it was
    /// already exactly that. A new connector gets its entry and its stored
    /// component before its dispatch loop starts, so its first claims never
    /// find it without one.
    pub async fn apply(&self, store: &dyn Store, c: ConnectorConfig) -> bool {
        // One change at a time from entry to runtime to table to dispatcher,
        // so two racing changes (an API call and a sync) cannot leave the
        // table on one config and the entry on the other.
        let _one_at_a_time = self.applying.lock().await;
        if self
            .get(&c.name)
            .is_some_and(|existing| same(&existing, &c))
        {
            return false;
        }
        let (entry, created) = self.registry.configure(&c);
        if let Some(runtime) = &self.runtime {
            if let Err(e) = runtime.sync(store).await {
                tracing::warn!(connector = %c.name, error = %e, "cannot load the connector's component yet; will try again");
            }
        }
        {
            let mut cur = self.current.write().unwrap_or_else(|p| p.into_inner());
            let mut configs: Vec<ConnectorConfig> = cur.configs.as_ref().clone();
            match configs.iter_mut().find(|x| x.name == c.name) {
                Some(existing) => *existing = c.clone(),
                None => configs.push(c.clone()),
            }
            cur.routes = Arc::new(route_table(&configs));
            cur.configs = Arc::new(configs);
        }
        if let (true, Some(dispatch)) = (created, self.dispatch.get()) {
            dispatch.start(entry);
        }
        true
    }

    /// Validates `c`, stores it (audited, secrets redacted in the audit
    /// record) and applies it here. Returns whether the connector is new.
    pub async fn put(
        &self,
        store: &dyn Store,
        c: ConnectorConfig,
        actor: &str,
    ) -> Result<bool, FleetError> {
        c.validate(&self.bounds)?;
        let before = self.get(&c.name);
        let full = serde_json::to_value(&c).map_err(|e| {
            FleetError::Invalid(ConfigError::Invalid(format!("connector {:?}: {e}", c.name)))
        })?;
        store
            .catalog()
            .put_connector_config(
                &c.name,
                &full,
                before.as_ref().map(ConnectorConfig::redacted),
                c.redacted(),
                actor,
                now_ms(),
            )
            .await?;
        tracing::info!(connector = %c.name, actor, created = before.is_none(), "connector configured");
        self.apply(store, c).await;
        Ok(before.is_none())
    }

    /// Applies every stored config that differs from what this node runs (at
    /// start, and when another node changed one). Returns how many changed.
    pub async fn sync(&self, store: &dyn Store) -> Result<usize, StoreError> {
        let mut changed = 0;
        for (name, value) in store.catalog().connector_configs().await? {
            let c: ConnectorConfig = match serde_json::from_value(value) {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(connector = %name, error = %e, "stored connector config is unreadable; keeping the one in force");
                    continue;
                }
            };
            if c.name != name || c.validate(&self.bounds).is_err() {
                tracing::error!(connector = %name, "stored connector config is invalid here; keeping the one in force");
                continue;
            }
            if self.apply(store, c).await {
                tracing::info!(connector = %name, "connector config changed through the API; now in force");
                changed += 1;
            }
        }
        Ok(changed)
    }
}

fn same(a: &ConnectorConfig, b: &ConnectorConfig) -> bool {
    serde_json::to_value(a).ok() == serde_json::to_value(b).ok()
}
