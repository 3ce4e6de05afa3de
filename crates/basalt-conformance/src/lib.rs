//! The harness of the conformance suite: every scenario runs once per backend, each time in pools of its own.
//!
//! The embedded engine always takes part, on a fresh store. A Ceph cluster takes part when `BASALT_CEPH_CONF` names
//! its configuration file (client id from `BASALT_CEPH_ID`, default `admin`); with `BASALT_REQUIRE_CEPH=1` a missing
//! cluster is a failure rather than a note, so CI cannot silently test only one backend. Scenarios address images
//! relative to their target's pools (`t.spec("vm")` is `POOL/vm`), so runs never see each other's images.

use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use basalt_core::{Backend, ImageSpec, PoolName, PoolNs, SnapSpec, SystemClock, Timestamp};

/// Which backend a target runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The embedded engine.
    Engine,
    /// librbd on a Ceph cluster.
    Ceph,
}

/// Something that can make pools on a backend and remove them, whatever they hold, afterwards.
trait PoolKeeper: Send + Sync {
    fn create(&self, backend: &dyn Backend, pool: &PoolName);
    fn destroy(&self, pool: &PoolName);
}

/// One backend, prepared for one scenario.
pub struct Target {
    /// Which backend this is.
    pub kind: Kind,
    /// The backend under test.
    pub backend: Arc<dyn Backend>,
    /// The scenario's main pool, tagged for rbd.
    pub pool: PoolName,
    prefix: String,
    keeper: Arc<dyn PoolKeeper>,
    pools: Mutex<Vec<PoolName>>,
    _dir: Option<tempfile::TempDir>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target").field("kind", &self.kind).field("pool", &self.pool).finish_non_exhaustive()
    }
}

impl Target {
    /// `POOL/rest`, as an image spec (`rest` may hold a namespace: `ns/img`).
    pub fn spec(&self, rest: &str) -> ImageSpec {
        ImageSpec::parse(&format!("{}/{rest}", self.pool)).expect("image spec")
    }

    /// `POOL/rest@snap`, as a snapshot spec.
    pub fn snap(&self, rest: &str) -> SnapSpec {
        SnapSpec::parse(&format!("{}/{rest}", self.pool)).expect("snapshot spec")
    }

    /// The main pool's default namespace (`""`) or a named one.
    pub fn location(&self, namespace: &str) -> PoolNs {
        let text = if namespace.is_empty() { self.pool.to_string() } else { format!("{}/{namespace}", self.pool) };
        PoolNs::parse(&text).expect("location")
    }

    /// Makes another pool for this scenario, tagged for rbd when `rbd` is true; it is removed with the target.
    pub fn extra_pool(&self, suffix: &str, rbd: bool) -> PoolName {
        let pool = PoolName::new(format!("{}-{suffix}", self.prefix)).expect("pool name");
        self.keeper.create(&*self.backend, &pool);
        if rbd {
            self.backend.pool_application_enable(&pool, "rbd").expect("tag pool for rbd");
        }
        self.pools.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(pool.clone());
        pool
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let pools = std::mem::take(&mut *self.pools.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        for pool in pools {
            self.keeper.destroy(&pool);
        }
    }
}

/// Seconds since the epoch, now.
pub fn now() -> Timestamp {
    Timestamp(SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0))
}

/// Runs `scenario` against every available backend, each on fresh pools named after `test`.
pub fn for_each_backend(test: &str, scenario: impl Fn(&Target)) {
    for target in targets(test) {
        eprintln!("conformance: {test} on {:?}", target.kind);
        scenario(&target);
    }
}

fn targets(test: &str) -> Vec<Target> {
    let mut targets = vec![engine_target(test)];
    match ceph::target(test) {
        Some(target) => targets.push(target),
        None if std::env::var("BASALT_REQUIRE_CEPH").is_ok_and(|v| v == "1") => {
            panic!("BASALT_REQUIRE_CEPH=1 but no Ceph cluster is configured (set BASALT_CEPH_CONF)")
        }
        None => eprintln!("conformance: {test}: no Ceph cluster (BASALT_CEPH_CONF unset); the engine only"),
    }
    targets
}

struct EngineKeeper;

impl PoolKeeper for EngineKeeper {
    fn create(&self, backend: &dyn Backend, pool: &PoolName) {
        backend.pool_create(pool).expect("create pool");
    }
    // The store is a temporary directory, gone with the target.
    fn destroy(&self, _pool: &PoolName) {}
}

fn engine_target(test: &str) -> Target {
    let dir = tempfile::tempdir().expect("temp dir");
    let engine = basalt_engine::Engine::open(&dir.path().join("store"), Arc::new(SystemClock)).expect("open engine");
    let backend: Arc<dyn Backend> = Arc::new(engine);
    finish(Kind::Engine, backend, Arc::new(EngineKeeper), test.to_owned(), Some(dir))
}

fn finish(
    kind: Kind,
    backend: Arc<dyn Backend>,
    keeper: Arc<dyn PoolKeeper>,
    prefix: String,
    dir: Option<tempfile::TempDir>,
) -> Target {
    let pool = PoolName::new(&prefix).expect("pool name");
    keeper.create(&*backend, &pool);
    backend.pool_application_enable(&pool, "rbd").expect("tag pool for rbd");
    Target { kind, backend, pool: pool.clone(), prefix, keeper, pools: Mutex::new(vec![pool]), _dir: dir }
}

mod ceph {
    use std::path::PathBuf;
    use std::sync::Arc;

    use basalt_ceph::CephBackend;
    use basalt_ceph::rados::Cluster;
    use basalt_core::{Backend, PoolName};

    use super::{Kind, PoolKeeper, Target, finish};

    /// Pools on the cluster, deleted with whatever they hold when the target goes.
    struct CephKeeper {
        cluster: Cluster,
    }

    impl PoolKeeper for CephKeeper {
        fn create(&self, backend: &dyn Backend, pool: &PoolName) {
            // A pool left behind by an interrupted run of the same test and process id would clash: clear it.
            let _ = self.cluster.pool_delete(pool.as_str());
            backend.pool_create(pool).expect("create pool on the cluster");
        }

        fn destroy(&self, pool: &PoolName) {
            if let Err(err) = self.cluster.pool_delete(pool.as_str()) {
                eprintln!("conformance: cannot delete pool {pool}: {err}");
            }
        }
    }

    /// A target on the cluster `BASALT_CEPH_CONF` names, or `None` when it is unset.
    pub(super) fn target(test: &str) -> Option<Target> {
        let conf = PathBuf::from(std::env::var_os("BASALT_CEPH_CONF")?);
        let id = std::env::var("BASALT_CEPH_ID").unwrap_or_else(|_| "admin".to_owned());
        let backend = CephBackend::connect(&conf, &id)
            .unwrap_or_else(|err| panic!("cannot connect to the Ceph cluster of {}: {err}", conf.display()));
        let keeper = CephKeeper { cluster: backend.cluster().clone() };
        // Pool names carry the process id, so concurrent and earlier runs never share a pool.
        let prefix = format!("{test}-{}", std::process::id());
        Some(finish(Kind::Ceph, Arc::new(backend), Arc::new(keeper), prefix, None))
    }
}
