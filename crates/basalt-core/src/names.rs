//! Validated names and specs: pools, namespaces, images, snapshots, and the `pool[/ns]/image[@snap]` notation.
//!
//! A value of these types is always valid, so code below the parser never checks a name again.

use std::fmt;

use crate::error::{Error, Result};

/// The longest name accepted for a pool, namespace, image or snapshot, in bytes.
pub const NAME_LEN_MAX_BYTES: usize = 250;

/// The pool used when a spec names none, as `rbd` does.
pub const DEFAULT_POOL: &str = "rbd";

fn check_name(what: &str, name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::invalid(format!("{what} name must not be empty")));
    }
    if name.len() > NAME_LEN_MAX_BYTES {
        return Err(Error::invalid(format!(
            "{what} name is {} bytes long; the limit is {NAME_LEN_MAX_BYTES}",
            name.len()
        )));
    }
    if name.contains('/') || name.contains('@') {
        return Err(Error::invalid(format!("{what} name '{name}' must not contain '/' or '@'")));
    }
    if name.chars().any(char::is_control) {
        return Err(Error::invalid(format!("{what} name must not contain control characters")));
    }
    Ok(())
}

macro_rules! name_type {
    ($(#[$doc:meta])* $ty:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $ty(String);

        impl $ty {
            /// Validates `name`: not empty, at most [`NAME_LEN_MAX_BYTES`], no `/`, `@` or control characters.
            pub fn new(name: impl Into<String>) -> Result<$ty> {
                let name = name.into();
                check_name($what, &name)?;
                Ok($ty(name))
            }

            /// Returns the name as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::str::FromStr for $ty {
            type Err = Error;
            fn from_str(s: &str) -> Result<$ty> {
                $ty::new(s)
            }
        }

        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

name_type!(
    /// A pool name.
    PoolName,
    "pool"
);
name_type!(
    /// An image name.
    ImageName,
    "image"
);

/// A snapshot name. Names starting with `.` are reserved for internal snapshots, as in the reference.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SnapName(String);

impl SnapName {
    /// Validates a user snapshot name: an image-style name that does not start with `.`.
    pub fn new(name: impl Into<String>) -> Result<SnapName> {
        let name = name.into();
        check_name("snapshot", &name)?;
        if name.starts_with('.') {
            return Err(Error::invalid(format!("snapshot name '{name}' must not start with '.'")));
        }
        Ok(SnapName(name))
    }

    /// Returns the name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SnapName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for SnapName {
    type Err = Error;
    fn from_str(s: &str) -> Result<SnapName> {
        SnapName::new(s)
    }
}

/// A namespace inside a pool; the default namespace has the empty name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Namespace(String);

impl Namespace {
    /// The default namespace (the empty name).
    pub fn default_ns() -> Namespace {
        Namespace(String::new())
    }

    /// Validates a named (non-default) namespace.
    pub fn new(name: impl Into<String>) -> Result<Namespace> {
        let name = name.into();
        check_name("namespace", &name)?;
        Ok(Namespace(name))
    }

    /// Accepts the empty string as the default namespace, anything else as [`Namespace::new`].
    pub fn parse(name: &str) -> Result<Namespace> {
        if name.is_empty() { Ok(Namespace::default_ns()) } else { Namespace::new(name) }
    }

    /// Returns true for the default namespace.
    pub fn is_default(&self) -> bool {
        self.0.is_empty()
    }

    /// Returns the name, empty for the default namespace.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A pool and a namespace in it: where images live.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PoolNs {
    /// The pool.
    pub pool: PoolName,
    /// The namespace inside the pool.
    pub namespace: Namespace,
}

impl PoolNs {
    /// Builds a location from its parts.
    pub fn new(pool: PoolName, namespace: Namespace) -> PoolNs {
        PoolNs { pool, namespace }
    }

    /// Parses `pool` or `pool/namespace`.
    pub fn parse(spec: &str) -> Result<PoolNs> {
        let mut parts = spec.split('/');
        let pool = PoolName::new(parts.next().unwrap_or_default())
            .map_err(|e| e.context(format_args!("invalid spec '{spec}'")))?;
        let namespace = match parts.next() {
            Some(ns) => Namespace::new(ns).map_err(|e| e.context(format_args!("invalid spec '{spec}'")))?,
            None => Namespace::default_ns(),
        };
        if parts.next().is_some() {
            return Err(Error::invalid(format!("invalid spec '{spec}': expected pool[/namespace]")));
        }
        Ok(PoolNs { pool, namespace })
    }
}

impl fmt::Display for PoolNs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_default() {
            write!(f, "{}", self.pool)
        } else {
            write!(f, "{}/{}", self.pool, self.namespace)
        }
    }
}

/// An image by name: `pool[/namespace]/image`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ImageSpec {
    /// The pool and namespace holding the image.
    pub location: PoolNs,
    /// The image's name.
    pub image: ImageName,
}

