//! What the data path adds around every open image: per-image counters (lock-free atomics), QoS token buckets from
//! the `rbd_qos_*` options, and the backend wrapper that puts both around each handle it opens.
//!
//! The NBD server and the API both get a [`MeteredBackend`], so every byte that reaches an image is counted and
//! limited in one place, whatever the front end.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use basalt_core::config::{ConfigEntry, ConfigLevel};
use basalt_core::{
    Backend, BlockExtent, ChildInfo, CloneRequest, CopyRequest, CreateOptions, DiffExtent, DiffGranularity, DuEntry,
    Durability, Features, FlushDone, ImageInfo, ImageIo, ImageListEntry, ImageName, ImageSpec, IoRequest,
    NamespaceInfo, OpenTarget, PoolInfo, PoolName, PoolNs, Progress, PurgeReport, ResizePolicy, Result, ScheduleItem,
    ScheduleLevel, ScheduledPurge, SnapInfo, SnapName, SnapSpec, Timestamp, TrashEntry, TrashForce, TrashPurgeSchedule,
    Watcher, ZeroMode,
};

/// Cumulative counters of one image, updated on the data path without locks.
#[derive(Debug, Default)]
pub struct Counters {
    /// Read operations.
    pub read_ops: AtomicU64,
    /// Write operations (writes, discards, zeroing).
    pub write_ops: AtomicU64,
    /// Bytes read.
    pub read_bytes: AtomicU64,
    /// Bytes written.
    pub write_bytes: AtomicU64,
    /// Sum of read latencies, nanoseconds.
    pub read_latency_ns: AtomicU64,
    /// Sum of write latencies, nanoseconds.
    pub write_latency_ns: AtomicU64,
    /// Bytes read by background tasks (flatten, copy, deep copy), not by clients.
    pub bg_read_bytes: AtomicU64,
    /// Bytes written by background tasks.
    pub bg_write_bytes: AtomicU64,
    /// Background operations, one per object's worth of bytes moved.
    pub bg_ops: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Sample {
    /// Read operations.
    pub read_ops: u64,
    /// Write operations.
    pub write_ops: u64,
    /// Bytes read.
    pub read_bytes: u64,
    /// Bytes written.
    pub write_bytes: u64,
    /// Sum of read latencies, nanoseconds.
    pub read_latency_ns: u64,
    /// Sum of write latencies, nanoseconds.
    pub write_latency_ns: u64,
    /// Bytes read by background tasks.
    #[serde(default)]
    pub bg_read_bytes: u64,
    /// Bytes written by background tasks.
    #[serde(default)]
    pub bg_write_bytes: u64,
    /// Background operations.
    #[serde(default)]
    pub bg_ops: u64,
}

impl Counters {
    /// Counts one operation of `bytes` that took `ns` nanoseconds.
    pub fn record(&self, dir: Dir, bytes: u64, ns: u64) {
        let (ops, total, latency) = match dir {
            Dir::Read => (&self.read_ops, &self.read_bytes, &self.read_latency_ns),
            Dir::Write => (&self.write_ops, &self.write_bytes, &self.write_latency_ns),
        };
        ops.fetch_add(1, Ordering::Relaxed);
        total.fetch_add(bytes, Ordering::Relaxed);
        latency.fetch_add(ns, Ordering::Relaxed);
    }

    /// Counts bytes a background task read from and wrote to this image.
    pub fn record_background(&self, read: u64, written: u64, ops: u64) {
        self.bg_read_bytes.fetch_add(read, Ordering::Relaxed);
        self.bg_write_bytes.fetch_add(written, Ordering::Relaxed);
        self.bg_ops.fetch_add(ops, Ordering::Relaxed);
    }

    /// Reads every counter.
    pub fn sample(&self) -> Sample {
        Sample {
            read_ops: self.read_ops.load(Ordering::Relaxed),
            write_ops: self.write_ops.load(Ordering::Relaxed),
            read_bytes: self.read_bytes.load(Ordering::Relaxed),
            write_bytes: self.write_bytes.load(Ordering::Relaxed),
            read_latency_ns: self.read_latency_ns.load(Ordering::Relaxed),
            write_latency_ns: self.write_latency_ns.load(Ordering::Relaxed),
            bg_read_bytes: self.bg_read_bytes.load(Ordering::Relaxed),
            bg_write_bytes: self.bg_write_bytes.load(Ordering::Relaxed),
            bg_ops: self.bg_ops.load(Ordering::Relaxed),
        }
    }
}

impl Sample {
    /// The difference `self - earlier`, saturating (counters are never reset, but images are re-created).
    pub fn since(&self, earlier: &Sample) -> Sample {
        Sample {
            read_ops: self.read_ops.saturating_sub(earlier.read_ops),
            write_ops: self.write_ops.saturating_sub(earlier.write_ops),
            read_bytes: self.read_bytes.saturating_sub(earlier.read_bytes),
            write_bytes: self.write_bytes.saturating_sub(earlier.write_bytes),
            read_latency_ns: self.read_latency_ns.saturating_sub(earlier.read_latency_ns),
            write_latency_ns: self.write_latency_ns.saturating_sub(earlier.write_latency_ns),
            bg_read_bytes: self.bg_read_bytes.saturating_sub(earlier.bg_read_bytes),
            bg_write_bytes: self.bg_write_bytes.saturating_sub(earlier.bg_write_bytes),
            bg_ops: self.bg_ops.saturating_sub(earlier.bg_ops),
        }
    }

