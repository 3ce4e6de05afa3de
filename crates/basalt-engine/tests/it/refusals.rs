//! Every rule of the reference table that the engine enforces, each refusal with its errno-style kind, and the
//! seed's workflows (create, snapshot, protect, clone, flatten, trash, copy) end to end on a real directory.

use std::sync::Arc;

use basalt_core::config::{ConfigLevel, ConfigSource};
use basalt_core::{
    Backend, CloneRequest, CopyRequest, CreateOptions, DiffGranularity, Durability, ErrorKind, Features, ImageName,
    ImageSpec, ManualClock, ObjectOrder, OpenTarget, PoolName, PoolNs, Progress, ResizePolicy, SnapName, SnapSpec,
    Timestamp, TrashForce, ZeroMode,
};
use basalt_engine::Engine;

const START: u64 = 1_700_000_000;
const MIB: u64 = 1 << 20;

struct Fixture {
    _dir: tempfile::TempDir,
    root: std::path::PathBuf,
    clock: Arc<ManualClock>,
    engine: Engine,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().join("data");
    let clock = Arc::new(ManualClock::new(Timestamp(START)));
    let engine = Engine::open(&root, clock.clone()).expect("open engine");
    let pool = PoolName::new("rbd").expect("pool name");
    engine.pool_create(&pool).expect("create pool");
    engine.pool_application_enable(&pool, "rbd").expect("tag pool");
    Fixture { _dir: dir, root, clock, engine }
}

fn spec(s: &str) -> ImageSpec {
    ImageSpec::parse(s).expect("image spec")
}

fn snap(s: &str) -> SnapSpec {
    SnapSpec::parse(s).expect("snap spec")
}

fn kind<T: std::fmt::Debug>(result: basalt_core::Result<T>) -> ErrorKind {
    result.expect_err("the operation must be refused").kind()
}

fn create(f: &Fixture, s: &str, size: u64) {
    f.engine.image_create(&spec(s), &CreateOptions::with_size(size)).expect("create image");
}

fn write(f: &Fixture, s: &str, offset: u64, data: &[u8]) {
    let io = f.engine.open(&spec(s), &OpenTarget::Head, "test").expect("open");
    io.write(offset, data, Durability::Buffered).expect("write");
    io.flush().expect("flush");
}

fn read(f: &Fixture, s: &str, offset: u64, len: usize) -> Vec<u8> {
    let io = f.engine.open(&spec(s), &OpenTarget::HeadReadOnly, "test").expect("open");
    let mut buf = vec![0u8; len];
    io.read(offset, &mut buf).expect("read");
    buf
}

#[test]
fn create_validates_features_order_striping_and_names() {
    let f = fixture();
    let e = &f.engine;
    let opts = |features: Option<Features>| CreateOptions { features, ..CreateOptions::with_size(MIB) };
    // fast-diff without object-map is dropped rather than refused (as librbd does): see the conformance suite.
    assert_eq!(kind(e.image_create(&spec("rbd/a"), &opts(Some(Features::OBJECT_MAP)))), ErrorKind::InvalidArgument);
    assert_eq!(kind(e.image_create(&spec("rbd/a"), &opts(Some(Features::OPERATIONS)))), ErrorKind::InvalidArgument);
    assert_eq!(kind(Features::from_bits(1 << 20)), ErrorKind::NotImplemented);
    assert_eq!(kind(ObjectOrder::new(26)), ErrorKind::OutOfDomain);
    assert_eq!(kind(ObjectOrder::new(11)), ErrorKind::OutOfDomain);
    let striped = CreateOptions { striping: Some((3000, 2)), ..CreateOptions::with_size(MIB) };
    assert_eq!(kind(e.image_create(&spec("rbd/a"), &striped)), ErrorKind::InvalidArgument);
    let too_big = CreateOptions::with_size(u64::MAX);
    assert_eq!(kind(e.image_create(&spec("rbd/a"), &too_big)), ErrorKind::InvalidArgument);
    assert_eq!(kind(e.image_create(&spec("nopool/a"), &CreateOptions::with_size(MIB))), ErrorKind::NotFound);
    assert_eq!(kind(e.image_create(&spec("rbd/nons/a"), &CreateOptions::with_size(MIB))), ErrorKind::NotFound);
    // Nothing of the refused creations is left behind.
    assert!(e.image_list(&PoolNs::parse("rbd").expect("loc")).expect("list").is_empty());

    // object-map brings fast-diff along; striping is implicit from the layout.
    let with_map = Features::LAYERING.union(Features::EXCLUSIVE_LOCK).union(Features::OBJECT_MAP);
    e.image_create(&spec("rbd/a"), &opts(Some(with_map))).expect("create");
    assert!(e.image_info(&spec("rbd/a")).expect("info").features.contains(Features::FAST_DIFF));
    let striped = CreateOptions { striping: Some((64 << 10, 4)), ..CreateOptions::with_size(MIB) };
    e.image_create(&spec("rbd/s"), &striped).expect("striped create");
    let info = e.image_info(&spec("rbd/s")).expect("info");
    assert!(info.features.contains(Features::STRIPING));
    assert_eq!((info.striping.unit_bytes, info.striping.count), (64 << 10, 4));
    assert_eq!(kind(e.image_create(&spec("rbd/a"), &CreateOptions::with_size(MIB))), ErrorKind::AlreadyExists);
}

