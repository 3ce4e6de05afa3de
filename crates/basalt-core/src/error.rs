//! The one error type every backend returns: an errno-style kind plus a message that says what to do.
//!
//! The kind travels unchanged to the REST API (`code`) and the CLI exit path, so a refusal reads the same
//! everywhere and matches the reference system's error codes.

use std::fmt;

/// Errno-style error kinds, numbered as on Linux so they match librbd's return codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// EPERM: the operation is not permitted now (for example a trash entry whose deferment has not expired).
    NotPermitted,
    /// ENOENT: the named pool, namespace, image, snapshot or trash entry does not exist.
    NotFound,
    /// EIO: the disk failed underneath.
    Io,
    /// EAGAIN: try again later.
    TryAgain,
    /// EBUSY: the object is in use (attached, locked, protected, has children).
    Busy,
    /// EEXIST: the name is taken.
    AlreadyExists,
    /// EXDEV: the operation cannot cross pools or namespaces.
    CrossDevice,
    /// EINVAL: the request is malformed or contradicts the object's state.
    InvalidArgument,
    /// ENOSPC: the disk is full.
    NoSpace,
    /// EROFS: the image or snapshot is read-only.
    ReadOnly,
    /// EMLINK: the image belongs to a group.
    TooManyLinks,
    /// EDOM: a numeric argument is outside its domain (object order).
    OutOfDomain,
    /// ERANGE: a value does not fit.
    OutOfRange,
    /// ENOSYS: the feature the operation needs is not enabled or not implemented.
    NotImplemented,
    /// ENOTEMPTY: the object still has dependents (snapshots, images, clones).
    NotEmpty,
    /// EOPNOTSUPP: the operation is not supported for this object.
    NotSupported,
    /// EDQUOT: a limit (snapshot limit) is reached.
    QuotaExceeded,
    /// ECANCELED: the operation was cancelled before it finished.
    Cancelled,
}

impl ErrorKind {
    /// Returns the Linux errno value of this kind.
    pub fn errno(self) -> i32 {
        match self {
            ErrorKind::NotPermitted => 1,
            ErrorKind::NotFound => 2,
            ErrorKind::Io => 5,
            ErrorKind::TryAgain => 11,
            ErrorKind::Busy => 16,
            ErrorKind::AlreadyExists => 17,
            ErrorKind::CrossDevice => 18,
            ErrorKind::InvalidArgument => 22,
            ErrorKind::NoSpace => 28,
            ErrorKind::ReadOnly => 30,
            ErrorKind::TooManyLinks => 31,
            ErrorKind::OutOfDomain => 33,
            ErrorKind::OutOfRange => 34,
            ErrorKind::NotImplemented => 38,
            ErrorKind::NotEmpty => 39,
            ErrorKind::NotSupported => 95,
            ErrorKind::QuotaExceeded => 122,
            ErrorKind::Cancelled => 125,
        }
    }

