//! Egress control: which outgoing HTTP requests a connector may make, and the
//! pooled client that makes them.
//!
//! Two gates, both required (SPEC §4.3, §6):
//!
//! 1. **By name, in `outgoing-handler.handle`.** The request's authority must
//!    match an `allowed_hosts` entry (`host:port`, or `host` for any port;
//!    case-insensitive, IPv6 in brackets). A miss is refused right there, so
//!    the guest sees the standard `HTTP-request-denied` error code rather than
//!    a confusing connection failure.
//! 2. **By address, in the resolver** (`resolve`). A *name* is resolved exactly once, and
//!    if any resolved address is prohibited (unspecified, link-local incl.
//!    `169.254.169.254`, cloud metadata, multicast/broadcast, or loopback
//!    for any name but `localhost`) the request is refused with
//!    `destination-IP-prohibited`. The connection is then made to those very
//!    addresses, so there is no DNS-rebinding window between check and use.
//!    An authority that is an IP *literal* never reaches the resolver: it
//!    passed gate 1 only because the operator listed exactly that IP, which
//!    is how a deliberately allowed special address is expressed.
//!
//! Each connector has a client of its own ([`Pools`]), pooling connections
//! per (scheme, authority), so one connector's connections can neither
//! crowd out nor be reused by another's. Secret headers are injected here,
//! after the guest is done with the request, and only into requests to the
//! hosts each secret names, so a guest never sees them and an allowed host
//! never gets another host's credential.
//!
//! Limits, so that one connector cannot exhaust the process:
//! - per call: at most `max_concurrent_requests` requests in flight (one
//!   more fails at once with `connection-limit-reached`), and at most
//!   `max_request_bytes` of request bodies sent in all;
//! - per connector: at most `max_connections` open connections, idle ones
//!   included (a request that needs one more waits for one, within its
//!   timeout);
//! - per process: at most the egress ceiling of connections, all connectors
//!   together, kept below `RLIMIT_NOFILE` with a reserve for the listener,
//!   the database and files, so `/healthz` and the API keep answering;
//! - `request_timeout` bounds connect + response head; the response body is
//!   capped at `max_response_bytes` (the guest gets
//!   `HTTP-response-body-size`); the wall deadline of the whole call bounds
//!   a slow body.
//!
//! A per-call limit hit is recorded in the call's budget (`budget`), which
//! makes the attempt a retry naming the limit.
//!
//! `https` upstreams go through the same two gates; the TLS handshake then
//! verifies the certificate for the request's host name (see `tls`). A
//! failed handshake is `TLS-certificate-error` for the guest and a warning
//! with the reason in the gateway's log.

use bytes::Bytes;
use http::uri::Scheme;
use http::{HeaderName, HeaderValue};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::future::Future;

use crate::resolve::{CheckedResolver, ResolveError};
use std::net::Ipv6Addr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use wasmtime::component::Resource;
use wasmtime_wasi_http::p2::bindings::http::outgoing_handler;
use wasmtime_wasi_http::p2::bindings::http::types::{
    ErrorCode, RequestOptions, Scheme as WasiScheme,
};
use wasmtime_wasi_http::p2::types::{HostFutureIncomingResponse, HostOutgoingRequest};
use wasmtime_wasi_http::{WasiBody, WasiHttpCtxView, WasiHttpHooks};

/// A connector's pooled upstream client.
pub(crate) type HttpClient = Client<crate::tls::EgressConnector, WasiBody>;

/// Every connector's client, created on first use: each connector has a
/// pool of its own, capped at its `max_connections`, and every connection
/// also counts against the process's egress ceiling.
pub(crate) struct Pools {
    idle_timeout: Duration,
    max_idle_per_host: usize,
    tls: std::sync::Arc<rustls::ClientConfig>,
    process: std::sync::Arc<tokio::sync::Semaphore>,
    ceiling: usize,
    /// Connector → the settings its client was built with, and the client.
    clients: std::sync::Mutex<std::collections::HashMap<String, (PoolSettings, HttpClient)>>,
}

impl Pools {
    pub(crate) fn new(
        idle_timeout: Duration,
        max_idle_per_host: usize,
        tls: rustls::ClientConfig,
        ceiling: usize,
    ) -> Pools {
        let ceiling = ceiling.max(1);
        Pools {
            idle_timeout,
            max_idle_per_host,
            tls: std::sync::Arc::new(tls),
            process: std::sync::Arc::new(tokio::sync::Semaphore::new(ceiling)),
            ceiling,
            clients: Default::default(),
        }
    }

    /// The process-wide ceiling on upstream connections.
    pub(crate) fn ceiling(&self) -> usize {
        self.ceiling
    }

    /// Upstream connections open now, all connectors together.
    pub(crate) fn open(&self) -> usize {
        self.ceiling
            .saturating_sub(self.process.available_permits())
    }

