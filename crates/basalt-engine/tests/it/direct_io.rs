//! Layer files that bypass the page cache (`serve --direct-io`), on the real file system: every kind of write and
//! read, with buffers at any address, reads back what a model says, through the direct files and after reopening
//! the store with buffered ones; the layer files are the ones opened with `O_DIRECT`.

use std::path::Path;
use std::sync::Arc;

use basalt_core::{Backend, Clock, CreateOptions, Durability, ImageSpec, ManualClock, OpenTarget, PoolName, Timestamp};
use basalt_engine::vfs::{DirectVfs, OsVfs, Vfs};
use basalt_engine::{Engine, EngineOptions};

const MIB: u64 = 1 << 20;
const SIZE: u64 = 16 * MIB;

fn open(vfs: Arc<dyn Vfs>, dir: &Path) -> Engine {
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(Timestamp(1_700_000_000)));
    Engine::open_with_options(vfs, dir, clock, EngineOptions::default()).expect("open")
}

fn spec() -> ImageSpec {
    ImageSpec::parse("rbd/vm").expect("spec")
}

/// The `open` flags of this process's descriptors of files in `dir`, by file name.
fn open_flags_in(dir: &Path) -> Vec<(String, u32)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd").expect("fds") {
        let entry = entry.expect("fd");
        let Ok(target) = std::fs::read_link(entry.path()) else { continue };
        if target.parent() != Some(dir) {
            continue;
        }
        let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", entry.file_name().to_string_lossy()));
        let Ok(info) = info else { continue };
        let flags = info.lines().find_map(|l| l.strip_prefix("flags:")).expect("flags line").trim().to_owned();
        let name = target.file_name().expect("name").to_string_lossy().into_owned();
        found.push((name, u32::from_str_radix(&flags, 8).expect("octal flags")));
    }
    found
}

#[test]
fn direct_io_layer_files_keep_every_write_read_at_any_address() {
    let dir = tempfile::tempdir().expect("tempdir");
    DirectVfs::probe(dir.path()).expect("the test directory's file system takes O_DIRECT");
    let engine = open(Arc::new(DirectVfs), dir.path());
    let pool = PoolName::new("rbd").expect("pool");
    engine.pool_create(&pool).expect("pool");
    engine.pool_application_enable(&pool, "rbd").expect("tag");
    engine.image_create(&spec(), &CreateOptions::with_size(SIZE)).expect("create");
    let io = engine.open(&spec(), &OpenTarget::Head, "t").expect("open");

    // An object's first write reserves the whole object (4 MiB) in the layer file, so direct writes into it do not
    // allocate.
    io.write(0, &[7u8; 4096], Durability::Buffered).expect("a first write");
    let layers = dir.path().join(basalt_engine::LAYERS_DIR);
    let allocated: u64 = std::fs::read_dir(&layers)
        .expect("layers")
        .map(|e| e.expect("entry"))
        .filter(|e| e.file_name().to_string_lossy().ends_with(".layer"))
        .map(|e| std::os::unix::fs::MetadataExt::blocks(&e.metadata().expect("metadata")) * 512)
        .sum();
    assert!(allocated >= 4 * MIB, "the first write reserved its object: {allocated} bytes allocated");

    let mut model = vec![0u8; SIZE as usize];
    model[..4096].fill(7);
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    // New blocks, overwrites (short ones, which a buffered store would defer), partial blocks, whole objects and
    // writes across objects, each from a buffer one byte past an aligned address.
    let lengths = [4096usize, 8192, 512, 100, 65536, 4 * MIB as usize, 3 * 4096 + 7];
    for i in 0..200u64 {
        let len = lengths[(next() % lengths.len() as u64) as usize];
        let offset = if i % 3 == 0 { next() % (SIZE - len as u64) } else { (next() % (SIZE / 4096 - 4)) * 4096 };
        let offset = offset.min(SIZE - len as u64);
        let mut buf = vec![0u8; len + 1];
        buf[1..].fill((i % 251) as u8 + 1);
        io.write(offset, &buf[1..], Durability::Buffered).expect("write");
        model[offset as usize..offset as usize + len].copy_from_slice(&buf[1..]);
        if i % 50 == 49 {
            io.flush().expect("flush");
        }
    }
    let check = |io: &dyn basalt_core::ImageIo, when: &str| {
        let mut buf = vec![0u8; MIB as usize + 1];
        for at in (0..SIZE).step_by(MIB as usize) {
            io.read(at, &mut buf[1..]).expect("read");
            assert!(buf[1..] == model[at as usize..(at + MIB) as usize], "{when}: the MiB at {at} differs");
        }
        let mut small = vec![0u8; 700];
        io.read(5000, &mut small[3..]).expect("an unaligned read");
        assert!(small[3..] == model[5000..5697], "{when}: an unaligned read");
    };
    check(&*io, "through the direct files");

    let flags = open_flags_in(&dir.path().join(basalt_engine::LAYERS_DIR));
    let direct = |name: &str| flags.iter().any(|(n, f)| n == name && f & libc::O_DIRECT as u32 != 0);
    let layers: Vec<&String> = flags.iter().map(|(n, _)| n).filter(|n| n.ends_with(".layer")).collect();
    assert!(!layers.is_empty(), "the image's layer file is open: {flags:?}");
    assert!(layers.iter().all(|n| direct(n)), "every layer file has an O_DIRECT descriptor: {flags:?}");
    assert!(!flags.iter().any(|(n, _)| n.ends_with(".crc") && direct(n)), "sidecars stay buffered: {flags:?}");

    io.flush().expect("flush");
    drop(io);
    drop(engine);
    let engine = open(Arc::new(OsVfs), dir.path());
    let io = engine.open(&spec(), &OpenTarget::Head, "t").expect("open");
    check(&*io, "reopened without direct I/O");
    drop(io);
    drop(engine);
    let engine = open(Arc::new(DirectVfs), dir.path());
    let io = engine.open(&spec(), &OpenTarget::Head, "t").expect("open");
    check(&*io, "reopened with direct I/O");
}
