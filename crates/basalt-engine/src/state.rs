//! In-memory state of an image in use: its layers, its head view, its watchers; and the I/O handle.
//!
//! One `ImageState` exists per image while anything uses it (a handle, a control operation, a clone's view), so
//! the data path and control operations see the same bitmaps.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use basalt_core::{
    BlockExtent, Durability, Error, ErrorKind, Features, FlushDone, ImageIo, Result, Timestamp, Watcher, ZeroMode,
};
use redb::ReadableDatabase;

use crate::journal::Journal;
use crate::layer::{Base, Dirty, Layer, ObjBits, Owner, StripeLocks, View, ViewLayer, mutex_lock};
use crate::layout::Layout;
use crate::records::{self, BLOCKS, ImageRec, db_err};
use crate::segments::{OpenFiles, SegmentedFile};
use crate::vfs::{Vfs, VfsFile};

/// Opens layer `id`'s file and checksum sidecar in `layers_dir`, each as its run of segments of `2^shift` bytes.
pub(crate) fn open_layer_files(
    vfs: &Arc<dyn Vfs>,
    files: &Arc<OpenFiles>,
    layers_dir: &std::path::Path,
    shift: u32,
    id: u64,
    create_sidecar: bool,
) -> std::io::Result<(Arc<dyn VfsFile>, Arc<dyn VfsFile>)> {
    let file = SegmentedFile::open(vfs, files, layers_dir, &crate::layer::layer_file_name(id), shift, false)?;
    let crc = SegmentedFile::open(vfs, files, layers_dir, &crate::layer::sidecar_name(id), shift, create_sidecar)?;
    Ok((file, crc))
}

/// What every image state needs of the engine: the disk, the store, the layer directory.
#[derive(Debug)]
pub(crate) struct Store {
    pub vfs: Arc<dyn Vfs>,
    pub db: Arc<redb::Database>,
    /// Which block bitmaps stay in memory.
    pub bitmaps: Arc<crate::bitcache::BitmapCache>,
    /// The data directory.
    pub root: PathBuf,
    pub layers_dir: PathBuf,
    /// Layer files and sidecars are cut into segments of `2^segment_shift` bytes (`segments.rs`).
    pub segment_shift: u32,
    /// The layer files open at once, under the limit of `EngineOptions::open_files`.
    pub open_files: Arc<OpenFiles>,
    pub images: Mutex<HashMap<String, std::sync::Weak<ImageState>>>,
    pub next_handle: AtomicU64,
    /// Set after a failed sync: the store refuses further changes until it is reopened.
    pub failed: Mutex<Option<String>>,
    /// Per pool, set while the pool's usage is at or over a quota (refreshed by `pool_list` and `pool_set_quota`).
    pub pool_full: Mutex<HashMap<String, Arc<AtomicBool>>>,
    /// The largest layer file length the file system was seen to hold (probed once per larger size).
    pub file_len_ok: std::sync::atomic::AtomicU64,
    /// Raised when a fold of hidden layers starts (`merge_pair`), before it changes any layer: a view built
    /// before may read through a layer the fold fills with blocks it must not show. Views of images in use
    /// follow their image's [`ImageState::generation`]; a copy's own view of its source, whose chain may have left
    /// the folded image since it was built (a flatten of the source's parent), checks this too.
    pub folds: std::sync::atomic::AtomicU64,
    /// The write-ahead journal of every layer change.
    pub journal: Arc<Journal>,
    /// Serialises checkpoints.
    pub checkpoint_lock: Mutex<()>,
    /// The first failed access of the metadata file that reached redb (`RedbFile::failure`): redb may have
    /// stopped since.
    pub db_failure: Arc<std::sync::OnceLock<String>>,
    /// Space kept for the metadata store on a full disk.
    pub reserve: Arc<crate::space::MetaReserve>,
    /// Checksum errors seen since the store opened.
    pub integrity: Arc<crate::integrity::Integrity>,
    /// The data directory's lock. Declared last, so it is released only after everything above, the metadata
    /// store included, is closed: another process (or a reopen) never finds the lock free while this store still
    /// writes.
    pub _lock: Box<dyn std::fmt::Debug + Send + Sync>,
}

