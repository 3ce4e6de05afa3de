//! Attaching images: `GET /api/block/image/{spec}/connection` and `basalt device connection`, whose URIs real NBD
//! clients (qemu-io, nbdinfo) then use as given, plain, over the Unix socket and over TLS; and the `device map`
//! refusals that need no kernel module. Mapping itself runs in a real guest kernel: scripts/guest/run-tests.sh.

use std::process::Command;

use serde_json::Value;

use crate::common::{Server, check_failure};

fn run(program: &str, args: &[&str]) -> std::process::Output {
    Command::new(program).args(args).output().unwrap_or_else(|e| panic!("{program}: {e} (apt-get install it)"))
}

fn text(out: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[test]
fn connection_details_work_as_given_with_real_clients() {
    let server = Server::start();
    server.ok(&["create", "--size", "8M", "rbd/att"]);
    let c = server.json(&["device", "connection", "rbd/att", "--format", "json"]);
    assert_eq!(c["export_name"], "rbd/att");
    assert_eq!(c["read_only"], false);
    assert_eq!(c["size"], 8 << 20);
    assert_eq!(c["credentials"]["your_access"], "read-write");
    assert!(c["warning"].as_str().expect("warning").contains("one workload at a time"));
    let unix = c["uris"]["unix"].as_str().expect("unix URI").to_owned();
    let tcp = c["uris"]["tcp"].as_str().expect("tcp URI").to_owned();
    assert_eq!(c["uris"]["tls"], Value::Null);

    // The URIs are what qemu-io and nbdinfo take: write through one, read through the other.
    let out = run("qemu-io", &["-f", "raw", "-c", "write -P 0x61 0 64k", &unix]);
    assert!(out.status.success() && !text(&out).contains("failed"), "{}", text(&out));
    let out = run("qemu-io", &["-f", "raw", "-c", "read -P 0x61 0 64k", &tcp]);
    assert!(
        out.status.success() && !text(&out).contains("failed") && !text(&out).contains("Pattern verification"),
        "{}",
        text(&out)
    );
    let out = run("nbdinfo", &["--size", &tcp]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), (8u64 << 20).to_string(), "{}", text(&out));

    // The lines name the same export and address.
    let address = c["nbd"]["address"].as_str().expect("address");
    assert!(c["qemu"]["drive"].as_str().expect("drive").contains(&format!("file=nbd://{address}/rbd/att,")));
    assert!(c["device_map"]["tcp"].as_str().expect("map").ends_with(&format!("--nbd-address {address} rbd/att")));
    assert!(c["libvirt"]["tcp"].as_str().expect("xml").contains("<source protocol='nbd' name='rbd/att'>"));

    // A snapshot is read-only, by spec or by ?snap=; writes through its URI fail, reads give the snapshot's bytes.
    server.ok(&["snap", "create", "rbd/att@s1"]);
    let out = run("qemu-io", &["-f", "raw", "-c", "write -P 0x62 0 64k", &unix]);
    assert!(out.status.success(), "{}", text(&out));
    let s = server.json(&["device", "connection", "rbd/att@s1", "--format", "json"]);
    assert_eq!((s["export_name"].as_str(), s["read_only"].as_bool()), (Some("rbd/att@s1"), Some(true)));
    assert_eq!(s["credentials"]["your_access"], "read-only");
    assert!(s["qemu"]["drive"].as_str().expect("drive").ends_with(",readonly=on"));
    assert!(s["device_map"]["tcp"].as_str().expect("map").contains("--read-only"));
    let snap_uri = s["uris"]["unix"].as_str().expect("unix URI");
    let out = run("qemu-io", &["-f", "raw", "-r", "-c", "read -P 0x61 0 64k", snap_uri]);
    assert!(out.status.success() && !text(&out).contains("verification"), "{}", text(&out));
    let out = run("qemu-io", &["-f", "raw", "-c", "write -P 0x63 0 4k", snap_uri]);
    assert!(
        !out.status.success() || text(&out).contains("failed") || text(&out).contains("read-only"),
        "{}",
        text(&out)
    );
    let token = server.admin_token();
    let (status, by_query) = server.http("GET", "/api/block/image/rbd%2Fatt/connection?snap=s1", &token, None);
    assert_eq!(status, 200);
    assert_eq!(by_query["uris"], s["uris"]);

    // The plain layout shows each way to attach.
    let plain = server.ok(&["device", "connection", "rbd/att"]);
    for needle in ["NBD URI (TCP):", "QEMU -drive:", "device map:", "nbd-client:", "libvirt disk:", "warning:"] {
        assert!(plain.contains(needle), "{needle}: {plain}");
    }

    // Refusals: unknown image or snapshot, a snapshot named twice, unknown parameters; the CLI exits with ENOENT.
    server.fails(&["device", "connection", "rbd/nope"], 2, "does not exist");
    let (status, body) = server.http("GET", "/api/block/image/rbd%2Fatt/connection?snap=nope", &token, None);
    // The Ceph Dashboard's contract: a backend refusal is a 400 carrying the errno (2, ENOENT).
    assert_eq!((status, body["code"].as_str()), (400, Some("2")), "{body}");
    let (status, body) = server.http("GET", "/api/block/image/rbd%2Fatt%40s1/connection?snap=s1", &token, None);
    assert_eq!(status, 400, "{body}");
    let (status, body) = server.http("GET", "/api/block/image/rbd%2Fatt/connection?host=x", &token, None);
    assert_eq!(status, 400, "{body}");
    let (status, _) = server.http("GET", "/api/block/image/rbd%2Fatt/connection", "not-a-token", None);
    assert_eq!(status, 401);
}

