//! The data path of the real `basalt serve` with real clients: fio over NBD with verification across connections,
//! QoS limits that hold and lift without reconnecting, and the figures that reach `/metrics`.

use std::process::Command;

use serde_json::{Value, json};

use crate::api::{ADMIN_PASSWORD, Server, call, kill9, login, start, start_with};

fn tool(name: &str, package: &str) -> String {
    let found = Command::new("sh").args(["-c", &format!("command -v {name}")]).output().expect("sh");
    assert!(found.status.success(), "{name} is missing: install it with apt-get install -y {package}");
    name.to_owned()
}

fn nbd_uri(server: &Server, export: &str) -> String {
    format!("nbd+unix:///{export}?socket={}", server.dir.path().join("nbd.sock").display())
}

/// Runs fio with the nbd engine and returns its JSON report.
fn fio(server: &Server, export: &str, args: &[&str]) -> Value {
    let fio = tool("fio", "fio");
    let out = Command::new(fio)
        .args(["--name=job", "--ioengine=nbd", "--output-format=json"])
        .arg(format!("--uri={}", nbd_uri(server, export)))
        .args(args)
        // fio writes verification state files into its working directory.
        .current_dir(server.dir.path())
        .output()
        .expect("run fio");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "fio failed: {}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    // fio may print notes before the JSON document.
    let start = stdout.find('{').expect("fio JSON output");
    serde_json::from_str(&stdout[start..]).expect("fio JSON")
}

fn write_iops(report: &Value) -> f64 {
    report["jobs"].as_array().map_or(0.0, |jobs| jobs.iter().filter_map(|j| j["write"]["iops"].as_f64()).sum())
}

fn create(server: &Server, token: &str, name: &str, features: &[&str]) {
    let body = json!({"name": name, "pool_name": "rbd", "size": 64u64 << 20, "features": features});
    let (status, answer) = call(server, "POST", "/api/block/image", Some(token), Some(body));
    assert_eq!(status, 201, "{answer}");
}