    /// Returns the symbolic errno name (`"ENOENT"`).
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::NotPermitted => "EPERM",
            ErrorKind::NotFound => "ENOENT",
            ErrorKind::Io => "EIO",
            ErrorKind::TryAgain => "EAGAIN",
            ErrorKind::Busy => "EBUSY",
            ErrorKind::AlreadyExists => "EEXIST",
            ErrorKind::CrossDevice => "EXDEV",
            ErrorKind::InvalidArgument => "EINVAL",
            ErrorKind::NoSpace => "ENOSPC",
            ErrorKind::ReadOnly => "EROFS",
            ErrorKind::TooManyLinks => "EMLINK",
            ErrorKind::OutOfDomain => "EDOM",
            ErrorKind::OutOfRange => "ERANGE",
            ErrorKind::NotImplemented => "ENOSYS",
            ErrorKind::NotEmpty => "ENOTEMPTY",
            ErrorKind::NotSupported => "EOPNOTSUPP",
            ErrorKind::QuotaExceeded => "EDQUOT",
            ErrorKind::Cancelled => "ECANCELED",
        }
    }

    /// Maps an OS error number back to a kind; unknown numbers become `Io`.
    pub fn from_errno(errno: i32) -> ErrorKind {
        match errno {
            1 => ErrorKind::NotPermitted,
            2 => ErrorKind::NotFound,
            11 => ErrorKind::TryAgain,
            16 => ErrorKind::Busy,
            17 => ErrorKind::AlreadyExists,
            18 => ErrorKind::CrossDevice,
            22 => ErrorKind::InvalidArgument,
            28 => ErrorKind::NoSpace,
            30 => ErrorKind::ReadOnly,
            31 => ErrorKind::TooManyLinks,
            33 => ErrorKind::OutOfDomain,
            34 => ErrorKind::OutOfRange,
            38 => ErrorKind::NotImplemented,
            39 => ErrorKind::NotEmpty,
            95 => ErrorKind::NotSupported,
            122 => ErrorKind::QuotaExceeded,
            125 => ErrorKind::Cancelled,
            _ => ErrorKind::Io,
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An error with its errno-style kind and a lowercase message without a trailing period.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    kind: ErrorKind,
    message: String,
}

impl Error {
    /// Builds an error of `kind` with a message that should say what to do about it.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error { kind, message: message.into() }
    }

    /// Returns the errno-style kind.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Returns the message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Returns the same error with `context: ` put before its message.
    #[must_use]
    pub fn context(self, context: impl fmt::Display) -> Error {
        Error { kind: self.kind, message: format!("{context}: {}", self.message) }
    }

    /// An EINVAL error.
    pub fn invalid(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::InvalidArgument, message)
    }

    /// An ENOENT error.
    pub fn not_found(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::NotFound, message)
    }

    /// An EEXIST error.
    pub fn exists(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::AlreadyExists, message)
    }

    /// An EBUSY error.
    pub fn busy(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Busy, message)
    }

    /// An EIO error.
    pub fn io(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Io, message)
    }
}

impl From<std::io::Error> for Error {
    fn from(err: std::io::Error) -> Error {
        let kind = match err.raw_os_error() {
            Some(errno) => ErrorKind::from_errno(errno),
            None if err.kind() == std::io::ErrorKind::StorageFull => ErrorKind::NoSpace,
            None => ErrorKind::Io,
        };
        Error::new(kind, format!("i/o error: {err}"))
    }
}

/// The result type of every backend operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Returns early with an error of the given kind and a formatted message.
#[macro_export]
macro_rules! bail {
    ($kind:ident, $($arg:tt)+) => {
        return Err($crate::Error::new($crate::ErrorKind::$kind, format!($($arg)+)))
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_round_trips_for_every_kind() {
        let kinds = [
            ErrorKind::NotPermitted,
            ErrorKind::NotFound,
            ErrorKind::Io,
            ErrorKind::TryAgain,
            ErrorKind::Busy,
            ErrorKind::AlreadyExists,
            ErrorKind::CrossDevice,
            ErrorKind::InvalidArgument,
            ErrorKind::NoSpace,
            ErrorKind::ReadOnly,
            ErrorKind::TooManyLinks,
            ErrorKind::OutOfDomain,
            ErrorKind::OutOfRange,
            ErrorKind::NotImplemented,
            ErrorKind::NotEmpty,
            ErrorKind::NotSupported,
            ErrorKind::QuotaExceeded,
            ErrorKind::Cancelled,
        ];
        for kind in kinds {
            assert_eq!(ErrorKind::from_errno(kind.errno()), kind, "{kind}");
        }
    }

    #[test]
    fn io_errors_keep_their_errno() {
        let err: Error = std::io::Error::from_raw_os_error(28).into();
        assert_eq!(err.kind(), ErrorKind::NoSpace);
        let err: Error = std::io::Error::from_raw_os_error(5).into();
        assert_eq!(err.kind(), ErrorKind::Io);
    }
}
