//! Space for the metadata store when the disk is full: the reserve file (docs/FORMAT.md, "A full disk").
//!
//! `DATA_DIR/reserve` is a preallocated file of `metadata_reserve` bytes that only the metadata store may use. When
//! a write or growth of the metadata file fails with ENOSPC, part of the reserve is given back to the file system
//! and the write is retried, so a metadata commit never fails for lack of space while the reserve lasts (redb
//! stops for good after a failed write, so failing is not an option). While the reserve is below its size, data
//! writes that need new blocks are refused with ENOSPC, so that what was given back serves the metadata store and
//! not the next data write; the reserve is refilled as soon as space comes back (after a removal, at checkpoints).

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use basalt_core::{Error, ErrorKind, Result};

use crate::layer::mutex_lock;
use crate::vfs::{Vfs, VfsFile};

/// The reserve file's name in the data directory.
pub const RESERVE_FILE: &str = "reserve";
/// The default size of the metadata reserve.
pub const DEFAULT_RESERVE: u64 = 64 << 20;
const BLOCK: u64 = 4096;

/// Whether an I/O error says the disk is full.
pub(crate) fn is_enospc(err: &io::Error) -> bool {
    err.raw_os_error() == Some(libc::ENOSPC) || err.kind() == io::ErrorKind::StorageFull
}

/// The metadata reserve of a store.
#[derive(Debug)]
pub(crate) struct MetaReserve {
    file: Arc<dyn VfsFile>,
    /// The size it is kept at.
    target: u64,
    /// Serialises releases and refills.
    lock: Mutex<()>,
    /// True while the reserve is below its size.
    low: AtomicBool,
    /// How many times part of it was given to the metadata store.
    releases: AtomicU64,
}

/// What the reserve holds now, for status reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReserveStatus {
    /// Bytes the reserve is kept at (`EngineOptions::metadata_reserve`).
    pub size: u64,
    /// Bytes it holds now: below `size` after the disk filled up and the metadata store used some of it.
    pub held: u64,
    /// Times part of it was given to the metadata store since the store was opened.
    pub releases: u64,
}

impl MetaReserve {
    /// Opens (or creates) the reserve file of the store in `root`, to be kept at `target` bytes. It is not filled
    /// here: the store's open fills it after the journal's replay, which may need the space first.
    pub fn open(vfs: &dyn Vfs, root: &Path, target: u64) -> Result<Arc<MetaReserve>> {
        let file = vfs.open(&root.join(RESERVE_FILE), true)?;
        let target = target / BLOCK * BLOCK;
        let reserve = Arc::new(MetaReserve {
            file,
            target,
            lock: Mutex::new(()),
            low: AtomicBool::new(true),
            releases: AtomicU64::new(0),
        });
        // A reserve larger than wanted (the option was lowered) gives the surplus back.
        let len = reserve.file.len()?;
        if len > target {
            reserve.file.set_len(target)?;
        }
        reserve.low.store(len < target, Ordering::SeqCst);
        Ok(reserve)
    }

    /// True while the reserve holds less than its size.
    pub fn is_low(&self) -> bool {
        self.low.load(Ordering::SeqCst)
    }

    /// What the reserve holds now.
    pub fn status(&self) -> ReserveStatus {
        ReserveStatus {
            size: self.target,
            held: self.file.len().unwrap_or(0).min(self.target),
            releases: self.releases.load(Ordering::SeqCst),
        }
    }

    /// Gives part of the reserve (a quarter of its size, or what is left) back to the file system so that a
    /// metadata write that failed with ENOSPC can be retried; false when nothing is left to give.
    pub fn release(&self) -> bool {
        let _one = mutex_lock(&self.lock);
        let Ok(len) = self.file.len() else { return false };
        if len == 0 {
            return false;
        }
        let step = (self.target / 4).max(BLOCK).min(len);
        if self.file.set_len((len - step) / BLOCK * BLOCK).is_err() {
            return false;
        }
        self.low.store(true, Ordering::SeqCst);
        self.releases.fetch_add(1, Ordering::SeqCst);
        true
    }

