//! The embedded engine: opening a store, and every control operation of the Backend trait.
//!
//! Metadata changes are single redb transactions; every layer change is logged in the journal before it is
//! acknowledged, and bitmaps reach redb at checkpoints, after the data they point at (see `Store::checkpoint`). Control operations on one image are serialised by its `op` lock, taken before the
//! head lock and before any write transaction, so lock order is: op -> head -> stripe locks -> layer map.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use basalt_core::config::{self, ConfigEntry, ConfigLevel};
use basalt_core::{
    Backend, BlockState, ChildInfo, Clock, CloneRequest, CopyRequest, CreateOptions, DiffExtent, DiffGranularity,
    DuEntry, Error, ErrorKind, Features, ImageInfo, ImageIo, ImageListEntry, ImageName, ImageSpec, ImageStatus,
    Namespace, NamespaceInfo, ObjectOrder, OpenTarget, ParentInfo, PoolInfo, PoolName, PoolNs, Progress, PurgeReport,
    ResizePolicy, Result, ScheduleItem, ScheduleLevel, ScheduledPurge, SnapId, SnapInfo, SnapName, SnapSpec, Striping,
    Timestamp, TrashEntry, TrashForce, TrashPurgeSchedule, TrashSource, TrashStatus, Watcher, bail,
};
use redb::{ReadableDatabase, ReadableTable, WriteTransaction};

use crate::layer::{BlockSt, Layer, View, ViewLayer, merge_ranges, mutex_lock};
use crate::layout::{BLOCK_SHIFT, BLOCK_SIZE, Layout};
use crate::records::{
    self, CHILDREN, CONFIG, IMAGE_NAMES, IMAGES, ImageRec, LayerRec, NAMESPACES, POOLS, ParentRec, PoolRec, SnapRec,
    TRASH, TrashRec, db_err, decode, encode,
};
use crate::state::{Handle, ImageState, Store, describe_watchers, layout_of};
use crate::vfs::{OsVfs, RedbFile, Vfs};

mod purge_schedule;

/// The most objects an image with an object map may have, as in the reference.
const OBJECT_MAP_OBJECTS_MAX: u64 = 256_000_000;
/// Copy and flatten move data in pieces of this size.
const COPY_CHUNK_BYTES: u64 = 1 << 20;

/// The embedded storage engine over a data directory.
#[derive(Debug)]
pub struct Engine {
    pub(crate) store: Arc<Store>,
    clock: Arc<dyn Clock>,
    /// The background checkpoint thread, joined when the engine is dropped.
    checkpointer: Option<std::thread::JoinHandle<()>>,
    /// Leads the journal's syncs for flushes no thread waits for ([`basalt_core::ImageIo::flush_async`]).
    syncer: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Engine {
    /// Stops the background checkpoints and waits for one in progress, so the store closes here (with a final
    /// checkpoint) unless image handles still hold it; the directory's lock goes with the store, never before it.
    fn drop(&mut self) {
        self.store.journal.shutdown();
        if let Some(thread) = self.checkpointer.take() {
            let _ = thread.join();
        }
        if let Some(thread) = self.syncer.take() {
            let _ = thread.join();
        }
    }
}

/// The metadata file's name inside the data directory.
pub const DB_FILE: &str = "basalt.redb";
/// The lock file's name inside the data directory.
pub const LOCK_FILE: &str = "LOCK";
/// The directory of layer files inside the data directory.
pub const LAYERS_DIR: &str = "layers";

/// How a store is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineOptions {
    /// Size of each of the two journal files, preallocated.
    pub journal_file_size: u64,
    /// Background checkpoints: when records waited this long, or the active journal file is half full. `None`
    /// checkpoints only when the journal is full and in control operations, so the sequence of I/O is
    /// deterministic (for the simulated disk's crash tests).
    pub checkpoint_interval: Option<std::time::Duration>,
    /// Memory for metadata, in bytes (`serve --cache-size`): three quarters for block bitmaps in memory (see
    /// `bitcache.rs`), an eighth for the metadata store's page cache, and an eighth for what a checkpoint holds while
    /// it commits. More is read from disk when needed.
    pub metadata_cache_bytes: usize,
    /// Bytes kept in the reserve file for the metadata store, so its commits never fail on a full disk
    /// (docs/FORMAT.md, "A full disk"); 0 keeps none.
    pub metadata_reserve: u64,
    /// Layer files are cut into segment files of `2^segment_shift` bytes (docs/FORMAT.md, "Layer files"). Used
    /// when a store is created; an existing store keeps the size it recorded. From 12 to 62.
    pub segment_shift: u32,
    /// Layer files and sidecars (their segments) kept open at once across every image; past it, the least
    /// recently used are closed and reopened on their next use (`segments.rs`, `OpenFiles`).
    pub open_files: usize,
}

/// The default limit on open layer files: half of what the process may open (the rest is for the journal, the
/// metadata stores, and the connections of whoever uses the engine), at least 64.
pub fn default_open_files() -> usize {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct it is given, which lives on this stack frame.
    let soft = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 { limit.rlim_cur } else { 1024 };
    usize::try_from(soft / 2).unwrap_or(usize::MAX).max(64)
}

/// The default metadata memory: the bitmaps of about 3 TiB of fully written 4 MiB objects stay in memory.
pub const DEFAULT_METADATA_CACHE: usize = 256 << 20;

impl Default for EngineOptions {
    fn default() -> EngineOptions {
        EngineOptions {
            journal_file_size: crate::journal::DEFAULT_FILE_SIZE,
            // The kernel's own writeback age (docs/FORMAT.md, "Checkpoints").
            checkpoint_interval: Some(std::time::Duration::from_secs(30)),
            metadata_cache_bytes: DEFAULT_METADATA_CACHE,
            metadata_reserve: crate::space::DEFAULT_RESERVE,
            segment_shift: crate::segments::DEFAULT_SEGMENT_SHIFT,
            open_files: default_open_files(),
        }
    }
}

impl EngineOptions {
    /// A small journal, no background checkpoints, and segments of 128 KiB (so the small images of tests span
    /// several): for simulated disks.
    pub fn deterministic() -> EngineOptions {
        EngineOptions {
            journal_file_size: 1 << 20,
            checkpoint_interval: None,
            metadata_cache_bytes: 4 << 20,
            metadata_reserve: 256 << 10,
            segment_shift: 17,
            // Few enough that the tests' images keep closing and reopening their segments.
            open_files: 32,
        }
    }
}

impl Engine {
    /// Opens (or creates) a store in `root` on the real file system.
    pub fn open(root: &Path, clock: Arc<dyn Clock>) -> Result<Engine> {
        Engine::open_with_options(Arc::new(OsVfs), root, clock, EngineOptions::default())
    }

    /// Opens (or creates) a store in `root` on the given disk, with [`EngineOptions::deterministic`].
    pub fn open_with_vfs(vfs: Arc<dyn Vfs>, root: &Path, clock: Arc<dyn Clock>) -> Result<Engine> {
        Engine::open_with_options(vfs, root, clock, EngineOptions::deterministic())
    }

    /// Opens (or creates) a store in `root` on the given disk: replays the journal, then starts checkpoints.
    pub fn open_with_options(
        vfs: Arc<dyn Vfs>,
        root: &Path,
        clock: Arc<dyn Clock>,
        options: EngineOptions,
    ) -> Result<Engine> {
        vfs.create_dir_all(root)?;
        let lock = vfs.lock(&root.join(LOCK_FILE)).map_err(|e| Error::busy(e.to_string()))?;
        let layers_dir = root.join(LAYERS_DIR);
        vfs.create_dir_all(&layers_dir)?;
        let reserve = crate::space::MetaReserve::open(vfs.as_ref(), root, options.metadata_reserve)?;
        let db_path = root.join(DB_FILE);
        let db_file = vfs.open(&db_path, true)?;
        vfs.sync_dir(root)?;
        let db_file = RedbFile::new(db_file, Some(reserve.clone()));
        let db_failure = db_file.failure();
        let db = redb::Database::builder()
            // An eighth of the metadata memory, bitmaps three quarters (below): the last eighth is room for what a
            // checkpoint holds while it commits (docs/FORMAT.md, "Known costs").
            .set_cache_size(options.metadata_cache_bytes / 8)
            .create_with_backend(db_file)
            .map_err(db_err)?;
        if !(12..=62).contains(&options.segment_shift) {
            bail!(InvalidArgument, "a segment shift of {} is outside 12..=62", options.segment_shift);
        }
        let segment_shift = records::init(&db, options.segment_shift)?;
        let files = crate::journal::create_files(vfs.as_ref(), root, options.journal_file_size)?;
        let boot = vfs.boot_id();
        let open_files = crate::segments::OpenFiles::new(options.open_files);
        // Replay rewrites the bytes of logged blocks; on a full disk, blocks whose unsynced bytes a power cut lost
        // may need space again, and the metadata reserve gives it (replay is idempotent, so it is run again).
        let replayed = loop {
            match crate::recover::replay(&vfs, &open_files, &db, &files, &layers_dir, segment_shift, &boot) {
                Err(e) if e.kind() == ErrorKind::NoSpace && reserve.release() => {}
                other => break other?,
            }
        };
        for file in &files {
            crate::journal::write_header(file.as_ref(), &boot)?;
            file.sync_data()?;
        }
        // New seqs start past any a journal file could still hold in a torn tail, so no stale record can ever
        // continue a new run of seqs.
        let skip = options.journal_file_size / 60 + 1;
        let journal = Arc::new(crate::journal::Journal::new(
            files,
            options.journal_file_size,
            options.checkpoint_interval,
            replayed.last_seq + skip,
            replayed.applied,
        ));
        journal.set_space(reserve.clone());
        journal.set_direct_io(vfs.direct_io());
        let db = Arc::new(db);
        let integrity = Arc::new(crate::integrity::Integrity::load(&db)?);
        let bitmaps = Arc::new(crate::bitcache::BitmapCache::new(db.clone(), options.metadata_cache_bytes * 3 / 4));
        let store = Arc::new(Store {
            vfs,
            db,
            bitmaps,
            root: root.to_owned(),
            layers_dir,
            segment_shift,
            open_files,
            images: std::sync::Mutex::new(Default::default()),
            next_handle: AtomicU64::new(1),
            failed: std::sync::Mutex::new(None),
            pool_full: std::sync::Mutex::new(Default::default()),
            file_len_ok: std::sync::atomic::AtomicU64::new(0),
            folds: std::sync::atomic::AtomicU64::new(0),
            journal: journal.clone(),
            checkpoint_lock: std::sync::Mutex::new(()),
            db_failure,
            reserve,
            integrity,
            _lock: lock,
        });
        let weak = Arc::downgrade(&store);
        journal.set_checkpointer(Box::new(move || match weak.upgrade() {
            Some(store) => store.checkpoint(|_| Ok(())),
            None => Err(Error::io("the store is closing")),
        }));
        let mut checkpointer = None;
        if options.checkpoint_interval.is_some() {
            let weak = Arc::downgrade(&store);
            let journal = journal.clone();
            let thread = std::thread::Builder::new()
                .name("basalt-checkpoint".into())
                .spawn(move || {
                    use crate::journal::Due;
                    // Idle every quarter second: freed memory goes back soon after reads evicted it (memory bench,
                    // 256 GiB x 11 layers, 64 MiB budget: peak RSS 98.9 MiB with a second, 87.8 with a quarter).
                    let (poll, idle) = (std::time::Duration::from_millis(250), std::time::Duration::from_millis(250));
                    loop {
                        let due = journal.wait_checkpoint_due(poll, idle);
                        if due == Due::Stop {
                            return;
                        }
                        let Some(store) = weak.upgrade() else { return };
                        if due == Due::Checkpoint {
                            // A failure stops the store (its next operations say so); nothing else to tell here.
                            let _ = store.checkpoint(|_| Ok(()));
                        } else if (store.bitmaps.used() > store.bitmaps.budget() || store.bitmaps.dirty_high())
                            && store.journal.pending()
                        {
                            // Bitmaps changed since the last checkpoint cannot be evicted, and small records (discards
                            // above all) can change far more of them than the budget holds before the journal fills
                            // or the interval ends: a checkpoint makes them clean, so evictable, now. It comes once
                            // an eighth of the budget is dirty, so its encoded copy stays that small.
                            let _ = store.checkpoint(|_| Ok(()));
                            store.bitmaps.evict_if_over();
                        } else {
                            // Reads evict bitmaps too, with no checkpoint after them (see `release_freed`).
                            store.bitmaps.release_freed();
                        }
                    }
                })
                .map_err(|e| Error::io(format!("cannot start the checkpoint thread: {e}")))?;
            checkpointer = Some(thread);
        }
        let syncer = journal
            .start_sync_thread()
            .map_err(|e| Error::io(format!("cannot start the journal's sync thread: {e}")))?;
        let engine = Engine { store, clock, checkpointer, syncer: Some(syncer) };
        engine.remove_orphan_layer_files()?;
        engine.count_layer_usage()?;
        // Fill the metadata reserve as far as the disk allows (a full disk leaves it low: new data is refused until
        // space is freed).
        engine.store.reserve.refill(true);
        Ok(engine)
    }

    /// What the metadata reserve holds now: below its size after the disk filled up (docs/FORMAT.md, "A full
    /// disk"). While it is low, data writes that need new blocks fail with ENOSPC.
    pub fn metadata_reserve(&self) -> crate::space::ReserveStatus {
        self.store.reserve.status()
    }

    /// Opens (or creates) another redb database `name` in the store's directory, on the store's disk and with its
    /// metadata reserve: a write or growth of the file that fails with ENOSPC draws on the reserve and is retried,
    /// as for the engine's own metadata store (docs/FORMAT.md, "The metadata reserve"), so a full disk does not
    /// stop it; what it draws is refilled with the engine's. `basalt serve` keeps its own records there
    /// (`server.redb`). The database stays usable after the engine is dropped, but only the open engine's
    /// directory lock keeps other processes away from it.
    pub fn open_database(&self, name: &str) -> Result<redb::Database> {
        let path = self.store.root.join(name);
        let file = self.store.vfs.open(&path, true)?;
        self.store.vfs.sync_dir(&self.store.root)?;
        redb::Database::builder()
            .create_with_backend(RedbFile::new(file, Some(self.store.reserve.clone())))
            .map_err(|e| Error::io(format!("{}: {e}", path.display())))
    }

    /// Bytes of block bitmaps in memory now, the most there were at once, and their budget (three quarters of
    /// [`EngineOptions::metadata_cache_bytes`]). Bitmaps changed since the last checkpoint stay in memory, so
    /// memory can exceed the budget until the next checkpoint.
    pub fn bitmap_memory(&self) -> (usize, usize, usize) {
        (self.store.bitmaps.used(), self.store.bitmaps.peak(), self.store.bitmaps.budget())
    }

    /// Bytes the chain indexes of all open views hold now (charged to the bitmap budget), and the most they may
    /// hold together.
    pub fn chain_index_memory(&self) -> (usize, usize) {
        let bitmaps = &self.store.bitmaps;
        (bitmaps.index_bytes(), bitmaps.budget() / crate::bitcache::INDEX_SHARE)
    }

    /// The journal's counters since the store opened: its syncs, the dirty-object records appended, and the
    /// checkpoints committed.
    pub fn journal_stats(&self) -> crate::journal::JournalStats {
        self.store.journal.stats()
    }

    /// Layer file and sidecar segments open now, and the limit ([`EngineOptions::open_files`]) they are kept
    /// under (the count passes it only while every open one is in use).
    pub fn open_layer_files(&self) -> (usize, usize) {
        (self.store.open_files.open_count(), self.store.open_files.limit())
    }

