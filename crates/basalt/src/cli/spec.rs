//! rbd's ways of naming things on the command line: `pool/ns/image@snap` positionally, or the parts with `-p/--pool`,
//! `--namespace`, `--image`, `--snap` (and `--dest*` for destinations), all checked by basalt-core's parser.

use basalt_core::{DEFAULT_POOL, ImageSpec, PoolNs, SnapName, parse_spec};
use clap::Args;

use super::error::Failure;

/// An image given as `[pool/[namespace/]]image` or with options.
#[derive(Args, Debug, Clone, Default)]
pub struct ImageArgs {
    /// The image: [pool/[namespace/]]image (pool defaults to rbd)
    #[arg(value_name = "IMAGE_SPEC")]
    pub spec: Option<String>,
    /// Pool of the image
    #[arg(short = 'p', long, value_name = "POOL")]
    pub pool: Option<String>,
    /// Namespace of the image
    #[arg(long, value_name = "NAMESPACE")]
    pub namespace: Option<String>,
    /// Image name
    #[arg(long, value_name = "IMAGE")]
    pub image: Option<String>,
}

/// An image or one of its snapshots: `[pool/[namespace/]]image[@snap]` or with options.
#[derive(Args, Debug, Clone, Default)]
pub struct SnapArgs {
    /// The image or snapshot: [pool/[namespace/]]image[@snap]
    #[arg(value_name = "SPEC")]
    pub spec: Option<String>,
    /// Pool of the image
    #[arg(short = 'p', long, value_name = "POOL")]
    pub pool: Option<String>,
    /// Namespace of the image
    #[arg(long, value_name = "NAMESPACE")]
    pub namespace: Option<String>,
    /// Image name
    #[arg(long, value_name = "IMAGE")]
    pub image: Option<String>,
    /// Snapshot name
    #[arg(long, value_name = "SNAP")]
    pub snap: Option<String>,
}

/// A destination image: positional, `--dest`, `--dest-pool`, `--dest-namespace`.
#[derive(Args, Debug, Clone, Default)]
pub struct DestArgs {
    /// The destination: [pool/[namespace/]]image
    #[arg(value_name = "DEST_SPEC")]
    pub dest_spec: Option<String>,
    /// Destination image name (or full spec)
    #[arg(long = "dest", value_name = "DEST")]
    pub dest: Option<String>,
    /// Destination pool
    #[arg(long, value_name = "POOL")]
    pub dest_pool: Option<String>,
    /// Destination namespace
    #[arg(long, value_name = "NAMESPACE")]
    pub dest_namespace: Option<String>,
}

/// A pool and namespace: `[pool[/namespace]]` or with options; the pool defaults to `rbd`.
#[derive(Args, Debug, Clone, Default)]
pub struct PoolNsArgs {
    /// The pool and namespace: pool[/namespace] (default rbd)
    #[arg(value_name = "POOL_SPEC")]
    pub spec: Option<String>,
    /// Pool
    #[arg(short = 'p', long, value_name = "POOL")]
    pub pool: Option<String>,
    /// Namespace
    #[arg(long, value_name = "NAMESPACE")]
    pub namespace: Option<String>,
}

/// Parts of a spec as typed, before defaults are filled in.
struct Parts<'a> {
    positional: Option<&'a str>,
    by_option: Option<&'a str>,
    option_name: &'a str,
    pool: Option<&'a str>,
    namespace: Option<&'a str>,
    snap: Option<&'a str>,
}

fn nonempty(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|v| !v.is_empty())
}

/// Builds the full `pool[/ns]/image[@snap]` text from the parts and parses it with basalt-core's `parse_spec`.
fn resolve(parts: Parts<'_>, what: &str) -> Result<(ImageSpec, Option<SnapName>), Failure> {
    let text = match (parts.positional, parts.by_option) {
        (Some(p), Some(o)) => {
            return Err(Failure::invalid(format!(
                "the {what} is given twice: as '{p}' and with {} '{o}'",
                parts.option_name
            )));
        }
        (Some(t), None) | (None, Some(t)) => t,
        (None, None) => return Err(Failure::invalid(format!("{what} name was not specified"))),
    };
    let (path, snap_in_text) = match text.split_once('@') {
        Some((path, snap)) => (path, Some(snap)),
        None => (text, None),
    };
    let snap = match (snap_in_text, parts.snap) {
        (Some(_), Some(_)) => {
            return Err(Failure::invalid(format!("the snapshot is given twice: in '{text}' and with --snap")));
        }
        (s, None) | (None, s) => s,
    };
    // Fill in the pool and namespace from the options where the text leaves them out, as rbd does.
    let segments: Vec<&str> = path.split('/').collect();
    let full_path = match segments.as_slice() {
        [image] => {
            let pool = parts.pool.unwrap_or(DEFAULT_POOL);
            match parts.namespace {
                Some(ns) => format!("{pool}/{ns}/{image}"),
                None => format!("{pool}/{image}"),
            }
        }
        [pool, image] => match parts.namespace {
            Some(ns) => format!("{pool}/{ns}/{image}"),
            None => format!("{pool}/{image}"),
        },
        // Anything else is either complete or malformed; the parser says which.
        _ => path.to_owned(),
    };
    let full = match snap {
        Some(snap) => format!("{full_path}@{snap}"),
        None => full_path,
    };
    parse_spec(&full).map_err(|e| {
        // Report the user's text, not the one rebuilt with defaults.
        Failure::core(&e).with_message(e.message().replace(&format!("'{full}'"), &format!("'{text}'")))
    })
}

