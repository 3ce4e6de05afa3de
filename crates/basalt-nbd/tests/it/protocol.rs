//! Protocol behaviour real clients never show: option errors with messages, exact reply chunks, error codes,
//! pipelining, garbage input and shutdown, checked with a raw client.

use std::collections::HashMap;
use std::net::Shutdown;

use basalt_core::{Backend, ImageSpec};
use basalt_nbd::proto::*;

use crate::TestServer;
use crate::client::{RawClient, Reply};
use crate::tools;

const MIB: u64 = 1 << 20;

fn info_data(name: &str) -> Vec<u8> {
    let mut data = Vec::new();
    data.extend_from_slice(&(name.len() as u32).to_be_bytes());
    data.extend_from_slice(name.as_bytes());
    data.extend_from_slice(&0u16.to_be_bytes());
    data
}

#[test]
fn options_are_answered_and_refusals_carry_messages() {
    let server = TestServer::start();
    server.create_image("rbd/img", 8 * MIB);
    server.create_namespace("rbd/ns");
    server.create_image("rbd/ns/img2", MIB);
    server.create_pool("p2");
    server.create_image("p2/img3", MIB);

    let mut client = RawClient::handshake(server.port);
    client.send_option(OPT_LIST, &[]);
    let mut listed = Vec::new();
    loop {
        let (option, reply, data) = client.option_reply();
        assert_eq!(option, OPT_LIST);
        if reply == REP_ACK {
            break;
        }
        assert_eq!(reply, REP_SERVER);
        let len = u32::from_be_bytes(data[0..4].try_into().expect("4 bytes")) as usize;
        listed.push(String::from_utf8(data[4..4 + len].to_vec()).expect("utf-8"));
    }
    listed.sort();
    assert_eq!(listed, ["p2/img3", "rbd/img", "rbd/ns/img2"]);

    // Unknown options and TLS are refused, and negotiation goes on.
    for option in [99, OPT_STARTTLS, OPT_EXTENDED_HEADERS] {
        client.send_option(option, &[]);
        let (replied, reply, message) = client.option_reply();
        assert_eq!((replied, reply), (option, REP_ERR_UNSUP));
        assert!(!message.is_empty());
    }
    client.send_option(OPT_LIST, b"x");
    assert_eq!(client.option_reply().1, REP_ERR_INVALID);

    // Meta contexts need structured replies first.
    client.send_option(OPT_LIST_META_CONTEXT, &[0, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(client.option_reply().1, REP_ERR_INVALID);

    // Unknown and malformed exports get ERR_UNKNOWN with a readable message.
    let (reply, message) = client.go(OPT_INFO, "rbd/missing").expect_err("missing image");
    assert_eq!(reply, REP_ERR_UNKNOWN);
    assert!(message.contains("rbd/missing"), "{message}");
    let (reply, message) = client.go(OPT_INFO, "").expect_err("default export");
    assert_eq!(reply, REP_ERR_UNKNOWN);
    assert!(message.contains("no default export"), "{message}");
    let (reply, _) = client.go(OPT_GO, "rbd/img@nosnap").expect_err("missing snapshot");
    assert_eq!(reply, REP_ERR_UNKNOWN);
    let (reply, message) = client.go(OPT_GO, "a/b/c/d").expect_err("bad name");
    assert_eq!(reply, REP_ERR_UNKNOWN);
    assert!(message.contains("pool[/namespace]/image"), "{message}");
    let mut truncated = info_data("rbd/img");
    truncated.pop();
    client.send_option(OPT_GO, &truncated);
    assert_eq!(client.option_reply().1, REP_ERR_INVALID);

    // INFO describes without opening: no watcher is registered.
    let info = client.go(OPT_INFO, "rbd/img").expect("info");
    assert_eq!(info.size, 8 * MIB);
    assert_eq!(info.block_sizes, Some((1, 4096, 32 << 20)));
    let expected = TFLAG_HAS_FLAGS
        | TFLAG_SEND_FLUSH
        | TFLAG_SEND_FUA
        | TFLAG_SEND_TRIM
        | TFLAG_SEND_WRITE_ZEROES
        | TFLAG_SEND_CACHE
        | TFLAG_SEND_FAST_ZERO;
    assert_eq!(info.flags, expected, "no DF without structured replies, no multi-conn with exclusive-lock");
    let spec = ImageSpec::parse("rbd/img").expect("spec");
    assert!(server.engine.image_watchers(&spec).expect("watchers").is_empty());

    client.structured();
    let mut data = Vec::new();
    data.extend_from_slice(&7u32.to_be_bytes());
    data.extend_from_slice(b"rbd/img");
    data.extend_from_slice(&1u32.to_be_bytes());
    data.extend_from_slice(&5u32.to_be_bytes());
    data.extend_from_slice(b"base:");
    client.send_option(OPT_LIST_META_CONTEXT, &data);
    let (_, reply, context) = client.option_reply();
    assert_eq!(reply, REP_META_CONTEXT);
    assert_eq!(&context[4..], BASE_ALLOCATION.as_bytes());
    assert_eq!(client.option_reply().1, REP_ACK);
    assert!(client.set_meta_context("rbd/img", &["qemu:dirty-bitmap:x"]).is_empty());

    client.send_option(OPT_ABORT, &[]);
    assert_eq!(client.option_reply().1, REP_ACK);
    assert!(client.closed_by_server());
}

#[test]
fn legacy_export_name_enters_transmission_or_hangs_up() {
    let server = TestServer::start();
    server.create_image("rbd/img", MIB);

    let mut client = RawClient::handshake(server.port);
    client.send_option(OPT_EXPORT_NAME, b"rbd/img");
    // NO_ZEROES was negotiated: 8 bytes of size and 2 of flags, nothing more.
    let reply = client.read_exact(10);
    assert_eq!(u64::from_be_bytes(reply[0..8].try_into().expect("8 bytes")), MIB);
    assert_eq!(client.write(4096, &[7u8; 512], 0), 0);
    // Without structured replies a read is a simple reply followed by the data.
    client.request(0, CMD_READ, 5, 4096, 512, &[]);
    assert!(matches!(client.reply(), Reply::Simple { cookie: 5, error: 0 }));
    assert_eq!(client.read_exact(512), vec![7u8; 512]);
    client.disconnect();

    // The legacy option has no error reply: an unknown export closes the connection.
    let mut client = RawClient::handshake(server.port);
    client.send_option(OPT_EXPORT_NAME, b"rbd/missing");
    assert!(client.closed_by_server());

    // Without NO_ZEROES the reply carries 124 zero bytes.
    let mut client = RawClient::connect(server.port);
    let _greeting = client.read_exact(18);
    client.send(&FLAG_C_FIXED_NEWSTYLE.to_be_bytes());
    client.send_option(OPT_EXPORT_NAME, b"rbd/img");
    let reply = client.read_exact(134);
    assert!(reply[10..].iter().all(|b| *b == 0));
    client.disconnect();
}

#[test]
fn transmission_answers_reads_holes_block_status_and_errors() {
    let server = TestServer::start();
    server.create_image("rbd/img", 8 * MIB);
    let (mut client, opened) = RawClient::open(server.port, "rbd/img");
    assert_eq!(opened.size, 8 * MIB);
    assert_ne!(opened.flags & TFLAG_SEND_DF, 0);
    assert_eq!(opened.flags & (TFLAG_READ_ONLY | TFLAG_CAN_MULTI_CONN), 0);

    let data: Vec<u8> = (0..4096u32).map(|i| (i * 7) as u8).collect();
    assert_eq!(client.write(MIB, &data, CMD_FLAG_FUA), 0);

    // Unwritten ranges come back as hole chunks, written ones as data.
    let (read, holes) = client.read(0, 2 * MIB as u32, 0).expect("read");
    assert_eq!(holes, 2, "holes before and after the written block");
    assert!(read[..MIB as usize].iter().all(|b| *b == 0));
    assert_eq!(&read[MIB as usize..MIB as usize + 4096], &data[..]);
    assert!(read[MIB as usize + 4096..].iter().all(|b| *b == 0));
    let (_, holes) = client.read(2 * MIB, 4096, 0).expect("read of a hole");
    assert_eq!(holes, 1);
    // Don't-fragment: one data chunk with the zeros spelled out.
    client.request(CMD_FLAG_DF, CMD_READ, 2, 0, 2 * MIB as u32, &[]);
    let chunks = client.structured_reply(2);
    let content: Vec<_> = chunks.iter().filter(|c| c.kind != REPLY_TYPE_NONE).collect();
    assert_eq!(content.len(), 1);
    assert_eq!(content[0].kind, REPLY_TYPE_OFFSET_DATA);
    // Unaligned reads straddling data and hole.
    let (read, _) = client.read(MIB - 3, 10, 0).expect("unaligned read");
    assert_eq!(&read[..3], &[0, 0, 0]);
    assert_eq!(&read[3..], &data[..7]);

    assert_eq!(
        client.block_status(0, 8 * MIB as u32, 0),
        [(MIB as u32, STATE_HOLE | STATE_ZERO), (4096, 0), ((7 * MIB - 4096) as u32, STATE_HOLE | STATE_ZERO)]
    );
    assert_eq!(client.block_status(0, 8 * MIB as u32, CMD_FLAG_REQ_ONE), [(MIB as u32, 3)]);

    // Out of range: EINVAL for reads and block status, ENOSPC for writes, as the spec asks.
    assert_eq!(client.read(8 * MIB - 1, 2, 0).expect_err("beyond the end").0, EINVAL);
    assert_eq!(client.write(8 * MIB, &[1], 0), ENOSPC);
    client.request(0, CMD_BLOCK_STATUS, 4, 8 * MIB, 1, &[]);
    assert_eq!(client.status(4), EINVAL);
    client.request(0, CMD_TRIM, 4, 8 * MIB - 1, 2, &[]);
    assert_eq!(client.status(4), ENOSPC);
    // An oversized read is refused without closing the connection.
    let (error, message) = client.read(0, (32 << 20) + 1, 0).expect_err("too large");
    assert_eq!(error, EINVAL);
    assert!(message.contains("maximum"), "{message}");
    // An unknown command and invalid flags: EINVAL, and the connection goes on.
    client.request(0, 42, 6, 0, 0, &[]);
    assert_eq!(client.status(6), EINVAL);
    client.request(CMD_FLAG_REQ_ONE, CMD_WRITE, 7, 0, 4, &[1, 2, 3, 4]);
    assert_eq!(client.status(7), EINVAL);

    // Zeroing: NO_HOLE with FAST_ZERO cannot be fast; FAST_ZERO alone can.
    client.request(CMD_FLAG_NO_HOLE | CMD_FLAG_FAST_ZERO, CMD_WRITE_ZEROES, 8, MIB, 4096, &[]);
    assert_eq!(client.status(8), ENOTSUP);
    client.request(CMD_FLAG_FAST_ZERO, CMD_WRITE_ZEROES, 8, MIB, 2048, &[]);
    assert_eq!(client.status(8), 0);
    let (read, _) = client.read(MIB, 4096, 0).expect("read after zeroing");
    assert!(read[..2048].iter().all(|b| *b == 0));
    assert_eq!(&read[2048..], &data[2048..]);
    client.request(CMD_FLAG_NO_HOLE, CMD_WRITE_ZEROES, 8, 4 * MIB, 8192, &[]);
    assert_eq!(client.status(8), 0);
    assert_eq!(client.block_status(4 * MIB, 8192, 0), [(8192, 0)], "NO_HOLE keeps the range allocated");
    client.request(0, CMD_TRIM, 9, 4 * MIB, 8192, &[]);
    assert_eq!(client.status(9), 0);
    assert_eq!(client.block_status(4 * MIB, 8192, 0), [(8192, STATE_HOLE | STATE_ZERO)]);
    for command in [CMD_FLUSH, CMD_CACHE] {
        client.request(0, command, 10, 0, if command == CMD_CACHE { 4096 } else { 0 }, &[]);
        assert_eq!(client.status(10), 0, "command {command}");
    }
    client.disconnect();
}

#[test]
fn pipelined_requests_are_all_answered_by_cookie() {
    let server = TestServer::start();
    server.create_image("rbd/img", 16 * MIB);
    let (mut client, _) = RawClient::open(server.port, "rbd/img");
    // More requests than the in-flight window, sent before reading any reply.
    let count = 200u64;
    let block = 8192usize;
    for i in 0..count {
        let payload = vec![i as u8; block];
        client.request(0, CMD_WRITE, 1000 + i, i * block as u64, block as u32, &payload);
    }
    let mut answered = HashMap::new();
    for _ in 0..count {
        let cookie = match client.reply() {
            Reply::Simple { cookie, error } => {
                assert_eq!(error, 0);
                cookie
            }
            Reply::Chunk(chunk) => panic!("unexpected chunk {chunk:?}"),
        };
        *answered.entry(cookie).or_insert(0) += 1;
    }
    assert_eq!(answered.len(), count as usize);
    assert!(answered.values().all(|n| *n == 1));
    for i in 0..count {
        client.request(0, CMD_READ, 5000 + i, i * block as u64, block as u32, &[]);
    }
    let mut seen = 0;
    while seen < count {
        let Reply::Chunk(chunk) = client.reply() else { panic!("structured replies were negotiated") };
        let i = chunk.cookie - 5000;
        assert!(i < count);
        if chunk.kind == REPLY_TYPE_OFFSET_DATA {
            assert_eq!(u64::from_be_bytes(chunk.payload[0..8].try_into().expect("8 bytes")), i * block as u64);
            assert!(chunk.payload[8..].iter().all(|b| *b == i as u8));
        }
        if chunk.flags & REPLY_FLAG_DONE != 0 {
            seen += 1;
        }
    }
    client.disconnect();
}

/// Overwrites of blocks the image holds are answered on the reader's thread, the others by workers; pipelined
/// together with partial, FUA and past-the-end writes and flushes, every request gets one right answer and the image
/// reads back as written.
#[test]
fn pipelined_overwrites_mixed_with_other_writes_and_flushes_read_back() {
    let server = TestServer::start();
    server.create_image("rbd/img", 4 * MIB);
    let block = 4096usize;
    let blocks = 256u64;
    let (mut client, _) = RawClient::open(server.port, "rbd/img");
    let mut model = vec![0u8; blocks as usize * block];
    client.request(0, CMD_WRITE, 1, 0, model.len() as u32, &vec![0x11; model.len()]);
    assert!(matches!(client.reply(), Reply::Simple { cookie: 1, error: 0 }));
    model.fill(0x11);
    let mut expected = HashMap::new();
    let mut cookie = 100u64;
    for round in 0..4u64 {
        for b in 0..blocks {
            cookie += 1;
            let fill = (round * 7 + b % 200 + 20) as u8;
            let at = b as usize * block;
            match (b + round) % 16 {
                // Part of a block, and a FUA overwrite: both go to a worker.
                3 => {
                    client.request(0, CMD_WRITE, cookie, at as u64 + 100, 100, &[fill; 100]);
                    model[at + 100..at + 200].fill(fill);
                }
                7 => {
                    client.request(CMD_FLAG_FUA, CMD_WRITE, cookie, at as u64, block as u32, &vec![fill; block]);
                    model[at..at + block].fill(fill);
                }
                11 => client.request(0, CMD_FLUSH, cookie, 0, 0, &[]),
                _ => {
                    client.request(0, CMD_WRITE, cookie, at as u64, block as u32, &vec![fill; block]);
                    model[at..at + block].fill(fill);
                }
            }
            expected.insert(cookie, 0);
        }
        cookie += 1;
        client.request(0, CMD_WRITE, cookie, 4 * MIB, block as u32, &vec![1; block]);
        expected.insert(cookie, ENOSPC);
        for _ in 0..=blocks {
            match client.reply() {
                Reply::Simple { cookie, error } => {
                    let want = expected.remove(&cookie).unwrap_or_else(|| panic!("cookie {cookie} answered twice"));
                    assert_eq!(error, want, "cookie {cookie}");
                }
                Reply::Chunk(chunk) => {
                    assert_eq!(chunk.kind, REPLY_TYPE_ERROR, "only the write past the end gets a chunk");
                    assert_eq!(expected.remove(&chunk.cookie), Some(ENOSPC), "cookie {}", chunk.cookie);
                }
            }
        }
        assert!(expected.is_empty(), "round {round}: unanswered {expected:?}");
    }
    let read_back = |client: &mut RawClient| {
        let mut image = vec![0u8; model.len()];
        client.request(0, CMD_READ, 9, 0, model.len() as u32, &[]);
        loop {
            let Reply::Chunk(chunk) = client.reply() else { panic!("structured replies were negotiated") };
            if chunk.kind == REPLY_TYPE_OFFSET_DATA {
                let offset = u64::from_be_bytes(chunk.payload[0..8].try_into().expect("8 bytes")) as usize;
                image[offset..offset + chunk.payload.len() - 8].copy_from_slice(&chunk.payload[8..]);
            }
            if chunk.flags & REPLY_FLAG_DONE != 0 {
                return image;
            }
        }
    };
    assert!(read_back(&mut client) == model, "the image reads back as written");
    client.disconnect();
}

#[test]
fn snapshots_are_read_only_and_the_head_has_one_writer() {
    let server = TestServer::start();
    server.create_image("rbd/img", 4 * MIB);
    let (mut writer, _) = RawClient::open(server.port, "rbd/img");
    assert_eq!(writer.write(0, &[0xaa; 4096], CMD_FLAG_FUA), 0);
    server.snapshot("rbd/img@s1");
    assert_eq!(writer.write(0, &[0xbb; 4096], 0), 0);

    // The engine records the writer under its peer address.
    let spec = ImageSpec::parse("rbd/img").expect("spec");
    let watchers = server.engine.image_watchers(&spec).expect("watchers");
    let peer = writer.stream.local_addr().expect("local addr").to_string();
    assert!(watchers.iter().any(|w| w.client == peer && w.writable), "{watchers:?} should name {peer}");

    // A second writer is refused by policy, with the lock holder named.
    let mut second = RawClient::handshake(server.port);
    let (reply, message) = second.go(OPT_GO, "rbd/img").expect_err("the lock is held");
    assert_eq!(reply, REP_ERR_POLICY);
    assert!(message.contains("locked") && message.contains(&peer), "{message}");

    // The snapshot opens beside the writer, read-only, and shows the old data.
    let (mut reader, opened) = RawClient::open(server.port, "rbd/img@s1");
    assert_ne!(opened.flags & TFLAG_READ_ONLY, 0);
    assert_ne!(opened.flags & TFLAG_CAN_MULTI_CONN, 0);
    assert_eq!(opened.flags & (TFLAG_SEND_TRIM | TFLAG_SEND_WRITE_ZEROES), 0);
    assert_eq!(reader.read(0, 4096, 0).expect("snapshot read").0, vec![0xaa; 4096]);
    assert_eq!(writer.read(0, 4096, 0).expect("head read").0, vec![0xbb; 4096]);
    assert_eq!(reader.write(0, &[1], 0), EPERM);
    for command in [CMD_TRIM, CMD_WRITE_ZEROES] {
        reader.request(0, command, 3, 0, 4096, &[]);
        assert_eq!(reader.status(3), EPERM);
    }
    reader.request(0, CMD_FLUSH, 3, 0, 0, &[]);
    assert_eq!(reader.status(3), 0);
    reader.disconnect();

    // Once the writer is gone, the next one gets the image at once.
    writer.disconnect();
    let (mut next, _) = RawClient::open(server.port, "rbd/img");
    assert_eq!(next.read(0, 4096, 0).expect("read").0, vec![0xbb; 4096]);
    next.disconnect();
}

/// A small deterministic generator, so failures reproduce.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

#[test]
fn garbage_closes_only_that_connection() {
    let server = TestServer::start();
    server.create_image("rbd/img", 4 * MIB);
    server.create_image("rbd/other", 4 * MIB);
    let (mut healthy, _) = RawClient::open(server.port, "rbd/img");
    assert_eq!(healthy.write(0, &[0x42; 4096], 0), 0);

    // Garbage in place of the client flags.
    let mut client = RawClient::connect(server.port);
    let _greeting = client.read_exact(18);
    client.send(&[0xff; 64]);
    assert!(client.closed_by_server(), "unknown client flags");

    // Garbage in place of an option.
    let mut client = RawClient::handshake(server.port);
    client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(client.closed_by_server(), "bad option magic");

    // An option longer than any real one.
    let mut client = RawClient::handshake(server.port);
    let mut header = IHAVEOPT.to_be_bytes().to_vec();
    header.extend_from_slice(&OPT_GO.to_be_bytes());
    header.extend_from_slice(&u32::MAX.to_be_bytes());
    client.send(&header);
    assert!(client.closed_by_server(), "oversized option");

    // A write larger than the maximum payload.
    let (mut client, _) = RawClient::open(server.port, "rbd/other");
    client.request(0, CMD_WRITE, 1, 0, (32 << 20) + 1, &[]);
    assert!(client.closed_by_server(), "oversized write");

    // A bad request magic after a good request.
    let (mut client, _) = RawClient::open(server.port, "rbd/other");
    assert_eq!(client.write(0, &[1; 512], 0), 0);
    client.send(&[0u8; 28]);
    assert!(client.closed_by_server(), "bad request magic");

    // Random streams, some starting with a valid request magic, in the handshake and in transmission.
    let mut random = XorShift(0x9e37_79b9_7f4a_7c15);
    for round in 0..40 {
        let len = 1 + (random.next() % 2048) as usize;
        let mut bytes = random.bytes(len);
        if round % 2 == 0 && len >= 4 {
            bytes[0..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
        }
        let mut client = if round % 4 == 3 {
            RawClient::handshake(server.port)
        } else {
            RawClient::open(server.port, "rbd/other").0
        };
        client.send(&bytes);
        // Half-close, so a request waiting for the rest of its payload sees the end of the stream.
        client.stream.shutdown(Shutdown::Write).expect("half-close");
        assert!(client.closed_by_server(), "round {round}: the server closes a garbage connection");
    }

    // The healthy connection, and new ones, are unaffected.
    assert_eq!(healthy.read(0, 4096, 0).expect("read").0, vec![0x42; 4096]);
    assert_eq!(healthy.write(4096, &[0x43; 4096], 0), 0);
    healthy.disconnect();
    tools::qemu_io(&server.tcp_uri("rbd/img"), false, &["read -P 0x42 0 4k", "read -P 0x43 4k 4k"]);
}

#[test]
fn shutdown_ends_connections_after_in_flight_requests() {
    let mut server = TestServer::start();
    server.create_image("rbd/img", 4 * MIB);
    let (mut client, _) = RawClient::open(server.port, "rbd/img");
    assert_eq!(client.write(0, &[0x77; 4096], 0), 0);
    let mut idle = RawClient::handshake(server.port);
    server.stop();
    assert!(client.closed_by_server());
    assert!(idle.closed_by_server());
    // Closing released the image (and flushed it).
    let spec = ImageSpec::parse("rbd/img").expect("spec");
    assert!(server.engine.image_watchers(&spec).expect("watchers").is_empty());
    let io = server.engine.open(&spec, &basalt_core::OpenTarget::Head, "test").expect("reopen");
    let mut buf = vec![0u8; 4096];
    io.read(0, &mut buf).expect("read");
    assert_eq!(buf, vec![0x77; 4096]);
}

#[test]
fn connections_beyond_the_limit_are_closed_at_once() {
    let limits = basalt_nbd::Limits { max_connections: 2, ..basalt_nbd::Limits::default() };
    let server = TestServer::start_with_limits(limits);
    server.create_image("rbd/img", MIB);
    let first = RawClient::handshake(server.port);
    let (mut second, _) = RawClient::open(server.port, "rbd/img");
    let mut third = RawClient::connect(server.port);
    assert!(third.closed_by_server(), "no greeting beyond the limit");
    // A slot frees when a connection ends.
    drop(first);
    let mut retried = None;
    for _ in 0..100 {
        let mut client = RawClient::connect(server.port);
        let mut greeting = [0u8; 8];
        if std::io::Read::read_exact(&mut client.stream, &mut greeting).is_ok() {
            retried = Some(greeting);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(retried.as_ref().map(|g| &g[..]), Some(&b"NBDMAGIC"[..]));
    assert_eq!(second.write(0, &[1; 512], 0), 0);
    second.disconnect();
}

/// Grants everything but panics when asked about image `panics`: a failure of the server's own.
#[derive(Debug)]
struct PanicsOnOne;

impl basalt_nbd::Authorizer for PanicsOnOne {
    fn access(&self, _identity: Option<&str>, image: &ImageSpec) -> basalt_nbd::Access {
        assert_ne!(image.image.as_str(), "panics", "the authorizer failed");
        basalt_nbd::Access::ReadWrite
    }
}

#[test]
fn an_option_the_server_fails_on_gets_an_error_reply_and_negotiation_goes_on() {
    let server = TestServer::start_with_authorizer(std::sync::Arc::new(PanicsOnOne));
    server.create_image("rbd/panics", MIB);
    server.create_image("rbd/fine", MIB);
    let mut client = RawClient::handshake(server.port);
    for option in [OPT_INFO, OPT_GO] {
        let (reply, message) = client.go(option, "rbd/panics").expect_err("the server failed");
        assert_eq!(reply, REP_ERR_PLATFORM, "{message}");
        assert!(
            message.contains("the server failed on this option") && message.contains("the authorizer failed"),
            "{message}"
        );
    }
    // The same connection goes on to open another export.
    let opened = client.go(OPT_GO, "rbd/fine").expect("a later option works");
    assert_eq!(opened.size, MIB);
}
