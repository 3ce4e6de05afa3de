//! Health, tasks, pools, namespaces and configuration.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use basalt_core::config::{ConfigEntry, ConfigLevel};
use basalt_core::{ImageSpec, Namespace, PoolName, PoolNs};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Body, parse};
use crate::auth::{Caller, Need};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

pub(crate) const RBD_READ: Need = Need { scope: "rbd-image", permission: "read" };
pub(crate) const RBD_CREATE: Need = Need { scope: "rbd-image", permission: "create" };
pub(crate) const RBD_UPDATE: Need = Need { scope: "rbd-image", permission: "update" };
pub(crate) const RBD_DELETE: Need = Need { scope: "rbd-image", permission: "delete" };
const POOL_READ: Need = Need { scope: "pool", permission: "read" };
const POOL_CREATE: Need = Need { scope: "pool", permission: "create" };
const POOL_UPDATE: Need = Need { scope: "pool", permission: "update" };
const POOL_DELETE: Need = Need { scope: "pool", permission: "delete" };
const CONFIG_READ: Need = Need { scope: "config-opt", permission: "read" };
const CONFIG_UPDATE: Need = Need { scope: "config-opt", permission: "update" };

pub(crate) async fn health() -> Json<serde_json::Value> {
    Json(json!({"status": "OK"}))
}

pub(crate) async fn tasks(State(state): State<AppState>, Caller(_who): Caller) -> Json<serde_json::Value> {
    let (running, finished) = state.tasks.list();
    let view = |t: crate::tasks::TaskInfo| {
        json!({
            "id": t.id,
            "name": t.name,
            "metadata": t.metadata,
            "begin_time": super::rfc3339(t.begin_time),
            "end_time": t.end_time.map(super::rfc3339),
            "progress": t.progress,
            "success": t.success,
            "exception": t.exception,
            "ret_value": t.ret_value,
        })
    };
    Json(json!({
        "executing_tasks": running.into_iter().map(view).collect::<Vec<_>>(),
        "finished_tasks": finished.into_iter().map(view).collect::<Vec<_>>(),
    }))
}

#[derive(Debug, Serialize)]
pub(crate) struct PoolView {
    pool_name: String,
    pool: u64,
    application_metadata: Vec<String>,
    health: &'static str,
    stats: serde_json::Value,
}

