//! The write-ahead journal: every change of a layer is logged here before it is acknowledged, flushes are one
//! shared `fdatasync` of the journal (group commit), and checkpoints move the bitmaps to the metadata store in the
//! background. `docs/FORMAT.md` ("The journal") describes the format and the crash analysis this code implements.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use basalt_core::{Error, FlushDone, Result};

use crate::layer::{Layer, mutex_lock};
use crate::layout::BLOCK_SIZE;
use crate::vfs::{Vfs, VfsFile};

/// The journal's directory inside the data directory.
pub const JOURNAL_DIR: &str = "journal";
/// Bytes at the start of each journal file taken by its header.
pub(crate) const HEADER_LEN: u64 = 4096;
const HEADER_MAGIC: &[u8; 8] = b"BSLTJNL\0";
const HEADER_VERSION: u32 = 1;
const RECORD_MAGIC: u32 = 0x4c4a_5342;
/// Bytes of a record before its body.
const RECORD_HEAD: usize = 56;
/// Bytes of the trailing checksum.
const RECORD_TAIL: usize = 4;
/// Writes shorter than this carry their bytes in the journal (kind 1); longer ones a checksum per block (kind 2).
pub(crate) const INLINE_MAX: usize = 64 * 1024;
/// What the checkpoint thread does next ([`Journal::wait_checkpoint_due`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Due {
    /// A checkpoint.
    Checkpoint,
    /// Nothing was due for a while: housekeeping.
    Idle,
    /// The store closes (or stopped after a failure).
    Stop,
}

/// The default size of each of the two journal files.
pub const DEFAULT_FILE_SIZE: u64 = 64 << 20;

/// What a record says about its blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// The blocks hold the bytes the record carries.
    Data = 1,
    /// The blocks hold bytes written to the layer file, whose crc32c the record carries.
    DataCrc = 2,
    /// The blocks read as zeros.
    Zero = 3,
    /// The blocks have no state in the layer.
    Absent = 4,
    /// Every kind-2 record up to `covers` has its bytes on disk.
    Mark = 5,
    /// The object's blocks may change in the layer file before a checkpoint syncs them: replay recomputes their
    /// checksums from the file (docs/FORMAT.md, "Checksums").
    Dirty = 6,
}

impl Kind {
    fn from_u8(v: u8) -> Option<Kind> {
        Some(match v {
            1 => Kind::Data,
            2 => Kind::DataCrc,
            3 => Kind::Zero,
            4 => Kind::Absent,
            5 => Kind::Mark,
            6 => Kind::Dirty,
            _ => return None,
        })
    }
}

/// Where a record's change applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Place {
    pub layer: u64,
    pub object: u64,
    /// Layer file offset of the first block.
    pub file_off: u64,
    /// First block in the object.
    pub first_blk: u32,
    /// Number of blocks.
    pub blocks: u32,
}

