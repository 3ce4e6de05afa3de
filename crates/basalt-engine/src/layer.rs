//! Layers and views: how a block is found, read, written and zeroed.
//!
//! A layer is a sparse file plus a bitmap per object saying, for each 4 KiB block, whether the layer holds its
//! data, holds a zero marker, or has nothing (the block reads through to the layer below). A view is a stack of
//! layers, newest first, optionally over a parent snapshot's view: the head of an image, or one of its snapshots.
//! Writes only ever touch the top layer of the head view, so a snapshot is O(1) and a small write after it copies
//! at most one 4 KiB block.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use basalt_core::{BlockExtent, BlockState, Error, ErrorKind, Result};

use crate::bitcache::{BitmapCache, ObjectSet};
use crate::checksum;
use crate::deferred::{Apply, Deferred, DeferredMap};
use crate::integrity::Integrity;
use crate::journal::{Body, INLINE_MAX, Journal, Kind, Logged, Place};
use crate::layout::{BLOCK_SHIFT, BLOCK_SIZE, Layout, Piece};
use crate::vfs::VfsFile;

/// The state of one block in one layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockSt {
    /// The layer has nothing: read the layer below.
    Absent,
    /// The layer holds the block's data in its file.
    Data,
    /// The block reads as zeros, whatever lower layers hold.
    Zero,
}

/// Block states of one object in one layer: two bitsets, data then zero, in one allocation (a bitmap in memory
/// costs its words and one allocation header, see [`LayerMap::bitmap_bytes`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjBits {
    words: Box<[u64]>,
}

impl ObjBits {
    pub(crate) fn new(blocks: u64) -> ObjBits {
        let words = blocks.div_ceil(64) as usize;
        ObjBits { words: vec![0; 2 * words].into_boxed_slice() }
    }

    fn data(&self) -> &[u64] {
        &self.words[..self.words.len() / 2]
    }

    fn zero(&self) -> &[u64] {
        &self.words[self.words.len() / 2..]
    }

    fn get(&self, blk: u64) -> BlockSt {
        let (w, b) = ((blk / 64) as usize, blk % 64);
        if self.data()[w] >> b & 1 == 1 {
            BlockSt::Data
        } else if self.zero()[w] >> b & 1 == 1 {
            BlockSt::Zero
        } else {
            BlockSt::Absent
        }
    }

    /// Sets a block's state; returns true when it changed.
    pub(crate) fn set(&mut self, blk: u64, st: BlockSt) -> bool {
        let half = self.words.len() / 2;
        let (d, z) = ((blk / 64) as usize, half + (blk / 64) as usize);
        let mask = 1u64 << (blk % 64);
        let before = (self.words[d] & mask, self.words[z] & mask);
        self.words[d] &= !mask;
        self.words[z] &= !mask;
        match st {
            BlockSt::Data => self.words[d] |= mask,
            BlockSt::Zero => self.words[z] |= mask,
            BlockSt::Absent => {}
        }
        before != (self.words[d] & mask, self.words[z] & mask)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.words.iter().all(|w| *w == 0)
    }

    /// Every block that is data or zero, in order, visiting only the set bits.
    pub(crate) fn present(&self) -> impl Iterator<Item = (u64, BlockSt)> + '_ {
        self.data().iter().zip(self.zero()).enumerate().flat_map(|(w, (&data, &zero))| {
            let mut bits = data | zero;
            std::iter::from_fn(move || {
                if bits == 0 {
                    return None;
                }
                let b = u64::from(bits.trailing_zeros());
                bits &= bits - 1;
                let st = if data >> b & 1 == 1 { BlockSt::Data } else { BlockSt::Zero };
                Some((w as u64 * 64 + b, st))
            })
        })
    }

    /// How many blocks hold data.
    pub fn data_blocks(&self) -> u64 {
        data_count(self)
    }

    /// Encodes as little-endian words: data bitset then zero bitset.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.words.len() * 8);
        self.encode_into(&mut out);
        out
    }

    /// Appends [`ObjBits::encode`]'s bytes to `out`.
    fn encode_into(&self, out: &mut Vec<u8>) {
        for w in &self.words {
            out.extend_from_slice(&w.to_le_bytes());
        }
    }

    /// Decodes what [`ObjBits::encode`] wrote for an object of `blocks` blocks.
    pub fn decode(bytes: &[u8], blocks: u64) -> Result<ObjBits> {
        let words = blocks.div_ceil(64) as usize;
        if bytes.len() != words * 16 {
            return Err(Error::io(format!(
                "an allocation bitmap has {} bytes where {} were expected: run fsck",
                bytes.len(),
                words * 16
            )));
        }
        let bits = ObjBits {
            words: bytes
                .chunks_exact(8)
                .map(|c| {
                    let mut word = [0u8; 8];
                    word.copy_from_slice(c);
                    u64::from_le_bytes(word)
                })
                .collect(),
        };
        if bits.data().iter().zip(bits.zero()).any(|(d, z)| d & z != 0) {
            return Err(Error::io("an allocation bitmap marks a block both data and zero: run fsck"));
        }
        Ok(bits)
    }
}

/// A bitmap in memory, and whether it was used since the cache's clock last passed it.
#[derive(Debug)]
struct Resident {
    bits: ObjBits,
    referenced: AtomicBool,
}

impl Resident {
    fn used(&self) -> &ObjBits {
        self.referenced.store(true, Ordering::Relaxed);
        &self.bits
    }
}

#[derive(Debug, Default)]
struct LayerMap {
    /// The bitmaps in memory (see [`BitmapCache`]); the others are read from the store when needed.
    objects: HashMap<u64, Resident>,
    /// Every object this layer has state for, in memory or not.
    known: ObjectSet,
    /// Objects changed since the bitmaps were last written to the store.
    dirty: BTreeSet<u64>,
    /// Objects whose bitmaps a checkpoint took and is committing: kept in memory until it returns.
    committing: BTreeSet<u64>,
    /// Objects written (even in place) since [`Layer::watch`] started or [`Layer::take_watched`] last took them.
    watched: Option<BTreeSet<u64>>,
    /// Objects being changed (see [`Layer::pin`]), with how many changes hold each.
    pinned: HashMap<u64, u32>,
    /// Data blocks, and objects with at least one, over all objects (in memory or not).
    data_blocks: u64,
    data_objects: u64,
    /// Bumped by every eviction: a bitmap read from the store while it changed may be stale.
    evictions: u64,
    /// Bytes the bitmaps in memory take, with the table of `objects` (see [`LayerMap::recount`]): what this layer
    /// has charged to the cache.
    resident_bytes: usize,
    /// Buckets of the table of `objects` (see [`LayerMap::table_bytes`]).
    table_buckets: usize,
}

impl LayerMap {
    /// Heap bytes of one bitmap: its words, and the allocator's header rounded as glibc's malloc does (8 bytes,
    /// chunks of 16).
    fn bitmap_bytes(blocks_per_object: u64) -> usize {
        (blocks_per_object.div_ceil(64) as usize * 16 + 8).next_multiple_of(16).max(32)
    }

    /// Bytes the table of `objects` takes: hashbrown's buckets (a power of two, filled to at most 7/8) with a
    /// control byte each, and a group of control bytes more. A table keeps its size after entries leave it, so
    /// this is counted, not the entries alone. The capacity tells the buckets only while no entry was removed (a
    /// removal may leave a tombstone, which lowers it), so the most it told is kept until the table shrinks.
    fn table_bytes(&mut self) -> usize {
        let capacity = self.objects.capacity();
        let buckets = match capacity {
            0 => 0,
            1..8 => capacity + 1,
            _ => capacity / 7 * 8,
        };
        self.table_buckets = self.table_buckets.max(buckets);
        if self.table_buckets == 0 {
            return 0;
        }
        self.table_buckets * (std::mem::size_of::<(u64, Resident)>() + 1) + 16
    }

    /// Gives back the table's room when evictions left it sparse (see [`shrink_if_sparse`]).
    fn shrink(&mut self) {
        if shrink_if_sparse(&mut self.objects) {
            // A table rehashed into its new size has no tombstones: its capacity tells its buckets again.
            self.table_buckets = 0;
        }
    }

    /// About what one more bitmap in memory costs, its share of the table included (the table is between 7/16
    /// and 7/8 full): for planning; what is charged is [`LayerMap::recount`]'s.
    fn cost(blocks_per_object: u64) -> usize {
        Self::bitmap_bytes(blocks_per_object) + 2 * (std::mem::size_of::<(u64, Resident)>() + 1)
    }

    /// Counts what the bitmaps in memory and their table take now, and charges (or gives back) the difference.
    fn recount(&mut self, blocks_per_object: u64, cache: &BitmapCache) {
        let bytes = self.table_bytes() + self.objects.len() * Self::bitmap_bytes(blocks_per_object);
        if bytes >= self.resident_bytes {
            cache.charge(bytes - self.resident_bytes);
        } else {
            cache.uncharge(self.resident_bytes - bytes);
        }
        self.resident_bytes = bytes;
    }

    fn insert_resident(&mut self, object_no: u64, bits: ObjBits, blocks_per_object: u64, cache: &BitmapCache) {
        if self.objects.insert(object_no, Resident { bits, referenced: AtomicBool::new(true) }).is_none() {
            self.recount(blocks_per_object, cache);
        }
    }
}

/// Keeps an object's bitmap in memory while a change to it is logged and applied.
struct Pinned<'a> {
    layer: &'a Layer,
    object_no: u64,
}

impl Drop for Pinned<'_> {
    fn drop(&mut self) {
        let mut map = write_lock(&self.layer.map);
        if let Some(count) = map.pinned.get_mut(&self.object_no) {
            *count -= 1;
            if *count == 0 {
                map.pinned.remove(&self.object_no);
            }
        }
    }
}

/// A hash map keeps the capacity of its largest size: a layer that once held many bitmaps (all of them dirty until a
/// checkpoint) would keep their buckets after the bitmaps left (counted in the bitmap budget, so in place of
/// bitmaps: [`LayerMap::table_bytes`]). Measured with
/// `benches/memory.rs` (64 GiB image, 11 layers, 16 MiB budget): 47.1 MiB resident before, 30.6 after.
fn shrink_if_sparse<K: std::hash::Hash + Eq, V>(map: &mut HashMap<K, V>) -> bool {
    let len = map.len();
    let sparse = map.capacity() > 2 * len + 64;
    if sparse {
        map.shrink_to(len + len / 4);
    }
    sparse
}

fn data_count(bits: &ObjBits) -> u64 {
    bits.data().iter().map(|w| u64::from(w.count_ones())).sum()
}

/// The name of a layer's file (its first segment) in the layers directory (docs/FORMAT.md, "Layer files").
pub(crate) fn layer_file_name(id: u64) -> String {
    format!("{id:016x}.layer")
}

/// The name of a layer's checksum sidecar (its first segment) in the layers directory (docs/FORMAT.md,
/// "Checksums").
pub(crate) fn sidecar_name(id: u64) -> String {
    format!("{id:016x}.crc")
}

/// Where a block's crc32c sits in the sidecar.
pub(crate) fn sidecar_offset(file_off: u64) -> u64 {
    (file_off >> BLOCK_SHIFT) * 4
}

/// Blocks whose crcs one `pread` of the sidecar takes (1 MiB of data, 1 KiB of crcs, on the stack).
const SUMS_AT_ONCE: usize = 256;

/// Checks whole blocks `blocks`, read at layer file offset `start`, against their crcs in the sidecar `crc`: one
/// `pread` of the sidecar per 1 MiB of blocks (the crcs of neighbouring blocks are neighbours) and no allocation.
/// Calls `bad` with the index (from `start`) of every block whose crc32c differs. Reads, scrub and fsck all check
/// blocks through this.
pub(crate) fn check_blocks(crc: &dyn VfsFile, blocks: &[u8], start: u64, mut bad: impl FnMut(u64)) -> Result<()> {
    let mut sums = [0u8; SUMS_AT_ONCE * 4];
    let per_read = SUMS_AT_ONCE << BLOCK_SHIFT;
    for (c, chunk) in blocks.chunks(per_read).enumerate() {
        let first = (c * SUMS_AT_ONCE) as u64;
        let sums = &mut sums[..(chunk.len() >> BLOCK_SHIFT) * 4];
        crc.read_at(sums, sidecar_offset(start + (first << BLOCK_SHIFT)))?;
        for (i, (block, sum)) in chunk.chunks_exact(BLOCK_SIZE as usize).zip(sums.chunks_exact(4)).enumerate() {
            if checksum::crc32c(block) != u32::from_le_bytes([sum[0], sum[1], sum[2], sum[3]]) {
                bad(first + i as u64);
            }
        }
    }
    Ok(())
}

