//! End-to-end tests of the NBD server: an in-process server on a temporary store, driven by real clients
//! (qemu-img, qemu-io, nbdinfo, nbdcopy) as subprocesses and by a raw protocol client for the edge cases.

mod client;
mod limits;
mod protocol;
mod real_clients;
mod tls;
mod tools;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use basalt_core::{Backend, CreateOptions, Features, ImageSpec, PoolName, PoolNs, SnapSpec, SystemClock};
use basalt_engine::Engine;
use tokio::sync::watch;

/// An NBD server on a fresh store, listening on a 127.0.0.1 port and on `DIR/nbd.sock`.
#[derive(Debug)]
pub struct TestServer {
    pub engine: Arc<Engine>,
    pub port: u16,
    pub socket: PathBuf,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    runtime: Option<tokio::runtime::Runtime>,
    dir: tempfile::TempDir,
}

impl TestServer {
    /// Starts a server with pool `rbd` tagged for rbd.
    pub fn start() -> TestServer {
        TestServer::start_with_limits(basalt_nbd::Limits::default())
    }

    /// Starts a server with explicit limits.
    pub fn start_with_limits(limits: basalt_nbd::Limits) -> TestServer {
        TestServer::start_with(limits, |_| None)
    }

    /// Starts a server whose TCP listener requires TLS with the configuration `tls` makes in the server's temporary
    /// directory; the Unix socket stays in clear.
    pub fn start_with_tls(tls: impl FnOnce(&Path) -> basalt_nbd::Tls) -> TestServer {
        TestServer::start_with(basalt_nbd::Limits::default(), |dir| Some(tls(dir)))
    }

    /// [`TestServer::start_with_tls`] with `authorizer` deciding each TCP client's access.
    pub fn start_with_tls_and_authorizer(
        tls: impl FnOnce(&Path) -> basalt_nbd::Tls,
        authorizer: Arc<dyn basalt_nbd::Authorizer>,
    ) -> TestServer {
        TestServer::start_with_access(basalt_nbd::Limits::default(), |dir| Some(tls(dir)), Some(authorizer))
    }

    /// A server whose TCP listener (in clear) has `authorizer` decide each client's access.
    pub fn start_with_authorizer(authorizer: Arc<dyn basalt_nbd::Authorizer>) -> TestServer {
        TestServer::start_with_access(basalt_nbd::Limits::default(), |_| None, Some(authorizer))
    }

    fn start_with(limits: basalt_nbd::Limits, tls: impl FnOnce(&Path) -> Option<basalt_nbd::Tls>) -> TestServer {
        TestServer::start_with_access(limits, tls, None)
    }

    fn start_with_access(
        limits: basalt_nbd::Limits,
        tls: impl FnOnce(&Path) -> Option<basalt_nbd::Tls>,
        authorizer: Option<Arc<dyn basalt_nbd::Authorizer>>,
    ) -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let tls = tls(dir.path());
        let engine = Arc::new(Engine::open(&dir.path().join("store"), Arc::new(SystemClock)).expect("open store"));
        let rbd = PoolName::new("rbd").expect("pool name");
        engine.pool_create(&rbd).expect("create pool");
        engine.pool_application_enable(&rbd, "rbd").expect("tag pool");
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        let socket = dir.path().join("nbd.sock");
        let (tcp, unix) = runtime.block_on(async {
            let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind tcp");
            let unix = tokio::net::UnixListener::bind(&socket).expect("bind unix");
            (tcp, unix)
        });
        let port = tcp.local_addr().expect("local addr").port();
        let (stop, stopped) = watch::channel(false);
        let backend: Arc<dyn Backend> = engine.clone();
        let tasks = vec![
            runtime.spawn(basalt_nbd::serve_with(
                tcp.into(),
                backend.clone(),
                stopped.clone(),
                limits.clone(),
                tls,
                authorizer,
            )),
            runtime.spawn(basalt_nbd::serve_with_limits(unix.into(), backend, stopped, limits)),
        ];
        TestServer { engine, port, socket, stop, tasks, runtime: Some(runtime), dir }
    }

    /// The temporary directory, for scratch files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Creates an image with the default features (exclusive-lock on).
    pub fn create_image(&self, name: &str, size_bytes: u64) {
        self.engine
            .image_create(&ImageSpec::parse(name).expect("spec"), &CreateOptions::with_size(size_bytes))
            .expect("create image");
    }

    /// Creates an image without exclusive-lock, so several connections may write it.
    pub fn create_shared_image(&self, name: &str, size_bytes: u64) {
        let options = CreateOptions { features: Some(Features::LAYERING), ..CreateOptions::with_size(size_bytes) };
        self.engine.image_create(&ImageSpec::parse(name).expect("spec"), &options).expect("create image");
    }

    pub fn create_pool(&self, name: &str) {
        let pool = PoolName::new(name).expect("pool name");
        self.engine.pool_create(&pool).expect("create pool");
        self.engine.pool_application_enable(&pool, "rbd").expect("tag pool");
    }

    pub fn create_namespace(&self, location: &str) {
        self.engine.namespace_create(&PoolNs::parse(location).expect("location")).expect("create namespace");
    }

    pub fn snapshot(&self, spec: &str) {
        self.engine.snap_create(&SnapSpec::parse(spec).expect("snap spec")).expect("create snapshot");
    }

    /// `nbd://127.0.0.1:PORT/EXPORT`, as qemu and libnbd spell it.
    pub fn tcp_uri(&self, export: &str) -> String {
        format!("nbd://127.0.0.1:{}/{export}", self.port)
    }

    /// `nbd+unix:///EXPORT?socket=PATH`.
    pub fn unix_uri(&self, export: &str) -> String {
        format!("nbd+unix:///{export}?socket={}", self.socket.display())
    }

    /// Asks the server to stop and waits until both listeners' `serve` calls return. The runtime lives on (as a
    /// process's does after its NBD server stopped) until the test server is dropped.
    pub fn stop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(runtime) = &self.runtime {
            let tasks = std::mem::take(&mut self.tasks);
            runtime.block_on(async {
                for task in tasks {
                    tokio::time::timeout(Duration::from_secs(20), task)
                        .await
                        .expect("serve returns promptly after shutdown")
                        .expect("serve task");
                }
            });
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            self.stop();
        }
    }
}

/// A deterministic byte pattern: pseudo-random data, a run of zeros, and a repeated byte, so holes, data and
/// zero detection all get exercised.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut out: Vec<u8> = (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let quarter = len / 4;
    out[quarter..2 * quarter].fill(0);
    out[2 * quarter..2 * quarter + quarter / 2].fill(0x5a);
    out
}
