//! Who may use which export: the identity a TCP client proves with its TLS certificate, and the authoriser the
//! embedding server supplies to turn that identity into access to an image.
//!
//! The crate knows nothing of users or roles: the server passes an [`Authorizer`]. Without one, every client of the
//! listener gets every export (the local Unix socket, or a listener the operator chose to leave open).

use basalt_core::ImageSpec;

/// What a client may do with an image's exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Access {
    /// Nothing: the export is not listed and cannot be opened or described.
    None,
    /// The head and snapshots, read-only (the head is exported with the read-only flag; writes get EPERM).
    ReadOnly,
    /// The head read-write, snapshots read-only.
    ReadWrite,
}

/// Decides each client's access; called on the blocking pool, for every export a client lists, describes or opens.
pub trait Authorizer: Send + Sync + std::fmt::Debug {
    /// The access of the client that proved `identity` (the common name of its verified TLS client certificate;
    /// `None` when it presented none) to `image`. Called again on every open, so a user disabled or deleted since
    /// the last call is refused.
    fn access(&self, identity: Option<&str>, image: &ImageSpec) -> Access;
}

/// The subject common name (OID 2.5.4.3) of a DER X.509 certificate, if it has exactly one readable one.
///
/// A small DER walk rather than an X.509 library: the certificate was already verified by rustls, and only this one
/// field is needed. Anything unexpected gives `None`.
pub fn subject_common_name(der: &[u8]) -> Option<String> {
    // Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version OPTIONAL, serialNumber, signature,
    //   issuer, validity, subject, ... }, ... }
    let (certificate, _) = element(der, SEQUENCE)?;
    let (tbs, _) = element(certificate, SEQUENCE)?;
    let mut rest = tbs;
    if rest.first() == Some(&0xa0) {
        rest = skip(rest)?;
    }
    for _ in 0..4 {
        // serialNumber, signature, issuer, validity
        rest = skip(rest)?;
    }
    let (subject, _) = element(rest, SEQUENCE)?;
    let mut names = Vec::new();
    let mut rdns = subject;
    while !rdns.is_empty() {
        let (set, after) = element(rdns, SET)?;
        rdns = after;
        let mut attributes = set;
        while !attributes.is_empty() {
            let (attribute, after) = element(attributes, SEQUENCE)?;
            attributes = after;
            let (oid, value) = element(attribute, OID)?;
            if oid == COMMON_NAME_OID {
                let (tag, text, _) = any(value)?;
                if ![UTF8_STRING, PRINTABLE_STRING, IA5_STRING].contains(&tag) {
                    return None;
                }
                names.push(String::from_utf8(text.to_vec()).ok()?);
            }
        }
    }
    match <[String; 1]>::try_from(names) {
        Ok([name]) => Some(name),
        Err(_) => None,
    }
}

/// The subject common name of the first certificate in a PEM text.
pub fn pem_subject_common_name(pem: &str) -> Option<String> {
    use tokio_rustls::rustls::pki_types::CertificateDer;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    let der = CertificateDer::pem_slice_iter(pem.as_bytes()).next()?.ok()?;
    subject_common_name(&der)
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
const UTF8_STRING: u8 = 0x0c;
const PRINTABLE_STRING: u8 = 0x13;
const IA5_STRING: u8 = 0x16;
const COMMON_NAME_OID: &[u8] = &[0x55, 0x04, 0x03];

/// One DER element: (tag, contents, what follows).
fn any(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let length = if first < 0x80 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let (bytes, after) = rest.split_at(count);
        rest = after;
        bytes.iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b))
    };
    if rest.len() < length {
        return None;
    }
    let (contents, after) = rest.split_at(length);
    Some((tag, contents, after))
}

/// The contents of an element with tag `tag`, and what follows it.
fn element(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (found, contents, after) = any(input)?;
    (found == tag).then_some((contents, after))
}

fn skip(input: &[u8]) -> Option<&[u8]> {
    any(input).map(|(_, _, after)| after)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_has_no_common_name() {
        assert_eq!(subject_common_name(&[]), None);
        assert_eq!(subject_common_name(&[0x30, 0x82, 0xff]), None);
        assert_eq!(subject_common_name(&[0x30, 0x03, 0x30, 0x01, 0x00]), None);
        assert_eq!(subject_common_name(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
    }

    #[test]
    fn access_orders_from_none_to_read_write() {
        assert!(Access::None < Access::ReadOnly && Access::ReadOnly < Access::ReadWrite);
    }
}