/// Objects remembered in a layer's pending removals before stale entries are dropped.
const MARKS_MAX: usize = 4096;

/// Who a layer belongs to, for checksum errors.
#[derive(Debug, Clone)]
pub(crate) struct Owner {
    /// The image id.
    pub image_id: String,
    /// The image's spec when the layer was loaded, for messages.
    pub label: String,
    /// The store's error counts.
    pub integrity: Arc<Integrity>,
}

/// How long a read that meets a checksum mismatch waits for writes of the layer still in progress before it takes
/// the mismatch for damage ([`Layer::read_checked`]).
const WRITE_STALL_MAX: Duration = Duration::from_secs(30);

/// The counters [`InFlight`] folds a layer's 64 KiB granules onto.
const IN_FLIGHT_STRIPES: usize = 64;

/// The writes of a layer's file and sidecar in progress: in all, and by 64 KiB granule of the file, folded onto
/// [`IN_FLIGHT_STRIPES`] counters (a write counts in every counter its range folds onto, so a counter at zero means
/// that no write in progress covers any granule folded onto it).
#[derive(Debug)]
struct InFlight {
    all: AtomicU64,
    stripes: [std::sync::atomic::AtomicU32; IN_FLIGHT_STRIPES],
}

impl Default for InFlight {
    fn default() -> InFlight {
        InFlight { all: AtomicU64::new(0), stripes: std::array::from_fn(|_| std::sync::atomic::AtomicU32::new(0)) }
    }
}

impl InFlight {
    /// The counters the file range `[offset, offset + len)` folds onto (all of them for a range of as many
    /// granules or more).
    fn stripes(offset: u64, len: u64) -> std::ops::Range<u64> {
        let first = offset >> 16;
        let last = (offset + len.max(1) - 1) >> 16;
        if last - first + 1 >= IN_FLIGHT_STRIPES as u64 { 0..IN_FLIGHT_STRIPES as u64 } else { first..last + 1 }
    }

    /// A write of `[offset, offset + len)` starts.
    fn begin(&self, offset: u64, len: u64) {
        self.all.fetch_add(1, Ordering::SeqCst);
        for g in Self::stripes(offset, len) {
            self.stripes[g as usize % IN_FLIGHT_STRIPES].fetch_add(1, Ordering::SeqCst);
        }
    }

    /// The write [`InFlight::begin`] counted returned.
    fn end(&self, offset: u64, len: u64) {
        for g in Self::stripes(offset, len) {
            self.stripes[g as usize % IN_FLIGHT_STRIPES].fetch_sub(1, Ordering::SeqCst);
        }
        self.all.fetch_sub(1, Ordering::SeqCst);
    }

    /// Whether any write is in progress.
    fn any(&self) -> bool {
        self.all.load(Ordering::SeqCst) > 0
    }

    /// Whether a write in progress may cover the byte at `offset` of the file.
    fn over(&self, offset: u64) -> bool {
        self.stripes[(offset >> 16) as usize % IN_FLIGHT_STRIPES].load(Ordering::SeqCst) > 0
    }
}

/// With direct I/O, the writes of deferred blocks in flight at once ([`Layer::write_entries`]).
const DIRECT_WRITERS: usize = 8;

/// What [`Layer::overlay_deferred`] found.
enum Overlay {
    /// Every deferred block is in the buffer.
    Done,
    /// The journal space of a block's entry was reused after a checkpoint applied it: the file has it now, so the
    /// caller reads again.
    Reused,
    /// The bytes of the entry of this block (index from the buffer's first) are damaged in the journal.
    Damaged(u64),
}

/// One layer: its file and its block states.
#[derive(Debug)]
pub struct Layer {
    /// Layer id.
    pub id: u64,
    /// The sparse data file.
    pub file: Arc<dyn VfsFile>,
    /// The checksum sidecar: a crc32c per 4 KiB block of `file`.
    crc: Arc<dyn VfsFile>,
    owner: Owner,
    /// Objects whose data blocks were made zero or absent, and the seq of the record that did it: until a
    /// checkpoint covers that seq, the metadata store may still call those blocks data.
    removed: Mutex<HashMap<u64, u64>>,
    /// Writes of the file and sidecar in progress: a read that meets a mismatch while one runs (or after one ran
    /// during it) saw a write half done, not damage, and reads again.
    writing: InFlight,
    blocks_per_object: u64,
    map: RwLock<LayerMap>,
    /// Changes to the file (writes and punches) that have returned, counted after each one returns: an overwrite
    /// in place changes no bitmap but still has to be synced by the next flush.
    written: AtomicU64,
    /// The value `written` had just before the last successful sync started: every change counted up to it was in
    /// the file before that sync, so it is durable. A change still inside `write_at` while a sync runs is counted
    /// only after it returns, so it is never taken as covered by that sync (docs/FORMAT.md, crash analysis).
    synced: AtomicU64,
    /// The store's journal: every change of this layer is logged there before it is acknowledged.
    journal: Arc<Journal>,
    /// Where bitmaps not in memory are read from, and the budget they share.
    cache: Arc<BitmapCache>,
    /// True while the journal counts this layer as changed since the last checkpoint.
    pub(crate) in_changed: AtomicBool,
    /// True while the journal counts this layer as holding kind-2 bytes not yet synced.
    pub(crate) in_large: AtomicBool,
    /// A fold records the objects written ([`Layer::watch`]): lets a deferred overwrite, which changes no bit,
    /// skip the map's lock otherwise.
    watching: AtomicBool,
    /// The seq of the last record logged for this layer.
    last_seq: AtomicU64,
    /// The seq of the last kind-2 record logged for this layer.
    last_large_seq: AtomicU64,
    /// Blocks whose newest bytes are only in the journal (docs/FORMAT.md, "Deferred overwrites").
    deferred: DeferredMap,
    /// One more than the journal's checkpoint count at the last flush of this layer's image (0: none yet): while at
    /// most one checkpoint has passed since, short writes of new blocks carry their bytes in the journal.
    flushed_at: AtomicU64,
    /// Set while a fold may delete this layer: its bitmaps are never evicted ([`Layer::stay_resident`]).
    resident: AtomicBool,
}

/// The body of a direct write's record of `kind` ([`Layer::direct_kind`]).
fn direct_body<'a>(kind: Kind, data: &'a [u8], crcs: &'a [u32]) -> Body<'a> {
    if kind == Kind::Data { Body::Bytes(data) } else { Body::Crcs(crcs) }
}

fn read_lock<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write_lock<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub(crate) fn mutex_lock<T>(lock: &Mutex<T>) -> MutexGuard<'_, T> {
    lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Drop for Layer {
    fn drop(&mut self) {
        let bpo = self.blocks_per_object;
        let (resident, dirty) = self.map.get_mut().map_or((0, 0), |m| (m.resident_bytes, m.dirty.len()));
        self.cache.uncharge(resident);
        self.cache.note_clean(dirty * LayerMap::bitmap_bytes(bpo));
    }
}

impl Layer {
    /// A layer whose bitmaps in the store are `stored`: it notes every object and counts their data blocks, and
    /// keeps the bitmaps in memory while the cache has room.
    pub(crate) fn open(
        id: u64,
        (file, crc): (Arc<dyn VfsFile>, Arc<dyn VfsFile>),
        owner: Owner,
        blocks_per_object: u64,
        stored: impl Iterator<Item = Result<(u64, ObjBits)>>,
        journal: Arc<Journal>,
        cache: Arc<BitmapCache>,
    ) -> Result<Layer> {
        let mut map = LayerMap::default();
        let cost = LayerMap::cost(blocks_per_object);
        for entry in stored {
            let (object_no, bits) = entry?;
            map.known.insert(object_no);
            let data = data_count(&bits);
            map.data_blocks += data;
            map.data_objects += u64::from(data > 0);
            if cache.has_room(cost) {
                map.insert_resident(object_no, bits, blocks_per_object, &cache);
            }
        }
        Ok(Layer {
            id,
            file,
            crc,
            owner,
            removed: Mutex::new(HashMap::new()),
            writing: InFlight::default(),
            blocks_per_object,
            map: RwLock::new(map),
            written: AtomicU64::new(0),
            synced: AtomicU64::new(0),
            journal,
            cache,
            in_changed: AtomicBool::new(false),
            in_large: AtomicBool::new(false),
            watching: AtomicBool::new(false),
            last_seq: AtomicU64::new(0),
            last_large_seq: AtomicU64::new(0),
            deferred: DeferredMap::default(),
            flushed_at: AtomicU64::new(0),
            resident: AtomicBool::new(false),
        })
    }

    /// Writes whole blocks of one object into the layer, logs them in the journal and marks them data: the only
    /// way block data enters a layer. Writes shorter than [`INLINE_MAX`] carry their bytes in the journal while the
    /// image is being flushed ([`Layer::flushing`]); others a crc32c per block, and the next flush syncs this file
    /// before it marks them durable. A short write over
    /// blocks that all are data already is deferred: the journal is the only thing written, and the next checkpoint
    /// writes the layer file (docs/FORMAT.md, "Deferred overwrites"). Any other write goes to the layer file and
    /// its crc32c to the sidecar first; if it may change bytes the metadata store calls data, a durable
    /// dirty-object record covers it (docs/FORMAT.md, "The hard part").
    pub fn write_blocks(self: &Arc<Self>, object_no: u64, first_blk: u64, data: &[u8], file_off: u64) -> Result<()> {
        debug_assert!(!data.is_empty() && data.len().is_multiple_of(BLOCK_SIZE as usize));
        let blocks = data.len() as u64 >> BLOCK_SHIFT;
        let place = self.place(object_no, first_blk, blocks, file_off)?;
        let _pinned = self.pin(object_no)?;
        let last = first_blk + blocks - 1;
        let crcs: Vec<u32> = data.chunks_exact(BLOCK_SIZE as usize).map(checksum::crc32c).collect();
        let all_data = self.all_data(object_no, first_blk, last)?;
        if data.len() < INLINE_MAX && all_data {
            return self.defer(&place, data, &crcs);
        }
        // On a full disk (the metadata reserve is low) only blocks the layer owns can be written.
        if self.journal.space_low() && !all_data {
            self.journal.admit_data()?;
        }
        if !all_data && self.journal.direct_io() && self.with_bits(object_no, |o| o.is_none())? {
            // An object's first write reserves the whole object in the file: with direct I/O, writes that allocate
            // wait for the device one at a time per file on ext4 (15k against 58k 4 KiB writes/s from 8 threads
            // on the development disk), writes into reserved space side by side. The file then takes its space per
            // object; the bitmaps still say which blocks hold data. Only a hint: where the space is short, the
            // write allocates what it needs itself.
            let object_start = file_off - (first_blk << BLOCK_SHIFT);
            let _ = self.file.preallocate(object_start, self.blocks_per_object << BLOCK_SHIFT);
        }
        let deferred_here = self.deferred.any_in(file_off >> BLOCK_SHIFT, blocks);
        let durable_data =
            self.any_data(object_no, first_blk, last)? || self.removal_pending(object_no) || deferred_here;
        let epoch = if durable_data { Some(self.enter_marked(object_no..=object_no)?) } else { None };
        // Deferred versions of these blocks reach the file first, under the same dirty mark: the file never goes
        // back to an older version than a record a checkpoint may make dead.
        let applied = if deferred_here { self.apply_deferred_in(file_off, blocks) } else { Ok(()) };
        let written = applied.and_then(|()| self.write_data(data, &crcs, file_off));
        if written.is_err() {
            // A failed write logs no record, yet part of it may be in the file: the next checkpoint must still sync
            // the layer before a commit can drop the mark that covers it.
            self.journal.note_changed(self);
        }
        if written.is_err() && durable_data {
            // The blocks stay data and may now hold old, new or mixed bytes: their crcs follow what the file holds,
            // so they do not read as damaged (best effort: the error is returned either way).
            let _ = self.recompute_crcs(file_off, blocks);
        }
        if let Some(epoch) = epoch {
            self.journal.leave_overwrite(epoch);
        }
        if let Err(err) = written {
            if err.kind() == ErrorKind::NoSpace {
                self.give_back_unowned(object_no, first_blk, last, file_off);
            }
            return Err(err);
        }
        let kind = self.direct_kind(data.len());
        let seq = self.journal.log(kind, &place, &direct_body(kind, data, &crcs), || self.mark_written(&place))?;
        self.logged_direct(kind, seq, &place);
        Ok(())
    }

