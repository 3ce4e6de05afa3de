//! Trash purge schedules, as `rbd trash purge schedule`: where a schedule applies (every pool, one pool with all its
//! namespaces, or one namespace), its items (an interval and an optional start time of day), and when it next runs.
//!
//! Nothing here purges anything: a backend stores schedules, and whoever runs them (basalt's server for the embedded
//! engine, the Ceph manager for a cluster) removes the expired entries of the scheduled locations when they are due.

use std::fmt;

use crate::error::{Error, ErrorKind, Result};
use crate::image::Timestamp;
use crate::names::{Namespace, PoolName, PoolNs};

/// Where a schedule applies. Without a pool: every pool; with a pool only: each namespace of that pool (the default
/// one included); with a namespace too: that namespace only. For a namespace, the most specific schedule wins.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ScheduleLevel {
    /// The pool, or `None` for every pool.
    pub pool: Option<PoolName>,
    /// The namespace (only with a pool), or `None` for every namespace of the pool.
    pub namespace: Option<Namespace>,
}

impl ScheduleLevel {
    /// Every pool.
    pub fn global() -> ScheduleLevel {
        ScheduleLevel::default()
    }

    /// A pool and all its namespaces.
    pub fn pool(pool: PoolName) -> ScheduleLevel {
        ScheduleLevel { pool: Some(pool), namespace: None }
    }

    /// One namespace of a pool.
    pub fn namespace(location: PoolNs) -> ScheduleLevel {
        ScheduleLevel { pool: Some(location.pool), namespace: Some(location.namespace) }
    }

    /// Builds a level from optional parts; a namespace needs a pool.
    pub fn from_parts(pool: Option<PoolName>, namespace: Option<Namespace>) -> Result<ScheduleLevel> {
        if pool.is_none() && namespace.is_some() {
            return Err(Error::new(ErrorKind::InvalidArgument, "a namespace needs a pool"));
        }
        Ok(ScheduleLevel { pool, namespace })
    }

    /// Parses `""` (every pool), `pool` (the pool and its namespaces), `pool/` (its default namespace only) or
    /// `pool/namespace`: the inverse of `Display`.
    pub fn parse(text: &str) -> Result<ScheduleLevel> {
        if text.is_empty() {
            return Ok(ScheduleLevel::global());
        }
        let (pool, namespace) = match text.split_once('/') {
            None => (text, None),
            Some((pool, "")) => (pool, Some(Namespace::default_ns())),
            Some((pool, ns)) => (pool, Some(Namespace::new(ns)?)),
        };
        Ok(ScheduleLevel { pool: Some(PoolName::new(pool)?), namespace })
    }

    /// Whether the schedules of this level apply to a namespace.
    pub fn matches(&self, location: &PoolNs) -> bool {
        match (&self.pool, &self.namespace) {
            (None, _) => true,
            (Some(pool), None) => *pool == location.pool,
            (Some(pool), Some(ns)) => *pool == location.pool && *ns == location.namespace,
        }
    }

    /// Whether `other` is this level or below it (a pool below every pool, a namespace below its pool).
    pub fn contains(&self, other: &ScheduleLevel) -> bool {
        match (&self.pool, &self.namespace) {
            (None, _) => true,
            (Some(pool), None) => other.pool.as_ref() == Some(pool),
            (Some(_), Some(_)) => self == other,
        }
    }

    /// The level just above this one, if any.
    pub fn parent(&self) -> Option<ScheduleLevel> {
        match (&self.pool, &self.namespace) {
            (None, _) => None,
            (Some(_), None) => Some(ScheduleLevel::global()),
            (Some(pool), Some(_)) => Some(ScheduleLevel::pool(pool.clone())),
        }
    }

    /// The levels whose schedules could apply to a namespace, most specific first.
    pub fn chain(location: &PoolNs) -> [ScheduleLevel; 3] {
        [
            ScheduleLevel::namespace(location.clone()),
            ScheduleLevel::pool(location.pool.clone()),
            ScheduleLevel::global(),
        ]
    }
}

impl fmt::Display for ScheduleLevel {
    /// `""`, `pool`, `pool/` (the default namespace) or `pool/namespace`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.pool, &self.namespace) {
            (None, _) => Ok(()),
            (Some(pool), None) => write!(f, "{pool}"),
            (Some(pool), Some(ns)) => write!(f, "{pool}/{ns}"),
        }
    }
}

/// How often a schedule runs, in whole minutes (`30m`, `12h`, `1d`; a bare number is minutes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ScheduleInterval(u32);