impl Drop for Store {
    fn drop(&mut self) {
        // A clean close leaves nothing to replay and no dirty mark. A failure here loses nothing: the journal and
        // the marks' rows still hold it all.
        let _ = self.checkpoint_with(|_| Ok(()), true);
        self.journal.shutdown();
    }
}

impl Store {
    /// Refuses work after a failed sync.
    pub fn check_healthy(&self) -> Result<()> {
        match &*mutex_lock(&self.failed) {
            Some(why) => Err(Error::io(format!(
                "the store stopped after an i/o error ({why}): restart basalt to reopen it consistently"
            ))),
            None => self.journal.check_healthy(),
        }
    }

    /// Why the store refuses every change until it is reopened, once it does: the message of the refusal after a
    /// failed sync of a layer file or the journal, or after redb stopped on a failed access of its file.
    pub fn stopped(&self) -> Option<String> {
        if let Err(err) = self.check_healthy() {
            return Some(err.message().to_owned());
        }
        self.db_failure.get()?;
        // redb stops after every failed access but the write-back of pages it evicts from its cache (it keeps the
        // page and writes it again later), so a failure seen is confirmed by asking redb: a stopped redb refuses a
        // write transaction before anything else, without waiting and without I/O.
        match self.db.try_begin_write() {
            Err(redb::TransactionError::Storage(redb::StorageError::PreviousIo)) => {
                Some(db_err(redb::StorageError::PreviousIo).message().to_owned())
            }
            _ => None,
        }
    }

    /// Moves every changed bitmap from memory to the metadata store, together with `extra` writes in the same
    /// transaction, and records that the journal's records up to that point are applied (docs/FORMAT.md,
    /// "Checkpoints"). This is the only way bitmaps reach the store: layer files are synced first.
    pub fn checkpoint(&self, extra: impl FnOnce(&redb::WriteTransaction) -> Result<()>) -> Result<()> {
        self.checkpoint_with(extra, false)
    }

    /// [`Store::checkpoint`]; `closing` (nothing can be in flight) also drops every dirty mark.
    fn checkpoint_with(&self, extra: impl FnOnce(&redb::WriteTransaction) -> Result<()>, closing: bool) -> Result<()> {
        let result = self.checkpoint_locked(extra, closing);
        // The copies of the bitmaps are gone, and writes evicted clean bitmaps since the last checkpoint.
        self.bitmaps.release_freed();
        result
    }

