//! The API's error body `{detail, code, component, status}` and the mapping from errno-style kinds to HTTP status.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use basalt_core::ErrorKind;
use serde::Serialize;

/// An error as the API returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// What went wrong and what to do.
    pub detail: String,
    /// The errno-style code (`"ENOENT"`) or a short machine-readable name.
    pub code: String,
    /// The part of the system that refused (`rbd`, `auth`, `request`).
    pub component: &'static str,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    detail: &'a str,
    code: &'a str,
    component: &'a str,
    status: u16,
}

impl ApiError {
    /// A 400 for a malformed request.
    pub fn bad_request(detail: impl Into<String>) -> ApiError {
        ApiError { status: StatusCode::BAD_REQUEST, detail: detail.into(), code: "EINVAL".into(), component: "request" }
    }

    /// A 401: no or bad credentials.
    pub fn unauthorized(detail: impl Into<String>) -> ApiError {
        ApiError { status: StatusCode::UNAUTHORIZED, detail: detail.into(), code: "EACCES".into(), component: "auth" }
    }

    /// A 403: the caller's roles do not allow this.
    pub fn forbidden(detail: impl Into<String>) -> ApiError {
        ApiError { status: StatusCode::FORBIDDEN, detail: detail.into(), code: "EPERM".into(), component: "auth" }
    }

    /// A 404 for an unknown route or object outside the backend.
    pub fn not_found(detail: impl Into<String>) -> ApiError {
        ApiError { status: StatusCode::NOT_FOUND, detail: detail.into(), code: "ENOENT".into(), component: "request" }
    }

    /// A 413: the request body is larger than the API accepts.
    pub fn payload_too_large(detail: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            detail: detail.into(),
            code: "E2BIG".into(),
            component: "request",
        }
    }

    /// A 414: the request target is longer than the API accepts.
    pub fn uri_too_long(detail: impl Into<String>) -> ApiError {
        ApiError { status: StatusCode::URI_TOO_LONG, detail: detail.into(), code: "E2BIG".into(), component: "request" }
    }

    /// A 431: the request's headers are larger than the API accepts.
    pub fn headers_too_large(detail: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            detail: detail.into(),
            code: "E2BIG".into(),
            component: "request",
        }
    }

    /// A 415: the body is not declared as JSON.
    pub fn unsupported_media_type(detail: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            detail: detail.into(),
            code: "EINVAL".into(),
            component: "request",
        }
    }

    /// A 429: too many attempts.
    pub fn too_many(detail: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::TOO_MANY_REQUESTS,
            detail: detail.into(),
            code: "EAGAIN".into(),
            component: "auth",
        }
    }

    /// A 500 for a failure of the server itself.
    pub fn internal(detail: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            detail: detail.into(),
            code: "EIO".into(),
            component: "server",
        }
    }
}

/// The HTTP status for a backend refusal: missing objects are 404, conflicts with the object's state 409,
/// everything else the client can fix 400, a full disk 507, other failures of the disk 500.
pub fn status_of(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::AlreadyExists | ErrorKind::Busy | ErrorKind::NotEmpty => StatusCode::CONFLICT,
        ErrorKind::NotPermitted => StatusCode::CONFLICT,
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
            code: err.kind().name().to_owned(),
            component: "rbd",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            detail: &self.detail,
            code: &self.code,
            component: self.component,
            status: self.status.as_u16(),
        };
        (self.status, Json(body)).into_response()
    }
}

/// The result type of handlers.
pub type ApiResult<T> = Result<T, ApiError>;
