//! [`CephBackend`]: the product's [`Backend`] over a Ceph cluster, through librbd and librados.
//!
//! librbd decides almost everything; this layer adds what the product promises on top of it and the cluster cannot
//! know: images only in pools tagged `rbd`, pools with images are not deleted, the NBD client names of this
//! server's open handles (librbd only knows the process's address), an explicitly acquired exclusive lock for
//! writable opens (so a second writer is refused instead of taking the lock over), and messages that say what to do.
//! Configuration overrides are where Ceph keeps them: `conf_*` image and pool metadata, and the monitors'
//! configuration database (`client` section) for the global level.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use basalt_core::Watcher as CoreWatcher;
use basalt_core::config::{self, ConfigEntry, ConfigLevel};
use basalt_core::{
    Backend, BlockExtent, BlockState, ChildInfo, CloneRequest, CopyRequest, CreateOptions, DiffExtent, DiffGranularity,
    DuEntry, Durability, Error, ErrorKind, Features, ImageInfo, ImageIo, ImageListEntry, ImageName, ImageSpec,
    ImageStatus, IoRequest, Namespace, NamespaceInfo, ObjectOrder, OpenTarget, ParentInfo, PoolInfo, PoolName, PoolNs,
    Progress, PurgeReport, ResizePolicy, Result, ScheduleItem, ScheduleLevel, ScheduledPurge, SnapId, SnapInfo,
    SnapName, SnapSpec, Striping, Timestamp, TrashEntry, TrashForce, TrashPurgeSchedule, TrashSource, TrashStatus,
    ZeroMode,
};

use crate::image::{Image, LockMode, SnapNamespace, ZeroFlags};
use crate::progress::report_to;
use crate::purge_schedule;
use crate::rados::{Cluster, IoCtx};
use crate::rbd::{ImageOptions, TrashSource as RbdTrashSource};

/// The prefix of configuration overrides in image and pool metadata (as the reference keeps them).
const CONF_PREFIX: &str = "conf_";

/// Options applied to the librados client:
/// - discards must zero what they cover, whatever their alignment, as the embedded engine does (librbd skips partial
///   discards by default);
/// - librbd's write-back cache works from the first write: basalt's contract is the engine's and NBD's (a write is
///   durable after the next flush, or at once with FUA), so the "write-through until the first flush" guard for
///   guests that never flush is not needed, and small writes are acknowledged from memory as `rbd bench` sees them.
const CLIENT_OPTIONS: &[(&str, &str)] = &[
    ("rbd_skip_partial_discard", "false"),
    ("rbd_discard_granularity_bytes", "4096"),
    ("rbd_cache_writethrough_until_flush", "false"),
];

/// Which image an open handle belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ImageKey {
    pool: String,
    namespace: String,
    id: String,
}

#[derive(Debug, Clone)]
struct OpenRecord {
    token: u64,
    client: String,
    since: Timestamp,
    writable: bool,
}

/// The handles this process has open, by image: the names behind librbd's watchers.
#[derive(Debug, Default)]
struct Opens {
    next: AtomicU64,
    by_image: Mutex<HashMap<ImageKey, Vec<OpenRecord>>>,
}

impl Opens {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ImageKey, Vec<OpenRecord>>> {
        self.by_image.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn of(&self, key: &ImageKey) -> Vec<OpenRecord> {
        self.lock().get(key).cloned().unwrap_or_default()
    }

    fn remove(&self, key: &ImageKey, token: u64) {
        let mut map = self.lock();
        if let Some(records) = map.get_mut(key) {
            records.retain(|r| r.token != token);
            if records.is_empty() {
                map.remove(key);
            }
        }
    }
}

/// A [`Backend`] over a Ceph cluster.
pub struct CephBackend {
    cluster: Cluster,
    opens: Arc<Opens>,
}

impl std::fmt::Debug for CephBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CephBackend").field("cluster", &self.cluster).finish_non_exhaustive()
    }
}

fn now() -> Timestamp {
    Timestamp(SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0))
}

fn image_key(spec: &ImageSpec, id: String) -> ImageKey {
    ImageKey { pool: spec.pool().to_string(), namespace: spec.namespace().to_string(), id }
}

fn describe_clients(records: &[OpenRecord]) -> String {
    records.iter().map(|r| r.client.as_str()).collect::<Vec<_>>().join(", ")
}

/// Replaces the message of an error of the given kind, keeping other errors as they are.
fn explain(err: Error, kind: ErrorKind, message: impl FnOnce() -> String) -> Error {
    if err.kind() == kind { Error::new(kind, message()) } else { err }
}

/// librbd's options for a new image. Striping outside basalt's limits is refused here, before librbd (which only
/// asks that the unit divide the object size) sees it, so both backends accept the same layouts.
fn options_for(
    order: Option<ObjectOrder>,
    features: Option<Features>,
    striping: Option<(u64, u64)>,
) -> Result<ImageOptions> {
    if let Some((unit, count)) = striping {
        basalt_core::Striping::check_limits(unit, count)?;
    }
    Ok(ImageOptions {
        format: Some(2),
        features: features.map(Features::bits),
        order: order.map(ObjectOrder::get),
        stripe_unit: striping.map(|(unit, _)| unit),
        stripe_count: striping.map(|(_, count)| count),
        ..ImageOptions::default()
    })
}

impl CephBackend {
    /// Connects to the cluster described by `conf` as `client.<client_id>`.
    pub fn connect(conf: &Path, client_id: &str) -> Result<CephBackend> {
        let cluster = Cluster::connect(Some(conf), client_id, CLIENT_OPTIONS)?;
        Ok(CephBackend::over(cluster))
    }

    /// A backend over an existing connection.
    pub fn over(cluster: Cluster) -> CephBackend {
        CephBackend { cluster, opens: Arc::new(Opens::default()) }
    }

    /// The connection (for callers that keep their own records in the cluster).
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// A context on `pool`, ENOENT naming the pool when it does not exist.
    fn pool_ctx(&self, pool: &PoolName) -> Result<IoCtx> {
        self.cluster
            .ioctx(pool.as_str())
            .map_err(|err| explain(err, ErrorKind::NotFound, || format!("pool '{pool}' does not exist")))
    }

    /// The pool and namespace of a schedule level must exist (ENOENT, as the embedded engine answers).
    fn check_schedule_level(&self, level: &ScheduleLevel) -> Result<()> {
        match (&level.pool, &level.namespace) {
            (None, _) => Ok(()),
            (Some(pool), None) => self.pool_ctx(pool).map(|_| ()),
            (Some(pool), Some(ns)) => self.ctx(&PoolNs::new(pool.clone(), ns.clone())).map(|_| ()),
        }
    }

    /// A context on a pool and namespace; ENOENT when either does not exist.
    fn ctx(&self, location: &PoolNs) -> Result<IoCtx> {
        let mut io = self.pool_ctx(&location.pool)?;
        let namespace = &location.namespace.as_str();
        if !namespace.is_empty() {
            if !io.namespace_exists(namespace)? {
                return Err(Error::not_found(format!("namespace '{location}' does not exist")));
            }
            io.set_namespace(namespace)?;
        }
        Ok(io)
    }

    fn spec_ctx(&self, spec: &ImageSpec) -> Result<IoCtx> {
        self.ctx(&basalt_core::location_of(spec))
    }