    fn checkpoint_locked(
        &self,
        extra: impl FnOnce(&redb::WriteTransaction) -> Result<()>,
        closing: bool,
    ) -> Result<()> {
        let _one = mutex_lock(&self.checkpoint_lock);
        self.check_healthy()?;
        // Under the exclusive freeze lock no record is being logged: every record up to `applied` has its bits set
        // in the bitmaps taken here, and its bytes were written to the layer file before.
        let (applied, taken, epoch, mut deferred) = {
            let _frozen = self.journal.freeze();
            let applied = self.journal.last_seq();
            // A layer's usage counts, read here, match the bitmaps taken with it: no bit changes while frozen.
            let taken: Vec<(Arc<Layer>, Dirty, (u64, u64))> = self
                .journal
                .take_changed()
                .into_iter()
                .map(|l| {
                    let dirty = l.take_dirty();
                    let usage = l.data_usage();
                    (l, dirty, usage)
                })
                .collect();
            // Each block's newest deferred version up to `applied` (docs/FORMAT.md, "Deferred overwrites").
            let deferred: Vec<_> = taken.iter().map(|(l, _, _)| l.copy_deferred()).collect();
            // Overwrites that entered the in-flight set before this point may be covered only by dirty-object
            // records up to `applied`: they must be in the files before the syncs below (docs/FORMAT.md, "The
            // hard part").
            let epoch = self.journal.bump_overwrite_epoch();
            (applied, taken, epoch, deferred)
        };
        // Applied in block order: neighbours go out in one write.
        for copied in &mut deferred {
            copied.sort_unstable_by_key(|&(block, _)| block);
        }
        // The copies just taken are charged to the bitmap budget: clean bitmaps make room for them.
        self.bitmaps.evict_if_over();
        self.journal.wait_overwrites_before(epoch);
        // Every change in flight in the frozen epoch has left: the marks in use then carry over through their rows
        // (docs/FORMAT.md, "Marks that outlive a checkpoint").
        let mark_rows = self.journal.visit_marks(epoch - 1, closing);
        let integrity = self.integrity.take_changed();
        let result = (|| -> Result<()> {
            if deferred.iter().any(|d| !d.is_empty()) {
                // The versions written below go over blocks the metadata store calls data: their records must be
                // durable first, so replay can rewrite whatever a power cut leaves of them.
                let synced = self.journal.sync_appended()?;
                for ((layer, _, _), copied) in taken.iter().zip(&deferred) {
                    if let Err(err) = layer.apply_copied(copied, synced) {
                        self.fail(&err);
                        return Err(err);
                    }
                }
            }
            for (layer, _, _) in &taken {
                if let Err(err) = layer.sync_if_needed() {
                    // After a failed sync the kernel may have dropped the unsynced pages and a retry could
                    // succeed without them: stop rather than acknowledge data that may be gone.
                    self.fail(&err);
                    return Err(err);
                }
            }
            let txn = self.db.begin_write().map_err(db_err)?;
            self.integrity.save(&txn, &integrity)?;
            {
                let mut blocks = txn.open_table(BLOCKS).map_err(db_err)?;
                let mut usage = txn.open_table(records::LAYER_USAGE).map_err(db_err)?;
                for (layer, dirty, counts) in &taken {
                    usage.insert(layer.id, *counts).map_err(db_err)?;
                    for (object_no, bits) in dirty.rows() {
                        match bits {
                            Some(bytes) => blocks.insert((layer.id, object_no), bytes).map_err(db_err)?,
                            None => blocks.remove((layer.id, object_no)).map_err(db_err)?,
                        };
                    }
                }
                let mut dirty = txn.open_table(records::DIRTY_OBJECTS).map_err(db_err)?;
                for key in &mark_rows.insert {
                    dirty.insert(*key, ()).map_err(db_err)?;
                }
                for key in &mark_rows.delete {
                    dirty.remove(*key).map_err(db_err)?;
                }
                let mut meta = txn.open_table(records::META).map_err(db_err)?;
                meta.insert(records::JOURNAL_APPLIED, applied).map_err(db_err)?;
            }
            extra(&txn)?;
            txn.commit().map_err(db_err)?;
            Ok(())
        })();
        match &result {
            Ok(()) => {
                self.journal.set_applied(applied);
                self.journal.count_checkpoint();
                for (layer, _, _) in &taken {
                    layer.committed();
                }
                // A commit that drew on the reserve is made good as soon as the disk has room again.
                if self.reserve.is_low() {
                    self.reserve.refill(true);
                }
            }
            Err(_) => {
                self.journal.rows_not_written(mark_rows);
                self.integrity.restore_changed(integrity);
                for (layer, dirty, _) in taken {
                    layer.restore_dirty(dirty.objects());
                    self.journal.note_changed(&layer);
                }
            }
        }
        self.journal.checkpoint_ended();
        result
    }

    /// Stops the store after a failed sync, and its journal with it: the kernel may have dropped the pages it could
    /// not write, and a later sync of the same file (a flush's, for kind-2 data) could succeed without them, so no
    /// flush may be acknowledged from here on.
    pub fn fail(&self, err: &Error) {
        mutex_lock(&self.failed).get_or_insert_with(|| err.message().to_owned());
        self.journal.stop(err.message());
    }

    /// The full flag of a pool (the data pool of images that have one).
    pub fn pool_full_flag(&self, pool: &str) -> Arc<AtomicBool> {
        mutex_lock(&self.pool_full).entry(pool.to_owned()).or_default().clone()
    }

    /// Creates an empty layer file and its checksum sidecar (their first segments) and makes their directory
    /// entries durable, before any record refers to them.
    pub fn create_layer_file(&self, id: u64) -> Result<()> {
        self.vfs.open(&self.layers_dir.join(crate::layer::layer_file_name(id)), true)?;
        self.vfs.open(&self.layers_dir.join(crate::layer::sidecar_name(id)), true)?;
        self.vfs.sync_dir(&self.layers_dir)?;
        Ok(())
    }

