//! Serving a Ceph cluster: the librbd backend, and the server's own records in the cluster.
//!
//! Users, roles, API tokens and task records live in the omap of one RADOS object per table (`basalt.users`, ...)
//! in a pool of their own (`.basalt` by default, created on first start and tagged `basalt`), so every basalt server
//! in front of the cluster sees the same accounts and sessions.

use std::sync::Arc;

use basalt_ceph::CephBackend;
use basalt_ceph::rados::IoCtx;
use basalt_core::{Backend, Result};

use crate::datapath::Sample;
use crate::perf::{ImageCounters, PerfShare, Published};
use crate::serve::{CephConfig, ServeError};
use crate::store::{KvStore, ServerStore, Table};

/// The object whose omap holds each server's last published counters.
const PERF_OBJECT: &str = "basalt.perf";
/// The object whose omap holds each server's per-minute totals for a day (`MINUTE/SERVER` keys, oldest first).
const HISTORY_OBJECT: &str = "basalt.perf.history";

fn minute_key(minute: u64) -> String {
    format!("{minute:012}")
}

/// Performance counters shared through the cluster.
#[derive(Debug)]
pub struct RadosPerfShare {
    io: IoCtx,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Publication {
    t: u64,
    images: Vec<(String, Sample)>,
}

impl PerfShare for RadosPerfShare {
    fn publish(&self, server: &str, now: u64, counters: &[(String, Sample)]) -> Result<()> {
        let publication = Publication { t: now, images: counters.to_vec() };
        let bytes = serde_json::to_vec(&publication).map_err(|e| basalt_core::Error::io(e.to_string()))?;
        self.io.omap_set(PERF_OBJECT, &[(server, &bytes)])
    }

    fn fetch(&self) -> Result<Vec<Published>> {
        Ok(self
            .io
            .omap_list(PERF_OBJECT)?
            .into_iter()
            .filter_map(|(server, bytes)| {
                let publication: Publication = serde_json::from_slice(&bytes).ok()?;
                Some(Published { server, taken: publication.t, counters: publication.images })
            })
            .collect())
    }

    fn forget(&self, server: &str) -> Result<()> {
        self.io.omap_remove(PERF_OBJECT, &[server])
    }

    fn archive(&self, server: &str, minute: u64, totals: &[(String, Sample)], keep_from: u64) -> Result<()> {
        if !totals.is_empty() {
            let bytes = serde_json::to_vec(totals).map_err(|e| basalt_core::Error::io(e.to_string()))?;
            self.io.omap_set(HISTORY_OBJECT, &[(&format!("{}/{server}", minute_key(minute)), &bytes)])?;
        }
        self.io.omap_remove_range(HISTORY_OBJECT, "", &minute_key(keep_from))
    }

    fn archived(&self, since: u64) -> Result<Vec<(u64, String, ImageCounters)>> {
        Ok(self
            .io
            .omap_list(HISTORY_OBJECT)?
            .into_iter()
            .filter_map(|(key, bytes)| {
                let (minute, server) = key.split_once('/')?;
                let minute: u64 = minute.parse().ok()?;
                let totals: ImageCounters = serde_json::from_slice(&bytes).ok()?;
                (minute >= since).then(|| (minute, server.to_owned(), totals))
            })
            .collect())
    }
}

/// What serving a cluster needs: the backend, the shared records and the shared performance counters.
#[derive(Debug)]
pub struct Opened {
    /// The librbd backend.
    pub backend: Arc<dyn Backend>,
    /// Users, roles, sessions and tasks.
    pub store: ServerStore,
    /// Performance counters of every server.
    pub perf: Arc<dyn PerfShare>,
}

/// The server records in the cluster.
#[derive(Debug)]
pub struct RadosStore {
    io: IoCtx,
}

fn object(table: Table) -> String {
    format!("basalt.{}", table.0)
}

impl KvStore for RadosStore {
    fn get(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>> {
        self.io.omap_get(&object(table), key)
    }

    fn list(&self, table: Table) -> Result<Vec<(String, Vec<u8>)>> {
        self.io.omap_list(&object(table))
    }

    fn put(&self, table: Table, key: &str, value: &[u8]) -> Result<()> {
        self.io.omap_set(&object(table), &[(key, value)])
    }

    fn remove(&self, table: Table, keys: &[String]) -> Result<usize> {
        let object = object(table);
        let mut present = 0;
        for key in keys {
            present += usize::from(self.io.omap_get(&object, key)?.is_some());
        }
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        self.io.omap_remove(&object, &keys)?;
        Ok(present)
    }
}

/// Connects to the cluster and prepares the records pool.
pub fn open(config: &CephConfig) -> std::result::Result<Opened, ServeError> {
    let fail = |what: &str, err: basalt_core::Error| ServeError::Config(format!("{what}: {err}"));
    let backend = CephBackend::connect(&config.conf, &config.client_id)
        .map_err(|err| fail(&format!("cannot connect to the Ceph cluster of {}", config.conf.display()), err))?;
    let cluster = backend.cluster();
    let pool = config.meta_pool.as_str();
    if !cluster.pool_list().map_err(|err| fail("listing pools", err))?.iter().any(|p| p == pool) {
        match cluster.pool_create(pool) {
            Ok(()) => tracing::info!(pool, "created the pool for basalt's own records"),
            // Another server created it at the same moment.
            Err(err) if err.kind() == basalt_core::ErrorKind::AlreadyExists => {}
            Err(err) => return Err(fail(&format!("creating pool {pool}"), err)),
        }
    }
    let io = cluster.ioctx(pool).map_err(|err| fail(&format!("opening pool {pool}"), err))?;
    io.application_enable("basalt", true).map_err(|err| fail(&format!("tagging pool {pool}"), err))?;
    let perf = Arc::new(RadosPerfShare { io: io.duplicate().map_err(|err| fail("opening the records pool", err))? });
    let store = ServerStore::over(Arc::new(RadosStore { io }));
    Ok(Opened { backend: Arc::new(backend), store, perf })
}
