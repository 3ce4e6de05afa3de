//! Scrub: reads every data block of an image's layers, or of the whole store, and checks it against its checksum
//! (docs/FORMAT.md, "Checksums").

use basalt_core::{ImageSpec, Progress, Result, ScrubError, ScrubReport, bail};
use redb::{ReadableDatabase, ReadableTable};

use crate::engine::Engine;
use crate::layer::{BlockSt, check_blocks};
use crate::layout::{BLOCK_SHIFT, BLOCK_SIZE, Layout};
use crate::records::{IMAGES, ImageRec, db_err};
use crate::state::layout_of;
use crate::vfs::VfsFile;

/// Blocks read and checked at once.
const RUN_BLOCKS: u64 = 256;
/// Bytes read and checked at once.
pub(crate) const RUN_BYTES: usize = (RUN_BLOCKS * BLOCK_SIZE) as usize;

impl Engine {
    /// Checks every data block of every layer of one image, or of every image (trash included), against its
    /// checksum. Each image's count of checksum errors (and so its `degraded` status) becomes what the scrub found.
    pub fn scrub_images(&self, spec: Option<&ImageSpec>, progress: &Progress) -> Result<ScrubReport> {
        let ids: Vec<String> = match spec {
            Some(spec) => vec![self.image_id(spec)?],
            None => {
                let txn = self.store.db.begin_read().map_err(db_err)?;
                let images = txn.open_table(IMAGES).map_err(db_err)?;
                let mut ids = Vec::new();
                for entry in images.iter().map_err(db_err)? {
                    ids.push(entry.map_err(db_err)?.0.value().to_owned());
                }
                ids
            }
        };
        // Load every image's layers first, so progress has a total.
        let mut work = Vec::new();
        let mut total = 0u64;
        for id in ids {
            let state = match self.store.state(&id) {
                Ok(state) => state,
                // Removed since the listing: nothing to check.
                Err(e) if e.kind() == basalt_core::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let rec: ImageRec = self.store.read_image(&id)?;
            let layout = layout_of(&rec)?;
            let mut layers = Vec::new();
            for l in &rec.layers {
                let layer = state.layer(&rec, l.id, layout.blocks_per_object())?;
                total += layer.data_usage().0;
                layers.push(layer);
            }
            work.push((state, rec, layout, layers));
        }
        let mut report = ScrubReport::default();
        progress.set(0, total);
        let mut buf = vec![0u8; RUN_BYTES];
        for (state, rec, layout, layers) in work {
            report.images += 1;
            let mut found = 0u64;
            for layer in layers {
                let view = view_name(&rec, layer.id);
                for object_no in layer.objects() {
                    if progress.is_cancelled() {
                        bail!(Cancelled, "the operation was cancelled");
                    }
                    let data = data_blocks(layer.present_blocks(object_no)?);
                    check_object(layer.file.as_ref(), layer.crc(), &layout, object_no, &data, &mut buf, |blk| {
                        // Re-read alone: a write racing the scrub is not damage, and a block no longer data is not
                        // checked.
                        if layer.state(object_no, blk)? != BlockSt::Data {
                            return Ok(());
                        }
                        let mut one = [0u8; BLOCK_SIZE as usize];
                        let off = layout.file_offset(object_no, blk << BLOCK_SHIFT);
                        if layer.read_checked(&mut one, off)?.is_none() {
                            return Ok(());
                        }
                        found += 1;
                        report.errors.push(ScrubError {
                            image: rec.spec_text(),
                            view: view.clone(),
                            layer: layer.id,
                            offset: layout.unmap(object_no, blk << BLOCK_SHIFT),
                        });
                        Ok(())
                    })?;
                    report.blocks_checked += data.len() as u64;
                    progress.set(report.blocks_checked, total);
                }
            }
            if found > 0 {
                // Not `eprintln!`, which panics when stderr cannot be written (a log on a full disk).
                let line = format!("basalt: scrub of image '{}' found {found} damaged block(s)\n", rec.spec_text());
                let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
            }
            self.store.integrity.scrubbed(&state.id, found);
            self.store.journal.want_save();
        }
        Ok(report)
    }

    /// Checksum errors since the store opened, per image id that had any: `(id, errors now, errors found in
    /// total)`. "Now" is what the last scrub of the image found plus read errors since (it makes the image
    /// `degraded`); the total counts every detection, by reads and scrubs, and never goes down.
    pub fn checksum_errors(&self) -> Vec<(String, u64, u64)> {
        self.store.integrity.all()
    }
}

/// How a report names the view of an image that shows a layer: `head`, `@snapshot`, or `hidden` (a removed
/// snapshot's layer that a later one still reads through).
pub(crate) fn view_name(rec: &ImageRec, layer: u64) -> String {
    if layer == rec.head_layer {
        return "head".to_owned();
    }
    match rec.snaps.iter().find(|s| s.layer == layer) {
        Some(s) => format!("@{}", s.name),
        None => "hidden".to_owned(),
    }
}

/// The blocks that hold data, in order, of an object's present blocks.
pub(crate) fn data_blocks(present: impl IntoIterator<Item = (u64, BlockSt)>) -> Vec<u64> {
    present.into_iter().filter(|(_, st)| *st == BlockSt::Data).map(|(b, _)| b).collect()
}

/// Checks the data blocks `blocks` (ascending block numbers in object `object_no`) of a layer file against their
/// crcs in its sidecar: each run of neighbouring blocks (up to `buf.len()` bytes) with one read of the data and one
/// of the crcs ([`check_blocks`]). Calls `bad` with every block whose crc32c differs. Scrub (on a running store)
/// and fsck (on a stopped one) both check through this.
pub(crate) fn check_object(
    file: &dyn VfsFile,
    crc: &dyn VfsFile,
    layout: &Layout,
    object_no: u64,
    blocks: &[u64],
    buf: &mut [u8],
    mut bad: impl FnMut(u64) -> Result<()>,
) -> Result<()> {
    let max_run = (buf.len() >> BLOCK_SHIFT).max(1);
    let mut i = 0;
    while i < blocks.len() {
        let mut n = 1;
        while i + n < blocks.len() && blocks[i + n] == blocks[i] + n as u64 && n < max_run {
            n += 1;
        }
        let first = blocks[i];
        let file_off = layout.file_offset(object_no, first << BLOCK_SHIFT);
        let run = &mut buf[..n << BLOCK_SHIFT];
        file.read_at(run, file_off)?;
        let mut failed = Vec::new();
        check_blocks(crc, run, file_off, |b| failed.push(first + b))?;
        for blk in failed {
            bad(blk)?;
        }
        i += n;
    }
    Ok(())
}