/// A record's body.
pub(crate) enum Body<'a> {
    /// Kind 1: the blocks' bytes.
    Bytes(&'a [u8]),
    /// Kind 2: the blocks' checksums.
    Crcs(&'a [u32]),
    /// Kinds 3 and 4.
    Empty,
    /// Kind 5.
    Covers(u64),
}

/// A record with seq 0 and no checksum yet: [`seal`] puts both in once the seq is known.
fn encode(kind: Kind, place: &Place, body: &Body<'_>) -> Vec<u8> {
    let body_len = match body {
        Body::Bytes(b) => b.len(),
        Body::Crcs(c) => c.len() * 4,
        Body::Empty => 0,
        Body::Covers(_) => 8,
    };
    let total = RECORD_HEAD + body_len + RECORD_TAIL;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&RECORD_MAGIC.to_le_bytes());
    out.extend_from_slice(&(total as u32).to_le_bytes());
    out.extend_from_slice(&0u64.to_le_bytes());
    out.extend_from_slice(&[kind as u8, 0, 0, 0]);
    out.extend_from_slice(&place.blocks.to_le_bytes());
    out.extend_from_slice(&place.layer.to_le_bytes());
    out.extend_from_slice(&place.object.to_le_bytes());
    out.extend_from_slice(&place.file_off.to_le_bytes());
    out.extend_from_slice(&place.first_blk.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    match body {
        Body::Bytes(b) => out.extend_from_slice(b),
        Body::Crcs(c) => c.iter().for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
        Body::Empty => {}
        Body::Covers(s) => out.extend_from_slice(&s.to_le_bytes()),
    }
    out.extend_from_slice(&[0; RECORD_TAIL]);
    out
}

/// Puts `seq` and the trailing crc32c (of every byte before it) into a record from [`encode`]: one pass with the
/// CPU's crc32 instruction (about 0.3 us for a 4 KiB body). Checksumming the body outside the journal's lock and
/// combining it with the head's under it cost more: `crc32c_combine` took 3% of the server's CPU under 16 flushing
/// clients, all of it under the lock.
fn seal(bytes: &mut [u8], seq: u64) {
    bytes[8..16].copy_from_slice(&seq.to_le_bytes());
    let end = bytes.len() - RECORD_TAIL;
    let crc = crc32c::crc32c(&bytes[..end]);
    bytes[end..].copy_from_slice(&crc.to_le_bytes());
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(w)
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

/// Where [`Journal::log_with`] put a record.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Logged {
    pub seq: u64,
    /// Which journal file (0 or 1).
    pub file: usize,
    /// Offset of the record's body in that file.
    pub body_at: u64,
}

/// A valid record read back from a journal file.
#[derive(Debug, Clone)]
pub(crate) struct ReadRecord {
    pub seq: u64,
    pub kind: Kind,
    pub place: Place,
    /// Which journal file it is in.
    pub file: usize,
    /// Offset of its body in that file.
    pub body_off: u64,
    /// Kind 2: the checksums; kind 5: `covers` in the first entry's place (see `covers`).
    pub crcs: Vec<u32>,
    pub covers: u64,
}

/// Reads a journal file's header boot id and its valid records (stopping at the first invalid one).
pub(crate) fn read_file(file: &dyn VfsFile, index: usize) -> Result<(Option<String>, Vec<ReadRecord>)> {
    let len = file.len()?;
    if len < HEADER_LEN {
        return Ok((None, Vec::new()));
    }
    let mut header = vec![0u8; HEADER_LEN as usize];
    file.read_at(&mut header, 0)?;
    let boot = if &header[..8] == HEADER_MAGIC && le_u32(&header, 8) == HEADER_VERSION {
        let n = (le_u32(&header, 12) as usize).min(HEADER_LEN as usize - 16);
        Some(String::from_utf8_lossy(&header[16..16 + n]).into_owned())
    } else {
        None
    };
    let mut records = Vec::new();
    let mut at = HEADER_LEN;
    // Read in large chunks; records straddle chunk ends, so keep a window.
    const CHUNK: usize = 1 << 20;
    let mut window: Vec<u8> = Vec::new();
    let mut window_start = at;
    let mut prev_seq: Option<u64> = None;
    loop {
        let need_head = (at - window_start) as usize + RECORD_HEAD;
        if window.len() < need_head {
            if window_start + window.len() as u64 >= len {
                break;
            }
            let mut chunk = vec![0u8; CHUNK.min((len - window_start - window.len() as u64) as usize)];
            file.read_at(&mut chunk, window_start + window.len() as u64)?;
            window.extend_from_slice(&chunk);
            continue;
        }
        let rel = (at - window_start) as usize;
        let head = &window[rel..rel + RECORD_HEAD];
        if le_u32(head, 0) != RECORD_MAGIC {
            break;
        }
        let total = le_u32(head, 4) as usize;
        if total < RECORD_HEAD + RECORD_TAIL || at + total as u64 > len {
            break;
        }
        if window.len() < rel + total {
            let mut chunk =
                vec![
                    0u8;
                    (rel + total - window.len()).max(CHUNK).min((len - window_start - window.len() as u64) as usize)
                ];
            file.read_at(&mut chunk, window_start + window.len() as u64)?;
            window.extend_from_slice(&chunk);
            continue;
        }
        let rec = &window[rel..rel + total];
        if crc32c::crc32c(&rec[..total - RECORD_TAIL]) != le_u32(rec, total - RECORD_TAIL) {
            break;
        }
        let seq = le_u64(rec, 8);
        if prev_seq.is_some_and(|p| seq != p + 1) {
            break;
        }
        let Some(kind) = Kind::from_u8(rec[16]) else { break };
        let place = Place {
            blocks: le_u32(rec, 20),
            layer: le_u64(rec, 24),
            object: le_u64(rec, 32),
            file_off: le_u64(rec, 40),
            first_blk: le_u32(rec, 48),
        };
        let body = &rec[RECORD_HEAD..total - RECORD_TAIL];
        let expected = match kind {
            Kind::Data => place.blocks as usize * BLOCK_SIZE as usize,
            Kind::DataCrc => place.blocks as usize * 4,
            Kind::Zero | Kind::Absent | Kind::Dirty => 0,
            Kind::Mark => 8,
        };
        if body.len() != expected {
            break;
        }
        let crcs =
            if kind == Kind::DataCrc { body.chunks_exact(4).map(|c| le_u32(c, 0)).collect() } else { Vec::new() };
        let covers = if kind == Kind::Mark { le_u64(body, 0) } else { 0 };
        records.push(ReadRecord { seq, kind, place, file: index, body_off: at + RECORD_HEAD as u64, crcs, covers });
        prev_seq = Some(seq);
        at += total as u64;
        if rel + total > CHUNK * 2 {
            // Drop what was consumed so the window stays small.
            window.drain(..rel + total);
            window_start = at;
        }
    }
    Ok((boot, records))
}

/// Writes a journal file's header with the given boot id.
pub(crate) fn write_header(file: &dyn VfsFile, boot_id: &str) -> Result<()> {
    let mut header = vec![0u8; HEADER_LEN as usize];
    header[..8].copy_from_slice(HEADER_MAGIC);
    header[8..12].copy_from_slice(&HEADER_VERSION.to_le_bytes());
    let boot = boot_id.as_bytes();
    let n = boot.len().min(HEADER_LEN as usize - 16);
    header[12..16].copy_from_slice(&(n as u32).to_le_bytes());
    header[16..16 + n].copy_from_slice(&boot[..n]);
    file.write_at(&header, 0)?;
    Ok(())
}

/// Paths of the two journal files.
pub(crate) fn file_paths(root: &Path) -> [std::path::PathBuf; 2] {
    let dir = root.join(JOURNAL_DIR);
    [dir.join("0.log"), dir.join("1.log")]
}

/// Creates (or completes) the journal files of a store: the directory, two preallocated files, their headers.
pub(crate) fn create_files(vfs: &dyn Vfs, root: &Path, file_size: u64) -> Result<[Arc<dyn VfsFile>; 2]> {
    let dir = root.join(JOURNAL_DIR);
    vfs.create_dir_all(&dir)?;
    let [p0, p1] = file_paths(root);
    let f0 = vfs.open(&p0, true)?;
    let f1 = vfs.open(&p1, true)?;
    for f in [&f0, &f1] {
        let len = f.len()?;
        if len < file_size {
            f.allocate(file_size)?;
            // Then zeros: `fallocate` alone leaves *unwritten* extents on ext4 and XFS, and the first `fdatasync`
            // after each append into one also commits the extent's conversion in the file system's journal (a flush
            // after a 4 KiB append cost 1.7 times as much: 4,400 against 7,400 per second on the development disk).
            // Zeros make the first turn as cheap as the later ones, for 2 x 64 MiB written once.
            crate::vfs::write_zeros(f.as_ref(), len, file_size)?;
        }
        f.sync_data()?;
        // Every byte is allocated, so short appends can be copies into the page cache ([`Journal::append`]). Only a
        // hint: a file not mapped (not on ext4, or no address space left) takes them through `pwrite`.
        let _ = f.map_writes(file_size);
    }
    vfs.sync_dir(&dir)?;
    vfs.sync_dir(root)?;
    Ok([f0, f1])
}

#[derive(Debug)]
struct Inner {
    active: usize,
    /// Next append offset in the active file.
    offset: u64,
    /// The last seq appended.
    last_seq: u64,
    /// The last seq appended to each file in its current turn (0 when it holds none).
    file_last: [u64; 2],
    /// Every record up to this seq is durable.
    synced: u64,
    /// Every kind-2 record up to this seq has its bytes on disk (a durable mark says so).
    marked: u64,
    /// The highest kind-2 seq a waiting flusher needs marked: the leader of the next sync covers it, so flushers of
    /// kind-2 data share one round of layer syncs and mark.
    mark_wanted: u64,
    /// Records up to this seq are in the metadata store (checkpointed).
    applied: u64,
    syncing: bool,
    failed: Option<String>,
    checkpoint_wanted: bool,
    /// Something besides records waits for a checkpoint to be written (checksum error counts): the next background
    /// checkpoint is due at the interval even with no record pending.
    save_wanted: bool,
    shutdown: bool,
    last_checkpoint: Instant,
    /// Flushes that no thread waits for ([`Journal::sync_later`]), in the order they came.
    waiters: Vec<Waiter>,
    /// The sync thread runs ([`Journal::start_sync_thread`]): `sync_later` takes waiters only while it does.
    sync_thread: bool,
}

/// A flush handed to the sync thread: `done` is called once every record up to `target` is durable and every kind-2
/// record up to `large` is marked.
struct Waiter {
    target: u64,
    large: u64,
    done: FlushDone,
}

impl std::fmt::Debug for Waiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Waiter").field("target", &self.target).field("large", &self.large).finish_non_exhaustive()
    }
}

impl Inner {
    fn covers(&self, target: u64, large: u64) -> bool {
        self.synced >= target && self.marked >= large
    }
}