#[test]
fn images_refuse_non_rbd_pools() {
    let f = fixture();
    let other = PoolName::new("plain").expect("name");
    f.engine.pool_create(&other).expect("create pool");
    let err = f.engine.image_create(&spec("plain/a"), &CreateOptions::with_size(MIB)).expect_err("untagged pool");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert!(err.message().contains("rbd"), "{err}");
    f.engine.pool_application_enable(&other, "rbd").expect("tag");
    f.engine.image_create(&spec("plain/a"), &CreateOptions::with_size(MIB)).expect("create after tagging");
    assert_eq!(kind(f.engine.pool_remove(&other)), ErrorKind::Busy);
}

#[test]
fn image_removal_rules() {
    let f = fixture();
    let e = &f.engine;
    create(&f, "rbd/vm", 4 * MIB);
    e.snap_create(&snap("rbd/vm@s1")).expect("snapshot");
    let err = e.image_remove(&spec("rbd/vm"), &Progress::default()).expect_err("has snapshots");
    assert_eq!(err.kind(), ErrorKind::NotEmpty);
    assert!(err.message().contains("image has snapshots"), "{err}");
    e.snap_protect(&snap("rbd/vm@s1")).expect("protect");
    assert_eq!(kind(e.snap_remove(&snap("rbd/vm@s1"))), ErrorKind::Busy);
    assert_eq!(kind(e.snap_purge(&spec("rbd/vm"), &Progress::default())), ErrorKind::Busy);
    e.snap_unprotect(&snap("rbd/vm@s1")).expect("unprotect");
    e.snap_purge(&spec("rbd/vm"), &Progress::default()).expect("purge");
    let io = e.open(&spec("rbd/vm"), &OpenTarget::Head, "10.0.0.9:5000").expect("attach");
    let err = e.image_remove(&spec("rbd/vm"), &Progress::default()).expect_err("attached");
    assert_eq!(err.kind(), ErrorKind::Busy);
    assert!(err.message().contains("10.0.0.9:5000"), "{err}");
    assert_eq!(kind(e.trash_move(&spec("rbd/vm"), Timestamp(START))), ErrorKind::Busy);
    drop(io);
    e.image_remove(&spec("rbd/vm"), &Progress::default()).expect("remove");
    assert_eq!(kind(e.image_info(&spec("rbd/vm"))), ErrorKind::NotFound);
    assert_eq!(kind(e.image_remove(&spec("rbd/vm"), &Progress::default())), ErrorKind::NotFound);
}

#[test]
fn snapshot_rules() {
    let f = fixture();
    let e = &f.engine;
    create(&f, "rbd/vm", MIB);
    e.snap_create(&snap("rbd/vm@a")).expect("snap a");
    assert_eq!(kind(e.snap_create(&snap("rbd/vm@a"))), ErrorKind::AlreadyExists);
    assert_eq!(kind(e.snap_rename(&snap("rbd/vm@zz"), &SnapName::new("b").expect("name"))), ErrorKind::NotFound);
    e.snap_create(&snap("rbd/vm@b")).expect("snap b");
    assert_eq!(kind(e.snap_rename(&snap("rbd/vm@a"), &SnapName::new("b").expect("name"))), ErrorKind::AlreadyExists);
    assert_eq!(kind(e.snap_unprotect(&snap("rbd/vm@a"))), ErrorKind::InvalidArgument);
    e.snap_protect(&snap("rbd/vm@a")).expect("protect");
    assert_eq!(kind(e.snap_protect(&snap("rbd/vm@a"))), ErrorKind::Busy);
    assert_eq!(kind(e.snap_limit_set(&spec("rbd/vm"), Some(1))), ErrorKind::InvalidArgument);
    e.snap_limit_set(&spec("rbd/vm"), Some(2)).expect("limit");
    assert_eq!(kind(e.snap_create(&snap("rbd/vm@c"))), ErrorKind::QuotaExceeded);
    e.snap_limit_set(&spec("rbd/vm"), None).expect("no limit");
    e.snap_create(&snap("rbd/vm@c")).expect("snap c");
    let names: Vec<String> = e.snap_list(&spec("rbd/vm")).expect("list").iter().map(|s| s.name.to_string()).collect();
    assert_eq!(names, ["a", "b", "c"]);
    // Without layering, snapshots cannot be protected.
    let plain = CreateOptions { features: Some(Features::EXCLUSIVE_LOCK), ..CreateOptions::with_size(MIB) };
    e.image_create(&spec("rbd/flat"), &plain).expect("create without layering");
    e.snap_create(&snap("rbd/flat@s")).expect("snap");
    assert_eq!(kind(e.snap_protect(&snap("rbd/flat@s"))), ErrorKind::NotImplemented);
}

