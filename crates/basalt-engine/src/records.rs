//! The metadata store's tables and records (format version 4): what `docs/FORMAT.md` describes, in code.
//!
//! Records are encoded with postcard; a change here is a format change and needs a version bump.

use std::collections::BTreeMap;

use basalt_core::{Error, Result};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

/// The on-disk format version this code writes and reads.
pub const FORMAT_VERSION: u64 = 5;

/// The `META` key of the size of layer file segments, as a power of two (version 4; see `segments.rs`).
pub const SEGMENT_SHIFT: &str = "segment_shift";

/// The `META` key of the last journal seq whose change the store holds (version 2).
pub const JOURNAL_APPLIED: &str = "journal_applied";

/// Store-wide values: `format_version`, `next_id`, `journal_applied`, `segment_shift`.
pub const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Pools by name.
pub const POOLS: TableDefinition<&str, &[u8]> = TableDefinition::new("pools");
/// Named namespaces: `(pool, namespace)`.
pub const NAMESPACES: TableDefinition<(&str, &str), ()> = TableDefinition::new("namespaces");
/// Live image names: `(pool, namespace, name)` to image id. Trashed images are not here.
pub const IMAGE_NAMES: TableDefinition<(&str, &str, &str), &str> = TableDefinition::new("image_names");
/// Every image (live or trashed) by id.
pub const IMAGES: TableDefinition<&str, &[u8]> = TableDefinition::new("images");
/// Trash index: `(pool, namespace, image id)`.
pub const TRASH: TableDefinition<(&str, &str, &str), ()> = TableDefinition::new("trash");
/// Clone links: `(parent image id, parent snapshot id, child image id)`.
pub const CHILDREN: TableDefinition<(&str, u64, &str), ()> = TableDefinition::new("children");
/// Allocation bitmaps: `(layer id, object number)` to the object's block states.
pub const BLOCKS: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("blocks");
/// `(layer id, object number)` of objects overwritten in place under a dirty mark that outlived a checkpoint: the
/// next open recomputes their crcs (version 5; docs/FORMAT.md, "Marks that outlive a checkpoint").
pub const DIRTY_OBJECTS: TableDefinition<(u64, u64), ()> = TableDefinition::new("dirty_objects");
/// Configuration overrides: `(scope, option)` to value; scope is `""` (global) or the pool name prefixed by `pool:`.
pub const CONFIG: TableDefinition<(&str, &str), &str> = TableDefinition::new("config");
/// Trash purge schedules by level (`""` every pool, `pool`, `pool/namespace`) to a [`PurgeScheduleRec`].
pub const PURGE_SCHEDULES: TableDefinition<&str, &[u8]> = TableDefinition::new("purge_schedules");
/// The last scheduled trash purge of each namespace: `(pool, namespace)` to Unix seconds.
pub const PURGE_RUNS: TableDefinition<(&str, &str), u64> = TableDefinition::new("purge_runs");
/// Pool quotas: pool name to `(max_bytes, max_objects)`, 0 meaning none (a store without the table has none).
pub const POOL_QUOTAS: TableDefinition<&str, (u64, u64)> = TableDefinition::new("pool_quotas");
/// Per layer, `(data blocks, objects with data)` as of the checkpoint that last committed its bitmaps. A layer
/// without an entry is counted from its bitmaps.
pub const LAYER_USAGE: TableDefinition<u64, (u64, u64)> = TableDefinition::new("layer_usage");
/// Checksum errors per image id: `(errors not cleared by a clean scrub, every detection)`. Written by checkpoints;
/// added without a format bump (a store without it had no errors kept).
pub const INTEGRITY: TableDefinition<&str, (u64, u64)> = TableDefinition::new("integrity");

/// The trash purge schedule of one level.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurgeScheduleRec {
    /// Items: interval in minutes and optional start time in minutes after midnight UTC.
    pub items: Vec<(u32, Option<u16>)>,
    /// When the schedule last changed: runs are counted from here for namespaces that never ran.
    pub changed: u64,
}

/// A pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolRec {
    /// Numeric id.
    pub id: u64,
    /// Application tags.
    pub applications: Vec<String>,
    /// Creation time.
    pub created: u64,
}

/// One layer of an image: a sparse file of blocks plus its bitmaps in [`BLOCKS`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRec {
    /// Layer id (also the file name).
    pub id: u64,
    /// The layer this one reads through to, or `None` for the image's base (then the parent, if any).
    pub below: Option<u64>,
    /// Blocks at or beyond this image offset in lower layers are hidden (the image was this small at some point).
    pub min_size: u64,
}

/// A snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapRec {
    /// Snapshot id.
    pub id: u64,
    /// Name.
    pub name: String,
    /// Image size at creation.
    pub size: u64,
    /// Creation time.
    pub timestamp: u64,
    /// Protected from removal, cloneable.
    pub protected: bool,
    /// The frozen layer at the top of this snapshot's view.
    pub layer: u64,
}

/// The parent of a clone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParentRec {
    /// Parent image id.
    pub image_id: String,
    /// Parent snapshot id.
    pub snap_id: u64,
    /// Bytes that read through to the parent (the clone's size at creation).
    pub overlap: u64,
}

