//! What one call may hold on the host's side of the sandbox, and the record
//! of the first limit it hit.
//!
//! `memory_bytes` caps the guest's linear memory, but `wasi:http` resources
//! (header fields, request and response handles, buffered body chunks) live
//! in host memory. They are bounded per call by three knobs that wasmtime
//! offers, derived here from two operator settings, `host_memory_bytes` (M,
//! default 16 MiB) and `max_host_resources` (R, default 1,000), and from
//! `max_concurrent_requests` (C, default 8):
//!
//! - the call's resource table holds at most **R** entries;
//! - every resource holds at most **S** bytes, where
//!   `S = (M − C × CONNECTION_BUFFERS) / R` (15,728 bytes, 15.4 KiB, with the
//!   defaults):
//!   a `fields` map is capped at S (wasmtime counts each name and value
//!   plus the size of its `HeaderName`/`HeaderValue`), and an outgoing body
//!   buffers at most two chunks of S/2 (one chunk in flight, one slot
//!   free: wasmtime's body channel has `buffer_chunks + 1` slots, and we set
//!   `buffer_chunks = 1`);
//! - at most **C** requests are in flight at once, each with a connection
//!   whose read and write buffers hyper keeps below `CONNECTION_BUFFERS`
//!   (2 × 64 KiB).
//!
//! So the worst case of one call is `R × S + C × CONNECTION_BUFFERS ≤ M`:
//! 1,000 × 15,728 + 8 × 131,072 = 16,776,576 bytes ≤ 16 MiB with the
//! defaults. (TLS buffers of `https` connections are rustls's own and are
//! not in this sum.) Request and
//! response heads move *into* other resources (an outgoing request takes its
//! `fields`), so they are not counted twice; response bodies the guest reads
//! land in its own linear memory, under `memory_bytes`; and everything is
//! dropped with the call's store.
//!
//! A limit hit is recorded here (the guest may only see an error code, or
//! trap), and the host turns the attempt into a `retry` whose reason names
//! the limit, whatever the guest returned.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::Limits;

/// Host memory a connection's buffers may hold: hyper's read buffer and its
/// write buffer, each capped at half of it (`http1_max_buf_size`).
pub(crate) const CONNECTION_BUFFERS: usize = 128 << 10;

/// Smallest per-resource size the settings may leave: below it, ordinary
/// requests (a few headers, a body written in 4 KiB pieces) would fail.
pub(crate) const MIN_RESOURCE_BYTES: usize = 4 << 10;

/// The knobs one call's sandbox is built with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HostCaps {
    /// Resource-table capacity (R).
    pub(crate) resources: usize,
    /// Largest size of one resource (S): the `fields` size limit.
    pub(crate) resource_bytes: usize,
    /// Outgoing-body chunk size (S/2); two chunks are buffered at most.
    pub(crate) body_chunk: usize,
}

impl HostCaps {
    /// Derives the knobs from the limits, or says which setting is too
    /// small for the others.
    pub(crate) fn of(limits: &Limits) -> Result<HostCaps, String> {
        let resources = limits.max_host_resources.max(1);
        let connections = limits
            .max_concurrent_requests
            .max(1)
            .saturating_mul(CONNECTION_BUFFERS);
        let resource_bytes = limits.host_memory_bytes.saturating_sub(connections) / resources;
        if resource_bytes < MIN_RESOURCE_BYTES {
            return Err(format!(
                "host_memory_mb ({} MiB) is too small for max_host_resources ({}) and \
                 max_concurrent_requests ({}): each resource would get {} bytes, and at least \
                 {} are needed; raise host_memory_mb or lower the others",
                limits.host_memory_bytes >> 20,
                limits.max_host_resources,
                limits.max_concurrent_requests,
                resource_bytes,
                MIN_RESOURCE_BYTES
            ));
        }
        Ok(HostCaps {
            resources,
            resource_bytes,
            body_chunk: resource_bytes / 2,
        })
    }
}

/// Which limit a call hit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LimitHit {
    /// More resources than the table holds.
    Resources(usize),
    /// A header `fields` map over its size.
    FieldsSize(usize),
    /// More outgoing requests in flight than allowed.
    ConcurrentRequests(usize),
    /// More request-body bytes sent than allowed.
    RequestBytes(u64),
}

