//! `fsck`: checks a stopped store's metadata against itself and against the layer files, without changing it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use basalt_core::Result;
use redb::{ReadableDatabase, ReadableTable};

use crate::engine::LAYERS_DIR;
use crate::layer::ObjBits;
use crate::layout::BLOCK_SHIFT;
use crate::records::{self, BLOCKS, CHILDREN, IMAGE_NAMES, IMAGES, ImageRec, NAMESPACES, POOLS, TRASH, db_err, decode};
use crate::state::layout_of;
use crate::vfs::{OsVfs, Vfs, VfsFile};

/// A layer file and its checksum sidecar.
type LayerFiles = (Arc<dyn VfsFile>, Arc<dyn VfsFile>);

/// What fsck found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FsckReport {
    /// Inconsistencies: the store is damaged.
    pub errors: Vec<String>,
    /// Harmless findings (for example layer files a crash left behind; the next open removes them).
    pub notes: Vec<String>,
    /// Images checked (live and trashed).
    pub images: u64,
    /// Layers checked.
    pub layers: u64,
    /// Data blocks checked against their crc32c.
    pub blocks_checked: u64,
}

impl FsckReport {
    /// True when no error was found.
    pub fn is_clean(&self) -> bool {
        self.errors.is_empty()
    }
}

/// Checks the store in `root` on the real file system.
pub fn fsck(root: &Path) -> Result<FsckReport> {
    fsck_vfs(Arc::new(OsVfs), root)
}

/// Checks the store in `root` on the given disk.
pub fn fsck_vfs(vfs: Arc<dyn Vfs>, root: &Path) -> Result<FsckReport> {
    let store = records::open_offline(&*vfs, root)?;
    let mut report = FsckReport::default();
    check(&store.db, &vfs, root, &mut report)?;
    Ok(report)
}

