//! The engine's only door to the disk: a small file-system interface with the real implementation, and the
//! adapter that puts redb's database file behind it.
//!
//! Everything the engine writes (layer files and the metadata store) goes through [`Vfs`], so the simulated disk in
//! [`crate::sim`] can cut power or fail any write or sync and tests can check what survives.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

/// An open file.
#[allow(clippy::len_without_is_empty)]
pub trait VfsFile: Send + Sync + fmt::Debug {
    /// Reads exactly `buf.len()` bytes at `offset`; bytes past the end of the file read as zeros.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Writes all of `data` at `offset`, growing the file as needed.
    fn write_at(&self, data: &[u8], offset: u64) -> io::Result<()>;
    /// Deallocates a range; it then reads as zeros. The file length does not change.
    fn punch_hole(&self, offset: u64, length: u64) -> io::Result<()>;
    /// Returns the file length.
    fn len(&self) -> io::Result<u64>;
    /// Sets the file length; new bytes read as zeros.
    fn set_len(&self, length: u64) -> io::Result<()>;
    /// Makes every completed write to this file durable.
    fn sync_data(&self) -> io::Result<()>;
    /// Reserves space for the first `length` bytes (growing the file), so later writes there never need new space.
    fn allocate(&self, length: u64) -> io::Result<()>;
    /// Reserves the disk space of a range without changing what it reads (a hint: the default does nothing). With
    /// direct I/O, writes into reserved space run side by side, while writes that allocate take the file's lock for
    /// their whole wait on ext4.
    fn preallocate(&self, _offset: u64, _length: u64) -> io::Result<()> {
        Ok(())
    }
    /// The first offset at or after `offset` where the file may hold data, skipping holes the file system knows
    /// of; `None` past the last data. Without that knowledge, every offset before the end may hold data.
    fn next_data(&self, offset: u64) -> io::Result<Option<u64>> {
        Ok((offset < self.len()?).then_some(offset))
    }
    /// Whether a write of `length` bytes at `offset` is the write alone: no file has to be created, opened or
    /// closed for it first (each of which may wait for the disk). A caller that must not wait writes only then.
    fn writes_at_once(&self, _offset: u64, _length: u64) -> bool {
        true
    }
    /// Maps the first `length` bytes for [`VfsFile::write_mapped`]. Only for a file whose first `length` bytes are
    /// allocated (a store into a hole could find the disk full, and a store has no error to return) and that is
    /// never shortened while open: the journal's files. A hint: where no map is made (the real file system makes one
    /// on ext4 only, see `WriteMap`), `write_mapped` is `write_at`.
    fn map_writes(&self, _length: u64) -> io::Result<()> {
        Ok(())
    }
    /// [`VfsFile::write_at`] as a copy into the map of [`VfsFile::map_writes`] where it covers the range: no system
    /// call, which costs more than a short write itself. What it leaves behind is the same: the bytes in the page
    /// cache, kept through a crash of the process, made durable by [`VfsFile::sync_data`]. But on ext4 the first
    /// store into a page after the page was written back faults, and the next `fdatasync` then commits the file
    /// system's journal: 2.6-3.5 ms against 0.12-0.17 ms after a `pwrite` (measured on the development disk). The
    /// caller picks.
    fn write_mapped(&self, data: &[u8], offset: u64) -> io::Result<()> {
        self.write_at(data, offset)
    }
}

/// Writes zeros over `from..to` of a file, a MiB at a time.
pub fn write_zeros(file: &dyn VfsFile, from: u64, to: u64) -> io::Result<()> {
    const CHUNK: u64 = 1 << 20;
    let zeros = vec![0u8; CHUNK as usize];
    let mut at = from;
    while at < to {
        let n = (to - at).min(CHUNK);
        file.write_at(&zeros[..n as usize], at)?;
        at += n;
    }
    Ok(())
}

