//! The bitmap cache: which objects' block bitmaps stay in memory, within one budget for every layer of the store.
//!
//! A layer always knows which objects it has state for (a compact set, a bit per object) and counts its data
//! blocks, but holds the bitmaps themselves only while they are in use: a bitmap not changed since the last
//! checkpoint can be dropped and read again from the metadata store when needed. Bitmaps changed since the last
//! checkpoint (or being committed by one) are never dropped: the store's copy is behind them. Eviction is a clock
//! over the layers: each resident bitmap has a referenced flag, set on use; an eviction pass clears flags and drops
//! the bitmaps it finds unreferenced, until the total is back under seven eighths of the budget.
//!
//! The budget is charged what the heap holds for the bitmaps, not a nominal size per bitmap: each layer counts its
//! bitmaps' allocations and its table of them at the table's size, and a checkpoint counts its encoded copies
//! (`layer.rs`, `LayerMap::recount` and `Dirty`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use basalt_core::Result;
use redb::ReadableDatabase;

use crate::layer::{Layer, ObjBits, mutex_lock};
use crate::records::{BLOCKS, db_err};

/// The share of the budget (one in this many bytes) that the chain indexes of all views may hold together.
pub(crate) const INDEX_SHARE: usize = 4;
/// Past this share of the budget (one in this many bytes) in dirty bitmaps, the checkpoint thread checkpoints.
pub(crate) const DIRTY_SHARE: usize = 8;

/// The memory budget for bitmaps, and the layers sharing it.
#[derive(Debug)]
pub(crate) struct BitmapCache {
    budget: usize,
    used: AtomicUsize,
    /// The most `used` has been.
    peak: AtomicUsize,
    /// Bytes given back since the allocator last returned free memory to the system (see
    /// [`BitmapCache::release_freed`]).
    freed: AtomicUsize,
    /// Bytes of `used` that views' chain indexes hold (see [`BitmapCache::charge_index`]).
    indexes: AtomicUsize,
    /// Bytes of bitmaps changed since a checkpoint last took them: they cannot be evicted, and the next checkpoint
    /// holds an encoded copy of each (see [`BitmapCache::dirty_high`]).
    dirty: AtomicUsize,
    layers: Mutex<Vec<Weak<Layer>>>,
    hand: AtomicUsize,
    evicting: Mutex<()>,
    db: Arc<redb::Database>,
}

impl BitmapCache {
    pub fn new(db: Arc<redb::Database>, budget: usize) -> BitmapCache {
        BitmapCache {
            budget,
            used: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            freed: AtomicUsize::new(0),
            indexes: AtomicUsize::new(0),
            dirty: AtomicUsize::new(0),
            layers: Mutex::new(Vec::new()),
            hand: AtomicUsize::new(0),
            evicting: Mutex::new(()),
            db,
        }
    }

    /// Bytes of bitmaps in memory now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// The budget, in bytes.
    pub fn budget(&self) -> usize {
        self.budget
    }

    /// True when one more bitmap of `bytes` fits the budget.
    pub fn has_room(&self, bytes: usize) -> bool {
        self.used() + bytes <= self.budget
    }

    pub fn charge(&self, bytes: usize) {
        let used = self.used.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.peak.fetch_max(used, Ordering::Relaxed);
    }

    /// Charges `bytes` of a view's chain index, unless the chain indexes of all views would then hold more than
    /// [`INDEX_SHARE`] of the budget: false then, and nothing is charged (the index starts over). Each view has its
    /// own index, so without this bound many long-chained views open at once could hold any amount.
    pub fn charge_index(&self, bytes: usize) -> bool {
        let limit = self.budget / INDEX_SHARE;
        let before = self.indexes.fetch_add(bytes, Ordering::Relaxed);
        if before + bytes > limit {
            self.indexes.fetch_sub(bytes, Ordering::Relaxed);
            return false;
        }
        self.charge(bytes);
        true
    }

