//! Wiring: open the store, load connectors, start dispatch and the HTTP API,
//! and shut down in order (stop accepting, stop claiming, settle in-flight).
//!
//! The fleet owns the connectors' registry; the runtime, the dispatcher and
//! the API each get a handle on the same entries.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::api::{self, AppState};
use crate::config::Config;
use crate::connectors::Connectors;
use crate::dispatch::{self, DispatchSettings};
use crate::fleet::Fleet;
use crate::queue::now_ms;
use crate::store::{self, StoreError};
use crate::supervise;
use switchboard_sandbox::EgressGate;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("wasm runtime: {0}")]
    Runtime(#[from] switchboard_sandbox::RuntimeError),
    #[error(transparent)]
    Components(#[from] crate::connectors::RestoreError),
    #[error("invalid config: {0}")]
    Config(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("http server failed: {0}")]
    Serve(std::io::Error),
}

/// Runs the gateway until `shutdown` resolves, then drains and returns.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    // Whoever built `config` (file, environment, flags, a test), what runs
    // is what was checked: above all, never an admin API beyond loopback
    // without tokens.
    config
        .validate()
        .map_err(|e| StartError::Config(e.to_string()))?;
    match switchboard_sandbox::raise_nofile_limit() {
        Ok((before, after, hard)) => {
            tracing::info!(soft_before = before, soft = after, hard, "open-files limit")
        }
        Err(e) => tracing::warn!(error = %e, "open-files limit left as it is"),
    }
    // Leases name the node that holds them: `cluster.node`, else this host
    // and its API port.
    let node = match &config.cluster.node {
        Some(node) => node.clone(),
        None => {
            let host = store::default_node();
            let host = host.rsplit_once(':').map_or(host.as_str(), |(h, _)| h);
            format!("{host}:{}", config.server.listen.port())
        }
    };
    // SQLite: this process alone serves the database, for as long as it runs.
    let _database_lock = if config.storage.url.starts_with("sqlite:") {
        store::sqlite::SqliteStore::lock(&config.storage.url)?
    } else {
        None
    };
    let wait = config.storage.group_commit_wait_us;
    let wait = wait.map(|us| std::time::Duration::from_micros(us.into()));
    let store = store::open_waiting(&config.storage.url, &node, wait).await?;
    // PostgreSQL: no other running gateway acts under this node's name.
    // A previous run killed a moment ago holds it until the server sees its
    // connection close.
    if let Some(cluster) = store.cluster() {
        cluster
            .hold_name(Duration::from_millis(config.cluster.node_timeout_ms))
            .await?;
    }
    // The store's record of this process: its epoch counts the starts under
    // this name, and `keep_alive` keeps its heartbeat. Where other nodes
    // may take this one's work over, it sends upstream only while its
    // heartbeat is confirmed (docs/RECOVERY.md).
    let registering = std::time::Instant::now();
    let epoch = store.catalog().register_node().await?;
    let gate = match store.cluster() {
        Some(_) => Arc::new(EgressGate::closing_at(
            registering + config.cluster.fence_after(),
        )),
        None => Arc::new(EgressGate::open()),
    };
    tracing::info!(node = %node, epoch, "node registered");
    // What the previous run under this name left in flight moves on now,
    // not when its leases end.
    let reclaimed = store.reclaim(now_ms()).await?;
    if reclaimed > 0 {
        tracing::warn!(
            count = reclaimed,
            "re-queued the deliveries this node's previous run left in flight"
        );
    }

    let cache_dir = config.runtime.cache_dir.clone().or_else(|| {
        store::sqlite::SqliteStore::path_of(&config.storage.url)
            .and_then(|p| p.parent().map(|d| d.join("switchboard-cache")))
    });
    let defaults = switchboard_sandbox::RuntimeConfig::default();
    let max_instances = config
        .runtime
        .max_instances
        .unwrap_or(defaults.max_instances);
    let runtime = switchboard_sandbox::Runtime::new(switchboard_sandbox::RuntimeConfig {
        cache_dir,
        extra_ca_pem: config.runtime.ca_file.clone(),
        max_instances,
        max_memory_bytes: config.runtime.max_memory_mb().saturating_mul(1 << 20),
        max_egress_connections: config.runtime.max_egress_connections,
        egress_gate: gate.clone(),
        instance_idle: config
            .runtime
            .instance_idle_ms
            .map_or(defaults.instance_idle, std::time::Duration::from_millis),
        ..defaults
    })?;
    let egress = runtime.egress_stats();
    tracing::info!(
        ceiling = egress.ceiling,
        "upstream connections, all connectors together (runtime.max_egress_connections)"
    );
    // The file's connectors, then those created or changed through the API
    // (stored, so they survive restarts and are shared by every node).
    let fleet = Fleet::new(
        config.connectors.clone(),
        crate::config::Bounds::of(&config),
    );
    fleet.sync(&*store).await?;
    let configs = fleet.configs();
    let concurrency: usize = configs.iter().map(|c| c.concurrency).sum();
    if concurrency > max_instances as usize {
        tracing::warn!(
            concurrency,
            max_instances,
            "the connectors' concurrency adds up to more than runtime.max_instances: \
             when all are busy, calls wait for a free instance slot"
        );
    }
    let connections: usize = configs.iter().map(|c| c.limits.max_connections).sum();
    if connections > egress.ceiling {
        tracing::warn!(
            connections,
            ceiling = egress.ceiling,
            "the connectors' limits.max_connections add up to more than the egress ceiling \
             (runtime.max_egress_connections): one connector at its cap can make the others \
             wait for a connection"
        );
    }
    let connectors = Connectors::new(
        runtime,
        fleet.registry().clone(),
        config.storage.component_versions,
    );
    connectors.restore(&*store, &configs).await?;
    let fleet = fleet.with_runtime(connectors.clone());

    let settings = DispatchSettings {
        lease_ms: config.dispatch.lease_ms as i64,
        rescue_interval: Duration::from_millis(config.dispatch.rescue_interval_ms),
        poll_interval: Duration::from_millis(config.dispatch.poll_interval_ms),
        shutdown_grace: Duration::from_millis(config.server.shutdown_grace_ms),
        clock: crate::clock::Clock::wall(),
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    // Background tasks, each started again if it panics (`supervise`).
    {
        let (store, registry, cluster, stop) = (
            store.clone(),
            fleet.registry().clone(),
            config.cluster.clone(),
            stop_rx.clone(),
        );
        supervise::spawn("keep_alive".into(), stop_rx.clone(), move || {
            keep_alive(
                store.clone(),
                registry.clone(),
                cluster.clone(),
                gate.clone(),
                stop.clone(),
            )
        });
    }
    {
        let (fleet, connectors, store, stop) = (
            fleet.clone(),
            connectors.clone(),
            store.clone(),
            stop_rx.clone(),
        );
        supervise::spawn("config_sync".into(), stop_rx.clone(), move || {
            sync_with_store(
                fleet.clone(),
                connectors.clone(),
                store.clone(),
                stop.clone(),
            )
        });
    }
    if config.cluster.notify && store.cluster().is_some() {
        let (store, registry, stop) = (store.clone(), fleet.registry().clone(), stop_rx.clone());
        supervise::spawn("listen".into(), stop_rx.clone(), move || {
            listen(store.clone(), registry.clone(), stop.clone())
        });
    }
    let days = (
        config.storage.retention_days,
        config.storage.payload_retention_days,
    );
    if store::Purge::at(now_ms(), days.0, days.1).is_some() {
        tracing::info!(
            dedup_window_days = days.0,
            payload_retention_days = days.1,
            "finished events are kept whole for the payload retention, then only their id \
             until the dedup window ends (0: for good)"
        );
        let (store, stop) = (store.clone(), stop_rx.clone());
        supervise::spawn("retention".into(), stop_rx.clone(), move || {
            retention(store.clone(), days, stop.clone())
        });
    }
    // Replays: every node works on the running ones, a page at a time.
    {
        let (store, fleet, stop) = (store.clone(), fleet.clone(), stop_rx.clone());
        supervise::spawn("replays".into(), stop_rx.clone(), move || {
            crate::replay::run(store.clone(), fleet.clone(), stop.clone())
        });
    }
    // The console's per-minute counts, written on every node whatever its
    // `console.enabled` (another node may serve the console); stopped after
    // the dispatcher has drained, so its last attempts are counted.
    let (history_stop, history_rx) = watch::channel(false);
    let history = {
        let (store, registry, days, stop) = (
            store.clone(),
            fleet.registry().clone(),
            config.console.history_days,
            history_rx.clone(),
        );
        supervise::spawn("console_history".into(), history_rx, move || {
            crate::ui::history::record(store.clone(), registry.clone(), days, stop.clone())
        })
    };
    let (dispatcher, control) = dispatch::spawn_controlled(
        store.clone(),
        Arc::new(connectors.clone()),
        fleet.registry().clone(),
        settings,
        stop_rx,
    );
    fleet.attach_dispatch(control);

    let state = AppState {
        store,
        fleet,
        connectors: Some(connectors),
        max_body_bytes: config.server.max_body_bytes,
        max_batch: config.server.max_batch,
        tokens: api::auth::Tokens::new(&config.server.tokens),
    };
    let mut app = api::router(state.clone());
    if config.console.enabled {
        app = app.merge(crate::ui::router(crate::ui::UiState {
            sessions: crate::ui::session::Sessions::new(
                state.tokens.clone(),
                config.console.session_hours,
            ),
            info: Arc::new(crate::ui::GatewayInfo {
                version: env!("CARGO_PKG_VERSION"),
                backend: if state.store.cluster().is_some() {
                    "PostgreSQL"
                } else {
                    "SQLite"
                },
                node: state.store.catalog().node().to_string(),
                takeover_after_ms: config.cluster.takeover_after_ms(),
            }),
            app: state,
        }));
    }
    if config.server.tokens.is_empty() {
        tracing::warn!(
            "no API tokens configured: serving on loopback only, without authentication"
        );
    }
    let listener = tokio::net::TcpListener::bind(config.server.listen)
        .await
        .map_err(|source| StartError::Listen {
            addr: config.server.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(StartError::Serve)?;
    tracing::info!(%addr, storage = %redact(&config.storage.url), connectors = config.connectors.len(), "switchboard listening");
    // Tests and scripts read this line to find an ephemeral port.
    println!("listening on {addr}");

    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(StartError::Serve)?;
    tracing::info!("stopped accepting; settling in-flight deliveries");
    let _ = stop_tx.send(true);
    let _ = dispatcher.await;
    let _ = history_stop.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), history).await;
    tracing::info!("shut down cleanly");
    Ok(())
}

/// How often a node looks for connector configs and component versions
/// changed through another node sharing its database.
const STORE_SYNC: Duration = Duration::from_secs(2);

async fn sync_with_store(
    fleet: Fleet,
    connectors: Connectors,
    store: std::sync::Arc<dyn store::Store>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(STORE_SYNC) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        if let Err(e) = fleet.sync(&*store).await {
            tracing::warn!(error = %e, "cannot check for connector config changes; will try again");
        }
        if let Err(e) = connectors.sync(&*store).await {
            tracing::warn!(error = %e, "cannot check for component changes; will try again");
        }
    }
}

