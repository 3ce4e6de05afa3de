//! A simulated disk for crash and fault tests: it keeps what is durable apart from what is only written, can cut
//! the power at the N-th mutating operation, can fail one operation with EIO or ENOSPC, and can have a capacity.
//!
//! The crash model is that of a real disk with a volatile cache: a write is durable once its file was synced; a
//! creation or removal of a file once its directory was synced; anything else may or may not have reached the
//! disk, in any combination.
//!
//! The space model is that of a file system with 4 KiB blocks: a write allocates the blocks it touches that the
//! file lacks, `allocate` every block up to its length; a punched hole frees the blocks it covers whole, a
//! truncation those past the new end, and a file's blocks go back when it is removed and no handle has it open. With a capacity set
//! ([`SimVfs::set_capacity`]), an operation that needs more blocks than are free fails with ENOSPC: a write after
//! writing the blocks that fitted (as a real `write` that comes back short, then fails), anything else having
//! changed nothing. Growing a file with `set_len` allocates nothing (the new range is a hole).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use crate::vfs::{Vfs, VfsFile};

/// What happens at the chosen operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The power goes out: this and every later operation fails with EIO and nothing more reaches the disk.
    PowerCut,
    /// This one operation fails with EIO; later ones work.
    Eio,
    /// This one operation fails with ENOSPC; later ones work.
    Enospc,
}

/// Which unsynced writes survive a power cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashSurvivors {
    /// None of them.
    None,
    /// All of them (the cache was written back just before the cut).
    All,
    /// A pseudo-random subset chosen by the seed.
    Random(u64),
    /// Every one to the files whose names end with one of these, and none to the others: a cut that writes back
    /// one file's cache and not another's (data without its checksum, say).
    FilesEndingWith(&'static [&'static str]),
}

#[derive(Debug, Clone, Default)]
struct SimFileData {
    durable: Vec<u8>,
    live: Vec<u8>,
    /// Writes since the last sync, in order: `(offset, bytes)`; a `set_len` is `(len, empty)` with `u64::MAX` marker.
    pending: Vec<PendingOp>,
    /// The 4 KiB blocks the file holds space for.
    alloc: BTreeSet<u64>,
    /// Open handles.
    handles: usize,
    /// False once the file was removed: its blocks go back when the last handle closes.
    unlinked: bool,
}

/// The simulated disk's block size, for the space model.
const SIM_BLOCK: u64 = 4096;

/// Blocks `first..end` covering the byte range `offset..offset + len` (any block it touches).
fn touched_blocks(offset: u64, len: u64) -> std::ops::Range<u64> {
    if len == 0 {
        return 0..0;
    }
    offset / SIM_BLOCK..(offset + len).div_ceil(SIM_BLOCK)
}

#[derive(Debug, Default)]
struct Space {
    capacity: Option<u64>,
    /// Blocks held by files, in bytes.
    used: u64,
}

#[derive(Debug, Clone)]
enum PendingOp {
    Write(u64, Vec<u8>),
    SetLen(u64),
}

fn apply(data: &mut Vec<u8>, op: &PendingOp) {
    match op {
        PendingOp::Write(offset, bytes) => {
            let end = *offset as usize + bytes.len();
            if data.len() < end {
                data.resize(end, 0);
            }
            data[*offset as usize..end].copy_from_slice(bytes);
        }
        PendingOp::SetLen(len) => data.resize(*len as usize, 0),
    }
}

#[derive(Debug, Default)]
struct SimState {
    /// Files by path; each entry is shared with open handles.
    live_files: BTreeMap<PathBuf, Arc<Mutex<SimFileData>>>,
    /// The directory entries that are durable.
    durable_files: BTreeMap<PathBuf, Arc<Mutex<SimFileData>>>,
    /// Directories that exist.
    dirs: Vec<PathBuf>,
    powered_off: bool,
}

