//! How the REST API listens: TLS, timeouts and a connection cap per listener, and the options `serve` takes for
//! them (with the password policy and who may read `/metrics`).
//!
//! Each listener runs its own accept loop over hyper's HTTP/1.1 connection: the request head must arrive within
//! the header timeout (which also ends idle keep-alive connections), a connection on which nothing moves in either
//! direction for the idle timeout is closed, and at most `max_connections` connections are served at once, at most
//! `max_per_address` of them from one client address; one more is accepted and closed at once, so a flood of silent
//! sockets can neither exhaust the process's descriptors nor, from one address, keep other clients out.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};

use crate::auth::PasswordPolicy;

/// The default time a client has to send a request head (and the longest an idle keep-alive connection stays).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// The default time a connection may go without a byte moving either way before it is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// The default number of connections served at once on each listener.
pub const MAX_CONNECTIONS: usize = 256;
/// The default number of connections served at once from one client address (TCP).
pub const MAX_PER_ADDRESS: usize = 64;
/// The largest request head hyper buffers; the API's own limits (below) answer before it is reached.
const HEAD_BUFFER_BYTES: usize = 256 << 10;

/// The REST API's listener options.
#[derive(Debug, Clone)]
pub struct ApiOptions {
    /// What passwords must be.
    pub password_policy: PasswordPolicy,
    /// Serve HTTPS on the TCP listener with this certificate and key.
    pub tls: Option<ApiTls>,
    /// Allow plain HTTP on an address that is not loopback.
    pub insecure_http: bool,
    /// Serve `/metrics` without a token on an address that is not loopback.
    pub metrics_public: bool,
    /// How long a client has to send a request head.
    pub header_timeout: Duration,
    /// How long a connection may stay without traffic.
    pub idle_timeout: Duration,
    /// Connections served at once on each listener.
    pub max_connections: usize,
    /// Connections served at once from one client address on the TCP listener.
    pub max_per_address: usize,
}

impl Default for ApiOptions {
    fn default() -> ApiOptions {
        ApiOptions {
            password_policy: PasswordPolicy::default(),
            tls: None,
            insecure_http: false,
            metrics_public: false,
            header_timeout: HEADER_TIMEOUT,
            idle_timeout: IDLE_TIMEOUT,
            max_connections: MAX_CONNECTIONS,
            max_per_address: MAX_PER_ADDRESS,
        }
    }
}

/// The REST API's certificate chain and key (PEM files).
#[derive(Debug, Clone)]
pub struct ApiTls {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

impl ApiOptions {
    /// Refuses plain HTTP on an address other than loopback unless the operator asked for it.
    pub fn check_listen(&self, listen: SocketAddr) -> Result<(), String> {
        if self.tls.is_none() && !self.insecure_http && !listen.ip().is_loopback() {
            return Err(format!(
                "refusing to serve the REST API in clear on {listen}, which is not a loopback address: passwords and \
                 tokens would cross the network readable by anyone on the path. Give --tls-cert and --tls-key, or \
                 pass --insecure-http to accept that (for example behind a TLS proxy on the same host)"
            ));
        }
        Ok(())
    }