    /// Adds `other` into `self`.
    pub fn add(&mut self, other: &Sample) {
        self.read_ops += other.read_ops;
        self.write_ops += other.write_ops;
        self.read_bytes += other.read_bytes;
        self.write_bytes += other.write_bytes;
        self.read_latency_ns += other.read_latency_ns;
        self.write_latency_ns += other.write_latency_ns;
        self.bg_read_bytes += other.bg_read_bytes;
        self.bg_write_bytes += other.bg_write_bytes;
        self.bg_ops += other.bg_ops;
    }
}

/// A token bucket: `rate` tokens per second, holding at most `burst`.
#[derive(Debug)]
struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn new(limit: u64, burst: u64) -> Bucket {
        let rate = limit as f64;
        let burst = if burst == 0 { rate } else { (burst as f64).max(rate) };
        Bucket { rate, burst, tokens: burst, at: Instant::now() }
    }

    /// Takes `n` tokens and returns how long to wait before the operation may proceed.
    fn take(&mut self, n: f64) -> Duration {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.at).as_secs_f64() * self.rate).min(self.burst);
        self.at = now;
        self.tokens -= n;
        if self.tokens >= 0.0 { Duration::ZERO } else { Duration::from_secs_f64(-self.tokens / self.rate) }
    }
}

/// The QoS limits of one image, from its effective `rbd_qos_*` configuration.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct QosLimits {
    /// Operations per second, all kinds (limit, burst).
    pub iops: (u64, u64),
    /// Bytes per second, all kinds.
    pub bps: (u64, u64),
    /// Read operations per second.
    pub read_iops: (u64, u64),
    /// Read bytes per second.
    pub read_bps: (u64, u64),
    /// Write operations per second.
    pub write_iops: (u64, u64),
    /// Write bytes per second.
    pub write_bps: (u64, u64),
}

impl QosLimits {
    /// Reads the limits from an image's effective configuration.
    pub fn from_config(entries: &[ConfigEntry]) -> QosLimits {
        let get =
            |name: &str| entries.iter().find(|e| e.name == name).and_then(|e| e.value.parse::<u64>().ok()).unwrap_or(0);
        let pair = |kind: &str| (get(&format!("rbd_qos_{kind}_limit")), get(&format!("rbd_qos_{kind}_burst")));
        QosLimits {
            iops: pair("iops"),
            bps: pair("bps"),
            read_iops: pair("read_iops"),
            read_bps: pair("read_bps"),
            write_iops: pair("write_iops"),
            write_bps: pair("write_bps"),
        }
    }
}

#[derive(Debug, Default)]
struct Buckets {
    limits: QosLimits,
    iops: Option<Bucket>,
    bps: Option<Bucket>,
    read_iops: Option<Bucket>,
    read_bps: Option<Bucket>,
    write_iops: Option<Bucket>,
    write_bps: Option<Bucket>,
}

fn bucket(pair: (u64, u64)) -> Option<Bucket> {
    (pair.0 > 0).then(|| Bucket::new(pair.0, pair.1))
}

/// The QoS state of one image; limits change without reconnecting.
#[derive(Debug, Default)]
pub struct Qos {
    buckets: Mutex<Buckets>,
}

/// The direction of an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// Reads.
    Read,
    /// Writes, discards, zeroing.
    Write,
}

impl Qos {
    /// Applies new limits; buckets of unchanged limits keep their state.
    pub fn set_limits(&self, limits: QosLimits) {
        let mut b = self.buckets.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if b.limits == limits {
            return;
        }
        *b = Buckets {
            limits,
            iops: bucket(limits.iops),
            bps: bucket(limits.bps),
            read_iops: bucket(limits.read_iops),
            read_bps: bucket(limits.read_bps),
            write_iops: bucket(limits.write_iops),
            write_bps: bucket(limits.write_bps),
        };
    }

    /// True when some limit applies to writes: [`Qos::admit`] may then have to wait.
    pub fn limits_writes(&self) -> bool {
        let b = self.buckets.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        b.iops.is_some() || b.bps.is_some() || b.write_iops.is_some() || b.write_bps.is_some()
    }

