//! The listener side: accepting TCP and Unix-socket clients, bounding their number (in all and per client
//! address), and shutting down cleanly.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use basalt_core::Backend;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::access::Authorizer;
use crate::conn::{self, Shared, shutdown_requested};
use crate::tls::Tls;

/// Where the server accepts clients.
#[derive(Debug)]
pub enum Listener {
    /// A TCP socket (`nbd://host:port/export`); clients are named by their peer address.
    Tcp(TcpListener),
    /// A Unix socket (`nbd+unix:///export?socket=PATH`); clients are named `unix`.
    Unix(UnixListener),
}

impl From<TcpListener> for Listener {
    fn from(listener: TcpListener) -> Listener {
        Listener::Tcp(listener)
    }
}

impl From<UnixListener> for Listener {
    fn from(listener: UnixListener) -> Listener {
        Listener::Unix(listener)
    }
}

/// The bounds that keep a server's memory and task count finite whatever its clients send.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Connections served at once; more are accepted and closed at once.
    pub max_connections: usize,
    /// Connections served at once from one TCP client address; more are accepted and closed at once, so silent
    /// sockets from one address cannot take every slot. Unix-socket clients (the local administrator) are exempt.
    pub max_connections_per_address: usize,
    /// Requests one connection may have in flight; the reader stops reading until one completes.
    pub max_in_flight_per_connection: usize,
    /// Payload bytes (write data, read replies) one connection may hold; raised to at least 32 MiB.
    pub buffer_bytes_per_connection: usize,
    /// Payload bytes all connections from one TCP client address may hold together; raised to at least 32 MiB and
    /// lowered to at most a quarter of [`Limits::buffer_bytes_total`], so a client that queues reads and never
    /// reads the replies stalls only its own connections.
    pub buffer_bytes_per_address: usize,
    /// Payload bytes all connections together may hold; raised to at least 32 MiB.
    pub buffer_bytes_total: usize,
    /// Time a client has from connecting to finish option haggling (TLS included); then it is cut.
    pub handshake_timeout: Duration,
    /// Time connections get to finish in-flight requests after shutdown before they are cut.
    pub drain_timeout: Duration,
    /// Time an `NBD_OPT_GO` for a locked image head waits for the lock before it is refused: a client that has
    /// just disconnected may not be closed yet when its successor connects.
    pub lock_wait: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: 256,
            max_connections_per_address: 32,
            max_in_flight_per_connection: 64,
            buffer_bytes_per_connection: 128 << 20,
            buffer_bytes_per_address: 256 << 20,
            buffer_bytes_total: 1 << 30,
            handshake_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(30),
            lock_wait: Duration::from_secs(3),
        }
    }
}

/// Pause after a failed accept (for example EMFILE), so a persistent failure does not spin.
const ACCEPT_RETRY_DELAY: Duration = Duration::from_millis(100);

/// Serves NBD on `listener` with the default [`Limits`] until `shutdown` turns true (or its sender is dropped).
///
/// On shutdown the listener stops accepting, every connection stops reading new requests, answers those in flight,
/// closes its image (which flushes), and this function returns; connections still busy after
/// [`Limits::drain_timeout`] are cut.
pub async fn serve(listener: Listener, backend: Arc<dyn Backend>, shutdown: watch::Receiver<bool>) {
    serve_with_limits(listener, backend, shutdown, Limits::default()).await
}

/// [`serve`] with explicit limits.
pub async fn serve_with_limits(
    listener: Listener,
    backend: Arc<dyn Backend>,
    shutdown: watch::Receiver<bool>,
    limits: Limits,
) {
    serve_with(listener, backend, shutdown, limits, None, None).await
}