    /// Counts, once, the data of every layer that has no usage entry (a store from before usage counts, or layers
    /// just replayed), so listing pools never has to read their bitmaps. Runs at open, before any write.
    fn count_layer_usage(&self) -> Result<()> {
        let txn = self.write_txn()?;
        {
            let blocks = txn.open_table(records::BLOCKS).map_err(db_err)?;
            let mut usage = txn.open_table(records::LAYER_USAGE).map_err(db_err)?;
            // One lookup per layer: a layer already counted is skipped whole.
            let mut from = 0u64;
            loop {
                let next = blocks.range((from, 0u64)..).map_err(db_err)?.next();
                let Some(entry) = next else { break };
                let layer = entry.map_err(db_err)?.0.value().0;
                if usage.get(layer).map_err(db_err)?.is_none() {
                    let mut counts = (0u64, 0u64);
                    for bits in blocks.range((layer, 0u64)..=(layer, u64::MAX)).map_err(db_err)? {
                        let (_, value) = bits.map_err(db_err)?;
                        let half = value.value().len() / 2;
                        let data_blocks: u64 = value.value()[..half].iter().map(|b| u64::from(b.count_ones())).sum();
                        counts.0 += data_blocks;
                        counts.1 += u64::from(data_blocks > 0);
                    }
                    usage.insert(layer, counts).map_err(db_err)?;
                }
                let Some(after) = layer.checked_add(1) else { break };
                from = after;
            }
        }
        txn.commit().map_err(db_err)
    }

    /// Removes layer files that no record refers to: left by an operation a crash interrupted.
    fn remove_orphan_layer_files(&self) -> Result<()> {
        let referenced = self.referenced_layers()?;
        let mut removed = Vec::new();
        for name in self.store.vfs.list(&self.store.layers_dir)? {
            match crate::segments::layer_id_of(&name) {
                Some(id) if !referenced.contains(&id) && !removed.contains(&id) => removed.push(id),
                _ => {}
            }
        }
        self.store.remove_layer_files(&removed);
        self.remove_orphan_bitmaps(&referenced)
    }

    /// Deletes the bitmaps of layers no image refers to: those of a copy that failed after a checkpoint had stored
    /// some of them. Layer ids are never reused, so nothing can come to refer to them later.
    fn remove_orphan_bitmaps(&self, referenced: &std::collections::BTreeSet<u64>) -> Result<()> {
        let mut orphans = Vec::new();
        {
            let txn = self.read_txn()?;
            let blocks = txn.open_table(records::BLOCKS).map_err(db_err)?;
            // One lookup per layer, not per bitmap: jump past each layer found.
            let mut from = 0u64;
            loop {
                let next = blocks.range((from, 0u64)..).map_err(db_err)?.next();
                let Some(entry) = next else { break };
                let layer = entry.map_err(db_err)?.0.value().0;
                if !referenced.contains(&layer) {
                    orphans.push(layer);
                }
                let Some(after) = layer.checked_add(1) else { break };
                from = after;
            }
        }
        if orphans.is_empty() {
            return Ok(());
        }
        self.store.checkpoint(|txn| Self::delete_layer_bits(txn, &orphans))
    }

    /// Cleans up the files of a copy that failed. When the publishing commit itself failed with an i/o error, it
    /// may still have reached the disk, so the files stay (the next open removes them if nothing refers to them).
    /// After any other failure of that commit (a name taken meanwhile), and after any failure before it (of the
    /// copying: cancellation, a read error, a full disk), nothing was published and they go now: no image holds
    /// them, so no removal could give their space back before a restart.
    fn discard_copy_files(&self, err: &Error, publishing: bool, ids: &[u64]) {
        if !publishing || !matches!(err.kind(), ErrorKind::Io | ErrorKind::NoSpace) {
            // Checkpoints may have stored bitmaps of these layers already: they go with the files.
            self.store.journal.forget_layers(ids);
            let _ = self.store.checkpoint(|txn| Self::delete_layer_bits(txn, ids));
            self.store.remove_layer_files(ids);
        }
    }

    fn referenced_layers(&self) -> Result<std::collections::BTreeSet<u64>> {
        let txn = self.store.db.begin_read().map_err(db_err)?;
        let images = txn.open_table(IMAGES).map_err(db_err)?;
        let mut ids = std::collections::BTreeSet::new();
        for entry in images.iter().map_err(db_err)? {
            let (_, value) = entry.map_err(db_err)?;
            let rec: ImageRec = decode(value.value())?;
            ids.extend(rec.layers.iter().map(|l| l.id));
        }
        Ok(ids)
    }

    fn now(&self) -> Timestamp {
        self.clock.now()
    }

    // --- lookups -------------------------------------------------------------------------------------------------

    fn write_txn(&self) -> Result<WriteTransaction> {
        self.store.check_healthy()?;
        self.store.db.begin_write().map_err(db_err)
    }

    fn read_txn(&self) -> Result<redb::ReadTransaction> {
        self.store.db.begin_read().map_err(db_err)
    }

    /// Returns the id of a live image by name.
    pub(crate) fn image_id(&self, spec: &ImageSpec) -> Result<String> {
        let txn = self.read_txn()?;
        let names = txn.open_table(IMAGE_NAMES).map_err(db_err)?;
        let key = (spec.pool().as_str(), spec.namespace().as_str(), spec.image.as_str());
        match names.get(key).map_err(db_err)? {
            Some(id) => Ok(id.value().to_owned()),
            None => {
                self.check_location(&txn, &basalt_core::location_of(spec))?;
                Err(Error::not_found(format!("image '{spec}' does not exist")))
            }
        }
    }

    /// Checks that a pool and namespace exist (ENOENT otherwise).
    fn check_location(&self, txn: &redb::ReadTransaction, location: &PoolNs) -> Result<()> {
        let pools = txn.open_table(POOLS).map_err(db_err)?;
        if pools.get(location.pool.as_str()).map_err(db_err)?.is_none() {
            bail!(NotFound, "pool '{}' does not exist", location.pool);
        }
        if !location.namespace.is_default() {
            let namespaces = txn.open_table(NAMESPACES).map_err(db_err)?;
            let key = (location.pool.as_str(), location.namespace.as_str());
            if namespaces.get(key).map_err(db_err)?.is_none() {
                bail!(NotFound, "namespace '{location}' does not exist: create it first");
            }
        }
        Ok(())
    }

    /// Like `check_location`, inside a write transaction, and also checks the pool is tagged for rbd.
    fn check_image_location(txn: &WriteTransaction, location: &PoolNs) -> Result<()> {
        let pools = txn.open_table(POOLS).map_err(db_err)?;
        let Some(pool) = pools.get(location.pool.as_str()).map_err(db_err)? else {
            bail!(NotFound, "pool '{}' does not exist", location.pool);
        };
        let pool: PoolRec = decode(pool.value())?;
        if !pool.applications.iter().any(|a| a == "rbd") {
            bail!(
                InvalidArgument,
                "pool '{}' is not tagged for rbd: enable the rbd application on it first (pool application enable {} rbd)",
                location.pool,
                location.pool
            );
        }
        if !location.namespace.is_default() {
            let namespaces = txn.open_table(NAMESPACES).map_err(db_err)?;
            let key = (location.pool.as_str(), location.namespace.as_str());
            if namespaces.get(key).map_err(db_err)?.is_none() {
                bail!(NotFound, "namespace '{location}' does not exist: create it first");
            }
        }
        Ok(())
    }

    fn name_taken(txn: &WriteTransaction, spec: &ImageSpec) -> Result<bool> {
        let names = txn.open_table(IMAGE_NAMES).map_err(db_err)?;
        let key = (spec.pool().as_str(), spec.namespace().as_str(), spec.image.as_str());
        Ok(names.get(key).map_err(db_err)?.is_some())
    }

    fn get_rec(txn: &WriteTransaction, id: &str) -> Result<ImageRec> {
        let images = txn.open_table(IMAGES).map_err(db_err)?;
        records::get_image(&images, id)?.ok_or_else(crate::state::gone)
    }

    fn put_rec(txn: &WriteTransaction, rec: &ImageRec) -> Result<()> {
        let mut images = txn.open_table(IMAGES).map_err(db_err)?;
        images.insert(rec.id.as_str(), encode(rec)?.as_slice()).map_err(db_err)?;
        Ok(())
    }

    /// Runs `change` on an image's record under its op lock and commits it with the image's dirty bitmaps; then
    /// rebuilds the in-memory head. `change` returns layers to delete after the commit.
    fn update_image<R>(
        &self,
        state: &ImageState,
        change: impl FnOnce(&WriteTransaction, &mut ImageRec) -> Result<(R, Vec<u64>)>,
    ) -> Result<R> {
        let (result, dead) = self.update_image_locked(state, &mut state.head_write(), change)?;
        self.store.remove_layer_files(&dead);
        Ok(result)
    }

    /// [`Engine::update_image`] for a caller that already holds the head lock (to change data under it first).
    /// Returns the layers it deleted, whose files the caller removes once it released the head lock: removing a
    /// large file takes time (its extents are freed), and no I/O of the image needs to wait for it.
    fn update_image_locked<R>(
        &self,
        state: &ImageState,
        head: &mut crate::state::Head,
        change: impl FnOnce(&WriteTransaction, &mut ImageRec) -> Result<(R, Vec<u64>)>,
    ) -> Result<(R, Vec<u64>)> {
        let mut outcome = None;
        let mut new_rec = None;
        state.persist(|txn| {
            let mut rec = Self::get_rec(txn, &state.id)?;
            let (result, dead_layers) = change(txn, &mut rec)?;
            Self::delete_layer_bits(txn, &dead_layers)?;
            rec.layers.retain(|l| !dead_layers.contains(&l.id));
            Self::put_rec(txn, &rec)?;
            outcome = Some((result, dead_layers));
            new_rec = Some(rec);
            Ok(())
        })?;
        let (Some((result, dead_layers)), Some(rec)) = (outcome, new_rec) else {
            return Err(Error::io("an image update committed without a result"));
        };
        state.drop_layers(&dead_layers);
        state.refresh(head, &rec)?;
        Ok((result, dead_layers))
    }

    /// Marks the head's own blocks at image offsets `from..until` (a block boundary up to the end, or `until`)
    /// absent, a run of neighbouring blocks of an object per journal record, and returns the file ranges they held
    /// as `(offset, length)`, sorted and merged.
    fn clear_head_past(
        &self,
        state: &ImageState,
        layout: &crate::layout::Layout,
        from: u64,
        until: Option<u64>,
    ) -> Result<Vec<(u64, u64)>> {
        let head = state.head_read();
        let top = head.view.chain[0].layer.clone();
        let mut cleared = Vec::new();
        for object_no in top.objects() {
            let mut mark = |(first, last): (u64, u64)| -> Result<()> {
                let file_off = layout.file_offset(object_no, first << BLOCK_SHIFT);
                top.mark_blocks(object_no, first, last, BlockSt::Absent, file_off)?;
                cleared.push((file_off, (last - first + 1) * BLOCK_SIZE));
                Ok(())
            };
            let mut run: Option<(u64, u64)> = None;
            for (blk, _) in top.present_blocks(object_no)? {
                let image_off = layout.unmap(object_no, blk << BLOCK_SHIFT);
                if image_off >= from && until.is_none_or(|end| image_off < end) {
                    match run {
                        Some((first, last)) if last + 1 == blk => run = Some((first, blk)),
                        _ => {
                            if let Some(done) = run.replace((blk, blk)) {
                                mark(done)?;
                            }
                        }
                    }
                } else if let Some(done) = run.take() {
                    mark(done)?;
                }
            }
            if let Some(done) = run {
                mark(done)?;
            }
        }
        Ok(crate::layer::merge_ranges(cleared))
    }

    /// Refuses a size whose layer file segments the file system cannot hold (object `n` lies at `n × object
    /// size`, in segments of `2^segment_shift` bytes): only a file system whose largest file is smaller than a
    /// segment refuses anything.
    fn check_file_len(&self, layout: &crate::layout::Layout, size_bytes: u64) -> Result<()> {
        use std::sync::atomic::Ordering;
        let len =
            layout.num_objects(size_bytes).saturating_mul(layout.object_size()).min(1 << self.store.segment_shift);
        if len <= self.store.file_len_ok.load(Ordering::Relaxed) {
            return Ok(());
        }
        if self.store.vfs.holds_file_of(&self.store.layers_dir, len)? {
            self.store.file_len_ok.fetch_max(len, Ordering::Relaxed);
            return Ok(());
        }
        bail!(
            InvalidArgument,
            "an image of {size_bytes} bytes needs layer file segments of {len} bytes, more than the file system \
             under the data directory holds in one file: use a smaller size, or a data directory on a file system \
             with larger files (ext4 with 4 KiB blocks, XFS, btrfs)"
        );
    }

    fn delete_layer_bits(txn: &WriteTransaction, layers: &[u64]) -> Result<()> {
        let mut blocks = txn.open_table(records::BLOCKS).map_err(db_err)?;
        let mut usage = txn.open_table(records::LAYER_USAGE).map_err(db_err)?;
        for id in layers {
            blocks.retain_in((*id, 0u64)..=(*id, u64::MAX), |_, _| false).map_err(db_err)?;
            usage.remove(*id).map_err(db_err)?;
        }
        Ok(())
    }

    /// Looks up a live image by name and returns its in-memory state and id.
    fn image_state(&self, spec: &ImageSpec) -> Result<(Arc<ImageState>, String)> {
        let id = self.image_id(spec)?;
        let state = self.store.state(&id)?;
        Ok((state, id))
    }

    fn new_layer(&self, txn: &WriteTransaction, below: Option<u64>, min_size: u64) -> Result<LayerRec> {
        let id = records::next_id(txn)?;
        self.store.create_layer_file(id)?;
        Ok(LayerRec { id, below, min_size })
    }

    fn resolve_features(requested: Option<Features>, layout_striped: bool, data_pool: bool) -> Result<Features> {
        let mut features = requested.unwrap_or(Features::DEFAULT);
        Features::from_bits(features.bits())?;
        if features.contains(Features::OPERATIONS) || features.contains(Features::MIGRATING) {
            bail!(InvalidArgument, "the operations and migrating features are set by the system, not by users");
        }
        // As librbd does: object-map brings fast-diff along, and fast-diff without object-map is dropped.
        if features.contains(Features::OBJECT_MAP) {
            features = features.union(Features::FAST_DIFF);
        } else {
            features = features.difference(Features::FAST_DIFF);
        }
        features.check_dependencies()?;
        if features.contains(Features::JOURNALING) {
            bail!(NotSupported, "the journaling feature is not supported by the embedded engine: leave it off");
        }
        features = features.difference(Features::STRIPING.union(Features::DATA_POOL));
        if layout_striped {
            features = features.union(Features::STRIPING);
        }
        if data_pool {
            features = features.union(Features::DATA_POOL);
        }
        Ok(features)
    }

    fn resolve_layout(order: Option<ObjectOrder>, striping: Option<(u64, u64)>) -> Result<Layout> {
        let order = order.unwrap_or_default();
        let striping = match striping {
            Some((unit, count)) => Striping::new(unit, count, order)?,
            None => Striping::none(order),
        };
        Ok(Layout { order, striping })
    }

