//! What `basalt serve` leaves on disk is its owner's only: the data directory it creates is 0700 and every file in
//! it (image data, both stores, the generated password, the sockets) is 0600, whatever the caller's umask.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::common::free_port;

/// Stops the server on drop, even when an assertion failed.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn modes_under(dir: &Path, out: &mut Vec<(PathBuf, u32, bool)>) {
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let entry = entry.expect("dir entry");
        let meta = entry.path().symlink_metadata().expect("metadata");
        let mode = meta.permissions().mode() & 0o7777;
        out.push((entry.path(), mode, meta.is_dir()));
        if meta.is_dir() {
            modes_under(&entry.path(), out);
        }
    }
}

#[test]
fn a_fresh_data_dir_and_its_files_are_private() {
    fresh_data_dir_is_private(&[]);
}

/// With `--direct-io`, `serve` probes the data directory before the store opens: creating it then too.
#[test]
fn a_fresh_data_dir_is_private_with_direct_io_too() {
    fresh_data_dir_is_private(&["--direct-io"]);
}

/// Starts `serve` (with `serve_args`) on a data directory that does not exist yet, makes images and a snapshot,
/// and checks the mode of everything under it.
fn fresh_data_dir_is_private(serve_args: &[&str]) {
    let parent = tempfile::tempdir().expect("temp dir");
    let data = parent.path().join("fresh").join("data");
    let cli = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_basalt"))
            .args(args)
            .env("BASALT_DATA_DIR", &data)
            .env("HOME", parent.path())
            .env_remove("BASALT_URL")
            .env_remove("BASALT_TOKEN")
            .stdin(Stdio::null())
            .output()
            .expect("run basalt")
    };
    // No BASALT_ADMIN_PASSWORD, so the generated password is written to a file too.
    let server = Command::new(env!("CARGO_BIN_EXE_basalt"))
        .args(["serve", "--data-dir"])
        .arg(&data)
        .args([
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
            "--nbd-listen",
            &format!("127.0.0.1:{}", free_port()),
        ])
        .args(serve_args)
        .env_remove("BASALT_ADMIN_PASSWORD")
        .env_remove("BASALT_CEPH_CONF")
        .env("BASALT_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start basalt serve");
    let _server = Running(server);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(data.join("api.sock").exists() && cli(&["pool", "ls"]).status.success()) {
        assert!(Instant::now() < deadline, "the server did not come up within 20 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    for args in
        [&["create", "--size", "4M", "img"][..], &["snap", "create", "img@s1"], &["create", "--size", "1M", "two"]]
    {
        let out = cli(args);
        assert!(out.status.success(), "basalt {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }

    let mode = std::fs::metadata(&data).expect("data dir").permissions().mode() & 0o7777;
    assert_eq!(mode, 0o700, "the data directory is {mode:o}");
    let mut entries = Vec::new();
    modes_under(&data, &mut entries);
    let names: Vec<String> = entries.iter().map(|(p, _, _)| p.display().to_string()).collect();
    for expected in ["basalt.redb", "server.redb", "LOCK", "initial-admin-password", "api.sock", "nbd.sock", "layers"] {
        assert!(names.iter().any(|n| n.ends_with(expected)), "{expected} is missing from {names:?}");
    }
    assert!(entries.iter().any(|(p, _, _)| p.extension().is_some_and(|e| e == "layer")), "no layer file: {names:?}");
    let wrong: Vec<String> = entries
        .iter()
        .filter(|(_, mode, dir)| *mode != if *dir { 0o700 } else { 0o600 })
        .map(|(p, mode, _)| format!("{} is {mode:o}", p.display()))
        .collect();
    assert!(wrong.is_empty(), "not private: {wrong:?}");
    let sockets =
        entries.iter().filter(|(p, _, _)| p.symlink_metadata().is_ok_and(|m| m.file_type().is_socket())).count();
    assert_eq!(sockets, 2, "{names:?}");
}
