//! Deferred overwrites (docs/FORMAT.md, "Deferred overwrites"): a small overwrite is written once, to the journal,
//! and reaches the layer file at the next checkpoint; no flushed one is lost however a power cut meets the
//! checkpoint, a direct write or a punch that applies them.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use basalt_core::{
    Backend, Clock, CreateOptions, Durability, ImageIo, ImageSpec, ManualClock, OpenTarget, PoolName, Progress,
    Timestamp,
};
use basalt_engine::sim::{CrashSurvivors, Fault, SimVfs};
use basalt_engine::vfs::Vfs;
use basalt_engine::{Engine, EngineOptions};

const ROOT: &str = "/store";
const BLOCK: usize = 4096;
/// The image: 1 MiB of 64 KiB objects (order 16).
const IMAGE: u64 = 1 << 20;
const ORDER: u8 = 16;

fn open_with(vfs: &SimVfs, options: EngineOptions) -> Engine {
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(Timestamp(1_700_000_000)));
    Engine::open_with_options(Arc::new(vfs.clone()), Path::new(ROOT), clock, options).expect("open")
}

fn spec() -> ImageSpec {
    ImageSpec::parse("rbd/vm").expect("spec")
}

/// A block of version `version` of block `block`: both numbers at its start, and bytes that follow from them, so a
/// torn or misplaced block is told apart from any version.
fn version_block(block: u64, version: u64) -> Vec<u8> {
    let mut out = vec![(block as u8).wrapping_mul(31).wrapping_add(version as u8); BLOCK];
    out[..8].copy_from_slice(&block.to_le_bytes());
    out[8..16].copy_from_slice(&version.to_le_bytes());
    out
}

/// The version a block holds, or a description of why it holds none.
fn version_of(block: u64, bytes: &[u8]) -> Result<u64, String> {
    let mut v = [0u8; 8];
    v.copy_from_slice(&bytes[8..16]);
    let version = u64::from_le_bytes(v);
    if bytes == version_block(block, version).as_slice() {
        Ok(version)
    } else {
        Err(format!("block {block} holds no whole version (header says {version})"))
    }
}

/// A store with image `rbd/vm` written in full with version 1 of every block (whole objects, so in place), flushed
/// and checkpointed: every later 4 KiB write overwrites data and is deferred.
fn written_store(options: EngineOptions) -> (SimVfs, Engine) {
    written_store_on(SimVfs::new(), options)
}

/// [`written_store`] on `vfs`.
fn written_store_on(vfs: SimVfs, options: EngineOptions) -> (SimVfs, Engine) {
    let engine = thin_store_on(&vfs, options);
    let io = engine.open(&spec(), &OpenTarget::Head, "fill").expect("open");
    let blocks = IMAGE / BLOCK as u64;
    let all: Vec<u8> = (0..blocks).flat_map(|b| version_block(b, 1)).collect();
    io.write(0, &all, Durability::Buffered).expect("fill");
    io.flush().expect("flush");
    drop(io);
    checkpoint(&engine).expect("checkpoint");
    (vfs, engine)
}

/// A store with image `rbd/vm` created on `vfs` and never written.
fn thin_store_on(vfs: &SimVfs, options: EngineOptions) -> Engine {
    let engine = open_with(vfs, options);
    let pool = PoolName::new("rbd").expect("pool");
    engine.pool_create(&pool).expect("pool");
    engine.pool_application_enable(&pool, "rbd").expect("tag");
    let mut create = CreateOptions::with_size(IMAGE);
    create.order = Some(basalt_core::ObjectOrder::new(ORDER).expect("order"));
    engine.image_create(&spec(), &create).expect("create");
    engine
}

/// Makes the store checkpoint: creating and removing an image commits metadata, which checkpoints.
fn checkpoint(engine: &Engine) -> basalt_core::Result<()> {
    let scratch = ImageSpec::parse("rbd/scratch").expect("spec");
    engine.image_create(&scratch, &CreateOptions::with_size(IMAGE))?;
    engine.image_remove(&scratch, &Progress::default())
}

/// The bytes the head layer's file holds at `offset`, read past the engine.
fn layer_file_bytes(vfs: &SimVfs, offset: u64, len: usize) -> Vec<u8> {
    let dir = Path::new(ROOT).join("layers");
    let names = vfs.list(&dir).expect("list layers");
    let layers: Vec<&String> = names.iter().filter(|n| n.ends_with(".layer")).collect();
    assert_eq!(layers.len(), 1, "one layer file: {names:?}");
    let file = vfs.open(&dir.join(layers[0]), false).expect("open the layer file");
    let mut buf = vec![0u8; len];
    file.read_at(&mut buf, offset).expect("read the layer file");
    buf
}

