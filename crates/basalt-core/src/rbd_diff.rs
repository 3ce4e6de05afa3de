//! Reader and writer of the RBD diff stream, versions 1 and 2, byte for byte as `rbd export-diff`,
//! `rbd import-diff` and `rbd export --export-format 2` write and read it, so basalt's incremental backups
//! interchange with a real Ceph cluster.
//!
//! The format (Ceph's `doc/dev/rbd-diff.rst`): a 12-byte banner, then records, each a one-byte tag and a
//! little-endian payload, ending with the tag `e`. Version 2 puts a little-endian u64 payload length after every
//! tag except `e`, so a reader can skip records it does not know.
//!
//! `rbd export-diff` and `rbd import-diff` only speak version 1; version 2 streams appear inside the
//! `rbd export --export-format 2` file (one per snapshot, back to back), which is why the reader never reads past
//! the end record and hands its source back with [`DiffReader::into_inner`].
//!
//! The reader checks what is needed to decode safely: the banner, record tags, bounded lengths, a v2 record
//! length that agrees with its payload, and offset + length within 64 bits. It does not check the meaning of the
//! stream, as `rbd import-diff` does not either; the caller applying a stream must check that:
//! - metadata records (from-snap, to-snap, protection, size) come before data and zero records (the spec asks
//!   for it; `rbd import-diff` applies records in whatever order they come);
//! - each metadata record appears at most once (`rbd import-diff` lets a later one win);
//! - data and zero extents lie within the size of the `s` record;
//! - the from-snapshot exists on the target image and the to-snapshot does not, and both are valid names there.

use std::io::{self, Read, Write};

use crate::error::{Error, Result};
use crate::names::NAME_LEN_MAX_BYTES;

/// The banner of a version 1 stream.
pub const DIFF_V1_BANNER: &[u8; 12] = b"rbd diff v1\n";

/// The banner of a version 2 stream.
pub const DIFF_V2_BANNER: &[u8; 12] = b"rbd diff v2\n";

/// The most data one `w` record may carry. `rbd export-diff` writes one record per changed extent of one
/// object, and objects are at most 32 MiB (order 25), so real streams stay well below this; the bound keeps a
/// corrupt or hostile length from making the reader allocate without limit.
pub const DATA_RECORD_LEN_MAX_BYTES: u64 = 64 << 20;

// Record tags, as defined in Ceph's `src/tools/rbd/Utils.h`.
const TAG_FROM_SNAP: u8 = b'f';
const TAG_TO_SNAP: u8 = b't';
const TAG_SNAP_PROTECTED: u8 = b'p';
const TAG_SIZE: u8 = b's';
const TAG_DATA: u8 = b'w';
const TAG_ZERO: u8 = b'z';
const TAG_END: u8 = b'e';

/// The version of a diff stream, named by its banner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DiffVersion {
    /// `rbd diff v1\n`: records carry no length; what `rbd export-diff` writes.
    V1,
    /// `rbd diff v2\n`: every record but the end carries its payload length.
    V2,
}

impl DiffVersion {
    /// Returns the banner that starts a stream of this version.
    pub fn banner(self) -> &'static [u8; 12] {
        match self {
            DiffVersion::V1 => DIFF_V1_BANNER,
            DiffVersion::V2 => DIFF_V2_BANNER,
        }
    }
}

/// One record of a diff stream. The end record is not a variant: [`DiffWriter::finish`] writes it and
/// [`DiffReader::next_record`] answers `Ok(None)` once it has read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiffRecord {
    /// `f`: the snapshot the diff starts from; absent when the diff starts from an empty image.
    FromSnap(String),
    /// `t`: the snapshot the diff ends at, which the importer creates; absent when it ends at the image head.
    ToSnap(String),
    /// `p`: whether the to-snapshot is protected, so the importer protects it too. Ceph writes it only in
    /// version 2 streams, right after `t`; [`DiffWriter`] refuses it in version 1 because older `rbd` reject it.
    SnapProtected(bool),
    /// `s`: the image size at the end of the diff.
    Size(u64),
    /// `w`: bytes to write at `offset`.
    Data {
        /// Byte offset in the image.
        offset: u64,
        /// The bytes; at most [`DATA_RECORD_LEN_MAX_BYTES`].
        data: Vec<u8>,
    },
    /// `z`: a range that reads as zeros (discarded or zero-filled).
    Zero {
        /// Byte offset in the image.
        offset: u64,
        /// Length of the range in bytes.
        length: u64,
    },
}