    /// The kind of record for a direct write of `len` bytes, whose bytes are in the layer file already: kind 1 (the
    /// bytes) for a short write while the image is being flushed ([`Layer::flushing`]), so a flush needs the journal
    /// alone; otherwise kind 2 (crcs), and the layer is registered for the next mark's sync before the record is
    /// appended, so a flush that covers the record syncs these bytes (if the record is then not appended, that
    /// sync is for nothing).
    fn direct_kind(self: &Arc<Self>, len: usize) -> Kind {
        if len < INLINE_MAX && self.flushing() {
            Kind::Data
        } else {
            self.journal.note_large(self);
            Kind::DataCrc
        }
    }

    /// Inside a direct write's log section: the layer changed, and its blocks are data.
    fn mark_written(self: &Arc<Self>, place: &Place) {
        self.journal.note_changed(self);
        let first = u64::from(place.first_blk);
        self.set_range(place.object, first, first + u64::from(place.blocks) - 1, BlockSt::Data);
    }

    /// After a direct write's record was appended at `seq`: the seqs a flush waits for, and deferred entries the
    /// write made stale.
    fn logged_direct(&self, kind: Kind, seq: u64, place: &Place) {
        if kind == Kind::DataCrc {
            self.last_large_seq.fetch_max(seq, Ordering::SeqCst);
        }
        self.last_seq.fetch_max(seq, Ordering::SeqCst);
        self.forget_older_entries(place.file_off, u64::from(place.blocks), seq);
    }

    /// After a direct write of `blocks` blocks at `file_off` logged at `seq`: an entry older than its record that
    /// appeared since the write began (block locks keep writers of one block apart, so only a caller without them)
    /// is older than the bytes the file holds now.
    fn forget_older_entries(&self, file_off: u64, blocks: u64, seq: u64) {
        if self.deferred.is_empty() {
            return;
        }
        let mut map = self.deferred.lock();
        for (block, entry) in map.range(file_off >> BLOCK_SHIFT, blocks) {
            if entry.seq < seq {
                map.remove(block);
            }
        }
    }

    /// Notes that the image asked for its writes to be durable (a flush or a FUA write).
    pub fn note_flush(&self) {
        self.flushed_at.store(self.journal.checkpoint_count() + 1, Ordering::Relaxed);
    }

    /// Whether the image is being flushed: since its last flush, at most one checkpoint passed. Short writes of new
    /// blocks then carry their bytes in the journal, so a flush syncs the journal alone; otherwise they carry
    /// crcs, records are 64 times smaller, and the journal turns (and checkpoints sync the layer files) that much
    /// less often (docs/FORMAT.md, "What is logged, and when").
    fn flushing(&self) -> bool {
        let at = self.flushed_at.load(Ordering::Relaxed);
        at != 0 && self.journal.checkpoint_count() <= at
    }

    /// The deferred path of [`Layer::write_blocks`]: one journal record with the bytes, and entries in the deferred
    /// map, added while the record's log section still holds off checkpoints. The blocks are data already, so no
    /// bitmap changes and no space is needed.
    fn defer(self: &Arc<Self>, place: &Place, data: &[u8], crcs: &[u32]) -> Result<()> {
        let seq = self.journal.log_with(Kind::Data, place, &Body::Bytes(data), |logged| {
            self.note_deferred(place, crcs, logged);
        })?;
        self.last_seq.fetch_max(seq, Ordering::SeqCst);
        Ok(())
    }

    /// The in-memory side of a deferred overwrite, inside its record's log section.
    fn note_deferred(self: &Arc<Self>, place: &Place, crcs: &[u32], logged: Logged) {
        self.journal.note_changed(self);
        self.deferred.lock().insert(logged, place.file_off >> BLOCK_SHIFT, crcs);
        // After the entry is in the map: a fold that starts watching later reads it when it copies.
        self.note_watched(place.object);
    }

    /// [`Layer::write_blocks`] for a caller that must not wait (an event loop), for writes shorter than
    /// [`INLINE_MAX`] whose object's bitmap is in memory, and only if the journal takes the record at once
    /// ([`Journal::try_log_with`]). Two kinds of write need nothing but the page cache: an overwrite of blocks that
    /// all are data (deferred: the journal alone), and a write of blocks none of which is ([`Layer::try_write_new`]).
    /// The caller holds the blocks' locks. The bitmaps' and the deferred map's locks may still be waited for: they
    /// are held for memory work only (a checkpoint holds the map's for one batch of its writes). `None` means
    /// nothing was logged: the caller writes the same bytes with [`Layer::write_blocks`].
    pub fn try_write(
        self: &Arc<Self>,
        object_no: u64,
        first_blk: u64,
        data: &[u8],
        file_off: u64,
    ) -> Option<Result<()>> {
        debug_assert!(!data.is_empty() && data.len().is_multiple_of(BLOCK_SIZE as usize));
        if data.len() >= INLINE_MAX {
            return None;
        }
        let blocks = data.len() as u64 >> BLOCK_SHIFT;
        let last = first_blk + blocks - 1;
        let all_data = self.resident_all_or_none(object_no, first_blk, last)?;
        let place = self.place(object_no, first_blk, blocks, file_off).ok()?;
        let crcs: Vec<u32> = data.chunks_exact(BLOCK_SIZE as usize).map(checksum::crc32c).collect();
        if !all_data {
            return self.try_write_new(&place, data, &crcs);
        }
        let logged = self.journal.try_log_with(Kind::Data, &place, &Body::Bytes(data), |logged| {
            self.note_deferred(&place, &crcs, logged);
        })?;
        Some(logged.map(|seq| {
            self.last_seq.fetch_max(seq, Ordering::SeqCst);
        }))
    }

    /// The path of [`Layer::try_write`] for blocks none of which is data in the layer: the bytes into the layer
    /// file and the crcs into the sidecar, then the record, as [`Layer::write_blocks`] writes new blocks. Nothing
    /// the metadata store holds calls them data, so no dirty-object record has to be synced first. Declined
    /// (`None`) when anything would wait: a file to create or open, a full disk (the metadata reserve is low),
    /// direct I/O, a pending removal or deferred entries in the range, the bitmap's lock, or the journal. Bytes
    /// written before the journal declined stay in blocks the layer does not own, which nothing reads; the
    /// caller's [`Layer::write_blocks`] writes them again.
    fn try_write_new(self: &Arc<Self>, place: &Place, data: &[u8], crcs: &[u32]) -> Option<Result<()>> {
        let (object_no, first_blk, file_off) = (place.object, u64::from(place.first_blk), place.file_off);
        let (blocks, last) = (u64::from(place.blocks), u64::from(place.first_blk + place.blocks - 1));
        if self.journal.space_low()
            || self.journal.direct_io()
            || self.removal_pending(object_no)
            || self.deferred.any_in(file_off >> BLOCK_SHIFT, blocks)
            || !self.file.writes_at_once(file_off, data.len() as u64)
            || !self.crc.writes_at_once(sidecar_offset(file_off), blocks * 4)
        {
            return None;
        }
        let _pinned = self.try_pin(object_no)?;
        if let Err(err) = self.write_data(data, crcs, file_off) {
            self.journal.note_changed(self);
            if err.kind() == ErrorKind::NoSpace {
                self.give_back_unowned(object_no, first_blk, last, file_off);
            }
            return Some(Err(err));
        }
        let kind = self.direct_kind(data.len());
        let logged =
            self.journal.try_log_with(kind, place, &direct_body(kind, data, crcs), |_| self.mark_written(place))?;
        Some(logged.map(|seq| self.logged_direct(kind, seq, place)))
    }

