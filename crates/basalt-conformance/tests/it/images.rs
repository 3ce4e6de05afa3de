//! Images: creation rules, pools, removal, resize, features, the exclusive lock, configuration and namespaces.

use basalt_conformance::for_each_backend;
use basalt_core::config::{ConfigLevel, ConfigSource};
use basalt_core::{
    CreateOptions, Durability, ErrorKind, Features, ImageName, OpenTarget, PoolNs, Progress, ResizePolicy,
};

use crate::{MIB, create, kind, read, write};

#[test]
fn create_validates_features_striping_size_and_location() {
    for_each_backend("c-create", |t| {
        let e = &*t.backend;
        let opts = |features: Option<Features>| CreateOptions { features, ..CreateOptions::with_size(MIB) };
        let map_without_lock = Features::OBJECT_MAP.union(Features::LAYERING);
        assert_eq!(kind(e.image_create(&t.spec("a"), &opts(Some(map_without_lock)))), ErrorKind::InvalidArgument);
        let striped = CreateOptions { striping: Some((3000, 2)), ..CreateOptions::with_size(MIB) };
        assert_eq!(kind(e.image_create(&t.spec("a"), &striped)), ErrorKind::InvalidArgument);
        let missing_pool = basalt_core::ImageSpec::parse("no-such-pool-c/a").expect("spec");
        assert_eq!(kind(e.image_create(&missing_pool, &CreateOptions::with_size(MIB))), ErrorKind::NotFound);
        assert_eq!(kind(e.image_create(&t.spec("nons/a"), &CreateOptions::with_size(MIB))), ErrorKind::NotFound);
        // Nothing of the refused creations is left behind.
        assert!(e.image_list(&t.location("")).expect("list").is_empty());

        // object-map brings fast-diff along; striping is implied by the layout.
        let with_map = Features::LAYERING.union(Features::EXCLUSIVE_LOCK).union(Features::OBJECT_MAP);
        e.image_create(&t.spec("a"), &opts(Some(with_map))).expect("create");
        let info = e.image_info(&t.spec("a")).expect("info");
        assert!(info.features.contains(Features::FAST_DIFF), "{:?}", info.features);
        assert_eq!((info.size_bytes, info.order.get(), info.num_objs), (MIB, 22, 1));
        let striped = CreateOptions { striping: Some((64 << 10, 4)), ..CreateOptions::with_size(MIB) };
        e.image_create(&t.spec("s"), &striped).expect("striped create");
        let info = e.image_info(&t.spec("s")).expect("info");
        assert!(info.features.contains(Features::STRIPING));
        assert_eq!((info.striping.unit_bytes, info.striping.count), (64 << 10, 4));
        assert_eq!(kind(e.image_create(&t.spec("a"), &CreateOptions::with_size(MIB))), ErrorKind::AlreadyExists);
        let mut names: Vec<String> =
            e.image_list(&t.location("")).expect("list").into_iter().map(|i| i.name.to_string()).collect();
        names.sort();
        assert_eq!(names, ["a", "s"]);

        // fast-diff without object-map is dropped, as librbd does.
        let fast_diff_alone = Features::FAST_DIFF.union(Features::EXCLUSIVE_LOCK).union(Features::LAYERING);
        e.image_create(&t.spec("fd"), &opts(Some(fast_diff_alone))).expect("create");
        let features = e.image_info(&t.spec("fd")).expect("info").features;
        assert_eq!(features, Features::EXCLUSIVE_LOCK.union(Features::LAYERING));
    });
}

#[test]
fn stripe_units_below_4k_and_counts_outside_1_to_4096_are_refused() {
    for_each_backend("c-stripe-limits", |t| {
        let e = &*t.backend;
        let striped = |unit: u64, count: u64| CreateOptions {
            striping: Some((unit, count)),
            ..CreateOptions::with_size(64 * MIB)
        };
        for (unit, count, why) in [
            (1, 4096, "stripe unit 1 is not allowed"),
            (512, 2, "stripe unit 512 is not allowed"),
            (2048, 1, "stripe unit 2048 is not allowed"),
            (12288, 2, "stripe unit 12288 is not allowed"),
            (0, 4, "must both be positive"),
            (4096, 0, "must both be positive"),
            (4096, 4097, "stripe count 4097 is too large"),
        ] {
            let err = e.image_create(&t.spec("tiny"), &striped(unit, count)).expect_err("refused");
            assert_eq!(err.kind(), ErrorKind::InvalidArgument, "unit {unit} count {count}: {err}");
            assert!(err.message().contains(why), "unit {unit} count {count}: {err}");
        }
        assert!(e.image_list(&t.location("")).expect("list").is_empty(), "nothing of a refused create is left");
        // The smallest unit with the largest count is accepted.
        e.image_create(&t.spec("fine"), &striped(4096, 4096)).expect("4 KiB units over 4096 objects");
        let info = e.image_info(&t.spec("fine")).expect("info");
        assert_eq!((info.striping.unit_bytes, info.striping.count), (4096, 4096));
    });
}

