//! The audit log: every mutating API call (POST, PUT, PATCH, DELETE) is recorded in the server store with who made
//! it, what it was (method and path, with the image spec in it), when, and its result (the status code). Passwords
//! and bodies are never recorded. `GET /api/audit` lists the records, newest first, to those who manage users.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::api::Params;
use crate::auth::{Caller, Need, Origin};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::store::{AUDIT, ServerStore};

/// Records kept; older ones are dropped.
pub const KEPT: usize = 10_000;

/// One audited call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// When the call arrived, seconds since the epoch.
    pub time: u64,
    /// The user (`local-admin` on the Unix socket, `-` when not logged in).
    pub username: String,
    /// HTTP method.
    pub method: String,
    /// The path, decoded (`/api/block/image/rbd/vm1/flatten`).
    pub path: String,
    /// The answer's status code.
    pub status: u16,
    /// Names from a JSON body (`pool_name=rbd name=vm1`): what a create names is not in its path.
    #[serde(default)]
    pub target: String,
}

/// The log: appends records and keeps the newest [`KEPT`].
#[derive(Debug)]
pub struct AuditLog {
    store: ServerStore,
    seq: AtomicU64,
    count: AtomicU64,
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl AuditLog {
    /// The log in `store`.
    pub fn new(store: ServerStore) -> AuditLog {
        let count = store.list::<AuditRecord>(AUDIT).map(|l| l.len() as u64).unwrap_or(0);
        AuditLog { store, seq: AtomicU64::new(0), count: AtomicU64::new(count) }
    }

    /// Appends a record; drops the oldest beyond [`KEPT`].
    pub fn append(&self, record: &AuditRecord) -> basalt_core::Result<()> {
        // Keys sort by time, then by arrival within this process.
        let key = format!(
            "{:012}-{:012}-{:08x}",
            record.time,
            self.seq.fetch_add(1, Ordering::Relaxed),
            rand::random::<u32>()
        );
        self.store.put(AUDIT, &key, record)?;
        if self.count.fetch_add(1, Ordering::Relaxed) + 1 > KEPT as u64 + KEPT as u64 / 10 {
            let mut all = self.store.list::<AuditRecord>(AUDIT)?;
            all.sort_by(|a, b| a.0.cmp(&b.0));
            let drop = all.len().saturating_sub(KEPT);
            for (key, _) in all.iter().take(drop) {
                self.store.remove(AUDIT, key)?;
            }
            self.count.store((all.len() - drop) as u64, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Records newest first, filtered.
    pub fn query(&self, filter: &AuditQuery) -> basalt_core::Result<(usize, Vec<AuditRecord>)> {
        let mut all = self.store.list::<AuditRecord>(AUDIT)?;
        all.sort_by(|a, b| b.0.cmp(&a.0));
        let matches: Vec<AuditRecord> = all
            .into_iter()
            .map(|(_, r)| r)
            .filter(|r| filter.username.as_deref().is_none_or(|u| r.username == u))
            .filter(|r| filter.since.is_none_or(|s| r.time >= s))
            .filter(|r| filter.until.is_none_or(|u| r.time <= u))
            .filter(|r| filter.search.as_deref().is_none_or(|s| r.path.contains(s) || r.target.contains(s)))
            .filter(|r| match filter.result.as_deref() {
                Some("success") => r.status < 400,
                Some("failure") => r.status >= 400,
                _ => true,
            })
            .collect();
        let total = matches.len();
        let offset = filter.offset.unwrap_or(0);
        let limit = filter.limit.unwrap_or(100).min(1000);
        Ok((total, matches.into_iter().skip(offset).take(limit).collect()))
    }
}

/// `%2F` and the like decoded, so image specs read as `rbd/vm1`.
fn percent_decode(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The body fields that name what a call works on (never passwords or other values).
const NAMING_FIELDS: &[&str] = &[
    "pool_name",
    "namespace",
    "name",
    "image_name",
    "snapshot_name",
    "child_pool_name",
    "child_namespace",
    "child_image_name",
    "dest_pool_name",
    "dest_namespace",
    "dest_image_name",
    "username",
    "new_image_name",
];

/// Bodies up to this size are read for naming fields.
const BODY_PEEK_MAX: usize = 64 << 10;

fn target_of(body: &[u8]) -> String {
    let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(body) else { return String::new() };
    NAMING_FIELDS
        .iter()
        .filter_map(|f| map.get(*f).and_then(Value::as_str).filter(|v| !v.is_empty()).map(|v| format!("{f}={v}")))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Which calls are audited: those that may change something.
fn mutating(method: &Method) -> bool {
    matches!(*method, Method::POST | Method::PUT | Method::PATCH | Method::DELETE)
}

/// The middleware: runs the call, then records it (on the blocking pool, never failing the call).
pub async fn record(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if !mutating(request.method()) || !request.uri().path().starts_with("/api/") {
        return next.run(request).await;
    }
    let method = request.method().to_string();
    let raw_path = request.uri().path().to_owned();
    let path = percent_decode(&raw_path);
    let local = request.extensions().get::<Origin>() == Some(&Origin::LocalSocket);
    let token = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(|t| t.trim().to_owned());
    let time = now();
    // Small JSON bodies are read for the names they carry, then handed on unchanged.
    let json = request
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let small = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .is_some_and(|n| n <= BODY_PEEK_MAX);
    let (request, target) = if json && small && raw_path != "/api/auth" && !raw_path.ends_with("change_password") {
        let (parts, body) = request.into_parts();
        match axum::body::to_bytes(body, BODY_PEEK_MAX).await {
            Ok(bytes) => {
                let target = target_of(&bytes);
                (Request::from_parts(parts, axum::body::Body::from(bytes)), target)
            }
            Err(_) => (Request::from_parts(parts, axum::body::Body::empty()), String::new()),
        }
    } else {
        (request, String::new())
    };
    // Who, resolved before the call (a logout ends the token it is made with).
    let auth = state.auth.clone();
    let username = if local {
        "local-admin".to_owned()
    } else if let Some(token) = token {
        tokio::task::spawn_blocking(move || auth.authenticate(&token).map(|p| p.username).ok())
            .await
            .ok()
            .flatten()
            .unwrap_or_else(|| "-".to_owned())
    } else {
        "-".to_owned()
    };
    let response = next.run(request).await;
    let record = AuditRecord { time, username, method, path, status: response.status().as_u16(), target };
    let Some(log) = state.audit.clone() else { return response };
    tokio::task::spawn_blocking(move || {
        if let Err(err) = log.append(&record) {
            tracing::warn!("audit: cannot record {} {}: {err}", record.method, record.path);
        }
    });
    response
}

/// What `GET /api/audit` takes.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Only this user's calls.
    pub username: Option<String>,
    /// From this time (seconds since the epoch).
    pub since: Option<u64>,
    /// Until this time.
    pub until: Option<u64>,
    /// Only calls whose path or named target contains this text (an image name, a pool).
    pub search: Option<String>,
    /// `success` (status below 400) or `failure`.
    pub result: Option<String>,
    /// Records to skip.
    pub offset: Option<usize>,
    /// Records to return (default 100, at most 1000).
    pub limit: Option<usize>,
}

/// Reading the audit log takes the right to manage users.
pub const AUDIT_READ: Need = Need { scope: "user", permission: "update" };

/// `GET /api/audit`: records newest first, with the total matching in `total`.
pub async fn list(
    State(state): State<AppState>,
    Caller(who): Caller,
    Params(query): Params<AuditQuery>,
) -> ApiResult<Json<Value>> {
    who.require(AUDIT_READ)?;
    let Some(log) = state.audit.clone() else {
        return Ok(Json(json!({"total": 0, "items": []})));
    };
    if let Some(r) = query.result.as_deref()
        && r != "success"
        && r != "failure"
    {
        return Err(ApiError::bad_request(format!("result must be success or failure, not '{r}'")));
    }
    let (total, records) = tokio::task::spawn_blocking(move || log.query(&query))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(ApiError::from)?;
    let items: Vec<Value> = records
        .iter()
        .map(|r| {
            json!({
                "time": crate::api::rfc3339(r.time),
                "username": r.username,
                "method": r.method,
                "path": r.path,
                "target": r.target,
                "status": r.status,
                "result": if r.status < 400 { "success" } else { "failure" },
            })
        })
        .collect();
    Ok(Json(json!({"total": total, "items": items})))
}
