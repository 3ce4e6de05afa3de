//! `basalt serve`: opens the store, prepares the first start, and serves the API on TCP and on `DATA_DIR/api.sock`
//! until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use basalt_core::{Backend, PoolName, SystemClock};
use basalt_engine::vfs::{DirectVfs, OsVfs, Vfs};
use basalt_engine::{Engine, EngineOptions};

use crate::auth::Auth;
use crate::datapath::{MeteredBackend, Registry};
use crate::perf::History;
use crate::state::AppState;
use crate::store::ServerStore;
use crate::tasks::Tasks;

/// Where the server keeps its data and where it listens.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The data directory (store, sockets, initial password).
    pub data_dir: PathBuf,
    /// The HTTP address.
    pub listen: SocketAddr,
    /// The NBD address (served by the data path).
    pub nbd_listen: SocketAddr,
    /// When set, the NBD TCP listener requires TLS (`NBD_OPT_STARTTLS`); `DATA_DIR/nbd.sock` stays in clear, as
    /// only local processes with access to the directory reach it.
    pub nbd_tls: Option<basalt_nbd::TlsFiles>,
    /// How NBD TCP clients authenticate (`--nbd-tls auto`, `--nbd-insecure-no-auth`).
    pub nbd: crate::nbd_access::NbdOptions,
    /// When set, serve this Ceph cluster instead of the embedded engine (needs the `ceph` build feature).
    pub ceph: Option<CephConfig>,
    /// The embedded engine's metadata memory (`--cache-size`): block bitmaps and the metadata store's pages.
    pub cache_bytes: usize,
    /// The embedded engine's image data bypasses the page cache (`--direct-io`).
    pub direct_io: bool,
    /// The REST API's listener options and password policy.
    pub api: crate::listen::ApiOptions,
}

/// Which Ceph cluster to serve, and as whom.
#[derive(Debug, Clone)]
pub struct CephConfig {
    /// The cluster's configuration file (`/etc/ceph/ceph.conf`).
    pub conf: PathBuf,
    /// The client id (`admin` for `client.admin`).
    pub client_id: String,
    /// The pool holding basalt's own records (users, roles, sessions, tasks).
    pub meta_pool: String,
}

/// Why the server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The store could not be opened (for example another process holds it).
    #[error("cannot open the store in {dir}: {source}")]
    Store {
        /// The data directory.
        dir: PathBuf,
        /// What went wrong.
        source: basalt_core::Error,
    },
    /// The configuration cannot be used.
    #[error("{0}")]
    Config(String),
    /// A listener could not be bound, or serving failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
}

/// The name of the API socket inside the data directory.
pub const API_SOCKET: &str = "api.sock";
/// The name of the NBD socket inside the data directory.
pub const NBD_SOCKET: &str = "nbd.sock";
/// The file naming this server among those sharing a Ceph cluster.
pub const SERVER_ID_FILE: &str = "server-id";
/// The file holding a generated admin password on first start.
pub const INITIAL_PASSWORD_FILE: &str = "initial-admin-password";

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ServeError {
    let what = what.into();
    move |source| ServeError::Io { what, source }
}

/// Raises the soft limit on open files to the hard limit and returns the new soft limit. Every image in use holds
/// its layer files and their checksum sidecars open (two descriptors per layer, more past a segment), and NBD
/// connections hold sockets: the usual soft limit of 1024 would stop a store at a few hundred open images, while
/// the hard limit is what the administrator allows.
pub fn raise_open_file_limit() -> std::io::Result<u64> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct it is given, which lives on this stack frame.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
        // SAFETY: setrlimit only reads the struct it is given.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        limit = raised;
    }
    Ok(limit.rlim_cur)
}

/// Checks, before the store opens, that the data directory's file system takes direct I/O (`--direct-io`). A
/// directory it creates is the owner's only, as the store would have created it.
fn probe_direct_io(dir: &Path) -> Result<(), ServeError> {
    OsVfs
        .create_dir_all(dir)
        .map_err(|source| ServeError::Io { what: format!("creating {}", dir.display()), source })?;
    DirectVfs::probe(dir).map_err(|err| ServeError::Config(format!("--direct-io: {err}; serve without it")))
}

