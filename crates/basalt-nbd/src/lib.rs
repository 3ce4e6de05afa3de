//! basalt's data path: an NBD server (fixed newstyle) that serves images and snapshots of any Backend.
//!
//! Export names are `pool[/namespace]/image` (the head, read-write, holding the exclusive lock where the image has
//! that feature) and `pool[/namespace]/image@snapshot` (read-only). The server speaks structured replies (holes
//! are sent as `OFFSET_HOLE` chunks), `base:allocation` block status, out-of-order replies, FUA/flush, trim,
//! write-zeroes with fast zero, and cache, optionally behind STARTTLS (see [`Tls`]). Extended headers are not
//! offered; QoS is the backend's business.
//!
//! Layout: [`proto`] is the pure wire codec; `handshake` negotiates options; `transmission` runs the
//! reader → workers (blocking pool) → writer pipeline; `server` accepts clients and shuts down.
//!
//! ```no_run
//! # async fn example(backend: std::sync::Arc<dyn basalt_core::Backend>) -> std::io::Result<()> {
//! let (stop, stopped) = tokio::sync::watch::channel(false);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:10809").await?;
//! let server = tokio::spawn(basalt_nbd::serve(listener.into(), backend, stopped));
//! // ... later:
//! let _ = stop.send(true);
//! let _ = server.await;
//! # Ok(())
//! # }
//! ```

mod access;
mod buffers;
mod conn;
mod export;
mod handshake;
pub mod proto;
mod server;
mod tls;
mod transmission;

pub use access::{Access, Authorizer, pem_subject_common_name, subject_common_name};
pub use server::{Limits, Listener, serve, serve_with, serve_with_limits};
pub use tls::{Tls, TlsError, TlsFiles};
