//! `basalt perf image iostat`: a live table of the busiest images, like `rbd perf image iostat`, from the server's
//! per-image figures (`/api/perf/top`).

use anyhow::{Result, bail};
use serde_json::Value;

use super::api::Api;
use super::output::{Align, Format, Table, print_json};

/// Arguments of `perf image iostat`.
#[derive(clap::Args, Debug)]
pub struct IostatArgs {
    /// Only images of this pool[/namespace]
    pub pool_spec: Option<String>,
    /// Seconds between refreshes (and the window each line averages over)
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub interval: u64,
    /// Stop after this many refreshes (default: until interrupted)
    #[arg(long)]
    pub iterations: Option<u64>,
    /// Column to sort by
    #[arg(long, value_enum, default_value_t = SortBy::WriteOps)]
    pub sort_by: SortBy,
    /// Output format
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

/// Columns iostat sorts by, as rbd names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SortBy {
    /// Writes per second.
    WriteOps,
    /// Reads per second.
    ReadOps,
    /// Bytes written per second.
    WriteBytes,
    /// Bytes read per second.
    ReadBytes,
    /// Average write latency.
    WriteLatency,
    /// Average read latency.
    ReadLatency,
}

impl SortBy {
    fn field(self) -> &'static str {
        match self {
            SortBy::WriteOps => "write_iops",
            SortBy::ReadOps => "read_iops",
            SortBy::WriteBytes => "write_bps",
            SortBy::ReadBytes => "read_bps",
            SortBy::WriteLatency => "write_latency_ms",
            SortBy::ReadLatency => "read_latency_ms",
        }
    }
}

fn number(row: &Value, field: &str) -> f64 {
    row[field].as_f64().unwrap_or(0.0)
}

fn rate(bytes_per_sec: f64) -> String {
    format!("{}/s", basalt_core::units::format_size(bytes_per_sec.round() as u64))
}

/// One refresh: the images with activity in the last `interval` seconds, sorted.
fn sample(api: &Api, args: &IostatArgs) -> Result<Vec<Value>> {
    let path = format!("/api/perf/top?by=iops&limit=64&window={}", args.interval);
    let Value::Array(mut rows) = api.get_value(&path)? else { bail!("the server answered an unexpected perf listing") };
    if let Some(prefix) = args.pool_spec.as_deref() {
        let prefix = format!("{}/", prefix.trim_end_matches('/'));
        rows.retain(|r| r["image"].as_str().is_some_and(|name| name.starts_with(&prefix)));
    }
    let field = args.sort_by.field();
    rows.sort_by(|a, b| number(b, field).total_cmp(&number(a, field)));
    Ok(rows)
}

fn render(rows: &[Value]) -> String {
    let mut table = Table::new(&[
        ("NAME", Align::Left),
        ("WR", Align::Right),
        ("RD", Align::Right),
        ("WR_BYTES", Align::Right),
        ("RD_BYTES", Align::Right),
        ("WR_LAT", Align::Right),
        ("RD_LAT", Align::Right),
    ]);
    for row in rows {
        table.row(vec![
            row["image"].as_str().unwrap_or_default().to_owned(),
            format!("{:.0}/s", number(row, "write_iops")),
            format!("{:.0}/s", number(row, "read_iops")),
            rate(number(row, "write_bps")),
            rate(number(row, "read_bps")),
            format!("{:.2} ms", number(row, "write_latency_ms")),
            format!("{:.2} ms", number(row, "read_latency_ms")),
        ]);
    }
    table.render()
}

/// Runs the live table.
pub fn iostat(api: &Api, args: &IostatArgs) -> Result<()> {
    let mut done = 0u64;
    loop {
        if done > 0 {
            std::thread::sleep(std::time::Duration::from_secs(args.interval));
        }
        let rows = sample(api, args)?;
        match args.format {
            Format::Json => print_json(&Value::Array(rows))?,
            Format::Plain => super::output::print_text(&format!("{}\n", render(&rows)))?,
        }
        done += 1;
        if args.iterations.is_some_and(|n| done >= n) {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_table_has_rbds_columns_and_units() {
        let rows = vec![json!({
            "image": "rbd/vm1", "write_iops": 512.4, "read_iops": 3.0, "write_bps": 2097152.0, "read_bps": 0.0,
            "write_latency_ms": 0.256, "read_latency_ms": 0.0
        })];
        let text = render(&rows);
        let mut lines = text.lines();
        // Headers are left-aligned, numbers right-aligned, as in rbd's TextTable.
        assert_eq!(lines.next(), Some("NAME     WR     RD   WR_BYTES  RD_BYTES  WR_LAT   RD_LAT"));
        assert_eq!(lines.next(), Some("rbd/vm1  512/s  3/s   2 MiB/s     0 B/s  0.26 ms  0.00 ms"));
    }
}
