//! The Backend trait: everything the product needs from storage, shaped after librbd so the embedded engine and a
//! Ceph backend are interchangeable; plus the image I/O handle, progress reporting and the injected clock.
//!
//! Every call is synchronous and may block on disk or network: async callers run it on a blocking pool.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::config::{ConfigEntry, ConfigLevel};
use crate::error::Result;
use crate::image::{
    BlockExtent, ChildInfo, CloneRequest, CopyRequest, CreateOptions, DiffExtent, DuEntry, Features, ImageInfo,
    ImageListEntry, NamespaceInfo, OpenTarget, PoolInfo, PurgeReport, ResizePolicy, SnapInfo, Timestamp, TrashEntry,
};
use crate::names::{ImageName, ImageSpec, Namespace, PoolName, PoolNs, SnapName, SnapSpec};
use crate::schedule::{ScheduleItem, ScheduleLevel, ScheduledPurge, TrashPurgeSchedule};

/// The source of the current time; injected so tests can drive trash expiration.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Returns the current time.
    fn now(&self) -> Timestamp;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp(SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0))
    }
}

/// A clock that only moves when told to, for tests.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    /// A clock standing at `start`.
    pub fn new(start: Timestamp) -> ManualClock {
        ManualClock(AtomicU64::new(start.0))
    }

    /// Moves the clock forward by `secs` seconds.
    pub fn advance(&self, secs: u64) {
        self.0.fetch_add(secs, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.0.load(Ordering::SeqCst))
    }
}

/// Progress of a long operation, and the way to cancel it at its next safe point.
#[derive(Debug, Default)]
pub struct Progress {
    done: AtomicU64,
    total: AtomicU64,
    cancelled: AtomicBool,
}

impl Progress {
    /// A fresh progress record.
    pub fn new() -> Arc<Progress> {
        Arc::new(Progress::default())
    }

    /// Records that `done` of `total` units are finished.
    pub fn set(&self, done: u64, total: u64) {
        self.total.store(total, Ordering::Relaxed);
        self.done.store(done, Ordering::Relaxed);
    }

    /// Returns `(done, total)`.
    pub fn get(&self) -> (u64, u64) {
        (self.done.load(Ordering::Relaxed), self.total.load(Ordering::Relaxed))
    }

    /// Returns the fraction done, from 0.0 to 1.0.
    pub fn fraction(&self) -> f64 {
        let (done, total) = self.get();
        if total == 0 { 0.0 } else { (done as f64 / total as f64).min(1.0) }
    }

    /// Asks the operation to stop at its next safe point; it then fails with ECANCELED.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
    }

    /// Returns true once [`Progress::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }
}

/// How a write or zeroing is made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Durable after the next flush.
    Buffered,
    /// Durable when the call returns (NBD FUA).
    ForceUnitAccess,
}

/// How `write_zeroes` may satisfy the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZeroMode {
    /// May deallocate: the range becomes a hole.
    MayUnmap,
    /// Must stay allocated (NBD NO_HOLE); reads still return zeros.
    KeepAllocated,
}