/// The journal of a store.
pub(crate) struct Journal {
    files: [Arc<dyn VfsFile>; 2],
    file_size: u64,
    interval: Option<Duration>,
    inner: Mutex<Inner>,
    /// Wakes callers of [`Journal::sync_through`] waiting for a leader's sync.
    cond: Condvar,
    /// Wakes the sync thread: async flushes wait, or a sync ended.
    sync_cond: Condvar,
    /// Wakes the checkpoint thread. Apart from `cond`: a thread woken at every group commit it has no use for cost a
    /// context switch per flush.
    checkpoint_cond: Condvar,
    /// Shared by every log-and-apply section; taken exclusively by a checkpoint for an instant.
    freeze: RwLock<()>,
    /// Layers changed since the last checkpoint (bitmaps or file bytes).
    changed: Mutex<HashMap<u64, Arc<Layer>>>,
    /// Layers the running checkpoint took from `changed`: until it ends, the metadata store is behind their bitmaps
    /// and their layer files behind their deferred blocks, so they are still the ones to use (taken after `changed`).
    checkpointing: Mutex<HashMap<u64, Arc<Layer>>>,
    /// Layers with kind-2 bytes not yet synced.
    large: Mutex<HashMap<u64, Arc<Layer>>>,
    /// Runs a checkpoint of the store (set once the store exists).
    checkpointer: std::sync::OnceLock<Checkpointer>,
    /// The metadata reserve, which admits data writes that need new blocks (set once the store exists).
    space: std::sync::OnceLock<Arc<crate::space::MetaReserve>>,
    /// Layer file changes in flight, by overwrite epoch (docs/FORMAT.md, "The hard part").
    overwrites: Mutex<Overwrites>,
    overwrites_done: Condvar,
    /// Layer files bypass the page cache ([`Journal::set_direct_io`]).
    direct_io: AtomicBool,
    /// The counters of [`JournalStats`].
    syncs: AtomicU64,
    dirty_records: AtomicU64,
    checkpoints: AtomicU64,
    byte_records: AtomicU64,
    /// When the journal was made, and the millisecond after it in which a sync someone waited for (a flush, or an
    /// overwrite's dirty record) last ran (0: none yet): see [`Journal::append`].
    born: Instant,
    flushed_ms: AtomicU64,
}

/// Records up to this size may be appended as copies into the journal file's map ([`Journal::append`]); larger ones
/// (a block's bytes) start a page of their own each time, and a store into each would fault.
const MAPPED_RECORD_MAX: usize = 1024;

/// Appends go through `pwrite` for this long after a sync someone waited for ([`Journal::append`]).
const FLUSHING_WINDOW: Duration = Duration::from_secs(1);

/// The overwrite epoch (raised by every checkpoint's freeze), how many layer file changes are in flight in each, and
/// the dirty marks that let them change bytes the metadata store calls data (docs/FORMAT.md, "The hard part").
#[derive(Debug, Default)]
struct Overwrites {
    epoch: u64,
    in_flight: std::collections::BTreeMap<u64, u64>,
    /// `(layer, object)` to its mark.
    marks: HashMap<(u64, u64), Mark>,
    /// Rows of `dirty_objects` whose marks are gone (dropped from memory, or of deleted layers): the next checkpoint
    /// deletes them.
    orphan_rows: Vec<(u64, u64)>,
}

/// A dirty mark: the object may be overwritten in place without a new dirty record in the epochs it counts in.
#[derive(Debug, Clone, Copy)]
struct Mark {
    /// The epoch of its dirty record, or of the last overwrite made under it.
    label: u64,
    /// The epoch in which a checkpoint's row makes it count (0: none yet).
    carried: u64,
    /// Its row is in `dirty_objects` (or in the transaction of the checkpoint that set `carried`).
    stored: bool,
}

impl Mark {
    fn counts_in(&self, epoch: u64) -> bool {
        self.label == epoch || self.carried == epoch
    }
}

/// Marks held in memory before those that do not count in the current epoch are forgotten.
const MARKS_MAX: usize = 65_536;

/// What a checkpoint does to the `dirty_objects` table: rows to insert and rows to delete.
#[derive(Debug, Default)]
pub(crate) struct MarkRows {
    pub insert: Vec<(u64, u64)>,
    pub delete: Vec<(u64, u64)>,
}

/// Counters of the journal's work since the store opened.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct JournalStats {
    /// `fdatasync`s of the journal files (group commits and file switches).
    pub syncs: u64,
    /// Dirty-object records appended (each one made durable before its overwrite).
    pub dirty_records: u64,
    /// Checkpoints committed.
    pub checkpoints: u64,
    /// Records that carry their blocks' bytes (kind 1).
    pub byte_records: u64,
}

/// How the journal asks its store for a checkpoint.
pub(crate) type Checkpointer = Box<dyn Fn() -> Result<()> + Send + Sync>;

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal").field("file_size", &self.file_size).finish_non_exhaustive()
    }
}

/// Adds `layer` (whose id is `id`) to a set of layers (`changed`, `large`) unless its flag for that set says it is
/// there already: the flag spares the set's lock on every write. The flag is set under the set's lock, in the same
/// section as the insert, so a note that finds it set returns with the layer in the set, or in it as soon as that
/// lock is free, before any drain can take the set. (Set before the lock was taken, a note that found it set while
/// the first note still waited for the lock returned with the layer in neither: a drain in between left out a
/// change made before the note, for kind-2 bytes a mark that claimed them without a sync.)
fn note<L>(set: &Mutex<HashMap<u64, Arc<L>>>, flag: &AtomicBool, id: u64, layer: &Arc<L>) {
    if flag.load(Ordering::SeqCst) {
        return;
    }
    let mut set = mutex_lock(set);
    if !flag.swap(true, Ordering::SeqCst) {
        set.insert(id, layer.clone());
    }
}

/// Takes every layer out of a set whose lock the caller holds, clearing their flags for it first, while they are
/// still in the set: a [`note`] that came before a flag was cleared is covered by whoever took the set (the change
/// it registers was made before), and one that comes after sets the flag again and inserts the layer once the lock
/// is free. Cleared after the drain instead, a note between the two would find the flag set and be lost: a layer
/// file's change not synced by any checkpoint, or kind-2 bytes not synced before a mark that claims them.
fn drain_noted<L>(set: &mut HashMap<u64, Arc<L>>, flag: impl Fn(&L) -> &AtomicBool) -> Vec<Arc<L>> {
    for layer in set.values() {
        flag(layer).store(false, Ordering::SeqCst);
    }
    set.drain().map(|(_, l)| l).collect()
}

