//! Removing a snapshot folds its layer into a neighbour while the image keeps taking reads and writes. These runs
//! remove a snapshot in each direction of the fold (its blocks move up into the head, or the head's move down into
//! it) while one thread writes, discards and overwrites part of the image and another reads the rest, then check
//! every byte against a model, before and after reopening the store.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use basalt_core::{
    Backend, Clock, CreateOptions, Durability, ImageIo, ImageSpec, ManualClock, OpenTarget, PoolName, SnapName,
    SnapSpec, Timestamp, ZeroMode,
};
use basalt_engine::vfs::OsVfs;
use basalt_engine::{DEFAULT_METADATA_CACHE, Engine, EngineOptions};

const MIB: u64 = 1 << 20;
const SIZE: u64 = 32 * MIB;
/// The writer works below this offset, the reader checks above it.
const SPLIT: u64 = SIZE / 2;

/// An engine with `cache` bytes of metadata memory.
fn open(dir: &std::path::Path, cache: usize) -> Engine {
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(Timestamp(1_700_000_000)));
    let options = EngineOptions { metadata_cache_bytes: cache, ..Default::default() };
    Engine::open_with_options(Arc::new(OsVfs), dir, clock, options).expect("open")
}

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

fn read_all(io: &dyn ImageIo) -> Vec<u8> {
    let mut buf = vec![0u8; SIZE as usize];
    io.read(0, &mut buf).expect("read");
    buf
}

fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    a.iter().zip(b).position(|(x, y)| x != y)
}

/// A store with `cache` bytes of metadata memory and an empty image `rbd/vm` of `SIZE`, open for writing.
fn fresh_image(cache: usize) -> (tempfile::TempDir, Arc<Engine>, ImageSpec, Arc<dyn ImageIo>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let engine = Arc::new(open(dir.path(), cache));
    let pool = PoolName::new("rbd").expect("pool");
    engine.pool_create(&pool).expect("pool");
    engine.pool_application_enable(&pool, "rbd").expect("application");
    let image = ImageSpec::parse("rbd/vm").expect("spec");
    engine.image_create(&image, &CreateOptions::with_size(SIZE)).expect("create");
    let io: Arc<dyn ImageIo> = Arc::from(engine.open(&image, &OpenTarget::Head, "test").expect("open"));
    (dir, engine, image, io)
}

/// Checks that the image reads as `model` now, and again after the store is closed and reopened.
fn check_kept(
    dir: &tempfile::TempDir,
    engine: Arc<Engine>,
    io: Arc<dyn ImageIo>,
    image: &ImageSpec,
    cache: usize,
    model: &[u8],
    what: &str,
) {
    if let Some(i) = first_difference(&read_all(io.as_ref()), model) {
        panic!("{what}: after the removal, byte {i} differs from the model");
    }
    drop(io);
    drop(Arc::into_inner(engine).expect("one engine"));
    let engine = open(dir.path(), cache);
    let io = engine.open(image, &OpenTarget::HeadReadOnly, "check").expect("open");
    if let Some(i) = first_difference(&read_all(io.as_ref()), model) {
        panic!("{what}: after reopening, byte {i} differs from the model");
    }
}

