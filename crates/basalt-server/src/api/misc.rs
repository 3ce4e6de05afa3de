//! Health, tasks, pools, namespaces and configuration.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use basalt_core::config::{ConfigEntry, ConfigLevel};
use basalt_core::{ImageSpec, Namespace, PoolName, PoolNs};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Body, Ignored, parse};
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
    quota_max_bytes: u64,
    quota_max_objects: u64,
    stats: serde_json::Value,
}

pub(crate) async fn list_pools(State(state): State<AppState>, Caller(who): Caller) -> ApiResult<Json<Vec<PoolView>>> {
    who.require(POOL_READ)?;
    Ok(Json(pool_views(&state).await?))
}

/// `GET /api/pool/{pool}`: one pool as the list shows it; a missing pool is 404.
pub(crate) async fn get_pool(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(pool): Path<String>,
) -> ApiResult<Json<PoolView>> {
    who.require(POOL_READ)?;
    pool_views(&state)
        .await?
        .into_iter()
        .find(|p| p.pool_name == pool)
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("pool '{pool}' does not exist")).in_component("pool"))
}

async fn pool_views(state: &AppState) -> ApiResult<Vec<PoolView>> {
    let pools = state.call(|b| b.pool_list()).await?;
    Ok(pools
        .into_iter()
        .map(|p| PoolView {
            pool_name: p.name.to_string(),
            pool: p.id,
            application_metadata: p.applications.clone(),
            health: if p.healthy { "OK" } else { "degraded" },
            quota_max_bytes: p.quota_max_bytes,
            quota_max_objects: p.quota_max_objects,
            stats: json!({
                "image_count": p.image_count,
                "provisioned_bytes": p.provisioned_bytes,
                "used_bytes": p.used_bytes,
                "objects": p.objects,
                "quota_reached": p.quota_reached(),
            }),
        })
        .collect())
}

/// Applications as Ceph's clients send them: a list, or one comma-separated string.
#[derive(Debug, Default, Deserialize)]
#[serde(untagged)]
pub(crate) enum Applications {
    #[default]
    None,
    List(Vec<String>),
    Text(String),
}

impl Applications {
    fn names(self) -> Vec<String> {
        match self {
            Applications::None => Vec::new(),
            Applications::List(list) => list,
            Applications::Text(text) => {
                text.split(',').map(str::trim).filter(|a| !a.is_empty()).map(str::to_owned).collect()
            }
        }
    }
}

/// The fields of Ceph's pool bodies that have no meaning for basalt's pools, and why; any other unknown field is
/// refused.
const POOL_FIELDS_WITHOUT_MEANING: &[(&str, &str)] = &[
    ("pg_num", "basalt's pools have no placement groups"),
    ("pg_autoscale_mode", "basalt's pools have no placement groups"),
    ("pool_type", "basalt's pools are not replicated or erasure-coded by the engine"),
    ("size", "basalt's pools are not replicated by the engine"),
    ("min_size", "basalt's pools are not replicated by the engine"),
    ("erasure_code_profile", "basalt's pools are not erasure-coded"),
    ("rule_name", "basalt has no CRUSH rules"),
    ("crush_rule", "basalt has no CRUSH rules"),
    ("flags", "basalt's pools have no flags"),
    ("configuration", "set pool configuration through /api/block/config/pool/{pool}"),
    ("rbd_mirroring", "basalt does not mirror images"),
    ("compression_mode", "the engine does not compress"),
    ("compression_algorithm", "the engine does not compress"),
    ("compression_min_blob_size", "the engine does not compress"),
    ("compression_max_blob_size", "the engine does not compress"),
    ("compression_required_ratio", "the engine does not compress"),
];

/// Checks the fields beyond basalt's own: Ceph's are noted as ignored, others refused.
fn pool_extras(extra: &serde_json::Map<String, serde_json::Value>) -> ApiResult<Ignored> {
    let mut ignored = Ignored::default();
    for (field, value) in extra {
        match POOL_FIELDS_WITHOUT_MEANING.iter().find(|(name, _)| name == field) {
            Some((_, why)) => ignored.note(field, Some(value), why),
            None => return Err(ApiError::bad_request(format!("invalid request body: unknown field `{field}`"))),
        }
    }
    Ok(ignored)
}