    /// Opens an image read-only (head or snapshot), ENOENT naming it when missing.
    fn open_ro(&self, spec: &ImageSpec, snap: Option<&str>) -> Result<(IoCtx, Image)> {
        let io = self.spec_ctx(spec)?;
        let image = Image::open_read_only(&io, spec.image.as_str(), snap).map_err(|err| {
            explain(err, ErrorKind::NotFound, || match snap {
                Some(snap) => format!("snapshot '{spec}@{snap}' does not exist"),
                None => format!("image '{spec}' does not exist"),
            })
        })?;
        Ok((io, image))
    }

    /// Opens an image's head for changes, ENOENT naming it when missing.
    fn open_rw(&self, spec: &ImageSpec) -> Result<(IoCtx, Image)> {
        let io = self.spec_ctx(spec)?;
        let image = Image::open(&io, spec.image.as_str())
            .map_err(|err| explain(err, ErrorKind::NotFound, || format!("image '{spec}' does not exist")))?;
        Ok((io, image))
    }

    fn snap_exists_or_not_found(image: &Image, spec: &SnapSpec) -> Result<()> {
        if image.snap_exists(spec.snap.as_str())? {
            Ok(())
        } else {
            Err(Error::not_found(format!("snapshot '{spec}' does not exist")))
        }
    }

    /// Clients that have the image open: this process's handles by their names, and other processes by address.
    fn watchers_of(&self, spec: &ImageSpec, image: &Image) -> Result<Vec<CoreWatcher>> {
        let key = image_key(spec, image.id()?);
        let mut watchers: Vec<CoreWatcher> = self
            .opens
            .of(&key)
            .into_iter()
            .map(|r| CoreWatcher { client: r.client, since: r.since, writable: r.writable })
            .collect();
        let me = i64::try_from(self.cluster.instance_id()).unwrap_or(-1);
        for watcher in image.watchers()? {
            if watcher.id != me {
                watchers.push(CoreWatcher {
                    client: format!("client.{} {}", watcher.id, watcher.addr),
                    since: Timestamp(0),
                    writable: true,
                });
            }
        }
        Ok(watchers)
    }

    fn refuse_if_attached(&self, spec: &ImageSpec, image: &Image, what: &str) -> Result<()> {
        let watchers = self.watchers_of(spec, image)?;
        if watchers.is_empty() {
            return Ok(());
        }
        let names: Vec<&str> = watchers.iter().map(|w| w.client.as_str()).collect();
        Err(Error::busy(format!(
            "image is in use by {} client(s) ({}): detach it before {what}",
            watchers.len(),
            names.join(", ")
        )))
    }

    fn require_rbd_pool(&self, pool: &PoolName) -> Result<IoCtx> {
        let io = self.pool_ctx(pool)?;
        if !io.application_list()?.iter().any(|app| app == "rbd") {
            return Err(Error::invalid(format!(
                "pool '{pool}' is not tagged for rbd: enable the rbd application on it first"
            )));
        }
        Ok(io)
    }

    fn user_snaps(image: &Image) -> Result<Vec<crate::image::SnapEntry>> {
        Ok(image.snap_list()?.into_iter().filter(|s| s.namespace == SnapNamespace::User).collect())
    }

    fn children_of(image: &Image) -> Result<Vec<ChildInfo>> {
        image
            .children()?
            .into_iter()
            .map(|child| {
                Ok(ChildInfo {
                    pool: PoolName::new(&child.pool_name)?,
                    namespace: Namespace::parse(&child.pool_namespace)?,
                    image: ImageName::new(&child.image_name)?,
                    image_id: child.image_id,
                    in_trash: child.trash,
                })
            })
            .collect()
    }

    /// Why an image cannot be removed, in the reference's words, or `None`.
    fn removal_refusal(image: &mut Image, spec: &ImageSpec) -> Result<Option<Error>> {
        let snaps = Self::user_snaps(image)?;
        let mut clones = Vec::new();
        for snap in &snaps {
            image.set_snap(Some(&snap.name))?;
            let children = Self::children_of(image);
            image.set_snap(None)?;
            clones.extend(children?.into_iter().map(|c| format!("{}/{}", c.pool, c.image)));
        }
        // Snapshots in the trash namespace (removed while format-2 clones use them) also pin the image.
        if snaps.is_empty() && image.snap_list()?.iter().any(|s| s.namespace == SnapNamespace::Trash) {
            clones.push("clones of removed snapshots".to_owned());
        }
        if !clones.is_empty() {
            return Ok(Some(Error::new(
                ErrorKind::NotEmpty,
                format!(
                    "image has snapshots with linked clones ({}): flatten or remove the clones first",
                    clones.join(", ")
                ),
            )));
        }
        if !snaps.is_empty() {
            return Ok(Some(Error::new(
                ErrorKind::NotEmpty,
                format!(
                    "image has snapshots - remove them first (snap purge; unprotect protected ones) before removing \
                     the image '{spec}'"
                ),
            )));
        }
        Ok(None)
    }

    fn info_of(&self, spec: &ImageSpec, image: &Image) -> Result<ImageInfo> {
        let stat = image.stat()?;
        let order = ObjectOrder::new(stat.order)?;
        let features = Features::from_bits(image.features()?)?;
        let data_pool = match image.data_pool_id()? {
            id if id < 0 || id == self.spec_ctx(spec)?.pool_id() => None,
            id => Some(PoolName::new(&self.cluster.pool_name(id)?)?),
        };
        let parent = match image.parent()? {
            None => None,
            Some(parent) => Some(ParentInfo {
                pool: PoolName::new(&parent.image.pool_name)?,
                namespace: Namespace::parse(&parent.image.pool_namespace)?,
                image: ImageName::new(&parent.image.image_name)?,
                image_id: parent.image.image_id.clone(),
                snap: SnapName::new(&parent.snap_name)?,
                snap_id: SnapId(parent.snap_id),
                overlap_bytes: image.overlap()?,
                in_trash: parent.image.trash,
            }),
        };
        let snaps = Self::user_snaps(image)?;
        let flags = image.flags()?;
        // RBD_FLAG_OBJECT_MAP_INVALID (1) and RBD_FLAG_FAST_DIFF_INVALID (2).
        let status = if flags & 3 != 0 { ImageStatus::Degraded } else { ImageStatus::Ok };
        Ok(ImageInfo {
            id: image.id()?,
            name: spec.image.clone(),
            pool: spec.pool().clone(),
            namespace: spec.namespace().clone(),
            size_bytes: stat.size,
            order,
            num_objs: stat.num_objs,
            block_name_prefix: image.block_name_prefix()?,
            features,
            striping: Striping { unit_bytes: image.stripe_unit()?, count: image.stripe_count()? },
            data_pool,
            parent,
            created: image.create_timestamp()?,
            modified: image.modify_timestamp()?,
            snapshot_count: snaps.len() as u64,
            snap_limit: image.snap_limit()?,
            status,
            status_reason: (status == ImageStatus::Degraded).then(|| "its object map is invalid".to_owned()),
            watchers: self.watchers_of(spec, image)?,
        })
    }

    fn trash_entry(location: &PoolNs, info: crate::rbd::TrashInfo) -> Result<TrashEntry> {
        Ok(TrashEntry {
            id: info.id,
            name: ImageName::new(&info.name)?,
            pool: location.pool.clone(),
            namespace: location.namespace.clone(),
            source: match info.source {
                RbdTrashSource::Removing => TrashSource::Removing,
                _ => TrashSource::User,
            },
            status: TrashStatus::Normal,
            deletion_time: info.deletion_time,
            deferment_end_time: info.deferment_end_time,
        })
    }

