//! Byte-level tests of the codec, and property tests showing the parsers never panic on arbitrary input.

use proptest::prelude::*;

use super::*;

fn request_bytes(flags: u16, command: u16, cookie: u64, offset: u64, length: u32) -> [u8; REQUEST_HEADER_LEN] {
    let mut out = [0u8; REQUEST_HEADER_LEN];
    out[0..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
    out[4..6].copy_from_slice(&flags.to_be_bytes());
    out[6..8].copy_from_slice(&command.to_be_bytes());
    out[8..16].copy_from_slice(&cookie.to_be_bytes());
    out[16..24].copy_from_slice(&offset.to_be_bytes());
    out[24..28].copy_from_slice(&length.to_be_bytes());
    out
}

fn header(flags: u16, command: u16, length: u32) -> RequestHeader {
    RequestHeader { flags, command, cookie: 7, offset: 4096, length }
}

const STRUCTURED_RW: Negotiated = Negotiated { structured: true, base_allocation: Some(1), read_only: false };
const SIMPLE_RO: Negotiated = Negotiated { structured: false, base_allocation: None, read_only: true };

fn info_request_bytes(name: &str, requests: &[u16]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(name.len() as u32).to_be_bytes());
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(&(requests.len() as u16).to_be_bytes());
    for r in requests {
        out.extend_from_slice(&r.to_be_bytes());
    }
    out
}

fn meta_request_bytes(name: &str, queries: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(name.len() as u32).to_be_bytes());
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(&(queries.len() as u32).to_be_bytes());
    for q in queries {
        out.extend_from_slice(&(q.len() as u32).to_be_bytes());
        out.extend_from_slice(q.as_bytes());
    }
    out
}

#[test]
fn greeting_offers_fixed_newstyle_and_no_zeroes() {
    let g = greeting();
    assert_eq!(&g[0..8], b"NBDMAGIC");
    assert_eq!(&g[8..16], b"IHAVEOPT");
    assert_eq!(u16::from_be_bytes([g[16], g[17]]), 3);
}

#[test]
fn client_flags_refuse_unoffered_bits() {
    assert_eq!(parse_client_flags([0, 0, 0, 3]), Ok(ClientFlags { fixed_newstyle: true, no_zeroes: true }));
    assert_eq!(parse_client_flags([0, 0, 0, 0]), Ok(ClientFlags { fixed_newstyle: false, no_zeroes: false }));
    assert_eq!(parse_client_flags([0, 0, 0, 4]), Err(ProtocolError::UnknownClientFlags(4)));
    assert!(parse_client_flags([0x80, 0, 0, 1]).is_err());
}

#[test]
fn option_headers_check_magic_and_length() {
    let mut bytes = [0u8; OPTION_HEADER_LEN];
    bytes[0..8].copy_from_slice(b"IHAVEOPT");
    bytes[8..12].copy_from_slice(&OPT_GO.to_be_bytes());
    bytes[12..16].copy_from_slice(&10u32.to_be_bytes());
    assert_eq!(parse_option_header(&bytes), Ok(OptionHeader { option: OPT_GO, length: 10 }));
    bytes[12..16].copy_from_slice(&(MAX_OPTION_BYTES + 1).to_be_bytes());
    assert!(matches!(parse_option_header(&bytes), Err(ProtocolError::OptionTooLong { .. })));
    bytes[0] = b'X';
    assert!(matches!(parse_option_header(&bytes), Err(ProtocolError::BadMagic { what: "option", .. })));
}

#[test]
fn option_replies_have_the_documented_layout() {
    let mut out = Vec::new();
    option_reply(&mut out, OPT_LIST, REP_SERVER, &rep_server_data("rbd/img"));
    assert_eq!(&out[0..8], &OPTION_REPLY_MAGIC.to_be_bytes());
    assert_eq!(&out[8..12], &OPT_LIST.to_be_bytes());
    assert_eq!(&out[12..16], &REP_SERVER.to_be_bytes());
    assert_eq!(&out[16..20], &11u32.to_be_bytes());
    assert_eq!(&out[20..24], &7u32.to_be_bytes());
    assert_eq!(&out[24..], b"rbd/img");

    let mut out = Vec::new();
    option_error(&mut out, OPT_GO, REP_ERR_UNKNOWN, &"é".repeat(3000));
    let len = u32::from_be_bytes([out[16], out[17], out[18], out[19]]) as usize;
    assert!(len <= MAX_STRING_BYTES);
    assert!(std::str::from_utf8(&out[20..]).is_ok(), "the message is cut on a character boundary");
}

