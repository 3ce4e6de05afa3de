//! The catalogue of image configuration options, their types and defaults, and how a value's source is reported.
//!
//! Options are set at three levels (global, pool, image); the most specific override wins, as in the reference.

use crate::error::{Error, Result};
use crate::names::{ImageSpec, PoolName};

/// The type of an option's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptionType {
    /// An unsigned integer in operations per second.
    Iops,
    /// An unsigned integer in bytes per second.
    Bps,
    /// An unsigned integer with no unit.
    Count,
    /// An unsigned integer in seconds.
    Seconds,
    /// An unsigned integer in bytes.
    Bytes,
    /// `true` or `false`.
    Bool,
}

/// One configuration option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigOption {
    /// Name (`rbd_qos_iops_limit`).
    pub name: &'static str,
    /// Type of the value.
    pub kind: OptionType,
    /// Default value, as text.
    pub default: &'static str,
    /// What it does.
    pub description: &'static str,
}

macro_rules! qos {
    ($name:literal, $kind:ident, $what:literal) => {
        ConfigOption { name: $name, kind: OptionType::$kind, default: "0", description: $what }
    };
}

/// Every option basalt knows; anything else is refused.
pub const OPTIONS: &[ConfigOption] = &[
    qos!("rbd_qos_iops_limit", Iops, "desired limit of IO operations per second (0 = unlimited)"),
    qos!("rbd_qos_iops_burst", Iops, "desired burst limit of IO operations"),
    qos!("rbd_qos_bps_limit", Bps, "desired limit of IO bytes per second (0 = unlimited)"),
    qos!("rbd_qos_bps_burst", Bps, "desired burst limit of IO bytes"),
    qos!("rbd_qos_read_iops_limit", Iops, "desired limit of read operations per second"),
    qos!("rbd_qos_read_iops_burst", Iops, "desired burst limit of read operations"),
    qos!("rbd_qos_write_iops_limit", Iops, "desired limit of write operations per second"),
    qos!("rbd_qos_write_iops_burst", Iops, "desired burst limit of write operations"),
    qos!("rbd_qos_read_bps_limit", Bps, "desired limit of read bytes per second"),
    qos!("rbd_qos_read_bps_burst", Bps, "desired burst limit of read bytes"),
    qos!("rbd_qos_write_bps_limit", Bps, "desired limit of write bytes per second"),
    qos!("rbd_qos_write_bps_burst", Bps, "desired burst limit of write bytes"),
    ConfigOption {
        name: "rbd_qos_schedule_tick_min",
        kind: OptionType::Count,
        default: "50",
        description: "minimum schedule tick (in milliseconds) for QoS",
    },
    ConfigOption {
        name: "rbd_cache",
        kind: OptionType::Bool,
        default: "true",
        description: "whether to enable caching (writeback unless rbd_cache_max_dirty is 0)",
    },
    ConfigOption {
        name: "rbd_cache_size",
        kind: OptionType::Bytes,
        default: "33554432",
        description: "cache size in bytes",
    },
    ConfigOption {
        name: "rbd_cache_max_dirty",
        kind: OptionType::Bytes,
        default: "25165824",
        description: "dirty limit in bytes - set to 0 for write-through caching",
    },
    ConfigOption {
        name: "rbd_cache_writethrough_until_flush",
        kind: OptionType::Bool,
        default: "true",
        description: "whether to make writeback caching writethrough until flush is called",
    },
    ConfigOption {
        name: "rbd_default_snapshot_limit",
        kind: OptionType::Count,
        default: "0",
        description: "snapshot limit of new images (0 = no limit)",
    },
    ConfigOption {
        name: "rbd_move_to_trash_on_remove",
        kind: OptionType::Bool,
        default: "false",
        description: "automatically move images to the trash when deleted",
    },
    ConfigOption {
        name: "rbd_move_to_trash_on_remove_expire_seconds",
        kind: OptionType::Seconds,
        default: "0",
        description: "default number of seconds to protect deleted images in the trash",
    },
];

/// Looks up an option by name; unknown names are EINVAL.
pub fn option(name: &str) -> Result<&'static ConfigOption> {
    OPTIONS
        .iter()
        .find(|o| o.name == name)
        .ok_or_else(|| Error::invalid(format!("unknown configuration option '{name}'")))
}

