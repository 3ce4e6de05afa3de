//! Layer files cut into segments, so any offset of an image fits in the files of any file system.
//!
//! A layer keeps block `b` of object `n` at `n × object size + b × 4 KiB`, and its checksum sidecar keeps that
//! block's crc32c at a 1/1024 of that offset. One file cannot hold the end of a large image: ext4 with 4 KiB blocks
//! stops at 16 TiB. So each of the two is a run of segment files of `2^shift` bytes (8 TiB by default, recorded in
//! the store): segment 0 has the plain name (`<id>.layer`, `<id>.crc`) and segment `i` the name with `.i` appended.
//! A segment exists from the first write into it; one that does not exist reads as zeros (docs/FORMAT.md,
//! "Layer files").

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};

use crate::vfs::{Vfs, VfsFile};

/// Segments of 8 TiB: well inside the largest file of ext4 (16 TiB), and 128 of them make a PiB.
pub const DEFAULT_SEGMENT_SHIFT: u32 = 43;

/// The file name of segment `index` of the file named `base`.
pub(crate) fn segment_name(base: &str, index: u64) -> String {
    if index == 0 { base.to_owned() } else { format!("{base}.{index}") }
}

/// The layer id a file in the layers directory belongs to (a layer segment or a sidecar segment), if any.
pub(crate) fn layer_id_of(name: &str) -> Option<u64> {
    let base = base_name(name);
    let hex = base.strip_suffix(".layer").or_else(|| base.strip_suffix(".crc"))?;
    if hex.len() != 16 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

/// Whether a file in the layers directory is a segment of a layer's data file (not of its checksum sidecar).
pub(crate) fn is_layer_data(name: &str) -> bool {
    base_name(name).ends_with(".layer") && layer_id_of(name).is_some()
}

/// The name of a segment without its index (`<id>.layer.3` is segment 3 of `<id>.layer`).
fn base_name(name: &str) -> &str {
    match name.rsplit_once('.') {
        Some((base, index)) if !index.is_empty() && index.bytes().all(|b| b.is_ascii_digit()) => base,
        _ => name,
    }
}

/// Splits `[offset, offset + len)` at segment boundaries: `(segment, offset in it, start in the range, length)`.
fn pieces(shift: u32, offset: u64, len: u64) -> impl Iterator<Item = (u64, u64, u64, u64)> {
    let size = 1u64 << shift;
    let mut done = 0u64;
    std::iter::from_fn(move || {
        if done >= len {
            return None;
        }
        let at = offset + done;
        let n = (size - (at & (size - 1))).min(len - done);
        let piece = (at >> shift, at & (size - 1), done, n);
        done += n;
        Some(piece)
    })
}

/// The segment files open at once across every [`SegmentedFile`] that shares this, kept under a limit.
///
/// Every image in use holds its layers' files and sidecars open, two descriptors per layer and more past a segment:
/// ten thousand images would need more descriptors than a process is usually allowed. Past the limit, the segment
/// least recently used is closed (a clock: a segment used since the hand last passed gets a second chance) and
/// reopened on its next use. A segment written since its last sync is synced before it is closed, so a later
/// [`VfsFile::sync_data`] of its file, which syncs only the segments open then, still covers every write made
/// before it (a failure of that sync is kept and returned by the file's next `sync_data`).
///
/// A closed segment is reopened by name, so a layer's files must not be deleted while a handle to them may still
/// read: [`OpenFiles::hold_open`] opens every segment of the layers about to be deleted, for good.
#[derive(Debug)]
pub(crate) struct OpenFiles {
    limit: usize,
    open: AtomicUsize,
    /// Every open segment, in the order the clock hand visits them; entries of closed segments and dropped files
    /// are let go when the hand reaches them.
    ring: Mutex<VecDeque<(Weak<SegmentedFile>, u64)>>,
    /// Per layer id, its files in use.
    live: Mutex<HashMap<u64, Vec<Weak<SegmentedFile>>>>,
}

impl OpenFiles {
    /// At most `limit` segment files open at once (at least one).
    pub(crate) fn new(limit: usize) -> Arc<OpenFiles> {
        Arc::new(OpenFiles {
            limit: limit.max(1),
            open: AtomicUsize::new(0),
            ring: Mutex::new(VecDeque::new()),
            live: Mutex::new(HashMap::new()),
        })
    }

    /// Opens every segment of the files in use of `layers` and keeps them open until those files are dropped:
    /// called before the layers' files are deleted, as a view built before the deletion (an open snapshot's, say)
    /// may still read through them, and a deleted file cannot be reopened.
    pub(crate) fn hold_open(&self, layers: &[u64]) {
        let files: Vec<Arc<SegmentedFile>> = {
            let live = self.live.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            layers.iter().filter_map(|id| live.get(id)).flatten().filter_map(Weak::upgrade).collect()
        };
        for file in files {
            file.hold_open();
        }
    }

    /// The most segment files kept open at once.
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// How many segment files are open now.
    pub(crate) fn open_count(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    fn opened(&self, file: &Arc<SegmentedFile>, index: u64) {
        let open = self.open.fetch_add(1, Ordering::Relaxed) + 1;
        let mut ring = self.ring.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        ring.push_back((Arc::downgrade(file), index));
        if open <= self.limit {
            // Entries of segments closed by their own file (truncation, the file dropped) stay until the hand
            // passes: let them go now and then, so the ring stays near the number of open segments.
            if ring.len() > 2 * open + 64 {
                ring.retain(|(file, index)| file.upgrade().is_some_and(|f| f.is_open(*index)));
            }
            return;
        }
        // Two turns of the hand at most: the first clears the marks of segments in use, the second closes.
        let mut visits = 2 * ring.len();
        while self.open.load(Ordering::Relaxed) > self.limit && visits > 0 {
            visits -= 1;
            let Some((weak, index)) = ring.pop_front() else { break };
            let Some(file) = weak.upgrade() else { continue };
            if file.try_close(index) {
                ring.push_back((weak, index));
            }
        }
    }

    fn register(&self, file: &Arc<SegmentedFile>) {
        if let Some(id) = layer_id_of(&file.base) {
            let mut live = self.live.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            live.entry(id).or_default().push(Arc::downgrade(file));
        }
    }

    fn unregister(&self, base: &str) {
        if let Some(id) = layer_id_of(base) {
            let mut live = self.live.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(files) = live.get_mut(&id) {
                files.retain(|f| f.strong_count() > 0);
                if files.is_empty() {
                    live.remove(&id);
                }
            }
        }
    }
}

/// One open segment file.
#[derive(Debug)]
struct Slot {
    file: Arc<dyn VfsFile>,
    /// Set on every use, cleared by the clock hand: a segment used since the hand last passed stays open.
    used: AtomicBool,
    /// Set after every change, cleared by a sync.
    dirty: AtomicBool,
    files: Arc<OpenFiles>,
}

impl Slot {
    fn touch(&self) {
        if !self.used.load(Ordering::Relaxed) {
            self.used.store(true, Ordering::Relaxed);
        }
    }

    /// Runs a change of the segment and marks it as needing a sync (after the change, so a sync that cleared the
    /// mark before the change completed leaves it set).
    fn change<T>(&self, op: impl FnOnce(&dyn VfsFile) -> io::Result<T>) -> io::Result<T> {
        let result = op(&*self.file);
        self.dirty.store(true, Ordering::Release);
        result
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.files.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One logical file made of segment files in a directory.
#[derive(Debug)]
pub(crate) struct SegmentedFile {
    vfs: Arc<dyn Vfs>,
    dir: PathBuf,
    base: String,
    shift: u32,
    files: Arc<OpenFiles>,
    me: Weak<SegmentedFile>,
    /// The segments open now. One that is not open may exist on disk (written through another handle, or closed
    /// to stay under the limit) and is looked up again when needed. A clone of a slot is only taken under this
    /// lock, so holding it for writing and seeing a slot's only reference means no one is using that segment.
    open: RwLock<BTreeMap<u64, Arc<Slot>>>,
    /// The first failed sync of a segment closed to stay under the limit: every later `sync_data` returns it, as
    /// the writes it did not make durable are past saving.
    failed_sync: Mutex<Option<(io::ErrorKind, String)>>,
    /// Set once the file is about to be deleted: its segments stay open until it is dropped.
    held_open: AtomicBool,
    /// A segment was created and the directory sync after it failed: `sync_data` syncs the directory first.
    dir_unsynced: AtomicBool,
}

impl Drop for SegmentedFile {
    fn drop(&mut self) {
        self.files.unregister(&self.base);
    }
}

impl SegmentedFile {
    /// Opens the file named `base` in `dir` (segment 0), creating it if `create` is true.
    pub(crate) fn open(
        vfs: &Arc<dyn Vfs>,
        files: &Arc<OpenFiles>,
        dir: &Path,
        base: &str,
        shift: u32,
        create: bool,
    ) -> io::Result<Arc<dyn VfsFile>> {
        let first = vfs.open(&dir.join(base), create)?;
        let file = Arc::new_cyclic(|me| SegmentedFile {
            vfs: vfs.clone(),
            dir: dir.to_owned(),
            base: base.to_owned(),
            shift,
            files: files.clone(),
            me: me.clone(),
            open: RwLock::new(BTreeMap::new()),
            failed_sync: Mutex::new(None),
            held_open: AtomicBool::new(false),
            dir_unsynced: AtomicBool::new(false),
        });
        files.register(&file);
        file.insert(0, first);
        Ok(file)
    }

    /// Opens every segment on disk and keeps them open from now on ([`OpenFiles::hold_open`]).
    fn hold_open(&self) {
        // Set first: from now on no segment of this file is closed, so every one opened below stays.
        self.held_open.store(true, Ordering::SeqCst);
        let segments = self.segments_on_disk().unwrap_or_default();
        for index in std::iter::once(0).chain(segments) {
            // A segment that cannot be opened now could not be later either; its reads fail as they would have.
            let _ = self.segment(index, false);
        }
    }

    fn read_open(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<u64, Arc<Slot>>> {
        self.open.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write_open(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<u64, Arc<Slot>>> {
        self.open.write().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds a segment just opened (if no other thread added it first) and counts it against the limit, which may
    /// close another segment. Returns the segment's slot.
    fn insert(&self, index: u64, file: Arc<dyn VfsFile>) -> Arc<Slot> {
        self.add_slot(self.write_open(), index, file)
    }

    /// [`Self::insert`] under `open`, this file's lock, which it releases before counting the segment.
    fn add_slot(
        &self,
        mut open: std::sync::RwLockWriteGuard<'_, BTreeMap<u64, Arc<Slot>>>,
        index: u64,
        file: Arc<dyn VfsFile>,
    ) -> Arc<Slot> {
        if let Some(slot) = open.get(&index) {
            return slot.clone();
        }
        let slot = Arc::new(Slot {
            file,
            used: AtomicBool::new(true),
            dirty: AtomicBool::new(false),
            files: self.files.clone(),
        });
        open.insert(index, slot.clone());
        drop(open);
        // Outside this file's lock: closing others takes theirs.
        if let Some(me) = self.me.upgrade() {
            self.files.opened(&me, index);
        }
        slot
    }

    fn is_open(&self, index: u64) -> bool {
        self.read_open().contains_key(&index)
    }

    /// Closes segment `index` if no one is using it and it was not used since the clock hand last passed; a
    /// segment with changes not yet synced is synced first. Returns true while the clock hand should come back to
    /// it (it stays open and may be closed later).
    fn try_close(&self, index: u64) -> bool {
        // Never wait on a file's lock while holding the ring's: its holder may be waiting for the ring.
        let Ok(mut open) = self.open.try_write() else { return true };
        let Some(slot) = open.get(&index) else { return false };
        if self.held_open.load(Ordering::SeqCst) {
            // Never closed: the hand can forget it.
            return false;
        }
        if Arc::strong_count(slot) > 1 || slot.used.swap(false, Ordering::Relaxed) {
            return true;
        }
        if slot.dirty.load(Ordering::Acquire)
            && let Err(err) = slot.file.sync_data()
        {
            let mut failed = self.failed_sync.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            failed.get_or_insert_with(|| (err.kind(), format!("sync of {}: {err}", self.base)));
        }
        open.remove(&index);
        false
    }

    /// Segment `index`, if it exists; with `create`, it is created (and its directory entry made durable before
    /// anything is written into it, so a sync of the segment covers what it holds).
    fn segment(&self, index: u64, create: bool) -> io::Result<Option<Arc<Slot>>> {
        if let Some(slot) = self.read_open().get(&index) {
            slot.touch();
            return Ok(Some(slot.clone()));
        }
        let path = self.dir.join(segment_name(&self.base, index));
        let file = match self.vfs.open(&path, false) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound && create => return self.create(index, &path).map(Some),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        // A segment another thread is creating may be found here before its directory entry is durable: `insert`
        // waits for that creation, which holds the lock, and then uses its slot.
        Ok(Some(self.insert(index, file)))
    }

    /// Creates segment `index` and makes its directory entry durable, holding this file's lock throughout: a thread
    /// that finds the new file meanwhile (its name exists as soon as it is created) waits in [`Self::insert`] and
    /// takes this slot, so nothing is written into the segment, and no sync of it returns, before its entry is
    /// durable (a sync of the file would make its bytes durable in a file a power cut could still take away).
    fn create(&self, index: u64, path: &Path) -> io::Result<Arc<Slot>> {
        let open = self.write_open();
        if let Some(slot) = open.get(&index) {
            return Ok(slot.clone());
        }
        let file = self.vfs.open(path, true)?;
        if let Err(err) = self.vfs.sync_dir(&self.dir) {
            // The file exists, and the next use finds it, but its directory entry may not be durable: the next
            // sync of this file syncs the directory first, so no flush or checkpoint vouches for bytes written
            // into a file a power cut may still take away.
            self.dir_unsynced.store(true, Ordering::SeqCst);
            return Err(err);
        }
        Ok(self.add_slot(open, index, file))
    }

    /// Segment `index`, created if it does not exist.
    fn segment_created(&self, index: u64) -> io::Result<Arc<Slot>> {
        self.segment(index, true)?.ok_or_else(|| io::Error::other("a segment just created is missing"))
    }

    /// The indices of the segments on disk past segment 0.
    fn segments_on_disk(&self) -> io::Result<Vec<u64>> {
        let prefix = format!("{}.", self.base);
        let mut found: Vec<u64> = self
            .vfs
            .list(&self.dir)?
            .iter()
            .filter_map(|name| name.strip_prefix(&prefix)?.parse::<u64>().ok())
            .filter(|&i| i > 0)
            .collect();
        found.sort_unstable();
        Ok(found)
    }
}

impl VfsFile for SegmentedFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        for (index, at, start, n) in pieces(self.shift, offset, buf.len() as u64) {
            let out = &mut buf[start as usize..(start + n) as usize];
            match self.segment(index, false)? {
                Some(slot) => slot.file.read_at(out, at)?,
                None => out.fill(0),
            }
        }
        Ok(())
    }

    fn write_at(&self, data: &[u8], offset: u64) -> io::Result<()> {
        for (index, at, start, n) in pieces(self.shift, offset, data.len() as u64) {
            let slot = self.segment_created(index)?;
            slot.change(|f| f.write_at(&data[start as usize..(start + n) as usize], at))?;
        }
        Ok(())
    }

    fn writes_at_once(&self, offset: u64, length: u64) -> bool {
        // An open segment exists; any other may need creating, or opening, which may close (and sync) another to
        // stay under the limit. The lock is held for writing across a creation's directory sync.
        let Ok(open) = self.open.try_read() else { return false };
        pieces(self.shift, offset, length).all(|(index, ..)| open.contains_key(&index))
    }

    fn punch_hole(&self, offset: u64, length: u64) -> io::Result<()> {
        for (index, at, _, n) in pieces(self.shift, offset, length) {
            if let Some(slot) = self.segment(index, false)? {
                slot.change(|f| f.punch_hole(at, n))?;
            }
        }
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        let last = self.segments_on_disk()?.last().copied().unwrap_or(0);
        match self.segment(last, false)? {
            Some(slot) => Ok((last << self.shift) + slot.file.len()?),
            None => Err(io::Error::new(io::ErrorKind::NotFound, format!("{} is gone", self.base))),
        }
    }

    fn set_len(&self, length: u64) -> io::Result<()> {
        let keep = length.div_ceil(1 << self.shift).max(1);
        for index in self.segments_on_disk()? {
            if index >= keep {
                self.write_open().remove(&index);
                self.vfs.remove(&self.dir.join(segment_name(&self.base, index)))?;
            }
        }
        let last = keep - 1;
        for index in 0..last {
            let slot = self.segment_created(index)?;
            if slot.file.len()? < 1 << self.shift {
                slot.change(|f| f.set_len(1 << self.shift))?;
            }
        }
        self.segment_created(last)?.change(|f| f.set_len(length - (last << self.shift)))?;
        self.vfs.sync_dir(&self.dir)
    }

    fn sync_data(&self) -> io::Result<()> {
        if self.dir_unsynced.swap(false, Ordering::SeqCst)
            && let Err(err) = self.vfs.sync_dir(&self.dir)
        {
            self.dir_unsynced.store(true, Ordering::SeqCst);
            return Err(err);
        }
        let open: Vec<Arc<Slot>> = self.read_open().values().cloned().collect();
        for slot in open {
            slot.dirty.store(false, Ordering::Release);
            if let Err(err) = slot.file.sync_data() {
                slot.dirty.store(true, Ordering::Release);
                return Err(err);
            }
        }
        match &*self.failed_sync.lock().unwrap_or_else(std::sync::PoisonError::into_inner) {
            Some((kind, message)) => Err(io::Error::new(*kind, message.clone())),
            None => Ok(()),
        }
    }

    fn allocate(&self, length: u64) -> io::Result<()> {
        for (index, at, _, n) in pieces(self.shift, 0, length) {
            self.segment_created(index)?.change(|f| f.allocate(at + n))?;
        }
        Ok(())
    }

    fn preallocate(&self, offset: u64, length: u64) -> io::Result<()> {
        for (index, at, _, n) in pieces(self.shift, offset, length) {
            self.segment_created(index)?.change(|f| f.preallocate(at, n))?;
        }
        Ok(())
    }
}

/// Moves the bytes a file of an earlier format holds past the first segment into the segments that hold them now
/// (`basalt upgrade`): copied first and synced, then the first file is cut to one segment, so a rerun after a crash
/// copies again what it may have missed. Holes stay holes: blocks of zeros are not written.
pub(crate) fn split_oversized(vfs: &Arc<dyn Vfs>, dir: &Path, base: &str, shift: u32) -> io::Result<bool> {
    let first = vfs.open(&dir.join(base), false)?;
    let size = 1u64 << shift;
    let len = first.len()?;
    if len <= size {
        return Ok(false);
    }
    let target = SegmentedFile::open(vfs, &OpenFiles::new(usize::MAX), dir, base, shift, false)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut at = size;
    while at < len {
        // Skip the holes (a file of an earlier format is mostly holes), reading from the block the data starts in.
        match first.next_data(at)? {
            Some(data) if data < len => at = data & !(crate::layout::BLOCK_SIZE - 1),
            _ => break,
        }
        let n = (len - at).min(buf.len() as u64) as usize;
        first.read_at(&mut buf[..n], at)?;
        for (i, chunk) in buf[..n].chunks(crate::layout::BLOCK_SIZE as usize).enumerate() {
            if chunk.iter().any(|&b| b != 0) {
                target.write_at(chunk, at + (i as u64) * crate::layout::BLOCK_SIZE)?;
            }
        }
        at += n as u64;
    }
    target.sync_data()?;
    vfs.sync_dir(dir)?;
    first.set_len(size)?;
    first.sync_data()?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::{CrashSurvivors, Fault, SimVfs};

    #[test]
    fn names_map_back_to_their_layer() {
        assert_eq!(layer_id_of("00000000000000ab.layer"), Some(0xab));
        assert_eq!(layer_id_of("00000000000000ab.crc"), Some(0xab));
        assert_eq!(layer_id_of("00000000000000ab.layer.17"), Some(0xab));
        assert_eq!(layer_id_of("00000000000000ab.crc.3"), Some(0xab));
        assert_eq!(layer_id_of(&segment_name("00000000000000ab.layer", 0)), Some(0xab));
        assert_eq!(layer_id_of(&segment_name("00000000000000ab.layer", 9)), Some(0xab));
        for other in ["reserve", "x.layer", "00000000000000ab.layer.", "00000000000000ab.layer.x", ".size-probe"] {
            assert_eq!(layer_id_of(other), None, "{other}");
        }
    }

    #[test]
    fn pieces_split_at_boundaries() {
        let all: Vec<_> = pieces(4, 10, 40).collect();
        assert_eq!(all, vec![(0, 10, 0, 6), (1, 0, 6, 16), (2, 0, 22, 16), (3, 0, 38, 2)]);
        assert_eq!(pieces(4, 16, 0).count(), 0);
    }

    #[test]
    fn writes_across_segments_read_back_and_create_only_what_they_touch() {
        let sim = SimVfs::new();
        let vfs: Arc<dyn Vfs> = Arc::new(sim.clone());
        let dir = Path::new("/l");
        vfs.create_dir_all(dir).expect("dir");
        let f = SegmentedFile::open(&vfs, &OpenFiles::new(usize::MAX), dir, "0000000000000001.layer", 12, true)
            .expect("open");
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8 + 1).collect();
        f.write_at(&data, 4096 * 3 - 100).expect("write across 4 segments");
        f.write_at(b"far", (4096 * 40) + 5).expect("write far");
        let mut back = vec![0u8; data.len()];
        f.read_at(&mut back, 4096 * 3 - 100).expect("read");
        assert_eq!(back, data);
        let mut names = vfs.list(dir).expect("list");
        names.sort();
        let expected: Vec<String> =
            ["", ".2", ".3", ".4", ".40", ".5"].iter().map(|s| format!("0000000000000001.layer{s}")).collect();
        assert_eq!(names, expected);
        // A segment never written reads as zeros; a punch across segments clears what they hold.
        let mut gap = vec![1u8; 4096 * 2];
        f.read_at(&mut gap, 4096 * 20).expect("read a gap");
        assert!(gap.iter().all(|&b| b == 0));
        f.punch_hole(4096 * 3, 4096 * 2).expect("punch");
        f.read_at(&mut back, 4096 * 3 - 100).expect("read");
        assert!(back[..100] == data[..100] && back[100..100 + 8192].iter().all(|&b| b == 0));
        assert_eq!(back[100 + 8192..], data[100 + 8192..]);
        assert_eq!(f.len().expect("len"), 4096 * 40 + 8);
        // Another handle finds the segments this one created.
        let g = SegmentedFile::open(&vfs, &OpenFiles::new(usize::MAX), dir, "0000000000000001.layer", 12, false)
            .expect("reopen");
        let mut far = [0u8; 3];
        g.read_at(&mut far, 4096 * 40 + 5).expect("read far");
        assert_eq!(&far, b"far");
    }

    /// A disk whose directory syncs can be held: [`HeldDirSync::arm`] makes the next one wait for
    /// [`HeldDirSync::release`].
    #[derive(Debug, Clone, Default)]
    struct HeldDirSync {
        disk: SimVfs,
        gate: Arc<(Mutex<Gate>, std::sync::Condvar)>,
    }

    /// Whether the next directory sync is to be held, whether one is held, and whether it was released.
    type Gate = (bool, bool, bool);

    impl HeldDirSync {
        fn arm(&self) {
            *self.gate.0.lock().expect("gate") = (true, false, false);
        }
        fn wait_until_held(&self) {
            let mut g = self.gate.0.lock().expect("gate");
            while !g.1 {
                g = self.gate.1.wait(g).expect("gate");
            }
        }
        fn release(&self) {
            self.gate.0.lock().expect("gate").2 = true;
            self.gate.1.notify_all();
        }
    }

    impl Vfs for HeldDirSync {
        fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn VfsFile>> {
            self.disk.open(path, create)
        }
        fn remove(&self, path: &Path) -> io::Result<()> {
            self.disk.remove(path)
        }
        fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
            self.disk.list(dir)
        }
        fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
            self.disk.create_dir_all(dir)
        }
        fn sync_dir(&self, dir: &Path) -> io::Result<()> {
            let mut g = self.gate.0.lock().expect("gate");
            if g.0 {
                g.0 = false;
                g.1 = true;
                self.gate.1.notify_all();
                while !g.2 {
                    g = self.gate.1.wait(g).expect("gate");
                }
            }
            drop(g);
            self.disk.sync_dir(dir)
        }
        fn lock(&self, path: &Path) -> io::Result<Box<dyn std::fmt::Debug + Send + Sync>> {
            self.disk.lock(path)
        }
        fn boot_id(&self) -> String {
            self.disk.boot_id()
        }
    }

    /// A write into a segment that another write is creating waits until the creation made the segment's directory
    /// entry durable: written and synced before that, it went into a file a power cut could take away, and a
    /// flush that synced it (the layer file's sync covers its open segments) claimed bytes that were then gone.
    #[test]
    fn a_write_into_a_segment_being_created_waits_for_its_directory_entry_to_be_durable() {
        let disk = HeldDirSync::default();
        let vfs: Arc<dyn Vfs> = Arc::new(disk.clone());
        let dir = Path::new("/l");
        vfs.create_dir_all(dir).expect("dir");
        disk.disk.sync_dir(Path::new("/")).expect("sync root");
        let f = SegmentedFile::open(&vfs, &OpenFiles::new(usize::MAX), dir, "0000000000000004.layer", 12, true)
            .expect("open");
        vfs.sync_dir(dir).expect("sync dir");
        let kept = |crash: &SimVfs, at: u64, what: &[u8]| {
            let after: Arc<dyn Vfs> = Arc::new(crash.clone());
            let g = SegmentedFile::open(&after, &OpenFiles::new(usize::MAX), dir, "0000000000000004.layer", 12, false)
                .expect("reopen");
            let mut back = vec![0u8; what.len()];
            g.read_at(&mut back, at).expect("read");
            back == what
        };
        disk.arm();
        std::thread::scope(|scope| {
            // The first write into segment 5 creates it and is held in the directory sync.
            let creating = scope.spawn(|| f.write_at(b"first", 4096 * 5));
            disk.wait_until_held();
            let second = scope.spawn(|| f.write_at(b"second", 4096 * 5 + 100).and_then(|()| f.sync_data()));
            let until = std::time::Instant::now() + std::time::Duration::from_millis(300);
            while !second.is_finished() && std::time::Instant::now() < until {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            if second.is_finished() {
                // Written and synced while the segment's directory entry is not durable yet.
                let crash = disk.disk.after_crash(CrashSurvivors::None);
                assert!(kept(&crash, 4096 * 5 + 100, b"second"), "a synced write into a new segment was lost");
            }
            disk.release();
            creating.join().expect("creating thread").expect("first write");
            second.join().expect("second thread").expect("second write and sync");
        });
        let crash = disk.disk.after_crash(CrashSurvivors::None);
        assert!(kept(&crash, 4096 * 5 + 100, b"second"), "the synced write survives");
    }

    /// A segment whose directory sync failed after its creation may vanish in a power cut however often its file
    /// is synced: the next sync of the file syncs the directory first (the next write found the file and used it,
    /// and a sync of the file claimed bytes a power cut then took away with the file).
    #[test]
    fn a_sync_after_a_failed_directory_sync_of_a_new_segment_makes_the_segment_durable() {
        let sim = SimVfs::new();
        let vfs: Arc<dyn Vfs> = Arc::new(sim.clone());
        let dir = Path::new("/l");
        vfs.create_dir_all(dir).expect("dir");
        vfs.sync_dir(Path::new("/")).expect("sync root");
        let f = SegmentedFile::open(&vfs, &OpenFiles::new(usize::MAX), dir, "0000000000000005.layer", 12, true)
            .expect("open");
        vfs.sync_dir(dir).expect("sync dir");
        // Creating segment 5 is the next operation, its directory sync the one after.
        sim.inject(sim.op_count() + 1, Fault::Eio);
        assert!(f.write_at(b"first", 4096 * 5).is_err(), "the write whose segment's directory sync failed");
        f.write_at(b"again", 4096 * 5).expect("a later write finds the segment");
        f.sync_data().expect("a later sync");
        let after: Arc<dyn Vfs> = Arc::new(sim.after_crash(CrashSurvivors::None));
        let g =
            SegmentedFile::open(&after, &OpenFiles::new(8), dir, "0000000000000005.layer", 12, false).expect("reopen");
        let mut back = [0u8; 5];
        g.read_at(&mut back, 4096 * 5).expect("read");
        assert_eq!(&back, b"again", "a write the file's sync returned for was lost with its segment");
    }

    #[test]
    fn a_synced_write_into_a_new_segment_survives_a_power_cut() {
        let sim = SimVfs::new();
        let vfs: Arc<dyn Vfs> = Arc::new(sim.clone());
        let dir = Path::new("/l");
        vfs.create_dir_all(dir).expect("dir");
        vfs.sync_dir(Path::new("/")).expect("sync root");
        let f = SegmentedFile::open(&vfs, &OpenFiles::new(usize::MAX), dir, "0000000000000002.layer", 12, true)
            .expect("open");
        vfs.sync_dir(dir).expect("sync dir");
        f.write_at(b"kept", 4096 * 9 + 1).expect("write");
        f.sync_data().expect("sync");
        f.write_at(b"lost", 4096 * 30).expect("write unsynced");
        let after: Arc<dyn Vfs> = Arc::new(sim.after_crash(CrashSurvivors::None));
        let g = SegmentedFile::open(&after, &OpenFiles::new(usize::MAX), dir, "0000000000000002.layer", 12, false)
            .expect("reopen");
        let mut back = [0u8; 4];
        g.read_at(&mut back, 4096 * 9 + 1).expect("read");
        assert_eq!(&back, b"kept");
    }

    /// Files `0..n` in `/l`, sharing a limit of `limit` open segments, each with its first segment created.
    fn limited(sim: &SimVfs, limit: usize, n: u64) -> (Arc<OpenFiles>, Vec<Arc<dyn VfsFile>>) {
        let vfs: Arc<dyn Vfs> = Arc::new(sim.clone());
        let dir = Path::new("/l");
        vfs.create_dir_all(dir).expect("dir");
        vfs.sync_dir(Path::new("/")).expect("sync root");
        let open_files = OpenFiles::new(limit);
        let files = (0..n)
            .map(|i| {
                let base = format!("{i:016x}.layer");
                SegmentedFile::open(&vfs, &open_files, dir, &base, 12, true).expect("open")
            })
            .collect();
        vfs.sync_dir(dir).expect("sync dir");
        (open_files, files)
    }

    #[test]
    fn past_the_limit_idle_segments_are_closed_and_reopened_on_use() {
        let sim = SimVfs::new();
        let (open_files, files) = limited(&sim, 3, 6);
        assert_eq!(open_files.open_count(), 3);
        for round in 0..3u8 {
            for (i, f) in files.iter().enumerate() {
                // Two segments per file: segment 0 and segment 2.
                f.write_at(&[round, i as u8 + 1], 7).expect("write");
                f.write_at(&[round, i as u8 + 1], 2 * 4096 + 7).expect("write");
                assert!(open_files.open_count() <= 3, "{} segments open", open_files.open_count());
            }
        }
        for (i, f) in files.iter().enumerate() {
            let (mut a, mut b) = ([0u8; 2], [0u8; 2]);
            f.read_at(&mut a, 7).expect("read");
            f.read_at(&mut b, 2 * 4096 + 7).expect("read");
            assert_eq!((a, b), ([2, i as u8 + 1], [2, i as u8 + 1]));
            assert_eq!(f.len().expect("len"), 2 * 4096 + 9);
            assert!(open_files.open_count() <= 3);
        }
    }

    #[test]
    fn a_segment_closed_with_unsynced_writes_is_synced_first() {
        let sim = SimVfs::new();
        let (_, files) = limited(&sim, 1, 2);
        files[0].write_at(b"kept", 100).expect("write");
        // Using the other file closes the first one's segment: its write must not depend on that segment being
        // open at the next sync of its file.
        files[1].write_at(b"other", 0).expect("write");
        files[1].sync_data().expect("sync");
        files[0].sync_data().expect("sync");
        let after: Arc<dyn Vfs> = Arc::new(sim.after_crash(CrashSurvivors::None));
        let g =
            SegmentedFile::open(&after, &OpenFiles::new(8), Path::new("/l"), &format!("{:016x}.layer", 0), 12, false)
                .expect("reopen");
        let mut back = [0u8; 4];
        g.read_at(&mut back, 100).expect("read");
        assert_eq!(&back, b"kept");
    }

    #[test]
    fn a_failed_sync_when_closing_a_segment_fails_every_later_sync_of_its_file() {
        let sim = SimVfs::new();
        let (_, files) = limited(&sim, 1, 2);
        files[0].write_at(b"lost", 100).expect("write");
        // The next mutating operation is the sync of the first file's segment as the second file's is used.
        sim.inject(sim.op_count(), Fault::Eio);
        let mut back = [0u8; 4];
        files[1].read_at(&mut back, 0).expect("read");
        assert!(files[0].sync_data().is_err());
        assert!(files[0].sync_data().is_err(), "a sync after a failed one cannot vouch for the lost writes");
        files[1].sync_data().expect("the other file is unaffected");
    }

    #[test]
    fn an_oversized_file_of_an_earlier_format_is_split_into_segments() {
        let sim = SimVfs::new();
        let vfs: Arc<dyn Vfs> = Arc::new(sim.clone());
        let dir = Path::new("/l");
        vfs.create_dir_all(dir).expect("dir");
        let old = vfs.open(&dir.join("0000000000000003.layer"), true).expect("create");
        old.write_at(b"head", 100).expect("write");
        old.write_at(b"tail", (1 << 12) * 5 + 7).expect("write");
        assert!(split_oversized(&vfs, dir, "0000000000000003.layer", 12).expect("split"));
        assert_eq!(old.len().expect("len"), 1 << 12);
        assert!(!split_oversized(&vfs, dir, "0000000000000003.layer", 12).expect("rerun"), "nothing left to move");
        let f = SegmentedFile::open(&vfs, &OpenFiles::new(usize::MAX), dir, "0000000000000003.layer", 12, false)
            .expect("open");
        let (mut a, mut b) = ([0u8; 4], [0u8; 4]);
        f.read_at(&mut a, 100).expect("read");
        f.read_at(&mut b, (1 << 12) * 5 + 7).expect("read");
        assert_eq!((&a, &b), (b"head", b"tail"));
        let mut names = vfs.list(dir).expect("list");
        names.sort();
        assert_eq!(names, vec!["0000000000000003.layer".to_owned(), "0000000000000003.layer.5".to_owned()]);
    }
}
