//! The server driven by the clients users run: qemu-img, qemu-io, nbdinfo and nbdcopy, over TCP and the Unix
//! socket.

use crate::client::RawClient;
use crate::tools::{self, qemu_io, run, run_ok};
use crate::{TestServer, pattern};

const MIB: u64 = 1 << 20;

#[test]
fn qemu_img_convert_round_trips_and_compares_equal() {
    let server = TestServer::start();
    server.create_image("rbd/img", 16 * MIB);
    let source = server.dir().join("pattern.raw");
    let data = pattern(16 * MIB as usize, 1);
    std::fs::write(&source, &data).expect("write pattern");
    let source = source.to_str().expect("utf-8 path");

    // In over TCP (-n: the export exists), out over the Unix socket.
    run_ok("qemu-img", &["convert", "-n", "-f", "raw", "-O", "raw", source, &server.tcp_uri("rbd/img")]);
    let back = server.dir().join("back.raw");
    let back = back.to_str().expect("utf-8 path");
    run_ok("qemu-img", &["convert", "-f", "raw", "-O", "raw", &server.unix_uri("rbd/img"), back]);
    assert!(std::fs::read(back).expect("read back") == data, "the image reads back what was written");
    run_ok("qemu-img", &["compare", "-f", "raw", "-F", "raw", source, &server.tcp_uri("rbd/img")]);

    // A difference is noticed, so the comparison above means something.
    qemu_io(&server.tcp_uri("rbd/img"), false, &["write -P 0x01 15M 512"]);
    let output = run("qemu-img", &["compare", "-f", "raw", "-F", "raw", source, &server.tcp_uri("rbd/img")]);
    assert_eq!(output.status.code(), Some(1), "{}", tools::describe(&output));

    let info = run_ok("qemu-img", &["info", "-f", "raw", &server.tcp_uri("rbd/img")]);
    assert!(info.contains("16 MiB"), "{info}");
}

#[test]
fn qemu_io_writes_reads_unaligned_discards_and_zeroes() {
    let server = TestServer::start();
    server.create_image("rbd/img", 8 * MIB);
    let uri = server.tcp_uri("rbd/img");
    qemu_io(
        &uri,
        false,
        &[
            "write -P 0xab 0 64k",
            "read -P 0xab 0 64k",
            // Unaligned writes inside and across blocks.
            "write -P 0x11 4095 3",
            "read -P 0xab 0 4095",
            "read -P 0x11 4095 3",
            "read -P 0xab 4098 1000",
            "write -P 0x22 100001 70000",
            "read -P 0x22 100001 70000",
            "read -P 0 170001 1000",
            // FUA write and flush.
            "write -f -P 0x33 1M 128k",
            "flush",
            "read -P 0x33 1M 128k",
            // Discard and zero.
            "discard 16k 32k",
            "read -P 0 16k 32k",
            "read -P 0xab 48k 16k",
            "write -z 1M 4k",
            "read -P 0 1M 4k",
            "write -z -u 1052672 60k",
            "read -P 0 1M 64k",
            "read -P 0x33 1114112 64k",
            "aio_write -P 0x44 2M 64k",
            "aio_write -P 0x45 3M 64k",
            "aio_flush",
            "read -P 0x44 2M 64k",
            "read -P 0x45 3M 64k",
        ],
    );
    // A new connection over the Unix socket sees the same data.
    qemu_io(&server.unix_uri("rbd/img"), true, &["read -P 0x11 4095 3", "read -P 0x22 100001 70000"]);
}

