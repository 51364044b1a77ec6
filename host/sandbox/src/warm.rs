//! Warm instances: an initialised instance serves several deliveries of the
//! same component under the same sandbox, instead of one fresh instance per
//! delivery.
//!
//! A fresh instance of a big component is expensive: a JavaScript or Python
//! connector copies a multi-megabyte heap image on first touch, page by
//! page, then tears it down again (~3 ms of gateway CPU per delivery, most
//! of it in the kernel). An instance kept warm pays that once.
//!
//! ## What carries over, and what never does
//! An instance is put back after a delivery only if **all** of these hold:
//! - the guest returned an outcome itself (no trap, panic, `exit`, CPU
//!   budget, wall deadline, memory cap, host limit or host error: any of
//!   those discards the instance with its store);
//! - it holds no `wasi:http` resource (request, response, body, fields,
//!   pending response or trailers) and at most [`MAX_KEPT_RESOURCES`] host
//!   resources of any kind (the standard streams a guest's libc caches);
//! - its linear memory stayed within three quarters of the memory cap;
//! - it has served fewer than `limits.max_deliveries_per_instance`;
//! - no other call is waiting for a sandbox slot.
//!
//! It is taken again only by a delivery of the same [`Component`] version
//! with an equal [`Sandbox`] (connector name, allowed hosts, config, secret
//! headers, limits), and only within [`RuntimeConfig::instance_idle`] of its
//! last use (zero: never). So a connector's linear memory (globals, heap,
//! caches) and up to [`MAX_KEPT_RESOURCES`] non-HTTP host resources (which
//! count against the next call's resource limit) may carry from one
//! delivery to the next of the same connector, version and settings;
//! `wasi:http` resources, the CPU budget, the wall deadline, the log
//! budget, the host-memory and request budgets, the egress pass, the
//! upstream pool, and anything of another connector, version or setting
//! never do. A host limit the component sees only as an error code (a
//! response too big, a request timeout, a denied host) does not discard the
//! instance if the component then answers by itself.
//!
//! Idle instances keep their pool slots. A call that finds no slot free
//! first evicts idle instances, oldest first, and while any call waits for
//! a slot no instance is kept.
//!
//! [`Component`]: crate::Component
//! [`Sandbox`]: crate::Sandbox
//! [`RuntimeConfig::instance_idle`]: crate::RuntimeConfig::instance_idle

use crate::{bindings, Sandbox, State};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};
use wasmtime::{ResourceLimiter, StoreLimits};

/// Host resources an instance may still hold and be kept (stdin, stdout,
/// stderr and a few pollables a guest's libc keeps between calls).
pub(crate) const MAX_KEPT_RESOURCES: usize = 8;

/// An instance between deliveries, with what it needs to run the next one.
pub(crate) struct Warm {
    /// The component version it belongs to ([`crate::Component`]'s id).
    pub(crate) owner: u64,
    /// The sandbox it was built for; reused only under an equal one.
    pub(crate) sandbox: Sandbox,
    /// Declared before `slot`: the store (and its instance) is torn down
    /// before the slot is given back.
    pub(crate) store: wasmtime::Store<State>,
    pub(crate) instance: Option<bindings::Connector>,
    pub(crate) slot: tokio::sync::OwnedSemaphorePermit,
    /// Deliveries it has run.
    pub(crate) served: u32,
    pub(crate) idle_since: Instant,
}

impl Warm {
    /// Whether this instance may serve another delivery (see the module
    /// docs); called after a delivery the guest answered itself.
    pub(crate) fn reusable(&mut self) -> bool {
        let limits = &self.sandbox.limits;
        if self.served >= limits.max_deliveries_per_instance {
            return false;
        }
        let state = self.store.data_mut();
        if state.limits.peak > state.limits.cap / 4 * 3 {
            return false;
        }
        let mut held = 0;
        for entry in state.table.iter_mut() {
            held += 1;
            if held > MAX_KEPT_RESOURCES || is_http_resource(entry) {
                return false;
            }
        }
        true
    }
}

