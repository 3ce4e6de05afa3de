//! Setup shared by the benches of reads below many snapshots (`chain`, `read_check`).

use std::time::{Duration, Instant};

use basalt_core::{Backend, CreateOptions, Durability, ImageIo, ImageSpec, OpenTarget, SnapSpec};
use basalt_engine::Engine;

/// A small deterministic generator (xorshift).
pub fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// Creates `rbd/<name>` of `size` bytes, writes `chunk` at every multiple of its length, then takes `snaps`
/// snapshots with a 4 KiB write at a random block after each (so the layers between hold objects of their own).
/// Returns the open head and how long the snapshots and their writes took.
pub fn image_below_snapshots(
    engine: &Engine,
    name: &str,
    size: u64,
    chunk: &[u8],
    snaps: usize,
) -> (Box<dyn ImageIo>, Duration) {
    let spec = ImageSpec::parse(&format!("rbd/{name}")).expect("spec");
    engine.image_create(&spec, &CreateOptions::with_size(size)).expect("create");
    let io = engine.open(&spec, &OpenTarget::Head, "bench").expect("open");
    for off in (0..size).step_by(chunk.len()) {
        io.write(off, chunk, Durability::Buffered).expect("write");
    }
    let small = vec![0xa5u8; 4096];
    let mut rng = 7u64;
    let started = Instant::now();
    for s in 0..snaps {
        engine.snap_create(&SnapSpec::parse(&format!("rbd/{name}@s{s}")).expect("snap")).expect("snapshot");
        let off = next(&mut rng) % (size / 4096) * 4096;
        io.write(off, &small, Durability::Buffered).expect("write between snapshots");
    }
    (io, started.elapsed())
}