    /// Opens a layer's file and its checksum sidecar, each as its run of segments.
    pub fn open_layer_files(&self, id: u64) -> std::io::Result<(Arc<dyn VfsFile>, Arc<dyn VfsFile>)> {
        open_layer_files(&self.vfs, &self.open_files, &self.layers_dir, self.segment_shift, id, false)
    }

    /// Removes layer files (every segment) after the records that referred to them are gone; failures leave
    /// orphans for the next open.
    pub fn remove_layer_files(&self, ids: &[u64]) {
        if ids.is_empty() {
            return;
        }
        // Views built before the change that made these layers dead may still read through them.
        self.open_files.hold_open(ids);
        let ids: std::collections::HashSet<u64> = ids.iter().copied().collect();
        let names = self.vfs.list(&self.layers_dir).unwrap_or_default();
        for name in names {
            if crate::segments::layer_id_of(&name).is_some_and(|id| ids.contains(&id)) {
                let _ = self.vfs.remove(&self.layers_dir.join(name));
            }
        }
        let _ = self.vfs.sync_dir(&self.layers_dir);
        // The space that came back refills the metadata reserve first.
        if self.reserve.is_low() {
            self.reserve.refill(true);
        }
    }

    /// Returns the state of an image, loading it if nobody uses it now.
    pub fn state(self: &Arc<Store>, id: &str) -> Result<Arc<ImageState>> {
        if let Some(state) = self.loaded_state(id) {
            return Ok(state);
        }
        // Build outside the registry lock (a clone's view loads its parent), then publish; if another thread
        // published first, use theirs so there is only ever one state per image.
        let rec = self.read_image(id)?;
        let state = Arc::new(ImageState {
            id: id.to_owned(),
            store: self.clone(),
            head: RwLock::new(Head::placeholder(&rec)?),
            locks: StripeLocks::default(),
            op: Mutex::new(()),
            layers: Mutex::new(HashMap::new()),
            watchers: Mutex::new(Vec::new()),
            pool_full: self.pool_full_flag(rec.data_pool.as_deref().unwrap_or(&rec.pool)),
            generation: AtomicU64::new(0),
        });
        let head = state.build_head(&rec)?;
        *state.head_write() = head;
        let mut images = mutex_lock(&self.images);
        if let Some(existing) = images.get(id).and_then(std::sync::Weak::upgrade) {
            return Ok(existing);
        }
        images.retain(|_, w| w.strong_count() > 0);
        images.insert(id.to_owned(), Arc::downgrade(&state));
        Ok(state)
    }

    /// Forgets an image that was removed.
    pub fn forget(&self, id: &str) {
        mutex_lock(&self.images).remove(id);
    }

    /// The states of every image something uses now.
    pub fn loaded_states(&self) -> Vec<Arc<ImageState>> {
        mutex_lock(&self.images).values().filter_map(std::sync::Weak::upgrade).collect()
    }

    /// Returns the state of an image only if something uses it now.
    pub fn loaded_state(&self, id: &str) -> Option<Arc<ImageState>> {
        mutex_lock(&self.images).get(id).and_then(std::sync::Weak::upgrade)
    }

    /// Reads an image record by id.
    pub fn read_image(&self, id: &str) -> Result<ImageRec> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(records::IMAGES).map_err(db_err)?;
        records::get_image(&table, id)?.ok_or_else(gone)
    }
}

/// The error for an image whose record went away while an operation was looking it up (removed meanwhile).
pub(crate) fn gone() -> Error {
    Error::not_found("the image no longer exists: it was removed while this operation ran")
}

/// What the data path needs of the head: its view and the features that change behaviour.
#[derive(Debug)]
pub(crate) struct Head {
    pub view: View,
    pub features: Features,
}

impl Head {
    fn placeholder(rec: &ImageRec) -> Result<Head> {
        Ok(Head { view: View::new(layout_of(rec)?, 0, Vec::new(), None), features: Features::NONE })
    }
}

/// Layout of an image record.
pub(crate) fn layout_of(rec: &ImageRec) -> Result<Layout> {
    let order = basalt_core::ObjectOrder::new(rec.order)?;
    Ok(Layout { order, striping: basalt_core::Striping::new(rec.stripe_unit, rec.stripe_count, order)? })
}

