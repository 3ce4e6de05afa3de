//! Reads through long snapshot chains: an image's data written once, then N snapshots taken with a few blocks
//! written between them (so every layer holds some objects), and reads of the old data, which live in the bottom
//! layer; then `du` over the whole chain and a `diff` from the oldest snapshot to the head. Beside it, the same
//! reads from a plain file in the page cache (pread), in the same run.
//!
//! `cargo bench -p basalt-engine --bench chain`; `BASALT_BENCH_SNAPS` sets the chain lengths (default `0,64,1000`).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use basalt_core::{Backend, ImageSpec, PoolName, SystemClock};
use basalt_engine::Engine;

const MIB: u64 = 1 << 20;
const SIZE: u64 = 256 * MIB;
const READS_4K: usize = 200_000;
const READS_1M: usize = 2_000;

#[path = "common/chain_setup.rs"]
mod chain_setup;
use chain_setup::{image_below_snapshots, next};

/// Rounds of each measurement: the figure is their median, so one round that the machine's other work slowed does
/// not decide it. A round of 4 KiB reads lasts about half a second: rounds of 40 ms put the 1000-snapshot chain at
/// 1.3-1.6 times the empty one in four runs, where 8 s of reads put it at 1.05-1.2.
const ROUNDS: usize = 5;

/// The mean time of `op` over `count` pseudo-random aligned offsets, the median of [`ROUNDS`] rounds.
fn timed(mut op: impl FnMut(u64), count: usize, max_offset: u64, align: u64) -> Duration {
    let mut means: Vec<Duration> = (0..ROUNDS)
        .map(|round| {
            let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ round as u64;
            let start = Instant::now();
            for _ in 0..count {
                op(next(&mut rng) % (max_offset / align) * align);
            }
            start.elapsed() / count as u32
        })
        .collect();
    means.sort();
    means[ROUNDS / 2]
}

fn main() {
    let lengths: Vec<usize> = std::env::var("BASALT_BENCH_SNAPS")
        .unwrap_or_else(|_| "0,64,1000".into())
        .split(',')
        .map(|n| n.trim().parse().expect("BASALT_BENCH_SNAPS: numbers"))
        .collect();
    let dir = tempfile::tempdir().expect("temp dir");
    let engine = Engine::open(&dir.path().join("store"), Arc::new(SystemClock)).expect("open engine");
    let pool = PoolName::new("rbd").expect("pool");
    engine.pool_create(&pool).expect("pool create");
    engine.pool_application_enable(&pool, "rbd").expect("application");

    // The plain-file peer: the same bytes in one file, read from the page cache.
    let plain_path = dir.path().join("plain.img");
    let plain = File::options().read(true).write(true).create(true).truncate(true).open(&plain_path).expect("file");
    let chunk = vec![0x5au8; MIB as usize];
    for off in (0..SIZE).step_by(MIB as usize) {
        plain.write_all_at(&chunk, off).expect("write plain");
    }
    let mut buf4k = vec![0u8; 4096];
    let mut buf1m = vec![0u8; MIB as usize];
    let plain_4k = timed(|off| plain.read_exact_at(&mut buf4k, off).expect("pread"), READS_4K, SIZE, 4096);
    let plain_1m = timed(|off| plain.read_exact_at(&mut buf1m, off).expect("pread"), READS_1M, SIZE, MIB);

    println!(
        "reads of data below N snapshots, {} MiB image (4 KiB: mean of {READS_4K}; 1 MiB: mean of {READS_1M}; \
         each the median of {ROUNDS} rounds)",
        SIZE / MIB
    );
    println!("  {:<28} {:>12} {:>14} {:>12}", "", "4k read", "1 MiB read", "1 MiB rate");
    let rate = |d: Duration| MIB as f64 / d.as_secs_f64() / MIB as f64;
    println!(
        "  {:<28} {:>9.2} µs {:>11.1} µs {:>7.0} MiB/s",
        "plain file (page cache)",
        plain_4k.as_secs_f64() * 1e6,
        plain_1m.as_secs_f64() * 1e6,
        rate(plain_1m)
    );
    for (n, snaps) in lengths.into_iter().enumerate() {
        let spec = ImageSpec::parse(&format!("rbd/chain{n}")).expect("spec");
        let (io, setup) = image_below_snapshots(&engine, &format!("chain{n}"), SIZE, &chunk, snaps);
        let t4k = timed(|off| io.read(off, &mut buf4k).expect("read"), READS_4K, SIZE, 4096);
        let t1m = timed(|off| io.read(off, &mut buf1m).expect("read"), READS_1M, SIZE, MIB);
        // What an NBD structured read asks for: the bytes and the holes. One resolution, against the two of a
        // block status followed by a read.
        let sparse = timed(|off| drop(io.read_sparse(off, &mut buf1m).expect("sparse read")), READS_1M, SIZE, MIB);
        let twice = timed(
            |off| {
                io.block_status(off, MIB).expect("block status");
                io.read(off, &mut buf1m).expect("read");
            },
            READS_1M,
            SIZE,
            MIB,
        );
        // `du`: the used bytes of every snapshot and the head (a diff between each neighbouring pair).
        let started = Instant::now();
        let rows = engine.du(&spec).expect("du").len();
        let du = started.elapsed();
        assert_eq!(rows, snaps + 1, "du has a row per snapshot and the head");
        // `diff` from the oldest snapshot to the head: everything written since.
        let oldest = (snaps > 0).then(|| basalt_core::SnapName::new("s0").expect("name"));
        let started = Instant::now();
        engine.diff(&spec, oldest.as_ref(), None, basalt_core::DiffGranularity::Fine).expect("diff");
        let diff = started.elapsed();
        println!(
            "  {:<28} {:>9.2} µs {:>11.1} µs {:>7.0} MiB/s   sparse 1 MiB {:.1} µs (status + read {:.1} µs)   \
             du {:.3} s   diff {:.3} s   ({:.1} s to take the snapshots)",
            format!("basalt, {snaps} snapshots"),
            t4k.as_secs_f64() * 1e6,
            t1m.as_secs_f64() * 1e6,
            rate(t1m),
            sparse.as_secs_f64() * 1e6,
            twice.as_secs_f64() * 1e6,
            du.as_secs_f64(),
            diff.as_secs_f64(),
            setup.as_secs_f64()
        );
    }
}
