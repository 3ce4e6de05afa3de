//! The journal's promises, on the simulated disk: a flush with nothing new costs no I/O, and a process crash
//! (`kill -9`: the kernel keeps what was written) loses no completed write, flushed or not.

use std::path::Path;
use std::sync::Arc;

use basalt_core::{
    Backend, Clock, CreateOptions, Durability, ImageIo, ImageSpec, ManualClock, OpenTarget, PoolName, SnapSpec,
    Timestamp,
};
use basalt_engine::sim::{CrashSurvivors, SimVfs};
use basalt_engine::vfs::Vfs;
use basalt_engine::{Engine, EngineOptions};

const ROOT: &str = "/store";
const MIB: u64 = 1 << 20;

fn open(vfs: &SimVfs) -> Engine {
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(Timestamp(1_700_000_000)));
    let vfs: Arc<dyn Vfs> = Arc::new(vfs.clone());
    Engine::open_with_vfs(vfs, Path::new(ROOT), clock).expect("open")
}

/// [`open`] with `options`.
fn open_with(vfs: &SimVfs, options: EngineOptions) -> Engine {
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(Timestamp(1_700_000_000)));
    Engine::open_with_options(Arc::new(vfs.clone()), Path::new(ROOT), clock, options).expect("open")
}

fn spec() -> ImageSpec {
    ImageSpec::parse("rbd/vm").expect("spec")
}

fn store_with_image() -> (SimVfs, Engine) {
    store_with_image_of(8 * MIB)
}

/// A store on a fresh simulated disk with one image `rbd/vm` of `size` bytes.
fn store_with_image_of(size: u64) -> (SimVfs, Engine) {
    let vfs = SimVfs::new();
    let engine = with_image(open(&vfs), size);
    (vfs, engine)
}

/// `engine` with pool `rbd` and image `rbd/vm` of `size` bytes created.
fn with_image(engine: Engine, size: u64) -> Engine {
    let pool = PoolName::new("rbd").expect("pool");
    engine.pool_create(&pool).expect("pool");
    engine.pool_application_enable(&pool, "rbd").expect("tag");
    engine.image_create(&spec(), &CreateOptions::with_size(size)).expect("create");
    engine
}

fn fill(seed: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| seed.wrapping_mul(31).wrapping_add((i % 253) as u8)).collect()
}

fn read(engine: &Engine, offset: u64, len: usize) -> Vec<u8> {
    let io = engine.open(&spec(), &OpenTarget::Head, "check").expect("open");
    let mut buf = vec![0u8; len];
    io.read(offset, &mut buf).expect("read");
    buf
}

#[test]
fn a_flush_with_nothing_new_does_no_io() {
    let (vfs, engine) = store_with_image();
    let io = engine.open(&spec(), &OpenTarget::Head, "t").expect("open");
    io.write(4096, &fill(1, 4096), Durability::Buffered).expect("small write");
    io.write(MIB, &fill(2, 256 << 10), Durability::Buffered).expect("large write");
    let before = vfs.op_count();
    io.flush().expect("flush");
    assert!(vfs.op_count() > before, "the first flush makes the writes durable");
    let after_first = vfs.op_count();
    io.flush().expect("flush again");
    io.flush().expect("and again");
    assert_eq!(vfs.op_count(), after_first, "a flush with nothing new did I/O");
    io.write(0, &fill(3, 4096), Durability::ForceUnitAccess).expect("FUA write");
    let after_fua = vfs.op_count();
    io.flush().expect("flush after FUA");
    assert_eq!(vfs.op_count(), after_fua, "a flush after a FUA write with nothing else new did I/O");
}

