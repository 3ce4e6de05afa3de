//! End-to-end tests of the `basalt` binary: it is started as a user would start it.

mod api;
mod attach;
#[cfg(feature = "ceph")]
mod ceph;
mod cli;
mod common;
mod contract;
mod files;
mod full_disk;
mod integrity;
mod nbd;
mod security;
mod snapshots;
mod transfer;

use std::process::Command;
use std::sync::Arc;

use basalt_core::{Backend, CreateOptions, Durability, ImageSpec, OpenTarget, PoolName, SnapSpec, SystemClock};

fn basalt(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_basalt")).args(args).output().expect("run basalt")
}

fn make_store(root: &std::path::Path) {
    let engine = basalt_engine::Engine::open(root, Arc::new(SystemClock)).expect("open engine");
    let pool = PoolName::new("rbd").expect("pool");
    engine.pool_create(&pool).expect("pool");
    engine.pool_application_enable(&pool, "rbd").expect("tag");
    let spec = ImageSpec::parse("rbd/vm").expect("spec");
    engine.image_create(&spec, &CreateOptions::with_size(1 << 20)).expect("create");
    let io = engine.open(&spec, &OpenTarget::Head, "test").expect("open");
    io.write(0, b"data", Durability::ForceUnitAccess).expect("write");
    drop(io);
    engine.snap_create(&SnapSpec::parse("rbd/vm@s").expect("snap")).expect("snapshot");
}

#[test]
fn fsck_reports_a_healthy_store_clean() {
    let dir = tempfile::tempdir().expect("temp dir");
    make_store(dir.path());
    let out = basalt(&["fsck", "--data-dir", dir.path().to_str().expect("utf-8 path")]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    // The 4 bytes written before the snapshot are one data block, checked against its crc.
    assert!(stdout.contains("checked 1 image(s), 2 layer(s) and 1 data block(s)"), "{stdout}");
    assert!(stdout.contains("clean"), "{stdout}");
}

#[test]
fn fsck_fails_on_a_missing_layer_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    make_store(dir.path());
    let layers = dir.path().join(basalt_engine::LAYERS_DIR);
    let victim = std::fs::read_dir(&layers).expect("layers dir").next().expect("a layer file").expect("entry");
    std::fs::remove_file(victim.path()).expect("remove layer file");
    let out = basalt(&["fsck", "--data-dir", dir.path().to_str().expect("utf-8 path")]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("is missing"), "{stdout}");
}

#[test]
fn errors_are_one_line_with_a_non_zero_exit() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = basalt(&["fsck", "--data-dir", dir.path().join("nothing").to_str().expect("utf-8 path")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr.starts_with("basalt: no basalt store in"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    let out = basalt(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
}
