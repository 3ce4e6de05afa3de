//! The data path and what reads it: bounds, read-only snapshots, holes, copy, deep copy, du and diff.

use basalt_conformance::for_each_backend;
use basalt_core::{
    BlockState, CopyRequest, DiffGranularity, Durability, ErrorKind, IoRequest, OpenTarget, Progress, SnapName,
    ZeroMode,
};

use crate::{MIB, create, kind, read, read_snap, write};

#[test]
fn io_is_bounded_snapshots_are_read_only_and_zeroes_read_back() {
    for_each_backend("c-io", |t| {
        let e = &*t.backend;
        create(t, "vm", MIB);
        let io = e.open(&t.spec("vm"), &OpenTarget::Head, "t").expect("open");
        assert_eq!(io.size_bytes(), MIB);
        assert_eq!(kind(io.write(MIB - 1, b"ab", Durability::Buffered)), ErrorKind::InvalidArgument);
        assert_eq!(kind(io.read(u64::MAX - 1, &mut [0u8; 2])), ErrorKind::InvalidArgument);
        io.write(8192, &[5u8; 8192], Durability::ForceUnitAccess).expect("write");
        io.write_zeroes(8192, 4096, ZeroMode::MayUnmap, Durability::Buffered).expect("zero");
        io.discard(12288, 100, Durability::Buffered).expect("partial discard");
        let mut buf = vec![1u8; 8192];
        io.read(8192, &mut buf).expect("read");
        let mut expected = vec![5u8; 8192];
        expected[..4096 + 100].fill(0);
        assert_eq!(buf, expected);
        let status = io.block_status(0, MIB).expect("status");
        assert_eq!(status.iter().map(|x| x.length).sum::<u64>(), MIB);
        assert!(status.iter().any(|x| x.state == BlockState::Data && x.offset <= 12288 && x.offset + x.length > 12288));
        // Holes may be reported as data where a backend knows no better (librbd inside a written object), but the
        // never-written tail of the image is a hole on every backend.
        assert!(status.last().is_some_and(|x| x.state == BlockState::Hole && x.offset + x.length == MIB), "{status:?}");
        assert!(status.windows(2).all(|w| w[0].offset + w[0].length == w[1].offset), "{status:?}");
        drop(io);
        e.snap_create(&t.snap("vm@s")).expect("snap");
        let snap_io =
            e.open(&t.spec("vm"), &OpenTarget::Snapshot(SnapName::new("s").expect("name")), "t").expect("open snap");
        assert!(snap_io.is_read_only());
        assert_eq!(kind(snap_io.write(0, b"x", Durability::Buffered)), ErrorKind::ReadOnly);
        drop(snap_io);
        let missing = e.open(&t.spec("vm"), &OpenTarget::Snapshot(SnapName::new("nope").expect("name")), "t");
        assert_eq!(kind(missing), ErrorKind::NotFound);
    });
}