    /// Gives back bytes of a chain index charged by [`BitmapCache::charge_index`].
    pub fn uncharge_index(&self, bytes: usize) {
        self.indexes.fetch_sub(bytes, Ordering::Relaxed);
        self.uncharge(bytes);
    }

    /// Bytes the chain indexes of all views hold now.
    pub fn index_bytes(&self) -> usize {
        self.indexes.load(Ordering::Relaxed)
    }

    /// Counts bitmaps of `bytes` in all that became dirty (or went back to dirty after a failed checkpoint).
    pub fn note_dirty(&self, bytes: usize) {
        self.dirty.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Counts bitmaps of `bytes` in all that stopped being dirty (a checkpoint took them, or their layer is gone).
    pub fn note_clean(&self, bytes: usize) {
        // Saturating: a layer dropped with dirty bitmaps and a checkpoint may both count the same ones.
        let _ = self.dirty.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |d| Some(d.saturating_sub(bytes)));
    }

    /// True when dirty bitmaps hold more than [`DIRTY_SHARE`] of the budget: a checkpoint should make them clean
    /// now. Waiting until the whole budget is used made the checkpoint's encoded copy (and the metadata store's
    /// transaction) as large as the budget again, on top of it.
    pub fn dirty_high(&self) -> bool {
        self.dirty.load(Ordering::Relaxed) > self.budget / DIRTY_SHARE
    }

    /// The most bytes of bitmaps that were in memory at once.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }

    pub fn uncharge(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::Relaxed);
        self.freed.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Asks the allocator to return its free memory to the system once an eighth of the budget or more was freed
    /// since it last did; true when it asked. Bitmaps come and go by the thousand (read back, evicted, copied by
    /// checkpoints) among the store's other small allocations, and glibc's malloc returns only the free top of
    /// its heap by itself: the pages freed in the middle stayed resident, about a third of the heap once a budget
    /// had been cycled through (`benches/memory.rs`). Called after checkpoints and by the checkpoint thread when
    /// idle.
    pub fn release_freed(&self) -> bool {
        if self.freed.load(Ordering::Relaxed) < self.budget / 8 {
            return false;
        }
        self.freed.store(0, Ordering::Relaxed);
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: malloc_trim only returns free pages of the allocator's arenas to the system.
        unsafe {
            libc::malloc_trim(0);
        }
        true
    }

    /// Lets eviction visit a layer (for as long as it lives).
    pub fn register(&self, layer: &Arc<Layer>) {
        mutex_lock(&self.layers).push(Arc::downgrade(layer));
    }

    /// Reads one object's bitmap from the metadata store (its state as of the last checkpoint).
    pub fn load(&self, layer: u64, object_no: u64, blocks_per_object: u64) -> Result<Option<ObjBits>> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(BLOCKS).map_err(db_err)?;
        let value = table.get((layer, object_no)).map_err(db_err)?;
        value.map(|v| ObjBits::decode(v.value(), blocks_per_object)).transpose()
    }

    /// Drops unreferenced clean bitmaps until the total is under seven eighths of the budget, if it is over the
    /// budget. Called with no layer lock held; one caller evicts at a time, the others go on.
    pub fn evict_if_over(&self) {
        if self.used() <= self.budget {
            return;
        }
        let Ok(_one) = self.evicting.try_lock() else { return };
        let target = self.budget - self.budget / 8;
        let layers: Vec<Arc<Layer>> = {
            let mut layers = mutex_lock(&self.layers);
            layers.retain(|l| l.strong_count() > 0);
            layers.iter().filter_map(Weak::upgrade).collect()
        };
        if layers.is_empty() {
            return;
        }
        // Two turns of the clock: the first may only clear referenced flags.
        for _ in 0..2 * layers.len() {
            if self.used() <= target {
                return;
            }
            let at = self.hand.fetch_add(1, Ordering::Relaxed) % layers.len();
            layers[at].evict_unreferenced(self.used().saturating_sub(target));
        }
    }
}