#[test]
fn fio_verifies_data_written_over_several_connections() {
    let server = start(Some(ADMIN_PASSWORD));
    let token = login(&server, "admin", ADMIN_PASSWORD);
    // Several writers at once need an image without the exclusive-lock feature, as in the reference.
    create(&server, &token, "shared", &["layering"]);
    let report = fio(
        &server,
        "rbd/shared",
        &[
            "--rw=randwrite",
            "--bs=4k",
            "--iodepth=8",
            "--numjobs=4",
            "--size=8m",
            "--offset_increment=16m",
            "--verify=crc32c",
            "--do_verify=1",
        ],
    );
    let errors: u64 = report["jobs"].as_array().map_or(1, |jobs| jobs.iter().filter_map(|j| j["error"].as_u64()).sum());
    assert_eq!(errors, 0, "{report}");
    let (_, image) = call(&server, "GET", "/api/block/image/rbd%2Fshared", Some(&token), None);
    assert!(image["disk_usage"].is_null() || image["disk_usage"].as_u64().is_some());
    let (_, metrics) = crate::api::call_bytes(&server, "GET", "/metrics", &token, b"");
    let metrics = String::from_utf8_lossy(&metrics).into_owned();
    let line = metrics
        .lines()
        .find(|l| l.starts_with(r#"ceph_rbd_write_ops{pool="rbd",namespace="",image="shared"}"#))
        .unwrap_or_else(|| panic!("no write counter: {metrics}"));
    let writes: f64 = line.rsplit(' ').next().and_then(|v| v.parse().ok()).expect("a number");
    assert!(writes >= 4.0 * 2048.0, "4 jobs x 8 MiB / 4 KiB writes were counted: {line}");
}

#[test]
fn a_qos_limit_holds_under_fio_and_lifting_it_restores_full_speed() {
    let server = start(Some(ADMIN_PASSWORD));
    let token = login(&server, "admin", ADMIN_PASSWORD);
    create(&server, &token, "limited", &["layering", "exclusive-lock"]);
    let set = json!({"name": "rbd_qos_iops_limit", "value": 500});
    assert_eq!(call(&server, "PUT", "/api/block/config/image/rbd%2Flimited", Some(&token), Some(set)).0, 200);
    // The ramp spends the bucket's initial burst; the measured part is the steady rate.
    let args =
        ["--rw=randwrite", "--bs=4k", "--iodepth=32", "--size=32m", "--time_based=1", "--ramp_time=2", "--runtime=4"];
    let limited = write_iops(&fio(&server, "rbd/limited", &args));
    assert!((450.0..=550.0).contains(&limited), "500 IOPS limit, measured {limited:.0}");
    let reset = json!({"name": "rbd_qos_iops_limit", "value": null});
    assert_eq!(call(&server, "PUT", "/api/block/config/image/rbd%2Flimited", Some(&token), Some(reset)).0, 200);
    let free = write_iops(&fio(&server, "rbd/limited", &args));
    assert!(free > 2.0 * 550.0, "without the limit fio ran at {free:.0} IOPS");
}

#[test]
fn qemu_io_reads_back_what_it_wrote_and_snapshots_keep_the_old_data() {
    let server = start(Some(ADMIN_PASSWORD));
    let token = login(&server, "admin", ADMIN_PASSWORD);
    create(&server, &token, "vm", &["layering", "exclusive-lock", "object-map", "fast-diff"]);
    let qemu_io = tool("qemu-io", "qemu-utils");
    let io = |export: &str, cmds: &[&str]| {
        let mut cmd = Command::new(&qemu_io);
        cmd.args(["-f", "raw"]);
        if export.contains('@') {
            // Snapshot exports are read-only; qemu-io must open them so.
            cmd.arg("-r");
        }
        for c in cmds {
            cmd.args(["-c", c]);
        }
        let out = cmd.arg(nbd_uri(&server, export)).output().expect("qemu-io");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success() && !text.contains("fail"), "qemu-io {cmds:?}: {text}");
        text
    };
    io("rbd/vm", &["write -P 0xab 0 1M", "write -P 0xcd 4095 3"]);
    let (status, _) =
        call(&server, "POST", "/api/block/image/rbd%2Fvm/snap", Some(&token), Some(json!({"snapshot_name": "s"})));
    assert_eq!(status, 201);
    io("rbd/vm", &["write -P 0x11 0 64k"]);
    io("rbd/vm@s", &["read -P 0xab 0 4095", "read -P 0xcd 4095 3", "read -P 0xab 4098 64k"]);
    io("rbd/vm", &["read -P 0x11 0 64k", "read -P 0xab 64k 64k"]);
    // The figures of those writes show in `perf image iostat`, as in `rbd perf image iostat`, once the once-a-second
    // sampler has folded them into the history.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let out = Command::new(env!("CARGO_BIN_EXE_basalt"))
        .arg("--data-dir")
        .arg(server.dir.path())
        .args(["perf", "image", "iostat", "rbd", "--interval", "60", "--iterations", "1"])
        .output()
        .expect("run iostat");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(table.starts_with("NAME") && table.contains("WR_BYTES"), "{table}");
    assert!(table.lines().any(|l| l.starts_with("rbd/vm ")), "{table}");
    let (_, du) = call(&server, "GET", "/api/block/image/rbd%2Fvm/du", Some(&token), None);
    assert_eq!(du[0]["used_bytes"], 1u64 << 20, "{du}");
    assert_eq!(du[1]["used_bytes"], 64u64 << 10, "{du}");
}

/// One acknowledged write: the byte pattern at an offset, 64 KiB long.
#[derive(Debug, Clone, Copy)]
struct Acked {
    offset: u64,
    pattern: u8,
}

#[test]
fn kill_9_during_writes_loses_no_acknowledged_write_and_the_store_stays_clean() {
    kill_9_rounds(20, &[], true);
}

/// The same with image data bypassing the page cache: an acknowledged write is in the device, not the page cache.
#[test]
fn kill_9_during_writes_with_direct_io_loses_no_acknowledged_write() {
    kill_9_rounds(6, &["--direct-io"], true);
}

/// The same for a client that never flushes, on one connection: its writes' records take the journal's other path
/// (copies into the journal file's map, while no flush synced the journal lately). A process crash keeps them too.
#[test]
fn kill_9_during_unflushed_writes_loses_no_acknowledged_write() {
    kill_9_rounds(6, &[], false);
}

/// `rounds` times: a writer in the background, `kill -9` of the server (started with `serve_args`) at a random
/// moment, fsck, a restart, and every acknowledged write read back. With `flushes`, each write is its own client
/// process and is made durable (FUA, or a flush after it); without, one client writes them all on one connection and
/// never flushes (closing the connection would flush the image).
fn kill_9_rounds(rounds: u64, serve_args: &[&str], flushes: bool) {
    const SLOT_BYTES: u64 = 16 << 10;
    const WRITES_PER_ROUND: u64 = 200;
    let qemu_io = tool("qemu-io", "qemu-utils");
    let mut server =
        start_with(std::sync::Arc::new(tempfile::tempdir().expect("temp dir")), Some(ADMIN_PASSWORD), serve_args);
    let token = login(&server, "admin", ADMIN_PASSWORD);
    create(&server, &token, "victim", &["layering", "exclusive-lock", "object-map", "fast-diff"]);
    // Every write that a client saw acknowledged (write with FUA, or write then flush) must read back after any crash.
    let mut acked: std::collections::BTreeMap<u64, Acked> = std::collections::BTreeMap::new();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for round in 0..rounds {
        let uri = nbd_uri(&server, "rbd/victim");
        // A writer in the background; the server is killed at a random moment while it writes.
        let (tx, rx) = std::sync::mpsc::channel::<Acked>();
        let writer_uri = uri.clone();
        let writer_qemu = qemu_io.clone();
        let seed = next();
        let writer = std::thread::spawn(move || {
            let mut s = seed | 1;
            if !flushes {
                // One client, every write in turn, 2 ms apart, so the kill (after 100-500 ms) comes while it
                // writes; qemu-io prints each write once it was answered.
                let mut patterns = std::collections::HashMap::new();
                let mut cmd = Command::new(&writer_qemu);
                cmd.args(["-f", "raw"]);
                for i in 0..WRITES_PER_ROUND {
                    s ^= s << 13;
                    s ^= s >> 7;
                    s ^= s << 17;
                    let (offset, pattern) = ((round * WRITES_PER_ROUND + i) * SLOT_BYTES, (s >> 16) as u8 | 1);
                    patterns.insert(offset, pattern);
                    cmd.args(["-c", &format!("write -P {pattern} {offset} {SLOT_BYTES}"), "-c", "sleep 2"]);
                }
                let Ok(out) = cmd.arg(&writer_uri).output() else { return };
                for line in String::from_utf8_lossy(&out.stdout).lines() {
                    // "wrote 16384/16384 bytes at offset 1234"
                    let Some(offset) = line.strip_prefix("wrote ").and_then(|l| l.split("at offset ").nth(1)) else {
                        continue;
                    };
                    let offset: u64 = offset.trim().parse().expect("qemu-io offset");
                    if tx.send(Acked { offset, pattern: patterns[&offset] }).is_err() {
                        return;
                    }
                }
                return;
            }
            for i in 0..WRITES_PER_ROUND {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                // Every slot is written once in the whole test: a later, unacknowledged write to a slot could
                // legitimately land before the crash and replace an acknowledged one.
                let slot = round * WRITES_PER_ROUND + i;
                let pattern = (s >> 16) as u8 | 1;
                let offset = slot * SLOT_BYTES;
                let fua = s & 2 == 0;
                let write = format!("write {} -P {pattern} {offset} {SLOT_BYTES}", if fua { "-f" } else { "" });
                let mut cmd = Command::new(&writer_qemu);
                cmd.args(["-f", "raw", "-c", &write]);
                if !fua {
                    cmd.args(["-c", "flush"]);
                }
                let out = cmd.arg(&writer_uri).output();
                match out {
                    Ok(o) if o.status.success() && !String::from_utf8_lossy(&o.stdout).contains("failed") => {
                        if tx.send(Acked { offset, pattern }).is_err() {
                            return;
                        }
                    }
                    _ => return, // The server is gone: this write was never acknowledged.
                }
            }
        });
        std::thread::sleep(std::time::Duration::from_millis(100 + next() % 400));
        let dir = kill9(server);
        let _ = writer.join();
        let mut round_acked = 0;
        for a in rx.try_iter() {
            acked.insert(a.offset, a);
            round_acked += 1;
        }
        // The stopped store checks clean (files an interrupted operation left are notes, not errors).
        let fsck = Command::new(env!("CARGO_BIN_EXE_basalt"))
            .arg("--data-dir")
            .arg(dir.path())
            .arg("fsck")
            .output()
            .expect("fsck");
        assert!(fsck.status.success(), "round {round}: fsck after kill -9: {}", String::from_utf8_lossy(&fsck.stdout));
        server = start_with(dir, Some(ADMIN_PASSWORD), serve_args);
        let uri = nbd_uri(&server, "rbd/victim");
        let mut cmd = Command::new(&qemu_io);
        cmd.args(["-f", "raw", "-r"]);
        for a in acked.values() {
            cmd.args(["-c", &format!("read -P {} {} {SLOT_BYTES}", a.pattern, a.offset)]);
        }
        let out = cmd.arg(&uri).output().expect("qemu-io verify");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && !text.contains("Pattern verification failed") && !text.contains("failed"),
            "round {round} ({round_acked} new acknowledged writes, {} in all): {text}",
            acked.len()
        );
    }
    assert!(
        acked.len() > 2 * rounds as usize,
        "the rounds acknowledged too few writes to mean anything: {}",
        acked.len()
    );
}

