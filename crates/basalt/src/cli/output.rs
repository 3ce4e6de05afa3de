//! How results are printed: rbd-style text tables, `--format json`, and times as rbd shows them.

use std::io::Write;

use anyhow::{Context, Result};
use serde_json::Value;

/// Output format of listings, as rbd's `--format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// Human-readable text, rbd's layout.
    #[default]
    Plain,
    /// The API's JSON objects.
    Json,
}

/// Prints a JSON value (pretty, one document) to stdout.
pub fn print_json(value: &Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value).context("encoding JSON")?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}").context("writing to stdout")?;
    Ok(())
}

/// Column alignment of table data (headers are always left-aligned, as in rbd's TextTable).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    /// Text columns.
    Left,
    /// Numbers and sizes.
    Right,
}

/// A text table with two spaces between columns and trailing spaces trimmed, like rbd's.
#[derive(Debug, Clone)]
pub struct Table {
    columns: Vec<(&'static str, Align)>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub fn new(columns: &[(&'static str, Align)]) -> Table {
        Table { columns: columns.to_vec(), rows: Vec::new() }
    }

    /// Adds a row; missing cells are blank.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// True when no row was added.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Renders the header and the rows.
    pub fn render(&self) -> String {
        let widths: Vec<usize> = self
            .columns
            .iter()
            .enumerate()
            .map(|(i, (header, _))| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(i))
                    .map(|c| c.chars().count())
                    .max()
                    .unwrap_or(0)
                    .max(header.len())
            })
            .collect();
        let mut out = String::new();
        let header: Vec<String> = self.columns.iter().map(|(h, _)| (*h).to_owned()).collect();
        self.render_row(&mut out, &header, &widths, true);
        for row in &self.rows {
            self.render_row(&mut out, row, &widths, false);
        }
        out
    }

    fn render_row(&self, out: &mut String, cells: &[String], widths: &[usize], header: bool) {
        let mut line = String::new();
        for (i, ((_, align), width)) in self.columns.iter().zip(widths).enumerate() {
            let cell = cells.get(i).map(String::as_str).unwrap_or_default();
            if i > 0 {
                line.push_str("  ");
            }
            let pad = width.saturating_sub(cell.chars().count());
            if *align == Align::Right && !header {
                line.push_str(&" ".repeat(pad));
                line.push_str(cell);
            } else {
                line.push_str(cell);
                line.push_str(&" ".repeat(pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }

    /// Prints the table to stdout.
    pub fn print(&self) -> Result<()> {
        print_text(&self.render())
    }
}

/// Writes text to stdout as is.
pub fn print_text(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes()).context("writing to stdout")?;
    out.flush().context("writing to stdout")?;
    Ok(())
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm; proleptic Gregorian calendar).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date (year, month, day) of a day count since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
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

/// Formats Unix seconds as RFC 3339 UTC (`2026-11-25T14:20:17Z`), as the API wants times.
pub fn rfc3339(secs: i64) -> String {
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    format!("{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}Z", s / 3600, s % 3600 / 60, s % 60)
}

/// Formats Unix seconds the way rbd prints times (`Thu Nov 25 14:20:17 2026`), in UTC.
pub fn ctime(secs: i64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let days = secs.div_euclid(86_400);
    let (y, mo, d) = civil_from_days(days);
    let s = secs.rem_euclid(86_400);
    let weekday = DAYS[usize::try_from(days.rem_euclid(7)).unwrap_or(0)];
    let month = MONTHS[usize::try_from(mo - 1).unwrap_or(0)];
    format!("{weekday} {month} {d:>2} {:02}:{:02}:{:02} {y}", s / 3600, s % 3600 / 60, s % 60)
}

/// An API time shown as rbd shows it; text that does not parse is shown unchanged.
pub fn show_time(api_time: Option<&str>) -> String {
    match api_time {
        Some(t) => parse_time(t).map(ctime).unwrap_or_else(|_| t.to_owned()),
        None => String::new(),
    }
}

/// Seconds since the Unix epoch now.
pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_like_rbd() {
        let mut t = Table::new(&[("NAME", Align::Left), ("SIZE", Align::Right), ("PARENT", Align::Left)]);
        t.row(vec!["vm1".into(), "10 GiB".into(), String::new()]);
        t.row(vec!["clone-long".into(), "512 MiB".into(), "rbd/vm1@s".into()]);
        assert_eq!(t.render(), "NAME        SIZE     PARENT\nvm1          10 GiB\nclone-long  512 MiB  rbd/vm1@s\n");
    }

    #[test]
    fn times_round_trip() {
        let t = parse_time("2026-11-25T14:20:17Z").expect("rfc 3339");
        assert_eq!(rfc3339(t), "2026-11-25T14:20:17Z");
        assert_eq!(ctime(t), "Wed Nov 25 14:20:17 2026");
        assert_eq!(ctime(0), "Thu Jan  1 00:00:00 1970");
        assert_eq!(parse_time("2026-11-25 14:20:17").expect("space"), t);
        assert_eq!(parse_time("2026-11-25T15:20:17.5+01:00").expect("offset"), t);
        assert_eq!(parse_time("2026-11-25").expect("date"), t - (14 * 3600 + 20 * 60 + 17));
        assert_eq!(parse_time("2000-02-29T00:00:00Z").expect("leap"), 951_782_400);
        for bad in ["", "2026-13-01", "2026-11", "x", "2026-11-25T25:00:00Z", "2026-11-25T10:00:00:00Z"] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
        assert_eq!(show_time(Some("not a time")), "not a time");
    }
}