#[test]
fn a_process_crash_loses_no_completed_write_and_a_power_cut_no_flushed_one() {
    let (vfs, engine) = store_with_image();
    let io = engine.open(&spec(), &OpenTarget::Head, "t").expect("open");
    // Flushed: small writes (logged with their bytes) and whole objects (logged with block checksums).
    io.write(8192, &fill(4, 12_288), Durability::Buffered).expect("small");
    io.write(4 * MIB, &fill(5, 4 * MIB as usize), Durability::Buffered).expect("large");
    io.write(1000, &fill(6, 3000), Durability::Buffered).expect("unaligned");
    io.flush().expect("flush");
    // Then more writes, completed but never flushed.
    io.write(2 * MIB, &fill(7, 4096), Durability::Buffered).expect("small, unflushed");
    io.write(3 * MIB, &fill(8, 512 << 10), Durability::Buffered).expect("large, unflushed");
    let mut flushed = vec![0u8; 20_480];
    flushed[1000..4000].copy_from_slice(&fill(6, 3000));
    flushed[8192..].copy_from_slice(&fill(4, 12_288));

    // A power cut keeps what was flushed.
    let cut = open(&vfs.after_crash(CrashSurvivors::None));
    assert!(read(&cut, 0, 20_480) == flushed, "flushed small writes lost in a power cut");
    assert!(read(&cut, 4 * MIB, 4 * MIB as usize) == fill(5, 4 * MIB as usize), "flushed large write lost");
    drop(cut);

    // A process crash keeps every completed write: the kernel still has the pages.
    let killed = open(&vfs.after_process_crash());
    assert!(read(&killed, 0, 20_480) == flushed, "flushed small writes lost in a process crash");
    assert!(read(&killed, 4 * MIB, 4 * MIB as usize) == fill(5, 4 * MIB as usize));
    assert!(read(&killed, 2 * MIB, 4096) == fill(7, 4096), "an unflushed small write lost in a process crash");
    assert!(read(&killed, 3 * MIB, 512 << 10) == fill(8, 512 << 10), "an unflushed large write lost");
    let report = basalt_engine::fsck::fsck_vfs(Arc::new(vfs.after_process_crash()), Path::new(ROOT)).expect("fsck");
    assert!(report.is_clean(), "{:?}", report.errors);
}

/// The journal files of a new store are written once with zeros, not only reserved: an append into an *unwritten*
/// extent (what `fallocate` leaves on ext4) makes the next `fdatasync` commit the extent's conversion as well, a
/// flush 1.7 times as expensive for the whole first turn of each file. On ext4, `SEEK_HOLE` reports unwritten
/// extents as holes, so a fully written file has its only hole at its end.
#[test]
fn the_journal_files_of_a_new_store_hold_no_unwritten_extent() {
    use std::os::fd::AsRawFd;
    let dir = tempfile::tempdir().expect("temp dir");
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(Timestamp(1_800_000_000)));
    let engine = Engine::open(dir.path(), clock).expect("a new store");
    for name in ["0.log", "1.log"] {
        let path = dir.path().join(basalt_engine::JOURNAL_DIR).join(name);
        let file = std::fs::File::open(&path).expect("open the journal file");
        let len = file.metadata().expect("metadata").len();
        assert!(len >= 64 << 20, "{name}: {len} bytes");
        // SAFETY: lseek on a descriptor this test owns, with integer arguments.
        let hole = unsafe { libc::lseek(file.as_raw_fd(), 0, libc::SEEK_HOLE) };
        assert_eq!(hole as u64, len, "{name} has a hole (or unwritten extent) at {hole}");
    }
    drop(engine);
}

/// Many images in use under a small limit of open layer files: their segments keep closing and reopening, yet a
/// flush and a checkpoint still make every write durable, and no more files than the limit stay open.
#[test]
fn images_past_the_open_file_limit_keep_every_flushed_write_through_a_power_cut() {
    const LIMIT: usize = 6;
    const IMAGES: u8 = 12;
    let vfs = SimVfs::new();
    let options = EngineOptions { open_files: LIMIT, ..EngineOptions::deterministic() };
    let engine = open_with(&vfs, options);
    let pool = PoolName::new("rbd").expect("pool");
    engine.pool_create(&pool).expect("pool");
    engine.pool_application_enable(&pool, "rbd").expect("tag");
    let spec = |i: u8| ImageSpec::parse(&format!("rbd/vm{i}")).expect("spec");
    let mut handles = Vec::new();
    for i in 0..IMAGES {
        engine.image_create(&spec(i), &CreateOptions::with_size(4 * MIB)).expect("create");
        handles.push(engine.open(&spec(i), &OpenTarget::Head, "t").expect("open"));
    }
    // Every image is written before any is flushed: segments with unsynced writes are closed to make room.
    for (i, io) in (0..IMAGES).zip(&handles) {
        // A large write (its bytes go to the layer file, synced by the flush) across two segments, and a small one
        // (logged with its bytes, written to the layer file by the checkpoint).
        io.write(96 << 10, &fill(i, 256 << 10), Durability::Buffered).expect("large write");
        io.write(MIB + 4096, &fill(i + 100, 4096), Durability::Buffered).expect("small write");
        let (open, limit) = engine.open_layer_files();
        assert!(open <= LIMIT && limit == LIMIT, "{open} layer files open, limit {limit}");
    }
    for io in &handles {
        io.flush().expect("flush");
    }
    // A snapshot checkpoints: the small writes' journal records are applied and may be overwritten from now on.
    engine.snap_create(&SnapSpec::parse("rbd/vm0@s").expect("snap")).expect("snapshot");
    let cut = vfs.after_crash(CrashSurvivors::None);
    let after = open_with(&cut, options);
    for i in 0..IMAGES {
        let io = after.open(&spec(i), &OpenTarget::Head, "check").expect("open");
        let (mut large, mut small) = (vec![0u8; 256 << 10], vec![0u8; 4096]);
        io.read(96 << 10, &mut large).expect("read");
        io.read(MIB + 4096, &mut small).expect("read");
        assert!(large == fill(i, 256 << 10), "image {i}: a flushed large write was lost");
        assert!(small == fill(i + 100, 4096), "image {i}: a flushed small write was lost");
    }
}

