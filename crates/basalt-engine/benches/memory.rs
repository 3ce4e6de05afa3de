//! Memory of the engine with the default metadata budget (256 MiB, `serve --cache-size`): the process's resident
//! set while
//! - a 1 TiB image is written in every 4 MiB object, snapshotted, and written again, 11 times (the head and 10
//!   snapshots each hold a bitmap for every object: as much bitmap as a fully written 1 TiB layer each), then read
//!   through the head and every snapshot;
//! - 10,000 images are created, written and read, each through its own open handle.
//!
//! A bitmap costs the same whether one block or all 1024 of its object are written, so each object gets one 4 KiB
//! block here, which keeps the data written to 11 GiB. `BASALT_BENCH_GIB` (default 1024) and
//! `BASALT_BENCH_IMAGES` (default 10000) scale the two cases; `BASALT_BENCH_CACHE_MIB` sets the budget (a huge one
//! shows what the bitmaps would take unbounded).
//!
//! `cargo bench -p basalt-engine --bench memory`
//!
//! Where it runs matters for time, not for memory. The 1 TiB case writes 11 GiB of data and, as every 4 KiB page of
//! each layer's checksum sidecar gets one crc, 11 GiB of sidecars. On ext4 each scattered 4 KiB allocation searches
//! the block groups, and one round of the 11 took over 10 minutes; XFS with speculative preallocation off runs all
//! of it in about 5 minutes (`BASALT_BENCH_DIR` names the directory; a loop file will do:
//! `truncate -s 40G xfs.img && mkfs.xfs xfs.img && mount -o loop,allocsize=4k xfs.img /mnt/x`). Without
//! `allocsize=4k`, XFS preallocates past the end of every growing file and the 40 GiB fill up.

use std::sync::Arc;
use std::time::Instant;

use basalt_core::{
    Backend, CreateOptions, Durability, ImageIo, ImageSpec, OpenTarget, PoolName, SnapName, SnapSpec, SystemClock,
};
use basalt_engine::vfs::OsVfs;
use basalt_engine::{Engine, EngineOptions};

const MIB: u64 = 1 << 20;
const OBJECT: u64 = 4 * MIB;
const SNAPSHOTS: usize = 10;

/// MiB the allocator holds for live allocations (glibc): what the resident set holds beyond it is the program, the
/// stacks, and free memory the allocator kept.
fn heap() -> f64 {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallinfo2 only reads the allocator's statistics.
    return unsafe { libc::mallinfo2() }.uordblks as f64 / MIB as f64;
    #[allow(unreachable_code)]
    0.0
}

/// `(resident now, peak resident)` in MiB, from /proc/self/status.
fn rss() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kib| kib.parse::<f64>().ok())
            .map_or(0.0, |kib| kib / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn report(engine: &Engine, what: &str, started: Instant) {
    let (now, peak) = rss();
    let (bitmaps, bitmap_peak, budget) = engine.bitmap_memory();
    let mib = |b: usize| b as f64 / MIB as f64;
    println!(
        "  {what:<58} RSS {now:7.1} MiB (peak {peak:7.1}, heap {:6.1})  bitmaps {:6.1} MiB (peak {:6.1}, budget {:.0})  \
         {:6.1} s",
        heap(),
        mib(bitmaps),
        mib(bitmap_peak),
        mib(budget),
        started.elapsed().as_secs_f64()
    );
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    let gib = env("BASALT_BENCH_GIB", 1024);
    let images = env("BASALT_BENCH_IMAGES", 10_000);
    let dir = tempfile::tempdir_in(std::env::var("BASALT_BENCH_DIR").unwrap_or_else(|_| "/var/tmp".into()))
        .expect("temp dir");
    let cache = env("BASALT_BENCH_CACHE_MIB", (basalt_engine::DEFAULT_METADATA_CACHE >> 20) as u64) as usize;
    let options = EngineOptions { metadata_cache_bytes: cache << 20, ..EngineOptions::default() };
    let engine = Engine::open_with_options(Arc::new(OsVfs), &dir.path().join("store"), Arc::new(SystemClock), options)
        .expect("open engine");
    let pool = PoolName::new("rbd").expect("pool");
    engine.pool_create(&pool).expect("pool create");
    engine.pool_application_enable(&pool, "rbd").expect("application");
    let started = Instant::now();
    println!("memory with a metadata budget of {cache} MiB");
    report(&engine, "an empty store", started);

    let size = gib << 30;
    let objects = size / OBJECT;
    let spec = ImageSpec::parse("rbd/big").expect("spec");
    engine.image_create(&spec, &CreateOptions::with_size(size)).expect("create");
    let io = engine.open(&spec, &OpenTarget::Head, "bench").expect("open");
    let block = vec![0x5au8; 4096];
    for round in 0..=SNAPSHOTS {
        for object in 0..objects {
            io.write(object * OBJECT + (round as u64 % 1024) * 4096, &block, Durability::Buffered).expect("write");
        }
        if round < SNAPSHOTS {
            engine.snap_create(&SnapSpec::parse(&format!("rbd/big@s{round}")).expect("snap")).expect("snapshot");
        }
    }
    io.flush().expect("flush");
    report(&engine, &format!("{gib} GiB image, every object written in 11 layers"), started);
    let mut buf = vec![0u8; 4096];
    let mut targets: Vec<OpenTarget> =
        (0..SNAPSHOTS).map(|s| OpenTarget::Snapshot(SnapName::new(format!("s{s}")).expect("name"))).collect();
    targets.push(OpenTarget::HeadReadOnly);
    for target in &targets {
        let reader = engine.open(&spec, target, "bench").expect("open");
        for object in 0..objects {
            reader.read(object * OBJECT, &mut buf).expect("read");
        }
    }
    report(&engine, "... then read in every object of every snapshot and the head", started);
    drop(io);

    let started = Instant::now();
    let mut handles: Vec<Box<dyn ImageIo>> = Vec::new();
    for n in 0..images {
        let spec = ImageSpec::parse(&format!("rbd/vm{n}")).expect("spec");
        engine.image_create(&spec, &CreateOptions::with_size(10 << 30)).expect("create");
        let io = engine.open(&spec, &OpenTarget::Head, "bench").expect("open");
        io.write(0, &block, Durability::Buffered).expect("write");
        io.read(0, &mut buf).expect("read");
        handles.push(io);
    }
    report(&engine, &format!("... and {images} images of 10 GiB, written and open"), started);
    for io in &handles {
        io.read(0, &mut buf).expect("read");
    }
    report(&engine, &format!("... and each of the {images} read again"), started);
}