/// An open image or snapshot: the data path. Dropping it closes the image and releases its lock.
pub trait ImageIo: Send + Sync + std::fmt::Debug {
    /// Returns the current size in bytes.
    fn size_bytes(&self) -> u64;
    /// Returns true when writes are refused (snapshots, read-only opens).
    fn is_read_only(&self) -> bool;
    /// Reads `buf.len()` bytes at `offset`; the range must lie inside the image.
    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<()>;
    /// Writes `data` at `offset`.
    fn write(&self, offset: u64, data: &[u8], durability: Durability) -> Result<()>;
    /// Writes `data` at `offset` (buffered, as [`ImageIo::write`]) only if that needs no waiting: no throttle, no
    /// lock another thread holds for long, no journal space, metadata or device I/O to wait for. `None` means
    /// nothing was written, and the caller calls [`ImageIo::write`] on a thread that may block. An event loop
    /// answers the cheap writes (small overwrites) itself this way, instead of waking a thread for each. The
    /// default never writes.
    fn try_write_now(&self, offset: u64, data: &[u8]) -> Option<Result<()>> {
        let _ = (offset, data);
        None
    }
    /// Deallocates a range; it then reads as zeros.
    fn discard(&self, offset: u64, length: u64, durability: Durability) -> Result<()>;
    /// Makes a range read as zeros.
    fn write_zeroes(&self, offset: u64, length: u64, mode: ZeroMode, durability: Durability) -> Result<()>;
    /// Makes every acknowledged write durable.
    fn flush(&self) -> Result<()>;
    /// Starts a flush that no thread waits for: `done` gets its outcome, perhaps before this returns, on whatever
    /// thread made the writes durable, so it must not block. It covers the writes acknowledged before the call, as
    /// [`ImageIo::flush`] does. Gives `done` back, uncalled, when the backend cannot: the caller then calls
    /// [`ImageIo::flush`] on a thread that may block. An event loop hands flushes over this way instead of parking a
    /// thread on each until its group commit. The default gives it back.
    fn flush_async(&self, done: FlushDone) -> std::result::Result<(), FlushDone> {
        Err(done)
    }
    /// Flushes on the caller's thread, like [`ImageIo::flush`], only if that takes at most one sync of a log that
    /// no other flush is running or waiting for: nothing else to write first (no layer file, no second sync). An
    /// event loop whose client flushes one request at a time answers the flush itself this way, without the two
    /// thread hand-offs of [`ImageIo::flush_async`]. `None` means nothing was done: the caller uses
    /// [`ImageIo::flush_async`]. The default does nothing.
    fn try_flush_now(&self) -> Option<Result<()>> {
        None
    }
    /// Reports which parts of a range hold data and which are holes, without reading data.
    fn block_status(&self, offset: u64, length: u64) -> Result<Vec<BlockExtent>>;
    /// Reads like [`ImageIo::read`] and also reports which parts are holes (they read as zeros): one read operation
    /// for a reader that answers holes specially (NBD structured replies).
    fn read_sparse(&self, offset: u64, buf: &mut [u8]) -> Result<Vec<BlockExtent>> {
        let extents = self.block_status(offset, buf.len() as u64)?;
        self.read(offset, buf)?;
        Ok(extents)
    }
    /// Runs requests that a client has in flight together and returns one result per request, in order (a read's
    /// result is its [`ImageIo::read_sparse`] extents; other results are empty). A flush covers the requests before
    /// it in the batch. The default runs them one after the other.
    fn run_batch(&self, requests: &mut [IoRequest<'_>]) -> Vec<Result<Vec<BlockExtent>>> {
        requests.iter_mut().map(|request| request.run_on(self)).collect()
    }
    /// True when [`ImageIo::run_batch`] keeps the requests in flight together (a backend with network latency),
    /// so each one's latency is the batch's; false when it runs them in turn.
    fn batches_concurrently(&self) -> bool {
        false
    }
}

/// What [`ImageIo::flush_async`] calls with a flush's outcome.
pub type FlushDone = Box<dyn FnOnce(Result<()>) + Send>;

/// One request of a batch (see [`ImageIo::run_batch`]).
#[derive(Debug)]
pub enum IoRequest<'a> {
    /// Read into the buffer.
    Read {
        /// Image offset.
        offset: u64,
        /// Where the data goes; its length is the read's.
        buf: &'a mut [u8],
    },
    /// Write the data.
    Write {
        /// Image offset.
        offset: u64,
        /// The bytes.
        data: &'a [u8],
        /// When it must be durable.
        durability: Durability,
    },
    /// Deallocate a range.
    Discard {
        /// Image offset.
        offset: u64,
        /// Length in bytes.
        length: u64,
        /// When it must be durable.
        durability: Durability,
    },
    /// Make a range read as zeros.
    WriteZeroes {
        /// Image offset.
        offset: u64,
        /// Length in bytes.
        length: u64,
        /// Whether it may deallocate.
        mode: ZeroMode,
        /// When it must be durable.
        durability: Durability,
    },
    /// Make the requests before it durable.
    Flush,
}

