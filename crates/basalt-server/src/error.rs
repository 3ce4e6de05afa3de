//! The API's error bodies, in the Ceph Dashboard's shapes, and the mapping from errno-style kinds to HTTP status.
//!
//! - A refused operation (400, Ceph's `DashboardException`): `{detail, code, component}`, where `code` is the errno
//!   as a number in a string (`"17"`) or, where Ceph names the refusal instead, that name
//!   (`"username_already_exists"`), and `component` the part that refused (`"rbd"`, `"pool"`, `"user"`, `"role"`)
//!   or null.
//! - A refused operation that ran as a task (Ceph's `RbdTask`): the same plus `status` (the HTTP status as a number)
//!   and `task: {name, metadata}`.
//! - Every other status (401, 403, 404, 413, 414, 415, 429, 431, 500, 507; CherryPy's `HTTPError` in Ceph):
//!   `{status: "404 Not Found", detail, traceback, version}`, plus basalt's `code` and `component`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use basalt_core::ErrorKind;
use serde_json::{Map, Value, json};

/// An error as the API returns it.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// What went wrong and what to do.
    pub detail: String,
    /// The errno as a decimal number (`"2"`), or Ceph's name for a refusal that has none.
    pub code: String,
    /// The part of the system that refused (`rbd`, `pool`, `user`, `role`), or none.
    pub component: Option<&'static str>,
    /// The task the refused operation ran as (name and metadata), where Ceph runs it as one.
    pub task: Option<Box<(String, Value)>>,
}

/// errno values the API's own refusals use.
mod errno {
    pub const EPERM: i32 = 1;
    pub const ENOENT: i32 = 2;
    pub const EIO: i32 = 5;
    pub const E2BIG: i32 = 7;
    pub const EAGAIN: i32 = 11;
    pub const EACCES: i32 = 13;
    pub const EINVAL: i32 = 22;
}

impl ApiError {
    /// An error with an errno code and no component.
    pub fn new(status: StatusCode, errno: i32, detail: impl Into<String>) -> ApiError {
        ApiError { status, detail: detail.into(), code: errno.to_string(), component: None, task: None }
    }

    /// A 400 for a malformed request.
    pub fn bad_request(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, errno::EINVAL, detail)
    }

    /// A 401: no or bad credentials.
    pub fn unauthorized(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, errno::EACCES, detail)
    }

    /// A 403: the caller's roles do not allow this.
    pub fn forbidden(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, errno::EPERM, detail)
    }

    /// A 404 for an unknown route or a missing object that Ceph answers 404 for.
    pub fn not_found(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, errno::ENOENT, detail)
    }

    /// A 413: the request body is larger than the API accepts.
    pub fn payload_too_large(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, errno::E2BIG, detail)
    }

    /// A 414: the request target is longer than the API accepts.
    pub fn uri_too_long(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::URI_TOO_LONG, errno::E2BIG, detail)
    }

    /// A 431: the request's headers are larger than the API accepts.
    pub fn headers_too_large(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, errno::E2BIG, detail)
    }

    /// A 415: the body is not declared as JSON, or the `Accept` header asks for a version the endpoint lacks.
    pub fn unsupported_media_type(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, errno::EINVAL, detail)
    }

    /// A 429: too many attempts.
    pub fn too_many(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::TOO_MANY_REQUESTS, errno::EAGAIN, detail)
    }

    /// A 500 for a failure of the server itself.
    pub fn internal(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, errno::EIO, detail)
    }

    /// The same error with Ceph's name for it instead of an errno (`"role_already_exists"`).
    pub fn named(mut self, code: &str) -> ApiError {
        self.code = code.to_owned();
        self
    }

    /// The same error attributed to `component`.
    pub fn in_component(mut self, component: &'static str) -> ApiError {
        self.component = Some(component);
        self
    }

    /// The same error reported as the failure of task `name` with `metadata`, as Ceph's tasks report theirs.
    pub fn in_task(mut self, name: &str, metadata: &Value) -> ApiError {
        self.task = Some(Box::new((name.to_owned(), metadata.clone())));
        self
    }

    /// A missing object that Ceph answers 404 for (an image read or deleted): the same detail, status 404.
    pub fn missing_is_404(self) -> ApiError {
        if self.status == StatusCode::BAD_REQUEST && self.code == errno::ENOENT.to_string() {
            ApiError { status: StatusCode::NOT_FOUND, ..self }
        } else {
            self
        }
    }

    /// The JSON body.
    pub fn body(&self) -> Value {
        let component = self.component.map_or(Value::Null, |c| json!(c));
        let mut body = Map::new();
        body.insert("detail".into(), json!(self.detail));
        if let Some(task) = &self.task {
            let (name, metadata) = task.as_ref();
            // Ceph serialises a task's failure with its HTTP status; a missing image's code is the status itself.
            let code = if self.status == StatusCode::NOT_FOUND { json!(404) } else { json!(self.code) };
            body.insert("code".into(), code);
            body.insert("component".into(), component);
            body.insert("status".into(), json!(self.status.as_u16()));
            body.insert("task".into(), json!({"name": name, "metadata": metadata}));
        } else if self.status == StatusCode::BAD_REQUEST {
            body.insert("code".into(), json!(self.code));
            body.insert("component".into(), component);
        } else {
            let reason = self.status.canonical_reason().unwrap_or_default();
            body.insert("status".into(), json!(format!("{} {reason}", self.status.as_u16())));
            body.insert("traceback".into(), json!(""));
            body.insert("version".into(), json!(concat!("basalt ", env!("CARGO_PKG_VERSION"))));
            body.insert("code".into(), json!(self.code));
            body.insert("component".into(), component);
        }
        Value::Object(body)
    }
}