fn check(db: &redb::Database, vfs: &Arc<dyn Vfs>, root: &Path, report: &mut FsckReport) -> Result<()> {
    let txn = db.begin_read().map_err(db_err)?;
    let meta = txn.open_table(records::META).map_err(db_err)?;
    match meta.get("format_version").map_err(db_err)?.map(|v| v.value()) {
        Some(records::FORMAT_VERSION) => {}
        other => report.errors.push(format!("format version is {other:?}, expected {}", records::FORMAT_VERSION)),
    }
    let segment_shift = match records::stored_segment_shift(&meta) {
        Ok(shift) => Some(shift),
        Err(e) => {
            report.errors.push(e.message().to_owned());
            None
        }
    };
    let pools = txn.open_table(POOLS).map_err(db_err)?;
    let mut pool_names = BTreeSet::new();
    for entry in pools.iter().map_err(db_err)? {
        let (name, value) = entry.map_err(db_err)?;
        if let Err(e) = decode::<records::PoolRec>(value.value()) {
            report.errors.push(format!("pool '{}': {e}", name.value()));
        }
        pool_names.insert(name.value().to_owned());
    }
    let namespaces = txn.open_table(NAMESPACES).map_err(db_err)?;
    let mut ns_set = BTreeSet::new();
    for entry in namespaces.iter().map_err(db_err)? {
        let (key, _) = entry.map_err(db_err)?;
        let (pool, ns) = key.value();
        if !pool_names.contains(pool) {
            report.errors.push(format!("namespace '{pool}/{ns}' belongs to a missing pool"));
        }
        ns_set.insert((pool.to_owned(), ns.to_owned()));
    }
    let images_table = txn.open_table(IMAGES).map_err(db_err)?;
    let mut images: BTreeMap<String, ImageRec> = BTreeMap::new();
    for entry in images_table.iter().map_err(db_err)? {
        let (id, value) = entry.map_err(db_err)?;
        match decode::<ImageRec>(value.value()) {
            Ok(rec) => {
                if rec.id != id.value() {
                    report.errors.push(format!("image record under key {} carries id {}", id.value(), rec.id));
                }
                images.insert(id.value().to_owned(), rec);
            }
            Err(e) => report.errors.push(format!("image {}: {e}", id.value())),
        }
    }
    let names = txn.open_table(IMAGE_NAMES).map_err(db_err)?;
    for entry in names.iter().map_err(db_err)? {
        let (key, id) = entry.map_err(db_err)?;
        let (pool, ns, name) = key.value();
        match images.get(id.value()) {
            Some(rec) if rec.trash.is_none() && rec.pool == pool && rec.namespace == ns && rec.name == name => {}
            _ => report
                .errors
                .push(format!("name '{pool}/{ns}/{name}' points at image {} which does not match", id.value())),
        }
    }
    let trash = txn.open_table(TRASH).map_err(db_err)?;
    let mut trash_ids = BTreeSet::new();
    for entry in trash.iter().map_err(db_err)? {
        let (key, _) = entry.map_err(db_err)?;
        let (pool, ns, id) = key.value();
        match images.get(id) {
            Some(rec) if rec.trash.is_some() && rec.pool == pool && rec.namespace == ns => {}
            _ => report.errors.push(format!("trash entry '{pool}/{ns}/{id}' does not match an image in the trash")),
        }
        trash_ids.insert(id.to_owned());
    }
    let children = txn.open_table(CHILDREN).map_err(db_err)?;
    let mut links = BTreeSet::new();
    for entry in children.iter().map_err(db_err)? {
        let (key, _) = entry.map_err(db_err)?;
        let (parent, snap, child) = key.value();
        let ok = images
            .get(child)
            .and_then(|c| c.parent.as_ref())
            .is_some_and(|p| p.image_id == parent && p.snap_id == snap);
        if !ok {
            report.errors.push(format!("clone link {parent}@{snap} -> {child} does not match the child's parent"));
        }
        links.insert((parent.to_owned(), snap, child.to_owned()));
    }
    let blocks = txn.open_table(BLOCKS).map_err(db_err)?;
    let mut all_layers: BTreeMap<u64, (String, u64)> = BTreeMap::new();
    for (id, rec) in &images {
        report.images += 1;
        check_image(rec, &images, &pool_names, &ns_set, &links, &trash_ids, report);
        let bpo = layout_of(rec).map(|l| l.blocks_per_object()).unwrap_or(1);
        for layer in &rec.layers {
            report.layers += 1;
            if all_layers.insert(layer.id, (id.clone(), bpo)).is_some() {
                report.errors.push(format!("layer {} is claimed by more than one image", layer.id));
            }
            if vfs.open(&root.join(LAYERS_DIR).join(crate::layer::layer_file_name(layer.id)), false).is_err() {
                report.errors.push(format!("image {id}: the file of layer {} is missing", layer.id));
            }
            if vfs.open(&root.join(LAYERS_DIR).join(crate::layer::sidecar_name(layer.id)), false).is_err() {
                report.errors.push(format!("image {id}: the checksum file of layer {} is missing", layer.id));
            }
        }
    }
    let mut orphan_bitmaps = BTreeSet::new();
    let mut counted: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    for entry in blocks.iter().map_err(db_err)? {
        let (key, value) = entry.map_err(db_err)?;
        let (layer, object_no) = key.value();
        match all_layers.get(&layer) {
            Some((image, bpo)) => match ObjBits::decode(value.value(), *bpo) {
                Ok(bits) => {
                    let data = bits.data_blocks();
                    let counts = counted.entry(layer).or_default();
                    counts.0 += data;
                    counts.1 += u64::from(data > 0);
                }
                Err(e) => report.errors.push(format!("image {image} layer {layer} object {object_no}: {e}")),
            },
            None => {
                orphan_bitmaps.insert(layer);
            }
        }
    }
    // Usage counts (what pool listings show) must match the bitmaps. A store that journaled changes since its
    // last checkpoint is behind in both; replay at the next open sets both right.
    if let Ok(usage) = txn.open_table(records::LAYER_USAGE) {
        for entry in usage.iter().map_err(db_err)? {
            let (key, value) = entry.map_err(db_err)?;
            let (layer, stored) = (key.value(), value.value());
            let actual = counted.get(&layer).copied().unwrap_or_default();
            if all_layers.contains_key(&layer) && stored != actual {
                report.errors.push(format!(
                    "layer {layer}: its usage count says {} data blocks in {} objects, its bitmaps {} in {}",
                    stored.0, stored.1, actual.0, actual.1
                ));
            }
        }
    }
    if let Some(shift) = segment_shift {
        check_checksums(&txn, vfs, root, shift, &images, report)?;
    }
    for layer in orphan_bitmaps {
        report.notes.push(format!(
            "the bitmaps of layer {layer} are not referenced (left by an interrupted copy; the next open removes them)"
        ));
    }
    if let Ok(files) = vfs.list(&root.join(LAYERS_DIR)) {
        for name in files {
            if let (Some(shift), Ok(file)) = (segment_shift, vfs.open(&root.join(LAYERS_DIR).join(&name), false))
                && file.len().unwrap_or(0) > 1 << shift
            {
                report.errors.push(format!("layer file {name} is longer than a segment (2^{shift} bytes)"));
            }
            match crate::segments::layer_id_of(&name) {
                Some(id) if all_layers.contains_key(&id) => {}
                _ => {
                    report.notes.push(format!("layer file {name} is not referenced (left by an interrupted operation)"))
                }
            }
        }
    }
    Ok(())
}

