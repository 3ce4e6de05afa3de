//! What only the embedded engine can show: exact space accounting, the trash on a manual clock, reopening and fsck,
//! layer folding, and the global configuration level. The reference's refusals and the seed's workflows that every
//! backend shares are in `crates/basalt-conformance`, which runs them on this engine too.

use std::sync::Arc;

use basalt_core::config::{ConfigLevel, ConfigSource};
use basalt_core::{
    Backend, CloneRequest, CopyRequest, CreateOptions, DiffGranularity, Durability, ErrorKind, Features, ImageName,
    ImageSpec, ManualClock, ObjectOrder, OpenTarget, PoolName, PoolNs, Progress, ResizePolicy, SnapName, SnapSpec,
    Timestamp, TrashForce,
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
    assert_eq!(files, 2, "the head's layer file and its checksum file");
}

/// Errors name an image by its spec, never by the internal image or layer ids users never see.
#[test]
fn errors_name_images_by_spec_not_by_internal_ids() {
    let Fixture { _dir, root, clock, engine } = fixture();
    engine.namespace_create(&PoolNs::parse("rbd/ns1").expect("location")).expect("namespace");
    engine.image_create(&spec("rbd/ns1/vm-disk"), &CreateOptions::with_size(MIB)).expect("create");
    let io = engine.open(&spec("rbd/ns1/vm-disk"), &OpenTarget::Head, "test").expect("open");
    io.write(0, &[7u8; 4096], Durability::ForceUnitAccess).expect("write");
    drop(io);
    let id = engine.image_info(&spec("rbd/ns1/vm-disk")).expect("info").id;
    drop(engine);
    // A damaged store: the image's layer file is gone.
    let layers = root.join(basalt_engine::LAYERS_DIR);
    let mut layer_names = Vec::new();
    for entry in std::fs::read_dir(&layers).expect("layers dir") {
        let entry = entry.expect("entry");
        layer_names.push(entry.file_name().to_string_lossy().trim_end_matches(".layer").to_owned());
        std::fs::remove_file(entry.path()).expect("remove a layer file");
    }
    assert!(!layer_names.is_empty());
    let engine = Engine::open(&root, clock).expect("reopen");
    let err = engine.open(&spec("rbd/ns1/vm-disk"), &OpenTarget::Head, "test").expect_err("the layer file is gone");
    assert_eq!(err.kind(), ErrorKind::Io, "{err}");
    assert!(err.message().contains("'rbd/ns1/vm-disk'"), "the spec is missing: {err}");
    assert!(!err.message().contains(&id), "the image id {id} leaks: {err}");
    for layer in &layer_names {
        assert!(!err.message().contains(layer.as_str()), "layer id {layer} leaks: {err}");
    }
}

/// Reads all of a view of an image: the head, or a snapshot.
fn read_view(f: &Fixture, s: &str, snap_name: Option<&str>) -> Vec<u8> {
    let target = match snap_name {
        Some(name) => OpenTarget::Snapshot(SnapName::new(name).expect("snap name")),
        None => OpenTarget::HeadReadOnly,
    };
    let io = f.engine.open(&spec(s), &target, "test").expect("open");
    let mut buf = vec![0u8; io.size_bytes() as usize];
    io.read(0, &mut buf).expect("read");
    buf
}

/// A deep copy of a clone compares its views without the parent, yet each view of the copy must show the parent
/// where the source's view does, and only there: past a shrink of the head (a snapshot from before it still shows
/// the parent there), behind a zero marker (a discard), and again after a rollback to before that discard.
#[test]
fn a_deep_copy_of_a_clone_shows_the_parent_where_each_source_view_does() {
    let f = fixture();
    let e = &f.engine;
    create(&f, "rbd/parent", 4 * MIB);
    let pattern: Vec<u8> = (0..4 * MIB as usize).map(|i| (i % 251) as u8 + 1).collect();
    write(&f, "rbd/parent", 0, &pattern);
    e.snap_create(&snap("rbd/parent@base")).expect("snap");
    e.snap_protect(&snap("rbd/parent@base")).expect("protect");
    e.clone_image(&snap("rbd/parent@base"), &spec("rbd/child"), &CloneRequest::inherit()).expect("clone");
    write(&f, "rbd/child", 8192, &[7u8; 4096]);
    e.snap_create(&snap("rbd/child@s0")).expect("snap of the clone");
    {
        let io = e.open(&spec("rbd/child"), &OpenTarget::Head, "test").expect("open");
        io.discard(64 << 10, 64 << 10, Durability::Buffered).expect("discard");
        io.flush().expect("flush");
    }
    e.snap_create(&snap("rbd/child@s1")).expect("snap after the discard");
    e.snap_rollback(&snap("rbd/child@s0"), &Progress::default()).expect("rollback to before the discard");
    e.snap_create(&snap("rbd/child@s2")).expect("snap after the rollback");
    e.image_resize(&spec("rbd/child"), MIB, ResizePolicy::AllowShrink).expect("shrink");
    e.image_resize(&spec("rbd/child"), 2 * MIB, ResizePolicy::GrowOnly).expect("grow");

    e.image_deep_copy(&spec("rbd/child"), &spec("rbd/copy"), &Progress::default()).expect("deep copy");
    for name in ["s0", "s1", "s2"] {
        let source = read_view(&f, "rbd/child", Some(name));
        assert_eq!(source.len(), 4 * MIB as usize);
        let zeros = source[64 << 10..128 << 10].iter().all(|&b| b == 0);
        assert_eq!(zeros, name == "s1", "@{name} shows the parent unless behind the discard");
        assert!(read_view(&f, "rbd/copy", Some(name)) == source, "the copy's @{name} differs from the source's");
    }
    let source_head = read_view(&f, "rbd/child", None);
    assert!(source_head[MIB as usize..].iter().all(|&b| b == 0), "the grown head shows nothing past the shrink");
    assert!(read_view(&f, "rbd/copy", None) == source_head, "the copy's head differs from the source's");
}

