//! Checksums end to end: a byte flipped in a layer file of a running `basalt serve` is never returned. The export
//! fails, the image is listed degraded, `/metrics` counts the error and `basalt scrub` names the block.

use std::io::{Read, Seek, SeekFrom, Write};

use super::common::{Server, lines};

#[test]
fn a_flipped_byte_fails_the_read_degrades_the_image_is_counted_and_scrubbed() {
    let s = Server::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let source = dir.path().join("src.img");
    let data: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8 + 1).collect();
    std::fs::write(&source, &data).expect("write source");
    s.ok(&["import", source.to_str().expect("utf-8"), "rbd/vm"]);
    let clean = s.ok(&["scrub", "rbd/vm"]);
    assert!(clean.contains("scrubbed 1 image(s): 256 block(s)") && clean.contains("0 damaged"), "{clean}");

    // Damage the image's only layer file in place, under the running server.
    let layers: Vec<_> = std::fs::read_dir(s.data.path().join("layers"))
        .expect("layers dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "layer"))
        .collect();
    assert_eq!(layers.len(), 1, "{layers:?}");
    let mut file = std::fs::OpenOptions::new().read(true).write(true).open(&layers[0]).expect("open layer file");
    let mut byte = [0u8; 1];
    file.seek(SeekFrom::Start(5 * 4096 + 7)).expect("seek");
    file.read_exact(&mut byte).expect("read");
    file.seek(SeekFrom::Start(5 * 4096 + 7)).expect("seek");
    file.write_all(&[byte[0] ^ 1]).expect("flip");
    drop(file);

    // The export fails rather than carry the bad bytes out (it streams: the server breaks off the answer).
    let out_path = dir.path().join("out.img");
    let out = s.try_run(&["export", "rbd/vm", out_path.to_str().expect("utf-8")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "an export of damaged data succeeded");
    // Where the stream breaks decides the wording: a checksum error, or the answer cut off mid-stream.
    let cut = ["checksum", "broke off", "closed in the middle"];
    assert!(cut.iter().any(|w| stderr.contains(w)), "{stderr}");
    assert!(s.log().contains("checksum mismatch in image 'rbd/vm'"), "the server logs the error: {}", s.log());

    // Listed degraded, with the reason.
    let listing = s.ok(&["ls", "-l"]);
    assert!(lines(&listing).iter().any(|l| l.starts_with("vm") && l.ends_with("degraded")), "{listing}");
    let info = s.json(&["info", "--format", "json", "rbd/vm"]);
    assert_eq!(info["status"], "degraded", "{info}");
    assert!(info["status_detail"].as_str().is_some_and(|d| d.contains("checksum error")), "{info}");

    // Counted in /metrics.
    let text = metrics_text(&s);
    assert!(
        text.lines().any(|l| l.starts_with("basalt_checksum_errors_total{pool=\"rbd\",namespace=\"\",image=\"vm\"} ")
            && !l.ends_with(" 0")),
        "{text}"
    );

    // Scrub names the block, for the image and for the whole store, and fails.
    s.fails(&["scrub", "rbd/vm"], 1, "1 damaged block(s)");
    let out = s.try_run(&["scrub", "--format", "json"]);
    assert_eq!(out.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("scrub json");
    assert_eq!(json["errors"].as_array().map(Vec::len), Some(1), "{json}");
    assert_eq!(json["errors"][0]["image_spec"], "rbd/vm");
    assert_eq!(json["errors"][0]["view"], "head");
    assert_eq!(json["errors"][0]["offset"], 5 * 4096);
}

/// The journal's counters reach `/metrics`: an import flushes (journal syncs), a snapshot commits metadata (a
/// checkpoint), and an overwrite of imported data in place first makes a dirty-object record durable.
#[test]
fn the_journal_counters_are_exported() {
    let s = Server::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let source = dir.path().join("src.img");
    std::fs::write(&source, vec![7u8; 1 << 20]).expect("write source");
    s.ok(&["import", source.to_str().expect("utf-8"), "rbd/vm"]);
    // An overwrite in place of the imported data, over NBD, with a flush.
    let uri = format!("nbd+unix:///rbd/vm?socket={}", s.data.path().join("nbd.sock").display());
    let out = std::process::Command::new("qemu-io")
        .args(["-f", "raw", "-c", "write -P 0x11 0 64k", "-c", "flush", &uri])
        .output()
        .expect("qemu-io (apt-get install -y qemu-utils)");
    assert!(out.status.success(), "qemu-io: {}", String::from_utf8_lossy(&out.stderr));
    s.ok(&["snap", "create", "rbd/vm@s1"]);
    let text = metrics_text(&s);
    let value = |name: &str| -> f64 {
        let line =
            text.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("{name}: {text}"));
        line.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{line}"))
    };
    assert!(value("basalt_journal_syncs_total") >= 1.0, "{text}");
    assert!(value("basalt_checkpoints_total") >= 1.0, "{text}");
    assert!(value("basalt_journal_dirty_records_total") >= 1.0, "{text}");
    assert!(text.contains("# TYPE basalt_journal_dirty_records_total counter"), "{text}");
    // The server raised its soft open-file limit to the hard one it inherited from this process, and keeps half of
    // that for layer files.
    let mut files = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into a struct on this stack frame.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut files) }, 0);
    assert_eq!(value("basalt_layer_files_limit"), (files.rlim_max / 2).max(64) as f64, "{text}");
    assert!(value("basalt_layer_files_open") <= value("basalt_layer_files_limit"), "{text}");
    assert!(text.contains("# TYPE basalt_layer_files_open gauge"), "{text}");
}

/// `/metrics` as Prometheus reads it: one plain HTTP GET with the administrator's token.
fn metrics_text(s: &Server) -> String {
    let token = s.admin_token();
    let addr = s.url().trim_start_matches("http://").trim_end_matches('/').to_owned();
    let mut stream = std::net::TcpStream::connect(&addr).expect("connect");
    let request =
        format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAuthorization: Bearer {token}\r\n\r\n");
    stream.write_all(request.as_bytes()).expect("send");
    let mut raw = String::new();
    stream.read_to_string(&mut raw).expect("answer");
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    raw
}
