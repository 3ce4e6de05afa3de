//! The REST API: routes, the JSON body extractor that refuses unknown fields, and shared helpers.
//! The contract is `docs/API.md`.

mod access;
pub mod compat;
mod connection;
mod images;
mod misc;
mod nbd;
pub mod openapi;
mod purge_schedule;
mod snaps;
mod transfer;
mod trash;

use axum::Router;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::auth::Origin;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::tasks::Started;

/// Builds the API for one listener.
pub fn router(state: AppState, origin: Origin) -> Router {
    let image = "/api/block/image/{image_spec}";
    let api = Router::new()
        .route("/api/health", get(misc::health))
        .route("/api/openapi.json", get(openapi::openapi_json))
        .route("/api/docs", get(openapi::docs_page))
        .route("/api/auth", post(access::login))
        .route("/api/auth/logout", post(access::logout))
        .route("/api/auth/check", get(access::check).post(access::check_token))
        .route("/api/user", get(access::list_users).post(access::create_user))
        .route("/api/user/{username}", get(access::get_user).put(access::update_user).delete(access::delete_user))
        .route("/api/user/{username}/change_password", post(access::change_password))
        .route("/api/user/{username}/nbd-certificate", post(nbd::issue_certificate))
        .route("/api/role", get(access::list_roles).post(access::create_role))
        .route("/api/role/{name}", get(access::get_role).put(access::update_role).delete(access::delete_role))
        .route("/api/task", get(misc::tasks))
        .route("/api/audit", get(crate::audit::list))
        .route("/api/alerts", get(crate::alerts::list))
        .route("/api/perf/image/{image_spec}", get(crate::perf::image))
        .route("/api/perf/overall", get(crate::perf::overall))
        .route("/api/perf/top", get(crate::perf::top))
        .route("/metrics", get(metrics))
        .route("/api/pool", get(misc::list_pools).post(misc::create_pool))
        .route("/api/pool/{pool}", get(misc::get_pool).put(misc::update_pool).delete(misc::delete_pool))
        .route("/api/block/pool/{pool}/namespace", get(misc::list_namespaces).post(misc::create_namespace))
        .route("/api/block/pool/{pool}/namespace/{namespace}", axum::routing::delete(misc::delete_namespace))
        .route("/api/block/config/global", get(misc::config_global).put(misc::set_config_global))
        .route("/api/block/config/pool/{pool}", get(misc::config_pool).put(misc::set_config_pool))
        .route("/api/block/config/image/{image_spec}", get(misc::config_image).put(misc::set_config_image))
        .route("/api/block/image", get(images::list).post(images::create))
        .route("/api/block/image/default_features", get(images::default_features))
        .route("/api/block/image/clone_format_version", get(images::clone_format_version))
        .route("/api/block/image/trash", get(trash::list))
        .route("/api/block/image/trash/purge", post(trash::purge))
        .route(
            "/api/block/image/trash/purge-schedule",
            get(purge_schedule::list).post(purge_schedule::add).delete(purge_schedule::remove),
        )
        .route("/api/block/image/trash/purge-schedule/status", get(purge_schedule::status))
        .route("/api/block/image/trash/{image_id_spec}/restore", post(trash::restore))
        .route("/api/block/image/trash/{image_id_spec}", axum::routing::delete(trash::remove))
        .route(image, get(images::get_one).put(images::edit).delete(images::remove))
        .route(&format!("{image}/copy"), post(images::copy))
        .route(&format!("{image}/deep_copy"), post(images::deep_copy))
        .route(&format!("{image}/flatten"), post(images::flatten))
        .route(&format!("{image}/move_trash"), post(images::move_trash))
        .route(&format!("{image}/du"), get(images::du))
        .route(&format!("{image}/connection"), get(connection::connection))
        .route(&format!("{image}/export"), get(transfer::export))
        .route(&format!("{image}/import_diff"), post(transfer::import_diff))
        .route(&format!("{image}/diff"), get(images::diff))
        .route(&format!("{image}/scrub"), post(images::scrub))
        .route("/api/block/scrub", post(images::scrub_store))
        .route(&format!("{image}/snap"), post(snaps::create))
        .route(&format!("{image}/snap_purge"), post(snaps::purge))
        .route(&format!("{image}/snap_limit"), put(snaps::limit))
        .route(&format!("{image}/snap/{{snap}}"), put(snaps::edit).delete(snaps::remove))
        .route(&format!("{image}/snap/{{snap}}/rollback"), post(snaps::rollback))
        .route(&format!("{image}/snap/{{snap}}/clone"), post(snaps::clone))
        .route(&format!("{image}/snap/{{snap}}/children"), get(snaps::children))
        .route_layer(axum::middleware::from_fn(compat::versioning))
        .fallback(crate::ui::fallback)
        .layer(axum::middleware::from_fn_with_state(state.clone(), crate::audit::record))
        .layer(axum::middleware::map_response(security_headers))
        .layer(axum::middleware::from_fn(request_limits))
        .layer(axum::Extension(origin))
        .with_state(state);
    // Trailing slashes come off before routing, so the outer router sends everything to the API.
    Router::new().fallback_service(compat::TrailingSlash(api))
}

