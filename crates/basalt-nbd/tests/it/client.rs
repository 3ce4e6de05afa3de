//! A minimal synchronous NBD client speaking raw bytes, for what real clients never send: errors, garbage,
//! pipelining, and checks of exact reply chunks.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use basalt_nbd::proto::*;

/// One structured reply chunk.
#[derive(Debug, Clone)]
pub struct Chunk {
    pub flags: u16,
    pub kind: u16,
    pub cookie: u64,
    pub payload: Vec<u8>,
}

/// A reply header: simple or one structured chunk.
#[derive(Debug, Clone)]
pub enum Reply {
    Simple { cookie: u64, error: u32 },
    Chunk(Chunk),
}

/// What `NBD_OPT_GO` returned.
#[derive(Debug, Clone)]
pub struct Opened {
    pub size: u64,
    pub flags: u16,
    pub block_sizes: Option<(u32, u32, u32)>,
}

#[derive(Debug)]
pub struct RawClient {
    pub stream: TcpStream,
}

impl RawClient {
    /// Connects without speaking.
    pub fn connect(port: u16) -> RawClient {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(20))).expect("read timeout");
        stream.set_nodelay(true).expect("nodelay");
        RawClient { stream }
    }

    /// Connects from `source` (any 127.x address on loopback) without speaking.
    pub fn connect_from(source: std::net::Ipv4Addr, port: u16) -> RawClient {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
        socket.bind(&std::net::SocketAddr::from((source, 0)).into()).expect("bind the source address");
        socket.connect(&std::net::SocketAddr::from(([127, 0, 0, 1], port)).into()).expect("connect");
        let stream: TcpStream = socket.into();
        stream.set_read_timeout(Some(Duration::from_secs(20))).expect("read timeout");
        stream.set_nodelay(true).expect("nodelay");
        RawClient { stream }
    }

    /// Connects and completes the greeting with fixed newstyle and no zeroes.
    pub fn handshake(port: u16) -> RawClient {
        RawClient::connect(port).greet()
    }

    /// Completes the greeting on a connected client.
    pub fn greet(self) -> RawClient {
        let mut client = self;
        let greeting = client.read_exact(18);
        assert_eq!(&greeting[0..16], b"NBDMAGICIHAVEOPT");
        assert_eq!(u16::from_be_bytes([greeting[16], greeting[17]]), FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES);
        client.send(&(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES).to_be_bytes());
        client
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
    }

    pub fn read_exact(&mut self, len: usize) -> Vec<u8> {
        let mut buf = vec![0u8; len];
        self.stream.read_exact(&mut buf).expect("read from server");
        buf
    }

    /// Returns true when the server closed the connection (EOF or reset) within the read timeout.
    pub fn closed_by_server(&mut self) -> bool {
        let mut buf = [0u8; 4096];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(err) if err.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
        }
    }

    pub fn send_option(&mut self, option: u32, data: &[u8]) {
        let mut out = Vec::new();
        out.extend_from_slice(&IHAVEOPT.to_be_bytes());
        out.extend_from_slice(&option.to_be_bytes());
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        out.extend_from_slice(data);
        self.send(&out);
    }

    /// Reads one option reply: (option, reply type, data).
    pub fn option_reply(&mut self) -> (u32, u32, Vec<u8>) {
        let header = self.read_exact(20);
        assert_eq!(&header[0..8], &OPTION_REPLY_MAGIC.to_be_bytes());
        let option = u32::from_be_bytes(header[8..12].try_into().expect("4 bytes"));
        let reply = u32::from_be_bytes(header[12..16].try_into().expect("4 bytes"));
        let len = u32::from_be_bytes(header[16..20].try_into().expect("4 bytes")) as usize;
        (option, reply, self.read_exact(len))
    }

    /// Negotiates structured replies.
    pub fn structured(&mut self) {
        self.send_option(OPT_STRUCTURED_REPLY, &[]);
        assert_eq!(self.option_reply().1, REP_ACK);
    }

    /// Selects meta contexts; returns (id, name) of each context the server selected.
    pub fn set_meta_context(&mut self, export: &str, queries: &[&str]) -> Vec<(u32, String)> {
        let mut data = Vec::new();
        data.extend_from_slice(&(export.len() as u32).to_be_bytes());
        data.extend_from_slice(export.as_bytes());
        data.extend_from_slice(&(queries.len() as u32).to_be_bytes());
        for query in queries {
            data.extend_from_slice(&(query.len() as u32).to_be_bytes());
            data.extend_from_slice(query.as_bytes());
        }
        self.send_option(OPT_SET_META_CONTEXT, &data);
        let mut contexts = Vec::new();
        loop {
            let (_, reply, data) = self.option_reply();
            match reply {
                REP_META_CONTEXT => contexts.push((
                    u32::from_be_bytes(data[0..4].try_into().expect("4 bytes")),
                    String::from_utf8(data[4..].to_vec()).expect("utf-8"),
                )),
                REP_ACK => return contexts,
                other => panic!("unexpected reply {other:#x} to SET_META_CONTEXT: {}", String::from_utf8_lossy(&data)),
            }
        }
    }

    /// Sends `NBD_OPT_GO` (or INFO); returns the export information, or the error reply type and message.
    pub fn go(&mut self, option: u32, export: &str) -> Result<Opened, (u32, String)> {
        let mut data = Vec::new();
        data.extend_from_slice(&(export.len() as u32).to_be_bytes());
        data.extend_from_slice(export.as_bytes());
        data.extend_from_slice(&1u16.to_be_bytes());
        data.extend_from_slice(&INFO_BLOCK_SIZE.to_be_bytes());
        self.send_option(option, &data);
        let mut opened = Opened { size: 0, flags: 0, block_sizes: None };
        loop {
            let (replied_to, reply, data) = self.option_reply();
            assert_eq!(replied_to, option);
            match reply {
                REP_INFO => match u16::from_be_bytes([data[0], data[1]]) {
                    INFO_EXPORT => {
                        opened.size = u64::from_be_bytes(data[2..10].try_into().expect("8 bytes"));
                        opened.flags = u16::from_be_bytes([data[10], data[11]]);
                    }
                    INFO_BLOCK_SIZE => {
                        let word = |at: usize| u32::from_be_bytes(data[at..at + 4].try_into().expect("4 bytes"));
                        opened.block_sizes = Some((word(2), word(6), word(10)));
                    }
                    _ => {}
                },
                REP_ACK => return Ok(opened),
                error => return Err((error, String::from_utf8_lossy(&data).into_owned())),
            }
        }
    }

    /// Negotiates structured replies and `base:allocation`, then opens the export.
    pub fn open(port: u16, export: &str) -> (RawClient, Opened) {
        RawClient::handshake(port).open_export(export)
    }

    /// [`RawClient::open`] on a client that has greeted.
    pub fn open_export(self, export: &str) -> (RawClient, Opened) {
        let mut client = self;
        client.structured();
        assert_eq!(client.set_meta_context(export, &[BASE_ALLOCATION]).len(), 1);
        let opened = client.go(OPT_GO, export).unwrap_or_else(|(reply, message)| {
            panic!("GO {export} refused with {reply:#x}: {message}");
        });
        (client, opened)
    }

    pub fn request(&mut self, flags: u16, command: u16, cookie: u64, offset: u64, length: u32, payload: &[u8]) {
        let mut out = Vec::with_capacity(REQUEST_HEADER_LEN + payload.len());
        out.extend_from_slice(&REQUEST_MAGIC.to_be_bytes());
        out.extend_from_slice(&flags.to_be_bytes());
        out.extend_from_slice(&command.to_be_bytes());
        out.extend_from_slice(&cookie.to_be_bytes());
        out.extend_from_slice(&offset.to_be_bytes());
        out.extend_from_slice(&length.to_be_bytes());
        out.extend_from_slice(payload);
        self.send(&out);
    }

    /// Reads one reply header (and a structured chunk's payload; simple read data is left to the caller).
    pub fn reply(&mut self) -> Reply {
        let magic = u32::from_be_bytes(self.read_exact(4).try_into().expect("4 bytes"));
        match magic {
            SIMPLE_REPLY_MAGIC => {
                let rest = self.read_exact(12);
                Reply::Simple {
                    error: u32::from_be_bytes(rest[0..4].try_into().expect("4 bytes")),
                    cookie: u64::from_be_bytes(rest[4..12].try_into().expect("8 bytes")),
                }
            }
            STRUCTURED_REPLY_MAGIC => {
                let rest = self.read_exact(16);
                let len = u32::from_be_bytes(rest[12..16].try_into().expect("4 bytes")) as usize;
                Reply::Chunk(Chunk {
                    flags: u16::from_be_bytes([rest[0], rest[1]]),
                    kind: u16::from_be_bytes([rest[2], rest[3]]),
                    cookie: u64::from_be_bytes(rest[4..12].try_into().expect("8 bytes")),
                    payload: self.read_exact(len),
                })
            }
            other => panic!("bad reply magic {other:#x}"),
        }
    }

    /// Reads the chunks of one structured reply up to the one marked done.
    pub fn structured_reply(&mut self, cookie: u64) -> Vec<Chunk> {
        let mut chunks = Vec::new();
        loop {
            match self.reply() {
                Reply::Chunk(chunk) => {
                    assert_eq!(chunk.cookie, cookie);
                    let done = chunk.flags & REPLY_FLAG_DONE != 0;
                    chunks.push(chunk);
                    if done {
                        return chunks;
                    }
                }
                simple => panic!("expected a structured reply, got {simple:?}"),
            }
        }
    }

    /// Writes and waits for the reply; returns the NBD error (0 on success).
    pub fn write(&mut self, offset: u64, data: &[u8], flags: u16) -> u32 {
        self.request(flags, CMD_WRITE, 1, offset, data.len() as u32, data);
        self.status(1)
    }

    /// Waits for a payload-free reply and returns its error (0 on success), simple or structured.
    pub fn status(&mut self, cookie: u64) -> u32 {
        match self.reply() {
            Reply::Simple { cookie: got, error } => {
                assert_eq!(got, cookie);
                error
            }
            Reply::Chunk(chunk) => {
                assert_eq!(chunk.cookie, cookie);
                assert_eq!(chunk.flags & REPLY_FLAG_DONE, REPLY_FLAG_DONE);
                match chunk.kind {
                    REPLY_TYPE_ERROR => u32::from_be_bytes(chunk.payload[0..4].try_into().expect("4 bytes")),
                    REPLY_TYPE_NONE => 0,
                    other => panic!("unexpected chunk type {other}"),
                }
            }
        }
    }

    /// Reads with structured replies; returns the data reassembled and the number of hole chunks.
    pub fn read(&mut self, offset: u64, length: u32, flags: u16) -> Result<(Vec<u8>, usize), (u32, String)> {
        self.request(flags, CMD_READ, 2, offset, length, &[]);
        let chunks = self.structured_reply(2);
        let mut data = vec![0xeeu8; length as usize];
        let mut covered = 0u64;
        let mut holes = 0usize;
        for chunk in chunks {
            let at = |payload: &[u8]| u64::from_be_bytes(payload[0..8].try_into().expect("8 bytes"));
            match chunk.kind {
                REPLY_TYPE_OFFSET_DATA => {
                    let start = (at(&chunk.payload) - offset) as usize;
                    let body = &chunk.payload[8..];
                    data[start..start + body.len()].copy_from_slice(body);
                    covered += body.len() as u64;
                }
                REPLY_TYPE_OFFSET_HOLE => {
                    let start = (at(&chunk.payload) - offset) as usize;
                    let len = u32::from_be_bytes(chunk.payload[8..12].try_into().expect("4 bytes")) as usize;
                    data[start..start + len].fill(0);
                    covered += len as u64;
                    holes += 1;
                }
                REPLY_TYPE_NONE => {}
                REPLY_TYPE_ERROR => {
                    let error = u32::from_be_bytes(chunk.payload[0..4].try_into().expect("4 bytes"));
                    let len = u16::from_be_bytes([chunk.payload[4], chunk.payload[5]]) as usize;
                    return Err((error, String::from_utf8_lossy(&chunk.payload[6..6 + len]).into_owned()));
                }
                other => panic!("unexpected chunk type {other}"),
            }
        }
        assert_eq!(covered, u64::from(length), "content chunks cover the request exactly");
        Ok((data, holes))
    }

    /// Asks for block status; returns (length, flags) descriptors.
    pub fn block_status(&mut self, offset: u64, length: u32, flags: u16) -> Vec<(u32, u32)> {
        self.request(flags, CMD_BLOCK_STATUS, 3, offset, length, &[]);
        let chunks = self.structured_reply(3);
        assert_eq!(chunks.len(), 1);
        assert_eq!(chunks[0].kind, REPLY_TYPE_BLOCK_STATUS, "{:?}", chunks[0]);
        chunks[0].payload[4..]
            .chunks(8)
            .map(|d| {
                (
                    u32::from_be_bytes(d[0..4].try_into().expect("4 bytes")),
                    u32::from_be_bytes(d[4..8].try_into().expect("4 bytes")),
                )
            })
            .collect()
    }

    /// Sends `NBD_CMD_DISC` and expects the server to close.
    pub fn disconnect(mut self) {
        self.request(0, CMD_DISC, 9, 0, 0, &[]);
        assert!(self.closed_by_server(), "the server closes after NBD_CMD_DISC");
    }
}