/// The simulated disk. Cloning shares it.
#[derive(Clone, Default)]
pub struct SimVfs {
    state: Arc<Mutex<SimState>>,
    ops: Arc<AtomicU64>,
    fault_at: Arc<Mutex<Option<(u64, Fault)>>>,
    /// A gate the next `write_at` stops at, before it changes anything.
    hold: Arc<Mutex<Option<HeldWrite>>>,
    /// Power cuts this disk went through: the simulated kernel's boot id.
    boots: u64,
    /// Capacity and usage.
    space: Arc<Mutex<Space>>,
    /// Stands for a disk whose layer files bypass the page cache ([`Vfs::direct_io`]): the engine then writes
    /// deferred blocks from several threads. The disk model is the same either way: a completed write survives a
    /// process crash (in the page cache, or in the device) and only a sync makes it survive a power cut.
    direct: bool,
}

/// The gate a write stops at: of any file, or of a file in the directory given.
type HeldWrite = (WriteGate, Option<PathBuf>);

#[derive(Debug, Default)]
struct GateState {
    arrived: bool,
    released: bool,
}

/// Holds one write inside `write_at` (before it reaches the file) until released, so a test can run other
/// operations while that write is in flight. See [`SimVfs::hold_next_write`].
#[derive(Debug, Clone, Default)]
pub struct WriteGate {
    state: Arc<(Mutex<GateState>, Condvar)>,
}