/// One run: `big_head` makes the head hold more blocks than the snapshot (its layer's blocks move up into the
/// head); otherwise the snapshot holds more (the head's blocks move down into it, and it becomes the head).
fn remove_under_load(seed: u64, big_head: bool, cache: usize) {
    let (dir, engine, image, io) = fresh_image(cache);

    let mut model = vec![0u8; SIZE as usize];
    let put = |io: &dyn ImageIo, model: &mut [u8], off: u64, len: u64, fill: u8| {
        io.write(off, &vec![fill; len as usize], Durability::Buffered).expect("write");
        model[off as usize..(off + len) as usize].fill(fill);
    };
    // The snapshot's layer: all of the image, or a few blocks.
    if big_head {
        for i in 0..16 {
            put(io.as_ref(), &mut model, i * SIZE / 16, 4096, 0x11);
        }
    } else {
        put(io.as_ref(), &mut model, 0, SIZE, 0x11);
    }
    let snap = SnapSpec::parse("rbd/vm@s1").expect("snap");
    engine.snap_create(&snap).expect("snapshot");
    // The head's own blocks: all of it, or a few.
    if big_head {
        put(io.as_ref(), &mut model, 0, SIZE, 0x22);
    } else {
        for i in 0..16 {
            put(io.as_ref(), &mut model, i * SIZE / 16 + 8192, 4096, 0x22);
        }
    }

    let model = Arc::new(Mutex::new(model));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (io, model, stop) = (io.clone(), model.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut rng = Rng(seed | 1);
            let mut count = 0u64;
            while !stop.load(Ordering::SeqCst) || count < 200 {
                let off = rng.below(SPLIT - 65536);
                let len = 1 + rng.below(65536);
                let fill = (count % 250 + 1) as u8;
                // Whole and partial blocks, overwrites in place, and discards (zero markers over the snapshot).
                let aligned = rng.below(2) == 0;
                let (off, len) = if aligned { (off & !4095, (len + 4095) & !4095) } else { (off, len) };
                let mut model = model.lock().expect("model");
                if rng.below(5) == 0 {
                    io.write_zeroes(off, len, ZeroMode::MayUnmap, Durability::Buffered).expect("discard");
                    model[off as usize..(off + len) as usize].fill(0);
                } else {
                    io.write(off, &vec![fill; len as usize], Durability::Buffered).expect("write");
                    model[off as usize..(off + len) as usize].fill(fill);
                }
                drop(model);
                count += 1;
            }
            count
        })
    };
    let reader = {
        let (io, model, stop) = (io.clone(), model.clone(), stop.clone());
        let expected = model.lock().expect("model")[SPLIT as usize..].to_vec();
        std::thread::spawn(move || {
            let mut rng = Rng(seed.rotate_left(17) | 1);
            let mut buf = vec![0u8; 65536];
            let mut count = 0u64;
            while !stop.load(Ordering::SeqCst) || count < 200 {
                let at = rng.below(SPLIT - 65536) & !4095;
                io.read(SPLIT + at, &mut buf).expect("read");
                let want = &expected[at as usize..at as usize + buf.len()];
                if let Some(i) = first_difference(&buf, want) {
                    panic!(
                        "seed {seed}: read at {} during the removal: {:#x}, expected {:#x}",
                        SPLIT + at + i as u64,
                        buf[i],
                        want[i]
                    );
                }
                count += 1;
            }
            drop(model);
            count
        })
    };
    engine.snap_remove(&snap).expect("snapshot remove");
    stop.store(true, Ordering::SeqCst);
    let (writes, reads) = (writer.join().expect("writer"), reader.join().expect("reader"));
    assert!(writes >= 200 && reads >= 200, "seed {seed}: the load ran ({writes} writes, {reads} reads)");

    let model = model.lock().expect("model").clone();
    assert!(engine.snap_list(&image).expect("snap list").is_empty(), "seed {seed}: the snapshot is gone");
    check_kept(&dir, engine, io, &image, cache, &model, &format!("seed {seed} (big head: {big_head})"));
}

#[test]
fn removing_a_large_snapshot_under_writes_keeps_every_byte() {
    for seed in [1, 7, 0x5eed] {
        remove_under_load(seed, false, DEFAULT_METADATA_CACHE);
    }
}

#[test]
fn removing_a_snapshot_into_a_large_head_under_writes_keeps_every_byte() {
    for seed in [3, 11, 0xbeef] {
        remove_under_load(seed, true, DEFAULT_METADATA_CACHE);
    }
}

/// Both directions again with room for two bitmaps: the reader, the writer and the fold keep evicting each
/// other's bitmaps and reading them back from the store while checkpoints commit them.
#[test]
fn removing_snapshots_under_load_with_a_tiny_bitmap_cache_keeps_every_byte() {
    for (seed, big_head) in [(5, false), (13, true)] {
        remove_under_load(seed, big_head, 1 << 10);
    }
}

/// A store on a simulated disk with image `rbd/vm` created with `create`, written in full with 0x11, and snapshot
/// `s1` taken: the disk, the engine, the image, its head open for writing, and what the head holds.
fn written_with_s1(
    create: CreateOptions,
    options: EngineOptions,
) -> (basalt_engine::sim::SimVfs, Engine, ImageSpec, Box<dyn ImageIo>, Vec<u8>) {
    let sim = basalt_engine::sim::SimVfs::new();
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(Timestamp(1_700_000_000)));
    let engine =
        Engine::open_with_options(Arc::new(sim.clone()), std::path::Path::new("/store"), clock, options).expect("open");
    let pool = PoolName::new("rbd").expect("pool");
    engine.pool_create(&pool).expect("pool");
    engine.pool_application_enable(&pool, "rbd").expect("application");
    let image = ImageSpec::parse("rbd/vm").expect("spec");
    engine.image_create(&image, &create).expect("create");
    let head = engine.open(&image, &OpenTarget::Head, "test").expect("open");
    let model = vec![0x11u8; create.size_bytes as usize];
    head.write(0, &model, Durability::Buffered).expect("write");
    engine.snap_create(&SnapSpec::parse("rbd/vm@s1").expect("snap")).expect("s1");
    (sim, engine, image, head, model)
}