#[test]
fn reads_of_never_written_regions_are_counted_too() {
    let server = start(Some(ADMIN_PASSWORD));
    let token = login(&server, "admin", ADMIN_PASSWORD);
    create(&server, &token, "fresh", &["layering", "exclusive-lock"]);
    let out = Command::new(tool("qemu-io", "qemu-utils"))
        .args(["-f", "raw", "-r", "-c", "read -P 0 0 2M"])
        .arg(nbd_uri(&server, "rbd/fresh"))
        .output()
        .expect("qemu-io");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (_, metrics) = crate::api::call_bytes(&server, "GET", "/metrics", &token, b"");
    let metrics = String::from_utf8_lossy(&metrics).into_owned();
    let bytes = metrics
        .lines()
        .find_map(|l| l.strip_prefix(r#"ceph_rbd_read_bytes{pool="rbd",namespace="",image="fresh"} "#))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no read counter: {metrics}"));
    assert!(bytes >= (2u64 << 20) as f64, "the 2 MiB hole read counts as read: {bytes}");
}

#[test]
fn serve_with_nbd_tls_requires_it_on_tcp_and_keeps_the_socket_in_clear() {
    let dir = std::sync::Arc::new(tempfile::tempdir().expect("temp dir"));
    let pki = dir.path().join("pki");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/nbd-tls-pki.sh");
    let made = Command::new("bash").arg(script).arg(&pki).output().expect("run nbd-tls-pki.sh");
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let cert = pki.join("server-cert.pem");
    let key = pki.join("server-key.pem");
    let (cert, key) = (cert.to_str().expect("utf-8 path"), key.to_str().expect("utf-8 path"));
    let server = start_with(dir.clone(), Some(ADMIN_PASSWORD), &["--nbd-tls-cert", cert, "--nbd-tls-key", key]);
    let token = login(&server, "admin", ADMIN_PASSWORD);
    create(&server, &token, "tls", &["layering", "exclusive-lock"]);

    let nbdinfo = tool("nbdinfo", "libnbd-bin");
    let tls_uri = format!("nbds://{}/rbd/tls?tls-certificates={}", server.nbd_addr, pki.join("anonymous").display());
    let info = Command::new(&nbdinfo).arg(&tls_uri).output().expect("nbdinfo");
    let text = String::from_utf8_lossy(&info.stdout);
    assert!(
        info.status.success() && text.contains("export-size: 67108864"),
        "{text}{}",
        String::from_utf8_lossy(&info.stderr)
    );

    let clear = Command::new(&nbdinfo).arg(format!("nbd://{}/rbd/tls", server.nbd_addr)).output().expect("nbdinfo");
    assert!(!clear.status.success(), "a cleartext client was served on a TLS listener");
    let local = Command::new(&nbdinfo).arg(nbd_uri(&server, "rbd/tls")).output().expect("nbdinfo");
    assert!(local.status.success(), "{}", String::from_utf8_lossy(&local.stderr));
}

#[test]
fn serve_refuses_to_start_with_unusable_tls_material() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("missing-cert.pem");
    let out = Command::new(env!("CARGO_BIN_EXE_basalt"))
        .args(["serve", "--data-dir"])
        .arg(dir.path().join("data"))
        .args(["--listen", "127.0.0.1:0", "--nbd-listen", "127.0.0.1:0", "--nbd-tls-cert"])
        .arg(&missing)
        .arg("--nbd-tls-key")
        .arg(&missing)
        .output()
        .expect("run basalt serve");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "serve started without its certificate");
    assert!(stderr.contains("missing-cert.pem"), "{stderr}");
    // Nothing was created: the configuration is checked before the store is opened.
    assert!(!dir.path().join("data").exists());

    let half = Command::new(env!("CARGO_BIN_EXE_basalt"))
        .args(["serve", "--nbd-tls-cert", "x.pem"])
        .output()
        .expect("run basalt serve");
    assert!(!half.status.success());
    assert!(String::from_utf8_lossy(&half.stderr).contains("--nbd-tls-key"));
}