/// A directory tree of files.
pub trait Vfs: Send + Sync + fmt::Debug {
    /// Opens a file, creating it if `create` is true and it does not exist.
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn VfsFile>>;
    /// Removes a file; open handles keep working.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Lists the file names in a directory.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Creates a directory and its parents.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Makes creations and removals of entries in `dir` durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Takes an exclusive lock on the store held until the returned guard drops; fails if another process has it.
    fn lock(&self, path: &Path) -> io::Result<Box<dyn fmt::Debug + Send + Sync>>;
    /// Names the running kernel (changes at every boot, or every power cut of a simulated disk): what a process
    /// wrote before it died is still readable through the page cache exactly when this is unchanged.
    fn boot_id(&self) -> String;
    /// Whether a file in `dir` can grow to `len` bytes: a file system has a largest file (16 TiB on ext4 with 4 KiB
    /// blocks). The simulated disk holds any size.
    fn holds_file_of(&self, dir: &Path, len: u64) -> io::Result<bool> {
        let _ = (dir, len);
        Ok(true)
    }
    /// Whether layer files bypass the page cache (`serve --direct-io`): every write to them then waits for the
    /// device, so the engine issues a checkpoint's writes of deferred blocks from several threads at once.
    fn direct_io(&self) -> bool {
        false
    }
}

/// The real file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct OsVfs;

#[derive(Debug)]
struct OsFile {
    file: File,
    path: PathBuf,
    /// The same file opened with `O_DIRECT` ([`DirectVfs`]): reads and writes of whole aligned blocks go through
    /// it, the rest (none in a layer file) through `file`. The kernel keeps the two coherent: a direct read first
    /// writes back the page cache's dirty pages of its range, and a direct write drops the range from it.
    direct: Option<File>,
    /// A shared map of the file's first bytes, once [`VfsFile::map_writes`] made one: [`VfsFile::write_mapped`]s
    /// inside it are copies.
    map: OnceLock<WriteMap>,
}

/// A shared, writable memory map of the start of a file, unmapped when dropped.
///
/// A store into a map has no error to return: where the kernel cannot make the page writable it sends SIGBUS, which
/// ends the process. So the map is made only on ext4 (no copy-on-write and no shared extents: a block allocated once
/// takes stores without new space) over bytes that are allocated, and every range is faulted in writable with
/// `MADV_POPULATE_WRITE` before the first copy into it, which returns an error instead (an unreadable page, say);
/// that copy and every later one then go through `pwrite`, whose error the caller sees. What is left is a page that was written back
/// and then dropped from memory between that and a store, and cannot be read again: the process ends there, and
/// everything it acknowledged is in the page cache or on the disk.
#[derive(Debug)]
struct WriteMap {
    at: std::ptr::NonNull<u8>,
    len: usize,
    /// Held while copying: copies into the map are one at a time, so two writers of overlapping ranges cannot race.
    ready: std::sync::Mutex<Ready>,
}

/// The range of a [`WriteMap`] faulted in writable last, and whether faulting in ever failed.
#[derive(Debug, Default)]
struct Ready {
    lo: u64,
    hi: u64,
    /// A range could not be faulted in (an unreadable page, or a kernel without `MADV_POPULATE_WRITE`): every later
    /// write goes through `pwrite`, without asking again each time.
    failed: bool,
}

/// `madvise` advice (Linux 5.14; not in the libc crate): fault a range in writable now, or fail with an error. An
/// older kernel refuses it (EINVAL), and every copy then goes through `pwrite`.
const MADV_POPULATE_WRITE: libc::c_int = 23;
/// `statfs.f_type` of ext4 (and of ext2 and ext3 through its driver).
const EXT4_SUPER_MAGIC: u64 = 0xEF53;
/// A map is faulted in this much at a time.
const MAP_CHUNK: u64 = 1 << 20;
/// The page size the map's ranges are rounded to; larger pages are multiples of it, and the kernel rounds again.
const PAGE: u64 = 4096;

// SAFETY: the map is plain memory shared with the page cache, written only by copies made under `ready`'s lock, and
// the pointer stays valid until `drop`.
unsafe impl Send for WriteMap {}
// SAFETY: as above; `&WriteMap` only allows copies into the map, one at a time.
unsafe impl Sync for WriteMap {}

