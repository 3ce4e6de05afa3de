//! The Ceph Dashboard's contract on top of basalt's API: versioned media types (`Accept:
//! application/vnd.ceph.api.v1.0+json`, 415 for a version an endpoint lacks, `Content-Type` echoing the endpoint's
//! version), Ceph's answer shapes under those versions, trailing slashes and Python-style booleans.
//!
//! A request that asks for no version (`application/json`, `*/*`, no `Accept`) or for
//! `application/vnd.basalt.api.v1+json` gets basalt's own flavour: the same statuses and error bodies, with the
//! extra keys basalt has (image status, watchers, metadata...) and a flat image list.

use std::convert::Infallible;
use std::task::{Context, Poll};

use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};

use crate::error::ApiError;

/// Which contract an answer follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    /// basalt's own; `explicit` when asked for as `application/vnd.basalt.api.v1+json`.
    Basalt {
        /// Asked for by its media type (echoed in `Content-Type`).
        explicit: bool,
    },
    /// Ceph's, at the endpoint's version that serves the request.
    Ceph(Version),
}

/// An API version, `major.minor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Version(pub u16, pub u16);

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.0, self.1)
    }
}

impl Version {
    /// Whether an endpoint at this version serves a client asking for `client` (Ceph's rule: same major, the
    /// client's minor at most the endpoint's).
    pub fn supports(self, client: Version) -> bool {
        self.0 == client.0 && client.1 <= self.1
    }
}

/// The only version of basalt's own media type.
pub const BASALT_MEDIA_TYPE: &str = "application/vnd.basalt.api.v1+json";

enum Wanted {
    Plain,
    Ceph(Version),
    Basalt(String),
}

/// Reads the version a client asks for from `Accept`: the first media range of Ceph's or basalt's versioned types.
fn wanted(accept: &str) -> Result<Wanted, ApiError> {
    for range in accept.split(',') {
        let mime = range.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
        if let Some(rest) = mime.strip_prefix("application/vnd.ceph.api.v") {
            let version = rest
                .strip_suffix("+json")
                .and_then(|v| v.split_once('.'))
                .and_then(|(major, minor)| Some(Version(major.parse().ok()?, minor.parse().ok()?)));
            return version
                .map(Wanted::Ceph)
                .ok_or_else(|| ApiError::unsupported_media_type("Unable to find version in request header"));
        }
        if let Some(rest) = mime.strip_prefix("application/vnd.basalt.api.v") {
            return Ok(Wanted::Basalt(rest.strip_suffix("+json").unwrap_or(rest).to_owned()));
        }
    }
    Ok(Wanted::Plain)
}

/// The versions of Ceph's media type an endpoint serves, newest first. Ceph's `openapi.yaml` (Pacific to Squid)
/// declares every endpoint basalt shares with it at 1.0, except the image list: 1.0 in Pacific (every image, grouped
/// by pool, with `status`), 2.0 from Quincy on (paged with `offset`, `limit`, `search`, `sort`). basalt's own
/// endpoints answer at 1.0 too.
pub fn endpoint_versions(method: &Method, path: &str) -> &'static [Version] {
    match (method, path) {
        (&Method::GET, "/api/block/image") => &[Version(2, 0), Version(1, 0)],
        _ => &[Version(1, 0)],
    }
}

/// Picks the flavour of each request, refuses versions the endpoint lacks (415), and dresses the answer: the
/// version in `Content-Type`, and Ceph's key sets under Ceph's versions.
pub async fn versioning(matched: Option<MatchedPath>, mut request: Request, next: axum::middleware::Next) -> Response {
    let accept = request.headers().get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let path = matched.as_ref().map(MatchedPath::as_str).unwrap_or_default().to_owned();
    let method = request.method().clone();
    let flavour = match wanted(accept) {
        Err(refused) => return refused.into_response(),
        Ok(Wanted::Plain) => Flavour::Basalt { explicit: false },
        Ok(Wanted::Basalt(v)) if v == "1" || v == "1.0" => Flavour::Basalt { explicit: true },
        Ok(Wanted::Basalt(v)) => {
            return ApiError::unsupported_media_type(format!(
                "Incorrect version: endpoint is '1', client requested '{v}' (basalt's media type is {BASALT_MEDIA_TYPE})"
            ))
            .into_response();
        }
        Ok(Wanted::Ceph(client)) => {
            let versions = endpoint_versions(&method, &path);
            match versions.iter().find(|v| v.supports(client)) {
                Some(v) => Flavour::Ceph(*v),
                None => {
                    return ApiError::unsupported_media_type(format!(
                        "Incorrect version: endpoint is '{}', client requested '{client}'",
                        versions[0]
                    ))
                    .into_response();
                }
            }
        }
    };
    request.extensions_mut().insert(flavour);
    let response = next.run(request).await;
    dress(flavour, &method, &path, response).await
}