/// Opens `export` on the server's NBD socket with a raw client, writes 1 MiB without flushing, sends NBD_CMD_DISC and
/// hangs up at once, as qemu-io and qemu-img do (they never wait for the server to close).
fn write_and_hang_up(server: &Server, export: &str) {
    use std::io::{Read, Write};
    const REQUEST_MAGIC: u32 = 0x2560_9513;
    let request = |command: u16, cookie: u64, length: u32| {
        let mut bytes = Vec::with_capacity(28);
        bytes.extend_from_slice(&REQUEST_MAGIC.to_be_bytes());
        bytes.extend_from_slice(&0u16.to_be_bytes());
        bytes.extend_from_slice(&command.to_be_bytes());
        bytes.extend_from_slice(&cookie.to_be_bytes());
        bytes.extend_from_slice(&0u64.to_be_bytes());
        bytes.extend_from_slice(&length.to_be_bytes());
        bytes
    };
    let mut socket = std::os::unix::net::UnixStream::connect(server.dir.path().join("nbd.sock")).expect("connect");
    socket.set_read_timeout(Some(std::time::Duration::from_secs(20))).expect("timeout");
    let mut greeting = [0u8; 18];
    socket.read_exact(&mut greeting).expect("greeting");
    // Fixed newstyle, no zeroes; then NBD_OPT_EXPORT_NAME.
    socket.write_all(&3u32.to_be_bytes()).expect("flags");
    let mut option = b"IHAVEOPT".to_vec();
    option.extend_from_slice(&1u32.to_be_bytes());
    option.extend_from_slice(&(export.len() as u32).to_be_bytes());
    option.extend_from_slice(export.as_bytes());
    socket.write_all(&option).expect("export name");
    let mut export_info = [0u8; 10];
    socket.read_exact(&mut export_info).expect("export opened");
    let mut write = request(1, 1, 1 << 20);
    write.extend(std::iter::repeat_n(0x5c_u8, 1 << 20));
    socket.write_all(&write).expect("write");
    let mut reply = [0u8; 16];
    socket.read_exact(&mut reply).expect("write reply");
    assert_eq!(&reply[4..8], &[0, 0, 0, 0], "the write succeeded");
    socket.write_all(&request(2, 2, 0)).expect("disconnect");
}

