//! The NBD wire format: constants, and pure parsing and encoding of handshake messages, requests and replies.
//!
//! Nothing here does I/O or touches an image, so every byte layout is unit-tested and the request parser is
//! fuzzed. Values follow `doc/proto.md` of NetworkBlockDevice/nbd (fixed newstyle, structured replies, block
//! status; no extended headers). Every integer on the wire is big-endian.

use std::fmt;

// --- magics --------------------------------------------------------------------------------------------------------

/// `NBDMAGIC`, the first 8 bytes the server sends.
pub const NBD_MAGIC: u64 = 0x4e42_444d_4147_4943;
/// `IHAVEOPT`, sent by the server after `NBDMAGIC` and by the client before every option.
pub const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
/// Starts every option reply.
pub const OPTION_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
/// Starts every (compact) request.
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
/// Starts every simple reply.
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
/// Starts every structured reply chunk.
pub const STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;

// --- handshake flags -----------------------------------------------------------------------------------------------

/// Server handshake flag: fixed newstyle negotiation.
pub const FLAG_FIXED_NEWSTYLE: u16 = 1 << 0;
/// Server handshake flag: the client may ask to skip the 124 zero bytes after `NBD_OPT_EXPORT_NAME`.
pub const FLAG_NO_ZEROES: u16 = 1 << 1;
/// Client flag: the client speaks fixed newstyle.
pub const FLAG_C_FIXED_NEWSTYLE: u32 = 1 << 0;
/// Client flag: no 124 zero bytes after `NBD_OPT_EXPORT_NAME`.
pub const FLAG_C_NO_ZEROES: u32 = 1 << 1;

// --- transmission flags --------------------------------------------------------------------------------------------

/// Always set.
pub const TFLAG_HAS_FLAGS: u16 = 1 << 0;
/// The export refuses writes.
pub const TFLAG_READ_ONLY: u16 = 1 << 1;
/// `NBD_CMD_FLUSH` is supported.
pub const TFLAG_SEND_FLUSH: u16 = 1 << 2;
/// `NBD_CMD_FLAG_FUA` is supported.
pub const TFLAG_SEND_FUA: u16 = 1 << 3;
/// `NBD_CMD_TRIM` is supported.
pub const TFLAG_SEND_TRIM: u16 = 1 << 5;
/// `NBD_CMD_WRITE_ZEROES` is supported.
pub const TFLAG_SEND_WRITE_ZEROES: u16 = 1 << 6;
/// `NBD_CMD_FLAG_DF` is supported (only with structured replies).
pub const TFLAG_SEND_DF: u16 = 1 << 7;
/// A flush or FUA on any connection covers every connection to the export.
pub const TFLAG_CAN_MULTI_CONN: u16 = 1 << 8;
/// `NBD_CMD_CACHE` is supported.
pub const TFLAG_SEND_CACHE: u16 = 1 << 10;
/// `NBD_CMD_FLAG_FAST_ZERO` is supported.
pub const TFLAG_SEND_FAST_ZERO: u16 = 1 << 11;

// --- options -------------------------------------------------------------------------------------------------------

/// Legacy: choose an export and enter transmission; no error reply is possible.
pub const OPT_EXPORT_NAME: u32 = 1;
/// End negotiation.
pub const OPT_ABORT: u32 = 2;
/// List exports.
pub const OPT_LIST: u32 = 3;
/// Upgrade the connection to TLS (offered when the server has a certificate).
pub const OPT_STARTTLS: u32 = 5;
/// Describe an export.
pub const OPT_INFO: u32 = 6;
/// Describe an export and enter transmission.
pub const OPT_GO: u32 = 7;
/// Enable structured replies.
pub const OPT_STRUCTURED_REPLY: u32 = 8;
/// List metadata contexts.
pub const OPT_LIST_META_CONTEXT: u32 = 9;
/// Select metadata contexts.
pub const OPT_SET_META_CONTEXT: u32 = 10;
/// 64-bit headers (not supported here).
pub const OPT_EXTENDED_HEADERS: u32 = 11;