    /// What [`Backend::pool_list`] shows of one pool.
    fn pool_info(&self, pool: PoolName, name: &str, quotas: &HashMap<String, (u64, u64)>) -> Result<PoolInfo> {
        let io = self.cluster.ioctx(name)?;
        let applications = io.application_list()?;
        let (mut image_count, mut provisioned_bytes) = (0, 0);
        if applications.iter().any(|a| a == "rbd") {
            let mut namespaces = vec![String::new()];
            namespaces.extend(io.namespace_list()?);
            for namespace in namespaces {
                let mut ns_io = io.duplicate()?;
                ns_io.set_namespace(&namespace)?;
                let stats = ns_io.rbd_pool_stats()?;
                image_count += stats.images;
                provisioned_bytes += stats.image_provisioned_bytes;
            }
        }
        let stat = io.pool_stat()?;
        let (quota_max_bytes, quota_max_objects) = quotas.get(name).copied().unwrap_or_default();
        Ok(PoolInfo {
            name: pool,
            id: u64::try_from(io.pool_id()).unwrap_or(0),
            applications,
            image_count,
            provisioned_bytes,
            used_bytes: stat.num_bytes,
            objects: stat.num_objects,
            quota_max_bytes,
            quota_max_objects,
            healthy: true,
        })
    }

    /// Every pool's quotas `(max_bytes, max_objects)` from the monitors' OSD map (`ceph osd pool ls detail`): unlike
    /// `get-quota`, it answers for a pool so new that it has no statistics yet.
    fn pool_quotas(&self) -> Result<HashMap<String, (u64, u64)>> {
        #[derive(serde::Deserialize)]
        struct Pool {
            pool_name: String,
            #[serde(default)]
            quota_max_bytes: u64,
            #[serde(default)]
            quota_max_objects: u64,
        }
        let command = serde_json::json!({"prefix": "osd pool ls", "detail": "detail", "format": "json"});
        let (out, _) = self.cluster.mon_command(&command.to_string())?;
        let pools: Vec<Pool> =
            serde_json::from_str(&out).map_err(|err| Error::io(format!("cannot read the pools' quotas: {err}")))?;
        Ok(pools.into_iter().map(|p| (p.pool_name, (p.quota_max_bytes, p.quota_max_objects))).collect())
    }

    /// The global overrides: `rbd_*` options of the `client` (or `global`) section of the monitors' database.
    fn global_overrides(&self) -> Result<Vec<(String, String)>> {
        #[derive(serde::Deserialize)]
        struct Entry {
            section: String,
            name: String,
            value: String,
        }
        let (out, _) = self.cluster.mon_command(r#"{"prefix": "config dump", "format": "json"}"#)?;
        let dump: Vec<Entry> = serde_json::from_str(&out)
            .map_err(|err| Error::io(format!("cannot read the monitors' configuration dump: {err}")))?;
        let mut found: Vec<(String, String)> = Vec::new();
        // The client section wins over global.
        for section in ["global", "client"] {
            for entry in dump.iter().filter(|e| e.section == section) {
                if config::OPTIONS.iter().any(|o| o.name == entry.name) {
                    found.retain(|(name, _)| *name != entry.name);
                    found.push((entry.name.clone(), entry.value.clone()));
                }
            }
        }
        Ok(found)
    }

    fn pool_overrides(io: &IoCtx) -> Result<Vec<(String, String)>> {
        Ok(strip_conf(io.pool_metadata_list()?))
    }

    fn image_overrides(image: &Image) -> Result<Vec<(String, String)>> {
        Ok(strip_conf(image.metadata_list()?))
    }
}

fn strip_conf(metadata: Vec<(String, String)>) -> Vec<(String, String)> {
    metadata.into_iter().filter_map(|(k, v)| k.strip_prefix(CONF_PREFIX).map(|name| (name.to_owned(), v))).collect()
}

impl Backend for CephBackend {
    // --- pools ---

    fn pool_create(&self, pool: &PoolName) -> Result<()> {
        self.cluster
            .pool_create(pool.as_str())
            .map_err(|err| explain(err, ErrorKind::AlreadyExists, || format!("pool '{pool}' already exists")))
    }

    fn pool_list(&self) -> Result<Vec<PoolInfo>> {
        let mut pools = Vec::new();
        let quotas = self.pool_quotas()?;
        for name in self.cluster.pool_list()? {
            let Ok(pool) = PoolName::new(&name) else { continue };
            // A pool removed while the list is being read is left out, as if it had gone a moment earlier.
            match self.pool_info(pool, &name, &quotas) {
                Ok(info) => pools.push(info),
                Err(err) if err.kind() == ErrorKind::NotFound && !self.cluster.pool_list()?.contains(&name) => {}
                Err(err) => return Err(err),
            }
        }
        Ok(pools)
    }

    fn pool_set_quota(&self, pool: &PoolName, max_bytes: Option<u64>, max_objects: Option<u64>) -> Result<()> {
        self.pool_ctx(pool)?;
        // The cluster's own quota: the monitors mark the pool full and the OSDs refuse writes to it.
        for (field, value) in [("max_bytes", max_bytes), ("max_objects", max_objects)] {
            if let Some(value) = value {
                let command = serde_json::json!({
                    "prefix": "osd pool set-quota", "pool": pool.as_str(), "field": field, "val": value.to_string()
                });
                self.cluster.mon_command(&command.to_string())?;
            }
        }
        Ok(())
    }

    fn pool_remove(&self, pool: &PoolName) -> Result<()> {
        let io = self.pool_ctx(pool)?;
        let mut namespaces = vec![String::new()];
        namespaces.extend(io.namespace_list()?);
        for namespace in namespaces {
            let mut ns_io = io.duplicate()?;
            ns_io.set_namespace(&namespace)?;
            if !ns_io.image_list()?.is_empty() || !ns_io.trash_list()?.is_empty() {
                return Err(Error::busy(format!("pool '{pool}' still holds images: remove them first")));
            }
        }
        self.cluster.pool_delete(pool.as_str())
    }

    fn pool_application_enable(&self, pool: &PoolName, app: &str) -> Result<()> {
        let io = self.pool_ctx(pool)?;
        if app == "rbd" {
            // `rbd pool init`: tags the pool and prepares librbd's pool objects.
            io.rbd_pool_init(true)
        } else {
            io.application_enable(app, true)
        }
    }

    fn pool_application_disable(&self, pool: &PoolName, app: &str) -> Result<()> {
        self.pool_ctx(pool)?;
        self.cluster.pool_application_disable(pool.as_str(), app)
    }

    // --- namespaces ---

    fn namespace_create(&self, location: &PoolNs) -> Result<()> {
        let io = self.require_rbd_pool(&location.pool)?;
        io.namespace_create(location.namespace.as_str())
            .map_err(|err| explain(err, ErrorKind::AlreadyExists, || format!("namespace '{location}' already exists")))
    }

    fn namespace_list(&self, pool: &PoolName) -> Result<Vec<NamespaceInfo>> {
        let io = self.pool_ctx(pool)?;
        let mut out = Vec::new();
        for name in io.namespace_list()? {
            let mut ns_io = io.duplicate()?;
            ns_io.set_namespace(&name)?;
            out.push(NamespaceInfo { name: Namespace::new(&name)?, image_count: ns_io.image_list()?.len() as u64 });
        }
        Ok(out)
    }

