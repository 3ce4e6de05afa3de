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
    /// The first offset at or after `offset` where the file may hold data, skipping holes the file system knows
    /// of; `None` past the last data. Without that knowledge, every offset before the end may hold data.
    fn next_data(&self, offset: u64) -> io::Result<Option<u64>> {
        Ok((offset < self.len()?).then_some(offset))
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
}

/// The real file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct OsVfs;

#[derive(Debug)]
struct OsFile {
    file: File,
    path: PathBuf,
}

impl VfsFile for OsFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let mut done = 0;
        while done < buf.len() {
            let n = self.file.read_at(&mut buf[done..], offset + done as u64)?;
            if n == 0 {
                buf[done..].fill(0);
                break;
            }
            done += n;
        }
        Ok(())
    }

    fn write_at(&self, data: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(data, offset)
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
        // Image data and the metadata store are the owner's alone, whatever the umask.
        let file = OpenOptions::new().read(true).write(true).create(create).mode(FILE_MODE).open(path)?;
        Ok(Arc::new(OsFile { file, path: path.to_owned() }))
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
}
