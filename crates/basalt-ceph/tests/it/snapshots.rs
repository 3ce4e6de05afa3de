//! Snapshots, protection, clones (formats 1 and 2), flatten and rollback, with the refusals in between.

use std::ops::ControlFlow;

use basalt_ceph::{Image, ImageOptions, SnapNamespace, no_progress};
use basalt_core::ErrorKind;

use crate::support::{self, env, kind, pattern, unique};

const MIB: u64 = 1 << 20;

#[test]
fn snapshot_protect_clone_flatten() {
    let Some(env) = env("snapshot_protect_clone_flatten") else { return };
    let io = env.io();
    let parent = unique("parent");
    support::create(&io, &parent, 16 * MIB);
    let image = Image::open(&io, &parent).expect("open parent");
    let original = pattern(0, 4 * MIB as usize, 11);
    image.write(0, &original).expect("write");

    image.snap_create("base").expect("snapshot");
    assert_eq!(kind(image.snap_create("base")), ErrorKind::AlreadyExists);
    let snaps = image.snap_list().expect("snap list");
    assert_eq!(snaps.len(), 1);
    assert_eq!((snaps[0].name.as_str(), snaps[0].size, snaps[0].namespace), ("base", 16 * MIB, SnapNamespace::User));
    assert!(image.snap_exists("base").expect("exists"));
    assert_eq!(image.snap_id("base").expect("id"), snaps[0].id);
    image.snap_timestamp(snaps[0].id).expect("snapshot time");

    assert!(!image.snap_is_protected("base").expect("protected?"));
    assert_eq!(kind(image.snap_unprotect("base")), ErrorKind::InvalidArgument);
    image.snap_protect("base").expect("protect");
    assert!(image.snap_is_protected("base").expect("protected?"));
    assert_eq!(kind(image.snap_protect("base")), ErrorKind::Busy);
    assert_eq!(kind(image.snap_remove("base", 0, &mut no_progress())), ErrorKind::Busy);

    // A format 1 clone of the protected snapshot.
    let child = unique("child");
    let clone_v1 = ImageOptions { clone_format: Some(1), ..ImageOptions::default() };
    io.clone_image(&parent, "base", &io, &child, &clone_v1).expect("clone");
    let clone = Image::open(&io, &child).expect("open clone");
    let parent_spec = clone.parent().expect("parent").expect("a clone has a parent");
    assert_eq!(parent_spec.image.image_name, parent);
    assert_eq!(parent_spec.image.pool_name, env.pool);
    assert_eq!(parent_spec.snap_name, "base");
    assert_eq!(parent_spec.snap_namespace, SnapNamespace::User);
    assert_eq!(clone.overlap().expect("overlap"), 16 * MIB);
    assert_eq!(clone.size().expect("size"), 16 * MIB);

    let at_base = Image::open_at_snap(&io, &parent, "base").expect("open at snapshot");
    let children = at_base.children().expect("children");
    assert_eq!(children.len(), 1);
    assert_eq!((children[0].image_name.as_str(), children[0].trash), (child.as_str(), false));
    drop(at_base);

    // The clone reads the parent's data and keeps its own writes.
    let mut buf = vec![0u8; 4096];
    clone.read(4096, &mut buf).expect("read through");
    assert_eq!(buf, original[4096..8192]);
    clone.write(0, &[9u8; 4096]).expect("write clone");
    image.write(4096, &[1u8; 4096]).expect("parent head moves on");
    clone.read(4096, &mut buf).expect("read through");
    assert_eq!(buf, original[4096..8192], "the clone reads the snapshot, not the parent's head");

    // Refusals while the clone depends on the snapshot.
    assert_eq!(kind(image.snap_unprotect("base")), ErrorKind::Busy);
    drop(image);
    assert_eq!(kind(io.image_remove(&parent, &mut no_progress())), ErrorKind::NotEmpty);

    // Flatten, cancelled first, then to the end.
    let cancelled = clone.flatten(&mut |_, _| ControlFlow::Break(()));
    assert_eq!(kind(cancelled), ErrorKind::Cancelled);
    assert!(clone.parent().expect("parent").is_some(), "a cancelled flatten keeps the parent");
    let mut last = (0, 0);
    clone
        .flatten(&mut |done, total| {
            last = (done, total);
            ControlFlow::Continue(())
        })
        .expect("flatten");
    // Progress counts objects; librbd 16 reports the last one before it finishes (3 of 4 here).
    assert_eq!(last.1, 4, "one unit per object");
    assert!(last.0 >= 1 && last.0 <= last.1, "{last:?}");
    assert_eq!(clone.parent().expect("parent"), None);
    assert_eq!(kind(clone.flatten(&mut no_progress())), ErrorKind::InvalidArgument);
    clone.read(4096, &mut buf).expect("read flattened");
    assert_eq!(buf, original[4096..8192]);
    clone.read(0, &mut buf).expect("read flattened");
    assert_eq!(buf, [9u8; 4096]);
    drop(clone);

    let image = Image::open(&io, &parent).expect("open parent");
    let at_base = Image::open_at_snap(&io, &parent, "base").expect("open at snapshot");
    assert!(at_base.children().expect("children").is_empty());
    drop(at_base);
    image.snap_unprotect("base").expect("unprotect");
    image.snap_remove("base", 0, &mut no_progress()).expect("remove snapshot");
    assert_eq!(kind(image.snap_remove("base", 0, &mut no_progress())), ErrorKind::NotFound);
    drop(image);
    support::remove_all(&io, &child);
    support::remove_all(&io, &parent);
}