/// Renews this node's heartbeat and, each time the store confirms it,
/// keeps the egress gate open for `fence_after` from when it was sent;
/// where nodes share the store, also keeps this node's name and takes over
/// the in-flight work of nodes gone silent (docs/RECOVERY.md).
async fn keep_alive(
    store: std::sync::Arc<dyn store::Store>,
    registry: crate::registry::Registry,
    cluster: crate::config::ClusterConfig,
    gate: Arc<EgressGate>,
    mut stop: watch::Receiver<bool>,
) {
    let every = cluster.heartbeat_every();
    let mut fenced = false;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let sent = std::time::Instant::now();
        match store.catalog().heartbeat().await {
            Ok(()) => {
                gate.open_until(sent + cluster.fence_after());
                if fenced {
                    tracing::warn!("heartbeat confirmed again: sending upstream again");
                }
                fenced = false;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot record this node's heartbeat; will try again");
            }
        }
        if gate.fences() && !gate.is_open() && !fenced {
            fenced = true;
            tracing::error!(
                fence_after_ms = cluster.fence_after().as_millis() as u64,
                "heartbeat unconfirmed for too long: this node stops sending upstream, since the \
                 other nodes may be taking its work over"
            );
        }
        let Some(shared) = store.cluster() else {
            continue;
        };
        if let Err(e) = shared.hold_name(Duration::ZERO).await {
            tracing::error!(error = %e, "cannot hold this node's name in the cluster");
        }
        match shared
            .take_over(now_ms(), cluster.takeover_after_ms())
            .await
        {
            Ok(0) => {}
            Ok(n) => {
                tracing::warn!(
                    count = n,
                    silent_ms = cluster.takeover_after_ms(),
                    "took over the in-flight deliveries of nodes gone silent"
                );
                registry.wake_all();
            }
            Err(e) => tracing::warn!(error = %e, "cannot look for silent nodes; will try again"),
        }
    }
}