#[test]
fn clone_flatten_and_unprotect_follow_the_reference() {
    let f = fixture();
    let e = &f.engine;
    create(&f, "rbd/golden", 8 * MIB);
    write(&f, "rbd/golden", 0, &[7u8; 8192]);
    write(&f, "rbd/golden", 5 * MIB + 100, b"template");
    e.snap_create(&snap("rbd/golden@base")).expect("snapshot");
    let err =
        e.clone_image(&snap("rbd/golden@base"), &spec("rbd/vm1"), &CloneRequest::inherit()).expect_err("unprotected");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert!(err.message().contains("not protected"), "{err}");
    assert_eq!(
        kind(e.clone_image(&snap("rbd/golden@nope"), &spec("rbd/vm1"), &CloneRequest::inherit())),
        ErrorKind::NotFound
    );
    e.snap_protect(&snap("rbd/golden@base")).expect("protect");
    let ns = PoolNs::parse("rbd/tenant").expect("loc");
    e.namespace_create(&ns).expect("namespace");
    e.clone_image(&snap("rbd/golden@base"), &spec("rbd/tenant/vm1"), &CloneRequest::inherit()).expect("clone");
    // The head of the parent changes after the snapshot; the clone still sees the snapshot.
    write(&f, "rbd/golden", 0, &[9u8; 4096]);
    assert_eq!(read(&f, "rbd/tenant/vm1", 0, 8192), vec![7u8; 8192]);
    assert_eq!(read(&f, "rbd/tenant/vm1", 5 * MIB + 100, 8), b"template");
    let info = e.image_info(&spec("rbd/tenant/vm1")).expect("info");
    let parent = info.parent.expect("clone has a parent");
    assert_eq!((parent.image.as_str(), parent.snap.as_str(), parent.overlap_bytes), ("golden", "base", 8 * MIB));
    let children = e.snap_children(&snap("rbd/golden@base")).expect("children");
    assert_eq!(children.len(), 1);
    // A partial write to the clone copies up only what it needs.
    write(&f, "rbd/tenant/vm1", 100, b"XY");
    let mut expected = vec![7u8; 8192];
    expected[100..102].copy_from_slice(b"XY");
    assert_eq!(read(&f, "rbd/tenant/vm1", 0, 8192), expected);

    let err = e.snap_unprotect(&snap("rbd/golden@base")).expect_err("children exist");
    assert_eq!(err.kind(), ErrorKind::Busy);
    assert!(err.message().contains("child"), "{err}");
    let err = e.image_remove(&spec("rbd/golden"), &Progress::default()).expect_err("clones depend");
    assert_eq!(err.kind(), ErrorKind::NotEmpty);
    assert!(err.message().contains("linked clones"), "{err}");

    let progress = Progress::default();
    e.flatten(&spec("rbd/tenant/vm1"), &progress).expect("flatten");
    assert_eq!(progress.fraction(), 1.0);
    assert!(e.image_info(&spec("rbd/tenant/vm1")).expect("info").parent.is_none());
    assert_eq!(read(&f, "rbd/tenant/vm1", 0, 8192), expected);
    assert_eq!(read(&f, "rbd/tenant/vm1", 5 * MIB + 100, 8), b"template");
    assert_eq!(kind(e.flatten(&spec("rbd/tenant/vm1"), &Progress::default())), ErrorKind::InvalidArgument);
    e.snap_unprotect(&snap("rbd/golden@base")).expect("unprotect after flatten");
    e.snap_remove(&snap("rbd/golden@base")).expect("remove snapshot");
    e.image_remove(&spec("rbd/golden"), &Progress::default()).expect("remove parent");
    assert_eq!(read(&f, "rbd/tenant/vm1", 5 * MIB + 100, 8), b"template");
    let err = e.namespace_remove(&ns).expect_err("namespace has images");
    assert_eq!(err.kind(), ErrorKind::Busy);
}