/// The longest interval accepted: a year.
const MAX_INTERVAL_MINUTES: u64 = 366 * 24 * 60;

impl ScheduleInterval {
    /// An interval of `minutes` (at least one).
    pub fn from_minutes(minutes: u32) -> Result<ScheduleInterval> {
        if minutes == 0 || u64::from(minutes) > MAX_INTERVAL_MINUTES {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!("invalid interval of {minutes} minutes: use 1 minute to 366 days"),
            ));
        }
        Ok(ScheduleInterval(minutes))
    }

    /// Parses `N`, `Nm`, `Nh` or `Nd`.
    pub fn parse(text: &str) -> Result<ScheduleInterval> {
        let invalid = || {
            Error::new(ErrorKind::InvalidArgument, format!("invalid interval '{text}': use for example 30m, 12h or 1d"))
        };
        let (digits, unit) = match text.char_indices().last() {
            Some((at, c @ ('m' | 'h' | 'd'))) => (&text[..at], c),
            _ => (text, 'm'),
        };
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || digits.len() > 9 {
            return Err(invalid());
        }
        let n: u64 = digits.parse().map_err(|_| invalid())?;
        let minutes = match unit {
            'd' => n * 24 * 60,
            'h' => n * 60,
            _ => n,
        };
        if minutes == 0 || minutes > MAX_INTERVAL_MINUTES {
            return Err(invalid());
        }
        ScheduleInterval::from_minutes(u32::try_from(minutes).map_err(|_| invalid())?)
    }

    /// The interval in minutes.
    pub fn minutes(self) -> u32 {
        self.0
    }
}

impl fmt::Display for ScheduleInterval {
    /// The largest whole unit: `1d`, `12h`, `90m`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        if m.is_multiple_of(24 * 60) {
            write!(f, "{}d", m / (24 * 60))
        } else if m.is_multiple_of(60) {
            write!(f, "{}h", m / 60)
        } else {
            write!(f, "{m}m")
        }
    }
}

/// The time of day (UTC, to the minute) that a schedule's runs are aligned to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ScheduleStartTime(u16);

impl ScheduleStartTime {
    /// A start time `minutes` after midnight UTC.
    pub fn from_minutes(minutes: u16) -> Result<ScheduleStartTime> {
        if minutes >= 24 * 60 {
            return Err(Error::new(ErrorKind::InvalidArgument, format!("invalid start time of {minutes} minutes")));
        }
        Ok(ScheduleStartTime(minutes))
    }

    /// Parses `HH:MM` or `HH:MM:SS` (seconds are dropped), optionally followed by `Z`, `UTC`, or an offset
    /// `+HH:MM`/`-HH:MM`, which is converted to UTC. Without a zone the time is UTC.
    pub fn parse(text: &str) -> Result<ScheduleStartTime> {
        let invalid = || {
            Error::new(
                ErrorKind::InvalidArgument,
                format!("invalid start time '{text}': use HH:MM, optionally with Z or an offset such as +02:00"),
            )
        };
        let trimmed = text.trim();
        let (clock, offset_minutes) = if let Some(rest) = trimmed.strip_suffix('Z') {
            (rest, 0i32)
        } else if let Some(rest) = trimmed.strip_suffix("UTC") {
            (rest.trim_end(), 0)
        } else if let Some(at) = trimmed.rfind(['+', '-']) {
            let (sign, zone) = (if &trimmed[at..=at] == "-" { -1 } else { 1 }, &trimmed[at + 1..]);
            let (h, m) = zone.split_once(':').unwrap_or((zone, "0"));
            let (h, m) = (two_digits(h).ok_or_else(invalid)?, two_digits(m).ok_or_else(invalid)?);
            if h > 14 || m > 59 {
                return Err(invalid());
            }
            (&trimmed[..at], sign * i32::from(h * 60 + m))
        } else {
            (trimmed, 0)
        };
        let mut parts = clock.split(':');
        let hour = parts.next().and_then(two_digits).ok_or_else(invalid)?;
        let minute = parts.next().and_then(two_digits).ok_or_else(invalid)?;
        let second = match parts.next() {
            None => 0,
            Some(s) => two_digits(s).ok_or_else(invalid)?,
        };
        if parts.next().is_some() || hour > 23 || minute > 59 || second > 59 {
            return Err(invalid());
        }
        let local = i32::from(hour * 60 + minute);
        let utc = (local - offset_minutes).rem_euclid(24 * 60);
        ScheduleStartTime::from_minutes(u16::try_from(utc).map_err(|_| invalid())?)
    }