fn read_all(engine: &Engine) -> Vec<u8> {
    let io = engine.open(&spec(), &OpenTarget::HeadReadOnly, "check").expect("open read-only");
    let mut buf = vec![0u8; IMAGE as usize];
    io.read(0, &mut buf).expect("every block reads (and verifies)");
    buf
}

fn fsck_clean(vfs: &SimVfs) {
    let report = basalt_engine::fsck::fsck_vfs(Arc::new(vfs.clone()), Path::new(ROOT)).expect("fsck");
    assert!(report.is_clean(), "{:?}", report.errors);
}

#[test]
fn a_small_overwrite_is_written_once_to_the_journal_and_reaches_the_layer_file_at_the_checkpoint() {
    let (vfs, engine) = written_store(EngineOptions::deterministic());
    let io = engine.open(&spec(), &OpenTarget::Head, "t").expect("open");
    let at = 5 * BLOCK as u64;
    io.write(at, &version_block(5, 2), Durability::Buffered).expect("overwrite");
    // A partial block is completed from what the head shows (the deferred version), then deferred in turn.
    io.write(at + 100, &[0xee; 10], Durability::Buffered).expect("partial overwrite");
    let mut expected = version_block(5, 2);
    expected[100..110].fill(0xee);
    assert_eq!(engine.journal_stats().dirty_records, 0, "a deferred overwrite needs no dirty-object record");
    assert!(layer_file_bytes(&vfs, at, BLOCK) == version_block(5, 1), "the layer file was written before a checkpoint");
    let mut back = vec![0u8; 3 * BLOCK];
    io.read(at - BLOCK as u64, &mut back).expect("read around it");
    assert!(back[BLOCK..2 * BLOCK] == expected[..], "a read shows the deferred bytes");
    assert!(back[..BLOCK] == version_block(4, 1) && back[2 * BLOCK..] == version_block(6, 1));
    checkpoint(&engine).expect("checkpoint");
    assert!(layer_file_bytes(&vfs, at, BLOCK) == expected, "the checkpoint wrote the deferred bytes");
    io.read(at, &mut back[..BLOCK]).expect("read after the checkpoint");
    assert!(back[..BLOCK] == expected[..]);
    // A deferred block then discarded: the punch gives its space back, and no checkpoint writes it again.
    let nine = 9 * BLOCK as u64;
    io.write(nine, &version_block(9, 2), Durability::Buffered).expect("overwrite");
    io.discard(nine, BLOCK as u64, Durability::Buffered).expect("discard");
    checkpoint(&engine).expect("checkpoint");
    assert!(layer_file_bytes(&vfs, nine, BLOCK).iter().all(|&b| b == 0), "the discarded block came back to the file");
    drop(io);
    drop(engine);
    fsck_clean(&vfs);
}

/// On a disk whose layer files bypass the page cache, a checkpoint writes deferred blocks from several threads at
/// once: every one reaches the layer file, and survives a power cut after the checkpoint.
#[test]
fn with_direct_io_a_checkpoint_writes_every_deferred_block_from_several_threads() {
    let (vfs, engine) = written_store_on(SimVfs::new().direct_io(true), EngineOptions::deterministic());
    let io = engine.open(&spec(), &OpenTarget::Head, "t").expect("open");
    // Every other block of the first two objects: each is a run of its own, so the checkpoint has sixteen writes
    // to spread.
    let blocks: Vec<u64> = (0..32).step_by(2).collect();
    for &b in &blocks {
        io.write(b * BLOCK as u64, &version_block(b, 2), Durability::Buffered).expect("overwrite");
    }
    assert!(layer_file_bytes(&vfs, 0, BLOCK) == version_block(0, 1), "deferred until the checkpoint");
    checkpoint(&engine).expect("checkpoint");
    for &b in &blocks {
        assert!(layer_file_bytes(&vfs, b * BLOCK as u64, BLOCK) == version_block(b, 2), "block {b} was not written");
    }
    drop(io);
    let cut = vfs.after_crash(CrashSurvivors::None);
    drop(engine);
    let after = open_with(&cut, EngineOptions::deterministic());
    let io = after.open(&spec(), &OpenTarget::Head, "check").expect("open");
    let mut back = vec![0u8; BLOCK];
    for b in 0..IMAGE / BLOCK as u64 {
        io.read(b * BLOCK as u64, &mut back).expect("read");
        let version = if b < 32 && b % 2 == 0 { 2 } else { 1 };
        assert!(back == version_block(b, version), "block {b} after a power cut");
    }
    drop(io);
    drop(after);
    fsck_clean(&cut);
}