impl IoRequest<'_> {
    /// Runs this request alone on `io`.
    pub fn run_on<I: ImageIo + ?Sized>(&mut self, io: &I) -> Result<Vec<BlockExtent>> {
        match self {
            IoRequest::Read { offset, buf } => io.read_sparse(*offset, buf),
            IoRequest::Write { offset, data, durability } => io.write(*offset, data, *durability).map(|()| Vec::new()),
            IoRequest::Discard { offset, length, durability } => {
                io.discard(*offset, *length, *durability).map(|()| Vec::new())
            }
            IoRequest::WriteZeroes { offset, length, mode, durability } => {
                io.write_zeroes(*offset, *length, *mode, *durability).map(|()| Vec::new())
            }
            IoRequest::Flush => io.flush().map(|()| Vec::new()),
        }
    }

    /// The image range the request touches (`None` for a flush).
    pub fn range(&self) -> Option<(u64, u64)> {
        match self {
            IoRequest::Read { offset, buf } => Some((*offset, buf.len() as u64)),
            IoRequest::Write { offset, data, .. } => Some((*offset, data.len() as u64)),
            IoRequest::Discard { offset, length, .. } | IoRequest::WriteZeroes { offset, length, .. } => {
                Some((*offset, *length))
            }
            IoRequest::Flush => None,
        }
    }

    /// When a change must be durable (`None` for reads and flushes).
    pub fn durability(&self) -> Option<Durability> {
        match self {
            IoRequest::Write { durability, .. }
            | IoRequest::Discard { durability, .. }
            | IoRequest::WriteZeroes { durability, .. } => Some(*durability),
            IoRequest::Read { .. } | IoRequest::Flush => None,
        }
    }

    /// Bytes of data the request moves (reads and writes; zero for the others).
    pub fn data_bytes(&self) -> u64 {
        match self {
            IoRequest::Read { buf, .. } => buf.len() as u64,
            IoRequest::Write { data, .. } => data.len() as u64,
            _ => 0,
        }
    }
}

/// Everything the product needs from storage.
///
/// Refusals carry the reference system's error kinds (see `ceph-rbd-semantics` in the docs) and messages that say
/// what to do.
pub trait Backend: Send + Sync + std::fmt::Debug {
    // --- pools ---
    /// Creates an empty pool with no application tag.
    fn pool_create(&self, pool: &PoolName) -> Result<()>;
    /// Lists pools with their usage.
    fn pool_list(&self) -> Result<Vec<PoolInfo>>;
    /// Removes a pool; refused while it holds images, trash entries or namespaces (ENOTEMPTY/EBUSY).
    fn pool_remove(&self, pool: &PoolName) -> Result<()>;
    /// Tags a pool with an application (`rbd`).
    fn pool_application_enable(&self, pool: &PoolName, app: &str) -> Result<()>;
    /// Removes an application tag.
    fn pool_application_disable(&self, pool: &PoolName, app: &str) -> Result<()>;
    /// Sets a pool's quotas as `ceph osd pool set-quota` does: `Some(0)` removes one, `None` leaves it unchanged.
    /// Once the pool's usage reaches a quota, writes to it answer EDQUOT until data is removed or the quota raised.
    fn pool_set_quota(&self, pool: &PoolName, max_bytes: Option<u64>, max_objects: Option<u64>) -> Result<()>;

    // --- namespaces ---
    /// Creates a namespace in a pool.
    fn namespace_create(&self, location: &PoolNs) -> Result<()>;
    /// Lists a pool's named namespaces with their image counts.
    fn namespace_list(&self, pool: &PoolName) -> Result<Vec<NamespaceInfo>>;
    /// Removes an empty namespace; refused while images or trash entries remain.
    fn namespace_remove(&self, location: &PoolNs) -> Result<()>;

    // --- images ---
    /// Creates an image.
    fn image_create(&self, spec: &ImageSpec, options: &CreateOptions) -> Result<()>;
    /// Lists the images of a pool and namespace (trash excluded), sorted by name.
    fn image_list(&self, location: &PoolNs) -> Result<Vec<ImageListEntry>>;
    /// Returns everything about an image.
    fn image_info(&self, spec: &ImageSpec) -> Result<ImageInfo>;
    /// Returns an image's info as of a snapshot (size and parent overlap of that snapshot).
    fn image_info_at_snap(&self, spec: &SnapSpec) -> Result<ImageInfo>;
    /// Changes the size.
    fn image_resize(&self, spec: &ImageSpec, size_bytes: u64, policy: ResizePolicy) -> Result<()>;
    /// Renames within the same pool and namespace.
    fn image_rename(&self, spec: &ImageSpec, new_name: &ImageName) -> Result<()>;
    /// Removes an image; refused with snapshots (ENOTEMPTY), watchers (EBUSY).
    fn image_remove(&self, spec: &ImageSpec, progress: &Progress) -> Result<()>;
    /// Copies the head or a snapshot into a new standalone image (no snapshots, no parent).
    fn image_copy(&self, src: &ImageSpec, request: &CopyRequest, progress: &Progress) -> Result<()>;
    /// Copies an image with all its snapshots; a clone stays a clone of the same parent.
    fn image_deep_copy(&self, src: &ImageSpec, dest: &ImageSpec, progress: &Progress) -> Result<()>;
    /// Enables mutable features.
    fn image_features_enable(&self, spec: &ImageSpec, features: Features) -> Result<()>;
    /// Disables mutable or disable-only features.
    fn image_features_disable(&self, spec: &ImageSpec, features: Features) -> Result<()>;
    /// Lists an image's user metadata.
    fn image_metadata_list(&self, spec: &ImageSpec) -> Result<Vec<(String, String)>>;
    /// Sets one metadata key.
    fn image_metadata_set(&self, spec: &ImageSpec, key: &str, value: &str) -> Result<()>;
    /// Removes one metadata key (ENOENT if absent).
    fn image_metadata_remove(&self, spec: &ImageSpec, key: &str) -> Result<()>;
    /// Clients that have the image open.
    fn image_watchers(&self, spec: &ImageSpec) -> Result<Vec<crate::image::Watcher>>;