/// The longest request target (path and query) the API takes.
pub const URI_MAX_BYTES: usize = 8 << 10;
/// The most header bytes (names and values) the API takes.
pub const HEADERS_MAX_BYTES: usize = 32 << 10;
/// The most header fields the API takes.
pub const HEADERS_MAX_COUNT: usize = 100;

/// Refuses over-long targets (414) and over-large headers (431) with the API's error body.
async fn request_limits(request: Request, next: axum::middleware::Next) -> Response {
    let target = request.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if target > URI_MAX_BYTES {
        return ApiError::uri_too_long(format!("the request target is longer than {URI_MAX_BYTES} bytes"))
            .into_response();
    }
    let headers = request.headers();
    let bytes: usize = headers.iter().map(|(name, value)| name.as_str().len() + value.len()).sum();
    if bytes > HEADERS_MAX_BYTES || headers.len() > HEADERS_MAX_COUNT {
        return ApiError::headers_too_large(format!(
            "the request headers exceed {HEADERS_MAX_COUNT} fields or {HEADERS_MAX_BYTES} bytes"
        ))
        .into_response();
    }
    next.run(request).await
}

/// What every answer carries: the dashboard's content policy (pages set their own), no framing, no sniffing, no
/// referrer.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
     img-src 'self' data:; font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

async fn security_headers(mut response: Response) -> Response {
    use axum::http::{HeaderValue, header};
    let headers = response.headers_mut();
    headers.entry(header::CONTENT_SECURITY_POLICY).or_insert(HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}

/// `/metrics`: open on loopback listeners and the API socket (or with `serve --metrics-public`), else it needs a
/// token like the rest of the API.
async fn metrics(
    state: axum::extract::State<AppState>,
    open: Option<axum::Extension<crate::listen::MetricsOpen>>,
    caller: Result<crate::auth::Caller, ApiError>,
) -> Response {
    let open = open.is_some_and(|axum::Extension(crate::listen::MetricsOpen(open))| open);
    if !open && let Err(refused) = caller {
        return refused.into_response();
    }
    crate::perf::metrics(state).await.into_response()
}

/// Reads a request body as JSON: declared as JSON (415), within the size limit (413), and an object (400).
async fn json_bytes<S: Send + Sync>(req: Request, state: &S, required: bool) -> ApiResult<Option<axum::body::Bytes>> {
    let declared = req.headers().get(axum::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(|v| {
        let mime = v.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
        mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
    });
    let bytes = axum::body::Bytes::from_request(req, state).await.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::payload_too_large(format!("the request body is too large: {}", e.body_text()))
        } else {
            ApiError::bad_request(format!("invalid request body: {}", e.body_text()))
        }
    })?;
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    match first {
        None if !required => return Ok(None),
        None => return Err(ApiError::bad_request("invalid request body: a JSON object is required")),
        Some(_) if declared == Some(false) || (declared.is_none() && required) => {
            return Err(ApiError::unsupported_media_type(
                "invalid request body: send it with 'Content-Type: application/json'",
            ));
        }
        Some(b'{') => {}
        Some(_) => return Err(ApiError::bad_request("invalid request body: it must be a JSON object")),
    }
    Ok(Some(bytes))
}

