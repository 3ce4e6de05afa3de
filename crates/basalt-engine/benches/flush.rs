//! What a flush costs, beside the plain file a user would otherwise put a VM disk on (pwrite + fdatasync), in the
//! same run on the same file system:
//!
//! 1. a 4 KiB write to a new block, then a flush (one thread);
//! 2. a 4 KiB overwrite, then a flush;
//! 3. a flush with nothing written since the last one;
//! 4. 4 KiB FUA writes from 8 threads, each on its own image (plain: its own file), for a few seconds.
//!
//! `cargo bench -p basalt-engine --bench flush`; `BASALT_BENCH_OPS` sets the operations per case (default 2000).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use basalt_core::{Backend, CreateOptions, Durability, ImageSpec, OpenTarget, PoolName, SystemClock};
use basalt_engine::Engine;

const MIB: u64 = 1 << 20;
const THREADS: usize = 8;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p) as usize]
}

fn report(label: &str, mut lat: Vec<Duration>) {
    lat.sort();
    let total: Duration = lat.iter().sum();
    println!(
        "  {label:<46} {:>9.1} {:>9.1} {:>9.1} {:>9.0}",
        percentile(&lat, 0.5).as_secs_f64() * 1e6,
        percentile(&lat, 0.99).as_secs_f64() * 1e6,
        total.as_secs_f64() * 1e6 / lat.len() as f64,
        lat.len() as f64 / total.as_secs_f64()
    );
}

fn timed(n: usize, mut op: impl FnMut(usize)) -> Vec<Duration> {
    (0..n)
        .map(|i| {
            let t = Instant::now();
            op(i);
            t.elapsed()
        })
        .collect()
}