/// A clone of a clone keeps reading what it read while the clone in the middle is flattened and the snapshot the
/// middle one was cloned from is then removed (its layer folded with the parent's head): the grandchild, in use all
/// along, must not read through to the parent's layers as they are now.
#[test]
fn a_grandchild_in_use_reads_the_same_after_its_parent_is_flattened_and_the_grandparent_snapshot_removed() {
    let f = fixture();
    let e = &f.engine;
    create(&f, "rbd/top", 4 * MIB);
    // The snapshot holds most of the image but not its second MiB; the head then writes only there.
    write(&f, "rbd/top", 0, &vec![0x11; MIB as usize]);
    write(&f, "rbd/top", 2 * MIB, &vec![0x11; 2 * MIB as usize]);
    e.snap_create(&snap("rbd/top@ps")).expect("snap");
    e.snap_protect(&snap("rbd/top@ps")).expect("protect");
    e.clone_image(&snap("rbd/top@ps"), &spec("rbd/mid"), &CloneRequest::inherit()).expect("clone");
    e.snap_create(&snap("rbd/mid@cs")).expect("snap of the clone");
    e.snap_protect(&snap("rbd/mid@cs")).expect("protect");
    e.clone_image(&snap("rbd/mid@cs"), &spec("rbd/leaf"), &CloneRequest::inherit()).expect("clone of the clone");
    let leaf = e.open(&spec("rbd/leaf"), &OpenTarget::Head, "vm").expect("open the leaf");
    let mut before = vec![0u8; 4 * MIB as usize];
    leaf.read(0, &mut before).expect("read");
    assert!(before[MIB as usize..2 * MIB as usize].iter().all(|&b| b == 0));
    let mid_snap = e
        .open(&spec("rbd/mid"), &OpenTarget::Snapshot(SnapName::new("cs").expect("name")), "backup")
        .expect("open the middle's snapshot");

    write(&f, "rbd/top", MIB, &vec![0x22; MIB as usize]);
    e.flatten(&spec("rbd/mid"), &Progress::default()).expect("flatten the middle");
    e.snap_unprotect(&snap("rbd/top@ps")).expect("unprotect: no clone left");
    e.snap_remove(&snap("rbd/top@ps")).expect("remove the grandparent's snapshot");

    let mut after = vec![0u8; 4 * MIB as usize];
    leaf.read(0, &mut after).expect("read");
    let changed = before.iter().zip(&after).position(|(a, b)| a != b);
    assert_eq!(changed, None, "the leaf's data changed under it");
    mid_snap.read(0, &mut after).expect("read");
    let changed = before.iter().zip(&after).position(|(a, b)| a != b);
    assert_eq!(changed, None, "the middle's open snapshot changed under it");
    // A partial write copies up the block it lands in: from what the leaf shows, not from the parent's head.
    leaf.write(MIB + 100, &[0x33; 10], Durability::Buffered).expect("write");
    before[MIB as usize + 100..MIB as usize + 110].fill(0x33);
    drop(leaf);
    let mut fresh = vec![0u8; 4 * MIB as usize];
    e.open(&spec("rbd/leaf"), &OpenTarget::HeadReadOnly, "t").expect("open").read(0, &mut fresh).expect("read");
    assert!(fresh == before, "the leaf reopened reads differently");
}
