//! The kernel's NBD generic-netlink interface (`include/uapi/linux/nbd-netlink.h`), written out by hand: resolve the
//! `nbd` family, connect a device with sockets the kernel takes over, reconfigure it with new sockets after a
//! connection died, disconnect it, ask its status, and listen for dead links on the `nbd_mc_group` multicast group.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

const NETLINK_GENERIC: libc::c_int = 16;
const GENL_ID_CTRL: u16 = 0x10;
const CTRL_CMD_GETFAMILY: u8 = 3;
const CTRL_ATTR_FAMILY_ID: u16 = 1;
const CTRL_ATTR_FAMILY_NAME: u16 = 2;
const CTRL_ATTR_MCAST_GROUPS: u16 = 7;
const CTRL_ATTR_MCAST_GRP_NAME: u16 = 1;
const CTRL_ATTR_MCAST_GRP_ID: u16 = 2;

const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLA_F_NESTED: u16 = 1 << 15;
const SOL_NETLINK: libc::c_int = 270;
const NETLINK_ADD_MEMBERSHIP: libc::c_int = 1;

/// NBD commands.
pub const NBD_CMD_CONNECT: u8 = 1;
/// Disconnect a device.
pub const NBD_CMD_DISCONNECT: u8 = 2;
/// Give a device new sockets (or timeouts).
pub const NBD_CMD_RECONFIGURE: u8 = 3;
/// Multicast: a connection of a device died.
pub const NBD_CMD_LINK_DEAD: u8 = 4;
const NBD_CMD_STATUS: u8 = 5;

const NBD_ATTR_INDEX: u16 = 1;
const NBD_ATTR_SIZE_BYTES: u16 = 2;
const NBD_ATTR_BLOCK_SIZE_BYTES: u16 = 3;
const NBD_ATTR_TIMEOUT: u16 = 4;
const NBD_ATTR_SERVER_FLAGS: u16 = 5;
const NBD_ATTR_CLIENT_FLAGS: u16 = 6;
const NBD_ATTR_SOCKETS: u16 = 7;
const NBD_ATTR_DEAD_CONN_TIMEOUT: u16 = 8;
const NBD_ATTR_DEVICE_LIST: u16 = 9;
const NBD_ATTR_BACKEND_IDENTIFIER: u16 = 10;
const NBD_DEVICE_ITEM: u16 = 1;
const NBD_DEVICE_INDEX: u16 = 1;
const NBD_DEVICE_CONNECTED: u16 = 2;
const NBD_SOCK_ITEM: u16 = 1;
const NBD_SOCK_FD: u16 = 1;

/// The kernel frees the device's configuration when it is disconnected.
pub const NBD_CFLAG_DESTROY_ON_DISCONNECT: u64 = 1;

/// An open generic-netlink socket with the `nbd` family resolved.
#[derive(Debug)]
pub struct Nbd {
    fd: OwnedFd,
    family: u16,
    mcast_group: Option<u32>,
    seq: u32,
}

/// Why a netlink call failed: the errno and the kernel's extended message, if any.
#[derive(Debug)]
pub struct NlError {
    /// The positive errno.
    pub errno: i32,
    /// What failed.
    pub what: String,
}

impl std::fmt::Display for NlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.what, io::Error::from_raw_os_error(self.errno))
    }
}

impl std::error::Error for NlError {}

/// What CONNECT needs.
#[derive(Debug, Clone)]
pub struct ConnectRequest {
    /// The export's size.
    pub size_bytes: u64,
    /// The logical block size.
    pub block_size: u64,
    /// The server's transmission flags (`NBD_FLAG_*`), read-only added when the map is read-only.
    pub server_flags: u64,
    /// Seconds before a request is resent on another (or a reconnected) connection.
    pub io_timeout: u64,
    /// Seconds I/O waits for a dead connection to be replaced before failing.
    pub dead_conn_timeout: u64,
    /// Shown in `/sys/block/nbdX/backend`, and checked on reconfigure.
    pub backend: String,
}

/// One device in a status answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceStatus {
    /// The `nbdX` index.
    pub index: u32,
    /// Whether it is connected.
    pub connected: bool,
}

struct Msg {
    buf: Vec<u8>,
    nests: Vec<usize>,
}

impl Msg {
    fn new(family: u16, flags: u16, seq: u32, cmd: u8, version: u8) -> Msg {
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(&0u32.to_ne_bytes());
        buf.extend_from_slice(&family.to_ne_bytes());
        buf.extend_from_slice(&flags.to_ne_bytes());
        buf.extend_from_slice(&seq.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes());
        buf.extend_from_slice(&[cmd, version, 0, 0]);
        Msg { buf, nests: Vec::new() }
    }

