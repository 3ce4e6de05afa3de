//! Key-value records in a RADOS object's omap: what basalt keeps in the cluster besides images (users, roles,
//! sessions, task records, performance samples), so that several servers in front of one cluster share them.
//!
//! Each call is one RADOS operation, atomic on its object. Keys are UTF-8 (as basalt writes them); values are bytes.

use std::ffi::{CString, c_char, c_int};
use std::ptr;

use basalt_core::Result;

use crate::error::check;
use crate::ffi;
use crate::rados::IoCtx;
use crate::util::c_string;

/// Entries read per round trip when listing.
const PAGE: u64 = 1024;

/// A write operation, released on drop.
struct WriteOp(ffi::rados_write_op_t);

impl Drop for WriteOp {
    fn drop(&mut self) {
        // SAFETY: created by rados_create_write_op and released once.
        unsafe { ffi::rados_release_write_op(self.0) };
    }
}

/// A read operation, released on drop.
struct ReadOp(ffi::rados_read_op_t);

impl Drop for ReadOp {
    fn drop(&mut self) {
        // SAFETY: created by rados_create_read_op and released once.
        unsafe { ffi::rados_release_read_op(self.0) };
    }
}

/// An omap iterator, ended on drop.
struct Iter(ffi::rados_omap_iter_t);

impl Drop for Iter {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: filled by a read op that ran, ended once.
            unsafe { ffi::rados_omap_get_end(self.0) };
        }
    }
}

impl Iter {
    /// Drains the iterator into `out`; returns the last key seen.
    fn drain(&self, out: &mut Vec<(String, Vec<u8>)>) -> Result<Option<String>> {
        let mut last = None;
        loop {
            let (mut key, mut val): (*mut c_char, *mut c_char) = (ptr::null_mut(), ptr::null_mut());
            let (mut key_len, mut val_len) = (0usize, 0usize);
            // SAFETY: valid iterator and out-pointers.
            let ret = unsafe { ffi::rados_omap_get_next2(self.0, &mut key, &mut val, &mut key_len, &mut val_len) };
            check(ret, || "reading an omap entry")?;
            if key.is_null() {
                return Ok(last);
            }
            // SAFETY: librados returns buffers of the given lengths, valid until the next call.
            let (key, value) = unsafe {
                let key = std::slice::from_raw_parts(key.cast::<u8>(), key_len);
                let value = if val.is_null() { &[][..] } else { std::slice::from_raw_parts(val.cast::<u8>(), val_len) };
                (String::from_utf8_lossy(key).into_owned(), value.to_vec())
            };
            last = Some(key.clone());
            out.push((key, value));
        }
    }
}

fn keys_of(keys: &[&str]) -> Result<(Vec<CString>, Vec<usize>)> {
    let c_keys = keys.iter().map(|k| c_string(k, "omap key")).collect::<Result<Vec<_>>>()?;
    let lens = keys.iter().map(|k| k.len()).collect();
    Ok((c_keys, lens))
}

impl IoCtx {
    /// Every entry of `object`'s omap, sorted by key; an object that does not exist has none.
    pub fn omap_list(&self, object: &str) -> Result<Vec<(String, Vec<u8>)>> {
        let oid = c_string(object, "object name")?;
        let mut out = Vec::new();
        let mut after = CString::default();
        loop {
            // SAFETY: creates a read op, released by the guard.
            let op = ReadOp(unsafe { ffi::rados_create_read_op() });
            let mut iter = Iter(ptr::null_mut());
            let (mut more, mut prval): (u8, c_int) = (0, 0);
            // SAFETY: valid op; the strings and out-pointers outlive the operate call below.
            unsafe {
                ffi::rados_read_op_omap_get_vals2(
                    op.0,
                    after.as_ptr(),
                    c"".as_ptr(),
                    PAGE,
                    &mut iter.0,
                    &mut more,
                    &mut prval,
                )
            };
            // SAFETY: valid op, context and object name.
            let ret = unsafe { ffi::rados_read_op_operate(op.0, self.raw(), oid.as_ptr(), 0) };
            if ret == -libc::ENOENT {
                return Ok(out);
            }
            check(ret, || format!("listing the omap of {object}"))?;
            check(prval, || format!("listing the omap of {object}"))?;
            let last = iter.drain(&mut out)?;
            match last {
                Some(last) if more != 0 => after = c_string(&last, "omap key")?,
                _ => return Ok(out),
            }
        }
    }