    /// Builds the record of a new image with one empty layer.
    #[allow(clippy::too_many_arguments)]
    fn new_image_rec(
        &self,
        txn: &WriteTransaction,
        spec: &ImageSpec,
        size: u64,
        layout: Layout,
        features: Features,
        data_pool: Option<String>,
        parent: Option<ParentRec>,
    ) -> Result<ImageRec> {
        basalt_core::check_size(size)?;
        self.check_file_len(&layout, size)?;
        if features.contains(Features::OBJECT_MAP) && layout.num_objects(size) > OBJECT_MAP_OBJECTS_MAX {
            bail!(
                InvalidArgument,
                "image size {size} needs {} objects, more than the object map supports ({OBJECT_MAP_OBJECTS_MAX}): use a larger object size",
                layout.num_objects(size)
            );
        }
        Self::check_image_location(txn, &basalt_core::location_of(spec))?;
        if Self::name_taken(txn, spec)? {
            bail!(AlreadyExists, "image '{spec}' already exists");
        }
        let id = format!("{:012x}", records::next_id(txn)?);
        let layer = self.new_layer(txn, None, size)?;
        let now = self.now().secs();
        Ok(ImageRec {
            id,
            name: spec.image.as_str().to_owned(),
            pool: spec.pool().as_str().to_owned(),
            namespace: spec.namespace().as_str().to_owned(),
            size,
            order: layout.order.get(),
            features: features.bits(),
            stripe_unit: layout.striping.unit_bytes,
            stripe_count: layout.striping.count,
            data_pool,
            created: now,
            modified: now,
            head_layer: layer.id,
            layers: vec![layer],
            snaps: Vec::new(),
            next_snap_id: 1,
            snap_limit: None,
            parent,
            metadata: BTreeMap::new(),
            config: BTreeMap::new(),
            trash: None,
        })
    }

    fn insert_new_image(txn: &WriteTransaction, rec: &ImageRec) -> Result<()> {
        Self::put_rec(txn, rec)?;
        let mut names = txn.open_table(IMAGE_NAMES).map_err(db_err)?;
        names
            .insert((rec.pool.as_str(), rec.namespace.as_str(), rec.name.as_str()), rec.id.as_str())
            .map_err(db_err)?;
        if let Some(parent) = &rec.parent {
            let mut children = txn.open_table(CHILDREN).map_err(db_err)?;
            children.insert((parent.image_id.as_str(), parent.snap_id, rec.id.as_str()), ()).map_err(db_err)?;
        }
        Ok(())
    }

    fn spec_of(rec: &ImageRec) -> Result<ImageSpec> {
        Ok(ImageSpec::new(PoolName::new(&rec.pool)?, Namespace::parse(&rec.namespace)?, ImageName::new(&rec.name)?))
    }

    fn children_of(&self, image_id: &str, snap_id: Option<u64>) -> Result<Vec<ChildInfo>> {
        let txn = self.read_txn()?;
        let children = txn.open_table(CHILDREN).map_err(db_err)?;
        let images = txn.open_table(IMAGES).map_err(db_err)?;
        let (lo, hi) = match snap_id {
            Some(s) => (s, s),
            None => (0, u64::MAX),
        };
        let mut out = Vec::new();
        for entry in children.range((image_id, lo, "")..).map_err(db_err)? {
            let (key, _) = entry.map_err(db_err)?;
            let (parent, snap, child) = key.value();
            if parent != image_id || snap > hi {
                break;
            }
            if let Some(rec) = records::get_image(&images, child)? {
                out.push(ChildInfo {
                    pool: PoolName::new(&rec.pool)?,
                    namespace: Namespace::parse(&rec.namespace)?,
                    image: ImageName::new(&rec.name)?,
                    image_id: rec.id.clone(),
                    in_trash: rec.trash.is_some(),
                });
            }
        }
        Ok(out)
    }

    fn snap_view(&self, state: &ImageState, rec: &ImageRec, snap: &SnapRec) -> Result<View> {
        state.build_view(rec, snap.layer, snap.size)
    }

    fn effective_overlap(rec: &ImageRec, top: u64) -> Result<Option<u64>> {
        let Some(parent) = &rec.parent else { return Ok(None) };
        let mut overlap = parent.overlap;
        for id in rec.chain(top)? {
            overlap = overlap.min(rec.layer(id)?.min_size);
        }
        Ok(Some(overlap))
    }

    fn image_info_of(&self, rec: &ImageRec, snap: Option<&SnapRec>) -> Result<ImageInfo> {
        let layout = layout_of(rec)?;
        let (size, top) = match snap {
            Some(s) => (s.size, s.layer),
            None => (rec.size, rec.head_layer),
        };
        let parent = match &rec.parent {
            Some(p) => {
                let prec = self.store.read_image(&p.image_id)?;
                let psnap = prec.snap_by_id(p.snap_id).ok_or_else(|| {
                    Error::io(format!("the parent snapshot of image '{}' is missing: run fsck", rec.spec_text()))
                })?;
                Some(ParentInfo {
                    pool: PoolName::new(&prec.pool)?,
                    namespace: Namespace::parse(&prec.namespace)?,
                    image: ImageName::new(&prec.name)?,
                    image_id: prec.id.clone(),
                    snap: SnapName::new(&psnap.name)?,
                    snap_id: SnapId(psnap.id),
                    overlap_bytes: Self::effective_overlap(rec, top)?.unwrap_or(0).min(size),
                    in_trash: prec.trash.is_some(),
                })
            }
            None => None,
        };
        let watchers = self.store.loaded_state(&rec.id).map(|s| s.watchers()).unwrap_or_default();
        let checksum_errors = self.store.integrity.errors_of(&rec.id);
        Ok(ImageInfo {
            id: rec.id.clone(),
            name: ImageName::new(&rec.name)?,
            pool: PoolName::new(&rec.pool)?,
            namespace: Namespace::parse(&rec.namespace)?,
            size_bytes: size,
            order: layout.order,
            num_objs: layout.num_objects(size),
            block_name_prefix: format!("rbd_data.{}", rec.id),
            features: Features::from_bits(rec.features)?,
            striping: layout.striping,
            data_pool: rec.data_pool.as_deref().map(PoolName::new).transpose()?,
            parent,
            created: Timestamp(rec.created),
            modified: Timestamp(rec.modified),
            snapshot_count: rec.snaps.len() as u64,
            snap_limit: rec.snap_limit,
            status: if checksum_errors > 0 { ImageStatus::Degraded } else { ImageStatus::Ok },
            status_reason: (checksum_errors > 0).then(|| {
                format!("{checksum_errors} checksum error(s): data on disk is damaged (basalt scrub lists the blocks)")
            }),
            watchers,
        })
    }

    fn refuse_if_attached(state: &ImageState, what: &str) -> Result<()> {
        let watchers = state.watchers();
        if !watchers.is_empty() {
            bail!(
                Busy,
                "image is in use by {} client(s) ({}): detach it before {what}",
                watchers.len(),
                describe_watchers(&watchers)
            );
        }
        Ok(())
    }

    /// Refuses removal of an image whose snapshots have clones, or that has snapshots (as the reference does, in the
    /// trash too: force only overrides the deferment).
    fn check_removable(&self, rec: &ImageRec) -> Result<()> {
        let children = self.children_of(&rec.id, None)?;
        if !children.is_empty() {
            let names: Vec<String> = children.iter().map(|c| format!("{}/{}", c.pool, c.image)).collect();
            bail!(
                NotEmpty,
                "image has snapshots with linked clones ({}): flatten or remove the clones first",
                names.join(", ")
            );
        }
        if !rec.snaps.is_empty() {
            bail!(
                NotEmpty,
                "image has snapshots - remove them first (snap purge; unprotect protected ones) before removing the image"
            );
        }
        Ok(())
    }

    /// Deletes an image's records and data; the caller checked it may go.
    fn delete_image(&self, state: &ImageState, rec: &ImageRec) -> Result<()> {
        let layers: Vec<u64> = rec.layers.iter().map(|l| l.id).collect();
        let _head = state.head_write();
        // Through a checkpoint, so no later one writes bitmaps of these layers back.
        self.store.journal.forget_layers(&layers);
        self.store.integrity.forget(&rec.id);
        self.store.checkpoint(|txn| {
            {
                let mut images = txn.open_table(IMAGES).map_err(db_err)?;
                images.remove(rec.id.as_str()).map_err(db_err)?;
                if rec.trash.is_none() {
                    // A trashed image has no name entry; another image may have taken its name since.
                    let mut names = txn.open_table(IMAGE_NAMES).map_err(db_err)?;
                    names.remove((rec.pool.as_str(), rec.namespace.as_str(), rec.name.as_str())).map_err(db_err)?;
                }
                let mut trash = txn.open_table(TRASH).map_err(db_err)?;
                trash.remove((rec.pool.as_str(), rec.namespace.as_str(), rec.id.as_str())).map_err(db_err)?;
                if let Some(parent) = &rec.parent {
                    let mut children = txn.open_table(CHILDREN).map_err(db_err)?;
                    children.remove((parent.image_id.as_str(), parent.snap_id, rec.id.as_str())).map_err(db_err)?;
                }
            }
            Self::delete_layer_bits(txn, &layers)?;
            Ok(())
        })?;
        state.drop_layers(&layers);
        self.store.forget(&rec.id);
        self.store.remove_layer_files(&layers);
        Ok(())
    }

    /// Copies every data extent of the source into the top layer of `dest`, reporting progress. The source is
    /// read through `view_of` (of `src_state`), built again whenever views built before may read differently: a
    /// flatten of an image the source is cloned from, after which the snapshot it read through may be removed and
    /// folded, or any fold ([`ImageState::generation`], `Store::folds`). Each chunk is read in full, then checked
    /// against both counters, and read again through a new view if either moved: a fold that changed what the
    /// chunk read raised them before it changed anything.
    fn copy_data(
        &self,
        src_state: &ImageState,
        view_of: &dyn Fn() -> Result<View>,
        dest: &View,
        dest_state: &ImageState,
        progress: &Progress,
    ) -> Result<()> {
        use std::sync::atomic::Ordering;
        let built_in = || (src_state.generation.load(Ordering::SeqCst), self.store.folds.load(Ordering::SeqCst));
        let mut built = built_in();
        let mut src = view_of()?;
        let ranges = allocated_ranges(&src)?;
        let total: u64 = ranges.iter().map(|(_, len)| len).sum();
        let mut done = 0u64;
        progress.set(0, total);
        let mut buf = vec![0u8; COPY_CHUNK_BYTES as usize];
        for (start, len) in ranges {
            let end = (start + len).min(src.size).min(dest.size);
            let mut at = start;
            while at < end {
                if progress.is_cancelled() {
                    bail!(Cancelled, "the operation was cancelled");
                }
                let n = (end - at).min(COPY_CHUNK_BYTES);
                let extents = loop {
                    if built_in() != built {
                        built = built_in();
                        src = view_of()?;
                    }
                    let extents = src.block_status(at, n)?;
                    for extent in extents.iter().filter(|e| e.state == BlockState::Data) {
                        let from = (extent.offset - at) as usize;
                        src.read(extent.offset, &mut buf[from..from + extent.length as usize])?;
                    }
                    if built_in() == built {
                        break extents;
                    }
                };
                for extent in extents.iter().filter(|e| e.state == BlockState::Data) {
                    let from = (extent.offset - at) as usize;
                    dest.write(&dest_state.locks, extent.offset, &buf[from..from + extent.length as usize])?;
                }
                at += n;
                done += n;
                progress.set(done.min(total), total);
            }
        }
        progress.set(total, total);
        Ok(())
    }

    /// Removes the expired trash entries of a pool, or of one namespace of it (`rbd trash purge` in a namespace);
    /// entries that cannot be removed (snapshots, clones) are skipped and reported.
    pub(crate) fn purge_expired(
        &self,
        pool: &PoolName,
        namespace: Option<&Namespace>,
        expired_before: Timestamp,
        progress: &Progress,
    ) -> Result<PurgeReport> {
        self.pool_exists(pool)?;
        let first_ns = namespace.map_or("", Namespace::as_str);
        let mut pending: Vec<ImageRec> = {
            let txn = self.read_txn()?;
            let trash = txn.open_table(TRASH).map_err(db_err)?;
            let images = txn.open_table(IMAGES).map_err(db_err)?;
            let mut out = Vec::new();
            for entry in trash.range((pool.as_str(), first_ns, "")..).map_err(db_err)? {
                let (key, _) = entry.map_err(db_err)?;
                let (p, ns, id) = key.value();
                if p != pool.as_str() || namespace.is_some_and(|n| n.as_str() != ns) {
                    break;
                }
                if let Some(rec) = records::get_image(&images, id)?
                    && rec.trash.as_ref().is_some_and(|t| t.deferment_end <= expired_before.secs())
                {
                    out.push(rec);
                }
            }
            out
        };
        let total = pending.len() as u64;
        let mut report = PurgeReport::default();
        progress.set(0, total);
        // Clones before their parents: repeat while a round removes something.
        loop {
            let mut failures = Vec::new();
            let before = pending.len();
            for rec in std::mem::take(&mut pending) {
                match self.remove_trashed(&rec) {
                    Ok(()) => report.removed.push(rec.id.clone()),
                    Err(err) => failures.push((rec, err)),
                }
                progress.set(report.removed.len() as u64, total);
            }
            if failures.is_empty() || failures.len() == before {
                report.skipped = failures.into_iter().map(|(rec, err)| (rec.id, err)).collect();
                break;
            }
            pending = failures.into_iter().map(|(rec, _)| rec).collect();
        }
        Ok(report)
    }

    fn pool_exists(&self, pool: &PoolName) -> Result<PoolRec> {
        let txn = self.read_txn()?;
        let pools = txn.open_table(POOLS).map_err(db_err)?;
        match pools.get(pool.as_str()).map_err(db_err)? {
            Some(v) => decode(v.value()),
            None => Err(Error::not_found(format!("pool '{pool}' does not exist"))),
        }
    }

    fn trash_rec_in(&self, location: &PoolNs, id: &str) -> Result<ImageRec> {
        let rec = self
            .store
            .read_image(id)
            .map_err(|_| Error::not_found(format!("trash entry '{id}' does not exist in '{location}'")))?;
        if rec.trash.is_none() || rec.pool != location.pool.as_str() || rec.namespace != location.namespace.as_str() {
            bail!(NotFound, "trash entry '{id}' does not exist in '{location}'");
        }
        Ok(rec)
    }

    fn config_scope(level: &ConfigLevel) -> String {
        match level {
            ConfigLevel::Global => String::new(),
            ConfigLevel::Pool(pool) => format!("pool:{pool}"),
            ConfigLevel::Image(_) => String::from("image"),
        }
    }

    fn config_overrides(&self, scope: &str) -> Result<Vec<(String, String)>> {
        let txn = self.read_txn()?;
        let table = txn.open_table(CONFIG).map_err(db_err)?;
        let mut out = Vec::new();
        for entry in table.range((scope, "")..).map_err(db_err)? {
            let (key, value) = entry.map_err(db_err)?;
            let (s, name) = key.value();
            if s != scope {
                break;
            }
            out.push((name.to_owned(), value.value().to_owned()));
        }
        Ok(out)
    }

    fn diff_views(&self, from: Option<&View>, to: &View, granularity: DiffGranularity) -> Result<Vec<DiffExtent>> {
        diff_views(from, to, granularity)
    }

    /// Removes a trash entry (with its snapshots) if nothing depends on it.
    fn remove_trashed(&self, rec: &ImageRec) -> Result<()> {
        let state = self.store.state(&rec.id)?;
        let _op = mutex_lock(&state.op);
        let rec = self.store.read_image(&rec.id)?;
        Self::refuse_if_attached(&state, "removing it")?;
        self.check_removable(&rec)?;
        self.delete_image(&state, &rec)
    }
}