    fn namespace_remove(&self, location: &PoolNs) -> Result<()> {
        let io = self.pool_ctx(&location.pool)?;
        io.namespace_remove(location.namespace.as_str()).map_err(|err| match err.kind() {
            ErrorKind::NotFound => Error::not_found(format!("namespace '{location}' does not exist")),
            ErrorKind::Busy => {
                Error::busy(format!("namespace '{location}' still holds images or trash entries: remove them first"))
            }
            _ => err,
        })
    }

    // --- images ---

    fn image_create(&self, spec: &ImageSpec, options: &CreateOptions) -> Result<()> {
        basalt_core::check_size(options.size_bytes)?;
        self.require_rbd_pool(spec.pool())?;
        let io = self.spec_ctx(spec)?;
        let mut rbd_options = options_for(options.order, options.features, options.striping)?;
        rbd_options.data_pool = options.data_pool.as_ref().map(ToString::to_string);
        io.image_create(spec.image.as_str(), options.size_bytes, &rbd_options)
            .map_err(|err| explain(err, ErrorKind::AlreadyExists, || format!("image '{spec}' already exists")))
    }

    fn image_list(&self, location: &PoolNs) -> Result<Vec<ImageListEntry>> {
        let io = self.ctx(location)?;
        let mut images = io
            .image_list()?
            .into_iter()
            .map(|entry| Ok(ImageListEntry { name: ImageName::new(&entry.name)?, id: entry.id }))
            .collect::<Result<Vec<_>>>()?;
        images.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(images)
    }

    fn image_info(&self, spec: &ImageSpec) -> Result<ImageInfo> {
        let (_io, image) = self.open_ro(spec, None)?;
        self.info_of(spec, &image)
    }

    fn image_info_at_snap(&self, spec: &SnapSpec) -> Result<ImageInfo> {
        let (_io, image) = self.open_ro(&spec.image, Some(spec.snap.as_str()))?;
        self.info_of(&spec.image, &image)
    }

    fn image_resize(&self, spec: &ImageSpec, size_bytes: u64, policy: ResizePolicy) -> Result<()> {
        basalt_core::check_size(size_bytes)?;
        let (_io, image) = self.open_rw(spec)?;
        let current = image.size()?;
        if size_bytes < current && policy == ResizePolicy::GrowOnly {
            return Err(Error::invalid(format!(
                "shrinking image '{spec}' from {current} to {size_bytes} bytes discards data: it is only allowed with \
                 allow-shrink (--allow-shrink)"
            )));
        }
        image.resize(size_bytes, policy == ResizePolicy::AllowShrink, &mut crate::progress::no_progress())
    }

    fn image_rename(&self, spec: &ImageSpec, new_name: &ImageName) -> Result<()> {
        let io = self.spec_ctx(spec)?;
        io.image_rename(spec.image.as_str(), new_name.as_str()).map_err(|err| match err.kind() {
            ErrorKind::NotFound => Error::not_found(format!("image '{spec}' does not exist")),
            ErrorKind::AlreadyExists => {
                Error::exists(format!("an image named '{new_name}' already exists in '{}'", spec.pool()))
            }
            _ => err,
        })
    }

    fn image_remove(&self, spec: &ImageSpec, progress: &Progress) -> Result<()> {
        let io = self.spec_ctx(spec)?;
        {
            let (_ro, mut image) = self.open_ro(spec, None)?;
            if let Some(refusal) = Self::removal_refusal(&mut image, spec)? {
                return Err(refusal);
            }
            self.refuse_if_attached(spec, &image, "removing it")?;
        }
        io.image_remove(spec.image.as_str(), &mut report_to(progress)).map_err(|err| {
            explain(err, ErrorKind::Busy, || format!("image '{spec}' is in use by another client: detach it first"))
        })
    }

    fn image_copy(&self, src: &ImageSpec, request: &CopyRequest, progress: &Progress) -> Result<()> {
        let snap = request.snap.as_ref().map(SnapName::as_str);
        let (_io, image) = self.open_ro(src, snap)?;
        self.require_rbd_pool(request.dest.pool())?;
        let dest_io = self.spec_ctx(&request.dest)?;
        let options = options_for(request.order, request.features, request.striping)?;
        let dest = &request.dest;
        image
            .copy(&dest_io, dest.image.as_str(), &options, 0, &mut report_to(progress))
            .map_err(|err| explain(err, ErrorKind::AlreadyExists, || format!("image '{dest}' already exists")))
    }

    fn image_deep_copy(&self, src: &ImageSpec, dest: &ImageSpec, progress: &Progress) -> Result<()> {
        let (_io, image) = self.open_ro(src, None)?;
        self.require_rbd_pool(dest.pool())?;
        let dest_io = self.spec_ctx(dest)?;
        let options = ImageOptions { format: Some(2), ..ImageOptions::default() };
        image
            .deep_copy(&dest_io, dest.image.as_str(), &options, &mut report_to(progress))
            .map_err(|err| explain(err, ErrorKind::AlreadyExists, || format!("image '{dest}' already exists")))
    }

    fn image_features_enable(&self, spec: &ImageSpec, features: Features) -> Result<()> {
        let (_io, image) = self.open_rw(spec)?;
        let current = Features::from_bits(image.features()?)?;
        check_feature_change(current, features, true)?;
        image.update_features(features.bits(), true)
    }

    fn image_features_disable(&self, spec: &ImageSpec, features: Features) -> Result<()> {
        let (_io, image) = self.open_rw(spec)?;
        let current = Features::from_bits(image.features()?)?;
        check_feature_change(current, features, false)?;
        image.update_features(features.bits(), false)
    }

    fn image_metadata_list(&self, spec: &ImageSpec) -> Result<Vec<(String, String)>> {
        let (_io, image) = self.open_ro(spec, None)?;
        Ok(image.metadata_list()?.into_iter().filter(|(k, _)| !k.starts_with(CONF_PREFIX)).collect())
    }

    fn image_metadata_set(&self, spec: &ImageSpec, key: &str, value: &str) -> Result<()> {
        if key.starts_with(CONF_PREFIX) {
            return Err(Error::invalid(format!(
                "metadata keys starting with '{CONF_PREFIX}' are configuration: use config"
            )));
        }
        let (_io, image) = self.open_rw(spec)?;
        image.metadata_set(key, value)
    }

    fn image_metadata_remove(&self, spec: &ImageSpec, key: &str) -> Result<()> {
        let (_io, image) = self.open_rw(spec)?;
        image
            .metadata_remove(key)
            .map_err(|err| explain(err, ErrorKind::NotFound, || format!("image '{spec}' has no metadata key '{key}'")))
    }

    fn image_watchers(&self, spec: &ImageSpec) -> Result<Vec<CoreWatcher>> {
        let (_io, image) = self.open_ro(spec, None)?;
        self.watchers_of(spec, &image)
    }

    // --- configuration ---

    fn config_list(&self, level: &ConfigLevel) -> Result<Vec<ConfigEntry>> {
        let global = self.global_overrides()?;
        match level {
            ConfigLevel::Global => Ok(config::resolve(&global, &[], &[])),
            ConfigLevel::Pool(pool) => {
                let io = self.pool_ctx(pool)?;
                Ok(config::resolve(&global, &Self::pool_overrides(&io)?, &[]))
            }
            ConfigLevel::Image(spec) => {
                let pool = Self::pool_overrides(&self.pool_ctx(spec.pool())?)?;
                let (_io, image) = self.open_ro(spec, None)?;
                Ok(config::resolve(&global, &pool, &Self::image_overrides(&image)?))
            }
        }
    }