impl ImageArgs {
    /// The image; a snapshot part is refused as rbd refuses it.
    pub fn image_spec(&self) -> Result<ImageSpec, Failure> {
        let (spec, snap) = resolve(
            Parts {
                positional: nonempty(&self.spec),
                by_option: nonempty(&self.image),
                option_name: "--image",
                pool: nonempty(&self.pool),
                namespace: nonempty(&self.namespace),
                snap: None,
            },
            "image",
        )?;
        if snap.is_some() {
            return Err(Failure::invalid("snapshot name specified for a command that doesn't use it"));
        }
        Ok(spec)
    }
}

impl SnapArgs {
    /// The image and the snapshot if one is named.
    pub fn image_and_snap(&self) -> Result<(ImageSpec, Option<SnapName>), Failure> {
        resolve(
            Parts {
                positional: nonempty(&self.spec),
                by_option: nonempty(&self.image),
                option_name: "--image",
                pool: nonempty(&self.pool),
                namespace: nonempty(&self.namespace),
                snap: nonempty(&self.snap),
            },
            "image",
        )
    }

    /// The image and a snapshot, which must be named.
    pub fn snap_spec(&self) -> Result<(ImageSpec, SnapName), Failure> {
        match self.image_and_snap()? {
            (image, Some(snap)) => Ok((image, snap)),
            (_, None) => Err(Failure::invalid("snapshot name was not specified")),
        }
    }
}

impl DestArgs {
    /// The destination image; its pool and namespace default to `default_location` where not given.
    pub fn dest_spec(&self, default_location: &PoolNs) -> Result<ImageSpec, Failure> {
        let pool = nonempty(&self.dest_pool).unwrap_or(default_location.pool.as_str());
        let namespace = nonempty(&self.dest_namespace)
            .or_else(|| (!default_location.namespace.is_default()).then(|| default_location.namespace.as_str()));
        let (spec, snap) = resolve(
            Parts {
                positional: nonempty(&self.dest_spec),
                by_option: nonempty(&self.dest),
                option_name: "--dest",
                pool: Some(pool),
                namespace,
                snap: None,
            },
            "destination image",
        )?;
        if snap.is_some() {
            return Err(Failure::invalid("destination snapshot name specified for a command that doesn't use it"));
        }
        Ok(spec)
    }
}

impl PoolNsArgs {
    /// The pool and namespace; `rbd` and the default namespace when not given.
    pub fn pool_ns(&self) -> Result<PoolNs, Failure> {
        let text = match (nonempty(&self.spec), nonempty(&self.pool)) {
            (Some(spec), Some(pool)) if spec != pool => {
                return Err(Failure::invalid(format!("the pool is given twice: as '{spec}' and with --pool '{pool}'")));
            }
            (Some(spec), _) => spec.to_owned(),
            (None, Some(pool)) => pool.to_owned(),
            (None, None) => DEFAULT_POOL.to_owned(),
        };
        let text = match nonempty(&self.namespace) {
            Some(ns) if !text.contains('/') => format!("{text}/{ns}"),
            _ => text,
        };
        PoolNs::parse(&text).map_err(|e| Failure::core(&e))
    }
}

/// A trash entry by id: `[pool/[namespace/]]ID` positionally or `--image-id`, with `-p` and `--namespace`.
pub fn trash_id(
    positional: &Option<String>,
    image_id: &Option<String>,
    pool: &Option<String>,
    namespace: &Option<String>,
) -> Result<(PoolNs, String), Failure> {
    let (spec, snap) = resolve(
        Parts {
            positional: nonempty(positional),
            by_option: nonempty(image_id),
            option_name: "--image-id",
            pool: nonempty(pool),
            namespace: nonempty(namespace),
            snap: None,
        },
        "image id",
    )?;
    if snap.is_some() {
        return Err(Failure::invalid("a trash entry has no snapshots: give [pool/[namespace/]]IMAGE_ID"));
    }
    Ok((spec.location, spec.image.as_str().to_owned()))
}