// --- option replies ------------------------------------------------------------------------------------------------

/// The option succeeded (or a list ended).
pub const REP_ACK: u32 = 1;
/// One export of a list.
pub const REP_SERVER: u32 = 2;
/// One piece of export information.
pub const REP_INFO: u32 = 3;
/// One metadata context.
pub const REP_META_CONTEXT: u32 = 4;
/// The option is unknown to this server.
pub const REP_ERR_UNSUP: u32 = (1 << 31) + 1;
/// Server policy refuses the option.
pub const REP_ERR_POLICY: u32 = (1 << 31) + 2;
/// The option's data is malformed.
pub const REP_ERR_INVALID: u32 = (1 << 31) + 3;
/// The option cannot be carried out on this platform.
pub const REP_ERR_PLATFORM: u32 = (1 << 31) + 4;
/// The server requires TLS before this option.
pub const REP_ERR_TLS_REQD: u32 = (1 << 31) + 5;
/// The export does not exist.
pub const REP_ERR_UNKNOWN: u32 = (1 << 31) + 6;
/// The server is shutting down.
pub const REP_ERR_SHUTDOWN: u32 = (1 << 31) + 7;

/// `NBD_INFO_EXPORT`: size and transmission flags.
pub const INFO_EXPORT: u16 = 0;
/// `NBD_INFO_NAME`: the canonical export name.
pub const INFO_NAME: u16 = 1;
/// `NBD_INFO_DESCRIPTION`: a human-readable description.
pub const INFO_DESCRIPTION: u16 = 2;
/// `NBD_INFO_BLOCK_SIZE`: minimum, preferred and maximum block sizes.
pub const INFO_BLOCK_SIZE: u16 = 3;

// --- commands ------------------------------------------------------------------------------------------------------

/// `NBD_CMD_READ`.
pub const CMD_READ: u16 = 0;
/// `NBD_CMD_WRITE`.
pub const CMD_WRITE: u16 = 1;
/// `NBD_CMD_DISC`.
pub const CMD_DISC: u16 = 2;
/// `NBD_CMD_FLUSH`.
pub const CMD_FLUSH: u16 = 3;
/// `NBD_CMD_TRIM`.
pub const CMD_TRIM: u16 = 4;
/// `NBD_CMD_CACHE`.
pub const CMD_CACHE: u16 = 5;
/// `NBD_CMD_WRITE_ZEROES`.
pub const CMD_WRITE_ZEROES: u16 = 6;
/// `NBD_CMD_BLOCK_STATUS`.
pub const CMD_BLOCK_STATUS: u16 = 7;

/// Command flag: force unit access.
pub const CMD_FLAG_FUA: u16 = 1 << 0;
/// Command flag: write zeroes must keep the range allocated.
pub const CMD_FLAG_NO_HOLE: u16 = 1 << 1;
/// Command flag: do not fragment the read reply.
pub const CMD_FLAG_DF: u16 = 1 << 2;
/// Command flag: one block status extent is enough.
pub const CMD_FLAG_REQ_ONE: u16 = 1 << 3;
/// Command flag: fail write zeroes at once unless it is fast.
pub const CMD_FLAG_FAST_ZERO: u16 = 1 << 4;

// --- structured replies --------------------------------------------------------------------------------------------

/// Structured reply flag: the last chunk of a reply.
pub const REPLY_FLAG_DONE: u16 = 1 << 0;
/// Chunk type: no payload.
pub const REPLY_TYPE_NONE: u16 = 0;
/// Chunk type: data at an offset.
pub const REPLY_TYPE_OFFSET_DATA: u16 = 1;
/// Chunk type: a range that reads as zeros.
pub const REPLY_TYPE_OFFSET_HOLE: u16 = 2;
/// Chunk type: block status descriptors of one metadata context.
pub const REPLY_TYPE_BLOCK_STATUS: u16 = 5;
/// Chunk type: an error with a message.
pub const REPLY_TYPE_ERROR: u16 = (1 << 15) + 1;