impl WriteGate {
    /// Waits until a write arrived at the gate and is held there.
    pub fn wait_until_held(&self) {
        let (state, cond) = &*self.state;
        let mut st = lock(state);
        while !st.arrived {
            st = cond.wait(st).unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    /// Lets the held write (or the one still to come) go on.
    pub fn release(&self) {
        let (state, cond) = &*self.state;
        lock(state).released = true;
        cond.notify_all();
    }

    fn pass(&self) {
        let (state, cond) = &*self.state;
        let mut st = lock(state);
        st.arrived = true;
        cond.notify_all();
        while !st.released {
            st = cond.wait(st).unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }
}

impl fmt::Debug for SimVfs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimVfs").field("ops", &self.ops.load(Ordering::SeqCst)).finish()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn eio(what: &str) -> io::Error {
    io::Error::other(format!("simulated EIO ({what})"))
}

impl SimVfs {
    /// An empty disk.
    pub fn new() -> SimVfs {
        SimVfs::default()
    }

    /// Returns how many mutating operations (writes, syncs, creations, removals, truncations) ran so far.
    pub fn op_count(&self) -> u64 {
        self.ops.load(Ordering::SeqCst)
    }

    /// Arms a fault at the mutating operation with index `op_index` (counted from the start of this disk).
    pub fn inject(&self, op_index: u64, fault: Fault) {
        *lock(&self.fault_at) = Some((op_index, fault));
    }

    /// Makes the next `write_at` on any file of this disk wait, before it changes anything, until the returned
    /// gate is released.
    pub fn hold_next_write(&self) -> WriteGate {
        let gate = WriteGate::default();
        *lock(&self.hold) = Some((gate.clone(), None));
        gate
    }

    /// [`SimVfs::hold_next_write`] for the next `write_at` on a file in directory `dir` only.
    pub fn hold_next_write_in(&self, dir: &Path) -> WriteGate {
        let gate = WriteGate::default();
        *lock(&self.hold) = Some((gate.clone(), Some(dir.to_path_buf())));
        gate
    }

    /// Gives the disk a capacity in bytes (`None`: unlimited, the default). Usage counts from what files hold now.
    pub fn set_capacity(&self, capacity: Option<u64>) {
        lock(&self.space).capacity = capacity;
    }

    /// Bytes held by files (whole 4 KiB blocks).
    pub fn used_bytes(&self) -> u64 {
        lock(&self.space).used
    }

    /// Bytes free under the capacity (`u64::MAX` without one).
    pub fn free_bytes(&self) -> u64 {
        let space = lock(&self.space);
        space.capacity.map_or(u64::MAX, |c| c.saturating_sub(space.used))
    }

    /// Takes `blocks` blocks from the free space, or returns false when fewer are free.
    fn take_blocks(&self, blocks: u64) -> bool {
        let mut space = lock(&self.space);
        let need = blocks * SIM_BLOCK;
        if space.capacity.is_some_and(|c| space.used + need > c) {
            return false;
        }
        space.used += need;
        true
    }

    fn give_blocks(&self, blocks: u64) {
        let mut space = lock(&self.space);
        space.used = space.used.saturating_sub(blocks * SIM_BLOCK);
    }

    /// Removes an armed fault.
    pub fn disarm(&self) {
        *lock(&self.fault_at) = None;
    }

    /// Returns true once a power cut happened.
    pub fn is_powered_off(&self) -> bool {
        lock(&self.state).powered_off
    }

    /// Cuts the power now.
    pub fn power_cut(&self) {
        lock(&self.state).powered_off = true;
    }

    /// Returns the disk as it is after a power cut: durable state plus the chosen unsynced writes, as a fresh disk.
    pub fn after_crash(&self, survivors: CrashSurvivors) -> SimVfs {
        let state = lock(&self.state);
        let mut rng = match survivors {
            CrashSurvivors::Random(seed) => seed | 1,
            _ => 1,
        };
        let mut next_bool = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng & 1 == 1
        };
        let mut files = BTreeMap::new();
        for (path, file) in &state.durable_files {
            let file = lock(file);
            let mut data = file.durable.clone();
            for op in &file.pending {
                let keep = match survivors {
                    CrashSurvivors::None => false,
                    CrashSurvivors::All => true,
                    CrashSurvivors::Random(_) => next_bool(),
                    CrashSurvivors::FilesEndingWith(ends) => {
                        let name = path.to_string_lossy();
                        ends.iter().any(|end| name.ends_with(end))
                    }
                };
                if keep {
                    apply(&mut data, op);
                }
            }
            // Space the file held stays held (allocation is taken as durable: a conservative simplification),
            // plus whatever the surviving bytes need.
            files.insert(path.clone(), (data, file.alloc.clone()));
        }
        Self::restarted(files, state.dirs.clone(), self.boots + 1, lock(&self.space).capacity).direct_io(self.direct)
    }

    /// Returns the disk as a process that died (`kill -9`) leaves it: the kernel outlives the process, so every
    /// completed write survives, synced or not, and the boot stays the same.
    pub fn after_process_crash(&self) -> SimVfs {
        let state = lock(&self.state);
        let mut files = BTreeMap::new();
        for (path, file) in &state.live_files {
            let file = lock(file);
            files.insert(path.clone(), (file.live.clone(), file.alloc.clone()));
        }
        Self::restarted(files, state.dirs.clone(), self.boots, lock(&self.space).capacity).direct_io(self.direct)
    }

    /// A disk holding `contents` (each file's bytes and the blocks it held), all durable, as a restarted system
    /// finds it.
    fn restarted(
        contents: BTreeMap<PathBuf, (Vec<u8>, BTreeSet<u64>)>,
        dirs: Vec<PathBuf>,
        boots: u64,
        capacity: Option<u64>,
    ) -> SimVfs {
        let mut used = 0;
        let files: BTreeMap<_, _> = contents
            .into_iter()
            .map(|(path, (data, mut alloc))| {
                for (i, chunk) in data.chunks(SIM_BLOCK as usize).enumerate() {
                    if chunk.iter().any(|b| *b != 0) {
                        alloc.insert(i as u64);
                    }
                }
                used += alloc.len() as u64 * SIM_BLOCK;
                let fresh = SimFileData { durable: data.clone(), live: data, alloc, ..SimFileData::default() };
                (path, Arc::new(Mutex::new(fresh)))
            })
            .collect();
        let new_state = SimState { durable_files: files.clone(), live_files: files, dirs, powered_off: false };
        SimVfs {
            state: Arc::new(Mutex::new(new_state)),
            ops: Arc::new(AtomicU64::new(0)),
            fault_at: Arc::new(Mutex::new(None)),
            hold: Arc::new(Mutex::new(None)),
            boots,
            space: Arc::new(Mutex::new(Space { capacity, used })),
            direct: false,
        }
    }

    /// This disk, standing for one whose layer files bypass the page cache when `direct` ([`Vfs::direct_io`]);
    /// the disks it leaves after a crash keep the setting.
    pub fn direct_io(mut self, direct: bool) -> SimVfs {
        self.direct = direct;
        self
    }

    /// Counts one mutating operation and applies an armed fault.
    fn tick(&self, what: &str) -> io::Result<()> {
        if lock(&self.state).powered_off {
            return Err(eio(what));
        }
        let index = self.ops.fetch_add(1, Ordering::SeqCst);
        let fault = *lock(&self.fault_at);
        match fault {
            Some((at, Fault::PowerCut)) if index >= at => {
                lock(&self.state).powered_off = true;
                Err(eio(what))
            }
            Some((at, Fault::Eio)) if index == at => Err(eio(what)),
            Some((at, Fault::Enospc)) if index == at => Err(enospc()),
            _ => Ok(()),
        }
    }
}

struct SimFile {
    vfs: SimVfs,
    path: PathBuf,
    data: Arc<Mutex<SimFileData>>,
}

impl SimFile {
    fn new(vfs: SimVfs, path: PathBuf, data: Arc<Mutex<SimFileData>>) -> SimFile {
        lock(&data).handles += 1;
        SimFile { vfs, path, data }
    }

