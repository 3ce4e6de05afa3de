//! Removing a snapshot that owns 32,768 blocks (128 MiB) while a reader keeps reading 4 KiB blocks: how long the
//! removal takes, and the reader's worst and 99th-percentile latency during it, beside the same reader with nothing
//! else running. Both directions of the fold: the snapshot's blocks move up into a larger head, or the head's few
//! blocks move down into the snapshot's layer.
//!
//! `cargo bench -p basalt-engine --bench snap_remove`

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use basalt_core::{
    Backend, CreateOptions, Durability, ImageIo, ImageSpec, OpenTarget, PoolName, SnapSpec, SystemClock,
};
use basalt_engine::Engine;

const MIB: u64 = 1 << 20;
const SIZE: u64 = 512 * MIB;
const SNAP_BYTES: u64 = 128 * MIB;

/// Reads random 4 KiB blocks until `stop`, and returns every latency, sorted.
fn reader(io: Arc<dyn ImageIo>, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Vec<Duration>> {
    std::thread::spawn(move || {
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut buf = vec![0u8; 4096];
        let mut latencies = Vec::new();
        while !stop.load(Ordering::SeqCst) {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let start = Instant::now();
            io.read(rng % (SIZE / 4096) * 4096, &mut buf).expect("read");
            latencies.push(start.elapsed());
        }
        latencies.sort_unstable();
        latencies
    })
}

fn summary(latencies: &[Duration]) -> String {
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    format!(
        "{} reads, p50 {:.1} µs, p99 {:.1} µs, worst {:.2} ms",
        latencies.len(),
        at(0.5).as_secs_f64() * 1e6,
        at(0.99).as_secs_f64() * 1e6,
        at(1.0).as_secs_f64() * 1e3
    )
}

fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let engine = Engine::open(&dir.path().join("store"), Arc::new(SystemClock)).expect("open engine");
    let pool = PoolName::new("rbd").expect("pool");
    engine.pool_create(&pool).expect("pool create");
    engine.pool_application_enable(&pool, "rbd").expect("application");
    let chunk = vec![0x5au8; MIB as usize];
    for (n, big_head) in [false, true].into_iter().enumerate() {
        let spec = ImageSpec::parse(&format!("rbd/remove{n}")).expect("spec");
        engine.image_create(&spec, &CreateOptions::with_size(SIZE)).expect("create");
        let io: Arc<dyn ImageIo> = Arc::from(engine.open(&spec, &OpenTarget::Head, "bench").expect("open"));
        for off in (0..SNAP_BYTES).step_by(MIB as usize) {
            io.write(off, &chunk, Durability::Buffered).expect("write");
        }
        let snap = SnapSpec::parse(&format!("rbd/remove{n}@s")).expect("snap");
        engine.snap_create(&snap).expect("snapshot");
        // A larger head writes elsewhere, so every block of the snapshot moves up.
        let head_range = if big_head { SNAP_BYTES..3 * SNAP_BYTES } else { 0..MIB };
        for off in head_range.step_by(MIB as usize) {
            io.write(off, &chunk, Durability::Buffered).expect("write");
        }
        io.flush().expect("flush");

        let stop = Arc::new(AtomicBool::new(false));
        let quiet = reader(io.clone(), stop.clone());
        std::thread::sleep(Duration::from_secs(1));
        stop.store(true, Ordering::SeqCst);
        let quiet = quiet.join().expect("reader");

        let stop = Arc::new(AtomicBool::new(false));
        let during = reader(io.clone(), stop.clone());
        std::thread::sleep(Duration::from_millis(100));
        let started = Instant::now();
        engine.snap_remove(&snap).expect("remove");
        let took = started.elapsed();
        std::thread::sleep(Duration::from_millis(100));
        stop.store(true, Ordering::SeqCst);
        let during = during.join().expect("reader");
        let direction = if big_head { "snapshot's blocks up into the head" } else { "head's blocks down" };
        println!("remove a snapshot of 32768 blocks ({direction}): {:.2} s", took.as_secs_f64());
        println!("  reader alone:          {}", summary(&quiet));
        println!("  reader during removal: {}", summary(&during));
    }
}