    fn attr(&mut self, kind: u16, payload: &[u8]) -> &mut Msg {
        let len = u16::try_from(4 + payload.len()).unwrap_or(u16::MAX);
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(payload);
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
        self
    }

    fn u32(&mut self, kind: u16, v: u32) -> &mut Msg {
        self.attr(kind, &v.to_ne_bytes())
    }

    fn u64(&mut self, kind: u16, v: u64) -> &mut Msg {
        self.attr(kind, &v.to_ne_bytes())
    }

    fn string(&mut self, kind: u16, v: &str) -> &mut Msg {
        let mut bytes = v.as_bytes().to_vec();
        bytes.push(0);
        self.attr(kind, &bytes)
    }

    fn begin(&mut self, kind: u16) -> &mut Msg {
        self.nests.push(self.buf.len());
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf.extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
        self
    }

    fn end(&mut self) -> &mut Msg {
        if let Some(start) = self.nests.pop() {
            let len = u16::try_from(self.buf.len() - start).unwrap_or(u16::MAX);
            self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        }
        self
    }

    fn finish(mut self) -> Vec<u8> {
        let len = u32::try_from(self.buf.len()).unwrap_or(u32::MAX);
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf
    }
}

/// Netlink attributes of a payload: (type without flags, payload).
fn attrs(mut data: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while data.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([data[0], data[1]]));
        let kind = u16::from_ne_bytes([data[2], data[3]]) & 0x3fff;
        if len < 4 || len > data.len() {
            break;
        }
        out.push((kind, &data[4..len]));
        let padded = (len + 3) & !3;
        data = &data[padded.min(data.len())..];
    }
    out
}

fn read_u32(p: &[u8]) -> Option<u32> {
    p.get(..4).map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
}

fn read_u16(p: &[u8]) -> Option<u16> {
    p.get(..2).map(|b| u16::from_ne_bytes([b[0], b[1]]))
}

/// One received netlink message: type, flags, seq, payload after the netlink header.
struct Received {
    kind: u16,
    seq: u32,
    payload: Vec<u8>,
}

fn split(buf: &[u8]) -> Vec<Received> {
    let mut out = Vec::new();
    let mut rest = buf;
    while rest.len() >= 16 {
        let len = read_u32(rest).map_or(0, |l| l as usize);
        if len < 16 || len > rest.len() {
            break;
        }
        let kind = read_u16(&rest[4..]).unwrap_or_default();
        let seq = read_u32(&rest[8..]).unwrap_or_default();
        out.push(Received { kind, seq, payload: rest[16..len].to_vec() });
        rest = &rest[((len + 3) & !3).min(rest.len())..];
    }
    out
}

fn open_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call; the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, NETLINK_GENERIC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor this function owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: a zeroed sockaddr_nl is a valid "any port, no groups" address.
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    let len = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
    // SAFETY: `addr` is a valid sockaddr_nl of `len` bytes.
    let rc = unsafe { libc::bind(fd.as_raw_fd(), (&raw const addr).cast(), len) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

fn send(fd: RawFd, msg: &[u8]) -> io::Result<()> {
    // SAFETY: a zeroed sockaddr_nl addresses the kernel (port 0).
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    let len = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
    // SAFETY: `msg` and `addr` are valid for the lengths given.
    let rc = unsafe { libc::sendto(fd, msg.as_ptr().cast(), msg.len(), 0, (&raw const addr).cast(), len) };
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

fn recv(fd: RawFd) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        // SAFETY: `buf` is writable for its length.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        buf.truncate(n as usize);
        return Ok(buf);
    }
}

impl Nbd {
    /// Opens a socket and resolves the `nbd` family; `Ok(None)` when the kernel has no nbd module loaded.
    pub fn open() -> io::Result<Option<Nbd>> {
        let fd = open_socket()?;
        let mut nl = Nbd { fd, family: GENL_ID_CTRL, mcast_group: None, seq: 1 };
        let mut msg = Msg::new(GENL_ID_CTRL, NLM_F_REQUEST | NLM_F_ACK, 1, CTRL_CMD_GETFAMILY, 2);
        msg.string(CTRL_ATTR_FAMILY_NAME, "nbd");
        let answer = match nl.transact(msg.finish(), "resolving the nbd netlink family") {
            Ok(answer) => answer,
            Err(e) if e.errno == libc::ENOENT => return Ok(None),
            Err(e) => return Err(io::Error::other(e.to_string())),
        };
        let mut family = None;
        for (kind, payload) in answer.iter().flat_map(|p| attrs(p.get(4..).unwrap_or_default())) {
            match kind {
                CTRL_ATTR_FAMILY_ID => family = read_u16(payload),
                CTRL_ATTR_MCAST_GROUPS => {
                    for (_, group) in attrs(payload) {
                        let fields = attrs(group);
                        let name = fields.iter().find(|(k, _)| *k == CTRL_ATTR_MCAST_GRP_NAME).map(|(_, v)| *v);
                        let id =
                            fields.iter().find(|(k, _)| *k == CTRL_ATTR_MCAST_GRP_ID).and_then(|(_, v)| read_u32(v));
                        if name.is_some_and(|n| n.starts_with(b"nbd_mc_group")) {
                            nl.mcast_group = id;
                        }
                    }
                }
                _ => {}
            }
        }
        let Some(family) = family else {
            return Err(io::Error::other("the kernel's answer about the nbd netlink family has no id"));
        };
        nl.family = family;
        Ok(Some(nl))
    }