/// A JSON body; malformed JSON and unknown fields are a 400 in the API's error shape.
#[derive(Debug)]
pub struct Body<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Body<T>, ApiError> {
        let bytes = json_bytes(req, state, true).await?.unwrap_or_default();
        serde_json::from_slice(&bytes)
            .map(Body)
            .map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))
    }
}

/// A JSON body that may be absent (empty); present bodies are checked like [`Body`].
#[derive(Debug)]
pub struct OptionalBody<T>(pub Option<T>);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for OptionalBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<OptionalBody<T>, ApiError> {
        let Some(bytes) = json_bytes(req, state, false).await? else {
            return Ok(OptionalBody(None));
        };
        serde_json::from_slice(&bytes)
            .map(|v| OptionalBody(Some(v)))
            .map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))
    }
}

/// Query strings parsed into `T`; unknown parameters are refused.
#[derive(Debug)]
pub struct Params<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> axum::extract::FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Params<T>, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Params(value)),
            Err(rejection) => Err(ApiError::bad_request(format!("invalid query: {}", rejection.body_text()))),
        }
    }
}

/// Fields of Ceph's request bodies that basalt takes but does not apply (mirroring, placement groups...), each
/// with the reason; the answer names them in a `Warning` header (`299 basalt "..."`).
#[derive(Debug, Default)]
pub(crate) struct Ignored(Vec<String>);

impl Ignored {
    /// Notes `field` as ignored for `why` when the client set it to something other than null, false or "".
    pub(crate) fn note(&mut self, field: &str, value: Option<&serde_json::Value>, why: &str) {
        use serde_json::Value;
        match value {
            None | Some(Value::Null) | Some(Value::Bool(false)) => {}
            Some(Value::String(s)) if s.is_empty() => {}
            Some(_) => self.0.push(format!("{field} ignored: {why}")),
        }
    }

    /// The `Warning` header naming what was ignored (none when nothing was).
    pub(crate) fn headers(&self) -> axum::http::HeaderMap {
        let mut headers = axum::http::HeaderMap::new();
        if !self.0.is_empty() {
            let text = format!("299 basalt \"{}\"", self.0.join("; ").replace(['"', '\\'], "'"));
            if let Ok(value) = axum::http::HeaderValue::from_str(&text) {
                headers.insert(axum::http::header::WARNING, value);
            }
        }
        headers
    }
}

/// Deserializes an optional count that Ceph's clients may send as a number or as a string of digits.
pub(crate) fn number_or_text<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Count {
        Number(u64),
        Text(String),
    }
    match Option::<Count>::deserialize(deserializer)? {
        None => Ok(None),
        Some(Count::Number(n)) => Ok(Some(n)),
        Some(Count::Text(t)) if t.is_empty() => Ok(None),
        Some(Count::Text(t)) => {
            t.parse().map(Some).map_err(|_| serde::de::Error::custom(format!("invalid number '{t}'")))
        }
    }
}

/// Turns a bad name or spec into a 400.
pub(crate) fn parse<T>(result: basalt_core::Result<T>) -> ApiResult<T> {
    result.map_err(ApiError::from)
}

/// Runs `work` as a background task named `name` and answers with `success` if it finishes in time, else 202.
pub(crate) async fn run_task<F>(
    state: &AppState,
    name: &str,
    metadata: serde_json::Value,
    success: StatusCode,
    work: F,
) -> Response
where
    F: FnOnce(&dyn basalt_core::Backend, &basalt_core::Progress) -> basalt_core::Result<serde_json::Value>
        + Send
        + 'static,
{
    run_task_mapped(state, name, metadata, success, |e| e, work).await
}

/// [`run_task`], with the task's refusal adjusted by `map_err` before it is reported (Ceph answers some missing
/// objects with 404).
pub(crate) async fn run_task_mapped<F>(
    state: &AppState,
    name: &str,
    metadata: serde_json::Value,
    success: StatusCode,
    map_err: fn(ApiError) -> ApiError,
    work: F,
) -> Response
where
    F: FnOnce(&dyn basalt_core::Backend, &basalt_core::Progress) -> basalt_core::Result<serde_json::Value>
        + Send
        + 'static,
{
    let started = state.tasks.start(state.backend.clone(), name, metadata.clone(), observed(state, work)).await;
    task_response(started, success, |e| map_err(e).in_task(name, &metadata))
}