    fn config_set(&self, level: &ConfigLevel, name: &str, value: &str) -> Result<()> {
        let option = config::option(name)?;
        let value = config::normalize_value(option, value)?;
        let key = format!("{CONF_PREFIX}{name}");
        match level {
            ConfigLevel::Global => {
                let command =
                    serde_json::json!({"prefix": "config set", "who": "client", "name": name, "value": value});
                self.cluster.mon_command(&command.to_string()).map(|_| ())
            }
            ConfigLevel::Pool(pool) => self.pool_ctx(pool)?.pool_metadata_set(&key, &value),
            ConfigLevel::Image(spec) => self.open_rw(spec)?.1.metadata_set(&key, &value),
        }
    }

    fn config_remove(&self, level: &ConfigLevel, name: &str) -> Result<()> {
        config::option(name)?;
        let key = format!("{CONF_PREFIX}{name}");
        let not_set = || format!("'{name}' is not overridden at this level");
        match level {
            ConfigLevel::Global => {
                if !self.global_overrides()?.iter().any(|(n, _)| n == name) {
                    return Err(Error::not_found(not_set()));
                }
                let command = serde_json::json!({"prefix": "config rm", "who": "client", "name": name});
                self.cluster.mon_command(&command.to_string()).map(|_| ())
            }
            ConfigLevel::Pool(pool) => self
                .pool_ctx(pool)?
                .pool_metadata_remove(&key)
                .map_err(|err| explain(err, ErrorKind::NotFound, not_set)),
            ConfigLevel::Image(spec) => {
                self.open_rw(spec)?.1.metadata_remove(&key).map_err(|err| explain(err, ErrorKind::NotFound, not_set))
            }
        }
    }

    // --- snapshots ---

    fn snap_create(&self, spec: &SnapSpec) -> Result<()> {
        let (_io, image) = self.open_rw(&spec.image)?;
        image.snap_create(spec.snap.as_str()).map_err(|err| match err.kind() {
            ErrorKind::AlreadyExists => Error::exists(format!("snapshot '{spec}' already exists")),
            ErrorKind::QuotaExceeded => Error::new(
                ErrorKind::QuotaExceeded,
                format!("image '{}' has reached its snapshot limit: remove snapshots or raise the limit", spec.image),
            ),
            _ => err,
        })
    }

    fn snap_list(&self, spec: &ImageSpec) -> Result<Vec<SnapInfo>> {
        let (_io, mut image) = self.open_ro(spec, None)?;
        let snaps = Self::user_snaps(&image)?;
        let mut out = Vec::with_capacity(snaps.len());
        for snap in snaps {
            let protected = image.snap_is_protected(&snap.name)?;
            let timestamp = image.snap_timestamp(snap.id)?;
            image.set_snap(Some(&snap.name))?;
            let children = image.children();
            image.set_snap(None)?;
            out.push(SnapInfo {
                id: SnapId(snap.id),
                name: SnapName::new(&snap.name)?,
                size_bytes: snap.size,
                timestamp,
                protected,
                children: children?.len() as u64,
            });
        }
        Ok(out)
    }

    fn snap_rename(&self, spec: &SnapSpec, new_name: &SnapName) -> Result<()> {
        let (_io, image) = self.open_rw(&spec.image)?;
        Self::snap_exists_or_not_found(&image, spec)?;
        image.snap_rename(spec.snap.as_str(), new_name.as_str()).map_err(|err| {
            explain(err, ErrorKind::AlreadyExists, || format!("snapshot '{}@{new_name}' already exists", spec.image))
        })
    }

    fn snap_protect(&self, spec: &SnapSpec) -> Result<()> {
        let (_io, image) = self.open_rw(&spec.image)?;
        Self::snap_exists_or_not_found(&image, spec)?;
        if !Features::from_bits(image.features()?)?.contains(Features::LAYERING) {
            return Err(Error::new(
                ErrorKind::NotImplemented,
                format!("image '{}' does not have the layering feature: snapshots cannot be protected", spec.image),
            ));
        }
        image
            .snap_protect(spec.snap.as_str())
            .map_err(|err| explain(err, ErrorKind::Busy, || format!("snapshot '{spec}' is already protected")))
    }

    fn snap_unprotect(&self, spec: &SnapSpec) -> Result<()> {
        let (_io, mut image) = self.open_rw(&spec.image)?;
        Self::snap_exists_or_not_found(&image, spec)?;
        if !image.snap_is_protected(spec.snap.as_str())? {
            return Err(Error::invalid(format!("snapshot '{spec}' is not protected")));
        }
        image.set_snap(Some(spec.snap.as_str()))?;
        let children = Self::children_of(&image);
        image.set_snap(None)?;
        let children = children?;
        if !children.is_empty() {
            let names: Vec<String> = children.iter().map(|c| format!("{}/{}", c.pool, c.image)).collect();
            return Err(Error::busy(format!(
                "cannot unprotect: at least {} child(ren) [{}] depend on snapshot '{spec}': flatten or remove them first",
                children.len(),
                names.join(", ")
            )));
        }
        image.snap_unprotect(spec.snap.as_str())
    }

    fn snap_rollback(&self, spec: &SnapSpec, progress: &Progress) -> Result<()> {
        let (_io, image) = self.open_rw(&spec.image)?;
        Self::snap_exists_or_not_found(&image, spec)?;
        let key = image_key(&spec.image, image.id()?);
        let writers: Vec<OpenRecord> = self.opens.of(&key).into_iter().filter(|r| r.writable).collect();
        if !writers.is_empty() {
            return Err(Error::busy(format!(
                "image is attached read-write by {}: stop writes and detach it before rollback",
                describe_clients(&writers)
            )));
        }
        self.refuse_if_attached(&spec.image, &image, "rollback")?;
        image.snap_rollback(spec.snap.as_str(), &mut report_to(progress))
    }

    fn snap_remove(&self, spec: &SnapSpec) -> Result<()> {
        let (_io, image) = self.open_rw(&spec.image)?;
        Self::snap_exists_or_not_found(&image, spec)?;
        if image.snap_is_protected(spec.snap.as_str())? {
            return Err(Error::busy(format!("snapshot '{spec}' is protected from removal: unprotect it first")));
        }
        image.snap_remove(spec.snap.as_str(), 0, &mut crate::progress::no_progress())
    }

    fn snap_purge(&self, spec: &ImageSpec, progress: &Progress) -> Result<()> {
        let (_io, image) = self.open_rw(spec)?;
        let snaps = Self::user_snaps(&image)?;
        let protected: Vec<String> = snaps
            .iter()
            .filter_map(|s| match image.snap_is_protected(&s.name) {
                Ok(true) => Some(Ok(s.name.clone())),
                Ok(false) => None,
                Err(err) => Some(Err(err)),
            })
            .collect::<Result<_>>()?;
        if !protected.is_empty() {
            return Err(Error::busy(format!(
                "snapshots of '{spec}' are protected ({}): unprotect them first",
                protected.join(", ")
            )));
        }
        let total = snaps.len() as u64;
        for (done, snap) in snaps.iter().enumerate() {
            if progress.is_cancelled() {
                return Err(Error::new(ErrorKind::Cancelled, "snapshot purge cancelled"));
            }
            image.snap_remove(&snap.name, 0, &mut crate::progress::no_progress())?;
            progress.set(done as u64 + 1, total);
        }
        progress.set(total, total);
        Ok(())
    }