#[test]
fn clone_needs_layering() {
    let f = fixture();
    let e = &f.engine;
    create(&f, "rbd/p", MIB);
    e.snap_create(&snap("rbd/p@s")).expect("snap");
    e.snap_protect(&snap("rbd/p@s")).expect("protect");
    let no_layering = CloneRequest { features: Some(Features::EXCLUSIVE_LOCK), ..CloneRequest::inherit() };
    assert_eq!(kind(e.clone_image(&snap("rbd/p@s"), &spec("rbd/c"), &no_layering)), ErrorKind::NotImplemented);
}

#[test]
fn resize_rollback_and_size_rules() {
    let f = fixture();
    let e = &f.engine;
    create(&f, "rbd/vm", 2 * MIB);
    write(&f, "rbd/vm", MIB, &[1u8; 4096]);
    e.snap_create(&snap("rbd/vm@before")).expect("snapshot");
    let err = e.image_resize(&spec("rbd/vm"), MIB, ResizePolicy::GrowOnly).expect_err("shrink needs permission");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert!(err.message().contains("allow-shrink"), "{err}");
    assert_eq!(e.image_info(&spec("rbd/vm")).expect("info").size_bytes, 2 * MIB);
    e.image_resize(&spec("rbd/vm"), MIB + 10, ResizePolicy::AllowShrink).expect("shrink");
    e.image_resize(&spec("rbd/vm"), 4 * MIB, ResizePolicy::GrowOnly).expect("grow");
    // The shrunk-away bytes read as zeros after growing back; the snapshot keeps them.
    let mut expected = vec![0u8; 4096];
    expected[..10].fill(1);
    assert_eq!(read(&f, "rbd/vm", MIB, 4096), expected);
    let at_snap = e.image_info_at_snap(&snap("rbd/vm@before")).expect("snap info");
    assert_eq!(at_snap.size_bytes, 2 * MIB);
    let io = e.open(&spec("rbd/vm"), &OpenTarget::Head, "vm-host").expect("attach");
    let err = e.snap_rollback(&snap("rbd/vm@before"), &Progress::default()).expect_err("attached");
    assert_eq!(err.kind(), ErrorKind::Busy);
    drop(io);
    assert_eq!(kind(e.snap_rollback(&snap("rbd/vm@zzz"), &Progress::default())), ErrorKind::NotFound);
    e.snap_rollback(&snap("rbd/vm@before"), &Progress::default()).expect("rollback");
    assert_eq!(e.image_info(&spec("rbd/vm")).expect("info").size_bytes, 2 * MIB);
    assert_eq!(read(&f, "rbd/vm", MIB, 4096), vec![1u8; 4096]);
}

