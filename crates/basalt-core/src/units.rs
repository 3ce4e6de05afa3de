//! Sizes with units as users type them (`10G`, `512M`, `4K`, `1TiB`) and as they are printed (`10 GiB`).

use crate::error::{Error, Result};

/// Parses a size: a non-negative integer with an optional binary unit (K, M, G, T, P, E, with or without `iB`/`B`);
/// a bare number is in `default_unit_bytes` (the reference CLI takes MiB, the API bytes).
pub fn parse_size(text: &str, default_unit_bytes: u64) -> Result<u64> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    if digits.is_empty() {
        return Err(Error::invalid(format!("invalid size '{text}': expected a number with an optional unit like 10G")));
    }
    let number: u64 = digits.parse().map_err(|_| Error::invalid(format!("invalid size '{text}': number too large")))?;
    let multiplier: u64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" => default_unit_bytes,
        "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        "T" | "TB" | "TIB" => 1 << 40,
        "P" | "PB" | "PIB" => 1 << 50,
        "E" | "EB" | "EIB" => 1 << 60,
        _ => return Err(Error::invalid(format!("invalid size '{text}': unknown unit '{unit}'"))),
    };
    number.checked_mul(multiplier).ok_or_else(|| Error::invalid(format!("invalid size '{text}': it overflows 64 bits")))
}

/// Formats bytes the way `rbd` does: `10 GiB`, `512 MiB`, `4 KiB`, `123 B`, with one decimal where it is not whole.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut unit_idx = 0;
    let mut scaled = bytes as f64;
    while scaled >= 1024.0 && unit_idx + 1 < UNITS.len() {
        scaled /= 1024.0;
        unit_idx += 1;
    }
    if unit_idx == 0 || scaled.fract() == 0.0 {
        format!("{} {}", scaled as u64, UNITS[unit_idx])
    } else {
        format!("{scaled:.1} {}", UNITS[unit_idx])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("10G", 1).expect("10G"), 10 << 30);
        assert_eq!(parse_size("512M", 1).expect("512M"), 512 << 20);
        assert_eq!(parse_size("4KiB", 1).expect("4KiB"), 4096);
        assert_eq!(parse_size("100", 1 << 20).expect("bare"), 100 << 20);
        assert_eq!(parse_size("0", 1).expect("zero"), 0);
        for bad in ["", "-1", "1.5G", "10X", "G", "99999999999999999999", "16E"] {
            assert!(parse_size(bad, 1).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes_format_like_rbd() {
        assert_eq!(format_size(10 << 30), "10 GiB");
        assert_eq!(format_size(4096), "4 KiB");
        assert_eq!(format_size(1536), "1.5 KiB");
        assert_eq!(format_size(100), "100 B");
    }
}