    /// `connector`'s client, connecting within `connect_timeout` (its
    /// `request_timeout`). Changed settings give the connector a new pool;
    /// connections of the old one close as their calls finish.
    pub(crate) fn client(
        &self,
        connector: &str,
        max_connections: usize,
        connect_timeout: Duration,
    ) -> HttpClient {
        let max_connections = max_connections.clamp(1, self.ceiling);
        let settings = PoolSettings {
            max_connections,
            connect_timeout,
        };
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((built, client)) = clients.get(connector) {
            if *built == settings {
                return client.clone();
            }
        }
        let mut http = HttpConnector::new_with_resolver(CheckedResolver);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(connect_timeout));
        let permits = crate::tls::ConnectionPermits {
            connector: std::sync::Arc::new(tokio::sync::Semaphore::new(max_connections)),
            process: self.process.clone(),
        };
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(self.idle_timeout)
            .pool_max_idle_per_host(self.max_idle_per_host.min(max_connections))
            // Half of `budget::CONNECTION_BUFFERS` each for reading and
            // writing: a response head must fit in it.
            .http1_max_buf_size(crate::budget::CONNECTION_BUFFERS / 2)
            .build(crate::tls::EgressConnector::new(
                http,
                self.tls.clone(),
                permits,
            ));
        clients.insert(connector.to_string(), (settings, client.clone()));
        client
    }
}

/// What a connector's client is built with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PoolSettings {
    max_connections: usize,
    connect_timeout: Duration,
}

/// One parsed `allowed_hosts` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AllowedHost {
    host: String,
    /// `None` = any port.
    port: Option<u16>,
}

/// The per-call egress policy derived from a [`crate::Sandbox`].
#[derive(Debug, Clone, Default)]
pub(crate) struct EgressPolicy {
    allowed: Vec<AllowedHost>,
}

impl EgressPolicy {
    /// Parse `allowed_hosts`. Entries that do not parse are ignored with a
    /// warning (they can never match), never widened.
    pub(crate) fn new(allowed_hosts: &[String]) -> Self {
        let allowed = allowed_hosts
            .iter()
            .filter_map(|entry| match split_authority(entry) {
                Some((host, port)) => Some(AllowedHost { host, port }),
                None => {
                    tracing::warn!(entry = %entry, "ignoring unparsable allowed_hosts entry");
                    None
                }
            })
            .collect();
        Self { allowed }
    }

    /// Gate 1: may a request to `authority` (with `scheme`) be made at all?
    pub(crate) fn check(&self, scheme: &Scheme, authority: &str) -> Result<(), String> {
        let (host, port) = split_authority(authority)
            .ok_or_else(|| format!("unparsable authority `{authority}`"))?;
        let port = match port {
            Some(p) => p,
            None if *scheme == Scheme::HTTPS => 443,
            None => 80,
        };
        let allowed = self
            .allowed
            .iter()
            .any(|a| a.host == host && a.port.is_none_or(|p| p == port));
        if allowed {
            Ok(())
        } else {
            Err(format!("`{host}:{port}` is not in allowed_hosts"))
        }
    }
}

/// Split `host[:port]` / `[v6][:port]` into a normalised host (lower-case, no
/// brackets, no trailing dot) and an optional port. `None` if malformed or
/// if it carries userinfo.
fn split_authority(authority: &str) -> Option<(String, Option<u16>)> {
    let authority = authority.trim();
    if authority.is_empty() || authority.contains(['@', '/', ' ']) {
        return None;
    }
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        v6.parse::<Ipv6Addr>().ok()?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?.parse::<u16>().ok()?),
        };
        (v6.to_string(), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p.parse::<u16>().ok()?)),
            None => (authority.to_string(), None),
        }
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    if host.is_empty() || host.contains(':') && host.parse::<Ipv6Addr>().is_err() {
        return None;
    }
    Some((host, port))
}

/// A secret header and the allowed hosts it goes to.
pub(crate) struct ScopedSecret {
    pub(crate) name: HeaderName,
    pub(crate) value: HeaderValue,
    /// `None`: every allowed host.
    pub(crate) hosts: Option<EgressPolicy>,
}

/// Per-call `wasi:http` hooks: the send path of one delivery.
pub(crate) struct EgressHooks {
    pub(crate) client: HttpClient,
    pub(crate) secret_headers: Vec<ScopedSecret>,
    pub(crate) request_timeout: Duration,
    pub(crate) max_response_bytes: usize,
    pub(crate) connector: std::sync::Arc<str>,
    pub(crate) budget: std::sync::Arc<crate::budget::CallBudget>,
    /// Outgoing-body chunk size (see `budget`).
    pub(crate) body_chunk: usize,
    /// Checked before a request starts, before each body chunk is written,
    /// and raced against the response (the egress gate, `gate.rs`: not one
    /// of the two gates above).
    pub(crate) gate: std::sync::Arc<crate::EgressGate>,
    /// This call's pass: void once the gate closes, even if it reopens.
    pub(crate) pass: crate::Pass,
}