impl LimitHit {
    /// The retry reason, naming the setting that was exceeded.
    pub(crate) fn reason(&self) -> String {
        match self {
            LimitHit::Resources(n) => format!(
                "connector exceeded its limit of {n} host resources (HTTP fields, requests, \
                 bodies, streams) in one call (limits.max_host_resources)"
            ),
            LimitHit::FieldsSize(n) => format!(
                "connector exceeded the {n}-byte size limit of one set of HTTP header fields \
                 (derived from limits.host_memory_mb / limits.max_host_resources)"
            ),
            LimitHit::ConcurrentRequests(n) => format!(
                "connector exceeded its limit of {n} outgoing requests in flight at once in one \
                 call (limits.max_concurrent_requests)"
            ),
            LimitHit::RequestBytes(n) => format!(
                "connector exceeded its limit of {n} request-body bytes sent upstream in one \
                 call (limits.max_request_bytes)"
            ),
        }
    }
}

/// Shared between a call's store, its egress hooks and the bodies they
/// create: counters, and the first limit hit.
#[derive(Debug)]
pub(crate) struct CallBudget {
    hit: Mutex<Option<LimitHit>>,
    sent: AtomicU64,
    max_sent: u64,
    in_flight: Arc<tokio::sync::Semaphore>,
    max_in_flight: usize,
}

impl CallBudget {
    pub(crate) fn new(limits: &Limits) -> Arc<CallBudget> {
        let max_in_flight = limits.max_concurrent_requests.max(1);
        Arc::new(CallBudget {
            hit: Mutex::new(None),
            sent: AtomicU64::new(0),
            max_sent: limits.max_request_bytes,
            in_flight: Arc::new(tokio::sync::Semaphore::new(max_in_flight)),
            max_in_flight,
        })
    }

    /// Records `hit` unless an earlier one is recorded (the first is the
    /// cause; later ones are usually its consequences).
    pub(crate) fn record(&self, hit: LimitHit) {
        let mut slot = self.hit.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = Some(hit);
        }
    }

    /// The first limit hit, if any.
    pub(crate) fn hit(&self) -> Option<LimitHit> {
        self.hit.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// A permit for one outgoing request, held until its response body is
    /// done; `None` (and the hit recorded) when the call has as many in
    /// flight as it may.
    pub(crate) fn request_permit(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        match self.in_flight.clone().try_acquire_owned() {
            Ok(p) => Some(p),
            Err(_) => {
                self.record(LimitHit::ConcurrentRequests(self.max_in_flight));
                None
            }
        }
    }

    /// Counts `n` request-body bytes; `Err(limit)` (and the hit recorded)
    /// once the call has sent more than it may.
    pub(crate) fn send(&self, n: usize) -> Result<(), u64> {
        let n = u64::try_from(n).unwrap_or(u64::MAX);
        let total = self.sent.fetch_add(n, Ordering::Relaxed).saturating_add(n);
        if total > self.max_sent {
            self.record(LimitHit::RequestBytes(self.max_sent));
            return Err(self.max_sent);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_keep_the_worst_case_within_host_memory() {
        let limits = Limits::default();
        let caps = HostCaps::of(&limits).unwrap();
        assert_eq!(caps.resources, 1000);
        let worst = caps.resources * caps.resource_bytes
            + limits.max_concurrent_requests * CONNECTION_BUFFERS;
        assert!(worst <= limits.host_memory_bytes, "{worst}");
        assert!(caps.resource_bytes >= 15 << 10, "{caps:?}");
        assert_eq!(caps.body_chunk * 2, caps.resource_bytes & !1);
    }

    #[test]
    fn settings_that_leave_too_little_per_resource_are_refused() {
        let limits = Limits {
            host_memory_bytes: 4 << 20,
            max_host_resources: 10_000,
            ..Limits::default()
        };
        let e = HostCaps::of(&limits).unwrap_err();
        assert!(e.contains("host_memory_mb"), "{e}");
    }

    #[test]
    fn the_first_hit_is_kept() {
        let b = CallBudget::new(&Limits {
            max_request_bytes: 10,
            max_concurrent_requests: 1,
            ..Limits::default()
        });
        assert!(b.send(10).is_ok());
        assert_eq!(b.send(1), Err(10));
        let _p = b.request_permit().unwrap();
        assert!(b.request_permit().is_none());
        assert_eq!(b.hit(), Some(LimitHit::RequestBytes(10)));
    }
}