    /// Allocates every missing block of `blocks`, all or none.
    fn allocate_blocks(&self, data: &mut SimFileData, blocks: std::ops::Range<u64>) -> io::Result<()> {
        let missing: Vec<u64> = blocks.filter(|b| !data.alloc.contains(b)).collect();
        if !self.vfs.take_blocks(missing.len() as u64) {
            return Err(enospc());
        }
        data.alloc.extend(missing);
        Ok(())
    }

    /// Frees the blocks in `blocks` the file holds.
    fn free_blocks(&self, data: &mut SimFileData, blocks: std::ops::Range<u64>) {
        let freed: Vec<u64> = data.alloc.range(blocks).copied().collect();
        for b in &freed {
            data.alloc.remove(b);
        }
        self.vfs.give_blocks(freed.len() as u64);
    }
}

impl Drop for SimFile {
    fn drop(&mut self) {
        let mut data = lock(&self.data);
        data.handles -= 1;
        if data.unlinked && data.handles == 0 {
            let all = std::mem::take(&mut data.alloc);
            self.vfs.give_blocks(all.len() as u64);
        }
    }
}

fn enospc() -> io::Error {
    io::Error::from_raw_os_error(28)
}

impl fmt::Debug for SimFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SimFile({})", self.path.display())
    }
}

impl VfsFile for SimFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let data = lock(&self.data);
        let start = (offset as usize).min(data.live.len());
        let end = (offset as usize + buf.len()).min(data.live.len());
        let n = end - start;
        buf[..n].copy_from_slice(&data.live[start..end]);
        buf[n..].fill(0);
        Ok(())
    }

    fn write_at(&self, bytes: &[u8], offset: u64) -> io::Result<()> {
        let gate = {
            let mut hold = lock(&self.vfs.hold);
            let here = hold.as_ref().is_some_and(|(_, dir)| dir.as_ref().is_none_or(|d| self.path.parent() == Some(d)));
            if here { hold.take() } else { None }
        };
        if let Some((gate, _)) = gate {
            gate.pass();
        }
        self.vfs.tick("write")?;
        let mut data = lock(&self.data);
        // Allocate the blocks the write needs in order; where space runs out, the bytes before that block are
        // written (a short write) and the write fails.
        let mut fits = bytes.len();
        for b in touched_blocks(offset, bytes.len() as u64) {
            if !data.alloc.contains(&b) {
                if !self.vfs.take_blocks(1) {
                    fits = (b * SIM_BLOCK).saturating_sub(offset) as usize;
                    break;
                }
                data.alloc.insert(b);
            }
        }
        if fits > 0 {
            let op = PendingOp::Write(offset, bytes[..fits].to_vec());
            apply(&mut data.live, &op);
            data.pending.push(op);
        }
        if fits < bytes.len() {
            return Err(enospc());
        }
        Ok(())
    }

    fn punch_hole(&self, offset: u64, length: u64) -> io::Result<()> {
        self.vfs.tick("punch")?;
        let mut data = lock(&self.data);
        let end = ((offset + length) as usize).min(data.live.len());
        let start = (offset as usize).min(end);
        let op = PendingOp::Write(start as u64, vec![0; end - start]);
        apply(&mut data.live, &op);
        data.pending.push(op);
        // Blocks the range covers whole go back.
        let whole = offset.div_ceil(SIM_BLOCK)..(offset + length) / SIM_BLOCK;
        if whole.start < whole.end {
            self.free_blocks(&mut data, whole);
        }
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        Ok(lock(&self.data).live.len() as u64)
    }

    fn set_len(&self, length: u64) -> io::Result<()> {
        self.vfs.tick("set_len")?;
        let mut data = lock(&self.data);
        let op = PendingOp::SetLen(length);
        apply(&mut data.live, &op);
        data.pending.push(op);
        // A truncation frees every block past the new end; growing allocates nothing.
        self.free_blocks(&mut data, length.div_ceil(SIM_BLOCK)..u64::MAX);
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        self.vfs.tick("sync")?;
        let mut data = lock(&self.data);
        data.durable = data.live.clone();
        data.pending.clear();
        Ok(())
    }

    fn allocate(&self, length: u64) -> io::Result<()> {
        self.vfs.tick("allocate")?;
        let mut data = lock(&self.data);
        self.allocate_blocks(&mut data, 0..length.div_ceil(SIM_BLOCK))?;
        if (data.live.len() as u64) < length {
            let op = PendingOp::SetLen(length);
            apply(&mut data.live, &op);
            data.pending.push(op);
        }
        Ok(())
    }
}