    /// True when `/metrics` needs no token on `listen`.
    pub fn metrics_open(&self, listen: SocketAddr) -> bool {
        self.metrics_public || listen.ip().is_loopback()
    }
}

/// Loads the certificate and key and checks that they fit together.
pub fn load_tls(files: &ApiTls) -> Result<TlsAcceptor, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: cannot read the certificate chain: {e}", files.cert.display()))?;
    if chain.is_empty() {
        return Err(format!("{}: no certificate in the file", files.cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| format!("{}: cannot read the private key: {e}", files.key.display()))?;
    let config = ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("the certificate and key do not make a TLS configuration: {e}"))?;
    let mut config = config;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// A byte stream of any transport.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// One API listener.
#[derive(Debug)]
pub(crate) enum Listener {
    /// TCP: the peer address reaches handlers as `ConnectInfo`.
    Tcp(TcpListener),
    /// The local administrator socket.
    Unix(UnixListener),
}

impl Listener {
    async fn accept(&self) -> std::io::Result<(Box<dyn Io>, Option<SocketAddr>)> {
        match self {
            Listener::Tcp(l) => {
                let (s, peer) = l.accept().await?;
                let _ = s.set_nodelay(true);
                Ok((Box::new(s), Some(peer)))
            }
            Listener::Unix(l) => Ok((Box::new(l.accept().await?.0), None)),
        }
    }
}

/// How one listener serves.
#[derive(Clone)]
pub(crate) struct Serving {
    pub(crate) header_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) max_connections: usize,
    pub(crate) max_per_address: usize,
    pub(crate) tls: Option<TlsAcceptor>,
}

impl std::fmt::Debug for Serving {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Serving")
            .field("header_timeout", &self.header_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("max_connections", &self.max_connections)
            .field("max_per_address", &self.max_per_address)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// Whether `/metrics` answers without a token on a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MetricsOpen(pub(crate) bool);

/// Starts the API on its TCP listener and on the administrator socket; both stop when `stop` turns true.
pub(crate) fn spawn(
    tcp: TcpListener,
    unix: UnixListener,
    state: &crate::state::AppState,
    options: &ApiOptions,
    tls: Option<TlsAcceptor>,
    listen: SocketAddr,
    stop: &watch::Receiver<bool>,
) -> (tokio::task::JoinHandle<()>, tokio::task::JoinHandle<()>) {
    use crate::auth::Origin;
    let serving = Serving {
        header_timeout: options.header_timeout,
        idle_timeout: options.idle_timeout,
        max_connections: options.max_connections,
        max_per_address: options.max_per_address,
        tls,
    };
    let tcp_app = crate::api::router(state.clone(), Origin::Network)
        .layer(axum::Extension(MetricsOpen(options.metrics_open(listen))));
    let unix_app = crate::api::router(state.clone(), Origin::LocalSocket).layer(axum::Extension(MetricsOpen(true)));
    let tcp_task = tokio::spawn(serve(Listener::Tcp(tcp), tcp_app, serving.clone(), stop.clone()));
    let unix_task = tokio::spawn(serve(Listener::Unix(unix), unix_app, Serving { tls: None, ..serving }, stop.clone()));
    (tcp_task, unix_task)
}

/// Connections per client address, each counted while its [`AddressSlot`] lives.
#[derive(Debug, Clone)]
struct PerAddress {
    open: Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>,
    max: usize,
}

#[derive(Debug)]
struct AddressSlot {
    of: PerAddress,
    address: std::net::IpAddr,
}

impl PerAddress {
    fn new(max: usize) -> PerAddress {
        PerAddress { open: Arc::default(), max: max.max(1) }
    }

    /// A slot for one more connection from `address`, or None when it has its maximum open.
    fn enter(&self, address: std::net::IpAddr) -> Option<AddressSlot> {
        let mut open = self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = open.entry(address).or_default();
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(AddressSlot { of: self.clone(), address })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = self.of.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.address);
            }
        }
    }
}