#[test]
fn copy_deep_copy_du_and_diff() {
    for_each_backend("c-copy", |t| {
        let e = &*t.backend;
        create(t, "src", 16 * MIB);
        write(t, "src", 0, &[1u8; 4096]);
        e.snap_create(&t.snap("src@one")).expect("snap one");
        write(t, "src", 8 * MIB, &[2u8; 8192]);
        e.snap_create(&t.snap("src@two")).expect("snap two");
        e.snap_protect(&t.snap("src@two")).expect("protect");
        write(t, "src", 0, &[3u8; 4096]);

        // Usage is counted per object (fast-diff granularity), snapshot by snapshot and the head last.
        let du = e.du(&t.spec("src")).expect("du");
        let names: Vec<Option<String>> = du.iter().map(|d| d.snap.as_ref().map(|s| s.to_string())).collect();
        assert_eq!(names, [Some("one".into()), Some("two".into()), None]);
        assert!(du.iter().all(|d| d.provisioned_bytes == 16 * MIB));
        assert!(du.iter().all(|d| d.used_bytes > 0 && d.used_bytes <= 8 * MIB), "{du:?}");

        let diff = e
            .diff(&t.spec("src"), Some(&SnapName::new("one").expect("n")), None, DiffGranularity::WholeObject)
            .expect("diff");
        let extents: Vec<(u64, u64)> = diff.iter().map(|d| (d.offset, d.length)).collect();
        assert_eq!(extents, [(0, 4 * MIB), (8 * MIB, 4 * MIB)]);
        let fine =
            e.diff(&t.spec("src"), Some(&SnapName::new("one").expect("n")), None, DiffGranularity::Fine).expect("diff");
        for (offset, length) in [(0u64, 4096u64), (8 * MIB, 8192)] {
            assert!(
                fine.iter().any(|d| d.exists && d.offset <= offset && d.offset + d.length >= offset + length),
                "{fine:?} misses {offset}+{length}"
            );
        }
        assert!(fine.iter().all(|d| d.offset < 12 * MIB), "{fine:?}");

        let backup = t.extra_pool("backup", true);
        let dest = |name: &str| basalt_core::ImageSpec::parse(&format!("{backup}/{name}")).expect("spec");
        let request = CopyRequest { snap: Some(SnapName::new("one").expect("n")), ..CopyRequest::to(dest("copy")) };
        e.image_copy(&t.spec("src"), &request, &Progress::default()).expect("copy");
        let read_dest = |name: &str, offset: u64, len: usize| {
            let io = e.open(&dest(name), &OpenTarget::HeadReadOnly, "t").expect("open copy");
            let mut buf = vec![0u8; len];
            io.read(offset, &mut buf).expect("read copy");
            buf
        };
        assert_eq!(read_dest("copy", 0, 4096), vec![1u8; 4096]);
        assert_eq!(read_dest("copy", 8 * MIB, 4), vec![0u8; 4]);
        assert!(e.snap_list(&dest("copy")).expect("snaps").is_empty());
        assert_eq!(
            kind(e.image_copy(&t.spec("src"), &CopyRequest::to(dest("copy")), &Progress::default())),
            ErrorKind::AlreadyExists
        );

        e.image_deep_copy(&t.spec("src"), &dest("deep"), &Progress::default()).expect("deep copy");
        let snaps = e.snap_list(&dest("deep")).expect("snaps");
        assert_eq!(
            snaps.iter().map(|s| (s.name.to_string(), s.protected)).collect::<Vec<_>>(),
            [("one".into(), false), ("two".into(), true)]
        );
        assert_eq!(read_dest("deep", 0, 4096), vec![3u8; 4096]);
        let at_one = e
            .open(&dest("deep"), &OpenTarget::Snapshot(SnapName::new("one").expect("n")), "t")
            .expect("open the copied snapshot");
        let mut buf = vec![0u8; 8192];
        at_one.read(8 * MIB, &mut buf).expect("read");
        assert_eq!(buf, vec![0u8; 8192]);
        at_one.read(0, &mut buf[..4096]).expect("read");
        assert_eq!(&buf[..4096], &[1u8; 4096][..]);
        assert_eq!(read_snap(t, "src", "two", 8 * MIB, 8192), vec![2u8; 8192]);
        assert_eq!(read(t, "src", 0, 4), vec![3u8; 4]);
    });
}

#[test]
fn batches_answer_every_request_in_order_and_flush_what_came_before() {
    for_each_backend("c-batch", |t| {
        let e = &*t.backend;
        create(t, "vm", 4 * MIB);
        write(t, "vm", 0, &[9u8; 8192]);
        let io = e.open(&t.spec("vm"), &OpenTarget::Head, "t").expect("open");
        let (a, b) = (vec![1u8; 65536], vec![2u8; 4096]);
        let (mut r1, mut r2, mut beyond) = (vec![0u8; 8192], vec![0u8; 4096], vec![0u8; 4096]);
        let mut requests = vec![
            IoRequest::Write { offset: MIB, data: &a, durability: Durability::Buffered },
            IoRequest::Write { offset: 2 * MIB, data: &b, durability: Durability::ForceUnitAccess },
            IoRequest::Read { offset: 0, buf: &mut r1 },
            IoRequest::WriteZeroes {
                offset: 0,
                length: 4096,
                mode: ZeroMode::MayUnmap,
                durability: Durability::Buffered,
            },
            IoRequest::Flush,
            IoRequest::Read { offset: 3 * MIB, buf: &mut r2 },
            IoRequest::Read { offset: 4 * MIB - 100, buf: &mut beyond },
            IoRequest::Discard { offset: 3 * MIB, length: 4096, durability: Durability::Buffered },
        ];
        let results = io.run_batch(&mut requests);
        drop(requests);
        assert_eq!(results.len(), 8);
        for (index, result) in results.iter().enumerate() {
            if index == 6 {
                assert_eq!(result.as_ref().expect_err("a read past the end").kind(), ErrorKind::InvalidArgument);
            } else {
                assert!(result.is_ok(), "request {index}: {result:?}");
            }
        }
        // The read ran before or after the zeroing (no order is promised between them), but saw whole data.
        assert!(r1[4096..] == [9u8; 4096][..], "the untouched half of the read");
        let read_extents = results[2].as_ref().expect("read");
        assert_eq!(read_extents.iter().map(|x| x.length).sum::<u64>(), 8192);
        assert_eq!(r2, vec![0u8; 4096]);
        drop(io);
        assert_eq!(read(t, "vm", MIB, 65536), a);
        assert_eq!(read(t, "vm", 2 * MIB, 4096), b);
        assert_eq!(read(t, "vm", 0, 4096), vec![0u8; 4096]);
        let snap_io = e.open(&t.spec("vm"), &OpenTarget::HeadReadOnly, "t").expect("open read-only");
        let mut requests = vec![IoRequest::Write { offset: 0, data: &b, durability: Durability::Buffered }];
        let results = snap_io.run_batch(&mut requests);
        assert_eq!(results[0].as_ref().expect_err("read-only").kind(), ErrorKind::ReadOnly);
    });
}