#[derive(Debug)]
struct NoLock;

impl Vfs for SimVfs {
    fn direct_io(&self) -> bool {
        self.direct
    }

    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn VfsFile>> {
        let existing = lock(&self.state).live_files.get(path).cloned();
        let data = match existing {
            Some(data) => data,
            None if create => {
                self.tick("create")?;
                let data = Arc::new(Mutex::new(SimFileData::default()));
                lock(&self.state).live_files.insert(path.to_owned(), data.clone());
                data
            }
            None => return Err(io::Error::from_raw_os_error(2)),
        };
        Ok(Arc::new(SimFile::new(self.clone(), path.to_owned(), data)))
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        self.tick("remove")?;
        let removed = lock(&self.state).live_files.remove(path);
        match removed {
            Some(data) => {
                let mut data = lock(&data);
                data.unlinked = true;
                if data.handles == 0 {
                    let all = std::mem::take(&mut data.alloc);
                    self.give_blocks(all.len() as u64);
                }
                Ok(())
            }
            None => Err(io::Error::from_raw_os_error(2)),
        }
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let state = lock(&self.state);
        Ok(state
            .live_files
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect())
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut state = lock(&self.state);
        if !state.dirs.iter().any(|d| d == dir) {
            state.dirs.push(dir.to_owned());
        }
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.tick("sync_dir")?;
        let mut state = lock(&self.state);
        let live: Vec<(PathBuf, Arc<Mutex<SimFileData>>)> = state
            .live_files
            .iter()
            .filter(|(p, _)| p.parent() == Some(dir))
            .map(|(p, d)| (p.clone(), d.clone()))
            .collect();
        state.durable_files.retain(|p, _| p.parent() != Some(dir));
        state.durable_files.extend(live);
        Ok(())
    }

    fn boot_id(&self) -> String {
        format!("simulated-boot-{}", self.boots)
    }