#[test]
fn images_live_only_in_rbd_pools_and_pools_with_images_stay() {
    for_each_backend("c-pools", |t| {
        let e = &*t.backend;
        let plain = t.extra_pool("plain", false);
        let spec = basalt_core::ImageSpec::parse(&format!("{plain}/a")).expect("spec");
        let err = e.image_create(&spec, &CreateOptions::with_size(MIB)).expect_err("untagged pool");
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert!(err.message().contains("rbd"), "{err}");
        e.pool_application_enable(&plain, "rbd").expect("tag");
        e.image_create(&spec, &CreateOptions::with_size(MIB)).expect("create after tagging");
        let listed = e.pool_list().expect("pools");
        let entry = listed.iter().find(|p| p.name == plain).expect("pool listed");
        assert!(entry.applications.iter().any(|a| a == "rbd"), "{entry:?}");
        assert_eq!(entry.image_count, 1);
        assert_eq!(kind(e.pool_remove(&plain)), ErrorKind::Busy);
    });
}

#[test]
fn removal_is_refused_with_snapshots_or_watchers() {
    for_each_backend("c-remove", |t| {
        let e = &*t.backend;
        create(t, "vm", 4 * MIB);
        e.snap_create(&t.snap("vm@s1")).expect("snapshot");
        let err = e.image_remove(&t.spec("vm"), &Progress::default()).expect_err("has snapshots");
        assert_eq!(err.kind(), ErrorKind::NotEmpty);
        assert!(err.message().contains("image has snapshots"), "{err}");
        e.snap_protect(&t.snap("vm@s1")).expect("protect");
        assert_eq!(kind(e.snap_remove(&t.snap("vm@s1"))), ErrorKind::Busy);
        assert_eq!(kind(e.snap_purge(&t.spec("vm"), &Progress::default())), ErrorKind::Busy);
        e.snap_unprotect(&t.snap("vm@s1")).expect("unprotect");
        e.snap_purge(&t.spec("vm"), &Progress::default()).expect("purge");
        let io = e.open(&t.spec("vm"), &OpenTarget::Head, "10.0.0.9:5000").expect("attach");
        let watchers = e.image_watchers(&t.spec("vm")).expect("watchers");
        assert!(watchers.iter().any(|w| w.client == "10.0.0.9:5000" && w.writable), "{watchers:?}");
        let err = e.image_remove(&t.spec("vm"), &Progress::default()).expect_err("attached");
        assert_eq!(err.kind(), ErrorKind::Busy);
        assert!(err.message().contains("10.0.0.9:5000"), "{err}");
        assert_eq!(kind(e.trash_move(&t.spec("vm"), basalt_conformance::now())), ErrorKind::Busy);
        drop(io);
        assert!(e.image_watchers(&t.spec("vm")).expect("watchers").is_empty());
        e.image_remove(&t.spec("vm"), &Progress::default()).expect("remove");
        assert_eq!(kind(e.image_info(&t.spec("vm"))), ErrorKind::NotFound);
        assert_eq!(kind(e.image_remove(&t.spec("vm"), &Progress::default())), ErrorKind::NotFound);
    });
}

#[test]
fn rename_and_resize_follow_the_reference() {
    for_each_backend("c-resize", |t| {
        let e = &*t.backend;
        create(t, "vm", 2 * MIB);
        create(t, "other", MIB);
        write(t, "vm", MIB, &[1u8; 4096]);
        let err = e.image_resize(&t.spec("vm"), MIB, ResizePolicy::GrowOnly).expect_err("shrink needs permission");
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert!(err.message().contains("allow-shrink"), "{err}");
        assert_eq!(e.image_info(&t.spec("vm")).expect("info").size_bytes, 2 * MIB);
        e.image_resize(&t.spec("vm"), MIB + 10, ResizePolicy::AllowShrink).expect("shrink");
        e.image_resize(&t.spec("vm"), 4 * MIB, ResizePolicy::GrowOnly).expect("grow");
        let mut expected = vec![0u8; 4096];
        expected[..10].fill(1);
        assert_eq!(read(t, "vm", MIB, 4096), expected, "bytes cut by a shrink read as zeros after growing back");

        let name = |n: &str| ImageName::new(n).expect("name");
        assert_eq!(kind(e.image_rename(&t.spec("vm"), &name("other"))), ErrorKind::AlreadyExists);
        assert_eq!(kind(e.image_rename(&t.spec("nope"), &name("x"))), ErrorKind::NotFound);
        e.image_rename(&t.spec("vm"), &name("renamed")).expect("rename");
        assert_eq!(read(t, "renamed", MIB, 10), vec![1u8; 10]);
        assert_eq!(kind(e.image_info(&t.spec("vm"))), ErrorKind::NotFound);
    });
}

