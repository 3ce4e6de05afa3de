//! Image create, list, stat, resize, rename, metadata, features, watchers, locks and remove.

use std::ops::ControlFlow;

use basalt_ceph::Image;
use basalt_ceph::{ImageOptions, LockMode, ffi, no_progress};
use basalt_core::ErrorKind;

use crate::support::{self, env, kind, unique};

const MIB: u64 = 1 << 20;

#[test]
fn create_list_stat_resize_rename_remove() {
    let Some(env) = env("create_list_stat_resize_rename_remove") else { return };
    let io = env.io();
    let name = unique("img");
    support::create(&io, &name, 64 * MIB);
    assert_eq!(kind(io.image_create(&name, MIB, &support::options())), ErrorKind::AlreadyExists);

    let listed = io.image_list().expect("list");
    let entry = listed.iter().find(|entry| entry.name == name).expect("the new image is listed");

    let image = Image::open(&io, &name).expect("open");
    let stat = image.stat().expect("stat");
    assert_eq!((stat.size, stat.obj_size, stat.num_objs, stat.order), (64 * MIB, 4 * MIB, 16, 22));
    assert_eq!(image.size().expect("size"), 64 * MIB);
    assert_eq!(image.id().expect("id"), entry.id);
    assert_eq!(image.block_name_prefix().expect("prefix"), format!("rbd_data.{}", entry.id));
    assert_eq!(image.name().expect("name"), name);
    assert!(!image.is_old_format().expect("format"));
    assert_eq!(image.features().expect("features"), u64::from(ffi::RBD_FEATURES_DEFAULT));
    assert_eq!(image.flags().expect("flags"), 0);
    assert_eq!(image.stripe_unit().expect("stripe unit"), 4 * MIB);
    assert_eq!(image.stripe_count().expect("stripe count"), 1);
    assert_eq!(image.data_pool_id().expect("data pool"), io.pool_id());
    assert_eq!(image.parent().expect("parent"), None);
    assert_eq!(image.overlap().expect("overlap"), 0);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
    let created = image.create_timestamp().expect("created").secs();
    assert!(created.abs_diff(now) < 600, "created {created}, now {now}");
    image.access_timestamp().expect("atime");
    image.modify_timestamp().expect("mtime");

    // Growing reports progress; shrinking needs allow_shrink.
    let mut updates = 0;
    image
        .resize(128 * MIB, false, &mut |_, _| {
            updates += 1;
            ControlFlow::Continue(())
        })
        .expect("grow");
    assert_eq!(image.size().expect("size"), 128 * MIB);
    assert_eq!(kind(image.resize(32 * MIB, false, &mut no_progress())), ErrorKind::InvalidArgument);
    image.resize(32 * MIB, true, &mut no_progress()).expect("shrink");
    assert_eq!(image.stat().expect("stat").num_objs, 8);
    let _ = updates;
    image.close().expect("close");

    let renamed = unique("renamed");
    io.image_rename(&name, &renamed).expect("rename");
    assert_eq!(kind(Image::open(&io, &name)), ErrorKind::NotFound);
    let other = unique("other");
    support::create(&io, &other, MIB);
    assert_eq!(kind(io.image_rename(&renamed, &other)), ErrorKind::AlreadyExists);

    io.image_remove(&renamed, &mut no_progress()).expect("remove");
    io.image_remove(&other, &mut no_progress()).expect("remove");
    assert_eq!(kind(io.image_remove(&renamed, &mut no_progress())), ErrorKind::NotFound);
    assert!(!io.image_list().expect("list").iter().any(|entry| entry.name == renamed || entry.name == other));
}