impl DiffRecord {
    /// True for the records the spec requires before any data or zero record.
    pub fn is_metadata(&self) -> bool {
        matches!(
            self,
            DiffRecord::FromSnap(_) | DiffRecord::ToSnap(_) | DiffRecord::SnapProtected(_) | DiffRecord::Size(_)
        )
    }
}

fn check_name_len(len: usize) -> Result<()> {
    if len > NAME_LEN_MAX_BYTES {
        return Err(Error::invalid(format!(
            "rbd diff snapshot name is {len} bytes long; the limit is {NAME_LEN_MAX_BYTES}"
        )));
    }
    Ok(())
}

fn check_data_len(len: u64) -> Result<()> {
    if len > DATA_RECORD_LEN_MAX_BYTES {
        return Err(Error::invalid(format!(
            "rbd diff data record is {len} bytes long; the limit is {DATA_RECORD_LEN_MAX_BYTES}"
        )));
    }
    Ok(())
}

fn check_extent(offset: u64, length: u64) -> Result<()> {
    if offset.checked_add(length).is_none() {
        return Err(Error::invalid(format!("rbd diff extent {offset}~{length} ends beyond 2^64 bytes")));
    }
    Ok(())
}

/// Writes a diff stream: the banner on creation, then records, then the end record on [`DiffWriter::finish`].
///
/// The writer keeps the spec's order (metadata first) and the reader's bounds, so what it writes reads back.
/// After an error the stream is incomplete and should be discarded.
#[derive(Debug)]
pub struct DiffWriter<W: Write> {
    inner: W,
    version: DiffVersion,
    /// Set by the first data or zero record; metadata after it would break the spec's order.
    data_started: bool,
}

impl<W: Write> DiffWriter<W> {
    /// Starts a stream of `version` on `inner` by writing its banner.
    pub fn new(mut inner: W, version: DiffVersion) -> Result<Self> {
        inner.write_all(version.banner())?;
        Ok(DiffWriter { inner, version, data_started: false })
    }

    /// Returns the version being written.
    pub fn version(&self) -> DiffVersion {
        self.version
    }

    /// Appends one record.
    pub fn write_record(&mut self, record: &DiffRecord) -> Result<()> {
        if record.is_metadata() && self.data_started {
            return Err(Error::invalid("rbd diff metadata records must come before data and zero records"));
        }
        // The tag, the v2 length and the fixed fields go out in one small buffer; data bytes follow it
        // unbuffered so a large record is not copied.
        let mut head = Vec::with_capacity(1 + 8 + 16);
        let mut payload: &[u8] = &[];
        match record {
            DiffRecord::FromSnap(name) | DiffRecord::ToSnap(name) => {
                check_name_len(name.len())?;
                let tag = if matches!(record, DiffRecord::FromSnap(_)) { TAG_FROM_SNAP } else { TAG_TO_SNAP };
                self.put_head(&mut head, tag, 4 + name.len() as u64);
                // check_name_len bounds the length far below u32::MAX.
                head.extend_from_slice(&(name.len() as u32).to_le_bytes());
                payload = name.as_bytes();
            }
            DiffRecord::SnapProtected(protected) => {
                if self.version == DiffVersion::V1 {
                    return Err(Error::invalid(
                        "rbd diff v1 has no snapshot protection record; older rbd import-diff rejects it",
                    ));
                }
                self.put_head(&mut head, TAG_SNAP_PROTECTED, 1);
                head.push(u8::from(*protected));
            }
            DiffRecord::Size(size) => {
                self.put_head(&mut head, TAG_SIZE, 8);
                head.extend_from_slice(&size.to_le_bytes());
            }
            DiffRecord::Data { offset, data } => {
                let length = data.len() as u64;
                check_data_len(length)?;
                check_extent(*offset, length)?;
                self.put_head(&mut head, TAG_DATA, 16 + length);
                head.extend_from_slice(&offset.to_le_bytes());
                head.extend_from_slice(&length.to_le_bytes());
                payload = data;
            }
            DiffRecord::Zero { offset, length } => {
                check_extent(*offset, *length)?;
                self.put_head(&mut head, TAG_ZERO, 16);
                head.extend_from_slice(&offset.to_le_bytes());
                head.extend_from_slice(&length.to_le_bytes());
            }
        }
        self.inner.write_all(&head)?;
        self.inner.write_all(payload)?;
        if !record.is_metadata() {
            self.data_started = true;
        }
        Ok(())
    }

