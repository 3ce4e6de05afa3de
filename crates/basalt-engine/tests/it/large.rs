//! A 1 PiB thin image on the real file system under the temp directory (ext4 here, whose largest file is 16 TiB):
//! every offset is writable, because layer files are cut into segments (docs/FORMAT.md, "Layer files").

use std::sync::Arc;

use basalt_core::{
    Backend, CloneRequest, CreateOptions, DiffGranularity, Durability, ImageSpec, ManualClock, ObjectOrder, OpenTarget,
    PoolName, Progress, ResizePolicy, SnapName, SnapSpec, Timestamp,
};
use basalt_engine::{DEFAULT_SEGMENT_SHIFT, Engine, LAYERS_DIR};

const TIB: u64 = 1 << 40;
const PIB: u64 = 1 << 50;

fn spec(s: &str) -> ImageSpec {
    ImageSpec::parse(s).expect("image spec")
}

fn pattern(seed: u64, len: usize) -> Vec<u8> {
    (0..len as u64).map(|i| ((i * 31 + seed * 7) % 253) as u8 + 1).collect()
}

/// The writes: both sides of the first segment boundary, ext4's largest file, the middle, and the last block.
fn writes() -> Vec<(u64, Vec<u8>)> {
    let segment = 1u64 << DEFAULT_SEGMENT_SHIFT;
    [(0, 8192), (segment - 6000, 12_000), (16 * TIB - 4096, 8192), (PIB / 2 + 12_345, 70_000), (PIB - 4096, 4096)]
        .into_iter()
        .enumerate()
        .map(|(i, (offset, len))| (offset, pattern(i as u64 + 1, len)))
        .collect()
}

fn check(engine: &Engine, target: OpenTarget, expected: &[(u64, Vec<u8>)]) {
    let io = engine.open(&spec("rbd/huge"), &target, "test").expect("open");
    for (offset, data) in expected {
        let mut back = vec![0u8; data.len()];
        io.read(*offset, &mut back).expect("read");
        assert!(back == *data, "the bytes at {offset} differ");
    }
    let mut gap = vec![1u8; 65536];
    io.read(PIB / 4, &mut gap).expect("read a gap");
    assert!(gap.iter().all(|&b| b == 0), "an unwritten range reads as data");
}

fn layer_files(root: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root.join(LAYERS_DIR))
        .expect("layers dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn a_petabyte_image_is_writable_at_any_offset_and_its_segments_go_with_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().join("data");
    let clock = Arc::new(ManualClock::new(Timestamp(1_700_000_000)));
    let engine = Engine::open(&root, clock.clone()).expect("open");
    let pool = PoolName::new("rbd").expect("pool");
    engine.pool_create(&pool).expect("pool");
    engine.pool_application_enable(&pool, "rbd").expect("tag pool");
    // 8 MiB objects: with 4 MiB ones, 1 PiB is more objects than an object map holds (as in Ceph).
    let mut options = CreateOptions::with_size(PIB);
    options.order = Some(ObjectOrder::new(23).expect("order"));
    engine.image_create(&spec("rbd/huge"), &options).expect("a 1 PiB image");
    let first = writes();
    {
        let io = engine.open(&spec("rbd/huge"), &OpenTarget::Head, "test").expect("open");
        for (offset, data) in &first {
            io.write(*offset, data, Durability::Buffered).unwrap_or_else(|e| panic!("write at {offset}: {e}"));
        }
        io.flush().expect("flush");
    }
    check(&engine, OpenTarget::Head, &first);
    // Each segment holds at most 8 TiB, whatever the offset (the last of the 128 is segment 127).
    let names = layer_files(&root);
    assert!(names.iter().any(|n| n.ends_with(".layer.127")), "no segment for the last block: {names:?}");
    assert!(names.iter().any(|n| n.ends_with(".layer.64")), "no segment for the middle: {names:?}");
    for name in &names {
        let len = std::fs::metadata(root.join(LAYERS_DIR).join(name)).expect("metadata").len();
        assert!(len <= 1 << DEFAULT_SEGMENT_SHIFT, "{name} holds {len} bytes");
    }

    // A snapshot keeps the first bytes while the head changes, and `du`/`diff` see the change.
    engine.snap_create(&SnapSpec::parse("rbd/huge@before").expect("snap")).expect("snapshot");
    let second: Vec<(u64, Vec<u8>)> =
        first.iter().enumerate().map(|(i, (off, data))| (*off, pattern(100 + i as u64, data.len()))).collect();
    {
        let io = engine.open(&spec("rbd/huge"), &OpenTarget::Head, "test").expect("open");
        for (offset, data) in &second {
            io.write(*offset, data, Durability::ForceUnitAccess).expect("overwrite");
        }
    }
    let diff = engine
        .diff(&spec("rbd/huge"), Some(&SnapName::new("before").expect("name")), None, DiffGranularity::Fine)
        .expect("diff");
    assert!(diff.iter().any(|e| e.offset <= PIB - 4096 && e.offset + e.length >= PIB), "{diff:?}");

    // Everything survives a reopen: the segments' directory entries were made durable.
    drop(engine);
    let report = basalt_engine::fsck::fsck(&root).expect("fsck");
    assert!(report.is_clean(), "{:?}", report.errors);
    let engine = Engine::open(&root, clock).expect("reopen");
    check(&engine, OpenTarget::Head, &second);
    check(&engine, OpenTarget::Snapshot(SnapName::new("before").expect("name")), &first);

    // A clone of the snapshot reads through to it, including the far segments.
    engine.snap_protect(&SnapSpec::parse("rbd/huge@before").expect("snap")).expect("protect");
    engine
        .clone_image(&SnapSpec::parse("rbd/huge@before").expect("snap"), &spec("rbd/child"), &CloneRequest::inherit())
        .expect("clone");
    {
        let io = engine.open(&spec("rbd/child"), &OpenTarget::Head, "test").expect("open child");
        let (offset, data) = first.last().expect("a write");
        let mut back = vec![0u8; data.len()];
        io.read(*offset, &mut back).expect("read");
        assert!(back == *data, "the clone reads other bytes at {offset}");
    }

    // Growing past 16 TiB works too.
    engine.image_create(&spec("rbd/grows"), &CreateOptions::with_size(1 << 20)).expect("create");
    engine.image_resize(&spec("rbd/grows"), 64 * TIB, ResizePolicy::GrowOnly).expect("grow to 64 TiB");
    engine
        .open(&spec("rbd/grows"), &OpenTarget::Head, "test")
        .expect("open")
        .write(64 * TIB - 4096, &[7u8; 4096], Durability::ForceUnitAccess)
        .expect("the last block of the grown image");

    // Removing the images removes every segment.
    engine.image_remove(&spec("rbd/child"), &Progress::default()).expect("remove the clone");
    engine.snap_unprotect(&SnapSpec::parse("rbd/huge@before").expect("snap")).expect("unprotect");
    engine.snap_remove(&SnapSpec::parse("rbd/huge@before").expect("snap")).expect("remove the snapshot");
    engine.image_remove(&spec("rbd/huge"), &Progress::default()).expect("remove");
    engine.image_remove(&spec("rbd/grows"), &Progress::default()).expect("remove");
    assert_eq!(layer_files(&root), Vec::<String>::new());
}