#[test]
fn a_checkpoint_charges_its_copies_of_the_bitmaps_to_the_budget() {
    let (_vfs, engine) = store_with_image_of(1024 * MIB);
    let io = engine.open(&spec(), &OpenTarget::Head, "t").expect("open");
    // One block in each of 200 objects of 4 MiB: 200 changed bitmaps of 256 bytes, all kept until a checkpoint.
    for object in 0..200u64 {
        io.write(object * 4 * MIB, &fill(object as u8, 4096), Durability::Buffered).expect("write");
    }
    let (before, peak_before, _) = engine.bitmap_memory();
    assert_eq!(before, peak_before, "the bitmaps only grew so far");
    // The snapshot's checkpoint encodes the 200 bitmaps for the metadata store: a copy, counted while it lives.
    engine.snap_create(&basalt_core::SnapSpec::parse("rbd/vm@s").expect("snap")).expect("snapshot");
    let (after, peak, _) = engine.bitmap_memory();
    assert!(peak >= before + 200 * 256, "{peak} bytes at most during the checkpoint, {before} before it");
    assert!(after <= before, "the copies are given back: {after} bytes now, {before} before");
}

/// An engine with `cache` bytes of metadata memory, background checkpoints an hour apart and 64 MiB journal files,
/// after one 4 KiB block was written to each of 2000 objects of an image (2000 changed bitmaps); with the number of
/// checkpoints before the writes, and the image still open.
fn with_changed_bitmaps(cache: usize) -> (tempfile::TempDir, Engine, Box<dyn ImageIo>, u64) {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(Timestamp(1_700_000_000)));
    let options = EngineOptions {
        journal_file_size: 64 * MIB,
        checkpoint_interval: Some(std::time::Duration::from_secs(3600)),
        metadata_cache_bytes: cache,
        ..EngineOptions::default()
    };
    let engine =
        Engine::open_with_options(Arc::new(basalt_engine::vfs::OsVfs), dir.path(), clock, options).expect("open");
    let pool = PoolName::new("rbd").expect("pool");
    engine.pool_create(&pool).expect("pool");
    engine.pool_application_enable(&pool, "rbd").expect("tag");
    engine.image_create(&spec(), &CreateOptions::with_size(8192 * MIB)).expect("create");
    let io = engine.open(&spec(), &OpenTarget::Head, "t").expect("open");
    let checkpoints = engine.journal_stats().checkpoints;
    for object in 0..2000u64 {
        io.write(object * 4 * MIB, &fill(object as u8, 4096), Durability::Buffered).expect("write");
    }
    (dir, engine, io, checkpoints)
}

/// Whether a checkpoint past the first `checkpoints` comes within 20 s.
fn checkpoint_comes(engine: &Engine, checkpoints: u64) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while engine.journal_stats().checkpoints == checkpoints && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    engine.journal_stats().checkpoints > checkpoints
}