/// Why and since when an image is in the trash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrashRec {
    /// `USER` or `REMOVING`.
    pub source: String,
    /// When it was moved.
    pub deletion_time: u64,
    /// Before this, removal needs force.
    pub deferment_end: u64,
}

/// An image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRec {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Pool name.
    pub pool: String,
    /// Namespace name (empty for the default).
    pub namespace: String,
    /// Virtual size.
    pub size: u64,
    /// Object order.
    pub order: u8,
    /// Feature bits.
    pub features: u64,
    /// Stripe unit.
    pub stripe_unit: u64,
    /// Stripe count.
    pub stripe_count: u64,
    /// Data pool, if separate.
    pub data_pool: Option<String>,
    /// Creation time.
    pub created: u64,
    /// Last change of data or metadata through a control operation.
    pub modified: u64,
    /// The writable layer.
    pub head_layer: u64,
    /// Every layer of the image (a tree: snapshots and rollbacks branch it).
    pub layers: Vec<LayerRec>,
    /// Snapshots in id order.
    pub snaps: Vec<SnapRec>,
    /// Next snapshot id.
    pub next_snap_id: u64,
    /// Snapshot limit.
    pub snap_limit: Option<u64>,
    /// Parent of a clone.
    pub parent: Option<ParentRec>,
    /// User metadata.
    pub metadata: BTreeMap<String, String>,
    /// Configuration overrides.
    pub config: BTreeMap<String, String>,
    /// Set while the image is in the trash.
    pub trash: Option<TrashRec>,
}

impl ImageRec {
    /// The image's spec as users know it (`pool[/namespace]/name`), for messages: internal ids never reach users.
    pub fn spec_text(&self) -> String {
        if self.namespace.is_empty() {
            format!("{}/{}", self.pool, self.name)
        } else {
            format!("{}/{}/{}", self.pool, self.namespace, self.name)
        }
    }

    /// Returns a layer by id.
    pub fn layer(&self, id: u64) -> Result<&LayerRec> {
        self.layers
            .iter()
            .find(|l| l.id == id)
            .ok_or_else(|| Error::io(format!("image '{}' refers to a missing layer: run fsck", self.spec_text())))
    }

    /// Returns the chain of layer ids from `top` down to the image's base.
    pub fn chain(&self, top: u64) -> Result<Vec<u64>> {
        let mut chain = Vec::new();
        let mut at = Some(top);
        while let Some(id) = at {
            if chain.len() > self.layers.len() {
                return Err(Error::io(format!("image '{}' has a cycle in its layers: run fsck", self.spec_text())));
            }
            chain.push(id);
            at = self.layer(id)?.below;
        }
        Ok(chain)
    }

    /// Returns a snapshot by name.
    pub fn snap_by_name(&self, name: &str) -> Option<&SnapRec> {
        self.snaps.iter().find(|s| s.name == name)
    }

    /// Returns a snapshot by id.
    pub fn snap_by_id(&self, id: u64) -> Option<&SnapRec> {
        self.snaps.iter().find(|s| s.id == id)
    }

    /// Returns the ids of layers that no snapshot and no head can see, and which are therefore garbage.
    pub fn unreachable_layers(&self) -> Vec<u64> {
        let mut reachable = std::collections::BTreeSet::new();
        let tops = std::iter::once(self.head_layer).chain(self.snaps.iter().map(|s| s.layer));
        for top in tops {
            let mut at = Some(top);
            while let Some(id) = at {
                if !reachable.insert(id) {
                    break;
                }
                at = self.layers.iter().find(|l| l.id == id).and_then(|l| l.below);
            }
        }
        self.layers.iter().map(|l| l.id).filter(|id| !reachable.contains(id)).collect()
    }
}

/// Encodes a record.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    postcard::to_stdvec(value).map_err(|e| Error::io(format!("encoding a metadata record failed: {e}")))
}

/// Decodes a record.
pub fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T> {
    postcard::from_bytes(bytes).map_err(|e| Error::io(format!("a metadata record is corrupt: {e}; run fsck")))
}

/// Maps any redb error to EIO with context.
pub fn db_err(err: impl std::fmt::Display) -> Error {
    let text = err.to_string();
    if text.contains("Previous I/O error") {
        // redb stops after a failed write or sync, for the same reason the engine does.
        return Error::io(
            "the metadata store stopped after an earlier i/o error: restart basalt to reopen it consistently",
        );
    }
    if text.contains("os error 28") || text.contains("No space left") {
        return Error::new(basalt_core::ErrorKind::NoSpace, format!("metadata store: {text}"));
    }
    Error::io(format!("metadata store: {text}"))
}

/// Brings a version-4 store to version 5 in one transaction: version 5 only adds the `dirty_objects` table, empty,
/// and the journal is read the same way, so a store with records still to replay is upgraded as well.
pub fn upgrade_from_4(db: &redb::Database) -> Result<()> {
    let txn = db.begin_write().map_err(db_err)?;
    {
        txn.open_table(DIRTY_OBJECTS).map_err(db_err)?;
        let mut meta = txn.open_table(META).map_err(db_err)?;
        meta.insert("format_version", FORMAT_VERSION).map_err(db_err)?;
    }
    txn.commit().map_err(db_err)
}

