//! Images with many snapshots: past a few layers, reads resolve blocks through a per-view index of the layers that
//! hold each object instead of walking every layer. These runs check that the index reads exactly what a walk
//! would: a seeded mix of writes, shrinks, grows, snapshot creations and removals (which merge layers) on one
//! image, compared after every step with a model of plain bytes, head and every snapshot, and through a clone of
//! a snapshot deep in the chain. Diffs between snapshots (which look only at the layers above the part of the
//! chain two views share) are checked against the same model: every block whose bytes differ is reported.

use std::sync::Arc;

use basalt_core::{
    Backend, BlockState, Clock, CloneRequest, CreateOptions, DiffGranularity, Durability, ImageIo, ImageName,
    ImageSpec, ManualClock, Namespace, ObjectOrder, OpenTarget, PoolName, ResizePolicy, SnapName, SnapSpec, Timestamp,
};
use basalt_engine::vfs::OsVfs;
use basalt_engine::{DEFAULT_METADATA_CACHE, Engine, EngineOptions};

/// 64 KiB objects, so a small image spans many objects and layers hold different subsets of them.
const ORDER: u8 = 16;
const MAX_SIZE: u64 = 1 << 20;

/// A small deterministic generator (xorshift), so a failure replays from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn spec(name: &str) -> ImageSpec {
    let pool = PoolName::new("rbd").expect("pool name");
    ImageSpec::new(pool, Namespace::default_ns(), ImageName::new(name).expect("image name"))
}

fn snap(image: &ImageSpec, name: &str) -> SnapSpec {
    SnapSpec { image: image.clone(), snap: SnapName::new(name).expect("snapshot name") }
}

/// An engine with `cache` bytes of metadata memory (`None`: the default).
fn engine(dir: &std::path::Path, cache: Option<usize>) -> Engine {
    let clock = Arc::new(ManualClock::new(Timestamp(1_700_000_000)));
    let options = EngineOptions { metadata_cache_bytes: cache.unwrap_or(DEFAULT_METADATA_CACHE), ..Default::default() };
    let engine =
        Engine::open_with_options(Arc::new(OsVfs), dir, clock as Arc<dyn Clock>, options).expect("engine opens");
    let pool = PoolName::new("rbd").expect("pool name");
    engine.pool_create(&pool).expect("pool create");
    engine.pool_application_enable(&pool, "rbd").expect("application enable");
    engine
}

/// Reads the whole of `io` and checks it against `model`, and that no extent reported as a hole holds data.
fn check(what: &str, io: &dyn ImageIo, model: &[u8]) {
    assert_eq!(io.size_bytes(), model.len() as u64, "{what}: size");
    let mut buf = vec![0xA5u8; model.len()];
    io.read(0, &mut buf).unwrap_or_else(|e| panic!("{what}: read: {e}"));
    if let Some(first) = buf.iter().zip(model).position(|(a, b)| a != b) {
        panic!("{what}: differs from offset {first}: read {:02x}, expected {:02x}", buf[first], model[first]);
    }
    let extents = io.block_status(0, model.len() as u64).unwrap_or_else(|e| panic!("{what}: block status: {e}"));
    let mut at = 0;
    for extent in &extents {
        assert_eq!(extent.offset, at, "{what}: extents tile the image");
        let range = extent.offset as usize..(extent.offset + extent.length) as usize;
        if extent.state == BlockState::Hole {
            assert!(model[range].iter().all(|b| *b == 0), "{what}: a hole over data at {}", extent.offset);
        }
        at += extent.length;
    }
    assert_eq!(at, model.len() as u64, "{what}: extents cover the image");
    let mut sparse = vec![0x5Au8; model.len()];
    let sparse_extents = io.read_sparse(0, &mut sparse).unwrap_or_else(|e| panic!("{what}: sparse read: {e}"));
    assert!(sparse == model, "{what}: a sparse read differs from the model");
    assert_eq!(sparse_extents, extents, "{what}: sparse read extents against block status");
}

/// Checks `engine.diff(image, from, to)` against the bytes of both ends: every 4 KiB block whose bytes differ (or
/// that holds data past the end of `from`) lies in a reported extent, and an extent reported as gone reads zeros.
fn check_diff(what: &str, engine: &Engine, image: &ImageSpec, from: Option<(&str, &[u8])>, to: (Option<&str>, &[u8])) {
    let name = |n: &str| SnapName::new(n).expect("snapshot name");
    let extents = engine
        .diff(image, from.map(|(n, _)| name(n)).as_ref(), to.0.map(name).as_ref(), DiffGranularity::Fine)
        .unwrap_or_else(|e| panic!("{what}: diff: {e}"));
    let (to_bytes, from_bytes) = (to.1, from.map_or(&[][..], |(_, b)| b));
    let mut covered = vec![false; to_bytes.len().div_ceil(4096)];
    for e in &extents {
        assert!(e.offset + e.length <= to_bytes.len() as u64, "{what}: extent {e:?} past the end");
        let range = e.offset as usize..(e.offset + e.length) as usize;
        if !e.exists {
            assert!(to_bytes[range.clone()].iter().all(|b| *b == 0), "{what}: {e:?} reported gone holds data");
        }
        covered[range.start / 4096..range.end.div_ceil(4096)].fill(true);
    }
    for (block, covered) in covered.iter().enumerate() {
        let range = block * 4096..((block + 1) * 4096).min(to_bytes.len());
        let before = from_bytes.get(range.clone());
        let changed = match before {
            Some(before) => before != &to_bytes[range.clone()],
            None => to_bytes[range.clone()].iter().any(|b| *b != 0),
        };
        assert!(!changed || *covered, "{what}: block at {} changed but is not in the diff", range.start);
    }
}