fn check_image(
    rec: &ImageRec,
    images: &BTreeMap<String, ImageRec>,
    pools: &BTreeSet<String>,
    namespaces: &BTreeSet<(String, String)>,
    links: &BTreeSet<(String, u64, String)>,
    trash_ids: &BTreeSet<String>,
    report: &mut FsckReport,
) {
    let id = &rec.id;
    let mut err = |msg: String| report.errors.push(format!("image {id} ('{}'): {msg}", rec.name));
    if !pools.contains(&rec.pool) {
        err(format!("its pool '{}' does not exist", rec.pool));
    }
    if !rec.namespace.is_empty() && !namespaces.contains(&(rec.pool.clone(), rec.namespace.clone())) {
        err(format!("its namespace '{}' does not exist", rec.namespace));
    }
    if rec.trash.is_some() != trash_ids.contains(id) {
        err("its trash state and the trash index disagree".to_owned());
    }
    if let Err(e) = layout_of(rec) {
        err(format!("invalid layout: {e}"));
    }
    let mut seen = BTreeSet::new();
    for layer in &rec.layers {
        if !seen.insert(layer.id) {
            err(format!("layer {} is listed twice", layer.id));
        }
        if let Some(below) = layer.below
            && !rec.layers.iter().any(|l| l.id == below)
        {
            err(format!("layer {} reads through to missing layer {below}", layer.id));
        }
    }
    if rec.layers.iter().filter(|l| l.below.is_none()).count() != 1 {
        err("it must have exactly one root layer".to_owned());
    }
    if let Err(e) = rec.chain(rec.head_layer) {
        err(format!("head layer chain: {e}"));
    }
    let mut snap_names = BTreeSet::new();
    for snap in &rec.snaps {
        if !snap_names.insert(snap.name.clone()) {
            err(format!("snapshot name '{}' is used twice", snap.name));
        }
        if snap.id >= rec.next_snap_id {
            err(format!("snapshot id {} is not below the next id {}", snap.id, rec.next_snap_id));
        }
        if let Err(e) = rec.chain(snap.layer) {
            err(format!("snapshot '{}' chain: {e}", snap.name));
        }
        if snap.layer == rec.head_layer {
            err(format!("snapshot '{}' shares the writable head layer", snap.name));
        }
    }
    let unreachable = rec.unreachable_layers();
    if !unreachable.is_empty() {
        err(format!("layers {unreachable:?} are unreachable and should have been removed"));
    }
    if let Some(parent) = &rec.parent {
        match images.get(&parent.image_id) {
            None => err(format!("its parent image {} does not exist", parent.image_id)),
            Some(p) => match p.snap_by_id(parent.snap_id) {
                None => err(format!("its parent snapshot {}@{} does not exist", parent.image_id, parent.snap_id)),
                Some(s) if !s.protected => err(format!("its parent snapshot '{}' is not protected", s.name)),
                Some(_) => {}
            },
        }
        if !links.contains(&(parent.image_id.clone(), parent.snap_id, id.clone())) {
            err("its clone link is missing from the children index".to_owned());
        }
    }
}