    // --- configuration ---
    /// Lists every option's effective value at a level, with its source.
    fn config_list(&self, level: &ConfigLevel) -> Result<Vec<ConfigEntry>>;
    /// Sets an override at a level.
    fn config_set(&self, level: &ConfigLevel, name: &str, value: &str) -> Result<()>;
    /// Removes an override at a level (ENOENT if there is none).
    fn config_remove(&self, level: &ConfigLevel, name: &str) -> Result<()>;

    // --- snapshots ---
    /// Creates a snapshot (O(1) in image size).
    fn snap_create(&self, spec: &SnapSpec) -> Result<()>;
    /// Lists an image's snapshots in id order.
    fn snap_list(&self, spec: &ImageSpec) -> Result<Vec<SnapInfo>>;
    /// Renames a snapshot.
    fn snap_rename(&self, spec: &SnapSpec, new_name: &SnapName) -> Result<()>;
    /// Protects a snapshot so it can be cloned and not removed.
    fn snap_protect(&self, spec: &SnapSpec) -> Result<()>;
    /// Unprotects a snapshot; refused while clones exist (EBUSY).
    fn snap_unprotect(&self, spec: &SnapSpec) -> Result<()>;
    /// Restores the head's data and size to the snapshot's.
    fn snap_rollback(&self, spec: &SnapSpec, progress: &Progress) -> Result<()>;
    /// Removes a snapshot; refused while protected (EBUSY).
    fn snap_remove(&self, spec: &SnapSpec) -> Result<()>;
    /// Removes every unprotected snapshot; refused if any is protected.
    fn snap_purge(&self, spec: &ImageSpec, progress: &Progress) -> Result<()>;
    /// Sets or clears the snapshot limit.
    fn snap_limit_set(&self, spec: &ImageSpec, limit: Option<u64>) -> Result<()>;
    /// Lists the clones of a snapshot.
    fn snap_children(&self, spec: &SnapSpec) -> Result<Vec<ChildInfo>>;

    // --- clones ---
    /// Clones a protected snapshot into a new image.
    fn clone_image(&self, parent: &SnapSpec, child: &ImageSpec, request: &CloneRequest) -> Result<()>;
    /// Copies the parent's data into a clone and removes the parent link.
    fn flatten(&self, spec: &ImageSpec, progress: &Progress) -> Result<()>;

    // --- integrity ---
    /// Reads every data block of one image (head and snapshots) or, with `None`, of every image of the store,
    /// and checks each against its checksum. Damaged blocks are reported, not repaired.
    fn scrub(&self, spec: Option<&ImageSpec>, progress: &Progress) -> Result<crate::ScrubReport>;
    /// Checksum errors found since the backend started, per image (`pool/[namespace/]name`) that had any: every
    /// detection by a read or a scrub, never lowered. Backends that keep no checksums of their own report none.
    fn checksum_errors(&self) -> Vec<(String, u64)> {
        Vec::new()
    }

    // --- health ---
    /// Why the backend refuses every change until it is restarted, once it does; `None` while it works. The embedded
    /// engine stops so after a failed sync or metadata write (the kernel may have dropped the unsynced pages, so a
    /// retry could succeed without them) and answers with the same message its refusals carry. Backends that never
    /// stop this way answer `None`.
    fn stopped(&self) -> Option<String> {
        None
    }