/// Image ranges that may hold data in a view: every block any layer has state for, plus the parent's ranges
/// within the overlap. A superset; sorted and merged (see [`View::allocated_in`]).
pub(crate) fn allocated_ranges(view: &View) -> Result<Vec<(u64, u64)>> {
    view.allocated_in(0, view.size)
}

/// Counts the entries of a `(pool, namespace, ...)`-keyed table that lie in one pool and namespace.
fn count_in_location<V: redb::Value + 'static>(
    table: &impl ReadableTable<(&'static str, &'static str, &'static str), V>,
    pool: &str,
    namespace: &str,
) -> Result<u64> {
    let mut count = 0;
    for entry in table.range((pool, namespace, "")..).map_err(db_err)? {
        let (key, _) = entry.map_err(db_err)?;
        let (p, ns, _) = key.value();
        if p != pool || ns != namespace {
            break;
        }
        count += 1;
    }
    Ok(count)
}

/// A layer no snapshot owns (and not the head) with exactly one layer reading through it, and that layer.
fn mergeable_pair(rec: &ImageRec) -> Option<(LayerRec, LayerRec)> {
    rec.layers.iter().find_map(|lower| {
        let owned = lower.id == rec.head_layer || rec.snaps.iter().any(|s| s.layer == lower.id);
        let mut children = rec.layers.iter().filter(|l| l.below == Some(lower.id));
        match (owned, children.next(), children.next()) {
            (false, Some(upper), None) => Some((lower.clone(), upper.clone())),
            _ => None,
        }
    })
}

/// Image ranges outside which two views of one image read the same blocks, sorted and merged.
///
/// Views of one image share the bottom of their chains: a snapshot's view is the previous snapshot's view with the
/// layers written since on top. Below the longest common bottom part (the same layers with the same `min_size`, over
/// the same parent), a block resolves alike in both views, so it can differ only where
/// - a layer above the common part has state for it;
/// - a layer above the common part hides it by a smaller `min_size`, in the other view (any block of that view at
///   or past the smallest such `min_size`);
/// - it lies past the end of `from` (it is new in `to`).
///
/// The cost follows the blocks of the layers above the common part, not of the whole chain: `du` over N snapshots
/// looks at each layer about twice instead of N times.
fn diff_candidates(from: &View, to: &View) -> Result<Vec<(u64, u64)>> {
    let same_base = match (&from.base, &to.base) {
        (None, None) => true,
        // Two views of one parent snapshot (same top layer, same size) read the same: a snapshot never changes.
        (Some(a), Some(b)) => {
            a.overlap == b.overlap
                && a.view.size == b.view.size
                && a.view.chain.first().map(|vl| vl.layer.id) == b.view.chain.first().map(|vl| vl.layer.id)
        }
        _ => false,
    };
    let common = if same_base {
        from.chain
            .iter()
            .rev()
            .zip(to.chain.iter().rev())
            .take_while(|(a, b)| a.layer.id == b.layer.id && a.min_size == b.min_size)
            .count()
    } else {
        0
    };
    if common == 0 {
        let mut all = allocated_ranges(to)?;
        all.extend(allocated_ranges(from)?);
        return Ok(merge_ranges(all));
    }
    let (from_top, to_top) = (&from.chain[..from.chain.len() - common], &to.chain[..to.chain.len() - common]);
    let own = |view: &View, top: &[ViewLayer]| {
        View::new(view.layout, view.size, top.to_vec(), None).allocated_in(0, view.size)
    };
    let hidden_from = |top: &[ViewLayer]| top.iter().map(|vl| vl.min_size).min().unwrap_or(u64::MAX);
    let mut ranges = own(to, to_top)?;
    ranges.extend(own(from, from_top)?);
    ranges.extend(from.allocated_in(hidden_from(to_top), from.size)?);
    ranges.extend(to.allocated_in(hidden_from(from_top), to.size)?);
    ranges.extend(to.allocated_in(from.size, to.size)?);
    Ok(merge_ranges(ranges))
}

/// Extents whose content differs between two views of the same image (or from nothing), without reading data.
fn diff_views(from: Option<&View>, to: &View, granularity: DiffGranularity) -> Result<Vec<DiffExtent>> {
    use crate::layer::Source;
    let layout = to.layout;
    let layer_id = |view: &View, src: Source| match src {
        Source::Layer(i) => Some(view.chain[i].layer.id),
        _ => None,
    };
    let candidates = match from {
        None => allocated_ranges(to)?,
        Some(from) => diff_candidates(from, to)?,
    };
    let mut extents: Vec<DiffExtent> = Vec::new();
    for (start, len) in candidates {
        let end = (start + len).min(to.size);
        if start >= end {
            continue;
        }
        for piece in layout.pieces(start, end - start) {
            let base_data = |view: &View| -> Result<bool> {
                Ok(match &view.base {
                    Some(base) => base.state_at(piece.image_offset)? == BlockState::Data,
                    None => false,
                })
            };
            let to_src = to.resolve(0, &piece)?;
            let to_data = match to_src {
                Source::Layer(_) => true,
                Source::Zero => false,
                Source::Base => base_data(to)?,
            };
            let changed = match from {
                None => to_data,
                Some(from) if piece.image_offset >= from.size => to_data,
                Some(from) => {
                    let from_src = from.resolve(0, &piece)?;
                    match (from_src, to_src) {
                        (Source::Layer(_), Source::Layer(_)) => layer_id(from, from_src) != layer_id(to, to_src),
                        (Source::Base, Source::Base) | (Source::Zero, Source::Zero) => false,
                        (Source::Zero, Source::Base) => to_data,
                        (Source::Base, Source::Zero) => base_data(from)?,
                        _ => true,
                    }
                }
            };
            if !changed {
                continue;
            }
            match extents.last_mut() {
                Some(last) if last.exists == to_data && last.offset + last.length == piece.image_offset => {
                    last.length += piece.length;
                }
                _ => extents.push(DiffExtent { offset: piece.image_offset, length: piece.length, exists: to_data }),
            }
        }
    }
    if granularity == DiffGranularity::WholeObject {
        let object_size = layout.object_size();
        let unstriped = layout.striping.count == 1;
        let mut widened: Vec<DiffExtent> = Vec::new();
        for e in extents {
            let (start, end) = if unstriped {
                (e.offset / object_size * object_size, (e.offset + e.length).div_ceil(object_size) * object_size)
            } else {
                let unit = layout.striping.unit_bytes;
                (e.offset / unit * unit, (e.offset + e.length).div_ceil(unit) * unit)
            };
            let end = end.min(to.size);
            match widened.last_mut() {
                Some(last) if last.offset + last.length >= start => {
                    last.length = end.max(last.offset + last.length) - last.offset;
                    last.exists |= e.exists;
                }
                _ => widened.push(DiffExtent { offset: start, length: end - start, exists: e.exists }),
            }
        }
        return Ok(widened);
    }
    Ok(extents)
}

/// Makes `dest`, a deep copy's view being filled over the same parent snapshot as `src`, show the parent's data
/// exactly where `src` does, once its own blocks match those of `src` (the diff of the views without the parent).
/// A block `src` reads as zeros, from a zero marker or behind a size floor, gets a zero marker where `dest` would
/// show the parent; a block `src` reads from the parent that `dest` hides (a zero marker an earlier view of another
/// branch left, say) gets the parent's bytes. Only the blocks where the parent has data can differ.
fn match_parent(src: &View, dest: &View, locks: &crate::layer::StripeLocks) -> Result<()> {
    use crate::layer::Source;
    let (Some(base), Some(dest_base)) = (&src.base, &dest.base) else { return Ok(()) };
    let limit = base.overlap.max(dest_base.overlap).min(src.size).min(dest.size);
    let mut buf = vec![0u8; BLOCK_SIZE as usize];
    for (start, len) in base.view.allocated_in(0, limit)? {
        for piece in src.layout.pieces(start, len.min(limit - start)) {
            let parent_data = |base: &crate::layer::Base| -> Result<bool> {
                Ok(base.state_at(piece.image_offset)? == BlockState::Data)
            };
            let shows_parent = match src.resolve(0, &piece)? {
                // Its own block: the diff copied it.
                Source::Layer(_) => continue,
                Source::Zero => false,
                Source::Base if parent_data(base)? => true,
                Source::Base => continue,
            };
            let out = &mut buf[..piece.length as usize];
            match (shows_parent, dest.resolve(0, &piece)?) {
                (false, Source::Layer(_)) => dest.zero(locks, piece.image_offset, piece.length)?,
                (false, Source::Base) if parent_data(dest_base)? => {
                    dest.zero(locks, piece.image_offset, piece.length)?
                }
                (true, Source::Zero) => {
                    src.read(piece.image_offset, out)?;
                    dest.write(locks, piece.image_offset, out)?;
                }
                // The same bytes either way: zeros, the parent's, or the parent's copied by an earlier view.
                _ => {}
            }
        }
    }
    Ok(())
}

/// A fold of snapshot removal: a hidden layer and the one layer that reads through it.
struct Fold<'a> {
    state: &'a ImageState,
    layout: Layout,
    low: Arc<Layer>,
    up: Arc<Layer>,
    lower: LayerRec,
    upper: LayerRec,
}

/// Copies the given blocks of one object (sorted, with their state in `from`) from one layer into another: data a
/// run of neighbouring blocks at a time (one read, one journal record), zero markers as markers.
fn copy_blocks(
    layout: &Layout,
    from: &Layer,
    to: &Arc<Layer>,
    object_no: u64,
    blocks: &[(u64, BlockSt)],
) -> Result<()> {
    /// The most bytes copied with one read and one record.
    const RUN_MAX: u64 = 256;
    let mut buf = Vec::new();
    let mut at = 0;
    while at < blocks.len() {
        let (first, st) = blocks[at];
        let mut end = at + 1;
        while end < blocks.len() && blocks[end] == (first + (end - at) as u64, st) && (end - at) < RUN_MAX as usize {
            end += 1;
        }
        let last = first + (end - at) as u64 - 1;
        let file_off = layout.file_offset(object_no, first << BLOCK_SHIFT);
        if st == BlockSt::Data {
            buf.resize(((last - first + 1) << BLOCK_SHIFT) as usize, 0);
            from.read_verified(&mut buf, file_off, None)?;
            to.write_blocks(object_no, first, &buf, file_off)?;
        } else {
            to.mark_blocks(object_no, first, last, st, file_off)?;
        }
        at = end;
    }
    Ok(())
}

fn bytes_of(extents: &[DiffExtent]) -> u64 {
    extents.iter().filter(|e| e.exists).map(|e| e.length).sum()
}

impl Backend for Engine {
    // --- pools ---------------------------------------------------------------------------------------------------

    fn pool_create(&self, pool: &PoolName) -> Result<()> {
        let txn = self.write_txn()?;
        {
            let mut pools = txn.open_table(POOLS).map_err(db_err)?;
            if pools.get(pool.as_str()).map_err(db_err)?.is_some() {
                bail!(AlreadyExists, "pool '{pool}' already exists");
            }
            let id = records::next_id(&txn)?;
            let rec = PoolRec { id, applications: Vec::new(), created: self.now().secs() };
            pools.insert(pool.as_str(), encode(&rec)?.as_slice()).map_err(db_err)?;
        }
        txn.commit().map_err(db_err)
    }

    fn pool_list(&self) -> Result<Vec<PoolInfo>> {
        let txn = self.read_txn()?;
        let pools = txn.open_table(POOLS).map_err(db_err)?;
        let images = txn.open_table(IMAGES).map_err(db_err)?;
        let blocks = txn.open_table(records::BLOCKS).map_err(db_err)?;
        // A store from before usage counts has none: every layer is counted from its bitmaps until checkpointed.
        let usage = match txn.open_table(records::LAYER_USAGE) {
            Ok(table) => Some(table),
            Err(redb::TableError::TableDoesNotExist(_)) => None,
            Err(err) => return Err(db_err(err)),
        };
        // (images, provisioned bytes, used bytes, objects)
        let mut stats: BTreeMap<String, (u64, u64, u64, u64)> = BTreeMap::new();
        for entry in images.iter().map_err(db_err)? {
            let (_, value) = entry.map_err(db_err)?;
            let rec: ImageRec = decode(value.value())?;
            let stat = stats.entry(rec.pool.clone()).or_default();
            if rec.trash.is_none() {
                stat.0 += 1;
                stat.1 += rec.size;
            }
            // Data counts against the data pool when the image has one.
            let stat = stats.entry(rec.data_pool.clone().unwrap_or_else(|| rec.pool.clone())).or_default();
            for layer in &rec.layers {
                // A layer changed since the last checkpoint is counted from its bitmaps in memory.
                if let Some(changed) = self.store.journal.changed_layer(layer.id) {
                    let (data_blocks, objects) = changed.data_usage();
                    stat.2 += data_blocks * BLOCK_SIZE;
                    stat.3 += objects;
                    continue;
                }
                if let Some(table) = &usage
                    && let Some(counts) = table.get(layer.id).map_err(db_err)?
                {
                    let (data_blocks, objects) = counts.value();
                    stat.2 += data_blocks * BLOCK_SIZE;
                    stat.3 += objects;
                    continue;
                }
                for bits in blocks.range((layer.id, 0u64)..=(layer.id, u64::MAX)).map_err(db_err)? {
                    let (_, value) = bits.map_err(db_err)?;
                    let half = value.value().len() / 2;
                    let data_blocks: u64 = value.value()[..half].iter().map(|b| u64::from(b.count_ones())).sum();
                    stat.2 += data_blocks * BLOCK_SIZE;
                    stat.3 += u64::from(data_blocks > 0);
                }
            }
        }
        // A store from before quotas has no quota table: no pool has a quota.
        let quotas: BTreeMap<String, (u64, u64)> = match txn.open_table(records::POOL_QUOTAS) {
            Ok(table) => table
                .iter()
                .map_err(db_err)?
                .map(|e| e.map(|(k, v)| (k.value().to_owned(), v.value())).map_err(db_err))
                .collect::<Result<_>>()?,
            Err(redb::TableError::TableDoesNotExist(_)) => BTreeMap::new(),
            Err(err) => return Err(db_err(err)),
        };
        let mut out = Vec::new();
        for entry in pools.iter().map_err(db_err)? {
            let (name, value) = entry.map_err(db_err)?;
            let rec: PoolRec = decode(value.value())?;
            let (image_count, provisioned_bytes, used_bytes, objects) =
                stats.get(name.value()).copied().unwrap_or_default();
            let (quota_max_bytes, quota_max_objects) = quotas.get(name.value()).copied().unwrap_or_default();
            let info = PoolInfo {
                name: PoolName::new(name.value())?,
                id: rec.id,
                applications: rec.applications,
                image_count,
                provisioned_bytes,
                used_bytes,
                objects,
                quota_max_bytes,
                quota_max_objects,
                healthy: true,
            };
            // Ceph marks a pool full from its usage statistics; this listing is where basalt takes them.
            self.store.pool_full_flag(name.value()).store(info.quota_reached(), std::sync::atomic::Ordering::Relaxed);
            out.push(info);
        }
        Ok(out)
    }

