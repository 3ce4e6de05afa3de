//! What every handler shares: the backend, users and roles, background tasks.

use std::sync::Arc;

use basalt_core::Backend;

use crate::auth::Auth;
use crate::datapath::Registry;
use crate::error::{ApiError, ApiResult};
use crate::perf::History;
use crate::tasks::Tasks;

/// The shared state of the API.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The storage backend.
    pub backend: Arc<dyn Backend>,
    /// Users, roles, tokens.
    pub auth: Arc<Auth>,
    /// Background tasks.
    pub tasks: Arc<Tasks>,
    /// Data-path statistics of every image in use.
    pub registry: Arc<Registry>,
    /// Performance history.
    pub history: Arc<History>,
    /// basalt's NBD certificate authority, for issuing client certificates.
    pub nbd_ca: Option<Arc<crate::nbd_access::NbdCa>>,
    /// The audit log of mutating calls (none: not recorded).
    pub audit: Option<Arc<crate::audit::AuditLog>>,
    /// Pool usage and health for `/metrics` (the embedded engine's).
    pub capacity: Arc<crate::capacity::Capacity>,
    /// Where the NBD data path listens, for the connection details of `GET .../connection`.
    pub nbd_endpoint: Option<Arc<NbdEndpoint>>,
    /// The certificate files whose expiry raises alerts.
    pub certificates: Arc<crate::alerts::Certificates>,
    /// When each current alert was first seen.
    pub alerts_seen: Arc<crate::alerts::FirstSeen>,
}

/// Where and how the NBD data path is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NbdEndpoint {
    /// The TCP listener's address.
    pub tcp: std::net::SocketAddr,
    /// The TCP listener requires TLS.
    pub tls: bool,
    /// The TCP listener requires client certificates (each names a basalt user).
    pub client_certificates: bool,
    /// The Unix socket (`DATA_DIR/nbd.sock`), absolute.
    pub unix_socket: std::path::PathBuf,
}

impl AppState {
    /// Bundles the parts.
    pub fn new(
        backend: Arc<dyn Backend>,
        auth: Arc<Auth>,
        tasks: Arc<Tasks>,
        registry: Arc<Registry>,
        history: Arc<History>,
    ) -> AppState {
        AppState {
            backend,
            auth,
            tasks,
            registry,
            history,
            nbd_ca: None,
            audit: None,
            capacity: Arc::default(),
            nbd_endpoint: None,
            certificates: Arc::default(),
            alerts_seen: Arc::default(),
        }
    }

    /// Adds the NBD certificate authority.
    pub fn with_nbd_ca(mut self, ca: Arc<crate::nbd_access::NbdCa>) -> AppState {
        self.nbd_ca = Some(ca);
        self
    }

    /// Records mutating calls in `audit`.
    pub fn with_audit(mut self, audit: Arc<crate::audit::AuditLog>) -> AppState {
        self.audit = Some(audit);
        self
    }

    /// Adds where the NBD data path listens.
    pub fn with_nbd_endpoint(mut self, endpoint: NbdEndpoint) -> AppState {
        self.nbd_endpoint = Some(Arc::new(endpoint));
        self
    }

    /// What deriving images' statuses reads, as of now.
    pub fn status_ctx(&self) -> crate::status::StatusCtx {
        crate::status::StatusCtx::new(self.registry.clone(), self.tasks.list().0)
    }

    /// Runs a backend call on the blocking pool and maps its error to the API's.
    pub async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Backend) -> basalt_core::Result<T> + Send + 'static,
    ) -> ApiResult<T> {
        let backend = self.backend.clone();
        let registry = self.registry.clone();
        tokio::task::spawn_blocking(move || {
            let result = f(backend.as_ref());
            if let Err(e) = &result {
                registry.observe(e, || backend.stopped());
            }
            result
        })
        .await
        .map_err(|e| ApiError::internal(format!("a backend call failed: {e}")))?
        .map_err(ApiError::from)
    }
}
