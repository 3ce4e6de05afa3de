//! Layer files cut into segments, so any offset of an image fits in the files of any file system.
//!
//! A layer keeps block `b` of object `n` at `n × object size + b × 4 KiB`, and its checksum sidecar keeps that
//! block's crc32c at a 1/1024 of that offset. One file cannot hold the end of a large image: ext4 with 4 KiB blocks
//! stops at 16 TiB. So each of the two is a run of segment files of `2^shift` bytes (8 TiB by default, recorded in
//! the store): segment 0 has the plain name (`<id>.layer`, `<id>.crc`) and segment `i` the name with `.i` appended.
//! A segment exists from the first write into it; one that does not exist reads as zeros (docs/FORMAT.md,
//! "Layer files").

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use crate::vfs::{Vfs, VfsFile};

/// Segments of 8 TiB: well inside the largest file of ext4 (16 TiB), and 128 of them make a PiB.
pub const DEFAULT_SEGMENT_SHIFT: u32 = 43;

/// The file name of segment `index` of the file named `base`.
pub(crate) fn segment_name(base: &str, index: u64) -> String {
    if index == 0 { base.to_owned() } else { format!("{base}.{index}") }
}

/// The layer id a file in the layers directory belongs to (a layer segment or a sidecar segment), if any.
pub(crate) fn layer_id_of(name: &str) -> Option<u64> {
    let base = match name.rsplit_once('.') {
        Some((base, index)) if !index.is_empty() && index.bytes().all(|b| b.is_ascii_digit()) => base,
        _ => name,
    };
    let hex = base.strip_suffix(".layer").or_else(|| base.strip_suffix(".crc"))?;
    if hex.len() != 16 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
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

/// One logical file made of segment files in a directory.
#[derive(Debug)]
pub(crate) struct SegmentedFile {
    vfs: Arc<dyn Vfs>,
    dir: PathBuf,
    base: String,
    shift: u32,
    /// The segments opened so far. Segment 0 always is; one that is not open may exist on disk (written through
    /// another handle) and is looked up again when needed.
    open: RwLock<BTreeMap<u64, Arc<dyn VfsFile>>>,
}

impl SegmentedFile {
    /// Opens the file named `base` in `dir` (segment 0), creating it if `create` is true.
    pub(crate) fn open(
        vfs: &Arc<dyn Vfs>,
        dir: &Path,
        base: &str,
        shift: u32,
        create: bool,
    ) -> io::Result<Arc<dyn VfsFile>> {
        let first = vfs.open(&dir.join(base), create)?;
        Ok(Arc::new(SegmentedFile {
            vfs: vfs.clone(),
            dir: dir.to_owned(),
            base: base.to_owned(),
            shift,
            open: RwLock::new(BTreeMap::from([(0, first)])),
        }))
    }

    /// Segment `index`, if it exists; with `create`, it is created (and its directory entry made durable before
    /// anything is written into it, so a sync of the segment covers what it holds).
    fn segment(&self, index: u64, create: bool) -> io::Result<Option<Arc<dyn VfsFile>>> {
        if let Some(f) = self.open.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(&index) {
            return Ok(Some(f.clone()));
        }
        let mut open = self.open.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(f) = open.get(&index) {
            return Ok(Some(f.clone()));
        }
        let path = self.dir.join(segment_name(&self.base, index));
        let file = match self.vfs.open(&path, false) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                let f = self.vfs.open(&path, true)?;
                self.vfs.sync_dir(&self.dir)?;
                f
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        open.insert(index, file.clone());
        Ok(Some(file))
    }

    fn opened(&self) -> Vec<Arc<dyn VfsFile>> {
        self.open.read().unwrap_or_else(std::sync::PoisonError::into_inner).values().cloned().collect()
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
                Some(f) => f.read_at(out, at)?,
                None => out.fill(0),
            }
        }
        Ok(())
    }

    fn write_at(&self, data: &[u8], offset: u64) -> io::Result<()> {
        for (index, at, start, n) in pieces(self.shift, offset, data.len() as u64) {
            let f = self.segment(index, true)?.expect("created");
            f.write_at(&data[start as usize..(start + n) as usize], at)?;
        }
        Ok(())
    }

    fn punch_hole(&self, offset: u64, length: u64) -> io::Result<()> {
        for (index, at, _, n) in pieces(self.shift, offset, length) {
            if let Some(f) = self.segment(index, false)? {
                f.punch_hole(at, n)?;
            }
        }
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        match self.segments_on_disk()?.last() {
            Some(&last) => {
                let f = self.segment(last, false)?.expect("listed");
                Ok((last << self.shift) + f.len()?)
            }
            None => self.segment(0, false)?.expect("segment 0 is open").len(),
        }
    }

    fn set_len(&self, length: u64) -> io::Result<()> {
        let keep = length.div_ceil(1 << self.shift).max(1);
        for index in self.segments_on_disk()? {
            if index >= keep {
                self.open.write().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&index);
                self.vfs.remove(&self.dir.join(segment_name(&self.base, index)))?;
            }
        }
        let last = keep - 1;
        for index in 0..last {
            let f = self.segment(index, true)?.expect("created");
            if f.len()? < 1 << self.shift {
                f.set_len(1 << self.shift)?;
            }
        }
        self.segment(last, true)?.expect("created").set_len(length - (last << self.shift))?;
        self.vfs.sync_dir(&self.dir)
    }

    fn sync_data(&self) -> io::Result<()> {
        for f in self.opened() {
            f.sync_data()?;
        }
        Ok(())
    }

    fn allocate(&self, length: u64) -> io::Result<()> {
        for (index, at, _, n) in pieces(self.shift, 0, length) {
            self.segment(index, true)?.expect("created").allocate(at + n)?;
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
    let target = SegmentedFile::open(vfs, dir, base, shift, false)?;
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
    use crate::sim::{CrashSurvivors, SimVfs};

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
        let f = SegmentedFile::open(&vfs, dir, "0000000000000001.layer", 12, true).expect("open");
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
        let g = SegmentedFile::open(&vfs, dir, "0000000000000001.layer", 12, false).expect("reopen");
        let mut far = [0u8; 3];
        g.read_at(&mut far, 4096 * 40 + 5).expect("read far");
        assert_eq!(&far, b"far");
    }

    #[test]
    fn a_synced_write_into_a_new_segment_survives_a_power_cut() {
        let sim = SimVfs::new();
        let vfs: Arc<dyn Vfs> = Arc::new(sim.clone());
        let dir = Path::new("/l");
        vfs.create_dir_all(dir).expect("dir");
        vfs.sync_dir(Path::new("/")).expect("sync root");
        let f = SegmentedFile::open(&vfs, dir, "0000000000000002.layer", 12, true).expect("open");
        vfs.sync_dir(dir).expect("sync dir");
        f.write_at(b"kept", 4096 * 9 + 1).expect("write");
        f.sync_data().expect("sync");
        f.write_at(b"lost", 4096 * 30).expect("write unsynced");
        let after: Arc<dyn Vfs> = Arc::new(sim.after_crash(CrashSurvivors::None));
        let g = SegmentedFile::open(&after, dir, "0000000000000002.layer", 12, false).expect("reopen");
        let mut back = [0u8; 4];
        g.read_at(&mut back, 4096 * 9 + 1).expect("read");
        assert_eq!(&back, b"kept");
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
        let f = SegmentedFile::open(&vfs, dir, "0000000000000003.layer", 12, false).expect("open");
        let (mut a, mut b) = ([0u8; 4], [0u8; 4]);
        f.read_at(&mut a, 100).expect("read");
        f.read_at(&mut b, (1 << 12) * 5 + 7).expect("read");
        assert_eq!((&a, &b), (b"head", b"tail"));
        let mut names = vfs.list(dir).expect("list");
        names.sort();
        assert_eq!(names, vec!["0000000000000003.layer".to_owned(), "0000000000000003.layer.5".to_owned()]);
    }
}