    fn snap_limit_set(&self, spec: &ImageSpec, limit: Option<u64>) -> Result<()> {
        let (_io, image) = self.open_rw(spec)?;
        if let Some(limit) = limit {
            let count = Self::user_snaps(&image)?.len() as u64;
            if limit < count {
                return Err(Error::invalid(format!(
                    "image '{spec}' already has {count} snapshots, more than the limit {limit}"
                )));
            }
        }
        image.snap_set_limit(limit)
    }

    fn snap_children(&self, spec: &SnapSpec) -> Result<Vec<ChildInfo>> {
        let (_io, image) = self.open_ro(&spec.image, Some(spec.snap.as_str()))?;
        Self::children_of(&image)
    }

    // --- clones ---

    fn clone_image(&self, parent: &SnapSpec, child: &ImageSpec, request: &CloneRequest) -> Result<()> {
        let (parent_io, image) = self.open_ro(&parent.image, None)?;
        Self::snap_exists_or_not_found(&image, parent)?;
        if !image.snap_is_protected(parent.snap.as_str())? {
            return Err(Error::invalid(format!("snapshot '{parent}' is not protected: protect it before cloning")));
        }
        let parent_features = Features::from_bits(image.features()?)?;
        let features = request.features.unwrap_or(parent_features);
        if !features.contains(Features::LAYERING) || !parent_features.contains(Features::LAYERING) {
            return Err(Error::new(ErrorKind::NotImplemented, "clones need the layering feature on parent and child"));
        }
        self.require_rbd_pool(child.pool())?;
        let child_io = self.spec_ctx(child)?;
        // Format 2 clones: they may live in another namespace (format 1 refuses with EXDEV). The product still
        // asks for a protected snapshot, checked above, as the embedded engine does.
        let mut options = options_for(request.order, Some(features.difference(Features::IMPLICIT)), request.striping)?;
        options.clone_format = Some(2);
        parent_io
            .clone_image(parent.image.image.as_str(), parent.snap.as_str(), &child_io, child.image.as_str(), &options)
            .map_err(|err| explain(err, ErrorKind::AlreadyExists, || format!("image '{child}' already exists")))
    }

    fn scrub(&self, spec: Option<&ImageSpec>, progress: &Progress) -> Result<basalt_core::ScrubReport> {
        let _ = (spec, progress);
        Err(Error::new(
            ErrorKind::NotSupported,
            "scrub checks the embedded engine's checksums; a Ceph cluster scrubs its own placement groups: run \
             `ceph pg deep-scrub PGID` or `ceph osd deep-scrub OSD` (see `ceph health detail` for inconsistencies)",
        ))
    }

    fn flatten(&self, spec: &ImageSpec, progress: &Progress) -> Result<()> {
        let (_io, image) = self.open_rw(spec)?;
        if image.parent()?.is_none() {
            return Err(Error::invalid(format!("image '{spec}' has no parent: there is nothing to flatten")));
        }
        image.flatten(&mut report_to(progress))?;
        progress.set(1, 1);
        Ok(())
    }

    // --- trash ---

    fn trash_move(&self, spec: &ImageSpec, deferment_end: Timestamp) -> Result<String> {
        let io = self.spec_ctx(spec)?;
        let id = {
            let (_ro, image) = self.open_ro(spec, None)?;
            self.refuse_if_attached(spec, &image, "moving it to the trash")?;
            image.id()?
        };
        let delay = deferment_end.0.saturating_sub(now().0);
        io.trash_move(spec.image.as_str(), delay)?;
        Ok(id)
    }

    fn trash_list(&self, location: &PoolNs) -> Result<Vec<TrashEntry>> {
        let io = self.ctx(location)?;
        io.trash_list()?.into_iter().map(|info| Self::trash_entry(location, info)).collect()
    }

    fn trash_restore(&self, location: &PoolNs, id: &str, new_name: Option<&ImageName>) -> Result<()> {
        let io = self.ctx(location)?;
        let info = io
            .trash_get(id)
            .map_err(|err| explain(err, ErrorKind::NotFound, || format!("no trash entry '{id}' in '{location}'")))?;
        let name = new_name.map_or(info.name.clone(), ToString::to_string);
        io.trash_restore(id, &name).map_err(|err| {
            explain(err, ErrorKind::AlreadyExists, || {
                format!("an image named '{name}' already exists in '{location}': restore under another name")
            })
        })
    }

    fn trash_remove(&self, location: &PoolNs, id: &str, force: TrashForce, progress: &Progress) -> Result<()> {
        let io = self.ctx(location)?;
        let info = io
            .trash_get(id)
            .map_err(|err| explain(err, ErrorKind::NotFound, || format!("no trash entry '{id}' in '{location}'")))?;
        if force == TrashForce::RespectDeferment && info.deferment_end_time > now() {
            return Err(Error::new(
                ErrorKind::NotPermitted,
                format!(
                    "deferment time has not expired: '{}' is protected until {}; remove it with force to override",
                    info.name, info.deferment_end_time
                ),
            ));
        }
        let mut image = Image::open_by_id(&io, id, None, true)?;
        let spec = ImageSpec::parse(&format!("{location}/{}", info.name))?;
        if let Some(refusal) = Self::removal_refusal(&mut image, &spec)? {
            return Err(refusal);
        }
        drop(image);
        io.trash_remove(id, force == TrashForce::Force, &mut report_to(progress))
    }

    fn trash_purge(&self, pool: &PoolName, expired_before: Timestamp, progress: &Progress) -> Result<PurgeReport> {
        let io = self.pool_ctx(pool)?;
        let mut namespaces = vec![String::new()];
        namespaces.extend(io.namespace_list()?);
        let mut candidates = Vec::new();
        for namespace in namespaces {
            let location =
                PoolNs::parse(&if namespace.is_empty() { pool.to_string() } else { format!("{pool}/{namespace}") })?;
            for entry in self.trash_list(&location)? {
                if entry.source == TrashSource::User && entry.deferment_end_time <= expired_before {
                    candidates.push((location.clone(), entry));
                }
            }
        }
        let mut report = PurgeReport::default();
        let total = candidates.len() as u64;
        for (done, (location, entry)) in candidates.into_iter().enumerate() {
            if progress.is_cancelled() {
                return Err(Error::new(ErrorKind::Cancelled, "trash purge cancelled"));
            }
            match self.trash_remove(&location, &entry.id, TrashForce::Force, &Progress::default()) {
                Ok(()) => report.removed.push(entry.id),
                Err(err) => report.skipped.push((entry.id, err)),
            }
            progress.set(done as u64 + 1, total);
        }
        Ok(report)
    }

    // --- trash purge schedules: the manager's (rbd_support), never run by basalt ---

    fn trash_purge_schedule_add(&self, level: &ScheduleLevel, item: &ScheduleItem) -> Result<()> {
        self.check_schedule_level(level)?;
        self.cluster.mgr_command(&purge_schedule::command("add", level, Some(item)))?;
        Ok(())
    }