/// `base:allocation` flag: the extent is not allocated.
pub const STATE_HOLE: u32 = 1 << 0;
/// `base:allocation` flag: the extent reads as zeros.
pub const STATE_ZERO: u32 = 1 << 1;

/// The only metadata context this server knows.
pub const BASE_ALLOCATION: &str = "base:allocation";

// --- errors --------------------------------------------------------------------------------------------------------

/// `EPERM`: a write to a read-only export.
pub const EPERM: u32 = 1;
/// `EIO`: the storage failed.
pub const EIO: u32 = 5;
/// `EINVAL`: a malformed or out-of-range request.
pub const EINVAL: u32 = 22;
/// `ENOSPC`: out of space, or a write beyond the end of the export.
pub const ENOSPC: u32 = 28;
/// `EOVERFLOW`: a read too large to send unfragmented.
pub const EOVERFLOW: u32 = 75;
/// `ENOTSUP`: a fast zero that cannot be fast.
pub const ENOTSUP: u32 = 95;
/// `ESHUTDOWN`: the server is shutting down.
pub const ESHUTDOWN: u32 = 108;

// --- limits --------------------------------------------------------------------------------------------------------

/// The largest request payload (and read) accepted; also advertised as the maximum block size.
pub const MAX_PAYLOAD_BYTES: u32 = 32 << 20;
/// Advertised minimum block size: any byte alignment works.
pub const MIN_BLOCK_BYTES: u32 = 1;
/// Advertised preferred block size: the engine's block, below which writes read-modify-write.
pub const PREFERRED_BLOCK_BYTES: u32 = 4096;
/// The longest string the protocol allows (export names, queries, messages).
pub const MAX_STRING_BYTES: usize = 4096;
/// The longest option payload accepted; the longest legitimate one (a meta context query list) is far shorter.
pub const MAX_OPTION_BYTES: u32 = 64 << 10;
/// The most queries accepted in one meta context option.
pub const MAX_META_QUERIES: usize = 128;
/// The most info requests accepted in one `NBD_OPT_INFO`/`NBD_OPT_GO`.
pub const MAX_INFO_REQUESTS: usize = 64;

/// Length of the server's first message: `NBDMAGIC`, `IHAVEOPT`, handshake flags.
pub const GREETING_LEN: usize = 18;
/// Length of an option header: magic, option, length.
pub const OPTION_HEADER_LEN: usize = 16;
/// Length of a request header.
pub const REQUEST_HEADER_LEN: usize = 28;
/// Length of a simple reply header.
pub const SIMPLE_REPLY_LEN: usize = 16;
/// Length of a structured reply chunk header.
pub const CHUNK_HEADER_LEN: usize = 20;

/// A violation that ends the connection: the stream can no longer be trusted to be in step.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// A magic number did not match.
    #[error("bad {what} magic {found:#x}")]
    BadMagic {
        /// Which message.
        what: &'static str,
        /// What arrived instead.
        found: u64,
    },
    /// The client set flags the server did not offer.
    #[error("unknown client flags {0:#x}")]
    UnknownClientFlags(u32),
    /// An option's payload is longer than any legitimate option.
    #[error("option {option} carries {length} bytes; the limit is {MAX_OPTION_BYTES}")]
    OptionTooLong {
        /// The option.
        option: u32,
        /// Its announced length.
        length: u32,
    },
    /// A write carries more data than the server buffers.
    #[error("write of {0} bytes exceeds the {MAX_PAYLOAD_BYTES}-byte maximum")]
    PayloadTooLarge(u32),
}

// --- handshake -----------------------------------------------------------------------------------------------------