    /// Waits (blocking the calling thread, which is a data-path worker) until the operation is within the limits.
    pub fn admit(&self, dir: Dir, bytes: u64) {
        let wait = {
            let mut b = self.buckets.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let bytes = bytes as f64;
            let mut wait = Duration::ZERO;
            let mut take = |bucket: &mut Option<Bucket>, n: f64| {
                if let Some(bucket) = bucket {
                    wait = wait.max(bucket.take(n));
                }
            };
            take(&mut b.iops, 1.0);
            take(&mut b.bps, bytes);
            match dir {
                Dir::Read => {
                    take(&mut b.read_iops, 1.0);
                    take(&mut b.read_bps, bytes);
                }
                Dir::Write => {
                    take(&mut b.write_iops, 1.0);
                    take(&mut b.write_bps, bytes);
                }
            }
            wait
        };
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
    }
}

/// I/O errors an image's data path met: counted, and the last one kept while no operation has succeeded since.
#[derive(Debug, Default)]
pub struct IoHealth {
    /// I/O errors since the server started.
    pub errors: AtomicU64,
    /// I/O errors since the last operation that succeeded (0: healthy).
    pub failing: AtomicU64,
    last: Mutex<Option<String>>,
}

impl IoHealth {
    /// Records a failed operation (only EIO counts: a refusal such as a read past the end is not damage).
    pub fn failed(&self, err: &basalt_core::Error) {
        if err.kind() != basalt_core::ErrorKind::Io {
            return;
        }
        self.errors.fetch_add(1, Ordering::Relaxed);
        self.failing.fetch_add(1, Ordering::Relaxed);
        *self.last.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(err.message().to_owned());
    }

    /// Records a successful operation: the image is healthy again.
    pub fn succeeded(&self) {
        if self.failing.load(Ordering::Relaxed) != 0 {
            self.failing.store(0, Ordering::Relaxed);
            *self.last.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = None;
        }
    }

    /// While failing: how many errors since the last success and the last error's message.
    pub fn failing(&self) -> Option<(u64, String)> {
        let n = self.failing.load(Ordering::Relaxed);
        if n == 0 {
            return None;
        }
        let last = self.last.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        Some((n, last.unwrap_or_default()))
    }

    fn observe<T>(&self, result: &Result<T>) {
        match result {
            Ok(_) => self.succeeded(),
            Err(e) => self.failed(e),
        }
    }
}

/// Everything the data path keeps per image: counters, QoS and I/O errors.
#[derive(Debug, Default)]
pub struct ImageStats {
    /// Counters.
    pub counters: Counters,
    /// QoS.
    pub qos: Qos,
    /// I/O errors.
    pub health: IoHealth,
}

/// The registry of per-image statistics, keyed by `pool[/ns]/image`, and whether the store has stopped.
#[derive(Debug, Default)]
pub struct Registry {
    images: RwLock<HashMap<String, Arc<ImageStats>>>,
    stopped: Mutex<Option<String>>,
    /// What reading images found wrong with them (see [`crate::status`]).
    pub(crate) found: crate::status::Found,
}

impl Registry {
    /// Looks at an error from any backend call: after an EIO, asks the backend (with `stopped`, on the thread that
    /// made the call: the query may take the backend's locks) whether it now refuses every change until a restart,
    /// as the engine does after a failed sync. The first answer that says so is kept: the store stays stopped until
    /// the server restarts.
    pub fn observe(&self, err: &basalt_core::Error, stopped: impl FnOnce() -> Option<String>) {
        if err.kind() != basalt_core::ErrorKind::Io || self.store_stopped().is_some() {
            return;
        }
        if let Some(why) = stopped() {
            self.stopped.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get_or_insert(why);
        }
    }

