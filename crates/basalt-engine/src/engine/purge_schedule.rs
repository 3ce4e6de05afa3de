//! Trash purge schedules of the embedded engine: kept in the metadata store (`purge_schedules`, and the last run of
//! each namespace in `purge_runs`) and run by whoever hosts the engine (basalt's server) through
//! [`Engine::schedule_run_due`].

use basalt_core::schedule::{effective_schedule, schedules_listed};
use basalt_core::{
    Namespace, PoolName, PoolNs, Progress, PurgeReport, Result, ScheduleInterval, ScheduleItem, ScheduleLevel,
    ScheduleStartTime, ScheduledPurge, Timestamp, TrashPurgeSchedule, bail,
};
use redb::{ReadableTable, TableError};

use super::Engine;
use crate::records::{NAMESPACES, POOLS, PURGE_RUNS, PURGE_SCHEDULES, PurgeScheduleRec, db_err, decode, encode};

/// A stored schedule with the time it last changed.
struct Stored {
    schedule: TrashPurgeSchedule,
    changed: u64,
}

fn level_key(level: &ScheduleLevel) -> String {
    level.to_string()
}

fn to_rec(items: &[ScheduleItem], changed: u64) -> PurgeScheduleRec {
    PurgeScheduleRec {
        items: items.iter().map(|i| (i.interval.minutes(), i.start_time.map(ScheduleStartTime::minutes))).collect(),
        changed,
    }
}

fn from_rec(key: &str, rec: PurgeScheduleRec) -> Result<Stored> {
    let level = ScheduleLevel::parse(key)?;
    let mut items = Vec::new();
    for (minutes, start) in rec.items {
        let interval = ScheduleInterval::from_minutes(minutes)?;
        let start_time = start.map(ScheduleStartTime::from_minutes).transpose()?;
        items.push(ScheduleItem { interval, start_time });
    }
    Ok(Stored { schedule: TrashPurgeSchedule { level, items }, changed: rec.changed })
}