impl WasiHttpHooks for EgressHooks {
    fn is_supported_scheme(&mut self, scheme: &Scheme) -> bool {
        *scheme == Scheme::HTTP || *scheme == Scheme::HTTPS
    }

    fn default_scheme(&mut self) -> Option<Scheme> {
        // Require guests to say what they mean.
        None
    }

    fn p2_outgoing_body_buffer_chunks(&mut self) -> usize {
        // With one slot kept free by wasmtime, a body buffers two chunks.
        1
    }

    fn p2_outgoing_body_chunk_size(&mut self) -> usize {
        self.body_chunk
    }

    fn send_request(
        &mut self,
        mut request: http::Request<WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Box<
        dyn Future<
                Output = wasmtime_wasi_http::Result<(
                    http::Response<WasiBody>,
                    Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
                )>,
            > + Send,
    > {
        if !self.gate.is_open_for(self.pass) {
            tracing::warn!(connector = %self.connector, "request refused: this node may have been given up on by the others (heartbeat unconfirmed); it sends nothing until the store confirms it again");
            return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
        }
        let Some(permit) = self.budget.request_permit() else {
            return Box::new(async { Err(wasmtime_wasi_http::Error::ConnectionLimitReached) });
        };
        let scheme = request.uri().scheme().cloned().unwrap_or(Scheme::HTTP);
        let authority = request
            .uri()
            .authority()
            .map(|a| a.as_str().to_string())
            .unwrap_or_default();
        for secret in &self.secret_headers {
            let for_this_host = secret
                .hosts
                .as_ref()
                .is_none_or(|hosts| hosts.check(&scheme, &authority).is_ok());
            if for_this_host {
                request
                    .headers_mut()
                    .insert(secret.name.clone(), secret.value.clone());
            }
        }
        // Request-body bytes count against the call's `max_request_bytes`,
        // and none is written once the gate has closed.
        let budget = self.budget.clone();
        let (gate, pass) = (self.gate.clone(), self.pass);
        let request = request.map(|body| {
            MeteredBody {
                inner: body,
                meter: move |n| {
                    if !gate.is_open_for(pass) {
                        return Err(wasmtime_wasi_http::Error::HttpRequestDenied);
                    }
                    budget.send(n).map_err(|limit| {
                        wasmtime_wasi_http::Error::HttpRequestBodySize(Some(limit))
                    })
                },
            }
            .boxed_unsync()
        });
        // The guest may ask for shorter timeouts, never longer ones.
        let timeout = options
            .and_then(|o| o.first_byte_timeout.or(o.connect_timeout))
            .map_or(self.request_timeout, |t| t.min(self.request_timeout));
        let client = self.client.clone();
        let max = self.max_response_bytes;
        let connector = self.connector.clone();
        let (gate, pass) = (self.gate.clone(), self.pass);
        Box::new(async move {
            let sent = tokio::time::timeout(timeout, client.request(request));
            let response = tokio::select! {
                biased;
                _ = gate.closed_for(pass) => return Err(wasmtime_wasi_http::Error::HttpRequestDenied),
                r = sent => r,
            };
            let response = match response {
                Err(_elapsed) => return Err(wasmtime_wasi_http::Error::ConnectionReadTimeout),
                Ok(Err(e)) => return Err(classify_client_error(&connector, &e)),
                Ok(Ok(r)) => r,
            };
            // The response body is capped at `max_response_bytes`, and holds
            // the call's permit for this request until it is done.
            let limit = u64::try_from(max).unwrap_or(u64::MAX);
            let mut remaining = max;
            let response = response.map(|body| {
                MeteredBody {
                    inner: body.map_err(wasmtime_wasi_http::Error::from).boxed_unsync(),
                    meter: move |n: usize| {
                        let _in_flight = &permit;
                        remaining = remaining
                            .checked_sub(n)
                            .ok_or(wasmtime_wasi_http::Error::HttpResponseBodySize(Some(limit)))?;
                        Ok(())
                    },
                }
                .boxed_unsync()
            });
            let io: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send> =
                Box::new(async { Ok(()) });
            Ok((response, io))
        })
    }
}

/// Map a pooled-client error to the closest `wasi:http` error code.
fn classify_client_error(
    connector: &str,
    e: &hyper_util::client::legacy::Error,
) -> wasmtime_wasi_http::Error {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(resolve) = err.downcast_ref::<ResolveError>() {
            tracing::warn!(connector, error = %resolve, "egress refused or unresolvable");
            return match resolve {
                ResolveError::Prohibited(_) => wasmtime_wasi_http::Error::DestinationIpProhibited,
                ResolveError::Lookup(..) | ResolveError::Empty(_) => {
                    wasmtime_wasi_http::Error::DestinationNotFound
                }
            };
        }
        if let Some(tls) = err.downcast_ref::<crate::tls::TlsError>() {
            tracing::warn!(connector, error = %tls, "upstream TLS handshake failed");
            return wasmtime_wasi_http::Error::TlsCertificateError;
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                return wasmtime_wasi_http::Error::ConnectionTimeout;
            }
        }
        source = err.source();
    }
    tracing::debug!(connector, error = %e, "upstream request failed");
    if e.is_connect() {
        wasmtime_wasi_http::Error::ConnectionRefused
    } else {
        wasmtime_wasi_http::Error::ConnectionTerminated
    }
}