    /// Minutes after midnight UTC.
    pub fn minutes(self) -> u16 {
        self.0
    }
}

fn two_digits(text: &str) -> Option<u16> {
    if text.is_empty() || text.len() > 2 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

impl fmt::Display for ScheduleStartTime {
    /// `HH:MM:00` (UTC), as the reference prints it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}:00", self.0 / 60, self.0 % 60)
    }
}

/// One item of a schedule: run every `interval`, at times aligned to `start_time` (or to midnight UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ScheduleItem {
    /// How often.
    pub interval: ScheduleInterval,
    /// The alignment, if given.
    pub start_time: Option<ScheduleStartTime>,
}

impl ScheduleItem {
    /// The first run of this item strictly after `after`: start time (on 1970-01-01) plus a whole number of
    /// intervals, to the minute.
    pub fn next_run(&self, after: Timestamp) -> Timestamp {
        let period = u64::from(self.interval.minutes()) * 60;
        let start = u64::from(self.start_time.map_or(0, ScheduleStartTime::minutes)) * 60;
        let now = after.secs();
        if now < start {
            return Timestamp(start);
        }
        Timestamp(start + ((now - start) / period + 1) * period)
    }
}

impl fmt::Display for ScheduleItem {
    /// `every 1d` or `every 1d starting at 14:00:00`, as the reference's listing.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "every {}", self.interval)?;
        if let Some(start) = self.start_time {
            write!(f, " starting at {start}")?;
        }
        Ok(())
    }
}

/// The schedule of one level: its items (at least one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrashPurgeSchedule {
    /// Where it applies.
    pub level: ScheduleLevel,
    /// Its items, sorted.
    pub items: Vec<ScheduleItem>,
}

impl TrashPurgeSchedule {
    /// The earliest run of any item strictly after `after`.
    pub fn next_run(&self, after: Timestamp) -> Option<Timestamp> {
        self.items.iter().map(|item| item.next_run(after)).min()
    }
}

/// The next scheduled purge of one namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduledPurge {
    /// The namespace whose expired entries will be purged.
    pub location: PoolNs,
    /// When (it may be in the past when a run is due now).
    pub next_run: Timestamp,
}

/// Picks, from all schedules, the one that applies to a namespace: the most specific level wins.
pub fn effective_schedule<'a>(
    schedules: &'a [TrashPurgeSchedule],
    location: &PoolNs,
) -> Option<&'a TrashPurgeSchedule> {
    ScheduleLevel::chain(location).into_iter().find_map(|level| schedules.iter().find(|s| s.level == level))
}

