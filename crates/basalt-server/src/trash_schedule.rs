//! Runs the trash purge schedules that operators added (`rbd trash purge schedule add`), for backends whose host
//! runs them (the embedded engine). Without a schedule nothing is ever purged; a cluster's manager runs its own
//! schedules, so over Ceph each tick is a no-op.

use std::sync::Arc;
use std::time::Duration;

use basalt_core::{Backend, Clock, SystemClock};

/// How often due schedules are looked for (schedules are to the minute). `BASALT_TRASH_SCHEDULE_TICK_MS` shortens it
/// for tests.
fn tick() -> Duration {
    std::env::var("BASALT_TRASH_SCHEDULE_TICK_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|ms| *ms > 0)
        .map_or(Duration::from_secs(20), Duration::from_millis)
}

/// Checks for due schedules at every tick until `stop` changes.
pub(crate) async fn run(backend: Arc<dyn Backend>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(tick());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let backend = backend.clone();
        let result = tokio::task::spawn_blocking(move || backend.trash_purge_schedule_run_due(SystemClock.now())).await;
        match result {
            Ok(Ok(runs)) => {
                for (location, report) in runs {
                    match report {
                        Ok(report) => tracing::info!(
                            location = %location,
                            removed = ?report.removed,
                            skipped = report.skipped.len(),
                            "scheduled trash purge"
                        ),
                        Err(err) => tracing::warn!(location = %location, error = %err, "scheduled trash purge failed"),
                    }
                }
            }
            Ok(Err(err)) => tracing::warn!(error = %err, "running the trash purge schedules failed"),
            Err(err) => tracing::warn!(error = %err, "the trash purge schedule job failed"),
        }
    }
}