/// Returns the server's greeting: `NBDMAGIC`, `IHAVEOPT` and the handshake flags this server offers.
pub fn greeting() -> [u8; GREETING_LEN] {
    let mut out = [0u8; GREETING_LEN];
    out[0..8].copy_from_slice(&NBD_MAGIC.to_be_bytes());
    out[8..16].copy_from_slice(&IHAVEOPT.to_be_bytes());
    out[16..18].copy_from_slice(&(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES).to_be_bytes());
    out
}

/// The client's answer to the greeting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientFlags {
    /// The client speaks fixed newstyle (option replies allowed).
    pub fixed_newstyle: bool,
    /// The 124 zero bytes after `NBD_OPT_EXPORT_NAME` are skipped.
    pub no_zeroes: bool,
}

/// Parses the client flags; any bit the server did not offer ends the connection, as the spec demands.
pub fn parse_client_flags(bytes: [u8; 4]) -> Result<ClientFlags, ProtocolError> {
    let flags = u32::from_be_bytes(bytes);
    let known = FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES;
    if flags & !known != 0 {
        return Err(ProtocolError::UnknownClientFlags(flags));
    }
    Ok(ClientFlags { fixed_newstyle: flags & FLAG_C_FIXED_NEWSTYLE != 0, no_zeroes: flags & FLAG_C_NO_ZEROES != 0 })
}

/// The fixed part of an option sent by the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionHeader {
    /// The option number.
    pub option: u32,
    /// Length of the data that follows.
    pub length: u32,
}

/// Parses an option header, refusing a bad magic and payloads beyond [`MAX_OPTION_BYTES`].
pub fn parse_option_header(bytes: &[u8; OPTION_HEADER_LEN]) -> Result<OptionHeader, ProtocolError> {
    let mut cursor = Cursor::new(bytes);
    let magic = cursor.u64().unwrap_or_default();
    let option = cursor.u32().unwrap_or_default();
    let length = cursor.u32().unwrap_or_default();
    if magic != IHAVEOPT {
        return Err(ProtocolError::BadMagic { what: "option", found: magic });
    }
    if length > MAX_OPTION_BYTES {
        return Err(ProtocolError::OptionTooLong { option, length });
    }
    Ok(OptionHeader { option, length })
}

/// Appends an option reply (header and data) to `out`.
pub fn option_reply(out: &mut Vec<u8>, option: u32, reply_type: u32, data: &[u8]) {
    out.extend_from_slice(&OPTION_REPLY_MAGIC.to_be_bytes());
    out.extend_from_slice(&option.to_be_bytes());
    out.extend_from_slice(&reply_type.to_be_bytes());
    out.extend_from_slice(&len_u32(data.len()).to_be_bytes());
    out.extend_from_slice(data);
}

/// Appends an error option reply whose data is a human-readable message.
pub fn option_error(out: &mut Vec<u8>, option: u32, reply_type: u32, message: &str) {
    debug_assert!(reply_type & (1 << 31) != 0, "error replies have bit 31 set");
    option_reply(out, option, reply_type, truncate_str(message, MAX_STRING_BYTES).as_bytes());
}

/// Data of an `NBD_REP_SERVER` reply: the export name.
pub fn rep_server_data(name: &str) -> Vec<u8> {
    let name = truncate_str(name, MAX_STRING_BYTES);
    let mut out = Vec::with_capacity(4 + name.len());
    out.extend_from_slice(&len_u32(name.len()).to_be_bytes());
    out.extend_from_slice(name.as_bytes());
    out
}

/// Data of an `NBD_REP_INFO` reply of type `NBD_INFO_EXPORT`.
pub fn info_export_data(size_bytes: u64, transmission_flags: u16) -> Vec<u8> {
    let mut out = Vec::with_capacity(12);
    out.extend_from_slice(&INFO_EXPORT.to_be_bytes());
    out.extend_from_slice(&size_bytes.to_be_bytes());
    out.extend_from_slice(&transmission_flags.to_be_bytes());
    out
}