/// [`run_task`] for a kind of task that runs once at a time on one thing (the same `metadata`): while one runs, the
/// call is refused with EBUSY and the `busy` message, and nothing starts.
pub(crate) async fn run_exclusive_task<F>(
    state: &AppState,
    name: &str,
    metadata: serde_json::Value,
    success: StatusCode,
    busy: String,
    work: F,
) -> ApiResult<Response>
where
    F: FnOnce(&dyn basalt_core::Backend, &basalt_core::Progress) -> basalt_core::Result<serde_json::Value>
        + Send
        + 'static,
{
    match state.tasks.start_exclusive(state.backend.clone(), name, metadata.clone(), observed(state, work)).await {
        Started::Busy => Err(ApiError::from(basalt_core::Error::busy(busy))),
        started => Ok(task_response(started, success, |e| e.in_task(name, &metadata))),
    }
}

/// `work`, telling the registry of its failures (so it learns when the store stopped).
fn observed<F>(
    state: &AppState,
    work: F,
) -> impl FnOnce(&dyn basalt_core::Backend, &basalt_core::Progress) -> basalt_core::Result<serde_json::Value> + Send + 'static
where
    F: FnOnce(&dyn basalt_core::Backend, &basalt_core::Progress) -> basalt_core::Result<serde_json::Value>
        + Send
        + 'static,
{
    let registry = state.registry.clone();
    move |b: &dyn basalt_core::Backend, p: &basalt_core::Progress| {
        let result = work(b, p);
        if let Err(e) = &result {
            registry.observe(e, || b.stopped());
        }
        result
    }
}

/// Answers a task call: the synchronous answer if it finished in time, else 202 with the task; a refusal names the
/// task, as Ceph's do.
fn task_response(started: Started, success: StatusCode, refused: impl FnOnce(ApiError) -> ApiError) -> Response {
    match started {
        Started::Done(Ok(_)) if success == StatusCode::NO_CONTENT => StatusCode::NO_CONTENT.into_response(),
        Started::Done(Ok(value)) => (success, axum::Json(value)).into_response(),
        Started::Done(Err(err)) => refused(err).into_response(),
        Started::Busy => {
            refused(ApiError::from(basalt_core::Error::busy("a task of this kind already runs on it"))).into_response()
        }
        Started::Running(info) => (
            StatusCode::ACCEPTED,
            axum::Json(serde_json::json!({"name": info.name, "metadata": info.metadata, "id": info.id})),
        )
            .into_response(),
    }
}

/// Formats seconds since the epoch as RFC 3339 UTC (`2026-11-25T14:20:17Z`).
pub fn rfc3339(secs: u64) -> String {
    basalt_core::Timestamp(secs).to_string()
}