    fn pool_remove(&self, pool: &PoolName) -> Result<()> {
        let txn = self.write_txn()?;
        {
            let mut pools = txn.open_table(POOLS).map_err(db_err)?;
            if pools.get(pool.as_str()).map_err(db_err)?.is_none() {
                bail!(NotFound, "pool '{pool}' does not exist");
            }
            let images = txn.open_table(IMAGES).map_err(db_err)?;
            let mut count = 0u64;
            for entry in images.iter().map_err(db_err)? {
                let (_, value) = entry.map_err(db_err)?;
                let rec: ImageRec = decode(value.value())?;
                if rec.pool == pool.as_str() || rec.data_pool.as_deref() == Some(pool.as_str()) {
                    count += 1;
                }
            }
            if count > 0 {
                bail!(Busy, "pool '{pool}' still holds {count} image(s) (trash included): remove them first");
            }
            pools.remove(pool.as_str()).map_err(db_err)?;
            let mut namespaces = txn.open_table(NAMESPACES).map_err(db_err)?;
            namespaces.retain(|(p, _), ()| p != pool.as_str()).map_err(db_err)?;
            let scope = format!("pool:{pool}");
            let mut config = txn.open_table(CONFIG).map_err(db_err)?;
            config.retain(|(s, _), _| s != scope).map_err(db_err)?;
            let nested = format!("{pool}/");
            let mut schedules = txn.open_table(records::PURGE_SCHEDULES).map_err(db_err)?;
            schedules.retain(|level, _| level != pool.as_str() && !level.starts_with(&nested)).map_err(db_err)?;
            let mut runs = txn.open_table(records::PURGE_RUNS).map_err(db_err)?;
            runs.retain(|(p, _), _| p != pool.as_str()).map_err(db_err)?;
            txn.open_table(records::POOL_QUOTAS).map_err(db_err)?.remove(pool.as_str()).map_err(db_err)?;
        }
        txn.commit().map_err(db_err)?;
        self.store.pool_full_flag(pool.as_str()).store(false, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    fn pool_set_quota(&self, pool: &PoolName, max_bytes: Option<u64>, max_objects: Option<u64>) -> Result<()> {
        let txn = self.write_txn()?;
        {
            if txn.open_table(POOLS).map_err(db_err)?.get(pool.as_str()).map_err(db_err)?.is_none() {
                bail!(NotFound, "pool '{pool}' does not exist");
            }
            let mut quotas = txn.open_table(records::POOL_QUOTAS).map_err(db_err)?;
            let (bytes, objects) = quotas.get(pool.as_str()).map_err(db_err)?.map(|v| v.value()).unwrap_or_default();
            let wanted = (max_bytes.unwrap_or(bytes), max_objects.unwrap_or(objects));
            if wanted == (0, 0) {
                quotas.remove(pool.as_str()).map_err(db_err)?;
            } else {
                quotas.insert(pool.as_str(), wanted).map_err(db_err)?;
            }
        }
        txn.commit().map_err(db_err)?;
        // Takes the new quota into the pool's full flag at once.
        self.pool_list().map(|_| ())
    }

    fn pool_application_enable(&self, pool: &PoolName, app: &str) -> Result<()> {
        if app.is_empty() || app.len() > 128 || app.contains(char::is_whitespace) {
            bail!(InvalidArgument, "invalid application name '{app}'");
        }
        self.update_pool(pool, |rec| {
            if !rec.applications.iter().any(|a| a == app) {
                rec.applications.push(app.to_owned());
                rec.applications.sort();
            }
            Ok(())
        })
    }

    fn pool_application_disable(&self, pool: &PoolName, app: &str) -> Result<()> {
        self.update_pool(pool, |rec| {
            if !rec.applications.iter().any(|a| a == app) {
                bail!(NotFound, "application '{app}' is not enabled on pool '{pool}'");
            }
            rec.applications.retain(|a| a != app);
            Ok(())
        })
    }

    // --- namespaces ----------------------------------------------------------------------------------------------

    fn namespace_create(&self, location: &PoolNs) -> Result<()> {
        if location.namespace.is_default() {
            bail!(InvalidArgument, "namespace name must not be empty");
        }
        let txn = self.write_txn()?;
        {
            let pools = txn.open_table(POOLS).map_err(db_err)?;
            if pools.get(location.pool.as_str()).map_err(db_err)?.is_none() {
                bail!(NotFound, "pool '{}' does not exist", location.pool);
            }
            let mut namespaces = txn.open_table(NAMESPACES).map_err(db_err)?;
            let key = (location.pool.as_str(), location.namespace.as_str());
            if namespaces.get(key).map_err(db_err)?.is_some() {
                bail!(AlreadyExists, "namespace '{location}' already exists");
            }
            namespaces.insert(key, ()).map_err(db_err)?;
        }
        txn.commit().map_err(db_err)
    }

    fn namespace_list(&self, pool: &PoolName) -> Result<Vec<NamespaceInfo>> {
        self.pool_exists(pool)?;
        let txn = self.read_txn()?;
        let namespaces = txn.open_table(NAMESPACES).map_err(db_err)?;
        let names = txn.open_table(IMAGE_NAMES).map_err(db_err)?;
        let mut out = Vec::new();
        for entry in namespaces.range((pool.as_str(), "")..).map_err(db_err)? {
            let (key, _) = entry.map_err(db_err)?;
            let (p, ns) = key.value();
            if p != pool.as_str() {
                break;
            }
            let image_count = count_in_location(&names, p, ns)?;
            out.push(NamespaceInfo { name: Namespace::new(ns)?, image_count });
        }
        Ok(out)
    }

    fn namespace_remove(&self, location: &PoolNs) -> Result<()> {
        if location.namespace.is_default() {
            bail!(InvalidArgument, "the default namespace cannot be removed");
        }
        let txn = self.write_txn()?;
        {
            let mut namespaces = txn.open_table(NAMESPACES).map_err(db_err)?;
            let key = (location.pool.as_str(), location.namespace.as_str());
            if namespaces.get(key).map_err(db_err)?.is_none() {
                bail!(NotFound, "namespace '{location}' does not exist");
            }
            let images = count_in_location(&txn.open_table(IMAGE_NAMES).map_err(db_err)?, key.0, key.1)?;
            if images > 0 {
                bail!(Busy, "namespace '{location}' still has {images} image(s): delete or move them first");
            }
            let trashed = count_in_location(&txn.open_table(TRASH).map_err(db_err)?, key.0, key.1)?;
            if trashed > 0 {
                bail!(
                    Busy,
                    "namespace '{location}' still has {trashed} image(s) in the trash: restore or purge them first"
                );
            }
            namespaces.remove(key).map_err(db_err)?;
            let level = format!("{}/{}", key.0, key.1);
            txn.open_table(records::PURGE_SCHEDULES).map_err(db_err)?.remove(level.as_str()).map_err(db_err)?;
            txn.open_table(records::PURGE_RUNS).map_err(db_err)?.remove(key).map_err(db_err)?;
        }
        txn.commit().map_err(db_err)
    }

    // --- images --------------------------------------------------------------------------------------------------

    fn image_create(&self, spec: &ImageSpec, options: &CreateOptions) -> Result<()> {
        let layout = Self::resolve_layout(options.order, options.striping)?;
        let data_pool = options.data_pool.as_ref().filter(|p| *p != spec.pool());
        if let Some(pool) = data_pool {
            self.pool_exists(pool)?;
        }
        let features =
            Self::resolve_features(options.features, !layout.striping.is_trivial(layout.order), data_pool.is_some())?;
        let txn = self.write_txn()?;
        let rec = self.new_image_rec(
            &txn,
            spec,
            options.size_bytes,
            layout,
            features,
            data_pool.map(|p| p.as_str().to_owned()),
            None,
        )?;
        Self::insert_new_image(&txn, &rec)?;
        txn.commit().map_err(db_err)
    }

    fn image_list(&self, location: &PoolNs) -> Result<Vec<ImageListEntry>> {
        let txn = self.read_txn()?;
        self.check_location(&txn, location)?;
        let names = txn.open_table(IMAGE_NAMES).map_err(db_err)?;
        let (pool, ns) = (location.pool.as_str(), location.namespace.as_str());
        let mut out = Vec::new();
        for entry in names.range((pool, ns, "")..).map_err(db_err)? {
            let (key, id) = entry.map_err(db_err)?;
            let (p, n, name) = key.value();
            if p != pool || n != ns {
                break;
            }
            out.push(ImageListEntry { name: ImageName::new(name)?, id: id.value().to_owned() });
        }
        Ok(out)
    }

    fn image_info(&self, spec: &ImageSpec) -> Result<ImageInfo> {
        let id = self.image_id(spec)?;
        let rec = self.store.read_image(&id)?;
        self.image_info_of(&rec, None)
    }

    fn image_info_at_snap(&self, spec: &SnapSpec) -> Result<ImageInfo> {
        let id = self.image_id(&spec.image)?;
        let rec = self.store.read_image(&id)?;
        let snap = rec
            .snap_by_name(spec.snap.as_str())
            .ok_or_else(|| Error::not_found(format!("snapshot '{spec}' does not exist")))?;
        self.image_info_of(&rec, Some(snap))
    }

    fn image_resize(&self, spec: &ImageSpec, size_bytes: u64, policy: ResizePolicy) -> Result<()> {
        basalt_core::check_size(size_bytes)?;
        let (state, _) = self.image_state(spec)?;
        let _op = mutex_lock(&state.op);
        let rec = self.store.read_image(&state.id)?;
        let features = Features::from_bits(rec.features)?;
        let layout = layout_of(&rec)?;
        if features.contains(Features::OBJECT_MAP) && layout.num_objects(size_bytes) > OBJECT_MAP_OBJECTS_MAX {
            bail!(InvalidArgument, "size {size_bytes} needs more objects than the object map supports");
        }
        if size_bytes == rec.size {
            return Ok(());
        }
        if size_bytes < rec.size {
            if policy != ResizePolicy::AllowShrink {
                bail!(
                    InvalidArgument,
                    "shrinking image '{spec}' from {} to {size_bytes} bytes discards data: it is only allowed with allow-shrink (--allow-shrink)",
                    rec.size
                );
            }
            // The new size and the head's size floor commit first, in one step: the bytes past it vanish at once
            // (lower layers are hidden by the floor). Then the head's own blocks past the size go, to give the space
            // back; a crash before that leaves them hidden, and a later grow clears them before it exposes them.
            let now = self.now().secs();
            self.update_image(&state, |_, rec| {
                rec.size = size_bytes;
                let head_layer = rec.head_layer;
                if let Some(l) = rec.layers.iter_mut().find(|l| l.id == head_layer) {
                    l.min_size = l.min_size.min(size_bytes);
                }
                rec.modified = now;
                Ok(((), Vec::new()))
            })?;
            let freed = self.clear_head_past(&state, &layout, size_bytes.div_ceil(BLOCK_SIZE) * BLOCK_SIZE, None)?;
            // The blocks are past the size, so their space may go back before their absence is durable.
            let top = state.head_read().view.chain[0].layer.clone();
            for (off, len) in freed {
                let _ = top.punch(off, len);
            }
            return Ok(());
        }
        self.check_file_len(&layout, size_bytes)?;
        // Growing exposes what lies past the old size: the head's own bytes there (left by an earlier shrink) are
        // cleared first. They are invisible until the new size commits, so a crash in between changes nothing.
        let tail_end = rec.size.div_ceil(BLOCK_SIZE) * BLOCK_SIZE;
        if tail_end > rec.size {
            let head = state.head_read();
            head.view.zero(&state.locks, rec.size, tail_end.min(size_bytes) - rec.size)?;
        }
        self.clear_head_past(&state, &layout, tail_end, Some(size_bytes))?;
        let now = self.now().secs();
        self.update_image(&state, |_, rec| {
            rec.size = size_bytes;
            rec.modified = now;
            Ok(((), Vec::new()))
        })
    }

    fn image_rename(&self, spec: &ImageSpec, new_name: &ImageName) -> Result<()> {
        let (state, id) = self.image_state(spec)?;
        let _op = mutex_lock(&state.op);
        let dest = basalt_core::sibling(spec, new_name.clone());
        let txn = self.write_txn()?;
        if Self::name_taken(&txn, &dest)? {
            bail!(AlreadyExists, "image '{dest}' already exists");
        }
        let mut rec = Self::get_rec(&txn, &id)?;
        {
            let mut names = txn.open_table(IMAGE_NAMES).map_err(db_err)?;
            names.remove((rec.pool.as_str(), rec.namespace.as_str(), rec.name.as_str())).map_err(db_err)?;
            names
                .insert((rec.pool.as_str(), rec.namespace.as_str(), new_name.as_str()), id.as_str())
                .map_err(db_err)?;
        }
        rec.name = new_name.as_str().to_owned();
        rec.modified = self.now().secs();
        Self::put_rec(&txn, &rec)?;
        txn.commit().map_err(db_err)
    }

    fn image_remove(&self, spec: &ImageSpec, progress: &Progress) -> Result<()> {
        let (state, id) = self.image_state(spec)?;
        let _op = mutex_lock(&state.op);
        let rec = self.store.read_image(&id)?;
        Self::refuse_if_attached(&state, "removing it")?;
        self.check_removable(&rec)?;
        progress.set(0, 1);
        self.delete_image(&state, &rec)?;
        progress.set(1, 1);
        Ok(())
    }

    fn image_copy(&self, src: &ImageSpec, request: &CopyRequest, progress: &Progress) -> Result<()> {
        let (state, _) = self.image_state(src)?;
        let _op = mutex_lock(&state.op);
        let rec = self.store.read_image(&state.id)?;
        // Built again during the copy when a flatten or fold elsewhere may change what it reads (`copy_data`). The
        // source's record cannot change meanwhile: the copy holds its operation lock.
        let snap = match &request.snap {
            Some(name) => Some(
                rec.snap_by_name(name.as_str())
                    .ok_or_else(|| Error::not_found(format!("snapshot '{src}@{name}' does not exist")))?,
            ),
            None => None,
        };
        let view_of = || match snap {
            Some(snap) => self.snap_view(&state, &self.store.read_image(&state.id)?, snap),
            None => Ok(state.head_read().view.clone()),
        };
        let src_view = view_of()?;
        let src_layout = layout_of(&rec)?;
        let order = request.order.unwrap_or(src_layout.order);
        let striping = request.striping.or_else(|| {
            let s = src_layout.striping;
            (request.order.is_none() && !s.is_trivial(src_layout.order)).then_some((s.unit_bytes, s.count))
        });
        let layout = Self::resolve_layout(Some(order), striping)?;
        let src_features = Features::from_bits(rec.features)?;
        let features = Self::resolve_features(
            Some(
                request.features.unwrap_or(src_features.difference(Features::IMPLICIT.difference(Features::FAST_DIFF))),
            ),
            !layout.striping.is_trivial(layout.order),
            false,
        )?;
        // Build the destination's record and layer first, fill it, then publish it in one transaction.
        let dest_rec = {
            let txn = self.write_txn()?;
            let dest_rec = self.new_image_rec(&txn, &request.dest, src_view.size, layout, features, None, None)?;
            txn.commit().map_err(db_err)?;
            dest_rec
        };
        let dest_layer = dest_rec.head_layer;
        let mut publishing = false;
        let result = self.fill_and_publish(&state, &view_of, dest_rec, progress, &mut publishing);
        if let Err(err) = &result {
            self.discard_copy_files(err, publishing, &[dest_layer]);
        }
        result
    }

    fn image_deep_copy(&self, src: &ImageSpec, dest: &ImageSpec, progress: &Progress) -> Result<()> {
        let (state, _) = self.image_state(src)?;
        let _op = mutex_lock(&state.op);
        let rec = self.store.read_image(&state.id)?;
        let layout = layout_of(&rec)?;
        let features = Features::from_bits(rec.features)?;
        // The copy's views, oldest first, each to be filled with what changed since the one before.
        let mut tops: Vec<(Option<&SnapRec>, View)> = Vec::new();
        for snap in &rec.snaps {
            tops.push((Some(snap), self.snap_view(&state, &rec, snap)?));
        }
        tops.push((None, state.head_read().view.clone()));
        // The parent as far as any view may show it: where a view shows less of it (a shrink since, a zero marker),
        // `match_parent` hides it in the copy's view too. The root starts at the first view's size, so its size
        // floor hides nothing of the parent that view shows.
        let first_size = tops[0].1.size;
        let mut dest_rec = {
            let txn = self.write_txn()?;
            let r = self.new_image_rec(
                &txn,
                dest,
                first_size,
                layout,
                features,
                rec.data_pool.clone(),
                rec.parent.clone(),
            )?;
            txn.commit().map_err(db_err)?;
            r
        };
        dest_rec.metadata = rec.metadata.clone();
        dest_rec.config = rec.config.clone();
        dest_rec.snap_limit = rec.snap_limit;
        let created_layers = std::cell::RefCell::new(vec![dest_rec.head_layer]);
        let publishing = std::cell::Cell::new(false);
        let result = (|| -> Result<()> {
            let dest_state = ImageState::detached(&self.store, &dest_rec.id);
            let mut previous: Option<View> = None;
            let total = rec.snaps.len() as u64 + 1;
            for (idx, (snap, view)) in tops.into_iter().enumerate() {
                if progress.is_cancelled() {
                    bail!(Cancelled, "the operation was cancelled");
                }
                if view.size < dest_rec.size {
                    // What lies past a shrink must stay hidden if a later snapshot grows the image again.
                    let head_layer = dest_rec.head_layer;
                    if let Some(l) = dest_rec.layers.iter_mut().find(|l| l.id == head_layer) {
                        l.min_size = l.min_size.min(view.size);
                    }
                }
                dest_rec.size = view.size;
                let dest_view = dest_state.build_view(&dest_rec, dest_rec.head_layer, view.size)?;
                let from = previous.as_ref();
                // A clone's own data only: the destination reads the same parent.
                let own = View { base: None, ..view.clone() };
                let own_from = from.map(|f| View { base: None, ..f.clone() });
                let extents = diff_views(own_from.as_ref(), &own, DiffGranularity::Fine)?;
                for extent in extents {
                    if extent.exists {
                        let mut at = extent.offset;
                        let end = extent.offset + extent.length;
                        let mut buf = vec![0u8; COPY_CHUNK_BYTES as usize];
                        while at < end {
                            let n = (end - at).min(COPY_CHUNK_BYTES) as usize;
                            view.read(at, &mut buf[..n])?;
                            dest_view.write(&dest_state.locks, at, &buf[..n])?;
                            at += n as u64;
                        }
                    } else {
                        dest_view.zero(&dest_state.locks, extent.offset, extent.length)?;
                    }
                }
                // The diff above compares the views without the parent: where it is seen is matched here.
                match_parent(&view, &dest_view, &dest_state.locks)?;
                if let Some(snap) = snap {
                    let txn = self.write_txn()?;
                    let layer = self.new_layer(&txn, Some(dest_rec.head_layer), view.size)?;
                    txn.commit().map_err(db_err)?;
                    created_layers.borrow_mut().push(layer.id);
                    dest_rec.snaps.push(SnapRec {
                        id: dest_rec.next_snap_id,
                        name: snap.name.clone(),
                        size: snap.size,
                        timestamp: snap.timestamp,
                        protected: snap.protected,
                        layer: dest_rec.head_layer,
                    });
                    dest_rec.next_snap_id += 1;
                    dest_rec.head_layer = layer.id;
                    dest_rec.layers.push(layer);
                }
                previous = Some(view);
                progress.set(idx as u64 + 1, total);
            }
            publishing.set(true);
            dest_state.persist(|txn| Self::insert_new_image(txn, &dest_rec))
        })();
        if let Err(err) = &result {
            self.discard_copy_files(err, publishing.get(), &created_layers.borrow());
        }
        result
    }

    fn image_features_enable(&self, spec: &ImageSpec, features: Features) -> Result<()> {
        self.change_features(spec, features, true)
    }

    fn image_features_disable(&self, spec: &ImageSpec, features: Features) -> Result<()> {
        self.change_features(spec, features, false)
    }

    fn image_metadata_list(&self, spec: &ImageSpec) -> Result<Vec<(String, String)>> {
        let rec = self.store.read_image(&self.image_id(spec)?)?;
        Ok(rec.metadata.into_iter().collect())
    }

    fn image_metadata_set(&self, spec: &ImageSpec, key: &str, value: &str) -> Result<()> {
        if key.is_empty() || key.len() > 250 {
            bail!(InvalidArgument, "metadata key must be 1 to 250 bytes long");
        }
        if value.len() > 64 * 1024 {
            bail!(InvalidArgument, "metadata value is longer than 64 KiB");
        }
        self.update_rec(spec, |rec| {
            rec.metadata.insert(key.to_owned(), value.to_owned());
            Ok(())
        })
    }

    fn image_metadata_remove(&self, spec: &ImageSpec, key: &str) -> Result<()> {
        self.update_rec(spec, |rec| match rec.metadata.remove(key) {
            Some(_) => Ok(()),
            None => Err(Error::not_found(format!("metadata key '{key}' does not exist on image '{spec}'"))),
        })
    }

    fn image_watchers(&self, spec: &ImageSpec) -> Result<Vec<Watcher>> {
        let id = self.image_id(spec)?;
        Ok(self.store.loaded_state(&id).map(|s| s.watchers()).unwrap_or_default())
    }

    // --- configuration -------------------------------------------------------------------------------------------

    fn config_list(&self, level: &ConfigLevel) -> Result<Vec<ConfigEntry>> {
        let global = self.config_overrides("")?;
        match level {
            ConfigLevel::Global => Ok(config::resolve(&global, &[], &[])),
            ConfigLevel::Pool(pool) => {
                self.pool_exists(pool)?;
                let pool_overrides = self.config_overrides(&format!("pool:{pool}"))?;
                Ok(config::resolve(&global, &pool_overrides, &[]))
            }
            ConfigLevel::Image(spec) => {
                let rec = self.store.read_image(&self.image_id(spec)?)?;
                let pool_overrides = self.config_overrides(&format!("pool:{}", spec.pool()))?;
                let image: Vec<(String, String)> = rec.config.into_iter().collect();
                Ok(config::resolve(&global, &pool_overrides, &image))
            }
        }
    }

    fn config_set(&self, level: &ConfigLevel, name: &str, value: &str) -> Result<()> {
        let option = config::option(name)?;
        let value = config::normalize_value(option, value)?;
        match level {
            ConfigLevel::Image(spec) => self.update_rec(spec, |rec| {
                rec.config.insert(name.to_owned(), value.clone());
                Ok(())
            }),
            _ => {
                if let ConfigLevel::Pool(pool) = level {
                    self.pool_exists(pool)?;
                }
                let scope = Self::config_scope(level);
                let txn = self.write_txn()?;
                {
                    let mut table = txn.open_table(CONFIG).map_err(db_err)?;
                    table.insert((scope.as_str(), name), value.as_str()).map_err(db_err)?;
                }
                txn.commit().map_err(db_err)
            }
        }
    }

    fn config_remove(&self, level: &ConfigLevel, name: &str) -> Result<()> {
        config::option(name)?;
        match level {
            ConfigLevel::Image(spec) => self.update_rec(spec, |rec| match rec.config.remove(name) {
                Some(_) => Ok(()),
                None => Err(Error::not_found(format!("image '{spec}' has no override of {name}"))),
            }),
            _ => {
                if let ConfigLevel::Pool(pool) = level {
                    self.pool_exists(pool)?;
                }
                let scope = Self::config_scope(level);
                let txn = self.write_txn()?;
                {
                    let mut table = txn.open_table(CONFIG).map_err(db_err)?;
                    if table.remove((scope.as_str(), name)).map_err(db_err)?.is_none() {
                        bail!(NotFound, "there is no override of {name} at this level");
                    }
                }
                txn.commit().map_err(db_err)
            }
        }
    }

    // --- snapshots -----------------------------------------------------------------------------------------------

    fn snap_create(&self, spec: &SnapSpec) -> Result<()> {
        let (state, _) = self.image_state(&spec.image)?;
        let _op = mutex_lock(&state.op);
        let now = self.now().secs();
        self.update_image(&state, |txn, rec| {
            if rec.snap_by_name(spec.snap.as_str()).is_some() {
                bail!(AlreadyExists, "snapshot '{spec}' already exists");
            }
            if let Some(limit) = rec.snap_limit
                && rec.snaps.len() as u64 >= limit
            {
                bail!(
                    QuotaExceeded,
                    "image '{}' reached its snapshot limit of {limit}: remove a snapshot or raise the limit",
                    spec.image
                );
            }
            let layer = self.new_layer(txn, Some(rec.head_layer), rec.size)?;
            rec.snaps.push(SnapRec {
                id: rec.next_snap_id,
                name: spec.snap.as_str().to_owned(),
                size: rec.size,
                timestamp: now,
                protected: false,
                layer: rec.head_layer,
            });
            rec.next_snap_id += 1;
            rec.head_layer = layer.id;
            rec.layers.push(layer);
            rec.modified = now;
            Ok(((), Vec::new()))
        })
    }

    fn snap_list(&self, spec: &ImageSpec) -> Result<Vec<SnapInfo>> {
        let rec = self.store.read_image(&self.image_id(spec)?)?;
        let mut out = Vec::new();
        for snap in &rec.snaps {
            out.push(SnapInfo {
                id: SnapId(snap.id),
                name: SnapName::new(&snap.name)?,
                size_bytes: snap.size,
                timestamp: Timestamp(snap.timestamp),
                protected: snap.protected,
                children: self.children_of(&rec.id, Some(snap.id))?.len() as u64,
            });
        }
        Ok(out)
    }

    fn snap_rename(&self, spec: &SnapSpec, new_name: &SnapName) -> Result<()> {
        self.update_rec(&spec.image, |rec| {
            if rec.snap_by_name(new_name.as_str()).is_some() {
                bail!(AlreadyExists, "snapshot '{}@{new_name}' already exists", spec.image);
            }
            let snap = rec
                .snaps
                .iter_mut()
                .find(|s| s.name == spec.snap.as_str())
                .ok_or_else(|| Error::not_found(format!("snapshot '{spec}' does not exist")))?;
            snap.name = new_name.as_str().to_owned();
            Ok(())
        })
    }

    fn snap_protect(&self, spec: &SnapSpec) -> Result<()> {
        self.update_rec(&spec.image, |rec| {
            let features = Features::from_bits(rec.features)?;
            let snap = rec
                .snaps
                .iter_mut()
                .find(|s| s.name == spec.snap.as_str())
                .ok_or_else(|| Error::not_found(format!("snapshot '{spec}' does not exist")))?;
            if !features.contains(Features::LAYERING) {
                bail!(
                    NotImplemented,
                    "image '{}' does not have the layering feature: its snapshots cannot be protected or cloned",
                    spec.image
                );
            }
            if snap.protected {
                bail!(Busy, "snapshot '{spec}' is already protected");
            }
            snap.protected = true;
            Ok(())
        })
    }

    fn snap_unprotect(&self, spec: &SnapSpec) -> Result<()> {
        let id = self.image_id(&spec.image)?;
        let rec = self.store.read_image(&id)?;
        let snap_id = rec
            .snap_by_name(spec.snap.as_str())
            .ok_or_else(|| Error::not_found(format!("snapshot '{spec}' does not exist")))?
            .id;
        self.update_rec(&spec.image, |rec| {
            let snap = rec
                .snaps
                .iter_mut()
                .find(|s| s.id == snap_id)
                .ok_or_else(|| Error::not_found(format!("snapshot '{spec}' does not exist")))?;
            if !snap.protected {
                bail!(InvalidArgument, "snapshot '{spec}' is not protected");
            }
            let children = self.children_of(&id, Some(snap_id))?;
            if !children.is_empty() {
                let names: Vec<String> = children.iter().map(|c| format!("{}/{}", c.pool, c.image)).collect();
                bail!(
                    Busy,
                    "cannot unprotect: at least {} child(ren) [{}] depend on snapshot '{spec}': flatten or remove them first",
                    children.len(),
                    names.join(", ")
                );
            }
            snap.protected = false;
            Ok(())
        })
    }

    fn snap_rollback(&self, spec: &SnapSpec, progress: &Progress) -> Result<()> {
        let (state, _) = self.image_state(&spec.image)?;
        let _op = mutex_lock(&state.op);
        let writers: Vec<Watcher> = state.watchers().into_iter().filter(|w| w.writable).collect();
        if !writers.is_empty() {
            bail!(
                Busy,
                "image is attached read-write by {}: stop writes and detach it before rollback",
                describe_watchers(&writers)
            );
        }
        progress.set(0, 1);
        let now = self.now().secs();
        self.update_image(&state, |txn, rec| {
            let snap = rec
                .snap_by_name(spec.snap.as_str())
                .ok_or_else(|| Error::not_found(format!("snapshot '{spec}' does not exist")))?
                .clone();
            let layer = self.new_layer(txn, Some(snap.layer), snap.size)?;
            rec.head_layer = layer.id;
            rec.layers.push(layer);
            rec.size = snap.size;
            rec.modified = now;
            Ok(((), rec.unreachable_layers()))
        })?;
        progress.set(1, 1);
        Ok(())
    }

    fn snap_remove(&self, spec: &SnapSpec) -> Result<()> {
        let (state, _) = self.image_state(&spec.image)?;
        let _op = mutex_lock(&state.op);
        self.remove_snapshot_locked(&state, spec)
    }

    fn snap_purge(&self, spec: &ImageSpec, progress: &Progress) -> Result<()> {
        let (state, id) = self.image_state(spec)?;
        let _op = mutex_lock(&state.op);
        let rec = self.store.read_image(&id)?;
        let protected: Vec<&str> = rec.snaps.iter().filter(|s| s.protected).map(|s| s.name.as_str()).collect();
        if !protected.is_empty() {
            bail!(Busy, "snapshots {} are protected from removal: unprotect them first", protected.join(", "));
        }
        let total = rec.snaps.len() as u64;
        for (idx, snap) in rec.snaps.iter().enumerate() {
            let snap_spec = SnapSpec { image: spec.clone(), snap: SnapName::new(&snap.name)? };
            self.remove_snapshot_locked(&state, &snap_spec)?;
            progress.set(idx as u64 + 1, total);
        }
        Ok(())
    }

    fn snap_limit_set(&self, spec: &ImageSpec, limit: Option<u64>) -> Result<()> {
        self.update_rec(spec, |rec| {
            if let Some(limit) = limit
                && (rec.snaps.len() as u64) > limit
            {
                bail!(
                    InvalidArgument,
                    "the image already has {} snapshots, more than the limit {limit}",
                    rec.snaps.len()
                );
            }
            rec.snap_limit = limit;
            Ok(())
        })
    }

    fn snap_children(&self, spec: &SnapSpec) -> Result<Vec<ChildInfo>> {
        let rec = self.store.read_image(&self.image_id(&spec.image)?)?;
        let snap = rec
            .snap_by_name(spec.snap.as_str())
            .ok_or_else(|| Error::not_found(format!("snapshot '{spec}' does not exist")))?;
        self.children_of(&rec.id, Some(snap.id))
    }

    // --- clones --------------------------------------------------------------------------------------------------

    fn clone_image(&self, parent: &SnapSpec, child: &ImageSpec, request: &CloneRequest) -> Result<()> {
        let (state, id) = self.image_state(&parent.image)?;
        let _op = mutex_lock(&state.op);
        let rec = self.store.read_image(&id)?;
        let snap = rec.snap_by_name(parent.snap.as_str()).ok_or_else(|| {
            Error::not_found(format!("failed to open parent image: snapshot '{parent}' does not exist"))
        })?;
        let parent_features = Features::from_bits(rec.features)?;
        if !parent_features.contains(Features::LAYERING) {
            bail!(
                NotImplemented,
                "parent image '{}' does not have the layering feature: it cannot be cloned",
                parent.image
            );
        }
        if !snap.protected {
            bail!(InvalidArgument, "snapshot '{parent}' is not protected: protect it before cloning");
        }
        let parent_layout = layout_of(&rec)?;
        let order = request.order.unwrap_or(parent_layout.order);
        let striping = request.striping.or_else(|| {
            let s = parent_layout.striping;
            (request.order.is_none() && !s.is_trivial(parent_layout.order)).then_some((s.unit_bytes, s.count))
        });
        let layout = Self::resolve_layout(Some(order), striping)?;
        let requested =
            request.features.unwrap_or(parent_features.difference(Features::IMPLICIT.difference(Features::FAST_DIFF)));
        if !requested.contains(Features::LAYERING) {
            bail!(NotImplemented, "a clone needs the layering feature: enable it on the clone");
        }
        let features = Self::resolve_features(Some(requested), !layout.striping.is_trivial(layout.order), false)?;
        let parent_rec = ParentRec { image_id: id.clone(), snap_id: snap.id, overlap: snap.size };
        let txn = self.write_txn()?;
        let mut child_rec = self.new_image_rec(&txn, child, snap.size, layout, features, None, Some(parent_rec))?;
        child_rec.metadata = rec.metadata.clone();
        Self::insert_new_image(&txn, &child_rec)?;
        txn.commit().map_err(db_err)
    }

    fn scrub(&self, spec: Option<&ImageSpec>, progress: &Progress) -> Result<basalt_core::ScrubReport> {
        self.scrub_images(spec, progress)
    }

    fn stopped(&self) -> Option<String> {
        self.store.stopped()
    }

    fn checksum_errors(&self) -> Vec<(String, u64)> {
        self.store
            .integrity
            .all()
            .into_iter()
            .map(|(id, _, total)| {
                // An image removed since keeps its count under its id.
                let name = self.store.read_image(&id).map_or(id, |rec| rec.spec_text());
                (name, total)
            })
            .collect()
    }

    fn flatten(&self, spec: &ImageSpec, progress: &Progress) -> Result<()> {
        let (state, id) = self.image_state(spec)?;
        let _op = mutex_lock(&state.op);
        let rec = self.store.read_image(&id)?;
        let Some(parent) = rec.parent.clone() else {
            bail!(InvalidArgument, "image '{spec}' has no parent: there is nothing to flatten");
        };
        // Fill the image's root layer, which every view of the image (head and snapshots) reads through.
        let root = rec
            .layers
            .iter()
            .find(|l| l.below.is_none())
            .cloned()
            .ok_or_else(|| Error::io(format!("image '{spec}' has no root layer: run fsck")))?;
        {
            let head = state.head_read();
            let Some(base) = head.view.base.clone() else {
                bail!(InvalidArgument, "image '{spec}' has no parent: there is nothing to flatten");
            };
            let layout = head.view.layout;
            let root_layer = state.layer(&rec, root.id, layout.blocks_per_object())?;
            let root_view = View::new(
                layout,
                parent.overlap.max(head.view.size),
                vec![ViewLayer { layer: root_layer, min_size: root.min_size }],
                Some(base.clone()),
            );
            let limit = parent.overlap.min(root.min_size);
            let mut objects = std::collections::BTreeSet::new();
            for (start, len) in allocated_ranges(&base.view)? {
                let end = (start + len).min(limit);
                let mut at = start;
                while at < end {
                    objects.insert(layout.map(at).0);
                    at = (at / layout.striping.unit_bytes + 1) * layout.striping.unit_bytes;
                }
            }
            let total = objects.len() as u64;
            progress.set(0, total);
            for (idx, object_no) in objects.into_iter().enumerate() {
                if progress.is_cancelled() {
                    bail!(Cancelled, "flatten was cancelled; it can be started again");
                }
                root_view.copy_up_object(&state.locks, object_no)?;
                progress.set(idx as u64 + 1, total);
            }
        }
        let now = self.now().secs();
        self.update_image(&state, |txn, rec| {
            if let Some(p) = rec.parent.take() {
                let mut children = txn.open_table(CHILDREN).map_err(db_err)?;
                children.remove((p.image_id.as_str(), p.snap_id, rec.id.as_str())).map_err(db_err)?;
            }
            rec.modified = now;
            Ok(((), Vec::new()))
        })?;
        self.rebuild_views_of(&state);
        Ok(())
    }

    // --- trash ---------------------------------------------------------------------------------------------------

    fn trash_move(&self, spec: &ImageSpec, deferment_end: Timestamp) -> Result<String> {
        let (state, id) = self.image_state(spec)?;
        let _op = mutex_lock(&state.op);
        Self::refuse_if_attached(&state, "moving it to the trash")?;
        let now = self.now();
        let txn = self.write_txn()?;
        let mut rec = Self::get_rec(&txn, &id)?;
        {
            let mut names = txn.open_table(IMAGE_NAMES).map_err(db_err)?;
            names.remove((rec.pool.as_str(), rec.namespace.as_str(), rec.name.as_str())).map_err(db_err)?;
            let mut trash = txn.open_table(TRASH).map_err(db_err)?;
            trash.insert((rec.pool.as_str(), rec.namespace.as_str(), id.as_str()), ()).map_err(db_err)?;
        }
        rec.trash = Some(TrashRec {
            source: TrashSource::User.as_str().to_owned(),
            deletion_time: now.secs(),
            deferment_end: deferment_end.secs().max(now.secs()),
        });
        Self::put_rec(&txn, &rec)?;
        txn.commit().map_err(db_err)?;
        Ok(id)
    }

    fn trash_list(&self, location: &PoolNs) -> Result<Vec<TrashEntry>> {
        let txn = self.read_txn()?;
        self.check_location(&txn, location)?;
        let trash = txn.open_table(TRASH).map_err(db_err)?;
        let images = txn.open_table(IMAGES).map_err(db_err)?;
        let (pool, ns) = (location.pool.as_str(), location.namespace.as_str());
        let mut out = Vec::new();
        for entry in trash.range((pool, ns, "")..).map_err(db_err)? {
            let (key, _) = entry.map_err(db_err)?;
            let (p, n, id) = key.value();
            if p != pool || n != ns {
                break;
            }
            let Some(rec) = records::get_image(&images, id)? else { continue };
            let Some(t) = &rec.trash else { continue };
            let source =
                if t.source == TrashSource::Removing.as_str() { TrashSource::Removing } else { TrashSource::User };
            out.push(TrashEntry {
                id: rec.id.clone(),
                name: ImageName::new(&rec.name)?,
                pool: location.pool.clone(),
                namespace: location.namespace.clone(),
                source,
                status: TrashStatus::Normal,
                deletion_time: Timestamp(t.deletion_time),
                deferment_end_time: Timestamp(t.deferment_end),
            });
        }
        Ok(out)
    }

    fn trash_restore(&self, location: &PoolNs, id: &str, new_name: Option<&ImageName>) -> Result<()> {
        let rec = self.trash_rec_in(location, id)?;
        let state = self.store.state(id)?;
        let _op = mutex_lock(&state.op);
        let name = match new_name {
            Some(n) => n.clone(),
            None => ImageName::new(&rec.name)?,
        };
        let spec = ImageSpec::new(location.pool.clone(), location.namespace.clone(), name.clone());
        let txn = self.write_txn()?;
        let mut rec = Self::get_rec(&txn, id)?;
        match &rec.trash {
            Some(t) if t.source == TrashSource::User.as_str() => {}
            Some(_) => bail!(InvalidArgument, "trash entry '{id}' is being removed and cannot be restored"),
            None => bail!(NotFound, "trash entry '{id}' does not exist in '{location}'"),
        }
        if Self::name_taken(&txn, &spec)? {
            bail!(AlreadyExists, "image '{spec}' already exists: restore under another name");
        }
        {
            let mut names = txn.open_table(IMAGE_NAMES).map_err(db_err)?;
            names.insert((rec.pool.as_str(), rec.namespace.as_str(), name.as_str()), id).map_err(db_err)?;
            let mut trash = txn.open_table(TRASH).map_err(db_err)?;
            trash.remove((rec.pool.as_str(), rec.namespace.as_str(), id)).map_err(db_err)?;
        }
        rec.name = name.as_str().to_owned();
        rec.trash = None;
        Self::put_rec(&txn, &rec)?;
        txn.commit().map_err(db_err)
    }

    fn trash_remove(&self, location: &PoolNs, id: &str, force: TrashForce, progress: &Progress) -> Result<()> {
        let rec = self.trash_rec_in(location, id)?;
        let deferment_end = rec.trash.as_ref().map(|t| t.deferment_end).unwrap_or(0);
        if force == TrashForce::RespectDeferment && self.now().secs() < deferment_end {
            bail!(
                NotPermitted,
                "deferment time has not expired: '{}' is protected until {}; remove it with force to override",
                rec.name,
                Timestamp(deferment_end)
            );
        }
        progress.set(0, 1);
        self.remove_trashed(&rec)?;
        progress.set(1, 1);
        Ok(())
    }

    fn trash_purge(&self, pool: &PoolName, expired_before: Timestamp, progress: &Progress) -> Result<PurgeReport> {
        self.purge_expired(pool, None, expired_before, progress)
    }

    // --- trash purge schedules (engine/purge_schedule.rs) ----------------------------------------------------------

    fn trash_purge_schedule_add(&self, level: &ScheduleLevel, item: &ScheduleItem) -> Result<()> {
        self.schedule_add(level, item)
    }

    fn trash_purge_schedule_remove(&self, level: &ScheduleLevel, item: Option<&ScheduleItem>) -> Result<()> {
        self.schedule_remove(level, item)
    }

    fn trash_purge_schedule_list(&self, level: &ScheduleLevel, recursive: bool) -> Result<Vec<TrashPurgeSchedule>> {
        self.schedule_list(level, recursive)
    }

    fn trash_purge_schedule_status(&self, level: &ScheduleLevel) -> Result<Vec<ScheduledPurge>> {
        self.schedule_status(level)
    }

    fn trash_purge_schedule_run_due(&self, now: Timestamp) -> Result<Vec<(PoolNs, Result<PurgeReport>)>> {
        self.schedule_run_due(now)
    }

    // --- usage and diffs -----------------------------------------------------------------------------------------

    fn du(&self, spec: &ImageSpec) -> Result<Vec<DuEntry>> {
        let (state, id) = self.image_state(spec)?;
        let rec = self.store.read_image(&id)?;
        let mut out = Vec::new();
        let mut previous: Option<View> = None;
        for snap in &rec.snaps {
            let view = self.snap_view(&state, &rec, snap)?;
            let own = View { base: None, ..view.clone() };
            let extents = self.diff_views(previous.as_ref(), &own, DiffGranularity::Fine)?;
            out.push(DuEntry {
                snap: Some(SnapName::new(&snap.name)?),
                provisioned_bytes: snap.size,
                used_bytes: bytes_of(&extents),
            });
            previous = Some(own);
        }
        let head = View { base: None, ..state.head_read().view.clone() };
        let extents = self.diff_views(previous.as_ref(), &head, DiffGranularity::Fine)?;
        out.push(DuEntry { snap: None, provisioned_bytes: rec.size, used_bytes: bytes_of(&extents) });
        Ok(out)
    }

    fn diff(
        &self,
        spec: &ImageSpec,
        from: Option<&SnapName>,
        to: Option<&SnapName>,
        granularity: DiffGranularity,
    ) -> Result<Vec<DiffExtent>> {
        let (state, id) = self.image_state(spec)?;
        let rec = self.store.read_image(&id)?;
        let view_of = |name: Option<&SnapName>| -> Result<View> {
            match name {
                Some(name) => {
                    let snap = rec
                        .snap_by_name(name.as_str())
                        .ok_or_else(|| Error::not_found(format!("snapshot '{spec}@{name}' does not exist")))?;
                    self.snap_view(&state, &rec, snap)
                }
                None => Ok(state.head_read().view.clone()),
            }
        };
        let to_view = view_of(to)?;
        let from_view = match from {
            Some(name) => Some(view_of(Some(name))?),
            None => None,
        };
        if let (Some(f), Some(t)) = (from, to) {
            let (fs, ts) = (rec.snap_by_name(f.as_str()), rec.snap_by_name(t.as_str()));
            if let (Some(fs), Some(ts)) = (fs, ts)
                && fs.id > ts.id
            {
                bail!(InvalidArgument, "the from-snapshot '{f}' is newer than '{t}'");
            }
        }
        self.diff_views(from_view.as_ref(), &to_view, granularity)
    }

    // --- I/O -----------------------------------------------------------------------------------------------------

    fn open(&self, spec: &ImageSpec, target: &OpenTarget, client: &str) -> Result<Box<dyn ImageIo>> {
        let (state, id) = self.image_state(spec)?;
        let now = self.now();
        match target {
            OpenTarget::Head => Ok(Box::new(Handle::open_head(state, client, now, true)?)),
            OpenTarget::HeadReadOnly => Ok(Box::new(Handle::open_head(state, client, now, false)?)),
            OpenTarget::Snapshot(name) => {
                let _op = mutex_lock(&state.op);
                // Read before the records: a flatten after it raises it, and the view is built again.
                let generation = state.generation.load(std::sync::atomic::Ordering::SeqCst);
                let rec = self.store.read_image(&id)?;
                let snap = rec
                    .snap_by_name(name.as_str())
                    .ok_or_else(|| Error::not_found(format!("snapshot '{spec}@{name}' does not exist")))?;
                let view = self.snap_view(&state, &rec, snap)?;
                let snap_id = snap.id;
                // Registered as a watcher before the op lock goes: a snapshot removal, which takes that lock and
                // refuses while the snapshot has watchers, cannot come between the lookup and the registration.
                let handle = Handle::open_snapshot(state.clone(), (view, generation), snap_id, client, now);
                drop(_op);
                Ok(Box::new(handle))
            }
        }
    }
}

impl Engine {
    fn update_pool(&self, pool: &PoolName, change: impl FnOnce(&mut PoolRec) -> Result<()>) -> Result<()> {
        let txn = self.write_txn()?;
        {
            let mut pools = txn.open_table(POOLS).map_err(db_err)?;
            let mut rec: PoolRec = match pools.get(pool.as_str()).map_err(db_err)? {
                Some(v) => decode(v.value())?,
                None => bail!(NotFound, "pool '{pool}' does not exist"),
            };
            change(&mut rec)?;
            pools.insert(pool.as_str(), encode(&rec)?.as_slice()).map_err(db_err)?;
        }
        txn.commit().map_err(db_err)
    }

    /// Changes an image record that does not affect its data layout, under the image's op lock.
    fn update_rec(&self, spec: &ImageSpec, change: impl FnOnce(&mut ImageRec) -> Result<()>) -> Result<()> {
        let (state, id) = self.image_state(spec)?;
        let _op = mutex_lock(&state.op);
        let txn = self.write_txn()?;
        let mut rec = Self::get_rec(&txn, &id)?;
        change(&mut rec)?;
        rec.modified = self.now().secs();
        Self::put_rec(&txn, &rec)?;
        txn.commit().map_err(db_err)?;
        let mut head = state.head_write();
        state.refresh(&mut head, &rec)
    }

    fn change_features(&self, spec: &ImageSpec, features: Features, enable: bool) -> Result<()> {
        if features.is_empty() {
            bail!(InvalidArgument, "no features given");
        }
        Features::from_bits(features.bits())?;
        let allowed = if enable { Features::MUTABLE } else { Features::MUTABLE.union(Features::DISABLE_ONLY) };
        let not_allowed = features.difference(allowed);
        if !not_allowed.is_empty() {
            bail!(
                InvalidArgument,
                "feature(s) {not_allowed} cannot be {} after the image is created",
                if enable { "enabled" } else { "disabled" }
            );
        }
        if enable && features.contains(Features::JOURNALING) {
            bail!(NotSupported, "the journaling feature is not supported by the embedded engine");
        }
        self.update_rec(spec, |rec| {
            let current = Features::from_bits(rec.features)?;
            let mut next = if enable {
                if current.contains(features) {
                    bail!(InvalidArgument, "feature(s) {features} are already enabled");
                }
                current.union(features)
            } else {
                if !current.intersects(features) {
                    bail!(InvalidArgument, "feature(s) {features} are already disabled");
                }
                current.difference(features)
            };
            // object-map and fast-diff always move together, as in the reference.
            if enable && features.contains(Features::OBJECT_MAP) {
                next = next.union(Features::FAST_DIFF);
            }
            if enable && features.contains(Features::FAST_DIFF) && !next.contains(Features::OBJECT_MAP) {
                bail!(InvalidArgument, "fast-diff requires object-map: enable object-map too");
            }
            if !enable && features.intersects(Features::OBJECT_MAP.union(Features::FAST_DIFF)) {
                next = next.difference(Features::OBJECT_MAP.union(Features::FAST_DIFF));
            }
            if !enable
                && features.contains(Features::EXCLUSIVE_LOCK)
                && next.intersects(Features::OBJECT_MAP.union(Features::JOURNALING))
            {
                bail!(
                    InvalidArgument,
                    "exclusive-lock cannot be disabled while object-map or journaling is enabled: disable them first"
                );
            }
            next.check_dependencies()?;
            rec.features = next.bits();
            Ok(())
        })
    }

    /// After a flatten or a fold of `changed`'s image, rebuilds the views of it built before: those of its open
    /// snapshots, and the heads (and open snapshots) of every image in use that reads through one of its
    /// snapshots, clones of clones included. Heads are rebuilt here, open snapshots at their next use.
    /// - After a flatten, those views still read through its former parent. Nothing holds the parent's snapshot
    ///   any more, so it may be removed, and the fold that follows changes the layers they would go on reading (the
    ///   snapshot's own layer takes its neighbour's blocks).
    /// - After a fold, they read through the layer it deleted, whose files and bitmaps they keep (they read alike,
    ///   see `Layer::stay_resident`): built again, they let them go, and its space goes back to the file system.
    ///
    /// Best effort: the change it follows is committed, so a view that cannot be built again (a record gone
    /// meanwhile) is left as it is.
    fn rebuild_views_of(&self, changed: &ImageState) {
        use std::sync::atomic::Ordering;
        changed.generation.fetch_add(1, Ordering::SeqCst);
        for other in self.store.loaded_states() {
            if other.id == changed.id {
                continue;
            }
            // Walk up its parents: a chain of clones is short, and a cycle cannot be (a bound all the same).
            let Ok(rec) = self.store.read_image(&other.id) else { continue };
            let mut parent = rec.parent.as_ref().map(|p| p.image_id.clone());
            let mut depth = 0;
            let mut descends = false;
            while let Some(id) = parent {
                if id == changed.id {
                    descends = true;
                    break;
                }
                depth += 1;
                if depth > 64 {
                    break;
                }
                parent = self.store.read_image(&id).ok().and_then(|r| r.parent.map(|p| p.image_id));
            }
            if descends {
                other.generation.fetch_add(1, Ordering::SeqCst);
                // The record read under the head lock: a control operation commits and rebuilds under it too.
                let mut head = other.head_write();
                if let Ok(rec) = self.store.read_image(&other.id) {
                    let _ = other.refresh(&mut head, &rec);
                }
            }
        }
    }

    fn remove_snapshot_locked(&self, state: &ImageState, spec: &SnapSpec) -> Result<()> {
        let rec = self.store.read_image(&state.id)?;
        let snap = rec
            .snap_by_name(spec.snap.as_str())
            .ok_or_else(|| Error::not_found(format!("snapshot '{spec}' does not exist")))?;
        if snap.protected {
            bail!(Busy, "snapshot '{spec}' is protected from removal: unprotect it first");
        }
        let open = state.snapshot_watchers(snap.id);
        if open > 0 {
            bail!(Busy, "snapshot '{spec}' is open by {open} client(s): detach them first");
        }
        let snap_id = snap.id;
        let now = self.now().secs();
        self.update_image(state, |_, rec| {
            rec.snaps.retain(|s| s.id != snap_id);
            rec.modified = now;
            Ok(((), rec.unreachable_layers()))
        })?;
        match self.merge_hidden_layers(state) {
            // The snapshot is gone and the space only it held was given back (`give_back_hidden_blocks`); the
            // rest of the fold needs free space to copy into and is done by a later removal.
            Err(err) if err.kind() == ErrorKind::NoSpace => Ok(()),
            other => other,
        }
    }

    /// Folds layers that no snapshot owns and that only one layer reads through (left by snapshot removal) into that
    /// layer, so chains stay short and overwritten data is given back.
    fn merge_hidden_layers(&self, state: &ImageState) -> Result<()> {
        loop {
            let rec = self.store.read_image(&state.id)?;
            let Some((lower, upper)) = mergeable_pair(&rec) else { return Ok(()) };
            self.merge_pair(state, &rec, lower, upper)?;
        }
    }

    /// Merges hidden layer `lower` with its only child `upper`, copying whichever holds fewer blocks into the other.
    ///
    /// The copy runs beside the image's reads and writes: it never changes what a view reads (see each direction),
    /// and the head lock is taken only for what must not race a write: copying again what the head took during the
    /// copy, and committing the new chain. Layer files are removed after the lock is released.
    fn merge_pair(&self, state: &ImageState, rec: &ImageRec, lower: LayerRec, upper: LayerRec) -> Result<()> {
        let layout = layout_of(rec)?;
        let bpo = layout.blocks_per_object();
        let low = state.layer(rec, lower.id, bpo)?;
        let up = state.layer(rec, upper.id, bpo)?;
        self.store.folds.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.give_back_hidden_blocks(&layout, &low, &up, upper.min_size)?;
        // Data blocks decide (zero markers cost no copy of bytes), counted without reading any bitmap.
        let fold = Fold { state, layout, low, up, lower, upper };
        // The layer the fold deletes keeps its bitmaps in memory from here on (`Layer::stay_resident`); if the
        // fold fails, it stays and may evict them again.
        let merged = if fold.low.data_usage().0 <= fold.up.data_usage().0 {
            let merged = fold.low.stay_resident(true).and_then(|()| self.merge_up(&fold));
            if merged.is_err() {
                let _ = fold.low.stay_resident(false);
            }
            merged
        } else {
            let head_is_upper = rec.head_layer == fold.upper.id;
            if head_is_upper {
                fold.up.watch(true);
            }
            let merged = fold.up.stay_resident(true).and_then(|()| self.merge_down(&fold, head_is_upper));
            fold.up.watch(false);
            if merged.is_err() {
                let _ = fold.up.stay_resident(false);
            }
            merged
        };
        let dead = match merged {
            Err(err) if err.kind() == ErrorKind::NoSpace => {
                // The copy stopped on a full disk. What it copied is in both layers now: the upper one's (moved
                // up, or the original of what moved down) covers the lower one's, which nothing reads, so those
                // go back as the removal's own blocks did. Otherwise a removal meant to free space kept taking it.
                let _ = self.give_back_hidden_blocks(&fold.layout, &fold.low, &fold.up, fold.upper.min_size);
                return Err(err);
            }
            other => other?,
        };
        // Before the files go: views still holding the deleted layer let it go, so its space goes back now.
        self.rebuild_views_of(state);
        self.store.remove_layer_files(&dead);
        Ok(())
    }

    /// The lower layer's blocks that the upper one lacks and still shows move up; the lower layer goes.
    ///
    /// Views read the same throughout: a block copied up holds the bytes the view read from the lower layer. Each
    /// object is copied under its stripe locks, so a write to the head (the upper layer, if it is the head) either
    /// lands first (and the block is no longer absent there, so it is not copied) or waits for the copy and
    /// overwrites it.
    fn merge_up(&self, fold: &Fold) -> Result<Vec<u64>> {
        let Fold { state, layout, low, up, lower, upper } = fold;
        let bpo = layout.blocks_per_object();
        for object_no in low.objects() {
            let _stripes = state.locks.lock_blocks(bpo, object_no, 0, bpo - 1);
            let mut moving = Vec::new();
            for (blk, st) in low.present_blocks(object_no)? {
                if layout.unmap(object_no, blk << BLOCK_SHIFT) < upper.min_size
                    && up.state(object_no, blk)? == BlockSt::Absent
                {
                    moving.push((blk, st));
                }
            }
            copy_blocks(layout, low, up, object_no, &moving)?;
        }
        // Sync what was copied now, so the commit under the head lock has little left to sync.
        state.persist(|_| Ok(()))?;
        let min_size = lower.min_size.min(upper.min_size);
        let (upper_id, below) = (upper.id, lower.below);
        let ((), dead) = self.update_image_locked(state, &mut state.head_write(), |_, rec| {
            if let Some(l) = rec.layers.iter_mut().find(|l| l.id == upper_id) {
                l.below = below;
                l.min_size = min_size;
            }
            Ok(((), vec![lower.id]))
        })?;
        Ok(dead)
    }

    /// The upper layer's blocks overwrite the lower one's, blocks the upper layer hid by a shrink are dropped, and
    /// the lower layer takes the upper's place.
    ///
    /// Views read the same throughout: only the upper layer reads through the lower one, and every block copied
    /// down or dropped is one the upper layer covers (it has state for it, or hides it). When the upper layer is
    /// the head it keeps taking writes during the copy: it records the objects written (`watch`), and those are
    /// copied again, in passes, until few are left; the last of them are copied under the head lock, with no write
    /// in flight, right before the commit. The head never loses state for a block while the lower layer is under
    /// it (a discard leaves a zero marker), so a block copied down is never exposed by the head later.
    fn merge_down(&self, fold: &Fold, head_is_upper: bool) -> Result<Vec<u64>> {
        let Fold { state, layout, low, up, lower, upper } = fold;
        /// Passes over the objects written meanwhile before the rest is copied under the head lock, and how few
        /// objects are few enough for that.
        const PASSES: usize = 8;
        const LOCKED_OBJECTS: usize = 4;
        let copy_objects = |objects: &mut dyn Iterator<Item = u64>| -> Result<()> {
            for object_no in objects {
                copy_blocks(layout, up, low, object_no, &up.present_blocks(object_no)?)?;
            }
            Ok(())
        };
        copy_objects(&mut up.objects().into_iter())?;
        let mut pending = BTreeSet::new();
        if head_is_upper {
            for _ in 0..PASSES {
                pending = up.take_watched();
                if pending.len() <= LOCKED_OBJECTS {
                    break;
                }
                copy_objects(&mut std::mem::take(&mut pending).into_iter())?;
            }
        }
        // The lower layer's blocks the upper one hides were dropped before the fold (`give_back_hidden_blocks`).
        state.persist(|_| Ok(()))?;
        let min_size = lower.min_size.min(upper.min_size);
        let (upper_id, lower_id) = (upper.id, lower.id);
        let mut head = state.head_write();
        if head_is_upper {
            pending.extend(up.take_watched());
            copy_objects(&mut pending.into_iter())?;
        }
        let ((), dead) = self.update_image_locked(state, &mut head, |_, rec| {
            if rec.head_layer == upper_id {
                rec.head_layer = lower_id;
            }
            for snap in rec.snaps.iter_mut().filter(|s| s.layer == upper_id) {
                snap.layer = lower_id;
            }
            for l in rec.layers.iter_mut() {
                if l.below == Some(upper_id) {
                    l.below = Some(lower_id);
                }
                if l.id == lower_id {
                    l.min_size = min_size;
                }
            }
            Ok(((), vec![upper_id]))
        })?;
        Ok(dead)
    }

    /// Frees the blocks of hidden layer `low` that nothing reads any more: those its only child `up` covers (data
    /// or zero) or hides by its size floor `up_min_size`. They are logged absent in `low`, a checkpoint commits
    /// that together with `up`'s states (so after a crash nothing can read through to them), and then they are
    /// punched. This needs no free space, so a snapshot removal gives back what it frees even on a full disk,
    /// before the copying of the fold, which does need some (docs/FORMAT.md, "A full disk").
    fn give_back_hidden_blocks(
        &self,
        layout: &crate::layout::Layout,
        low: &Arc<crate::layer::Layer>,
        up: &crate::layer::Layer,
        up_min_size: u64,
    ) -> Result<()> {
        let mut runs: Vec<(u64, u64, u64)> = Vec::new();
        for object_no in low.objects() {
            for (blk, _) in low.present_blocks(object_no)? {
                let hidden = layout.unmap(object_no, blk << BLOCK_SHIFT) >= up_min_size;
                if !hidden && up.state(object_no, blk)? == BlockSt::Absent {
                    continue;
                }
                match runs.last_mut() {
                    Some((o, _, last)) if *o == object_no && *last + 1 == blk => *last = blk,
                    _ => runs.push((object_no, blk, blk)),
                }
            }
        }
        if runs.is_empty() {
            return Ok(());
        }
        for &(object_no, first, last) in &runs {
            let file_off = layout.file_offset(object_no, first << BLOCK_SHIFT);
            low.mark_blocks(object_no, first, last, BlockSt::Absent, file_off)?;
        }
        self.store.checkpoint(|_| Ok(()))?;
        for &(object_no, first, last) in &runs {
            let file_off = layout.file_offset(object_no, first << BLOCK_SHIFT);
            // A failed punch only keeps the space: the blocks are absent already.
            let _ = low.punch(file_off, (last - first + 1) << BLOCK_SHIFT);
        }
        if self.store.reserve.is_low() {
            self.store.reserve.refill(true);
        }
        Ok(())
    }

    /// Writes the data of the source (read through `view_of`, see `copy_data`) into the single layer of a new image
    /// record, then publishes the record;
    /// `publishing` is set once the copying is done and the publishing commit begins.
    fn fill_and_publish(
        &self,
        src_state: &ImageState,
        view_of: &dyn Fn() -> Result<View>,
        dest_rec: ImageRec,
        progress: &Progress,
        publishing: &mut bool,
    ) -> Result<()> {
        let dest_state = ImageState::detached(&self.store, &dest_rec.id);
        let dest_view = dest_state.build_view(&dest_rec, dest_rec.head_layer, dest_rec.size)?;
        self.copy_data(src_state, view_of, &dest_view, &dest_state, progress)?;
        *publishing = true;
        dest_state.persist(|txn| {
            let dest = Self::spec_of(&dest_rec)?;
            if Self::name_taken(txn, &dest)? {
                bail!(AlreadyExists, "image '{dest}' already exists");
            }
            Self::insert_new_image(txn, &dest_rec)
        })
    }
}