async fn dress(flavour: Flavour, method: &Method, path: &str, response: Response) -> Response {
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !response.status().is_success() || !is_json {
        return response;
    }
    let media = match flavour {
        Flavour::Basalt { explicit: false } => return response,
        Flavour::Basalt { explicit: true } => BASALT_MEDIA_TYPE.to_owned(),
        Flavour::Ceph(v) => format!("application/vnd.ceph.api.v{v}+json"),
    };
    let (mut parts, body) = response.into_parts();
    let media = HeaderValue::from_str(&media).unwrap_or(HeaderValue::from_static("application/json"));
    parts.headers.insert(header::CONTENT_TYPE, media);
    let Flavour::Ceph(version) = flavour else {
        return Response::from_parts(parts, body);
    };
    let Some(trim) = trimmer(method, path, version) else {
        return Response::from_parts(parts, body);
    };
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return ApiError::internal("reading the answer failed").into_response();
    };
    let Ok(mut value) = serde_json::from_slice::<Value>(&bytes) else {
        return Response::from_parts(parts, axum::body::Body::from(bytes));
    };
    trim(&mut value);
    let bytes = serde_json::to_vec(&value).unwrap_or_default();
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, axum::body::Body::from(bytes))
}

type Trim = fn(&mut Value);

/// The answers whose key sets differ from Ceph's, and how to bring them to Ceph's.
fn trimmer(method: &Method, path: &str, _version: Version) -> Option<Trim> {
    match (method, path) {
        (&Method::GET, "/api/block/image") => Some(|v| {
            for group in v.as_array_mut().into_iter().flatten() {
                for image in group.get_mut("value").and_then(Value::as_array_mut).into_iter().flatten() {
                    ceph_image(image);
                }
            }
        }),
        (&Method::GET, "/api/block/image/{image_spec}") | (&Method::PUT, "/api/block/image/{image_spec}") => {
            Some(ceph_image)
        }
        (&Method::GET, "/api/block/image/trash") => Some(|v| {
            for group in v.as_array_mut().into_iter().flatten() {
                for entry in group.get_mut("value").and_then(Value::as_array_mut).into_iter().flatten() {
                    remove(entry, &["status"]);
                }
            }
        }),
        (&Method::GET, "/api/pool") => {
            Some(|v| v.as_array_mut().into_iter().flatten().for_each(|p| remove(p, &["health"])))
        }
        (&Method::GET, "/api/user") => Some(|v| v.as_array_mut().into_iter().flatten().for_each(ceph_user)),
        (&Method::GET, "/api/user/{username}")
        | (&Method::POST, "/api/user")
        | (&Method::PUT, "/api/user/{username}") => Some(ceph_user),
        (&Method::POST, "/api/auth") => Some(|v| {
            if let Some(login) = v.as_object_mut() {
                login.entry("pwdExpirationDate").or_insert(Value::Null);
                login.entry("sso").or_insert(json!(false));
                login.entry("pwdUpdateRequired").or_insert(json!(false));
            }
        }),
        (&Method::GET, "/api/task") => Some(|v| {
            for key in ["executing_tasks", "finished_tasks"] {
                for task in v.get_mut(key).and_then(Value::as_array_mut).into_iter().flatten() {
                    ceph_task(task);
                }
            }
        }),
        _ => None,
    }
}

fn remove(value: &mut Value, keys: &[&str]) {
    if let Some(object) = value.as_object_mut() {
        for key in keys {
            object.remove(*key);
        }
    }
}

/// An image as Ceph's `RbdService` describes it: no status, watchers, metadata, modification time or snapshot
/// counts; a parent of pool, namespace, image and snapshot; snapshot children named by `pool_namespace`.
fn ceph_image(image: &mut Value) {
    remove(
        image,
        &["metadata", "modify_timestamp", "snap_limit", "snapshot_count", "status", "status_detail", "watchers"],
    );
    if let Some(parent) = image.get_mut("parent").filter(|p| p.is_object()) {
        remove(parent, &["image_id", "overlap", "in_trash"]);
    }
    for snap in image.get_mut("snapshots").and_then(Value::as_array_mut).into_iter().flatten() {
        for child in snap.get_mut("children").and_then(Value::as_array_mut).into_iter().flatten() {
            if let Some(child) = child.as_object_mut() {
                let namespace = child.remove("namespace").unwrap_or(json!(""));
                child.insert("pool_namespace".into(), namespace);
            }
        }
    }
}

/// A user as Ceph's access control describes one: `lastUpdate` in seconds since the epoch, password expiry and the
/// must-change flag.
fn ceph_user(user: &mut Value) {
    let Some(user) = user.as_object_mut() else { return };
    let last = user.remove("last_update");
    let secs =
        last.as_ref().and_then(Value::as_str).and_then(|t| basalt_core::time::parse_time(t).ok()).unwrap_or_default();
    user.insert("lastUpdate".into(), json!(secs));
    user.entry("pwdExpirationDate").or_insert(Value::Null);
    user.entry("pwdUpdateRequired").or_insert(json!(false));
}

