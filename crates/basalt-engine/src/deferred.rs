//! Deferred overwrites: small overwrites whose bytes are, for now, only in the journal.
//!
//! A write shorter than 64 KiB over blocks a layer already holds as data is logged (kind 1, with its bytes) and
//! not written to the layer file: the next checkpoint writes it there. Each layer keeps the blocks in that state in
//! a [`DeferredMap`]; reads take their bytes from the journal. docs/FORMAT.md ("Deferred overwrites") gives the
//! rules this module and its callers in `layer.rs` and `state.rs` keep, and the crash analysis.

use std::collections::HashMap;
use std::collections::hash_map::Entry as Slot;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use crate::journal::Logged;
use crate::layout::BLOCK_SIZE;

/// Where the newest bytes of one deferred block are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Deferred {
    /// The seq of the record that holds them.
    pub seq: u64,
    /// The journal file, and the offset of the block's bytes in it.
    pub file: usize,
    pub at: u64,
    /// Their crc32c.
    pub crc: u32,
    /// The seq of the oldest entry this one replaced with no write of the layer file in between: entries of one
    /// chain are versions the file has not seen yet, and a new chain starts after the file got the block.
    pub chain: u64,
}

/// A layer's deferred blocks, by layer file block (`file offset / 4096`).
#[derive(Debug, Default)]
pub(crate) struct DeferredMap {
    map: Mutex<HashMap<u64, Deferred>>,
    /// The number of entries, read without the lock: most reads find it zero and look no further.
    len: AtomicUsize,
}

/// The map, locked: the only way to change it.
pub(crate) struct Locked<'a> {
    map: MutexGuard<'a, HashMap<u64, Deferred>>,
    len: &'a AtomicUsize,
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        self.len.store(self.map.len(), Ordering::SeqCst);
    }
}

impl Locked<'_> {
    /// The entry of a block.
    pub fn get(&self, block: u64) -> Option<Deferred> {
        self.map.get(&block).copied()
    }

    /// The entries of `blocks` consecutive blocks from `first`, in order.
    pub fn range(&self, first: u64, blocks: u64) -> Vec<(u64, Deferred)> {
        if self.map.is_empty() {
            return Vec::new();
        }
        (first..first + blocks).filter_map(|b| self.get(b).map(|e| (b, e))).collect()
    }

    /// Removes a block's entry.
    pub fn remove(&mut self, block: u64) {
        self.map.remove(&block);
    }

    /// Notes the blocks of a kind-1 record (`crcs`, one per block, from file block `first`) as deferred. An entry
    /// replaces only an older one, and continues its chain.
    pub fn insert(&mut self, logged: Logged, first: u64, crcs: &[u32]) {
        for (i, &crc) in crcs.iter().enumerate() {
            let entry = Deferred {
                seq: logged.seq,
                file: logged.file,
                at: logged.body_at + i as u64 * BLOCK_SIZE,
                crc,
                chain: logged.seq,
            };
            match self.map.entry(first + i as u64) {
                Slot::Occupied(mut o) => {
                    if o.get().seq < logged.seq {
                        let chain = o.get().chain;
                        o.insert(Deferred { chain, ..entry });
                    }
                }
                Slot::Vacant(v) => {
                    v.insert(entry);
                }
            }
        }
    }

    /// Every entry, in no order (what a checkpoint copies under the freeze lock, and sorts after it).
    pub fn copy(&self) -> Vec<(u64, Deferred)> {
        self.map.iter().map(|(&b, &e)| (b, e)).collect()
    }
}

/// What a checkpoint writes for one block it copied under the freeze.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Apply {
    /// The file got the block (or a newer version) since the copy: nothing.
    Skip,
    /// The current entry, durable: write it and remove it.
    Current(Deferred),
    /// The current entry is newer and not durable yet: write the copy's version, keep the entry.
    Copy(Deferred),
}