    fn lock(&self, _path: &Path) -> io::Result<Box<dyn fmt::Debug + Send + Sync>> {
        Ok(Box::new(NoLock))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsynced_writes_are_lost_and_synced_ones_kept() {
        let vfs = SimVfs::new();
        let dir = Path::new("/d");
        vfs.create_dir_all(dir).expect("mkdir");
        let file = vfs.open(&dir.join("f"), true).expect("create");
        file.write_at(b"hello", 0).expect("write");
        vfs.sync_dir(dir).expect("sync dir");
        file.sync_data().expect("sync");
        file.write_at(b"HE", 0).expect("write");
        let crashed = vfs.after_crash(CrashSurvivors::None);
        let reopened = crashed.open(&dir.join("f"), false).expect("file survives");
        let mut buf = [0u8; 5];
        reopened.read_at(&mut buf, 0).expect("read");
        assert_eq!(&buf, b"hello");
        let crashed = vfs.after_crash(CrashSurvivors::All);
        let reopened = crashed.open(&dir.join("f"), false).expect("file survives");
        reopened.read_at(&mut buf, 0).expect("read");
        assert_eq!(&buf, b"HEllo");
    }

    #[test]
    fn files_need_a_directory_sync_to_survive() {
        let vfs = SimVfs::new();
        let dir = Path::new("/d");
        let file = vfs.open(&dir.join("new"), true).expect("create");
        file.write_at(b"x", 0).expect("write");
        file.sync_data().expect("sync");
        let crashed = vfs.after_crash(CrashSurvivors::All);
        assert!(crashed.open(&dir.join("new"), false).is_err());
    }

    #[test]
    fn a_power_cut_stops_every_later_operation() {
        let vfs = SimVfs::new();
        let file = vfs.open(Path::new("/f"), true).expect("create");
        vfs.inject(2, Fault::PowerCut);
        file.write_at(b"a", 0).expect("op 1 works");
        assert!(file.write_at(b"b", 0).is_err());
        assert!(file.sync_data().is_err());
        assert!(vfs.is_powered_off());
    }

    #[test]
    fn a_full_disk_fails_writes_that_need_space_and_frees_what_is_given_back() {
        let vfs = SimVfs::new();
        vfs.set_capacity(Some(4 * SIM_BLOCK));
        let a = vfs.open(Path::new("/a"), true).expect("create");
        a.write_at(&[1; 4096], 0).expect("one block");
        a.allocate(2 * SIM_BLOCK).expect("one more, preallocated");
        assert_eq!(vfs.used_bytes(), 2 * SIM_BLOCK);
        // Overwrites and writes into preallocated blocks need nothing.
        a.write_at(&[2; 8192], 0).expect("in place");
        // A write of three new blocks with two free: two are written, then ENOSPC.
        let err = a.write_at(&[3; 3 * 4096], 2 * SIM_BLOCK).expect_err("full");
        assert_eq!(err.raw_os_error(), Some(28));
        assert_eq!(vfs.free_bytes(), 0);
        let mut buf = [0u8; 4096];
        a.read_at(&mut buf, 3 * SIM_BLOCK).expect("read");
        assert_eq!(buf, [3; 4096], "the blocks that fitted were written");
        assert_eq!(a.len().expect("len"), 4 * SIM_BLOCK);
        assert!(a.allocate(5 * SIM_BLOCK).is_err(), "fallocate past the capacity fails");
        assert_eq!(a.len().expect("len"), 4 * SIM_BLOCK, "and changes nothing");
        // A hole frees the blocks it covers whole; growing with set_len takes nothing; truncating frees.
        a.punch_hole(SIM_BLOCK / 2, 2 * SIM_BLOCK).expect("punch");
        assert_eq!(vfs.free_bytes(), SIM_BLOCK);
        a.set_len(1 << 30).expect("sparse growth");
        assert_eq!(vfs.free_bytes(), SIM_BLOCK);
        a.set_len(SIM_BLOCK).expect("truncate");
        assert_eq!(vfs.used_bytes(), SIM_BLOCK);
        // A removed file's blocks go back when its last handle closes.
        let b = vfs.open(Path::new("/b"), true).expect("create");
        b.write_at(&[4; 8192], 0).expect("write");
        vfs.remove(Path::new("/b")).expect("remove");
        assert_eq!(vfs.used_bytes(), 3 * SIM_BLOCK, "still open");
        drop(b);
        assert_eq!(vfs.used_bytes(), SIM_BLOCK);
        drop(a);
        vfs.remove(Path::new("/a")).expect("remove");
        assert_eq!(vfs.used_bytes(), 0);
    }

    #[test]
    fn space_held_before_a_power_cut_stays_held() {
        let vfs = SimVfs::new();
        vfs.set_capacity(Some(8 * SIM_BLOCK));
        let dir = Path::new("/d");
        let f = vfs.open(&dir.join("f"), true).expect("create");
        f.allocate(4 * SIM_BLOCK).expect("preallocate");
        f.write_at(&[1; 4096], 4 * SIM_BLOCK).expect("write");
        vfs.sync_dir(dir).expect("sync dir");
        f.sync_data().expect("sync");
        let crashed = vfs.after_crash(CrashSurvivors::None);
        assert_eq!(crashed.used_bytes(), 5 * SIM_BLOCK);
        assert_eq!(crashed.free_bytes(), 3 * SIM_BLOCK, "the capacity is the same disk's");
    }
}