/// One run of deferred overwrites for the power-cut sweep below: flushed versions, an unflushed one over a flushed
/// one (the same chain), a large write and a discard over deferred blocks (both apply them first), more flushed
/// deferred writes, and a checkpoint that applies everything. `steps` says how far it got: what each step flushed
/// must survive a cut after it.
fn deferred_run(engine: &Engine, steps: &AtomicU64) -> basalt_core::Result<()> {
    let io = engine.open(&spec(), &OpenTarget::Head, "t")?;
    let step = |n| steps.store(n, Ordering::SeqCst);
    for b in 0..4u64 {
        io.write(b * BLOCK as u64, &version_block(b, 2), Durability::Buffered)?;
    }
    io.flush()?;
    step(1);
    io.write(2 * BLOCK as u64, &version_block(2, 3), Durability::Buffered)?;
    // Object 1 (blocks 16..32): two blocks deferred, then the whole object written in place over them.
    io.write(17 * BLOCK as u64, &version_block(17, 2), Durability::Buffered)?;
    io.write(18 * BLOCK as u64, &version_block(18, 2), Durability::Buffered)?;
    let object: Vec<u8> = (16..32).flat_map(|b| version_block(b, 3)).collect();
    io.write(16 * BLOCK as u64, &object, Durability::Buffered)?;
    // Block 40 deferred, then discarded: the punch applies it first.
    io.write(40 * BLOCK as u64, &version_block(40, 2), Durability::Buffered)?;
    io.discard(40 * BLOCK as u64, BLOCK as u64, Durability::Buffered)?;
    io.write(100 * BLOCK as u64, &version_block(100, 2), Durability::ForceUnitAccess)?;
    io.flush()?;
    step(2);
    // Unflushed when the checkpoint writes it in place: its record must be durable first.
    io.write(5 * BLOCK as u64, &version_block(5, 2), Durability::Buffered)?;
    checkpoint(engine)?;
    step(3);
    io.write(3 * BLOCK as u64, &version_block(3, 3), Durability::Buffered)?;
    io.flush()?;
    step(4);
    Ok(())
}

/// Whether a block may read as `version` (0: zeros) after a cut, given the last step the run completed.
fn allowed(block: u64, step: u64, version: u64) -> bool {
    let at_least = |s: u64, v: u64, otherwise: u64| if step >= s { v } else { otherwise };
    let (low, high) = match block {
        0 | 1 => (at_least(1, 2, 1), 2),
        2 => (at_least(1, 2, 1), 3),
        3 => (at_least(4, 3, at_least(1, 2, 1)), 3),
        5 => (at_least(3, 2, 1), 2),
        16..32 => (at_least(2, 3, 1), 3),
        // Discarded at step 2: zeros once it is flushed; before, any version it had, or zeros.
        40 if step >= 2 => return version == 0,
        40 => return version <= 2,
        100 => (at_least(2, 2, 1), 2),
        _ => (1, 1),
    };
    (low..=high).contains(&version)
}

fn check_after_cut(disk: &SimVfs, step: u64, what: &str) {
    let engine = open_with(disk, EngineOptions::deterministic());
    let image = read_all(&engine);
    for (b, bytes) in image.chunks(BLOCK).enumerate() {
        let b = b as u64;
        let version = if bytes.iter().all(|&x| x == 0) {
            0
        } else {
            version_of(b, bytes).unwrap_or_else(|e| panic!("{what}: {e}"))
        };
        assert!(allowed(b, step, version), "{what}: block {b} holds version {version} after step {step}");
    }
    drop(engine);
    fsck_clean(disk);
}