#[test]
fn tls_listeners_get_tls_uris_that_work_with_an_issued_certificate() {
    let server = Server::start_with_env(&[("BASALT_NBD_TLS", "auto")]);
    server.ok(&["create", "--size", "4M", "rbd/sec"]);
    let c = server.json(&["device", "connection", "rbd/sec", "--format", "json"]);
    assert_eq!(c["uris"]["tcp"], Value::Null, "no clear TCP URI when the listener requires TLS");
    assert_eq!((c["nbd"]["tls"].as_bool(), c["nbd"]["client_certificates"].as_bool()), (Some(true), Some(true)));
    let credentials = c["credentials"]["tcp"].as_str().expect("credentials");
    assert!(credentials.contains("basalt nbd cert issue local-admin --out CERT_DIR"), "{credentials}");
    assert!(c["qemu"]["drive"].as_str().expect("drive").contains("tls-creds=tls0"));
    assert!(c["device_map"]["tcp"].as_str().expect("map").contains("--tls-dir CERT_DIR"));

    let certs = tempfile::tempdir().expect("temp dir");
    let dir = certs.path().to_str().expect("utf-8 path");
    server.ok(&["nbd", "cert", "issue", "admin", "--out", dir]);
    let uri = c["uris"]["tls"].as_str().expect("TLS URI").replace("CERT_DIR", dir);
    let out = run("nbdinfo", &["--size", &uri]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), (4u64 << 20).to_string(), "{uri}: {}", text(&out));
    // Without the certificate the same export is refused.
    let bare = uri.split('?').next().expect("uri").to_owned();
    assert!(!run("nbdinfo", &["--size", &bare]).status.success());
}

#[test]
fn device_map_refuses_bad_arguments_before_touching_anything() {
    let server = Server::start();
    let map = |args: &[&str]| {
        let mut all = vec!["device", "map"];
        all.extend_from_slice(args);
        server.try_run(&all)
    };
    let args = ["--exclusive", "rbd/img@snap"];
    check_failure(&map(&args), &args, 22, "a snapshot maps read-only");
    let args = ["--exclusive", "--read-only", "rbd/img"];
    check_failure(&map(&args), &args, 22, "contradict");
    let args = ["--nbd-address", "host:port", "rbd/img"];
    check_failure(&map(&args), &args, 22, "port must be a number");
    let args = ["--tls-dir", "/nonexistent", "rbd/img"];
    check_failure(&map(&args), &args, 22, "ca-cert.pem");
    let args = ["rbd/bad@a@b"];
    check_failure(&map(&args), &args, 22, "invalid spec");
    if !std::path::Path::new("/sys/module/nbd").exists() {
        // This machine has no nbd module: the map says what to do.
        let args = ["rbd/img"];
        check_failure(&map(&args), &args, 19, "modprobe nbd");
        let out = server.try_run(&["device", "list"]);
        assert!(out.status.success() && out.stdout.is_empty(), "{}", text(&out));
        let out = server.try_run(&["device", "list", "--format", "json"]);
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[]");
        let args = ["device", "unmap", "/dev/nbd0"];
        check_failure(&server.try_run(&args), &args, 19, "modprobe nbd");
    }
}