/// Data of an `NBD_REP_INFO` reply of type `NBD_INFO_BLOCK_SIZE` with this server's constraints.
pub fn info_block_size_data() -> Vec<u8> {
    let mut out = Vec::with_capacity(14);
    out.extend_from_slice(&INFO_BLOCK_SIZE.to_be_bytes());
    out.extend_from_slice(&MIN_BLOCK_BYTES.to_be_bytes());
    out.extend_from_slice(&PREFERRED_BLOCK_BYTES.to_be_bytes());
    out.extend_from_slice(&MAX_PAYLOAD_BYTES.to_be_bytes());
    out
}

/// Data of an `NBD_REP_INFO` reply carrying a string (`NBD_INFO_NAME` or `NBD_INFO_DESCRIPTION`).
pub fn info_string_data(info_type: u16, text: &str) -> Vec<u8> {
    let text = truncate_str(text, MAX_STRING_BYTES);
    let mut out = Vec::with_capacity(2 + text.len());
    out.extend_from_slice(&info_type.to_be_bytes());
    out.extend_from_slice(text.as_bytes());
    out
}

/// Data of an `NBD_REP_META_CONTEXT` reply.
pub fn meta_context_data(context_id: u32, name: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + name.len());
    out.extend_from_slice(&context_id.to_be_bytes());
    out.extend_from_slice(name.as_bytes());
    out
}

/// The reply to `NBD_OPT_EXPORT_NAME`: size, transmission flags and, unless skipped, 124 zero bytes.
pub fn export_name_reply(size_bytes: u64, transmission_flags: u16, no_zeroes: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(134);
    out.extend_from_slice(&size_bytes.to_be_bytes());
    out.extend_from_slice(&transmission_flags.to_be_bytes());
    if !no_zeroes {
        out.extend_from_slice(&[0u8; 124]);
    }
    out
}

/// Why an option's data was refused; answered with `NBD_REP_ERR_INVALID` and this message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidOption(pub String);

impl fmt::Display for InvalidOption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The data of `NBD_OPT_INFO` and `NBD_OPT_GO`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InfoRequest {
    /// The export name.
    pub name: String,
    /// The information types asked for, besides `NBD_INFO_EXPORT`, which is always sent.
    pub requests: Vec<u16>,
}

/// Parses the data of `NBD_OPT_INFO`/`NBD_OPT_GO`: name length, name, request count, requests.
pub fn parse_info_request(data: &[u8]) -> Result<InfoRequest, InvalidOption> {
    let mut cursor = Cursor::new(data);
    let name = cursor.string32().ok_or_else(|| InvalidOption("the export name is truncated".into()))??;
    let count = cursor.u16().ok_or_else(|| InvalidOption("the number of info requests is missing".into()))?;
    if usize::from(count) > MAX_INFO_REQUESTS {
        return Err(InvalidOption(format!("{count} info requests; the limit is {MAX_INFO_REQUESTS}")));
    }
    let mut requests = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        requests.push(cursor.u16().ok_or_else(|| InvalidOption("the info requests are truncated".into()))?);
    }
    cursor.finish()?;
    Ok(InfoRequest { name, requests })
}

/// The data of `NBD_OPT_LIST_META_CONTEXT` and `NBD_OPT_SET_META_CONTEXT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaContextRequest {
    /// The export the contexts are for.
    pub name: String,
    /// The queries.
    pub queries: Vec<String>,
}

/// Parses the data of the meta context options: name length, name, query count, then length-prefixed queries.
pub fn parse_meta_context_request(data: &[u8]) -> Result<MetaContextRequest, InvalidOption> {
    let mut cursor = Cursor::new(data);
    let name = cursor.string32().ok_or_else(|| InvalidOption("the export name is truncated".into()))??;
    let count = cursor.u32().ok_or_else(|| InvalidOption("the number of queries is missing".into()))?;
    if count as usize > MAX_META_QUERIES {
        return Err(InvalidOption(format!("{count} meta context queries; the limit is {MAX_META_QUERIES}")));
    }
    let mut queries = Vec::with_capacity(count as usize);
    for _ in 0..count {
        queries.push(cursor.string32().ok_or_else(|| InvalidOption("a query is truncated".into()))??);
    }
    cursor.finish()?;
    Ok(MetaContextRequest { name, queries })
}