    fn trash_purge_schedule_remove(&self, level: &ScheduleLevel, item: Option<&ScheduleItem>) -> Result<()> {
        // The manager accepts removing what is not there; say so, as the embedded engine does.
        let current = self.trash_purge_schedule_list(level, false)?;
        let Some(schedule) = current.first() else {
            return Err(Error::not_found(format!("no trash purge schedule at '{level}'")));
        };
        if let Some(item) = item
            && !schedule.items.contains(item)
        {
            return Err(Error::not_found(format!("no trash purge schedule '{item}' at '{level}'")));
        }
        self.cluster.mgr_command(&purge_schedule::command("remove", level, item))?;
        Ok(())
    }

    fn trash_purge_schedule_list(&self, level: &ScheduleLevel, recursive: bool) -> Result<Vec<TrashPurgeSchedule>> {
        self.check_schedule_level(level)?;
        let (out, _) = self.cluster.mgr_command(&purge_schedule::command("list", level, None))?;
        let all = purge_schedule::parse_list(&out)?;
        Ok(basalt_core::schedule::schedules_listed(&all, level, recursive))
    }

    fn trash_purge_schedule_status(&self, level: &ScheduleLevel) -> Result<Vec<ScheduledPurge>> {
        self.check_schedule_level(level)?;
        let (out, _) = self.cluster.mgr_command(&purge_schedule::command("status", level, None))?;
        purge_schedule::parse_status(&out)
    }

    fn trash_purge_schedule_run_due(&self, _now: Timestamp) -> Result<Vec<(PoolNs, Result<PurgeReport>)>> {
        // The cluster's manager runs its schedules itself.
        Ok(Vec::new())
    }

    // --- usage and diffs ---

    fn du(&self, spec: &ImageSpec) -> Result<Vec<DuEntry>> {
        let (_io, mut image) = self.open_ro(spec, None)?;
        image
            .du()?
            .into_iter()
            .map(|entry| {
                Ok(DuEntry {
                    snap: entry.snap.as_deref().map(SnapName::new).transpose()?,
                    provisioned_bytes: entry.provisioned_bytes,
                    used_bytes: entry.used_bytes,
                })
            })
            .collect()
    }

    fn diff(
        &self,
        spec: &ImageSpec,
        from: Option<&SnapName>,
        to: Option<&SnapName>,
        granularity: DiffGranularity,
    ) -> Result<Vec<DiffExtent>> {
        let (_io, image) = self.open_ro(spec, to.map(SnapName::as_str))?;
        if let Some(from) = from
            && !image.snap_exists(from.as_str())?
        {
            return Err(Error::not_found(format!("snapshot '{spec}@{from}' does not exist")));
        }
        let whole_object = granularity == DiffGranularity::WholeObject;
        let extents = image.diff_extents(from.map(SnapName::as_str), false, whole_object)?;
        Ok(merge_extents(extents.into_iter().map(|e| DiffExtent {
            offset: e.offset,
            length: e.length,
            exists: e.exists,
        })))
    }

    // --- data path ---

    fn open(&self, spec: &ImageSpec, target: &OpenTarget, client: &str) -> Result<Box<dyn ImageIo>> {
        let (image, writable) = match target {
            OpenTarget::Head => (self.open_rw(spec)?.1, true),
            OpenTarget::HeadReadOnly => (self.open_ro(spec, None)?.1, false),
            OpenTarget::Snapshot(snap) => (self.open_ro(spec, Some(snap.as_str()))?.1, false),
        };
        let key = image_key(spec, image.id()?);
        let token = self.opens.next.fetch_add(1, Ordering::Relaxed);
        let exclusive = writable && Features::from_bits(image.features()?)?.contains(Features::EXCLUSIVE_LOCK);
        if exclusive {
            // librbd hands the lock over to whoever asks; another process's writer must not lose it to us.
            let (_, owners) = image.lock_owners()?;
            if !owners.is_empty() && self.opens.of(&key).iter().all(|r| !r.writable) {
                return Err(Error::busy(format!(
                    "image '{spec}' is locked by another client ({}): it has the exclusive-lock feature and one \
                     writer at a time",
                    owners.join(", ")
                )));
            }
        }
        {
            // Checked and registered under the map's lock, so two writers in this process cannot both pass.
            let mut map = self.opens.lock();
            let records = map.entry(key.clone()).or_default();
            let writers: Vec<OpenRecord> = records.iter().filter(|r| r.writable).cloned().collect();
            if exclusive && !writers.is_empty() {
                return Err(Error::busy(format!(
                    "image '{spec}' is locked by {}: it has the exclusive-lock feature and one writer at a time",
                    describe_clients(&writers)
                )));
            }
            records.push(OpenRecord { token, client: client.to_owned(), since: now(), writable });
        }
        if exclusive && let Err(err) = image.lock_acquire(LockMode::Exclusive) {
            self.opens.remove(&key, token);
            let owners = image.lock_owners().map(|(_, owners)| owners.join(", ")).unwrap_or_default();
            return Err(Error::busy(format!(
                "image '{spec}' is locked by another client ({owners}): it has the exclusive-lock feature and one \
                 writer at a time ({})",
                err.message()
            )));
        }
        Ok(Box::new(CephIo { image, writable, opens: self.opens.clone(), key, token }))
    }
}

/// Checks a feature change the way the reference does before asking librbd (which agrees, but says less).
fn check_feature_change(current: Features, change: Features, enable: bool) -> Result<()> {
    if change.is_empty() {
        return Err(Error::invalid("no features given"));
    }
    let mutable =
        Features::EXCLUSIVE_LOCK.union(Features::OBJECT_MAP).union(Features::FAST_DIFF).union(Features::JOURNALING);
    let allowed = if enable { mutable } else { mutable.union(Features::DEEP_FLATTEN) };
    if !allowed.contains(change) {
        return Err(Error::invalid(format!(
            "features {change} cannot be {} after creation",
            if enable { "enabled" } else { "disabled" }
        )));
    }
    if enable {
        if current.intersects(change) {
            return Err(Error::invalid(format!("features {} are already enabled", current.intersection(change))));
        }
        if change.intersects(Features::OBJECT_MAP.union(Features::FAST_DIFF).union(Features::JOURNALING))
            && !current.union(change).contains(Features::EXCLUSIVE_LOCK)
        {
            return Err(Error::invalid("object-map, fast-diff and journaling need exclusive-lock: enable it first"));
        }
    } else {
        if !current.contains(change) {
            return Err(Error::invalid(format!("features {} are not enabled", change.difference(current))));
        }
        if change.contains(Features::EXCLUSIVE_LOCK)
            && current.difference(change).intersects(Features::OBJECT_MAP.union(Features::JOURNALING))
        {
            return Err(Error::invalid(
                "exclusive-lock cannot be disabled while object-map or journaling is enabled: disable them first",
            ));
        }
    }
    Ok(())
}

/// Fails unless `[offset, offset + length)` lies inside an image of `size` bytes.
fn within(offset: u64, length: u64, size: u64) -> Result<()> {
    match offset.checked_add(length) {
        Some(end) if end <= size => Ok(()),
        _ => Err(Error::invalid(format!("the range {offset}+{length} lies outside the image ({size} bytes)"))),
    }
}

/// librbd's form of a zeroing mode.
fn zero_flags(mode: ZeroMode) -> ZeroFlags {
    match mode {
        ZeroMode::MayUnmap => ZeroFlags::MayUnmap,
        ZeroMode::KeepAllocated => ZeroFlags::ThickProvision,
    }
}

/// Joins adjacent extents of the same kind, as the engine reports them.
fn merge_extents(extents: impl Iterator<Item = DiffExtent>) -> Vec<DiffExtent> {
    let mut out: Vec<DiffExtent> = Vec::new();
    for extent in extents {
        match out.last_mut() {
            Some(last) if last.exists == extent.exists && last.offset + last.length == extent.offset => {
                last.length += extent.length;
            }
            _ => out.push(extent),
        }
    }
    out
}

/// An open image or snapshot on the cluster.
struct CephIo {
    image: Image,
    writable: bool,
    opens: Arc<Opens>,
    key: ImageKey,
    token: u64,
}

impl std::fmt::Debug for CephIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CephIo").field("image", &self.image).field("writable", &self.writable).finish_non_exhaustive()
    }
}