/// A power cut at every I/O of a run of deferred overwrites, through the checkpoint that applies them and the
/// close: no flushed version is lost, no block is torn or fails its checksum, and fsck is clean.
#[test]
fn a_power_cut_anywhere_in_deferred_overwrites_and_their_checkpoint_loses_no_flushed_write() {
    let (vfs, engine) = written_store(EngineOptions::deterministic());
    let base = vfs.op_count();
    let steps = AtomicU64::new(0);
    deferred_run(&engine, &steps).expect("the run without faults");
    drop(engine);
    let points = vfs.op_count() - base;
    assert!(points > 20, "{points} I/Os");
    check_after_cut(&vfs.after_crash(CrashSurvivors::None), 4, "no fault");
    for k in 0..points {
        let (vfs, engine) = written_store(EngineOptions::deterministic());
        assert_eq!(vfs.op_count(), base, "the same base");
        vfs.inject(base + k, Fault::PowerCut);
        let steps = AtomicU64::new(0);
        let _ = deferred_run(&engine, &steps);
        drop(engine);
        let step = steps.load(Ordering::SeqCst);
        for (i, survivors) in
            [CrashSurvivors::None, CrashSurvivors::Random(k * 7 + 1), CrashSurvivors::All].into_iter().enumerate()
        {
            check_after_cut(&vfs.after_crash(survivors), step, &format!("cut at I/O {k} of {points} ({i})"));
        }
    }
}

/// Two writers overwrite their own halves of an image with 4 KiB and whole-object writes and flush now and then,
/// while the journal keeps turning (so checkpoints apply deferred blocks under them) and a background checkpoint
/// runs every millisecond; meanwhile a third thread takes crash images of the disk. Each must show every block at a
/// version between the last one flushed before the crash image was taken and the last one written after it.
#[test]
fn writers_checkpoints_and_power_cuts_at_random_moments_lose_no_flushed_overwrite() {
    let options = || EngineOptions {
        checkpoint_interval: Some(std::time::Duration::from_millis(1)),
        ..EngineOptions::deterministic()
    };
    let (vfs, engine) = written_store(options());
    let blocks = IMAGE / BLOCK as u64;
    let flushed: Vec<AtomicU64> = (0..blocks).map(|_| AtomicU64::new(1)).collect();
    let started: Vec<AtomicU64> = (0..blocks).map(|_| AtomicU64::new(1)).collect();
    let done = AtomicBool::new(false);
    let mut cuts = Vec::new();
    // One handle (one writer holds the image), shared by the writing threads.
    let io = engine.open(&spec(), &OpenTarget::Head, "writers").expect("open");
    std::thread::scope(|scope| {
        let writers: Vec<_> = (0..2u64)
            .map(|t| {
                let (io, flushed, started) = (&io, &flushed, &started);
                scope.spawn(move || {
                    let half = blocks / 2;
                    let mut version = vec![1u64; blocks as usize];
                    let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ t;
                    for i in 0..4000u64 {
                        rng = rng.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                        let pick = (rng >> 33) % half;
                        if i % 97 == 0 {
                            // A whole object, in place: it applies the deferred blocks it covers first.
                            let first = t * half + (pick / 16) * 16;
                            let mut data = Vec::with_capacity(16 * BLOCK);
                            for b in first..first + 16 {
                                version[b as usize] += 1;
                                started[b as usize].store(version[b as usize], Ordering::SeqCst);
                                data.extend(version_block(b, version[b as usize]));
                            }
                            io.write(first * BLOCK as u64, &data, Durability::Buffered).expect("object write");
                        } else {
                            let b = t * half + pick;
                            version[b as usize] += 1;
                            started[b as usize].store(version[b as usize], Ordering::SeqCst);
                            let data = version_block(b, version[b as usize]);
                            io.write(b * BLOCK as u64, &data, Durability::Buffered).expect("block write");
                        }
                        if i % 16 == 15 {
                            io.flush().expect("flush");
                            for b in t * half..(t + 1) * half {
                                flushed[b as usize].store(version[b as usize], Ordering::SeqCst);
                            }
                        }
                    }
                })
            })
            .collect();
        let cutter = scope.spawn(|| {
            let mut taken = Vec::new();
            let mut seed = 1u64;
            while !done.load(Ordering::SeqCst) {
                std::thread::sleep(std::time::Duration::from_millis(3));
                let low: Vec<u64> = flushed.iter().map(|v| v.load(Ordering::SeqCst)).collect();
                let disk = vfs.after_crash(CrashSurvivors::Random(seed));
                let high: Vec<u64> = started.iter().map(|v| v.load(Ordering::SeqCst)).collect();
                taken.push((disk, low, high));
                seed += 1;
            }
            taken
        });
        let joined: Vec<_> = writers.into_iter().map(|w| w.join()).collect();
        done.store(true, Ordering::SeqCst);
        for j in joined {
            j.expect("writer");
        }
        cuts = cutter.join().expect("cutter");
    });
    let engine_checkpoints = engine.journal_stats().checkpoints;
    assert!(engine_checkpoints > 10, "checkpoints ran under the writers");
    drop(io);
    drop(engine);
    eprintln!("{} crash images, {} checkpoints", cuts.len(), engine_checkpoints);
    assert!(cuts.len() >= 3, "{} crash images", cuts.len());
    for (n, (disk, low, high)) in cuts.iter().enumerate() {
        let engine = open_with(disk, options());
        let image = read_all(&engine);
        for (b, bytes) in image.chunks(BLOCK).enumerate() {
            let version = version_of(b as u64, bytes).unwrap_or_else(|e| panic!("crash image {n}: {e}"));
            assert!(
                (low[b]..=high[b]).contains(&version),
                "crash image {n}: block {b} at version {version}, flushed {} and last written {}",
                low[b],
                high[b]
            );
        }
        drop(engine);
        fsck_clean(disk);
    }
}