#[test]
fn create_options_are_checked_and_applied() {
    let Some(env) = env("create_options_are_checked_and_applied") else { return };
    let io = env.io();
    let name = unique("opts");
    let striped = ImageOptions {
        order: Some(20),
        features: Some(u64::from(ffi::RBD_FEATURE_LAYERING | ffi::RBD_FEATURE_STRIPINGV2)),
        stripe_unit: Some(64 * 1024),
        stripe_count: Some(4),
        ..ImageOptions::default()
    };
    io.image_create(&name, 16 * MIB, &striped).expect("striped image");
    let image = Image::open(&io, &name).expect("open");
    assert_eq!(image.stat().expect("stat").order, 20);
    assert_eq!((image.stripe_unit().expect("unit"), image.stripe_count().expect("count")), (64 * 1024, 4));
    assert_eq!(image.features().expect("features"), u64::from(ffi::RBD_FEATURE_LAYERING | ffi::RBD_FEATURE_STRIPINGV2));
    drop(image);
    support::remove_all(&io, &name);

    let bad_order = ImageOptions { order: Some(26), ..ImageOptions::default() };
    assert_eq!(kind(io.image_create(&unique("bad"), MIB, &bad_order)), ErrorKind::OutOfDomain);
    let object_map_without_lock = ImageOptions {
        features: Some(u64::from(ffi::RBD_FEATURE_LAYERING | ffi::RBD_FEATURE_OBJECT_MAP)),
        ..ImageOptions::default()
    };
    assert_eq!(kind(io.image_create(&unique("bad"), MIB, &object_map_without_lock)), ErrorKind::InvalidArgument);
    // librbd 16 does not refuse fast-diff without object-map: it drops the bit (fast-diff is "implicit").
    let fast_diff_alone = ImageOptions {
        features: Some(u64::from(ffi::RBD_FEATURE_LAYERING | ffi::RBD_FEATURE_FAST_DIFF)),
        ..ImageOptions::default()
    };
    let name = unique("fastdiff");
    io.image_create(&name, MIB, &fast_diff_alone).expect("fast-diff alone is accepted");
    let features = Image::open(&io, &name).expect("open").features().expect("features");
    assert_eq!(features, u64::from(ffi::RBD_FEATURE_LAYERING));
    support::remove_all(&io, &name);
    let unit_only = ImageOptions { stripe_unit: Some(65536), ..ImageOptions::default() };
    assert_eq!(kind(io.image_create(&unique("bad"), MIB, &unit_only)), ErrorKind::InvalidArgument);
    let missing_data_pool = ImageOptions { data_pool: Some("no-such-pool-here".to_owned()), ..ImageOptions::default() };
    assert_eq!(kind(io.image_create(&unique("bad"), MIB, &missing_data_pool)), ErrorKind::NotFound);
}

#[test]
fn features_metadata_watchers_and_locks() {
    let Some(env) = env("features_metadata_watchers_and_locks") else { return };
    let io = env.io();
    let name = unique("meta");
    support::create(&io, &name, 8 * MIB);
    let image = Image::open(&io, &name).expect("open");

    // Object map and fast-diff go together; exclusive-lock cannot go while they are on.
    let object_map = u64::from(ffi::RBD_FEATURE_OBJECT_MAP | ffi::RBD_FEATURE_FAST_DIFF);
    assert_eq!(
        kind(image.update_features(u64::from(ffi::RBD_FEATURE_EXCLUSIVE_LOCK), false)),
        ErrorKind::InvalidArgument
    );
    image.update_features(object_map, false).expect("disable object-map and fast-diff");
    assert_eq!(image.features().expect("features") & object_map, 0);
    assert_eq!(kind(image.update_features(u64::from(ffi::RBD_FEATURE_LAYERING), false)), ErrorKind::InvalidArgument);
    image.update_features(object_map, true).expect("enable again");
    assert_eq!(image.features().expect("features") & object_map, object_map);

    image.metadata_set("b", "2").expect("set");
    image.metadata_set("a", "").expect("set empty value");
    assert_eq!(image.metadata_get("b").expect("get"), "2");
    assert_eq!(
        image.metadata_list().expect("list"),
        [("a".to_owned(), String::new()), ("b".to_owned(), "2".to_owned())]
    );
    image.metadata_remove("a").expect("remove");
    assert_eq!(kind(image.metadata_remove("a")), ErrorKind::NotFound);
    assert_eq!(kind(image.metadata_get("a")), ErrorKind::NotFound);
    let long_value = "v".repeat(10_000);
    image.metadata_set("long", &long_value).expect("set long");
    assert_eq!(image.metadata_get("long").expect("get long"), long_value);

    // The open handle watches the image, as this client; a read-only open does not.
    let watchers = image.watchers().expect("watchers");
    assert_eq!(watchers.len(), 1, "{watchers:?}");
    assert_eq!(u64::try_from(watchers[0].id).expect("id"), env.cluster.instance_id());
    let read_only = Image::open_read_only(&io, &name, None).expect("read-only open");
    assert_eq!(image.watchers().expect("watchers").len(), 1);
    drop(read_only);

    // Removing an image that is open elsewhere is refused.
    assert_eq!(kind(io.image_remove(&name, &mut no_progress())), ErrorKind::Busy);

    image.snap_set_limit(Some(1)).expect("limit");
    assert_eq!(image.snap_limit().expect("limit"), Some(1));
    image.snap_create("one").expect("first snapshot");
    assert_eq!(kind(image.snap_create("two")), ErrorKind::QuotaExceeded);
    image.snap_set_limit(None).expect("clear limit");
    assert_eq!(image.snap_limit().expect("limit"), None);
    image.snap_create("two").expect("second snapshot");

    // The exclusive lock. Writes and maintenance operations take it transparently (and hand it over on request);
    // an explicit acquire keeps it: the other handle's writes then fail with EROFS instead of taking it back.
    image.write(0, &[1u8; 4096]).expect("write");
    assert!(image.is_exclusive_lock_owner().expect("owner"));
    let (mode, owners) = image.lock_owners().expect("owners");
    assert_eq!((mode, owners.len()), (LockMode::Exclusive, 1));
    let other = Image::open(&io, &name).expect("second handle");
    assert!(!other.is_exclusive_lock_owner().expect("owner"));
    other.lock_acquire(LockMode::Exclusive).expect("explicit acquire");
    assert!(other.is_exclusive_lock_owner().expect("owner"));
    assert!(!image.is_exclusive_lock_owner().expect("owner"));
    assert_eq!(kind(image.write(0, &[2u8; 4096])), ErrorKind::ReadOnly);
    other.lock_release().expect("release");
    assert!(!other.is_exclusive_lock_owner().expect("owner"));
    image.write(0, &[2u8; 4096]).expect("writes again once released");
    // Only the exclusive mode exists for this lock.
    assert_eq!(kind(other.lock_acquire(LockMode::Shared)), ErrorKind::NotSupported);
    drop(other);

    drop(image);
    // With snapshots, removal is refused (ENOTEMPTY) until they are gone.
    assert_eq!(kind(io.image_remove(&name, &mut no_progress())), ErrorKind::NotEmpty);
    support::remove_all(&io, &name);
    assert_eq!(kind(Image::open(&io, &name)), ErrorKind::NotFound);
}

