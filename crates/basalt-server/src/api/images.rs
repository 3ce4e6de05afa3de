//! `/api/block/image`: list, get, create, edit, delete, copy, flatten, move to trash, du and diff.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use basalt_core::config::ConfigLevel;
use basalt_core::{
    Backend, CopyRequest, CreateOptions, DiffGranularity, Features, ImageInfo, ImageName, ImageSpec, Namespace,
    ObjectOrder, PoolName, PoolNs, Progress, ResizePolicy, SnapName, Timestamp,
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::compat::{Flavour, Version};
use super::misc::{RBD_CREATE, RBD_DELETE, RBD_READ, RBD_UPDATE};
use super::{Body, Ignored, OptionalBody, Params, parse, rfc3339, run_exclusive_task, run_task};
use crate::auth::Caller;
use crate::background::Meter;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::status::{Status, StatusCtx};

/// Everything the dashboard shows of an image, as one JSON object; an image that is listed but cannot be read is
/// shown degraded, with its name and why, rather than failing the call (or vanishing from a list).
pub(crate) fn image_object(backend: &dyn Backend, spec: &ImageSpec, ctx: &StatusCtx) -> basalt_core::Result<Value> {
    match readable_image_object(backend, spec, ctx) {
        Ok(value) => Ok(value),
        Err(err) => {
            let listed = backend
                .image_list(&PoolNs::new(spec.pool().clone(), spec.namespace().clone()))
                .ok()
                .and_then(|list| list.into_iter().find(|e| e.name == spec.image));
            match listed {
                Some(entry) => Ok(unreadable_json(spec, &entry.id, &ctx.unreadable(spec, &err))),
                None => Err(err),
            }
        }
    }
}

/// The little that is known of an image whose information cannot be read.
fn unreadable_json(spec: &ImageSpec, id: &str, status: &Status) -> Value {
    json!({
        "id": id,
        "name": spec.image.as_str(),
        "pool_name": spec.pool().as_str(),
        "namespace": if spec.namespace().is_default() { Value::Null } else { json!(spec.namespace().as_str()) },
        "unique_id": format!("{}/{id}", PoolNs::new(spec.pool().clone(), spec.namespace().clone())),
        "size": null, "obj_size": null, "num_objs": null, "order": null, "block_name_prefix": null,
        "features": null, "features_name": [], "stripe_unit": null, "stripe_count": null, "data_pool": null,
        "image_format": 2, "parent": null, "timestamp": null, "modify_timestamp": null,
        "status": status.status.as_str(), "status_detail": status.detail,
        "snapshot_count": null, "snap_limit": null, "disk_usage": null, "total_disk_usage": null,
        "snapshots": [], "configuration": [], "metadata": {}, "watchers": [],
    })
}

fn readable_image_object(backend: &dyn Backend, spec: &ImageSpec, ctx: &StatusCtx) -> basalt_core::Result<Value> {
    let info = backend.image_info(spec)?;
    let status = ctx.of(backend, spec, &info);
    let snaps = backend.snap_list(spec)?;
    let config = backend.config_list(&ConfigLevel::Image(spec.clone()))?;
    let metadata = backend.image_metadata_list(spec)?;
    let fast_diff = info.features.contains(Features::FAST_DIFF);
    let du = if fast_diff { Some(backend.du(spec)?) } else { None };
    let mut snapshots = Vec::new();
    for snap in &snaps {
        let snap_spec = basalt_core::SnapSpec { image: spec.clone(), snap: snap.name.clone() };
        let children = if snap.children > 0 { backend.snap_children(&snap_spec)? } else { Vec::new() };
        let used =
            du.as_ref().and_then(|d| d.iter().find(|e| e.snap.as_ref() == Some(&snap.name))).map(|e| e.used_bytes);
        snapshots.push(json!({
            "id": snap.id.0,
            "name": snap.name.as_str(),
            "size": snap.size_bytes,
            "timestamp": rfc3339(snap.timestamp.secs()),
            "is_protected": snap.protected,
            "children": children.iter().map(|c| json!({
                "pool_name": c.pool.as_str(), "namespace": c.namespace.as_str(), "image_name": c.image.as_str(),
            })).collect::<Vec<_>>(),
            "used_bytes": used,
        }));
    }
    let disk_usage = du.as_ref().and_then(|d| d.last()).map(|e| e.used_bytes);
    let total_disk_usage = du.as_ref().map(|d| d.iter().map(|e| e.used_bytes).sum::<u64>());
    Ok(info_json(&info, &status, disk_usage, total_disk_usage, snapshots, config, metadata))
}

fn info_json(
    info: &ImageInfo,
    status: &Status,
    disk_usage: Option<u64>,
    total_disk_usage: Option<u64>,
    snapshots: Vec<Value>,
    config: Vec<basalt_core::config::ConfigEntry>,
    metadata: Vec<(String, String)>,
) -> Value {
    let location =
        if info.namespace.is_default() { info.pool.to_string() } else { format!("{}/{}", info.pool, info.namespace) };
    json!({
        "id": info.id,
        "name": info.name.as_str(),
        "pool_name": info.pool.as_str(),
        "namespace": if info.namespace.is_default() { Value::Null } else { json!(info.namespace.as_str()) },
        "unique_id": format!("{location}/{}", info.id),
        "size": info.size_bytes,
        "obj_size": info.order.object_size_bytes(),
        "num_objs": info.num_objs,
        "order": info.order.get(),
        "block_name_prefix": info.block_name_prefix,
        "features": info.features.bits(),
        "features_name": info.features.names(),
        "stripe_unit": info.striping.unit_bytes,
        "stripe_count": info.striping.count,
        "data_pool": info.data_pool.as_ref().map(|p| p.as_str()),
        "image_format": 2,
        "parent": info.parent.as_ref().map(|p| json!({
            "pool_name": p.pool.as_str(),
            "pool_namespace": p.namespace.as_str(),
            "image_name": p.image.as_str(),
            "image_id": p.image_id,
            "snap_name": p.snap.as_str(),
            "overlap": p.overlap_bytes,
            "in_trash": p.in_trash,
        })),
        "timestamp": rfc3339(info.created.secs()),
        "modify_timestamp": rfc3339(info.modified.secs()),
        "status": status.status.as_str(),
        "status_detail": status.detail,
        "snapshot_count": info.snapshot_count,
        "snap_limit": info.snap_limit,
        "disk_usage": disk_usage,
        "total_disk_usage": total_disk_usage,
        "snapshots": snapshots,
        "configuration": config.iter().map(|c| json!({
            "name": c.name, "value": c.value, "source": c.source.code(),
        })).collect::<Vec<_>>(),
        "metadata": metadata.into_iter().map(|(k, v)| (k, Value::String(v))).collect::<serde_json::Map<String, Value>>(),
        "watchers": info.watchers.iter().map(|w| json!({
            "client": w.client, "since": rfc3339(w.since.secs()), "writable": w.writable,
        })).collect::<Vec<_>>(),
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    pool_name: Option<String>,
    namespace: Option<String>,
    #[serde(default)]
    offset: u64,
    limit: Option<i64>,
    search: Option<String>,
    sort: Option<String>,
}

pub(crate) async fn list(
    State(state): State<AppState>,
    Caller(who): Caller,
    flavour: Option<axum::Extension<Flavour>>,
    Params(mut query): Params<ListQuery>,
) -> ApiResult<Response> {
    who.require(RBD_READ)?;
    let flavour = flavour.map_or(Flavour::Basalt { explicit: false }, |f| f.0);
    match flavour {
        // Ceph's paged list (Quincy on) shows 5 images unless asked for more.
        Flavour::Ceph(Version(2, _)) => query.limit = query.limit.or(Some(5)),
        // Pacific's list has no pages: every image of every pool.
        Flavour::Ceph(_) => (query.offset, query.limit) = (0, None),
        Flavour::Basalt { .. } => {}
    }
    let wanted_pool = query.pool_name.clone().filter(|p| !p.is_empty());
    query.pool_name = wanted_pool;
    let pool = query.pool_name.map(PoolName::new).transpose().map_err(ApiError::from)?;
    let listed_pools = state
        .call({
            let pool = pool.clone();
            move |b| match pool {
                Some(p) => Ok(vec![p]),
                None => Ok(b
                    .pool_list()?
                    .into_iter()
                    .filter(|p| p.applications.iter().any(|a| a == "rbd"))
                    .map(|p| p.name)
                    .collect::<Vec<_>>()),
            }
        })
        .await?;
    let namespace = query.namespace.as_deref().map(Namespace::parse).transpose().map_err(ApiError::from)?;
    let pools = listed_pools.clone();
    let ctx = state.status_ctx();
    let (total, page) = state
        .call(move |b| {
            // Collect names first (cheap), filter and sort, then build full objects for one page only.
            let mut specs: Vec<ImageSpec> = Vec::new();
            for pool in pools {
                let namespaces: Vec<Namespace> = match &namespace {
                    Some(ns) => vec![ns.clone()],
                    None => std::iter::once(Namespace::default_ns())
                        .chain(b.namespace_list(&pool)?.into_iter().map(|n| n.name))
                        .collect(),
                };
                for ns in namespaces {
                    let location = PoolNs::new(pool.clone(), ns.clone());
                    for entry in b.image_list(&location)? {
                        specs.push(ImageSpec::new(pool.clone(), ns.clone(), entry.name));
                    }
                }
            }
            if let Some(search) = query.search.as_deref().filter(|s| !s.is_empty()) {
                specs.retain(|s| {
                    s.image.as_str().contains(search)
                        || s.pool().as_str().contains(search)
                        || s.namespace().as_str().contains(search)
                });
            }
            let sort = query.sort.as_deref().unwrap_or("+name");
            let (descending, key) = match sort.strip_prefix('-') {
                Some(k) => (true, k),
                // An unencoded `+name` arrives as ` name`: URL decoding makes `+` a space.
                None => (false, sort.strip_prefix(['+', ' ']).unwrap_or(sort)),
            };
            match key {
                "name" => specs.sort_by(|a, b| a.image.cmp(&b.image).then(a.cmp(b))),
                "pool_name" | "pool" => specs.sort(),
                "namespace" => specs.sort_by(|a, b| a.namespace().cmp(b.namespace()).then(a.cmp(b))),
                "size" => {
                    let mut sized: Vec<(u64, ImageSpec)> = specs
                        .into_iter()
                        .map(|s| Ok((b.image_info(&s)?.size_bytes, s)))
                        .collect::<basalt_core::Result<_>>()?;
                    sized.sort();
                    specs = sized.into_iter().map(|(_, s)| s).collect();
                }
                other => {
                    return Err(basalt_core::Error::invalid(format!(
                        "cannot sort by '{other}': use name, pool_name, namespace or size, with + or -"
                    )));
                }
            }
            if descending {
                specs.reverse();
            }
            let total = specs.len();
            let offset = usize::try_from(query.offset).unwrap_or(usize::MAX).min(total);
            let limit = match query.limit {
                None | Some(-1) => total,
                Some(n) if n >= 0 => usize::try_from(n).unwrap_or(usize::MAX),
                Some(n) => return Err(basalt_core::Error::invalid(format!("invalid limit {n}: use -1 for all"))),
            };
            let mut page = Vec::new();
            for spec in specs.iter().skip(offset).take(limit) {
                match image_object(b, spec, &ctx) {
                    Ok(obj) => page.push(obj),
                    // Removed between listing and reading: leave it out.
                    Err(e) if e.kind() == basalt_core::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
            Ok((total, page))
        })
        .await?;
    let mut headers = HeaderMap::new();
    headers.insert("X-Total-Count", HeaderValue::from(total as u64));
    let Flavour::Ceph(version) = flavour else {
        return Ok((headers, Json(page)).into_response());
    };
    // Ceph's shape: one entry per pool, `{pool_name, value: [images]}`; Pacific's (1.0) lists every pool with a
    // `status` (0: the value is current), the paged one (2.0) only the pools of the page's images.
    let mut groups: Vec<(String, Vec<Value>)> = Vec::new();
    if version.0 == 1 {
        groups.extend(listed_pools.iter().map(|p| (p.to_string(), Vec::new())));
    }
    for image in page {
        let pool = image["pool_name"].as_str().unwrap_or_default().to_owned();
        match groups.iter_mut().find(|(p, _)| *p == pool) {
            Some((_, images)) => images.push(image),
            None => groups.push((pool, vec![image])),
        }
    }
    let groups: Vec<Value> = groups
        .into_iter()
        .map(|(pool, images)| {
            if version.0 == 1 {
                json!({"status": 0, "value": images, "pool_name": pool})
            } else {
                json!({"value": images, "pool_name": pool})
            }
        })
        .collect();
    Ok((headers, Json(Value::Array(groups))).into_response())
}

/// `GET /api/block/image/default_features`: the features an image gets when none are asked for, by name, sorted.
pub(crate) async fn default_features(Caller(who): Caller) -> ApiResult<Json<Value>> {
    who.require(RBD_READ)?;
    let mut names = Features::DEFAULT.names();
    names.sort();
    Ok(Json(json!(names)))
}

/// `GET /api/block/image/clone_format_version`: 1, since a clone needs its parent snapshot protected (Ceph's clone
/// format 2 does not).
pub(crate) async fn clone_format_version(Caller(who): Caller) -> ApiResult<Json<Value>> {
    who.require(RBD_READ)?;
    Ok(Json(json!(1)))
}

pub(crate) async fn get_one(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(spec): Path<String>,
) -> ApiResult<Json<Value>> {
    who.require(RBD_READ)?;
    let spec = parse(ImageSpec::parse(&spec))?;
    // Ceph answers a missing image here with 404 (its other refusals are 400).
    let ctx = state.status_ctx();
    Ok(Json(state.call(move |b| image_object(b, &spec, &ctx)).await.map_err(ApiError::missing_is_404)?))
}

pub(crate) fn features_of(names: Option<Vec<String>>) -> ApiResult<Option<Features>> {
    names.map(|n| Features::from_names(&n)).transpose().map_err(ApiError::from)
}

pub(crate) fn order_of(obj_size: Option<u64>) -> ApiResult<Option<ObjectOrder>> {
    obj_size.map(ObjectOrder::from_object_size).transpose().map_err(ApiError::from)
}

pub(crate) fn striping_of(unit: Option<u64>, count: Option<u64>) -> ApiResult<Option<(u64, u64)>> {
    match (unit, count) {
        (None, None) => Ok(None),
        (Some(u), Some(c)) => Ok(Some((u, c))),
        (Some(u), None) => Ok(Some((u, 1))),
        (None, Some(_)) => Err(ApiError::bad_request("stripe_count needs stripe_unit too")),
    }
}

pub(crate) fn location(pool: &str, namespace: Option<&str>) -> ApiResult<(PoolName, Namespace)> {
    Ok((parse(PoolName::new(pool))?, parse(Namespace::parse(namespace.unwrap_or("")))?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateBody {
    name: String,
    pool_name: String,
    namespace: Option<String>,
    size: u64,
    obj_size: Option<u64>,
    features: Option<Vec<String>>,
    #[serde(default, deserialize_with = "super::number_or_text")]
    stripe_unit: Option<u64>,
    #[serde(default, deserialize_with = "super::number_or_text")]
    stripe_count: Option<u64>,
    data_pool: Option<String>,
    configuration: Option<std::collections::BTreeMap<String, Value>>,
    metadata: Option<std::collections::BTreeMap<String, Value>>,
    // Ceph's mirroring fields: no mirroring here.
    mirror_mode: Option<Value>,
    schedule_interval: Option<Value>,
}

const NO_MIRRORING: &str = "basalt does not mirror images";

/// Image metadata as Ceph's clients send it: string values set, null values removed.
fn metadata_of(
    metadata: Option<std::collections::BTreeMap<String, Value>>,
) -> ApiResult<Vec<(String, Option<String>)>> {
    let mut out = Vec::new();
    for (key, value) in metadata.unwrap_or_default() {
        out.push((key.clone(), config_value(&key, &value)?));
    }
    Ok(out)
}

fn apply_metadata(b: &dyn Backend, spec: &ImageSpec, metadata: &[(String, Option<String>)]) -> basalt_core::Result<()> {
    for (key, value) in metadata {
        match value {
            Some(v) => b.image_metadata_set(spec, key, v)?,
            None => match b.image_metadata_remove(spec, key) {
                Err(e) if e.kind() == basalt_core::ErrorKind::NotFound => {}
                other => other?,
            },
        }
    }
    Ok(())
}

fn config_value(name: &str, value: &Value) -> ApiResult<Option<String>> {
    match value {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        Value::Number(n) => Ok(Some(n.to_string())),
        Value::Bool(b) => Ok(Some(b.to_string())),
        other => Err(ApiError::bad_request(format!("invalid value {other} for {name}"))),
    }
}

pub(crate) async fn create(
    State(state): State<AppState>,
    Caller(who): Caller,
    Body(body): Body<CreateBody>,
) -> ApiResult<Response> {
    who.require(RBD_CREATE)?;
    let mut ignored = Ignored::default();
    ignored.note("mirror_mode", body.mirror_mode.as_ref(), NO_MIRRORING);
    ignored.note("schedule_interval", body.schedule_interval.as_ref(), NO_MIRRORING);
    let metadata = metadata_of(body.metadata)?;
    let (pool, namespace) = location(&body.pool_name, body.namespace.as_deref())?;
    let spec = ImageSpec::new(pool, namespace, parse(ImageName::new(body.name))?);
    let options = CreateOptions {
        size_bytes: body.size,
        order: order_of(body.obj_size)?,
        features: features_of(body.features)?,
        striping: striping_of(body.stripe_unit, body.stripe_count)?,
        data_pool: body.data_pool.map(PoolName::new).transpose().map_err(ApiError::from)?,
    };
    let mut config = Vec::new();
    for (name, value) in body.configuration.unwrap_or_default() {
        if let Some(v) = config_value(&name, &value)? {
            let opt = parse(basalt_core::config::option(&name))?;
            parse(basalt_core::config::normalize_value(opt, &v))?;
            config.push((name, v));
        }
    }
    state
        .call(move |b| {
            b.image_create(&spec, &options)?;
            for (name, value) in &config {
                b.config_set(&ConfigLevel::Image(spec.clone()), name, value)?;
            }
            apply_metadata(b, &spec, &metadata)
        })
        .await?;
    Ok((ignored.headers(), StatusCode::CREATED).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EditBody {
    name: Option<String>,
    size: Option<u64>,
    #[serde(default)]
    allow_shrink: bool,
    features: Option<Vec<String>>,
    configuration: Option<std::collections::BTreeMap<String, Value>>,
    metadata: Option<std::collections::BTreeMap<String, Value>>,
    // Ceph's mirroring fields: no mirroring here.
    enable_mirror: Option<Value>,
    primary: Option<Value>,
    resync: Option<Value>,
    mirror_mode: Option<Value>,
    image_mirror_mode: Option<Value>,
    schedule_interval: Option<Value>,
    remove_scheduling: Option<Value>,
    /// Ceph's "force" of a mirroring promotion.
    force: Option<Value>,
}

pub(crate) async fn edit(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(spec): Path<String>,
    Body(body): Body<EditBody>,
) -> ApiResult<Response> {
    who.require(RBD_UPDATE)?;
    let mut ignored = Ignored::default();
    for (field, value) in [
        ("enable_mirror", &body.enable_mirror),
        ("primary", &body.primary),
        ("resync", &body.resync),
        ("mirror_mode", &body.mirror_mode),
        ("image_mirror_mode", &body.image_mirror_mode),
        ("schedule_interval", &body.schedule_interval),
        ("remove_scheduling", &body.remove_scheduling),
        ("force", &body.force),
    ] {
        ignored.note(field, value.as_ref(), NO_MIRRORING);
    }
    let metadata = metadata_of(body.metadata)?;
    let mut spec = parse(ImageSpec::parse(&spec))?;
    let new_name = body.name.map(ImageName::new).transpose().map_err(ApiError::from)?;
    let wanted = features_of(body.features)?;
    let mut config = Vec::new();
    for (name, value) in body.configuration.unwrap_or_default() {
        parse(basalt_core::config::option(&name))?;
        config.push((name.clone(), config_value(&name, &value)?));
    }
    let policy = if body.allow_shrink { ResizePolicy::AllowShrink } else { ResizePolicy::GrowOnly };
    let ctx = state.status_ctx();
    let object = state
        .call(move |b| {
            // The reference order: rename, resize, disable features, enable features, configuration.
            if let Some(name) = new_name.filter(|n| *n != spec.image) {
                b.image_rename(&spec, &name)?;
                spec = basalt_core::sibling(&spec, name);
            }
            if let Some(size) = body.size {
                b.image_resize(&spec, size, policy)?;
            }
            if let Some(wanted) = wanted {
                let current = b.image_info(&spec)?.features;
                let changeable = Features::MUTABLE.union(Features::DISABLE_ONLY);
                let wanted =
                    if wanted.contains(Features::OBJECT_MAP) { wanted.union(Features::FAST_DIFF) } else { wanted };
                let disable = current.difference(wanted).intersection(changeable);
                let enable = wanted.difference(current).intersection(Features::MUTABLE);
                if !disable.is_empty() {
                    b.image_features_disable(&spec, disable)?;
                }
                if !enable.is_empty() {
                    b.image_features_enable(&spec, enable)?;
                }
            }
            for (name, value) in &config {
                let level = ConfigLevel::Image(spec.clone());
                match value {
                    Some(v) => b.config_set(&level, name, v)?,
                    None => match b.config_remove(&level, name) {
                        Err(e) if e.kind() == basalt_core::ErrorKind::NotFound => {}
                        other => other?,
                    },
                }
            }
            apply_metadata(b, &spec, &metadata)?;
            image_object(b, &spec, &ctx)
        })
        .await?;
    Ok((ignored.headers(), Json(object)).into_response())
}

fn spec_meta(spec: &ImageSpec) -> Value {
    json!({"image_spec": spec.to_string()})
}

pub(crate) async fn remove(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(spec): Path<String>,
) -> ApiResult<Response> {
    who.require(RBD_DELETE)?;
    let spec = parse(ImageSpec::parse(&spec))?;
    let meta = spec_meta(&spec);
    let missing = ApiError::missing_is_404;
    Ok(super::run_task_mapped(&state, "rbd/delete", meta, StatusCode::NO_CONTENT, missing, move |b, progress| {
        b.image_remove(&spec, progress)?;
        Ok(Value::Null)
    })
    .await)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CopyBody {
    dest_pool_name: String,
    dest_namespace: Option<String>,
    dest_image_name: String,
    snapshot_name: Option<String>,
    obj_size: Option<u64>,
    features: Option<Vec<String>>,
    #[serde(default, deserialize_with = "super::number_or_text")]
    stripe_unit: Option<u64>,
    #[serde(default, deserialize_with = "super::number_or_text")]
    stripe_count: Option<u64>,
    // Ceph's: the copy's data pool, configuration and metadata.
    data_pool: Option<Value>,
    configuration: Option<Value>,
    metadata: Option<Value>,
}

pub(crate) async fn copy(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(spec): Path<String>,
    Body(body): Body<CopyBody>,
) -> ApiResult<Response> {
    who.require(RBD_CREATE)?;
    let src = parse(ImageSpec::parse(&spec))?;
    let (pool, ns) = location(&body.dest_pool_name, body.dest_namespace.as_deref())?;
    let dest = ImageSpec::new(pool, ns, parse(ImageName::new(body.dest_image_name))?);
    let request = CopyRequest {
        snap: body.snapshot_name.map(SnapName::new).transpose().map_err(ApiError::from)?,
        dest: dest.clone(),
        order: order_of(body.obj_size)?,
        features: features_of(body.features)?,
        striping: striping_of(body.stripe_unit, body.stripe_count)?,
    };
    let mut ignored = Ignored::default();
    ignored.note("data_pool", body.data_pool.as_ref(), "a copy keeps its data with the image");
    ignored.note("configuration", body.configuration.as_ref(), "set it on the copy afterwards");
    ignored.note("metadata", body.metadata.as_ref(), "set it on the copy afterwards");
    let meta = json!({"image_spec": src.to_string(), "dest_image_spec": dest.to_string()});
    let registry = state.registry.clone();
    let mut answer = run_task(&state, "rbd/copy", meta, StatusCode::CREATED, move |b, progress| {
        let meter = Meter::copy(b, &src, request.snap.as_ref().map(|s| s.as_str()), &request.dest);
        meter.run(&registry, progress, || b.image_copy(&src, &request, progress))?;
        Ok(Value::Null)
    })
    .await;
    answer.headers_mut().extend(ignored.headers());
    Ok(answer)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeepCopyBody {
    dest_pool_name: String,
    dest_namespace: Option<String>,
    dest_image_name: String,
}

pub(crate) async fn deep_copy(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(spec): Path<String>,
    Body(body): Body<DeepCopyBody>,
) -> ApiResult<Response> {
    who.require(RBD_CREATE)?;
    let src = parse(ImageSpec::parse(&spec))?;
    let (pool, ns) = location(&body.dest_pool_name, body.dest_namespace.as_deref())?;
    let dest = ImageSpec::new(pool, ns, parse(ImageName::new(body.dest_image_name))?);
    let meta = json!({"image_spec": src.to_string(), "dest_image_spec": dest.to_string()});
    let registry = state.registry.clone();
    Ok(run_task(&state, "rbd/deep_copy", meta, StatusCode::CREATED, move |b, progress| {
        let meter = Meter::deep_copy(b, &src, &dest);
        meter.run(&registry, progress, || b.image_deep_copy(&src, &dest, progress))?;
        Ok(Value::Null)
    })
    .await)
}

pub(crate) async fn flatten(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(spec): Path<String>,
) -> ApiResult<Response> {
    who.require(RBD_UPDATE)?;
    let spec = parse(ImageSpec::parse(&spec))?;
    let meta = spec_meta(&spec);
    let busy = format!("image '{spec}' is already being flattened");
    let registry = state.registry.clone();
    run_exclusive_task(&state, "rbd/flatten", meta, StatusCode::CREATED, busy, move |b, progress: &Progress| {
        let meter = Meter::flatten(b, &spec);
        meter.run(&registry, progress, || b.flatten(&spec, progress))?;
        Ok(Value::Null)
    })
    .await
}

/// A scrub report as the API answers it: the damaged blocks by image spec, view and offset (no internal ids).
fn scrub_json(report: &basalt_core::ScrubReport) -> Value {
    let errors: Vec<Value> = report
        .errors
        .iter()
        .map(|e| json!({"image_spec": e.image, "view": e.view, "offset": e.offset, "length": 4096}))
        .collect();
    json!({
        "images": report.images,
        "blocks_checked": report.blocks_checked,
        "bytes_checked": report.blocks_checked * 4096,
        "errors": errors,
    })
}

/// `POST /api/block/image/{image_spec}/scrub`: checks every data block of the image (head and snapshots) against
/// its checksum, as a task with progress; answers the report.
pub(crate) async fn scrub(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(spec): Path<String>,
) -> ApiResult<Response> {
    who.require(RBD_READ)?;
    let spec = parse(ImageSpec::parse(&spec))?;
    let meta = spec_meta(&spec);
    let busy = format!("image '{spec}' is already being scrubbed");
    run_exclusive_task(&state, "rbd/scrub", meta, StatusCode::OK, busy, move |b, progress: &Progress| {
        Ok(scrub_json(&b.scrub(Some(&spec), progress)?))
    })
    .await
}

/// `POST /api/block/scrub`: [`scrub`] of every image of the store.
pub(crate) async fn scrub_store(State(state): State<AppState>, Caller(who): Caller) -> ApiResult<Response> {
    who.require(RBD_READ)?;
    let meta = json!({});
    let busy = "the store is already being scrubbed".to_owned();
    run_exclusive_task(&state, "rbd/scrub", meta, StatusCode::OK, busy, move |b, progress: &Progress| {
        Ok(scrub_json(&b.scrub(None, progress)?))
    })
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TrashBody {
    delay: Option<u64>,
    expires_at: Option<String>,
}

pub(crate) async fn move_trash(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(spec): Path<String>,
    OptionalBody(body): OptionalBody<TrashBody>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    // The reference checks create (not delete) here.
    who.require(RBD_CREATE)?;
    let spec = parse(ImageSpec::parse(&spec))?;
    let now = basalt_core::Clock::now(&basalt_core::SystemClock).secs();
    let end = match body {
        Some(TrashBody { expires_at: Some(at), delay: None }) => {
            let at = super::parse_rfc3339(&at)?;
            if at < now {
                return Err(ApiError::bad_request("the expiration time is in the past"));
            }
            at
        }
        Some(TrashBody { delay: Some(delay), expires_at: None }) => now.saturating_add(delay),
        Some(TrashBody { delay: None, expires_at: None }) | None => now,
        Some(_) => return Err(ApiError::bad_request("give either delay or expires_at, not both")),
    };
    let id = state.call(move |b| b.trash_move(&spec, Timestamp(end))).await?;
    Ok((StatusCode::CREATED, Json(json!({"id": id}))))
}

pub(crate) async fn du(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(spec): Path<String>,
) -> ApiResult<Json<Value>> {
    who.require(RBD_READ)?;
    let spec = parse(ImageSpec::parse(&spec))?;
    let entries = state.call(move |b| b.du(&spec)).await?;
    Ok(Json(json!(
        entries
            .iter()
            .map(|e| json!({
                "snapshot": e.snap.as_ref().map(|s| s.as_str()),
                "provisioned_bytes": e.provisioned_bytes,
                "used_bytes": e.used_bytes,
            }))
            .collect::<Vec<_>>()
    )))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DiffQuery {
    from_snap: Option<String>,
    to_snap: Option<String>,
    #[serde(default, deserialize_with = "super::compat::flexible_bool")]
    whole_object: bool,
}

pub(crate) async fn diff(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(spec): Path<String>,
    Params(query): Params<DiffQuery>,
) -> ApiResult<Json<Value>> {
    who.require(RBD_READ)?;
    let spec = parse(ImageSpec::parse(&spec))?;
    let from = query.from_snap.filter(|s| !s.is_empty()).map(SnapName::new).transpose().map_err(ApiError::from)?;
    let to = query.to_snap.filter(|s| !s.is_empty()).map(SnapName::new).transpose().map_err(ApiError::from)?;
    let granularity = if query.whole_object { DiffGranularity::WholeObject } else { DiffGranularity::Fine };
    let extents = state.call(move |b| b.diff(&spec, from.as_ref(), to.as_ref(), granularity)).await?;
    Ok(Json(json!(
        extents.iter().map(|e| json!({"offset": e.offset, "length": e.length, "exists": e.exists})).collect::<Vec<_>>()
    )))
}
