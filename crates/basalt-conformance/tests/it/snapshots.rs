//! Snapshots, protection, linked clones, flatten and rollback.

use basalt_conformance::for_each_backend;
use basalt_core::{CloneRequest, CreateOptions, ErrorKind, Features, OpenTarget, Progress, SnapName};

use crate::{MIB, create, kind, read, read_snap, write};

#[test]
fn snapshot_rules() {
    for_each_backend("c-snap", |t| {
        let e = &*t.backend;
        create(t, "vm", MIB);
        e.snap_create(&t.snap("vm@a")).expect("snap a");
        assert_eq!(kind(e.snap_create(&t.snap("vm@a"))), ErrorKind::AlreadyExists);
        let name = |n: &str| SnapName::new(n).expect("name");
        assert_eq!(kind(e.snap_rename(&t.snap("vm@zz"), &name("b"))), ErrorKind::NotFound);
        e.snap_create(&t.snap("vm@b")).expect("snap b");
        assert_eq!(kind(e.snap_rename(&t.snap("vm@a"), &name("b"))), ErrorKind::AlreadyExists);
        assert_eq!(kind(e.snap_unprotect(&t.snap("vm@a"))), ErrorKind::InvalidArgument);
        e.snap_protect(&t.snap("vm@a")).expect("protect");
        assert_eq!(kind(e.snap_protect(&t.snap("vm@a"))), ErrorKind::Busy);
        e.snap_limit_set(&t.spec("vm"), Some(2)).expect("limit");
        assert_eq!(kind(e.snap_create(&t.snap("vm@c"))), ErrorKind::QuotaExceeded);
        e.snap_limit_set(&t.spec("vm"), None).expect("no limit");
        e.snap_create(&t.snap("vm@c")).expect("snap c");
        e.snap_rename(&t.snap("vm@c"), &name("c2")).expect("rename");
        let snaps = e.snap_list(&t.spec("vm")).expect("list");
        let listed: Vec<(String, bool)> = snaps.iter().map(|s| (s.name.to_string(), s.protected)).collect();
        assert_eq!(listed, [("a".into(), true), ("b".into(), false), ("c2".into(), false)]);
        assert!(snaps.windows(2).all(|w| w[0].id < w[1].id), "snapshots are listed in creation order");
        assert!(snaps.iter().all(|s| s.size_bytes == MIB));
        assert_eq!(kind(e.snap_remove(&t.snap("vm@missing"))), ErrorKind::NotFound);
        // Without layering, snapshots cannot be protected.
        let plain = CreateOptions { features: Some(Features::EXCLUSIVE_LOCK), ..CreateOptions::with_size(MIB) };
        e.image_create(&t.spec("flat"), &plain).expect("create without layering");
        e.snap_create(&t.snap("flat@s")).expect("snap");
        assert_eq!(kind(e.snap_protect(&t.snap("flat@s"))), ErrorKind::NotImplemented);
    });
}