    /// Writes deferred versions (sorted by block) into the layer file with their crcs, under the map's lock held
    /// by the caller, who removes the entries it applied: runs of neighbouring blocks with one write each. The
    /// journal still holds their records (nothing reuses its space before a checkpoint that applied them), and each
    /// block read back is checked against its crc. With direct I/O ([`Journal::direct_io`]) each write waits for the
    /// device, so the runs are written from several threads at once.
    fn write_entries(&self, writes: &[(u64, Deferred)]) -> Result<()> {
        let mut runs: Vec<(u64, Vec<u8>, Vec<u32>)> = Vec::new();
        let mut i = 0;
        while i < writes.len() {
            let first = writes[i].0;
            let mut n = 1;
            while i + n < writes.len() && writes[i + n].0 == first + n as u64 && n < 256 {
                n += 1;
            }
            let mut buf = vec![0u8; n << BLOCK_SHIFT];
            let mut crcs = Vec::with_capacity(n);
            for (j, (file_block, entry)) in writes[i..i + n].iter().enumerate() {
                let block = &mut buf[j << BLOCK_SHIFT..(j + 1) << BLOCK_SHIFT];
                self.journal.read_body(entry.file, block, entry.at)?;
                if checksum::crc32c(block) == entry.crc {
                    crcs.push(entry.crc);
                    continue;
                }
                // The journal holds an entry's bytes until a checkpoint applied it, so they are damaged: that
                // version is lost. The block keeps the file's bytes under a checksum they cannot match, so it reads
                // as damaged (EIO, counted) until it is written again, never as the older version.
                let _ = self.count_bad_block(None);
                self.file.read_at(block, file_block << BLOCK_SHIFT)?;
                crcs.push(!checksum::crc32c(block));
            }
            runs.push((first << BLOCK_SHIFT, buf, crcs));
            i += n;
        }
        let write = |(at, buf, crcs): &(u64, Vec<u8>, Vec<u32>)| self.write_data(buf, crcs, *at);
        if !self.journal.direct_io() || runs.len() < 2 {
            return runs.iter().try_for_each(write);
        }
        let next = std::sync::atomic::AtomicUsize::new(0);
        let threads = runs.len().min(DIRECT_WRITERS);
        std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads)
                .map(|_| {
                    scope.spawn(|| {
                        // Each takes the next run until none is left; the first error stops this worker only, and
                        // is returned once every worker is done (the caller fails the checkpoint with it).
                        loop {
                            let k = next.fetch_add(1, Ordering::Relaxed);
                            let Some(run) = runs.get(k) else { return Ok(()) };
                            write(run)?;
                        }
                    })
                })
                .collect();
            workers.into_iter().try_for_each(|w| w.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
        })
    }

    /// Writes the deferred blocks among `blocks` blocks at `file_off` into the layer file and forgets them: before
    /// a direct write or a punch there. The caller is inside the dirty-marked section of their object.
    fn apply_deferred_in(&self, file_off: u64, blocks: u64) -> Result<()> {
        let mut map = self.deferred.lock();
        let found = map.range(file_off >> BLOCK_SHIFT, blocks);
        self.write_entries(&found)?;
        for (block, _) in found {
            map.remove(block);
        }
        Ok(())
    }

    /// Every deferred block, copied under the checkpoint's freeze, in no order (see [`Layer::apply_copied`]).
    pub(crate) fn copy_deferred(&self) -> Vec<(u64, Deferred)> {
        if self.deferred.is_empty() { Vec::new() } else { self.deferred.lock().copy() }
    }

    /// The checkpoint's writes of deferred blocks: for each block of `copied` (taken under the freeze at seq `S`,
    /// then sorted by block), the file gets the version the copy names or a newer durable one, unless another path
    /// wrote it since; the journal is durable through `synced` (at least `S`). A batch at a time under the map's
    /// lock, so writers of the layer wait at most one batch (docs/FORMAT.md, "Deferred overwrites", rule 4).
    pub(crate) fn apply_copied(&self, copied: &[(u64, Deferred)], synced: u64) -> Result<()> {
        for batch in copied.chunks(64) {
            let mut map = self.deferred.lock();
            let mut writes = Vec::with_capacity(batch.len());
            let mut done = Vec::with_capacity(batch.len());
            for &(block, copy) in batch {
                match crate::deferred::plan(copy, map.get(block), synced) {
                    Apply::Skip => {}
                    Apply::Current(entry) => {
                        writes.push((block, entry));
                        done.push(block);
                    }
                    Apply::Copy(entry) => writes.push((block, entry)),
                }
            }
            self.write_entries(&writes)?;
            for block in done {
                map.remove(block);
            }
        }
        Ok(())
    }

    /// After a write failed for lack of space, punches the blocks of `first..=last` (at `file_off`) that the layer
    /// does not own: a short write may have allocated some, and nothing refers to them. The caller holds the
    /// blocks' locks, as for the write.
    fn give_back_unowned(self: &Arc<Self>, object_no: u64, first: u64, last: u64, file_off: u64) {
        // Only blocks known not to be the layer's own are punched (the object is pinned: its bitmap is in memory).
        let unowned = |blk| matches!(self.state(object_no, blk), Ok(BlockSt::Absent | BlockSt::Zero));
        let mut blk = first;
        while blk <= last {
            if !unowned(blk) {
                blk += 1;
                continue;
            }
            let start = blk;
            while blk <= last && unowned(blk) {
                blk += 1;
            }
            let _ = self.punch(file_off + ((start - first) << BLOCK_SHIFT), (blk - start) << BLOCK_SHIFT);
        }
    }

    /// Writes the crc32c of what the file holds for `blocks` blocks at `file_off` into the sidecar. Counted in
    /// `writing` and `written` like [`Layer::write_data`]: a sync that ran since the write it repairs was counted
    /// (a flush's, for kind-2 bytes) did not cover it, and the next checkpoint must not skip its own sync.
    ///
    /// One write per 4 KiB page of the sidecar, each tried even after one failed: a page the file system cannot
    /// allocate (ENOSPC) holds only crcs of blocks the layer does not own yet (an owned block's crc was written, and
    /// its page allocated, when the block was), and the pages after it may hold crcs of owned blocks whose bytes
    /// changed. As one write, it stopped at that page and left those blocks under their old crcs: damaged on read.
    fn recompute_crcs(&self, file_off: u64, blocks: u64) -> Result<()> {
        let mut buf = vec![0u8; (blocks << BLOCK_SHIFT) as usize];
        self.file.read_at(&mut buf, file_off)?;
        let sums: Vec<u8> =
            buf.chunks_exact(BLOCK_SIZE as usize).flat_map(|b| checksum::crc32c(b).to_le_bytes()).collect();
        self.writing.begin(file_off, blocks << BLOCK_SHIFT);
        let mut result = Ok(());
        let mut at = sidecar_offset(file_off);
        let mut rest = sums.as_slice();
        while !rest.is_empty() {
            let n = ((BLOCK_SIZE - at % BLOCK_SIZE) as usize).min(rest.len());
            let written = self.crc.write_at(&rest[..n], at);
            if result.is_ok() {
                result = written;
            }
            at += n as u64;
            rest = &rest[n..];
        }
        self.written.fetch_add(1, Ordering::SeqCst);
        self.writing.end(file_off, blocks << BLOCK_SHIFT);
        Ok(result?)
    }

    /// True when some block `first..=last` of the object is data in this layer.
    fn any_data(&self, object_no: u64, first: u64, last: u64) -> Result<bool> {
        self.with_bits(object_no, |o| o.is_some_and(|o| (first..=last).any(|b| o.get(b) == BlockSt::Data)))
    }

    /// True while a record that made data blocks of the object zero or absent is not checkpointed: the metadata
    /// store may still call them data, so their bytes must not change without a dirty-object record.
    fn removal_pending(&self, object_no: u64) -> bool {
        let applied = self.journal.applied();
        mutex_lock(&self.removed).get(&object_no).is_some_and(|&seq| seq > applied)
    }

    /// Enters the journal's in-flight set with every object of `objects` covered by a dirty mark that counts in the
    /// current epoch (a durable dirty-object record no checkpoint has made dead, or a row a checkpoint carried it
    /// by); returns the epoch to leave with. Appends and syncs the records it lacks outside the in-flight set (a full
    /// journal checkpoints, which waits for that set to drain).
    fn enter_marked(self: &Arc<Self>, objects: std::ops::RangeInclusive<u64>) -> Result<u64> {
        loop {
            let missing = match self.journal.enter_overwrite(self.id, objects.clone()) {
                Ok(epoch) => return Ok(epoch),
                Err(missing) => missing,
            };
            // Labelled with the epoch read before the records are appended: a checkpoint that freezes after this
            // read raises the epoch, so the label goes stale whenever a checkpoint could have made a record dead.
            let label = self.journal.overwrite_epoch();
            let mut last = 0;
            for &object in &missing {
                let place = Place { layer: self.id, object, file_off: 0, first_blk: 0, blocks: 0 };
                // The layer counts as changed, so the next checkpoint syncs it.
                last = self.journal.log(Kind::Dirty, &place, &Body::Empty, || self.journal.note_changed(self))?;
            }
            self.journal.count_dirty_records(missing.len() as u64);
            self.journal.sync_through(last, 0)?;
            self.journal.set_marks(self.id, &missing, label);
        }
    }

    /// Logs and sets a zero or absent state for blocks `first..=last` of one object.
    pub fn mark_blocks(
        self: &Arc<Self>,
        object_no: u64,
        first: u64,
        last: u64,
        st: BlockSt,
        file_off: u64,
    ) -> Result<()> {
        let kind = match st {
            BlockSt::Zero => Kind::Zero,
            BlockSt::Absent => Kind::Absent,
            BlockSt::Data => return Err(Error::io("data blocks are written with their bytes")),
        };
        let place = self.place(object_no, first, last - first + 1, file_off)?;
        let _pinned = self.pin(object_no)?;
        let removes_data = self.any_data(object_no, first, last)?;
        if removes_data {
            // Pending until the record's seq is known (a write racing this one takes it as not checkpointed).
            self.note_removed(object_no, u64::MAX);
        }
        let seq = self.journal.log(kind, &place, &Body::Empty, || {
            self.journal.note_changed(self);
            self.set_range(object_no, first, last, st);
        })?;
        if removes_data {
            self.note_removed(object_no, seq);
        }
        self.last_seq.fetch_max(seq, Ordering::SeqCst);
        Ok(())
    }

    fn note_removed(&self, object_no: u64, seq: u64) {
        let applied = self.journal.applied();
        let mut removed = mutex_lock(&self.removed);
        if removed.len() >= MARKS_MAX {
            removed.retain(|_, s| *s > applied);
        }
        let entry = removed.entry(object_no).or_insert(seq);
        *entry = if *entry == u64::MAX { seq } else { (*entry).max(seq) };
    }

    fn place(&self, object: u64, first_blk: u64, blocks: u64, file_off: u64) -> Result<Place> {
        match (u32::try_from(first_blk), u32::try_from(blocks)) {
            (Ok(first_blk), Ok(blocks)) => Ok(Place { layer: self.id, object, file_off, first_blk, blocks }),
            _ => Err(Error::io("a block range does not fit a journal record")),
        }
    }

    /// The seqs a flush of this layer must wait for: its last record, and its last kind-2 record.
    pub fn flush_targets(&self) -> (u64, u64) {
        (self.last_seq.load(Ordering::SeqCst), self.last_large_seq.load(Ordering::SeqCst))
    }

    /// Writes block data into the layer file and its crcs into the sidecar. The change is counted once both
    /// writes returned, never before: a sync that runs while it is still in progress must not be taken as covering
    /// it.
    fn write_data(&self, data: &[u8], crcs: &[u32], offset: u64) -> Result<()> {
        self.writing.begin(offset, data.len() as u64);
        let result = self.file.write_at(data, offset).and_then(|()| {
            let bytes: Vec<u8> = crcs.iter().flat_map(|c| c.to_le_bytes()).collect();
            self.crc.write_at(&bytes, sidecar_offset(offset))
        });
        // Counted even when it failed: part of it may have reached the file.
        self.written.fetch_add(1, Ordering::SeqCst);
        self.writing.end(offset, data.len() as u64);
        Ok(result?)
    }

    /// Deallocates a range of the layer file; counted after it returned, as [`Layer::write_data`]. Bytes the
    /// metadata store may still call data change only under a dirty-object record, as in a write.
    pub fn punch(self: &Arc<Self>, offset: u64, length: u64) -> Result<()> {
        if length == 0 {
            return Ok(());
        }
        let object_size = self.blocks_per_object << BLOCK_SHIFT;
        let objects = offset / object_size..=(offset + length - 1) / object_size;
        let (first, blocks) = (offset >> BLOCK_SHIFT, (offset + length).div_ceil(BLOCK_SIZE) - (offset >> BLOCK_SHIFT));
        let deferred_here = self.deferred.any_in(first, blocks);
        let pending = deferred_here || objects.clone().any(|o| self.removal_pending(o));
        let epoch = if pending { Some(self.enter_marked(objects)?) } else { None };
        // Deferred blocks go to the file before the hole, or a checkpoint would write them into it later.
        let applied = if deferred_here { self.apply_deferred_in(first << BLOCK_SHIFT, blocks) } else { Ok(()) };
        let result = applied.and_then(|()| Ok(self.file.punch_hole(offset, length)?));
        self.written.fetch_add(1, Ordering::SeqCst);
        // The record that made these blocks zero or absent may already be in a checkpoint that synced the file
        // before this punch: the next one syncs it again.
        self.journal.note_changed(self);
        if let Some(epoch) = epoch {
            self.journal.leave_overwrite(epoch);
        }
        result
    }

    /// Reads `out.len()` bytes at layer file offset `file_off`, all of them blocks this layer holds as data, and
    /// checks every block they touch against its crc32c. A mismatch is counted, logged and answered with EIO; `out`
    /// is then zeroed, so bad bytes never leave. `image_off` is the image offset of `file_off`, for the message.
    pub fn read_verified(&self, out: &mut [u8], file_off: u64, image_off: Option<u64>) -> Result<()> {
        let Some(bad) = self.read_checked(out, file_off)? else { return Ok(()) };
        let start = file_off & !(BLOCK_SIZE - 1);
        let block_image_off = image_off.map(|i| i - (file_off - start) + bad * BLOCK_SIZE);
        Err(self.count_bad_block(block_image_off))
    }

    /// Counts and logs a damaged block of this layer (at `image_off`, when known), and has the count saved by the
    /// next checkpoint; returns the error its reader gets.
    fn count_bad_block(&self, image_off: Option<u64>) -> Error {
        let err = self.owner.integrity.bad_block(&self.owner.image_id, &self.owner.label, self.id, image_off);
        self.journal.want_save();
        err
    }

    /// [`Layer::read_verified`] without counting: returns the index (from the block holding `file_off`) of the
    /// first block that fails its crc32c, with `out` zeroed.
    pub(crate) fn read_checked(&self, out: &mut [u8], file_off: u64) -> Result<Option<u64>> {
        let start = file_off & !(BLOCK_SIZE - 1);
        let end = (file_off + out.len() as u64).next_multiple_of(BLOCK_SIZE);
        let aligned = start == file_off && end == file_off + out.len() as u64;
        // An unaligned read is widened to whole blocks: up to two blocks (a small read, perhaps across a block
        // boundary) on the stack, larger ones on the heap.
        let mut small = [0u8; 2 * BLOCK_SIZE as usize];
        let mut large = Vec::new();
        let mut widened: Option<&mut [u8]> = if aligned {
            None
        } else if end - start <= small.len() as u64 {
            Some(&mut small[..(end - start) as usize])
        } else {
            large.resize((end - start) as usize, 0);
            Some(&mut large)
        };
        let mut attempt = 0u32;
        // When a mismatch first met a write in progress, and how often the read waited for one since.
        let mut stalled: Option<Instant> = None;
        let mut waits = 0u32;
        loop {
            let buf: &mut [u8] = match widened.as_deref_mut() {
                Some(w) => w,
                None => &mut *out,
            };
            let before = self.written.load(Ordering::SeqCst);
            // Taken before the file is read: an entry applied meanwhile is in the file by the time it is read, or
            // its journal bytes are still there (docs/FORMAT.md, "Deferred overwrites", rule 2).
            let deferred = self.deferred.range(start >> BLOCK_SHIFT, buf.len() as u64 >> BLOCK_SHIFT);
            self.file.read_at(buf, start)?;
            match self.overlay_deferred(buf, start, &deferred)? {
                Overlay::Done => {}
                Overlay::Reused => {
                    // The journal space of an entry was reused after a checkpoint applied it: the file has it now.
                    attempt += 1;
                    if attempt < 100_000 {
                        continue;
                    }
                    return Err(Error::io(format!("reads of layer {} keep racing its checkpoints", self.id)));
                }
                Overlay::Damaged(bad) => {
                    out.fill(0);
                    return Ok(Some(bad));
                }
            }
            let mut bad = self.bad_blocks(buf, start)?;
            // A deferred block's sidecar entry is the file's older version's: its journal crc was checked instead.
            bad.retain(|&i| deferred.binary_search_by_key(&((start >> BLOCK_SHIFT) + i), |&(b, _)| b).is_err());
            // A block that stopped being this layer's data since the caller resolved it (a discard or a fold
            // racing the read) holds bytes the caller no longer shows as this layer's: not damage.
            let object_size = self.blocks_per_object << BLOCK_SHIFT;
            let Some(&bad) = bad.iter().find(|&&i| {
                let at = start + (i << BLOCK_SHIFT);
                // A bitmap that cannot be read back counts as data: the mismatch is reported.
                !matches!(
                    self.state(at / object_size, (at % object_size) >> BLOCK_SHIFT),
                    Ok(BlockSt::Absent | BlockSt::Zero)
                )
            }) else {
                break;
            };
            // A write of the same block running during the read (data and crc are two writes) is not damage.
            let raced = self.writing.any() || self.written.load(Ordering::SeqCst) != before;
            // A write still in progress that may cover the block is waited for, not counted against the attempts:
            // it may stall between its data and its crc (a crc write held by writeback throttling, or by the sync
            // of another segment closed to stay under the open-file limit) for far longer than any number of
            // retries takes, and its block is whole once it returns. Only a write stalled past `WRITE_STALL_MAX`
            // lets the mismatch through. Writes elsewhere in the layer are not waited for: a block damaged on disk
            // is reported after the retries, not held for as long as the image keeps being written.
            if self.writing.over(start + (bad << BLOCK_SHIFT))
                && stalled.get_or_insert_with(Instant::now).elapsed() < WRITE_STALL_MAX
            {
                waits += 1;
                if waits < 1000 {
                    std::thread::yield_now();
                } else {
                    std::thread::sleep(Duration::from_micros(100));
                }
                continue;
            }
            attempt += 1;
            if raced && attempt < 100_000 {
                std::thread::yield_now();
                continue;
            }
            out.fill(0);
            return Ok(Some(bad));
        }
        if let Some(w) = widened {
            let at = (file_off - start) as usize;
            out.copy_from_slice(&w[at..at + out.len()]);
        }
        Ok(None)
    }

    /// Replaces the blocks of `buf` (whole blocks read from file offset `start`) that have a deferred entry with
    /// their bytes from the journal, each checked against its entry's crc32c.
    fn overlay_deferred(&self, buf: &mut [u8], start: u64, deferred: &[(u64, Deferred)]) -> Result<Overlay> {
        for &(block, entry) in deferred {
            let index = block - (start >> BLOCK_SHIFT);
            let at = (index << BLOCK_SHIFT) as usize;
            let bytes = &mut buf[at..at + BLOCK_SIZE as usize];
            self.journal.read_body(entry.file, bytes, entry.at)?;
            if checksum::crc32c(bytes) != entry.crc {
                // Nothing reuses the journal space of an entry still in the map (docs/FORMAT.md, "Deferred
                // overwrites", rule 2): if it is still there, the bytes are damaged.
                let current = self.deferred.lock().get(block) == Some(entry);
                return Ok(if current { Overlay::Damaged(index) } else { Overlay::Reused });
            }
        }
        Ok(Overlay::Done)
    }

    /// The checksum sidecar.
    pub(crate) fn crc(&self) -> &dyn VfsFile {
        self.crc.as_ref()
    }

    /// The indices of the blocks of `blocks` (whole blocks read at `start`) whose crc32c is not the sidecar's.
    pub(crate) fn bad_blocks(&self, blocks: &[u8], start: u64) -> Result<Vec<u64>> {
        let mut bad = Vec::new();
        check_blocks(self.crc.as_ref(), blocks, start, |i| bad.push(i))?;
        Ok(bad)
    }

    /// Syncs the file unless a sync that started after the last returned change already succeeded.
    ///
    /// Every change that returned before this call (in particular every write whose bitmap bit the caller took
    /// before calling) is durable when this returns Ok.
    pub fn sync_if_needed(&self) -> Result<()> {
        // Read before syncing: every change counted up to `target` returned before the sync starts.
        let target = self.written.load(Ordering::SeqCst);
        if self.synced.load(Ordering::SeqCst) >= target {
            return Ok(());
        }
        self.file.sync_data()?;
        self.crc.sync_data()?;
        self.synced.fetch_max(target, Ordering::SeqCst);
        Ok(())
    }

    /// Blocks per object of the image this layer belongs to.
    pub fn blocks_per_object(&self) -> u64 {
        self.blocks_per_object
    }

    /// Returns a block's state.
    pub fn state(&self, object_no: u64, blk: u64) -> Result<BlockSt> {
        self.with_bits(object_no, |o| o.map_or(BlockSt::Absent, |o| o.get(blk)))
    }

    /// Runs `f` on the map with the bitmap of `object_no` in memory if this layer has state for it (read from the
    /// store if it was evicted), under the map's write lock; then lets the cache evict if it is over its budget.
    fn with_resident<R>(&self, object_no: u64, f: impl FnOnce(&mut LayerMap) -> R) -> Result<R> {
        let mut loaded: Option<(u64, Option<ObjBits>)> = None;
        let result = loop {
            let mut map = write_lock(&self.map);
            if map.objects.contains_key(&object_no) || !map.known.contains(object_no) {
                break f(&mut map);
            }
            match loaded.take() {
                // Read before any eviction since: the store's copy was current (only clean bitmaps are evicted).
                Some((evictions, Some(bits))) if evictions == map.evictions => {
                    map.insert_resident(object_no, bits, self.blocks_per_object, &self.cache);
                    break f(&mut map);
                }
                Some((evictions, None)) if evictions == map.evictions => {
                    return Err(Error::io(format!(
                        "the bitmap of object {object_no} of layer {} is missing from the store: run fsck",
                        self.id
                    )));
                }
                _ => {
                    let evictions = map.evictions;
                    drop(map);
                    loaded = Some((evictions, self.cache.load(self.id, object_no, self.blocks_per_object)?));
                }
            }
        };
        self.cache.evict_if_over();
        Ok(result)
    }

    /// Runs `f` on the bitmap of `object_no` (`None` when this layer has no state for it), reading it from the
    /// store first if it was evicted.
    fn with_bits<R>(&self, object_no: u64, f: impl FnOnce(Option<&ObjBits>) -> R) -> Result<R> {
        {
            let map = read_lock(&self.map);
            match map.objects.get(&object_no) {
                Some(resident) => return Ok(f(Some(resident.used()))),
                None if !map.known.contains(object_no) => return Ok(f(None)),
                None => {}
            }
        }
        self.with_resident(object_no, |map| f(map.objects.get(&object_no).map(Resident::used)))
    }

    /// Keeps the bitmap of `object_no` in memory (reading it from the store if it was evicted) until the guard
    /// drops: a change is logged in the journal before its bits are set, and setting them must not fail then.
    fn pin(&self, object_no: u64) -> Result<Pinned<'_>> {
        self.with_resident(object_no, |map| *map.pinned.entry(object_no).or_default() += 1)?;
        Ok(Pinned { layer: self, object_no })
    }

    /// Sets the state of blocks `first..=last` of one object in memory (callers pin the object, then log the
    /// change, then call this).
    fn set_range(&self, object_no: u64, first: u64, last: u64, st: BlockSt) {
        let bpo = self.blocks_per_object;
        let mut map = write_lock(&self.map);
        debug_assert!(map.pinned.contains_key(&object_no), "a bitmap changed without a pin");
        if !map.objects.contains_key(&object_no) {
            // Pinned, so not evicted: the layer has no state for the object yet.
            map.insert_resident(object_no, ObjBits::new(bpo), bpo, &self.cache);
            map.known.insert(object_no);
        }
        let map = &mut *map;
        let Some(resident) = map.objects.get_mut(&object_no) else { return };
        let obj = &mut resident.bits;
        let before = data_count(obj);
        let mut changed = false;
        for blk in first..=last {
            changed |= obj.set(blk, st);
        }
        let after = data_count(obj);
        let empty = obj.is_empty();
        map.data_blocks = map.data_blocks + after - before;
        map.data_objects = map.data_objects + u64::from(after > 0) - u64::from(before > 0);
        if empty && map.objects.remove(&object_no).is_some() {
            map.known.remove(object_no);
            map.recount(bpo, &self.cache);
        }
        if changed && map.dirty.insert(object_no) {
            self.cache.note_dirty(LayerMap::bitmap_bytes(bpo));
        }
        // An overwrite in place changes no bit but does change the bytes: a watcher hears of every write.
        if let Some(watched) = &mut map.watched {
            watched.insert(object_no);
        }
    }

    /// Drops clean, unreferenced bitmaps (clearing the referenced flag of the others) until about `want` bytes
    /// are freed, and gives the bytes back to the cache.
    pub(crate) fn evict_unreferenced(&self, want: usize) {
        if self.resident.load(Ordering::SeqCst) {
            return;
        }
        let cost = LayerMap::bitmap_bytes(self.blocks_per_object);
        let mut map = write_lock(&self.map);
        let LayerMap { objects, dirty, committing, pinned, .. } = &mut *map;
        let mut freed = 0;
        objects.retain(|object_no, resident| {
            if freed >= want
                || dirty.contains(object_no)
                || committing.contains(object_no)
                || pinned.contains_key(object_no)
            {
                return true;
            }
            if resident.referenced.swap(false, Ordering::Relaxed) {
                return true;
            }
            freed += cost;
            false
        });
        if freed > 0 {
            map.evictions += 1;
            map.shrink();
            map.recount(self.blocks_per_object, &self.cache);
        }
    }

    /// Keeps every bitmap of this layer in memory from now on (`on`), reading back those evicted before, or lets
    /// them be evicted again. A fold sets it on the layer it may delete: views built before the fold (an open
    /// snapshot's, a clone's view of its parent) may read through that layer after the fold's commit deleted its
    /// bitmaps from the store, so they could not be read back any more.
    pub fn stay_resident(&self, on: bool) -> Result<()> {
        self.resident.store(on, Ordering::SeqCst);
        if on {
            for object_no in self.objects() {
                self.with_bits(object_no, |_| ())?;
            }
        }
        Ok(())
    }

    /// Starts (or stops) recording which objects are written: a merge that copies this layer while it takes
    /// writes copies again what was written meanwhile. A write is recorded once its bytes are in the file.
    pub fn watch(&self, on: bool) {
        write_lock(&self.map).watched = on.then(BTreeSet::new);
        self.watching.store(on, Ordering::SeqCst);
    }

    /// Records a write to `object_no` that changed no bit (a deferred overwrite) for a fold that is watching.
    fn note_watched(&self, object_no: u64) {
        if self.watching.load(Ordering::SeqCst)
            && let Some(watched) = &mut write_lock(&self.map).watched
        {
            watched.insert(object_no);
        }
    }

    /// The objects written since watching started or since the last call, sorted.
    pub fn take_watched(&self) -> BTreeSet<u64> {
        write_lock(&self.map).watched.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// From memory alone, whether blocks `first..=last` of the object all are data in this layer (`true`) or none
    /// is (`false`): `None` when some are, or the object's bitmap is not resident, or the map is locked.
    fn resident_all_or_none(&self, object_no: u64, first: u64, last: u64) -> Option<bool> {
        let map = self.map.try_read().ok()?;
        let Some(resident) = map.objects.get(&object_no) else {
            // No state at all for the object: none of its blocks is data.
            return (!map.known.contains(object_no)).then_some(false);
        };
        let bits = resident.used();
        let data = (first..=last).filter(|&b| bits.get(b) == BlockSt::Data).count() as u64;
        match data {
            0 => Some(false),
            n if n == last - first + 1 => Some(true),
            _ => None,
        }
    }

    /// [`Layer::pin`] for a caller that must not wait: `None` when the bitmaps' lock is taken or the object's
    /// bitmap would have to be read from the store.
    fn try_pin(&self, object_no: u64) -> Option<Pinned<'_>> {
        let mut map = self.map.try_write().ok()?;
        if !map.objects.contains_key(&object_no) && map.known.contains(object_no) {
            return None;
        }
        *map.pinned.entry(object_no).or_default() += 1;
        Some(Pinned { layer: self, object_no })
    }

    /// True when every block `first..=last` of the object holds data in this layer.
    pub fn all_data(&self, object_no: u64, first: u64, last: u64) -> Result<bool> {
        self.with_bits(object_no, |o| o.is_some_and(|o| (first..=last).all(|b| o.get(b) == BlockSt::Data)))
    }

    /// Takes the changed bitmaps for writing to the store, encoded (a copy: writes go on meanwhile). They stay in
    /// memory until [`Layer::committed`] or [`Layer::restore_dirty`].
    pub(crate) fn take_dirty(&self) -> Dirty {
        let mut map = write_lock(&self.map);
        let dirty = std::mem::take(&mut map.dirty);
        self.cache.note_clean(dirty.len() * LayerMap::bitmap_bytes(self.blocks_per_object));
        map.committing.extend(dirty.iter().copied());
        let each = self.blocks_per_object.div_ceil(64) as usize * 16;
        let mut bytes = Vec::with_capacity(dirty.iter().filter(|o| map.objects.contains_key(o)).count() * each);
        let objects = dirty
            .into_iter()
            .map(|o| {
                let bits = map.objects.get(&o);
                if let Some(resident) = bits {
                    resident.bits.encode_into(&mut bytes);
                }
                (o, bits.is_some())
            })
            .collect::<Vec<_>>();
        let charged = bytes.capacity() + objects.capacity() * std::mem::size_of::<(u64, bool)>();
        self.cache.charge(charged);
        Dirty { objects, bytes, each, charged, cache: self.cache.clone() }
    }

    /// The bitmaps taken were committed: the store's copies are current, so they may leave memory.
    pub fn committed(&self) {
        write_lock(&self.map).committing.clear();
    }

    /// Marks objects dirty again after a failed write to the store.
    pub fn restore_dirty(&self, objects: impl IntoIterator<Item = u64>) {
        let mut map = write_lock(&self.map);
        let before = map.dirty.len();
        map.dirty.extend(objects);
        self.cache.note_dirty((map.dirty.len() - before) * LayerMap::bitmap_bytes(self.blocks_per_object));
        map.committing.clear();
    }

    /// True when this layer has any state (data or zero) for the object.
    pub fn has_object(&self, object_no: u64) -> bool {
        read_lock(&self.map).known.contains(object_no)
    }

    /// Returns the objects this layer has any state for, sorted.
    pub fn objects(&self) -> Vec<u64> {
        read_lock(&self.map).known.range(0, u64::MAX).collect()
    }

    /// Returns `(data blocks, objects holding data)`, as a pool's usage counts them.
    pub fn data_usage(&self) -> (u64, u64) {
        let map = read_lock(&self.map);
        (map.data_blocks, map.data_objects)
    }

    /// Returns `(block, state)` for every block of `object_no` that is not absent.
    pub fn present_blocks(&self, object_no: u64) -> Result<Vec<(u64, BlockSt)>> {
        self.with_bits(object_no, |o| o.map(|o| o.present().collect()).unwrap_or_default())
    }

    /// Returns the objects in `first..end` this layer has any state for, sorted.
    pub fn objects_in(&self, first: u64, end: u64) -> Vec<u64> {
        read_lock(&self.map).known.range(first, end).collect()
    }

    /// ORs into `words` (one bit per block of the object) the blocks of `object_no` that are not absent here.
    pub fn union_present(&self, object_no: u64, words: &mut Vec<u64>) -> Result<()> {
        self.with_bits(object_no, |obj| {
            let Some(obj) = obj else { return };
            if words.len() < obj.data().len() {
                words.resize(obj.data().len(), 0);
            }
            for (w, (d, z)) in words.iter_mut().zip(obj.data().iter().zip(obj.zero())) {
                *w |= d | z;
            }
        })
    }
}

