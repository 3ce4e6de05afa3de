//! `/api/block/image/trash/purge-schedule`: the trash purge schedules of `rbd trash purge schedule` (list, add,
//! remove, status). Off until someone adds one; on a cluster they are the Ceph manager's own.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use basalt_core::{
    Namespace, PoolName, ScheduleInterval, ScheduleItem, ScheduleLevel, ScheduleStartTime, TrashPurgeSchedule,
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::misc::{RBD_DELETE, RBD_READ};
use super::{Body, Params, rfc3339};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// The level named by optional `pool_name` and `namespace` (empty strings count as absent).
fn level(pool: Option<String>, namespace: Option<String>) -> ApiResult<ScheduleLevel> {
    let pool = pool.filter(|p| !p.is_empty()).map(PoolName::new).transpose().map_err(ApiError::from)?;
    let namespace = namespace.filter(|n| !n.is_empty()).map(Namespace::new).transpose().map_err(ApiError::from)?;
    if pool.is_none() && namespace.is_some() {
        return Err(ApiError::bad_request("a namespace needs a pool_name"));
    }
    ScheduleLevel::from_parts(pool, namespace).map_err(ApiError::from)
}

fn item(interval: &str, start_time: Option<&str>) -> ApiResult<ScheduleItem> {
    let interval = ScheduleInterval::parse(interval).map_err(ApiError::from)?;
    let start_time =
        start_time.filter(|s| !s.is_empty()).map(ScheduleStartTime::parse).transpose().map_err(ApiError::from)?;
    Ok(ScheduleItem { interval, start_time })
}

fn schedule_json(schedule: &TrashPurgeSchedule) -> Value {
    json!({
        "level": schedule.level.to_string(),
        "pool_name": schedule.level.pool.as_ref().map(PoolName::as_str),
        "namespace": schedule.level.namespace.as_ref().map(Namespace::as_str),
        "schedule": schedule.items.iter().map(|i| json!({
            "interval": i.interval.to_string(),
            "start_time": i.start_time.map(|s| s.to_string()),
        })).collect::<Vec<_>>(),
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    pool_name: Option<String>,
    namespace: Option<String>,
    #[serde(default)]
    recursive: bool,
}

pub(crate) async fn list(
    State(state): State<AppState>,
    Caller(who): Caller,
    Params(query): Params<ListQuery>,
) -> ApiResult<Json<Value>> {
    who.require(RBD_READ)?;
    let level = level(query.pool_name, query.namespace)?;
    let recursive = query.recursive;
    let schedules = state.call(move |b| b.trash_purge_schedule_list(&level, recursive)).await?;
    Ok(Json(json!(schedules.iter().map(schedule_json).collect::<Vec<_>>())))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StatusQuery {
    pool_name: Option<String>,
    namespace: Option<String>,
}

pub(crate) async fn status(
    State(state): State<AppState>,
    Caller(who): Caller,
    Params(query): Params<StatusQuery>,
) -> ApiResult<Json<Value>> {
    who.require(RBD_READ)?;
    let level = level(query.pool_name, query.namespace)?;
    let scheduled = state.call(move |b| b.trash_purge_schedule_status(&level)).await?;
    Ok(Json(json!(
        scheduled
            .iter()
            .map(|s| json!({
                "pool_name": s.location.pool.as_str(),
                "namespace": s.location.namespace.as_str(),
                "schedule_time": rfc3339(s.next_run.secs()),
            }))
            .collect::<Vec<_>>()
    )))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AddBody {
    pool_name: Option<String>,
    namespace: Option<String>,
    interval: String,
    start_time: Option<String>,
}

pub(crate) async fn add(
    State(state): State<AppState>,
    Caller(who): Caller,
    Body(body): Body<AddBody>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    who.require(RBD_DELETE)?;
    let level = level(body.pool_name, body.namespace)?;
    let item = item(&body.interval, body.start_time.as_deref())?;
    let listed = state
        .call(move |b| {
            b.trash_purge_schedule_add(&level, &item)?;
            b.trash_purge_schedule_list(&level, false)
        })
        .await?;
    let schedule = listed.first().map(schedule_json).unwrap_or(Value::Null);
    Ok((StatusCode::CREATED, Json(schedule)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RemoveQuery {
    pool_name: Option<String>,
    namespace: Option<String>,
    interval: Option<String>,
    start_time: Option<String>,
}

pub(crate) async fn remove(
    State(state): State<AppState>,
    Caller(who): Caller,
    Params(query): Params<RemoveQuery>,
) -> ApiResult<StatusCode> {
    who.require(RBD_DELETE)?;
    let level = level(query.pool_name, query.namespace)?;
    let item = match query.interval.filter(|i| !i.is_empty()) {
        Some(interval) => Some(item(&interval, query.start_time.as_deref())?),
        None if query.start_time.is_some_and(|s| !s.is_empty()) => {
            return Err(ApiError::bad_request("a start_time needs an interval"));
        }
        None => None,
    };
    state.call(move |b| b.trash_purge_schedule_remove(&level, item.as_ref())).await?;
    Ok(StatusCode::NO_CONTENT)
}
