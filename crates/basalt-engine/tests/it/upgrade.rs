//! Upgrading a store written by basalt's format 1 (the fixture `data/v1-store.tar.gz` was made by a format-1
//! `basalt serve`: image `rbd/vm` (8 MiB, never written), image `rbd/vm2` imported from a 4 MiB pattern, its snapshot
//! `s1`, then 64 KiB of 0x5a written at 1 MiB over NBD).

use std::sync::Arc;

use basalt_core::{Backend, ErrorKind, ImageSpec, ManualClock, OpenTarget, SnapSpec, Timestamp};
use basalt_engine::Engine;
use basalt_engine::upgrade::{Upgraded, upgrade};

const MIB: usize = 1 << 20;

/// The bytes `rbd/vm2` was imported from.
fn pattern() -> Vec<u8> {
    (0..4 * MIB).map(|i| ((i * 7 + 3) % 251) as u8).collect()
}

fn unpack_v1_store() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/data/v1-store.tar.gz");
    let status =
        std::process::Command::new("tar").args(["-xzf", fixture, "-C"]).arg(dir.path()).status().expect("run tar");
    assert!(status.success(), "tar failed");
    dir
}

fn read_all(engine: &Engine, target: OpenTarget, spec: &str) -> Vec<u8> {
    let spec = ImageSpec::parse(spec).expect("spec");
    let io = engine.open(&spec, &target, "test").expect("open");
    let mut buf = vec![0u8; io.size_bytes() as usize];
    io.read(0, &mut buf).expect("read");
    buf
}

#[test]
fn a_format_1_store_is_refused_until_upgraded_then_keeps_every_byte() {
    let dir = unpack_v1_store();
    let clock = Arc::new(ManualClock::new(Timestamp(1_800_000_000)));
    let Err(err) = Engine::open(dir.path(), clock.clone()) else { panic!("a format-1 store opened") };
    assert_eq!(err.kind(), ErrorKind::NotSupported, "{err}");
    assert!(err.message().contains("basalt upgrade --data-dir"), "the refusal names the way out: {err}");

    assert_eq!(upgrade(dir.path()).expect("upgrade"), Upgraded::From(1));
    assert_eq!(upgrade(dir.path()).expect("upgrade again"), Upgraded::AlreadyCurrent, "a rerun changes nothing");
    let report = basalt_engine::fsck::fsck(dir.path()).expect("fsck");
    assert!(report.is_clean(), "{:?}", report.errors);

    // Every layer file has its checksum file, and every data block verifies against it.
    let layers = std::fs::read_dir(dir.path().join(basalt_engine::LAYERS_DIR)).expect("layers dir");
    let names: Vec<String> = layers.map(|e| e.expect("entry").file_name().to_string_lossy().into_owned()).collect();
    for name in names.iter().filter(|n| n.ends_with(".layer")) {
        let crc = name.replace(".layer", ".crc");
        assert!(names.contains(&crc), "{name} has no checksum file: {names:?}");
    }
    let engine = Engine::open(dir.path(), clock.clone()).expect("the upgraded store opens");
    let scrub = engine.scrub(None, &basalt_core::Progress::default()).expect("scrub");
    assert!(scrub.errors.is_empty(), "{scrub:?}");
    assert!(scrub.blocks_checked >= 1024, "the imported 4 MiB was checked: {scrub:?}");
    let mut head = pattern();
    head[MIB..MIB + 65536].fill(0x5a);
    assert!(read_all(&engine, OpenTarget::Head, "rbd/vm2") == head, "the head's data survived");
    let snap = SnapSpec::parse("rbd/vm2@s1").expect("snap");
    assert!(
        read_all(&engine, OpenTarget::Snapshot(snap.snap.clone()), "rbd/vm2") == pattern(),
        "the snapshot's data survived"
    );
    assert!(read_all(&engine, OpenTarget::Head, "rbd/vm").iter().all(|&b| b == 0));

    // The upgraded store takes writes through the journal and keeps them across a reopen.
    let vm = ImageSpec::parse("rbd/vm").expect("spec");
    let io = engine.open(&vm, &OpenTarget::Head, "test").expect("open");
    io.write(4096, &[0xc3; 8192], basalt_core::Durability::Buffered).expect("write");
    io.flush().expect("flush");
    drop(io);
    drop(engine);
    let engine = Engine::open(dir.path(), clock).expect("reopen");
    let data = read_all(&engine, OpenTarget::Head, "rbd/vm");
    assert!(data[4096..12288].iter().all(|&b| b == 0xc3) && data[..4096].iter().all(|&b| b == 0));
}

/// The bytes the format-3 fixture wrote: `data/v3-store.tar.gz` was made by a format-3 engine (whose layer files
/// were single files): image `rbd/big` (10 TiB, 4 MiB objects) got 64 KiB of pattern 1 at 0 and of pattern 2 at
/// 9 TiB + 4 KiB, then snapshot `s1`, then 8 KiB of pattern 3 at 9 TiB + 4 KiB and of pattern 4 at 8 TiB - 4 KiB,
/// flushed into the journal only (the process exited without a checkpoint).
fn v3_pattern(seed: u64, len: usize) -> Vec<u8> {
    (0..len as u64).map(|i| ((i * 31 + seed * 7) % 253) as u8 + 1).collect()
}

fn read_at(engine: &Engine, target: &OpenTarget, offset: u64, len: usize) -> Vec<u8> {
    let io = engine.open(&ImageSpec::parse("rbd/big").expect("spec"), target, "test").expect("open");
    let mut buf = vec![0u8; len];
    io.read(offset, &mut buf).expect("read");
    buf
}

