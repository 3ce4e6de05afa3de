//! The checksum's own cost over a 4 KiB block and over 1 MiB (in 4 KiB blocks, as reads check it): the `crc32c`
//! crate (the SSE 4.2 `crc32` instruction when the CPU has it, found at run time) and the engine's
//! `checksum::crc32c` (the same crc, folded with AVX-512 VPCLMULQDQ where the CPU has it), beside a plain copy of the
//! same bytes, in the same run. Then the other cost a checked read adds: the `pread` of the crcs from the sidecar
//! (4 bytes for a 4 KiB read, 1 KiB for a 1 MiB read), from a file in the page cache.
//!
//! `cargo bench -p basalt-engine --bench crc`

use std::hint::black_box;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

/// The best of `rounds` rounds of `count` calls, per call: the least disturbed by other work on the machine.
fn best(rounds: usize, count: usize, mut op: impl FnMut()) -> Duration {
    (0..rounds)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..count {
                op();
            }
            start.elapsed() / count as u32
        })
        .min()
        .unwrap_or_default()
}

fn main() {
    #[cfg(target_arch = "x86_64")]
    println!("SSE 4.2 (crc32 instruction): {}", std::arch::is_x86_feature_detected!("sse4.2"));
    let data: Vec<u8> = (0..(1u32 << 20)).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let mut copy = vec![0u8; data.len()];
    println!("  {:<22} {:>10} {:>12}", "", "per call", "throughput");
    for (label, len, count) in [("4 KiB", 4096usize, 20_000usize), ("1 MiB", 1 << 20, 200)] {
        let per_block = best(15, count, || {
            for block in black_box(&data[..len]).chunks_exact(4096) {
                black_box(crc32c::crc32c(block));
            }
        });
        let engine = best(15, count, || {
            for block in black_box(&data[..len]).chunks_exact(4096) {
                black_box(basalt_engine::checksum::crc32c(block));
            }
        });
        let memcpy = best(15, count, || {
            copy[..len].copy_from_slice(black_box(&data[..len]));
            black_box(&copy);
        });
        let gbs = |d: Duration| len as f64 / d.as_secs_f64() / 1e9;
        for (what, d) in [("crc32c crate", per_block), ("engine checksum", engine), ("copy", memcpy)] {
            println!("  {:<22} {:>7.2} µs {:>7.1} GB/s   ({label})", what, d.as_secs_f64() * 1e6, gbs(d));
        }
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let file = std::fs::File::create_new(dir.path().join("sidecar")).expect("create");
    file.write_all_at(&data[..1 << 20], 0).expect("write");
    let mut sums = [0u8; 1024];
    for (label, len) in [("4 KiB", 4usize), ("1 MiB", 1024)] {
        let mut at = 0u64;
        let pread = best(15, 20_000, || {
            at = (at + 4093) % (1 << 20);
            file.read_exact_at(&mut sums[..len], at / 1024 * 1024).expect("pread");
            black_box(&sums);
        });
        println!(
            "  {:<22} {:>7.2} µs              ({label})",
            format!("pread of {len} B of crcs"),
            pread.as_secs_f64() * 1e6
        );
    }
}