/// Bitmaps changed since the last checkpoint cannot be evicted, so past the budget the background thread checkpoints
/// at once rather than at its interval (an hour here) or when the journal fills (far off here): then they are
/// evictable and the budget holds again.
#[test]
fn bitmaps_changed_past_the_budget_are_checkpointed_without_waiting_for_the_interval() {
    let (_dir, engine, _io, checkpoints) = with_changed_bitmaps(256 << 10);
    // 2000 changed bitmaps are several times the 192 KiB budget, in 8 MiB of records (a quarter of one journal file).
    let (_, _, budget) = engine.bitmap_memory();
    assert!(checkpoint_comes(&engine, checkpoints), "no checkpoint while the bitmaps were over the budget");
    // The first checkpoint may have frozen while the writes still ran (on a loaded machine it does): the bitmaps
    // they changed after it stay in memory until the next one, which the same trigger starts within a second.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut used = engine.bitmap_memory().0;
    while used > budget && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
        used = engine.bitmap_memory().0;
    }
    assert!(used <= budget, "{used} bytes of bitmaps 20 s after the writes, budget {budget}");
}

/// Well inside the budget, once an eighth of it is in changed bitmaps the background thread checkpoints too: waiting
/// until the whole budget is used made the checkpoint's copy of the changed bitmaps (and the metadata store's
/// transaction) as large as the budget again, on top of it (peak memory of `benches/memory.rs`).
#[test]
fn bitmaps_changed_past_an_eighth_of_the_budget_are_checkpointed_while_the_budget_has_room() {
    let (_dir, engine, _io, checkpoints) = with_changed_bitmaps(4 * MIB as usize);
    // 2000 changed bitmaps of about 280 bytes are over an eighth of the 3 MiB budget but well inside it.
    let (used, _, budget) = engine.bitmap_memory();
    assert!(used < budget / 2, "{used} bytes of bitmaps: the budget ({budget}) has room");
    assert!(checkpoint_comes(&engine, checkpoints), "no checkpoint while many bitmaps were changed");
}

/// A short write of new blocks carries its bytes in the journal only while its image is being flushed (a flush
/// since the last checkpoint but one); otherwise it carries crcs, and a later flush syncs its layer file instead.
/// Either way a flushed write survives a power cut.
#[test]
fn short_writes_of_new_blocks_carry_their_bytes_only_while_the_image_is_being_flushed() {
    let (vfs, engine) = store_with_image();
    let io = engine.open(&spec(), &OpenTarget::Head, "t").expect("open");
    let byte_records = || engine.journal_stats().byte_records;
    let checkpoint = || {
        let scratch = ImageSpec::parse("rbd/scratch").expect("spec");
        engine.image_create(&scratch, &CreateOptions::with_size(MIB)).expect("create: a checkpoint");
        engine.image_remove(&scratch, &basalt_core::Progress::default()).expect("remove: another");
    };
    let before = byte_records();
    io.write(0, &fill(1, 4096), Durability::Buffered).expect("a write before any flush");
    assert_eq!(byte_records(), before, "never flushed: logged with crcs");
    io.flush().expect("flush");
    io.write(8192, &fill(2, 4096), Durability::Buffered).expect("a write after a flush");
    assert_eq!(byte_records(), before + 1, "being flushed: logged with its bytes");
    io.flush().expect("flush");
    checkpoint();
    checkpoint();
    io.write(16384, &fill(3, 4096), Durability::Buffered).expect("a write long after the last flush");
    assert_eq!(byte_records(), before + 1, "no flush for two checkpoints: logged with crcs again");
    io.write(24576, &fill(4, 4096), Durability::ForceUnitAccess).expect("a FUA write");
    io.write(32768, &fill(5, 4096), Durability::Buffered).expect("a write after a FUA write");
    assert_eq!(byte_records(), before + 2, "a FUA write counts as a flush");
    io.flush().expect("flush");
    let cut = open(&vfs.after_crash(CrashSurvivors::None));
    for (i, at) in [0u64, 8192, 16384, 24576, 32768].into_iter().enumerate() {
        assert!(read(&cut, at, 4096) == fill(i as u8 + 1, 4096), "the flushed write at {at} was lost");
    }
}

