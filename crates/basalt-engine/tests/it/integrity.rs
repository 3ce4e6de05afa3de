//! Checksums on a real file system: a byte flipped in a layer file is never returned. The read fails with EIO, the
//! error is counted and the image shows as degraded, and scrub finds the block (docs/FORMAT.md, "Checksums").

use std::io::{Read, Seek, SeekFrom, Write};
use std::sync::Arc;

use basalt_core::{
    Backend, CopyRequest, CreateOptions, Durability, ErrorKind, ImageSpec, ImageStatus, ManualClock, OpenTarget,
    PoolName, Progress, SnapSpec, Timestamp,
};
use basalt_engine::{Engine, LAYERS_DIR};

const MIB: u64 = 1 << 20;

fn spec(s: &str) -> ImageSpec {
    ImageSpec::parse(s).expect("image spec")
}

/// The layer files in the store, by name.
fn layer_files(root: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(root.join(LAYERS_DIR))
        .expect("layers dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "layer"))
        .collect();
    files.sort();
    files
}

/// Flips one byte of a file in place (through the page cache, as damage under a running engine would show).
fn flip_byte(path: &std::path::Path, offset: u64) {
    let mut f = std::fs::OpenOptions::new().read(true).write(true).open(path).expect("open layer file");
    let mut byte = [0u8; 1];
    f.seek(SeekFrom::Start(offset)).expect("seek");
    f.read_exact(&mut byte).expect("read byte");
    byte[0] ^= 0x40;
    f.seek(SeekFrom::Start(offset)).expect("seek");
    f.write_all(&byte).expect("write byte");
}

/// A fresh store in a temp dir with pool `rbd` tagged for rbd and image `rbd/vm` of `size` bytes.
fn store_with_vm(size: u64) -> (tempfile::TempDir, std::path::PathBuf, Engine) {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().join("data");
    let engine = Engine::open(&root, Arc::new(ManualClock::new(Timestamp(1_800_000_000)))).expect("open");
    let pool = PoolName::new("rbd").expect("pool");
    engine.pool_create(&pool).expect("pool");
    engine.pool_application_enable(&pool, "rbd").expect("tag");
    engine.image_create(&spec("rbd/vm"), &CreateOptions::with_size(size)).expect("create");
    (dir, root, engine)
}

#[test]
fn a_flipped_byte_is_an_eio_counted_degraded_and_found_by_scrub() {
    let (_dir, root, engine) = store_with_vm(8 * MIB);
    engine.image_create(&spec("rbd/other"), &CreateOptions::with_size(MIB)).expect("create other");
    let io = engine.open(&spec("rbd/vm"), &OpenTarget::Head, "test").expect("open");
    let data: Vec<u8> = (0..3 * 4096).map(|i| (i % 251) as u8).collect();
    io.write(0, &data, Durability::Buffered).expect("write");
    io.flush().expect("flush");
    // rbd/vm's layer was created first: its id is the lower one.
    let files = layer_files(&root);
    assert_eq!(files.len(), 2, "{files:?}");
    let vm_layer = &files[0];
    assert!(std::fs::metadata(vm_layer.with_extension("crc")).is_ok(), "the layer has its checksum file");

    // Before any damage everything verifies.
    let report = engine.scrub(None, &Progress::default()).expect("scrub");
    assert_eq!((report.images, report.blocks_checked, report.errors.len()), (2, 3, 0), "{report:?}");

    flip_byte(vm_layer, 4096 + 100);

    // The damaged block is never returned: aligned, unaligned, sparse and spanning reads all fail with EIO.
    let mut buf = vec![0u8; 4096];
    let err = io.read(4096, &mut buf).expect_err("a damaged block must not read");
    assert_eq!(err.kind(), ErrorKind::Io, "{err}");
    assert!(err.message().contains("checksum") && err.message().contains("rbd/vm"), "{err}");
    assert!(err.message().contains("offset 4096"), "the message names the offset: {err}");
    assert!(buf.iter().all(|&b| b == 0), "no byte of the damaged block reached the caller");
    let mut small = vec![0u8; 10];
    assert_eq!(io.read(4096 + 95, &mut small).expect_err("unaligned").kind(), ErrorKind::Io);
    let mut span = vec![0u8; 3 * 4096];
    assert_eq!(io.read(0, &mut span).expect_err("spanning").kind(), ErrorKind::Io);
    assert_eq!(io.read_sparse(0, &mut span).expect_err("sparse").kind(), ErrorKind::Io);
    // The blocks around it still read.
    io.read(0, &mut buf).expect("block 0 is intact");
    assert!(buf[..] == data[..4096]);
    io.read(8192, &mut buf).expect("block 2 is intact");

    // Counted, and shown as the image's status; the other image is untouched.
    let errors = engine.checksum_errors();
    let vm_id = engine.image_info(&spec("rbd/vm")).expect("info").id;
    let vm_errors = errors.iter().find(|(id, _, _)| *id == vm_id).expect("rbd/vm has errors");
    assert_eq!(vm_errors.1, 4, "every failed read counted: {errors:?}");
    assert_eq!(engine.image_info(&spec("rbd/vm")).expect("info").status, ImageStatus::Degraded);
    assert_eq!(engine.image_info(&spec("rbd/other")).expect("info").status, ImageStatus::Ok);

    // A copy does not carry the bad bytes over: it fails.
    let copy = CopyRequest { snap: None, dest: spec("rbd/copy"), order: None, features: None, striping: None };
    let err = engine.image_copy(&spec("rbd/vm"), &copy, &Progress::default()).expect_err("copy of damaged data");
    assert_eq!(err.kind(), ErrorKind::Io, "{err}");

    // A snapshot keeps the damaged layer: scrub finds the block there, once, with the image and offset.
    engine.snap_create(&SnapSpec::parse("rbd/vm@s1").expect("snap")).expect("snapshot");
    let report = engine.scrub(Some(&spec("rbd/vm")), &Progress::default()).expect("scrub");
    assert_eq!(report.blocks_checked, 3, "{report:?}");
    assert_eq!(report.errors.len(), 1, "{report:?}");
    let bad = &report.errors[0];
    assert_eq!((bad.image.as_str(), bad.view.as_str(), bad.offset), ("rbd/vm", "@s1", 4096), "{bad:?}");
    let whole = engine.scrub(None, &Progress::default()).expect("scrub store");
    assert_eq!(whole.errors, report.errors);
    assert_eq!(engine.checksum_errors().iter().find(|(id, _, _)| *id == vm_id).expect("errors").1, 1);

    // Writing the block again in the head repairs what the head reads; the snapshot still holds the damage.
    io.write(4096, &data[4096..8192], Durability::Buffered).expect("rewrite");
    io.read(4096, &mut buf).expect("the rewritten block reads");
    assert!(buf[..] == data[4096..8192]);
    engine.snap_remove(&SnapSpec::parse("rbd/vm@s1").expect("snap")).expect("remove snapshot");
    let report = engine.scrub(Some(&spec("rbd/vm")), &Progress::default()).expect("scrub");
    assert!(report.errors.is_empty(), "{report:?}");
    assert_eq!(engine.image_info(&spec("rbd/vm")).expect("info").status, ImageStatus::Ok, "a clean scrub clears it");
    drop(io);
    drop(engine);

    // Closed and reopened: the damage found after a restart is found again.
    let clock = Arc::new(ManualClock::new(Timestamp(1_800_000_000)));
    let engine = Engine::open(&root, clock).expect("reopen");
    let report = engine.scrub(None, &Progress::default()).expect("scrub");
    assert!(report.errors.is_empty(), "{report:?}");
    flip_byte(&layer_files(&root)[0], 10);
    let report = engine.scrub(None, &Progress::default()).expect("scrub");
    assert_eq!(report.errors.len(), 1, "{report:?}");
    assert_eq!(engine.image_info(&spec("rbd/vm")).expect("info").status, ImageStatus::Degraded);
}

#[test]
fn fsck_checks_every_data_block_and_names_a_damaged_one() {
    let (_dir, root, engine) = store_with_vm(16 * MIB);
    let io = engine.open(&spec("rbd/vm"), &OpenTarget::Head, "test").expect("open");
    let data: Vec<u8> = (0..4 * 4096).map(|i| (i % 241) as u8).collect();
    // Two blocks in object 0, four in object 2 (image offset 8 MiB).
    io.write(0, &data[..8192], Durability::Buffered).expect("write");
    io.write(8 * MIB, &data, Durability::Buffered).expect("write");
    // A snapshot, then one block overwritten in the head: seven data blocks over two layers.
    engine.snap_create(&SnapSpec::parse("rbd/vm@s1").expect("snap")).expect("snapshot");
    io.write(8 * MIB + 4096, &data[..4096], Durability::Buffered).expect("overwrite after the snapshot");
    io.flush().expect("flush");
    drop(io);
    drop(engine);

    let report = basalt_engine::fsck::fsck(&root).expect("fsck");
    assert!(report.is_clean(), "{:?}", report.errors);
    assert_eq!((report.layers, report.blocks_checked), (2, 7), "{report:?}");

    // A byte flipped in the snapshot's layer (the older, lower id) in the third block of object 2.
    let files = layer_files(&root);
    assert_eq!(files.len(), 2, "{files:?}");
    flip_byte(&files[0], 8 * MIB + 2 * 4096 + 7);
    let report = basalt_engine::fsck::fsck(&root).expect("fsck");
    assert_eq!(report.blocks_checked, 7, "{report:?}");
    assert_eq!(report.errors.len(), 1, "{:?}", report.errors);
    let error = &report.errors[0];
    assert!(error.contains("'rbd/vm'") && error.contains("@s1"), "names the image and the view: {error}");
    assert!(error.contains(&format!("image offset {}", 8 * MIB + 2 * 4096)), "names the offset: {error}");
    assert!(error.contains("checksum"), "{error}");

    // A byte flipped in the head's sidecar: the crc of its first block of object 0 no longer matches.
    flip_byte(&files[1].with_extension("crc"), 1);
    let report = basalt_engine::fsck::fsck(&root).expect("fsck");
    assert_eq!(report.errors.len(), 1, "the head has nothing in object 0: {:?}", report.errors);
    // The head's own block, at image offset 8 MiB + 4096 (file offset 8 MiB + 4096, crc at 2049 * 4).
    flip_byte(&files[1].with_extension("crc"), 1);
    flip_byte(&files[1].with_extension("crc"), (8 * MIB / 4096 + 1) * 4 + 2);
    let report = basalt_engine::fsck::fsck(&root).expect("fsck");
    assert_eq!(report.errors.len(), 2, "{:?}", report.errors);
    assert!(
        report.errors.iter().any(|e| e.contains("(head") && e.contains(&format!("image offset {}", 8 * MIB + 4096))),
        "{:?}",
        report.errors
    );

    // fsck changed nothing, and scrub on the reopened store finds the same two blocks.
    let clock = Arc::new(ManualClock::new(Timestamp(1_800_000_000)));
    let engine = Engine::open(&root, clock).expect("reopen");
    let report = engine.scrub(None, &Progress::default()).expect("scrub");
    assert_eq!(report.blocks_checked, 7, "{report:?}");
    let mut found: Vec<(String, u64)> = report.errors.iter().map(|e| (e.view.clone(), e.offset)).collect();
    found.sort();
    assert_eq!(found, [("@s1".to_owned(), 8 * MIB + 2 * 4096), ("head".to_owned(), 8 * MIB + 4096)]);
    let snap = basalt_core::SnapName::new("s1").expect("snap name");
    let old = engine.open(&spec("rbd/vm"), &OpenTarget::Snapshot(snap), "test").expect("open snapshot");
    let mut buf = vec![0u8; 4096];
    assert_eq!(old.read(8 * MIB + 2 * 4096, &mut buf).expect_err("damaged").kind(), ErrorKind::Io);
    old.read(8 * MIB + 3 * 4096, &mut buf).expect("the next block is intact");
    assert!(buf[..] == data[3 * 4096..]);
}

/// Checksum error counts are kept in the metadata store: an image found damaged stays degraded after a restart
/// (the counts are written by the next checkpoint, background or at close), until a scrub finds it clean.
#[test]
fn a_degraded_image_stays_degraded_across_a_restart_until_a_clean_scrub() {
    let (_dir, root, engine) = store_with_vm(MIB);
    let clock = Arc::new(ManualClock::new(Timestamp(1_800_000_000)));
    let open = || Engine::open(&root, clock.clone()).expect("open");
    let data = vec![0x5au8; 4096];
    {
        let io = engine.open(&spec("rbd/vm"), &OpenTarget::Head, "test").expect("open");
        io.write(0, &data, Durability::ForceUnitAccess).expect("write");
        flip_byte(&layer_files(&root)[0], 7);
        let mut buf = vec![0u8; 4096];
        assert_eq!(io.read(0, &mut buf).expect_err("damaged").kind(), ErrorKind::Io);
    }
    assert_eq!(engine.image_info(&spec("rbd/vm")).expect("info").status, ImageStatus::Degraded);
    drop(engine);

    // Reopened, with nothing read yet: still degraded, with the count it had.
    let engine = open();
    let info = engine.image_info(&spec("rbd/vm")).expect("info");
    assert_eq!(info.status, ImageStatus::Degraded, "{info:?}");
    assert_eq!(engine.checksum_errors().iter().find(|(id, _, _)| *id == info.id).map(|e| e.1), Some(1));

    // Repaired by rewriting the block, then a clean scrub clears it, also for the next open.
    {
        let io = engine.open(&spec("rbd/vm"), &OpenTarget::Head, "test").expect("open");
        io.write(0, &data, Durability::ForceUnitAccess).expect("rewrite");
    }
    assert_eq!(engine.image_info(&spec("rbd/vm")).expect("info").status, ImageStatus::Degraded, "not scrubbed yet");
    assert!(engine.scrub(Some(&spec("rbd/vm")), &Progress::default()).expect("scrub").errors.is_empty());
    assert_eq!(engine.image_info(&spec("rbd/vm")).expect("info").status, ImageStatus::Ok);
    drop(engine);
    let engine = open();
    assert_eq!(engine.image_info(&spec("rbd/vm")).expect("info").status, ImageStatus::Ok);

    // Removing the image removes its counts.
    flip_byte(&layer_files(&root)[0], 9);
    assert_eq!(engine.scrub(None, &Progress::default()).expect("scrub").errors.len(), 1);
    let id = engine.image_info(&spec("rbd/vm")).expect("info").id;
    engine.image_remove(&spec("rbd/vm"), &Progress::default()).expect("remove");
    assert!(engine.checksum_errors().iter().all(|(i, _, _)| *i != id));
    drop(engine);
    assert!(open().checksum_errors().is_empty());
}