/// [`serve`] with explicit limits; when `tls` is set, TLS required of every client (the spec's FORCEDTLS); when
/// `authorizer` is set, each client sees and opens only the exports it grants, as it grants them.
pub async fn serve_with(
    listener: Listener,
    backend: Arc<dyn Backend>,
    mut shutdown: watch::Receiver<bool>,
    limits: Limits,
    tls: Option<Tls>,
    authorizer: Option<Arc<dyn Authorizer>>,
) {
    let connection_slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let total_bytes = limits.buffer_bytes_total.max(MIN_BUDGET);
    let memory = Arc::new(Semaphore::new(total_bytes));
    let peers = Peers::new(&limits, total_bytes);
    let drain_timeout = limits.drain_timeout;
    let shared = Arc::new(Shared { backend, limits, memory, tls, authorizer, buffers: Arc::default() });
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            biased;
            () = shutdown_requested(&mut shutdown) => break,
            // Reap finished connections so the set does not grow with the server's lifetime.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = accept(&listener) => accepted,
        };
        let (stream, client) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                tracing::warn!(error = %err, "accepting an NBD client failed");
                tokio::time::sleep(ACCEPT_RETRY_DELAY).await;
                continue;
            }
        };
        // Refusals drop the socket here: no task, no handshake, no descriptor kept.
        let peer = match &stream {
            Stream::Tcp(tcp) => match tcp.peer_addr() {
                Ok(address) => match peers.admit(address.ip()) {
                    Some(peer) => Some(peer),
                    None => {
                        tracing::warn!(
                            client,
                            limit = shared.limits.max_connections_per_address,
                            "too many NBD connections from one address: refusing one"
                        );
                        continue;
                    }
                },
                Err(_) => continue,
            },
            Stream::Unix(_) => None,
        };
        let Ok(slot) = connection_slots.clone().try_acquire_owned() else {
            tracing::warn!(client, limit = shared.limits.max_connections, "too many NBD connections: refusing one");
            continue;
        };
        tracing::debug!(client, "NBD client connected");
        let shared = shared.clone();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let budget = peer.as_ref().map(|peer| peer.memory.clone());
            match stream {
                Stream::Tcp(stream) => {
                    // Replies are already batched per flush; Nagle would only add latency to small ones.
                    if let Err(err) = stream.set_nodelay(true) {
                        tracing::debug!(client, error = %err, "cannot set TCP_NODELAY");
                    }
                    // A client that vanished without a FIN would otherwise hold its image (and lock) forever.
                    if let Err(err) = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive()) {
                        tracing::debug!(client, error = %err, "cannot enable TCP keepalive");
                    }
                    conn::run(stream, client, shared, budget, shutdown).await;
                }
                Stream::Unix(stream) => conn::run(stream, client, shared, budget, shutdown).await,
            }
            drop(peer);
            drop(slot);
        });
    }
    drop(listener);
    let drain = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(drain_timeout, drain).await.is_err() {
        tracing::warn!(remaining = connections.len(), "NBD connections did not finish in time: cutting them");
        connections.shutdown().await;
    }
}

/// The smallest buffer budget: one request of the largest size must fit.
const MIN_BUDGET: usize = crate::proto::MAX_PAYLOAD_BYTES as usize;

/// The TCP client addresses with open connections: how many each has, and the buffer budget they share.
struct Peers {
    table: Arc<Mutex<HashMap<IpAddr, PeerState>>>,
    max_connections: usize,
    budget_bytes: usize,
}

struct PeerState {
    connections: usize,
    memory: Arc<Semaphore>,
}

/// One admitted connection of an address; dropping it gives the place back.
struct Peer {
    table: Arc<Mutex<HashMap<IpAddr, PeerState>>>,
    address: IpAddr,
    memory: Arc<Semaphore>,
}

impl Peers {
    fn new(limits: &Limits, total_bytes: usize) -> Peers {
        // One address may hold at most a quarter of the server's buffers, whatever it was configured to.
        let budget_bytes = limits.buffer_bytes_per_address.min(total_bytes / 4).max(MIN_BUDGET);
        Peers { table: Arc::default(), max_connections: limits.max_connections_per_address.max(1), budget_bytes }
    }

    /// Admits one more connection from `address`, or `None` when it already has as many as allowed.
    fn admit(&self, address: IpAddr) -> Option<Peer> {
        // An IPv4 client on a dual-stack socket is the same client as over IPv4.
        let address = address.to_canonical();
        let mut table = self.table.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let state = table
            .entry(address)
            .or_insert_with(|| PeerState { connections: 0, memory: Arc::new(Semaphore::new(self.budget_bytes)) });
        if state.connections >= self.max_connections {
            return None;
        }
        state.connections += 1;
        Some(Peer { table: self.table.clone(), address, memory: state.memory.clone() })
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let mut table = self.table.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(state) = table.get_mut(&self.address) {
            state.connections -= 1;
            if state.connections == 0 {
                table.remove(&self.address);
            }
        }
    }
}

/// Keepalive probes after a minute of silence, every 10 s: a dead peer is noticed within a few minutes.
fn keepalive() -> socket2::TcpKeepalive {
    socket2::TcpKeepalive::new().with_time(Duration::from_secs(60)).with_interval(Duration::from_secs(10))
}

enum Stream {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

async fn accept(listener: &Listener) -> std::io::Result<(Stream, String)> {
    match listener {
        Listener::Tcp(listener) => {
            let (stream, peer) = listener.accept().await?;
            Ok((Stream::Tcp(stream), peer.to_string()))
        }
        Listener::Unix(listener) => {
            let (stream, _) = listener.accept().await?;
            Ok((Stream::Unix(stream), "unix".to_owned()))
        }
    }
}