#[test]
fn trash_lifecycle_with_deferment_and_purge() {
    let f = fixture();
    let e = &f.engine;
    let loc = PoolNs::parse("rbd").expect("loc");
    create(&f, "rbd/old", MIB);
    write(&f, "rbd/old", 0, b"keep me");
    let id = e.trash_move(&spec("rbd/old"), Timestamp(START + 3600)).expect("trash");
    assert!(e.image_list(&loc).expect("list").is_empty());
    let entries = e.trash_list(&loc).expect("trash list");
    assert_eq!(entries.len(), 1);
    assert_eq!((entries[0].name.as_str(), entries[0].deferment_end_time), ("old", Timestamp(START + 3600)));
    let err = e.trash_remove(&loc, &id, TrashForce::RespectDeferment, &Progress::default()).expect_err("not expired");
    assert_eq!(err.kind(), ErrorKind::NotPermitted);
    assert!(err.message().contains("deferment time has not expired"), "{err}");
    // Restore under a taken name is refused; under a new name it works and keeps the data.
    create(&f, "rbd/old", MIB);
    assert_eq!(kind(e.trash_restore(&loc, &id, None)), ErrorKind::AlreadyExists);
    e.trash_restore(&loc, &id, Some(&ImageName::new("recovered").expect("name"))).expect("restore");
    assert_eq!(read(&f, "rbd/recovered", 0, 7), b"keep me");
    assert_eq!(kind(e.trash_restore(&loc, &id, None)), ErrorKind::NotFound);

    // Purge removes only expired entries, and skips parents whose clones depend on them.
    create(&f, "rbd/tmpl", MIB);
    e.snap_create(&snap("rbd/tmpl@s")).expect("snap");
    e.snap_protect(&snap("rbd/tmpl@s")).expect("protect");
    e.clone_image(&snap("rbd/tmpl@s"), &spec("rbd/child"), &CloneRequest::inherit()).expect("clone");
    let tmpl_id = e.trash_move(&spec("rbd/tmpl"), Timestamp(START)).expect("trash parent");
    let recent = e.trash_move(&spec("rbd/recovered"), Timestamp(START + 7200)).expect("trash unexpired");
    f.clock.advance(60);
    let report = e
        .trash_purge(&PoolName::new("rbd").expect("pool"), Timestamp(START + 60), &Progress::default())
        .expect("purge");
    assert!(report.removed.is_empty());
    assert_eq!(report.skipped.len(), 1);
    assert_eq!(report.skipped[0].0, tmpl_id);
    assert!(report.skipped[0].1.message().contains("linked clones"));
    // The clone still reads through its trashed parent; after flatten the parent purges.
    assert!(e.image_info(&spec("rbd/child")).expect("info").parent.expect("parent").in_trash);
    e.flatten(&spec("rbd/child"), &Progress::default()).expect("flatten");
    // Without clones the template still has its snapshot, and the reference keeps snapshotted images.
    let pool = PoolName::new("rbd").expect("pool");
    let report = e.trash_purge(&pool, Timestamp(START + 60), &Progress::default()).expect("purge");
    assert_eq!(report.skipped.len(), 1);
    assert!(report.skipped[0].1.message().contains("image has snapshots"), "{:?}", report.skipped);
    e.trash_restore(&loc, &tmpl_id, None).expect("restore the template");
    e.snap_unprotect(&snap("rbd/tmpl@s")).expect("unprotect");
    e.snap_remove(&snap("rbd/tmpl@s")).expect("remove snapshot");
    e.trash_move(&spec("rbd/tmpl"), Timestamp(START)).expect("trash again");
    let report = e.trash_purge(&pool, Timestamp(START + 60), &Progress::default()).expect("purge");
    assert_eq!(report.removed, vec![tmpl_id]);
    e.trash_remove(&loc, &recent, TrashForce::Force, &Progress::default()).expect("forced remove");
    assert!(e.trash_list(&loc).expect("list").is_empty());
}

#[test]
fn namespaces_isolate_and_refuse_removal_while_used() {
    let f = fixture();
    let e = &f.engine;
    let ns = PoolNs::parse("rbd/dev").expect("loc");
    assert_eq!(kind(e.namespace_create(&PoolNs::parse("nopool/dev").expect("loc"))), ErrorKind::NotFound);
    e.namespace_create(&ns).expect("create");
    assert_eq!(kind(e.namespace_create(&ns)), ErrorKind::AlreadyExists);
    create(&f, "rbd/dev/a", MIB);
    create(&f, "rbd/a", MIB);
    let list = e.namespace_list(&PoolName::new("rbd").expect("pool")).expect("list");
    assert_eq!(list.len(), 1);
    assert_eq!((list[0].name.as_str(), list[0].image_count), ("dev", 1));
    e.trash_move(&spec("rbd/dev/a"), Timestamp(START)).expect("trash");
    let err = e.namespace_remove(&ns).expect_err("trash entry remains");
    assert_eq!(err.kind(), ErrorKind::Busy);
    let id = e.trash_list(&ns).expect("list")[0].id.clone();
    e.trash_remove(&ns, &id, TrashForce::Force, &Progress::default()).expect("remove");
    e.namespace_remove(&ns).expect("remove empty namespace");
    assert_eq!(kind(e.namespace_remove(&ns)), ErrorKind::NotFound);
}