/// An open snapshot keeps reading the layers its view was built on after a removal below it folds one of them away
/// and deletes its files, even when that layer's files were closed (to stay under the limit of open files) before
/// the deletion: they must not need reopening by name.
#[test]
fn an_open_snapshot_reads_through_a_layer_folded_away_while_few_files_may_stay_open() {
    const IMAGE: u64 = MIB;
    let options = EngineOptions { open_files: 4, ..EngineOptions::deterministic() };
    let (_sim, engine, image, head, mut model) = written_with_s1(CreateOptions::with_size(IMAGE), options);
    // s1's layer holds the whole image; s2's a few blocks (so removing s1 folds s2's layer down into s1's, and
    // s2's layer is the one deleted).
    for i in 0..8u64 {
        let at = i * IMAGE / 8 + 4096;
        head.write(at, &[0x22; 4096], Durability::Buffered).expect("write");
        model[at as usize..at as usize + 4096].fill(0x22);
    }
    engine.snap_create(&SnapSpec::parse("rbd/vm@s2").expect("snap")).expect("s2");
    let s2 = engine.open(&image, &OpenTarget::Snapshot(SnapName::new("s2").expect("name")), "reader").expect("open s2");
    let mut buf = vec![0u8; IMAGE as usize];
    s2.read(0, &mut buf).expect("read s2");
    assert!(buf == model, "s2 before the removal");
    // The head's writes go everywhere, so every other layer's files are closed to make room.
    head.write(0, &vec![0x33; IMAGE as usize], Durability::Buffered).expect("write");
    engine.snap_remove(&SnapSpec::parse("rbd/vm@s1").expect("snap")).expect("remove s1");
    head.write(0, &vec![0x44; IMAGE as usize], Durability::Buffered).expect("write");
    s2.read(0, &mut buf).expect("read s2 after the fold");
    if let Some(i) = first_difference(&buf, &model) {
        panic!("s2 after the fold: byte {i} is {:#x}, expected {:#x}", buf[i], model[i]);
    }
}

/// Small overwrites of blocks the head holds already are deferred (written to the journal only) while a removal
/// copies the head's blocks down into the larger snapshot layer below it: each one must reach the layer that becomes
/// the head, even when it lands on an object the fold copied already.
#[test]
fn deferred_overwrites_during_a_fold_into_the_snapshot_below_are_kept() {
    for seed in [2u64, 9, 0xd00d] {
        let (dir, engine, image, io) = fresh_image(DEFAULT_METADATA_CACHE);
        io.write(0, &vec![0x11; SIZE as usize], Durability::Buffered).expect("fill");
        let snap = SnapSpec::parse("rbd/vm@s1").expect("snap");
        engine.snap_create(&snap).expect("snapshot");
        // The head owns the first quarter: smaller than the snapshot's layer, so the fold copies it down.
        let owned = SIZE / 4;
        io.write(0, &vec![0x22; owned as usize], Durability::Buffered).expect("head");
        let mut model = vec![0x11u8; SIZE as usize];
        model[..owned as usize].fill(0x22);

        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (io, stop) = (io.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut rng = Rng(seed | 1);
                let mut written = Vec::new();
                while !stop.load(Ordering::SeqCst) || written.len() < 200 {
                    let at = rng.below(owned / 4096) * 4096;
                    let fill = (written.len() % 200 + 40) as u8;
                    io.write(at, &[fill; 4096], Durability::Buffered).expect("overwrite");
                    written.push((at, fill));
                }
                written
            })
        };
        engine.snap_remove(&snap).expect("snapshot remove");
        stop.store(true, Ordering::SeqCst);
        for (at, fill) in writer.join().expect("writer") {
            model[at as usize..at as usize + 4096].fill(fill);
        }
        check_kept(&dir, engine, io, &image, DEFAULT_METADATA_CACHE, &model, &format!("seed {seed}"));
    }
}

