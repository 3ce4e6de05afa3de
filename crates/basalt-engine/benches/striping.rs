//! What listing, `du`, diff and block status cost on a finely striped image: a 64 MiB image with a large stripe
//! count and the given stripe unit, 4 MiB of it written at the start. The work should follow the data written, not
//! the number of stripe units in the image.
//!
//! Run with `cargo bench -p basalt-engine --bench striping`; `BASALT_STRIPE_UNIT` (bytes, default 4096),
//! `BASALT_STRIPE_COUNT` (default 4096) and `BASALT_STRIPE_ORDER` (default 22) choose the layout,
//! `BASALT_STRIPE_IMAGE_MIB` (default 64) the image size. Each figure is the
//! median of 5 runs; the peak RSS of the process is printed at the end.

use std::sync::Arc;
use std::time::{Duration, Instant};

use basalt_core::{
    Backend, CreateOptions, DiffGranularity, Durability, ImageSpec, ObjectOrder, OpenTarget, PoolName, PoolNs,
    SystemClock,
};
use basalt_engine::Engine;

const MIB: u64 = 1 << 20;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn median(mut f: impl FnMut()) -> Duration {
    let mut times: Vec<Duration> = (0..5)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    times.sort();
    times[2]
}

fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn main() {
    let unit = env_u64("BASALT_STRIPE_UNIT", 4096);
    let count = env_u64("BASALT_STRIPE_COUNT", 4096);
    let order = u8::try_from(env_u64("BASALT_STRIPE_ORDER", 22)).expect("order");
    let size = env_u64("BASALT_STRIPE_IMAGE_MIB", 64) * MIB;
    let dir = tempfile::tempdir().expect("temp dir");
    let engine = Engine::open(&dir.path().join("store"), Arc::new(SystemClock)).expect("open engine");
    let pool = PoolName::new("rbd").expect("pool name");
    engine.pool_create(&pool).expect("create pool");
    engine.pool_application_enable(&pool, "rbd").expect("tag pool");
    let spec = ImageSpec::parse("rbd/striped").expect("spec");
    let mut options = CreateOptions::with_size(size);
    options.order = Some(ObjectOrder::new(order).expect("order"));
    options.striping = Some((unit, count));
    println!("{} MiB image, object order {order}, stripe unit {unit}, stripe count {count}, 4 MiB written", size / MIB);
    engine.image_create(&spec, &options).expect("create the striped image");
    let io = engine.open(&spec, &OpenTarget::Head, "bench").expect("open");
    let t = Instant::now();
    io.write(0, &vec![0xa5; (4 * MIB) as usize], Durability::Buffered).expect("write");
    io.flush().expect("flush");
    println!("write 4 MiB + flush: {:.1} ms", t.elapsed().as_secs_f64() * 1e3);
    let location = PoolNs::parse("rbd").expect("location");
    let d = median(|| {
        engine.image_list(&location).expect("list");
        engine.image_info(&spec).expect("info");
        engine.du(&spec).expect("du");
    });
    println!("list + info + du (what an image listing does): {:.1} ms", d.as_secs_f64() * 1e3);
    let used = engine.du(&spec).expect("du").last().map(|e| e.used_bytes).unwrap_or(0);
    println!("  du reports {used} bytes used");
    let d = median(|| {
        engine.diff(&spec, None, None, DiffGranularity::Fine).expect("diff");
    });
    println!("diff from nothing: {:.1} ms", d.as_secs_f64() * 1e3);
    let d = median(|| {
        io.block_status(0, size).expect("block status");
    });
    let extents = io.block_status(0, size).expect("block status").len();
    println!("block status of the whole image: {:.1} ms ({extents} extents)", d.as_secs_f64() * 1e3);
    println!("peak RSS: {} MiB", peak_rss_kib() / 1024);
}