    /// Why the store stopped, once a call has said so.
    pub fn store_stopped(&self) -> Option<String> {
        self.stopped.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Returns (creating on first use) the statistics of an image.
    pub fn image(&self, spec: &ImageSpec) -> Arc<ImageStats> {
        let key = spec.to_string();
        if let Some(stats) = self.images.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(&key) {
            return stats.clone();
        }
        let mut images = self.images.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        images.entry(key).or_default().clone()
    }

    /// The statistics of an image, if it has any.
    pub fn get(&self, key: &str) -> Option<Arc<ImageStats>> {
        self.images.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(key).cloned()
    }

    /// Every image with statistics.
    pub fn all(&self) -> Vec<(String, Arc<ImageStats>)> {
        let images = self.images.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut all: Vec<(String, Arc<ImageStats>)> = images.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }
}

/// Counts a flush's outcome in the image's health and the backend's error watch.
fn observe_flush(stats: &ImageStats, registry: &Registry, backend: &Arc<dyn Backend>, result: &Result<()>) {
    stats.health.observe(result);
    if let Err(e) = result {
        registry.observe(e, || backend.stopped());
    }
}

/// Takes the callback out of a [`MeteredIo::flush_async`] slot (once).
fn take_slot(slot: &Mutex<Option<FlushDone>>) -> Option<FlushDone> {
    slot.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take()
}

/// An open image whose I/O is counted and limited.
#[derive(Debug)]
struct MeteredIo {
    inner: Box<dyn ImageIo>,
    stats: Arc<ImageStats>,
    registry: Arc<Registry>,
    /// The backend that opened it, asked whether it stopped after an I/O error.
    backend: Arc<dyn Backend>,
}

impl MeteredIo {
    fn timed<T>(&self, dir: Dir, bytes: u64, op: impl FnOnce() -> Result<T>) -> Result<T> {
        self.stats.qos.admit(dir, bytes);
        let start = Instant::now();
        let result = op();
        self.account(dir, bytes, start, &result);
        result
    }

    /// Counts an operation that ran from `start`, and looks at its result.
    fn account<T>(&self, dir: Dir, bytes: u64, start: Instant, result: &Result<T>) {
        let ns = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.stats.counters.record(dir, bytes, ns);
        self.stats.health.observe(result);
        if let Err(e) = result {
            self.registry.observe(e, || self.backend.stopped());
        }
    }
}

impl ImageIo for MeteredIo {
    fn size_bytes(&self) -> u64 {
        self.inner.size_bytes()
    }

    fn is_read_only(&self) -> bool {
        self.inner.is_read_only()
    }

    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let len = buf.len() as u64;
        self.timed(Dir::Read, len, || self.inner.read(offset, buf))
    }

    fn read_sparse(&self, offset: u64, buf: &mut [u8]) -> Result<Vec<BlockExtent>> {
        let len = buf.len() as u64;
        self.timed(Dir::Read, len, || self.inner.read_sparse(offset, buf))
    }

    fn write(&self, offset: u64, data: &[u8], durability: Durability) -> Result<()> {
        self.timed(Dir::Write, data.len() as u64, || self.inner.write(offset, data, durability))
    }

    fn try_write_now(&self, offset: u64, data: &[u8]) -> Option<Result<()>> {
        // A limited image may have to wait for its turn: that is for a thread that may block.
        if self.stats.qos.limits_writes() {
            return None;
        }
        let start = Instant::now();
        let result = self.inner.try_write_now(offset, data)?;
        self.account(Dir::Write, data.len() as u64, start, &result);
        Some(result)
    }

    fn discard(&self, offset: u64, length: u64, durability: Durability) -> Result<()> {
        // Deallocation moves no data: it counts as an operation, not as bytes.
        self.timed(Dir::Write, 0, || self.inner.discard(offset, length, durability))
    }

    fn write_zeroes(&self, offset: u64, length: u64, mode: ZeroMode, durability: Durability) -> Result<()> {
        self.timed(Dir::Write, 0, || self.inner.write_zeroes(offset, length, mode, durability))
    }

    fn flush(&self) -> Result<()> {
        let result = self.inner.flush();
        observe_flush(&self.stats, &self.registry, &self.backend, &result);
        result
    }

    fn try_flush_now(&self) -> Option<Result<()>> {
        let result = self.inner.try_flush_now()?;
        observe_flush(&self.stats, &self.registry, &self.backend, &result);
        Some(result)
    }

    fn flush_async(&self, done: FlushDone) -> std::result::Result<(), FlushDone> {
        // Kept where both this wrapper's callback and the refusal can take it: a backend that cannot flush this way
        // gives the callback back uncalled, and the caller's own `done` goes back with the refusal.
        let slot = Arc::new(Mutex::new(Some(done)));
        let (stats, registry, backend, taken) =
            (self.stats.clone(), self.registry.clone(), self.backend.clone(), slot.clone());
        let wrapped: FlushDone = Box::new(move |result| {
            observe_flush(&stats, &registry, &backend, &result);
            if let Some(done) = take_slot(&taken) {
                done(result);
            }
        });
        match self.inner.flush_async(wrapped) {
            Ok(()) => Ok(()),
            // Empty only if the backend called the callback and refused too: `done` has its answer then.
            Err(_) => take_slot(&slot).map_or(Ok(()), Err),
        }
    }

    fn block_status(&self, offset: u64, length: u64) -> Result<Vec<BlockExtent>> {
        self.inner.block_status(offset, length)
    }