#[test]
fn info_payloads_have_the_documented_layout() {
    let export = info_export_data(1 << 30, TFLAG_HAS_FLAGS | TFLAG_READ_ONLY);
    assert_eq!(export, [&[0u8, 0][..], &(1u64 << 30).to_be_bytes(), &[0, 3]].concat());
    let sizes = info_block_size_data();
    assert_eq!(sizes.len(), 14);
    assert_eq!(&sizes[0..2], &INFO_BLOCK_SIZE.to_be_bytes());
    assert_eq!(&sizes[2..6], &1u32.to_be_bytes());
    assert_eq!(&sizes[6..10], &4096u32.to_be_bytes());
    assert_eq!(&sizes[10..14], &(32u32 << 20).to_be_bytes());
    assert_eq!(info_string_data(INFO_NAME, "a"), [0, 1, b'a']);
    assert_eq!(meta_context_data(1, BASE_ALLOCATION)[0..4], [0, 0, 0, 1]);
}

#[test]
fn export_name_reply_honours_no_zeroes() {
    assert_eq!(export_name_reply(512, 1, false).len(), 134);
    assert_eq!(export_name_reply(512, 1, true), [&512u64.to_be_bytes()[..], &[0, 1]].concat());
}

#[test]
fn info_requests_parse_and_refuse_malformed_data() {
    let parsed = parse_info_request(&info_request_bytes("rbd/img", &[INFO_BLOCK_SIZE, INFO_NAME])).expect("valid");
    assert_eq!(parsed, InfoRequest { name: "rbd/img".into(), requests: vec![INFO_BLOCK_SIZE, INFO_NAME] });
    assert_eq!(parse_info_request(&info_request_bytes("", &[])).expect("empty name").name, "");

    let mut trailing = info_request_bytes("a", &[]);
    trailing.push(0);
    assert!(parse_info_request(&trailing).is_err());
    let full = info_request_bytes("rbd/img", &[1]);
    for cut in 0..full.len() {
        assert!(parse_info_request(&full[..cut]).is_err(), "truncated at {cut}");
    }
    assert!(parse_info_request(&info_request_bytes("a\0b", &[])).is_err());
    let mut bad_utf8 = info_request_bytes("ab", &[]);
    bad_utf8[4] = 0xff;
    assert!(parse_info_request(&bad_utf8).is_err());
    let mut huge = Vec::new();
    huge.extend_from_slice(&u32::MAX.to_be_bytes());
    assert!(parse_info_request(&huge).is_err());
}

#[test]
fn meta_context_requests_parse() {
    let parsed =
        parse_meta_context_request(&meta_request_bytes("rbd/img", &["base:allocation", "qemu:x"])).expect("valid");
    assert_eq!(parsed.name, "rbd/img");
    assert_eq!(parsed.queries, ["base:allocation", "qemu:x"]);
    assert!(parse_meta_context_request(&meta_request_bytes("rbd/img", &[])).expect("no query").queries.is_empty());
    let full = meta_request_bytes("rbd/img", &["base:allocation"]);
    for cut in 0..full.len() {
        assert!(parse_meta_context_request(&full[..cut]).is_err(), "truncated at {cut}");
    }
    let mut many = Vec::new();
    many.extend_from_slice(&0u32.to_be_bytes());
    many.extend_from_slice(&u32::MAX.to_be_bytes());
    assert!(parse_meta_context_request(&many).is_err(), "an absurd query count is refused before allocating");
    assert!(list_query_matches_base_allocation("base:"));
    assert!(list_query_matches_base_allocation("base:allocation"));
    assert!(!list_query_matches_base_allocation("base:alloc"));
}

#[test]
fn request_headers_parse_and_check_magic() {
    let bytes = request_bytes(CMD_FLAG_FUA, CMD_WRITE, 0xdead_beef, 1 << 40, 4096);
    assert_eq!(
        parse_request_header(&bytes),
        Ok(RequestHeader { flags: 1, command: CMD_WRITE, cookie: 0xdead_beef, offset: 1 << 40, length: 4096 })
    );
    let mut bad = bytes;
    bad[0] ^= 0xff;
    assert!(matches!(parse_request_header(&bad), Err(ProtocolError::BadMagic { what: "request", .. })));
}