/// A set of object numbers, a bit each, in chunks of 512 objects: 64 bytes per 2 GiB of 4 MiB objects when dense,
/// a chunk per object at worst when scattered.
#[derive(Debug, Default)]
pub(crate) struct ObjectSet {
    chunks: BTreeMap<u64, [u64; 8]>,
    len: usize,
}

impl ObjectSet {
    fn split(object_no: u64) -> (u64, usize, u64) {
        (object_no >> 9, ((object_no >> 6) & 7) as usize, 1u64 << (object_no & 63))
    }

    pub fn contains(&self, object_no: u64) -> bool {
        let (chunk, word, bit) = Self::split(object_no);
        self.chunks.get(&chunk).is_some_and(|c| c[word] & bit != 0)
    }

    pub fn insert(&mut self, object_no: u64) {
        let (chunk, word, bit) = Self::split(object_no);
        let c = self.chunks.entry(chunk).or_insert([0; 8]);
        if c[word] & bit == 0 {
            c[word] |= bit;
            self.len += 1;
        }
    }

    pub fn remove(&mut self, object_no: u64) {
        let (chunk, word, bit) = Self::split(object_no);
        if let Some(c) = self.chunks.get_mut(&chunk)
            && c[word] & bit != 0
        {
            c[word] &= !bit;
            self.len -= 1;
            if c.iter().all(|w| *w == 0) {
                self.chunks.remove(&chunk);
            }
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len
    }

    /// The objects in `first..end`, in order.
    pub fn range(&self, first: u64, end: u64) -> impl Iterator<Item = u64> + '_ {
        self.chunks
            .range(first >> 9..=end.saturating_sub(1) >> 9)
            .flat_map(|(&chunk, words)| {
                words.iter().enumerate().flat_map(move |(w, &word)| {
                    let mut bits = word;
                    std::iter::from_fn(move || {
                        if bits == 0 {
                            return None;
                        }
                        let b = u64::from(bits.trailing_zeros());
                        bits &= bits - 1;
                        Some((chunk << 9) | (w as u64) << 6 | b)
                    })
                })
            })
            .filter(move |o| (first..end).contains(o))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::{BitmapCache, ObjectSet};

    #[test]
    fn freed_memory_goes_back_after_an_eighth_of_the_budget() {
        let db = redb::Database::builder().create_with_backend(redb::backends::InMemoryBackend::new()).expect("db");
        let cache = BitmapCache::new(Arc::new(db), 8 << 20);
        cache.charge(4 << 20);
        assert!(!cache.release_freed(), "nothing was freed");
        cache.uncharge(512 << 10);
        assert!(!cache.release_freed(), "a sixteenth of the budget is not worth a trim");
        cache.uncharge(512 << 10);
        assert!(cache.release_freed(), "an eighth of the budget was freed");
        assert!(!cache.release_freed(), "and was given back already");
        assert_eq!(cache.used(), 3 << 20);
    }

    #[test]
    fn object_set_keeps_what_was_inserted_in_order() {
        let mut set = ObjectSet::default();
        let objects = [0u64, 1, 63, 64, 511, 512, 4095, 1 << 40, (1 << 40) + 7];
        for o in objects.iter().rev() {
            set.insert(*o);
            set.insert(*o);
        }
        assert_eq!(set.len(), objects.len());
        assert_eq!(set.range(0, u64::MAX).collect::<Vec<_>>(), objects);
        assert_eq!(set.range(64, 4095).collect::<Vec<_>>(), [64, 511, 512]);
        assert!(set.contains(511) && !set.contains(510));
        set.remove(511);
        set.remove(511);
        assert!(!set.contains(511));
        assert_eq!(set.len(), objects.len() - 1);
        for o in objects {
            set.remove(o);
        }
        assert_eq!(set.len(), 0);
        assert_eq!(set.range(0, u64::MAX).count(), 0);
    }
}