    fn run_batch(&self, requests: &mut [IoRequest<'_>]) -> Vec<Result<Vec<BlockExtent>>> {
        if !self.inner.batches_concurrently() {
            // Each request through this wrapper's own methods: limited and timed one by one.
            return requests.iter_mut().map(|request| request.run_on(self)).collect();
        }
        // In flight together: each request is admitted before the batch starts and takes the batch's latency.
        let dir_of = |request: &IoRequest<'_>| match request {
            IoRequest::Read { .. } => Some(Dir::Read),
            IoRequest::Flush => None,
            _ => Some(Dir::Write),
        };
        for request in requests.iter() {
            if let Some(dir) = dir_of(request) {
                self.stats.qos.admit(dir, request.data_bytes());
            }
        }
        let start = Instant::now();
        let results = self.inner.run_batch(requests);
        let ns = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        for request in requests.iter() {
            if let Some(dir) = dir_of(request) {
                self.stats.counters.record(dir, request.data_bytes(), ns);
            }
        }
        for result in &results {
            self.stats.health.observe(result);
            if let Err(e) = result {
                self.registry.observe(e, || self.backend.stopped());
            }
        }
        results
    }

    fn batches_concurrently(&self) -> bool {
        self.inner.batches_concurrently()
    }
}

/// A backend whose opened images are counted and limited; every other call goes straight through.
#[derive(Debug)]
pub struct MeteredBackend {
    inner: Arc<dyn Backend>,
    registry: Arc<Registry>,
}

impl MeteredBackend {
    /// Wraps `inner`, recording into `registry`.
    pub fn new(inner: Arc<dyn Backend>, registry: Arc<Registry>) -> MeteredBackend {
        MeteredBackend { inner, registry }
    }

    /// Re-reads the QoS configuration of one image (called when its configuration may have changed).
    pub fn refresh_qos(&self, spec: &ImageSpec) -> Result<()> {
        let entries = self.inner.config_list(&ConfigLevel::Image(spec.clone()))?;
        self.registry.image(spec).qos.set_limits(QosLimits::from_config(&entries));
        Ok(())
    }

    /// Re-reads the QoS configuration of every image with statistics.
    pub fn refresh_all_qos(&self) {
        for (key, stats) in self.registry.all() {
            if let Ok(spec) = ImageSpec::parse(&key)
                && let Ok(entries) = self.inner.config_list(&ConfigLevel::Image(spec))
            {
                stats.qos.set_limits(QosLimits::from_config(&entries));
            }
        }
    }
}