/// Returns true when a `LIST_META_CONTEXT` query selects `base:allocation` (the whole `base:` namespace or the
/// exact name).
pub fn list_query_matches_base_allocation(query: &str) -> bool {
    query == "base:" || query == BASE_ALLOCATION
}

// --- transmission --------------------------------------------------------------------------------------------------

/// A request header as sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestHeader {
    /// Command flags.
    pub flags: u16,
    /// Command type.
    pub command: u16,
    /// The client's cookie (handle), echoed in the reply.
    pub cookie: u64,
    /// Byte offset.
    pub offset: u64,
    /// Byte length.
    pub length: u32,
}

/// Parses a request header, refusing a bad magic.
pub fn parse_request_header(bytes: &[u8; REQUEST_HEADER_LEN]) -> Result<RequestHeader, ProtocolError> {
    let mut cursor = Cursor::new(bytes);
    let magic = cursor.u32().unwrap_or_default();
    if magic != REQUEST_MAGIC {
        return Err(ProtocolError::BadMagic { what: "request", found: u64::from(magic) });
    }
    Ok(RequestHeader {
        flags: cursor.u16().unwrap_or_default(),
        command: cursor.u16().unwrap_or_default(),
        cookie: cursor.u64().unwrap_or_default(),
        offset: cursor.u64().unwrap_or_default(),
        length: cursor.u32().unwrap_or_default(),
    })
}

/// A command this server carries out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Read `length` bytes.
    Read,
    /// Write the payload.
    Write,
    /// Make completed writes durable.
    Flush,
    /// Deallocate a range.
    Trim,
    /// Prefetch a range (a no-op here).
    Cache,
    /// Make a range read as zeros.
    WriteZeroes,
    /// Report `base:allocation` of a range.
    BlockStatus,
}

/// What was negotiated for a connection, as the request decoder needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    /// Structured replies are on.
    pub structured: bool,
    /// The id of `base:allocation`, when the client selected it for this export.
    pub base_allocation: Option<u32>,
    /// The export refuses writes.
    pub read_only: bool,
}

/// A request that passed validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// The command.
    pub command: Command,
    /// Its flags (only ones valid for the command).
    pub flags: u16,
    /// The cookie to echo.
    pub cookie: u64,
    /// Byte offset.
    pub offset: u64,
    /// Byte length.
    pub length: u32,
}

impl Request {
    /// Returns true when `flag` is set.
    pub fn has(&self, flag: u16) -> bool {
        self.flags & flag != 0
    }
}

/// What to do with a well-framed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Carry it out.
    Execute(Request),
    /// The client asked to disconnect.
    Disconnect,
    /// Answer with an error without touching the image; a write's payload must still be consumed.
    Reject {
        /// The cookie to echo.
        cookie: u64,
        /// The NBD error.
        error: u32,
        /// Why, for the client's user.
        message: String,
    },
}

/// Returns the bytes of payload that follow a request header: only writes carry data.
pub fn payload_len(header: &RequestHeader) -> u32 {
    if header.command == CMD_WRITE { header.length } else { 0 }
}