/// What a crash image of the engine's own process shows: every completed write, flushed or not.
#[test]
fn a_process_crash_keeps_every_deferred_overwrite() {
    let (vfs, engine) = written_store(EngineOptions::deterministic());
    let io: Box<dyn ImageIo> = engine.open(&spec(), &OpenTarget::Head, "t").expect("open");
    for b in (0..64u64).step_by(3) {
        io.write(b * BLOCK as u64, &version_block(b, 7), Durability::Buffered).expect("overwrite");
    }
    let killed = open_with(&vfs.after_process_crash(), EngineOptions::deterministic());
    let image = read_all(&killed);
    for b in 0..64u64 {
        let want = if b % 3 == 0 { 7 } else { 1 };
        let got = version_of(b, &image[b as usize * BLOCK..(b as usize + 1) * BLOCK]).expect("a whole version");
        assert_eq!(got, want, "block {b}");
    }
}

/// `try_write_now` (how the NBD server answers a write on its reader thread, without waking a worker) takes the
/// small overwrites of whole blocks the image holds already: deferred like any other, they read back, survive a
/// process crash, and once flushed a power cut. It leaves everything else to `write`, having written nothing: part of
/// a block, blocks of two objects, a write too large to defer, a range past the end, a block that is not data, and a
/// read-only handle.
#[test]
fn try_write_now_takes_small_overwrites_and_leaves_the_rest_to_write() {
    let (vfs, engine) = written_store(EngineOptions::deterministic());
    let io: Box<dyn ImageIo> = engine.open(&spec(), &OpenTarget::Head, "t").expect("open");
    let blocks = |range: std::ops::Range<u64>, version: u64| -> Vec<u8> {
        range.flat_map(|b| version_block(b, version)).collect()
    };
    let at = |block: u64| block * BLOCK as u64;
    assert!(matches!(io.try_write_now(at(0), &version_block(0, 2)), Some(Ok(()))), "one block");
    assert!(matches!(io.try_write_now(at(4), &blocks(4..8, 2)), Some(Ok(()))), "four blocks of one object");

    io.discard(at(20), BLOCK as u64, Durability::Buffered).expect("discard");
    let per_object = 1u64 << (ORDER - 12);
    let refused: [(&str, u64, Vec<u8>); 6] = [
        ("part of a block", at(2) + 512, vec![9; 512]),
        ("blocks of two objects", at(per_object - 1), blocks(per_object - 1..per_object + 1, 3)),
        ("a whole object (too large to defer)", at(per_object), blocks(per_object..2 * per_object, 3)),
        ("past the end", IMAGE - BLOCK as u64, blocks(0..2, 3)),
        ("a discarded block", at(20), version_block(20, 3)),
        ("a block next to a discarded one", at(19), blocks(19..21, 3)),
    ];
    for (what, offset, data) in &refused {
        assert!(io.try_write_now(*offset, data).is_none(), "{what} is left to write");
    }
    let ro: Box<dyn ImageIo> = engine.open(&spec(), &OpenTarget::HeadReadOnly, "ro").expect("open read-only");
    assert!(ro.try_write_now(at(9), &version_block(9, 3)).is_none(), "a read-only handle writes nothing");
    drop(ro);

    let check = |image: &[u8], written: &[u64], when: &str| {
        for b in 0..IMAGE / BLOCK as u64 {
            let bytes = &image[b as usize * BLOCK..(b as usize + 1) * BLOCK];
            if b == 20 {
                assert!(bytes.iter().all(|&x| x == 0), "{when}: the discarded block reads as zeros");
                continue;
            }
            let want = if written.contains(&b) { 2 } else { 1 };
            assert_eq!(version_of(b, bytes).expect("a whole version"), want, "{when}: block {b}");
        }
    };
    let written = [0, 4, 5, 6, 7];
    check(&read_all(&engine), &written, "read back");
    check(&read_all(&open_with(&vfs.after_process_crash(), EngineOptions::deterministic())), &written, "after kill");
    io.flush().expect("flush");
    let cut = vfs.after_crash(basalt_engine::sim::CrashSurvivors::None);
    check(&read_all(&open_with(&cut, EngineOptions::deterministic())), &written, "after a power cut");
    fsck_clean(&cut);
}