/// Parses a time as users give it (RFC 3339, or `YYYY-MM-DD[ HH:MM[:SS]]` in UTC) to seconds since the epoch.
pub fn parse_rfc3339(text: &str) -> ApiResult<u64> {
    basalt_core::time::parse_time(text)
        .ok()
        .and_then(|secs| u64::try_from(secs).ok())
        .ok_or_else(|| ApiError::bad_request(format!("invalid time '{text}': use YYYY-MM-DDTHH:MM:SSZ (UTC)")))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn json_request(body: Vec<u8>, content_type: Option<&str>) -> Request {
        let mut builder = axum::http::Request::builder().method("POST").uri("/api/auth");
        if let Some(t) = content_type {
            builder = builder.header(axum::http::header::CONTENT_TYPE, t);
        }
        builder.body(axum::body::Body::from(body)).expect("request")
    }

    #[derive(Debug, serde::Deserialize)]
    struct Named {
        #[allow(dead_code)]
        name: Option<String>,
    }

    #[tokio::test]
    async fn bodies_get_413_415_or_400_in_the_api_shape() {
        let json = Some("application/json");
        let big = format!("{{\"name\": \"{}\"}}", "n".repeat(3 << 20)).into_bytes();
        let err = Body::<Named>::from_request(json_request(big, json), &()).await.expect_err("too large");
        assert_eq!(err.status, StatusCode::PAYLOAD_TOO_LARGE);
        let err = Body::<Named>::from_request(json_request(b"{}".to_vec(), Some("text/plain")), &())
            .await
            .expect_err("not JSON");
        assert_eq!(err.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        for body in ["[null]", "1", "\"x\"", ""] {
            let err =
                Body::<Named>::from_request(json_request(body.into(), json), &()).await.expect_err("not an object");
            assert_eq!(err.status, StatusCode::BAD_REQUEST, "{body}");
        }
        Body::<Named>::from_request(json_request(b" {} ".to_vec(), json), &()).await.expect("an object");
        let none = OptionalBody::<Named>::from_request(json_request(Vec::new(), None), &()).await.expect("empty");
        assert!(none.0.is_none());
    }

    /// A task kind that runs once at a time per thing: a second call on the same thing is refused with EBUSY and
    /// the handler's message (the API's 400 with code 16, not in a task's shape), nothing starts; another thing or
    /// another kind is not refused, and once the task ended the call starts again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_exclusive_task_refuses_a_second_call_on_the_same_thing_while_it_runs() {
        let dir = tempfile::tempdir().expect("temp dir");
        let engine = basalt_engine::Engine::open(dir.path(), Arc::new(basalt_core::SystemClock)).expect("engine");
        let store = crate::store::ServerStore::open(dir.path()).expect("store");
        let tasks = Arc::new(crate::tasks::Tasks::new(store.clone()).expect("tasks"));
        let state = AppState::new(
            Arc::new(engine),
            Arc::new(crate::auth::Auth::new(store)),
            tasks.clone(),
            Arc::default(),
            Arc::default(),
        );
        let meta = || serde_json::json!({"image_spec": "rbd/vm"});
        let (release, hold) = std::sync::mpsc::channel::<()>();
        let held = run_exclusive_task(&state, "rbd/scrub", meta(), StatusCode::OK, "first".into(), move |_, _| {
            hold.recv().map_err(|_| basalt_core::Error::io("released"))?;
            Ok(serde_json::Value::Null)
        })
        .await
        .expect("the first call starts");
        assert_eq!(held.status(), StatusCode::ACCEPTED, "the held task still runs after the call's wait");

        let quick = |_: &dyn basalt_core::Backend, _: &basalt_core::Progress| Ok(serde_json::json!({"done": true}));
        let refused = run_exclusive_task(&state, "rbd/scrub", meta(), StatusCode::OK, "already".into(), quick)
            .await
            .expect_err("a second call on the same image is refused");
        assert_eq!(
            (refused.status, refused.body()),
            (StatusCode::BAD_REQUEST, serde_json::json!({"detail": "already", "code": "16", "component": "rbd"}))
        );
        assert_eq!(tasks.list().0.len(), 1, "the refused call started nothing");

        let other = serde_json::json!({"image_spec": "rbd/other"});
        let answer = run_exclusive_task(&state, "rbd/scrub", other, StatusCode::OK, "x".into(), quick).await;
        assert_eq!(answer.expect("another image").status(), StatusCode::OK);
        let answer = run_exclusive_task(&state, "rbd/flatten", meta(), StatusCode::CREATED, "x".into(), quick).await;
        assert_eq!(answer.expect("another kind").status(), StatusCode::CREATED);

        release.send(()).expect("release");
        tasks.wait_idle().await;
        let answer = run_exclusive_task(&state, "rbd/scrub", meta(), StatusCode::OK, "x".into(), quick).await;
        assert_eq!(answer.expect("the task ended").status(), StatusCode::OK);
    }

    #[test]
    fn times_round_trip() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_795_616_417), "2026-11-25T14:20:17Z");
        assert_eq!(parse_rfc3339("2026-11-25T14:20:17Z").expect("valid"), 1_795_616_417);
        assert_eq!(parse_rfc3339("2026-11-25 14:20:17").expect("valid"), 1_795_616_417);
        assert!(parse_rfc3339("2026-13-01T00:00:00Z").is_err());
        assert!(parse_rfc3339("yesterday").is_err());
    }
}