#[derive(Debug, Clone)]
struct WatcherEntry {
    handle: u64,
    watcher: Watcher,
    snap_id: Option<u64>,
}

/// An image in use.
#[derive(Debug)]
pub(crate) struct ImageState {
    pub id: String,
    store: Arc<Store>,
    head: RwLock<Head>,
    pub locks: StripeLocks,
    /// Serialises control operations on this image; taken before `head` and before any write transaction.
    pub op: Mutex<()>,
    layers: Mutex<HashMap<u64, Arc<Layer>>>,
    watchers: Mutex<Vec<WatcherEntry>>,
    /// The pool's full flag: writes through handles answer EDQUOT while it is set.
    pub pool_full: Arc<AtomicBool>,
    /// Raised when views of this image built before should not be read any more: after a flatten of the image or
    /// of an image it is cloned from (its parent's snapshot may then go), or a fold there (they hold the layer it
    /// deleted). Open snapshots rebuild their view at their next use.
    pub generation: AtomicU64,
}

impl ImageState {
    /// A state for an image whose record is not published yet (copy destinations); not in the registry.
    pub fn detached(store: &Arc<Store>, id: &str) -> ImageState {
        ImageState {
            id: id.to_owned(),
            store: store.clone(),
            head: RwLock::new(Head {
                view: View::new(
                    Layout {
                        order: basalt_core::ObjectOrder::default(),
                        striping: basalt_core::Striping::none(basalt_core::ObjectOrder::default()),
                    },
                    0,
                    Vec::new(),
                    None,
                ),
                features: Features::NONE,
            }),
            locks: StripeLocks::default(),
            op: Mutex::new(()),
            layers: Mutex::new(HashMap::new()),
            watchers: Mutex::new(Vec::new()),
            pool_full: Arc::default(),
            generation: AtomicU64::new(0),
        }
    }