/// `try_write_now` also takes small writes of blocks the image does not hold yet (a thin image's first writes): the
/// bytes into the layer file and its sidecar, then the record, all through the page cache. It leaves a range with
/// some blocks written and some not to `write`. `try_flush_now` (how the NBD server answers a lone flush on its
/// reader thread) syncs the journal right there when that is all a flush needs, leaves a flush that must first
/// sync the layer file (new blocks written while the image was not being flushed carry only crcs in the journal)
/// to the group commit, and costs no sync when nothing is dirty. What it acknowledged survives a power cut.
#[test]
fn try_write_now_takes_small_writes_of_new_blocks_and_try_flush_now_makes_them_durable() {
    let vfs = SimVfs::new();
    let engine = thin_store_on(&vfs, EngineOptions::deterministic());
    let io: Box<dyn ImageIo> = engine.open(&spec(), &OpenTarget::Head, "t").expect("open");
    let blocks = |range: std::ops::Range<u64>| -> Vec<u8> { range.flat_map(|b| version_block(b, 1)).collect() };
    let at = |block: u64| block * BLOCK as u64;
    let per_object = 1u64 << (ORDER - 12);

    assert!(matches!(io.try_write_now(at(0), &blocks(0..1)), Some(Ok(()))), "a new block of a new object");
    assert!(io.try_flush_now().is_none(), "a flush that must sync the layer file first is left to the group commit");
    io.flush().expect("flush");
    let syncs = engine.journal_stats().syncs;
    assert!(matches!(io.try_flush_now(), Some(Ok(()))), "nothing dirty");
    assert_eq!(engine.journal_stats().syncs, syncs, "a flush with nothing dirty syncs nothing");

    assert!(matches!(io.try_write_now(at(1), &blocks(1..3)), Some(Ok(()))), "new blocks beside a written one");
    let far = per_object + 2;
    assert!(matches!(io.try_write_now(at(far), &blocks(far..far + 2)), Some(Ok(()))), "another new object");
    assert!(io.try_write_now(at(2), &blocks(2..4)).is_none(), "one block written, one not: left to write");
    // The options cut layer files into segments of two objects: the second segment does not exist yet, and creating
    // it syncs the directory.
    let unborn = 3 * per_object;
    assert!(io.try_write_now(at(unborn), &blocks(unborn..unborn + 1)).is_none(), "a segment to create: left to write");
    assert!(matches!(io.try_flush_now(), Some(Ok(()))), "one sync of the journal");
    assert_eq!(engine.journal_stats().syncs, syncs + 1);

    let written: Vec<u64> = (0..3).chain(far..far + 2).collect();
    let check = |image: &[u8], when: &str| {
        for b in 0..IMAGE / BLOCK as u64 {
            let bytes = &image[b as usize * BLOCK..(b as usize + 1) * BLOCK];
            if written.contains(&b) {
                assert_eq!(version_of(b, bytes), Ok(1), "{when}: block {b}");
            } else {
                assert!(bytes.iter().all(|&x| x == 0), "{when}: block {b} was never written");
            }
        }
    };
    check(&read_all(&engine), "read back");
    let cut = vfs.after_crash(CrashSurvivors::None);
    check(&read_all(&open_with(&cut, EngineOptions::deterministic())), "after a power cut");
    fsck_clean(&cut);
}

/// Runs a checkpoint on another thread (removing a scratch image created first, so the checkpoint's is the next
/// write), holds its first write, runs `during` meanwhile, then lets the checkpoint finish and returns what `during`
/// returned.
fn during_a_held_checkpoint<R>(vfs: &SimVfs, engine: &Engine, during: impl FnOnce() -> R) -> R {
    let scratch = ImageSpec::parse("rbd/scratch").expect("spec");
    engine.image_create(&scratch, &CreateOptions::with_size(IMAGE)).expect("create");
    let gate = vfs.hold_next_write();
    std::thread::scope(|s| {
        let checkpointing = s.spawn(|| engine.image_remove(&scratch, &Progress::default()));
        gate.wait_until_held();
        let out = during();
        gate.release();
        checkpointing.join().expect("checkpoint thread").expect("checkpoint");
        out
    })
}