fn run(seed: u64, steps: usize, cache: Option<usize>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let engine = engine(dir.path(), cache);
    let image = spec("vm");
    let options = CreateOptions {
        order: Some(ObjectOrder::new(ORDER).expect("order")),
        ..CreateOptions::with_size(MAX_SIZE / 2)
    };
    engine.image_create(&image, &options).expect("create");
    let mut rng = Rng(seed | 1);
    let mut head = vec![0u8; (MAX_SIZE / 2) as usize];
    // Snapshots, oldest first: (name, bytes).
    let mut snaps: Vec<(String, Vec<u8>)> = Vec::new();
    let mut next_snap = 0;
    let mut longest = 0;
    for step in 0..steps {
        longest = longest.max(snaps.len());
        let what = match rng.below(10) {
            0..=4 if !head.is_empty() => {
                let off = rng.below(head.len() as u64);
                let len = 1 + rng.below((head.len() as u64 - off).min(3 * 65536));
                let fill = (rng.below(255) + 1) as u8;
                let data = vec![fill; len as usize];
                let io = engine.open(&image, &OpenTarget::Head, "test").expect("open head");
                io.write(off, &data, Durability::Buffered).expect("write");
                head[off as usize..(off + len) as usize].copy_from_slice(&data);
                if cache.is_some() {
                    // The bitmaps this write changed become clean (so evictable) at a checkpoint. The engine's
                    // checkpoint thread starts one within a quarter second; a checkpoint here, at once, keeps the
                    // peak below from depending on when that thread gets a CPU (a loaded machine let it run
                    // late and the dirty bitmaps of several steps pile up).
                    let scratch = spec("scratch");
                    engine.image_create(&scratch, &CreateOptions::with_size(1 << 20)).expect("create: a checkpoint");
                    engine.image_remove(&scratch, &basalt_core::Progress::default()).expect("remove the scratch image");
                }
                format!("write {len} bytes of {fill:#x} at {off}")
            }
            5 => {
                let size = rng.below(MAX_SIZE + 1);
                engine.image_resize(&image, size, ResizePolicy::AllowShrink).expect("resize");
                head.resize(size as usize, 0);
                format!("resize to {size}")
            }
            6..=8 if snaps.len() < 40 => {
                let name = format!("s{next_snap}");
                next_snap += 1;
                engine.snap_create(&snap(&image, &name)).expect("snap create");
                snaps.push((name.clone(), head.clone()));
                format!("snap create {name}")
            }
            _ if !snaps.is_empty() => {
                let (name, _) = snaps.remove(rng.below(snaps.len() as u64) as usize);
                engine.snap_remove(&snap(&image, &name)).expect("snap remove");
                format!("snap remove {name}")
            }
            _ => continue,
        };
        let io = engine.open(&image, &OpenTarget::HeadReadOnly, "test").expect("open head read-only");
        check(&format!("seed {seed} step {step} ({what}): head"), io.as_ref(), &head);
        if step % 8 == 0 || step + 1 == steps {
            for (name, bytes) in &snaps {
                let io = engine.open(&image, &OpenTarget::Snapshot(SnapName::new(name).expect("name")), "test");
                let io = io.expect("open snapshot");
                check(&format!("seed {seed} step {step} ({what}): snapshot {name}"), io.as_ref(), bytes);
            }
            // Each snapshot against the one before it (as `du` does), the head against the newest, and one pair
            // far apart.
            let label = format!("seed {seed} step {step} ({what}): diff");
            let mut previous: Option<(&str, &[u8])> = None;
            for (name, bytes) in &snaps {
                check_diff(&label, &engine, &image, previous, (Some(name), bytes));
                previous = Some((name, bytes));
            }
            check_diff(&label, &engine, &image, previous, (None, &head));
            if let Some((first, bytes)) = snaps.first() {
                check_diff(&label, &engine, &image, Some((first, bytes)), (None, &head));
            }
            let du = engine.du(&image).expect("du");
            assert_eq!(du.len(), snaps.len() + 1, "{label}: du lists every snapshot and the head");
        }
    }

    assert!(longest > 16, "seed {seed}: the chain reached only {longest} snapshots, too short for the index");
    if cache.is_some() {
        // Hundreds of bitmaps were read, most of them several times: only about the budget was ever in memory.
        let (_, peak, budget) = engine.bitmap_memory();
        eprintln!("seed {seed}: at most {peak} bytes of bitmaps in memory, for a budget of {budget}");
        assert!(
            peak <= 2 * budget,
            "seed {seed}: {peak} bytes of bitmaps were in memory, over twice the {budget} budget"
        );
    }

    // A clone of a snapshot deep in the chain reads it through the parent's (indexed) view.
    let Some((name, bytes)) = snaps.get(snaps.len() / 2).cloned() else { return };
    let parent = snap(&image, &name);
    engine.snap_protect(&parent).expect("protect");
    let child = spec("child");
    engine.clone_image(&parent, &child, &CloneRequest::inherit()).expect("clone");
    let io = engine.open(&child, &OpenTarget::Head, "test").expect("open clone");
    check(&format!("seed {seed}: clone of {name}"), io.as_ref(), &bytes);

    // The clone's own snapshots diff over the parent they share.
    let mut clone_head = bytes.clone();
    let write = |model: &mut Vec<u8>, off: usize, fill: u8| {
        let len = 8192.min(model.len().saturating_sub(off));
        if len > 0 {
            io.write(off as u64, &vec![fill; len], Durability::Buffered).expect("write clone");
            model[off..off + len].fill(fill);
        }
    };
    write(&mut clone_head, (bytes.len() / 3) & !4095, 0x77);
    engine.snap_create(&snap(&child, "c1")).expect("clone snapshot");
    let c1 = clone_head.clone();
    write(&mut clone_head, 0, 0x78);
    let label = format!("seed {seed}: clone diff");
    check_diff(&label, &engine, &child, Some(("c1", &c1)), (None, &clone_head));
}

