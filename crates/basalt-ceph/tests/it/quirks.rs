//! librbd 16 behaviours a backend built on it must know, because they differ from what the CLI (or the embedded
//! engine) does. Each assertion records what librbd itself answers.

use basalt_ceph::{Image, ImageOptions, ffi, no_progress};
use basalt_core::ErrorKind;

use crate::support::{self, env, kind, unique};

const MIB: u64 = 1 << 20;

#[test]
fn librbd_answers_that_differ_from_the_cli() {
    let Some(env) = env("librbd_answers_that_differ_from_the_cli") else { return };
    // A pool of its own: the purge below must not reach other tests' trash entries.
    let pool = unique("quirkpool");
    env.cluster.pool_create(&pool).expect("pool");
    let io = env.cluster.ioctx(&pool).expect("ioctx");
    io.application_enable("rbd", false).expect("tag");
    io.rbd_pool_init(false).expect("init");
    let name = unique("quirk");
    support::create(&io, &name, 8 * MIB);
    let image = Image::open(&io, &name).expect("open");

    // Resizing to the same size succeeds (the CLI refuses it with EINVAL).
    image.resize(8 * MIB, false, &mut no_progress()).expect("same size");
    // Enabling a feature that is already on, or an immutable one, is EINVAL.
    let lock = u64::from(ffi::RBD_FEATURE_EXCLUSIVE_LOCK);
    assert_eq!(kind(image.update_features(lock, true)), ErrorKind::InvalidArgument);
    assert_eq!(kind(image.update_features(u64::from(ffi::RBD_FEATURE_DEEP_FLATTEN), true)), ErrorKind::InvalidArgument);

    // A snapshot limit below the current number of snapshots is ERANGE.
    image.snap_create("a").expect("snapshot");
    image.snap_create("b").expect("snapshot");
    assert_eq!(kind(image.snap_set_limit(Some(1))), ErrorKind::OutOfRange);
    // Names are not validated by librbd (the CLI does): an empty snapshot name is accepted by rename.
    image.snap_rename("b", "").expect("empty snapshot name");
    assert!(image.snap_exists("").expect("exists"));
    image.snap_remove("", 0, &mut no_progress()).expect("remove it again");

    // A handle open at a snapshot still creates snapshots (of the image), but refuses resize.
    let at_a = Image::open_at_snap(&io, &name, "a").expect("open at snapshot");
    at_a.snap_create("from-snap-handle").expect("snapshot through a snapshot handle");
    assert_eq!(kind(at_a.resize(MIB, true, &mut no_progress())), ErrorKind::ReadOnly);
    drop(at_a);
    assert!(image.snap_exists("from-snap-handle").expect("exists"));

    // A protected snapshot with a clone: even RBD_SNAP_REMOVE_UNPROTECT is refused with EBUSY.
    image.snap_protect("a").expect("protect");
    let child = unique("quirkchild");
    let clone_v1 = ImageOptions { clone_format: Some(1), ..ImageOptions::default() };
    io.clone_image(&name, "a", &io, &child, &clone_v1).expect("clone");
    assert_eq!(kind(image.snap_remove("a", ffi::RBD_SNAP_REMOVE_UNPROTECT, &mut no_progress())), ErrorKind::Busy);
    drop(image);

    // An image with snapshots (and a clone) can be moved to the trash, even while another handle has it open...
    let holder = Image::open(&io, &name).expect("second open");
    io.trash_move(&name, 0).expect("trash move of an open image with snapshots");
    drop(holder);
    let id = io.trash_list().expect("list").into_iter().find(|entry| entry.name == name).expect("listed").id;
    // ...but not removed from it, even with force (ENOTEMPTY), and a purge that meets it fails as a whole with
    // ENOTEMPTY instead of skipping it: a backend must purge entry by entry to report what it skipped.
    assert_eq!(kind(io.trash_remove(&id, true, &mut no_progress())), ErrorKind::NotEmpty);
    let far_future = 4_000_000_000;
    assert_eq!(kind(io.trash_purge(far_future, -1.0, &mut no_progress())), ErrorKind::NotEmpty);
    assert!(io.trash_get(&id).is_ok());
    io.trash_restore(&id, &name).expect("restore");

    support::remove_all(&io, &child);
    support::remove_all(&io, &name);
    drop(io);
    env.cluster.pool_delete(&pool).expect("pool delete");
}