#[test]
fn nbdinfo_lists_exports_describes_them_and_maps_holes() {
    let server = TestServer::start();
    server.create_image("rbd/img", 8 * MIB);
    server.create_namespace("rbd/ns");
    server.create_image("rbd/ns/img2", MIB);
    server.create_pool("p2");
    server.create_image("p2/img3", 2 * MIB);

    let listing = run_ok("nbdinfo", &["--list", &format!("nbd://127.0.0.1:{}", server.port)]);
    for export in ["rbd/img", "rbd/ns/img2", "p2/img3"] {
        assert!(listing.contains(&format!("export=\"{export}\"")), "{export} missing from\n{listing}");
    }

    qemu_io(&server.tcp_uri("rbd/img"), false, &["write -P 0x5a 1M 64k"]);
    server.snapshot("rbd/img@s1");
    let map = run_ok("nbdinfo", &["--map", &server.tcp_uri("rbd/img")]);
    let extents: Vec<(u64, u64, u32)> = map
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let number = |i: usize| fields[i].parse::<u64>().unwrap_or_else(|_| panic!("bad map line {line:?}"));
            (number(0), number(1), number(2) as u32)
        })
        .collect();
    assert_eq!(extents, [(0, MIB, 3), (MIB, 64 << 10, 0), (MIB + (64 << 10), 7 * MIB - (64 << 10), 3)], "{map}");

    let head = run_ok("nbdinfo", &[&server.unix_uri("rbd/img")]);
    for expected in [
        "export-size: 8388608",
        "is_read_only: false",
        "can_multi_conn: false",
        "can_fast_zero: true",
        "can_df: true",
        "can_cache: true",
        "can_fua: true",
        "block_size_minimum: 1",
        "block_size_preferred: 4096",
        "block_size_maximum: 33554432",
    ] {
        assert!(head.contains(expected), "{expected:?} missing from\n{head}");
    }
    let snapshot = run_ok("nbdinfo", &[&server.tcp_uri("rbd/img@s1")]);
    for expected in ["is_read_only: true", "can_multi_conn: true", "can_trim: false"] {
        assert!(snapshot.contains(expected), "{expected:?} missing from\n{snapshot}");
    }
    let missing = run("nbdinfo", &[&server.tcp_uri("rbd/nope")]);
    assert!(!missing.status.success());
    assert!(tools::describe(&missing).contains("rbd/nope"), "{}", tools::describe(&missing));
}

#[test]
fn nbdcopy_copies_in_and_out_including_multi_conn() {
    let server = TestServer::start();
    server.create_image("rbd/img", 16 * MIB);
    server.create_shared_image("rbd/shared", 16 * MIB);
    let source = server.dir().join("pattern.raw");
    let data = pattern(16 * MIB as usize, 2);
    std::fs::write(&source, &data).expect("write pattern");
    let source = source.to_str().expect("utf-8 path");

    // The exclusive-lock image is one writer: nbdcopy sees no multi-conn and uses one connection.
    run_ok("nbdcopy", &["--flush", source, &server.tcp_uri("rbd/img")]);
    // Without exclusive-lock, multi-conn is advertised and nbdcopy writes over several connections.
    run_ok("nbdcopy", &["--flush", "--connections=4", source, &server.unix_uri("rbd/shared")]);
    server.snapshot("rbd/img@s1");
    for (i, uri) in
        [server.tcp_uri("rbd/img"), server.unix_uri("rbd/shared"), server.tcp_uri("rbd/img@s1")].iter().enumerate()
    {
        let back = server.dir().join(format!("back{i}.raw"));
        let back = back.to_str().expect("utf-8 path");
        run_ok("nbdcopy", &[uri, back]);
        assert!(std::fs::read(back).expect("read back") == data, "{uri} reads back the pattern");
    }
    // Image to image over NBD on both ends.
    server.create_image("rbd/copy", 16 * MIB);
    run_ok("nbdcopy", &["--flush", &server.tcp_uri("rbd/img@s1"), &server.tcp_uri("rbd/copy")]);
    run_ok("qemu-img", &["compare", "-f", "raw", "-F", "raw", source, &server.tcp_uri("rbd/copy")]);
}

#[test]
fn snapshot_export_reads_old_data_while_the_head_is_written() {
    let server = TestServer::start();
    server.create_image("rbd/img", 8 * MIB);
    qemu_io(&server.tcp_uri("rbd/img"), false, &["write -P 0xaa 0 2M"]);
    server.snapshot("rbd/img@s1");

    // A writer holds the head (and its lock) while qemu-io reads the snapshot and the writer keeps writing.
    let (mut writer, _) = RawClient::open(server.port, "rbd/img");
    let chunk = vec![0xbbu8; 256 << 10];
    for step in 0..4u64 {
        assert_eq!(writer.write(step * (256 << 10), &chunk, 0), 0);
        qemu_io(&server.tcp_uri("rbd/img@s1"), true, &["read -P 0xaa 0 2M", "read -P 0 2M 6M"]);
    }
    // qemu-io on the head is refused while the writer holds it, with the reason.
    let refused = run("qemu-io", &["-f", "raw", "-c", "read 0 4k", &server.tcp_uri("rbd/img")]);
    let text = tools::describe(&refused);
    assert!(!refused.status.success(), "{text}");
    assert!(text.contains("locked"), "the lock holder is reported:\n{text}");
    writer.disconnect();

    qemu_io(&server.tcp_uri("rbd/img"), false, &["read -P 0xbb 0 1M", "read -P 0xaa 1M 1M"]);
    qemu_io(&server.unix_uri("rbd/img@s1"), true, &["read -P 0xaa 0 2M"]);
}