    fn put_head(&self, head: &mut Vec<u8>, tag: u8, payload_len: u64) {
        head.push(tag);
        if self.version == DiffVersion::V2 {
            head.extend_from_slice(&payload_len.to_le_bytes());
        }
    }

    /// Writes the end record (a bare `e` in both versions), flushes, and returns the sink.
    pub fn finish(mut self) -> Result<W> {
        self.inner.write_all(&[TAG_END])?;
        self.inner.flush()?;
        Ok(self.inner)
    }
}

/// Reads a diff stream record by record, never past its end record.
#[derive(Debug)]
pub struct DiffReader<R: Read> {
    inner: R,
    version: DiffVersion,
    ended: bool,
}

impl<R: Read> DiffReader<R> {
    /// Reads the banner of the stream on `inner` and learns its version from it.
    pub fn new(mut inner: R) -> Result<Self> {
        let mut banner = [0u8; 12];
        read_exact_or_invalid(&mut inner, &mut banner, "banner")?;
        let version = if &banner == DIFF_V1_BANNER {
            DiffVersion::V1
        } else if &banner == DIFF_V2_BANNER {
            DiffVersion::V2
        } else {
            return Err(Error::invalid(format!(
                "not an rbd diff stream: the banner is {:?}, expected \"rbd diff v1\\n\" or \"rbd diff v2\\n\"",
                String::from_utf8_lossy(&banner)
            )));
        };
        Ok(DiffReader { inner, version, ended: false })
    }

    /// Returns the version named by the banner.
    pub fn version(&self) -> DiffVersion {
        self.version
    }

    /// Returns the source, positioned just after the end record if it was read (where the next diff of an
    /// `rbd export --export-format 2` file starts).
    pub fn into_inner(self) -> R {
        self.inner
    }

    /// Returns the next record, or `Ok(None)` once the end record has been read (and on every call after).
    pub fn next_record(&mut self) -> Result<Option<DiffRecord>> {
        if self.ended {
            return Ok(None);
        }
        loop {
            let mut tag = [0u8; 1];
            if let Err(err) = self.inner.read_exact(&mut tag) {
                if err.kind() == io::ErrorKind::UnexpectedEof {
                    return Err(Error::invalid("rbd diff stream ends without an end record"));
                }
                return Err(err.into());
            }
            let tag = tag[0];
            if tag == TAG_END {
                // The end record carries no length even in v2 (Ceph's `read_tag` skips it for `e`).
                self.ended = true;
                return Ok(None);
            }
            let declared = match self.version {
                DiffVersion::V1 => None,
                DiffVersion::V2 => Some(self.read_u64("record length")?),
            };
            let record = match tag {
                TAG_FROM_SNAP => DiffRecord::FromSnap(self.read_name(tag, declared)?),
                TAG_TO_SNAP => DiffRecord::ToSnap(self.read_name(tag, declared)?),
                TAG_SNAP_PROTECTED => {
                    check_declared(tag, declared, 1)?;
                    let mut byte = [0u8; 1];
                    self.read_exact(&mut byte, "snapshot protection record")?;
                    // Ceph encodes a bool as one byte and reads any non-zero value as true.
                    DiffRecord::SnapProtected(byte[0] != 0)
                }
                TAG_SIZE => {
                    check_declared(tag, declared, 8)?;
                    DiffRecord::Size(self.read_u64("size record")?)
                }
                TAG_DATA => {
                    let offset = self.read_u64("data record offset")?;
                    let length = self.read_u64("data record length")?;
                    // Bound the length before using it in the v2 check or an allocation.
                    check_data_len(length)?;
                    check_declared(tag, declared, 16 + length)?;
                    check_extent(offset, length)?;
                    // The bound above keeps this well inside usize on every supported target.
                    let mut data = vec![0u8; length as usize];
                    self.read_exact(&mut data, "data record")?;
                    DiffRecord::Data { offset, data }
                }
                TAG_ZERO => {
                    check_declared(tag, declared, 16)?;
                    let offset = self.read_u64("zero record offset")?;
                    let length = self.read_u64("zero record length")?;
                    check_extent(offset, length)?;
                    DiffRecord::Zero { offset, length }
                }
                _ => match declared {
                    // v1 records carry no length, so an unknown one cannot be stepped over.
                    None => {
                        return Err(Error::invalid(format!("rbd diff v1 stream has an unknown record tag {tag:#04x}")));
                    }
                    // v2 exists so that readers can step over records added later, as `rbd import` does.
                    Some(length) => {
                        self.skip(length)?;
                        continue;
                    }
                },
            };
            return Ok(Some(record));
        }
    }