#[test]
fn features_enable_and_disable_rules() {
    let f = fixture();
    let e = &f.engine;
    create(&f, "rbd/vm", MIB);
    let s = spec("rbd/vm");
    assert_eq!(kind(e.image_features_enable(&s, Features::LAYERING)), ErrorKind::InvalidArgument);
    assert_eq!(kind(e.image_features_enable(&s, Features::NONE)), ErrorKind::InvalidArgument);
    assert_eq!(kind(e.image_features_enable(&s, Features::EXCLUSIVE_LOCK)), ErrorKind::InvalidArgument);
    assert_eq!(kind(e.image_features_disable(&s, Features::EXCLUSIVE_LOCK)), ErrorKind::InvalidArgument);
    e.image_features_disable(&s, Features::OBJECT_MAP).expect("disable object-map");
    let features = e.image_info(&s).expect("info").features;
    assert!(!features.intersects(Features::OBJECT_MAP.union(Features::FAST_DIFF)), "{features:?}");
    e.image_features_disable(&s, Features::EXCLUSIVE_LOCK).expect("disable lock");
    assert_eq!(kind(e.image_features_enable(&s, Features::OBJECT_MAP)), ErrorKind::InvalidArgument);
    e.image_features_enable(&s, Features::EXCLUSIVE_LOCK).expect("enable lock");
    e.image_features_enable(&s, Features::OBJECT_MAP).expect("enable object-map");
    assert!(e.image_info(&s).expect("info").features.contains(Features::FAST_DIFF));
    e.image_features_disable(&s, Features::DEEP_FLATTEN).expect("deep-flatten can be disabled");
    assert_eq!(kind(e.image_features_enable(&s, Features::DEEP_FLATTEN)), ErrorKind::InvalidArgument);
}

#[test]
fn exclusive_lock_allows_one_writer() {
    let f = fixture();
    let e = &f.engine;
    create(&f, "rbd/vm", MIB);
    let first = e.open(&spec("rbd/vm"), &OpenTarget::Head, "host-a").expect("first writer");
    let err = e.open(&spec("rbd/vm"), &OpenTarget::Head, "host-b").expect_err("second writer");
    assert_eq!(err.kind(), ErrorKind::Busy);
    assert!(err.message().contains("host-a"), "{err}");
    let reader = e.open(&spec("rbd/vm"), &OpenTarget::HeadReadOnly, "host-c").expect("reader beside the writer");
    assert_eq!(kind(reader.write(0, b"x", Durability::Buffered)), ErrorKind::ReadOnly);
    assert_eq!(e.image_watchers(&spec("rbd/vm")).expect("watchers").len(), 2);
    drop(first);
    let _second = e.open(&spec("rbd/vm"), &OpenTarget::Head, "host-b").expect("writer after release");
    // Without the feature, writers are not serialised (as in the reference).
    let no_lock = CreateOptions { features: Some(Features::LAYERING), ..CreateOptions::with_size(MIB) };
    e.image_create(&spec("rbd/shared"), &no_lock).expect("create");
    let _a = e.open(&spec("rbd/shared"), &OpenTarget::Head, "a").expect("a");
    let _b = e.open(&spec("rbd/shared"), &OpenTarget::Head, "b").expect("b");
}

#[test]
fn io_bounds_snapshots_are_read_only_and_holes_are_reported() {
    let f = fixture();
    let e = &f.engine;
    create(&f, "rbd/vm", MIB);
    let io = e.open(&spec("rbd/vm"), &OpenTarget::Head, "t").expect("open");
    assert_eq!(kind(io.write(MIB - 1, b"ab", Durability::Buffered)), ErrorKind::InvalidArgument);
    assert_eq!(kind(io.read(u64::MAX, &mut [0u8; 2])), ErrorKind::InvalidArgument);
    io.write(8192, &[5u8; 8192], Durability::ForceUnitAccess).expect("write");
    let status = io.block_status(0, MIB).expect("status");
    assert_eq!(status.len(), 3);
    assert_eq!((status[1].offset, status[1].length, status[1].state), (8192, 8192, basalt_core::BlockState::Data));
    io.write_zeroes(8192, 4096, ZeroMode::MayUnmap, Durability::Buffered).expect("zero");
    io.discard(12288, 100, Durability::Buffered).expect("partial discard");
    let mut buf = vec![1u8; 8192];
    io.read(8192, &mut buf).expect("read");
    let mut expected = vec![5u8; 8192];
    expected[..4096 + 100].fill(0);
    assert_eq!(buf, expected);
    drop(io);
    e.snap_create(&snap("rbd/vm@s")).expect("snap");
    let snap_io =
        e.open(&spec("rbd/vm"), &OpenTarget::Snapshot(SnapName::new("s").expect("name")), "t").expect("open snap");
    assert!(snap_io.is_read_only());
    assert_eq!(kind(snap_io.write(0, b"x", Durability::Buffered)), ErrorKind::ReadOnly);
    assert_eq!(kind(e.snap_remove(&snap("rbd/vm@s"))), ErrorKind::Busy);
}