/// Whether a resource-table entry is a `wasi:http` resource (which holds
/// host memory, a connection or a background task).
fn is_http_resource(entry: &(dyn std::any::Any + Send)) -> bool {
    use wasmtime_wasi_http::p2::body::{HostFutureTrailers, HostIncomingBody, HostOutgoingBody};
    use wasmtime_wasi_http::p2::types::{
        HostFutureIncomingResponse, HostIncomingResponse, HostOutgoingRequest,
        HostOutgoingResponse, HostResponseOutparam,
    };
    entry.is::<wasmtime_wasi_http::FieldMap>()
        || entry.is::<HostOutgoingRequest>()
        || entry.is::<HostFutureIncomingResponse>()
        || entry.is::<HostIncomingResponse>()
        || entry.is::<HostOutgoingResponse>()
        || entry.is::<HostResponseOutparam>()
        || entry.is::<HostIncomingBody>()
        || entry.is::<HostOutgoingBody>()
        || entry.is::<HostFutureTrailers>()
        || entry.is::<wasmtime_wasi_http::p2::bindings::http::types::RequestOptions>()
}

/// The runtime's idle instances, most recently used last.
#[derive(Default)]
pub(crate) struct Idle {
    list: Mutex<VecDeque<Warm>>,
    /// Calls waiting for a slot right now: while any does, nothing is kept.
    pub(crate) waiting: AtomicUsize,
    pub(crate) started: AtomicU64,
    pub(crate) reused: AtomicU64,
}

impl Idle {
    fn lock(&self) -> MutexGuard<'_, VecDeque<Warm>> {
        self.list.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The most recently used idle instance of `owner` under `sandbox`,
    /// idle for at most `ttl`.
    pub(crate) fn take(&self, owner: u64, sandbox: &Sandbox, ttl: Duration) -> Option<Warm> {
        let mut list = self.lock();
        let at = list.iter().rposition(|w| {
            w.owner == owner && w.sandbox == *sandbox && w.idle_since.elapsed() <= ttl
        })?;
        let warm = list.remove(at);
        drop(list);
        if warm.is_some() {
            self.reused.fetch_add(1, Ordering::Relaxed);
        }
        warm
    }

    /// Keeps `warm` for the next delivery, unless a call waits for a slot
    /// (or `ttl` is zero). The check is made under the list's lock, which a
    /// waiting call takes after counting itself and before it waits, so
    /// either the waiter finds this instance to evict or this sees the
    /// waiter.
    pub(crate) fn put(&self, mut warm: Warm, ttl: Duration) {
        if ttl.is_zero() {
            return;
        }
        let mut list = self.lock();
        if self.waiting.load(Ordering::SeqCst) > 0 {
            drop(list);
            return;
        }
        warm.idle_since = Instant::now();
        list.push_back(warm);
    }

    /// Drops the oldest idle instance (outside the lock); false if there
    /// was none.
    pub(crate) fn evict_one(&self) -> bool {
        let oldest = self.lock().pop_front();
        oldest.is_some()
    }

    /// Drops every idle instance of `owner` (a component version that is
    /// gone).
    pub(crate) fn forget(&self, owner: u64) {
        let gone: VecDeque<Warm> = {
            let mut list = self.lock();
            let (gone, kept) = std::mem::take(&mut *list)
                .into_iter()
                .partition(|w| w.owner == owner);
            *list = kept;
            gone
        };
        drop(gone);
    }

    /// Takes out the instances idle for longer than `ttl`, for the caller
    /// to drop (tearing down big instances takes a while).
    pub(crate) fn expired(&self, ttl: Duration) -> Vec<Warm> {
        let mut expired = Vec::new();
        let mut list = self.lock();
        while list.front().is_some_and(|w| w.idle_since.elapsed() > ttl) {
            expired.extend(list.pop_front());
        }
        expired
    }

    /// Pool slots the idle instances hold now.
    pub(crate) fn slots(&self) -> usize {
        self.lock().iter().map(|w| w.slot.num_permits()).sum()
    }
}

/// The store's resource limiter: wasmtime's [`StoreLimits`] (memory cap,
/// trap when a growth is refused), plus the largest memory size granted,
/// which decides whether an instance is kept.
pub(crate) struct MemoryCap {
    pub(crate) limits: StoreLimits,
    /// The memory cap `limits` applies, in bytes.
    pub(crate) cap: usize,
    pub(crate) peak: usize,
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = self.limits.memory_growing(current, desired, maximum)?;
        if allowed {
            self.peak = self.peak.max(desired);
        }
        Ok(allowed)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.limits.memory_grow_failed(error)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.limits.table_grow_failed(error)
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }

    fn tables(&self) -> usize {
        self.limits.tables()
    }

    fn memories(&self) -> usize {
        self.limits.memories()
    }
}