/// Wakes this node's connectors when another node announces new work or a
/// breaker change; listens again a second after losing the connection.
async fn listen(
    store: std::sync::Arc<dyn store::Store>,
    registry: crate::registry::Registry,
    mut stop: watch::Receiver<bool>,
) {
    let Some(cluster) = store.cluster() else {
        return;
    };
    loop {
        match cluster.listen().await {
            Ok(mut heard) => loop {
                tokio::select! {
                    a = heard.recv() => match a {
                        Some(store::Announcement::Work(c)) => registry.wake(&c),
                        Some(store::Announcement::Health(c)) => {
                            if let Some(entry) = registry.get(&c) {
                                entry.shared_changed();
                            }
                        }
                        None => break,
                    },
                    _ = stop.wait_for(|s| *s) => return,
                }
            },
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen to the other nodes; will try again")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// How often finished events past the dedup window are deleted, and how many
/// per transaction.
const RETENTION_EVERY: Duration = Duration::from_secs(60);
const RETENTION_BATCH: usize = 5_000;

/// Reduces finished events past the payload retention to their id and
/// forgets ids past the dedup window (`store::retention`), in batches, so
/// the store grows with the window and the backlog, not with all history.
async fn retention(
    store: std::sync::Arc<dyn store::Store>,
    (window_days, payload_days): (u32, u32),
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let mut total = store::Purged::default();
        while let Some(r) = store::Purge::at(now_ms(), window_days, payload_days) {
            match store.purge_finished(r, RETENTION_BATCH).await {
                Ok(p) => {
                    total.compacted += p.compacted;
                    total.deleted += p.deleted;
                    total.forgotten += p.forgotten;
                    let more = p.events().max(p.forgotten) as usize >= RETENTION_BATCH;
                    if !more || *stop.borrow() {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot purge finished events; will try again");
                    break;
                }
            }
        }
        if total != store::Purged::default() {
            tracing::info!(
                compacted = total.compacted,
                deleted = total.deleted,
                ids_forgotten = total.forgotten,
                window_days,
                payload_days,
                "purged finished events"
            );
        }
        tokio::select! {
            _ = tokio::time::sleep(RETENTION_EVERY) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// A storage URL without its password, for logs.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}
