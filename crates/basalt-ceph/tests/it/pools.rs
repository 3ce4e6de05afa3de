//! The connection, pools and application tags, pool metadata and configuration.

use basalt_ceph::{ConfigSource, Image};
use basalt_core::ErrorKind;

use crate::support::{self, env, kind, unique};

#[test]
fn connects_and_sees_the_test_pool() {
    let Some(env) = env("connects_and_sees_the_test_pool") else { return };
    let (major, minor, _) = basalt_ceph::librbd_version();
    assert_eq!(major, 1);
    assert!(minor >= 16, "librbd 1.{minor}");
    assert!(env.cluster.instance_id() > 0);
    assert_eq!(env.cluster.fsid().expect("fsid").len(), 36);
    assert!(env.cluster.stat().expect("cluster stat").kb > 0);
    assert!(env.cluster.pool_list().expect("pool list").contains(&env.pool));

    let io = env.io();
    assert_eq!(io.pool_name().expect("pool name"), env.pool);
    assert_eq!(io.pool_id(), env.cluster.pool_lookup(&env.pool).expect("lookup"));
    assert_eq!(env.cluster.pool_name(io.pool_id()).expect("reverse lookup"), env.pool);
    assert_eq!(io.namespace().expect("namespace"), "");
    assert!(io.application_list().expect("applications").contains(&"rbd".to_owned()));
    io.pool_stat().expect("pool stat");
    io.rbd_pool_stats().expect("rbd pool stats");

    assert_eq!(kind(env.cluster.ioctx("no-such-pool-here")), ErrorKind::NotFound);
    assert_eq!(kind(env.cluster.pool_lookup("no-such-pool-here")), ErrorKind::NotFound);
    assert_eq!(kind(env.cluster.mon_command(r#"{"prefix": "no such command"}"#)), ErrorKind::InvalidArgument);
}

#[test]
fn pools_are_created_tagged_and_deleted() {
    let Some(env) = env("pools_are_created_tagged_and_deleted") else { return };
    let pool = unique("pool");
    env.cluster.pool_create(&pool).expect("pool create");
    assert_eq!(kind(env.cluster.pool_create(&pool)), ErrorKind::AlreadyExists);
    assert!(env.cluster.pool_list().expect("pool list").contains(&pool));

    let io = env.cluster.ioctx(&pool).expect("ioctx");
    assert_eq!(io.application_list().expect("applications"), Vec::<String>::new());
    io.application_enable("rbd", false).expect("enable rbd");
    io.rbd_pool_init(false).expect("rbd pool init");
    assert_eq!(io.application_list().expect("applications"), ["rbd"]);
    env.cluster.pool_application_disable(&pool, "rbd").expect("disable rbd");
    // The monitor's change reaches this client with the next osdmap.
    env.cluster.wait_for_latest_osdmap().expect("osdmap");
    assert_eq!(io.application_list().expect("applications"), Vec::<String>::new());
    drop(io);

    env.cluster.pool_delete(&pool).expect("pool delete");
    env.cluster.wait_for_latest_osdmap().expect("osdmap");
    assert!(!env.cluster.pool_list().expect("pool list").contains(&pool));
    assert_eq!(kind(env.cluster.pool_delete(&pool)), ErrorKind::NotFound);
}

#[test]
fn pool_and_image_configuration_overrides() {
    let Some(env) = env("pool_and_image_configuration_overrides") else { return };
    // A pool of its own: pool-level overrides would leak into the other tests' images.
    let pool = unique("cfgpool");
    env.cluster.pool_create(&pool).expect("pool create");
    let io = env.cluster.ioctx(&pool).expect("ioctx");
    io.application_enable("rbd", false).expect("enable rbd");
    io.rbd_pool_init(false).expect("rbd pool init");

    let source_of = |options: &[basalt_ceph::ConfigOption], name: &str| {
        let option = options.iter().find(|option| option.name == name).expect("option listed");
        (option.value.clone(), option.source)
    };
    let pool_options = io.config_pool_list().expect("pool config");
    assert_eq!(source_of(&pool_options, "rbd_qos_iops_limit"), ("0".to_owned(), ConfigSource::Config));

    io.pool_metadata_set("conf_rbd_qos_iops_limit", "100").expect("pool override");
    io.pool_metadata_set("owner", "tests").expect("plain pool metadata");
    assert_eq!(io.pool_metadata_get("owner").expect("get"), "tests");
    assert_eq!(
        io.pool_metadata_list().expect("list"),
        [("conf_rbd_qos_iops_limit".to_owned(), "100".to_owned()), ("owner".to_owned(), "tests".to_owned())]
    );
    let pool_options = io.config_pool_list().expect("pool config");
    assert_eq!(source_of(&pool_options, "rbd_qos_iops_limit"), ("100".to_owned(), ConfigSource::Pool));

    let name = unique("cfg");
    support::create(&io, &name, 1 << 20);
    let image = Image::open(&io, &name).expect("open");
    assert_eq!(source_of(&image.config_list().expect("image config"), "rbd_qos_iops_limit").1, ConfigSource::Pool);
    image.metadata_set("conf_rbd_qos_iops_limit", "200").expect("image override");
    assert_eq!(
        source_of(&image.config_list().expect("image config"), "rbd_qos_iops_limit"),
        ("200".to_owned(), ConfigSource::Image)
    );
    // An invalid value is refused before it is stored.
    assert_eq!(kind(image.metadata_set("conf_rbd_qos_iops_limit", "lots")), ErrorKind::InvalidArgument);
    drop(image);

    io.pool_metadata_remove("conf_rbd_qos_iops_limit").expect("remove");
    assert_eq!(kind(io.pool_metadata_remove("conf_rbd_qos_iops_limit")), ErrorKind::NotFound);
    assert_eq!(kind(io.pool_metadata_get("conf_rbd_qos_iops_limit")), ErrorKind::NotFound);
    support::remove_all(&io, &name);
    drop(io);
    env.cluster.pool_delete(&pool).expect("pool delete");
}

#[test]
fn omap_records_are_set_listed_read_and_removed() {
    let Some(env) = env("omap_records_are_set_listed_read_and_removed") else { return };
    let io = env.io();
    let object = unique("omap");
    assert!(io.omap_list(&object).expect("list of a missing object").is_empty());
    assert_eq!(io.omap_get(&object, "a").expect("get from a missing object"), None);
    io.omap_remove(&object, &["a"]).expect("remove from a missing object");

    let big = vec![7u8; 100_000];
    io.omap_set(&object, &[("b", b"two".as_slice()), ("a", b"one".as_slice()), ("c", &big)]).expect("set");
    io.omap_set(&object, &[("a", b"uno".as_slice())]).expect("replace");
    assert_eq!(io.omap_get(&object, "a").expect("get"), Some(b"uno".to_vec()));
    assert_eq!(io.omap_get(&object, "zz").expect("get absent"), None);
    let listed = io.omap_list(&object).expect("list");
    let keys: Vec<&str> = listed.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["a", "b", "c"]);
    assert_eq!(listed[2].1, big);

    // More entries than one listing round trip returns.
    let many: Vec<(String, Vec<u8>)> = (0..2500).map(|i| (format!("k{i:05}"), i.to_string().into_bytes())).collect();
    let entries: Vec<(&str, &[u8])> = many.iter().map(|(k, v)| (k.as_str(), v.as_slice())).collect();
    io.omap_set(&object, &entries).expect("set many");
    assert_eq!(io.omap_list(&object).expect("list many").len(), 2503);

    io.omap_remove(&object, &["a", "b", "nope"]).expect("remove");
    let listed = io.omap_list(&object).expect("list");
    assert_eq!(listed.len(), 2501);
    assert_eq!(listed[0].0, "c");

    // A key range goes in one operation: [k00000, k01000) is the first thousand numbered keys.
    io.omap_remove_range(&object, "k00000", "k01000").expect("remove range");
    let listed = io.omap_list(&object).expect("list");
    assert_eq!(listed.len(), 1501);
    assert_eq!((listed[0].0.as_str(), listed[1].0.as_str()), ("c", "k01000"));
    io.omap_remove_range(&unique("missing"), "", "z").expect("range of a missing object");
}
