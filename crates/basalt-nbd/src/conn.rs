//! One client connection: handshake, then transmission, then closing the image off the async runtime.

use std::sync::Arc;

use basalt_core::Backend;
use tokio::io::{AsyncRead, AsyncWrite, BufReader};
use tokio::net::{TcpStream, UnixStream, tcp, unix};
use tokio::sync::{Semaphore, watch};

use crate::access::Authorizer;
use crate::handshake::{self, Outcome, Session, TlsPhase};
use crate::proto::ClientFlags;
use crate::proto::ProtocolError;
use crate::server::Limits;
use crate::tls::Tls;
use crate::transmission;

/// Size of the read buffer in front of the socket: several pipelined request headers arrive in one read, and
/// large payloads bypass it.
const READ_BUFFER_BYTES: usize = 64 << 10;

/// State shared by every connection of one server.
#[derive(Debug)]
pub(crate) struct Shared {
    /// The storage.
    pub backend: Arc<dyn Backend>,
    /// The bounds.
    pub limits: Limits,
    /// Payload bytes buffered by all connections together (write data received, read data not yet sent).
    pub memory: Arc<Semaphore>,
    /// When set, clients must upgrade with `NBD_OPT_STARTTLS` before anything else.
    pub tls: Option<Tls>,
    /// When set, decides each client's access to each image; without it every client may use every export.
    pub authorizer: Option<Arc<dyn Authorizer>>,
    /// Large request buffers kept for reuse.
    pub buffers: Arc<crate::buffers::Buffers>,
}

/// Why a connection ended early.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnError {
    /// The socket failed or the client hung up.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The client broke the framing.
    #[error("protocol violation: {0}")]
    Protocol(#[from] ProtocolError),
    /// The server ended the connection on purpose.
    #[error("{0}")]
    Refused(String),
    /// The server failed while handling a request (a backend call panicked): during the handshake the option gets
    /// an error reply saying so, and negotiation goes on.
    #[error("{0}")]
    Failed(String),
}

/// Resolves once shutdown is requested (the value turns true or the sender is gone); cancel-safe.
pub(crate) async fn shutdown_requested(shutdown: &mut watch::Receiver<bool>) {
    loop {
        if *shutdown.borrow_and_update() {
            return;
        }
        if shutdown.changed().await.is_err() {
            return;
        }
    }
}

/// A byte stream a connection runs on, split into halves that the reader and writer tasks own.
///
/// `join` puts the halves back together for `NBD_OPT_STARTTLS`, which wraps the whole stream.
pub(crate) trait Transport: AsyncRead + AsyncWrite + Unpin + Send + Sized + 'static {
    type Reader: AsyncRead + Unpin + Send + 'static;
    type Writer: AsyncWrite + Unpin + Send + 'static;
    fn split(self) -> (Self::Reader, Self::Writer);
    fn join(reader: Self::Reader, writer: Self::Writer) -> std::io::Result<Self>;
}

impl Transport for TcpStream {
    type Reader = tcp::OwnedReadHalf;
    type Writer = tcp::OwnedWriteHalf;
    fn split(self) -> (Self::Reader, Self::Writer) {
        self.into_split()
    }
    fn join(reader: Self::Reader, writer: Self::Writer) -> std::io::Result<Self> {
        reader.reunite(writer).map_err(std::io::Error::other)
    }
}

impl Transport for UnixStream {
    type Reader = unix::OwnedReadHalf;
    type Writer = unix::OwnedWriteHalf;
    fn split(self) -> (Self::Reader, Self::Writer) {
        self.into_split()
    }
    fn join(reader: Self::Reader, writer: Self::Writer) -> std::io::Result<Self> {
        reader.reunite(writer).map_err(std::io::Error::other)
    }
}

/// Serves one connection to its end: the handshake (upgrading to TLS when the client asks and the server can),
/// then transmission.
///
/// `address_budget` is the buffer budget the connections of the client's address share (none for the Unix socket).
pub(crate) async fn run<S: Transport>(
    stream: S,
    client: String,
    shared: Arc<Shared>,
    address_budget: Option<Arc<Semaphore>>,
    shutdown: watch::Receiver<bool>,
) {
    let deadline = tokio::time::Instant::now() + shared.limits.handshake_timeout;
    let result = tokio::time::timeout_at(deadline, handshake_plain(stream, &client, &shared, shutdown.clone())).await;
    let result = match result {
        Err(_) => Err(ConnError::Refused("handshake timed out".into())),
        Ok(Err(err)) => Err(err),
        Ok(Ok(Plain::Closed)) => return,
        Ok(Ok(Plain::Transmission(reader, writer, session))) => {
            serve_session(reader, writer, session, &client, &shared, address_budget, shutdown).await
        }
        Ok(Ok(Plain::StartTls(stream, flags))) => {
            let upgraded = tokio::time::timeout_at(deadline, handshake_tls(stream, flags, &client, &shared, &shutdown));
            match upgraded.await {
                Err(_) => Err(ConnError::Refused("handshake timed out".into())),
                Ok(Err(err)) => Err(err),
                Ok(Ok(None)) => return,
                Ok(Ok(Some((reader, writer, session)))) => {
                    serve_session(reader, writer, session, &client, &shared, address_budget, shutdown).await
                }
            }
        }
    };
    match result {
        Ok(export) => tracing::info!(client, export, "client disconnected"),
        Err(err) => log_end(&client, &err),
    }
}