    // --- trash ---
    /// Moves an image to the trash; it cannot be removed before `deferment_end`. Returns its id.
    fn trash_move(&self, spec: &ImageSpec, deferment_end: Timestamp) -> Result<String>;
    /// Lists the trash of a pool and namespace.
    fn trash_list(&self, location: &PoolNs) -> Result<Vec<TrashEntry>>;
    /// Restores a trash entry, under its old name or a new one.
    fn trash_restore(&self, location: &PoolNs, id: &str, new_name: Option<&ImageName>) -> Result<()>;
    /// Removes a trash entry; before its deferment end only with `force` (EPERM otherwise).
    fn trash_remove(&self, location: &PoolNs, id: &str, force: TrashForce, progress: &Progress) -> Result<()>;
    /// Removes every entry of a pool (all namespaces) whose deferment ended before `expired_before`; entries that
    /// cannot be removed (clones depend on them) are skipped and reported.
    fn trash_purge(&self, pool: &PoolName, expired_before: Timestamp, progress: &Progress) -> Result<PurgeReport>;

    // --- trash purge schedules (`rbd trash purge schedule`) ---
    /// Adds an item to the purge schedule of a level (the pool and namespace must exist); adding an item that is
    /// already there changes nothing.
    fn trash_purge_schedule_add(&self, level: &ScheduleLevel, item: &ScheduleItem) -> Result<()>;
    /// Removes one item of a level's schedule, or with `None` the whole schedule of the level (ENOENT when there is
    /// nothing to remove).
    fn trash_purge_schedule_remove(&self, level: &ScheduleLevel, item: Option<&ScheduleItem>) -> Result<()>;
    /// Lists the schedule of a level; with `recursive`, also the nearest one above that applies to it and every one
    /// below it.
    fn trash_purge_schedule_list(&self, level: &ScheduleLevel, recursive: bool) -> Result<Vec<TrashPurgeSchedule>>;
    /// The next scheduled purge of each namespace under a level that has a schedule.
    fn trash_purge_schedule_status(&self, level: &ScheduleLevel) -> Result<Vec<ScheduledPurge>>;
    /// Runs the schedules that are due at `now`, for a backend whose schedules its host runs (the embedded engine):
    /// each due namespace's expired, unprotected entries are purged (one result per namespace), and the run is recorded so that it is neither repeated nor
    /// skipped after a restart. A backend whose cluster runs its own schedules (Ceph's manager) does nothing here.
    fn trash_purge_schedule_run_due(&self, now: Timestamp) -> Result<Vec<(PoolNs, Result<PurgeReport>)>>;

    // --- usage and diffs ---
    /// Space use per snapshot (in id order) and of the head, last.
    fn du(&self, spec: &ImageSpec) -> Result<Vec<DuEntry>>;
    /// Extents that differ between `from` (or the beginning of time) and `to` (a snapshot, or the head), read from
    /// the object map only. With `whole_object`, extents are widened to whole objects.
    fn diff(
        &self,
        spec: &ImageSpec,
        from: Option<&SnapName>,
        to: Option<&SnapName>,
        granularity: DiffGranularity,
    ) -> Result<Vec<DiffExtent>>;

    // --- I/O ---
    /// Opens an image or a snapshot for I/O, registering `client` as a watcher.
    fn open(&self, spec: &ImageSpec, target: &OpenTarget, client: &str) -> Result<Box<dyn ImageIo>>;
}

/// Whether an unexpired trash entry may be removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrashForce {
    /// Refuse entries whose deferment has not ended.
    RespectDeferment,
    /// Remove regardless of the deferment.
    Force,
}

/// Precision of a diff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiffGranularity {
    /// As fine as the backend tracks changes.
    Fine,
    /// Whole objects, as `diff_iterate(whole_object=true)`.
    WholeObject,
}

/// Helper for backends: the namespace of a spec as a `PoolNs`.
pub fn location_of(spec: &ImageSpec) -> PoolNs {
    PoolNs::new(spec.pool().clone(), spec.namespace().clone())
}

/// Helper for backends: a spec in the same location with another name.
pub fn sibling(spec: &ImageSpec, name: ImageName) -> ImageSpec {
    ImageSpec::new(spec.pool().clone(), spec.namespace().clone(), name)
}

/// Helper: the default namespace of a pool.
pub fn default_location(pool: &PoolName) -> PoolNs {
    PoolNs::new(pool.clone(), Namespace::default_ns())
}