impl WriteMap {
    /// Maps the first `len` bytes of `file`, if it is on ext4 (`Ok(None)` elsewhere).
    fn new(file: &File, len: usize) -> io::Result<Option<WriteMap>> {
        if fs_type(file)? != EXT4_SUPER_MAGIC {
            return Ok(None);
        }
        // SAFETY: a new shared mapping of `len` bytes of an open descriptor; the kernel picks the address, and the
        // result is checked before use.
        let at = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if at == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let at = std::ptr::NonNull::new(at.cast::<u8>()).ok_or_else(|| io::Error::from(io::ErrorKind::Other))?;
        Ok(Some(WriteMap { at, len, ready: std::sync::Mutex::new(Ready::default()) }))
    }

    /// Copies `data` to `offset` if the map covers the range and the range could be faulted in writable; false if
    /// not (nothing is written).
    fn write(&self, data: &[u8], offset: u64) -> bool {
        let Some(end) = offset.checked_add(data.len() as u64).filter(|&end| end <= self.len as u64) else {
            return false;
        };
        let mut ready = self.ready.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if ready.failed {
            return false;
        }
        if !(ready.lo <= offset && end <= ready.hi) {
            let lo = offset / MAP_CHUNK * MAP_CHUNK;
            let hi = end.next_multiple_of(MAP_CHUNK).min(self.len as u64);
            // SAFETY: `lo..hi` lies inside the mapping; populating only faults its pages in, changing no byte.
            let rc = unsafe {
                libc::madvise(self.at.as_ptr().add(lo as usize).cast(), (hi - lo) as usize, MADV_POPULATE_WRITE)
            };
            if rc != 0 {
                *ready = Ready { lo: 0, hi: 0, failed: true };
                return false;
            }
            // The range copied into before goes from the process (mapped pages count in its resident memory): a
            // journal's appends only go forward, so the map holds a MiB or two, not everything it ever wrote.
            if hi <= ready.lo || ready.hi <= lo {
                self.release(ready.lo, ready.hi - ready.lo);
            }
            (ready.lo, ready.hi) = (lo, hi);
        }
        // SAFETY: `offset..end` lies inside the mapping (checked above), which lives as long as `self`; `data` is the
        // caller's memory, not the map's, so they cannot overlap; and no other copy runs while `ready` is held.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.at.as_ptr().add(offset as usize), data.len()) };
        true
    }

    /// Drops the process's mappings of the whole pages inside `offset..offset + length` that the map covers. A
    /// shared file map loses nothing by it: the kernel moves each page's dirty bit to the page cache, and a later
    /// copy faults the page in again.
    fn release(&self, offset: u64, length: u64) {
        let start = offset.next_multiple_of(PAGE);
        let end = offset.saturating_add(length).min(self.len as u64) / PAGE * PAGE;
        if start >= end {
            return;
        }
        // SAFETY: `start..end` is a page-aligned range inside the mapping made in `new`; MADV_DONTNEED on a shared
        // file mapping only drops page table entries (the pages stay in the page cache), so no memory that Rust
        // code refers to changes.
        unsafe {
            libc::madvise(self.at.as_ptr().add(start as usize).cast(), (end - start) as usize, libc::MADV_DONTNEED)
        };
    }
}

/// The `statfs.f_type` of the file system a file is on.
fn fs_type(file: &File) -> io::Result<u64> {
    // SAFETY: `statfs` is a plain C struct, for which all zeros is a valid value.
    let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: fstatfs fills the struct, which lives on this stack frame, from an open descriptor.
    if unsafe { libc::fstatfs(file.as_raw_fd(), &mut fs) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fs.f_type as u64)
}