#[test]
fn reads_on_long_snapshot_chains_match_the_model() {
    for seed in [1, 0x5eed, 0xdead_beef, 42] {
        run(seed, 160, None);
    }
}

/// The same with room for about 25 bitmaps: every step evicts bitmaps and reads them back from the store.
#[test]
fn long_chains_match_the_model_with_a_tiny_bitmap_cache() {
    for seed in [7, 0xfeed] {
        run(seed, 160, Some(4 << 10));
    }
}

/// Every view of an image with a long chain has its own index of the layers holding each object. With many such
/// views open and read at once, the indexes together stay within their share of the metadata budget (each one
/// starts over rather than pass it), every view still reads what was written, and closing the views gives the
/// memory back.
#[test]
fn the_chain_indexes_of_many_open_views_stay_within_their_share_of_the_budget() {
    let dir = tempfile::tempdir().expect("temp dir");
    // A tiny budget: the indexes of the views below need several times their share of it.
    let engine = engine(dir.path(), Some(64 << 10));
    let image = spec("vm");
    let mut create = CreateOptions::with_size(MAX_SIZE);
    create.order = Some(ObjectOrder::new(ORDER).expect("order"));
    engine.image_create(&image, &create).expect("create");
    let objects = MAX_SIZE >> ORDER;
    let snapshots = 24u64;
    let mut models = Vec::new();
    let mut model = vec![0u8; MAX_SIZE as usize];
    {
        let head = engine.open(&image, &OpenTarget::Head, "writer").expect("open head");
        for round in 0..snapshots {
            for object in 0..objects {
                // A different block of each object in each round, so every layer holds every object.
                let at = (object << ORDER) + (round % 16) * 4096;
                let fill = (round * 7 + object + 1) as u8;
                head.write(at, &[fill; 4096], Durability::Buffered).expect("write");
                model[at as usize..at as usize + 4096].fill(fill);
            }
            engine.snap_create(&snap(&image, &format!("s{round}"))).expect("snapshot");
            models.push(model.clone());
        }
    }
    let views: Vec<(String, Box<dyn ImageIo>, &Vec<u8>)> = (8..snapshots)
        .map(|round| {
            let name = format!("s{round}");
            let io = engine.open(&image, &OpenTarget::Snapshot(SnapName::new(&name).expect("name")), "reader");
            (name, io.expect("open snapshot"), &models[round as usize])
        })
        .collect();
    let (_, limit) = engine.chain_index_memory();
    let mut most = 0;
    for pass in 0..2 {
        for (name, io, model) in &views {
            check(&format!("pass {pass}, {name}"), io.as_ref(), model);
            let (held, _) = engine.chain_index_memory();
            most = most.max(held);
            assert!(held <= limit, "after reading {name}: the indexes hold {held} bytes, more than {limit}");
        }
    }
    assert!(most > limit / 2, "the indexes were used ({most} bytes at most, limit {limit})");
    drop(views);
    assert_eq!(engine.chain_index_memory().0, 0, "closing the views gives their indexes' memory back");
}