impl Engine {
    /// Every stored schedule (an older store without the table has none).
    fn stored_schedules(&self) -> Result<Vec<Stored>> {
        let txn = self.read_txn()?;
        let table = match txn.open_table(PURGE_SCHEDULES) {
            Ok(table) => table,
            Err(TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(err) => return Err(db_err(err)),
        };
        let mut out = Vec::new();
        for entry in table.iter().map_err(db_err)? {
            let (key, value) = entry.map_err(db_err)?;
            out.push(from_rec(key.value(), decode(value.value())?)?);
        }
        Ok(out)
    }

    fn last_run(&self, location: &PoolNs) -> Result<Option<u64>> {
        let txn = self.read_txn()?;
        let table = match txn.open_table(PURGE_RUNS) {
            Ok(table) => table,
            Err(TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(err) => return Err(db_err(err)),
        };
        let key = (location.pool.as_str(), location.namespace.as_str());
        Ok(table.get(key).map_err(db_err)?.map(|v| v.value()))
    }

    /// The pool and namespace of a level must exist.
    fn check_level(&self, level: &ScheduleLevel) -> Result<()> {
        let Some(pool) = &level.pool else { return Ok(()) };
        let txn = self.read_txn()?;
        let pools = txn.open_table(POOLS).map_err(db_err)?;
        if pools.get(pool.as_str()).map_err(db_err)?.is_none() {
            bail!(NotFound, "pool '{pool}' does not exist");
        }
        if let Some(ns) = level.namespace.as_ref().filter(|ns| !ns.is_default()) {
            let namespaces = txn.open_table(NAMESPACES).map_err(db_err)?;
            if namespaces.get((pool.as_str(), ns.as_str())).map_err(db_err)?.is_none() {
                bail!(NotFound, "namespace '{pool}/{ns}' does not exist");
            }
        }
        Ok(())
    }

    /// Every namespace of every pool (the default ones included), for the levels that have schedules.
    fn scheduled_locations(&self, stored: &[Stored]) -> Result<Vec<PoolNs>> {
        let txn = self.read_txn()?;
        let pools = txn.open_table(POOLS).map_err(db_err)?;
        let namespaces = txn.open_table(NAMESPACES).map_err(db_err)?;
        let mut out = Vec::new();
        for entry in pools.iter().map_err(db_err)? {
            let (name, _) = entry.map_err(db_err)?;
            let pool = PoolName::new(name.value())?;
            let mut here = vec![PoolNs::new(pool.clone(), Namespace::default_ns())];
            for ns in namespaces.range((pool.as_str(), "")..).map_err(db_err)? {
                let (key, _) = ns.map_err(db_err)?;
                let (p, ns) = key.value();
                if p != pool.as_str() {
                    break;
                }
                here.push(PoolNs::new(pool.clone(), Namespace::new(ns)?));
            }
            out.extend(here.into_iter().filter(|loc| stored.iter().any(|s| s.schedule.level.matches(loc))));
        }
        Ok(out)
    }

    /// When a namespace's schedule next runs: its first slot after its last run, or after the schedule last
    /// changed when that is later (a namespace that never ran, or a schedule replaced since).
    fn next_run_of(&self, stored: &[Stored], location: &PoolNs) -> Result<Option<Timestamp>> {
        let schedules: Vec<TrashPurgeSchedule> = stored.iter().map(|s| s.schedule.clone()).collect();
        let Some(effective) = effective_schedule(&schedules, location) else { return Ok(None) };
        let changed = stored.iter().find(|s| s.schedule.level == effective.level).map_or(0, |s| s.changed);
        let since = self.last_run(location)?.unwrap_or(0).max(changed);
        Ok(effective.next_run(Timestamp(since)))
    }

    pub(super) fn schedule_add(&self, level: &ScheduleLevel, item: &ScheduleItem) -> Result<()> {
        self.check_level(level)?;
        let key = level_key(level);
        let now = self.now().secs();
        let txn = self.write_txn()?;
        {
            let mut table = txn.open_table(PURGE_SCHEDULES).map_err(db_err)?;
            let mut items = match table.get(key.as_str()).map_err(db_err)? {
                Some(value) => from_rec(&key, decode(value.value())?)?.schedule.items,
                None => Vec::new(),
            };
            if items.contains(item) {
                return Ok(());
            }
            items.push(*item);
            items.sort();
            table.insert(key.as_str(), encode(&to_rec(&items, now))?.as_slice()).map_err(db_err)?;
        }
        txn.commit().map_err(db_err)
    }

    pub(super) fn schedule_remove(&self, level: &ScheduleLevel, item: Option<&ScheduleItem>) -> Result<()> {
        let key = level_key(level);
        let now = self.now().secs();
        let txn = self.write_txn()?;
        {
            let mut table = txn.open_table(PURGE_SCHEDULES).map_err(db_err)?;
            let Some(items) = table
                .get(key.as_str())
                .map_err(db_err)?
                .map(|value| decode(value.value()).and_then(|rec| from_rec(&key, rec)))
                .transpose()?
                .map(|stored| stored.schedule.items)
            else {
                bail!(NotFound, "no trash purge schedule at {}", describe(level));
            };
            let kept: Vec<ScheduleItem> = match item {
                None => Vec::new(),
                Some(item) => {
                    if !items.contains(item) {
                        bail!(NotFound, "no trash purge schedule '{item}' at {}", describe(level));
                    }
                    items.into_iter().filter(|i| i != item).collect()
                }
            };
            if kept.is_empty() {
                table.remove(key.as_str()).map_err(db_err)?;
            } else {
                table.insert(key.as_str(), encode(&to_rec(&kept, now))?.as_slice()).map_err(db_err)?;
            }
        }
        txn.commit().map_err(db_err)
    }

    pub(super) fn schedule_list(&self, level: &ScheduleLevel, recursive: bool) -> Result<Vec<TrashPurgeSchedule>> {
        self.check_level(level)?;
        let schedules: Vec<TrashPurgeSchedule> = self.stored_schedules()?.into_iter().map(|s| s.schedule).collect();
        Ok(schedules_listed(&schedules, level, recursive))
    }

    pub(super) fn schedule_status(&self, level: &ScheduleLevel) -> Result<Vec<ScheduledPurge>> {
        self.check_level(level)?;
        let stored = self.stored_schedules()?;
        let mut out = Vec::new();
        for location in self.scheduled_locations(&stored)? {
            if !level.matches(&location) {
                continue;
            }
            if let Some(next_run) = self.next_run_of(&stored, &location)? {
                out.push(ScheduledPurge { location, next_run });
            }
        }
        Ok(out)
    }

    pub(super) fn schedule_run_due(&self, now: Timestamp) -> Result<Vec<(PoolNs, Result<PurgeReport>)>> {
        let stored = self.stored_schedules()?;
        if stored.is_empty() {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for location in self.scheduled_locations(&stored)? {
            let Some(due) = self.next_run_of(&stored, &location)? else { continue };
            if due > now {
                continue;
            }
            // The run is recorded whatever its outcome, so a failing namespace waits for its next slot instead
            // of being retried at every tick; a crash before the record only repeats a purge, which is harmless.
            let report = self.purge_expired(&location.pool, Some(&location.namespace), now, &Progress::default());
            self.record_run(&location, now)?;
            out.push((location, report));
        }
        Ok(out)
    }

    fn record_run(&self, location: &PoolNs, now: Timestamp) -> Result<()> {
        let txn = self.write_txn()?;
        {
            let mut runs = txn.open_table(PURGE_RUNS).map_err(db_err)?;
            runs.insert((location.pool.as_str(), location.namespace.as_str()), now.secs()).map_err(db_err)?;
        }
        txn.commit().map_err(db_err)
    }
}

fn describe(level: &ScheduleLevel) -> String {
    match (&level.pool, &level.namespace) {
        (None, _) => "the global level".to_owned(),
        (Some(pool), None) => format!("pool '{pool}'"),
        (Some(pool), Some(ns)) => format!("namespace '{pool}/{ns}'"),
    }
}
