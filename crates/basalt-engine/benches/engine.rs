//! Benchmark of basalt's embedded engine on the real file system, with plain-file baselines beside it:
//!
//! 1. 1 MiB sequential write (flush included) then cold and warm sequential read; this data also serves as the
//!    pre-written region of the copy-on-write case below.
//! 2. 4 KiB random writes, 4 threads sharing one handle and 1 thread: (a) fresh image, (b) fully written region
//!    snapshotted just before (copy-on-write), (c) never-written region snapshotted just before. Writes are buffered,
//!    so the rate is that of the page cache; the flush that makes each run durable is timed apart.
//! 3. Snapshot create, protect and clone latency at 1 GiB and 1 TiB thin image size (should not depend on size).
//! 4. `du` and `diff` on a 1 TiB thin image holding scattered 4 MiB chunks.
//!
//! Run with `cargo bench -p basalt-engine --bench engine`; `BASALT_BENCH_SCALE=0.1` shrinks sizes and op counts for a
//! quick run. Everything lives in a fresh directory under the system temp dir (about 16 GiB at scale 1), removed at
//! the end; the cleanup time is printed because removing files with scattered blocks is slow on some file systems.

use std::collections::HashSet;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use basalt_core::{
    Backend, CloneRequest, CreateOptions, DiffExtent, DiffGranularity, Durability, ImageIo, ImageSpec, OpenTarget,
    PoolName, SnapName, SnapSpec, SystemClock,
};
use basalt_engine::{Engine, LAYERS_DIR};

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const TIB: u64 = 1 << 40;
/// The engine's allocation unit and the random-write size.
const BLOCK: u64 = 4 * KIB;
/// Sequential I/O size.
const CHUNK: u64 = MIB;
/// Default object size (order 22): du/diff chunks are whole objects.
const OBJECT: u64 = 4 * MIB;
/// Writers sharing one handle in the concurrent runs.
const THREADS: usize = 4;
/// Runs per random-write case, interleaved with the other cases so that machine noise hits all of them alike.
const RANDOM_REPS: usize = 3;
/// Bounds a random-write run, so a pathological slowdown shows as low IOPS instead of an endless benchmark.
const RANDOM_CAP: Duration = Duration::from_secs(10);

/// Tags stamped into every written block (after its image offset) so reads can tell who wrote it.
const TAG_SEQ: u64 = 0x5345_5100_0000_0001;
const TAG_FRESH: u64 = 0x5345_5100_0000_0002;
const TAG_COW: u64 = 0x5345_5100_0000_0003;
const TAG_NEW: u64 = 0x5345_5100_0000_0004;
const TAG_META: u64 = 0x5345_5100_0000_0005;

/// Sizes and counts, shrunk by `BASALT_BENCH_SCALE`.
#[derive(Debug)]
struct Config {
    scale: f64,
    /// Random-write region, and the sequential-I/O size (it pre-writes the copy-on-write region).
    region: u64,
    /// Ops per random-write run.
    random_ops: u64,
    repeats: usize,
    /// 4 MiB chunks written into the 1 TiB du/diff image.
    du_chunks: u64,
}

impl Config {
    fn from_env() -> Config {
        let scale = match std::env::var("BASALT_BENCH_SCALE") {
            Ok(s) => s.trim().parse::<f64>().expect("BASALT_BENCH_SCALE must be a number such as 0.1"),
            Err(_) => 1.0,
        };
        assert!(scale.is_finite() && scale > 0.0, "BASALT_BENCH_SCALE must be positive, got {scale}");
        // Whole MiB so the sequential pass tiles it exactly; a floor keeps tiny scales meaningful.
        let region = (((4 * GIB) as f64 * scale) as u64 / MIB).max(64) * MIB;
        Config {
            scale,
            region,
            // Not more: every run leaves ~ops scattered 4 KiB blocks, and freeing scattered blocks costs 60-120 us
            // each on an ext4 mounted with `discard` (as on the reference VM): 600k of them cost ~40 s of cleanup.
            random_ops: ((25_000.0 * scale) as u64).max(2_000),
            repeats: ((20.0 * scale) as usize).max(5),
            du_chunks: ((256.0 * scale) as u64).max(16) / 2 * 2,
        }
    }
}

