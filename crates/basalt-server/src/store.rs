//! The server's own persistent state (users, roles, API tokens, task records) in `DATA_DIR/server.redb`, apart from
//! the storage backend so the same server state works over any backend.

use std::path::Path;
use std::sync::Arc;

use basalt_core::{Error, Result};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Users by name.
pub const USERS: TableDefinition<&str, &[u8]> = TableDefinition::new("users");
/// Custom roles by name.
pub const ROLES: TableDefinition<&str, &[u8]> = TableDefinition::new("roles");
/// API tokens by the hex SHA-256 of the token.
pub const TOKENS: TableDefinition<&str, &[u8]> = TableDefinition::new("tokens");
/// Task records by id.
pub const TASKS: TableDefinition<&str, &[u8]> = TableDefinition::new("tasks");

/// The file name of the server store.
pub const SERVER_DB: &str = "server.redb";

/// A small typed key-value store over redb.
#[derive(Debug, Clone)]
pub struct ServerStore {
    db: Arc<redb::Database>,
}

fn err(e: impl std::fmt::Display) -> Error {
    Error::io(format!("server store: {e}"))
}

impl ServerStore {
    /// Opens or creates the store in `dir`.
    pub fn open(dir: &Path) -> Result<ServerStore> {
        let db = redb::Database::create(dir.join(SERVER_DB)).map_err(err)?;
        let txn = db.begin_write().map_err(err)?;
        for table in [USERS, ROLES, TOKENS, TASKS] {
            txn.open_table(table).map_err(err)?;
        }
        txn.commit().map_err(err)?;
        Ok(ServerStore { db: Arc::new(db) })
    }

    /// Reads one record.
    pub fn get<T: DeserializeOwned>(&self, table: TableDefinition<&str, &[u8]>, key: &str) -> Result<Option<T>> {
        let txn = self.db.begin_read().map_err(err)?;
        let t = txn.open_table(table).map_err(err)?;
        match t.get(key).map_err(err)? {
            Some(v) => Ok(Some(serde_json::from_slice(v.value()).map_err(err)?)),
            None => Ok(None),
        }
    }

    /// Reads every record of a table, sorted by key.
    pub fn list<T: DeserializeOwned>(&self, table: TableDefinition<&str, &[u8]>) -> Result<Vec<(String, T)>> {
        let txn = self.db.begin_read().map_err(err)?;
        let t = txn.open_table(table).map_err(err)?;
        let mut out = Vec::new();
        for entry in t.iter().map_err(err)? {
            let (k, v) = entry.map_err(err)?;
            out.push((k.value().to_owned(), serde_json::from_slice(v.value()).map_err(err)?));
        }
        Ok(out)
    }

    /// Writes one record.
    pub fn put<T: Serialize>(&self, table: TableDefinition<&str, &[u8]>, key: &str, value: &T) -> Result<()> {
        let bytes = serde_json::to_vec(value).map_err(err)?;
        let txn = self.db.begin_write().map_err(err)?;
        txn.open_table(table).map_err(err)?.insert(key, bytes.as_slice()).map_err(err)?;
        txn.commit().map_err(err)
    }

    /// Removes one record; returns whether it existed.
    pub fn remove(&self, table: TableDefinition<&str, &[u8]>, key: &str) -> Result<bool> {
        let txn = self.db.begin_write().map_err(err)?;
        let existed = txn.open_table(table).map_err(err)?.remove(key).map_err(err)?.is_some();
        txn.commit().map_err(err)?;
        Ok(existed)
    }

    /// Removes every record for which `drop` is true.
    pub fn remove_where<T: DeserializeOwned>(
        &self,
        table: TableDefinition<&str, &[u8]>,
        mut drop: impl FnMut(&str, &T) -> bool,
    ) -> Result<()> {
        let txn = self.db.begin_write().map_err(err)?;
        {
            let mut t = txn.open_table(table).map_err(err)?;
            t.retain(|k, v| serde_json::from_slice::<T>(v).map(|rec| !drop(k, &rec)).unwrap_or(true)).map_err(err)?;
        }
        txn.commit().map_err(err)
    }
}