    fn read_exact(&mut self, buf: &mut [u8], what: &str) -> Result<()> {
        read_exact_or_invalid(&mut self.inner, buf, what)
    }

    fn read_u64(&mut self, what: &str) -> Result<u64> {
        let mut bytes = [0u8; 8];
        self.read_exact(&mut bytes, what)?;
        Ok(u64::from_le_bytes(bytes))
    }

    fn read_name(&mut self, tag: u8, declared: Option<u64>) -> Result<String> {
        let mut len = [0u8; 4];
        self.read_exact(&mut len, "snapshot name length")?;
        let len = u32::from_le_bytes(len) as usize;
        check_name_len(len)?;
        check_declared(tag, declared, 4 + len as u64)?;
        let mut name = vec![0u8; len];
        self.read_exact(&mut name, "snapshot name")?;
        String::from_utf8(name).map_err(|_| Error::invalid("rbd diff snapshot name is not valid UTF-8"))
    }

    fn skip(&mut self, length: u64) -> Result<()> {
        // Copy into a sink rather than allocate: the length of an unknown record is not bounded.
        let skipped = io::copy(&mut (&mut self.inner).take(length), &mut io::sink())?;
        if skipped < length {
            return Err(Error::invalid(format!(
                "rbd diff stream is truncated inside an unknown record of {length} bytes"
            )));
        }
        Ok(())
    }
}

/// Checks a v2 record length against the payload its tag implies. Ceph's importer ignores the length of the
/// records it knows; a mismatch means the stream is corrupt and the next tag would be read from the wrong place.
fn check_declared(tag: u8, declared: Option<u64>, expected: u64) -> Result<()> {
    match declared {
        Some(declared) if declared != expected => Err(Error::invalid(format!(
            "rbd diff v2 record '{}' declares {declared} payload bytes; its fields take {expected}",
            char::from(tag)
        ))),
        _ => Ok(()),
    }
}

