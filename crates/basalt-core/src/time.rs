//! Calendar arithmetic for the times users type and read: RFC 3339 and plain dates, in UTC, without a time crate.
//! The one place the project converts between Unix seconds and civil dates.

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm; proleptic Gregorian calendar).
pub fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date (year, month, day) of a day count since 1970-01-01.
pub fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

fn number(text: &str, what: &str) -> Result<i64, String> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("bad {what} '{text}'"));
    }
    text.parse().map_err(|_| format!("bad {what} '{text}'"))
}

/// Parses `YYYY-MM-DD`, `YYYY-MM-DD HH:MM[:SS]` or RFC 3339 (`T` separator, fraction, `Z` or `±HH:MM`) to Unix
/// seconds. Times without a zone are UTC.
pub fn parse_time(text: &str) -> Result<i64, String> {
    let text = text.trim();
    let (date, rest) = match text.find(['T', 't', ' ']) {
        Some(i) => (&text[..i], text[i + 1..].trim()),
        None => (text, ""),
    };
    let mut date_parts = date.split('-');
    let (Some(y), Some(m), Some(d), None) =
        (date_parts.next(), date_parts.next(), date_parts.next(), date_parts.next())
    else {
        return Err(format!("bad date '{date}': expected YYYY-MM-DD"));
    };
    let (year, month, day) = (number(y, "year")?, number(m, "month")?, number(d, "day")?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return Err(format!("bad date '{date}'"));
    }
    // Split off the zone: `Z`, or a sign after the time.
    let (clock, offset_secs) = if let Some(clock) = rest.strip_suffix(['Z', 'z']) {
        (clock, 0)
    } else if let Some(i) = rest.rfind(['+', '-']) {
        let (clock, zone) = rest.split_at(i);
        let sign = if zone.starts_with('-') { -1 } else { 1 };
        let (h, m) = zone[1..].split_once(':').unwrap_or((&zone[1..], "0"));
        (clock, sign * (number(h, "zone hour")? * 3600 + number(m, "zone minute")? * 60))
    } else {
        (rest, 0)
    };
    let clock = clock.trim();
    let mut secs_of_day = 0;
    if !clock.is_empty() {
        let mut parts = clock.split(':');
        let h = number(parts.next().unwrap_or_default(), "hour")?;
        let m = number(parts.next().unwrap_or("0"), "minute")?;
        let s_text = parts.next().unwrap_or("0");
        let s = number(s_text.split('.').next().unwrap_or_default(), "second")?;
        if parts.next().is_some() || h > 23 || m > 59 || s > 60 {
            return Err(format!("bad time '{clock}'"));
        }
        secs_of_day = h * 3600 + m * 60 + s;
    }
    Ok(days_from_civil(year, month, day) * 86_400 + secs_of_day - offset_secs)
}

/// Formats Unix seconds as RFC 3339 UTC (`2026-11-25T14:20:17Z`).
pub fn rfc3339(secs: i64) -> String {
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    format!("{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}Z", s / 3600, s % 3600 / 60, s % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip() {
        let t = parse_time("2026-11-25T14:20:17Z").expect("rfc 3339");
        assert_eq!(t, 1_795_616_417);
        assert_eq!(rfc3339(t), "2026-11-25T14:20:17Z");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(parse_time("2026-11-25 14:20:17").expect("space"), t);
        assert_eq!(parse_time("2026-11-25T15:20:17.5+01:00").expect("offset"), t);
        assert_eq!(parse_time("2000-02-29T00:00:00Z").expect("leap"), 951_782_400);
        for bad in ["2026-13-01T00:00:00Z", "yesterday", "2026-11-25T25:00:00Z", ""] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
        for days in [-1000, 0, 19_000, 20_417] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }
}
