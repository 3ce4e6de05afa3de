//! `/api/block/image/trash`: list, restore, remove and purge.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use basalt_core::{ImageName, Namespace, PoolName, PoolNs, Progress, Timestamp, TrashForce};
use serde::Deserialize;
use serde_json::{Value, json};

use super::misc::{RBD_CREATE, RBD_DELETE, RBD_READ};
use super::{OptionalBody, Params, parse, rfc3339, run_task};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// Splits `pool[/namespace]/image_id`.
fn id_spec(spec: &str) -> ApiResult<(PoolNs, String)> {
    let (location, id) = spec
        .rsplit_once('/')
        .ok_or_else(|| ApiError::bad_request(format!("invalid trash spec '{spec}': use pool[/namespace]/image_id")))?;
    if id.is_empty() {
        return Err(ApiError::bad_request(format!("invalid trash spec '{spec}': the image id is missing")));
    }
    Ok((parse(PoolNs::parse(location))?, id.to_owned()))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    pool_name: Option<String>,
    namespace: Option<String>,
}

pub(crate) async fn list(
    State(state): State<AppState>,
    Caller(who): Caller,
    Params(query): Params<ListQuery>,
) -> ApiResult<Json<Value>> {
    who.require(RBD_READ)?;
    let pool = query.pool_name.filter(|p| !p.is_empty()).map(PoolName::new).transpose().map_err(ApiError::from)?;
    let namespace = query.namespace.as_deref().map(Namespace::parse).transpose().map_err(ApiError::from)?;
    let groups = state
        .call(move |b| {
            let pools: Vec<PoolName> = match pool {
                Some(p) => vec![p],
                None => b
                    .pool_list()?
                    .into_iter()
                    .filter(|p| p.applications.iter().any(|a| a == "rbd"))
                    .map(|p| p.name)
                    .collect(),
            };
            let mut groups = Vec::new();
            for pool in pools {
                let namespaces: Vec<Namespace> = match &namespace {
                    Some(ns) => vec![ns.clone()],
                    None => std::iter::once(Namespace::default_ns())
                        .chain(b.namespace_list(&pool)?.into_iter().map(|n| n.name))
                        .collect(),
                };
                let mut entries = Vec::new();
                for ns in namespaces {
                    entries.extend(b.trash_list(&PoolNs::new(pool.clone(), ns))?);
                }
                groups.push((pool, entries));
            }
            Ok(groups)
        })
        .await?;
    Ok(Json(json!(
        groups
            .into_iter()
            .map(|(pool, entries)| json!({
                "pool_name": pool.as_str(),
                "status": 0,
                "value": entries.iter().map(|e| json!({
                    "id": e.id,
                    "name": e.name.as_str(),
                    "pool_name": e.pool.as_str(),
                    "namespace": e.namespace.as_str(),
                    "source": e.source.as_str(),
                    "status": e.status.as_str(),
                    "deletion_time": rfc3339(e.deletion_time.secs()),
                    "deferment_end_time": rfc3339(e.deferment_end_time.secs()),
                })).collect::<Vec<_>>(),
            }))
            .collect::<Vec<_>>()
    )))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RestoreBody {
    new_image_name: Option<String>,
}

pub(crate) async fn restore(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(spec): Path<String>,
    OptionalBody(body): OptionalBody<RestoreBody>,
) -> ApiResult<StatusCode> {
    let meta = json!({"image_id_spec": spec});
    // The reference checks create here.
    who.require(RBD_CREATE)?;
    let (location, id) = id_spec(&spec)?;
    let name = body
        .and_then(|b| b.new_image_name)
        .filter(|n| !n.is_empty())
        .map(ImageName::new)
        .transpose()
        .map_err(ApiError::from)?;
    state
        .call(move |b| b.trash_restore(&location, &id, name.as_ref()))
        .await
        .map_err(|e| e.in_task("rbd/trash/restore", &meta))?;
    Ok(StatusCode::CREATED)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RemoveQuery {
    #[serde(default, deserialize_with = "super::compat::flexible_bool")]
    force: bool,
}

pub(crate) async fn remove(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(spec): Path<String>,
    Params(query): Params<RemoveQuery>,
) -> ApiResult<Response> {
    who.require(RBD_DELETE)?;
    let (location, id) = id_spec(&spec)?;
    let force = if query.force { TrashForce::Force } else { TrashForce::RespectDeferment };
    let meta = json!({"image_id_spec": spec});
    Ok(run_task(&state, "rbd/trash/remove", meta, StatusCode::NO_CONTENT, move |b, progress: &Progress| {
        b.trash_remove(&location, &id, force, progress)?;
        Ok(Value::Null)
    })
    .await)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PurgeQuery {
    pool_name: Option<String>,
}

pub(crate) async fn purge(
    State(state): State<AppState>,
    Caller(who): Caller,
    Params(query): Params<PurgeQuery>,
) -> ApiResult<Response> {
    who.require(RBD_DELETE)?;
    let pool = query.pool_name.filter(|p| !p.is_empty()).map(PoolName::new).transpose().map_err(ApiError::from)?;
    let meta = json!({"pool_name": pool.as_ref().map(|p| p.as_str())});
    Ok(run_task(&state, "rbd/trash/purge", meta, StatusCode::CREATED, move |b, progress: &Progress| {
        let pools: Vec<PoolName> = match pool {
            Some(p) => vec![p],
            None => b.pool_list()?.into_iter().map(|p| p.name).collect(),
        };
        let now = basalt_core::Clock::now(&basalt_core::SystemClock);
        let (mut removed, mut skipped) = (Vec::new(), Vec::new());
        for pool in pools {
            let report = b.trash_purge(&pool, Timestamp(now.secs()), progress)?;
            removed.extend(report.removed);
            skipped.extend(
                report.skipped.into_iter().map(
                    |(id, err)| json!({"id": id, "detail": err.message(), "code": err.kind().errno().to_string()}),
                ),
            );
        }
        Ok(json!({"removed": removed, "skipped": skipped}))
    })
    .await)
}