#[test]
fn features_enable_and_disable_rules() {
    for_each_backend("c-features", |t| {
        let e = &*t.backend;
        create(t, "vm", MIB);
        let s = t.spec("vm");
        assert_eq!(kind(e.image_features_enable(&s, Features::LAYERING)), ErrorKind::InvalidArgument);
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
    });
}

#[test]
fn the_exclusive_lock_allows_one_writer() {
    for_each_backend("c-lock", |t| {
        let e = &*t.backend;
        create(t, "vm", MIB);
        let first = e.open(&t.spec("vm"), &OpenTarget::Head, "host-a").expect("first writer");
        let err = e.open(&t.spec("vm"), &OpenTarget::Head, "host-b").expect_err("second writer");
        assert_eq!(err.kind(), ErrorKind::Busy);
        assert!(err.message().contains("host-a"), "{err}");
        let reader = e.open(&t.spec("vm"), &OpenTarget::HeadReadOnly, "host-c").expect("reader beside the writer");
        assert_eq!(kind(reader.write(0, b"x", Durability::Buffered)), ErrorKind::ReadOnly);
        assert_eq!(e.image_watchers(&t.spec("vm")).expect("watchers").len(), 2);
        drop(first);
        let second = e.open(&t.spec("vm"), &OpenTarget::Head, "host-b").expect("writer after release");
        second.write(0, b"mine", Durability::ForceUnitAccess).expect("write");
        drop(second);
        // Without the feature, writers are not serialised (as in the reference).
        let no_lock = CreateOptions { features: Some(Features::LAYERING), ..CreateOptions::with_size(MIB) };
        e.image_create(&t.spec("shared"), &no_lock).expect("create");
        let a = e.open(&t.spec("shared"), &OpenTarget::Head, "a").expect("a");
        let b = e.open(&t.spec("shared"), &OpenTarget::Head, "b").expect("b");
        a.write(0, b"aaaa", Durability::ForceUnitAccess).expect("a writes");
        b.write(4096, b"bbbb", Durability::ForceUnitAccess).expect("b writes");
        drop((a, b));
        assert_eq!(read(t, "shared", 0, 4), b"aaaa");
        assert_eq!(read(t, "shared", 4096, 4), b"bbbb");
    });
}

#[test]
fn configuration_levels_report_their_source() {
    for_each_backend("c-config", |t| {
        let e = &*t.backend;
        create(t, "vm", MIB);
        let image = ConfigLevel::Image(t.spec("vm"));
        e.config_set(&ConfigLevel::Pool(t.pool.clone()), "rbd_qos_bps_limit", "5000000").expect("pool");
        e.config_set(&image, "rbd_qos_iops_limit", "500").expect("image");
        let entries = e.config_list(&image).expect("list");
        let get = |n: &str| entries.iter().find(|c| c.name == n).cloned().expect("listed");
        assert_eq!(
            (get("rbd_qos_iops_limit").value.as_str(), get("rbd_qos_iops_limit").source),
            ("500", ConfigSource::Image)
        );
        assert_eq!(
            (get("rbd_qos_bps_limit").value.as_str(), get("rbd_qos_bps_limit").source),
            ("5000000", ConfigSource::Pool)
        );
        assert_eq!(kind(e.config_set(&image, "rbd_qos_iops_limit", "-5")), ErrorKind::InvalidArgument);
        assert_eq!(kind(e.config_set(&image, "no_such_option", "1")), ErrorKind::InvalidArgument);
        e.config_remove(&image, "rbd_qos_iops_limit").expect("reset");
        assert_eq!(kind(e.config_remove(&image, "rbd_qos_iops_limit")), ErrorKind::NotFound);
        let entries = e.config_list(&image).expect("list");
        let iops = entries.iter().find(|c| c.name == "rbd_qos_iops_limit").expect("listed");
        assert_ne!(iops.source, ConfigSource::Image);
        e.config_remove(&ConfigLevel::Pool(t.pool.clone()), "rbd_qos_bps_limit").expect("reset pool");

        // Metadata is separate from configuration overrides.
        e.image_metadata_set(&t.spec("vm"), "owner", "team-a").expect("set metadata");
        let metadata = e.image_metadata_list(&t.spec("vm")).expect("metadata");
        assert!(metadata.contains(&("owner".to_owned(), "team-a".to_owned())), "{metadata:?}");
        e.image_metadata_remove(&t.spec("vm"), "owner").expect("remove metadata");
        assert_eq!(kind(e.image_metadata_remove(&t.spec("vm"), "owner")), ErrorKind::NotFound);
    });
}