/// A body whose data frames pass `meter` first: the first frame it refuses
/// ends the body with the meter's error. Whatever the meter holds (a
/// request-in-flight permit) lives as long as the body.
struct MeteredBody<M> {
    inner: WasiBody,
    meter: M,
}

impl<M> Body for MeteredBody<M>
where
    M: FnMut(usize) -> Result<(), wasmtime_wasi_http::Error> + Unpin,
{
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                let len = data.len();
                if let Err(e) = (self.meter)(len) {
                    return Poll::Ready(Some(Err(e)));
                }
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// `wasi:http/outgoing-handler.handle` with gate 1 in front of
/// wasmtime-wasi-http's implementation. The outer `Err` is a trap; the inner
/// one is the `error-code` the guest sees.
///
/// Registered by hand (`func_wrap`) rather than through the generated
/// `add_to_linker`, whose `Host` bound would force re-implementing all of
/// `wasi:http/types` on a wrapper type.
pub(crate) fn gated_handle(
    mut http: WasiHttpCtxView<'_>,
    policy: &EgressPolicy,
    connector: &str,
    request: Resource<HostOutgoingRequest>,
    options: Option<Resource<RequestOptions>>,
) -> wasmtime::Result<Result<Resource<HostFutureIncomingResponse>, ErrorCode>> {
    // The guest hands the options over with the request; wasmtime's handler
    // only reads them, so they are deleted here on every path (left in the
    // table, they would hold a resource slot for the rest of the call and
    // keep the instance from being reused).
    let options_rep = options.as_ref().map(|o| o.rep());
    let drop_options = |http: &mut WasiHttpCtxView<'_>| {
        // Only if the entry is still the options: were a handler to delete
        // them itself, the slot could hold the response future by now.
        if let Some(rep) = options_rep {
            if http
                .table
                .get(&Resource::<RequestOptions>::new_borrow(rep))
                .is_ok()
            {
                let _ = http.table.delete(Resource::<RequestOptions>::new_own(rep));
            }
        }
    };
    let req = http.table.get(&request)?;
    let scheme = match &req.scheme {
        Some(WasiScheme::Http) => Scheme::HTTP,
        Some(WasiScheme::Https) => Scheme::HTTPS,
        Some(WasiScheme::Other(_)) | None => {
            http.table.delete(request)?;
            drop_options(&mut http);
            return Ok(Err(ErrorCode::HttpProtocolError));
        }
    };
    let authority = req.authority.clone().unwrap_or_default();
    if let Err(why) = policy.check(&scheme, &authority) {
        tracing::warn!(connector, %why, "egress denied");
        http.table.delete(request)?;
        drop_options(&mut http);
        return Ok(Err(ErrorCode::HttpRequestDenied));
    }
    let handled = outgoing_handler::Host::handle(&mut http, request, options);
    drop_options(&mut http);
    match handled {
        Ok(future) => Ok(Ok(future)),
        Err(e) => match e.downcast() {
            Ok(code) => Ok(Err(code)),
            Err(trap) => Err(trap),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(entries: &[&str]) -> EgressPolicy {
        EgressPolicy::new(&entries.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn allowed_hosts_match_by_host_and_port() {
        let p = policy(&[
            "127.0.0.1:18080",
            "CRM.example.",
            "[::1]:9000",
            "bad:port:x",
        ]);
        let http = Scheme::HTTP;
        assert!(p.check(&http, "127.0.0.1:18080").is_ok());
        assert!(p.check(&http, "127.0.0.1:18081").is_err());
        assert!(p.check(&http, "127.0.0.1").is_err()); // port 80
        assert!(p.check(&http, "crm.example").is_ok());
        assert!(p.check(&http, "crm.example:8443").is_ok());
        assert!(p.check(&http, "crm.example.evil").is_err());
        assert!(p.check(&http, "[::1]:9000").is_ok());
        assert!(p.check(&http, "[::1]:9001").is_err());
        assert!(p.check(&http, "user@crm.example").is_err());
        assert!(p.check(&http, "").is_err());
    }
}