/// Decides what a checkpoint whose copy holds `copy` for a block writes there, given the block's entry now and the
/// last seq the journal has made durable (docs/FORMAT.md, "Deferred overwrites", rule 4).
pub(crate) fn plan(copy: Deferred, now: Option<Deferred>, synced: u64) -> Apply {
    match now {
        Some(now) if now.chain == copy.chain && now.seq <= synced => Apply::Current(now),
        Some(now) if now.chain == copy.chain => Apply::Copy(copy),
        _ => Apply::Skip,
    }
}

impl DeferredMap {
    /// Locks the map.
    pub fn lock(&self) -> Locked<'_> {
        Locked { map: self.map.lock().unwrap_or_else(std::sync::PoisonError::into_inner), len: &self.len }
    }

    /// True when no block is deferred.
    pub fn is_empty(&self) -> bool {
        self.len.load(Ordering::SeqCst) == 0
    }

    /// Whether any of `blocks` consecutive blocks from `first` is deferred (without taking the lock when the map is
    /// empty).
    pub fn any_in(&self, first: u64, blocks: u64) -> bool {
        !self.is_empty() && {
            let map = self.lock();
            (first..first + blocks).any(|b| map.get(b).is_some())
        }
    }

    /// The entries of `blocks` consecutive blocks from `first` (none without taking the lock when the map is empty).
    pub fn range(&self, first: u64, blocks: u64) -> Vec<(u64, Deferred)> {
        if self.is_empty() { Vec::new() } else { self.lock().range(first, blocks) }
    }
}

#[cfg(test)]
mod tests {
    use super::{Apply, Deferred, DeferredMap, plan};
    use crate::journal::Logged;

    fn logged(seq: u64) -> Logged {
        Logged { seq, file: 0, body_at: 4096 * seq }
    }

    #[test]
    fn a_newer_entry_continues_the_chain_and_an_older_one_changes_nothing() {
        let map = DeferredMap::default();
        map.lock().insert(logged(5), 10, &[1, 2]);
        map.lock().insert(logged(9), 11, &[3]);
        map.lock().insert(logged(7), 11, &[4]);
        let mut all = map.lock().copy();
        all.sort_unstable_by_key(|&(b, _)| b);
        assert_eq!(all.len(), 2);
        assert_eq!(all[0], (10, Deferred { seq: 5, file: 0, at: 4096 * 5, crc: 1, chain: 5 }));
        assert_eq!(all[1], (11, Deferred { seq: 9, file: 0, at: 4096 * 9, crc: 3, chain: 5 }), "kept the newer");
        assert!(!map.is_empty());
        map.lock().remove(10);
        map.lock().remove(11);
        assert!(map.is_empty() && map.range(10, 2).is_empty() && !map.any_in(10, 2));
        // After the file got the block, a new entry starts a new chain.
        map.lock().insert(logged(12), 11, &[6]);
        assert!(map.any_in(10, 2) && !map.any_in(12, 4));
        assert_eq!(map.range(10, 4), vec![(11, Deferred { seq: 12, file: 0, at: 4096 * 12, crc: 6, chain: 12 })]);
    }

    #[test]
    fn a_checkpoint_writes_the_newest_durable_version_or_its_copy_and_never_over_a_newer_file() {
        let copy = Deferred { seq: 5, file: 0, at: 0, crc: 1, chain: 3 };
        // Unchanged since the copy.
        assert_eq!(plan(copy, Some(copy), 5), Apply::Current(copy));
        // Replaced by a newer write in the same chain: the newer one if durable, else the copy's version.
        let newer = Deferred { seq: 8, chain: 3, ..copy };
        assert_eq!(plan(copy, Some(newer), 8), Apply::Current(newer));
        assert_eq!(plan(copy, Some(newer), 7), Apply::Copy(copy));
        // Applied by another path since (no entry, or a new chain): the file holds something at least as new.
        assert_eq!(plan(copy, None, 9), Apply::Skip);
        assert_eq!(plan(copy, Some(Deferred { seq: 9, chain: 9, ..copy }), 9), Apply::Skip);
    }
}