pub(crate) async fn list_pools(State(state): State<AppState>, Caller(who): Caller) -> ApiResult<Json<Vec<PoolView>>> {
    who.require(POOL_READ)?;
    let pools = state.call(|b| b.pool_list()).await?;
    Ok(Json(
        pools
            .into_iter()
            .map(|p| PoolView {
                pool_name: p.name.to_string(),
                pool: p.id,
                application_metadata: p.applications,
                health: if p.healthy { "OK" } else { "degraded" },
                stats: json!({
                    "image_count": p.image_count,
                    "provisioned_bytes": p.provisioned_bytes,
                    "used_bytes": p.used_bytes,
                }),
            })
            .collect(),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PoolBody {
    pool: String,
    #[serde(default)]
    application_metadata: Vec<String>,
}

pub(crate) async fn create_pool(
    State(state): State<AppState>,
    Caller(who): Caller,
    Body(body): Body<PoolBody>,
) -> ApiResult<StatusCode> {
    who.require(POOL_CREATE)?;
    let pool = parse(PoolName::new(body.pool))?;
    state
        .call(move |b| {
            b.pool_create(&pool)?;
            for app in &body.application_metadata {
                b.pool_application_enable(&pool, app)?;
            }
            Ok(())
        })
        .await?;
    Ok(StatusCode::CREATED)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PoolEdit {
    application_metadata: Vec<String>,
}

pub(crate) async fn update_pool(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(pool): Path<String>,
    Body(body): Body<PoolEdit>,
) -> ApiResult<StatusCode> {
    who.require(POOL_UPDATE)?;
    let pool = parse(PoolName::new(pool))?;
    state
        .call(move |b| {
            let current = b
                .pool_list()?
                .into_iter()
                .find(|p| p.name == pool)
                .ok_or_else(|| basalt_core::Error::not_found(format!("pool '{pool}' does not exist")))?;
            for app in body.application_metadata.iter().filter(|a| !current.applications.contains(a)) {
                b.pool_application_enable(&pool, app)?;
            }
            for app in current.applications.iter().filter(|a| !body.application_metadata.contains(a)) {
                b.pool_application_disable(&pool, app)?;
            }
            Ok(())
        })
        .await?;
    Ok(StatusCode::OK)
}

pub(crate) async fn delete_pool(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(pool): Path<String>,
) -> ApiResult<StatusCode> {
    who.require(POOL_DELETE)?;
    let pool = parse(PoolName::new(pool))?;
    state.call(move |b| b.pool_remove(&pool)).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) async fn list_namespaces(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(pool): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    who.require(RBD_READ)?;
    let pool = parse(PoolName::new(pool))?;
    let list = state.call(move |b| b.namespace_list(&pool)).await?;
    Ok(Json(json!(
        list.into_iter()
            .map(|n| json!({"namespace": n.name.as_str(), "num_images": n.image_count}))
            .collect::<Vec<_>>()
    )))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NamespaceBody {
    namespace: String,
}

pub(crate) async fn create_namespace(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(pool): Path<String>,
    Body(body): Body<NamespaceBody>,
) -> ApiResult<StatusCode> {
    who.require(RBD_CREATE)?;
    let location = PoolNs::new(parse(PoolName::new(pool))?, parse(Namespace::new(body.namespace))?);
    state.call(move |b| b.namespace_create(&location)).await?;
    Ok(StatusCode::CREATED)
}

pub(crate) async fn delete_namespace(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path((pool, namespace)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    who.require(RBD_DELETE)?;
    let location = PoolNs::new(parse(PoolName::new(pool))?, parse(Namespace::new(namespace))?);
    state.call(move |b| b.namespace_remove(&location)).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConfigBody {
    name: String,
    value: Option<serde_json::Value>,
}

fn config_view(entries: Vec<ConfigEntry>) -> Json<serde_json::Value> {
    Json(json!(
        entries
            .into_iter()
            .map(|e| json!({"name": e.name, "value": e.value, "source": e.source.as_str()}))
            .collect::<Vec<_>>()
    ))
}

async fn list_config(state: AppState, level: ConfigLevel) -> ApiResult<Json<serde_json::Value>> {
    Ok(config_view(state.call(move |b| b.config_list(&level)).await?))
}

async fn set_config(state: AppState, level: ConfigLevel, body: ConfigBody) -> ApiResult<Json<serde_json::Value>> {
    let value = match body.value {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => Some(s),
        Some(serde_json::Value::Number(n)) => Some(n.to_string()),
        Some(serde_json::Value::Bool(b)) => Some(b.to_string()),
        Some(other) => return Err(ApiError::bad_request(format!("invalid value {other} for {}", body.name))),
    };
    let name = body.name;
    let listed = level.clone();
    state
        .call(move |b| match value {
            Some(v) => b.config_set(&level, &name, &v),
            None => match b.config_remove(&level, &name) {
                Err(e)
                    if e.kind() == basalt_core::ErrorKind::NotFound && basalt_core::config::option(&name).is_ok() =>
                {
                    Ok(())
                }
                other => other,
            },
        })
        .await?;
    list_config(state, listed).await
}

pub(crate) async fn config_global(
    State(state): State<AppState>,
    Caller(who): Caller,
) -> ApiResult<Json<serde_json::Value>> {
    who.require(CONFIG_READ)?;
    list_config(state, ConfigLevel::Global).await
}

pub(crate) async fn set_config_global(
    State(state): State<AppState>,
    Caller(who): Caller,
    Body(body): Body<ConfigBody>,
) -> ApiResult<Json<serde_json::Value>> {
    who.require(CONFIG_UPDATE)?;
    set_config(state, ConfigLevel::Global, body).await
}

pub(crate) async fn config_pool(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(pool): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    who.require(CONFIG_READ)?;
    list_config(state, ConfigLevel::Pool(parse(PoolName::new(pool))?)).await
}

pub(crate) async fn set_config_pool(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(pool): Path<String>,
    Body(body): Body<ConfigBody>,
) -> ApiResult<Json<serde_json::Value>> {
    who.require(CONFIG_UPDATE)?;
    set_config(state, ConfigLevel::Pool(parse(PoolName::new(pool))?), body).await
}

pub(crate) async fn config_image(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(spec): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    who.require(RBD_READ)?;
    list_config(state, ConfigLevel::Image(parse(ImageSpec::parse(&spec))?)).await
}

pub(crate) async fn set_config_image(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(spec): Path<String>,
    Body(body): Body<ConfigBody>,
) -> ApiResult<Json<serde_json::Value>> {
    who.require(RBD_UPDATE)?;
    set_config(state, ConfigLevel::Image(parse(ImageSpec::parse(&spec))?), body).await
}