/// A copy of a clone keeps reading the view of the parent it started with while a removal in the parent folds the
/// layer that view starts with away, even when that layer's bitmaps leave memory meanwhile: the store has none for
/// it any more. (The copy holds the clone, not the parent; its first write is held on the disk while the parent's
/// snapshot is removed and the bitmaps are evicted.)
#[test]
fn a_copy_reads_through_a_layer_folded_away_whose_bitmaps_were_evicted() {
    const IMAGE: u64 = 4 * MIB;
    let options = EngineOptions { metadata_cache_bytes: 8 << 10, ..EngineOptions::deterministic() };
    let mut create = CreateOptions::with_size(IMAGE);
    create.order = Some(basalt_core::ObjectOrder::new(16).expect("order"));
    let (sim, engine, image, head, mut model) = written_with_s1(create, options);
    // s1's layer holds the whole image; s2's one block per object (so removing s1 folds s2's layer down into
    // s1's, and s2's layer is the one deleted).
    for at in (0..IMAGE).step_by(64 << 10) {
        head.write(at, &[0x22; 4096], Durability::Buffered).expect("write");
        model[at as usize..at as usize + 4096].fill(0x22);
    }
    let s2 = SnapSpec::parse("rbd/vm@s2").expect("snap");
    engine.snap_create(&s2).expect("s2");
    engine.snap_protect(&s2).expect("protect");
    let child = ImageSpec::parse("rbd/child").expect("spec");
    engine.clone_image(&s2, &child, &basalt_core::CloneRequest::inherit()).expect("clone");
    let copy = ImageSpec::parse("rbd/copy").expect("spec");

    let progress = basalt_core::Progress::new();
    let mut gate = sim.hold_next_write();
    std::thread::scope(|scope| {
        let copier = scope.spawn(|| engine.image_copy(&child, &basalt_core::CopyRequest::to(copy.clone()), &progress));
        // Every write of the copy is held in turn until one comes after it started copying data (it created the
        // destination's record before, in a metadata commit the removal below would wait for).
        loop {
            gate.wait_until_held();
            if progress.get().1 > 0 {
                break;
            }
            let next = sim.hold_next_write();
            gate.release();
            gate = next;
        }
        engine.snap_remove(&SnapSpec::parse("rbd/vm@s1").expect("snap")).expect("remove s1");
        // The head's writes and a checkpoint fill the bitmap memory many times over: clean bitmaps leave it.
        head.write(0, &vec![0x44; IMAGE as usize], Durability::Buffered).expect("write");
        engine.image_metadata_set(&image, "k", "v").expect("a checkpoint");
        let mut other = vec![0u8; IMAGE as usize];
        head.read(0, &mut other).expect("read the head");
        let (used, peak, budget) = engine.bitmap_memory();
        assert!(peak > budget, "the bitmaps never exceeded their budget ({used} now, {peak} at most, {budget})");
        gate.release();
        copier.join().expect("the copying thread").expect("the copy");
    });
    let io = engine.open(&copy, &OpenTarget::HeadReadOnly, "check").expect("open the copy");
    let mut buf = vec![0u8; IMAGE as usize];
    io.read(0, &mut buf).expect("read the copy");
    if let Some(i) = first_difference(&buf, &model) {
        panic!("the copy: byte {i} is {:#x}, expected {:#x}", buf[i], model[i]);
    }
}

/// The layer a fold deletes gives its space back at once, even while a clone of a later snapshot is in use (its
/// view of the parent was built on that layer) and a snapshot is open: their views are built again.
#[test]
fn a_fold_gives_space_back_while_a_clone_and_an_open_snapshot_read_through_it() {
    const IMAGE: u64 = 4 * MIB;
    let (sim, engine, image, head, mut model) =
        written_with_s1(CreateOptions::with_size(IMAGE), EngineOptions::deterministic());
    // s1's layer holds the whole image, s2's a quarter of it: removing s1 folds s2's layer down and deletes it.
    head.write(0, &[0x22; MIB as usize], Durability::Buffered).expect("write");
    model[..MIB as usize].fill(0x22);
    let s2 = SnapSpec::parse("rbd/vm@s2").expect("snap");
    engine.snap_create(&s2).expect("s2");
    engine.snap_protect(&s2).expect("protect");
    let child = ImageSpec::parse("rbd/child").expect("spec");
    engine.clone_image(&s2, &child, &basalt_core::CloneRequest::inherit()).expect("clone");
    let clone = engine.open(&child, &OpenTarget::Head, "vm").expect("open the clone");
    let open_s2 = engine.open(&image, &OpenTarget::Snapshot(s2.snap.clone()), "backup").expect("open s2");
    let mut buf = vec![0u8; IMAGE as usize];
    clone.read(0, &mut buf).expect("read the clone");
    assert!(buf == model);
    open_s2.read(0, &mut buf).expect("read s2");
    assert!(buf == model);

    let before = sim.used_bytes();
    engine.snap_remove(&SnapSpec::parse("rbd/vm@s1").expect("snap")).expect("remove s1");
    clone.read(0, &mut buf).expect("read the clone");
    assert!(buf == model, "the clone after the fold");
    open_s2.read(0, &mut buf).expect("read s2");
    assert!(buf == model, "the open snapshot after the fold");
    let freed = before.saturating_sub(sim.used_bytes());
    assert!(freed >= MIB * 7 / 8, "the fold freed {freed} bytes of s2's MiB while the clone and s2 are open");
}