fn lock_inner(m: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Journal {
    /// A journal over opened files whose records up to `applied` are checkpointed and whose seqs so far end at
    /// `last_seq`. Both files start their turn empty; the headers must already carry this boot's id.
    pub fn new(
        files: [Arc<dyn VfsFile>; 2],
        file_size: u64,
        interval: Option<Duration>,
        last_seq: u64,
        applied: u64,
    ) -> Journal {
        Journal {
            files,
            file_size,
            interval,
            inner: Mutex::new(Inner {
                active: 0,
                offset: HEADER_LEN,
                last_seq,
                file_last: [0, 0],
                synced: last_seq,
                marked: last_seq,
                mark_wanted: 0,
                applied,
                syncing: false,
                failed: None,
                checkpoint_wanted: false,
                save_wanted: false,
                shutdown: false,
                last_checkpoint: Instant::now(),
                waiters: Vec::new(),
                sync_thread: false,
            }),
            cond: Condvar::new(),
            sync_cond: Condvar::new(),
            checkpoint_cond: Condvar::new(),
            freeze: RwLock::new(()),
            changed: Mutex::new(HashMap::new()),
            checkpointing: Mutex::new(HashMap::new()),
            large: Mutex::new(HashMap::new()),
            checkpointer: std::sync::OnceLock::new(),
            space: std::sync::OnceLock::new(),
            overwrites: Mutex::new(Overwrites::default()),
            overwrites_done: Condvar::new(),
            direct_io: AtomicBool::new(false),
            syncs: AtomicU64::new(0),
            dirty_records: AtomicU64::new(0),
            checkpoints: AtomicU64::new(0),
            byte_records: AtomicU64::new(0),
            born: Instant::now(),
            flushed_ms: AtomicU64::new(0),
        }
    }

    /// Notes that a sync someone waits for (a flush, or an overwrite's dirty record) is running now.
    fn note_flush_sync(&self) {
        let ms = u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.flushed_ms.store(ms.saturating_add(1), Ordering::Relaxed);
    }

    /// Whether a sync someone waited for ran within [`FLUSHING_WINDOW`].
    fn flushing(&self) -> bool {
        let last = self.flushed_ms.load(Ordering::Relaxed);
        last != 0 && self.born.elapsed().saturating_sub(Duration::from_millis(last - 1)) < FLUSHING_WINDOW
    }

    /// Says that layer files bypass the page cache ([`crate::vfs::Vfs::direct_io`]): each write of a deferred
    /// block then waits for the device, so the layers issue a batch of them from several threads at once.
    pub fn set_direct_io(&self, direct: bool) {
        self.direct_io.store(direct, Ordering::Relaxed);
    }

    /// See [`Journal::set_direct_io`].
    pub fn direct_io(&self) -> bool {
        self.direct_io.load(Ordering::Relaxed)
    }

    /// Sets the metadata reserve that data writes needing new blocks must pass.
    pub fn set_space(&self, reserve: Arc<crate::space::MetaReserve>) {
        let _ = self.space.set(reserve);
    }

    /// True while the metadata reserve is low: data writes that need new blocks must ask [`Journal::admit_data`].
    pub fn space_low(&self) -> bool {
        self.space.get().is_some_and(|r| r.is_low())
    }

    /// Admits a data write that needs new blocks, or refuses it with ENOSPC while the metadata reserve is low.
    pub fn admit_data(&self) -> Result<()> {
        self.space.get().map_or(Ok(()), |r| r.admit_data())
    }

    /// The current overwrite epoch.
    pub fn overwrite_epoch(&self) -> u64 {
        mutex_lock(&self.overwrites).epoch
    }

    /// Counts a change of `objects` of `layer` as in flight when every one of them has a mark that counts in the
    /// current epoch, and labels those marks with it; returns the epoch (pass it to [`Journal::leave_overwrite`]).
    /// Otherwise enters nothing and returns the objects that need a dirty record.
    pub fn enter_overwrite(
        &self,
        layer: u64,
        objects: std::ops::RangeInclusive<u64>,
    ) -> std::result::Result<u64, Vec<u64>> {
        let mut g = mutex_lock(&self.overwrites);
        let epoch = g.epoch;
        let missing: Vec<u64> =
            objects.clone().filter(|&o| !g.marks.get(&(layer, o)).is_some_and(|m| m.counts_in(epoch))).collect();
        if !missing.is_empty() {
            return Err(missing);
        }
        for o in objects {
            if let Some(m) = g.marks.get_mut(&(layer, o)) {
                m.label = epoch;
            }
        }
        *g.in_flight.entry(epoch).or_default() += 1;
        Ok(epoch)
    }

    /// Sets the marks of `objects` of `layer`, whose dirty records were made durable after the epoch was read as
    /// `label`.
    pub fn set_marks(&self, layer: u64, objects: &[u64], label: u64) {
        let mut g = mutex_lock(&self.overwrites);
        if g.marks.len() + objects.len() > MARKS_MAX {
            // Marks that do not count now only save a record later; their rows go with the next checkpoint. A mark
            // labelled with the epoch before the current one stays too: the checkpoint that froze in that epoch may
            // not have visited the marks yet, and it keeps (and carries over) such a mark because an overwrite made
            // under it may log its record after that freeze, so that checkpoint does not sync its layer. Forgotten,
            // its row would be deleted by that very checkpoint, and nothing would make the next open recompute the
            // object's crcs.
            let epoch = g.epoch;
            let Overwrites { marks, orphan_rows, .. } = &mut *g;
            marks.retain(|&key, m| {
                let keep = m.counts_in(epoch) || m.label + 1 >= epoch;
                if !keep && m.stored {
                    orphan_rows.push(key);
                }
                keep
            });
        }
        for &o in objects {
            let m = g.marks.entry((layer, o)).or_insert(Mark { label, carried: 0, stored: false });
            m.label = m.label.max(label);
        }
    }

    /// Forgets the marks of deleted layers; their rows go with the next checkpoint.
    fn forget_marks(&self, layers: &[u64]) {
        let mut g = mutex_lock(&self.overwrites);
        let Overwrites { marks, orphan_rows, .. } = &mut *g;
        marks.retain(|&(layer, object), m| {
            let keep = !layers.contains(&layer);
            if !keep && m.stored {
                orphan_rows.push((layer, object));
            }
            keep
        });
    }

    /// A checkpoint that raised the epoch from `frozen`, once every change in flight in it or before has left:
    /// keeps the marks labelled `frozen` or later (they count in the next epoch through their rows) and drops the
    /// others. With `drop_all` (the store closes, nothing is in flight) every mark is dropped. Returns the rows to
    /// write in the checkpoint's transaction.
    pub fn visit_marks(&self, frozen: u64, drop_all: bool) -> MarkRows {
        let mut g = mutex_lock(&self.overwrites);
        let Overwrites { marks, orphan_rows, .. } = &mut *g;
        let mut rows = MarkRows { insert: Vec::new(), delete: std::mem::take(orphan_rows) };
        marks.retain(|&key, m| {
            if drop_all || m.label < frozen {
                if m.stored {
                    rows.delete.push(key);
                }
                return false;
            }
            m.carried = frozen + 1;
            if !m.stored {
                m.stored = true;
                rows.insert.push(key);
            }
            true
        });
        rows
    }

    /// After a checkpoint's transaction failed: rows it would have inserted are not stored, and rows it would have
    /// deleted are left for the next one.
    pub fn rows_not_written(&self, rows: MarkRows) {
        let mut g = mutex_lock(&self.overwrites);
        for key in rows.insert {
            if let Some(m) = g.marks.get_mut(&key) {
                m.stored = false;
            }
        }
        g.orphan_rows.extend(rows.delete);
    }

    /// The journal's counters since the store opened.
    pub fn stats(&self) -> JournalStats {
        JournalStats {
            syncs: self.syncs.load(Ordering::Relaxed),
            dirty_records: self.dirty_records.load(Ordering::Relaxed),
            checkpoints: self.checkpoints.load(Ordering::Relaxed),
            byte_records: self.byte_records.load(Ordering::Relaxed),
        }
    }

    /// Checkpoints committed since the store opened.
    pub fn checkpoint_count(&self) -> u64 {
        self.checkpoints.load(Ordering::Relaxed)
    }

    /// Counts dirty-object records appended.
    pub fn count_dirty_records(&self, n: u64) {
        self.dirty_records.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts a committed checkpoint.
    pub fn count_checkpoint(&self) {
        self.checkpoints.fetch_add(1, Ordering::Relaxed);
    }

    /// Ends a change counted by [`Journal::enter_overwrite`].
    pub fn leave_overwrite(&self, epoch: u64) {
        let mut g = mutex_lock(&self.overwrites);
        if let Some(n) = g.in_flight.get_mut(&epoch) {
            *n -= 1;
            if *n == 0 {
                g.in_flight.remove(&epoch);
                self.overwrites_done.notify_all();
            }
        }
    }

    /// Raises the overwrite epoch (a checkpoint, inside its freeze); returns the new one.
    pub fn bump_overwrite_epoch(&self) -> u64 {
        let mut g = mutex_lock(&self.overwrites);
        g.epoch += 1;
        g.epoch
    }

    /// Waits until no change is in flight in an epoch older than `epoch`.
    pub fn wait_overwrites_before(&self, epoch: u64) {
        let mut g = mutex_lock(&self.overwrites);
        while g.in_flight.range(..epoch).next().is_some() {
            g = self.overwrites_done.wait(g).unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    /// Every record up to this seq is in the metadata store.
    pub fn applied(&self) -> u64 {
        lock_inner(&self.inner).applied
    }

    /// Sets how the journal asks for a checkpoint when it runs out of space.
    pub fn set_checkpointer(&self, checkpointer: Checkpointer) {
        let _ = self.checkpointer.set(checkpointer);
    }

    fn run_checkpoint(&self) -> Result<()> {
        match self.checkpointer.get() {
            Some(run) => run(),
            None => Err(Error::io("the journal is full and nothing can checkpoint it")),
        }
    }

    fn failed_error(why: &str) -> Error {
        Error::io(format!("the journal stopped after an i/o error ({why}): restart basalt to recover from it"))
    }

    /// Refuses work after a journal failure.
    pub fn check_healthy(&self) -> Result<()> {
        match &lock_inner(&self.inner).failed {
            Some(why) => Err(Self::failed_error(why)),
            None => Ok(()),
        }
    }

    /// Stops the journal after a failure elsewhere that makes acknowledging more writes or flushes unsafe (a failed
    /// sync of a layer file): every later record, flush and queued async flush fails.
    pub fn stop(&self, why: &str) {
        let ready = {
            let mut g = lock_inner(&self.inner);
            self.fail(&mut g, &why);
            Self::take_ready(&mut g)
        };
        Self::call_back(ready);
    }

    fn fail(&self, g: &mut Inner, err: &dyn std::fmt::Display) {
        g.failed.get_or_insert_with(|| err.to_string());
        self.cond.notify_all();
        self.sync_cond.notify_all();
        self.checkpoint_cond.notify_all();
    }

    /// Appends a record and runs `apply` (the in-memory change it describes) before any checkpoint can start;
    /// returns the record's seq.
    pub fn log(&self, kind: Kind, place: &Place, body: &Body<'_>, apply: impl FnOnce()) -> Result<u64> {
        self.log_with(kind, place, body, |_| apply())
    }

    /// [`Journal::log`], telling `apply` where the record went (a deferred overwrite reads its bytes back from
    /// there until a checkpoint applies them).
    pub fn log_with(&self, kind: Kind, place: &Place, body: &Body<'_>, apply: impl FnOnce(Logged)) -> Result<u64> {
        let mut bytes = encode(kind, place, body);
        if bytes.len() as u64 > self.file_size - HEADER_LEN {
            return Err(Error::io(format!(
                "a journal record of {} bytes does not fit a journal file of {} bytes",
                bytes.len(),
                self.file_size
            )));
        }
        loop {
            let freeze = self.freeze.read().unwrap_or_else(std::sync::PoisonError::into_inner);
            let mut g = lock_inner(&self.inner);
            if let Some(why) = &g.failed {
                return Err(Self::failed_error(why));
            }
            if g.offset + bytes.len() as u64 > self.file_size {
                let other = 1 - g.active;
                if g.file_last[other] > g.applied {
                    // The other file still holds records the metadata store lacks: checkpoint first (this thread
                    // holds no lock a checkpoint takes).
                    drop(g);
                    drop(freeze);
                    self.run_checkpoint()?;
                    continue;
                }
                // Switch files; the one that stops being active is synced first, so a flush syncs one file.
                let active = g.active;
                if let Err(e) = self.files[active].sync_data() {
                    self.fail(&mut g, &e);
                    return Err(Self::failed_error(&e.to_string()));
                }
                self.syncs.fetch_add(1, Ordering::Relaxed);
                g.synced = g.synced.max(g.last_seq);
                g.active = other;
                g.offset = HEADER_LEN;
                g.file_last[other] = 0;
            }
            let logged = self.append(&mut g, kind, &mut bytes)?;
            drop(g);
            apply(logged);
            drop(freeze);
            return Ok(logged.seq);
        }
    }

    /// [`Journal::log_with`] for a caller that must not wait (an event loop): appends only if the journal's locks
    /// are free and the record fits the active file, so no checkpoint, file switch or sync stands in the way.
    /// `None` means nothing was appended.
    pub fn try_log_with(
        &self,
        kind: Kind,
        place: &Place,
        body: &Body<'_>,
        apply: impl FnOnce(Logged),
    ) -> Option<Result<u64>> {
        let mut bytes = encode(kind, place, body);
        let freeze = self.freeze.try_read().ok()?;
        let mut g = self.inner.try_lock().ok()?;
        if g.failed.is_some() || g.offset + bytes.len() as u64 > self.file_size {
            return None;
        }
        let logged = match self.append(&mut g, kind, &mut bytes) {
            Ok(logged) => logged,
            Err(e) => return Some(Err(e)),
        };
        drop(g);
        apply(logged);
        drop(freeze);
        Some(Ok(logged.seq))
    }

    /// Seals and writes a record at the end of the active file, which has room for it.
    ///
    /// A short record is copied into the file's map ([`VfsFile::write_mapped`]) unless a sync someone waited for (a
    /// flush, or an overwrite's dirty record) ran lately: a `pwrite` of 128 bytes cost more CPU than anything else
    /// in a write to a new block, but after a store into the map the next `fdatasync` costs milliseconds on ext4.
    /// So a client that flushes gets `pwrite`s, and one that does not (or has not for a second) gets copies; the
    /// first flush after copies pays once.
    fn append(&self, g: &mut Inner, kind: Kind, bytes: &mut [u8]) -> Result<Logged> {
        let seq = g.last_seq + 1;
        seal(bytes, seq);
        let file = &self.files[g.active];
        let written = if bytes.len() <= MAPPED_RECORD_MAX && !self.flushing() {
            file.write_mapped(bytes, g.offset)
        } else {
            file.write_at(bytes, g.offset)
        };
        if let Err(e) = written {
            self.fail(g, &e);
            return Err(Self::failed_error(&e.to_string()));
        }
        let logged = Logged { seq, file: g.active, body_at: g.offset + RECORD_HEAD as u64 };
        if kind == Kind::Data {
            self.byte_records.fetch_add(1, Ordering::Relaxed);
        }
        g.last_seq = seq;
        g.offset += bytes.len() as u64;
        let active = g.active;
        g.file_last[active] = seq;
        // Past the middle of the active file, the other file must be free (checkpointed) before this one
        // fills: ask for one checkpoint then. Once one has covered the other file's records nothing more is
        // asked for until the next turn (asking on every record ran checkpoints back to back, each with its
        // syncs and a new overwrite epoch).
        let other = 1 - active;
        if !g.checkpoint_wanted
            && g.file_last[other] > g.applied
            && g.offset - HEADER_LEN > (self.file_size - HEADER_LEN) / 2
        {
            g.checkpoint_wanted = true;
            self.checkpoint_cond.notify_all();
        }
        Ok(logged)
    }

    /// Reads bytes of a record's body back (`at` from [`Logged::body_at`]). Only the records past the last
    /// checkpoint are sure to be there: the caller checks what it reads.
    pub fn read_body(&self, file: usize, buf: &mut [u8], at: u64) -> Result<()> {
        Ok(self.files[file].read_at(buf, at)?)
    }

    /// Makes every record appended so far durable with one `fdatasync` of the active file, and returns the seq it
    /// covers. Unlike [`Journal::sync_through`] it never waits for another sync and never appends a mark, so a
    /// checkpoint can call it while writers wait for that checkpoint.
    pub fn sync_appended(&self) -> Result<u64> {
        {
            let g = lock_inner(&self.inner);
            if let Some(why) = &g.failed {
                return Err(Self::failed_error(why));
            }
            if g.synced >= g.last_seq {
                return Ok(g.synced);
            }
        }
        let result = self.sync_active();
        let mut g = lock_inner(&self.inner);
        let target = match result {
            Ok(target) => target,
            Err(e) => {
                self.fail(&mut g, &e);
                return Err(Self::failed_error(&e.to_string()));
            }
        };
        g.synced = g.synced.max(target);
        self.cond.notify_all();
        Ok(g.synced)
    }

    /// Registers a layer as changed since the last checkpoint.
    pub fn note_changed(&self, layer: &Arc<Layer>) {
        note(&self.changed, &layer.in_changed, layer.id, layer);
    }

    /// Registers a layer as holding kind-2 bytes not yet synced.
    pub fn note_large(&self, layer: &Arc<Layer>) {
        note(&self.large, &layer.in_large, layer.id, layer);
    }

    /// A changed layer not yet checkpointed (or that the running checkpoint has not finished with), if any: it must
    /// be reused rather than loaded again from the store.
    pub fn changed_layer(&self, id: u64) -> Option<Arc<Layer>> {
        let changed = mutex_lock(&self.changed);
        changed.get(&id).or(mutex_lock(&self.checkpointing).get(&id)).cloned()
    }

    /// Forgets layers that were deleted.
    pub fn forget_layers(&self, ids: &[u64]) {
        {
            let mut changed = mutex_lock(&self.changed);
            let mut checkpointing = mutex_lock(&self.checkpointing);
            let mut large = mutex_lock(&self.large);
            for id in ids {
                changed.remove(id);
                checkpointing.remove(id);
                large.remove(id);
            }
        }
        self.forget_marks(ids);
    }

    /// The freeze lock, exclusively: no record is being logged while it is held.
    pub fn freeze(&self) -> RwLockWriteGuard<'_, ()> {
        self.freeze.write().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The freeze lock, shared.
    #[allow(dead_code)]
    pub fn freeze_shared(&self) -> RwLockReadGuard<'_, ()> {
        self.freeze.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The last seq appended.
    pub fn last_seq(&self) -> u64 {
        lock_inner(&self.inner).last_seq
    }

    /// Takes every changed layer (the caller holds the freeze lock exclusively). They stay findable by
    /// [`Journal::changed_layer`] until [`Journal::checkpoint_ended`].
    pub fn take_changed(&self) -> Vec<Arc<Layer>> {
        let mut changed = mutex_lock(&self.changed);
        let mut checkpointing = mutex_lock(&self.checkpointing);
        let layers = drain_noted(&mut changed, |l| &l.in_changed);
        for l in &layers {
            checkpointing.insert(l.id, l.clone());
        }
        layers
    }

    /// Forgets the layers the checkpoint that ends now took: it committed them, or noted them changed again.
    pub fn checkpoint_ended(&self) {
        mutex_lock(&self.checkpointing).clear();
    }

    /// Records that a checkpoint committed every record up to `seq`.
    pub fn set_applied(&self, seq: u64) {
        let mut g = lock_inner(&self.inner);
        g.applied = g.applied.max(seq);
        g.checkpoint_wanted = false;
        g.save_wanted = false;
        g.last_checkpoint = Instant::now();
    }

    /// Makes durable every record up to `target` and, for kind-2 records, every one up to `large_target` with its
    /// bytes. Concurrent callers share one leader's syncs; a caller whose records are durable already returns
    /// without any sync.
    pub fn sync_through(&self, target: u64, large_target: u64) -> Result<()> {
        let mut g = lock_inner(&self.inner);
        loop {
            if let Some(why) = &g.failed {
                return Err(Self::failed_error(why));
            }
            if g.covers(target, large_target) {
                return Ok(());
            }
            g.mark_wanted = g.mark_wanted.max(large_target);
            if !g.syncing {
                break;
            }
            g = self.cond.wait(g).unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        self.lead(g)
    }

    /// [`Journal::sync_through`] for a caller that would rather hand the flush to the sync thread than wait long
    /// (an event loop): syncs here only when the journal's lock is free, no sync runs, no async flush waits (the
    /// sync thread serves those) and no mark is wanted (which syncs layer files first), so it costs one
    /// `fdatasync` of the active file. `None` means nothing was done.
    pub fn try_sync_now(&self, target: u64, large_target: u64) -> Option<Result<()>> {
        let g = self.inner.try_lock().ok()?;
        if let Some(why) = &g.failed {
            return Some(Err(Self::failed_error(why)));
        }
        if g.covers(target, large_target) {
            return Some(Ok(()));
        }
        if g.syncing || !g.waiters.is_empty() || g.shutdown || g.marked < g.mark_wanted.max(large_target) {
            return None;
        }
        Some(self.lead(g))
    }

    /// Leads one sync (the caller found none running, and holds the lock): syncs outside the lock, then wakes the
    /// callers that waited for it and calls back the async flushes it made durable.
    fn lead(&self, mut g: MutexGuard<'_, Inner>) -> Result<()> {
        g.syncing = true;
        // Layer files are synced (and a mark appended) only when some caller needs kind-2 bytes covered: a sync for
        // records alone (kind 1, a dirty-object record) must not wait for the page cache of every layer with
        // kind-2 writes, which under a stream of large writes is most of a second's worth of data.
        let need_mark = g.marked < g.mark_wanted;
        drop(g);
        let result = self.lead_sync(need_mark);
        let mut g = lock_inner(&self.inner);
        g.syncing = false;
        let outcome = match result {
            Ok((synced, marked)) => {
                g.synced = g.synced.max(synced);
                if let Some(m) = marked {
                    g.marked = g.marked.max(m);
                }
                Ok(())
            }
            Err(e) => {
                self.fail(&mut g, &e);
                Err(e)
            }
        };
        self.cond.notify_all();
        let ready = Self::take_ready(&mut g);
        if !g.waiters.is_empty() || g.shutdown {
            // Flushes that came during this sync need the next one. After a shutdown the sync thread may wait for
            // this sync to answer the flushes it still holds: with none left now it must wake to end.
            self.sync_cond.notify_one();
        }
        drop(g);
        Self::call_back(ready);
        outcome
    }

    /// Removes the async flushes that are now answered: made durable, or failed with the journal.
    fn take_ready(g: &mut Inner) -> Vec<(Waiter, Result<()>)> {
        if g.waiters.is_empty() {
            return Vec::new();
        }
        if let Some(why) = &g.failed {
            let err = Self::failed_error(why);
            return g.waiters.drain(..).map(|w| (w, Err(err.clone()))).collect();
        }
        let mut waiters = std::mem::take(&mut g.waiters);
        let ready = waiters.extract_if(.., |w| g.covers(w.target, w.large)).map(|w| (w, Ok(()))).collect();
        g.waiters = waiters;
        ready
    }

    /// Calls back answered async flushes, outside the journal's lock (a callback may log or flush again). A callback
    /// that panics ends neither the others nor the thread that calls them (which may be the sync thread, without
    /// which no later async flush would be answered).
    fn call_back(ready: Vec<(Waiter, Result<()>)>) {
        for (waiter, outcome) in ready {
            let done = waiter.done;
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || done(outcome))).is_err() {
                // Not `eprintln!`, which panics when stderr cannot be written.
                let _ = writeln!(std::io::stderr(), "basalt: a flush's callback panicked; the flushes after it go on");
            }
        }
    }

    /// [`Journal::sync_through`] for a caller that must not wait (an event loop): `done` is called once the same
    /// records are durable, by the thread whose sync made them so (the sync thread leads one if nobody does), or at
    /// once when they are durable already. Gives `done` back when no sync thread runs (before
    /// [`Journal::start_sync_thread`], or after shutdown).
    pub fn sync_later(&self, target: u64, large_target: u64, done: FlushDone) -> std::result::Result<(), FlushDone> {
        let mut g = lock_inner(&self.inner);
        if !g.sync_thread || g.shutdown {
            return Err(done);
        }
        let outcome = if let Some(why) = &g.failed {
            Err(Self::failed_error(why))
        } else if g.covers(target, large_target) {
            Ok(())
        } else {
            g.mark_wanted = g.mark_wanted.max(large_target);
            g.waiters.push(Waiter { target, large: large_target, done });
            if !g.syncing {
                self.sync_cond.notify_one();
            }
            return Ok(());
        };
        drop(g);
        done(outcome);
        Ok(())
    }

    /// Starts the sync thread, which leads a sync whenever async flushes wait and no sync runs, until
    /// [`Journal::shutdown`], and answers every flush it took before it ends. Async flushes that arrive while a sync
    /// runs share the next one: each sync serves every flush waiting when it starts.
    pub fn start_sync_thread(self: &Arc<Self>) -> std::io::Result<std::thread::JoinHandle<()>> {
        // Taking flushes from now on: the thread may not have run yet when the first comes.
        lock_inner(&self.inner).sync_thread = true;
        let journal = self.clone();
        let started =
            std::thread::Builder::new().name("basalt-sync".into()).spawn(move || journal.serve_async_flushes());
        if started.is_err() {
            lock_inner(&self.inner).sync_thread = false;
        }
        started
    }

    fn serve_async_flushes(&self) {
        let mut g = lock_inner(&self.inner);
        loop {
            let ready = Self::take_ready(&mut g);
            if !ready.is_empty() {
                drop(g);
                Self::call_back(ready);
                g = lock_inner(&self.inner);
                continue;
            }
            if !g.waiters.is_empty() && !g.syncing {
                // A failure is answered to every waiter (`take_ready`), whose errors it reports.
                let _ = self.lead(g);
                g = lock_inner(&self.inner);
                continue;
            }
            if g.shutdown && g.waiters.is_empty() {
                g.sync_thread = false;
                return;
            }
            g = self.sync_cond.wait(g).unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    fn lead_sync(&self, need_mark: bool) -> Result<(u64, Option<u64>)> {
        let mut marked = None;
        if need_mark {
            // Every kind-2 record up to `covers` was appended after its bytes returned from the layer file.
            let covers = self.last_seq();
            let layers = drain_noted(&mut mutex_lock(&self.large), |l| &l.in_large);
            for layer in &layers {
                if let Err(e) = layer.sync_if_needed() {
                    for l in &layers {
                        self.note_large(l);
                    }
                    return Err(e);
                }
            }
            let place = Place { layer: 0, object: 0, file_off: 0, first_blk: 0, blocks: 0 };
            self.log(Kind::Mark, &place, &Body::Covers(covers), || {})?;
            marked = Some(covers);
        }
        self.note_flush_sync();
        Ok((self.sync_active()?, marked))
    }

    /// `fdatasync`s the active file and returns the last seq it covers. Records are written under the journal's
    /// lock, so every record up to that seq is in its file when the seq is read; a file that stops being active
    /// meanwhile is synced when it stops.
    fn sync_active(&self) -> std::io::Result<u64> {
        let (target, file) = {
            let g = lock_inner(&self.inner);
            (g.last_seq, g.active)
        };
        self.files[file].sync_data()?;
        self.syncs.fetch_add(1, Ordering::Relaxed);
        Ok(target)
    }

    /// Waits until a checkpoint is due (the active file is half full and the other not yet free, a writer waits for
    /// space, or records waited longer than the interval), for at most `idle`.
    pub fn wait_checkpoint_due(&self, poll: Duration, idle: Duration) -> Due {
        let since = Instant::now();
        let mut g = lock_inner(&self.inner);
        loop {
            if g.shutdown {
                return Due::Stop;
            }
            if g.failed.is_some() {
                return Due::Stop;
            }
            let pending = g.last_seq > g.applied || g.save_wanted;
            let overdue = self.interval.is_some_and(|i| pending && g.last_checkpoint.elapsed() >= i);
            if (g.checkpoint_wanted && pending) || overdue {
                return Due::Checkpoint;
            }
            if since.elapsed() >= idle {
                return Due::Idle;
            }
            g = self.checkpoint_cond.wait_timeout(g, poll).unwrap_or_else(std::sync::PoisonError::into_inner).0;
        }
    }

    /// Whether records wait for a checkpoint to apply them.
    pub fn pending(&self) -> bool {
        let g = lock_inner(&self.inner);
        g.last_seq > g.applied
    }

    /// Asks for a background checkpoint at the next interval even if no record is pending (something kept in the
    /// metadata store by checkpoints changed).
    pub fn want_save(&self) {
        lock_inner(&self.inner).save_wanted = true;
    }

    /// Stops the background checkpoints and wakes every waiter.
    pub fn shutdown(&self) {
        let mut g = lock_inner(&self.inner);
        g.shutdown = true;
        self.cond.notify_all();
        self.sync_cond.notify_all();
        self.checkpoint_cond.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::{Duration, Instant};

    use super::{Due, Journal, create_files};
    use crate::sim::SimVfs;

    #[test]
    fn a_sealed_record_reads_back_with_its_seq_kind_and_place() {
        use crate::vfs::Vfs;
        let vfs = SimVfs::new();
        let file = vfs.open(Path::new("/j.log"), true).expect("file");
        super::write_header(file.as_ref(), "boot").expect("header");
        let place = super::Place { layer: 7, object: 3, file_off: 1 << 20, first_blk: 2, blocks: 1 };
        let data: Vec<u8> = (0..4096u32).map(|i| (i * 7) as u8).collect();
        let mut at = super::HEADER_LEN;
        for (seq, kind, body) in
            [(1234, super::Kind::Data, super::Body::Bytes(&data)), (1235, super::Kind::Zero, super::Body::Empty)]
        {
            let mut bytes = super::encode(kind, &place, &body);
            super::seal(&mut bytes, seq);
            file.write_at(&bytes, at).expect("append");
            at += bytes.len() as u64;
        }
        let (boot, records) = super::read_file(file.as_ref(), 0).expect("read");
        assert_eq!(boot.as_deref(), Some("boot"));
        assert_eq!(records.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![1234, 1235], "both records are valid");
        assert!(records[0].kind == super::Kind::Data && records[1].kind == super::Kind::Zero);
        assert!(records.iter().all(|r| r.place == place));
        let mut body = vec![0u8; 4096];
        file.read_at(&mut body, records[0].body_off).expect("body");
        assert!(body == data, "the body is where the record says");
    }

    /// A note that returned before a drain took the set has its layer in what the drain took: the change it
    /// registers is then covered by the drainer's sync (a mark's layer syncs, a checkpoint's). The drain holds the
    /// set's lock while a first note of the layer is on its way to the set, and a second note of the same layer
    /// comes meanwhile: the second must not return as if the layer were in the set already.
    #[test]
    fn a_note_that_returned_before_a_drain_is_in_what_the_drain_takes() {
        use std::collections::HashMap;
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::{Arc, Mutex};

        struct Noted {
            flag: AtomicBool,
        }
        let set: Arc<Mutex<HashMap<u64, Arc<Noted>>>> = Arc::default();
        let layer = Arc::new(Noted { flag: AtomicBool::new(false) });
        let note = |done: Option<Arc<AtomicBool>>| {
            let (set, layer) = (set.clone(), layer.clone());
            std::thread::spawn(move || {
                super::note(&set, &layer.flag, 7, &layer);
                if let Some(done) = done {
                    done.store(true, Ordering::SeqCst);
                }
            })
        };
        let wait_for = |what: &dyn Fn() -> bool| {
            let since = Instant::now();
            while !what() && since.elapsed() < Duration::from_millis(300) {
                std::thread::sleep(Duration::from_millis(1));
            }
        };

        // The drainer holds the set (a flush's leader taking the large set, a checkpoint taking the changed one).
        let mut held = set.lock().expect("set");
        let first = note(None);
        // The first note goes as far as it can without the set's lock.
        wait_for(&|| layer.flag.load(Ordering::SeqCst));
        let returned = Arc::new(AtomicBool::new(false));
        let second = note(Some(returned.clone()));
        wait_for(&|| returned.load(Ordering::SeqCst));
        let returned_before = returned.load(Ordering::SeqCst);
        let taken = super::drain_noted(&mut held, |l: &Noted| &l.flag);
        drop(held);
        first.join().expect("first note");
        second.join().expect("second note");
        assert!(
            !returned_before || taken.iter().any(|l| Arc::ptr_eq(l, &layer)),
            "a note returned before the drain, and the drain did not take its layer: its change is covered by no sync"
        );
        assert!(set.lock().expect("set").contains_key(&7), "the notes after the drain register the layer again");
        assert!(layer.flag.load(Ordering::SeqCst), "and its flag says so");
    }

    /// A checkpoint that froze in epoch `p` keeps (and carries over) every mark labelled `p`: an overwrite made under
    /// it in `p` may log its record after that freeze, so that checkpoint does not sync its layer, and only the mark's
    /// row makes the next open recompute the object's crcs. The marks table overflowing while the checkpoint waits
    /// for the in-flight overwrites must not forget such a mark (its row would be deleted by that very checkpoint).
    #[test]
    fn a_mark_in_use_in_a_frozen_epoch_survives_an_overflow_of_the_marks() {
        let vfs = SimVfs::new();
        let files = create_files(&vfs, Path::new("/store"), 1 << 20).expect("files");
        let journal = Journal::new(files, 1 << 20, None, 0, 0);
        // A checkpoint frozen in epoch 0 keeps the mark of object 3 of layer 7 and stores its row.
        journal.set_marks(7, &[3], 0);
        let epoch = journal.bump_overwrite_epoch();
        assert_eq!(journal.visit_marks(epoch - 1, false).insert, vec![(7, 3)], "the row is stored");
        // An overwrite of that object enters in epoch 1 through the row.
        let entered = journal.enter_overwrite(7, 3..=3).expect("the row's mark counts in epoch 1");
        // The next checkpoint freezes in epoch 1 and waits for it; meanwhile other objects get marks past the bound.
        let frozen = journal.bump_overwrite_epoch() - 1;
        assert_eq!(frozen, entered);
        let others: Vec<u64> = (0..super::MARKS_MAX as u64).collect();
        journal.set_marks(8, &others, frozen + 1);
        journal.leave_overwrite(entered);
        let rows = journal.visit_marks(frozen, false);
        assert!(
            !rows.delete.contains(&(7, 3)),
            "the checkpoint frozen in the overwrite's epoch deletes the row that covers it"
        );
        let again = journal.enter_overwrite(7, 3..=3).expect("the mark counts in the next epoch");
        journal.leave_overwrite(again);
    }

    #[test]
    fn the_checkpoint_thread_wakes_when_idle_and_stops_at_shutdown() {
        let vfs = SimVfs::new();
        let files = create_files(&vfs, Path::new("/store"), 1 << 20).expect("files");
        let journal = Journal::new(files, 1 << 20, Some(Duration::from_secs(30)), 10, 10);
        let (poll, idle) = (Duration::from_millis(5), Duration::from_millis(20));
        let started = Instant::now();
        assert_eq!(journal.wait_checkpoint_due(poll, idle), Due::Idle, "nothing is pending");
        assert!(started.elapsed() >= idle, "it waited for the idle time first");
        journal.want_save();
        super::lock_inner(&journal.inner).last_checkpoint =
            Instant::now().checked_sub(Duration::from_secs(31)).expect("an uptime over 31 s");
        assert_eq!(journal.wait_checkpoint_due(poll, idle), Due::Checkpoint, "a save is wanted and overdue");
        journal.shutdown();
        assert_eq!(journal.wait_checkpoint_due(poll, idle), Due::Stop);
    }
}
