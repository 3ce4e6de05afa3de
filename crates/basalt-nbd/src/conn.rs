//! One client connection: handshake, then transmission, then closing the image off the async runtime.

use std::sync::Arc;

use basalt_core::Backend;
use tokio::io::{AsyncRead, AsyncWrite, BufReader};
use tokio::sync::{Semaphore, watch};

use crate::handshake::{self, Outcome};
use crate::proto::ProtocolError;
use crate::server::Limits;
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

/// Serves one connection to its end.
pub(crate) async fn run<R, W>(
    reader: R,
    mut writer: W,
    client: String,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let mut reader = BufReader::with_capacity(READ_BUFFER_BYTES, reader);
    let handshake = handshake::negotiate(&mut reader, &mut writer, &shared, &client, &mut shutdown);
    let session = match tokio::time::timeout(shared.limits.handshake_timeout, handshake).await {
        Err(_) => {
            tracing::info!(client, "handshake timed out");
            return;
        }
        Ok(Err(err)) => {
            log_end(&client, &err);
            return;
        }
        Ok(Ok(Outcome::Closed)) => return,
        Ok(Ok(Outcome::Transmission(session))) => session,
    };
    let export = session.name;
    let handle = session.export.handle;
    let result = transmission::run(reader, writer, handle, session.negotiated, shared.clone(), shutdown, &client).await;
    match result {
        Ok(()) => tracing::info!(client, export, "client disconnected"),
        Err(err) => log_end(&client, &err),
    }
}

fn log_end(client: &str, err: &ConnError) {
    match err {
        ConnError::Io(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            tracing::debug!(client, "client hung up")
        }
        ConnError::Io(io) => tracing::info!(client, error = %io, "connection failed"),
        ConnError::Protocol(_) | ConnError::Refused(_) => tracing::warn!(client, error = %err, "connection closed"),
    }
}
