//! What one client address can take from the others: connection slots (silent sockets) and reply buffers (reads
//! whose replies are never read). Loopback has a whole /8, so 127.0.0.2 is "another client".

use std::net::Ipv4Addr;
use std::time::Duration;

use basalt_core::Backend;
use basalt_nbd::proto::CMD_READ;

use crate::TestServer;
use crate::client::RawClient;

const MIB: u64 = 1 << 20;
const ATTACKER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
const OTHER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

#[test]
fn silent_sockets_from_one_address_leave_room_for_others_and_are_cut_after_the_handshake_timeout() {
    let limits = basalt_nbd::Limits {
        max_connections: 16,
        max_connections_per_address: 4,
        handshake_timeout: Duration::from_secs(3),
        ..basalt_nbd::Limits::default()
    };
    let server = TestServer::start_with_limits(limits);
    server.create_image("rbd/img", MIB);
    // More silent sockets than the server has slots.
    let mut silent: Vec<RawClient> = (0..64).map(|_| RawClient::connect_from(ATTACKER, server.port)).collect();
    let (mut other, _) = RawClient::connect_from(OTHER, server.port).greet().open_export("rbd/img");
    let (data, _) = other.read(0, 4096, 0).expect("a client from another address is served");
    assert_eq!(data, vec![0; 4096]);
    // Every silent socket is closed: those over the address's limit at once without a greeting, the others once
    // the handshake timeout passes.
    let mut greeted = 0;
    for (index, socket) in silent.iter_mut().enumerate() {
        let mut greeting = [0u8; 8];
        if std::io::Read::read_exact(&mut socket.stream, &mut greeting).is_ok() {
            assert_eq!(&greeting, b"NBDMAGIC");
            greeted += 1;
        }
        assert!(socket.closed_by_server(), "silent socket {index} is closed by the server");
    }
    assert_eq!(greeted, 4, "only the address's limit of connections got as far as the greeting");
    // The address has its slots back (each as soon as its connection task has finished).
    let mut greeted_again = false;
    for _ in 0..100 {
        let mut client = RawClient::connect_from(ATTACKER, server.port);
        let mut greeting = [0u8; 8];
        if std::io::Read::read_exact(&mut client.stream, &mut greeting).is_ok() {
            greeted_again = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(greeted_again, "the address is served again once its connections are gone");
}

#[test]
fn a_client_that_never_reads_its_replies_stalls_only_itself() {
    let limits = basalt_nbd::Limits {
        buffer_bytes_per_connection: 64 << 20,
        buffer_bytes_per_address: 64 << 20,
        buffer_bytes_total: 128 << 20,
        ..basalt_nbd::Limits::default()
    };
    let server = TestServer::start_with_limits(limits);
    server.create_shared_image("rbd/big", 64 * MIB);
    {
        // Data, not holes, so each reply really is 32 MiB.
        let spec = basalt_core::ImageSpec::parse("rbd/big").expect("spec");
        let io = server.engine.open(&spec, &basalt_core::OpenTarget::Head, "test").expect("open");
        io.write(0, &vec![0xab; (32 * MIB) as usize], basalt_core::Durability::Buffered).expect("write");
    }
    // Four connections from one address queue 32 MiB reads and never read a reply: together they would hold far
    // more than the server's whole budget.
    let mut stalled = Vec::new();
    for _ in 0..4 {
        let (mut client, _) = RawClient::connect_from(ATTACKER, server.port).greet().open_export("rbd/big");
        for cookie in 0..16u64 {
            client.request(0, CMD_READ, cookie, 0, (32 * MIB) as u32, &[]);
        }
        stalled.push(client);
    }
    // Give the server time to fill what it will.
    std::thread::sleep(Duration::from_secs(1));
    let (mut other, _) = RawClient::connect_from(OTHER, server.port).greet().open_export("rbd/big");
    for round in 0..4u64 {
        let (data, _) = other.read(round * MIB, 64 << 10, 0).expect("another address is still served");
        assert_eq!(data.len(), 64 << 10);
    }
    drop(stalled);
}

/// A shutdown cuts a connection whose client stopped reading once the drain timeout passes, and nothing of it
/// lives on: the workers that were writing its replies give up, so the image is released and can be removed.
#[test]
fn a_shutdown_releases_the_image_of_a_client_that_stopped_reading() {
    let limits = basalt_nbd::Limits { drain_timeout: Duration::from_secs(2), ..basalt_nbd::Limits::default() };
    let mut server = TestServer::start_with_limits(limits);
    server.create_shared_image("rbd/big", 64 * MIB);
    let spec = basalt_core::ImageSpec::parse("rbd/big").expect("spec");
    {
        let io = server.engine.open(&spec, &basalt_core::OpenTarget::Head, "test").expect("open");
        io.write(0, &vec![0xab; (32 * MIB) as usize], basalt_core::Durability::Buffered).expect("write");
    }
    let (mut client, _) = RawClient::connect_from(ATTACKER, server.port).greet().open_export("rbd/big");
    for cookie in 0..8u64 {
        client.request(0, CMD_READ, cookie, 0, (32 * MIB) as u32, &[]);
    }
    // Replies fill the socket's buffers and the workers writing them wait.
    std::thread::sleep(Duration::from_secs(1));
    server.stop();
    let mut removed = None;
    for _ in 0..100 {
        match server.engine.image_remove(&spec, &basalt_core::Progress::new()) {
            Ok(()) => {
                removed = Some(Ok(()));
                break;
            }
            Err(err) => removed = Some(Err(err)),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(matches!(removed, Some(Ok(()))), "the image is still held after the shutdown: {removed:?}");
    drop(client);
}