/// A layer's changed bitmaps, taken by a checkpoint ([`Layer::take_dirty`]). Their encoding is one allocation,
/// charged to the bitmap budget while it lives: a checkpoint may take as many bitmaps as the journal holds changes
/// for, and thousands of small copies would leave the heap fragmented once freed.
#[derive(Debug)]
pub(crate) struct Dirty {
    /// The objects in order, each with whether it has a bitmap (false: it became empty, its row goes).
    objects: Vec<(u64, bool)>,
    /// The bitmaps of the objects that have one, in order, `each` bytes apiece.
    bytes: Vec<u8>,
    each: usize,
    /// What the two vectors take, charged to the cache until this drops.
    charged: usize,
    cache: Arc<BitmapCache>,
}

impl Dirty {
    /// `(object, Some(encoded bitmap))`, or `(object, None)` where the object became empty.
    pub fn rows(&self) -> impl Iterator<Item = (u64, Option<&[u8]>)> + '_ {
        let mut encoded = self.bytes.chunks_exact(self.each.max(1));
        self.objects.iter().map(move |&(o, has)| (o, if has { encoded.next() } else { None }))
    }

    /// The objects taken.
    pub fn objects(&self) -> impl Iterator<Item = u64> + '_ {
        self.objects.iter().map(|&(o, _)| o)
    }
}

