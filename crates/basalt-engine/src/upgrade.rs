//! `basalt upgrade`: brings a stopped store of an earlier format version to this one, offline.
//!
//! Version 1 kept every layer's bitmaps in the metadata store and had no journal; version 2 added the journal and
//! the `journal_applied` key; version 3 added a checksum sidecar per layer file; version 4 cuts layer files and
//! sidecars into segments; version 5 adds the `dirty_objects` table (docs/FORMAT.md, "Versions"). From version 4 the
//! upgrade only records version 5 (as an open does); from versions 1 to 3 it:
//! 1. moves what a layer file holds past its first segment into the segment files that hold it now (copied and
//!    synced before the first file is cut, so a rerun after a crash copies again);
//! 2. replays a version-2 journal, so every change is in the metadata store and the layer files (a version-3
//!    journal is left to the next open, which replays it the same way);
//! 3. writes every layer's sidecar from its data blocks (versions 1 and 2);
//! 4. records the current version and the segment size in one metadata transaction.
//!
//! A crash anywhere before that transaction leaves the old version, and a rerun does it all again; on a store of the
//! current version it changes nothing.

use std::path::Path;
use std::sync::Arc;

use basalt_core::{Error, ErrorKind, Result};
use redb::{ReadableDatabase, ReadableTable};

use crate::engine::LAYERS_DIR;
use crate::layer::{BlockSt, ObjBits, sidecar_offset};
use crate::layout::{BLOCK_SHIFT, BLOCK_SIZE};
use crate::records::{self, BLOCKS, FORMAT_VERSION, IMAGES, ImageRec, db_err, decode};
use crate::segments::{DEFAULT_SEGMENT_SHIFT, OpenFiles, layer_id_of, split_oversized};
use crate::state::layout_of;
use crate::state::open_layer_files;
use crate::vfs::{OsVfs, Vfs};

/// What an upgrade did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upgraded {
    /// The store had this older version and now has [`FORMAT_VERSION`].
    From(u64),
    /// The store already had [`FORMAT_VERSION`]; nothing changed.
    AlreadyCurrent,
}

/// Upgrades the stopped store in `root`.
pub fn upgrade(root: &Path) -> Result<Upgraded> {
    upgrade_vfs(Arc::new(OsVfs), root)
}

/// Upgrades the stopped store in `root` on the given disk.
pub fn upgrade_vfs(vfs: Arc<dyn Vfs>, root: &Path) -> Result<Upgraded> {
    let store = records::open_offline(&*vfs, root)?;
    let version = {
        let txn = store.db.begin_read().map_err(db_err)?;
        let meta = txn.open_table(records::META).map_err(db_err)?;
        meta.get("format_version").map_err(db_err)?.map(|v| v.value())
    };
    let version = match version {
        Some(FORMAT_VERSION) => return Ok(Upgraded::AlreadyCurrent),
        Some(4) => {
            records::upgrade_from_4(&store.db)?;
            return Ok(Upgraded::From(4));
        }
        Some(v @ 1..=3) => v,
        Some(other) => {
            return Err(Error::new(
                ErrorKind::NotSupported,
                format!("the store has format version {other}, which this basalt cannot upgrade"),
            ));
        }
        None => return Err(Error::not_found(format!("{} holds no basalt store", root.display()))),
    };
    let layers_dir = root.join(LAYERS_DIR);
    let shift = DEFAULT_SEGMENT_SHIFT;
    for name in vfs.list(&layers_dir)? {
        let first_segment = name.ends_with(".layer") || name.ends_with(".crc");
        if first_segment && layer_id_of(&name).is_some() {
            split_oversized(&vfs, &layers_dir, &name, shift)
                .map_err(|e| Error::io(format!("cannot move the tail of {name} into its segments: {e}")))?;
        }
    }
    if version == 2 {
        // Apply what the journal holds past `journal_applied`, as an open would.
        let paths = crate::journal::file_paths(root);
        if paths.iter().all(|p| vfs.open(p, false).is_ok()) {
            let files = [vfs.open(&paths[0], false)?, vfs.open(&paths[1], false)?];
            let open_files = OpenFiles::new(crate::engine::default_open_files());
            crate::recover::replay(&vfs, &open_files, &store.db, &files, &layers_dir, shift, &vfs.boot_id())?;
        }
    }
    if version <= 2 {
        write_sidecars(&vfs, &store.db, &layers_dir, shift)?;
    }
    let txn = store.db.begin_write().map_err(db_err)?;
    {
        let mut meta = txn.open_table(records::META).map_err(db_err)?;
        meta.insert("format_version", FORMAT_VERSION).map_err(db_err)?;
        meta.insert(records::SEGMENT_SHIFT, u64::from(shift)).map_err(db_err)?;
        if version == 1 {
            meta.insert(records::JOURNAL_APPLIED, 0).map_err(db_err)?;
        }
    }
    txn.commit().map_err(db_err)?;
    Ok(Upgraded::From(version))
}

/// Writes the sidecar of every layer of every image from the blocks its bitmaps call data, and syncs them.
fn write_sidecars(vfs: &Arc<dyn Vfs>, db: &redb::Database, layers_dir: &Path, shift: u32) -> Result<()> {
    let txn = db.begin_read().map_err(db_err)?;
    let images = txn.open_table(IMAGES).map_err(db_err)?;
    let blocks = txn.open_table(BLOCKS).map_err(db_err)?;
    let mut buf = Vec::new();
    // One layer's files are open at a time.
    let open_files = OpenFiles::new(usize::MAX);
    for entry in images.iter().map_err(db_err)? {
        let (_, value) = entry.map_err(db_err)?;
        let rec: ImageRec = decode(value.value())?;
        let layout = layout_of(&rec)?;
        let bpo = layout.blocks_per_object();
        for layer in &rec.layers {
            let (file, crc) = open_layer_files(vfs, &open_files, layers_dir, shift, layer.id, true).map_err(|e| {
                Error::io(format!(
                    "image '{}': the files of layer {:016x} cannot be opened ({e}): run fsck",
                    rec.spec_text(),
                    layer.id
                ))
            })?;
            for item in blocks.range((layer.id, 0u64)..=(layer.id, u64::MAX)).map_err(db_err)? {
                let (key, bits) = item.map_err(db_err)?;
                let object_no = key.value().1;
                let obj = ObjBits::decode(bits.value(), bpo)?;
                let data: Vec<u64> = obj.present().filter(|(_, st)| *st == BlockSt::Data).map(|(b, _)| b).collect();
                let (Some(&first), Some(&last)) = (data.first(), data.last()) else { continue };
                // One read of the object's span of data blocks; crcs of the blocks between are harmless (an entry
                // counts only while its block is data).
                let start = layout.file_offset(object_no, first << BLOCK_SHIFT);
                buf.resize(((last - first + 1) * BLOCK_SIZE) as usize, 0);
                file.read_at(&mut buf, start)?;
                let sums: Vec<u8> = buf
                    .chunks_exact(BLOCK_SIZE as usize)
                    .flat_map(|b| crate::checksum::crc32c(b).to_le_bytes())
                    .collect();
                crc.write_at(&sums, sidecar_offset(start))?;
            }
            crc.sync_data()?;
        }
    }
    vfs.sync_dir(layers_dir)?;
    Ok(())
}