    pub fn head_read(&self) -> RwLockReadGuard<'_, Head> {
        self.head.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn head_write(&self) -> RwLockWriteGuard<'_, Head> {
        self.head.write().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Returns layer `id` of `rec` (this image's record), loading its bitmaps from the store on first use.
    pub fn layer(&self, rec: &ImageRec, id: u64, blocks_per_object: u64) -> Result<Arc<Layer>> {
        let mut layers = mutex_lock(&self.layers);
        if let Some(layer) = layers.get(&id) {
            return Ok(layer.clone());
        }
        // A layer changed since the last checkpoint is still in memory: its bitmaps in the store are behind.
        if let Some(layer) = self.store.journal.changed_layer(id) {
            layers.insert(id, layer.clone());
            return Ok(layer);
        }
        let (file, crc) = self.store.open_layer_files(id).map_err(|e| {
            Error::io(format!("a layer file of image '{}' cannot be opened ({e}): run fsck", rec.spec_text()))
        })?;
        let txn = self.store.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(BLOCKS).map_err(db_err)?;
        let stored = table.range((id, 0u64)..=(id, u64::MAX)).map_err(db_err)?.map(|entry| {
            let (key, value) = entry.map_err(db_err)?;
            Ok((key.value().1, ObjBits::decode(value.value(), blocks_per_object)?))
        });
        let owner = Owner { image_id: rec.id.clone(), label: rec.spec_text(), integrity: self.store.integrity.clone() };
        let (journal, bitmaps) = (self.store.journal.clone(), self.store.bitmaps.clone());
        let layer = Arc::new(Layer::open(id, (file, crc), owner, blocks_per_object, stored, journal, bitmaps)?);
        self.store.bitmaps.register(&layer);
        layers.insert(id, layer.clone());
        Ok(layer)
    }

    /// Forgets layers that no record refers to any more.
    pub fn drop_layers(&self, ids: &[u64]) {
        let mut layers = mutex_lock(&self.layers);
        for id in ids {
            layers.remove(id);
        }
        self.store.journal.forget_layers(ids);
    }

    /// Returns every loaded layer.
    pub fn loaded_layers(&self) -> Vec<Arc<Layer>> {
        mutex_lock(&self.layers).values().cloned().collect()
    }

    /// Builds the view whose top layer is `top` and whose size is `size`.
    pub fn build_view(&self, rec: &ImageRec, top: u64, size: u64) -> Result<View> {
        let layout = layout_of(rec)?;
        let bpo = layout.blocks_per_object();
        let mut chain = Vec::new();
        for id in rec.chain(top)? {
            let min_size = rec.layer(id)?.min_size;
            chain.push(ViewLayer { layer: self.layer(rec, id, bpo)?, min_size });
        }
        let base = match &rec.parent {
            Some(parent) => {
                let parent_state = self.store.state(&parent.image_id)?;
                let parent_rec = self.store.read_image(&parent.image_id)?;
                let snap = parent_rec.snap_by_id(parent.snap_id).ok_or_else(|| {
                    Error::io(format!("the parent snapshot of image '{}' is missing: run fsck", rec.spec_text()))
                })?;
                let view = parent_state.build_view(&parent_rec, snap.layer, snap.size)?;
                Some(Base { view: Arc::new(view), overlap: parent.overlap, _keep_alive: Some(parent_state) })
            }
            None => None,
        };
        Ok(View::new(layout, size, chain, base))
    }

    /// Builds the head from a record.
    pub fn build_head(&self, rec: &ImageRec) -> Result<Head> {
        Ok(Head { view: self.build_view(rec, rec.head_layer, rec.size)?, features: Features::from_bits(rec.features)? })
    }

    /// Replaces the head after a control operation committed `rec`.
    pub fn refresh(&self, head: &mut Head, rec: &ImageRec) -> Result<()> {
        *head = self.build_head(rec)?;
        Ok(())
    }

    /// Commits `extra` together with every changed bitmap of the store (a checkpoint, see [`Store::checkpoint`]).
    pub fn persist(&self, extra: impl FnOnce(&redb::WriteTransaction) -> Result<()>) -> Result<()> {
        self.store.checkpoint(extra)
    }

    /// Makes every acknowledged write to this image durable: waits for the journal's group commit to cover the
    /// records its layers logged; returns at once, with no sync, when they are durable already.
    pub fn flush(&self) -> Result<()> {
        let (target, large) = self.flush_targets();
        self.store.journal.sync_through(target, large)
    }

    /// [`ImageState::flush`] that calls `done` instead of waiting ([`Journal::sync_later`]).
    pub fn flush_later(&self, done: FlushDone) -> std::result::Result<(), FlushDone> {
        let (target, large) = self.flush_targets();
        self.store.journal.sync_later(target, large, done)
    }

    /// [`ImageState::flush`] on the caller's thread only when it takes at most one sync of the journal and no
    /// other flush runs or waits ([`Journal::try_sync_now`]).
    pub fn try_flush_now(&self) -> Option<Result<()>> {
        let (target, large) = self.flush_targets();
        self.store.journal.try_sync_now(target, large)
    }

    /// What a flush must make durable: the journal through the last record of any of the image's layers, and the
    /// kind-2 bytes through their last such record.
    fn flush_targets(&self) -> (u64, u64) {
        let (mut target, mut large) = (0, 0);
        for layer in self.loaded_layers() {
            layer.note_flush();
            let (t, l) = layer.flush_targets();
            target = target.max(t);
            large = large.max(l);
        }
        (target, large)
    }

    fn add_watcher(&self, watcher: Watcher, snap_id: Option<u64>) -> u64 {
        let handle = self.store.next_handle.fetch_add(1, Ordering::Relaxed);
        mutex_lock(&self.watchers).push(WatcherEntry { handle, watcher, snap_id });
        handle
    }

    fn remove_watcher(&self, handle: u64) {
        mutex_lock(&self.watchers).retain(|w| w.handle != handle);
    }

    /// Clients with the image open.
    pub fn watchers(&self) -> Vec<Watcher> {
        mutex_lock(&self.watchers).iter().map(|w| w.watcher.clone()).collect()
    }

    /// Clients with a snapshot open.
    pub fn snapshot_watchers(&self, snap_id: u64) -> usize {
        mutex_lock(&self.watchers).iter().filter(|w| w.snap_id == Some(snap_id)).count()
    }
}

/// Describes who holds an image, for error messages.
pub(crate) fn describe_watchers(watchers: &[Watcher]) -> String {
    watchers.iter().map(|w| w.client.as_str()).collect::<Vec<_>>().join(", ")
}

/// What a handle reads and writes.
#[derive(Debug)]
enum Target {
    Head {
        writable: bool,
    },
    /// A snapshot's view, with the image's [`ImageState::generation`] it was built in, and the snapshot's id.
    Snapshot(Mutex<(u64, Arc<View>)>, u64),
}

/// An open image or snapshot.
#[derive(Debug)]
pub(crate) struct Handle {
    state: Arc<ImageState>,
    handle: u64,
    target: Target,
}

impl Handle {
    /// Opens the head; `writable` handles take the exclusive lock where the feature is on.
    pub fn open_head(state: Arc<ImageState>, client: &str, now: Timestamp, writable: bool) -> Result<Handle> {
        let watchers = mutex_lock(&state.watchers);
        if writable && state.head_read().features.contains(Features::EXCLUSIVE_LOCK) {
            let holders: Vec<Watcher> =
                watchers.iter().filter(|w| w.watcher.writable).map(|w| w.watcher.clone()).collect();
            if !holders.is_empty() {
                return Err(Error::busy(format!(
                    "image is locked by another client ({}): the exclusive-lock feature allows one writer at a time",
                    describe_watchers(&holders)
                )));
            }
        }
        drop(watchers);
        let handle = state.add_watcher(Watcher { client: client.to_owned(), since: now, writable }, None);
        Ok(Handle { state, handle, target: Target::Head { writable } })
    }