    /// Brings the reserve back to its size as far as free space allows; returns true when it is whole. With
    /// `thorough`, a refill that does not fit whole is tried in smaller steps; otherwise one attempt is made.
    pub fn refill(&self, thorough: bool) -> bool {
        if !self.is_low() {
            return true;
        }
        let _one = mutex_lock(&self.lock);
        let Ok(mut len) = self.file.len() else { return false };
        let mut want = self.target;
        while len < self.target {
            match self.file.allocate(want) {
                Ok(()) => len = want,
                Err(e) if is_enospc(&e) && thorough => {
                    // Some file systems keep what they allocated before running out: count it.
                    len = self.file.len().unwrap_or(len);
                    let half = (want - len) / 2 / BLOCK * BLOCK;
                    if half == 0 {
                        break;
                    }
                    want = len + half;
                }
                Err(_) => break,
            }
            if want < self.target && len == want {
                want = self.target;
                if !thorough {
                    break;
                }
            }
        }
        let whole = self.file.len().unwrap_or(0) >= self.target;
        self.low.store(!whole, Ordering::SeqCst);
        whole
    }

    /// Admits a data write that needs new blocks: refused with ENOSPC while the reserve is low and cannot be
    /// refilled, so the space given to the metadata store is not taken by data.
    pub fn admit_data(&self) -> Result<()> {
        if !self.is_low() || self.refill(false) {
            return Ok(());
        }
        Err(Error::new(
            ErrorKind::NoSpace,
            "the disk is full: no space for new data (overwrites of written blocks, reads, flushes and removals \
             still work; remove images or snapshots to free space)",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::SimVfs;

    #[test]
    fn the_reserve_gives_space_back_in_steps_and_refills_when_space_returns() {
        let vfs = SimVfs::new();
        vfs.set_capacity(Some(64 * BLOCK));
        let root = Path::new("/store");
        vfs.create_dir_all(root).expect("mkdir");
        let reserve = MetaReserve::open(&vfs, root, 16 * BLOCK).expect("open");
        assert!(reserve.is_low(), "a new reserve is empty until filled");
        assert!(reserve.refill(true));
        assert!(!reserve.is_low());
        assert_eq!(vfs.used_bytes(), 16 * BLOCK);
        // Fill the rest of the disk.
        let other = vfs.open(&root.join("data"), true).expect("create");
        other.allocate(48 * BLOCK).expect("fill");
        assert!(reserve.admit_data().is_ok(), "a whole reserve admits data");
        assert!(reserve.release());
        assert!(reserve.is_low());
        assert_eq!(vfs.free_bytes(), 4 * BLOCK, "a quarter given back");
        // The metadata store takes one block of it: the rest is not enough to refill, so new data is refused.
        let meta = vfs.open(&root.join("meta"), true).expect("create");
        meta.write_at(&[1; 4096], 0).expect("metadata write");
        assert_eq!(reserve.admit_data().map_err(|e| e.kind()), Err(ErrorKind::NoSpace));
        assert_eq!(reserve.status(), ReserveStatus { size: 16 * BLOCK, held: 12 * BLOCK, releases: 1 });
        // Something else takes the space; releases go on until the reserve is empty.
        other.allocate(51 * BLOCK).expect("take it");
        for _ in 0..3 {
            assert!(reserve.release());
        }
        assert!(!reserve.release(), "nothing left");
        other.allocate(63 * BLOCK).expect("the disk is full again");
        // Space comes back in part: a thorough refill takes what it can, then all of it.
        other.set_len(53 * BLOCK).expect("free 10 blocks");
        assert!(!reserve.refill(true));
        assert_eq!(reserve.status().held, 10 * BLOCK);
        other.set_len(0).expect("free all");
        assert!(reserve.admit_data().is_ok(), "the reserve refills and data is admitted again");
        assert!(!reserve.is_low());
        assert_eq!(reserve.status().held, 16 * BLOCK);
    }
}