impl Drop for CephIo {
    fn drop(&mut self) {
        // Closing the image (when `image` drops, after this) flushes and releases the lock.
        self.opens.remove(&self.key, self.token);
    }
}

impl CephIo {
    fn check_range(&self, offset: u64, length: u64) -> Result<()> {
        within(offset, length, self.image.size()?)
    }

    /// What every request of a batch must pass before it is issued: writable for changes, inside the image.
    fn check_request(&self, size: &Result<u64>, request: &IoRequest<'_>) -> Result<()> {
        if !matches!(request, IoRequest::Read { .. }) {
            self.check_writable()?;
        }
        let (offset, length) = request.range().unwrap_or((0, 0));
        within(offset, length, *size.as_ref().map_err(Clone::clone)?)
    }

    fn check_writable(&self) -> Result<()> {
        if self.writable {
            Ok(())
        } else {
            Err(Error::new(ErrorKind::ReadOnly, "the image is open read-only (snapshot or read-only attach)"))
        }
    }

    fn settle(&self, durability: Durability) -> Result<()> {
        match durability {
            Durability::Buffered => Ok(()),
            Durability::ForceUnitAccess => self.image.flush(),
        }
    }
}

impl ImageIo for CephIo {
    fn size_bytes(&self) -> u64 {
        self.image.size().unwrap_or(0)
    }

    fn is_read_only(&self) -> bool {
        !self.writable
    }

    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.check_range(offset, buf.len() as u64)?;
        let read = self.image.read(offset, buf)?;
        // librbd returns short reads only at the end of the image, which the range check excludes.
        buf[read..].fill(0);
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8], durability: Durability) -> Result<()> {
        self.check_writable()?;
        self.check_range(offset, data.len() as u64)?;
        self.image.write(offset, data)?;
        self.settle(durability)
    }

    fn discard(&self, offset: u64, length: u64, durability: Durability) -> Result<()> {
        self.check_writable()?;
        self.check_range(offset, length)?;
        self.image.discard(offset, length)?;
        self.settle(durability)
    }

    fn write_zeroes(&self, offset: u64, length: u64, mode: ZeroMode, durability: Durability) -> Result<()> {
        self.check_writable()?;
        self.check_range(offset, length)?;
        self.image.write_zeroes(offset, length, zero_flags(mode))?;
        self.settle(durability)
    }

    fn flush(&self) -> Result<()> {
        if self.writable { self.image.flush() } else { Ok(()) }
    }

    fn run_batch(&self, requests: &mut [IoRequest<'_>]) -> Vec<Result<Vec<BlockExtent>>> {
        let mut results: Vec<Option<Result<Vec<BlockExtent>>>> = requests.iter().map(|_| None).collect();
        let mut fua = Vec::new();
        // One size for the whole batch: every request is checked against it.
        let size = self.image.size();
        self.image.aio_scope(|scope| {
            let mut pending = Vec::new();
            // Waits for everything issued so far: a flush covers the requests before it.
            let drain = |pending: &mut Vec<(usize, crate::aio::AioOp<'_>)>, results: &mut Vec<Option<_>>| {
                scope.wait_all();
                for (index, op) in pending.drain(..) {
                    let op: crate::aio::AioOp<'_> = op;
                    results[index] = Some(op.wait().map(|_| Vec::new()));
                }
            };
            for (index, request) in requests.iter_mut().enumerate() {
                if matches!(request, IoRequest::Flush) {
                    drain(&mut pending, &mut results);
                    results[index] = Some(self.image.flush().map(|()| Vec::new()));
                    continue;
                }
                if request.durability() == Some(Durability::ForceUnitAccess) {
                    fua.push(index);
                }
                let issued = self.check_request(&size, request).and_then(|()| match request {
                    IoRequest::Read { offset, buf } => scope.read(*offset, buf),
                    IoRequest::Write { offset, data, .. } => scope.write(*offset, data),
                    IoRequest::Discard { offset, length, .. } => scope.discard(*offset, *length),
                    IoRequest::WriteZeroes { offset, length, mode, .. } => {
                        scope.write_zeroes(*offset, *length, zero_flags(*mode))
                    }
                    IoRequest::Flush => scope.flush(),
                });
                match issued {
                    Ok(op) => pending.push((index, op)),
                    Err(err) => results[index] = Some(Err(err)),
                }
            }
            drain(&mut pending, &mut results);
        });
        // Requests with FUA are durable once one flush after them succeeds.
        if fua.iter().any(|&index| matches!(results[index], Some(Ok(_))))
            && let Err(err) = self.image.flush()
        {
            for &index in &fua {
                results[index] = Some(Err(err.clone()));
            }
        }
        // A read reports its whole range as data: asking librbd where the holes are costs more than the read.
        for (request, result) in requests.iter().zip(results.iter_mut()) {
            if let (IoRequest::Read { offset, buf }, Some(Ok(extents))) = (request, result.as_mut()) {
                extents.push(BlockExtent { offset: *offset, length: buf.len() as u64, state: BlockState::Data });
            }
        }
        results.into_iter().map(|r| r.unwrap_or_else(|| Err(Error::io("the request was not issued")))).collect()
    }

    fn batches_concurrently(&self) -> bool {
        true
    }

    fn read_sparse(&self, offset: u64, buf: &mut [u8]) -> Result<Vec<BlockExtent>> {
        // As in a batch: the whole range is data (holes read as zeros all the same).
        self.read(offset, buf)?;
        Ok(vec![BlockExtent { offset, length: buf.len() as u64, state: BlockState::Data }])
    }

    fn block_status(&self, offset: u64, length: u64) -> Result<Vec<BlockExtent>> {
        self.check_range(offset, length)?;
        let end = offset + length;
        let mut out: Vec<BlockExtent> = Vec::new();
        let mut at = offset;
        let push = |out: &mut Vec<BlockExtent>, offset: u64, length: u64, state: BlockState| {
            if length == 0 {
                return;
            }
            match out.last_mut() {
                Some(last) if last.state == state && last.offset + last.length == offset => last.length += length,
                _ => out.push(BlockExtent { offset, length, state }),
            }
        };
        let mut data = Vec::new();
        self.image.diff_iterate(None, offset, length, true, false, &mut |o, l, exists| {
            if exists {
                data.push((o, l));
            }
            ControlFlow::Continue(())
        })?;
        data.sort_unstable();
        for (o, l) in data {
            let (o, e) = (o.max(at), (o + l).min(end));
            if e <= o {
                continue;
            }
            push(&mut out, at, o - at, BlockState::Hole);
            push(&mut out, o, e - o, BlockState::Data);
            at = e;
        }
        push(&mut out, at, end - at, BlockState::Hole);
        Ok(out)
    }
}