#[test]
fn decoding_validates_commands_and_flags() {
    let execute = |h: RequestHeader, n: &Negotiated| match decode_request(&h, n) {
        Ok(Decision::Execute(r)) => r,
        other => panic!("expected execute, got {other:?}"),
    };
    let rejected = |h: RequestHeader, n: &Negotiated| match decode_request(&h, n) {
        Ok(Decision::Reject { error, .. }) => error,
        other => panic!("expected reject, got {other:?}"),
    };
    assert_eq!(execute(header(CMD_FLAG_DF, CMD_READ, 4096), &STRUCTURED_RW).command, Command::Read);
    assert_eq!(execute(header(CMD_FLAG_FUA, CMD_FLUSH, 0), &SIMPLE_RO).command, Command::Flush);
    let zero = execute(header(CMD_FLAG_NO_HOLE | CMD_FLAG_FAST_ZERO, CMD_WRITE_ZEROES, 1 << 30), &STRUCTURED_RW);
    assert!(zero.has(CMD_FLAG_NO_HOLE) && zero.has(CMD_FLAG_FAST_ZERO));
    assert_eq!(execute(header(CMD_FLAG_REQ_ONE, CMD_BLOCK_STATUS, 1), &STRUCTURED_RW).command, Command::BlockStatus);
    assert_eq!(decode_request(&header(0, CMD_DISC, 0), &SIMPLE_RO), Ok(Decision::Disconnect));

    // DF without structured replies, flags of other commands, unknown flags and commands: EINVAL.
    assert_eq!(rejected(header(CMD_FLAG_DF, CMD_READ, 1), &SIMPLE_RO), EINVAL);
    assert_eq!(rejected(header(CMD_FLAG_NO_HOLE, CMD_WRITE, 1), &STRUCTURED_RW), EINVAL);
    assert_eq!(rejected(header(1 << 9, CMD_READ, 1), &STRUCTURED_RW), EINVAL);
    assert_eq!(rejected(header(0, 99, 0), &STRUCTURED_RW), EINVAL);
    // Writes to a read-only export: EPERM.
    for command in [CMD_WRITE, CMD_TRIM, CMD_WRITE_ZEROES] {
        assert_eq!(rejected(header(0, command, 1), &SIMPLE_RO), EPERM, "command {command}");
    }
    // Block status without the context, or of nothing: EINVAL.
    assert_eq!(rejected(header(0, CMD_BLOCK_STATUS, 4096), &SIMPLE_RO), EINVAL);
    assert_eq!(rejected(header(0, CMD_BLOCK_STATUS, 0), &STRUCTURED_RW), EINVAL);
    // An oversized read is answered; an oversized write cannot be skipped safely, so it ends the connection.
    assert_eq!(rejected(header(0, CMD_READ, MAX_PAYLOAD_BYTES + 1), &STRUCTURED_RW), EINVAL);
    assert_eq!(
        decode_request(&header(0, CMD_WRITE, MAX_PAYLOAD_BYTES + 1), &STRUCTURED_RW),
        Err(ProtocolError::PayloadTooLarge(MAX_PAYLOAD_BYTES + 1))
    );
    assert!(matches!(decode_request(&header(0, CMD_READ, 9), &STRUCTURED_RW), Ok(Decision::Execute(_))));
    assert_eq!(payload_len(&header(0, CMD_WRITE, 9)), 9);
    assert_eq!(payload_len(&header(0, CMD_READ, 9)), 0);
}

#[test]
fn replies_have_the_documented_layout() {
    let mut out = Vec::new();
    simple_reply(&mut out, 0x0102_0304_0506_0708, EIO);
    assert_eq!(out, [&SIMPLE_REPLY_MAGIC.to_be_bytes()[..], &EIO.to_be_bytes(), &[1, 2, 3, 4, 5, 6, 7, 8]].concat());

    let mut out = Vec::new();
    error_chunk(&mut out, 9, EPERM, "no");
    assert_eq!(&out[0..4], &STRUCTURED_REPLY_MAGIC.to_be_bytes());
    assert_eq!(&out[4..6], &REPLY_FLAG_DONE.to_be_bytes());
    assert_eq!(&out[6..8], &REPLY_TYPE_ERROR.to_be_bytes());
    assert_eq!(&out[8..16], &9u64.to_be_bytes());
    assert_eq!(&out[16..20], &8u32.to_be_bytes());
    assert_eq!(&out[20..], [&EPERM.to_be_bytes()[..], &[0, 2], b"no"].concat());

    let mut out = Vec::new();
    block_status_chunk(
        &mut out,
        3,
        1,
        &[Descriptor { length: 4096, flags: 0 }, Descriptor { length: 512, flags: STATE_HOLE | STATE_ZERO }],
    );
    assert_eq!(&out[6..8], &REPLY_TYPE_BLOCK_STATUS.to_be_bytes());
    assert_eq!(&out[16..20], &20u32.to_be_bytes());
    assert_eq!(&out[20..], [1u32, 4096, 0, 512, 3].iter().flat_map(|v| v.to_be_bytes()).collect::<Vec<u8>>());

    let mut out = Vec::new();
    none_chunk(&mut out, 5);
    assert_eq!(out.len(), CHUNK_HEADER_LEN);
    assert_eq!(&out[4..8], &[0, 1, 0, 0]);
}

