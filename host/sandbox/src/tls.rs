//! HTTPS to upstreams: a connector for the shared client that makes the TCP
//! connection through [`HttpConnector`] (so the resolver's address gate still
//! decides where it may go) and, for `https` URIs, runs a TLS handshake on it
//! that verifies the server's certificate for the URI's host name against
//! the public web roots plus any CA certificates the operator adds (an
//! internal PKI, typical for HSS/UDM and billing systems).

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::Uri;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::resolve::CheckedResolver;

/// The TLS client settings every upstream connection shares: web roots, the
/// operator's extra CAs, HTTP/1.1.
pub(crate) fn client_config(extra_ca_pem: Option<&Path>) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = extra_ca_pem {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .map_err(|e| format!("cannot read CA file {}: {e}", path.display()))?
            .collect::<Result<_, _>>()
            .map_err(|e| format!("CA file {}: {e}", path.display()))?;
        if certs.is_empty() {
            return Err(format!("CA file {} holds no certificate", path.display()));
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| format!("CA file {}: {e}", path.display()))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// `http` and `https` connections for one connector's client, each counted
/// against the connector's and the process's connection caps.
#[derive(Clone)]
pub(crate) struct EgressConnector {
    http: HttpConnector<CheckedResolver>,
    tls: TlsConnector,
    permits: ConnectionPermits,
}

impl EgressConnector {
    pub(crate) fn new(
        mut http: HttpConnector<CheckedResolver>,
        tls: Arc<rustls::ClientConfig>,
        permits: ConnectionPermits,
    ) -> Self {
        // The scheme decides TLS here, not in HttpConnector.
        http.enforce_http(false);
        Self {
            http,
            tls: TlsConnector::from(tls),
            permits,
        }
    }
}

/// The two caps every new upstream connection counts against: its
/// connector's (`max_connections`) and the process's egress ceiling. A
/// connection holds one permit of each until it is closed, idle in the pool
/// included, since it holds a descriptor all that time.
#[derive(Clone)]
pub(crate) struct ConnectionPermits {
    pub(crate) connector: Arc<tokio::sync::Semaphore>,
    pub(crate) process: Arc<tokio::sync::Semaphore>,
}

/// Held by an open connection; released when it closes.
pub(crate) struct ConnectionPermit {
    _connector: tokio::sync::OwnedSemaphorePermit,
    _process: tokio::sync::OwnedSemaphorePermit,
}

impl ConnectionPermits {
    /// Waits for a permit of each (the connector's first, so a connector at
    /// its own cap never holds process permits while it waits). The caller's
    /// request timeout bounds the wait.
    async fn acquire(&self) -> Result<ConnectionPermit, BoxError> {
        let closed = || Box::new(io::Error::other("egress connection limits closed")) as BoxError;
        let connector = self
            .connector
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| closed())?;
        let process = self
            .process
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| closed())?;
        Ok(ConnectionPermit {
            _connector: connector,
            _process: process,
        })
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower::Service<Uri> for EgressConnector {
    type Response = EgressStream;
    type Error = BoxError;
    type Future = Pin<Box<dyn std::future::Future<Output = Result<EgressStream, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.http.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let https = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
        let host = uri.host().unwrap_or_default().to_string();
        let mut http = self.http.clone();
        let tls = self.tls.clone();
        let permits = self.permits.clone();
        Box::pin(async move {
            let permit = permits.acquire().await?;
            let tcp = http.call(uri).await.map_err(|e| Box::new(e) as BoxError)?;
            if !https {
                return Ok(EgressStream {
                    io: MaybeTls::Plain(tcp),
                    _permit: permit,
                });
            }
            // An IPv6 literal comes bracketed in the URI.
            let name = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let server_name = ServerName::try_from(name).map_err(|e| {
                Box::new(io::Error::new(io::ErrorKind::InvalidInput, e)) as BoxError
            })?;
            let stream = tls
                .connect(server_name, tcp.into_inner())
                .await
                .map_err(|e| Box::new(TlsError(e)) as BoxError)?;
            Ok(EgressStream {
                io: MaybeTls::Tls(Box::new(TokioIo::new(stream))),
                _permit: permit,
            })
        })
    }
}

/// A failed TLS handshake (bad or untrusted certificate, wrong name, no
/// common protocol), told apart from other connection errors.
#[derive(Debug)]
pub(crate) struct TlsError(pub(crate) io::Error);

impl std::fmt::Display for TlsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TLS handshake failed: {}", self.0)
    }
}

impl std::error::Error for TlsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// A plain or TLS upstream connection.
/// An upstream connection and the permits it holds.
pub(crate) struct EgressStream {
    io: MaybeTls,
    _permit: ConnectionPermit,
}

enum MaybeTls {
    Plain(TokioIo<TcpStream>),
    Tls(Box<TokioIo<TlsStream<TcpStream>>>),
}

impl Connection for EgressStream {
    fn connected(&self) -> Connected {
        match &self.io {
            MaybeTls::Plain(s) => s.connected(),
            MaybeTls::Tls(s) => s.inner().get_ref().0.connected(),
        }
    }
}

impl Read for EgressStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            MaybeTls::Plain(s) => Pin::new(s).poll_read(cx, buf),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl Write for EgressStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            MaybeTls::Plain(s) => Pin::new(s).poll_write(cx, buf),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            MaybeTls::Plain(s) => Pin::new(s).poll_flush(cx),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            MaybeTls::Plain(s) => Pin::new(s).poll_shutdown(cx),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