    /// Opens a snapshot, read-only; `view` was built in the image's `generation`.
    pub fn open_snapshot(
        state: Arc<ImageState>,
        (view, generation): (View, u64),
        snap_id: u64,
        client: &str,
        now: Timestamp,
    ) -> Handle {
        let handle =
            state.add_watcher(Watcher { client: client.to_owned(), since: now, writable: false }, Some(snap_id));
        Handle { state, handle, target: Target::Snapshot(Mutex::new((generation, Arc::new(view))), snap_id) }
    }

    /// The view of an open snapshot, built again first if a flatten since may have left it reading through to a
    /// parent whose layers can now change ([`ImageState::generation`]).
    fn snapshot_view(&self, built: &Mutex<(u64, Arc<View>)>, snap_id: u64) -> Result<Arc<View>> {
        let mut built = mutex_lock(built);
        let generation = self.state.generation.load(Ordering::SeqCst);
        if built.0 != generation {
            let rec = self.state.store.read_image(&self.state.id)?;
            let snap = rec
                .snap_by_id(snap_id)
                .ok_or_else(|| Error::not_found("the snapshot no longer exists: it was removed while open"))?;
            *built = (generation, Arc::new(self.state.build_view(&rec, snap.layer, snap.size)?));
        }
        Ok(built.1.clone())
    }

    /// Runs `f` on the view this handle reads (the head under its read lock, or the snapshot), once the range
    /// `offset..offset + len` is checked against its size.
    fn with_view<R>(&self, offset: u64, len: u64, f: impl FnOnce(&View) -> Result<R>) -> Result<R> {
        match &self.target {
            Target::Head { .. } => {
                let head = self.state.head_read();
                check_range(offset, len, head.view.size)?;
                f(&head.view)
            }
            Target::Snapshot(built, snap_id) => {
                let view = self.snapshot_view(built, *snap_id)?;
                check_range(offset, len, view.size)?;
                f(&view)
            }
        }
    }

    fn writable_head(&self) -> Result<RwLockReadGuard<'_, Head>> {
        match self.target {
            Target::Head { writable: true } => Ok(self.state.head_read()),
            Target::Head { writable: false } => Err(Error::new(ErrorKind::ReadOnly, "image is open read-only")),
            Target::Snapshot(..) => Err(Error::new(ErrorKind::ReadOnly, "snapshots are read-only")),
        }
    }

    fn after_write(&self, durability: Durability) -> Result<()> {
        match durability {
            Durability::Buffered => Ok(()),
            Durability::ForceUnitAccess => self.state.flush(),
        }
    }
}

