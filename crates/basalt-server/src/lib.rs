//! basalt's server: the REST API over a storage backend, with users, roles and background tasks.
//!
//! Wire shapes (JSON) and HTTP status codes live here and nowhere else. Every backend call runs on tokio's
//! blocking pool, so the async runtime never waits on the disk.

pub mod alerts;
pub mod api;
pub mod audit;
pub mod auth;
pub mod background;
pub mod capacity;
#[cfg(feature = "ceph")]
pub mod ceph;
pub mod datapath;
pub mod error;
pub mod listen;
pub mod nbd_access;
pub mod perf;
mod serve;
pub mod state;
pub mod status;
pub mod store;
pub mod tasks;
mod trash_schedule;
mod ui;

pub use listen::ApiOptions;
pub use serve::{CephConfig, ServeConfig, ServeError, serve};
