//! Scrub: reads every data block of an image's layers, or of the whole store, and checks it against its checksum
//! (docs/FORMAT.md, "Checksums").

use basalt_core::{ImageSpec, Progress, Result, ScrubError, ScrubReport, bail};
use redb::{ReadableDatabase, ReadableTable};

use crate::engine::Engine;
use crate::layer::BlockSt;
use crate::layout::{BLOCK_SHIFT, BLOCK_SIZE};
use crate::records::{IMAGES, ImageRec, db_err};
use crate::state::layout_of;

/// Blocks read and checked at once.
const RUN_BLOCKS: u64 = 256;

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
        let mut buf = vec![0u8; (RUN_BLOCKS * BLOCK_SIZE) as usize];
        for (state, rec, layout, layers) in work {
            report.images += 1;
            let mut found = 0u64;
            for layer in layers {
                let view = if layer.id == rec.head_layer {
                    "head".to_owned()
                } else {
                    match rec.snaps.iter().find(|s| s.layer == layer.id) {
                        Some(s) => format!("@{}", s.name),
                        None => "hidden".to_owned(),
                    }
                };
                for object_no in layer.objects() {
                    if progress.is_cancelled() {
                        bail!(Cancelled, "the operation was cancelled");
                    }
                    let data: Vec<u64> = layer
                        .present_blocks(object_no)?
                        .into_iter()
                        .filter(|(_, st)| *st == BlockSt::Data)
                        .map(|(b, _)| b)
                        .collect();
                    let mut i = 0;
                    while i < data.len() {
                        // A run of consecutive data blocks, read at once.
                        let mut n = 1;
                        while i + n < data.len() && data[i + n] == data[i] + n as u64 && (n as u64) < RUN_BLOCKS {
                            n += 1;
                        }
                        let first = data[i];
                        let file_off = layout.file_offset(object_no, first << BLOCK_SHIFT);
                        let run = &mut buf[..n << BLOCK_SHIFT];
                        layer.file.read_at(run, file_off)?;
                        for bad in layer.bad_blocks(run, file_off)? {
                            let blk = first + bad;
                            // Re-read alone: a write racing the scrub is not damage, and a block no longer data
                            // is not checked.
                            if layer.state(object_no, blk)? != BlockSt::Data {
                                continue;
                            }
                            let mut one = vec![0u8; BLOCK_SIZE as usize];
                            let off = layout.file_offset(object_no, blk << BLOCK_SHIFT);
                            if layer.read_checked(&mut one, off)?.is_none() {
                                continue;
                            }
                            found += 1;
                            report.errors.push(ScrubError {
                                image: rec.spec_text(),
                                view: view.clone(),
                                layer: layer.id,
                                offset: layout.unmap(object_no, blk << BLOCK_SHIFT),
                            });
                        }
                        report.blocks_checked += n as u64;
                        progress.set(report.blocks_checked, total);
                        i += n;
                    }
                }
            }
            if found > 0 {
                // Not `eprintln!`, which panics when stderr cannot be written (a log on a full disk).
                let line = format!("basalt: scrub of image '{}' found {found} damaged block(s)\n", rec.spec_text());
                let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
            }
            self.store.integrity.scrubbed(&state.id, found);
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