/// Runs the server until a shutdown signal.
pub async fn serve(config: ServeConfig) -> Result<(), ServeError> {
    let dir = config.data_dir.clone();
    match raise_open_file_limit() {
        Ok(files) => tracing::debug!(files, "open file limit"),
        Err(err) => tracing::warn!(%err, "could not raise the open file limit"),
    }
    // Bad TLS material is a configuration error found before anything is opened.
    let nbd_tls = match &config.nbd_tls {
        None => None,
        Some(files) => Some(basalt_nbd::Tls::load(files).map_err(|err| ServeError::Config(format!("NBD TLS: {err}")))?),
    };
    let nbd_client_auth = config.nbd.tls_auto || nbd_tls.as_ref().is_some_and(|tls| tls.requires_client_certificates());
    crate::nbd_access::check_exposure(config.nbd_listen, nbd_client_auth, config.nbd.insecure_no_auth)
        .map_err(ServeError::Config)?;
    config.api.check_listen(config.listen).map_err(ServeError::Config)?;
    let api_tls = config.api.tls.as_ref().map(crate::listen::load_tls).transpose();
    let api_tls = api_tls.map_err(|err| ServeError::Config(format!("API TLS: {err}")))?;
    let registry = Arc::new(Registry::default());
    let history = Arc::new(History::default());
    let (storage, store, share, engine) = match &config.ceph {
        None => {
            let engine_dir = dir.clone();
            let options = EngineOptions { metadata_cache_bytes: config.cache_bytes, ..EngineOptions::default() };
            let vfs: Arc<dyn Vfs> = if config.direct_io {
                probe_direct_io(&dir)?;
                Arc::new(DirectVfs)
            } else {
                Arc::new(OsVfs)
            };
            let open = move || Engine::open_with_options(vfs, &engine_dir, Arc::new(SystemClock), options);
            let engine = tokio::task::spawn_blocking(open)
                .await
                .map_err(|e| ServeError::Io { what: "opening the store".into(), source: std::io::Error::other(e) })?
                .map_err(|source| ServeError::Store { dir: dir.clone(), source })?;
            let engine = Arc::new(engine);
            let backend: Arc<dyn Backend> = engine.clone();
            // A fresh embedded store gets pool `rbd`; a cluster's pools are the cluster's business.
            first_start_pool(&backend).map_err(|source| ServeError::Store { dir: dir.clone(), source })?;
            let store =
                ServerStore::on_engine(&engine).map_err(|source| ServeError::Store { dir: dir.clone(), source })?;
            (backend, store, None, Some(engine))
        }
        Some(ceph) => {
            // The data directory still holds the sockets and the initial password.
            std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
                .create(&dir)
                .map_err(io_err(format!("creating {}", dir.display())))?;
            let (backend, store, perf) = open_ceph(ceph.clone()).await?;
            let id = server_id(&dir)
                .map_err(io_err(format!("reading or creating {}", dir.join(SERVER_ID_FILE).display())))?;
            (backend, store, Some((perf, id)), None)
        }
    };
    tracing::info!(backend = if config.ceph.is_some() { "ceph" } else { "embedded" }, "storage ready");
    // Everything above the storage (API and data path) sees the metered backend, so all I/O is counted and limited.
    let backend: Arc<dyn Backend> = Arc::new(MeteredBackend::new(storage, registry.clone()));
    let auth = Auth::with_policy(store.clone(), config.api.password_policy);
    let generated = auth.ensure_admin(std::env::var("BASALT_ADMIN_PASSWORD").ok()).map_err(|source| {
        ServeError::Config(format!("cannot create the admin user from BASALT_ADMIN_PASSWORD: {source}"))
    })?;
    if let Some(password) = generated {
        let path = dir.join(INITIAL_PASSWORD_FILE);
        write_private(&path, &format!("{password}\n")).map_err(io_err(format!("writing {}", path.display())))?;
        tracing::warn!(user = "admin", password = %password, file = %path.display(), "created the admin user with a generated password (shown once)");
    }
    // On a shared cluster, each server keeps and recovers only its own tasks.
    let task_scope = share.as_ref().map(|(_, id)| id.clone()).unwrap_or_default();
    let audit = Arc::new(crate::audit::AuditLog::new(store.clone()));
    let tasks = Tasks::scoped(store, task_scope).map_err(|source| ServeError::Store { dir: dir.clone(), source })?;
    // basalt's NBD CA exists from the first start, so certificates can be issued whatever the listener's mode.
    let nbd_ca = crate::nbd_access::NbdCa::open_or_create(&dir)
        .map_err(|source| ServeError::Store { dir: dir.clone(), source })?;
    let nbd_tls = match nbd_tls {
        None if config.nbd.tls_auto => {
            let files =
                nbd_ca.server_files(config.nbd_listen).map_err(|e| ServeError::Config(format!("NBD TLS: {e}")))?;
            Some(basalt_nbd::Tls::load(&files).map_err(|err| ServeError::Config(format!("NBD TLS: {err}")))?)
        }
        tls => tls,
    };
    let auth = Arc::new(auth);
    let nbd_authorizer = crate::nbd_access::authorizer(nbd_tls.as_ref(), &auth);
    let endpoint = crate::state::NbdEndpoint {
        tcp: config.nbd_listen,
        tls: nbd_tls.is_some(),
        client_certificates: nbd_authorizer.is_some(),
        unix_socket: std::path::absolute(dir.join(NBD_SOCKET)).unwrap_or_else(|_| dir.join(NBD_SOCKET)),
    };
    let mut state = AppState::new(backend, auth, Arc::new(tasks), registry.clone(), history.clone())
        .with_nbd_ca(Arc::new(nbd_ca))
        .with_audit(audit)
        .with_nbd_endpoint(endpoint);
    let mut certificates =
        vec![("NBD CA".to_owned(), dir.join(crate::nbd_access::NBD_TLS_DIR).join(crate::nbd_access::CA_CERT))];
    match (&config.nbd_tls, config.nbd.tls_auto) {
        (Some(files), _) => certificates.push(("NBD server".to_owned(), files.cert.clone())),
        (None, true) => certificates.push((
            "NBD server".to_owned(),
            dir.join(crate::nbd_access::NBD_TLS_DIR).join(crate::nbd_access::SERVER_CERT),
        )),
        (None, false) => {}
    }
    if let Some(tls) = &config.api.tls {
        certificates.push(("API".to_owned(), tls.cert.clone()));
    }
    state.certificates = Arc::new(crate::alerts::Certificates::load(certificates));
    if let Some(engine) = engine {
        state.capacity = Arc::new(crate::capacity::Capacity::embedded(dir.clone(), engine));
    }

    let tcp = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(io_err(format!("cannot listen on {}", config.listen)))?;
    let socket_path = dir.join(API_SOCKET);
    let _ = std::fs::remove_file(&socket_path);
    let unix = tokio::net::UnixListener::bind(&socket_path)
        .map_err(io_err(format!("cannot listen on {}", socket_path.display())))?;
    std::fs::set_permissions(&socket_path, std::fs::Permissions::from_mode(0o600))
        .map_err(io_err(format!("cannot restrict {}", socket_path.display())))?;
    let nbd_tcp = tokio::net::TcpListener::bind(config.nbd_listen)
        .await
        .map_err(io_err(format!("cannot listen for NBD on {}", config.nbd_listen)))?;
    let nbd_socket_path = dir.join(NBD_SOCKET);
    let _ = std::fs::remove_file(&nbd_socket_path);
    let nbd_unix = tokio::net::UnixListener::bind(&nbd_socket_path)
        .map_err(io_err(format!("cannot listen for NBD on {}", nbd_socket_path.display())))?;
    std::fs::set_permissions(&nbd_socket_path, std::fs::Permissions::from_mode(0o600))
        .map_err(io_err(format!("cannot restrict {}", nbd_socket_path.display())))?;
    tracing::info!(
        listen = %config.listen,
        https = config.api.tls.is_some(),
        nbd = %config.nbd_listen,
        nbd_tls = nbd_tls.is_some(),
        socket = %socket_path.display(),
        nbd_socket = %nbd_socket_path.display(),
        data_dir = %dir.display(),
        "basalt is serving"
    );

    let shutdown = shutdown_signal();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (tcp_task, unix_task) = crate::listen::spawn(tcp, unix, &state, &config.api, api_tls, config.listen, &stop_rx);
    let nbd_tcp_task = tokio::spawn(basalt_nbd::serve_with(
        nbd_tcp.into(),
        state.backend.clone(),
        stop_rx.clone(),
        basalt_nbd::Limits::default(),
        nbd_tls,
        nbd_authorizer,
    ));
    let nbd_unix_task = tokio::spawn(basalt_nbd::serve(nbd_unix.into(), state.backend.clone(), stop_rx.clone()));
    let sampler_task = tokio::spawn(crate::perf::run_sampler(registry, history, share, stop_rx.clone()));
    let capacity_task =
        tokio::spawn(crate::capacity::run(state.backend.clone(), state.capacity.clone(), stop_rx.clone()));
    let schedule_task = tokio::spawn(crate::trash_schedule::run(state.backend.clone(), stop_rx.clone()));
    shutdown.await;
    tracing::info!("shutting down: stopping background tasks at their next safe point");
    state.tasks.cancel_all();
    let _ = stop_tx.send(true);
    let _ = sampler_task.await;
    let _ = capacity_task.await;
    let _ = schedule_task.await;
    let _ = nbd_tcp_task.await;
    let _ = nbd_unix_task.await;
    let _ = std::fs::remove_file(&nbd_socket_path);
    let _ = tcp_task.await;
    let _ = unix_task.await;
    state.tasks.wait_idle().await;
    let _ = std::fs::remove_file(&socket_path);
    tracing::info!("stopped");
    Ok(())
}