/// Reads exactly `buf.len()` bytes; running out of input is a malformed stream (EINVAL), not an I/O failure.
fn read_exact_or_invalid(inner: &mut impl Read, buf: &mut [u8], what: &str) -> Result<()> {
    match inner.read_exact(buf) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => {
            Err(Error::invalid(format!("rbd diff stream is truncated: it ends inside the {what}")))
        }
        Err(err) => Err(err.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    fn encode(version: DiffVersion, records: &[DiffRecord]) -> Vec<u8> {
        let mut writer = DiffWriter::new(Vec::new(), version).expect("banner");
        for record in records {
            writer.write_record(record).expect("record");
        }
        writer.finish().expect("finish")
    }

    fn decode(bytes: &[u8]) -> Result<(DiffVersion, Vec<DiffRecord>)> {
        let mut reader = DiffReader::new(bytes)?;
        let mut records = Vec::new();
        while let Some(record) = reader.next_record()? {
            records.push(record);
        }
        Ok((reader.version(), records))
    }

    fn assert_invalid(result: Result<impl std::fmt::Debug>, needle: &str) {
        match result {
            Ok(value) => panic!("expected an error containing {needle:?}, got {value:?}"),
            Err(err) => {
                assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
                assert!(err.message().contains(needle), "{err} should mention {needle:?}");
            }
        }
    }

    fn every_record() -> Vec<DiffRecord> {
        vec![
            DiffRecord::FromSnap("monday".to_owned()),
            DiffRecord::ToSnap("tuesday".to_owned()),
            DiffRecord::SnapProtected(true),
            DiffRecord::Size(10 << 30),
            DiffRecord::Data { offset: 4096, data: (0..=255).collect() },
            DiffRecord::Data { offset: 0, data: Vec::new() },
            DiffRecord::Zero { offset: 1 << 20, length: 4 << 20 },
            DiffRecord::Zero { offset: u64::MAX, length: 0 },
        ]
    }

    #[test]
    fn every_record_round_trips_in_v2() {
        let records = every_record();
        let bytes = encode(DiffVersion::V2, &records);
        assert_eq!(decode(&bytes).expect("decode"), (DiffVersion::V2, records));
    }

    #[test]
    fn every_record_round_trips_in_v1() {
        let records: Vec<_> =
            every_record().into_iter().filter(|r| !matches!(r, DiffRecord::SnapProtected(_))).collect();
        let bytes = encode(DiffVersion::V1, &records);
        assert_eq!(decode(&bytes).expect("decode"), (DiffVersion::V1, records));
    }

    /// The small stream of the byte-exact tests: from `a` to `bc`, 4 KiB, two bytes written at 0x200, 512
    /// bytes zeroed at 0x400.
    fn small_stream(protected: bool) -> Vec<DiffRecord> {
        let mut records = vec![DiffRecord::FromSnap("a".to_owned()), DiffRecord::ToSnap("bc".to_owned())];
        if protected {
            records.push(DiffRecord::SnapProtected(true));
        }
        records.extend([
            DiffRecord::Size(0x1000),
            DiffRecord::Data { offset: 0x200, data: vec![0xaa, 0xbb] },
            DiffRecord::Zero { offset: 0x400, length: 0x200 },
        ]);
        records
    }

    // Expected bytes from doc/dev/rbd-diff.rst: u8 tag, le32 name length + name, le64 size, le64 offset,
    // le64 length (+ data), and a bare 'e'.
    const SMALL_V1: &[&[u8]] = &[
        b"rbd diff v1\n",
        &[b'f', 1, 0, 0, 0, b'a'],
        &[b't', 2, 0, 0, 0, b'b', b'c'],
        &[b's', 0x00, 0x10, 0, 0, 0, 0, 0, 0],
        &[b'w', 0x00, 0x02, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0xaa, 0xbb],
        &[b'z', 0x00, 0x04, 0, 0, 0, 0, 0, 0, 0x00, 0x02, 0, 0, 0, 0, 0, 0],
        b"e",
    ];

    // The same in v2: after each tag but 'e', le64 payload length (4 + name, 1, 8, 16 + data, 16).
    const SMALL_V2: &[&[u8]] = &[
        b"rbd diff v2\n",
        &[b'f', 5, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, b'a'],
        &[b't', 6, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, b'b', b'c'],
        &[b'p', 1, 0, 0, 0, 0, 0, 0, 0, 1],
        &[b's', 8, 0, 0, 0, 0, 0, 0, 0, 0x00, 0x10, 0, 0, 0, 0, 0, 0],
        &[b'w', 18, 0, 0, 0, 0, 0, 0, 0, 0x00, 0x02, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0xaa, 0xbb],
        &[b'z', 16, 0, 0, 0, 0, 0, 0, 0, 0x00, 0x04, 0, 0, 0, 0, 0, 0, 0x00, 0x02, 0, 0, 0, 0, 0, 0],
        b"e",
    ];

    #[test]
    fn v1_encoding_matches_the_spec_byte_for_byte() {
        let expected = SMALL_V1.concat();
        assert_eq!(encode(DiffVersion::V1, &small_stream(false)), expected);
        assert_eq!(decode(&expected).expect("decode"), (DiffVersion::V1, small_stream(false)));
    }

    #[test]
    fn v2_encoding_matches_the_spec_byte_for_byte() {
        let expected = SMALL_V2.concat();
        assert_eq!(encode(DiffVersion::V2, &small_stream(true)), expected);
        assert_eq!(decode(&expected).expect("decode"), (DiffVersion::V2, small_stream(true)));
    }

    #[test]
    fn every_truncation_is_rejected() {
        for full in [SMALL_V1.concat(), SMALL_V2.concat()] {
            for cut in 0..full.len() {
                let err = decode(&full[..cut]).expect_err("a truncated stream must not decode");
                assert_eq!(err.kind(), ErrorKind::InvalidArgument, "cut at {cut}: {err}");
            }
        }
    }

    #[test]
    fn a_missing_end_record_is_rejected() {
        let full = SMALL_V1.concat();
        assert_invalid(decode(&full[..full.len() - 1]), "without an end record");
        assert_invalid(decode(b"rbd diff v2\n"), "without an end record");
    }

    #[test]
    fn a_truncated_record_says_where() {
        assert_invalid(decode(b"rbd diff v1\ns\x00\x10"), "inside the size record");
        assert_invalid(decode(b"rbd diff v1\nf\x05\x00\x00\x00ab"), "inside the snapshot name");
    }

    #[test]
    fn bad_banners_are_rejected() {
        for banner in
            [&b"rbd diff v3\n"[..], b"rbd image v2\n", b"RBD DIFF V1\n", b"rbd diff v1\r", b"\0\0\0\0\0\0\0\0\0\0\0\0"]
        {
            let mut bytes = banner.to_vec();
            bytes.push(b'e');
            assert_invalid(DiffReader::new(&bytes[..]), "not an rbd diff stream");
        }
        assert_invalid(DiffReader::new(&b""[..]), "truncated");
        assert_invalid(DiffReader::new(&b"rbd diff v1"[..]), "truncated");
    }

    #[test]
    fn oversize_lengths_are_rejected_before_allocating() {
        // Neither stream holds the bytes its length announces: the bound must trip before any read or
        // allocation of them.
        let mut data = b"rbd diff v1\nw".to_vec();
        data.extend_from_slice(&0u64.to_le_bytes());
        data.extend_from_slice(&(DATA_RECORD_LEN_MAX_BYTES + 1).to_le_bytes());
        assert_invalid(decode(&data), "the limit is");

        let mut data = b"rbd diff v2\nw".to_vec();
        data.extend_from_slice(&u64::MAX.to_le_bytes());
        data.extend_from_slice(&0u64.to_le_bytes());
        data.extend_from_slice(&u64::MAX.to_le_bytes());
        assert_invalid(decode(&data), "the limit is");

        for len in [NAME_LEN_MAX_BYTES as u32 + 1, u32::MAX] {
            let mut name = b"rbd diff v1\nt".to_vec();
            name.extend_from_slice(&len.to_le_bytes());
            assert_invalid(decode(&name), "the limit is");
        }
    }

    #[test]
    fn the_longest_name_is_accepted_and_a_longer_one_is_not_written() {
        let longest = DiffRecord::ToSnap("n".repeat(NAME_LEN_MAX_BYTES));
        let bytes = encode(DiffVersion::V2, std::slice::from_ref(&longest));
        assert_eq!(decode(&bytes).expect("decode").1, vec![longest]);

        let mut writer = DiffWriter::new(Vec::new(), DiffVersion::V1).expect("banner");
        assert_invalid(writer.write_record(&DiffRecord::FromSnap("n".repeat(NAME_LEN_MAX_BYTES + 1))), "the limit is");
    }

    #[test]
    fn unknown_v1_tags_are_rejected() {
        assert_invalid(decode(b"rbd diff v1\nxe"), "unknown record tag 0x78");
        // 'E' ends the image header of `rbd export --export-format 2`, not a diff.
        assert_invalid(decode(b"rbd diff v1\nE"), "unknown record tag 0x45");
    }

    #[test]
    fn unknown_v2_records_are_skipped_by_their_length() {
        let bytes = [
            &b"rbd diff v2\n"[..],
            &[b'f', 5, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, b'a'],
            // An unknown 'X' record with three payload bytes, the middle one an 'e' that must not end the stream.
            &[b'X', 3, 0, 0, 0, 0, 0, 0, 0, 1, b'e', 3],
            // An unknown record with no payload.
            &[b'Y', 0, 0, 0, 0, 0, 0, 0, 0],
            &[b's', 8, 0, 0, 0, 0, 0, 0, 0, 0x00, 0x10, 0, 0, 0, 0, 0, 0],
            b"e",
        ]
        .concat();
        let expected = vec![DiffRecord::FromSnap("a".to_owned()), DiffRecord::Size(0x1000)];
        assert_eq!(decode(&bytes).expect("decode"), (DiffVersion::V2, expected));

        // An unknown record whose length runs past the end of the stream is truncation, whatever its size.
        let mut cut = b"rbd diff v2\nX".to_vec();
        cut.extend_from_slice(&u64::MAX.to_le_bytes());
        cut.extend_from_slice(b"abc");
        assert_invalid(decode(&cut), "truncated inside an unknown record");
    }

    #[test]
    fn v2_lengths_that_disagree_with_the_payload_are_rejected() {
        assert_invalid(decode(b"rbd diff v2\ns\x07\0\0\0\0\0\0\0\0\x10\0\0\0\0\0\0e"), "declares 7 payload bytes");
        assert_invalid(decode(b"rbd diff v2\nf\x04\0\0\0\0\0\0\0\x01\0\0\0ae"), "declares 4 payload bytes");
        let mut data = b"rbd diff v2\nw".to_vec();
        data.extend_from_slice(&16u64.to_le_bytes());
        data.extend_from_slice(&0u64.to_le_bytes());
        data.extend_from_slice(&1u64.to_le_bytes());
        data.extend_from_slice(b"xe");
        assert_invalid(decode(&data), "its fields take 17");
    }

    #[test]
    fn extents_past_two_to_the_64_are_rejected() {
        let mut zero = b"rbd diff v1\nz".to_vec();
        zero.extend_from_slice(&u64::MAX.to_le_bytes());
        zero.extend_from_slice(&1u64.to_le_bytes());
        zero.push(b'e');
        assert_invalid(decode(&zero), "beyond 2^64");

        let mut writer = DiffWriter::new(Vec::new(), DiffVersion::V2).expect("banner");
        assert_invalid(writer.write_record(&DiffRecord::Zero { offset: 1, length: u64::MAX }), "beyond 2^64");
        assert_invalid(writer.write_record(&DiffRecord::Data { offset: u64::MAX, data: vec![0] }), "beyond 2^64");
    }

    #[test]
    fn names_must_be_utf8() {
        assert_invalid(decode(b"rbd diff v1\nf\x02\0\0\0\xff\xfee"), "UTF-8");
    }

    #[test]
    fn any_non_zero_protection_byte_means_protected() {
        let (_, records) = decode(b"rbd diff v2\np\x01\0\0\0\0\0\0\0\x02e").expect("decode");
        assert_eq!(records, vec![DiffRecord::SnapProtected(true)]);
        let (_, records) = decode(b"rbd diff v2\np\x01\0\0\0\0\0\0\0\x00e").expect("decode");
        assert_eq!(records, vec![DiffRecord::SnapProtected(false)]);
        // Current rbd import-diff also takes 'p' in v1, where it has no length.
        let (_, records) = decode(b"rbd diff v1\np\x01e").expect("decode");
        assert_eq!(records, vec![DiffRecord::SnapProtected(true)]);
    }

    #[test]
    fn the_writer_keeps_the_spec_order_and_v1_records() {
        let mut writer = DiffWriter::new(Vec::new(), DiffVersion::V1).expect("banner");
        assert_invalid(writer.write_record(&DiffRecord::SnapProtected(false)), "no snapshot protection record");
        writer.write_record(&DiffRecord::Size(4096)).expect("size");
        writer.write_record(&DiffRecord::Zero { offset: 0, length: 4096 }).expect("zero");
        assert_invalid(writer.write_record(&DiffRecord::Size(8192)), "must come before");
        assert_invalid(writer.write_record(&DiffRecord::ToSnap("late".to_owned())), "must come before");
        writer.write_record(&DiffRecord::Data { offset: 0, data: vec![1] }).expect("data after zero");
        let bytes = writer.finish().expect("finish");
        // The refused records left no bytes behind.
        let expected = vec![
            DiffRecord::Size(4096),
            DiffRecord::Zero { offset: 0, length: 4096 },
            DiffRecord::Data { offset: 0, data: vec![1] },
        ];
        assert_eq!(decode(&bytes).expect("decode").1, expected);
    }

    #[test]
    fn the_reader_stops_at_the_end_record() {
        // `rbd export --export-format 2` puts diffs back to back; the second must be left for the next reader.
        let first = encode(DiffVersion::V2, &[DiffRecord::ToSnap("s1".to_owned())]);
        let second = encode(DiffVersion::V2, &[DiffRecord::FromSnap("s1".to_owned())]);
        let both = [first, second.clone()].concat();
        let mut reader = DiffReader::new(&both[..]).expect("banner");
        assert_eq!(reader.next_record().expect("record"), Some(DiffRecord::ToSnap("s1".to_owned())));
        assert_eq!(reader.next_record().expect("end"), None);
        assert_eq!(reader.next_record().expect("still ended"), None);
        assert_eq!(reader.into_inner(), &second[..]);
    }

    #[test]
    fn io_errors_keep_their_kind() {
        #[derive(Debug)]
        struct Failing;
        impl Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("disk on fire"))
            }
        }
        let err = DiffReader::new(Failing).expect_err("failing source");
        assert_eq!(err.kind(), ErrorKind::Io, "{err}");
    }
}