fn check_range(offset: u64, length: u64, size: u64) -> Result<()> {
    match offset.checked_add(length) {
        Some(end) if end <= size => Ok(()),
        _ => Err(Error::invalid(format!("i/o at offset {offset} length {length} is beyond the image size {size}"))),
    }
}

impl ImageIo for Handle {
    fn size_bytes(&self) -> u64 {
        match &self.target {
            Target::Head { .. } => self.state.head_read().view.size,
            Target::Snapshot(built, _) => mutex_lock(built).1.size,
        }
    }

    fn is_read_only(&self) -> bool {
        !matches!(self.target, Target::Head { writable: true })
    }

    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.with_view(offset, buf.len() as u64, |view| view.read(offset, buf))
    }

    fn read_sparse(&self, offset: u64, buf: &mut [u8]) -> Result<Vec<BlockExtent>> {
        self.with_view(offset, buf.len() as u64, |view| view.read_sparse(offset, buf))
    }

    fn write(&self, offset: u64, data: &[u8], durability: Durability) -> Result<()> {
        {
            let head = self.writable_head()?;
            if self.state.pool_full.load(Ordering::Relaxed) {
                return Err(Error::new(
                    ErrorKind::QuotaExceeded,
                    "the pool is full: it reached its quota (pool set-quota)",
                ));
            }
            check_range(offset, data.len() as u64, head.view.size)?;
            head.view.write(&self.state.locks, offset, data)?;
        }
        self.after_write(durability)
    }

    fn try_write_now(&self, offset: u64, data: &[u8]) -> Option<Result<()>> {
        // Anything unusual (a read-only handle, a full pool, a range past the end) goes the usual way, which
        // reports it.
        if !matches!(self.target, Target::Head { writable: true }) || self.state.pool_full.load(Ordering::Relaxed) {
            return None;
        }
        let head = self.state.head.try_read().ok()?;
        check_range(offset, data.len() as u64, head.view.size).ok()?;
        head.view.try_write(&self.state.locks, offset, data)
    }

    fn discard(&self, offset: u64, length: u64, durability: Durability) -> Result<()> {
        self.write_zeroes(offset, length, ZeroMode::MayUnmap, durability)
    }

    fn write_zeroes(&self, offset: u64, length: u64, mode: ZeroMode, durability: Durability) -> Result<()> {
        {
            let head = self.writable_head()?;
            check_range(offset, length, head.view.size)?;
            match mode {
                ZeroMode::MayUnmap => head.view.zero(&self.state.locks, offset, length)?,
                ZeroMode::KeepAllocated => {
                    let zeros = vec![0u8; 1 << 20];
                    let mut done = 0u64;
                    while done < length {
                        let n = (length - done).min(zeros.len() as u64);
                        head.view.write(&self.state.locks, offset + done, &zeros[..n as usize])?;
                        done += n;
                    }
                }
            }
        }
        self.after_write(durability)
    }

    fn flush(&self) -> Result<()> {
        match self.target {
            Target::Head { writable: true } => self.state.flush(),
            _ => Ok(()),
        }
    }

    fn flush_async(&self, done: FlushDone) -> std::result::Result<(), FlushDone> {
        match self.target {
            Target::Head { writable: true } => self.state.flush_later(done),
            _ => {
                done(Ok(()));
                Ok(())
            }
        }
    }

    fn try_flush_now(&self) -> Option<Result<()>> {
        match self.target {
            Target::Head { writable: true } => self.state.try_flush_now(),
            _ => Some(Ok(())),
        }
    }

    fn block_status(&self, offset: u64, length: u64) -> Result<Vec<BlockExtent>> {
        match &self.target {
            Target::Head { .. } => {
                let head = self.state.head_read();
                check_range(offset, length, head.view.size)?;
                head.view.block_status(offset, length)
            }
            Target::Snapshot(built, snap_id) => {
                let view = self.snapshot_view(built, *snap_id)?;
                check_range(offset, length, view.size)?;
                view.block_status(offset, length)
            }
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        // Closing flushes, as closing an RBD image does; an error here has no caller to go to, and the writes
        // were never acknowledged as durable.
        if matches!(self.target, Target::Head { writable: true }) {
            let _ = self.state.flush();
        }
        self.state.remove_watcher(self.handle);
    }
}