/// The schedules a listing of `level` shows: with `recursive`, the level's own schedule, the nearest level above it
/// with a schedule (which applies to it when it has none), and every schedule below it; otherwise the level's own
/// schedule only.
pub fn schedules_listed(
    schedules: &[TrashPurgeSchedule],
    level: &ScheduleLevel,
    recursive: bool,
) -> Vec<TrashPurgeSchedule> {
    let mut out: Vec<TrashPurgeSchedule> = Vec::new();
    if !recursive {
        out.extend(schedules.iter().filter(|s| s.level == *level).cloned());
        return out;
    }
    if !schedules.iter().any(|s| s.level == *level) {
        let mut up = level.parent();
        while let Some(parent) = up {
            if let Some(found) = schedules.iter().find(|s| s.level == parent) {
                out.push(found.clone());
                break;
            }
            up = parent.parent();
        }
    }
    out.extend(schedules.iter().filter(|s| level.contains(&s.level)).cloned());
    out.sort_by(|a, b| a.level.cmp(&b.level));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_parse_and_print_as_the_reference() {
        assert_eq!(ScheduleInterval::parse("1d").expect("valid in the test").minutes(), 1440);
        assert_eq!(ScheduleInterval::parse("12h").expect("valid in the test").minutes(), 720);
        assert_eq!(ScheduleInterval::parse("30m").expect("valid in the test").minutes(), 30);
        assert_eq!(ScheduleInterval::parse("90").expect("valid in the test").to_string(), "90m");
        assert_eq!(ScheduleInterval::parse("120m").expect("valid in the test").to_string(), "2h");
        assert_eq!(ScheduleInterval::parse("48h").expect("valid in the test").to_string(), "2d");
        for bad in ["", "0", "0d", "d", "1w", "-1h", "1.5h", " 1h", "367d", "99999999999"] {
            assert!(ScheduleInterval::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn start_times_are_kept_in_utc() {
        assert_eq!(ScheduleStartTime::parse("14:00").expect("valid in the test").to_string(), "14:00:00");
        assert_eq!(ScheduleStartTime::parse("14:05:59").expect("valid in the test").to_string(), "14:05:00");
        assert_eq!(ScheduleStartTime::parse("01:30+02:00").expect("valid in the test").to_string(), "23:30:00");
        assert_eq!(ScheduleStartTime::parse("23:30-01:00").expect("valid in the test").to_string(), "00:30:00");
        assert_eq!(ScheduleStartTime::parse("08:00Z").expect("valid in the test").minutes(), 480);
        for bad in ["", "24:00", "12:60", "noon", "1:2:3:4", "12", "12:00+15:00", "12:00:61"] {
            assert!(ScheduleStartTime::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn next_runs_are_aligned_to_the_start_time() {
        let day = ScheduleInterval::parse("1d").expect("valid in the test");
        let at = |s: &str| Timestamp(crate::time::parse_time(s).expect("valid in the test") as u64);
        let plain = ScheduleItem { interval: day, start_time: None };
        assert_eq!(plain.next_run(at("2026-03-01T10:00:00Z")), at("2026-03-02T00:00:00Z"));
        // Strictly after: a run exactly at a slot goes to the next one.
        assert_eq!(plain.next_run(at("2026-03-02T00:00:00Z")), at("2026-03-03T00:00:00Z"));
        let two = ScheduleItem {
            interval: day,
            start_time: Some(ScheduleStartTime::parse("02:00").expect("valid in the test")),
        };
        assert_eq!(two.next_run(at("2026-03-01T10:00:00Z")), at("2026-03-02T02:00:00Z"));
        assert_eq!(two.next_run(at("2026-03-01T01:00:00Z")), at("2026-03-01T02:00:00Z"));
        let half =
            ScheduleItem { interval: ScheduleInterval::parse("30m").expect("valid in the test"), start_time: None };
        let schedule = TrashPurgeSchedule { level: ScheduleLevel::global(), items: vec![two, half] };
        assert_eq!(schedule.next_run(at("2026-03-01T10:10:00Z")), Some(at("2026-03-01T10:30:00Z")));
    }

    #[test]
    fn the_most_specific_level_applies() {
        let rbd = PoolName::new("rbd").expect("valid in the test");
        let ns = PoolNs::new(rbd.clone(), Namespace::new("tenant").expect("valid in the test"));
        let item =
            ScheduleItem { interval: ScheduleInterval::parse("1h").expect("valid in the test"), start_time: None };
        let pool_level = TrashPurgeSchedule { level: ScheduleLevel::pool(rbd.clone()), items: vec![item] };
        let ns_level = TrashPurgeSchedule { level: ScheduleLevel::namespace(ns.clone()), items: vec![item] };
        let all = vec![pool_level.clone(), ns_level.clone()];
        assert_eq!(effective_schedule(&all, &ns), Some(&ns_level));
        let default = PoolNs::new(rbd.clone(), Namespace::default_ns());
        assert_eq!(effective_schedule(&all, &default), Some(&pool_level));
        let other = PoolNs::new(PoolName::new("other").expect("valid in the test"), Namespace::default_ns());
        assert_eq!(effective_schedule(&all, &other), None);
        assert_eq!(schedules_listed(&all, &ScheduleLevel::pool(rbd.clone()), false), vec![pool_level.clone()]);
        assert_eq!(schedules_listed(&all, &ScheduleLevel::pool(rbd.clone()), true), all);
        assert_eq!(schedules_listed(&all, &ScheduleLevel::namespace(ns.clone()), true), vec![ns_level]);
        let other_ns = ScheduleLevel::namespace(PoolNs::new(rbd, Namespace::new("b").expect("valid in the test")));
        assert_eq!(schedules_listed(&all, &other_ns, true), vec![pool_level]);
        assert_eq!(ScheduleLevel::parse("rbd/tenant").expect("valid in the test").to_string(), "rbd/tenant");
        for text in ["", "rbd", "rbd/", "rbd/tenant"] {
            assert_eq!(ScheduleLevel::parse(text).expect("valid in the test").to_string(), text);
        }
        let default_ns = ScheduleLevel::parse("rbd/").expect("valid in the test");
        assert!(default_ns.matches(&PoolNs::new(PoolName::new("rbd").expect("name"), Namespace::default_ns())));
        assert!(!default_ns.matches(&ns));
    }
}