fn main() {
    let ops: usize = std::env::var("BASALT_BENCH_OPS").ok().and_then(|v| v.parse().ok()).unwrap_or(2000);
    let dir = tempfile::Builder::new().prefix("basalt-flush-bench").tempdir_in(std::env::temp_dir()).expect("dir");
    let root = dir.path();
    let engine = Engine::open(&root.join("store"), Arc::new(SystemClock)).expect("open engine");
    let pool = PoolName::new("rbd").expect("pool");
    engine.pool_create(&pool).expect("pool");
    engine.pool_application_enable(&pool, "rbd").expect("tag");
    let size = (ops as u64 + 16) * 4096 * 2;
    let specs: Vec<ImageSpec> = (0..THREADS).map(|i| ImageSpec::parse(&format!("rbd/img{i}")).expect("spec")).collect();
    for spec in &specs {
        engine.image_create(spec, &CreateOptions::with_size(size.max(64 * MIB))).expect("create");
    }
    let block = vec![0xa5u8; 4096];

    println!("\n== flush cost ({ops} operations per case, 1 thread unless said) ==");
    println!("  {:<46} {:>9} {:>9} {:>9} {:>9}", "case", "p50 us", "p99 us", "mean us", "ops/s");
    let io = engine.open(&specs[0], &OpenTarget::Head, "bench").expect("open");
    let plain = File::options().read(true).write(true).create_new(true).open(root.join("plain.bin")).expect("file");
    // Every other block, so each write lands in a block nothing holds yet.
    report(
        "engine: 4k write to a new block + flush",
        timed(ops, |i| {
            io.write(i as u64 * 8192, &block, Durability::Buffered).expect("write");
            io.flush().expect("flush");
        }),
    );
    report(
        "plain file: 4k pwrite to a new block + fdatasync",
        timed(ops, |i| {
            plain.write_all_at(&block, i as u64 * 8192).expect("pwrite");
            plain.sync_data().expect("fdatasync");
        }),
    );
    report(
        "engine: 4k overwrite + flush",
        timed(ops, |i| {
            io.write((i as u64 % 64) * 8192, &block, Durability::Buffered).expect("write");
            io.flush().expect("flush");
        }),
    );
    report(
        "plain file: 4k overwrite + fdatasync",
        timed(ops, |i| {
            plain.write_all_at(&block, (i as u64 % 64) * 8192).expect("pwrite");
            plain.sync_data().expect("fdatasync");
        }),
    );
    // After a snapshot every write to a block the snapshot holds goes to a block the head does not hold yet.
    let snapped = engine.open(&specs[1], &OpenTarget::Head, "bench").expect("open");
    for i in 0..ops as u64 {
        snapped.write(i * 8192, &block, Durability::Buffered).expect("fill");
    }
    snapped.flush().expect("flush");
    let snap = basalt_core::SnapSpec { image: specs[1].clone(), snap: basalt_core::SnapName::new("s").expect("name") };
    engine.snap_create(&snap).expect("snapshot");
    report(
        "engine: 4k write over a snapshot's block + flush",
        timed(ops, |i| {
            snapped.write(i as u64 * 8192, &block, Durability::Buffered).expect("write");
            snapped.flush().expect("flush");
        }),
    );
    drop(snapped);
    report("engine: flush with nothing new", timed(ops, |_| io.flush().expect("flush")));
    report("plain file: fdatasync with nothing new", timed(ops, |_| plain.sync_data().expect("fdatasync")));
    drop(io);

    let run_for = Duration::from_secs(3);
    let engine_rate = parallel(run_for, |t| {
        let io = engine.open(&specs[t], &OpenTarget::Head, "bench").expect("open");
        let block = block.clone();
        move |i: u64| io.write((i % 4096) * 4096, &block, Durability::ForceUnitAccess).expect("fua write")
    });
    let plain_rate = parallel(run_for, |t| {
        let f =
            File::options().read(true).write(true).create_new(true).open(root.join(format!("p{t}.bin"))).expect("f");
        let block = block.clone();
        move |i: u64| {
            f.write_all_at(&block, (i % 4096) * 4096).expect("pwrite");
            f.sync_data().expect("fdatasync");
        }
    });
    println!("  {:<46} {:>9.0} writes/s", "engine: 4k FUA writes, 8 threads, own images", engine_rate);
    println!("  {:<46} {:>9.0} writes/s", "plain files: 4k pwrite + fdatasync, 8 threads", plain_rate);
    // Several clients of one disk, each flushing after every write (NBD connections of one image, a database's
    // threads): their flushes share one image and one file.
    let shared = engine.open(&specs[2], &OpenTarget::Head, "bench").expect("open");
    for i in 0..4096u64 {
        shared.write(i * 4096, &block, Durability::Buffered).expect("fill");
    }
    shared.flush().expect("flush");
    let engine_shared = parallel(run_for, |t| {
        let (io, block) = (&shared, block.clone());
        move |i: u64| {
            io.write(((i * THREADS as u64 + t as u64) % 4096) * 4096, &block, Durability::Buffered).expect("write");
            io.flush().expect("flush");
        }
    });
    let one = File::options().read(true).write(true).create_new(true).open(root.join("one.bin")).expect("file");
    one.write_all_at(&vec![0u8; 4096 * 4096], 0).expect("fill");
    one.sync_data().expect("fdatasync");
    let plain_shared = parallel(run_for, |t| {
        let (f, block) = (&one, block.clone());
        move |i: u64| {
            f.write_all_at(&block, ((i * THREADS as u64 + t as u64) % 4096) * 4096).expect("pwrite");
            f.sync_data().expect("fdatasync");
        }
    });
    println!("  {:<46} {:>9.0} writes/s", "engine: 4k overwrite + flush, 8 threads, one image", engine_shared);
    println!("  {:<46} {:>9.0} writes/s", "plain file: 4k overwrite + fdatasync, 8 threads", plain_shared);
    drop(shared);
    drop(engine);
    drop(dir);
}

/// Runs `THREADS` threads, each calling its operation until `run_for` passes; returns operations per second.
fn parallel<F: FnMut(u64) + Send>(run_for: Duration, make: impl Fn(usize) -> F + Sync) -> f64 {
    let start = Instant::now();
    let total: u64 = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let make = &make;
                s.spawn(move || {
                    let mut op = make(t);
                    let mut n = 0u64;
                    while start.elapsed() < run_for {
                        op(n);
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("thread")).sum()
    });
    total as f64 / start.elapsed().as_secs_f64()
}