#[test]
fn clone_format_2_of_an_unprotected_snapshot() {
    let Some(env) = env("clone_format_2_of_an_unprotected_snapshot") else { return };
    let io = env.io();
    let parent = unique("p2");
    support::create(&io, &parent, 8 * MIB);
    let image = Image::open(&io, &parent).expect("open");
    image.write(0, &pattern(0, 4096, 4)).expect("write");
    image.snap_create("s").expect("snapshot");

    let child = unique("c2");
    let clone_v1 = ImageOptions { clone_format: Some(1), ..ImageOptions::default() };
    assert_eq!(kind(io.clone_image(&parent, "s", &io, &child, &clone_v1)), ErrorKind::InvalidArgument);
    let clone_v2 = ImageOptions { clone_format: Some(2), ..ImageOptions::default() };
    io.clone_image(&parent, "s", &io, &child, &clone_v2).expect("clone v2 of an unprotected snapshot");

    // Removing the snapshot moves it to the trash namespace while the clone needs it.
    image.snap_remove("s", 0, &mut no_progress()).expect("remove snapshot with a v2 clone");
    assert!(!image.snap_exists("s").expect("exists"));
    let snaps = image.snap_list().expect("snaps");
    assert_eq!(snaps.len(), 1, "{snaps:?}");
    assert_eq!(snaps[0].namespace, SnapNamespace::Trash);
    let clone = Image::open(&io, &child).expect("open clone");
    let parent_spec = clone.parent().expect("parent").expect("still a clone");
    assert_eq!(parent_spec.snap_namespace, SnapNamespace::Trash);
    let mut buf = vec![0u8; 4096];
    clone.read(0, &mut buf).expect("read through a trashed snapshot");
    assert_eq!(buf, pattern(0, 4096, 4));
    drop(image);
    // The parent cannot go while the trashed snapshot has a clone.
    assert_eq!(kind(io.image_remove(&parent, &mut no_progress())), ErrorKind::NotEmpty);

    // Once the clone is gone, the trashed snapshot goes with it and the parent can be removed.
    drop(clone);
    io.image_remove(&child, &mut no_progress()).expect("remove clone");
    let image = Image::open(&io, &parent).expect("open");
    assert!(image.snap_list().expect("snaps").is_empty());
    drop(image);
    io.image_remove(&parent, &mut no_progress()).expect("remove parent");
}

#[test]
fn rollback_and_rename() {
    let Some(env) = env("rollback_and_rename") else { return };
    let io = env.io();
    let name = unique("rb");
    support::create(&io, &name, 8 * MIB);
    let image = Image::open(&io, &name).expect("open");
    image.write(0, &pattern(0, 8192, 1)).expect("write");
    image.snap_create("before").expect("snapshot");
    image.write(0, &pattern(0, 8192, 2)).expect("overwrite");
    image.resize(16 * MIB, false, &mut no_progress()).expect("grow");

    image.snap_rename("before", "first").expect("rename");
    assert_eq!(kind(image.snap_rename("before", "x")), ErrorKind::NotFound);
    image.snap_create("second").expect("snapshot");
    assert_eq!(kind(image.snap_rename("first", "second")), ErrorKind::AlreadyExists);

    let mut updates = 0;
    image
        .snap_rollback("first", &mut |_, _| {
            updates += 1;
            ControlFlow::Continue(())
        })
        .expect("rollback");
    assert!(updates > 0);
    assert_eq!(image.size().expect("size"), 8 * MIB, "rollback restores the snapshot's size");
    let mut buf = vec![0u8; 8192];
    image.read(0, &mut buf).expect("read");
    assert_eq!(buf, pattern(0, 8192, 1));
    assert_eq!(kind(image.snap_rollback("missing", &mut no_progress())), ErrorKind::NotFound);

    let names: Vec<String> = image.snap_list().expect("snaps").into_iter().map(|snap| snap.name).collect();
    assert_eq!(names, ["first", "second"]);
    drop(image);
    support::remove_all(&io, &name);
}
