//! The CLI's failure type: a one-line message and the process exit code (the errno of the API's `code`).

use std::fmt;

use basalt_core::ErrorKind;

/// A failure with the exit code the process should end with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// What went wrong, on one line.
    pub message: String,
    /// The exit code: an errno value where the cause has one, 1 otherwise.
    pub exit_code: u8,
}

impl Failure {
    /// A failure with an explicit exit code.
    pub fn new(exit_code: u8, message: impl Into<String>) -> Failure {
        Failure { message: message.into(), exit_code }
    }

    /// A failure whose exit code is the errno of `kind`, as the reference CLI exits.
    pub fn kind(kind: ErrorKind, message: impl Into<String>) -> Failure {
        Failure::new(u8::try_from(kind.errno()).unwrap_or(1), message)
    }

    /// EINVAL: bad arguments found after parsing (specs, sizes, combinations).
    pub fn invalid(message: impl Into<String>) -> Failure {
        Failure::kind(ErrorKind::InvalidArgument, message)
    }

    /// A failure carrying a basalt-core error (spec or size parsing) with its errno.
    pub fn core(err: &basalt_core::Error) -> Failure {
        Failure::kind(err.kind(), err.message())
    }

    /// The same failure with another message.
    pub fn with_message(mut self, message: impl Into<String>) -> Failure {
        self.message = message.into();
        self
    }

    /// A failure named by an API error code: an errno name (`"ENOENT"`) or an errno number (`"16"`).
    pub fn from_code(code: &str, message: impl Into<String>) -> Failure {
        Failure::new(exit_code_of(code), message)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

/// Errno names the API may send that basalt-core's kinds do not cover.
const OTHER_ERRNOS: &[(&str, u8)] = &[("EACCES", 13), ("EFAULT", 14), ("ENOTSUP", 95), ("ETIMEDOUT", 110)];

/// Maps an API error code to an exit code: the errno value for errno names and numbers, 1 for anything else.
pub fn exit_code_of(code: &str) -> u8 {
    if let Ok(number) = code.parse::<u8>() {
        return if number == 0 { 1 } else { number };
    }
    // Reuse basalt-core's table instead of copying it: the kind whose errno round-trips and whose name matches.
    let known = (1..=255).find(|&n| {
        let kind = ErrorKind::from_errno(n);
        kind.errno() == n && kind.name() == code
    });
    if let Some(n) = known.and_then(|n| u8::try_from(n).ok()) {
        return n;
    }
    OTHER_ERRNOS.iter().find(|(name, _)| *name == code).map(|(_, n)| *n).unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_errno_exit_codes() {
        assert_eq!(exit_code_of("ENOENT"), 2);
        assert_eq!(exit_code_of("EBUSY"), 16);
        assert_eq!(exit_code_of("EINVAL"), 22);
        assert_eq!(exit_code_of("ENOTEMPTY"), 39);
        assert_eq!(exit_code_of("EPERM"), 1);
        assert_eq!(exit_code_of("EIO"), 5);
        assert_eq!(exit_code_of("EACCES"), 13);
        assert_eq!(exit_code_of("16"), 16);
        assert_eq!(exit_code_of("namespace_already_exists"), 1);
        assert_eq!(exit_code_of("0"), 1);
    }
}