impl Drop for WriteMap {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`; nothing refers to it once its owner is dropped.
        unsafe { libc::munmap(self.at.as_ptr().cast(), self.len) };
    }
}

/// The alignment of offsets, lengths and memory for `O_DIRECT`: a page, which covers every logical block size.
const DIRECT_ALIGN: usize = 4096;

fn direct_aligned(offset: u64, len: usize) -> bool {
    offset.is_multiple_of(DIRECT_ALIGN as u64) && len.is_multiple_of(DIRECT_ALIGN) && len > 0
}

/// A heap buffer aligned for `O_DIRECT`, for callers' buffers that are not.
struct AlignedBuf {
    ptr: std::ptr::NonNull<u8>,
    layout: std::alloc::Layout,
}

impl AlignedBuf {
    fn zeroed(len: usize) -> io::Result<AlignedBuf> {
        let layout = std::alloc::Layout::from_size_align(len, DIRECT_ALIGN)
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: `layout` has a non-zero size (callers pass aligned, non-empty lengths).
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        let ptr = std::ptr::NonNull::new(ptr).ok_or_else(|| io::Error::from(io::ErrorKind::OutOfMemory))?;
        Ok(AlignedBuf { ptr, layout })
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: the allocation holds `layout.size()` initialised (zeroed) bytes, owned by `self`.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.layout.size()) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `zeroed` with this layout.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

/// Reads `buf.len()` bytes at `offset` through a descriptor; past the end of the file reads zeros.
fn read_full(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let n = file.read_at(&mut buf[done..], offset + done as u64)?;
        if n == 0 {
            buf[done..].fill(0);
            break;
        }
        done += n;
    }
    Ok(())
}

impl OsFile {
    /// A read through the direct descriptor of an aligned range, into an aligned buffer (the caller's if it is).
    /// A short read (the end of the file inside the range) leaves zeros after it.
    fn read_direct(&self, direct: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let read_into = |target: &mut [u8]| -> io::Result<()> {
            let mut done = 0;
            while done < target.len() {
                let n = direct.read_at(&mut target[done..], offset + done as u64)?;
                if n == 0 || !n.is_multiple_of(DIRECT_ALIGN) {
                    // The end of the file: whatever follows it reads as zeros.
                    target[done + n..].fill(0);
                    break;
                }
                done += n;
            }
            Ok(())
        };
        if (buf.as_ptr() as usize).is_multiple_of(DIRECT_ALIGN) {
            return read_into(buf);
        }
        let mut bounce = AlignedBuf::zeroed(buf.len())?;
        read_into(bounce.as_mut_slice())?;
        buf.copy_from_slice(bounce.as_mut_slice());
        Ok(())
    }

    /// A write through the direct descriptor of an aligned range, from an aligned buffer (the caller's if it is).
    fn write_direct(&self, direct: &File, data: &[u8], offset: u64) -> io::Result<()> {
        if (data.as_ptr() as usize).is_multiple_of(DIRECT_ALIGN) {
            return direct.write_all_at(data, offset);
        }
        let mut bounce = AlignedBuf::zeroed(data.len())?;
        bounce.as_mut_slice().copy_from_slice(data);
        direct.write_all_at(bounce.as_mut_slice(), offset)
    }
}

impl VfsFile for OsFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        match &self.direct {
            Some(direct) if direct_aligned(offset, buf.len()) => self.read_direct(direct, buf, offset),
            _ => read_full(&self.file, buf, offset),
        }
    }

    fn write_at(&self, data: &[u8], offset: u64) -> io::Result<()> {
        match &self.direct {
            Some(direct) if direct_aligned(offset, data.len()) => self.write_direct(direct, data, offset),
            _ => self.file.write_all_at(data, offset),
        }
    }

    fn punch_hole(&self, offset: u64, length: u64) -> io::Result<()> {
        let (Ok(off), Ok(len)) = (i64::try_from(offset), i64::try_from(length)) else {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        };
        // SAFETY: fallocate on a valid open descriptor with plain integer arguments; no memory is shared.
        let rc = unsafe {
            libc::fallocate(self.file.as_raw_fd(), libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE, off, len)
        };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EOPNOTSUPP) {
            // The file system cannot punch holes: write zeros so reads stay correct, at the cost of space.
            let zeros = vec![0u8; 1 << 20];
            let mut done = 0u64;
            while done < length {
                let n = (length - done).min(zeros.len() as u64);
                self.file.write_all_at(&zeros[..n as usize], offset + done)?;
                done += n;
            }
            return Ok(());
        }
        Err(io::Error::new(err.kind(), format!("punch hole in {}: {err}", self.path.display())))
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn set_len(&self, length: u64) -> io::Result<()> {
        self.file.set_len(length)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn allocate(&self, length: u64) -> io::Result<()> {
        let Ok(len) = i64::try_from(length) else { return Err(io::Error::from_raw_os_error(libc::EINVAL)) };
        // SAFETY: fallocate on a valid open descriptor with plain integer arguments; no memory is shared.
        let rc = unsafe { libc::fallocate(self.file.as_raw_fd(), 0, 0, len) };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EOPNOTSUPP) {
            // No fallocate here: write zeros, which reserves the space as well.
            return write_zeros(self, self.file.metadata()?.len(), length);
        }
        Err(io::Error::new(err.kind(), format!("reserve space for {}: {err}", self.path.display())))
    }

    fn preallocate(&self, offset: u64, length: u64) -> io::Result<()> {
        let (Ok(off), Ok(len)) = (i64::try_from(offset), i64::try_from(length)) else {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        };
        // SAFETY: fallocate on a valid open descriptor with plain integer arguments; no memory is shared.
        let rc = unsafe { libc::fallocate(self.file.as_raw_fd(), 0, off, len) };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EOPNOTSUPP) {
            // Only a hint: writes allocate as they go.
            return Ok(());
        }
        Err(io::Error::new(err.kind(), format!("reserve space in {}: {err}", self.path.display())))
    }

    fn map_writes(&self, length: u64) -> io::Result<()> {
        let len = usize::try_from(length).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        if self.direct.is_some() || len == 0 || self.map.get().is_some() {
            return Ok(());
        }
        if self.len()? < length {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "a map past the end of the file"));
        }
        if let Some(map) = WriteMap::new(&self.file, len)? {
            let _ = self.map.set(map);
        }
        Ok(())
    }

    fn write_mapped(&self, data: &[u8], offset: u64) -> io::Result<()> {
        if self.map.get().is_some_and(|map| map.write(data, offset)) {
            return Ok(());
        }
        self.write_at(data, offset)
    }

    fn next_data(&self, offset: u64) -> io::Result<Option<u64>> {
        let Ok(off) = i64::try_from(offset) else { return Ok(None) };
        // SAFETY: lseek on a valid open descriptor with plain integer arguments; no memory is shared.
        let at = unsafe { libc::lseek(self.file.as_raw_fd(), off, libc::SEEK_DATA) };
        if at >= 0 {
            return Ok(Some(at as u64));
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::ENXIO) => Ok(None),
            Some(libc::EINVAL) => Ok((offset < self.len()?).then_some(offset)),
            _ => Err(err),
        }
    }
}

/// Opens a file for reading and writing (creating it, the owner's only, if asked): what both real file systems open.
fn open_private(path: &Path, create: bool) -> io::Result<File> {
    // Image data and the metadata store are the owner's alone, whatever the umask.
    OpenOptions::new().read(true).write(true).create(create).mode(FILE_MODE).open(path)
}

/// The mode of the files the engine creates: readable and writable by the owner only.
pub const FILE_MODE: u32 = 0o600;
/// The mode of the directories the engine creates: the owner's only.
pub const DIR_MODE: u32 = 0o700;

#[derive(Debug)]
struct OsLock {
    _file: File,
}

impl Vfs for OsVfs {
    fn holds_file_of(&self, dir: &Path, len: u64) -> io::Result<bool> {
        // A sparse probe: setting the length allocates nothing, and the file goes at once.
        let path = dir.join(".size-probe");
        let file = OpenOptions::new().write(true).create(true).truncate(true).mode(FILE_MODE).open(&path)?;
        const EFBIG: i32 = 27;
        let fits = match file.set_len(len) {
            Ok(()) => Ok(true),
            Err(e) if e.raw_os_error() == Some(EFBIG) => Ok(false),
            Err(e) => Err(e),
        };
        drop(file);
        std::fs::remove_file(&path)?;
        fits
    }

    fn boot_id(&self) -> String {
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id").map(|s| s.trim().to_owned()).unwrap_or_default()
    }

    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn VfsFile>> {
        let file = open_private(path, create)?;
        Ok(Arc::new(OsFile { file, path: path.to_owned(), direct: None, map: OnceLock::new() }))
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            names.push(entry?.file_name().to_string_lossy().into_owned());
        }
        Ok(names)
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn lock(&self, path: &Path) -> io::Result<Box<dyn fmt::Debug + Send + Sync>> {
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).mode(FILE_MODE).open(path)?;
        // SAFETY: flock on a valid open descriptor; the lock lives as long as the descriptor.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!("the data directory is in use by another basalt process (lock {})", path.display()),
                ));
            }
            return Err(err);
        }
        Ok(Box::new(OsLock { _file: file }))
    }
}

/// The real file system, with image data bypassing the page cache (`serve --direct-io`): layer files (not their
/// checksum sidecars, the journal or the metadata store, whose writes are small or unaligned) are also opened with
/// `O_DIRECT`, through which every whole-block read and write of them goes. For hosts whose guests cache: the data
/// is not kept twice, and a read always comes from the device.
#[derive(Debug, Default, Clone, Copy)]
pub struct DirectVfs;

impl DirectVfs {
    /// Checks that the file system of `dir` takes `O_DIRECT` (some do not: tmpfs before Linux 6.6, many FUSE file
    /// systems), with a probe file that goes at once.
    pub fn probe(dir: &Path) -> io::Result<()> {
        let path = dir.join(".direct-io-probe");
        let opened = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .mode(FILE_MODE)
            .custom_flags(libc::O_DIRECT)
            .open(&path);
        let _ = std::fs::remove_file(&path);
        match opened {
            Ok(_) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("the file system of {} does not support O_DIRECT (direct I/O)", dir.display()),
            )),
            Err(e) => Err(e),
        }
    }
}

impl Vfs for DirectVfs {
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn VfsFile>> {
        let file = open_private(path, create)?;
        let name = path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
        let direct = if crate::segments::is_layer_data(&name) {
            Some(OpenOptions::new().read(true).write(true).custom_flags(libc::O_DIRECT).open(path)?)
        } else {
            None
        };
        Ok(Arc::new(OsFile { file, path: path.to_owned(), direct, map: OnceLock::new() }))
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        OsVfs.remove(path)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        OsVfs.list(dir)
    }
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        OsVfs.create_dir_all(dir)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        OsVfs.sync_dir(dir)
    }
    fn lock(&self, path: &Path) -> io::Result<Box<dyn fmt::Debug + Send + Sync>> {
        OsVfs.lock(path)
    }
    fn boot_id(&self) -> String {
        OsVfs.boot_id()
    }
    fn holds_file_of(&self, dir: &Path, len: u64) -> io::Result<bool> {
        OsVfs.holds_file_of(dir, len)
    }
    fn direct_io(&self) -> bool {
        true
    }
}

/// redb's storage backend over a [`VfsFile`], so the metadata store shares the engine's disk model.
///
/// redb stops for good after any failed write, so a write or growth that fails with ENOSPC is retried after the
/// metadata reserve gave part of its space back (docs/FORMAT.md, "A full disk"); only an empty reserve lets the
/// error through. The first failure that reaches redb is kept in [`RedbFile::failure`], so the store can tell that
/// redb may have stopped without reading redb's error messages.
#[derive(Debug)]
pub(crate) struct RedbFile {
    file: Arc<dyn VfsFile>,
    reserve: Option<Arc<crate::space::MetaReserve>>,
    failure: Arc<OnceLock<String>>,
}

impl RedbFile {
    /// The metadata file, drawing on `reserve` when the disk is full (offline tools pass none).
    pub(crate) fn new(file: Arc<dyn VfsFile>, reserve: Option<Arc<crate::space::MetaReserve>>) -> RedbFile {
        RedbFile { file, reserve, failure: Arc::default() }
    }

    /// The first error this file returned to redb (set at most once), shared with whoever asks before the file is
    /// handed to redb.
    pub(crate) fn failure(&self) -> Arc<OnceLock<String>> {
        self.failure.clone()
    }

    fn noted<T>(&self, result: io::Result<T>) -> io::Result<T> {
        if let Err(e) = &result {
            let _ = self.failure.set(e.to_string());
        }
        result
    }

    fn with_reserve(&self, op: impl Fn() -> io::Result<()>) -> io::Result<()> {
        loop {
            match op() {
                Err(e) if crate::space::is_enospc(&e) && self.reserve.as_ref().is_some_and(|r| r.release()) => {}
                other => return self.noted(other),
            }
        }
    }
}

impl redb::StorageBackend for RedbFile {
    fn len(&self) -> io::Result<u64> {
        self.noted(self.file.len())
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        let len = self.noted(self.file.len())?;
        if offset + out.len() as u64 > len {
            return self
                .noted(Err(io::Error::new(io::ErrorKind::UnexpectedEof, "read past the end of the metadata file")));
        }
        self.noted(self.file.read_at(out, offset))
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.with_reserve(|| self.file.set_len(len))
    }

    fn sync_data(&self) -> io::Result<()> {
        self.noted(self.file.sync_data())
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.with_reserve(|| self.file.write_at(data, offset))
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).expect("metadata").permissions().mode() & 0o7777
    }

    #[test]
    fn created_directories_and_files_are_the_owners_only() {
        let parent = tempfile::tempdir().expect("temp dir");
        let dir = parent.path().join("a").join("b");
        // Modes are explicit, so a permissive umask does not widen them (umask is per process: nextest runs
        // each test in its own).
        // SAFETY: umask(2) only sets the process's file-creation mask.
        let old = unsafe { libc::umask(0o002) };
        let vfs = OsVfs;
        vfs.create_dir_all(&dir).expect("create dirs");
        let file = dir.join("f");
        vfs.open(&file, true).expect("create file");
        let lock = dir.join("LOCK");
        let _held = vfs.lock(&lock).expect("lock");
        // SAFETY: as above, restoring the previous mask.
        unsafe { libc::umask(old) };
        assert_eq!(mode(&parent.path().join("a")), 0o700);
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&file), 0o600);
        assert_eq!(mode(&lock), 0o600);
    }

    #[test]
    fn mapped_writes_inside_the_map_land_in_the_file_and_the_rest_go_through_pwrite() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("j");
        let file = OsVfs.open(&path, true).expect("create");
        // A map needs written bytes under it: asking past the end is refused, and changes nothing.
        assert!(file.map_writes(3 << 20).is_err());
        write_zeros(file.as_ref(), 0, 3 << 20).expect("zeros");
        file.map_writes(2 << 20).expect("map");
        file.map_writes(2 << 20).expect("a second call keeps the map");
        // On ext4 the copies below go through the map (elsewhere through pwrite, which this test checks as well).
        let ext4 = fs_type(&File::open(&path).expect("open")).expect("statfs") == EXT4_SUPER_MAGIC;
        let maps = std::fs::read_to_string("/proc/self/maps").expect("maps");
        assert_eq!(maps.contains(path.to_str().expect("path")), ext4, "{maps}");
        // Inside the map, across a page boundary, and straddling its end (which goes through pwrite).
        file.write_mapped(b"inside", 100).expect("write");
        file.write_mapped(&[7u8; 200], 4000).expect("write");
        file.write_mapped(&[9u8; 64], (2 << 20) - 32).expect("write");
        file.write_mapped(b"past", (2 << 20) + 100).expect("write");
        file.write_at(b"plain", 200).expect("write");
        // A copy into the next MiB lets the first go from the map; its pages keep what was copied into them (dirty,
        // not yet synced), and take copies again (which lets the second MiB go).
        file.write_mapped(b"next", (1 << 20) + 100).expect("write");
        file.write_mapped(b"again", 300).expect("write");
        file.sync_data().expect("sync");
        // Another descriptor (what recovery after a crash opens) reads every write.
        let bytes = std::fs::read(&path).expect("read");
        assert_eq!(bytes.len(), 3 << 20, "no write moved the end of the file");
        assert_eq!(&bytes[100..106], b"inside");
        assert_eq!(&bytes[200..205], b"plain");
        assert_eq!(&bytes[300..305], b"again");
        assert!(bytes[4000..4200].iter().all(|&b| b == 7));
        assert!(bytes[(2 << 20) - 32..(2 << 20) + 32].iter().all(|&b| b == 9));
        assert_eq!(&bytes[(2 << 20) + 100..(2 << 20) + 104], b"past");
        assert_eq!(&bytes[(1 << 20) + 100..(1 << 20) + 104], b"next");
        let mut back = [0u8; 6];
        file.read_at(&mut back, 100).expect("read_at");
        assert_eq!(&back, b"inside");
    }
}