/// The HTTP status for a backend refusal: 400 with the errno, as Ceph answers a failed RBD operation (a missing
/// object too; the handlers Ceph answers 404 for use [`ApiError::missing_is_404`]); a full disk 507 and other
/// failures of the disk 500, as failures of the server rather than refusals.
pub fn status_of(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::NoSpace => StatusCode::INSUFFICIENT_STORAGE,
        ErrorKind::Io => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_REQUEST,
    }
}

impl From<basalt_core::Error> for ApiError {
    fn from(err: basalt_core::Error) -> ApiError {
        ApiError {
            status: status_of(err.kind()),
            detail: err.message().to_owned(),
            code: err.kind().errno().to_string(),
            component: Some("rbd"),
            task: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body())).into_response()
    }
}

/// The result type of handlers.
pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_take_cephs_shapes() {
        let exists = ApiError::from(basalt_core::Error::new(ErrorKind::AlreadyExists, "image 'rbd/a' exists"));
        assert_eq!(exists.status, StatusCode::BAD_REQUEST);
        assert_eq!(exists.body(), json!({"detail": "image 'rbd/a' exists", "code": "17", "component": "rbd"}));

        let meta = json!({"image_spec": "rbd/a"});
        let busy = ApiError::from(basalt_core::Error::new(ErrorKind::Busy, "busy")).in_task("rbd/delete", &meta);
        assert_eq!(
            busy.body(),
            json!({"detail": "busy", "code": "16", "component": "rbd", "status": 400,
                   "task": {"name": "rbd/delete", "metadata": {"image_spec": "rbd/a"}}})
        );

        let missing = ApiError::from(basalt_core::Error::new(ErrorKind::NotFound, "no image"));
        assert_eq!((missing.status, missing.code.as_str()), (StatusCode::BAD_REQUEST, "2"));
        let missing = missing.missing_is_404().in_task("rbd/delete", &meta);
        assert_eq!(missing.status, StatusCode::NOT_FOUND);
        assert_eq!(missing.body()["code"], json!(404));

        let page = ApiError::not_found("no such API route").body();
        assert_eq!(page["status"], "404 Not Found");
        assert_eq!(page["detail"], "no such API route");
        assert!(page["version"].as_str().is_some_and(|v| v.starts_with("basalt ")));

        let named = ApiError::bad_request("taken").named("role_already_exists").in_component("role");
        assert_eq!(named.body(), json!({"detail": "taken", "code": "role_already_exists", "component": "role"}));
        assert_eq!(status_of(ErrorKind::NoSpace), StatusCode::INSUFFICIENT_STORAGE);
    }
}
