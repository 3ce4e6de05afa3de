//! The seed's workflows and the reference table's refusals, run against every backend with the same expectations.

mod data;
mod images;
mod snapshots;
mod trash;

use basalt_conformance::Target;
use basalt_core::{CreateOptions, Durability, ErrorKind, OpenTarget, SnapName};

pub const MIB: u64 = 1 << 20;

#[track_caller]
pub fn kind<T: std::fmt::Debug>(result: basalt_core::Result<T>) -> ErrorKind {
    result.expect_err("the operation must be refused").kind()
}

/// Creates `POOL/name` with the default features.
pub fn create(t: &Target, name: &str, size: u64) {
    t.backend.image_create(&t.spec(name), &CreateOptions::with_size(size)).expect("create image");
}

pub fn write(t: &Target, name: &str, offset: u64, data: &[u8]) {
    let io = t.backend.open(&t.spec(name), &OpenTarget::Head, "conformance").expect("open for writing");
    io.write(offset, data, Durability::Buffered).expect("write");
    io.flush().expect("flush");
}

pub fn read(t: &Target, name: &str, offset: u64, len: usize) -> Vec<u8> {
    read_at(t, name, &OpenTarget::HeadReadOnly, offset, len)
}

pub fn read_snap(t: &Target, name: &str, snap: &str, offset: u64, len: usize) -> Vec<u8> {
    read_at(t, name, &OpenTarget::Snapshot(SnapName::new(snap).expect("snapshot name")), offset, len)
}

fn read_at(t: &Target, name: &str, target: &OpenTarget, offset: u64, len: usize) -> Vec<u8> {
    let io = t.backend.open(&t.spec(name), target, "conformance").expect("open for reading");
    let mut buf = vec![0u8; len];
    io.read(offset, &mut buf).expect("read");
    buf
}