    /// Joins the multicast group that announces dead links.
    pub fn subscribe(&self) -> io::Result<()> {
        let Some(group) = self.mcast_group else {
            return Err(io::Error::other("the nbd netlink family has no multicast group"));
        };
        // SAFETY: setsockopt with a u32 option value of the right size.
        let rc = unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                SOL_NETLINK,
                NETLINK_ADD_MEMBERSHIP,
                (&raw const group).cast(),
                std::mem::size_of::<u32>() as libc::socklen_t,
            )
        };
        if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
    }

    /// Waits up to `timeout` for multicast news; returns the device indexes whose links died.
    pub fn dead_links(&self, timeout: std::time::Duration) -> io::Result<Vec<u32>> {
        let mut pfd = libc::pollfd { fd: self.fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
        // SAFETY: one valid pollfd.
        let rc = unsafe { libc::poll(&raw mut pfd, 1, ms) };
        if rc <= 0 {
            return Ok(Vec::new());
        }
        let buf = recv(self.fd.as_raw_fd())?;
        let mut dead = Vec::new();
        for m in split(&buf) {
            if m.kind == self.family && m.payload.first() == Some(&NBD_CMD_LINK_DEAD) {
                for (kind, payload) in attrs(m.payload.get(4..).unwrap_or_default()) {
                    if kind == NBD_ATTR_INDEX
                        && let Some(index) = read_u32(payload)
                    {
                        dead.push(index);
                    }
                }
            }
        }
        Ok(dead)
    }

    /// Sends a request and collects the generic-netlink payloads of its answers until the ack.
    fn transact(&mut self, mut msg: Vec<u8>, what: &str) -> Result<Vec<Vec<u8>>, NlError> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        msg[8..12].copy_from_slice(&seq.to_ne_bytes());
        let fail = |e: io::Error| NlError { errno: e.raw_os_error().unwrap_or(libc::EIO), what: what.to_owned() };
        send(self.fd.as_raw_fd(), &msg).map_err(fail)?;
        let mut payloads = Vec::new();
        loop {
            let buf = recv(self.fd.as_raw_fd()).map_err(fail)?;
            for m in split(&buf) {
                if m.seq != seq {
                    continue; // multicast news or a stale answer
                }
                match m.kind {
                    NLMSG_ERROR => {
                        let code = read_u32(&m.payload).map_or(0, |c| c as i32);
                        if code == 0 {
                            return Ok(payloads);
                        }
                        return Err(NlError { errno: -code, what: what.to_owned() });
                    }
                    NLMSG_DONE => return Ok(payloads),
                    _ => payloads.push(m.payload),
                }
            }
        }
    }

    /// Connects a free device (the kernel picks it, or adds one) to `sockets`; returns its index.
    pub fn connect(&mut self, req: &ConnectRequest, sockets: &[RawFd]) -> Result<u32, NlError> {
        let mut msg = Msg::new(self.family, NLM_F_REQUEST | NLM_F_ACK, 0, NBD_CMD_CONNECT, 1);
        msg.u64(NBD_ATTR_SIZE_BYTES, req.size_bytes)
            .u64(NBD_ATTR_BLOCK_SIZE_BYTES, req.block_size)
            .u64(NBD_ATTR_SERVER_FLAGS, req.server_flags)
            .u64(NBD_ATTR_TIMEOUT, req.io_timeout)
            .u64(NBD_ATTR_DEAD_CONN_TIMEOUT, req.dead_conn_timeout)
            .u64(NBD_ATTR_CLIENT_FLAGS, NBD_CFLAG_DESTROY_ON_DISCONNECT)
            .string(NBD_ATTR_BACKEND_IDENTIFIER, &req.backend);
        add_sockets(&mut msg, sockets);
        let answers = self.transact(msg.finish(), "connecting an nbd device")?;
        answers
            .iter()
            .flat_map(|p| attrs(p.get(4..).unwrap_or_default()))
            .find(|(k, _)| *k == NBD_ATTR_INDEX)
            .and_then(|(_, v)| read_u32(v))
            .ok_or_else(|| NlError { errno: libc::EPROTO, what: "the kernel did not say which device".into() })
    }

    /// Hands a connected device new sockets in place of dead ones.
    pub fn reconfigure(&mut self, index: u32, backend: &str, sockets: &[RawFd]) -> Result<(), NlError> {
        let mut msg = Msg::new(self.family, NLM_F_REQUEST | NLM_F_ACK, 0, NBD_CMD_RECONFIGURE, 1);
        msg.u32(NBD_ATTR_INDEX, index).string(NBD_ATTR_BACKEND_IDENTIFIER, backend);
        add_sockets(&mut msg, sockets);
        self.transact(msg.finish(), &format!("reconnecting /dev/nbd{index}")).map(drop)
    }

    /// Disconnects a device.
    pub fn disconnect(&mut self, index: u32) -> Result<(), NlError> {
        let mut msg = Msg::new(self.family, NLM_F_REQUEST | NLM_F_ACK, 0, NBD_CMD_DISCONNECT, 1);
        msg.u32(NBD_ATTR_INDEX, index);
        self.transact(msg.finish(), &format!("disconnecting /dev/nbd{index}")).map(drop)
    }

    /// The status of one device, or of all when `index` is `None`.
    pub fn status(&mut self, index: Option<u32>) -> Result<Vec<DeviceStatus>, NlError> {
        let mut msg = Msg::new(self.family, NLM_F_REQUEST | NLM_F_ACK, 0, NBD_CMD_STATUS, 1);
        if let Some(index) = index {
            msg.u32(NBD_ATTR_INDEX, index);
        }
        let answers = self.transact(msg.finish(), "asking the nbd devices' status")?;
        let mut out = Vec::new();
        for (kind, list) in answers.iter().flat_map(|p| attrs(p.get(4..).unwrap_or_default())) {
            if kind != NBD_ATTR_DEVICE_LIST {
                continue;
            }
            for (item_kind, item) in attrs(list) {
                if item_kind != NBD_DEVICE_ITEM {
                    continue;
                }
                let fields = attrs(item);
                let index = fields.iter().find(|(k, _)| *k == NBD_DEVICE_INDEX).and_then(|(_, v)| read_u32(v));
                let connected =
                    fields.iter().find(|(k, _)| *k == NBD_DEVICE_CONNECTED).is_some_and(|(_, v)| v.first() == Some(&1));
                if let Some(index) = index {
                    out.push(DeviceStatus { index, connected });
                }
            }
        }
        Ok(out)
    }
}

