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
    check_display_safe(what, name)?;
    if name.contains('/') || name.contains('@') {
        return Err(Error::invalid(format!("{what} name '{name}' must not contain '/' or '@'")));
    }
    Ok(())
}

/// Returns true for the characters that change how text around them is shown without being seen themselves:
/// zero-width characters, bidirectional marks, embeddings, overrides and isolates, the byte-order mark, and the
/// line and paragraph separators.
fn is_invisible_format(c: char) -> bool {
    matches!(
        c,
        '\u{061C}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{2028}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{2069}'
            | '\u{FEFF}'
    )
}

/// Checks that a name shows as what it is wherever it is printed (a terminal, a log line, the dashboard, a path):
/// it is not `.` or `..`, does not start or end with white space, and holds no control character and no invisible
/// formatting character (zero-width, bidirectional override or isolate, byte-order mark; see `is_invisible_format`).
///
/// Every pool, namespace, image and snapshot name passes this check; other names a user chooses (user and role
/// names) should too. `what` names the kind of name in the error ("user", "role"). The error is
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) and never echoes the offending characters.
pub fn check_display_safe(what: &str, name: &str) -> Result<()> {
    if name == "." || name == ".." {
        return Err(Error::invalid(format!("{what} name must not be '{name}'")));
    }
    if name.starts_with(char::is_whitespace) || name.ends_with(char::is_whitespace) {
        return Err(Error::invalid(format!("{what} name must not start or end with white space")));
    }
    if let Some(c) = name.chars().find(|c| c.is_control()) {
        return Err(Error::invalid(format!(
            "{what} name must not contain control characters (found U+{:04X})",
            u32::from(c)
        )));
    }
    if let Some(c) = name.chars().find(|&c| is_invisible_format(c)) {
        return Err(Error::invalid(format!(
            "{what} name must not contain invisible or bidirectional formatting characters (found U+{:04X})",
            u32::from(c)
        )));
    }
    Ok(())
}

macro_rules! name_type {
    ($(#[$doc:meta])* $ty:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $ty(String);

        impl $ty {
            /// Validates `name`: not empty, at most [`NAME_LEN_MAX_BYTES`], no `/` or `@`, and
            /// [display-safe](check_display_safe).
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

    #[test]
    fn names_that_would_not_show_as_they_are_are_refused() {
        let refused = [
            ("..", "must not be '..'"),
            (".", "must not be '.'"),
            (" img", "white space"),
            ("img ", "white space"),
            ("img\u{a0}", "white space"),
            ("\timg", "white space"),
            ("im\u{7}g", "control characters (found U+0007)"),
            ("im\u{1b}[31mg", "control characters (found U+001B)"),
            ("im\u{85}g", "control characters (found U+0085)"),
            ("ab\u{200b}c", "U+200B"),
            ("ab\u{200d}c", "U+200D"),
            ("ab\u{200f}c", "U+200F"),
            ("ab\u{202a}c", "U+202A"),
            ("evil\u{202e}gpj.exe", "U+202E"),
            ("ab\u{2066}c", "U+2066"),
            ("ab\u{2069}c", "U+2069"),
            ("\u{feff}abc", "U+FEFF"),
            ("ab\u{61c}c", "U+061C"),
            ("ab\u{2028}c", "U+2028"),
        ];
        for (name, why) in refused {
            let err = check_display_safe("user", name).expect_err(name);
            assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{name:?}: {err}");
            assert!(err.message().contains(why), "{name:?}: {err}");
            assert!(err.message().starts_with("user name"), "{name:?}: {err}");
            for (kind, result) in [
                ("pool", PoolName::new(name).map(|_| ())),
                ("namespace", Namespace::new(name).map(|_| ())),
                ("image", ImageName::new(name).map(|_| ())),
                ("snapshot", SnapName::new(name).map(|_| ())),
            ] {
                let err = result.expect_err(name);
                assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{kind} {name:?}: {err}");
                if name.chars().any(|c| c.is_control() || is_invisible_format(c)) {
                    assert!(!err.message().contains(name), "the error echoes the name: {err:?}");
                }
            }
            let spec = format!("p/{name}");
            assert!(ImageSpec::parse(&spec).is_err(), "{spec:?}");
            assert!(SnapSpec::parse(&format!("p/img@{name}")).is_err(), "{name:?}");
        }
    }

    #[test]
    fn ordinary_names_are_still_accepted() {
        for name in ["img", "vm-01_disk.2", "a..b", "x.", "x..", "a b", "Ärger", "日本語", "сервер", "ελληνικά", "🙂"]
        {
            check_display_safe("user", name).expect(name);
            PoolName::new(name).expect(name);
            Namespace::new(name).expect(name);
            ImageName::new(name).expect(name);
            SnapName::new(name).expect(name);
        }
        // The reference's own rules still hold on top of the new ones.
        assert!(SnapName::new(".hidden").is_err());
        assert!(ImageName::new("a/b").is_err());
        assert!(ImageName::new("a@b").is_err());
    }
}
