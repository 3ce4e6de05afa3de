//! Small conversions between Rust and C strings and buffers shared by the wrappers.

use std::ffi::{CStr, CString, c_char};

use basalt_core::{Error, Result};

/// A C string of `value`; names with a NUL byte are refused (EINVAL) rather than silently cut.
pub(crate) fn c_string(value: &str, what: &str) -> Result<CString> {
    CString::new(value).map_err(|_| Error::invalid(format!("{what} '{}' contains a NUL byte", value.escape_debug())))
}

/// An optional C string: `None` becomes a null pointer through [`opt_ptr`].
pub(crate) fn c_string_opt(value: Option<&str>, what: &str) -> Result<Option<CString>> {
    value.map(|value| c_string(value, what)).transpose()
}

/// The pointer of an optional C string, null for `None`.
pub(crate) fn opt_ptr(value: &Option<CString>) -> *const c_char {
    value.as_ref().map_or(std::ptr::null(), |value| value.as_ptr())
}

/// Copies a C string owned by librbd/librados; a null pointer reads as the empty string.
///
/// # Safety
///
/// `ptr` must be null or point to a NUL-terminated string that stays valid during the call.
pub(crate) unsafe fn string_from_ptr(ptr: *const c_char) -> String {
    if ptr.is_null() {
        return String::new();
    }
    // SAFETY: guaranteed by the caller.
    unsafe { CStr::from_ptr(ptr) }.to_string_lossy().into_owned()
}

/// The text before the first NUL of a buffer librbd filled.
pub(crate) fn string_from_buf(buf: &[u8]) -> String {
    let end = buf.iter().position(|&byte| byte == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// Splits a buffer of NUL-terminated strings (`a\0b\0`, possibly followed by an empty string and padding) into its
/// strings; the first empty string ends the list.
pub(crate) fn split_nul_list(buf: &[u8]) -> Vec<String> {
    buf.split(|&byte| byte == 0)
        .take_while(|part| !part.is_empty())
        .map(|part| String::from_utf8_lossy(part).into_owned())
        .collect()
}

/// Splits a buffer of NUL-terminated strings into exactly `count` strings, keeping empty ones (metadata values may be
/// empty, so an empty string cannot end the list there).
pub(crate) fn split_nul_exact(buf: &[u8], count: usize) -> Vec<String> {
    buf.split(|&byte| byte == 0).take(count).map(|part| String::from_utf8_lossy(part).into_owned()).collect()
}

/// Seconds since the epoch of a librbd timestamp, as basalt's [`basalt_core::Timestamp`] (negative times clamp to 0).
pub(crate) fn timestamp(seconds: i64) -> basalt_core::Timestamp {
    basalt_core::Timestamp(u64::try_from(seconds).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_lists_split_and_stop_at_the_empty_string() {
        assert_eq!(split_nul_list(b"rbd\0data\0\0garbage"), ["rbd", "data"]);
        assert_eq!(split_nul_list(b""), Vec::<String>::new());
        assert_eq!(split_nul_exact(b"a\0\0c\0", 3), ["a", "", "c"]);
    }

    #[test]
    fn names_with_nul_are_refused() {
        assert_eq!(c_string("a\0b", "image name").map_err(|e| e.kind()), Err(basalt_core::ErrorKind::InvalidArgument));
        assert_eq!(string_from_buf(b"abc\0def"), "abc");
    }
}
