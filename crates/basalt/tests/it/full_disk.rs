//! A full disk under the real `basalt serve`, with qemu-io over NBD: the data directory is a small tmpfs, filled up
//! until writes fail. A write of new data then fails with ENOSPC for that request only, while overwrites, reads and
//! flushes keep working, and removing a snapshot or an image through the API frees space that writes can use again.
//! Metadata commits on the full disk draw on the metadata reserve, which `/metrics` and `GET /api/alerts` report.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use serde_json::{Value, json};

use crate::api::{ADMIN_PASSWORD, Server, call, call_bytes, login, start_at, wait_task};

const MIB: u64 = 1 << 20;

/// Unmounts a tmpfs when dropped (after the server that used it).
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let done = Command::new("umount").arg(&self.0).status().is_ok_and(|s| s.success());
        if !done {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

fn mount_tmpfs(at: &Path, size: u64) -> Result<Mounted, String> {
    let out = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"])
        .arg(at)
        .output()
        .map_err(|e| format!("cannot run mount: {e}"))?;
    if !out.status.success() {
        return Err(format!("mount -t tmpfs failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(Mounted(at.to_owned()))
}

fn free_bytes(path: &Path) -> u64 {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).expect("path");
    // SAFETY: a statvfs struct is plain integers, for which all zeros is a valid value.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: statvfs fills the struct it is given; the path is a valid C string.
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0, "statvfs");
    st.f_bavail as u64 * st.f_frsize as u64
}

/// Runs qemu-io commands on an export; returns whether it succeeded and what it printed.
fn qemu_io(server: &Server, export: &str, cmds: &[String]) -> (bool, String) {
    let mut cmd = Command::new("qemu-io");
    cmd.args(["-f", "raw"]);
    for c in cmds {
        cmd.args(["-c", c]);
    }
    let uri = format!("nbd+unix:///{export}?socket={}", server.dir.path().join("nbd.sock").display());
    let out = cmd.arg(uri).output().expect("qemu-io (apt-get install -y qemu-utils)");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success() && !text.contains("failed"), text)
}

/// What the server has logged so far (its `serve.log`, kept outside the full disk).
fn server_log(server: &Server) -> String {
    std::fs::read_to_string(server.dir.path().join("serve.log")).unwrap_or_default()
}

fn io_ok(server: &Server, export: &str, cmds: &[&str]) {
    let cmds: Vec<String> = cmds.iter().map(|c| c.to_string()).collect();
    let (ok, text) = qemu_io(server, export, &cmds);
    assert!(ok, "qemu-io {cmds:?}: {text}\nserver log:\n{}", server_log(server));
}

/// The metadata reserve as `/metrics` gives it: (bytes held, size).
fn reserve_metrics(server: &Server, token: &str) -> (u64, u64) {
    let (status, body) = call_bytes(server, "GET", "/metrics", token, &[]);
    let text = String::from_utf8_lossy(&body);
    assert_eq!(status, 200, "{text}");
    let value = |name: &str| -> u64 {
        let line =
            text.lines().find_map(|l| l.strip_prefix(&format!("{name} "))).unwrap_or_else(|| panic!("no {name}"));
        line.parse::<f64>().unwrap_or_else(|_| panic!("{name} {line}")) as u64
    };
    (value("basalt_metadata_reserve_bytes"), value("basalt_metadata_reserve_size_bytes"))
}

/// The ids of the alerts `GET /api/alerts` raises now.
fn alert_ids(server: &Server, token: &str) -> Vec<String> {
    let (status, alerts) = call(server, "GET", "/api/alerts", Some(token), None);
    assert_eq!(status, 200, "{alerts}");
    alerts.as_array().expect("a list").iter().map(|a| a["id"].as_str().unwrap_or_default().to_owned()).collect()
}

/// Runs an API call that answers 200/201/204 at once or 202 with a task, and checks it succeeded.
fn api_ok(server: &Server, token: &str, method: &str, path: &str, body: Option<Value>) {
    let (status, answer) = call(server, method, path, Some(token), body);
    match status {
        200 | 201 | 204 => {}
        202 => assert_eq!(wait_task(server, token, &answer)["success"], true, "{method} {path}: {answer}"),
        _ => panic!("{method} {path}: {status} {answer}"),
    }
}

#[test]
fn a_full_disk_fails_nbd_writes_of_new_data_per_request_and_removals_free_space() {
    let dir = Arc::new(tempfile::tempdir().expect("temp dir"));
    // Journal (2 x 64 MiB), metadata reserve (64 MiB) and the rest: the store needs about 200 MiB to start.
    let _mounted = match mount_tmpfs(dir.path(), 320 * MIB) {
        Ok(m) => m,
        Err(why) => {
            eprintln!("SKIPPED: a full-disk test needs a tmpfs mount: {why}");
            return;
        }
    };
    // The server logs to `serve.log` in its data directory, which fills up here: the log goes outside, through a
    // symlink, so that what the server says about the full disk is kept and shown when an assertion fails.
    let logs = tempfile::tempdir().expect("temp dir for the server log");
    std::os::unix::fs::symlink(logs.path().join("serve.log"), dir.path().join("serve.log")).expect("log symlink");
    let server = start_at(dir.clone(), Some(ADMIN_PASSWORD));
    let token = login(&server, "admin", ADMIN_PASSWORD);
    let (held, size) = reserve_metrics(&server, &token);
    assert!(size > 0 && held == size, "a fresh store's reserve is full: {held} of {size}");
    assert!(!alert_ids(&server, &token).contains(&"metadata_reserve_low".to_owned()));
    for (name, size) in [("vm", 256 * MIB), ("other", 64 * MIB)] {
        let body = json!({"name": name, "pool_name": "rbd", "size": size, "features": ["layering"]});
        api_ok(&server, &token, "POST", "/api/block/image", Some(body));
    }
    // 8 MiB a snapshot keeps and the head overwrites (removing the snapshot frees it), and 8 MiB in `other`.
    io_ok(&server, "rbd/vm", &["write -P 0xa1 0 8M"]);
    api_ok(&server, &token, "POST", "/api/block/image/rbd%2Fvm/snap", Some(json!({"snapshot_name": "s"})));
    io_ok(&server, "rbd/vm", &["write -P 0xb2 0 8M"]);
    io_ok(&server, "rbd/other", &["write -P 0xc3 0 8M"]);

    // Leave 16 MiB, then write new data 1 MiB at a time until the disk is full.
    let ballast = std::fs::File::create(dir.path().join("ballast")).expect("ballast");
    let fill = free_bytes(dir.path()) - 16 * MIB;
    let zeros = vec![0u8; MIB as usize];
    for i in 0..fill / MIB {
        std::os::unix::fs::FileExt::write_all_at(&ballast, &zeros, i * MIB).expect("ballast");
    }
    let mut at = 8 * MIB;
    for chunk in [MIB, 64 << 10, 4 << 10] {
        let failure = loop {
            let (ok, text) = qemu_io(&server, "rbd/vm", &[format!("write -P 0xd4 {at} {chunk}")]);
            if !ok {
                break text;
            }
            at += chunk;
            assert!(at < 64 * MIB, "the disk never filled up");
        };
        let log = server_log(&server);
        assert!(
            failure.contains("No space left on device"),
            "the write failed otherwise: {failure}\nserver log:\n{log}"
        );
    }
    assert!(at >= 12 * MIB, "only {} MiB of new data fitted", at / MIB - 8);
    // Per request: the next write of new data fails the same way, large or small.
    for cmd in [format!("write -P 0xd5 {at} 1M"), format!("write -P 0xd5 {} 4k", at + 2 * MIB)] {
        let (ok, text) = qemu_io(&server, "rbd/vm", &[cmd]);
        assert!(!ok && text.contains("No space left on device"), "{text}\nserver log:\n{}", server_log(&server));
    }
    // Overwrites of written blocks, reads and flushes keep working.
    io_ok(&server, "rbd/vm", &["write -P 0xe5 0 64k", "flush", "read -P 0xe5 0 64k", "read -P 0xb2 64k 1M"]);
    io_ok(&server, "rbd/vm", &["read -P 0xd4 8M 1M"]);

    // Removing the snapshot frees its 8 MiB; new data fits again.
    let before = free_bytes(dir.path());
    api_ok(&server, &token, "DELETE", "/api/block/image/rbd%2Fvm/snap/s", None);
    let freed = free_bytes(dir.path()).saturating_sub(before);
    assert!(freed >= 6 * MIB, "the snapshot removal freed {freed} bytes");
    io_ok(&server, "rbd/vm", &[&format!("write -P 0xf6 {at} 1M"), "flush", &format!("read -P 0xf6 {at} 1M")]);

    // Removing an image frees its space too, and the store still takes changes.
    let before = free_bytes(dir.path());
    api_ok(&server, &token, "DELETE", "/api/block/image/rbd%2Fother", None);
    let freed = free_bytes(dir.path()).saturating_sub(before);
    assert!(freed >= 6 * MIB, "the image removal freed {freed} bytes");
    let body = json!({"name": "after", "pool_name": "rbd", "size": MIB, "features": ["layering"]});
    api_ok(&server, &token, "POST", "/api/block/image", Some(body));
    io_ok(&server, "rbd/vm", &["read -P 0xe5 0 64k", "read -P 0xb2 64k 1M", "read -P 0xd4 8M 1M"]);
    assert_eq!(reserve_metrics(&server, &token), (size, size), "the reserve is full again");

    // The disk fills up again, and metadata commits (image metadata, 2000 bytes a key) take pages of the metadata
    // store that it no longer has: they draw on the reserve, which /metrics shows and GET /api/alerts warns of.
    let refill = std::fs::File::create(dir.path().join("ballast2")).expect("ballast");
    for i in 0..=free_bytes(dir.path()) / MIB {
        if std::os::unix::fs::FileExt::write_all_at(&refill, &zeros, i * MIB).is_err() {
            break;
        }
    }
    let mut drawn = None;
    for i in 0..64 {
        let body = json!({"metadata": {format!("key{i}"): "v".repeat(2000)}});
        api_ok(&server, &token, "PUT", "/api/block/image/rbd%2Fvm", Some(body));
        let (held, _) = reserve_metrics(&server, &token);
        if held < size {
            drawn = Some(held);
            break;
        }
    }
    let held = drawn.expect("metadata commits on the full disk never drew on the reserve");
    assert!(alert_ids(&server, &token).contains(&"metadata_reserve_low".to_owned()), "held {held} of {size}");
    // While the reserve is low, new data is refused so that freed space refills it first.
    let (ok, text) = qemu_io(&server, "rbd/vm", &[format!("write -P 0xa7 {} 4k", at + 4 * MIB)]);
    assert!(!ok && text.contains("No space left on device"), "{text}\nserver log:\n{}", server_log(&server));

    // Space comes back (the file system grows, as it were): the next write of new data refills the reserve first,
    // then fits; the metric is full again and the warning gone.
    drop(refill);
    std::fs::remove_file(dir.path().join("ballast2")).expect("remove the ballast");
    io_ok(&server, "rbd/vm", &[&format!("write -P 0xa7 {} 4k", at + 4 * MIB), "flush"]);
    assert_eq!(reserve_metrics(&server, &token), (size, size), "the reserve refilled");
    assert!(!alert_ids(&server, &token).contains(&"metadata_reserve_low".to_owned()));
    drop(server);
}

/// The server's log on a full disk: its `serve.log` is on a tmpfs that a ballast file has filled, so every line the
/// server writes to stderr fails with ENOSPC. The server still starts, answers the API and serves NBD connections,
/// dropping the lines it cannot write. (tracing's default reports a failed write with `eprintln!`, which panics when
/// stderr fails too: NBD connections were closed in the handshake, without a reply, once the log filled the disk.)
#[test]
fn a_server_whose_log_cannot_be_written_keeps_serving() {
    let logs = tempfile::tempdir().expect("temp dir for the log");
    let _mounted = match mount_tmpfs(logs.path(), 64 << 10) {
        Ok(m) => m,
        Err(why) => {
            eprintln!("SKIPPED: a full-disk test needs a tmpfs mount: {why}");
            return;
        }
    };
    std::fs::File::create(logs.path().join("serve.log")).expect("empty log");
    let mut ballast = std::fs::File::create(logs.path().join("ballast")).expect("ballast");
    let filled = std::io::copy(&mut std::io::repeat(0).take(1 << 20), &mut ballast);
    assert!(filled.is_err_and(|e| e.raw_os_error() == Some(libc::ENOSPC)), "the log's tmpfs did not fill up");
    let dir = Arc::new(tempfile::tempdir().expect("temp dir"));
    std::os::unix::fs::symlink(logs.path().join("serve.log"), dir.path().join("serve.log")).expect("log symlink");

    let server = start_at(dir.clone(), Some(ADMIN_PASSWORD));
    let token = login(&server, "admin", ADMIN_PASSWORD);
    let body = json!({"name": "vm", "pool_name": "rbd", "size": 4 * MIB, "features": ["layering"]});
    api_ok(&server, &token, "POST", "/api/block/image", Some(body));
    for _ in 0..3 {
        io_ok(&server, "rbd/vm", &["write -P 0x5a 0 64k", "flush", "read -P 0x5a 0 64k"]);
    }
    let (ok, text) = qemu_io(&server, "rbd/missing", &["read 0 4k".to_owned()]);
    assert!(!ok && text.contains("rbd/missing"), "an unknown export is refused with a message: {text}");
    api_ok(&server, &token, "DELETE", "/api/block/image/rbd%2Fvm", None);
    drop(server);
    assert_eq!(std::fs::metadata(logs.path().join("serve.log")).expect("log").len(), 0, "the log was written");
}