/// Validates and normalises a value for `opt` (integers without units or signs; booleans as `true`/`false`).
pub fn normalize_value(opt: &ConfigOption, value: &str) -> Result<String> {
    let value = value.trim();
    match opt.kind {
        OptionType::Bool => match value.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok("true".to_owned()),
            "false" | "0" | "no" | "off" => Ok("false".to_owned()),
            _ => Err(Error::invalid(format!("{} expects true or false, not '{value}'", opt.name))),
        },
        _ => value
            .parse::<u64>()
            .map(|v| v.to_string())
            .map_err(|_| Error::invalid(format!("{} expects a non-negative integer, not '{value}'", opt.name))),
    }
}

/// Where a configuration value comes from, numbered as the reference's dashboard does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ConfigSource {
    /// The built-in default or a global override.
    Global,
    /// A pool override.
    Pool,
    /// An image override.
    Image,
}

impl ConfigSource {
    /// Returns 0, 1 or 2 as the reference dashboard encodes it.
    pub fn code(self) -> u8 {
        match self {
            ConfigSource::Global => 0,
            ConfigSource::Pool => 1,
            ConfigSource::Image => 2,
        }
    }

    /// Returns `global`, `pool` or `image`.
    pub fn as_str(self) -> &'static str {
        match self {
            ConfigSource::Global => "global",
            ConfigSource::Pool => "pool",
            ConfigSource::Image => "image",
        }
    }
}

/// An option's effective value and where it comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigEntry {
    /// The option's name.
    pub name: &'static str,
    /// The effective value.
    pub value: String,
    /// Where the value is set.
    pub source: ConfigSource,
}

/// A level at which configuration is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigLevel {
    /// Applies to every image.
    Global,
    /// Applies to the images of one pool.
    Pool(PoolName),
    /// Applies to one image.
    Image(ImageSpec),
}

/// Resolves every option from overrides at the three levels; each slice holds `(name, value)` pairs.
pub fn resolve(global: &[(String, String)], pool: &[(String, String)], image: &[(String, String)]) -> Vec<ConfigEntry> {
    OPTIONS
        .iter()
        .map(|opt| {
            let find = |level: &[(String, String)]| level.iter().find(|(n, _)| n == opt.name).map(|(_, v)| v.clone());
            let (value, source) = if let Some(v) = find(image) {
                (v, ConfigSource::Image)
            } else if let Some(v) = find(pool) {
                (v, ConfigSource::Pool)
            } else if let Some(v) = find(global) {
                (v, ConfigSource::Global)
            } else {
                (opt.default.to_owned(), ConfigSource::Global)
            };
            ConfigEntry { name: opt.name, value, source }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_most_specific_level_wins() {
        let global = vec![("rbd_qos_iops_limit".to_owned(), "100".to_owned())];
        let pool =
            vec![("rbd_qos_iops_limit".to_owned(), "200".to_owned()), ("rbd_cache".to_owned(), "false".to_owned())];
        let image = vec![("rbd_qos_iops_limit".to_owned(), "300".to_owned())];
        let entries = resolve(&global, &pool, &image);
        let get = |n: &str| entries.iter().find(|e| e.name == n).cloned().expect("option listed");
        assert_eq!(get("rbd_qos_iops_limit").value, "300");
        assert_eq!(get("rbd_qos_iops_limit").source, ConfigSource::Image);
        assert_eq!(get("rbd_cache").source, ConfigSource::Pool);
        assert_eq!(get("rbd_qos_bps_limit").value, "0");
        assert_eq!(get("rbd_qos_bps_limit").source, ConfigSource::Global);
        assert_eq!(
            entries.iter().filter(|e| e.name.starts_with("rbd_qos_") && !e.name.ends_with("tick_min")).count(),
            12
        );
    }

    #[test]
    fn values_are_typed() {
        let iops = option("rbd_qos_iops_limit").expect("known option");
        assert_eq!(normalize_value(iops, " 500 ").expect("integer"), "500");
        assert!(normalize_value(iops, "-1").is_err());
        assert!(normalize_value(iops, "lots").is_err());
        let cache = option("rbd_cache").expect("known option");
        assert_eq!(normalize_value(cache, "off").expect("bool"), "false");
        assert!(normalize_value(cache, "maybe").is_err());
        assert!(option("rbd_nonsense").is_err());
    }
}
