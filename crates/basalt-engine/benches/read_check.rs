//! What checking every block read costs, measured to be steady on a shared machine: random 4 KiB and 1 MiB reads of
//! an image's data below 0, 64 and 1000 snapshots, beside the same reads from a plain file in the page cache, in many
//! short rounds taken in turn, reported as the best round (the least disturbed by other work) and the median.
//!
//! `cargo bench -p basalt-engine --bench read_check`; `BASALT_BENCH_SNAPS` sets the chain lengths (default
//! `0,64,1000`), `BASALT_BENCH_ROUNDS` the rounds (default 25).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use basalt_core::{Backend, PoolName, SystemClock};
use basalt_engine::Engine;

const MIB: u64 = 1 << 20;
const SIZE: u64 = 256 * MIB;
/// Reads per round.
const ROUND_4K: usize = 2_000;
const ROUND_1M: usize = 20;

#[path = "common/chain_setup.rs"]
mod chain_setup;
use chain_setup::{image_below_snapshots, next};

/// Per-read time of one round of `count` reads at random aligned offsets.
fn round(op: &mut dyn FnMut(u64), rng: &mut u64, count: usize, align: u64) -> Duration {
    let start = Instant::now();
    for _ in 0..count {
        op(next(rng) % (SIZE / align) * align);
    }
    start.elapsed() / count as u32
}

/// Best and median of the rounds, in µs.
fn summary(mut times: Vec<Duration>) -> (f64, f64) {
    times.sort();
    (times[0].as_secs_f64() * 1e6, times[times.len() / 2].as_secs_f64() * 1e6)
}

fn main() {
    let lengths: Vec<usize> = std::env::var("BASALT_BENCH_SNAPS")
        .unwrap_or_else(|_| "0,64,1000".into())
        .split(',')
        .map(|n| n.trim().parse().expect("BASALT_BENCH_SNAPS: numbers"))
        .collect();
    let rounds: usize =
        std::env::var("BASALT_BENCH_ROUNDS").map_or(25, |r| r.parse().expect("BASALT_BENCH_ROUNDS: a number"));
    let dir = tempfile::tempdir().expect("temp dir");
    let engine = Engine::open(&dir.path().join("store"), Arc::new(SystemClock)).expect("open engine");
    let pool = PoolName::new("rbd").expect("pool");
    engine.pool_create(&pool).expect("pool create");
    engine.pool_application_enable(&pool, "rbd").expect("application");
    let plain = File::create_new(dir.path().join("plain.img")).expect("file");
    let chunk: Vec<u8> = (0..MIB).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect();
    for off in (0..SIZE).step_by(MIB as usize) {
        plain.write_all_at(&chunk, off).expect("write plain");
    }
    println!(
        "random reads of data below N snapshots, {} MiB image: best / median of {rounds} rounds ({ROUND_4K} 4 KiB or \
         {ROUND_1M} 1 MiB reads each), the plain file in the same rounds",
        SIZE / MIB
    );
    let mut buf4k = vec![0u8; 4096];
    let mut buf1m = vec![0u8; MIB as usize];
    for (n, snaps) in lengths.into_iter().enumerate() {
        let (io, _) = image_below_snapshots(&engine, &format!("reads{n}"), SIZE, &chunk, snaps);
        io.flush().expect("flush");
        let (mut p4, mut b4, mut p1, mut b1) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..rounds {
            p4.push(round(&mut |off| plain.read_exact_at(&mut buf4k, off).expect("pread"), &mut rng, ROUND_4K, 4096));
            b4.push(round(&mut |off| io.read(off, &mut buf4k).expect("read"), &mut rng, ROUND_4K, 4096));
            p1.push(round(&mut |off| plain.read_exact_at(&mut buf1m, off).expect("pread"), &mut rng, ROUND_1M, MIB));
            b1.push(round(&mut |off| io.read(off, &mut buf1m).expect("read"), &mut rng, ROUND_1M, MIB));
        }
        let (p4, b4, p1, b1) = (summary(p4), summary(b4), summary(p1), summary(b1));
        println!(
            "  {snaps:>4} snapshots   4k: basalt {:.2} / {:.2} µs, plain {:.2} / {:.2} µs   1 MiB: basalt {:.1} / {:.1} µs \
             ({:.0} MiB/s best), plain {:.1} / {:.1} µs ({:.0} MiB/s best)",
            b4.0,
            b4.1,
            p4.0,
            p4.1,
            b1.0,
            b1.1,
            1e6 / b1.0,
            p1.0,
            p1.1,
            1e6 / p1.0
        );
    }
}