/// Validates a request against what was negotiated.
///
/// Only framing problems that make the stream untrustworthy (a write payload too large to buffer) are errors;
/// every other problem is answered with an NBD error, as the spec asks, and the connection goes on.
pub fn decode_request(header: &RequestHeader, negotiated: &Negotiated) -> Result<Decision, ProtocolError> {
    if header.command == CMD_WRITE && header.length > MAX_PAYLOAD_BYTES {
        return Err(ProtocolError::PayloadTooLarge(header.length));
    }
    let reject = |error: u32, message: String| Ok(Decision::Reject { cookie: header.cookie, error, message });
    let (command, valid_flags, writes) = match header.command {
        CMD_READ => {
            (Command::Read, if negotiated.structured { CMD_FLAG_FUA | CMD_FLAG_DF } else { CMD_FLAG_FUA }, false)
        }
        CMD_WRITE => (Command::Write, CMD_FLAG_FUA, true),
        CMD_DISC => return Ok(Decision::Disconnect),
        CMD_FLUSH => (Command::Flush, CMD_FLAG_FUA, false),
        CMD_TRIM => (Command::Trim, CMD_FLAG_FUA, true),
        CMD_CACHE => (Command::Cache, CMD_FLAG_FUA, false),
        CMD_WRITE_ZEROES => (Command::WriteZeroes, CMD_FLAG_FUA | CMD_FLAG_NO_HOLE | CMD_FLAG_FAST_ZERO, true),
        CMD_BLOCK_STATUS => (Command::BlockStatus, CMD_FLAG_FUA | CMD_FLAG_REQ_ONE, false),
        other => return reject(EINVAL, format!("unknown command {other}")),
    };
    // FUA is accepted on every command: the spec notes that existing clients set it on non-writes.
    if header.flags & !valid_flags != 0 {
        return reject(EINVAL, format!("flags {:#x} are not valid for command {}", header.flags, header.command));
    }
    if writes && negotiated.read_only {
        return reject(EPERM, "the export is read-only".into());
    }
    match command {
        Command::Read if header.length > MAX_PAYLOAD_BYTES => {
            return reject(
                EINVAL,
                format!("read of {} bytes exceeds the {MAX_PAYLOAD_BYTES}-byte maximum block size", header.length),
            );
        }
        Command::BlockStatus if negotiated.base_allocation.is_none() => {
            return reject(EINVAL, "block status needs the base:allocation meta context for this export".into());
        }
        Command::BlockStatus if header.length == 0 => {
            return reject(EINVAL, "block status of an empty range".into());
        }
        _ => {}
    }
    Ok(Decision::Execute(Request {
        command,
        flags: header.flags,
        cookie: header.cookie,
        offset: header.offset,
        length: header.length,
    }))
}

/// Appends a simple reply header.
pub fn simple_reply(out: &mut Vec<u8>, cookie: u64, error: u32) {
    out.extend_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
    out.extend_from_slice(&error.to_be_bytes());
    out.extend_from_slice(&cookie.to_be_bytes());
}

/// Writes a simple reply header into the first [`SIMPLE_REPLY_LEN`] bytes of `out` (for replies built in place).
pub fn put_simple_reply(out: &mut [u8], cookie: u64, error: u32) {
    out[0..4].copy_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
    out[4..8].copy_from_slice(&error.to_be_bytes());
    out[8..16].copy_from_slice(&cookie.to_be_bytes());
}

/// Writes a structured chunk header into the first [`CHUNK_HEADER_LEN`] bytes of `out`.
pub fn put_chunk_header(out: &mut [u8], flags: u16, chunk_type: u16, cookie: u64, length: u32) {
    out[0..4].copy_from_slice(&STRUCTURED_REPLY_MAGIC.to_be_bytes());
    out[4..6].copy_from_slice(&flags.to_be_bytes());
    out[6..8].copy_from_slice(&chunk_type.to_be_bytes());
    out[8..16].copy_from_slice(&cookie.to_be_bytes());
    out[16..20].copy_from_slice(&length.to_be_bytes());
}

/// Appends a structured chunk header.
pub fn chunk_header(out: &mut Vec<u8>, flags: u16, chunk_type: u16, cookie: u64, length: u32) {
    let start = out.len();
    out.resize(start + CHUNK_HEADER_LEN, 0);
    put_chunk_header(&mut out[start..], flags, chunk_type, cookie, length);
}