#[test]
fn a_format_3_store_with_files_past_a_segment_is_split_and_keeps_every_byte() {
    const TIB: u64 = 1 << 40;
    let dir = tempfile::tempdir().expect("temp dir");
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/data/v3-store.tar.gz");
    let status =
        std::process::Command::new("tar").args(["-xzf", fixture, "-C"]).arg(dir.path()).status().expect("run tar");
    assert!(status.success(), "tar failed");
    let root = dir.path().join("data");
    let clock = Arc::new(ManualClock::new(Timestamp(1_800_000_000)));
    let Err(err) = Engine::open(&root, clock.clone()) else { panic!("a format-3 store opened") };
    assert_eq!(err.kind(), ErrorKind::NotSupported, "{err}");
    assert!(err.message().contains("basalt upgrade --data-dir"), "{err}");

    assert_eq!(upgrade(&root).expect("upgrade"), Upgraded::From(3));
    assert_eq!(upgrade(&root).expect("upgrade again"), Upgraded::AlreadyCurrent);
    // What lay past 8 TiB moved into second segments; no file is longer than a segment.
    let layers_dir = root.join(basalt_engine::LAYERS_DIR);
    let mut names: Vec<String> = std::fs::read_dir(&layers_dir)
        .expect("layers dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(names.iter().filter(|n| n.ends_with(".layer.1")).count() == 2, "{names:?}");
    for name in &names {
        let len = std::fs::metadata(layers_dir.join(name)).expect("metadata").len();
        assert!(len <= 1 << basalt_engine::DEFAULT_SEGMENT_SHIFT, "{name} holds {len} bytes");
    }
    let report = basalt_engine::fsck::fsck(&root).expect("fsck");
    assert!(report.is_clean(), "{:?}", report.errors);

    // The journal's records (replayed at open, into the segments) and the checkpointed blocks all read back.
    let engine = Engine::open(&root, clock.clone()).expect("the upgraded store opens");
    let head = OpenTarget::Head;
    let mut far = v3_pattern(2, 65536);
    far[..8192].copy_from_slice(&v3_pattern(3, 8192));
    assert!(read_at(&engine, &head, 0, 65536) == v3_pattern(1, 65536));
    assert!(read_at(&engine, &head, 9 * TIB + 4096, 65536) == far, "the head past 8 TiB");
    assert!(read_at(&engine, &head, 8 * TIB - 4096, 8192) == v3_pattern(4, 8192), "across the segment boundary");
    let snap = OpenTarget::Snapshot(SnapSpec::parse("rbd/big@s1").expect("snap").snap);
    assert!(read_at(&engine, &snap, 9 * TIB + 4096, 65536) == v3_pattern(2, 65536), "the snapshot past 8 TiB");
    assert!(read_at(&engine, &snap, 8 * TIB - 4096, 8192).iter().all(|&b| b == 0));
    let scrub = engine.scrub(None, &basalt_core::Progress::default()).expect("scrub");
    assert!(scrub.errors.is_empty() && scrub.blocks_checked >= 2 * 16 + 2 * 2, "{scrub:?}");
}

/// Version 5 only added the `dirty_objects` table: a version-4 store (this one made by taking a new store back to
/// version 4: the version number, and no such table) opens at once, comes out as version 5, and keeps every byte.
#[test]
fn a_format_4_store_becomes_format_5_at_its_first_open() {
    use redb::{ReadableDatabase, TableDefinition, TableHandle};
    const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
    let version_of = |dir: &std::path::Path| {
        let db = redb::Database::open(dir.join(basalt_engine::DB_FILE)).expect("open the metadata store");
        let txn = db.begin_read().expect("read");
        let tables: Vec<String> = txn.list_tables().expect("tables").map(|t| t.name().to_owned()).collect();
        let version = txn.open_table(META).expect("meta").get("format_version").expect("get").map(|v| v.value());
        (version, tables.contains(&"dirty_objects".to_owned()))
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = Arc::new(ManualClock::new(Timestamp(1_800_000_000)));
    let spec = ImageSpec::parse("rbd/vm").expect("spec");
    {
        let engine = Engine::open(dir.path(), clock.clone()).expect("a new store");
        let pool = basalt_core::PoolName::new("rbd").expect("pool");
        engine.pool_create(&pool).expect("create the pool");
        engine.pool_application_enable(&pool, "rbd").expect("tag the pool");
        engine.image_create(&spec, &basalt_core::CreateOptions::with_size(8 << 20)).expect("create an image");
        let io = engine.open(&spec, &OpenTarget::Head, "test").expect("open");
        io.write(4096, &pattern()[..65536], basalt_core::Durability::Buffered).expect("write");
        io.flush().expect("flush");
    }
    assert_eq!(version_of(dir.path()), (Some(basalt_engine::FORMAT_VERSION), true));
    {
        let db = redb::Database::open(dir.path().join(basalt_engine::DB_FILE)).expect("open the metadata store");
        let txn = db.begin_write().expect("write");
        txn.open_table(META).expect("meta").insert("format_version", 4).expect("set version 4");
        let dirty: TableDefinition<(u64, u64), ()> = TableDefinition::new("dirty_objects");
        assert!(txn.delete_table(dirty).expect("delete the table"), "a version-5 store has the table");
        txn.commit().expect("commit");
    }
    assert_eq!(version_of(dir.path()), (Some(4), false));

    let engine = Engine::open(dir.path(), clock).expect("a version-4 store opens");
    let back = read_all(&engine, OpenTarget::Head, "rbd/vm");
    assert_eq!(&back[4096..4096 + 65536], &pattern()[..65536], "the data written before");
    drop(engine);
    assert_eq!(version_of(dir.path()), (Some(5), true), "the first open recorded version 5 and made the table");
    assert_eq!(upgrade(dir.path()).expect("upgrade"), Upgraded::AlreadyCurrent);
}
