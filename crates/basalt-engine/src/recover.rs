//! Replaying the journal when a store opens: what `docs/FORMAT.md` ("Opening a store: replay") describes.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;

use basalt_core::{Error, Result};
use redb::{ReadableDatabase, ReadableTable};

use crate::journal::{Kind, ReadRecord, read_file};
use crate::layer::{BlockSt, ObjBits, sidecar_offset};
use crate::layout::BLOCK_SIZE;
use crate::records::{self, BLOCKS, IMAGES, ImageRec, db_err, decode};
use crate::state::layout_of;
use crate::vfs::{Vfs, VfsFile};

/// What replay found: the highest seq in either journal file, and the seq the store now holds every change up to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Replayed {
    pub last_seq: u64,
    pub applied: u64,
}

/// A layer file and its checksum sidecar.
type LayerFiles = (Arc<dyn VfsFile>, Arc<dyn VfsFile>);

/// Applies the journal's records that the metadata store lacks, then commits the result.
pub(crate) fn replay(
    vfs: &Arc<dyn Vfs>,
    open_files: &Arc<crate::segments::OpenFiles>,
    db: &redb::Database,
    journal: &[Arc<dyn VfsFile>; 2],
    layers_dir: &Path,
    segment_shift: u32,
    boot_id: &str,
) -> Result<Replayed> {
    let applied = {
        let txn = db.begin_read().map_err(db_err)?;
        let meta = txn.open_table(records::META).map_err(db_err)?;
        meta.get(records::JOURNAL_APPLIED).map_err(db_err)?.map_or(0, |v| v.value())
    };
    let mut boots: [Option<String>; 2] = [None, None];
    let mut all: Vec<ReadRecord> = Vec::new();
    let mut last_seq = applied;
    for (i, file) in journal.iter().enumerate() {
        let (boot, records) = read_file(file.as_ref(), i)?;
        boots[i] = boot;
        last_seq = records.iter().map(|r| r.seq).fold(last_seq, u64::max);
        all.extend(records);
    }
    all.retain(|r| r.seq > applied);
    all.sort_by_key(|r| r.seq);
    // Objects under dirty marks that outlived a checkpoint (a table a version-4 store, never opened since its
    // upgrade offline, may not have yet).
    let mut carried: Vec<(u64, u64)> = Vec::new();
    {
        let txn = db.begin_read().map_err(db_err)?;
        if let Ok(table) = txn.open_table(records::DIRTY_OBJECTS) {
            for entry in table.iter().map_err(db_err)? {
                carried.push(entry.map_err(db_err)?.0.value());
            }
        }
    }
    if all.is_empty() && carried.is_empty() {
        return Ok(Replayed { last_seq, applied });
    }
    let covers = all.iter().filter(|r| r.kind == Kind::Mark).map(|r| r.covers).max().unwrap_or(0);

    // Blocks per object of every layer an image refers to; records of other layers (deleted since) are skipped.
    let mut bpo_of: HashMap<u64, u64> = HashMap::new();
    {
        let txn = db.begin_read().map_err(db_err)?;
        let images = txn.open_table(IMAGES).map_err(db_err)?;
        for entry in images.iter().map_err(db_err)? {
            let (_, value) = entry.map_err(db_err)?;
            let rec: ImageRec = decode(value.value())?;
            let bpo = layout_of(&rec)?.blocks_per_object();
            for layer in &rec.layers {
                bpo_of.insert(layer.id, bpo);
            }
        }
    }

    // Each block's records, oldest first: (record index, block index in the record).
    let mut history: BTreeMap<(u64, u64, u64), Vec<(usize, u64)>> = BTreeMap::new();
    // Objects whose blocks may have changed in the file with no surviving record: their crcs are recomputed.
    let mut dirty: BTreeSet<(u64, u64)> = BTreeSet::new();
    for (ri, r) in all.iter().enumerate() {
        if r.kind == Kind::Mark || !bpo_of.contains_key(&r.place.layer) {
            continue;
        }
        if r.kind == Kind::Dirty {
            dirty.insert((r.place.layer, r.place.object));
            continue;
        }
        for i in 0..u64::from(r.place.blocks) {
            let blk = u64::from(r.place.first_blk) + i;
            history.entry((r.place.layer, r.place.object, blk)).or_default().push((ri, i));
        }
    }

    dirty.extend(carried.iter().copied().filter(|(layer, _)| bpo_of.contains_key(layer)));

    let mut bits: BTreeMap<(u64, u64), ObjBits> = BTreeMap::new();
    {
        let txn = db.begin_read().map_err(db_err)?;
        let blocks = txn.open_table(BLOCKS).map_err(db_err)?;
        let objects = history.keys().map(|&(layer, object, _)| (layer, object)).chain(dirty.iter().copied());
        for (layer, object) in objects {
            if bits.contains_key(&(layer, object)) {
                continue;
            }
            let bpo = bpo_of[&layer];
            let obj = match blocks.get((layer, object)).map_err(db_err)? {
                Some(v) => ObjBits::decode(v.value(), bpo)?,
                None => ObjBits::new(bpo),
            };
            bits.insert((layer, object), obj);
        }
    }

    let mut files: HashMap<u64, LayerFiles> = HashMap::new();
    let mut rewritten: BTreeSet<u64> = BTreeSet::new();
    let mut missing: BTreeSet<u64> = BTreeSet::new();
    let mut block = vec![0u8; BLOCK_SIZE as usize];
    let mut open_layer = |layer: u64| -> Result<Option<LayerFiles>> {
        if missing.contains(&layer) {
            return Ok(None);
        }
        if let Some(f) = files.get(&layer) {
            return Ok(Some(f.clone()));
        }
        let (f, crc) = match crate::state::open_layer_files(vfs, open_files, layers_dir, segment_shift, layer, true) {
            Ok(files) => files,
            // A damaged store: the image whose file is gone refuses to open, and says so (fsck names it); the
            // store's other images stay usable.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                missing.insert(layer);
                return Ok(None);
            }
            Err(e) => {
                return Err(Error::io(format!(
                    "cannot open the files of layer {layer:016x} to replay the journal: {e}"
                )));
            }
        };
        files.insert(layer, (f.clone(), crc.clone()));
        Ok(Some((f, crc)))
    };
    for (&(layer, object, blk), records) in &history {
        let Some((file, crc)) = open_layer(layer)? else { continue };
        // The newest record decides, unless it is an untrusted kind-2 record whose bytes never reached the file.
        let mut outcome = None;
        for &(ri, i) in records.iter().rev() {
            let r = &all[ri];
            let file_off = r.place.file_off + i * BLOCK_SIZE;
            match r.kind {
                Kind::Absent => outcome = Some(BlockSt::Absent),
                Kind::Zero => outcome = Some(BlockSt::Zero),
                Kind::Data => {
                    journal[r.file].read_at(&mut block, r.body_off + i * BLOCK_SIZE)?;
                    file.write_at(&block, file_off)?;
                    crc.write_at(&crate::checksum::crc32c(&block).to_le_bytes(), sidecar_offset(file_off))?;
                    rewritten.insert(layer);
                    outcome = Some(BlockSt::Data);
                }
                Kind::DataCrc => {
                    let trusted = boots[r.file].as_deref() == Some(boot_id) || r.seq <= covers;
                    let matches = trusted || {
                        file.read_at(&mut block, file_off)?;
                        crate::checksum::crc32c(&block) == r.crcs[i as usize]
                    };
                    if matches {
                        crc.write_at(&r.crcs[i as usize].to_le_bytes(), sidecar_offset(file_off))?;
                        rewritten.insert(layer);
                        outcome = Some(BlockSt::Data);
                    }
                }
                Kind::Mark | Kind::Dirty => {}
            }
            if outcome.is_some() {
                break;
            }
        }
        if let (Some(st), Some(obj)) = (outcome, bits.get_mut(&(layer, object))) {
            obj.set(blk, st);
        }
    }
    // An object named by a dirty record may have been overwritten in place (or punched) with its data and crcs
    // out of step: every one of its data blocks gets the crc of what the file holds (docs/FORMAT.md, "The hard
    // part").
    for &(layer, object) in &dirty {
        let Some((file, crc)) = open_layer(layer)? else { continue };
        let Some(obj) = bits.get(&(layer, object)) else { continue };
        let object_off = object * (bpo_of[&layer] * BLOCK_SIZE);
        for (blk, st) in obj.present().collect::<Vec<_>>() {
            if st != BlockSt::Data {
                continue;
            }
            let file_off = object_off + blk * BLOCK_SIZE;
            file.read_at(&mut block, file_off)?;
            crc.write_at(&crate::checksum::crc32c(&block).to_le_bytes(), sidecar_offset(file_off))?;
            rewritten.insert(layer);
        }
    }
    for layer in &rewritten {
        let (file, crc) = &files[layer];
        file.sync_data()?;
        crc.sync_data()?;
    }
    let txn = db.begin_write().map_err(db_err)?;
    {
        let mut blocks = txn.open_table(BLOCKS).map_err(db_err)?;
        // The layers replayed are counted from their bitmaps again (until their next checkpoint).
        let mut usage = txn.open_table(records::LAYER_USAGE).map_err(db_err)?;
        for (layer, _) in bits.keys() {
            usage.remove(*layer).map_err(db_err)?;
        }
        for ((layer, object), obj) in &bits {
            if obj.is_empty() {
                blocks.remove((*layer, *object)).map_err(db_err)?;
            } else {
                blocks.insert((*layer, *object), obj.encode().as_slice()).map_err(db_err)?;
            }
        }
        // Every marked object's crcs now match its file, synced above: no mark is left.
        let mut rows = txn.open_table(records::DIRTY_OBJECTS).map_err(db_err)?;
        for key in &carried {
            rows.remove(*key).map_err(db_err)?;
        }
        let mut meta = txn.open_table(records::META).map_err(db_err)?;
        meta.insert(records::JOURNAL_APPLIED, last_seq).map_err(db_err)?;
    }
    txn.commit().map_err(db_err)?;
    Ok(Replayed { last_seq, applied: last_seq })
}
