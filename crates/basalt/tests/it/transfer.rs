//! `export`, `import`, `export-diff` and `import-diff` end to end against a real server: byte-exact round trips
//! through files and through stdin/stdout, sparse exports and thin imports, a snapshot chain carried to a copy by
//! incremental diffs, and refusals that leave the image as it was and say why in one line.

use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Output;

use basalt_core::rbd_diff::{DiffRecord, DiffVersion, DiffWriter};
use serde_json::json;

use super::common::{Server, check_failure};

const MIB: u64 = 1 << 20;

/// Deterministic bytes that are never zero, different for each seed.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    (0..len as u64).map(|i| ((i.wrapping_mul(2_654_435_761).wrapping_add(seed * 97) >> 7) as u8) | 1).collect()
}

/// A raw disk image of 40 MiB + 100 bytes (not a whole number of blocks): data at the start, in the middle at an
/// odd offset and in the partial last block; holes between; and 4 MiB of zeros written out, which an import must
/// leave out as it does holes. Returns the file and its bytes.
fn pattern_image(dir: &Path, name: &str) -> (PathBuf, Vec<u8>) {
    let size = 40 * MIB + 100;
    let mut bytes = vec![0u8; size as usize];
    let path = dir.join(name);
    let file = std::fs::File::create(&path).expect("create image file");
    file.set_len(size).expect("size");
    let regions: [(u64, Vec<u8>); 4] = [
        (0, pattern(5000, 1)),
        (8 * MIB + 123, pattern(MIB as usize, 2)),
        (16 * MIB, vec![0; 4 * MIB as usize]),
        (40 * MIB, pattern(100, 3)),
    ];
    for (offset, data) in regions {
        file.write_all_at(&data, offset).expect("write");
        bytes[offset as usize..offset as usize + data.len()].copy_from_slice(&data);
    }
    (path, bytes)
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// Runs a command that must succeed and returns its raw stdout.
fn ok_bytes(out: Output, args: &[&str]) -> Vec<u8> {
    assert!(out.status.success(), "basalt {args:?} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// The image (or snapshot) as exported to stdout.
fn export_bytes(s: &Server, spec: &str) -> Vec<u8> {
    let args = ["export", "--no-progress", spec, "-"];
    ok_bytes(s.try_run(&args), &args)
}

fn used_bytes(s: &Server, spec: &str) -> u64 {
    let du = s.json(&["du", "--format", "json", spec]);
    du[0]["used_bytes"].as_u64().unwrap_or_else(|| panic!("no used_bytes in {du}"))
}

/// An rbd diff v1 stream of `records`.
pub(crate) fn encode(records: &[DiffRecord]) -> Vec<u8> {
    let mut writer = DiffWriter::new(Vec::new(), DiffVersion::V1).expect("banner");
    for record in records {
        writer.write_record(record).expect("record");
    }
    writer.finish().expect("end")
}

/// Applies a stream's size, data and zero records to an in-memory image, as the server should.
pub(crate) fn apply(image: &mut Vec<u8>, records: &[DiffRecord]) {
    for record in records {
        match record {
            DiffRecord::Size(size) => image.resize(*size as usize, 0),
            DiffRecord::Data { offset, data } => {
                let end = *offset as usize + data.len();
                if image.len() < end {
                    image.resize(end, 0);
                }
                image[*offset as usize..end].copy_from_slice(data);
            }
            DiffRecord::Zero { offset, length } => image[*offset as usize..(*offset + *length) as usize].fill(0),
            _ => {}
        }
    }
}

#[test]
fn import_and_export_round_trip_thin_and_sparse() {
    let s = Server::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let (input, bytes) = pattern_image(dir.path(), "disk.img");
    let size = bytes.len() as u64;

    // A file: the image has the file's size, and only the blocks with data are stored.
    s.ok(&["import", "--no-progress", path_str(&input), "rbd/disk"]);
    assert_eq!(s.json(&["info", "--format", "json", "disk"])["size"], size);
    let used = used_bytes(&s, "disk");
    assert!(used < 2 * MIB, "the import is not thin: {used} bytes used");

    // To a file: byte-equal, and sparse.
    let output = dir.path().join("out.img");
    s.ok(&["export", "--no-progress", "disk", path_str(&output)]);
    assert!(std::fs::read(&output).expect("read export") == bytes, "the exported file differs");
    let allocated = std::fs::metadata(&output).expect("stat").blocks() * 512;
    assert!(allocated < 4 * MIB, "the export is not sparse: {allocated} of {size} bytes allocated");

    // To stdout: every byte, in order.
    assert!(export_bytes(&s, "rbd/disk") == bytes, "the export to stdout differs");

    // From stdin, with and without an estimate; the size is found at the end of the input.
    let args = ["import", "-", "rbd/from-stdin"];
    ok_bytes(s.run_with_stdin(&args, &bytes), &args);
    let args = ["import", "--estimated-size", "1M", "-", "--dest", "estimated"];
    ok_bytes(s.run_with_stdin(&args, &bytes), &args);
    for name in ["from-stdin", "estimated"] {
        assert_eq!(s.json(&["info", "--format", "json", name])["size"], size, "{name}");
        assert!(export_bytes(&s, name) == bytes, "{name} differs");
        assert!(used_bytes(&s, name) < 2 * MIB, "{name} is not thin");
    }

    // Layout options apply to the new image; without a destination it is named after the file.
    s.ok(&["import", "--object-size", "1M", "--image-feature", "layering", path_str(&input), "small-objects"]);
    let info = s.ok(&["info", "small-objects"]);
    assert!(info.contains("\torder 20 (1 MiB objects)\n") && info.contains("\tfeatures: layering\n"), "{info}");
    s.ok(&["import", path_str(&input)]);
    assert!(s.ok(&["ls"]).lines().any(|l| l == "disk.img"));

    // Snapshots export as they were.
    s.ok(&["snap", "create", "disk@before"]);
    let args = ["import-diff", "-", "disk"];
    let overwrite = encode(&[DiffRecord::Size(size), DiffRecord::Data { offset: 0, data: vec![0xee; 4096] }]);
    ok_bytes(s.run_with_stdin(&args, &overwrite), &args);
    assert!(export_bytes(&s, "disk@before") == bytes);
    let by_option = dir.path().join("snap.img");
    s.ok(&["export", "--snap", "before", "--image", "disk", path_str(&by_option)]);
    assert!(std::fs::read(&by_option).expect("read") == bytes);
    assert_eq!(&export_bytes(&s, "disk")[..4097], &[&[0xee; 4096][..], &bytes[4096..4097]].concat()[..]);

    // A clone exports with what it reads through from its parent.
    s.ok(&["snap", "protect", "disk@before"]);
    s.ok(&["clone", "disk@before", "linked"]);
    assert!(export_bytes(&s, "linked") == bytes, "the clone's export misses its parent's data");

    // An empty file is an empty image.
    let empty = dir.path().join("empty");
    std::fs::write(&empty, b"").expect("empty file");
    s.ok(&["import", path_str(&empty), "empty"]);
    assert!(export_bytes(&s, "empty").is_empty());

    // Refusals: an existing file is never overwritten, a missing image creates no file, an existing image is not
    // replaced (nor removed as if the import had created it).
    std::fs::write(&output, b"keep me").expect("write");
    s.fails(&["export", "disk", path_str(&output)], 17, "File exists");
    assert_eq!(std::fs::read(&output).expect("read"), b"keep me");
    let missing = dir.path().join("missing.img");
    s.fails(&["export", "nothere", path_str(&missing)], 2, "nothere");
    assert!(!missing.exists());
    s.fails(&["import", path_str(&input), "disk"], 17, "exists");
    assert!(export_bytes(&s, "disk@before") == bytes, "a refused import changed the image");
    s.fails(&["import", path_str(&dir.path().join("nofile")), "x"], 2, "nofile");
    s.fails(&["import", path_str(dir.path()), "x"], 21, "directory");
    s.fails(&["import", "-", "x@snap"], 22, "snapshot");
    s.fails(&["import", "-"], 22, "destination image name was not specified");
    s.fails(&["export", "disk"], 22, "path was not specified");
    s.fails(&["import", "--sparse-size", "3K", path_str(&input), "x"], 22, "power of two");
    assert!(!s.ok(&["ls"]).lines().any(|l| l == "x"));
}

#[test]
fn diffs_carry_a_snapshot_chain_to_a_copy() {
    let s = Server::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let file = |name: &str| dir.path().join(name);

    // Build src with hand-written streams: s1, then s2 (grown, partly zeroed), then head changes.
    let first = [
        DiffRecord::ToSnap("s1".into()),
        DiffRecord::Size(8 * MIB),
        DiffRecord::Data { offset: 0, data: pattern(MIB as usize, 1) },
        DiffRecord::Data { offset: 5 * MIB + 7, data: pattern(3000, 2) },
    ];
    let second = [
        DiffRecord::FromSnap("s1".into()),
        DiffRecord::ToSnap("s2".into()),
        DiffRecord::Size(12 * MIB),
        DiffRecord::Data { offset: MIB / 2, data: pattern(MIB as usize, 3) },
        DiffRecord::Zero { offset: 5 * MIB, length: 4096 },
        DiffRecord::Data { offset: 10 * MIB, data: pattern(4096, 4) },
    ];
    let third = [
        DiffRecord::FromSnap("s2".into()),
        DiffRecord::Size(12 * MIB),
        DiffRecord::Zero { offset: 0, length: 64 << 10 },
        DiffRecord::Data { offset: 11 * MIB + 1, data: pattern(100, 5) },
    ];
    let mut model = Vec::new();
    let mut expected = Vec::new();
    for records in [&first[..], &second[..], &third[..]] {
        apply(&mut model, records);
        expected.push(model.clone());
    }
    s.ok(&["create", "--size", "1M", "src"]);
    std::fs::write(file("first.diff"), encode(&first)).expect("write");
    s.ok(&["import-diff", "--no-progress", path_str(&file("first.diff")), "src"]);
    let args = ["import-diff", "-", "rbd/src"];
    ok_bytes(s.run_with_stdin(&args, &encode(&second)), &args);
    std::fs::write(file("third.diff"), encode(&third)).expect("write");
    s.ok(&["import-diff", "--path", path_str(&file("third.diff")), "--image", "src", "-p", "rbd"]);
    for (spec, model) in [("src@s1", &expected[0]), ("src@s2", &expected[1]), ("src", &expected[2])] {
        assert!(export_bytes(&s, spec) == *model, "{spec} differs from the model");
    }

    // Export the chain: full to s1, s1 to s2, s2 to the head (to stdout, and to a file: the same bytes).
    s.ok(&["export-diff", "src@s1", path_str(&file("1.diff"))]);
    s.ok(&["export-diff", "--from-snap", "s1", "src@s2", path_str(&file("2.diff"))]);
    let args = ["export-diff", "--from-snap", "s2", "src", "-"];
    let head_diff = ok_bytes(s.try_run(&args), &args);
    s.ok(&["export-diff", "--from-snap", "s2", "--image", "src", path_str(&file("3.diff"))]);
    assert!(std::fs::read(file("3.diff")).expect("read") == head_diff);
    assert!(head_diff.starts_with(b"rbd diff v1\n") && head_diff.ends_with(b"e"));

    // Apply it to a copy: files, then stdin; each snapshot and the head come out equal.
    s.ok(&["create", "--size", "1M", "dst"]);
    s.ok(&["import-diff", path_str(&file("1.diff")), "dst"]);
    let second_diff = std::fs::read(file("2.diff")).expect("read");
    let args = ["import-diff", "-", "dst"];
    ok_bytes(s.run_with_stdin(&args, &second_diff), &args);
    s.ok(&["import-diff", path_str(&file("3.diff")), "dst"]);
    for (src, dst) in [("src@s1", "dst@s1"), ("src@s2", "dst@s2"), ("src", "dst")] {
        assert!(export_bytes(&s, src) == export_bytes(&s, dst), "{src} and {dst} differ");
    }
    let snaps = s.json(&["snap", "ls", "--format", "json", "dst"]);
    let names: Vec<&str> = snaps.as_array().expect("list").iter().filter_map(|x| x["name"].as_str()).collect();
    assert_eq!(names, ["s1", "s2"]);
    // qemu-img agrees that the heads are equal, when it is there.
    let (a, b) = (file("src.raw"), file("dst.raw"));
    s.ok(&["export", "src", path_str(&a)]);
    s.ok(&["export", "dst", path_str(&b)]);
    if let Ok(out) = std::process::Command::new("qemu-img")
        .args(["compare", "-q", "-f", "raw", "-F", "raw"])
        .arg(&a)
        .arg(&b)
        .output()
    {
        assert!(out.status.success(), "qemu-img compare: {}", String::from_utf8_lossy(&out.stdout));
    }

    // The same diff again: its end snapshot exists now, and nothing changes.
    let before = export_bytes(&s, "dst");
    s.fails(&["import-diff", path_str(&file("2.diff")), "dst"], 17, "already exists");
    assert!(export_bytes(&s, "dst") == before);
}

/// Checks a refused import-diff: non-zero exit, one line `basalt: ...` naming the cause.
fn refused(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "accepted: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "not one line: {stderr}");
    assert!(stderr.starts_with("basalt: ") && stderr.contains(needle), "expected '{needle}' in: {stderr}");
}

#[test]
fn bad_streams_are_refused_in_one_line_and_change_nothing() {
    let s = Server::start();
    let dir = tempfile::tempdir().expect("temp dir");
    s.ok(&["create", "--size", "4M", "img"]);
    let base = encode(&[
        DiffRecord::ToSnap("s1".into()),
        DiffRecord::Size(4 * MIB),
        DiffRecord::Data { offset: 4096, data: pattern(8192, 9) },
    ]);
    let args = ["import-diff", "-", "img"];
    ok_bytes(s.run_with_stdin(&args, &base), &args);
    let image = export_bytes(&s, "img");
    let snaps = s.ok(&["snap", "ls", "img"]);

    // A stream from a snapshot the image does not have, with megabytes of data behind the refused header: the
    // server answers while the client is still sending, over the socket and over TCP.
    let mut missing_start = vec![DiffRecord::FromSnap("nope".into()), DiffRecord::Size(64 * MIB)];
    missing_start.extend((0..48).map(|i| DiffRecord::Data { offset: i * MIB, data: vec![7; MIB as usize] }));
    let missing_start = encode(&missing_start);
    let to_exists = encode(&[DiffRecord::ToSnap("s1".into()), DiffRecord::Size(MIB)]);
    let cases: [(&str, &[u8], &str); 4] = [
        ("garbage.diff", b"this is not an rbd diff stream", "rbd diff"),
        ("short.diff", b"rbd diff", "truncated"),
        ("nope.diff", &missing_start, "nope"),
        ("exists.diff", &to_exists, "already exists"),
    ];
    let url = s.url();
    let token = s.admin_token();
    for (name, stream, needle) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, stream).expect("write");
        refused(&s.try_run(&["import-diff", path_str(&path), "img"]), needle);
        refused(&s.run_with_stdin(&["import-diff", "-", "img"], stream), needle);
        let over_http = s
            .command()
            .args(["--server", &url, "import-diff", path_str(&path), "img"])
            .env("BASALT_TOKEN", &token)
            .output()
            .expect("run basalt");
        refused(&over_http, needle);
        assert!(export_bytes(&s, "img") == image, "{name} changed the image");
        assert_eq!(s.ok(&["snap", "ls", "img"]), snaps, "{name} changed the snapshots");
    }
    // Exit codes are the errno of the cause, as in rbd.
    let garbage = dir.path().join("garbage.diff");
    check_failure(&s.try_run(&["import-diff", path_str(&garbage), "img"]), &["import-diff"], 22, "rbd diff");
    let exists = dir.path().join("exists.diff");
    check_failure(&s.try_run(&["import-diff", path_str(&exists), "img"]), &["import-diff"], 17, "s1");
    check_failure(&s.try_run(&["import-diff", path_str(&exists), "nothere"]), &["import-diff"], 2, "nothere");
    s.fails(&["export-diff", "--from-snap", "nope", "img", path_str(&dir.path().join("x.diff"))], 2, "nope");
    assert!(!dir.path().join("x.diff").exists());
}

#[test]
fn a_failed_import_removes_the_image_it_created() {
    let s = Server::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let (input, _) = pattern_image(dir.path(), "disk.img");
    // A user who may create and remove images but not write them: the image is created, the data refused.
    let admin = s.admin_token();
    let role = json!({"name": "creator", "scopes_permissions": {"rbd-image": ["read", "create", "delete"]}});
    assert_eq!(s.http("POST", "/api/role", &admin, Some(&role)).0, 201);
    let user = json!({"username": "creator", "password": "creator-secret-1", "roles": ["creator"]});
    assert_eq!(s.http("POST", "/api/user", &admin, Some(&user)).0, 201);
    let url = s.url();
    let token = s.ok(&["login", "--server", &url, "--user", "creator", "--password", "creator-secret-1", "--print"]);
    let run = |args: &[&str], stdin: Option<&[u8]>| {
        let mut cmd = s.command();
        cmd.args(["--server", &url]).args(args).env("BASALT_TOKEN", token.trim());
        match stdin {
            None => cmd.output().expect("run basalt"),
            Some(bytes) => {
                use std::io::Write;
                let mut child = cmd
                    .stdin(std::process::Stdio::piped())
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .expect("run basalt");
                let mut pipe = child.stdin.take().expect("stdin");
                let bytes = bytes.to_vec();
                let writer = std::thread::spawn(move || {
                    let _ = pipe.write_all(&bytes);
                });
                let out = child.wait_with_output().expect("wait");
                let _ = writer.join();
                out
            }
        }
    };
    refused(&run(&["import", path_str(&input), "denied"], None), "permission");
    refused(&run(&["import", "-", "denied2"], Some(&[1u8; 10_000])), "permission");
    let listing = s.ok(&["ls"]);
    assert!(!listing.contains("denied"), "the half-imported image stayed: {listing}");
}