impl Drop for Dirty {
    fn drop(&mut self) {
        self.cache.uncharge(self.charged);
    }
}

/// One layer of a view and the size below which lower layers stay visible.
#[derive(Debug, Clone)]
pub struct ViewLayer {
    /// The layer.
    pub layer: Arc<Layer>,
    /// Lower layers' blocks at or past this image offset are hidden.
    pub min_size: u64,
}

/// The parent snapshot under a clone, visible up to `overlap` bytes.
#[derive(Debug, Clone)]
pub struct Base {
    /// The parent snapshot's view.
    pub view: Arc<View>,
    /// Bytes of the clone that read through to the parent.
    pub overlap: u64,
    /// Keeps the parent's in-memory state alive while the clone uses it, so each image has one state.
    pub _keep_alive: Option<Arc<dyn std::any::Any + Send + Sync>>,
}

/// A stack of layers (newest first) over an optional parent: the head of an image or one of its snapshots.
#[derive(Debug, Clone)]
pub struct View {
    /// The image layout.
    pub layout: Layout,
    /// The size of the image (or snapshot).
    pub size: u64,
    /// Layers, newest first.
    pub chain: Vec<ViewLayer>,
    /// The parent, for clones.
    pub base: Option<Base>,
    /// Which lower layers hold each object, for long chains (see [`ChainIndex`]).
    pub index: Arc<ChainIndex>,
}

/// Chains longer than this resolve blocks through a [`ChainIndex`]; shorter ones walk every layer.
const INDEXED_CHAIN: usize = 8;

/// Objects in a [`ChainIndex`] before it starts over (a bound on its memory: a few dozen bytes each).
/// A view's chain index may take this share of the store's bitmap budget (12 MiB of the default 192 MiB): past it,
/// the index starts over, so a scan of a huge image with many snapshots holds a bounded set of objects. All views'
/// indexes together are charged to the budget and bounded too (`bitcache::INDEX_SHARE`).
const INDEX_BUDGET_SHARE: usize = 16;
/// What an index entry costs besides its two slices: the map's slot, the `Arc` and the slices' headers.
const INDEX_ENTRY_OVERHEAD: usize = 96;

/// What lets a read on a long chain (an image with many snapshots) look at the few layers that hold a block's
/// object instead of at every layer: per object, the indices of the layers below the top one (`chain[1..]`) that
/// have any state for it, and which blocks any of them but the last has state for, filled the first time the object
/// is read; and the smallest `min_size` of the layers above each index. A block none of the upper holders has
/// state for (typically data written before the snapshots, with a few blocks rewritten between them) goes straight
/// to the last holder: one lookup, whatever the chain's length.
///
/// Correct because a view's chain never changes and its lower layers gain no state that changes what it reads
/// while the view is in use: writes, discards and resizes touch only the top layer (never indexed: it is always
/// looked at directly), every change of the chain (a snapshot created or removed, a merge, a rollback) builds a new
/// head view with an empty index, and flatten gives the root (the bottom layer, always the last holder) only blocks
/// the view already read from the parent, with the same bytes. The one exception is a view built before a merge of
/// hidden layers and still held (by an open snapshot or a clone's parent): the merge copies blocks between two
/// layers of that chain (from one of them to the other, never from below them), and the block keeps its bytes, so
/// whichever of the two the stale index finds first reads the same data; blocks the merge drops were hidden in that
/// view by the upper layer's `min_size`.
#[derive(Debug, Default)]
pub struct ChainIndex {
    objects: RwLock<IndexMap>,
    /// The budget its bytes are charged to, from its first entry on.
    charged: std::sync::OnceLock<Arc<BitmapCache>>,
    /// `hidden_from[i]`: the smallest `min_size` of `chain[1..i]`, so blocks of layer `i` or below at or past it
    /// are hidden by a shrink above.
    hidden_from: std::sync::OnceLock<Vec<u64>>,
}

/// The indexed objects and the bytes they take.
#[derive(Debug, Default)]
struct IndexMap {
    holders: HashMap<u64, Arc<Holders>>,
    bytes: usize,
}

/// The layers below the top of a view that hold one object (see [`ChainIndex`]).
#[derive(Debug)]
struct Holders {
    /// Their indices in the chain, newest first.
    layers: Box<[u32]>,
    /// The blocks any of them but the last has state for, one bit per block.
    upper: Box<[u64]>,
}

impl Holders {
    /// The holders that can decide block `blk`: all of them, or only the last when no other has state for it.
    fn deciding(&self, blk: u64) -> &[u32] {
        let upper = self.upper.get((blk / 64) as usize).is_some_and(|w| w >> (blk % 64) & 1 == 1);
        if upper { &self.layers } else { &self.layers[self.layers.len().saturating_sub(1)..] }
    }
}

impl ChainIndex {
    fn hidden_from(&self, chain: &[ViewLayer]) -> &[u64] {
        self.hidden_from.get_or_init(|| {
            let mut out = Vec::with_capacity(chain.len() + 1);
            let mut min = u64::MAX;
            out.push(min);
            for (idx, vl) in chain.iter().enumerate() {
                if idx >= 1 {
                    min = min.min(vl.min_size);
                }
                out.push(min);
            }
            out
        })
    }

    fn holders(&self, chain: &[ViewLayer], object_no: u64) -> Result<Arc<Holders>> {
        if let Some(found) = read_lock(&self.objects).holders.get(&object_no) {
            return Ok(found.clone());
        }
        let layers: Box<[u32]> =
            (1..chain.len()).filter(|&idx| chain[idx].layer.has_object(object_no)).map(|idx| idx as u32).collect();
        let mut upper = Vec::new();
        for &idx in layers.iter().take(layers.len().saturating_sub(1)) {
            chain[idx as usize].layer.union_present(object_no, &mut upper)?;
        }
        let bytes = INDEX_ENTRY_OVERHEAD + layers.len() * 4 + upper.len() * 8;
        let found = Arc::new(Holders { layers, upper: upper.into_boxed_slice() });
        let cache = self.charged.get_or_init(|| chain[0].layer.cache.clone());
        let mut objects = write_lock(&self.objects);
        if objects.holders.contains_key(&object_no) {
            return Ok(found);
        }
        // Past its own share, or past what all views' indexes may hold together, the index starts over.
        if objects.bytes + bytes > cache.budget() / INDEX_BUDGET_SHARE || !cache.charge_index(bytes) {
            cache.uncharge_index(objects.bytes);
            objects.holders = HashMap::new();
            objects.bytes = 0;
            if !cache.charge_index(bytes) {
                // Other views hold the whole share: answer without keeping the entry.
                return Ok(found);
            }
        }
        objects.holders.insert(object_no, found.clone());
        objects.bytes += bytes;
        drop(objects);
        cache.evict_if_over();
        Ok(found)
    }
}

impl Drop for ChainIndex {
    fn drop(&mut self) {
        if let Some(cache) = self.charged.get() {
            cache.uncharge_index(read_lock(&self.objects).bytes);
        }
    }
}

/// Where the bytes of a block come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The file of the layer at this chain index.
    Layer(usize),
    /// Zeros.
    Zero,
    /// The parent.
    Base,
}

/// Serialises the read-modify-write of partially written blocks; keyed by 64 KiB granule.
#[derive(Debug)]
pub struct StripeLocks {
    locks: Vec<Mutex<()>>,
}

const STRIPE_LOCKS: usize = 128;

/// The stripe lock of a block: one per 16-block granule, so neighbouring blocks share one.
fn stripe(bpo: u64, object_no: u64, blk: u64) -> usize {
    ((object_no.wrapping_mul(bpo).wrapping_add(blk)) >> 4) as usize % STRIPE_LOCKS
}

impl Default for StripeLocks {
    fn default() -> StripeLocks {
        StripeLocks { locks: (0..STRIPE_LOCKS).map(|_| Mutex::new(())).collect() }
    }
}

impl StripeLocks {
    /// Locks the stripes of blocks `first..=last` of one object, in a fixed order (writers and copies of a block
    /// exclude each other).
    pub(crate) fn lock_blocks(&self, bpo: u64, object_no: u64, first: u64, last: u64) -> Vec<MutexGuard<'_, ()>> {
        let granule = |blk: u64| stripe(bpo, object_no, blk);
        if granule(first) == granule(last) && last - first < 16 {
            // One granule (most writes): no set to sort.
            return vec![mutex_lock(&self.locks[granule(first)])];
        }
        let indices: BTreeSet<usize> = (first..=last).map(granule).collect();
        indices.into_iter().map(|i| mutex_lock(&self.locks[i])).collect()
    }

    /// [`StripeLocks::lock_blocks`] if no other thread holds any of the stripes; `None` otherwise.
    pub(crate) fn try_lock_blocks(
        &self,
        bpo: u64,
        object_no: u64,
        first: u64,
        last: u64,
    ) -> Option<Vec<MutexGuard<'_, ()>>> {
        let indices: BTreeSet<usize> = (first..=last).map(|blk| stripe(bpo, object_no, blk)).collect();
        indices.into_iter().map(|i| self.locks[i].try_lock().ok()).collect()
    }
}