/// On first start the store has no pool: create `rbd`, tagged for rbd, as the product promises.
type CephParts = (Arc<dyn Backend>, ServerStore, Arc<dyn crate::perf::PerfShare>);

#[cfg(feature = "ceph")]
async fn open_ceph(config: CephConfig) -> Result<CephParts, ServeError> {
    let opened = tokio::task::spawn_blocking(move || crate::ceph::open(&config))
        .await
        .map_err(|e| ServeError::Io { what: "connecting to Ceph".into(), source: std::io::Error::other(e) })??;
    Ok((opened.backend, opened.store, opened.perf))
}

/// This server's name among those sharing a cluster, kept in the data directory so a restart is the same server:
/// the host name and a random part (two data directories on one host are two servers).
fn server_id(dir: &std::path::Path) -> std::io::Result<String> {
    let path = dir.join(SERVER_ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => return Ok(id.trim().to_owned()),
        Ok(_) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(err),
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host: String = host.trim().chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').collect();
    let id = format!("{}-{:08x}", if host.is_empty() { "basalt" } else { &host }, rand::random::<u32>());
    write_private(&path, &format!("{id}\n"))?;
    Ok(id)
}

#[cfg(not(feature = "ceph"))]
async fn open_ceph(config: CephConfig) -> Result<CephParts, ServeError> {
    Err(ServeError::Config(format!(
        "cannot serve the Ceph cluster of {}: this basalt was built without Ceph support (build with --features ceph)",
        config.conf.display()
    )))
}

fn first_start_pool(backend: &Arc<dyn Backend>) -> basalt_core::Result<()> {
    if backend.pool_list()?.is_empty() {
        let pool = PoolName::new("rbd")?;
        backend.pool_create(&pool)?;
        backend.pool_application_enable(&pool, "rbd")?;
        tracing::info!(pool = "rbd", "created the default pool");
    }
    Ok(())
}

fn write_private(path: &std::path::Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_open_file_limit_is_raised_to_the_hard_limit() {
        let mut before = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit writes into a struct on this stack frame.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut before) }, 0);
        let lowered = libc::rlimit { rlim_cur: before.rlim_max.min(256), rlim_max: before.rlim_max };
        // SAFETY: setrlimit only reads the struct (lowering the soft limit is always allowed).
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lowered) }, 0);
        let raised = super::raise_open_file_limit().expect("raise the limit");
        assert_eq!(raised, before.rlim_max, "the soft limit is the hard limit");
        let mut after = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: as above.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut after) }, 0);
        assert_eq!(after.rlim_cur, before.rlim_max);
    }
}
