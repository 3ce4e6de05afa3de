//! `/api/block/image/{image_spec}/snap...`: snapshots, protection, rollback and clones.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use std::time::{Duration, Instant};

use basalt_core::{Backend, CloneRequest, ImageName, ImageSpec, Progress, SnapName, SnapSpec};
use serde::Deserialize;
use serde_json::{Value, json};

use super::images::{features_of, location, order_of, striping_of};
use super::misc::{RBD_CREATE, RBD_DELETE, RBD_READ, RBD_UPDATE};
use super::{Body, Ignored, parse, run_task};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

fn snap_spec(image: &str, snap: String) -> ApiResult<SnapSpec> {
    Ok(SnapSpec { image: parse(ImageSpec::parse(image))?, snap: parse(SnapName::new(snap))? })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateBody {
    snapshot_name: String,
    /// Ceph's: take a mirroring snapshot instead (no mirroring here: an ordinary snapshot is taken).
    #[serde(rename = "mirrorImageSnapshot")]
    mirror_image_snapshot: Option<Value>,
}

pub(crate) async fn create(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(spec): Path<String>,
    Body(body): Body<CreateBody>,
) -> ApiResult<Response> {
    who.require(RBD_CREATE)?;
    let mut ignored = Ignored::default();
    ignored.note(
        "mirrorImageSnapshot",
        body.mirror_image_snapshot.as_ref(),
        "basalt does not mirror images; an ordinary snapshot was taken",
    );
    let spec = snap_spec(&spec, body.snapshot_name)?;
    let meta = json!({"image_spec": spec.image.to_string(), "snapshot_name": spec.snap.as_str()});
    state.call(move |b| b.snap_create(&spec)).await.map_err(|e| e.in_task("rbd/snap/create", &meta))?;
    Ok((ignored.headers(), StatusCode::CREATED).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EditBody {
    new_snap_name: Option<String>,
    is_protected: Option<bool>,
}

pub(crate) async fn edit(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path((spec, snap)): Path<(String, String)>,
    Body(body): Body<EditBody>,
) -> ApiResult<StatusCode> {
    who.require(RBD_UPDATE)?;
    let mut spec = snap_spec(&spec, snap)?;
    let new_name = body.new_snap_name.map(SnapName::new).transpose().map_err(ApiError::from)?;
    state
        .call(move |b| {
            // An edit that changes nothing still names a snapshot, which must exist (404 for it or its image).
            if !b.snap_list(&spec.image)?.iter().any(|s| s.name == spec.snap) {
                basalt_core::bail!(NotFound, "snapshot '{spec}' does not exist");
            }
            if let Some(name) = new_name.filter(|n| *n != spec.snap) {
                b.snap_rename(&spec, &name)?;
                spec.snap = name;
            }
            if let Some(protect) = body.is_protected {
                let current = b.snap_list(&spec.image)?.into_iter().find(|s| s.name == spec.snap).map(|s| s.protected);
                match (protect, current) {
                    (true, Some(false)) => b.snap_protect(&spec)?,
                    (false, Some(true)) => b.snap_unprotect(&spec)?,
                    _ => {}
                }
            }
            Ok(())
        })
        .await?;
    Ok(StatusCode::OK)
}

pub(crate) async fn remove(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path((spec, snap)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    who.require(RBD_DELETE)?;
    let spec = snap_spec(&spec, snap)?;
    state.call(move |b| b.snap_remove(&spec)).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) async fn rollback(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path((spec, snap)): Path<(String, String)>,
) -> ApiResult<Response> {
    who.require(RBD_UPDATE)?;
    let spec = snap_spec(&spec, snap)?;
    let meta = json!({"image_spec": spec.image.to_string(), "snapshot_name": spec.snap.as_str()});
    Ok(run_task(&state, "rbd/snap/rollback", meta, StatusCode::CREATED, move |b, progress: &Progress| {
        wait_for_writers_to_detach(b, &spec.image);
        b.snap_rollback(&spec, progress)?;
        Ok(Value::Null)
    })
    .await)
}

/// How long a rollback waits for read-write clients to let go of the image before it is refused. An NBD client
/// (qemu-img, qemu-io) sends its disconnect and exits without waiting for the server, which still has to flush and
/// close the image: `qemu-img ...; basalt snap rollback ...` in a script must not race that.
const DETACH_WAIT: Duration = Duration::from_secs(5);
/// Pause between looks at the image's watchers while waiting.
const DETACH_POLL: Duration = Duration::from_millis(20);

/// Returns once no client has the image open read-write, or after [`DETACH_WAIT`] (the operation then refuses).
fn wait_for_writers_to_detach(backend: &dyn Backend, image: &ImageSpec) {
    let deadline = Instant::now() + DETACH_WAIT;
    while Instant::now() < deadline {
        match backend.image_watchers(image) {
            Ok(watchers) if watchers.iter().any(|w| w.writable) => std::thread::sleep(DETACH_POLL),
            _ => return,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CloneBody {
    child_pool_name: String,
    child_namespace: Option<String>,
    child_image_name: String,
    obj_size: Option<u64>,
    features: Option<Vec<String>>,
    #[serde(default, deserialize_with = "super::number_or_text")]
    stripe_unit: Option<u64>,
    #[serde(default, deserialize_with = "super::number_or_text")]
    stripe_count: Option<u64>,
    // Ceph's: the clone's data pool, configuration and metadata.
    data_pool: Option<Value>,
    configuration: Option<Value>,
    metadata: Option<Value>,
}

pub(crate) async fn clone(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path((spec, snap)): Path<(String, String)>,
    Body(body): Body<CloneBody>,
) -> ApiResult<Response> {
    who.require(RBD_CREATE)?;
    let mut ignored = Ignored::default();
    ignored.note("data_pool", body.data_pool.as_ref(), "a clone keeps its data with the image");
    ignored.note("configuration", body.configuration.as_ref(), "set it on the clone afterwards");
    ignored.note("metadata", body.metadata.as_ref(), "set it on the clone afterwards");
    let parent = snap_spec(&spec, snap)?;
    let (pool, namespace) = location(&body.child_pool_name, body.child_namespace.as_deref())?;
    let child = ImageSpec::new(pool, namespace, parse(ImageName::new(body.child_image_name))?);
    let request = CloneRequest {
        order: order_of(body.obj_size)?,
        features: features_of(body.features)?,
        striping: striping_of(body.stripe_unit, body.stripe_count)?,
    };
    let meta = json!({
        "parent_image_spec": parent.image.to_string(),
        "child_pool_name": child.pool().as_str(),
        "child_namespace": child.namespace().as_str(),
        "child_image_name": child.image.as_str(),
    });
    state.call(move |b| b.clone_image(&parent, &child, &request)).await.map_err(|e| e.in_task("rbd/clone", &meta))?;
    Ok((ignored.headers(), StatusCode::CREATED).into_response())
}

pub(crate) async fn children(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path((spec, snap)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    who.require(RBD_READ)?;
    let spec = snap_spec(&spec, snap)?;
    let children = state.call(move |b| b.snap_children(&spec)).await?;
    Ok(Json(json!(
        children
            .iter()
            .map(|c| json!({
                "pool_name": c.pool.as_str(),
                "namespace": c.namespace.as_str(),
                "image_name": c.image.as_str(),
                "image_id": c.image_id,
                "in_trash": c.in_trash,
            }))
            .collect::<Vec<_>>()
    )))
}

pub(crate) async fn purge(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(spec): Path<String>,
) -> ApiResult<Response> {
    who.require(RBD_DELETE)?;
    let spec = parse(ImageSpec::parse(&spec))?;
    let meta = json!({"image_spec": spec.to_string()});
    Ok(run_task(&state, "rbd/snap/purge", meta, StatusCode::NO_CONTENT, move |b, progress: &Progress| {
        b.snap_purge(&spec, progress)?;
        Ok(Value::Null)
    })
    .await)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LimitBody {
    limit: Option<u64>,
}

pub(crate) async fn limit(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(spec): Path<String>,
    Body(body): Body<LimitBody>,
) -> ApiResult<StatusCode> {
    who.require(RBD_UPDATE)?;
    let spec = parse(ImageSpec::parse(&spec))?;
    state.call(move |b| b.snap_limit_set(&spec, body.limit)).await?;
    Ok(StatusCode::OK)
}