impl Backend for MeteredBackend {
    fn pool_create(&self, pool: &PoolName) -> Result<()> {
        self.inner.pool_create(pool)
    }
    fn pool_list(&self) -> Result<Vec<PoolInfo>> {
        self.inner.pool_list()
    }
    fn pool_remove(&self, pool: &PoolName) -> Result<()> {
        self.inner.pool_remove(pool)
    }
    fn pool_application_enable(&self, pool: &PoolName, app: &str) -> Result<()> {
        self.inner.pool_application_enable(pool, app)
    }
    fn pool_application_disable(&self, pool: &PoolName, app: &str) -> Result<()> {
        self.inner.pool_application_disable(pool, app)
    }
    fn pool_set_quota(&self, pool: &PoolName, max_bytes: Option<u64>, max_objects: Option<u64>) -> Result<()> {
        self.inner.pool_set_quota(pool, max_bytes, max_objects)
    }
    fn namespace_create(&self, location: &PoolNs) -> Result<()> {
        self.inner.namespace_create(location)
    }
    fn namespace_list(&self, pool: &PoolName) -> Result<Vec<NamespaceInfo>> {
        self.inner.namespace_list(pool)
    }
    fn namespace_remove(&self, location: &PoolNs) -> Result<()> {
        self.inner.namespace_remove(location)
    }
    fn image_create(&self, spec: &ImageSpec, options: &CreateOptions) -> Result<()> {
        self.inner.image_create(spec, options)
    }
    fn image_list(&self, location: &PoolNs) -> Result<Vec<ImageListEntry>> {
        self.inner.image_list(location)
    }
    fn image_info(&self, spec: &ImageSpec) -> Result<ImageInfo> {
        self.inner.image_info(spec)
    }
    fn image_info_at_snap(&self, spec: &SnapSpec) -> Result<ImageInfo> {
        self.inner.image_info_at_snap(spec)
    }
    fn image_resize(&self, spec: &ImageSpec, size_bytes: u64, policy: ResizePolicy) -> Result<()> {
        self.inner.image_resize(spec, size_bytes, policy)
    }
    fn image_rename(&self, spec: &ImageSpec, new_name: &ImageName) -> Result<()> {
        self.inner.image_rename(spec, new_name)
    }
    fn image_remove(&self, spec: &ImageSpec, progress: &Progress) -> Result<()> {
        self.inner.image_remove(spec, progress)
    }
    fn image_copy(&self, src: &ImageSpec, request: &CopyRequest, progress: &Progress) -> Result<()> {
        self.inner.image_copy(src, request, progress)
    }
    fn image_deep_copy(&self, src: &ImageSpec, dest: &ImageSpec, progress: &Progress) -> Result<()> {
        self.inner.image_deep_copy(src, dest, progress)
    }
    fn image_features_enable(&self, spec: &ImageSpec, features: Features) -> Result<()> {
        self.inner.image_features_enable(spec, features)
    }
    fn image_features_disable(&self, spec: &ImageSpec, features: Features) -> Result<()> {
        self.inner.image_features_disable(spec, features)
    }
    fn image_metadata_list(&self, spec: &ImageSpec) -> Result<Vec<(String, String)>> {
        self.inner.image_metadata_list(spec)
    }
    fn image_metadata_set(&self, spec: &ImageSpec, key: &str, value: &str) -> Result<()> {
        self.inner.image_metadata_set(spec, key, value)
    }
    fn image_metadata_remove(&self, spec: &ImageSpec, key: &str) -> Result<()> {
        self.inner.image_metadata_remove(spec, key)
    }
    fn image_watchers(&self, spec: &ImageSpec) -> Result<Vec<Watcher>> {
        self.inner.image_watchers(spec)
    }
    fn config_list(&self, level: &ConfigLevel) -> Result<Vec<ConfigEntry>> {
        self.inner.config_list(level)
    }
    fn config_set(&self, level: &ConfigLevel, name: &str, value: &str) -> Result<()> {
        self.inner.config_set(level, name, value)?;
        self.after_config_change(level);
        Ok(())
    }
    fn config_remove(&self, level: &ConfigLevel, name: &str) -> Result<()> {
        self.inner.config_remove(level, name)?;
        self.after_config_change(level);
        Ok(())
    }
    fn snap_create(&self, spec: &SnapSpec) -> Result<()> {
        self.inner.snap_create(spec)
    }
    fn snap_list(&self, spec: &ImageSpec) -> Result<Vec<SnapInfo>> {
        self.inner.snap_list(spec)
    }
    fn snap_rename(&self, spec: &SnapSpec, new_name: &SnapName) -> Result<()> {
        self.inner.snap_rename(spec, new_name)
    }
    fn snap_protect(&self, spec: &SnapSpec) -> Result<()> {
        self.inner.snap_protect(spec)
    }
    fn snap_unprotect(&self, spec: &SnapSpec) -> Result<()> {
        self.inner.snap_unprotect(spec)
    }
    fn snap_rollback(&self, spec: &SnapSpec, progress: &Progress) -> Result<()> {
        self.inner.snap_rollback(spec, progress)
    }
    fn snap_remove(&self, spec: &SnapSpec) -> Result<()> {
        self.inner.snap_remove(spec)
    }
    fn snap_purge(&self, spec: &ImageSpec, progress: &Progress) -> Result<()> {
        self.inner.snap_purge(spec, progress)
    }
    fn snap_limit_set(&self, spec: &ImageSpec, limit: Option<u64>) -> Result<()> {
        self.inner.snap_limit_set(spec, limit)
    }
    fn snap_children(&self, spec: &SnapSpec) -> Result<Vec<ChildInfo>> {
        self.inner.snap_children(spec)
    }
    fn clone_image(&self, parent: &SnapSpec, child: &ImageSpec, request: &CloneRequest) -> Result<()> {
        self.inner.clone_image(parent, child, request)
    }
    fn flatten(&self, spec: &ImageSpec, progress: &Progress) -> Result<()> {
        self.inner.flatten(spec, progress)
    }
    fn scrub(&self, spec: Option<&ImageSpec>, progress: &Progress) -> Result<basalt_core::ScrubReport> {
        self.inner.scrub(spec, progress)
    }
    fn checksum_errors(&self) -> Vec<(String, u64)> {
        self.inner.checksum_errors()
    }
    fn stopped(&self) -> Option<String> {
        self.inner.stopped()
    }
    fn trash_move(&self, spec: &ImageSpec, deferment_end: Timestamp) -> Result<String> {
        self.inner.trash_move(spec, deferment_end)
    }
    fn trash_list(&self, location: &PoolNs) -> Result<Vec<TrashEntry>> {
        self.inner.trash_list(location)
    }
    fn trash_restore(&self, location: &PoolNs, id: &str, new_name: Option<&ImageName>) -> Result<()> {
        self.inner.trash_restore(location, id, new_name)
    }
    fn trash_remove(&self, location: &PoolNs, id: &str, force: TrashForce, progress: &Progress) -> Result<()> {
        self.inner.trash_remove(location, id, force, progress)
    }
    fn trash_purge(&self, pool: &PoolName, expired_before: Timestamp, progress: &Progress) -> Result<PurgeReport> {
        self.inner.trash_purge(pool, expired_before, progress)
    }
    fn trash_purge_schedule_add(&self, level: &ScheduleLevel, item: &ScheduleItem) -> Result<()> {
        self.inner.trash_purge_schedule_add(level, item)
    }
    fn trash_purge_schedule_remove(&self, level: &ScheduleLevel, item: Option<&ScheduleItem>) -> Result<()> {
        self.inner.trash_purge_schedule_remove(level, item)
    }
    fn trash_purge_schedule_list(&self, level: &ScheduleLevel, recursive: bool) -> Result<Vec<TrashPurgeSchedule>> {
        self.inner.trash_purge_schedule_list(level, recursive)
    }
    fn trash_purge_schedule_status(&self, level: &ScheduleLevel) -> Result<Vec<ScheduledPurge>> {
        self.inner.trash_purge_schedule_status(level)
    }
    fn trash_purge_schedule_run_due(&self, now: Timestamp) -> Result<Vec<(PoolNs, Result<PurgeReport>)>> {
        self.inner.trash_purge_schedule_run_due(now)
    }
    fn du(&self, spec: &ImageSpec) -> Result<Vec<DuEntry>> {
        self.inner.du(spec)
    }
    fn diff(
        &self,
        spec: &ImageSpec,
        from: Option<&SnapName>,
        to: Option<&SnapName>,
        granularity: DiffGranularity,
    ) -> Result<Vec<DiffExtent>> {
        self.inner.diff(spec, from, to, granularity)
    }
    fn open(&self, spec: &ImageSpec, target: &OpenTarget, client: &str) -> Result<Box<dyn ImageIo>> {
        let inner = match self.inner.open(spec, target, client) {
            Ok(inner) => inner,
            Err(e) => {
                // An image that cannot be opened for lack of its files is damaged: its status says so.
                if e.kind() == basalt_core::ErrorKind::Io {
                    self.registry.image(spec).health.failed(&e);
                }
                self.registry.observe(&e, || self.inner.stopped());
                return Err(e);
            }
        };
        let stats = self.registry.image(spec);
        stats.health.succeeded();
        let entries = self.inner.config_list(&ConfigLevel::Image(spec.clone()))?;
        stats.qos.set_limits(QosLimits::from_config(&entries));
        Ok(Box::new(MeteredIo { inner, stats, registry: self.registry.clone(), backend: self.inner.clone() }))
    }
}