#[test]
fn copy_deep_copy_du_and_diff() {
    let f = fixture();
    let e = &f.engine;
    create(&f, "rbd/src", 16 * MIB);
    write(&f, "rbd/src", 0, &[1u8; 4096]);
    e.snap_create(&snap("rbd/src@one")).expect("snap one");
    write(&f, "rbd/src", 8 * MIB, &[2u8; 8192]);
    e.snap_create(&snap("rbd/src@two")).expect("snap two");
    e.snap_protect(&snap("rbd/src@two")).expect("protect");
    write(&f, "rbd/src", 0, &[3u8; 4096]);

    let du = e.du(&spec("rbd/src")).expect("du");
    let used: Vec<u64> = du.iter().map(|d| d.used_bytes).collect();
    assert_eq!(used, vec![4096, 8192, 4096]);
    assert_eq!(du.iter().map(|d| d.provisioned_bytes).max(), Some(16 * MIB));

    let diff =
        e.diff(&spec("rbd/src"), Some(&SnapName::new("one").expect("n")), None, DiffGranularity::Fine).expect("diff");
    let extents: Vec<(u64, u64, bool)> = diff.iter().map(|d| (d.offset, d.length, d.exists)).collect();
    assert_eq!(extents, vec![(0, 4096, true), (8 * MIB, 8192, true)]);
    let whole = e.diff(&spec("rbd/src"), None, None, DiffGranularity::WholeObject).expect("diff");
    assert_eq!(whole.iter().map(|d| (d.offset, d.length)).collect::<Vec<_>>(), vec![(0, 4 * MIB), (8 * MIB, 4 * MIB)]);

    let pool2 = PoolName::new("backup").expect("pool");
    e.pool_create(&pool2).expect("pool");
    e.pool_application_enable(&pool2, "rbd").expect("tag");
    let request = CopyRequest { snap: Some(SnapName::new("one").expect("n")), ..CopyRequest::to(spec("backup/copy")) };
    e.image_copy(&spec("rbd/src"), &request, &Progress::default()).expect("copy");
    assert_eq!(read(&f, "backup/copy", 0, 4096), vec![1u8; 4096]);
    assert_eq!(read(&f, "backup/copy", 8 * MIB, 4), vec![0u8; 4]);
    assert!(e.snap_list(&spec("backup/copy")).expect("snaps").is_empty());
    assert_eq!(
        kind(e.image_copy(&spec("rbd/src"), &CopyRequest::to(spec("backup/copy")), &Progress::default())),
        ErrorKind::AlreadyExists
    );

    e.image_deep_copy(&spec("rbd/src"), &spec("backup/deep"), &Progress::default()).expect("deep copy");
    let snaps = e.snap_list(&spec("backup/deep")).expect("snaps");
    assert_eq!(
        snaps.iter().map(|s| (s.name.to_string(), s.protected)).collect::<Vec<_>>(),
        vec![("one".into(), false), ("two".into(), true)]
    );
    assert_eq!(read(&f, "backup/deep", 0, 4096), vec![3u8; 4096]);
    let at_one =
        e.open(&spec("backup/deep"), &OpenTarget::Snapshot(SnapName::new("one").expect("n")), "t").expect("open");
    let mut buf = vec![0u8; 8192];
    at_one.read(8 * MIB, &mut buf).expect("read");
    assert_eq!(buf, vec![0u8; 8192]);
    at_one.read(0, &mut buf[..4096]).expect("read");
    assert_eq!(&buf[..4096], &[1u8; 4096][..]);
}

#[test]
fn configuration_levels_report_their_source() {
    let f = fixture();
    let e = &f.engine;
    create(&f, "rbd/vm", MIB);
    let pool = PoolName::new("rbd").expect("pool");
    e.config_set(&ConfigLevel::Global, "rbd_qos_iops_limit", "1000").expect("global");
    e.config_set(&ConfigLevel::Pool(pool.clone()), "rbd_qos_bps_limit", "5000000").expect("pool");
    e.config_set(&ConfigLevel::Image(spec("rbd/vm")), "rbd_qos_iops_limit", "500").expect("image");
    let entries = e.config_list(&ConfigLevel::Image(spec("rbd/vm"))).expect("list");
    let get = |n: &str| entries.iter().find(|c| c.name == n).cloned().expect("listed");
    assert_eq!(
        (get("rbd_qos_iops_limit").value.as_str(), get("rbd_qos_iops_limit").source),
        ("500", ConfigSource::Image)
    );
    assert_eq!(get("rbd_qos_bps_limit").source, ConfigSource::Pool);
    assert_eq!(kind(e.config_set(&ConfigLevel::Global, "rbd_qos_iops_limit", "-5")), ErrorKind::InvalidArgument);
    assert_eq!(kind(e.config_set(&ConfigLevel::Global, "no_such_option", "1")), ErrorKind::InvalidArgument);
    e.config_remove(&ConfigLevel::Image(spec("rbd/vm")), "rbd_qos_iops_limit").expect("reset");
    assert_eq!(kind(e.config_remove(&ConfigLevel::Image(spec("rbd/vm")), "rbd_qos_iops_limit")), ErrorKind::NotFound);
    let entries = e.config_list(&ConfigLevel::Image(spec("rbd/vm"))).expect("list");
    let iops = entries.iter().find(|c| c.name == "rbd_qos_iops_limit").expect("listed");
    assert_eq!((iops.value.as_str(), iops.source), ("1000", ConfigSource::Global));
}