/// Ranges up to this length are answered piece by piece by [`View::block_status`].
const SMALL_STATUS_BYTES: u64 = 16 * BLOCK_SIZE;

/// Sorts `(start, length)` ranges and merges those that overlap or touch.
pub(crate) fn merge_ranges(mut ranges: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    ranges.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::new();
    for (start, len) in ranges {
        match merged.last_mut() {
            Some((s, l)) if *s + *l >= start => *l = (*l).max(start + len - *s),
            _ => merged.push((start, len)),
        }
    }
    merged
}

/// Appends an extent, merging it into the last one when they touch and agree.
fn push_extent(extents: &mut Vec<BlockExtent>, extent: BlockExtent) {
    match extents.last_mut() {
        Some(last) if last.state == extent.state && last.offset + last.length == extent.offset => {
            last.length += extent.length;
        }
        _ => extents.push(extent),
    }
}

/// Contiguous pieces in one object, as one unit of I/O.
fn object_runs(pieces: impl Iterator<Item = Piece>) -> Vec<Vec<Piece>> {
    let mut runs: Vec<Vec<Piece>> = Vec::new();
    for piece in pieces {
        match runs.last_mut() {
            Some(run)
                if run.last().is_some_and(|p| {
                    p.object_no == piece.object_no && p.object_offset + p.length == piece.object_offset
                }) =>
            {
                run.push(piece);
            }
            _ => runs.push(vec![piece]),
        }
    }
    runs
}

/// A run of one object split into what can be done block-wise and what needs a read-modify-write.
enum Segment {
    /// Whole blocks, from the first piece to the last (inclusive), contiguous in the object.
    Whole(Piece, Piece),
    /// Part of one block.
    Partial(Piece),
}

fn segments(run: &[Piece]) -> Vec<Segment> {
    let mut out = Vec::new();
    let mut idx = 0;
    while idx < run.len() {
        if run[idx].is_whole_block() {
            let mut end = idx;
            while end + 1 < run.len() && run[end + 1].is_whole_block() {
                end += 1;
            }
            out.push(Segment::Whole(run[idx], run[end]));
            idx = end + 1;
        } else {
            out.push(Segment::Partial(run[idx]));
            idx += 1;
        }
    }
    out
}

impl View {
    /// A view over `chain` (newest first) and an optional parent.
    pub fn new(layout: Layout, size: u64, chain: Vec<ViewLayer>, base: Option<Base>) -> View {
        View { layout, size, chain, base, index: Arc::default() }
    }

    /// Resolves where a piece's block is read from, starting at chain index `from`: the first layer with state for
    /// the block decides, and a layer's `min_size` hides what lies at or past it in the layers below.
    pub fn resolve(&self, from: usize, piece: &Piece) -> Result<Source> {
        if self.chain.len() <= INDEXED_CHAIN || from > 1 {
            return self.resolve_walk(from, piece);
        }
        let blk = piece.block_in_object();
        let off = piece.image_offset;
        if from == 0 {
            let top = &self.chain[0];
            match top.layer.state(piece.object_no, blk)? {
                BlockSt::Data => return Ok(Source::Layer(0)),
                BlockSt::Zero => return Ok(Source::Zero),
                BlockSt::Absent if off >= top.min_size => return Ok(Source::Zero),
                BlockSt::Absent => {}
            }
        }
        // Below the top, only the layers holding the object can have state for the block; each of the others
        // answers Absent, so all that matters of them is whether their `min_size` hides the block.
        let hidden_from = self.index.hidden_from(&self.chain);
        let holders = self.index.holders(&self.chain, piece.object_no)?;
        for idx in holders.deciding(blk).iter().map(|&i| i as usize) {
            if idx < from.max(1) {
                continue;
            }
            if off >= hidden_from[idx] {
                return Ok(Source::Zero);
            }
            match self.chain[idx].layer.state(piece.object_no, blk)? {
                BlockSt::Data => return Ok(Source::Layer(idx)),
                BlockSt::Zero => return Ok(Source::Zero),
                BlockSt::Absent => {}
            }
        }
        if off >= hidden_from[self.chain.len()] {
            return Ok(Source::Zero);
        }
        Ok(self.base_or_zero(off))
    }

    /// [`View::resolve`] by looking at every layer in turn: the definition, and the fastest way for short chains.
    fn resolve_walk(&self, from: usize, piece: &Piece) -> Result<Source> {
        let blk = piece.block_in_object();
        for (idx, vl) in self.chain.iter().enumerate().skip(from) {
            match vl.layer.state(piece.object_no, blk)? {
                BlockSt::Data => return Ok(Source::Layer(idx)),
                BlockSt::Zero => return Ok(Source::Zero),
                BlockSt::Absent => {
                    if piece.image_offset >= vl.min_size {
                        return Ok(Source::Zero);
                    }
                }
            }
        }
        Ok(self.base_or_zero(piece.image_offset))
    }

    fn base_or_zero(&self, image_offset: u64) -> Source {
        match &self.base {
            Some(base) if image_offset < base.overlap => Source::Base,
            _ => Source::Zero,
        }
    }

    /// Reads `buf.len()` bytes at `offset`, resolving through the chain from index `from`.
    pub fn read_from(&self, from: usize, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.read_into(from, offset, buf, None)
    }

    /// Reads like [`View::read`] and reports which parts are holes, from the same resolution of each block (what
    /// [`View::block_status`] would say of the range, without resolving it a second time).
    pub fn read_sparse(&self, offset: u64, buf: &mut [u8]) -> Result<Vec<BlockExtent>> {
        let mut extents = Vec::new();
        self.read_into(0, offset, buf, Some(&mut extents))?;
        Ok(extents)
    }

    /// Reads through the chain from index `from`; with `extents`, also appends, in order, the state of what was
    /// read: data from a layer, a hole where it read zeros, and the parent's own states where it read the parent.
    fn read_into(
        &self,
        from: usize,
        offset: u64,
        buf: &mut [u8],
        mut extents: Option<&mut Vec<BlockExtent>>,
    ) -> Result<()> {
        // Collect runs of pieces with the same source and contiguous file offsets, then do one read per run.
        let mut run: Option<(Source, u64, u64, usize, usize)> = None; // (source, image off, file off, buf start, len)
        let flush =
            |run: (Source, u64, u64, usize, usize), buf: &mut [u8], extents: &mut Option<&mut Vec<BlockExtent>>| {
                let (source, image_off, file_off, start, len) = run;
                let out = &mut buf[start..start + len];
                let length = len as u64;
                let state = match source {
                    Source::Zero => {
                        out.fill(0);
                        BlockState::Hole
                    }
                    Source::Layer(idx) => {
                        self.chain[idx].layer.read_verified(out, file_off, Some(image_off))?;
                        BlockState::Data
                    }
                    Source::Base => match (&self.base, extents.as_deref_mut()) {
                        (Some(base), Some(list)) => return base.read_sparse_clipped(image_off, out, list),
                        (Some(base), None) => return base.read_clipped(image_off, out),
                        (None, _) => {
                            out.fill(0);
                            BlockState::Hole
                        }
                    },
                };
                if let Some(list) = extents.as_deref_mut() {
                    push_extent(list, BlockExtent { offset: image_off, length, state });
                }
                Ok::<(), Error>(())
            };
        let mut buf_pos = 0usize;
        for piece in self.layout.pieces(offset, buf.len() as u64) {
            let source = self.resolve(from, &piece)?;
            let file_off = self.layout.file_offset(piece.object_no, piece.object_offset);
            let len = piece.length as usize;
            let extend = match (&run, source) {
                (Some((s, img, f, _, l)), src) if *s == src => match src {
                    Source::Layer(_) => *f + *l as u64 == file_off,
                    Source::Base => *img + *l as u64 == piece.image_offset,
                    Source::Zero => true,
                },
                _ => false,
            };
            if extend {
                if let Some(r) = run.as_mut() {
                    r.4 += len;
                }
            } else {
                if let Some(r) = run.take() {
                    flush(r, buf, &mut extents)?;
                }
                run = Some((source, piece.image_offset, file_off, buf_pos, len));
            }
            buf_pos += len;
        }
        if let Some(r) = run.take() {
            flush(r, buf, &mut extents)?;
        }
        Ok(())
    }