/// A task as Ceph's task manager lists one: no id, and its duration in seconds.
fn ceph_task(task: &mut Value) {
    let Some(task) = task.as_object_mut() else { return };
    task.remove("id");
    let time = |key: &str| task.get(key).and_then(Value::as_str).and_then(|t| basalt_core::time::parse_time(t).ok());
    if let (Some(begin), Some(end)) = (time("begin_time"), time("end_time")) {
        task.insert("duration".into(), json!(end.saturating_sub(begin)));
    } else {
        task.remove("end_time");
        task.remove("success");
        task.remove("ret_value");
        task.remove("exception");
    }
}

/// Deserializes a query flag as Ceph's `str_to_bool` reads one: `true`, `True`, `yes`, `1`... and their negatives.
pub fn flexible_bool<'de, D: Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Flag {
        Bool(bool),
        Text(String),
    }
    match Flag::deserialize(deserializer)? {
        Flag::Bool(b) => Ok(b),
        Flag::Text(text) => match text.to_ascii_lowercase().as_str() {
            "true" | "yes" | "y" | "1" | "on" => Ok(true),
            "false" | "no" | "n" | "0" | "off" | "" => Ok(false),
            _ => Err(serde::de::Error::custom(format!("invalid boolean '{text}': use true or false"))),
        },
    }
}

/// The API with trailing slashes taken off request paths before routing (`/api/block/image/trash/` is
/// `/api/block/image/trash`), as Ceph routes both.
#[derive(Clone, Debug)]
pub struct TrailingSlash(pub Router);

impl tower_service::Service<Request> for TrailingSlash {
    type Response = Response;
    type Error = Infallible;
    type Future = <Router as tower_service::Service<Request>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        tower_service::Service::<Request>::poll_ready(&mut self.0, cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        let path = request.uri().path();
        if path.len() > 1 && path.ends_with('/') && path.starts_with("/api/") {
            let trimmed = path.trim_end_matches('/');
            let target = match request.uri().query() {
                Some(q) => format!("{trimmed}?{q}"),
                None => trimmed.to_owned(),
            };
            if let Ok(uri) = target.parse() {
                *request.uri_mut() = uri;
            }
        }
        tower_service::Service::<Request>::call(&mut self.0, request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_follow_cephs_rule() {
        assert!(Version(1, 0).supports(Version(1, 0)));
        assert!(Version(1, 1).supports(Version(1, 0)));
        assert!(!Version(1, 0).supports(Version(1, 1)));
        assert!(!Version(2, 0).supports(Version(1, 0)));
        assert!(matches!(wanted("application/vnd.ceph.api.v1.0+json"), Ok(Wanted::Ceph(Version(1, 0)))));
        assert!(matches!(
            wanted("text/html, application/vnd.ceph.api.v2.0+json;q=0.9"),
            Ok(Wanted::Ceph(Version(2, 0)))
        ));
        assert!(matches!(wanted("application/json"), Ok(Wanted::Plain)));
        assert!(matches!(wanted(""), Ok(Wanted::Plain)));
        assert!(matches!(wanted(BASALT_MEDIA_TYPE), Ok(Wanted::Basalt(v)) if v == "1"));
        assert!(wanted("application/vnd.ceph.api.vX+json").is_err());
    }

    #[test]
    fn python_booleans_are_flags() {
        #[derive(Deserialize)]
        struct Q {
            #[serde(deserialize_with = "flexible_bool")]
            force: bool,
        }
        for (text, expected) in [("True", true), ("False", false), ("true", true), ("0", false), ("yes", true)] {
            let q: Q = serde_json::from_value(json!({"force": text})).expect(text);
            assert_eq!(q.force, expected, "{text}");
        }
        assert!(serde_json::from_value::<Q>(json!({"force": "maybe"})).is_err());
    }

    #[test]
    fn images_lose_the_keys_ceph_lacks() {
        let mut image = json!({
            "name": "a", "status": "degraded", "status_detail": "x", "watchers": [], "metadata": {}, "snap_limit": null,
            "parent": {"pool_name": "rbd", "pool_namespace": "", "image_name": "p", "snap_name": "s",
                       "image_id": "x", "overlap": 1, "in_trash": false},
            "snapshots": [{"name": "s", "children": [{"pool_name": "rbd", "namespace": "", "image_name": "c"}]}],
        });
        ceph_image(&mut image);
        assert_eq!(
            image,
            json!({
                "name": "a",
                "parent": {"pool_name": "rbd", "pool_namespace": "", "image_name": "p", "snap_name": "s"},
                "snapshots": [{"name": "s", "children": [{"pool_name": "rbd", "pool_namespace": "", "image_name": "c"}]}],
            })
        );
    }
}