#[test]
fn data_survives_reopen_and_the_store_checks_clean() {
    let f = fixture();
    create(&f, "rbd/vm", 8 * MIB);
    write(&f, "rbd/vm", 12345, b"persistent");
    f.engine.snap_create(&snap("rbd/vm@s")).expect("snap");
    write(&f, "rbd/vm", 12345, b"PERSISTENT");
    let Fixture { _dir, root, clock, engine } = f;
    assert_eq!(kind(Engine::open(&root, clock.clone())), ErrorKind::Busy);
    drop(engine);
    let report = basalt_engine::fsck::fsck(&root).expect("fsck");
    assert!(report.is_clean(), "{:?}", report.errors);
    let engine = Engine::open(&root, clock).expect("reopen");
    let io = engine.open(&spec("rbd/vm"), &OpenTarget::HeadReadOnly, "t").expect("open");
    let mut buf = [0u8; 10];
    io.read(12345, &mut buf).expect("read");
    assert_eq!(&buf, b"PERSISTENT");
    let snap_io =
        engine.open(&spec("rbd/vm"), &OpenTarget::Snapshot(SnapName::new("s").expect("n")), "t").expect("open");
    snap_io.read(12345, &mut buf).expect("read");
    assert_eq!(&buf, b"persistent");
}

#[test]
fn removed_snapshots_fold_their_layers_away() {
    let f = fixture();
    let e = &f.engine;
    create(&f, "rbd/vm", 8 * MIB);
    write(&f, "rbd/vm", 0, &[1u8; 3 * 4096]);
    e.snap_create(&snap("rbd/vm@s1")).expect("s1");
    write(&f, "rbd/vm", 4096, &[2u8; 100]);
    e.snap_create(&snap("rbd/vm@s2")).expect("s2");
    write(&f, "rbd/vm", 2 * 4096, &[3u8; 4096]);
    e.image_resize(&spec("rbd/vm"), 4096 + 50, ResizePolicy::AllowShrink).expect("shrink");
    e.image_resize(&spec("rbd/vm"), 8 * MIB, ResizePolicy::GrowOnly).expect("grow");
    let expected = read(&f, "rbd/vm", 0, 4 * 4096);
    let s2_expected = {
        let io = e.open(&spec("rbd/vm"), &OpenTarget::Snapshot(SnapName::new("s2").expect("n")), "t").expect("open");
        let mut buf = vec![0u8; 4 * 4096];
        io.read(0, &mut buf).expect("read");
        buf
    };
    // Removing the older snapshot merges its layer into s2's; removing s2 then merges into the head.
    e.snap_remove(&snap("rbd/vm@s1")).expect("remove s1");
    let io = e.open(&spec("rbd/vm"), &OpenTarget::Snapshot(SnapName::new("s2").expect("n")), "t").expect("open");
    let mut buf = vec![0u8; 4 * 4096];
    io.read(0, &mut buf).expect("read");
    assert!(buf == s2_expected, "s2 changed when s1 was removed");
    drop(io);
    e.snap_remove(&snap("rbd/vm@s2")).expect("remove s2");
    assert!(read(&f, "rbd/vm", 0, 4 * 4096) == expected, "the head changed when s2 was removed");
    let mut want = vec![1u8; 4096];
    want.extend_from_slice(&[2u8; 50]);
    want.resize(4 * 4096, 0);
    assert!(expected == want, "the head does not show the writes cut by the shrink");
    let Fixture { _dir, root, clock: _, engine } = f;
    drop(engine);
    let report = basalt_engine::fsck::fsck(&root).expect("fsck");
    assert!(report.is_clean(), "{:?}", report.errors);
    assert_eq!(report.layers, 1, "every hidden layer was folded into the head");
    let files = std::fs::read_dir(root.join(basalt_engine::LAYERS_DIR)).expect("layers dir").count();
    assert_eq!(files, 1);
}
