//! The server's own persistent state (users, roles, API tokens, task records), apart from the storage backend.
//!
//! Records are JSON values in named tables. Where they live depends on the backend: in `DATA_DIR/server.redb` for
//! the embedded engine, and in the Ceph cluster (see `crate::ceph`) when basalt serves a cluster, so that several
//! servers in front of one cluster share users, roles and sessions.

use std::path::Path;
use std::sync::Arc;

use basalt_core::{Error, Result};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A table of the server store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Table(pub &'static str);

/// Users by name.
pub const USERS: Table = Table("users");
/// Custom roles by name.
pub const ROLES: Table = Table("roles");
/// API tokens by the hex SHA-256 of the token.
pub const TOKENS: Table = Table("tokens");
/// Task records by id.
pub const TASKS: Table = Table("tasks");
/// Audit records of mutating API calls, by time.
pub const AUDIT: Table = Table("audit");
/// Every table.
pub const TABLES: [Table; 5] = [USERS, ROLES, TOKENS, TASKS, AUDIT];

/// The file name of the server store.
pub const SERVER_DB: &str = "server.redb";

/// Where records are kept: raw bytes by table and key. Each call is atomic on its own.
pub trait KvStore: Send + Sync + std::fmt::Debug {
    /// One value.
    fn get(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>>;
    /// Every entry of a table, sorted by key.
    fn list(&self, table: Table) -> Result<Vec<(String, Vec<u8>)>>;
    /// Creates or replaces one value.
    fn put(&self, table: Table, key: &str, value: &[u8]) -> Result<()>;
    /// Removes keys; returns how many existed.
    fn remove(&self, table: Table, keys: &[String]) -> Result<usize>;
    /// Writes a value only if the key is absent; returns whether it was written. Stores that can check and write
    /// in one step override this; the default is made atomic within one server by [`ServerStore::insert_new`].
    fn insert_new(&self, table: Table, key: &str, value: &[u8]) -> Result<bool> {
        if self.get(table, key)?.is_some() {
            return Ok(false);
        }
        self.put(table, key, value)?;
        Ok(true)
    }
}

/// The typed store the server uses.
#[derive(Debug, Clone)]
pub struct ServerStore {
    kv: Arc<dyn KvStore>,
    /// Serialises [`ServerStore::insert_new`] within this process, for stores whose check and write are two steps.
    creating: Arc<std::sync::Mutex<()>>,
}

fn err(e: impl std::fmt::Display) -> Error {
    Error::io(format!("server store: {e}"))
}

/// A failure of the local database; a full disk keeps its own kind (ENOSPC), so callers can tell it from others.
fn db_err(e: impl Into<redb::Error>) -> Error {
    let e: redb::Error = e.into();
    if let redb::Error::Io(io) = &e
        && (io.kind() == std::io::ErrorKind::StorageFull || io.raw_os_error() == Some(28))
    {
        return Error::new(basalt_core::ErrorKind::NoSpace, format!("server store: the disk is full: {e}"));
    }
    err(e)
}

impl ServerStore {
    /// Opens or creates the local store in `dir`, a plain file (tools and tests: nothing guards it on a full disk).
    pub fn open(dir: &Path) -> Result<ServerStore> {
        Ok(ServerStore::over(Arc::new(RedbStore::open(dir)?)))
    }

    /// Opens or creates the local store of `basalt serve` in the embedded engine's data directory, with the engine's
    /// metadata reserve behind it, so a full disk does not stop it.
    pub fn on_engine(engine: &basalt_engine::Engine) -> Result<ServerStore> {
        Ok(ServerStore::over(Arc::new(RedbStore::on_engine(engine)?)))
    }

    /// A store over any key-value backend.
    pub fn over(kv: Arc<dyn KvStore>) -> ServerStore {
        ServerStore { kv, creating: Arc::default() }
    }

    /// Reads one record.
    pub fn get<T: DeserializeOwned>(&self, table: Table, key: &str) -> Result<Option<T>> {
        match self.kv.get(table, key)? {
            Some(bytes) => Ok(Some(serde_json::from_slice(&bytes).map_err(err)?)),
            None => Ok(None),
        }
    }

    /// Reads every record of a table, sorted by key.
    pub fn list<T: DeserializeOwned>(&self, table: Table) -> Result<Vec<(String, T)>> {
        self.kv
            .list(table)?
            .into_iter()
            .map(|(key, bytes)| Ok((key, serde_json::from_slice(&bytes).map_err(err)?)))
            .collect()
    }

    /// Writes one record.
    pub fn put<T: Serialize>(&self, table: Table, key: &str, value: &T) -> Result<()> {
        self.kv.put(table, key, &serde_json::to_vec(value).map_err(err)?)
    }

    /// Writes a record only if its key is absent (atomically among concurrent callers); returns whether it did.
    pub fn insert_new<T: Serialize>(&self, table: Table, key: &str, value: &T) -> Result<bool> {
        let bytes = serde_json::to_vec(value).map_err(err)?;
        let _one_at_a_time = self.creating.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.kv.insert_new(table, key, &bytes)
    }

    /// Removes one record; returns whether it existed.
    pub fn remove(&self, table: Table, key: &str) -> Result<bool> {
        Ok(self.kv.remove(table, &[key.to_owned()])? > 0)
    }

    /// Removes every record for which `drop` is true (records that do not parse are kept).
    pub fn remove_where<T: DeserializeOwned>(
        &self,
        table: Table,
        mut drop: impl FnMut(&str, &T) -> bool,
    ) -> Result<()> {
        let doomed: Vec<String> = self
            .kv
            .list(table)?
            .into_iter()
            .filter(|(key, bytes)| serde_json::from_slice::<T>(bytes).map(|record| drop(key, &record)).unwrap_or(false))
            .map(|(key, _)| key)
            .collect();
        if !doomed.is_empty() {
            self.kv.remove(table, &doomed)?;
        }
        Ok(())
    }
}

/// The local store: one redb table per [`Table`].
#[derive(Debug)]
pub struct RedbStore {
    db: redb::Database,
}

fn definition(table: Table) -> TableDefinition<'static, &'static str, &'static [u8]> {
    TableDefinition::new(table.0)
}

impl RedbStore {
    /// Opens or creates `dir/server.redb`.
    pub fn open(dir: &Path) -> Result<RedbStore> {
        let path = dir.join(SERVER_DB);
        // Created here first so the file (password hashes, tokens) is the owner's only, whatever the umask.
        {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(&path)
                .map_err(|e| Error::io(format!("cannot create {}: {e}", path.display())))?;
        }
        RedbStore::with_tables(redb::Database::create(&path).map_err(db_err)?)
    }

    /// Opens or creates `server.redb` in the embedded engine's data directory, on the engine's disk: a write or
    /// growth of the file that finds the disk full draws on the engine's metadata reserve and is retried (redb stops
    /// for good after a failed write, so the store would otherwise refuse logins and task records until a
    /// restart), and the engine refills the reserve as space comes back (docs/FORMAT.md, "The metadata reserve").
    pub fn on_engine(engine: &basalt_engine::Engine) -> Result<RedbStore> {
        RedbStore::with_tables(engine.open_database(SERVER_DB)?)
    }

    fn with_tables(db: redb::Database) -> Result<RedbStore> {
        let txn = db.begin_write().map_err(db_err)?;
        for table in TABLES {
            txn.open_table(definition(table)).map_err(db_err)?;
        }
        txn.commit().map_err(db_err)?;
        Ok(RedbStore { db })
    }
}

impl KvStore for RedbStore {
    fn get(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let t = txn.open_table(definition(table)).map_err(db_err)?;
        Ok(t.get(key).map_err(db_err)?.map(|v| v.value().to_vec()))
    }

    fn list(&self, table: Table) -> Result<Vec<(String, Vec<u8>)>> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let t = txn.open_table(definition(table)).map_err(db_err)?;
        let mut out = Vec::new();
        for entry in t.iter().map_err(db_err)? {
            let (k, v) = entry.map_err(db_err)?;
            out.push((k.value().to_owned(), v.value().to_vec()));
        }
        Ok(out)
    }

    fn put(&self, table: Table, key: &str, value: &[u8]) -> Result<()> {
        let txn = self.db.begin_write().map_err(db_err)?;
        txn.open_table(definition(table)).map_err(db_err)?.insert(key, value).map_err(db_err)?;
        txn.commit().map_err(db_err)
    }

    fn insert_new(&self, table: Table, key: &str, value: &[u8]) -> Result<bool> {
        let txn = self.db.begin_write().map_err(db_err)?;
        {
            let mut t = txn.open_table(definition(table)).map_err(db_err)?;
            if t.get(key).map_err(db_err)?.is_some() {
                return Ok(false);
            }
            t.insert(key, value).map_err(db_err)?;
        }
        txn.commit().map_err(db_err)?;
        Ok(true)
    }

    fn remove(&self, table: Table, keys: &[String]) -> Result<usize> {
        let txn = self.db.begin_write().map_err(db_err)?;
        let mut removed = 0;
        {
            let mut t = txn.open_table(definition(table)).map_err(db_err)?;
            for key in keys {
                removed += usize::from(t.remove(key.as_str()).map_err(db_err)?.is_some());
            }
        }
        txn.commit().map_err(db_err)?;
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use basalt_engine::sim::SimVfs;
    use basalt_engine::vfs::Vfs;

    use super::*;

    /// On a full disk, commits of `server.redb` draw on the engine's metadata reserve instead of failing (a failed
    /// write would stop redb until a restart): records keep being written, the reserve says it gave space, and the
    /// store still works once they are read back.
    #[test]
    fn server_records_are_written_on_a_full_disk_from_the_engines_reserve() {
        let vfs = SimVfs::new();
        let root = Path::new("/store");
        let clock = Arc::new(basalt_core::SystemClock);
        let engine = basalt_engine::Engine::open_with_vfs(Arc::new(vfs.clone()), root, clock).expect("engine");
        let store = ServerStore::on_engine(&engine).expect("server store");
        store.put(TASKS, "first", &"written before the disk filled").expect("put");
        // Everything else takes the rest of the disk.
        vfs.set_capacity(Some(vfs.used_bytes()));
        let size = engine.metadata_reserve().size;
        let record = "x".repeat(3000);
        let mut written = 0;
        while engine.metadata_reserve().releases == 0 {
            store.put(TASKS, &format!("task-{written:04}"), &record).expect("a commit on the full disk");
            written += 1;
            assert!(written < 2000, "the records never needed new space");
        }
        let held = engine.metadata_reserve().held;
        assert!(held < size, "the reserve gave space: {held} of {size}");
        assert_eq!(store.list::<String>(TASKS).expect("list").len(), written + 1);
        assert!(store.remove(TASKS, "first").expect("remove"), "the store still takes changes");
        assert!(vfs.open(&root.join(SERVER_DB), false).is_ok(), "in the engine's directory, on its disk");
    }

    #[test]
    fn a_full_disk_keeps_its_kind() {
        let full = redb::StorageError::Io(std::io::Error::from(std::io::ErrorKind::StorageFull));
        assert_eq!(db_err(full).kind(), basalt_core::ErrorKind::NoSpace);
        let other = redb::StorageError::Io(std::io::Error::from(std::io::ErrorKind::PermissionDenied));
        assert_eq!(db_err(other).kind(), basalt_core::ErrorKind::Io);
    }
}