/// Waits for the answer of a flush handed over with `flush_async`, with a copy of the disk as a power cut at the
/// moment of the answer leaves it.
fn flush_async_and_cut(io: &dyn ImageIo, vfs: &SimVfs) -> (basalt_core::Result<()>, SimVfs) {
    let (tx, rx) = std::sync::mpsc::channel();
    let disk = vfs.clone();
    let handed = io.flush_async(Box::new(move |result| {
        let _ = tx.send((result, disk.after_crash(CrashSurvivors::None)));
    }));
    assert!(handed.is_ok(), "an open engine takes async flushes");
    rx.recv_timeout(std::time::Duration::from_secs(30)).expect("the flush is answered")
}

/// A flush handed over with `flush_async` (the NBD server's, which no thread waits for) is answered only once every
/// write acknowledged before it is durable: a power cut at the moment of the answer keeps small overwrites (their
/// bytes in the journal), short writes of new blocks, and large writes (their layer file synced, then a mark).
#[test]
fn an_async_flush_is_answered_only_once_a_power_cut_keeps_every_write_before_it() {
    let (vfs, engine) = store_with_image();
    let io = engine.open(&spec(), &OpenTarget::Head, "t").expect("open");
    for round in 1..=5u8 {
        let small = u64::from(round) * 8192;
        io.write(0, &fill(round, 4096), Durability::Buffered).expect("overwrite");
        io.write(small, &fill(round + 50, 4096), Durability::Buffered).expect("new block");
        io.write(4 * MIB, &fill(round + 100, 1 << 20), Durability::Buffered).expect("large");
        let (result, cut) = flush_async_and_cut(&*io, &vfs);
        result.expect("the flush succeeds");
        let after = open(&cut);
        assert!(read(&after, 0, 4096) == fill(round, 4096), "round {round}: the overwrite is lost");
        assert!(read(&after, small, 4096) == fill(round + 50, 4096), "round {round}: the new block is lost");
        assert!(read(&after, 4 * MIB, 1 << 20) == fill(round + 100, 1 << 20), "round {round}: the large write");
    }
    // With nothing new, the answer comes at once, with no I/O.
    let before = vfs.op_count();
    let (result, _) = flush_async_and_cut(&*io, &vfs);
    result.expect("nothing to flush");
    assert_eq!(vfs.op_count(), before, "a flush with nothing new does no I/O");
}

/// A failed sync answers the async flushes waiting for it with the error, and later ones at once; once the engine is
/// closed (a handle may outlive it), `flush_async` gives the callback back uncalled and `flush` still works.
#[test]
fn an_async_flush_reports_a_failed_sync_and_is_given_back_after_the_engine_closed() {
    let (vfs, engine) = store_with_image();
    let io = engine.open(&spec(), &OpenTarget::Head, "t").expect("open");
    io.write(0, &fill(1, 4096), Durability::Buffered).expect("write");
    vfs.inject(vfs.op_count(), basalt_engine::sim::Fault::Eio);
    let (result, _) = flush_async_and_cut(&*io, &vfs);
    assert!(result.is_err(), "the failed sync is reported");
    let (result, _) = flush_async_and_cut(&*io, &vfs);
    assert!(
        result.expect_err("the journal stopped").message().contains("restart basalt"),
        "the stopped journal is reported"
    );
    drop(io);
    drop(engine);

    let (_vfs, engine) = store_with_image();
    let io = engine.open(&spec(), &OpenTarget::Head, "t").expect("open");
    io.write(0, &fill(2, 4096), Durability::Buffered).expect("write");
    drop(engine);
    let called = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = called.clone();
    let handed = io.flush_async(Box::new(move |_| flag.store(true, std::sync::atomic::Ordering::SeqCst)));
    let done = handed.expect_err("no sync thread after the engine closed");
    assert!(!called.load(std::sync::atomic::Ordering::SeqCst), "given back uncalled");
    drop(done);
    io.flush().expect("the blocking flush still works");
}

/// A simulated disk whose journal files' next `fdatasync`, once armed, waits until released, with the journal's lock
/// free: another thread's sync is then in progress for as long as a test needs.
#[derive(Debug, Clone, Default)]
struct HeldSync {
    disk: SimVfs,
    gate: Arc<(std::sync::Mutex<SyncGate>, std::sync::Condvar)>,
}

/// Where the held `fdatasync` is.
#[derive(Debug, Default)]
struct SyncGate {
    armed: bool,
    arrived: bool,
    released: bool,
}

impl HeldSync {
    fn arm(&self) {
        self.gate.0.lock().expect("gate").armed = true;
    }

