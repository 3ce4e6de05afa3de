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