/// Creates every table and records the format version in a new store (with layer file segments of
/// `2^segment_shift` bytes), or checks the version of an existing one. Returns the store's segment shift.
pub fn init(db: &redb::Database, segment_shift: u32) -> Result<u32> {
    {
        let read = db.begin_read().map_err(db_err)?;
        if let Ok(meta) = read.open_table(META) {
            let version = meta.get("format_version").map_err(db_err)?.map(|v| v.value());
            match version {
                Some(FORMAT_VERSION) => return stored_segment_shift(&meta),
                Some(4) => {
                    let shift = stored_segment_shift(&meta)?;
                    drop(meta);
                    drop(read);
                    upgrade_from_4(db)?;
                    return Ok(shift);
                }
                Some(old @ (1..=3)) => {
                    return Err(Error::new(
                        basalt_core::ErrorKind::NotSupported,
                        format!(
                            "the store has format version {old}; this basalt uses version {FORMAT_VERSION}: stop basalt \
                             and run `basalt upgrade --data-dir DIR` once to upgrade it (offline, safe to rerun)"
                        ),
                    ));
                }
                Some(other) => {
                    return Err(Error::new(
                        basalt_core::ErrorKind::NotSupported,
                        format!("the store has format version {other}; this basalt reads version {FORMAT_VERSION}"),
                    ));
                }
                None => {}
            }
        }
    }
    let txn = db.begin_write().map_err(db_err)?;
    {
        let mut meta = txn.open_table(META).map_err(db_err)?;
        meta.insert("format_version", FORMAT_VERSION).map_err(db_err)?;
        meta.insert("next_id", 1).map_err(db_err)?;
        meta.insert(JOURNAL_APPLIED, 0).map_err(db_err)?;
        meta.insert(SEGMENT_SHIFT, u64::from(segment_shift)).map_err(db_err)?;
        txn.open_table(POOLS).map_err(db_err)?;
        txn.open_table(NAMESPACES).map_err(db_err)?;
        txn.open_table(IMAGE_NAMES).map_err(db_err)?;
        txn.open_table(IMAGES).map_err(db_err)?;
        txn.open_table(TRASH).map_err(db_err)?;
        txn.open_table(CHILDREN).map_err(db_err)?;
        txn.open_table(BLOCKS).map_err(db_err)?;
        txn.open_table(DIRTY_OBJECTS).map_err(db_err)?;
        txn.open_table(CONFIG).map_err(db_err)?;
        txn.open_table(PURGE_SCHEDULES).map_err(db_err)?;
        txn.open_table(PURGE_RUNS).map_err(db_err)?;
    }
    txn.commit().map_err(db_err)?;
    Ok(segment_shift)
}

/// The segment shift a version-4 store recorded.
pub fn stored_segment_shift<T: ReadableTable<&'static str, u64>>(meta: &T) -> Result<u32> {
    match meta.get(SEGMENT_SHIFT).map_err(db_err)?.map(|v| v.value()) {
        Some(shift) if (12..=62).contains(&shift) => Ok(shift as u32),
        other => {
            Err(Error::io(format!("the store's layer segment size (2^{other:?}) is missing or invalid: run fsck")))
        }
    }
}

/// Takes the next store-wide id (for images and layers) inside a write transaction.
pub fn next_id(txn: &redb::WriteTransaction) -> Result<u64> {
    let mut meta = txn.open_table(META).map_err(db_err)?;
    let id = meta.get("next_id").map_err(db_err)?.map(|v| v.value()).unwrap_or(1);
    meta.insert("next_id", id + 1).map_err(db_err)?;
    Ok(id)
}

/// Reads an image record by id in any transaction that can open tables.
pub fn get_image<T: ReadableTable<&'static str, &'static [u8]>>(table: &T, id: &str) -> Result<Option<ImageRec>> {
    match table.get(id).map_err(db_err)? {
        Some(bytes) => Ok(Some(decode(bytes.value())?)),
        None => Ok(None),
    }
}

/// A stopped store's metadata, opened for an offline tool (`fsck`, `upgrade`): the store's lock, held while the
/// database is in use, and the database.
pub(crate) struct Offline {
    pub db: redb::Database,
    _lock: Box<dyn std::fmt::Debug + Send + Sync>,
}

/// Opens the stopped store in `root` for an offline tool; refused while a `basalt serve` holds it.
pub(crate) fn open_offline(vfs: &dyn crate::vfs::Vfs, root: &std::path::Path) -> Result<Offline> {
    let db_file = vfs
        .open(&root.join(crate::engine::DB_FILE), false)
        .map_err(|e| Error::not_found(format!("no basalt store in {}: {e}", root.display())))?;
    let lock = vfs.lock(&root.join(crate::engine::LOCK_FILE)).map_err(|e| Error::busy(e.to_string()))?;
    let db = redb::Database::builder().create_with_backend(crate::vfs::RedbFile::new(db_file, None)).map_err(db_err)?;
    Ok(Offline { db, _lock: lock })
}