#[test]
fn truncation_respects_character_boundaries() {
    assert_eq!(truncate_str("abc", 2), "ab");
    assert_eq!(truncate_str("é", 1), "");
    assert_eq!(truncate_str("aé", 2), "a");
    assert_eq!(truncate_str("abc", 10), "abc");
}

/// Walks an arbitrary byte stream the way the connection reader does: header, decision, payload skip.
/// Returns the number of requests accepted for execution.
fn walk_request_stream(stream: &[u8], negotiated: &Negotiated) -> usize {
    let mut at = 0usize;
    let mut executed = 0usize;
    while let Some(chunk) = stream.get(at..at + REQUEST_HEADER_LEN) {
        let bytes: [u8; REQUEST_HEADER_LEN] = chunk.try_into().expect("exact length");
        at += REQUEST_HEADER_LEN;
        let Ok(header) = parse_request_header(&bytes) else { break };
        match decode_request(&header, negotiated) {
            Err(_) | Ok(Decision::Disconnect) => break,
            Ok(Decision::Reject { error, message, .. }) => {
                assert!(error != 0 && !message.is_empty());
            }
            Ok(Decision::Execute(request)) => {
                executed += 1;
                assert_eq!(request.cookie, header.cookie);
                if matches!(request.command, Command::Read | Command::Write) {
                    assert!(request.length <= MAX_PAYLOAD_BYTES);
                }
                if request.command == Command::BlockStatus {
                    assert!(negotiated.base_allocation.is_some() && request.length > 0);
                }
                if negotiated.read_only {
                    assert!(!matches!(request.command, Command::Write | Command::Trim | Command::WriteZeroes));
                }
                assert_eq!(request.flags & !0x1f, 0, "only known flags pass");
            }
        }
        at = at.saturating_add(payload_len(&header) as usize);
    }
    executed
}

fn negotiated_strategy() -> impl Strategy<Value = Negotiated> {
    (any::<bool>(), proptest::option::of(any::<u32>()), any::<bool>())
        .prop_map(|(structured, base_allocation, read_only)| Negotiated { structured, base_allocation, read_only })
}

/// Requests with a valid magic and plausible fields, so the fuzzer reaches the decoder, not only the magic check.
fn framed_request() -> impl Strategy<Value = Vec<u8>> {
    (any::<u16>(), 0u16..12, any::<u64>(), any::<u64>(), prop_oneof![0u32..70_000, any::<u32>()], 0usize..64).prop_map(
        |(flags, command, cookie, offset, length, payload)| {
            let mut out = request_bytes(flags, command, cookie, offset, length).to_vec();
            out.extend(std::iter::repeat_n(0xa5, payload));
            out
        },
    )
}

proptest! {
    // The parsers are cheap: run four times the default number of cases.
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn request_stream_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512),
                                         negotiated in negotiated_strategy()) {
        walk_request_stream(&bytes, &negotiated);
    }

    #[test]
    fn framed_requests_with_mutations_never_panic(requests in proptest::collection::vec(framed_request(), 1..16),
                                                  mutations in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8),
                                                  negotiated in negotiated_strategy()) {
        let mut stream: Vec<u8> = requests.concat();
        for (at, byte) in mutations {
            let len = stream.len();
            stream[at % len] = byte;
        }
        walk_request_stream(&stream, &negotiated);
    }

    #[test]
    fn option_parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = parse_info_request(&bytes);
        let _ = parse_meta_context_request(&bytes);
        if let Ok(header) = <[u8; OPTION_HEADER_LEN]>::try_from(&bytes[..bytes.len().min(OPTION_HEADER_LEN)])
            && let Ok(parsed) = parse_option_header(&header)
        {
            prop_assert!(parsed.length <= MAX_OPTION_BYTES);
        }
        if let Ok(flags) = <[u8; 4]>::try_from(&bytes[..bytes.len().min(4)]) {
            let _ = parse_client_flags(flags);
        }
    }

    #[test]
    fn info_requests_round_trip(name in "[a-z/@]{0,40}", requests in proptest::collection::vec(any::<u16>(), 0..8)) {
        let parsed = parse_info_request(&info_request_bytes(&name, &requests)).expect("valid request");
        prop_assert_eq!(parsed, InfoRequest { name, requests });
    }
}
