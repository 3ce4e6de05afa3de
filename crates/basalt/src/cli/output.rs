//! How results are printed: rbd-style text tables, `--format json`, and times as rbd shows them.

use std::io::Write;

use anyhow::{Context, Result};
use basalt_core::time::civil_from_days;
pub use basalt_core::time::{parse_time, rfc3339};
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
