//! basalt's embedded storage engine: block images with Ceph RBD semantics on a local disk.
//!
//! Images are striped into objects as in RBD; data lives in per-layer sparse files at 4 KiB block granularity and
//! metadata (pools, images, snapshots, bitmaps) in a redb store. See `docs/FORMAT.md` for the layout and the crash
//! analysis, and `docs/ARCHITECTURE.md` for where this sits.
//!
//! The engine is synchronous and knows nothing of HTTP, JSON, NBD or async runtimes.

mod bitcache;
pub mod checksum;
mod deferred;
mod engine;
pub mod fsck;
mod integrity;
mod journal;
mod layer;
pub mod layout;
mod records;
mod recover;
mod scrub;
mod segments;
pub mod sim;
mod space;
mod state;
pub mod upgrade;
pub mod vfs;

#[cfg(test)]
mod test_alloc;

pub use engine::{DB_FILE, DEFAULT_METADATA_CACHE, Engine, EngineOptions, LAYERS_DIR, LOCK_FILE};
pub use journal::{JOURNAL_DIR, JournalStats};
pub use records::FORMAT_VERSION;
pub use segments::DEFAULT_SEGMENT_SHIFT;
pub use space::{RESERVE_FILE, ReserveStatus};