/// A script that writes over NBD and rolls back right after the client exits: the client hangs up without waiting
/// for the server, which still has to flush and close the image, so the rollback waits for the client's watcher to go
/// instead of failing with "attached read-write".
#[test]
fn rollback_right_after_an_nbd_client_exits_succeeds() {
    let server = start(Some(ADMIN_PASSWORD));
    let token = login(&server, "admin", ADMIN_PASSWORD);
    create(&server, &token, "vm", &["layering", "exclusive-lock", "object-map", "fast-diff"]);
    let (status, _) =
        call(&server, "POST", "/api/block/image/rbd%2Fvm/snap", Some(&token), Some(json!({"snapshot_name": "s"})));
    assert_eq!(status, 201);
    for round in 0..20 {
        write_and_hang_up(&server, "rbd/vm");
        let (status, answer) = call(&server, "POST", "/api/block/image/rbd%2Fvm/snap/s/rollback", Some(&token), None);
        assert_eq!(status, 201, "round {round}: rollback right after the client hung up: {answer}");
    }
    // The same in a script, with qemu-io and the CLI.
    let qemu_io = tool("qemu-io", "qemu-utils");
    for round in 0..3 {
        let out = Command::new(&qemu_io)
            .args(["-f", "raw", "-c", "write -P 0x5c 0 1M"])
            .arg(nbd_uri(&server, "rbd/vm"))
            .output()
            .expect("qemu-io");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success() && !text.contains("fail"), "round {round}: qemu-io: {text}");
        let rollback = Command::new(env!("CARGO_BIN_EXE_basalt"))
            .arg("--data-dir")
            .arg(server.dir.path())
            .args(["snap", "rollback", "rbd/vm@s"])
            .output()
            .expect("run basalt snap rollback");
        assert!(
            rollback.status.success(),
            "round {round}: rollback after qemu-io exited failed: {}",
            String::from_utf8_lossy(&rollback.stderr)
        );
    }
}

