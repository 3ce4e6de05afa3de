//! The shared connection, unique names, data patterns and clean-up helpers of the tests.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use basalt_ceph::{Cluster, ImageOptions, IoCtx, no_progress};
use basalt_core::{ErrorKind, Result};

/// The environment variable naming the cluster's ceph.conf.
pub const CONF_VAR: &str = "BASALT_CEPH_CONF";

/// The cluster the tests use.
pub struct Env {
    pub cluster: Cluster,
    /// The pool the image tests use (`BASALT_CEPH_POOL`, default `rbd`); it must be initialised for rbd.
    pub pool: String,
}

/// The test environment, or `None` (after saying so) when no cluster is configured.
pub fn env(test: &str) -> Option<&'static Env> {
    static ENV: OnceLock<Option<Env>> = OnceLock::new();
    let env = ENV.get_or_init(|| {
        let conf = std::env::var_os(CONF_VAR)?;
        let cluster = Cluster::connect(Some(&PathBuf::from(conf)), "admin", &[("client_mount_timeout", "30")])
            .expect("connecting to the cluster named by BASALT_CEPH_CONF");
        let pool = std::env::var("BASALT_CEPH_POOL").unwrap_or_else(|_| "rbd".to_owned());
        Some(Env { cluster, pool })
    });
    if env.is_none() {
        assert!(
            std::env::var("BASALT_REQUIRE_CEPH").map_or(true, |v| v != "1"),
            "BASALT_REQUIRE_CEPH=1 but {CONF_VAR} is unset"
        );
        eprintln!("skipped {test}: set {CONF_VAR} to a cluster's ceph.conf (scripts/ceph/micro-ceph.sh start DIR)");
    }
    env.as_ref()
}

impl Env {
    /// A context on the test pool's default namespace.
    pub fn io(&self) -> IoCtx {
        self.cluster.ioctx(&self.pool).expect("opening the test pool")
    }
}

/// A name no other test (or earlier run) uses.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("{prefix}-{}-{}-{}", std::process::id(), nanos % 1_000_000_000, COUNTER.fetch_add(1, Ordering::SeqCst))
}

/// Bytes that differ per offset and per `seed`, so misplaced or stale data shows.
pub fn pattern(offset: u64, len: usize, seed: u8) -> Vec<u8> {
    (0..len as u64).map(|i| ((offset + i).wrapping_mul(31) as u8) ^ seed.wrapping_mul(7).wrapping_add(1)).collect()
}

/// The default options of the tests: format 2 with the default features, 4 MiB objects.
pub fn options() -> ImageOptions {
    ImageOptions { order: Some(22), ..ImageOptions::default() }
}

/// Creates an image of `size` with the default options.
pub fn create(io: &IoCtx, name: &str, size: u64) {
    io.image_create(name, size, &options()).expect("creating test image");
}

/// Removes an image and all its snapshots (unprotecting them), ignoring a missing image: test clean-up.
pub fn remove_all(io: &IoCtx, name: &str) {
    if let Ok(image) = basalt_ceph::Image::open(io, name) {
        for snap in image.snap_list().unwrap_or_default() {
            if snap.namespace == basalt_ceph::SnapNamespace::User {
                let _ = image.snap_unprotect(&snap.name);
                let _ = image.snap_remove(&snap.name, 0, &mut no_progress());
            }
        }
    }
    let _ = io.image_remove(name, &mut no_progress());
}

/// The kind of an error, for asserting refusals.
pub fn kind<T: std::fmt::Debug>(result: Result<T>) -> ErrorKind {
    result.expect_err("the call should have been refused").kind()
}