/// Appends the final, empty chunk of a structured reply.
pub fn none_chunk(out: &mut Vec<u8>, cookie: u64) {
    chunk_header(out, REPLY_FLAG_DONE, REPLY_TYPE_NONE, cookie, 0);
}

/// Appends a final `NBD_REPLY_TYPE_ERROR` chunk with a message.
pub fn error_chunk(out: &mut Vec<u8>, cookie: u64, error: u32, message: &str) {
    debug_assert!(error != 0, "error chunks carry a nonzero error");
    let message = truncate_str(message, MAX_STRING_BYTES);
    chunk_header(out, REPLY_FLAG_DONE, REPLY_TYPE_ERROR, cookie, len_u32(6 + message.len()));
    out.extend_from_slice(&error.to_be_bytes());
    out.extend_from_slice(&(message.len() as u16).to_be_bytes());
    out.extend_from_slice(message.as_bytes());
}

/// One `base:allocation` descriptor: a length and its state flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Descriptor {
    /// Length in bytes (nonzero).
    pub length: u32,
    /// `STATE_*` flags.
    pub flags: u32,
}

/// Appends a final `NBD_REPLY_TYPE_BLOCK_STATUS` chunk; `descriptors` must not be empty.
pub fn block_status_chunk(out: &mut Vec<u8>, cookie: u64, context_id: u32, descriptors: &[Descriptor]) {
    debug_assert!(!descriptors.is_empty(), "a block status reply carries at least one descriptor");
    chunk_header(out, REPLY_FLAG_DONE, REPLY_TYPE_BLOCK_STATUS, cookie, len_u32(4 + 8 * descriptors.len()));
    out.extend_from_slice(&context_id.to_be_bytes());
    for descriptor in descriptors {
        out.extend_from_slice(&descriptor.length.to_be_bytes());
        out.extend_from_slice(&descriptor.flags.to_be_bytes());
    }
}

// --- helpers -------------------------------------------------------------------------------------------------------

/// Converts a length that callers bound far below 4 GiB; saturates rather than wraps if that ever breaks.
fn len_u32(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

/// Cuts a string to at most `max` bytes on a character boundary.
pub fn truncate_str(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// A bounds-checked big-endian reader over a byte slice.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn new(bytes: &'a [u8]) -> Cursor<'a> {
        Cursor { bytes, at: 0 }
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let slice = self.bytes.get(self.at..end)?;
        self.at = end;
        Some(slice)
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).and_then(|b| b.try_into().ok()).map(u16::from_be_bytes)
    }

    fn u32(&mut self) -> Option<u32> {
        self.take(4).and_then(|b| b.try_into().ok()).map(u32::from_be_bytes)
    }

    fn u64(&mut self) -> Option<u64> {
        self.take(8).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes)
    }

    /// Reads a 32-bit length and that many bytes as a protocol string; `None` when truncated.
    fn string32(&mut self) -> Option<Result<String, InvalidOption>> {
        let len = self.u32()? as usize;
        let bytes = self.take(len)?;
        Some(protocol_string(bytes))
    }

    fn finish(&self) -> Result<(), InvalidOption> {
        if self.at == self.bytes.len() {
            Ok(())
        } else {
            Err(InvalidOption(format!("{} unexpected trailing bytes", self.bytes.len() - self.at)))
        }
    }
}

/// Validates a protocol string: UTF-8, no NUL, at most [`MAX_STRING_BYTES`].
fn protocol_string(bytes: &[u8]) -> Result<String, InvalidOption> {
    if bytes.len() > MAX_STRING_BYTES {
        return Err(InvalidOption(format!("a string of {} bytes exceeds {MAX_STRING_BYTES}", bytes.len())));
    }
    let text = std::str::from_utf8(bytes).map_err(|_| InvalidOption("a string is not valid UTF-8".into()))?;
    if text.contains('\0') {
        return Err(InvalidOption("a string contains NUL".into()));
    }
    Ok(text.to_owned())
}

#[cfg(test)]
mod tests;