/// An image closed and opened again while a checkpoint writes its deferred blocks: the layer the checkpoint holds
/// is the one the image opens with (its deferred map, and its bitmaps the metadata store does not have yet), not a
/// copy read again from the metadata store. A copy showed the file's older version until the checkpoint wrote it,
/// and a direct write through it was then overwritten by the checkpoint's older bytes.
#[test]
fn an_image_opened_again_while_a_checkpoint_applies_its_deferred_blocks_shows_and_keeps_the_newest() {
    let (vfs, engine) = written_store(EngineOptions::deterministic());
    let io: Box<dyn ImageIo> = engine.open(&spec(), &OpenTarget::Head, "t").expect("open");
    io.write(3 * BLOCK as u64, &version_block(3, 2), Durability::Buffered).expect("deferred overwrite");
    io.flush().expect("flush");
    drop(io);
    // The checkpoint is about to write block 3's deferred version into the layer file.
    let user = during_a_held_checkpoint(&vfs, &engine, || {
        let io: Box<dyn ImageIo> = engine.open(&spec(), &OpenTarget::Head, "again").expect("open again");
        let user = std::thread::spawn(move || {
            let mut back = vec![0u8; BLOCK];
            io.read(3 * BLOCK as u64, &mut back).expect("read");
            let seen = version_of(3, &back);
            // A whole object (16 blocks, too large to defer): written to the layer file at once.
            let object: Vec<u8> = (0..16).flat_map(|b| version_block(b, 3)).collect();
            io.write(0, &object, Durability::Buffered).expect("direct write");
            seen
        });
        // The read and the write wait for the checkpoint's write of the deferred blocks (they need the deferred
        // map it holds); given time, a copy of the layer did both before it.
        let until = std::time::Instant::now() + std::time::Duration::from_millis(300);
        while !user.is_finished() && std::time::Instant::now() < until {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        user
    });
    assert_eq!(user.join().expect("user thread"), Ok(2), "the image opened again showed the deferred version");
    let image = read_all(&engine);
    for b in 0..16u64 {
        assert_eq!(version_of(b, &image[b as usize * BLOCK..(b as usize + 1) * BLOCK]), Ok(3), "block {b}");
    }
    drop(engine);
    fsck_clean(&vfs);
}

/// The same for bitmaps: an image opened again while a checkpoint commits the blocks it wrote last reads them,
/// not the metadata store's older bitmaps (which the commit in progress is about to replace).
#[test]
fn an_image_opened_again_while_a_checkpoint_commits_its_new_blocks_reads_them() {
    let (vfs, engine) = written_store(EngineOptions::deterministic());
    let io: Box<dyn ImageIo> = engine.open(&spec(), &OpenTarget::Head, "t").expect("open");
    io.discard(0, 16 * BLOCK as u64, Durability::Buffered).expect("discard an object");
    checkpoint(&engine).expect("checkpoint");
    io.write(3 * BLOCK as u64, &version_block(3, 2), Durability::Buffered).expect("a new block");
    io.flush().expect("flush");
    drop(io);
    // The checkpoint's first write is its commit's, in the metadata store.
    let io = during_a_held_checkpoint(&vfs, &engine, || {
        engine.open(&spec(), &OpenTarget::Head, "again").expect("open again")
    });
    let mut back = vec![0u8; BLOCK];
    io.read(3 * BLOCK as u64, &mut back).expect("read");
    assert_eq!(version_of(3, &back), Ok(2), "the block written before the checkpoint");
}

/// Flips a byte of the journal's copy of `bytes` (a deferred block's version), past the engine.
fn damage_in_journal(vfs: &SimVfs, bytes: &[u8]) {
    for name in ["0.log", "1.log"] {
        let file = vfs.open(&Path::new(ROOT).join("journal").join(name), false).expect("open a journal file");
        let mut all = vec![0u8; file.len().expect("length") as usize];
        file.read_at(&mut all, 0).expect("read a journal file");
        if let Some(at) = all.windows(bytes.len()).position(|w| w == bytes) {
            let at = (at + 100) as u64;
            file.write_at(&[all[at as usize] ^ 0x40], at).expect("flip a byte");
            return;
        }
    }
    panic!("the version is in neither journal file");
}

/// A deferred block whose bytes are damaged in the journal (nothing reuses them before a checkpoint applied them)
/// is a bad block like any other: its read fails with EIO, is counted, and the image shows degraded. The
/// checkpoint that meets it goes on, leaving the block unreadable rather than at its older version, until it is
/// written again; every other block keeps its newest version.
#[test]
fn a_deferred_block_damaged_in_the_journal_reads_as_damaged_and_its_checkpoint_goes_on() {
    let (vfs, engine) = written_store(EngineOptions::deterministic());
    let io = engine.open(&spec(), &OpenTarget::Head, "t").expect("open");
    let at = |block: u64| block * BLOCK as u64;
    io.write(at(3), &version_block(3, 2), Durability::Buffered).expect("deferred");
    io.write(at(5), &version_block(5, 2), Durability::Buffered).expect("deferred");
    io.flush().expect("flush");
    damage_in_journal(&vfs, &version_block(3, 2));

    let read = |block: u64| {
        let mut buf = vec![0u8; BLOCK];
        io.read(at(block), &mut buf).map(|()| buf)
    };
    let bad = |when: &str| {
        let err = read(3).expect_err("the damaged block is not returned");
        assert_eq!(err.kind(), basalt_core::ErrorKind::Io, "{when}: {err}");
        assert!(err.message().contains("checksum mismatch"), "{when}: {err}");
    };
    bad("deferred");
    let info = engine.image_info(&spec()).expect("info");
    assert_eq!(info.status, basalt_core::ImageStatus::Degraded, "counted");
    assert_eq!(version_of(5, &read(5).expect("block 5")), Ok(2));

    checkpoint(&engine).expect("the checkpoint goes on");
    bad("after the checkpoint");
    assert_eq!(version_of(5, &read(5).expect("block 5")), Ok(2), "the other block was applied");
    assert_eq!(version_of(4, &read(4).expect("block 4")), Ok(1));

    io.write(at(3), &version_block(3, 3), Durability::Buffered).expect("written again");
    assert_eq!(version_of(3, &read(3).expect("block 3")), Ok(3));
    checkpoint(&engine).expect("checkpoint");
    assert_eq!(version_of(3, &read(3).expect("block 3")), Ok(3), "healed by the write");
}

/// `fsck` of a store a crash stopped says how much of it only the journal holds: blocks written since the last
/// checkpoint have no bitmap in the metadata store yet, so the summary's count of checked blocks leaves them out.
#[test]
fn fsck_after_a_crash_says_which_objects_only_the_journal_holds() {
    let (vfs, engine) = written_store(EngineOptions::deterministic());
    let fresh = ImageSpec::parse("rbd/fresh").expect("spec");
    engine.image_create(&fresh, &CreateOptions::with_size(IMAGE)).expect("create");
    let io = engine.open(&fresh, &OpenTarget::Head, "t").expect("open");
    // Two blocks of one (4 MiB) object, which the metadata store has no bitmap of yet.
    io.write(0, &version_block(0, 1), Durability::Buffered).expect("write");
    io.write(8 * BLOCK as u64, &version_block(8, 1), Durability::Buffered).expect("write");
    io.flush().expect("flush");
    let crashed = vfs.after_crash(CrashSurvivors::All);
    drop(io);
    drop(engine);

    let report = basalt_engine::fsck::fsck_vfs(Arc::new(crashed.clone()), Path::new(ROOT)).expect("fsck");
    assert!(report.is_clean(), "{:?}", report.errors);
    assert_eq!(report.blocks_checked, IMAGE / BLOCK as u64, "only rbd/vm's checkpointed blocks: {report:?}");
    let note = report.notes.iter().find(|n| n.contains("changed since the last checkpoint")).unwrap_or_else(|| {
        panic!("no note of what the journal holds: {:?}", report.notes);
    });
    assert!(note.starts_with("1 object(s)") && note.contains("2 journal record(s)"), "{note}");

    // Replayed by an open and checkpointed by its close: nothing left to say, and both blocks are checked.
    drop(open_with(&crashed, EngineOptions::deterministic()));
    let report = basalt_engine::fsck::fsck_vfs(Arc::new(crashed), Path::new(ROOT)).expect("fsck");
    assert!(report.is_clean(), "{:?}", report.errors);
    assert!(report.notes.iter().all(|n| !n.contains("changed since the last checkpoint")), "{:?}", report.notes);
    assert_eq!(report.blocks_checked, IMAGE / BLOCK as u64 + 2, "{report:?}");
}