#[test]
fn copy_and_deep_copy() {
    let Some(env) = env("copy_and_deep_copy") else { return };
    let io = env.io();
    let source = unique("src");
    support::create(&io, &source, 16 * MIB);
    let image = Image::open(&io, &source).expect("open");
    image.write(0, &support::pattern(0, 4096, 1)).expect("write");
    image.snap_create("s1").expect("snap");
    image.write(0, &support::pattern(0, 4096, 2)).expect("write");

    // Copy of the head: no snapshots.
    let copy = unique("copy");
    let mut updates = 0u32;
    image
        .copy(&io, &copy, &support::options(), 0, &mut |_, _| {
            updates += 1;
            ControlFlow::Continue(())
        })
        .expect("copy");
    let copied = Image::open(&io, &copy).expect("open copy");
    let mut buf = vec![0u8; 4096];
    copied.read(0, &mut buf).expect("read");
    assert_eq!(buf, support::pattern(0, 4096, 2));
    assert!(copied.snap_list().expect("snaps").is_empty());
    drop(copied);

    // Copy of a snapshot: the snapshot's data.
    let at_snap = Image::open_at_snap(&io, &source, "s1").expect("open at snap");
    assert!(at_snap.is_read_only());
    assert_eq!(kind(at_snap.write(0, &[1u8; 512])), ErrorKind::ReadOnly);
    let snap_copy = unique("snapcopy");
    at_snap.copy(&io, &snap_copy, &support::options(), 0, &mut no_progress()).expect("copy snapshot");
    let copied = Image::open(&io, &snap_copy).expect("open");
    copied.read(0, &mut buf).expect("read");
    assert_eq!(buf, support::pattern(0, 4096, 1));
    drop(copied);
    drop(at_snap);

    // Deep copy keeps the snapshots.
    let deep = unique("deep");
    image.deep_copy(&io, &deep, &ImageOptions::default(), &mut no_progress()).expect("deep copy");
    let deep_image = Image::open(&io, &deep).expect("open deep copy");
    let names: Vec<String> = deep_image.snap_list().expect("snaps").into_iter().map(|snap| snap.name).collect();
    assert_eq!(names, ["s1"]);
    deep_image.read(0, &mut buf).expect("read");
    assert_eq!(buf, support::pattern(0, 4096, 2));
    drop(deep_image);
    let deep_snap = Image::open_read_only(&io, &deep, Some("s1")).expect("open deep copy snapshot");
    deep_snap.read(0, &mut buf).expect("read");
    assert_eq!(buf, support::pattern(0, 4096, 1));
    drop(deep_snap);
    drop(image);

    for name in [&source, &copy, &snap_copy, &deep] {
        support::remove_all(&io, name);
    }
}