/// Reads every data block of every layer and checks it against its crc32c in the layer's sidecar, with scrub's code
/// ([`crate::scrub::check_object`]); each damaged block is an error naming the image, its view and the image offset.
/// Objects that journal records not yet replayed name, or rows of `dirty_objects`, are skipped (noted): their
/// bitmaps and crcs are set right by the next open's replay, not before.
fn check_checksums(
    txn: &redb::ReadTransaction,
    vfs: &Arc<dyn Vfs>,
    root: &Path,
    segment_shift: u32,
    images: &BTreeMap<String, ImageRec>,
    report: &mut FsckReport,
) -> Result<()> {
    let meta = txn.open_table(records::META).map_err(db_err)?;
    if meta.get("format_version").map_err(db_err)?.map(|v| v.value()) != Some(records::FORMAT_VERSION) {
        return Ok(());
    }
    let applied = meta.get(records::JOURNAL_APPLIED).map_err(db_err)?.map_or(0, |v| v.value());
    // One layer's files are open at a time.
    let open_files = crate::segments::OpenFiles::new(usize::MAX);
    let mut unreplayed: BTreeSet<(u64, u64)> = BTreeSet::new();
    let (mut records_unreplayed, mut marked) = (0u64, 0u64);
    for (i, path) in crate::journal::file_paths(root).iter().enumerate() {
        let file = match vfs.open(path, false) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                report.errors.push(format!("journal file {}: {e}; block checksums were not checked", path.display()));
                return Ok(());
            }
        };
        let (_, records) = match crate::journal::read_file(file.as_ref(), i) {
            Ok(read) => read,
            Err(e) => {
                report.errors.push(format!("journal file {}: {e}; block checksums were not checked", path.display()));
                return Ok(());
            }
        };
        for r in records {
            if r.seq > applied && r.kind != crate::journal::Kind::Mark {
                unreplayed.insert((r.place.layer, r.place.object));
                records_unreplayed += 1;
            }
        }
    }
    // Objects under a dirty mark that outlived a checkpoint: the next open recomputes their crcs too.
    if let Ok(rows) = txn.open_table(records::DIRTY_OBJECTS) {
        for entry in rows.iter().map_err(db_err)? {
            unreplayed.insert(entry.map_err(db_err)?.0.value());
            marked += 1;
        }
    }
    if !unreplayed.is_empty() {
        // Said whether or not these objects have bitmaps yet: a store a crash stopped holds blocks only its journal
        // names, and the summary line's count does not include them.
        report.notes.push(format!(
            "{} object(s) changed since the last checkpoint ({records_unreplayed} journal record(s), {marked} dirty \
             mark(s)) were not checked against their checksums: the next open replays them",
            unreplayed.len()
        ));
    }
    // Each layer: its image, that image's layout, and the layer's files.
    let mut owners: BTreeMap<u64, (&ImageRec, crate::layout::Layout)> = BTreeMap::new();
    for rec in images.values() {
        let Ok(layout) = layout_of(rec) else { continue };
        for layer in &rec.layers {
            owners.insert(layer.id, (rec, layout));
        }
    }
    let layers_dir = root.join(LAYERS_DIR);
    let mut files: Option<(u64, Option<LayerFiles>)> = None;
    let mut buf = vec![0u8; crate::scrub::RUN_BYTES];
    let blocks = txn.open_table(BLOCKS).map_err(db_err)?;
    for entry in blocks.iter().map_err(db_err)? {
        let (key, value) = entry.map_err(db_err)?;
        let (layer, object_no) = key.value();
        let Some(&(rec, layout)) = owners.get(&layer) else { continue };
        // Undecodable bitmaps are reported above.
        let Ok(bits) = ObjBits::decode(value.value(), layout.blocks_per_object()) else { continue };
        if unreplayed.contains(&(layer, object_no)) {
            continue;
        }
        if files.as_ref().is_none_or(|(id, _)| *id != layer) {
            // A missing file is reported above.
            let pair = crate::state::open_layer_files(vfs, &open_files, &layers_dir, segment_shift, layer, false).ok();
            files = Some((layer, pair));
        }
        let Some((_, Some((file, crc)))) = &files else { continue };
        let data = crate::scrub::data_blocks(bits.present());
        let view = crate::scrub::view_name(rec, layer);
        crate::scrub::check_object(file.as_ref(), crc.as_ref(), &layout, object_no, &data, &mut buf, |blk| {
            report.errors.push(format!(
                "image '{}' ({view}, id {}): the 4 KiB block at image offset {} (layer {layer:016x}) does not match \
                 its checksum",
                rec.spec_text(),
                rec.id,
                layout.unmap(object_no, blk << BLOCK_SHIFT)
            ));
            Ok(())
        })?;
        report.blocks_checked += data.len() as u64;
    }
    Ok(())
}