/// The default location for destinations that rbd puts in pool `rbd` (copy, clone): the default namespace of `rbd`.
pub fn default_location() -> Result<PoolNs, Failure> {
    PoolNs::parse(DEFAULT_POOL).map_err(|e| Failure::core(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap_args(
        spec: Option<&str>,
        pool: Option<&str>,
        ns: Option<&str>,
        image: Option<&str>,
        snap: Option<&str>,
    ) -> SnapArgs {
        SnapArgs {
            spec: spec.map(Into::into),
            pool: pool.map(Into::into),
            namespace: ns.map(Into::into),
            image: image.map(Into::into),
            snap: snap.map(Into::into),
        }
    }

    fn show(r: Result<(ImageSpec, Option<SnapName>), Failure>) -> String {
        match r {
            Ok((spec, Some(snap))) => format!("{spec}@{snap}"),
            Ok((spec, None)) => spec.to_string(),
            Err(f) => format!("error {}: {}", f.exit_code, f.message),
        }
    }

    #[test]
    fn specs_combine_with_options_like_rbd() {
        assert_eq!(show(snap_args(Some("vm"), None, None, None, None).image_and_snap()), "rbd/vm");
        assert_eq!(show(snap_args(Some("vm"), Some("p"), None, None, None).image_and_snap()), "p/vm");
        assert_eq!(show(snap_args(Some("vm@s"), Some("p"), Some("ns"), None, None).image_and_snap()), "p/ns/vm@s");
        assert_eq!(show(snap_args(None, Some("p"), None, Some("vm"), Some("s")).image_and_snap()), "p/vm@s");
        assert_eq!(show(snap_args(Some("q/vm"), None, Some("t"), None, None).image_and_snap()), "q/t/vm");
        assert_eq!(show(snap_args(Some("q/t/vm"), Some("other"), None, None, None).image_and_snap()), "q/t/vm");
    }

    #[test]
    fn contradictions_and_bad_names_are_einval() {
        for args in [
            snap_args(None, None, None, None, None),
            snap_args(Some("a"), None, None, Some("b"), None),
            snap_args(Some("a@s"), None, None, None, Some("t")),
            snap_args(Some("a@b@c"), None, None, None, None),
            snap_args(Some("p//a"), None, None, None, None),
        ] {
            let shown = show(args.image_and_snap());
            assert!(shown.starts_with("error 22:"), "{args:?}: {shown}");
        }
        let err = snap_args(Some("a@b@c"), None, None, None, None).image_and_snap().expect_err("bad spec");
        assert!(err.message.contains("'a@b@c'"), "{}", err.message);
        let err = snap_args(Some("img"), None, None, None, None).snap_spec().expect_err("no snapshot");
        assert_eq!(err.message, "snapshot name was not specified");
        let image = ImageArgs { spec: Some("img@s".into()), ..ImageArgs::default() };
        assert_eq!(image.image_spec().expect_err("snapshot refused").exit_code, 22);
    }

    #[test]
    fn destinations_default_to_the_given_location() {
        let here = PoolNs::parse("p/ns").expect("location");
        let dest = DestArgs { dest_spec: Some("b".into()), ..DestArgs::default() };
        assert_eq!(dest.dest_spec(&here).expect("dest").to_string(), "p/ns/b");
        let dest = DestArgs { dest: Some("b".into()), dest_pool: Some("q".into()), ..DestArgs::default() };
        assert_eq!(dest.dest_spec(&default_location().expect("rbd")).expect("dest").to_string(), "q/b");
        let dest = DestArgs { dest_spec: Some("x/y/b".into()), ..DestArgs::default() };
        assert_eq!(dest.dest_spec(&here).expect("dest").to_string(), "x/y/b");
        let dest = DestArgs { dest_spec: Some("b@s".into()), ..DestArgs::default() };
        assert!(dest.dest_spec(&here).is_err());
    }

    #[test]
    fn pool_specs_default_to_rbd() {
        let args = |spec: Option<&str>, pool: Option<&str>, ns: Option<&str>| PoolNsArgs {
            spec: spec.map(Into::into),
            pool: pool.map(Into::into),
            namespace: ns.map(Into::into),
        };
        assert_eq!(args(None, None, None).pool_ns().expect("default").to_string(), "rbd");
        assert_eq!(args(Some("p/ns"), None, None).pool_ns().expect("spec").to_string(), "p/ns");
        assert_eq!(args(None, Some("p"), Some("ns")).pool_ns().expect("options").to_string(), "p/ns");
        assert!(args(Some("p/a/b"), None, None).pool_ns().is_err());
        assert!(args(Some("p"), Some("q"), None).pool_ns().is_err());
    }
}