/// Serves `app` on `listener` until `stop` turns true, then lets open requests finish (for at most half a minute).
pub(crate) async fn serve(listener: Listener, app: Router, serving: Serving, mut stop: watch::Receiver<bool>) {
    let slots = Arc::new(Semaphore::new(serving.max_connections));
    let per_address = PerAddress::new(serving.max_per_address);
    let mut last_refusal_log: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            _ = stop.changed() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((io, peer)) => {
                // The API socket has no client address; TCP clients each get their share.
                let address = peer.map(|p| per_address.enter(p.ip()));
                match (slots.clone().try_acquire_owned(), address) {
                    (Ok(slot), address @ (None | Some(Some(_)))) => {
                        let app = app.clone();
                        let serving = serving.clone();
                        let stop = stop.clone();
                        let address_slot = address.flatten();
                        tokio::spawn(async move {
                            connection(io, peer, app, &serving, stop).await;
                            drop(address_slot);
                            drop(slot);
                        });
                    }
                    (slot, address_slot) => {
                        drop((io, slot, address_slot));
                        if last_refusal_log.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                            last_refusal_log = Some(Instant::now());
                            tracing::warn!(
                                limit = serving.max_connections,
                                per_address = serving.max_per_address,
                                ?peer,
                                "the API listener, or this client address, has its maximum of connections open: \
                                 closing new ones at once"
                            );
                        }
                    }
                }
            }
            Err(err) => {
                // Out of descriptors or memory: wait a little instead of spinning; open connections go on.
                tracing::warn!(error = %err, "accepting an API connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    drop(listener);
    let all = u32::try_from(serving.max_connections).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(Duration::from_secs(30), slots.acquire_many(all)).await;
}

async fn connection(
    io: Box<dyn Io>,
    peer: Option<SocketAddr>,
    app: Router,
    serving: &Serving,
    mut stop: watch::Receiver<bool>,
) {
    let io: Box<dyn Io> = match &serving.tls {
        None => io,
        Some(acceptor) => match tokio::time::timeout(serving.header_timeout, acceptor.accept(io)).await {
            Ok(Ok(tls)) => Box::new(tls),
            Ok(Err(err)) => {
                tracing::debug!(error = %err, ?peer, "TLS handshake failed");
                return;
            }
            Err(_) => return,
        },
    };
    let io = TokioIo::new(Idle::new(io, serving.idle_timeout));
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        if let Some(peer) = peer {
            request.extensions_mut().insert(ConnectInfo(peer));
        }
        let mut app = app.clone();
        async move { tower_service::Service::call(&mut app, request).await }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(serving.header_timeout)
        .max_buf_size(HEAD_BUFFER_BYTES)
        .keep_alive(true);
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        _ = stop.changed() => {
            conn.as_mut().graceful_shutdown();
            conn.as_mut().await
        }
    };
    if let Err(err) = result {
        tracing::debug!(error = %err, ?peer, "API connection ended with an error");
    }
}

/// A stream that fails with `TimedOut` once no byte has moved either way for `timeout` while someone waits on it.
struct Idle {
    inner: Box<dyn Io>,
    timeout: Duration,
    last: tokio::time::Instant,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl Idle {
    fn new(inner: Box<dyn Io>, timeout: Duration) -> Idle {
        let now = tokio::time::Instant::now();
        Idle { inner, timeout, last: now, sleep: Box::pin(tokio::time::sleep_until(now + timeout)) }
    }

    fn moved(&mut self) {
        self.last = tokio::time::Instant::now();
    }

    /// Called when an operation is pending: arms the timer for the current deadline, fails once it has passed.
    fn check(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Error> {
        let deadline = self.last + self.timeout;
        if self.sleep.deadline() != deadline {
            self.sleep.as_mut().reset(deadline);
        }
        ready!(self.sleep.as_mut().poll(cx));
        Poll::Ready(std::io::Error::new(std::io::ErrorKind::TimedOut, "the connection was idle for too long"))
    }
}

impl AsyncRead for Idle {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    self.moved();
                }
                Poll::Ready(result)
            }
            Poll::Pending => self.check(cx).map(Err),
        }
    }
}

impl AsyncWrite for Idle {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, data) {
            Poll::Ready(result) => {
                if result.as_ref().is_ok_and(|n| *n > 0) {
                    self.moved();
                }
                Poll::Ready(result)
            }
            Poll::Pending => self.check(cx).map(Err),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Ready(result) => Poll::Ready(result),
            Poll::Pending => self.check(cx).map(Err),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match Pin::new(&mut self.inner).poll_shutdown(cx) {
            Poll::Ready(result) => Poll::Ready(result),
            // A peer that takes no more data cannot hold the connection (and its slot) at the very end either.
            Poll::Pending => self.check(cx).map(Err),
        }
    }
}