/// qemu-io over TLS with the client credentials in `creds`, as a user would run it.
fn qemu_io_tls(
    server: &Server,
    creds: &std::path::Path,
    export: &str,
    read_only: bool,
    cmds: &[&str],
) -> (bool, String) {
    let (host, port) = server.nbd_addr.rsplit_once(':').expect("host:port");
    let object = format!("tls-creds-x509,id=tls0,endpoint=client,dir={}", creds.display());
    let image =
        format!("driver=nbd,server.type=inet,server.host={host},server.port={port},export={export},tls-creds=tls0");
    let mut cmd = Command::new(tool("qemu-io", "qemu-utils"));
    cmd.args(["--object", &object, "--image-opts"]);
    if read_only {
        cmd.arg("-r");
    }
    for c in cmds {
        cmd.args(["-c", c]);
    }
    let out = cmd.arg(&image).output().expect("qemu-io");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success() && !text.contains("fail"), text)
}

/// nbdinfo over TLS with the client credentials in `creds`: (success, output).
fn nbdinfo_tls(server: &Server, creds: &std::path::Path, args: &[&str], export: &str) -> (bool, String) {
    let uri = format!("nbds://{}/{export}?tls-certificates={}", server.nbd_addr, creds.display());
    let out = Command::new(tool("nbdinfo", "libnbd-bin")).args(args).arg(uri).output().expect("nbdinfo");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// Writes the files of a `POST /api/user/{name}/nbd-certificate` answer into `dir`, as `basalt nbd cert issue` does.
fn save_certificate(answer: &Value, dir: &std::path::Path) {
    std::fs::create_dir_all(dir).expect("credentials dir");
    for (field, file) in
        [("ca_cert", "ca-cert.pem"), ("client_cert", "client-cert.pem"), ("client_key", "client-key.pem")]
    {
        std::fs::write(dir.join(file), answer[field].as_str().expect("PEM text")).expect("write PEM");
    }
}

#[test]
fn nbd_clients_get_their_users_access_with_issued_certificates() {
    let dir = std::sync::Arc::new(tempfile::tempdir().expect("temp dir"));
    let server = start_with(dir.clone(), Some(ADMIN_PASSWORD), &["--nbd-tls", "auto"]);
    let token = login(&server, "admin", ADMIN_PASSWORD);
    create(&server, &token, "vm", &["layering", "exclusive-lock"]);
    for (user, role) in [("reader", "read-only"), ("pools", "pool-manager")] {
        let body = json!({"username": user, "password": "long-password-1", "roles": [role]});
        let (status, answer) = call(&server, "POST", "/api/user", Some(&token), Some(body));
        assert_eq!(status, 201, "{answer}");
    }
    // The CA was made at the first start, its key the owner's only.
    let ca_key = dir.path().join("nbd-tls/ca-key.pem");
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&ca_key).expect("CA key").permissions());
    assert_eq!(mode & 0o777, 0o600);

    // The administrator's files through the CLI (on the local socket), as qemu and nbdinfo take them.
    let creds = dir.path().join("creds");
    let admin_dir = creds.join("admin");
    let out = Command::new(env!("CARGO_BIN_EXE_basalt"))
        .arg("--data-dir")
        .arg(dir.path())
        .args(["nbd", "cert", "issue", "admin", "--out"])
        .arg(&admin_dir)
        .output()
        .expect("basalt nbd cert issue");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let key_mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(admin_dir.join("client-key.pem")).expect("client key").permissions(),
    );
    assert_eq!(key_mode & 0o777, 0o600);
    // A user may fetch their own; only user managers may fetch someone else's.
    let reader_token = login(&server, "reader", "long-password-1");
    let (status, own) = call(&server, "POST", "/api/user/reader/nbd-certificate", Some(&reader_token), None);
    assert_eq!(status, 201, "{own}");
    save_certificate(&own, &creds.join("reader"));
    let (status, _) = call(&server, "POST", "/api/user/admin/nbd-certificate", Some(&reader_token), None);
    assert_eq!(status, 403);
    let (status, _) = call(&server, "POST", "/api/user/nobody/nbd-certificate", Some(&token), None);
    assert_eq!(status, 404);
    let (status, pools) = call(&server, "POST", "/api/user/pools/nbd-certificate", Some(&token), None);
    assert_eq!(status, 201, "{pools}");
    save_certificate(&pools, &creds.join("pools"));

    // The administrator reads and writes.
    let (ok, text) = qemu_io_tls(&server, &admin_dir, "rbd/vm", false, &["write -P 0x3c 0 64k", "read -P 0x3c 0 64k"]);
    assert!(ok, "admin over TLS: {text}");
    // While a certificate's user has the image open, its watcher names the user.
    let (host, port) = server.nbd_addr.rsplit_once(':').expect("host:port");
    let object = format!("tls-creds-x509,id=tls0,endpoint=client,dir={}", admin_dir.display());
    let image =
        format!("driver=nbd,server.type=inet,server.host={host},server.port={port},export=rbd/vm,tls-creds=tls0");
    let mut holder = Command::new(tool("qemu-io", "qemu-utils"))
        .args(["--object", &object, "--image-opts", &image])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("qemu-io");
    let mut watchers = Value::Null;
    for _ in 0..200 {
        let (_, image) = call(&server, "GET", "/api/block/image/rbd%2Fvm", Some(&token), None);
        if image["watchers"].to_string().contains("(user admin)") {
            watchers = image["watchers"].clone();
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    drop(holder.stdin.take());
    let _ = holder.wait();
    assert!(watchers.to_string().contains("(user admin)"), "no watcher named the user: {watchers}");
    // A read-only user reads, and gets a read-only export: writes fail.
    let reader_dir = creds.join("reader");
    let (ok, text) = qemu_io_tls(&server, &reader_dir, "rbd/vm", true, &["read -P 0x3c 0 64k"]);
    assert!(ok, "reader reads: {text}");
    let (ok, text) = qemu_io_tls(&server, &reader_dir, "rbd/vm", false, &["write -P 0x99 0 4k"]);
    assert!(!ok, "a read-only user wrote: {text}");
    let (ok, info) = nbdinfo_tls(&server, &reader_dir, &[], "rbd/vm");
    assert!(ok && info.contains("is_read_only: true"), "{info}");
    let (ok, listed) = nbdinfo_tls(&server, &reader_dir, &["--list"], "");
    assert!(ok && listed.contains("rbd/vm"), "{listed}");
    // A user without access to images sees no export and opens none.
    let pools_dir = creds.join("pools");
    let (_, listed) = nbdinfo_tls(&server, &pools_dir, &["--list"], "");
    assert!(!listed.contains("rbd/vm"), "{listed}");
    let (ok, text) = nbdinfo_tls(&server, &pools_dir, &[], "rbd/vm");
    assert!(!ok, "a user without rbd-image access opened an export: {text}");
    // A client without a certificate does not get past TLS.
    let anonymous = creds.join("anonymous");
    std::fs::create_dir_all(&anonymous).expect("dir");
    std::fs::copy(admin_dir.join("ca-cert.pem"), anonymous.join("ca-cert.pem")).expect("copy CA");
    let (ok, text) = nbdinfo_tls(&server, &anonymous, &[], "rbd/vm");
    assert!(!ok, "a client without a certificate got in: {text}");
    // A disabled user is refused at once, whatever their certificate.
    let (status, _) = call(&server, "PUT", "/api/user/reader", Some(&token), Some(json!({"enabled": false})));
    assert_eq!(status, 200);
    let (ok, text) = qemu_io_tls(&server, &reader_dir, "rbd/vm", true, &["read 0 4k"]);
    assert!(!ok, "a disabled user read: {text}");
    // The local socket stays the administrator's.
    let local = Command::new(tool("qemu-io", "qemu-utils"))
        .args(["-f", "raw", "-c", "write -P 0x5a 0 4k"])
        .arg(nbd_uri(&server, "rbd/vm"))
        .output()
        .expect("qemu-io");
    assert!(local.status.success(), "{}", String::from_utf8_lossy(&local.stderr));
}

/// Starts `basalt serve` with NBD on all addresses and `extra` options; returns the child and its data dir.
fn serve_on_all_addresses(extra: &[&str]) -> (std::process::Child, tempfile::TempDir, u16) {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let nbd_port = std::net::TcpListener::bind("0.0.0.0:0").expect("bind").local_addr().expect("addr").port();
    let child = Command::new(env!("CARGO_BIN_EXE_basalt"))
        .args(["serve", "--data-dir"])
        .arg(dir.path().join("data"))
        .args(["--listen", &format!("127.0.0.1:{port}"), "--nbd-listen", &format!("0.0.0.0:{nbd_port}")])
        .args(extra)
        .env("BASALT_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env_remove("BASALT_CEPH_CONF")
        .env_remove("BASALT_NBD_TLS")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start basalt serve");
    (child, dir, nbd_port)
}

/// Waits until the NBD port answers with the NBD greeting (or the server exits).
fn nbd_answers(child: &mut std::process::Child, port: u16) -> bool {
    use std::io::Read;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        if let Ok(mut socket) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            let mut magic = [0u8; 8];
            if socket.read_exact(&mut magic).is_ok() && &magic == b"NBDMAGIC" {
                return true;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    false
}

#[test]
fn serve_refuses_nbd_off_loopback_without_client_certificates_unless_told() {
    let (child, _dir, _) = serve_on_all_addresses(&[]);
    let out = child.wait_with_output().expect("serve exits");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "serve started an open NBD listener on 0.0.0.0");
    assert!(stderr.contains("refusing to serve NBD") && stderr.contains("--nbd-insecure-no-auth"), "{stderr}");
    // TLS without client certificates is still open to anyone.
    let (child, _dir, _) = serve_on_all_addresses(&["--nbd-tls-cert", "/nonexistent/x.pem", "--nbd-tls-key", "/x"]);
    let out = child.wait_with_output().expect("serve exits");
    assert!(!out.status.success());

    for extra in [&["--nbd-insecure-no-auth"][..], &["--nbd-tls", "auto"][..]] {
        let (mut child, _dir, port) = serve_on_all_addresses(extra);
        let answered = nbd_answers(&mut child, port);
        let _ = child.kill();
        let out = child.wait_with_output().expect("serve exits");
        assert!(answered, "serve {extra:?} did not serve NBD: {}", String::from_utf8_lossy(&out.stderr));
    }
}
