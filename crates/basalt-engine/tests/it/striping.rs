//! Fine striping: an image with the smallest stripe unit and the largest stripe count, next to an unstriped twin
//! that gets the same writes. Listing, `du`, diff and block status must report exactly the data written (their
//! cost follows the data, measured by `benches/striping.rs`; nothing here is timed).

use std::sync::Arc;

use basalt_core::{
    Backend, BlockExtent, BlockState, CloneRequest, CreateOptions, DiffGranularity, Durability, ImageIo, ImageSpec,
    OpenTarget, PoolName, PoolNs, STRIPE_COUNT_MAX, STRIPE_UNIT_MIN_BYTES, SnapSpec, SystemClock,
};
use basalt_engine::Engine;

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const SIZE: u64 = 64 * MIB;

fn spec(s: &str) -> ImageSpec {
    ImageSpec::parse(s).expect("image spec")
}

fn open(engine: &Engine, s: &str) -> Box<dyn ImageIo> {
    engine.open(&spec(s), &OpenTarget::Head, "test").expect("open")
}

fn data(seed: u8, len: u64) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8 ^ seed | 1).collect()
}

fn extents(list: &[(u64, u64, bool)]) -> Vec<BlockExtent> {
    list.iter()
        .map(|&(offset, length, data)| BlockExtent {
            offset,
            length,
            state: if data { BlockState::Data } else { BlockState::Hole },
        })
        .collect()
}

#[test]
fn finely_striped_images_report_exactly_their_data() {
    let dir = tempfile::tempdir().expect("temp dir");
    let engine = Engine::open(&dir.path().join("data"), Arc::new(SystemClock)).expect("open engine");
    let pool = PoolName::new("rbd").expect("pool");
    engine.pool_create(&pool).expect("pool");
    engine.pool_application_enable(&pool, "rbd").expect("tag");
    let fine =
        CreateOptions { striping: Some((STRIPE_UNIT_MIN_BYTES, STRIPE_COUNT_MAX)), ..CreateOptions::with_size(SIZE) };
    engine.image_create(&spec("rbd/fine"), &fine).expect("create the finely striped image");
    engine.image_create(&spec("rbd/plain"), &CreateOptions::with_size(SIZE)).expect("create its unstriped twin");
    let info = engine.image_info(&spec("rbd/fine")).expect("info");
    assert_eq!((info.striping.unit_bytes, info.striping.count), (4096, 4096));

    for name in ["fine", "plain"] {
        let io = open(&engine, &format!("rbd/{name}"));
        io.write(0, &data(1, 4 * MIB), Durability::Buffered).expect("4 MiB at the start");
        io.write(20 * MIB + 100, &data(2, 1000), Durability::Buffered).expect("part of one block");
        io.write(SIZE - 8 * KIB, &data(3, 8 * KIB), Durability::Buffered).expect("the last two blocks");
        io.flush().expect("flush");
        drop(io);
        engine.snap_create(&SnapSpec::parse(&format!("rbd/{name}@s1")).expect("snap")).expect("snapshot");
        let io = open(&engine, &format!("rbd/{name}"));
        io.write(30 * MIB, &data(4, 4 * KIB), Durability::Buffered).expect("a block after the snapshot");
        io.discard(0, 4 * KIB, Durability::Buffered).expect("discard the first block");
        io.flush().expect("flush");
    }

    let listed: Vec<String> = engine
        .image_list(&PoolNs::parse("rbd").expect("location"))
        .expect("list")
        .into_iter()
        .map(|e| e.name.to_string())
        .collect();
    assert_eq!(listed, ["fine", "plain"]);

    let head = extents(&[
        (0, 4 * KIB, false),
        (4 * KIB, 4 * MIB - 4 * KIB, true),
        (4 * MIB, 16 * MIB, false),
        (20 * MIB, 4 * KIB, true),
        (20 * MIB + 4 * KIB, 10 * MIB - 4 * KIB, false),
        (30 * MIB, 4 * KIB, true),
        (30 * MIB + 4 * KIB, SIZE - 8 * KIB - 30 * MIB - 4 * KIB, false),
        (SIZE - 8 * KIB, 8 * KIB, true),
    ]);
    for name in ["fine", "plain"] {
        let io = open(&engine, &format!("rbd/{name}"));
        assert_eq!(io.block_status(0, SIZE).expect("block status"), head, "{name}: whole image");
        // A range that starts and ends inside extents is clipped, not widened.
        let part = io.block_status(2 * MIB, 19 * MIB).expect("block status of a part");
        assert_eq!(
            part,
            extents(&[
                (2 * MIB, 2 * MIB, true),
                (4 * MIB, 16 * MIB, false),
                (20 * MIB, 4 * KIB, true),
                (20 * MIB + 4 * KIB, MIB - 4 * KIB, false),
            ]),
            "{name}: 2 MiB..21 MiB"
        );
        let mut back = vec![0u8; 4 * KIB as usize];
        io.read(30 * MIB, &mut back).expect("read");
        assert!(back == data(4, 4 * KIB), "{name}: the block written after the snapshot reads back");

        let du = engine.du(&spec(&format!("rbd/{name}"))).expect("du");
        let used: Vec<u64> = du.iter().map(|e| e.used_bytes).collect();
        assert_eq!(used, [4 * MIB + 4 * KIB + 8 * KIB, 4 * KIB], "{name}: du of s1 and the head");

        let diff = engine.diff(&spec(&format!("rbd/{name}")), None, None, DiffGranularity::Fine).expect("diff");
        let data_bytes: u64 = diff.iter().filter(|e| e.exists).map(|e| e.length).sum();
        assert_eq!(data_bytes, 4 * MIB - 4 * KIB + 4 * KIB + 4 * KIB + 8 * KIB, "{name}: diff from nothing");
    }

    // A clone reads through to the striped parent: its block status comes from the parent's bitmaps too.
    engine.snap_protect(&SnapSpec::parse("rbd/fine@s1").expect("snap")).expect("protect");
    engine
        .clone_image(&SnapSpec::parse("rbd/fine@s1").expect("snap"), &spec("rbd/child"), &CloneRequest::inherit())
        .expect("clone");
    let child = open(&engine, "rbd/child");
    child.write(40 * MIB, &data(5, 4 * KIB), Durability::Buffered).expect("write to the clone");
    child.flush().expect("flush");
    assert_eq!(
        child.block_status(0, SIZE).expect("block status of the clone"),
        extents(&[
            (0, 4 * MIB, true),
            (4 * MIB, 16 * MIB, false),
            (20 * MIB, 4 * KIB, true),
            (20 * MIB + 4 * KIB, 20 * MIB - 4 * KIB, false),
            (40 * MIB, 4 * KIB, true),
            (40 * MIB + 4 * KIB, SIZE - 8 * KIB - 40 * MIB - 4 * KIB, false),
            (SIZE - 8 * KIB, 8 * KIB, true),
        ])
    );
}
