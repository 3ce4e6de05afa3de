//! librados and librbd report failures as negative errno values; this turns them into basalt's errno-style
//! [`Error`], keeping the kind (so a refusal reads the same as the embedded engine's) and naming the call that failed.
#![cfg_attr(not(feature = "ceph"), allow(dead_code))]

use std::fmt;

use basalt_core::{Error, ErrorKind};

/// Builds the error for an errno value returned by librados or librbd (either sign is accepted), with `context`
/// (what was being done, and to what) before the system's description.
///
/// Errno values that basalt has no kind for (`ETIMEDOUT`, `ENOTCONN`, `ESHUTDOWN`...) become `EIO`; the message keeps
/// the original name and number.
pub fn from_errno(errno: i32, context: impl fmt::Display) -> Error {
    let errno = errno.checked_abs().unwrap_or(i32::MAX);
    let kind = ErrorKind::from_errno(errno);
    let description = describe(errno);
    if kind == ErrorKind::Io && errno != libc::EIO {
        Error::new(kind, format!("{context}: {description} (errno {errno})"))
    } else {
        Error::new(kind, format!("{context}: {description}"))
    }
}

/// Returns `ret` when it is not negative, otherwise the error for `-ret` with the context `context()` builds (only
/// called on failure).
pub(crate) fn check<C: fmt::Display>(ret: i32, context: impl FnOnce() -> C) -> Result<i32, Error> {
    if ret < 0 { Err(from_errno(ret, context())) } else { Ok(ret) }
}

/// Like [`check`] for the `ssize_t`/`int64_t` results of I/O calls.
pub(crate) fn check_i64<C: fmt::Display>(ret: i64, context: impl FnOnce() -> C) -> Result<u64, Error> {
    if ret < 0 {
        let errno = i32::try_from(-ret).unwrap_or(libc::EIO);
        Err(from_errno(errno, context()))
    } else {
        Ok(ret.unsigned_abs())
    }
}

/// The system's description of an errno value, lowercase and without the `(os error N)` suffix.
fn describe(errno: i32) -> String {
    let text = std::io::Error::from_raw_os_error(errno).to_string();
    let text = match text.find(" (os error") {
        Some(end) => &text[..end],
        None => text.as_str(),
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => format!("error {errno}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negative_and_positive_errno_give_the_same_kind() {
        let a = from_errno(-libc::ENOENT, "opening image rbd/a");
        let b = from_errno(libc::ENOENT, "opening image rbd/a");
        assert_eq!(a, b);
        assert_eq!(a.kind(), ErrorKind::NotFound);
        assert_eq!(a.message(), "opening image rbd/a: no such file or directory");
    }

    #[test]
    fn kinds_follow_errno() {
        let cases = [
            (libc::EPERM, ErrorKind::NotPermitted),
            (libc::EBUSY, ErrorKind::Busy),
            (libc::EEXIST, ErrorKind::AlreadyExists),
            (libc::EXDEV, ErrorKind::CrossDevice),
            (libc::EINVAL, ErrorKind::InvalidArgument),
            (libc::EROFS, ErrorKind::ReadOnly),
            (libc::EMLINK, ErrorKind::TooManyLinks),
            (libc::EDOM, ErrorKind::OutOfDomain),
            (libc::ERANGE, ErrorKind::OutOfRange),
            (libc::ENOSYS, ErrorKind::NotImplemented),
            (libc::ENOTEMPTY, ErrorKind::NotEmpty),
            (libc::EOPNOTSUPP, ErrorKind::NotSupported),
            (libc::EDQUOT, ErrorKind::QuotaExceeded),
            (libc::ECANCELED, ErrorKind::Cancelled),
            (libc::EIO, ErrorKind::Io),
        ];
        for (errno, kind) in cases {
            assert_eq!(from_errno(-errno, "x").kind(), kind, "errno {errno}");
        }
    }

    #[test]
    fn unknown_errno_becomes_eio_and_keeps_its_number() {
        let err = from_errno(-libc::ETIMEDOUT, "connecting to the cluster");
        assert_eq!(err.kind(), ErrorKind::Io);
        assert_eq!(err.message(), "connecting to the cluster: connection timed out (errno 110)");
        assert_eq!(from_errno(i32::MIN, "x").kind(), ErrorKind::Io);
    }

    #[test]
    fn check_passes_non_negative_values_through() {
        assert_eq!(check(3, || "never built"), Ok(3));
        assert_eq!(check(-libc::EBUSY, || "removing").map_err(|e| e.kind()), Err(ErrorKind::Busy));
        assert_eq!(check_i64(4096, || "reading"), Ok(4096));
        assert_eq!(check_i64(-i64::from(libc::EROFS), || "writing").map_err(|e| e.kind()), Err(ErrorKind::ReadOnly));
    }
}