/// A fixed xorshift64 generator: the same offsets on every run and in every variant being compared.
#[derive(Debug)]
struct XorShift(u64);

impl XorShift {
    fn new(stream: u64) -> XorShift {
        XorShift(0x2545_f491_4f6c_dd1d ^ (stream + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15))
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

/// Stamps each 4 KiB block of `buf` (which lands at image `offset`) with its offset and `tag`; the rest of the block
/// keeps whatever filler it had.
fn stamp(buf: &mut [u8], offset: u64, tag: u64) {
    for (i, block) in buf.chunks_mut(BLOCK as usize).enumerate() {
        block[..8].copy_from_slice(&(offset + i as u64 * BLOCK).to_le_bytes());
        block[8..16].copy_from_slice(&tag.to_le_bytes());
    }
}

/// Returns the tags of the blocks of `buf` read at `offset`, or None when a block carries another offset (data
/// landed in the wrong place). An all-zero stamp reads as tag 0.
fn stamps(buf: &[u8], offset: u64) -> Option<Vec<u64>> {
    let word = |b: &[u8]| u64::from_le_bytes(b.try_into().expect("8 bytes"));
    let mut tags = Vec::new();
    for (i, block) in buf.chunks(BLOCK as usize).enumerate() {
        let (off, tag) = (word(&block[..8]), word(&block[8..16]));
        if (off, tag) == (0, 0) && block.iter().all(|b| *b == 0) {
            tags.push(0);
        } else if off == offset + i as u64 * BLOCK {
            tags.push(tag);
        } else {
            return None;
        }
    }
    Some(tags)
}

fn image(name: &str) -> ImageSpec {
    ImageSpec::parse(&format!("rbd/{name}")).expect("image spec")
}

fn snap(image: &str, snap: &str) -> SnapSpec {
    SnapSpec::parse(&format!("rbd/{image}@{snap}")).expect("snapshot spec")
}

fn create_and_open(engine: &Engine, name: &str, size: u64) -> Arc<Box<dyn ImageIo>> {
    engine.image_create(&image(name), &CreateOptions::with_size(size)).expect("create image");
    Arc::new(engine.open(&image(name), &OpenTarget::Head, "bench").expect("open image head"))
}

/// Drops the clean page-cache pages of a file or of every file in a directory, so the next read comes from disk.
fn drop_page_cache(path: &Path) {
    let files: Vec<_> = if path.is_dir() {
        std::fs::read_dir(path).expect("list dir").map(|e| e.expect("dir entry").path()).collect()
    } else {
        vec![path.to_owned()]
    };
    for file in files {
        let f = File::open(&file).expect("open file to drop its cache");
        // Dirty pages are not dropped: make sure there are none.
        f.sync_data().expect("sync before dropping cache");
        // SAFETY: posix_fadvise on a descriptor we own for the whole call; no memory is passed.
        let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        assert_eq!(rc, 0, "posix_fadvise failed on {}", file.display());
    }
}

fn mib_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / MIB as f64 / d.as_secs_f64()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort_unstable();
    v[v.len() / 2]
}

// --- random writes ---------------------------------------------------------------------------------------------------

type WriteFn = Arc<dyn Fn(u64, &[u8]) + Send + Sync>;

/// What one random-write run measured.
#[derive(Debug)]
struct RandomRun {
    ops: u64,
    elapsed: Duration,
    /// Per-op latency in nanoseconds, sorted.
    latencies: Vec<u32>,
    capped: bool,
    /// The flush after the run (not part of `elapsed`), making the run's data durable before the next one.
    flush: Duration,
}

impl RandomRun {
    fn iops(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile_us(&self, p: f64) -> f64 {
        let idx = ((self.latencies.len() - 1) as f64 * p).round() as usize;
        self.latencies[idx] as f64 / 1e3
    }
}

/// `ops` 4 KiB writes at random aligned offsets in `[base, base + region)`, split over `threads` threads that share
/// `write`; then `flush`, timed apart.
fn random_writes(
    write: &WriteFn,
    flush: impl FnOnce(),
    threads: usize,
    ops: u64,
    base: u64,
    region: u64,
    tag: u64,
) -> RandomRun {
    let per_thread = ops / threads as u64;
    let blocks = region / BLOCK;
    let barrier = Arc::new(Barrier::new(threads + 1));
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let (write, barrier) = (Arc::clone(write), Arc::clone(&barrier));
            std::thread::spawn(move || {
                // Seeds depend on the thread only, so (a), (b) and (c) write the same pattern.
                let mut rng = XorShift::new(t as u64);
                let mut buf = vec![0xa5u8; BLOCK as usize];
                let mut latencies = Vec::with_capacity(per_thread as usize);
                barrier.wait();
                let start = Instant::now();
                let mut capped = false;
                for i in 0..per_thread {
                    if i % 256 == 0 && start.elapsed() > RANDOM_CAP {
                        capped = true;
                        break;
                    }
                    let offset = base + rng.next() % blocks * BLOCK;
                    stamp(&mut buf, offset, tag);
                    let t0 = Instant::now();
                    write(offset, &buf);
                    latencies.push(t0.elapsed().as_nanos().min(u32::MAX as u128) as u32);
                }
                (latencies, capped)
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    let mut latencies = Vec::with_capacity(ops as usize);
    let mut capped = false;
    for worker in workers {
        let (l, c) = worker.join().expect("writer thread panicked");
        latencies.extend(l);
        capped |= c;
    }
    let elapsed = start.elapsed();
    let t = Instant::now();
    flush();
    let flush = t.elapsed();
    latencies.sort_unstable();
    RandomRun { ops: latencies.len() as u64, elapsed, latencies, capped, flush }
}

fn engine_writer(io: &Arc<Box<dyn ImageIo>>) -> WriteFn {
    let io = Arc::clone(io);
    Arc::new(move |offset, data| io.write(offset, data, Durability::Buffered).expect("engine write"))
}

fn file_writer(file: &Arc<File>) -> WriteFn {
    let file = Arc::clone(file);
    Arc::new(move |offset, data| file.write_all_at(data, offset).expect("file write"))
}

fn print_random_header() {
    println!(
        "  {:<36} {:>3} {:>6} {:>7} {:>11} {:>6} {:>6} {:>6} {:>6} {:>7}",
        "case", "thr", "ops", "IOPS", "min-max k", "MiB/s", "p50 us", "p99 us", "max ms", "flush s"
    );
}

/// Prints the runs of one case: median IOPS and its spread, latency over all runs, median flush. Returns the
/// median IOPS.
fn print_random(label: &str, threads: usize, runs: &[RandomRun]) -> f64 {
    let mut iops: Vec<f64> = runs.iter().map(RandomRun::iops).collect();
    iops.sort_by(f64::total_cmp);
    let mut flushes: Vec<Duration> = runs.iter().map(|r| r.flush).collect();
    let mut all = RandomRun {
        ops: runs.iter().map(|r| r.ops).sum(),
        elapsed: runs.iter().map(|r| r.elapsed).sum(),
        latencies: runs.iter().flat_map(|r| r.latencies.iter().copied()).collect(),
        capped: runs.iter().any(|r| r.capped),
        flush: median(&mut flushes),
    };
    all.latencies.sort_unstable();
    let mid = iops[iops.len() / 2];
    println!(
        "  {:<36} {:>3} {:>6} {:>7.0} {:>11} {:>6.0} {:>6.1} {:>6.1} {:>6.1} {:>7.2}{}",
        label,
        threads,
        all.ops,
        mid,
        format!("{:.0}-{:.0}", iops[0] / 1e3, iops[iops.len() - 1] / 1e3),
        mid * BLOCK as f64 / MIB as f64,
        all.percentile_us(0.5),
        all.percentile_us(0.99),
        all.latencies.last().copied().unwrap_or(0) as f64 / 1e6,
        all.flush.as_secs_f64(),
        if all.capped { "  (hit the time cap)" } else { "" }
    );
    mid
}

// --- sequential I/O ------------------------------------------------------------------------------------------------

/// Writes `[0, size)` in 1 MiB pieces then flushes; returns (total including flush, flush alone).
fn seq_write(write: impl Fn(u64, &[u8]), flush: impl FnOnce(), size: u64) -> (Duration, Duration) {
    let mut buf = vec![0x5au8; CHUNK as usize];
    let start = Instant::now();
    for offset in (0..size).step_by(CHUNK as usize) {
        stamp(&mut buf, offset, TAG_SEQ);
        write(offset, &buf);
    }
    let t = Instant::now();
    flush();
    (start.elapsed(), t.elapsed())
}

/// Reads `[0, size)` in 1 MiB pieces, checking every block's stamp.
fn seq_read(read: impl Fn(u64, &mut [u8]), size: u64) -> Duration {
    let mut buf = vec![0u8; CHUNK as usize];
    let start = Instant::now();
    for offset in (0..size).step_by(CHUNK as usize) {
        read(offset, &mut buf);
        let tags = stamps(&buf, offset).expect("sequential read returned a block from another offset");
        assert!(tags.iter().all(|t| *t == TAG_SEQ), "sequential read at {offset} returned data not written there");
    }
    start.elapsed()
}

fn print_seq(label: &str, bytes: u64, d: Duration, note: &str) {
    println!("  {:<44} {:>6} {:>7.2} {:>8.0}  {}", label, bytes / MIB, d.as_secs_f64(), mib_s(bytes, d), note);
}

/// Writes a new plain file sequentially with fdatasync and prints the row; returns the file, its cache dropped.
fn plain_seq_write(path: &Path, size: u64, label: &str) -> File {
    let file = File::options().read(true).write(true).create_new(true).open(path).expect("create plain file");
    let (total, flush) = seq_write(
        |off, data| file.write_all_at(data, off).expect("file write"),
        || file.sync_data().expect("file sync"),
        size,
    );
    print_seq(label, size, total, &format!("(fdatasync {:.2} s)", flush.as_secs_f64()));
    drop_page_cache(path);
    file
}

// --- the sections --------------------------------------------------------------------------------------------------

/// Sequential I/O then random writes; the sequential data is the pre-written region of the copy-on-write case.
fn data_path(engine: &Engine, root: &Path, cfg: &Config) {
    let region = cfg.region;
    println!("\n== 1 MiB sequential I/O over {} MiB (1 thread) ==", region / MIB);
    println!("  {:<44} {:>6} {:>7} {:>8}", "case", "MiB", "s", "MiB/s");
    // On the reference VM, whatever first grows the page cache to this size writes up to 4x slower than later passes,
    // apparently because memory the guest has not used lately is slow to hand out: a plain-file pass goes first, so
    // the engine and the plain-file pass after it meet the same memory. Its file stays until the end: removing it
    // first made the next pass slower again.
    drop(plain_seq_write(&root.join("warm-up.bin"), region, "plain file write + fdatasync (warm-up)"));

    // [0,R) is pre-written here then copied on write; after it, one never-written region per (c) run.
    let cow = create_and_open(engine, "cow", region * (1 + 2 * RANDOM_REPS as u64));
    let (total, flush) = seq_write(
        |off, data| cow.write(off, data, Durability::Buffered).expect("engine write"),
        || cow.flush().expect("engine flush"),
        region,
    );
    print_seq("engine write + flush", region, total, &format!("(flush {:.2} s)", flush.as_secs_f64()));
    let layers = root.join("store").join(LAYERS_DIR);
    drop_page_cache(&layers);
    let read = |off: u64, buf: &mut [u8]| cow.read(off, buf).expect("engine read");
    print_seq("engine read, cold (page cache dropped)", region, seq_read(read, region), "");
    print_seq("engine read, warm", region, seq_read(read, region), "");
    drop_page_cache(&layers);

    // The same pattern on a plain file (the engine's layer files map image offsets 1:1).
    let raw_path = root.join("raw-seq.bin");
    let raw = plain_seq_write(&raw_path, region, "plain file write + fdatasync");
    let read = |off: u64, buf: &mut [u8]| raw.read_exact_at(buf, off).expect("file read");
    print_seq("plain file read, cold", region, seq_read(read, region), "");
    print_seq("plain file read, warm", region, seq_read(read, region), "");
    drop_page_cache(&raw_path);

    println!(
        "\n== 4 KiB random writes, aligned, over a {} MiB region: {} runs of {} ops per case, median (cap {} s/run) ==",
        region / MIB,
        RANDOM_REPS,
        cfg.random_ops,
        RANDOM_CAP.as_secs()
    );
    print_random_header();
    // Each run ends with a flush (timed apart), then its now clean pages leave the page cache, so every run starts
    // from the same memory state: on the reference VM, runs that grew the page cache into untouched memory were up
    // to 3x slower, engine and plain file alike.
    let engine_run = |io: &Arc<Box<dyn ImageIo>>, threads: usize, base: u64, tag: u64| {
        let run = random_writes(
            &engine_writer(io),
            || io.flush().expect("engine flush"),
            threads,
            cfg.random_ops,
            base,
            region,
            tag,
        );
        drop_page_cache(&layers);
        run
    };
    let mut ratios = Vec::new();
    for (t, threads) in [THREADS, 1].into_iter().enumerate() {
        let (mut fresh, mut cows, mut news, mut raws) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for r in 0..RANDOM_REPS {
            // (a) a fresh thin image of the region's size.
            let io = create_and_open(engine, &format!("fresh-{threads}-{r}"), region);
            fresh.push(engine_run(&io, threads, 0, TAG_FRESH));
            drop(io);

            // (b) every target block holds data in the snapshot just taken: each write is a copy-on-write. An
            // aligned 4 KiB write replaces a whole block, so the engine need not read or copy the old data.
            engine.snap_create(&snap("cow", &format!("b{threads}-{r}"))).expect("snapshot");
            cows.push(engine_run(&cow, threads, 0, TAG_COW));

            // (c) a snapshot was just taken but this region never held data: each run gets its own region.
            engine.snap_create(&snap("cow", &format!("c{threads}-{r}"))).expect("snapshot");
            let base = region * (1 + (t * RANDOM_REPS + r) as u64);
            news.push(engine_run(&cow, threads, base, TAG_NEW));

            // Baseline: the same offsets on a fresh sparse file. Files stay until the final cleanup: removing one
            // with scattered blocks keeps the disk busy with discards that would slow the runs after it.
            let path = root.join(format!("raw-rand-{threads}-{r}.bin"));
            let file = Arc::new(File::options().write(true).create_new(true).open(&path).expect("create raw file"));
            file.set_len(region).expect("size raw file");
            raws.push(random_writes(
                &file_writer(&file),
                || file.sync_data().expect("file sync"),
                threads,
                cfg.random_ops,
                0,
                region,
                TAG_FRESH,
            ));
            drop_page_cache(&path);
        }
        let a = print_random("(a) fresh image", threads, &fresh);
        let b = print_random("(b) written region, after snapshot", threads, &cows);
        let c = print_random("(c) unwritten region, after snapshot", threads, &news);
        let raw = print_random("plain sparse file (baseline)", threads, &raws);
        ratios.push((threads, b / a, c / a, a / raw));
    }
    for (threads, ba, ca, araw) in ratios {
        println!(
            "  {threads} thread(s): median IOPS ratio (b)/(a) = {ba:.2}, (c)/(a) = {ca:.2}, (a)/plain file = {araw:.2}"
        );
    }
    verify_cow(engine, &cow, region);
}

/// Spot-checks that copy-on-write kept the snapshots intact and the head consistent.
fn verify_cow(engine: &Engine, head: &Arc<Box<dyn ImageIo>>, region: u64) {
    let sample = |io: &dyn ImageIo, base: u64, allowed: &[u64]| -> usize {
        let mut rng = XorShift::new(99);
        let mut buf = vec![0u8; BLOCK as usize];
        let mut bad = 0;
        for _ in 0..2_000 {
            let offset = base + rng.next() % (region / BLOCK) * BLOCK;
            io.read(offset, &mut buf).expect("read");
            match stamps(&buf, offset) {
                Some(tags) if allowed.contains(&tags[0]) => {}
                _ => bad += 1,
            }
        }
        bad
    };
    let open_snap = |name: &str| {
        let target = OpenTarget::Snapshot(SnapName::new(name).expect("snapshot name"));
        engine.open(&image("cow"), &target, "bench-verify").expect("open snapshot")
    };
    // Before the first copy-on-write run the region held only sequential data, and [R,2R) nothing.
    let bad_b = sample(open_snap(&format!("b{THREADS}-0")).as_ref(), 0, &[TAG_SEQ]);
    let bad_c = sample(open_snap(&format!("c{THREADS}-0")).as_ref(), region, &[0]);
    let bad_head = sample(&***head, 0, &[TAG_SEQ, TAG_COW]);
    let bad_new = sample(&***head, region, &[0, TAG_NEW]);
    let verdict = if bad_b + bad_c + bad_head + bad_new == 0 { "ok" } else { "MISMATCH" };
    println!(
        "  verify (2000 sampled blocks each): snapshot b{THREADS}-0 {bad_b} bad, snapshot c{THREADS}-0 {bad_c} bad, \
         head {bad_head} + {bad_new} bad: {verdict}"
    );
}

/// Snapshot create, protect and clone at two image sizes; each image holds a little data so it is not empty.
fn snapshot_ops(engine: &Engine, cfg: &Config) {
    println!("\n== snapshot create / protect / clone, {} repetitions, median (max) in ms ==", cfg.repeats);
    println!("  {:<10} {:>18} {:>18} {:>18}", "image size", "snap create", "snap protect", "clone");
    for (label, size) in [("1 GiB", GIB), ("1 TiB", TIB)] {
        let name = format!("meta-{}", label.replace(' ', ""));
        let io = create_and_open(engine, &name, size);
        let mut buf = vec![0x3cu8; OBJECT as usize];
        for i in 0..8 {
            let offset = size / 8 * i;
            stamp(&mut buf, offset, TAG_META);
            io.write(offset, &buf, Durability::Buffered).expect("write");
        }
        // Closing flushes; the timed operations then measure metadata work only.
        drop(io);
        let (mut create, mut protect, mut clone) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..cfg.repeats {
            let spec = snap(&name, &format!("s{i}"));
            let t = Instant::now();
            engine.snap_create(&spec).expect("snapshot create");
            create.push(t.elapsed());
            let t = Instant::now();
            engine.snap_protect(&spec).expect("snapshot protect");
            protect.push(t.elapsed());
            let t = Instant::now();
            engine.clone_image(&spec, &image(&format!("{name}-c{i}")), &CloneRequest::inherit()).expect("clone");
            clone.push(t.elapsed());
        }
        let cell = |v: &mut Vec<Duration>| {
            let max = v.iter().max().copied().unwrap_or_default();
            format!("{:.2} ({:.2})", ms(median(v)), ms(max))
        };
        println!("  {:<10} {:>18} {:>18} {:>18}", label, cell(&mut create), cell(&mut protect), cell(&mut clone));

        // The last clone must read its parent's data.
        let child = image(&format!("{name}-c{}", cfg.repeats - 1));
        let io = engine.open(&child, &OpenTarget::HeadReadOnly, "bench-verify").expect("open clone");
        let offset = size / 8 * 7;
        io.read(offset, &mut buf).expect("read clone");
        let ok = stamps(&buf, offset).is_some_and(|t| t.iter().all(|t| *t == TAG_META));
        assert!(ok, "clone of {name} does not read its parent's data at {offset}");
    }
}

/// du and diff on a 1 TiB thin image with data in scattered whole objects, half before a snapshot, half after.
fn du_and_diff(engine: &Engine, cfg: &Config) {
    let chunks = cfg.du_chunks;
    let written = chunks * OBJECT;
    println!("\n== du / diff on a 1 TiB thin image, {} MiB in {chunks} scattered 4 MiB chunks ==", written / MIB);
    let io = create_and_open(engine, "big", TIB);
    let mut rng = XorShift::new(7);
    let mut objects = HashSet::new();
    let mut order = Vec::new();
    while (order.len() as u64) < chunks {
        let object = rng.next() % (TIB / OBJECT);
        if objects.insert(object) {
            order.push(object);
        }
    }
    let mut buf = vec![0xc3u8; OBJECT as usize];
    let start = Instant::now();
    for (i, object) in order.iter().enumerate() {
        if i as u64 == chunks / 2 {
            engine.snap_create(&snap("big", "half")).expect("snapshot");
        }
        stamp(&mut buf, object * OBJECT, TAG_META);
        io.write(object * OBJECT, &buf, Durability::Buffered).expect("write");
    }
    io.flush().expect("flush");
    let d = start.elapsed();
    println!(
        "  setup: wrote {} MiB + flush in {:.2} s ({:.0} MiB/s, snapshot 'half' in the middle)",
        written / MIB,
        d.as_secs_f64(),
        mib_s(written, d)
    );
    drop(io);

    let half = SnapName::new("half").expect("snapshot name");
    let spec = image("big");
    let exists = |v: &[DiffExtent]| v.iter().filter(|e| e.exists).map(|e| e.length).sum::<u64>();
    println!("  {:<34} {:>9} {:>9} {:>9} {:>12}  check", "operation", "median ms", "max ms", "extents", "data MiB");
    type Op<'a> = Box<dyn Fn() -> (usize, u64) + 'a>;
    let ops: Vec<(&str, u64, Op)> = vec![
        (
            "du (snapshot 'half' + head)",
            written,
            Box::new(|| {
                let du = engine.du(&spec).expect("du");
                (du.len(), du.iter().map(|e| e.used_bytes).sum())
            }),
        ),
        (
            "diff from creation to head",
            written,
            Box::new(|| {
                let d = engine.diff(&spec, None, None, DiffGranularity::Fine).expect("diff");
                (d.len(), exists(&d))
            }),
        ),
        (
            "diff 'half' to head",
            written / 2,
            Box::new(|| {
                let d = engine.diff(&spec, Some(&half), None, DiffGranularity::Fine).expect("diff");
                (d.len(), exists(&d))
            }),
        ),
        (
            "diff from creation, whole objects",
            written,
            Box::new(|| {
                let d = engine.diff(&spec, None, None, DiffGranularity::WholeObject).expect("diff");
                (d.len(), exists(&d))
            }),
        ),
    ];
    for (label, expected, op) in ops {
        let mut times = Vec::new();
        let mut result = (0, 0);
        for _ in 0..cfg.repeats.min(7) {
            let t = Instant::now();
            result = op();
            times.push(t.elapsed());
        }
        let max = times.iter().max().copied().unwrap_or_default();
        let check = if result.1 == expected { "ok".to_owned() } else { format!("EXPECTED {} MiB", expected / MIB) };
        println!(
            "  {:<34} {:>9.2} {:>9.2} {:>9} {:>12}  {check}",
            label,
            ms(median(&mut times)),
            ms(max),
            result.0,
            result.1 / MIB
        );
    }
}

fn main() {
    let cfg = Config::from_env();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let dir = tempfile::Builder::new()
        .prefix("basalt-bench-")
        .tempdir_in(std::env::temp_dir())
        .expect("create a temp directory");
    println!(
        "basalt-engine benchmark: scale {} ({} cores available), data in {}",
        cfg.scale,
        cores,
        dir.path().display()
    );
    let started = Instant::now();
    {
        // Dropped before the directory so every file is closed when it is removed.
        let engine = Engine::open(&dir.path().join("store"), Arc::new(SystemClock)).expect("open engine");
        let pool = PoolName::new("rbd").expect("pool name");
        engine.pool_create(&pool).expect("create pool");
        engine.pool_application_enable(&pool, "rbd").expect("tag pool");

        data_path(&engine, dir.path(), &cfg);
        snapshot_ops(&engine, &cfg);
        du_and_diff(&engine, &cfg);
    }
    let t = Instant::now();
    dir.close().expect("remove the temp directory");
    println!("\ncleanup (removing the temp directory): {:.1} s", t.elapsed().as_secs_f64());
    println!("\ntotal {:.1} s", started.elapsed().as_secs_f64());
}