impl MeteredBackend {
    /// A changed image option applies at once; global and pool changes reach every image with statistics.
    fn after_config_change(&self, level: &ConfigLevel) {
        match level {
            ConfigLevel::Image(spec) => {
                let _ = self.refresh_qos(spec);
            }
            _ => self.refresh_all_qos(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_admits_its_burst_then_paces_to_the_rate() {
        let mut bucket = Bucket::new(100, 0);
        let mut waited = Duration::ZERO;
        for _ in 0..100 {
            waited += bucket.take(1.0);
        }
        assert_eq!(waited, Duration::ZERO, "the first second's worth passes at once");
        let wait = bucket.take(1.0);
        assert!(wait > Duration::from_millis(5) && wait <= Duration::from_millis(11), "{wait:?}");
    }

    #[test]
    fn limits_come_from_the_effective_configuration() {
        let entries = basalt_core::config::resolve(
            &[("rbd_qos_iops_limit".into(), "500".into())],
            &[],
            &[
                ("rbd_qos_write_bps_limit".into(), "1048576".into()),
                ("rbd_qos_write_bps_burst".into(), "2097152".into()),
            ],
        );
        let limits = QosLimits::from_config(&entries);
        assert_eq!(limits.iops, (500, 0));
        assert_eq!(limits.write_bps, (1 << 20, 2 << 20));
        assert_eq!(limits.read_iops, (0, 0));
    }

    /// A write done at once skips the throttle's wait, so an image with a write limit never takes that way: its
    /// writes go to a thread that may wait their turn; a read limit changes nothing for writes.
    #[test]
    fn writes_of_a_limited_image_are_never_done_at_once() {
        use basalt_core::{CreateOptions, OpenTarget, PoolName};
        let dir = tempfile::tempdir().expect("temp dir");
        let engine = basalt_engine::Engine::open(dir.path(), Arc::new(basalt_core::SystemClock)).expect("engine");
        let backend = MeteredBackend::new(Arc::new(engine), Arc::new(Registry::default()));
        let pool = PoolName::new("rbd").expect("pool");
        backend.pool_create(&pool).expect("pool create");
        backend.pool_application_enable(&pool, "rbd").expect("tag rbd");
        let spec = ImageSpec::parse("rbd/vm").expect("spec");
        backend.image_create(&spec, &CreateOptions::with_size(1 << 20)).expect("create");
        backend
            .open(&spec, &OpenTarget::Head, "fill")
            .expect("open")
            .write(0, &[1; 8192], Durability::Buffered)
            .expect("fill");
        let level = ConfigLevel::Image(spec.clone());
        let now = |what: &str| {
            let io = backend.open(&spec, &OpenTarget::Head, what).expect("open");
            io.try_write_now(0, &[2; 4096]).is_some()
        };
        assert!(now("unlimited"), "an overwrite of an unlimited image is done at once");
        backend.config_set(&level, "rbd_qos_read_iops_limit", "10").expect("read limit");
        assert!(now("read limit"), "a read limit leaves writes alone");
        for (name, value) in [("rbd_qos_write_iops_limit", "10"), ("rbd_qos_bps_limit", "1048576")] {
            backend.config_set(&level, name, value).expect("write limit");
            assert!(!now(name), "{name}: the write waits for a thread that may block");
            backend.config_remove(&level, name).expect("remove limit");
        }
        assert!(now("limits removed"));
    }

    /// The wrapper passes an async flush on and answers the caller's callback; a backend that refuses gets the
    /// caller's own callback given back, uncalled, so the caller can flush the blocking way and answer it.
    #[test]
    fn async_flushes_pass_through_and_a_refusal_gives_the_callers_callback_back() {
        use basalt_core::{CreateOptions, OpenTarget, PoolName};
        use std::sync::atomic::AtomicUsize;
        let dir = tempfile::tempdir().expect("temp dir");
        let engine: Arc<dyn Backend> =
            Arc::new(basalt_engine::Engine::open(dir.path(), Arc::new(basalt_core::SystemClock)).expect("engine"));
        let backend = MeteredBackend::new(engine.clone(), Arc::new(Registry::default()));
        let pool = PoolName::new("rbd").expect("pool");
        backend.pool_create(&pool).expect("pool create");
        backend.pool_application_enable(&pool, "rbd").expect("tag rbd");
        let spec = ImageSpec::parse("rbd/vm").expect("spec");
        backend.image_create(&spec, &CreateOptions::with_size(1 << 20)).expect("create");
        let io = backend.open(&spec, &OpenTarget::Head, "t").expect("open");
        io.write(0, &[1; 4096], Durability::Buffered).expect("write");
        let (tx, rx) = std::sync::mpsc::channel();
        let handed = io.flush_async(Box::new(move |result| drop(tx.send(result))));
        assert!(handed.is_ok(), "the engine takes async flushes");
        rx.recv_timeout(Duration::from_secs(30)).expect("answered").expect("flushed");
        drop(io);

        // A backend with only the required methods cannot: the default refuses.
        #[derive(Debug)]
        struct Blocking(Box<dyn ImageIo>);
        impl ImageIo for Blocking {
            fn size_bytes(&self) -> u64 {
                self.0.size_bytes()
            }
            fn is_read_only(&self) -> bool {
                self.0.is_read_only()
            }
            fn read(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
                self.0.read(offset, buf)
            }
            fn write(&self, offset: u64, data: &[u8], durability: Durability) -> Result<()> {
                self.0.write(offset, data, durability)
            }
            fn discard(&self, offset: u64, length: u64, durability: Durability) -> Result<()> {
                self.0.discard(offset, length, durability)
            }
            fn write_zeroes(&self, offset: u64, length: u64, mode: ZeroMode, durability: Durability) -> Result<()> {
                self.0.write_zeroes(offset, length, mode, durability)
            }
            fn flush(&self) -> Result<()> {
                self.0.flush()
            }
            fn block_status(&self, offset: u64, length: u64) -> Result<Vec<BlockExtent>> {
                self.0.block_status(offset, length)
            }
        }
        let refusing = MeteredIo {
            inner: Box::new(Blocking(engine.open(&spec, &OpenTarget::Head, "b").expect("open"))),
            stats: Arc::default(),
            registry: Arc::new(Registry::default()),
            backend: engine,
        };
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        let given_back = refusing
            .flush_async(Box::new(move |_| {
                counted.fetch_add(1, Ordering::SeqCst);
            }))
            .expect_err("refused");
        assert_eq!(calls.load(Ordering::SeqCst), 0, "not called on refusal");
        given_back(refusing.flush());
        assert_eq!(calls.load(Ordering::SeqCst), 1, "the callback given back is the caller's");
    }

    #[test]
    fn samples_subtract_and_add() {
        let a = Sample { read_ops: 5, write_bytes: 100, ..Sample::default() };
        let b = Sample { read_ops: 8, write_bytes: 150, ..Sample::default() };
        let d = b.since(&a);
        assert_eq!((d.read_ops, d.write_bytes), (3, 50));
        let mut total = d;
        total.add(&d);
        assert_eq!(total.read_ops, 6);
    }
}
