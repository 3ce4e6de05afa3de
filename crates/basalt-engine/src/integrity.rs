//! Checksum errors: counted per image and for the store, logged, and reported by scrub (docs/FORMAT.md,
//! "Checksums"). The counts are kept in the metadata store (table `integrity`), written by the next checkpoint, so
//! a damaged image stays degraded across a restart until a scrub finds it clean.

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::sync::Mutex;

use basalt_core::{Error, ErrorKind, Result};
use redb::{ReadableDatabase, ReadableTable};

use crate::layer::mutex_lock;
use crate::records::{INTEGRITY, db_err};

/// One image's checksum errors.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    /// Errors not cleared by a scrub: the image is degraded while this is not 0.
    now: u64,
    /// Every detection (kept across restarts).
    total: u64,
}

/// The checksum errors of the store's images.
#[derive(Debug, Default)]
pub(crate) struct Integrity {
    per_image: Mutex<HashMap<String, Counts>>,
    /// Images whose counts changed (or went) since the last checkpoint wrote them.
    changed: Mutex<BTreeSet<String>>,
}

impl Integrity {
    /// The counts the metadata store holds.
    pub fn load(db: &redb::Database) -> Result<Integrity> {
        let txn = db.begin_read().map_err(db_err)?;
        let mut per_image = HashMap::new();
        // A store written before the table existed has none: no errors were kept.
        if let Ok(table) = txn.open_table(INTEGRITY) {
            for entry in table.iter().map_err(db_err)? {
                let (id, counts) = entry.map_err(db_err)?;
                let (now, total) = counts.value();
                per_image.insert(id.value().to_owned(), Counts { now, total });
            }
        }
        Ok(Integrity { per_image: Mutex::new(per_image), changed: Mutex::default() })
    }

    /// Takes the images whose counts changed, for a checkpoint to write with [`Integrity::save`].
    pub fn take_changed(&self) -> BTreeSet<String> {
        std::mem::take(&mut *mutex_lock(&self.changed))
    }

    /// Marks images changed again after a checkpoint failed to write them.
    pub fn restore_changed(&self, ids: BTreeSet<String>) {
        mutex_lock(&self.changed).extend(ids);
    }

    /// Writes the counts of `ids` (taken with [`Integrity::take_changed`]) in a checkpoint's transaction.
    pub fn save(&self, txn: &redb::WriteTransaction, ids: &BTreeSet<String>) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut table = txn.open_table(INTEGRITY).map_err(db_err)?;
        let map = mutex_lock(&self.per_image);
        for id in ids {
            match map.get(id) {
                Some(c) => table.insert(id.as_str(), (c.now, c.total)).map_err(db_err)?,
                None => table.remove(id.as_str()).map_err(db_err)?,
            };
        }
        Ok(())
    }

    /// Drops an image's counts (it is being removed; the checkpoint that removes it writes this too).
    pub fn forget(&self, image_id: &str) {
        mutex_lock(&self.per_image).remove(image_id);
        mutex_lock(&self.changed).insert(image_id.to_owned());
    }

    /// Counts and logs a bad block a read met; returns the error the reader gets.
    pub fn bad_block(&self, image_id: &str, image: &str, layer: u64, image_offset: Option<u64>) -> Error {
        {
            let mut map = mutex_lock(&self.per_image);
            let counts = map.entry(image_id.to_owned()).or_default();
            counts.now += 1;
            counts.total += 1;
        }
        mutex_lock(&self.changed).insert(image_id.to_owned());
        let at = match image_offset {
            Some(off) => format!("the 4 KiB block at image offset {off}"),
            None => "a 4 KiB block".to_owned(),
        };
        let message = format!(
            "checksum mismatch in image '{image}' (layer {layer:016x}): {at} does not match its checksum, so it \
             was not returned; the data on disk is damaged (`basalt scrub` finds every damaged block)"
        );
        // Not `eprintln!`, which panics when stderr cannot be written (a log on a full disk).
        let _ = writeln!(std::io::stderr(), "basalt: i/o error: {message}");
        Error::new(ErrorKind::Io, message)
    }

    /// Errors an image has now (not cleared by a clean scrub).
    pub fn errors_of(&self, image_id: &str) -> u64 {
        mutex_lock(&self.per_image).get(image_id).map_or(0, |c| c.now)
    }

    /// Records what a scrub of an image found: its errors now become that (0 clears its degraded status).
    pub fn scrubbed(&self, image_id: &str, found: u64) {
        mutex_lock(&self.changed).insert(image_id.to_owned());
        let mut map = mutex_lock(&self.per_image);
        if found == 0 {
            if let Some(c) = map.get_mut(image_id) {
                c.now = 0;
            }
            return;
        }
        let counts = map.entry(image_id.to_owned()).or_default();
        counts.now = found;
        counts.total += found;
    }

    /// Every image that had errors: `(image id, errors now, total)`, sorted by id.
    pub fn all(&self) -> Vec<(String, u64, u64)> {
        let mut out: Vec<(String, u64, u64)> =
            mutex_lock(&self.per_image).iter().map(|(k, c)| (k.clone(), c.now, c.total)).collect();
        out.sort();
        out
    }
}