impl ImageSpec {
    /// Builds a spec from its parts.
    pub fn new(pool: PoolName, namespace: Namespace, image: ImageName) -> ImageSpec {
        ImageSpec { location: PoolNs { pool, namespace }, image }
    }

    /// Returns the pool.
    pub fn pool(&self) -> &PoolName {
        &self.location.pool
    }

    /// Returns the namespace.
    pub fn namespace(&self) -> &Namespace {
        &self.location.namespace
    }

    /// Parses `image`, `pool/image` or `pool/namespace/image` (no snapshot part); a bare image is in pool `rbd`.
    pub fn parse(spec: &str) -> Result<ImageSpec> {
        let (image, snap) = parse_spec(spec)?;
        if snap.is_some() {
            return Err(Error::invalid(format!("invalid spec '{spec}': a snapshot is not allowed here")));
        }
        Ok(image)
    }
}

impl fmt::Display for ImageSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.location, self.image)
    }
}

/// A snapshot by name: `pool[/namespace]/image@snap`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SnapSpec {
    /// The image.
    pub image: ImageSpec,
    /// The snapshot's name.
    pub snap: SnapName,
}

impl SnapSpec {
    /// Parses `pool[/namespace]/image@snap`; the snapshot part is required.
    pub fn parse(spec: &str) -> Result<SnapSpec> {
        match parse_spec(spec)? {
            (image, Some(snap)) => Ok(SnapSpec { image, snap }),
            (_, None) => Err(Error::invalid(format!("invalid spec '{spec}': snapshot name was not specified"))),
        }
    }
}

impl fmt::Display for SnapSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.image, self.snap)
    }
}

/// Parses `[pool/[namespace/]]image[@snap]` as the reference CLI does; a missing pool means `rbd`.
pub fn parse_spec(spec: &str) -> Result<(ImageSpec, Option<SnapName>)> {
    let invalid = |why: &str| Error::invalid(format!("invalid spec '{spec}': {why}"));
    let (path, snap) = match spec.split_once('@') {
        Some((path, snap)) => {
            if snap.contains('@') || snap.contains('/') {
                return Err(invalid("expected pool[/namespace]/image[@snap]"));
            }
            (path, Some(SnapName::new(snap).map_err(|e| e.context(format_args!("invalid spec '{spec}'")))?))
        }
        None => (spec, None),
    };
    let parts: Vec<&str> = path.split('/').collect();
    let (pool, namespace, image) = match parts.as_slice() {
        [image] => (DEFAULT_POOL, "", *image),
        [pool, image] => (*pool, "", *image),
        [pool, namespace, image] => {
            if namespace.is_empty() {
                return Err(invalid("namespace must not be empty"));
            }
            (*pool, *namespace, *image)
        }
        _ => return Err(invalid("expected pool[/namespace]/image[@snap]")),
    };
    let wrap = |e: Error| e.context(format_args!("invalid spec '{spec}'"));
    let image_spec = ImageSpec::new(
        PoolName::new(pool).map_err(wrap)?,
        Namespace::parse(namespace).map_err(wrap)?,
        ImageName::new(image).map_err(wrap)?,
    );
    Ok((image_spec, snap))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn specs_parse_like_the_reference_cli() {
        let (spec, snap) = parse_spec("img").expect("bare image");
        assert_eq!(spec.to_string(), "rbd/img");
        assert!(snap.is_none());
        let (spec, snap) = parse_spec("p/ns/img@s1").expect("full spec");
        assert_eq!(spec.pool().as_str(), "p");
        assert_eq!(spec.namespace().as_str(), "ns");
        assert_eq!(spec.image.as_str(), "img");
        assert_eq!(snap.map(|s| s.to_string()).as_deref(), Some("s1"));
        assert_eq!(ImageSpec::parse("p/img").expect("pool/image").to_string(), "p/img");
        assert_eq!(SnapSpec::parse("p/img@s").expect("snap spec").to_string(), "p/img@s");
    }

    #[test]
    fn bad_specs_are_refused_with_einval() {
        for bad in ["a@b/c", "", "/img", "p//img", "p/ns/img/x", "img@", "img@a@b", "p/img@.hidden", "a\nb"] {
            let err = parse_spec(bad).expect_err(bad);
            assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{bad}: {err}");
        }
        let long = "x".repeat(300);
        let err = ImageSpec::parse(&long).expect_err("300-character name");
        assert!(err.message().contains("limit"), "{err}");
        assert!(SnapSpec::parse("p/img").is_err());
        assert!(ImageSpec::parse("p/img@s").is_err());
    }

    #[test]
    fn pool_ns_parses_and_prints() {
        assert_eq!(PoolNs::parse("p").expect("pool").to_string(), "p");
        assert_eq!(PoolNs::parse("p/ns").expect("pool/ns").to_string(), "p/ns");
        assert!(PoolNs::parse("p/ns/x").is_err());
        assert!(PoolNs::parse("").is_err());
    }
}
