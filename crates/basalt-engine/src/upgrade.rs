//! `basalt upgrade`: brings a stopped store of an earlier format version to this one, offline.
//!
//! Version 1 kept every layer's bitmaps in the metadata store and had no journal; version 2 adds the journal and
//! the `journal_applied` key. A version-1 store closed by basalt (or killed) holds nothing outside its metadata
//! store and layer files, so the upgrade is one metadata transaction: it records version 2 and an empty journal.
//! The journal files are made by the first open. Running it again on a version-2 store changes nothing.

use std::path::Path;
use std::sync::Arc;

use basalt_core::{Error, ErrorKind, Result};
use redb::ReadableTable;

use crate::records::{self, FORMAT_VERSION, db_err};
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
    let txn = store.db.begin_write().map_err(db_err)?;
    let version = {
        let mut meta = txn.open_table(records::META).map_err(db_err)?;
        let version = meta.get("format_version").map_err(db_err)?.map(|v| v.value());
        match version {
            Some(FORMAT_VERSION) => return Ok(Upgraded::AlreadyCurrent),
            Some(1) => {
                meta.insert("format_version", FORMAT_VERSION).map_err(db_err)?;
                meta.insert(records::JOURNAL_APPLIED, 0).map_err(db_err)?;
                1
            }
            Some(other) => {
                return Err(Error::new(
                    ErrorKind::NotSupported,
                    format!("the store has format version {other}, which this basalt cannot upgrade"),
                ));
            }
            None => return Err(Error::not_found(format!("{} holds no basalt store", root.display()))),
        }
    };
    txn.commit().map_err(db_err)?;
    Ok(Upgraded::From(version))
}