fn add_sockets(msg: &mut Msg, sockets: &[RawFd]) {
    msg.begin(NBD_ATTR_SOCKETS);
    for fd in sockets {
        msg.begin(NBD_SOCK_ITEM).u32(NBD_SOCK_FD, u32::try_from(*fd).unwrap_or(u32::MAX)).end();
    }
    msg.end();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_framed_and_nested_as_the_kernel_reads_them() {
        let mut msg = Msg::new(30, NLM_F_REQUEST, 7, NBD_CMD_CONNECT, 1);
        msg.u64(NBD_ATTR_SIZE_BYTES, 1 << 30).string(NBD_ATTR_BACKEND_IDENTIFIER, "b");
        add_sockets(&mut msg, &[5, 6]);
        let bytes = msg.finish();
        assert_eq!(read_u32(&bytes), Some(bytes.len() as u32));
        assert_eq!(bytes.len() % 4, 0);
        let parsed = split(&bytes);
        assert_eq!(parsed.len(), 1);
        assert_eq!((parsed[0].kind, parsed[0].seq), (30, 7));
        let top = attrs(&parsed[0].payload[4..]);
        assert_eq!(top[0], (NBD_ATTR_SIZE_BYTES, &(1u64 << 30).to_ne_bytes()[..]));
        assert_eq!(top[1], (NBD_ATTR_BACKEND_IDENTIFIER, &b"b\0"[..]));
        assert_eq!(top[2].0, NBD_ATTR_SOCKETS);
        let fds: Vec<u32> = attrs(top[2].1)
            .into_iter()
            .flat_map(|(k, item)| {
                assert_eq!(k, NBD_SOCK_ITEM);
                attrs(item).into_iter().filter_map(|(k, v)| (k == NBD_SOCK_FD).then(|| read_u32(v)).flatten())
            })
            .collect();
        assert_eq!(fds, vec![5, 6]);
    }

    #[test]
    fn truncated_attributes_stop_the_parse() {
        assert!(attrs(&[8, 0, 1, 0, 1]).is_empty());
        assert!(attrs(&[2, 0, 1, 0]).is_empty());
    }
}