    /// One omap value of `object`, if present.
    pub fn omap_get(&self, object: &str, key: &str) -> Result<Option<Vec<u8>>> {
        let oid = c_string(object, "object name")?;
        let (c_keys, lens) = keys_of(&[key])?;
        let ptrs: Vec<*const c_char> = c_keys.iter().map(|k| k.as_ptr()).collect();
        // SAFETY: creates a read op, released by the guard.
        let op = ReadOp(unsafe { ffi::rados_create_read_op() });
        let mut iter = Iter(ptr::null_mut());
        let mut prval: c_int = 0;
        // SAFETY: valid op; keys, lengths and out-pointers outlive the operate call.
        unsafe {
            ffi::rados_read_op_omap_get_vals_by_keys2(op.0, ptrs.as_ptr(), 1, lens.as_ptr(), &mut iter.0, &mut prval)
        };
        // SAFETY: valid op, context and object name.
        let ret = unsafe { ffi::rados_read_op_operate(op.0, self.raw(), oid.as_ptr(), 0) };
        if ret == -libc::ENOENT {
            return Ok(None);
        }
        check(ret, || format!("reading {key} from the omap of {object}"))?;
        check(prval, || format!("reading {key} from the omap of {object}"))?;
        let mut out = Vec::new();
        iter.drain(&mut out)?;
        Ok(out.into_iter().find(|(k, _)| k == key).map(|(_, v)| v))
    }

    /// Sets omap entries of `object`, creating the object if needed.
    pub fn omap_set(&self, object: &str, entries: &[(&str, &[u8])]) -> Result<()> {
        let oid = c_string(object, "object name")?;
        let keys: Vec<&str> = entries.iter().map(|(k, _)| *k).collect();
        let (c_keys, key_lens) = keys_of(&keys)?;
        let key_ptrs: Vec<*const c_char> = c_keys.iter().map(|k| k.as_ptr()).collect();
        let val_ptrs: Vec<*const c_char> = entries.iter().map(|(_, v)| v.as_ptr().cast::<c_char>()).collect();
        let val_lens: Vec<usize> = entries.iter().map(|(_, v)| v.len()).collect();
        // SAFETY: creates a write op, released by the guard.
        let op = WriteOp(unsafe { ffi::rados_create_write_op() });
        // SAFETY: valid op; every array holds `entries.len()` items that outlive the operate call.
        unsafe {
            ffi::rados_write_op_create(op.0, ffi::LIBRADOS_CREATE_IDEMPOTENT as c_int, ptr::null());
            ffi::rados_write_op_omap_set2(
                op.0,
                key_ptrs.as_ptr(),
                val_ptrs.as_ptr(),
                key_lens.as_ptr(),
                val_lens.as_ptr(),
                entries.len(),
            );
        }
        // SAFETY: valid op, context and object name.
        let ret = unsafe { ffi::rados_write_op_operate(op.0, self.raw(), oid.as_ptr(), ptr::null_mut(), 0) };
        check(ret, || format!("writing the omap of {object}"))?;
        Ok(())
    }

    /// Removes omap keys of `object` (absent keys and a missing object are fine).
    pub fn omap_remove(&self, object: &str, keys: &[&str]) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let oid = c_string(object, "object name")?;
        let (c_keys, key_lens) = keys_of(keys)?;
        let key_ptrs: Vec<*const c_char> = c_keys.iter().map(|k| k.as_ptr()).collect();
        // SAFETY: creates a write op, released by the guard.
        let op = WriteOp(unsafe { ffi::rados_create_write_op() });
        // SAFETY: valid op; the arrays hold `keys.len()` items that outlive the operate call.
        unsafe { ffi::rados_write_op_omap_rm_keys2(op.0, key_ptrs.as_ptr(), key_lens.as_ptr(), keys.len()) };
        // SAFETY: valid op, context and object name.
        let ret = unsafe { ffi::rados_write_op_operate(op.0, self.raw(), oid.as_ptr(), ptr::null_mut(), 0) };
        if ret == -libc::ENOENT {
            return Ok(());
        }
        check(ret, || format!("removing keys from the omap of {object}"))?;
        Ok(())
    }
}

impl IoCtx {
    /// Removes the omap keys of `object` in `[start, end)` (a missing object is fine).
    pub fn omap_remove_range(&self, object: &str, start: &str, end: &str) -> Result<()> {
        let oid = c_string(object, "object name")?;
        // SAFETY: creates a write op, released by the guard.
        let op = WriteOp(unsafe { ffi::rados_create_write_op() });
        // SAFETY: valid op; the key buffers outlive the operate call (librados copies them into the op).
        unsafe {
            ffi::rados_write_op_omap_rm_range2(
                op.0,
                start.as_ptr().cast::<c_char>(),
                start.len(),
                end.as_ptr().cast::<c_char>(),
                end.len(),
            )
        };
        // SAFETY: valid op, context and object name.
        let ret = unsafe { ffi::rados_write_op_operate(op.0, self.raw(), oid.as_ptr(), ptr::null_mut(), 0) };
        if ret == -libc::ENOENT {
            return Ok(());
        }
        check(ret, || format!("removing a key range from the omap of {object}"))?;
        Ok(())
    }
}