#[test]
fn namespaces_isolate_and_refuse_removal_while_used() {
    for_each_backend("c-ns", |t| {
        let e = &*t.backend;
        let ns = t.location("dev");
        let missing = PoolNs::parse("no-such-pool-c/dev").expect("location");
        assert_eq!(kind(e.namespace_create(&missing)), ErrorKind::NotFound);
        e.namespace_create(&ns).expect("create");
        assert_eq!(kind(e.namespace_create(&ns)), ErrorKind::AlreadyExists);
        create(t, "dev/a", MIB);
        create(t, "a", MIB);
        let list = e.namespace_list(&t.pool).expect("list");
        assert_eq!(list.len(), 1);
        assert_eq!((list[0].name.as_str(), list[0].image_count), ("dev", 1));
        let in_ns: Vec<String> = e.image_list(&ns).expect("list").into_iter().map(|i| i.name.to_string()).collect();
        assert_eq!(in_ns, ["a"]);
        assert_eq!(kind(e.namespace_remove(&ns)), ErrorKind::Busy);
        e.trash_move(&t.spec("dev/a"), basalt_conformance::now()).expect("trash");
        let err = e.namespace_remove(&ns).expect_err("trash entry remains");
        assert_eq!(err.kind(), ErrorKind::Busy);
        let id = e.trash_list(&ns).expect("list")[0].id.clone();
        e.trash_remove(&ns, &id, basalt_core::TrashForce::Force, &Progress::default()).expect("remove");
        e.namespace_remove(&ns).expect("remove empty namespace");
        assert_eq!(kind(e.namespace_remove(&ns)), ErrorKind::NotFound);
    });
}

#[test]
fn pool_quotas_are_set_listed_and_removed_as_ceph_osd_pool_set_quota_does() {
    for_each_backend("c-quota", |t| {
        let e = &*t.backend;
        let pool = t.extra_pool("quota", true);
        let listed = |e: &dyn basalt_core::Backend| {
            let pools = e.pool_list().expect("pools");
            let p = pools.into_iter().find(|p| p.name == pool).expect("pool listed");
            (p.quota_max_bytes, p.quota_max_objects)
        };
        assert_eq!(listed(e), (0, 0));
        e.pool_set_quota(&pool, Some(MIB), None).expect("max_bytes");
        assert_eq!(listed(e), (MIB, 0));
        e.pool_set_quota(&pool, None, Some(100)).expect("max_objects");
        assert_eq!(listed(e), (MIB, 100), "setting one quota keeps the other");
        e.pool_set_quota(&pool, Some(0), Some(0)).expect("remove");
        assert_eq!(listed(e), (0, 0));
        let missing = basalt_core::PoolName::new("no-such-pool-q").expect("name");
        assert_eq!(kind(e.pool_set_quota(&missing, Some(MIB), None)), ErrorKind::NotFound);

        if t.kind == basalt_conformance::Kind::Engine {
            // Once usage reaches the quota, writes answer EDQUOT; removing the quota lets them in again.
            let spec = basalt_core::ImageSpec::parse(&format!("{pool}/a")).expect("spec");
            e.image_create(&spec, &CreateOptions::with_size(8 * MIB)).expect("create");
            e.pool_set_quota(&pool, Some(MIB), None).expect("quota");
            let io = e.open(&spec, &OpenTarget::Head, "t").expect("open");
            io.write(0, &vec![1u8; 2 * MIB as usize], Durability::Buffered).expect("under the quota");
            // Usage counts what is persisted, as Ceph's counts what the OSDs reported.
            io.flush().expect("flush");
            assert!(e.pool_list().expect("pools").iter().any(|p| p.name == pool && p.quota_reached()));
            let err = io.write(4 * MIB, &[1u8; 4096], Durability::Buffered).expect_err("over the quota");
            assert_eq!(err.kind(), ErrorKind::QuotaExceeded, "{err}");
            io.discard(0, MIB, Durability::Buffered).expect("a discard frees space in a full pool");
            e.pool_set_quota(&pool, Some(0), None).expect("remove");
            io.write(4 * MIB, &[1u8; 4096], Durability::Buffered).expect("no quota");
        }
    });
}