/// How the cleartext part of the handshake ended.
enum Plain<S: Transport> {
    Transmission(BufReader<S::Reader>, S::Writer, Session),
    StartTls(S, ClientFlags),
    Closed,
}

async fn handshake_plain<S: Transport>(
    stream: S,
    client: &str,
    shared: &Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<Plain<S>, ConnError> {
    let (reader, mut writer) = stream.split();
    let mut reader = BufReader::with_capacity(READ_BUFFER_BYTES, reader);
    let flags = handshake::greet(&mut reader, &mut writer).await?;
    let phase = if shared.tls.is_some() { TlsPhase::Required } else { TlsPhase::Off };
    match handshake::negotiate(&mut reader, &mut writer, shared, client, None, &mut shutdown, flags, phase).await? {
        Outcome::Closed => Ok(Plain::Closed),
        Outcome::Transmission(session) => Ok(Plain::Transmission(reader, writer, session)),
        Outcome::StartTls => {
            // A client must wait for the reply to STARTTLS before its TLS hello: anything already buffered was
            // sent in clear after the upgrade request and cannot be trusted.
            if !reader.buffer().is_empty() {
                return Err(ConnError::Refused("data sent after NBD_OPT_STARTTLS before its reply".into()));
            }
            Ok(Plain::StartTls(S::join(reader.into_inner(), writer)?, flags))
        }
    }
}

type TlsHalves<S> = (
    BufReader<tokio::io::ReadHalf<tokio_rustls::server::TlsStream<S>>>,
    tokio::io::WriteHalf<tokio_rustls::server::TlsStream<S>>,
    Session,
);

async fn handshake_tls<S: Transport>(
    stream: S,
    flags: ClientFlags,
    client: &str,
    shared: &Arc<Shared>,
    shutdown: &watch::Receiver<bool>,
) -> Result<Option<TlsHalves<S>>, ConnError> {
    let Some(tls) = &shared.tls else {
        return Err(ConnError::Refused("STARTTLS accepted without TLS configured".into()));
    };
    let stream =
        tls.acceptor().accept(stream).await.map_err(|err| ConnError::Refused(format!("TLS handshake: {err}")))?;
    // rustls has verified the chain against the client CA, if one is configured.
    let identity = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|leaf| crate::access::subject_common_name(leaf));
    tracing::debug!(client, identity, "TLS established");
    let (reader, mut writer) = tokio::io::split(stream);
    let mut reader = BufReader::with_capacity(READ_BUFFER_BYTES, reader);
    let mut shutdown = shutdown.clone();
    // Options negotiated before the upgrade are forgotten, as the spec asks; the client flags stay.
    let identity = identity.as_deref();
    match handshake::negotiate(
        &mut reader,
        &mut writer,
        shared,
        client,
        identity,
        &mut shutdown,
        flags,
        TlsPhase::Active,
    )
    .await?
    {
        Outcome::Transmission(session) => Ok(Some((reader, writer, session))),
        Outcome::Closed => Ok(None),
        Outcome::StartTls => Err(ConnError::Refused("STARTTLS on a TLS connection".into())),
    }
}

/// Transmission on a chosen export; returns the export's name for the log.
async fn serve_session<R, W>(
    reader: BufReader<R>,
    writer: W,
    session: Session,
    client: &str,
    shared: &Arc<Shared>,
    address_budget: Option<Arc<Semaphore>>,
    shutdown: watch::Receiver<bool>,
) -> Result<String, ConnError>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let handle = session.export.handle;
    let budgets = transmission::Budgets { shared: shared.clone(), address: address_budget };
    transmission::run(reader, writer, handle, session.negotiated, budgets, shutdown, client).await?;
    Ok(session.name)
}

fn log_end(client: &str, err: &ConnError) {
    match err {
        ConnError::Io(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            tracing::debug!(client, "client hung up")
        }
        ConnError::Io(io) => tracing::info!(client, error = %io, "connection failed"),
        ConnError::Protocol(_) | ConnError::Refused(_) | ConnError::Failed(_) => {
            tracing::warn!(client, error = %err, "connection closed")
        }
    }
}