#[derive(Debug, Deserialize)]
pub(crate) struct PoolBody {
    pool: String,
    #[serde(default)]
    application_metadata: Applications,
    /// As `ceph osd pool set-quota POOL max_bytes N`: 0 is none.
    quota_max_bytes: Option<u64>,
    /// As `ceph osd pool set-quota POOL max_objects N`: 0 is none.
    quota_max_objects: Option<u64>,
    /// Ceph's other pool fields (checked by [`pool_extras`]).
    #[serde(flatten)]
    extra: serde_json::Map<String, serde_json::Value>,
}

pub(crate) async fn create_pool(
    State(state): State<AppState>,
    Caller(who): Caller,
    Body(body): Body<PoolBody>,
) -> ApiResult<(axum::http::HeaderMap, StatusCode)> {
    who.require(POOL_CREATE)?;
    let ignored = pool_extras(&body.extra)?;
    let applications = body.application_metadata.names();
    let pool = parse(PoolName::new(body.pool))?;
    state
        .call(move |b| {
            b.pool_create(&pool)?;
            for app in &applications {
                b.pool_application_enable(&pool, app)?;
            }
            if body.quota_max_bytes.is_some() || body.quota_max_objects.is_some() {
                b.pool_set_quota(&pool, body.quota_max_bytes, body.quota_max_objects)?;
            }
            Ok(())
        })
        .await
        .map_err(|e| e.in_component("pool"))?;
    Ok((ignored.headers(), StatusCode::CREATED))
}

#[derive(Debug, Deserialize)]
pub(crate) struct PoolEdit {
    application_metadata: Option<Applications>,
    /// As `ceph osd pool set-quota POOL max_bytes N`: 0 removes the quota.
    quota_max_bytes: Option<u64>,
    /// As `ceph osd pool set-quota POOL max_objects N`: 0 removes the quota.
    quota_max_objects: Option<u64>,
    /// Ceph's other pool fields (checked by [`pool_extras`]).
    #[serde(flatten)]
    extra: serde_json::Map<String, serde_json::Value>,
}

pub(crate) async fn update_pool(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(pool): Path<String>,
    Body(body): Body<PoolEdit>,
) -> ApiResult<(axum::http::HeaderMap, StatusCode)> {
    who.require(POOL_UPDATE)?;
    let ignored = pool_extras(&body.extra)?;
    let wanted = body.application_metadata.map(Applications::names);
    let (max_bytes, max_objects) = (body.quota_max_bytes, body.quota_max_objects);
    let pool = parse(PoolName::new(pool))?;
    state
        .call(move |b| {
            let current = b
                .pool_list()?
                .into_iter()
                .find(|p| p.name == pool)
                .ok_or_else(|| basalt_core::Error::not_found(format!("pool '{pool}' does not exist")))?;
            if max_bytes.is_some() || max_objects.is_some() {
                b.pool_set_quota(&pool, max_bytes, max_objects)?;
            }
            let Some(wanted) = wanted else { return Ok(()) };
            for app in wanted.iter().filter(|a| !current.applications.contains(a)) {
                b.pool_application_enable(&pool, app)?;
            }
            for app in current.applications.iter().filter(|a| !wanted.contains(a)) {
                b.pool_application_disable(&pool, app)?;
            }
            Ok(())
        })
        .await
        .map_err(|e| e.in_component("pool"))?;
    Ok((ignored.headers(), StatusCode::OK))
}

pub(crate) async fn delete_pool(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(pool): Path<String>,
) -> ApiResult<StatusCode> {
    who.require(POOL_DELETE)?;
    let pool = parse(PoolName::new(pool))?;
    state.call(move |b| b.pool_remove(&pool)).await.map_err(|e| e.in_component("pool"))?;
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