    fn wait_until_held(&self) {
        let (state, cond) = &*self.gate;
        let mut st = state.lock().expect("gate");
        while !st.arrived {
            st = cond.wait(st).expect("gate");
        }
    }

    fn release(&self) {
        let (state, cond) = &*self.gate;
        state.lock().expect("gate").released = true;
        cond.notify_all();
    }

    fn pass(&self) {
        let (state, cond) = &*self.gate;
        let mut st = state.lock().expect("gate");
        if !st.armed || st.arrived {
            return;
        }
        st.arrived = true;
        cond.notify_all();
        while !st.released {
            st = cond.wait(st).expect("gate");
        }
    }
}

/// A file of [`HeldSync`]: a journal file's `fdatasync` passes its gate.
#[derive(Debug)]
struct HeldSyncFile {
    file: Arc<dyn basalt_engine::vfs::VfsFile>,
    journal: bool,
    disk: HeldSync,
}

impl basalt_engine::vfs::VfsFile for HeldSyncFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.file.read_at(buf, offset)
    }
    fn write_at(&self, data: &[u8], offset: u64) -> std::io::Result<()> {
        self.file.write_at(data, offset)
    }
    fn punch_hole(&self, offset: u64, length: u64) -> std::io::Result<()> {
        self.file.punch_hole(offset, length)
    }
    fn len(&self) -> std::io::Result<u64> {
        self.file.len()
    }
    fn set_len(&self, length: u64) -> std::io::Result<()> {
        self.file.set_len(length)
    }
    fn sync_data(&self) -> std::io::Result<()> {
        if self.journal {
            self.disk.pass();
        }
        self.file.sync_data()
    }
    fn allocate(&self, length: u64) -> std::io::Result<()> {
        self.file.allocate(length)
    }
    fn next_data(&self, offset: u64) -> std::io::Result<Option<u64>> {
        self.file.next_data(offset)
    }
}

impl Vfs for HeldSync {
    fn open(&self, path: &Path, create: bool) -> std::io::Result<Arc<dyn basalt_engine::vfs::VfsFile>> {
        let file = self.disk.open(path, create)?;
        let journal = path.extension().is_some_and(|e| e == "log");
        Ok(Arc::new(HeldSyncFile { file, journal, disk: self.clone() }))
    }
    fn remove(&self, path: &Path) -> std::io::Result<()> {
        self.disk.remove(path)
    }
    fn list(&self, dir: &Path) -> std::io::Result<Vec<String>> {
        self.disk.list(dir)
    }
    fn create_dir_all(&self, dir: &Path) -> std::io::Result<()> {
        self.disk.create_dir_all(dir)
    }
    fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
        self.disk.sync_dir(dir)
    }
    fn lock(&self, path: &Path) -> std::io::Result<Box<dyn std::fmt::Debug + Send + Sync>> {
        self.disk.lock(path)
    }
    fn boot_id(&self) -> String {
        self.disk.boot_id()
    }
    fn holds_file_of(&self, dir: &Path, len: u64) -> std::io::Result<bool> {
        self.disk.holds_file_of(dir, len)
    }
}

/// A store on a [`HeldSync`] disk with image `rbd/vm` of 8 MiB, and the image open.
fn held_store() -> (HeldSync, Engine, Arc<dyn ImageIo>) {
    let disk = HeldSync::default();
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(Timestamp(1_700_000_000)));
    let engine = Engine::open_with_vfs(Arc::new(disk.clone()), Path::new(ROOT), clock).expect("open");
    let engine = with_image(engine, 8 * MIB);
    let io: Arc<dyn ImageIo> = Arc::from(engine.open(&spec(), &OpenTarget::Head, "t").expect("open"));
    (disk, engine, io)
}

/// Writes a block, then has a blocking flush on another thread lead a sync that stays in its `fdatasync` until
/// `disk` releases it; returns once it is held there.
fn lead_held_flush(disk: &HeldSync, io: &Arc<dyn ImageIo>) -> std::thread::JoinHandle<basalt_core::Result<()>> {
    io.write(0, &fill(1, 4096), Durability::Buffered).expect("write");
    disk.arm();
    let leader = {
        let io = io.clone();
        std::thread::spawn(move || io.flush())
    };
    disk.wait_until_held();
    leader
}