#[test]
fn clones_read_through_their_parent_until_flattened() {
    for_each_backend("c-clone", |t| {
        let e = &*t.backend;
        create(t, "golden", 8 * MIB);
        write(t, "golden", 0, &[7u8; 8192]);
        write(t, "golden", 5 * MIB + 100, b"template");
        e.snap_create(&t.snap("golden@base")).expect("snapshot");
        let err = e.clone_image(&t.snap("golden@base"), &t.spec("vm1"), &CloneRequest::inherit()).expect_err("v1");
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert!(err.message().contains("not protected"), "{err}");
        assert_eq!(
            kind(e.clone_image(&t.snap("golden@nope"), &t.spec("vm1"), &CloneRequest::inherit())),
            ErrorKind::NotFound
        );
        e.snap_protect(&t.snap("golden@base")).expect("protect");
        e.namespace_create(&t.location("tenant")).expect("namespace");
        e.clone_image(&t.snap("golden@base"), &t.spec("tenant/vm1"), &CloneRequest::inherit()).expect("clone");
        // The parent's head changes after the snapshot; the clone still sees the snapshot.
        write(t, "golden", 0, &[9u8; 4096]);
        assert_eq!(read(t, "tenant/vm1", 0, 8192), vec![7u8; 8192]);
        assert_eq!(read(t, "tenant/vm1", 5 * MIB + 100, 8), b"template");
        let info = e.image_info(&t.spec("tenant/vm1")).expect("info");
        assert_eq!(info.size_bytes, 8 * MIB);
        let parent = info.parent.expect("a clone has a parent");
        assert_eq!((parent.image.as_str(), parent.snap.as_str(), parent.overlap_bytes), ("golden", "base", 8 * MIB));
        assert_eq!((parent.pool.as_str(), parent.namespace.as_str()), (t.pool.as_str(), ""));
        let children = e.snap_children(&t.snap("golden@base")).expect("children");
        assert_eq!(
            children.iter().map(|c| (c.namespace.as_str(), c.image.as_str())).collect::<Vec<_>>(),
            [("tenant", "vm1")]
        );
        write(t, "tenant/vm1", 100, b"XY");
        let mut expected = vec![7u8; 8192];
        expected[100..102].copy_from_slice(b"XY");
        assert_eq!(read(t, "tenant/vm1", 0, 8192), expected);

        let err = e.snap_unprotect(&t.snap("golden@base")).expect_err("children exist");
        assert_eq!(err.kind(), ErrorKind::Busy);
        assert!(err.message().contains("child"), "{err}");
        let err = e.image_remove(&t.spec("golden"), &Progress::default()).expect_err("clones depend on it");
        assert_eq!(err.kind(), ErrorKind::NotEmpty);

        let progress = Progress::default();
        e.flatten(&t.spec("tenant/vm1"), &progress).expect("flatten");
        assert_eq!(progress.fraction(), 1.0);
        assert!(e.image_info(&t.spec("tenant/vm1")).expect("info").parent.is_none());
        assert_eq!(read(t, "tenant/vm1", 0, 8192), expected);
        assert_eq!(kind(e.flatten(&t.spec("tenant/vm1"), &Progress::default())), ErrorKind::InvalidArgument);
        e.snap_unprotect(&t.snap("golden@base")).expect("unprotect after flatten");
        e.snap_remove(&t.snap("golden@base")).expect("remove snapshot");
        e.image_remove(&t.spec("golden"), &Progress::default()).expect("remove parent");
        assert_eq!(read(t, "tenant/vm1", 5 * MIB + 100, 8), b"template");
        assert_eq!(kind(e.namespace_remove(&t.location("tenant"))), ErrorKind::Busy);
    });
}

#[test]
fn clones_need_layering() {
    for_each_backend("c-layering", |t| {
        let e = &*t.backend;
        create(t, "p", MIB);
        e.snap_create(&t.snap("p@s")).expect("snap");
        e.snap_protect(&t.snap("p@s")).expect("protect");
        let no_layering = CloneRequest { features: Some(Features::EXCLUSIVE_LOCK), ..CloneRequest::inherit() };
        assert_eq!(kind(e.clone_image(&t.snap("p@s"), &t.spec("c"), &no_layering)), ErrorKind::NotImplemented);
        assert_eq!(kind(e.image_info(&t.spec("c"))), ErrorKind::NotFound);
    });
}

#[test]
fn rollback_restores_data_and_size_and_is_refused_while_attached() {
    for_each_backend("c-rollback", |t| {
        let e = &*t.backend;
        create(t, "vm", 2 * MIB);
        write(t, "vm", MIB, &[1u8; 4096]);
        e.snap_create(&t.snap("vm@before")).expect("snapshot");
        write(t, "vm", MIB, &[2u8; 4096]);
        e.image_resize(&t.spec("vm"), 4 * MIB, basalt_core::ResizePolicy::GrowOnly).expect("grow");
        assert_eq!(e.image_info_at_snap(&t.snap("vm@before")).expect("snap info").size_bytes, 2 * MIB);
        assert_eq!(read_snap(t, "vm", "before", MIB, 4096), vec![1u8; 4096]);
        let io = e.open(&t.spec("vm"), &OpenTarget::Head, "vm-host").expect("attach");
        assert_eq!(kind(e.snap_rollback(&t.snap("vm@before"), &Progress::default())), ErrorKind::Busy);
        drop(io);
        assert_eq!(kind(e.snap_rollback(&t.snap("vm@zzz"), &Progress::default())), ErrorKind::NotFound);
        e.snap_rollback(&t.snap("vm@before"), &Progress::default()).expect("rollback");
        assert_eq!(e.image_info(&t.spec("vm")).expect("info").size_bytes, 2 * MIB);
        assert_eq!(read(t, "vm", MIB, 4096), vec![1u8; 4096]);
    });
}