    /// Reads through the whole view.
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.read_from(0, offset, buf)
    }

    /// Reports data and holes in a range without reading data.
    ///
    /// Only blocks that some layer (or the parent) has state for are looked at one by one; the rest of the range is
    /// a hole found without visiting it. Without striping, an object that no layer knows and no parent covers is one
    /// hole; with striping, the allocated blocks of the objects the range touches are gathered from the bitmaps
    /// ([`View::allocated_in`]), so a thin or finely striped image costs what its data costs, not what its stripe
    /// units number.
    pub fn block_status(&self, offset: u64, length: u64) -> Result<Vec<BlockExtent>> {
        let mut extents: Vec<BlockExtent> = Vec::new();
        let end = offset + length;
        let object_size = self.layout.object_size();
        if length <= SMALL_STATUS_BYTES {
            // A few blocks (a parent's single-block lookups): piece by piece is cheapest.
            self.block_status_pieces(offset, length, &mut extents)?;
            return Ok(extents);
        }
        if self.layout.striping.count != 1 || self.layout.striping.unit_bytes != object_size {
            let mut at = offset;
            for (start, len) in self.allocated_in(offset, end)? {
                if at < start {
                    push_extent(&mut extents, BlockExtent { offset: at, length: start - at, state: BlockState::Hole });
                }
                self.block_status_pieces(start, len, &mut extents)?;
                at = start + len;
            }
            if at < end {
                push_extent(&mut extents, BlockExtent { offset: at, length: end - at, state: BlockState::Hole });
            }
            return Ok(extents);
        }
        let mut at = offset;
        while at < end {
            let object_no = at / object_size;
            let next = ((object_no + 1) * object_size).min(end);
            let parent_covers = self.base.as_ref().is_some_and(|base| at < base.overlap);
            if !parent_covers && !self.chain.iter().any(|vl| vl.layer.has_object(object_no)) {
                push_extent(&mut extents, BlockExtent { offset: at, length: next - at, state: BlockState::Hole });
            } else {
                self.block_status_pieces(at, next - at, &mut extents)?;
            }
            at = next;
        }
        Ok(extents)
    }

    /// Image ranges in `[offset, end)` (clipped to the view's size) where the view may hold data: every block some
    /// layer has state for (data or zero), and the parent's such ranges within what the view shows of it. A
    /// superset of the data, sorted and merged.
    ///
    /// The cost follows the allocated blocks of the objects whose object sets the range touches, read from the
    /// bitmaps a word at a time; never the length of the range or the number of stripe units in it.
    pub fn allocated_in(&self, offset: u64, end: u64) -> Result<Vec<(u64, u64)>> {
        let end = end.min(self.size);
        let mut ranges: Vec<(u64, u64)> = Vec::new();
        if offset >= end {
            return Ok(ranges);
        }
        let layout = self.layout;
        let count = layout.striping.count;
        let set_bytes = layout.object_size() * count;
        let (first_object, end_object) = (offset / set_bytes * count, ((end - 1) / set_bytes + 1) * count);
        let mut objects = BTreeSet::new();
        for vl in &self.chain {
            objects.extend(vl.layer.objects_in(first_object, end_object));
        }
        let mut words = Vec::new();
        for object_no in objects {
            words.clear();
            for vl in &self.chain {
                vl.layer.union_present(object_no, &mut words)?;
            }
            for (w, &word) in words.iter().enumerate() {
                let mut bits = word;
                while bits != 0 {
                    let blk = w as u64 * 64 + u64::from(bits.trailing_zeros());
                    bits &= bits - 1;
                    let start = layout.unmap(object_no, blk << BLOCK_SHIFT);
                    let (s, e) = (start.max(offset), (start + BLOCK_SIZE).min(end));
                    if s >= e {
                        continue;
                    }
                    // Blocks in a row of one stripe unit are in a row in the image too: merge as they come.
                    match ranges.last_mut() {
                        Some((ls, ll)) if *ls + *ll == s => *ll += e - s,
                        _ => ranges.push((s, e - s)),
                    }
                }
            }
        }
        if let Some(base) = &self.base {
            let limit = self.chain.iter().map(|vl| vl.min_size).fold(base.overlap, u64::min).min(end);
            if offset < limit {
                ranges.extend(base.view.allocated_in(offset, limit)?);
            }
        }
        Ok(merge_ranges(ranges))
    }

    fn block_status_pieces(&self, offset: u64, length: u64, extents: &mut Vec<BlockExtent>) -> Result<()> {
        for piece in self.layout.pieces(offset, length) {
            let state = match self.resolve(0, &piece)? {
                Source::Layer(_) => BlockState::Data,
                Source::Zero => BlockState::Hole,
                Source::Base => match &self.base {
                    Some(base) => base.state_at(piece.image_offset)?,
                    None => BlockState::Hole,
                },
            };
            push_extent(extents, BlockExtent { offset: piece.image_offset, length: piece.length, state });
        }
        Ok(())
    }

    /// Writes `data` at `offset` into the top layer, copying up partial blocks from below.
    pub fn write(&self, locks: &StripeLocks, offset: u64, data: &[u8]) -> Result<()> {
        let mut consumed = 0usize;
        for run in object_runs(self.layout.pieces(offset, data.len() as u64)) {
            let run_len: u64 = run.iter().map(|p| p.length).sum();
            let run_data = &data[consumed..consumed + run_len as usize];
            consumed += run_len as usize;
            self.write_run(locks, &run, run_data)?;
        }
        Ok(())
    }

    /// [`View::write`] for a caller that must not wait (an event loop): only whole blocks of one object, through
    /// [`Layer::try_write`], with the blocks' locks free. `None` means nothing was logged.
    pub fn try_write(&self, locks: &StripeLocks, offset: u64, data: &[u8]) -> Option<Result<()>> {
        let mut runs = object_runs(self.layout.pieces(offset, data.len() as u64));
        let run = match runs.as_mut_slice() {
            [run] if run.iter().all(|p| p.length == BLOCK_SIZE) => std::mem::take(run),
            _ => return None,
        };
        let top = &self.chain[0].layer;
        let (first, last) = (run[0], run[run.len() - 1]);
        let object_no = first.object_no;
        let (first_blk, last_blk) = (first.block_in_object(), last.block_in_object());
        let _guards = locks.try_lock_blocks(top.blocks_per_object(), object_no, first_blk, last_blk)?;
        top.try_write(object_no, first_blk, data, self.layout.file_offset(object_no, first.object_offset))
    }

    fn write_run(&self, locks: &StripeLocks, run: &[Piece], data: &[u8]) -> Result<()> {
        let top = &self.chain[0].layer;
        let (first, last) = (run[0], run[run.len() - 1]);
        let object_no = first.object_no;
        let (first_blk, last_blk) = (first.block_in_object(), last.block_in_object());
        let file_off = self.layout.file_offset(object_no, first.object_offset);
        // Every write holds its blocks' stripes, overwrites in place too: a discard of the same block (which also
        // holds them) then comes wholly before or after it, never between its bytes and its bit, which would leave
        // a zero marker over allocated bytes, or a data bit over a punched hole.
        let _guards = locks.lock_blocks(top.blocks_per_object(), object_no, first_blk, last_blk);
        if run.iter().all(|p| p.length == BLOCK_SIZE) && top.all_data(object_no, first_blk, last_blk)? {
            // Overwrite of whole blocks in place: the blocks are this layer's own.
            return top.write_blocks(object_no, first_blk, data, file_off);
        }
        let mut at = 0usize;
        for segment in segments(run) {
            match segment {
                Segment::Whole(first, last) => {
                    let len = ((last.block_in_object() - first.block_in_object() + 1) * BLOCK_SIZE) as usize;
                    let off = self.layout.file_offset(object_no, first.object_offset);
                    top.write_blocks(object_no, first.block_in_object(), &data[at..at + len], off)?;
                    at += len;
                }
                Segment::Partial(piece) => {
                    let len = piece.length as usize;
                    self.write_partial(&piece, &data[at..at + len])?;
                    at += len;
                }
            }
        }
        Ok(())
    }

    /// Writes part of one block; the caller holds the block's stripe lock.
    fn write_partial(&self, piece: &Piece, data: &[u8]) -> Result<()> {
        let top = &self.chain[0].layer;
        let blk = piece.block_in_object();
        let block_image_start = piece.image_offset - piece.offset_in_block();
        let block_file_off = self.layout.file_offset(piece.object_no, piece.object_offset - piece.offset_in_block());
        let mut block = vec![0u8; BLOCK_SIZE as usize];
        match top.state(piece.object_no, blk)? {
            // The block is this layer's own: complete it from the file, so the journal holds the whole block.
            BlockSt::Data => top.read_verified(&mut block, block_file_off, Some(block_image_start))?,
            // Copy up what the block holds below, limited by the top layer's size floor.
            BlockSt::Absent => self.read_below_top(block_image_start, &mut block)?,
            BlockSt::Zero => {}
        }
        let in_block = piece.offset_in_block() as usize;
        block[in_block..in_block + data.len()].copy_from_slice(data);
        top.write_blocks(piece.object_no, blk, &block, block_file_off)
    }

    /// Reads one block as the layers below the top show it.
    fn read_below_top(&self, block_image_start: u64, block: &mut [u8]) -> Result<()> {
        if block_image_start >= self.chain[0].min_size {
            block.fill(0);
            return Ok(());
        }
        self.read_from(1, block_image_start, block)
    }

    /// Makes a range read as zeros in the top layer, deallocating whole blocks.
    pub fn zero(&self, locks: &StripeLocks, offset: u64, length: u64) -> Result<()> {
        let top = &self.chain[0].layer;
        let needs_marker = self.chain.len() > 1 || self.base.is_some();
        let whole_state = if needs_marker { BlockSt::Zero } else { BlockSt::Absent };
        for run in object_runs(self.layout.pieces(offset, length)) {
            let object_no = run[0].object_no;
            let _guards = locks.lock_blocks(
                top.blocks_per_object(),
                object_no,
                run[0].block_in_object(),
                run[run.len() - 1].block_in_object(),
            );
            let zeros = vec![0u8; BLOCK_SIZE as usize];
            for segment in segments(&run) {
                match segment {
                    Segment::Whole(first, last) => {
                        let (b0, b1) = (first.block_in_object(), last.block_in_object());
                        let off = self.layout.file_offset(object_no, first.object_offset);
                        top.mark_blocks(object_no, b0, b1, whole_state, off)?;
                        top.punch(off, (b1 - b0 + 1) << BLOCK_SHIFT)?;
                    }
                    Segment::Partial(piece) => self.write_partial(&piece, &zeros[..piece.length as usize])?,
                }
            }
        }
        Ok(())
    }

    /// Copies the parent's data into the bottom layer for every block the bottom layer does not have, so the view
    /// no longer needs the parent. Returns after `object_no` is done; the caller walks all objects.
    pub fn copy_up_object(&self, locks: &StripeLocks, object_no: u64) -> Result<()> {
        let Some(base) = &self.base else { return Ok(()) };
        let bottom = match self.chain.last() {
            Some(vl) => vl.layer.clone(),
            None => return Ok(()),
        };
        let bpo = bottom.blocks_per_object();
        let object_size = self.layout.object_size();
        let mut block = vec![0u8; BLOCK_SIZE as usize];
        let limit = self.chain.iter().map(|vl| vl.min_size).fold(base.overlap, u64::min);
        let _guards = locks.lock_blocks(bpo, object_no, 0, bpo - 1);
        for blk in 0..bpo {
            if bottom.state(object_no, blk)? != BlockSt::Absent {
                continue;
            }
            let image_off = self.layout.unmap(object_no, blk << BLOCK_SHIFT);
            if image_off >= limit {
                continue;
            }
            if base.state_at(image_off)? == BlockState::Hole {
                continue;
            }
            base.read_clipped(image_off, &mut block)?;
            bottom.write_blocks(object_no, blk, &block, object_no * object_size + (blk << BLOCK_SHIFT))?;
        }
        Ok(())
    }
}

impl Base {
    /// Reads from the parent, zero past the overlap or the parent's size.
    pub fn read_clipped(&self, offset: u64, out: &mut [u8]) -> Result<()> {
        let visible_end = self.overlap.min(self.view.size);
        let end = offset + out.len() as u64;
        if offset >= visible_end {
            out.fill(0);
            return Ok(());
        }
        let inside = (visible_end.min(end) - offset) as usize;
        self.view.read(offset, &mut out[..inside])?;
        out[inside..].fill(0);
        Ok(())
    }

    /// [`Base::read_clipped`], also appending the states of what it read to `extents` (holes past the overlap).
    pub fn read_sparse_clipped(&self, offset: u64, out: &mut [u8], extents: &mut Vec<BlockExtent>) -> Result<()> {
        let visible_end = self.overlap.min(self.view.size);
        let end = offset + out.len() as u64;
        let inside = visible_end.clamp(offset, end) - offset;
        if inside > 0 {
            self.view.read_into(0, offset, &mut out[..inside as usize], Some(extents))?;
        }
        if offset + inside < end {
            out[inside as usize..].fill(0);
            let hole = BlockExtent { offset: offset + inside, length: end - offset - inside, state: BlockState::Hole };
            push_extent(extents, hole);
        }
        Ok(())
    }

    /// Returns whether the parent holds data for the block at `offset`.
    pub fn state_at(&self, offset: u64) -> Result<BlockState> {
        if offset >= self.overlap.min(self.view.size) {
            return Ok(BlockState::Hole);
        }
        let len = BLOCK_SIZE.min(self.view.size - offset);
        Ok(self.view.block_status(offset, len)?.first().map_or(BlockState::Hole, |extent| extent.state))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;

    use super::{LayerMap, ObjBits};
    use crate::bitcache::BitmapCache;
    use crate::test_alloc::heap_bytes;

    /// What the map holds on the heap, against what it charged to the cache: equal within 2% (and the few
    /// hundred bytes of the message and the table's header).
    fn assert_charged(what: &str, start: isize, map: &LayerMap, cache: &BitmapCache) {
        let heap = (heap_bytes() - start) as usize;
        assert_eq!(cache.used(), map.resident_bytes, "{what}: the cache holds what the layer charged");
        assert!(
            heap <= map.resident_bytes + 256 && map.resident_bytes <= heap + heap / 50,
            "{what}: {} bitmaps hold {heap} bytes on the heap, {} were charged",
            map.objects.len(),
            map.resident_bytes
        );
    }

    #[test]
    fn the_bitmap_budget_is_charged_what_bitmaps_and_their_table_take() {
        let db = redb::Database::builder().create_with_backend(redb::backends::InMemoryBackend::new()).expect("db");
        let cache = BitmapCache::new(Arc::new(db), 1 << 30);
        for bpo in [1024, 16, 8192] {
            let start = heap_bytes();
            let mut map = LayerMap::default();
            for object_no in 0..3000 {
                map.insert_resident(object_no, ObjBits::new(bpo), bpo, &cache);
            }
            assert_charged(&format!("{bpo} blocks per object, 3000 in memory"), start, &map, &cache);
            // Evictions leave a table larger than its entries need, until it shrinks: charged all along.
            map.objects.retain(|o, _| *o < 1000);
            map.recount(bpo, &cache);
            assert_charged(&format!("{bpo} blocks per object, 1000 left"), start, &map, &cache);
            map.objects.retain(|o, _| *o < 100);
            map.shrink();
            map.recount(bpo, &cache);
            assert_charged(&format!("{bpo} blocks per object, 100 left"), start, &map, &cache);
            map.objects.clear();
            map.shrink();
            map.recount(bpo, &cache);
            assert_charged(&format!("{bpo} blocks per object, none left"), start, &map, &cache);
        }
    }

    #[test]
    fn a_map_emptied_by_evictions_gives_its_capacity_back() {
        let mut map: HashMap<u64, [u64; 8]> = (0..50_000).map(|i| (i, [i; 8])).collect();
        map.retain(|k, _| *k < 100);
        assert!(map.capacity() > 10_000, "a hash map keeps its capacity: {}", map.capacity());
        super::shrink_if_sparse(&mut map);
        assert!(map.capacity() <= 2 * 100 + 64, "capacity {} for 100 entries", map.capacity());
        assert_eq!(map.len(), 100);
        // A map that is full enough is left alone.
        let before = map.capacity();
        super::shrink_if_sparse(&mut map);
        assert_eq!(map.capacity(), before);
    }
}