/// An async flush that another thread's sync answers while the engine is closing: the sync thread, which saw the
/// shutdown while that sync ran and the flush still waited, is woken when the sync ends, so closing the engine does
/// not wait for it forever.
#[test]
fn closing_the_engine_ends_when_another_threads_sync_answers_the_last_async_flush() {
    let (disk, engine, io) = held_store();
    let leader = lead_held_flush(&disk, &io);
    let (answered_tx, answered) = std::sync::mpsc::channel();
    let handed = io.flush_async(Box::new(move |result| drop(answered_tx.send(result))));
    assert!(handed.is_ok(), "an open engine takes async flushes");
    let (closed_tx, closed) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        drop(engine);
        let _ = closed_tx.send(());
    });
    // The sync thread sees the shutdown while the flush still waits for the held sync, which then answers it.
    std::thread::sleep(std::time::Duration::from_millis(300));
    disk.release();
    leader.join().expect("leader").expect("the leader's flush");
    answered.recv_timeout(std::time::Duration::from_secs(10)).expect("answered").expect("flushed");
    closed.recv_timeout(std::time::Duration::from_secs(10)).expect("the engine closes");
}

/// After a checkpoint's sync of a layer file failed, the kernel may have dropped the pages it could not write, and a
/// later sync of the same file can succeed without them: no flush may be acknowledged from then on. A flush of a
/// large write made before the failed checkpoint (its bytes only in that layer file) must fail, not retry the sync.
#[test]
fn after_a_checkpoint_failed_to_sync_a_layer_file_no_flush_is_acknowledged() {
    let mut failed_layer_syncs = 0;
    for k in 0..40 {
        let vfs = SimVfs::new();
        let engine = with_image(open_with(&vfs, EngineOptions::deterministic()), 8 * MIB);
        let io = engine.open(&spec(), &OpenTarget::Head, "t").expect("open");
        io.write(4 * MIB, &fill(3, MIB as usize), Durability::Buffered).expect("large write");
        vfs.inject(vfs.op_count() + k, basalt_engine::sim::Fault::Eio);
        // A snapshot checkpoints first: the head's bitmaps go to the metadata store with it.
        let r = engine.snap_create(&SnapSpec::parse("rbd/vm@s").expect("snap"));
        if r.is_ok() {
            continue;
        }
        let Some(why) = engine.stopped() else { continue };
        if !why.contains("the store stopped") {
            // The journal or the metadata store failed: their own refusals cover that.
            continue;
        }
        failed_layer_syncs += 1;
        assert!(io.flush().is_err(), "fault at op {k}: a flush after the failed layer sync was acknowledged");
    }
    assert!(failed_layer_syncs > 0, "some fault met the checkpoint's layer sync");
}

/// A flush's callback that panics (a bug in the caller) ends neither the callbacks answered with it nor the sync
/// thread: the flush queued beside it is answered, and so are async flushes after it, which only the sync thread
/// leads.
#[test]
fn a_panicking_flush_callback_leaves_the_other_flushes_answered() {
    let (disk, _engine, io) = held_store();
    let answered = |io: &dyn ImageIo| {
        let (tx, rx) = std::sync::mpsc::channel();
        assert!(io.flush_async(Box::new(move |result| drop(tx.send(result)))).is_ok(), "taken");
        rx
    };
    let wait = |rx: std::sync::mpsc::Receiver<basalt_core::Result<()>>, what: &str| {
        rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap_or_else(|_| panic!("{what} is answered"))
    };

    // Two flushes wait for the same held sync, which a blocking flush leads: the first one's callback panics.
    let leader = lead_held_flush(&disk, &io);
    assert!(io.flush_async(Box::new(|_| panic!("a callback's bug"))).is_ok(), "taken");
    let beside = answered(&*io);
    disk.release();
    leader.join().expect("the leader survives the callback's panic").expect("the leader's flush");
    wait(beside, "the flush queued beside it").expect("flushed");

    // Then the sync thread itself leads for a panicking callback, and must go on serving flushes.
    io.write(8192, &fill(2, 4096), Durability::Buffered).expect("write");
    assert!(io.flush_async(Box::new(|_| panic!("a callback's bug"))).is_ok(), "taken");
    for round in 0..3u8 {
        io.write(16384, &fill(3 + round, 4096), Durability::Buffered).expect("write");
        wait(answered(&*io), "a later flush").expect("flushed");
    }
}
